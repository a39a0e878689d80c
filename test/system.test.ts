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

t.test('systemInfo does not block the event loop', async (t) => {
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  const p = systemInfo();
  t.type(p.then, 'function', 'returns a promise');
  await p;
  clearInterval(timer);
  t.pass(`resolved after ${ticks} timer ticks`);
});
