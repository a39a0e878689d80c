/** Comparing with the float64 reference: its raw float32 files, its measure of closeness, its greedy tokens. */
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

/** The best and runner-up index of one row of logits. */
export function topTwo(row: ArrayLike<number>): [number, number] {
  let a = 0;
  let b = 1;
  if (row[b]! > row[a]!) [a, b] = [b, a];
  for (let i = 2; i < row.length; i++) {
    if (row[i]! > row[a]!) [a, b] = [i, a];
    else if (row[i]! > row[b]!) b = i;
  }
  return [a, b];
}

/** Below this gap between the reference's top two logits, a step is a near-tie. */
export const NEAR_TIE = 1e-2;

/**
 * Free greedy decoding must equal the reference's tokens, except at a near-tie where ours is the
 * reference's runner-up (the steps after it are compared separately, by teacher forcing).
 * `logits` holds the reference's rows, `vocab` values each.
 */
export function greedyVerdict(
  ours: ArrayLike<number>,
  want: ArrayLike<number>,
  logits: Float32Array,
  vocab: number,
): { ok: boolean; flip: number; detail: string } {
  let flip = -1;
  for (let i = 0; i < want.length && flip < 0; i++) if (ours[i] !== want[i]) flip = i;
  if (flip < 0 && ours.length === want.length) return { ok: true, flip, detail: 'same tokens' };
  if (flip < 0) return { ok: false, flip, detail: `${ours.length} tokens where the reference has ${want.length}` };
  const row = logits.subarray(flip * vocab, (flip + 1) * vocab);
  const [best, second] = topTwo(row);
  const gap = row[best]! - row[second]!;
  const ok = gap < NEAR_TIE && ours[flip] === second;
  return {
    ok,
    flip,
    detail: `tokens differ from step ${flip} (ours ${ours[flip]}, reference ${want[flip]}, its runner-up ${second}, top-2 gap ${gap.toExponential(1)}): ${ok ? 'a near-tie' : 'not a near-tie with the runner-up'}`,
  };
}
