// The addon in worker_threads: two workers load and generate at once; a worker that exits while
// generating does not take the process down.
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { PaliGemma } from '../lib/index';
import { convertedFixture, FIXTURES } from './helpers/fixtures';

const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');
const entry = path.join(__dirname, '..', 'dist', 'index.js');

function runWorker(code: string, data: unknown): Promise<{ result: unknown; exitCode: number }> {
  return new Promise((resolve, reject) => {
    let result: unknown;
    const w = new Worker(code, { eval: true, workerData: data });
    w.on('message', (m) => (result = m));
    w.on('error', reject);
    w.on('exit', (exitCode) => resolve({ result, exitCode }));
  });
}

const generateInWorker = `
  const { parentPort, workerData } = require('node:worker_threads');
  const { PaliGemma } = require(workerData.entry);
  (async () => {
    const m = await PaliGemma.load({ model: workerData.model, mmproj: workerData.mmproj, gpu: 'cpu', threads: 1 });
    const r = await m.generate({ image: workerData.png, prompt: 'caption en', maxTokens: 6 });
    await m.dispose();
    parentPort.postMessage(r.tokens);
  })();
`;

t.test('two workers load and generate at once, with the same result as the main thread', async (t) => {
  const files = await convertedFixture('tiny-v2');
  const main = await PaliGemma.load({ ...files, gpu: 'cpu', threads: 1 });
  const expected = (await main.generate({ image: png, prompt: 'caption en', maxTokens: 6 })).tokens;
  await main.dispose();
  const data = { ...files, png, entry };
  const [a, b] = await Promise.all([runWorker(generateInWorker, data), runWorker(generateInWorker, data)]);
  t.same(a.result, expected);
  t.same(b.result, expected);
  t.equal(a.exitCode, 0);
});

t.test('a worker exiting mid-generation leaves the process alive', async (t) => {
  const files = await convertedFixture('tiny-v2');
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const { PaliGemma } = require(workerData.entry);
    (async () => {
      const m = await PaliGemma.load({ model: workerData.model, mmproj: workerData.mmproj, gpu: 'cpu', threads: 1 });
      m.generate({ image: workerData.png, prompt: 'caption en', maxTokens: 500, onToken: () => process.exit(3) });
    })();
  `;
  const { exitCode } = await runWorker(code, { ...files, png, entry });
  t.equal(exitCode, 3, 'the worker exited mid-generation');
  const again = await PaliGemma.load({ ...files, gpu: 'cpu' });
  t.equal((await again.generate({ image: png, prompt: 'caption en', maxTokens: 2 })).tokens.length, 2, 'the main thread still works');
  await again.dispose();
});

t.test('three models with eight concurrent calls each, and a worker with its own model: sequential results, dispose in any order', async (t) => {
  const pairs = [await convertedFixture('tiny-v1'), await convertedFixture('tiny-v2'), await convertedFixture('tiny-v2', 'q8_0')];
  const images = ['shapes_150x200', 'gradient_131x97'].map((n) => path.join(FIXTURES, 'tiny-v2', 'reference', `${n}.png`));
  const prompts = ['caption en', 'ocr', 'answer en what is it?', 'detect cat', 'describe en', 'segment dog', 'caption de', 'answer en why?'];
  const calls = (m: PaliGemma) => prompts.map((prompt, i) => m.generate({ image: images[i % 2]!, prompt, maxTokens: 5 }).then((r) => r.tokens));
  // Sequential, one model at a time.
  const expected: number[][][] = [];
  let workerExpected: number[] = [];
  for (const files of pairs) {
    const m = await PaliGemma.load({ ...files, gpu: 'cpu', threads: 1 });
    const one: number[][] = [];
    for (const prompt of prompts) one.push((await m.generate({ image: images[one.length % 2]!, prompt, maxTokens: 5 })).tokens);
    expected.push(one);
    if (files === pairs[1]) workerExpected = (await m.generate({ image: images[0]!, prompt: 'caption en', maxTokens: 6 })).tokens;
    await m.dispose();
  }
  // All at once: three models, each with eight calls in flight, and a worker generating too.
  const models = await Promise.all(pairs.map((files) => PaliGemma.load({ ...files, gpu: 'cpu', threads: 1 })));
  const worker = runWorker(generateInWorker, { ...pairs[1], png: images[0], entry });
  const results = await Promise.all(models.map((m) => Promise.all(calls(m))));
  for (const [i, r] of results.entries()) t.same(r, expected[i], `model ${i + 1}: eight concurrent calls give the sequential results`);
  t.same((await worker).result, workerExpected, 'the worker: the same tokens');
  // Dispose in another order than loaded, one of them with calls still queued.
  const queued = calls(models[2]!).map((p) => p.catch((e: { code?: string }) => e.code));
  await models[1]!.dispose();
  await models[2]!.dispose();
  const settled = await Promise.all(queued);
  t.ok(
    settled.every((x) => Array.isArray(x) || x === 'ERR_DISPOSED'),
    `calls queued on a disposed model finish or reject with ERR_DISPOSED (${settled.filter((x) => x === 'ERR_DISPOSED').length} rejected)`,
  );
  t.same(await Promise.all(calls(models[0]!)), expected[0], 'the model left is unaffected');
  await models[0]!.dispose();
});
