// The server under load and faults: requests queue in order, a full queue answers 429, a client
// that disconnects stops its generation (and the queue moves on), concurrent clients get what
// sequential ones would, close() lets accepted requests finish, and the model may still be loading.
import net from 'node:net';
import t from 'tap';
import { createServer, PaliGemma } from '../lib/index';
import type { NativeGenerateResult } from '../lib/native/contract';
import { JobQueue, QueueFullError } from '../lib/server/queue';
import { convertedFixture } from './helpers/fixtures';
import { chat, deferred, get, PNG, PNG_DATA_URL, parseSse, post, readUntil, sleep, waitFor } from './helpers/http';
import { spyNative } from './helpers/spy';

// The tiny model decodes about a token per millisecond: 3000 tokens make a generation that lasts.
const LONG = 3000;

t.test('the queue: order, bound, aborts', async (t) => {
  const q = new JobQueue(1);
  const order: string[] = [];
  const gate = deferred<void>();
  const none = new AbortController().signal;
  const a = q.run(none, async () => {
    order.push('a');
    await gate.promise;
    return 'a';
  });
  const b = q.run(none, async () => {
    order.push('b');
    return 'b';
  });
  t.equal(q.running, 1);
  t.equal(q.queued, 1);
  const full = await q.run(none, async () => 'c').catch((e: unknown) => e);
  t.ok(full instanceof QueueFullError, 'one may wait: the next is refused');
  t.ok((full as QueueFullError).retryAfterSeconds >= 1, 'with a retry time');
  const gone = new AbortController();
  const q2 = new JobQueue(5);
  const held = q2.run(none, () => gate.promise);
  const waiting = q2.run(gone.signal, async () => t.fail('an aborted job never runs'));
  gone.abort();
  await t.rejects(waiting, { name: 'AbortError', message: /while waiting/ });
  t.equal(q2.queued, 0, 'an aborted job leaves the queue');
  await t.rejects(
    q2.run(gone.signal, async () => 1),
    { name: 'AbortError' },
    'an aborted signal never queues',
  );
  gate.resolve();
  t.same(await Promise.all([a, b, held]), ['a', 'b', undefined]);
  t.same(order, ['a', 'b'], 'in arrival order');
  t.equal(q.running, 0);
});

