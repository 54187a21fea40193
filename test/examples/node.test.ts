// examples/node/server.ts run for real on Node 20 through tsx (@hono/node-server), with the memory store and with
// Postgres: signed deliveries get the usual answers, the handler runs, SIGTERM exits cleanly.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { samplePayload } from '../../src/samples.ts';
import { SECRET, signedRequest, waitFor } from '../helpers/lava.ts';
import { type PgHarness, openPg } from '../helpers/pg.ts';
import { ROOT, freePort } from '../helpers/server-process.ts';

const TSX = join(ROOT, 'node_modules/.bin/tsx');
const skip = existsSync(TSX) ? false : 'node_modules/.bin/tsx is missing (run npm ci)';
if (skip) console.log(`[skip] Node example: ${skip}`);

interface Running {
  url: string;
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | string>;
}

async function startExample(env: Record<string, string>): Promise<Running> {
  const port = await freePort();
  // The system `node` (Node 20 here), whatever runtime runs this test.
  const child = spawn(TSX, [join(ROOT, 'examples/node/server.ts')], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '/tmp',
      PORT: String(port),
      HOST: '127.0.0.1',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d) => (out += d.toString()));
  child.stderr?.on('data', (d) => (out += d.toString()));
  const exited = new Promise<number | string>((res) => child.on('exit', (code, signal) => res(code ?? signal ?? -1)));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    async () => {
      if (child.exitCode !== null) throw new Error(`example exited:\n${out}`);
      return fetch(`${url}/healthz`).then(
        (r) => r.status === 200,
        () => false,
      );
    },
    15_000,
    'the Node example to answer /healthz',
  );
  return { url, child, output: () => out, exited };
}

async function exercise(running: Running, customerId: string) {
  const hook = `${running.url}/webhooks/lava`;
  const body = JSON.stringify(samplePayload('customer.created', { customerId }));
  let res = await fetch(signedRequest(hook, body));
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { received: true });
  res = await fetch(signedRequest(hook, body));
  assert.deepEqual(await res.json(), { received: true, duplicate: true });
  res = await fetch(signedRequest(hook, body, { secret: 'whsec_not_ours' }));
  assert.equal(res.status, 401);
  await res.body?.cancel();
  await waitFor(
    () => new RegExp(`"msg":"customer created".*"customer_id":"${customerId}"`).test(running.output()),
    5000,
    'the handler to log the customer',
  );
  assert.equal(running.output().match(/"msg":"customer created"/g)?.length, 1, 'the duplicate did not run again');
  running.child.kill('SIGTERM');
  const code = await running.exited;
  // Deno's node:child_process reports a child that handled SIGTERM and exited 0 as killed by SIGTERM.
  assert.ok(code === 0 || ('Deno' in globalThis && code === 'SIGTERM'), `exit ${code}\n${running.output()}`);
  assert.match(running.output(), /"msg":"closed","unfinished":0/);
}

describe('examples/node/server.ts on Node with @hono/node-server', { skip }, () => {
  let pg: PgHarness | null = null;
  let pgReason = '';
  before(async () => {
    const opened = await openPg();
    pg = opened.pg;
    pgReason = opened.reason ?? '';
    if (!pg) console.log(`[skip] Node example on Postgres: ${pgReason}`);
  });
  after(async () => {
    await pg?.done();
  });

  test('memory store: new, duplicate, bad signature; the handler runs once; SIGTERM exits 0', async () => {
    const running = await startExample({ LAVA_WEBHOOK_SECRET: SECRET });
    assert.match(running.output(), /"msg":"listening".*"store":"memory"/);
    await exercise(running, 'cus_node_memory');
  });

  test('Postgres store (DATABASE_URL): the same answers, the handler runs once', async (t) => {
    if (!pg) {
      t.skip(pgReason);
      return;
    }
    const schema = pg.schema();
    const running = await startExample({ LAVA_WEBHOOK_SECRET: SECRET, DATABASE_URL: pg.url, PG_SCHEMA: schema });
    assert.match(running.output(), /"store":"postgres"/);
    await exercise(running, 'cus_node_pg');
    const rows = (await pg.sql.unsafe(`SELECT status FROM "${schema}".events`)) as Array<{ status: string }>;
    assert.deepEqual(
      rows.map((r) => r.status),
      ['done'],
    );
  });
});
