// LoRA adapters against the independent float64 reference of base + adapter (test/fixtures/*-lora).
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { loraScale } from '../lib/convert/lora';
import { readGGUF } from '../lib/gguf/read';
import { convert, convertLora, PaliGemma } from '../lib/index';
import { greedyVerdict } from '../lib/util/reference';
import { runCli } from './helpers/cli';
import { convertedFixture, FIXTURES, type Reference, readF32, relError } from './helpers/fixtures';
import { tmpDir } from './helpers/tmp';

type LoraReference = Reference & { adapter_scale: number };
const loraRef = (fixture: string): LoraReference => JSON.parse(fs.readFileSync(path.join(FIXTURES, `${fixture}-lora`, 'reference', 'reference.json'), 'utf8'));

for (const fixture of ['tiny-v1', 'tiny-v2'] as const) {
  const ref = loraRef(fixture);
  const refDir = path.join(FIXTURES, `${fixture}-lora`, 'reference');

  t.test(`${fixture}-lora: embeddings and every step's logits as the reference's base + adapter`, async (t) => {
    const files = await convertedFixture(fixture);
    const out = await convertLora({ adapter: path.join(FIXTURES, `${fixture}-lora`), base: files.model, outDir: tmpDir('pg-lora-'), type: 'f32' });
    t.ok(fs.existsSync(out.adapter), 'text adapter written');
    const model = await PaliGemma.load({ ...files, gpu: 'cpu', imageCacheMB: 0 });
    t.teardown(() => model.dispose());
    const adapter = await model.loadAdapter(out.adapter);
    t.equal(adapter.info.hasVision, fixture === 'tiny-v2', 'vision part as the adapter has one');
    for (const image of Object.keys(ref.images)) {
      const png = path.join(refDir, `${image}.png`);
      const embd = await model.encodeImage(png, { adapters: [adapter] });
      const err = relError(embd.data, readF32(path.join(refDir, `${image}.embd.f32`)));
      t.ok(err <= 2e-3, `${image}: embedding rel. error ${err.toExponential(2)} <= 2e-3`);
    }
    let worst = 0;
    for (const c of ref.cases) {
      const [steps, vocab] = c.logits_shape;
      const refLogits = readF32(path.join(refDir, `${c.name}.logits.f32`));
      t.equal(refLogits.length, steps * vocab, `${c.name}: reference logits ${steps} x ${vocab}`);
      const image = path.join(refDir, `${c.image}.png`);
      const forced = await model.generate({ image, prompt: c.prompt, maxTokens: steps, logits: true, forceTokens: c.greedy_ids, adapters: [adapter] });
      for (let s = 0; s < steps; s++) {
        const err = relError(forced.logits![s]!, refLogits.subarray(s * vocab, (s + 1) * vocab));
        worst = Math.max(worst, err);
        if (err > 5e-3) t.fail(`${c.name} step ${s}: logits rel. error ${err.toExponential(2)} > 5e-3`);
      }
      const free = await model.generate({ image, prompt: c.prompt, maxTokens: steps, adapters: [{ adapter, scale: 1 }] });
      const verdict = greedyVerdict(free.tokens, c.greedy_ids.slice(0, steps), refLogits, vocab);
      t.ok(verdict.ok, `${c.name}: ${verdict.detail}`);
    }
    t.ok(worst <= 5e-3, `worst logits rel. error ${worst.toExponential(2)} <= 5e-3`);
  });
}

