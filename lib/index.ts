/**
 * paligemma-node: PaliGemma 1 and 2 inference for Node.js and Electron on ggml/llama.cpp.
 */
export { PaliGemmaError, AbortError } from './errors';
export type { PaliGemmaErrorCode } from './errors';
export { systemInfo } from './system';
export type { SystemInfo, DeviceInfo } from './system';
export { readGGUF } from './gguf';
export type { GGUFInfo, GGUFTensorInfo, GGUFValue, ReadGGUFOptions } from './gguf';
export type { GpuChoice } from './binding';
export { convert, TEXT_TYPES, VISION_TYPES } from './convert/index';
export type { ConvertOptions, ConvertProgress, ConvertResult, TextType, VisionType } from './convert/index';
export { PaliGemma } from './model';
export { parseLocations } from './tasks';
export type { Box, Location, Mask } from './tasks';
export type { LoadOptions, ModelInfo, GenerateOptions, GenerateResult, GenerateTimings, GeneratedToken, TaskOptions, Detection, Segmentation } from './model';
export { ImageEmbedding, MAX_IMAGE_PIXELS } from './image';
export type { ImageInput, RawImage } from './image';
