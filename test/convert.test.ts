import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import t from 'tap';
import { writeSyntheticCheckpoint } from '../bench/synthetic';
import { toFloat32 } from '../lib/convert/dtype';
import { readNpz } from '../lib/convert/npz';
import { Checkpoint } from '../lib/convert/safetensors';
import { parseSentencePiece, parseTokenizerJson } from '../lib/convert/tokenizer';
import { AbortError, type ConvertProgress, convert, PaliGemma, PaliGemmaError, readGGUF } from '../lib/index';
import { getBinding } from '../lib/native/binding';
import { copyCheckpoint, FIXTURES, readF32, reference, relError, rewriteSafetensors } from './helpers/fixtures';
import { tmpDir } from './helpers/tmp';

const out = tmpDir('pg-convert-');
const native = getBinding().binding;
const vae = path.join(FIXTURES, 'vae', 'vae.npz');

async function sourceTensor(fixture: string, name: string): Promise<Float32Array> {
  const ckpt = await Checkpoint.open(path.join(FIXTURES, fixture));
  const tensor = ckpt.get(name)!;
  const data = toFloat32(await ckpt.read(tensor, 0, tensor.byteLength), tensor.dtype);
  await ckpt.close();
  return data;
}

function f32At(file: string, offset: number, count: number): Float32Array {
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(count * 4);
  fs.readSync(fd, buf, 0, buf.length, offset);
  fs.closeSync(fd);
  return new Float32Array(buf.buffer, buf.byteOffset, count);
}

