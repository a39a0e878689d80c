/**
 * Server-sent events on a reply Fastify hands over (hijack), and the signal that tells a route
 * its client has gone.
 */
import type { FastifyReply } from 'fastify';
import type { HttpError } from './http-error';

/** Aborts when the connection closes before the response was fully written. */
export function disconnectSignal(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  const res = reply.raw;
  const onClose = () => {
    if (!res.writableFinished) controller.abort(new Error('the client disconnected'));
  };
  if (res.destroyed) onClose();
  else res.once('close', onClose);
  return controller.signal;
}

export class EventStream {
  private readonly res: FastifyReply['raw'];

  constructor(reply: FastifyReply) {
    reply.hijack();
    this.res = reply.raw;
    this.res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      // Proxies that buffer (nginx) would hold the tokens back.
      'x-accel-buffering': 'no',
    });
    this.res.flushHeaders();
  }

  get open(): boolean {
    return !this.res.destroyed && !this.res.writableEnded;
  }

  /** One event: `event: <name>` when named, then the JSON data line. */
  send(data: unknown, event?: string) {
    if (this.open) this.res.write(`${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`);
  }

  /** An error after the 200 went out: the status can no longer say it, so an event does. */
  fail(error: HttpError, event?: string) {
    this.send(error.body(), event);
  }

  end(final?: string) {
    if (!this.open) return;
    if (final) this.res.write(`data: ${final}\n\n`);
    this.res.end();
  }
}
