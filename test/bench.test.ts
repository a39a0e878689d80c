import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import t from 'tap';
import { main } from '../bench/cli';
import { writeMtmdProjector } from '../bench/mtmd';
import { textFlopsPerToken, visionFlops } from '../bench/synthetic';
import { convert } from '../lib/convert/index';
import { readGGUF } from '../lib/gguf/read';
import { FIXTURES } from './helpers/fixtures';
import { tmpDir } from './helpers/tmp';

t.test('FLOP counts at PaliGemma-3B shapes', (t) => {
  // ~0.22 TFLOP per 224 px image through SigLIP-So400m; Gemma-2B: ~2 B multiply-adds per token.
  t.ok(Math.abs(visionFlops(224) / 1e12 - 0.22) < 0.02, `${(visionFlops(224) / 1e12).toFixed(3)} TFLOP at 224 px`);
  t.ok(visionFlops(448) > 4 * visionFlops(224), 'attention grows faster than linear');
  t.ok(Math.abs(textFlopsPerToken() / 1e9 - 3.96) < 0.1, `${(textFlopsPerToken() / 1e9).toFixed(2)} GFLOP per token`);
  t.end();
});

t.test('bench: bad usage exits 2', async (t) => {
  const sink = new Writable({
    write(_c, _e, cb) {
      cb();
    },
  });
  for (const args of [
    ['--synthetic', '300'],
    ['--type', 'q9'],
    ['--vision-type', 'q4_k_m'],
    ['--reps', '0'],
    ['--threads', 'x'],
    ['--bogus'],
    ['--llama-tools', '/no/such/folder'],
  ]) {
    t.equal(await main(args, sink, sink), 2, args.join(' '));
  }
});

t.test('the mtmd projector for the comparison keeps our tower byte for byte', async (t) => {
  const dir = tmpDir();
  const res = await convert({ input: path.join(FIXTURES, 'tiny-v1'), outDir: dir, type: 'f32', visionType: 'q8_0', name: 'tiny' });
  const out = path.join(dir, 'tiny-as-gemma3.gguf');
  await writeMtmdProjector(res.mmproj, out);
  const src = await readGGUF(res.mmproj);
  const dst = await readGGUF(out);
  t.equal(dst.metadata['clip.projector_type'], 'gemma3');
  t.equal(dst.metadata['clip.use_gelu'], true, "SigLIP's tanh GELU");
  for (const k of [
    'clip.vision.block_count',
    'clip.vision.embedding_length',
    'clip.vision.feed_forward_length',
    'clip.vision.image_size',
    'clip.vision.patch_size',
  ]) {
    t.equal(dst.metadata[k], src.metadata[k], k);
  }
  const tower = src.tensors.filter((x) => x.name.startsWith('v.'));
  t.ok(
    tower.some((x) => x.type === 'q8_0'),
    'quantized tower',
  );
  const fs1 = fs.readFileSync(res.mmproj);
  const fs2 = fs.readFileSync(out);
  for (const a of tower) {
    const b = dst.tensors.find((x) => x.name === a.name);
    if (!b) {
      t.fail(`missing ${a.name}`);
      continue;
    }
    t.same([b.type, b.shape], [a.type, a.shape], `${a.name} type and shape`);
    t.ok(fs1.subarray(a.offset, a.offset + a.size).equals(fs2.subarray(b.offset, b.offset + b.size)), `${a.name} bytes`);
  }
  const width = src.metadata['clip.vision.embedding_length'] as number;
  const textWidth = src.metadata['clip.vision.projection_dim'] as number;
  t.same(dst.tensors.find((x) => x.name === 'mm.input_projection.weight')?.shape, [textWidth, width]);
  t.same(dst.tensors.find((x) => x.name === 'mm.soft_emb_norm.weight')?.shape, [width]);
  t.notOk(
    dst.tensors.some((x) => x.name.startsWith('mm.0')),
    'our projector is left out',
  );
  await t.rejects(writeMtmdProjector(res.model, path.join(dir, 'x.gguf')), /not a paligemma mmproj/);
  t.notOk(fs.existsSync(path.join(dir, 'x.gguf')));
});
