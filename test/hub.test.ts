import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { readGGUF } from '../lib/gguf/read';
import { fetchCheckpoint } from '../lib/hub/checkpoint';
import { hostTag } from '../lib/hub/gguf-cache';
import { writeRef } from '../lib/hub/hf-cache';
import { withRetries } from '../lib/hub/http';
import { withLock } from '../lib/hub/lock';
import { pull, resolveHubModel } from '../lib/hub/pull';
import { AbortError, type PaliGemmaError } from '../lib/index';
import { FIXTURES, rewriteSafetensors } from './helpers/fixtures';
import { checkpointFiles, etagOf, hubEnv, NEEDED, UNNEEDED_FILES, writePythonCache } from './helpers/hub-env';
import { type HubServer, sha256, startHubServer } from './helpers/hub-server';
import { tmpDir } from './helpers/tmp';

const tiny = checkpointFiles('tiny-v2');
const SMALL = { type: 'f32', visionType: 'f32' } as const; // no llama.cpp quantization: the fastest pair

let server: HubServer;
t.before(async () => {
  server = await startHubServer([{ id: 'org/tiny', files: { ...tiny, ...UNNEEDED_FILES } }]);
});
t.teardown(() => server.close());

const repoDir = (hubCache: string, repo = 'org/tiny') => path.join(hubCache, `models--${repo.replace('/', '--')}`);
const since = (n: number) => server.requests.slice(n);
const fileGets = (from: number) => since(from).filter((r) => r.method === 'GET' && !r.url.startsWith('/api/'));

t.test('first pull: only the files the converter needs, in the layout huggingface_hub writes; a second pull fetches nothing', async (t) => {
  const env = hubEnv(t, server);
  const seen: string[] = [];
  let lastDownload = 0;
  let outOfRange = 0;
  const first = server.requests.length;
  const res = await pull({
    repo: 'org/tiny',
    ...SMALL,
    onProgress: (p) => {
      if (!seen.includes(p.phase)) seen.push(p.phase);
      if (p.phase === 'download') {
        if (p.bytesDone < lastDownload || p.bytesDone > p.bytesTotal) outOfRange++;
        lastDownload = p.bytesDone;
      }
    },
  });
  t.equal(outOfRange, 0, 'download progress only grows, up to its total');
  const commit = server.commitOf('org/tiny');
  t.equal(res.commit, commit);
  t.same(seen, ['download', 'text', 'vision', 'done'], 'download, then conversion');
  const neededBytes = NEEDED.reduce((s, f) => s + tiny[f]!.length, 0);
  t.equal(res.downloadedBytes, neededBytes, 'bytes downloaded: the needed files');
  t.equal(lastDownload, neededBytes);
  t.ok(res.converted);

  // Requests: repo info, one listing, one GET per needed file (LFS ones via the CDN), nothing else.
  const got = fileGets(first).map((r) => r.url.split('?')[0]!);
  for (const f of Object.keys(UNNEEDED_FILES))
    t.notOk(
      got.some((u) => u.endsWith(f)),
      `${f} is not fetched`,
    );
  for (const f of NEEDED) t.equal(server.fileRequests(f).length, 1, `${f} fetched once`);
  t.ok(
    since(first).some((r) => r.server === 'cdn'),
    'LFS files come from the redirect target',
  );

  // The Hugging Face cache layout.
  const dir = repoDir(env.hubCache);
  t.equal(fs.readFileSync(path.join(dir, 'refs', 'main'), 'utf8'), commit, 'refs/main holds the bare commit hash');
  for (const f of NEEDED) {
    const link = path.join(dir, 'snapshots', commit, f);
    t.ok(fs.lstatSync(link).isSymbolicLink(), `${f} is a link`);
    t.equal(fs.readlinkSync(link), path.join('..', '..', 'blobs', etagOf(f, tiny[f]!)), `${f} -> ../../blobs/<etag>`);
    t.same(fs.readFileSync(link), tiny[f], `${f} has the hub's bytes`);
  }
  t.same(
    fs.readdirSync(path.join(dir, 'blobs')).filter((b) => b.endsWith('.incomplete')),
    [],
    'no partial blob left',
  );

  // Our cache: one folder per repo, commit and types.
  t.equal(res.model, path.join(env.ggufCache, 'gguf', 'models--org--tiny', commit, 'f32-f32', 'tiny-f32.gguf'));
  t.equal(res.mmproj, path.join(env.ggufCache, 'gguf', 'models--org--tiny', commit, 'f32-f32', 'tiny-mmproj-f32.gguf'));
  t.equal((await readGGUF(res.model, { maxArrayLength: 0 })).metadata['general.architecture'], 'gemma2');

  const second = server.requests.length;
  const again = await pull({ repo: 'org/tiny', ...SMALL });
  t.same([again.model, again.converted, again.downloadedBytes], [res.model, false, 0], 'second pull: the same pair, nothing converted');
  t.same(
    since(second).map((r) => r.url.split('?')[0]),
    ['/api/models/org/tiny/revision/main'],
    'second pull: only the question which commit main is',
  );

  // Another type: converted from the cached checkpoint, no file fetched.
  const third = server.requests.length;
  const other = await pull({ repo: 'org/tiny@main', type: 'f16', visionType: 'f16' });
  t.ok(other.converted);
  t.equal(other.downloadedBytes, 0);
  t.same(fileGets(third), [], 'no file fetched for another type');
});

