#!/usr/bin/env node
/**
 * The `paligemma` command line tool.
 */
import { readGGUF } from './gguf';
import { PaliGemmaError } from './errors';
import { systemInfo } from './system';

const USAGE = `usage: paligemma <command> [options]

commands:
  system                 native build, devices and CPU features
  info <file.gguf>       metadata and tensors of a GGUF file
  help                   this text
`;

class UsageError extends Error {}

function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function formatValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? v.slice(0, 77) + '...' : v);
  if (Array.isArray(v) || ArrayBuffer.isView(v)) {
    const arr = Array.from(v as ArrayLike<unknown>);
    const head = arr.slice(0, 6).map((x) => (typeof x === 'string' ? JSON.stringify(x) : String(x)));
    return `[${head.join(', ')}${arr.length > 6 ? ', ...' : ''}]`;
  }
  return String(v);
}

async function cmdSystem(out: NodeJS.WritableStream) {
  const info = await systemInfo();
  out.write(`llama.cpp ${info.llamaCppCommit}\nbinary ${info.binary.variant}: ${info.binary.path}\n`);
  out.write(`threads: ${info.defaultThreads} by default (physical cores), ${info.logicalCpus} logical\n`);
  for (const d of info.backends) out.write(`device ${d.name} (${d.type}): ${d.description}, ${formatBytes(d.memoryTotal)}\n`);
  out.write(`cpu: ${Object.keys(info.cpuFeatures).join(' ')}\n`);
}

async function cmdInfo(args: string[], out: NodeJS.WritableStream) {
  const file = args[0];
  if (!file || args.length > 1) throw new UsageError('info takes exactly one GGUF file');
  const info = await readGGUF(file, { maxArrayLength: 8 });
  out.write(`${file}: GGUF v${info.version}, ${formatBytes(info.fileSize)}, ${Object.keys(info.metadata).length} keys, ${info.tensors.length} tensors\n`);
  for (const [k, v] of Object.entries(info.metadata)) {
    const full = info.truncatedKeys.includes(k) ? ' (truncated)' : '';
    out.write(`  ${k.padEnd(44)} ${formatValue(v)}${full}\n`);
  }
  for (const t of info.tensors) {
    out.write(`  ${t.name.padEnd(44)} ${t.type.padEnd(6)} [${t.shape.join(', ')}] ${formatBytes(t.size)}\n`);
  }
}

export async function main(argv: string[], out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'system':
        await cmdSystem(out);
        return 0;
      case 'info':
        await cmdInfo(rest, out);
        return 0;
      case 'help':
      case '--help':
      case '-h':
        out.write(USAGE);
        return 0;
      default:
        throw new UsageError(cmd ? `unknown command '${cmd}'` : 'no command given');
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err.write(`paligemma: ${e.message}\n\n${USAGE}`);
      return 2;
    }
    err.write(`paligemma: ${e instanceof PaliGemmaError ? e.message : (e as Error).stack ?? String(e)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
