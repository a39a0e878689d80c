/**
 * The task commands of the `paligemma` CLI (caption, ask, ocr, detect, segment, run) and selftest.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { annotate, type Annotation } from './annotate';
import { getBinding, GPU_CHOICES, packageRoot, type GpuChoice } from './binding';
import { convert } from './convert/index';
import { callNative, PaliGemmaError } from './errors';
import { readGGUF } from './gguf';
import { PaliGemma, type Detection, type Segmentation } from './model';
import { encodePNG } from './png';
import { parseLocations } from './tasks';

export class UsageError extends Error {}

/** node:util parseArgs, with its errors turned into usage errors (exit code 2). */
export function parseOrUsage<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export const TASKS = ['caption', 'ask', 'ocr', 'detect', 'segment', 'run'] as const;
export type TaskName = (typeof TASKS)[number];

type Out = NodeJS.WritableStream & { isTTY?: boolean };

function intOption(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}`);
  return n;
}

/** --model may name a folder holding one text GGUF and one mmproj GGUF: tell them apart by architecture. */
export async function resolveModelPair(model: string | undefined, mmproj: string | undefined): Promise<{ model: string; mmproj: string }> {
  if (!model) throw new UsageError('--model is required (a text GGUF, or a folder holding the text GGUF and its mmproj)');
  if (fs.existsSync(model) && fs.statSync(model).isDirectory()) {
    const text: string[] = [];
    const vision: string[] = [];
    for (const f of fs.readdirSync(model).filter((x) => x.endsWith('.gguf')).sort()) {
      const file = path.join(model, f);
      const arch = (await readGGUF(file, { maxArrayLength: 0 }).catch(() => null))?.metadata['general.architecture'];
      if (arch === 'clip') vision.push(file);
      else if (arch === 'gemma' || arch === 'gemma2') text.push(file);
    }
    if (text.length !== 1 || (vision.length !== 1 && !mmproj)) {
      throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `${model}: expected one text GGUF and one mmproj GGUF, found ${text.length} and ${vision.length}; name them with --model and --mmproj`);
    }
    return { model: text[0]!, mmproj: mmproj ?? vision[0]! };
  }
  if (!mmproj) throw new UsageError('--mmproj is required when --model names a file');
  return { model, mmproj };
}

function loadProgress(err: Out) {
  let last = -1;
  return (f: number) => {
    const pct = Math.floor(f * 100);
    if (err.isTTY) err.write(`\rloading model ${pct}%${f >= 1 ? '\n' : ''}`);
    else if (Math.floor(pct / 25) !== last) {
      last = Math.floor(pct / 25);
      err.write(`loading model ${pct}%\n`);
    }
  };
}

const round = (b: { x1: number; y1: number; x2: number; y2: number }) => ({ x1: Math.round(b.x1), y1: Math.round(b.y1), x2: Math.round(b.x2), y2: Math.round(b.y2) });

export async function cmdTask(task: TaskName, args: string[], out: Out, err: Out): Promise<void> {
  const parsed = parseOrUsage({
    args,
    allowPositionals: true,
    options: {
      model: { type: 'string' },
      mmproj: { type: 'string' },
      prompt: { type: 'string' },
      lang: { type: 'string' },
      long: { type: 'boolean' },
      json: { type: 'boolean' },
      annotate: { type: 'string' },
      'max-tokens': { type: 'string' },
      gpu: { type: 'string' },
      threads: { type: 'string' },
      'context-size': { type: 'string' },
    },
  });
  const { values, positionals } = parsed;
  const [image, ...words] = positionals;
  if (!image) throw new UsageError(`${task} needs an image file`);
  const gpu = values.gpu as GpuChoice | undefined;
  if (gpu !== undefined && !GPU_CHOICES.includes(gpu)) throw new UsageError(`--gpu must be one of ${GPU_CHOICES.join(', ')}`);
  const maxTokens = intOption('max-tokens', values['max-tokens'], 0);
  const threads = intOption('threads', values.threads, 1);
  const contextSize = intOption('context-size', values['context-size'], 16);
  const lang = values.lang ?? 'en';
  const joined = values.prompt ?? (words.length ? words.join(' ') : undefined);
  if ((task === 'ask' || task === 'run' || task === 'detect' || task === 'segment') && !joined) {
    throw new UsageError(task === 'run' ? 'run needs --prompt' : task === 'ask' ? 'ask needs a question' : `${task} needs a label`);
  }
  if ((task === 'caption' || task === 'ocr') && words.length) throw new UsageError(`${task} takes only an image`);
  if (values.annotate && task !== 'detect' && task !== 'segment') throw new UsageError('--annotate works with detect and segment');
  const files = await resolveModelPair(values.model, values.mmproj);
  if (!fs.existsSync(image)) throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${image}: no such file`);

  const model = await PaliGemma.load({ ...files, gpu, threads, contextSize, onProgress: loadProgress(err) });
  try {
    const json = values.json === true;
    const onText = json ? undefined : (c: string) => out.write(c);
    const common = { onText, ...(maxTokens !== undefined ? { maxTokens } : {}) };
    let result: Record<string, unknown>;
    let items: Annotation[] = [];
    const started = performance.now();
    switch (task) {
      case 'caption':
        result = { text: await model.caption(image, { ...common, lang, detail: values.long ? 'long' : 'short' }) };
        break;
      case 'ask':
        result = { question: joined, text: await model.answer(image, joined!, { ...common, lang }) };
        break;
      case 'ocr':
        result = { text: await model.ocr(image, common) };
        break;
      case 'run': {
        const r = await model.generate({ image, prompt: joined!, ...common });
        const size = callNative(async () => getBinding().binding.imageSize(fs.readFileSync(image)));
        result = { prompt: joined, text: r.text, stopReason: r.stopReason, locations: parseLocations(r.text, await size), timings: r.timings };
        break;
      }
      case 'detect': {
        const labels = joined!.split(';').map((l) => l.trim()).filter(Boolean);
        const found: Detection[] = await model.detect(image, labels, common);
        items = found;
        result = { labels, detections: found.map((d) => ({ label: d.label, box: round(d.box) })) };
        break;
      }
      case 'segment': {
        const found: Segmentation[] = await model.segment(image, joined!, common);
        items = found;
        result = {
          label: joined,
          segments: found.map((s) => ({ label: s.label, box: round(s.box), mask: { width: s.mask.width, height: s.mask.height, pixels: s.mask.data.reduce((n, v) => n + (v ? 1 : 0), 0) } })),
        };
        break;
      }
    }
    if (!json) out.write('\n');
    if (!json && (task === 'detect' || task === 'segment')) {
      for (const it of items) {
        const b = round(it.box);
        out.write(`${it.label || '(no label)'}: x1=${b.x1} y1=${b.y1} x2=${b.x2} y2=${b.y2}\n`);
      }
      if (!items.length) out.write('(nothing found)\n');
    }
    if (values.annotate) {
      const decoded = await callNative(() => getBinding().binding.decodeImage(fs.readFileSync(image)));
      const drawn = annotate(decoded, items);
      fs.writeFileSync(values.annotate, encodePNG(drawn.data, drawn.width, drawn.height, 3));
      err.write(`annotated picture: ${values.annotate}\n`);
    }
    if (json) {
      out.write(JSON.stringify({ task, image, model: files.model, backend: model.info.backend, ...result, ms: Math.round(performance.now() - started) }, null, 2) + '\n');
    }
  } finally {
    await model.dispose();
  }
}

