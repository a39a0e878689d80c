// The page at / in headless Chromium (Debian's, through playwright-core; nothing is downloaded):
// pick or drop the fixture image, run tasks, and read the canvas back to see the boxes and masks.
// PALIGEMMA_SCREENSHOT=docs/serve.png also saves a screenshot of the page after a detection.
import fs from 'node:fs';
import { type Browser, chromium, type Page } from 'playwright-core';
import t from 'tap';
import { createServer, PaliGemma, parseLocations } from '../lib/index';
import { convertedFixture } from './helpers/fixtures';
import { PNG, PNG_FILE } from './helpers/http';

const CHROMIUM = [process.env.CHROMIUM_PATH, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((f) => f && fs.existsSync(f));
// The page's colours, in drawing order.
const COLORS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#bfef45'];
const rgb = (hex: string) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));

// In-page code is given as text: this project's TypeScript has no DOM types.
const READ_PIXELS = `(async () => {
  const c = document.getElementById('canvas');
  const plain = document.createElement('canvas');
  plain.width = c.width;
  plain.height = c.height;
  // The page draws the image, then masks and boxes: the image alone, for comparison.
  plain.getContext('2d').drawImage(await createImageBitmap(document.getElementById('file').files[0]), 0, 0);
  const read = (canvas) => Array.from(canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data);
  return { width: c.width, canvas: read(c), image: read(plain) };
})()`;

/** The canvas's pixels and the image's own, as the page has them. */
async function pixels(page: Page): Promise<{ width: number; canvas: number[]; image: number[] }> {
  return page.evaluate(READ_PIXELS);
}

function changed(p: { canvas: number[]; image: number[] }): number {
  let n = 0;
  for (let i = 0; i < p.canvas.length; i += 4) if (Math.abs(p.canvas[i]! - p.image[i]!) + Math.abs(p.canvas[i + 1]! - p.image[i + 1]!) > 30) n++;
  return n;
}

function at(p: { width: number; canvas: number[] }, x: number, y: number): number[] {
  const i = (y * p.width + x) * 4;
  return p.canvas.slice(i, i + 3);
}

async function runTask(page: Page, task: string, text: string, sampling: { max?: string; temperature?: string; seed?: string } = {}) {
  await page.selectOption('#task', task);
  if (text) await page.fill('#text', text);
  await page.fill('#max', sampling.max ?? '');
  await page.fill('#temperature', sampling.temperature ?? '');
  await page.fill('#seed', sampling.seed ?? '');
  await page.click('#run');
  await page.waitForSelector('body[data-state=done], body[data-state=error]', { timeout: 60_000 });
}

