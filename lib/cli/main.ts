#!/usr/bin/env node
/**
 * The `paligemma` command line tool: a table of commands, each with its own --help.
 * Exit codes: 0 ok, 1 runtime error, 2 bad usage.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PaliGemmaError } from '../errors';
import { packageRoot } from '../native/binding';
import { type CliIO, type Command, type Out, parseCommand, UsageError } from './args';
import { CONVERT_COMMAND, CONVERT_LORA_COMMAND } from './commands/convert';
import { CACHE_COMMAND, MODELS_COMMAND, PULL_COMMAND } from './commands/hub';
import { INFO_COMMAND, SYSTEM_COMMAND } from './commands/inspect';
import { SELFTEST_COMMAND } from './commands/selftest';
import { SERVE_COMMAND } from './commands/serve';
import { TASK_COMMANDS } from './commands/tasks';

export const COMMANDS: Command[] = [
  ...TASK_COMMANDS,
  CONVERT_COMMAND,
  CONVERT_LORA_COMMAND,
  PULL_COMMAND,
  MODELS_COMMAND,
  CACHE_COMMAND,
  INFO_COMMAND,
  SYSTEM_COMMAND,
  SELFTEST_COMMAND,
  SERVE_COMMAND,
];

function version(): string {
  return (JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
}

function usage(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return `usage: paligemma <command> [options]        (paligemma <command> --help for its options)

commands:
${COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`).join('\n')}
  ${'help'.padEnd(width)}  this text, or a command's: paligemma help <command>

  -v, --version  the package version
exit codes: 0 ok, 1 runtime error, 2 bad usage
`;
}

export async function main(argv: string[], out: Out = process.stdout, err: Out = process.stderr): Promise<number> {
  const [name, ...rest] = argv;
  const io: CliIO = { out, err };
  const find = (n: string | undefined) => COMMANDS.find((c) => c.name === n);
  try {
    if (name === '--version' || name === '-v') {
      out.write(`${version()}\n`);
      return 0;
    }
    if (name === 'help' || name === '--help' || name === '-h') {
      const cmd = find(rest[0]);
      if (rest[0] && !cmd) throw new UsageError(`unknown command '${rest[0]}'`);
      out.write(cmd ? `${cmd.usage}\n` : usage());
      return 0;
    }
    const cmd = find(name);
    if (!cmd) throw new UsageError(name ? `unknown command '${name}'` : 'no command given');
    const parsed = parseCommand(cmd, rest);
    if (parsed.help) {
      out.write(`${cmd.usage}\n`);
      return 0;
    }
    return await cmd.run(parsed, io);
  } catch (e) {
    if (e instanceof UsageError) {
      const cmd = find(e.command);
      err.write(`paligemma: ${e.message}\n\n${cmd ? `${cmd.usage}\n` : usage()}`);
      return 2;
    }
    err.write(`paligemma: ${e instanceof PaliGemmaError ? e.message : e instanceof Error ? e.message : String(e)}\n`);
    if (process.env.PALIGEMMA_DEBUG && e instanceof Error) err.write(`${e.stack}\n`);
    return 1;
  }
}

if (require.main === module) {
  // `paligemma info x.gguf | head`: a closed pipe ends the program quietly.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(0);
      throw e;
    });
  }
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
