/**
 * One worker thread and the instances it hosts, seen from the main thread: the group owns the
 * thread's supervisor (restarts with backoff), its data port, and the routing of the port's
 * messages to its members by instance number. A dedicated worker is a group of one.
 *
 * The group decides nothing about an instance's state: it tells its owner (the runtime, through
 * {@link GroupHooks}) when a member is being hosted by a worker, what the worker answered, when
 * the worker is gone, and when it is about to come back. A worker's death is fanned out to every
 * member; the thread restarts once for all of them.
 *
 * @packageDocumentation
 */
import { MessageChannel, receiveMessageOnPort, type MessagePort, type ResourceLimits } from 'node:worker_threads';
import type { Logger } from 'pino';
import { StoppedError } from '../errors.js';
import { IntensityWindow, type BackoffOptions } from '../supervisor/backoff.js';
import { Supervisor } from '../supervisor/supervisor.js';
import type { ChildExit, StartContext } from '../supervisor/types.js';
import { WorkerHost } from '../worker/host.js';
import type { StandbyPool } from './standby.js';
import type { InstanceBoot, InstanceWorkerApi, StartResult } from '../wire/protocol.js';
import { instanceWorkerCode } from './worker-code.js';

/** What a group needs of an instance it hosts. */
export interface GroupMember {
  /** The instance's number on the wire. */
  readonly iid: number;
  readonly id: string;
}

/** What the runtime does when a group's worker changes; every call names the member. */
export interface GroupHooks<M extends GroupMember> {
  /** The member's boot, built when a worker is about to host it (the cursor is the current one). */
  boot(member: M): Omit<InstanceBoot, 'data'>;
  /** `host` is about to host the member: its notices on `port` are the member's from now on. */
  hosting(member: M, host: WorkerHost<InstanceWorkerApi>, port: MessagePort): void;
  /** What the worker answered to hosting the member (also after each restart of the worker). */
  hosted(member: M, host: WorkerHost<InstanceWorkerApi>, port: MessagePort, result: StartResult): void;
  /** The member's worker is doomed or gone (see `WorkerHost.doomed`), or the member left it. */
  detached(member: M, host: WorkerHost<InstanceWorkerApi>, port: MessagePort, exit: ChildExit): void;
  /** The worker died and restarts after `delayMs`; `attempt` counts from 1. */
  restarting(member: M, info: { reason: string; exit: ChildExit['class']; attempt: number; delayMs: number }): void;
  /** A restarted worker is about to host the member again. */
  starting(member: M): void;
  /** The worker's restart intensity was exceeded: the group is gone. */
  escalated(member: M, reason: string): void;
  /** A message on the data port for the member. */
  message(member: M, host: WorkerHost<InstanceWorkerApi>, port: MessagePort, raw: object): void;
  /** A message on the data port that names no member of the group. */
  stray(raw: unknown): void;
  /**
   * A shared worker died once too often (see {@link GroupOptions.quarantine}): the group is gone
   * and its members, already detached, are to be split across fresh workers.
   */
  split(group: WorkerGroup<M>, members: M[], exit: ChildExit): void;
  /** A member put alone by a split saw no worker death for `quarantine.periodMs`. */
  released(member: M): void;
}

/** How a group runs its worker. */
export interface GroupOptions {
  /** A number for logs and the thread's name. */
  readonly id: number;
  /** One member at most, and its worker's deaths are its own (restart intensity applies). */
  readonly dedicated: boolean;
  /** Most members (1 when dedicated). */
  readonly capacity: number;
  /** The thread's name. */
  readonly name: string;
  readonly filename: URL;
  readonly logger: Logger;
  readonly heartbeat: { intervalMs: number; maxMissed: number };
  readonly readyTimeoutMs: number;
  readonly shutdownMs: number;
  readonly resourceLimits: ResourceLimits | undefined;
  /** Restart policy of the thread: intensity (`maxRestarts` in `periodMs`) and backoff. */
  readonly restart: { maxRestarts: number; periodMs: number; backoff: BackoffOptions };
  /** Scrubs secrets out of reasons. */
  readonly redact: (text: string) => string;
  /**
   * A shared worker that dies `afterCrashes` times within `periodMs` is split (its members go to
   * fresh workers) instead of restarted.
   */
  readonly quarantine: { readonly afterCrashes: number; readonly periodMs: number };
  /**
   * Made by a split: a shared one splits again at its next death and takes no new member; a
   * dedicated one holds a quarantined instance. Quiet for `quarantine.periodMs`, a shared one
   * becomes an ordinary group and a dedicated one releases its member.
   */
  readonly suspect: boolean;
  /** Booted workers to take instead of spawning one (see `RuntimeOptions.standby`). */
  readonly standby: StandbyPool | undefined;
}

