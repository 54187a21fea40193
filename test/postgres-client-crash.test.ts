// postgres.js and a connection that drops at the moment a small statement is written on it: the query fails with a
// connection error, the store answers StoreUnavailableError, the receiver 503, and the process lives on.
//
// postgres.js 3.x (through 3.4.9, the last 3.x) queued a small write with setImmediate; when the connection closed
// before the callback ran, the callback wrote on a socket that was already null and threw from the timer: an uncaught
// TypeError that ends a Node or Deno process (porsager/postgres#1066, #1154, #1208). A connection pinned to a reserved
// handle or a transaction (every claim of the store is one) made it certain: 3.x sends the next statement, or the
// ROLLBACK, on the dead connection. 4.1 drops writes on a closed connection and rejects what was queued on it, and
// postgresStore refuses a 3.x client with a ConfigError (the last test).
//
// Each scenario runs in a child process of this runtime (so a crash ends the child, not the test runner), through a
// proxy that cuts the connection at the exact write: deterministic, no timing. To see it fail without the fix, point
// it at postgres.js 3.4.9 through LAVA_TEST_POSTGRES_MODULE (test/helpers/postgres-js.ts): the client scenarios die
// with the TypeError, the store and receiver ones stop at the ConfigError (without that check, they die too):
//   mkdir -p /tmp/pg3 && npm install --prefix /tmp/pg3 postgres@3.4.9
//   LAVA_TEST_POSTGRES_MODULE=/tmp/pg3/node_modules/postgres node --import tsx --test test/postgres-client-crash.test.ts
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError } from '../src/errors.ts';
import { postgresStore } from '../src/stores/postgres.ts';
import { openPg } from './helpers/pg.ts';
import { loadPostgresJs } from './helpers/postgres-js.ts';
import { ROOT } from './helpers/server-process.ts';

const opened = await openPg();
const pg = opened.pg;
const skip = opened.reason ?? false;
if (!pg) console.log(`[skip] postgres.js crash tests: ${skip}`);

const under = await loadPostgresJs();
console.log(`postgres.js under test: ${under.version} (${under.dir})`);

after(async () => {
  await pg?.done();
});

const CHILD = join(ROOT, 'test', 'helpers', 'postgres-js-cut-child.ts');
const CHILD_TIMEOUT_MS = 60_000;

/** The same runtime as this test, running the child script. */
function childCommand(): [string, string[]] {
  const deno = (globalThis as { Deno?: { execPath(): string } }).Deno;
  if (typeof (globalThis as { Bun?: unknown }).Bun !== 'undefined') return [process.execPath, [CHILD]];
  if (deno) return [deno.execPath(), ['run', '-A', CHILD]];
  return [process.execPath, ['--import', 'tsx', CHILD]];
}

interface ChildRun {
  code: number | null;
  signal: string | null;
  output: string;
  result: Record<string, unknown> | null;
}

