/** `paligemma pull`, `paligemma models` and `paligemma cache`: models from the Hugging Face hub. */
import fs from 'node:fs';
import path from 'node:path';
import { TEXT_TYPES, type TextType, VISION_TYPES, type VisionType } from '../../convert/index';
import { PaliGemmaError } from '../../errors';
import { type CachedPair, listPairs, removePairs, unfinished } from '../../hub/gguf-cache';
import { repoDir } from '../../hub/hf-cache';
import { checkpointBytes, estimateSizes, KNOWN_MODELS, parameterCount } from '../../hub/models';
import { DEFAULT_TEXT_TYPE, DEFAULT_VISION_TYPE, pull } from '../../hub/pull';
import { parseRepo } from '../../hub/repo';
import { hubSettings } from '../../hub/settings';
import { type Command, choiceOption, intOption, UsageError, writeJson } from '../args';
import { formatBytes, pullProgress } from '../progress';
import { untilSignal } from './convert';

const ENVIRONMENT = `environment:
  HF_TOKEN                   an access token for gated repos (else the file \`hf auth login\` writes: $HF_HOME/token)
  HF_HOME, HF_HUB_CACHE      the Hugging Face cache, shared with Python (default ~/.cache/huggingface/hub)
  HF_ENDPOINT                another hub: a mirror or an enterprise hub (default https://huggingface.co)
  HF_HUB_OFFLINE=1           use only the cache
  PALIGEMMA_CACHE            where converted pairs go (default ~/.cache/paligemma)`;

export const PULL_COMMAND: Command = {
  name: 'pull',
  summary: 'a PaliGemma checkpoint from the Hugging Face hub -> a converted GGUF pair in the cache',
  usage: `usage: paligemma pull <org/name[@revision]> [options]

Downloads a PaliGemma checkpoint from the Hugging Face hub into the Hugging Face cache (shared with
Python: files already there are not fetched again; an interrupted download resumes), converts it
once to a GGUF pair in paligemma's cache, and prints the pair's two paths. The task commands take the
repo directly (--model org/name) and pull it on first use. The PaliGemma repos are gated: accept the
license on the repo's page and provide a token (HF_TOKEN).

options:
      --type <t>             text type: ${TEXT_TYPES.join(' ')} (default ${DEFAULT_TEXT_TYPE})
      --vision-type <t>      vision type: ${VISION_TYPES.join(' ')} (default ${DEFAULT_VISION_TYPE})
      --seg-decoder <x>      embed big_vision's mask decoder (for segment): a local vae-oid.npz, or one in
                             a hub repo: hf://[datasets/|spaces/]org/name[@revision]/path/vae-oid.npz
  -t, --threads <n>          conversion threads (default: all CPUs)
      --json                 progress as JSON lines on stderr; the result as JSON on stdout
  -h, --help                 this text

${ENVIRONMENT}`,
  options: {
    type: { type: 'string' },
    'vision-type': { type: 'string' },
    'seg-decoder': { type: 'string' },
    threads: { type: 'string', short: 't' },
    json: { type: 'boolean' },
  },
  positionals: true,
  async run({ values, positionals }, { out, err }) {
    if (positionals.length !== 1) throw new UsageError('pull takes exactly one repo (org/name[@revision])', 'pull');
    const json = values.json === true;
    const options = {
      repo: positionals[0]!,
      type: choiceOption('type', values.type, TEXT_TYPES),
      visionType: choiceOption('vision-type', values['vision-type'], VISION_TYPES),
      segDecoder: values['seg-decoder'] as string | undefined,
      threads: intOption('threads', values.threads, 1),
    };
    return untilSignal(
      err,
      'pull',
      async (signal) => {
        const res = await pull({ ...options, signal, onProgress: pullProgress(err, json) });
        if (json) {
          writeJson(out, res);
          return 0;
        }
        const what = res.converted
          ? `${res.downloadedBytes ? `downloaded ${formatBytes(res.downloadedBytes)}, ` : 'checkpoint from the cache, '}converted to ${res.type} + ${res.visionType}`
          : `${res.type} + ${res.visionType} already converted`;
        err.write(`${res.repo}@${res.revision} (commit ${res.commit.slice(0, 12)}): ${what}\n`);
        out.write(`${res.model}\n${res.mmproj}\n`);
        return 0;
      },
      'a partial download is kept and resumes on the next pull',
    );
  },
};

const COLUMNS: [TextType, VisionType][] = [
  ['q4_k_m', 'q8_0'],
  ['q8_0', 'q8_0'],
  ['f16', 'f16'],
];

const gb = (bytes: number) => `${(bytes / 1e9).toFixed(1)} GB`;

