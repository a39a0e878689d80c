import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { tmpDir } from './helpers/tmp';

// The gates of `npm run lint` must catch a badly formatted file, TypeScript and C++ alike.
const root = path.join(__dirname, '..');

t.test('the formatter gates reject badly formatted files', (t) => {
  const dir = tmpDir();
  const ts = path.join(dir, 'bad.ts');
  fs.writeFileSync(ts, 'export   const x = {a:1,\n b : 2}\n');
  const biome = spawnSync(process.execPath, [require.resolve('@biomejs/biome/bin/biome'), 'format', '--colors=off', `--config-path=${root}`, ts], {
    encoding: 'utf8',
  });
  t.not(biome.status, 0, 'biome refuses it');
  t.match(`${biome.stdout}${biome.stderr}`, /differs from formatting output|would have printed/i);

  const cpp = path.join(dir, 'bad.cpp');
  fs.writeFileSync(cpp, 'int   f( int a ){return a+1;}\n');
  const clang = path.join(root, 'node_modules', 'clang-format', 'bin', 'linux_x64', 'clang-format');
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    t.comment('clang-format check: linux-x64 only');
    return t.end();
  }
  const cf = spawnSync(clang, [`--style=file:${path.join(root, '.clang-format')}`, '--dry-run', '--Werror', cpp], { encoding: 'utf8' });
  t.not(cf.status, 0, 'clang-format refuses it');
  t.match(cf.stderr, /code should be clang-formatted/);
  const good = path.join(dir, 'good.cpp');
  fs.writeFileSync(good, 'int f(int a) {\n    return a + 1;\n}\n');
  t.equal(spawnSync(clang, [`--style=file:${path.join(root, '.clang-format')}`, '--dry-run', '--Werror', good]).status, 0, 'and accepts a formatted one');
  t.end();
});
