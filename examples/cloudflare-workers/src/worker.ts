// Lava webhooks on Cloudflare Workers: the event is recorded before the 200, and processing runs after it inside
// ctx.waitUntil (Hono hands the Worker's execution context to the receiver). A Cron Trigger drains retries.
// The import is the package's own name (package.json exports), so this file copies into an app unchanged.
import { type HandlerMap, type LavaWebhooks, createLavaWebhooks, memoryStore } from 'lava-webhooks';

/** The bindings this Worker uses (see wrangler.toml). Types kept local so the example needs no extra package. */
export interface Env {
  /** `wrangler secret put LAVA_WEBHOOK_SECRET` */
  LAVA_WEBHOOK_SECRET: string;
  /** Where the handlers below keep customers: application data, not the webhook inbox (see README). */
  CUSTOMERS: { put(key: string, value: string): Promise<void>; delete(key: string): Promise<void> };
}
interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
  passThroughOnException(): void;
}

// Your code goes here: each handler runs after the 200, with retries, kept alive by ctx.waitUntil.
function handlers(env: Env): HandlerMap {
  return {
    'customer.created': async (event) => {
      await env.CUSTOMERS.put(`customer:${event.data.customer_id}`, JSON.stringify(event.data));
    },
    'customer.wallet.balance.updated': async (event) => {
      await env.CUSTOMERS.put(`balance:${event.data.customer_id}`, JSON.stringify(event.data));
    },
    'customer.deleted': async (event) => {
      await env.CUSTOMERS.delete(`customer:${event.data.customer_id}`);
    },
  };
}

// One receiver per isolate, made on the first request (Workers forbid random numbers and timers at global scope).
// The memory store lives as long as the isolate: enough to try the Worker, not for production — the inbox and its
// duplicate detection must outlive isolates, so use the Postgres store over Hyperdrive there (see README).
let lava: LavaWebhooks | undefined;
function receiver(env: Env): LavaWebhooks {
  lava ??= createLavaWebhooks({ secret: env.LAVA_WEBHOOK_SECRET, store: memoryStore(), handlers: handlers(env) });
  return lava;
}

export default {
  fetch(request: Request, env: Env, ctx: ExecutionContext): Response | Promise<Response> {
    return receiver(env).fetch(request, env, ctx);
  },
  // Cron Trigger (wrangler.toml): retries that came due and events whose isolate went away before finishing.
  scheduled(_controller: unknown, env: Env, ctx: ExecutionContext): void {
    ctx.waitUntil(receiver(env).drain({ timeoutMs: 25_000 }));
  },
};
