/**
 * `Supervisor`: an OTP supervisor on the main thread (strategies, intensity, backoff, dynamic
 * children, events). This file is its public face; its state is a `SupervisorCore`
 * (`./supervisor-core.ts`), one child's start and stop are in `./child-lifecycle.ts` and the
 * restart decision in `./restarts.ts`.
 *
 * @packageDocumentation
 */
import { EventEmitter } from 'node:events';
import {
  AlreadyPresentError,
  AlreadyStartedError,
  ChildRestartingError,
  ChildRunningError,
  InvalidConfigError,
} from '../errors.js';
import { publish } from '../telemetry.js';
import type { EmitterEvent, EmitterListener, SupervisorEvents } from '../events.js';
import { parseConfig } from '../validate.js';
import { resolveSpec, type AnyChildSpec } from './child-spec.js';
import { killAll, startEntry, terminate, terminateAll } from './child-lifecycle.js';
import { onChildExit } from './restarts.js';
import {
  assertRunning,
  clearTimers,
  createSupervisorCore,
  findEntry,
  getEntry,
  newEntry,
  optionsSchema,
  removeEntry,
  serial,
  type ResolvedSupervisorOptions,
  type SupervisorCore,
} from './supervisor-core.js';
import type { ChildCounts, ChildInfo, Strategy, SupervisorOptions, SupervisorState } from './supervisor-types.js';
import type { ChildExit, ChildSpec, RestartType, RunningChild, Shutdown } from './types.js';

export type { ChildCounts, ChildInfo, ChildStatus, Strategy, SupervisorOptions, SupervisorState } from './supervisor-types.js';

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

  readonly #core: SupervisorCore;

  private constructor(opts: ResolvedSupervisorOptions) {
    super();
    this.name = opts.name;
    this.strategy = opts.strategy;
    let resolveExited!: (exit: ChildExit) => void;
    this.exited = new Promise((resolve) => (resolveExited = resolve));
    this.#core = createSupervisorCore(this, opts, resolveExited, (entry, child, exit) => onChildExit(this.#core, entry, child, exit));
  }

  /**
   * Validates the options, starts every child in order and resolves with the running supervisor.
   * If a child fails to start, the children already started are stopped in reverse order and the
   * call rejects with {@link StartFailureError} (OTP: the supervisor fails to initialise).
   */
  static async start(options: SupervisorOptions = {}): Promise<Supervisor> {
    const opts = parseConfig('supervisor options', optionsSchema, options);
    const specs = opts.children.map(resolveSpec);
    const ids = new Set<string>();
    for (const s of specs) {
      if (ids.has(s.id)) throw new InvalidConfigError('supervisor options', [{ path: 'children', message: `duplicate child id ${s.id}` }]);
      ids.add(s.id);
    }
    const sup = new Supervisor(opts);
    // Serialised like every other operation: a child dying during init is handled after it.
    const started = await serial(sup.#core, async () => {
      for (const spec of specs) {
        const entry = newEntry(spec);
        sup.#core.entries.push(entry);
        try {
          await startEntry(sup.#core, entry, 0);
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
    return this.#core.state;
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
    return serial(this.#core, async () => {
      assertRunning(this.#core);
      const resolved = resolveSpec(spec);
      const existing = findEntry(this.#core, resolved.id);
      if (existing) {
        if (existing.running || existing.status === 'starting') throw new AlreadyStartedError(resolved.id);
        throw new AlreadyPresentError(resolved.id);
      }
      const entry = newEntry(resolved);
      this.#core.entries.push(entry);
      try {
        return await startEntry(this.#core, entry, 0);
      } catch (err) {
        removeEntry(this.#core, entry);
        throw err;
      }
    });
  }

  /**
   * Stops a child within its shutdown budget and keeps its spec (a `temporary` child's spec is
   * removed). A pending restart of the child is cancelled. Unknown id: `not_found`.
   */
  terminateChild(id: string): Promise<void> {
    return serial(this.#core, async () => {
      const entry = getEntry(this.#core, id);
      await terminate(this.#core, entry);
      if (entry.spec.restart === 'temporary') removeEntry(this.#core, entry);
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
    return serial(this.#core, async () => {
      assertRunning(this.#core);
      const entry = getEntry(this.#core, id);
      if (entry.status === 'restarting') throw new ChildRestartingError(id);
      if (entry.running) await terminate(this.#core, entry);
      entry.restarts += 1;
      return startEntry(this.#core, entry, entry.restarts);
    });
  }

  /**
   * Removes a stopped child's spec. Rejects with `running` if it is running, `restarting`
   * ({@link ChildRestartingError}) while a restart of it is pending, `not_found` if unknown.
   */
  deleteChild(id: string): Promise<void> {
    return serial(this.#core, async () => {
      const entry = getEntry(this.#core, id);
      if (entry.status === 'restarting') throw new ChildRestartingError(id);
      if (entry.running || entry.status === 'starting') throw new ChildRunningError(id);
      entry.status = 'terminated';
      removeEntry(this.#core, entry);
    });
  }

  /** Every child in start order (OTP `which_children`). */
  whichChildren(): ChildInfo[] {
    return this.#core.entries.map((e) => ({
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
    for (const e of this.#core.entries) {
      if (e.running) active += 1;
      if (e.spec.type === 'supervisor') supervisors += 1;
    }
    return { specs: this.#core.entries.length, active, supervisors, workers: this.#core.entries.length - supervisors };
  }

  /** The running child with this id, or undefined. */
  child(id: string): RunningChild | undefined {
    return findEntry(this.#core, id)?.running;
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
    if (this.#core.state === 'stopped' || this.#core.state === 'escalated') return this.exited;
    if (this.#core.stopping) {
      // Already stopping (perhaps with no deadline): a tighter budget still applies.
      if (budget === 'brutal_kill') void killAll(this.#core);
      else if (typeof budget === 'number') {
        const t = setTimeout(() => void killAll(this.#core), budget);
        void this.#core.stopping.finally(() => clearTimeout(t));
      }
      return this.#core.stopping;
    }
    this.#core.state = 'stopping';
    clearTimers(this.#core);
    const ordered = serial(this.#core, () => terminateAll(this.#core, budget === 'brutal_kill' ? 'brutal_kill' : undefined));
    let done: Promise<unknown> = ordered;
    if (typeof budget === 'number') {
      let t: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => (t = setTimeout(resolve, budget)));
      done = Promise.race([ordered, deadline.then(() => killAll(this.#core))]).finally(() => clearTimeout(t));
    }
    this.#core.stopping = done.then(() => {
      this.#core.state = 'stopped';
      const exit: ChildExit = { class: 'shutdown', reason: 'shutdown' };
      this.#core.logger.debug('supervisor stopped');
      publish(this, 'supervisor:stopped', () => ({ supervisor: this.name }), 'stopped');
      this.#core.resolveExited(exit);
      return exit;
    });
    return this.#core.stopping;
  }
}
