// What the Postgres store writes into text columns, so that every delivery that passed the signature can be stored:
// Postgres text cannot hold NUL (U+0000) nor a lone surrogate (not valid UTF-8), and a btree index entry cannot
// exceed about 2.7 kB, so a customer id, key, event name or coalesce key of a few thousand characters, or one with a
// NUL in it, would fail the insert (a 503, the delivery lost on every retry). SQLite stores the same values as they
// are; so must every store, as far as anyone reading records can tell.
//
// - An identity value (key, customer id, event name, coalesce key) is stored as it is when it fits: at most
//   MAX_INDEXED_BYTES of UTF-8, no NUL, no lone surrogate, and not starting with `h:`. Otherwise the column holds
//   `h:` and the hex SHA-256 of its UTF-8 bytes (lone surrogates encoded as WTF-8 does), and the value itself goes
//   into the row's `originals` (JSON text, which escapes NUL and lone surrogates). The mapping is the same every time,
//   so one customer id is always one ordering group, and lookups (get, list by customer, requeue by event) map their
//   argument the same way. A value that starts with `h:` is hashed too, so a stored value is never ambiguous.
// - Headers that JSON cannot carry into jsonb (a NUL or a lone surrogate) go into `originals` as well.
// - An error message (`lastError`) is not an identity: its NUL and lone surrogates become U+FFFD.
// Records read back carry the original values: only the database's own columns show the hashes.

/** Longest identity value, in UTF-8 bytes, stored as it is: well under the btree limit even in a two-column index. */
export const MAX_INDEXED_BYTES = 512;
const HASHED = 'h:';
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

function wellFormed(s: string): boolean {
  const native = (s as { isWellFormed?: () => boolean }).isWellFormed;
  return native ? native.call(s) : !LONE_SURROGATE.test(s);
}

/** UTF-8 length of `s`, stopping once it passes `limit`. */
function utf8LengthOver(s: string, limit: number): boolean {
  // Every UTF-16 unit is at most 3 bytes of UTF-8: a short string cannot be over.
  if (s.length * 3 <= limit) return false;
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    // A surrogate pair is 4 bytes: 1 counted for the high half, 3 for the low one.
    n += c < 0x80 ? 1 : c < 0x800 ? 2 : c >= 0xd800 && c <= 0xdbff ? 1 : 3;
    if (n > limit) return true;
  }
  return false;
}

/** Whether `s` can be stored and indexed as it is. Allocates nothing for the usual short, plain value. */
export function fitsAsIs(s: string): boolean {
  return !s.startsWith(HASHED) && s.indexOf('\u0000') < 0 && !utf8LengthOver(s, MAX_INDEXED_BYTES) && wellFormed(s);
}

/** The column value of an identity: itself when it fits, else `h:<sha256>` (see above). */
export function indexed(s: string): string {
  return fitsAsIs(s) ? s : HASHED + toHex(sha256(wtf8(s)));
}

/** `indexed` for a nullable value. */
export function indexedOrNull(s: string | null): string | null {
  return s === null ? null : indexed(s);
}

/** Free text (an error message) as Postgres text can hold it: NUL and lone surrogates become U+FFFD. */
export function plainText(s: string): string;
export function plainText(s: string | null): string | null;
export function plainText(s: string | null): string | null {
  if (s === null || (s.indexOf('\u0000') < 0 && wellFormed(s))) return s;
  let out = '';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        out += s.slice(i, i + 2);
        i++;
      } else out += '\uFFFD';
    } else if (c === 0 || (c >= 0xdc00 && c <= 0xdfff)) out += '\uFFFD';
    else out += s[i];
  }
  return out;
}

/** The values a row keeps in `originals` because its columns could not hold them. */
export interface Originals {
  key?: string;
  customer?: string;
  event?: string;
  ck?: string;
  headers?: Record<string, string>;
}

/** An event's text values as the columns hold them, and `originals` (JSON text) when any had to be replaced. */
export interface StoredText {
  key: string;
  customer: string | null;
  event: string;
  ck: string | null;
  /** JSON text for the jsonb column. */
  headers: string;
  lastError: string | null;
  originals: string | null;
}

