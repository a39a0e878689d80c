/**
 * The task endpoints, POST /v1/{caption,answer,ocr,detect,segment}: an image (a multipart file
 * named `image`, or a data URL in JSON) in, structured JSON out, boxes in pixels of the source
 * image. With `stream: true` the text arrives as server-sent events (`event: text`), then the
 * whole result (`event: result`).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { encodePNG } from '../image/png';
import type { TaskOptions } from '../model/options';
import type { PaliGemma } from '../model/paligemma';
import { maskToRLE } from '../tasks/masks';
import { failed, type JobTimes, MULTIPART_FIELD_LIMIT, onModel, readyModel, type ServerContext } from './context';
import { badRequest, HttpError, toHttpError } from './http-error';
import { checkImage, imageFromUrl, type RequestImage } from './images';
import { disconnectSignal, EventStream } from './sse';

type Body = Record<string, unknown>;

/** Sampling fields shared by the task endpoints and chat completions. */
export const SAMPLING_FIELDS = {
  max_tokens: { type: 'integer', minimum: 0, maximum: 1 << 20 },
  temperature: { type: 'number', minimum: 0, maximum: 2 },
  top_p: { type: 'number', minimum: 0, maximum: 1 },
  top_k: { type: 'integer', minimum: 0, maximum: 1 << 20 },
  seed: { type: 'integer', minimum: 0, maximum: 0xffffffff },
} as const;

export function samplingOptions(b: Body): TaskOptions {
  const o: TaskOptions = {};
  if (typeof b.max_tokens === 'number') o.maxTokens = b.max_tokens;
  if (typeof b.temperature === 'number') o.temperature = b.temperature;
  if (typeof b.top_p === 'number') o.topP = b.top_p;
  if (typeof b.top_k === 'number') o.topK = b.top_k;
  if (typeof b.seed === 'number') o.seed = b.seed;
  return o;
}

const LANG = { type: 'string', pattern: '^[A-Za-z]{2,3}([-_][A-Za-z0-9]+)?$' };

interface TaskDefinition {
  fields: Record<string, object>;
  required: string[];
  /** Checks beyond the schema, before the request takes a queue slot. */
  check?: (body: Body, model: PaliGemma) => void;
  run: (model: PaliGemma, image: RequestImage, body: Body, options: TaskOptions) => Promise<Record<string, unknown>>;
}

/** detect's `labels`: an array, or one string with ';' between labels. */
function labelList(v: unknown): string[] {
  const list = typeof v === 'string' ? v.split(';') : (v as string[]);
  return list.map((l, i) => {
    const name = typeof v === 'string' ? 'labels' : `labels[${i}]`;
    if (!l.trim() || /[;<>\n]/.test(l))
      throw badRequest(`${name}: a label must be non-empty and hold no ';', '<', '>' or newline, got ${JSON.stringify(l)}`, name);
    return l.trim();
  });
}

function maskPng(mask: { width: number; height: number; data: Uint8Array }): string {
  return `data:image/png;base64,${encodePNG(mask.data, mask.width, mask.height, 1).toString('base64')}`;
}

