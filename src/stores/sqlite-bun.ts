// SQLite driver for Bun: a thin wrapper of `bun:sqlite` in the shape sqlite-store.ts expects; holds no SQL of its own.
// Loaded by sqlite.ts only when `globalThis.Bun` exists, and by sqlite-entry-bun.ts (the npm `bun` condition).
import { Database, type Statement } from 'bun:sqlite';
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import type { SqliteConnection, SqliteStatement, SqliteValue } from './sqlite-driver.ts';

export const DRIVER = 'bun:sqlite';

export function openDatabase(path: string): SqliteConnection {
  if (path !== ':memory:' && path !== '' && !path.startsWith('file:')) mkdirSync(dirname(path), { recursive: true });
  const db = new Database(path, { create: true, readwrite: true });
  // Finalised before close, so the file handle is released at once (tests remove and reopen files).
  const statements: Statement[] = [];
  return {
    exec(sql: string) {
      db.exec(sql);
    },
    prepare(sql: string): SqliteStatement {
      const stmt = db.prepare(sql);
      statements.push(stmt);
      return {
        run: (...params: SqliteValue[]) => stmt.run(...params).changes,
        get: (...params: SqliteValue[]) => (stmt.get(...params) as Record<string, SqliteValue> | null) ?? undefined,
        all: (...params: SqliteValue[]) => stmt.all(...params) as Record<string, SqliteValue>[],
      };
    },
    close() {
      for (const stmt of statements) stmt.finalize();
      statements.length = 0;
      db.close();
    },
  };
}

export { walSyncer } from './sqlite-wal-sync.ts';
