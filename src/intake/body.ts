// Bounded read of a request body: stops at the limit without buffering the rest, whatever Content-Length claims.

export class PayloadTooLargeError extends Error {
  override name = 'PayloadTooLargeError';
}

export class BodyTimeoutError extends Error {
  override name = 'BodyTimeoutError';
}

export interface ReadBodyOptions {
  /** Largest body accepted, in bytes. */
  limit: number;
  /** The whole body must arrive within this many ms (slow or stalled senders are cut off). */
  timeoutMs: number;
}

const EMPTY = new Uint8Array(0);

/** Reads the body of `request` into one buffer, or throws PayloadTooLargeError / BodyTimeoutError. */
export async function readBody(request: Request, { limit, timeoutMs }: ReadBodyOptions): Promise<Uint8Array> {
  const declared = request.headers.get('content-length');
  if (declared !== null && /^\d+$/.test(declared.trim()) && Number(declared) > limit) {
    throw new PayloadTooLargeError(`content-length ${declared} exceeds the limit of ${limit} bytes`);
  }
  const stream = request.body;
  if (!stream) return EMPTY;
  const reader = stream.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new BodyTimeoutError(`body not received within ${timeoutMs} ms (${total} bytes so far)`)),
      timeoutMs,
    );
  });
  try {
    for (;;) {
      const { done, value } = await Promise.race([reader.read(), timeout]);
      if (done) break;
      if (!value) continue;
      total += value.byteLength;
      if (total > limit) throw new PayloadTooLargeError(`body exceeds the limit of ${limit} bytes`);
      chunks.push(value);
    }
  } catch (error) {
    reader.cancel().catch(() => {});
    throw error;
  } finally {
    clearTimeout(timer);
  }
  if (chunks.length === 1) return chunks[0] as Uint8Array;
  const out = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}
