// The server's built-in logging handlers (no LAVA_WEBHOOK_HANDLERS), as a real process: what it prints identifies
// each event but carries none of the customer's contact details and no connection secret.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { samplePayload } from '../src/samples.ts';
import { SECRET, signedRequest, waitFor } from './helpers/lava.ts';
import { binAvailable, startServer } from './helpers/server-process.ts';

const skip = binAvailable('bun') ? false : 'node_modules/.bin/bun is missing (run npm ci)';
if (skip) console.log(`[skip] server logging test: ${skip}`);

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const handlerLines = (output: string) =>
  output
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.msg === 'event');

describe('server with the built-in logging handlers', { skip }, () => {
  test('logs event, key, customer id, attempt and outcome; never the email or the connection secret', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lava-logging-'));
    dirs.push(dir);
    const server = await startServer({
      env: {
        LAVA_WEBHOOK_SECRET: SECRET,
        LAVA_WEBHOOK_DB: join(dir, 'lava.sqlite'),
        LAVA_WEBHOOK_POLL: '100ms',
        LOG_LEVEL: 'info',
      },
    });
    try {
      const email = 'ada.private@example.com';
      const created = samplePayload('customer.created', {
        customerId: 'cus_log_visible',
        data: { contact: { phone: '+15550100', email, first_name: 'Ada', last_name: 'Lovelace' } },
      });
      const legacy = samplePayload('connection.created', { customerId: 'conn_log_visible' });
      const secret = (legacy.data as { connection_secret: string }).connection_secret;
      for (const payload of [created, legacy]) {
        const res = await fetch(signedRequest(`${server.url}/webhooks/lava`, JSON.stringify(payload)));
        assert.equal(res.status, 200, await res.text());
      }
      await waitFor(() => handlerLines(server.output()).length >= 2, 10_000, 'both handler log lines');

      const output = server.output();
      assert.ok(!output.includes(email), `the email reached the log:\n${output}`);
      assert.ok(!output.includes('+15550100'), 'the phone reached the log');
      assert.ok(!output.includes(secret), `the connection secret reached the log:\n${output}`);
      assert.ok(output.includes('cus_log_visible'), 'the customer id is logged');
      const lines = handlerLines(output);
      const first = lines.find((l) => l.customer_id === 'cus_log_visible');
      assert.ok(first, output);
      assert.equal(first.event, 'customer.created');
      assert.equal(first.key, 'customer.created:cus_log_visible');
      assert.equal(first.attempt, 1);
      assert.equal(first.delivered_as, 'customer.created');
      assert.equal(first.outcome, 'logged');
      assert.equal(first.data, undefined);
      const second = lines.find((l) => l.customer_id === 'conn_log_visible');
      assert.ok(second, output);
      assert.equal(second.event, 'customer.created');
      assert.equal(second.delivered_as, 'connection.created');
    } finally {
      server.kill('SIGTERM');
      await server.exited;
    }
  });
});
