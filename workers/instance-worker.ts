/**
 * The instance worker: one channel instance per worker thread. The runtime spawns it through a
 * `WorkerHost` with an {@link InstanceBoot} as `workerData`, calls `start`, then `send` for every
 * outbound message, and stops it through the host's graceful shutdown. Everything else flows back
 * as {@link Notice}s on the boot's `data` port.
 *
 * Loading is cheap: at load the worker only reads its boot and calls `serve()`. zod, the backoff
 * policy and the channel module are imported inside `start()`.
 *
 * ## `start()`
 * Imports the channel module (`boot.channel`, a URL), takes its **default export** (required) and
 * validates it with `channelDefinitionSchema`. A load error, a missing default export, a missing or
 * mistyped member, or a `type` other than the instance's `channelType` posts
 * `{ t: 'fatal', code: 'channel_invalid', reason }` (the reason names the member or the load error)
 * and resolves: the worker then idles until the runtime stops it. Otherwise the connect loop starts
 * in the background and `start()` resolves. A second call returns the first call's promise.
 *
 * ## Notice sequences
 * Attempt 0 is the initial connect; reconnect attempts are numbered 1..`reconnect.maxAttempts`.
 *
 * - **Connect succeeds:** `status connecting` → `status connected` (`meta`: what `connect`
 *   returned, if a plain object) → the first `probe` right away (when the channel has `probe` and
 *   `probe.intervalMs` > 0) → `inbound` batches.
 * - **A connect attempt fails recoverable** (also a connect timeout, and a `degraded` connect error,
 *   which is retried like a recoverable one but reported with its own class):
 *   `reconnect failed {attempt, reason, class}` → `status disconnected {reason}` →
 *   `reconnect scheduled {attempt: n+1, delayMs}` → (the delay) → `reconnect attempt {attempt: n+1}`
 *   → … → on success `status connected` with `meta` extended by
 *   `{ attempts, reason (what broke the connection first), elapsedMs }`.
 * - **The connection is lost** (recoverable poll error, a failed probe, `listen` returned or threw):
 *   [`probe failed`] → `status disconnected {reason}` → `disconnect` (best effort) →
 *   `reconnect scheduled {attempt: 1}` → `reconnect attempt {attempt: 1}` → … as above.
 * - **Exhaustion** (attempt `maxAttempts` failed): `reconnect failed {attempt: max}` →
 *   `status disconnected` → `reconnect exhausted {attempt: max, reason, class: 'recoverable'}` →
 *   the thread ends with exit code `EXIT_RECONNECT_EXHAUSTED` (75) on the next turn.
 * - **Fatal** (a fatal connect error): `reconnect failed {attempt, class: 'fatal'}` →
 *   `fatal {reason, code: 'fatal_connect'}`; fatal poll / probe / listen errors post
 *   `fatal {code: 'fatal_poll' | 'fatal_probe' | 'fatal_listen'}` (a failed probe posts its `probe`
 *   notice first). No further attempts; the connection is closed (best effort) and the worker idles
 *   until the runtime stops it. It does not exit by itself.
 * - **Degraded** poll error: `failure {op: 'poll', class: 'degraded'}`, the loop goes on after
 *   `pollIdleMs`. A degraded probe (returned or thrown): only its `probe` notice.
 * - **send:** `success {op: 'send'}` or `failure {op: 'send', reason, class}`. A send error never
 *   ends the instance by itself, whatever its class: a fatal send error (a 403 for one recipient,
 *   an invalid payload) condemns that message, not the connection; revoked credentials surface
 *   through the next poll or probe. The class reaches the caller in the rejection.
 *
 * After a graceful stop has begun no status or reconnect notice is posted any more.
 *
 * ## What `send` rejects with (as the main thread sees it, after comlink)
 * A plain `Error` with `name` and `message` only (see `src/wire/errors.ts`; read it back with
 * `decodeWorkerError`): message `[<class>/<code>] <reason>`, e.g.
 * `[recoverable/not_connected] instance i1 is not connected` (name `ChannelError`),
 * `[recoverable/timeout] send timed out after 200 ms` (name `TimeoutError`),
 * `[fatal/unauthorized] <channel message>` (the channel error's own name).
 *
 * ## Timeouts and signals
 * Every callback runs under its budget from `boot.timeouts` (`listen` has none: it runs until its
 * signal aborts). A budget that runs out rejects with `TimeoutError` (code `timeout`, recoverable)
 * and aborts the callback's `ctx.signal`, which also aborts when its connection ends (loss,
 * reconnect, fatal error, stop). `disconnect` gets a signal of its own budget only.
 *
 * ## Data work
 * Inbound batches are posted from the poll loop (the next poll runs on the next `setImmediate`
 * turn), or, for `listen` channels, `ctx.emit` queues messages and one `inbound` notice per
 * event-loop turn carries them (at most {@link INBOUND_CHUNK} per notice). No data work runs in a
 * message handler, so heartbeats always get through. A batch that cannot be cloned is sent with
 * functions and symbols dropped (and a `warn` log notice).
 *
 * Inbound batches are flow-controlled: the runtime acknowledges each batch once `onMessage`
 * handled it (`inbound_ack`), and the worker keeps at most `inboundWindow` batches unacknowledged,
 * so a channel that produces faster than the main thread consumes waits in the worker instead
 * of filling the main thread's port queue. Sends come in batches within the runtime's credit
 * window (`sendWindow`) and go back as batched acks (see "batched sends" below).
 *
 * @packageDocumentation
 */
