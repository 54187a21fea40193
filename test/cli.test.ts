// The CLI as a person uses it: `bun src/cli.ts …` as a child process, against real server processes and a real
// SQLite file. Every error message it promises is checked here.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SECRET, lavaSign, waitFor } from './helpers/lava.ts';
import { ROOT, type ServerProcess, binAvailable, freePort, startServer } from './helpers/server-process.ts';
import { fixtureEnv } from './fixtures/runs.ts';

const skip = binAvailable('bun') ? false : 'node_modules/.bin/bun is missing (run npm ci)';
if (skip) console.log(`[skip] CLI tests: ${skip}`);

const WRONG_SECRET = "the receiver rejected the signature: check --secret / LAVA_WEBHOOK_SECRET matches the receiver's";

interface CliResult {
  code: number | string;
  stdout: string;
  stderr: string;
}

/** Runs the CLI with exactly this environment (nothing inherited but PATH and HOME). */
function cli(args: string[], env: Record<string, string> = {}, input?: string | Uint8Array): Promise<CliResult> {
  return new Promise((res, rej) => {
    const child = spawn(join(ROOT, 'node_modules/.bin/bun'), [join(ROOT, 'src/cli.ts'), ...args], {
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('error', rej);
    child.on('exit', (code, signal) => res({ code: code ?? signal ?? -1, stdout, stderr }));
    child.stdin.end(input ?? '');
  });
}

function json<T = Record<string, unknown>>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`);
  }
}

const dirs: string[] = [];
const servers: ServerProcess[] = [];
after(() => {
  for (const s of servers) s.kill('SIGKILL');
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function serverEnv(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return fixtureEnv(join(dir, 'runs.tsv'), {
    LAVA_WEBHOOK_DB: join(dir, 'lava.sqlite'),
    LAVA_WEBHOOK_RETRY_SCHEDULE: '50ms',
    ...extra,
  });
}

describe('cli against a running server', { skip }, () => {
  let dir = '';
  let server: ServerProcess;
  let env: Record<string, string> = {};

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lava-cli-'));
    dirs.push(dir);
    server = await startServer({ env: serverEnv(dir) });
    servers.push(server);
    // What a user has in their shell: the receiver's own settings.
    env = { LAVA_WEBHOOK_SECRET: SECRET, PORT: String(server.port), LAVA_WEBHOOK_DB: join(dir, 'lava.sqlite') };
  });

  test('send delivers a signed sample event: 200, status and answer printed', async () => {
    const r = await cli(['send', 'customer.created', '--customer', 'cus_cli_1'], env);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /customer\.created cus_cli_1 → 200 \{"received":true\}/);
  });

  test('send --duplicate sends the same bytes twice; the second answer is duplicate:true', async () => {
    const r = await cli(['send', 'customer.deleted', '--duplicate', '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const out = json<{ ok: boolean; results: Array<{ status: number; duplicate: boolean; repeat: boolean }> }>(r);
    assert.equal(out.ok, true);
    assert.deepEqual(
      out.results.map((x) => [x.status, x.repeat, x.duplicate]),
      [
        [200, false, false],
        [200, true, true],
      ],
    );
  });

  test('send --count and --url with only a host: each event gets the receiver path', async () => {
    const r = await cli(['send', 'customer.created', '--count', '3', '--url', server.url, '--json'], env);
    assert.equal(r.code, 0, r.stderr);
    const out = json<{ url: string; results: Array<{ status: number; customerId: string }> }>(r);
    assert.equal(out.url, `${server.url}/webhooks/lava`);
    assert.equal(out.results.length, 3);
    assert.ok(out.results.every((x) => x.status === 200));
    assert.equal(new Set(out.results.map((x) => x.customerId)).size, 3);
  });

  test('send with a wrong secret says the receiver rejected the signature and exits 1', async () => {
    const r = await cli(['send', 'customer.created', '--secret', 'not-the-secret'], env);
    assert.equal(r.code, 1);
    assert.match(r.stdout, /→ 401/);
    assert.ok(r.stderr.includes(WRONG_SECRET), r.stderr);
  });

  test('send to an unreachable URL says the receiver may not be running and exits 1', async () => {
    const port = await freePort();
    const r = await cli(['send', 'customer.created', '--url', `http://127.0.0.1:${port}/webhooks/lava`], env);
    assert.equal(r.code, 1);
    assert.ok(r.stderr.includes(`could not connect to http://127.0.0.1:${port}/webhooks/lava`), r.stderr);
    assert.ok(r.stderr.includes('is the receiver running? start it with npm start'), r.stderr);
  });

  test('send without any secret is a usage error (exit 2)', async () => {
    const r = await cli(['send', 'customer.created'], { PORT: String(server.port) });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /no secret: pass --secret or set LAVA_WEBHOOK_SECRET/);
  });

  test('sign prints the same signature as createHmac, as a header with --header, and as JSON', async () => {
    const body = '{"event":"customer.created","data":{"customer_id":"cus_sig"}}\n';
    const expected = lavaSign('whsec_other', body);
    const plain = await cli(['sign', '--secret', 'whsec_other'], {}, body);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, `${expected}\n`);
    const header = await cli(['sign', '--header'], { LAVA_WEBHOOK_SECRET: 'whsec_other,whsec_older' }, body);
    assert.equal(header.stdout, `X-Webhook-Signature: ${expected}\n`);
    const asJson = json(await cli(['sign', '--secret', 'whsec_other', '--json'], {}, body));
    assert.deepEqual(asJson, { signature: expected, header: `X-Webhook-Signature: ${expected}`, bytes: body.length });
  });

  test('stats counts per status, as text and as JSON', async () => {
    await waitFor(async () => json(await cli(['stats', '--json'], env)).pending === 0, 10_000, 'events to finish');
    const r = await cli(['stats', '--json'], env);
    const counts = json<Record<string, unknown>>(r);
    assert.deepEqual(Object.keys(counts).sort(), ['dead', 'done', 'pending', 'retrying', 'store', 'total']);
    assert.equal(counts.done, 5); // cus_cli_1, the deletion (its duplicate is not stored) and the three above
    assert.equal(counts.total, 5);
    const text = await cli(['stats'], env);
    assert.match(text.stdout, /^done\s+5$/m);
    assert.match(text.stdout, /^store\s+sqlite /m);
  });

  test('events list filters and pages; show prints headers with the signature masked and the body', async () => {
    const all = json<{ events: Array<Record<string, unknown>>; nextAfter: number | null }>(
      await cli(['events', 'list', '--json', '--event', 'customer.created', '--limit', '2'], env),
    );
    assert.equal(all.events.length, 2);
    assert.equal(typeof all.nextAfter, 'number');
    assert.deepEqual(Object.keys(all.events[0] as object).sort(), [
      'attempts',
      'customerId',
      'deliveries',
      'event',
      'finishedAt',
      'key',
      'lastError',
      'leaseOwner',
      'leaseUntil',
      'nextAttemptAt',
      'policy',
      'receivedAt',
      'seq',
      'status',
      'tombstone',
    ]);
    const next = json<{ events: unknown[] }>(
      await cli(['events', 'list', '--json', '--event', 'customer.created', '--after', String(all.nextAfter)], env),
    );
    assert.equal(next.events.length, 2);
    const mine = json<{ events: Array<{ key: string }> }>(await cli(['events', 'list', '--customer', 'cus_cli_1', '--json'], env));
    assert.deepEqual(
      mine.events.map((e) => e.key),
      ['customer.created:cus_cli_1'],
    );
    const table = await cli(['events', 'list', '--status', 'done'], env);
    assert.match(table.stdout, /^SEQ\s+STATUS\s+TRIES/);
    assert.match(table.stdout, /customer\.created:cus_cli_1$/m);

    const shown = await cli(['events', 'show', 'customer.created:cus_cli_1'], env);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /^status\s+done$/m);
    assert.match(shown.stdout, /"customer_id": "cus_cli_1"/);
    assert.match(shown.stdout, /content-type: application\/json/);
    assert.doesNotMatch(shown.stdout, /[0-9a-f]{64}/, 'a signature was printed in full');
    const record = json<{ key: string; status: string; headers: Record<string, string>; body: { data: { customer_id: string } } }>(
      await cli(['events', 'show', 'customer.created:cus_cli_1', '--json'], env),
    );
    assert.equal(record.status, 'done');
    assert.equal(record.body.data.customer_id, 'cus_cli_1');
    for (const value of Object.values(record.headers)) assert.doesNotMatch(value, /[0-9a-f]{64}/);
  });

  test('events show and requeue of an unknown key say so and exit 1', async () => {
    const shown = await cli(['events', 'show', 'no-such-key'], env);
    assert.equal(shown.code, 1);
    assert.match(shown.stderr, /no event with key no-such-key/);
    const requeued = await cli(['events', 'requeue', 'no-such-key'], env);
    assert.equal(requeued.code, 1);
    assert.match(requeued.stderr, /no event with key no-such-key/);
  });

  test('events purge --before keeps recent events and removes older finished ones', async () => {
    const none = json<{ purged: number }>(await cli(['events', 'purge', '--before', '1d', '--json'], env));
    assert.equal(none.purged, 0);
    const bad = await cli(['events', 'purge', '--before', 'yesterday'], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /expected a date such as 2026-11-01 or a duration such as 7d/);
    const future = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    const all = await cli(['events', 'purge', '--before', future], env);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /purged 5 done events finished before/);
    assert.match(all.stdout, /customer\.created and customer\.deleted keep a tombstone/);
    // Every event here was a customer.created or customer.deleted: what is left of each is a tombstone of its key.
    const left = json<{ events: Array<{ tombstone: boolean; key: string }> }>(await cli(['events', 'list', '--json'], env));
    assert.equal(left.events.length, 5);
    assert.ok(left.events.every((e) => e.tombstone), JSON.stringify(left.events));
    assert.equal(json(await cli(['events', 'purge', '--before', future, '--json'], env)).purged, 0, 'a tombstone is purged once');
  });

  test('events show masks secrets and personal data in the body unless --reveal; signature headers always', async () => {
    const sent = await cli(['send', 'customer.created', '--customer', 'cus_cli_mask', '--data', '{"contact":{"email":"ada@example.com","phone":"+15550100"}}'], env);
    assert.equal(sent.code, 0, sent.stderr);
    const legacy = await cli(['send', 'connection.created', '--customer', 'conn_cli_mask'], env);
    assert.equal(legacy.code, 0, legacy.stderr);
    const legacyKey = json<{ events: Array<{ key: string }> }>(await cli(['events', 'list', '--customer', 'conn_cli_mask', '--json'], env))
      .events[0]?.key as string;
    assert.ok(legacyKey);

    const shown = await cli(['events', 'show', 'customer.created:cus_cli_mask'], env);
    assert.equal(shown.code, 0, shown.stderr);
    assert.ok(!shown.stdout.includes('ada@example.com') && !shown.stdout.includes('+15550100'), shown.stdout);
    assert.match(shown.stdout, /"email": "\[redacted\]"/);
    assert.match(shown.stdout, /"customer_id": "cus_cli_mask"/);
    const asJson = json<{ body: { data: { contact: Record<string, unknown> } } }>(
      await cli(['events', 'show', 'customer.created:cus_cli_mask', '--json'], env),
    );
    assert.equal(asJson.body.data.contact.email, '[redacted]');
    const secret = await cli(['events', 'show', legacyKey], env);
    assert.ok(!secret.stdout.includes('cs_sample_not_a_real_secret'), secret.stdout);
    assert.match(secret.stdout, /"connection_secret": "\[redacted\]"/);

    const revealed = await cli(['events', 'show', 'customer.created:cus_cli_mask', '--reveal'], env);
    assert.equal(revealed.code, 0, revealed.stderr);
    assert.match(revealed.stdout, /"email": "ada@example\.com"/);
    assert.doesNotMatch(revealed.stdout, /[0-9a-f]{64}/, 'a signature header was printed in full');
    const revealedJson = json<{ body: { data: { contact: Record<string, unknown> } } }>(
      await cli(['events', 'show', 'customer.created:cus_cli_mask', '--json', '--reveal'], env),
    );
    assert.equal(revealedJson.body.data.contact.phone, '+15550100');
    assert.match((await cli(['events', 'show', legacyKey, '--reveal'], env)).stdout, /"connection_secret": "cs_sample_not_a_real_secret"/);
    assert.match((await cli(['events', 'show', '--help'], env)).stdout, /--reveal/);
  });
});

