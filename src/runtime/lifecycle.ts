/**
 * The instance lifecycle: the one place that decides an instance's state transitions (start,
 * error, recovery after `recoverAfterMs`, restart in place, fatal, stop of its worker tree),
 * each instance's operations serialised in its own queue. The instance's `InstanceServer` is
 * the view of it. One per runtime; it reaches the runtime through its context.
 *
 * An instance's {@link Phase} is kept here and nowhere else: `stopping` is read off the registry
 * (an instance being stopped is no longer in it), `error` and `restarting` are set by the moves
 * below; every other part of the runtime asks {@link InstanceLifecycle.phase}.
 */
import type { MessagePort } from 'node:worker_threads';
import { ChannelInvalidError, NotRunningError, StoppedError, type ThreadvisorError } from '../errors.js';
import { backoffDelay, resolveBackoff } from '../supervisor/backoff.js';
import { isNormalExit, type ChildExit } from '../supervisor/types.js';
import type { WorkerHost } from '../worker/host.js';
import type { InstanceBoot, InstanceWorkerApi, StartResult } from '../wire/protocol.js';
import { INBOUND_WINDOW, type DataPlane } from './data-plane.js';
import { exitKind, type Entry } from './entry.js';
import type { Resolved } from './options.js';
import type { WorkerGroup } from './worker-group.js';

/** What the instance lifecycle needs of its runtime. */
export interface LifecycleContext {
  readonly opts: Resolved;
  /** The runtime's instances, by id (a recovery runs only for an instance still registered). */
  readonly entries: ReadonlyMap<string, Entry>;
  /** The data plane: a hosted instance's sends are pumped to its worker. */
  readonly data: DataPlane;
  /** Whether the runtime is still running (not stopping or stopped). */
  running(): boolean;
  /** The group a starting instance goes to (see `Placement.place`). */
  place(entry: Entry): WorkerGroup<Entry>;
  /** Cluster mode: the fence buffer handed to each worker in its boot (undefined in local mode). */
  fence(): SharedArrayBuffer | undefined;
}

/**
 * Where an instance is in its lifecycle, as the runtime acts on it:
 * - `running`: placed (or being placed) in a worker; its status moves with its channel;
 * - `restarting`: `restartInstance` is taking it out of its worker to start it again;
 * - `error`: failed; its worker is stopped, a recovery may be scheduled (`recoverAfterMs`);
 * - `stopping`: removed from the runtime, being stopped.
 */
export type Phase = 'running' | 'restarting' | 'error' | 'stopping';

export class InstanceLifecycle {
  readonly #ctx: LifecycleContext;
  /** The phase of a registered instance that is not `running` (absent: `running`). */
  readonly #phases = new WeakMap<Entry, 'restarting' | 'error'>();

  constructor(ctx: LifecycleContext) {
    this.#ctx = ctx;
  }

