// Leaks and soak on the tiny model: memory stays flat over many generations and load/dispose cycles.
import path from 'node:path';
import t from 'tap';
import { PaliGemma } from '../lib/index';
import { convertedFixture, FIXTURES } from './helpers/fixtures';

const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');

function rssAfterGc(): number {
  (globalThis as { gc?: () => void }).gc?.();
  return process.memoryUsage().rss;
}

t.test('500 sequential generations: RSS grows under 5% after warm-up', async (t) => {
  const model = await PaliGemma.load({ ...(await convertedFixture('tiny-v2')), gpu: 'cpu', threads: 1, imageCacheMB: 0 });
  t.teardown(() => model.dispose());
  const prompts = ['caption en', 'detect cat ; dog', 'ocr', 'answer en what is this?'];
  for (let i = 0; i < 50; i++) await model.generate({ image: png, prompt: prompts[i % 4]!, maxTokens: 8, logits: i % 5 === 0 });
  const before = rssAfterGc();
  for (let i = 0; i < 500; i++) await model.generate({ image: png, prompt: prompts[i % 4]!, maxTokens: 8, logits: i % 5 === 0 });
  const after = rssAfterGc();
  const growth = (after - before) / before;
  t.ok(growth < 0.05, `RSS ${(before / 1048576).toFixed(1)} -> ${(after / 1048576).toFixed(1)} MiB (${(growth * 100).toFixed(2)}%)`);
});

t.test('100 load/dispose cycles: no growth', async (t) => {
  const files = await convertedFixture('tiny-v2');
  const cycle = async () => {
    const m = await PaliGemma.load({ ...files, gpu: 'cpu', threads: 1 });
    await m.generate({ image: png, prompt: 'caption en', maxTokens: 2 });
    await m.dispose();
  };
  for (let i = 0; i < 10; i++) await cycle();
  const before = rssAfterGc();
  for (let i = 0; i < 100; i++) await cycle();
  const after = rssAfterGc();
  const growth = (after - before) / before;
  t.ok(growth < 0.05, `RSS ${(before / 1048576).toFixed(1)} -> ${(after / 1048576).toFixed(1)} MiB (${(growth * 100).toFixed(2)}%)`);
});
