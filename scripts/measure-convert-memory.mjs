#!/usr/bin/env node
// Measures the converter's peak memory on a synthetic checkpoint with PaliGemma-3B's largest tensor
// (the 257216 x 2048 BF16 token embedding, 1.05 GB) plus two full-size Gemma-2B layers and two
// SigLIP-So400m layers. Prints checkpoint size, largest tensor and peak RSS per output type.
//   node scripts/measure-convert-memory.mjs [types...]     (default: f16 q8_0)
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const types = process.argv.slice(2).length ? process.argv.slice(2) : ['f16', 'q8_0'];
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'pg-convmem-'));
const ckpt = path.join(work, 'ckpt');
fs.mkdirSync(ckpt);

const D = 2048, F = 16384, H = 8, KV = 1, HD = 256, V = 257216, L = 2;
const VD = 1152, VF = 4304, VL = 2, S = 224, P = 14, N = (S / P) ** 2;
const tensors = [['language_model.model.embed_tokens.weight', [V, D]], ['language_model.model.norm.weight', [D]]];
for (let i = 0; i < L; i++) {
  const p = `language_model.model.layers.${i}.`;
  tensors.push([`${p}input_layernorm.weight`, [D]], [`${p}post_attention_layernorm.weight`, [D]],
    [`${p}self_attn.q_proj.weight`, [H * HD, D]], [`${p}self_attn.k_proj.weight`, [KV * HD, D]], [`${p}self_attn.v_proj.weight`, [KV * HD, D]],
    [`${p}self_attn.o_proj.weight`, [D, H * HD]], [`${p}mlp.gate_proj.weight`, [F, D]], [`${p}mlp.up_proj.weight`, [F, D]], [`${p}mlp.down_proj.weight`, [D, F]]);
}
const vp = 'vision_tower.vision_model.';
tensors.push([`${vp}embeddings.patch_embedding.weight`, [VD, 3, P, P]], [`${vp}embeddings.patch_embedding.bias`, [VD]],
  [`${vp}embeddings.position_embedding.weight`, [N, VD]], [`${vp}post_layernorm.weight`, [VD]], [`${vp}post_layernorm.bias`, [VD]],
  ['multi_modal_projector.linear.weight', [D, VD]], ['multi_modal_projector.linear.bias', [D]]);
for (let i = 0; i < VL; i++) {
  const p = `${vp}encoder.layers.${i}.`;
  for (const x of ['q_proj', 'k_proj', 'v_proj', 'out_proj']) tensors.push([`${p}self_attn.${x}.weight`, [VD, VD]], [`${p}self_attn.${x}.bias`, [VD]]);
  tensors.push([`${p}layer_norm1.weight`, [VD]], [`${p}layer_norm1.bias`, [VD]], [`${p}layer_norm2.weight`, [VD]], [`${p}layer_norm2.bias`, [VD]],
    [`${p}mlp.fc1.weight`, [VF, VD]], [`${p}mlp.fc1.bias`, [VF]], [`${p}mlp.fc2.weight`, [VD, VF]], [`${p}mlp.fc2.bias`, [VD]]);
}
// Small random BF16 values (never NaN/Inf), one 16 MiB pattern reused for every tensor.
const pattern = Buffer.alloc(16 << 20);
for (let i = 0; i < pattern.length; i += 2) pattern.writeUInt16LE(0x3c00 | ((Math.random() * 0x3ff) | 0) | (Math.random() < 0.5 ? 0x8000 : 0), i);
const header = {};
let offset = 0;
for (const [name, shape] of tensors) {
  const bytes = shape.reduce((a, b) => a * b, 1) * 2;
  header[name] = { dtype: 'BF16', shape, data_offsets: [offset, offset + bytes] };
  offset += bytes;
}
const json = Buffer.from(JSON.stringify(header));
const fd = fs.openSync(path.join(ckpt, 'model.safetensors'), 'w');
const len = Buffer.alloc(8);
len.writeBigUInt64LE(BigInt(json.length));
fs.writeSync(fd, len);
fs.writeSync(fd, json);
for (let left = offset; left > 0; left -= Math.min(left, pattern.length)) fs.writeSync(fd, pattern, 0, Math.min(left, pattern.length));
fs.closeSync(fd);
const tiny = path.join(root, 'test', 'fixtures', 'tiny-v1');
for (const f of ['tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json']) fs.copyFileSync(path.join(tiny, f), path.join(ckpt, f));
fs.writeFileSync(path.join(ckpt, 'config.json'), JSON.stringify({
  model_type: 'paligemma', image_token_index: 1572, projection_dim: D,
  text_config: { model_type: 'gemma', hidden_size: D, intermediate_size: F, num_attention_heads: H, num_key_value_heads: KV, head_dim: HD, num_hidden_layers: L, vocab_size: V },
  vision_config: { hidden_size: VD, intermediate_size: VF, num_attention_heads: 16, num_hidden_layers: VL, image_size: S, patch_size: P, projection_dim: D },
}));

const size = fs.statSync(path.join(ckpt, 'model.safetensors')).size;
console.log(`checkpoint: ${(size / 1e9).toFixed(2)} GB BF16; largest tensor: token embedding ${V}x${D} = ${(V * D * 2 / 1e9).toFixed(2)} GB BF16 (${(V * D * 4 / 1e9).toFixed(2)} GB as f32)`);
try {
  for (const type of types) {
    const script = `
      const { convert } = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
      const t0 = Date.now();
      convert({ input: ${JSON.stringify(ckpt)}, outDir: ${JSON.stringify(path.join(work, type))}, type: ${JSON.stringify(type)} })
        .then(() => console.log(JSON.stringify({ seconds: (Date.now() - t0) / 1000, maxRssMB: process.resourceUsage().maxRSS / 1024 })))
        .catch((e) => { console.error(e); process.exit(1); });`;
    const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' });
    if (res.status !== 0) throw new Error(res.stderr);
    const r = JSON.parse(res.stdout.trim().split('\n').pop());
    console.log(`--type ${type}: peak RSS ${r.maxRssMB.toFixed(0)} MB, ${r.seconds.toFixed(1)} s`);
    fs.rmSync(path.join(work, type), { recursive: true, force: true });
  }
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
