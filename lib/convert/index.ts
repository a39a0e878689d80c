export type { ConvertOptions, ConvertProgress, ConvertResult, TextType, VisionType } from './convert';
export { convert, TEXT_TYPES, VISION_TYPES } from './convert';
