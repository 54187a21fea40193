// What the console shows of a record's contents: the payload and headers masked by the rules the logger and the CLI
// use (src/observability/log.ts), and free text (errors, keys) with anything shaped like an email or phone number
// taken out. The console has no "reveal": an operator who needs the raw bytes uses the CLI.
import { REDACTED, isSecretName, redact } from '../observability/log.ts';

const EMAIL = /[^\s@"'<>(),;:]+@[^\s@"'<>(),;:]+\.[A-Za-z]{2,}/g;
// An international number (+ and at least 7 digits, spaces or dashes between): what Lava's contact.phone holds.
const PHONE = /\+\d[\d\s().-]{5,}\d/g;

/** Free text with email addresses and phone numbers replaced (an error message can quote the payload). */
export function scrubText(text: string): string {
  return text.replace(EMAIL, REDACTED).replace(PHONE, REDACTED);
}

/** Headers with every one named like a secret (signature, authorization, cookie, token, …) masked. */
export function maskHeaders(headers: Record<string, string>): Array<[string, string]> {
  return Object.entries(headers)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([name, value]) => [name, isSecretName(name) ? REDACTED : scrubText(value)]);
}

export interface ShownPayload {
  /** Pretty-printed JSON with secret and personal fields masked, or null when the body is not JSON. */
  json: string | null;
  bytes: number;
}

/**
 * The payload pretty-printed, fields named like secrets or personal data masked at any depth. A body that is not JSON
 * (a delivery refused as invalid) is not shown at all: its fields cannot be told apart, so nothing in it can be masked.
 */
export function maskPayload(body: Uint8Array): ShownPayload {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    return { json: null, bytes: body.byteLength };
  }
  const masked = redact(value, { maxDepth: 64, maxNodes: 100_000 });
  return { json: scrubText(JSON.stringify(masked, null, 2) ?? 'null'), bytes: body.byteLength };
}
