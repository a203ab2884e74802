/**
 * The ops endpoint's live status page (`/` to a browser) and its feed (`/events`, server-sent
 * events), on a real runtime with `loopback` instances: the page in a real headless browser
 * (playwright-core driving Debian's `chromium`, found on the PATH: a machine without it fails
 * here, it does not skip), the feed with `fetch` and a stream reader, and the feed's slow-client
 * rule on a sink that never drains (fake timers, a runtime stand-in). Liveness bounds only: the
 * DOM is polled until it shows what the runtime reports.
 *
 * `STATUS_PAGE_SCREENSHOT=<file>` also saves a screenshot of the page (docs/status-page.png is
 * made by scripts/status-page-screenshot.mjs, with more traffic).
 */
import { execFileSync } from 'node:child_process';
import { pino } from 'pino';
import { chromium, type Browser, type Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { MAX_PENDING_BYTES, STALL_LIMIT_MS, StatusFeed, StreamKeys, statusPageHtml, type EventSink, type StatusFrame } from '../src/ops-page.js';
import { serveOps, type OpsServer, type ServeOpsOptions } from '../src/ops.js';
import { Runtime } from '../src/runtime/runtime.js';
import { activeResources, resourceGrowth, waitFor } from './helpers/fixtures.js';

const silent = pino({ level: 'silent' });
const heartbeat = { intervalMs: 250, maxMissed: 8 };
const OPS_TOKEN = 'ops-token-Page7Xw';
const SECRET = 'sekret-page-credential-0815';
/** The page's update interval here; the page must show a change within 2 s of the runtime. */
const INTERVAL_MS = 200;
const SHOWN_WITHIN_MS = 2_000;

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

async function runtime(): Promise<Runtime> {
  const rt = await Runtime.start({ logger: silent, heartbeat, restart: { recoverAfterMs: Infinity } });
  cleanups.push(() => rt.stop());
  return rt;
}

async function loopback(rt: Runtime, id: string, settings: Record<string, unknown> = {}, name = id): Promise<void> {
  const waitFor = settings['fatalConnect'] === true ? undefined : ({ waitFor: 'connected', timeoutMs: 20_000 } as const);
  await rt.startInstance({ id, name, channelType: 'loopback', channel: 'loopback', credentials: { token: SECRET }, settings }, waitFor);
  if (waitFor === undefined) await rt.whenStatus(id, 'error', { timeoutMs: 20_000 });
}

async function serve(rt: Runtime, options: ServeOpsOptions = {}): Promise<OpsServer> {
  const server = await serveOps(rt, { pageIntervalMs: INTERVAL_MS, ...options });
  cleanups.push(() => server.close());
  return server;
}

/** An open `/events` stream: its response, and the frames read from it one by one. */
async function openEvents(url: string, headers: Record<string, string> = {}): Promise<{ res: Response; next: () => Promise<StatusFrame>; cancel: () => Promise<void> }> {
  const controller = new AbortController();
  const res = await fetch(url, { headers: { connection: 'close', ...headers }, signal: controller.signal });
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buffer = '';
  const next = async (): Promise<StatusFrame> => {
    for (;;) {
      let end: number;
      while ((end = buffer.indexOf('\n\n')) !== -1) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = event.split('\n').filter((l) => l.startsWith('data: '));
        if (data.length > 0) return JSON.parse(data.map((l) => l.slice(6)).join('\n')) as StatusFrame;
      }
      const chunk = await reader.read();
      if (chunk.done) throw new Error('the stream ended');
      buffer += decoder.decode(chunk.value, { stream: true });
    }
  };
  const cancel = async (): Promise<void> => {
    controller.abort();
    await reader.cancel().catch(() => undefined);
  };
  cleanups.push(cancel);
  return { res, next, cancel };
}

