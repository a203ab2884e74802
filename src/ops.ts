/**
 * The operator's endpoint of a {@link Runtime}, on `node:http` only:
 * `import { serveOps, stopOnSignals } from 'threadvisor/ops'`.
 *
 * | route | answer |
 * |---|---|
 * | `/healthz` | 200 `{ ok: true }` while the event loop answers (liveness; never needs the token) |
 * | `/readyz` | 200 once at least `readyFraction` of the instances are `connected` (0 instances: 200), else 503 listing those that are not; 503 once the runtime is stopping |
 * | `/metrics` | Prometheus text (prom-client's content type) |
 * | `/instances` | JSON array of `rt.listHealth()` |
 * | `/instances/:id` | JSON `rt.health(id)`; unknown id 404 |
 * | `/` | to a browser (`Accept: text/html`), the live status page; else JSON `{ routes }` |
 * | `/events` | server-sent events: a JSON status frame every `pageIntervalMs` (the page's feed) |
 *
 * prom-client stays an optional peer dependency: this module never imports it statically. Without
 * a `registry` option, `serveOps` imports `threadvisor/prometheus` (and so prom-client) when it
 * starts; when prom-client is not installed, `/metrics` answers 501 and every other route works.
 *
 * @packageDocumentation
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { z } from 'zod';
import { InvalidConfigError, ThreadvisorError } from './errors.js';
import type { InstanceManager } from './manager/manager.js';
import { STATUS_PAGE_CSP, StatusFeed, StreamKeys, statusPageHtml } from './ops-page.js';
import type * as PromClient from 'prom-client';
import type * as Prometheus from './prometheus.js';
import type { Runtime, RuntimeMode } from './runtime/runtime.js';
import { parseConfig } from './validate.js';

export { stopOnSignals } from './signals.js';
export type { StopOnSignalsOptions } from './signals.js';

/** What `/metrics` serves: a prom-client `Registry` (or anything with its `metrics()` and `contentType`). */
export interface OpsMetricsRegistry {
  /** The exposition text. */
  metrics(): Promise<string>;
  /** Its `Content-Type`. */
  readonly contentType: string;
}

/** Options of {@link serveOps}. */
export interface ServeOpsOptions {
  /** TCP port, 0 to 65535. Default 0: a free port, see {@link OpsServer.port}. */
  port?: number;
  /** Address to listen on. Default `127.0.0.1` (this host only); `0.0.0.0` or `::` for every interface. */
  host?: string;
  /**
   * When set, every route but `/healthz` requires `Authorization: Bearer <token>` (else 401).
   * Visible ASCII characters without spaces, at least one.
   */
  token?: string;
  /** Share of the instances (0 to 1) that must be `connected` for `/readyz` to answer 200. Default 1 (all). */
  readyFraction?: number;
  /**
   * The registry `/metrics` serves, as it is (register the metrics yourself with `collectMetrics`).
   * Default: a registry of its own with `collectMetrics(rt, { registry, manager })`, removed by `close()`.
   */
  registry?: OpsMetricsRegistry;
  /** An `InstanceManager` counted by the default registry's metrics. Not with `registry`. */
  manager?: InstanceManager;
  /** How often `/events` sends a status frame (and the status page updates), ms: 100 to 60000. Default 1000. */
  pageIntervalMs?: number;
}

/** A running ops endpoint. */
export interface OpsServer {
  /** Its base URL, `http://<host>:<port>` (an IPv6 host in brackets). */
  readonly url: string;
  /** The port it listens on (the one chosen by the system with `port: 0`). */
  readonly port: number;
  /**
   * Stops listening, ends every open connection (requests in progress are cut off) and removes
   * the default registry's metrics and listeners. Idempotent; `rt.stop()` does not call it.
   */
  close(): Promise<void>;
}

/** The routes, for `/`. */
const ROUTES = ['/healthz', '/readyz', '/metrics', '/instances', '/instances/:id', '/events'] as const;

