// Store fault, for real: the SQLite file of a real server process lives on a small tmpfs that is then filled up.
// While the disk is full every delivery is answered 200 (recorded) or 503 (not recorded, Lava's sender sees a
// failure), never anything else; once space is freed the same process records and runs deliveries again; and at the
// end every acknowledged event is in the file, processed, and the file passes SQLite's integrity check.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { samplePayload } from '../src/samples.ts';
import { signedRequest, sleep, waitFor } from './helpers/lava.ts';
import { binAvailable, startServer } from './helpers/server-process.ts';
import { fixtureEnv, readRuns, waitForRuns } from './fixtures/runs.ts';

const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== 'undefined';
const proc = globalThis as unknown as { process?: { getuid?: () => number; platform?: string } };

/** Mounts a tmpfs of `size` at `dir`; the reason it cannot, or null when it did. */
function mountTmpfs(dir: string, size: string): string | null {
  if (proc.process?.platform !== 'linux') return 'needs Linux (mount -t tmpfs)';
  if (proc.process?.getuid?.() !== 0) return 'needs root to mount a small tmpfs';
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'pipe' });
    return null;
  } catch (error) {
    return `mount -t tmpfs failed: ${String((error as { stderr?: unknown }).stderr ?? error).trim()}`;
  }
}

const CONCURRENCY = 8;
const base = mkdtempSync(join(tmpdir(), 'lava-diskfull-'));
const disk = join(base, 'disk');
mkdirSync(disk);
// One run per `npm test`, under the Bun test runner (the server under test is Bun's either way).
const skip = !binAvailable('bun')
  ? 'node_modules/.bin/bun is missing (run npm ci)'
  : !isBun
    ? 'runs under the Bun test runner only (once per npm test)'
    : (mountTmpfs(disk, '3m') ?? false);
if (skip) console.log(`[skip] disk-full test: ${skip}`);

after(() => {
  if (!skip) {
    try {
      execFileSync('umount', ['-l', disk], { stdio: 'pipe' });
    } catch {
      // Already unmounted.
    }
  }
  rmSync(base, { recursive: true, force: true });
});

/** Writes zeros to `file` until the filesystem refuses (ENOSPC): 64 KiB at a time, then page by page. */
function fillUp(file: string): void {
  const fd = openSync(file, 'w');
  try {
    for (const size of [64 * 1024, 4096, 512]) {
      const chunk = new Uint8Array(size);
      for (;;) {
        try {
          if (writeSync(fd, chunk) < size) break;
        } catch (error) {
          if ((error as { code?: string }).code !== 'ENOSPC') throw error;
          break;
        }
      }
    }
  } finally {
    closeSync(fd);
  }
}