/** Debian's chromium, from the PATH. */
function chromiumPath(): string {
  try {
    return execFileSync('which', ['chromium'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('chromium is not installed (apt-get install chromium; .ci/run installs it)');
  }
}

/*
 * The page's globals, as far as the functions evaluated in it use them (the project compiles
 * without the DOM library; these names resolve in the browser).
 */
interface PageElement {
  readonly textContent: string | null;
  readonly className: string;
  readonly firstChild: PageElement | null;
  readonly dataset: Record<string, string | undefined>;
  querySelector(selector: string): PageElement | null;
}
declare const document: { querySelectorAll(selector: string): Iterable<PageElement> & { readonly length: number } };
declare const window: { readonly __xss?: number };

interface Row {
  id: string;
  name: string;
  status: string;
  statusClass: string;
  rate: string;
  queue: string;
  pressure: string;
  restarts: string;
  lastError: string;
}

/** The instance table as the page shows it (text only). */
function rows(page: Page): Promise<Row[]> {
  return page.evaluate(() =>
    [...document.querySelectorAll('#rows tr')].map((tr) => {
      const text = (sel: string): string => tr.querySelector(sel)?.firstChild?.textContent ?? '';
      return {
        id: tr.dataset['id'] ?? '',
        name: tr.querySelector('td.id .sub')?.textContent ?? '',
        status: text('td.status'),
        statusClass: tr.querySelector('td.status')?.className ?? '',
        rate: text('td.rate'),
        queue: text('td.queue'),
        pressure: text('td.pressure'),
        restarts: text('td.restarts'),
        lastError: text('td.error'),
      };
    }),
  );
}

/** Polls the page until `check` holds for its rows (a liveness bound, no timing assert). */
async function until(page: Page, check: (rows: Row[]) => boolean, timeoutMs: number): Promise<Row[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const last = await rows(page);
    if (check(last)) return last;
    if (Date.now() > deadline) throw new Error(`the page did not show it within ${timeoutMs} ms; it shows ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('the status page in a browser', { timeout: 30_000 }, () => {
  let browser: Browser;
  beforeAll(async () => {
    browser = await chromium.launch({ executablePath: chromiumPath(), args: ['--no-sandbox'] });
  });
  afterAll(async () => {
    await browser?.close();
  });

  it('shows the instances, then an instance stopped and one in error, as text', async () => {
    const rt = await runtime();
    await Promise.all(['alpha', 'beta', 'gamma'].map((id) => loopback(rt, id)));
    // Markup in an id and a name is shown as text, never parsed.
    const odd = `odd-<i>"&'`;
    await loopback(rt, odd, {}, '<img src=x onerror="window.__xss=1">');
    const server = await serve(rt);
    const page = await browser.newPage();
    cleanups.push(() => page.close());
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });

    const nav = await page.goto(`${server.url}/`);
    expect(nav?.status()).toBe(200);
    expect(nav?.headers()['content-type']).toBe('text/html; charset=utf-8');
    expect(nav?.headers()['content-security-policy']).toContain("default-src 'none'");
    expect(await page.title()).toBe('threadvisor status');

    let shown = await until(page, (r) => r.length === 4 && r.every((x) => x.status === 'connected'), 10_000);
    expect(shown.map((r) => r.id)).toEqual(['alpha', 'beta', 'gamma', odd]);
    expect(shown.every((r) => r.statusClass === 'status st-connected' && r.queue === '0' && r.pressure === 'normal' && r.restarts === '0' && r.lastError === '')).toBe(true);
    expect(shown[3]!.name).toBe('<img src=x onerror="window.__xss=1">');
    expect(await page.evaluate(() => document.querySelectorAll('#rows img, #rows i').length)).toBe(0);
    expect(await page.evaluate(() => window.__xss)).toBeUndefined();
    expect(await page.textContent('#t-instances')).toBe('4');
    expect(await page.textContent('#conn')).toBe('live');

    // Traffic shows as a rate once two frames have counted it.
    await Promise.all(Array.from({ length: 20 }, (_, i) => rt.send('alpha', { text: `m${i}` })));
    await until(page, (r) => r.some((x) => x.id === 'alpha' && Number(x.rate) > 0), SHOWN_WITHIN_MS * 2);
    await page.waitForSelector('#chart polyline.rate', { state: 'attached', timeout: 10_000 }); // two rates: a line

    // Stopped: gone from the table.
    await rt.stopInstance('beta');
    shown = await until(page, (r) => !r.some((x) => x.id === 'beta'), SHOWN_WITHIN_MS);
    expect(shown.map((r) => r.id)).toEqual(['alpha', 'gamma', odd]);

    // In error: its status and last error.
    await loopback(rt, 'delta', { fatalConnect: true });
    shown = await until(page, (r) => r.some((x) => x.id === 'delta' && x.status === 'error'), SHOWN_WITHIN_MS);
    const delta = shown.find((r) => r.id === 'delta')!;
    expect(delta.statusClass).toBe('status st-error');
    expect(delta.lastError).not.toBe('');
    expect(delta.lastError).toBe((await rt.health('delta')).lastError);
    expect(await page.textContent('#t-error')).toBe('1');
    expect(await page.content()).not.toContain(SECRET);

    const screenshot = process.env['STATUS_PAGE_SCREENSHOT'];
    if (screenshot) await page.screenshot({ path: screenshot, fullPage: true });
    expect(errors).toEqual([]);
  });

  it('with a token: the page needs the bearer, and reads /events with a key of its own, not the token', async () => {
    const rt = await runtime();
    await loopback(rt, 'guarded');
    const server = await serve(rt, { token: OPS_TOKEN });
    const page = await browser.newPage();
    cleanups.push(() => page.close());

    const denied = await page.goto(`${server.url}/`);
    expect(denied?.status()).toBe(401);
    expect(await page.content()).not.toContain(OPS_TOKEN);

    // The bearer token on the page's own request only (as a proxy in front would add it).
    await page.route(`${server.url}/`, (route) => route.continue({ headers: { ...route.request().headers(), authorization: `Bearer ${OPS_TOKEN}` } }));
    const sent: Array<string | undefined> = [];
    page.on('request', (r) => {
      if (r.url() === `${server.url}/events`) sent.push(r.headers()['authorization']);
    });
    const ok = await page.goto(`${server.url}/`);
    expect(ok?.status()).toBe(200);
    expect(await ok?.text()).not.toContain(OPS_TOKEN);
    await until(page, (r) => r.length === 1 && r[0]!.id === 'guarded' && r[0]!.status === 'connected', 10_000);
    expect(sent.length).toBeGreaterThan(0);
    expect(sent.every((h) => h !== undefined && /^Bearer [A-Za-z0-9_-]{43}$/.test(h) && !h.includes(OPS_TOKEN))).toBe(true);
  });
});

