// A Deno app embedding the receiver with the Deno KV store: `deno run --unstable-kv -A main.ts`.
import { createLavaWebhooks } from 'npm:lava-webhooks';
import { denoKvStore } from 'npm:lava-webhooks/stores/deno-kv';

const lava = createLavaWebhooks({
  secret: Deno.env.get('LAVA_WEBHOOK_SECRET'),
  store: denoKvStore({ path: './lava.kv' }),
  handlers: {
    // Runs after the 200. The test reads this file to see that it ran, and ran once.
    'customer.created': async (event, ctx) => {
      const marker = Deno.env.get('LAVA_MARKER') ?? 'handled.log';
      await Deno.writeTextFile(marker, `${event.data.customer_id} ${ctx.attempt}\n`, { append: true });
    },
  },
  ignore: ['customer.wallet.balance.updated', 'customer.deleted'],
});
lava.start();

const server = Deno.serve({ port: Number(Deno.env.get('PORT') ?? 3000) }, lava.fetch);

Deno.addSignalListener('SIGTERM', async () => {
  await server.shutdown();
  await lava.close(10_000);
  Deno.exit(0);
});
