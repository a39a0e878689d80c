import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { writeMasks } from '../lib/cli/commands/tasks';
import { annotate } from '../lib/image/annotate';
import { encodePNG } from '../lib/image/png';
import { annotateImage, ImageEmbedding, PaliGemma, parseLocations } from '../lib/index';
import { getBinding } from '../lib/native/binding';
import { maskToRLE } from '../lib/tasks/masks';
import { runCli } from './helpers/cli';
import { convertedFixture, FIXTURES } from './helpers/fixtures';
import { tmpDir } from './helpers/tmp';

const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');
const dir = tmpDir();

const run = runCli;
const roundBox = (b: { x1: number; y1: number; x2: number; y2: number }) => ({
  x1: Math.round(b.x1),
  y1: Math.round(b.y1),
  x2: Math.round(b.x2),
  y2: Math.round(b.y2),
});

t.test('task commands print what the API returns; --json gives the structured result; --model DIR', async (t) => {
  const files = await convertedFixture('tiny-v2', 'f32', true);
  const api = await PaliGemma.load({ ...files, gpu: 'cpu' });
  t.teardown(() => api.dispose());
  const pair = ['--model', files.model, '--mmproj', files.mmproj, '--gpu', 'cpu'];

  const cap = await run(['caption', png, ...pair, '--max-tokens', '4']);
  t.equal(cap.code, 0, cap.err);
  const caption = await api.caption(png, { maxTokens: 4 });
  t.ok(caption.length > 0, 'the tiny model says something');
  t.equal(cap.out, `${caption}\n`, 'caption: the streamed text is the caption');
  t.match(cap.err, /loading model 100%/, 'load progress on stderr');

  const json = await run(['ask', png, 'what', 'is', 'it?', ...pair, '-n', '3', '--json']);
  t.equal(json.code, 0, json.err);
  const parsed = JSON.parse(json.out);
  t.match(parsed, { task: 'ask', question: 'what is it?', backend: 'CPU', model: files.model, image: png });
  t.equal(parsed.text, await api.answer(png, 'what is it?', { maxTokens: 3 }), 'ask --json: the answer');

  const folder = path.dirname(files.model);
  const det = await run(['detect', png, 'cat ; dog', '-m', folder, '--max-tokens', '8', '--json']);
  t.equal(det.code, 0, det.err);
  const d = JSON.parse(det.out);
  t.same(d.labels, ['cat', 'dog']);
  const boxes = (await api.detect(png, ['cat', 'dog'], { maxTokens: 8 })).map((x) => ({ label: x.label, box: roundBox(x.box) }));
  t.same(d.detections, boxes, 'detect --json: the API detections, in whole pixels');

  const annotated = path.join(dir, 'out.png');
  const seg = await run(['segment', png, 'cat', ...pair, '--max-tokens', '24', '--annotate', annotated]);
  t.equal(seg.code, 0, seg.err);
  const found = await api.segment(png, 'cat', { maxTokens: 24 });
  t.equal(seg.out.includes('(nothing found)'), found.length === 0, 'segment: prints what the API finds');
  const img = await getBinding().binding.decodeImage(fs.readFileSync(annotated));
  t.same([img.width, img.height], [150, 200], 'annotated picture has the source size');

  const runRaw = await run(['run', png, 'detect', 'cat', ...pair, '--max-tokens', '4', '--json']);
  t.equal(runRaw.code, 0, runRaw.err);
  const r = JSON.parse(runRaw.out);
  const gen = await api.generate({ image: png, prompt: 'detect cat', maxTokens: 4 });
  t.match(r, { prompt: 'detect cat', text: gen.text, stopReason: gen.stopReason });
  t.same(r.locations, parseLocations(gen.text, { width: 150, height: 200 }), 'run --json: the parsed locations of the text');
});

t.test('segment --mask writes the union and one file per object; masks as run lengths', async (t) => {
  const a = { width: 6, height: 4, data: new Uint8Array(24) };
  const b = { width: 6, height: 4, data: new Uint8Array(24) };
  a.data.fill(255, 0, 3); // row 0, x 0..2
  b.data.fill(255, 20, 24); // row 3, x 2..5
  const file = path.join(dir, 'm.png');
  t.same(writeMasks(file, [a, b]), [file, path.join(dir, 'm-1.png'), path.join(dir, 'm-2.png')]);
  const decode = async (f: string) => (await getBinding().binding.decodeImage(fs.readFileSync(f))).data.filter((_, i) => i % 3 === 0);
  t.same(Array.from(await decode(file)), Array.from(a.data.map((v, i) => v | b.data[i]!)), 'the union');
  t.same(Array.from(await decode(path.join(dir, 'm-2.png'))), Array.from(b.data), 'the second object alone');
  t.same(writeMasks(path.join(dir, 'one.png'), [a]), [path.join(dir, 'one.png')], 'one object: one file');
  t.same(maskToRLE(a), { width: 6, height: 4, counts: [0, 3, 21] }, 'run lengths start with the 0s');
  t.same(maskToRLE(b).counts, [20, 4]);
  t.end();
});

