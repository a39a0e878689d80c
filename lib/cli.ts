#!/usr/bin/env node
/**
 * The `paligemma` command line tool.
 */
import path from 'node:path';
import { packageRoot } from './binding';
import { convert, TEXT_TYPES, VISION_TYPES, type ConvertProgress, type TextType, type VisionType } from './convert/index';
import { readGGUF } from './gguf';
import { PaliGemmaError } from './errors';
import { systemInfo } from './system';
import { measureOnce, runBench } from './bench';
import { cmdSelftest, cmdTask, parseOrUsage, TASKS, UsageError, type TaskName } from './cli-tasks';

const USAGE = `usage: paligemma <command> [options]

tasks (on an image file):
  caption <image> [--long] [--lang en]        a caption ('caption en'; --long: 'describe en')
  ask <image> <question...>                   answer a question ('answer en ...')
  ocr <image>                                 read the text
  detect <image> <label...>                   boxes ('detect cat ; dog'); labels may also be "cat ; dog"
  segment <image> <label>                     boxes and masks ('segment cat'); needs a --seg-decoder conversion
  run <image> --prompt <text>                 any prompt, as is
  task options:
    --model <x.gguf|DIR> --mmproj <x-mmproj.gguf>   the GGUF pair (a folder holding exactly one of each also works)
    --prompt <text>  --lang <code>  --max-tokens N  --json  --annotate out.png
    --gpu auto|cpu|cuda|metal|vulkan  --threads N  --context-size N

other commands:
  convert <hf-dir> [--out DIR] [--type T] [--vision-type T] [--seg-decoder vae-oid.npz] [--name NAME] [--threads N]
                         Hugging Face PaliGemma checkpoint -> <name>-<type>.gguf + <name>-mmproj-<vision-type>.gguf
                         types: ${TEXT_TYPES.join(' ')} (default f16); vision: ${VISION_TYPES.join(' ')}
  info <file.gguf>       metadata and tensors of a GGUF file
  system                 native build, devices and CPU features
  selftest [--gpu G]     convert, load and run a tiny bundled model; prints backend, timings, PASS/FAIL
  bench [--synthetic 224|448|896] [--type q4_0] [--vision-type q8_0] [--threads N] [--reps 3] [--json] [--no-llama-bench] [--no-mtmd]
                         real PaliGemma shapes (random weights) side by side with llama.cpp's llama-bench
                         and llama.cpp's own SigLIP (llama-mtmd-cli)
  help                   this text

exit codes: 0 ok, 1 runtime error, 2 bad usage
`;


function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? v.slice(0, 77) + '...' : v);
  if (Array.isArray(v) || ArrayBuffer.isView(v)) {
    const arr = Array.from(v as ArrayLike<unknown>);
    const head = arr.slice(0, 6).map((x) => (typeof x === 'string' ? JSON.stringify(x) : String(x)));
    return `[${head.join(', ')}${arr.length > 6 ? ', ...' : ''}]`;
  }
  return String(v);
}

function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

