// End-of-turn write batching (group commit): writes made during one turn of the event loop are queued and sent
// together once it ends, so they share one transaction, one round trip, one fsync. Each store says how a batch is
// written and what a failed batch means; this file only queues, splits and settles.
//
// Modes of a queued write: queued (waiting for the end of the turn) -> sent (in a batch) -> settled (resolved or
// rejected by the store's `send`). A batch that fails is either failed as a whole (every write in it rejects with the
// same error: nothing of it was kept) or, when `retryAlone` says the failure came from a value in it, sent again one
// write at a time, in order, so only the write that fails alone fails.
import { afterThisTurn } from './store.ts';

/** A queued write and how to answer whoever made it. */
export interface Queued<I, R> {
  item: I;
  /** When it was queued (epoch ms): a store that waits (for a lock) bounds the wait from there. */
  at: number;
  resolve(result: R): void;
  reject(error: unknown): void;
}

export interface GroupCommitOptions<I, R> {
  /** Writes per batch; a longer queue goes as several batches. Default: all of it in one. */
  max?: number;
  /**
   * Writes one batch and settles each of its writes. A throw (or a rejection) means the batch failed and none of its
   * writes were settled. Synchronous stores write synchronously: then the whole batch is settled before flush returns.
   */
  send(batch: Queued<I, R>[]): void | Promise<void>;
  /** Whether a batch that failed with `error` is worth sending again one write at a time. Default: never. */
  retryAlone?(error: unknown): boolean;
  /** The error a write of a failed batch rejects with. Default: the batch's own error. */
  failure?(error: unknown, item: I): unknown;
  /**
   * One batch at a time: while a `send` that returned a promise is pending (a store waiting for a lock), what is
   * queued meanwhile waits and goes as the next batch once it settled, so batches are written in the order they were
   * made. Default false: batches may be in flight together.
   */
  serial?: boolean;
}

export interface GroupCommit<I, R> {
  /** Queues a write for the end of this turn; settles when its batch was written (or failed). */
  add(item: I): Promise<R>;
  /** Sends everything queued now, without waiting for the end of the turn (close() uses it). */
  flush(): void;
  /** Resolves when every batch sent so far has settled. */
  idle(): Promise<void>;
}

export function groupCommit<I, R>(options: GroupCommitOptions<I, R>): GroupCommit<I, R> {
  const { send, max = Number.POSITIVE_INFINITY } = options;
  const failure = options.failure ?? ((error: unknown) => error);
  let queue: Queued<I, R>[] = [];
  let scheduled = false;
  // `serial`: a batch is in flight, so flush() leaves the queue for when it settles.
  let inFlight = false;
  const sending = new Set<Promise<void>>();

  const rejectAll = (batch: Queued<I, R>[], error: unknown) => {
    for (const q of batch) q.reject(failure(error, q.item));
  };
  const sendAlone = async (batch: Queued<I, R>[]) => {
    for (const q of batch) {
      try {
        await send([q]);
      } catch (error) {
        q.reject(failure(error, q.item));
      }
    }
  };
  const failed = (batch: Queued<I, R>[], error: unknown): Promise<void> | undefined => {
    if (batch.length > 1 && options.retryAlone?.(error)) return sendAlone(batch);
    rejectAll(batch, error);
    return undefined;
  };
  const track = (p: Promise<void>) => {
    sending.add(p);
    void p.finally(() => sending.delete(p));
  };

  const flush = () => {
    scheduled = false;
    while (queue.length > 0 && !inFlight) {
      let batch: Queued<I, R>[];
      if (queue.length <= max) {
        batch = queue;
        queue = [];
      } else {
        batch = queue.splice(0, max);
      }
      let sent: void | Promise<void>;
      try {
        sent = send(batch);
      } catch (error) {
        const again = failed(batch, error);
        if (again) track(again);
        continue;
      }
      if (!sent) continue;
      const settled = sent.then(undefined, (error: unknown) => failed(batch, error));
      if (!options.serial) {
        track(settled);
        continue;
      }
      inFlight = true;
      track(
        settled.finally(() => {
          inFlight = false;
          flush();
        }),
      );
    }
  };

  return {
    add(item) {
      return new Promise<R>((resolve, reject) => {
        queue.push({ item, at: Date.now(), resolve, reject });
        if (!scheduled) {
          scheduled = true;
          afterThisTurn(flush);
        }
      });
    },
    flush,
    async idle() {
      await Promise.allSettled([...sending]);
    },
  };
}
