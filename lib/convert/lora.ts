/**
 * PEFT LoRA adapters for PaliGemma -> GGUF.
 *
 * A PEFT adapter folder holds `adapter_config.json` and `adapter_model.safetensors` with
 * `<module>.lora_A.weight` [r, in] and `<module>.lora_B.weight` [out, r]; the adapted weight is
 * W + s * B @ A with s = lora_alpha / r (rsLoRA: lora_alpha / sqrt(r)), per module where
 * `rank_pattern` / `alpha_pattern` say so. Written as a pair, like the model:
 *  - `<name>-lora-<type>.gguf`: the language-model targets in llama.cpp's own LoRA format (so
 *    llama.cpp's tools load it too), with s folded into B and `adapter.lora.alpha` 0 (scale 1);
 *  - `<name>-mmproj-lora-<type>.gguf`, only when the adapter reaches the vision tower or the
 *    projector: the same pairs under our vision tensor names (`v.blk.N.attn_q.weight.lora_a`, ...,
 *    `mm.0.weight.lora_a`), unpadded (the runtime pads SigLIP's MLP as the model file is padded).
 * Both carry `paligemma.adapter.*` keys naming the base, its family and widths, so a mismatched pair
 * is refused at load.
 */
import fs from 'node:fs';
import path from 'node:path';
import { AbortError, callNative, invalidArgument, PaliGemmaError } from '../errors';
import { readGGUF } from '../gguf/read';
import type { GGMLTypeName } from '../gguf/types';
import { GGUFValueType, GGUFWriter } from '../gguf/write';
import { getBinding } from '../native/binding';
import { type PaliGemmaConfig, readPaliGemmaConfig } from './config';
import { toFloat32 } from './dtype';
import { Checkpoint, type SafeTensor } from './safetensors';

export type LoraType = 'f32' | 'f16';
export const LORA_TYPES: readonly LoraType[] = ['f32', 'f16'];

export interface ConvertLoraOptions {
  /** A PEFT adapter folder (adapter_config.json + adapter_model.safetensors). */
  adapter: string;
  /** The base it was trained on: our text GGUF (its mmproj found beside it) or the Hugging Face checkpoint folder. */
  base: string;
  /** Where the files go (default: the adapter folder). */
  outDir?: string;
  /** Base file name (default: the adapter folder's name). */
  name?: string;
  /** Type of the LoRA matrices (default 'f16'). */
  type?: LoraType;
  signal?: AbortSignal;
}

export interface ConvertLoraResult {
  /** The language-model part (llama.cpp's LoRA format); always written. */
  adapter: string;
  /** The vision/projector part, when the adapter has one. */
  visionAdapter?: string;
  /** What the adapter changes, as module kinds: 'text.q_proj', 'vision.fc1', 'projector', ... */
  targets: string[];
  rank: number;
}

/** The base's shapes, from its config.json or from our GGUF pair. */
export interface LoraBase {
  name: string;
  family: 'paligemma' | 'paligemma2';
  arch: 'gemma' | 'gemma2';
  text: { hidden: number; ffn: number; layers: number; q: number; kv: number };
  vision: { hidden: number; ffn: number; layers: number; projection: number } | null;
}

/** The adapter_config.json fields that decide the weights. */
export interface AdapterConfig {
  file: string;
  r: number;
  alpha: number;
  rslora: boolean;
  rankPattern: Record<string, number>;
  alphaPattern: Record<string, number>;
  baseModel: string | null;
}

type Json = Record<string, unknown>;

function invalid(file: string, what: string) {
  return new PaliGemmaError('ERR_INVALID_FILE', `${file}: ${what}`);
}

function numberMap(file: string, key: string, v: unknown): Record<string, number> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw invalid(file, `${key} must be an object`);
  const out: Record<string, number> = {};
  for (const [k, x] of Object.entries(v as Json)) {
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) throw invalid(file, `${key}.${k} must be a positive number, got ${JSON.stringify(x)}`);
    out[k] = x;
  }
  return out;
}

