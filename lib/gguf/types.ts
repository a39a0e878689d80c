/** ggml tensor types this package writes or names, with their block layout (ggml.h / ggml.c). */
export const GGML_TYPES = {
  F32: { ggmlName: 'f32', id: 0, blockSize: 1, typeSize: 4 },
  F16: { ggmlName: 'f16', id: 1, blockSize: 1, typeSize: 2 },
  Q4_0: { ggmlName: 'q4_0', id: 2, blockSize: 32, typeSize: 18 },
  Q4_1: { ggmlName: 'q4_1', id: 3, blockSize: 32, typeSize: 20 },
  Q5_0: { ggmlName: 'q5_0', id: 6, blockSize: 32, typeSize: 22 },
  Q5_1: { ggmlName: 'q5_1', id: 7, blockSize: 32, typeSize: 24 },
  Q8_0: { ggmlName: 'q8_0', id: 8, blockSize: 32, typeSize: 34 },
  Q2_K: { ggmlName: 'q2_K', id: 10, blockSize: 256, typeSize: 84 },
  Q3_K: { ggmlName: 'q3_K', id: 11, blockSize: 256, typeSize: 110 },
  Q4_K: { ggmlName: 'q4_K', id: 12, blockSize: 256, typeSize: 144 },
  Q5_K: { ggmlName: 'q5_K', id: 13, blockSize: 256, typeSize: 176 },
  Q6_K: { ggmlName: 'q6_K', id: 14, blockSize: 256, typeSize: 210 },
  I32: { ggmlName: 'i32', id: 26, blockSize: 1, typeSize: 4 },
  BF16: { ggmlName: 'bf16', id: 30, blockSize: 1, typeSize: 2 },
} as const;

export type GGMLTypeName = keyof typeof GGML_TYPES;

/** Bytes of a tensor of `type` with `shape` (ggml order: shape[0] is the row). */
export function tensorBytes(type: GGMLTypeName, shape: readonly number[]): number {
  const t = GGML_TYPES[type];
  const row = shape[0] ?? 1;
  if (row % t.blockSize !== 0) throw new Error(`a row of ${row} is not a multiple of ${type}'s block size ${t.blockSize}`);
  let rows = 1;
  for (let i = 1; i < shape.length; i++) rows *= shape[i]!;
  return (row / t.blockSize) * t.typeSize * rows;
}
