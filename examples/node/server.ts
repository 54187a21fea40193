// Lava webhooks on Node 20+ with @hono/node-server: `LAVA_WEBHOOK_SECRET=… npx tsx examples/node/server.ts`.
// The memory store is for trying it out (lost on restart); set DATABASE_URL for a durable Postgres store.
import { serve } from '@hono/node-server';
import postgres from 'postgres';
import { type HandlerMap, type Store, createLavaWebhooks, memoryStore } from 'lava-webhooks';
import { postgresStore } from 'lava-webhooks/stores/postgres';

const secret = process.env.LAVA_WEBHOOK_SECRET;
if (!secret) {
  console.error('Set LAVA_WEBHOOK_SECRET to the webhook_secret Lava showed when you created the endpoint');
  process.exit(1);
}

const databaseUrl = process.env.DATABASE_URL;
const store: Store = databaseUrl
  ? postgresStore({
      sql: postgres(databaseUrl, { max: 5 }),
      schema: process.env.PG_SCHEMA,
      closeClient: true,
    })
  : memoryStore();

// Your code goes here: each handler runs after the 200, with retries; an event is never lost once acknowledged.
const handlers: HandlerMap = {
  'customer.created': (event, ctx) => {
    ctx.logger.info('customer created', { customer_id: event.data.customer_id, attempt: ctx.attempt });
  },
  'customer.wallet.balance.updated': (event, ctx) => {
    ctx.logger.info('balance updated', { customer_id: event.data.customer_id });
  },
  'customer.deleted': (event, ctx) => {
    ctx.logger.info('customer deleted', { customer_id: event.data.customer_id });
  },
};

const lava = createLavaWebhooks({ secret, store, handlers });
// A long-running server: the loop runs retries and takes over events whose lease expired after a crash.
lava.start();

const server = serve(
  { fetch: lava.fetch, port: Number(process.env.PORT ?? 3000), hostname: process.env.HOST ?? '0.0.0.0' },
  (info) => lava.logger.info('listening', { port: info.port, store: store.name }),
);

for (const signal of ['SIGTERM', 'SIGINT'] as const) {
  process.once(signal, () => {
    lava.logger.info('shutting down', { signal });
    // Stop accepting connections, let running handlers finish (up to 10 s), then close the store.
    server.close();
    lava.close(10_000).then(
      () => process.exit(0),
      () => process.exit(1),
    );
  });
}