export async function readAdapterConfig(dir: string): Promise<AdapterConfig> {
  const file = path.join(dir, 'adapter_config.json');
  let cfg: Json;
  try {
    cfg = JSON.parse(await fs.promises.readFile(file, 'utf8'));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code)
      throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${file}: ${code === 'ENOENT' ? 'missing (not a PEFT adapter folder?)' : `cannot read (${code})`}`, {
        cause: err,
      });
    throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: not valid JSON`, { cause: err });
  }
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) throw invalid(file, 'not a JSON object');
  if (cfg.peft_type !== undefined && cfg.peft_type !== 'LORA')
    throw invalid(file, `peft_type is ${JSON.stringify(cfg.peft_type)}; only LORA adapters are supported`);
  if (cfg.use_dora === true) throw invalid(file, 'use_dora is true: DoRA adapters (weight-decomposed LoRA) are not supported');
  if (cfg.fan_in_fan_out === true) throw invalid(file, 'fan_in_fan_out is true: transposed (Conv1D-style) adapters are not supported');
  if (Array.isArray(cfg.modules_to_save) && cfg.modules_to_save.length) {
    throw invalid(
      file,
      `modules_to_save replaces whole modules (${cfg.modules_to_save.map(String).join(', ')}), which a LoRA adapter file cannot carry: merge the fine-tune into a full checkpoint and convert that`,
    );
  }
  if (cfg.layer_replication) throw invalid(file, 'layer_replication is not supported');
  const r = cfg.r;
  if (typeof r !== 'number' || !Number.isInteger(r) || r <= 0) throw invalid(file, `r must be a positive integer, got ${JSON.stringify(r)}`);
  const alpha = cfg.lora_alpha ?? r;
  if (typeof alpha !== 'number' || !Number.isFinite(alpha) || alpha <= 0)
    throw invalid(file, `lora_alpha must be a positive number, got ${JSON.stringify(alpha)}`);
  return {
    file,
    r,
    alpha,
    rslora: cfg.use_rslora === true,
    rankPattern: numberMap(file, 'rank_pattern', cfg.rank_pattern),
    alphaPattern: numberMap(file, 'alpha_pattern', cfg.alpha_pattern),
    baseModel: typeof cfg.base_model_name_or_path === 'string' ? cfg.base_model_name_or_path : null,
  };
}

/** PEFT's own rule: a pattern key applies to a module whose name ends with `.<key>` (or is it). */
function patternValue(patterns: Record<string, number>, module: string): number | undefined {
  for (const [key, v] of Object.entries(patterns)) {
    try {
      if (new RegExp(`(^|\\.)${key}$`).test(module)) return v;
    } catch {
      if (module === key || module.endsWith(`.${key}`)) return v;
    }
  }
  return undefined;
}

/** s for one module: alpha / r, or alpha / sqrt(r) with rsLoRA, with the per-module patterns. */
export function loraScale(cfg: AdapterConfig, module: string): { rank: number; scale: number } {
  const rank = patternValue(cfg.rankPattern, module) ?? cfg.r;
  const alpha = patternValue(cfg.alphaPattern, module) ?? cfg.alpha;
  return { rank, scale: cfg.rslora ? alpha / Math.sqrt(rank) : alpha / rank };
}

/** One adapted matrix: where it goes and its two factors. */
export interface LoraTarget {
  /** The PEFT module path (without `base_model.model.` and `.lora_X.weight`). */
  module: string;
  part: 'text' | 'vision' | 'projector';
  /** Our tensor name of the base weight: 'blk.3.attn_q.weight', 'v.blk.0.ffn_up.weight', 'mm.0.weight'. */
  tensor: string;
  /** 'text.q_proj', 'vision.fc1', 'projector'. */
  kind: string;
  layer: number;
  a: SafeTensor;
  b: SafeTensor;
  rank: number;
  scale: number;
  inDim: number;
  outDim: number;
}

