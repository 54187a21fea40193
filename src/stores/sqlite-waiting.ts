// The waiting copies of signals (see NewEvent.coalesceKey), found through the file's events_waiting index: a partial
// index of the signals never claimed since they were inserted or requeued, keyed by coalesce key.
//
// Schema 6 kept them in a map in memory instead, to save the index's page writes (its keys are hashes, so each signal
// wrote a random page). The benchmark's memory step showed what that costs: the map grew with every waiting signal
// (about 400 bytes each, 800 MB of RSS at a backlog of a million), and after another connection's commit (a CLI
// requeue) it was read again from the file inside the ack path's write transaction, holding the event loop for as long
// as that takes. Schema 7 brings the index back; the file is the only copy again, and memory stays flat.
import type { SqliteConnection, SqliteStatement } from './sqlite-driver.ts';

/**
 * A waiting copy: pending, never claimed since it was inserted or requeued (attempts 0, no lease). `+?1`, not `?1`:
 * coalesce_key is in events_waiting's WHERE, so with a bare parameter SQLite re-prepares the statement at every new
 * binding to check the partial index again (see the note above COLUMNS in sqlite-sql.ts): 6.4 us a lookup inside a
 * transaction against 1.7 (4.6 against 0.4 when no copy waits, the usual answer), on every signal the ack path
 * inserts. The plan is the same search of events_waiting.
 */
const WAITING = `coalesce_key = +?1 AND status = 'pending' AND attempts = 0 AND lease_owner IS NULL`;

interface Copy {
  seq: number;
  key: string;
}

/** How the store finds a signal's waiting copy. The other methods are the store's hooks into its own writes. */
export interface WaitingSignals {
  /** Before the lookup is used in a write transaction. */
  check(): void;
  /** The oldest waiting copy of `coalesceKey`, or undefined. */
  oldest(coalesceKey: string): Copy | undefined;
  /** `seq` waits now (inserted, or requeued). */
  add(coalesceKey: string, seq: number, key: string): void;
  /** `seq` no longer waits (claimed). */
  remove(coalesceKey: string, seq: number): void;
  /** A transaction rolled back. */
  forget(): void;
  /** A write transaction ended. */
  ended(): void;
}

/** The lookup through events_waiting: the index is kept by SQLite with every write, so the hooks have nothing to do. */
export function waitingSignals(db: SqliteConnection): WaitingSignals {
  const oldest: SqliteStatement = db.prepare(`SELECT seq, key FROM events WHERE ${WAITING} ORDER BY seq LIMIT 1`);
  const nothing = () => {};
  return {
    check: nothing,
    oldest(coalesceKey) {
      const row = oldest.get(coalesceKey);
      return row === undefined ? undefined : { seq: row.seq as number, key: row.key as string };
    },
    add: nothing,
    remove: nothing,
    forget: nothing,
    ended: nothing,
  };
}
