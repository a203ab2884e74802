/**
 * One hosted instance inside an instance worker: its channel, its connection (connect and
 * reconnect, inbound, probes), its inbound credit and its send drain. Everything that was
 * module-level state of the worker lives here, so a worker can host several instances, each
 * with its own; the worker host (`../instance-worker.ts`) routes the data port's messages to
 * them by instance number.
 *
 * What the context posts is addressed with its instance number (`i`). The notice sequences are
 * described in `../instance-worker.ts`.
 *
 * @packageDocumentation
 */
import { monotonicMs } from '../../src/wire/clock.js';
import type { ChannelContext, ChannelDefinition, ChannelFactory, ChannelLogger } from '../../src/channel.js';
import { instantiate } from './channel-module.js';
import { TimeoutError } from '../../src/errors.js';
import type { BackoffPolicy } from '../../src/wire/backoff.js';
import { classifyError } from '../../src/wire/classify.js';
import type { FailureClass } from '../../src/wire/errors.js';
import type { InstanceBoot, LifecycleBody, LogLevel, Notice, StartResult } from '../../src/wire/protocol.js';
import { readInboundAck, readSendBatch } from '../../src/wire/validate.js';
import { connectLoop } from './connect.js';
import { Inbound } from './inbound.js';
import { SendDrain } from './send-drain.js';
import { clip, cloneable, crash, isPlainRecord, reasonOf, type Op } from './util.js';
import { MAX_TIMER_MS } from '../../src/wire/timers.js';
import { runAs } from './fault.js';
import { fenceView, isFenced } from '../../src/wire/fence.js';

/** A channel definition as the worker runs it (message, receipt and settings types erased). */
export type AnyChannel = ChannelDefinition<unknown, unknown, Record<string, unknown>, Record<string, unknown>>;

/** What a context needs of its boot: everything but the data port. */
export type InstanceConfig = Omit<InstanceBoot, 'data'>;

/** Posts one message on the worker's data port (the host's port, shared by its instances). */
export type Poster = (message: Notice) => void;

/** One connection generation: its signal aborts when it ends. */
export interface Connection {
  readonly controller: AbortController;
  /** `connect` resolved for this generation (so `disconnect` is due when it ends). */
  opened: boolean;
  /** The attempt that made it (0: the initial connect). */
  attempt: number;
  /** When it opened (`monotonicMs()`), or 0. */
  openedAt: number;
}

/** One hosted instance. */
export class InstanceContext {
  /** The instance's number on the wire. */
  readonly iid: number;
  readonly config: InstanceConfig;
  /** The channel, or `undefined` when its module could not be used (`start()` answers why). */
  readonly channel: AnyChannel | undefined;
  /** Why the channel module could not be used. */
  readonly #loadFailure: string | undefined;
  readonly backoff: BackoffPolicy;
  readonly inbound: Inbound;
  readonly sends: SendDrain;
  /** What the channel sees as `ctx.instance`. */
  readonly instance: ChannelContext['instance'];
  readonly logger: ChannelLogger;
  /** A graceful stop has begun: nothing more is reported or attempted. */
  stopped = false;
  /** An error escaped one of its callbacks (see {@link InstanceContext.fault}). */
  faulted = false;
  /** Fatal error posted, or reconnects exhausted: nothing more is attempted. */
  finished = false;
  readonly stopController = new AbortController();
  /** The open connection (connect resolved, not lost). */
  live: Connection | undefined;
  /** The connection being established, and its `connect` call. */
  connecting: { conn: Connection; call: Promise<unknown> } | undefined;
  #starting: Promise<StartResult> | undefined;
  readonly #send: Poster;
  /** Cluster mode: the node's lease deadline. */
  readonly #fence: Float64Array | undefined;

