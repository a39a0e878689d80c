/**
 * Reads Hugging Face safetensors checkpoints (one file, or shards listed in
 * model.safetensors.index.json) without loading them: headers are parsed up front, tensor bytes are
 * read on demand by range.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PaliGemmaError } from '../errors';
import { DTYPE_BYTES, type SourceDType } from './dtype';

export interface SafeTensor {
  name: string;
  dtype: SourceDType;
  /** Row-major, as in PyTorch. */
  shape: number[];
  file: string;
  /** Absolute byte range in `file`. */
  start: number;
  byteLength: number;
}

const MAX_HEADER = 256 * 1024 * 1024;

function invalid(file: string, what: string): PaliGemmaError {
  return new PaliGemmaError('ERR_INVALID_FILE', `${file}: ${what}`);
}

async function readHeader(file: string): Promise<SafeTensor[]> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, 'r');
  } catch (err) {
    throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${file}: cannot open (${(err as NodeJS.ErrnoException).code})`, { cause: err });
  }
  try {
    const { size } = await fh.stat();
    if (size < 8) throw invalid(file, 'too short to be a safetensors file');
    const lenBuf = Buffer.alloc(8);
    await fh.read(lenBuf, 0, 8, 0);
    const len = Number(lenBuf.readBigUInt64LE(0));
    if (len < 2 || len > MAX_HEADER || 8 + len > size) throw invalid(file, `bad safetensors header length ${len} (file has ${size} bytes)`);
    const json = Buffer.alloc(len);
    await fh.read(json, 0, len, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(json.toString('utf8'));
    } catch {
      throw invalid(file, 'safetensors header is not valid JSON');
    }
    const base = 8 + len;
    const out: SafeTensor[] = [];
    for (const [name, raw] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const info = raw as { dtype?: string; shape?: number[]; data_offsets?: [number, number] };
      if (info.dtype !== 'F32' && info.dtype !== 'F16' && info.dtype !== 'BF16') {
        throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: tensor '${name}' has dtype ${info.dtype}; supported: F32, F16, BF16`);
      }
      const shape = info.shape;
      const offs = info.data_offsets;
      if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0) || !Array.isArray(offs) || offs.length !== 2) {
        throw invalid(file, `tensor '${name}' has a malformed entry`);
      }
      const elements = shape.reduce((a, b) => a * b, 1);
      const byteLength = offs[1] - offs[0];
      if (byteLength !== elements * DTYPE_BYTES[info.dtype] || offs[0] < 0 || base + offs[1] > size) {
        throw invalid(file, `tensor '${name}' [${shape.join(', ')}] ${info.dtype} does not fit its data range (truncated file?)`);
      }
      out.push({ name, dtype: info.dtype, shape, file, start: base + offs[0], byteLength });
    }
    return out;
  } finally {
    await fh.close();
  }
}

export class Checkpoint {
  private readonly tensors = new Map<string, SafeTensor>();
  private readonly handles = new Map<string, fs.promises.FileHandle>();

  private constructor() {}

  /** Opens `model.safetensors`, or the shards listed in `model.safetensors.index.json`, in `dir`. */
  static async open(dir: string): Promise<Checkpoint> {
    const index = path.join(dir, 'model.safetensors.index.json');
    const single = path.join(dir, 'model.safetensors');
    let files: string[];
    if (fs.existsSync(index)) {
      let map: Record<string, string>;
      try {
        map = JSON.parse(await fs.promises.readFile(index, 'utf8')).weight_map;
      } catch (err) {
        throw new PaliGemmaError('ERR_INVALID_FILE', `${index}: not valid JSON with a weight_map`, { cause: err });
      }
      if (!map || typeof map !== 'object') throw new PaliGemmaError('ERR_INVALID_FILE', `${index}: no weight_map`);
      files = [];
      // A checkpoint is untrusted input: every shard must be a file of this folder (no '..', no
      // absolute path, no symlink leading out of it), or, in a Hugging Face cache snapshot
      // (`snapshots/<commit>/`), a link to that repo's `blobs/`.
      const realDir = await fs.promises.realpath(dir);
      const blobs = path.basename(path.dirname(realDir)) === 'snapshots' ? path.join(path.dirname(path.dirname(realDir)), 'blobs') : null;
      for (const name of new Set(Object.values(map))) {
        if (typeof name !== 'string' || !name || name !== path.basename(name) || name === '..' || name.includes('\\')) {
          throw new PaliGemmaError('ERR_INVALID_FILE', `${index}: weight_map names ${JSON.stringify(name)}, not a file name of the checkpoint folder`);
        }
        const f = path.join(dir, name);
        if (!fs.existsSync(f)) throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${f}: shard named in ${path.basename(index)} is missing`);
        const real = await fs.promises.realpath(f);
        if (path.dirname(real) !== realDir && path.dirname(real) !== blobs) {
          throw new PaliGemmaError('ERR_INVALID_FILE', `${f}: shard named in ${path.basename(index)} leads out of the checkpoint folder (to ${real})`);
        }
        files.push(f);
      }
    } else if (fs.existsSync(single)) {
      files = [single];
    } else {
      throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${dir}: no model.safetensors or model.safetensors.index.json`);
    }
    return Checkpoint.openFiles(files);
  }

  /** Opens the given safetensors files as one checkpoint (a tensor may appear in one only). */
  static async openFiles(files: string[]): Promise<Checkpoint> {
    const ckpt = new Checkpoint();
    for (const f of files) {
      for (const t of await readHeader(f)) {
        if (ckpt.tensors.has(t.name)) throw invalid(f, `tensor '${t.name}' appears in two shards`);
        ckpt.tensors.set(t.name, t);
      }
    }
    return ckpt;
  }

  get(name: string): SafeTensor | undefined {
    return this.tensors.get(name);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  /** Reads `length` bytes of a tensor's data starting `offset` bytes into it. */
  async read(t: SafeTensor, offset: number, length: number): Promise<Buffer> {
    let fh = this.handles.get(t.file);
    if (!fh) {
      fh = await fs.promises.open(t.file, 'r');
      this.handles.set(t.file, fh);
    }
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await fh.read(buf, done, length - done, t.start + offset + done);
      if (bytesRead === 0) throw invalid(t.file, `unexpected end of file in tensor '${t.name}'`);
      done += bytesRead;
    }
    return buf;
  }

  async close(): Promise<void> {
    await Promise.all([...this.handles.values()].map((h) => h.close().catch(() => undefined)));
    this.handles.clear();
  }
}