t.test('a checkpoint a Python user downloaded is used as is: no request at all', async (t) => {
  const env = hubEnv(t, server);
  const commit = 'a'.repeat(40);
  writePythonCache(env.hubCache, 'org/tiny', commit, Object.fromEntries(NEEDED.map((f) => [f, tiny[f]!])));
  const before = server.requests.length;
  const res = await resolveHubModel('org/tiny', { ...SMALL });
  t.equal(res.commit, commit, "the cache's refs/main");
  t.ok(res.converted);
  t.equal(server.requests.length, before, 'resolving a model asks the hub nothing when the cache can answer');
  // With the pair converted, --model org/tiny takes it (whatever its types) without a request either.
  const again = await resolveHubModel('org/tiny');
  t.equal(again.model, res.model);
  t.equal(server.requests.length, before);
  // pull always asks which commit main is now: here the hub's own, which is not in the cache yet.
  const pulled = await pull({ repo: `org/tiny@${commit}`, ...SMALL });
  t.equal(pulled.model, res.model, 'a commit hash needs no question');
  t.equal(server.requests.length, before);
});

t.test('a connection dropped mid-file resumes with a Range request', async (t) => {
  const env = hubEnv(t, server);
  server.faults.push({ file: 'model.safetensors', kind: 'drop', afterBytes: 1_000_000 });
  const before = server.requests.length;
  const res = await pull({ repo: 'org/tiny', ...SMALL });
  const cdn = since(before).filter((r) => r.server === 'cdn' && r.url.includes(sha256(tiny['model.safetensors']!)));
  t.equal(cdn.length, 2, 'two requests for the weights');
  t.equal(cdn[0]!.range, undefined, 'the first from the start');
  const m = /^bytes=(\d+)-$/.exec(cdn[1]!.range ?? '');
  t.ok(m && Number(m[1]) > 0 && Number(m[1]) <= 1_000_000, `the second resumes where the first stopped (${cdn[1]!.range})`);
  const blob = path.join(repoDir(env.hubCache), 'blobs', sha256(tiny['model.safetensors']!));
  t.same(fs.readFileSync(blob), tiny['model.safetensors'], 'the blob is whole and right');
  t.ok(fs.existsSync(res.model));
});

t.test('abort mid-download keeps the partial blob and makes no link; the next pull resumes it', async (t) => {
  const env = hubEnv(t, server);
  server.faults.push({ file: 'model.safetensors', kind: 'stall', afterBytes: 700_000 });
  const controller = new AbortController();
  const err = await pull({
    repo: 'org/tiny',
    ...SMALL,
    signal: controller.signal,
    onProgress: (p) => {
      if (p.phase === 'download' && p.file === 'model.safetensors' && p.bytesDone > tiny['config.json']!.length + 300_000) controller.abort();
    },
  }).catch((e: unknown) => e);
  t.ok(err instanceof AbortError, 'an AbortError');
  t.equal((err as PaliGemmaError).code, 'ERR_ABORTED');
  const commit = server.commitOf('org/tiny');
  const blob = path.join(repoDir(env.hubCache), 'blobs', sha256(tiny['model.safetensors']!));
  const partial = fs.statSync(`${blob}.incomplete`).size;
  t.ok(partial > 0 && partial <= 700_000, `the partial blob is kept (${partial} bytes)`);
  t.notOk(fs.existsSync(blob), 'no blob under its final name');
  t.notOk(fs.existsSync(path.join(repoDir(env.hubCache), 'snapshots', commit, 'model.safetensors')), 'no snapshot link to a missing blob');
  t.notOk(fs.existsSync(path.join(env.ggufCache, 'gguf')), 'nothing converted');

  const before = server.requests.length;
  await pull({ repo: 'org/tiny', ...SMALL });
  const cdn = since(before).filter((r) => r.server === 'cdn' && r.url.includes(sha256(tiny['model.safetensors']!)));
  t.same(
    cdn.map((r) => r.range),
    [`bytes=${partial}-`],
    'the next pull asks only for the rest',
  );
  t.same(fs.readFileSync(blob), tiny['model.safetensors']);
});

