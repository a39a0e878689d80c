/**
 * What LoRA adapters cost at run time, at real shapes: a synthetic PEFT adapter (text, vision tower
 * and projector targets) for the synthetic checkpoint, converted with convertLora and loaded twice
 * (A, B). In one process, interleaved: calls without adapters, calls that keep A, and calls that
 * alternate A and B. "Alternating minus keeping" is the price of switching between calls; "keeping
 * minus none" the price of applying an adapter that is not merged (llama.cpp computes x·Aᵀ·Bᵀ beside
 * every adapted matrix; our vision tower does the same).
 */
import fs from 'node:fs';
import path from 'node:path';
import { convertLora } from '../lib/convert/lora';
import type { GenerateOptions } from '../lib/model/options';
import { PaliGemma } from '../lib/model/paligemma';
import type { BenchFiles } from './bench';
import { type SyntheticShapes, TEXT, VISION } from './synthetic';

export interface AdapterBenchResult {
  rank: number;
  adapter_mb: number;
  load_ms: number;
  calls: number;
  /** Medians over `calls` generate calls per mode (image embedding cached per adapter set). */
  none_ms: number;
  keep_ms: number;
  alternate_ms: number;
  switch_ms: number;
  decode_tok_s: { none: number; keep: number; alternate: number };
  prefill_tok_s: { none: number; keep: number; alternate: number };
  /** The vision tower with the adapter's vision targets vs without (embedding cache off). */
  encode_ms: { none: number; adapted: number };
}

/**
 * A PEFT adapter folder for a synthetic checkpoint of these shapes (old module paths, BF16, random
 * values of magnitude about `magnitude`, on every text, vision and projector matrix).
 */
