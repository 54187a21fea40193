// Bearer-token checks for endpoints that must not be public (GET /metrics). Web-standard: SubtleCrypto only.
const enc = new TextEncoder();

const sha256 = async (text: string) => new Uint8Array(await crypto.subtle.digest('SHA-256', enc.encode(text)));

/**
 * A check of `Authorization: Bearer <token>` against `token`. Both sides are hashed first and the digests compared
 * byte by byte without an early exit, so the time taken says nothing about how much of a guess was right, nor about
 * the token's length.
 */
export function bearerCheck(token: string): (authorization: string | null) => Promise<boolean> {
  const expected = sha256(token);
  return async (authorization) => {
    const m = authorization === null ? null : /^\s*Bearer\s+(\S+)\s*$/i.exec(authorization);
    const [want, given] = await Promise.all([expected, sha256(m?.[1] ?? '')]);
    let diff = m ? 0 : 1;
    for (let i = 0; i < want.length; i++) diff |= (want[i] as number) ^ (given[i] as number);
    return diff === 0;
  };
}
