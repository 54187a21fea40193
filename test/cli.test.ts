// The CLI as a person uses it: `bun src/cli.ts …` as a child process, against real server processes and a real
// SQLite file. Every error message it promises is checked here.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { type IncomingHttpHeaders, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { SECRET, lavaSign, waitFor } from './helpers/lava.ts';
import { ROOT, type ServerProcess, binAvailable, freePort, startServer } from './helpers/server-process.ts';
import { fixtureEnv, readRuns } from './fixtures/runs.ts';

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

/** The CLI as a long-running child (events tail): its output so far, and its exit. */
interface LiveCli {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<number | string>;
}

function liveCli(args: string[], env: Record<string, string> = {}): LiveCli {
  const child = spawn(join(ROOT, 'node_modules/.bin/bun'), [join(ROOT, 'src/cli.ts'), ...args], {
    cwd: ROOT,
    env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d) => (stdout += d));
  child.stderr?.on('data', (d) => (stderr += d));
  const exited = new Promise<number | string>((res) => child.on('exit', (code, signal) => res(code ?? signal ?? -1)));
  return { child, stdout: () => stdout, stderr: () => stderr, exited };
}

function jsonLines<T = Record<string, unknown>>(text: string): T[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as T);
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
    assert.match(r.stderr, /no secret: set LAVA_WEBHOOK_SECRET or pipe it to --secret-stdin/);
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
    const mine = json<{ events: Array<{ key: string }> }>(
      await cli(['events', 'list', '--customer', 'cus_cli_1', '--json'], env),
    );
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
    const record = json<{
      key: string;
      status: string;
      headers: Record<string, string>;
      body: { data: { customer_id: string } };
    }>(await cli(['events', 'show', 'customer.created:cus_cli_1', '--json'], env));
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
    const none = json<{ purged: number }>(await cli(['events', 'purge', '--before', '1d', '--json', '--yes'], env));
    assert.equal(none.purged, 0);
    const bad = await cli(['events', 'purge', '--before', 'yesterday', '--yes'], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /expected a date such as 2026-11-01 or a duration such as 7d/);
    const future = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    const all = await cli(['events', 'purge', '--before', future, '--yes'], env);
    assert.equal(all.code, 0, all.stderr);
    assert.match(all.stdout, /purged 5 done events finished before/);
    assert.match(all.stdout, /customer\.created and customer\.deleted keep a tombstone/);
    // Every event here was a customer.created or customer.deleted: what is left of each is a tombstone of its key.
    const left = json<{ events: Array<{ tombstone: boolean; key: string }> }>(
      await cli(['events', 'list', '--json'], env),
    );
    assert.equal(left.events.length, 5);
    assert.ok(
      left.events.every((e) => e.tombstone),
      JSON.stringify(left.events),
    );
    assert.equal(
      json(await cli(['events', 'purge', '--before', future, '--json', '--yes'], env)).purged,
      0,
      'a tombstone is purged once',
    );
  });

  test('events show masks secrets and personal data in the body unless --reveal; signature headers always', async () => {
    const sent = await cli(
      [
        'send',
        'customer.created',
        '--customer',
        'cus_cli_mask',
        '--data',
        '{"contact":{"email":"ada@example.com","phone":"+15550100"}}',
      ],
      env,
    );
    assert.equal(sent.code, 0, sent.stderr);
    const legacy = await cli(['send', 'connection.created', '--customer', 'conn_cli_mask'], env);
    assert.equal(legacy.code, 0, legacy.stderr);
    const legacyKey = json<{ events: Array<{ key: string }> }>(
      await cli(['events', 'list', '--customer', 'conn_cli_mask', '--json'], env),
    ).events[0]?.key as string;
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
    assert.match(
      (await cli(['events', 'show', legacyKey, '--reveal'], env)).stdout,
      /"connection_secret": "cs_sample_not_a_real_secret"/,
    );
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
      async () =>
        json<{ events: unknown[] }>(await cli(['events', 'list', '--status', 'dead', '--json'], env)).events.length ===
        1,
      10_000,
      'the event to be dead-lettered',
    );
    const dead = json<{ status: string; attempts: number; lastError: string }>(
      await cli(['events', 'show', key, '--json'], env),
    );
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
    assert.ok(
      readRuns(join(dir, 'runs.tsv')).some((r) => r.key === key && r.customer === 'cus_gone'),
      'the requeued event ran',
    );
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
    assert.match(help.stdout, /events requeue <id> \| --all-dead/);
  });
});

