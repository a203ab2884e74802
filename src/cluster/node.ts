/**
 * One node of a cluster: it ticks every `leaseMs / 3` (one Redis round trip, see
 * {@link LeaseStore.tick}), runs what it acquired, stops what it lost, hands off what is over its
 * fair share, and fences itself when it could not renew in time: at `leaseMs − safetyMs` after
 * its last successful renewal it stops every instance it runs, before Redis can give the lease
 * to another node (leases expire by Redis's clock at `leaseMs` after that renewal was sent).
 *
 * The node decides nothing about an instance's state: it asks its host (the runtime) to run or
 * stop an instance, and reports what it did as `cluster:*` events.
 *
 * @packageDocumentation
 */
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { NotOwnerError, UnavailableError } from '../errors.js';
import { publish } from '../telemetry.js';
import type { LeaseStore, TickResult } from './store.js';
import { fenceTime, fenceView } from '../wire/fence.js';

/** A declared instance as stored (never credentials). */
export interface DeclaredSpec {
  readonly id: string;
  readonly name: string;
  readonly channelType: string;
  /** The channel module, resolved (a URL or a package specifier). */
  readonly channel: string;
  readonly settings?: Record<string, unknown>;
  readonly resourceLimits?: Record<string, number>;
  readonly restart?: Record<string, unknown>;
  readonly queueCapacity?: number;
  readonly isolation?: 'shared' | 'dedicated';
}

/** What a node asks of its runtime. */
export interface ClusterHost {
  /** Runs the instance here (its credentials resolved locally), with its fencing token. */
  runLocal(spec: DeclaredSpec, fencingToken: number): Promise<void>;
  /**
   * Stops the local copy. `fast`: the lease is about to be lost (fencing): no queued send is
   * delivered first, and a worker that does not stop in time is terminated.
   */
  stopLocal(id: string, reason: string, fast: boolean): Promise<void>;
}

/** Options of a node. */
export interface ClusterNodeOptions {
  readonly nodeId: string;
  readonly leaseMs: number;
  readonly safetyMs: number;
  readonly log: Logger;
  /** Where `cluster:*` events are emitted (the runtime). */
  readonly emitter: EventEmitter;
  /**
   * Declared instances shared out by fair share (the runtime). `false` (an `InstanceManager`):
   * nothing is declared; keys are claimed one by one ({@link ClusterNode.claim}) and kept until
   * released, never handed off for balance.
   */
  readonly balance?: boolean;
}

/** A cluster node (see the module's description). */
export class ClusterNode {
  readonly nodeId: string;
  readonly #store: LeaseStore;
  readonly #host: ClusterHost;
  readonly #o: ClusterNodeOptions;
  /** Ids running here, with their fencing token. */
  readonly #local = new Map<string, number>();
  /** Ids being handed off (stopping here, released once stopped). */
  readonly #handingOff = new Set<string>();
  #nodes = new Set<string>();
  #timer: NodeJS.Timeout | undefined;
  #fenceTimer: NodeJS.Timeout | undefined;
  #ticking: Promise<void> | undefined;
  #again = false;
  #stopped = false;
  /**
   * Leases of this node id are given up at the next contact: after fencing (every local copy was
   * stopped), and at start (a previous process with the same `nodeId` may have left some, which
   * this one does not run).
   */
  #fenced = true;
  #degraded = false;
  readonly #offset = Math.floor(Math.random() * 1_000_000);
  /**
   * The lease deadline shared with every instance worker (see `src/wire/fence.ts`): past it they
   * neither poll nor send, even before this thread's fence timer runs (a process resumed after
   * `SIGSTOP`). 0 until the first renewal and after fencing.
   */
  readonly fenceBuffer = new SharedArrayBuffer(8);
  readonly #deadline = fenceView(this.fenceBuffer);

  constructor(store: LeaseStore, host: ClusterHost, options: ClusterNodeOptions) {
    this.nodeId = options.nodeId;
    this.#store = store;
    this.#host = host;
    this.#o = options;
  }

  /** Starts ticking (the first tick at once). */
  start(): void {
    this.kick();
  }

