// The PaliGemma API on the tiny model: inputs, options, errors, streaming, concurrency, lifetime.
import fs from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { encodePNG } from '../lib/image/png';
import { AbortError, ImageEmbedding, PaliGemma, PaliGemmaError } from '../lib/index';
import type { NativeGenerateResult } from '../lib/native/contract';
import { convertedFixture, FIXTURES } from './helpers/fixtures';
import { spyNative } from './helpers/spy';
import { tmpDir } from './helpers/tmp';

const refDir = path.join(FIXTURES, 'tiny-v2', 'reference');
const png = path.join(refDir, 'shapes_150x200.png');
const dir = tmpDir();
let model: PaliGemma;

t.before(async () => {
  const files = await convertedFixture('tiny-v2');
  model = await PaliGemma.load({ ...files, gpu: 'cpu', threads: 1 });
});
t.teardown(() => model?.dispose());

async function rejectsWith(t: Test, p: Promise<unknown>, code: string, pattern: RegExp, what: string) {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  t.ok(err instanceof PaliGemmaError, `${what}: rejects with PaliGemmaError`);
  t.equal((err as PaliGemmaError)?.code, code, `${what}: ${code}`);
  t.match((err as Error)?.message ?? '', pattern, `${what}: ${(err as Error)?.message}`);
}

t.test('info describes the pair', async (t) => {
  t.equal(model.info.family, 'paligemma2');
  t.equal(model.info.imageSize, 56);
  t.equal(model.info.imageTokens, 16);
  t.equal(model.info.backend, 'CPU');
  t.equal(model.info.threads, 1);
  t.ok(model.info.contextSize >= 16 + 512);
  t.ok(Object.isFrozen(model.info));
});

t.test('every image input form gives the same pixels', async (t) => {
  const fromPath = await model.preprocess(png);
  t.same(await model.preprocess(fs.readFileSync(png)), fromPath, 'Buffer');
  t.same(await model.preprocess(new Uint8Array(fs.readFileSync(png))), fromPath, 'Uint8Array');
  const ab = fs.readFileSync(png);
  t.same(await model.preprocess(ab.buffer.slice(ab.byteOffset, ab.byteOffset + ab.byteLength)), fromPath, 'ArrayBuffer');

  // Raw pixels: an image we make ourselves, as RGB, RGBA (alpha dropped) and through PNG.
  const w = 37,
    h = 23;
  const rgb = new Uint8Array(w * h * 3).map((_, i) => (i * 7919) % 256);
  const rgba = new Uint8Array(w * h * 4);
  for (let i = 0; i < w * h; i++) rgba.set([rgb[i * 3]!, rgb[i * 3 + 1]!, rgb[i * 3 + 2]!, i % 256], i * 4);
  const viaPng = await model.preprocess(encodePNG(rgb, w, h, 3));
  t.same(await model.preprocess({ data: rgb, width: w, height: h, channels: 3 }), viaPng, 'raw RGB');
  t.same(await model.preprocess({ data: rgba, width: w, height: h, channels: 4 }), viaPng, 'raw RGBA, alpha dropped');
  t.same(await model.preprocess(encodePNG(rgba, w, h, 4)), viaPng, 'RGBA PNG, alpha dropped');
  const gray = new Uint8Array(w * h).map((_, i) => i % 251);
  const grayRgb = new Uint8Array(w * h * 3).map((_, i) => gray[Math.floor(i / 3)]!);
  t.same(
    await model.preprocess({ data: gray, width: w, height: h, channels: 1 }),
    await model.preprocess({ data: grayRgb, width: w, height: h, channels: 3 }),
    'gray',
  );
  t.same(await model.preprocess(encodePNG(gray, w, h, 1)), await model.preprocess({ data: gray, width: w, height: h, channels: 1 }), 'gray PNG');
  t.equal(fromPath.length, 3 * 56 * 56);
});