t.test('task commands: bad usage exits 2, runtime errors exit 1 with one line', async (t) => {
  const files = await convertedFixture('tiny-v2');
  const pair = ['--model', files.model, '--mmproj', files.mmproj];
  for (const args of [
    ['caption'],
    ['ask', png, ...pair],
    ['run', png, ...pair],
    ['caption', png],
    ['caption', png, ...pair, '--max-tokens', 'many'],
    ['caption', png, ...pair, '--gpu', 'tpu'],
    ['caption', png, ...pair, '--bogus'],
    ['ocr', png, 'extra', ...pair],
    ['caption', png, ...pair, '--annotate', 'x.png'],
  ]) {
    const r = await run(args);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.err, /usage: paligemma/);
  }
  const missing = await run(['caption', path.join(dir, 'none.png'), ...pair]);
  t.equal(missing.code, 1);
  t.match(missing.err, /none\.png: no such file/);
  t.equal(missing.err.trim().split('\n').length, 1, 'one line');
  const noSeg = await run(['segment', png, 'cat', ...pair]);
  t.equal(noSeg.code, 1);
  t.match(noSeg.err, /--seg-decoder/);

  // --model FILE alone: its mmproj is found beside it, or the message says why not.
  const beside = tmpDir();
  const textFile = path.join(beside, 'tiny-f32.gguf');
  fs.copyFileSync(files.model, textFile);
  const lonely = await run(['caption', png, '--model', textFile]);
  t.equal(lonely.code, 1);
  t.match(lonely.err, /tiny-f32\.gguf: no mmproj file beside it \(expected <name>-mmproj-<type>\.gguf/);
  fs.copyFileSync(files.mmproj, path.join(beside, 'tiny-mmproj-f32.gguf'));
  const found = await run(['caption', png, '--model', textFile, '--gpu', 'cpu', '-n', '2']);
  t.equal(found.code, 0, found.err);
  fs.copyFileSync(files.mmproj, path.join(beside, 'tiny-mmproj-f16.gguf'));
  const two = await run(['caption', png, '--model', textFile]);
  t.equal(two.code, 1);
  t.match(two.err, /2 mmproj files beside it \(tiny-mmproj-f16\.gguf, tiny-mmproj-f32\.gguf\): choose one with --mmproj FILE/);
  t.equal(two.err.trim().split('\n').length, 1, 'one line, no usage dump');
});

t.test('selftest runs the bundled tiny model and passes', async (t) => {
  const r = await run(['selftest', '--gpu', 'cpu']);
  t.equal(r.code, 0, r.err);
  t.match(r.out, /backend CPU/);
  t.equal((r.out.match(/^PASS .*logits rel\. error/gm) ?? []).length, 3, 'three cases, each with its logits checked');
  t.match(r.out, /selftest passed/);
});

t.test('the installed program exits with the right codes', (t) => {
  const cli = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
  t.equal(spawnSync(process.execPath, [cli, 'caption'], { encoding: 'utf8' }).status, 2);
  t.equal(spawnSync(process.execPath, [cli, 'info', path.join(dir, 'missing.gguf')], { encoding: 'utf8' }).status, 1);
  t.end();
});

t.test('annotateImage: a PNG of the picture with boxes drawn, from a path, bytes or raw pixels', async (t) => {
  const raw = { width: 40, height: 30, channels: 4 as const, data: new Uint8Array(40 * 30 * 4).fill(100) };
  const items = [{ label: 'cat', box: { x1: 5, y1: 12, x2: 35, y2: 28 } }];
  const fromRaw = await getBinding().binding.decodeImage(await annotateImage(raw, items));
  t.same([fromRaw.width, fromRaw.height], [40, 30]);
  t.not(fromRaw.data[(12 * 40 + 20) * 3 + 1], 100, 'box edge drawn');
  t.equal(fromRaw.data[(20 * 40 + 20) * 3], 100, 'inside the box untouched');
  const fromFile = await getBinding().binding.decodeImage(await annotateImage(png, []));
  t.same([fromFile.width, fromFile.height], [150, 200], 'a file path: its own size');
  await t.rejects(annotateImage(png, [{ label: 'x', box: { x1: 0, y1: 0, x2: Number.NaN, y2: 1 } }]), /items\[0\]\.box/);
  await t.rejects(annotateImage(new ImageEmbedding(new Float32Array(4), 2, 2) as never, []), /an embedding has no pixels/);
  await t.rejects(annotateImage(path.join(dir, 'missing.png'), []), { code: 'ERR_FILE_NOT_FOUND' });
});

t.test('annotate draws masks, boxes and labels without touching the input', (t) => {
  const base = { width: 40, height: 30, data: new Uint8Array(40 * 30 * 3).fill(100) };
  const mask = { width: 40, height: 30, data: new Uint8Array(40 * 30) };
  mask.data[15 * 40 + 20] = 255;
  const out = annotate(base, [{ label: 'cat', box: { x1: 5, y1: 12, x2: 35, y2: 28 }, mask }]);
  t.ok(
    base.data.every((v) => v === 100),
    'input unchanged',
  );
  t.not(out.data[(15 * 40 + 20) * 3], 100, 'mask pixel tinted');
  t.not(out.data[(12 * 40 + 20) * 3 + 1], 100, 'box edge drawn');
  t.equal(out.data[(20 * 40 + 20) * 3], 100, 'box inside untouched');
  t.ok(encodePNG(out.data, 40, 30, 3).subarray(1, 4).toString() === 'PNG');
  t.end();
});
