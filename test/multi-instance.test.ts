// Several receivers on one Postgres: two real server processes (`bun run src/server.ts`) share a schema. Duplicates
// sent to both at once run once, per-customer order holds across them, and a kill -9 loses nothing acknowledged.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { samplePayload } from '../src/samples.ts';
import { SECRET, signedRequest, waitFor } from './helpers/lava.ts';
import { openPg } from './helpers/pg.ts';
import { ROOT, type ServerProcess, binAvailable, startServer } from './helpers/server-process.ts';
import { type Run, readRuns } from './fixtures/runs.ts';

const opened = await openPg();
const pg = opened.pg;
const skip = opened.reason ?? (binAvailable('bun') ? false : 'node_modules/.bin/bun is missing (run npm ci)');
if (skip) console.log(`[skip] multi-instance tests on postgres: ${skip}`);

const dirs: string[] = [];
const servers: ServerProcess[] = [];
after(async () => {
  for (const s of servers) {
    s.kill('SIGKILL');
    await s.exited;
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  await pg?.done();
});

const CONCURRENCY = 4;

/** Two instances on one fresh schema, sharing a runs file; started together so their migrations race. */
async function twoInstances(): Promise<{ a: ServerProcess; b: ServerProcess; runsFile: string; schema: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'lava-multi-'));
  dirs.push(dir);
  const runsFile = join(dir, 'runs.tsv');
  const schema = pg!.schema();
  const env = {
    LAVA_WEBHOOK_SECRET: SECRET,
    DATABASE_URL: pg!.url,
    LAVA_WEBHOOK_PG_SCHEMA: schema,
    LAVA_WEBHOOK_HANDLERS: join(ROOT, 'test/fixtures/handlers.ts'),
    TEST_RUNS_FILE: runsFile,
    TEST_HANDLER_DELAY_MS: '40',
    LAVA_WEBHOOK_CONCURRENCY: String(CONCURRENCY),
    LAVA_WEBHOOK_LEASE: '1s',
    LAVA_WEBHOOK_POLL: '100ms',
    LAVA_WEBHOOK_RETRY_SCHEDULE: '100ms,200ms',
  };
  const [a, b] = await Promise.all([startServer({ env }), startServer({ env })]);
  servers.push(a, b);
  return { a, b, runsFile, schema };
}

// Each carries an event id, so a copy is a duplicate (the dedupe policy) however far apart its deliveries are: what a
// second instance must recognise. (Balance updates without an id are signals; the identity suite covers those.)
const balanceBody = (customer: string, n: number) =>
  JSON.stringify(
    samplePayload('customer.wallet.balance.updated', {
      customerId: customer,
      data: { balance: String(n) },
      extra: { id: `evt_${customer}_${n}` },
    }),
  );

async function deliver(server: ServerProcess, body: string): Promise<{ status: number; duplicate: boolean }> {
  const res = await fetch(signedRequest(`${server.url}/webhooks/lava`, body));
  const json = (await res.json().catch(() => ({}))) as { duplicate?: boolean };
  return { status: res.status, duplicate: json.duplicate === true };
}

/** Each customer's balances in the order their first run happened. */
function firstRunOrder(runs: Run[]): Map<string, number[]> {
  const seen = new Set<string>();
  const out = new Map<string, number[]>();
  for (const r of runs) {
    if (seen.has(r.key)) continue;
    seen.add(r.key);
    const list = out.get(r.customer) ?? [];
    list.push(Number(r.balance));
    out.set(r.customer, list);
  }
  return out;
}

