/**
 * The built-in `loopback` channel: an in-memory platform for tests, benchmarks and the demo. It
 * talks to nothing; every behaviour is driven by the instance's `settings`, so failures, hangs and
 * crashes can be staged on purpose. Its state (counters, sequence numbers, a pending fault) is kept
 * per instance, in its worker: instances that share a worker do not see each other's, and a
 * restarted worker starts from zero (an instance restarted in place in its worker keeps it). (An
 * exit, hang or OOM fault ends the whole worker, and every instance it hosts, as a real one
 * would; a crash, an uncaught throw from the instance's `send`, is attributed to it in a shared
 * worker, and only it restarts.)
 *
 * Settings (all optional; unknown keys are ignored, a known key of the wrong type fails `connect`
 * with a fatal `ChannelError`, channel code `invalid_config`, naming the setting):
 *
 * | setting | default | effect |
 * |---|---|---|
 * | `latencyMs` | `0` | Delay of every `connect` and `send` (aborted by `ctx.signal`). |
 * | `connectFailures` | `0` | The first N connects of the instance in this worker fail recoverable (`ECONNREFUSED`). |
 * | `fatalConnect` | `false` | Every connect fails fatal, like rejected credentials (`ChannelError` class `fatal`, code `unauthorized`, HTTP 401). |
 * | `requireToken` | none | Connect fails fatal (code `invalid_token`, HTTP 401) unless `credentials.token` equals it. The error never contains either token. |
 * | `sendFailures` | `0` | The first N sends of the instance in this worker fail recoverable (code `temporary_unavailable`, HTTP 503). |
 * | `inbound` | none | `{ ratePerSec, rooms?, batch?, limit? }`: `poll` returns generated messages `{ id, room, text, seq }` at `ratePerSec` (`Infinity`: a full batch on every poll), spread over `rooms` (a count, default 1, or a list of names), at most `batch` (default 100) per poll and `limit` (default unbounded) per instance in a worker. `seq` increases by one per message, across reconnects. |
 * | `echo` | `false` | Every sent message comes back on the next poll as `{ id, room, text, seq, echo: message }`. |
 * | `probe` | `'ok'` | What `probe` does: `ok`, `degraded` (returns degraded), `failed` (returns failed: a recoverable probe failure), `fatal` (throws a fatal error), `hang` (never settles). |
 * | `hangOn` | none | `connect`, `disconnect`, `send`, `poll` or `probe`: that callback never settles (to exercise timeout budgets). |
 * | `faults` | `false` | When true, `send({ fault })` injects a fault once the send has returned (not when the message is a redelivery, so a fault kills one worker, not each one the message is redelivered to): `crash` (uncaught throw on the next turn), `exit` (`process.exit(3)`), `hang` (busy loop forever), `oom` (allocates without bound), `disconnect` (the next poll throws `ECONNRESET`, recoverable), `fatal` (the next poll throws a fatal error). |
 *
 * `connect` returns `{ loopback: true, connects }`; `send` resolves with `{ externalId: 'lb-<n>' }`.
 * The channel logs `loopback connected` / `loopback disconnected` (level `info`) through
 * `ctx.logger`, so tests can see that the runtime called them.
 *
 * @packageDocumentation
 */
import { defineChannel, type ChannelContext, type ChannelHandlers, type SettingsSchema } from '../../src/channel.js';
import { ChannelError } from '../../src/errors.js';

/** Milliseconds on the monotonic clock: `performance` would load Node's perf modules in every worker (about 0.9 ms a start). */
const nowMs = (): number => Number(process.hrtime.bigint()) / 1e6;

/** The `inbound` setting of the loopback channel. */
export interface LoopbackInbound {
  /** Messages per second (`Infinity`: a full batch on every poll). */
  ratePerSec: number;
  /** A number of rooms (named `room-0` …) or the room names. Default 1. */
  rooms?: number | string[];
  /** At most this many messages per poll. Default 100. */
  batch?: number;
  /** At most this many messages per worker in total. Default unbounded. */
  limit?: number;
}

