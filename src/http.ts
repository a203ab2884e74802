/**
 * HTTP channels: `import { httpChannel } from 'threadvisor/http'` builds a channel (in factory
 * form) for a REST-style platform from a description of its calls: a check call at `connect`
 * (`getMe`), a long-poll with an offset cursor (`getUpdates`), and a send call (`sendMessage`).
 * Requests go through undici 7 (an optional peer dependency: only this entry imports it).
 *
 * **Connections.** Each instance gets its own undici `Pool` (keep-alive sockets to the platform's
 * origin), opened at `connect` and destroyed at `disconnect`. Not one `Agent` shared by the
 * worker: a long-poll holds one socket per instance for its whole duration whatever the sharing,
 * so a shared agent would save little, while a pool of its own lets `disconnect` drop exactly
 * this instance's sockets (a revoked or hung instance leaves nothing behind in a shared worker)
 * and keeps one instance's stuck requests from queueing another's behind them.
 *
 * **Budgets.** Every request carries `ctx.signal` (it aborts when the callback's budget,
 * `timeouts.sendMs` / `connectMs` / `pollMs`, runs out, or the connection ends) and undici
 * headers and body timeouts inside those budgets (`timeoutMs`; a long-poll waits
 * `poll.timeoutSec` more for its headers).
 *
 * **Errors** are `ChannelError`s with a class and a code (see {@link httpChannel}); their messages
 * name the call by its configured path (`POST /sendMessage`), never the full URL, whose path may
 * hold a token (`/bot<token>/`); text from the platform in a message is scrubbed of the base
 * URL's path, the credentials and the auth headers' values.
 *
 * The module runs inside the instance's worker (a channel module imports it): it imports undici,
 * zod and threadvisor's dependency-free modules only.
 *
 * @packageDocumentation
 */
import { Pool } from 'undici';
import { z } from 'zod';
import { defineChannel, type ChannelContext, type ChannelFactory, type ChannelHandlers, type ChannelInstance, type SendInfo, type SettingsSchema } from './channel.js';
import { ChannelError } from './errors.js';
import { parseConfig } from './validate.js';
import { MAX_TIMER_MS } from './wire/timers.js';

/** An HTTP method of a call. */
export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** The check call `connect` makes (e.g. `getMe`); any 2xx passes. */
export interface HttpConnectCall {
  /** Path after the base URL, e.g. `/getMe`. */
  path: string;
  /** Default `GET`. */
  method?: HttpMethod;
  /** Metadata for the `instance:connected` event from the response body (default: none). */
  meta?(body: unknown): Record<string, unknown> | undefined;
}

/** What {@link HttpPollCall.toMessages} makes of a poll response. */
export interface HttpPollBatch {
  /** The inbound messages, in order. */
  messages: unknown[];
  /** The offset of the next poll (Telegram: the last `update_id` + 1); unchanged when absent. */
  nextOffset?: string | number;
}

/** The long-poll (e.g. `getUpdates`): asks for messages from an offset, waiting up to `timeoutSec`. */
export interface HttpPollCall {
  /** Path after the base URL, e.g. `/getUpdates`. */
  path: string;
  /** Default `GET` (offset and timeout in the query); `POST` sends them as a JSON body. */
  method?: 'GET' | 'POST';
  /** Name of the offset parameter. Default `offset`. */
  offsetParam?: string;
  /** Name of the long-poll timeout parameter (seconds). Default `timeout`. */
  timeoutParam?: string;
  /** How long the platform may hold a poll open, seconds (`0`: short polls). Default 25. */
  timeoutSec?: number;
  /** The messages of a response body and the offset after them. */
  toMessages(body: unknown): HttpPollBatch;
}

