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
