// Parity with the independent float64 reference (test/fixtures/*/reference), at f32.
import path from 'node:path';
import t from 'tap';
import { PaliGemma, systemInfo, type VisionAttentionMode } from '../lib/index';
import { greedyVerdict } from '../lib/util/reference';
import { convertedFixture, FIXTURES, readF32, reference, relError } from './helpers/fixtures';

// Our own kernels run where the CPU has what they need; the others everywhere.
const features = systemInfo().then((i) => i.cpuFeatures);
let avx512 = false;
let avx2 = false;
let avx512Vnni = false;
t.before(async () => {
  const f = await features;
  avx512 = f.AVX512 === '1';
  avx2 = f.AVX2 === '1' && f.FMA === '1';
  avx512Vnni = avx512 && f.AVX512_VNNI === '1';
});

for (const fixture of ['tiny-v1', 'tiny-v2'] as const) {
  const ref = reference(fixture);
  const refDir = path.join(FIXTURES, fixture, 'reference');

  t.test(`${fixture}: pixels, embeddings, tokenization`, async (t) => {
    const files = await convertedFixture(fixture);
    const model = await PaliGemma.load({ ...files, gpu: 'cpu' });
    t.teardown(() => model.dispose());
    t.equal(model.info.imageTokens, ref.n_image_tokens);
    t.equal(model.info.vocabSize, ref.vocab_size);
    for (const image of Object.keys(ref.images)) {
      const png = path.join(refDir, `${image}.png`);
      const pixels = await model.preprocess(png);
      const refPixels = readF32(path.join(refDir, `${image}.pixels.f32`));
      let maxDiff = 0;
      for (let i = 0; i < refPixels.length; i++) maxDiff = Math.max(maxDiff, Math.abs(pixels[i]! - refPixels[i]!));
      t.ok(maxDiff <= 1e-5, `${image}: pixels equal PIL's (max abs diff ${maxDiff.toExponential(2)})`);
      const embd = await model.encodeImage(png);
      t.same([embd.tokens, embd.dim], ref.images[image]!.embd_shape);
      const err = relError(embd.data, readF32(path.join(refDir, `${image}.embd.f32`)));
      t.ok(err <= 2e-3, `${image}: embedding rel. error ${err.toExponential(2)} <= 2e-3`);
    }
    for (const { text, ids } of ref.tokenize) t.same(Array.from(await model.tokenize(text)), ids, `tokenize ${JSON.stringify(text)}`);
    for (const c of ref.cases) {
      t.same([ref.cases[0]!.prefix_ids[0], ...(await model.tokenize(`${c.prompt}\n`))], c.prefix_ids, `prefix of ${JSON.stringify(c.prompt)}`);
    }
  });

  // Every kernel variant is tested explicitly, not only the one this machine would pick.
  for (const [label, opts, tol] of [
    ['default settings', {}, 5e-3],
    ['fused vision attention', { visionAttention: 'fused' }, 5e-3],
    ['separate vision attention ops', { visionAttention: 'separate' }, 5e-3],
    ['tiled vision attention (ours, AVX-512)', { visionAttention: 'tiled' }, 5e-3],
    ['tiled vision attention (ours, AVX2)', { visionAttention: 'tiled-avx2' }, 5e-3],
    ['tiled vision attention in 16-bit integers (ours, AVX2)', { visionAttention: 'int16-avx2' }, 5e-3],
    ['tiled vision attention in 16-bit integers (ours, AVX-512 VNNI)', { visionAttention: 'int16' }, 5e-3],
    ['f32 KV cache, flash attention off', { kvCacheType: 'f32', flashAttention: 'off' }, 1e-3],
  ] as const) {
    t.test(`${fixture}: logits and greedy tokens, ${label}`, async (t) => {
      if ('visionAttention' in opts && opts.visionAttention === 'tiled' && !avx512) {
        t.comment("skipped: 'tiled' at 512 bits needs AVX-512, which this CPU lacks (its AVX2 form is the next case)");
        return;
      }
      if ('visionAttention' in opts && opts.visionAttention === 'int16' && !avx512Vnni) {
        t.comment("skipped: 'int16' at 512 bits needs AVX-512 VNNI, which this CPU lacks (its AVX2 form is the case before)");
        return;
      }
      if ('visionAttention' in opts && (opts.visionAttention === 'tiled-avx2' || opts.visionAttention === 'int16-avx2') && !avx2) {
        t.comment(`skipped: '${opts.visionAttention}' needs AVX2 and FMA, which this CPU lacks`);
        return;
      }
      const files = await convertedFixture(fixture);
      const model = await PaliGemma.load({ ...files, gpu: 'cpu', ...opts });
      t.teardown(() => model.dispose());
      t.ok(ref.cases.length > 0, `${ref.cases.length} reference cases`);
      let worst = 0;
      let checked = 0;
      for (const c of ref.cases) {
        const [steps, vocab] = c.logits_shape;
        // Every case's logits must be there: a missing file fails, it is not skipped.
        const refLogits = readF32(path.join(refDir, `${c.name}.logits.f32`));
        t.equal(refLogits.length, steps * vocab, `${c.name}: reference logits ${steps} x ${vocab}`);
        const image = path.join(refDir, `${c.image}.png`);
        // Logits of every step along the reference's own continuation (teacher forcing), so steps
        // after a near-tie flip are compared too.
        const forced = await model.generate({ image, prompt: c.prompt, maxTokens: steps, logits: true, forceTokens: c.greedy_ids });
        t.equal(forced.logits!.length, steps);
        for (let s = 0; s < steps; s++) {
          const err = relError(forced.logits![s]!, refLogits.subarray(s * vocab, (s + 1) * vocab));
          worst = Math.max(worst, err);
          if (err > tol) t.fail(`${c.name} step ${s}: logits rel. error ${err.toExponential(2)} > ${tol}`);
        }
        // Free-running greedy decoding: identical, except at a near-tie where ours is the
        // reference's runner-up.
        const free = await model.generate({ image, prompt: c.prompt, maxTokens: steps });
        const verdict = greedyVerdict(free.tokens, c.greedy_ids.slice(0, steps), refLogits, vocab);
        t.ok(verdict.ok, `${c.name}: ${verdict.detail}`);
        if (verdict.flip < 0) t.equal(free.tokens.length, steps, `${c.name}: ${steps} tokens`);
        checked++;
      }
      t.equal(checked, ref.cases.length, 'every case was checked');
      t.ok(worst <= tol, `worst logits rel. error ${worst.toExponential(2)} <= ${tol}`);
    });
  }
}