/** A callback of the loopback channel that can be made to hang. */
export type LoopbackHangOn = 'connect' | 'disconnect' | 'send' | 'poll' | 'probe';

/**
 * The loopback channel's settings (`startInstance({ channel: 'loopback', settings })`); see the
 * table at the top of the module. Exported from `threadvisor` as a type. A type alias, not an
 * interface, so that it is assignable to `StartInstanceOptions['settings']` (`Record<string, unknown>`).
 */
export type LoopbackSettings = {
  /** Delay of every connect and send, ms (default 0). */
  latencyMs?: number;
  /** The first N connects of the worker fail recoverable (default 0). */
  connectFailures?: number;
  /** Every connect fails fatal, like rejected credentials. */
  fatalConnect?: boolean;
  /** Connect fails fatal unless `credentials.token` equals this. */
  requireToken?: string;
  /** The first N sends of the worker fail recoverable (default 0). */
  sendFailures?: number;
  /** Generated inbound traffic for `poll`. */
  inbound?: LoopbackInbound;
  /** Sent messages come back on the next poll. */
  echo?: boolean;
  /** What `probe` does (default `ok`). */
  probe?: 'ok' | 'degraded' | 'failed' | 'fatal' | 'hang';
  /** A callback that never settles. */
  hangOn?: LoopbackHangOn;
  /** Lets `send({ fault })` inject faults. */
  faults?: boolean;
};

/** A fault `send({ fault })` can inject when `faults` is on. */
export type LoopbackFault = 'crash' | 'exit' | 'hang' | 'oom' | 'disconnect' | 'fatal';

/** One generated inbound message. */
export interface LoopbackMessage {
  id: string;
  room: string;
  text: string;
  seq: number;
  /** The sent message, for messages that came back through `echo`. */
  echo?: unknown;
}

/** What `send` resolves with. */
export interface LoopbackReceipt {
  externalId: string;
}

const FAULTS: readonly string[] = ['crash', 'exit', 'hang', 'oom', 'disconnect', 'fatal'];
const PROBES: readonly string[] = ['ok', 'degraded', 'failed', 'fatal', 'hang'];
const HANGS: readonly string[] = ['connect', 'disconnect', 'send', 'poll', 'probe'];

interface Resolved {
  latencyMs: number;
  connectFailures: number;
  fatalConnect: boolean;
  requireToken: string | undefined;
  sendFailures: number;
  inbound: { ratePerSec: number; rooms: string[]; batch: number; limit: number } | undefined;
  echo: boolean;
  probe: string;
  hangOn: string | undefined;
  faults: boolean;
}

// ---- per-instance state --------------------------------------------------------------------------

/** What one instance's loopback remembers (in its worker; a restarted worker starts from zero). */
interface State {
  connects: number;
  sends: number;
  seq: number;
  generated: number;
  generatedThisConnection: number;
  connectedAt: number;
  pendingFault: 'disconnect' | 'fatal' | undefined;
  echoes: LoopbackMessage[];
  cache: { source: unknown; settings: Resolved } | undefined;
}

const states = new Map<string, State>();
let spins = 0;

/** The state of the instance `ctx` serves. */
function stateOf(ctx: ChannelContext): State {
  let st = states.get(ctx.instance.id);
  if (!st) {
    st = { connects: 0, sends: 0, seq: 0, generated: 0, generatedThisConnection: 0, connectedAt: 0, pendingFault: undefined, echoes: [], cache: undefined };
    states.set(ctx.instance.id, st);
  }
  return st;
}

/** A bad setting: a fatal `invalid_config` error naming it (`setting` is its dotted path). */
function invalid(path: string, expected: string): ChannelError & { setting: string } {
  return Object.assign(new ChannelError(`loopback: setting ${path} must be ${expected}`, { class: 'fatal', code: 'invalid_config' }), { setting: path });
}

