// The checks that compare with the float64 reference must be able to fail: the near-tie rule
// accepts only the reference's runner-up, and a selftest that checks nothing does not pass.
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { runSelftest, SELFTEST_DIR } from '../lib/cli/commands/selftest';
import { greedyVerdict } from '../lib/util/reference';
import { sink } from './helpers/cli';
import { tmpDir } from './helpers/tmp';

t.test('greedy tokens: a flip is accepted only at a near-tie, to the runner-up', (t) => {
  const vocab = 4;
  // Step 0: clear winner 2; step 1: 1 and 3 nearly tied (gap 5e-3); step 2: clear winner 0.
  const logits = Float32Array.from([0, 0.1, 5, 0.2, 0, 2.005, 0.5, 2.0, 3, 0, 1, 2]);
  const want = [2, 1, 0];
  t.ok(greedyVerdict([2, 1, 0], want, logits, vocab).ok, 'the same tokens');
  t.ok(greedyVerdict([2, 3, 3], want, logits, vocab).ok, 'the runner-up at a near-tie (what follows differs, as it may)');
  t.notOk(greedyVerdict([2, 2, 0], want, logits, vocab).ok, 'another token at a near-tie');
  t.notOk(greedyVerdict([2, 1, 3], want, logits, vocab).ok, 'the runner-up where there is no tie');
  t.notOk(greedyVerdict([3, 1, 0], want, logits, vocab).ok, 'a flip at the first step, no tie');
  t.notOk(greedyVerdict([2, 1], want, logits, vocab).ok, 'fewer tokens');
  t.end();
});

t.test('selftest fails when it checks no case or misses a reference file', async (t) => {
  const manifest = JSON.parse(fs.readFileSync(path.join(SELFTEST_DIR, 'selftest.json'), 'utf8'));
  const copy = (cases: unknown[]) => {
    const dir = tmpDir();
    for (const f of fs.readdirSync(SELFTEST_DIR)) fs.copyFileSync(path.join(SELFTEST_DIR, f), path.join(dir, f));
    fs.writeFileSync(path.join(dir, 'selftest.json'), JSON.stringify({ ...manifest, cases }));
    return dir;
  };
  const none = sink();
  t.equal(await runSelftest('cpu', none.stream, false, copy([])), false, 'zero cases: FAILED');
  t.match(none.text, /selftest FAILED: no case was checked/);

  const dir = copy(manifest.cases);
  fs.rmSync(path.join(dir, `${manifest.cases[0].name}.logits.f32`));
  await t.rejects(runSelftest('cpu', sink().stream, false, dir), /logits\.f32/, 'a missing reference file is an error');

  const ok = sink();
  t.equal(await runSelftest('cpu', ok.stream, false), true, 'the shipped selftest passes');
  t.equal((ok.text.match(/^PASS /gm) ?? []).length, manifest.cases.length, 'one PASS per case');
});
