// The Next.js example's route handlers, called the way Next calls them (an exported function given a web Request);
// no Next.js install needed.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { samplePayload } from '../../src/samples.ts';
import { SECRET, signedRequest, waitFor } from '../helpers/lava.ts';

const env = process.env;
env.LAVA_WEBHOOK_SECRET = SECRET;
env.CRON_SECRET = 'cron_secret_for_the_suite';
delete env.DATABASE_URL;
env.LOG_LEVEL = 'error';

const route = await import('../../examples/nextjs/app/api/webhooks/lava/route.ts');
const drain = await import('../../examples/nextjs/app/api/webhooks/lava/drain/route.ts');
const { getLava } = await import('../../examples/nextjs/lib/lava.ts');

const URL_ = 'https://shop.example/api/webhooks/lava';

describe('examples/nextjs app/api/webhooks/lava/route.ts', () => {
  test('POST answers new, duplicate and bad signature like the server, and the handler runs once', async () => {
    const body = JSON.stringify(samplePayload('customer.created', { customerId: 'cus_next' }));
    let res = await route.POST(signedRequest(URL_, body));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { received: true });
    res = await route.POST(signedRequest(URL_, body));
    assert.deepEqual(await res.json(), { received: true, duplicate: true });
    res = await route.POST(signedRequest(URL_, body, { secret: 'whsec_not_ours' }));
    assert.equal(res.status, 401);
    const done = await waitFor(
      async () => {
        const [record] = await getLava().store.list({ customerId: 'cus_next' });
        return record?.status === 'done' ? record : null;
      },
      5000,
      'the handler to run after the response',
    );
    assert.equal(done.attempts, 1);
  });

  test('GET answers 405 with Allow: POST', async () => {
    const res = route.GET();
    assert.equal(res.status, 405);
    assert.equal(res.headers.get('allow'), 'POST');
  });

  test('the drain route needs the cron secret, then processes what is due', async () => {
    let res = await drain.GET(new Request(`${URL_}/drain`));
    assert.equal(res.status, 401);
    res = await drain.GET(new Request(`${URL_}/drain`, { headers: { authorization: `Bearer ${env.CRON_SECRET}` } }));
    assert.equal(res.status, 200);
    assert.deepEqual(await res.json(), { processed: 0 });
  });
});
