import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { PaliGemma, parseLocations, pixelRegion } from '../lib/index';
import { pasteMask, resizeBilinear } from '../lib/tasks/masks';
import { convertedFixture, FIXTURES, relError } from './helpers/fixtures';

const W = 640,
  H = 480;

t.test('parseLocations: objects, labels, segments', (t) => {
  const two = parseLocations('<loc0000><loc0000><loc0512><loc1023> cat ; <loc0256><loc0512><loc0768><loc1023> dog', { width: W, height: H });
  t.same(two, [
    { label: 'cat', box: { x1: 0, y1: 0, x2: (1023 / 1024) * W, y2: 240 }, region: { left: 0, top: 0, width: 640, height: 240 } },
    { label: 'dog', box: { x1: 320, y1: 120, x2: (1023 / 1024) * W, y2: 360 }, region: { left: 320, top: 120, width: 320, height: 240 } },
  ]);
  const seg = Array.from({ length: 16 }, (_, i) => `<seg${String(i * 7).padStart(3, '0')}>`).join('');
  const withSeg = parseLocations(`<loc0100><loc0200><loc0300><loc0400> ${seg} wall`, { width: 1024, height: 1024 });
  t.same(
    withSeg[0]!.seg,
    Array.from({ length: 16 }, (_, i) => i * 7),
  );
  t.equal(withSeg[0]!.label, 'wall');
  t.same(withSeg[0]!.box, { x1: 200, y1: 100, x2: 400, y2: 300 });
  t.equal(parseLocations('<loc0100><loc0200><loc0300><loc0400>', { width: 10, height: 10 })[0]!.label, '', 'missing label');
  t.end();
});

t.test('parseLocations: junk, partial groups and broken tokens are skipped, boxes ordered and inside the image', (t) => {
  const size = { width: 100, height: 100 };
  t.same(parseLocations('', size), []);
  t.same(parseLocations('no boxes here', size), []);
  t.same(parseLocations('<loc0100><loc0200><loc0300> cat', size), [], 'three locs');
  t.same(parseLocations('<loc0100><loc02x0><loc0300><loc0400> cat', size), [], 'malformed token');
  t.same(parseLocations('<loc1100><loc0200><loc0300><loc0400> cat', size), [], 'bin out of range');
  t.same(parseLocations('<loc0100><loc0200><loc0100><loc0400> flat', size), [], 'no area');
  const inverted = parseLocations('<loc0512><loc0768><loc0256><loc0128> x', size);
  t.same(inverted[0]!.box, { x1: 12.5, y1: 25, x2: 75, y2: 50 }, 'inverted corners are ordered');
  t.same(inverted[0]!.region, { left: 12, top: 25, width: 63, height: 25 }, 'region: the box rounded outwards to whole pixels');
  const mixed = parseLocations('garbage <loc0001> ; <loc0000><loc0000><loc1023><loc1023> a ; junk ; <loc0512><loc0512><loc0600><loc0600>b', size);
  t.same(
    mixed.map((m) => m.label),
    ['a', 'b'],
    'good groups survive around junk',
  );
  const edge = parseLocations('<loc0000><loc0000><loc1023><loc1023> all', { width: 640, height: 480 })[0]!.box;
  t.same(edge, { x1: 0, y1: 0, x2: (1023 / 1024) * 640, y2: (1023 / 1024) * 480 }, 'the largest bins stay inside the image');
  const badSeg = parseLocations(`<loc0000><loc0000><loc0100><loc0100>${'<seg200>'.repeat(16)} x`, size);
  t.equal(badSeg.length, 1);
  t.equal(badSeg[0]!.seg, undefined, 'out-of-range seg codes are dropped');
  // @ts-expect-error: not a string on purpose
  t.same(parseLocations(null, size), []);
  t.end();
});

t.test('pixelRegion: whole pixels covering the box, clipped to the image, never empty', (t) => {
  t.same(pixelRegion({ x1: 0.2, y1: 1.9, x2: 3.1, y2: 4 }, 10, 10), { left: 0, top: 1, width: 4, height: 3 });
  t.same(pixelRegion({ x1: -5, y1: -1, x2: 50, y2: 12 }, 10, 10), { left: 0, top: 0, width: 10, height: 10 }, 'clipped');
  t.same(pixelRegion({ x1: 9.6, y1: 9.9, x2: 9.7, y2: 9.95 }, 10, 10), { left: 9, top: 9, width: 1, height: 1 }, 'at least one pixel');
  t.same(pixelRegion({ x1: 12, y1: 3, x2: 14, y2: 4 }, 10, 10), { left: 9, top: 3, width: 1, height: 1 }, 'a box past the edge keeps the last pixel');
  t.end();
});