/** The send call (e.g. `sendMessage`). */
export interface HttpSendCall<Message = unknown, Receipt = unknown> {
  /** Path after the base URL, e.g. `/sendMessage`. */
  path: string;
  /** Default `POST`. */
  method?: HttpMethod;
  /** The JSON body of one message (`undefined`: no body). */
  body(message: Message, info: SendInfo): unknown;
  /** The receipt of a response body (default: the body). */
  receipt?(body: unknown): Receipt;
  /** A header that carries `info.idempotencyKey` (e.g. `Idempotency-Key`), for platforms that take one. */
  idempotencyHeader?: string;
}

/** Options of {@link httpChannel}. See the README's "HTTP channels" table. */
export interface HttpChannelOptions<Message = unknown, Receipt = unknown, Settings = Record<string, unknown>, Credentials = Record<string, unknown>> {
  /** The channel type; must equal the instance's `channelType`. */
  type: string;
  /** The base URL (`http:` or `https:`), or a function of the instance; may hold a token in its path. */
  baseUrl: string | ((instance: ChannelInstance<Settings, Credentials>) => string);
  /** Headers every request carries (e.g. `Authorization`), from the instance. */
  auth?(instance: ChannelInstance<Settings, Credentials>): Record<string, string>;
  /** The check call of `connect`; without it `connect` only opens the pool. */
  connect?: HttpConnectCall;
  /** The long-poll; without it the channel has no `poll`. */
  poll?: HttpPollCall;
  /** The send call. */
  send: HttpSendCall<Message, Receipt>;
  /** The schema of the instance's settings (checked at `startInstance`). */
  settingsSchema?: SettingsSchema;
  /** Headers and body timeout of each request, ms (a long-poll waits `poll.timeoutSec` more for headers). Default 10000. */
  timeoutMs?: number;
  /** Sockets of an instance's pool. Default 4 (at least 2 with `poll`: the long-poll holds one). */
  connections?: number;
  /** How long an idle socket is kept open, ms (the server's `Keep-Alive` hint may shorten it). Default 30000. */
  keepAliveTimeoutMs?: number;
}

/** The extra fields of an HTTP channel's errors, besides `class` and `channelCode`. */
export interface HttpErrorFields {
  /** The response status, when there was a response. */
  status?: number;
  /** 429: how long the platform asked to wait, ms (body `parameters.retry_after` / `retry_after`, else `Retry-After`). */
  retryAfterMs?: number;
}

