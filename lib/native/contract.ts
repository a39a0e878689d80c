/**
 * The addon's contract (native/napi): every export, its arguments and results, and the
 * enumerations both sides spell. The C++ option readers reject keys not named here and values of
 * another type, so this file and native/napi/*.cpp change together. Internal: the public API wraps
 * every one of them.
 * @internal
 */

export { ERROR_CODES, type ErrorCode, NATIVE_ERROR_CODES } from '../errors';

export const GPU_CHOICES = ['auto', 'cpu', 'cuda', 'metal', 'vulkan'] as const;
export type GpuChoice = (typeof GPU_CHOICES)[number];
export const GPU_VARIANTS = ['cuda', 'vulkan', 'metal'] as const;
export type GpuVariant = (typeof GPU_VARIANTS)[number];

export const FLASH_ATTENTION_MODES = ['auto', 'on', 'off'] as const;
export type FlashAttentionMode = (typeof FLASH_ATTENTION_MODES)[number];
export const KV_CACHE_TYPES = ['f16', 'f32'] as const;
export type KvCacheType = (typeof KV_CACHE_TYPES)[number];
export const VISION_MATMUL_MODES = ['auto', 'ggml', 'int8', 'int8-avxvnni', 'int8-avx2', 'int16-avx2'] as const;
export type VisionMatmulMode = (typeof VISION_MATMUL_MODES)[number];
export const VISION_ATTENTION_MODES = ['auto', 'fused', 'separate', 'tiled', 'tiled-avx2', 'int16', 'int16-avx2'] as const;
export type VisionAttentionMode = (typeof VISION_ATTENTION_MODES)[number];

export const STOP_REASONS = ['eos', 'maxTokens', 'stop', 'abort'] as const;
export type StopReason = (typeof STOP_REASONS)[number];
/** The parts of a generation, in order (native/core/pg_generate.h pg_phase). */
export const PHASES = ['encode', 'prefill', 'decode'] as const;
export type Phase = (typeof PHASES)[number];

export interface NativeDeviceInfo {
  name: string;
  description: string;
  type: 'cpu' | 'gpu' | 'igpu' | 'accel';
  backend: string;
  memoryFree: number;
  memoryTotal: number;
}

export interface NativeSystemInfo {
  llamaCppCommit: string;
  backends: NativeDeviceInfo[];
  cpuFeatures: Record<string, string>;
  cpuVariant: string;
  defaultThreads: number;
  logicalCpus: number;
}

export type GGUFValue =
  | number
  | bigint
  | string
  | boolean
  | string[]
  | boolean[]
  | Uint8Array
  | Int8Array
  | Uint16Array
  | Int16Array
  | Uint32Array
  | Int32Array
  | Float32Array
  | Float64Array
  | BigUint64Array
  | BigInt64Array;

export interface NativeGGUFTensor {
  name: string;
  type: string;
  shape: number[];
  offset: number;
  size: number;
}

export interface NativeGGUF {
  version: number;
  alignment: number;
  dataOffset: number;
  fileSize: number;
  metadata: Record<string, GGUFValue>;
  truncatedKeys: string[];
  tensors: NativeGGUFTensor[];
}

export interface NativeTextInspection {
  description: string;
  architecture: string;
  nParams: number;
  sizeBytes: number;
  nEmbd: number;
  nLayer: number;
  nHead: number;
  nHeadKv: number;
  nVocab: number;
  nCtxTrain: number;
  nSwa: number;
  tokens: Int32Array[];
}

export interface NativeAbortToken {
  abort(): void;
  readonly aborted: boolean;
}

/** loadModel's options: undefined means the native default. */
export interface NativeLoadOptions {
  model: string;
  mmproj: string;
  gpu?: GpuChoice;
  gpuLayers?: number;
  threads?: number;
  contextSize?: number;
  flashAttention?: FlashAttentionMode;
  kvCacheType?: KvCacheType;
  mmap?: boolean;
  visionAttention?: VisionAttentionMode;
  visionMatmul?: VisionMatmulMode;
  textMatmul?: VisionMatmulMode;
  /** Bytes of image embeddings the model keeps (0: no cache). */
  imageCacheBytes?: number;
}

/** An image as the addon takes it. `cacheKey` (a digest of the data) enables the embedding cache. */
export type NativeImage =
  | { bytes: Uint8Array; cacheKey?: string; label?: string }
  | { pixels: Uint8Array; width: number; height: number; channels: number; cacheKey?: string; label?: string }
  | { embedding: Float32Array; tokens: number; dim: number };

export interface NativeGenerateOptions {
  image: NativeImage;
  prompt: string;
  specialTokens?: boolean;
  maxTokens?: number;
  logits?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  seed?: number;
  repeatPenalty?: number;
  grammar?: string;
  stop?: string[];
  forceTokens?: Int32Array;
  adapters?: NativeAdapterUse[];
}

export interface NativeTimings {
  preprocessMs: number;
  encodeMs: number;
  /** The image embedding came from the model's cache (no decoding, no vision tower). */
  imageCached: boolean;
  prefillMs: number;
  decodeMs: number;
  firstTokenMs: number;
  promptTokens: number;
  generatedTokens: number;
}

export interface NativeGenerateResult {
  text: string;
  tokens: Int32Array;
  stopReason: StopReason;
  logits?: Float32Array;
  timings: NativeTimings;
  /** With stopReason 'abort': the part the abort cut short, and how long native work ran on after abort() was called. */
  abort?: { phase: Phase; latencyMs: number };
}

