/**
 * The queue in front of the model: one job runs at a time (the model has one context, and all its
 * native work runs on one compute thread), the others wait in arrival order. Only `maxWaiting` may
 * wait; a job whose signal aborts leaves the queue at once, and a running job is stopped through
 * the same signal, so the next one starts as soon as the model returns.
 */
import { AbortError } from '../errors';

export class QueueFullError extends Error {
  constructor(
    readonly waiting: number,
    /** A guess of when a slot frees up: the jobs ahead times their average duration. */
    readonly retryAfterSeconds: number,
  ) {
    super(`the queue is full (${waiting} requests waiting for the model)`);
    this.name = 'QueueFullError';
  }
}

interface Waiter {
  start: () => void;
  signal: AbortSignal;
  onAbort: () => void;
}

export class JobQueue {
  private busy = false;
  private readonly waiting: Waiter[] = [];
  /** Moving average of a job's duration, for Retry-After; one second until measured. */
  private averageMs = 1000;

  constructor(readonly maxWaiting: number) {}

  get running(): number {
    return this.busy ? 1 : 0;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Runs `job` once every job before it has finished. Rejects with QueueFullError or AbortError. */
  async run<T>(signal: AbortSignal, job: () => Promise<T>): Promise<T> {
    if (signal.aborted) throw new AbortError('the request was aborted before it reached the model');
    if (this.busy) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new QueueFullError(this.waiting.length, Math.min(60, Math.max(1, Math.ceil(((this.waiting.length + 1) * this.averageMs) / 1000))));
      }
      await new Promise<void>((resolve, reject) => {
        const waiter: Waiter = {
          start: resolve,
          signal,
          onAbort: () => {
            this.waiting.splice(this.waiting.indexOf(waiter), 1);
            reject(new AbortError('the request was aborted while waiting for the model'));
          },
        };
        signal.addEventListener('abort', waiter.onAbort, { once: true });
        this.waiting.push(waiter);
      });
    } else this.busy = true;
    // This job holds the model now; it hands it to the next waiter when it settles.
    const started = performance.now();
    try {
      return await job();
    } finally {
      this.averageMs = 0.7 * this.averageMs + 0.3 * (performance.now() - started);
      this.next();
    }
  }

  private next() {
    const waiter = this.waiting.shift();
    if (waiter) {
      waiter.signal.removeEventListener('abort', waiter.onAbort);
      waiter.start();
      return;
    }
    this.busy = false;
  }
}