describe('cli: a dead letter replayed after its handler is fixed', { skip }, () => {
  test('events requeue --all-dead: the running receiver (restarted without the bug) processes the event', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lava-cli-dead-'));
    dirs.push(dir);
    const db = join(dir, 'lava.sqlite');
    const broken = await startServer({ env: serverEnv(dir, { TEST_FAIL_EVENT: 'customer.deleted' }) });
    servers.push(broken);
    const env = { LAVA_WEBHOOK_SECRET: SECRET, LAVA_WEBHOOK_DB: db };
    const sent = await cli(['send', 'customer.deleted', '--customer', 'cus_gone', '--url', broken.url], env);
    assert.equal(sent.code, 0, sent.stderr);
    const key = 'customer.deleted:cus_gone';
    await waitFor(
      async () => json<{ events: unknown[] }>(await cli(['events', 'list', '--status', 'dead', '--json'], env)).events.length === 1,
      10_000,
      'the event to be dead-lettered',
    );
    const dead = json<{ status: string; attempts: number; lastError: string }>(await cli(['events', 'show', key, '--json'], env));
    assert.equal(dead.status, 'dead');
    assert.equal(dead.attempts, 2);
    assert.match(dead.lastError, /configured to fail customer\.deleted/);
    const stats = await cli(['stats'], env);
    assert.match(stats.stdout, /1 dead: see them with events list --status dead/);

    // Fix the handler: restart without the failure, on the same database.
    broken.kill('SIGTERM');
    await broken.exited;
    const fixed = await startServer({ env: serverEnv(dir) });
    servers.push(fixed);
    const requeued = await cli(['events', 'requeue', '--all-dead', '--json'], env);
    assert.equal(requeued.code, 0, requeued.stderr);
    assert.deepEqual(json(requeued), { requeued: 1, keys: [key] });
    // The CLI only wrote to the store: the server found it by polling.
    await waitFor(
      async () => json<{ status: string }>(await cli(['events', 'show', key, '--json'], env)).status === 'done',
      10_000,
      'the requeued event to be processed',
    );
    const runs = readFileSync(join(dir, 'runs.tsv'), 'utf8');
    assert.match(runs, new RegExp(`^${key}\tcus_gone\t`, 'm'));
    const again = await cli(['events', 'requeue', '--all-dead'], env);
    assert.match(again.stdout, /no dead letters to requeue/);
    fixed.kill('SIGTERM');
    await fixed.exited;
  });
});

