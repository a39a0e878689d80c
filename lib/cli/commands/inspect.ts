/** `paligemma info` (a GGUF file) and `paligemma system` (the native build and devices). */
import { readGGUF } from '../../gguf/read';
import { systemInfo } from '../../system';
import { type Command, UsageError, writeJson } from '../args';
import { formatBytes } from '../progress';

function formatValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 80 ? `${v.slice(0, 77)}...` : v);
  if (Array.isArray(v) || ArrayBuffer.isView(v)) {
    const arr = Array.from(v as ArrayLike<unknown>);
    const head = arr.slice(0, 6).map((x) => (typeof x === 'string' ? JSON.stringify(x) : String(x)));
    return `[${head.join(', ')}${arr.length > 6 ? ', ...' : ''}]`;
  }
  return String(v);
}

export const INFO_COMMAND: Command = {
  name: 'info',
  summary: 'metadata and tensors of a GGUF file',
  usage: `usage: paligemma info <file.gguf> [--json]

Prints a GGUF file's metadata (arrays cut to 8 values) and tensors.

options:
      --json                 one JSON object { version, metadata, tensors, ... }
  -h, --help                 this text`,
  options: { json: { type: 'boolean' } },
  positionals: true,
  async run({ values, positionals }, { out }) {
    const [file] = positionals;
    if (!file || positionals.length > 1) throw new UsageError('info takes exactly one GGUF file', 'info');
    const info = await readGGUF(file, { maxArrayLength: 8 });
    if (values.json) {
      writeJson(out, info);
      return 0;
    }
    out.write(`${file}: GGUF v${info.version}, ${formatBytes(info.fileSize)}, ${Object.keys(info.metadata).length} keys, ${info.tensors.length} tensors\n`);
    const md = info.metadata;
    if (md['general.type'] === 'adapter') {
      const part = md['general.architecture'] === 'clip' ? 'vision tower / projector part' : 'language-model part';
      const targets = md['paligemma.adapter.targets'];
      out.write(
        `LoRA adapter (${part}) for ${String(md['paligemma.adapter.base_name'] ?? 'an unnamed base')} (${String(md['paligemma.adapter.family'] ?? '?')})` +
          `${md['paligemma.adapter.trained_on'] ? `, trained on ${String(md['paligemma.adapter.trained_on'])}` : ''}: rank ${String(md['paligemma.adapter.rank'] ?? '?')}` +
          `, alpha ${String(md['paligemma.adapter.alpha'] ?? '?')}${md['paligemma.adapter.rslora'] ? ' (rsLoRA)' : ''}, ${info.tensors.length / 2} matrices` +
          `${Array.isArray(targets) ? `; targets ${targets.join(' ')}` : ''}\n`,
      );
    }
    for (const [k, v] of Object.entries(info.metadata)) {
      out.write(`  ${k.padEnd(44)} ${formatValue(v)}${info.truncatedKeys.includes(k) ? ' (truncated)' : ''}\n`);
    }
    for (const t of info.tensors) out.write(`  ${t.name.padEnd(44)} ${t.type.padEnd(6)} [${t.shape.join(', ')}] ${formatBytes(t.size)}\n`);
    return 0;
  },
};

export const SYSTEM_COMMAND: Command = {
  name: 'system',
  summary: 'native build, devices and CPU features',
  usage: `usage: paligemma system [--json]

Which native binary loaded, the llama.cpp it was built from, its devices and the CPU features.

options:
      --json                 one JSON object (as systemInfo() returns it)
  -h, --help                 this text`,
  options: { json: { type: 'boolean' } },
  async run({ values }, { out }) {
    const info = await systemInfo();
    if (values.json) {
      writeJson(out, info);
      return 0;
    }
    out.write(`llama.cpp ${info.llamaCppCommit}\nbinary ${info.binary.variant}: ${info.binary.path}\n`);
    out.write(`threads: ${info.defaultThreads} by default (physical cores), ${info.logicalCpus} logical\n`);
    for (const d of info.backends) out.write(`device ${d.name} (${d.type}): ${d.description}, ${formatBytes(d.memoryTotal)}\n`);
    out.write(`cpu backend ${info.cpuVariant}: ${Object.keys(info.cpuFeatures).join(' ')}\n`);
    return 0;
  },
};