  /** Runs a tick now (after the one in progress). */
  kick(): void {
    if (this.#stopped) return;
    if (this.#ticking) {
      this.#again = true;
      return;
    }
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#ticking = this.#tick()
      .catch((err: unknown) => this.#o.log.error({ err }, 'cluster tick failed'))
      .finally(() => {
        this.#ticking = undefined;
        if (this.#stopped) return;
        if (this.#again) {
          this.#again = false;
          this.kick();
          return;
        }
        this.#timer = setTimeout(() => this.kick(), Math.max(1, Math.floor(this.#o.leaseMs / 3)));
      });
  }

  /** Declares an instance cluster-wide (idempotent by id). */
  async declare(spec: DeclaredSpec): Promise<void> {
    try {
      await this.#store.declare(spec.id, JSON.stringify(spec));
    } catch (err) {
      throw new UnavailableError(`declaring instance ${spec.id}`, { cause: err });
    }
    this.kick();
  }

  /** Removes a declaration: its owner stops it at its next tick (this node at once). */
  async undeclare(id: string): Promise<boolean> {
    let removed: boolean;
    try {
      removed = await this.#store.undeclare(id);
    } catch (err) {
      throw new UnavailableError(`removing instance ${id}`, { cause: err });
    }
    this.kick();
    return removed;
  }

  /**
   * Claims `id` for this node (single activation of a key): resolves once this node owns it
   * (`cluster:acquired`), rejects with `NotOwnerError` naming the live node that does, or
   * `UnavailableError` when the store cannot be reached or this node is not a live member.
   */
  async claim(id: string): Promise<number> {
    const held = this.#local.get(id);
    if (held !== undefined) return held;
    let r: Awaited<ReturnType<LeaseStore['claim']>>;
    try {
      r = await this.#store.claim(id);
      if ('stale' in r) {
        await this.settled();
        if (this.#degraded || this.#fenced) throw new Error('this node is not a live member of the cluster');
        r = await this.#store.claim(id);
      }
    } catch (err) {
      throw new UnavailableError(`claiming ${id}`, { cause: err });
    }
    if ('owner' in r) throw new NotOwnerError(id, r.owner);
    if ('stale' in r) throw new UnavailableError(`claiming ${id}: this node is not a live member of the cluster`);
    const token = r.token;
    this.#local.set(id, token);
    publish(this.#o.emitter, 'cluster:acquired', () => ({ instanceId: id, nodeId: this.nodeId, fencingToken: token }));
    return token;
  }

  /** Gives up a claimed id (compare-and-delete; best effort: an outage leaves it to expire with this node). */
  async unclaim(id: string): Promise<void> {
    if (!this.#local.delete(id)) return;
    try {
      await this.#store.release(id);
      publish(this.#o.emitter, 'cluster:released', () => ({ instanceId: id, nodeId: this.nodeId, reason: 'released' as const }));
    } catch (err) {
      this.#o.log.warn({ key: id, reason: err instanceof Error ? err.message : String(err) }, 'claim not released');
    }
  }

  /** Ids this node runs. */
  local(): string[] {
    return [...this.#local.keys()];
  }

  /** Whether this node runs `id`. */
  runs(id: string): boolean {
    return this.#local.has(id);
  }

  /** The fencing token of a local instance. */
  token(id: string): number | undefined {
    return this.#local.get(id);
  }

  /** The node running `id`, or null. */
  async owner(id: string): Promise<string | null> {
    try {
      return await this.#store.owner(id);
    } catch (err) {
      throw new UnavailableError(`owner of instance ${id}`, { cause: err });
    }
  }

  /** Live nodes. */
  async nodes(): Promise<string[]> {
    try {
      return await this.#store.nodes();
    } catch (err) {
      throw new UnavailableError('cluster nodes', { cause: err });
    }
  }

  /** Commits an instance's inbound cursor for the next owner (best effort: a failure is logged). */
  commitCursor(id: string, cursor: unknown): void {
    if (!this.#local.has(id)) return;
    this.#store.commitCursor(id, cursor).catch((err: unknown) => this.#o.log.warn({ instanceId: id, reason: String(err) }, 'cursor not committed'));
  }

  /** The committed cursor of `id`. */
  cursor(id: string): Promise<unknown> {
    return this.#store.cursor(id);
  }

  /** Resolves once no tick is running or due at once (after a `kick`). */
  async settled(): Promise<void> {
    while (this.#ticking) await this.#ticking;
  }

  /** Stops ticking (nothing more is acquired or renewed); the leases stay until {@link ClusterNode.close}. */
  async halt(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#ticking;
    this.#clearFence();
  }

  /**
   * Ends the node after its runtime stopped every local copy: `leave` releases every lease at
   * once so the other nodes take over without waiting for `leaseMs`.
   */
  async close(leave: boolean): Promise<void> {
    await this.halt();
    if (leave) {
      try {
        await this.#store.leave();
      } catch (err) {
        this.#o.log.warn({ reason: String(err) }, 'leases not released at stop: they expire after leaseMs');
      }
    }
    this.#local.clear();
    await this.#store.close();
  }

  // --- internals -------------------------------------------------------------------------

  async #tick(): Promise<void> {
    const sent = performance.now();
    let r: TickResult;
    try {
      if (this.#fenced) {
        // Every local copy was stopped: give the leases up, then start over.
        await this.#store.leave();
        this.#fenced = false;
      }
      r = await this.#store.tick(this.#offset);
    } catch (err) {
      if (!this.#degraded) {
        this.#degraded = true;
        const reason = err instanceof Error ? err.message : String(err);
        this.#o.log.warn({ reason }, 'cluster store unavailable: keeping what this node runs until its renewal deadline');
        publish(this.#o.emitter, 'cluster:degraded', () => ({ nodeId: this.nodeId, reason, running: this.#local.size }));
      }
      return;
    }
    if (this.#stopped) return;
    this.#degraded = false;
    // Renewed: the leases this node holds are valid until `sent + leaseMs` by Redis's clock.
    const deadline = sent + this.#o.leaseMs - this.#o.safetyMs;
    this.#deadline[0] = fenceTime(deadline);
    this.#armFence(deadline);
    this.#membership(r.nodes);
    const owned = new Set(r.owned);
    for (const id of [...this.#local.keys()]) {
      if (owned.has(id)) continue;
      this.#local.delete(id);
      publish(this.#o.emitter, 'cluster:lost', () => ({ instanceId: id, nodeId: this.nodeId, reason: 'lease lost or instance removed' }));
      await this.#host.stopLocal(id, 'lease lost or instance removed', false);
    }
    for (const a of r.acquired) {
      let spec: DeclaredSpec;
      try {
        spec = JSON.parse(a.spec) as DeclaredSpec;
      } catch {
        this.#o.log.error({ instanceId: a.id }, 'declared spec is not JSON: released');
        await this.#store.release(a.id).catch(() => undefined);
        continue;
      }
      this.#local.set(a.id, a.token);
      publish(this.#o.emitter, 'cluster:acquired', () => ({ instanceId: a.id, nodeId: this.nodeId, fencingToken: a.token }));
      this.#host.runLocal(spec, a.token).catch((err: unknown) => this.#o.log.error({ instanceId: a.id, reason: err instanceof Error ? err.message : String(err) }, 'could not run an acquired instance'));
    }
    // Over the fair share (a node joined): hand the excess off gracefully, then release it. In the
    // background: the ticks (renewals) go on while the instances stop, however long they take.
    if (this.#o.balance === false) return;
    const share = Math.ceil(r.declared / Math.max(1, r.nodes.length));
    const excess = r.owned.length - share - this.#handingOff.size;
    if (excess > 0) {
      for (const id of r.owned.filter((x) => !this.#handingOff.has(x)).slice(-excess)) void this.#handOff(id);
    }
  }

  async #handOff(id: string): Promise<void> {
    this.#handingOff.add(id);
    try {
      this.#local.delete(id);
      await this.#host.stopLocal(id, 'handed off to another node', false);
      // Stopped before released: another node can acquire it only once this copy is gone.
      if (this.#stopped || this.#fenced) return;
      await this.#store.release(id);
      publish(this.#o.emitter, 'cluster:released', () => ({ instanceId: id, nodeId: this.nodeId, reason: 'rebalance' as const }));
    } catch (err) {
      this.#o.log.warn({ instanceId: id, reason: err instanceof Error ? err.message : String(err) }, 'hand-off not released: the next owner waits for this node to give it up');
    } finally {
      this.#handingOff.delete(id);
    }
  }

  #membership(nodes: string[]): void {
    const now = new Set(nodes);
    for (const n of now) if (!this.#nodes.has(n) && n !== this.nodeId) publish(this.#o.emitter, 'cluster:node_up', () => ({ nodeId: n }));
    for (const n of this.#nodes) if (!now.has(n)) publish(this.#o.emitter, 'cluster:node_down', () => ({ nodeId: n }));
    this.#nodes = now;
  }

  /** At `at` (performance.now()), unless renewed again by then, this node stops everything it runs. */
  #armFence(at: number): void {
    this.#clearFence();
    this.#fenceTimer = setTimeout(() => this.#fence(), Math.max(0, at - performance.now()));
    this.#fenceTimer.unref();
  }

  #clearFence(): void {
    if (this.#fenceTimer) clearTimeout(this.#fenceTimer);
    this.#fenceTimer = undefined;
  }

  #fence(): void {
    this.#fenceTimer = undefined;
    if (this.#stopped || this.#local.size === 0) return;
    this.#deadline[0] = 0;
    const ids = [...this.#local.keys()];
    this.#local.clear();
    this.#fenced = true;
    const reason = `lease renewal overdue (no contact with the cluster store for ${this.#o.leaseMs - this.#o.safetyMs} ms): stopped before the lease can pass to another node`;
    this.#o.log.error({ instances: ids.length }, reason);
    publish(this.#o.emitter, 'cluster:degraded', () => ({ nodeId: this.nodeId, reason, running: 0, fenced: ids.length }));
    for (const id of ids) {
      publish(this.#o.emitter, 'cluster:lost', () => ({ instanceId: id, nodeId: this.nodeId, reason: 'fenced' }));
      void this.#host.stopLocal(id, reason, true);
    }
  }
}