/** Request limits: a slow or oversized client costs a socket for at most this long. */
const HEADERS_TIMEOUT_MS = 10_000;
const REQUEST_TIMEOUT_MS = 30_000;
const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/** How often those timeouts are checked (node's default, 30 s, would let them run late by that much). */
const CHECK_INTERVAL_MS = 1_000;
/** Request line and headers, in bytes (larger: 431). */
const MAX_HEADER_BYTES = 16 * 1024;


const isRuntime = (v: unknown): v is Runtime => {
  const r = v as Partial<Runtime> | null;
  return typeof r === 'object' && r !== null && typeof r.listInstances === 'function' && typeof r.listHealth === 'function' && typeof r.health === 'function' && typeof r.status === 'function';
};

const optionsSchema = z
  .strictObject({
    port: z.number().int().min(0).max(65_535).optional(),
    host: z.string().min(1).optional(),
    token: z
      .string()
      .min(1)
      .regex(/^[\x21-\x7e]+$/, 'expected visible ASCII characters without spaces')
      .optional(),
    readyFraction: z.number().min(0).max(1).optional(),
    pageIntervalMs: z.number().int().min(100).max(60_000).optional(),
    registry: z
      .custom<OpsMetricsRegistry>((v) => {
        const r = v as Partial<OpsMetricsRegistry> | null;
        return typeof r === 'object' && r !== null && typeof r.metrics === 'function' && typeof r.contentType === 'string';
      }, 'expected a prom-client Registry (metrics() and contentType)')
      .optional(),
    manager: z
      .custom<InstanceManager>((v) => {
        const m = v as Partial<InstanceManager> | null;
        return typeof m === 'object' && m !== null && typeof m.on === 'function' && typeof m.off === 'function' && typeof m.stats === 'function';
      }, 'expected an InstanceManager')
      .optional(),
  })
  .refine((o) => o.registry === undefined || o.manager === undefined, {
    path: ['manager'],
    message: 'only with the default registry (with your own, pass the manager to collectMetrics)',
  });

type Json = object;

/** Where `/metrics` reads from, or why it cannot. */
type Metrics = { registry: OpsMetricsRegistry; stop: () => void } | { unavailable: string };

async function defaultMetrics(rt: Runtime<RuntimeMode>, manager: InstanceManager | undefined): Promise<Metrics> {
  let modules: [typeof Prometheus, typeof PromClient];
  try {
    // Imported here, not at the top: prom-client is an optional peer dependency.
    modules = await Promise.all([import('./prometheus.js'), import('prom-client')]);
  } catch (err) {
    if ((err as NodeJS.ErrnoException | null)?.code === 'ERR_MODULE_NOT_FOUND') {
      return { unavailable: '/metrics needs the optional peer dependency prom-client (npm install prom-client)' };
    }
    throw err;
  }
  const [prometheus, client] = modules;
  const registry = new client.Registry();
  const handle = prometheus.collectMetrics(rt, manager === undefined ? { registry } : { registry, manager });
  return { registry, stop: () => handle.stop() };
}

/** Hashes, so that the comparison takes the same time whatever the lengths. */
const digest = (s: string): Buffer => createHash('sha256').update(s, 'utf8').digest();

/** The credential of an `Authorization: Bearer <credential>` header, or undefined. */
const bearerOf = (header: string | undefined): string | undefined => /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(header ?? '')?.[1];

function bearerChecker(token: string | undefined): (header: string | undefined) => boolean {
  if (token === undefined) return () => true;
  const expected = digest(token);
  return (header) => {
    const presented = bearerOf(header);
    // Compared even when absent or malformed: the time taken says nothing about the token.
    const same = timingSafeEqual(digest(presented ?? ''), expected);
    return same && presented !== undefined;
  };
}

/** Whether a request's `Accept` header asks for HTML (a browser navigating), not JSON. */
function wantsHtml(accept: string | undefined): boolean {
  return accept !== undefined && /(^|,)\s*(text\/html|application\/xhtml\+xml)\s*(;|,|$)/i.test(accept);
}

