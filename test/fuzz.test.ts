// Property-based fuzzing of the parsers that read untrusted files (a checkpoint someone downloaded):
// whatever the bytes, each one returns or rejects with a PaliGemmaError; none throws anything else,
// hangs or allocates without bound. Seeds are fixed so a failure reproduces; FUZZ_RUNS raises the count.
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import t from 'tap';
import { readPaliGemmaConfig } from '../lib/convert/config';
import { readNpz } from '../lib/convert/npz';
import { Checkpoint } from '../lib/convert/safetensors';
import { parseSentencePiece, parseTokenizerJson } from '../lib/convert/tokenizer';
import { PaliGemmaError, readGGUF } from '../lib/index';
import { FIXTURES } from './helpers/fixtures';
import { tmpDir } from './helpers/tmp';

const RUNS = Number(process.env.FUZZ_RUNS ?? 300);
const dir = tmpDir('pg-fuzz-');
let fileNo = 0;
// One file per kind, rewritten for each input (properties run one input at a time).
const writeTemp = (bytes: Uint8Array, name = 'f') => {
  const f = path.join(dir, name);
  fs.writeFileSync(f, bytes);
  return f;
};

/** Either a value or a PaliGemmaError; anything else fails the property. */
async function settles(what: string, fn: () => unknown): Promise<boolean> {
  try {
    await fn();
    return true;
  } catch (err) {
    if (err instanceof PaliGemmaError) return true;
    throw new Error(`${what}: threw ${(err as Error)?.name}: ${(err as Error)?.message}`);
  }
}

/** Byte-level mutations of a valid file: flips, overwrites with extreme values, truncation, insertion. */
// Edits land within the first `span` bytes (default: anywhere): for a large file, its header.
const mutated = (valid: Buffer, span = valid.length) =>
  fc
    .array(
      fc.oneof(
        fc.record({ kind: fc.constant('set' as const), at: fc.nat(span - 1), value: fc.constantFrom(0x00, 0xff, 0x7f, 0x80, 0x01) }),
        fc.record({ kind: fc.constant('u64' as const), at: fc.nat(Math.max(0, span - 8)), value: fc.constantFrom(0xffffffff, 0x7fffffff, 0, 1) }),
        fc.record({ kind: fc.constant('cut' as const), at: fc.nat(valid.length), value: fc.constant(0) }),
        fc.record({ kind: fc.constant('insert' as const), at: fc.nat(span), value: fc.nat(255) }),
      ),
      { minLength: 1, maxLength: 6 },
    )
    .map((edits) => {
      let b = Buffer.from(valid);
      for (const e of edits) {
        const at = Math.min(e.at, Math.max(0, b.length - 1));
        if (e.kind === 'set' && b.length) b[at] = e.value;
        else if (e.kind === 'u64' && b.length >= at + 8) {
          b.writeUInt32LE(e.value, at);
          b.writeUInt32LE(e.value, at + 4);
        } else if (e.kind === 'cut') b = b.subarray(0, Math.min(e.at, b.length));
        else if (e.kind === 'insert') b = Buffer.concat([b.subarray(0, at), Buffer.from([e.value]), b.subarray(at)]);
      }
      return b;
    });

t.test('safetensors headers: lengths, offsets, dtypes, shapes, duplicate keys, non-UTF-8', async (t) => {
  const entry = fc.record({
    dtype: fc.constantFrom('F32', 'F16', 'BF16', 'I64', 'F64', '', 'f32'),
    shape: fc.array(fc.oneof(fc.nat(8), fc.constantFrom(-1, 2 ** 40, 1.5)), { maxLength: 4 }),
    data_offsets: fc.tuple(fc.oneof(fc.nat(256), fc.constantFrom(-8, 2 ** 53)), fc.oneof(fc.nat(256), fc.constantFrom(-1, 2 ** 60))),
  });
  const header = fc.oneof(
    fc.dictionary(fc.string({ maxLength: 12 }), entry, { maxKeys: 4 }).map((h) => Buffer.from(JSON.stringify(h))),
    fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)), // not JSON, not UTF-8
    fc.constant(Buffer.from('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}')),
  );
  let tried = 0;
  await fc.assert(
    fc.asyncProperty(header, fc.nat(300), fc.oneof(fc.constant(-1), fc.constant(2 ** 62), fc.nat(400)), async (json, dataBytes, lengthField) => {
      tried++;
      const len = Buffer.alloc(8);
      len.writeBigUInt64LE(BigInt(lengthField < 0 ? json.length : lengthField));
      const f = writeTemp(Buffer.concat([len, json, Buffer.alloc(dataBytes)]), 'x.safetensors');
      return settles('Checkpoint.openFiles', async () => {
        const ckpt = await Checkpoint.openFiles([f]);
        try {
          for (const name of ckpt.names()) {
            const s = ckpt.get(name)!;
            if (s.byteLength < 0 || s.start + s.byteLength > fs.statSync(f).size) throw new Error(`tensor ${name} outside the file`);
          }
        } finally {
          await ckpt.close();
        }
      });
    }),
    { numRuns: RUNS, seed: 1 },
  );
  t.pass(`${tried} generated safetensors files: every one opened cleanly or was refused with a PaliGemmaError`);
});

