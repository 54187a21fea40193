/**
 * The operators' web console: an overview (counts, the last hour, the oldest waiting event, dead letters), the events
 * list with filters and paging, one event with its masked payload, and requeueing. Server-rendered with Hono's JSX, no
 * script, on every runtime the app runs on. Mounted by createApp under `/admin` only when an admin token is set.
 *
 * @module
 */
// The pages (views.tsx, chart.tsx) are imported on first use: nothing of them loads where the console is off, and
// what imports the receiver (the CLI, under type stripping that cannot read JSX) never reaches a .tsx file.
import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { secureHeaders } from 'hono/secure-headers';
import { ConfigError } from '../errors.ts';
import { type Logger, rateLimited, silentLogger } from '../observability/log.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { Store } from '../stores/store.ts';
import { type Session, adminKeys, sameOrigin, servedOverHttps } from './auth.ts';
import {
  eventsPage,
  matchingDeadLetters,
  overview,
  parseFilters,
  recordBySeq,
  requeueMatching,
  filterParams,
} from './data.ts';
import { duration, plural } from './format.ts';
import { checkAdminToken } from './token.ts';
import { type LoginLimitOptions, connectionAddress, loginLimiter } from './login-limit.ts';
import { FAVICON, STYLESHEET } from './style.ts';

export interface AdminDeps {
  store: Store;
  /** The operators' token (LAVA_WEBHOOK_ADMIN_TOKEN): at least 16 characters. Logging in asks for it. */
  token: string;
  metrics?: Metrics;
  logger?: Logger;
  /** The clock. Default Date.now. */
  now?: () => number;
  /** Where the routes are mounted: links, redirects and the cookie's Path use it. Default `/admin`. */
  basePath?: string;
  /** How long a login lasts, in ms. Default 8 hours. */
  sessionMs?: number;
  /** Failed logins allowed per client before it gets 429. Default 5 per 15 minutes. */
  loginLimit?: LoginLimitOptions;
  /**
   * Who a login attempt comes from, for its limit. Default: the connection's address where the runtime gives it
   * (see `connectionAddress`). Behind a proxy, return the client address your proxy sets.
   */
  clientKey?: (c: Context) => string;
  /** Records the overview's chart reads at most. Default 5,000. */
  chartLimit?: number;
  /** Dead letters the requeue confirmation counts at most before saying "more than". Default 10,000. */
  countLimit?: number;
}

export const DEFAULT_ADMIN_PATH = '/admin';
const COOKIE = 'lava_admin_session';
const DEFAULT_PAGE = 50;
const MAX_PAGE = 200;
const FORM_BYTES = 16 * 1024;

type Env = { Variables: { session: Session; csrf: string } };
type Views = typeof import('./views.tsx');

const positiveInt = (v: string | undefined): number | undefined => {
  if (v === undefined || !/^\d{1,15}$/.test(v)) return undefined;
  const n = Number(v);
  return n > 0 ? n : undefined;
};