t.test('tiny-v2-lora: scale 0 is the base exactly, scales add up, alternating calls do not leak into each other', async (t) => {
  const ref = loraRef('tiny-v2');
  const c = ref.cases[0]!;
  const image = path.join(FIXTURES, 'tiny-v2-lora', 'reference', `${c.image}.png`);
  const files = await convertedFixture('tiny-v2');
  const out = await convertLora({ adapter: path.join(FIXTURES, 'tiny-v2-lora'), base: files.model, outDir: tmpDir('pg-lora-'), type: 'f32' });
  const model = await PaliGemma.load({ ...files, gpu: 'cpu' }); // image cache on: its key must include the adapters
  t.teardown(() => model.dispose());
  const a = await model.loadAdapter(out.adapter);
  const b = await model.loadAdapter(out.adapter);
  const run = async (adapters?: Parameters<typeof model.generate>[0]['adapters']) => {
    const r = await model.generate({ image, prompt: c.prompt, maxTokens: 3, logits: true, forceTokens: c.greedy_ids, ...(adapters ? { adapters } : {}) });
    return r.logits!.map((l) => Float32Array.from(l));
  };
  const worst = (x: Float32Array[], y: Float32Array[]) => Math.max(...x.map((l, i) => relError(l, y[i]!)));
  const base = await run();
  const adapted = await run([a]);
  const baseRef = readF32(path.join(FIXTURES, 'tiny-v2', 'reference', `${c.name}.logits.f32`)).subarray(0, c.logits_shape[1]);
  t.ok(relError(base[0]!, baseRef) <= 5e-3, 'without adapters: the base reference');
  const change = worst(base, adapted);
  t.ok(change > 5e-2, `the adapter changes the logits (rel. difference ${change.toExponential(2)} > 5e-2)`);
  t.same(await run([{ adapter: a, scale: 0 }]), base, 'scale 0: the base, bit for bit');
  const halves = worst(
    await run([
      { adapter: a, scale: 0.5 },
      { adapter: b, scale: 0.5 },
    ]),
    adapted,
  );
  t.ok(halves <= 1e-3, `two loads at 0.5 each = one at 1, to rounding (f16 KV cache; rel. difference ${halves.toExponential(2)})`);
  t.same(await run(), base, 'after adapted calls, a call without adapters is the base again');
  t.same(await run([a]), adapted, 'and the adapted call repeats exactly');
  const embBase = await model.encodeImage(image);
  const embAdapted = await model.encodeImage(image, { adapters: [a] });
  t.ok(relError(embAdapted.data, embBase.data) > 1e-2, 'the vision part changes the embedding (cached separately)');
  t.same((await model.encodeImage(image)).data, embBase.data, 'the cached base embedding is untouched');

  await b.dispose();
  t.ok(b.disposed);
  await t.rejects(run([b]), { code: 'ERR_DISPOSED' }, 'a disposed adapter is refused');
  t.same(await run([a]), adapted, 'freeing one adapter leaves the other');
  await t.rejects(run([a, a]), { code: 'ERR_INVALID_ARGUMENT' }, 'the same adapter twice is refused');
  await t.rejects(run([{ adapter: a, scale: Number.NaN }]), { code: 'ERR_INVALID_ARGUMENT', message: /scale/ });
  await t.rejects(run([{ adapter: a, bias: 1 } as never]), { code: 'ERR_INVALID_ARGUMENT', message: /bias/ });
  await t.rejects(run({} as never), { code: 'ERR_INVALID_ARGUMENT', message: /adapters/ });

  const other = await PaliGemma.load({ ...files, gpu: 'cpu' });
  t.teardown(() => other.dispose());
  await t.rejects(other.generate({ image, prompt: c.prompt, maxTokens: 1, adapters: [a] }), { code: 'ERR_INVALID_ARGUMENT', message: /another model/ });
  await model.dispose();
  t.ok(a.disposed, 'disposing the model disposes its adapters');
  await a.dispose(); // idempotent
});

t.test('loadAdapter refuses what is not an adapter of this model, with the file and the reason', async (t) => {
  const v1 = await convertedFixture('tiny-v1');
  const v2 = await convertedFixture('tiny-v2');
  const dir = tmpDir('pg-lora-');
  const v1Lora = await convertLora({ adapter: path.join(FIXTURES, 'tiny-v1-lora'), base: v1.model, outDir: dir });
  const model = await PaliGemma.load({ ...v2, gpu: 'cpu' });
  t.teardown(() => model.dispose());
  await t.rejects(model.loadAdapter(v1Lora.adapter), {
    code: 'ERR_INVALID_ARGUMENT',
    message: new RegExp(`${path.basename(v1Lora.adapter)}: an adapter for gemma,`),
  });
  await t.rejects(model.loadAdapter(v2.model), { code: 'ERR_INVALID_FILE', message: /not a LoRA adapter/ });
  await t.rejects(model.loadAdapter(path.join(dir, 'missing.gguf')), { code: 'ERR_FILE_NOT_FOUND', message: /missing\.gguf/ });
  const truncated = path.join(dir, 'truncated.gguf');
  const v2Lora = await convertLora({ adapter: path.join(FIXTURES, 'tiny-v2-lora'), base: v2.model, outDir: dir });
  const bytes = fs.readFileSync(v2Lora.adapter);
  fs.writeFileSync(truncated, bytes.subarray(0, bytes.length - 100));
  await t.rejects(model.loadAdapter(truncated), { code: 'ERR_INVALID_FILE', message: /truncated\.gguf/ });
  await t.rejects(model.loadAdapter(v2Lora.adapter, { visionPath: v2.mmproj }), { code: 'ERR_INVALID_FILE', message: new RegExp(path.basename(v2.mmproj)) });
  await t.rejects(model.loadAdapter(v2Lora.adapter, { color: 1 } as never), { code: 'ERR_INVALID_ARGUMENT', message: /color/ });
  const ok = await model.loadAdapter(v2Lora.adapter);
  t.equal(ok.info.visionPath, v2Lora.visionAdapter, 'the vision part is found beside the text part');
  t.same(ok.info.targets, [
    'projector',
    'text.down_proj',
    'text.gate_proj',
    'text.k_proj',
    'text.o_proj',
    'text.q_proj',
    'text.up_proj',
    'text.v_proj',
    'vision.fc1',
    'vision.fc2',
    'vision.k_proj',
    'vision.out_proj',
    'vision.q_proj',
    'vision.v_proj',
  ]);
  t.match(ok.info, { rank: 8, alpha: 16, rslora: true, family: 'paligemma2', hasText: true, hasVision: true });
});

