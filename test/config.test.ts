// loadConfig(): the server's environment, validated at start-up with messages that name the variable.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { loadConfig, loadStoreConfig, parseBytes, parseDuration, relayUrls } from '../src/config.ts';
import { ConfigError } from '../src/receiver.ts';
import { pgAddress, pgUnreachable } from '../src/runtime/pg-reach.ts';

describe('loadConfig()', () => {
  test('applies the documented defaults', () => {
    const c = loadConfig({ LAVA_WEBHOOK_SECRET: 'whsec_abc' });
    assert.deepEqual(c.LAVA_WEBHOOK_SECRET, ['whsec_abc']);
    assert.equal(c.PORT, 3000);
    assert.equal(c.LAVA_WEBHOOK_DB, './data/lava-webhooks.sqlite');
    assert.equal(c.LAVA_WEBHOOK_BODY_LIMIT, 256 * 1024);
    assert.equal(c.LAVA_WEBHOOK_CONCURRENCY, 8);
    assert.equal(c.LAVA_WEBHOOK_RETENTION, 7 * 86_400_000);
    assert.equal(c.LAVA_WEBHOOK_TOMBSTONE_RETENTION, 3 * 365 * 86_400_000);
    assert.equal(c.LAVA_WEBHOOK_DURABILITY, 'full');
    assert.equal(c.LAVA_WEBHOOK_PATH, '/webhooks/lava');
    assert.equal(c.LOG_LEVEL, 'info');
    assert.equal(c.LAVA_WEBHOOK_TRUST_WEBHOOK_ID, false);
  });

  test('LAVA_WEBHOOK_TRUST_WEBHOOK_ID takes true/false or 1/0, and names itself when it is anything else', () => {
    const trust = (v: string) =>
      loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_WEBHOOK_TRUST_WEBHOOK_ID: v }).LAVA_WEBHOOK_TRUST_WEBHOOK_ID;
    assert.equal(trust('true'), true);
    assert.equal(trust('1'), true);
    assert.equal(trust('false'), false);
    assert.equal(trust('0'), false);
    assert.throws(() => trust('yes'), /LAVA_WEBHOOK_TRUST_WEBHOOK_ID: expected true or false/);
  });

  test('splits comma-separated secrets for rotation and trims them', () => {
    assert.deepEqual(loadConfig({ LAVA_WEBHOOK_SECRET: ' new , old ,' }).LAVA_WEBHOOK_SECRET, ['new', 'old']);
  });

  test('refuses a missing or empty secret with a message naming the variable', () => {
    assert.throws(
      () => loadConfig({}),
      (e: Error) => e instanceof ConfigError && /LAVA_WEBHOOK_SECRET/.test(e.message),
    );
    assert.throws(() => loadConfig({ LAVA_WEBHOOK_SECRET: '' }), /LAVA_WEBHOOK_SECRET: is required/);
    assert.throws(() => loadConfig({ LAVA_WEBHOOK_SECRET: ' , ' }), /LAVA_WEBHOOK_SECRET: must hold at least one/);
  });

  test('parses sizes and durations, and lists every bad value at once', () => {
    const c = loadConfig({
      LAVA_WEBHOOK_SECRET: 's',
      LAVA_WEBHOOK_BODY_LIMIT: '1mb',
      LAVA_WEBHOOK_RETENTION: '12h',
      LAVA_WEBHOOK_RETRY_SCHEDULE: '100ms,2s,1m',
      PORT: '8080',
    });
    assert.equal(c.LAVA_WEBHOOK_BODY_LIMIT, 1024 * 1024);
    assert.equal(c.LAVA_WEBHOOK_RETENTION, 12 * 3_600_000);
    assert.deepEqual(c.LAVA_WEBHOOK_RETRY_SCHEDULE, [100, 2000, 60000]);
    assert.equal(c.PORT, 8080);
    assert.throws(
      () =>
        loadConfig({
          LAVA_WEBHOOK_SECRET: 's',
          PORT: 'eighty',
          LAVA_WEBHOOK_RETENTION: 'forever',
          LAVA_WEBHOOK_STORE: 'mongo',
        }),
      (e: Error) =>
        /PORT/.test(e.message) && /LAVA_WEBHOOK_RETENTION/.test(e.message) && /LAVA_WEBHOOK_STORE/.test(e.message),
    );
  });

  test('LAVA_WEBHOOK_TOMBSTONE_RETENTION must be at least the retention, and says why', () => {
    const c = loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_WEBHOOK_TOMBSTONE_RETENTION: '400d' });
    assert.equal(c.LAVA_WEBHOOK_TOMBSTONE_RETENTION, 400 * 86_400_000);
    assert.throws(
      () =>
        loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_WEBHOOK_RETENTION: '30d', LAVA_WEBHOOK_TOMBSTONE_RETENTION: '7d' }),
      (e: Error) =>
        e instanceof ConfigError &&
        /LAVA_WEBHOOK_TOMBSTONE_RETENTION: must be at least LAVA_WEBHOOK_RETENTION/.test(e.message),
    );
  });

  test('LAVA_WEBHOOK_HOST is the bind address; HOSTNAME (the pod name on Kubernetes) is not read', () => {
    const c = loadConfig({ LAVA_WEBHOOK_SECRET: 's', HOSTNAME: 'lava-7d9f8-xk2lp' });
    assert.equal(c.LAVA_WEBHOOK_HOST, '0.0.0.0');
    assert.equal((c as Record<string, unknown>).HOSTNAME, undefined);
    assert.equal(
      loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_WEBHOOK_HOST: '127.0.0.1' }).LAVA_WEBHOOK_HOST,
      '127.0.0.1',
    );
  });

  test('body memory, rejection log rate and private metrics settings, with their defaults', () => {
    const d = loadConfig({ LAVA_WEBHOOK_SECRET: 's' });
    assert.equal(d.LAVA_WEBHOOK_BODY_MEMORY, 64 * 1024 * 1024);
    assert.equal(d.LAVA_WEBHOOK_REJECTION_LOG_RATE, 10);
    assert.equal(d.LAVA_WEBHOOK_METRICS_TOKEN, undefined);
    assert.equal(d.LAVA_WEBHOOK_METRICS_PORT, undefined);
    const c = loadConfig({
      LAVA_WEBHOOK_SECRET: 's',
      LAVA_WEBHOOK_BODY_MEMORY: '16mb',
      LAVA_WEBHOOK_REJECTION_LOG_RATE: '0',
      LAVA_WEBHOOK_METRICS_TOKEN: 'a'.repeat(32),
      LAVA_WEBHOOK_METRICS_PORT: '9091',
    });
    assert.equal(c.LAVA_WEBHOOK_BODY_MEMORY, 16 * 1024 * 1024);
    assert.equal(c.LAVA_WEBHOOK_REJECTION_LOG_RATE, 0);
    assert.equal(c.LAVA_WEBHOOK_METRICS_PORT, 9091);
    assert.throws(
      () => loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_WEBHOOK_BODY_MEMORY: '128kb' }),
      /LAVA_WEBHOOK_BODY_MEMORY: must be at least LAVA_WEBHOOK_BODY_LIMIT/,
    );
    assert.throws(
      () => loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_WEBHOOK_METRICS_PORT: '3000' }),
      /LAVA_WEBHOOK_METRICS_PORT: must differ from PORT/,
    );
    // A short token is refused, and never echoed.
    assert.throws(
      () => loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_WEBHOOK_METRICS_TOKEN: 'short-tok' }),
      (e: Error) =>
        /LAVA_WEBHOOK_METRICS_TOKEN: must be at least 16 characters/.test(e.message) &&
        !e.message.includes('short-tok'),
    );
  });

  test('an error names each variable once, says what is wrong and the value it had, and nothing about others', () => {
    const messageOf = (env: Record<string, string>) => {
      try {
        loadConfig({ LAVA_WEBHOOK_SECRET: 's', ...env });
      } catch (e) {
        return (e as Error).message;
      }
      return '';
    };
    assert.equal(
      messageOf({ PORT: '99999' }),
      'invalid configuration: PORT: expected a whole number from 0 to 65535, got "99999"',
    );
    assert.equal(
      messageOf({ LAVA_WEBHOOK_STORE: 'mongo' }),
      'invalid configuration: LAVA_WEBHOOK_STORE: expected sqlite, memory, kv or postgres, got "mongo"',
    );
    assert.equal(
      messageOf({ LAVA_WEBHOOK_PATH: 'hooks' }),
      'invalid configuration: LAVA_WEBHOOK_PATH: expected a path starting with /, got "hooks"',
    );
    assert.equal(
      messageOf({ LAVA_WEBHOOK_RETENTION: 'forever', LOG_LEVEL: 'loud' }),
      'invalid configuration:\n  LAVA_WEBHOOK_RETENTION: expected a duration such as 7d, got "forever"\n  LOG_LEVEL: expected debug, info, warn, error or silent, got "loud"',
    );
    // Values that may hold a secret are never repeated.
    assert.doesNotMatch(messageOf({ LAVA_RELAY_URL: 'not a url with token=abc' }), /token=abc/);
  });

  test('whole numbers: surrounding spaces are fine; fractions, exponents and unsafe integers are refused', () => {
    const port = (v: string) => loadConfig({ LAVA_WEBHOOK_SECRET: 's', PORT: v }).PORT;
    assert.equal(port(' 8080 '), 8080);
    for (const bad of ['8080.5', '1e3', '-1', '0x50', '99999999999999999999']) {
      assert.throws(() => port(bad), /PORT: expected a whole number from 0 to 65535/, bad);
    }
    assert.throws(
      () => loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_WEBHOOK_CONCURRENCY: '99999999999999999999' }),
      /LAVA_WEBHOOK_CONCURRENCY: expected a whole number from 1 to 10000/,
    );
  });

  test('LAVA_RELAY_URL: an http(s) URL with its scheme spelled out, trimmed', () => {
    const relay = (url: string) =>
      loadConfig({
        LAVA_WEBHOOK_SECRET: 's',
        LAVA_RELAY_URL: url,
        LAVA_RELAY_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2La',
      }).LAVA_RELAY_URL;
    assert.equal(relay('  https://app.example/hooks \n'), 'https://app.example/hooks');
    for (const bad of [
      'ftp://app.example/x',
      'http:app.example',
      'https:/app.example',
      '//app.example/x',
      'app.example',
    ]) {
      assert.throws(() => relay(bad), /LAVA_RELAY_URL: expected an http\(s\) URL/, bad);
    }
  });

  test('loadStoreConfig() reads only the store variables: no secret needed, their problems named', () => {
    const c = loadStoreConfig({ LAVA_WEBHOOK_STORE: 'postgres', DATABASE_URL: 'postgres://db/x', PORT: 'eighty' });
    assert.equal(c.LAVA_WEBHOOK_STORE, 'postgres');
    assert.equal(c.DATABASE_URL, 'postgres://db/x');
    assert.equal(c.LAVA_WEBHOOK_PG_SCHEMA, 'lava_webhooks');
    assert.equal(c.LAVA_WEBHOOK_RETENTION, 7 * 86_400_000);
    assert.deepEqual(Object.keys(c).sort(), [
      'DATABASE_URL',
      'LAVA_WEBHOOK_DB',
      'LAVA_WEBHOOK_DURABILITY',
      'LAVA_WEBHOOK_KV',
      'LAVA_WEBHOOK_PG_SCHEMA',
      'LAVA_WEBHOOK_RETENTION',
      'LAVA_WEBHOOK_STORE',
    ]);
    assert.throws(
      () => loadStoreConfig({ LAVA_WEBHOOK_PG_SCHEMA: 'a-b', LAVA_WEBHOOK_STORE: 'mongo' }),
      (e: Error) =>
        e instanceof ConfigError &&
        e.message ===
          'invalid configuration:\n  LAVA_WEBHOOK_STORE: expected sqlite, memory, kv or postgres, got "mongo"\n' +
            '  LAVA_WEBHOOK_PG_SCHEMA: expected a plain schema name (letters, digits and _, at most 63), got "a-b"',
    );
  });

  test('pgAddress() and pgUnreachable() name host and port, never the user or password', async () => {
    assert.equal(pgAddress('postgres://lava:pw@db.internal:5499/lava'), 'db.internal:5499');
    assert.equal(pgAddress('postgresql://lava@db.internal/lava'), 'db.internal:5432');
    assert.equal(
      pgAddress('postgres://lava:pw@/lava?host=/var/run/postgresql'),
      'the socket in /var/run/postgresql (port 5432)',
    );
    const url = 'postgres://lava:hunter2@127.0.0.1:5499/lava';
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5499'), { code: 'ECONNREFUSED' });
    // The store wraps the client's error as its cause.
    const wrapped = new Error('postgres store could not ping: connect ECONNREFUSED', { cause: refused });
    assert.equal(await pgUnreachable(url, wrapped), 'cannot reach PostgreSQL at 127.0.0.1:5499 (connection refused)');
    const auth = Object.assign(new Error('password authentication failed for user "lava" (hunter2)'), {
      code: '28P01',
    });
    const message = await pgUnreachable(url, auth);
    assert.equal(
      message,
      'PostgreSQL at 127.0.0.1:5499 refused the connection (password authentication failed for user "lava" (***))',
    );
    assert.equal(await pgUnreachable(url, new Error('relation is not ours')), null, 'anything else speaks for itself');
  });

  test('parseDuration() and parseBytes() accept the documented units only', () => {
    assert.equal(parseDuration('500ms'), 500);
    assert.equal(parseDuration('10s'), 10_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('7d'), 604_800_000);
    assert.equal(parseDuration('2y'), 2 * 365 * 86_400_000);
    assert.equal(parseDuration('250'), 250);
    assert.equal(parseDuration('ten'), null);
    assert.equal(parseDuration('-5s'), null);
    assert.equal(parseBytes('256kb'), 262_144);
    assert.equal(parseBytes('2MiB'), 2_097_152);
    assert.equal(parseBytes('12'), 12);
    assert.equal(parseBytes('1gb'), null);
  });

  test('relay settings: per-event URLs from LAVA_RELAY_URL_<EVENT>, and the secret is required with a URL', () => {
    assert.deepEqual(
      relayUrls({
        LAVA_RELAY_URL_CUSTOMER_DELETED: 'http://a/x',
        LAVA_RELAY_URL_CUSTOMER_WALLET_BALANCE_UPDATED: 'http://b/y',
      }),
      { 'customer.deleted': 'http://a/x', 'customer.wallet.balance.updated': 'http://b/y' },
    );
    assert.throws(
      () => loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_RELAY_URL: 'http://a/x' }),
      /LAVA_RELAY_SECRET: is required/,
    );
    assert.throws(
      () => loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_RELAY_URL: 'http://a/x', LAVA_RELAY_SECRET: 'plain' }),
      /LAVA_RELAY_SECRET: expected a Standard Webhooks secret/,
    );
    assert.throws(() => loadConfig({ LAVA_WEBHOOK_SECRET: 's', LAVA_RELAY_URL: 'not a url' }), /LAVA_RELAY_URL/);
    const c = loadConfig({
      LAVA_WEBHOOK_SECRET: 's',
      LAVA_RELAY_URL: 'https://app.example/hooks',
      LAVA_RELAY_SECRET: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      LAVA_RELAY_TIMEOUT: '3s',
    });
    assert.equal(c.LAVA_RELAY_TIMEOUT, 3000);
  });
});
