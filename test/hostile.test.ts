// Hostile model files: every one rejects with a PaliGemmaError (or, where a flipped byte is benign,
// loads and runs); the process never dies and a good model keeps working.
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import t from 'tap';
import { convertLora, PaliGemma, PaliGemmaError, readGGUF } from '../lib/index';
import { convertedFixture, FIXTURES } from './helpers/fixtures';
import { tmpDir } from './helpers/tmp';

const dir = tmpDir();
const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');

async function tryLoad(model: string, mmproj: string): Promise<'rejected' | 'loaded'> {
  let m: PaliGemma;
  try {
    m = await PaliGemma.load({ model, mmproj, gpu: 'cpu', threads: 1, imageCacheMB: 0 });
  } catch (err) {
    if (!(err instanceof PaliGemmaError)) throw err;
    return 'rejected';
  }
  try {
    await m.generate({ image: png, prompt: 'caption en', maxTokens: 2 });
  } catch (err) {
    if (!(err instanceof PaliGemmaError)) throw err;
  }
  await m.dispose();
  return 'loaded';
}

for (const which of ['model', 'mmproj'] as const) {
  t.test(`${which}: empty, garbage, truncated, bit-flipped, crafted headers`, async (t) => {
    const good = await convertedFixture('tiny-v2', 'q8_0', true);
    const src = good[which];
    const other = which === 'model' ? good.mmproj : good.model;
    const bytes = fs.readFileSync(src);
    const info = await readGGUF(src);
    const variants: [string, Buffer][] = [
      ['empty', Buffer.alloc(0)],
      ['garbage', Buffer.from('x'.repeat(5000))],
      ['magic only', Buffer.from('GGUF')],
    ];
    const dataEnd = Math.max(...info.tensors.map((x) => x.offset + x.size));
    for (const cut of [8, 24, 100, 1000, Math.floor(info.dataOffset / 2), info.dataOffset - 1, info.dataOffset + 100, dataEnd - 1]) {
      variants.push([`truncated at ${cut}`, bytes.subarray(0, cut)]);
    }
    // Bit flips all over the header and tensor infos (deterministic positions).
    for (let pos = 4, k = 0; pos < info.dataOffset; pos += 31 + (k++ % 53)) {
      const b = Buffer.from(bytes.subarray(0, Math.min(bytes.length, info.dataOffset + 4096)));
      b[pos] = b[pos]! ^ (1 << (k % 8));
      variants.push([`bit flip at ${pos}`, Buffer.concat([b, bytes.subarray(b.length)])]);
    }
    // Crafted counts: huge tensor count, kv count, first key length.
    for (const [name, off, value] of [
      ['tensor count', 8, 2n ** 40n],
      ['kv count', 16, 2n ** 40n],
      ['key length', 24, 2n ** 60n],
    ] as const) {
      const b = Buffer.from(bytes);
      b.writeBigUInt64LE(value, off);
      variants.push([`huge ${name}`, b]);
    }
    const counts = { rejected: 0, loaded: 0 };
    const file = path.join(dir, `${which}-variant.gguf`);
    for (const [name, data] of variants) {
      fs.writeFileSync(file, data);
      const r = which === 'model' ? await tryLoad(file, other) : await tryLoad(other, file);
      counts[r]++;
      if (['empty', 'garbage', 'magic only'].includes(name) || name.startsWith('truncated') || name.startsWith('huge')) {
        t.equal(r, 'rejected', name);
      }
    }
    t.ok(counts.rejected > variants.length / 3, `${counts.rejected} rejected, ${counts.loaded} benign flips loaded and ran`);
    t.equal(await tryLoad(good.model, good.mmproj), 'loaded', 'the good pair still works');
  });
}

t.test('hostile LoRA adapter files (text and vision parts) and mask codes: refused or harmless, the model keeps working', async (t) => {
  const files = await convertedFixture('tiny-v2', 'f32', true);
  const lora = await convertLora({ adapter: path.join(FIXTURES, 'tiny-v2-lora'), base: files.model, outDir: tmpDir('pg-lora-'), type: 'f32' });
  const model = await PaliGemma.load({ ...files, gpu: 'cpu', threads: 1 });
  t.teardown(() => model.dispose());
  const baseline = (await model.generate({ image: png, prompt: 'caption en', maxTokens: 4 })).tokens;
  const counts = { text: { tried: 0, loaded: 0 }, vision: { tried: 0, loaded: 0 } };
  for (const part of ['text', 'vision'] as const) {
    const valid = fs.readFileSync(part === 'text' ? lora.adapter : lora.visionAdapter!);
    const info = await readGGUF(part === 'text' ? lora.adapter : lora.visionAdapter!);
    // Damage where it matters most: the header and tensor infos, and the first tensor's data.
    const headerEnd = Number(info.tensors[0]!.offset) + 64;
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.array(fc.tuple(fc.nat(Math.min(valid.length, headerEnd + 4096) - 1), fc.constantFrom(0, 0xff, 0x7f, 0x80, 1, 0x41)), {
            minLength: 1,
            maxLength: 4,
          }),
          fc.nat(valid.length - 1).map((cut) => cut),
        ),
        async (edit) => {
          const b = typeof edit === 'number' ? valid.subarray(0, edit) : Buffer.from(valid);
          if (typeof edit !== 'number') for (const [at, value] of edit) b[at] = value;
          const f = path.join(dir, `adapter-${part}-${counts[part].tried++}.gguf`);
          fs.writeFileSync(f, b);
          try {
            const a = await (part === 'text' ? model.loadAdapter(f, { visionPath: lora.visionAdapter! }) : model.loadAdapter(lora.adapter, { visionPath: f }));
            counts[part].loaded++;
            await model.generate({ image: png, prompt: 'caption en', maxTokens: 2, adapters: [a] }).catch((err) => {
              if (!(err instanceof PaliGemmaError)) throw err;
            });
            await a.dispose();
          } catch (err) {
            if (!(err instanceof PaliGemmaError)) throw err;
          } finally {
            fs.rmSync(f);
          }
          return true;
        },
      ),
      { numRuns: 150, seed: 7 },
    );
    t.pass(`${part} part: ${counts[part].tried} damaged files, ${counts[part].loaded} harmless enough to load, the rest refused with a PaliGemmaError`);
  }
  let masks = 0;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.oneof(fc.integer(), fc.nat(127), fc.double()), { minLength: 16, maxLength: 16 }), async (codes) => {
      masks++;
      await model.decodeMask(codes).catch((err) => {
        if (!(err instanceof PaliGemmaError)) throw err;
      });
      return true;
    }),
    { numRuns: 300, seed: 8 },
  );
  t.pass(`${masks} arbitrary mask-code vectors: decoded or refused`);
  t.same((await model.generate({ image: png, prompt: 'caption en', maxTokens: 4 })).tokens, baseline, 'and the model answers as before');
});