t.test('masks: bilinear resize and paste', (t) => {
  const flat = new Float32Array(64 * 64).fill(0.5);
  t.ok(
    resizeBilinear(flat, 64, 64, 10, 7).every((v) => Math.abs(v - 0.5) < 1e-6),
    'a constant map stays constant',
  );
  const half = new Float32Array(64 * 64).map((_, i) => (i % 64 < 32 ? 1 : -1));
  const m = pasteMask(half, { x1: 10, y1: 20, x2: 30, y2: 40 }, 50, 60);
  t.equal(m.width, 50);
  t.equal(m.height, 60);
  t.equal(m.data.length, 50 * 60);
  t.equal(m.data[25 * 50 + 12], 255, 'left half of the box is in');
  t.equal(m.data[25 * 50 + 28], 0, 'right half is out');
  t.equal(m.data[5 * 50 + 12], 0, 'outside the box is out');
  t.equal(m.data.filter((v) => v === 255).length, 10 * 20, 'exactly the left half of the box');
  t.equal(pasteMask(half, { x1: 5, y1: 5, x2: 5, y2: 9 }, 10, 10).data.filter(Boolean).length, 0, 'an empty box pastes nothing');
  // A box reaching outside the image (a caller's own box) is cut to it.
  const ones = new Float32Array(64 * 64).fill(1);
  const cut = pasteMask(ones, { x1: -5, y1: 8, x2: 4, y2: 20 }, 10, 10);
  t.equal(cut.data.filter(Boolean).length, 4 * 2, 'only the part inside the image is set');
  t.end();
});

/**
 * PIL's BILINEAR resize of one axis, written out directly in float64: output pixel o samples the
 * input around (o + 0.5) * in / out with a triangle filter widened by the scale when shrinking.
 */
function pilTriangleWeights(inSize: number, outSize: number): { first: number; w: number[] }[] {
  const scale = inSize / outSize;
  const widen = Math.max(scale, 1);
  const out: { first: number; w: number[] }[] = [];
  for (let o = 0; o < outSize; o++) {
    const center = (o + 0.5) * scale;
    const first = Math.max(0, Math.trunc(center - widen + 0.5));
    const last = Math.min(inSize, Math.trunc(center + widen + 0.5));
    const w: number[] = [];
    for (let i = first; i < last; i++) w.push(Math.max(0, 1 - Math.abs((i - center + 0.5) / widen)));
    const sum = w.reduce((a, b) => a + b, 0);
    out.push({ first, w: w.map((x) => x / sum) });
  }
  return out;
}

/** The expected full-size mask: the map resized to the rounded box in one 2-D sum, > 0 inside. */
function expectedMask(map: Float64Array, box: { x1: number; y1: number; x2: number; y2: number }, width: number, height: number) {
  const x1 = Math.round(box.x1);
  const y1 = Math.round(box.y1);
  const bw = Math.round(box.x2) - x1;
  const bh = Math.round(box.y2) - y1;
  const wx = pilTriangleWeights(64, bw);
  const wy = pilTriangleWeights(64, bh);
  const mask = new Uint8Array(width * height);
  const margin = new Float64Array(width * height).fill(Infinity); // |value|: how far from the threshold
  for (let y = 0; y < bh; y++) {
    for (let x = 0; x < bw; x++) {
      let v = 0;
      wy[y]!.w.forEach((a, j) => {
        wx[x]!.w.forEach((b, i) => {
          v += a * b * map[(wy[y]!.first + j) * 64 + wx[x]!.first + i]!;
        });
      });
      mask[(y1 + y) * width + x1 + x] = v > 0 ? 255 : 0;
      margin[(y1 + y) * width + x1 + x] = Math.abs(v);
    }
  }
  return { mask, margin };
}

t.test('masks: the placed mask equals an independent bilinear resize, thresholded at 0', (t) => {
  // A smooth map with values near 0 (|v| <= 0.12): a threshold of +-0.5 or a box filter changes it.
  const map = new Float64Array(64 * 64).map((_, k) => 0.1 * Math.sin((k % 64) * 0.31 + Math.floor(k / 64) * 0.17) + 0.05 * Math.cos(k * 0.011) - 0.013);
  const boxes = [
    { x1: 3.4, y1: 7.6, x2: 40.2, y2: 16.9, w: 50, h: 30 }, // 37 x 9: shrinks
    { x1: 0, y1: 0, x2: 117, y2: 83, w: 120, h: 90 }, // 117 x 83: grows
    { x1: 11.5, y1: 2.49, x2: 28.5, y2: 67.5, w: 40, h: 70 }, // 17 x 66: shrinks one way, grows the other
    { x1: 5, y1: 5, x2: 70, y2: 69, w: 75, h: 75 }, // 65 x 64: almost the map's own size
  ];
  for (const b of boxes) {
    const got = pasteMask(Float32Array.from(map), b, b.w, b.h);
    const want = expectedMask(map, b, b.w, b.h);
    let differ = 0;
    let unsure = 0;
    for (let i = 0; i < got.data.length; i++) {
      if (got.data[i] === want.mask[i]) continue;
      if (want.margin[i]! < 1e-5)
        unsure++; // float32 vs float64 may part right at the threshold
      else differ++;
    }
    const inside = want.mask.filter(Boolean).length;
    t.equal(differ, 0, `box ${JSON.stringify(b)}: equal to the reference (${inside} pixels in, ${unsure} at the threshold)`);
    t.ok(unsure <= got.data.length * 0.002, 'almost no pixel sits at the threshold');
    t.ok(inside > 0 && inside < (Math.round(b.x2) - Math.round(b.x1)) * (Math.round(b.y2) - Math.round(b.y1)), 'the mask is neither empty nor the whole box');
  }
  t.end();
});