const TEXT_MODULES: Record<string, string> = {
  q_proj: 'attn_q',
  k_proj: 'attn_k',
  v_proj: 'attn_v',
  o_proj: 'attn_output',
  gate_proj: 'ffn_gate',
  up_proj: 'ffn_up',
  down_proj: 'ffn_down',
};
const VISION_MODULES: Record<string, string> = {
  q_proj: 'attn_q',
  k_proj: 'attn_k',
  v_proj: 'attn_v',
  out_proj: 'attn_out',
  fc1: 'ffn_up',
  fc2: 'ffn_down',
};

const TEXT_PATH = /^(?:language_model\.model\.|model\.language_model\.)layers\.(\d+)\.(?:self_attn|mlp)\.([a-z_]+)$/;
const VISION_PATH = /^(?:model\.)?vision_tower\.vision_model\.encoder\.layers\.(\d+)\.(?:self_attn|mlp)\.([a-z0-9_]+)$/;
const PROJECTOR_PATH = /^(?:model\.)?multi_modal_projector\.linear$/;

/** The expected [out, in] of a base matrix. */
function expectedShape(base: LoraBase, part: LoraTarget['part'], module: string): [number, number] | null {
  const t = base.text;
  if (part === 'text') {
    const shapes: Record<string, [number, number]> = {
      q_proj: [t.q, t.hidden],
      k_proj: [t.kv, t.hidden],
      v_proj: [t.kv, t.hidden],
      o_proj: [t.hidden, t.q],
      gate_proj: [t.ffn, t.hidden],
      up_proj: [t.ffn, t.hidden],
      down_proj: [t.hidden, t.ffn],
    };
    return shapes[module] ?? null;
  }
  const v = base.vision;
  if (!v) return null;
  if (part === 'projector') return [v.projection, v.hidden];
  const shapes: Record<string, [number, number]> = {
    q_proj: [v.hidden, v.hidden],
    k_proj: [v.hidden, v.hidden],
    v_proj: [v.hidden, v.hidden],
    out_proj: [v.hidden, v.hidden],
    fc1: [v.ffn, v.hidden],
    fc2: [v.hidden, v.ffn],
  };
  return shapes[module] ?? null;
}

