/**
 * A streaming GGUF (version 3) writer: declare metadata and tensor infos, then write tensor data one
 * tensor at a time, so a multi-GB model never has to sit in memory. The file is written under a
 * temporary name and renamed on `finish()`; `abort()` (or any failure) removes it.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PaliGemmaError } from '../errors';

let written = 0;
/** Process id + a counter: two writers of one final name, in any processes, never share a temporary file. */
export function uniqueSuffix(): string {
  return `${process.pid}-${++written}`;
}

import { GGML_TYPES, type GGMLTypeName, tensorBytes } from './types';

export enum GGUFValueType {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
}

export type GGUFWritable =
  | { type: Exclude<GGUFValueType, GGUFValueType.ARRAY | GGUFValueType.STRING | GGUFValueType.BOOL>; value: number | bigint }
  | { type: GGUFValueType.STRING; value: string }
  | { type: GGUFValueType.BOOL; value: boolean }
  | { type: GGUFValueType.ARRAY; itemType: GGUFValueType; value: ArrayLike<number | bigint | string | boolean> };

interface PendingTensor {
  name: string;
  shape: number[];
  type: GGMLTypeName;
  bytes: number;
  offset: number;
  written: boolean;
}

const ALIGNMENT = 32;
const align = (n: number, a = ALIGNMENT) => Math.ceil(n / a) * a;

/** Grows a byte buffer as header fields are appended. */
class ByteSink {
  private buf = Buffer.alloc(1 << 16);
  length = 0;

  private reserve(n: number) {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const next = Buffer.alloc(size);
    this.buf.copy(next, 0, 0, this.length);
    this.buf = next;
  }
  u8(v: number) {
    this.reserve(1);
    this.buf.writeUInt8(v, this.length);
    this.length += 1;
  }
  i8(v: number) {
    this.reserve(1);
    this.buf.writeInt8(v, this.length);
    this.length += 1;
  }
  u16(v: number) {
    this.reserve(2);
    this.buf.writeUInt16LE(v, this.length);
    this.length += 2;
  }
  i16(v: number) {
    this.reserve(2);
    this.buf.writeInt16LE(v, this.length);
    this.length += 2;
  }
  u32(v: number) {
    this.reserve(4);
    this.buf.writeUInt32LE(v, this.length);
    this.length += 4;
  }
  i32(v: number) {
    this.reserve(4);
    this.buf.writeInt32LE(v, this.length);
    this.length += 4;
  }
  f32(v: number) {
    this.reserve(4);
    this.buf.writeFloatLE(v, this.length);
    this.length += 4;
  }
  f64(v: number) {
    this.reserve(8);
    this.buf.writeDoubleLE(v, this.length);
    this.length += 8;
  }
  u64(v: number | bigint) {
    this.reserve(8);
    this.buf.writeBigUInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  i64(v: number | bigint) {
    this.reserve(8);
    this.buf.writeBigInt64LE(BigInt(v), this.length);
    this.length += 8;
  }
  str(s: string) {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.reserve(b.length);
    b.copy(this.buf, this.length);
    this.length += b.length;
  }
  pad(to: number) {
    const n = align(this.length, to) - this.length;
    this.reserve(n);
    this.buf.fill(0, this.length, this.length + n);
    this.length += n;
  }
  bytes(): Buffer {
    return this.buf.subarray(0, this.length);
  }
}

function writeScalar(sink: ByteSink, type: GGUFValueType, v: number | bigint | string | boolean) {
  switch (type) {
    case GGUFValueType.UINT8:
      return sink.u8(Number(v));
    case GGUFValueType.INT8:
      return sink.i8(Number(v));
    case GGUFValueType.UINT16:
      return sink.u16(Number(v));
    case GGUFValueType.INT16:
      return sink.i16(Number(v));
    case GGUFValueType.UINT32:
      return sink.u32(Number(v));
    case GGUFValueType.INT32:
      return sink.i32(Number(v));
    case GGUFValueType.FLOAT32:
      return sink.f32(Number(v));
    case GGUFValueType.FLOAT64:
      return sink.f64(Number(v));
    case GGUFValueType.UINT64:
      return sink.u64(v as number | bigint);
    case GGUFValueType.INT64:
      return sink.i64(v as number | bigint);
    case GGUFValueType.BOOL:
      return sink.u8(v ? 1 : 0);
    case GGUFValueType.STRING:
      return sink.str(String(v));
    default:
      throw new Error(`GGUF: cannot write a scalar of type ${type}`);
  }
}

export class GGUFWriter {
  readonly path: string;
  private readonly tmpPath: string;
  private readonly kv = new Map<string, GGUFWritable>();
  private readonly tensors: PendingTensor[] = [];
  private readonly byName = new Map<string, PendingTensor>();
  private fd: fs.promises.FileHandle | undefined;
  private dataStart = 0;
  private next = 0;
  private cursor = 0;
  private closed = false;
  private committed = false;

  constructor(finalPath: string) {
    this.path = finalPath;
    this.tmpPath = path.join(path.dirname(finalPath), `.${path.basename(finalPath)}.${uniqueSuffix()}.partial`);
  }

