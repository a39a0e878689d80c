/**
 * The server's errors: every failure answers JSON in OpenAI's shape, `{ error: { message, type,
 * code, param } }`, so that OpenAI clients show the message; the message names the field and what
 * is wrong with it.
 */
import { PaliGemmaError } from '../errors';

export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'permission_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'server_error'
  | 'unavailable_error';

export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType = 'invalid_request_error',
    readonly code: string | null = null,
    /** The request field at fault, when there is one. */
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }

  body() {
    return { error: { message: this.message, type: this.type, code: this.code, param: this.param } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null) =>
  new HttpError(400, message, 'invalid_request_error', code, param);

/** PaliGemmaError codes that are the request's fault; the rest are the server's. */
const CLIENT_CODES = new Set(['ERR_INVALID_ARGUMENT', 'ERR_INVALID_IMAGE', 'ERR_CONTEXT_FULL']);

interface AjvError {
  keyword: string;
  instancePath: string;
  message?: string;
  params: Record<string, unknown>;
  parentSchema?: { properties?: Record<string, unknown> };
  /** The value at fault (Ajv's verbose mode). */
  data?: unknown;
}

const A_TYPE: Record<string, string> = {
  integer: 'an integer',
  number: 'a number',
  string: 'a string',
  boolean: 'a boolean',
  array: 'an array',
  object: 'an object',
};

function describeValue(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? `${v.slice(0, 37)}...` : v);
  return typeof v === 'object' ? 'an object' : String(v);
}

/** `/messages/0/content` -> `messages[0].content` */
function fieldPath(instancePath: string, child?: string): string {
  const parts = instancePath.split('/').filter(Boolean);
  if (child !== undefined) parts.push(child);
  return parts.reduce((s, p) => (/^\d+$/.test(p) ? `${s}[${p}]` : s ? `${s}.${p}` : p), '');
}

/** One line for a failed JSON schema check, naming the field (Ajv's own says "body/x must ..."). */
export function schemaMessage(e: AjvError): { message: string; param: string } {
  switch (e.keyword) {
    case 'additionalProperties': {
      const field = fieldPath(e.instancePath, String(e.params.additionalProperty));
      const known = Object.keys(e.parentSchema?.properties ?? {});
      return { param: field, message: `${field}: unknown field${known.length ? ` (known here: ${known.join(', ')})` : ''}` };
    }
    case 'required': {
      const field = fieldPath(e.instancePath, String(e.params.missingProperty));
      return { param: field, message: `${field}: required` };
    }
    case 'enum': {
      const field = fieldPath(e.instancePath) || 'body';
      return { param: field, message: `${field}: must be one of ${(e.params.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}` };
    }
    case 'type': {
      const field = fieldPath(e.instancePath) || 'body';
      const types = String(e.params.type)
        .split(',')
        .filter((t) => t !== 'null')
        .map((t) => A_TYPE[t] ?? t);
      return { param: field, message: `${field}: must be ${types.join(' or ')}, got ${describeValue(e.data)}` };
    }
    default: {
      const field = fieldPath(e.instancePath) || 'body';
      return { param: field, message: `${field}: ${e.message ?? 'is invalid'}` };
    }
  }
}

/** Any error a route or Fastify throws, as the response to send. */
export function toHttpError(err: unknown): HttpError {
  if (err instanceof HttpError) return err;
  if (err instanceof PaliGemmaError) {
    if (CLIENT_CODES.has(err.code)) return new HttpError(400, err.message, 'invalid_request_error', err.code);
    if (err.code === 'ERR_DISPOSED') return new HttpError(503, err.message, 'unavailable_error', err.code);
    return new HttpError(500, err.message, 'server_error', err.code);
  }
  const e = err as { statusCode?: number; code?: string; message?: string; validation?: AjvError[] } | undefined;
  if (e?.validation?.length) {
    const { message, param } = schemaMessage(e.validation[0]!);
    return badRequest(message, param, 'invalid_field');
  }
  const status = typeof e?.statusCode === 'number' ? e.statusCode : 500;
  switch (e?.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return new HttpError(
        415,
        `unsupported content type: send application/json${e.message ? ` (${e.message})` : ''}`,
        'invalid_request_error',
        'unsupported_media_type',
      );
  }
  if (status === 413)
    return new HttpError(413, `the request body is over this server's limit (${e?.message ?? 'too large'})`, 'invalid_request_error', 'body_too_large');
  if (status >= 400 && status < 500) return new HttpError(status, e?.message ?? 'bad request', 'invalid_request_error', e?.code ?? null);
  return new HttpError(500, e?.message ?? String(err), 'server_error', e?.code ?? null);
}
