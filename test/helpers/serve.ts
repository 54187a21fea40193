// Serves a fetch handler on a real HTTP port with whatever runtime runs the test (Bun.serve, Deno.serve, or
// @hono/node-server on Node), so intake is tested over real sockets and not only through app.request().
type FetchFn = (request: Request) => Response | Promise<Response>;

export interface Served {
  url: string;
  port: number;
  close(): Promise<void>;
}

const g = globalThis as unknown as {
  Bun?: { serve(o: Record<string, unknown>): { port: number; stop(force?: boolean): unknown } };
  Deno?: {
    serve(
      o: { port: number; hostname: string; onListen?: (a: { port: number }) => void },
      h: FetchFn,
    ): { addr: { port: number }; shutdown(): Promise<void> };
  };
};

export async function serve(fetch: FetchFn): Promise<Served> {
  if (g.Bun) {
    const server = g.Bun.serve({ port: 0, hostname: '127.0.0.1', fetch, idleTimeout: 30 });
    return {
      url: `http://127.0.0.1:${server.port}`,
      port: server.port,
      close: async () => {
        await server.stop(true);
      },
    };
  }
  if (g.Deno) {
    const server = g.Deno.serve({ port: 0, hostname: '127.0.0.1', onListen: () => {} }, fetch);
    return {
      url: `http://127.0.0.1:${server.addr.port}`,
      port: server.addr.port,
      close: () => server.shutdown(),
    };
  }
  const { serve: nodeServe } = await import('@hono/node-server');
  return await new Promise((resolve) => {
    const server = nodeServe({ fetch, port: 0, hostname: '127.0.0.1' }, (info) => {
      resolve({
        url: `http://127.0.0.1:${info.port}`,
        port: info.port,
        close: () =>
          new Promise<void>((r) => {
            (server as unknown as { closeAllConnections?: () => void }).closeAllConnections?.();
            server.close(() => r());
          }),
      });
    });
  });
}

/** Starts a receiver's worker and serves it on a real port; `close()` stops the server, then the receiver. */
export async function serveReceiver(
  lava: { fetch: FetchFn; start(): void; close(deadlineMs?: number): Promise<void> },
  path = '/webhooks/lava',
): Promise<{ served: Served; url: string; close(): Promise<void> }> {
  lava.start();
  const served = await serve(lava.fetch);
  return {
    served,
    url: `${served.url}${path}`,
    async close() {
      await served.close();
      await lava.close(1000);
    },
  };
}
