/**
 * The benchmark: PaliGemma at real shapes (SigLIP-So400m + Gemma-2B, random weights) side by side
 * with llama.cpp's own llama-bench on the same text GGUF and threads, and llama.cpp's own SigLIP
 * (mtmd) on the same tower, interleaved in one run. Every result names the CPU it ran on.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { convert, type TextType, type VisionType } from '../lib/convert/index';
import { encodePNG } from '../lib/image/png';
import { PaliGemma } from '../lib/model/paligemma';
import { systemInfo } from '../lib/system';
import { type MtmdRun, runMtmdEncode, writeMtmdProjector } from './mtmd';
import { CHECKOUT, llamaToolPath } from './paths';
import { textFlopsPerToken, visionFlops, writeSyntheticCheckpoint } from './synthetic';

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
  /** Another build of our addon (a .node file) to time alternately with the default one. */
  compareBinary?: string;
  /** A folder with llama-bench and llama-mtmd-cli built otherwise (say, for an older instruction set). */
  llamaTools?: string;
  log: (line: string) => void;
}

export interface BenchFiles {
  model: string;
  mmproj: string;
  image: string;
  /** A second picture for the warm-up, so the timed run's image is not in the embedding cache. */
  warmup: string;
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
  /** What the load-time measurement chose for the vision tower on this machine. */
  kernels: { vision_attention: string; vision_matmul: string; text_matmul: string };
  /** Which ggml CPU backend ran ('built in' for a native build, else the variant loaded). */
  cpu_variant: string;
  /** The addon file that ran. */
  binary: string;
}

const DECODE_TOKENS = 64;

/** A deterministic photo-sized test picture (`flip` gives a second, different one). */
function writeTestImage(file: string, flip = false) {
  const w = 640;
  const h = 480;
  const px = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const xx = flip ? w - 1 - x : x;
      px.set([(xx * 255) / w, (y * 255) / h, (xx ^ y) & 255], (y * w + x) * 3);
    }
  }
  fs.writeFileSync(file, encodePNG(px, w, h, 3));
}

export async function prepareBench(o: Pick<BenchOptions, 'synthetic' | 'type' | 'visionType' | 'threads' | 'cacheDir' | 'log'>): Promise<BenchFiles> {
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
  const warmup = path.join(o.cacheDir, 'bench-640x480-warmup.png');
  if (!fs.existsSync(image)) writeTestImage(image);
  if (!fs.existsSync(warmup)) writeTestImage(warmup, true);
  return { model, mmproj, image, warmup };
}

/** One measurement in this process: load, warm up, then time a full generation and one on the cached image. */
export async function measureOnce(files: BenchFiles, threads: number): Promise<BenchRun> {
  const model = await PaliGemma.load({ model: files.model, mmproj: files.mmproj, threads, gpu: 'auto' });
  try {
    const force = Array.from({ length: DECODE_TOKENS }, (_, i) => 300 + i);
    // Warm-up on another picture (thread pools started, caches filled).
    await model.generate({ image: files.warmup, prompt: 'caption en', maxTokens: 4, forceTokens: force.slice(0, 4) });
    // No per-token callbacks while timing: the time to the first token comes from the native timings.
    const r = await model.generate({ image: files.image, prompt: 'caption en', maxTokens: DECODE_TOKENS, forceTokens: force });
    // Another question about the same picture: its embedding comes from the cache, the tower is skipped.
    const cached = await model.generate({ image: files.image, prompt: 'answer en what is this?', maxTokens: 1 });
    if (r.timings.imageCached || !cached.timings.imageCached) throw new Error('the embedding cache did not behave as the benchmark expects');
    const tm = r.timings;
    const info = await systemInfo();
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
      kernels: { vision_attention: model.info.visionAttention, vision_matmul: model.info.visionMatmul, text_matmul: model.info.textMatmul },
      cpu_variant: info.cpuVariant,
      binary: info.binary.path,
    };
  } finally {
    await model.dispose();
  }
}

function countChoices(choices: string[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const c of choices) counts[c] = (counts[c] ?? 0) + 1;
  return counts;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
}

/**
 * llama-bench's prefill of the same prompt length, and its decode at the same KV depth as ours
 * (`-d`: our decode follows a prompt of that many tokens, and attention over it costs time).
 */
function runLlamaBench(model: string, promptTokens: number, threads: number, toolsDir?: string): { pp: number; tg: number } {
  const run = (tokens: string[]) => {
    const args = ['-m', model, ...tokens, '-t', String(threads), '-r', '1', '-lm', 'none', '-o', 'json'];
    const res = spawnSync(llamaToolPath('llama-bench', toolsDir), args, { encoding: 'utf8', maxBuffer: 1 << 24 });
    if (res.status !== 0) throw new Error(`llama-bench failed: ${res.stderr.slice(-500)}`);
    const rows = JSON.parse(res.stdout) as { avg_ts: number }[];
    if (rows.length !== 1) throw new Error(`llama-bench printed ${rows.length} results, expected 1`);
    return rows[0]!.avg_ts;
  };
  return {
    pp: run(['-p', String(promptTokens), '-n', '0']),
    tg: run(['-p', '0', '-n', String(DECODE_TOKENS), '-d', String(promptTokens)]),
  };
}