describe('/events', { timeout: 30_000 }, () => {
  it('answers text/event-stream with a JSON frame every pageIntervalMs', async () => {
    const rt = await runtime();
    await Promise.all([loopback(rt, 'one'), loopback(rt, 'two')]);
    const server = await serve(rt);
    const events = await openEvents(`${server.url}/events`);
    expect(events.res.status).toBe(200);
    expect(events.res.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(events.res.headers.get('cache-control')).toBe('no-store');

    const first = await events.next();
    expect(first).toMatchObject({ intervalMs: INTERVAL_MS, runtime: 'running', totals: { instances: 2, byStatus: { connected: 2 }, msgsPerSec: null, restarts: 0 } });
    expect(first.instances.map((i) => i.id)).toEqual(['one', 'two']);
    expect(first.instances[0]).toEqual({
      id: 'one',
      name: 'one',
      channelType: 'loopback',
      status: 'connected',
      msgsPerSec: null,
      queueDepth: 0,
      inFlight: 0,
      pressure: 'normal',
      restartCount: 0,
      lastError: null,
    });
    await Promise.all(Array.from({ length: 10 }, (_, i) => rt.send('one', { text: `m${i}` })));
    let frame = await events.next();
    const deadline = Date.now() + 10_000;
    while ((frame.totals.outboundPerSec ?? 0) === 0 && Date.now() < deadline) frame = await events.next();
    expect(frame.at).toBeGreaterThan(first.at);
    expect(frame.instances.find((i) => i.id === 'one')!.msgsPerSec).toBeGreaterThan(0);
    expect(frame.totals.msgsPerSec).toBeGreaterThanOrEqual(frame.totals.outboundPerSec!);
    expect(frame.instances.find((i) => i.id === 'two')!.msgsPerSec).toBe(0);

    const head = await fetch(`${server.url}/events`, { method: 'HEAD', headers: { connection: 'close' } });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-type')).toBe('text/event-stream; charset=utf-8');
    expect(await head.text()).toBe('');
    // Asked for JSON (not HTML), `/` still lists the routes.
    const index = await fetch(`${server.url}/`, { headers: { connection: 'close', accept: 'application/json' } });
    expect(await index.json()).toMatchObject({ routes: expect.arrayContaining(['/events']) });
  });

  it('with a token: 401 without it (a query parameter is no token), 200 with it or with a page key, which opens nothing else', async () => {
    const rt = await runtime();
    await loopback(rt, 'guarded');
    const server = await serve(rt, { token: OPS_TOKEN });
    for (const [url, authorization] of [
      [`${server.url}/events`, undefined],
      [`${server.url}/events?token=${OPS_TOKEN}`, undefined],
      [`${server.url}/events`, `Bearer ${OPS_TOKEN}x`],
      [`${server.url}/events`, 'Bearer not-a-key'],
    ] as const) {
      const r = await fetch(url, { headers: { connection: 'close', ...(authorization ? { authorization } : {}) } });
      expect(r.status, `${url} ${authorization}`).toBe(401);
      expect(r.headers.get('www-authenticate')).toBe('Bearer realm="threadvisor"');
      expect(await r.text()).not.toContain(OPS_TOKEN);
    }
    const html = await fetch(`${server.url}/`, { headers: { connection: 'close', accept: 'text/html' } });
    expect(html.status).toBe(401);
    await html.text();

    const withToken = await openEvents(`${server.url}/events`, { authorization: `Bearer ${OPS_TOKEN}` });
    expect(withToken.res.status).toBe(200);
    expect((await withToken.next()).instances.map((i) => i.id)).toEqual(['guarded']);
    await withToken.cancel();

    const pageRes = await fetch(`${server.url}/`, { headers: { connection: 'close', accept: 'text/html,application/xhtml+xml;q=0.9', authorization: `Bearer ${OPS_TOKEN}` } });
    expect(pageRes.status).toBe(200);
    expect(pageRes.headers.get('vary')).toBe('Accept');
    const body = await pageRes.text();
    expect(body).not.toContain(OPS_TOKEN);
    const key = /<meta name="threadvisor-stream-key" content="([A-Za-z0-9_-]+)">/.exec(body)?.[1];
    expect(key).toBeDefined();
    const withKey = await openEvents(`${server.url}/events`, { authorization: `Bearer ${key}` });
    expect(withKey.res.status).toBe(200);
    expect((await withKey.next()).totals.instances).toBe(1);
    for (const path of ['/', '/instances', '/readyz', '/metrics']) {
      const r = await fetch(`${server.url}${path}`, { headers: { connection: 'close', authorization: `Bearer ${key}` } });
      expect(r.status, path).toBe(401);
      await r.text();
    }
  });

  it('close() ends the open streams and leaves no socket or timer behind', async () => {
    const rt = await runtime();
    await loopback(rt, 'res');
    const before = activeResources();
    const server = await serveOps(rt, { pageIntervalMs: INTERVAL_MS });
    const streams = await Promise.all([openEvents(`${server.url}/events`), openEvents(`${server.url}/events`)]);
    await Promise.all(streams.map((s) => s.next()));
    await server.close();
    for (const s of streams) await expect(s.next()).rejects.toThrow();
    await waitFor(() => Object.keys(resourceGrowth(before, activeResources())).length === 0, 5_000).catch(() => undefined);
    expect(resourceGrowth(before, activeResources())).toEqual({});
  });

  it('rejects a bad pageIntervalMs, naming it', async () => {
    const rt = await runtime();
    for (const pageIntervalMs of [0, 99, 60_001, 1.5, Number.NaN, '1000']) {
      await expect(serveOps(rt, { pageIntervalMs } as ServeOpsOptions), String(pageIntervalMs)).rejects.toMatchObject({ code: 'invalid_config', issues: [{ path: 'pageIntervalMs' }] });
    }
  });
});

/** A sink that records what is written; `pending` is what it claims to still hold unsent. */
function sink(pending = 0): EventSink & { written: string[]; destroyed: boolean; pending: number; close: () => void } {
  let onClose: (() => void) | undefined;
  const s = {
    written: [] as string[],
    destroyed: false,
    pending,
    get writableLength() {
      return s.pending;
    },
    write(chunk: string) {
      s.written.push(chunk);
      return true;
    },
    destroy() {
      s.destroyed = true;
      s.close();
    },
    once(_event: 'close', listener: () => void) {
      onClose = listener;
    },
    close() {
      const fn = onClose;
      onClose = undefined;
      fn?.();
    },
  };
  return s;
}

describe('StatusFeed and StreamKeys', { timeout: 10_000 }, () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('a client that does not drain skips frames, then is disconnected; the timer runs only while a client is there', async () => {
    vi.useFakeTimers();
    const rt = { state: 'running', listHealth: () => Promise.resolve([]), stats: () => ({ inboundDelivered: 0 }) } as unknown as Runtime;
    const feed = new StatusFeed(rt, 1_000);
    const fast = sink();
    const slow = sink(MAX_PENDING_BYTES + 1);
    feed.attach(fast);
    feed.attach(slow);
    await vi.advanceTimersByTimeAsync(5_000);
    const frames = (s: { written: string[] }): number => s.written.filter((w) => w.startsWith('data: ')).length;
    expect(frames(fast)).toBeGreaterThanOrEqual(5);
    expect(frames(slow)).toBeLessThanOrEqual(1); // at most the frame it joined on
    expect(slow.written[0]).toBe('retry: 1000\n\n');
    expect(feed.dropped).toBeGreaterThanOrEqual(4);
    // It catches up: frames again.
    slow.pending = 0;
    await vi.advanceTimersByTimeAsync(2_000);
    expect(frames(slow)).toBeGreaterThanOrEqual(2);
    // Stalled for good: disconnected after STALL_LIMIT_MS; the other one goes on.
    slow.pending = 10 * MAX_PENDING_BYTES;
    await vi.advanceTimersByTimeAsync(STALL_LIMIT_MS + 2_000);
    expect(slow.destroyed).toBe(true);
    expect(fast.destroyed).toBe(false);
    expect(feed.clients).toBe(1);
    expect(vi.getTimerCount()).toBe(1);
    fast.close(); // the last client gone: no timer
    expect(vi.getTimerCount()).toBe(0);
    feed.attach(fast);
    expect(vi.getTimerCount()).toBe(1);
    feed.close();
    expect(fast.destroyed).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
    const late = sink();
    feed.attach(late);
    expect(late.destroyed).toBe(true);
  });

  it('stream keys are random, valid for their lifetime only, and bounded in number', () => {
    const keys = new StreamKeys();
    const now = Date.now();
    const a = keys.mint(now);
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(keys.mint(now)).not.toBe(a);
    expect(keys.open('nope', now)).toBeUndefined();
    const release = keys.open(a, now)!;
    expect(release).toBeTypeOf('function');
    // Open: valid however long; closed: for the TTL from then.
    expect(keys.open(a, now + 24 * 3_600_000)).toBeTypeOf('function');
    release();
    release();
    for (let i = 0; i < 1_500; i++) keys.mint(now);
    expect(keys.size).toBeLessThanOrEqual(1_000);
    // The key with a stream still open survived the eviction of the unused ones.
    expect(keys.open(a, now)).toBeTypeOf('function');
    expect(() => statusPageHtml('"><script>')).toThrow();
  });
});
