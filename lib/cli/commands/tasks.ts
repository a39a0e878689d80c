/**
 * The task commands: caption, ask, ocr, detect, segment and run, on one image file.
 */
import fs from 'node:fs';
import path from 'node:path';
import { callNative, PaliGemmaError } from '../../errors';
import { type Annotation, annotateImage } from '../../image/annotate';
import { encodePNG } from '../../image/png';
import { PaliGemma } from '../../model/paligemma';
import { getBinding } from '../../native/binding';
import { GPU_CHOICES } from '../../native/contract';
import { parseLocations } from '../../tasks/locations';
import { type Mask, maskToRLE } from '../../tasks/masks';
import { type CliIO, type Command, choiceOption, intOption, type OptionSpec, type Parsed, splitScale, UsageError, writeJson } from '../args';
import { MODEL_LOCATION_USAGE, resolveModelPair } from '../model-files';
import { loadProgress } from '../progress';

type TaskName = 'caption' | 'ask' | 'ocr' | 'detect' | 'segment' | 'run';

const MODEL_OPTIONS: OptionSpec = {
  model: { type: 'string', short: 'm' },
  mmproj: { type: 'string' },
  gpu: { type: 'string' },
  threads: { type: 'string', short: 't' },
  'context-size': { type: 'string' },
  'max-tokens': { type: 'string', short: 'n' },
  lora: { type: 'string', multiple: true },
  json: { type: 'boolean' },
};

const MODEL_USAGE = `model options:
${MODEL_LOCATION_USAGE}
  -n, --max-tokens <n>       answer length limit (default: the task's)
      --lora <file[:scale]>  apply a LoRA adapter from convert-lora (repeatable; scale default 1)
      --json                 print one JSON object instead of streaming text
  -h, --help                 this text`;

const round = (b: { x1: number; y1: number; x2: number; y2: number }) => ({
  x1: Math.round(b.x1),
  y1: Math.round(b.y1),
  x2: Math.round(b.x2),
  y2: Math.round(b.y2),
});

/** `--lora file[:scale]` */
export function parseLoraOption(v: string, command: string): { file: string; scale: number } {
  const { path: file, scale = 1 } = splitScale(v);
  if (!fs.existsSync(file)) {
    const colon = v.lastIndexOf(':');
    if (file === v && colon > 0 && fs.existsSync(v.slice(0, colon))) {
      throw new UsageError(`--lora ${v}: the scale after ':' must be a number, got '${v.slice(colon + 1)}'`, command);
    }
    throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `--lora ${file}: no such file`);
  }
  return { file, scale };
}

function checkLabel(task: string, label: string): string {
  const l = label.trim();
  if (!l || /[<>\n]/.test(l)) throw new UsageError(`${task}: a label must be non-empty and hold no '<', '>' or newline, got '${label}'`, task);
  return l;
}

/** One mask file per object next to `file` (name-1.png, ...), plus the union at `file`. */
export function writeMasks(file: string, masks: Mask[]): string[] {
  if (!masks.length) return [];
  const { width, height } = masks[0]!;
  const union = new Uint8Array(width * height);
  for (const m of masks) for (let i = 0; i < union.length; i++) union[i]! |= m.data[i]!;
  fs.writeFileSync(file, encodePNG(union, width, height, 1));
  if (masks.length === 1) return [file];
  const ext = path.extname(file);
  const files = masks.map((m, i) => {
    const f = `${file.slice(0, file.length - ext.length)}-${i + 1}${ext || '.png'}`;
    fs.writeFileSync(f, encodePNG(m.data, width, height, 1));
    return f;
  });
  return [file, ...files];
}

