/**
 * Every failure of this library is a PaliGemmaError with a stable `code`.
 * Native errors arrive with the same codes (see native/core/pg_error.h).
 */

/** Error codes, as native/core/pg_error.h names them (lib/native/contract.ts checks the addon agrees). */
export const NATIVE_ERROR_CODES = [
  'ERR_INVALID_ARGUMENT',
  'ERR_FILE_NOT_FOUND',
  'ERR_INVALID_FILE',
  'ERR_INVALID_IMAGE',
  'ERR_CONTEXT_FULL',
  'ERR_ABORTED',
  'ERR_OUT_OF_MEMORY',
  'ERR_BACKEND',
  'ERR_INTERNAL',
] as const;
/**
 * Every code a PaliGemmaError can carry: the native ones and those only lib/ raises (ERR_NETWORK: the
 * hub could not be reached or kept failing; ERR_AUTH: the hub refused the token, or wants one).
 */
export const ERROR_CODES = [...NATIVE_ERROR_CODES, 'ERR_DISPOSED', 'ERR_NO_BINARY', 'ERR_WRITE', 'ERR_NETWORK', 'ERR_AUTH'] as const;
export type ErrorCode = (typeof ERROR_CODES)[number];

export type PaliGemmaErrorCode = ErrorCode;

const KNOWN_CODES = new Set<string>(ERROR_CODES);

export class PaliGemmaError extends Error {
  readonly code: PaliGemmaErrorCode;

  constructor(code: PaliGemmaErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PaliGemmaError';
    this.code = code;
  }
}

/** Thrown (or rejected) when an AbortSignal stops an operation; `name` is 'AbortError' as in the DOM. */
export class AbortError extends PaliGemmaError {
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super('ERR_ABORTED', message, options);
    this.name = 'AbortError';
  }
}

export function invalidArgument(name: string, expected: string, actual: unknown): PaliGemmaError {
  return new PaliGemmaError('ERR_INVALID_ARGUMENT', `${name}: expected ${expected}, got ${describe(actual)}`);
}

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  if (value === undefined) return 'undefined';
  if (Array.isArray(value)) return `an array of ${value.length}`;
  return `a ${value.constructor?.name ?? typeof value}`;
}

/**
 * Turns an error from the native layer into a PaliGemmaError whose stack is the caller's
 * (native errors carry no JavaScript frames of their own).
 */
export function fromNative(err: unknown, callerStack: Error): PaliGemmaError {
  if (err instanceof PaliGemmaError) return err;
  const e = err as { code?: unknown; message?: unknown } | undefined;
  const code = typeof e?.code === 'string' && KNOWN_CODES.has(e.code) ? (e.code as PaliGemmaErrorCode) : 'ERR_INTERNAL';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const out = code === 'ERR_ABORTED' ? new AbortError(message) : new PaliGemmaError(code, message);
  const frames = (callerStack.stack ?? '').split('\n').slice(1).join('\n');
  out.stack = `${out.name}: ${message}${frames ? `\n${frames}` : ''}`;
  return out;
}

/** Runs a native promise-returning call and rewrites its rejection (see fromNative). */
export async function callNative<T>(run: () => Promise<T>): Promise<T> {
  const callerStack = new Error();
  try {
    return await run();
  } catch (err) {
    throw fromNative(err, callerStack);
  }
}
