/**
 * `paligemma serve`: one process holding the model, an HTTP API (OpenAI-style and task endpoints)
 * and a page to try it. It listens at once and loads the model behind (/health shows the
 * progress); SIGINT / SIGTERM let the accepted requests finish, a second one stops them.
 */
import os from 'node:os';
import path from 'node:path';
import { PaliGemmaError } from '../../errors';
import { PaliGemma } from '../../model/paligemma';
import { GPU_CHOICES } from '../../native/contract';
import { createServer } from '../../server/app';
import { type Command, choiceOption, intOption, UsageError } from '../args';
import { MODEL_LOCATION_USAGE, resolveModelPair } from '../model-files';
import { loadProgress } from '../progress';

const USAGE = `usage: paligemma serve --model <x.gguf|DIR|org/name> [options]

an HTTP server: OpenAI-style chat completions, task endpoints (/v1/caption, answer, ocr, detect,
segment), /health and a web page at /

server options:
      --host <addr>          address to listen on (default 127.0.0.1; 0.0.0.0: every interface)
      --port <n>             port (default 8080; 0 picks a free one)
      --api-key <key>        require Authorization: Bearer <key> (default: $PALIGEMMA_API_KEY, if set)
      --parallel <n>         generations at once; only 1: the model runs one at a time
      --max-queue <n>        requests that may wait for the model (default 16); more get 429
      --body-limit <MiB>     request body limit (default 20); larger bodies get 413
      --allow-remote-images  let requests name http(s) image URLs, fetched by the server
      --no-page              no web page at /
  -q, --quiet                no line per request on stderr

model options:
${MODEL_LOCATION_USAGE}
  -h, --help                 this text

SIGINT / SIGTERM: stop accepting requests, finish the accepted ones, exit 0; a second signal
stops them too and closes every connection (exit 130 / 143).`;

const PARALLEL_REFUSED =
  '--parallel: only 1 is supported. A model runs one generation at a time, and every model in a process ' +
  'shares one compute thread, so more copies in this process would only wait for each other while taking ' +
  'that much more memory. For more throughput run several servers (different ports or machines) behind a balancer.';

export const SERVE_COMMAND: Command = {
  name: 'serve',
  summary: 'an HTTP API (OpenAI-style and task endpoints) and a web page',
  usage: USAGE,
  options: {
    model: { type: 'string', short: 'm' },
    mmproj: { type: 'string' },
    gpu: { type: 'string' },
    threads: { type: 'string', short: 't' },
    'context-size': { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    'api-key': { type: 'string' },
    parallel: { type: 'string' },
    'max-queue': { type: 'string' },
    'body-limit': { type: 'string' },
    'allow-remote-images': { type: 'boolean' },
    'no-page': { type: 'boolean' },
    quiet: { type: 'boolean', short: 'q' },
  },
  async run({ values }, { err }) {
    const gpu = choiceOption('gpu', values.gpu, GPU_CHOICES);
    const threads = intOption('threads', values.threads, 1);
    const contextSize = intOption('context-size', values['context-size'], 16);
    const port = intOption('port', values.port, 0) ?? 8080;
    if (port > 65535) throw new UsageError(`--port must be at most 65535, got ${port}`, 'serve');
    if ((intOption('parallel', values.parallel, 1) ?? 1) > 1) throw new UsageError(PARALLEL_REFUSED, 'serve');
    const maxQueue = intOption('max-queue', values['max-queue'], 0);
    const bodyLimitMiB = intOption('body-limit', values['body-limit'], 1);
    const host = (values.host as string | undefined) ?? '127.0.0.1';
    const apiKey = (values['api-key'] as string | undefined) ?? (process.env.PALIGEMMA_API_KEY || undefined);
    if (apiKey === '') throw new UsageError('--api-key must not be empty', 'serve');
    // A signal during a hub pull stops it (and the load after it).
    const loadAbort = new AbortController();
    let received: NodeJS.Signals | undefined;
    const onPullSignal = (name: NodeJS.Signals) => {
      received ??= name;
      loadAbort.abort();
    };
    process.on('SIGINT', onPullSignal);
    process.on('SIGTERM', onPullSignal);
    let files: { model: string; mmproj: string };
    try {
      files = await resolveModelPair(values.model as string | undefined, values.mmproj as string | undefined, { err, signal: loadAbort.signal });
    } catch (e) {
      if (received) return 128 + os.constants.signals[received];
      throw e;
    } finally {
      process.removeListener('SIGINT', onPullSignal);
      process.removeListener('SIGTERM', onPullSignal);
    }
    if (received) return 128 + os.constants.signals[received];

    const printLoad = loadProgress(err);
    let reportLoad: (fraction: number) => void = () => undefined;
    const loading = PaliGemma.load({
      ...files,
      gpu,
      threads,
      contextSize,
      signal: loadAbort.signal,
      onProgress: (f) => {
        reportLoad(f);
        printLoad(f);
      },
    });
    loading.catch(() => undefined); // awaited below; a failure before then must not go unhandled
    // The server listens while the model loads: /health shows the progress.
    const server = createServer(loading, {
      apiKey,
      maxQueue,
      bodyLimit: bodyLimitMiB === undefined ? undefined : bodyLimitMiB * 1024 * 1024,
      allowRemoteImages: values['allow-remote-images'] === true,
      modelName: path.basename(files.model).replace(/\.gguf$/i, ''),
      page: values['no-page'] !== true,
      log: values.quiet === true ? undefined : (line) => err.write(`${line}\n`),
    });
    reportLoad = (f) => server.setLoadProgress(f);

    // The first signal drains, a second one also stops the running and queued generations.
    let forced = false;
    let model: PaliGemma | undefined;
    let onFirstSignal!: () => void;
    const stopped = new Promise<void>((resolve) => (onFirstSignal = resolve));
    const onSignal = (name: NodeJS.Signals) => {
      if (received) {
        err.write(`paligemma serve: ${name} again: stopping the running requests\n`);
        forced = true;
        // The stopped generations answer their error, then every connection closes (within a second
        // even if the model takes longer), stalled clients included.
        const closeAll = () => void server.close({ force: true });
        const cut = setTimeout(closeAll, 1000);
        void Promise.resolve(model?.dispose())
          .catch(() => undefined)
          .then(() => {
            clearTimeout(cut);
            setImmediate(closeAll);
          });
        return;
      }
      received = name;
      loadAbort.abort();
      err.write(`paligemma serve: ${name}: finishing the accepted requests, then exiting (${name} again stops them)\n`);
      onFirstSignal();
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    try {
      let url: string;
      try {
        url = await server.listen({ host, port });
      } catch (e) {
        throw new PaliGemmaError('ERR_INVALID_ARGUMENT', `--host ${host} --port ${port}: ${(e as Error).message}`, { cause: e });
      }
      err.write(`paligemma serve: listening on ${url} (${apiKey ? 'API key required' : 'no API key'}); loading ${files.model}\n`);
      const t0 = performance.now();
      model = await loading;
      err.write(`paligemma serve: ready in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${url}/ (the page), ${url}/v1 (the API)\n`);
      await stopped;
      await server.close();
      return forced ? 128 + os.constants.signals[received!] : 0;
    } catch (e) {
      loadAbort.abort();
      await server.close();
      // A load stopped by the signal is an interruption, not a failure to report.
      if (received) return 128 + os.constants.signals[received];
      throw e;
    } finally {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
      await (model ?? (await loading.catch(() => undefined)))?.dispose();
    }
  },
};