const fn = z.custom<(...args: never[]) => unknown>((v) => typeof v === 'function', 'expected a function');
const path = z.string().regex(/^\//, 'expected a path starting with /');
const method = z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']);
const param = z.string().regex(/^[\w.[\]-]+$/, 'expected a parameter name');

const optionsSchema = z
  .strictObject({
    type: z.string().min(1),
    baseUrl: z.union([z.url({ protocol: /^https?$/ }), fn]),
    auth: fn.optional(),
    connect: z.strictObject({ path, method: method.default('GET'), meta: fn.optional() }).optional(),
    poll: z
      .strictObject({
        path,
        method: z.enum(['GET', 'POST']).default('GET'),
        offsetParam: param.default('offset'),
        timeoutParam: param.default('timeout'),
        timeoutSec: z.number().int().min(0).max(3600).default(25),
        toMessages: fn,
      })
      .optional(),
    send: z.strictObject({
      path,
      method: method.default('POST'),
      body: fn,
      receipt: fn.optional(),
      idempotencyHeader: z.string().regex(/^[\w-]+$/, 'expected a header name').optional(),
    }),
    settingsSchema: z.custom<SettingsSchema>((v) => typeof v === 'object' && v !== null && typeof (v as SettingsSchema).safeParse === 'function', 'expected an object with safeParse').optional(),
    timeoutMs: z.number().int().min(1).max(MAX_TIMER_MS).default(10_000),
    connections: z.number().int().min(1).max(1024).default(4),
    keepAliveTimeoutMs: z.number().int().min(1).max(MAX_TIMER_MS).default(30_000),
  })
  .refine((o) => o.poll === undefined || o.connections >= 2, { message: 'must be at least 2 with poll (the long-poll holds one socket)', path: ['connections'] });

type Parsed = z.output<typeof optionsSchema>;

/** An error of a call: a `ChannelError` with `status` and `retryAfterMs` when known. */
function failure(message: string, cls: 'recoverable' | 'fatal' | 'degraded', code: string, fields: HttpErrorFields = {}, cause?: unknown): ChannelError & HttpErrorFields {
  const opts = { class: cls, code, retryAfterMs: fields.retryAfterMs };
  const err = new ChannelError(message, cause === undefined ? opts : { ...opts, cause });
  return fields.status === undefined ? err : Object.assign(err, { status: fields.status });
}

/** Milliseconds of a `Retry-After` header (seconds or an HTTP date), if it holds one. */
function retryAfterHeader(value: string | string[] | undefined): number | undefined {
  const v = Array.isArray(value) ? value[0] : value;
  if (v === undefined || v.trim() === '') return undefined;
  if (/^\d+(\.\d+)?$/.test(v.trim())) return Math.round(Number(v) * 1000);
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** Milliseconds of a body's `parameters.retry_after` (Telegram) or `retry_after`, seconds. */
function retryAfterBody(body: unknown): number | undefined {
  if (typeof body !== 'object' || body === null) return undefined;
  const b = body as { retry_after?: unknown; parameters?: { retry_after?: unknown } };
  const s = typeof b.parameters === 'object' && b.parameters !== null ? b.parameters.retry_after : b.retry_after;
  return typeof s === 'number' && Number.isFinite(s) && s >= 0 ? Math.round(s * 1000) : undefined;
}

/** The platform's own words about an error (Telegram `description`, else `error` / `message`). */
function description(body: unknown): string | undefined {
  if (typeof body === 'string') return body.trim() === '' ? undefined : body;
  if (typeof body !== 'object' || body === null) return undefined;
  for (const key of ['description', 'error_description', 'error', 'message']) {
    const v = (body as Record<string, unknown>)[key];
    if (typeof v === 'string' && v !== '') return v;
  }
  return undefined;
}

function parseBody(text: string): unknown {
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return text;
  }
}

/** Everything an error message must not hold: the base URL's path (a token) and the secrets. */
function secretsOf(prefix: string, instance: ChannelInstance<unknown, unknown>, headers: Record<string, string>): string[] {
  const out = new Set<string>();
  if (prefix.length > 1) {
    out.add(prefix);
    out.add(encodeURI(prefix));
  }
  const walk = (v: unknown, depth: number): void => {
    if (typeof v === 'string' && v.length >= 4) out.add(v);
    else if (typeof v === 'object' && v !== null && depth < 4) for (const x of Object.values(v)) walk(x, depth + 1);
  };
  walk(instance.credentials, 0);
  for (const v of Object.values(headers)) {
    walk(v, 0);
    for (const part of v.split(/\s+/)) walk(part, 0);
  }
  // Longest first, so a secret that contains another is replaced whole.
  return [...out].sort((a, b) => b.length - a.length);
}

/**
 * Builds a channel (factory form) for a REST-style platform on undici.
 *
 * | outcome | class | code |
 * |---|---|---|
 * | 2xx | (the body, parsed as JSON when it is) | |
 * | 401 / 403 | fatal | `unauthorized` / `forbidden` |
 * | 409 on the poll | fatal | `conflict` (another client polls this token) |
 * | 429 | recoverable | `rate_limited`, with `retryAfterMs` |
 * | 408, 425, 5xx | recoverable | `http_<status>` (501: degraded, `not_implemented`) |
 * | other 4xx | fatal | `http_<status>` (a send's: fails that message only) |
 * | network error, undici timeout | recoverable | the error's code (`ECONNREFUSED`, `UND_ERR_*`) |
 * | aborted by `ctx.signal` | recoverable | `aborted` |
 * | a body `toMessages` cannot read | recoverable | `invalid_response` |
 *
 * Throws `InvalidConfigError` (naming each bad field, e.g. `poll.timeoutSec`) when the options
 * are invalid.
 */
export function httpChannel<Message = unknown, Receipt = unknown, Settings = Record<string, unknown>, Credentials = Record<string, unknown>>(
  options: HttpChannelOptions<Message, Receipt, Settings, Credentials>,
): ChannelFactory<Message, Receipt, Settings, Credentials> {
  const o: Parsed = parseConfig('httpChannel options', optionsSchema, options);
  const factory: ChannelFactory<Message, Receipt, Settings, Credentials> = {
    type: o.type,
    create: (instance) => createHandlers<Message, Receipt, Settings, Credentials>(o, options, instance),
  };
  if (o.settingsSchema !== undefined) Object.assign(factory, { settingsSchema: o.settingsSchema });
  return defineChannel(factory);
}

/** The callbacks of one instance. */
function createHandlers<Message, Receipt, Settings, Credentials>(
  o: Parsed,
  options: HttpChannelOptions<Message, Receipt, Settings, Credentials>,
  instance: ChannelInstance<Settings, Credentials>,
): ChannelHandlers<Message, Receipt, Settings, Credentials> {
  const raw = typeof options.baseUrl === 'function' ? options.baseUrl(instance) : options.baseUrl;
  let url: URL;
  try {
    url = new URL(raw);
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('protocol');
  } catch {
    // The URL may hold a token: it stays out of the message.
    throw failure(`${o.type}: the base URL is not an http(s) URL`, 'fatal', 'invalid_config');
  }
  const prefix = url.pathname.replace(/\/+$/, '');
  const origin = url.origin;
  const headers: Record<string, string> = { accept: 'application/json', ...(options.auth ? options.auth(instance) : {}) };
  const secrets = secretsOf(prefix, instance as ChannelInstance<unknown, unknown>, headers);
  const scrub = (text: string): string => {
    let out = text;
    for (const s of secrets) out = out.split(s).join('[redacted]');
    return out.length > 300 ? `${out.slice(0, 299)}…` : out;
  };

  let pool: Pool | undefined;
  let offset: string | number | undefined;
  const poolOf = (): Pool =>
    (pool ??= new Pool(origin, {
      connections: o.connections,
      keepAliveTimeout: o.keepAliveTimeoutMs,
      headersTimeout: o.timeoutMs,
      bodyTimeout: o.timeoutMs,
    }));

  interface Call {
    op: 'connect' | 'poll' | 'send';
    method: HttpMethod;
    path: string;
    query?: Record<string, string>;
    body?: unknown;
    extraHeaders?: Record<string, string>;
    headersTimeoutMs: number;
  }

  async function request(ctx: ChannelContext<Settings, Credentials>, call: Call): Promise<unknown> {
    const label = `${o.type} ${call.op}: ${call.method} ${call.path}`;
    const qs = call.query && Object.keys(call.query).length > 0 ? `?${new URLSearchParams(call.query).toString()}` : '';
    const hasBody = call.body !== undefined;
    let status: number;
    let resHeaders: Record<string, string | string[] | undefined>;
    let text: string;
    try {
      const res = await poolOf().request({
        method: call.method,
        path: `${prefix}${call.path}${qs}`,
        headers: { ...headers, ...(hasBody ? { 'content-type': 'application/json' } : {}), ...call.extraHeaders },
        body: hasBody ? JSON.stringify(call.body) : null,
        signal: ctx.signal,
        headersTimeout: call.headersTimeoutMs,
        bodyTimeout: o.timeoutMs,
      });
      status = res.statusCode;
      resHeaders = res.headers;
      text = await res.body.text();
    } catch (err) {
      if (ctx.signal.aborted) throw failure(`${label}: aborted`, 'recoverable', 'aborted');
      const code = typeof (err as { code?: unknown }).code === 'string' ? (err as { code: string }).code : 'network_error';
      const why = err instanceof Error ? err.message : String(err);
      throw failure(`${label}: network error: ${scrub(why)}`, 'recoverable', code);
    }
    const body = parseBody(text);
    if (status >= 200 && status < 300) return body;
    const said = description(body);
    const what = `${label}: HTTP ${status}${said === undefined ? '' : ` (${scrub(said)})`}`;
    if (status === 429) {
      const retryAfterMs = retryAfterBody(body) ?? retryAfterHeader(resHeaders['retry-after']);
      const after = retryAfterMs === undefined ? '' : `, retry after ${retryAfterMs} ms`;
      throw failure(`${what}: rate limited${after}`, 'recoverable', 'rate_limited', retryAfterMs === undefined ? { status } : { status, retryAfterMs });
    }
    if (status === 401) throw failure(`${what}: credentials rejected`, 'fatal', 'unauthorized', { status });
    if (status === 403) throw failure(`${what}: forbidden`, 'fatal', 'forbidden', { status });
    if (status === 409 && call.op === 'poll') throw failure(`${what}: conflict: another client polls this token`, 'fatal', 'conflict', { status });
    if (status === 501) throw failure(what, 'degraded', 'not_implemented', { status });
    if (status >= 500 || status === 408 || status === 425) throw failure(what, 'recoverable', `http_${status}`, { status });
    throw failure(what, 'fatal', `http_${status}`, { status });
  }

  const handlers: ChannelHandlers<Message, Receipt, Settings, Credentials> = {
    async connect(ctx) {
      // Resume after the cursor the runtime kept (it survives worker restarts).
      const cursor = ctx.cursor;
      offset = typeof cursor === 'number' || typeof cursor === 'string' ? cursor : undefined;
      poolOf();
      if (o.connect === undefined) return undefined;
      const body = await request(ctx, { op: 'connect', method: o.connect.method, path: o.connect.path, headersTimeoutMs: o.timeoutMs });
      const meta = options.connect?.meta;
      return meta ? meta(body) : undefined;
    },

    async disconnect() {
      const p = pool;
      pool = undefined;
      // Sockets go at once: whatever is in flight was aborted by its signal already.
      if (p) await p.destroy();
    },

    async send(ctx, message, info) {
      const s = o.send;
      const body = (options.send.body as (m: Message, i: SendInfo) => unknown)(message, info);
      const extraHeaders = s.idempotencyHeader !== undefined && info.idempotencyKey !== undefined ? { [s.idempotencyHeader]: info.idempotencyKey } : undefined;
      const res = await request(ctx, { op: 'send', method: s.method, path: s.path, body, headersTimeoutMs: o.timeoutMs, ...(extraHeaders ? { extraHeaders } : {}) });
      const receipt = options.send.receipt;
      return (receipt ? receipt(res) : res) as Receipt;
    },
  };

  const p = o.poll;
  if (p === undefined) return handlers;
  const toMessages = (options.poll as HttpPollCall).toMessages;
  return {
    ...handlers,
    async poll(ctx) {
      const params: Record<string, string | number> = { [p.timeoutParam]: p.timeoutSec };
      if (offset !== undefined) params[p.offsetParam] = offset;
      const call: Call = { op: 'poll', method: p.method, path: p.path, headersTimeoutMs: o.timeoutMs + p.timeoutSec * 1000 };
      if (p.method === 'GET') call.query = Object.fromEntries(Object.entries(params).map(([k, v]) => [k, String(v)]));
      else call.body = params;
      const body = await request(ctx, call);
      let batch: HttpPollBatch;
      try {
        batch = toMessages(body);
        if (typeof batch !== 'object' || batch === null || !Array.isArray(batch.messages)) throw new Error('no messages array');
      } catch (err) {
        throw failure(`${o.type} poll: ${p.method} ${p.path}: unreadable response (${scrub(err instanceof Error ? err.message : String(err))})`, 'recoverable', 'invalid_response');
      }
      if (batch.nextOffset !== undefined) offset = batch.nextOffset;
      return offset === undefined ? { messages: batch.messages } : { messages: batch.messages, cursor: offset };
    },
  };
}
