/**
 * The CLI's command table and argument parsing: every command has its own usage text, takes
 * --help/-h, and reports bad usage as a UsageError (exit code 2).
 */
import { type ParseArgsConfig, parseArgs } from 'node:util';

export class UsageError extends Error {
  /** The command whose usage to show, if any. */
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

export type Out = NodeJS.WritableStream & { isTTY?: boolean };

export interface CliIO {
  out: Out;
  err: Out;
}

export type OptionSpec = NonNullable<ParseArgsConfig['options']>;

export interface Command {
  name: string;
  /** One line for the command list. */
  summary: string;
  /** The synopsis and option lines shown by `<command> --help`. */
  usage: string;
  options: OptionSpec;
  positionals?: boolean;
  /** Exit code: 0 ok, 1 runtime failure (2 comes from UsageError). */
  run(parsed: Parsed, io: CliIO): Promise<number>;
}

export interface Parsed {
  values: Record<string, string | boolean | string[] | undefined>;
  positionals: string[];
}

const HELP: OptionSpec = { help: { type: 'boolean', short: 'h' } };

/** node:util parseArgs with the command's options plus --help; its errors become usage errors. */
export function parseCommand(cmd: Command, args: string[]): Parsed & { help: boolean } {
  try {
    const { values, positionals } = parseArgs({ args, options: { ...cmd.options, ...HELP }, allowPositionals: cmd.positionals === true, strict: true });
    const { help, ...rest } = values as Record<string, string | boolean | string[] | undefined>;
    return { values: rest, positionals, help: help === true };
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional argument.*$/, ''), cmd.name);
  }
}

/** An integer option (a string from the command line), at least `min`. */
export function intOption(name: string, v: unknown, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || !/^-?\d+$/.test(v) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got '${String(v)}'`);
  return n;
}

/** A string option that must be one of `choices`. */
export function choiceOption<T extends string>(name: string, v: unknown, choices: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !choices.includes(v as T)) throw new UsageError(`--${name} must be one of ${choices.join(', ')}, got '${String(v)}'`);
  return v as T;
}

/** Writes `value` as indented JSON: typed arrays as arrays, BigInts as strings. */
export function writeJson(out: Out, value: unknown) {
  out.write(
    `${JSON.stringify(value, (_k, v) => (typeof v === 'bigint' ? v.toString() : ArrayBuffer.isView(v) && !(v instanceof DataView) ? Array.from(v as unknown as ArrayLike<number>) : v), 2)}\n`,
  );
}

/** `path[:scale]`: the scale is a number after the last colon (so `C:\x.gguf` stays a path). */
export function splitScale(v: string): { path: string; scale?: number } {
  const m = /^(.+):(-?\d+(?:\.\d+)?(?:e-?\d+)?)$/i.exec(v);
  return m ? { path: m[1]!, scale: Number(m[2]) } : { path: v };
}
