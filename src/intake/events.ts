// The zod schemas: the one source of truth for Lava's event names and the payload types handlers receive.
import { z } from 'zod';
import type { IdentityPolicy } from '../stores/store.ts';

// The schemas' types are spelled out (what zod would infer, checked equal by test/types/events.ts): JSR documents a
// package, and generates its declarations, only from explicit types.
type OptionalText = z.ZodOptional<z.ZodNullable<z.ZodString>>;
type ContactSchema = z.ZodObject<
  { phone: OptionalText; email: OptionalText; first_name: OptionalText; last_name: OptionalText },
  z.core.$loose
>;
type SubscriptionSchema = z.ZodObject<
  { subscription_id: z.ZodString; plan_id: OptionalText; name: OptionalText; status: OptionalText },
  z.core.$loose
>;
/** The zod schema of the customer object in `data` (see `customerData`). */
export type CustomerDataSchema = z.ZodObject<
  {
    customer_id: z.ZodString;
    reference_id: OptionalText;
    contact: z.ZodOptional<z.ZodNullable<ContactSchema>>;
    subscription: z.ZodOptional<z.ZodNullable<SubscriptionSchema>>;
    metadata: z.ZodOptional<z.ZodNullable<z.ZodRecord<z.ZodString, z.ZodUnknown>>>;
    created_at: OptionalText;
  },
  z.core.$loose
>;
/** The zod schema of one known event: its name, its `data`, and any other field kept. */
export type EventSchema<N extends string, D extends z.ZodType = CustomerDataSchema> = z.ZodObject<
  { event: z.ZodLiteral<N>; data: D },
  z.core.$loose
>;

const contact: ContactSchema = z
  .object({
    phone: z.string().nullable().optional(),
    email: z.string().nullable().optional(),
    first_name: z.string().nullable().optional(),
    last_name: z.string().nullable().optional(),
  })
  .loose();

const subscription: SubscriptionSchema = z
  .object({
    subscription_id: z.string(),
    plan_id: z.string().nullable().optional(),
    name: z.string().nullable().optional(),
    status: z.string().nullable().optional(),
  })
  .loose();

/**
 * The customer object every current Lava event carries in `data`. Only `customer_id` is required; the other known
 * fields are typed when present, and unknown fields are kept, so a richer payload from Lava never fails validation.
 */
export const customerData: CustomerDataSchema = z
  .object({
    customer_id: z.string().min(1),
    reference_id: z.string().nullable().optional(),
    contact: contact.nullable().optional(),
    subscription: subscription.nullable().optional(),
    metadata: z.record(z.string(), z.unknown()).nullable().optional(),
    created_at: z.string().nullable().optional(),
  })
  .loose();

const envelopeOf = <N extends string, D extends z.ZodType>(name: N, data: D): EventSchema<N, D> =>
  z.object({ event: z.literal(name), data }).loose();

/** The known events. Handler names and payload types derive from this object alone. */
export const schemas: {
  readonly 'customer.created': EventSchema<'customer.created'>;
  readonly 'customer.wallet.balance.updated': EventSchema<'customer.wallet.balance.updated'>;
  readonly 'customer.deleted': EventSchema<'customer.deleted'>;
} = {
  'customer.created': envelopeOf('customer.created', customerData),
  'customer.wallet.balance.updated': envelopeOf('customer.wallet.balance.updated', customerData),
  'customer.deleted': envelopeOf('customer.deleted', customerData),
} as const;

export type EventName = keyof typeof schemas;

/**
 * What a repeat of each event means (src/intake/identity.ts applies it; events not named here are `signal`s unless
 * they carry an `id`):
 * - a customer is created once and deleted once: `once` per customer, ever; the keys outlive retention as tombstones,
 *   so a replayed old delivery never runs again;
 * - a balance update says "the balance changed, look again", with the customer object as its payload (no balance,
 *   no event id, no time), so updates of one customer are byte-identical: a `signal`, where every delivery after a
 *   run began gets a run, and copies that arrive while one still waits coalesce into it.
 */
