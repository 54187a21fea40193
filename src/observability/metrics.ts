// Counters, gauges and a histogram, rendered in the Prometheus text exposition format for GET /metrics.
import { EVENT_NAMES } from '../intake/events.ts';

export type DeliveryOutcome =
  | 'accepted'
  | 'duplicate'
  | 'coalesced'
  | 'invalid_signature'
  | 'invalid_payload'
  | 'too_large'
  | 'unsupported_media_type'
  | 'body_timeout'
  | 'overloaded'
  | 'store_unavailable';

/** `unrecorded`: the handler succeeded but the store refused its completion every time: it runs again later. */
export type RunOutcome = 'ok' | 'retry' | 'dead' | 'unrecorded';

const ACK_BUCKETS_MS = [0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000];

/**
 * Event names other than the known ones that get a label of their own; the rest are counted as `event="other"`.
 * Names come from the payloads of signed deliveries: a sender inventing a new name per delivery would otherwise grow
 * the registry, and every scrape, without bound.
 */
export const MAX_OTHER_EVENT_LABELS = 20;
/** The label that event names past MAX_OTHER_EVENT_LABELS are folded into. */
export const OTHER_EVENT = 'other';

function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function labels(pairs: Record<string, string>): string {
  const parts = Object.entries(pairs).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** A counter family keyed by its label values. */
class Counter {
  readonly values: Map<string, { labels: Record<string, string>; value: number }> = new Map();
  inc(l: Record<string, string>, by = 1): void {
    const id = labels(l);
    const entry = this.values.get(id);
    if (entry) entry.value += by;
    else this.values.set(id, { labels: l, value: by });
  }
  /** inc() with the label id already rendered (hot paths render it once and keep it). */
  incId(id: string, l: Record<string, string>, by = 1): void {
    const entry = this.values.get(id);
    if (entry) entry.value += by;
    else this.values.set(id, { labels: l, value: by });
  }
  get(l: Record<string, string>): number {
    return this.values.get(labels(l))?.value ?? 0;
  }
}

/** A histogram without labels: cumulative bucket counts, sum and count. */
class Histogram {
  readonly bounds: readonly number[];
  readonly buckets: number[];
  sum = 0;
  count = 0;
  constructor(bounds: readonly number[]) {
    this.bounds = bounds;
    this.buckets = bounds.map(() => 0);
  }
  observe(value: number): void {
    this.count++;
    this.sum += value;
    for (let i = 0; i < this.bounds.length; i++) {
      if (value <= (this.bounds[i] as number)) this.buckets[i] = (this.buckets[i] as number) + 1;
    }
  }
}

function renderHistogram(out: string[], name: string, help: string, h: Histogram): void {
  out.push(`# HELP ${name} ${help}`);
  out.push(`# TYPE ${name} histogram`);
  h.bounds.forEach((le, i) => {
    out.push(`${name}_bucket{le="${le}"} ${h.buckets[i]}`);
  });
  out.push(`${name}_bucket{le="+Inf"} ${h.count}`);
  out.push(`${name}_sum ${h.sum}`);
  out.push(`${name}_count ${h.count}`);
}

export class Metrics {
  readonly deliveries = new Counter();
  readonly handlerRuns = new Counter();
  readonly extra: Map<string, { help: string; type: 'counter' | 'gauge'; counter: Counter }> = new Map();
  readonly histograms: Map<string, { help: string; histogram: Histogram }> = new Map();
  /** Time from request to acknowledgement, in milliseconds. */
  readonly ack = new Histogram(ACK_BUCKETS_MS);

  // Rendered label ids by outcome (and event), so counting a delivery or a run builds no string.
  readonly #deliveryIds = new Map<string, string>();
  readonly #runIds = new Map<string, string>();
  /** Event names with a label of their own: the known ones, then the first MAX_OTHER_EVENT_LABELS others. */
  readonly #eventLabels = new Set<string>(EVENT_NAMES);
  readonly #maxEventLabels = EVENT_NAMES.length + MAX_OTHER_EVENT_LABELS;
  /** Bytes held by request bodies in flight and their limit, read at scrape time (the receiver sets it). */
  bodyMemory: { readonly used: number; readonly limit: number } | null = null;

  delivery(outcome: DeliveryOutcome): void {
    let id = this.#deliveryIds.get(outcome);
    if (id === undefined) {
      id = labels({ outcome });
      this.#deliveryIds.set(outcome, id);
    }
    this.deliveries.incId(id, { outcome });
  }

  handlerRun(event: string, outcome: RunOutcome): void {
    let label = event;
    if (!this.#eventLabels.has(event)) {
      if (this.#eventLabels.size < this.#maxEventLabels) this.#eventLabels.add(event);
      else label = OTHER_EVENT;
    }
    const k = `${outcome}\u0000${label}`;
    let id = this.#runIds.get(k);
    if (id === undefined) {
      id = labels({ event: label, outcome });
      this.#runIds.set(k, id);
    }
    this.handlerRuns.incId(id, { event: label, outcome });
  }

  ackLatency(ms: number): void {
    this.ack.observe(ms);
  }

  /** A named counter family for add-ons (relay, …). */
  counter(name: string, help: string): Counter {
    let entry = this.extra.get(name);
    if (!entry) {
      entry = { help, type: 'counter', counter: new Counter() };
      this.extra.set(name, entry);
    }
    return entry.counter;
  }

  /** A named histogram for add-ons (relay latency, …); `bounds` are the bucket upper limits, ascending. */
  histogram(name: string, help: string, bounds: readonly number[]): Histogram {
    let entry = this.histograms.get(name);
    if (!entry) {
      entry = { help, histogram: new Histogram(bounds) };
      this.histograms.set(name, entry);
    }
    return entry.histogram;
  }

  /** Prometheus text format. Gauges come from the store at scrape time. */
  render(gauges: { pending: number; retrying: number; dead: number; done: number } | null): string {
    const out: string[] = [];
    out.push('# HELP lava_webhooks_deliveries_total Webhook deliveries received, by outcome.');
    out.push('# TYPE lava_webhooks_deliveries_total counter');
    for (const o of [
      'accepted',
      'duplicate',
      'coalesced',
      'invalid_signature',
      'invalid_payload',
      'too_large',
      'unsupported_media_type',
      'body_timeout',
      'overloaded',
      'store_unavailable',
    ] as const) {
      out.push(`lava_webhooks_deliveries_total${labels({ outcome: o })} ${this.deliveries.get({ outcome: o })}`);
    }
    out.push('# HELP lava_webhooks_handler_runs_total Handler runs, by event and outcome.');
    out.push('# TYPE lava_webhooks_handler_runs_total counter');
    for (const { labels: l, value } of this.handlerRuns.values.values()) {
      out.push(`lava_webhooks_handler_runs_total${labels(l)} ${value}`);
    }
    if (gauges) {
      out.push('# HELP lava_webhooks_pending Recorded events not yet processed (pending or waiting for a retry).');
      out.push('# TYPE lava_webhooks_pending gauge');
      out.push(`lava_webhooks_pending ${gauges.pending + gauges.retrying}`);
      out.push('# HELP lava_webhooks_retrying Events waiting for a retry.');
      out.push('# TYPE lava_webhooks_retrying gauge');
      out.push(`lava_webhooks_retrying ${gauges.retrying}`);
      out.push('# HELP lava_webhooks_dead_letters Events given up on, kept until requeued or purged.');
      out.push('# TYPE lava_webhooks_dead_letters gauge');
      out.push(`lava_webhooks_dead_letters ${gauges.dead}`);
    }
    if (this.bodyMemory) {
      out.push('# HELP lava_webhooks_body_memory_bytes Bytes held by request bodies being read or not yet answered.');
      out.push('# TYPE lava_webhooks_body_memory_bytes gauge');
      out.push(`lava_webhooks_body_memory_bytes ${this.bodyMemory.used}`);
      out.push('# HELP lava_webhooks_body_memory_limit_bytes Past this, deliveries answer 503 (outcome="overloaded").');
      out.push('# TYPE lava_webhooks_body_memory_limit_bytes gauge');
      out.push(`lava_webhooks_body_memory_limit_bytes ${this.bodyMemory.limit}`);
    }
    renderHistogram(
      out,
      'lava_webhooks_ack_latency_ms',
      'Time from request to acknowledgement, in milliseconds.',
      this.ack,
    );
    for (const [name, { help, type, counter }] of this.extra) {
      out.push(`# HELP ${name} ${help}`);
      out.push(`# TYPE ${name} ${type}`);
      for (const { labels: l, value } of counter.values.values()) out.push(`${name}${labels(l)} ${value}`);
    }
    for (const [name, { help, histogram }] of this.histograms) renderHistogram(out, name, help, histogram);
    return `${out.join('\n')}\n`;
  }
}