for (const [fixture, arch, textPrefix] of [
  ['tiny-v1', 'gemma', 'language_model.model.'],
  ['tiny-v2', 'gemma2', 'model.language_model.'],
] as const) {
  t.test(`${fixture} converts at f32 with llama.cpp's names and metadata`, async (t) => {
    const progress: ConvertProgress[] = [];
    const res = await convert({
      input: path.join(FIXTURES, fixture),
      outDir: path.join(out, fixture),
      type: 'f32',
      segDecoder: vae,
      onProgress: (p) => progress.push(p),
    });
    t.equal(path.basename(res.model), `${fixture}-f32.gguf`);
    t.equal(path.basename(res.mmproj), `${fixture}-mmproj-f32.gguf`);
    t.same(fs.readdirSync(path.join(out, fixture)).sort(), [path.basename(res.mmproj), path.basename(res.model)].sort(), 'no temporary files left');

    const fractions = progress.map((p) => p.fraction);
    t.ok(
      fractions.every((f, i) => i === 0 || f >= fractions[i - 1]!),
      'progress never goes back',
    );
    t.equal(progress.at(-1)!.phase, 'done');
    t.equal(progress.at(-1)!.fraction, 1);

    const text = await readGGUF(res.model);
    const m = text.metadata;
    t.equal(m['general.architecture'], arch);
    t.equal(m[`${arch}.block_count`], 2);
    t.equal(m[`${arch}.embedding_length`], 64);
    t.equal(m[`${arch}.attention.head_count`], 4);
    t.equal(m[`${arch}.attention.head_count_kv`], arch === 'gemma' ? 1 : 2);
    t.equal(m[`${arch}.attention.key_length`], 32);
    t.equal(m['tokenizer.ggml.model'], 'llama');
    t.equal(m['tokenizer.ggml.add_bos_token'], false);
    t.equal(m['tokenizer.ggml.add_space_prefix'], false, 'no dummy prefix, as in the SentencePiece normalizer spec');
    const tokens = m['tokenizer.ggml.tokens'] as string[];
    const types = m['tokenizer.ggml.token_type'] as Int32Array;
    t.equal(tokens.length, 1600, 'vocabulary padded to the embedding rows');
    t.equal(tokens[1572], '<image>');
    t.equal(types[1572], 3, '<image> is a control token');
    t.equal(types[1599], 5, 'padding pieces are unused');
    t.equal(types[tokens.indexOf('<loc0001>')], 4, '<loc> pieces stay user-defined');
    if (arch === 'gemma2') {
      t.equal(m['gemma2.attn_logit_softcapping'], 50);
      t.equal(m['gemma2.final_logit_softcapping'], 30);
      t.ok((m['gemma2.attention.sliding_window'] as number) >= (m['gemma2.context_length'] as number), 'the window never masks inside the context');
      t.ok(
        text.tensors.find((x) => x.name === 'blk.1.post_ffw_norm.weight'),
        'Gemma 2 post norms',
      );
    }
    const names = text.tensors.map((x) => x.name);
    t.equal(names.length, arch === 'gemma' ? 2 + 2 * 9 : 2 + 2 * 11);
    t.ok(text.tensors.every((x) => x.type === 'f32'));
    const embd = text.tensors.find((x) => x.name === 'token_embd.weight')!;
    t.same(embd.shape, [64, 1600]);

    // RMSNorm gains are stored as w and applied as (1 + w) in Gemma: the file must hold 1 + w.
    const norm = text.tensors.find((x) => x.name === 'blk.0.attn_norm.weight')!;
    const src = await sourceTensor(fixture, `${textPrefix}layers.0.input_layernorm.weight`);
    const got = f32At(res.model, norm.offset, 64);
    t.ok(
      got.every((v, i) => Math.abs(v - (src[i]! + 1)) < 1e-6),
      'norm weights hold 1 + w',
    );
    const srcEmbd = await sourceTensor(fixture, `${textPrefix}embed_tokens.weight`);
    const gotEmbd = f32At(res.model, embd.offset + 4 * 64 * 1572, 64);
    t.same(Array.from(gotEmbd), Array.from(srcEmbd.subarray(64 * 1572, 64 * 1573)), 'embedding rows copied exactly');

    const vision = await readGGUF(res.mmproj);
    const v = vision.metadata;
    t.equal(v['general.architecture'], 'clip');
    t.equal(v['clip.vision.block_count'], 2);
    t.equal(v['clip.vision.embedding_length'], 144);
    t.equal(v['paligemma.family'], arch === 'gemma' ? 'paligemma' : 'paligemma2');
    t.equal(v['paligemma.image_size'], 56);
    t.equal(v['paligemma.image_tokens'], 16);
    t.equal(v['paligemma.image_token_id'], 1572);
    t.equal(v['paligemma.text_embedding_length'], 64);
    t.equal(v['paligemma.resample'], 'bicubic');
    t.equal(v['paligemma.has_seg_decoder'], true);
    t.equal(v['paligemma.seg.embedding_dim'], 64, 'codebook dimension read from the npz');
    const vt = new Map(vision.tensors.map((x) => [x.name, x]));
    t.same(vt.get('v.patch_embd.weight')!.shape, [14, 14, 3, 144]);
    t.same(vt.get('v.position_embd.weight')!.shape, [144, 16]);
    t.same(vt.get('v.blk.1.ffn_down.weight')!.shape, [200, 144]);
    t.same(vt.get('mm.0.weight')!.shape, [144, 64]);
    t.ok(vt.get('v.post_ln.bias'));
    t.same(vt.get('seg.codebook')!.shape, [64, 128]);
    t.same(vt.get('seg.decoder.4.weight')!.shape, [4, 4, 128, 128]);
    t.notOk(
      [...vt.keys()].some((k) => k.includes('encoder')),
      'VQ-VAE encoder skipped',
    );
  });

  t.test(`${fixture}: llama.cpp's own loader and tokenizer read the converted file`, async (t) => {
    const ref = reference(fixture);
    const file = path.join(out, fixture, `${fixture}-f32.gguf`);
    const info = await native.inspectTextModel(
      file,
      ref.tokenize.map((x) => x.text),
      false,
    );
    t.equal(info.architecture, arch);
    t.equal(info.nLayer, 2);
    t.equal(info.nEmbd, 64);
    t.equal(info.nVocab, 1600);
    ref.tokenize.forEach((x, i) => {
      t.same(Array.from(info.tokens[i]!), x.ids, `tokenize ${JSON.stringify(x.text)}`);
    });
    for (const c of ref.cases.slice(0, 2)) {
      const ids = await native.inspectTextModel(file, [`${c.prompt}\n`], true);
      t.same([2, ...ids.tokens[0]!], c.prefix_ids, `prefix of ${JSON.stringify(c.prompt)}`);
    }
  });
}

