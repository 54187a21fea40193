/** @jsxRuntime automatic */
/** @jsxImportSource hono/jsx */
// The console's pages, rendered on the server with Hono's JSX. They take plain data (routes.ts reads the store) and
// hold no script: every action is a form, so the console works without JavaScript and under a CSP that forbids it.
import type { Child } from 'hono/jsx';
import { html } from 'hono/html';
import { EVENT_NAMES } from '../intake/events.ts';
import type { EventRecord, EventStatus, StatusCounts } from '../stores/store.ts';
import { ActivityChart } from './chart.tsx';
import { type EventsPage, type Filters, type Matching, type Overview, filterParams, formatUtcInput } from './data.ts';
import { count, duration, iso, plural, utc } from './format.ts';
import { maskHeaders, maskPayload, scrubText } from './mask.ts';

/** What every page of a logged-in operator knows. */
export interface Ctx {
  base: string;
  /** The session's CSRF token, sent back by every form that changes something. */
  csrf: string;
  now: number;
}

type Nav = 'overview' | 'events' | null;

const doc = (node: Child) => html`<!doctype html>${node}`;

function Layout(props: { base: string; title: string; nav?: Nav; csrf?: string; children?: Child }) {
  const link = (href: string, label: string, key: Nav) => (
    <li>
      <a href={href} aria-current={props.nav === key ? 'page' : undefined}>
        {label}
      </a>
    </li>
  );
  return (
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="referrer" content="no-referrer" />
        <title>{`${props.title} · Lava webhooks`}</title>
        <link rel="stylesheet" href={`${props.base}/assets/admin.css`} />
        <link rel="icon" type="image/svg+xml" href={`${props.base}/assets/favicon.svg`} />
      </head>
      <body>
        <a class="skip" href="#main">
          Skip to content
        </a>
        <header class="top">
          <span class="brand">Lava webhooks</span>
          {props.csrf !== undefined ? (
            <>
              <nav aria-label="Console">
                <ul>
                  {link(props.base, 'Overview', 'overview')}
                  {link(`${props.base}/events`, 'Events', 'events')}
                </ul>
              </nav>
              <form method="post" action={`${props.base}/logout`}>
                <input type="hidden" name="_csrf" value={props.csrf} />
                <button type="submit">Log out</button>
              </form>
            </>
          ) : null}
        </header>
        <main id="main">{props.children}</main>
      </body>
    </html>
  );
}

const StatusBadge = (props: { status: EventStatus }) => (
  <span class={`status status-${props.status}`}>{props.status}</span>
);

/** A time in UTC; `bare` leaves out the zone where a column heading says it. */
const Time = (props: { ms: number | null; bare?: boolean }) =>
  props.ms === null ? (
    <span class="muted">—</span>
  ) : (
    <time datetime={iso(props.ms)}>{props.bare ? utc(props.ms).slice(0, -4) : utc(props.ms)}</time>
  );

/** The record's seq links to its page: a short id that carries nothing personal (a key may). */
const eventHref = (base: string, seq: number) => `${base}/events/${seq}`;

function Problems(props: { problems: string[] }) {
  if (props.problems.length === 0) return null;
  return (
    <div class="problem" role="alert">
      <p>Some filters were ignored:</p>
      <ul>
        {props.problems.map((p) => (
          <li>{p}</li>
        ))}
      </ul>
    </div>
  );
}

const Notice = (props: { text: string | null }) =>
  props.text ? (
    <div class="notice" role="status">
      {props.text}
    </div>
  ) : null;

// ---- Login ----

export function loginPage(props: { base: string; next: string; error?: string; retryAfter?: number }) {
  return doc(
    <Layout base={props.base} title="Log in">
      <div class="card login">
        <h1>Log in</h1>
        {props.error ? (
          <p class="problem" role="alert">
            {props.error}
          </p>
        ) : null}
        <form method="post" action={`${props.base}/login`}>
          <input type="hidden" name="next" value={props.next} />
          <label for="token">Admin token</label>
          <input id="token" name="token" type="password" autocomplete="current-password" required autofocus />
          <button class="primary" type="submit">
            Log in
          </button>
        </form>
        <p class="muted">The token is LAVA_WEBHOOK_ADMIN_TOKEN (the adminToken option).</p>
      </div>
    </Layout>,
  );
}