t.test('a corrupted transfer is fetched again; corrupted twice is an error; a damaged partial file starts over', async (t) => {
  await t.test('once', async (t) => {
    const env = hubEnv(t, server);
    server.faults.push({ file: 'model.safetensors', kind: 'corrupt' });
    const before = server.requests.length;
    await pull({ repo: 'org/tiny', ...SMALL });
    const cdn = since(before).filter((r) => r.server === 'cdn' && r.url.includes(sha256(tiny['model.safetensors']!)));
    t.same(
      cdn.map((r) => r.range),
      [undefined, undefined],
      'fetched again from the start',
    );
    t.same(fs.readFileSync(path.join(repoDir(env.hubCache), 'blobs', sha256(tiny['model.safetensors']!))), tiny['model.safetensors']);
  });
  await t.test('twice', async (t) => {
    const env = hubEnv(t, server);
    server.faults.push({ file: 'model.safetensors', kind: 'corrupt', times: 2 });
    const err = (await pull({ repo: 'org/tiny', ...SMALL }).catch((e: unknown) => e)) as PaliGemmaError;
    t.equal(err.code, 'ERR_INVALID_FILE');
    t.match(
      err.message,
      /org\/tiny: model\.safetensors: SHA-256 of the downloaded bytes is [0-9a-f]{64}, the hub's listing says [0-9a-f]{64} \(fetched twice\)/,
    );
    const blobs = path.join(repoDir(env.hubCache), 'blobs');
    t.notOk(
      fs.readdirSync(blobs).some((b) => b.startsWith(sha256(tiny['model.safetensors']!))),
      'neither blob nor partial file',
    );
    t.notOk(fs.existsSync(path.join(repoDir(env.hubCache), 'refs', 'main')), 'no ref for an unfinished checkpoint');
  });
  await t.test('a plain file: its git blob id is checked', async (t) => {
    hubEnv(t, server);
    server.faults.push({ file: 'config.json', kind: 'corrupt', times: 2 });
    await t.rejects(pull({ repo: 'org/tiny', ...SMALL }), { code: 'ERR_INVALID_FILE', message: /config\.json: git SHA-1 of the downloaded bytes/ });
  });
  await t.test('a partial file with wrong bytes', async (t) => {
    const env = hubEnv(t, server);
    const blob = path.join(repoDir(env.hubCache), 'blobs', sha256(tiny['model.safetensors']!));
    fs.mkdirSync(path.dirname(blob), { recursive: true });
    fs.writeFileSync(`${blob}.incomplete`, Buffer.alloc(100_000, 7));
    const before = server.requests.length;
    await pull({ repo: 'org/tiny', ...SMALL });
    const cdn = since(before).filter((r) => r.server === 'cdn' && r.url.includes(sha256(tiny['model.safetensors']!)));
    t.same(
      cdn.map((r) => r.range),
      ['bytes=100000-', undefined],
      'resumed, found wrong, fetched again whole',
    );
    t.same(fs.readFileSync(blob), tiny['model.safetensors']);
  });
  await t.test('a blob of the wrong size in the cache is fetched again', async (t) => {
    const env = hubEnv(t, server);
    const commit = server.commitOf('org/tiny');
    writePythonCache(env.hubCache, 'org/tiny', commit, { 'model.safetensors': tiny['model.safetensors']!.subarray(0, 1000) });
    fs.rmSync(path.join(repoDir(env.hubCache), 'refs'), { recursive: true });
    const res = await pull({ repo: 'org/tiny', ...SMALL });
    t.equal(
      res.downloadedBytes,
      NEEDED.reduce((s, f) => s + tiny[f]!.length, 0),
    );
  });
});

t.test('resuming: a partial file already whole is only checked; a server that ignores Range sends it all again', async (t) => {
  const weights = tiny['model.safetensors']!;
  await t.test('whole', async (t) => {
    const env = hubEnv(t, server);
    const blob = path.join(repoDir(env.hubCache), 'blobs', sha256(weights));
    fs.mkdirSync(path.dirname(blob), { recursive: true });
    fs.writeFileSync(`${blob}.incomplete`, weights);
    const before = server.requests.length;
    await pull({ repo: 'org/tiny', ...SMALL });
    const cdn = since(before).filter((r) => r.server === 'cdn' && r.url.includes(sha256(weights)));
    t.same(
      cdn.map((r) => r.range),
      [`bytes=${weights.length}-`],
      'asked for the rest: nothing (416)',
    );
    t.same(fs.readFileSync(blob), weights);
  });
  await t.test('ignored Range', async (t) => {
    const env = hubEnv(t, server);
    const blob = path.join(repoDir(env.hubCache), 'blobs', sha256(weights));
    fs.mkdirSync(path.dirname(blob), { recursive: true });
    fs.writeFileSync(`${blob}.incomplete`, weights.subarray(0, 1000));
    server.faults.push({ file: 'model.safetensors', kind: 'ignoreRange' });
    await pull({ repo: 'org/tiny', ...SMALL });
    t.same(fs.readFileSync(blob), weights, 'the 200 answer replaced the partial file');
  });
  await t.test('a partial file longer than the file', async (t) => {
    const env = hubEnv(t, server);
    const blob = path.join(repoDir(env.hubCache), 'blobs', sha256(weights));
    fs.mkdirSync(path.dirname(blob), { recursive: true });
    fs.writeFileSync(`${blob}.incomplete`, Buffer.concat([weights, Buffer.alloc(10)]));
    await pull({ repo: 'org/tiny', ...SMALL });
    t.same(fs.readFileSync(blob), weights);
  });
});