t.test('an ImageEmbedding skips the vision tower and gives the same answer', async (t) => {
  const a = await model.generate({ image: png, prompt: 'caption en', maxTokens: 6 });
  const embd = await model.encodeImage(png);
  t.ok(embd instanceof ImageEmbedding);
  const b = await model.generate({ image: embd, prompt: 'caption en', maxTokens: 6 });
  t.same(b.tokens, a.tokens);
  t.equal(b.timings.encodeMs, 0, 'no encoding');
  t.ok(a.timings.encodeMs > 0);
  t.equal(a.timings.promptTokens, 16 + 5);
  t.equal(a.timings.generatedTokens, 6);
  const plain = { data: embd.data, tokens: embd.tokens, dim: embd.dim };
  t.same((await model.generate({ image: plain, prompt: 'caption en', maxTokens: 6 })).tokens, a.tokens, 'plain object embedding');
  await rejectsWith(
    t,
    model.generate({ image: new ImageEmbedding(new Float32Array(8 * 64), 8, 64), prompt: 'x' }),
    'ERR_INVALID_ARGUMENT',
    /needs 16 x 64/,
    'wrong embedding shape',
  );
  const nan = new Float32Array(embd.data);
  nan[3] = NaN;
  await rejectsWith(t, model.generate({ image: new ImageEmbedding(nan, 16, 64), prompt: 'x' }), 'ERR_INVALID_ARGUMENT', /NaN/, 'NaN embedding');
});

t.test('streaming: onToken, onText and stream() agree with the result', async (t) => {
  const tokens: number[] = [];
  const chunks: string[] = [];
  const r = await model.generate({ image: png, prompt: 'detect cat', maxTokens: 12, onToken: (x) => tokens.push(x.id), onText: (c) => chunks.push(c) });
  t.same(tokens, r.tokens);
  t.equal(chunks.join(''), r.text, 'onText chunks add up to the text');
  const streamed: string[] = [];
  for await (const c of model.stream({ image: png, prompt: 'detect cat', maxTokens: 12 })) streamed.push(c);
  t.equal(streamed.join(''), r.text);
  // Breaking out of the loop aborts the generation (the native side stops within a step or two of
  // the break) and leaves the model usable.
  const spy = spyNative(model);
  const force = Array.from({ length: 200 }, (_, i) => 300 + i);
  let seen = 0;
  try {
    for await (const c of model.stream({ image: png, prompt: 'detect cat', maxTokens: 200, forceTokens: force })) {
      t.type(c, 'string');
      seen++;
      break;
    }
  } finally {
    spy.restore();
  }
  const native = spy.calls.find((c) => c.name === 'generate')!.result as NativeGenerateResult;
  t.equal(seen, 1, 'one chunk seen');
  t.equal(native.stopReason, 'abort', 'the native generation was aborted');
  t.ok(
    native.tokens.length < 200 && native.abort!.latencyMs < 100,
    `stopped ${native.abort!.latencyMs.toFixed(1)} ms after the break, at token ${native.tokens.length} of 200`,
  );
  t.same((await model.generate({ image: png, prompt: 'detect cat', maxTokens: 12 })).tokens, r.tokens);
});

t.test('onText never splits a UTF-8 character', async (t) => {
  // The tiny vocabulary spells 🙂 (F0 9F 99 82) with four byte tokens: force them one by one.
  const bytes = Array.from(await model.tokenize('🙂'));
  t.equal(bytes.length, 4, 'four byte tokens');
  const chunks: string[] = [];
  const r = await model.generate({ image: png, prompt: 'x', maxTokens: 4, forceTokens: bytes, onText: (c) => chunks.push(c) });
  t.equal(r.text, '🙂');
  t.same(chunks, ['🙂'], 'one chunk, whole character');
});

t.test('stop strings, grammar, logits flag, sampling', async (t) => {
  const free = await model.generate({ image: png, prompt: 'caption en', maxTokens: 12 });
  t.equal(free.stopReason, 'maxTokens');
  t.notOk('logits' in free, 'no logits unless asked');
  // On the gradient image the tiny model starts with '<loc0633><loc0800>'.
  const gradient = path.join(refDir, 'gradient_131x97.png');
  const before = await model.generate({ image: gradient, prompt: 'caption en', maxTokens: 12 });
  t.match(before.text, /^<loc0633><loc0800>/);
  const stopped = await model.generate({ image: gradient, prompt: 'caption en', maxTokens: 12, stop: ['<loc0800>'] });
  t.equal(stopped.stopReason, 'stop');
  t.equal(stopped.text, '<loc0633>', 'the stop string is not part of the text');
  const chunks: string[] = [];
  await model.generate({ image: gradient, prompt: 'caption en', maxTokens: 12, stop: ['<loc0800>'], onText: (c) => chunks.push(c) });
  t.equal(chunks.join(''), '<loc0633>', 'onText never shows the stop string');

  const g = await model.generate({ image: png, prompt: 'caption en', maxTokens: 10, grammar: 'root ::= "ab" "c"' });
  t.equal(g.text, 'abc', 'output follows the grammar');
  t.equal(g.stopReason, 'eos', 'the grammar ends the output');
  await rejectsWith(t, model.generate({ image: png, prompt: 'x', grammar: 'root ::= (' }), 'ERR_INVALID_ARGUMENT', /grammar/, 'bad grammar');

  const s1 = await model.generate({
    image: png,
    prompt: 'caption en',
    maxTokens: 8,
    temperature: 1.5,
    seed: 42,
    topK: 50,
    topP: 0.95,
    minP: 0.01,
    repeatPenalty: 1.1,
  });
  const s2 = await model.generate({
    image: png,
    prompt: 'caption en',
    maxTokens: 8,
    temperature: 1.5,
    seed: 42,
    topK: 50,
    topP: 0.95,
    minP: 0.01,
    repeatPenalty: 1.1,
  });
  t.same(s1.tokens, s2.tokens, 'a seed makes sampling repeatable');
  const zero = await model.generate({ image: png, prompt: 'caption en', maxTokens: 0 });
  t.same(zero.tokens, []);
});

