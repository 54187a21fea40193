// SQLite driver for Deno and Node >= 22.13: a thin wrapper of `node:sqlite` DatabaseSync in the shape sqlite.ts
// expects. Importing this file fails where `node:sqlite` is missing (Node 20); sqlite.ts turns that into a message.
import { closeSync, fdatasync, fdatasyncSync, fsyncSync, mkdirSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
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
