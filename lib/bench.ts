/**
 * `paligemma bench`: PaliGemma at real shapes (SigLIP-So400m + Gemma-2B, random weights) side by
 * side with llama.cpp's own llama-bench on the same text GGUF and threads, interleaved in one run.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from './binding';
import { mtmdCliPath, runMtmdEncode, writeMtmdProjector, type MtmdRun } from './bench-mtmd';
import { convert, type TextType, type VisionType } from './convert/index';
import { PaliGemma } from './model';
import { encodePNG } from './png';

export interface BenchOptions {
  synthetic: 224 | 448 | 896;
  type: TextType;
  visionType: VisionType;
  threads: number;
  reps: number;
  cacheDir: string;
  llamaBench: boolean;
  /** Also time llama.cpp's own SigLIP (llama-mtmd-cli) on the same tower and weight types. */
  mtmd: boolean;
  log: (line: string) => void;
}

export interface BenchRun {
  preprocess_ms: number;
  encode_ms: number;
  prefill_ms: number;
  prompt_tokens: number;
  prefill_tok_s: number;
  decode_tok_s: number;
  ttft_ms: number;
  ttft_cached_ms: number;
  peak_rss_mb: number;
}

// Real shapes: SigLIP-So400m/14 and Gemma-2B (PaliGemma 1 3B).
const VISION = { hidden: 1152, ffn: 4304, layers: 27, heads: 16, patch: 14 };
const TEXT = { hidden: 2048, ffn: 16384, layers: 18, heads: 8, kvHeads: 1, headDim: 256, vocab: 257216 };
const DECODE_TOKENS = 64;

/** Floating-point operations of one image through SigLIP + projector (multiply-adds x 2). */
export function visionFlops(imageSize: number): number {
  const N = (imageSize / VISION.patch) ** 2;
  const C = VISION.hidden;
  const perLayer = 2 * N * (4 * C * C + 2 * C * VISION.ffn) + 2 * 2 * N * N * C;
  return VISION.layers * perLayer + 2 * N * 3 * VISION.patch ** 2 * C + 2 * N * C * TEXT.hidden;
}

/** Floating-point operations per prompt token of the Gemma-2B layers (the embedding lookup is free). */
export function textFlopsPerToken(): number {
  const { hidden: D, ffn: F, layers, heads, kvHeads, headDim } = TEXT;
  return layers * 2 * (D * heads * headDim * 2 + D * kvHeads * headDim * 2 + 3 * D * F);
}

/**
 * Writes a Hugging Face PaliGemma checkpoint with random BF16 weights at real shapes (fewer layers
 * if asked): what the benchmark and scripts/measure-convert-memory.mjs convert.
 */
export interface SyntheticShapes {
  text?: Partial<typeof TEXT>;
  vision?: Partial<typeof VISION>;
}

