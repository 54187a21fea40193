// Standard Webhooks signing (https://www.standardwebhooks.com): v1,<base64 HMAC-SHA256 of "id.timestamp.body">,
// keyed with the base64 part of a `whsec_` secret. SubtleCrypto only, so it runs on every runtime.
import { ConfigError } from '../receiver.ts';

export interface StandardWebhooksSigner {
  /** The `webhook-signature` header value for one message. */
  sign(id: string, timestampSeconds: number, body: Uint8Array): Promise<string>;
}

const enc = new TextEncoder();

function base64ToBytes(b64: string): Uint8Array {
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function bytesToBase64(bytes: Uint8Array): string {
  let bin = '';
  for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i] as number);
  return btoa(bin);
}

/** Reads a `whsec_<base64>` secret; throws a message that says what a valid one looks like. */
export function decodeSecret(secret: string): Uint8Array {
  const trimmed = secret.trim();
  if (!trimmed.startsWith('whsec_')) {
    throw new ConfigError(
      'relay: the secret must be a Standard Webhooks secret: "whsec_" followed by base64 (24+ random bytes)',
    );
  }
  const b64 = trimmed.slice('whsec_'.length);
  let key: Uint8Array;
  try {
    if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new Error('not base64');
    key = base64ToBytes(b64);
  } catch {
    throw new ConfigError('relay: the secret after "whsec_" is not valid base64');
  }
  if (key.length < 16) throw new ConfigError(`relay: the secret is too short (${key.length} bytes; use 24 or more)`);
  return key;
}

export function standardWebhooksSigner(secret: string): StandardWebhooksSigner {
  const key = crypto.subtle.importKey(
    'raw',
    decodeSecret(secret) as Uint8Array<ArrayBuffer>,
    { name: 'HMAC', hash: 'SHA-256' },
    false,
    ['sign'],
  );
  return {
    async sign(id, timestampSeconds, body) {
      const prefix = enc.encode(`${id}.${timestampSeconds}.`);
      const message = new Uint8Array(prefix.length + body.length);
      message.set(prefix, 0);
      message.set(body, prefix.length);
      const mac = await crypto.subtle.sign('HMAC', await key, message);
      return `v1,${bytesToBase64(new Uint8Array(mac))}`;
    },
  };
}