import { performance } from 'node:perf_hooks';
import { MessagePort } from 'node:worker_threads';
import type { ChannelContext, ChannelDefinition, ChannelLogger, ProbeOutcome, SendInfo } from '../src/channel.js';
import { TimeoutError } from '../src/errors.js';
import { backoffDelay, type BackoffPolicy } from '../src/wire/backoff.js';
import { classifyError } from '../src/wire/classify.js';
import { ColumnEncoder } from '../src/wire/columns.js';
import { encodeWorkerError, wireError, type FailureClass } from '../src/wire/errors.js';
import { EXIT_RECONNECT_EXHAUSTED, INBOUND_CHUNK, type InstanceBoot, type InstanceWorkerApi, type LifecycleBody, type Notice, type SendResult } from '../src/wire/protocol.js';
import { readInboundAck, readSendBatch } from '../src/wire/validate.js';
import { serve, workerData } from './runtime.js';

/** Reasons are cut to this many characters before they are posted. */
const MAX_REASON = 2000;
/** Depth below which log objects and connect metadata are copied (deeper: a placeholder). */
const MAX_DEPTH = 8;

type Op = 'connect' | 'disconnect' | 'send' | 'poll' | 'probe' | 'listen';
type AnyChannel = ChannelDefinition<unknown, unknown, Record<string, unknown>, Record<string, unknown>>;

/** One connection generation: its signal aborts when it ends. */
interface Connection {
  readonly controller: AbortController;
  /** `connect` resolved for this generation (so `disconnect` is due when it ends). */
  opened: boolean;
}

// ---- boot ---------------------------------------------------------------------------------------

function readBoot(raw: unknown): InstanceBoot {
  const b = raw as Partial<InstanceBoot> | undefined;
  const problems: string[] = [];
  if (typeof b !== 'object' || b === null) throw new TypeError('instance worker: workerData is not an InstanceBoot');
  if (!(b.data instanceof MessagePort)) problems.push('data (a MessagePort)');
  if (typeof b.channel !== 'string') problems.push('channel (a URL)');
  if (typeof b.instance !== 'object' || b.instance === null) problems.push('instance');
  if (typeof b.reconnect !== 'object' || b.reconnect === null) problems.push('reconnect');
  if (typeof b.timeouts !== 'object' || b.timeouts === null) problems.push('timeouts');
  if (typeof b.probe !== 'object' || b.probe === null) problems.push('probe');
  if (problems.length > 0) throw new TypeError(`instance worker: workerData lacks ${problems.join(', ')}`);
  return b as InstanceBoot;
}

// A malformed boot is a bug of the runtime: throwing here fails the worker's start.
const boot = readBoot(workerData);
const port = boot.data;
const instanceId = boot.instance.id;
/** The instance's number on the wire: every data-port message about it carries it as `i`. */
const iid = boot.iid;

// ---- helpers ------------------------------------------------------------------------------------

function clip(text: string): string {
  return text.length > MAX_REASON ? `${text.slice(0, MAX_REASON - 1)}…` : text;
}

function get(o: unknown, key: string): unknown {
  if (typeof o !== 'object' || o === null) return undefined;
  try {
    return (o as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

/** The error's own code: a `ChannelError`'s channel code, else `code`. */
function codeOf(err: unknown): string | undefined {
  const channelCode = get(err, 'channelCode');
  if (typeof channelCode === 'string' && channelCode) return channelCode;
  const code = get(err, 'code');
  return typeof code === 'string' || typeof code === 'number' ? String(code) : undefined;
}

/** A one-line description of anything thrown. */
function describe(err: unknown): string {
  if (err instanceof Error) {
    const message = err.message || err.name || 'error';
    const code = codeOf(err);
    return code && code !== 'channel_error' && !message.includes(code) ? `${message} (${code})` : message;
  }
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

/** The reason posted for a failure of `op`: our own timeouts already say what timed out. */
function reasonOf(op: Op, err: unknown): string {
  return clip(err instanceof TimeoutError ? err.message : `${op} failed: ${describe(err)}`);
}

/**
 * A structured-cloneable copy of `value`: functions and symbols dropped, errors reduced to
 * `{ name, message, code }`, cycles and depth cut with placeholders.
 */
function cloneable(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (value === null) return null;
  switch (typeof value) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'bigint':
    case 'undefined':
      return value;
    case 'function':
    case 'symbol':
      return undefined;
    default:
      break;
  }
  const obj = value as object;
  if (obj instanceof Error) {
    const code = codeOf(obj);
    return code === undefined ? { name: obj.name, message: obj.message } : { name: obj.name, message: obj.message, code };
  }
  if (obj instanceof Date || obj instanceof RegExp || ArrayBuffer.isView(obj) || obj instanceof ArrayBuffer) return obj;
  if (depth >= MAX_DEPTH) return '[depth]';
  if (seen.has(obj)) return '[circular]';
  seen.add(obj);
  try {
    if (Array.isArray(obj)) return obj.map((v) => cloneable(v, depth + 1, seen) ?? null);
    if (obj instanceof Map) {
      return new Map([...obj].map(([k, v]) => [cloneable(k, depth + 1, seen), cloneable(v, depth + 1, seen)]));
    }
    if (obj instanceof Set) return new Set([...obj].map((v) => cloneable(v, depth + 1, seen)));
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(obj)) {
      const v = cloneable(get(obj, key), depth + 1, seen);
      if (v !== undefined) out[key] = v;
    }
    return out;
  } finally {
    seen.delete(obj);
  }
}

function isPlainRecord(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Posts a notice about this instance (addressed with its number, `i`). */
function post(body: LifecycleBody): void {
  const notice = { ...body, i: iid } as Notice;
  try {
    port.postMessage(notice);
  } catch {
    // Only inbound batches and log objects can fail to clone; both are copied before posting.
    port.postMessage(cloneable(notice));
  }
}

/** Resolves after `ms`, or at once when any signal aborts. */
function sleep(ms: number, ...signals: AbortSignal[]): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signals.some((s) => s.aborted)) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    for (const s of signals) s.addEventListener('abort', done, { once: true });
  });
}

