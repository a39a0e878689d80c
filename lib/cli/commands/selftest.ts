/**
 * `paligemma selftest`: the tiny model shipped with the package (a GGUF pair converted from the
 * test fixture, with the float64 reference's outputs) run end to end and checked.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PaliGemma } from '../../model/paligemma';
import { packageRoot } from '../../native/binding';
import { GPU_CHOICES } from '../../native/contract';
import { greedyVerdict, readF32File, relError } from '../../util/reference';
import { type Command, choiceOption, type Out, writeJson } from '../args';

/** What scripts/make-selftest.mjs writes into <package>/selftest/. */
export interface SelftestManifest {
  model: string;
  mmproj: string;
  cases: { name: string; image: string; prompt: string; greedy_ids: number[]; logits_shape: [number, number] }[];
}

export const SELFTEST_DIR = path.join(packageRoot, 'selftest');
const LOGITS_TOLERANCE = 5e-3;

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

export async function runSelftest(gpu: (typeof GPU_CHOICES)[number] | undefined, out: Out, json: boolean, dir = SELFTEST_DIR): Promise<boolean> {
  const manifestFile = path.join(dir, 'selftest.json');
  if (!fs.existsSync(manifestFile)) {
    throw new Error(`${manifestFile} is missing: this package was built without its selftest model (npm run build:selftest makes it)`);
  }
  const manifest = JSON.parse(fs.readFileSync(manifestFile, 'utf8')) as SelftestManifest;
  const checks: Check[] = [];
  let t0 = performance.now();
  const model = await PaliGemma.load({ model: path.join(dir, manifest.model), mmproj: path.join(dir, manifest.mmproj), gpu });
  const loadMs = performance.now() - t0;
  try {
    if (!json) out.write(`paligemma-node selftest: backend ${model.info.backend}, ${model.info.threads} threads, load ${loadMs.toFixed(0)} ms\n`);
    for (const c of manifest.cases) {
      const image = path.join(dir, `${c.image}.png`);
      const [steps, vocab] = c.logits_shape;
      const want = readF32File(path.join(dir, `${c.name}.logits.f32`));
      if (want.length !== steps * vocab) throw new Error(`${c.name}.logits.f32: ${want.length} values, expected ${steps} x ${vocab}`);
      t0 = performance.now();
      // Every step's logits along the reference's own tokens, within the default settings' tolerance ...
      const forced = await model.generate({ image, prompt: c.prompt, maxTokens: steps, logits: true, forceTokens: c.greedy_ids });
      let worst = 0;
      for (let s = 0; s < steps; s++) worst = Math.max(worst, relError(forced.logits![s]!, want.subarray(s * vocab, (s + 1) * vocab)));
      // ... and free greedy decoding (the image now comes from the cache).
      const r = await model.generate({ image, prompt: c.prompt, maxTokens: steps });
      const greedy = greedyVerdict(r.tokens, c.greedy_ids.slice(0, steps), want, vocab);
      const tm = forced.timings;
      checks.push({
        name: `${c.image} "${c.prompt}"`,
        ok: worst <= LOGITS_TOLERANCE && forced.logits!.length === steps && greedy.ok,
        detail: `logits rel. error ${worst.toExponential(1)} (<= ${LOGITS_TOLERANCE}), ${greedy.detail}; encode ${tm.encodeMs.toFixed(1)} ms, prefill ${tm.prefillMs.toFixed(1)} ms, ${(performance.now() - t0).toFixed(0)} ms in all`,
      });
    }
  } finally {
    await model.dispose();
  }
  // No case checked is a failure too: a package without its reference must not pass.
  const passed = checks.length > 0 && checks.length === manifest.cases.length && checks.every((c) => c.ok);
  if (json) {
    writeJson(out, { passed, backend: model.info.backend, threads: model.info.threads, loadMs, checks });
  } else {
    for (const c of checks) out.write(`${c.ok ? 'PASS' : 'FAIL'} ${c.name}: ${c.detail}\n`);
    out.write(
      passed
        ? 'selftest passed\n'
        : checks.length
          ? 'selftest FAILED: results differ from the reference beyond its tolerance\n'
          : 'selftest FAILED: no case was checked\n',
    );
  }
  return passed;
}

export const SELFTEST_COMMAND: Command = {
  name: 'selftest',
  summary: 'run the tiny model shipped with the package and check it against its reference',
  usage: `usage: paligemma selftest [--gpu G] [--json]

Loads the tiny PaliGemma shipped with the package, runs three prompts and checks every step's
logits and the greedy tokens against an independent float64 reference. Prints PASS/FAIL per case.

options:
      --gpu <g>              ${GPU_CHOICES.join(' | ')} (default auto)
      --json                 one JSON object { passed, checks: [...] }
  -h, --help                 this text`,
  options: { gpu: { type: 'string' }, json: { type: 'boolean' } },
  async run({ values }, { out }) {
    return (await runSelftest(choiceOption('gpu', values.gpu, GPU_CHOICES), out, values.json === true)) ? 0 : 1;
  },
};
