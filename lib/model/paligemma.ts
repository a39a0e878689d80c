/**
 * PaliGemma: load a GGUF pair, then caption, answer, read, detect and segment.
 *
 * Every method validates its input here, then makes ONE native call that runs the core's pipeline
 * (native/core/pg_model.h); calls on a model run one at a time, in call order.
 */
import fs from 'node:fs';
import nodePath from 'node:path';
import { AbortError, callNative, invalidArgument, PaliGemmaError } from '../errors';
import { ImageEmbedding, type ImageInput, resolveImage } from '../image/input';
import { getBinding } from '../native/binding';
import type { NativeAbortToken, NativeBinding, NativeImage, NativeModelHandle, Phase } from '../native/contract';
import { parseLocations } from '../tasks/locations';
import { pasteMask } from '../tasks/masks';
import { answerPrompt, captionPrompt, checkLabels, detectPrompt, OCR_PROMPT, segmentPrompt, type TaskPrompt } from '../tasks/prompts';
import * as v from '../validate';
import { Adapter, type AdapterChoice } from './adapter';
import { checkMemory } from './memory';
import {
  type Detection,
  type GenerateOptions,
  type GeneratePlan,
  type GenerateResult,
  type LoadOptions,
  type ModelInfo,
  planAdapters,
  planGenerate,
  planLoad,
  type Segmentation,
  type TaskOptions,
} from './options';
import { streamText } from './stream';

/** Links an AbortSignal to a native abort token for the duration of one call. */
function linkAbort(signal: AbortSignal | undefined, token: NativeAbortToken): () => void {
  if (!signal) return () => undefined;
  if (signal.aborted) token.abort();
  const onAbort = () => token.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  return () => signal.removeEventListener('abort', onAbort);
}

function abortError(signal: AbortSignal | undefined, what: string): AbortError {
  return new AbortError(`${what} was aborted`, { cause: signal?.reason });
}

/** The embedding cache's key for an image: a SHA-256 of its bytes or pixels (hashed off the JS thread). */
async function withCacheKey(input: NativeImage): Promise<NativeImage> {
  if ('embedding' in input) return input;
  const data = 'bytes' in input ? input.bytes : input.pixels;
  const digest = Buffer.from(await crypto.subtle.digest('SHA-256', data)).toString('hex');
  const cacheKey = 'pixels' in input ? `raw:${input.width}x${input.height}x${input.channels}:${digest}` : `enc:${digest}`;
  return { ...input, cacheKey };
}

export class PaliGemma {
  readonly info: ModelInfo;
  private native: NativeModelHandle | undefined;
  private readonly binding: NativeBinding;
  private readonly cached: boolean;
  /** Calls run one at a time, in order: they share one llama.cpp context. */
  private queue: Promise<unknown> = Promise.resolve();
  private readonly running = new Set<NativeAbortToken>();
  private readonly adapters = new Set<Adapter>();
  private disposing: Promise<void> | undefined;

  private constructor(native: NativeModelHandle, binding: NativeBinding, files: { model: string; mmproj: string }, cached: boolean) {
    this.native = native;
    this.binding = binding;
    this.cached = cached;
    this.info = Object.freeze({ ...native.info(), ...files });
  }

