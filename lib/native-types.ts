/**
 * Types of the raw addon exports (native/napi). Internal: the public API wraps every one of them.
 * @internal
 */
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

export interface NativeGenerateResult {
  text: string;
  tokens: Int32Array;
  stopReason: 'eos' | 'maxTokens' | 'stop' | 'abort';
  logits?: Float32Array;
  timings: { preprocessMs: number; encodeMs: number; prefillMs: number; decodeMs: number; firstTokenMs: number; promptTokens: number; generatedTokens: number };
}

export interface NativeModelHandle {
  info(): Record<string, unknown>;
  tokenize(text: string, special: boolean): Promise<Int32Array>;
  detokenize(ids: Int32Array): Promise<string>;
  preprocess(image: unknown): Promise<Float32Array>;
  encodeImage(image: unknown, token: NativeAbortToken): Promise<{ data: Float32Array; tokens: number; dim: number; preprocessMs: number; encodeMs: number }>;
  generate(options: Record<string, unknown>, token: NativeAbortToken, onEvent: ((id: number, piece: string, text: string) => void) | undefined): Promise<NativeGenerateResult>;
  decodeMask(codes: Int32Array): Promise<Float32Array>;
  dispose(): Promise<void>;
}

export interface NativeBinding {
  AbortToken: new () => NativeAbortToken;
  imageSize(bytes: Uint8Array): { width: number; height: number };
  decodeImage(bytes: Uint8Array): Promise<{ width: number; height: number; channels: 3; data: Uint8Array }>;
  loadModel(options: Record<string, unknown>, token: NativeAbortToken, onProgress: (fraction: number) => void): Promise<NativeModelHandle>;
  quantizeModel(inPath: string, outPath: string, type: string, threads: number): Promise<void>;
  quantizeRows(data: Float32Array, cols: number, ggmlType: string): Promise<Uint8Array>;
  inspectTextModel(path: string, texts: string[], vocabOnly: boolean): Promise<NativeTextInspection>;
  systemInfo(): Promise<NativeSystemInfo>;
  readGGUF(path: string, maxArrayLength?: number): Promise<NativeGGUF>;
}