t.test('q8_0 text model: first-step logits within a few percent of the reference', async (t) => {
  const ref = reference('tiny-v2');
  const c = ref.cases[0]!;
  const files = await convertedFixture('tiny-v2', 'q8_0');
  const model = await PaliGemma.load({ ...files, gpu: 'cpu' });
  t.teardown(() => model.dispose());
  const r = await model.generate({ image: path.join(FIXTURES, 'tiny-v2', 'reference', `${c.image}.png`), prompt: c.prompt, maxTokens: 1, logits: true });
  const refLogits = readF32(path.join(FIXTURES, 'tiny-v2', 'reference', `${c.name}.logits.f32`)).subarray(0, c.logits_shape[1]);
  const err = relError(r.logits![0]!, refLogits);
  t.ok(err < 0.05, `q8_0 first-step rel. error ${err.toExponential(2)} < 5e-2`);
});

t.test('vision attention kernels: the f32 ones beat the fused f16 one against the reference, the int16 one is as close', async (t) => {
  const ref = reference('tiny-v2');
  const refDir = path.join(FIXTURES, 'tiny-v2', 'reference');
  const files = await convertedFixture('tiny-v2');
  const kinds: [VisionAttentionMode, { flashAttention?: 'off' }][] = [
    ['fused', {}],
    ['separate', {}],
    ['auto', { flashAttention: 'off' }],
  ];
  if (avx512) kinds.push(['tiled', {}]);
  if (avx2) kinds.push(['tiled-avx2', {}]);
  if (avx2) kinds.push(['int16-avx2', {}]);
  if (avx512Vnni) kinds.push(['int16', {}]);
  const worst: number[] = [];
  for (const [visionAttention, extra] of kinds) {
    const model = await PaliGemma.load({ ...files, gpu: 'cpu', imageCacheMB: 0, visionAttention, ...extra });
    if (!('flashAttention' in extra)) t.equal(model.info.visionAttention, visionAttention, `${visionAttention} as asked`);
    else t.equal(model.info.visionAttention, 'separate', "flashAttention 'off' (the precise setting) means separate ops with 'auto' too");
    let w = 0;
    for (const image of Object.keys(ref.images)) {
      w = Math.max(w, relError((await model.encodeImage(path.join(refDir, `${image}.png`))).data, readF32(path.join(refDir, `${image}.embd.f32`))));
    }
    await model.dispose();
    worst.push(w);
    t.ok(
      w <= (visionAttention === 'fused' || visionAttention.startsWith('int16') ? 2e-3 : 5e-4),
      `${visionAttention}${'flashAttention' in extra ? ' (flashAttention off)' : ''}: worst embedding rel. error ${w.toExponential(2)}`,
    );
  }
  // Fused attention keeps K and V in f16; the int16 forms quantize q, k, v to 16-bit integers; the others stay in f32.
  const f32Kinds = worst.filter((_, i) => i > 0 && !kinds[i]![0].startsWith('int16'));
  t.ok(
    f32Kinds.every((w) => w < worst[0]!),
    'the f32 kernels are closer than the fused one',
  );
  kinds.forEach(([kind], i) => {
    if (kind.startsWith('int16'))
      t.ok(worst[i]! < 2 * worst[0]!, `${kind} (${worst[i]!.toExponential(2)}) within twice the fused kernel's error (${worst[0]!.toExponential(2)})`);
  });
  if (!avx512) t.comment("'tiled' at 512 bits needs AVX-512: not on this CPU");
  if (!avx2) t.comment("'tiled-avx2' needs AVX2 and FMA: not on this CPU");
  if (!avx512Vnni) t.comment("'int16' at 512 bits needs AVX-512 VNNI: not on this CPU");
});