t.test('concurrent pulls share the work; locks of dead processes are taken over; abandoned conversions are removed', async (t) => {
  const env = hubEnv(t, server);
  const [a, b] = await Promise.all([pull({ repo: 'org/tiny', ...SMALL }), pull({ repo: 'org/tiny', ...SMALL })]);
  t.equal(a.model, b.model);
  t.same([a.converted, b.converted].sort(), [false, true], 'converted once');
  t.equal(server.fileRequests('model.safetensors').length > 0, true);

  const dir = tmpDir();
  const stale = path.join(dir, 'stale.lock');
  fs.writeFileSync(stale, JSON.stringify({ pid: 2 ** 22 + 4321, host: os.hostname() }));
  const garbled = path.join(dir, 'garbled.lock');
  fs.writeFileSync(garbled, '{not json');
  const empty = path.join(dir, 'empty.lock');
  fs.writeFileSync(empty, '');
  fs.utimesSync(empty, new Date(0), new Date(0));
  const wait = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
  for (const f of [stale, garbled, empty]) t.equal(await withLock(f, wait, async () => 'ran'), 'ran', `${path.basename(f)}: taken over`);
  t.notOk(fs.existsSync(stale), 'released');
  // A live holder (this process) is waited for.
  const order: string[] = [];
  const held = path.join(dir, 'held.lock');
  await Promise.all([
    withLock(held, wait, async () => {
      order.push('first in');
      await wait(300);
      order.push('first out');
    }),
    wait(50).then(() => withLock(held, wait, async () => order.push('second'))),
  ]);
  t.same(order, ['first in', 'first out', 'second']);

  const parent = path.join(env.ggufCache, 'gguf', 'models--org--tiny', a.commit);
  const abandoned = path.join(parent, `.partial-f16-f16-${2 ** 22 + 4321}-1`);
  fs.mkdirSync(abandoned, { recursive: true });
  // Our own pid, but not a conversion of this process: a restarted container's dead predecessor.
  const samePid = path.join(parent, `.partial-f16-f16-${process.pid}-${hostTag()}-7`);
  fs.mkdirSync(samePid);
  // Another host's (a shared disk): its pid means nothing here; kept while recent, removed when old.
  const otherHostRecent = path.join(parent, `.partial-f16-f16-${2 ** 22 + 4321}-${hostTag('another-host')}-1`);
  const otherHostOld = path.join(parent, `.partial-f16-f16-${2 ** 22 + 4321}-${hostTag('another-host')}-2`);
  for (const d of [otherHostRecent, otherHostOld]) {
    fs.mkdirSync(d);
    fs.writeFileSync(path.join(d, 'part.gguf'), 'x');
  }
  const old = new Date(Date.now() - 2 * 3600_000);
  for (const f of [path.join(otherHostOld, 'part.gguf'), otherHostOld]) fs.utimesSync(f, old, old);
  await pull({ repo: 'org/tiny', type: 'f16', visionType: 'f16' });
  t.notOk(fs.existsSync(abandoned), "a dead process's conversion folder is removed");
  t.notOk(fs.existsSync(samePid), 'one with our pid that this process is not building is removed');
  t.ok(fs.existsSync(otherHostRecent), "another host's recent one is kept");
  t.notOk(fs.existsSync(otherHostOld), "another host's one untouched for hours is removed");
});

/** A `wait` for withLock that gives up (rejects) after `n` waits, so a lock waited on for ever fails the test instead of hanging it. */
function boundedWait(n = 20) {
  const w = Object.assign(
    async (ms: number) => {
      if (++w.waits > n) throw new Error(`still waiting after ${n} tries`);
      await new Promise<void>((r) => setTimeout(r, Math.min(ms, 20)));
    },
    { waits: 0 },
  );
  return w;
}

t.test('locks: stale ones (unrefreshed, any host; our pid but not ours) are taken over once; a live one is waited for, and said so', async (t) => {
  const dir = tmpDir();
  const old = new Date(Date.now() - 120_000);

  await t.test("a container restarted with a new hostname: the old one's lock, not refreshed for two minutes", async (t) => {
    const foreign = path.join(dir, 'foreign.lock');
    fs.writeFileSync(foreign, JSON.stringify({ pid: 1, host: 'some-container-that-died' }));
    fs.utimesSync(foreign, old, old);
    t.equal(await withLock(foreign, boundedWait(), async () => 'ran'), 'ran', 'a foreign lock not refreshed for a while is taken over');
  });

  await t.test('a container restarted with the same pid as the process that died: our pid, but not held by us', async (t) => {
    const samePid = path.join(dir, 'same-pid.lock');
    fs.writeFileSync(samePid, JSON.stringify({ pid: process.pid, host: os.hostname() }));
    t.equal(await withLock(samePid, boundedWait(), async () => 'ran'), 'ran', 'a fresh lock with our pid that this process does not hold is taken over');
    t.notOk(fs.existsSync(samePid), 'released');
  });

  // A fresh lock of another host: waited for (said once), then taken once released.
  const live = path.join(dir, 'live.lock');
  fs.writeFileSync(live, JSON.stringify({ pid: 1, host: 'another-host' }));
  const told: string[] = [];
  const wait = boundedWait(50);
  const waiting = withLock(
    live,
    async (ms) => {
      if (wait.waits === 5) fs.rmSync(live); // the other host's pull ends
      await wait(ms);
    },
    async () => 'ran after it',
    { onWait: (owner) => told.push(owner) },
  );
  t.equal(await waiting, 'ran after it');
  t.ok(wait.waits >= 5, `waited (${wait.waits} tries)`);
  t.equal(told.length, 1, 'said once');
  t.match(told[0], /process 1 on another-host \(lock .*live\.lock\)/);

  // The holder refreshes the lock's mtime while it holds it.
  const beat = path.join(dir, 'beat.lock');
  await withLock(
    beat,
    boundedWait(),
    async () => {
      fs.utimesSync(beat, old, old);
      await new Promise((r) => setTimeout(r, 150));
      t.ok(Date.now() - fs.statSync(beat).mtimeMs < 10_000, 'the heartbeat refreshed it');
    },
    { heartbeatMs: 20 },
  );

  // Several waiters find the same stale lock at once: exactly one holds it at a time, each runs once
  // (rounds, since the interleavings that matter are a matter of timing).
  const shared = path.join(dir, 'shared.lock');
  let inside = 0;
  let most = 0;
  for (let round = 0; round < 10; ++round) {
    fs.writeFileSync(shared, JSON.stringify({ pid: 2 ** 22 + 4321, host: os.hostname() }));
    const ran = await Promise.all(
      [1, 2, 3, 4, 5, 6].map((i) =>
        withLock(shared, boundedWait(500), async () => {
          most = Math.max(most, ++inside);
          await new Promise((r) => setTimeout(r, 2 + (i % 3)));
          inside--;
          return i;
        }),
      ),
    );
    if (ran.join() !== '1,2,3,4,5,6') t.fail(`round ${round}: ran ${ran.join()}`);
  }
  t.equal(most, 1, 'never two holders (10 rounds of 6 waiters)');
  t.same(
    fs.readdirSync(dir).filter((f) => f.startsWith('shared')),
    [],
    'nothing left beside it',
  );
});

