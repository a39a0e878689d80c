/**
 * OpenAI's chat completions and model list, so that OpenAI clients work unchanged. PaliGemma is
 * not a chat model: a request is one user message with one image (`image_url`, a data URL) and
 * text that is the task prompt ('caption en', 'detect cat'); the answer is the model's raw text,
 * `<loc>` tokens included. `stream: true` sends OpenAI's chunks as server-sent events, ending with
 * `data: [DONE]`.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { GenerateOptions, GenerateResult } from '../model/options';
import { failed, onModel, type ServerContext } from './context';
import { badRequest, HttpError, toHttpError } from './http-error';
import { imageFromUrl } from './images';
import { disconnectSignal, EventStream } from './sse';
import { SAMPLING_FIELDS } from './tasks';

/** Answer length when a request names none: room for a long description or many boxes. */
export const DEFAULT_CHAT_MAX_TOKENS = 128;

const nullable = (schema: { type: string }) => ({ ...schema, type: [schema.type, 'null'] });

const CONTENT_PART = {
  type: 'object',
  additionalProperties: false,
  required: ['type'],
  properties: {
    type: { enum: ['text', 'image_url'] },
    text: { type: 'string' },
    image_url: {
      type: 'object',
      additionalProperties: false,
      required: ['url'],
      properties: { url: { type: 'string' }, detail: { enum: ['auto', 'low', 'high'] } },
    },
  },
};

export const CHAT_SCHEMA = {
  type: 'object',
  additionalProperties: false,
  required: ['messages'],
  properties: {
    model: { type: 'string' },
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['role', 'content'],
        properties: { role: { type: 'string' }, name: { type: 'string' }, content: { type: ['string', 'array'], items: CONTENT_PART } },
      },
    },
    stream: nullable({ type: 'boolean' }),
    stream_options: {
      type: ['object', 'null'],
      additionalProperties: false,
      properties: { include_usage: { type: 'boolean' }, include_obfuscation: { type: 'boolean' } },
    },
    max_tokens: nullable(SAMPLING_FIELDS.max_tokens),
    max_completion_tokens: nullable(SAMPLING_FIELDS.max_tokens),
    temperature: nullable(SAMPLING_FIELDS.temperature),
    top_p: nullable(SAMPLING_FIELDS.top_p),
    top_k: nullable(SAMPLING_FIELDS.top_k),
    seed: nullable(SAMPLING_FIELDS.seed),
    stop: { type: ['string', 'array', 'null'], minLength: 1, items: { type: 'string', minLength: 1 }, maxItems: 4 },
    n: { type: ['integer', 'null'], minimum: 1, maximum: 1 },
    user: { type: 'string' },
    // What clients send by default: taken at their neutral value (checked in neutralFields).
    frequency_penalty: { type: ['number', 'null'] },
    presence_penalty: { type: ['number', 'null'] },
    logprobs: { type: ['boolean', 'null'] },
    response_format: { type: ['object', 'null'], required: ['type'], properties: { type: { type: 'string' } } },
    // No tools exist, so whether they may run in parallel says nothing.
    parallel_tool_calls: { type: ['boolean', 'null'] },
  },
};

interface ContentPart {
  type: 'text' | 'image_url';
  text?: string;
  image_url?: { url: string };
}

interface ChatRequest {
  model?: string;
  messages: { role: string; content: string | ContentPart[] }[];
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean } | null;
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  stop?: string | string[] | null;
  frequency_penalty?: number | null;
  presence_penalty?: number | null;
  logprobs?: boolean | null;
  response_format?: { type: string } | null;
}

/** OpenAI fields PaliGemma has no use for: their neutral value is accepted, any other is a 400. */
function neutralFields(b: ChatRequest) {
  for (const k of ['frequency_penalty', 'presence_penalty'] as const) {
    if (b[k] != null && b[k] !== 0)
      throw badRequest(`${k}: not supported (PaliGemma samples without penalties); send 0 or leave it out`, k, 'unsupported_field');
  }
  if (b.logprobs === true) throw badRequest('logprobs: not supported; send false or leave it out', 'logprobs', 'unsupported_field');
  const format = b.response_format;
  if (format != null && (format.type !== 'text' || Object.keys(format).length !== 1)) {
    throw badRequest(
      `response_format: only { "type": "text" } is supported (the answer is PaliGemma's raw text), got ${JSON.stringify(format).slice(0, 80)}`,
      'response_format',
      'unsupported_field',
    );
  }
}

const SYSTEM_ROLES = ['system', 'developer'];

const isEmptyContent = (c: string | ContentPart[]) => (typeof c === 'string' ? !c.trim() : c.every((p) => p.type === 'text' && !(p.text ?? '').trim()));

