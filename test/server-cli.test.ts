// `paligemma serve`: its usage errors in-process, and the real command as a child process: it
// listens, serves, and on SIGTERM finishes the accepted requests before it exits; a second signal
// stops them.
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { runCli } from './helpers/cli';
import { convertedFixture } from './helpers/fixtures';
import { chat, get, PNG_DATA_URL, parseSse, post, readUntil, waitFor } from './helpers/http';
import { checkpointFiles, hubEnv } from './helpers/hub-env';
import { startHubServer } from './helpers/hub-server';
import { tmpDir } from './helpers/tmp';

t.test('serve: usage', async (t) => {
  const help = await runCli(['serve', '--help']);
  t.equal(help.code, 0);
  t.match(help.out, /usage: paligemma serve --model/);
  t.match(help.out, /--api-key/);
  t.match(help.out, /--model <x\.gguf\|DIR\|org\/name>[\s\S]*a hub repo \(org\/name\[@rev\] or hf:\/\/org\/name\)/, 'a hub repo as --model');
  const listed = await runCli(['help']);
  t.match(listed.out, /serve\s+an HTTP API/, 'in the command list');
  const parallel = await runCli(['serve', '--parallel', '2', '-m', 'x.gguf']);
  t.equal(parallel.code, 2, '--parallel 2: a usage error');
  t.match(parallel.err, /--parallel: only 1 is supported\. A model runs one generation at a time/);
  t.equal((await runCli(['serve', '--parallel', '0'])).code, 2, '--parallel 0');
  const noModel = await runCli(['serve']);
  t.equal(noModel.code, 2);
  t.match(noModel.err, /--model is required/);
  t.match((await runCli(['serve', '--port', '70000', '-m', 'x'])).err, /--port must be at most 65535/);
  t.match((await runCli(['serve', '--port', 'http'])).err, /--port must be an integer/);
  const missing = await runCli(['serve', '-m', '/nonexistent/model.gguf']);
  t.equal(missing.code, 1);
  t.match(missing.err, /no such file or folder/);
});

t.test('serve: a model that fails to load, a port in use: exit 1 with the reason', async (t) => {
  const dir = tmpDir();
  const bad = path.join(dir, 'bad.gguf');
  fs.writeFileSync(bad, 'not a model');
  const failed = await runCli(['serve', '-m', bad, '--mmproj', bad, '--port', '0', '--gpu', 'cpu']);
  t.equal(failed.code, 1, 'exit 1');
  t.match(failed.err, /listening on http:\/\/127\.0\.0\.1:\d+/, 'it listened while loading');
  t.match(failed.err, /bad\.gguf/, 'the load error names the file');
  const busy = http.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise((r) => busy.close(r)));
  const port = String((busy.address() as { port: number }).port);
  const inUse = await runCli(['serve', '-m', bad, '--mmproj', bad, '--port', port, '--gpu', 'cpu']);
  t.equal(inUse.code, 1);
  t.match(inUse.err, new RegExp(`--host 127\\.0\\.0\\.1 --port ${port}: .*EADDRINUSE`));
});

