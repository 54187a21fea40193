// SQLite driver for Bun: a thin wrapper of `bun:sqlite` in the shape sqlite.ts expects.
// Loaded by sqlite.ts only when `globalThis.Bun` exists; holds no SQL of its own.
import { Database, type Statement } from 'bun:sqlite';
import { closeSync, fdatasync, fdatasyncSync, fsyncSync, mkdirSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
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

/**
 * The fsync of a database's WAL file, off the calling thread, for a group commit under durability 'full' (see
 * sqlite.ts): null when the WAL file cannot be opened (then the connection syncs inside each commit instead).
 */
export function walSyncer(path: string): {
  sync(done: (error: Error | null) => void): void;
  syncNow(): void;
  close(): void;
} | null {
  let fd: number;
  try {
    fd = openSync(`${path}-wal`, 'r');
  } catch {
    return null;
  }
  // Once, the directory: SQLite made the WAL file at synchronous=NORMAL, and a power cut must not lose its entry.
  try {
    const dir = openSync(dirname(resolve(path)), 'r');
    try {
      fsyncSync(dir);
    } finally {
      closeSync(dir);
    }
  } catch {
    // Some platforms cannot fsync a directory; the file's own fsyncs still hold its data.
  }
  return {
    // On the runtime's thread pool: the event loop goes on while the disk works.
    // fdatasync, as SQLite's own WAL syncs on Linux: the data and what reading it needs (the size), without the
    // times; about a third cheaper here than fsync.
    sync: (done) => fdatasync(fd, (error) => done(error ?? null)),
    syncNow: () => fdatasyncSync(fd),
    close: () => closeSync(fd),
  };
}
