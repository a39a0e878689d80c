/**
 * Draws detections and masks onto an RGB image: translucent masks, box outlines and labels in a
 * built-in 5x7 bitmap font (so no font files or canvas library are needed).
 */
import { callNative, invalidArgument } from '../errors';
import { getBinding } from '../native/binding';
import type { Box } from '../tasks/locations';
import type { Mask } from '../tasks/masks';
import { type RawImage, resolveImage } from './input';
import { encodePNG } from './png';

export interface RGBImage {
  width: number;
  height: number;
  /** width * height * 3 bytes. */
  data: Uint8Array;
}

export interface Annotation {
  label: string;
  box: Box;
  mask?: Mask;
}

const PALETTE: [number, number, number][] = [
  [230, 25, 75],
  [60, 180, 75],
  [0, 130, 200],
  [245, 130, 48],
  [145, 30, 180],
  [70, 240, 240],
  [240, 50, 230],
  [210, 245, 60],
];

// 5x7 glyphs, one 5-bit row per entry (most significant bit on the left).
const FONT: Record<string, number[]> = {
  A: [14, 17, 17, 17, 31, 17, 17],
  B: [30, 17, 17, 30, 17, 17, 30],
  C: [14, 17, 16, 16, 16, 17, 14],
  D: [28, 18, 17, 17, 17, 18, 28],
  E: [31, 16, 16, 30, 16, 16, 31],
  F: [31, 16, 16, 30, 16, 16, 16],
  G: [14, 17, 16, 23, 17, 17, 15],
  H: [17, 17, 17, 31, 17, 17, 17],
  I: [14, 4, 4, 4, 4, 4, 14],
  J: [7, 2, 2, 2, 2, 18, 12],
  K: [17, 18, 20, 24, 20, 18, 17],
  L: [16, 16, 16, 16, 16, 16, 31],
  M: [17, 27, 21, 21, 17, 17, 17],
  N: [17, 17, 25, 21, 19, 17, 17],
  O: [14, 17, 17, 17, 17, 17, 14],
  P: [30, 17, 17, 30, 16, 16, 16],
  Q: [14, 17, 17, 17, 21, 18, 13],
  R: [30, 17, 17, 30, 20, 18, 17],
  S: [15, 16, 16, 14, 1, 1, 30],
  T: [31, 4, 4, 4, 4, 4, 4],
  U: [17, 17, 17, 17, 17, 17, 14],
  V: [17, 17, 17, 17, 17, 10, 4],
  W: [17, 17, 17, 21, 21, 21, 10],
  X: [17, 17, 10, 4, 10, 17, 17],
  Y: [17, 17, 17, 10, 4, 4, 4],
  Z: [31, 1, 2, 4, 8, 16, 31],
  '0': [14, 17, 19, 21, 25, 17, 14],
  '1': [4, 12, 4, 4, 4, 4, 14],
  '2': [14, 17, 1, 2, 4, 8, 31],
  '3': [31, 2, 4, 2, 1, 17, 14],
  '4': [2, 6, 10, 18, 31, 2, 2],
  '5': [31, 16, 30, 1, 1, 17, 14],
  '6': [6, 8, 16, 30, 17, 17, 14],
  '7': [31, 1, 2, 4, 8, 8, 8],
  '8': [14, 17, 17, 14, 17, 17, 14],
  '9': [14, 17, 17, 15, 1, 2, 12],
  ' ': [0, 0, 0, 0, 0, 0, 0],
  '.': [0, 0, 0, 0, 0, 12, 12],
  ',': [0, 0, 0, 0, 12, 4, 8],
  '-': [0, 0, 0, 31, 0, 0, 0],
  _: [0, 0, 0, 0, 0, 0, 31],
  ':': [0, 12, 12, 0, 12, 12, 0],
  "'": [12, 4, 8, 0, 0, 0, 0],
  '/': [0, 1, 2, 4, 8, 16, 0],
  '(': [2, 4, 8, 8, 8, 4, 2],
  ')': [8, 4, 2, 2, 2, 4, 8],
  '!': [4, 4, 4, 4, 4, 0, 4],
  '?': [14, 17, 1, 2, 4, 0, 4],
};
const UNKNOWN = [31, 17, 17, 17, 17, 17, 31];

function blend(img: RGBImage, x: number, y: number, c: readonly number[], alpha: number) {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height) return;
  const i = (y * img.width + x) * 3;
  for (let k = 0; k < 3; k++) img.data[i + k] = Math.round(img.data[i + k]! * (1 - alpha) + c[k]! * alpha);
}

