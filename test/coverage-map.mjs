// tap coverage map: every test counts toward lib/ (the TypeScript API) and nothing else, so scripts
// that tests spawn (packaging, builds) do not dilute the thresholds in .taprc.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const libFiles = fs
  .readdirSync(path.join(root, 'lib'), { recursive: true })
  .map(String)
  .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
  .map((f) => path.join('lib', f));

export default () => libFiles;
