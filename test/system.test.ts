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

// The portable binary (what the package ships): ggml's CPU backend comes as one library per CPU
// generation beside the addon, and the core must load the best this CPU runs, not a baseline.
const loaded = path.dirname(require(path.join(__dirname, '..', 'dist', 'native', 'binding.js')).getBinding().file as string);
const portable = fs.readdirSync(loaded).some((f) => f.startsWith('libggml-cpu-'));

t.test('the portable binary loads the best CPU variant beside it', { skip: !portable && 'a native (single-CPU) build is loaded' }, async (t) => {
  const info = await systemInfo();
  t.ok(fs.existsSync(path.join(loaded, `libggml-cpu-${info.cpuVariant}.so`)), `variant ${info.cpuVariant} is a library beside the addon`);
  if (process.platform === 'linux' && process.arch === 'x64') {
    const flags = new Set((/^flags\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '').trim().split(/\s+/));
    // What the CPU has, the loaded variant must use (ggml reports the variant's compiled features).
    const expect: [string, string][] = [
      ['avx2', 'AVX2'],
      ['fma', 'FMA'],
      ['avx512f', 'AVX512'],
      ['avx512_vnni', 'AVX512_VNNI'],
    ];
    for (const [flag, feature] of expect) {
      if (flags.has(flag)) t.equal(info.cpuFeatures[feature], '1', `the CPU has ${flag}: variant ${info.cpuVariant} uses ${feature}`);
    }
  }
});

t.test('a portable binary without its CPU libraries says so instead of crashing', { skip: !portable && 'a native build is loaded' }, async (t) => {
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'pg-nocpu-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  for (const f of fs.readdirSync(loaded))
    if (!f.startsWith('libggml-cpu-') && (f.endsWith('.node') || /\.so(\.\d+)?$/.test(f))) fs.copyFileSync(path.join(loaded, f), path.join(dir, f));
  const addon = fs.readdirSync(dir).find((f) => f.endsWith('.node'))!;
  const { convertedFixture } = require('./helpers/fixtures') as typeof import('./helpers/fixtures');
  const pair = await convertedFixture('tiny-v1');
  const script = `
    const { PaliGemma } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
    PaliGemma.load(${JSON.stringify(pair)}).then(() => console.log('LOADED'), (e) => console.log('ERR', e.code, e.message));`;
  const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, PALIGEMMA_NODE_BINARY: path.join(dir, addon) } });
  t.equal(res.status, 0, res.stderr);
  t.match(res.stdout, /ERR ERR_BACKEND no CPU backend: none of the libggml-cpu-\*\.so libraries in .*pg-nocpu-.* loads on this CPU/);
});

// PALIGEMMA_CPU_VARIANT runs the process as a CPU of another kind would: ggml's library for it, and
// our own kernels limited to what that library has; a name that cannot be honoured refuses the load.
t.test('PALIGEMMA_CPU_VARIANT chooses the CPU library, and a wrong one is refused', { skip: !portable && 'a native build is loaded' }, async (t) => {
  const { convertedFixture } = require('./helpers/fixtures') as typeof import('./helpers/fixtures');
  const pair = await convertedFixture('tiny-v1');
  const run = (variant: string, options: Record<string, string> = {}) => {
    const script = `
      const { PaliGemma, systemInfo } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      (async () => {
        const info = await systemInfo();
        console.log('VARIANT', info.cpuVariant, 'AVX512', info.cpuFeatures.AVX512 ?? '-');
        const m = await PaliGemma.load({ ...${JSON.stringify(pair)}, gpu: 'cpu', ...${JSON.stringify(options)} });
        console.log('LOADED', m.info.visionAttention, m.info.visionMatmul);
        await m.dispose();
      })().catch((e) => console.log('ERR', e.code, e.message));`;
    return spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env: { ...process.env, PALIGEMMA_CPU_VARIANT: variant } });
  };
  const wrong = run('no-such-cpu');
  t.equal(wrong.status, 0, wrong.stderr);
  t.match(wrong.stdout, /ERR ERR_BACKEND PALIGEMMA_CPU_VARIANT is 'no-such-cpu', but libggml-cpu-no-such-cpu\.so in .* is missing or does not run on this CPU/);
  const info = await systemInfo();
  if (process.arch !== 'x64' || info.cpuFeatures.AVX2 !== '1' || !fs.existsSync(path.join(loaded, 'libggml-cpu-haswell.so'))) {
    t.comment('skipped the haswell half: not an x86-64 CPU with AVX2, or no haswell library');
    return;
  }
  const haswell = run('haswell');
  t.equal(haswell.status, 0, haswell.stderr);
  t.match(haswell.stdout, /VARIANT haswell AVX512 -/, 'the AVX2 library runs, without AVX-512');
  // Our kernels follow the library: never the 512-bit attention or the AVX-512 VNNI product.
  t.match(haswell.stdout, /LOADED (fused|separate|tiled-avx2|int16-avx2) ggml/);
  const noVnni = run('haswell', { visionMatmul: 'int8-avxvnni' });
  t.match(
    noVnni.stdout,
    /ERR ERR_INVALID_ARGUMENT visionMatmul 'int8-avxvnni' needs the CPU backend on a CPU with AVX-VNNI/,
    'no AVX-VNNI product in the AVX2 library',
  );
  // (That our int8 product runs there as its AVX2 form is in test/kernels.test.ts, on q8_0 weights.)
});