t.test('every text type converts and loads in llama.cpp; vision rows that do not divide stay f16', async (t) => {
  for (const type of ['f16', 'bf16', 'q8_0', 'q4_0', 'q4_k_m', 'q5_k_m', 'q6_k'] as const) {
    const dir = path.join(out, `types-${type}`);
    const res = await convert({ input: path.join(FIXTURES, 'tiny-v2'), outDir: dir, type, visionType: 'q8_0' });
    const info = await native.inspectTextModel(res.model, ['caption en'], false);
    t.equal(info.architecture, 'gemma2', `${type}: loads`);
    t.same(Array.from(info.tokens[0]!), [351, 307, 275], `${type}: tokenizes`);
    const g = await readGGUF(res.model);
    t.equal(fs.readdirSync(dir).length, 2, `${type}: no temporary files`);
    if (type === 'q8_0') t.equal(g.tensors.find((x) => x.name === 'blk.0.ffn_up.weight')!.type, 'q8_0');
    if (type === 'q4_k_m') t.equal(g.metadata['general.file_type'], 15, 'llama.cpp records Q4_K_M');
    const v = await readGGUF(res.mmproj);
    const types = new Map(v.tensors.map((x) => [x.name, x.type]));
    // The tiny tower is 144 wide: not a multiple of q8_0's 32, so matrices fall back to f16.
    t.equal(types.get('v.blk.0.attn_q.weight'), 'f16');
    t.equal(types.get('v.blk.0.ln1.weight'), 'f32');
    t.equal(types.get('v.position_embd.weight'), 'f32');
  }
});

t.test('vision quantization through ggml', async (t) => {
  const rows = new Float32Array(2 * 64).map((_, i) => Math.sin(i));
  const q = await native.quantizeRows(rows, 64, 'q8_0');
  t.equal(q.byteLength, 2 * 2 * 34, 'two rows of two q8_0 blocks');
  const h = await native.quantizeRows(rows, 64, 'f16');
  t.equal(h.byteLength, 2 * 64 * 2);
  await t.rejects(native.quantizeRows(rows, 48, 'q8_0'), /not a multiple|block size/);
});