t.test('a pull waiting on another process downloading the same file says so through onProgress, then goes on', async (t) => {
  const env = hubEnv(t, server);
  const lock = path.join(env.hubCache, '.locks', 'models--org--tiny', `${sha256(tiny['model.safetensors']!)}.paligemma.lock`);
  fs.mkdirSync(path.dirname(lock), { recursive: true });
  fs.writeFileSync(lock, JSON.stringify({ pid: 1, host: 'another-host' }));
  const waits: string[] = [];
  // Removed after a while in any case, so that a pull that waits without a word fails the test rather than hangs it.
  const fallback = setTimeout(() => fs.rmSync(lock, { force: true }), 3000);
  t.teardown(() => clearTimeout(fallback));
  const res = await pull({
    repo: 'org/tiny',
    ...SMALL,
    onProgress: (p) => {
      if (p.phase === 'download' && p.waitingFor) {
        waits.push(p.waitingFor);
        setTimeout(() => fs.rmSync(lock, { force: true }), 100); // the other pull ends
      }
    },
  });
  t.equal(waits.length, 1, 'said once');
  t.match(waits[0], /another download of model\.safetensors: process 1 on another-host/);
  t.ok(fs.existsSync(res.model));
});

t.test('an onProgress that throws ends the pull with its own error, not retried', async (t) => {
  hubEnv(t, server);
  const mine = new Error('the caller gives up');
  const mark = server.fileRequests('model.safetensors').length;
  const err = await pull({
    repo: 'org/tiny',
    ...SMALL,
    onProgress: (p) => {
      if (p.phase === 'download' && p.file === 'model.safetensors' && p.bytesDone > 0) throw mine;
    },
  }).catch((e: unknown) => e);
  t.equal(err, mine, 'the very error thrown');
  t.ok(server.fileRequests('model.safetensors').length - mark <= 2, 'no retries (one request, maybe its redirect)');
});

t.test('writeRef: two at once in one process both land; a failure is a PaliGemmaError', async (t) => {
  const hub = tmpDir();
  const ref = { type: 'model' as const, name: 'org/tiny', revision: 'main' };
  const commit = 'a'.repeat(40);
  await Promise.all([1, 2, 3, 4].map(() => writeRef(hub, ref, commit)));
  t.equal(fs.readFileSync(path.join(repoDir(hub), 'refs', 'main'), 'utf8'), commit);
  t.same(fs.readdirSync(path.join(repoDir(hub), 'refs')), ['main'], 'no temporary file left');
  fs.rmSync(path.join(repoDir(hub), 'refs'), { recursive: true });
  fs.writeFileSync(path.join(repoDir(hub), 'refs'), 'not a folder');
  await t.rejects(writeRef(hub, ref, commit), { name: 'PaliGemmaError', code: 'ERR_WRITE', message: /refs.main: cannot record the commit of main/ });
});

t.test('gated repos: no token, a refused token, a token from HF_TOKEN or the login file; the token never leaves the hub', async (t) => {
  const token = 'hf_testtokenAcceptedLicense42';
  server.addRepo({ id: 'google/gated-tiny', files: tiny, gated: true, tokens: [token], echoAuthorization: true });
  await t.test('without a token', async (t) => {
    hubEnv(t, server);
    const err = (await pull({ repo: 'google/gated-tiny', ...SMALL }).catch((e: unknown) => e)) as PaliGemmaError;
    t.equal(err.code, 'ERR_AUTH');
    t.match(err.message, 'google/gated-tiny is gated: accept its license at');
    t.match(err.message, `${server.url}/google/gated-tiny`);
    t.match(err.message, /HF_TOKEN=hf_\.\.\..*hf auth login/);
  });
  await t.test('a token without access', async (t) => {
    hubEnv(t, server, { HF_TOKEN: 'hf_someoneElsesTokenNotAccepted' });
    const err = (await pull({ repo: 'google/gated-tiny', ...SMALL }).catch((e: unknown) => e)) as PaliGemmaError;
    t.equal(err.code, 'ERR_AUTH');
    t.match(err.message, /the access token has no access to this repo: accept the license at .*google\/gated-tiny with the account the token belongs to/);
    t.notMatch(err.message, 'someoneElses', 'the token is not in the message, though the server echoed it');
    t.notMatch(String(err.stack), 'someoneElses');
  });
  await t.test('HF_TOKEN', async (t) => {
    hubEnv(t, server, { HF_TOKEN: token });
    const before = server.requests.length;
    await pull({ repo: 'google/gated-tiny', ...SMALL });
    const reqs = since(before);
    t.ok(
      reqs.filter((r) => r.server === 'hub').every((r) => r.authorized),
      'the hub gets the token',
    );
    t.ok(
      reqs.filter((r) => r.server === 'cdn').every((r) => !r.authorized),
      'the CDN an LFS file redirects to never does',
    );
    t.ok(reqs.some((r) => r.server === 'cdn'));
  });
  await t.test('the token file huggingface_hub writes', async (t) => {
    const env = hubEnv(t, server);
    fs.mkdirSync(env.hfHome, { recursive: true });
    fs.writeFileSync(path.join(env.hfHome, 'token'), `${token}\n`);
    const res = await pull({ repo: 'google/gated-tiny', ...SMALL });
    t.ok(res.converted);
  });
});