const nextTurn = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve));

/** Re-throws `err` outside any promise chain: an internal bug crashes the worker (and it restarts). */
function crash(err: unknown): void {
  setImmediate(() => {
    throw err;
  });
}

// ---- channel context ----------------------------------------------------------------------------

const channelInstance = Object.freeze({
  id: boot.instance.id,
  name: boot.instance.name,
  channelType: boot.instance.channelType,
  settings: boot.instance.settings ?? {},
  credentials: boot.instance.credentials ?? {},
});

function log(level: 'trace' | 'debug' | 'info' | 'warn' | 'error', msg: unknown, obj?: unknown): void {
  const notice: LifecycleBody & { t: 'log' } = { t: 'log', level, msg: typeof msg === 'string' ? msg : String(msg) };
  if (obj !== undefined) {
    const copy = cloneable(obj);
    notice.obj = isPlainRecord(copy) ? copy : { value: copy };
  }
  post(notice);
}

const logger: ChannelLogger = {
  trace: (msg, obj) => log('trace', msg, obj),
  debug: (msg, obj) => log('debug', msg, obj),
  info: (msg, obj) => log('info', msg, obj),
  warn: (msg, obj) => log('warn', msg, obj),
  error: (msg, obj) => log('error', msg, obj),
};

const outbox: unknown[] = [];
let outboxCursor: unknown;
let flushScheduled = false;

// Inbound flow control: batches are numbered; the runtime acknowledges them once `onMessage`
// has handled them, and the worker keeps at most `inboundWindow` batches unacknowledged, so a
// fast channel cannot bury the main thread (it polls again only when there is credit).
const inboundWindow = boot.inboundWindow ?? 0;
let inboundSent = 0;
let inboundAcked = 0;
let creditWaiters: Array<() => void> = [];
/** Where the channel resumes on (re)connect: the cursor of the last batch handed to the runtime. */
let resumeCursor: unknown = boot.cursor;

function hasCredit(): boolean {
  return inboundWindow <= 0 || inboundSent - inboundAcked < inboundWindow;
}

function onInboundAck(upTo: number): void {
  if (upTo > inboundAcked) inboundAcked = upTo;
  const waiters = creditWaiters;
  creditWaiters = [];
  for (const w of waiters) w();
  if (outbox.length > 0) scheduleFlush();
}

/** Resolves when another inbound batch may be posted (or the signal aborts). */
function inboundCredit(signal: AbortSignal): Promise<void> {
  if (hasCredit() || signal.aborted) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const done = (): void => {
      signal.removeEventListener('abort', done);
      resolve();
    };
    creditWaiters.push(done);
    signal.addEventListener('abort', done, { once: true });
  });
}

function postInbound(messages: unknown[], cursor?: unknown): void {
  for (let i = 0; i < messages.length; i += INBOUND_CHUNK) {
    const chunk = i === 0 && messages.length <= INBOUND_CHUNK ? messages : messages.slice(i, i + INBOUND_CHUNK);
    const last = i + INBOUND_CHUNK >= messages.length;
    const notice: Notice = { t: 'inbound', i: iid, messages: chunk, n: ++inboundSent, ...(last && cursor !== undefined ? { cursor } : {}) };
    try {
      port.postMessage(notice);
    } catch (err) {
      log('warn', 'inbound batch not cloneable; functions and symbols dropped', { error: describe(err) });
      port.postMessage({ ...notice, messages: chunk.map((m) => cloneable(m) ?? null), ...(notice.cursor !== undefined ? { cursor: cloneable(notice.cursor) } : {}) });
    }
  }
  if (cursor !== undefined) resumeCursor = cursor;
}

function flushOutbox(): void {
  flushScheduled = false;
  if (outbox.length === 0 || !hasCredit()) return; // an ack reschedules the flush
  const batch = outbox.splice(0, INBOUND_CHUNK);
  postInbound(batch, outbox.length === 0 ? outboxCursor : undefined);
  if (outbox.length > 0) scheduleFlush();
}

function scheduleFlush(): void {
  if (flushScheduled) return;
  flushScheduled = true;
  setImmediate(flushOutbox);
}

