// Deno's cron: every minute, drain the inbox, so events left by an evicted isolate (Deno Deploy has no waitUntil
// and evicts isolates at any time) are reclaimed once their lease expires, even when no delivery arrives.
import type { LavaWebhooks } from '../receiver.ts';

/** The slice of `Deno.cron` used here (Deno's own types are not loaded by tsc). */
export type CronFn = (
  name: string,
  schedule: string,
  options: { backoffSchedule?: number[] },
  handler: () => Promise<void>,
) => Promise<void> | void;

export const DRAIN_CRON_NAME = 'lava-webhooks-drain';
export const DRAIN_CRON_SCHEDULE = '* * * * *';

/** `Deno.cron` when this runtime has it (Deno Deploy; locally only with --unstable-cron or "cron" in deno.json). */
export function denoCron(): CronFn | null {
  const deno = (globalThis as { Deno?: { cron?: unknown } }).Deno;
  return typeof deno?.cron === 'function' ? (deno.cron as CronFn).bind(deno) : null;
}

/**
 * Registers the drain cron; returns false (and does nothing) where there is no cron. Call it at module top level,
 * before serving: Deno Deploy discovers crons by evaluating the entry module's top level.
 * `receiver` may be a promise, so the cron can be declared before the store is open.
 */
export function scheduleDrainCron(
  receiver: () => Promise<Pick<LavaWebhooks, 'drain' | 'logger'>> | Pick<LavaWebhooks, 'drain' | 'logger'>,
  cron: CronFn | null = denoCron(),
): boolean {
  if (!cron) return false;
  void cron(DRAIN_CRON_NAME, DRAIN_CRON_SCHEDULE, { backoffSchedule: [5_000, 15_000] }, async () => {
    const lava = await receiver();
    // Stop starting new work before the next tick, so cron runs never overlap (Deno skips an overlapping run).
    const { processed } = await lava.drain({ timeoutMs: 50_000 });
    if (processed > 0) lava.logger.info('cron drain processed events', { processed });
  });
  return true;
}
