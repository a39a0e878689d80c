// Our own CPU kernels (the int8 product for q8_0 vision weights, the tiled attention) against
// ggml's, inside the whole vision tower, on a small random checkpoint whose widths are multiples of
// 32 (so q8_0 applies to every matrix, as at real shapes): each variant is tested explicitly, and the
// one the load-time measurement picks is one of them.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { writeSyntheticAdapter } from '../bench/adapters';
import { writeSyntheticCheckpoint } from '../bench/synthetic';
import { convert, convertLora, PaliGemma, systemInfo } from '../lib/index';
import { relError } from '../lib/util/reference';
import { convertedFixture, FIXTURES, readF32, reference } from './helpers/fixtures';
import { tmpDir } from './helpers/tmp';

const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');

/** Whether the CPU has AVX-VNNI (ggml's CPU library for it may not report it: zen4's does not). */
// Whether this build has ggml's AVX2-only CPU library (PALIGEMMA_CPU_VARIANT=haswell runs as such a CPU).
function haswellLibrary(): boolean {
  const libs = path.dirname(require(path.join(__dirname, '..', 'dist', 'native', 'binding.js')).getBinding().file as string);
  return process.arch === 'x64' && fs.existsSync(path.join(libs, 'libggml-cpu-haswell.so'));
}

// One encode in a child process that runs as another CPU (PALIGEMMA_CPU_VARIANT): the products it ran and the embedding.
function encodeUnderVariant(
  variant: string,
  files: { model: string; mmproj: string },
  options: Record<string, string>,
): { ran: string; data: Float32Array; log: string } {
  const out = path.join(tmpDir(), `${variant}.f32`);
  const script = `
    const { PaliGemma } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
    (async () => {
      const m = await PaliGemma.load({ ...${JSON.stringify(files)}, gpu: 'cpu', imageCacheMB: 0, ...${JSON.stringify(options)} });
      const e = await m.encodeImage(${JSON.stringify(png)});
      require('node:fs').writeFileSync(${JSON.stringify(out)}, Buffer.from(e.data.buffer, e.data.byteOffset, e.data.byteLength));
      console.log('RAN', m.info.visionMatmul);
      await m.dispose();
    })().catch((e) => console.log('ERR', e.code, e.message));`;
  const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, PALIGEMMA_CPU_VARIANT: variant } });
  const ran = /^RAN (\S+)/m.exec(res.stdout)?.[1] ?? '';
  const data = ran ? new Float32Array(new Uint8Array(fs.readFileSync(out)).buffer) : new Float32Array(0);
  return { ran, data, log: res.stdout + res.stderr };
}