function emit(message: unknown, cursor?: unknown): void {
  if (stopped) return;
  outbox.push(message);
  if (cursor !== undefined) outboxCursor = cursor;
  scheduleFlush();
}

function contextFor(signal: AbortSignal): ChannelContext {
  return { instance: channelInstance, logger, signal, emit, cursor: resumeCursor };
}

/**
 * Runs one channel callback under its budget. Its `ctx.signal` aborts when `parent` aborts or the
 * budget runs out (which rejects with {@link TimeoutError}). `ms` <= 0 or not finite: no budget.
 */
function invoke<T>(op: Op, ms: number, parent: AbortSignal | undefined, fn: (ctx: ChannelContext) => T | Promise<T>): Promise<T> {
  const controller = new AbortController();
  let onParentAbort: (() => void) | undefined;
  if (parent) {
    if (parent.aborted) controller.abort(parent.reason);
    else {
      onParentAbort = () => controller.abort(parent.reason);
      parent.addEventListener('abort', onParentAbort, { once: true });
    }
  }
  let timer: NodeJS.Timeout | undefined;
  return new Promise<T>((resolve, reject) => {
    if (Number.isFinite(ms) && ms > 0 && ms <= 2 ** 31 - 1) {
      timer = setTimeout(() => {
        const err = new TimeoutError(op, ms);
        controller.abort(err);
        reject(err);
      }, ms);
    }
    let result: T | Promise<T>;
    try {
      result = fn(contextFor(controller.signal));
    } catch (err) {
      reject(err as Error);
      return;
    }
    Promise.resolve(result).then(resolve, reject);
  }).finally(() => {
    if (timer) clearTimeout(timer);
    if (onParentAbort) parent?.removeEventListener('abort', onParentAbort);
  });
}

// ---- state --------------------------------------------------------------------------------------

interface Loaded {
  channel: AnyChannel;
  backoff: BackoffPolicy;
}

let loaded: Loaded | undefined;
let starting: Promise<void> | undefined;
let stopped = false;
/** Fatal error posted, or reconnects exhausted: nothing more is attempted. */
let finished = false;
const stopController = new AbortController();
/** The open connection (connect resolved, not lost). */
let live: Connection | undefined;
/** The connection being established, and its `connect` call. */
let connecting: { conn: Connection; call: Promise<unknown> } | undefined;

function classify(err: unknown): FailureClass {
  return classifyError(err, loaded?.channel.classify?.bind(loaded.channel));
}

/** Posts a lifecycle notice unless a graceful stop has begun. */
function report(notice: LifecycleBody): void {
  if (!stopped) post(notice);
}

function newConnection(): Connection {
  return { controller: new AbortController(), opened: false };
}

async function disconnectQuietly(conn: Connection): Promise<void> {
  const channel = loaded?.channel;
  if (!channel || !conn.opened) return;
  conn.opened = false;
  try {
    await invoke('disconnect', boot.timeouts.disconnectMs, undefined, (ctx) => channel.disconnect(ctx));
  } catch (err) {
    log('warn', 'channel disconnect failed', { reason: reasonOf('disconnect', err) });
  }
}

/** A fatal error: report it, close the connection, attempt nothing more. */
function enterFatal(reason: string, code: string, conn?: Connection): void {
  if (finished || stopped) return;
  finished = true;
  report({ t: 'fatal', reason: clip(reason), code });
  if (conn) {
    if (live === conn) live = undefined;
    conn.controller.abort(new Error(reason));
    void disconnectQuietly(conn);
  }
}

/** The open connection `conn` was lost: report it, close it, reconnect from attempt 1. */
function connectionLost(conn: Connection, reason: string): void {
  if (stopped || finished || live !== conn) return;
  live = undefined;
  conn.controller.abort(new Error(reason));
  report({ t: 'status', status: 'disconnected', reason: clip(reason) });
  void (async () => {
    await disconnectQuietly(conn);
    await connectLoop(1, reason);
  })().catch(crash);
}

function exhausted(attempt: number, reason: string): void {
  finished = true;
  report({ t: 'reconnect', phase: 'exhausted', attempt, reason: clip(reason), class: 'recoverable' });
  // Let the notice leave before the thread ends (the main side also reads the exit code).
  setTimeout(() => process.exit(EXIT_RECONNECT_EXHAUSTED), 10);
}

// ---- connect loop -------------------------------------------------------------------------------

/**
 * Connects, starting at `firstAttempt` (0: the initial connect, reported as `status connecting`;
 * n > 0: reconnect attempt n, after its backoff delay). `cause` is what broke the connection.
 */
