/**
 * Hugging Face PaliGemma 1/2 checkpoint -> a GGUF pair:
 *  - the text model in llama.cpp's own `gemma` / `gemma2` layout (llama.cpp's tools load it as is);
 *  - the vision model ("mmproj"): SigLIP + projector in llama.cpp's clip naming, plus `paligemma.*`
 *    keys for our runtime and, optionally, the segmentation VQ-VAE decoder.
 * Tensors stream through in chunks, so peak memory stays near one chunk, not the checkpoint size.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AbortError, callNative, invalidArgument, PaliGemmaError } from '../errors';
import { GGML_TYPES, type GGMLTypeName } from '../gguf/types';
import { GGUFValueType, GGUFWriter, uniqueSuffix } from '../gguf/write';
import { getBinding } from '../native/binding';
import { type PaliGemmaConfig, readPaliGemmaConfig } from './config';
import { DTYPE_BYTES, toFloat32 } from './dtype';
import { type LoraMergeFactors, mergeLoraRows, readLoraForMerge } from './lora';
import { readNpz } from './npz';
import { Checkpoint, type SafeTensor } from './safetensors';
import { PieceType, readVocabulary, type Vocabulary } from './tokenizer';

export const TEXT_TYPES = [
  'f32',
  'f16',
  'bf16',
  'q8_0',
  'q4_0',
  'q4_1',
  'q5_0',
  'q5_1',
  'q4_k_s',
  'q4_k_m',
  'q5_k_s',
  'q5_k_m',
  'q6_k',
  'q3_k_m',
  'q2_k',
] as const;
export type TextType = (typeof TEXT_TYPES)[number];
export const VISION_TYPES = ['f32', 'f16', 'q8_0', 'q4_0', 'q4_1', 'q5_0', 'q5_1'] as const;
export type VisionType = (typeof VISION_TYPES)[number];

export interface ConvertProgress {
  phase: 'text' | 'vision' | 'quantize' | 'done';
  /** Checkpoint bytes read so far, and in all. */
  bytesDone: number;
  bytesTotal: number;
  /** Overall progress, 0..1. */
  fraction: number;
  tensor?: string;
}

export interface ConvertOptions {
  /** A Hugging Face PaliGemma checkpoint folder. */
  input: string;
  /** Where the two files go (default: the input folder). */
  outDir?: string;
  /** Text model type (default 'f16'). Quantized types go through llama.cpp's own quantizer. */
  type?: TextType;
  /** Vision model type (default 'f16', or 'f32' when type is 'f32'). Rows that do not divide into the type's blocks stay f16. */
  visionType?: VisionType;
  /** big_vision's vae-oid.npz, to embed the segmentation mask decoder into the mmproj file. */
  segDecoder?: string;
  /** Base file name (default: the input folder's name). */
  name?: string;
  /** Threads for quantization (default: all CPUs). */
  threads?: number;
  /**
   * A PEFT LoRA adapter folder trained on this checkpoint, folded into the weights (W + s B A) before
   * they are written or quantized: a fine-tuned pair with no runtime cost. `mergeScale` (default 1)
   * multiplies the adapter as `scale` does at run time.
   */
  merge?: string;
  mergeScale?: number;
  onProgress?: (p: ConvertProgress) => void;
  signal?: AbortSignal;
}

export interface ConvertResult {
  model: string;
  mmproj: string;
}

/** Chunk size for streaming tensors through conversion. */
const CHUNK_BYTES = 32 * 1024 * 1024;

interface Planned {
  src: SafeTensor;
  dst: string;
  /** ggml order (reversed PyTorch shape). */
  shape: number[];
  type: GGMLTypeName;
  /** Gemma stores RMSNorm gains as w, applied as (1 + w); llama.cpp expects the 1 folded in. */
  addOne?: boolean;
  /** Zero padding: each source row of `srcCols` values becomes shape[0] values; `padRows` zero rows follow. */
  srcCols?: number;
  padRows?: number;
}

