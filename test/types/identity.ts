// Type-level tests of `identity` rules: known events' key functions get that event's typed payload. Checked by
// `npm run typecheck`, never run; each `@ts-expect-error` must be needed.
import { type KeyInput, createLavaWebhooks, memoryStore } from 'lava-webhooks';
import { equal } from './expect.ts';

export function identityRules(): void {
  createLavaWebhooks({
    secret: 'test-secret',
    store: memoryStore(),
    identity: {
      'customer.created': {
        policy: 'once',
        key: ({ payload, customerId, headers }) => {
          equal<typeof payload.event, 'customer.created'>(true);
          equal<typeof payload.data.customer_id, string>(true);
          equal<typeof customerId, string | null>(true);
          equal<typeof headers, Headers>(true);
          return payload.data.customer_id;
        },
      },
      'customer.wallet.balance.updated': {
        key: ({ payload }) => {
          equal<typeof payload.event, 'customer.wallet.balance.updated'>(true);
          // @ts-expect-error: each event's rule sees its own payload
          const name: 'customer.deleted' = payload.event;
          return name;
        },
      },
      // @ts-expect-error: a policy is `once`, `dedupe` or `signal`
      'customer.deleted': { policy: 'twice' },
      // An event this version does not know: its payload is a plain object.
      'checkout.completed': {
        policy: 'dedupe',
        key: ({ payload }: KeyInput) => (typeof payload.id === 'string' ? payload.id : null),
      },
    },
  });
}

export function keyResults(): void {
  createLavaWebhooks({
    secret: 'test-secret',
    store: memoryStore(),
    identity: {
      'customer.created': { key: async ({ payload }) => payload.data.reference_id },
      // @ts-expect-error: a key is a string (or null/undefined to fall back), not a number
      'customer.deleted': { key: () => 42 },
    },
  });
}
