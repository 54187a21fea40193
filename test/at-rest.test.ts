// No replay kit at rest: after a real server took every kind of delivery (new, duplicate, coalesced, legacy, dead
// letters of each sort), no file of its store holds any delivery's signature. Lava's signatures carry no timestamp,
// so a stored one would let whoever reads the database, or a backup of it, replay the delivery at will.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { samplePayload } from '../src/samples.ts';
import { SECRET, lavaSign, signedRequest, waitFor } from './helpers/lava.ts';
import { binAvailable, startServer } from './helpers/server-process.ts';
import { fixtureEnv, readRuns } from './fixtures/runs.ts';

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== 'undefined';
// Spawns real servers of both runtimes: once per `npm test`, under the Bun runner.
const skip = !isBun ? 'spawns bun and deno servers: runs under the Bun test runner only (once per npm test)' : false;
if (skip) console.log(`[skip] signatures at rest: ${skip}`);

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** Every delivery of the traffic, signed; the signatures are what must not be found afterwards. */
function traffic(): Array<{ body: string; headers?: Record<string, string> }> {
  const balance = JSON.stringify(samplePayload('customer.wallet.balance.updated', { customerId: 'cus_rest_1' }));
  const created = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_rest_1' }));
  return [
    { body: created },
    { body: created }, // duplicate
    { body: balance },
    { body: balance },
    { body: balance }, // coalesced or a run of its own
    { body: JSON.stringify(samplePayload('connection.created', { customerId: 'conn_rest' })) },
    { body: JSON.stringify(samplePayload('customer.deleted', { customerId: 'cus_rest_2' })) },
    { body: JSON.stringify({ event: 'checkout.completed', data: { customer_id: 'cus_rest_3' } }) },
    { body: JSON.stringify({ event: 'customer.created', data: { customer_id: 42 } }) }, // 400, dead letter
    { body: '{"event": "customer.created", "data": ', headers: {} }, // not JSON, dead letter
    { body: created.replace('cus_rest_1', 'cus_rest_4'), headers: { 'content-type': 'text/plain' } }, // 415, dead letter
    ...Array.from({ length: 20 }, (_, i) => ({
      body: JSON.stringify(
        samplePayload('customer.wallet.balance.updated', { customerId: `cus_rest_b${i % 3}`, data: { n: i } }),
      ),
    })),
  ];
}

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(p));
    else out.push(p);
  }
  return out;
}

const cases = [
  { name: 'bun run on SQLite', runtime: 'bun' as const, store: 'sqlite' },
  { name: 'deno serve on Deno KV', runtime: 'deno' as const, store: 'kv' },
];

describe('no signature at rest', { skip }, () => {
  for (const c of cases) {
    const missing = binAvailable(c.runtime) ? false : `node_modules/.bin/${c.runtime} is missing (run npm ci)`;
    test(`${c.name}: the store's files hold no delivery's signature after a run of mixed traffic`, {
      skip: missing,
    }, async () => {
      const dir = mkdtempSync(join(tmpdir(), 'lava-rest-'));
      dirs.push(dir);
      const data = join(dir, 'data');
      const runsFile = join(dir, 'runs.tsv');
      const env = fixtureEnv(runsFile, {
        LAVA_WEBHOOK_STORE: c.store,
        LAVA_WEBHOOK_DB: join(data, 'lava.sqlite'),
        LAVA_WEBHOOK_KV: join(data, 'lava.kv'),
        LAVA_WEBHOOK_RETRY_SCHEDULE: '50ms',
      });
      // The data folder must exist for Deno KV; SQLite creates its own.
      (await import('node:fs')).mkdirSync(data, { recursive: true });
      const server = await startServer({ runtime: c.runtime, env });
      const signatures: string[] = [];
      try {
        for (const d of traffic()) {
          signatures.push(lavaSign(SECRET, d.body));
          const res = await fetch(signedRequest(`${server.url}/webhooks/lava`, d.body, { headers: d.headers }));
          await res.arrayBuffer();
          assert.ok([200, 400, 415].includes(res.status), `answered ${res.status}`);
        }
        await waitFor(() => readRuns(runsFile).length >= 6, 10_000, 'handlers ran');
      } finally {
        server.kill('SIGTERM');
        await server.exited;
      }
      const files = filesUnder(data);
      assert.ok(files.length > 0, 'the store wrote files');
      let scanned = 0;
      for (const f of files) {
        const bytes = readFileSync(f).toString('latin1');
        scanned += bytes.length;
        for (const sig of signatures)
          assert.equal(bytes.includes(sig), false, `${f} holds the signature ${sig.slice(0, 12)}…`);
      }
      // The check can fail: the bodies themselves are in those files.
      const all = files.map((f) => readFileSync(f).toString('latin1')).join('');
      assert.ok(all.includes('cus_rest_b1'), 'the scan reads where the events are');
      assert.ok(scanned > 0);
    });
  }
});
