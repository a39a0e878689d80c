import { spawnSync } from 'node:child_process';
import path from 'node:path';
import t from 'tap';

// npm pack -> npm install <tarball> in an empty project with no compiler on PATH -> require + import.
t.test('the packed tarball installs and loads its prebuilt addon without compiling', (t) => {
  const res = spawnSync(process.execPath, [path.join(__dirname, '..', 'scripts', 'test-pack.mjs')], { encoding: 'utf8' });
  t.equal(res.status, 0, res.stderr.slice(-2000));
  t.match(res.stderr, /installed without compiling/);
  t.match(res.stdout, /pack test passed/);
  t.end();
});