  constructor(config: InstanceConfig, loaded: AnyChannel | ChannelFactory | string, send: Poster) {
    this.iid = config.iid;
    this.config = config;
    this.#send = send;
    this.#fence = config.fence ? fenceView(config.fence) : undefined;
    const r = config.reconnect;
    this.backoff = { initialDelayMs: r.initialDelayMs, maxDelayMs: r.maxDelayMs, jitter: r.jitter, random: Math.random };
    this.instance = Object.freeze({
      id: config.instance.id,
      name: config.instance.name,
      channelType: config.instance.channelType,
      settings: config.instance.settings ?? {},
      credentials: config.instance.credentials ?? {},
    });
    const log = (level: LogLevel) => (msg: unknown, obj?: unknown) => this.log(level, msg, obj);
    this.logger = { trace: log('trace'), debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
    // A factory makes this instance's own callbacks (on its behalf: what it schedules is its own).
    const made = typeof loaded === 'string' ? { ok: false as const, reason: loaded } : runAs(this.iid, () => instantiate(loaded, this.instance));
    this.channel = made.ok ? made.channel : undefined;
    this.#loadFailure = made.ok ? undefined : made.reason;
    if (this.#loadFailure !== undefined) this.finished = true;
    this.inbound = new Inbound(this, config.inboundWindow ?? 0, config.cursor);
    this.sends = new SendDrain(this);
  }

  // ---- posting ----------------------------------------------------------------------------------

  /** Posts a message on the data port as it is (already addressed). */
  postRaw(message: Notice): void {
    this.#send(message);
  }

  /** Posts a notice about this instance (addressed with its number, `i`). */
  post(body: LifecycleBody): void {
    const notice = { ...body, i: this.iid } as Notice;
    try {
      this.#send(notice);
    } catch {
      // Only inbound batches and log objects can fail to clone; both are copied before posting.
      this.#send(cloneable(notice) as Notice);
    }
  }

  /** Posts a lifecycle notice unless a graceful stop has begun. */
  report(body: LifecycleBody): void {
    if (!this.stopped) this.post(body);
  }

  log(level: LogLevel, msg: unknown, obj?: unknown): void {
    const notice: LifecycleBody & { t: 'log' } = { t: 'log', level, msg: typeof msg === 'string' ? msg : String(msg) };
    if (obj !== undefined) {
      const copy = cloneable(obj);
      notice.obj = isPlainRecord(copy) ? copy : { value: copy };
    }
    this.post(notice);
  }

  /** Cluster mode: the node's lease deadline has passed: neither poll nor send until it moves on. */
  fenced(): boolean {
    return this.#fence !== undefined && isFenced(this.#fence);
  }

  // ---- channel calls ----------------------------------------------------------------------------

  contextFor(signal: AbortSignal): ChannelContext {
    const ctx: ChannelContext = { instance: this.instance, logger: this.logger, signal, emit: this.inbound.emit, cursor: this.inbound.resumeCursor };
    return this.config.fencingToken === undefined ? ctx : { ...ctx, fencingToken: this.config.fencingToken };
  }

  classify(err: unknown): FailureClass {
    const channel = this.channel;
    return classifyError(err, channel?.classify?.bind(channel));
  }

  /**
   * Runs one channel callback under its budget. Its `ctx.signal` aborts when `parent` aborts or the
   * budget runs out (which rejects with {@link TimeoutError}). `ms` <= 0 or not finite: no budget.
   */
  invoke<T>(op: Op, ms: number, parent: AbortSignal | undefined, fn: (ctx: ChannelContext) => T | Promise<T>): Promise<T> {
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
      if (Number.isFinite(ms) && ms > 0 && ms <= MAX_TIMER_MS) {
        timer = setTimeout(() => {
          const err = new TimeoutError(op, ms);
          controller.abort(err);
          reject(err);
        }, ms);
      }
      let result: T | Promise<T>;
      try {
        // Whatever the callback schedules carries this instance's number (fault attribution).
        result = runAs(this.iid, () => fn(this.contextFor(controller.signal)));
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

  // ---- connection state -------------------------------------------------------------------------

  async disconnectQuietly(conn: Connection): Promise<void> {
    const channel = this.channel;
    if (!channel || !conn.opened) return;
    conn.opened = false;
    try {
      await this.invoke('disconnect', this.config.timeouts.disconnectMs, undefined, (ctx) => channel.disconnect(ctx));
    } catch (err) {
      this.log('warn', 'channel disconnect failed', { reason: reasonOf('disconnect', err) });
    }
  }

  /** A fatal error: report it, close the connection, attempt nothing more. */
  enterFatal(reason: string, code: string, conn?: Connection): void {
    if (this.finished || this.stopped) return;
    this.finished = true;
    this.report({ t: 'fatal', reason: clip(reason), code });
    if (conn) {
      if (this.live === conn) this.live = undefined;
      conn.controller.abort(new Error(reason));
      void this.disconnectQuietly(conn);
    }
  }

  /**
   * The open connection `conn` was lost: report it, close it, reconnect from attempt 1 (no sooner
   * than `retryAfterMs` when the error that broke it asked for a delay).
   */
  connectionLost(conn: Connection, reason: string, retryAfterMs?: number): void {
    if (this.stopped || this.finished || this.live !== conn) return;
    this.live = undefined;
    conn.controller.abort(new Error(reason));
    this.report({ t: 'status', status: 'disconnected', reason: clip(reason) });
    // A stable connection starts the count over; one lost sooner continues it.
    const stable = monotonicMs() - conn.openedAt >= this.config.reconnect.resetAfterMs;
    const next = stable ? 1 : conn.attempt + 1;
    void (async () => {
      await this.disconnectQuietly(conn);
      await connectLoop(this, next, reason, retryAfterMs);
    })().catch(crash);
  }

  /** The connection is open: senders waiting for it go on. */
  opened(conn: Connection): void {
    conn.openedAt = monotonicMs();
    this.live = conn;
    this.sends.wake();
  }

  // ---- lifecycle --------------------------------------------------------------------------------

  /**
   * Starts connecting in the background, on the next turn: the answer leaves first, so even a
   * `connect` that blocks the thread cannot hold it (that is a hang, for the heartbeat). Once; a
   * channel that could not be loaded starts nothing and answers why.
   */
  start(): Promise<StartResult> {
    if (!this.#starting) {
      if (this.#loadFailure !== undefined) {
        this.#starting = Promise.resolve({ ok: false, code: 'channel_invalid', reason: this.#loadFailure });
      } else {
        this.#starting = Promise.resolve({ ok: true });
        setImmediate(() => {
          if (!this.stopped && !this.finished && this.channel) void connectLoop(this, 0).catch(crash);
        });
      }
    }
    return this.#starting;
  }

  /** A message from the main thread about this instance: a send batch or an inbound ack. */
  receive(message: unknown): void {
    const upTo = readInboundAck(message);
    if (upTo !== undefined) {
      this.inbound.onAck(upTo);
      return;
    }
    const batch = readSendBatch(message);
    if (batch !== undefined) this.sends.hold(batch);
  }

  /**
   * An error escaped one of this instance's callbacks (uncaught, or an unhandled rejection): the
   * runtime is told (it restarts this instance alone) and the instance stops doing anything. Once.
   */
  fault(reason: string, origin: 'uncaught' | 'rejection'): void {
    if (this.faulted) return;
    this.faulted = true;
    if (!this.stopped) this.post({ t: 'fault', reason: clip(reason), origin });
    void this.stop();
  }

  /** Graceful stop: nothing more is reported; the connection (or one being made) is closed. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.sends.stop();
    this.stopController.abort(new Error('stopping'));
    this.inbound.flush();
    const pending = this.connecting;
    const conn = this.live;
    this.live = undefined;
    if (pending) {
      pending.conn.controller.abort(new Error('stopping'));
      // A connect that still succeeds is closed below; one that ignores its signal ends by its budget.
      await pending.call.then(
        () => {
          pending.conn.opened = true;
        },
        () => undefined,
      );
      await this.disconnectQuietly(pending.conn);
    }
    if (conn) {
      conn.controller.abort(new Error('stopping'));
      await this.disconnectQuietly(conn);
    }
  }
}