function cpuHasAvxVnni(features: Record<string, string>): boolean {
  if (features.AVX_VNNI === '1') return true;
  if (process.env.PALIGEMMA_CPU_VARIANT) return false; // then only what the chosen library has
  try {
    return /^flags\s*:.*\bavx_vnni\b/m.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

t.test('int8 q8_0 products and tiled attention agree with ggml on a whole tower', async (t) => {
  const features = (await systemInfo()).cpuFeatures;
  const avx512 = features.AVX512 === '1';
  const avx2 = features.AVX2 === '1' && features.FMA === '1';
  const vnni = avx512 && features.AVX512_VNNI === '1';
  const avxVnni = cpuHasAvxVnni(features);
  const dir = tmpDir();
  const ckpt = path.join(dir, 'ckpt');
  writeSyntheticCheckpoint(ckpt, 224, () => undefined, {
    text: { hidden: 128, ffn: 256, layers: 1, heads: 2, kvHeads: 1, headDim: 64, vocab: 1600 },
    vision: { hidden: 128, ffn: 256, layers: 3, heads: 2 },
  });
  const q8 = await convert({ input: ckpt, outDir: path.join(dir, 'q8'), type: 'f32', visionType: 'q8_0' });
  const f32 = await convert({ input: ckpt, outDir: path.join(dir, 'f32'), type: 'f32', visionType: 'f32' });
  const embed = async (files: { model: string; mmproj: string }, options: Record<string, string>) => {
    const m = await PaliGemma.load({ ...files, gpu: 'cpu', imageCacheMB: 0, ...options });
    try {
      return { data: (await m.encodeImage(png)).data, info: m.info };
    } finally {
      await m.dispose();
    }
  };

  const exact = await embed(f32, { visionAttention: 'separate' });
  const ggml = await embed(q8, { visionMatmul: 'ggml', visionAttention: 'separate' });
  t.equal(ggml.info.visionMatmul, 'ggml');
  const ggmlErr = relError(ggml.data, exact.data);
  t.ok(ggmlErr > 0 && ggmlErr < 5e-2, `ggml's q8_0 tower: rel. error ${ggmlErr.toExponential(2)} from the f32 tower`);
  // Our int8 product in each form this CPU has ('int8' is the widest: AVX-512 VNNI, else AVX-VNNI, else AVX2).
  const forms: [string, string][] = [];
  if (avx2) forms.push(['int8', vnni ? 'int8' : avxVnni ? 'int8-avxvnni' : 'int8-avx2']);
  if (avxVnni) forms.push(['int8-avxvnni', 'int8-avxvnni']);
  if (avx2) forms.push(['int8-avx2', 'int8-avx2']);
  const oursData: Float32Array[] = [];
  for (const [mode, runs] of forms) {
    const ours = await embed(q8, { visionMatmul: mode, visionAttention: 'separate' });
    t.equal(ours.info.visionMatmul, runs, `${mode} runs as ${runs}`);
    const oursErr = relError(ours.data, exact.data);
    // Both are q8_0 products: the same error, to the rounding of the activations' scales.
    t.ok(oursErr < ggmlErr * 1.25 + 1e-4, `our ${runs} q8_0 tower: rel. error ${oursErr.toExponential(2)} (ggml's ${ggmlErr.toExponential(2)})`);
    t.ok(relError(ours.data, ggml.data) < 2 * ggmlErr, 'and close to ggml q8_0 tower itself');
    oursData.push(ours.data);
  }
  // The VNNI forms compute the same integer sums; float rounding in the layer norms and GELU, summed
  // in another lane order, moves a few activations across a quantization step: far below q8_0's own
  // error. The AVX2 form stores fc2's input (GELU's output) shifted and unsigned, a step up to
  // (max + 0.17) / max as coarse: it agrees with the others only to within q8_0's own error.
  for (let i = 1; i < forms.length; ++i) {
    if (forms[i]![1] === forms[0]![1]) continue; // the same kernel ('int8' is the AVX2 form on such a CPU)
    const d = relError(oursData[i]!, oursData[0]!);
    const bound = forms[i]![1] === 'int8-avx2' ? ggmlErr * 0.75 : ggmlErr / 4;
    t.ok(d < bound, `the ${forms[i]![1]} form agrees with ${forms[0]![1]}: rel. ${d.toExponential(2)}`);
  }
  // As a CPU without VNNI runs it (the portable build's AVX2 library, our kernels kept to AVX2):
  // 'int8' is the AVX2 form there.
  if (avx2 && haswellLibrary()) {
    const res = encodeUnderVariant('haswell', q8, { visionMatmul: 'int8', visionAttention: 'separate' });
    t.equal(res.ran, 'int8-avx2', `under PALIGEMMA_CPU_VARIANT=haswell 'int8' runs as int8-avx2 ${res.log}`);
    // ggml's own ops of that library round otherwise, so the tower is held to q8_0's error, as the others.
    const e = relError(res.data, exact.data);
    t.ok(e < ggmlErr * 1.25 + 1e-4, `and its q8_0 tower: rel. error ${e.toExponential(2)} (ggml's ${ggmlErr.toExponential(2)})`);
  }
  if (!avx2) {
    for (const mode of ['int8', 'int8-avx2']) {
      await t.rejects(embed(q8, { visionMatmul: mode }), { code: 'ERR_INVALID_ARGUMENT', message: /AVX2 and FMA/ }, `'${mode}' is refused without AVX2`);
    }
  }
  if (!avxVnni) {
    await t.rejects(
      embed(q8, { visionMatmul: 'int8-avxvnni' }),
      { code: 'ERR_INVALID_ARGUMENT', message: /AVX-VNNI/ },
      "'int8-avxvnni' is refused without AVX-VNNI",
    );
  }
  // Our attention at each vector width this CPU has ('tiled' is the widest: AVX-512, else AVX2).
  if (avx2) {
    const tiled = await embed(f32, { visionAttention: 'tiled' });
    t.equal(tiled.info.visionAttention, avx512 ? 'tiled' : 'tiled-avx2', "'tiled' runs at the widest vectors the CPU has");
    const narrow = await embed(f32, { visionAttention: 'tiled-avx2' });
    t.equal(narrow.info.visionAttention, 'tiled-avx2');
    for (const [name, r] of [
      ['tiled', tiled],
      ['tiled-avx2', narrow],
    ] as const) {
      const e = relError(r.data, exact.data);
      t.ok(e < 1e-5, `${name} attention in f32: rel. error ${e.toExponential(2)} from separate ops`);
    }
    // The 16-bit integer form: q, k, v quantized per row, held to the fused kernel's f16 K and V.
    const int16 = await embed(f32, { visionAttention: 'int16-avx2' });
    t.equal(int16.info.visionAttention, 'int16-avx2');
    const fusedError = relError((await embed(f32, { visionAttention: 'fused' })).data, exact.data);
    const e = relError(int16.data, exact.data);
    t.ok(e < 2e-3 && e < 2 * fusedError, `int16-avx2 attention: rel. error ${e.toExponential(2)} from separate ops (fused: ${fusedError.toExponential(2)})`);
    // 'int16' is the same arithmetic over 512-bit vectors where AVX-512 VNNI is there, else 'int16-avx2'.
    const wide = await embed(f32, { visionAttention: 'int16' });
    t.equal(wide.info.visionAttention, vnni ? 'int16' : 'int16-avx2', "'int16' runs at the widest vectors it can");
    const ew = relError(wide.data, exact.data);
    t.ok(ew < 2e-3 && ew < 2 * fusedError, `int16 attention: rel. error ${ew.toExponential(2)} from separate ops (fused: ${fusedError.toExponential(2)})`);
  } else {
    for (const mode of ['tiled', 'tiled-avx2', 'int16', 'int16-avx2']) {
      await t.rejects(embed(f32, { visionAttention: mode }), { code: 'ERR_INVALID_ARGUMENT', message: /AVX2 and FMA/ }, `'${mode}' is refused without AVX2`);
    }
  }
  const auto = await embed(q8, {});
  t.ok(
    ['fused', 'separate', 'tiled', 'tiled-avx2', 'int16', 'int16-avx2'].includes(auto.info.visionAttention),
    `auto picked ${auto.info.visionAttention} attention`,
  );
  t.ok(['ggml', 'int8', 'int8-avxvnni', 'int8-avx2'].includes(auto.info.visionMatmul), `auto picked the ${auto.info.visionMatmul} product`);
  t.ok(relError(auto.data, exact.data) < 5e-2, 'and its tower is as close as the others');
});

t.test('a LoRA adapter on every vision matrix: each product path applies it as merging it into the weights does', async (t) => {
  const features = (await systemInfo()).cpuFeatures;
  const vnni = features.AVX512 === '1' && features.AVX512_VNNI === '1';
  const avxVnni = cpuHasAvxVnni(features);
  const dir = tmpDir();
  const shapes = {
    text: { hidden: 128, ffn: 256, layers: 1, heads: 2, kvHeads: 1, headDim: 64, vocab: 1600 },
    vision: { hidden: 128, ffn: 256, layers: 3, heads: 2 },
  };
  const ckpt = path.join(dir, 'ckpt');
  writeSyntheticCheckpoint(ckpt, 224, () => undefined, shapes);
  const adapterDir = path.join(dir, 'adapter');
  writeSyntheticAdapter(adapterDir, 8, () => undefined, shapes, 2 ** -4);
  const f32 = await convert({ input: ckpt, outDir: path.join(dir, 'f32'), type: 'f32', visionType: 'f32' });
  const q8 = await convert({ input: ckpt, outDir: path.join(dir, 'q8'), type: 'f32', visionType: 'q8_0' });
  const merged = await convert({ input: ckpt, outDir: path.join(dir, 'merged'), type: 'f32', visionType: 'f32', merge: adapterDir });
  const lora = await convertLora({ adapter: adapterDir, base: f32.model, outDir: path.join(dir, 'lora'), type: 'f32' });
  const embed = async (files: { model: string; mmproj: string }, options: Record<string, string>, adapted: boolean) => {
    const m = await PaliGemma.load({ ...files, gpu: 'cpu', imageCacheMB: 0, ...options });
    try {
      const adapters = adapted ? [await m.loadAdapter(lora.adapter, { visionPath: lora.visionAdapter! })] : [];
      return (await m.encodeImage(png, { adapters })).data;
    } finally {
      await m.dispose();
    }
  };
  const exact = await embed(merged, { visionAttention: 'separate' }, false);
  const base = await embed(f32, { visionAttention: 'separate' }, false);
  const change = relError(base, exact);
  t.ok(change > 5e-2, `the adapter changes the embedding (rel. ${change.toExponential(2)})`);
  const avx2 = features.AVX2 === '1' && features.FMA === '1';
  const attentions = [
    'separate',
    'fused',
    ...(features.AVX512 === '1' ? ['tiled'] : []),
    ...(avx2 ? ['tiled-avx2', 'int16-avx2'] : []),
    ...(vnni ? ['int16'] : []),
  ];
  for (const visionAttention of attentions) {
    const e = relError(await embed(f32, { visionAttention }, true), exact);
    const bound = visionAttention === 'fused' || visionAttention.startsWith('int16') ? 2e-3 : 1e-5; // f16 K and V, 16-bit integers: not f32
    t.ok(e < bound, `f32 weights, ${visionAttention} attention: rel. error ${e.toExponential(2)} from the merged tower`);
  }
  const q8Base = relError(await embed(q8, { visionMatmul: 'ggml', visionAttention: 'separate' }, false), base);
  for (const visionMatmul of ['ggml', ...(vnni ? ['int8'] : []), ...(avxVnni ? ['int8-avxvnni'] : []), ...(avx2 ? ['int8-avx2'] : [])]) {
    const e = relError(await embed(q8, { visionMatmul, visionAttention: 'separate' }, true), exact);
    t.ok(
      e < 2 * q8Base + 1e-4 && e < change / 3,
      `q8_0 weights, ${visionMatmul} products: rel. error ${e.toExponential(2)} from the merged tower (q8_0's own: ${q8Base.toExponential(2)})`,
    );
  }
});

// MLP widths: 272 is 17 panels of 16 (a partial group of the 512-bit tiles, as SigLIP's unpadded 4304 is);
// 200 is no whole number of panels, so fc1 stays ggml's while fc2 (200 inputs) is ours.
for (const ffn of [272, 200]) {
  t.test(`our f16 products agree with the f32 tower, with and without a LoRA adapter, in each form (MLP width ${ffn})`, async (t) => {
    const features = (await systemInfo()).cpuFeatures;
    const avx512 = features.AVX512 === '1';
    const avx2 = features.AVX2 === '1' && features.FMA === '1' && features.F16C === '1';
    const dir = tmpDir();
    const shapes = {
      text: { hidden: 128, ffn: 256, layers: 1, heads: 2, kvHeads: 1, headDim: 64, vocab: 1600 },
      vision: { hidden: 128, ffn, layers: 3, heads: 2 },
    };
    const ckpt = path.join(dir, 'ckpt');
    writeSyntheticCheckpoint(ckpt, 224, () => undefined, shapes);
    const adapterDir = path.join(dir, 'adapter');
    writeSyntheticAdapter(adapterDir, 8, () => undefined, shapes, 2 ** -4);
    const f32 = await convert({ input: ckpt, outDir: path.join(dir, 'f32'), type: 'f32', visionType: 'f32' });
    const f16 = await convert({ input: ckpt, outDir: path.join(dir, 'f16'), type: 'f32', visionType: 'f16' });
    const merged = await convert({ input: ckpt, outDir: path.join(dir, 'merged'), type: 'f32', visionType: 'f32', merge: adapterDir });
    const lora = await convertLora({ adapter: adapterDir, base: f32.model, outDir: path.join(dir, 'lora'), type: 'f32' });
    const embed = async (files: { model: string; mmproj: string }, options: Record<string, string>, adapted: boolean) => {
      const m = await PaliGemma.load({ ...files, gpu: 'cpu', imageCacheMB: 0, visionAttention: 'separate', ...options });
      try {
        const adapters = adapted ? [await m.loadAdapter(lora.adapter, { visionPath: lora.visionAdapter! })] : [];
        return { data: (await m.encodeImage(png, { adapters })).data, info: m.info };
      } finally {
        await m.dispose();
      }
    };
    const exact = (await embed(f32, {}, false)).data;
    const exactAdapted = (await embed(merged, {}, false)).data;
    const ggml = await embed(f16, { visionMatmul: 'ggml' }, false);
    t.equal(ggml.info.visionMatmul, 'ggml');
    const ggmlErr = relError(ggml.data, exact);
    t.ok(ggmlErr > 0 && ggmlErr < 1e-2, `ggml's f16 tower: rel. error ${ggmlErr.toExponential(2)} from the f32 tower`);
    const forms: [string, string][] = [];
    if (avx2) forms.push(['int8', avx512 ? 'f16' : 'f16-avx2'], ['int8-avx2', 'f16-avx2']);
    if (avx2 && cpuHasAvxVnni(features)) forms.push(['int8-avxvnni', 'f16-avx2']);
    if (avx2) forms.push(['int16-avx2', 'int16-avx2']);
    for (const [mode, runs] of forms) {
      const ours = await embed(f16, { visionMatmul: mode }, false);
      t.equal(ours.info.visionMatmul, runs, `${mode} runs f16 weights as ${runs}`);
      const e = relError(ours.data, exact);
      // Our f16 forms keep the activations in f32 where ggml rounds them to f16: no further from the
      // f32 tower. The int16 form rounds weights and activations to 14 bits per block: no further than ggml.
      const bound = runs === 'int16-avx2' ? ggmlErr : 1.05 * ggmlErr;
      t.ok(e > 0 && e <= bound, `${runs} products: rel. error ${e.toExponential(2)} (ggml's ${ggmlErr.toExponential(2)})`);
      const adapted = relError((await embed(f16, { visionMatmul: mode }, true)).data, exactAdapted);
      t.ok(adapted < 2 * ggmlErr + 1e-4, `${runs} products with the adapter: rel. error ${adapted.toExponential(2)} from the merged tower`);
    }
    const auto = await embed(f16, {}, false);
    t.ok(['ggml', 'f16', 'f16-avx2', 'int16-avx2'].includes(auto.info.visionMatmul), `auto picked the ${auto.info.visionMatmul} product for f16 weights`);
    t.ok(relError(auto.data, exact) <= 1.05 * ggmlErr, "and its tower is as close as ggml's");
    // As a CPU without AVX-512 the race runs both f16 forms of ours against ggml's.
    if (avx2 && haswellLibrary()) {
      const res = encodeUnderVariant('haswell', f16, { visionAttention: 'separate' });
      t.ok(['ggml', 'f16-avx2', 'int16-avx2'].includes(res.ran), `under PALIGEMMA_CPU_VARIANT=haswell auto picked ${res.ran || 'nothing'} ${res.log}`);
      const e = relError(res.data, exact);
      t.ok(e <= 1.05 * ggmlErr, `and that tower: rel. error ${e.toExponential(2)} (ggml's ${ggmlErr.toExponential(2)})`);
    }
  });
}

for (const type of ['q8_0', 'q4_0'] as const) {
  t.test(`the text model's ${type} products: each of our forms is as close to the reference as ggml's, with and without a LoRA adapter`, async (t) => {
    const features = (await systemInfo()).cpuFeatures;
    const vnni = features.AVX512 === '1' && features.AVX512_VNNI === '1';
    const avx2 = features.AVX2 === '1' && features.FMA === '1';
    const avxVnni = avx2 && cpuHasAvxVnni(features);
    // A base case of the float64 reference, and one of its base + adapter reference.
    const cases = [
      [path.join(FIXTURES, 'tiny-v2', 'reference'), reference('tiny-v2').cases[0]!],
      [
        path.join(FIXTURES, 'tiny-v2-lora', 'reference'),
        JSON.parse(fs.readFileSync(path.join(FIXTURES, 'tiny-v2-lora', 'reference', 'reference.json'), 'utf8')).cases[0],
      ],
    ] as const;
    const files = await convertedFixture('tiny-v2', type);
    const lora = await convertLora({ adapter: path.join(FIXTURES, 'tiny-v2-lora'), base: files.model, outDir: tmpDir('pg-lora-'), type: 'f32' });
    const run = async (textMatmul: string) => {
      const model = await PaliGemma.load({ ...files, gpu: 'cpu', imageCacheMB: 0, textMatmul: textMatmul as 'ggml' });
      try {
        const adapter = await model.loadAdapter(lora.adapter);
        const errors: number[] = [];
        for (const [i, [dir, c]] of cases.entries()) {
          const [steps, vocab] = c.logits_shape as [number, number];
          const refLogits = readF32(path.join(dir, `${c.name}.logits.f32`));
          const r = await model.generate({
            image: path.join(dir, `${c.image}.png`),
            prompt: c.prompt,
            maxTokens: steps,
            logits: true,
            forceTokens: c.greedy_ids,
            ...(i === 1 ? { adapters: [adapter] } : {}),
          });
          let worst = 0;
          for (let s = 0; s < steps; ++s) worst = Math.max(worst, relError(r.logits![s]!, refLogits.subarray(s * vocab, (s + 1) * vocab)));
          errors.push(worst);
        }
        return { info: model.info, base: errors[0]!, adapted: errors[1]! };
      } finally {
        await model.dispose();
      }
    };
    const ggml = await run('ggml');
    t.equal(ggml.info.textMatmul, 'ggml');
    // What each mode runs as: q4_0 weights have our product in the AVX-512 VNNI form only (ggml's otherwise).
    const forms: [string, string][] = [];
    if (type === 'q8_0') {
      if (avx2) forms.push(['int8', vnni ? 'int8' : avxVnni ? 'int8-avxvnni' : 'int8-avx2']);
      if (avxVnni) forms.push(['int8-avxvnni', 'int8-avxvnni']);
      if (avx2) forms.push(['int8-avx2', 'int8-avx2']);
    } else {
      if (avx2) forms.push(['int8', vnni ? 'int8' : 'ggml']);
      if (avx2) forms.push(['int8-avx2', 'ggml']);
    }
    for (const [mode, runs] of forms) {
      const ours = await run(mode);
      t.equal(ours.info.textMatmul, runs, `${mode} runs as ${runs}`);
      // Both quantize the activations to 8 bits per block of 32 (ggml rounds their scales to f16, we
      // keep them f32): each step's logits as close to the reference as ggml's.
      for (const k of ['base', 'adapted'] as const) {
        t.ok(
          ours[k] <= ggml[k] * 1.25 + 1e-3,
          `${runs}, ${k === 'base' ? 'base model' : 'with the adapter (its f32 tensors beside our packed weights)'}: worst step rel. error ${ours[k].toExponential(2)} (ggml's ${ggml[k].toExponential(2)})`,
        );
      }
    }
    if (!avx2) {
      await t.rejects(run('int8'), { code: 'ERR_INVALID_ARGUMENT', message: /textMatmul 'int8'.*AVX2 and FMA/ }, "'int8' is refused without AVX2");
    }
    const auto = await run('auto');
    t.ok(['ggml', 'int8', 'int8-avxvnni'].includes(auto.info.textMatmul), `auto picked the ${auto.info.textMatmul} product (never the AVX2 form)`);
  });
}