export const identityPolicies = {
  'customer.created': 'once',
  'customer.wallet.balance.updated': 'signal',
  'customer.deleted': 'once',
} as const satisfies Record<EventName, IdentityPolicy>;
export type EventPayload<N extends EventName> = z.output<(typeof schemas)[N]>;
export const EVENT_NAMES: EventName[] = Object.keys(schemas) as EventName[];

/**
 * Lava's legacy `connection.*` events carry a connection object (`connection_id`, `reference_id`,
 * `connection_secret`). They are mapped to the current names, and `data.customer_id` is filled from
 * `connection_id`, so one handler serves both; the handler context says which name was delivered.
 */
export const LEGACY_EVENTS: Record<string, EventName> = {
  'connection.created': 'customer.created',
  'connection.wallet.balance.updated': 'customer.wallet.balance.updated',
  'connection.deleted': 'customer.deleted',
};

const legacyData = z.object({ connection_id: z.string().min(1) }).loose();

/** The zod schema of the envelope every delivery must have (see `envelope`). */
export type EnvelopeSchema = z.ZodObject<
  { event: z.ZodString; data: z.ZodObject<{ customer_id: z.ZodOptional<z.ZodString> }, z.core.$loose> },
  z.core.$loose
>;

/** The envelope every delivery must have: an event name and a data object (extra fields are kept). */
export const envelope: EnvelopeSchema = z
  .object({
    event: z.string().min(1),
    data: z.object({ customer_id: z.string().min(1).optional() }).loose(),
  })
  .loose();

export type UnknownEventPayload = z.output<typeof envelope>;

export type ParsedEvent =
  | {
      ok: true;
      /** The event name handlers see (a legacy name is mapped to its current one). */
      name: string;
      /** The name as delivered. */
      deliveredAs: string;
      known: boolean;
      customerId: string | null;
      payload: Record<string, unknown>;
    }
  | { ok: false; name: string; customerId: string | null; reason: string; issues: z.core.$ZodIssue[] | null };