t.test('offline: only the cache, with a clear error for what it lacks', async (t) => {
  const env = hubEnv(t, server, { HF_HUB_OFFLINE: '1' });
  const before = server.requests.length;
  const err = (await pull({ repo: 'org/tiny', ...SMALL }).catch((e: unknown) => e)) as PaliGemmaError;
  t.equal(err.code, 'ERR_FILE_NOT_FOUND');
  t.match(err.message, /HF_HUB_OFFLINE is set and the revision "main" of org\/tiny@main is not in the cache .*paligemma pull org\/tiny/);
  t.equal(server.requests.length, before, 'no request');

  delete process.env.HF_HUB_OFFLINE;
  const online = await pull({ repo: 'org/tiny', ...SMALL });
  process.env.HF_HUB_OFFLINE = '1';
  const mark = server.requests.length;
  const offline = await pull({ repo: 'org/tiny', ...SMALL });
  t.equal(offline.model, online.model, 'the cached pair');
  const converted = await pull({ repo: 'org/tiny', type: 'f16', visionType: 'f16' });
  t.ok(converted.converted, 'another type converted from the cached checkpoint');
  t.equal(server.requests.length, mark, 'no request offline');

  fs.rmSync(path.join(repoDir(env.hubCache), 'blobs', sha256(tiny['model.safetensors']!)));
  await t.rejects(pull({ repo: 'org/tiny', type: 'q8_0', visionType: 'f16' }), {
    code: 'ERR_FILE_NOT_FOUND',
    message: /HF_HUB_OFFLINE is set and the checkpoint at [0-9a-f]{12} of org\/tiny@main is not in the cache/,
  });
  t.equal(server.requests.length, mark);
});