t.test('bad checkpoints fail with errors naming the file, leaving no output', async (t) => {
  const cases: [string, (dir: string) => void, RegExp, string][] = [
    ['missing config', (d) => fs.rmSync(path.join(d, 'config.json')), /config\.json: missing/, 'ERR_FILE_NOT_FOUND'],
    ['broken config', (d) => fs.writeFileSync(path.join(d, 'config.json'), '{oops'), /config\.json: not valid JSON/, 'ERR_INVALID_FILE'],
    [
      'unknown architecture',
      (d) => {
        const c = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
        c.model_type = 'llava';
        fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(c));
      },
      /model_type is "llava"/,
      'ERR_INVALID_FILE',
    ],
    [
      'unknown text architecture',
      (d) => {
        const c = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
        c.text_config.model_type = 'llama';
        fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(c));
      },
      /text_config\.model_type "llama"/,
      'ERR_INVALID_FILE',
    ],
    ['missing tokenizer', (d) => fs.rmSync(path.join(d, 'tokenizer.model')), /tokenizer\.model: missing/, 'ERR_FILE_NOT_FOUND'],
    [
      'garbage tokenizer',
      (d) => fs.writeFileSync(path.join(d, 'tokenizer.model'), Buffer.from([0x0a, 0xff, 0xff, 0xff, 0x0f])),
      /tokenizer\.model: not a valid SentencePiece/,
      'ERR_INVALID_FILE',
    ],
    ['missing weights', (d) => fs.rmSync(path.join(d, 'model.safetensors')), /no model\.safetensors/, 'ERR_FILE_NOT_FOUND'],
    [
      'missing shard',
      (d) => {
        fs.rmSync(path.join(d, 'model.safetensors'));
        fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 'model-00001-of-00002.safetensors' } }));
      },
      /model-00001-of-00002\.safetensors: shard named in model\.safetensors\.index\.json is missing/,
      'ERR_FILE_NOT_FOUND',
    ],
    ...(
      [
        ['shard outside the folder', '../model.safetensors', /weight_map names "\.\.\/model\.safetensors", not a file name of the checkpoint folder/],
        ['absolute shard path', '/etc/passwd', /weight_map names "\/etc\/passwd"/],
      ] as const
    ).map(
      ([what, shard, pattern]) =>
        [
          what,
          (d: string) => {
            fs.renameSync(path.join(d, 'model.safetensors'), path.join(d, '..', 'model.safetensors'));
            fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: shard } }));
          },
          pattern,
          'ERR_INVALID_FILE',
        ] as [string, (dir: string) => void, RegExp, string],
    ),
    [
      'shard symlinked out of the folder',
      (d) => {
        const outside = path.join(d, '..', 'outside.safetensors');
        fs.renameSync(path.join(d, 'model.safetensors'), outside);
        fs.symlinkSync(outside, path.join(d, 'model-00001-of-00001.safetensors'));
        fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { a: 'model-00001-of-00001.safetensors' } }));
      },
      /model-00001-of-00001\.safetensors: shard named in model\.safetensors\.index\.json leads out of the checkpoint folder/,
      'ERR_INVALID_FILE',
    ],
    [
      'query_pre_attn_scalar llama.cpp does not apply',
      (d) => {
        const c = JSON.parse(fs.readFileSync(path.join(d, 'config.json'), 'utf8'));
        c.text_config.query_pre_attn_scalar = 48;
        fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify(c));
      },
      /text_config\.query_pre_attn_scalar is 48, but llama\.cpp's gemma scales queries by 1\/sqrt\(32\)/,
      'ERR_INVALID_FILE',
    ],
    [
      'truncated weights',
      (d) => {
        const f = path.join(d, 'model.safetensors');
        fs.truncateSync(f, fs.statSync(f).size - 100);
      },
      /does not fit its data range/,
      'ERR_INVALID_FILE',
    ],
    [
      'missing tensor',
      (d) => rewriteSafetensors(path.join(d, 'model.safetensors'), (n, e, data) => (n.endsWith('layers.1.mlp.up_proj.weight') ? null : { ...e, data })),
      /tensor 'language_model\.model\.layers\.1\.mlp\.up_proj\.weight' is missing/,
      'ERR_INVALID_FILE',
    ],
    [
      'wrong shape',
      (d) =>
        rewriteSafetensors(path.join(d, 'model.safetensors'), (n, e, data) =>
          n === 'language_model.model.layers.0.self_attn.q_proj.weight' ? { ...e, shape: [64, 128], data } : { ...e, data },
        ),
      /q_proj\.weight' has shape \[64, 128\], expected \[128, 64\]/,
      'ERR_INVALID_FILE',
    ],
    [
      'unsupported dtype',
      (d) =>
        rewriteSafetensors(path.join(d, 'model.safetensors'), (n, e, data) =>
          n.endsWith('norm.weight') && n.startsWith('language_model.model.norm') ? { dtype: 'I32', shape: e.shape, data } : { ...e, data },
        ),
      /has dtype I32; supported: F32, F16, BF16/,
      'ERR_INVALID_FILE',
    ],
  ];
  for (const [what, damage, pattern, code] of cases) {
    const input = copyCheckpoint('tiny-v1', path.join(out, 'bad', what.replace(/ /g, '-')));
    damage(input);
    const outDir = path.join(out, 'bad-out', what.replace(/ /g, '-'));
    const err = await convert({ input, outDir, type: 'q8_0' }).catch((e: unknown) => e);
    t.ok(err instanceof PaliGemmaError, `${what}: PaliGemmaError`);
    t.equal((err as PaliGemmaError).code, code, `${what}: ${code}`);
    t.match((err as Error).message, pattern, `${what}: ${(err as Error).message}`);
    t.same(fs.existsSync(outDir) ? fs.readdirSync(outDir) : [], [], `${what}: no output`);
  }
});