describe('several instances on one postgres', { skip }, () => {
  test('two server processes: a duplicate sent to both at once runs once, and per-customer order holds across them', async () => {
    const { a, b, runsFile, schema } = await twoInstances();
    const customers = Array.from({ length: 12 }, (_, i) => `cus_multi_${i}`);
    const EVENTS = 12;
    // One event of a customer in flight at a time, alternating instances; every third one is also sent to the
    // other instance at the same moment, as a retry racing the original would be.
    await Promise.all(
      customers.map(async (customer, c) => {
        for (let n = 0; n < EVENTS; n++) {
          const body = balanceBody(customer, n);
          const [first, second] = (n + c) % 2 === 0 ? [a, b] : [b, a];
          if (n % 3 === 0) {
            const answers = await Promise.all([deliver(first, body), deliver(second, body)]);
            assert.deepEqual(
              answers.map((x) => x.status),
              [200, 200],
            );
            assert.equal(answers.filter((x) => !x.duplicate).length, 1, 'exactly one instance recorded it');
          } else {
            const answer = await deliver(first, body);
            assert.equal(answer.status, 200);
            assert.equal(answer.duplicate, false);
          }
        }
      }),
    );
    const total = customers.length * EVENTS;
    await waitFor(() => readRuns(runsFile).length >= total, 20_000, `${total} handler runs`);
    // Let a stray second run (there must be none) show up before judging.
    await new Promise((r) => setTimeout(r, 500));
    const runs = readRuns(runsFile);
    const perKey = new Map<string, number>();
    for (const r of runs) perKey.set(r.key, (perKey.get(r.key) ?? 0) + 1);
    assert.equal(perKey.size, total, 'every event ran');
    assert.deepEqual(
      [...perKey].filter(([, n]) => n !== 1),
      [],
      'exactly one handler run per key across both instances',
    );
    const order = firstRunOrder(runs);
    for (const customer of customers) {
      assert.deepEqual(
        order.get(customer),
        Array.from({ length: EVENTS }, (_, n) => n),
        `${customer} ran in order`,
      );
    }
    const pids = new Set(runs.map((r) => r.pid));
    assert.deepEqual(pids, new Set([String(a.child.pid), String(b.child.pid)]), 'both instances ran events');
    const [row] = (await pg!.sql.unsafe(
      `SELECT count(*) FILTER (WHERE status = 'done') AS done, count(*) AS n FROM "${schema}".events`,
    )) as Array<{ done: unknown; n: unknown }>;
    assert.equal(Number(row?.n), total, 'one row per event in the shared inbox');
    assert.equal(Number(row?.done), total);
  });

  test('kill -9 one instance under load: every acknowledged event is processed by the survivor, none completed twice', async () => {
    const { a, b, runsFile, schema } = await twoInstances();
    const customers = Array.from({ length: 16 }, (_, i) => `cus_kill_${i}`);
    const EVENTS = 25;
    const acked = new Map<string, number[]>();
    let sent = 0;
    let killed = false;
    await Promise.all(
      customers.map(async (customer, c) => {
        for (let n = 0; n < EVENTS; n++) {
          // Alternate instances until the kill; afterwards the load balancer sends everything to the survivor.
          const target = killed || (n + c) % 2 === 0 ? a : b;
          sent++;
          if (sent === Math.floor((customers.length * EVENTS) / 2) && !killed) {
            killed = true;
            b.kill('SIGKILL');
          }
          try {
            const answer = await deliver(target, balanceBody(customer, n));
            if (answer.status === 200) acked.set(customer, [...(acked.get(customer) ?? []), n]);
          } catch {
            // Refused or reset by the killed instance: not acknowledged, so Lava would send it again.
          }
        }
      }),
    );
    assert.ok(killed);
    await b.exited;
    const expected = [...acked.values()].reduce((sum, list) => sum + list.length, 0);
    assert.ok(expected > customers.length * EVENTS * 0.8, `most deliveries were acknowledged (${expected})`);

    const isDone = async () => {
      const [row] = (await pg!.sql.unsafe(
        `SELECT count(*) FILTER (WHERE status IN ('pending', 'retrying')) AS open FROM "${schema}".events`,
      )) as Array<{ open: unknown }>;
      return Number(row?.open) === 0;
    };
    // The dead instance's leases run out after 1 s; the survivor takes its events over.
    await waitFor(isDone, 30_000, 'the survivor to finish every open event');
    const runs = readRuns(runsFile);
    const ranBalances = new Map<string, Set<number>>();
    for (const r of runs) {
      const set = ranBalances.get(r.customer) ?? new Set<number>();
      set.add(Number(r.balance));
      ranBalances.set(r.customer, set);
    }
    for (const [customer, list] of acked) {
      for (const n of list) assert.ok(ranBalances.get(customer)?.has(n), `${customer} #${n} got a 200 and ran`);
    }
    // A second run is only possible for an event the killed instance was running: at most its concurrency.
    const perKey = new Map<string, Run[]>();
    for (const r of runs) perKey.set(r.key, [...(perKey.get(r.key) ?? []), r]);
    const repeated = [...perKey.values()].filter((list) => list.length > 1);
    assert.ok(repeated.length <= CONCURRENCY, `${repeated.length} events ran twice`);
    for (const list of repeated) {
      assert.equal(list.length, 2);
      assert.equal(list[0]?.pid, String(b.child.pid), 'the first run was on the killed instance');
      assert.equal(list[1]?.pid, String(a.child.pid), 'the survivor ran it again');
    }
    // Completed once: every row is done exactly once, and nothing is left open or dead.
    const [row] = (await pg!.sql.unsafe(
      `SELECT count(*) FILTER (WHERE status = 'done') AS done, count(*) AS n FROM "${schema}".events`,
    )) as Array<{ done: unknown; n: unknown }>;
    assert.equal(Number(row?.done), Number(row?.n));
    assert.ok(
      runs.some((r) => r.pid === String(a.child.pid)),
      'the survivor processed events',
    );
    const [taken] = (await pg!.sql.unsafe(`SELECT count(*) AS n FROM "${schema}".events WHERE attempts > 1`)) as Array<{
      n: unknown;
    }>;
    console.log(
      `[info] kill -9: ${expected} acknowledged, ${Number(taken?.n)} taken over after the lease, ${repeated.length} ran twice`,
    );
    // Order is promised for acknowledged deliveries. One the kill cut off (no 200) may still have been written: its
    // INSERT reached Postgres before the process died and commits there, possibly after the customer's next delivery,
    // sent to the survivor once the first failed; it then runs after that one (seen once: 13 before an unacknowledged
    // 12). Lava would send it again, so where it sits is not part of the promise.
    for (const [customer, order] of firstRunOrder(runs)) {
      const ackedOrder = order.filter((n) => acked.get(customer)?.includes(n));
      assert.deepEqual(
        ackedOrder,
        [...ackedOrder].sort((x, y) => x - y),
        `${customer}'s acknowledged events ran in order across the takeover`,
      );
    }
  });
});
