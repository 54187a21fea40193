// The fsync of a SQLite database's WAL file off the calling thread, shared by both drivers (sqlite-bun.ts and
// sqlite-node.ts): node:fs is there on Bun, Deno and Node alike.
import { closeSync, fdatasync, fdatasyncSync, fsyncSync, openSync } from 'node:fs';
import { dirname, resolve } from 'node:path';

/**
 * The fsync of a database's WAL file, off the calling thread, for a group commit under durability 'full' (see
 * sqlite-store.ts): null when the WAL file cannot be opened (then the connection syncs inside each commit instead).
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
