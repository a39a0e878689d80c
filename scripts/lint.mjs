#!/usr/bin/env node
// The fast gates `npm test` runs first: Biome (TypeScript/JavaScript/JSON lint and format), the
// TypeScript compiler over lib/, test/ and bench/ (tests are type-checked too), clang-format over
// native/ (with the committed .clang-format) and publint over the package. `--fix` rewrites what the
// formatters can.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const fix = process.argv.includes('--fix');

function nativeSources(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) return nativeSources(p);
    return /\.(cpp|h|inc)$/.test(e.name) ? [path.relative(root, p)] : [];
  });
}

function clangFormat() {
  const bin = { linux: 'linux_x64', darwin: 'darwin_x64', win32: 'win32' }[process.platform];
  const exe = path.join(
    path.dirname(require.resolve('clang-format/package.json')),
    'bin',
    bin ?? 'linux_x64',
    process.platform === 'win32' ? 'clang-format.exe' : 'clang-format',
  );
  return [exe, ['--style=file', ...(fix ? ['-i'] : ['--dry-run', '--Werror']), ...nativeSources(path.join(root, 'native'))]];
}

const gates = [
  ['biome', process.execPath, [require.resolve('@biomejs/biome/bin/biome'), fix ? 'check' : 'ci', '--colors=off', ...(fix ? ['--write'] : []), '.']],
  ['tsc', process.execPath, [require.resolve('typescript/bin/tsc'), '--noEmit', '-p', 'tsconfig.json']],
  ['clang-format', ...clangFormat()],
  ['publint', process.execPath, [path.join(root, 'node_modules', 'publint', 'src', 'cli.js'), '--strict', '.']],
];

let failed = 0;
for (const [name, cmd, args] of gates) {
  const t0 = Date.now();
  const res = spawnSync(cmd, args, { cwd: root, encoding: 'utf8' });
  const ok = res.status === 0;
  const output = `${res.stdout ?? ''}${res.stderr ?? ''}`.trim();
  process.stderr.write(`[lint] ${name}: ${ok ? 'ok' : 'FAILED'} (${Date.now() - t0} ms)\n`);
  if (!ok) {
    failed++;
    process.stderr.write(`${output || res.error?.message}\n`);
  }
}
if (failed) {
  process.stderr.write(`[lint] ${failed} gate(s) failed${fix ? '' : '; `npm run lint -- --fix` rewrites what the formatters can'}\n`);
  process.exit(1);
}
