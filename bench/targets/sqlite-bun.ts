// Baseline targets (s) and (t): the least a durable receiver on Bun and SQLite must do. Native HMAC over the raw
// bytes (Bun's CryptoHasher, as ours on Bun), JSON.parse, then `INSERT OR IGNORE` of (SHA-256 of the body, body) into
// a WAL-mode file. The inserts made in one turn of the event loop share one `BEGIN IMMEDIATE … COMMIT` (group
// commit, as ours with groupCommit), and each delivery is acked only after that commit returned.
//   BENCH_DB=path  BENCH_SYNCHRONOUS=NORMAL|FULL (as ours' LAVA_WEBHOOK_DURABILITY normal|full)
//   BENCH_RUNS=1   also the least a receiver that runs each event must add (target tr): once an insert is acked its
//                  (no-op) run is recorded, `UPDATE … SET done = 1`, in the next group commit, so a restart runs again
//                  only what had not finished. Without it nothing is ever run or marked.
// Like ours: wal_autocheckpoint 4000 pages, so both copy the WAL back into the file equally often (ours does it on a
// Worker thread of the same pinned core; this one inline); no other tuning.
import { Database } from 'bun:sqlite';

const secret = new TextEncoder().encode(process.env.LAVA_WEBHOOK_SECRET ?? '');
const synchronous = (process.env.BENCH_SYNCHRONOUS ?? 'NORMAL').toUpperCase();
if (synchronous !== 'NORMAL' && synchronous !== 'FULL') throw new Error(`BENCH_SYNCHRONOUS=${synchronous}?`);
const db = new Database(process.env.BENCH_DB ?? 'bench-minimal.sqlite', { create: true, readwrite: true });
db.exec('PRAGMA journal_mode = WAL');
db.exec(`PRAGMA synchronous = ${synchronous}`);
db.exec('PRAGMA wal_autocheckpoint = 4000');
const runs = process.env.BENCH_RUNS === '1';
db.exec(
  `CREATE TABLE IF NOT EXISTS events (key TEXT PRIMARY KEY, body BLOB NOT NULL${runs ? ', done INTEGER NOT NULL DEFAULT 0' : ''})`,
);
const insert = db.prepare('INSERT OR IGNORE INTO events (key, body) VALUES (?, ?)');
const markDone = runs ? db.prepare('UPDATE events SET done = 1 WHERE key = ?') : null;
/** Keys whose run finished since the last commit: recorded in the next one (BENCH_RUNS). */
let ran: string[] = [];
const begin = db.prepare('BEGIN IMMEDIATE');
const commit = db.prepare('COMMIT');
const rollback = db.prepare('ROLLBACK');

type Queued = { key: string; body: Uint8Array; resolve: (inserted: boolean) => void; reject: (e: unknown) => void };
let queue: Queued[] = [];
let scheduled = false;

/** Commits what this turn queued in one transaction, then answers each insert. */
function flush(): void {
  scheduled = false;
  const batch = queue;
  queue = [];
  const done = ran;
  ran = [];
  const inserted: boolean[] = [];
  try {
    begin.run();
    try {
      if (markDone) for (const key of done) markDone.run(key);
      for (const q of batch) inserted.push(insert.run(q.key, q.body).changes === 1);
      commit.run();
    } catch (error) {
      rollback.run();
      throw error;
    }
  } catch (error) {
    ran = done.concat(ran);
    for (const q of batch) q.reject(error);
    return;
  }
  for (let i = 0; i < batch.length; i++) batch[i]?.resolve(inserted[i] as boolean);
  if (!markDone) return;
  // Each new event runs (a no-op) once acked; its run is recorded by the next commit.
  for (let i = 0; i < batch.length; i++) if (inserted[i]) ran.push((batch[i] as Queued).key);
  if (ran.length > 0 && !scheduled) {
    scheduled = true;
    setImmediate(flush);
  }
}

function record(key: string, body: Uint8Array): Promise<boolean> {
  return new Promise((resolve, reject) => {
    queue.push({ key, body, resolve, reject });
    if (!scheduled) {
      scheduled = true;
      setImmediate(flush);
    }
  });
}

const json = { 'content-type': 'application/json' };
const answer = (status: number, text: string) => new Response(text, { status, headers: json });
const hex = (s: string) => (/^[0-9a-f]{64}$/i.test(s) ? Uint8Array.fromHex(s) : null);

const server = Bun.serve({
  port: Number(process.env.PORT ?? 3000),
  hostname: process.env.HOSTNAME ?? '127.0.0.1',
  async fetch(request) {
    if (request.method !== 'POST' || new URL(request.url).pathname !== '/webhooks/lava') {
      return answer(404, '{"error":"not found"}');
    }
    const body = new Uint8Array(await request.arrayBuffer());
    const given = hex(request.headers.get('x-webhook-signature') ?? '');
    const expected = new Bun.CryptoHasher('sha256', secret).update(body).digest();
    if (!given || !crypto.timingSafeEqual(given, expected)) return answer(401, '{"error":"invalid signature"}');
    try {
      JSON.parse(new TextDecoder().decode(body));
    } catch {
      return answer(400, '{"error":"invalid payload"}');
    }
    try {
      const inserted = await record(Bun.SHA256.hash(body, 'hex'), body);
      return answer(200, inserted ? '{"received":true}' : '{"received":true,"duplicate":true}');
    } catch {
      return answer(503, '{"error":"store unavailable"}');
    }
  },
});
console.log(
  `minimal sqlite receiver (synchronous=${synchronous}${runs ? ', records runs' : ''}) listening on ${server.port}`,
);