t.test('the page in a real browser', { skip: CHROMIUM ? false : 'no Chromium installed (apt-get install chromium)' }, async (t) => {
  const files = await convertedFixture('tiny-v2', 'f32', true);
  const model = await PaliGemma.load({ ...files, gpu: 'cpu' });
  t.teardown(() => model.dispose());
  const server = createServer(model);
  const url = await server.listen({ port: 0 });
  t.teardown(() => server.close());
  let browser: Browser | undefined;
  t.teardown(() => browser?.close());
  browser = await chromium.launch({ executablePath: CHROMIUM });
  const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  const problems: string[] = [];
  page.on('pageerror', (e) => problems.push(e.message));
  page.on('requestfailed', (r) => problems.push(`${r.url()}: ${r.failure()?.errorText}`));
  page.on('request', (r) => {
    if (!r.url().startsWith(url) && !r.url().startsWith('data:') && !r.url().startsWith('blob:')) problems.push(`an outside request: ${r.url()}`);
  });

  await page.goto(url);
  await page.waitForSelector('#status.ok');
  t.match(await page.textContent('#status'), /tiny-v2-f32 · CPU/, 'the model and backend once ready');
  t.ok(await page.isDisabled('#run'), 'Run waits for an image');

  t.test('pick an image, detect: boxes drawn over it, labels listed, timings shown', async (t) => {
    await page.setInputFiles('#file', PNG_FILE);
    // A selector, not a predicate: the page's CSP forbids the eval a string predicate needs.
    await page.waitForSelector('#canvas[width="150"]', { state: 'attached' });
    t.ok(await page.isEnabled('#run'), 'Run is enabled');
    const expected = await model.detect(PNG, 'cat', { maxTokens: 40, temperature: 1, seed: 1 });
    t.ok(expected.length > 0, 'the model finds something with these settings');
    await runTask(page, 'detect', 'cat', { max: '40', temperature: '1', seed: '1' });
    t.equal(await page.getAttribute('body', 'data-state'), 'done', (await page.textContent('#error')) ?? '');
    const items = await page.$$eval('#items li', (lis) => lis.map((li) => li.textContent));
    t.same(
      items,
      expected.map((d) => `${d.label || '(no label)'}: ${[d.box.x1, d.box.y1, d.box.x2, d.box.y2].map(Math.round).join(', ')}`),
      'each detection listed with its box',
    );
    t.match(await page.textContent('#output'), /<loc\d{4}>/, 'the streamed text');
    t.match(await page.textContent('#timings'), /done \d+ ms .* tokens in \d+ ms/, 'timings');
    const p = await pixels(page);
    t.ok(changed(p) > 100, `the canvas differs from the image (${changed(p)} pixels)`);
    // The last box is drawn last: the middle of its bottom edge has its colour.
    const last = expected.at(-1)!.box;
    const lw = 2;
    const px = at(p, Math.round((last.x1 + last.x2) / 2), Math.ceil(last.y2 - lw));
    const want = rgb(COLORS[(expected.length - 1) % COLORS.length]!);
    t.ok(
      px.every((v, i) => Math.abs(v - want[i]!) <= 12),
      `the last box's edge is its colour (${px} vs ${want})`,
    );
    if (process.env.PALIGEMMA_SCREENSHOT) await page.screenshot({ path: process.env.PALIGEMMA_SCREENSHOT, type: 'png' });
  });

  t.test('drop an image, caption: the streamed text is the caption; no boxes', async (t) => {
    const dataTransfer = await page.evaluateHandle(`(() => {
      const dt = new DataTransfer();
      const bytes = Uint8Array.from(atob('${PNG.toString('base64')}'), (c) => c.charCodeAt(0));
      dt.items.add(new File([bytes], 'dropped.png', { type: 'image/png' }));
      return dt;
    })()`);
    await page.dispatchEvent('#drop', 'drop', { dataTransfer });
    await runTask(page, 'caption', '', { max: '6' });
    t.equal(await page.textContent('#output'), await model.caption(PNG, { maxTokens: 6 }));
    t.equal(await page.$$eval('#items li', (l) => l.length), 0);
  });

  t.test('any prompt through chat completions: boxes parsed from the text', async (t) => {
    await page.setInputFiles('#file', PNG_FILE);
    await runTask(page, 'prompt', 'detect cat', { max: '40', temperature: '1', seed: '3' });
    const text = (await model.generate({ image: PNG, prompt: 'detect cat', maxTokens: 40, temperature: 1, seed: 3 })).text;
    t.equal(await page.textContent('#output'), text);
    t.equal(await page.$$eval('#items li', (l) => l.length), parseLocations(text, { width: 150, height: 200 }).length, 'the <loc> boxes of the text');
  });

  t.test('segment: masks drawn as tinted layers', async (t) => {
    // The tiny model emits no <seg> codes: a known segmentation stands in for its output.
    const mask = { width: 150, height: 200, data: new Uint8Array(150 * 200) };
    for (let y = 120; y < 180; y++) mask.data.fill(255, y * 150 + 20, y * 150 + 100);
    const real = model.segment;
    model.segment = async () => [
      { label: 'cat', box: { x1: 20, y1: 120, x2: 100, y2: 180 }, region: { left: 20, top: 120, width: 80, height: 60 }, mask, mask64: new Float32Array(4096) },
    ];
    t.teardown(() => {
      model.segment = real;
    });
    await runTask(page, 'segment', 'cat');
    t.equal(await page.getAttribute('body', 'data-state'), 'done');
    const p = await pixels(page);
    const inside = at(p, 60, 150);
    const i = (150 * 150 + 60) * 4;
    t.ok(
      Math.abs(inside[0]! - p.image[i]!) + Math.abs(inside[2]! - p.image[i + 2]!) > 20,
      `inside the mask the image is tinted (${inside} vs ${p.image.slice(i, i + 3)})`,
    );
    const o = (10 * 150 + 140) * 4;
    t.same(at(p, 140, 10), p.image.slice(o, o + 3), 'outside it, untouched');
  });

  t.test('errors are shown', async (t) => {
    await page.selectOption('#task', 'answer');
    await page.fill('#text', '');
    await page.click('#run');
    t.match(await page.textContent('#error'), 'enter the question', 'a missing question');
    await runTask(page, 'detect', 'a <b>');
    t.equal(await page.getAttribute('body', 'data-state'), 'error');
    t.match(await page.textContent('#error'), /labels: a label must be non-empty and hold no/, "the server's message");
  });

  t.test('with an API key the page asks for it', async (t) => {
    const keyed = createServer(model, { apiKey: 'pw' });
    const kurl = await keyed.listen({ port: 0 });
    t.teardown(() => keyed.close());
    const p2 = await browser!.newPage();
    t.teardown(() => p2.close());
    await p2.goto(kurl);
    await p2.waitForSelector('#status.ok');
    t.ok(await p2.isVisible('#key'), 'a key field');
    await p2.setInputFiles('#file', PNG_FILE);
    await runTask(p2, 'ocr', '', { max: '3' });
    t.match(await p2.textContent('#error'), /API key is required/, 'without it: the 401 message');
    await p2.fill('#key', 'pw');
    await runTask(p2, 'ocr', '', { max: '3' });
    t.equal(await p2.getAttribute('body', 'data-state'), 'done', 'with it: served');
    t.equal(await p2.textContent('#output'), await model.ocr(PNG, { maxTokens: 3 }));
  });

  t.test('no script errors, failed or outside requests', async (t) => {
    t.same(problems, []);
  });
});