/** Converts the bundled tiny checkpoint, loads it and checks its output against the float64 reference. */
export async function cmdSelftest(args: string[], out: Out): Promise<boolean> {
  const gpu = parseOrUsage({ args, options: { gpu: { type: 'string' } } }).values.gpu as GpuChoice | undefined;
  if (gpu !== undefined && !GPU_CHOICES.includes(gpu)) throw new UsageError(`--gpu must be one of ${GPU_CHOICES.join(', ')}`);
  const fixture = path.join(packageRoot, 'test', 'fixtures', 'tiny-v1');
  const refDir = path.join(fixture, 'reference');
  const ref = JSON.parse(fs.readFileSync(path.join(refDir, 'reference.json'), 'utf8')) as {
    cases: { name: string; image: string; prompt: string; greedy_ids: number[]; logits_shape: [number, number] }[];
  };
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'paligemma-selftest-'));
  const checks: [string, boolean, string][] = [];
  try {
    let t0 = performance.now();
    const files = await convert({ input: fixture, outDir: work, type: 'f32' });
    const convertMs = performance.now() - t0;
    t0 = performance.now();
    const model = await PaliGemma.load({ ...files, gpu });
    const loadMs = performance.now() - t0;
    try {
      out.write(`paligemma-node selftest: backend ${model.info.backend}, ${model.info.threads} threads\n`);
      out.write(`convert ${convertMs.toFixed(0)} ms, load ${loadMs.toFixed(0)} ms\n`);
      const cases = ref.cases.filter((c) => fs.existsSync(path.join(refDir, `${c.name}.logits.f32`))).slice(0, 3);
      for (const c of cases) {
        const image = path.join(refDir, `${c.image}.png`);
        const [steps, vocab] = c.logits_shape;
        const want = readF32File(path.join(refDir, `${c.name}.logits.f32`));
        // Every step's logits along the reference's own tokens, within the tolerance of the default
        // settings (f16 KV cache, fused attention) ...
        const forced = await model.generate({ image, prompt: c.prompt, maxTokens: steps, logits: true, forceTokens: c.greedy_ids });
        let worst = 0;
        for (let s = 0; s < steps; s++) worst = Math.max(worst, relError(forced.logits![s]!, want.subarray(s * vocab, (s + 1) * vocab)));
        // ... and free greedy decoding equal to the reference's, but where its top two logits are
        // nearly tied (this random tiny model has such ties).
        const r = await model.generate({ image, prompt: c.prompt, maxTokens: steps });
        const flip = c.greedy_ids.findIndex((id, i) => r.tokens[i] !== id);
        let greedy = 'same tokens';
        let tie = true;
        if (flip >= 0) {
          const row = Array.from(want.subarray(flip * vocab, (flip + 1) * vocab)).sort((a, b) => b - a);
          const gap = row[0]! - row[1]!;
          tie = gap < 1e-2;
          greedy = `tokens differ from step ${flip}, ${tie ? 'a near-tie' : 'not a tie'} (top-2 gap ${gap.toExponential(1)})`;
        }
        const ok = worst <= 5e-3 && tie;
        const tm = r.timings;
        // The image was encoded by the first of the two generations (the second found it cached).
        checks.push([`${c.image} "${c.prompt}"`, ok, `logits rel. error ${worst.toExponential(1)} (<= 5e-3), ${greedy}; encode ${forced.timings.encodeMs.toFixed(1)} ms, prefill ${tm.prefillMs.toFixed(1)} ms, decode ${(tm.generatedTokens / (tm.decodeMs / 1000)).toFixed(0)} tok/s`]);
      }
    } finally {
      await model.dispose();
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  for (const [name, ok, detail] of checks) out.write(`${ok ? 'PASS' : 'FAIL'} ${name}: ${detail}\n`);
  const passed = checks.every((c) => c[1]);
  out.write(passed ? 'selftest passed\n' : 'selftest FAILED: results differ from the reference beyond its tolerance\n');
  return passed;
}

/** A raw little-endian float32 file (the reference outputs). */
export function readF32File(file: string): Float32Array {
  const buf = fs.readFileSync(file);
  const out = new Float32Array(buf.byteLength >>> 2);
  new Uint8Array(out.buffer).set(buf.subarray(0, out.length * 4));
  return out;
}

/** ||a - b|| / ||b||, the reference's measure of closeness. */
export function relError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0, den = 0;
  for (let i = 0; i < b.length; i++) {
    const d = a[i]! - b[i]!;
    num += d * d;
    den += b[i]! * b[i]!;
  }
  return Math.sqrt(num / den);
}
