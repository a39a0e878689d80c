/**
 * Images from requests: a `data:` URL, an uploaded file, or (only when the server allows it) an
 * http(s) URL the server fetches. Never a local path: a network client must not make the server
 * read its files. Each image is checked (decodable header, pixel count) before it takes a queue slot.
 */
import { callNative, PaliGemmaError } from '../errors';
import { getBinding } from '../native/binding';
import { badRequest, HttpError } from './http-error';

export interface ImageLimits {
  /** Fetch http(s) URLs (default off). */
  allowRemote: boolean;
  /** Bytes of one image. */
  maxBytes: number;
  maxPixels: number;
  /** How long a remote fetch may take. */
  fetchTimeoutMs: number;
}

export interface RequestImage {
  bytes: Uint8Array;
  width: number;
  height: number;
}

const DATA_URL = /^data:([^,;]*)((?:;[^,;]+)*),/i;
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

function fromDataUrl(url: string, field: string): Buffer {
  const m = DATA_URL.exec(url);
  if (!m) throw badRequest(`${field}: not a data URL (expected data:image/png;base64,...)`, field);
  const mediaType = m[1]!.toLowerCase();
  if (mediaType && !mediaType.startsWith('image/') && mediaType !== 'application/octet-stream') {
    throw badRequest(`${field}: the data URL holds '${mediaType}', not an image`, field);
  }
  if (!/;base64$/i.test(m[2]!)) throw badRequest(`${field}: the data URL must be base64 (data:image/png;base64,...)`, field);
  const payload = url.slice(m[0].length).replace(/\s+/g, '');
  if (!BASE64.test(payload)) throw badRequest(`${field}: the data URL's payload is not base64`, field);
  return Buffer.from(payload, 'base64');
}

async function fromRemote(url: string, field: string, limits: ImageLimits, signal: AbortSignal): Promise<Buffer> {
  if (!limits.allowRemote) {
    throw badRequest(`${field}: this server does not fetch http(s) URLs (start it with --allow-remote-images); send the image as a data: URL`, field);
  }
  // The client's disconnect or the time limit stops the fetch, body included.
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, limits.fetchTimeoutMs);
  const onAbort = () => controller.abort();
  signal.addEventListener('abort', onAbort, { once: true });
  const tooLarge = () =>
    new HttpError(413, `${field}: ${url} is over this server's image limit of ${limits.maxBytes} bytes`, 'invalid_request_error', 'image_too_large', field);
  let complete = false;
  try {
    const res = await fetch(url, { signal: controller.signal, redirect: 'follow' });
    if (!res.ok) throw badRequest(`${field}: fetching ${url} answered HTTP ${res.status}`, field);
    if (Number(res.headers.get('content-length') ?? 0) > limits.maxBytes) throw tooLarge();
    const chunks: Uint8Array[] = [];
    let size = 0;
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      size += chunk.length;
      if (size > limits.maxBytes) throw tooLarge();
      chunks.push(chunk);
    }
    complete = true;
    return Buffer.concat(chunks);
  } catch (err) {
    if (err instanceof HttpError) throw err;
    throw badRequest(`${field}: could not fetch ${url} (${timedOut ? `no answer within ${limits.fetchTimeoutMs / 1000} s` : (err as Error).message})`, field);
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    // A body left unread (an error status, an image over the limit) would hold its connection.
    if (!complete) controller.abort();
  }
}

/** Checks that `bytes` are an image this server takes; returns its size. */
export async function checkImage(bytes: Uint8Array, field: string, limits: ImageLimits): Promise<RequestImage> {
  if (bytes.length === 0) throw badRequest(`${field}: the image is empty`, field, 'invalid_image');
  if (bytes.length > limits.maxBytes) {
    throw new HttpError(
      413,
      `${field}: ${bytes.length} bytes is over this server's image limit of ${limits.maxBytes}`,
      'invalid_request_error',
      'image_too_large',
      field,
    );
  }
  let size: { width: number; height: number };
  try {
    // Reads the header only: a bad or huge image is refused before anything is decoded.
    size = await callNative(async () => getBinding().binding.imageSize(bytes));
  } catch (err) {
    if (err instanceof PaliGemmaError && err.code === 'ERR_INVALID_IMAGE')
      throw badRequest(`${field}: not an image this server can read (${err.message})`, field, 'invalid_image');
    throw err;
  }
  if (size.width * size.height > limits.maxPixels) {
    throw badRequest(`${field}: ${size.width}x${size.height} is over this server's limit of ${limits.maxPixels} pixels`, field, 'image_too_large');
  }
  return { bytes, ...size };
}

/** An image given as a URL string in a JSON body. */
export async function imageFromUrl(url: string, field: string, limits: ImageLimits, signal: AbortSignal): Promise<RequestImage> {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  let bytes: Buffer;
  if (scheme === 'data') bytes = fromDataUrl(url, field);
  else if (scheme === 'http' || scheme === 'https') bytes = await fromRemote(url, field, limits, signal);
  else throw badRequest(`${field}: expected a data: URL${limits.allowRemote ? ' or an http(s) URL' : ''} (local file paths are not accepted over HTTP)`, field);
  return checkImage(bytes, field, limits);
}
