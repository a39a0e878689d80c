import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { pullProgress } from '../lib/cli/progress';
import { hostTag } from '../lib/hub/gguf-cache';
import { estimateSizes, KNOWN_MODELS, parameterCount } from '../lib/hub/models';
import { joinInside, unsafeNameReason } from '../lib/hub/names';
import { hubModelRef, parseHubFile, parseRepo } from '../lib/hub/repo';
import { hubSettings, readToken } from '../lib/hub/settings';
import { PaliGemma } from '../lib/index';
import { runCli, sink } from './helpers/cli';
import { FIXTURES } from './helpers/fixtures';
import { checkpointFiles, hubEnv } from './helpers/hub-env';
import { type HubServer, startHubServer } from './helpers/hub-server';
import { tmpDir } from './helpers/tmp';

const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');
let server: HubServer;
t.before(async () => {
  server = await startHubServer([
    { id: 'org/tiny', files: checkpointFiles('tiny-v2') },
    { id: 'google/gated-tiny', files: checkpointFiles('tiny-v1'), gated: true, tokens: ['hf_acceptedTokenForTheTests'] },
  ]);
});
t.teardown(() => server.close());

t.test('one command from nothing to an answer: caption --model org/name downloads, converts, answers', async (t) => {
  hubEnv(t, server);
  const before = server.requests.length;
  const first = await runCli(['caption', png, '--model', 'org/tiny', '--gpu', 'cpu', '--max-tokens', '4']);
  t.equal(first.code, 0, first.err);
  t.ok(first.out.trim().length > 0, 'an answer');
  t.match(first.err, /downloading model\.safetensors .*100% /, 'download progress');
  t.match(first.err, /\nvision\s+\d+% .*\ndone\s+100% /, 'then the conversion');
  t.match(first.err, /loading model 100%/);
  t.ok(server.requests.length > before);

  const mark = server.requests.length;
  const second = await runCli(['caption', png, '--model', 'org/tiny', '--gpu', 'cpu', '--max-tokens', '4']);
  t.equal(second.code, 0, second.err);
  t.equal(second.out, first.out, 'the same answer');
  t.notMatch(second.err, /downloading/);
  t.equal(server.requests.length, mark, 'the second run asks the hub nothing');

  // The same pair from code.
  const model = await PaliGemma.load({ model: 'org/tiny', gpu: 'cpu' });
  t.teardown(() => model.dispose());
  t.match(model.info.model, /models--org--tiny.*q4_k_m-q8_0.*tiny-q4_k_m\.gguf$/);
  t.equal(`${await model.caption(png, { maxTokens: 4 })}\n`, first.out);
  t.equal(server.requests.length, mark);

  await t.rejects(PaliGemma.load({ model: 'org/tiny', mmproj: model.info.mmproj }), { code: 'ERR_INVALID_ARGUMENT', message: /options\.mmproj/ });
  await t.rejects(PaliGemma.load({ model: model.info.model, mmproj: model.info.mmproj, pull: {} }), { code: 'ERR_INVALID_ARGUMENT', message: /options\.pull/ });
  const withMmproj = await runCli(['caption', png, '--model', 'org/tiny', '--mmproj', model.info.mmproj]);
  t.equal(withMmproj.code, 1);
  t.match(withMmproj.err, /--mmproj .*: not with a hub repo as --model \(org\/tiny\)/);

  // A path always wins over a repo id.
  const cwd = process.cwd();
  const dir = tmpDir();
  fs.mkdirSync(path.join(dir, 'org', 'tiny'), { recursive: true });
  for (const f of [model.info.model, model.info.mmproj]) fs.copyFileSync(f, path.join(dir, 'org', 'tiny', path.basename(f)));
  process.chdir(dir);
  t.teardown(() => process.chdir(cwd));
  t.equal(hubModelRef('org/tiny'), null, 'an existing folder is a path');
  t.same(hubModelRef('hf://org/tiny'), { type: 'model', name: 'org/tiny', revision: 'main' }, 'hf:// is always the hub');
  const local = await runCli(['caption', png, '--model', 'org/tiny', '--gpu', 'cpu', '--max-tokens', '4']);
  t.equal(local.code, 0, local.err);
  t.equal(server.requests.length, mark, 'the folder, not the hub');
  process.chdir(cwd);

  const missing = await runCli(['caption', png, '--model', 'org/missing']);
  t.equal(missing.code, 1);
  t.match(missing.err, /^paligemma: --model org\/missing: no such file or folder, and as a hub repo: org\/missing: no such model repo/);
});

