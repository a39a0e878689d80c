import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { annotate } from '../lib/image/annotate';
import { encodePNG } from '../lib/image/png';
import { getBinding } from '../lib/native/binding';
import { runCli } from './helpers/cli';
import { convertedFixture, FIXTURES } from './helpers/fixtures';
import { tmpDir } from './helpers/tmp';

const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');
const dir = tmpDir();

const run = runCli;

t.test('task commands: text streams, --json prints the structured result, --model DIR', async (t) => {
  const files = await convertedFixture('tiny-v2', 'f32', true);
  const pair = ['--model', files.model, '--mmproj', files.mmproj, '--gpu', 'cpu'];
  const cap = await run(['caption', png, ...pair, '--max-tokens', '4']);
  t.equal(cap.code, 0, cap.err);
  t.ok(cap.out.length > 1, 'caption printed');
  t.match(cap.err, /loading model 100%/, 'load progress on stderr');

  const json = await run(['ask', png, 'what', 'is', 'it?', ...pair, '--max-tokens', '3', '--json']);
  t.equal(json.code, 0, json.err);
  const parsed = JSON.parse(json.out);
  t.equal(parsed.task, 'ask');
  t.equal(parsed.question, 'what is it?');
  t.equal(parsed.backend, 'CPU');
  t.type(parsed.text, 'string');

  const folder = path.dirname(files.model);
  const det = await run(['detect', png, 'cat ; dog', '--model', folder, '--max-tokens', '8', '--json']);
  t.equal(det.code, 0, det.err);
  const d = JSON.parse(det.out);
  t.same(d.labels, ['cat', 'dog']);
  t.ok(Array.isArray(d.detections));

  const annotated = path.join(dir, 'out.png');
  const seg = await run(['segment', png, 'cat', ...pair, '--max-tokens', '24', '--annotate', annotated]);
  t.equal(seg.code, 0, seg.err);
  const img = await getBinding().binding.decodeImage(fs.readFileSync(annotated));
  t.same([img.width, img.height], [150, 200], 'annotated picture has the source size');

  const runRaw = await run(['run', png, '--prompt', 'detect cat', ...pair, '--max-tokens', '4', '--json']);
  t.equal(runRaw.code, 0, runRaw.err);
  t.ok(Array.isArray(JSON.parse(runRaw.out).locations));
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
