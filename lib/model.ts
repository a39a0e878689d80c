/**
 * PaliGemma: load a GGUF pair, then caption, answer, read, detect and segment.
 */
import fs from 'node:fs';
import { getBinding, GPU_CHOICES, type GpuChoice } from './binding';
import { AbortError, callNative, invalidArgument, PaliGemmaError } from './errors';
import { ImageEmbedding, resolveImage, type ImageInput, type NativeImage } from './image';
import { parseLocations, pasteMask, type Box, type Mask } from './tasks';
import type { NativeGenerateResult, NativeModelHandle } from './native-types';
import * as v from './validate';

export interface LoadOptions {
  /** The text model GGUF (`<name>-<type>.gguf` from `paligemma convert`). */
  model: string;
  /** The vision model GGUF (`<name>-mmproj-<type>.gguf`). */
  mmproj: string;
  /** Where to run: 'auto' (a GPU when this build has one, else CPU), 'cpu', 'cuda', 'metal' or 'vulkan'. */
  gpu?: GpuChoice;
  /** With a GPU: how many text layers to offload (default: all). */
  gpuLayers?: number;
  /** CPU threads (default: physical cores). */
  threads?: number;
  /** Tokens of context: image tokens + prompt + answer (default: image tokens + 512, within the model's limit). */
  contextSize?: number;
  /** llama.cpp flash attention for the language model (default 'auto'). */
  flashAttention?: 'auto' | 'on' | 'off';
  /** KV cache precision (default 'f16'; 'f32' with flashAttention 'off' tracks the float64 reference to ~4e-4). */
  kvCacheType?: 'f16' | 'f32';
  /**
   * Memory-map the text weights. Default: yes with a GPU; no on the CPU, where llama.cpp copies most
   * weights into its repacked (faster) layout anyway, so a mapping would keep them resident twice.
   */
  mmap?: boolean;
  /**
   * MiB of image embeddings kept so that another question about the same image skips the vision
   * tower (default 64; 0 turns the cache off). Keyed by a SHA-256 of the image bytes or pixels.
   */
  imageCacheMB?: number;
  /** Called with 0..1 while the weights load. */
  onProgress?: (fraction: number) => void;
  signal?: AbortSignal;
}

export interface ModelInfo {
  family: 'paligemma' | 'paligemma2';
  imageSize: number;
  patchSize: number;
  imageTokens: number;
  imageTokenId: number;
  visionWidth: number;
  visionLayers: number;
  textArchitecture: 'gemma' | 'gemma2';
  textDescription: string;
  textWidth: number;
  textLayers: number;
  textParams: number;
  vocabSize: number;
  contextSize: number;
  trainedContextSize: number;
  /** The device the model runs on, e.g. 'CPU' or 'CUDA0'. */
  backend: string;
  threads: number;
  hasSegDecoder: boolean;
  bosId: number;
  eosId: number;
  model: string;
  mmproj: string;
}

export interface GeneratedToken {
  id: number;
  /** The token's piece; may be part of a UTF-8 character (byte tokens). */
  text: string;
}

export interface GenerateOptions {
  image: ImageInput;
  /** The task prompt, e.g. 'caption en', 'answer en what is this?', 'detect cat ; dog'. "\n" is added. */
  prompt: string;
  /** Default 32. */
  maxTokens?: number;
  /** 0 (default) decodes greedily, as the paper does. */
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  /** Sampling seed (with temperature > 0). */
  seed?: number;
  /** > 1 penalizes repeats over the last 64 tokens (default 1: off). */
  repeatPenalty?: number;
  /** Stop when one of these strings appears; it is not included in the text. */
  stop?: string[];
  /** A GBNF grammar (root rule `root`) the output must follow. */
  grammar?: string;
  /** Return every step's full-vocabulary logits. */
  logits?: boolean;
  /** Treat `<bos>`, `<eos>` and `<image>` in the prompt as control tokens (default false: plain text). */
  specialTokens?: boolean;
  /** Emit these tokens instead of sampling (teacher forcing), e.g. to score a given answer. */
  forceTokens?: ArrayLike<number>;
  onToken?: (token: GeneratedToken) => void;
  /** Text as it is generated, in whole UTF-8 characters. */
  onText?: (chunk: string) => void;
  /** Aborting rejects the call with an AbortError (within one decoding step). */
  signal?: AbortSignal;
}