// JSON.stringify writes \u escapes only for control characters and lone surrogates; jsonb refuses \u0000 and lone
// surrogate escapes, and takes every other control character.
const JSONB_REFUSES = /\\u(0000|d[89a-f])/i;

export function storedText(
  key: string,
  customer: string | null,
  event: string,
  ck: string | null,
  headers: Record<string, string>,
  lastError: string | null,
): StoredText {
  let originals: Originals | null = null;
  const keep = <K extends keyof Originals>(name: K, value: Originals[K]) => {
    originals ??= {};
    originals[name] = value;
  };
  const col = (name: 'key' | 'customer' | 'event' | 'ck', value: string) => {
    if (fitsAsIs(value)) return value;
    keep(name, value);
    return indexed(value);
  };
  let json = JSON.stringify(headers);
  if (json.includes('\\u') && JSONB_REFUSES.test(json)) {
    keep('headers', headers);
    json = '{}';
  }
  return {
    key: col('key', key),
    customer: customer === null ? null : col('customer', customer),
    event: col('event', event),
    ck: ck === null ? null : col('ck', ck),
    headers: json,
    lastError: plainText(lastError),
    originals: originals === null ? null : JSON.stringify(originals),
  };
}

/** Reads a row's `originals` column. */
export function readOriginals(value: unknown): Originals | null {
  if (value === null || value === undefined) return null;
  return JSON.parse(String(value)) as Originals;
}

// ---- SHA-256, synchronous, so mapping a value never makes a caller wait (or reorders a batch) ----

/** UTF-8, except that a lone surrogate is encoded as its own three bytes (WTF-8): different strings, different bytes. */
function wtf8(s: string): Uint8Array {
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const next = s.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
        i++;
      }
    }
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

const K = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
  0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
  0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
  0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
  0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
  0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
  0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
  0xc67178f2,
]);

/** SHA-256 (FIPS 180-4) of `data`. */
export function sha256(data: Uint8Array): Uint8Array {
  const bitLength = data.length * 8;
  const padded = new Uint8Array(((data.length + 9 + 63) >> 6) << 6);
  padded.set(data);
  padded[data.length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(bitLength / 0x100000000));
  view.setUint32(padded.length - 4, bitLength >>> 0);
  const h = new Uint32Array([
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
  ]);
  const w = new Uint32Array(64);
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + i * 4);
    for (let i = 16; i < 64; i++) {
      const a = w[i - 15] as number;
      const b = w[i - 2] as number;
      const s0 = ((a >>> 7) | (a << 25)) ^ ((a >>> 18) | (a << 14)) ^ (a >>> 3);
      const s1 = ((b >>> 17) | (b << 15)) ^ ((b >>> 19) | (b << 13)) ^ (b >>> 10);
      w[i] = ((w[i - 16] as number) + s0 + (w[i - 7] as number) + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = h as unknown as number[];
    for (let i = 0; i < 64; i++) {
      const e1 = ((e! >>> 6) | (e! << 26)) ^ ((e! >>> 11) | (e! << 21)) ^ ((e! >>> 25) | (e! << 7));
      const t1 = (hh! + e1 + ((e! & f!) ^ (~e! & g!)) + (K[i] as number) + (w[i] as number)) >>> 0;
      const a0 = ((a! >>> 2) | (a! << 30)) ^ ((a! >>> 13) | (a! << 19)) ^ ((a! >>> 22) | (a! << 10));
      const t2 = (a0 + ((a! & b!) ^ (a! & c!) ^ (b! & c!))) >>> 0;
      hh = g;
      g = f;
      f = e;
      e = (d! + t1) >>> 0;
      d = c;
      c = b;
      b = a;
      a = (t1 + t2) >>> 0;
    }
    h[0] = (h[0] as number) + a!;
    h[1] = (h[1] as number) + b!;
    h[2] = (h[2] as number) + c!;
    h[3] = (h[3] as number) + d!;
    h[4] = (h[4] as number) + e!;
    h[5] = (h[5] as number) + f!;
    h[6] = (h[6] as number) + g!;
    h[7] = (h[7] as number) + hh!;
  }
  const out = new Uint8Array(32);
  const outView = new DataView(out.buffer);
  for (let i = 0; i < 8; i++) outView.setUint32(i * 4, h[i] as number);
  return out;
}

function toHex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}
