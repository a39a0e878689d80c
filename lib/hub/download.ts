/**
 * One file from the hub into a blob of the Hugging Face cache, the way huggingface_hub writes it
 * (`blobs/<etag>.incomplete`, renamed to `blobs/<etag>` when whole), plus what @huggingface/hub's
 * downloadFileToCacheDir does not do (it restarts from zero, checks nothing and cannot be aborted):
 *  - resume: an existing `.incomplete` continues with an HTTP Range request;
 *  - verify: the hub's ETag / X-Linked-Etag / X-Linked-Size / X-Repo-Commit must agree with the
 *    listing, and the bytes with its hash (SHA-256 for LFS files, the git blob SHA-1 otherwise);
 *  - bound: a server sending more than the listing announced is cut off;
 *  - retry transient failures (through withRetries), time out a stalled connection, stop on abort.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import { PaliGemmaError } from '../errors';
import { callerCode, type HubClient, hubRequest, responseError, TransientError, withRetries } from './http';
import { blobName } from './names';

export interface BlobDownload {
  /** The repo-relative name, for messages. */
  file: string;
  /** The hub's resolve URL for the file at `commit`. */
  url: string;
  commit: string;
  /** The blob's final path; the partial file is `${blob}.incomplete`. */
  blob: string;
  /** Bytes the listing announced. */
  size: number;
  /** The listing's hash: an LFS SHA-256 (64 hex digits) or a git blob SHA-1 (40); also the blob's name. */
  etag: string;
}

const IDLE_TIMEOUT_MS = 60_000;
const WRITE_BYTES = 4 << 20;
const MAX_REDIRECTS = 5;

function invalid(what: string, why: string): PaliGemmaError {
  return new PaliGemmaError('ERR_INVALID_FILE', `${what}: ${why}`);
}

function newHasher(d: BlobDownload): crypto.Hash {
  if (d.etag.length === 64) return crypto.createHash('sha256');
  // git's object id: SHA-1 over "blob <size>\0" and the bytes.
  return crypto.createHash('sha1').update(`blob ${d.size}\0`);
}

/** The hub's own answer (before any redirect) must describe the file the listing described. */
function checkHubHeaders(res: Response, d: BlobDownload, what: string) {
  const h = res.headers;
  const linked = blobName(h.get('x-linked-etag')) ?? blobName(h.get('etag'));
  if (linked && linked.length === d.etag.length && linked !== d.etag) throw invalid(what, `the hub's ETag ${linked} differs from its listing's ${d.etag}`);
  const size = h.get('x-linked-size');
  if (size !== null && Number(size) !== d.size) throw invalid(what, `the hub announces ${size} bytes, its listing ${d.size}`);
  const commit = h.get('x-repo-commit');
  if (commit !== null && commit !== d.commit) throw invalid(what, `the hub answered for commit ${commit.slice(0, 40)}, not ${d.commit}`);
}

/** GET with the redirects followed by hand, so that the hub's first answer can be checked. */
async function open(client: HubClient, d: BlobDownload, start: number, signal: AbortSignal, what: string): Promise<Response> {
  let url = d.url;
  for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
    const res = await hubRequest(client, url, {
      redirect: 'manual',
      signal,
      headers: { 'accept-encoding': 'identity', ...(start > 0 ? { range: `bytes=${start}-` } : {}) },
    });
    if (hop === 0 && (res.ok || (res.status >= 300 && res.status < 400))) checkHubHeaders(res, d, what);
    const location = res.headers.get('location');
    if (res.status >= 300 && res.status < 400 && location) {
      await res.body?.cancel().catch(() => undefined);
      url = new URL(location, url).href;
      continue;
    }
    return res;
  }
  throw new PaliGemmaError('ERR_NETWORK', `${what}: more than ${MAX_REDIRECTS} redirects`);
}

async function sizeOf(file: string): Promise<number> {
  return (await fs.promises.stat(file).catch(() => null))?.size ?? 0;
}

async function hashFile(hasher: crypto.Hash, file: string, bytes: number) {
  if (bytes === 0) return;
  for await (const chunk of fs.createReadStream(file, { start: 0, end: bytes - 1 })) hasher.update(chunk as Buffer);
}

function writeError(file: string, err: unknown): PaliGemmaError {
  return new PaliGemmaError('ERR_WRITE', `${file}: cannot write (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`, { cause: err });
}

/**
 * Downloads `d` into its blob (resuming a partial one); `callback` gets the bytes of the file on disk
 * so far. Aborting keeps the partial file for the next run.
 */