function send(res: ServerResponse, status: number, body: string, contentType: string, headers: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, {
    'Content-Type': contentType,
    'Content-Length': String(Buffer.byteLength(body)),
    'Cache-Control': 'no-store',
    'X-Content-Type-Options': 'nosniff',
    ...headers,
  });
  res.end(body); // HEAD: node sends the headers only
}

const json = (res: ServerResponse, status: number, body: Json, headers?: Record<string, string>): void =>
  send(res, status, JSON.stringify(body), 'application/json; charset=utf-8', headers);

/** The request's path (without query), or undefined when the target is not a path. */
function pathOf(target: string): string | undefined {
  if (target.startsWith('/')) {
    const q = target.indexOf('?');
    return q === -1 ? target : target.slice(0, q);
  }
  try {
    return new URL(target).pathname; // absolute-form (`GET http://host/path`)
  } catch {
    return undefined;
  }
}

/** True once `rt.stop()` was called. */
function isStopping(rt: Runtime<RuntimeMode>): Promise<boolean> {
  return Promise.resolve(rt.state !== 'running');
}

/** A clientError answered on the raw socket: a status line, a small JSON body, then close. */
function rejectClient(err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : err.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
  const body = JSON.stringify({ error: status === 431 ? 'request_too_large' : status === 408 ? 'request_timeout' : 'bad_request' });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}

/**
 * Serves `rt`'s ops endpoint (routes in the module's table) on `node:http`; resolves once it
 * listens. Only GET and HEAD (else 405); unknown paths 404; with `token`, a missing or wrong
 * bearer token 401 on every route but `/healthz`. Answers carry health snapshots, status maps and
 * metric samples: never a credential. Malformed or oversized requests (a request line and headers
 * over 16 KiB) are answered 400 / 431 and their socket closed; nothing a client sends throws.
 *
 * The server keeps the process alive until {@link OpsServer.close} (the caller's job, also after
 * `rt.stop()`; `stopOnSignals` exits the process anyway). Bad options throw `InvalidConfigError`
 * naming the field; a port in use rejects with the listen error.
 */