  /** Where the instance is in its lifecycle (see {@link Phase}). */
  phase(entry: Entry): Phase {
    if (this.#ctx.entries.get(entry.id) !== entry) return 'stopping';
    return this.#phases.get(entry) ?? 'running';
  }

  /** Whether the instance is `running` (placed or being placed in a worker). */
  running(entry: Entry): boolean {
    return this.#phases.get(entry) === undefined && this.#ctx.entries.get(entry.id) === entry;
  }

  /**
   * Why a send to this registered instance is refused now: it is in `error` with no recovery
   * scheduled (the failure that put it there, or `not_running`); undefined when it takes sends.
   */
  refusal(entry: Entry): ThreadvisorError | undefined {
    if (entry.recoverTimer || this.#phases.get(entry) !== 'error') return undefined;
    return entry.failure ?? new NotRunningError(`instance ${entry.id} (in error)`);
  }

  #move(entry: Entry, to: 'running' | 'restarting' | 'error'): void {
    if (to === 'running') this.#phases.delete(entry);
    else this.#phases.set(entry, to);
  }

  /** Runs `fn` after this instance's previous operation settled. */
  op<T>(entry: Entry, fn: () => Promise<T>): Promise<T> {
    const run = entry.ops.then(fn, fn);
    entry.ops = run.catch(() => undefined);
    return run;
  }

  /** No recovery and no backoff pause goes on for the instance (it is being stopped or restarted). */
  clearRecover(e: Entry): void {
    if (e.recoverTimer) clearTimeout(e.recoverTimer);
    e.recoverTimer = undefined;
    if (e.pause) {
      clearTimeout(e.pause.timer);
      e.pause.done();
      e.pause = undefined;
    }
  }

  /**
   * A fresh start now (`restartInstance`): a running instance is stopped and started again; one in
   * `error` leaves it at once. A queue closed by a fatal error is replaced. Rejects as the start does.
   */
  restart(entry: Entry): Promise<void> {
    return this.op(entry, async () => {
      if (this.phase(entry) === 'stopping') throw new StoppedError(`instance ${entry.id}`);
      this.clearRecover(entry);
      this.#move(entry, 'restarting');
      await this.stopTree(entry);
      if (entry.queue.closed) entry.queue = this.#ctx.data.newQueue(entry.id, entry.capacity, () => this.#ctx.data.pump(entry), entry.redact);
      entry.failure = undefined;
      entry.server.notifyRestartMarker('recoverable', 'restart requested', { kind: 'manual' });
      entry.server.notifyStarting('restart requested');
      this.#move(entry, 'running');
      try {
        await this.startTree(entry);
      } catch (err) {
        this.toError(entry, `restart failed: ${entry.server.redactReason(err) ?? 'unknown'}`, true);
        throw err;
      }
    });
  }

  /**
   * The instance is being stopped: no recovery and no backoff pause goes on. The caller removes it
   * from the registry, which makes its phase `stopping`.
   */
  stopping(entry: Entry): void {
    this.clearRecover(entry);
  }

  /**
   * The graceful stop of an instance already marked {@link InstanceLifecycle.stopping} and
   * removed: what is queued gets `shutdownMs` to be delivered, the worker stops (the channel's
   * `disconnect`), the queue closes (what is left rejects with `stopped: queueReason`), `onMessage`
   * gets `shutdownMs` to finish, and the server emits `instance:stopped` once with `reason`. A
   * failed worker stop rejects (and stops nothing more), or with `onStopError` is reported and
   * the rest goes on.
   */
  async stopGracefully(entry: Entry, queueReason: string, reason: string, onStopError?: (err: unknown) => void): Promise<void> {
    await this.#ctx.data.drainOutbound(entry);
    const stopped = this.op(entry, () => this.stopTree(entry));
    await (onStopError ? stopped.catch(onStopError) : stopped);
    entry.queue.close(queueReason);
    await this.#ctx.data.drainInbound(entry);
    entry.server.stop(reason);
  }

  /** Places the instance in a worker (or `into` one) and starts it there (rejects as `startInstance` documents). */
  async startTree(entry: Entry, into?: WorkerGroup<Entry>): Promise<void> {
    const group = into ?? this.#ctx.place(entry);
    entry.group = group;
    let result: StartResult;
    try {
      result = await group.add(entry);
    } catch (err) {
      if (entry.group === group) entry.group = undefined;
      if (this.phase(entry) === 'error') return; // a fatal error while it was starting: it stays, in error
      throw err;
    }
    if (!result.ok) {
      if (entry.group === group) entry.group = undefined;
      // On its first start, startInstance fails; later, #onHosted put it in error.
      if (entry.firstStart && entry.failure) throw entry.failure;
      return;
    }
    if (this.running(entry)) return;
    // Stopped while it was starting.
    await this.stopTree(entry);
    if (this.phase(entry) !== 'error') throw new StoppedError(`instance ${entry.id}`);
  }

  /** Takes the instance out of its worker (a shared worker goes on; a dedicated one stops). */
  async stopTree(entry: Entry, exit?: ChildExit): Promise<void> {
    const group = entry.group;
    entry.group = undefined;
    entry.host = undefined;
    if (group) await group.remove(entry, exit);
  }

  /**
   * An instance's own failure in a shared worker (its reconnect attempts spent, or an error that
   * escaped its callbacks: `exit` then charges its in-flight sends with a crash): it starts over in
   * place, after its backoff, counted toward its restart intensity; its worker-mates go on.
   */
  restartInPlace(entry: Entry, kind: string, reason: string, exit?: ChildExit): void {
    const group = entry.group;
    if (!this.running(entry) || group === undefined) return;
    const { server } = entry;
    if (server.currentStatus === 'connected' || server.currentStatus === 'connecting') server.notifyDisconnected(`${kind}: ${server.redactReason(reason) ?? ''}`);
    if (entry.intensity.record()) {
      const why = `restart intensity exceeded: more than ${entry.intensity.maxRestarts} restarts in ${entry.intensity.periodMs} ms (last: ${kind})`;
      entry.server.notifyRestartMarker('fatal', why, { kind: 'intensity_exceeded' });
      this.toError(entry, why, true);
      return;
    }
    const attempt = entry.intensity.count();
    const delayMs = Math.round(backoffDelay(resolveBackoff(entry.restart.backoff), attempt - 1));
    entry.server.notifyRestartMarker('recoverable', reason, { kind, attempt, delayMs });
    void this.op(entry, async () => {
      if (!this.running(entry) || entry.group !== group) return;
      await this.stopTree(entry, exit);
      await new Promise<void>((resolve) => {
        entry.pause = { timer: setTimeout(resolve, delayMs), done: resolve };
      });
      entry.pause = undefined;
      if (!this.running(entry)) return;
      await this.#startAgain(entry, reason);
    });
  }

  /**
   * Starts the instance again (in a fresh group, or `into` one): its server goes to `starting`
   * with `reason`; a failed start puts it in `error` (`failed` names why), with recovery.
   */
  async #startAgain(entry: Entry, reason: string, into?: WorkerGroup<Entry>, failed = (err: unknown) => `restart failed: ${entry.server.redactReason(err) ?? 'unknown'}`): Promise<void> {
    entry.server.notifyStarting(reason);
    try {
      await this.startTree(entry, into);
    } catch (err) {
      if (this.running(entry)) this.toError(entry, failed(err), true);
    }
  }

