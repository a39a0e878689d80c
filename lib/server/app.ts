/**
 * createServer(): the HTTP server around one PaliGemma. Fastify does the HTTP (JSON schema checks
 * with unknown fields refused, body limits); this file adds what every route needs: the model's
 * load state, the API key, the loopback and same-origin checks, JSON errors, and a close() that
 * lets accepted requests finish.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import path from 'node:path';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { invalidArgument } from '../errors';
import { MAX_IMAGE_PIXELS } from '../image/input';
import type { PaliGemma } from '../model/paligemma';
import * as v from '../validate';
import { type ModelState, MULTIPART_FIELD_LIMIT, type ServerContext, sendError } from './context';
import { badRequest, HttpError, toHttpError } from './http-error';
import { registerOpenAIRoutes } from './openai';
import { PAGE_HTML } from './page';
import { JobQueue } from './queue';
import { registerTaskRoutes } from './tasks';

export interface ServerOptions {
  /** Every request but the page and /health must send `Authorization: Bearer <apiKey>`. */
  apiKey?: string;
  /** Requests that may wait for the model while one runs (default 16); more get 429 with Retry-After. */
  maxQueue?: number;
  /** Bytes of a request body, JSON or multipart (default 20 MiB); larger get 413. */
  bodyLimit?: number;
  /** Pixels of one image (default MAX_IMAGE_PIXELS); larger get 400 before anything is decoded. */
  maxImagePixels?: number;
  /** Let requests name http(s) image URLs, which the server then fetches (default false: data URLs and uploads only). */
  allowRemoteImages?: boolean;
  /** The model id in /v1/models and in responses (default: the text GGUF's file name, without .gguf). */
  modelName?: string;
  /** Serve the web page at / (default true). */
  page?: boolean;
  /** Called with one line per finished request (method, path, status, milliseconds). */
  log?: (line: string) => void;
  /** Milliseconds a client may take to send a whole request, headers and body (default 300000: 20 MiB at ~0.6 Mbit/s); slower ones get 408. */
  requestTimeout?: number;
}

export interface ServerAddress {
  host?: string;
  /** 0 picks a free port. */
  port?: number;
}

export interface PaliGemmaServer {
  /** The Fastify instance, to add routes or hooks before listen(). */
  readonly app: FastifyInstance;
  /** Starts listening (default 127.0.0.1:8080); resolves with the base URL. */
  listen(address?: ServerAddress): Promise<string>;
  /** While the model loads: what /health reports as progress (0..1). */
  setLoadProgress(fraction: number): void;
  /**
   * Stops accepting requests, lets the accepted ones (running and queued) finish, then closes.
   * Requests whose body has not fully arrived have not reached the model: they are cut at once.
   * `force: true` (also on a close() under way) ends every connection now, running requests included.
   */
  close(options?: { force?: boolean }): Promise<void>;
}

const OPTION_KEYS = ['apiKey', 'maxQueue', 'bodyLimit', 'maxImagePixels', 'allowRemoteImages', 'modelName', 'page', 'log', 'requestTimeout'];
const DEFAULT_BODY_LIMIT = 20 * 1024 * 1024;
const DEFAULT_REQUEST_TIMEOUT = 5 * 60 * 1000;

function checkOptions(o: ServerOptions) {
  if (!v.isPlainObject(o)) throw invalidArgument('createServer(model, options)', 'an object', o);
  for (const k of Object.keys(o))
    if (!OPTION_KEYS.includes(k)) throw invalidArgument(`createServer options.${k}`, `one of ${OPTION_KEYS.join(', ')}`, `unknown option '${k}'`);
  if (o.apiKey !== undefined && (typeof o.apiKey !== 'string' || !o.apiKey))
    throw invalidArgument('createServer options.apiKey', 'a non-empty string', o.apiKey);
  v.optionalInteger('createServer options.maxQueue', o.maxQueue, 0, 1 << 20);
  v.optionalInteger('createServer options.bodyLimit', o.bodyLimit, 1024, 2 ** 31 - 1);
  v.optionalInteger('createServer options.maxImagePixels', o.maxImagePixels, 1, MAX_IMAGE_PIXELS);
  v.optionalInteger('createServer options.requestTimeout', o.requestTimeout, 1, 2 ** 31 - 1);
  v.optionalString('createServer options.modelName', o.modelName);
  v.optionalFunction('createServer options.log', o.log);
  for (const k of ['allowRemoteImages', 'page'] as const) {
    if (o[k] !== undefined && typeof o[k] !== 'boolean') throw invalidArgument(`createServer options.${k}`, 'a boolean', o[k]);
  }
}

// The page loads nothing from anywhere: its script and style are inline, images are data: or blob: URLs.
const PAGE_CSP =
  "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'";