/** Pairs every lora_A with its lora_B, checks both against the base and names their target. */
export function planLora(ckpt: Checkpoint, file: string, cfg: AdapterConfig, base: LoraBase): LoraTarget[] {
  const pairs = new Map<string, { a?: SafeTensor; b?: SafeTensor }>();
  for (const name of ckpt.names()) {
    const m = /^base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight$/.exec(name);
    if (!m) {
      if (/\.lora_(?:embedding_)?[AB]|lora_magnitude/.test(name)) throw invalid(file, `tensor '${name}': this kind of LoRA tensor is not supported`);
      throw invalid(file, `tensor '${name}' is not a LoRA factor (base_model.model.<module>.lora_A/B.weight); bias or full-module tensors are not supported`);
    }
    const entry = pairs.get(m[1]!) ?? {};
    entry[m[2] === 'A' ? 'a' : 'b'] = ckpt.get(name)!;
    pairs.set(m[1]!, entry);
  }
  if (!pairs.size) throw invalid(file, 'holds no LoRA tensors');
  const targets: LoraTarget[] = [];
  for (const [module, { a, b }] of pairs) {
    if (!a || !b) throw invalid(file, `module '${module}' has lora_${a ? 'A' : 'B'} but no lora_${a ? 'B' : 'A'}`);
    let part: LoraTarget['part'];
    let layer = -1;
    let leaf: string;
    let tensor: string;
    const textMatch = TEXT_PATH.exec(module);
    const visionMatch = textMatch ? null : VISION_PATH.exec(module);
    if (textMatch) {
      const m = textMatch;
      part = 'text';
      layer = Number(m[1]);
      leaf = m[2]!;
      if (!TEXT_MODULES[leaf])
        throw invalid(file, `module '${module}': the language model's ${leaf} cannot be adapted (only ${Object.keys(TEXT_MODULES).join(', ')})`);
      if (layer >= base.text.layers) throw invalid(file, `module '${module}': the base language model has ${base.text.layers} layers`);
      tensor = `blk.${layer}.${TEXT_MODULES[leaf]}.weight`;
    } else if (visionMatch) {
      const m = visionMatch;
      part = 'vision';
      layer = Number(m[1]);
      leaf = m[2]!;
      if (!VISION_MODULES[leaf])
        throw invalid(file, `module '${module}': the vision tower's ${leaf} cannot be adapted (only ${Object.keys(VISION_MODULES).join(', ')})`);
      if (!base.vision)
        throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `${file}: module '${module}' adapts the vision tower, but no vision model of the base was found`);
      if (layer >= base.vision.layers) throw invalid(file, `module '${module}': the base vision tower has ${base.vision.layers} layers`);
      tensor = `v.blk.${layer}.${VISION_MODULES[leaf]}.weight`;
    } else if (PROJECTOR_PATH.test(module)) {
      part = 'projector';
      leaf = 'linear';
      if (!base.vision)
        throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `${file}: module '${module}' adapts the projector, but no vision model of the base was found`);
      tensor = 'mm.0.weight';
    } else {
      throw invalid(
        file,
        `module '${module}' is not a PaliGemma linear layer this runtime can adapt (embeddings, lm_head, norms and the patch embedding cannot be)`,
      );
    }
    const expect = expectedShape(base, part, leaf)!;
    const { rank, scale } = loraScale(cfg, module);
    const [ar, ain] = a.shape as [number, number];
    const [bout, br] = b.shape as [number, number];
    if (a.shape.length !== 2 || b.shape.length !== 2 || ar !== br) {
      throw invalid(file, `module '${module}': lora_A [${a.shape.join(', ')}] and lora_B [${b.shape.join(', ')}] do not pair up`);
    }
    if (ar !== rank) throw invalid(file, `module '${module}': rank ${ar} in the weights, ${rank} in ${path.basename(cfg.file)}`);
    if (ain !== expect[1] || bout !== expect[0]) {
      throw new PaliGemmaError(
        'ERR_INVALID_ARGUMENT',
        `${file}: module '${module}' maps ${ain} -> ${bout}, but the base ${base.name}'s ${tensor} maps ${expect[1]} -> ${expect[0]}: an adapter for another model`,
      );
    }
    targets.push({
      module,
      part,
      tensor,
      kind: part === 'projector' ? 'projector' : `${part}.${leaf}`,
      layer,
      a,
      b,
      rank,
      scale,
      inDim: ain,
      outDim: bout,
    });
  }
  return targets.sort((x, y) => (x.tensor < y.tensor ? -1 : x.tensor > y.tensor ? 1 : 0));
}