function validate(o: ConvertOptions) {
  if (!o || typeof o !== 'object') throw invalidArgument('convert(options)', 'an object', o);
  if (typeof o.input !== 'string' || !o.input) throw invalidArgument('convert options.input', 'a checkpoint folder path', o.input);
  if (o.outDir !== undefined && (typeof o.outDir !== 'string' || !o.outDir)) throw invalidArgument('convert options.outDir', 'a folder path', o.outDir);
  if (o.type !== undefined && !TEXT_TYPES.includes(o.type)) throw invalidArgument('convert options.type', `one of ${TEXT_TYPES.join(', ')}`, o.type);
  if (o.visionType !== undefined && !VISION_TYPES.includes(o.visionType)) {
    throw invalidArgument('convert options.visionType', `one of ${VISION_TYPES.join(', ')}`, o.visionType);
  }
  if (o.segDecoder !== undefined && (typeof o.segDecoder !== 'string' || !o.segDecoder))
    throw invalidArgument('convert options.segDecoder', 'a .npz path', o.segDecoder);
  if (o.name !== undefined && (typeof o.name !== 'string' || !/^[^/\\]+$/.test(o.name)))
    throw invalidArgument('convert options.name', 'a file name without slashes', o.name);
  if (o.threads !== undefined && !(Number.isInteger(o.threads) && o.threads > 0))
    throw invalidArgument('convert options.threads', 'a positive integer', o.threads);
  if (o.merge !== undefined && (typeof o.merge !== 'string' || !o.merge)) throw invalidArgument('convert options.merge', 'a PEFT adapter folder', o.merge);
  if (o.mergeScale !== undefined && !(typeof o.mergeScale === 'number' && Number.isFinite(o.mergeScale)))
    throw invalidArgument('convert options.mergeScale', 'a finite number', o.mergeScale);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') throw invalidArgument('convert options.onProgress', 'a function', o.onProgress);
}

/** Source tensor name prefixes: old (PaliGemma 1 era) and new (transformers >= 4.52) layouts. */
function detectLayout(ckpt: Checkpoint, dir: string) {
  if (ckpt.get('model.language_model.embed_tokens.weight')) {
    return { text: 'model.language_model.', vision: 'model.vision_tower.vision_model.', proj: 'model.multi_modal_projector.' };
  }
  if (ckpt.get('language_model.model.embed_tokens.weight')) {
    return { text: 'language_model.model.', vision: 'vision_tower.vision_model.', proj: 'multi_modal_projector.' };
  }
  throw new PaliGemmaError(
    'ERR_INVALID_FILE',
    `${dir}: no language model embedding (neither 'language_model.model.embed_tokens.weight' nor 'model.language_model.embed_tokens.weight'): not a PaliGemma checkpoint`,
  );
}

function planTensor(ckpt: Checkpoint, dir: string, src: string, dst: string, expect: number[], type: GGMLTypeName, addOne = false): Planned {
  const t = ckpt.get(src);
  if (!t) throw new PaliGemmaError('ERR_INVALID_FILE', `${dir}: tensor '${src}' is missing from the checkpoint`);
  if (t.shape.length !== expect.length || t.shape.some((d, i) => d !== expect[i])) {
    throw new PaliGemmaError('ERR_INVALID_FILE', `${dir}: tensor '${src}' has shape [${t.shape.join(', ')}], expected [${expect.join(', ')}] from config.json`);
  }
  return { src: t, dst, shape: [...t.shape].reverse(), type, addOne };
}

/** Intermediate type for the text model before llama.cpp quantizes it: lossless w.r.t. the source. */
function textTensorType(target: TextType, src: SafeTensor): GGMLTypeName {
  if (target === 'f32') return 'F32';
  if (target === 'f16') return 'F16';
  if (target === 'bf16') return 'BF16';
  return src.dtype === 'F32' ? 'F32' : src.dtype === 'BF16' ? 'BF16' : 'F16';
}

