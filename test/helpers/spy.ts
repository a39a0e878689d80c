import type { PaliGemma } from '../../lib/index';
import type { NativeModelHandle } from '../../lib/native/contract';

export interface NativeCall {
  name: string;
  args: unknown[];
  /** What the call resolved to (once it has). */
  result?: unknown;
}

/**
 * Records every call a PaliGemma makes into its native model (and what each resolved to) until
 * the returned restore() is called.
 */
export function spyNative(model: PaliGemma): { calls: NativeCall[]; restore: () => void } {
  const holder = model as unknown as { native: NativeModelHandle };
  const handle = holder.native;
  const calls: NativeCall[] = [];
  holder.native = new Proxy(handle, {
    get(target, name) {
      const value = Reflect.get(target, name) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        const call: NativeCall = { name: String(name), args };
        calls.push(call);
        const out = (value as (...a: unknown[]) => unknown).apply(target, args);
        if (out instanceof Promise)
          out.then(
            (r) => (call.result = r),
            () => undefined,
          );
        return out;
      };
    },
  });
  return { calls, restore: () => (holder.native = handle) };
}
