/**
 * Reads float32 arrays from a NumPy .npz (a zip of .npy files, stored or deflated), as big_vision's
 * vae-oid.npz. Small files only: the archive is read whole.
 */
import fs from 'node:fs';
import zlib from 'node:zlib';
import { PaliGemmaError } from '../errors';

export interface NpyArray {
  shape: number[];
  data: Float32Array;
}

function bad(file: string, what: string) {
  return new PaliGemmaError('ERR_INVALID_FILE', `${file}: ${what}`);
}

function parseNpy(buf: Buffer, file: string, name: string): NpyArray {
  if (buf.length < 10 || buf.readUInt8(0) !== 0x93 || buf.toString('latin1', 1, 6) !== 'NUMPY') throw bad(file, `${name} is not a .npy array`);
  const major = buf.readUInt8(6);
  const headerLen = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  const start = major === 1 ? 10 : 12;
  const header = buf.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr !== '<f4' || fortran || shapeText === undefined) throw bad(file, `${name}: only little-endian float32 C-order arrays are supported (${descr})`);
  const shape = shapeText
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
    .map(Number);
  const n = shape.reduce((a, b) => a * b, 1);
  const dataStart = start + headerLen;
  if (buf.length - dataStart !== n * 4) throw bad(file, `${name}: data length does not match shape [${shape.join(', ')}]`);
  const data = new Float32Array(n);
  new Uint8Array(data.buffer).set(buf.subarray(dataStart));
  return { shape, data };
}

export async function readNpz(file: string): Promise<Map<string, NpyArray>> {
  let buf: Buffer;
  try {
    buf = await fs.promises.readFile(file);
  } catch (err) {
    throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${file}: cannot read (${(err as NodeJS.ErrnoException).code})`, { cause: err });
  }
  let eocd = -1;
  for (let i = buf.length - 22; i >= Math.max(0, buf.length - 65557); i--) {
    if (buf.readUInt32LE(i) === 0x06054b50) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw bad(file, 'not a zip/npz archive');
  const count = buf.readUInt16LE(eocd + 10);
  let p = buf.readUInt32LE(eocd + 16);
  const out = new Map<string, NpyArray>();
  for (let i = 0; i < count; i++) {
    if (p + 46 > buf.length || buf.readUInt32LE(p) !== 0x02014b50) throw bad(file, 'corrupt zip central directory');
    const method = buf.readUInt16LE(p + 10);
    const compSize = buf.readUInt32LE(p + 20);
    const size = buf.readUInt32LE(p + 24);
    const nameLen = buf.readUInt16LE(p + 28);
    const extraLen = buf.readUInt16LE(p + 30);
    const commentLen = buf.readUInt16LE(p + 32);
    const local = buf.readUInt32LE(p + 42);
    const name = buf.toString('utf8', p + 46, p + 46 + nameLen);
    p += 46 + nameLen + extraLen + commentLen;
    if (compSize === 0xffffffff || local === 0xffffffff) throw bad(file, 'zip64 archives are not supported');
    // Entries are read into memory, never extracted, but a name that climbs out of the archive
    // says the file is not what it claims.
    if (name.split(/[\\/]/).includes('..') || /^([\\/]|[A-Za-z]:)/.test(name)) throw bad(file, `zip entry '${name}' has a path outside the archive`);
    if (local + 30 > buf.length || buf.readUInt32LE(local) !== 0x04034b50) throw bad(file, `corrupt zip entry ${name}`);
    const dataStart = local + 30 + buf.readUInt16LE(local + 26) + buf.readUInt16LE(local + 28);
    const raw = buf.subarray(dataStart, dataStart + compSize);
    if (raw.length !== compSize) throw bad(file, `truncated zip entry ${name}`);
    let content: Buffer;
    if (method === 0) content = raw;
    else if (method === 8) {
      // Inflate no further than the size the directory declares: a zip bomb stops there.
      try {
        content = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, size) });
      } catch (err) {
        throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: zip entry ${name} does not inflate to its declared ${size} bytes`, { cause: err });
      }
    } else throw bad(file, `zip entry ${name} uses compression method ${method}`);
    if (content.length !== size) throw bad(file, `zip entry ${name} holds ${content.length} bytes, its directory says ${size}`);
    if (name.endsWith('.npy')) out.set(name.slice(0, -4), parseNpy(content, file, name));
  }
  return out;
}