function fillRect(img: RGBImage, x1: number, y1: number, x2: number, y2: number, c: readonly number[], alpha = 1) {
  for (let y = Math.max(0, y1); y < Math.min(img.height, y2); y++) for (let x = Math.max(0, x1); x < Math.min(img.width, x2); x++) blend(img, x, y, c, alpha);
}

function drawText(img: RGBImage, text: string, x: number, y: number, scale: number, c: readonly number[]) {
  for (const [n, ch] of [...text].entries()) {
    const glyph = FONT[ch.toUpperCase()] ?? UNKNOWN;
    for (let row = 0; row < 7; row++) {
      for (let col = 0; col < 5; col++) {
        if (glyph[row]! & (16 >> col)) fillRect(img, x + (n * 6 + col) * scale, y + row * scale, x + (n * 6 + col + 1) * scale, y + (row + 1) * scale, c);
      }
    }
  }
}

/** Returns a copy of `image` with masks (translucent), boxes and labels drawn. */
export function annotate(image: RGBImage, items: Annotation[]): RGBImage {
  const out: RGBImage = { width: image.width, height: image.height, data: new Uint8Array(image.data) };
  const thick = Math.max(2, Math.round(Math.min(out.width, out.height) / 200));
  const scale = Math.max(1, Math.round(Math.min(out.width, out.height) / 320));
  items.forEach((item, i) => {
    const c = PALETTE[i % PALETTE.length]!;
    if (item.mask && item.mask.width === out.width && item.mask.height === out.height) {
      const m = item.mask.data;
      for (let p = 0; p < m.length; p++) if (m[p]) blend(out, p % out.width, Math.floor(p / out.width), c, 0.45);
    }
    const x1 = Math.round(item.box.x1),
      y1 = Math.round(item.box.y1),
      x2 = Math.round(item.box.x2),
      y2 = Math.round(item.box.y2);
    fillRect(out, x1, y1, x2, y1 + thick, c);
    fillRect(out, x1, y2 - thick, x2, y2, c);
    fillRect(out, x1, y1, x1 + thick, y2, c);
    fillRect(out, x2 - thick, y1, x2, y2, c);
    if (item.label) {
      const text = item.label.slice(0, 40);
      const h = 9 * scale;
      const ty = y1 - h >= 0 ? y1 - h : y1;
      fillRect(out, x1, ty, x1 + (text.length * 6 + 2) * scale, ty + h, c);
      drawText(out, text, x1 + scale, ty + scale, scale, [255, 255, 255]);
    }
  });
  return out;
}

function toRGB(img: { data: Uint8Array; width: number; height: number; channels: number }): RGBImage {
  if (img.channels === 3) return { width: img.width, height: img.height, data: img.data };
  const n = img.width * img.height;
  const rgb = new Uint8Array(n * 3);
  for (let p = 0; p < n; p++) {
    const s = p * img.channels;
    rgb[p * 3] = img.data[s]!;
    rgb[p * 3 + 1] = img.data[img.channels === 1 ? s : s + 1]!;
    rgb[p * 3 + 2] = img.data[img.channels === 1 ? s : s + 2]!;
  }
  return { width: img.width, height: img.height, data: rgb };
}

/**
 * Draws what `detect()` or `segment()` returned over the image they ran on: translucent masks, box
 * outlines, labels. Returns the picture as PNG bytes. The image is any input the model takes but an
 * embedding (a path, encoded bytes or raw pixels).
 */
export async function annotateImage(image: string | Uint8Array | ArrayBuffer | RawImage, items: readonly Annotation[]): Promise<Buffer> {
  if (!Array.isArray(items)) throw invalidArgument('annotateImage(image, items): items', 'an array of { label, box, mask? }', items);
  items.forEach((it, i) => {
    const b = (it as Partial<Annotation> | null)?.box;
    if (!b || ![b.x1, b.y1, b.x2, b.y2].every(Number.isFinite)) throw invalidArgument(`annotateImage: items[${i}].box`, '{ x1, y1, x2, y2 } numbers', b);
    if (typeof it.label !== 'string') throw invalidArgument(`annotateImage: items[${i}].label`, 'a string', it.label);
  });
  const resolved = await resolveImage(image, 'annotateImage: image');
  let rgb: RGBImage;
  if ('bytes' in resolved) {
    const { bytes, label } = resolved;
    rgb = toRGB(await callNative(() => getBinding().binding.decodeImage(bytes, label)));
  } else if ('pixels' in resolved) {
    rgb = toRGB({ data: resolved.pixels, width: resolved.width, height: resolved.height, channels: resolved.channels });
  } else {
    throw invalidArgument('annotateImage: image', 'a file path, image bytes or raw pixels (an embedding has no pixels to draw on)', image);
  }
  const drawn = annotate(rgb, items as Annotation[]);
  return encodePNG(drawn.data, drawn.width, drawn.height, 3);
}
