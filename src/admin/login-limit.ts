// Failed logins to the admin console, counted per client in memory: past the limit a client gets 429 until its window
// ends, without its guess being checked at all.
import type { Context } from 'hono';

export interface LoginLimitOptions {
  /** Failed logins a client may make per window. Default 5. */
  max?: number;
  /** The window, in ms, counted from a client's first failure. Default 15 minutes. */
  windowMs?: number;
  /** Clients remembered at most; past it the oldest entries go first. Default 10,000. */
  maxClients?: number;
}

export interface LoginLimiter {
  /** Seconds the client must wait before trying again, or 0 when it may try now. */
  retryAfter(client: string, now: number): number;
  fail(client: string, now: number): void;
  succeed(client: string): void;
}

export function loginLimiter(options: LoginLimitOptions = {}): LoginLimiter {
  const max = options.max ?? 5;
  const windowMs = options.windowMs ?? 15 * 60_000;
  const maxClients = options.maxClients ?? 10_000;
  const failures = new Map<string, { count: number; until: number }>();

  const current = (client: string, now: number) => {
    const entry = failures.get(client);
    if (entry && entry.until <= now) {
      failures.delete(client);
      return undefined;
    }
    return entry;
  };

  return {
    retryAfter(client, now) {
      const entry = current(client, now);
      return entry && entry.count >= max ? Math.ceil((entry.until - now) / 1000) : 0;
    },
    fail(client, now) {
      const entry = current(client, now);
      if (entry) {
        entry.count++;
        return;
      }
      if (failures.size >= maxClients) {
        for (const [k, v] of failures) if (v.until <= now) failures.delete(k);
        // Still full: forget the oldest (a Map iterates in insertion order), never grow without bound.
        for (const k of failures.keys()) {
          if (failures.size < maxClients) break;
          failures.delete(k);
        }
      }
      failures.set(client, { count: 1, until: now + windowMs });
    },
    succeed(client) {
      failures.delete(client);
    },
  };
}

/**
 * Who a request comes from, for the login limit: the connection's address where the runtime hands it to fetch (Bun's
 * server, `deno serve`'s info, @hono/node-server's incoming socket), else on Cloudflare Workers `cf-connecting-ip` (set
 * by Cloudflare, not the client), else one bucket shared by everyone. X-Forwarded-For is not used: any client can write
 * it, and would get a fresh limit with each value. Behind a proxy every client shares the proxy's address; pass
 * `clientKey` to adminRoutes to read your proxy's header instead.
 */
export function connectionAddress(c: Context): string {
  const env = c.env as
    | {
        requestIP?: (request: Request) => { address?: string } | null;
        remoteAddr?: { hostname?: string };
        incoming?: { socket?: { remoteAddress?: string } };
      }
    | undefined;
  try {
    const address =
      (typeof env?.requestIP === 'function' ? env.requestIP(c.req.raw)?.address : undefined) ??
      env?.remoteAddr?.hostname ??
      env?.incoming?.socket?.remoteAddress;
    if (typeof address === 'string' && address !== '') return address;
  } catch {
    // A runtime whose server object answers differently: fall through to the headers.
  }
  // Only on Cloudflare (whose requests carry `cf`) is cf-connecting-ip the platform's word rather than the client's.
  const onCloudflare = (c.req.raw as { cf?: unknown }).cf !== undefined;
  return (onCloudflare ? c.req.header('cf-connecting-ip') : undefined) ?? 'unknown';
}
