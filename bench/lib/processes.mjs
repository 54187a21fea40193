// Servers and load generators: start a target pinned to the server cores, wait for its first 200, run wrk on the
// load cores, read ours' /metrics, stop it.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { BENCH_SECRET, body } from '../events.mjs';
import {
  COLD_N,
  COLD_OFFSET,
  CONNECTIONS,
  LOAD_CPUS,
  PATH,
  PG_URL,
  pin,
  ROOT,
  SERVER_CPUS,
  sigAt,
  sigs,
  template,
  THREADS,
} from './config.mjs';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
let nextPort = 18_000 + Math.floor(Math.random() * 2000);

function pinned(cpuList, cmd) {
  return pin ? ['taskset', ['-c', cpuList, ...cmd]] : [cmd[0], cmd.slice(1)];
}

export function startProcess(cmd, extraEnv) {
  const port = nextPort++;
  const [file, args] = pinned(SERVER_CPUS, cmd(port));
  const t0 = performance.now();
  const child = spawn(file, args, {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME ?? '/tmp',
      PORT: String(port),
      HOSTNAME: '127.0.0.1',
      LOG_LEVEL: 'warn',
      LAVA_WEBHOOK_SECRET: BENCH_SECRET,
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (d) => {
    if (output.length < 20_000) output += d;
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((r) => child.on('exit', (code, signal) => r(code ?? signal)));
  return { child, port, t0, exited, output: () => output };
}

let coldIndex = 0;
function signedInit(mode) {
  const i = COLD_OFFSET + (coldIndex++ % COLD_N);
  const sig = sigAt(i);
  const headers =
    mode === 'github'
      ? {
          'content-type': 'application/json',
          'x-hub-signature-256': `sha256=${sig}`,
          'x-github-event': 'ping',
          'x-github-delivery': String(i),
        }
      : { 'content-type': 'application/json', 'x-webhook-signature': sig };
  return { method: 'POST', headers, body: body(i) };
}

/** Polls a signed POST until it answers 200; returns ms from spawn to that answer. */
export async function firstOk(proc, mode, timeoutMs = 30_000) {
  let done = false;
  void proc.exited.then(() => {
    done = true;
  });
  const deadline = proc.t0 + timeoutMs;
  let lastStatus = null;
  while (!done && performance.now() < deadline) {
    try {
      const res = await fetch(`http://127.0.0.1:${proc.port}${PATH}`, signedInit(mode));
      await res.arrayBuffer();
      lastStatus = res.status;
      if (res.status === 200) return performance.now() - proc.t0;
    } catch {
      // Not listening yet.
    }
    await sleep(2);
  }
  throw new Error(`no 200 from the server (last status ${lastStatus}; exited: ${done}):\n${proc.output()}`);
}

export async function stop(proc) {
  proc.child.kill('SIGTERM');
  const t = setTimeout(() => proc.child.kill('SIGKILL'), 8000);
  await proc.exited;
  clearTimeout(t);
}

export function rssMb(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : null;
  } catch {
    return null;
  }
}

export function wrkArgs(port, mode, seconds, offset) {
  return pinned(LOAD_CPUS, [
    'wrk',
    `-t${THREADS}`,
    `-c${CONNECTIONS}`,
    `-d${seconds}s`,
    '--timeout',
    '10s',
    '-s',
    join(ROOT, 'bench', 'wrk', 'lava.lua'),
    `http://127.0.0.1:${port}${PATH}`,
    '--',
    mode,
    sigs,
    template,
    String(THREADS),
    String(offset),
  ]);
}

/** wrk's summary of one run; `rate` > 0 paces it: about that many requests/s, on a Poisson schedule (see lava.lua). */
export function runWrk(port, mode, seconds, offset, rate = 0) {
  return new Promise((resolvePromise, reject) => {
    const [file, args] = wrkArgs(port, mode, seconds, offset);
    const child = spawn(file, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: rate > 0 ? { ...process.env, BENCH_RATE: String(rate) } : process.env,
    });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    child.on('exit', () => {
      const line = out.split('\n').find((l) => l.startsWith('BENCH_JSON '));
      if (!line) reject(new Error(`wrk gave no result:\n${out}`));
      else resolvePromise(JSON.parse(line.slice('BENCH_JSON '.length)));
    });
  });
}

/** wrk's error count of one run: non-2xx answers and socket errors of every kind. */
export const errorsOf = (r) => r.status + r.connect + r.read + r.write + r.timeout;

/** Ours' counters: deliveries by outcome, handler runs, and the backlog (acked, not yet run: the store's count). */
export async function metricsOf(port) {
  try {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    const get = (re) => {
      const m = re.exec(text);
      return m ? Number(m[1]) : null;
    };
    return {
      accepted: get(/^lava_webhooks_deliveries_total\{outcome="accepted"\} (\d+)/m),
      duplicate: get(/^lava_webhooks_deliveries_total\{outcome="duplicate"\} (\d+)/m),
      coalesced: get(/^lava_webhooks_deliveries_total\{outcome="coalesced"\} (\d+)/m) ?? 0,
      pending: get(/^lava_webhooks_pending (\d+)/m),
      // Handler runs that succeeded, over every event name (counted in the process, exact).
      runs: [...text.matchAll(/^lava_webhooks_handler_runs_total\{[^}]*outcome="ok"[^}]*\} (\d+)/gm)].reduce(
        (n, m) => n + Number(m[1]),
        0,
      ),
      // Ours' own ack latency (request in to 200 out, its clock): the histogram's cumulative buckets, by bound in ms.
      ackBuckets: [...text.matchAll(/^lava_webhooks_ack_latency_ms_bucket\{le="([^"]+)"\} (\d+)/gm)].map((m) => ({
        le: m[1] === '+Inf' ? Number.POSITIVE_INFINITY : Number(m[1]),
        n: Number(m[2]),
      })),
    };
  } catch {
    return null;
  }
}

/** A client for making and dropping the benchmark's schemas, or `{ reason }` when there is no Postgres. */
export async function pgAdmin() {
  try {
    await new Promise((res, rej) => {
      const u = new URL(PG_URL);
      const s = connect(Number(u.port || 5432), u.hostname, () => {
        s.destroy();
        res();
      });
      s.on('error', rej);
      s.setTimeout(1000, () => {
        s.destroy();
        rej(new Error('timeout'));
      });
    });
    const { default: postgres } = await import('postgres');
    const sql = postgres(PG_URL, { max: 1, onnotice: () => {}, connect_timeout: 3 });
    await sql`SELECT 1`;
    return sql;
  } catch (error) {
    return { reason: `no Postgres at ${PG_URL} (${error.message})` };
  }
}