async function connectLoop(firstAttempt: number, cause?: string): Promise<void> {
  const { channel, backoff } = loaded as Loaded;
  const maxAttempts = Math.max(0, Math.floor(boot.reconnect.maxAttempts));
  const loopStart = performance.now();
  let originalReason = cause;
  let attempt = firstAttempt;
  if (attempt > maxAttempts) {
    // No reconnect attempt allowed at all (maxAttempts 0): the loss itself exhausts the budget.
    exhausted(maxAttempts, cause ?? 'connection lost');
    return;
  }
  for (;;) {
    if (stopped || finished) return;
    if (attempt === 0) {
      report({ t: 'status', status: 'connecting' });
    } else {
      const delayMs = Math.round(backoffDelay(backoff, attempt - 1));
      report({ t: 'reconnect', phase: 'scheduled', attempt, delayMs });
      await sleep(delayMs, stopController.signal);
      if (stopped) return;
      report({ t: 'reconnect', phase: 'attempt', attempt });
    }
    const conn = newConnection();
    const call = invoke('connect', boot.timeouts.connectMs, conn.controller.signal, (ctx) => channel.connect(ctx));
    connecting = { conn, call };
    let meta: unknown;
    try {
      meta = await call;
      conn.opened = true;
    } catch (err) {
      connecting = undefined;
      conn.controller.abort(err);
      if (stopped) return;
      const cls = classify(err);
      const reason = reasonOf('connect', err);
      originalReason ??= reason;
      report({ t: 'reconnect', phase: 'failed', attempt, reason, class: cls });
      if (cls === 'fatal') {
        enterFatal(reason, 'fatal_connect');
        return;
      }
      report({ t: 'status', status: 'disconnected', reason });
      if (attempt >= maxAttempts) {
        exhausted(attempt, reason);
        return;
      }
      attempt++;
      continue;
    }
    connecting = undefined;
    // A stop that arrived meanwhile closes this connection itself (see onStop).
    if (stopped) return;
    live = conn;
    wakeSenders();
    const info: Record<string, unknown> = isPlainRecord(meta) ? (cloneable(meta) as Record<string, unknown>) : {};
    if (attempt > 0) {
      info.attempts = attempt;
      if (originalReason !== undefined) info.reason = originalReason;
      info.elapsedMs = Math.round(performance.now() - loopStart);
    }
    report(Object.keys(info).length > 0 ? { t: 'status', status: 'connected', meta: info } : { t: 'status', status: 'connected' });
    if (channel.poll) void pollLoop(channel, conn).catch(crash);
    else if (channel.listen) runListen(channel, conn);
    if (channel.probe && boot.probe.intervalMs > 0) void probeLoop(channel, conn).catch(crash);
    return;
  }
}

// ---- inbound ------------------------------------------------------------------------------------

/** Handles an error of `poll` / `listen` on the open connection `conn`. Returns true to go on. */
function inboundError(op: 'poll' | 'listen', conn: Connection, err: unknown): boolean {
  if (conn.controller.signal.aborted) return false;
  const cls = classify(err);
  const reason = reasonOf(op, err);
  if (cls === 'degraded') {
    report({ t: 'failure', op, reason, class: cls });
    return true;
  }
  if (cls === 'fatal') enterFatal(reason, `fatal_${op}`, conn);
  else connectionLost(conn, reason);
  return false;
}

async function pollLoop(channel: AnyChannel, conn: Connection): Promise<void> {
  const poll = channel.poll as NonNullable<AnyChannel['poll']>;
  const signal = conn.controller.signal;
  while (!signal.aborted) {
    await inboundCredit(signal);
    if (signal.aborted) return;
    let batch: unknown;
    let cursor: unknown;
    try {
      batch = await invoke('poll', boot.timeouts.pollMs, signal, (ctx) => poll.call(channel, ctx));
      if (batch !== null && typeof batch === 'object' && !Array.isArray(batch) && Array.isArray((batch as { messages?: unknown }).messages)) {
        cursor = (batch as { cursor?: unknown }).cursor;
        batch = (batch as { messages: unknown[] }).messages;
      }
      if (batch !== undefined && batch !== null && !Array.isArray(batch)) {
        throw Object.assign(new Error(`poll returned ${typeof batch}, expected an array or { messages, cursor }`), { code: 'invalid_return' });
      }
    } catch (err) {
      if (!inboundError('poll', conn, err)) return;
      await sleep(boot.pollIdleMs, signal);
      continue;
    }
    const messages = (batch ?? []) as unknown[];
    // Messages already fetched are delivered even when the connection ended meanwhile.
    if (messages.length > 0 && !stopped) {
      postInbound(messages, cursor);
      await nextTurn();
    } else {
      await sleep(boot.pollIdleMs, signal);
    }
  }
}

function runListen(channel: AnyChannel, conn: Connection): void {
  const listen = channel.listen as NonNullable<AnyChannel['listen']>;
  const signal = conn.controller.signal;
  invoke('listen', Number.POSITIVE_INFINITY, signal, (ctx) => listen.call(channel, ctx)).then(
    () => {
      // Returning while its connection is still open means the stream ended: a recoverable loss.
      if (!signal.aborted) connectionLost(conn, 'listen returned: the stream ended');
    },
    (err: unknown) => {
      if (inboundError('listen', conn, err)) {
        // A degraded listen error still ended the stream.
        connectionLost(conn, reasonOf('listen', err));
      }
    },
  );
}

// ---- probes -------------------------------------------------------------------------------------

const OUTCOMES: readonly string[] = ['ok', 'degraded', 'failed'];

