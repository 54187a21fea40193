// `send` and `sign`: deliver realistic signed events to a receiver, the way Lava does, and sign bodies for curl.
import { readFile } from 'node:fs/promises';
import process from 'node:process';
import { EVENT_NAMES, LEGACY_EVENTS } from '../intake/events.ts';
import { sign } from '../intake/signature.ts';
import { samplePayload } from '../samples.ts';
import { type SecretFlags, readSecret, readStdin } from './input.ts';
import { CliError, EXIT_USAGE, UsageError, err, out, printJson } from './output.ts';

type Env = Record<string, string | undefined>;

/** Lava waits 10 s for an answer and never retries; the CLI gives up at the same point. */
const LAVA_TIMEOUT_MS = 10_000;

export const WRONG_SECRET =
  "the receiver rejected the signature: check --secret / LAVA_WEBHOOK_SECRET matches the receiver's";

/** --url, else the local receiver the environment describes. A URL with no path gets the receiver's path. */
export function targetUrl(flag: string | undefined, env: Env): string {
  const path = env.LAVA_WEBHOOK_PATH || '/webhooks/lava';
  const raw = flag ?? `http://127.0.0.1:${env.PORT || 3000}${path}`;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new UsageError(`--url: not a URL: ${raw} (expected e.g. http://localhost:3000/webhooks/lava)`, 'send');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`--url: expected an http or https URL, got ${raw}`, 'send');
  }
  if (url.pathname === '/') url.pathname = path;
  return url.toString();
}

function parseData(text: string | undefined): Record<string, unknown> | undefined {
  if (text === undefined) return undefined;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new UsageError(`--data must be a JSON object, e.g. --data '{"balance":"12.50"}'`, 'send');
  }
  return value as Record<string, unknown>;
}

function parseCount(text: string | undefined): number {
  if (text === undefined) return 1;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || n > 100_000)
    throw new UsageError(`--count must be a whole number from 1, got ${text}`, 'send');
  return n;
}

interface SendResult {
  n: number;
  event: string;
  customerId: string | null;
  /** Second copy of the same bytes (--duplicate). */
  repeat: boolean;
  status: number;
  answer: unknown;
}

export interface SendFlags extends SecretFlags {
  url?: string;
  customer?: string;
  data?: string;
  count?: string;
  duplicate?: boolean;
  'webhook-id'?: string;
  json?: boolean;
}

export function describeFailure(status: number, answer: unknown, url: string, urlFlag = '--url'): string {
  const detail =
    typeof answer === 'object' && answer && 'error' in answer ? String((answer as { error: unknown }).error) : '';
  switch (status) {
    case 401:
      return WRONG_SECRET;
    case 404:
      return `nothing answers at ${url} (404): check ${urlFlag}; the receiver listens on LAVA_WEBHOOK_PATH (default /webhooks/lava)`;
    case 503:
      return `the receiver could not record the event (503${detail ? `: ${detail}` : ''}): check its store and logs`;
    default:
      return `the receiver refused the event (${status}${detail ? `: ${detail}` : ''})`;
  }
}

export interface PostOptions {
  /** Sent as Lava sends it: X-Webhook-Signature, the HMAC-SHA256 of exactly these bytes, in lowercase hex. */
  signature: string;
  webhookId?: string;
  contentType?: string;
}

/** POSTs a signed body and reads the answer (JSON when it parses); gives up after 10 s, as Lava does. */
export async function post(url: string, body: string | Uint8Array, options: PostOptions) {
  const headers: Record<string, string> = {
    'content-type': options.contentType ?? 'application/json',
    'x-webhook-signature': options.signature,
    'user-agent': 'lava-webhooks-cli',
  };
  if (options.webhookId) headers['webhook-id'] = options.webhookId;
  let res: Response;
  try {
    res = await fetch(url, {
      method: 'POST',
      headers,
      body: body as BodyInit,
      signal: AbortSignal.timeout(LAVA_TIMEOUT_MS),
    });
  } catch (error) {
    const e = error as Error & { cause?: { code?: string; message?: string }; code?: string };
    if (e.name === 'TimeoutError' || e.name === 'AbortError') {
      throw new CliError(`no answer from ${url} within 10 s (Lava gives up after 10 s and does not retry)`);
    }
    const reason = e.cause?.code ?? e.code ?? e.cause?.message ?? e.message;
    throw new CliError(`could not connect to ${url} (${reason}) — is the receiver running? start it with npm start`);
  }
  const text = await res.text();
  let answer: unknown = text;
  try {
    answer = JSON.parse(text);
  } catch {
    // Not JSON (a proxy's error page, say): show it as text.
  }
  return { status: res.status, answer };
}

