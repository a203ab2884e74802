/**
 * The runtime's cluster mode: joins the cluster (Redis leases, durable sends), declares
 * instances cluster-wide, runs and stops the local copies this node acquires or loses, and
 * routes durable sends. One per runtime in cluster mode; it reaches the runtime through its host.
 */
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { z } from 'zod';
import { InstanceNotFoundError, InvalidConfigError, InvalidMessageError, NotOwnerError, UnavailableError, type ThreadvisorError } from '../errors.js';
import { findNonJson } from '../manager/json.js';
import { parseConfig } from '../validate.js';
import { safeRedisUrl, type ClusterDeclaration, type ClusterView, type ResolvedCluster } from '../cluster/options.js';
import type { ClusterNode, DeclaredSpec } from '../cluster/node.js';
import type { DurableSends } from '../cluster/durable.js';
import type { LeaseStore } from '../cluster/store.js';
import type { IdempotencyKey } from './outbound/idempotency.js';
import { enqueueManyOptionsSchema, enqueueOptionsSchema } from './outbound/schemas.js';
import type { EnqueueManyOptions, SendOutcome } from './outbound/types.js';
import { findNonCloneable } from './cloneable.js';
import { channelSettingsSchema, checkSettings, knownSettingsSchema } from './channel-settings.js';
import type { Entry } from './entry.js';
import { resolveChannel, restartSchema, startInstanceSchema, type Resolved, type waitSchema } from './options.js';
import type { SendOptions } from './runtime.js';

const durableSendSchema = enqueueOptionsSchema.extend({ ack: z.enum(['delivered', 'accepted']).optional() });

/** What cluster mode needs of its runtime. */
export interface ClusterHost {
  readonly opts: Resolved;
  /** The runtime's logger (`component: runtime`). */
  readonly log: Logger;
  /** The runtime: `cluster:*` and `durable:*` events are emitted on it. */
  readonly emitter: EventEmitter;
  /** The runtime's instances here, by id. */
  readonly entries: ReadonlyMap<string, Entry>;
  /** Whether the runtime is still running (not stopping or stopped). */
  running(): boolean;
  /** Why a send to this registered instance is refused now (see `InstanceLifecycle.refusal`). */
  refusal(entry: Entry): ThreadvisorError | undefined;
  /** Starts an instance in this process, with its fencing token and committed cursor. */
  startLocal(o: z.output<typeof startInstanceSchema>, w: z.output<typeof waitSchema>, fencingToken: number | undefined, cursor: unknown): Promise<unknown>;
  /** Stops a local instance and removes it (`fast`: fencing, as when this node loses the lease). */
  stopEntry(entry: Entry, reason: string, fast: boolean): Promise<void>;
}

export class ClusterMode {
  /** The resolved cluster options. */
  readonly options: ResolvedCluster;
  /** This node. */
  readonly node: ClusterNode;
  /** With `durability: 'redis'`: sends through Redis streams. */
  #durable: DurableSends | undefined;
  readonly #host: ClusterHost;

  private constructor(c: ResolvedCluster, host: ClusterHost, store: LeaseStore, Node: typeof ClusterNode) {
    this.options = c;
    this.#host = host;
    this.node = new Node(
      store,
      {
        runLocal: (spec, token) => this.#runDeclared(spec, token),
        stopLocal: (id, reason, fast) => this.#stopDeclared(id, reason, fast),
      },
      { nodeId: c.nodeId, leaseMs: c.leaseMs, safetyMs: c.safetyMs, log: host.log.child({ nodeId: c.nodeId }), emitter: host.emitter },
    );
  }

