// Leaks on the tiny model: the memory held per call is measured as a slope over many calls after
// warm-up, in native memory (the C allocator's own count, exact) and in the JavaScript heap.
import path from 'node:path';
import t from 'tap';
import { PaliGemma } from '../lib/index';
import { getBinding } from '../lib/native/binding';
import { convertedFixture, FIXTURES } from './helpers/fixtures';

const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');
const { binding } = getBinding('cpu');

/** Two collections with a turn of the event loop between: V8 frees some ArrayBuffer memory late. */
async function gc() {
  const collect = (globalThis as { gc?: () => void }).gc;
  if (!collect) throw new Error('run with --expose-gc (.taprc sets it)');
  collect();
  await new Promise((r) => setImmediate(r));
  collect();
}

/** Theil-Sen slope of y over x (the median of pairwise slopes): one odd sample does not move it. */
function slope(xs: number[], ys: number[]): number {
  const all: number[] = [];
  for (let i = 0; i < xs.length; i++) for (let j = i + 1; j < xs.length; j++) all.push((ys[j]! - ys[i]!) / (xs[j]! - xs[i]!));
  all.sort((a, b) => a - b);
  return all[all.length >> 1]!;
}

/** Runs `call` `n` times after `warm` warm-up calls; returns bytes per call kept in native memory and in the JS heap. */
async function growthPerCall(call: (i: number) => Promise<unknown>, warm: number, n: number, every: number) {
  for (let i = 0; i < warm; i++) await call(i);
  const at: number[] = [];
  const native: number[] = [];
  const js: number[] = [];
  for (let i = 0; i <= n; i++) {
    if (i % every === 0) {
      await gc();
      at.push(i);
      native.push(binding.nativeHeapBytes());
      js.push(process.memoryUsage().heapUsed);
    }
    if (i < n) await call(warm + i);
  }
  return { native: slope(at, native), js: slope(at, js), nativeKnown: native[0]! >= 0 };
}

t.test('generations keep no memory: under 1 KiB per call, native and JS', async (t) => {
  const model = await PaliGemma.load({ ...(await convertedFixture('tiny-v2')), gpu: 'cpu', threads: 1, imageCacheMB: 0 });
  t.teardown(() => model.dispose());
  const prompts = ['caption en', 'detect cat ; dog', 'ocr', 'answer en what is this?'];
  const { native, js, nativeKnown } = await growthPerCall(
    (i) => model.generate({ image: png, prompt: prompts[i % 4]!, maxTokens: 8, logits: i % 5 === 0, onText: i % 3 === 0 ? () => undefined : undefined }),
    100,
    1000,
    50,
  );
  if (nativeKnown) t.ok(native < 1024, `native memory: ${native.toFixed(0)} bytes per generation`);
  else t.comment('this C library does not report its heap: native growth not measured');
  t.ok(js < 1024, `JavaScript heap: ${js.toFixed(0)} bytes per generation`);
});

t.test('images of varied sizes and kinds, a cached embedding among them, keep no memory', async (t) => {
  const model = await PaliGemma.load({ ...(await convertedFixture('tiny-v2')), gpu: 'cpu', threads: 1 });
  t.teardown(() => model.dispose());
  const cached = await model.encodeImage(png);
  // Sizes cycle through a fixed list, so the slope compares like with like.
  const sizes = [
    [8, 8],
    [640, 480],
    [33, 1021],
    [1536, 1024],
    [224, 224],
    [97, 5],
  ] as const;
  const raw = sizes.map(([w, h], k) => ({ data: new Uint8Array(w * h * 3).fill(40 * k), width: w, height: h, channels: 3 as const }));
  const { native, js, nativeKnown } = await growthPerCall(
    (i) => model.generate({ image: i % 7 === 6 ? cached : raw[i % raw.length]!, prompt: 'caption en', maxTokens: 1 + (i % 5) }),
    42,
    420,
    42,
  );
  if (nativeKnown) t.ok(native < 1024, `native memory: ${native.toFixed(0)} bytes per generation`);
  t.ok(js < 4096, `JavaScript heap: ${js.toFixed(0)} bytes per generation`);
});

t.test('load/dispose cycles keep no memory: under 16 KiB per cycle', async (t) => {
  const files = await convertedFixture('tiny-v2');
  const { native, js, nativeKnown } = await growthPerCall(
    async () => {
      const m = await PaliGemma.load({ ...files, gpu: 'cpu', threads: 1 });
      await m.generate({ image: png, prompt: 'caption en', maxTokens: 2 });
      await m.dispose();
    },
    10,
    120,
    10,
  );
  if (nativeKnown) t.ok(native < 16384, `native memory: ${native.toFixed(0)} bytes per cycle`);
  t.ok(js < 16384, `JavaScript heap: ${js.toFixed(0)} bytes per cycle`);
});
