// Next.js App Router route handler for Lava webhooks: POST /api/webhooks/lava.
// Next only accepts known exports in a route file (GET, POST, …, runtime), so the receiver lives in lib/lava.ts.
import { getLava } from '../../../../lib/lava.ts';

export const runtime = 'nodejs';

export async function POST(request: Request): Promise<Response> {
  // The event is recorded before the 200; processing starts right after it. On Vercel, keep the function alive for
  // that work with Next's `after` (Next 15.1+): `import { after } from 'next/server'` and pass
  // `{ waitUntil: (p: Promise<unknown>) => after(p) }` as the third argument. Events left over anyway are picked up
  // by the drain route (drain/route.ts) on a schedule.
  return getLava().fetch(request);
}

export function GET(): Response {
  return Response.json({ error: 'method not allowed' }, { status: 405, headers: { allow: 'POST' } });
}
