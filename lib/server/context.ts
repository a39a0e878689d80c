/**
 * What the routes share: the model (once loaded), the queue in front of it, the image limits, and
 * how a request waits for its turn.
 */
import type { FastifyReply } from 'fastify';
import type { PaliGemma } from '../model/paligemma';
import { HttpError, toHttpError } from './http-error';
import type { ImageLimits } from './images';
import { type JobQueue, QueueFullError } from './queue';

/** Bytes of a text field in a multipart form (every part but the image file): no field needs more. */
export const MULTIPART_FIELD_LIMIT = 64 * 1024;

export type ModelState = { status: 'loading'; progress: number } | { status: 'ok'; model: PaliGemma } | { status: 'error'; error: Error };

export interface ServerContext {
  readonly limits: ImageLimits;
  readonly queue: JobQueue;
  readonly state: ModelState;
  /** The id /v1/models lists and responses carry. */
  modelId(): string;
  closing: boolean;
}

/** The loaded model, or the 503 that says why there is none yet. */
export function readyModel(ctx: ServerContext): PaliGemma {
  if (ctx.closing) throw new HttpError(503, 'the server is shutting down', 'unavailable_error', 'shutting_down');
  const s = ctx.state;
  if (s.status === 'ok') return s.model;
  if (s.status === 'loading') {
    throw new HttpError(503, `the model is loading (${Math.floor(s.progress * 100)}%); retry shortly`, 'unavailable_error', 'model_loading', null, {
      'retry-after': '2',
    });
  }
  throw new HttpError(503, `the model failed to load: ${s.error.message}`, 'unavailable_error', 'model_failed');
}

export interface JobTimes {
  /** From arrival to the model's turn. */
  queueMs: number;
  startedAt: number;
}

/**
 * Runs `job` on the model in its turn; the signal (the client's connection) removes it from the
 * queue or stops its generation. A full queue is a 429 with Retry-After.
 */
export async function onModel<T>(ctx: ServerContext, signal: AbortSignal, job: (model: PaliGemma, times: JobTimes) => Promise<T>): Promise<T> {
  const model = readyModel(ctx);
  const arrived = performance.now();
  try {
    return await ctx.queue.run(signal, () => {
      const startedAt = performance.now();
      return job(model, { queueMs: startedAt - arrived, startedAt });
    });
  } catch (err) {
    if (err instanceof QueueFullError) {
      throw new HttpError(429, `${err.message}; retry after ${err.retryAfterSeconds} s`, 'rate_limit_error', 'queue_full', null, {
        'retry-after': String(err.retryAfterSeconds),
      });
    }
    throw err;
  }
}

export function sendError(reply: FastifyReply, error: HttpError) {
  return reply.code(error.status).headers(error.headers).send(error.body());
}

/** Sends what went wrong, unless the client has gone or the response has begun. */
export function failed(reply: FastifyReply, signal: AbortSignal, err: unknown) {
  if (signal.aborted || reply.raw.headersSent) {
    if (!reply.sent) reply.hijack();
    if (!reply.raw.writableEnded) reply.raw.end();
    return reply;
  }
  return sendError(reply, toHttpError(err));
}