  /** Cluster mode: connects to Redis (ioredis loads here) and starts this node's ticks. */
  static async join(c: ResolvedCluster, host: ClusterHost): Promise<ClusterMode> {
    const [{ LeaseStore }, { ClusterNode }] = await Promise.all([import('../cluster/store.js'), import('../cluster/node.js')]);
    const store = new LeaseStore(c.redis as never, { namespace: c.namespace, nodeId: c.nodeId, leaseMs: c.leaseMs });
    try {
      await store.connect();
    } catch (err) {
      await store.close();
      throw new UnavailableError(`cluster: Redis at ${safeRedisUrl(c.redis)} cannot be reached (${err instanceof Error ? err.message : String(err)})`, { cause: err });
    }
    const mode = new ClusterMode(c, host, store, ClusterNode);
    if (c.durability === 'redis') {
      const { DurableSends } = await import('../cluster/durable.js');
      const durable = new DurableSends(
        { redis: c.redis, nodeId: c.nodeId, namespace: c.namespace, defaultCapacity: host.opts.queueCapacity, deliveredKeyTtlMs: c.deliveredKeyTtlMs, readBlockMs: Math.max(50, Math.min(5000, Math.floor(c.safetyMs / 2))), log: host.log.child({ nodeId: c.nodeId }), emitter: host.emitter },
        {
          deliver: (id, message, key, redelivery) => mode.#deliverDurable(id, message, key, redelivery),
          holds: (id) => host.entries.has(id) && mode.node.runs(id),
        },
      );
      try {
        await durable.start();
      } catch (err) {
        await durable.close().catch(() => undefined);
        await store.close();
        throw new UnavailableError(`cluster: Redis at ${safeRedisUrl(c.redis)} cannot be reached (${err instanceof Error ? err.message : String(err)})`, { cause: err });
      }
      mode.#durable = durable;
    }
    mode.node.start();
    return mode;
  }

  /** With `durability: 'redis'`: the durable sends (`rt.send` goes through them). */
  get durable(): DurableSends | undefined {
    return this.#durable;
  }