interface Served {
  child: ChildProcess;
  url: string;
  stderr: () => string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Runs the CLI from source (as tap runs the tests) and waits until it listens. */
async function serve(args: string[]): Promise<Served> {
  const main = path.join(__dirname, '..', 'lib', 'cli', 'main.ts');
  const child = spawn(process.execPath, [...process.execArgv, main, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d) => (stderr += d));
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  await waitFor(() => /listening on (\S+)/.test(stderr) || child.exitCode !== null, 60_000, 'the server to listen');
  const url = /listening on (\S+)/.exec(stderr)?.[1];
  if (!url) throw new Error(`serve did not start:\n${stderr}`);
  return { child, url, stderr: () => stderr, exit };
}

t.test('serve --model org/name: the pull shows its progress on stderr', async (t) => {
  const hub = await startHubServer([{ id: 'org/tiny', files: checkpointFiles('tiny-v2') }]);
  t.teardown(() => hub.close());
  hubEnv(t, hub); // the child inherits the environment
  const s = await serve(['--model', 'org/tiny', '--gpu', 'cpu', '--quiet']);
  t.teardown(() => void s.child.kill('SIGKILL'));
  t.match(s.stderr(), /downloading model\.safetensors .*100% /, 'download progress');
  t.match(s.stderr(), /\ndone\s+100% /, 'then the conversion');
  await waitFor(async () => (await get(`${s.url}/health`)).status === 200, 60_000, 'the model to load');
  s.child.kill('SIGTERM');
  t.same(await s.exit, { code: 0, signal: null });
});

t.test('serve as a child process: SIGTERM drains, a second signal stops', async (t) => {
  const files = await convertedFixture('tiny-v2', 'f32', true);
  const args = ['--model', files.model, '--gpu', 'cpu', '--context-size', '4096', '--api-key', 'k'];
  const auth = { authorization: 'Bearer k' };

  t.test('SIGTERM: the running and the queued requests finish, new ones are refused, exit 0', async (t) => {
    const s = await serve(args);
    t.teardown(() => void s.child.kill('SIGKILL'));
    await waitFor(async () => (await get(`${s.url}/health`)).status === 200, 60_000, 'the model to load');
    t.match(s.stderr(), /loading model 100%/, 'load progress on stderr');
    t.match(s.stderr(), /ready in [\d.]+ s/);
    t.equal((await post(`${s.url}/v1/caption`, { image: PNG_DATA_URL })).status, 401, '--api-key is enforced');

    const running = await fetch(`${s.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: JSON.stringify(chat('caption en', { max_tokens: 800, stream: true })),
    });
    const head = await readUntil(running, (text) => text.split('\n\n').length > 2);
    const queued = post(`${s.url}/v1/caption`, { image: PNG_DATA_URL, max_tokens: 4 }, auth);
    await waitFor(async () => (await get(`${s.url}/health`)).json.queue.waiting === 1, 10_000, 'the queued request');
    s.child.kill('SIGTERM');
    await waitFor(() => /SIGTERM: finishing the accepted requests/.test(s.stderr()), 10_000, 'the drain message');
    const refused = await fetch(`${s.url}/health`).then(
      (r) => r.status,
      (e: Error) => e.message,
    );
    t.not(refused, 200, `a new request after SIGTERM is refused (${refused})`);
    const events = parseSse(head + (await readUntil(running, () => false)));
    t.equal(events.at(-1)!.data, '[DONE]', 'the running stream finished');
    t.equal(JSON.parse(events.at(-2)!.data).choices[0].finish_reason, 'length', 'with all its tokens');
    t.equal((await queued).status, 200, 'the queued request was served');
    t.same(await s.exit, { code: 0, signal: null }, 'exit 0');
    t.match(s.stderr(), /POST \/v1\/chat\/completions 200 \d+ ms/, 'a line per request');
  });

  t.test('a second SIGINT stops the running request', async (t) => {
    const s = await serve([...args, '--quiet']);
    t.teardown(() => void s.child.kill('SIGKILL'));
    await waitFor(async () => (await get(`${s.url}/health`)).status === 200, 60_000, 'the model to load');
    const running = await fetch(`${s.url}/v1/chat/completions`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...auth },
      body: JSON.stringify(chat('caption en', { max_tokens: 3500, stream: true })),
    });
    const head = await readUntil(running, (text) => text.split('\n\n').length > 2);
    s.child.kill('SIGINT');
    await waitFor(() => /SIGINT: finishing/.test(s.stderr()), 10_000, 'the drain message');
    s.child.kill('SIGINT');
    const events = parseSse(head + (await readUntil(running, () => false)));
    t.equal(events.at(-1)!.data, '[DONE]', 'the stream ends properly');
    t.match(JSON.parse(events.at(-2)!.data), { error: { code: 'ERR_DISPOSED' } }, 'with an error event: the generation was stopped');
    t.same(await s.exit, { code: 128 + os.constants.signals.SIGINT, signal: null }, 'exit 130');
    t.notMatch(s.stderr(), /POST \/v1/, '--quiet: no request lines');
  });
});