function summarize(issues: z.core.$ZodIssue[]): string {
  return issues
    .slice(0, 5)
    .map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`)
    .join('; ');
}

// zod's ahead-of-time compiled validators: the same schemas and answers, four to five times faster on a valid
// payload (a failed fast check falls back to zod's own parse, which words the issues). Where a runtime forbids
// `new Function` (Cloudflare Workers), z.compile hands the schema back unchanged. Compiling one schema takes about
// 10 ms, so the first deliveries use zod's own parse and the compile happens at the COMPILE_AFTER-th: a fresh process
// answers its first delivery without it (cold start), and a process that never validates never compiles.
const COMPILE_AFTER = 64;
const compiled = new Map<z.ZodType, z.ZodType>();
const compiledOutputs = new WeakSet<z.ZodType>();
const uses = new Map<z.ZodType, number>();
function fast<S extends z.ZodType>(schema: S): S {
  const c = compiled.get(schema);
  if (c !== undefined) return c as S;
  const n = (uses.get(schema) ?? 0) + 1;
  uses.set(schema, n);
  if (n < COMPILE_AFTER) return schema;
  const made = z.compile(schema);
  compiled.set(schema, made);
  compiledOutputs.add(made);
  uses.delete(schema);
  return made;
}
// Until a schema is compiled, zod's own parse runs it, and by default that parse first generates code for each object
// schema it meets (zod's "fastpass"): several milliseconds that only pay back over many parses, spent inside the
// first delivery. Those early parses skip it. A compiled validator gets no options: with them, a payload it refuses
// would be parsed again by zod before the answer.
const NO_CODEGEN = { jitless: true } as const;
const optionsFor = (schema: z.ZodType) => (compiledOutputs.has(schema) ? undefined : NO_CODEGEN);
const knownSchema = (name: string): z.ZodType | undefined =>
  Object.hasOwn(schemas, name) ? fast((schemas as Record<string, z.ZodType>)[name] as z.ZodType) : undefined;

function known(name: string, payload: Record<string, unknown>): ParsedEvent {
  const customerId = (payload.data as { customer_id: string }).customer_id;
  return { ok: true, name, deliveredAs: name, known: true, customerId, payload };
}

/**
 * Validates an already JSON-parsed body against the envelope and, for a known event, its schema.
 * `text`, when given, is the JSON text `json` was parsed from (see the fast path below).
 */
export function validateEvent(json: unknown, text?: string): ParsedEvent {
  // Fast path: a current known event is checked once against its own schema, which is stricter than the envelope
  // (so success there means the envelope holds too). Anything else takes the full path below, which also words the
  // errors.
  if (json !== null && typeof json === 'object' && !Array.isArray(json)) {
    const name = (json as { event?: unknown }).event;
    const schema = typeof name === 'string' ? knownSchema(name) : undefined;
    if (schema) {
      // These schemas transform nothing and keep unknown keys, so zod's output is a copy of its input but for one
      // thing: it leaves out "__proto__" keys. A body whose text cannot hold one (no "__proto__", no \u escape to
      // spell it) is only checked, and the parsed object itself becomes the payload: no copy to build and collect.
      if (text !== undefined && !text.includes('__proto__') && !text.includes('\\u')) {
        if (schema.validate(json, optionsFor(schema))) return known(name as string, json as Record<string, unknown>);
      } else {
        const parsed = schema.safeParse(json, optionsFor(schema));
        if (parsed.success) return known(name as string, parsed.data as Record<string, unknown>);
      }
    }
  }
  const envelopeSchema = fast(envelope);
  const env = envelopeSchema.safeParse(json, optionsFor(envelopeSchema));
  if (!env.success) {
    const name =
      json && typeof json === 'object' && typeof (json as { event?: unknown }).event === 'string'
        ? ((json as { event: string }).event as string)
        : 'unknown';
    return {
      ok: false,
      name,
      customerId: null,
      reason: `invalid envelope: ${summarize(env.error.issues)}`,
      issues: env.error.issues,
    };
  }
  const deliveredAs = env.data.event;
  let name = deliveredAs;
  let candidate: Record<string, unknown> = env.data;
  const legacy = Object.hasOwn(LEGACY_EVENTS, deliveredAs) ? LEGACY_EVENTS[deliveredAs] : undefined;
  if (legacy) {
    const legacySchema = fast(legacyData);
    const data = legacySchema.safeParse(env.data.data, optionsFor(legacySchema));
    if (!data.success) {
      return {
        ok: false,
        name: legacy,
        customerId: null,
        reason: `invalid ${deliveredAs}: ${summarize(data.error.issues)}`,
        issues: data.error.issues.map((i) => ({ ...i, path: ['data', ...i.path] })),
      };
    }
    name = legacy;
    candidate = {
      ...env.data,
      event: legacy,
      data: { customer_id: data.data.connection_id, ...data.data },
    };
  }
  const schema = knownSchema(name);
  if (!schema) {
    return {
      ok: true,
      name,
      deliveredAs,
      known: false,
      customerId: env.data.data.customer_id ?? null,
      payload: env.data,
    };
  }
  const parsed = schema.safeParse(candidate, optionsFor(schema));
  if (!parsed.success) {
    const cid = env.data.data.customer_id ?? null;
    return {
      ok: false,
      name,
      customerId: cid,
      reason: `invalid ${deliveredAs}: ${summarize(parsed.error.issues)}`,
      issues: parsed.error.issues,
    };
  }
  const payload = parsed.data as Record<string, unknown> & { data: { customer_id: string } };
  return { ok: true, name, deliveredAs, known: true, customerId: payload.data.customer_id, payload };
}
