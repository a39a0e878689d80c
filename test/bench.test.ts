import t from 'tap';
import { textFlopsPerToken, visionFlops } from '../lib/bench';
import { main } from '../lib/cli';
import { Writable } from 'node:stream';

t.test('FLOP counts at PaliGemma-3B shapes', (t) => {
  // ~0.22 TFLOP per 224 px image through SigLIP-So400m; Gemma-2B: ~2 B multiply-adds per token.
  t.ok(Math.abs(visionFlops(224) / 1e12 - 0.22) < 0.02, `${(visionFlops(224) / 1e12).toFixed(3)} TFLOP at 224 px`);
  t.ok(visionFlops(448) > 4 * visionFlops(224), 'attention grows faster than linear');
  t.ok(Math.abs(textFlopsPerToken() / 1e9 - 3.96) < 0.1, `${(textFlopsPerToken() / 1e9).toFixed(2)} GFLOP per token`);
  t.end();
});

t.test('bench: bad usage exits 2', async (t) => {
  const sink = new Writable({ write(_c, _e, cb) { cb(); } });
  for (const args of [['--synthetic', '300'], ['--type', 'q9'], ['--vision-type', 'q4_k_m'], ['--reps', '0'], ['--threads', 'x'], ['--bogus']]) {
    t.equal(await main(['bench', ...args], sink, sink), 2, args.join(' '));
  }
});
