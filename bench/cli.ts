/**
 * `npm run bench -- [options]` from a checkout: see USAGE. `child` is internal (one measurement in
 * a fresh process).
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { TEXT_TYPES, type TextType, VISION_TYPES, type VisionType } from '../lib/convert/index';
import { systemInfo } from '../lib/system';
import { measureAdapters } from './adapters';
import { describeCpu, measureOnce, prepareBench, runBench } from './bench';
import { defaultBenchCache } from './paths';

const USAGE = `usage: npm run bench -- [options]

PaliGemma at real shapes (random weights) side by side with llama.cpp's llama-bench on the same
text GGUF and threads, and llama.cpp's own SigLIP (llama-mtmd-cli) on the same vision tower.

options:
  --synthetic 224|448|896   image size (default 224)
  --type <t>                text type (default q4_0): ${TEXT_TYPES.join(' ')}
  --vision-type <t>         vision type (default q8_0): ${VISION_TYPES.join(' ')}
  --threads <n>             default: physical cores
  --reps <n>                interleaved runs, medians reported (default 3)
  --cache <dir>             where models are kept (default ${defaultBenchCache()})
  --no-llama-bench          skip llama-bench
  --no-mtmd                 skip llama.cpp's SigLIP
  --llama-tools <dir>       llama-bench and llama-mtmd-cli from this folder or its bin/ (default:
                            built from the pinned source into native-build/llama-tools/bin); e.g.
                            a build for AVX2 only, made with node scripts/build-llama-tools.mjs
                            --out <dir> -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
  --compare-binary <file>   also time this build of our addon (a paligemma.node), alternately
                            with the default one, and report the ratios (e.g. the portable
                            binary the package ships against a --native build)
  --adapters                instead: what LoRA adapters cost (a synthetic rank-16 adapter on every
                            text, vision and projector matrix): calls without, keeping one, and
                            alternating two, interleaved; --reps calls per mode
  --json                    one JSON object
  -h, --help                this text
`;

/** The folder holding the tools: the one given, or its bin/ (where build-llama-tools --out puts them). */
function toolsFolder(dir: string): string {
  const has = (d: string) => ['llama-bench', 'llama-mtmd-cli'].some((n) => fs.existsSync(path.join(d, n)) || fs.existsSync(path.join(d, `${n}.exe`)));
  return !has(dir) && has(path.join(dir, 'bin')) ? path.join(dir, 'bin') : dir;
}

