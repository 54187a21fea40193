// A Cloudflare Worker embedding the receiver: the event is recorded before the 200, and its handler runs after the
// response inside ctx.waitUntil. The memory store lives as long as the isolate (see docs/embedding.md).
import { type LavaWebhooks, createLavaWebhooks, memoryStore } from 'lava-webhooks';

export interface Env {
  LAVA_WEBHOOK_SECRET: string;
  CUSTOMERS: { put(key: string, value: string): Promise<void> };
}
interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
  passThroughOnException(): void;
}

// One receiver per isolate, made on the first request (Workers forbid timers and random numbers at global scope).
let lava: LavaWebhooks | undefined;

function getLava(env: Env): LavaWebhooks {
  lava ??= createLavaWebhooks({
    secret: env.LAVA_WEBHOOK_SECRET,
    store: memoryStore(),
    handlers: {
      // Runs after the 200, kept alive by ctx.waitUntil. The test reads this key to see that it ran, and ran once.
      'customer.created': async (event) => {
        await env.CUSTOMERS.put(`handled:${event.data.customer_id}:${crypto.randomUUID()}`, JSON.stringify(event.data));
      },
    },
    ignore: ['customer.wallet.balance.updated', 'customer.deleted'],
  });
  return lava;
}

export default {
  fetch(request: Request, env: Env, ctx: ExecutionContext): Response | Promise<Response> {
    return getLava(env).fetch(request, env, ctx);
  },
};