t.test('bad options and an unwritable output are rejected', async (t) => {
  const input = path.join(FIXTURES, 'tiny-v1');
  // @ts-expect-error: invalid on purpose
  await t.rejects(convert({ input, type: 'q3' }), { code: 'ERR_INVALID_ARGUMENT', message: /options\.type/ });
  // @ts-expect-error: invalid on purpose
  await t.rejects(convert({ input, visionType: 'q4_k_m' }), { code: 'ERR_INVALID_ARGUMENT', message: /visionType/ });
  await t.rejects(convert({ input: path.join(out, 'nowhere') }), { code: 'ERR_FILE_NOT_FOUND' });
  await t.rejects(convert({ input, threads: 0 }), { code: 'ERR_INVALID_ARGUMENT' });
  const file = path.join(out, 'a-file');
  fs.writeFileSync(file, 'x');
  await t.rejects(convert({ input, outDir: path.join(file, 'sub') }), { code: 'ERR_INVALID_ARGUMENT', message: /output folder is not writable/ });
  await t.rejects(convert({ input, segDecoder: path.join(out, 'none.npz') }), { code: 'ERR_FILE_NOT_FOUND', message: /none\.npz/ });
});

t.test('abort stops the conversion and leaves no files', async (t) => {
  for (const type of ['f32', 'q8_0'] as const) {
    const ac = new AbortController();
    const outDir = path.join(out, `aborted-${type}`);
    let calls = 0;
    const p = convert({
      input: path.join(FIXTURES, 'tiny-v2'),
      outDir,
      type,
      signal: ac.signal,
      onProgress: () => {
        if (++calls === 3) ac.abort();
      },
    });
    const err = await p.catch((e: unknown) => e);
    t.ok(err instanceof AbortError, `${type}: AbortError`);
    t.equal((err as AbortError).name, 'AbortError');
    t.same(fs.readdirSync(outDir), [], `${type}: nothing left behind`);
  }
});

t.test('tokenizer.json is used when tokenizer.model is absent', async (t) => {
  const input = copyCheckpoint('tiny-v1', path.join(out, 'json-tokenizer'));
  const sp = parseSentencePiece(fs.readFileSync(path.join(input, 'tokenizer.model')), 'tokenizer.model');
  // What Hugging Face writes for Gemma: a BPE vocab (piece -> id) and the special/added tokens.
  const vocab: Record<string, number> = {};
  const added: { id: number; content: string; special: boolean }[] = [];
  sp.pieces.forEach((p, id) => {
    if (sp.types[id] === 3 || sp.types[id] === 4) added.push({ id, content: p, special: sp.types[id] === 3 });
    else vocab[p] = id;
  });
  fs.writeFileSync(
    path.join(input, 'tokenizer.json'),
    JSON.stringify({ model: { type: 'BPE', vocab, unk_token: '<unk>', byte_fallback: true }, added_tokens: added }),
  );
  fs.rmSync(path.join(input, 'tokenizer.model'));
  const res = await convert({ input, outDir: path.join(out, 'json-tokenizer-out'), type: 'f32' });
  const ref = reference('tiny-v1');
  const info = await native.inspectTextModel(
    res.model,
    ref.tokenize.map((x) => x.text),
    true,
  );
  ref.tokenize.forEach((x, i) => {
    t.same(Array.from(info.tokens[i]!), x.ids, `tokenize ${JSON.stringify(x.text)}`);
  });
});

