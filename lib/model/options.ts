/**
 * The options and results of PaliGemma's methods, and the checks that turn user input into the
 * addon's contract (lib/native/contract.ts) with messages that name the option.
 */
import fs from 'node:fs';
import { invalidArgument, PaliGemmaError } from '../errors';
import type { PullOptions } from '../hub/pull';
import { resolveHubModel } from '../hub/pull';
import { hubModelRef } from '../hub/repo';
import type { ImageInput } from '../image/input';
import {
  FLASH_ATTENTION_MODES,
  type FlashAttentionMode,
  GPU_CHOICES,
  type GpuChoice,
  KV_CACHE_TYPES,
  type KvCacheType,
  type NativeGenerateOptions,
  type NativeLoadOptions,
  type NativeModelInfo,
  type Phase,
  type StopReason,
  VISION_ATTENTION_MODES,
  VISION_MATMUL_MODES,
  type VisionAttentionMode,
  type VisionMatmulMode,
} from '../native/contract';
import type { Box, Region } from '../tasks/locations';
import type { Mask } from '../tasks/masks';
import * as v from '../validate';
import { Adapter, type AdapterChoice } from './adapter';

export interface LoadOptions {
  /**
   * The text model GGUF (`<name>-<type>.gguf` from `paligemma convert`), or a Hugging Face hub repo:
   * `org/name[@revision]` (when no such path exists) or `hf://org/name[@revision]`, pulled and
   * converted on first use (see pull()); then `mmproj` is left out.
   */
  model: string;
  /** The vision model GGUF (`<name>-mmproj-<type>.gguf`); required unless `model` is a hub repo. */
  mmproj?: string;
  /** With a hub repo as `model`: pull()'s options (types, progress, token...). */
  pull?: Omit<PullOptions, 'repo' | 'signal'>;
  /** Where to run: 'auto' (a GPU when this build has one, else CPU), 'cpu', 'cuda', 'metal' or 'vulkan'. */
  gpu?: GpuChoice;
  /** With a GPU: how many text layers to offload (default: all). */
  gpuLayers?: number;
  /** CPU threads (default: physical cores). */
  threads?: number;
  /** Tokens of context: image tokens + prompt + answer (default: image tokens + 512, within the model's limit). */
  contextSize?: number;
  /** llama.cpp flash attention for the language model (default 'auto'); 'off' also turns the vision tower's fused attention off. */
  flashAttention?: FlashAttentionMode;
  /** KV cache precision (default 'f16'; 'f32' with flashAttention 'off' tracks the float64 reference to ~4e-4). */
  kvCacheType?: KvCacheType;
  /**
   * The vision tower's attention kernel: 'auto' (default: the fastest on this machine, measured at
   * load), 'fused' (ggml's), 'separate' (ggml's ops, f32), 'tiled' (ours, at the widest vectors the
   * CPU has: AVX-512, else AVX2 + FMA), 'tiled-avx2' (ours over AVX2 even where AVX-512 is there),
   * 'int16' (ours with the products in 16-bit integers: q, k, v quantized per row, about as precise as
   * the fused kernel's f16 K and V; over 512-bit vectors with AVX-512 VNNI, else as 'int16-avx2') or
   * 'int16-avx2' (the same over AVX2 even where AVX-512 is there).
   */
  visionAttention?: VisionAttentionMode;
  /**
   * The vision tower's q8_0 and f16 matrix products: 'auto' (default: ours where it measures faster),
   * 'ggml', 'int8' (ours: weights repacked at load; the widest form the CPU has: AVX-512 VNNI, else
   * AVX-VNNI, else AVX2), 'int8-avxvnni' or 'int8-avx2' (ours over 256-bit vectors with that set,
   * even where a wider one is there). For f16 weights "ours" is an f32 product over f16 weights
   * repacked at load (AVX-512 for 'int8' where the CPU has it, else AVX2 + FMA + F16C; the
   * activations stay f32, where ggml rounds them to f16), or with 'int16-avx2' an integer product
   * over AVX2: weights and activations as 14-bit integers per block of 32 (vpmaddwd runs 1.7x the
   * f32 FMA rate on CPUs without AVX-512; about ggml's f16 error, slightly above our f32 form's).
   * 'auto' races every f16 form the CPU has against ggml's. For q8_0 weights 'int16-avx2' is 'int8-avx2'.
   */
  visionMatmul?: VisionMatmulMode;
  /**
   * The text model's q8_0 and q4_0 matrix products on the CPU, the same choices: 'auto' (default:
   * ours on a CPU with VNNI where it measures faster here, over a prefix and for one token; with a
   * GPU, ggml's), 'ggml', 'int8', 'int8-avxvnni' or 'int8-avx2' ('int16-avx2' is 'int8-avx2' here) (ours: the layers' weights packed
   * into our layout as they load; q8_0 takes 6% more memory that way (576 bytes per 512 weights against
   * 544), q4_0 the same; q4_0 has our
   * product in the AVX-512 VNNI form only; the AVX2 form prefills faster but decoded slower than
   * ggml's where measured, so 'auto' leaves it out). Other weight types always run ggml's products.
   */
  textMatmul?: VisionMatmulMode;
  /**
   * Memory-map the text weights. Default: yes with a GPU; no on the CPU, where llama.cpp copies most
   * weights into its repacked (faster) layout anyway, so a mapping would keep them resident twice.
   */
  mmap?: boolean;
  /**
   * MiB of image embeddings the model keeps so that another question about the same image skips
   * the vision tower (default 64; 0 turns the cache off). Keyed by a SHA-256 of the image bytes or pixels.
   */
  imageCacheMB?: number;
  /**
   * Refuse, before allocating anything, a model that cannot fit in the memory available (default
   * true on Linux and Windows when the model runs on the CPU): an error with the estimate instead of
   * a process the out-of-memory killer ends. `PALIGEMMA_MEMORY_AVAILABLE_MB` overrides what is
   * considered available (containers, tests).
   */
  memoryCheck?: boolean;
  /** Called with 0..1 while the weights load. */
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
}