t.test('prompts are plain text unless specialTokens is set', async (t) => {
  t.same(
    Array.from(await model.tokenize('<bos>')),
    Array.from(await model.tokenize('<bos>')).filter((x) => x !== 2),
    'no control token',
  );
  const typed = Array.from(await model.tokenize('<eos><image>'));
  t.notOk(typed.includes(model.info.eosId), 'a typed <eos> is not the control token');
  t.equal(model.info.imageTokenId, 1572);
  t.notOk(typed.includes(1572), 'a typed <image> is not the image token (1572)');
  t.same(Array.from(await model.tokenize('<image>', { special: true })), [1572], 'with special: true it is');
  t.same(Array.from(await model.tokenize('<bos>', { special: true })), [2]);
  const loc = Array.from(await model.tokenize('<loc0001>'));
  t.equal(loc.length, 1, '<loc0001> is one token, as in SentencePiece');
  t.equal(await model.detokenize(loc), '<loc0001>');
  const r = await model.generate({ image: png, prompt: 'caption <eos> en', maxTokens: 4 });
  t.equal(r.timings.generatedTokens, 4, 'a typed <eos> does not end the prompt');
  t.equal(await model.detokenize(Array.from(await model.tokenize('<loc0001><seg010> x'))), '<loc0001><seg010> x', 'detokenize keeps <loc>/<seg>');
});

t.test('16 concurrent calls give the same results as sequential ones, in call order', async (t) => {
  const prompts = Array.from({ length: 16 }, (_, i) => ['caption en', 'detect cat ; dog', 'ocr', 'answer en what?'][i % 4]!);
  const sequential = [];
  for (const prompt of prompts) sequential.push((await model.generate({ image: png, prompt, maxTokens: 8 })).tokens);
  const started: number[] = [];
  // Different input forms resolve at different speeds; the calls must still run in call order.
  const inputs = prompts.map((_, i) => [png, fs.readFileSync(png), png, new Uint8Array(fs.readFileSync(png))][i % 4]!);
  const concurrent = await Promise.all(
    prompts.map((prompt, i) => model.generate({ image: inputs[i]!, prompt, maxTokens: 8, onToken: () => void (started.includes(i) || started.push(i)) })),
  );
  t.same(
    concurrent.map((r) => r.tokens),
    sequential,
  );
  t.same(
    started,
    prompts.map((_, i) => i),
    'calls run in the order they were made',
  );
});

t.test('abort rejects with AbortError and the model stays usable', async (t) => {
  const ac = new AbortController();
  const err = await model.generate({ image: png, prompt: 'caption en', maxTokens: 500, signal: ac.signal, onToken: () => ac.abort() }).catch((e) => e);
  t.ok(err instanceof AbortError);
  t.equal(err.code, 'ERR_ABORTED');
  const pre = new AbortController();
  pre.abort();
  t.rejects(model.generate({ image: png, prompt: 'x', signal: pre.signal }), AbortError, 'already aborted');
  t.rejects(model.encodeImage(png, { signal: pre.signal }), AbortError);
  const r = await model.generate({ image: png, prompt: 'caption en', maxTokens: 3 });
  t.equal(r.tokens.length, 3);
});

