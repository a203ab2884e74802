/**
 * A Telegram-like platform simulator on node:http (127.0.0.1, a free port), for tests and demos
 * of HTTP channels:
 *
 * - `GET|POST /bot<token>/getMe`: `{ ok: true, result: { id, is_bot, username } }`.
 * - `GET|POST /bot<token>/getUpdates?offset&timeout&limit`: a long-poll. Updates
 *   `{ update_id, message: { message_id, chat: { id }, text, date } }` are generated per token at
 *   `updates.perSec` (from the token's first request, at most `updates.max`); `offset` confirms
 *   every update below it; with nothing to return the call is held up to `timeout` seconds. A
 *   second long-poll of a token while one is held ends the older one with 409 Conflict
 *   ("terminated by other getUpdates request").
 * - `POST /bot<token>/sendMessage` (JSON `{ chat_id, text }`, or the query): the sent message.
 * - Per token, at most `rateLimit.perSec` requests (getUpdates excepted) per second: then 429
 *   `{ ok: false, error_code: 429, parameters: { retry_after } }` with a `Retry-After` header,
 *   and every request in that `retry_after` window gets 429 too and counts as over the limit.
 * - `revoke(token)`: 401 from then on (a held long-poll ends with it); `failNext(n)`: the next n
 *   requests get 500; `hang(ms)`: the next request is held `ms` before it is served.
 *
 * Run it alone: `node dist/demo/platform-sim.js [port]` (after `npm run build`).
 *
 * @packageDocumentation
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

/** Options of {@link startPlatformSim}. */
export interface PlatformSimOptions {
  /** Port on 127.0.0.1. Default 0 (a free one). */
  port?: number;
  /** Generated inbound updates per token. Default `{ perSec: 0 }` (none). */
  updates?: { perSec: number; max?: number };
  /** Requests per token per second (getUpdates excepted). Default `{ perSec: 30 }`. */
  rateLimit?: { perSec: number };
}

/** What to match with {@link PlatformSim.failNext} and {@link PlatformSim.hang} (default: any request). */
export interface SimMatch {
  token?: string;
  /** `getMe`, `getUpdates`, `sendMessage`. */
  method?: string;
}

/** Counters of one token. */
export interface TokenStats {
  requests: number;
  /** 429s answered. */
  rateLimited: number;
  /** Requests that arrived while the token was in its `retry_after` window (the client did not wait). */
  overLimit: number;
  /** 409s answered (long-polls ended by another). */
  conflicts: number;
  /** 401s answered. */
  unauthorized: number;
  /** 5xx answered (injected by `failNext`). */
  serverErrors: number;
  /** Messages accepted by sendMessage. */
  sent: number;
  /** Updates generated so far. */
  updates: number;
  /** The highest offset a getUpdates confirmed. */
  confirmedOffset: number;
  /** The most getUpdates of this token held at once. */
  maxConcurrentPolls: number;
}

/** A running simulator. */
export interface PlatformSim {
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** Closes the server and every connection. */
  stop(): Promise<void>;
  /** Counters per token. */
  stats(): Record<string, TokenStats>;
  /** From now on, the token gets 401 (its held long-poll too). */
  revoke(token: string): void;
  /** The next `n` matching requests get 500. */
  failNext(n: number, match?: SimMatch): void;
  /** The next `count` (default 1) matching requests are held `ms` before they are served. */
  hang(ms: number, match?: SimMatch & { count?: number }): void;
  /** Adds one update with this text to the token's queue now. */
  push(token: string, text: string): void;
}

interface Update {
  update_id: number;
  message: { message_id: number; chat: { id: number }; text: string; date: number };
}

interface Held {
  res: ServerResponse;
  timer: NodeJS.Timeout | undefined;
  finish(): void;
  /** Looks for updates now. */
  wake(): void;
}

interface TokenState {
  stats: TokenStats;
  startedAt: number;
  generated: number;
  nextMessageId: number;
  queue: Update[];
  windowStart: number;
  windowCount: number;
  blockedUntil: number;
  polls: Set<Held>;
}

const ROUTE = /^\/bot([^/]+)\/(\w+)$/;

function matches(m: SimMatch, token: string, method: string): boolean {
  return (m.token === undefined || m.token === token) && (m.method === undefined || m.method === method);
}

