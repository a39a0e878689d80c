/**
 * A LoRA adapter loaded for one model: any number can be loaded at once, and each call chooses
 * which apply, at what scale (`generate({ adapters: [{ adapter, scale }] })`). Disposing frees it
 * once the calls queued before have finished; disposing the model disposes its adapters.
 */
import { PaliGemmaError } from '../errors';
import type { NativeAdapterInfo } from '../native/contract';

export interface AdapterInfo {
  /** The language-model part (llama.cpp's LoRA format). */
  path: string;
  /** The vision tower / projector part, when the adapter has one. */
  visionPath?: string;
  name: string;
  /** The model it was converted against, and its family. */
  baseName: string;
  family: string;
  /** base_model_name_or_path from the PEFT config, when it said. */
  trainedOn?: string;
  rank: number;
  alpha: number;
  rslora: boolean;
  /** Module kinds it changes: 'text.q_proj', 'vision.fc1', 'projector', ... */
  targets: string[];
  /** Memory its weights take. */
  bytes: number;
  hasText: boolean;
  hasVision: boolean;
}

/** An adapter and the scale one call applies it at (1: as trained; 0: as if absent). */
export interface AdapterChoice {
  adapter: Adapter;
  scale?: number;
}

export class Adapter {
  readonly info: AdapterInfo;
  /** @internal */
  readonly id: number;
  /** @internal The model it belongs to. */
  readonly owner: object;
  private freed: Promise<void> | undefined;
  private readonly free: (id: number) => Promise<void>;

  /** @internal */
  constructor(owner: object, native: NativeAdapterInfo, free: (id: number) => Promise<void>) {
    this.owner = owner;
    this.id = native.id;
    this.free = free;
    this.info = Object.freeze({
      path: native.path,
      ...(native.visionPath ? { visionPath: native.visionPath } : {}),
      name: native.name,
      baseName: native.baseName,
      family: native.family,
      ...(native.trainedOn ? { trainedOn: native.trainedOn } : {}),
      rank: native.rank,
      alpha: native.alpha,
      rslora: native.rslora,
      targets: Object.freeze([...native.targets]) as string[],
      bytes: native.bytes,
      hasText: native.hasText,
      hasVision: native.hasVision,
    });
  }

  get disposed(): boolean {
    return this.freed !== undefined;
  }

  /** @internal Marks it gone without a native call (its model was disposed, which freed it). */
  markDisposed() {
    this.freed ??= Promise.resolve();
  }

  /** Frees the adapter after the calls queued before this one; later calls naming it reject. Idempotent. */
  dispose(): Promise<void> {
    this.freed ??= this.free(this.id).catch((err) => {
      if (!(err instanceof PaliGemmaError && err.code === 'ERR_DISPOSED')) throw err;
    });
    return this.freed;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
