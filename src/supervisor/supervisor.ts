import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { z } from 'zod';
import {
  AlreadyPresentError,
  AlreadyStartedError,
  ChildRestartingError,
  ChildRunningError,
  InvalidConfigError,
  NotFoundError,
  StartFailureError,
  StoppedError,
} from '../errors.js';
import { defaultLogger, publish } from '../telemetry.js';
import type { EmitterEvent, EmitterListener, SupervisorEvents } from '../events.js';
import { loggerSchema, parseOrThrow } from '../validate.js';
import { IntensityWindow, backoffDelay, backoffOptionsSchema, resolveBackoff, type BackoffOptions, type BackoffPolicy } from './backoff.js';
import {
  isNormalExit,
  type ChildExit,
  type ChildSpec,
  type ChildType,
  type RestartType,
  type RunningChild,
  type Shutdown,
} from './types.js';
import { MAX_TIMER_MS } from '../wire/timers.js';

/** Which children a supervisor restarts when one of them dies. */
export type Strategy = 'one_for_one' | 'one_for_all' | 'rest_for_one';

/** Options of {@link Supervisor.start}. Every field is optional; defaults follow Elixir's `Supervisor`. */
export interface SupervisorOptions {
  /** Name used in events and logs. Default `supervisor`. */
  name?: string;
  /**
   * `one_for_one` (default): restart only the dead child. `one_for_all`: stop every other child
   * (reverse start order), then restart all. `rest_for_one`: stop the children started after the
   * dead one, then restart it and them, in start order.
   */
  strategy?: Strategy;
  /** Restart intensity: more than `maxRestarts` restarts within `periodMs` escalates. Default 3. */
  maxRestarts?: number;
  /** Intensity window in ms. Default 5000. */
  periodMs?: number;
  /** Delay between a death and its restart. See {@link BackoffOptions}. */
  backoff?: BackoffOptions;
  /**
   * A child that ran at least this long before dying restarts from backoff attempt 0.
   * Default: `periodMs`.
   */
  backoffResetMs?: number;
  /** Children started in order by {@link Supervisor.start}. A child whose `start` resolves `undefined` is ignored (see {@link ChildSpec.start}). */
  children?: Array<ChildSpec<RunningChild | undefined>>;
  /** pino logger; each child gets a child logger bound to `supervisor` and `childId`. */
  logger?: Logger;
  /**
   * Scrubs secrets out of free text (exit reasons, error messages) before it reaches a log line or
   * an event. Passed on to children in their start context. Default: none.
   */
  redact?: (text: string) => string;
}

/** Lifecycle state of a supervisor. */
export type SupervisorState = 'running' | 'stopping' | 'stopped' | 'escalated';

/** Status of one child in {@link Supervisor.whichChildren}. */
export type ChildStatus = 'starting' | 'running' | 'restarting' | 'terminated';

/** One row of {@link Supervisor.whichChildren}. */
export interface ChildInfo {
  readonly id: string;
  readonly type: ChildType;
  readonly restart: RestartType;
  readonly status: ChildStatus;
  /** The running child (e.g. a `WorkerHost` or a nested `Supervisor`), when running. */
  readonly child: RunningChild | undefined;
  /** How many times this child was restarted by the supervisor. */
  readonly restarts: number;
  /** The last end of this child, if any. */
  readonly lastExit: ChildExit | undefined;
}

/** Counts returned by {@link Supervisor.countChildren} (OTP `count_children`). */
export interface ChildCounts {
  readonly specs: number;
  readonly active: number;
  readonly supervisors: number;
  readonly workers: number;
}

const strategySchema = z.enum(['one_for_one', 'one_for_all', 'rest_for_one']);
/** Largest timer delay Node accepts (a larger one fires after 1 ms). */
const shutdownSchema = z.union([z.number().int().min(0).max(MAX_TIMER_MS), z.literal('brutal_kill'), z.literal('infinity')]);