/** Starts a simulator; see the module notes. */
export async function startPlatformSim(options: PlatformSimOptions = {}): Promise<PlatformSim> {
  const perSec = options.updates?.perSec ?? 0;
  const maxUpdates = options.updates?.max ?? Number.POSITIVE_INFINITY;
  const ratePerSec = options.rateLimit?.perSec ?? 30;
  const tokens = new Map<string, TokenState>();
  const revoked = new Set<string>();
  const failures: Array<SimMatch & { left: number }> = [];
  const hangs: Array<SimMatch & { left: number; ms: number }> = [];
  const timers = new Set<NodeJS.Timeout>();
  let stopping = false;

  const stateOf = (token: string): TokenState => {
    let st = tokens.get(token);
    if (!st) {
      st = {
        stats: { requests: 0, rateLimited: 0, overLimit: 0, conflicts: 0, unauthorized: 0, serverErrors: 0, sent: 0, updates: 0, confirmedOffset: 0, maxConcurrentPolls: 0 },
        startedAt: Date.now(),
        generated: 0,
        nextMessageId: 1,
        queue: [],
        windowStart: 0,
        windowCount: 0,
        blockedUntil: 0,
        polls: new Set(),
      };
      tokens.set(token, st);
    }
    return st;
  };

  const addUpdate = (st: TokenState, text: string): void => {
    const id = ++st.stats.updates;
    st.queue.push({ update_id: id, message: { message_id: id, chat: { id: 1 }, text, date: Math.floor(Date.now() / 1000) } });
  };

  /** Generates the updates due by now. */
  const generate = (st: TokenState): void => {
    if (!(perSec > 0)) return;
    const due = Math.min(maxUpdates, Math.floor(((Date.now() - st.startedAt) * perSec) / 1000));
    while (st.generated < due) {
      st.generated++;
      addUpdate(st, `update ${st.generated}`);
    }
  };

  /** Milliseconds until the next generated update, or undefined when none is coming. */
  const nextDueIn = (st: TokenState): number | undefined => {
    if (!(perSec > 0) || st.generated >= maxUpdates) return undefined;
    return Math.max(1, st.startedAt + Math.ceil(((st.generated + 1) * 1000) / perSec) - Date.now());
  };

  const json = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void => {
    if (res.writableEnded || res.destroyed) return;
    const text = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers });
    res.end(text);
  };
  const fail = (res: ServerResponse, status: number, description: string, extra: Record<string, unknown> = {}, headers: Record<string, string> = {}): void =>
    json(res, status, { ok: false, error_code: status, description, ...extra }, headers);

  const readParams = async (req: IncomingMessage, url: URL): Promise<Record<string, unknown>> => {
    const params: Record<string, unknown> = Object.fromEntries(url.searchParams);
    if (req.method !== 'POST') return params;
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    if (text === '') return params;
    const ct = req.headers['content-type'] ?? '';
    if (ct.includes('application/json')) Object.assign(params, JSON.parse(text) as Record<string, unknown>);
    else if (ct.includes('application/x-www-form-urlencoded')) Object.assign(params, Object.fromEntries(new URLSearchParams(text)));
    return params;
  };

  const getUpdates = (st: TokenState, params: Record<string, unknown>, req: IncomingMessage, res: ServerResponse): void => {
    const offset = Number(params.offset ?? 0);
    const timeoutSec = Math.max(0, Math.min(60, Number(params.timeout ?? 0) || 0));
    const limit = Math.max(1, Math.min(100, Number(params.limit ?? 100) || 100));
    if (Number.isFinite(offset) && offset > 0) {
      st.queue = st.queue.filter((u) => u.update_id >= offset);
      if (offset > st.stats.confirmedOffset) st.stats.confirmedOffset = offset;
    }
    // A newer long-poll ends the one held for this token (Telegram's behaviour).
    for (const other of [...st.polls]) {
      st.stats.conflicts++;
      other.finish();
      fail(other.res, 409, 'Conflict: terminated by other getUpdates request; make sure that only one bot instance is running');
    }
    const deadline = Date.now() + timeoutSec * 1000;
    const held: Held = {
      res,
      timer: undefined,
      finish: () => {
        if (held.timer) {
          clearTimeout(held.timer);
          timers.delete(held.timer);
        }
        held.timer = undefined;
        st.polls.delete(held);
      },
      wake: () => {
        if (!held.timer) return;
        clearTimeout(held.timer);
        timers.delete(held.timer);
        attempt();
      },
    };
    const attempt = (): void => {
      held.timer = undefined;
      generate(st);
      const ready = st.queue.filter((u) => u.update_id >= offset).slice(0, limit);
      const left = deadline - Date.now();
      if (ready.length > 0 || left <= 0 || stopping) {
        held.finish();
        json(res, 200, { ok: true, result: ready });
        return;
      }
      const wait = Math.min(left, nextDueIn(st) ?? left, 250);
      held.timer = setTimeout(attempt, wait);
      timers.add(held.timer);
    };
    st.polls.add(held);
    if (st.polls.size > st.stats.maxConcurrentPolls) st.stats.maxConcurrentPolls = st.polls.size;
    res.on('close', () => held.finish());
    attempt();
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://sim');
    const m = ROUTE.exec(url.pathname);
    if (!m) return fail(res, 404, 'Not Found');
    const token = decodeURIComponent(m[1] as string);
    const method = m[2] as string;
    const st = stateOf(token);
    st.stats.requests++;
    if (revoked.has(token)) {
      st.stats.unauthorized++;
      return fail(res, 401, 'Unauthorized');
    }
    const hang = hangs.find((h) => h.left > 0 && matches(h, token, method));
    if (hang) {
      hang.left--;
      await new Promise<void>((resolve) => {
        const t = setTimeout(() => {
          timers.delete(t);
          resolve();
        }, hang.ms);
        timers.add(t);
        res.on('close', () => {
          clearTimeout(t);
          timers.delete(t);
          resolve();
        });
      });
      if (res.destroyed || res.writableEnded) return;
    }
    const failure = failures.find((f) => f.left > 0 && matches(f, token, method));
    if (failure) {
      failure.left--;
      st.stats.serverErrors++;
      return fail(res, 500, 'Internal Server Error');
    }
    if (method !== 'getUpdates') {
      const now = Date.now();
      if (now < st.blockedUntil) {
        st.stats.overLimit++;
        st.stats.rateLimited++;
        const retryAfter = Math.max(1, Math.ceil((st.blockedUntil - now) / 1000));
        return fail(res, 429, `Too Many Requests: retry after ${retryAfter}`, { parameters: { retry_after: retryAfter } }, { 'retry-after': String(retryAfter) });
      }
      if (now - st.windowStart >= 1000) {
        st.windowStart = now;
        st.windowCount = 0;
      }
      if (++st.windowCount > ratePerSec) {
        const retryAfter = Math.max(1, Math.ceil((st.windowStart + 1000 - now) / 1000));
        st.blockedUntil = now + retryAfter * 1000;
        st.stats.rateLimited++;
        return fail(res, 429, `Too Many Requests: retry after ${retryAfter}`, { parameters: { retry_after: retryAfter } }, { 'retry-after': String(retryAfter) });
      }
    }
    let params: Record<string, unknown>;
    try {
      params = await readParams(req, url);
    } catch {
      return fail(res, 400, 'Bad Request: cannot parse the body');
    }
    switch (method) {
      case 'getMe':
        return json(res, 200, { ok: true, result: { id: 1, is_bot: true, username: 'sim_bot' } });
      case 'getUpdates':
        return getUpdates(st, params, req, res);
      case 'sendMessage': {
        if (params.chat_id === undefined || typeof params.text !== 'string') return fail(res, 400, 'Bad Request: chat_id and text are required');
        st.stats.sent++;
        const id = st.nextMessageId++;
        return json(res, 200, { ok: true, result: { message_id: id, chat: { id: params.chat_id }, text: params.text, date: Math.floor(Date.now() / 1000) } });
      }
      default:
        return fail(res, 404, 'Not Found: method not found');
    }
  };

  const server = createServer({ keepAliveTimeout: 30_000 }, (req, res) => {
    handle(req, res).catch(() => fail(res, 500, 'Internal Server Error'));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      stopping = true;
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const st of tokens.values()) for (const h of [...st.polls]) h.finish();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await closed;
    },
    stats() {
      return Object.fromEntries([...tokens].map(([t, st]) => [t, { ...st.stats }]));
    },
    revoke(token) {
      revoked.add(token);
      const st = tokens.get(token);
      if (!st) return;
      for (const h of [...st.polls]) {
        h.finish();
        st.stats.unauthorized++;
        fail(h.res, 401, 'Unauthorized');
      }
    },
    failNext(n, match = {}) {
      failures.push({ ...match, left: n });
    },
    hang(ms, match = {}) {
      hangs.push({ token: match.token, method: match.method, ms, left: match.count ?? 1 });
    },
    push(token, text) {
      const st = stateOf(token);
      addUpdate(st, text);
      // A held long-poll answers at once.
      for (const h of [...st.polls]) h.wake();
    },
  };
}

// `node dist/demo/platform-sim.js [port]`: run it alone.
if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const sim = await startPlatformSim({ port: Number(process.argv[2] ?? 0), updates: { perSec: 1 } });
  console.log(`platform simulator on ${sim.url} (try ${sim.url}/bot123:abc/getMe)`);
  process.once('SIGINT', () => void sim.stop());
}