function planText(ckpt: Checkpoint, dir: string, cfg: PaliGemmaConfig, prefix: string, type: TextType, vocabRows: number): Planned[] {
  const { hidden: D, ffn: F, layers, heads, kvHeads, headDim } = cfg.text;
  const plans: Planned[] = [];
  const matrix = (src: string, dst: string, shape: number[]) => {
    const t = ckpt.get(src);
    plans.push(planTensor(ckpt, dir, src, dst, shape, t ? textTensorType(type, t) : 'F32'));
  };
  const norm = (src: string, dst: string) => plans.push(planTensor(ckpt, dir, src, dst, [D], 'F32', true));
  matrix(`${prefix}embed_tokens.weight`, 'token_embd.weight', [vocabRows, D]);
  for (let i = 0; i < layers; i++) {
    const p = `${prefix}layers.${i}.`;
    const b = `blk.${i}.`;
    norm(`${p}input_layernorm.weight`, `${b}attn_norm.weight`);
    matrix(`${p}self_attn.q_proj.weight`, `${b}attn_q.weight`, [heads * headDim, D]);
    matrix(`${p}self_attn.k_proj.weight`, `${b}attn_k.weight`, [kvHeads * headDim, D]);
    matrix(`${p}self_attn.v_proj.weight`, `${b}attn_v.weight`, [kvHeads * headDim, D]);
    matrix(`${p}self_attn.o_proj.weight`, `${b}attn_output.weight`, [D, heads * headDim]);
    if (cfg.text.arch === 'gemma2') {
      norm(`${p}post_attention_layernorm.weight`, `${b}post_attention_norm.weight`);
      norm(`${p}pre_feedforward_layernorm.weight`, `${b}ffn_norm.weight`);
      norm(`${p}post_feedforward_layernorm.weight`, `${b}post_ffw_norm.weight`);
    } else {
      // Gemma 1's "post_attention_layernorm" is the pre-FFN norm.
      norm(`${p}post_attention_layernorm.weight`, `${b}ffn_norm.weight`);
    }
    matrix(`${p}mlp.gate_proj.weight`, `${b}ffn_gate.weight`, [F, D]);
    matrix(`${p}mlp.up_proj.weight`, `${b}ffn_up.weight`, [F, D]);
    matrix(`${p}mlp.down_proj.weight`, `${b}ffn_down.weight`, [D, F]);
  }
  norm(`${prefix}norm.weight`, 'output_norm.weight');
  return plans;
}

/** Vision weights: matrices take the vision type where their rows divide into its blocks, else f16. */
function visionMatrixType(type: VisionType, rowLength: number): GGMLTypeName {
  if (type === 'f32') return 'F32';
  const t = type.toUpperCase() as GGMLTypeName;
  return rowLength % GGML_TYPES[t].blockSize === 0 ? t : 'F16';
}

/**
 * SigLIP's MLP is 4304 wide, not a multiple of a quantization block: quantized vision types pad it
 * with zeros (fc1 gets zero rows and zero biases, so gelu gives 0 there, and fc2 zero columns),
 * which leaves every result unchanged while the MLP matrices can use the quantized type.
 */
export function paddedVisionFfn(ffn: number, type: VisionType): number {
  if (type === 'f32' || type === 'f16') return ffn;
  // Whole blocks for fc2's rows, and fc1's row count a multiple of 8 for ggml's repacked layouts;
  // every quantized vision type has 32-value blocks, which covers both.
  const block = GGML_TYPES[type.toUpperCase() as GGMLTypeName].blockSize;
  return Math.ceil(ffn / block) * block;
}

