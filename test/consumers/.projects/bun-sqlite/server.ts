// A Bun app embedding the receiver with the SQLite store (bun:sqlite): `bun run server.ts`.
import { appendFileSync } from 'node:fs';
import { createLavaWebhooks } from 'lava-webhooks';
import { sqliteStore } from 'lava-webhooks/stores/sqlite';

const lava = createLavaWebhooks({
  secret: process.env.LAVA_WEBHOOK_SECRET,
  store: sqliteStore({ path: './data/lava.sqlite' }),
  handlers: {
    // Runs after the 200. The test reads this file to see that it ran, and ran once.
    'customer.created': (event, ctx) => {
      appendFileSync(process.env.LAVA_MARKER ?? 'handled.log', `${event.data.customer_id} ${ctx.attempt}\n`);
    },
  },
  ignore: ['customer.wallet.balance.updated', 'customer.deleted'],
});
lava.start();

const server = Bun.serve({ port: Number(process.env.PORT ?? 3000), fetch: lava.fetch });

process.on('SIGTERM', async () => {
  await server.stop();
  await lava.close(10_000);
  process.exit(0);
});
