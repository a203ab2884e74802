/**
 * The options of cluster mode (`Runtime.start({ cluster })`) and what the runtime shows of it.
 * No ioredis here: the main entry imports this module; the Redis code loads only in cluster mode.
 *
 * @packageDocumentation
 */
import { hostname } from 'node:os';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { MAX_TIMER_MS } from '../wire/timers.js';

/** What a node needs to resolve an instance's credentials locally (they never go to Redis). */
export interface ClusterSpecView {
  readonly id: string;
  readonly name: string;
  readonly channelType: string;
  readonly settings?: Record<string, unknown>;
}

/** Options of cluster mode. See the README's Cluster section for what each guarantees. */
export interface ClusterOptions {
  /** The Redis (≥ 6.2) that holds declarations, leases and membership: a URL (`redis://…`), ioredis options, or an ioredis client (left open at stop). */
  redis: string | Record<string, unknown>;
  /** This node's id, unique in the cluster. Default: `<hostname>-<pid>-<random>`. */
  nodeId?: string;
  /** Lease length, ms (default 10000): a node that dies is replaced after at most this long. */
  leaseMs?: number;
  /**
   * How long before its lease can expire a node that could not renew stops what it runs, ms.
   * Default `leaseMs / 3`. Must cover the node's clock drift over `leaseMs` and the time its
   * instances take to stop (a fenced stop delivers nothing more and terminates what overruns
   * half of it).
   */
  safetyMs?: number;
  /** Prefix of every key (default `threadvisor`): several clusters may share one Redis. */
  namespace?: string;
  /**
   * Where sends wait for delivery (default `'redis'`). `'redis'`: `rt.send` on any node appends
   * the message to the instance's Redis stream and the owner delivers it; a send is accepted only
   * once Redis has it, so nothing accepted is lost when a process dies (at least once; see the
   * README's Cluster section). `'memory'`: sends are queued in the owner's memory, as in local
   * mode; on a node that does not run the instance they reject with `not_owner`.
   */
  durability?: 'redis' | 'memory';
  /** How long a delivered idempotency key answers a repeated send with its first receipt, cluster-wide, ms (default 86400000: a day). */
  deliveredKeyTtlMs?: number;
  /** Resolves an instance's credentials on the node that runs it (default: none). */
  credentials?: (spec: ClusterSpecView) => Record<string, unknown> | Promise<Record<string, unknown>>;
}

/** What `startInstance` answers in cluster mode: the declaration stands; who runs it now. */
export interface ClusterDeclaration {
  readonly id: string;
  /** The node running it right after the declaration (this one or another), or null when none yet. */
  readonly owner: string | null;
}

/** What `rt.send` resolves with under `ack: 'accepted'`: the entry Redis holds. */
export interface AcceptedSend {
  readonly accepted: true;
  /** The entry's id in the instance's stream. */
  readonly entryId: string;
}

/** `rt.cluster`: this node's view of the cluster. */
export interface ClusterView {
  /** This node's id. */
  readonly nodeId: string;
  /** Live nodes (their membership not expired). Rejects with `unavailable` during an outage. */
  nodes(): Promise<string[]>;
  /** The node running `id`, or null. Rejects with `unavailable` during an outage. */
  owner(id: string): Promise<string | null>;
  /** Ids this node runs. */
  local(): string[];
}

/** Zod schema of {@link ClusterOptions}. */
export const clusterOptionsSchema = z
  .object({
    redis: z.union([z.string().regex(/^rediss?:\/\//, 'expected a redis:// or rediss:// URL'), z.record(z.string(), z.unknown()), z.object({}).passthrough()]),
    nodeId: z
      .string()
      .min(1)
      .max(200)
      .regex(/^[^|\s]+$/, 'no spaces and no "|"')
      .optional(),
    leaseMs: z.number().int().min(100).max(MAX_TIMER_MS).default(10_000),
    safetyMs: z.number().int().min(1).optional(),
    namespace: z
      .string()
      .min(1)
      .max(100)
      .regex(/^[\w.-]+$/, 'letters, digits, _ . - only')
      .default('threadvisor'),
    durability: z.enum(['redis', 'memory']).default('redis'),
    deliveredKeyTtlMs: z.number().int().min(1000).max(30 * 86_400_000).default(86_400_000),
    credentials: z.custom<NonNullable<ClusterOptions['credentials']>>((v) => typeof v === 'function', 'expected a function').optional(),
  })
  .strict()
  .refine((c) => c.safetyMs === undefined || c.safetyMs < c.leaseMs / 2, { message: 'safetyMs must be below leaseMs / 2', path: ['safetyMs'] });

/** Validated cluster options with defaults filled in. */
export interface ResolvedCluster {
  readonly redis: ClusterOptions['redis'];
  readonly nodeId: string;
  readonly leaseMs: number;
  readonly safetyMs: number;
  readonly namespace: string;
  readonly durability: 'redis' | 'memory';
  readonly deliveredKeyTtlMs: number;
  readonly credentials: ClusterOptions['credentials'];
}

/** Fills the defaults of parsed options. */
export function resolveCluster(c: z.output<typeof clusterOptionsSchema>): ResolvedCluster {
  return {
    redis: c.redis,
    nodeId: c.nodeId ?? `${hostname()}-${process.pid}-${randomUUID().slice(0, 8)}`,
    leaseMs: c.leaseMs,
    safetyMs: c.safetyMs ?? Math.floor(c.leaseMs / 3),
    namespace: c.namespace,
    durability: c.durability,
    deliveredKeyTtlMs: c.deliveredKeyTtlMs,
    credentials: c.credentials,
  };
}

/** A Redis URL fit for a log or an error: its password replaced. */
export function safeRedisUrl(redis: unknown): string {
  if (typeof redis !== 'string') return '(ioredis options)';
  try {
    const u = new URL(redis);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '(unparsable URL)';
  }
}
