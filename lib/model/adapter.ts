/**
 * A LoRA adapter loaded for one model: any number can be loaded at once, and each call chooses
 * which apply, at what scale (`generate({ adapters: [{ adapter, scale }] })`). Disposing frees it
 * once the calls queued before have finished; disposing the model disposes its adapters.
 */
import { PaliGemmaError } from '../errors';
import type { NativeAdapterInfo } from '../native/contract';

/** What `NativeAdapterInfo` says, with the empty optional parts left out. */
export interface AdapterInfo extends Omit<NativeAdapterInfo, 'id' | 'visionPath' | 'trainedOn'> {
  visionPath?: string;
  trainedOn?: string;
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
    const { id: _id, visionPath, trainedOn, ...rest } = native;
    this.info = Object.freeze({
      ...rest,
      ...(visionPath ? { visionPath } : {}),
      ...(trainedOn ? { trainedOn } : {}),
      targets: Object.freeze([...rest.targets]) as string[],
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