t.test('convertLora refuses broken adapters, naming the file and what is wrong', async (t) => {
  const v1 = await convertedFixture('tiny-v1');
  const v2 = await convertedFixture('tiny-v2');
  const make = (edit: (cfg: Record<string, unknown>) => void, weights?: (buf: Buffer) => Buffer) => {
    const dir = tmpDir('pg-lora-bad-');
    const cfg = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'tiny-v2-lora', 'adapter_config.json'), 'utf8'));
    edit(cfg);
    fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(cfg));
    const w = fs.readFileSync(path.join(FIXTURES, 'tiny-v2-lora', 'adapter_model.safetensors'));
    fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), weights ? weights(w) : w);
    return dir;
  };
  const cases: [string, string, RegExp, string?][] = [
    [
      'DoRA',
      make((c) => {
        c.use_dora = true;
      }),
      /use_dora is true/,
    ],
    [
      'fan_in_fan_out',
      make((c) => {
        c.fan_in_fan_out = true;
      }),
      /fan_in_fan_out/,
    ],
    [
      'prefix tuning',
      make((c) => {
        c.peft_type = 'PREFIX_TUNING';
      }),
      /peft_type is "PREFIX_TUNING"/,
    ],
    [
      'rank 0',
      make((c) => {
        c.r = 0;
      }),
      /r must be a positive integer/,
    ],
    [
      'rank unlike the weights',
      make((c) => {
        c.r = 4;
      }),
      /rank 8 in the weights, 4 in adapter_config\.json/,
    ],
    [
      'trained on PaliGemma 1',
      make((c) => {
        c.base_model_name_or_path = 'google/paligemma-3b-pt-224';
      }),
      /trained on google\/paligemma-3b-pt-224 \(PaliGemma 1\)/,
    ],
    [
      'truncated weights',
      make(
        () => {},
        (b) => b.subarray(0, b.length - 1000),
      ),
      /adapter_model\.safetensors/,
    ],
    [
      'a v2 adapter on the v1 base',
      make(() => {}),
      /module 'model\.language_model\.layers\.0\.self_attn\.k_proj' maps 64 -> 64, but the base tiny-v1's blk\.0\.attn_k\.weight maps 64 -> 32: an adapter for another model/,
      v1.model,
    ],
  ];
  for (const [label, dir, message, base] of cases) {
    await t.rejects(convertLora({ adapter: dir, base: base ?? v2.model, outDir: dir }), { message }, label);
  }
  const nan = make(
    () => {},
    (b) => {
      // The last tensor's last four bytes as an f32/bf16 NaN pattern.
      const out = Buffer.from(b);
      out.fill(0xff, out.length - 4);
      return out;
    },
  );
  await t.rejects(convertLora({ adapter: nan, base: v2.model, outDir: nan }), { code: 'ERR_INVALID_FILE', message: /NaN or infinite/ }, 'NaN weights');
  const empty = tmpDir('pg-lora-empty-');
  await t.rejects(convertLora({ adapter: empty, base: v2.model }), { code: 'ERR_FILE_NOT_FOUND', message: /adapter_config\.json: missing/ });
  fs.writeFileSync(path.join(empty, 'adapter_config.json'), '{ "r": 8,');
  await t.rejects(convertLora({ adapter: empty, base: v2.model }), { code: 'ERR_INVALID_FILE', message: /adapter_config\.json: not valid JSON/ });
  await t.rejects(convertLora({ adapter: path.join(FIXTURES, 'tiny-v2-lora'), base: path.join(empty, 'nope.gguf') }), {
    code: 'ERR_FILE_NOT_FOUND',
    message: /nope\.gguf/,
  });
  await t.rejects(convertLora({ adapter: path.join(FIXTURES, 'tiny-v2-lora'), base: v2.model, type: 'q4_0' as never }), {
    code: 'ERR_INVALID_ARGUMENT',
    message: /options\.type/,
  });
});