function readProbeResult(result: unknown): { outcome: ProbeOutcome; reason?: string } {
  if (result === undefined || result === null || result === true) return { outcome: 'ok' };
  if (result === false) return { outcome: 'failed', reason: 'probe returned false' };
  if (typeof result === 'string' && OUTCOMES.includes(result)) return { outcome: result as ProbeOutcome };
  const outcome = get(result, 'outcome');
  if (typeof outcome === 'string' && OUTCOMES.includes(outcome)) {
    const reason = get(result, 'reason');
    return typeof reason === 'string' ? { outcome: outcome as ProbeOutcome, reason: clip(reason) } : { outcome: outcome as ProbeOutcome };
  }
  return { outcome: 'degraded', reason: 'probe returned an unexpected result' };
}

async function probeLoop(channel: AnyChannel, conn: Connection): Promise<void> {
  const probe = channel.probe as NonNullable<AnyChannel['probe']>;
  const signal = conn.controller.signal;
  while (!signal.aborted) {
    const t0 = performance.now();
    let outcome: ProbeOutcome;
    let reason: string | undefined;
    let cls: FailureClass | undefined;
    try {
      ({ outcome, reason } = readProbeResult(await invoke('probe', boot.timeouts.probeMs, signal, (ctx) => probe.call(channel, ctx))));
      if (outcome === 'degraded') cls = 'degraded';
      else if (outcome === 'failed') cls = 'recoverable';
    } catch (err) {
      outcome = 'failed';
      reason = reasonOf('probe', err);
      cls = classify(err);
    }
    // A probe that ended with its connection says nothing about the next one.
    if (signal.aborted) return;
    const latencyMs = Math.max(0, Math.round((performance.now() - t0) * 1000) / 1000);
    const notice: LifecycleBody & { t: 'probe' } = { t: 'probe', outcome, latencyMs };
    if (reason !== undefined) notice.reason = reason;
    if (cls !== undefined) notice.class = cls;
    report(notice);
    if (outcome === 'failed' && cls !== 'degraded') {
      const why = reason ?? 'probe failed';
      if (cls === 'fatal') enterFatal(why, 'fatal_probe', conn);
      else connectionLost(conn, why);
      return;
    }
    await sleep(boot.probe.intervalMs, signal);
  }
}

// ---- API ----------------------------------------------------------------------------------------

async function load(): Promise<void> {
  const { channelDefinitionSchema } = await import('../src/channel.js');
  let mod: unknown;
  try {
    mod = await import(boot.channel);
  } catch (err) {
    enterFatal(clip(`channel module ${boot.channel} failed to load: ${describe(err)}`), 'channel_invalid');
    return;
  }
  const def = get(mod, 'default');
  if (def === undefined) {
    enterFatal(`channel module ${boot.channel} has no default export (expected defineChannel({...}))`, 'channel_invalid');
    return;
  }
  const parsed = channelDefinitionSchema.safeParse(def);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.map(String).join('.') || '(root)'}: ${i.message}`).join('; ');
    enterFatal(clip(`channel module ${boot.channel} is invalid: ${issues}`), 'channel_invalid');
    return;
  }
  const channel = def as AnyChannel;
  if (channel.type !== boot.instance.channelType) {
    enterFatal(
      `channel module ${boot.channel} has type '${channel.type}', but the instance's channelType is '${boot.instance.channelType}'`,
      'channel_invalid',
    );
    return;
  }
  loaded = {
    channel,
    backoff: { initialDelayMs: boot.reconnect.baseMs, maxDelayMs: boot.reconnect.maxMs, jitter: boot.reconnect.jitter, random: Math.random },
  };
}

function notConnected(): Error {
  return encodeWorkerError('ChannelError', 'recoverable', 'not_connected', `instance ${instanceId} is not connected`);
}

// ---- batched sends (the data plane) -------------------------------------------------------------
//
// The runtime posts batches of sends on the data port (a `seq` and parallel arrays: no wrapper
// object per message to clone); they are delivered one at a time, in order, once the channel is
// connected (until then they wait here, in flight from the runtime's view: if this thread dies
// the runtime puts them back at the head of its queue). Results go back batched, flushed once
// per event-loop turn: a run of successes as `{ seq, receipts }`, anything else as `results`.
// The loop yields a turn every few sends so a long batch never starves the heartbeat port.
//
// One watchdog timer, not a timer per send, enforces `sendMs`: it looks at the send in progress
// and, past its budget, aborts its signal, fails it, hands back what its epoch holds and starts
// a fresh loop (the old one, stuck awaiting a send that may never settle, is abandoned).

/** A batch from the runtime, held until every message in it is sent or handed back. */
interface HeldBatch {
  epoch: number;
  seq: number;
  messages: readonly unknown[];
  attempts: readonly number[] | undefined;
  keys: readonly (string | null)[] | undefined;
  redelivered: readonly boolean[] | undefined;
  /** Index of the next message to send. */
  next: number;
}

const held: HeldBatch[] = [];
let draining = false;
/** Bumped when the watchdog abandons a drain loop: the loop of an older generation stops. */
let drainGen = 0;
let connectedWaiters: Array<() => void> = [];

/** The send in progress (seq -1: none), judged by {@link onSendTimer}. */
let curSeq = -1;
let curEpoch = 0;
let curStartedAt = 0;
let sendTimer: NodeJS.Timeout | undefined;

/** The `SendInfo` of the common case, shared: first attempt, no key, not a redelivery. */
const FIRST_ATTEMPT: SendInfo = Object.freeze({ attempt: 1, redelivery: false });

