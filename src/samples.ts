// Realistic sample payloads for each Lava event, for the CLI's `send`, tests and benchmarks.
import type { EventName } from './intake/events.ts';

export interface SampleOptions {
  customerId?: string;
  /** Merged over `data`. */
  data?: Record<string, unknown>;
  /** Extra top-level fields. */
  extra?: Record<string, unknown>;
}

let counter = 0;

/** A payload shaped like Lava's: `{ event, data: <customer object> }`. Legacy `connection.*` names get the old shape. */
export function samplePayload(event: EventName | string, options: SampleOptions = {}): Record<string, unknown> {
  counter++;
  const id = options.customerId ?? `cus_${Date.now().toString(36)}${counter.toString(36)}`;
  const legacy = event.startsWith('connection.');
  const data: Record<string, unknown> = legacy
    ? { connection_id: id, reference_id: `ref_${counter}`, connection_secret: 'cs_sample_not_a_real_secret' }
    : {
        customer_id: id,
        reference_id: `user_${counter}`,
        contact: { phone: null, email: `customer${counter}@example.com`, first_name: 'Ada', last_name: 'Lovelace' },
        subscription:
          event === 'customer.deleted'
            ? null
            : { subscription_id: `sub_${counter}`, plan_id: 'plan_pro', name: 'Pro', status: 'active' },
        metadata: {},
        created_at: new Date().toISOString(),
      };
  return { event, data: { ...data, ...options.data }, ...options.extra };
}