t.test('a throwing callback stops the generation and rejects with its error', async (t) => {
  const boom = new Error('boom');
  let calls = 0;
  const err = await model
    .generate({
      image: png,
      prompt: 'caption en',
      maxTokens: 100,
      onToken: () => {
        calls++;
        throw boom;
      },
    })
    .catch((e) => e);
  t.equal(err, boom);
  t.equal(calls, 1, 'no more callbacks after the throw');
  const err2 = await model
    .generate({
      image: png,
      prompt: 'caption en',
      maxTokens: 100,
      onText: () => {
        throw boom;
      },
    })
    .catch((e) => e);
  t.equal(err2, boom);
  t.equal((await model.generate({ image: png, prompt: 'caption en', maxTokens: 2 })).tokens.length, 2);
});

t.test('bad input rejects with clear errors; the model stays usable', async (t) => {
  await rejectsWith(t, model.generate({ image: path.join(dir, 'nope.png'), prompt: 'x' }), 'ERR_FILE_NOT_FOUND', /nope\.png: no such file/, 'missing image');
  const junk = path.join(dir, 'junk.png');
  fs.writeFileSync(junk, 'not an image');
  await rejectsWith(t, model.generate({ image: junk, prompt: 'x' }), 'ERR_INVALID_IMAGE', /cannot decode image/, 'undecodable image');
  const truncated = fs.readFileSync(png).subarray(0, 100);
  await rejectsWith(t, model.preprocess(truncated), 'ERR_INVALID_IMAGE', /decode/, 'truncated PNG');
  await rejectsWith(t, model.preprocess(new Uint8Array(0)), 'ERR_INVALID_IMAGE', /empty/, 'empty buffer');
  await rejectsWith(t, model.preprocess({ data: new Uint8Array(10), width: 4, height: 4, channels: 3 }), 'ERR_INVALID_ARGUMENT', /48 bytes/, 'raw length');
  // @ts-expect-error: invalid on purpose
  await rejectsWith(t, model.preprocess({ data: new Uint8Array(32), width: 4, height: 4, channels: 2 }), 'ERR_INVALID_ARGUMENT', /channels/, 'raw channels');
  await rejectsWith(
    t,
    model.preprocess({ data: new Uint8Array(3), width: 100000, height: 100000, channels: 3 }),
    'ERR_INVALID_IMAGE',
    /megapixels/,
    'huge raw',
  );
  // A PNG header claiming 12000 x 9000 pixels: over our 100-megapixel limit, under the decoder's own
  // limits, so it is our check, made from the header before any pixel is decoded, that refuses it.
  const huge = encodePNG(new Uint8Array(3), 1, 1, 3);
  huge.writeUInt32BE(12000, 16);
  huge.writeUInt32BE(9000, 20);
  await rejectsWith(t, model.preprocess(huge), 'ERR_INVALID_IMAGE', /is 12000x9000, over the limit of 100 megapixels/, 'PNG of 108 megapixels');
  const file = path.join(dir, 'huge.png');
  fs.writeFileSync(file, huge);
  await rejectsWith(t, model.generate({ image: file, prompt: 'x' }), 'ERR_INVALID_IMAGE', /huge\.png is 12000x9000/, 'the file is named');
  // @ts-expect-error: invalid on purpose
  await rejectsWith(t, model.generate({ image: 42, prompt: 'x' }), 'ERR_INVALID_ARGUMENT', /image/, 'image type');
  await rejectsWith(
    t,
    model.generate({ image: png, prompt: 'word '.repeat(2000) }),
    'ERR_CONTEXT_FULL',
    /more than the context/,
    'prompt longer than the context',
  );
  await rejectsWith(t, model.generate({ image: png, prompt: 'x', maxTokens: -1 }), 'ERR_INVALID_ARGUMENT', /maxTokens/, 'negative maxTokens');
  await rejectsWith(t, model.generate({ image: png, prompt: 'x', maxTokens: 1.5 }), 'ERR_INVALID_ARGUMENT', /maxTokens/, 'fractional maxTokens');
  await rejectsWith(t, model.generate({ image: png, prompt: 'x', temperature: NaN }), 'ERR_INVALID_ARGUMENT', /temperature/, 'NaN temperature');
  // @ts-expect-error: invalid on purpose
  await rejectsWith(t, model.generate({ image: png, prompt: 'x', temprature: 1 }), 'ERR_INVALID_ARGUMENT', /temprature/, 'misspelt option');
  // @ts-expect-error: invalid on purpose
  await rejectsWith(t, model.generate({ image: png }), 'ERR_INVALID_ARGUMENT', /prompt/, 'missing prompt');
  await rejectsWith(t, model.detokenize([1, 99999]), 'ERR_INVALID_ARGUMENT', /detokenize/, 'token out of range');
  t.equal((await model.generate({ image: png, prompt: 'caption en', maxTokens: 2 })).tokens.length, 2, 'still usable');
});