  /** Cluster mode, durable sends: hands an entry of an instance's stream to its local queue. */
  #deliverDurable(id: string, message: unknown, key: IdempotencyKey | undefined, redelivery: boolean): Promise<unknown> {
    const entry = this.#host.entries.get(id);
    if (entry === undefined) return Promise.reject(new InstanceNotFoundError(id));
    const refused = this.#host.refusal(entry);
    if (refused) return Promise.reject(refused);
    return redelivery ? entry.queue.enqueueRedelivery(message, key) : entry.queue.enqueue(message, { idempotencyKey: key ?? null, waitForCapacity: true });
  }

  /** This node's view of the cluster (see `Runtime.cluster`). */
  view(): ClusterView {
    const node = this.node;
    return { nodeId: node.nodeId, nodes: () => node.nodes(), owner: (id) => node.owner(id), local: () => node.local() };
  }

  /**
   * Cluster mode: declares the instance cluster-wide (idempotent by id), then answers who runs
   * it after this node's next tick. Credentials are refused here: they never go to Redis; each
   * node resolves them with `cluster.credentials`.
   */
  async declare(o: z.output<typeof startInstanceSchema>): Promise<ClusterDeclaration> {
    const node = this.node;
    const opts = this.#host.opts;
    const problems: { path: string; message: string }[] = [];
    if (o.id === undefined) problems.push({ path: 'id', message: 'required in cluster mode (the declaration is idempotent by id)' });
    if (o.credentials !== undefined) problems.push({ path: 'credentials', message: 'not in a cluster declaration: each node resolves them with cluster.credentials' });
    const bad = findNonCloneable(o.settings, 'settings');
    if (bad) problems.push({ path: bad.path, message: bad.problem });
    if (problems.length > 0) throw new InvalidConfigError('instance options', problems);
    if (o.restart) parseConfig('instance options.restart', restartSchema, { ...opts.restart, ...o.restart });
    const channel = resolveChannel(o.channel);
    const settings = o.settings ?? {};
    const known = knownSettingsSchema(channel);
    const schema = known ? known.schema : await channelSettingsSchema(channel, opts.readyTimeoutMs);
    if (schema) checkSettings(schema, settings, 'instance options');
    let json: string;
    try {
      json = JSON.stringify(settings);
    } catch {
      throw new InvalidConfigError('instance options', [{ path: 'settings', message: 'must be JSON in cluster mode (it is stored in Redis)' }]);
    }
    const spec: DeclaredSpec = {
      id: o.id as string,
      name: o.name,
      channelType: o.channelType,
      channel,
      settings: JSON.parse(json) as Record<string, unknown>,
      ...(o.resourceLimits ? { resourceLimits: o.resourceLimits as Record<string, number> } : {}),
      ...(o.restart ? { restart: o.restart } : {}),
      ...(o.queueCapacity !== undefined ? { queueCapacity: o.queueCapacity } : {}),
      ...(o.isolation ? { isolation: o.isolation } : {}),
    };
    await node.declare(spec);
    await node.settled();
    const owner = node.runs(spec.id) ? node.nodeId : await node.owner(spec.id).catch(() => null);
    return { id: spec.id, owner };
  }

  /** Cluster mode: runs an instance this node acquired, its credentials resolved here. */
  async #runDeclared(spec: DeclaredSpec, token: number): Promise<void> {
    const host = this.#host;
    if (!host.running()) return;
    const c = this.options;
    const credentials = c.credentials ? await c.credentials({ id: spec.id, name: spec.name, channelType: spec.channelType, ...(spec.settings ? { settings: spec.settings } : {}) }) : {};
    const cursor = await this.node.cursor(spec.id).catch(() => undefined);
    if (!host.running() || !this.node.runs(spec.id)) return;
    const o = parseConfig('declared instance', startInstanceSchema, {
      id: spec.id,
      name: spec.name,
      channelType: spec.channelType,
      channel: spec.channel,
      credentials,
      settings: spec.settings ?? {},
      ...(spec.resourceLimits ? { resourceLimits: spec.resourceLimits } : {}),
      ...(spec.restart ? { restart: spec.restart } : {}),
      ...(spec.queueCapacity !== undefined ? { queueCapacity: spec.queueCapacity } : {}),
      ...(spec.isolation ? { isolation: spec.isolation } : {}),
    });
    const old = host.entries.get(spec.id);
    if (old) await host.stopEntry(old, 'replaced by a new lease', false);
    await host.startLocal(o, {}, token, cursor);
    void this.#durable?.adopt(spec.id);
  }

  /**
   * Cluster mode: stops the local copy of `id`. `fast` (fencing): nothing queued is delivered,
   * queued sends reject with `stopped`, and a worker still running after half of `safetyMs` is
   * terminated.
   */
  async #stopDeclared(id: string, reason: string, fast: boolean): Promise<void> {
    const entry = this.#host.entries.get(id);
    if (!entry) return;
    await this.#host.stopEntry(entry, reason, fast);
  }

  /** Cluster mode, durable sends: validates, then appends to the instance's stream. */
  async sendDurable(id: string, message: unknown, options: SendOptions | undefined): Promise<unknown> {
    const o = options === undefined ? {} : parseConfig('send options', durableSendSchema, options);
    return (this.#durable as DurableSends).send(id, message, o);
  }

  /** Cluster mode, durable sends: one append per message, in order (auto-pipelined), settled together. */
  async sendManyDurable(id: string, messages: readonly unknown[], options: EnqueueManyOptions | undefined): Promise<SendOutcome[]> {
    if (!Array.isArray(messages)) throw new InvalidConfigError('messages of a batch send', [{ path: '', message: 'expected an array of messages' }]);
    const o = options === undefined ? {} : parseConfig('batch send options', enqueueManyOptionsSchema, options);
    const durable = this.#durable as DurableSends;
    for (let i = 0; i < messages.length; i++) {
      const m: unknown = messages[i];
      if (m === undefined) throw new InvalidMessageError(`instance ${id}`, 'the message is undefined', { path: `$[${i}]` });
      const bad = findNonJson(m);
      if (bad !== undefined) throw new InvalidMessageError(`instance ${id}`, `${bad.problem} (durable sends are stored as JSON)`, { path: `$[${i}]${bad.path.slice(1)}` });
    }
    return Promise.all(
      messages.map((m) =>
        durable.send(id, m, { ...(o.signal ? { signal: o.signal } : {}), ...(o.waitForCapacity ? { waitForCapacity: true } : {}) }).then(
          (receipt): SendOutcome => ({ ok: true, receipt }),
          (error: unknown): SendOutcome => ({ ok: false, error: error instanceof Error ? error : new Error(String(error)) }),
        ),
      ),
    );
  }

  /** Why a send for an instance not running here is refused: `not_owner`, naming the owner. */
  async notHere(id: string): Promise<never> {
    const owner = await this.node.owner(id).catch(() => null);
    throw new NotOwnerError(id, owner);
  }

  /** The runtime is stopping: nothing more is acquired or read. */
  async halt(): Promise<void> {
    await this.node.halt();
    this.#durable?.halt();
  }

  /** The runtime's instances stopped: closes the durable sends, then releases the leases. */
  async close(): Promise<void> {
    await this.#durable?.close();
    await this.node.close(true);
  }
}