export interface ModelInfo extends NativeModelInfo {
  model: string;
  mmproj: string;
}

export interface GeneratedToken {
  id: number;
  /** The token's piece; may be part of a UTF-8 character (byte tokens). */
  text: string;
}

export interface GenerateOptions {
  image: ImageInput;
  /** The task prompt, e.g. 'caption en', 'answer en what is this?', 'detect cat ; dog'. "\n" is added. */
  prompt: string;
  /** Default 32. */
  maxTokens?: number;
  /** 0 (default) decodes greedily, as the paper does. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  /** Sampling seed (with temperature > 0). */
  seed?: number;
  /** > 1 penalizes repeats over the last 64 tokens (default 1: off). */
  repeatPenalty?: number;
  /** Stop when one of these strings appears; it is not included in the text. */
  stop?: string[];
  /** A GBNF grammar (root rule `root`) the output must follow. */
  grammar?: string;
  /** Return every step's full-vocabulary logits. */
  logits?: boolean;
  /** Treat `<bos>`, `<eos>` and `<image>` in the prompt as control tokens (default false: plain text). */
  specialTokens?: boolean;
  /** Emit these tokens instead of sampling (teacher forcing), e.g. to score a given answer. */
  forceTokens?: ArrayLike<number>;
  /**
   * LoRA adapters of this model (`model.loadAdapter()`) that apply to this call, each at a scale
   * (default 1): to the language model, and to the vision tower and projector where the adapter
   * has parts for them (the image-embedding cache keeps those results apart).
   */
  adapters?: (Adapter | AdapterChoice)[];
  onToken?: (token: GeneratedToken) => void;
  /** Text as it is generated, in whole UTF-8 characters. */
  onText?: (chunk: string) => void;
  /**
   * Called as each part of the call starts: 'encode' (the vision tower; not for a cached image or
   * an ImageEmbedding), 'prefill' (image + prompt through the language model), 'decode'.
   */
  onPhase?: (phase: Phase) => void;
  /** Aborting rejects the call with an AbortError; no callback runs after abort() returns. */
  signal?: AbortSignal;
}

/** Options of the task methods: generate's options (sampling, signal, onText...) minus image and prompt. */
export type TaskOptions = Omit<GenerateOptions, 'image' | 'prompt'> & {
  /** Size of the source image, needed to place boxes when `image` is an ImageEmbedding. */
  imageSize?: { width: number; height: number };
};

export interface Detection {
  label: string;
  /** In pixels of the source image (fractional: bin / 1024 * size). */
  box: Box;
  /** The box as whole pixels inside the image, for cropping (`sharp(image).extract(region)`). */
  region: Region;
}

export interface Segmentation extends Detection {
  /** Full source-image size, 0/255. */
  mask: Mask;
  /** The decoder's 64x64 map for the box (about -1..1; > 0 is inside). */
  mask64: Float32Array;
}

export interface GenerateTimings {
  /** Image decoding, resizing and normalizing (0 for a cached image or an ImageEmbedding). */
  preprocessMs: number;
  /** The vision tower and projector (0 for a cached image or an ImageEmbedding). */
  encodeMs: number;
  /** The image embedding came from the model's cache. */
  imageCached: boolean;
  /** The prefix (image + prompt) through the language model, in one batch. */
  prefillMs: number;
  /** Every step after the first token. */
  decodeMs: number;
  /** Time to the first token: preprocess + encode + prefill + the first sampling. */
  firstTokenMs: number;
  promptTokens: number;
  generatedTokens: number;
}