const digest = (s: string) => createHash('sha256').update(s).digest();

/** `Host: 127.0.0.1:8080` -> `127.0.0.1`; `[::1]:8080` -> `::1`. */
function hostName(host: string): string {
  const m = /^\[([^\]]+)\]/.exec(host);
  return (m ? m[1]! : host.split(':')[0]!).toLowerCase();
}

/** An Origin or Host as `new URL` writes it: lowercase, default port dropped; undefined when it is none. */
function normalOrigin(url: string): string | undefined {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.host : undefined;
  } catch {
    return undefined;
  }
}

const isLoopbackName = (h: string) => h === 'localhost' || h.endsWith('.localhost') || /^127\.\d+\.\d+\.\d+$/.test(h) || h === '::1';

/**
 * Serves `model` over HTTP: OpenAI's chat completions and model list, the task endpoints
 * (/v1/caption, answer, ocr, detect, segment), /health and a page at /. `model` may be a promise:
 * the server can listen while the model loads, /health reporting the progress and model requests
 * getting 503 with Retry-After. The server does not dispose the model.
 */
export function createServer(model: PaliGemma | Promise<PaliGemma>, options: ServerOptions = {}): PaliGemmaServer {
  checkOptions(options);
  // Loaded here: require('paligemma-node') should not pay for an HTTP stack it may never use.
  const Fastify = require('fastify') as typeof import('fastify').default;
  const multipart = require('@fastify/multipart') as typeof import('@fastify/multipart').default;
  const bodyLimit = options.bodyLimit ?? DEFAULT_BODY_LIMIT;
  let state: ModelState = { status: 'loading', progress: 0 };
  const ctx: ServerContext = {
    limits: {
      allowRemote: options.allowRemoteImages === true,
      maxBytes: bodyLimit,
      maxPixels: options.maxImagePixels ?? MAX_IMAGE_PIXELS,
      fetchTimeoutMs: 15_000,
    },
    queue: new JobQueue(options.maxQueue ?? 16),
    get state() {
      return state;
    },
    modelId: () => options.modelName ?? (state.status === 'ok' ? path.basename(state.model.info.model).replace(/\.gguf$/i, '') : 'paligemma'),
    closing: false,
  };
  Promise.resolve(model).then(
    (m) => (state = { status: 'ok', model: m }),
    (error: Error) => (state = { status: 'error', error }),
  );

  const app = Fastify({
    bodyLimit,
    // Without it a client that sends headers and then stalls would hold its connection for ever.
    requestTimeout: options.requestTimeout ?? DEFAULT_REQUEST_TIMEOUT,
    // Unknown fields are refused (400), never silently dropped; types are never coerced.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: false, verbose: true, allowUnionTypes: true } },
    // close() answers new requests itself (JSON, with the reason) while it drains.
    return503OnClosing: false,
  });
  // Only JSON and multipart bodies: text/plain is a 415. JSON through our parser, whose error says
  // where the syntax breaks (Fastify's hides it). Objects with a `__proto__` key never get past the
  // schemas, which allow no unknown keys at any level.
  app.removeContentTypeParser(['text/plain', 'application/json']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, text, done) => {
    try {
      done(null, JSON.parse(text as string));
    } catch (e) {
      done(badRequest(`the body is not valid JSON: ${(e as Error).message}`, null, 'invalid_json'), undefined);
    }
  });
  // readForm keeps the parts' total under bodyLimit; a text field never needs more than a few KiB.
  app.register(multipart, { limits: { fileSize: bodyLimit, fieldSize: MULTIPART_FIELD_LIMIT, files: 1, fields: 32, parts: 33 } });

  let loopbackOnly = false;
  // Requests whose response has not ended; close() waits for them (or cuts those still arriving).
  const inFlight = new Set<FastifyRequest>();
  let drained: (() => void) | undefined;
  const apiKey = options.apiKey === undefined ? undefined : digest(options.apiKey);
  // The page (it holds no data; its script asks for the key) and /health (for probes) need no key.
  const open = (req: FastifyRequest) => (req.method === 'GET' || req.method === 'HEAD') && (req.routeOptions.url === '/' || req.routeOptions.url === '/health');

  app.addHook('onRequest', async (request: FastifyRequest, reply: FastifyReply) => {
    const t0 = performance.now();
    inFlight.add(request);
    reply.raw.once('close', () => {
      options.log?.(
        `${request.method} ${request.url} ${reply.raw.writableFinished ? reply.raw.statusCode : 'client closed the connection'} ${Math.round(performance.now() - t0)} ms`,
      );
      inFlight.delete(request);
      if (inFlight.size === 0) drained?.();
    });
    if (ctx.closing) {
      reply.header('connection', 'close');
      throw new HttpError(503, 'the server is shutting down', 'unavailable_error', 'shutting_down');
    }
    const host = request.headers.host ?? '';
    // A web page could make a browser send requests to 127.0.0.1 under its own name (DNS rebinding).
    if (loopbackOnly && !isLoopbackName(hostName(host))) {
      throw new HttpError(
        403,
        `Host '${host}': this server listens on a loopback address and answers loopback names only (listen on another --host to serve other names)`,
        'permission_error',
        'host_not_allowed',
      );
    }
    // Browsers send Origin; another site's page must not drive the model through a visitor's browser.
    const origin = request.headers.origin;
    if (origin !== undefined) {
      // Compared as URLs: `Host: LOCALHOST:80` is the origin http://localhost.
      const from = normalOrigin(origin);
      if (from === undefined || from !== normalOrigin(`${new URL(origin).protocol}//${host}`)) {
        throw new HttpError(
          403,
          `Origin '${origin}': cross-origin requests are refused (use this server's own page, or a non-browser client)`,
          'permission_error',
          'origin_not_allowed',
        );
      }
    }
    if (apiKey && !open(request)) {
      const m = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '');
      if (!m || !timingSafeEqual(digest(m[1]!.trim()), apiKey)) {
        reply.header('www-authenticate', 'Bearer');
        throw new HttpError(
          401,
          m ? 'the API key is not valid' : 'an API key is required: send the header Authorization: Bearer <key>',
          'authentication_error',
          'invalid_api_key',
        );
      }
    }
  });

  app.setErrorHandler((err, request, reply) => {
    const e = toHttpError(err);
    if (e.status >= 500) options.log?.(`${request.method} ${request.url}: ${e.message}`);
    return sendError(reply, e);
  });
  app.setNotFoundHandler((request, reply) =>
    sendError(reply, new HttpError(404, `${request.method} ${request.url.split('?')[0]}: no such route`, 'not_found_error', 'not_found')),
  );

  app.register(async (routes) => {
    if (options.page !== false) {
      routes.get('/', (_request, reply) =>
        reply
          .type('text/html; charset=utf-8')
          .headers({ 'cache-control': 'no-cache', 'x-content-type-options': 'nosniff', 'content-security-policy': PAGE_CSP })
          .send(PAGE_HTML),
      );
    }
    routes.get('/health', async (_request, reply) => {
      const s = state;
      const queue = { running: ctx.queue.running, waiting: ctx.queue.queued, maxWaiting: ctx.queue.maxWaiting };
      if (ctx.closing) return reply.code(503).send({ status: 'closing', queue });
      if (s.status === 'loading') return reply.code(503).header('retry-after', '2').send({ status: 'loading', progress: s.progress });
      // The load error may name local paths: with an API key (a shared server) /health, which needs no key, does not show it.
      if (s.status === 'error') return reply.code(500).send({ status: 'error', error: apiKey ? 'the model failed to load' : s.error.message });
      return {
        status: 'ok',
        model: ctx.modelId(),
        backend: s.model.info.backend,
        segmentation: s.model.info.hasSegDecoder,
        auth: apiKey !== undefined,
        queue,
      };
    });
    registerOpenAIRoutes(routes, ctx);
    registerTaskRoutes(routes, ctx);
  });

  let closing: Promise<void> | undefined;
  return {
    app,
    async listen({ host = '127.0.0.1', port = 8080 }: ServerAddress = {}) {
      await app.listen({ host, port });
      loopbackOnly = isLoopbackName(hostName(host.includes(':') && !host.startsWith('[') ? `[${host}]` : host));
      const a = app.server.address();
      const bound = typeof a === 'object' && a ? a.port : port;
      return `http://${host.includes(':') ? `[${host}]` : host}:${bound}`;
    },
    setLoadProgress(fraction: number) {
      if (state.status === 'loading' && Number.isFinite(fraction)) state = { status: 'loading', progress: Math.min(1, Math.max(0, fraction)) };
    },
    close({ force = false }: { force?: boolean } = {}) {
      closing ??= (async () => {
        ctx.closing = true;
        const done = app.close(); // no new connections
        // A request still sending its body has not reached the model: cut it (a stalled upload
        // would otherwise hold the drain until its timeout).
        for (const r of inFlight) if (!r.raw.complete) r.raw.socket?.destroy();
        if (inFlight.size > 0) await new Promise<void>((r) => (drained = r));
        // Keep-alive connections are idle now; nothing else would end them before their timeout.
        app.server.closeIdleConnections();
        const stragglers = setTimeout(() => app.server.closeAllConnections(), 1000);
        await done;
        clearTimeout(stragglers);
      })();
      if (force) app.server.closeAllConnections();
      return closing;
    },
  };
}