/** A child spec whose `start` may resolve `undefined` (ignore): what the supervisor accepts. */
type AnyChildSpec = ChildSpec<RunningChild | undefined>;

// Strict, like the supervisor options: an unknown field (a typo, or an OTP key this supervisor
// does not implement, such as `significant`) is an error, not silently dropped.
const childSpecSchema = z
  .object({
    id: z.string().min(1),
    start: z.custom<AnyChildSpec['start']>((v) => typeof v === 'function', 'expected a start function'),
    restart: z.enum(['permanent', 'transient', 'temporary']).default('permanent'),
    shutdown: shutdownSchema.optional(),
    type: z.enum(['worker', 'supervisor']).default('worker'),
  })
  .strict();

const optionsSchema = z
  .object({
    name: z.string().min(1).default('supervisor'),
    strategy: strategySchema.default('one_for_one'),
    maxRestarts: z.number().int().min(0).default(3),
    periodMs: z.number().positive().default(5000),
    backoff: backoffOptionsSchema.default({ initialDelayMs: 100, maxDelayMs: 5000, jitter: 0.2 }),
    backoffResetMs: z.number().min(0).optional(),
    children: z.array(z.unknown()).default([]),
    logger: loggerSchema.optional(),
    redact: z.custom<(text: string) => string>((v) => typeof v === 'function', 'expected a function').optional(),
  })
  .strict();

/** A validated child spec with defaults filled in. */
interface ResolvedSpec {
  readonly id: string;
  readonly start: AnyChildSpec['start'];
  readonly restart: RestartType;
  readonly shutdown: Shutdown;
  readonly type: ChildType;
}

interface Entry {
  spec: ResolvedSpec;
  status: ChildStatus;
  running: RunningChild | undefined;
  startedAt: number;
  /** Consecutive quick restarts: the backoff attempt of the next restart. */
  attempt: number;
  restarts: number;
  lastExit: ChildExit | undefined;
}

function resolveSpec(input: unknown): ResolvedSpec {
  const id = typeof input === 'object' && input !== null ? (input as { id?: unknown }).id : undefined;
  const s = parseOrThrow(childSpecSchema, input, typeof id === 'string' && id !== '' ? `child spec ${id}` : 'child spec');
  return {
    id: s.id,
    start: s.start,
    restart: s.restart,
    type: s.type,
    shutdown: s.shutdown ?? (s.type === 'supervisor' ? 'infinity' : 5000),
  };
}

/** True if `value` has the shape of a {@link RunningChild}. */
function isRunningChild(value: unknown): value is RunningChild {
  if ((typeof value !== 'object' && typeof value !== 'function') || value === null) return false;
  const v = value as { exited?: unknown; shutdown?: unknown };
  return typeof (v.exited as { then?: unknown } | undefined)?.then === 'function' && typeof v.shutdown === 'function';
}

/** What a `start` resolved with instead of a {@link RunningChild}, for its start failure. */
function describeNonChild(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'object' || typeof value === 'function') {
    const v = value as { exited?: unknown; shutdown?: unknown };
    const missing: string[] = [];
    if (typeof (v.exited as { then?: unknown } | undefined)?.then !== 'function') missing.push('an exited promise');
    if (typeof v.shutdown !== 'function') missing.push('a shutdown function');
    return `${typeof value === 'function' ? 'a function' : 'an object'} without ${missing.join(' or ')}`;
  }
  const text = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return `${typeof value} ${text.length > 60 ? `${text.slice(0, 60)}...` : text}`;
}

/** Typed `on` / `once` / `off` (declaration merging: types only, the class stays a plain `EventEmitter`). */
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- types only
export interface Supervisor {
  on<K extends keyof SupervisorEvents>(event: K, fn: (payload: SupervisorEvents[K]) => void): this;
  on(event: EmitterEvent, fn: EmitterListener): this;
  once<K extends keyof SupervisorEvents>(event: K, fn: (payload: SupervisorEvents[K]) => void): this;
  once(event: EmitterEvent, fn: EmitterListener): this;
  off<K extends keyof SupervisorEvents>(event: K, fn: (payload: SupervisorEvents[K]) => void): this;
  off(event: EmitterEvent, fn: EmitterListener): this;
}