t.test('pull on the command line: paths, --json progress lines and result, usage errors, gated repos', async (t) => {
  const env = hubEnv(t, server);
  const json = await runCli(['pull', 'org/tiny', '--type', 'f32', '--vision-type', 'f32', '--json']);
  t.equal(json.code, 0, json.err);
  const res = JSON.parse(json.out) as { model: string; mmproj: string; commit: string; converted: boolean; downloadedBytes: number };
  t.ok(res.converted && res.downloadedBytes > 0 && fs.existsSync(res.model) && fs.existsSync(res.mmproj));
  const lines = json.err
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { phase: string; bytesDone: number; bytesTotal: number; etaSeconds?: number | null });
  t.equal(lines[0]!.phase, 'download', 'JSON progress lines: the download first');
  t.ok(
    lines.some((l) => l.phase === 'download' && l.bytesDone === l.bytesTotal),
    'its end',
  );
  t.equal(lines.at(-1)!.phase, 'done', 'the conversion last');

  const plain = await runCli(['pull', 'hf://org/tiny', '--type', 'f32', '--vision-type', 'f32']);
  t.equal(plain.code, 0, plain.err);
  t.equal(plain.out, `${res.model}\n${res.mmproj}\n`, 'the two paths');
  t.match(plain.err, /^org\/tiny@main \(commit [0-9a-f]{12}\): f32 \+ f32 already converted\n$/);

  t.equal((await runCli(['pull'])).code, 2);
  t.equal((await runCli(['pull', 'org/tiny', '--type', 'q3'])).code, 2);
  t.equal((await runCli(['pull', 'a', 'b'])).code, 2);
  t.match((await runCli(['pull', '--help'])).out, /HF_TOKEN/);

  const gated = await runCli(['pull', 'google/gated-tiny']);
  t.equal(gated.code, 1);
  t.equal(gated.err.trim().split('\n').length, 1, 'one line, no stack');
  t.match(gated.err, /^paligemma: google\/gated-tiny is gated: accept its license at http:\/\/127\.0\.0\.1:\d+\/google\/gated-tiny/);
  fs.writeFileSync(path.join(env.hfHome, 'token'), 'hf_acceptedTokenForTheTests');
  const ok = await runCli(['pull', 'google/gated-tiny', '--type', 'f16', '--vision-type', 'f16']);
  t.equal(ok.code, 0, ok.err);
  t.notMatch(ok.err + ok.out, 'hf_accepted', 'the token is never printed');
});

