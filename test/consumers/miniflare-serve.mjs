// Serves a Worker bundle over HTTP inside workerd, through the Miniflare that the consumer project installed (wrangler
// depends on it), for test/consumers/run.mjs. Run with the consumer project as the working directory:
//   node miniflare-serve.mjs <bundle.js> <port> <controlPort>
// The Worker answers on 127.0.0.1:<port>; 127.0.0.1:<controlPort>/kv?prefix=… lists the keys of its CUSTOMERS KV
// namespace (where the consumer's handler writes). Prints one line `READY <json>` once both listen; SIGTERM stops it.
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [bundle, port, controlPort] = process.argv.slice(2);
if (!bundle || !port || !controlPort) {
  console.error('usage: node miniflare-serve.mjs <bundle.js> <port> <controlPort>');
  process.exit(2);
}
const fromProject = createRequire(join(process.cwd(), 'package.json'));
const { Miniflare } = await import(pathToFileURL(fromProject.resolve('miniflare')).href);

const mf = new Miniflare({
  modules: true,
  scriptPath: resolve(bundle),
  compatibilityDate: '2026-04-01',
  compatibilityFlags: ['nodejs_compat'],
  bindings: { LAVA_WEBHOOK_SECRET: process.env.LAVA_WEBHOOK_SECRET ?? '' },
  kvNamespaces: ['CUSTOMERS'],
  host: '127.0.0.1',
  port: Number(port),
});
const url = await mf.ready;
const kv = await mf.getKVNamespace('CUSTOMERS');

const control = createServer(async (req, res) => {
  try {
    const prefix = new URL(req.url ?? '/', 'http://control').searchParams.get('prefix') ?? '';
    const { keys } = await kv.list({ prefix });
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ keys: keys.map((k) => k.name) }));
  } catch (error) {
    res.writeHead(500);
    res.end(String(error));
  }
});
await new Promise((done) => control.listen(Number(controlPort), '127.0.0.1', done));
console.log(`READY ${JSON.stringify({ url: url.href, control: `http://127.0.0.1:${controlPort}` })}`);

process.once('SIGTERM', async () => {
  control.close();
  await mf.dispose();
  process.exit(0);
});