function planVision(ckpt: Checkpoint, dir: string, cfg: PaliGemmaConfig, vp: string, pp: string, type: VisionType): Planned[] {
  const { hidden: C, ffn: F, layers, patchSize: P, imageTokens: N } = cfg.vision;
  const FP = paddedVisionFfn(F, type);
  const plans: Planned[] = [];
  const add = (src: string, dst: string, shape: number[], t: GGMLTypeName) => plans.push(planTensor(ckpt, dir, src, dst, shape, t));
  const vec = (src: string, dst: string, n: number) => add(src, dst, [n], 'F32');
  const mat = (src: string, dst: string, rows: number, cols: number) => add(src, dst, [rows, cols], visionMatrixType(type, cols));
  // ggml's convolution wants an f16 or f32 kernel.
  add(`${vp}embeddings.patch_embedding.weight`, 'v.patch_embd.weight', [C, 3, P, P], type === 'f32' ? 'F32' : 'F16');
  vec(`${vp}embeddings.patch_embedding.bias`, 'v.patch_embd.bias', C);
  add(`${vp}embeddings.position_embedding.weight`, 'v.position_embd.weight', [N, C], 'F32');
  for (let i = 0; i < layers; i++) {
    const p = `${vp}encoder.layers.${i}.`;
    const b = `v.blk.${i}.`;
    for (const [hf, ours] of [
      ['q_proj', 'attn_q'],
      ['k_proj', 'attn_k'],
      ['v_proj', 'attn_v'],
      ['out_proj', 'attn_out'],
    ]) {
      mat(`${p}self_attn.${hf}.weight`, `${b}${ours}.weight`, C, C);
      vec(`${p}self_attn.${hf}.bias`, `${b}${ours}.bias`, C);
    }
    vec(`${p}layer_norm1.weight`, `${b}ln1.weight`, C);
    vec(`${p}layer_norm1.bias`, `${b}ln1.bias`, C);
    mat(`${p}mlp.fc1.weight`, `${b}ffn_up.weight`, F, C);
    vec(`${p}mlp.fc1.bias`, `${b}ffn_up.bias`, F);
    mat(`${p}mlp.fc2.weight`, `${b}ffn_down.weight`, C, F);
    vec(`${p}mlp.fc2.bias`, `${b}ffn_down.bias`, C);
    if (FP !== F) {
      const [up, upBias, down] = plans.slice(-4);
      up!.shape = [C, FP];
      up!.padRows = FP - F;
      upBias!.shape = [FP];
      upBias!.srcCols = F;
      down!.shape = [FP, C];
      down!.srcCols = F;
      down!.type = visionMatrixType(type, FP);
    }
    vec(`${p}layer_norm2.weight`, `${b}ln2.weight`, C);
    vec(`${p}layer_norm2.bias`, `${b}ln2.bias`, C);
  }
  vec(`${vp}post_layernorm.weight`, 'v.post_ln.weight', C);
  vec(`${vp}post_layernorm.bias`, 'v.post_ln.bias', C);
  mat(`${pp}linear.weight`, 'mm.0.weight', cfg.projectionDim, C);
  vec(`${pp}linear.bias`, 'mm.0.bias', cfg.projectionDim);
  return plans;
}

/** Pads the tokenizer to the embedding rows: `<image>` as a control token, the rest unused. */
function padVocabulary(vocab: Vocabulary, rows: number, imageTokenId: number, file: string) {
  const n = vocab.pieces.length;
  if (n > rows) throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: the tokenizer has ${n} pieces but the embedding only ${rows} rows`);
  if (imageTokenId < n || imageTokenId >= rows) {
    if (!(imageTokenId < n && vocab.pieces[imageTokenId] === '<image>')) {
      throw new PaliGemmaError(
        'ERR_INVALID_FILE',
        `${file}: image_token_index ${imageTokenId} must lie between the tokenizer's ${n} pieces and the ${rows} embedding rows`,
      );
    }
  }
  const pieces = [...vocab.pieces];
  const scores = new Float32Array(rows);
  scores.set(vocab.scores);
  const types = new Int32Array(rows);
  types.set(vocab.types);
  for (let i = n; i < rows; i++) {
    pieces.push(i === imageTokenId ? '<image>' : `<unused_pad_${i}>`);
    types[i] = i === imageTokenId ? PieceType.CONTROL : PieceType.UNUSED;
  }
  return { pieces, scores, types };
}

function writeTextMetadata(w: GGUFWriter, cfg: PaliGemmaConfig, name: string, vocab: Vocabulary, rows: number, fileType: number) {
  const a = cfg.text.arch;
  const t = cfg.text;
  w.setString('general.architecture', a)
    .setString('general.name', name)
    .setU32('general.file_type', fileType)
    .setU32(`${a}.context_length`, t.contextLength)
    .setU32(`${a}.embedding_length`, t.hidden)
    .setU32(`${a}.block_count`, t.layers)
    .setU32(`${a}.feed_forward_length`, t.ffn)
    .setU32(`${a}.attention.head_count`, t.heads)
    .setU32(`${a}.attention.head_count_kv`, t.kvHeads)
    .setU32(`${a}.attention.key_length`, t.headDim)
    .setU32(`${a}.attention.value_length`, t.headDim)
    .setF32(`${a}.attention.layer_norm_rms_epsilon`, t.rmsEps)
    .setF32(`${a}.rope.freq_base`, t.ropeTheta);
  if (a === 'gemma2') {
    if (t.attnSoftcap) w.setF32('gemma2.attn_logit_softcapping', t.attnSoftcap);
    if (t.finalSoftcap) w.setF32('gemma2.final_logit_softcapping', t.finalSoftcap);
    // big_vision trained PaliGemma 2 with global attention in every layer. llama.cpp's gemma2 insists
    // on sliding-window layers (a dense-only pattern trips an assertion when a context is created),
    // so the window is made as long as the context the model supports: it never masks anything.
    w.setU32('gemma2.attention.sliding_window', Math.max(t.contextLength, t.slidingWindow));
  }
  const padded = padVocabulary(vocab, rows, cfg.imageTokenId, vocab.source);
  w.setString('tokenizer.ggml.model', 'llama')
    .setString('tokenizer.ggml.pre', 'default')
    .setArray('tokenizer.ggml.tokens', GGUFValueType.STRING, padded.pieces)
    .setArray('tokenizer.ggml.scores', GGUFValueType.FLOAT32, padded.scores)
    .setArray('tokenizer.ggml.token_type', GGUFValueType.INT32, padded.types)
    .setU32('tokenizer.ggml.bos_token_id', vocab.bosId)
    .setU32('tokenizer.ggml.eos_token_id', vocab.eosId)
    .setU32('tokenizer.ggml.unknown_token_id', vocab.unkId)
    .setU32('tokenizer.ggml.padding_token_id', vocab.padId >= 0 ? vocab.padId : cfg.padId)
    // The runtime places BOS itself (after the image rows), so llama.cpp must not add one.
    .setBool('tokenizer.ggml.add_bos_token', false)
    .setBool('tokenizer.ggml.add_eos_token', false)
    .setBool('tokenizer.ggml.add_space_prefix', vocab.addSpacePrefix);
}

