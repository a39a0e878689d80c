#!/usr/bin/env node
// Finds or fetches the pinned llama.cpp source tree and prints its path.
// Routes, first hit wins:
//   1. LLAMA_CPP_DIR (a user's own checkout, used as is);
//   2. the cached copy under deps/llama.cpp (git-ignored);
//   3. the git bundle that the npm package node-llama-cpp ships (fetched with `npm pack`, no install);
//   4. `git clone --branch <tag>` of the upstream repository.
// The pin lives in package.json under "llamaCpp".
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pin = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).llamaCpp;
const cacheDir = path.join(root, 'deps', 'llama.cpp');

function log(msg) {
  process.stderr.write(`[llama-source] ${msg}\n`);
}

function git(args, opts = {}) {
  return execFileSync('git', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...opts }).trim();
}

function treeOf(dir) {
  try {
    return git(['-C', dir, 'rev-parse', 'HEAD^{tree}']);
  } catch {
    return null;
  }
}

function looksLikeLlamaCpp(dir) {
  return fs.existsSync(path.join(dir, 'include', 'llama.h')) && fs.existsSync(path.join(dir, 'ggml', 'include', 'ggml.h'));
}

// Moves a verified checkout into the cache atomically, so an interrupted fetch never leaves a half tree.
function adopt(tmpDir) {
  const tree = treeOf(tmpDir);
  if (tree !== pin.tree) {
    throw new Error(`fetched llama.cpp tree is ${tree}, expected ${pin.tree} (tag ${pin.tag})`);
  }
  fs.mkdirSync(path.dirname(cacheDir), { recursive: true });
  fs.rmSync(cacheDir, { recursive: true, force: true });
  fs.renameSync(tmpDir, cacheDir);
  return cacheDir;
}

function fromNpmBundle(work) {
  log(`fetching ${pin.npmPackage} with npm pack (no install, no scripts) for its llama.cpp bundle`);
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const out = execFileSync(npm, ['pack', pin.npmPackage, '--silent', '--ignore-scripts', '--pack-destination', work], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    shell: process.platform === 'win32',
  })
    .trim()
    .split('\n')
    .pop();
  const tgz = path.join(work, out);
  execFileSync('tar', ['-xzf', tgz, '-C', work, `package/${pin.npmBundlePath}`], { stdio: 'inherit' });
  const bundle = path.join(work, 'package', pin.npmBundlePath);
  const dest = path.join(work, 'llama.cpp');
  git(['clone', '--quiet', bundle, dest]);
  return adopt(dest);
}

function fromGit(work) {
  log(`cloning ${pin.gitUrl} at ${pin.tag}`);
  const dest = path.join(work, 'llama.cpp-git');
  git(['clone', '--quiet', '--depth', '1', '--branch', pin.tag, pin.gitUrl, dest], { timeout: 10 * 60 * 1000 });
  // Upstream tags are real history while the npm bundle is one squashed commit: compare trees.
  return adopt(dest);
}

export function resolveLlamaSource() {
  const fromEnv = process.env.LLAMA_CPP_DIR;
  if (fromEnv) {
    const dir = path.resolve(fromEnv);
    if (!looksLikeLlamaCpp(dir)) {
      throw new Error(`LLAMA_CPP_DIR=${fromEnv} does not look like a llama.cpp checkout (no include/llama.h)`);
    }
    const tree = treeOf(dir);
    if (tree && tree !== pin.tree) log(`note: LLAMA_CPP_DIR tree ${tree} differs from the pin ${pin.tree} (${pin.tag})`);
    return dir;
  }
  if (looksLikeLlamaCpp(cacheDir) && treeOf(cacheDir) === pin.tree) return cacheDir;

  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'paligemma-llama-'));
  const failures = [];
  try {
    for (const [name, route] of [
      ['npm bundle', fromNpmBundle],
      ['git clone', fromGit],
    ]) {
      try {
        return route(work);
      } catch (err) {
        const msg = String(err?.stderr || err?.message || err)
          .trim()
          .split('\n')
          .slice(-3)
          .join(' | ');
        failures.push(`${name}: ${msg}`);
        log(`${name} failed: ${msg}`);
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  throw new Error(
    `could not obtain llama.cpp ${pin.tag} (tree ${pin.tree}).\n` +
      `  tried: LLAMA_CPP_DIR (unset), ${path.relative(root, cacheDir)} (absent), ${failures.join('; ')}\n` +
      `  fix: set LLAMA_CPP_DIR to a llama.cpp checkout of ${pin.tag}, or allow access to the npm registry.`,
  );
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.stdout.write(`${resolveLlamaSource()}\n`);
  } catch (err) {
    process.stderr.write(`error: ${err.message}\n`);
    process.exit(1);
  }
}