/** The base's shapes: from a Hugging Face folder's config.json, or our text GGUF and the mmproj beside it. */
export async function readLoraBase(base: string): Promise<LoraBase> {
  if (!fs.existsSync(base)) throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `base ${base}: no such file or folder`);
  if (fs.statSync(base).isDirectory()) {
    const cfg: PaliGemmaConfig = await readPaliGemmaConfig(base);
    const t = cfg.text;
    return {
      name: path.basename(base),
      family: cfg.family,
      arch: t.arch,
      text: { hidden: t.hidden, ffn: t.ffn, layers: t.layers, q: t.heads * t.headDim, kv: t.kvHeads * t.headDim },
      vision: { hidden: cfg.vision.hidden, ffn: cfg.vision.ffn, layers: cfg.vision.layers, projection: cfg.projectionDim },
    };
  }
  const text = await readGGUF(base, { maxArrayLength: 0 });
  const md = text.metadata;
  const arch = md['general.architecture'];
  if (arch !== 'gemma' && arch !== 'gemma2') throw invalid(base, `general.architecture is ${JSON.stringify(arch)}: not a PaliGemma text GGUF`);
  const num = (info: typeof md, file: string, key: string) => {
    const v = info[key];
    if (typeof v !== 'number') throw invalid(file, `metadata '${key}' is missing`);
    return v;
  };
  const hidden = num(md, base, `${arch}.embedding_length`);
  const heads = num(md, base, `${arch}.attention.head_count`);
  const kvHeads = num(md, base, `${arch}.attention.head_count_kv`);
  const keyLength = num(md, base, `${arch}.attention.key_length`);
  let vision: LoraBase['vision'] = null;
  const dir = path.dirname(base);
  const stem = path.basename(base, '.gguf').replace(/-[a-z0-9_]+$/i, '');
  const mmproj = fs
    .readdirSync(dir)
    .filter((f) => f.startsWith(`${stem}-mmproj-`) && f.endsWith('.gguf') && !f.includes('-mmproj-lora-'))
    .sort()[0];
  if (mmproj) {
    const file = path.join(dir, mmproj);
    const vm = (await readGGUF(file, { maxArrayLength: 0 })).metadata;
    const ffn =
      typeof vm['paligemma.vision_ffn_unpadded'] === 'number'
        ? (vm['paligemma.vision_ffn_unpadded'] as number)
        : num(vm, file, 'clip.vision.feed_forward_length');
    vision = {
      hidden: num(vm, file, 'clip.vision.embedding_length'),
      ffn,
      layers: num(vm, file, 'clip.vision.block_count'),
      projection: num(vm, file, 'clip.vision.projection_dim'),
    };
  }
  return {
    name: typeof md['general.name'] === 'string' ? (md['general.name'] as string) : path.basename(base),
    family: arch === 'gemma2' ? 'paligemma2' : 'paligemma',
    arch,
    text: {
      hidden,
      ffn: num(md, base, `${arch}.feed_forward_length`),
      layers: num(md, base, `${arch}.block_count`),
      q: heads * keyLength,
      kv: kvHeads * keyLength,
    },
    vision,
  };
}

/** An adapter trained on the other PaliGemma generation, as far as its config names its base. */
function checkFamily(cfg: AdapterConfig, base: LoraBase) {
  const named = cfg.baseModel?.toLowerCase() ?? '';
  const saysV2 = /paligemma-?2/.test(named);
  const saysV1 = /paligemma(?!-?2)/.test(named) && /paligemma-\d/.test(named);
  if ((saysV2 && base.family === 'paligemma') || (saysV1 && base.family === 'paligemma2')) {
    throw new PaliGemmaError(
      'ERR_INVALID_ARGUMENT',
      `${cfg.file}: the adapter was trained on ${cfg.baseModel} (${saysV2 ? 'PaliGemma 2' : 'PaliGemma 1'}), but the base ${base.name} is ${base.family === 'paligemma2' ? 'PaliGemma 2' : 'PaliGemma 1'}`,
    );
  }
}

// The targets key lists the whole adapter's (both parts), so either file describes it.
function writeAdapterMetadata(w: GGUFWriter, base: LoraBase, cfg: AdapterConfig, targets: LoraTarget[], part: 'text' | 'vision', name: string) {
  w.setString('general.type', 'adapter')
    .setString('general.name', name)
    .setString('paligemma.adapter.base_name', base.name)
    .setString('paligemma.adapter.family', base.family)
    .setU32('paligemma.adapter.rank', cfg.r)
    .setF32('paligemma.adapter.alpha', cfg.alpha)
    .setBool('paligemma.adapter.rslora', cfg.rslora)
    .setArray('paligemma.adapter.targets', GGUFValueType.STRING, [...new Set(targets.map((t) => t.kind))].sort())
    .setU32('paligemma.adapter.text_embedding_length', base.text.hidden);
  if (cfg.baseModel) w.setString('paligemma.adapter.trained_on', cfg.baseModel);
  if (part === 'text') {
    // llama.cpp's LoRA format: scale = alpha / rank when alpha is set; 0 means 1, and s is in B.
    w.setString('general.architecture', base.arch).setString('adapter.type', 'lora').setF32('adapter.lora.alpha', 0);
  } else {
    w.setString('general.architecture', 'clip')
      .setU32('paligemma.adapter.vision_embedding_length', base.vision!.hidden)
      .setU32('paligemma.adapter.vision_block_count', base.vision!.layers);
  }
}

