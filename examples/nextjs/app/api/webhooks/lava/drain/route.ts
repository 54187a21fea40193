// GET /api/webhooks/lava/drain: runs retries and events whose instance went away. Call it from a scheduler (a
// Vercel Cron job sends `Authorization: Bearer $CRON_SECRET`); serverless has no background loop of its own.
import { getLava } from '../../../../../lib/lava.ts';

export const runtime = 'nodejs';

export async function GET(request: Request): Promise<Response> {
  const secret = process.env.CRON_SECRET;
  if (!secret || request.headers.get('authorization') !== `Bearer ${secret}`) {
    return Response.json({ error: 'unauthorized' }, { status: 401 });
  }
  const { processed } = await getLava().drain({ timeoutMs: 20_000 });
  return Response.json({ processed });
}