  /**
   * A split of a shared worker that kept dying moves the instance (already out of that worker)
   * `into` a fresh suspect group, in its own queue; `reason` says why, `deaths` is how many times
   * the old worker died.
   */
  moveInto(entry: Entry, into: WorkerGroup<Entry>, reason: string, deaths: number): void {
    entry.server.notifyRestartMarker('recoverable', reason, { kind: 'group', attempt: deaths, delayMs: 0 });
    void this.op(entry, async () => {
      if (!this.running(entry) || entry.group !== undefined) return;
      await this.#startAgain(entry, reason, into);
    });
  }

  /**
   * The instance leaves the group it runs in now and starts in the one placement picks (a
   * quarantined instance released back to a shared worker), in its own queue. Nothing happens if
   * it moved, stopped or was quarantined again meanwhile.
   */
  moveOut(entry: Entry, reason: string): void {
    const group = entry.group;
    void this.op(entry, async () => {
      if (!this.running(entry) || entry.group !== group || entry.quarantined) return;
      const { server } = entry;
      if (server.currentStatus === 'connected' || server.currentStatus === 'connecting') server.notifyDisconnected(reason);
      await this.stopTree(entry);
      if (!this.running(entry)) return;
      await this.#startAgain(entry, reason);
    });
  }

  /** The instance's worker is being restarted by its group after a death (`how` it ended, `reason`). */
  onWorkerRestarting(entry: Entry, kind: string, reason: string, attempt: number, delayMs: number): void {
    if (!this.running(entry)) return;
    entry.server.notifyRestartMarker('recoverable', reason, { kind, attempt, delayMs });
  }

  /** The instance's group is starting a fresh worker for it: its server goes to `starting`. */
  onWorkerStarting(entry: Entry): void {
    if (this.running(entry)) entry.server.notifyStarting(entry.server.lastRestartReason ?? 'worker restart');
  }

  /** The instance's group gave up restarting its worker (past the group's intensity): `error`, with recovery. */
  onEscalated(entry: Entry, reason: string): void {
    entry.group = undefined;
    entry.host = undefined;
    if (!this.running(entry)) return;
    entry.server.notifyRestartMarker('fatal', reason, { kind: 'intensity_exceeded' });
    this.toError(entry, reason, true);
  }