function writeVisionMetadata(w: GGUFWriter, cfg: PaliGemmaConfig, name: string, vocabRows: number, seg: { codebook: number; dim: number } | null, ffn: number) {
  const v = cfg.vision;
  w.setString('general.architecture', 'clip')
    .setString('general.name', `${name} vision`)
    .setBool('clip.has_vision_encoder', true)
    .setBool('clip.has_text_encoder', false)
    .setString('clip.projector_type', 'paligemma')
    .setU32('clip.vision.image_size', v.imageSize)
    .setU32('clip.vision.patch_size', v.patchSize)
    .setU32('clip.vision.embedding_length', v.hidden)
    .setU32('clip.vision.feed_forward_length', ffn)
    .setU32('paligemma.vision_ffn_unpadded', v.ffn)
    .setU32('clip.vision.block_count', v.layers)
    .setU32('clip.vision.attention.head_count', v.heads)
    .setF32('clip.vision.attention.layer_norm_epsilon', v.layerNormEps)
    .setU32('clip.vision.projection_dim', cfg.projectionDim)
    .setArray('clip.vision.image_mean', GGUFValueType.FLOAT32, cfg.imageMean)
    .setArray('clip.vision.image_std', GGUFValueType.FLOAT32, cfg.imageStd)
    .setString('paligemma.family', cfg.family)
    .setU32('paligemma.image_size', v.imageSize)
    .setU32('paligemma.patch_size', v.patchSize)
    .setU32('paligemma.image_tokens', v.imageTokens)
    .setArray('paligemma.image_mean', GGUFValueType.FLOAT32, cfg.imageMean)
    .setArray('paligemma.image_std', GGUFValueType.FLOAT32, cfg.imageStd)
    .setString('paligemma.resample', cfg.resample === 2 ? 'bilinear' : 'bicubic')
    .setU32('paligemma.image_token_id', cfg.imageTokenId)
    .setU32('paligemma.text_embedding_length', cfg.projectionDim)
    .setU32('paligemma.text_vocab_size', vocabRows)
    .setBool('paligemma.has_seg_decoder', seg !== null);
  if (seg) w.setU32('paligemma.seg.codebook_size', seg.codebook).setU32('paligemma.seg.embedding_dim', seg.dim);
}