describe('cli without a server', { skip }, () => {
  test('a store command with a missing database file says so, exits 1 and creates nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lava-cli-nodb-'));
    dirs.push(dir);
    const db = join(dir, 'missing.sqlite');
    for (const args of [['stats'], ['events', 'list'], ['events', 'requeue', '--all-dead']]) {
      const r = await cli([...args, '--db', db]);
      assert.equal(r.code, 1);
      assert.ok(r.stderr.includes(`no database at ${db} — set LAVA_WEBHOOK_DB or --db`), r.stderr);
    }
    const viaEnv = await cli(['stats'], { LAVA_WEBHOOK_DB: db });
    assert.ok(viaEnv.stderr.includes(`no database at ${db}`), viaEnv.stderr);
    assert.equal(existsSync(db), false, 'the CLI created an empty database');
  });

  test('an unknown command or option prints the usage and exits 2', async () => {
    const unknown = await cli(['frobnicate']);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown command: frobnicate/);
    assert.match(unknown.stderr, /usage: lava-webhooks <command>/);
    const flag = await cli(['events', 'list', '--colour']);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /unknown option for events list: --colour/);
    assert.match(flag.stderr, /usage: lava-webhooks events list/);
    const none = await cli([]);
    assert.equal(none.code, 2);
    const help = await cli(['--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /events requeue <key> \| --all-dead/);
  });
});