export interface GenerateResult {
  text: string;
  tokens: number[];
  stopReason: StopReason;
  /** With `logits: true`: one Float32Array per generated step, full vocabulary. */
  logits?: Float32Array[];
  timings: GenerateTimings;
}

const LOAD_KEYS = [
  'model',
  'mmproj',
  'pull',
  'gpu',
  'gpuLayers',
  'threads',
  'contextSize',
  'flashAttention',
  'kvCacheType',
  'visionAttention',
  'visionMatmul',
  'textMatmul',
  'mmap',
  'imageCacheMB',
  'memoryCheck',
  'onProgress',
  'signal',
] as const;
const GENERATE_KEYS = [
  'image',
  'prompt',
  'maxTokens',
  'temperature',
  'topK',
  'topP',
  'minP',
  'seed',
  'repeatPenalty',
  'stop',
  'grammar',
  'logits',
  'specialTokens',
  'forceTokens',
  'adapters',
  'onToken',
  'onText',
  'onPhase',
  'signal',
] as const;

function checkKeys(name: string, o: object, allowed: readonly string[]) {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k)) throw invalidArgument(`${name}.${k}`, `one of the known options (${allowed.join(', ')})`, `unknown option '${k}'`);
  }
}

async function checkReadable(name: string, file: unknown) {
  if (typeof file !== 'string' || !file) throw invalidArgument(name, 'a GGUF file path', file);
  try {
    const st = await fs.promises.stat(file);
    if (!st.isFile()) throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: not a file (${name})`);
  } catch (err) {
    if (err instanceof PaliGemmaError) throw err;
    throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${file}: no such file (${name})`, { cause: err });
  }
}

export interface LoadPlan {
  native: NativeLoadOptions;
  memoryCheck: boolean;
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
}

/** Checks PaliGemma.load's options and the two files; returns what the addon takes. */
export async function planLoad(options: LoadOptions): Promise<LoadPlan> {
  if (!v.isPlainObject(options)) throw invalidArgument('PaliGemma.load(options)', 'an object', options);
  checkKeys('PaliGemma.load options', options, LOAD_KEYS);
  const cacheMB = v.optionalNumber('options.imageCacheMB', options.imageCacheMB, 0, 1 << 20) ?? 64;
  if (options.mmap !== undefined && typeof options.mmap !== 'boolean') throw invalidArgument('options.mmap', 'a boolean', options.mmap);
  if (options.memoryCheck !== undefined && typeof options.memoryCheck !== 'boolean')
    throw invalidArgument('options.memoryCheck', 'a boolean', options.memoryCheck);
  const native: NativeLoadOptions = {
    model: options.model,
    mmproj: options.mmproj as string,
    gpu: v.optionalEnum('options.gpu', options.gpu, GPU_CHOICES) ?? 'auto',
    gpuLayers: v.optionalInteger('options.gpuLayers', options.gpuLayers, 0, 100000),
    threads: v.optionalInteger('options.threads', options.threads, 1, 1024),
    contextSize: v.optionalInteger('options.contextSize', options.contextSize, 16, 1 << 20),
    flashAttention: v.optionalEnum('options.flashAttention', options.flashAttention, FLASH_ATTENTION_MODES),
    kvCacheType: v.optionalEnum('options.kvCacheType', options.kvCacheType, KV_CACHE_TYPES),
    visionAttention: v.optionalEnum('options.visionAttention', options.visionAttention, VISION_ATTENTION_MODES),
    visionMatmul: v.optionalEnum('options.visionMatmul', options.visionMatmul, VISION_MATMUL_MODES),
    textMatmul: v.optionalEnum('options.textMatmul', options.textMatmul, VISION_MATMUL_MODES),
    mmap: options.mmap,
    imageCacheBytes: Math.round(cacheMB * 1024 * 1024),
  };
  const onProgress = v.optionalFunction<(f: number) => void>('options.onProgress', options.onProgress);
  const signal = v.optionalSignal('options.signal', options.signal);
  const hub = typeof options.model === 'string' ? hubModelRef(options.model) : null;
  if (options.pull !== undefined && (!v.isPlainObject(options.pull) || !hub)) {
    throw invalidArgument('options.pull', 'an object, with a hub repo as options.model', options.pull);
  }
  if (hub) {
    if (options.mmproj !== undefined)
      throw invalidArgument('options.mmproj', `nothing when options.model is a hub repo (${options.model}): its pair is used`, options.mmproj);
    const pulled = await resolveHubModel(options.model, { ...options.pull, signal });
    native.model = pulled.model;
    native.mmproj = pulled.mmproj;
  }
  await checkReadable('options.model', native.model);
  await checkReadable('options.mmproj', native.mmproj);
  return { native, memoryCheck: options.memoryCheck !== false, onProgress, signal };
}