// Acks: a run of consecutive successes, or a list of other results; one or the other is
// pending at a time, so their order on the port is the order they happened in.
let runSeq = 0;
let runReceipts: unknown[] = [];
let results: SendResult[] = [];
let ackScheduled = false;

function flushAcks(): void {
  ackScheduled = false;
  flushRun();
  flushResults();
}

/** Column encoding of the receipt runs (see columns.ts). */
const receiptColumns = new ColumnEncoder();

function flushRun(): void {
  const n = runReceipts.length;
  if (n === 0) return;
  const receipts = runReceipts;
  runReceipts = [];
  // Receipts of one flat shape (the common case) go in columns: see columns.ts.
  const cols = receiptColumns.encode(receipts);
  if (cols !== undefined) {
    port.postMessage({ t: 'acks', i: iid, seq: runSeq, n, fields: cols.fields, columns: cols.columns } satisfies Notice);
    return;
  }
  try {
    port.postMessage({ t: 'acks', i: iid, seq: runSeq, receipts } satisfies Notice);
  } catch {
    port.postMessage({ t: 'acks', i: iid, seq: runSeq, receipts: receipts.map((r) => cloneable(r) ?? null) } satisfies Notice);
  }
}

function flushResults(): void {
  if (results.length === 0) return;
  const list = results;
  results = [];
  try {
    port.postMessage({ t: 'acks', i: iid, results: list } satisfies Notice);
  } catch {
    port.postMessage({ t: 'acks', i: iid, results: list.map((r) => (r.ok ? { ...r, receipt: cloneable(r.receipt) ?? null } : r)) } satisfies Notice);
  }
}

function scheduleAcks(): void {
  if (!ackScheduled) {
    ackScheduled = true;
    setImmediate(flushAcks);
  }
}

function ackOk(seq: number, receipt: unknown): void {
  if (results.length > 0) flushResults();
  else if (runReceipts.length > 0 && seq !== runSeq + runReceipts.length) flushRun();
  if (runReceipts.length === 0) runSeq = seq;
  runReceipts.push(receipt);
  scheduleAcks();
}

function ackResult(result: SendResult): void {
  flushRun();
  results.push(result);
  scheduleAcks();
}

/** Resolves with the live connection, waiting for one; undefined once stopping. */
async function whenConnected(): Promise<Connection | undefined> {
  for (;;) {
    if (stopped) return undefined;
    const conn = live;
    if (conn && !conn.controller.signal.aborted) return conn;
    await new Promise<void>((resolve) => {
      // Re-check every 50 ms (`live` also changes where no waiter is woken); a waiter that timed
      // out leaves the list, so it does not grow while the channel stays down.
      const timer = setTimeout(() => {
        const i = connectedWaiters.indexOf(wake);
        if (i >= 0) connectedWaiters.splice(i, 1);
        resolve();
      }, 50);
      timer.unref();
      const wake = (): void => {
        clearTimeout(timer);
        resolve();
      };
      connectedWaiters.push(wake);
    });
  }
}

function wakeSenders(): void {
  const waiters = connectedWaiters;
  connectedWaiters = [];
  for (const w of waiters) w();
}

/**
 * The newest epoch handed back. A batch of that epoch or older that arrives later was posted
 * before the runtime learnt of the failure: it goes back unsent as well, or its messages would
 * overtake the one that failed.
 */
let returnedEpoch = -1;

/** After a failed send: hand back, unsent, the held messages the runtime will resend after it. */
function returnHeld(epoch: number): void {
  if (epoch > returnedEpoch) returnedEpoch = epoch;
  let kept = 0;
  for (const b of held) {
    if (b.epoch <= epoch) {
      for (let i = b.next; i < b.messages.length; i++) ackResult({ seq: b.seq + i, ok: false, unsent: true });
    } else held[kept++] = b;
  }
  held.length = kept;
}

/**
 * The sends' own context: one AbortController per connection "lane", child of the connection's
 * signal, replaced only after a send's budget aborted it. Sends run one at a time, so the
 * aborted lane is exactly the timed-out send's; the hot path allocates no controller per send.
 */
let lane: { conn: Connection; controller: AbortController; ctx: ChannelContext; unlink: () => void } | undefined;

function laneFor(conn: Connection): { conn: Connection; controller: AbortController; ctx: ChannelContext } {
  if (lane && lane.conn === conn && !lane.controller.signal.aborted) return lane;
  lane?.unlink(); // the replaced lane no longer listens to its connection
  const controller = new AbortController();
  const parent = conn.controller.signal;
  const onAbort = (): void => controller.abort(parent.reason);
  if (parent.aborted) controller.abort(parent.reason);
  else parent.addEventListener('abort', onAbort, { once: true });
  lane = { conn, controller, ctx: contextFor(controller.signal), unlink: () => parent.removeEventListener('abort', onAbort) };
  return lane;
}

function sendFailure(seq: number, err: unknown): SendResult {
  return { seq, ok: false, error: wireError(classify(err), codeOf(err) ?? 'error', reasonOf('send', err)) };
}

