// Starts src/server.ts as a real child process (bun run, or deno serve) and waits until /healthz answers.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname ?? new URL('.', import.meta.url).pathname, '../..');
const BIN = join(ROOT, 'node_modules', '.bin');

export function binAvailable(name: 'bun' | 'deno'): boolean {
  return existsSync(join(BIN, name));
}

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => res(port));
    });
    srv.on('error', rej);
  });
}

export interface ServerProcess {
  url: string;
  port: number;
  child: ChildProcess;
  /** Everything it wrote to stdout and stderr so far. */
  output(): string;
  /** Resolves with the exit code (or signal name) once it has exited. */
  exited: Promise<number | string>;
  kill(signal?: NodeJS.Signals): void;
}

export interface StartOptions {
  runtime?: 'bun' | 'deno';
  env: Record<string, string>;
  port?: number;
  /** Wait for /healthz up to this long. Default 15 000. */
  readyTimeoutMs?: number;
  /** Do not wait for /healthz (for start-up failure tests). */
  noWait?: boolean;
  cwd?: string;
}

export async function startServer(options: StartOptions): Promise<ServerProcess> {
  const runtime = options.runtime ?? 'bun';
  const port = options.port ?? (await freePort());
  const args =
    runtime === 'bun'
      ? ['run', join(ROOT, 'src/server.ts')]
      : ['serve', '-A', '--port', String(port), '--host', '127.0.0.1', join(ROOT, 'src/server.ts')];
  const child = spawn(join(BIN, runtime), args, {
    cwd: options.cwd ?? ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      PORT: String(port),
      LAVA_WEBHOOK_HOST: '127.0.0.1',
      LOG_LEVEL: 'warn',
      ...options.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d) => {
    out += d.toString();
  });
  const exited = new Promise<number | string>((res) => {
    child.on('exit', (code, signal) => res(code ?? signal ?? -1));
  });
  const url = `http://127.0.0.1:${port}`;
  const proc: ServerProcess = {
    url,
    port,
    child,
    output: () => out,
    exited,
    kill: (signal = 'SIGKILL') => {
      child.kill(signal);
    },
  };
  if (options.noWait) return proc;
  const deadline = Date.now() + (options.readyTimeoutMs ?? 15_000);
  let done = false;
  void exited.then(() => {
    done = true;
  });
  while (Date.now() < deadline && !done) {
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.status === 200) return proc;
    } catch {
      // not up yet
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  child.kill('SIGKILL');
  throw new Error(`server did not become healthy:\n${out}`);
}
