// Test helpers for postgres.js itself: which copy of it a test runs against, and a TCP proxy that cuts one
// connection at the moment its client writes a given statement (test/postgres-client-crash.test.ts).
//
// LAVA_TEST_POSTGRES_MODULE points the tests that use loadPostgresJs() at another copy of postgres.js: the path of
// its package directory (the one holding its package.json), e.g. a 3.x installed into a temporary directory with
// `npm install postgres@3.4.9`. Unset, they use the `postgres` this project installs. Nothing in src/ reads it.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { type Server, type Socket, connect, createServer } from 'node:net';
import { isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { ROOT } from './server-process.ts';

/** What postgres.js's default export is called with: a URL and options. */
export type PostgresJs = (url: string, options: Record<string, unknown>) => unknown;

export interface LoadedPostgresJs {
  postgres: PostgresJs;
  /** The version in its package.json. */
  version: string;
  /** Where it was loaded from. */
  dir: string;
}

// A specifier in a variable keeps tsc and Deno from type-checking postgres.js's own module graph.
const POSTGRES_MODULE = 'postgres';

const env = (name: string): string | undefined =>
  (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env[name];

/** The postgres.js under test: LAVA_TEST_POSTGRES_MODULE's, or this project's. */
export async function loadPostgresJs(): Promise<LoadedPostgresJs> {
  const override = env('LAVA_TEST_POSTGRES_MODULE');
  if (!override) {
    const { default: postgres } = (await import(POSTGRES_MODULE)) as { default: PostgresJs };
    const dir = join(ROOT, 'node_modules', 'postgres');
    return { postgres, version: versionIn(dir), dir };
  }
  const dir = isAbsolute(override) ? override : resolve(override);
  if (!existsSync(join(dir, 'package.json')) || !statSync(dir).isDirectory()) {
    throw new Error(`LAVA_TEST_POSTGRES_MODULE=${override}: not a package directory (no package.json there)`);
  }
  // Its ES module entry, in 3.x ("import" condition) and 4.x ("default") alike.
  const entry = join(dir, 'src', 'index.js');
  const { default: postgres } = (await import(pathToFileURL(entry).href)) as { default: PostgresJs };
  return { postgres, version: versionIn(dir), dir };
}

function versionIn(dir: string): string {
  try {
    return String((JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { version?: unknown }).version);
  } catch {
    return 'unknown';
  }
}

export interface CutProxy {
  port: number;
  /**
   * Arms a cut: the next time a client writes `marker` (its bytes, anywhere in what it sends, also split across two
   * writes), that connection is closed on both sides at once, and what it wrote is not passed on. Once; resolves
   * when it happened.
   */
  cutOn(marker: string): Promise<void>;
  /** Connections cut so far. */
  readonly cuts: number;
  close(): Promise<void>;
}

/**
 * A TCP proxy in front of Postgres that passes everything through until a cut is armed. A statement's text is on
 * the wire when a connection first prepares it (a Parse message), so a marker in a statement names the moment that
 * statement is sent — as long as no connection of the client prepared it before.
 */
export async function cutProxy(target: { host: string; port: number }): Promise<CutProxy> {
  const sockets = new Set<Socket>();
  let armed: { marker: Buffer; done: () => void } | null = null;
  let cuts = 0;

  const server: Server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client);
    sockets.add(upstream);
    let tail = Buffer.alloc(0);
    client.on('data', (data: Buffer) => {
      const cut = armed;
      if (cut) {
        const seen = Buffer.concat([tail, data]);
        if (seen.includes(cut.marker)) {
          armed = null;
          cuts++;
          client.destroy();
          upstream.destroy();
          cut.done();
          return;
        }
        tail = seen.subarray(Math.max(0, seen.length - cut.marker.length + 1));
      }
      upstream.write(data);
    });
    upstream.pipe(client);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    for (const s of [client, upstream]) {
      s.on('error', drop);
      s.on('close', drop);
    }
  });
  await new Promise<void>((res, rej) => {
    server.once('error', rej);
    server.listen(0, '127.0.0.1', () => res());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    port,
    get cuts() {
      return cuts;
    },
    cutOn(marker) {
      if (armed) throw new Error('cutProxy: a cut is already armed');
      return new Promise<void>((done) => {
        armed = { marker: Buffer.from(marker), done };
      });
    },
    close() {
      for (const s of sockets) s.destroy();
      sockets.clear();
      return new Promise<void>((res) => server.close(() => res()));
    },
  };
}