export function writeSyntheticAdapter(dir: string, rank: number, log: (s: string) => void, shapes: SyntheticShapes = {}, magnitude = 1e-3) {
  if (fs.existsSync(path.join(dir, 'adapter_model.safetensors'))) return;
  const { hidden: D, ffn: F, heads: H, kvHeads: KV, headDim: HD, layers: L } = { ...TEXT, ...shapes.text };
  const { hidden: C, ffn: VF, layers: VL } = { ...VISION, ...shapes.vision };
  const exponent = (Math.round(Math.log2(magnitude)) + 127) << 7; // bf16 exponent bits
  const t: [string, number, number][] = []; // module, out, in
  for (let i = 0; i < L; i++) {
    const p = `language_model.model.layers.${i}.`;
    t.push(
      [`${p}self_attn.q_proj`, H * HD, D],
      [`${p}self_attn.k_proj`, KV * HD, D],
      [`${p}self_attn.v_proj`, KV * HD, D],
      [`${p}self_attn.o_proj`, D, H * HD],
      [`${p}mlp.gate_proj`, F, D],
      [`${p}mlp.up_proj`, F, D],
      [`${p}mlp.down_proj`, D, F],
    );
  }
  for (let i = 0; i < VL; i++) {
    const p = `vision_tower.vision_model.encoder.layers.${i}.`;
    for (const m of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) t.push([`${p}self_attn.${m}`, C, C]);
    t.push([`${p}mlp.fc1`, VF, C], [`${p}mlp.fc2`, C, VF]);
  }
  t.push(['multi_modal_projector.linear', D, C]);
  const header: Record<string, unknown> = {};
  const chunks: Buffer[] = [];
  let offset = 0;
  let seed = 4242;
  const random = (n: number) => {
    const b = Buffer.alloc(n * 2);
    for (let i = 0; i < n; i++) {
      seed = (seed * 1103515245 + 12345) >>> 0;
      b.writeUInt16LE(exponent | ((seed >>> 8) & 0x7f) | (seed & 0x10000 ? 0x8000 : 0), i * 2);
    }
    return b;
  };
  for (const [module, out, inDim] of t) {
    for (const [which, shape] of [
      ['A', [rank, inDim]],
      ['B', [out, rank]],
    ] as const) {
      const data = random(shape[0] * shape[1]);
      header[`base_model.model.${module}.lora_${which}.weight`] = { dtype: 'BF16', shape, data_offsets: [offset, offset + data.length] };
      chunks.push(data);
      offset += data.length;
    }
  }
  fs.mkdirSync(dir, { recursive: true });
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeFileSync(path.join(dir, 'adapter_model.safetensors'), Buffer.concat([len, json, ...chunks]));
  fs.writeFileSync(
    path.join(dir, 'adapter_config.json'),
    JSON.stringify({ peft_type: 'LORA', r: rank, lora_alpha: 2 * rank, use_rslora: false, base_model_name_or_path: 'synthetic', target_modules: 'all-linear' }),
  );
  log(`wrote a synthetic rank-${rank} adapter (${(offset / 1e6).toFixed(0)} MB) to ${dir}`);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

export async function measureAdapters(
  files: BenchFiles,
  cacheDir: string,
  threads: number,
  calls: number,
  log: (s: string) => void,
): Promise<AdapterBenchResult> {
  const rank = 16;
  const src = path.join(cacheDir, `synthetic-adapter-r${rank}`);
  writeSyntheticAdapter(src, rank, log);
  const outDir = path.join(cacheDir, 'gguf');
  const converted = path.join(outDir, `synthetic-adapter-r${rank}-lora-f16.gguf`);
  if (!fs.existsSync(converted)) await convertLora({ adapter: src, base: files.model, outDir, type: 'f16' });
  const model = await PaliGemma.load({ model: files.model, mmproj: files.mmproj, threads, gpu: 'auto' });
  try {
    const t0 = performance.now();
    const a = await model.loadAdapter(converted);
    const loadMs = performance.now() - t0;
    const b = await model.loadAdapter(converted);
    const force = Array.from({ length: 16 }, (_, i) => 300 + i);
    const call = async (adapters?: GenerateOptions['adapters']) => {
      const r = await model.generate({
        image: files.image,
        prompt: 'caption en',
        maxTokens: force.length,
        forceTokens: force,
        ...(adapters ? { adapters } : {}),
      });
      const tm = r.timings;
      return { ms: tm.prefillMs + tm.decodeMs, prefill: tm.promptTokens / (tm.prefillMs / 1000), decode: (tm.generatedTokens - 1) / (tm.decodeMs / 1000) };
    };
    // Warm up every adapter set once (its embedding is then cached, so what follows is the LM's part).
    await call();
    await call([a]);
    await call([b]);
    const none: Awaited<ReturnType<typeof call>>[] = [];
    const keep: typeof none = [];
    const alternate: typeof none = [];
    for (let i = 0; i < calls; i++) {
      none.push(await call());
      keep.push(await call([a]));
      keep.push(await call([a]));
      alternate.push(await call([a]));
      alternate.push(await call([b]));
    }
    const encodes = { none: [] as number[], adapted: [] as number[] };
    const noCache = await PaliGemma.load({ model: files.model, mmproj: files.mmproj, threads, gpu: 'auto', imageCacheMB: 0 });
    try {
      const c = await noCache.loadAdapter(converted);
      await noCache.encodeImage(files.warmup);
      for (let i = 0; i < Math.min(calls, 3); i++) {
        let s = performance.now();
        await noCache.encodeImage(files.image);
        encodes.none.push(performance.now() - s);
        s = performance.now();
        await noCache.encodeImage(files.image, { adapters: [c] });
        encodes.adapted.push(performance.now() - s);
      }
    } finally {
      await noCache.dispose();
    }
    const m = (xs: typeof none, k: 'ms' | 'prefill' | 'decode') => median(xs.map((x) => x[k]));
    return {
      rank,
      adapter_mb: a.info.bytes / 1e6,
      load_ms: loadMs,
      calls,
      none_ms: m(none, 'ms'),
      keep_ms: m(keep, 'ms'),
      alternate_ms: m(alternate, 'ms'),
      switch_ms: m(alternate, 'ms') - m(keep, 'ms'),
      decode_tok_s: { none: m(none, 'decode'), keep: m(keep, 'decode'), alternate: m(alternate, 'decode') },
      prefill_tok_s: { none: m(none, 'prefill'), keep: m(keep, 'prefill'), alternate: m(alternate, 'prefill') },
      encode_ms: { none: median(encodes.none), adapted: median(encodes.adapted) },
    };
  } finally {
    await model.dispose();
  }
}
