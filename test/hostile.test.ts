// Hostile model files: every one rejects with a PaliGemmaError (or, where a flipped byte is benign,
// loads and runs); the process never dies and a good model keeps working.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { PaliGemma, PaliGemmaError, readGGUF } from '../lib/index';
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