export async function serveOps(rt: Runtime<RuntimeMode>, options: ServeOpsOptions = {}): Promise<OpsServer> {
  if (!isRuntime(rt)) throw new InvalidConfigError('serveOps arguments', [{ path: 'runtime', message: 'expected a Runtime' }]);
  const o = parseConfig('serveOps options', optionsSchema, options);
  const host = o.host ?? '127.0.0.1';
  const readyFraction = o.readyFraction ?? 1;
  const authorized = bearerChecker(o.token);
  const feed = new StatusFeed(rt, o.pageIntervalMs ?? 1_000);
  // With a token, a page gets a key of its own for /events (a page cannot put the token in an
  // EventSource request, and a token in a URL would end up in logs and history).
  const streamKeys = o.token === undefined ? undefined : new StreamKeys();
  const unauthorized = (res: ServerResponse): void =>
    json(res, 401, { error: 'unauthorized', message: 'a bearer token is required (Authorization: Bearer <token>)' }, { 'WWW-Authenticate': 'Bearer realm="threadvisor"' });

  const events = (req: IncomingMessage, res: ServerResponse): void => {
    let release: (() => void) | undefined;
    if (!authorized(req.headers.authorization)) {
      const key = bearerOf(req.headers.authorization);
      release = key === undefined ? undefined : streamKeys?.open(key);
      if (release === undefined) {
        unauthorized(res);
        return;
      }
    }
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Content-Type-Options': 'nosniff',
      'X-Accel-Buffering': 'no', // a proxy in front must not hold the frames back
    });
    if (req.method === 'HEAD') {
      release?.();
      res.end();
      return;
    }
    res.once('close', () => release?.());
    feed.attach(res);
  };

  const page = (req: IncomingMessage, res: ServerResponse): void => {
    send(res, 200, statusPageHtml(streamKeys && req.method === 'GET' ? streamKeys.mint() : undefined), 'text/html; charset=utf-8', {
      'Content-Security-Policy': STATUS_PAGE_CSP,
      'X-Frame-Options': 'DENY',
      'Referrer-Policy': 'no-referrer',
      Vary: 'Accept',
    });
  };
  const metrics: Metrics = o.registry ? { registry: o.registry, stop: () => undefined } : await defaultMetrics(rt, o.manager);

  const readyz = async (res: ServerResponse): Promise<void> => {
    if (await isStopping(rt)) {
      json(res, 503, { ready: false, stopping: true });
      return;
    }
    const all = rt.listInstances();
    const notConnected = all.filter((s) => s.status !== 'connected').map((s) => ({ id: s.instanceId, status: s.status }));
    const connected = all.length - notConnected.length;
    const ready = all.length === 0 || connected / all.length >= readyFraction;
    json(res, ready ? 200 : 503, ready ? { ready, connected, total: all.length } : { ready, connected, total: all.length, readyFraction, notConnected });
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    req.resume(); // a body is never read; drained so the connection can be reused
    const method = req.method ?? '';
    if (method !== 'GET' && method !== 'HEAD') {
      json(res, 405, { error: 'method_not_allowed', allow: ['GET', 'HEAD'] }, { Allow: 'GET, HEAD' });
      return;
    }
    const path = pathOf(req.url ?? '');
    if (path === undefined) {
      json(res, 400, { error: 'bad_request' });
      return;
    }
    if (path === '/healthz') {
      json(res, 200, { ok: true });
      return;
    }
    if (path === '/events') {
      events(req, res);
      return;
    }
    if (!authorized(req.headers.authorization)) {
      unauthorized(res);
      return;
    }
    if (path === '/') {
      if (wantsHtml(req.headers.accept)) page(req, res);
      else json(res, 200, { routes: ROUTES }, { Vary: 'Accept' });
    } else if (path === '/readyz') {
      await readyz(res);
    } else if (path === '/metrics') {
      if ('unavailable' in metrics) json(res, 501, { error: 'metrics_unavailable', message: metrics.unavailable });
      else send(res, 200, await metrics.registry.metrics(), metrics.registry.contentType);
    } else if (path === '/instances') {
      json(res, 200, await rt.listHealth());
    } else if (path.startsWith('/instances/') && path.indexOf('/', '/instances/'.length) === -1 && path.length > '/instances/'.length) {
      let id: string;
      try {
        id = decodeURIComponent(path.slice('/instances/'.length));
      } catch {
        json(res, 400, { error: 'bad_request', message: 'malformed percent-encoding in the instance id' });
        return;
      }
      try {
        json(res, 200, await rt.health(id));
      } catch (err) {
        if (err instanceof ThreadvisorError && err.code === 'not_found') json(res, 404, { error: 'not_found', what: 'instance', id });
        else throw err;
      }
    } else {
      json(res, 404, { error: 'not_found', routes: ROUTES });
    }
  };

  const serverOptions = { maxHeaderSize: MAX_HEADER_BYTES, requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: HEADERS_TIMEOUT_MS, connectionsCheckingInterval: CHECK_INTERVAL_MS };
  const server: Server = createServer(serverOptions, (req, res) => {
    res.on('error', () => undefined);
    handle(req, res).catch((err: unknown) => {
      // The runtime stopping under a request is expected; anything else says nothing about itself.
      if (err instanceof ThreadvisorError && err.code === 'stopped') json(res, 503, { error: 'stopped' });
      else json(res, 500, { error: 'internal' });
    });
  });
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  server.on('clientError', rejectClient);

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(o.port ?? 0, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (err) {
    if ('stop' in metrics) metrics.stop();
    feed.close();
    throw err;
  }
  // A listening server's later errors (none expected) must not end the process.
  server.on('error', () => undefined);

  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : (o.port ?? 0);
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}`,
    port,
    close(): Promise<void> {
      closing ??= new Promise<void>((resolve) => {
        feed.close();
        server.close(() => resolve());
        server.closeAllConnections();
        if ('stop' in metrics) metrics.stop();
      });
      return closing;
    },
  };
}
