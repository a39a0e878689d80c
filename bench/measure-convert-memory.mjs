#!/usr/bin/env node
// Measures the converter's peak memory on a synthetic checkpoint with PaliGemma-3B's largest tensor
// (the 257216 x 2048 BF16 token embedding, 1.05 GB) plus two full-size Gemma-2B layers and two
// SigLIP-So400m layers. Prints checkpoint size, largest tensor and peak RSS per output type.
//   npm run bench:convert-memory -- [types...]     (default: f16 q8_0)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { writeSyntheticCheckpoint } = await import(path.join(root, 'dist-bench', 'bench', 'synthetic.js'));
const types = process.argv.slice(2).length ? process.argv.slice(2) : ['f16', 'q8_0'];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pg-convmem-'));
const ckpt = path.join(work, 'ckpt');
try {
  writeSyntheticCheckpoint(ckpt, 224, (line) => console.error(line), { text: { layers: 2 }, vision: { layers: 2 } });
  const size = fs.statSync(path.join(ckpt, 'model.safetensors')).size;
  const embd = 257216 * 2048;
  console.log(
    `checkpoint: ${(size / 1e9).toFixed(2)} GB BF16; largest tensor: token embedding 257216x2048 = ${((embd * 2) / 1e9).toFixed(2)} GB BF16 (${((embd * 4) / 1e9).toFixed(2)} GB as f32)`,
  );
  for (const type of types) {
    const script = `
      const { convert } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
      const t0 = Date.now();
      convert({ input: ${JSON.stringify(ckpt)}, outDir: ${JSON.stringify(path.join(work, type))}, type: ${JSON.stringify(type)} })
        .then(() => console.log(JSON.stringify({ seconds: (Date.now() - t0) / 1000, maxRssMB: process.resourceUsage().maxRSS / 1024 })))
        .catch((e) => { console.error(e); process.exit(1); });`;
    const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    if (res.status !== 0) throw new Error(res.stderr);
    const r = JSON.parse(res.stdout.trim().split('\n').pop());
    console.log(`--type ${type}: peak RSS ${r.maxRssMB.toFixed(0)} MB, ${r.seconds.toFixed(1)} s`);
    fs.rmSync(path.join(work, type), { recursive: true, force: true });
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