t.test('cache ls shows the pairs with sizes; cache rm frees them (and the checkpoint with --checkpoint)', async (t) => {
  const env = hubEnv(t, server);
  t.match((await runCli(['cache', 'ls'])).out, /converted pairs in .*:\n {2}\(none\)/);
  const a = await runCli(['pull', 'org/tiny', '--type', 'f32', '--vision-type', 'f32']);
  const b = await runCli(['pull', 'org/tiny', '--type', 'f16', '--vision-type', 'f16']);
  t.equal(a.code + b.code, 0);
  const ls = await runCli(['cache', 'ls']);
  t.equal(ls.code, 0);
  t.match(ls.out, /org\/tiny@main \([0-9a-f]{12}\)\s+f16 \+ f16\s+[\d.]+ [KM]iB/);
  t.match(ls.out, /f32 \+ f32/);
  t.match(ls.out, /checkpoints of these repos in the Hugging Face cache/);
  const listed = JSON.parse((await runCli(['cache', 'ls', '--json'])).out) as { pairs: { type: string; bytes: number }[]; checkpoints: unknown[] };
  t.same(listed.pairs.map((p) => p.type).sort(), ['f16', 'f32']);
  t.ok(listed.pairs.every((p) => p.bytes > 0));

  const rm = await runCli(['cache', 'rm', 'org/tiny', '--type', 'f32']);
  t.equal(rm.code, 0, rm.err);
  t.match(rm.out, /removed org\/tiny@[0-9a-f]{12} f32 \+ f32/);
  t.same(
    (JSON.parse((await runCli(['cache', 'ls', '--json'])).out) as { pairs: { type: string }[] }).pairs.map((p) => p.type),
    ['f16'],
  );
  t.equal((await runCli(['cache', 'rm', 'org/tiny', '--type', 'f32'])).code, 1, 'nothing left to match');

  const withCkpt = await runCli(['cache', 'rm', 'org/tiny@main', '--checkpoint']);
  t.equal(withCkpt.code, 0, withCkpt.err);
  t.match(withCkpt.out, /removed the checkpoint org\/tiny from the Hugging Face cache/);
  t.notOk(fs.existsSync(path.join(env.hubCache, 'models--org--tiny')));
  t.notOk(fs.existsSync(path.join(env.ggufCache, 'gguf', 'models--org--tiny')), 'empty folders go too');

  await runCli(['pull', 'org/tiny', '--type', 'f32', '--vision-type', 'f32']);
  const parent = path.join(env.ggufCache, 'gguf', 'models--org--tiny', server.commitOf('org/tiny'));
  const dead = path.join(parent, '.partial-f16-f16-999999-1');
  fs.mkdirSync(dead);
  // Conversions going on: one of a live process of this host (the test runner), one of another host, recent.
  const live = path.join(parent, `.partial-q8_0-q8_0-${process.ppid}-${hostTag()}-1`);
  const otherHost = path.join(parent, `.partial-q8_0-f16-999999-${hostTag('another-host')}-1`);
  for (const d of [live, otherHost]) fs.mkdirSync(d);
  const ls2 = (await runCli(['cache', 'ls'])).out;
  t.match(ls2, /unfinished conversion.*-999999-1\n/);
  t.match(ls2, /conversion in progress.*q8_0-q8_0/);
  const all = await runCli(['cache', 'rm', '--all']);
  t.match(all.out, /removed 1 pair\(s\)/);
  t.notOk(fs.existsSync(dead), "a dead process's unfinished conversion is removed");
  t.ok(fs.existsSync(live) && fs.existsSync(otherHost), 'conversions still going on are kept');
  t.match(all.err, /kept .*q8_0-q8_0.*: a conversion still going on/);
  t.match(all.err, /kept .*q8_0-f16.*: a conversion still going on/);
  t.equal((await runCli(['cache', 'bogus'])).code, 2);
  t.equal((await runCli(['cache'])).code, 2);
  t.equal((await runCli(['cache', 'rm'])).code, 2);
});

t.test('models lists the repos with estimated sizes', async (t) => {
  const p = (repo: string) => Number((parameterCount(KNOWN_MODELS.find((m) => m.repo === repo)!).total / 1e9).toFixed(2));
  t.equal(p('google/paligemma-3b-pt-224'), 2.92, 'PaliGemma 1: 2.92B parameters');
  t.equal(p('google/paligemma2-3b-pt-224'), 3.03);
  t.equal(p('google/paligemma2-10b-pt-224'), 9.66);
  t.equal(p('google/paligemma2-28b-pt-224'), 27.65);
  const m = KNOWN_MODELS.find((x) => x.repo === 'google/paligemma2-3b-mix-448')!;
  const q4 = estimateSizes(m, 'q4_k_m', 'q8_0');
  const f16 = estimateSizes(m, 'f16', 'f16');
  t.ok(q4.fileBytes > 1.5e9 && q4.fileBytes < 2.5e9, `3B q4_k_m + q8_0: ${q4.fileBytes}`);
  t.ok(f16.fileBytes > 5.9e9 && f16.fileBytes < 6.2e9, `3B f16: ${f16.fileBytes}`);
  t.equal(q4.contextTokens, 1536, '448 px: 1024 image tokens + 512');

  const out = await runCli(['models']);
  t.equal(out.code, 0);
  t.match(out.out, /Estimates/);
  t.match(out.out, /google\/paligemma2-3b-mix-224\s+3\.03B\s+6\.1 GB/);
  t.match(out.out, /google\/paligemma-3b-pt-896\s+2\.93B\s+11\.7 GB/);
  const one = JSON.parse((await runCli(['models', '--type', 'q5_k_m', '--json'])).out) as { estimates: boolean; models: { pairs: { type: string }[] }[] };
  t.ok(one.estimates);
  t.same(
    one.models[0]!.pairs.map((x) => x.type),
    ['q5_k_m'],
  );
  t.equal((await runCli(['models', '--vision-type', 'f16'])).code, 2);
});

