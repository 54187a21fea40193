// What the server does with its environment at start-up, as a real process: the bind address comes from
// LAVA_WEBHOOK_HOST (never HOSTNAME), a bad value is reported once with its variable, a plain-http relay target is
// refused unless allowed, and an unreachable Postgres is named by host and port, never by its password.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { SECRET, sleep } from './helpers/lava.ts';
import { openPg } from './helpers/pg.ts';
import { binAvailable, freePort, startServer } from './helpers/server-process.ts';

const RELAY_SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const runtimes = (['bun', 'deno'] as const).filter((r) => binAvailable(r));
if (runtimes.length < 2) console.log('[skip] some server runtimes are missing from node_modules/.bin (run npm ci)');
const base = { LAVA_WEBHOOK_SECRET: SECRET, LAVA_WEBHOOK_STORE: 'memory' };

/** Occurrences of `needle` in `haystack`. */
const count = (haystack: string, needle: string) => haystack.split(needle).length - 1;

describe('server bind address (bun)', {
  skip: binAvailable('bun') ? false : 'node_modules/.bin/bun is missing',
}, () => {
  test('LAVA_WEBHOOK_HOST is the bind address; HOSTNAME (a pod name on Kubernetes) is not read', async () => {
    const server = await startServer({
      env: { ...base, LOG_LEVEL: 'info', HOSTNAME: 'lava-receiver-7d9f8-xk2lp', LAVA_WEBHOOK_HOST: '127.0.0.1' },
    });
    try {
      assert.match(server.output(), new RegExp(`"msg":"listening","url":"http://127\\.0\\.0\\.1:${server.port}"`));
      assert.doesNotMatch(server.output(), /lava-receiver-7d9f8-xk2lp/);
    } finally {
      server.kill('SIGKILL');
      await server.exited;
    }
  });
});

for (const runtime of runtimes) {
  describe(`server start-up refusals (${runtime})`, () => {
    test('a bad value is reported once, naming the variable, what is wrong and the value, and nothing else', async () => {
      const server = await startServer({ runtime, env: { ...base, LAVA_WEBHOOK_CONCURRENCY: 'lots' }, noWait: true });
      assert.equal(await server.exited, 1);
      const out = server.output();
      assert.match(
        out,
        /refusing to start: invalid configuration: LAVA_WEBHOOK_CONCURRENCY: expected a whole number from 1 to 10000, got "lots"/,
      );
      assert.equal(count(out, 'LAVA_WEBHOOK_CONCURRENCY'), 1, out);
      assert.doesNotMatch(out, /LAVA_WEBHOOK_SECRET/, 'no hint about a variable that is fine');
    });

    test('a missing secret says which variable and what it is', async () => {
      const server = await startServer({ runtime, env: { LAVA_WEBHOOK_STORE: 'memory' }, noWait: true });
      assert.equal(await server.exited, 1);
      const out = server.output();
      assert.match(
        out,
        /LAVA_WEBHOOK_SECRET: is required: the webhook_secret Lava showed when you created the endpoint/,
      );
      assert.equal(count(out, 'LAVA_WEBHOOK_SECRET'), 1, out);
    });

    test('an unreachable Postgres is named by host and port, never by the password', async () => {
      const port = await freePort();
      const server = await startServer({
        runtime,
        env: { LAVA_WEBHOOK_SECRET: SECRET, DATABASE_URL: `postgres://lava:hunter2-secret@127.0.0.1:${port}/lava` },
        noWait: true,
      });
      assert.equal(await server.exited, 1);
      const out = server.output();
      assert.match(
        out,
        new RegExp(`refusing to start: cannot reach PostgreSQL at 127\\.0\\.0\\.1:${port} \\(connection refused\\)`),
        out,
      );
      assert.doesNotMatch(out, /hunter2/);
    });
  });
}

describe('server start-up against a real Postgres', () => {
  test("a login the server refuses is reported with host, port and the server's reason, without the password", async (t) => {
    const { pg, reason } = await openPg();
    if (!pg) {
      t.skip(reason);
      return;
    }
    await pg.done();
    if (!binAvailable('bun')) {
      t.skip('node_modules/.bin/bun is missing');
      return;
    }
    const u = new URL(pg.url);
    u.username = 'lava_no_such_role';
    u.password = 'hunter2-secret';
    const server = await startServer({ env: { LAVA_WEBHOOK_SECRET: SECRET, DATABASE_URL: u.href }, noWait: true });
    assert.equal(await server.exited, 1);
    const out = server.output();
    const where = `${u.hostname}:${u.port || '5432'}`.replace(/\./g, '\\.');
    assert.match(out, new RegExp(`PostgreSQL at ${where} refused the connection \\(.*lava_no_such_role`), out);
    assert.doesNotMatch(out, /hunter2/);
  });
});

describe('relay target over plain http (bun)', {
  skip: binAvailable('bun') ? false : 'node_modules/.bin/bun is missing',
}, () => {
  test('refused at start-up unless LAVA_RELAY_ALLOW_HTTP=true; loopback needs no opt-in', async () => {
    const relay = {
      ...base,
      LAVA_RELAY_SECRET: RELAY_SECRET,
      LAVA_RELAY_URL: 'http://app.internal.example/hooks/lava',
    };
    const refused = await startServer({ env: relay, noWait: true });
    try {
      assert.equal(await Promise.race([refused.exited, sleep(15_000).then(() => 'still running')]), 1);
    } finally {
      refused.kill('SIGKILL');
    }
    assert.match(
      refused.output(),
      /LAVA_RELAY_URL: plain http:\/\/ to another machine .* set LAVA_RELAY_ALLOW_HTTP=true/,
    );

    for (const env of [
      { ...relay, LAVA_RELAY_ALLOW_HTTP: 'true' },
      { ...relay, LAVA_RELAY_URL: 'http://127.0.0.1:9/hooks/lava' },
    ]) {
      const server = await startServer({ env });
      server.kill('SIGKILL');
      await server.exited;
    }
  });
});