/** A, as stored ([r, in] row-major = ggml [in, r]); B scaled by s ([out, r] = ggml [r, out]). */
async function finiteFloats(ckpt: Checkpoint, t: SafeTensor, scale: number, file: string, module: string): Promise<Float32Array> {
  const f32 = toFloat32(await ckpt.read(t, 0, t.byteLength), t.dtype);
  for (let i = 0; i < f32.length; i++) {
    if (!Number.isFinite(f32[i]!)) throw invalid(file, `module '${module}': ${t.name.includes('lora_A') ? 'lora_A' : 'lora_B'} holds NaN or infinite values`);
    if (scale !== 1) f32[i]! *= scale;
  }
  return f32;
}

async function factorBytes(ckpt: Checkpoint, t: SafeTensor, scale: number, type: LoraType, file: string, module: string): Promise<Uint8Array> {
  const f32 = await finiteFloats(ckpt, t, scale, file, module);
  if (type === 'f32') return new Uint8Array(f32.buffer);
  const { binding } = getBinding();
  return callNative(() => binding.quantizeRows(f32, t.shape[1]!, 'f16'));
}

/**
 * Converts a PEFT LoRA adapter for a PaliGemma base into `<name>-lora-<type>.gguf` and, when it
 * adapts the vision tower or projector, `<name>-mmproj-lora-<type>.gguf`. Written under temporary
 * names and renamed at the end.
 */
