// The receiver behind the Next.js route handlers: made on first use (not at import, so `next build` needs no
// secret), then shared by every request this server instance handles.
import postgres from 'postgres';
import {
  type HandlerMap,
  type LavaWebhooks,
  type LogLevel,
  type Store,
  createLavaWebhooks,
  memoryStore,
} from 'lava-webhooks';
import { postgresStore } from 'lava-webhooks/stores/postgres';

// Your code goes here: each handler runs after the 200, with retries.
const handlers: HandlerMap = {
  'customer.created': (event, ctx) => {
    ctx.logger.info('customer created', { customer_id: event.data.customer_id });
  },
  'customer.wallet.balance.updated': (event, ctx) => {
    ctx.logger.info('balance updated', { customer_id: event.data.customer_id });
  },
  'customer.deleted': (event, ctx) => {
    ctx.logger.info('customer deleted', { customer_id: event.data.customer_id });
  },
};

let lava: LavaWebhooks | undefined;

export function getLava(): LavaWebhooks {
  if (lava) return lava;
  const url = process.env.DATABASE_URL;
  // Serverless instances come and go: only Postgres keeps events (and duplicate detection) across them. The memory
  // store is for `next dev`.
  const store: Store = url ? postgresStore({ sql: postgres(url, { max: 3 }), closeClient: true }) : memoryStore();
  lava = createLavaWebhooks({
    secret: process.env.LAVA_WEBHOOK_SECRET,
    store,
    handlers,
    // The route's own URL path: the app matches on it.
    path: '/api/webhooks/lava',
    logLevel: (process.env.LOG_LEVEL as LogLevel | undefined) ?? 'info',
  });
  return lava;
}