t.test('quantized vision: the 4304-style MLP width is zero-padded to whole blocks, results unchanged', async (t) => {
  const res = await convert({ input: path.join(FIXTURES, 'tiny-v2'), outDir: path.join(out, 'padded'), type: 'f32', visionType: 'q8_0' });
  const v = await readGGUF(res.mmproj);
  t.equal(v.metadata['clip.vision.feed_forward_length'], 224, '200 padded to 224');
  t.equal(v.metadata['paligemma.vision_ffn_unpadded'], 200);
  const types = new Map(v.tensors.map((x) => [x.name, x]));
  t.same(types.get('v.blk.0.ffn_up.weight')!.shape, [144, 224]);
  t.same(types.get('v.blk.0.ffn_up.bias')!.shape, [224]);
  t.same(types.get('v.blk.0.ffn_down.weight')!.shape, [224, 144]);
  t.equal(types.get('v.blk.0.ffn_down.weight')!.type, 'q8_0', 'fc2 rows now divide into q8_0 blocks');
  const model = await PaliGemma.load({ model: res.model, mmproj: res.mmproj, gpu: 'cpu' });
  t.teardown(() => model.dispose());
  const img = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');
  const embd = await model.encodeImage(img);
  const err = relError(embd.data, readF32(path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.embd.f32')));
  t.ok(err < 2e-2, `q8_0 vision embedding rel. error ${err.toExponential(2)}`);
});

t.test('tokenizers at real size: a 257,216-piece tokenizer.model and tokenizer.json both parse', async (t) => {
  const n = 257216;
  const piece = (i: number) => (i < 3 ? ['<pad>', '<eos>', '<bos>'][i]! : `▁p${i}`);
  // tokenizer.model: a SentencePiece ModelProto, pieces as field 1 { piece = 1, score = 2, type = 3 }.
  const chunks: Buffer[] = [];
  const varint = (v: number) => {
    const b: number[] = [];
    while (v > 127) {
      b.push((v & 127) | 128);
      v >>>= 7;
    }
    b.push(v);
    return Buffer.from(b);
  };
  for (let i = 0; i < n; i++) {
    const text = Buffer.from(piece(i));
    const score = Buffer.alloc(4);
    score.writeFloatLE(-i);
    const body = Buffer.concat([Buffer.from([0x0a]), varint(text.length), text, Buffer.from([0x15]), score, Buffer.from([0x18, i < 3 ? 3 : 1])]);
    chunks.push(Buffer.from([0x0a]), varint(body.length), body);
  }
  chunks.push(Buffer.from([0x12, 0x02, 0x18, 0x02])); // trainer_spec { model_type: BPE }
  const sp = parseSentencePiece(Buffer.concat(chunks), 'big-tokenizer.model');
  t.equal(sp.pieces.length, n);
  t.equal(sp.pieces[n - 1], piece(n - 1));
  const vocab: Record<string, number> = {};
  for (let i = 3; i < n; i++) vocab[piece(i)] = i;
  const json = JSON.stringify({
    model: { type: 'BPE', vocab, unk_token: '<unk>' },
    added_tokens: [0, 1, 2].map((id) => ({ id, content: piece(id), special: true })),
  });
  const hf = parseTokenizerJson(json, 'big-tokenizer.json');
  t.equal(hf.pieces.length, n, 'no RangeError: the largest id is found without spreading 257k arguments');
  t.equal(hf.bosId, 2);
  t.throws(
    () => parseTokenizerJson(JSON.stringify({ model: { vocab: { a: 1e12 } } }), 'huge.json'),
    { code: 'ERR_INVALID_FILE', message: /huge\.json: piece "a" has id 1000000000000/ },
    'an absurd id is refused, not allocated',
  );
  t.throws(() => parseTokenizerJson(JSON.stringify({ model: { vocab: { a: -1 } } }), 'neg.json'), { code: 'ERR_INVALID_FILE' });
});

t.test('npz archives: members named out of the archive, and entries that inflate past their declared size, are refused', async (t) => {
  // A one-entry zip (deflated) with a given name and declared size.
  const npy = (() => {
    const header = "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }";
    const pad = 64 - ((10 + header.length + 1) % 64);
    const h = Buffer.from(`${header}${' '.repeat(pad)}\n`, 'latin1');
    const pre = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, h.length & 255, h.length >> 8]);
    return Buffer.concat([pre, h, Buffer.from(new Float32Array([1, 2, 3, 4]).buffer)]);
  })();
  const zip = (name: string, declared = npy.length) => {
    const data = zlib.deflateRawSync(npy);
    const n = Buffer.from(name);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(8, 8);
    local.writeUInt32LE(data.length, 18);
    local.writeUInt32LE(declared, 22);
    local.writeUInt16LE(n.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(8, 10);
    central.writeUInt32LE(data.length, 20);
    central.writeUInt32LE(declared, 24);
    central.writeUInt16LE(n.length, 28);
    central.writeUInt32LE(0, 42);
    const cdOffset = 30 + n.length + data.length;
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(1, 8);
    end.writeUInt16LE(1, 10);
    end.writeUInt32LE(46 + n.length, 12);
    end.writeUInt32LE(cdOffset, 16);
    return Buffer.concat([local, n, data, central, n, end]);
  };
  const dir = tmpDir();
  const write = (name: string, buf: Buffer) => {
    const f = path.join(dir, name);
    fs.writeFileSync(f, buf);
    return f;
  };
  t.same(Array.from((await readNpz(write('ok.npz', zip('a.npy')))).get('a')!.data), [1, 2, 3, 4], 'a well-formed archive reads');
  await t.rejects(readNpz(write('climb.npz', zip('../../etc/x.npy'))), {
    code: 'ERR_INVALID_FILE',
    message: /climb\.npz: zip entry '\.\.\/\.\.\/etc\/x\.npy' has a path outside the archive/,
  });
  await t.rejects(readNpz(write('abs.npz', zip('/abs.npy'))), { code: 'ERR_INVALID_FILE', message: /path outside the archive/ });
  await t.rejects(readNpz(write('bomb.npz', zip('a.npy', 8))), {
    code: 'ERR_INVALID_FILE',
    message: /bomb\.npz: zip entry a\.npy does not inflate to its declared 8 bytes/,
  });
});

t.test('converter faults: SIGINT / SIGTERM mid-conversion, disk full mid-write, one output converted twice at once', async (t) => {
  const ckpt = path.join(out, 'faults-ckpt');
  // About 100 MB of BF16 (a real vocabulary's embedding at width 192): long enough to interrupt.
  writeSyntheticCheckpoint(ckpt, 224, () => undefined, {
    text: { hidden: 192, ffn: 384, layers: 2, heads: 2, kvHeads: 1, headDim: 96, vocab: 257216 },
    vision: { hidden: 128, ffn: 256, layers: 2, heads: 2 },
  });
  const cli = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const) {
    const outDir = path.join(out, `signal-${signal}`);
    fs.mkdirSync(outDir);
    const child = spawn(process.execPath, [cli, 'convert', ckpt, '--out', outDir, '--type', 'q8_0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let sent = false;
    child.stderr.on('data', (d) => {
      stderr += d;
      // The first progress line: the conversion is writing.
      if (!sent && /converting|%/.test(stderr)) {
        sent = true;
        child.kill(signal);
      }
    });
    const status = await new Promise<number | null>((resolve) => child.on('close', (c) => resolve(c)));
    t.ok(sent, `${signal}: sent while converting`);
    t.equal(status, code, `${signal}: exit code ${code}`);
    t.match(stderr, new RegExp(`stopped by ${signal}; no output was written`));
    t.same(fs.readdirSync(outDir), [], `${signal}: no file under a final name, no temporary file left`);
  }

  // Disk full: every write past 1 MB fails with ENOSPC, as a full disk does.
  const probe = await fs.promises.open(path.join(out, 'probe'), 'w');
  const proto = Object.getPrototypeOf(probe) as { write: (...args: unknown[]) => Promise<unknown> };
  await probe.close();
  const realWrite = proto.write;
  let bytes = 0;
  proto.write = function (this: unknown, ...args: unknown[]) {
    const data = args[0] as Uint8Array;
    bytes += data.byteLength ?? 0;
    if (bytes > 1 << 20) return Promise.reject(Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }));
    return realWrite.apply(this, args);
  };
  const fullDir = path.join(out, 'disk-full');
  let err: unknown;
  try {
    err = await convert({ input: ckpt, outDir: fullDir, type: 'f16' }).catch((e: unknown) => e);
  } finally {
    proto.write = realWrite;
  }
  t.ok(err instanceof PaliGemmaError && err.code === 'ERR_WRITE', 'disk full: ERR_WRITE');
  t.match((err as Error).message, /disk-full\/faults-ckpt-f16\.gguf: cannot write \(the disk is full; ENOSPC\)/, 'naming the output and the cause');
  t.same(fs.readdirSync(fullDir), [], 'disk full: nothing left behind');

  // The same output, twice at once: both finish, the result is one complete, loadable pair.
  const twiceDir = path.join(out, 'twice');
  const [a, b] = await Promise.all([0, 1].map(() => convert({ input: path.join(FIXTURES, 'tiny-v2'), outDir: twiceDir, type: 'q8_0' })));
  t.same(a, b, 'both name the same files');
  t.same(fs.readdirSync(twiceDir).sort(), [path.basename(a!.model), path.basename(a!.mmproj)].sort(), 'no temporary file left');
  const model = await PaliGemma.load({ ...a!, gpu: 'cpu' });
  t.equal(model.info.family, 'paligemma2', 'and the pair loads');
  await model.dispose();
});
