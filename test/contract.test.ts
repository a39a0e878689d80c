// The addon's contract (lib/native/contract.ts): the enumerations both sides spell agree, and the
// native option readers reject unknown keys and mistyped values instead of falling back to defaults.
import path from 'node:path';
import t from 'tap';
import { getBinding } from '../lib/native/binding';
import { NATIVE_ERROR_CODES, PHASES, STOP_REASONS } from '../lib/native/contract';
import { convertedFixture, FIXTURES } from './helpers/fixtures';

const { binding } = getBinding('cpu');
const png = path.join(FIXTURES, 'tiny-v2', 'reference', 'shapes_150x200.png');

t.test('enumerations are the same on both sides', (t) => {
  t.same(binding.constants.errorCodes, [...NATIVE_ERROR_CODES], 'error codes');
  t.same(binding.constants.stopReasons, [...STOP_REASONS], 'stop reasons');
  t.same(binding.constants.phases, [...PHASES], 'phases');
  t.end();
});

t.test('loadModel rejects unknown keys and mistyped values', async (t) => {
  const files = await convertedFixture('tiny-v2');
  const token = new binding.AbortToken();
  const bad: [Record<string, unknown>, RegExp][] = [
    [{ ...files, bogus: 1 }, /loadModel options: unknown key 'bogus'/],
    [{ ...files, threads: '2' }, /loadModel options\.threads: expected an integer/],
    [{ ...files, threads: 2.5 }, /loadModel options\.threads: expected an integer/],
    [{ ...files, flashAttention: 'maybe' }, /flashAttention: expected one of 'auto', 'on', 'off'/],
    [{ ...files, mmap: 'yes' }, /mmap: expected a boolean/],
    [{ ...files, textMatmul: 'fast' }, /textMatmul: expected one of 'auto', 'ggml', 'int8'/],
    [{ ...files, imageCacheMB: 64 }, /unknown key 'imageCacheMB'/],
    [{ model: files.model }, /model and mmproj are required/],
  ];
  for (const [options, pattern] of bad) {
    t.throws(() => binding.loadModel(options as never, token, () => undefined), { code: 'ERR_INVALID_ARGUMENT', message: pattern }, String(pattern));
  }
  const m = await binding.loadModel({ ...files, gpu: 'cpu', threads: 1, imageCacheBytes: 0, visionAttention: 'separate' }, token, () => undefined);
  const image = { bytes: new Uint8Array(require('node:fs').readFileSync(png)) };
  const badGenerate: [Record<string, unknown>, RegExp][] = [
    [{ image, prompt: 'x', maxTokenz: 3 }, /generate options: unknown key 'maxTokenz'/],
    [{ image, prompt: 'x', maxTokens: '3' }, /generate options\.maxTokens: expected an integer/],
    [{ image, prompt: 'x', stop: ['a', 1] }, /generate options\.stop: expected an array of strings/],
    [{ image, prompt: 'x', forceTokens: [1, 2] }, /generate options\.forceTokens: expected an Int32Array/],
    [{ image: { bytes: image.bytes, extra: true }, prompt: 'x' }, /generate options\.image: unknown key 'extra'/],
    [{ image: { pixels: new Uint8Array(12), width: 2, height: 2 }, prompt: 'x' }, /channels: expected an integer/],
  ];
  for (const [options, pattern] of badGenerate) {
    t.throws(() => m.generate(options as never, token, undefined), { code: 'ERR_INVALID_ARGUMENT', message: pattern }, String(pattern));
  }
  const ok = await m.generate({ image, prompt: 'caption en', maxTokens: 2 }, token, undefined);
  t.equal(ok.tokens.length, 2, 'a well-formed call still works');
  await m.dispose();
});
