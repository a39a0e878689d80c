/**
 * PaliGemma's structured outputs: `<loc>` boxes and `<seg>` mask codes, and how masks land on the
 * source image.
 *
 * Boxes: four `<locNNNN>` tokens, y1 x1 y2 x2, each a bin of 1024 over the image side. A bin maps to
 * pixels as `bin / 1024 * size`, as the official demo and model cards do (big_vision divides by 1023;
 * the two differ by under 0.1% of the image size).
 */

export interface Box {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
}

export interface Location {
  label: string;
  box: Box;
  /** The 16 mask codes (a 4x4 grid, row-major) when the group has them. */
  seg?: number[];
}

export interface Mask {
  width: number;
  height: number;
  /** width * height bytes, 0 or 255, row-major. */
  data: Uint8Array;
}

const GROUP = /((?:<loc\d{4}>){4})\s*((?:<seg\d{3}>){16})?\s*([^;<>]*)/g;
const LOC = /<loc(\d{4})>/g;
const SEG = /<seg(\d{3})>/g;

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/**
 * Parses detection/segmentation output: groups of `<loc>`x4 [`<seg>`x16] [label] separated by ` ; `.
 * Junk, partial groups, out-of-range tokens and boxes without area are skipped, never thrown. Boxes
 * are in pixels of a `width` x `height` image, ordered (x1 < x2, y1 < y2) and clamped to it.
 */
export function parseLocations(text: string, size: { width: number; height: number }): Location[] {
  if (typeof text !== 'string') return [];
  const { width, height } = size;
  const out: Location[] = [];
  for (const m of text.matchAll(GROUP)) {
    const bins = [...m[1]!.matchAll(LOC)].map((x) => Number(x[1]));
    if (bins.some((b) => b > 1023)) continue;
    let [y1, x1, y2, x2] = [bins[0]! / 1024 * height, bins[1]! / 1024 * width, bins[2]! / 1024 * height, bins[3]! / 1024 * width];
    if (y1 > y2) [y1, y2] = [y2, y1];
    if (x1 > x2) [x1, x2] = [x2, x1];
    if (y1 === y2 || x1 === x2) continue; // no area: big_vision's evaluator drops these too
    const loc: Location = {
      label: m[3]!.trim(),
      box: { x1: clamp(x1, 0, width), y1: clamp(y1, 0, height), x2: clamp(x2, 0, width), y2: clamp(y2, 0, height) },
    };
    if (m[2]) {
      const codes = [...m[2].matchAll(SEG)].map((x) => Number(x[1]));
      if (codes.every((c) => c < 128)) loc.seg = codes;
    }
    out.push(loc);
  }
  return out;
}

/** The PIL-style triangle filter (bilinear), widened when shrinking so that it averages. */
function weights(inSize: number, outSize: number): { start: Int32Array; count: Int32Array; w: Float32Array; k: number } {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = filterScale;
  const k = Math.ceil(support) * 2 + 1;
  const start = new Int32Array(outSize);
  const count = new Int32Array(outSize);
  const w = new Float32Array(outSize * k);
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const lo = Math.max(0, Math.trunc(center - support + 0.5));
    const hi = Math.min(inSize, Math.trunc(center + support + 0.5));
    let sum = 0;
    for (let i = lo; i < hi; i++) {
      const x = Math.abs((i - center + 0.5) / filterScale);
      const v = x < 1 ? 1 - x : 0;
      w[o * k + i - lo] = v;
      sum += v;
    }
    if (sum > 0) for (let i = 0; i < hi - lo; i++) w[o * k + i]! /= sum;
    start[o] = lo;
    count[o] = hi - lo;
  }
  return { start, count, w, k };
}

/** Resizes a float map (row-major) with a separable bilinear filter. */
export function resizeBilinear(src: Float32Array, sw: number, sh: number, dw: number, dh: number): Float32Array {
  const hx = weights(sw, dw);
  const hy = weights(sh, dh);
  const tmp = new Float32Array(dw * sh);
  for (let y = 0; y < sh; y++) {
    for (let x = 0; x < dw; x++) {
      let s = 0;
      for (let i = 0; i < hx.count[x]!; i++) s += src[y * sw + hx.start[x]! + i]! * hx.w[x * hx.k + i]!;
      tmp[y * dw + x] = s;
    }
  }
  const out = new Float32Array(dw * dh);
  for (let y = 0; y < dh; y++) {
    for (let x = 0; x < dw; x++) {
      let s = 0;
      for (let i = 0; i < hy.count[y]!; i++) s += tmp[(hy.start[y]! + i) * dw + x]! * hy.w[y * hy.k + i]!;
      out[y * dw + x] = s;
    }
  }
  return out;
}

/**
 * Places a 64x64 mask map (decoder output, about -1..1) into a full-size mask: resized to the box
 * (bilinear), thresholded at 0, pasted at the box. Pixels outside the box are 0.
 */
export function pasteMask(mask64: Float32Array, box: Box, width: number, height: number): Mask {
  const data = new Uint8Array(width * height);
  const x1 = clamp(Math.round(box.x1), 0, width);
  const y1 = clamp(Math.round(box.y1), 0, height);
  const x2 = clamp(Math.round(box.x2), 0, width);
  const y2 = clamp(Math.round(box.y2), 0, height);
  const bw = x2 - x1;
  const bh = y2 - y1;
  if (bw > 0 && bh > 0) {
    const resized = resizeBilinear(mask64, 64, 64, bw, bh);
    for (let y = 0; y < bh; y++) {
      for (let x = 0; x < bw; x++) if (resized[y * bw + x]! > 0) data[(y1 + y) * width + x1 + x] = 255;
    }
  }
  return { width, height, data };
}