export const MODELS_COMMAND: Command = {
  name: 'models',
  summary: 'the PaliGemma repos on the Hugging Face hub, with download size and memory per type',
  usage: `usage: paligemma models [--type <t> --vision-type <t>] [--json]

Lists the PaliGemma 1 and 2 checkpoints on the Hugging Face hub with their parameter count, download
size and the memory a converted pair needs (weights + KV cache at the default context), for a few
types or the one asked for. All sizes are estimates from parameter counts and bits per weight.

options:
      --type <t>             also this text type (with --vision-type, default ${DEFAULT_VISION_TYPE})
      --vision-type <t>      vision type for --type
      --json                 one JSON array
  -h, --help                 this text`,
  options: { type: { type: 'string' }, 'vision-type': { type: 'string' }, json: { type: 'boolean' } },
  async run({ values }, { out }) {
    const type = choiceOption('type', values.type, TEXT_TYPES);
    const visionType = choiceOption('vision-type', values['vision-type'], VISION_TYPES);
    if (visionType && !type) throw new UsageError('--vision-type goes with --type', 'models');
    const columns: [TextType, VisionType][] = type ? [[type, visionType ?? DEFAULT_VISION_TYPE]] : COLUMNS;
    const rows = KNOWN_MODELS.map((m) => ({
      repo: m.repo,
      family: `PaliGemma ${m.family}`,
      parameters: parameterCount(m).total,
      resolution: m.resolution,
      downloadBytes: checkpointBytes(m),
      pairs: columns.map(([t, vt]) => ({ type: t, visionType: vt, ...estimateSizes(m, t, vt) })),
    }));
    if (values.json) {
      writeJson(out, { estimates: true, models: rows });
      return 0;
    }
    const heads = columns.map(([t, vt]) => `${t}+${vt}`.padEnd(22));
    out.write(
      'PaliGemma on the Hugging Face hub (gated: accept the license on the repo page, then set HF_TOKEN).\n' +
        'Estimates from parameter counts and bits per weight, not measurements: file = the GGUF pair,\n' +
        'memory = file + KV cache at the default context (image tokens + 512).\n\n',
    );
    const width = Math.max(...rows.map((r) => r.repo.length), 4) + 1;
    out.write(`${'repo'.padEnd(width)} ${'params'.padStart(7)} ${'download'.padStart(9)}   ${heads.join('')}\n`);
    out.write(`${''.padEnd(width)} ${''.padStart(7)} ${''.padStart(9)}   ${columns.map(() => 'file / memory'.padEnd(22)).join('')}\n`);
    for (const r of rows) {
      const cells = r.pairs.map((p) => `${gb(p.fileBytes)} / ${gb(p.memoryBytes)}`.padEnd(22));
      out.write(`${r.repo.padEnd(width)} ${`${(r.parameters / 1e9).toFixed(2)}B`.padStart(7)} ${gb(r.downloadBytes).padStart(9)}   ${cells.join('')}\n`);
    }
    out.write('\nOther fine-tunes: google/paligemma-3b-ft-<task>-<resolution> (sizes as pt at that resolution).\n');
    return 0;
  },
};

function dirBytes(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) total += fs.statSync(path.join(e.parentPath ?? (e as unknown as { path: string }).path, e.name)).size;
  }
  return total;
}

function matches(pair: CachedPair, spec: string, type: string | undefined, visionType: string | undefined): boolean {
  const at = spec.indexOf('@');
  const repo = at < 0 ? spec : spec.slice(0, at);
  const rev = at < 0 ? undefined : spec.slice(at + 1);
  if (pair.repo !== repo) return false;
  if (rev !== undefined && pair.revision !== rev && !(rev.length >= 7 && /^[0-9a-f]+$/.test(rev) && pair.commit.startsWith(rev))) return false;
  return (type === undefined || pair.type === type) && (visionType === undefined || pair.visionType === visionType);
}

