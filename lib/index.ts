/**
 * paligemma-node: PaliGemma 1 and 2 inference for Node.js and Electron on ggml/llama.cpp.
 */

export type { ConvertOptions, ConvertProgress, ConvertResult, TextType, VisionType } from './convert/index';
export { convert, TEXT_TYPES, VISION_TYPES } from './convert/index';
export type { ConvertLoraOptions, ConvertLoraResult, LoraType } from './convert/lora';
export { convertLora, LORA_TYPES } from './convert/lora';
export type { PaliGemmaErrorCode } from './errors';
export { AbortError, PaliGemmaError } from './errors';
export type { GGUFInfo, GGUFTensorInfo, GGUFValue, ReadGGUFOptions } from './gguf/read';
export { readGGUF } from './gguf/read';
export type { PullOptions, PullProgress, PullResult } from './hub/pull';
export { pull } from './hub/pull';
export type { Annotation } from './image/annotate';
export { annotateImage } from './image/annotate';
export type { ImageInput, RawImage } from './image/input';
export { ImageEmbedding, MAX_IMAGE_PIXELS } from './image/input';
export type { AdapterChoice, AdapterInfo } from './model/adapter';
export { Adapter } from './model/adapter';
export type {
  Detection,
  GeneratedToken,
  GenerateOptions,
  GenerateResult,
  GenerateTimings,
  LoadOptions,
  ModelInfo,
  Segmentation,
  TaskOptions,
} from './model/options';
export { PaliGemma } from './model/paligemma';
export type { FlashAttentionMode, GpuChoice, KvCacheType, Phase, StopReason, VisionAttentionMode, VisionMatmulMode } from './native/contract';
export type { PaliGemmaServer, ServerAddress, ServerOptions } from './server/app';
export { createServer } from './server/app';
export type { DeviceInfo, SystemInfo } from './system';
export { systemInfo } from './system';
export type { Box, Location, Region } from './tasks/locations';
export { parseLocations, pixelRegion } from './tasks/locations';
export type { Mask } from './tasks/masks';
export { pasteMask } from './tasks/masks';