/**
 * An OTP supervisor on the main thread. It starts children in order, watches each one's
 * `exited` promise, and restarts what its strategy says after a bounded, jittered delay. More
 * than `maxRestarts` restarts within `periodMs` stops every child in reverse start order and
 * escalates: the supervisor's own `exited` resolves with class `escalated`, so a parent
 * supervisor restarts it (or escalates further). A root supervisor reports escalation with the
 * `escalated` event; it never ends the host process.
 *
 * The same class serves every level: {@link Supervisor.childSpec} makes a supervisor a child.
 *
 * Events (on the object and on diagnostics_channel `threadvisor:supervisor:<event>`):
 * `child_started`, `child_exited`, `child_restarting` (a restart is scheduled, with its delay),
 * `child_restarted`, `escalated`, `stopped`.
 */
// eslint-disable-next-line @typescript-eslint/no-unsafe-declaration-merging -- the interface above only types on/once/off
export class Supervisor extends EventEmitter implements RunningChild {
  /** Name used in events and logs. */
  readonly name: string;
  /** Restart strategy. */
  readonly strategy: Strategy;
  /** Resolves once, when the supervisor has stopped (`shutdown`) or escalated (`escalated`). */
  readonly exited: Promise<ChildExit>;

  readonly #logger: Logger;
  readonly #intensity: IntensityWindow;
  readonly #backoff: BackoffPolicy;
  readonly #backoffResetMs: number;
  readonly #redact: (text: string) => string;
  readonly #entries: Entry[] = [];
  readonly #timers = new Set<NodeJS.Timeout>();
  /** Children whose shutdown is in progress, so an expired budget can force them. */
  readonly #terminating = new Set<RunningChild>();
  #state: SupervisorState = 'running';
  #queue: Promise<unknown> = Promise.resolve();
  #resolveExited!: (exit: ChildExit) => void;
  #stopping: Promise<ChildExit> | undefined;

  private constructor(opts: z.output<typeof optionsSchema>) {
    super();
    this.name = opts.name;
    this.strategy = opts.strategy;
    this.#logger = (opts.logger ?? defaultLogger()).child({ supervisor: opts.name });
    this.#intensity = new IntensityWindow(opts.maxRestarts, opts.periodMs);
    this.#backoff = resolveBackoff(opts.backoff);
    this.#backoffResetMs = opts.backoffResetMs ?? opts.periodMs;
    this.#redact = opts.redact ?? ((text) => text);
    this.exited = new Promise((resolve) => (this.#resolveExited = resolve));
  }

  /**
   * Validates the options, starts every child in order and resolves with the running supervisor.
   * If a child fails to start, the children already started are stopped in reverse order and the
   * call rejects with {@link StartFailureError} (OTP: the supervisor fails to initialise).
   */
  static async start(options: SupervisorOptions = {}): Promise<Supervisor> {
    const opts = parseOrThrow(optionsSchema, options, 'supervisor options');
    const specs = opts.children.map(resolveSpec);
    const ids = new Set<string>();
    for (const s of specs) {
      if (ids.has(s.id)) throw new InvalidConfigError('supervisor options', [{ path: 'children', message: `duplicate child id ${s.id}` }]);
      ids.add(s.id);
    }
    const sup = new Supervisor(opts);
    // Serialised like every other operation: a child dying during init is handled after it.
    const started = await sup.#serial(async () => {
      for (const spec of specs) {
        const entry: Entry = { spec, status: 'starting', running: undefined, startedAt: 0, attempt: 0, restarts: 0, lastExit: undefined };
        sup.#entries.push(entry);
        try {
          await sup.#startEntry(entry, 0);
        } catch (err) {
          return err;
        }
      }
      return undefined;
    });
    if (started !== undefined) {
      await sup.stop();
      throw started;
    }
    return sup;
  }

