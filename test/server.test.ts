// The HTTP server against a real model (the tiny fixture) on 127.0.0.1: every endpoint, the SSE
// framing, the official OpenAI client, auth, and the 400s, 401s, 403s, 404s, 413s and 415s.
import http from 'node:http';
import OpenAI from 'openai';
import t from 'tap';
import { createServer, PaliGemma } from '../lib/index';
import { getBinding } from '../lib/native/binding';
import { convertedFixture } from './helpers/fixtures';
import { chat, get, PNG, PNG_DATA_URL, parseSse, post, rawRequest, read, waitFor } from './helpers/http';

t.test('the server over a real model', async (t) => {
  const files = await convertedFixture('tiny-v2', 'f32', true);
  const model = await PaliGemma.load({ ...files, gpu: 'cpu' });
  t.teardown(() => model.dispose());
  const server = createServer(model, { modelName: 'tiny' });
  const base = await server.listen({ port: 0 });
  t.teardown(() => server.close());
  t.match(base, /^http:\/\/127\.0\.0\.1:\d+$/, 'listens on 127.0.0.1 by default');

  t.test('/health, /v1/models, 404s', async (t) => {
    const h = await get(`${base}/health`);
    t.equal(h.status, 200);
    t.match(h.json, { status: 'ok', model: 'tiny', backend: 'CPU', segmentation: true, auth: false, queue: { running: 0, waiting: 0, maxWaiting: 16 } });
    const models = await get(`${base}/v1/models`);
    t.match(models.json, { object: 'list', data: [{ id: 'tiny', object: 'model', owned_by: 'paligemma-node' }] });
    t.equal((await get(`${base}/v1/models/tiny`)).json.id, 'tiny');
    const missing = await get(`${base}/v1/models/gpt-4o`);
    t.equal(missing.status, 404);
    t.match(missing.json.error, { type: 'not_found_error', code: 'model_not_found', message: /'gpt-4o'.*only 'tiny'/ });
    const nope = await get(`${base}/v1/nothing`);
    t.equal(nope.status, 404);
    t.match(nope.json.error.message, 'GET /v1/nothing: no such route');
    const page = await get(`${base}/`);
    t.equal(page.status, 200);
    t.match(page.headers.get('content-type'), /^text\/html/);
    t.match(page.headers.get('content-security-policy'), /default-src 'none'.*connect-src 'self'/, 'a policy that lets the page reach only this server');
    t.match(page.text, /<canvas id="canvas">/);
    t.notMatch(page.text, /<(script|link)[^>]+(src|href)="(https?:)?\/\//, 'no external assets');
  });

  t.test('chat completions: the generated text, usage, finish_reason; stream: the same text as OpenAI chunks', async (t) => {
    const expected = await model.generate({ image: PNG, prompt: 'caption en', maxTokens: 6 });
    const r = await post(`${base}/v1/chat/completions`, chat('caption en', { max_tokens: 6 }));
    t.equal(r.status, 200, r.text);
    t.match(r.json, {
      object: 'chat.completion',
      model: 'tiny',
      id: /^chatcmpl-/,
      choices: [{ index: 0, message: { role: 'assistant', content: expected.text }, finish_reason: 'length' }],
      usage: { prompt_tokens: expected.timings.promptTokens, completion_tokens: 6, total_tokens: expected.timings.promptTokens + 6 },
    });
    t.equal(typeof r.json.created, 'number');

    const s = await post(`${base}/v1/chat/completions`, chat('caption en', { max_tokens: 6, stream: true, stream_options: { include_usage: true } }));
    t.equal(s.status, 200);
    t.match(s.headers.get('content-type'), /^text\/event-stream/);
    t.equal(s.headers.get('cache-control'), 'no-cache');
    const events = parseSse(s.text);
    t.equal(events.at(-1)!.data, '[DONE]', 'ends with data: [DONE]');
    t.ok(
      events.every((e) => e.event === undefined),
      'unnamed events, as OpenAI sends',
    );
    const chunks = events.slice(0, -1).map((e) => JSON.parse(e.data));
    t.ok(
      chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === chunks[0].id && c.model === 'tiny'),
      'one id',
    );
    t.same(chunks[0].choices[0].delta, { role: 'assistant', content: '' }, 'the first delta names the role');
    const usageChunk = chunks.at(-1);
    t.same(usageChunk.choices, [], 'include_usage: a last chunk with usage and no choices');
    t.equal(usageChunk.usage.completion_tokens, 6);
    const finish = chunks.at(-2);
    t.same(finish.choices[0], { index: 0, delta: {}, logprobs: null, finish_reason: 'length' });
    const text = chunks
      .slice(1, -2)
      .map((c) => c.choices[0].delta.content)
      .join('');
    t.equal(text, expected.text, 'the chunks make up the text');

    // A string content, stop strings, sampling with a seed: the same as the API with those options.
    const seeded = await model.generate({ image: PNG, prompt: 'detect cat', maxTokens: 12, temperature: 1, seed: 7, topP: 0.9 });
    const c = await post(`${base}/v1/chat/completions`, chat('detect cat', { max_completion_tokens: 12, temperature: 1, seed: 7, top_p: 0.9, stop: null }));
    t.equal(c.json.choices[0].message.content, seeded.text, 'temperature, seed, top_p reach the model');
  });

  t.test('the official OpenAI client works unchanged', async (t) => {
    const keyed = createServer(model, { apiKey: 'sk-local-test', modelName: 'tiny' });
    const url = await keyed.listen({ port: 0 });
    t.teardown(() => keyed.close());
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'sk-local-test', maxRetries: 0 });
    const list = await client.models.list();
    t.same(
      list.data.map((m) => m.id),
      ['tiny'],
    );
    const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
      {
        role: 'user',
        content: [
          { type: 'image_url', image_url: { url: PNG_DATA_URL } },
          { type: 'text', text: 'answer en what is this?' },
        ],
      },
    ];
    const expected = await model.answer(PNG, 'what is this?', { maxTokens: 5 });
    const done = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 5 });
    t.equal(done.choices[0]!.message.content, expected);
    t.equal(done.usage?.completion_tokens, 5);
    const stream = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 5, stream: true });
    let streamed = '';
    let finish: string | null = null;
    for await (const chunk of stream) {
      streamed += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    t.equal(streamed, expected, 'streamed through the client');
    t.equal(finish, 'length');
    const bad = await client.chat.completions.create({ model: 'tiny', messages, max_tokens: 5, frequency_penalty: 1 }).catch((e: unknown) => e);
    t.ok(bad instanceof OpenAI.APIError, 'an API error');
    t.equal((bad as InstanceType<typeof OpenAI.APIError>).status, 400);
    t.match((bad as Error).message, /frequency_penalty: not supported/, 'the client shows the message');
    // What clients send by default, at its neutral value, is taken.
    const neutral = await client.chat.completions.create({
      model: 'tiny',
      messages: [{ role: 'system', content: '' }, ...messages],
      max_tokens: 5,
      frequency_penalty: 0,
      presence_penalty: 0,
      logprobs: false,
      response_format: { type: 'text' },
      parallel_tool_calls: true,
    });
    t.equal(neutral.choices[0]!.message.content, expected, 'neutral penalties, logprobs: false, text format, an empty system message');
    const obfuscation = await client.chat.completions.create({
      model: 'tiny',
      messages,
      max_tokens: 5,
      stream: true,
      stream_options: { include_usage: true, include_obfuscation: false },
    });
    for await (const _ of obfuscation);
    t.pass('stream_options.include_obfuscation is accepted');
    const wrongKey = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'nope', maxRetries: 0 });
    const denied = await wrongKey.models.list().catch((e: unknown) => e);
    t.ok(denied instanceof OpenAI.AuthenticationError, 'a wrong key: 401');
  });

  t.test('task endpoints: JSON and multipart, the same results as the API', async (t) => {
    const cap = await post(`${base}/v1/caption`, { image: PNG_DATA_URL, max_tokens: 5 });
    t.equal(cap.status, 200, cap.text);
    t.match(cap.json, { task: 'caption', model: 'tiny', text: await model.caption(PNG, { maxTokens: 5 }), image: { width: 150, height: 200 } });
    t.match(cap.json.timings, { queueMs: Number, totalMs: Number, tokens: 5, firstTokenMs: Number });
    const long = await post(`${base}/v1/caption`, { image: PNG_DATA_URL, max_tokens: 4, detail: 'long', lang: 'de' });
    t.equal(long.json.text, await model.caption(PNG, { maxTokens: 4, detail: 'long', lang: 'de' }), 'detail and lang');

    const form = new FormData();
    form.append('image', new Blob([PNG], { type: 'image/png' }), 'shapes.png');
    form.append('question', 'what is it?');
    form.append('max_tokens', '4');
    const ans = await read(await fetch(`${base}/v1/answer`, { method: 'POST', body: form }));
    t.equal(ans.status, 200, ans.text);
    t.match(ans.json, { task: 'answer', question: 'what is it?', text: await model.answer(PNG, 'what is it?', { maxTokens: 4 }) });

    const ocr = await post(`${base}/v1/ocr`, { image: PNG_DATA_URL, max_tokens: 3 });
    t.equal(ocr.json.text, await model.ocr(PNG, { maxTokens: 3 }));

    // Sampled, so that the tiny model draws boxes.
    const opts = { maxTokens: 40, temperature: 1, seed: 3 };
    const expected = await model.detect(PNG, ['cat', 'dog'], opts);
    t.ok(expected.length > 0, 'the tiny model finds something');
    const det = await post(`${base}/v1/detect`, { image: PNG_DATA_URL, labels: ['cat', 'dog'], max_tokens: 40, temperature: 1, seed: 3 });
    t.same(det.json.labels, ['cat', 'dog']);
    t.same(
      det.json.detections,
      expected.map(({ label, box, region }) => ({ label, box, region })),
      'boxes in source pixels, as the API gives them',
    );
    t.match(det.json.text, /<loc\d{4}>/, 'and the raw text');
    const detForm = new FormData();
    detForm.append('image', new Blob([PNG]), 'shapes.png');
    for (const [k, v] of Object.entries({ labels: 'cat ; dog', max_tokens: '40', temperature: '1', seed: '3' })) detForm.append(k, v);
    const det2 = await read(await fetch(`${base}/v1/detect`, { method: 'POST', body: detForm }));
    t.same(det2.json.detections, det.json.detections, "multipart: labels as 'a ; b', numbers as text");
    const imageField = new FormData();
    imageField.append('image', PNG_DATA_URL);
    imageField.append('labels', 'cat');
    imageField.append('stream', 'false');
    t.equal((await fetch(`${base}/v1/detect`, { method: 'POST', body: imageField })).status, 200, 'multipart with the image as a data URL field');

    const seg = await post(`${base}/v1/segment`, { image: PNG_DATA_URL, label: 'cat', max_tokens: 20 });
    t.equal(seg.status, 200, seg.text);
    t.equal(seg.json.segments.length, (await model.segment(PNG, 'cat', { maxTokens: 20 })).length, 'segment: what the API finds');
  });

  t.test('segment: masks as PNG data URLs or run lengths', async (t) => {
    // The tiny model never emits <seg> codes: a known segmentation stands in for the model's.
    const mask = { width: 150, height: 200, data: new Uint8Array(150 * 200) };
    for (let y = 20; y < 60; y++) mask.data.fill(255, y * 150 + 10, y * 150 + 50);
    const box = { x1: 10, y1: 20, x2: 50, y2: 60 };
    const real = model.segment;
    model.segment = async () => [{ label: 'cat', box, region: { left: 10, top: 20, width: 40, height: 40 }, mask, mask64: new Float32Array(4096) }];
    t.teardown(() => {
      model.segment = real;
    });
    const png = await post(`${base}/v1/segment`, { image: PNG_DATA_URL, label: 'cat' });
    t.equal(png.status, 200, png.text);
    const s = png.json.segments[0];
    t.match(s, { label: 'cat', box, region: { left: 10, top: 20, width: 40, height: 40 }, mask: /^data:image\/png;base64,/ });
    const decoded = await getBinding().binding.decodeImage(Buffer.from(s.mask.split(',')[1], 'base64'));
    t.same([decoded.width, decoded.height], [150, 200], 'the mask has the source size');
    t.same(Array.from(decoded.data.filter((_, i) => i % 3 === 0)), Array.from(mask.data), 'and its pixels');
    const rle = await post(`${base}/v1/segment`, { image: PNG_DATA_URL, label: 'cat', mask_format: 'rle' });
    const counts: number[] = rle.json.segments[0].mask.counts;
    t.match(rle.json.segments[0].mask, { width: 150, height: 200 });
    t.equal(
      counts.reduce((a, b) => a + b, 0),
      150 * 200,
      'run lengths cover the image',
    );
    t.equal(
      counts.filter((_, i) => i % 2 === 1).reduce((a, b) => a + b, 0),
      40 * 40,
      'the 255 runs are the mask',
    );
  });

  t.test('task streaming: text events, then the result', async (t) => {
    const r = await post(`${base}/v1/caption`, { image: PNG_DATA_URL, max_tokens: 5, stream: true });
    t.match(r.headers.get('content-type'), /^text\/event-stream/);
    const events = parseSse(r.text);
    const result = events.at(-1)!;
    t.equal(result.event, 'result');
    const texts = events.slice(0, -1);
    t.ok(
      texts.every((e) => e.event === 'text'),
      'text events before it',
    );
    t.equal(texts.map((e) => JSON.parse(e.data).text).join(''), JSON.parse(result.data).text, 'they make up the text');
    t.equal(JSON.parse(result.data).text, await model.caption(PNG, { maxTokens: 5 }));
  });

  t.test('bad requests: 400 with a message naming the problem', async (t) => {
    const fileUrl = {
      messages: [
        {
          role: 'user',
          content: [
            { type: 'image_url', image_url: { url: 'file:///etc/passwd' } },
            { type: 'text', text: 'x' },
          ],
        },
      ],
    };
    const cases: [string, string, unknown, RegExp][] = [
      ['malformed JSON', '/v1/caption', '{"image": ', /not valid JSON: .*(JSON|end)/i],
      ['an unknown field', '/v1/chat/completions', chat('caption en', { best_of: 2 }), /best_of: unknown field \(known here: model, messages/],
      ['a presence penalty', '/v1/chat/completions', chat('caption en', { presence_penalty: 0.5 }), /presence_penalty: not supported/],
      ['a frequency penalty', '/v1/chat/completions', chat('caption en', { frequency_penalty: -1 }), /frequency_penalty: not supported/],
      ['logprobs', '/v1/chat/completions', chat('caption en', { logprobs: true }), /logprobs: not supported/],
      [
        'a JSON response format',
        '/v1/chat/completions',
        chat('caption en', { response_format: { type: 'json_object' } }),
        /response_format: only \{ "type": "text" \} is supported/,
      ],
      [
        'an unknown nested field',
        '/v1/chat/completions',
        { messages: [{ role: 'user', content: 'x', tool_calls: [] }] },
        /messages\[0\]\.tool_calls: unknown field/,
      ],
      ['an unknown task field', '/v1/detect', { image: PNG_DATA_URL, labels: 'cat', threshold: 0.5 }, /threshold: unknown field/],
      ['a mistyped field', '/v1/chat/completions', chat('caption en', { max_tokens: '8' }), /max_tokens: must be an integer, got "8"/],
      ['out of range', '/v1/caption', { image: PNG_DATA_URL, temperature: 5 }, /temperature: must be <= 2/],
      ['a missing field', '/v1/answer', { image: PNG_DATA_URL }, /question: required/],
      ['a bad enum', '/v1/segment', { image: PNG_DATA_URL, label: 'cat', mask_format: 'gif' }, /mask_format: must be one of "png", "rle"/],
      ['a bad language', '/v1/caption', { image: PNG_DATA_URL, lang: 'english please' }, /lang: must match pattern/],
      ['a bad label', '/v1/detect', { image: PNG_DATA_URL, labels: ['cat', '<dog>'] }, /labels\[1\]: a label must be non-empty/],
      ['two labels to segment', '/v1/segment', { image: PNG_DATA_URL, label: 'cat ; dog' }, /label: segment takes one label/],
      [
        'not an image',
        '/v1/caption',
        { image: `data:image/png;base64,${Buffer.from('hello, world').toString('base64')}` },
        /image: not an image this server can read/,
      ],
      ['not base64', '/v1/caption', { image: 'data:image/png;base64,%%%' }, /image: the data URL's payload is not base64/],
      ['not a data URL', '/v1/caption', { image: 'data:image/png,abc' }, /image: the data URL must be base64/],
      ['a text data URL', '/v1/caption', { image: 'data:text/plain;base64,aGk=' }, /holds 'text\/plain', not an image/],
      ['a local path', '/v1/caption', { image: '/etc/passwd' }, /image: expected a data: URL \(local file paths are not accepted/],
      ['a file: URL', '/v1/chat/completions', fileUrl, /messages\[0\]\.content\[0\]\.image_url\.url: expected a data: URL/],
      [
        'a remote URL, not enabled',
        '/v1/caption',
        { image: 'http://127.0.0.1:1/x.png' },
        /does not fetch http\(s\) URLs \(start it with --allow-remote-images\)/,
      ],
      [
        'two messages',
        '/v1/chat/completions',
        { messages: [chat('a').messages[0], chat('b').messages[0]] },
        /messages: PaliGemma answers one prompt about one image.*2 messages/,
      ],
      [
        'a system message',
        '/v1/chat/completions',
        { messages: [{ role: 'system', content: 'be nice' }, chat('caption en').messages[0]] },
        /messages\[0\]: PaliGemma has no system prompt, so a 'system' message cannot be followed/,
      ],
      [
        'only an empty system message',
        '/v1/chat/completions',
        { messages: [{ role: 'system', content: ' ' }] },
        /exactly one message with role 'user' \(got 0 messages\)/,
      ],
      ['no image', '/v1/chat/completions', { messages: [{ role: 'user', content: 'caption en' }] }, /expected one image_url part .* got 0/],
      ['no text', '/v1/chat/completions', chat('  '), /no text: the text is PaliGemma's task prompt/],
      [
        'an image part without its URL',
        '/v1/chat/completions',
        { messages: [{ role: 'user', content: [{ type: 'image_url' }] }] },
        /content\[0\]\.image_url: required/,
      ],
      ['n > 1', '/v1/chat/completions', chat('caption en', { n: 2 }), /n: must be <= 1/],
    ];
    for (const [what, route, body, message] of cases) {
      const r = await post(`${base}${route}`, body);
      t.equal(r.status, 400, `${what}: 400`);
      t.match(r.json?.error, { type: 'invalid_request_error', message }, `${what}: ${r.json?.error?.message}`);
    }
    const form = new FormData();
    form.append('labels', 'cat');
    t.match((await read(await fetch(`${base}/v1/detect`, { method: 'POST', body: form }))).json.error.message, /image: required \(a file field named 'image'/);
    const twoImages = new FormData();
    twoImages.append('image', PNG_DATA_URL);
    twoImages.append('image', new Blob([PNG]), 'x.png');
    twoImages.append('labels', 'cat');
    t.match((await read(await fetch(`${base}/v1/detect`, { method: 'POST', body: twoImages }))).json.error.message, /either a file .* not both/);
    const wrongFile = new FormData();
    wrongFile.append('picture', new Blob([PNG]), 'x.png');
    t.match((await read(await fetch(`${base}/v1/caption`, { method: 'POST', body: wrongFile }))).json.error.message, /picture: unexpected file/);
    const badNumber = new FormData();
    badNumber.append('image', new Blob([PNG]), 'x.png');
    badNumber.append('max_tokens', 'many');
    t.match(
      (await read(await fetch(`${base}/v1/caption`, { method: 'POST', body: badNumber }))).json.error.message,
      /max_tokens: must be an integer, got "many"/,
    );
    const bare = await read(await fetch(`${base}/v1/caption`, { method: 'POST' }));
    t.equal(bare.status, 400, 'no body at all');
    t.match(bare.json.error.message, /body: send a JSON object/);
    t.match((await post(`${base}/v1/chat/completions`, '[1]')).json.error.message, /body: must be an object, got an array/);
    const plain = await post(`${base}/v1/caption`, 'hello', { 'content-type': 'text/plain' });
    t.equal(plain.status, 415, 'text/plain: 415');
    t.match(plain.json.error.message, /unsupported content type/);
  });

  t.test('image limits: pixels (checked from the header) and bytes; 413 for large bodies', async (t) => {
    // A PNG header that claims 12000 x 12000 (144 megapixels): refused before anything is decoded.
    const huge = Buffer.from(PNG);
    huge.writeUInt32BE(12000, 16);
    huge.writeUInt32BE(12000, 20);
    const r = await post(`${base}/v1/caption`, { image: `data:image/png;base64,${huge.toString('base64')}` });
    t.equal(r.status, 400);
    t.match(r.json.error, { code: 'image_too_large', message: /image: 12000x12000 is over this server's limit of 100000000 pixels/ });

    const small = createServer(model, { bodyLimit: 64 * 1024, maxImagePixels: 100 * 100 });
    const url = await small.listen({ port: 0 });
    t.teardown(() => small.close());
    const over = await post(`${url}/v1/caption`, { image: PNG_DATA_URL });
    t.match(over.json.error.message, /150x200 is over this server's limit of 10000 pixels/);
    const big = await post(`${url}/v1/caption`, { image: `data:image/png;base64,${Buffer.alloc(80 * 1024).toString('base64')}` });
    t.equal(big.status, 413, 'a JSON body over the limit: 413');
    t.match(big.json.error, { code: 'body_too_large', message: /over this server's limit/ });
    const form = new FormData();
    form.append('image', new Blob([Buffer.alloc(80 * 1024)]), 'big.png');
    const bigFile = await read(await fetch(`${url}/v1/caption`, { method: 'POST', body: form }));
    t.equal(bigFile.status, 413, 'an uploaded file over the limit: 413');
    t.match(bigFile.json.error.code, 'body_too_large');

    // The parts together are held to the limit, not each one.
    const parts = new FormData();
    parts.append('lang', 'x'.repeat(40 * 1024));
    parts.append('image', new Blob([Buffer.alloc(40 * 1024)]), 'big.png');
    const together = await read(await fetch(`${url}/v1/caption`, { method: 'POST', body: parts }));
    t.equal(together.status, 413, 'a field and a file that are over the limit together: 413');
    t.match(together.json.error, { code: 'body_too_large', message: /over this server's limit of 65536 bytes/ });
    // An unknown name is refused as its part arrives, before the parts behind it are read.
    const unknown = new FormData();
    unknown.append('bogus', 'x');
    unknown.append('image', new Blob([Buffer.alloc(80 * 1024)]), 'big.png');
    const early = await read(await fetch(`${url}/v1/caption`, { method: 'POST', body: unknown }));
    t.equal(early.status, 400, 'an unknown field before a file over the limit: 400');
    t.match(early.json.error, { param: 'bogus', message: /bogus: unknown field \(known here: image, stream/ });
    const wrongFile = new FormData();
    wrongFile.append('picture', new Blob([Buffer.alloc(80 * 1024)]), 'big.png');
    const wrong = await read(await fetch(`${url}/v1/caption`, { method: 'POST', body: wrongFile }));
    t.equal(wrong.status, 400, 'a file under another name: 400, its bytes unread');
    t.match(wrong.json.error.message, /picture: unexpected file/);
    // A text field holds a few bytes: 64 KiB is its limit, whatever the body limit.
    const longField = new FormData();
    longField.append('image', new Blob([PNG]), 'x.png');
    longField.append('question', 'why? '.repeat(20_000));
    const long = await read(await fetch(`${base}/v1/answer`, { method: 'POST', body: longField }));
    t.equal(long.status, 413, 'a 100 kB text field: 413');
    t.match(long.json.error, { code: 'body_too_large', param: 'question', message: /question: the field is over this server's limit of 65536 bytes/ });
  });

  t.test('stream: an error before the first token is an error status, not a 200 with an error event', async (t) => {
    // More prompt tokens than the context holds: ERR_CONTEXT_FULL before anything is generated.
    const huge = `caption en ${'cat dog '.repeat(1000)}`;
    for (const stream of [false, true]) {
      const r = await post(`${base}/v1/chat/completions`, chat(huge, { max_tokens: 4, stream }));
      t.equal(r.status, 400, `chat, stream: ${stream}: 400`);
      t.match(r.json?.error, { code: 'ERR_CONTEXT_FULL', message: /more than the context/ }, r.text.slice(0, 200));
      const a = await post(`${base}/v1/answer`, { image: PNG_DATA_URL, question: huge, max_tokens: 4, stream });
      t.equal(a.status, 400, `answer, stream: ${stream}: 400`);
      t.match(a.json?.error, { code: 'ERR_CONTEXT_FULL' });
    }
    const zero = await post(`${base}/v1/chat/completions`, chat('caption en', { max_tokens: 0, stream: true }));
    t.equal(zero.status, 200, 'no tokens at all: still a stream');
    const events = parseSse(zero.text);
    t.equal(events.at(-1)!.data, '[DONE]');
    t.same(JSON.parse(events[0]!.data).choices[0].delta, { role: 'assistant', content: '' }, 'the role chunk first');
  });

  t.test('remote images only when enabled, fetched with the limits', async (t) => {
    const unfinished: { path: string; closed: boolean }[] = [];
    const files = http.createServer((req, res) => {
      if (req.url === '/shapes.png') res.writeHead(200, { 'content-type': 'image/png' }).end(PNG);
      else if (req.url === '/big.png') res.writeHead(200).end(Buffer.alloc(70 * 1024));
      else if (req.url === '/endless-404' || req.url === '/endless-big.png') {
        // A body that never ends: only the fetcher giving it up closes it.
        const entry = { path: req.url, closed: false };
        unfinished.push(entry);
        res.on('close', () => (entry.closed = true));
        res.writeHead(req.url === '/endless-404' ? 404 : 200, req.url === '/endless-404' ? {} : { 'content-length': String(10 << 20) });
        res.write(Buffer.alloc(1024));
      } else res.writeHead(404).end();
    });
    await new Promise<void>((r) => files.listen(0, '127.0.0.1', r));
    t.teardown(() => new Promise((r) => files.close(r)));
    const at = `http://127.0.0.1:${(files.address() as { port: number }).port}`;
    const remote = createServer(model, { allowRemoteImages: true, bodyLimit: 64 * 1024 });
    const url = await remote.listen({ port: 0 });
    t.teardown(() => remote.close());
    const ok = await post(`${url}/v1/chat/completions`, {
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'caption en' },
            { type: 'image_url', image_url: { url: `${at}/shapes.png` } },
          ],
        },
      ],
      max_tokens: 4,
    });
    t.equal(ok.status, 200, ok.text);
    t.equal(ok.json.choices[0].message.content, await model.caption(PNG, { maxTokens: 4 }));
    const missing = await post(`${url}/v1/caption`, { image: `${at}/nothing.png` });
    t.match(missing.json.error.message, /image: fetching .* answered HTTP 404/);
    const big = await post(`${url}/v1/caption`, { image: `${at}/big.png` });
    t.equal(big.status, 413);
    const down = await post(`${url}/v1/caption`, { image: 'http://127.0.0.1:1/x.png' });
    t.match(down.json.error.message, /image: could not fetch/);
    const endless404 = await post(`${url}/v1/caption`, { image: `${at}/endless-404` });
    t.match(endless404.json.error.message, /answered HTTP 404/);
    const declared = await post(`${url}/v1/caption`, { image: `${at}/endless-big.png` });
    t.equal(declared.status, 413, 'a content-length over the limit: 413');
    await waitFor(() => unfinished.length === 2 && unfinished.every((u) => u.closed), 3000, 'the refused bodies to be cancelled');
    t.pass('a refused response body is cancelled, not left holding its connection');
  });

  t.test('--api-key: Bearer required on the API; the page and /health stay open', async (t) => {
    const keyed = createServer(model, { apiKey: 'secret' });
    const url = await keyed.listen({ port: 0 });
    t.teardown(() => keyed.close());
    const none = await post(`${url}/v1/caption`, { image: PNG_DATA_URL });
    t.equal(none.status, 401);
    t.equal(none.headers.get('www-authenticate'), 'Bearer');
    t.match(none.json.error, { type: 'authentication_error', code: 'invalid_api_key', message: /Authorization: Bearer/ });
    t.equal((await get(`${url}/v1/models`, { authorization: 'Bearer wrong' })).status, 401, 'a wrong key');
    t.equal((await get(`${url}/v1/models`, { authorization: 'Basic c2VjcmV0' })).status, 401, 'another scheme');
    t.equal((await get(`${url}/v1/models`, { authorization: 'Bearer secret' })).status, 200, 'the key');
    t.equal((await get(`${url}/`)).status, 200, 'the page');
    t.match((await get(`${url}/health`)).json, { status: 'ok', auth: true });
    t.equal((await fetch(`${url}/health`, { method: 'HEAD' })).status, 200, 'HEAD /health needs no key either');
    t.equal((await fetch(`${url}/`, { method: 'HEAD' })).status, 200, 'nor HEAD /');
    t.equal((await fetch(`${url}/v1/models`, { method: 'HEAD' })).status, 401, 'HEAD on the API does');
  });

  t.test('a loopback server answers loopback names only, and no other origin', async (t) => {
    const api = `${base}/v1/models`;
    t.equal((await rawRequest(api, 'GET', { host: 'evil.example:80' })).status, 403, 'Host: another name (DNS rebinding)');
    t.equal((await rawRequest(api, 'GET', { host: `localhost:${new URL(base).port}` })).status, 200, 'Host: localhost');
    const other = await rawRequest(api, 'GET', { origin: 'http://evil.example' });
    t.equal(other.status, 403, 'Origin: another site');
    t.match(JSON.parse(other.body).error.message, /cross-origin requests are refused/);
    t.equal((await rawRequest(api, 'GET', { origin: base })).status, 200, 'Origin: the page itself');
    t.equal((await rawRequest(api, 'GET', { origin: 'null' })).status, 403, 'Origin: null');
    // Compared as origins: case and a default port do not make another one.
    const port = new URL(base).port;
    t.equal((await rawRequest(api, 'GET', { host: 'LOCALHOST:80', origin: 'http://localhost' })).status, 200, 'Host: LOCALHOST:80, Origin: http://localhost');
    t.equal((await rawRequest(api, 'GET', { host: `LocalHost:${port}`, origin: `http://localhost:${port}` })).status, 200, 'Host in capitals');
    t.equal((await rawRequest(api, 'GET', { host: 'localhost:81', origin: 'http://localhost' })).status, 403, 'another port');
  });

  t.test('createServer checks its options', async (t) => {
    t.throws(() => createServer(model, { port: 1 } as never), { code: 'ERR_INVALID_ARGUMENT', message: /createServer options\.port: .*unknown option/ });
    t.throws(() => createServer(model, { maxQueue: -1 }), { message: /options\.maxQueue/ });
    t.throws(() => createServer(model, { apiKey: '' }), { message: /options\.apiKey: expected a non-empty string/ });
    t.throws(() => createServer(model, { page: 'yes' as never }), { message: /options\.page: expected a boolean/ });
    t.throws(() => createServer(model, null as never), { message: /expected an object/ });
    const noPage = createServer(model, { page: false });
    const url = await noPage.listen({ port: 0 });
    t.teardown(() => noPage.close());
    t.equal((await get(`${url}/`)).status, 404, 'page: false');
  });
});