/** big_vision's VQ-VAE decoder: decoder tensors and the codebook; the encoder is skipped. */
async function planSegDecoder(file: string) {
  const arrays = await readNpz(file);
  const codebook = arrays.get('_vq_vae._embedding');
  if (!codebook || codebook.shape.length !== 2)
    throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: no '_vq_vae._embedding' [codebook, dim] array: not a vae-oid.npz`);
  const out: { name: string; shape: number[]; data: Float32Array }[] = [{ name: 'seg.codebook', shape: [...codebook.shape].reverse(), data: codebook.data }];
  const expected = [
    'decoder.0',
    'decoder.2.net.0',
    'decoder.2.net.2',
    'decoder.2.net.4',
    'decoder.3.net.0',
    'decoder.3.net.2',
    'decoder.3.net.4',
    'decoder.4',
    'decoder.6',
    'decoder.8',
    'decoder.10',
    'decoder.12',
  ];
  for (const layer of expected) {
    for (const part of ['weight', 'bias']) {
      const a = arrays.get(`${layer}.${part}`);
      if (!a) throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: '${layer}.${part}' is missing`);
      // PyTorch layouts kept as they are: ggml order is the reversed shape.
      out.push({ name: `seg.${layer}.${part}`, shape: [...a.shape].reverse(), data: a.data });
    }
  }
  return { tensors: out, codebook: codebook.shape[0]!, dim: codebook.shape[1]! };
}

async function ensureWritableDir(dir: string) {
  try {
    await fs.promises.mkdir(dir, { recursive: true });
    await fs.promises.access(dir, fs.constants.W_OK);
  } catch (err) {
    throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `${dir}: output folder is not writable (${(err as NodeJS.ErrnoException).code})`, { cause: err });
  }
}

/**
 * Converts a Hugging Face PaliGemma checkpoint folder into `<name>-<type>.gguf` (text) and
 * `<name>-mmproj-<visionType>.gguf` (vision) in `outDir`. Files are written under temporary names and
 * renamed at the end: a failed or aborted conversion leaves nothing under the final names.
 */