/** Options of the task methods: generate's options (sampling, signal, onText...) minus image and prompt. */
export type TaskOptions = Omit<GenerateOptions, 'image' | 'prompt'> & {
  /** Size of the source image, needed to place boxes when `image` is an ImageEmbedding. */
  imageSize?: { width: number; height: number };
};

export interface Detection {
  label: string;
  /** In pixels of the source image. */
  box: Box;
}

export interface Segmentation extends Detection {
  /** Full source-image size, 0/255. */
  mask: Mask;
  /** The decoder's 64x64 map for the box (about -1..1; > 0 is inside). */
  mask64: Float32Array;
}

export interface GenerateTimings {
  /** Image decoding, resizing and normalizing (0 for a cached image or an ImageEmbedding). */
  preprocessMs: number;
  /** The vision tower and projector (0 for a cached image or an ImageEmbedding). */
  encodeMs: number;
  /** The prefix (image + prompt) through the language model, in one batch. */
  prefillMs: number;
  /** Every step after the first token. */
  decodeMs: number;
  /** Time to the first token: preprocess + encode + prefill + the first sampling. */
  firstTokenMs: number;
  promptTokens: number;
  generatedTokens: number;
}

export interface GenerateResult {
  text: string;
  tokens: number[];
  stopReason: 'eos' | 'maxTokens' | 'stop' | 'abort';
  /** With `logits: true`: one Float32Array per generated step, full vocabulary. */
  logits?: Float32Array[];
  timings: GenerateTimings;
}

const LOAD_KEYS = new Set(['model', 'mmproj', 'gpu', 'gpuLayers', 'threads', 'contextSize', 'flashAttention', 'kvCacheType', 'mmap', 'imageCacheMB', 'onProgress', 'signal']);

/** A bounded least-recently-used map of image embeddings, by bytes held. */
class EmbeddingCache {
  private readonly map = new Map<string, ImageEmbedding>();
  private bytes = 0;
  constructor(private readonly maxBytes: number) {}

  static async key(input: NativeImage): Promise<string | undefined> {
    if ('embedding' in input) return undefined;
    const data = 'bytes' in input ? input.bytes : input.pixels;
    // WebCrypto hashes on the thread pool: hashing a large image never stalls the event loop.
    const digest = Buffer.from(await crypto.subtle.digest('SHA-256', data)).toString('hex');
    return 'pixels' in input ? `raw:${input.width}x${input.height}x${input.channels}:${digest}` : `enc:${digest}`;
  }

  get(key: string | undefined): ImageEmbedding | undefined {
    if (!key) return undefined;
    const hit = this.map.get(key);
    if (hit) {
      this.map.delete(key);
      this.map.set(key, hit);
    }
    return hit;
  }

  set(key: string | undefined, e: ImageEmbedding) {
    const size = e.data.byteLength;
    if (!key || size > this.maxBytes || this.map.has(key)) return;
    this.map.set(key, e);
    this.bytes += size;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.maxBytes) break;
      this.map.delete(k);
      this.bytes -= v.data.byteLength;
    }
  }
}
const GENERATE_KEYS = new Set([
  'image', 'prompt', 'maxTokens', 'temperature', 'topK', 'topP', 'minP', 'seed', 'repeatPenalty', 'stop', 'grammar', 'logits',
  'specialTokens', 'forceTokens', 'onToken', 'onText', 'signal',
]);

function checkKeys(name: string, o: Record<string, unknown>, allowed: Set<string>) {
  for (const k of Object.keys(o)) {
    if (!allowed.has(k)) throw invalidArgument(`${name}.${k}`, `one of the known options (${[...allowed].join(', ')})`, `unknown option '${k}'`);
  }
}

