// Runs in a Worker thread beside a SQLite store: checkpoints its WAL (copies committed pages back into the
// database file, with the fsyncs that takes) so the thread that answers deliveries never stalls on it.
// PASSIVE checkpoints never block the writer; a checkpoint that could not finish simply runs again next tick.
import type { SqliteConnection } from './sqlite-driver.ts';

interface Start {
  type: 'start';
  path: string;
  everyMs: number;
}

const scope = globalThis as unknown as {
  onmessage: ((e: { data: Start | { type: 'stop' } }) => void) | null;
  close(): void;
};

let db: SqliteConnection | undefined;
let timer: ReturnType<typeof setInterval> | undefined;

function stop() {
  clearInterval(timer);
  try {
    db?.close();
  } catch {
    // The process is going away or the file is gone; nothing to keep.
  }
  db = undefined;
  scope.close();
}

// Started only on Bun (see startCheckpointer in sqlite-store.ts), so it opens the file with bun:sqlite. Nothing listens
// for its news: a checkpoint that fails (busy, I/O) is simply tried again next tick, and the writer's own
// autocheckpoint is the backstop if this thread never manages one.
scope.onmessage = async (e) => {
  const msg = e.data;
  if (msg.type === 'stop') return stop();
  try {
    const { openDatabase } = await import('./sqlite-bun.ts');
    db = openDatabase(msg.path);
    const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
    timer = setInterval(() => {
      try {
        checkpoint.get();
      } catch {
        // Busy or I/O trouble: try again next tick.
      }
    }, msg.everyMs);
  } catch {
    stop();
  }
};