type MemberState = 'pending' | 'hosting' | 'hosted';

interface Member<M> {
  readonly m: M;
  state: MemberState;
  /** Resolves what the next worker answered for it (the caller of `add` waits for it). */
  waiters: { resolve: (r: StartResult) => void; reject: (e: Error) => void }[];
}

/** How long an `unhost` may take beyond the graceful stop budget before the worker is given up on. */
const UNHOST_SLACK_MS = 1000;

/**
 * One worker thread hosting up to `capacity` instances. States: `idle` (no thread yet),
 * `running` (its supervisor runs: a thread is up or restarting), `stopping`, `stopped`.
 */
export class WorkerGroup<M extends GroupMember> {
  readonly id: number;
  readonly dedicated: boolean;
  readonly capacity: number;
  readonly #o: GroupOptions;
  readonly #hooks: GroupHooks<M>;
  readonly #members = new Map<number, Member<M>>();
  /** Numbers of members that left: late messages for them are dropped without a word. */
  readonly #gone = new Set<number>();
  #state: 'idle' | 'running' | 'stopping' | 'stopped' = 'idle';
  #sup: Supervisor | undefined;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #host: WorkerHost<InstanceWorkerApi> | undefined;
  #port: MessagePort | undefined;
  /** A spawn is hosting its members: late arrivals wait for it. */
  #spawning = false;
  #closing = false;
  #suspect: boolean;
  /** Recent deaths of a shared worker, toward a split. */
  readonly #crashes: IntensityWindow;
  #quiet: NodeJS.Timeout | undefined;
  /** Thread deaths so far (each counted once for the whole group). */
  #deaths = 0;

  constructor(options: GroupOptions, hooks: GroupHooks<M>) {
    this.id = options.id;
    this.dedicated = options.dedicated;
    this.capacity = options.capacity;
    this.#o = options;
    this.#hooks = hooks;
    this.#suspect = options.suspect;
    this.#crashes = new IntensityWindow(Math.max(0, options.quarantine.afterCrashes - 1), options.quarantine.periodMs);
  }

  /** Made by a split and not yet quiet for `quarantine.periodMs`. */
  get suspect(): boolean {
    return this.#suspect;
  }

  get state(): 'idle' | 'running' | 'stopping' | 'stopped' {
    return this.#state;
  }

  /** Members, hosted or waiting for a worker. */
  get size(): number {
    return this.#members.size;
  }