/** The admin console as a Hono app, to mount with `app.route(basePath, adminRoutes(deps))`. */
export function adminRoutes(deps: AdminDeps): Hono<Env> {
  checkAdminToken(deps.token);
  const base = deps.basePath ?? DEFAULT_ADMIN_PATH;
  if (!/^(\/[A-Za-z0-9._~-]+)+$/.test(base)) {
    throw new ConfigError(
      `admin basePath must be a path such as /admin (no trailing slash), got ${JSON.stringify(base)}`,
    );
  }
  const { store } = deps;
  const now = deps.now ?? Date.now;
  const logger = deps.logger ?? silentLogger;
  // Anyone can make a login fail: those lines are rate-limited like the receiver's other unauthenticated ones.
  const refusalLog = rateLimited(logger, { perSecond: 5 });
  const sessionMs = deps.sessionMs ?? 8 * 3_600_000;
  const chartLimit = deps.chartLimit ?? 5_000;
  const countLimit = deps.countLimit ?? 10_000;
  const keys = adminKeys(deps.token);
  const limiter = loginLimiter(deps.loginLimit);
  const clientKey = deps.clientKey ?? connectionAddress;
  const logins = deps.metrics?.counter('lava_webhooks_admin_logins_total', 'Admin console logins, by outcome.');
  // Sessions logged out before they expired (the cookie alone would stay valid until then); this instance only.
  const loggedOut = new Map<string, number>();
  let viewsModule: Promise<Views> | undefined;
  const views = () => {
    viewsModule ??= import('./views.tsx');
    return viewsModule;
  };

  const app = new Hono<Env>();
  const ctx = (c: Context<Env>) => ({ base, csrf: c.get('csrf'), now: now() });
  const cookieOptions = (c: Context) =>
    ({ path: base, httpOnly: true, sameSite: 'Strict', secure: servedOverHttps(c.req.raw) }) as const;
  /** Where to go after logging in: a page of the console, never another site. */
  const safeNext = (next: unknown) =>
    typeof next === 'string' &&
    (next === base || next.startsWith(`${base}/`) || next.startsWith(`${base}?`)) &&
    !/[\r\n\\]/.test(next)
      ? next
      : base;
  const message = async (
    c: Context,
    status: 400 | 401 | 403 | 404 | 500 | 503,
    title: string,
    text: string,
    csrf?: string,
  ) => c.html((await views()).messagePage({ base, title, message: text, csrf }), status);

  app.use(
    '*',
    secureHeaders({
      contentSecurityPolicy: {
        defaultSrc: ["'none'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'"],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
      },
      crossOriginResourcePolicy: 'same-origin',
      crossOriginOpenerPolicy: 'same-origin',
      referrerPolicy: 'no-referrer',
      xFrameOptions: 'DENY',
    }),
  );
  app.use('*', async (c, next) => {
    await next();
    // Pages show what the store holds: no cache (shared or not) keeps a copy.
    if (!c.res.headers.has('cache-control')) c.header('cache-control', 'no-store');
    c.header('vary', 'Cookie');
  });
  app.use('*', bodyLimit({ maxSize: FORM_BYTES, onError: (c) => c.text('request body too large', 413) }));

  app.get('/assets/admin.css', (c) =>
    c.body(STYLESHEET, 200, { 'content-type': 'text/css; charset=utf-8', 'cache-control': 'private, max-age=3600' }),
  );

  app.get('/assets/favicon.svg', (c) =>
    c.body(FAVICON, 200, { 'content-type': 'image/svg+xml', 'cache-control': 'private, max-age=86400' }),
  );

  app.get('/login', async (c) => {
    const next = safeNext(c.req.query('next'));
    if (await currentSession(c)) return c.redirect(next, 303);
    return c.html((await views()).loginPage({ base, next }));
  });

  app.post('/login', async (c) => {
    if (!sameOrigin(c.req.raw)) return message(c, 403, 'Refused', 'A login must come from this site’s own login page.');
    const client = clientKey(c);
    const wait = limiter.retryAfter(client, now());
    const v = await views();
    if (wait > 0) {
      logins?.inc({ outcome: 'rate_limited' });
      refusalLog.warn('admin login refused', { reason: 'too many failed logins' });
      const error = `Too many failed logins: try again in ${duration(wait * 1000)}.`;
      return c.html(v.loginPage({ base, next: base, error }), 429, { 'retry-after': String(wait) });
    }
    const form = await c.req.parseBody();
    const next = safeNext(form.next);
    if (!(await keys.tokenMatches(typeof form.token === 'string' ? form.token : ''))) {
      limiter.fail(client, now());
      logins?.inc({ outcome: 'wrong_token' });
      refusalLog.warn('admin login refused', { reason: 'wrong token' });
      return c.html(v.loginPage({ base, next, error: 'That is not the admin token.' }), 401);
    }
    limiter.succeed(client);
    const { cookie } = await keys.issue(now(), sessionMs);
    setCookie(c, COOKIE, cookie, { ...cookieOptions(c), maxAge: Math.floor(sessionMs / 1000) });
    logins?.inc({ outcome: 'ok' });
    logger.info('admin login', {});
    return c.redirect(next, 303);
  });

  async function currentSession(c: Context): Promise<Session | null> {
    const session = await keys.verify(getCookie(c, COOKIE), now());
    return session && !loggedOut.has(session.id) ? session : null;
  }

  // Everything below needs a session: a page asked for without one sends the browser to log in; anything else is 401.
  const requireSession: MiddlewareHandler<Env> = async (c, next) => {
    const session = await currentSession(c);
    if (!session) {
      const url = new URL(c.req.url);
      if (c.req.method === 'GET' || c.req.method === 'HEAD') {
        return c.redirect(`${base}/login?next=${encodeURIComponent(url.pathname + url.search)}`, 303);
      }
      const v = await views();
      return c.html(
        v.messagePage({ base, title: 'Not logged in', message: 'Your session ended: log in again.', loginNext: base }),
        401,
      );
    }
    c.set('session', session);
    c.set('csrf', await keys.csrfToken(session));
    await next();
  };

  // Every state-changing request: from a page of this origin, and carrying the session's CSRF token.
  const requireSameSite: MiddlewareHandler<Env> = async (c, next) => {
    if (c.req.method === 'GET' || c.req.method === 'HEAD') return next();
    const form = sameOrigin(c.req.raw) ? await c.req.parseBody() : null;
    const token = typeof form?._csrf === 'string' ? form._csrf : '';
    if (form === null || !(await keys.csrfMatches(c.get('session'), token))) {
      refusalLog.warn('admin request refused', {
        reason: form === null ? 'cross-site' : 'missing or wrong CSRF token',
      });
      return message(
        c,
        403,
        'Refused',
        'This request did not come from a page of this console: nothing was changed.',
        c.get('csrf'),
      );
    }
    await next();
  };

  app.use('*', requireSession, requireSameSite);

  app.get('/', async (c) => {
    const data = await overview(store, now(), chartLimit);
    return c.html((await views()).overviewPage(ctx(c), data));
  });

  app.get('/events', async (c) => {
    const q = c.req.query();
    const { filters, problems } = parseFilters(q);
    const limit = Math.min(MAX_PAGE, Math.max(10, positiveInt(q.limit) ?? DEFAULT_PAGE));
    const page = await eventsPage(
      store,
      filters,
      { before: positiveInt(q.before), after: positiveInt(q.after) },
      limit,
    );
    const requeued = q.requeued !== undefined && /^\d+$/.test(q.requeued) ? Number(q.requeued) : null;
    const notice = requeued === null ? null : `Requeued ${plural(requeued, 'dead letter')}.`;
    return c.html(
      (await views()).eventsPage(ctx(c), { f: filters, problems, page, limit, defaultLimit: DEFAULT_PAGE, notice }),
    );
  });

  app.get('/events/:seq{[0-9]{1,15}}', async (c) => {
    const record = await recordBySeq(store, Number(c.req.param('seq')));
    if (!record)
      return message(
        c,
        404,
        'No such event',
        'There is no event with this number (it may have been purged).',
        c.get('csrf'),
      );
    const r = c.req.query('requeued');
    const notice =
      r === '1'
        ? 'Requeued: it waits for its turn to run again.'
        : r === '0'
          ? 'Not requeued: it is a tombstone or it is gone.'
          : null;
    return c.html((await views()).eventPage(ctx(c), record, notice));
  });

  app.post('/events/:seq{[0-9]{1,15}}/requeue', async (c) => {
    const seq = Number(c.req.param('seq'));
    const record = await recordBySeq(store, seq);
    if (!record)
      return message(
        c,
        404,
        'No such event',
        'There is no event with this number (it may have been purged).',
        c.get('csrf'),
      );
    const ok = await store.requeue(record.key, now());
    logger.info('admin: requeued an event', { seq, event: record.event, from: record.status, requeued: ok });
    return c.redirect(`${base}/events/${seq}?requeued=${ok ? 1 : 0}`, 303);
  });

  app.get('/requeue', async (c) => {
    const { filters, problems } = parseFilters({ ...c.req.query(), status: undefined });
    const matching = await matchingDeadLetters(store, filters, countLimit);
    return c.html((await views()).confirmRequeuePage(ctx(c), { f: filters, problems, matching }));
  });

  app.post('/requeue', async (c) => {
    const form = await c.req.parseBody();
    const text = (name: string) => (typeof form[name] === 'string' ? (form[name] as string) : undefined);
    const { filters, problems } = parseFilters({
      event: text('event'),
      customer: text('customer'),
      since: text('since'),
      until: text('until'),
    });
    // A filter that does not parse would requeue more than the operator confirmed: refuse instead.
    if (problems.length > 0) return message(c, 400, 'Nothing requeued', problems.join('; '), c.get('csrf'));
    const n = await requeueMatching(store, filters, now());
    logger.info('admin: requeued dead letters', {
      requeued: n,
      event: filters.event,
      customer_id: filters.customer,
      from: filters.from,
      until: filters.until,
    });
    const params = filterParams(filters);
    params.set('requeued', String(n));
    return c.redirect(`${base}/events?${params}`, 303);
  });

  app.post('/logout', (c) => {
    const session = c.get('session');
    const t = now();
    for (const [id, expiresAt] of loggedOut) if (expiresAt <= t) loggedOut.delete(id);
    // Bounded: past it the oldest go (their cookies are then valid again until they expire, as without this list).
    if (loggedOut.size >= 10_000) loggedOut.delete(loggedOut.keys().next().value as string);
    loggedOut.set(session.id, session.expiresAt);
    deleteCookie(c, COOKIE, cookieOptions(c));
    logger.info('admin logout', {});
    return c.redirect(`${base}/login`, 303);
  });

  // Last: a trailing slash is forgiven; any other unknown page of the console answers a page, not the app's JSON 404.
  app.get('*', async (c): Promise<Response> => {
    const url = new URL(c.req.url);
    if (url.pathname.endsWith('/') && url.pathname.length > 1)
      return c.redirect(url.pathname.replace(/\/+$/, '') + url.search, 301);
    return message(c, 404, 'Not found', 'There is no such page in the console.', c.get('csrf'));
  });

  app.onError(async (error, c) => {
    const unavailable = (error as Error).name === 'StoreUnavailableError';
    logger.error('admin console: request failed', { error });
    return message(
      c,
      unavailable ? 503 : 500,
      unavailable ? 'Store unavailable' : 'Something went wrong',
      unavailable
        ? 'The store is not answering right now: try again in a moment.'
        : 'The request failed; the log says why.',
    );
  });

  return app;
}
