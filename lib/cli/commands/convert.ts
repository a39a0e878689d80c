/** `paligemma convert`: a Hugging Face checkpoint to a GGUF pair. */
import os from 'node:os';
import { convert, TEXT_TYPES, VISION_TYPES } from '../../convert/index';
import { convertLora, LORA_TYPES } from '../../convert/lora';
import { AbortError } from '../../errors';
import { type Command, choiceOption, intOption, splitScale, UsageError, writeJson } from '../args';
import { progressPrinter } from '../progress';

/**
 * Runs a conversion that SIGINT / SIGTERM abort (the converter then removes its temporary files and
 * writes nothing under the final names); exits 128 + the signal's number, as a shell expects.
 */
export async function untilSignal(
  err: NodeJS.WritableStream,
  command: string,
  run: (signal: AbortSignal) => Promise<number>,
  left = 'no output was written',
): Promise<number> {
  const controller = new AbortController();
  let received: NodeJS.Signals | undefined;
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((name) => {
    const h = () => {
      received = name;
      controller.abort();
    };
    process.once(name, h);
    return [name, h] as const;
  });
  try {
    return await run(controller.signal);
  } catch (e) {
    if (received && e instanceof AbortError) {
      err.write(`paligemma: ${command}: stopped by ${received}; ${left}\n`);
      return 128 + os.constants.signals[received];
    }
    throw e;
  } finally {
    for (const [name, h] of handlers) process.removeListener(name, h);
  }
}

/** `--merge dir[:scale]` */
function mergeOption(v: string | undefined): { merge?: string; mergeScale?: number } {
  if (v === undefined) return {};
  const { path, scale } = splitScale(v);
  return scale === undefined ? { merge: path } : { merge: path, mergeScale: scale };
}

export const CONVERT_COMMAND: Command = {
  name: 'convert',
  summary: 'a Hugging Face PaliGemma checkpoint -> <name>-<type>.gguf + <name>-mmproj-<vision-type>.gguf',
  usage: `usage: paligemma convert <hf-dir> [options]

Converts a Hugging Face PaliGemma 1/2 checkpoint folder to a GGUF pair: the text model and its
vision model ("mmproj").

options:
      --out <dir>            where the two files go (default: the current folder)
      --type <t>             text type: ${TEXT_TYPES.join(' ')} (default f16)
      --vision-type <t>      vision type: ${VISION_TYPES.join(' ')} (default f16; f32 with --type f32)
      --seg-decoder <npz>    embed big_vision's vae-oid.npz mask decoder (for segment)
      --merge <dir[:scale]>  fold a PEFT LoRA adapter trained on this checkpoint into the weights
                             (scale default 1; the name defaults to the adapter folder's)
      --name <name>          base file name (default: the checkpoint folder's name)
  -t, --threads <n>          quantization threads (default: all CPUs)
      --json                 print { model, mmproj } as JSON
  -h, --help                 this text`,
  options: {
    out: { type: 'string' },
    type: { type: 'string' },
    'vision-type': { type: 'string' },
    'seg-decoder': { type: 'string' },
    merge: { type: 'string' },
    name: { type: 'string' },
    threads: { type: 'string', short: 't' },
    json: { type: 'boolean' },
  },
  positionals: true,
  async run({ values, positionals }, { out, err }) {
    if (positionals.length !== 1) throw new UsageError('convert takes exactly one checkpoint folder', 'convert');
    const merge = mergeOption(values.merge as string | undefined);
    return untilSignal(err, 'convert', async (signal) => {
      const res = await convert({
        ...merge,
        input: positionals[0]!,
        outDir: (values.out as string | undefined) ?? process.cwd(),
        type: choiceOption('type', values.type, TEXT_TYPES),
        visionType: choiceOption('vision-type', values['vision-type'], VISION_TYPES),
        segDecoder: values['seg-decoder'] as string | undefined,
        name: values.name as string | undefined,
        threads: intOption('threads', values.threads, 1),
        signal,
        onProgress: progressPrinter(err),
      });
      if (values.json) writeJson(out, res);
      else out.write(`${res.model}\n${res.mmproj}\n`);
      return 0;
    });
  },
};

export const CONVERT_LORA_COMMAND: Command = {
  name: 'convert-lora',
  summary: 'a PEFT LoRA adapter -> <name>-lora-<type>.gguf (+ <name>-mmproj-lora-<type>.gguf for vision targets)',
  usage: `usage: paligemma convert-lora <adapter-dir> --base <model.gguf|hf-dir> [options]

Converts a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) trained on a
PaliGemma base. The language-model part is written in llama.cpp's LoRA format; vision-tower and
projector targets go into a second file beside it. Use them with --lora on the task commands, or
model.loadAdapter() from code. To fold an adapter into the weights instead (no runtime cost, any
quantized type): paligemma convert <hf-dir> --merge <adapter-dir>.

options:
      --base <file|dir>      the base: our text GGUF (its mmproj beside it) or the HF checkpoint folder (required)
      --out <dir>            where the files go (default: the current folder)
      --type <t>             ${LORA_TYPES.join(' ')} (default f16)
      --name <name>          base file name (default: the adapter folder's name)
      --json                 print { adapter, visionAdapter?, targets, rank } as JSON
  -h, --help                 this text`,
  options: {
    base: { type: 'string' },
    out: { type: 'string' },
    type: { type: 'string' },
    name: { type: 'string' },
    json: { type: 'boolean' },
  },
  positionals: true,
  async run({ values, positionals }, { out, err }) {
    if (positionals.length !== 1) throw new UsageError('convert-lora takes exactly one adapter folder', 'convert-lora');
    const base = values.base;
    if (typeof base !== 'string') throw new UsageError('--base is required: the model the adapter was trained on', 'convert-lora');
    return untilSignal(err, 'convert-lora', async (signal) => {
      const res = await convertLora({
        adapter: positionals[0]!,
        base,
        outDir: (values.out as string | undefined) ?? process.cwd(),
        type: choiceOption('type', values.type, LORA_TYPES),
        name: values.name as string | undefined,
        signal,
      });
      if (values.json) writeJson(out, res);
      else out.write(`${res.adapter}\n${res.visionAdapter ? `${res.visionAdapter}\n` : ''}`);
      return 0;
    });
  },
};
