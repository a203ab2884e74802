/**
 * Durable sends, what their parts share: the layer's options, host and counters, the state the
 * append, read and settle parts hold in common (one {@link DurableState} made by `DurableSends`),
 * the shape of a stream being read, and the names of the keys.
 *
 * @packageDocumentation
 */
import type { EventEmitter } from 'node:events';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { IdempotencyKey } from '../runtime/outbound/idempotency.js';

/** The consumer group every owner reads with. */
export const GROUP = 'owners';
/** Entries read per stream per `XREADGROUP`. */
export const READ_COUNT = 256;
/** Longest blocking read (ms): a change of the streams read interrupts it at once anyway. */
export const BLOCK_MS = 5_000;

/** What the durable layer needs of its runtime. */
export interface DurableHost {
  /**
   * Hands a message to the local instance's queue; settles with the channel's receipt or the
   * error its `send` would have rejected with. Rejects with `not_found` when it is not here.
   */
  deliver(id: string, message: unknown, key: IdempotencyKey | undefined, redelivery: boolean): Promise<unknown>;
  /** Whether the instance still runs here (a failure of a delivery is then final, not a hand-over). */
  holds(id: string): boolean;
}

/** Options of `DurableSends`. */
export interface DurableOptions {
  readonly redis: string | Record<string, unknown>;
  readonly nodeId: string;
  readonly namespace: string;
  /** Backlog bound of an instance declared without `queueCapacity`. */
  readonly defaultCapacity: number;
  /** How long a delivered idempotency key answers with its first receipt, ms. */
  readonly deliveredKeyTtlMs: number;
  /**
   * Longest blocking read of the owned streams (ms; default 5 000). Kept below half the lease's
   * safety margin, a read started before this node stopped an instance ends before any other
   * node can take the instance over, so it never takes an entry that belongs to the next owner.
   */
  readonly readBlockMs?: number;
  readonly log: Logger;
  /** Where `durable:*` events go (the runtime). */
  readonly emitter: EventEmitter;
}

/** Counters of the durable layer (health and tests). */
export interface DurableCounters {
  /** Sends this node appended. */
  appended: number;
  /** Entries this node delivered and settled (receipt or final failure). */
  settled: number;
  /** Entries claimed from a previous owner. */
  claimed: number;
  /** Sends answered from a delivered idempotency key without a new entry. */
  duplicates: number;
  /** Entries of this node read again after its reading connection was lost (delivered as redeliveries). */
  recovered: number;
  /** Entries that could not be read (not written by threadvisor): settled as `invalid_message`. */
  malformed: number;
}

/** What the append, read and settle parts of one node's durable sends share. */
export interface DurableState {
  readonly o: DurableOptions;
  readonly host: DurableHost;
  /** `{ns}:`, the start of every key. */
  readonly prefix: string;
  /** This node's reply stream. */
  readonly replyKey: string;
  /** Commands (auto-pipelined: the sends and settlements of one turn go in one round trip). */
  readonly cmd: Redis;
  readonly counters: DurableCounters;
  /** Set once by `DurableSends.close`: every loop ends and nothing new starts. */
  closed: boolean;
}

export interface Stream {
  readonly key: string;
  inflight: number;
  /** Entries handed to the instance here and not yet settled (or given up), by entry id. */
  readonly held: Set<string>;
  /**
   * The reading connection was lost: a read Redis answered may never have reached this node, so
   * this consumer's pending entries that are not {@link Stream.held} are read again (from `from`).
   */
  recover: string | undefined;
}

export type Fields = string[];
export type StreamEntry = [id: string, fields: Fields];

/** The fields of an entry, by name. */
export function fieldsOf(f: Fields): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < f.length; i += 2) out[f[i] as string] = f[i + 1] as string;
  return out;
}

/** The stream of instance `id`. */
export function streamKey(s: DurableState, id: string): string {
  return `${s.prefix}q:${id}`;
}

/** The key remembering the first receipt of a delivered idempotency key of instance `id`. */
export function deliveredKey(s: DurableState, id: string, keyJson: string): string {
  return keyJson === '' ? `${s.prefix}dk:-` : `${s.prefix}dk:${id}:${keyJson}`;
}
