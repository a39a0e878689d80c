// The memory check before a load: a model that cannot fit is refused with the estimate, before
// anything is allocated. The limit is faked with PALIGEMMA_MEMORY_AVAILABLE_MB.
import fs from 'node:fs';
import t from 'tap';
import { PaliGemma } from '../lib/index';
import { availableMemory, checkMemory } from '../lib/model/memory';
import { getBinding } from '../lib/native/binding';
import { convertedFixture } from './helpers/fixtures';

t.test('a model larger than the memory available is refused with the figures; memoryCheck: false skips it', async (t) => {
  const files = await convertedFixture('tiny-v2');
  const weightsMiB = (fs.statSync(files.model).size + fs.statSync(files.mmproj).size) / (1 << 20);
  t.teardown(() => {
    delete process.env.PALIGEMMA_MEMORY_AVAILABLE_MB;
  });
  const heapBefore = getBinding().binding.nativeHeapBytes();
  process.env.PALIGEMMA_MEMORY_AVAILABLE_MB = String(weightsMiB / 2);
  await t.rejects(PaliGemma.load({ ...files, gpu: 'cpu' }), {
    code: 'ERR_OUT_OF_MEMORY',
    message:
      /tiny-v2-f32\.gguf: the model needs about \d+ MiB \(weights \d+ MiB \+ KV cache \d+ MiB for 768 tokens\), but \d+ MiB are available \(PALIGEMMA_MEMORY_AVAILABLE_MB\)/,
  });
  await t.rejects(PaliGemma.load({ ...files, gpu: 'cpu', contextSize: 2048 }), { message: /for 2048 tokens/ }, 'the KV cache of the context asked for counts');
  const heapAfter = getBinding().binding.nativeHeapBytes();
  if (heapBefore >= 0) t.ok(heapAfter - heapBefore < 1 << 20, `refused before allocating (C heap grew ${heapAfter - heapBefore} bytes)`);
  const m = await PaliGemma.load({ ...files, gpu: 'cpu', memoryCheck: false });
  t.equal(m.info.family, 'paligemma2', 'memoryCheck: false loads it anyway');
  await m.dispose();
  process.env.PALIGEMMA_MEMORY_AVAILABLE_MB = String(weightsMiB * 4 + 64);
  const ok = await PaliGemma.load({ ...files, gpu: 'cpu' });
  t.ok(ok, 'with enough memory it loads');
  await ok.dispose();
  process.env.PALIGEMMA_MEMORY_AVAILABLE_MB = 'lots';
  await t.rejects(PaliGemma.load({ ...files, gpu: 'cpu' }), { code: 'ERR_INVALID_ARGUMENT', message: /PALIGEMMA_MEMORY_AVAILABLE_MB=lots/ });
  await t.rejects(PaliGemma.load({ ...files, gpu: 'cpu', memoryCheck: 'no' as never }), { code: 'ERR_INVALID_ARGUMENT', message: /options\.memoryCheck/ });
  delete process.env.PALIGEMMA_MEMORY_AVAILABLE_MB;
  const real = availableMemory();
  if (process.platform === 'linux') t.ok(real && real.bytes > 0, `this machine: ${real && Math.round(real.bytes / (1 << 20))} MiB available (${real?.source})`);
});

t.test('with every layer on a GPU, the GPU memory is the limit', async (t) => {
  const files = await convertedFixture('tiny-v2');
  const weights = fs.statSync(files.model).size + fs.statSync(files.mmproj).size;
  const cpu = { name: 'CPU', description: 'a CPU', type: 'cpu' as const, backend: 'CPU', memoryFree: 1e12, memoryTotal: 1e12 };
  const gpu = (free: number, total = 1e11) => ({
    name: 'CUDA0',
    description: 'a big GPU',
    type: 'gpu' as const,
    backend: 'CUDA',
    memoryFree: free,
    memoryTotal: total,
  });
  const system = (...backends: (typeof cpu | ReturnType<typeof gpu>)[]) => ({
    systemInfo: async () => ({ llamaCppCommit: '', backends, cpuFeatures: {}, cpuVariant: '', defaultThreads: 1, logicalCpus: 1 }),
  });
  t.teardown(() => {
    delete process.env.PALIGEMMA_GPU_MEMORY_AVAILABLE_MB;
  });
  await t.rejects(checkMemory({ ...files, gpu: 'auto' }, system(cpu, gpu(weights / 2))), {
    code: 'ERR_OUT_OF_MEMORY',
    message:
      /needs about \d+ MiB on a big GPU .* are available \(free memory of CUDA0\); use a smaller weight type, fewer layers on the GPU \(gpuLayers\), gpu: 'cpu'/,
  });
  t.ok(((await checkMemory({ ...files, gpu: 'cuda' }, system(cpu, gpu(weights * 4)))) ?? 0) > weights, 'fits: the estimate is returned');
  t.equal(await checkMemory({ ...files, gpu: 'auto', gpuLayers: 3 }, system(cpu, gpu(1))), null, 'a partial offload is not checked');
  t.equal(await checkMemory({ ...files, gpu: 'auto' }, system(cpu, gpu(0, 0))), null, 'a backend that reports no memory is not checked');
  process.env.PALIGEMMA_GPU_MEMORY_AVAILABLE_MB = '1';
  await t.rejects(checkMemory({ ...files, gpu: 'auto' }, system(cpu, gpu(1e11))), { message: /\(PALIGEMMA_GPU_MEMORY_AVAILABLE_MB\)/ });
  process.env.PALIGEMMA_GPU_MEMORY_AVAILABLE_MB = 'x';
  await t.rejects(checkMemory({ ...files, gpu: 'auto' }, system(cpu, gpu(1e11))), {
    code: 'ERR_INVALID_ARGUMENT',
    message: /PALIGEMMA_GPU_MEMORY_AVAILABLE_MB=x/,
  });
  // gpu: 'vulkan' with only a CUDA device, or gpu: 'cpu': the host's memory is the limit.
  process.env.PALIGEMMA_MEMORY_AVAILABLE_MB = '1';
  t.teardown(() => {
    delete process.env.PALIGEMMA_MEMORY_AVAILABLE_MB;
  });
  await t.rejects(checkMemory({ ...files, gpu: 'vulkan' }, system(cpu, gpu(1e11))), { message: /\(PALIGEMMA_MEMORY_AVAILABLE_MB\)/ });
  await t.rejects(checkMemory({ ...files, gpu: 'cpu' }, system(cpu, gpu(1e11))), { message: /\(PALIGEMMA_MEMORY_AVAILABLE_MB\)/ });
});