  /** Loads a text model and its mmproj (in a worker), checking that they belong together. */
  static async load(options: LoadOptions): Promise<PaliGemma> {
    const { native, memoryCheck, onProgress, signal } = await planLoad(options);
    if (signal?.aborted) throw abortError(signal, 'PaliGemma.load');
    const { binding } = getBinding(native.gpu);
    if (memoryCheck) await checkMemory(native, binding);
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
      const handle = await callNative(() => binding.loadModel(native, token, report));
      if (signal?.aborted) {
        await handle.dispose();
        throw abortError(signal, 'PaliGemma.load');
      }
      return new PaliGemma(handle, binding, { model: native.model, mmproj: native.mmproj }, (native.imageCacheBytes ?? 0) > 0);
    } catch (err) {
      if (err instanceof PaliGemmaError && err.code === 'ERR_ABORTED') throw abortError(signal, 'PaliGemma.load');
      throw err;
    } finally {
      unlink();
    }
  }

  private checkOpen() {
    if (!this.native || this.disposing) throw new PaliGemmaError('ERR_DISPOSED', 'this PaliGemma model has been disposed');
  }

  /** Runs `task` after every earlier call has finished. */
  private enqueue<T>(task: (native: NativeModelHandle) => Promise<T>): Promise<T> {
    this.checkOpen();
    const run = async () => {
      const native = this.native;
      if (!native || this.disposing) throw new PaliGemmaError('ERR_DISPOSED', 'this PaliGemma model has been disposed');
      return task(native);
    };
    const p = this.queue.then(run, run);
    this.queue = p.catch(() => undefined);
    return p;
  }

  /** Runs a native call with an abort token tied to `signal` and to dispose(). */
  private async withToken<T>(signal: AbortSignal | undefined, what: string, call: (token: NativeAbortToken) => Promise<T>): Promise<T> {
    if (signal?.aborted) throw abortError(signal, what);
    const token = new this.binding.AbortToken();
    const unlink = linkAbort(signal, token);
    this.running.add(token);
    try {
      return await callNative(() => call(token));
    } catch (err) {
      if (err instanceof PaliGemmaError && err.code === 'ERR_ABORTED') throw this.disposing ? disposedError(what) : abortError(signal, what);
      throw err;
    } finally {
      this.running.delete(token);
      unlink();
    }
  }

  /** Text to token ids (no BOS). `<loc0001>`-style pieces match as in SentencePiece; `<bos>` etc. only with `special`. */
  async tokenize(text: string, options: { special?: boolean } = {}): Promise<Int32Array> {
    if (typeof text !== 'string') throw invalidArgument('tokenize(text)', 'a string', text);
    return this.enqueue((n) => callNative(() => n.tokenize(text, options.special === true)));
  }

  /** Token ids to text; keeps `<loc>`/`<seg>` pieces, drops control tokens. */
  async detokenize(ids: ArrayLike<number>): Promise<string> {
    if (!ids || typeof ids !== 'object' || typeof ids.length !== 'number') throw invalidArgument('detokenize(ids)', 'an array of token ids', ids);
    const arr = Int32Array.from(ids);
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.info.vocabSize)
        throw invalidArgument(`detokenize(ids)[${i}]`, `a token id below ${this.info.vocabSize}`, id);
    }
    return this.enqueue((n) => callNative(() => n.detokenize(arr)));
  }

  /** The normalized pixels the vision tower sees: Float32Array of 3 x S x S, channels first. */
  async preprocess(image: ImageInput): Promise<Float32Array> {
    const ready = resolveImage(image, 'preprocess(image)');
    ready.catch(() => undefined);
    return this.enqueue(async (n) => {
      const input = await ready;
      if ('embedding' in input) throw invalidArgument('preprocess(image)', 'an image, not an ImageEmbedding', image);
      return callNative(() => n.preprocess(input));
    });
  }

  /** Runs the vision tower and projector once (or takes the cached result); pass the result as `image` to skip it next time. */
  async encodeImage(image: ImageInput, options: { signal?: AbortSignal; adapters?: (Adapter | AdapterChoice)[] } = {}): Promise<ImageEmbedding> {
    const signal = v.optionalSignal('encodeImage options.signal', options.signal);
    const adapters = planAdapters('encodeImage options.adapters', options.adapters);
    this.checkAdapters(adapters, 'encodeImage options.adapters');
    const uses = adapters.map((a) => ({ id: a.adapter.id, scale: a.scale }));
    const ready = this.prepareImage(image, 'encodeImage(image)');
    return this.enqueue(async (n) => {
      const input = await ready;
      if ('embedding' in input) return new ImageEmbedding(input.embedding, input.tokens, input.dim);
      const r = await this.withToken(signal, 'encodeImage', (token) => n.encodeImage(input, token, uses));
      if (signal?.aborted || this.disposing) throw this.disposing ? disposedError('encodeImage') : abortError(signal, 'encodeImage');
      return new ImageEmbedding(r.data, r.tokens, r.dim);
    });
  }

  /** Reads the image and, with the cache on, hashes it; starts at once so calls stay in order. */
  private prepareImage(image: ImageInput, what: string): Promise<NativeImage> {
    const ready = resolveImage(image, what).then((input) => (this.cached ? withCacheKey(input) : input));
    ready.catch(() => undefined); // handled in the queued task; this only keeps it from being "unhandled"
    return ready;
  }

  /**
   * Generates an answer for `prompt` about `image`. Calls on one model run one after another, so
   * concurrent calls give the same results as sequential ones.
   */
  async generate(options: GenerateOptions): Promise<GenerateResult> {
    const plan = planGenerate(options, this.info.vocabSize);
    return this.runGenerate(plan, this.prepareImage(options.image, 'generate options.image'), 'generate');
  }

  /** One queued native generate call: image, prefix and answer in the core. */
  private runGenerate(plan: GeneratePlan, image: Promise<NativeImage>, what: string): Promise<GenerateResult> {
    const { native, onToken, onText, onPhase, signal } = plan;
    this.checkAdapters(plan.adapters, `${what} options.adapters`);
    return this.enqueue(async (n) => {
      const input = await image;
      let callbackError: { error: unknown } | undefined;
      let stopped = false;
      const r = await this.withToken(signal, what, (token) => {
        const onEvent = (id: number, piece: string, text: string) => {
          // After abort() (or a throwing callback) no callback runs, whatever the native side still sends.
          if (stopped || token.aborted) return;
          try {
            if (id === -2) onPhase?.(piece as Phase);
            else {
              if (id >= 0) onToken?.({ id, text: piece });
              if (text) onText?.(text);
            }
          } catch (error) {
            // A throwing callback stops the generation; the call rejects with its error.
            callbackError = { error };
            stopped = true;
            token.abort();
          }
        };
        return n.generate({ ...native, image: input }, token, onToken || onText || onPhase ? onEvent : undefined);
      }).catch((err) => {
        if (callbackError) throw callbackError.error;
        throw err;
      });
      if (callbackError) throw callbackError.error;
      // An abort that came too late to stop the native work still rejects: abort() has returned.
      if (r.stopReason === 'abort' || signal?.aborted || this.disposing) throw this.disposing ? disposedError(what) : abortError(signal, what);
      const result: GenerateResult = { text: r.text, tokens: Array.from(r.tokens), stopReason: r.stopReason, timings: r.timings };
      if (r.logits) {
        const V = this.info.vocabSize;
        result.logits = Array.from({ length: r.logits.length / V }, (_, i) => r.logits!.subarray(i * V, (i + 1) * V));
      }
      return result;
    });
  }

  private checkAdapters(list: { adapter: Adapter }[], name: string) {
    list.forEach(({ adapter }, i) => {
      if (adapter.owner !== this)
        throw invalidArgument(`${name}[${i}]`, "an adapter loaded by this model's loadAdapter()", `one of another model (${adapter.info.path})`);
    });
  }

  /**
   * Loads a LoRA adapter converted by `convertLora()` (`<name>-lora-<type>.gguf`; its vision part,
   * `<name>-mmproj-lora-<type>.gguf`, is found beside it unless `visionPath` names it). It is
   * checked against this model (family, widths, shapes, finite values) and applies to the calls
   * that name it in `adapters`.
   */
  async loadAdapter(path: string, options: { visionPath?: string; signal?: AbortSignal } = {}): Promise<Adapter> {
    if (typeof path !== 'string' || !path) throw invalidArgument('loadAdapter(path)', 'a LoRA GGUF file path', path);
    if (!v.isPlainObject(options)) throw invalidArgument('loadAdapter options', 'an object', options);
    for (const k of Object.keys(options)) {
      if (k !== 'visionPath' && k !== 'signal') throw invalidArgument(`loadAdapter options.${k}`, 'one of visionPath, signal', `unknown option '${k}'`);
    }
    const signal = v.optionalSignal('loadAdapter options.signal', options.signal);
    const visionPath = options.visionPath ?? visionPartBeside(path);
    for (const [name, file] of [
      ['loadAdapter(path)', path],
      ['loadAdapter options.visionPath', visionPath],
    ] as const) {
      if (file && !fs.existsSync(file)) throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `${file}: no such file (${name})`);
    }
    if (signal?.aborted) throw abortError(signal, 'loadAdapter');
    const info = await this.enqueue((n) => callNative(() => n.loadAdapter(path, visionPath ?? '')));
    const adapter = new Adapter(this, info, (id) =>
      this.enqueue(async (n) => {
        this.adapters.delete(adapter);
        await callNative(() => n.freeAdapter(id));
      }),
    );
    this.adapters.add(adapter);
    if (signal?.aborted) {
      await adapter.dispose();
      throw abortError(signal, 'loadAdapter');
    }
    return adapter;
  }

  /** The generated text as an async iterable of chunks (whole UTF-8 characters). Breaking out aborts. */
  stream(options: Omit<GenerateOptions, 'onText'>): AsyncIterable<string> {
    return streamText((o) => this.generate(o), options);
  }

  // ---- tasks ----

  /** Runs a task prompt; also returns the source image's size (to place boxes). */
  private async task(what: string, image: ImageInput, task: TaskPrompt, options: TaskOptions | undefined) {
    if (options !== undefined && !v.isPlainObject(options)) throw invalidArgument(`${what} options`, 'an object', options);
    const { imageSize, ...rest } = options ?? {};
    if (
      imageSize !== undefined &&
      !(v.isPlainObject(imageSize) && Number.isInteger(imageSize.width) && imageSize.width > 0 && Number.isInteger(imageSize.height) && imageSize.height > 0)
    ) {
      throw invalidArgument(`${what} options.imageSize`, '{ width, height } in pixels', imageSize);
    }
    const plan = planGenerate(
      { maxTokens: task.maxTokens, ...rest, image: undefined as unknown as ImageInput, prompt: task.prompt },
      this.info.vocabSize,
      what,
    );
    const ready = this.prepareImage(image, `${what}(image)`);
    const result = await this.runGenerate(plan, ready, what);
    const input = await ready;
    let size = imageSize;
    if (!size && 'bytes' in input) size = await callNative(async () => this.binding.imageSize(input.bytes, input.label));
    if (!size && 'pixels' in input) size = { width: input.width, height: input.height };
    return { result, size };
  }

  /** A short caption ('caption <lang>') or a longer description ('describe <lang>', detail: 'long'). */
  async caption(image: ImageInput, options: TaskOptions & { lang?: string; detail?: 'short' | 'long' } = {}): Promise<string> {
    const { lang, detail, ...rest } = options;
    return (await this.task('caption', image, captionPrompt(lang, detail), rest)).result.text;
  }

  /** Answers a question about the image ('answer <lang> <question>'). */
  async answer(image: ImageInput, question: string, options: TaskOptions & { lang?: string } = {}): Promise<string> {
    const { lang, ...rest } = options;
    return (await this.task('answer', image, answerPrompt(question, lang), rest)).result.text;
  }

  /** Reads the text in the image ('ocr'). */
  async ocr(image: ImageInput, options: TaskOptions = {}): Promise<string> {
    return (await this.task('ocr', image, OCR_PROMPT, options)).result.text;
  }

  /** Finds objects ('detect a ; b'); boxes in pixels of the source image. */
  async detect(image: ImageInput, labels: string | string[], options: TaskOptions = {}): Promise<Detection[]> {
    const list = checkLabels('detect labels', labels);
    const { result, size } = await this.task('detect', image, detectPrompt(list), options);
    if (!size) throw invalidArgument('detect options.imageSize', '{ width, height } (required with an ImageEmbedding)', undefined);
    return parseLocations(result.text, size).map(({ label, box, region }) => ({ label: label || (list.length === 1 ? list[0]! : ''), box, region }));
  }

  /** Finds and cuts out objects ('segment x'): boxes plus masks at the source image size. */
  async segment(image: ImageInput, label: string, options: TaskOptions = {}): Promise<Segmentation[]> {
    const labels = checkLabels('segment label', label);
    if (labels.length !== 1) throw invalidArgument('segment label', 'one label', label);
    const one = labels[0]!;
    if (!this.info.hasSegDecoder) {
      throw new PaliGemmaError(
        'ERR_INVALID_ARGUMENT',
        `${this.info.mmproj} has no segmentation decoder: reconvert with \`paligemma convert <hf-dir> --seg-decoder vae-oid.npz\``,
      );
    }
    const { result, size } = await this.task('segment', image, segmentPrompt(one), options);
    if (!size) throw invalidArgument('segment options.imageSize', '{ width, height } (required with an ImageEmbedding)', undefined);
    const out: Segmentation[] = [];
    for (const loc of parseLocations(result.text, size)) {
      if (!loc.seg) continue;
      const mask64 = await this.decodeMask(loc.seg);
      out.push({ label: loc.label || one, box: loc.box, region: loc.region, mask: pasteMask(mask64, loc.box, size.width, size.height), mask64 });
    }
    return out;
  }

  /** big_vision's VQ-VAE decoder: 16 codes (a 4x4 grid, 0..127) -> a 64x64 map (row-major, about -1..1). */
  async decodeMask(codes: ArrayLike<number>): Promise<Float32Array> {
    if (!codes || typeof codes !== 'object' || codes.length !== 16) throw invalidArgument('decodeMask(codes)', '16 mask codes', codes);
    for (let i = 0; i < 16; i++) {
      if (!Number.isInteger(codes[i]) || codes[i]! < 0 || codes[i]! > 127) throw invalidArgument(`decodeMask(codes)[${i}]`, 'an integer 0..127', codes[i]);
    }
    const arr = Int32Array.from(codes);
    return this.enqueue((n) => callNative(() => n.decodeMask(arr)));
  }

  /** Stops running work (no callback runs after this returns), rejects queued calls, then frees native memory. Idempotent. */
  dispose(): Promise<void> {
    if (!this.disposing) {
      for (const t of this.running) t.abort();
      this.disposing = (async () => {
        await this.queue;
        const native = this.native;
        this.native = undefined;
        // The native model frees its adapters with it.
        for (const a of this.adapters) a.markDisposed();
        this.adapters.clear();
        if (native) await native.dispose();
      })();
    }
    return this.disposing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}

/** `<name>-lora-<type>.gguf` -> `<name>-mmproj-lora-<type>.gguf` when that file exists. */
function visionPartBeside(file: string): string | undefined {
  const dir = nodePath.dirname(file);
  const m = /^(.*)-lora-([a-z0-9_]+)\.gguf$/i.exec(nodePath.basename(file));
  if (!m) return undefined;
  const beside = nodePath.join(dir, `${m[1]}-mmproj-lora-${m[2]}.gguf`);
  return fs.existsSync(beside) ? beside : undefined;
}

function disposedError(what: string): PaliGemmaError {
  return new PaliGemmaError('ERR_DISPOSED', `${what} was stopped: the model was disposed`);
}
