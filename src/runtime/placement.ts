/**
 * Where instances run: the runtime's worker groups (dedicated or shared), the choice of a group
 * for a starting instance, the split of a shared worker that keeps dying and the release of a
 * quarantined instance, and the {@link GroupHooks} through which the groups report their
 * members' workers. One per runtime; it reaches the runtime through its context.
 */
import type { EventEmitter } from 'node:events';
import type { MessagePort } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { ChildExit } from '../supervisor/types.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import { publish } from '../telemetry.js';
import type { WorkerHost } from '../worker/host.js';
import type { InstanceWorkerApi } from '../wire/protocol.js';
import type { RuntimeCounters } from './data-plane.js';
import { exitKind, type Entry } from './entry.js';
import type { InstanceLifecycle } from './lifecycle.js';
import { builtinUrl, type Resolved } from './options.js';
import type { StandbyPool } from './standby.js';
import { WorkerGroup, type GroupHooks } from './worker-group.js';

/** What placement needs of its runtime. */
export interface PlacementContext {
  readonly opts: Resolved;
  /** The runtime's logger (`component: runtime`); a shared group logs through a child of it. */
  readonly log: Logger;
  /** The runtime: `worker:split` is published on it. */
  readonly emitter: EventEmitter;
  readonly counters: RuntimeCounters;
  /** Warm standby workers, handed to every group (undefined without standby). */
  readonly standby: StandbyPool | undefined;
  /** Scrubs every instance's credentials out of a text about a shared worker. */
  redactAll(text: string): string;
  /** The instance lifecycle: what happens to an instance when its worker starts, dies or moves. */
  readonly lifecycle: InstanceLifecycle;
  /** A message on the data port about the instance. */
  message(entry: Entry, host: WorkerHost<InstanceWorkerApi>, port: MessagePort, raw: object): void;
}

export class Placement {
  readonly #ctx: PlacementContext;
  readonly #opts: Resolved;
  readonly #log: Logger;
  /** Worker groups with a thread running or starting (or about to). */
  readonly #groups = new Set<WorkerGroup<Entry>>();
  /** The stops of split workers whose threads are still ending. */
  readonly #retiring = new Set<Promise<void>>();
  #lastGroup = 0;
  /** What the groups tell the runtime about their members' workers. */
  readonly #hooks: GroupHooks<Entry> = {
    boot: (e) => this.#ctx.lifecycle.boot(e),
    hosting: (e, host) => {
      // Before the start call: the worker's first notices may overtake its answer.
      if (this.#ctx.lifecycle.running(e)) e.host = host;
    },
    hosted: (e, host, port, result) => this.#ctx.lifecycle.onHosted(e, host, port, result),
    detached: (e, host, port, exit) => this.#ctx.lifecycle.onDetached(e, host, port, exit),
    restarting: (e, info) => {
      // A shared worker's death is the group's: the reason says how it ended.
      const how = exitKind({ class: info.exit, reason: info.reason });
      const [kind, reason] = e.group?.dedicated ? [how, info.reason] : ['group', `worker ${how}: ${info.reason}`];
      this.#ctx.lifecycle.onWorkerRestarting(e, kind, reason, info.attempt, info.delayMs);
    },
    starting: (e) => this.#ctx.lifecycle.onWorkerStarting(e),
    escalated: (e, reason) => this.#ctx.lifecycle.onEscalated(e, reason),
    message: (e, host, port, raw) => this.#ctx.message(e, host, port, raw),
    split: (group, members, exit) => this.#split(group, members, exit),
    released: (e) => this.#release(e),
    stray: () => {
      this.#ctx.counters.malformed++;
      this.#log.warn({ malformedMessages: this.#ctx.counters.malformed }, 'message from instance worker names no instance, or another one');
    },
  };

  constructor(ctx: PlacementContext) {
    this.#ctx = ctx;
    this.#opts = ctx.opts;
    this.#log = ctx.log;
  }

