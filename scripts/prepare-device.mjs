#!/usr/bin/env node
// Prepares device/ for scripts/gpu-check.sh on a GPU machine that has no Node and no network:
// a trimmed copy of the pinned llama.cpp source (no .git, docs, models, tests, unused backends),
// the tiny fixtures converted to f32 GGUF pairs, and their reference outputs. Stays under 64 MiB.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { resolveLlamaSource } from './llama-source.mjs';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const out = path.join(root, 'device');
const { convert } = await import(path.join(root, 'dist', 'index.js'));

const SKIP = new Set([
  '.git',
  '.github',
  'docs',
  'models',
  'tests',
  'examples',
  'gguf-py',
  'media',
  'app',
  'benches',
  'ci',
  'pocs',
  'grammars',
  'requirements',
  'scripts',
  'skills',
  'conversion',
  'licenses',
  'vendor/cpp-httplib',
  'tools/server',
  'tools/mtmd',
  'tools/ui',
  'ggml/src/ggml-vulkan',
  'ggml/src/ggml-sycl',
  'ggml/src/ggml-opencl',
  'ggml/src/ggml-cann',
  'ggml/src/ggml-musa',
  'ggml/src/ggml-hip',
  'ggml/src/ggml-webgpu',
  'ggml/src/ggml-zdnn',
  'ggml/src/ggml-metal',
  'ggml/src/ggml-rpc',
  'ggml/src/ggml-openvino',
  'ggml/src/ggml-hexagon',
  'ggml/src/ggml-zendnn',
  'ggml/src/ggml-virtgpu',
]);

function copyTree(src, dst, rel = '') {
  fs.mkdirSync(dst, { recursive: true });
  for (const e of fs.readdirSync(src, { withFileTypes: true })) {
    const r = rel ? `${rel}/${e.name}` : e.name;
    if (SKIP.has(r)) continue;
    const s = path.join(src, e.name);
    const d = path.join(dst, e.name);
    if (e.isDirectory()) copyTree(s, d, r);
    else if (e.isFile()) fs.copyFileSync(s, d);
  }
}

fs.rmSync(out, { recursive: true, force: true });
copyTree(resolveLlamaSource(), path.join(out, 'llama.cpp'));
for (const fixture of ['tiny-v1', 'tiny-v2']) {
  await convert({ input: path.join(root, 'test', 'fixtures', fixture), outDir: path.join(out, 'models'), type: 'f32' });
  fs.cpSync(path.join(root, 'test', 'fixtures', fixture, 'reference'), path.join(out, 'reference', fixture), { recursive: true });
}
let bytes = 0;
const walk = (d) => {
  for (const e of fs.readdirSync(d, { withFileTypes: true })) {
    const p = path.join(d, e.name);
    if (e.isDirectory()) walk(p);
    else bytes += fs.statSync(p).size;
  }
};
walk(out);
console.log(`device/: ${(bytes / 1048576).toFixed(1)} MiB; copy the checkout with device/ to the GPU machine and run scripts/gpu-check.sh there`);
if (bytes > 60 * 1048576) process.exit(1);
