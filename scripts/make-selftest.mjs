#!/usr/bin/env node
// Writes selftest/: the tiny PaliGemma 1 fixture converted to an f32 GGUF pair, with the reference
// outputs of three cases, for `paligemma selftest` in an installed package (which ships this
// folder, not the Hugging Face checkpoint). Needs the compiled lib (dist/) and the addon.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fixture = path.join(root, 'test', 'fixtures', 'tiny-v1');
const out = path.join(root, 'selftest');
const CASES = 3;

const { convert } = await import(path.join(root, 'dist', 'index.js'));
const tmp = `${out}.partial`;
fs.rmSync(tmp, { recursive: true, force: true });
fs.mkdirSync(tmp, { recursive: true });
const files = await convert({ input: fixture, outDir: tmp, type: 'f32', name: 'tiny-v1' });
const ref = JSON.parse(fs.readFileSync(path.join(fixture, 'reference', 'reference.json'), 'utf8'));
const cases = ref.cases.slice(0, CASES).map(({ name, image, prompt, greedy_ids, logits_shape }) => ({ name, image, prompt, greedy_ids, logits_shape }));
for (const c of cases) {
  fs.copyFileSync(path.join(fixture, 'reference', `${c.name}.logits.f32`), path.join(tmp, `${c.name}.logits.f32`));
  fs.copyFileSync(path.join(fixture, 'reference', `${c.image}.png`), path.join(tmp, `${c.image}.png`));
}
const manifest = { model: path.basename(files.model), mmproj: path.basename(files.mmproj), source: 'test/fixtures/tiny-v1', cases };
fs.writeFileSync(path.join(tmp, 'selftest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
fs.rmSync(out, { recursive: true, force: true });
fs.renameSync(tmp, out);
const bytes = fs.readdirSync(out).reduce((n, f) => n + fs.statSync(path.join(out, f)).size, 0);
console.error(`[make-selftest] ${path.relative(root, out)}/: ${fs.readdirSync(out).length} files, ${(bytes / 1e6).toFixed(1)} MB`);