/** A checked generate call: the addon's options (image filled in later) and the JS-side parts. */
export interface GeneratePlan {
  native: Omit<NativeGenerateOptions, 'image'>;
  onToken?: (t: GeneratedToken) => void;
  onText?: (s: string) => void;
  onPhase?: (phase: Phase) => void;
  signal?: AbortSignal;
  adapters: { adapter: Adapter; scale: number }[];
}

/** Checks a call's adapters: loaded, not disposed, each once, with finite scales. */
export function planAdapters(name: string, list: unknown): { adapter: Adapter; scale: number }[] {
  if (list === undefined) return [];
  if (!Array.isArray(list)) throw invalidArgument(name, 'an array of adapters (or { adapter, scale })', list);
  return list.map((item: unknown, i) => {
    const choice = item instanceof Adapter ? { adapter: item } : (item as AdapterChoice);
    if (!v.isPlainObject(choice) || !(choice.adapter instanceof Adapter)) {
      throw invalidArgument(`${name}[${i}]`, 'an Adapter from model.loadAdapter(), or { adapter, scale }', item);
    }
    checkKeys(`${name}[${i}]`, choice, ['adapter', 'scale']);
    if (choice.adapter.disposed) throw new PaliGemmaError('ERR_DISPOSED', `${name}[${i}]: the adapter ${choice.adapter.info.path} has been disposed`);
    const scale = v.optionalNumber(`${name}[${i}].scale`, choice.scale, -100, 100) ?? 1;
    if (list.slice(0, i).some((o: unknown) => (o instanceof Adapter ? o : (o as AdapterChoice).adapter) === choice.adapter)) {
      throw invalidArgument(`${name}[${i}]`, 'each adapter once', 'the same adapter twice');
    }
    return { adapter: choice.adapter, scale };
  });
}

/** Checks generate's options (everything but the image). */
export function planGenerate(options: GenerateOptions, vocabSize: number, what = 'generate'): GeneratePlan {
  if (!v.isPlainObject(options)) throw invalidArgument(`${what}(options)`, 'an object', options);
  checkKeys(`${what} options`, options, GENERATE_KEYS);
  const name = (k: string) => `${what} options.${k}`;
  if (typeof options.prompt !== 'string') throw invalidArgument(name('prompt'), 'a string', options.prompt);
  if (options.stop !== undefined && !(Array.isArray(options.stop) && options.stop.every((s) => typeof s === 'string' && s.length > 0))) {
    throw invalidArgument(name('stop'), 'an array of non-empty strings', options.stop);
  }
  let forceTokens: Int32Array | undefined;
  if (options.forceTokens !== undefined) {
    const f = options.forceTokens;
    if (!f || typeof f !== 'object' || typeof f.length !== 'number') throw invalidArgument(name('forceTokens'), 'an array of token ids', f);
    forceTokens = Int32Array.from(f);
    forceTokens.forEach((id, i) => {
      if (id < 0 || id >= vocabSize || id !== f[i]) throw invalidArgument(`${name('forceTokens')}[${i}]`, `a token id below ${vocabSize}`, f[i]);
    });
  }
  const adapters = planAdapters(name('adapters'), options.adapters);
  if (options.logits !== undefined && typeof options.logits !== 'boolean') throw invalidArgument(name('logits'), 'a boolean', options.logits);
  if (options.specialTokens !== undefined && typeof options.specialTokens !== 'boolean') {
    throw invalidArgument(name('specialTokens'), 'a boolean', options.specialTokens);
  }
  return {
    native: {
      prompt: options.prompt,
      maxTokens: v.optionalInteger(name('maxTokens'), options.maxTokens, 0, 1 << 20) ?? 32,
      temperature: v.optionalNumber(name('temperature'), options.temperature, 0, 100),
      topK: v.optionalInteger(name('topK'), options.topK, 0, 1 << 20),
      topP: v.optionalNumber(name('topP'), options.topP, 0, 1),
      minP: v.optionalNumber(name('minP'), options.minP, 0, 1),
      seed: v.optionalInteger(name('seed'), options.seed, 0, 0xffffffff),
      repeatPenalty: v.optionalNumber(name('repeatPenalty'), options.repeatPenalty, 0.01, 100),
      grammar: v.optionalString(name('grammar'), options.grammar),
      stop: options.stop,
      logits: options.logits,
      specialTokens: options.specialTokens,
      forceTokens,
      ...(adapters.length ? { adapters: adapters.map((a) => ({ id: a.adapter.id, scale: a.scale })) } : {}),
    },
    adapters,
    onToken: v.optionalFunction<(t: GeneratedToken) => void>(name('onToken'), options.onToken),
    onText: v.optionalFunction<(s: string) => void>(name('onText'), options.onText),
    onPhase: v.optionalFunction<(p: Phase) => void>(name('onPhase'), options.onPhase),
    signal: v.optionalSignal(name('signal'), options.signal),
  };
}