const PACKAGE_VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const ALL_COMMANDS = [
  ['send'],
  ['sign'],
  ['stats'],
  ['events', 'list'],
  ['events', 'show'],
  ['events', 'tail'],
  ['events', 'requeue'],
  ['events', 'resend'],
  ['events', 'purge'],
];

describe('cli: version, help and mistyped flags', { skip }, () => {
  test('--version prints the version in package.json', async () => {
    const r = await cli(['--version']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${PACKAGE_VERSION}\n`);
  });

  test('--help works on every command and on the events group; bare events is a usage error', async () => {
    for (const command of ALL_COMMANDS) {
      const r = await cli([...command, '--help']);
      assert.equal(r.code, 0, `${command.join(' ')} --help: ${r.stderr}`);
      assert.ok(r.stdout.startsWith(`usage: lava-webhooks ${command.join(' ')}`), r.stdout);
    }
    const group = await cli(['events', '--help']);
    assert.equal(group.code, 0, group.stderr);
    for (const sub of ['list', 'show', 'tail', 'requeue', 'resend', 'purge'])
      assert.match(group.stdout, new RegExp(`^  events ${sub} `, 'm'));
    assert.equal((await cli(['events', '-h'])).code, 0);
    const viaHelp = await cli(['help', 'events', 'resend']);
    assert.equal(viaHelp.code, 0);
    assert.match(viaHelp.stdout, /--to <url>/);
    const bare = await cli(['events']);
    assert.equal(bare.code, 2);
    assert.match(bare.stderr, /events: which command\?/);
    assert.match(bare.stderr, /usage: lava-webhooks events <command>/);
  });

  test('an unknown flag or command names the closest one', async () => {
    const status = await cli(['events', 'list', '--stauts', 'dead']);
    assert.equal(status.code, 2);
    assert.match(status.stderr, /unknown option for events list: --stauts \(did you mean --status\?\)/);
    const dry = await cli(['events', 'purge', '--before', '7d', '--dryrun']);
    assert.equal(dry.code, 2);
    assert.match(dry.stderr, /did you mean --dry-run\?/);
    const secret = await cli(['send', 'customer.created', '--secert', 'x']);
    assert.match(secret.stderr, /unknown option for send: --secert \(did you mean --secret\?\)/);
    const command = await cli(['evnets', 'list']);
    assert.equal(command.code, 2);
    assert.match(command.stderr, /unknown command: evnets \(did you mean events\?\)/);
    assert.match((await cli(['events', 'tial'])).stderr, /unknown command: events tial \(did you mean events tail\?\)/);
  });
});

describe('cli: secrets from the environment or stdin; --secret warns', { skip }, () => {
  const body = '{"event":"customer.created","data":{"customer_id":"cus_sec"}}';
  const expected = lavaSign('whsec_piped', body);

  test('sign --secret-stdin --file signs the file with the piped secret, without a warning', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lava-cli-secret-'));
    dirs.push(dir);
    const file = join(dir, 'body.json');
    writeFileSync(file, body);
    const r = await cli(['sign', '--secret-stdin', '--file', file], {}, 'whsec_piped\n');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${expected}\n`);
    assert.equal(r.stderr, '');
    const fromEnv = await cli(['sign', '--file', file], { LAVA_WEBHOOK_SECRET: 'whsec_piped' });
    assert.equal(fromEnv.stdout, `${expected}\n`);
    assert.equal(fromEnv.stderr, '');
  });

  test('--secret on the command line still signs but warns about shell history and process listings', async () => {
    const r = await cli(['sign', '--secret', 'whsec_piped'], {}, body);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, `${expected}\n`);
    assert.match(r.stderr, /--secret is kept in your shell history and shown in process listings/);
    assert.match(r.stderr, /LAVA_WEBHOOK_SECRET or pipe it to --secret-stdin/);
  });

  test('--secret-stdin: empty stdin, both secret flags, or sign without --file are usage errors', async () => {
    const empty = await cli(['send', 'customer.created', '--secret-stdin'], {}, '');
    assert.equal(empty.code, 2);
    assert.match(empty.stderr, /--secret-stdin: stdin was empty/);
    const both = await cli(['send', 'customer.created', '--secret-stdin', '--secret', 'x'], {}, 'y');
    assert.equal(both.code, 2);
    assert.match(both.stderr, /pass --secret or --secret-stdin, not both/);
    const sign = await cli(['sign', '--secret-stdin'], {}, 'whsec_piped');
    assert.equal(sign.code, 2);
    assert.match(sign.stderr, /with --secret-stdin, pass the body with --file/);
  });
});

