// Test helper: a TCP proxy in the test process between a receiver and Postgres, so a test can cut the database
// off (every connection reset, new ones refused) and bring it back, without touching the real server.
import { type Server, type Socket, connect, createServer } from 'node:net';

export interface TcpProxy {
  /** The port the proxy listens on while up; stays the same across cut() and restore(). */
  port: number;
  /** Resets every connection through the proxy and stops listening: connects are refused from now on. */
  cut(): Promise<void>;
  /** Listens again on the same port. */
  restore(): Promise<void>;
  /** Connections opened through the proxy so far. */
  readonly connections: number;
  close(): Promise<void>;
}

export async function tcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const sockets = new Set<Socket>();
  let server: Server | null = null;
  let opened = 0;
  let port = 0;

  function listen(): Promise<void> {
    const srv = createServer((client) => {
      opened++;
      const upstream = connect(target.port, target.host);
      sockets.add(client);
      sockets.add(upstream);
      client.pipe(upstream);
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
    return new Promise((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, '127.0.0.1', () => {
        const addr = srv.address();
        port = typeof addr === 'object' && addr ? addr.port : port;
        server = srv;
        resolve();
      });
    });
  }

  function stop(): Promise<void> {
    for (const s of sockets) s.destroy();
    sockets.clear();
    const srv = server;
    server = null;
    return new Promise((resolve) => (srv ? srv.close(() => resolve()) : resolve()));
  }

  await listen();
  return {
    get port() {
      return port;
    },
    get connections() {
      return opened;
    },
    cut: stop,
    restore: listen,
    close: stop,
  };
}
