// Handler maps are checked where they are written: a misspelt or legacy key stops start-up with the right name
// suggested, an event nobody handles is never marked done unprocessed, and a handlers module that does not parse is
// reported with its file and line, on Bun and on Deno.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ConfigError, type HandlerMap, createLavaWebhooks, jsonLogger, memoryStore, silentLogger } from '../src/mod.ts';
import { closestEventName, handlerProblems } from '../src/processing/handler-names.ts';
import { samplePayload } from '../src/samples.ts';
import { SECRET, signedRequest, sleep, waitFor } from './helpers/lava.ts';
import { ROOT, type ServerProcess, binAvailable, startServer } from './helpers/server-process.ts';

const dirs: string[] = [];
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), 'lava-handlers-'));
  dirs.push(d);
  return d;
}
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const noop = () => {};
const all = { 'customer.created': noop, 'customer.wallet.balance.updated': noop, 'customer.deleted': noop };
const MOD = join(ROOT, 'src/mod.ts');

/** How the server exited, or 'still running' (then killed) when it did not refuse to start within 15 s. */
async function exitOf(server: ServerProcess): Promise<number | string> {
  try {
    return await Promise.race([server.exited, sleep(15_000).then(() => 'still running')]);
  } finally {
    server.kill('SIGKILL');
  }
}

/** A handlers module file in a temp dir, importing the package's types from this checkout. */
function moduleFile(source: string): string {
  const file = join(tempDir(), 'handlers.ts');
  writeFileSync(file, source.replaceAll('$MOD', MOD));
  return file;
}

describe('createLavaWebhooks() handler names', () => {
  test('an unknown handler key throws a ConfigError that suggests the closest event name', () => {
    const handlers = { ...all, 'customer.create': noop } as unknown as HandlerMap;
    assert.throws(
      () => createLavaWebhooks({ secret: SECRET, store: memoryStore(), logger: silentLogger, handlers }),
      (e: Error) =>
        e instanceof ConfigError &&
        /"customer\.create" is not a known event; did you mean "customer\.created"\?/.test(e.message),
    );
  });

  test('a legacy name as a handler key is refused with its current name', () => {
    const handlers = { 'connection.created': noop } as unknown as HandlerMap;
    assert.throws(
      () => createLavaWebhooks({ secret: SECRET, store: memoryStore(), logger: silentLogger, handlers }),
      /"connection\.created" is Lava's legacy name of "customer\.created"; use "customer\.created"/,
    );
  });

  test('ignore is checked the same way, and an event both handled and ignored is refused', () => {
    const make = (ignore: string[]) => () =>
      createLavaWebhooks({
        secret: SECRET,
        store: memoryStore(),
        logger: silentLogger,
        handlers: all,
        ignore: ignore as never,
      });
    assert.throws(
      make(['customer.delted']),
      /ignore: "customer\.delted" is not a known event; did you mean "customer\.deleted"\?/,
    );
    assert.throws(make(['customer.deleted']), /"customer\.deleted" is both handled and ignored/);
    assert.deepEqual(handlerProblems({ 'checkout.completed': noop }, []), [
      'handlers: "checkout.completed" is not a known event; the known events are customer.created, customer.wallet.balance.updated, customer.deleted',
    ]);
    assert.equal(closestEventName('customer.balance.updated'), 'customer.wallet.balance.updated');
  });

  test('a known event without a handler becomes a dead letter saying so; one listed in ignore is done', async () => {
    const lines: string[] = [];
    const lava = createLavaWebhooks({
      secret: SECRET,
      store: memoryStore(),
      logger: jsonLogger({ level: 'warn', write: (l) => lines.push(l) }),
      handlers: { 'customer.created': noop },
      ignore: ['customer.wallet.balance.updated'],
    });
    // Construction says which events nobody decided about.
    assert.match(
      lines.join('\n'),
      /known events without a handler become dead letters.*"events":\["customer\.deleted"\]/,
    );
    const deleted = samplePayload('customer.deleted', { customerId: 'cus_unhandled' });
    const balance = samplePayload('customer.wallet.balance.updated', { customerId: 'cus_ignored' });
    for (const p of [deleted, balance]) {
      assert.equal((await lava.fetch(signedRequest('http://x/webhooks/lava', JSON.stringify(p)))).status, 200);
    }
    await lava.drain();
    const dead = await lava.store.get('customer.deleted:cus_unhandled');
    assert.equal(dead?.status, 'dead');
    assert.match(dead?.lastError ?? '', /no handler for customer\.deleted: add one to handlers, or list it in ignore/);
    const counts = await lava.store.counts();
    assert.equal(counts.done, 1, 'the ignored balance update is done');
    assert.equal(counts.dead, 1);
    await lava.close();
  });
});

