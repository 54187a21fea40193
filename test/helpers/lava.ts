// Test helpers: signed requests made the way Lava makes them.
import { createHmac } from 'node:crypto';

export const SECRET = 'whsec_test_secret_for_the_suite';

/** Lava's own documented way: Node's createHmac over the raw body, lowercase hex. */
export function lavaSign(secret: string, body: string | Uint8Array): string {
  return createHmac('sha256', secret).update(body).digest('hex');
}

export function signedRequest(
  url: string,
  body: string | Uint8Array,
  { secret = SECRET, headers = {} as Record<string, string>, method = 'POST' } = {},
): Request {
  return new Request(url, {
    method,
    headers: { 'content-type': 'application/json', 'x-webhook-signature': lavaSign(secret, body), ...headers },
    body: body as BodyInit,
  });
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until it returns truthy or `timeoutMs` passes. */
export async function waitFor<T>(
  check: () => T | Promise<T>,
  timeoutMs = 5000,
  what = 'condition',
): Promise<NonNullable<T>> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v as NonNullable<T>;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/**
 * A gate handlers can wait at: `hold()` closes it and answers the function that opens it again; a handler returns
 * `wait()`, which is undefined while the gate is open (the handler then finishes at once).
 */
export function handlerGate(): { wait(): Promise<void> | undefined; hold(): () => void } {
  let gate: Promise<void> | null = null;
  return {
    wait: () => gate ?? undefined,
    hold() {
      let release = () => {};
      gate = new Promise<void>((r) => {
        release = () => {
          gate = null;
          r();
        };
      });
      return release;
    },
  };
}
