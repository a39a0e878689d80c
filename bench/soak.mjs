#!/usr/bin/env node
// A bounded soak: N sequential generations on the tiny model with images of varied sizes and kinds
// (raw pixels from 8x8 to 1536x1024, PNG bytes, a PNG file, and a cached ImageEmbedding mixed in),
// varied prompts and lengths. Prints the resident set size after warm-up and at every tenth of the
// run (after a garbage collection), and the growth after warm-up; exits 1 when it reaches
// --max-growth percent. Growth compares the highest RSS of the last quarter of the samples with the
// highest of the first quarter: a leak raises both the peaks and the troughs, while the C allocator
// keeping freed blocks for reuse (glibc's malloc does, more or less from one moment to the next)
// moves single samples down and up by tens of MB. The C heap in use (glibc's own count) is printed
// beside it: that one is exact.
//   npm run soak -- [--calls 2000] [--warmup 1000] [--max-growth 5]
// The warm-up is long because the C allocator settles slowly: with images of up to 6 MB it raises its
// threshold for returning memory to the system as it goes, and keeps freed blocks for reuse.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

// Samples are taken after a full garbage collection: the raw images (up to 6 MB each) are garbage
// the collector frees when it likes, and the RSS between collections says nothing of leaks.
if (typeof globalThis.gc !== 'function') {
  const { status } = spawnSync(process.execPath, ['--expose-gc', fileURLToPath(import.meta.url), ...process.argv.slice(2)], { stdio: 'inherit' });
  process.exit(status ?? 1);
}
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = parseArgs({
  options: { calls: { type: 'string', default: '2000' }, warmup: { type: 'string', default: '1000' }, 'max-growth': { type: 'string', default: '5' } },
});
const calls = Number(values.calls);
const warmup = Number(values.warmup);
const maxGrowth = Number(values['max-growth']);
const { PaliGemma, convert } = await import(path.join(root, 'dist', 'index.js'));
const { encodePNG } = await import(path.join(root, 'dist', 'image', 'png.js'));
const { getBinding } = await import(path.join(root, 'dist', 'native', 'binding.js'));
const nativeHeapMB = () => getBinding('cpu').binding.nativeHeapBytes() / 2 ** 20;

// A fixed pseudo-random sequence, so two runs see the same inputs.
let seed = 12345;
const random = () => {
  seed = (seed * 1103515245 + 12345) >>> 0;
  return seed / 2 ** 32;
};
const between = (lo, hi) => lo + Math.floor(random() * (hi - lo + 1));
function rawImage(width, height, channels) {
  const data = new Uint8Array(width * height * channels);
  for (let i = 0; i < data.length; i += 97) data[i] = between(0, 255);
  return { data, width, height, channels };
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pg-soak-'));
const rssMB = async () => {
  globalThis.gc();
  await new Promise((r) => setImmediate(r));
  globalThis.gc();
  return process.memoryUsage().rss / 2 ** 20;
};
try {
  const files = await convert({ input: path.join(root, 'test', 'fixtures', 'tiny-v2'), outDir: work, type: 'q8_0', visionType: 'f16' });
  const model = await PaliGemma.load({ ...files, gpu: 'cpu', threads: 1 });
  const pngFile = path.join(root, 'test', 'fixtures', 'tiny-v2', 'reference', 'shapes_150x200.png');
  const cached = await model.encodeImage(pngFile);
  const prompts = ['caption en', 'detect cat ; dog', 'ocr', 'answer en what is this?', 'segment cat', 'describe en'];
  const kinds = { raw: 0, png: 0, file: 0, cached: 0 };
  const image = (i) => {
    switch (i % 8) {
      case 3:
        kinds.png++;
        return (() => {
          const r = rawImage(between(8, 640), between(8, 640), 3);
          return encodePNG(r.data, r.width, r.height, 3);
        })();
      case 5:
        kinds.file++;
        return pngFile;
      case 7:
        kinds.cached++;
        return cached;
      default:
        kinds.raw++;
        return rawImage(between(8, 1536), between(8, 1024), between(0, 1) ? 3 : 4);
    }
  };
  const samples = [];
  const t0 = Date.now();
  for (let i = 0; i < warmup + calls; i++) {
    await model.generate({ image: image(i), prompt: prompts[i % prompts.length], maxTokens: between(1, 24), logits: i % 50 === 0 });
    const done = i + 1 - warmup;
    if (done >= 0 && done % Math.max(1, Math.floor(calls / 20)) === 0) {
      const rss = await rssMB();
      samples.push({ calls: done, rssMB: rss, heapMB: nativeHeapMB() });
      console.log(`after ${String(done).padStart(5)} calls: RSS ${rss.toFixed(1)} MB, C heap in use ${nativeHeapMB().toFixed(2)} MB`);
    }
  }
  await model.dispose();
  const quarter = Math.max(1, Math.floor(samples.length / 4));
  const highest = (list) => Math.max(...list.map((s) => s.rssMB));
  const base = highest(samples.slice(0, quarter));
  const last = highest(samples.slice(-quarter));
  const peak = highest(samples);
  const growth = ((last - base) / base) * 100;
  console.log(
    JSON.stringify({
      calls,
      warmup,
      kinds,
      seconds: (Date.now() - t0) / 1000,
      rssFirstQuarterMB: +base.toFixed(1),
      rssLastQuarterMB: +last.toFixed(1),
      rssPeakMB: +peak.toFixed(1),
      nativeHeapAfterWarmupMB: +samples[0].heapMB.toFixed(2),
      nativeHeapEndMB: +samples[samples.length - 1].heapMB.toFixed(2),
      growthPercent: +growth.toFixed(2),
    }),
  );
  if (growth >= maxGrowth) {
    console.error(`RSS grew ${growth.toFixed(2)}% after warm-up (limit ${maxGrowth}%)`);
    process.exitCode = 1;
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
