import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { main } from '../lib/cli/main';
import { GGUFWriter } from '../lib/gguf/write';
import { sink } from './helpers/cli';
import { tmpDir } from './helpers/tmp';

t.test('info prints metadata and tensors; bad usage exits 2; bad files exit 1', async (t) => {
  const dir = tmpDir();
  const file = path.join(dir, 'm.gguf');
  const w = new GGUFWriter(file).setString('general.architecture', 'gemma');
  w.addTensor('token_embd.weight', [8, 4], 'F32');
  await w.begin();
  await w.writeTensor('token_embd.weight', new Uint8Array(128));
  await w.finish();

  const out = sink();
  t.equal(await main(['info', file], out.stream, sink().stream), 0);
  t.match(out.text, /general\.architecture\s+"gemma"/);
  t.match(out.text, /token_embd\.weight\s+f32\s+\[8, 4\]/);

  const err = sink();
  t.equal(await main(['info'], sink().stream, err.stream), 2);
  t.match(err.text, /usage: paligemma/);
  t.equal(await main(['bogus'], sink().stream, sink().stream), 2);
  t.equal(await main([], sink().stream, sink().stream), 2);

  const bad = path.join(dir, 'bad.gguf');
  fs.writeFileSync(bad, 'nope');
  const err2 = sink();
  t.equal(await main(['info', bad], sink().stream, err2.stream), 1);
  t.match(err2.text, /bad\.gguf: not a GGUF file/);
  t.equal(err2.text.trim().split('\n').length, 1, 'one line');

  const sys = sink();
  t.equal(await main(['system'], sys.stream, sink().stream), 0);
  t.match(sys.text, /device CPU/);
  const help = sink();
  t.equal(await main(['help'], help.stream, sink().stream), 0);
});

t.test('the compiled CLI runs as a program', (t) => {
  const cli = path.join(__dirname, '..', 'dist', 'cli', 'main.js');
  const res = spawnSync(process.execPath, [cli, 'nope'], { encoding: 'utf8' });
  t.equal(res.status, 2);
  t.match(res.stderr, /unknown command 'nope'/);
  t.end();
});