export async function convert(options: ConvertOptions): Promise<ConvertResult> {
  validate(options);
  const { signal } = options;
  const type: TextType = options.type ?? 'f16';
  const visionType: VisionType = options.visionType ?? (type === 'f32' ? 'f32' : 'f16');
  const input = path.resolve(options.input);
  const outDir = path.resolve(options.outDir ?? input);
  const name = options.name ?? (options.merge ? path.basename(path.resolve(options.merge)) : path.basename(input));
  const threads = options.threads ?? os.availableParallelism?.() ?? os.cpus().length;
  const checkAbort = () => {
    if (signal?.aborted) throw new AbortError('convert: aborted', { cause: signal.reason });
  };
  checkAbort();

  if (!fs.existsSync(input) || !fs.statSync(input).isDirectory()) {
    throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${input}: not a checkpoint folder`);
  }
  const cfg = await readPaliGemmaConfig(input);
  const merge = options.merge ? await readLoraForMerge(options.merge, input, options.mergeScale ?? 1) : new Map<string, LoraMergeFactors>();
  const vocab = await readVocabulary(path.join(input, 'tokenizer.model'), path.join(input, 'tokenizer.json'));
  const seg = options.segDecoder ? await planSegDecoder(path.resolve(options.segDecoder)) : null;
  await ensureWritableDir(outDir);
  const { binding } = getBinding();

  const ckpt = await Checkpoint.open(input);
  const writers: GGUFWriter[] = [];
  const temps: string[] = [];
  try {
    const layout = detectLayout(ckpt, input);
    const embed = ckpt.get(`${layout.text}embed_tokens.weight`)!;
    const vocabRows = embed.shape[0]!;
    if (embed.shape[1] !== cfg.text.hidden) {
      throw new PaliGemmaError('ERR_INVALID_FILE', `${input}: embedding width ${embed.shape[1]} differs from text_config.hidden_size ${cfg.text.hidden}`);
    }
    if (cfg.projectionDim !== cfg.text.hidden) {
      throw new PaliGemmaError('ERR_INVALID_FILE', `${input}: projection_dim ${cfg.projectionDim} differs from the text width ${cfg.text.hidden}`);
    }
    const textPlan = planText(ckpt, input, cfg, layout.text, type, vocabRows);
    const visionPlan = planVision(ckpt, input, cfg, layout.vision, layout.proj, visionType);

    const quantized = !['f32', 'f16', 'bf16'].includes(type);
    const modelPath = path.join(outDir, `${name}-${type}.gguf`);
    const mmprojPath = path.join(outDir, `${name}-mmproj-${visionType}.gguf`);
    const bytesTotal = [...textPlan, ...visionPlan].reduce((s, p) => s + p.src.byteLength, 0);
    let bytesDone = 0;
    const readShare = quantized ? 0.6 : 1; // llama.cpp's quantizer reports no progress: give it the rest
    const report = (phase: ConvertProgress['phase'], tensor?: string) => {
      options.onProgress?.({
        phase,
        bytesDone,
        bytesTotal,
        fraction: phase === 'done' ? 1 : phase === 'quantize' ? readShare : (bytesDone / bytesTotal) * readShare,
        tensor,
      });
    };

    const encode = async (p: Planned, f32: Float32Array, cols: number) =>
      p.type === 'F32' ? new Uint8Array(f32.buffer) : callNative(() => binding.quantizeRows(f32, cols, GGML_TYPES[p.type].ggmlName));
    const streamPlan = async (writer: GGUFWriter, plan: Planned[], phase: 'text' | 'vision') => {
      for (const p of plan) {
        const cols = p.shape[0]!;
        const srcCols = p.srcCols ?? cols;
        const rowBytes = srcCols * DTYPE_BYTES[p.src.dtype];
        const rows = p.src.byteLength / rowBytes;
        const perChunk = Math.max(1, Math.floor(CHUNK_BYTES / rowBytes));
        for (let r = 0; r < rows; r += perChunk) {
          checkAbort();
          const n = Math.min(perChunk, rows - r);
          let f32 = toFloat32(await ckpt.read(p.src, r * rowBytes, n * rowBytes), p.src.dtype);
          if (p.addOne) for (let i = 0; i < f32.length; i++) f32[i]! += 1;
          const lora = merge.get(p.dst);
          if (lora) mergeLoraRows(f32, r, n, lora);
          if (srcCols !== cols) {
            const wide = new Float32Array(n * cols);
            for (let i = 0; i < n; i++) wide.set(f32.subarray(i * srcCols, (i + 1) * srcCols), i * cols);
            f32 = wide;
          }
          await writer.writeTensor(p.dst, await encode(p, f32, cols));
          bytesDone += n * rowBytes;
          report(phase, p.dst);
        }
        if (p.padRows) await writer.writeTensor(p.dst, await encode(p, new Float32Array(p.padRows * cols), cols));
      }
    };

    // Text model: final type directly, or a lossless intermediate that llama.cpp then quantizes.
    const textOut = quantized ? path.join(outDir, `.${name}-${type}.${uniqueSuffix()}.unquantized.gguf`) : modelPath;
    if (quantized) temps.push(textOut);
    const tw = new GGUFWriter(textOut);
    writers.push(tw);
    const fileType = type === 'f32' ? 0 : type === 'bf16' ? 32 : 1;
    writeTextMetadata(tw, cfg, name, vocab, vocabRows, fileType);
    for (const p of textPlan) tw.addTensor(p.dst, p.shape, p.type);
    await tw.begin();
    await streamPlan(tw, textPlan, 'text');
    if (quantized) await tw.finish();
    else await tw.close();

    const vw = new GGUFWriter(mmprojPath);
    writers.push(vw);
    writeVisionMetadata(vw, cfg, name, vocabRows, seg && { codebook: seg.codebook, dim: seg.dim }, paddedVisionFfn(cfg.vision.ffn, visionType));
    for (const p of visionPlan) vw.addTensor(p.dst, p.shape, p.type);
    for (const s of seg?.tensors ?? []) vw.addTensor(s.name, s.shape, 'F32');
    await vw.begin();
    await streamPlan(vw, visionPlan, 'vision');
    for (const s of seg?.tensors ?? []) await vw.writeTensor(s.name, new Uint8Array(s.data.buffer, s.data.byteOffset, s.data.byteLength));

    await vw.close();
    if (quantized) {
      checkAbort();
      report('quantize');
      const partial = path.join(outDir, `.${name}-${type}.${uniqueSuffix()}.partial`);
      temps.push(partial);
      await callNative(() => binding.quantizeModel(textOut, partial, type, threads));
      checkAbort();
      await fs.promises.rm(textOut, { force: true });
      await vw.commit();
      await fs.promises.rename(partial, modelPath);
    } else {
      // Both final names appear only at the very end, once everything succeeded.
      await vw.commit();
      await tw.commit();
    }
    report('done');
    return { model: modelPath, mmproj: mmprojPath };
  } catch (err) {
    await Promise.all(writers.map((w) => w.abort()));
    await Promise.all(temps.map((t) => fs.promises.rm(t, { force: true })));
    throw err;
  } finally {
    await ckpt.close();
  }
}