  /**
   * A child spec that runs a nested supervisor with `options` (its name defaults to
   * `<parent>/<id>`). Its shutdown defaults to `'infinity'`, as OTP advises for supervisors.
   */
  static childSpec(id: string, options: Omit<SupervisorOptions, 'logger'> = {}, child: { restart?: RestartType; shutdown?: Shutdown } = {}): ChildSpec {
    return {
      id,
      type: 'supervisor',
      restart: child.restart ?? 'permanent',
      shutdown: child.shutdown ?? 'infinity',
      start: (ctx) =>
        Supervisor.start({ ...options, name: options.name ?? `${ctx.supervisor}/${id}`, logger: ctx.logger, ...(ctx.redact ? { redact: ctx.redact } : {}) }),
    };
  }

  /** Current lifecycle state. */
  get state(): SupervisorState {
    return this.#state;
  }

  /**
   * Adds and starts a child. Rejects with `already_started` if a child with that id runs,
   * `already_present` if its spec is kept but not running, `start_failure` if it fails to start
   * (the spec is then not kept), `stopped` if the supervisor is not running, `invalid_config` on
   * a bad spec (unknown fields included). Resolves `undefined` if the child's `start` resolved
   * `undefined` (ignore): the spec is kept (a `temporary` one is not) and nothing runs.
   */
  startChild(spec: ChildSpec): Promise<RunningChild>;
  startChild(spec: AnyChildSpec): Promise<RunningChild | undefined>;
  startChild(spec: AnyChildSpec): Promise<RunningChild | undefined> {
    return this.#serial(async () => {
      this.#assertRunning();
      const resolved = resolveSpec(spec);
      const existing = this.#find(resolved.id);
      if (existing) {
        if (existing.running || existing.status === 'starting') throw new AlreadyStartedError(resolved.id);
        throw new AlreadyPresentError(resolved.id);
      }
      const entry: Entry = { spec: resolved, status: 'starting', running: undefined, startedAt: 0, attempt: 0, restarts: 0, lastExit: undefined };
      this.#entries.push(entry);
      try {
        return await this.#startEntry(entry, 0);
      } catch (err) {
        this.#remove(entry);
        throw err;
      }
    });
  }

  /**
   * Stops a child within its shutdown budget and keeps its spec (a `temporary` child's spec is
   * removed). A pending restart of the child is cancelled. Unknown id: `not_found`.
   */
  terminateChild(id: string): Promise<void> {
    return this.#serial(async () => {
      const entry = this.#get(id);
      await this.#terminate(entry);
      if (entry.spec.restart === 'temporary') this.#remove(entry);
    });
  }

  /**
   * Starts a kept child again now. A running child is first stopped within its shutdown budget
   * (OTP's `restart_child` refuses a running child; here it restarts it). Rejects with
   * `restarting` ({@link ChildRestartingError}) while a restart of the child is pending, as OTP
   * does: the supervisor keeps retrying it. Resolves `undefined` if the child ignored its start.
   * Unknown id: `not_found`.
   */
  restartChild(id: string): Promise<RunningChild | undefined> {
    return this.#serial(async () => {
      this.#assertRunning();
      const entry = this.#get(id);
      if (entry.status === 'restarting') throw new ChildRestartingError(id);
      if (entry.running) await this.#terminate(entry);
      entry.restarts += 1;
      return this.#startEntry(entry, entry.restarts);
    });
  }

  /**
   * Removes a stopped child's spec. Rejects with `running` if it is running, `restarting`
   * ({@link ChildRestartingError}) while a restart of it is pending, `not_found` if unknown.
   */
  deleteChild(id: string): Promise<void> {
    return this.#serial(async () => {
      const entry = this.#get(id);
      if (entry.status === 'restarting') throw new ChildRestartingError(id);
      if (entry.running || entry.status === 'starting') throw new ChildRunningError(id);
      entry.status = 'terminated';
      this.#remove(entry);
    });
  }

  /** Every child in start order (OTP `which_children`). */
  whichChildren(): ChildInfo[] {
    return this.#entries.map((e) => ({
      id: e.spec.id,
      type: e.spec.type,
      restart: e.spec.restart,
      status: e.status,
      child: e.running,
      restarts: e.restarts,
      lastExit: e.lastExit,
    }));
  }

  /** Counts of specs, running children, supervisors and workers (OTP `count_children`). */
  countChildren(): ChildCounts {
    let active = 0;
    let supervisors = 0;
    for (const e of this.#entries) {
      if (e.running) active += 1;
      if (e.spec.type === 'supervisor') supervisors += 1;
    }
    return { specs: this.#entries.length, active, supervisors, workers: this.#entries.length - supervisors };
  }

  /** The running child with this id, or undefined. */
  child(id: string): RunningChild | undefined {
    return this.#find(id)?.running;
  }

  /**
   * Stops every child in reverse start order, each within its own shutdown budget, then resolves.
   * Idempotent. Emits `stopped` once.
   */
  stop(): Promise<void> {
    return this.shutdown('infinity').then(() => undefined);
  }

  /**
   * {@link RunningChild.shutdown}: stops the children in reverse order; with a numeric budget,
   * whatever is still running when it expires is killed at once. `'brutal_kill'` kills every
   * child at once.
   */
  shutdown(budget: Shutdown): Promise<ChildExit> {
    if (this.#state === 'stopped' || this.#state === 'escalated') return this.exited;
    if (this.#stopping) {
      // Already stopping (perhaps with no deadline): a tighter budget still applies.
      if (budget === 'brutal_kill') void this.#killAll();
      else if (typeof budget === 'number') {
        const t = setTimeout(() => void this.#killAll(), budget);
        void this.#stopping.finally(() => clearTimeout(t));
      }
      return this.#stopping;
    }
    this.#state = 'stopping';
    this.#clearTimers();
    const ordered = this.#serial(() => this.#terminateAll(budget === 'brutal_kill' ? 'brutal_kill' : undefined));
    let done: Promise<unknown> = ordered;
    if (typeof budget === 'number') {
      let t: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => (t = setTimeout(resolve, budget)));
      done = Promise.race([ordered, deadline.then(() => this.#killAll())]).finally(() => clearTimeout(t));
    }
    this.#stopping = done.then(() => {
      this.#state = 'stopped';
      const exit: ChildExit = { class: 'shutdown', reason: 'shutdown' };
      this.#logger.debug('supervisor stopped');
      publish(this, 'supervisor:stopped', () => ({ supervisor: this.name }), 'stopped');
      this.#resolveExited(exit);
      return exit;
    });
    return this.#stopping;
  }

  // --- internals -------------------------------------------------------------------------

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #assertRunning(): void {
    if (this.#state !== 'running') throw new StoppedError(`supervisor ${this.name}`);
  }

  #find(id: string): Entry | undefined {
    return this.#entries.find((e) => e.spec.id === id);
  }

  #get(id: string): Entry {
    const e = this.#find(id);
    if (!e) throw new NotFoundError('child', id);
    return e;
  }

  #remove(entry: Entry): void {
    const i = this.#entries.indexOf(entry);
    if (i >= 0) this.#entries.splice(i, 1);
  }

  #clearTimers(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }

  /**
   * Starts one entry; on failure it is left `terminated` and the error thrown. Resolves
   * `undefined` if the child ignored its start (it is left `terminated`, a temporary one removed).
   */
  async #startEntry(entry: Entry, attempt: number): Promise<RunningChild | undefined> {
    entry.status = 'starting';
    // The run is measured from the start attempt: a start that fails never counts as stable.
    entry.startedAt = Date.now();
    const { id } = entry.spec;
    let result: unknown;
    try {
      result = await entry.spec.start({
        supervisor: this.name,
        childId: id,
        attempt,
        logger: this.#logger.child({ childId: id }),
        redact: this.#redact,
      });
    } catch (err) {
      const reason = this.#redact(err instanceof Error ? err.message : String(err));
      this.#startFailed(entry, reason, err);
      throw err instanceof StartFailureError ? err : new StartFailureError(id, reason, { cause: err });
    }
    // Anything but a RunningChild or undefined (ignore) fails like a start() that throws.
    if (result !== undefined && !isRunningChild(result)) {
      const reason = this.#redact(`start() resolved with ${describeNonChild(result)}, not a RunningChild`);
      const err = new StartFailureError(id, reason);
      this.#startFailed(entry, reason, err);
      throw err;
    }
    const child = result;
    if (this.#state !== 'running' || !this.#entries.includes(entry)) {
      // Stopped (or deleted) while it was starting: do not keep it.
      if (child) await child.shutdown(entry.spec.shutdown);
      entry.status = 'terminated';
      throw new StoppedError(`supervisor ${this.name}`);
    }
    if (!child) {
      // OTP `ignore`: nothing runs and nothing is restarted; the spec stays for restartChild.
      entry.status = 'terminated';
      if (entry.spec.restart === 'temporary') this.#remove(entry);
      this.#logger.info({ childId: id, attempt }, 'child ignored its start');
      return undefined;
    }
    entry.running = child;
    entry.status = 'running';
    publish(this, 'supervisor:child_started', () => ({ supervisor: this.name, childId: id, attempt }), 'child_started');
    void child.exited.then((exit) => this.#onExit(entry, child, exit));
    return child;
  }

  #startFailed(entry: Entry, reason: string, err: unknown): void {
    entry.status = 'terminated';
    entry.lastExit = { class: 'start_failure', reason, ...(err instanceof Error ? { error: err } : {}) };
    this.#logger.warn({ childId: entry.spec.id, reason }, 'child failed to start');
  }

  #onExit(entry: Entry, child: RunningChild, exit: ChildExit): void {
    if (entry.running !== child) return; // the supervisor stopped it on purpose
    entry.running = undefined;
    entry.status = 'terminated';
    entry.lastExit = exit;
    this.#emitExit(entry, exit);
    if (this.#state !== 'running') return;
    void this.#serial(() => this.#handleDeath(entry, exit)).catch((err: unknown) => {
      this.#logger.error({ err }, 'restart handling failed');
    });
  }

  #emitExit(entry: Entry, exit: ChildExit): void {
    const log = isNormalExit(exit) ? 'debug' : 'warn';
    const reason = this.#redact(exit.reason);
    this.#logger[log]({ childId: entry.spec.id, class: exit.class, reason, code: exit.code }, 'child exited');
    publish(this, 'supervisor:child_exited', () => ({
      supervisor: this.name,
      childId: entry.spec.id,
      class: exit.class,
      reason,
      code: exit.code,
    }), 'child_exited');
  }

  async #handleDeath(entry: Entry, exit: ChildExit): Promise<void> {
    if (this.#state !== 'running' || !this.#entries.includes(entry) || entry.running) return;
    const restart =
      entry.spec.restart === 'permanent' || (entry.spec.restart === 'transient' && !isNormalExit(exit));
    if (!restart) {
      if (entry.spec.restart === 'temporary') this.#remove(entry);
      return;
    }
    if (this.#intensity.record()) {
      await this.#escalate(entry, exit);
      return;
    }
    // Which children go down with it, and come back up, by strategy.
    const i = this.#entries.indexOf(entry);
    const group =
      this.strategy === 'one_for_one' ? [entry] : this.strategy === 'one_for_all' ? [...this.#entries] : this.#entries.slice(i);
    for (const sibling of [...group].reverse()) {
      if (sibling === entry) continue;
      await this.#terminate(sibling);
      if (sibling.spec.restart === 'temporary') {
        this.#remove(sibling);
        group.splice(group.indexOf(sibling), 1);
      }
    }
    // stop() may have run while the siblings were stopping: then nothing is restarted.
    if (this.#state !== 'running') return;
    if (Date.now() - entry.startedAt >= this.#backoffResetMs) entry.attempt = 0;
    const attempt = entry.attempt;
    const delayMs = backoffDelay(this.#backoff, attempt);
    entry.attempt += 1;
    for (const e of group) e.status = 'restarting';
    this.#logger.info({ childId: entry.spec.id, attempt, delayMs, class: exit.class }, 'restarting child');
    publish(this, 'supervisor:child_restarting', () => ({
      supervisor: this.name,
      childId: entry.spec.id,
      attempt,
      delayMs,
      children: group.map((e) => e.spec.id),
      class: exit.class,
      reason: this.#redact(exit.reason),
      code: exit.code,
    }), 'child_restarting');
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      void this.#serial(() => this.#restartGroup(group, entry, attempt, delayMs, exit)).catch((err: unknown) => {
        this.#logger.error({ err }, 'restart failed');
      });
    }, delayMs);
    this.#timers.add(timer);
  }

  async #restartGroup(group: Entry[], cause: Entry, attempt: number, delayMs: number, exit: ChildExit): Promise<void> {
    for (const e of group) {
      if (this.#state !== 'running') return;
      if (!this.#entries.includes(e) || e.status !== 'restarting') continue;
      e.restarts += 1;
      let child: RunningChild | undefined;
      try {
        child = await this.#startEntry(e, e.restarts);
      } catch (err) {
        if (this.#state !== 'running') return;
        // A failed restart counts as another death of that child.
        const failure: ChildExit = e.lastExit ?? { class: 'start_failure', reason: String(err) };
        for (const rest of group) if (rest.status === 'restarting') rest.status = 'terminated';
        this.#emitExit(e, failure);
        await this.#handleDeath(e, failure);
        return;
      }
      if (!child) continue; // ignored: it stays down, the rest of the group restarts
      publish(this, 'supervisor:child_restarted', () => ({
        supervisor: this.name,
        childId: e.spec.id,
        attempt: e === cause ? attempt : undefined,
        restarts: e.restarts,
        delayMs,
        cause: cause.spec.id,
        class: exit.class,
        reason: this.#redact(exit.reason),
      }), 'child_restarted');
    }
  }

  async #escalate(entry: Entry, exit: ChildExit): Promise<void> {
    const reason = `restart intensity exceeded: more than ${this.#intensity.maxRestarts} restarts in ${this.#intensity.periodMs} ms (last: ${entry.spec.id} ${exit.class}: ${this.#redact(exit.reason)})`;
    this.#state = 'escalated';
    this.#clearTimers();
    this.#logger.error({ childId: entry.spec.id, class: exit.class }, reason);
    await this.#terminateAll();
    publish(this, 'supervisor:escalated', () => ({
      supervisor: this.name,
      childId: entry.spec.id,
      class: exit.class,
      reason,
      maxRestarts: this.#intensity.maxRestarts,
      periodMs: this.#intensity.periodMs,
    }), 'escalated');
    this.#resolveExited({ class: 'escalated', reason });
  }

  async #terminate(entry: Entry, budget?: Shutdown): Promise<void> {
    const child = entry.running;
    entry.status = 'terminated';
    if (!child) return;
    entry.running = undefined; // its exit is now expected, not a death
    this.#terminating.add(child);
    const exit = await child.shutdown(budget ?? entry.spec.shutdown).finally(() => this.#terminating.delete(child));
    entry.lastExit = exit;
    this.#emitExit(entry, exit);
  }

  async #terminateAll(budget?: Shutdown): Promise<void> {
    for (const e of [...this.#entries].reverse()) await this.#terminate(e, budget);
  }

  async #killAll(): Promise<void> {
    // Budget expired: whatever is still up is killed at once, concurrently.
    const inProgress = [...this.#terminating].map((c) => c.shutdown('brutal_kill'));
    const live = this.#entries.filter((e) => e.running);
    await Promise.all([...inProgress, ...live.map((e) => this.#terminate(e, 'brutal_kill'))]);
  }
}
