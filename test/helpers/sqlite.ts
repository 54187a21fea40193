// The runtime's own SQLite driver (bun:sqlite on Bun, node:sqlite elsewhere), for tests that open a second
// connection beside a store: holding the write lock, or reading and rewriting the file as another build would.
import type { SqliteConnection } from '../../src/stores/sqlite-driver.ts';

export async function sqliteDriver(): Promise<{ openDatabase(path: string): SqliteConnection }> {
  return (globalThis as { Bun?: unknown }).Bun !== undefined
    ? await import('../../src/stores/sqlite-bun.ts')
    : await import('../../src/stores/sqlite-node.ts');
}
