#!/usr/bin/env node
// npm install hook: use the prebuilt binary when it loads here; otherwise build from source, tuned
// to this machine, and keep only the built addon. PALIGEMMA_BUILD_FROM_SOURCE=1 forces a source
// build; PALIGEMMA_GPU=cuda|vulkan|metal builds that GPU variant beside the prebuilt CPU binary (the
// fallback); PALIGEMMA_SKIP_BUILD=1 skips it (the package then has no binary until `npm rebuild`).
// npm shows an install script's output only with --foreground-scripts (or when it fails).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'package.json'));
const say = (m) => console.error(`[paligemma-node] ${m}`);

function binaryLoads() {
  // In a child process: a binary that crashes on load must not fail the install itself.
  const code = `require(require('node-gyp-build').resolve(${JSON.stringify(root)}))`;
  const res = spawnSync(process.execPath, ['-e', code], { stdio: 'ignore', cwd: root, env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' } });
  return res.status === 0;
}

function missingBuildTools() {
  const missing = [];
  for (const pkg of ['cmake-js', 'node-addon-api']) {
    try {
      require.resolve(`${pkg}/package.json`);
    } catch {
      missing.push(pkg);
    }
  }
  return missing;
}

const gpu = process.env.PALIGEMMA_GPU && process.env.PALIGEMMA_GPU !== 'cpu' ? process.env.PALIGEMMA_GPU : null;

// A git checkout (contributors, CI): `npm run build` / `npm test` build the portable addon
// incrementally; building here too would compile llama.cpp twice.
const checkout = fs.existsSync(path.join(root, '.git'));

if (process.env.PALIGEMMA_SKIP_BUILD === '1') {
  say('PALIGEMMA_SKIP_BUILD=1: not building the native addon');
} else if (checkout && !gpu && process.env.PALIGEMMA_BUILD_FROM_SOURCE !== '1') {
  say('a git checkout: `npm run build` builds the addon (npm test does it first)');
} else if (process.env.PALIGEMMA_BUILD_FROM_SOURCE !== '1' && !gpu && binaryLoads()) {
  say('using the prebuilt native addon');
} else {
  const why = gpu
    ? `PALIGEMMA_GPU=${gpu}`
    : process.env.PALIGEMMA_BUILD_FROM_SOURCE === '1'
      ? 'PALIGEMMA_BUILD_FROM_SOURCE=1'
      : `no prebuilt binary loads on ${process.platform}-${process.arch}`;
  const missing = missingBuildTools();
  if (missing.length) {
    say(
      `${why}, and a source build needs ${missing.join(' and ')} (plus cmake and a C++17 compiler): ` +
        `install ${missing.length > 1 ? 'them' : 'it'} in your project (npm install --save-dev ${missing.join(' ')}), then run npm rebuild paligemma-node`,
    );
    process.exit(1);
  }
  if (!fs.existsSync(path.join(root, 'CMakeLists.txt'))) {
    say(`${why}, and this copy of the package has no sources to build from`);
    process.exit(1);
  }
  say(
    `${why}: building ${gpu ? `the ${gpu} variant` : 'the addon'} from source for this machine (cmake + C++ compiler, several minutes; --foreground-scripts shows progress)`,
  );
  const res = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-native.mjs'), '--native', '--clean'], { stdio: 'inherit', cwd: root });
  process.exit(res.status ?? 1);
}
