// The memory all request bodies being read may hold together. Each body is bounded on its own (bodyLimit), but a
// few hundred concurrent uploads of the largest size would still hold that many times the limit at once: the
// budget turns that into a quick 503 instead of a process the kernel kills.

/** Default total for bodies in flight: 256 bodies of the default 256 KiB limit. */
export const DEFAULT_BODY_MEMORY_LIMIT = 64 * 1024 * 1024;

/**
 * A byte counter shared by every request of one receiver. Synchronous on purpose: taking and giving back bytes is
 * two additions on the ack path, with no promise and no allocation.
 */
export class BodyBudget {
  readonly limit: number;
  /** Bytes held by bodies being read or not yet recorded. */
  used = 0;
  constructor(limit: number) {
    this.limit = limit;
  }
  /** Takes `n` bytes; false, and nothing taken, when that would pass the limit. */
  take(n: number): boolean {
    if (this.used + n > this.limit) return false;
    this.used += n;
    return true;
  }
  /** Adds `n` bytes whatever the limit (a body that turned out longer than it declared). */
  force(n: number): void {
    this.used += n;
  }
  give(n: number): void {
    this.used -= n;
  }
}
