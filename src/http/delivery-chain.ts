// The webhook route as the idiomatic Hono chain: bounded body → signature → content type → zValidator → record.
// NOT the default: the benchmark's comparison point against the receiver's fast path (docs/architecture.md, "Why
// deliveries skip Hono's router"). It runs the same steps as src/intake/intake.ts, so the two differ only in plumbing.
import { type Hook, zValidator } from '@hono/zod-validator';
import type { Context, Hono, MiddlewareHandler } from 'hono';
import { createMiddleware } from 'hono/factory';
import { HTTPException } from 'hono/http-exception';
import { z } from 'zod';
import { type AppDeps, type DeliveryRoute, createDeliveryAnswer, shuttingDown, waitUntilOf } from '../app.ts';
import { readBody } from '../intake/body.ts';
import { type ParsedEvent, validateEvent } from '../intake/events.ts';
import { type IntakeResult, decodeUtf8, isJsonContentType } from '../intake/intake.ts';
import { parseSignatureHeader } from '../intake/signature.ts';

/** What the first middleware learns about a delivery and the later ones read. */
interface Delivery {
  /** The bytes read once from the request: the signature covers them, zValidator parses them. */
  body: Uint8Array;
  /** The headers as sent (stored with the event). */
  headers: Headers;
  received: number;
  /** performance.now() at the start, for the ack latency. */
  started: number;
  /** The slot of the secret the signature matched. */
  matched: number;
  /** The body decoded as strict UTF-8, once the content type step ran. */
  text: string;
}

type Env = { Variables: { delivery: Delivery } };
type Valid = Extract<ParsedEvent, { ok: true }>;
type Invalid = Extract<ParsedEvent, { ok: false }>;

/**
 * validateEvent as one zod schema, so zValidator can run it: the envelope, legacy names and the known events'
 * schemas stay written once. A failure carries validateEvent's verdict (name, customer, reason) for the dead letter.
 */
const deliverySchema = z.unknown().transform((json, ctx) => {
  const parsed = validateEvent(json);
  if (parsed.ok) return parsed;
  ctx.issues.push({ code: 'custom', message: parsed.reason, input: json, params: { parsed } });
  return z.NEVER;
});

/** A copy of the request that names `application/json`, without a body (it was read already). */
function withJsonType(request: Request): Request {
  const headers = new Headers(request.headers);
  headers.set('content-type', 'application/json');
  return new Request(request.url, { method: request.method, headers });
}

/** The body as an ArrayBuffer of exactly its bytes (a stream's chunk may be a view into a larger one). */
function exactBuffer(body: Uint8Array): ArrayBuffer {
  const exact = body.byteOffset === 0 && body.byteLength === body.buffer.byteLength;
  return (exact ? body.buffer : body.slice().buffer) as ArrayBuffer;
}

export const deliveryChain: DeliveryRoute = (app: Hono, deps: AppDeps) => {
  const { steps } = deps;
  const respond = createDeliveryAnswer(deps);
  const answer = (c: Context<Env>, r: IntakeResult) => respond(r, c.get('delivery').started, () => waitUntilOf(c));

  // 1. Bounded body read (ours, not Hono's bodyLimit: that has no deadline (408) and no memory budget (503)). The
  // bytes are Hono's body cache from here on: no later step touches c.req.raw's body.
  const boundedBody = createMiddleware<Env>(async (c, next) => {
    if (deps.isClosing()) return shuttingDown();
    const started = performance.now();
    const received = steps.now();
    let body: Uint8Array;
    try {
      body = await readBody(c.req.raw, steps.readOptions);
    } catch (error) {
      return respond(steps.unreadable(error), started, () => waitUntilOf(c));
    }
    (c.req.bodyCache as { arrayBuffer?: Promise<ArrayBuffer> }).arrayBuffer = Promise.resolve(exactBuffer(body));
    c.set('delivery', { body, headers: c.req.raw.headers, received, started, matched: -1, text: '' });
    try {
      await next();
    } finally {
      steps.release(body);
    }
  });

  // 2. Signature over the bytes arrayBuffer() gives (the cache above): one generic 401.
  const signature = createMiddleware<Env>(async (c, next) => {
    const header = c.req.header('x-webhook-signature') ?? null;
    const expected = parseSignatureHeader(header);
    if (!expected) return answer(c, steps.unauthenticated(header, null));
    const bytes = new Uint8Array(await c.req.arrayBuffer());
    const matched = await steps.verifier.verify(bytes, expected);
    if (matched < 0) return answer(c, steps.unauthenticated(header, bytes.byteLength));
    c.get('delivery').matched = matched;
    await next();
  });

  // 3. Content type, checked here: Hono's JSON validator validates `{}` when the request is not JSON. The text is
  // decoded strictly (a body that is not UTF-8 must not pass as replacement characters) and becomes the body cache
  // zValidator parses, so it validates exactly the bytes that were verified.
  const jsonBody = createMiddleware<Env>(async (c, next) => {
    const d = c.get('delivery');
    const contentType = c.req.header('content-type') ?? null;
    if (!isJsonContentType(contentType))
      return answer(c, await steps.unsupported(d.body, d.headers, contentType, d.received));
    try {
      d.text = decodeUtf8(d.body);
    } catch (error) {
      return answer(c, await steps.notJson(d.body, d.headers, error, d.received));
    }
    (c.req.bodyCache as { text?: Promise<string> }).text = Promise.resolve(d.text);
    // Intake takes a delivery without a content type as JSON; Hono's validator would read no body for it.
    if (contentType === null || contentType.trim() === '') c.req.raw = withJsonType(c.req.raw);
    await next();
  });

  // 4. zValidator; its hook answers 400 and keeps the dead letter.
  const invalid: Hook<Valid, Env, string, 'json', object, typeof deliverySchema> = async (result, c) => {
    if (result.success) return;
    const d = c.get('delivery');
    const issue = result.error.issues[0];
    const parsed = (issue?.code === 'custom' ? issue.params?.parsed : undefined) as Invalid;
    return answer(c, await steps.invalid(d.body, d.headers, parsed, d.received));
  };
  const validate = zValidator<typeof deliverySchema, 'json', Env, string, typeof invalid>(
    'json',
    deliverySchema,
    invalid,
  );
  // Hono's validator throws, without calling the hook, when the body is not JSON: that is a 400 and a dead letter too.
  const validJson: MiddlewareHandler<Env, string, { in: { json: unknown }; out: { json: Valid } }> = async (
    c,
    next,
  ) => {
    try {
      return await validate(c, next);
    } catch (error) {
      if (!(error instanceof HTTPException) || error.status !== 400) throw error;
      const d = c.get('delivery');
      let cause: unknown = error;
      try {
        JSON.parse(d.text);
      } catch (syntax) {
        cause = syntax; // the parser's own words for the dead letter, as the fast path keeps them
      }
      return answer(c, await steps.notJson(d.body, d.headers, cause, d.received));
    }
  };

  // 5, 6. Identity and the durable insert.
  (app as unknown as Hono<Env>).post(deps.path, boundedBody, signature, jsonBody, validJson, async (c) => {
    const d = c.get('delivery');
    return answer(c, await steps.record(c.req.valid('json'), d.body, d.headers, d.received, d.matched));
  });
};