export async function sendCommand(event: string | undefined, flags: SendFlags, env: Env): Promise<number> {
  if (!event) throw new UsageError('send: which event? e.g. send customer.created', 'send');
  const url = targetUrl(flags.url, env);
  const secret = await readSecret(flags, env, 'send');
  const data = parseData(flags.data);
  const count = parseCount(flags.count);
  if (!(EVENT_NAMES as string[]).includes(event) && !(event in LEGACY_EVENTS) && !flags.json) {
    err(`note: ${event} is not a Lava event (${EVENT_NAMES.join(', ')}); sending it anyway`);
  }
  const results: SendResult[] = [];
  let failure: CliError | null = null;
  outer: for (let n = 1; n <= count; n++) {
    const payload = samplePayload(event, { customerId: flags.customer, data });
    const body = JSON.stringify(payload);
    const signature = await sign(secret, body);
    const payloadData = payload.data as Record<string, unknown>;
    const customerId = String(payloadData.customer_id ?? payloadData.connection_id ?? '') || null;
    const webhookId = flags['webhook-id'] && count > 1 ? `${flags['webhook-id']}-${n}` : flags['webhook-id'];
    for (const repeat of flags.duplicate ? [false, true] : [false]) {
      let r: { status: number; answer: unknown };
      try {
        r = await post(url, body, { signature, webhookId });
      } catch (error) {
        failure = error as CliError;
        break outer;
      }
      const result: SendResult = { n, event, customerId, repeat, status: r.status, answer: r.answer };
      results.push(result);
      if (!flags.json) {
        const label = `${count > 1 ? `[${n}/${count}] ` : ''}${event} ${customerId ?? ''}${repeat ? ' (again)' : ''}`;
        out(`${label} → ${r.status} ${typeof r.answer === 'string' ? r.answer : JSON.stringify(r.answer)}`);
      }
      if (r.status < 200 || r.status >= 300) {
        failure = new CliError(describeFailure(r.status, r.answer, url));
        break outer;
      }
    }
  }
  if (flags.json) {
    printJson({
      url,
      ok: failure === null,
      results: results.map((r) => ({
        event: r.event,
        customerId: r.customerId,
        repeat: r.repeat,
        status: r.status,
        answer: r.answer,
        duplicate:
          typeof r.answer === 'object' && r.answer !== null && (r.answer as { duplicate?: unknown }).duplicate === true,
        coalesced:
          typeof r.answer === 'object' && r.answer !== null && (r.answer as { coalesced?: unknown }).coalesced === true,
      })),
      ...(failure ? { error: failure.message } : {}),
    });
  }
  if (failure) throw failure;
  return 0;
}

export interface SignFlags extends SecretFlags {
  header?: boolean;
  /** Read the body from this file instead of stdin (so that stdin can carry the secret). */
  file?: string;
  json?: boolean;
}

export async function signCommand(flags: SignFlags, env: Env): Promise<number> {
  if (flags['secret-stdin'] && flags.file === undefined) {
    throw new UsageError(
      'sign reads the body from stdin: with --secret-stdin, pass the body with --file <path>',
      'sign',
    );
  }
  const secret = await readSecret(flags, env, 'sign');
  let body: Uint8Array;
  if (flags.file !== undefined) {
    try {
      body = new Uint8Array(await readFile(flags.file));
    } catch (error) {
      throw new CliError(`sign: cannot read ${flags.file}: ${(error as Error).message}`, EXIT_USAGE);
    }
  } else {
    if (process.stdin.isTTY) err('reading the body from stdin (end with Ctrl-D), e.g. lava-webhooks sign < body.json');
    body = await readStdin();
  }
  if (body.length === 0) {
    throw new CliError(
      `sign: ${flags.file ?? 'stdin'} was empty: give it the exact body bytes, e.g. < body.json`,
      EXIT_USAGE,
    );
  }
  const signature = await sign(secret, body);
  if (flags.json) printJson({ signature, header: `X-Webhook-Signature: ${signature}`, bytes: body.length });
  else out(flags.header ? `X-Webhook-Signature: ${signature}` : signature);
  return 0;
}
