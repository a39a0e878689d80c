import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { FIXTURES } from './fixtures';

export const PNG_FILE = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');
export const PNG = fs.readFileSync(PNG_FILE);
export const PNG_DATA_URL = `data:image/png;base64,${PNG.toString('base64')}`;

export interface Reply {
  status: number;
  headers: Headers;
  text: string;
  // biome-ignore lint/suspicious/noExplicitAny: JSON of any shape, checked by the test
  json: any;
}

/** POSTs JSON (or a raw string body) and reads the whole reply. */
export async function post(url: string, body: unknown, headers: Record<string, string> = {}): Promise<Reply> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
  return read(res);
}

export async function get(url: string, headers: Record<string, string> = {}): Promise<Reply> {
  return read(await fetch(url, { headers }));
}

export async function read(res: Response): Promise<Reply> {
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {}
  return { status: res.status, headers: res.headers, text, json };
}

/** A chat completion request about the fixture image. */
export function chat(prompt: string, extra: Record<string, unknown> = {}) {
  return {
    model: 'tiny',
    messages: [
      {
        role: 'user',
        content: [
          { type: 'image_url', image_url: { url: PNG_DATA_URL } },
          { type: 'text', text: prompt },
        ],
      },
    ],
    ...extra,
  };
}

export interface SseEvent {
  event?: string;
  data: string;
}

/**
 * Splits a server-sent event stream into events, checking the framing: blocks end with a blank
 * line, and every line is `event: ...` or `data: ...`.
 */
export function parseSse(text: string): SseEvent[] {
  if (!text.endsWith('\n\n')) throw new Error(`the stream does not end with a blank line: ${JSON.stringify(text.slice(-40))}`);
  return text
    .slice(0, -2)
    .split('\n\n')
    .map((block) => {
      const e: SseEvent = { data: '' };
      for (const line of block.split('\n')) {
        if (line.startsWith('event: ')) e.event = line.slice(7);
        else if (line.startsWith('data: ')) e.data += line.slice(6);
        else throw new Error(`not an SSE line: ${JSON.stringify(line)}`);
      }
      return e;
    });
}

/** A raw request with headers fetch would not send as given (Host, Origin). */
export function rawRequest(url: string, method: string, headers: Record<string, string>, body?: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      let data = '';
      res.on('data', (c) => (data += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: data }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Reads a streaming response until `until` says stop; returns what came so far. */
export async function readUntil(res: Response, until: (text: string) => boolean): Promise<string> {
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let text = '';
  while (!until(text)) {
    const r = await reader.read();
    if (r.done) break;
    text += dec.decode(r.value, { stream: true });
  }
  reader.releaseLock();
  return text;
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` until it returns true (or fails the wait after `ms`). */
export async function waitFor(check: () => Promise<boolean> | boolean, ms = 10_000, what = 'condition'): Promise<void> {
  const end = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** A promise and its resolve/reject, for a test to settle later. */
export function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