  set(key: string, value: GGUFWritable): this {
    if (this.fd) throw new Error('GGUF: metadata must be set before the header is written');
    this.kv.set(key, value);
    return this;
  }
  setString(key: string, value: string) {
    return this.set(key, { type: GGUFValueType.STRING, value });
  }
  setU32(key: string, value: number) {
    return this.set(key, { type: GGUFValueType.UINT32, value });
  }
  setI32(key: string, value: number) {
    return this.set(key, { type: GGUFValueType.INT32, value });
  }
  setF32(key: string, value: number) {
    return this.set(key, { type: GGUFValueType.FLOAT32, value });
  }
  setBool(key: string, value: boolean) {
    return this.set(key, { type: GGUFValueType.BOOL, value });
  }
  setArray(key: string, itemType: GGUFValueType, value: ArrayLike<number | bigint | string | boolean>) {
    return this.set(key, { type: GGUFValueType.ARRAY, itemType, value });
  }

  /** Declares a tensor; `shape` in ggml order (shape[0] is the row length). Data follows in declaration order. */
  addTensor(name: string, shape: readonly number[], type: GGMLTypeName): this {
    if (this.fd) throw new Error('GGUF: tensors must be declared before the header is written');
    if (this.byName.has(name)) throw new Error(`GGUF: duplicate tensor name '${name}'`);
    if (Buffer.byteLength(name) >= 64) throw new Error(`GGUF: tensor name '${name}' is longer than ggml's 63 bytes`);
    const t: PendingTensor = { name, shape: [...shape], type, bytes: tensorBytes(type, shape), offset: 0, written: false };
    this.tensors.push(t);
    this.byName.set(name, t);
    return this;
  }

  /** Total bytes of declared tensor data (for progress). */
  get dataBytes(): number {
    return this.tensors.reduce((s, t) => s + align(t.bytes), 0);
  }

  /** Writes the header to the temporary file. */
  async begin(): Promise<void> {
    const sink = new ByteSink();
    sink.u32(0x46554747); // "GGUF"
    sink.u32(3);
    sink.u64(this.tensors.length);
    sink.u64(this.kv.size);
    for (const [key, v] of this.kv) {
      sink.str(key);
      sink.u32(v.type);
      if (v.type === GGUFValueType.ARRAY) {
        sink.u32(v.itemType);
        sink.u64(v.value.length);
        for (let i = 0; i < v.value.length; i++) writeScalar(sink, v.itemType, v.value[i]!);
      } else {
        writeScalar(sink, v.type, v.value);
      }
    }
    let offset = 0;
    for (const t of this.tensors) {
      sink.str(t.name);
      sink.u32(t.shape.length);
      for (const d of t.shape) sink.u64(d);
      sink.u32(GGML_TYPES[t.type].id);
      t.offset = offset;
      sink.u64(offset);
      offset += align(t.bytes);
    }
    sink.pad(ALIGNMENT);
    this.dataStart = sink.length;
    this.fd = await this.io(() => fs.promises.open(this.tmpPath, 'w'));
    await this.io(() => this.fd!.write(sink.bytes(), 0, sink.length, 0));
  }

  /** A file-system call whose failure (ENOSPC, EIO, EACCES...) becomes an error naming the output. */
  private async io<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (!code) throw err;
      const why = code === 'ENOSPC' ? 'the disk is full' : code === 'EDQUOT' ? 'the disk quota is exceeded' : (err as Error).message;
      throw new PaliGemmaError('ERR_WRITE', `${this.path}: cannot write (${why}; ${code})`, { cause: err });
    }
  }

  /**
   * Writes the next piece of tensor data. Tensors come in declaration order; a tensor may arrive in
   * several consecutive pieces (so a large one never has to be in memory at once).
   */
  async writeTensor(name: string, data: Uint8Array): Promise<void> {
    if (!this.fd) throw new Error('GGUF: begin() first');
    const t = this.tensors[this.next];
    if (!t || t.name !== name) throw new Error(`GGUF: expected data for '${t?.name ?? '(none)'}', got '${name}'`);
    if (this.cursor + data.byteLength > t.bytes) {
      throw new Error(`GGUF: tensor '${name}' needs ${t.bytes} bytes, got ${this.cursor + data.byteLength}`);
    }
    const pos = this.dataStart + t.offset + this.cursor;
    if (data.byteLength) await this.io(() => this.fd!.write(data, 0, data.byteLength, pos));
    this.cursor += data.byteLength;
    if (this.cursor === t.bytes) {
      const pad = align(t.bytes) - t.bytes;
      if (pad) await this.io(() => this.fd!.write(Buffer.alloc(pad), 0, pad, this.dataStart + t.offset + t.bytes));
      t.written = true;
      this.next++;
      this.cursor = 0;
    }
  }

  /** Flushes and closes the file under its temporary name (see commit). */
  async close(): Promise<void> {
    if (!this.fd) throw new Error('GGUF: begin() first');
    const missing = this.tensors.filter((t) => !t.written).map((t) => t.name);
    if (missing.length) throw new Error(`GGUF: no data written for ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', ...' : ''}`);
    await this.io(() => this.fd!.sync());
    await this.io(() => this.fd!.close());
    this.fd = undefined;
    this.closed = true;
  }

  /** Renames the closed file to its final name. */
  async commit(): Promise<string> {
    if (!this.closed) throw new Error('GGUF: close() first');
    await this.io(() => fs.promises.rename(this.tmpPath, this.path));
    this.committed = true;
    return this.path;
  }

  /** close() then commit(). */
  async finish(): Promise<string> {
    await this.close();
    return this.commit();
  }

  /** Closes and deletes the temporary file; the final name is never touched. */
  async abort(): Promise<void> {
    const fd = this.fd;
    this.fd = undefined;
    if (fd) await fd.close().catch(() => undefined);
    if (!this.committed) await fs.promises.rm(this.tmpPath, { force: true });
  }
}
