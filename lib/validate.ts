/** Argument checks that name the option and what is wrong (sharp-style). */
import { invalidArgument } from './errors';

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function optionalInteger(name: string, v: unknown, min: number, max = Number.MAX_SAFE_INTEGER): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalidArgument(name, `an integer between ${min} and ${max}`, v);
  }
  return v;
}

export function optionalNumber(name: string, v: unknown, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw invalidArgument(name, `a number between ${min} and ${max}`, v);
  return v;
}

export function optionalString(name: string, v: unknown): string | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string') throw invalidArgument(name, 'a string', v);
  return v;
}

export function optionalFunction<T extends (...args: never[]) => unknown>(name: string, v: unknown): T | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'function') throw invalidArgument(name, 'a function', v);
  return v as T;
}

export function optionalEnum<T extends string>(name: string, v: unknown, values: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !values.includes(v as T)) throw invalidArgument(name, `one of ${values.map((x) => `'${x}'`).join(', ')}`, v);
  return v as T;
}

export function optionalSignal(name: string, v: unknown): AbortSignal | undefined {
  if (v === undefined) return undefined;
  if (!(v instanceof AbortSignal)) throw invalidArgument(name, 'an AbortSignal', v);
  return v;
}
