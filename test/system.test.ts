import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { systemInfo } from '../lib/index';

t.test('systemInfo describes the build and the CPU device', async (t) => {
  const info = await systemInfo();
  t.match(info.llamaCppCommit, /^[0-9a-f]{40}$/, 'llama.cpp commit is a git hash');
  t.ok(info.backends.length >= 1, 'at least one device');
  const cpu = info.backends.find((d) => d.type === 'cpu');
  t.ok(cpu, 'a CPU device is listed');
  t.equal(cpu!.backend, 'CPU');
  t.ok(cpu!.memoryTotal > 0, 'CPU device reports memory');
  t.ok(Number.isInteger(info.defaultThreads) && info.defaultThreads >= 1, 'defaultThreads is a positive integer');
  t.ok(info.defaultThreads <= info.logicalCpus, 'physical cores <= logical CPUs');
  t.type(info.cpuFeatures, 'object');
  if (process.arch === 'x64') t.ok('AVX2' in info.cpuFeatures || 'SSE3' in info.cpuFeatures, 'x86 features are reported');
  t.equal(info.binary.variant, 'cpu');
  t.match(info.binary.path, /\.node$/);
});

t.test('a GPU binary that cannot load falls back to the CPU one and says why', (t) => {
  const root = path.join(__dirname, '..');
  const dir = path.join(root, 'build', 'Release-vulkan');
  if (fs.existsSync(path.join(dir, 'paligemma.node'))) {
    t.comment('skipped: a real Vulkan build is present');
    return t.end();
  }
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'paligemma.node'), 'not a shared library');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const script = `
    process.on('warning', (w) => console.log('WARN', w.code, w.message));
    const b = require(${JSON.stringify(path.join(root, 'dist', 'native', 'binding.js'))}).getBinding('vulkan');
    console.log('VARIANT', b.variant);`;
  const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
  t.equal(res.status, 0, res.stderr);
  t.match(res.stdout, /VARIANT cpu/);
  t.match(res.stdout, /WARN PALIGEMMA_GPU_FALLBACK .*Release-vulkan[\\/]paligemma\.node: .*(invalid ELF header|not a valid|too short|file too short)/);
  t.end();
});
