import fs from 'node:fs';
import path from 'node:path';

export const FIXTURES = path.join(__dirname, '..', 'fixtures');

export interface Reference {
  image_size: number;
  n_image_tokens: number;
  image_token_index: number;
  vocab_size: number;
  n_tokenizer: number;
  images: Record<string, { source_size: [number, number]; embd_shape: [number, number] }>;
  cases: { name: string; image: string; prompt: string; prefix_ids: number[]; greedy_ids: number[]; logits_shape: [number, number] }[];
  tokenize: { text: string; ids: number[] }[];
}

export function reference(fixture: 'tiny-v1' | 'tiny-v2'): Reference {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, fixture, 'reference', 'reference.json'), 'utf8'));
}

export { readF32File as readF32 } from '../../lib/util/reference';

/** Copies a fixture checkpoint folder (without its reference outputs) so a test may damage it. */
export function copyCheckpoint(fixture: string, dest: string): string {
  fs.mkdirSync(dest, { recursive: true });
  for (const f of fs.readdirSync(path.join(FIXTURES, fixture))) {
    const src = path.join(FIXTURES, fixture, f);
    if (fs.statSync(src).isFile()) fs.copyFileSync(src, path.join(dest, f));
  }
  return dest;
}

/** Rewrites a safetensors file, letting `edit` change each tensor's header entry and bytes. */
export function rewriteSafetensors(
  file: string,
  edit: (name: string, entry: { dtype: string; shape: number[] }, data: Buffer) => { dtype: string; shape: number[]; data: Buffer } | null,
) {
  const buf = fs.readFileSync(file);
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.toString('utf8', 8, 8 + len)) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  const base = 8 + len;
  const out: Record<string, unknown> = {};
  const chunks: Buffer[] = [];
  let offset = 0;
  for (const [name, e] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const r = edit(name, { dtype: e.dtype, shape: e.shape }, buf.subarray(base + e.data_offsets[0], base + e.data_offsets[1]));
    if (!r) continue;
    out[name] = { dtype: r.dtype, shape: r.shape, data_offsets: [offset, offset + r.data.length] };
    chunks.push(r.data);
    offset += r.data.length;
  }
  const json = Buffer.from(JSON.stringify(out));
  const lenBuf = Buffer.alloc(8);
  lenBuf.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([lenBuf, json, ...chunks]));
}

/** Converts a fixture checkpoint once per test process and returns the GGUF pair. */
const converted = new Map<string, Promise<{ model: string; mmproj: string }>>();
export function convertedFixture(
  fixture: 'tiny-v1' | 'tiny-v2',
  type: 'f32' | 'q8_0' | 'q4_0' | 'f16' = 'f32',
  seg = false,
): Promise<{ model: string; mmproj: string }> {
  const key = `${fixture}-${type}-${seg}`;
  if (!converted.has(key)) {
    // Imported lazily so that tests without models never load the converter.
    const { convert } = require('../../lib/index') as typeof import('../../lib/index');
    const { tmpDir } = require('./tmp') as typeof import('./tmp');
    converted.set(
      key,
      convert({
        input: path.join(FIXTURES, fixture),
        outDir: tmpDir('pg-model-'),
        type,
        visionType: type === 'q8_0' || type === 'q4_0' ? 'f16' : type,
        segDecoder: seg ? path.join(FIXTURES, 'vae', 'vae.npz') : undefined,
      }),
    );
  }
  return converted.get(key)!;
}

// The same measure the CLI's selftest uses.
export { relError } from '../../lib/util/reference';