/** The send watchdog: fails the send in progress once it is past `sendMs`. */
function onSendTimer(): void {
  sendTimer = undefined;
  if (curSeq < 0 || stopped) return; // idle: the next send arms it again
  const ms = boot.timeouts.sendMs;
  const elapsed = performance.now() - curStartedAt;
  if (elapsed < ms) {
    sendTimer = setTimeout(onSendTimer, Math.ceil(ms - elapsed));
    return;
  }
  const err = new TimeoutError('send', ms);
  lane?.controller.abort(err);
  drainGen++;
  draining = false;
  const seq = curSeq;
  curSeq = -1;
  ackResult(sendFailure(seq, err));
  returnHeld(curEpoch);
  if (held.length > 0) void drainSends().catch(crash);
}

async function drainSends(): Promise<void> {
  draining = true;
  const gen = drainGen;
  const ms = boot.timeouts.sendMs;
  let sinceYield = 0;
  let lastYield = performance.now();
  while (held.length > 0) {
    const b = held[0] as HeldBatch;
    if (b.next >= b.messages.length) {
      held.shift();
      continue;
    }
    const current = live;
    const conn = current && !current.controller.signal.aborted ? current : await whenConnected();
    if (gen !== drainGen) return;
    const channel = loaded?.channel;
    if (!conn || !channel) break;
    if (b !== held[0]) continue; // handed back while waiting for a connection
    const i = b.next++;
    const seq = b.seq + i;
    const attempt = b.attempts?.[i] ?? 1;
    const key = b.keys?.[i] ?? undefined;
    const redelivery = b.redelivered?.[i] === true;
    const info: SendInfo =
      attempt === 1 && key === undefined && !redelivery ? FIRST_ATTEMPT : key === undefined ? { attempt, redelivery } : { idempotencyKey: key, attempt, redelivery };
    const now = performance.now();
    curSeq = seq;
    curEpoch = b.epoch;
    curStartedAt = now;
    sendTimer ??= setTimeout(onSendTimer, ms);
    let receipt: unknown;
    let error: unknown;
    let failed = false;
    try {
      const r = channel.send(laneFor(conn).ctx, b.messages[i], info);
      receipt = r !== null && typeof (r as { then?: unknown } | undefined)?.then === 'function' ? await r : r;
    } catch (err) {
      failed = true;
      error = err;
    }
    if (gen !== drainGen) return; // abandoned by the watchdog: this send was already failed
    curSeq = -1;
    if (failed) {
      ackResult(sendFailure(seq, error));
      returnHeld(b.epoch);
    } else ackOk(seq, receipt);
    // Yield a turn every 128 sends or 2 ms, whichever first: acks go out, heartbeats get through.
    if (++sinceYield >= 128 || now - lastYield >= 2) {
      sinceYield = 0;
      await nextTurn();
      if (gen !== drainGen) return;
      lastYield = performance.now();
    }
  }
  draining = false;
}

port.on('message', (message: unknown) => {
  if ((message as { i?: unknown } | null)?.i !== iid) return; // not about this instance
  const upTo = readInboundAck(message);
  if (upTo !== undefined) {
    onInboundAck(upTo);
    return;
  }
  const batch = readSendBatch(message);
  if (batch === undefined) return;
  if (batch.epoch <= returnedEpoch) {
    for (let i = 0; i < batch.messages.length; i++) ackResult({ seq: batch.seq + i, ok: false, unsent: true });
    return;
  }
  held.push({ ...batch, next: 0 });
  if (!draining) void drainSends().catch(crash);
});

const api: InstanceWorkerApi = {
  start() {
    // The channel was loaded before ready; a fatal load error was already reported.
    if (!starting) {
      starting = Promise.resolve();
      if (!stopped && loaded) void connectLoop(0).catch(crash);
    }
    return starting;
  },

  async send(message: unknown) {
    const channel = loaded?.channel;
    const conn = live;
    if (!channel || !conn || stopped || conn.controller.signal.aborted) throw notConnected();
    try {
      const receipt = await invoke('send', boot.timeouts.sendMs, conn.controller.signal, (ctx) => channel.send(ctx, message, { attempt: 1, redelivery: false }));
      post({ t: 'success', op: 'send' });
      return receipt;
    } catch (err) {
      const cls = classify(err);
      const reason = reasonOf('send', err);
      post({ t: 'failure', op: 'send', reason, class: cls });
      const name = err instanceof Error ? err.name : 'Error';
      throw encodeWorkerError(name, cls, codeOf(err) ?? 'error', reason);
    }
  },
};

async function onStop(): Promise<void> {
  stopped = true;
  if (sendTimer) clearTimeout(sendTimer);
  sendTimer = undefined;
  stopController.abort(new Error('stopping'));
  flushOutbox();
  const pending = connecting;
  const conn = live;
  live = undefined;
  if (pending) {
    pending.conn.controller.abort(new Error('stopping'));
    // A connect that still succeeds is closed below; one that ignores its signal ends by its budget.
    await pending.call.then(
      () => {
        pending.conn.opened = true;
      },
      () => undefined,
    );
    await disconnectQuietly(pending.conn);
  }
  if (conn) {
    conn.controller.abort(new Error('stopping'));
    await disconnectQuietly(conn);
  }
}

// Load zod and the channel module before reporting ready: evaluating modules blocks this
// thread's event loop (heartbeat answers included), so it belongs under the ready timeout, not
// under the heartbeat, which would take a slow load on a busy machine for a hang.
await load();
serve(api, { onStop });
