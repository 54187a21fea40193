// The admin console's locks: the operator's token compared in constant time, a signed session cookie, a per-session
// CSRF token, and the same-origin check every POST must pass. Web-standard: SubtleCrypto only.

const enc = new TextEncoder();

const b64url = (bytes: Uint8Array): string => {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
};

function fromB64url(text: string): Uint8Array | null {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
  try {
    const s = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4));
    return Uint8Array.from(s, (ch) => ch.charCodeAt(0));
  } catch {
    return null;
  }
}

const sha256 = async (text: string) => new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(text)));

/** A session as its cookie carries it: `v1.<id>.<expires, epoch ms>.<HMAC of the rest>`. */
export interface Session {
  id: string;
  expiresAt: number;
}

export interface Keys {
  /** Whether `given` is the token. Both are hashed first, so the time taken says nothing about the guess. */
  tokenMatches(given: string): Promise<boolean>;
  /** A new session's cookie value. */
  issue(now: number, ttlMs: number): Promise<{ cookie: string; session: Session }>;
  /** The session a cookie value stands for, or null when it is malformed, forged or expired. */
  verify(cookie: string | undefined, now: number): Promise<Session | null>;
  /** The CSRF token of a session: every form of the console carries it, and every POST must send it back. */
  csrfToken(session: Session): Promise<string>;
  csrfMatches(session: Session, given: string): Promise<boolean>;
}

/**
 * The keys of one admin token. The session key is derived from the token, so changing the token logs every session
 * out, and several instances sharing the token accept each other's sessions.
 */
export function adminKeys(token: string): Keys {
  const expected = sha256(token);
  const key = sha256(`lava-webhooks admin session key\u0000${token}`).then((raw) =>
    crypto.subtle.importKey('raw', raw, { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify']),
  );
  const sign = async (text: string) => new Uint8Array(await crypto.subtle.sign('HMAC', await key, enc.encode(text)));
  // crypto.subtle.verify compares in constant time inside the platform.
  const verifyMac = async (text: string, mac: Uint8Array) =>
    crypto.subtle.verify('HMAC', await key, mac as Uint8Array<ArrayBuffer>, enc.encode(text));

  return {
    async tokenMatches(given) {
      const [want, got] = await Promise.all([expected, sha256(given)]);
      let diff = 0;
      for (let i = 0; i < want.length; i++) diff |= (want[i] as number) ^ (got[i] as number);
      return diff === 0;
    },
    async issue(now, ttlMs) {
      const id = b64url(crypto.getRandomValues(new Uint8Array(18)));
      const session = { id, expiresAt: Math.floor(now + ttlMs) };
      const body = `v1.${id}.${session.expiresAt}`;
      return { cookie: `${body}.${b64url(await sign(`session.${body}`))}`, session };
    },
    async verify(cookie, now) {
      if (!cookie || cookie.length > 200) return null;
      const m = /^v1\.([A-Za-z0-9_-]{24})\.(\d{1,16})\.([A-Za-z0-9_-]{43})$/.exec(cookie);
      if (!m) return null;
      const mac = fromB64url(m[3] as string);
      if (!mac || !(await verifyMac(`session.v1.${m[1]}.${m[2]}`, mac))) return null;
      const expiresAt = Number(m[2]);
      return expiresAt > now ? { id: m[1] as string, expiresAt } : null;
    },
    async csrfToken(session) {
      return b64url(await sign(`csrf.${session.id}`));
    },
    async csrfMatches(session, given) {
      const mac = given.length === 43 ? fromB64url(given) : null;
      return mac !== null && (await verifyMac(`csrf.${session.id}`, mac));
    },
  };
}

/**
 * Whether the scheme of the page the operator sees is https: the request's own, or what a TLS-terminating proxy says
 * in X-Forwarded-Proto. Trusting that header is safe here: it only decides the cookie's Secure flag (a browser keeps
 * no Secure cookie from a plain http page, so a forged header breaks only the forger's own login) and which scheme a
 * same-origin POST may come from.
 */
export function servedOverHttps(request: Request): boolean {
  if (new URL(request.url).protocol === 'https:') return true;
  const forwarded = request.headers.get('x-forwarded-proto');
  return forwarded !== null && forwarded.split(',')[0]?.trim().toLowerCase() === 'https';
}

/**
 * Whether a POST comes from a page of this very origin. The browser sends `Origin` with every POST (and
 * `Sec-Fetch-Site`), and no page of another site can forge either; a request with neither is refused. The host is the
 * request's own; the scheme may be the request's or, behind a TLS-terminating proxy, the forwarded one.
 */
export function sameOrigin(request: Request): boolean {
  const origin = request.headers.get('origin');
  if (origin === null || origin === 'null') return request.headers.get('sec-fetch-site') === 'same-origin';
  const url = new URL(request.url);
  const allowed = new Set([url.origin]);
  if (servedOverHttps(request)) allowed.add(`https://${url.host}`);
  return allowed.has(origin);
}