t.test('load: bad files and options', async (t) => {
  const v1 = await convertedFixture('tiny-v1');
  const v2 = await convertedFixture('tiny-v2');
  await rejectsWith(t, PaliGemma.load({ model: v2.mmproj, mmproj: v2.model, gpu: 'cpu' }), 'ERR_INVALID_FILE', /swapped/, 'swapped files');
  await rejectsWith(t, PaliGemma.load({ model: v1.model, mmproj: v2.mmproj, gpu: 'cpu' }), 'ERR_INVALID_FILE', /do not belong together/, 'mismatched pair');
  await rejectsWith(t, PaliGemma.load({ model: path.join(dir, 'none.gguf'), mmproj: v2.mmproj }), 'ERR_FILE_NOT_FOUND', /none\.gguf/, 'missing model');
  const empty = path.join(dir, 'empty.gguf');
  fs.writeFileSync(empty, '');
  await rejectsWith(t, PaliGemma.load({ model: v2.model, mmproj: empty, gpu: 'cpu' }), 'ERR_INVALID_FILE', /empty\.gguf: file is empty/, 'empty mmproj');
  const cut = path.join(dir, 'cut.gguf');
  fs.writeFileSync(cut, fs.readFileSync(v2.model).subarray(0, 200_000));
  await rejectsWith(t, PaliGemma.load({ model: cut, mmproj: v2.mmproj, gpu: 'cpu' }), 'ERR_INVALID_FILE', /cut\.gguf/, 'truncated model');
  // @ts-expect-error: invalid on purpose
  await rejectsWith(t, PaliGemma.load({ ...v2, gpu: 'tpu' }), 'ERR_INVALID_ARGUMENT', /options\.gpu/, 'unknown gpu');
  await rejectsWith(t, PaliGemma.load({ ...v2, threads: 0 }), 'ERR_INVALID_ARGUMENT', /options\.threads/, 'threads 0');
  await rejectsWith(t, PaliGemma.load({ ...v2, threads: 1.5 }), 'ERR_INVALID_ARGUMENT', /options\.threads/, 'fractional threads');
  await rejectsWith(t, PaliGemma.load({ ...v2, gpu: 'cuda' }), 'ERR_BACKEND', /no cuda device/, 'cuda on a CPU build');
  await rejectsWith(t, PaliGemma.load({ ...v2, gpu: 'cpu', contextSize: 16 }), 'ERR_INVALID_ARGUMENT', /contextSize/, 'context too small for the image');
  const progress: number[] = [];
  const m = await PaliGemma.load({ ...v2, gpu: 'cpu', onProgress: (f) => progress.push(f) });
  t.ok(progress.length > 2 && progress.at(-1) === 1, 'progress reaches 1');
  t.ok(
    progress.every((f, i) => i === 0 || f >= progress[i - 1]!),
    'progress never goes back',
  );
  await m.dispose();
  const ac = new AbortController();
  const aborted = PaliGemma.load({ ...v2, gpu: 'cpu', signal: ac.signal, onProgress: (f) => f > 0.05 && ac.abort() });
  t.rejects(aborted, AbortError, 'abort during load');
});

t.test('dispose: waits for running work, then every call rejects', async (t) => {
  const m = await PaliGemma.load({ ...(await convertedFixture('tiny-v2')), gpu: 'cpu' });
  let started!: () => void;
  const firstToken = new Promise<void>((r) => (started = r));
  const running = m.generate({ image: png, prompt: 'caption en', maxTokens: 300, onToken: () => started() }).catch((e) => e);
  const queued = m.generate({ image: png, prompt: 'caption en', maxTokens: 3 }).catch((e) => e);
  await firstToken;
  await m.dispose();
  t.equal((await running).code, 'ERR_DISPOSED', 'the running generation stops and rejects: the model was disposed');
  t.equal((await queued).code, 'ERR_DISPOSED', 'queued generation rejects');
  await t.rejects(m.generate({ image: png, prompt: 'x' }), { code: 'ERR_DISPOSED' });
  await t.rejects(m.tokenize('x'), { code: 'ERR_DISPOSED' });
  await m.dispose();
  await m[Symbol.asyncDispose]();
  t.pass('dispose is idempotent');
});