describe('store fault: the SQLite disk fills up', { skip }, () => {
  test('full disk → 200 or 503 only; space freed → recording resumes; every 200 kept and run, file intact', async () => {
    const runsFile = join(base, 'runs.tsv');
    const dbPath = join(disk, 'lava.sqlite');
    const env = fixtureEnv(runsFile, {
      LAVA_WEBHOOK_DB: dbPath,
      LAVA_WEBHOOK_LEASE: '1s',
      LAVA_WEBHOOK_STORE_TIMEOUT: '2s',
      LAVA_WEBHOOK_CONCURRENCY: String(CONCURRENCY),
      // Handlers still running when the disk fills: their completions are refused too.
      TEST_HANDLER_DELAY_MS: '40',
    });
    const server = await startServer({ env });
    const acked = new Set<string>();
    const refused = new Set<string>();
    const statuses = new Map<number, number>();
    let n = 0;
    const deliver = async (): Promise<number> => {
      const i = ++n;
      const body = JSON.stringify(
        samplePayload('customer.wallet.balance.updated', {
          customerId: `cus_full_${i % 7}`,
          // A larger body fills the disk sooner and makes each commit need fresh pages.
          data: { balance: `${i}`, metadata: { note: 'x'.repeat(2000) } },
        }),
      );
      const key = `customer.wallet.balance.updated:sha256:${createHash('sha256').update(body).digest('hex')}`;
      const res = await fetch(signedRequest(`${server.url}/webhooks/lava`, body));
      await res.arrayBuffer();
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      if (res.status === 200) acked.add(key);
      else refused.add(key);
      return res.status;
    };
    const burst = async (count: number) => {
      const out: number[] = [];
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (out.length < count) out.push(await deliver());
        }),
      );
      return out;
    };
    try {
      // 1. Room on the disk: everything is recorded.
      assert.deepEqual(new Set(await burst(40)), new Set([200]));

      // 2. Fill the disk while handlers run, then keep delivering for longer than a lease, until the store refuses
      // (SQLite may first reuse pages it has).
      const filler = join(disk, 'filler');
      fillUp(filler);
      const filledAt = Date.now();
      let refusedInARow = 0;
      for (let k = 0; k < 2000 && (refusedInARow < 20 || Date.now() - filledAt < 1500); k++) {
        const status = await deliver();
        refusedInARow = status === 503 ? refusedInARow + 1 : 0;
        if (status === 503) await sleep(5);
      }
      assert.ok(refusedInARow >= 20, `the full disk was noticed (statuses so far: ${JSON.stringify([...statuses])})`);
      for (const status of statuses.keys()) assert.ok(status === 200 || status === 503, `unexpected status ${status}`);
      assert.match(
        server.output(),
        /store could not record the delivery.*database or disk is full/,
        'the 503s are logged with their reason',
      );
      const health = await fetch(`${server.url}/healthz`);
      await health.arrayBuffer();
      assert.ok(health.status === 200 || health.status === 503, `healthz answers (${health.status})`);

      // 3. Free the space: the same process records again, without a restart. The WAL kept the size it grew to; the
      // first writes after the fault cut it back (a full checkpoint, then truncation), so the freed space goes to the
      // database instead of to a log no checkpoint could then empty (which left every claim failing for good).
      const walSize = () => statSync(`${dbPath}-wal`).size;
      const walWhenFull = walSize();
      rmSync(filler);
      const walAfter: number[] = [];
      const afterFree = await Promise.all([
        burst(40),
        (async () => {
          for (let k = 0; k < 200; k++) {
            walAfter.push(walSize());
            await sleep(2);
          }
        })(),
      ]).then(([statuses]) => statuses);
      assert.ok(
        // Without the cut it never shrinks: SQLite truncates a WAL only down to journal_size_limit (64 MiB).
        Math.min(...walAfter) < walWhenFull,
        `the WAL was cut back once space was freed (${walWhenFull} bytes when full; after: ${walAfter.slice(0, 20).join(',')})`,
      );
      const firstOk = afterFree.indexOf(200);
      assert.ok(firstOk >= 0 && firstOk < 5, `recording resumed once space was freed (${afterFree.join(',')})`);
      assert.deepEqual(new Set(afterFree.slice(firstOk + 4)), new Set([200]), 'and stays up');

      // 4. Every acknowledged event runs (a completion the full disk refused runs again once its lease expires).
      await waitForRuns(runsFile, acked, 30_000, 'every acknowledged event processed');
      const runs = readRuns(runsFile);
      for (const r of runs) assert.ok(!refused.has(r.key), `an event answered 503 ran: ${r.key}`);
      // Only a run whose completion the full disk refused (one of the runs in flight) may have run again.
      const times = new Map<string, number>();
      for (const r of runs) times.set(r.key, (times.get(r.key) ?? 0) + 1);
      const repeated = [...times].filter(([, t]) => t > 1);
      assert.ok(repeated.length <= CONCURRENCY, `${repeated.length} events ran more than once`);
      for (const [key, t] of repeated) assert.equal(t, 2, `${key} ran ${t} times`);
      await waitFor(
        async () => {
          const text = await (await fetch(`${server.url}/metrics`)).text();
          return /^lava_webhooks_pending 0$/m.test(text) && /^lava_webhooks_retrying 0$/m.test(text) ? text : null;
        },
        15_000,
        'nothing left open',
      );
    } finally {
      server.kill('SIGTERM');
      await server.exited;
    }

    // 5. The file itself: intact, and holding every acknowledged event as done.
    const { Database } = await import('bun:sqlite');
    const db = new Database(dbPath, { readonly: true });
    try {
      assert.deepEqual(db.query('PRAGMA integrity_check').all(), [{ integrity_check: 'ok' }]);
      // A balance update is a signal: its body-hash identity is its coalesce key (its own key is `<event>@<suffix>`).
      const rows = db
        .query("SELECT coalesce_key AS key, status FROM events WHERE event = 'customer.wallet.balance.updated'")
        .all() as { key: string; status: string }[];
      const byKey = new Map(rows.map((r) => [r.key, r.status]));
      for (const k of acked) assert.equal(byKey.get(k), 'done', `acknowledged event ${k} is kept as done`);
      for (const k of refused) assert.equal(byKey.has(k), false, `an event answered 503 was kept: ${k}`);
    } finally {
      db.close();
    }
    assert.ok(acked.size >= 80, `enough recorded before and after the fault (${acked.size})`);
    assert.ok((statuses.get(503) ?? 0) >= 20, 'the fault was exercised');
  });
});