t.test('convertLora from the Hugging Face base folder writes the same adapter as from our GGUF', async (t) => {
  const v2 = await convertedFixture('tiny-v2');
  const a = await convertLora({ adapter: path.join(FIXTURES, 'tiny-v2-lora'), base: v2.model, outDir: tmpDir('pg-lora-') });
  const b = await convertLora({ adapter: path.join(FIXTURES, 'tiny-v2-lora'), base: path.join(FIXTURES, 'tiny-v2'), outDir: tmpDir('pg-lora-') });
  t.same(b.targets, a.targets);
  t.ok(fs.readFileSync(b.visionAdapter!).equals(fs.readFileSync(a.visionAdapter!)), 'vision part byte for byte');
  const model = await PaliGemma.load({ ...v2, gpu: 'cpu' });
  t.teardown(() => model.dispose());
  t.equal((await model.loadAdapter(b.adapter)).info.rank, 8);
});

t.test('CLI: convert-lora, then --lora file[:scale] on a task command prints what the API returns; info describes the adapter', async (t) => {
  const files = await convertedFixture('tiny-v2');
  const out = tmpDir('pg-lora-cli-');
  const conv = await runCli(['convert-lora', path.join(FIXTURES, 'tiny-v2-lora'), '--base', files.model, '--out', out, '--name', 'mine', '--json']);
  t.equal(conv.code, 0, conv.err);
  const written = JSON.parse(conv.out);
  t.equal(written.adapter, path.join(out, 'mine-lora-f16.gguf'));
  t.equal(written.visionAdapter, path.join(out, 'mine-mmproj-lora-f16.gguf'));
  const png = path.join(FIXTURES, 'tiny-v2-lora', 'reference', 'shapes_150x200.png');
  const api = await PaliGemma.load({ ...files, gpu: 'cpu' });
  t.teardown(() => api.dispose());
  const adapter = await api.loadAdapter(written.adapter);
  const pair = ['--model', files.model, '--mmproj', files.mmproj, '--gpu', 'cpu', '-n', '6'];
  for (const scale of [1, 0.5]) {
    const cli = await runCli(['caption', png, ...pair, '--lora', scale === 1 ? written.adapter : `${written.adapter}:${scale}`, '--json']);
    t.equal(cli.code, 0, cli.err);
    const expected = await api.caption(png, { maxTokens: 6, adapters: [{ adapter, scale }] });
    t.equal(JSON.parse(cli.out).text, expected, `--lora at scale ${scale}: the API's caption`);
  }
  t.not(await api.caption(png, { maxTokens: 6, adapters: [adapter] }), await api.caption(png, { maxTokens: 6 }), 'and not the base caption');
  const info = await runCli(['info', written.adapter]);
  t.equal(info.code, 0, info.err);
  t.match(info.out, /LoRA adapter.*rank 8, alpha 16 \(rsLoRA\)/);
  const bad = await runCli(['caption', png, ...pair, '--lora', `${written.adapter}:x`]);
  t.equal(bad.code, 2, 'a scale that is not a number is a usage error');
  t.match(bad.err, /--lora/);
  const missing = await runCli(['caption', png, ...pair, '--lora', path.join(out, 'none.gguf')]);
  t.equal(missing.code, 1);
  t.match(missing.err, /--lora .*none\.gguf: no such file/);
  const noBase = await runCli(['convert-lora', path.join(FIXTURES, 'tiny-v2-lora')]);
  t.equal(noBase.code, 2);
  t.match(noBase.err, /--base is required/);
});

