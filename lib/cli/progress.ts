/** Progress on stderr: a bar with bytes, rate and ETA on a TTY, a few plain lines otherwise (conversion, pull, load). */
import type { ConvertProgress } from '../convert/index';
import type { PullProgress } from '../hub/pull';
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

/**
 * Pull progress on stderr: the download (bytes, rate and ETA of this run's transfer), then the
 * conversion as progressPrinter shows it. With `json`, one JSON object a line instead, at most one
 * a second per phase (plus each phase's end), for programs that watch.
 */
export function pullProgress(err: Out, json = false, now: () => number = Date.now) {
  let convert: ReturnType<typeof progressPrinter> | undefined;
  let start = 0;
  let base = 0;
  let lastWrite = -Infinity;
  let lastPlain = -1;
  let lastPhase = '';
  let total = -1;
  return (p: PullProgress) => {
    if (p.phase === 'download' && p.waitingFor) {
      // Said once, whatever the mode: a pull waiting on another one must not look hung.
      err.write(json ? `${JSON.stringify(p)}\n` : `${err.isTTY ? '\r\x1b[K' : ''}waiting for ${p.waitingFor}\n`);
      return;
    }
    const t = now();
    const phaseChanged = p.phase !== lastPhase;
    lastPhase = p.phase;
    if (p.phase !== 'download') {
      if (!json) {
        convert ??= progressPrinter(err, now);
        convert(p);
      } else if (phaseChanged || p.phase === 'done' || t - lastWrite >= 1000) {
        lastWrite = t;
        err.write(`${JSON.stringify({ phase: p.phase, bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, fraction: Number(p.fraction.toFixed(4)) })}\n`);
      }
      return;
    }
    if (phaseChanged || p.bytesTotal !== total) {
      // A new download (or another batch of files within one): rate and ETA start over.
      start = t;
      base = p.bytesDone;
      total = p.bytesTotal;
      lastPlain = -1;
    }
    const elapsed = (t - start) / 1000;
    const rate = elapsed > 0 ? (p.bytesDone - base) / elapsed : 0;
    const eta = rate > 0 ? (p.bytesTotal - p.bytesDone) / rate : Infinity;
    const finished = p.bytesDone >= p.bytesTotal;
    if (json) {
      if (!phaseChanged && !finished && t - lastWrite < 1000) return;
      lastWrite = t;
      const line = {
        ...p,
        fraction: Number(p.fraction.toFixed(4)),
        bytesPerSecond: Math.round(rate),
        etaSeconds: Number.isFinite(eta) ? Math.round(eta) : null,
      };
      err.write(`${JSON.stringify(line)}\n`);
      return;
    }
    const pct = Math.floor(p.fraction * 100);
    const line = `downloading ${p.file.padEnd(20)} ${String(pct).padStart(3)}% ${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)} ${formatBytes(rate)}/s ETA ${formatDuration(eta)}`;
    if (err.isTTY) {
      if (!finished && t - lastWrite < 100) return;
      lastWrite = t;
      const width = 24;
      const filled = Math.round(p.fraction * width);
      err.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${line}\x1b[K${finished ? '\n' : ''}`);
    } else if (Math.floor(pct / 10) !== lastPlain) {
      lastPlain = Math.floor(pct / 10);
      err.write(`${line}\n`);
    }
  };
}