  /** The supervisors of the worker groups running now (the trees under a runtime child). */
  trees(): Supervisor[] {
    return [...this.#groups].flatMap((g) => (g.supervisor ? [g.supervisor] : []));
  }

  /** Everything stops: a shared worker stops once, with all its instances, not one by one. */
  closeAll(): void {
    for (const g of this.#groups) g.close();
  }

  /**
   * Resolves once every split worker is gone: a split happens at the worker's doom, while its
   * thread is still ending, and none of its instances waits for that thread any more.
   */
  async retired(): Promise<void> {
    while (this.#retiring.size > 0) await Promise.all([...this.#retiring]);
  }

  /** The group a starting instance goes to: a dedicated one, or the least-loaded shared one with room. */
  place(entry: Entry): WorkerGroup<Entry> {
    for (const g of this.#groups) if (g.state === 'stopped') this.#groups.delete(g);
    if (entry.dedicated || entry.quarantined) return this.#newGroup(entry, false);
    let best: WorkerGroup<Entry> | undefined;
    for (const g of this.#groups) if (!g.dedicated && g.hasRoom && (best === undefined || g.size < best.size)) best = g;
    return best ?? this.#newGroup(undefined, false);
  }

  /**
   * A new worker group: dedicated to `own` (its restart policy, its `resourceLimits`), or shared
   * (the runtime's). `suspect`: made by a split (see {@link PlacementOptions.quarantine}).
   */
  #newGroup(own: Entry | undefined, suspect: boolean): WorkerGroup<Entry> {
    const o = this.#opts;
    const id = ++this.#lastGroup;
    const restart = own ? own.restart : o.restart;
    const group = new WorkerGroup<Entry>(
      {
        id,
        dedicated: own !== undefined,
        capacity: own ? 1 : o.placement.instancesPerWorker,
        name: own ? `threadvisor:${own.id}` : `threadvisor:group-${id}`,
        filename: builtinUrl('instance-worker-script.js'),
        logger: own ? own.log : this.#log.child({ group: id }),
        heartbeat: o.heartbeat,
        readyTimeoutMs: o.readyTimeoutMs,
        shutdownMs: o.shutdownMs,
        resourceLimits: own ? own.resourceLimits : o.resourceLimits,
        // A shared worker's deaths count toward no instance's restart intensity: it restarts
        // (with backoff) as long as it has instances, or is split (quarantine).
        restart: { maxRestarts: own ? restart.maxRestarts : Number.MAX_SAFE_INTEGER, periodMs: restart.periodMs, backoff: restart.backoff },
        redact: own ? (text) => own.server.redactReason(text) ?? '' : (text) => this.#ctx.redactAll(text),
        quarantine: o.placement.quarantine,
        suspect,
        standby: this.#ctx.standby,
      },
      this.#hooks,
    );
    this.#groups.add(group);
    return group;
  }

  /**
   * A shared worker died once too often: its instances go, in two halves, to two fresh suspect
   * workers (a half of one: a dedicated worker, the instance quarantined). Bisection: the culprit
   * is alone after at most ⌈log2(instancesPerWorker)⌉ more deaths.
   */
  #split(from: WorkerGroup<Entry>, members: Entry[], exit: ChildExit): void {
    const ctx = this.#ctx;
    this.#groups.delete(from);
    const gone = from.stop().finally(() => this.#retiring.delete(gone));
    this.#retiring.add(gone);
    const reason = `worker ${exitKind(exit)}: ${ctx.redactAll(exit.reason)}`;
    for (const e of members) {
      e.group = undefined;
      e.host = undefined;
    }
    const live = members.filter((e) => this.#ctx.lifecycle.running(e)).sort((a, b) => a.iid - b.iid);
    const half = Math.ceil(live.length / 2);
    const parts = [live.slice(0, half), live.slice(half)].filter((p) => p.length > 0);
    this.#log.warn({ group: from.id, into: parts.map((p) => p.length), reason }, 'shared worker keeps dying: splitting it');
    publish(ctx.emitter, 'worker:split', () => ({ group: from.id, deaths: from.deaths, into: parts.map((p) => p.map((e) => e.id)), reason }));
    for (const part of parts) {
      const alone = part.length === 1 ? part[0] : undefined;
      const group = alone ? this.#newGroup(alone, true) : this.#newGroup(undefined, true);
      for (const e of part) {
        if (e === alone) {
          e.quarantined = true;
          e.server.notifyQuarantined(true, `its shared worker kept dying (${reason})`);
        }
        ctx.lifecycle.moveInto(e, group, reason, from.deaths);
      }
    }
  }

  /** A quarantined instance stayed up for `quarantine.periodMs`: it is released, back to a shared worker. */
  #release(entry: Entry): void {
    if (!entry.quarantined || !this.#ctx.lifecycle.running(entry)) return;
    entry.quarantined = false;
    const quiet = `no worker death in ${this.#opts.placement.quarantine.periodMs} ms`;
    entry.server.notifyQuarantined(false, quiet);
    if (entry.dedicated) return; // it asked for a worker of its own anyway
    this.#ctx.lifecycle.moveOut(entry, 'released from quarantine: moved back to a shared worker');
  }
}