t.test('the server under load', async (t) => {
  const files = await convertedFixture('tiny-v2', 'f32', true);
  const model = await PaliGemma.load({ ...files, gpu: 'cpu', contextSize: 4096 });
  t.teardown(() => model.dispose());

  t.test('a full queue answers 429 with Retry-After; the queued request is served after', async (t) => {
    const server = createServer(model, { maxQueue: 1 });
    const url = await server.listen({ port: 0 });
    t.teardown(() => server.close());
    const health = async () => (await get(`${url}/health`)).json.queue;
    const ac = new AbortController();
    const a = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chat('caption en', { max_tokens: LONG, stream: true })),
      signal: ac.signal,
    });
    await readUntil(a, (text) => text.includes('\n\n'));
    t.equal((await health()).running, 1, 'one request runs');
    const b = post(`${url}/v1/caption`, { image: PNG_DATA_URL, max_tokens: 3 });
    await waitFor(async () => (await health()).waiting === 1, 10_000, 'the second request to wait');
    const c = await post(`${url}/v1/caption`, { image: PNG_DATA_URL, max_tokens: 3 });
    t.equal(c.status, 429);
    t.match(c.headers.get('retry-after'), /^\d+$/);
    t.ok(Number(c.headers.get('retry-after')) >= 1);
    t.match(c.json.error, { type: 'rate_limit_error', code: 'queue_full', message: /queue is full \(1 requests waiting/ });
    ac.abort(); // the long one is not needed any more
    const rb = await b;
    t.equal(rb.status, 200);
    t.equal(rb.json.text, await model.caption(PNG, { maxTokens: 3 }));
  });

  t.test('a client that disconnects stops its generation; the next request is served promptly', async (t) => {
    const server = createServer(model);
    const url = await server.listen({ port: 0 });
    t.teardown(() => server.close());
    const spy = spyNative(model);
    t.teardown(spy.restore);
    const ac = new AbortController();
    const res = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chat('caption en', { max_tokens: LONG, stream: true })),
      signal: ac.signal,
    });
    // The role chunk, then at least one token: the generation runs.
    await readUntil(res, (text) => text.split('\n\n').length > 3);
    ac.abort();
    const t0 = performance.now();
    const next = await post(`${url}/v1/caption`, { image: PNG_DATA_URL, max_tokens: 3 });
    const waited = performance.now() - t0;
    t.equal(next.status, 200);
    t.ok(waited < 1500, `served ${waited.toFixed(0)} ms after the disconnect (the dropped generation had ~${LONG} tokens to go)`);
    const generate = spy.calls.filter((c) => c.name === 'generate');
    await waitFor(() => generate[0]!.result !== undefined, 5000, 'the native result');
    const dropped = generate[0]!.result as NativeGenerateResult;
    t.equal(dropped.stopReason, 'abort', 'the native generation was aborted');
    t.ok(dropped.tokens.length < LONG, `after ${dropped.tokens.length} of ${LONG} tokens`);

    // A request still waiting in the queue leaves it when its client goes, and never runs.
    const first = new AbortController();
    const running = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chat('caption en', { max_tokens: LONG, stream: true })),
      signal: first.signal,
    });
    // A token, not only the role chunk: the native generation has started (the spy has seen it).
    await readUntil(running, (text) => text.split('\n\n').length > 3);
    const second = new AbortController();
    const queued = fetch(`${url}/v1/caption`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ image: PNG_DATA_URL, max_tokens: 3 }),
      signal: second.signal,
    }).catch((e: unknown) => e);
    await waitFor(async () => (await get(`${url}/health`)).json.queue.waiting === 1, 5000, 'the queued request');
    const callsBefore = spy.calls.filter((c) => c.name === 'generate').length;
    second.abort();
    await queued;
    await waitFor(async () => (await get(`${url}/health`)).json.queue.waiting === 0, 5000, 'the queue to empty');
    first.abort();
    await waitFor(async () => (await get(`${url}/health`)).json.queue.running === 0, 5000, 'the model to be free');
    t.equal(spy.calls.filter((c) => c.name === 'generate').length, callsBefore, 'the abandoned request never reached the model');
  });

  t.test('concurrent clients get the results of sequential ones', async (t) => {
    const server = createServer(model);
    const url = await server.listen({ port: 0 });
    t.teardown(() => server.close());
    const requests: [string, object][] = [
      ['/v1/chat/completions', chat('caption en', { max_tokens: 20, temperature: 1, seed: 1 })],
      ['/v1/detect', { image: PNG_DATA_URL, labels: 'cat', max_tokens: 40, temperature: 1, seed: 3 }],
      ['/v1/chat/completions', chat('detect dog', { max_tokens: 20, temperature: 0.8, seed: 2, stream: true })],
      ['/v1/caption', { image: PNG_DATA_URL, max_tokens: 8 }],
      ['/v1/answer', { image: PNG_DATA_URL, question: 'what?', max_tokens: 8, stream: true }],
      ['/v1/chat/completions', chat('ocr', { max_tokens: 20, temperature: 1.2, seed: 9 })],
      ['/v1/detect', { image: PNG_DATA_URL, labels: ['dog', 'cat'], max_tokens: 40, temperature: 1, seed: 4 }],
    ];
    // What the response says, without what varies from call to call (ids, times).
    const essence = (r: { status: number; text: string; json: unknown }) => {
      if (r.status !== 200) return { status: r.status, text: r.text };
      if (r.json === undefined) {
        return parseSse(r.text).map((e) => {
          if (e.data === '[DONE]') return e.data;
          const d = JSON.parse(e.data);
          return d.choices ? d.choices.map((c: { delta: unknown; finish_reason: unknown }) => [c.delta, c.finish_reason]) : (d.text ?? d.detections);
        });
      }
      const j = r.json as { choices?: { message: unknown }[]; text?: string; detections?: unknown };
      return j.choices ? j.choices.map((c) => c.message) : { text: j.text, detections: j.detections };
    };
    const sequential = [];
    for (const [route, body] of requests) sequential.push(essence(await post(`${url}${route}`, body)));
    for (let round = 0; round < 2; round++) {
      const concurrent = await Promise.all(requests.map(([route, body]) => post(`${url}${route}`, body)));
      t.same(concurrent.map(essence), sequential, `round ${round + 1}: ${requests.length} clients at once`);
    }
  });

  t.test('close() lets the accepted requests finish, refuses new ones, then resolves', async (t) => {
    const server = createServer(model);
    const url = await server.listen({ port: 0 });
    const streaming = await fetch(`${url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(chat('caption en', { max_tokens: 800, stream: true })),
    });
    const start = await readUntil(streaming, (text) => text.split('\n\n').length > 2);
    const queued = post(`${url}/v1/caption`, { image: PNG_DATA_URL, max_tokens: 4 });
    await waitFor(async () => (await get(`${url}/health`)).json.queue.waiting === 1, 5000, 'the queued request');
    const closed = server.close();
    let closedYet = false;
    closed.then(() => (closedYet = true));
    const refused = await fetch(`${url}/health`).then(
      (r) => r.status,
      (e: Error) => e.message,
    );
    t.not(refused, 200, `a new request is refused (${refused})`);
    const rest = await readUntil(streaming, () => false);
    const events = parseSse(start + rest);
    t.equal(events.at(-1)!.data, '[DONE]', 'the running stream finished');
    t.equal(JSON.parse(events.at(-2)!.data).choices[0].finish_reason, 'length', 'with all its tokens');
    t.equal((await queued).status, 200, 'the queued request was served');
    await closed;
    t.ok(closedYet, 'close() resolved');
    t.equal(await server.close(), undefined, 'close() again: the same');
  });

  t.test('close() does not wait for a client that stalls in its body', async (t) => {
    const server = createServer(model);
    const url = new URL(await server.listen({ port: 0 }));
    t.equal(server.app.server.requestTimeout, 300_000, 'a request must arrive within 5 minutes');
    const stalled: net.Socket[] = [];
    let closedSockets = 0;
    for (const route of ['/v1/caption', '/v1/answer']) {
      const socket = net.connect(Number(url.port), url.hostname);
      socket.on('error', () => undefined);
      socket.on('close', () => closedSockets++);
      await new Promise((r) => socket.once('connect', r));
      const type = route === '/v1/caption' ? 'application/json' : 'multipart/form-data; boundary=x';
      socket.write(`POST ${route} HTTP/1.1\r\nHost: ${url.host}\r\nContent-Type: ${type}\r\nContent-Length: 100000\r\n\r\n-`);
      stalled.push(socket);
    }
    t.teardown(() => {
      for (const s of stalled) s.destroy();
    });
    await sleep(200); // the server has the headers and one byte of each body
    const t0 = performance.now();
    const closed = await Promise.race([server.close().then(() => 'closed'), sleep(5000).then(() => 'still open after 5 s')]);
    t.equal(closed, 'closed', 'close() resolved');
    t.ok(performance.now() - t0 < 1500, `promptly (${(performance.now() - t0).toFixed(0)} ms)`);
    await waitFor(() => closedSockets === 2, 2000, 'the stalled connections to close');
  });

  t.test('while the model loads: /health reports progress, model requests get 503 with Retry-After', async (t) => {
    const loading = deferred<PaliGemma>();
    const server = createServer(loading.promise);
    const url = await server.listen({ port: 0 });
    t.teardown(() => server.close());
    server.setLoadProgress(0.42);
    const h = await get(`${url}/health`);
    t.equal(h.status, 503);
    t.same(h.json, { status: 'loading', progress: 0.42 });
    const r = await post(`${url}/v1/chat/completions`, chat('caption en', { max_tokens: 2 }));
    t.equal(r.status, 503);
    t.equal(r.headers.get('retry-after'), '2');
    t.match(r.json.error, { code: 'model_loading', message: /the model is loading \(42%\)/ });
    t.equal((await get(`${url}/v1/models`)).json.data[0].id, 'paligemma', 'a generic id until the model is known');
    loading.resolve(model);
    await waitFor(async () => (await get(`${url}/health`)).status === 200, 5000, 'ready');
    t.equal((await get(`${url}/v1/models`)).json.data[0].id, 'tiny-v2-f32', "then the model file's name");
    t.equal((await post(`${url}/v1/caption`, { image: PNG_DATA_URL, max_tokens: 2 })).status, 200, 'served once loaded');

    const failed = createServer(Promise.reject(new Error('no such weights')));
    const furl = await failed.listen({ port: 0 });
    t.teardown(() => failed.close());
    await waitFor(async () => (await get(`${furl}/health`)).status === 500, 5000, 'the failure');
    t.same((await get(`${furl}/health`)).json, { status: 'error', error: 'no such weights' });
    t.match((await post(`${furl}/v1/ocr`, { image: PNG_DATA_URL })).json.error, { code: 'model_failed', message: /failed to load: no such weights/ });
    // With an API key /health (which needs none) does not show the error: it may name local paths.
    const keyed = createServer(Promise.reject(new Error('/home/me/secret/model.gguf: bad')), { apiKey: 'k' });
    const kurl = await keyed.listen({ port: 0 });
    t.teardown(() => keyed.close());
    await waitFor(async () => (await get(`${kurl}/health`)).status === 500, 5000, 'the failure');
    t.same((await get(`${kurl}/health`)).json, { status: 'error', error: 'the model failed to load' });
  });
});
