/**
 * The memory check before a load: weights (both files) + the KV cache of the context asked for,
 * against what the system (and a container's cgroup limit) has available, or the GPU the model goes to.
 * A model that cannot fit is refused with the figures, before anything is allocated.
 */
import fs from 'node:fs';
import os from 'node:os';
import { PaliGemmaError } from '../errors';
import { readGGUF } from '../gguf/read';
import type { NativeBinding, NativeDeviceInfo, NativeLoadOptions } from '../native/contract';

const MB = 1024 * 1024;

/** Bytes available to this process, and where the figure comes from; null where it cannot be known well. */
export function availableMemory(): { bytes: number; source: string } | null {
  const forced = process.env.PALIGEMMA_MEMORY_AVAILABLE_MB;
  if (forced !== undefined && forced !== '') {
    const mb = Number(forced);
    if (!Number.isFinite(mb) || mb < 0) throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `PALIGEMMA_MEMORY_AVAILABLE_MB=${forced}: expected a number of MiB`);
    return { bytes: mb * MB, source: 'PALIGEMMA_MEMORY_AVAILABLE_MB' };
  }
  if (process.platform === 'linux') {
    let best: { bytes: number; source: string } | null = null;
    const meminfo = readText('/proc/meminfo');
    const m = meminfo && /^MemAvailable:\s+(\d+) kB/m.exec(meminfo);
    if (m) best = { bytes: Number(m[1]) * 1024, source: 'MemAvailable in /proc/meminfo' };
    // A container's limit (cgroup v2), which MemAvailable does not see.
    const max = readText('/sys/fs/cgroup/memory.max')?.trim();
    const current = Number(readText('/sys/fs/cgroup/memory.current')?.trim());
    if (max && max !== 'max' && Number.isFinite(Number(max)) && Number.isFinite(current)) {
      const left = Number(max) - current;
      if (!best || left < best.bytes) best = { bytes: Math.max(0, left), source: 'the cgroup memory limit (memory.max)' };
    }
    return best;
  }
  // macOS's free figure leaves out memory the system would hand over (inactive pages): no check there.
  if (process.platform === 'win32') return { bytes: os.freemem(), source: 'free physical memory' };
  return null;
}

function readText(file: string): string | null {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

/** Bytes of a KV cache: per token, layer and KV head one key and one value (their lengths summed). */
export function kvCacheBytes(tokens: number, layers: number, kvHeads: number, keyPlusValueLength: number, bytesPerElement: number): number {
  return tokens * layers * kvHeads * keyPlusValueLength * bytesPerElement;
}

/** The device the weights go to when they are all offloaded to a GPU: the first of the backend asked for. */
function offloadDevice(native: NativeLoadOptions, devices: NativeDeviceInfo[]): NativeDeviceInfo | undefined {
  if (native.gpu === 'cpu') return undefined;
  return devices.find((d) => d.type !== 'cpu' && (native.gpu === undefined || native.gpu === 'auto' || d.backend.toLowerCase().includes(native.gpu)));
}

/**
 * Throws ERR_OUT_OF_MEMORY when the model evidently cannot fit; returns the estimate otherwise.
 * With every layer on a GPU, the GPU's free memory is the limit; with some layers (gpuLayers), the
 * split between host and device is llama.cpp's to make, and no figure is checked.
 */
export async function checkMemory(native: NativeLoadOptions, binding: Pick<NativeBinding, 'systemInfo'>): Promise<number | null> {
  let available: { bytes: number; source: string } | null;
  let where = '';
  const { backends } = await binding.systemInfo();
  const gpu = offloadDevice(native, backends);
  if (gpu) {
    if (native.gpuLayers !== undefined) return null;
    available = gpuMemory(gpu);
    where = ` on ${gpu.description || gpu.name}`;
  } else {
    available = availableMemory();
  }
  if (!available) return null;
  const weights = fs.statSync(native.model).size + fs.statSync(native.mmproj).size;
  const md = (await readGGUF(native.model, { maxArrayLength: 0 })).metadata;
  const arch = String(md['general.architecture']);
  const n = (key: string) => (typeof md[`${arch}.${key}`] === 'number' ? (md[`${arch}.${key}`] as number) : 0);
  // The context the runtime picks without contextSize is image tokens + 512; 768 is the least of those.
  const ctx = native.contextSize ?? 768;
  const kvBytesPerElement = native.kvCacheType === 'f32' ? 4 : 2;
  const kv = kvCacheBytes(ctx, n('block_count'), n('attention.head_count_kv'), n('attention.key_length') + n('attention.value_length'), kvBytesPerElement);
  const need = weights + kv;
  if (need > available.bytes) {
    throw new PaliGemmaError(
      'ERR_OUT_OF_MEMORY',
      `${native.model}: the model needs about ${Math.ceil(need / MB)} MiB${where} (weights ${Math.ceil(weights / MB)} MiB + KV cache ${Math.ceil(kv / MB)} MiB for ${ctx} tokens), ` +
        `but ${Math.floor(available.bytes / MB)} MiB are available (${available.source}); ` +
        `use a smaller weight type${gpu ? ", fewer layers on the GPU (gpuLayers), gpu: 'cpu'" : ''}, free memory, or pass memoryCheck: false`,
    );
  }
  return need;
}

/** A GPU's free memory (PALIGEMMA_GPU_MEMORY_AVAILABLE_MB overrides it); null where the backend reports none. */
function gpuMemory(device: NativeDeviceInfo): { bytes: number; source: string } | null {
  const forced = process.env.PALIGEMMA_GPU_MEMORY_AVAILABLE_MB;
  if (forced !== undefined && forced !== '') {
    const mb = Number(forced);
    if (!Number.isFinite(mb) || mb < 0)
      throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `PALIGEMMA_GPU_MEMORY_AVAILABLE_MB=${forced}: expected a number of MiB`);
    return { bytes: mb * MB, source: 'PALIGEMMA_GPU_MEMORY_AVAILABLE_MB' };
  }
  if (!(device.memoryTotal > 0)) return null;
  return { bytes: device.memoryFree, source: `free memory of ${device.name}` };
}