t.test('repo ids, hub file URLs, unsafe names, settings from the environment', async (t) => {
  t.same(parseRepo('google/paligemma2-3b-mix-224@v1.0'), { type: 'model', name: 'google/paligemma2-3b-mix-224', revision: 'v1.0' });
  t.same(parseRepo('hf://datasets/org/data@refs/pr/3'), { type: 'dataset', name: 'org/data', revision: 'refs/pr/3' });
  t.same(parseHubFile('hf://spaces/big-vision/paligemma@refs%2Fpr%2F1/assets/vae-oid.npz'), {
    type: 'space',
    name: 'big-vision/paligemma',
    revision: 'refs/pr/1',
    path: 'assets/vae-oid.npz',
  });
  t.throws(() => parseHubFile('hf://org/name'), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => parseHubFile('org/name/x.npz'), { code: 'ERR_INVALID_ARGUMENT' });
  t.throws(() => parseHubFile('hf://org/name@%E0%A4%A/x.npz'), { message: /URL encoding/ });
  t.equal(hubModelRef('model.gguf'), null);
  t.equal(hubModelRef('./a/b'), null);
  t.equal(hubModelRef('a/b/c'), null);
  t.equal(hubModelRef('a--b/c'), null, 'not a valid repo id: a path (that does not exist)');

  for (const bad of ['../x', 'a/../../x', '/etc/passwd', 'a\\b', 'nul\0', 'C:x', '', 'a//b', './a', 'x\ny'])
    t.not(unsafeNameReason(bad), null, JSON.stringify(bad));
  for (const good of ['config.json', 'a/b.safetensors', '.gitattributes', 'a..b']) t.equal(unsafeNameReason(good), null, good);
  t.throws(() => joinInside('/cache', '../x', 'org/x'), { code: 'ERR_INVALID_FILE', message: /refusing the file name "\.\.\/x"/ });
  t.equal(joinInside('/cache', 'a/b', 'org/x'), path.join('/cache', 'a', 'b'));

  const env = hubEnv(t, { url: 'http://127.0.0.1:9' }, { HF_TOKEN: '  hf_fromTheEnvironment  ' });
  t.equal(readToken(), 'hf_fromTheEnvironment', 'HF_TOKEN first, trimmed');
  delete process.env.HF_TOKEN;
  fs.mkdirSync(env.hfHome, { recursive: true });
  fs.writeFileSync(path.join(env.hfHome, 'token'), 'hf_fromTheFile\n');
  t.equal(readToken(), 'hf_fromTheFile', 'then $HF_HOME/token');
  process.env.HF_TOKEN_PATH = path.join(env.root, 'elsewhere');
  t.equal(readToken(), undefined, 'HF_TOKEN_PATH names the file');
  const s = hubSettings();
  t.equal(s.hubCache, env.hubCache, '$HF_HOME/hub');
  t.equal(s.endpoint, 'http://127.0.0.1:9');
  process.env.HF_HUB_CACHE = path.join(env.root, 'hub2');
  process.env.HF_HUB_OFFLINE = 'yes';
  process.env.HF_ENDPOINT = 'https://mirror.example/';
  t.same([hubSettings().hubCache, hubSettings().offline, hubSettings().endpoint], [path.join(env.root, 'hub2'), true, 'https://mirror.example']);
  process.env.HF_ENDPOINT = 'not a url';
  t.throws(() => hubSettings(), { code: 'ERR_INVALID_ARGUMENT', message: /HF_ENDPOINT/ });
  process.env.HF_ENDPOINT = 'https://user:pw@mirror.example';
  t.throws(() => hubSettings(), { message: /credentials in HF_TOKEN/ });
  delete process.env.HF_HOME;
  delete process.env.PALIGEMMA_CACHE;
  process.env.HF_ENDPOINT = 'https://huggingface.co';
  process.env.XDG_CACHE_HOME = path.join(env.root, 'xdg');
  t.equal(hubSettings().ggufCache, path.join(env.root, 'xdg', 'paligemma'), 'our cache under XDG_CACHE_HOME');
});