t.test('hostile listings: unsafe names are never requested or written; nothing outside the cache', async (t) => {
  const entry = (p: string) => ({ type: 'file', oid: 'b'.repeat(40), size: 10, path: p });
  server.addRepo({
    id: 'evil/names',
    files: tiny,
    extraEntries: [
      entry('../escape.json'),
      entry('/etc/escape'),
      entry('a\\..\\..\\escape.safetensors'),
      entry('nul\u0000escape.json'),
      entry('..'),
      entry('C:/escape.json'),
      entry('./config.json'),
      { ...entry('x//escape.json') },
    ],
  });
  const env = hubEnv(t, server);
  const before = server.requests.length;
  const res = await pull({ repo: 'evil/names', ...SMALL });
  t.ok(res.converted, 'the usable files still make a checkpoint');
  t.notOk(
    since(before).some((r) => decodeURIComponent(r.url).includes('escape')),
    'no unsafe name requested',
  );
  const all = fs.readdirSync(env.root, { recursive: true }).map(String);
  t.notOk(
    all.some((f) => f.includes('escape')),
    'no unsafe name written',
  );

  await t.test('an index naming a shard outside the folder', async (t) => {
    const index = Buffer.from(JSON.stringify({ metadata: {}, weight_map: { 'a.weight': '../../outside.safetensors' } }));
    const { 'model.safetensors': _, ...rest } = tiny;
    server.addRepo({ id: 'evil/index', files: { ...rest, 'model.safetensors.index.json': index } });
    hubEnv(t, server);
    const mark = server.requests.length;
    await t.rejects(pull({ repo: 'evil/index', ...SMALL }), {
      code: 'ERR_INVALID_FILE',
      message: /names the shard "\.\.\/\.\.\/outside\.safetensors".*refused/,
    });
    t.notOk(since(mark).some((r) => r.url.includes('outside')));
  });
  await t.test('sizes and hashes that are not', async (t) => {
    hubEnv(t, server);
    server.addRepo({ id: 'evil/size', files: tiny, rewriteListing: (e) => e.map((x) => (x.path === 'config.json' ? { ...x, size: -5 } : x)) });
    await t.rejects(pull({ repo: 'evil/size', ...SMALL }), { code: 'ERR_INVALID_FILE', message: /"config\.json" has no valid size/ });
    server.addRepo({ id: 'evil/oid', files: tiny, rewriteListing: (e) => e.map((x) => (x.path === 'config.json' ? { ...x, oid: '../../x' } : x)) });
    await t.rejects(pull({ repo: 'evil/oid', ...SMALL }), { code: 'ERR_INVALID_FILE', message: /"config\.json" has no valid git object id/ });
    server.addRepo({ id: 'evil/sha', files: tiny, info: (i) => ({ ...i, sha: '../../../../etc' }) });
    await t.rejects(pull({ repo: 'evil/sha', ...SMALL }), { code: 'ERR_INVALID_FILE', message: /no commit hash/ });
  });
  await t.test('a listing that promises more than the disk holds', async (t) => {
    hubEnv(t, server);
    server.addRepo({
      id: 'evil/huge',
      files: tiny,
      rewriteListing: (e) => e.map((x) => (x.path === 'model.safetensors' ? { ...x, size: 4e15, lfs: { ...(x.lfs as object), size: 4e15 } } : x)),
    });
    const mark = server.requests.length;
    await t.rejects(pull({ repo: 'evil/huge', ...SMALL }), {
      code: 'ERR_WRITE',
      message: /not enough disk space in .*: needs about [\d.]+ PB \(the download of evil\/huge [\d.]+ PB/,
    });
    t.same(
      since(mark).filter((r) => r.url.includes('model.safetensors') || r.server === 'cdn'),
      [],
      'checked before downloading',
    );
  });
});

t.test('a server sending more bytes than the listing announced is cut off', async (t) => {
  for (const chunked of [false, true]) {
    await t.test(chunked ? 'without a Content-Length' : 'with a larger Content-Length', async (t) => {
      const env = hubEnv(t, server);
      server.faults.push({ file: 'model.safetensors', kind: 'inflate', extraBytes: 3_000_000, chunked });
      const before = server.requests.length;
      const err = (await pull({ repo: 'org/tiny', ...SMALL }).catch((e: unknown) => e)) as PaliGemmaError;
      t.equal(err.code, 'ERR_INVALID_FILE');
      t.match(
        err.message,
        chunked ? /sent more than the \d+ bytes the listing announced: cut off/ : /announces \d+ bytes, more than the \d+ the listing promised: refused/,
      );
      t.equal(since(before).filter((r) => r.server === 'cdn' && r.url.includes(sha256(tiny['model.safetensors']!))).length, 1, 'not retried');
      t.notOk(
        fs.readdirSync(path.join(repoDir(env.hubCache), 'blobs')).some((b) => b.startsWith(sha256(tiny['model.safetensors']!))),
        'nothing kept',
      );
    });
  }
});

t.test('a sharded checkpoint: the index, then the shards it names', async (t) => {
  const dir = tmpDir();
  const src = path.join(dir, 'model.safetensors');
  const names: string[] = [];
  fs.writeFileSync(src, tiny['model.safetensors']!);
  rewriteSafetensors(src, (name, e, data) => {
    names.push(name);
    return { ...e, data };
  });
  const shards: Record<string, Buffer> = {};
  const weightMap = Object.fromEntries(names.map((n, i) => [n, `model-0000${i < names.length / 2 ? 1 : 2}-of-00002.safetensors`]));
  for (const shard of ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']) {
    const f = path.join(dir, shard);
    fs.writeFileSync(f, tiny['model.safetensors']!);
    rewriteSafetensors(f, (name, e, data) => (weightMap[name] === shard ? { ...e, data } : null));
    shards[shard] = fs.readFileSync(f);
  }
  const { 'model.safetensors': _, ...rest } = tiny;
  server.addRepo({
    id: 'org/sharded',
    files: {
      ...rest,
      ...shards,
      'model.safetensors.index.json': Buffer.from(JSON.stringify({ metadata: {}, weight_map: weightMap })),
      'extra.safetensors': Buffer.alloc(64),
    },
  });
  hubEnv(t, server);
  const res = await pull({ repo: 'org/sharded', ...SMALL });
  t.equal(server.fileRequests('extra.safetensors').length, 0, 'a safetensors file the index does not name is not fetched');
  const tensors = (await readGGUF(res.model, { maxArrayLength: 0 })).tensors.length;
  const unsharded = (await readGGUF((await pull({ repo: 'org/tiny', ...SMALL })).model, { maxArrayLength: 0 })).tensors.length;
  t.equal(tensors, unsharded, 'the shards make the same model');
});

t.test('the mask decoder from a hub repo (a Space, say) or a local file', async (t) => {
  const npz = fs.readFileSync(path.join(FIXTURES, 'vae', 'vae.npz'));
  server.addRepo({ id: 'big-vision/paligemma', type: 'space', files: { 'vae-oid.npz': npz, 'app.py': Buffer.from('print(1)\n') } });
  const env = hubEnv(t, server);
  const res = await pull({ repo: 'org/tiny', ...SMALL, segDecoder: 'hf://spaces/big-vision/paligemma/vae-oid.npz' });
  t.equal((await readGGUF(res.mmproj, { maxArrayLength: 0 })).metadata['paligemma.has_seg_decoder'], true);
  t.ok(fs.existsSync(path.join(env.hubCache, 'spaces--big-vision--paligemma', 'snapshots')), 'in the cache as huggingface_hub keeps a Space');
  t.match(path.basename(path.dirname(res.model)), /^f32-f32-seg-[0-9a-f]{12}$/);
  const local = await pull({ repo: 'org/tiny', ...SMALL, segDecoder: path.join(FIXTURES, 'vae', 'vae.npz') });
  t.equal(local.model, res.model, 'the same decoder bytes: the same pair');
  await t.rejects(pull({ repo: 'org/tiny', ...SMALL, segDecoder: 'hf://spaces/big-vision/paligemma/nope.npz' }), {
    code: 'ERR_FILE_NOT_FOUND',
    message: /no file "nope\.npz"/,
  });
  await t.rejects(pull({ repo: 'org/tiny', ...SMALL, segDecoder: path.join(env.root, 'missing.npz') }), { code: 'ERR_FILE_NOT_FOUND' });
});

t.test('errors name the repo and what is wrong', async (t) => {
  hubEnv(t, server);
  await t.rejects(pull({ repo: 'org/nope', ...SMALL }), {
    code: 'ERR_FILE_NOT_FOUND',
    message: /org\/nope: no such model repo on http:\/\/127\.0\.0\.1:\d+ \(if it is private/,
  });
  await t.rejects(pull({ repo: 'org/tiny@v9', ...SMALL }), { code: 'ERR_FILE_NOT_FOUND', message: /org\/tiny: no revision "v9"/ });
  for (const bad of ['tiny', 'a/b/c', 'org--x/y', '../x', 'org/name@..', 'org/na me', 'org/-x', 'org/x.']) {
    await t.rejects(pull({ repo: bad }), { code: 'ERR_INVALID_ARGUMENT' }, bad);
  }
  await t.rejects(pull({ repo: 'org/tiny', type: 'q3' as never }), { code: 'ERR_INVALID_ARGUMENT', message: /options\.type/ });
  await t.rejects(pull({ repo: 'org/tiny', bogus: 1 } as never), { code: 'ERR_INVALID_ARGUMENT', message: /unknown option 'bogus'/ });
  await t.rejects(pull({ repo: 'org/tiny@v1', revision: 'v2' }), { code: 'ERR_INVALID_ARGUMENT', message: /options\.revision/ });
  await t.rejects(pull({ repo: 'org/tiny', endpoint: 'ftp://x' }), { code: 'ERR_INVALID_ARGUMENT', message: /not an http\(s\) URL/ });
  server.faults.push({ file: 'config.json', kind: 'status', status: 404 });
  await t.rejects(pull({ repo: 'org/tiny', ...SMALL }), { code: 'ERR_FILE_NOT_FOUND', message: /config\.json: not found in org\/tiny/ });
});

t.test('transient failures are retried with backoff; a hub out of reach falls back to the cache', async (t) => {
  const repo = { type: 'model' as const, name: 'org/tiny', revision: 'main' };
  let calls = 0;
  const err = (await withRetries({ endpoint: server.url, repo, attempts: 3, retryDelayMs: 1 }, 'fetching x', async () => {
    calls++;
    throw new TypeError('fetch failed', { cause: { code: 'ECONNRESET' } });
  }).catch((e: unknown) => e)) as PaliGemmaError;
  t.equal(calls, 3);
  t.equal(err.code, 'ERR_NETWORK');
  t.match(err.message, /fetching x: failed 3 times, last: fetch failed \(ECONNRESET\); check the connection/);

  server.faults.push({ file: 'config.json', kind: 'status', status: 503, times: 2 });
  const env = hubEnv(t, server);
  const mark = server.fileRequests('config.json').length;
  const res = await pull({ repo: 'org/tiny', ...SMALL });
  t.equal(server.fileRequests('config.json').length - mark, 3, '503 twice, then the file');

  // The hub goes away: pull uses the commit the cache recorded.
  const down = await startHubServer();
  const url = down.url;
  await down.close();
  process.env.HF_ENDPOINT = url;
  const offline = await pull({ repo: 'org/tiny', ...SMALL });
  t.equal(offline.model, res.model, 'the cached pair');
  fs.rmSync(path.join(repoDir(env.hubCache), 'refs'), { recursive: true });
  await t.rejects(pull({ repo: 'org/tiny', ...SMALL }), { code: 'ERR_NETWORK', message: /failed 5 times/ });
});

t.test('the listing pages through Link headers; the cache layout for other revisions', async (t) => {
  const env = hubEnv(t, server);
  server.pageSize = 2;
  t.teardown(() => {
    server.pageSize = 1000;
  });
  server.addRepo({ id: 'org/tagged', files: tiny, revisions: ['v1', 'refs/pr/1'] });
  const res = await pull({ repo: 'org/tagged', revision: 'refs/pr/1', ...SMALL });
  t.equal(
    fs.readFileSync(path.join(repoDir(env.hubCache, 'org/tagged'), 'refs', 'refs', 'pr', '1'), 'utf8'),
    res.commit,
    'refs/refs/pr/1, as huggingface_hub keeps it',
  );
  t.ok(
    server.requests.some((r) => r.url.includes('cursor=2')),
    'the second page was asked for',
  );
  const client = { endpoint: server.url, repo: { type: 'model' as const, name: 'org/tagged', revision: 'v1' } };
  const again = await fetchCheckpoint(client, res.commit, { hubCache: env.hubCache });
  t.equal(again.downloaded, 0, 'all cached');
});

t.test('the loopback hub answers HEAD as huggingface.co does (what the client relies on)', async (t) => {
  const commit = server.commitOf('org/tiny');
  const plain = await fetch(`${server.url}/org/tiny/resolve/main/config.json`, { method: 'HEAD', redirect: 'manual' });
  t.equal(plain.status, 200);
  t.equal(plain.headers.get('x-repo-commit'), commit);
  t.match(plain.headers.get('etag'), /^"[0-9a-f]{40}"$/, 'a plain file: its git blob id, quoted');
  const lfs = await fetch(`${server.url}/org/tiny/resolve/main/model.safetensors`, { method: 'HEAD', redirect: 'manual' });
  t.equal(lfs.status, 302);
  t.equal(lfs.headers.get('x-linked-etag'), `"${sha256(tiny['model.safetensors']!)}"`, 'an LFS file: its SHA-256');
  t.equal(lfs.headers.get('x-linked-size'), String(tiny['model.safetensors']!.length));
  t.match(lfs.headers.get('location'), new RegExp(`^${server.cdnUrl}/lfs/[0-9a-f]{64}\\?`));
  const range = await fetch(lfs.headers.get('location')!, { headers: { range: 'bytes=10-19' } });
  t.equal(range.status, 206);
  t.equal(range.headers.get('content-range'), `bytes 10-19/${tiny['model.safetensors']!.length}`);
  t.same(Buffer.from(await range.arrayBuffer()), tiny['model.safetensors']!.subarray(10, 20));
  const gated = await fetch(`${server.url}/google/gated-tiny/resolve/main/config.json`, { method: 'HEAD' });
  t.same([gated.status, gated.headers.get('x-error-code')], [401, 'GatedRepo']);
});
