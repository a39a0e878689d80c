/**
 * Requests to the hub: the token goes only to the hub's own origin (never to the CDN an LFS file
 * redirects to), transient failures are retried with backoff, and HTTP errors become PaliGemmaErrors
 * that name the repo and say what to do. Nothing here ever puts the token into a message.
 */
import { AbortError, PaliGemmaError } from '../errors';
import { describeRepo, type RepoRef } from './repo';

export interface HubClient {
  endpoint: string;
  token?: string;
  signal?: AbortSignal;
  /** The repo the requests are about, for messages. */
  repo: RepoRef;
  /** Attempts per request (default 5) and the first backoff delay in ms (default 500, doubling). */
  attempts?: number;
  retryDelayMs?: number;
}

/** A failure worth another try: a dropped connection, a timeout, HTTP 408/429/5xx. */
export class TransientError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** An error thrown by the caller's own code (a progress callback) inside an attempt: passed on as it is, never retried. */
export class CallerError extends Error {
  constructor(readonly error: unknown) {
    super('a callback failed');
  }
}

/** Calls `fn`, marking what it throws as the caller's (see CallerError). */
export function callerCode<A extends unknown[]>(fn: (...args: A) => void): (...args: A) => void {
  return (...args) => {
    try {
      fn(...args);
    } catch (err) {
      throw new CallerError(err);
    }
  };
}

/** Removes the token from text a server sent back (a hostile one could echo it) and bounds its length. */
export function redact(text: string, token: string | undefined): string {
  let out = text;
  if (token) out = out.split(token).join('<token>');
  out = out.replace(/hf_[A-Za-z0-9]{8,}/g, 'hf_<redacted>');
  // biome-ignore lint/suspicious/noControlCharactersInRegex: a server's text is printed on one line
  out = out.replace(/[\u0000-\u001f\u007f]+/g, ' ').trim();
  return out.length > 200 ? `${out.slice(0, 197)}...` : out;
}

/** A URL for messages: no query string (a CDN's signed URL carries credentials of its own). */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    return `${u.origin}${u.pathname}`;
  } catch {
    return '<bad url>';
  }
}

export function hubPage(client: HubClient): string {
  const r = client.repo;
  return `${client.endpoint}/${r.type === 'model' ? '' : `${r.type}s/`}${r.name}`;
}

const TOKEN_HELP = "set HF_TOKEN=hf_... (a read token from the hub's Settings > Access Tokens), or run `hf auth login`, which writes $HF_HOME/token";

/** The PaliGemmaError (or TransientError) for a failed response; `file`: it was a file's download. */
export function responseError(res: Response, client: HubClient, what: string, file = false): Error {
  const code = res.headers.get('x-error-code') ?? '';
  const said = redact(res.headers.get('x-error-message') ?? '', client.token);
  const repo = describeRepo(client.repo, false);
  const detail = said ? ` (the hub says: ${said})` : '';
  if (res.status === 408 || res.status === 429 || res.status >= 500) {
    const retryAfter = Number(res.headers.get('retry-after'));
    return new TransientError(
      `${what}: HTTP ${res.status} from ${shownUrl(res.url)}`,
      Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter * 1000 : undefined,
    );
  }
  if (code === 'GatedRepo' || ((res.status === 401 || res.status === 403) && code !== 'RepoNotFound')) {
    if (!client.token) {
      return new PaliGemmaError(
        'ERR_AUTH',
        `${repo} is gated: accept its license at ${hubPage(client)} (signed in), then give this program an access token: ${TOKEN_HELP}${detail}`,
      );
    }
    return new PaliGemmaError(
      'ERR_AUTH',
      res.status === 401
        ? `${repo}: the hub refused the access token (invalid or expired); make a new one and ${TOKEN_HELP}${detail}`
        : `${repo}: the access token has no access to this repo: accept the license at ${hubPage(client)} with the account the token belongs to (access may take a moment to be granted), or use a token with read access${detail}`,
    );
  }
  if (code === 'RepoNotFound' || (res.status === 404 && !code && !file)) {
    return new PaliGemmaError(
      'ERR_FILE_NOT_FOUND',
      `${repo}: no such ${client.repo.type} repo on ${client.endpoint}${client.token ? '' : ` (if it is private, give a token: ${TOKEN_HELP})`}${detail}`,
    );
  }
  if (code === 'RevisionNotFound') return new PaliGemmaError('ERR_FILE_NOT_FOUND', `${repo}: no revision ${JSON.stringify(client.repo.revision)}${detail}`);
  if (code === 'EntryNotFound' || res.status === 404) return new PaliGemmaError('ERR_FILE_NOT_FOUND', `${what}: not found in ${repo}${detail}`);
  return new PaliGemmaError('ERR_NETWORK', `${what}: unexpected HTTP ${res.status} from ${shownUrl(res.url)}${detail}`);
}

