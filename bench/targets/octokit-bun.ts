// Benchmark target (h): @octokit/webhooks' createWebMiddleware on Bun (GitHub's scheme: the same hex HMAC-SHA256,
// sent as `x-hub-signature-256: sha256=<hex>`), with one no-op handler for every event.
import { Webhooks, createWebMiddleware } from '@octokit/webhooks';

const webhooks = new Webhooks({ secret: process.env.LAVA_WEBHOOK_SECRET ?? '' });
webhooks.onAny(() => {});
const middleware = createWebMiddleware(webhooks, { path: '/webhooks/lava' });
const server = Bun.serve({
  port: Number(process.env.PORT ?? 3000),
  hostname: '127.0.0.1',
  fetch: (request) => middleware(request),
});
console.log(`octokit on bun listening on ${server.port}`);