export async function main(argv: string[], stdout: NodeJS.WritableStream = process.stdout, stderr: NodeJS.WritableStream = process.stderr): Promise<number> {
  if (argv[0] === 'child') {
    const { files, threads } = JSON.parse(argv[1] ?? '{}');
    stdout.write(`${JSON.stringify(await measureOnce(files, threads))}\n`);
    return 0;
  }
  let v: Record<string, string | boolean | undefined>;
  try {
    v = parseArgs({
      args: argv,
      options: {
        synthetic: { type: 'string', default: '224' },
        type: { type: 'string', default: 'q4_0' },
        'vision-type': { type: 'string', default: 'q8_0' },
        threads: { type: 'string' },
        reps: { type: 'string', default: '3' },
        cache: { type: 'string' },
        'no-llama-bench': { type: 'boolean' },
        'no-mtmd': { type: 'boolean' },
        'compare-binary': { type: 'string' },
        'llama-tools': { type: 'string' },
        adapters: { type: 'boolean' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    }).values;
  } catch (e) {
    stderr.write(`bench: ${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (v.help) {
    stdout.write(USAGE);
    return 0;
  }
  const fail = (m: string) => {
    stderr.write(`bench: ${m}\n\n${USAGE}`);
    return 2;
  };
  const synthetic = Number(v.synthetic);
  if (![224, 448, 896].includes(synthetic)) return fail('--synthetic must be 224, 448 or 896');
  if (!TEXT_TYPES.includes(v.type as TextType)) return fail(`--type must be one of ${TEXT_TYPES.join(', ')}`);
  if (!VISION_TYPES.includes(v['vision-type'] as VisionType)) return fail(`--vision-type must be one of ${VISION_TYPES.join(', ')}`);
  const reps = Number(v.reps);
  if (!Number.isInteger(reps) || reps < 1) return fail('--reps must be a positive integer');
  const threads = v.threads === undefined ? (await systemInfo()).defaultThreads : Number(v.threads);
  if (!Number.isInteger(threads) || threads < 1) return fail('--threads must be a positive integer');
  const llamaTools = v['llama-tools'] as string | undefined;
  if (llamaTools !== undefined && !fs.statSync(llamaTools, { throwIfNoEntry: false })?.isDirectory()) {
    return fail(`--llama-tools ${llamaTools}: no such folder`);
  }
  const cacheDir = path.resolve((v.cache as string | undefined) ?? defaultBenchCache());
  const log = (line: string) => {
    stderr.write(`${line}\n`);
  };
  if (v.adapters) {
    const files = await prepareBench({
      synthetic: synthetic as 224 | 448 | 896,
      type: v.type as TextType,
      visionType: v['vision-type'] as VisionType,
      threads,
      cacheDir,
      log,
    });
    const cpu = await describeCpu();
    const r = await measureAdapters(files, cacheDir, threads, reps, log);
    if (v.json) {
      stdout.write(`${JSON.stringify({ cpu, threads, ...r }, null, 2)}\n`);
      return 0;
    }
    const f = (x: number, d = 1) => x.toFixed(d);
    const out = (s: string) => stdout.write(`${s}\n`);
    out(`LoRA adapters, PaliGemma ${synthetic}px, text ${v.type}, vision ${v['vision-type']}, ${threads} threads, median of ${reps} calls per mode`);
    out(`  cpu ${cpu.model} (${cpu.features.join(' ')})`);
    out(`  adapter: rank ${r.rank}, ${f(r.adapter_mb, 0)} MB, loaded in ${f(r.load_ms, 0)} ms`);
    out(
      `  generate (cached image, ${'prefill + 16 tokens'}): none ${f(r.none_ms, 0)} ms | keeping A ${f(r.keep_ms, 0)} ms | alternating A, B ${f(r.alternate_ms, 0)} ms`,
    );
    out(`  switch cost (alternating - keeping): ${f(r.switch_ms, 0)} ms per call`);
    out(
      `  prefill tok/s none ${f(r.prefill_tok_s.none)} keep ${f(r.prefill_tok_s.keep)} alternate ${f(r.prefill_tok_s.alternate)} | decode tok/s none ${f(r.decode_tok_s.none, 2)} keep ${f(r.decode_tok_s.keep, 2)} alternate ${f(r.decode_tok_s.alternate, 2)}`,
    );
    out(`  vision encode: without ${f(r.encode_ms.none, 0)} ms, with the adapter's vision targets ${f(r.encode_ms.adapted, 0)} ms`);
    return 0;
  }
  const result = await runBench({
    synthetic: synthetic as 224 | 448 | 896,
    type: v.type as TextType,
    visionType: v['vision-type'] as VisionType,
    threads,
    reps,
    cacheDir,
    llamaBench: !v['no-llama-bench'],
    mtmd: !v['no-mtmd'],
    compareBinary: v['compare-binary'] === undefined ? undefined : path.resolve(v['compare-binary'] as string),
    llamaTools: llamaTools === undefined ? undefined : toolsFolder(path.resolve(llamaTools)),
    log,
  });
  if (v.json) {
    stdout.write(`${JSON.stringify(result, null, 2)}\n`);
    return 0;
  }
  const f = (x: unknown, d = 1) => (typeof x === 'number' ? x.toFixed(d) : String(x));
  const cpu = result.cpu as { model: string; features: string[] };
  const lb = result.llama_bench as { pp_tok_s: number; tg_tok_s: number } | undefined;
  const out = (s: string) => stdout.write(`${s}\n`);
  out(`PaliGemma ${synthetic}px, text ${v.type}, vision ${v['vision-type']}, ${threads} threads, median of ${reps}`);
  const choices = Object.entries(result.kernel_choices as Record<string, number>).map(([k, n]) => `${k} (${n} of ${reps})`);
  out(`  cpu ${cpu.model} (${cpu.features.join(' ')}); kernels chosen: ${choices.join('; ')}`);
  out(`  preprocess ${f(result.preprocess_ms)} ms | vision encode ${f(result.encode_ms, 0)} ms (${f(result.vision_gflop_s, 0)} GFLOP/s)`);
  out(`  prefill ${f(result.prefill_tok_s)} tok/s (${result.prompt_tokens} tokens) | decode ${f(result.decode_tok_s, 2)} tok/s`);
  out(
    `  time to first token ${f(result.ttft_ms, 0)} ms (${f(result.ttft_cached_ms, 0)} ms with a cached image) | peak RSS ${f(result.peak_rss_mb, 0)} MB (weights ${f(result.weights_mb, 0)} MB)`,
  );
  if (lb) {
    out(`  llama-bench: pp ${f(lb.pp_tok_s)} tok/s, tg ${f(lb.tg_tok_s, 2)} tok/s`);
    out(
      `  ratios: prefill ${f(result.prefill_ratio, 2)}x, decode ${f(result.decode_ratio, 2)}x, vision GFLOP/s vs llama prefill ${f(result.vision_vs_prefill_gflops_ratio, 2)}x`,
    );
  }
  const mt = result.mtmd as { encode_ms: number; gflop_s: number } | undefined;
  if (mt) out(`  llama.cpp mtmd SigLIP: encode ${f(mt.encode_ms, 0)} ms (${f(mt.gflop_s, 0)} GFLOP/s) | ours ${f(result.vision_speedup_vs_mtmd, 2)}x faster`);
  const bin = result.binary as { path: string; cpu_variant: string };
  out(`  binary ${bin.path} (CPU backend: ${bin.cpu_variant})`);
  const cb = result.compared_binary as
    | { path: string; cpu_variant: string; encode_ms: number; encode_speedup: number; prefill_ratio: number; decode_ratio: number }
    | undefined;
  if (cb) {
    out(`  compared with ${cb.path} (CPU backend: ${cb.cpu_variant}): encode ${f(cb.encode_ms, 0)} ms`);
    out(
      `  ratios default / compared (median of paired runs): encode speed ${f(cb.encode_speedup, 2)}x, prefill ${f(cb.prefill_ratio, 2)}x, decode ${f(cb.decode_ratio, 2)}x`,
    );
  }
  return 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      process.stderr.write(`bench: ${(err as Error).message}\n`);
      process.exitCode = 1;
    },
  );
}
