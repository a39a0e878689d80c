#!/usr/bin/env node
// Packs the package as it is published (`npm pack` runs prepack, which makes the portable prebuilt
// binary) and installs the tarball into empty projects whose PATH holds only node, npm and sh: no
// compiler, no cmake. Once with the install script, once with --ignore-scripts: both must load the
// shipped binary through require() and import, pick a CPU variant, and pass the selftest. Exits
// non-zero on any failure.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tuple = `${process.platform}-${process.arch}`;
const log = (m) => process.stderr.write(`[test-pack] ${m}\n`);

function run(cmd, args, opts = {}) {
  const res = spawnSync(cmd, args, { encoding: 'utf8', ...opts });
  if (res.status !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (exit ${res.status ?? res.signal}):\n${res.stdout}\n${res.stderr}`);
  }
  return res;
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'paligemma-pack-'));
try {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const packed = run(npm, ['pack', '--silent', '--pack-destination', work], { cwd: root, stdio: ['ignore', 'pipe', 'inherit'] })
    .stdout.trim()
    .split('\n')
    .pop();
  const tarball = path.join(work, packed);
  const listing = execFileSync('tar', ['-tzf', tarball], { encoding: 'utf8' }).split('\n').filter(Boolean);
  const has = (p) => listing.some((f) => f === p || f.startsWith(p));
  // What an installed package needs: the compiled API, the binary, the selftest model, and the
  // sources of a source build; nothing of the checkout's tests, benchmark or tooling.
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'selftest', 'selftest.json'), 'utf8'));
  const must = [
    'package/dist/index.js',
    'package/dist/index.mjs',
    'package/dist/index.d.ts',
    'package/dist/index.d.mts',
    'package/dist/cli/main.js',
    `package/prebuilds/${tuple}/paligemma.napi.node`,
    // The portable binary: llama.cpp's shared libraries and ggml's CPU variants beside the addon.
    ...(process.platform === 'linux'
      ? [`package/prebuilds/${tuple}/libllama.so.0`, `package/prebuilds/${tuple}/libggml.so.0`, `package/prebuilds/${tuple}/libggml-base.so.0`]
      : []),
    'package/native/core/pg_model.cpp',
    'package/native/napi/addon.cpp',
    'package/CMakeLists.txt',
    'package/scripts/install.mjs',
    'package/scripts/build-native.mjs',
    'package/scripts/llama-source.mjs',
    'package/LICENSE',
    'package/README.md',
    'package/selftest/selftest.json',
    `package/selftest/${manifest.model}`,
    `package/selftest/${manifest.mmproj}`,
    ...manifest.cases.flatMap((c) => [`package/selftest/${c.name}.logits.f32`, `package/selftest/${c.image}.png`]),
  ];
  for (const m of must) if (!has(m)) throw new Error(`tarball lacks ${m}`);
  for (const mustNot of [
    'package/deps/',
    'package/native-build/',
    'package/build/',
    'package/test/',
    'package/bench/',
    'package/dist-bench/',
    'package/native/tools/',
    'package/native/fuzz/',
    'package/scripts/test-pack.mjs',
    'package/lib/',
    '.map',
  ]) {
    if (listing.some((f) => f.startsWith(mustNot) || (mustNot.startsWith('.') && f.endsWith(mustNot))))
      throw new Error(`tarball should not contain ${mustNot}`);
  }
  const variants = listing
    .filter((f) => f.startsWith(`package/prebuilds/${tuple}/`) && /ggml-cpu-[^/]+$/.test(f))
    .map((f) => f.replace(/^.*ggml-cpu-|\.[a-z]+$/g, ''));
  if (process.arch === 'x64' && !['x64', 'haswell', 'skylakex', 'icelake', 'zen4'].every((v) => variants.includes(v)))
    throw new Error(`the prebuild lacks CPU variants (has: ${variants.join(' ') || 'none'})`);
  log(`packed ${packed}: ${listing.length} files, ${(fs.statSync(tarball).size / 1e6).toFixed(1)} MB; CPU variants: ${variants.join(' ')}`);

  // A PATH with node, npm and sh only: a source build could not even find cmake or a compiler.
  const bin = path.join(work, 'bin');
  fs.mkdirSync(bin);
  const npmCli = fs.realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync(npmCli, path.join(bin, 'npm'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh'));
  const env = { ...process.env, PATH: bin, CC: '/bin/false', CXX: '/bin/false' };
  delete env.LLAMA_CPP_DIR;

  // An installed package: its runtime dependencies only, no build tools, no sources of llama.cpp.
  function installInto(name, extraArgs) {
    const app = path.join(work, name);
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }));
    const install = run(path.join(bin, 'npm'), ['install', '--no-audit', '--no-fund', '--foreground-scripts', ...extraArgs, tarball], { cwd: app, env });
    const modules = fs.readdirSync(path.join(app, 'node_modules')).filter((f) => !f.startsWith('.'));
    if (modules.some((m) => m === 'cmake-js' || m === 'node-addon-api')) throw new Error(`install pulled build tools: ${modules.join(' ')}`);
    const pkgDir = path.join(app, 'node_modules', 'paligemma-node');
    for (const absent of ['deps', 'native-build', 'build']) {
      if (fs.existsSync(path.join(pkgDir, absent))) throw new Error(`the installed package holds ${absent}/`);
    }
    log(`${name}: installed (${modules.length} packages in node_modules: ${modules.join(' ')})`);
    return { app, log: install.stdout + install.stderr };
  }

  function checkInstalled(app) {
    const cjs = run(
      path.join(bin, 'node'),
      [
        '-e',
        `
    const pg = require('paligemma-node');
    pg.systemInfo().then((i) => console.log(JSON.stringify({ commit: i.llamaCppCommit, binary: i.binary.path, devices: i.backends.length, cpuVariant: i.cpuVariant })));
  `,
      ],
      { cwd: app, env },
    );
    const info = JSON.parse(cjs.stdout);
    if (!info.binary.includes(path.join('node_modules', 'paligemma-node', 'prebuilds', tuple))) {
      throw new Error(`require() loaded ${info.binary}, not the prebuild`);
    }
    if (!variants.includes(info.cpuVariant)) throw new Error(`the shipped binary runs CPU backend '${info.cpuVariant}', not one of its variants`);
    log(
      `require(): ok, llama.cpp ${info.commit.slice(0, 8)}, ${info.devices} device(s), CPU variant ${info.cpuVariant}, from ${path.relative(app, info.binary)}`,
    );

    const esm = run(
      path.join(bin, 'node'),
      [
        '--input-type=module',
        '-e',
        `
    import { systemInfo, readGGUF, PaliGemmaError } from 'paligemma-node';
    const i = await systemInfo();
    const err = await readGGUF('missing.gguf').catch((e) => e);
    console.log(JSON.stringify({ ok: i.backends.length > 0, typed: err instanceof PaliGemmaError, code: err.code }));
  `,
      ],
      { cwd: app, env },
    );
    const res = JSON.parse(esm.stdout);
    if (!res.ok || !res.typed || res.code !== 'ERR_FILE_NOT_FOUND') throw new Error(`import: unexpected ${esm.stdout}`);
    log('import: ok');

    // The smoke test a user runs after installing: the bundled tiny model, end to end, through the bin.
    const self = run(path.join(app, 'node_modules', '.bin', 'paligemma'), ['selftest', '--gpu', 'cpu'], { cwd: app, env });
    if (!/selftest passed/.test(self.stdout) || (self.stdout.match(/^PASS /gm) ?? []).length !== manifest.cases.length)
      throw new Error(`selftest: ${self.stdout}`);
    log('selftest from the installed package: passed');

    // The server's runtime dependencies came with the package: its health answers while no model is loaded.
    const served = run(
      path.join(bin, 'node'),
      [
        '-e',
        `
    const { createServer } = require('paligemma-node');
    const server = createServer(new Promise(() => {}), { page: false });
    server.listen({ port: 0 }).then(async (url) => {
      const res = await fetch(url + '/health');
      console.log(JSON.stringify({ status: res.status, body: await res.json() }));
      await server.close();
    });
  `,
      ],
      { cwd: app, env },
    );
    const health = JSON.parse(served.stdout);
    if (health.status !== 503 || health.body.status !== 'loading') throw new Error(`createServer from the installed package: ${served.stdout}`);
    log('createServer from the installed package: ok');
  }

  const withScripts = installInto('app', []);
  if (!/using the prebuilt native addon/.test(withScripts.log)) throw new Error(`install did not use the prebuild:\n${withScripts.log}`);
  checkInstalled(withScripts.app);
  const noScripts = installInto('app-ignore-scripts', ['--ignore-scripts']);
  checkInstalled(noScripts.app);
  console.log('pack test passed');
} finally {
  fs.rmSync(work, { recursive: true, force: true });
}
