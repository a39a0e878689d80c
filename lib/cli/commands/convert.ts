/** `paligemma convert`: a Hugging Face checkpoint to a GGUF pair. */
import { convert, TEXT_TYPES, VISION_TYPES } from '../../convert/index';
import { type Command, choiceOption, intOption, UsageError, writeJson } from '../args';
import { progressPrinter } from '../progress';

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
      --name <name>          base file name (default: the checkpoint folder's name)
  -t, --threads <n>          quantization threads (default: all CPUs)
      --json                 print { model, mmproj } as JSON
  -h, --help                 this text`,
  options: {
    out: { type: 'string' },
    type: { type: 'string' },
    'vision-type': { type: 'string' },
    'seg-decoder': { type: 'string' },
    name: { type: 'string' },
    threads: { type: 'string', short: 't' },
    json: { type: 'boolean' },
  },
  positionals: true,
  async run({ values, positionals }, { out, err }) {
    if (positionals.length !== 1) throw new UsageError('convert takes exactly one checkpoint folder', 'convert');
    const controller = new AbortController();
    const onSignal = () => controller.abort();
    process.once('SIGINT', onSignal);
    try {
      const res = await convert({
        input: positionals[0]!,
        outDir: (values.out as string | undefined) ?? process.cwd(),
        type: choiceOption('type', values.type, TEXT_TYPES),
        visionType: choiceOption('vision-type', values['vision-type'], VISION_TYPES),
        segDecoder: values['seg-decoder'] as string | undefined,
        name: values.name as string | undefined,
        threads: intOption('threads', values.threads, 1),
        signal: controller.signal,
        onProgress: progressPrinter(err),
      });
      if (values.json) writeJson(out, res);
      else out.write(`${res.model}\n${res.mmproj}\n`);
      return 0;
    } finally {
      process.removeListener('SIGINT', onSignal);
    }
  },
};