describe('cli: short ids, tail, resend and a confirmed purge, against a running server', { skip }, () => {
  let dir = '';
  let server: ServerProcess;
  let env: Record<string, string> = {};
  const settled = () =>
    waitFor(
      async () => {
        const c = json<{ pending: number; retrying: number }>(await cli(['stats', '--json'], env));
        return c.pending === 0 && c.retrying === 0;
      },
      15_000,
      'every event to finish',
    );

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lava-cli-ids-'));
    dirs.push(dir);
    server = await startServer({ env: serverEnv(dir, { TEST_FAIL_EVENT: 'customer.deleted' }) });
    servers.push(server);
    env = { PORT: String(server.port), LAVA_WEBHOOK_DB: join(dir, 'lava.sqlite') };
  });

  test('send --secret-stdin delivers with the piped secret', async () => {
    const r = await cli(['send', 'customer.created', '--customer', 'cus_id_1', '--secret-stdin'], env, `${SECRET}\n`);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /→ 200/);
    assert.doesNotMatch(r.stderr, /warning/);
  });

  test('events show and requeue take a seq, #seq or a unique key prefix; list prints the seq first', async () => {
    const withSecret = { ...env, LAVA_WEBHOOK_SECRET: SECRET };
    for (const args of [
      ['send', 'customer.created', '--customer', 'cus_id_2'],
      ['send', 'customer.wallet.balance.updated', '--customer', 'cus_id_1', '--data', '{"balance":"7.00"}'],
    ]) {
      const r = await cli(args, withSecret);
      assert.equal(r.code, 0, r.stderr);
    }
    await settled();
    const balance = json<{ events: Array<{ seq: number; key: string }> }>(
      await cli(['events', 'list', '--json', '--event', 'customer.wallet.balance.updated'], env),
    ).events;
    assert.equal(balance.length, 1);
    const { seq, key } = balance[0] as { seq: number; key: string };
    assert.match(key, /^customer\.wallet\.balance\.updated@[0-9a-z]+\.[0-9a-f]{8}[0-9a-z]+$/);

    // The line of the event in the table starts with its seq: what a user copies.
    const table = await cli(['events', 'list'], env);
    const line = table.stdout.split('\n').find((l) => l.endsWith(key));
    assert.ok(line?.startsWith(`${seq} `), `line starts with the seq: ${line}`);

    for (const id of [String(seq), `#${seq}`, 'customer.wallet', key]) {
      const shown = await cli(['events', 'show', id, '--json'], env);
      assert.equal(shown.code, 0, `${id}: ${shown.stderr}`);
      assert.equal(json<{ key: string }>(shown).key, key, id);
    }
    const text = await cli(['events', 'show', String(seq)], env);
    assert.match(text.stdout, new RegExp(`^key\\s+${key.replace(/[.]/g, '\\.')}$`, 'm'));

    const ambiguous = await cli(['events', 'show', 'customer.created:cus_id_'], env);
    assert.equal(ambiguous.code, 2);
    assert.match(ambiguous.stderr, /customer\.created:cus_id_ is the start of 2 keys: pass the seq or more of the key/);
    assert.match(ambiguous.stderr, /^\s+\d+ {2}customer\.created:cus_id_1$/m);
    assert.match(ambiguous.stderr, /^\s+\d+ {2}customer\.created:cus_id_2$/m);

    const first = json<{ events: Array<{ seq: number }> }>(
      await cli(['events', 'list', '--json', '--customer', 'cus_id_2'], env),
    ).events[0]?.seq;
    const requeued = await cli(['events', 'requeue', String(first), '--json'], env);
    assert.equal(requeued.code, 0, requeued.stderr);
    assert.deepEqual(json<{ keys: string[] }>(requeued).keys, ['customer.created:cus_id_2']);
    await settled();

    const missing = await cli(['events', 'show', '987654'], env);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no event with key, key prefix or seq 987654/);
    const missingSeq = await cli(['events', 'requeue', '#987654'], env);
    assert.equal(missingSeq.code, 1);
    assert.match(missingSeq.stderr, /no event with seq 987654/);
  });

  test('events tail --json follows new events to done and dead, and exits 0 on SIGINT', async () => {
    const tail = liveCli(['events', 'tail', '--json', '--interval', '100ms'], env);
    try {
      await waitFor(() => /following events after #\d+/.test(tail.stderr()), 15_000, 'tail to start');
      const withSecret = { ...env, LAVA_WEBHOOK_SECRET: SECRET };
      assert.equal((await cli(['send', 'customer.created', '--customer', 'cus_tail_ok'], withSecret)).code, 0);
      assert.equal((await cli(['send', 'customer.deleted', '--customer', 'cus_tail_bad'], withSecret)).code, 0);
      type Line = { type: string; key: string; status: string; seq: number; error: string | null; attempts: number };
      const has = (pred: (l: Line) => boolean) => jsonLines<Line>(tail.stdout()).some(pred);
      await waitFor(
        () =>
          has((l) => l.type === 'status' && l.key === 'customer.created:cus_tail_ok' && l.status === 'done') &&
          has((l) => l.type === 'status' && l.key === 'customer.deleted:cus_tail_bad' && l.status === 'dead'),
        15_000,
        `tail to show both outcomes:\n${tail.stdout()}`,
      );
      const lines = jsonLines<Line>(tail.stdout());
      assert.deepEqual(
        lines.filter((l) => l.type === 'received').map((l) => l.key),
        ['customer.created:cus_tail_ok', 'customer.deleted:cus_tail_bad'],
        'one received line per new event, and nothing from before the tail started',
      );
      const dead = lines.find((l) => l.type === 'status' && l.status === 'dead') as Line;
      assert.match(dead.error ?? '', /configured to fail customer\.deleted/);
      assert.equal(dead.attempts, 2);
      assert.equal(lines.filter((l) => l.type === 'status' && l.status === 'done').length, 1, 'done is printed once');
    } finally {
      tail.child.kill('SIGINT');
    }
    const code = await Promise.race([tail.exited, new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    assert.match(tail.stderr(), /stopped \(interrupted\): 2 new events\n$/);
    // Deno's child_process reports the signal it sent rather than the exit status; the line above shows the stop.
    if (!('Deno' in globalThis)) assert.equal(code, 0, tail.stderr());
    else assert.notEqual(code, 'still running');
  });

  test('events tail --once, --after, --event, --status and --for bound and filter what it prints', async () => {
    const since = json<{ events: Array<{ seq: number; key: string }> }>(
      await cli(['events', 'list', '--json', '--customer', 'cus_tail_ok'], env),
    ).events[0]?.seq as number;
    const after = String(since - 1);
    const created = await cli(['events', 'tail', '--once', '--after', after, '--event', 'customer.created'], env);
    assert.equal(created.code, 0, created.stderr);
    assert.match(
      created.stdout,
      /#\d+ {2}received {2}customer\.created {2}cus_tail_ok {2}customer\.created:cus_tail_ok/,
    );
    assert.match(created.stdout, /#\d+ {2}done {6}customer\.created {2}cus_tail_ok {2}after 1 attempt$/m);
    assert.doesNotMatch(created.stdout, /cus_tail_bad/);
    const dead = await cli(['events', 'tail', '--once', '--after', after, '--status', 'dead', '--json'], env);
    assert.equal(dead.code, 0, dead.stderr);
    const lines = jsonLines<{ key: string; status: string }>(dead.stdout);
    assert.deepEqual(
      lines.map((l) => [l.key, l.status]),
      [['customer.deleted:cus_tail_bad', 'dead']],
    );
    const started = Date.now();
    const bounded = await cli(['events', 'tail', '--for', '300ms', '--interval', '50ms'], env);
    assert.equal(bounded.code, 0, bounded.stderr);
    assert.ok(Date.now() - started < 10_000);
    const bad = await cli(['events', 'tail', '--status', 'lost'], env);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--status takes one or more of pending, retrying, done, dead/);
  });

  test('events resend posts the exact stored body, signed afresh, to any endpoint and prints its answer', async () => {
    const received: Array<{ body: Buffer; headers: IncomingHttpHeaders; url: string }> = [];
    let answer = 202;
    const endpoint = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        received.push({ body: Buffer.concat(chunks), headers: req.headers, url: req.url ?? '' });
        res.writeHead(answer, { 'content-type': 'text/plain' }).end(answer === 202 ? 'accepted' : 'boom');
      });
    });
    await new Promise<void>((r) => endpoint.listen(0, '127.0.0.1', r));
    const to = `http://127.0.0.1:${(endpoint.address() as AddressInfo).port}/hook`;
    try {
      const seq = json<{ events: Array<{ seq: number }> }>(
        await cli(['events', 'list', '--json', '--customer', 'cus_id_2'], env),
      ).events[0]?.seq as number;
      const r = await cli(['events', 'resend', String(seq), '--to', to, '--secret-stdin'], env, 'whsec_elsewhere');
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^resent #${seq} customer\\.created:cus_id_2 \\(\\d+ bytes\\) to ${to}$`, 'm'));
      assert.match(r.stdout, /^→ 202 accepted$/m);
      const got = received[0];
      assert.ok(got);
      assert.equal(got.url, '/hook');
      assert.equal(got.headers['x-webhook-signature'], lavaSign('whsec_elsewhere', got.body));
      assert.equal((JSON.parse(got.body.toString()) as { data: { customer_id: string } }).data.customer_id, 'cus_id_2');

      // Back to the receiver itself, with its secret from the environment: the signature verifies over the exact
      // bytes, and the same identity makes it a duplicate.
      const again = await cli(
        ['events', 'resend', 'customer.created:cus_id_2', '--to', `${server.url}/webhooks/lava`, '--json'],
        {
          ...env,
          LAVA_WEBHOOK_SECRET: SECRET,
        },
      );
      assert.equal(again.code, 0, again.stderr);
      const out = json<{ status: number; answer: { duplicate?: boolean }; ok: boolean }>(again);
      assert.equal(out.status, 200);
      assert.equal(out.answer.duplicate, true);

      const wrong = await cli(['events', 'resend', String(seq), '--to', `${server.url}/webhooks/lava`], {
        ...env,
        LAVA_WEBHOOK_SECRET: 'nope',
      });
      assert.equal(wrong.code, 1);
      assert.match(wrong.stdout, /→ 401/);
      assert.ok(wrong.stderr.includes(WRONG_SECRET), wrong.stderr);

      answer = 500;
      const failing = await cli(['events', 'resend', String(seq), '--to', to], { ...env, LAVA_WEBHOOK_SECRET: SECRET });
      assert.equal(failing.code, 1);
      assert.match(failing.stdout, /→ 500 boom/);

      const noTarget = await cli(['events', 'resend', String(seq)], { ...env, LAVA_WEBHOOK_SECRET: SECRET });
      assert.equal(noTarget.code, 2);
      assert.match(noTarget.stderr, /pass --to <URL>/);
    } finally {
      endpoint.close();
    }
  });

  test('events purge counts first; refuses without a terminal or --yes; --dry-run only counts; asks on a TTY', async () => {
    const future = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10);
    const counts = async () => json<Record<string, number>>(await cli(['stats', '--json'], env));
    const donesBefore = (await counts()).done as number;
    assert.ok(donesBefore >= 4, `done events to purge: ${donesBefore}`);

    const refused = await cli(['events', 'purge', '--before', future], env);
    assert.equal(refused.code, 2);
    assert.match(
      refused.stderr,
      new RegExp(`would purge ${donesBefore} done events finished before .* add --yes to purge`),
    );
    const dry = await cli(['events', 'purge', '--before', future, '--dry-run', '--json'], env);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(
      { ...json<Record<string, unknown>>(dry), before: undefined },
      { dryRun: true, wouldPurge: donesBefore, exact: true, before: undefined, status: ['done'] },
    );
    const dryText = await cli(['events', 'purge', '--before', future, '--include-dead', '--dry-run'], env);
    assert.match(
      dryText.stdout,
      new RegExp(
        `^would purge ${donesBefore + 1} done and dead events finished before .* \\(dry run: nothing removed\\)$`,
        'm',
      ),
    );
    const tombstones = async () =>
      json<{ events: Array<{ tombstone: boolean }> }>(
        await cli(['events', 'list', '--json', '--limit', '1000'], env),
      ).events.filter((e) => e.tombstone).length;
    assert.equal(await tombstones(), 0, 'refusing and --dry-run removed nothing');

    const script = spawnSync('script', ['--version'], { encoding: 'utf8' });
    const purgeArgs = [
      join(ROOT, 'node_modules/.bin/bun'),
      join(ROOT, 'src/cli.ts'),
      'events',
      'purge',
      '--before',
      future,
    ];
    if (script.status === 0) {
      // A real terminal: script(1) gives the CLI a pseudo-TTY and types the answer.
      const onTty = (answer: string) =>
        new Promise<{ code: number | null; output: string }>((res) => {
          const child = spawn('script', ['-qec', purgeArgs.map((a) => `'${a}'`).join(' '), '/dev/null'], {
            cwd: ROOT,
            env: { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', ...env },
          });
          let output = '';
          child.stdout.on('data', (d) => (output += d));
          child.stderr.on('data', (d) => (output += d));
          child.on('exit', (code) => res({ code, output }));
          child.stdin.end(answer);
        });
      const no = await onTty('n\n');
      assert.equal(no.code, 1, no.output);
      assert.match(no.output, new RegExp(`purge ${donesBefore} done events finished before .*\\? \\[y/N\\]`));
      assert.match(no.output, /purge cancelled: nothing was removed/);
      assert.equal(await tombstones(), 0);
      const yes = await onTty('y\n');
      assert.equal(yes.code, 0, yes.output);
      assert.match(yes.output, new RegExp(`purged ${donesBefore} done events finished before`));
    } else {
      console.log('[skip] purge confirmation on a terminal: script(1) is not installed; purging with --yes instead');
      const yes = await cli(['events', 'purge', '--before', future, '--yes'], env);
      assert.match(yes.stdout, new RegExp(`purged ${donesBefore} done events`));
    }
    assert.equal(
      await tombstones(),
      donesBefore - 1,
      'the once events are tombstones now (the balance update is gone)',
    );
    // Tombstones are not purged again, and the count says so.
    assert.equal(
      json<{ wouldPurge: number }>(await cli(['events', 'purge', '--before', future, '--dry-run', '--json'], env))
        .wouldPurge,
      0,
    );

    const tomb = json<{ events: Array<{ seq: number; tombstone: boolean }> }>(
      await cli(['events', 'list', '--json', '--customer', 'cus_id_2'], env),
    ).events[0] as { seq: number; tombstone: boolean };
    assert.equal(tomb.tombstone, true);
    const resend = await cli(['events', 'resend', String(tomb.seq), '--to', `${server.url}/webhooks/lava`], {
      ...env,
      LAVA_WEBHOOK_SECRET: SECRET,
    });
    assert.equal(resend.code, 1);
    assert.match(
      resend.stderr,
      /customer\.created:cus_id_2 \(seq \d+\) is a tombstone: purge kept only its key, not its body, so there is nothing to resend/,
    );
  });
});
