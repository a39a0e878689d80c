/**
 * How a segmentation lands on the source image: the decoder's 64x64 map resized to its box
 * (bilinear), thresholded at 0 and pasted into a full-size mask.
 */
import type { Box } from './locations';

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

export interface Mask {
  width: number;
  height: number;
  /** width * height bytes, 0 or 255, row-major. */
  data: Uint8Array;
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
 * (bilinear; corners rounded to pixels, and a box reaching outside the image cut to it), thresholded
 * at 0, pasted at the box. Pixels outside the box are 0.
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

/** Run-length encoding of a mask, row-major: alternating counts of 0 and 255 pixels, starting with 0s. */
export interface MaskRLE {
  width: number;
  height: number;
  counts: number[];
}

export function maskToRLE(mask: Mask): MaskRLE {
  const counts: number[] = [];
  let current = 0;
  let run = 0;
  for (const v of mask.data) {
    const bit = v ? 255 : 0;
    if (bit !== current) {
      counts.push(run);
      current = bit;
      run = 0;
    }
    run++;
  }
  counts.push(run);
  return { width: mask.width, height: mask.height, counts };
}
