// POST /api/webhooks/lava on the Node.js runtime. The event is recorded before the 200; its handler runs after the
// response, kept alive by Next's after().
import { after } from 'next/server';
import { getLava } from '../../../../lib/lava';

export const runtime = 'nodejs';

export async function POST(request: Request): Promise<Response> {
  return getLava().fetch(request, undefined, { waitUntil: (p: Promise<unknown>) => after(p) });
}
