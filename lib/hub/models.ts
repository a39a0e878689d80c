/**
 * The PaliGemma checkpoints on the Hugging Face hub, with estimated sizes: parameter counts computed
 * from the architectures' shapes (SigLIP-So400m/14 + Gemma 2B, or + Gemma 2 2B / 9B / 27B), file
 * sizes from each GGUF type's bits per weight, memory as PaliGemma.load's check counts it (weights +
 * the KV cache of the default context). Estimates, not measurements.
 */
import type { PaliGemmaConfig } from '../convert/config';
import type { TextType, VisionType } from '../convert/index';
import { GGML_TYPES, type GGMLTypeName } from '../gguf/types';
import { kvCacheBytes } from '../model/memory';

type TextShape = Pick<PaliGemmaConfig['text'], 'hidden' | 'ffn' | 'layers' | 'heads' | 'kvHeads' | 'headDim'> & {
  /** RMSNorm gains per layer: 2 in Gemma, 4 in Gemma 2. */
  norms: number;
};

const VOCAB = 257216; // Gemma's 256000 + PaliGemma's 1024 <loc> and 128 <seg> tokens, padded
const GEMMA_2B: TextShape = { hidden: 2048, ffn: 16384, layers: 18, heads: 8, kvHeads: 1, headDim: 256, norms: 2 };
const GEMMA2_2B: TextShape = { hidden: 2304, ffn: 9216, layers: 26, heads: 8, kvHeads: 4, headDim: 256, norms: 4 };
const GEMMA2_9B: TextShape = { hidden: 3584, ffn: 14336, layers: 42, heads: 16, kvHeads: 8, headDim: 256, norms: 4 };
const GEMMA2_27B: TextShape = { hidden: 4608, ffn: 36864, layers: 46, heads: 32, kvHeads: 16, headDim: 128, norms: 4 };
const SIGLIP = { hidden: 1152, ffn: 4304, layers: 27, patch: 14 };

export interface KnownModel {
  repo: string;
  family: 1 | 2;
  /** '3b', '10b', '28b' */
  size: string;
  variant: string;
  resolution: 224 | 448 | 896;
  text: TextShape;
  /** Bytes per parameter of the hub checkpoint (PaliGemma 1's are float32, PaliGemma 2's bfloat16). */
  checkpointBytesPerParam: number;
}

function family1(variant: string, resolution: KnownModel['resolution']): KnownModel {
  return { repo: `google/paligemma-3b-${variant}-${resolution}`, family: 1, size: '3b', variant, resolution, text: GEMMA_2B, checkpointBytesPerParam: 4 };
}
function family2(size: '3b' | '10b' | '28b', variant: string, resolution: KnownModel['resolution']): KnownModel {
  const text = size === '3b' ? GEMMA2_2B : size === '10b' ? GEMMA2_9B : GEMMA2_27B;
  return { repo: `google/paligemma2-${size}-${variant}-${resolution}`, family: 2, size, variant, resolution, text, checkpointBytesPerParam: 2 };
}

export const KNOWN_MODELS: KnownModel[] = [
  family1('pt', 224),
  family1('pt', 448),
  family1('pt', 896),
  family1('mix', 224),
  family1('mix', 448),
  family1('ft-cococap', 224),
  family1('ft-docvqa', 896),
  family1('ft-refcoco-seg', 896),
  ...(['3b', '10b', '28b'] as const).flatMap((s) => [
    family2(s, 'pt', 224),
    family2(s, 'pt', 448),
    family2(s, 'pt', 896),
    family2(s, 'mix', 224),
    family2(s, 'mix', 448),
  ]),
  family2('3b', 'ft-docci', 448),
  family2('10b', 'ft-docci', 448),
];

export function imageTokens(m: KnownModel): number {
  return (m.resolution / SIGLIP.patch) ** 2;
}

/** Parameters of the language model (with its embedding) and of the vision tower + projector. */
export function parameterCount(m: KnownModel): { text: number; vision: number; total: number } {
  const t = m.text;
  const D = t.hidden;
  const attention = D * t.heads * t.headDim * 2 + D * t.kvHeads * t.headDim * 2;
  const text = VOCAB * D + t.layers * (attention + 3 * D * t.ffn + t.norms * D) + D;
  const { hidden: C, ffn: F, layers, patch: P } = SIGLIP;
  const perLayer = 4 * (C * C + C) + 4 * C + 2 * C * F + F + C;
  const vision = C * 3 * P * P + C + imageTokens(m) * C + layers * perLayer + 2 * C + C * D + D;
  return { text, vision, total: text + vision };
}

/**
 * Bits per weight. Plain types from their block layout; llama.cpp's k-quant mixes keep some tensors
 * at a larger type, so they get typical effective figures (not exact for PaliGemma).
 */
const MIX_BITS: Partial<Record<TextType, number>> = { q2_k: 3.35, q3_k_m: 3.9, q4_k_s: 4.6, q4_k_m: 4.85, q5_k_s: 5.55, q5_k_m: 5.7 };

export function bitsPerWeight(type: TextType | VisionType): number {
  const mixed = MIX_BITS[type as TextType];
  if (mixed !== undefined) return mixed;
  const t = GGML_TYPES[type.toUpperCase() as GGMLTypeName];
  return (t.typeSize * 8) / t.blockSize;
}

export interface SizeEstimate {
  /** The GGUF pair on disk. */
  fileBytes: number;
  /** Context tokens by default (image tokens + 512, rounded up to 256), and their f16 KV cache. */
  contextTokens: number;
  kvBytes: number;
  /** What PaliGemma.load's memory check counts: the files + the KV cache. */
  memoryBytes: number;
}

export function estimateSizes(m: KnownModel, type: TextType, visionType: VisionType): SizeEstimate {
  const p = parameterCount(m);
  const fileBytes = Math.round((p.text * bitsPerWeight(type) + p.vision * bitsPerWeight(visionType)) / 8);
  const contextTokens = Math.ceil((imageTokens(m) + 512) / 256) * 256;
  // As PaliGemma.load's check counts it, f16 keys and values.
  const kvBytes = kvCacheBytes(contextTokens, m.text.layers, m.text.kvHeads, 2 * m.text.headDim, 2);
  return { fileBytes, contextTokens, kvBytes, memoryBytes: fileBytes + kvBytes };
}

/** The checkpoint's download: its weights at the checkpoint's precision (the small files are noise). */
export function checkpointBytes(m: KnownModel): number {
  return parameterCount(m).total * m.checkpointBytesPerParam;
}

/**
 * Disk a conversion needs, from the checkpoint's weight bytes: the pair (params taken as 2 bytes each
 * in the checkpoint, a bound) and, for quantized text types, the unquantized text file llama.cpp's
 * quantizer reads (at most the checkpoint's size).
 */
export function conversionBytes(checkpointWeightBytes: number, type: TextType, visionType: VisionType): number {
  const params = checkpointWeightBytes / 2;
  const pair = (params * Math.max(bitsPerWeight(type), bitsPerWeight(visionType))) / 8;
  const quantized = !['f32', 'f16', 'bf16'].includes(type);
  return Math.round(pair + (quantized ? checkpointWeightBytes : 0));
}