function runScenario(scenario: string, schema: string): Promise<ChildRun> {
  const [cmd, args] = childCommand();
  const child = spawn(cmd, args, {
    cwd: ROOT,
    env: { ...process.env, LAVA_CUT_SCENARIO: scenario, LAVA_CUT_SCHEMA: schema, LAVA_TEST_PG_URL: pg!.url },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => {
    output += d.toString();
  });
  child.stderr.on('data', (d) => {
    output += d.toString();
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
  return new Promise((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const line = output.split('\n').find((l) => l.startsWith('RESULT '));
      resolve({ code, signal, output, result: line ? JSON.parse(line.slice('RESULT '.length)) : null });
    });
  });
}

/** The child lived through the cut and reported; its report. */
function survived(run: ChildRun): Record<string, unknown> {
  const tail = run.output.split('\n').slice(-25).join('\n');
  assert.doesNotMatch(
    run.output,
    // Node's and Deno's words for it, then Bun's.
    /TypeError: (Cannot read properties of null \(reading 'write'\)|null is not an object \(evaluating 'socket\.write'\))/,
    `postgres.js ${under.version} threw an uncaught TypeError after the cut (porsager/postgres#1208):\n${tail}`,
  );
  assert.equal(
    run.code,
    0,
    `the scenario on postgres.js ${under.version} did not finish (exit ${run.code ?? run.signal}):\n${tail}`,
  );
  assert.ok(run.result, `the child reported nothing:\n${tail}`);
  assert.equal(run.result.version, under.version);
  return run.result;
}

/** A rejection with a connection error, as the child reported it. */
function connectionClosed(outcome: unknown, what: string): void {
  const o = outcome as { ok: boolean; code?: string | null };
  assert.equal(o.ok, false, `${what} rejected`);
  assert.equal(o.code, 'CONNECTION_CLOSED', `${what} rejected with CONNECTION_CLOSED: ${JSON.stringify(outcome)}`);
}

/** A StoreUnavailableError whose cause is the client's connection error. */
function storeUnavailable(outcome: unknown, what: string): void {
  const o = outcome as { ok: boolean; name?: string; causeCode?: string | null };
  assert.equal(o.ok, false, `${what} failed`);
  assert.equal(o.name, 'StoreUnavailableError', `${what}: ${JSON.stringify(outcome)}`);
  assert.equal(o.causeCode, 'CONNECTION_CLOSED', `${what}: caused by the connection error`);
}

describe('postgres.js: a connection cut as a small statement is written on it', { skip, timeout: 180_000 }, () => {
  test('a reserved connection: the query and the next one on it reject with CONNECTION_CLOSED; the pool carries on', async () => {
    const r = survived(await runScenario('reserved', pg!.schema()));
    assert.equal(r.cuts, 1, 'the proxy cut the connection at the query');
    connectionClosed(r.cutQuery, 'the query that was cut');
    connectionClosed(r.afterCut, 'the next query on the reserved connection');
    assert.deepEqual(r.pool, { ok: true, value: [{ three: 3 }] }, 'a query on the pool after the cut');
  });

  test('a transaction: begin() rejects with CONNECTION_CLOSED; the pool carries on', async () => {
    const r = survived(await runScenario('transaction', pg!.schema()));
    assert.equal(r.cuts, 1, 'the proxy cut the connection inside the transaction');
    connectionClosed(r.transaction, 'the transaction');
    assert.deepEqual(r.pool, { ok: true, value: [{ three: 3 }] }, 'a query on the pool after the cut');
  });

  test('postgresStore on postgres.js: an insert and a claim cut off are StoreUnavailableError; both work again next time', async () => {
    const r = survived(await runScenario('store', pg!.schema()));
    assert.equal(r.cuts, 2, 'the proxy cut the insert and the claim');
    storeUnavailable(r.cutInsert, 'the insert that was cut');
    assert.deepEqual(r.insertAgain, { ok: true, value: { inserted: true } }, 'the same insert again');
    storeUnavailable(r.cutClaim, 'the claim that was cut');
    assert.deepEqual(r.claimAgain, { ok: true, value: ['cut-1'] }, 'the next claim takes the event');
  });

  test('a receiver on postgres.js: 503 for the delivery cut off, 200 after, every acknowledged event runs', async () => {
    const r = survived(await runScenario('receiver', pg!.schema()));
    assert.equal(r.cuts, 2, "the proxy cut a delivery's insert and the worker's first claim");
    assert.equal(r.cutDelivery, 503, 'the delivery whose insert was cut is refused, so Lava sends it again');
    assert.equal(r.retried, 200, "Lava's retry of it is acknowledged");
    assert.deepEqual(r.afterCut, [200, 200, 200], 'deliveries after the claim was cut are acknowledged');
    assert.equal(r.processed, true, 'every acknowledged event ran');
    assert.deepEqual(r.runs, ['id:after-1', 'id:after-2', 'id:after-3', 'id:cut-1']);
    assert.equal(r.health, 200);
  });
});

/** The members of a postgres.js 3.4.9 client (`postgres(url)`), with its options' keys, for when 3.x is not installed. */
function postgresJs3StandIn(): unknown {
  const method = () => Promise.resolve([]);
  const options: Record<string, unknown> = { shared: { retries: 0, typeArrayMap: {} } };
  for (const k of 'backoff connect_timeout connection database debug fetch_types host idle_timeout keep_alive max max_lifetime max_pipeline onclose onnotice onnotify onparameter parameters parsers pass path port prepare publications serializers socket ssl sslnegotiation target_session_attrs transform types user'.split(
    ' ',
  ))
    options[k] ??= null;
  const members: Record<string, unknown> = { options, parameters: {}, types: {}, CLOSE: {}, END: {} };
  for (const k of 'PostgresError array begin close end file json largeObject listen notify reserve subscribe typed unsafe'.split(
    ' ',
  ))
    members[k] = method;
  return Object.assign(() => method(), members);
}

const refusal = (e: unknown) =>
  e instanceof ConfigError &&
  /postgres\.js 3\.x.*uncaught TypeError.*porsager\/postgres#1208.*4\.1 or later/.test(e.message);

test('postgresStore() refuses a postgres.js 3.x client with a ConfigError naming the crash and the fix, and takes a 4.x client', async () => {
  const major = Number.parseInt(under.version, 10);
  const client = under.postgres('postgres://postgres@127.0.0.1:1/none', { max: 1, onnotice: () => {} }) as {
    end(o?: { timeout?: number }): Promise<void>;
  };
  try {
    if (major < 4) {
      assert.throws(() => postgresStore({ sql: client as never }), refusal, `postgres.js ${under.version} is refused`);
    } else {
      assert.doesNotThrow(() => postgresStore({ sql: client as never }), `postgres.js ${under.version} is taken`);
      assert.throws(
        () => postgresStore({ sql: postgresJs3StandIn() as never }),
        refusal,
        'a 3.x-shaped client is refused',
      );
    }
  } finally {
    await client.end({ timeout: 0 }).catch(() => {});
  }
});