export const CACHE_COMMAND: Command = {
  name: 'cache',
  summary: 'converted pairs in the cache: ls shows them with sizes, rm frees them',
  usage: `usage: paligemma cache ls [--json]
       paligemma cache rm <org/name[@revision|@commit]> [--type <t>] [--vision-type <t>] [--checkpoint]
       paligemma cache rm --all

ls lists the GGUF pairs \`paligemma pull\` converted (in PALIGEMMA_CACHE, default ~/.cache/paligemma)
with their sizes, and the checkpoints of those repos in the Hugging Face cache. rm removes the pairs
that match; --checkpoint also removes the repo's checkpoint from the Hugging Face cache (every
revision: it is shared with Python, which then downloads it again if it needs it).

options:
      --type <t>, --vision-type <t>   only pairs of these types
      --checkpoint           rm: also the repo's downloaded checkpoint
      --all                  rm: every pair (and unfinished conversions)
      --json                 ls: one JSON object
  -h, --help                 this text`,
  options: {
    type: { type: 'string' },
    'vision-type': { type: 'string' },
    checkpoint: { type: 'boolean' },
    all: { type: 'boolean' },
    json: { type: 'boolean' },
  },
  positionals: true,
  async run({ values, positionals }, { out, err }) {
    const [sub, ...rest] = positionals;
    const settings = hubSettings();
    const pairs = listPairs(settings.ggufCache);
    if (sub === 'ls') {
      if (rest.length) throw new UsageError('cache ls takes no arguments', 'cache');
      const repos = [...new Set(pairs.map((p) => p.repo))];
      const checkpoints = repos.flatMap((name) => {
        const dir = repoDir(settings.hubCache, { type: 'model', name });
        return fs.existsSync(dir) ? [{ repo: name, dir, bytes: dirBytes(dir) }] : [];
      });
      const partial = unfinished(settings.ggufCache);
      if (values.json) {
        writeJson(out, { cache: settings.ggufCache, hubCache: settings.hubCache, pairs, checkpoints, unfinished: partial });
        return 0;
      }
      out.write(`converted pairs in ${settings.ggufCache}:\n`);
      if (!pairs.length) out.write('  (none)\n');
      for (const p of pairs) {
        out.write(
          `  ${`${p.repo}@${p.revision === p.commit ? p.commit.slice(0, 12) : `${p.revision} (${p.commit.slice(0, 12)})`}`.padEnd(50)} ${`${p.type} + ${p.visionType}${p.segDecoder ? ' + seg' : ''}`.padEnd(24)} ${formatBytes(p.bytes).padStart(10)}  ${p.dir}\n`,
        );
      }
      for (const u of partial) out.write(`  (${u.live ? 'conversion in progress' : 'unfinished conversion'}, ${formatBytes(u.bytes)})  ${u.dir}\n`);
      if (checkpoints.length) {
        out.write(`checkpoints of these repos in the Hugging Face cache (${settings.hubCache}):\n`);
        for (const c of checkpoints) out.write(`  ${c.repo.padEnd(50)} ${formatBytes(c.bytes).padStart(35)}  ${c.dir}\n`);
      }
      const total = pairs.reduce((s, p) => s + p.bytes, 0) + partial.reduce((s, u) => s + u.bytes, 0);
      out.write(`total of the pairs: ${formatBytes(total)}\n`);
      return 0;
    }
    if (sub === 'rm') {
      const type = choiceOption('type', values.type, TEXT_TYPES);
      const visionType = choiceOption('vision-type', values['vision-type'], VISION_TYPES);
      if (values.all) {
        if (rest.length) throw new UsageError('cache rm --all takes no repo', 'cache');
        // A conversion still going on (another process's) is left to finish.
        const partial = unfinished(settings.ggufCache);
        const freed = await removePairs(settings.ggufCache, [...pairs.map((p) => p.dir), ...partial.filter((u) => !u.live).map((u) => u.dir)]);
        out.write(`removed ${pairs.length} pair(s), ${formatBytes(freed)} freed\n`);
        for (const u of partial.filter((p) => p.live))
          err.write(`kept ${u.dir}: a conversion still going on (its process is alive, or it is another host's and recent)\n`);
        return 0;
      }
      if (rest.length !== 1) throw new UsageError('cache rm takes one repo (org/name[@revision]), or --all', 'cache');
      const spec = rest[0]!;
      const ref = parseRepo(spec.split('@')[0]!);
      const chosen = pairs.filter((p) => matches(p, spec, type, visionType));
      let freed = await removePairs(
        settings.ggufCache,
        chosen.map((p) => p.dir),
      );
      for (const p of chosen) out.write(`removed ${p.repo}@${p.commit.slice(0, 12)} ${p.type} + ${p.visionType} (${formatBytes(p.bytes)})\n`);
      const ckpt = repoDir(settings.hubCache, ref);
      if (values.checkpoint && fs.existsSync(ckpt)) {
        const bytes = dirBytes(ckpt);
        await fs.promises.rm(ckpt, { recursive: true, force: true });
        freed += bytes;
        out.write(`removed the checkpoint ${ref.name} from the Hugging Face cache (${formatBytes(bytes)})\n`);
      } else if (!chosen.length) {
        throw new PaliGemmaError('ERR_FILE_NOT_FOUND', `cache rm ${spec}: nothing in the cache matches (see \`paligemma cache ls\`)`);
      }
      err.write(`${formatBytes(freed)} freed\n`);
      return 0;
    }
    throw new UsageError(sub ? `unknown cache command '${sub}' (ls or rm)` : 'cache needs ls or rm', 'cache');
  },
};
