/**
 * Which GGUF pair a CLI command runs: --model names a text GGUF (its mmproj is found beside it), a
 * folder holding one of each, or a hub repo (`org/name[@revision]` where no such path exists, or
 * `hf://org/name[@revision]`), pulled and converted on first use; --mmproj names the vision file explicitly.
 */
import fs from 'node:fs';
import path from 'node:path';
import { TEXT_TYPES } from '../convert/index';
import { PaliGemmaError } from '../errors';
import { readGGUF } from '../gguf/read';
import { resolveHubModel } from '../hub/pull';
import { hubModelRef } from '../hub/repo';
import { GPU_CHOICES } from '../native/contract';
import { type Out, UsageError } from './args';
import { pullProgress } from './progress';

/** The help lines of the options that choose the model and where it runs, shared by every command that loads one. */
export const MODEL_LOCATION_USAGE = `  -m, --model <x.gguf|DIR|org/name>
                             the text GGUF (its <name>-mmproj-*.gguf is found beside it), a folder holding
                             both, or a hub repo (org/name[@rev] or hf://org/name): pulled on first use
      --mmproj <file>        the vision GGUF, when it is not beside the text model
      --gpu <g>              ${GPU_CHOICES.join(' | ')} (default auto)
  -t, --threads <n>          CPU threads (default: physical cores)
      --context-size <n>     tokens of context (default: image tokens + 512)`;

async function architecture(file: string): Promise<unknown> {
  return (await readGGUF(file, { maxArrayLength: 0 }).catch(() => null))?.metadata['general.architecture'];
}

function isCheckpoint(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'config.json')) && fs.readdirSync(dir).some((f) => f.endsWith('.safetensors') || f.endsWith('.safetensors.index.json'));
}

function notConverted(dir: string): PaliGemmaError {
  return new PaliGemmaError('ERR_INVALID_ARGUMENT', `${dir} is a Hugging Face checkpoint, not GGUF files: convert it first with \`paligemma convert ${dir}\``);
}

/**
 * The mmproj beside `<name>-<type>.gguf`: `<name>-mmproj-*.gguf`, else the folder's only vision GGUF.
 * Returns the candidates when there is not exactly one.
 */
async function mmprojBeside(model: string): Promise<string | string[]> {
  const dir = path.dirname(model);
  const base = path.basename(model, '.gguf');
  const type = TEXT_TYPES.find((t) => base.endsWith(`-${t}`));
  const name = type ? base.slice(0, -type.length - 1) : base;
  const ggufs = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.gguf') && path.join(dir, f) !== model)
    .sort();
  const named = ggufs.filter((f) => f.startsWith(`${name}-mmproj-`));
  if (named.length === 1) return path.join(dir, named[0]!);
  if (named.length > 1) return named.map((f) => path.join(dir, f));
  const vision: string[] = [];
  for (const f of ggufs) if ((await architecture(path.join(dir, f))) === 'clip') vision.push(path.join(dir, f));
  return vision.length === 1 ? vision[0]! : vision;
}

/** A hub repo as --model: the pair from paligemma's cache, pulled (with progress on `err`) when not there yet. */
async function hubPair(model: string, mmproj: string | undefined, o: ModelPairOptions): Promise<{ model: string; mmproj: string }> {
  if (mmproj !== undefined)
    throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `--mmproj ${mmproj}: not with a hub repo as --model (${model}): the repo's pair is used`);
  try {
    const r = await resolveHubModel(model, { signal: o.signal, onProgress: o.err ? pullProgress(o.err, o.json) : undefined });
    return { model: r.model, mmproj: r.mmproj };
  } catch (err) {
    // `org/name` could also be a mistyped path: say so.
    if (err instanceof PaliGemmaError && err.code === 'ERR_FILE_NOT_FOUND' && !model.startsWith('hf://')) {
      throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `--model ${model}: no such file or folder, and as a hub repo: ${err.message}`, { cause: err });
    }
    throw err;
  }
}

export interface ModelPairOptions {
  /** Where a hub repo's download and conversion progress goes (none without). */
  err?: Out;
  /** Progress as JSON lines. */
  json?: boolean;
  signal?: AbortSignal;
}

export async function resolveModelPair(
  model: string | undefined,
  mmproj: string | undefined,
  options: ModelPairOptions = {},
): Promise<{ model: string; mmproj: string }> {
  if (!model) throw new UsageError('--model is required (a text GGUF, or a folder holding the text GGUF and its mmproj)');
  if (hubModelRef(model)) return hubPair(model, mmproj, options);
  if (!fs.existsSync(model)) throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `--model ${model}: no such file or folder`);
  if (mmproj !== undefined && !fs.existsSync(mmproj)) throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `--mmproj ${mmproj}: no such file`);
  if (fs.statSync(model).isDirectory()) {
    const text: string[] = [];
    const vision: string[] = [];
    for (const f of fs
      .readdirSync(model)
      .filter((x) => x.endsWith('.gguf'))
      .sort()) {
      const file = path.join(model, f);
      const arch = await architecture(file);
      if (arch === 'clip') vision.push(file);
      else if (arch === 'gemma' || arch === 'gemma2') text.push(file);
    }
    if (text.length === 0 && vision.length === 0 && isCheckpoint(model)) throw notConverted(model);
    if (text.length !== 1 || (vision.length !== 1 && !mmproj)) {
      throw new PaliGemmaError(
        'ERR_INVALID_ARGUMENT',
        `--model ${model}: expected one text GGUF and one mmproj GGUF in the folder, found ${text.length} text and ${vision.length} mmproj files; name them with --model FILE and --mmproj FILE`,
      );
    }
    return { model: text[0]!, mmproj: mmproj ?? vision[0]! };
  }
  if (mmproj) return { model, mmproj };
  const found = await mmprojBeside(model);
  if (typeof found === 'string') return { model, mmproj: found };
  throw new PaliGemmaError(
    'ERR_INVALID_ARGUMENT',
    found.length
      ? `--model ${model}: ${found.length} mmproj files beside it (${found.map((f) => path.basename(f)).join(', ')}): choose one with --mmproj FILE`
      : `--model ${model}: no mmproj file beside it (expected <name>-mmproj-<type>.gguf in the same folder): name it with --mmproj FILE`,
  );
}
