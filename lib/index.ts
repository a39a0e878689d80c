/**
 * paligemma-node: PaliGemma 1 and 2 inference for Node.js and Electron on ggml/llama.cpp.
 */

export type { ConvertOptions, ConvertProgress, ConvertResult, TextType, VisionType } from './convert/index';
export { convert, TEXT_TYPES, VISION_TYPES } from './convert/index';
export type { PaliGemmaErrorCode } from './errors';
export { AbortError, PaliGemmaError } from './errors';
export type { GGUFInfo, GGUFTensorInfo, GGUFValue, ReadGGUFOptions } from './gguf/read';
export { readGGUF } from './gguf/read';
export type { ImageInput, RawImage } from './image/input';
export { ImageEmbedding, MAX_IMAGE_PIXELS } from './image/input';
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
export type { DeviceInfo, SystemInfo } from './system';
export { systemInfo } from './system';
export type { Box, Location } from './tasks/locations';
export { parseLocations } from './tasks/locations';
export type { Mask } from './tasks/masks';
export { pasteMask } from './tasks/masks';