const runtimes = (['bun', 'deno'] as const).filter((r) => binAvailable(r));
if (runtimes.length < 2) console.log('[skip] some server runtimes are missing from node_modules/.bin (run npm ci)');

for (const runtime of runtimes) {
  describe(`server start-up with a handlers module (${runtime})`, () => {
    const env = (file: string) => ({
      LAVA_WEBHOOK_SECRET: SECRET,
      LAVA_WEBHOOK_STORE: 'memory',
      LAVA_WEBHOOK_HANDLERS: file,
    });

    test('a module with a syntax error is reported with its file, line and column', async () => {
      const file = moduleFile(
        `import type { HandlerMap } from '$MOD';\nexport const handlers: HandlerMap = {\n  'customer.created': () => {},\n`,
      );
      const server = await startServer({ runtime, env: env(file), noWait: true });
      assert.equal(await exitOf(server), 1, server.output());
      const out = server.output();
      assert.match(
        out,
        new RegExp(
          `refusing to start: LAVA_WEBHOOK_HANDLERS=${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: syntax error at ${file.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}:3:\\d+`,
        ),
        out,
      );
      assert.match(out, /3 \| {3}'customer\.created': \(\) => \{\},/, 'the line is quoted');
    });

    test('a misspelt key stops start-up with the closest name; a forgotten event asks for a handler or ignore', async () => {
      const typo = moduleFile(
        `export const handlers = { 'customer.create': () => {}, 'customer.wallet.balance.updated': () => {}, 'customer.deleted': () => {} };\n`,
      );
      let server = await startServer({ runtime, env: env(typo), noWait: true });
      assert.equal(await exitOf(server), 1, server.output());
      assert.match(server.output(), /"customer\.create" is not a known event; did you mean "customer\.created"\?/);

      const partial = moduleFile(
        `export const handlers = { 'customer.created': () => {}, 'customer.wallet.balance.updated': () => {} };\n`,
      );
      server = await startServer({ runtime, env: env(partial), noWait: true });
      assert.equal(await exitOf(server), 1, server.output());
      assert.match(
        server.output(),
        /no handler for customer\.deleted: add one, or list it in the module's ignore export/,
      );
      // The message is printed once, and says nothing about other variables.
      assert.equal(server.output().split('no handler for').length, 2, server.output());
      assert.doesNotMatch(server.output(), /LAVA_WEBHOOK_SECRET/);
    });

    test("an event in the module's ignore export is recorded as done without running anything", async () => {
      const dir = tempDir();
      const file = moduleFile(
        [
          `import { appendFileSync } from 'node:fs';`,
          `const ran = (e: { event: string }) => appendFileSync(${JSON.stringify(join(dir, 'runs'))}, e.event + '\\n');`,
          `export const handlers = { 'customer.created': ran, 'customer.wallet.balance.updated': ran };`,
          `export const ignore = ['customer.deleted'];`,
        ].join('\n'),
      );
      const server = await startServer({ runtime, env: { ...env(file), LAVA_WEBHOOK_POLL: '100ms' } });
      try {
        for (const event of ['customer.deleted', 'customer.created']) {
          const body = JSON.stringify(samplePayload(event, { customerId: `cus_ignore_${runtime}_${event}` }));
          assert.equal((await fetch(signedRequest(`${server.url}/webhooks/lava`, body))).status, 200);
        }
        const metrics = await waitFor(
          async () => {
            const text = await (await fetch(`${server.url}/metrics`)).text();
            return /^lava_webhooks_pending 0$/m.test(text) ? text : null;
          },
          10_000,
          'both events processed',
        );
        assert.match(metrics, /^lava_webhooks_dead_letters 0$/m);
        const { readFileSync } = await import('node:fs');
        assert.equal(readFileSync(join(dir, 'runs'), 'utf8'), 'customer.created\n', 'only the handled event ran');
      } finally {
        server.kill('SIGKILL');
        await server.exited;
      }
    });
  });
}
