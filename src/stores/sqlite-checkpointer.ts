// Runs in a Worker thread beside a SQLite store: checkpoints its WAL (copies committed pages back into the
// database file, with the fsyncs that takes) so the thread that answers deliveries never stalls on it.
// PASSIVE checkpoints never block the writer; a checkpoint that could not finish simply runs again next tick.
import type { SqliteConnection } from './sqlite.ts';

interface Start {
  type: 'start';
  path: string;
  everyMs: number;
}

const scope = globalThis as unknown as {
  onmessage: ((e: { data: Start | { type: 'stop' } }) => void) | null;
  postMessage(message: unknown): void;
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
  scope.postMessage({ type: 'stopped' });
  scope.close();
}

scope.onmessage = async (e) => {
  const msg = e.data;
  if (msg.type === 'stop') return stop();
  try {
    const driver = (globalThis as { Bun?: unknown }).Bun !== undefined ? await import('./sqlite-bun.ts') : await import('./sqlite-node.ts');
    db = driver.openDatabase(msg.path);
    const checkpoint = db.prepare('PRAGMA wal_checkpoint(PASSIVE)');
    timer = setInterval(() => {
      try {
        checkpoint.get();
      } catch (error) {
        // Busy or I/O trouble: the writer's own autocheckpoint is the backstop; try again next tick.
        scope.postMessage({ type: 'error', message: error instanceof Error ? error.message : String(error) });
      }
    }, msg.everyMs);
    scope.postMessage({ type: 'started' });
  } catch (error) {
    scope.postMessage({ type: 'error', message: error instanceof Error ? error.message : String(error) });
    stop();
  }
};
