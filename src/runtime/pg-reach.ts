// Turns a Postgres client's first failure into a sentence an operator can act on: where the server was looked for
// (host and port, never the user or password) and why it could not be used.
import { lookup } from 'node:dns/promises';

/** Where a Postgres URL points, as `host:port` (or the socket directory): no user, no password, no database. */
export function pgAddress(url: string): string {
  let host: string | undefined;
  let port: string | undefined;
  let params: URLSearchParams | undefined;
  try {
    const u = new URL(url);
    host = u.hostname;
    port = u.port;
    params = u.searchParams;
  } catch {
    // Several hosts (`h1,h2:5433`) are not a valid URL authority: read it by hand.
    const authority = /^[a-z]+:\/\/(?:[^@/?#]*@)?([^/?#]*)/i.exec(url)?.[1];
    if (authority === undefined) return '(an unreadable DATABASE_URL)';
    host = authority;
    params = new URLSearchParams(url.split('?')[1] ?? '');
  }
  host = params.get('host') ?? (host || 'localhost');
  port = port || params.get('port') || '5432';
  if (host.startsWith('/')) return `the socket in ${host} (port ${port})`;
  return host.includes(',') || (host.includes(':') && !host.startsWith('[')) ? host : `${host}:${port}`;
}

// Connection-level failures, by the codes postgres.js (Node's socket codes, its own CONNECT_TIMEOUT) and Bun's SQL
// (ERR_POSTGRES_*) give them.
const REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ERR_POSTGRES_CONNECTION_REFUSED: 'connection refused',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host not found (DNS lookup failed)',
  EAI_NONAME: 'host not found',
  ETIMEDOUT: 'timed out',
  CONNECT_TIMEOUT: 'timed out',
  ERR_POSTGRES_CONNECTION_TIMEOUT: 'timed out',
  ERR_POSTGRES_CONNECTION_FAILED: 'the connection failed or timed out',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNRESET: 'connection reset',
  CONNECTION_CLOSED: 'connection closed',
  CONNECTION_ENDED: 'connection closed',
  CONNECTION_DESTROYED: 'connection closed',
};

interface Coded {
  code?: unknown;
  errno?: unknown;
  message?: unknown;
  cause?: unknown;
}

/** The error and its causes, outermost first (the store wraps the client's error as its cause). */
function chain(error: unknown): Coded[] {
  const out: Coded[] = [];
  for (let e = error; e !== null && typeof e === 'object' && out.length < 5; e = (e as Coded).cause)
    out.push(e as Coded);
  return out;
}

/** A SQLSTATE from the server: Bun's SQL puts it in `errno`, postgres.js in `code`. */
const sqlState = (e: Coded) =>
  [e.errno, e.code].find((v) => typeof v === 'string' && /^[0-9A-Z]{5}$/.test(v)) as string | undefined;

/**
 * The start-up message for a store whose first ping failed, or null when the failure is not about reaching or
 * logging in to the server (a schema problem, say), which then speaks for itself.
 */
export async function pgUnreachable(url: string, error: unknown): Promise<string | null> {
  const where = pgAddress(url);
  for (const e of chain(error)) {
    const code = typeof e.code === 'string' ? e.code : undefined;
    let reason = code ? REASONS[code] : undefined;
    if (reason !== undefined) {
      // Bun's SQL says "connection refused" for a name that does not resolve too: ask the resolver which it was.
      if (code === 'ERR_POSTGRES_CONNECTION_REFUSED' && (await unresolvable(url))) reason = 'host not found';
      return `cannot reach PostgreSQL at ${where} (${reason})`;
    }
    const state = sqlState(e);
    // Class 28: invalid authorization (wrong password, unknown role); 3D000: no such database. The server's message
    // names the user or database, never the password.
    if (state !== undefined && (state.startsWith('28') || state === '3D000')) {
      return `PostgreSQL at ${where} refused the connection (${scrub(String(e.message), url)})`;
    }
  }
  return null;
}

/** `message` with the URL's password, should a driver ever echo it, masked. */
function scrub(message: string, url: string): string {
  let password = '';
  try {
    password = decodeURIComponent(new URL(url).password);
  } catch {
    // No readable password to mask.
  }
  return password ? message.split(password).join('***') : message;
}

async function unresolvable(url: string): Promise<boolean> {
  let host: string;
  try {
    host = new URL(url).hostname;
  } catch {
    return false;
  }
  if (!host || host.startsWith('[') || /^[\d.]+$/.test(host)) return false;
  try {
    await lookup(host);
    return false;
  } catch {
    return true;
  }
}
