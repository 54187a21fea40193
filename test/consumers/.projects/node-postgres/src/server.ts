// A Node 20 app embedding the receiver with the Postgres store and postgres.js, which the app installs itself.
import { appendFileSync } from 'node:fs';
import { serve } from '@hono/node-server';
import { createLavaWebhooks } from 'lava-webhooks';
import { postgresStore } from 'lava-webhooks/stores/postgres';
import postgres from 'postgres';

const lava = createLavaWebhooks({
  secret: process.env.LAVA_WEBHOOK_SECRET,
  store: postgresStore({ sql: postgres(process.env.DATABASE_URL!), schema: process.env.PG_SCHEMA, closeClient: true }),
  handlers: {
    // Runs after the 200. The test reads this file to see that it ran, and ran once.
    'customer.created': (event, ctx) => {
      appendFileSync(process.env.LAVA_MARKER ?? 'handled.log', `${event.data.customer_id} ${ctx.attempt}\n`);
    },
  },
  ignore: ['customer.wallet.balance.updated', 'customer.deleted'],
});
lava.start();

const server = serve({ fetch: lava.fetch, port: Number(process.env.PORT ?? 3000) });

process.on('SIGTERM', () => {
  server.close();
  lava.close(10_000).then(() => process.exit(0));
});
