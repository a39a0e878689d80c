import fs from 'node:fs';
import { callNative, invalidArgument, PaliGemmaError } from '../errors';
import { getBinding } from '../native/binding';
import type { GGUFValue, NativeGGUFTensor } from '../native/contract';

export type { GGUFValue };

export interface GGUFTensorInfo extends NativeGGUFTensor {
  /** ggml type name: 'F32', 'F16', 'BF16', 'Q8_0', 'Q4_K', ... */
  type: string;
  /** ggml order: shape[0] is the row length. */
  shape: number[];
  /** Absolute byte offset of the tensor data in the file. */
  offset: number;
  /** Bytes of tensor data. */
  size: number;
}

export interface GGUFInfo {
  path: string;
  version: number;
  alignment: number;
  dataOffset: number;
  fileSize: number;
  /** Every key-value pair. Numeric arrays are typed arrays; 64-bit integers beyond 2^53 are BigInts. */
  metadata: Record<string, GGUFValue>;
  /** Keys whose arrays were cut to `maxArrayLength`. */
  truncatedKeys: string[];
  tensors: GGUFTensorInfo[];
}

export interface ReadGGUFOptions {
  /** Cut arrays longer than this (a real vocabulary has 257k strings). Default: no limit. */
  maxArrayLength?: number;
}

/**
 * Reads the header, metadata and tensor infos of a GGUF file with ggml's own reader, in a worker.
 * Missing, empty, truncated or corrupt files reject with a PaliGemmaError naming the file.
 */
export async function readGGUF(path: string, options: ReadGGUFOptions = {}): Promise<GGUFInfo> {
  if (typeof path !== 'string' || path.length === 0) throw invalidArgument('readGGUF(path)', 'a non-empty string', path);
  const max = options.maxArrayLength;
  if (max !== undefined && !(typeof max === 'number' && (Number.isInteger(max) || max === Infinity) && max >= 0)) {
    throw invalidArgument('readGGUF options.maxArrayLength', 'an integer >= 0', max);
  }
  try {
    await fs.promises.access(path, fs.constants.R_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${path}: ${code === 'ENOENT' ? 'no such file' : `cannot read (${code})`}`, { cause: err });
  }
  const { binding } = getBinding();
  const info = await callNative(() => binding.readGGUF(path, max ?? Infinity));
  return { path, ...info };
}
