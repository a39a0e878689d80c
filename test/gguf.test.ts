import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { GGUFValueType, GGUFWriter } from '../lib/gguf/write';
import { PaliGemmaError, readGGUF } from '../lib/index';
import { tmpDir } from './helpers/tmp';

const dir = tmpDir();

async function writeSample(file: string) {
  const w = new GGUFWriter(file);
  w.setString('general.architecture', 'test')
    .setString('general.name', 'sample ✓')
    .setU32('test.u32', 4_000_000_000)
    .setI32('test.i32', -7)
    .setF32('test.f32', 0.5)
    .setBool('test.bool', true)
    .set('test.u64', { type: GGUFValueType.UINT64, value: 2n ** 60n })
    .set('test.i64', { type: GGUFValueType.INT64, value: -42n })
    .set('test.f64', { type: GGUFValueType.FLOAT64, value: Math.PI })
    .set('test.u8', { type: GGUFValueType.UINT8, value: 255 })
    .set('test.i16', { type: GGUFValueType.INT16, value: -300 })
    .setArray('test.strings', GGUFValueType.STRING, ['a', 'bc', '<loc0001>'])
    .setArray('test.floats', GGUFValueType.FLOAT32, [1, 2.5, -3])
    .setArray('test.ints', GGUFValueType.INT32, [1, -2, 3, 4, 5])
    .setArray('test.bools', GGUFValueType.BOOL, [true, false]);
  w.addTensor('a.weight', [4, 3], 'F32');
  w.addTensor('b.weight', [64, 2], 'Q8_0');
  w.addTensor('c', [5], 'F16');
  await w.begin();
  const a = new Float32Array(12).map((_, i) => i);
  await w.writeTensor('a.weight', new Uint8Array(a.buffer));
  await w.writeTensor('b.weight', new Uint8Array(2 * 2 * 34));
  await w.writeTensor('c', new Uint8Array(10));
  return w.finish();
}

const good = path.join(dir, 'good.gguf');

t.before(async () => {
  await writeSample(good);
});

t.test('reads metadata and tensors of a valid file', async (t) => {
  const info = await readGGUF(good);
  t.equal(info.version, 3);
  t.equal(info.path, good);
  t.equal(info.fileSize, fs.statSync(good).size);
  const m = info.metadata;
  t.equal(m['general.architecture'], 'test');
  t.equal(m['general.name'], 'sample ✓');
  t.equal(m['test.u32'], 4_000_000_000);
  t.equal(m['test.i32'], -7);
  t.equal(m['test.f32'], 0.5);
  t.equal(m['test.bool'], true);
  t.equal(m['test.u64'], 2n ** 60n, 'u64 beyond 2^53 is a BigInt');
  t.equal(m['test.i64'], -42, 'small i64 is a Number');
  t.equal(m['test.f64'], Math.PI);
  t.equal(m['test.u8'], 255);
  t.equal(m['test.i16'], -300);
  t.same(m['test.strings'], ['a', 'bc', '<loc0001>']);
  t.ok(m['test.floats'] instanceof Float32Array);
  t.same(Array.from(m['test.floats'] as Float32Array), [1, 2.5, -3]);
  t.ok(m['test.ints'] instanceof Int32Array);
  t.same(m['test.bools'], [true, false]);
  t.same(info.truncatedKeys, []);

  t.same(
    info.tensors.map((x) => [x.name, x.type, x.shape, x.size]),
    [
      ['a.weight', 'f32', [4, 3], 48],
      ['b.weight', 'q8_0', [64, 2], 136],
      ['c', 'f16', [5], 10],
    ],
  );
  const buf = fs.readFileSync(good);
  const a = info.tensors[0]!;
  t.equal(a.offset % 32, 0, 'data is aligned');
  t.equal(buf.readFloatLE(a.offset + 4 * 5), 5, 'offset points at the tensor data');
});

t.test('maxArrayLength cuts long arrays and says which', async (t) => {
  const info = await readGGUF(good, { maxArrayLength: 2 });
  t.same(Array.from(info.metadata['test.ints'] as Int32Array), [1, -2]);
  t.same(info.truncatedKeys.sort(), ['test.floats', 'test.ints', 'test.strings']);
  await t.rejects(readGGUF(good, { maxArrayLength: -1 }), { code: 'ERR_INVALID_ARGUMENT' });
});

