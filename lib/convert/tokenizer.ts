/**
 * Tokenizer input for the converter: SentencePiece `tokenizer.model` (a protobuf ModelProto) or, when
 * only that exists, Hugging Face `tokenizer.json`.
 */
import fs from 'node:fs';
import { PaliGemmaError } from '../errors';

/** SentencePiece piece types; llama.cpp's token types use the same numbers. */
export enum PieceType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

export interface Vocabulary {
  pieces: string[];
  scores: Float32Array;
  types: Int32Array;
  /** 'bpe' or 'unigram' (SentencePiece model_type). */
  model: 'bpe' | 'unigram';
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  /** SentencePiece's add_dummy_prefix: prepend a space before the first word. */
  addSpacePrefix: boolean;
  byteFallback: boolean;
  source: string;
}

class ProtoReader {
  pos = 0;
  readonly end: number;
  constructor(
    readonly buf: Uint8Array,
    readonly file: string,
  ) {
    this.end = buf.length;
  }

  varint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) throw this.error('truncated varint');
      const b = this.buf[this.pos++]!;
      if (i < 8) result += (b & 0x7f) * mul;
      mul *= 128;
      if (!(b & 0x80)) {
        // A 10-byte varint is a negative int32/int64 in two's complement.
        return i === 9 ? result - 2 ** 64 : result;
      }
    }
    throw this.error('varint too long');
  }

  bytes(): Uint8Array {
    const len = this.varint();
    if (len < 0 || this.pos + len > this.end) throw this.error('length runs past the end');
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  float(): number {
    if (this.pos + 4 > this.end) throw this.error('truncated float');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }

  skip(wire: number) {
    if (wire === 0) this.varint();
    else if (wire === 1) this.pos += 8;
    else if (wire === 2) this.bytes();
    else if (wire === 5) this.pos += 4;
    else throw this.error(`unsupported wire type ${wire}`);
    if (this.pos > this.end) throw this.error('field runs past the end');
  }

  error(what: string): PaliGemmaError {
    return new PaliGemmaError('ERR_INVALID_FILE', `${this.file}: not a valid SentencePiece model (${what} at byte ${this.pos})`);
  }
}

const decoder = new TextDecoder('utf-8', { fatal: false });

