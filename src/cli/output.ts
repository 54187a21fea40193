// What the CLI prints: errors that carry an exit code, tables, times, masked headers and payloads, and a progress bar.
import process from 'node:process';
import { isSecretName, redact } from '../observability/log.ts';

/** Exit codes: 0 done, 1 the operation failed (rejected, unreachable, not found, store error), 2 bad usage. */
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** A failure the user can act on: its message is printed as is, without a stack. */
export class CliError extends Error {
  override name = 'CliError';
  readonly exitCode: number;
  constructor(message: string, exitCode = EXIT_FAILED) {
    super(message);
    this.exitCode = exitCode;
  }
}

/** Bad command line: the message is followed by the usage of the command. */
export class UsageError extends CliError {
  override name = 'UsageError';
  readonly command: string | undefined;
  constructor(message: string, command?: string) {
    super(message, EXIT_USAGE);
    this.command = command;
  }
}

export function out(text = ''): void {
  process.stdout.write(`${text}\n`);
}

export function err(text = ''): void {
  process.stderr.write(`${text}\n`);
}

export function printJson(value: unknown): void {
  out(JSON.stringify(value, null, 2));
}

/** `2026-11-01 12:03:04` in UTC: sortable and the same on every machine. */
export function isoTime(ms: number | null | undefined): string {
  if (ms == null) return '-';
  return new Date(ms).toISOString().slice(0, 19).replace('T', ' ');
}

export function jsonTime(ms: number | null | undefined): string | null {
  return ms == null ? null : new Date(ms).toISOString();
}

/** `3 min ago`, `in 12 s`. */
export function relative(ms: number, now = Date.now()): string {
  const d = Math.abs(now - ms);
  const [n, unit] =
    d < 60_000
      ? [d / 1000, 's']
      : d < 3_600_000
        ? [d / 60_000, 'min']
        : d < 86_400_000
          ? [d / 3_600_000, 'h']
          : [d / 86_400_000, 'd'];
  const text = `${Math.floor(n)} ${unit}`;
  return ms <= now ? `${text} ago` : `in ${text}`;
}

export function truncate(text: string, max: number): string {
  const flat = text.replace(/\s+/g, ' ');
  return flat.length <= max ? flat : `${flat.slice(0, max - 1)}…`;
}

/** Left-aligned columns, two spaces apart; the last column is never padded (keys stay copyable). */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] as number)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

/**
 * Stores do not keep the signature by default, but a keepHeaders list can (the relay's forwardSignature needs it):
 * never print one in full, --reveal or not. Lava's signature has no timestamp, so with the body it is a replayable
 * delivery; its first characters are enough to tell two apart.
 */
export function maskHeaders(headers: Record<string, string>): Record<string, string> {
  const masked: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    masked[name] = isSecretName(name) ? `${value.slice(0, 4)}… (masked)` : value;
  }
  return masked;
}

/**
 * A payload as the CLI prints it: fields named like a secret or personal data (the rule the logger uses) become
 * `"[redacted]"`, unless the user asked for --reveal. Limits far above the logger's: this is one event, on request.
 */
export function maskPayload(value: unknown, reveal = false): unknown {
  return reveal ? value : redact(value, { maxDepth: 64, maxNodes: 1_000_000 });
}

/** A one-line progress bar on stderr, drawn only on a terminal (never in pipes or logs). */
export function progressBar(total: number, label: string): { tick(): void; done(): void } {
  const tty = Boolean(process.stderr.isTTY) && total > 0;
  let n = 0;
  let last = 0;
  const draw = () => {
    const width = 30;
    const filled = Math.round((n / total) * width);
    process.stderr.write(`\r${label} [${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ${n}/${total}`);
  };
  return {
    tick() {
      n++;
      const now = Date.now();
      if (tty && (now - last > 50 || n === total)) {
        last = now;
        draw();
      }
    },
    done() {
      if (tty) process.stderr.write('\n');
    },
  };
}