t.test('decodeMask matches the reference decoder', async (t) => {
  const ref = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'vae', 'vae-reference.json'), 'utf8')) as { cases: { codes: number[]; mask: number[] }[] };
  const model = await PaliGemma.load({ ...(await convertedFixture('tiny-v2', 'f32', true)), gpu: 'cpu' });
  t.teardown(() => model.dispose());
  for (const [i, c] of ref.cases.entries()) {
    const mask = await model.decodeMask(c.codes);
    t.equal(mask.length, 64 * 64);
    const err = relError(mask, c.mask);
    t.ok(err <= 1e-3, `case ${i}: rel. error ${err.toExponential(2)} <= 1e-3`);
  }
  await t.rejects(model.decodeMask([1, 2, 3]), { code: 'ERR_INVALID_ARGUMENT' });
  await t.rejects(model.decodeMask(Array(16).fill(128)), { code: 'ERR_INVALID_ARGUMENT', message: /0\.\.127/ });
});

t.test('tasks on the tiny model: prompts, boxes in source pixels, masks', async (t) => {
  const model = await PaliGemma.load({ ...(await convertedFixture('tiny-v2', 'f32', true)), gpu: 'cpu' });
  t.teardown(() => model.dispose());
  const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png'); // 150 wide, 200 high
  const chunks: string[] = [];
  const caption = await model.caption(png, { onText: (c) => chunks.push(c), maxTokens: 3 });
  t.equal(chunks.join(''), caption, 'tasks stream like generate');
  t.type(await model.caption(png, { detail: 'long', maxTokens: 3 }), 'string');
  t.type(await model.answer(png, 'what is it?', { maxTokens: 3 }), 'string');
  t.type(await model.ocr(png, { maxTokens: 3 }), 'string');
  await t.rejects(model.answer(png, '  '), { code: 'ERR_INVALID_ARGUMENT' });
  await t.rejects(model.caption(png, { lang: 'not a lang' }), { code: 'ERR_INVALID_ARGUMENT' });
  await t.rejects(model.detect(png, 'a<b'), { code: 'ERR_INVALID_ARGUMENT', message: /detect labels/ });
  await t.rejects(model.detect(png, 'a ; '), { code: 'ERR_INVALID_ARGUMENT' });
  await t.rejects(model.segment(png, 'a ; b'), { code: 'ERR_INVALID_ARGUMENT', message: /one label/ });

  // Teacher-force a known answer to check the parsing and placement end to end.
  const det = Array.from(await model.tokenize('<loc0256><loc0512><loc0768><loc1023> cat'));
  const boxes = await model.detect(png, ['cat', 'dog'], { forceTokens: det, maxTokens: det.length });
  t.same(boxes, [{ label: 'cat', box: { x1: 75, y1: 50, x2: (1023 / 1024) * 150, y2: 150 }, region: { left: 75, top: 50, width: 75, height: 100 } }]);
  const unlabeled = Array.from(await model.tokenize('<loc0000><loc0000><loc0512><loc0512>'));
  t.same((await model.detect(png, 'bird', { forceTokens: unlabeled, maxTokens: unlabeled.length }))[0]!.label, 'bird', 'one label fills in');

  const seg = Array.from(await model.tokenize(`<loc0000><loc0000><loc0512><loc0512>${'<seg010>'.repeat(16)} cat`));
  const masks = await model.segment(png, 'cat', { forceTokens: seg, maxTokens: seg.length });
  t.equal(masks.length, 1);
  t.same(masks[0]!.box, { x1: 0, y1: 0, x2: 75, y2: 100 });
  t.equal(masks[0]!.mask.width, 150);
  t.equal(masks[0]!.mask.height, 200);
  t.equal(masks[0]!.mask64.length, 4096);
  const outside = masks[0]!.mask.data.filter((v, i) => v && (i % 150 >= 75 || Math.floor(i / 150) >= 100)).length;
  t.equal(outside, 0, 'mask only inside the box');

  const embd = await model.encodeImage(png);
  await t.rejects(model.detect(embd, 'cat', { forceTokens: det, maxTokens: det.length }), { code: 'ERR_INVALID_ARGUMENT', message: /imageSize/ });
  t.same(await model.detect(embd, 'cat', { forceTokens: det, maxTokens: det.length, imageSize: { width: 150, height: 200 } }), boxes);
});

t.test('segment without a decoder says how to add one', async (t) => {
  const model = await PaliGemma.load({ ...(await convertedFixture('tiny-v2')), gpu: 'cpu' });
  t.teardown(() => model.dispose());
  await t.rejects(model.segment(path.join(FIXTURES, 'tiny-v2', 'reference', 'noise_40x40.png'), 'cat'), { message: /--seg-decoder/ });
});
