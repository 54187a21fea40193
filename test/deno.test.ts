// `deno serve src/server.ts` as a real process, on Deno KV (a temp file) and on SQLite: the same deliveries get the
// same answers as `bun run src/server.ts`, the handlers module runs under Deno, and SIGTERM drains.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { samplePayload } from '../src/samples.ts';
import { SECRET, signedRequest, sleep, waitFor } from './helpers/lava.ts';
import { ROOT, type ServerProcess, binAvailable, startServer } from './helpers/server-process.ts';
import { readRuns } from './fixtures/runs.ts';

const skip = binAvailable('deno') ? false : 'node_modules/.bin/deno is missing (run npm ci)';
if (skip) console.log(`[skip] deno serve tests: ${skip}`);

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'lava-deno-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

type Store = 'kv' | 'sqlite';
function serverEnv(dir: string, store: Store, extra: Record<string, string> = {}): Record<string, string> {
  return {
    LAVA_WEBHOOK_SECRET: SECRET,
    ...(store === 'kv' ? { LAVA_WEBHOOK_KV: join(dir, 'lava.kv') } : { LAVA_WEBHOOK_STORE: 'sqlite' }),
    LAVA_WEBHOOK_DB: join(dir, 'lava.sqlite'),
    LAVA_WEBHOOK_HANDLERS: join(ROOT, 'test/fixtures/handlers.ts'),
    TEST_RUNS_FILE: join(dir, 'runs.tsv'),
    LAVA_WEBHOOK_LEASE: '1s',
    LAVA_WEBHOOK_POLL: '100ms',
    LOG_LEVEL: 'info',
    ...extra,
  };
}

// Bodies are made once, so every server sees byte-identical deliveries.
const created = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_same_answers' }));
const invalid = JSON.stringify({ event: 'customer.created', data: { customer_id: 42 } });

/** The deliveries every server gets, in order, and what each answered (status and body). */
async function script(url: string): Promise<Array<{ what: string; status: number; body: unknown }>> {
  const hook = `${url}/webhooks/lava`;
  const steps: Array<[string, () => Promise<Response>]> = [
    ['new', () => fetch(signedRequest(hook, created))],
    ['duplicate', () => fetch(signedRequest(hook, created))],
    ['bad signature', () => fetch(signedRequest(hook, created, { secret: 'whsec_someone_else' }))],
    ['unsigned', () => fetch(hook, { method: 'POST', headers: { 'content-type': 'application/json' }, body: created })],
    ['invalid payload', () => fetch(signedRequest(hook, invalid))],
    ['wrong content type', () => fetch(signedRequest(hook, created, { headers: { 'content-type': 'text/plain' } }))],
    ['GET on the hook', () => fetch(hook)],
    ['unknown path', () => fetch(`${url}/nope`)],
  ];
  const out = [];
  for (const [what, send] of steps) {
    const res = await send();
    const text = await res.text();
    out.push({ what, status: res.status, body: text ? JSON.parse(text) : null });
  }
  return out;
}

async function stop(server: ServerProcess) {
  server.kill('SIGKILL');
  await server.exited;
}

describe('deno serve src/server.ts', { skip }, () => {
  test('deno check passes on src/ and examples/', () => {
    const r = spawnSync(join(ROOT, 'node_modules/.bin/deno'), ['check', 'src/', 'examples/'], {
      cwd: ROOT,
      encoding: 'utf8',
    });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  });

  test('on Deno KV and on SQLite: the same answers as Bun, and the handler runs once under Deno', async () => {
    const kvDir = tempDir();
    const sqliteDir = tempDir();
    const bunDir = tempDir();
    const withBun = binAvailable('bun');
    const [kv, sqlite, bun] = await Promise.all([
      startServer({ runtime: 'deno', env: serverEnv(kvDir, 'kv') }),
      startServer({ runtime: 'deno', env: serverEnv(sqliteDir, 'sqlite') }),
      withBun ? startServer({ runtime: 'bun', env: serverEnv(bunDir, 'sqlite') }) : null,
    ]);
    try {
      assert.match(kv.output(), /"runtime":"deno","store":"kv"/);
      assert.match(sqlite.output(), /"runtime":"deno","store":"sqlite"/);
      // Deno KV's store and `Deno.cron` ("cron" in deno.json's unstable list) are both live under deno serve.
      assert.match(kv.output(), /"msg":"drain cron scheduled"/);
      const kvAnswers = await script(kv.url);
      const sqliteAnswers = await script(sqlite.url);
      assert.deepEqual(
        kvAnswers.slice(0, 3).map((a) => [a.what, a.status, a.body]),
        [
          ['new', 200, { received: true }],
          ['duplicate', 200, { received: true, duplicate: true }],
          ['bad signature', 401, kvAnswers[2]?.body],
        ],
      );
      assert.deepEqual(
        kvAnswers.map((a) => a.status),
        [200, 200, 401, 401, 400, 415, 405, 404],
      );
      assert.deepEqual(sqliteAnswers, kvAnswers);
      if (bun) assert.deepEqual(await script(bun.url), kvAnswers, 'Bun answers the same deliveries the same way');
      else console.log('[skip] comparison with Bun: node_modules/.bin/bun is missing');

      for (const [dir, name] of [
        [kvDir, 'kv'],
        [sqliteDir, 'sqlite'],
      ] as const) {
        const file = join(dir, 'runs.tsv');
        const runs = await waitFor(
          () => {
            const r = readRuns(file).filter((x) => x.customer === 'cus_same_answers');
            return r.length > 0 ? r : null;
          },
          5000,
          `the handler run on ${name}`,
        );
        await sleep(200);
        assert.equal(readRuns(file).filter((x) => x.customer === 'cus_same_answers').length, 1, `ran once (${name})`);
        // The fixture reads `process.env` and `process.pid`: Node's process global works in a handler under Deno.
        assert.match(runs[0]?.pid ?? '', /^\d+$/);
      }
    } finally {
      await Promise.all([stop(kv), stop(sqlite), bun ? stop(bun) : null]);
    }
  });

  test('SIGTERM on Deno (KV) drains: running handlers finish, nothing is left pending', async () => {
    const dir = tempDir();
    const env = serverEnv(dir, 'kv', { TEST_HANDLER_DELAY_MS: '150', LAVA_WEBHOOK_SHUTDOWN_TIMEOUT: '5s' });
    let server = await startServer({ runtime: 'deno', env });
    for (let i = 0; i < 5; i++) {
      const body = JSON.stringify(samplePayload('customer.created', { customerId: `cus_deno_term_${i}` }));
      assert.equal((await fetch(signedRequest(`${server.url}/webhooks/lava`, body))).status, 200);
    }
    await sleep(30);
    server.kill('SIGTERM');
    const exit = await server.exited;
    // Deno's node:child_process reports a child that handled SIGTERM and exited 0 as killed by SIGTERM.
    assert.ok(exit === 0 || ('Deno' in globalThis && exit === 'SIGTERM'), `exit ${exit}\n${server.output()}`);
    assert.match(server.output(), /"msg":"shutting down"/);
    assert.match(server.output(), /"msg":"closed","unfinished":0/);
    assert.equal(new Set(readRuns(env.TEST_RUNS_FILE as string).map((r) => r.key)).size, 5, 'all five ran');
    server = await startServer({ runtime: 'deno', env });
    try {
      const text = await (await fetch(`${server.url}/metrics`)).text();
      assert.match(text, /^lava_webhooks_pending 0$/m);
      assert.match(text, /^lava_webhooks_retrying 0$/m);
    } finally {
      await stop(server);
    }
  });
});
