/** Raw float32 files (the reference outputs) and the reference's measure of closeness. */
import fs from 'node:fs';

/** A raw little-endian float32 file. */
export function readF32File(file: string): Float32Array {
  const buf = fs.readFileSync(file);
  const out = new Float32Array(buf.byteLength >>> 2);
  new Uint8Array(out.buffer).set(buf.subarray(0, out.length * 4));
  return out;
}

/** ||a - b|| / ||b||. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return Math.sqrt(num / den);
}