export async function downloadBlob(client: HubClient, d: BlobDownload, callback: (have: number) => void): Promise<void> {
  // What the caller's callback throws ends the download as it is (not a network error to retry).
  const onBytes = callerCode(callback);
  const what = `${client.repo.name}: ${d.file}`;
  const partial = `${d.blob}.incomplete`;
  let refetched = false;
  await withRetries(client, `downloading ${what}`, async () => {
    let start = await sizeOf(partial);
    if (start > d.size) {
      await fs.promises.rm(partial, { force: true });
      start = 0;
    }
    // The partial file's bytes go through the hash first, before any request: that can take a
    // while for gigabytes, and must not count as a stalled connection.
    let hasher = newHasher(d);
    await hashFile(hasher, partial, start);
    // A stalled connection aborts this attempt (and is retried); the caller's abort stops everything.
    const attempt = new AbortController();
    const onAbort = () => attempt.abort(client.signal?.reason);
    client.signal?.addEventListener('abort', onAbort, { once: true });
    let idle: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(() => attempt.abort(new TransientError(`no data for ${IDLE_TIMEOUT_MS / 1000} s`)), IDLE_TIMEOUT_MS);
    };
    let fh: fs.promises.FileHandle | undefined;
    // Network chunks are small (16-64 KiB): they are written in batches.
    const pending: Uint8Array[] = [];
    let pendingBytes = 0;
    const flush = async (to: fs.promises.FileHandle) => {
      if (!pendingBytes) return;
      const batch = Buffer.concat(pending, pendingBytes);
      pending.length = 0;
      pendingBytes = 0;
      try {
        await to.write(batch);
      } catch (err) {
        throw writeError(partial, err);
      }
    };
    try {
      arm();
      let res = await open(client, d, start, attempt.signal, what);
      if (res.status === 416 && start > 0) {
        // Nothing left to send: either the partial file is whole, or it is not this file at all.
        await res.body?.cancel().catch(() => undefined);
        if (start !== d.size) {
          await fs.promises.rm(partial, { force: true });
          throw new TransientError(`the server refused to resume at byte ${start}`);
        }
        res = new Response(null, { status: 206 });
      } else if (res.status === 200) {
        if (start > 0) hasher = newHasher(d); // the server ignored the Range header: start over
        start = 0;
      } else if (res.status === 206) {
        const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(res.headers.get('content-range') ?? '');
        if (!m || Number(m[1]) !== start)
          throw new TransientError(`the server resumed at the wrong place (${res.headers.get('content-range') ?? 'no Content-Range'})`);
        if (m[3] !== '*' && Number(m[3]) !== d.size) throw invalid(what, `the server says the file has ${m[3]} bytes, the listing ${d.size}`);
      } else {
        await res.body?.cancel().catch(() => undefined);
        throw responseError(res, client, what, true);
      }
      const announced = Number(res.headers.get('content-length'));
      if (res.headers.has('content-length') && Number.isFinite(announced) && start + announced > d.size) {
        await res.body?.cancel().catch(() => undefined);
        await fs.promises.rm(partial, { force: true });
        throw invalid(what, `the server announces ${start + announced} bytes, more than the ${d.size} the listing promised: refused`);
      }
      try {
        fh = await fs.promises.open(partial, start > 0 ? 'a' : 'w');
      } catch (err) {
        throw writeError(partial, err);
      }
      let have = start;
      onBytes(have);
      const out = fh;
      for await (const chunk of (res.body ?? []) as AsyncIterable<Uint8Array>) {
        arm();
        if (have + chunk.length > d.size) {
          pending.length = 0;
          pendingBytes = 0;
          await fh.close();
          fh = undefined;
          await fs.promises.rm(partial, { force: true });
          throw invalid(what, `the server sent more than the ${d.size} bytes the listing announced: cut off`);
        }
        hasher.update(chunk);
        pending.push(chunk);
        pendingBytes += chunk.length;
        if (pendingBytes >= WRITE_BYTES) await flush(out);
        have += chunk.length;
        onBytes(have);
      }
      await flush(out);
      if (have < d.size) throw new TransientError(`the connection closed after ${have} of ${d.size} bytes`);
      const digest = hasher.digest('hex');
      if (digest !== d.etag) {
        await fh.close();
        fh = undefined;
        await fs.promises.rm(partial, { force: true });
        onBytes(0);
        const kind = d.etag.length === 64 ? 'SHA-256' : 'git SHA-1';
        // One corrupted transfer (or a damaged partial file) is fetched again from the start; twice is the server's doing.
        if (!refetched) {
          refetched = true;
          throw new TransientError(`${kind} mismatch`);
        }
        throw invalid(
          what,
          `${kind} of the downloaded bytes is ${digest}, the hub's listing says ${d.etag} (fetched twice): the server or something between sends corrupted data`,
        );
      }
      await fh.datasync().catch(() => undefined);
      await fh.close();
      fh = undefined;
      await fs.promises.rename(partial, d.blob).catch((err) => {
        throw writeError(d.blob, err);
      });
    } catch (err) {
      // What arrived before a drop or an abort is kept for the next attempt (the hash checks it then).
      if (fh && pendingBytes && !(err instanceof PaliGemmaError && err.code !== 'ERR_ABORTED')) await flush(fh).catch(() => undefined);
      // A stalled-connection timeout surfaces as the abort reason we gave.
      if (attempt.signal.aborted && attempt.signal.reason instanceof TransientError && !client.signal?.aborted) throw attempt.signal.reason;
      throw err;
    } finally {
      clearTimeout(idle);
      client.signal?.removeEventListener('abort', onAbort);
      await fh?.close().catch(() => undefined);
    }
  });
}