/** A one-line progress bar on a TTY (bytes, rate, ETA); occasional plain lines otherwise. */
export function progressPrinter(err: NodeJS.WritableStream & { isTTY?: boolean }, now: () => number = Date.now) {
  const start = now();
  let lastPlain = -1;
  return (p: ConvertProgress) => {
    const elapsed = (now() - start) / 1000;
    const rate = elapsed > 0 ? p.bytesDone / elapsed : 0;
    const eta = p.fraction > 0 ? (elapsed / p.fraction) * (1 - p.fraction) : Infinity;
    const pct = Math.round(p.fraction * 100);
    const what = p.phase === 'quantize' ? 'quantizing (llama.cpp)' : p.phase;
    const line = `${what.padEnd(22)} ${String(pct).padStart(3)}% ${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)} ${formatBytes(rate)}/s ETA ${formatDuration(eta)}`;
    if (err.isTTY) {
      const width = 24;
      const filled = Math.round(p.fraction * width);
      err.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${line}\x1b[K${p.phase === 'done' ? '\n' : ''}`);
    } else if (Math.floor(pct / 10) !== lastPlain || p.phase === 'done') {
      lastPlain = Math.floor(pct / 10);
      err.write(line + '\n');
    }
  };
}

async function cmdConvert(args: string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream) {
  const parsed = parseOrUsage({
    args,
    allowPositionals: true,
    options: {
      out: { type: 'string' },
      type: { type: 'string' },
      'vision-type': { type: 'string' },
      'seg-decoder': { type: 'string' },
      name: { type: 'string' },
      threads: { type: 'string' },
    },
  });
  const { values, positionals } = parsed;
  if (positionals.length !== 1) throw new UsageError('convert takes exactly one checkpoint folder');
  if (values.type !== undefined && !TEXT_TYPES.includes(values.type as TextType)) throw new UsageError(`--type must be one of ${TEXT_TYPES.join(', ')}`);
  const vt = values['vision-type'];
  if (vt !== undefined && !VISION_TYPES.includes(vt as VisionType)) throw new UsageError(`--vision-type must be one of ${VISION_TYPES.join(', ')}`);
  const threads = values.threads === undefined ? undefined : Number(values.threads);
  if (threads !== undefined && !(Number.isInteger(threads) && threads > 0)) throw new UsageError('--threads must be a positive integer');
  const controller = new AbortController();
  const onSignal = () => controller.abort();
  process.once('SIGINT', onSignal);
  try {
    const res = await convert({
      input: positionals[0]!,
      outDir: values.out,
      type: values.type as TextType | undefined,
      visionType: vt as VisionType | undefined,
      segDecoder: values['seg-decoder'],
      name: values.name,
      threads,
      signal: controller.signal,
      onProgress: progressPrinter(err),
    });
    out.write(`${res.model}\n${res.mmproj}\n`);
  } finally {
    process.removeListener('SIGINT', onSignal);
  }
}

async function cmdBench(args: string[], out: NodeJS.WritableStream, err: NodeJS.WritableStream) {
  const parsed = parseOrUsage({
    args,
    options: {
      synthetic: { type: 'string', default: '224' },
      type: { type: 'string', default: 'q4_0' },
      'vision-type': { type: 'string', default: 'q8_0' },
      threads: { type: 'string' },
      reps: { type: 'string', default: '3' },
      cache: { type: 'string' },
      'no-llama-bench': { type: 'boolean' },
      'no-mtmd': { type: 'boolean' },
      json: { type: 'boolean' },
    },
  });
  const v = parsed.values;
  const synthetic = Number(v.synthetic);
  if (![224, 448, 896].includes(synthetic)) throw new UsageError('--synthetic must be 224, 448 or 896');
  if (!TEXT_TYPES.includes(v.type as TextType)) throw new UsageError(`--type must be one of ${TEXT_TYPES.join(', ')}`);
  if (!VISION_TYPES.includes(v['vision-type'] as VisionType)) throw new UsageError(`--vision-type must be one of ${VISION_TYPES.join(', ')}`);
  const reps = Number(v.reps);
  if (!Number.isInteger(reps) || reps < 1) throw new UsageError('--reps must be a positive integer');
  const threads = v.threads === undefined ? (await systemInfo()).defaultThreads : Number(v.threads);
  if (!Number.isInteger(threads) || threads < 1) throw new UsageError('--threads must be a positive integer');
  const result = await runBench({
    synthetic: synthetic as 224 | 448 | 896,
    type: v.type as TextType,
    visionType: v['vision-type'] as VisionType,
    threads,
    reps,
    cacheDir: path.resolve(v.cache ?? path.join(packageRoot, '.bench-cache')),
    llamaBench: !v['no-llama-bench'],
    mtmd: !v['no-mtmd'],
    log: (line) => err.write(line + '\n'),
  });
  if (v.json) {
    out.write(JSON.stringify(result, null, 2) + '\n');
    return;
  }
  const f = (x: unknown, d = 1) => (typeof x === 'number' ? x.toFixed(d) : String(x));
  const lb = result.llama_bench as { pp_tok_s: number; tg_tok_s: number; pp_gflop_s: number } | undefined;
  out.write(`PaliGemma ${synthetic}px, text ${v.type}, vision ${v['vision-type']}, ${threads} threads, median of ${reps}\n`);
  out.write(`  preprocess ${f(result.preprocess_ms)} ms | vision encode ${f(result.encode_ms, 0)} ms (${f(result.vision_gflop_s, 0)} GFLOP/s)\n`);
  out.write(`  prefill ${f(result.prefill_tok_s)} tok/s (${result.prompt_tokens} tokens) | decode ${f(result.decode_tok_s, 2)} tok/s\n`);
  out.write(`  time to first token ${f(result.ttft_ms, 0)} ms (${f(result.ttft_cached_ms, 0)} ms with a cached image) | peak RSS ${f(result.peak_rss_mb, 0)} MB (weights ${f(result.weights_mb, 0)} MB)\n`);
  if (lb) {
    out.write(`  llama-bench: pp ${f(lb.pp_tok_s)} tok/s, tg ${f(lb.tg_tok_s, 2)} tok/s\n`);
    out.write(`  ratios: prefill ${f(result.prefill_ratio, 2)}x, decode ${f(result.decode_ratio, 2)}x, vision GFLOP/s vs llama prefill ${f(result.vision_vs_prefill_gflops_ratio, 2)}x\n`);
  }
  const mt = result.mtmd as { encode_ms: number; gflop_s: number } | undefined;
  if (mt) {
    out.write(`  llama.cpp mtmd SigLIP: encode ${f(mt.encode_ms, 0)} ms (${f(mt.gflop_s, 0)} GFLOP/s) | ours ${f(result.vision_speedup_vs_mtmd, 2)}x faster\n`);
  }
}

async function cmdSystem(out: NodeJS.WritableStream) {
  const info = await systemInfo();
  out.write(`llama.cpp ${info.llamaCppCommit}\nbinary ${info.binary.variant}: ${info.binary.path}\n`);
  out.write(`threads: ${info.defaultThreads} by default (physical cores), ${info.logicalCpus} logical\n`);
  for (const d of info.backends) out.write(`device ${d.name} (${d.type}): ${d.description}, ${formatBytes(d.memoryTotal)}\n`);
  out.write(`cpu: ${Object.keys(info.cpuFeatures).join(' ')}\n`);
}

async function cmdInfo(args: string[], out: NodeJS.WritableStream) {
  const file = args[0];
  if (!file || args.length > 1) throw new UsageError('info takes exactly one GGUF file');
  const info = await readGGUF(file, { maxArrayLength: 8 });
  out.write(`${file}: GGUF v${info.version}, ${formatBytes(info.fileSize)}, ${Object.keys(info.metadata).length} keys, ${info.tensors.length} tensors\n`);
  for (const [k, v] of Object.entries(info.metadata)) {
    const full = info.truncatedKeys.includes(k) ? ' (truncated)' : '';
    out.write(`  ${k.padEnd(44)} ${formatValue(v)}${full}\n`);
  }
  for (const t of info.tensors) {
    out.write(`  ${t.name.padEnd(44)} ${t.type.padEnd(6)} [${t.shape.join(', ')}] ${formatBytes(t.size)}\n`);
  }
}

export async function main(argv: string[], out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'convert':
        await cmdConvert(rest, out, err);
        return 0;
      case 'selftest':
        return (await cmdSelftest(rest, out)) ? 0 : 1;
      case 'bench':
        await cmdBench(rest, out, err);
        return 0;
      case 'bench-child': {
        // Internal: one measurement in a fresh process (see lib/bench.ts).
        const { files, threads } = JSON.parse(rest[0] ?? '{}');
        out.write(JSON.stringify(await measureOnce(files, threads)) + '\n');
        return 0;
      }
      case 'system':
        await cmdSystem(out);
        return 0;
      case 'info':
        await cmdInfo(rest, out);
        return 0;
      case 'help':
      case '--help':
      case '-h':
        out.write(USAGE);
        return 0;
      default:
        if (TASKS.includes(cmd as TaskName)) {
          await cmdTask(cmd as TaskName, rest, out, err);
          return 0;
        }
        throw new UsageError(cmd ? `unknown command '${cmd}'` : 'no command given');
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err.write(`paligemma: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    err.write(`paligemma: ${e instanceof PaliGemmaError ? e.message : (e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
