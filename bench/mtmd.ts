/**
 * llama.cpp's own SigLIP (mtmd) on the same vision tower, for `paligemma bench`.
 *
 * mtmd has no PaliGemma projector, but Gemma 3's vision tower is the same SigLIP-So400m/14. So the
 * benchmark rewrites our mmproj as a Gemma 3 one: the same tensors, byte for byte (the same weight
 * types), plus Gemma 3's small projector (4x4 average pooling, RMS norm, one matrix — under 0.1% of
 * the tower's work). llama.cpp's public `llama-mtmd-cli` then encodes the benchmark image and prints
 * how long the encoding took; the text model it needs is the benchmark's own.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { type GGUFValue, readGGUF } from '../lib/gguf/read';
import type { GGMLTypeName } from '../lib/gguf/types';
import { GGUFValueType, GGUFWriter } from '../lib/gguf/write';
import { llamaToolPath } from './paths';

const COPIED_KEYS = [
  'clip.vision.image_size',
  'clip.vision.patch_size',
  'clip.vision.embedding_length',
  'clip.vision.feed_forward_length',
  'clip.vision.block_count',
  'clip.vision.attention.head_count',
  'clip.vision.attention.layer_norm_epsilon',
];

function num(meta: Record<string, GGUFValue>, key: string, file: string): number {
  const v = meta[key];
  if (typeof v !== 'number') throw new Error(`${file}: '${key}' is missing or not a number`);
  return v;
}

/** Writes `out`: the vision tower of our `mmproj` with Gemma 3's projector, in mtmd's format. */
export async function writeMtmdProjector(mmproj: string, out: string): Promise<void> {
  const info = await readGGUF(mmproj);
  const meta = info.metadata;
  if (meta['clip.projector_type'] !== 'paligemma') throw new Error(`${mmproj}: not a paligemma mmproj`);
  const width = num(meta, 'clip.vision.embedding_length', mmproj);
  const textWidth = num(meta, 'clip.vision.projection_dim', mmproj);
  const w = new GGUFWriter(out);
  try {
    w.setString('general.architecture', 'clip');
    w.setString('general.name', `${String(meta['general.name'] ?? 'paligemma')} as gemma3 (benchmark only)`);
    w.setBool('clip.has_vision_encoder', true);
    w.setString('clip.projector_type', 'gemma3');
    w.setBool('clip.use_gelu', true); // SigLIP's tanh GELU
    for (const k of COPIED_KEYS) {
      if (k.endsWith('epsilon')) w.setF32(k, num(meta, k, mmproj));
      else w.setU32(k, num(meta, k, mmproj));
    }
    w.setU32('clip.vision.projection_dim', textWidth);
    for (const k of ['clip.vision.image_mean', 'clip.vision.image_std']) {
      w.setArray(k, GGUFValueType.FLOAT32, Array.from(meta[k] as ArrayLike<number>));
    }
    const tower = info.tensors.filter((t) => t.name.startsWith('v.'));
    for (const t of tower) w.addTensor(t.name, t.shape, t.type.toUpperCase() as GGMLTypeName);
    // Gemma 3's projector: ggml shape [text width, vision width] (mtmd transposes it), and a norm.
    w.addTensor('mm.input_projection.weight', [textWidth, width], 'F32');
    w.addTensor('mm.soft_emb_norm.weight', [width], 'F32');
    await w.begin();
    const fd = await fs.promises.open(mmproj, 'r');
    try {
      for (const t of tower) {
        const buf = Buffer.allocUnsafe(t.size);
        const { bytesRead } = await fd.read(buf, 0, t.size, t.offset);
        if (bytesRead !== t.size) throw new Error(`${mmproj}: tensor '${t.name}' is truncated`);
        await w.writeTensor(t.name, buf);
      }
    } finally {
      await fd.close();
    }
    // The projector's values do not change the work; small constants keep the output finite.
    await w.writeTensor('mm.input_projection.weight', new Uint8Array(new Float32Array(textWidth * width).fill(1e-3).buffer));
    await w.writeTensor('mm.soft_emb_norm.weight', new Uint8Array(new Float32Array(width).fill(1).buffer));
    await w.finish();
  } catch (err) {
    await w.abort();
    throw err;
  }
}

export interface MtmdRun {
  /** mtmd's own figure: the time of its image encoding call. */
  encode_ms: number;
}

/**
 * Runs llama-mtmd-cli once on one image and reads the encode time it logs. Flash attention is
 * asked for explicitly (its CPU default too), as our tower uses it.
 */
export function runMtmdEncode(textModel: string, projector: string, image: string, threads: number, toolsDir?: string): MtmdRun {
  const args = [
    '-m',
    textModel,
    '--mmproj',
    projector,
    '--image',
    image,
    '-p',
    'caption en',
    '-n',
    '1',
    '-t',
    String(threads),
    '--temp',
    '0',
    '-c',
    '512',
    '--chat-template',
    'gemma',
    '-fa',
    'on',
  ];
  const res = spawnSync(llamaToolPath('llama-mtmd-cli', toolsDir), args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  const log = `${res.stderr ?? ''}${res.stdout ?? ''}`;
  // Recent mtmd-cli logs the batch (one image here); older ones the slice.
  const m = /mtmd batch encoding done in (\d+) ms|image slice encoded in (\d+) ms/.exec(log);
  if (res.status !== 0 || !m) throw new Error(`llama-mtmd-cli failed (exit ${res.status ?? res.signal}): ${log.slice(-800)}`);
  return { encode_ms: Number(m[1] ?? m[2]) };
}
