/** Source dtypes of checkpoints, decoded to float32 chunk by chunk. */
export type SourceDType = 'F32' | 'F16' | 'BF16';

export const DTYPE_BYTES: Record<SourceDType, number> = { F32: 4, F16: 2, BF16: 2 };

let f16Table: Float32Array | undefined;

/** All 65536 half-precision values, decoded once (256 KiB). */
function halfTable(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >> 10) & 0x1f;
    const frac = h & 0x3ff;
    if (exp === 0) t[h] = sign * frac * 2 ** -24;
    else if (exp === 31) t[h] = frac ? NaN : sign * Infinity;
    else t[h] = sign * (1 + frac / 1024) * 2 ** (exp - 15);
  }
  f16Table = t;
  return t;
}

/** Decodes little-endian `bytes` of `dtype` to float32. */
export function toFloat32(bytes: Uint8Array, dtype: SourceDType): Float32Array {
  const n = bytes.byteLength / DTYPE_BYTES[dtype];
  if (dtype === 'F32') {
    // Copy: the source buffer may not be 4-byte aligned.
    const out = new Float32Array(n);
    new Uint8Array(out.buffer).set(bytes);
    return out;
  }
  const u16 = new Uint16Array(n);
  new Uint8Array(u16.buffer).set(bytes);
  const out = new Float32Array(n);
  if (dtype === 'BF16') {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = u16[i]! << 16;
  } else {
    const table = halfTable();
    for (let i = 0; i < n; i++) out[i] = table[u16[i]!]!;
  }
  return out;
}
