// SQLite driver for Deno and Node >= 22.13: a thin wrapper of `node:sqlite` DatabaseSync in the shape
// sqlite-store.ts expects. Importing this file fails where `node:sqlite` is missing (Node 20); the entry points
// that import it (sqlite.ts, sqlite-entry-node.ts) turn that into a message.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { SqliteConnection, SqliteStatement, SqliteValue } from './sqlite-driver.ts';

export const DRIVER = 'node:sqlite';

export function openDatabase(path: string): SqliteConnection {
  if (path !== ':memory:' && path !== '' && !path.startsWith('file:')) mkdirSync(dirname(path), { recursive: true });
  const db = new DatabaseSync(path);
  return {
    exec(sql: string) {
      db.exec(sql);
    },
    prepare(sql: string): SqliteStatement {
      const stmt = db.prepare(sql);
      return {
        run: (...params: SqliteValue[]) => Number(stmt.run(...params).changes),
        get: (...params: SqliteValue[]) => stmt.get(...params) as Record<string, SqliteValue> | undefined,
        all: (...params: SqliteValue[]) => stmt.all(...params) as Record<string, SqliteValue>[],
      };
    },
    close() {
      db.close();
    },
  };
}

export { walSyncer } from './sqlite-wal-sync.ts';
