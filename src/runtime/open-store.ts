// Picks and opens the store the environment asks for; shared by the server and the CLI.
// Store modules are imported lazily, so a runtime never loads a driver it does not use.
import type { ServerConfig } from '../config.ts';
import type { Store } from '../stores/store.ts';

export type StoreKind = 'sqlite' | 'memory' | 'kv' | 'postgres';

export const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== 'undefined';
export const isBun = typeof (globalThis as { Bun?: unknown }).Bun !== 'undefined';

type StoreSettings = Pick<
  ServerConfig,
  'LAVA_WEBHOOK_STORE' | 'LAVA_WEBHOOK_DB' | 'LAVA_WEBHOOK_DURABILITY' | 'LAVA_WEBHOOK_KV' | 'DATABASE_URL'
> &
  Partial<Pick<ServerConfig, 'LAVA_WEBHOOK_PG_SCHEMA'>>;

/** Explicit choice first; then Postgres when DATABASE_URL is set; Deno KV on Deno; SQLite elsewhere. */
export function chooseStore(config: StoreSettings): StoreKind {
  if (config.LAVA_WEBHOOK_STORE) return config.LAVA_WEBHOOK_STORE;
  if (config.DATABASE_URL) return 'postgres';
  return isDeno ? 'kv' : 'sqlite';
}

export interface OpenedStore {
  store: Store;
  kind: StoreKind;
  /** Where it points, for the start-up log line (never a password). */
  where: string;
}

function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable DATABASE_URL)';
  }
}

export async function openStore(config: StoreSettings): Promise<OpenedStore> {
  const kind = chooseStore(config);
  switch (kind) {
    case 'memory': {
      const { memoryStore } = await import('../stores/memory.ts');
      return { store: memoryStore(), kind, where: 'memory (lost on exit)' };
    }
    case 'sqlite': {
      const { sqliteStore } = await import('../stores/sqlite.ts');
      // Group commit: every write of a turn (deliveries, the worker's claims and outcomes, the CLI's requeues and
      // purges) shares one commit, and one fsync off the event loop under durability 'full' (the default); a lock
      // held by another process is waited for without blocking the event loop.
      const store = sqliteStore({
        path: config.LAVA_WEBHOOK_DB,
        durability: config.LAVA_WEBHOOK_DURABILITY,
        groupCommit: true,
      });
      return { store, kind, where: `${config.LAVA_WEBHOOK_DB} (durability ${config.LAVA_WEBHOOK_DURABILITY})` };
    }
    case 'kv': {
      const { denoKvStore } = await import('../stores/deno-kv/mod.ts');
      const store = denoKvStore({ path: config.LAVA_WEBHOOK_KV });
      await store.ping();
      return { store, kind, where: config.LAVA_WEBHOOK_KV ?? 'default Deno KV database' };
    }
    case 'postgres': {
      const url = config.DATABASE_URL;
      if (!url) throw new Error('LAVA_WEBHOOK_STORE=postgres needs DATABASE_URL');
      const { postgresStore } = await import('../stores/postgres.ts');
      const { sqlClient } = await import('./sql-client.ts');
      const schema = config.LAVA_WEBHOOK_PG_SCHEMA ?? 'lava_webhooks';
      const store = postgresStore({ sql: await sqlClient(url), schema, closeClient: true });
      try {
        await store.ping();
      } catch (error) {
        // The client's pool would keep retrying (and the process alive): close it before saying why.
        await Promise.race([Promise.resolve(store.close()).catch(() => {}), new Promise((r) => setTimeout(r, 2000))]);
        // Only on this path: it loads node:dns, a few ms of every start that does not need it.
        const { pgUnreachable } = await import('./pg-reach.ts');
        const message = await pgUnreachable(url, error);
        if (message === null) throw error;
        throw new Error(message, { cause: error });
      }
      return { store, kind, where: `${redactUrl(url)} (schema ${schema})` };
    }
  }
}