t.test('convert --merge folds the adapter in: the merged pair matches the reference of base + adapter', async (t) => {
  for (const fixture of ['tiny-v1', 'tiny-v2'] as const) {
    const ref = loraRef(fixture);
    const refDir = path.join(FIXTURES, `${fixture}-lora`, 'reference');
    const outDir = tmpDir('pg-merge-');
    const cli = await runCli([
      'convert',
      path.join(FIXTURES, fixture),
      '--merge',
      path.join(FIXTURES, `${fixture}-lora`),
      '--type',
      'f32',
      '--out',
      outDir,
      '--json',
    ]);
    t.equal(cli.code, 0, cli.err);
    const files = JSON.parse(cli.out);
    t.equal(path.basename(files.model), `${fixture}-lora-f32.gguf`, 'named after the adapter');
    const model = await PaliGemma.load({ ...files, gpu: 'cpu' });
    t.teardown(() => model.dispose());
    let worstEmbd = 0;
    for (const image of Object.keys(ref.images)) {
      worstEmbd = Math.max(
        worstEmbd,
        relError((await model.encodeImage(path.join(refDir, `${image}.png`))).data, readF32(path.join(refDir, `${image}.embd.f32`))),
      );
    }
    t.ok(worstEmbd <= 2e-3, `${fixture}: merged embeddings rel. error ${worstEmbd.toExponential(2)} <= 2e-3`);
    let worst = 0;
    for (const c of ref.cases) {
      const [steps, vocab] = c.logits_shape;
      const refLogits = readF32(path.join(refDir, `${c.name}.logits.f32`));
      const image = path.join(refDir, `${c.image}.png`);
      const forced = await model.generate({ image, prompt: c.prompt, maxTokens: steps, logits: true, forceTokens: c.greedy_ids });
      for (let s = 0; s < steps; s++) worst = Math.max(worst, relError(forced.logits![s]!, refLogits.subarray(s * vocab, (s + 1) * vocab)));
      const free = await model.generate({ image, prompt: c.prompt, maxTokens: steps });
      const verdict = greedyVerdict(free.tokens, c.greedy_ids.slice(0, steps), refLogits, vocab);
      t.ok(verdict.ok, `${fixture} merged, ${c.name}: ${verdict.detail}`);
    }
    t.ok(worst <= 5e-3, `${fixture}: merged worst logits rel. error ${worst.toExponential(2)} <= 5e-3`);
  }
  // Scale 0 merges nothing: the base's bytes.
  const zero = await convert({
    input: path.join(FIXTURES, 'tiny-v2'),
    merge: path.join(FIXTURES, 'tiny-v2-lora'),
    mergeScale: 0,
    type: 'f32',
    outDir: tmpDir('pg-merge-'),
  });
  const base = await convertedFixture('tiny-v2');
  const tensorsOf = async (f: string) => {
    const g = await readGGUF(f);
    return g.tensors.map((x) => [x.name, x.offset]);
  };
  t.same(await tensorsOf(zero.mmproj), await tensorsOf(base.mmproj), 'scale 0: the same tensors');
  const tail = (f: string, n: number) => fs.readFileSync(f).subarray(-n);
  t.ok(tail(zero.model, 1 << 16).equals(tail(base.model, 1 << 16)), 'scale 0: the same text weights');
  await t.rejects(
    convert({ input: path.join(FIXTURES, 'tiny-v1'), merge: path.join(FIXTURES, 'tiny-v2-lora'), type: 'f32', outDir: tmpDir('pg-merge-') }),
    { code: 'ERR_INVALID_ARGUMENT', message: /an adapter for another model/ },
    'an adapter of another model is refused before anything is written',
  );
});

t.test('loraScale: r and alpha, rsLoRA, and per-module rank_pattern / alpha_pattern as PEFT matches them', async (t) => {
  const cfg = { file: 'adapter_config.json', r: 8, alpha: 16, rslora: false, rankPattern: {}, alphaPattern: {}, baseModel: null };
  const m = 'model.language_model.layers.3.self_attn.q_proj';
  t.same(loraScale(cfg, m), { rank: 8, scale: 2 });
  t.same(loraScale({ ...cfg, rslora: true }, m), { rank: 8, scale: 16 / Math.sqrt(8) });
  const patterned = { ...cfg, rankPattern: { 'layers.3.self_attn.q_proj': 4 }, alphaPattern: { q_proj: 32 } };
  t.same(loraScale(patterned, m), { rank: 4, scale: 8 }, 'both patterns apply');
  t.same(loraScale(patterned, 'model.language_model.layers.13.self_attn.q_proj'), { rank: 8, scale: 4 }, "'layers.3' does not match layer 13");
  t.same(loraScale(patterned, 'model.language_model.layers.3.self_attn.k_proj'), { rank: 8, scale: 2 }, 'neither matches k_proj');
});
