/**
 * Random-weight PaliGemma checkpoints at real shapes (SigLIP-So400m/14 + Gemma-2B, i.e.
 * PaliGemma 1 3B), in the Hugging Face layout, and the work they represent: what the benchmark,
 * the converter's memory measurement and the long-running tests convert.
 */
import fs from 'node:fs';
import path from 'node:path';
import { CHECKOUT } from './paths';

// Real shapes: SigLIP-So400m/14 and Gemma-2B (PaliGemma 1 3B).
export const VISION = { hidden: 1152, ffn: 4304, layers: 27, heads: 16, patch: 14 };
export const TEXT = { hidden: 2048, ffn: 16384, layers: 18, heads: 8, kvHeads: 1, headDim: 256, vocab: 257216 };

/** Floating-point operations of one image through SigLIP + projector (multiply-adds x 2). */
export function visionFlops(imageSize: number): number {
  const N = (imageSize / VISION.patch) ** 2;
  const C = VISION.hidden;
  const perLayer = 2 * N * (4 * C * C + 2 * C * VISION.ffn) + 2 * 2 * N * N * C;
  return VISION.layers * perLayer + 2 * N * 3 * VISION.patch ** 2 * C + 2 * N * C * TEXT.hidden;
}

/** Floating-point operations per prompt token of the Gemma-2B layers (the embedding lookup is free). */
export function textFlopsPerToken(): number {
  const { hidden: D, ffn: F, layers, heads, kvHeads, headDim } = TEXT;
  return layers * 2 * (D * heads * headDim * 2 + D * kvHeads * headDim * 2 + 3 * D * F);
}

/**
 * Writes a Hugging Face PaliGemma checkpoint with random BF16 weights at real shapes (fewer layers
 * if asked): what the benchmark and bench/measure-convert-memory.mjs convert.
 */
export interface SyntheticShapes {
  text?: Partial<typeof TEXT>;
  vision?: Partial<typeof VISION>;
}

export function writeSyntheticCheckpoint(dir: string, imageSize: number, log: (s: string) => void, shapes: SyntheticShapes = {}) {
  const tmp = `${dir}.partial`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  const text = { ...TEXT, ...shapes.text };
  const vision = { ...VISION, ...shapes.vision };
  const { hidden: D, ffn: F, heads: H, kvHeads: KV, headDim: HD, vocab: V, layers: L } = text;
  const { hidden: C, ffn: VF, patch: P, layers: VL } = vision;
  const N = (imageSize / P) ** 2;
  const t: [string, number[]][] = [
    ['language_model.model.embed_tokens.weight', [V, D]],
    ['language_model.model.norm.weight', [D]],
  ];
  for (let i = 0; i < L; i++) {
    const p = `language_model.model.layers.${i}.`;
    t.push(
      [`${p}input_layernorm.weight`, [D]],
      [`${p}post_attention_layernorm.weight`, [D]],
      [`${p}self_attn.q_proj.weight`, [H * HD, D]],
      [`${p}self_attn.k_proj.weight`, [KV * HD, D]],
      [`${p}self_attn.v_proj.weight`, [KV * HD, D]],
      [`${p}self_attn.o_proj.weight`, [D, H * HD]],
      [`${p}mlp.gate_proj.weight`, [F, D]],
      [`${p}mlp.up_proj.weight`, [F, D]],
      [`${p}mlp.down_proj.weight`, [D, F]],
    );
  }
  const vp = 'vision_tower.vision_model.';
  t.push(
    [`${vp}embeddings.patch_embedding.weight`, [C, 3, P, P]],
    [`${vp}embeddings.patch_embedding.bias`, [C]],
    [`${vp}embeddings.position_embedding.weight`, [N, C]],
    [`${vp}post_layernorm.weight`, [C]],
    [`${vp}post_layernorm.bias`, [C]],
    ['multi_modal_projector.linear.weight', [D, C]],
    ['multi_modal_projector.linear.bias', [D]],
  );
  for (let i = 0; i < VL; i++) {
    const p = `${vp}encoder.layers.${i}.`;
    for (const x of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) t.push([`${p}self_attn.${x}.weight`, [C, C]], [`${p}self_attn.${x}.bias`, [C]]);
    t.push(
      [`${p}layer_norm1.weight`, [C]],
      [`${p}layer_norm1.bias`, [C]],
      [`${p}layer_norm2.weight`, [C]],
      [`${p}layer_norm2.bias`, [C]],
      [`${p}mlp.fc1.weight`, [VF, C]],
      [`${p}mlp.fc1.bias`, [VF]],
      [`${p}mlp.fc2.weight`, [C, VF]],
      [`${p}mlp.fc2.bias`, [C]],
    );
  }
  // Small random BF16 values (never NaN/Inf): one 16 MiB pattern, offset per tensor.
  const pattern = Buffer.alloc(16 << 20);
  let seed = 12345;
  for (let i = 0; i < pattern.length; i += 2) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    pattern.writeUInt16LE(0x3c00 | ((seed >>> 8) & 0x3ff) | (seed & 0x10000 ? 0x8000 : 0), i);
  }
  const header: Record<string, unknown> = {};
  let offset = 0;
  for (const [name, shape] of t) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 2;
    header[name] = { dtype: 'BF16', shape, data_offsets: [offset, offset + bytes] };
    offset += bytes;
  }
  log(`writing a synthetic ${(offset / 1e9).toFixed(1)} GB checkpoint (${imageSize} px) to ${dir}`);
  const json = Buffer.from(JSON.stringify(header));
  const fd = fs.openSync(path.join(tmp, 'model.safetensors'), 'w');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  fs.writeSync(fd, len);
  fs.writeSync(fd, json);
  for (let left = offset, k = 0; left > 0; k++) {
    const n = Math.min(left, pattern.length - 2 * (k % 7));
    fs.writeSync(fd, pattern, 2 * (k % 7), n);
    left -= n;
  }
  fs.closeSync(fd);
  const tiny = path.join(CHECKOUT, 'test', 'fixtures', 'tiny-v1');
  for (const f of ['tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json']) fs.copyFileSync(path.join(tiny, f), path.join(tmp, f));
  fs.writeFileSync(
    path.join(tmp, 'config.json'),
    JSON.stringify({
      model_type: 'paligemma',
      image_token_index: 1572,
      projection_dim: D,
      text_config: {
        model_type: 'gemma',
        hidden_size: D,
        intermediate_size: F,
        num_attention_heads: H,
        num_key_value_heads: KV,
        head_dim: HD,
        num_hidden_layers: L,
        vocab_size: V,
      },
      vision_config: {
        hidden_size: C,
        intermediate_size: VF,
        num_attention_heads: vision.heads,
        num_hidden_layers: VL,
        image_size: imageSize,
        patch_size: P,
        projection_dim: D,
      },
    }),
  );
  fs.renameSync(tmp, dir);
}
