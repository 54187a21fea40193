// The SQLite driver seam: what sqlite-bun.ts and sqlite-node.ts provide and sqlite-store.ts uses. Internal: kept out
// of the `./stores/sqlite` entry point, so the runtime's driver can change without changing the public API.

export type SqliteValue = string | number | null | Uint8Array;

export interface SqliteStatement {
  /** Runs the statement; returns the number of rows changed. */
  run(...params: SqliteValue[]): number;
  get(...params: SqliteValue[]): Record<string, SqliteValue> | undefined;
  all(...params: SqliteValue[]): Record<string, SqliteValue>[];
}

export interface SqliteConnection {
  /** Runs one or more statements that bind nothing and return nothing. */
  exec(sql: string): void;
  prepare(sql: string): SqliteStatement;
  close(): void;
}

/** The fsync of a database's WAL file off the calling thread (see walSyncer in sqlite-wal-sync.ts). */
export interface WalSyncer {
  sync(done: (error: Error | null) => void): void;
  syncNow(): void;
  close(): void;
}

/** A driver module: sqlite-bun.ts or sqlite-node.ts. */
export interface SqliteDriver {
  DRIVER: string;
  openDatabase(path: string): SqliteConnection;
  /** For durability 'full' with group commit: null when the WAL file cannot be opened. */
  walSyncer?(path: string): WalSyncer | null;
}

/** What an entry point loaded: the runtime's driver, or why there is none (`sqliteUnavailableReason`). */
export type LoadedSqliteDriver =
  | { driver: SqliteDriver; unavailableReason: null }
  | { driver: null; unavailableReason: string };
