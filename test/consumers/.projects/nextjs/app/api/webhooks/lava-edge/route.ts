// POST /api/webhooks/lava-edge on the edge runtime, with the memory store: proves the package resolves under Next's
// edge conditions. GET lists the customers the handler saw (for the test; an edge route cannot write files).
import { type LavaWebhooks, createLavaWebhooks, memoryStore } from 'lava-webhooks';
import { after } from 'next/server';

export const runtime = 'edge';

const handled: string[] = [];
let lava: LavaWebhooks | undefined;

function getLava(): LavaWebhooks {
  lava ??= createLavaWebhooks({
    secret: process.env.LAVA_WEBHOOK_SECRET,
    store: memoryStore(),
    path: '/api/webhooks/lava-edge',
    handlers: {
      'customer.created': (event) => {
        handled.push(event.data.customer_id);
      },
    },
    ignore: ['customer.wallet.balance.updated', 'customer.deleted'],
  });
  return lava;
}

export async function POST(request: Request): Promise<Response> {
  return getLava().fetch(request, undefined, { waitUntil: (p: Promise<unknown>) => after(p) });
}

export function GET(): Response {
  return Response.json({ handled });
}
