// The waiting copies of signals (see NewEvent.coalesceKey), kept in memory by each SQLite store instead of in an index
// of the file (schema 6 dropped events_waiting). That index was keyed by the coalesce key, a hash of the body: every
// signal wrote an entry into a random page of it when it was inserted and removed it when it was first claimed, two
// page writes per event once the open events outgrew a few pages. The file stays the truth: the map is derived from
// it, and read again whenever it may be wrong.
// - It is built from the file when first needed, and again after a transaction of this connection rolled back.
// - Another connection's commit (the CLI requeuing events while the server runs, a second instance) changes
//   `PRAGMA data_version`, which is read once per write transaction before the map is used: then it is read again
//   from the file. While the transaction is open, no other connection can commit.
// - This store's own writes keep it: an insert adds the signal it inserted, a claim removes what it claimed, a
//   requeue adds what became waiting again. Nothing else makes a signal waiting or ends its wait (an outcome, a
//   purge and a tombstone only touch events already claimed or finished).
import type { SqliteConnection, SqliteStatement } from './sqlite-driver.ts';

/** A waiting copy: pending, never claimed since it was inserted or requeued (attempts 0, no lease). */
const WAITING = `coalesce_key IS NOT NULL AND status = 'pending' AND attempts = 0 AND lease_owner IS NULL`;

interface Copy {
  seq: number;
  key: string;
}

export interface WaitingSignals {
  /** Before the map is used in a write transaction: read again if another connection committed since. */
  check(): void;
  /** The oldest waiting copy of `coalesceKey`, or undefined. */
  oldest(coalesceKey: string): Copy | undefined;
  /** `seq` waits now (inserted, or requeued). */
  add(coalesceKey: string, seq: number, key: string): void;
  /** `seq` no longer waits (claimed). */
  remove(coalesceKey: string, seq: number): void;
  /** A transaction rolled back (or the map may be wrong for another reason): read it again before the next use. */
  forget(): void;
  /** A write transaction ended: the next one reads data_version again. */
  ended(): void;
}

export function waitingSignals(db: SqliteConnection): WaitingSignals {
  const dataVersion: SqliteStatement = db.prepare('PRAGMA data_version');
  // The open events are found through events_open (a partial index of open events), not a scan of every event kept.
  const load: SqliteStatement = db.prepare(
    `SELECT seq, key, coalesce_key FROM events
     WHERE seq IN (SELECT seq FROM events WHERE status IN ('pending', 'retrying') AND status = 'pending') AND ${WAITING}
     ORDER BY seq`,
  );
  const byKey = new Map<string, Copy[]>();
  let valid = false;
  let version: unknown = null;
  let checked = false;

  const add = (coalesceKey: string, seq: number, key: string) => {
    const copies = byKey.get(coalesceKey);
    if (copies === undefined) {
      byKey.set(coalesceKey, [{ seq, key }]);
      return;
    }
    if (copies.some((c) => c.seq === seq)) return;
    // Ascending by seq: an insert goes last; a requeued older copy goes where it belongs.
    let i = copies.length;
    while (i > 0 && (copies[i - 1] as Copy).seq > seq) i--;
    copies.splice(i, 0, { seq, key });
  };

  return {
    check() {
      if (checked) return;
      checked = true;
      const now = dataVersion.get()?.data_version;
      if (valid && now === version) return;
      version = now;
      byKey.clear();
      for (const row of load.all()) add(row.coalesce_key as string, row.seq as number, row.key as string);
      valid = true;
    },
    oldest(coalesceKey) {
      return byKey.get(coalesceKey)?.[0];
    },
    add(coalesceKey, seq, key) {
      if (valid) add(coalesceKey, seq, key);
    },
    remove(coalesceKey, seq) {
      if (!valid) return;
      const copies = byKey.get(coalesceKey);
      if (copies === undefined) return;
      const i = copies.findIndex((c) => c.seq === seq);
      if (i >= 0) copies.splice(i, 1);
      if (copies.length === 0) byKey.delete(coalesceKey);
    },
    forget() {
      valid = false;
      checked = false;
      byKey.clear();
    },
    ended() {
      checked = false;
    },
  };
}