export const TASKS: Record<string, TaskDefinition> = {
  caption: {
    fields: { lang: LANG, detail: { enum: ['short', 'long'] } },
    required: [],
    run: async (m, img, b, o) => ({ text: await m.caption(img.bytes, { ...o, lang: (b.lang as string) ?? 'en', detail: (b.detail as 'short') ?? 'short' }) }),
  },
  answer: {
    fields: { question: { type: 'string', minLength: 1, pattern: '\\S' }, lang: LANG },
    required: ['question'],
    run: async (m, img, b, o) => ({ question: b.question, text: await m.answer(img.bytes, b.question as string, { ...o, lang: (b.lang as string) ?? 'en' }) }),
  },
  ocr: {
    fields: {},
    required: [],
    run: async (m, img, _b, o) => ({ text: await m.ocr(img.bytes, o) }),
  },
  detect: {
    fields: { labels: { type: ['string', 'array'], items: { type: 'string' }, minItems: 1, maxItems: 64 } },
    required: ['labels'],
    check: (b) => void labelList(b.labels),
    run: async (m, img, b, o) => {
      const labels = labelList(b.labels);
      const found = await m.detect(img.bytes, labels, o);
      return { labels, detections: found.map(({ label, box, region }) => ({ label, box, region })) };
    },
  },
  segment: {
    fields: { label: { type: 'string' }, mask_format: { enum: ['png', 'rle'] } },
    required: ['label'],
    check: (b, model) => {
      const [one, ...more] = labelList(b.label);
      if (!one || more.length) throw badRequest('label: segment takes one label', 'label');
      if (!model.info.hasSegDecoder) {
        throw badRequest("segment: this server's model has no segmentation decoder (convert it with --seg-decoder to segment)", null, 'no_seg_decoder');
      }
    },
    run: async (m, img, b, o) => {
      const label = (b.label as string).trim();
      const found = await m.segment(img.bytes, label, o);
      const rle = b.mask_format === 'rle';
      return {
        label,
        segments: found.map(({ label, box, region, mask }) => ({ label, box, region, mask: rle ? maskToRLE(mask) : maskPng(mask) })),
      };
    },
  },
};

function bodySchema(def: TaskDefinition, imageRequired: boolean) {
  return {
    type: 'object',
    additionalProperties: false,
    required: imageRequired ? ['image', ...def.required] : def.required,
    properties: { image: { type: 'string' }, stream: { type: 'boolean' }, ...SAMPLING_FIELDS, ...def.fields },
  };
}

const overLimit = (maxBytes: number) =>
  new HttpError(413, `the request body is over this server's limit of ${maxBytes} bytes`, 'invalid_request_error', 'body_too_large');

/**
 * A multipart form as the JSON body it stands for: fields by name (numbers and booleans parsed),
 * the file apart. Each part is checked as it arrives: an unknown name is a 400 before its bytes
 * are read, and the parts together may hold at most `maxBytes`.
 */
async function readForm(request: FastifyRequest, schema: ReturnType<typeof bodySchema>, maxBytes: number): Promise<{ body: Body; file?: Buffer }> {
  const body: Body = {};
  const known = Object.keys(schema.properties);
  let file: Buffer | undefined;
  let total = 0;
  for await (const part of request.parts()) {
    if (part.type === 'file') {
      if (part.fieldname !== 'image') {
        part.file.resume();
        throw badRequest(`${part.fieldname}: unexpected file (send the image as the file field 'image')`, part.fieldname);
      }
      const chunks: Buffer[] = [];
      for await (const chunk of part.file as AsyncIterable<Buffer>) {
        total += chunk.length;
        if (total > maxBytes) throw overLimit(maxBytes);
        chunks.push(chunk);
      }
      if (part.file.truncated) throw overLimit(maxBytes);
      file = Buffer.concat(chunks);
      continue;
    }
    if (!known.includes(part.fieldname))
      throw badRequest(`${part.fieldname}: unknown field (known here: ${known.join(', ')})`, part.fieldname, 'invalid_field');
    if (part.valueTruncated) {
      throw new HttpError(
        413,
        `${part.fieldname}: the field is over this server's limit of ${MULTIPART_FIELD_LIMIT} bytes for a form field${part.fieldname === 'image' ? " (send the image as a file named 'image', or as a data URL in a JSON body)" : ''}`,
        'invalid_request_error',
        'body_too_large',
        part.fieldname,
      );
    }
    const raw = String(part.value);
    total += Buffer.byteLength(raw);
    if (total > maxBytes) throw overLimit(maxBytes);
    const type = (schema.properties as Record<string, { type?: string | string[] }>)[part.fieldname]?.type;
    let value: unknown = raw;
    if ((type === 'integer' || type === 'number') && raw.trim() !== '' && Number.isFinite(Number(raw))) value = Number(raw);
    else if (type === 'boolean' && (raw === 'true' || raw === 'false')) value = raw === 'true';
    const prior = body[part.fieldname];
    body[part.fieldname] = prior === undefined ? value : Array.isArray(prior) ? [...prior, value] : [prior, value];
  }
  const validate = request.compileValidationSchema(schema);
  if (!validate(body)) throw toHttpError({ validation: validate.errors });
  return { body, file };
}

