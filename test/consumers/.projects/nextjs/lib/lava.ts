// The receiver behind app/api/webhooks/lava/route.ts (a route file may only export route names). Made on first use,
// not at import, so `next build` needs no secret; then shared by every request this server handles.
import { appendFileSync } from 'node:fs';
import { type LavaWebhooks, createLavaWebhooks, memoryStore } from 'lava-webhooks';

let lava: LavaWebhooks | undefined;

export function getLava(): LavaWebhooks {
  lava ??= createLavaWebhooks({
    secret: process.env.LAVA_WEBHOOK_SECRET,
    store: memoryStore(),
    path: '/api/webhooks/lava',
    handlers: {
      // Runs after the 200. The test reads this file to see that it ran, and ran once.
      'customer.created': (event, ctx) => {
        appendFileSync(process.env.LAVA_MARKER ?? 'handled.log', `${event.data.customer_id} ${ctx.attempt}\n`);
      },
    },
    ignore: ['customer.wallet.balance.updated', 'customer.deleted'],
  });
  return lava;
}