  #scheduleRecover(entry: Entry): void {
    const after = entry.restart.recoverAfterMs;
    if (!Number.isFinite(after) || !this.#ctx.running()) return;
    entry.recoverTimer = setTimeout(() => {
      entry.recoverTimer = undefined;
      void this.op(entry, async () => {
        if (this.phase(entry) !== 'error' || !this.#ctx.running()) return;
        this.#move(entry, 'running');
        await this.#startAgain(entry, `recovering after ${after} ms in error`, undefined, (err) => entry.server.redactReason(err) ?? 'recovery failed');
      });
    }, after);
    entry.recoverTimer.unref();
  }

  /** Fatal: the instance goes to `error` and its worker is stopped; no restart loop. */
  fatal(entry: Entry, reason: string): void {
    if (!this.running(entry)) return;
    entry.server.notifyRestartMarker('fatal', reason, { kind: 'fatal' });
    this.toError(entry, reason, false);
  }

  /**
   * The instance goes to `error`: its tree is stopped (in its own queue) and, when `recover`,
   * a fresh start is scheduled after `recoverAfterMs`.
   */
  toError(entry: Entry, reason: string, recover: boolean): void {
    const phase = this.phase(entry);
    if (phase === 'stopping' || phase === 'error') return;
    this.#move(entry, 'error');
    entry.server.notifyError(reason);
    if (entry.group) {
      void this.op(entry, () => this.stopTree(entry)).catch((err: unknown) =>
        entry.log.warn({ reason: entry.server.redactReason(err) }, 'stopping a failed instance'),
      );
    }
    if (recover) this.#scheduleRecover(entry);
    if (!entry.recoverTimer) {
      // No recovery is scheduled: what is queued would wait for a restartInstance that may never
      // come, so those sends settle now.
      entry.queue.requeueInFlight('instance failed', { crashed: false });
      entry.queue.close(`instance ${entry.id} failed: ${entry.server.redactReason(reason) ?? 'error'}`);
    }
  }

  /** The boot of an instance, built when a worker is about to host it (with the current cursor). */
  boot(entry: Entry): Omit<InstanceBoot, 'data'> {
    const o = this.#ctx.opts;
    const fence = this.#ctx.fence();
    return {
      iid: entry.iid,
      instance: {
        id: entry.id,
        name: entry.server.name,
        channelType: entry.server.channelType,
        settings: entry.settings,
        credentials: entry.credentials,
      },
      channel: entry.channel,
      reconnect: o.reconnect,
      probe: { intervalMs: o.probe.intervalMs },
      timeouts: { ...o.timeouts, probeMs: o.probe.timeoutMs },
      pollIdleMs: o.pollIdleMs,
      inboundWindow: INBOUND_WINDOW,
      ...(entry.cursor === undefined ? {} : { cursor: entry.cursor }),
      ...(entry.fencingToken === undefined ? {} : { fencingToken: entry.fencingToken }),
      ...(fence ? { fence } : {}),
    };
  }

  /** What the worker answered to hosting the instance (on its first start and after each worker restart). */
  onHosted(entry: Entry, host: WorkerHost<InstanceWorkerApi>, port: MessagePort, started: StartResult): void {
    if (!started.ok) {
      // The channel module cannot be loaded or is invalid: retrying cannot help.
      const reason = entry.server.redactReason(started.reason) ?? 'invalid channel';
      entry.failure = new ChannelInvalidError(entry.id, reason);
      if (entry.host === host) entry.host = undefined;
      // The first start fails startInstance (the instance is removed); later: error, no restart loop.
      if (!entry.firstStart) this.fatal(entry, reason);
      return;
    }
    if (this.running(entry) && host.state === 'up' && entry.host === host) {
      entry.dataPort = port;
      this.#ctx.data.pump(entry);
    }
  }

  /** The instance's worker is gone, or the instance left it. */
  onDetached(entry: Entry, host: WorkerHost<InstanceWorkerApi>, port: MessagePort, exit: ChildExit): void {
    if (entry.host === host) entry.host = undefined;
    if (entry.dataPort === port) {
      entry.dataPort = undefined;
      // Everything this worker did not acknowledge goes back to the head of the queue, in
      // order, for the next worker. A planned stop charges no message with a crash.
      entry.queue.requeueInFlight(`worker ${exitKind(exit)}: ${exit.reason}`, { crashed: exit.class !== 'shutdown' });
    }
    const { server } = entry;
    if (isNormalExit(exit) || !this.running(entry) || entry.group === undefined) return;
    if (server.currentStatus === 'connected' || server.currentStatus === 'connecting') {
      server.notifyDisconnected(`worker ${exitKind(exit)}: ${server.redactReason(exit.reason) ?? ''}`);
    }
  }
}
