// Type-level tests of the handler map, the way a user writes it (octokit/webhooks.js test/typescript-validate.ts):
// checked by `npm run typecheck`, never run. Each `@ts-expect-error` is part of the API: tsc fails if the line
// under it compiles, so a change that loosens a type breaks the build.
import {
  type HandlerContext,
  type HandlerMap,
  type IdentityPolicy,
  type Logger,
  type UnknownHandler,
  createLavaWebhooks,
  memoryStore,
} from 'lava-webhooks';
import { equal } from './expect.ts';

const noop = () => {};

export function handlerMapKeys(): HandlerMap {
  return {
    'customer.created': noop,
    'customer.wallet.balance.updated': noop,
    'customer.deleted': noop,
    // @ts-expect-error: a handler map rejects a name that is not a known event (here a typo)
    'customer.create': noop,
  };
}

export function handlerMapLegacyKey(): HandlerMap {
  return {
    // @ts-expect-error: a legacy `connection.*` name is not a key; its handler is the current name's
    'connection.created': noop,
  };
}

export function inlineHandlers(): void {
  createLavaWebhooks({
    secret: 'test-secret',
    store: memoryStore(),
    handlers: {
      'customer.deleted': noop,
      // @ts-expect-error: the same check on handlers written inline
      'checkout.completed': noop,
    },
    // @ts-expect-error: `ignore` takes known event names only
    ignore: ['customer.wallet.balance.update'],
  });
}

export const payloads: HandlerMap = {
  'customer.created': (event) => {
    equal<typeof event.event, 'customer.created'>(true);
    equal<typeof event.data.customer_id, string>(true);
    equal<typeof event.data.reference_id, string | null | undefined>(true);
    equal<NonNullable<typeof event.data.subscription>['subscription_id'], string>(true);
    // @ts-expect-error: customer_id is a string
    event.data.customer_id.toFixed();
    // @ts-expect-error: contact may be missing (null or undefined)
    event.data.contact.email;
    // @ts-expect-error: a field the schema does not declare is `unknown` (kept, never typed), so it cannot be used
    const balance: number = event.data.balance;
    // @ts-expect-error: the same for a field of the envelope
    const id: string = event.id;
    return [balance, id];
  },
  'customer.deleted': (event) => {
    // @ts-expect-error: each handler gets its own event's payload
    const name: 'customer.created' = event.event;
    return name;
  },
  // @ts-expect-error: a handler that expects another payload shape is refused
  'customer.wallet.balance.updated': (event: { data: { customer_id: number } }) => event,
};

export const contexts: HandlerMap = {
  'customer.wallet.balance.updated': (_event, ctx) => {
    equal<typeof ctx, HandlerContext>(true);
    equal<typeof ctx.key, string>(true);
    equal<typeof ctx.attempt, number>(true);
    equal<typeof ctx.policy, IdentityPolicy>(true);
    equal<IdentityPolicy, 'once' | 'dedupe' | 'signal'>(true);
    equal<typeof ctx.deliveries, number>(true);
    equal<typeof ctx.signal, AbortSignal>(true);
    equal<typeof ctx.logger, Logger>(true);
    // @ts-expect-error: ctx has no `event` (the payload is the first argument)
    ctx.event;
    // @ts-expect-error: attempt is a number
    ctx.attempt.startsWith('1');
  },
};

export const onUnknown: UnknownHandler = (event, ctx) => {
  equal<typeof event.event, string>(true);
  equal<typeof event.data.customer_id, string | undefined>(true);
  equal<typeof ctx.key, string>(true);
};