export function writeSyntheticCheckpoint(dir: string, imageSize: number, log: (s: string) => void, shapes: SyntheticShapes = {}) {
  const tmp = `${dir}.partial`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const text = { ...TEXT, ...shapes.text };
  const vision = { ...VISION, ...shapes.vision };
  const { hidden: D, ffn: F, heads: H, kvHeads: KV, headDim: HD, vocab: V, layers: L } = text;
  const { hidden: C, ffn: VF, patch: P, layers: VL } = vision;
  const N = (imageSize / P) ** 2;
  const t: [string, number[]][] = [['language_model.model.embed_tokens.weight', [V, D]], ['language_model.model.norm.weight', [D]]];
  for (let i = 0; i < L; i++) {
    const p = `language_model.model.layers.${i}.`;
    t.push([`${p}input_layernorm.weight`, [D]], [`${p}post_attention_layernorm.weight`, [D]], [`${p}self_attn.q_proj.weight`, [H * HD, D]],
      [`${p}self_attn.k_proj.weight`, [KV * HD, D]], [`${p}self_attn.v_proj.weight`, [KV * HD, D]], [`${p}self_attn.o_proj.weight`, [D, H * HD]],
      [`${p}mlp.gate_proj.weight`, [F, D]], [`${p}mlp.up_proj.weight`, [F, D]], [`${p}mlp.down_proj.weight`, [D, F]]);
  }
  const vp = 'vision_tower.vision_model.';
  t.push([`${vp}embeddings.patch_embedding.weight`, [C, 3, P, P]], [`${vp}embeddings.patch_embedding.bias`, [C]],
    [`${vp}embeddings.position_embedding.weight`, [N, C]], [`${vp}post_layernorm.weight`, [C]], [`${vp}post_layernorm.bias`, [C]],
    ['multi_modal_projector.linear.weight', [D, C]], ['multi_modal_projector.linear.bias', [D]]);
  for (let i = 0; i < VL; i++) {
    const p = `${vp}encoder.layers.${i}.`;
    for (const x of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) t.push([`${p}self_attn.${x}.weight`, [C, C]], [`${p}self_attn.${x}.bias`, [C]]);
    t.push([`${p}layer_norm1.weight`, [C]], [`${p}layer_norm1.bias`, [C]], [`${p}layer_norm2.weight`, [C]], [`${p}layer_norm2.bias`, [C]],
      [`${p}mlp.fc1.weight`, [VF, C]], [`${p}mlp.fc1.bias`, [VF]], [`${p}mlp.fc2.weight`, [C, VF]], [`${p}mlp.fc2.bias`, [C]]);
  }
  // Small random BF16 values (never NaN/Inf): one 16 MiB pattern, offset per tensor.
  const pattern = Buffer.alloc(16 << 20);
  let seed = 12345;
  for (let i = 0; i < pattern.length; i += 2) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    pattern.writeUInt16LE(0x3c00 | ((seed >>> 8) & 0x3ff) | (seed & 0x10000 ? 0x8000 : 0), i);
  }
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, shape] of t) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 2;
    header[name] = { dtype: 'BF16', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  log(`writing a synthetic ${(offset / 1e9).toFixed(1)} GB checkpoint (${imageSize} px) to ${dir}`);
  const json = Buffer.from(JSON.stringify(header));
  const fd = fs.openSync(path.join(tmp, 'model.safetensors'), 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeSync(fd, len);
  fs.writeSync(fd, json);
  for (let left = offset, k = 0; left > 0; k++) {
    const n = Math.min(left, pattern.length - 2 * (k % 7));
    fs.writeSync(fd, pattern, 2 * (k % 7), n);
    left -= n;
  }
  fs.closeSync(fd);
  const tiny = path.join(packageRoot, 'test', 'fixtures', 'tiny-v1');
  for (const f of ['tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json']) fs.copyFileSync(path.join(tiny, f), path.join(tmp, f));
  fs.writeFileSync(path.join(tmp, 'config.json'), JSON.stringify({
    model_type: 'paligemma', image_token_index: 1572, projection_dim: D,
    text_config: { model_type: 'gemma', hidden_size: D, intermediate_size: F, num_attention_heads: H, num_key_value_heads: KV, head_dim: HD, num_hidden_layers: L, vocab_size: V },
    vision_config: { hidden_size: C, intermediate_size: VF, num_attention_heads: vision.heads, num_hidden_layers: VL, image_size: imageSize, patch_size: P, projection_dim: D },
  }));
  fs.renameSync(tmp, dir);
}

/** A deterministic 640x480 photo-sized test picture. */
function writeTestImage(file: string) {
  const w = 640, h = 480;
  const px = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) px.set([(x * 255) / w, (y * 255) / h, ((x ^ y) & 255)], (y * w + x) * 3);
  fs.writeFileSync(file, encodePNG(px, w, h, 3));
}

export async function prepareBench(o: BenchOptions): Promise<{ model: string; mmproj: string; image: string }> {
  const ckpt = path.join(o.cacheDir, `synthetic-${o.synthetic}`);
  if (!fs.existsSync(ckpt)) writeSyntheticCheckpoint(ckpt, o.synthetic, o.log);
  const outDir = path.join(o.cacheDir, 'gguf');
  const name = `synthetic-${o.synthetic}`;
  const model = path.join(outDir, `${name}-${o.type}.gguf`);
  const mmproj = path.join(outDir, `${name}-mmproj-${o.visionType}.gguf`);
  if (!fs.existsSync(model) || !fs.existsSync(mmproj)) {
    o.log(`converting to ${path.basename(model)} + ${path.basename(mmproj)}`);
    await convert({ input: ckpt, outDir, type: o.type, visionType: o.visionType, name, threads: o.threads });
  }
  const image = path.join(o.cacheDir, 'bench-640x480.png');
  if (!fs.existsSync(image)) writeTestImage(image);
  return { model, mmproj, image };
}

