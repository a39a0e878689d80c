/**
 * Finds and loads the native addon.
 *
 * Order: PALIGEMMA_NODE_BINARY (an explicit .node file); for a GPU request, our own variant folders
 * (`prebuilds/<platform>-<arch>-<gpu>/`, then a local `build/Release-<gpu>/`), each probed in a child
 * process first so that a broken driver cannot take the host down; then the CPU binary through
 * node-gyp-build (`build/Release`, then `prebuilds/<platform>-<arch>/`). node-gyp-build itself
 * ignores folders with a GPU tag, which is why variants are resolved here.
 * @internal
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { PaliGemmaError } from '../errors';
import { GPU_VARIANTS, type GpuChoice, type GpuVariant, type NativeBinding } from './contract';

function isOurPackage(file: string): boolean {
  try {
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string }).name === 'paligemma-node';
  } catch {
    return false;
  }
}

/** The package root: the nearest folder above this file that holds our package.json. */
export const packageRoot = (() => {
  for (let dir = path.dirname(__dirname); ; dir = path.dirname(dir)) {
    if (isOurPackage(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) return path.resolve(__dirname, '..', '..');
  }
})();

interface Loaded {
  binding: NativeBinding;
  file: string;
  variant: 'cpu' | GpuVariant;
}

let loaded: Loaded | undefined;

function variantCandidates(variant: string): string[] {
  const tuple = `${process.platform}-${process.arch}`;
  return [
    path.join(packageRoot, 'prebuilds', `${tuple}-${variant}`, 'paligemma.node'),
    path.join(packageRoot, 'build', `Release-${variant}`, 'paligemma.node'),
  ].filter((f) => fs.existsSync(f));
}

/** Loads `file` in a child process first: a missing driver library or a crash stays there. */
function probe(file: string): string | null {
  // The child prints only the first line of the loader's error (a missing driver library, say).
  const script = `try { require(${JSON.stringify(file)}) } catch (e) { process.stderr.write(String(e && e.message).split('\\n')[0]); process.exit(1) }`;
  const res = spawnSync(process.execPath, ['-e', script], {
    env: { ...process.env, ELECTRON_RUN_AS_NODE: '1' },
    encoding: 'utf8',
    timeout: 60_000,
  });
  if (res.status === 0) return null;
  return (res.stderr || res.error?.message || `exit ${res.status ?? res.signal}`).trim().split('\n').slice(-2).join(' ');
}

function requireAddon(file: string): NativeBinding {
  return require(file) as NativeBinding;
}

function loadCpu(): Loaded {
  try {
    const nodeGypBuild = require('node-gyp-build') as { (dir: string): NativeBinding; resolve(dir: string): string };
    const file = nodeGypBuild.resolve(packageRoot);
    return { binding: requireAddon(file), file, variant: 'cpu' };
  } catch (err) {
    throw new PaliGemmaError(
      'ERR_NO_BINARY',
      `paligemma-node: no native binary loads for ${process.platform}-${process.arch} (${(err as Error).message.split('\n')[0]}). ` +
        'The package ships one for linux-x64; elsewhere its install step builds one from source: run `npm rebuild paligemma-node` ' +
        '(needs cmake, a C++17 compiler and the cmake-js and node-addon-api packages), or in a checkout `npm run build`.',
      { cause: err },
    );
  }
}

/**
 * Returns the loaded addon, loading it on first use. The first call decides the variant for the
 * whole process (ggml keeps global state); a later call asking for another GPU variant throws.
 */
export function getBinding(gpu: GpuChoice = 'auto'): Loaded {
  if (loaded) {
    // Another variant's binary exists but this process already runs a different one: say so. Without
    // such a binary, the native side explains that this build has no such device.
    if (gpu !== 'auto' && gpu !== 'cpu' && loaded.variant !== gpu && variantCandidates(gpu).length > 0) {
      throw new PaliGemmaError(
        'ERR_NO_BINARY',
        `gpu: '${gpu}' was asked for, but this process already loaded the ${loaded.variant} binary (${loaded.file}); ` +
          'choose the GPU before the first call into paligemma-node',
      );
    }
    return loaded;
  }
  const explicit = process.env.PALIGEMMA_NODE_BINARY;
  if (explicit) {
    const file = path.resolve(explicit);
    if (!fs.existsSync(file)) throw new PaliGemmaError('ERR_NO_BINARY', `PALIGEMMA_NODE_BINARY=${explicit}: no such file`);
    loaded = { binding: requireAddon(file), file, variant: 'cpu' };
    return loaded;
  }
  if (gpu !== 'cpu') {
    const wanted = gpu === 'auto' ? GPU_VARIANTS : [gpu];
    const problems: string[] = [];
    for (const variant of wanted) {
      for (const file of variantCandidates(variant)) {
        const problem = probe(file);
        if (problem === null) {
          loaded = { binding: requireAddon(file), file, variant };
          return loaded;
        }
        problems.push(`${file}: ${problem}`);
      }
    }
    if (gpu !== 'auto' || problems.length > 0) {
      const why = problems.length ? `the ${wanted.join('/')} binaries failed to load (${problems.join('; ')})` : `no ${gpu} binary is installed`;
      process.emitWarning(`paligemma-node: ${why}; falling back to the CPU binary`, { code: 'PALIGEMMA_GPU_FALLBACK' });
    }
  }
  loaded = loadCpu();
  return loaded;
}