/** The image URL and the prompt of the one user message. */
export function readMessages(all: ChatRequest['messages']): { url: string; field: string; prompt: string } {
  // A system message with nothing in it (some clients always send one) asks for nothing: ignored.
  const messages = all.map((m, i) => ({ ...m, i })).filter((m) => !(SYSTEM_ROLES.includes(m.role) && isEmptyContent(m.content)));
  const system = messages.find((m) => SYSTEM_ROLES.includes(m.role));
  if (system) {
    throw badRequest(
      `messages[${system.i}]: PaliGemma has no system prompt, so a '${system.role}' message cannot be followed: put the instruction in the user message's text, the task prompt ('caption en', 'detect cat')`,
      `messages[${system.i}].role`,
    );
  }
  if (messages.length !== 1 || messages[0]!.role !== 'user') {
    throw badRequest(
      `messages: PaliGemma answers one prompt about one image: send exactly one message with role 'user' (got ${messages.length === 1 ? `role '${messages[0]!.role}'` : `${messages.length} messages`})`,
      'messages',
    );
  }
  const at = messages[0]!.i;
  const content = messages[0]!.content;
  const parts: ContentPart[] = typeof content === 'string' ? [{ type: 'text', text: content }] : content;
  const images: { url: string; field: string }[] = [];
  const texts: string[] = [];
  parts.forEach((p, i) => {
    const field = `messages[${at}].content[${i}]`;
    if (p.type === 'image_url') {
      if (!p.image_url) throw badRequest(`${field}.image_url: required for a part of type 'image_url'`, `${field}.image_url`);
      images.push({ url: p.image_url.url, field: `${field}.image_url.url` });
    } else {
      if (typeof p.text !== 'string') throw badRequest(`${field}.text: required for a part of type 'text'`, `${field}.text`);
      texts.push(p.text);
    }
  });
  if (images.length !== 1) {
    throw badRequest(`messages[${at}].content: expected one image_url part (PaliGemma needs one image), got ${images.length}`, `messages[${at}].content`);
  }
  const prompt = texts.join(' ').trim();
  if (!prompt) {
    throw badRequest(`messages[${at}].content: no text: the text is PaliGemma's task prompt, e.g. 'caption en' or 'detect cat'`, `messages[${at}].content`);
  }
  return { ...images[0]!, prompt };
}

function generateOptions(b: ChatRequest): Omit<GenerateOptions, 'image' | 'prompt'> {
  const o: Omit<GenerateOptions, 'image' | 'prompt'> = { maxTokens: b.max_completion_tokens ?? b.max_tokens ?? DEFAULT_CHAT_MAX_TOKENS };
  if (b.temperature != null) o.temperature = b.temperature;
  if (b.top_p != null) o.topP = b.top_p;
  if (b.top_k != null) o.topK = b.top_k;
  if (b.seed != null) o.seed = b.seed;
  if (b.stop != null) o.stop = typeof b.stop === 'string' ? [b.stop] : b.stop;
  return o;
}

const finishReason = (r: GenerateResult) => (r.stopReason === 'maxTokens' ? 'length' : 'stop');

const usage = (r: GenerateResult) => ({
  prompt_tokens: r.timings.promptTokens,
  completion_tokens: r.timings.generatedTokens,
  total_tokens: r.timings.promptTokens + r.timings.generatedTokens,
});

async function chatCompletion(ctx: ServerContext, b: ChatRequest, reply: FastifyReply, signal: AbortSignal) {
  neutralFields(b);
  const { url, field, prompt } = readMessages(b.messages);
  const image = await imageFromUrl(url, field, ctx.limits, signal);
  const options = generateOptions(b);
  const id = `chatcmpl-${randomUUID().replaceAll('-', '')}`;
  const created = Math.floor(Date.now() / 1000);
  const model = ctx.modelId();
  const head = { id, created, model, system_fingerprint: null };
  let stream: EventStream | undefined;
  try {
    return await onModel(ctx, signal, async (pg) => {
      if (!b.stream) {
        const r = await pg.generate({ ...options, image: image.bytes, prompt, signal });
        return {
          ...head,
          object: 'chat.completion',
          choices: [{ index: 0, message: { role: 'assistant', content: r.text, refusal: null }, logprobs: null, finish_reason: finishReason(r) }],
          usage: usage(r),
          timings: r.timings,
        };
      }
      const includeUsage = b.stream_options?.include_usage === true;
      const chunk = (delta: object, finish: string | null) => ({
        ...head,
        object: 'chat.completion.chunk',
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
        ...(includeUsage ? { usage: null } : {}),
      });
      // The 200 goes out with the first token: what fails before it (a prompt over the context,
      // a bad option) answers its error status, as without stream.
      const opened = () => {
        if (!stream) {
          stream = new EventStream(reply);
          stream.send(chunk({ role: 'assistant', content: '' }, null));
        }
        return stream;
      };
      const r = await pg.generate({
        ...options,
        image: image.bytes,
        prompt,
        signal,
        onToken: () => void opened(),
        onText: (text) => opened().send(chunk({ content: text }, null)),
      });
      const s = opened();
      s.send(chunk({}, finishReason(r)));
      if (includeUsage) s.send({ ...head, object: 'chat.completion.chunk', choices: [], usage: usage(r) });
      s.end('[DONE]');
      return reply;
    });
  } catch (err) {
    if (!stream || signal.aborted) throw err;
    stream.fail(toHttpError(err));
    stream.end('[DONE]');
    return reply;
  }
}

const modelEntry = (ctx: ServerContext, created: number) => ({ id: ctx.modelId(), object: 'model', created, owned_by: 'paligemma-node' });

export function registerOpenAIRoutes(app: FastifyInstance, ctx: ServerContext) {
  const created = Math.floor(Date.now() / 1000);
  app.get('/v1/models', async () => ({ object: 'list', data: [modelEntry(ctx, created)] }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (request) => {
    if (request.params.id !== ctx.modelId()) {
      throw new HttpError(404, `model '${request.params.id}': this server has only '${ctx.modelId()}'`, 'not_found_error', 'model_not_found', 'model');
    }
    return modelEntry(ctx, created);
  });
  app.post('/v1/chat/completions', { schema: { body: CHAT_SCHEMA } }, (request, reply) => {
    const signal = disconnectSignal(reply);
    return chatCompletion(ctx, request.body as ChatRequest, reply, signal).catch((err) => failed(reply, signal, err));
  });
}
