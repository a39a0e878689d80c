import { Writable } from 'node:stream';
import { main } from '../../lib/cli/main';

/** A writable stream that keeps what is written to it. */
export function sink() {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, cb) {
      text += chunk;
      cb();
    },
  });
  return {
    stream,
    get text() {
      return text;
    },
  };
}

/** Runs the CLI in this process; returns its exit code and what it printed. */
export async function runCli(args: string[]) {
  const out = sink();
  const err = sink();
  const code = await main(args, out.stream, err.stream);
  return { code, out: out.text, err: err.text };
}