/** The adapter folder's config, its base's shapes (checked to be its family) and its weights file. */
async function openAdapterFolder(dir: string, basePath: string): Promise<{ cfg: AdapterConfig; base: LoraBase; weights: string }> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${dir}: not an adapter folder`);
  const cfg = await readAdapterConfig(dir);
  const base = await readLoraBase(basePath);
  checkFamily(cfg, base);
  const weights = path.join(dir, 'adapter_model.safetensors');
  if (!fs.existsSync(weights)) {
    throw new PaliGemmaError(
      'ERR_FILE_NOT_FOUND',
      `${weights}: missing${fs.existsSync(path.join(dir, 'adapter_model.bin')) ? ' (adapter_model.bin is a pickle, which is not read: save the adapter with safe_serialization)' : ''}`,
    );
  }
  return { cfg, base, weights };
}

/** One module's factors for merging, in f32: A [rank, in], B [out, rank] with its scale folded in. */
export interface LoraMergeFactors {
  rank: number;
  inDim: number;
  a: Float32Array;
  b: Float32Array;
}

/**
 * Reads an adapter for folding into the weights of the Hugging Face checkpoint `input` as it is
 * converted: our tensor name -> factors, B already times PEFT's scale and the user's `scale`.
 */
export async function readLoraForMerge(adapterDir: string, input: string, scale: number): Promise<Map<string, LoraMergeFactors>> {
  const dir = path.resolve(adapterDir);
  const { cfg, base, weights } = await openAdapterFolder(dir, input);
  const ckpt = await Checkpoint.openFiles([weights]);
  try {
    const out = new Map<string, LoraMergeFactors>();
    for (const t of planLora(ckpt, weights, cfg, base)) {
      const a = await finiteFloats(ckpt, t.a, 1, weights, t.module);
      const b = await finiteFloats(ckpt, t.b, t.scale * scale, weights, t.module);
      out.set(t.tensor, { rank: t.rank, inDim: t.inDim, a, b });
    }
    return out;
  } finally {
    await ckpt.close();
  }
}

/** Adds B @ A to `rows` rows of a [out, in] weight starting at output row `row0` (f32, in place). */
export function mergeLoraRows(w: Float32Array, row0: number, rows: number, f: LoraMergeFactors) {
  const { a, b, rank, inDim } = f;
  for (let i = 0; i < rows; i++) {
    const o = row0 + i;
    const dst = w.subarray(i * inDim, (i + 1) * inDim);
    for (let k = 0; k < rank; k++) {
      const c = b[o * rank + k]!;
      if (c === 0) continue;
      const ak = a.subarray(k * inDim, (k + 1) * inDim);
      for (let j = 0; j < inDim; j++) dst[j]! += c * ak[j]!;
    }
  }
}

export async function convertLora(options: ConvertLoraOptions): Promise<ConvertLoraResult> {
  if (!options || typeof options !== 'object') throw invalidArgument('convertLora(options)', 'an object', options);
  const o = options;
  if (typeof o.adapter !== 'string' || !o.adapter) throw invalidArgument('convertLora options.adapter', 'a PEFT adapter folder', o.adapter);
  if (typeof o.base !== 'string' || !o.base) throw invalidArgument('convertLora options.base', 'the base text GGUF or Hugging Face checkpoint folder', o.base);
  if (o.outDir !== undefined && (typeof o.outDir !== 'string' || !o.outDir)) throw invalidArgument('convertLora options.outDir', 'a folder path', o.outDir);
  if (o.type !== undefined && !LORA_TYPES.includes(o.type)) throw invalidArgument('convertLora options.type', `one of ${LORA_TYPES.join(', ')}`, o.type);
  if (o.name !== undefined && (typeof o.name !== 'string' || !/^[^/\\]+$/.test(o.name)))
    throw invalidArgument('convertLora options.name', 'a file name without slashes', o.name);
  const checkAbort = () => {
    if (o.signal?.aborted) throw new AbortError('convertLora: aborted', { cause: o.signal.reason });
  };
  checkAbort();
  const dir = path.resolve(o.adapter);
  const { cfg, base, weights } = await openAdapterFolder(dir, path.resolve(o.base));
  const type = o.type ?? 'f16';
  const outDir = path.resolve(o.outDir ?? dir);
  const name = o.name ?? path.basename(dir);
  await fs.promises.mkdir(outDir, { recursive: true });
  const ckpt = await Checkpoint.openFiles([weights]);
  const writers: GGUFWriter[] = [];
  try {
    const targets = planLora(ckpt, weights, cfg, base);
    const ggmlType: GGMLTypeName = type === 'f32' ? 'F32' : 'F16';
    const write = async (part: 'text' | 'vision', file: string, list: LoraTarget[]) => {
      const w = new GGUFWriter(file);
      writers.push(w);
      writeAdapterMetadata(w, base, cfg, targets, part, name);
      for (const t of list) {
        w.addTensor(`${t.tensor}.lora_a`, [t.inDim, t.rank], ggmlType);
        w.addTensor(`${t.tensor}.lora_b`, [t.rank, t.outDim], ggmlType);
      }
      await w.begin();
      for (const t of list) {
        checkAbort();
        await w.writeTensor(`${t.tensor}.lora_a`, await factorBytes(ckpt, t.a, 1, type, weights, t.module));
        await w.writeTensor(`${t.tensor}.lora_b`, await factorBytes(ckpt, t.b, t.scale, type, weights, t.module));
      }
      await w.close();
      return w;
    };
    const text = targets.filter((t) => t.part === 'text');
    const vision = targets.filter((t) => t.part !== 'text');
    const adapterPath = path.join(outDir, `${name}-lora-${type}.gguf`);
    const visionPath = path.join(outDir, `${name}-mmproj-lora-${type}.gguf`);
    const tw = await write('text', adapterPath, text);
    const vw = vision.length ? await write('vision', visionPath, vision) : null;
    checkAbort();
    if (vw) await vw.commit();
    else await fs.promises.rm(visionPath, { force: true }); // a stale vision part must not pair with the new text part
    await tw.commit();
    return {
      adapter: adapterPath,
      ...(vw ? { visionAdapter: visionPath } : {}),
      targets: [...new Set(targets.map((t) => t.kind))].sort(),
      rank: cfg.r,
    };
  } catch (err) {
    await Promise.all(writers.map((w) => w.abort()));
    throw err;
  } finally {
    await ckpt.close();
  }
}