t.test('pull progress: a bar with rate and ETA on a TTY, lines otherwise, JSON lines with --json', async (t) => {
  let now = 0;
  const tty = sink();
  (tty.stream as unknown as { isTTY: boolean }).isTTY = true;
  const bar = pullProgress(tty.stream, false, () => now);
  bar({ phase: 'download', file: 'model.safetensors', bytesDone: 0, bytesTotal: 4 << 20, fraction: 0 });
  now = 1000;
  bar({ phase: 'download', file: 'model.safetensors', bytesDone: 2 << 20, bytesTotal: 4 << 20, fraction: 0.5 });
  now = 2000;
  bar({ phase: 'download', file: 'model.safetensors', bytesDone: 4 << 20, bytesTotal: 4 << 20, fraction: 1 });
  bar({ phase: 'text', bytesDone: 1, bytesTotal: 2, fraction: 0.5 });
  bar({ phase: 'done', bytesDone: 2, bytesTotal: 2, fraction: 1 });
  t.match(tty.text, /\r\[############\.{12}\] downloading model\.safetensors\s+50% 2\.0 MiB\/4\.0 MiB 2\.0 MiB\/s ETA 0:01/);
  t.match(tty.text, /100% 4\.0 MiB\/4\.0 MiB .*\n/);
  t.match(tty.text, /\[#+\] done/);

  const plain = sink();
  const lines = pullProgress(plain.stream, false, () => now);
  for (let i = 0; i <= 20; i++) lines({ phase: 'download', file: 'f', bytesDone: i, bytesTotal: 20, fraction: i / 20 });
  t.equal(plain.text.trim().split('\n').length, 11, 'a line per 10%');

  const json = sink();
  const j = pullProgress(json.stream, true, () => now);
  for (let i = 0; i <= 20; i++) j({ phase: 'download', file: 'f', bytesDone: i, bytesTotal: 20, fraction: i / 20 });
  j({ phase: 'vision', bytesDone: 1, bytesTotal: 2, fraction: 0.5 });
  j({ phase: 'vision', bytesDone: 2, bytesTotal: 2, fraction: 0.6 });
  j({ phase: 'done', bytesDone: 2, bytesTotal: 2, fraction: 1 });
  const parsed = json.text
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as { phase: string });
  t.same(
    parsed.map((p) => p.phase),
    ['download', 'download', 'vision', 'done'],
    'the first, the last, and each phase change (no clock has run)',
  );

  // Waiting on another download is said, in every mode.
  for (const [isTTY, asJson, expect] of [
    [true, false, '\r\u001b[Kwaiting for another download of f: process 1 on h\n'],
    [false, false, 'waiting for another download of f: process 1 on h\n'],
    [false, true, /"waitingFor":"another download of f: process 1 on h"/],
  ] as const) {
    const s = sink();
    (s.stream as unknown as { isTTY: boolean }).isTTY = isTTY;
    pullProgress(
      s.stream,
      asJson,
      () => now,
    )({
      phase: 'download',
      file: 'f',
      bytesDone: 0,
      bytesTotal: 20,
      fraction: 0,
      waitingFor: 'another download of f: process 1 on h',
    });
    if (typeof expect === 'string') t.equal(s.text, expect);
    else t.match(s.text, expect);
  }
});