function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

/** Request headers for `url`: the token only for the hub's own origin. */
export function headersFor(client: HubClient, url: string, extra: Record<string, string> = {}): Record<string, string> {
  return { ...extra, ...(client.token && sameOrigin(url, client.endpoint) ? { authorization: `Bearer ${client.token}` } : {}) };
}

export function abortError(client: HubClient): AbortError {
  return new AbortError(`pull ${describeRepo(client.repo)}: aborted`, { cause: client.signal?.reason });
}

/** Waits `ms`, or rejects as soon as the signal aborts. */
export function sleep(ms: number, client: HubClient): Promise<void> {
  return new Promise((resolve, reject) => {
    if (client.signal?.aborted) return reject(abortError(client));
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortError(client));
    };
    const timer = setTimeout(() => {
      client.signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    client.signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** What a failed attempt was: our own errors pass through; fetch's TypeErrors are the network's. */
function classify(err: unknown, client: HubClient): Error {
  if (client.signal?.aborted) return abortError(client);
  if (err instanceof PaliGemmaError || err instanceof TransientError) return err;
  const cause = (err as { cause?: { code?: string; message?: string } })?.cause;
  return new TransientError(`${(err as Error)?.message ?? String(err)}${cause?.code ? ` (${cause.code})` : cause?.message ? ` (${cause.message})` : ''}`);
}

/**
 * Runs `attempt` until it succeeds, fails for good, or the attempts run out (then ERR_NETWORK with
 * the last reason). Backoff doubles from retryDelayMs, with jitter, capped at 30 s.
 */
export async function withRetries<T>(client: HubClient, what: string, attempt: (n: number) => Promise<T>): Promise<T> {
  const attempts = client.attempts ?? 5;
  const base = client.retryDelayMs ?? 500;
  for (let n = 1; ; n++) {
    if (client.signal?.aborted) throw abortError(client);
    try {
      return await attempt(n);
    } catch (e) {
      if (e instanceof CallerError) throw e.error;
      const err = classify(e, client);
      if (!(err instanceof TransientError)) throw err;
      if (n >= attempts) {
        throw new PaliGemmaError(
          'ERR_NETWORK',
          `${what}: failed ${attempts} times, last: ${redact(err.message, client.token)}; check the connection (or HF_ENDPOINT), then run it again: finished files are kept and a partial one resumes`,
        );
      }
      const delay = err.retryAfterMs ?? Math.min(30_000, base * 2 ** (n - 1) * (0.75 + Math.random() * 0.5));
      await sleep(delay, client);
    }
  }
}

/** One request with the client's signal; the caller handles the response. */
export async function hubRequest(client: HubClient, url: string, init: RequestInit & { headers?: Record<string, string> } = {}): Promise<Response> {
  return fetch(url, { ...init, headers: headersFor(client, url, init.headers), signal: init.signal ?? client.signal });
}

/**
 * The fetch handed to @huggingface/hub's listing calls: our token handling, retries and errors (its
 * own errors would carry the URL and the server's words unfiltered, and no hint about gated repos).
 */
export function listingFetch(client: HubClient, what: string): typeof fetch {
  return (async (input: string | URL | Request, init?: RequestInit) => {
    const url = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const extra = Object.fromEntries(new Headers(init?.headers).entries());
    delete extra.authorization; // only ever ours, and only for the hub's origin
    return withRetries(client, what, async () => {
      const res = await hubRequest(client, url, { method: init?.method ?? 'GET', headers: extra });
      if (!res.ok) {
        await res.body?.cancel().catch(() => undefined);
        throw responseError(res, client, what);
      }
      return res;
    });
  }) as typeof fetch;
}
