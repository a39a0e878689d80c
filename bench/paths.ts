/** Where the benchmark finds the checkout (it runs from bench/ or from its compiled copy) and keeps its files. */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

function findCheckout(from: string): string {
  for (let dir = from; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg) && (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name === 'paligemma-node') return dir;
    if (path.dirname(dir) === dir) throw new Error(`no paligemma-node checkout above ${from}`);
  }
}

export const CHECKOUT = findCheckout(__dirname);

/** The user's cache folder for benchmark models: $XDG_CACHE_HOME or ~/.cache, then paligemma-node/bench. */
export function defaultBenchCache(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'paligemma-node', 'bench');
}

/** One of llama.cpp's tools: in `dir` when given, else where `npm run llama:tools` builds them. */
export function llamaToolPath(name: 'llama-bench' | 'llama-mtmd-cli', dir?: string): string {
  return path.join(dir ?? path.join(CHECKOUT, 'native-build', 'llama-tools', 'bin'), process.platform === 'win32' ? `${name}.exe` : name);
}