async function checkReadable(name: string, file: unknown) {
  if (typeof file !== 'string' || !file) throw invalidArgument(name, 'a GGUF file path', file);
  try {
    const st = await fs.promises.stat(file);
    if (!st.isFile()) throw new PaliGemmaError('ERR_INVALID_FILE', `${file}: not a file (${name})`);
  } catch (err) {
    if (err instanceof PaliGemmaError) throw err;
    throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${file}: no such file (${name})`, { cause: err });
  }
}

/** Links an AbortSignal to a native abort token for the duration of one call. */
function linkAbort(signal: AbortSignal | undefined, token: { abort(): void }): () => void {
  if (!signal) return () => undefined;
  const onAbort = () => token.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

function abortError(signal: AbortSignal | undefined, what: string): AbortError {
  return new AbortError(`${what} was aborted`, { cause: signal?.reason });
}

function checkLang(lang: unknown) {
  if (typeof lang !== 'string' || !/^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?$/.test(lang)) throw invalidArgument('options.lang', "a language code such as 'en'", lang);
}

function checkLabels(name: string, labels: unknown): string[] {
  const list = typeof labels === 'string' ? [labels] : labels;
  if (!Array.isArray(list) || list.length === 0 || !list.every((l) => typeof l === 'string' && l.trim() && !/[;<>\n]/.test(l))) {
    throw invalidArgument(name, "a label or labels without ';', '<', '>' or newlines", labels);
  }
  return list.map((l: string) => l.trim());
}

export class PaliGemma {
  readonly info: ModelInfo;
  private native: NativeModelHandle | undefined;
  private readonly binding: ReturnType<typeof getBinding>['binding'];
  /** Calls run one at a time, in order: they share one llama.cpp context. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly running = new Set<{ abort(): void }>();
  private disposing: Promise<void> | undefined;
  private readonly cache: EmbeddingCache | undefined;

  private constructor(native: NativeModelHandle, binding: ReturnType<typeof getBinding>['binding'], files: { model: string; mmproj: string }, cacheMB: number) {
    this.native = native;
    this.binding = binding;
    this.cache = cacheMB > 0 ? new EmbeddingCache(cacheMB * 1024 * 1024) : undefined;
    this.info = Object.freeze({ ...native.info(), ...files }) as ModelInfo;
  }

  /** Loads a text model and its mmproj (in a worker), checking that they belong together. */
  static async load(options: LoadOptions): Promise<PaliGemma> {
    if (!v.isPlainObject(options)) throw invalidArgument('PaliGemma.load(options)', 'an object', options);
    checkKeys('PaliGemma.load options', options as unknown as Record<string, unknown>, LOAD_KEYS);
    const gpu = v.optionalEnum('options.gpu', options.gpu, GPU_CHOICES) ?? 'auto';
    v.optionalInteger('options.gpuLayers', options.gpuLayers, 0, 100000);
    v.optionalInteger('options.threads', options.threads, 1, 1024);
    v.optionalInteger('options.contextSize', options.contextSize, 16, 1 << 20);
    v.optionalEnum('options.flashAttention', options.flashAttention, ['auto', 'on', 'off'] as const);
    v.optionalEnum('options.kvCacheType', options.kvCacheType, ['f16', 'f32'] as const);
    if (options.mmap !== undefined && typeof options.mmap !== 'boolean') throw invalidArgument('options.mmap', 'a boolean', options.mmap);
    const cacheMB = v.optionalNumber('options.imageCacheMB', options.imageCacheMB, 0, 1 << 20) ?? 64;
    const onProgress = v.optionalFunction<(f: number) => void>('options.onProgress', options.onProgress);
    const signal = v.optionalSignal('options.signal', options.signal);
    await checkReadable('options.model', options.model);
    await checkReadable('options.mmproj', options.mmproj);
    if (signal?.aborted) throw abortError(signal, 'PaliGemma.load');

    const { binding } = getBinding(gpu);
    const token = new binding.AbortToken();
    const unlink = linkAbort(signal, token);
    const report = (f: number) => {
      try {
        onProgress?.(f);
      } catch (err) {
        // A throwing progress callback must not break the load; surface it without crashing.
        process.emitWarning(`paligemma-node: onProgress threw: ${(err as Error).message}`);
      }
    };
    try {
      const { gpu: _gpu, onProgress: _p, signal: _s, imageCacheMB: _c, ...rest } = options;
      const native = await callNative(() => binding.loadModel({ ...rest, gpu }, token, report));
      if (signal?.aborted) {
        await native.dispose();
        throw abortError(signal, 'PaliGemma.load');
      }
      return new PaliGemma(native, binding, { model: options.model, mmproj: options.mmproj }, cacheMB);
    } catch (err) {
      if (err instanceof PaliGemmaError && err.code === 'ERR_ABORTED') throw abortError(signal, 'PaliGemma.load');
      throw err;
    } finally {
      unlink();
    }
  }

  /** Runs `task` after every earlier call has finished. */
  private enqueue<T>(task: (native: NativeModelHandle) => Promise<T>): Promise<T> {
    const run = async () => {
      const native = this.native;
      if (!native || this.disposing) throw new PaliGemmaError('ERR_DISPOSED', 'this PaliGemma model has been disposed');
      return task(native);
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  private checkOpen() {
    if (!this.native || this.disposing) throw new PaliGemmaError('ERR_DISPOSED', 'this PaliGemma model has been disposed');
  }

  /** Text to token ids (no BOS). `<loc0001>`-style pieces match as in SentencePiece; `<bos>` etc. only with `special`. */
  async tokenize(text: string, options: { special?: boolean } = {}): Promise<Int32Array> {
    if (typeof text !== 'string') throw invalidArgument('tokenize(text)', 'a string', text);
    this.checkOpen();
    return this.enqueue((n) => callNative(() => n.tokenize(text, options.special === true)));
  }

  /** Token ids to text; keeps `<loc>`/`<seg>` pieces, drops control tokens. */
  async detokenize(ids: ArrayLike<number>): Promise<string> {
    if (!ids || typeof ids !== 'object' || typeof ids.length !== 'number') throw invalidArgument('detokenize(ids)', 'an array of token ids', ids);
    const arr = Int32Array.from(ids as ArrayLike<number>);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.info.vocabSize) throw invalidArgument(`detokenize(ids)[${i}]`, `a token id below ${this.info.vocabSize}`, id);
    }
    this.checkOpen();
    return this.enqueue((n) => callNative(() => n.detokenize(arr)));
  }

  /** The normalized pixels the vision tower sees: Float32Array of 3 x S x S, channels first. */
  async preprocess(image: ImageInput): Promise<Float32Array> {
    const ready = resolveImage(image);
    ready.catch(() => undefined);
    this.checkOpen();
    return this.enqueue(async (n) => {
      const input = await ready;
      if ('embedding' in input) throw invalidArgument('preprocess(image)', 'an image, not an ImageEmbedding', image);
      return callNative(() => n.preprocess(input));
    });
  }

  /** Runs the vision tower and projector once; pass the result as `image` to skip it next time. */
  async encodeImage(image: ImageInput, options: { signal?: AbortSignal } = {}): Promise<ImageEmbedding> {
    const signal = v.optionalSignal('encodeImage options.signal', options.signal);
    const keyed = resolveImage(image).then(async (input) => ({ input, key: this.cache ? await EmbeddingCache.key(input) : undefined }));
    keyed.catch(() => undefined);
    this.checkOpen();
    return this.enqueue(async (n) => {
      const { input, key } = await keyed;
      if (signal?.aborted) throw abortError(signal, 'encodeImage');
      return (await this.encodeQueued(n, input, key, signal)).embedding;
    });
  }

  /** Runs the vision tower (or takes the cached result) inside a queued call. */
  private async encodeQueued(n: NativeModelHandle, input: NativeImage, key: string | undefined, signal: AbortSignal | undefined) {
    if ('embedding' in input) return { embedding: new ImageEmbedding(input.embedding, input.tokens, input.dim), preprocessMs: 0, encodeMs: 0 };
    const hit = this.cache?.get(key);
    if (hit) return { embedding: hit, preprocessMs: 0, encodeMs: 0 };
    const token = new this.binding.AbortToken();
    const unlink = linkAbort(signal, token);
    this.running.add(token);
    try {
      const r = await callNative(() => n.encodeImage(input, token));
      const embedding = new ImageEmbedding(r.data, r.tokens, r.dim);
      this.cache?.set(key, embedding);
      return { embedding, preprocessMs: r.preprocessMs, encodeMs: r.encodeMs };
    } catch (err) {
      if (err instanceof PaliGemmaError && err.code === 'ERR_ABORTED') throw abortError(signal, 'encodeImage');
      throw err;
    } finally {
      this.running.delete(token);
      unlink();
    }
  }

  /**
   * Generates an answer for `prompt` about `image`. Calls on one model run one after another, so
   * concurrent calls give the same results as sequential ones.
   */
  async generate(options: GenerateOptions): Promise<GenerateResult> {
    const plan = this.planGenerate(options);
    return this.runGenerate(plan, resolveImage(options.image, 'generate options.image'));
  }

  /** Checks generate's options (everything but the image). */
  private planGenerate(options: GenerateOptions) {
    if (!v.isPlainObject(options)) throw invalidArgument('generate(options)', 'an object', options);
    checkKeys('generate options', options as unknown as Record<string, unknown>, GENERATE_KEYS);
    if (typeof options.prompt !== 'string') throw invalidArgument('generate options.prompt', 'a string', options.prompt);
    const maxTokens = v.optionalInteger('generate options.maxTokens', options.maxTokens, 0, 1 << 20) ?? 32;
    v.optionalNumber('generate options.temperature', options.temperature, 0, 100);
    v.optionalInteger('generate options.topK', options.topK, 0, 1 << 20);
    v.optionalNumber('generate options.topP', options.topP, 0, 1);
    v.optionalNumber('generate options.minP', options.minP, 0, 1);
    v.optionalInteger('generate options.seed', options.seed, 0, 0xffffffff);
    v.optionalNumber('generate options.repeatPenalty', options.repeatPenalty, 0.01, 100);
    v.optionalString('generate options.grammar', options.grammar);
    if (options.stop !== undefined && !(Array.isArray(options.stop) && options.stop.every((s) => typeof s === 'string' && s.length > 0))) {
      throw invalidArgument('generate options.stop', 'an array of non-empty strings', options.stop);
    }
    let forceTokens: Int32Array | undefined;
    if (options.forceTokens !== undefined) {
      const f = options.forceTokens;
      if (!f || typeof f !== 'object' || typeof f.length !== 'number') throw invalidArgument('generate options.forceTokens', 'an array of token ids', f);
      forceTokens = Int32Array.from(f);
      forceTokens.forEach((id, i) => {
        if (id < 0 || id >= this.info.vocabSize || id !== f[i]) throw invalidArgument(`generate options.forceTokens[${i}]`, `a token id below ${this.info.vocabSize}`, f[i]);
      });
    }
    const onToken = v.optionalFunction<(t: GeneratedToken) => void>('generate options.onToken', options.onToken);
    const onText = v.optionalFunction<(s: string) => void>('generate options.onText', options.onText);
    const signal = v.optionalSignal('generate options.signal', options.signal);
    return { options, maxTokens, forceTokens, onToken, onText, signal };
  }

  /**
   * Queues the generation at once, so calls run in the order they were made, while the image is
   * still being read and hashed.
   */
  private runGenerate(plan: ReturnType<PaliGemma['planGenerate']>, imageReady: Promise<NativeImage>): Promise<GenerateResult> {
    const { options, maxTokens, forceTokens, onToken, onText, signal } = plan;
    const keyed = imageReady.then(async (image) => ({ image, key: this.cache ? await EmbeddingCache.key(image) : undefined }));
    keyed.catch(() => undefined); // handled in the queued task; this only keeps it from being "unhandled"
    this.checkOpen();
    this.checkOpen();

    return this.enqueue(async (n) => {
      let { image, key } = await keyed;
      if (signal?.aborted) throw abortError(signal, 'generate');
      // With the cache on, the image goes through encodeQueued (cached or encoded once, then kept).
      let imageTimings = { preprocessMs: 0, encodeMs: 0 };
      if (key) {
        const enc = await this.encodeQueued(n, image, key, signal);
        image = { embedding: enc.embedding.data, tokens: enc.embedding.tokens, dim: enc.embedding.dim };
        imageTimings = { preprocessMs: enc.preprocessMs, encodeMs: enc.encodeMs };
      }
      const token = new this.binding.AbortToken();
      const unlink = linkAbort(signal, token);
      this.running.add(token);
      let callbackError: { error: unknown } | undefined;
      const onEvent = (id: number, piece: string, text: string) => {
        if (callbackError) return;
        try {
          if (id >= 0) onToken?.({ id, text: piece });
          if (text) onText?.(text);
        } catch (error) {
          // A throwing callback stops the generation; the call rejects with its error.
          callbackError = { error };
          token.abort();
        }
      };
      try {
        const r: NativeGenerateResult = await callNative(() =>
          n.generate(
            {
              image,
              prompt: options.prompt,
              maxTokens,
              temperature: options.temperature,
              topK: options.topK,
              topP: options.topP,
              minP: options.minP,
              seed: options.seed,
              repeatPenalty: options.repeatPenalty,
              stop: options.stop,
              grammar: options.grammar,
              logits: options.logits === true,
              specialTokens: options.specialTokens === true,
              forceTokens,
            },
            token,
            onToken || onText ? onEvent : undefined,
          ),
        );
        if (callbackError) throw callbackError.error;
        if (r.stopReason === 'abort') throw abortError(signal, 'generate');
        const timings = key ? { ...r.timings, ...imageTimings, firstTokenMs: r.timings.firstTokenMs + imageTimings.preprocessMs + imageTimings.encodeMs } : r.timings;
        const result: GenerateResult = { text: r.text, tokens: Array.from(r.tokens), stopReason: r.stopReason, timings };
        if (r.logits) {
          const V = this.info.vocabSize;
          result.logits = Array.from({ length: r.logits.length / V }, (_, i) => r.logits!.subarray(i * V, (i + 1) * V));
        }
        return result;
      } finally {
        this.running.delete(token);
        unlink();
      }
    });
  }

  /** The generated text as an async iterable of chunks (whole UTF-8 characters). Breaking out aborts. */
  stream(options: Omit<GenerateOptions, 'onText'>): AsyncIterable<string> {
    const self = this;
    return {
      [Symbol.asyncIterator](): AsyncIterator<string> {
        const chunks: string[] = [];
        let wake: (() => void) | undefined;
        let done = false;
        let failure: { error: unknown } | undefined;
        const controller = new AbortController();
        const outer = options.signal;
        const onOuter = () => controller.abort(outer?.reason);
        outer?.addEventListener('abort', onOuter, { once: true });
        const finished = self
          .generate({
            ...options,
            signal: controller.signal,
            onText: (c) => {
              chunks.push(c);
              wake?.();
            },
          })
          .then(
            () => undefined,
            (error) => {
              if (!(controller.signal.aborted && !outer?.aborted && error instanceof AbortError)) failure = { error };
            },
          )
          .finally(() => {
            done = true;
            outer?.removeEventListener('abort', onOuter);
            wake?.();
          });
        return {
          async next(): Promise<IteratorResult<string>> {
            while (chunks.length === 0 && !done) await new Promise<void>((r) => (wake = r));
            wake = undefined;
            if (chunks.length) return { value: chunks.shift()!, done: false };
            if (failure) throw failure.error;
            return { value: undefined, done: true };
          },
          async return(): Promise<IteratorResult<string>> {
            controller.abort();
            await finished;
            return { value: undefined, done: true };
          },
        };
      },
    };
  }

  // ---- tasks ----

  private async task(image: ImageInput, prompt: string, defaultMaxTokens: number, options: TaskOptions | undefined): Promise<{ result: GenerateResult; size?: { width: number; height: number } }> {
    if (options !== undefined && !v.isPlainObject(options)) throw invalidArgument('options', 'an object', options);
    const { imageSize, ...rest } = options ?? {};
    if (imageSize !== undefined && !(v.isPlainObject(imageSize) && Number.isInteger(imageSize.width) && imageSize.width > 0 && Number.isInteger(imageSize.height) && imageSize.height > 0)) {
      throw invalidArgument('options.imageSize', '{ width, height } in pixels', imageSize);
    }
    const plan = this.planGenerate({ maxTokens: defaultMaxTokens, ...rest, image: undefined as unknown as ImageInput, prompt });
    const ready = resolveImage(image);
    const result = await this.runGenerate(plan, ready);
    const input = await ready;
    let size = imageSize;
    if (!size && 'bytes' in input) size = await callNative(async () => this.binding.imageSize(input.bytes));
    if (!size && 'pixels' in input) size = { width: input.width, height: input.height };
    return { result, size };
  }

  /** A short caption ('caption <lang>') or a longer description ('describe <lang>', detail: 'long'). */
  async caption(image: ImageInput, options: TaskOptions & { lang?: string; detail?: 'short' | 'long' } = {}): Promise<string> {
    const { lang = 'en', detail = 'short', ...rest } = options;
    checkLang(lang);
    v.optionalEnum('options.detail', detail, ['short', 'long'] as const);
    return (await this.task(image, `${detail === 'long' ? 'describe' : 'caption'} ${lang}`, detail === 'long' ? 64 : 32, rest)).result.text;
  }

  /** Answers a question about the image ('answer <lang> <question>'). */
  async answer(image: ImageInput, question: string, options: TaskOptions & { lang?: string } = {}): Promise<string> {
    if (typeof question !== 'string' || !question.trim()) throw invalidArgument('answer(image, question)', 'a non-empty question', question);
    const { lang = 'en', ...rest } = options;
    checkLang(lang);
    return (await this.task(image, `answer ${lang} ${question.trim()}`, 32, rest)).result.text;
  }

  /** Reads the text in the image ('ocr'). */
  async ocr(image: ImageInput, options: TaskOptions = {}): Promise<string> {
    return (await this.task(image, 'ocr', 128, options)).result.text;
  }

  /** Finds objects ('detect a ; b'); boxes in pixels of the source image. */
  async detect(image: ImageInput, labels: string | string[], options: TaskOptions = {}): Promise<Detection[]> {
    const list = checkLabels('detect(image, labels)', labels);
    const { result, size } = await this.task(image, `detect ${list.join(' ; ')}`, 100, options);
    if (!size) throw invalidArgument('detect options.imageSize', '{ width, height } (required with an ImageEmbedding)', undefined);
    return parseLocations(result.text, size).map(({ label, box }) => ({ label: label || (list.length === 1 ? list[0]! : ''), box }));
  }

  /** Finds and cuts out objects ('segment x'): boxes plus masks at the source image size. */
  async segment(image: ImageInput, label: string, options: TaskOptions = {}): Promise<Segmentation[]> {
    const [one] = checkLabels('segment(image, label)', label);
    if (!this.info.hasSegDecoder) {
      throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `${this.info.mmproj} has no segmentation decoder: reconvert with \`paligemma convert <hf-dir> --seg-decoder vae-oid.npz\``);
    }
    const { result, size } = await this.task(image, `segment ${one}`, 100, options);
    if (!size) throw invalidArgument('segment options.imageSize', '{ width, height } (required with an ImageEmbedding)', undefined);
    const out: Segmentation[] = [];
    for (const loc of parseLocations(result.text, size)) {
      if (!loc.seg) continue;
      const mask64 = await this.decodeMask(loc.seg);
      out.push({ label: loc.label || one!, box: loc.box, mask: pasteMask(mask64, loc.box, size.width, size.height), mask64 });
    }
    return out;
  }

  /** big_vision's VQ-VAE decoder: 16 codes (a 4x4 grid, 0..127) -> a 64x64 map (row-major, about -1..1). */
  async decodeMask(codes: ArrayLike<number>): Promise<Float32Array> {
    if (!codes || typeof codes !== 'object' || codes.length !== 16) throw invalidArgument('decodeMask(codes)', '16 mask codes', codes);
    for (let i = 0; i < 16; i++) {
      if (!Number.isInteger(codes[i]) || codes[i]! < 0 || codes[i]! > 127) throw invalidArgument(`decodeMask(codes)[${i}]`, 'an integer 0..127', codes[i]);
    }
    this.checkOpen();
    const arr = Int32Array.from(codes);
    return this.enqueue((n) => callNative(() => n.decodeMask(arr)));
  }

  /** Stops running work, rejects queued calls, then frees native memory. Idempotent. */
  dispose(): Promise<void> {
    if (!this.disposing) {
      for (const t of this.running) t.abort();
      this.disposing = (async () => {
        await this.queue;
        const native = this.native;
        this.native = undefined;
        if (native) await native.dispose();
      })();
    }
    return this.disposing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
