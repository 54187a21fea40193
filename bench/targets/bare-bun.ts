// Benchmark target (a), the ceiling: a bare Bun server that reads the body and answers 200, nothing else.
// With BENCH_PRELOAD (comma-separated package names) it first imports those packages, and is then (az): what a cold
// start costs any server built on them before it does any work of its own.
for (const name of (process.env.BENCH_PRELOAD ?? '').split(',').filter(Boolean)) await import(name);
const server = Bun.serve({
  port: Number(process.env.PORT ?? 3000),
  hostname: '127.0.0.1',
  async fetch(request) {
    await request.arrayBuffer();
    return new Response('{"received":true}', { headers: { 'content-type': 'application/json' } });
  },
});
console.log(`bare bun listening on ${server.port}`);
