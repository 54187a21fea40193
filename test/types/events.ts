// The event schemas' spelled-out types (src/intake/events.ts, explicit for JSR) are exactly what zod infers from the
// schemas themselves: the same expressions, built here without annotations, must have the very same types.
import { z } from 'zod';
import type { EnvelopeSchema, EventSchema, customerData, envelope, schemas } from '../../src/intake/events.ts';
import { equal } from './expect.ts';

const text = () => z.string().nullable().optional();
const inferredCustomer = z
  .object({
    customer_id: z.string().min(1),
    reference_id: text(),
    contact: z
      .object({ phone: text(), email: text(), first_name: text(), last_name: text() })
      .loose()
      .nullable()
      .optional(),
    subscription: z
      .object({ subscription_id: z.string(), plan_id: text(), name: text(), status: text() })
      .loose()
      .nullable()
      .optional(),
    metadata: z.record(z.string(), z.unknown()).nullable().optional(),
    created_at: text(),
  })
  .loose();
const inferredEvent = <N extends string>(name: N) =>
  z.object({ event: z.literal(name), data: inferredCustomer }).loose();
const inferredEnvelope = z
  .object({ event: z.string().min(1), data: z.object({ customer_id: z.string().min(1).optional() }).loose() })
  .loose();

export const checks = [
  equal<typeof customerData, typeof inferredCustomer>(true),
  equal<EventSchema<'customer.deleted'>, ReturnType<typeof inferredEvent<'customer.deleted'>>>(true),
  equal<(typeof schemas)['customer.created'], ReturnType<typeof inferredEvent<'customer.created'>>>(true),
  equal<
    (typeof schemas)['customer.wallet.balance.updated'],
    ReturnType<typeof inferredEvent<'customer.wallet.balance.updated'>>
  >(true),
  equal<typeof envelope, typeof inferredEnvelope>(true),
  equal<EnvelopeSchema, typeof inferredEnvelope>(true),
  equal<z.output<typeof envelope>, z.output<typeof inferredEnvelope>>(true),
  // The check itself can fail: a schema with one field fewer is not the same type.
  // @ts-expect-error
  equal<typeof customerData, ReturnType<typeof inferredCustomer.omit<{ created_at: true }>>>(true),
];