  /** Whether placement may put a new member here (a suspect group takes none). */
  get hasRoom(): boolean {
    return (this.#state === 'idle' || this.#state === 'running') && !this.#suspect && this.#members.size < this.capacity;
  }

  /** The current thread's id, or null between threads. */
  get threadId(): number | null {
    return this.#host?.threadId ?? null;
  }

  /** How many times the group's thread died. */
  get deaths(): number {
    return this.#deaths;
  }

  /** The current worker, when one is up. */
  get host(): WorkerHost<InstanceWorkerApi> | undefined {
    return this.#host;
  }

  /** The supervisor of the thread (for a forced stop of everything). */
  get supervisor(): Supervisor | undefined {
    return this.#sup;
  }

  has(member: M): boolean {
    return this.#members.get(member.iid)?.m === member;
  }

  /**
   * Adds a member and resolves with what the worker answered to hosting it: the group's first
   * thread is spawned for it, a running worker hosts it at once, a restarting one when it is back.
   * Rejects when the thread cannot start (`start_failure`) or the member left first (`stopped`).
   */
  add(member: M): Promise<StartResult> {
    if (this.#state !== 'idle' && this.#state !== 'running') return Promise.reject(new StoppedError(`worker group ${this.id}`));
    this.#gone.delete(member.iid);
    const entry: Member<M> = { m: member, state: 'pending', waiters: [] };
    this.#members.set(member.iid, entry);
    const answer = new Promise<StartResult>((resolve, reject) => entry.waiters.push({ resolve, reject }));
    if (this.#state === 'idle') {
      this.#state = 'running';
      this.#starting = this.#start();
      this.#starting.catch((err: unknown) => {
        // The first thread never came up: every member waiting for it fails with it.
        for (const e of this.#members.values()) this.#settle(e, undefined, err as Error);
        this.#members.clear();
        this.#state = 'stopped';
      });
    } else if (!this.#spawning && this.#host?.state === 'up' && this.#port) {
      void this.#hostOne(entry, this.#host, this.#port);
    }
    return answer;
  }

  /**
   * Takes a member out: its worker stops it gracefully (its channel disconnects within its
   * budget) and forgets it, or, when it was the last member, the group's thread is stopped.
   * `exit` is what the member's in-flight sends are charged with (a planned stop by default).
   * Resolves when it is done; a member not in the group resolves at once.
   */
  async remove(member: M, exit: ChildExit = { class: 'shutdown', reason: 'shutdown' }): Promise<void> {
    const entry = this.#members.get(member.iid);
    if (entry?.m !== member) return;
    this.#members.delete(member.iid);
    this.#gone.add(member.iid);
    this.#settle(entry, undefined, new StoppedError(`instance ${member.id}`));
    const host = this.#host;
    const port = this.#port;
    if (this.#members.size === 0) {
      await this.stop();
    } else if (host && entry.state !== 'pending' && host.state === 'up' && !this.#closing) {
      try {
        await host.callWithTimeout(this.#o.shutdownMs + UNHOST_SLACK_MS, 'unhost', member.iid);
      } catch (err) {
        this.#o.logger.warn({ instanceId: member.id, reason: this.#o.redact(err instanceof Error ? err.message : String(err)) }, 'unhost failed');
      }
    }
    if (host && port && entry.state !== 'pending') this.#hooks.detached(member, host, port, exit);
  }

  /**
   * Every member is about to leave (the runtime stops): members that leave no longer stop one by
   * one in the worker; the last one stops the thread, and with it every context, gracefully.
   */
  close(): void {
    this.#closing = true;
  }

  /** Stops the thread (gracefully, within `shutdownMs`) and forgets every member. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      this.#state = 'stopping';
      this.#clearQuiet();
      await this.#starting?.catch(() => undefined);
      await this.#sup?.stop();
      this.#state = 'stopped';
    })();
    return this.#stopping;
  }

  // --- internals -------------------------------------------------------------------------

  async #start(): Promise<void> {
    const policy = this.#o.restart;
    const sup = await Supervisor.start({
      name: `worker-group:${this.id}`,
      logger: this.#o.logger,
      maxRestarts: policy.maxRestarts,
      periodMs: policy.periodMs,
      backoff: policy.backoff,
      redact: this.#o.redact,
      children: [{ id: 'worker', shutdown: this.#o.shutdownMs, start: (ctx) => this.#spawn(ctx) }],
    });
    this.#sup = sup;
    if (this.#suspect) this.#watchQuiet(this.#deaths);
    sup.on('child_restarting', (e: { class: ChildExit['class']; reason: string; attempt: number; delayMs: number }) => {
      if (this.#state !== 'running') return;
      const info = { reason: e.reason, exit: e.class, attempt: e.attempt + 1, delayMs: Math.round(e.delayMs) };
      for (const { m } of [...this.#members.values()]) this.#hooks.restarting(m, info);
    });
    void sup.exited.then((exit) => {
      if (exit.class !== 'escalated' || this.#state !== 'running') return;
      this.#state = 'stopped';
      const members = [...this.#members.values()];
      this.#members.clear();
      for (const e of members) {
        this.#settle(e, undefined, new StoppedError(`instance ${e.m.id}`));
        this.#hooks.escalated(e.m, exit.reason);
      }
    });
  }

  /** The supervisor's child start: a fresh thread hosting every member. */
  async #spawn(ctx: StartContext): Promise<WorkerHost<InstanceWorkerApi> | undefined> {
    const list = [...this.#members.values()];
    const first = list[0];
    // Every member left while the thread was down: nothing to run (the group is being stopped).
    if (first === undefined) return undefined;
    if (ctx.attempt > 0) for (const e of list) this.#hooks.starting(e.m);
    // A standby worker when one waits (its instances are all hosted by control calls), or a spawn
    // whose boot carries the first member (its channel module loaded before ready).
    const spare = this.#o.standby?.take(this.#o.resourceLimits);
    let host: WorkerHost<InstanceWorkerApi>;
    let port: MessagePort;
    this.#spawning = true;
    if (spare) {
      ({ host, port } = spare);
    } else {
      const data = new MessageChannel();
      const boot: InstanceBoot = { ...this.#hooks.boot(first.m), shared: !this.dedicated, data: data.port2 };
      const code = instanceWorkerCode();
      if (code !== undefined) boot.code = code;
      this.#o.standby?.seen(boot.channel);
      try {
        host = await WorkerHost.start<InstanceWorkerApi>(
          {
            filename: this.#o.filename,
            name: this.#o.name,
            workerData: boot,
            transferList: [data.port2],
            heartbeat: this.#o.heartbeat,
            readyTimeoutMs: this.#o.readyTimeoutMs,
            ...(this.#o.resourceLimits ? { resourceLimits: this.#o.resourceLimits } : {}),
          },
          ctx,
        );
      } catch (err) {
        this.#spawning = false;
        data.port1.close();
        throw err;
      }
      port = data.port1;
    }
    this.#host = host;
    this.#port = port;
    this.#listen(host, port);
    // A worker is over for its members as soon as it is doomed (an uncaught exception): they are
    // detached and its supervisor restarts it while the old thread is still ending.
    void host.doomed.then((exit) => this.#onExit(host, port, exit));
    try {
      // The first member came in a spawned worker's boot; the others (all of them in a standby
      // worker) are hosted by control calls, in parallel.
      const inBoot = spare ? undefined : first;
      const calls: Promise<void>[] = [];
      if (inBoot && this.#members.get(inBoot.m.iid) === inBoot) calls.push(this.#hostOne(inBoot, host, port, true));
      // The boot's instance starts in the worker by itself: one that left meanwhile is taken out at
      // once, even when the group is stopping with it (its connection must not outlive its removal,
      // e.g. a cluster node fenced off while the worker was starting).
      else if (inBoot) void host.call('unhost', inBoot.m.iid).catch(() => undefined);
      for (const e of list) if (e !== inBoot && this.#members.get(e.m.iid) === e) calls.push(this.#hostOne(e, host, port));
      await Promise.all(calls);
      // Members added while this thread was starting.
      for (;;) {
        const late = [...this.#members.values()].filter((e) => e.state === 'pending');
        if (late.length === 0 || host.state !== 'up' || this.#host !== host) break;
        await Promise.all(late.map((e) => this.#hostOne(e, host, port)));
      }
    } finally {
      this.#spawning = false;
    }
    return host;
  }

  /** Hosts one member in `host` and hands the answer to the runtime and to `add`'s caller. */
  async #hostOne(e: Member<M>, host: WorkerHost<InstanceWorkerApi>, port: MessagePort, inBoot = false): Promise<void> {
    e.state = 'hosting';
    this.#hooks.hosting(e.m, host, port);
    let result: StartResult;
    try {
      if (inBoot) {
        result = await host.callWithTimeout(this.#o.readyTimeoutMs, 'start');
      } else {
        const boot = { ...this.#hooks.boot(e.m), shared: !this.dedicated };
        this.#o.standby?.seen(boot.channel);
        result = await host.callWithTimeout(this.#o.readyTimeoutMs, 'host', boot);
      }
    } catch (err) {
      // The worker died or did not answer: its exit (fanned out to every member) says what follows.
      if (this.#members.get(e.m.iid) === e && host.state === 'up' && !host.isDoomed) {
        // No answer from a live worker: it is not fit to host anything.
        this.#o.logger.warn({ instanceId: e.m.id, reason: this.#o.redact(err instanceof Error ? err.message : String(err)) }, 'worker did not answer a start');
        void host.terminate('start unanswered');
      }
      return;
    }
    if (this.#members.get(e.m.iid) !== e || this.#host !== host) return;
    if (!result.ok) {
      // Nothing of it runs; a context the boot created idles until it is unhosted.
      this.#members.delete(e.m.iid);
      this.#gone.add(e.m.iid);
      if (inBoot && this.#members.size > 0) void host.call('unhost', e.m.iid).catch(() => undefined);
    } else {
      e.state = 'hosted';
    }
    this.#hooks.hosted(e.m, host, port, result);
    this.#settle(e, result);
    if (!result.ok && this.#members.size === 0) void this.stop();
  }

  #settle(e: Member<M>, result: StartResult | undefined, err?: Error): void {
    const waiters = e.waiters;
    e.waiters = [];
    for (const w of waiters) {
      if (result) w.resolve(result);
      else w.reject(err ?? new StoppedError(`instance ${e.m.id}`));
    }
  }

  #onExit(host: WorkerHost<InstanceWorkerApi>, port: MessagePort, exit: ChildExit): void {
    if (this.#host !== host) return;
    this.#host = undefined;
    this.#port = undefined;
    // What the worker posted before it was doomed (acks above all) is handled before its members
    // are detached, so that only what it did not acknowledge is sent again.
    for (let m = receiveMessageOnPort(port); m !== undefined; m = receiveMessageOnPort(port)) this.#dispatch(host, port, m.message);
    if (exit.class !== 'shutdown') this.#deaths++;
    for (const e of [...this.#members.values()]) {
      if (e.state === 'pending') continue;
      e.state = 'pending';
      this.#hooks.detached(e.m, host, port, exit);
    }
    // A shared worker that keeps dying is split instead of restarted (its supervisor, stopped
    // here before it sees the death, restarts nothing).
    if (this.dedicated || exit.class === 'shutdown' || this.#state !== 'running' || this.#members.size === 0) return;
    if (!this.#suspect && !this.#crashes.record()) return;
    const members = [...this.#members.values()];
    this.#members.clear();
    for (const e of members) this.#settle(e, undefined, new StoppedError(`instance ${e.m.id}`));
    // Its supervisor stops before it sees the death; `stop()` resolves once the old thread is gone.
    void this.stop();
    this.#hooks.split(
      this,
      members.map((e) => e.m),
      exit,
    );
  }

  /** A message on a worker's data port, to the member it names. */
  #dispatch(host: WorkerHost<InstanceWorkerApi>, port: MessagePort, raw: unknown): void {
    const i = typeof raw === 'object' && raw !== null ? (raw as { i?: unknown }).i : undefined;
    const e = typeof i === 'number' ? this.#members.get(i) : undefined;
    if (e === undefined) {
      // A member that left: late, not malformed.
      if (typeof i !== 'number' || !this.#gone.has(i)) this.#hooks.stray(raw);
      return;
    }
    // The runtime tells a notice from a worker that is no longer the member's own by `host`.
    this.#hooks.message(e.m, host, port, raw as object);
  }

  /** A suspect group quiet for `quarantine.periodMs` is cleared (a shared one) or releases its member (a dedicated one). */
  #watchQuiet(deathsBefore: number): void {
    this.#quiet = setTimeout(() => {
      this.#quiet = undefined;
      if (this.#state !== 'running') return;
      if (this.#deaths !== deathsBefore) return this.#watchQuiet(this.#deaths);
      this.#suspect = false;
      if (this.dedicated) for (const e of [...this.#members.values()]) this.#hooks.released(e.m);
    }, this.#o.quarantine.periodMs);
    this.#quiet.unref();
  }

  #clearQuiet(): void {
    if (this.#quiet) clearTimeout(this.#quiet);
    this.#quiet = undefined;
  }

  #listen(host: WorkerHost<InstanceWorkerApi>, port: MessagePort): void {
    port.on('message', (raw: unknown) => this.#dispatch(host, port, raw));
    // The port closes when the worker is gone; nothing else holds it.
    port.once('close', () => port.removeAllListeners());
  }
}