// ---- Overview ----

function Counts(props: { base: string; counts: StatusCounts }) {
  const items: Array<[EventStatus, string]> = [
    ['pending', 'Pending'],
    ['retrying', 'Retrying'],
    ['dead', 'Dead letters'],
    ['done', 'Done'],
  ];
  return (
    <ul class="counts" aria-label="Events by status">
      {items.map(([status, label]) => (
        <li>
          <a href={`${props.base}/events?status=${status}`}>
            <span class="n">{count(props.counts[status])}</span>
            <StatusBadge status={status} /> <span class="muted">{label}</span>
          </a>
        </li>
      ))}
    </ul>
  );
}

function EventTable(props: { base: string; records: EventRecord[]; caption: string }) {
  return (
    <div class="table-wrap">
      <table class="records">
        <caption class="skip">{props.caption}</caption>
        <thead>
          <tr>
            <th scope="col">Seq</th>
            <th scope="col">Received (UTC)</th>
            <th scope="col">Event</th>
            <th scope="col">Customer</th>
            <th scope="col">Status</th>
            <th scope="col">Attempts</th>
            <th scope="col">Finished (UTC)</th>
          </tr>
        </thead>
        <tbody>
          {props.records.map((r) => (
            <tr>
              <td data-label="Seq">
                <a href={eventHref(props.base, r.seq)}>#{r.seq}</a>
              </td>
              <td data-label="Received">
                <Time ms={r.receivedAt} bare />
              </td>
              <td data-label="Event" class="mono">
                {r.event}
              </td>
              <td data-label="Customer" class="mono">
                {r.customerId === null ? <span class="muted">—</span> : scrubText(r.customerId)}
              </td>
              <td data-label="Status">
                <StatusBadge status={r.status} />
                {r.tombstone ? <span class="muted"> (tombstone)</span> : null}
              </td>
              <td data-label="Attempts">{r.attempts}</td>
              <td data-label="Finished">
                <Time ms={r.finishedAt} bare />
              </td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function overviewPage(ctx: Ctx, o: Overview) {
  const oldest = o.oldestOpen;
  return doc(
    <Layout base={ctx.base} title="Overview" nav="overview" csrf={ctx.csrf}>
      <h1>Overview</h1>
      <Counts base={ctx.base} counts={o.counts} />
      <section class="card" aria-labelledby="activity">
        <h2 id="activity">Last hour</h2>
        <ActivityChart activity={o.activity} />
      </section>
      <section class="card" aria-labelledby="waiting">
        <h2 id="waiting">Waiting</h2>
        {oldest ? (
          <p>
            The oldest event waiting to run has waited <strong>{duration(ctx.now - oldest.receivedAt)}</strong>:{' '}
            <a href={eventHref(ctx.base, oldest.seq)}>
              #{oldest.seq} {oldest.event}
            </a>{' '}
            (<StatusBadge status={oldest.status} />, {plural(oldest.attempts, 'attempt')}).
          </p>
        ) : (
          <p>Nothing is waiting to run.</p>
        )}
      </section>
      <section class="card" aria-labelledby="dead">
        <h2 id="dead">Dead letters needing attention</h2>
        {o.counts.dead === 0 ? (
          <p>No dead letters.</p>
        ) : (
          <>
            <p>
              {plural(o.counts.dead, 'dead letter')}: events given up on, kept until requeued or purged.
              {o.dead.length < o.counts.dead ? ` The newest ${o.dead.length}:` : ''}
            </p>
            <EventTable base={ctx.base} records={o.dead} caption="Newest dead letters" />
            <div class="actions">
              <a class="button" href={`${ctx.base}/events?status=dead`}>
                All dead letters
              </a>
              <a class="button" href={`${ctx.base}/requeue`}>
                Requeue dead letters…
              </a>
            </div>
          </>
        )}
      </section>
    </Layout>,
  );
}

// ---- Events ----

function FilterForm(props: { base: string; f: Filters; limit: number; defaultLimit: number }) {
  const f = props.f;
  return (
    <form class="filters card" method="get" action={`${props.base}/events`} aria-label="Filter events">
      <div>
        <label for="f-status">Status</label>
        <select id="f-status" name="status">
          <option value="" selected={f.status === null}>
            Any
          </option>
          {(['pending', 'retrying', 'done', 'dead'] as const).map((s) => (
            <option value={s} selected={f.status === s}>
              {s}
            </option>
          ))}
        </select>
      </div>
      <div>
        <label for="f-event">Event</label>
        <input id="f-event" name="event" list="event-names" value={f.event ?? ''} autocomplete="off" />
        <datalist id="event-names">
          {EVENT_NAMES.map((name) => (
            <option value={name} />
          ))}
        </datalist>
      </div>
      <div>
        <label for="f-customer">Customer id</label>
        <input id="f-customer" name="customer" value={f.customer ?? ''} autocomplete="off" />
      </div>
      <div>
        <label for="f-since">Received since (UTC)</label>
        <input
          id="f-since"
          name="since"
          type="datetime-local"
          step="1"
          value={f.from === null ? '' : formatUtcInput(f.from)}
        />
      </div>
      <div>
        <label for="f-until">Received until (UTC)</label>
        <input
          id="f-until"
          name="until"
          type="datetime-local"
          step="1"
          value={f.until === null ? '' : formatUtcInput(f.until)}
        />
      </div>
      {props.limit !== props.defaultLimit ? <input type="hidden" name="limit" value={String(props.limit)} /> : null}
      <div class="actions">
        <button class="primary" type="submit">
          Filter
        </button>
        <a href={`${props.base}/events`}>Clear</a>
      </div>
    </form>
  );
}

export function eventsPage(
  ctx: Ctx,
  props: {
    f: Filters;
    problems: string[];
    page: EventsPage;
    limit: number;
    defaultLimit: number;
    notice: string | null;
  },
) {
  const params = filterParams(props.f);
  if (props.limit !== props.defaultLimit) params.set('limit', String(props.limit));
  const at = (key: 'before' | 'after', seq: number) => {
    const p = new URLSearchParams(params);
    p.set(key, String(seq));
    return `${ctx.base}/events?${p}`;
  };
  const { page } = props;
  const canRequeue = props.f.status === null || props.f.status === 'dead';
  const requeueParams = filterParams({ ...props.f, status: null }).toString();
  return doc(
    <Layout base={ctx.base} title="Events" nav="events" csrf={ctx.csrf}>
      <h1>Events</h1>
      <Notice text={props.notice} />
      <Problems problems={props.problems} />
      <FilterForm base={ctx.base} f={props.f} limit={props.limit} defaultLimit={props.defaultLimit} />
      {page.records.length === 0 ? (
        <p>No events match.</p>
      ) : (
        <EventTable base={ctx.base} records={page.records} caption="Events, newest first" />
      )}
      <nav class="pager" aria-label="Pages">
        <span>{page.newer !== null ? <a href={at('after', page.newer)}>← Newer</a> : null}</span>
        <span>{page.older !== null ? <a href={at('before', page.older)}>Older →</a> : null}</span>
      </nav>
      {canRequeue ? (
        <div class="actions">
          <a class="button" href={`${ctx.base}/requeue${requeueParams ? `?${requeueParams}` : ''}`}>
            Requeue the dead letters these filters match…
          </a>
        </div>
      ) : null}
    </Layout>,
  );
}

// ---- One event ----

const POLICY: Record<string, string> = {
  once: 'once: runs once per customer, ever; its key outlives retention as a tombstone',
  dedupe: 'dedupe: a delivery with the same key is a duplicate while this record is kept',
  signal: 'signal: identical copies that arrive while it waits are counted into it, not run again',
};

function stateOf(r: EventRecord, now: number): string {
  if (r.tombstone) return 'Tombstone: only its key is kept, so a replay stays a duplicate; the payload is gone.';
  if ((r.status === 'pending' || r.status === 'retrying') && r.leaseUntil !== null && r.leaseUntil > now) {
    return `Running now (lease held until ${utc(r.leaseUntil)}).`;
  }
  if (r.status === 'pending') return 'Waiting for its turn to run.';
  if (r.status === 'retrying') return `Waiting to be retried at ${utc(r.nextAttemptAt)}.`;
  if (r.status === 'dead') return 'Given up on: requeue it once the cause is fixed.';
  return 'Done: the handler succeeded.';
}

export function eventPage(ctx: Ctx, r: EventRecord, notice: string | null) {
  const payload = r.tombstone ? null : maskPayload(r.body);
  const headers = maskHeaders(r.headers);
  const open = r.status === 'pending' || r.status === 'retrying';
  return doc(
    <Layout base={ctx.base} title={`Event #${r.seq}`} nav="events" csrf={ctx.csrf}>
      <p>
        <a href={`${ctx.base}/events`}>← Events</a>
      </p>
      <h1>
        Event #{r.seq} <StatusBadge status={r.status} />
      </h1>
      <Notice text={notice} />
      <p>{stateOf(r, ctx.now)}</p>
      <section class="card" aria-labelledby="facts">
        <h2 id="facts">Record</h2>
        <dl class="facts">
          <dt>Event</dt>
          <dd class="mono">{r.event}</dd>
          <dt>Key</dt>
          <dd class="mono">{scrubText(r.key)}</dd>
          <dt>Customer</dt>
          <dd class="mono">{r.customerId === null ? '—' : scrubText(r.customerId)}</dd>
          <dt>Identity policy</dt>
          <dd>{POLICY[r.policy] ?? r.policy}</dd>
          <dt>Deliveries</dt>
          <dd>
            {r.policy === 'signal'
              ? `This run stands for ${plural(r.deliveries, 'delivery', 'deliveries')} (identical copies coalesced while it waited).`
              : count(r.deliveries)}
          </dd>
          <dt>Tombstone</dt>
          <dd>{r.tombstone ? 'yes' : 'no'}</dd>
          <dt>Attempts</dt>
          <dd>{r.attempts}</dd>
          <dt>Outcome</dt>
          <dd>
            {r.status === 'done'
              ? 'succeeded'
              : r.status === 'dead'
                ? 'dead letter'
                : open
                  ? 'not finished yet'
                  : r.status}
          </dd>
          <dt>Last error</dt>
          <dd class="mono">{r.lastError === null ? '—' : scrubText(r.lastError)}</dd>
        </dl>
      </section>
      <section class="card" aria-labelledby="timings">
        <h2 id="timings">Timings</h2>
        <dl class="facts">
          <dt>Received</dt>
          <dd>
            <Time ms={r.receivedAt} /> <span class="muted">({duration(ctx.now - r.receivedAt)} ago)</span>
          </dd>
          {open ? (
            <>
              <dt>Next attempt</dt>
              <dd>
                <Time ms={r.nextAttemptAt} />
              </dd>
            </>
          ) : null}
          {r.leaseUntil !== null ? (
            <>
              <dt>Lease until</dt>
              <dd>
                <Time ms={r.leaseUntil} />
              </dd>
            </>
          ) : null}
          <dt>Finished</dt>
          <dd>
            <Time ms={r.finishedAt} />
            {r.finishedAt !== null ? (
              <span class="muted"> ({duration(r.finishedAt - r.receivedAt)} after it arrived)</span>
            ) : null}
          </dd>
        </dl>
      </section>
      {r.tombstone ? null : (
        <div class="actions">
          <form method="post" action={`${ctx.base}/events/${r.seq}/requeue`}>
            <input type="hidden" name="_csrf" value={ctx.csrf} />
            <button class={r.status === 'dead' ? 'primary' : ''} type="submit">
              Requeue this event
            </button>
          </form>
          {r.status === 'dead' ? null : (
            <span class="muted">
              {r.status === 'done'
                ? 'It succeeded: requeueing runs its handler again.'
                : 'Requeueing restarts it from attempt 0.'}
            </span>
          )}
        </div>
      )}
      <section class="card" aria-labelledby="payload">
        <h2 id="payload">Payload</h2>
        {payload === null ? (
          <p class="muted">No payload is kept for a tombstone.</p>
        ) : payload.json === null ? (
          <p class="muted">
            {plural(payload.bytes, 'byte')} that are not JSON: not shown, since nothing in them could be masked. The
            CLI’s events show --reveal prints them.
          </p>
        ) : (
          <>
            <p class="muted">Fields named like secrets or personal data are masked.</p>
            {/* Focusable, so a keyboard can scroll a wide payload sideways. */}
            <section class="scroll" aria-label="Payload, masked" tabindex={0}>
              <pre class="mono">{payload.json}</pre>
            </section>
          </>
        )}
      </section>
      <section class="card" aria-labelledby="headers">
        <h2 id="headers">Headers</h2>
        {headers.length === 0 ? (
          <p class="muted">None kept.</p>
        ) : (
          <dl class="facts">
            {headers.map(([name, value]) => (
              <>
                <dt class="mono">{name}</dt>
                <dd class="mono">{value}</dd>
              </>
            ))}
          </dl>
        )}
      </section>
    </Layout>,
  );
}

// ---- Requeue what a filter matches ----

export function confirmRequeuePage(ctx: Ctx, props: { f: Filters; problems: string[]; matching: Matching }) {
  const f = props.f;
  const m = props.matching;
  const described = [
    f.event ? `event ${f.event}` : null,
    f.customer ? `customer ${scrubText(f.customer)}` : null,
    f.from !== null ? `received since ${utc(f.from)}` : null,
    f.until !== null ? `received until ${utc(f.until)}` : null,
  ].filter((x) => x !== null);
  const back = filterParams({ ...f, status: 'dead' });
  return doc(
    <Layout base={ctx.base} title="Requeue dead letters" nav="events" csrf={ctx.csrf}>
      <h1>Requeue dead letters</h1>
      <Problems problems={props.problems} />
      <p>Filter: {described.length === 0 ? 'every dead letter' : described.join(', ')}.</p>
      {m.count === 0 ? (
        <>
          <p>No dead letters match: there is nothing to requeue.</p>
          <p>
            <a href={`${ctx.base}/events?${back}`}>Back to the events</a>
          </p>
        </>
      ) : (
        <>
          <p>
            <strong>
              {m.capped
                ? `More than ${count(m.count)} dead letters match.`
                : `${plural(m.count, 'dead letter')} ${m.count === 1 ? 'matches' : 'match'}.`}
            </strong>{' '}
            Requeueing puts them back to pending with their attempts reset; the worker runs them again, in arrival order
            per customer. Dead letters that arrive before you confirm are requeued too if they match.
          </p>
          {m.sample.length < m.count ? <p class="muted">The oldest {m.sample.length}:</p> : null}
          <EventTable base={ctx.base} records={m.sample} caption="Some of the matching dead letters" />
          <form method="post" action={`${ctx.base}/requeue`} class="actions">
            <input type="hidden" name="_csrf" value={ctx.csrf} />
            {f.event ? <input type="hidden" name="event" value={f.event} /> : null}
            {f.customer ? <input type="hidden" name="customer" value={f.customer} /> : null}
            {f.from !== null ? <input type="hidden" name="since" value={formatUtcInput(f.from)} /> : null}
            {f.until !== null ? <input type="hidden" name="until" value={formatUtcInput(f.until)} /> : null}
            <button class="danger" type="submit">
              {m.capped ? 'Requeue all of them' : `Requeue ${plural(m.count, 'dead letter')}`}
            </button>
            <a href={`${ctx.base}/events?${back}`}>Cancel</a>
          </form>
        </>
      )}
    </Layout>,
  );
}

// ---- Errors ----

export function messagePage(props: {
  base: string;
  title: string;
  message: string;
  csrf?: string;
  loginNext?: string;
}) {
  return doc(
    <Layout base={props.base} title={props.title} csrf={props.csrf}>
      <h1>{props.title}</h1>
      <p>{props.message}</p>
      {props.loginNext !== undefined ? (
        <p>
          <a href={`${props.base}/login?next=${encodeURIComponent(props.loginNext)}`}>Log in</a>
        </p>
      ) : (
        <p>
          <a href={props.base}>Back to the overview</a>
        </p>
      )}
    </Layout>,
  );
}