/** Parses a SentencePiece ModelProto (sentencepiece_model.proto). */
export function parseSentencePiece(buf: Uint8Array, file: string): Vocabulary {
  const r = new ProtoReader(buf, file);
  const pieces: string[] = [];
  const scores: number[] = [];
  const types: number[] = [];
  let modelType = 1;
  let byteFallback = false;
  let unkId = 0,
    bosId = 1,
    eosId = 2,
    padId = -1;
  let addDummyPrefix = true; // proto2 default
  while (r.pos < r.end) {
    const key = r.varint();
    const field = Math.floor(key / 8);
    const wire = key & 7;
    if (field === 1 && wire === 2) {
      const sub = new ProtoReader(r.bytes(), file);
      let piece = '';
      let score = 0;
      let type = PieceType.NORMAL as number;
      while (sub.pos < sub.end) {
        const k = sub.varint();
        const f = Math.floor(k / 8);
        const w = k & 7;
        if (f === 1 && w === 2) piece = decoder.decode(sub.bytes());
        else if (f === 2 && w === 5) score = sub.float();
        else if (f === 3 && w === 0) type = sub.varint();
        else sub.skip(w);
      }
      pieces.push(piece);
      scores.push(score);
      types.push(type);
    } else if ((field === 2 || field === 3) && wire === 2) {
      const sub = new ProtoReader(r.bytes(), file);
      while (sub.pos < sub.end) {
        const k = sub.varint();
        const f = Math.floor(k / 8);
        const w = k & 7;
        if (w !== 0) {
          sub.skip(w);
          continue;
        }
        const v = sub.varint();
        if (field === 2) {
          if (f === 3) modelType = v;
          else if (f === 35) byteFallback = v !== 0;
          else if (f === 40) unkId = v;
          else if (f === 41) bosId = v;
          else if (f === 42) eosId = v;
          else if (f === 43) padId = v;
        } else if (f === 3) {
          addDummyPrefix = v !== 0;
        }
      }
    } else {
      r.skip(wire);
    }
  }
  if (pieces.length === 0) throw r.error('no pieces');
  if (modelType !== 1 && modelType !== 2) {
    throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: SentencePiece model type ${modelType} is not supported (BPE or unigram only)`);
  }
  return {
    pieces,
    scores: Float32Array.from(scores),
    types: Int32Array.from(types),
    model: modelType === 2 ? 'bpe' : 'unigram',
    unkId,
    bosId,
    eosId,
    padId,
    addSpacePrefix: addDummyPrefix,
    byteFallback,
    source: file,
  };
}

/** More pieces than any real vocabulary (Gemma's: 256000 + 1024 + 128): ids beyond are refused, not allocated. */
const MAX_PIECES = 1 << 22;

/**
 * Reads a Hugging Face tokenizer.json (BPE, as Gemma's). Scores are not stored there: pieces get
 * -id, which preserves the merge order SentencePiece BPE assigns (pieces are stored by priority).
 */
export function parseTokenizerJson(text: string, file: string): Vocabulary {
  let json: {
    model?: { type?: string; vocab?: Record<string, number> | [string, number][]; unk_token?: string; byte_fallback?: boolean };
    added_tokens?: { id: number; content: string; special?: boolean }[];
    normalizer?: unknown;
    pre_tokenizer?: unknown;
  };
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: not valid JSON`, { cause: err });
  }
  const bad = (what: string) => new PaliGemmaError('ERR_INVALID_FILE', `${file}: ${what}`);
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (!isObject(json)) throw bad('not a JSON object');
  const model = json.model;
  if (!isObject(model) || !model.vocab || typeof model.vocab !== 'object') throw bad('no model.vocab');
  const entries: [string, number, number][] = [];
  if (Array.isArray(model.vocab)) {
    // Unigram: [piece, score] pairs, id = position.
    model.vocab.forEach((e: unknown, i) => {
      if (!Array.isArray(e) || typeof e[0] !== 'string' || typeof e[1] !== 'number') throw bad(`model.vocab[${i}] is not a [piece, score] pair`);
      entries.push([e[0], i, e[1]]);
    });
  } else {
    for (const [p, id] of Object.entries(model.vocab)) entries.push([p, id as number, -(id as number)]);
  }
  const added = json.added_tokens ?? [];
  if (!Array.isArray(added)) throw bad('added_tokens is not an array');
  added.forEach((t: unknown, i) => {
    if (!isObject(t) || typeof t.content !== 'string') throw bad(`added_tokens[${i}] has no content string`);
    entries.push([t.content, t.id as number, 0]);
  });
  // A loop, not Math.max(...ids): a real vocabulary (256k+ pieces) overflows the call stack as arguments.
  let n = 0;
  for (const [p, id] of entries) {
    if (!Number.isInteger(id) || id < 0 || id >= MAX_PIECES) {
      throw new PaliGemmaError(
        'ERR_INVALID_FILE',
        `${file}: piece ${JSON.stringify(p).slice(0, 40)} has id ${JSON.stringify(id)}, not an integer in [0, ${MAX_PIECES})`,
      );
    }
    if (id + 1 > n) n = id + 1;
  }
  const pieces: string[] = new Array(n).fill('');
  const scores = new Float32Array(n);
  const types = new Int32Array(n).fill(PieceType.UNUSED);
  for (const [p, id, score] of entries) {
    pieces[id] = p;
    scores[id] = score;
    types[id] = /^<0x[0-9A-F]{2}>$/.test(p) ? PieceType.BYTE : PieceType.NORMAL;
  }
  const special = new Map(added.map((t) => [t.id, t.special === true]));
  for (const [id, isSpecial] of special) types[id] = isSpecial ? PieceType.CONTROL : PieceType.USER_DEFINED;
  const idOf = (p: string, fallback: number) => {
    const i = pieces.indexOf(p);
    return i >= 0 ? i : fallback;
  };
  const unkId = idOf(typeof model.unk_token === 'string' ? model.unk_token : '<unk>', 0);
  types[unkId] = PieceType.UNKNOWN;
  // Gemma's normalizer prepends nothing; a "Prepend ▁" normalizer step means add_dummy_prefix.
  const addSpacePrefix = JSON.stringify(json.normalizer ?? null).includes('"prepend":"▁"');
  return {
    pieces,
    scores,
    types,
    model: Array.isArray(model.vocab) ? 'unigram' : 'bpe',
    unkId,
    bosId: idOf('<bos>', 2),
    eosId: idOf('<eos>', 1),
    padId: idOf('<pad>', 0),
    addSpacePrefix,
    byteFallback: model.byte_fallback === true,
    source: file,
  };
}

/** Reads tokenizer.model, falling back to tokenizer.json. */
export async function readVocabulary(modelPath: string, jsonPath: string): Promise<Vocabulary> {
  if (fs.existsSync(modelPath)) return parseSentencePiece(await fs.promises.readFile(modelPath), modelPath);
  if (fs.existsSync(jsonPath)) return parseTokenizerJson(await fs.promises.readFile(jsonPath, 'utf8'), jsonPath);
  throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${modelPath}: missing (and no tokenizer.json beside it either)`);
}