interface Timings {
  queueMs: number;
  /** Job start to the first token: image decoding, the vision tower (unless cached) and the prefill. */
  firstTokenMs: number | null;
  /** The vision tower and projector; 0 when the image came from the cache. */
  encodeMs: number;
  prefillMs: number | null;
  totalMs: number;
  tokens: number;
}

const round1 = (x: number) => Math.round(x * 10) / 10;

async function handleTask(ctx: ServerContext, route: TaskRoute, request: FastifyRequest, reply: FastifyReply, signal: AbortSignal) {
  const { name, def } = route;
  let body: Body;
  let image: RequestImage;
  const field = 'image';
  if (request.isMultipart()) {
    const form = await readForm(request, route.uploadSchema, ctx.limits.maxBytes);
    body = form.body;
    if (form.file && body.image !== undefined) throw badRequest("image: send either a file named 'image' or an image field, not both", field);
    if (form.file) image = await checkImage(form.file, field, ctx.limits);
    else if (typeof body.image === 'string') image = await imageFromUrl(body.image, field, ctx.limits, signal);
    else throw badRequest("image: required (a file field named 'image', or a data URL)", field);
  } else {
    // JSON bodies passed their schema; a request without a content type has no body at all.
    if (typeof request.body !== 'object' || request.body === null) {
      throw badRequest('body: send a JSON object (content-type: application/json) or a multipart form', 'body');
    }
    body = request.body as Body;
    image = await imageFromUrl(body.image as string, field, ctx.limits, signal);
  }
  def.check?.(body, readyModel(ctx));
  const options = samplingOptions(body);
  let stream: EventStream | undefined;
  try {
    // The 200 goes out with the first token: what fails before it (a prompt over the context, a
    // bad option) is an error status, not an event.
    const opened = () => {
      if (body.stream === true) stream ??= new EventStream(reply);
      return stream;
    };
    const result = await onModel(ctx, signal, async (model, times: JobTimes) => {
      let text = '';
      let tokens = 0;
      let firstToken: number | null = null;
      const phases: Record<string, number> = {};
      const out = await def.run(model, image, body, {
        ...options,
        signal,
        onToken: () => {
          tokens++;
          firstToken ??= performance.now();
          opened();
        },
        onText: (chunk) => {
          text += chunk;
          opened()?.send({ text: chunk }, 'text');
        },
        onPhase: (p) => {
          phases[p] = performance.now();
        },
      });
      const timings: Timings = {
        queueMs: round1(times.queueMs),
        firstTokenMs: firstToken === null ? null : round1(firstToken - times.startedAt),
        encodeMs: phases.encode !== undefined && phases.prefill !== undefined ? round1(phases.prefill - phases.encode) : 0,
        prefillMs: phases.prefill !== undefined && firstToken !== null ? round1(firstToken - phases.prefill) : null,
        totalMs: round1(performance.now() - times.startedAt),
        tokens,
      };
      return { task: name, model: ctx.modelId(), ...out, text, image: { width: image.width, height: image.height }, timings };
    });
    const s = opened();
    if (s) {
      s.send(result, 'result');
      s.end();
      return reply;
    }
    return result;
  } catch (err) {
    if (!stream || signal.aborted) throw err;
    stream.fail(toHttpError(err), 'error');
    stream.end();
    return reply;
  }
}

interface TaskRoute {
  name: string;
  def: TaskDefinition;
  uploadSchema: ReturnType<typeof bodySchema>;
}

export function registerTaskRoutes(app: FastifyInstance, ctx: ServerContext) {
  for (const [name, def] of Object.entries(TASKS)) {
    const route: TaskRoute = { name, def, uploadSchema: bodySchema(def, false) };
    app.route({
      method: 'POST',
      url: `/v1/${name}`,
      // Multipart bodies are checked in readForm against the same schema, the image apart.
      schema: { body: { content: { 'application/json': { schema: bodySchema(def, true) } } } },
      handler: (request, reply) => {
        const signal = disconnectSignal(reply);
        return handleTask(ctx, route, request, reply, signal).catch((err) => failed(reply, signal, err));
      },
    });
  }
}
