/**
 * Reads a Hugging Face PaliGemma checkpoint's config.json / preprocessor_config.json into the
 * numbers the converter needs, with PaliGemma's and Gemma's defaults where the hub configs omit them.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PaliGemmaError } from '../errors';

export interface PaliGemmaConfig {
  family: 'paligemma' | 'paligemma2';
  text: {
    arch: 'gemma' | 'gemma2';
    hidden: number;
    ffn: number;
    layers: number;
    heads: number;
    kvHeads: number;
    headDim: number;
    rmsEps: number;
    ropeTheta: number;
    contextLength: number;
    attnSoftcap: number | null;
    finalSoftcap: number | null;
    slidingWindow: number;
  };
  vision: {
    hidden: number;
    ffn: number;
    layers: number;
    heads: number;
    imageSize: number;
    patchSize: number;
    imageTokens: number;
    layerNormEps: number;
  };
  projectionDim: number;
  imageTokenId: number;
  bosId: number;
  eosId: number;
  padId: number;
  imageMean: [number, number, number];
  imageStd: [number, number, number];
  resample: number;
}

type Json = Record<string, unknown>;

async function readJson(file: string, required: boolean): Promise<Json | null> {
  let text: string;
  try {
    text = await fs.promises.readFile(file, 'utf8');
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'missing' : 'cannot read'}`, { cause: err });
  }
  try {
    const v = JSON.parse(text);
    if (!v || typeof v !== 'object') throw new Error('not an object');
    return v as Json;
  } catch (err) {
    throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: not valid JSON`, { cause: err });
  }
}

export async function readPaliGemmaConfig(dir: string): Promise<PaliGemmaConfig> {
  const file = path.join(dir, 'config.json');
  const cfg = (await readJson(file, true))!;
  const fail = (what: string) => new PaliGemmaError('ERR_INVALID_FILE', `${file}: ${what}`);
  if (cfg.model_type !== 'paligemma') {
    throw fail(`model_type is ${JSON.stringify(cfg.model_type)}; only PaliGemma checkpoints ("paligemma") are supported`);
  }
  const tc = (cfg.text_config ?? {}) as Json;
  const vc = (cfg.vision_config ?? {}) as Json;
  const arch = tc.model_type ?? 'gemma';
  if (arch !== 'gemma' && arch !== 'gemma2') throw fail(`text_config.model_type ${JSON.stringify(arch)} is not supported (gemma or gemma2)`);
  const num = (obj: Json, key: string, fallback?: number): number => {
    const v = obj[key];
    if (v === undefined || v === null) {
      if (fallback === undefined) throw fail(`${obj === tc ? 'text_config.' : obj === vc ? 'vision_config.' : ''}${key} is missing`);
      return fallback;
    }
    if (typeof v !== 'number' || !Number.isFinite(v)) throw fail(`${key} must be a number, got ${JSON.stringify(v)}`);
    return v;
  };
  const heads = num(tc, 'num_attention_heads', 8);
  const hidden = num(tc, 'hidden_size', 2048);
  const softcap = (key: string, fallback: number) => (tc[key] === null ? null : num(tc, key, arch === 'gemma2' ? fallback : 0) || null);
  const imageSize = num(vc, 'image_size', 224);
  const patchSize = num(vc, 'patch_size', 14);
  if (imageSize % patchSize !== 0) throw fail(`vision_config.image_size ${imageSize} is not a multiple of patch_size ${patchSize}`);

  // llama.cpp scales queries by 1/sqrt(head_dim), or, for a 46-layer gemma2 (the 27B layout),
  // 1/sqrt(hidden / heads); it reads no query_pre_attn_scalar. Any other scalar would run silently
  // wrong, so it is refused.
  const layers = num(tc, 'num_hidden_layers', 18);
  const headDim = num(tc, 'head_dim', 256);
  if (tc.query_pre_attn_scalar !== undefined && tc.query_pre_attn_scalar !== null) {
    const scalar = num(tc, 'query_pre_attn_scalar');
    const llamaScalar = arch === 'gemma2' && layers === 46 ? hidden / heads : headDim;
    if (Math.abs(scalar - llamaScalar) > 1e-6 * llamaScalar) {
      throw fail(
        `text_config.query_pre_attn_scalar is ${scalar}, but llama.cpp's ${arch} scales queries by 1/sqrt(${llamaScalar}) for this layout (${layers} layers, ${arch === 'gemma2' && layers === 46 ? 'hidden_size / num_attention_heads' : 'head_dim'}): the converted model would answer wrongly`,
      );
    }
  }

  const pre = (await readJson(path.join(dir, 'preprocessor_config.json'), false)) ?? {};
  const triple = (v: unknown, fallback: number): [number, number, number] =>
    Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number') ? (v as [number, number, number]) : [fallback, fallback, fallback];

  return {
    family: arch === 'gemma2' ? 'paligemma2' : 'paligemma',
    text: {
      arch,
      hidden,
      ffn: num(tc, 'intermediate_size', 16384),
      layers,
      heads,
      kvHeads: num(tc, 'num_key_value_heads', heads),
      headDim,
      rmsEps: num(tc, 'rms_norm_eps', 1e-6),
      ropeTheta: num(tc, 'rope_theta', 10000),
      contextLength: num(tc, 'max_position_embeddings', 8192),
      attnSoftcap: softcap('attn_logit_softcapping', 50),
      finalSoftcap: softcap('final_logit_softcapping', 30),
      slidingWindow: num(tc, 'sliding_window', 4096),
    },
    vision: {
      hidden: num(vc, 'hidden_size', 1152),
      ffn: num(vc, 'intermediate_size', 4304),
      layers: num(vc, 'num_hidden_layers', 27),
      heads: num(vc, 'num_attention_heads', 16),
      imageSize,
      patchSize,
      imageTokens: (imageSize / patchSize) ** 2,
      layerNormEps: num(vc, 'layer_norm_eps', 1e-6),
    },
    projectionDim: num(vc, 'projection_dim', num(cfg, 'projection_dim', hidden)),
    imageTokenId: num(cfg, 'image_token_index', num(cfg, 'image_token_id', 257152)),
    bosId: num(cfg, 'bos_token_id', 2),
    eosId: num(cfg, 'eos_token_id', 1),
    padId: num(cfg, 'pad_token_id', 0),
    imageMean: triple(pre.image_mean, 0.5),
    imageStd: triple(pre.image_std, 0.5),
    resample: typeof pre.resample === 'number' ? pre.resample : 3,
  };
}
