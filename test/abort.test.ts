// Abort in the middle of the vision encoder and of the prefill, on a model made heavy enough for a
// timer to land inside them (896 px: 4096 image tokens).
import path from 'node:path';
import t from 'tap';
import { writeSyntheticCheckpoint } from '../bench/synthetic';
import { AbortError, convert, PaliGemma } from '../lib/index';
import { FIXTURES } from './helpers/fixtures';
import { tmpDir } from './helpers/tmp';

const dir = tmpDir();
const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');

t.test('abort lands inside encoding and prefill, rejects with AbortError, model stays usable', async (t) => {
  const ckpt = path.join(dir, 'ckpt');
  writeSyntheticCheckpoint(ckpt, 896, () => undefined, {
    text: { hidden: 256, ffn: 512, layers: 2, heads: 4, kvHeads: 1, headDim: 64, vocab: 1600 },
    vision: { hidden: 128, ffn: 256, layers: 2, heads: 2 },
  });
  const files = await convert({ input: ckpt, outDir: path.join(dir, 'gguf'), type: 'f32' });
  const model = await PaliGemma.load({ ...files, gpu: 'cpu', imageCacheMB: 0, contextSize: 4096 + 64 });
  t.teardown(() => model.dispose());

  const full = await model.generate({ image: png, prompt: 'caption en', maxTokens: 1 });
  const { encodeMs, prefillMs } = full.timings;
  t.ok(encodeMs > 20 && prefillMs > 20, `encode ${encodeMs.toFixed(0)} ms, prefill ${prefillMs.toFixed(0)} ms: long enough to interrupt`);

  // Inside the encoder: abort a third of the way through.
  const ac1 = new AbortController();
  setTimeout(() => ac1.abort(), encodeMs / 3);
  const t1 = performance.now();
  const e1 = await model.encodeImage(png, { signal: ac1.signal }).catch((e) => e);
  t.ok(e1 instanceof AbortError, 'encodeImage rejects with AbortError');
  t.ok(performance.now() - t1 < encodeMs * 0.9, `stopped early (${(performance.now() - t1).toFixed(0)} of ${encodeMs.toFixed(0)} ms)`);

  // Inside the prefill: the embedding is given, so the call starts with the prefill.
  const embd = await model.encodeImage(png);
  const ac2 = new AbortController();
  setTimeout(() => ac2.abort(), prefillMs / 3);
  const t2 = performance.now();
  const e2 = await model.generate({ image: embd, prompt: 'caption en', maxTokens: 5, signal: ac2.signal }).catch((e) => e);
  t.ok(e2 instanceof AbortError, 'generate rejects with AbortError');
  t.ok(performance.now() - t2 < prefillMs * 0.9, `stopped inside the prefill (${(performance.now() - t2).toFixed(0)} of ${prefillMs.toFixed(0)} ms)`);

  const again = await model.generate({ image: embd, prompt: 'caption en', maxTokens: 1 });
  t.same(again.tokens, full.tokens, 'the next call gives the same answer as before');
});
