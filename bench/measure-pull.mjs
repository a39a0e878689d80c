#!/usr/bin/env node
// Times `pull` (download + conversion) of a checkpoint over a loopback hub, in a fresh process with
// empty caches, and reports each part's time and that process's peak RSS; then a second pull (all
// cached). The tiny test checkpoint by default; --synthetic writes a random checkpoint at real
// shapes (PaliGemma 1 3B widths; 2 text and 2 vision layers unless given: about 1.3 GB, which the
// loopback server keeps in memory, so at most ~4 GB).
//   node scripts/build-ts.mjs --bench && node bench/measure-pull.mjs [--type T] [--vision-type T] [--synthetic [layers]]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dist = path.join(root, 'dist-bench');
if (!fs.existsSync(path.join(dist, 'bench', 'pull-server.js'))) {
  console.error('build the benchmark first: node scripts/build-ts.mjs --bench');
  process.exit(2);
}
const { values, positionals } = parseArgs({
  options: { type: { type: 'string', default: 'q4_k_m' }, 'vision-type': { type: 'string', default: 'q8_0' }, synthetic: { type: 'boolean' } },
  allowPositionals: true,
});
const { writeSyntheticCheckpoint } = await import(path.join(dist, 'bench', 'pull-server.js'));

// The server and each pull run in processes of their own: Linux carries a process's peak RSS over
// into the children it starts, so this one stays small (it never holds the checkpoint).
const serverScript = `
  const { startHubServer, checkpointFolder } = require(${JSON.stringify(path.join(dist, 'bench', 'pull-server.js'))});
  const files = checkpointFolder(process.env.CHECKPOINT);
  startHubServer([{ id: 'bench/model', files }]).then((s) => console.log(JSON.stringify({ url: s.url, bytes: Object.values(files).reduce((n, b) => n + b.length, 0) })));`;
const child = `
  const fs = require('node:fs');
  const { pull } = require(${JSON.stringify(path.join(dist, 'lib', 'hub', 'pull.js'))});
  const t0 = performance.now();
  let converting = null;
  let downloadRss = 0;
  const onProgress = (p) => {
    if (p.phase === 'download') downloadRss = Math.max(downloadRss, process.memoryUsage.rss());
    else if (converting === null) converting = performance.now();
  };
  pull({ repo: 'bench/model', type: process.env.PULL_TYPE, visionType: process.env.PULL_VISION_TYPE, onProgress }).then((r) => {
    const end = performance.now();
    console.log(JSON.stringify({
      seconds: (end - t0) / 1000,
      downloadSeconds: ((converting ?? end) - t0) / 1000,
      convertSeconds: converting === null ? 0 : (end - converting) / 1000,
      downloadedBytes: r.downloadedBytes,
      converted: r.converted,
      pairBytes: fs.statSync(r.model).size + fs.statSync(r.mmproj).size,
      maxRssMB: process.resourceUsage().maxRSS / 1024,
      downloadRssMB: downloadRss / 2 ** 20,
    }));
  }, (e) => { console.error(e); process.exit(1); });`;

function runPull(env) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['-e', child], { env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.trim().split('\n').pop())) : reject(new Error(`the pull exited with ${code}`))));
  });
}

function startServer(checkpoint) {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['-e', serverScript], { env: { ...process.env, CHECKPOINT: checkpoint }, stdio: ['ignore', 'pipe', 'inherit'] });
    p.stdout.once('data', (d) => resolve({ process: p, ...JSON.parse(String(d).trim()) }));
    p.on('exit', (code) => reject(new Error(`the server exited with ${code}`)));
  });
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pg-measure-pull-'));
let server;
try {
  let source = path.join(root, 'test', 'fixtures', 'tiny-v2');
  let label = 'tiny-v2 test checkpoint';
  if (values.synthetic) {
    const layers = Number(positionals[0] ?? 2);
    source = path.join(work, 'synthetic');
    writeSyntheticCheckpoint(source, 224, (l) => console.error(l), { text: { layers }, vision: { layers } });
    label = `synthetic checkpoint at PaliGemma 1 3B widths, ${layers} text + ${layers} vision layers`;
  }
  server = await startServer(source);
  const served = server.bytes;
  const env = {
    ...process.env,
    HF_ENDPOINT: server.url,
    HF_HOME: path.join(work, 'hf'),
    PALIGEMMA_CACHE: path.join(work, 'paligemma'),
    PULL_TYPE: values.type,
    PULL_VISION_TYPE: values['vision-type'],
  };
  for (const k of ['HF_HUB_CACHE', 'HUGGINGFACE_HUB_CACHE', 'HF_TOKEN', 'HF_HUB_OFFLINE', 'XDG_CACHE_HOME']) delete env[k];
  console.log(
    `${label}: ${(served / 1e6).toFixed(1)} MB served over 127.0.0.1; --type ${values.type} --vision-type ${values['vision-type']}; ${os.cpus().length} CPUs`,
  );
  const first = await runPull(env);
  console.log(
    `first pull:  ${first.seconds.toFixed(2)} s = download ${first.downloadSeconds.toFixed(2)} s (${(first.downloadedBytes / 1e6).toFixed(1)} MB) + convert ${first.convertSeconds.toFixed(2)} s (pair ${(first.pairBytes / 1e6).toFixed(1)} MB); peak RSS ${first.maxRssMB.toFixed(0)} MB (${first.downloadRssMB.toFixed(0)} MB while downloading)`,
  );
  const second = await runPull(env);
  console.log(
    `second pull: ${second.seconds.toFixed(2)} s (nothing fetched or converted: ${second.downloadedBytes === 0 && !second.converted}); peak RSS ${second.maxRssMB.toFixed(0)} MB`,
  );
} finally {
  server?.process.removeAllListeners('exit');
  server?.process.kill();
  fs.rmSync(work, { recursive: true, force: true });
}