/** Runs `work` while a 1 ms timer ticks; returns how long it took, how often the loop turned, and its longest stall. */
async function loopDuring(work: () => Promise<unknown>) {
  let ticks = 0;
  let maxGap = 0;
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    ticks++;
  }, 1);
  const t0 = performance.now();
  await work();
  const ms = performance.now() - t0;
  clearInterval(timer);
  maxGap = Math.max(maxGap, performance.now() - last);
  return { ms, ticks, maxGap };
}

t.test('a long generation leaves the event loop free the whole time', async (t) => {
  // 1500 forced tokens: about a second of native work even on this tiny model. A synchronous
  // native call, or a stall of 60 ms or more on the JS thread, would show as a gap.
  const files = await convertedFixture('tiny-v2');
  const long = await PaliGemma.load({ ...files, gpu: 'cpu', threads: 1, contextSize: 2048 });
  t.teardown(() => long.dispose());
  const force = Array.from({ length: 1500 }, (_, i) => 300 + (i % 900));
  let generated = 0;
  const { ms, ticks, maxGap } = await loopDuring(async () => {
    generated = (await long.generate({ image: png, prompt: 'caption en', maxTokens: force.length, forceTokens: force })).tokens.length;
  });
  t.equal(generated, force.length, 'the whole generation ran');
  t.ok(ms > 300, `native work took ${ms.toFixed(0)} ms: long enough to matter`);
  t.ok(maxGap < 60, `longest event-loop stall ${maxGap.toFixed(1)} ms (< 60)`);
  t.ok(ticks > ms / 10, `the loop turned ${ticks} times in ${ms.toFixed(0)} ms (> one per 10 ms)`);
});

t.test('a second question about the same image skips the vision tower; the cache is bounded', async (t) => {
  const files = await convertedFixture('tiny-v2');
  const cached = await PaliGemma.load({ ...files, gpu: 'cpu' });
  const first = await cached.generate({ image: png, prompt: 'caption en', maxTokens: 4 });
  const second = await cached.generate({ image: fs.readFileSync(png), prompt: 'ocr', maxTokens: 4 });
  const again = await cached.generate({ image: png, prompt: 'caption en', maxTokens: 4 });
  t.ok(first.timings.encodeMs > 0, 'first question encodes');
  t.equal(second.timings.encodeMs, 0, 'same bytes, other prompt: no encoding');
  t.same(again.tokens, first.tokens, 'same answer from the cached embedding');
  t.same([first.timings.imageCached, second.timings.imageCached, again.timings.imageCached], [false, true, true], 'imageCached says so');

  // The cache lives in the native model: a cached image is ONE native generate call, and the
  // embedding never crosses into JavaScript (no encodeImage call, no embedding in the arguments).
  const spy = spyNative(cached);
  try {
    await cached.generate({ image: png, prompt: 'answer en what is it?', maxTokens: 2 });
  } finally {
    spy.restore();
  }
  const calls = spy.calls.map((c) => ({ name: c.name, image: (c.args[0] as { image?: unknown }).image }));
  t.same(
    calls.map((c) => c.name),
    ['generate'],
    'one native call',
  );
  const sent = calls[0]!.image as Record<string, unknown>;
  t.notOk('embedding' in sent, 'no embedding is sent');
  t.match(sent.cacheKey, /^enc:[0-9a-f]{64}$/, 'the image goes with its SHA-256 key');
  await cached.dispose();

  const off = await PaliGemma.load({ ...files, gpu: 'cpu', imageCacheMB: 0 });
  await off.generate({ image: png, prompt: 'caption en', maxTokens: 1 });
  t.ok((await off.generate({ image: png, prompt: 'caption en', maxTokens: 1 })).timings.encodeMs > 0, 'cache off: encodes every time');
  await off.dispose();

  // One 16 x 64 float embedding is 4 KiB: a 6 KiB cache holds one image at a time.
  const tiny = await PaliGemma.load({ ...files, gpu: 'cpu', imageCacheMB: 6 / 1024 });
  const other = path.join(refDir, 'noise_40x40.png');
  await tiny.generate({ image: png, prompt: 'x', maxTokens: 1 });
  await tiny.generate({ image: other, prompt: 'x', maxTokens: 1 });
  t.ok((await tiny.generate({ image: png, prompt: 'x', maxTokens: 1 })).timings.encodeMs > 0, 'evicted when over the bound');
  t.equal((await tiny.generate({ image: png, prompt: 'x', maxTokens: 1 })).timings.encodeMs, 0, 'most recent stays');
  await tiny.dispose();
});
