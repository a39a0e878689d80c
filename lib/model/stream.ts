/**
 * A generation as an async iterable of text chunks: breaking out of the loop (or the caller's
 * signal) aborts it, and nothing is yielded after that.
 */
import { AbortError } from '../errors';
import type { GenerateOptions, GenerateResult } from './options';

export function streamText(generate: (o: GenerateOptions) => Promise<GenerateResult>, options: Omit<GenerateOptions, 'onText'>): AsyncIterable<string> {
  return {
    [Symbol.asyncIterator](): AsyncIterator<string> {
      const chunks: string[] = [];
      let wake: (() => void) | undefined;
      let done = false;
      let failure: { error: unknown } | undefined;
      const controller = new AbortController();
      const outer = options.signal;
      const onOuter = () => controller.abort(outer?.reason);
      if (outer?.aborted) controller.abort(outer.reason);
      else outer?.addEventListener('abort', onOuter, { once: true });
      const finished = generate({
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
            // Our own abort (the loop was left) ends the stream quietly; the caller's does not.
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
          while (chunks.length === 0 && !done && !controller.signal.aborted) await new Promise<void>((r) => (wake = r));
          wake = undefined;
          if (chunks.length && !controller.signal.aborted) return { value: chunks.shift()!, done: false };
          await finished;
          if (failure) throw failure.error;
          return { value: undefined, done: true };
        },
        async return(): Promise<IteratorResult<string>> {
          controller.abort();
          chunks.length = 0;
          await finished;
          return { value: undefined, done: true };
        },
      };
    },
  };
}