async function rejectsNaming(t: Test, file: string, code: string, pattern: RegExp) {
  const err = await readGGUF(file).then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof PaliGemmaError, `${path.basename(file)}: rejects with PaliGemmaError`);
  t.equal((err as PaliGemmaError).code, code, `${path.basename(file)}: code ${code}`);
  t.match((err as Error).message, file, 'message names the file');
  t.match((err as Error).message, pattern);
  t.match((err as Error).stack ?? '', /gguf\.test\.ts/, "stack holds the caller's frames");
}

t.test('bad files reject with errors naming the file', async (t) => {
  await rejectsNaming(t, path.join(dir, 'missing.gguf'), 'ERR_FILE_NOT_FOUND', /no such file/);

  const empty = path.join(dir, 'empty.gguf');
  fs.writeFileSync(empty, '');
  await rejectsNaming(t, empty, 'ERR_INVALID_FILE', /empty/);

  const garbage = path.join(dir, 'garbage.gguf');
  fs.writeFileSync(garbage, Buffer.from('this is not a model file at all, just some text'));
  await rejectsNaming(t, garbage, 'ERR_INVALID_FILE', /not a GGUF file/);

  await rejectsNaming(t, dir, 'ERR_INVALID_FILE', /not a regular file/);

  const full = fs.readFileSync(good);
  const info = await readGGUF(good);
  // Cut inside the fixed header, the key-value section, the tensor infos and the tensor data.
  const last = info.tensors[info.tensors.length - 1]!;
  for (const cut of [3, 10, 30, 200, info.dataOffset - 8, info.dataOffset + 20, last.offset + last.size - 1]) {
    const f = path.join(dir, `truncated-${cut}.gguf`);
    fs.writeFileSync(f, full.subarray(0, cut));
    await rejectsNaming(t, f, 'ERR_INVALID_FILE', /truncated|not a GGUF|invalid/);
  }
});

t.test('crafted headers with absurd counts or lengths reject without crashing', async (t) => {
  const header = (nTensors: bigint, nKv: bigint, tail: Buffer = Buffer.alloc(0)) => {
    const b = Buffer.alloc(24);
    b.writeUInt32LE(0x46554747, 0);
    b.writeUInt32LE(3, 4);
    b.writeBigUInt64LE(nTensors, 8);
    b.writeBigUInt64LE(nKv, 16);
    return Buffer.concat([b, tail]);
  };
  const hugeKey = Buffer.alloc(8);
  hugeKey.writeBigUInt64LE(2n ** 62n);
  const cases: Record<string, Buffer> = {
    'huge-tensor-count': header(2n ** 62n, 0n),
    'huge-kv-count': header(0n, 2n ** 62n),
    'huge-key-length': header(0n, 1n, hugeKey),
    'bad-version': Buffer.concat([Buffer.from('GGUF'), Buffer.from([99, 0, 0, 0]), Buffer.alloc(16)]),
  };
  for (const [name, bytes] of Object.entries(cases)) {
    const f = path.join(dir, `${name}.gguf`);
    fs.writeFileSync(f, bytes);
    await rejectsNaming(t, f, 'ERR_INVALID_FILE', /./);
  }
});

t.test('bit flips in the header never crash the process', async (t) => {
  const full = fs.readFileSync(good);
  const info = await readGGUF(good);
  let rejected = 0;
  for (let pos = 4; pos < info.dataOffset; pos += 7) {
    const bytes = Buffer.from(full);
    bytes[pos] = bytes[pos]! ^ 0xff;
    const f = path.join(dir, 'flipped.gguf');
    fs.writeFileSync(f, bytes);
    await readGGUF(f).then(
      () => undefined,
      (e: PaliGemmaError) => {
        rejected++;
        t.equal(e.code, 'ERR_INVALID_FILE', `flip at ${pos}: ${e.message.slice(0, 80)}`);
      },
    );
  }
  t.ok(rejected > 0, `${rejected} flipped files rejected, the rest still parse`);
});

t.test('argument validation', async (t) => {
  // @ts-expect-error: wrong type on purpose
  await t.rejects(readGGUF(42), { code: 'ERR_INVALID_ARGUMENT', message: /readGGUF\(path\)/ });
  await t.rejects(readGGUF(''), { code: 'ERR_INVALID_ARGUMENT' });
});