export interface NativeEncodeResult {
  data: Float32Array;
  tokens: number;
  dim: number;
  preprocessMs: number;
  encodeMs: number;
  cached: boolean;
}

export interface NativeModelInfo {
  family: 'paligemma' | 'paligemma2';
  imageSize: number;
  patchSize: number;
  imageTokens: number;
  imageTokenId: number;
  visionWidth: number;
  visionLayers: number;
  textArchitecture: 'gemma' | 'gemma2';
  textDescription: string;
  textParams: number;
  textWidth: number;
  textLayers: number;
  vocabSize: number;
  contextSize: number;
  trainedContextSize: number;
  backend: string;
  threads: number;
  /** The attention kernel the vision tower uses (with 'auto', the one measured faster at load): 'tiled' is ours over AVX-512, 'tiled-avx2' over AVX2, 'int16' ours with 16-bit integer products over AVX-512 VNNI, 'int16-avx2' the same over AVX2. */
  visionAttention: 'fused' | 'separate' | 'tiled' | 'tiled-avx2' | 'int16' | 'int16-avx2';
  /**
   * The vision tower's matrix products: for q8_0 weights 'int8' (ours, AVX-512 VNNI), 'int8-avxvnni' (ours, 256-bit AVX-VNNI),
   * 'int8-avx2' (ours, 256-bit AVX2); for f16 weights 'f16' (ours, AVX-512), 'f16-avx2' (ours, AVX2) or 'int16-avx2'
   * (ours, AVX2, the weights and activations as 14-bit integers per block of 32); 'ggml' otherwise.
   * A tower with matrices of both types names its q8_0 products.
   */
  visionMatmul: 'int8' | 'int8-avxvnni' | 'int8-avx2' | 'f16' | 'f16-avx2' | 'int16-avx2' | 'ggml';
  /** The text model's q8_0/q4_0 matrix products (the same names): ours where the choice (or the race at load) says so and some weight was packed; 'ggml' otherwise. */
  textMatmul: 'int8' | 'int8-avxvnni' | 'int8-avx2' | 'ggml';
  hasSegDecoder: boolean;
  bosId: number;
  eosId: number;
}

/**
 * Called for every generated token (id >= 0, its piece, newly completed text); with id -1 and the
 * held-back text at the end; with id -2 and a phase name as `piece` when a phase starts.
 */
export type NativeTokenListener = (id: number, piece: string, text: string) => void;

export interface NativeModelHandle {
  info(): NativeModelInfo;
  tokenize(text: string, special: boolean): Promise<Int32Array>;
  detokenize(ids: Int32Array): Promise<string>;
  preprocess(image: NativeImage): Promise<Float32Array>;
  encodeImage(image: NativeImage, token: NativeAbortToken, adapters?: NativeAdapterUse[]): Promise<NativeEncodeResult>;
  generate(options: NativeGenerateOptions, token: NativeAbortToken, onEvent: NativeTokenListener | undefined): Promise<NativeGenerateResult>;
  decodeMask(codes: Int32Array): Promise<Float32Array>;
  /** visionPath '' for an adapter without a vision part. */
  loadAdapter(path: string, visionPath: string): Promise<NativeAdapterInfo>;
  freeAdapter(id: number): Promise<void>;
  dispose(): Promise<void>;
}

/** An adapter applied to one call. */
export interface NativeAdapterUse {
  id: number;
  scale?: number;
}

export interface NativeAdapterInfo {
  id: number;
  /** The language-model part (llama.cpp's LoRA format). */
  path: string;
  /** The vision tower / projector part; '' when the adapter leaves them alone. */
  visionPath: string;
  name: string;
  /** The model it was converted against, and its family. */
  baseName: string;
  family: string;
  /** base_model_name_or_path from the PEFT config; '' when it said nothing. */
  trainedOn: string;
  rank: number;
  alpha: number;
  rslora: boolean;
  /** Module kinds it changes: 'text.q_proj', 'vision.fc1', 'projector', ... */
  targets: string[];
  /** Memory its weights take. */
  bytes: number;
  hasText: boolean;
  hasVision: boolean;
}

export interface NativeBinding {
  AbortToken: new () => NativeAbortToken;
  NativeModel: abstract new () => NativeModelHandle;
  constants: { errorCodes: string[]; stopReasons: string[]; phases: string[] };
  imageSize(bytes: Uint8Array, label?: string): { width: number; height: number };
  decodeImage(bytes: Uint8Array, label?: string): Promise<{ width: number; height: number; channels: 3; data: Uint8Array }>;
  loadModel(options: NativeLoadOptions, token: NativeAbortToken, onProgress: (fraction: number) => void): Promise<NativeModelHandle>;
  quantizeModel(inPath: string, outPath: string, type: string, threads: number): Promise<void>;
  quantizeRows(data: Float32Array, cols: number, ggmlType: string): Promise<Uint8Array>;
  inspectTextModel(path: string, texts: string[], vocabOnly: boolean): Promise<NativeTextInspection>;
  systemInfo(): Promise<NativeSystemInfo>;
  /** Bytes the C allocator holds for the process (glibc), -1 elsewhere: a leak check's probe. */
  nativeHeapBytes(): number;
  readGGUF(path: string, maxArrayLength?: number): Promise<NativeGGUF>;
}