/** Builds llama.cpp's tools from the pinned source if one that is needed is missing. */
function ensureLlamaTools(o: BenchOptions) {
  const missing = [o.llamaBench && llamaToolPath('llama-bench', o.llamaTools), o.mtmd && llamaToolPath('llama-mtmd-cli', o.llamaTools)].filter(
    (f): f is string => !!f && !fs.existsSync(f),
  );
  if (!missing.length) return;
  if (o.llamaTools) {
    throw new Error(
      `--llama-tools ${o.llamaTools}: ${missing.map((f) => path.basename(f)).join(' and ')} missing there (node scripts/build-llama-tools.mjs --out <folder> builds them into <folder>/bin)`,
    );
  }
  o.log(`building ${missing.map((f) => path.basename(f)).join(' and ')} from the pinned llama.cpp (once)`);
  const b = spawnSync(process.execPath, [path.join(CHECKOUT, 'scripts', 'build-llama-tools.mjs'), 'llama-bench', 'llama-mtmd-cli'], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  if (b.status !== 0) throw new Error(`could not build ${missing.map((f) => path.basename(f)).join(', ')}`);
}

/** The CPU, as every benchmark figure must name it: model and the features that decide kernels. */
export async function describeCpu(): Promise<{ model: string; features: string[]; logical: number }> {
  const wanted = [
    'AVX',
    'AVX2',
    'F16C',
    'FMA',
    'AVX512',
    'AVX512_VBMI',
    'AVX512_VNNI',
    'AVX512_BF16',
    'AVX_VNNI',
    'AMX_INT8',
    'AMX_BF16',
    'NEON',
    'ARM_FMA',
    'SVE',
    'DOTPROD',
  ];
  // What the CPU has (Linux: its flags), not what the loaded ggml CPU variant was compiled for.
  const linuxFlags: Record<string, string> = {
    avx: 'AVX',
    avx2: 'AVX2',
    f16c: 'F16C',
    fma: 'FMA',
    avx512f: 'AVX512',
    avx512vbmi: 'AVX512_VBMI',
    avx512_vnni: 'AVX512_VNNI',
    avx512_bf16: 'AVX512_BF16',
    avx_vnni: 'AVX_VNNI',
    amx_int8: 'AMX_INT8',
    amx_bf16: 'AMX_BF16',
    asimd: 'NEON',
    sve: 'SVE',
    asimddp: 'DOTPROD',
  };
  let have: Set<string>;
  try {
    const line = /^(?:flags|Features)\s*:(.*)$/m.exec(fs.readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
    have = new Set(
      line
        .trim()
        .split(/\s+/)
        .flatMap((f) => (linuxFlags[f] ? [linuxFlags[f]] : [])),
    );
  } catch {
    const { cpuFeatures } = await systemInfo();
    have = new Set(Object.keys(cpuFeatures).filter((f) => cpuFeatures[f] === '1'));
  }
  return { model: os.cpus()[0]?.model.trim() ?? 'unknown', features: wanted.filter((f) => have.has(f)), logical: os.cpus().length };
}

/** Runs ours, llama-bench and mtmd alternately `reps` times; returns medians and ratios. */
export async function runBench(o: BenchOptions) {
  ensureLlamaTools(o);
  const files = await prepareBench(o);
  let mtmdProjector = '';
  if (o.mtmd) {
    mtmdProjector = files.mmproj.replace(/\.gguf$/, '-as-gemma3.gguf');
    if (!fs.existsSync(mtmdProjector)) await writeMtmdProjector(files.mmproj, mtmdProjector);
  }
  const cpu = await describeCpu();
  o.log(`cpu: ${cpu.model} (${cpu.features.join(' ')}), ${o.threads} threads`);
  const ours: BenchRun[] = [];
  const lb: { pp: number; tg: number }[] = [];
  const mt: MtmdRun[] = [];
  const other: BenchRun[] = [];
  // Each of our runs is a fresh process, so peak RSS is per run.
  const runOurs = (binary?: string) => {
    const env = { ...process.env };
    if (binary) env.PALIGEMMA_NODE_BINARY = binary;
    const child = spawnSync(process.execPath, [path.join(__dirname, 'cli.js'), 'child', JSON.stringify({ files, threads: o.threads })], {
      encoding: 'utf8',
      maxBuffer: 1 << 24,
      env,
    });
    if (child.status !== 0) throw new Error(`benchmark run failed${binary ? ` (${binary})` : ''}: ${child.stderr.slice(-1000)}`);
    return JSON.parse(child.stdout.trim().split('\n').pop()!) as BenchRun;
  };
  for (let i = 0; i < o.reps; i++) {
    // With a second binary, the two alternate which goes first, so a drifting machine favors neither.
    const otherFirst = o.compareBinary && i % 2 === 1 ? runOurs(o.compareBinary) : undefined;
    const run = runOurs();
    ours.push(run);
    if (o.compareBinary) {
      other.push(otherFirst ?? runOurs(o.compareBinary));
      const c = other.at(-1)!;
      o.log(
        `   compared binary: encode ${c.encode_ms.toFixed(0)} ms, prefill ${c.prefill_tok_s.toFixed(1)} tok/s, decode ${c.decode_tok_s.toFixed(2)} tok/s (${c.cpu_variant})`,
      );
    }
    o.log(
      `run ${i + 1}/${o.reps}: encode ${run.encode_ms.toFixed(0)} ms (${run.kernels.vision_attention} attention, ${run.kernels.vision_matmul} products), prefill (${run.kernels.text_matmul} products) ${run.prefill_tok_s.toFixed(1)} tok/s, decode ${run.decode_tok_s.toFixed(2)} tok/s`,
    );
    if (o.llamaBench) {
      lb.push(runLlamaBench(files.model, run.prompt_tokens, o.threads, o.llamaTools));
      o.log(
        `          llama-bench: pp${run.prompt_tokens} ${lb.at(-1)!.pp.toFixed(1)} tok/s, tg${DECODE_TOKENS}@d${run.prompt_tokens} ${lb.at(-1)!.tg.toFixed(2)} tok/s`,
      );
    }
    if (o.mtmd) {
      mt.push(runMtmdEncode(files.model, mtmdProjector, files.image, o.threads, o.llamaTools));
      o.log(`          llama.cpp mtmd: encode ${mt.at(-1)!.encode_ms} ms`);
    }
  }
  type Numeric = Exclude<keyof BenchRun, 'kernels' | 'cpu_variant' | 'binary'>;
  const m = (k: Numeric) => median(ours.map((r) => r[k]));
  const encodeMs = m('encode_ms');
  const visionGflops = visionFlops(o.synthetic) / (encodeMs / 1000) / 1e9;
  const result: Record<string, unknown> = {
    config: {
      image_size: o.synthetic,
      type: o.type,
      vision_type: o.visionType,
      threads: o.threads,
      reps: o.reps,
      weights:
        'ours: text read into memory (CPU default), warmed up just before timing; llama-bench: -lm none (read into memory); mtmd: read into memory by its loader, flash attention on',
    },
    cpu,
    machine: { platform: `${process.platform}-${process.arch}` },
    kernels: ours[0]!.kernels,
    // Each run is a fresh process with its own load-time race: what each picked, and how often.
    kernel_choices: countChoices(
      ours.map((r) => `${r.kernels.vision_attention} attention, ${r.kernels.vision_matmul} products, text ${r.kernels.text_matmul} products`),
    ),
    binary: { path: ours[0]!.binary, cpu_variant: ours[0]!.cpu_variant },
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
  if (other.length) {
    const mo = (k: Numeric) => median(other.map((r) => r[k]));
    Object.assign(result, {
      compared_binary: {
        path: other[0]!.binary,
        cpu_variant: other[0]!.cpu_variant,
        encode_ms: mo('encode_ms'),
        prefill_tok_s: mo('prefill_tok_s'),
        decode_tok_s: mo('decode_tok_s'),
        ttft_ms: mo('ttft_ms'),
        // Above 1: the default binary is faster. Medians of the ratios within each pair of runs
        // (taken minutes apart at most), not a ratio of medians, which the machine's drift skews.
        encode_speedup: median(ours.map((r, i) => other[i]!.encode_ms / r.encode_ms)),
        prefill_ratio: median(ours.map((r, i) => r.prefill_tok_s / other[i]!.prefill_tok_s)),
        decode_ratio: median(ours.map((r, i) => r.decode_tok_s / other[i]!.decode_tok_s)),
      },
    });
  }
  if (mt.length) {
    const mtmdMs = median(mt.map((x) => x.encode_ms));
    Object.assign(result, {
      mtmd: { encode_ms: mtmdMs, gflop_s: visionFlops(o.synthetic) / (mtmdMs / 1000) / 1e9 },
      vision_speedup_vs_mtmd: mtmdMs / encodeMs,
      ttft_over_mtmd_plus_llama_prefill: lb.length
        ? (result.ttft_ms as number) / (mtmdMs + (1000 * (result.prompt_tokens as number)) / median(lb.map((x) => x.pp)))
        : undefined,
    });
  }
  return result;
}
