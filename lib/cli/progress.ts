/** Progress on stderr: a bar with bytes, rate and ETA on a TTY, a few plain lines otherwise. */
import type { ConvertProgress } from '../convert/index';
import type { Out } from './args';

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '--:--';
  const m = Math.floor(s / 60);
  return `${m}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

/** Conversion progress: a one-line bar (bytes, rate, ETA) on a TTY; a line per 10% otherwise. */
export function progressPrinter(err: Out, now: () => number = Date.now) {
  const start = now();
  let lastPlain = -1;
  return (p: ConvertProgress) => {
    const elapsed = (now() - start) / 1000;
    const rate = elapsed > 0 ? p.bytesDone / elapsed : 0;
    const eta = p.fraction > 0 ? (elapsed / p.fraction) * (1 - p.fraction) : Infinity;
    const pct = Math.round(p.fraction * 100);
    const what = p.phase === 'quantize' ? 'quantizing (llama.cpp)' : p.phase;
    const line = `${what.padEnd(22)} ${String(pct).padStart(3)}% ${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)} ${formatBytes(rate)}/s ETA ${formatDuration(eta)}`;
    if (err.isTTY) {
      const width = 24;
      const filled = Math.round(p.fraction * width);
      err.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${line}\x1b[K${p.phase === 'done' ? '\n' : ''}`);
    } else if (Math.floor(pct / 10) !== lastPlain || p.phase === 'done') {
      lastPlain = Math.floor(pct / 10);
      err.write(`${line}\n`);
    }
  };
}

/** Model load progress: a percentage in place on a TTY; every 25% otherwise. */
export function loadProgress(err: Out) {
  let last = -1;
  return (f: number) => {
    const pct = Math.floor(f * 100);
    if (err.isTTY) err.write(`\rloading model ${pct}%${f >= 1 ? '\n' : ''}`);
    else if (Math.floor(pct / 25) !== last) {
      last = Math.floor(pct / 25);
      err.write(`loading model ${pct}%\n`);
    }
  };
}