function count(raw: Record<string, unknown>, key: string, fallback: number): number {
  const v = raw[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'number' || !(v >= 0)) throw invalid(key, 'a number >= 0');
  return v;
}

function flag(raw: Record<string, unknown>, key: string): boolean {
  const v = raw[key];
  if (v === undefined) return false;
  if (typeof v !== 'boolean') throw invalid(key, 'a boolean');
  return v;
}

function oneOf(raw: Record<string, unknown>, key: string, allowed: readonly string[]): string | undefined {
  const v = raw[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !allowed.includes(v)) throw invalid(key, `one of ${allowed.join(', ')}`);
  return v;
}

function resolveInbound(v: unknown): Resolved['inbound'] {
  if (v === undefined) return undefined;
  if (typeof v !== 'object' || v === null) throw invalid('inbound', 'an object');
  const raw = v as Record<string, unknown>;
  const ratePerSec = count(raw, 'ratePerSec', 0);
  const batch = count(raw, 'batch', 100);
  const limit = count(raw, 'limit', Number.POSITIVE_INFINITY);
  let rooms: string[];
  if (raw.rooms === undefined) rooms = ['room-0'];
  else if (typeof raw.rooms === 'number' && Number.isInteger(raw.rooms) && raw.rooms >= 1) {
    rooms = Array.from({ length: raw.rooms }, (_, i) => `room-${i}`);
  } else if (Array.isArray(raw.rooms) && raw.rooms.length > 0 && raw.rooms.every((r) => typeof r === 'string')) {
    rooms = raw.rooms as string[];
  } else throw invalid('inbound.rooms', 'an integer >= 1 or a non-empty list of names');
  return { ratePerSec, rooms, batch: Math.floor(batch), limit };
}

/** The resolved settings, parsed once per settings object. */
function settingsOf(ctx: ChannelContext): Resolved {
  const st = stateOf(ctx);
  const source = ctx.instance.settings;
  if (st.cache?.source === source) return st.cache.settings;
  const settings = resolveSettings(source);
  st.cache = { source, settings };
  return settings;
}

const SETTINGS: readonly string[] = ['latencyMs', 'connectFailures', 'fatalConnect', 'requireToken', 'sendFailures', 'inbound', 'echo', 'probe', 'hangOn', 'faults'];
const INBOUND_SETTINGS: readonly string[] = ['ratePerSec', 'rooms', 'batch', 'limit'];

/**
 * The schema of {@link LoopbackSettings} (the table at the top of the module): the runtime checks
 * it at `startInstance`, so bad settings fail there with `invalid_config`. Unknown keys are
 * refused (they are usually typos). Written by hand on the parser `connect` uses (no schema
 * library: this module loads in every loopback worker), so the two cannot disagree.
 */
export const loopbackSettingsSchema: SettingsSchema = {
  safeParse(value: unknown) {
    const issues: Array<{ path: string[]; message: string }> = [];
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      return { success: false, error: { issues: [{ path: [], message: 'expected an object' }] } };
    }
    for (const key of Object.keys(value)) if (!SETTINGS.includes(key)) issues.push({ path: [key], message: 'unknown setting' });
    const inbound = (value as { inbound?: unknown }).inbound;
    if (typeof inbound === 'object' && inbound !== null) {
      for (const key of Object.keys(inbound)) if (!INBOUND_SETTINGS.includes(key)) issues.push({ path: ['inbound', key], message: 'unknown setting' });
      if ((inbound as { ratePerSec?: unknown }).ratePerSec === undefined) issues.push({ path: ['inbound', 'ratePerSec'], message: 'required' });
    }
    try {
      resolveSettings(value);
    } catch (err) {
      const setting = (err as { setting?: unknown }).setting;
      if (typeof setting !== 'string') throw err;
      issues.push({ path: setting.split('.'), message: (err as Error).message.replace(/^loopback: /, '') });
    }
    return issues.length === 0 ? { success: true } : { success: false, error: { issues } };
  },
};