/** One measurement in this process: load, warm up, then time a full generation and a cached one. */
export async function measureOnce(files: { model: string; mmproj: string; image: string }, threads: number): Promise<BenchRun> {
  const model = await PaliGemma.load({ model: files.model, mmproj: files.mmproj, threads, gpu: 'auto', imageCacheMB: 0 });
  try {
    const force = Array.from({ length: DECODE_TOKENS }, (_, i) => 300 + i);
    // Warm-up: one generation first (thread pools started, caches filled).
    await model.generate({ image: files.image, prompt: 'caption en', maxTokens: 4, forceTokens: force.slice(0, 4) });
    // No per-token callbacks while timing: the time to the first token comes from the native timings.
    const r = await model.generate({ image: files.image, prompt: 'caption en', maxTokens: DECODE_TOKENS, forceTokens: force });
    // The same image again as an embedding (what the cache hands over): the vision tower is skipped.
    const emb = await model.encodeImage(files.image);
    const cached = await model.generate({ image: emb, prompt: 'answer en what is this?', maxTokens: 1 });
    const tm = r.timings;
    return {
      preprocess_ms: tm.preprocessMs,
      encode_ms: tm.encodeMs,
      prefill_ms: tm.prefillMs,
      prompt_tokens: tm.promptTokens,
      prefill_tok_s: tm.promptTokens / (tm.prefillMs / 1000),
      decode_tok_s: (tm.generatedTokens - 1) / (tm.decodeMs / 1000),
      ttft_ms: tm.firstTokenMs,
      ttft_cached_ms: cached.timings.firstTokenMs,
      peak_rss_mb: process.resourceUsage().maxRSS / 1024,
    };
  } finally {
    await model.dispose();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

export function llamaBenchPath(): string {
  return path.join(packageRoot, 'native-build', 'llama-tools', 'bin', process.platform === 'win32' ? 'llama-bench.exe' : 'llama-bench');
}

function runLlamaBench(model: string, promptTokens: number, threads: number): { pp: number; tg: number } {
  const res = spawnSync(llamaBenchPath(), ['-m', model, '-p', String(promptTokens), '-n', String(DECODE_TOKENS), '-t', String(threads), '-r', '1', '-lm', 'none', '-o', 'json'], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (res.status !== 0) throw new Error(`llama-bench failed: ${res.stderr.slice(-500)}`);
  const rows = JSON.parse(res.stdout) as { n_prompt: number; n_gen: number; avg_ts: number }[];
  return { pp: rows.find((r) => r.n_prompt > 0)!.avg_ts, tg: rows.find((r) => r.n_gen > 0)!.avg_ts };
}

/** Builds llama.cpp's tools from the pinned source if one that is needed is missing. */
function ensureLlamaTools(o: BenchOptions) {
  const missing = [o.llamaBench && llamaBenchPath(), o.mtmd && mtmdCliPath()].filter((f): f is string => !!f && !fs.existsSync(f));
  if (!missing.length) return;
  o.log(`building ${missing.map((f) => path.basename(f)).join(' and ')} from the pinned llama.cpp (once)`);
  const b = spawnSync(process.execPath, [path.join(packageRoot, 'scripts', 'build-llama-tools.mjs'), 'llama-bench', 'llama-mtmd-cli'], { stdio: ['ignore', 'ignore', 'inherit'] });
  if (b.status !== 0) throw new Error(`could not build ${missing.map((f) => path.basename(f)).join(', ')}`);
}

/** Runs ours, llama-bench and mtmd alternately `reps` times; returns medians and ratios. */
export async function runBench(o: BenchOptions) {
  const files = await prepareBench(o);
  ensureLlamaTools(o);
  let mtmdProjector = '';
  if (o.mtmd) {
    mtmdProjector = files.mmproj.replace(/\.gguf$/, '-as-gemma3.gguf');
    if (!fs.existsSync(mtmdProjector)) await writeMtmdProjector(files.mmproj, mtmdProjector);
  }
  const ours: BenchRun[] = [];
  const lb: { pp: number; tg: number }[] = [];
  const mt: MtmdRun[] = [];
  for (let i = 0; i < o.reps; i++) {
    // Each of our runs is a fresh process, so peak RSS is per run.
    const child = spawnSync(process.execPath, [path.join(__dirname, 'cli.js'), 'bench-child', JSON.stringify({ files, threads: o.threads })], { encoding: 'utf8', maxBuffer: 1 << 24 });
    if (child.status !== 0) throw new Error(`benchmark run failed: ${child.stderr.slice(-1000)}`);
    const run = JSON.parse(child.stdout.trim().split('\n').pop()!) as BenchRun;
    ours.push(run);
    o.log(`run ${i + 1}/${o.reps}: encode ${run.encode_ms.toFixed(0)} ms, prefill ${run.prefill_tok_s.toFixed(1)} tok/s, decode ${run.decode_tok_s.toFixed(2)} tok/s`);
    if (o.llamaBench) {
      lb.push(runLlamaBench(files.model, run.prompt_tokens, o.threads));
      o.log(`          llama-bench: pp${run.prompt_tokens} ${lb.at(-1)!.pp.toFixed(1)} tok/s, tg${DECODE_TOKENS} ${lb.at(-1)!.tg.toFixed(2)} tok/s`);
    }
    if (o.mtmd) {
      mt.push(runMtmdEncode(files.model, mtmdProjector, files.image, o.threads));
      o.log(`          llama.cpp mtmd: encode ${mt.at(-1)!.encode_ms} ms`);
    }
  }
  const m = (k: keyof BenchRun) => median(ours.map((r) => r[k]));
  const encodeMs = m('encode_ms');
  const visionGflops = visionFlops(o.synthetic) / (encodeMs / 1000) / 1e9;
  const result: Record<string, unknown> = {
    config: { image_size: o.synthetic, type: o.type, vision_type: o.visionType, threads: o.threads, reps: o.reps, weights: 'ours: text read into memory (CPU default), warmed up just before timing; llama-bench: -lm none (read into memory); mtmd: read into memory by its loader, flash attention on' },
    machine: { cpu: os.cpus()[0]?.model ?? 'unknown', cores: os.cpus().length, platform: `${process.platform}-${process.arch}` },
    preprocess_ms: m('preprocess_ms'),
    encode_ms: encodeMs,
    prefill_tok_s: m('prefill_tok_s'),
    decode_tok_s: m('decode_tok_s'),
    ttft_ms: m('ttft_ms'),
    ttft_cached_ms: m('ttft_cached_ms'),
    prompt_tokens: ours[0]!.prompt_tokens,
    peak_rss_mb: m('peak_rss_mb'),
    weights_mb: (fs.statSync(files.model).size + fs.statSync(files.mmproj).size) / 1048576,
    vision_gflop_s: visionGflops,
    ttft_over_encode_plus_prefill: m('ttft_ms') / (encodeMs + m('prefill_ms') + m('preprocess_ms')),
    preprocess_share_of_ttft: m('preprocess_ms') / m('ttft_ms'),
  };
  if (lb.length) {
    const pp = median(lb.map((x) => x.pp));
    const tg = median(lb.map((x) => x.tg));
    const ppGflops = (pp * textFlopsPerToken()) / 1e9;
    Object.assign(result, {
      llama_bench: { pp_tok_s: pp, tg_tok_s: tg, pp_gflop_s: ppGflops },
      prefill_ratio: (result.prefill_tok_s as number) / pp,
      decode_ratio: (result.decode_tok_s as number) / tg,
      vision_vs_prefill_gflops_ratio: visionGflops / ppGflops,
    });
  }
  if (mt.length) {
    const mtmdMs = median(mt.map((x) => x.encode_ms));
    Object.assign(result, {
      mtmd: { encode_ms: mtmdMs, gflop_s: visionFlops(o.synthetic) / (mtmdMs / 1000) / 1e9 },
      vision_speedup_vs_mtmd: mtmdMs / encodeMs,
    });
  }
  return result;
}