/** Random bytes and mutations of a real file through one parser. */
function fuzzFile(title: string, valid: Buffer, seed: number, what: string, parse: (bytes: Buffer) => unknown) {
  t.test(title, async (t) => {
    let tried = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          mutated(valid),
          fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)),
        ),
        async (bytes) => {
          tried++;
          return settles(what, () => parse(bytes));
        },
      ),
      { numRuns: RUNS, seed },
    );
    t.pass(`${tried} inputs to ${what}: read or refused with a PaliGemmaError`);
  });
}

fuzzFile('npz / zip archives: random bytes and mutations of a real one', fs.readFileSync(path.join(FIXTURES, 'vae', 'vae.npz')), 2, 'readNpz', (b) =>
  readNpz(writeTemp(b, 'x.npz')),
);
fuzzFile(
  'SentencePiece protobuf: random bytes and mutations of a real tokenizer.model',
  fs.readFileSync(path.join(FIXTURES, 'tiny-v1', 'tokenizer.model')),
  3,
  'parseSentencePiece',
  (b) => parseSentencePiece(b, 'tokenizer.model'),
);

t.test('tokenizer.json and config.json: arbitrary JSON values where objects, ids and numbers go', async (t) => {
  const anyJson = fc.jsonValue({ maxDepth: 3 });
  let tried = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        anyJson,
        fc.record({
          model: fc.record({ vocab: fc.oneof(fc.dictionary(fc.string({ maxLength: 4 }), fc.oneof(fc.integer(), fc.double())), anyJson) }),
          added_tokens: anyJson,
        }),
      ),
      async (value) => {
        tried++;
        return settles('parseTokenizerJson', () => parseTokenizerJson(JSON.stringify(value) ?? 'null', 'tokenizer.json'));
      },
    ),
    { numRuns: RUNS, seed: 4 },
  );
  const base = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'tiny-v2', 'config.json'), 'utf8'));
  const keys = ['model_type', 'text_config', 'vision_config', 'image_token_index', 'projection_dim'];
  const subKeys = ['model_type', 'hidden_size', 'num_attention_heads', 'head_dim', 'num_hidden_layers', 'image_size', 'patch_size', 'query_pre_attn_scalar'];
  let configs = 0;
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...keys), fc.constantFrom(...subKeys), anyJson, fc.boolean(), async (key, sub, value, nested) => {
      configs++;
      const cfg = structuredClone(base);
      if (nested && typeof cfg[key] === 'object' && cfg[key]) cfg[key][sub] = value;
      else cfg[key] = value;
      const d = path.join(dir, `cfg-${fileNo++}`);
      fs.mkdirSync(d);
      fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(cfg));
      return settles('readPaliGemmaConfig', () => readPaliGemmaConfig(d));
    }),
    { numRuns: RUNS, seed: 5 },
  );
  t.pass(`${tried} tokenizer.json and ${configs} config.json inputs: read or refused with a PaliGemmaError`);
});

t.test('GGUF reader: mutations of a real (small) GGUF', async (t) => {
  const valid = fs.readFileSync(path.join(__dirname, '..', 'selftest', 'tiny-v1-mmproj-f32.gguf'));
  let tried = 0;
  await fc.assert(
    // The whole file, edited within its metadata and tensor infos (the data section is opaque bytes).
    fc.asyncProperty(mutated(valid, Number((await readGGUF(path.join(__dirname, '..', 'selftest', 'tiny-v1-mmproj-f32.gguf'))).dataOffset)), async (bytes) => {
      tried++;
      return settles('readGGUF', () => readGGUF(writeTemp(bytes, 'x.gguf'), { maxArrayLength: 16 }));
    }),
    { numRuns: RUNS, seed: 6 },
  );
  t.pass(`${tried} GGUF files: read or refused with a PaliGemmaError`);
});