function resolveSettings(source: unknown): Resolved {
  const raw = (typeof source === 'object' && source !== null ? source : {}) as Record<string, unknown>;
  if (raw.requireToken !== undefined && typeof raw.requireToken !== 'string') throw invalid('requireToken', 'a string');
  const settings: Resolved = {
    latencyMs: count(raw, 'latencyMs', 0),
    connectFailures: count(raw, 'connectFailures', 0),
    fatalConnect: flag(raw, 'fatalConnect'),
    requireToken: raw.requireToken as string | undefined,
    sendFailures: count(raw, 'sendFailures', 0),
    inbound: resolveInbound(raw.inbound),
    echo: flag(raw, 'echo'),
    probe: oneOf(raw, 'probe', PROBES) ?? 'ok',
    hangOn: oneOf(raw, 'hangOn', HANGS),
    faults: flag(raw, 'faults'),
  };
  return settings;
}

const never = (): Promise<never> => new Promise<never>(() => undefined);

/** Waits `ms` (nothing when 0); rejects with the signal's reason once it aborts. */
function delay(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  if (ms <= 0) return Promise.resolve();
  return new Promise<void>((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function networkError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

function inject(st: State, fault: LoopbackFault): void {
  switch (fault) {
    case 'disconnect':
    case 'fatal':
      st.pendingFault = fault;
      return;
    case 'crash':
      setImmediate(() => {
        throw new Error('loopback: injected crash');
      });
      return;
    case 'exit':
      setImmediate(() => process.exit(3));
      return;
    case 'hang':
      setImmediate(() => {
        for (;;) spins++;
      });
      return;
    case 'oom':
      setImmediate(() => {
        const hoard: number[][] = [];
        for (;;) hoard.push(new Array<number>(100_000).fill(spins++));
      });
      return;
  }
}

function generate(st: State, s: NonNullable<Resolved['inbound']>): LoopbackMessage[] {
  if (!(s.ratePerSec > 0) || st.generated >= s.limit) return [];
  const due =
    s.ratePerSec === Number.POSITIVE_INFINITY
      ? s.batch
      : Math.floor(((nowMs() - st.connectedAt) * s.ratePerSec) / 1000) - st.generatedThisConnection;
  const n = Math.min(due, s.batch, s.limit - st.generated);
  const out: LoopbackMessage[] = [];
  for (let i = 0; i < n; i++) {
    const seq = ++st.seq;
    const room = s.rooms[(seq - 1) % s.rooms.length] as string;
    out.push({ id: `in-${seq}`, room, text: `message ${seq}`, seq });
  }
  st.generated += out.length;
  st.generatedThisConnection += out.length;
  return out;
}

/** The callbacks of every loopback instance (their state is the instance's, see `stateOf`). */
const handlers: ChannelHandlers<unknown, LoopbackReceipt> = {
  async connect(ctx) {
    const s = settingsOf(ctx);
    const st = stateOf(ctx);
    if (s.hangOn === 'connect') return never();
    await delay(s.latencyMs, ctx.signal);
    const connects = ++st.connects;
    if (s.fatalConnect) {
      throw Object.assign(new ChannelError('loopback: credentials rejected (HTTP 401)', { class: 'fatal', code: 'unauthorized' }), {
        status: 401,
      });
    }
    if (s.requireToken !== undefined && ctx.instance.credentials.token !== s.requireToken) {
      // Neither the expected nor the given token goes into the message.
      throw Object.assign(new ChannelError('loopback: invalid token (HTTP 401)', { class: 'fatal', code: 'invalid_token' }), {
        status: 401,
      });
    }
    if (connects <= s.connectFailures) {
      throw networkError(`loopback: connection refused (simulated failure ${connects} of ${s.connectFailures})`, 'ECONNREFUSED');
    }
    // Resume after the last message the runtime handled (its cursor survives worker restarts).
    if (typeof ctx.cursor === 'number' && ctx.cursor > st.seq) st.seq = ctx.cursor;
    st.connectedAt = nowMs();
    st.generatedThisConnection = 0;
    ctx.logger.info('loopback connected', { connects });
    return { loopback: true, connects };
  },

  async disconnect(ctx) {
    const s = settingsOf(ctx);
    if (s.hangOn === 'disconnect') return never();
    ctx.logger.info('loopback disconnected');
  },

  async send(ctx, message, info) {
    const s = settingsOf(ctx);
    const st = stateOf(ctx);
    if (s.hangOn === 'send') return never();
    if (s.latencyMs > 0) await delay(s.latencyMs, ctx.signal);
    const sends = ++st.sends;
    if (sends <= s.sendFailures) {
      throw Object.assign(networkError(`loopback: send failed (simulated failure ${sends} of ${s.sendFailures})`, 'temporary_unavailable'), {
        status: 503,
      });
    }
    const externalId = `lb-${sends}`;
    const fault = typeof message === 'object' && message !== null ? (message as { fault?: unknown }).fault : undefined;
    // A fault fires on first delivery only: redelivered after the worker it killed, it goes through.
    if (s.faults && typeof fault === 'string' && FAULTS.includes(fault) && !info?.redelivery) inject(st, fault as LoopbackFault);
    if (s.echo) {
      const m = (typeof message === 'object' && message !== null ? message : {}) as { room?: unknown; text?: unknown };
      st.echoes.push({
        id: `echo-${externalId}`,
        room: typeof m.room === 'string' ? m.room : 'echo',
        text: typeof m.text === 'string' ? m.text : typeof message === 'string' ? message : '',
        seq: ++st.seq,
        echo: message,
      });
    }
    return { externalId };
  },

  async poll(ctx) {
    const s = settingsOf(ctx);
    const st = stateOf(ctx);
    if (s.hangOn === 'poll') return never();
    const fault = st.pendingFault;
    st.pendingFault = undefined;
    if (fault === 'disconnect') throw networkError('loopback: connection reset (injected)', 'ECONNRESET');
    if (fault === 'fatal') {
      throw new ChannelError('loopback: credentials revoked (injected)', { class: 'fatal', code: 'unauthorized' });
    }
    const out: LoopbackMessage[] = st.echoes.splice(0, st.echoes.length);
    if (s.inbound) out.push(...generate(st, s.inbound));
    return { messages: out, cursor: st.seq };
  },

  async probe(ctx) {
    const s = settingsOf(ctx);
    if (s.hangOn === 'probe' || s.probe === 'hang') return never();
    switch (s.probe) {
      case 'degraded':
        return { outcome: 'degraded', reason: 'loopback: degraded (simulated)' };
      case 'failed':
        return { outcome: 'failed', reason: 'loopback: probe failed (simulated)' };
      case 'fatal':
        throw new ChannelError('loopback: credentials revoked (simulated probe)', { class: 'fatal', code: 'unauthorized' });
      default:
        return 'ok';
    }
  },
};

/** The same, without `poll`: for an instance that has nothing to poll. */
const { poll: _poll, ...withoutPoll } = handlers;

/**
 * The loopback channel (`type: 'loopback'`), in factory form: an instance with nothing to poll (no
 * `inbound`, no `echo`, no `faults`, no `hangOn: 'poll'`) gets no `poll`, so an idle instance costs
 * its worker nothing between sends (thousands of them share a few workers). Settings that cannot
 * be read keep every callback: `connect` reports them.
 */
export default defineChannel<unknown, LoopbackReceipt>({
  type: 'loopback',
  settingsSchema: loopbackSettingsSchema,
  create(instance) {
    let s: Resolved;
    try {
      s = resolveSettings(instance.settings);
    } catch {
      return handlers;
    }
    return s.inbound || s.echo || s.faults || s.hangOn === 'poll' ? handlers : withoutPoll;
  },
});