async function runTask(task: TaskName, { values, positionals }: Parsed, { out, err }: CliIO): Promise<number> {
  const [image, ...words] = positionals;
  if (!image) throw new UsageError(`${task} needs an image file`, task);
  const str = (k: string) => values[k] as string | undefined;
  const gpu = choiceOption('gpu', values.gpu, GPU_CHOICES);
  const maxTokens = intOption('max-tokens', values['max-tokens'], 0);
  const threads = intOption('threads', values.threads, 1);
  const contextSize = intOption('context-size', values['context-size'], 16);
  const lang = str('lang') ?? 'en';
  const text = str('prompt') ?? (words.length ? words.join(' ') : undefined);
  if ((task === 'caption' || task === 'ocr') && words.length) throw new UsageError(`${task} takes only an image, got also '${words.join(' ')}'`, task);
  if (!text && task !== 'caption' && task !== 'ocr') {
    throw new UsageError(
      task === 'run'
        ? 'run needs a prompt: words after the image, or --prompt TEXT'
        : task === 'ask'
          ? 'ask needs a question after the image'
          : `${task} needs a label after the image`,
      task,
    );
  }
  const labels = task === 'detect' ? text!.split(';').map((l) => checkLabel(task, l)) : task === 'segment' ? [checkLabel(task, text!)] : [];
  if (task === 'segment' && text!.includes(';')) throw new UsageError('segment takes one label', task);
  if (!fs.existsSync(image)) throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${image}: no such file`);
  const loras = ((values.lora as string[] | undefined) ?? []).map((v) => parseLoraOption(v, task));
  const files = await resolveModelPair(str('model'), str('mmproj'), { err });

  const model = await PaliGemma.load({ ...files, gpu, threads, contextSize, onProgress: loadProgress(err) });
  try {
    const adapters = [];
    for (const l of loras) adapters.push({ adapter: await model.loadAdapter(l.file), scale: l.scale });
    const json = values.json === true;
    const common = {
      onText: json ? undefined : (c: string) => out.write(c),
      ...(maxTokens !== undefined ? { maxTokens } : {}),
      ...(adapters.length ? { adapters } : {}),
    };
    let result: Record<string, unknown>;
    let items: Annotation[] = [];
    const started = performance.now();
    switch (task) {
      case 'caption':
        result = { text: await model.caption(image, { ...common, lang, detail: values.long ? 'long' : 'short' }) };
        break;
      case 'ask':
        result = { question: text, text: await model.answer(image, text!, { ...common, lang }) };
        break;
      case 'ocr':
        result = { text: await model.ocr(image, common) };
        break;
      case 'run': {
        const r = await model.generate({ image, prompt: text!, ...common });
        const size = callNative(async () => getBinding().binding.imageSize(fs.readFileSync(image), image));
        result = { prompt: text, text: r.text, stopReason: r.stopReason, locations: parseLocations(r.text, await size), timings: r.timings };
        break;
      }
      case 'detect': {
        const found = await model.detect(image, labels, common);
        items = found;
        result = { labels, detections: found.map((d) => ({ label: d.label, box: round(d.box) })) };
        break;
      }
      case 'segment': {
        const found = await model.segment(image, labels[0]!, common);
        items = found;
        const maskFiles = str('mask')
          ? writeMasks(
              str('mask')!,
              found.map((s) => s.mask),
            )
          : [];
        result = {
          label: labels[0],
          segments: found.map((s) => ({
            label: s.label,
            box: round(s.box),
            mask: { ...maskToRLE(s.mask), pixels: s.mask.data.reduce((n: number, v: number) => n + (v ? 1 : 0), 0) },
          })),
          ...(maskFiles.length ? { maskFiles } : {}),
        };
        if (maskFiles.length) err.write(`masks: ${maskFiles.join(', ')}\n`);
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
    const annotated = str('annotate');
    if (annotated) {
      fs.writeFileSync(annotated, await annotateImage(image, items));
      err.write(`annotated picture: ${annotated}\n`);
    }
    if (json) writeJson(out, { task, image, model: files.model, backend: model.info.backend, ...result, ms: Math.round(performance.now() - started) });
    return 0;
  } finally {
    await model.dispose();
  }
}

function taskCommand(name: TaskName, synopsis: string, summary: string, extra: OptionSpec, extraUsage: string): Command {
  return {
    name,
    summary,
    usage: `usage: paligemma ${synopsis} [options]\n\n${summary}\n${extraUsage ? `\n${extraUsage}\n` : ''}\n${MODEL_USAGE}`,
    options: { ...MODEL_OPTIONS, ...extra },
    positionals: true,
    run: (parsed, io) => runTask(name, parsed, io),
  };
}

const LANG: OptionSpec = { lang: { type: 'string' } };
const LANG_USAGE = '      --lang <code>          answer language (default en)';
const ANNOTATE: OptionSpec = { annotate: { type: 'string' } };
const ANNOTATE_USAGE = '      --annotate <out.png>   also draw the result over the image';

export const TASK_COMMANDS: Command[] = [
  taskCommand(
    'caption',
    'caption <image>',
    "a caption ('caption en'; --long: 'describe en')",
    { ...LANG, long: { type: 'boolean' } },
    `${LANG_USAGE}\n      --long                 a longer description`,
  ),
  taskCommand('ask', 'ask <image> <question...>', "answer a question about the image ('answer en ...')", LANG, LANG_USAGE),
  taskCommand('ocr', 'ocr <image>', 'read the text in the image', {}, ''),
  taskCommand('detect', 'detect <image> <label...>', 'boxes (\'detect cat ; dog\'); several labels as "cat ; dog"', ANNOTATE, ANNOTATE_USAGE),
  taskCommand(
    'segment',
    'segment <image> <label>',
    "boxes and masks ('segment cat'); needs a --seg-decoder conversion",
    { ...ANNOTATE, mask: { type: 'string' } },
    `${ANNOTATE_USAGE}\n      --mask <out.png>       write the mask (with several objects also out-1.png, out-2.png, ...)\n                             --json gives each mask as row-major run lengths (counts of 0s, 255s, ...)`,
  ),
  taskCommand(
    'run',
    'run <image> <prompt...>',
    'any prompt, as is (also --prompt TEXT); prints text and parsed locations',
    { prompt: { type: 'string', short: 'p' } },
    '  -p, --prompt <text>        the prompt',
  ),
];
