// The runtime's own SQLite driver (bun:sqlite on Bun, node:sqlite elsewhere), for tests that open a second
// connection beside a store: holding the write lock, or reading and rewriting the file as another build would.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { SqliteConnection } from '../../src/stores/sqlite-driver.ts';

export async function sqliteDriver(): Promise<{ openDatabase(path: string): SqliteConnection }> {
  return (globalThis as { Bun?: unknown }).Bun !== undefined
    ? await import('../../src/stores/sqlite-bun.ts')
    : await import('../../src/stores/sqlite-node.ts');
}

/**
 * Database paths for one test file: each in a folder of its own (the store creates it) under one temporary directory,
 * made when a path is first asked for; `remove()` deletes it all.
 */
export function tempDatabases(prefix: string): { path(): string; remove(): void } {
  let dir = '';
  let n = 0;
  return {
    path() {
      if (!dir) dir = mkdtempSync(join(tmpdir(), prefix));
      return join(dir, `t${++n}`, 'events.db');
    },
    remove() {
      if (dir) rmSync(dir, { recursive: true, force: true });
      dir = '';
    },
  };
}
