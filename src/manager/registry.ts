/**
 * The registry of slots: the partitions keys hash to, each with its slots, its idle order and
 * its quarantined keys; and the bookkeeping of activity and leases that keeps the idle order.
 *
 * @packageDocumentation
 */
import { InvalidConfigError } from '../errors.js';
import { scheduleSweep } from './lifecycle.js';
import type { ManagerState } from './manager-state.js';
import type { Core, Slot } from './slot.js';

/** One registry shard. */
export class Partition {
  /** Every key in memory: starting, running or hibernating. */
  readonly slots = new Map<string, Slot>();
  /**
   * Unattached running agents, in the order they entered (oldest first). Activity does not
   * reorder it (that would cost two Map operations per `get`/`call`); it only bumps the slot's
   * `stamp`. The sweep and eviction look at the head, and move a head whose `stamp` changed
   * since it entered to the tail ({@link idleHead}). A head that was not touched since it
   * entered is the least recently used of all: every entry behind it entered later, and stamps
   * only grow.
   */
  readonly idle = new Map<string, Slot>();
  readonly quarantine = new Map<string, { until: number; timer: NodeJS.Timeout | undefined }>();
  sweepTimer: NodeJS.Timeout | undefined;
  constructor(
    readonly index: number,
    /** The owning manager's functions, for refs and leases (one per partition, not per agent). */
    readonly core: Core,
  ) {}
}

/**
 * FNV-1a over the UTF-16 code units: a cheap, stable key → partition map. Masked to 31 bits so
 * the caller's `%` stays an integer operation (a `>>> 0` result above 2^31 would make it a
 * floating-point modulo, several times slower).
 */
function hashKey(key: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < key.length; i++) {
    h ^= key.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h & 0x7fffffff;
}

export function partitionOf(m: ManagerState, key: string): Partition {
  const ps = m.partitions;
  return ps.length === 1 ? (ps[0] as Partition) : (ps[hashKey(key) % ps.length] as Partition);
}

export function checkKey(key: unknown): asserts key is string {
  if (typeof key !== 'string') throw new InvalidConfigError('key', [{ path: 'key', message: `expected a string, got ${typeof key}` }]);
}

// --- activity, leases, idle order ----------------------------------------------------------

export function touch(m: ManagerState, slot: Slot): void {
  if (!m.tracking) return;
  if (m.timed) slot.lastActive = Date.now();
  slot.stamp = ++m.seq;
  if (slot.idleStamp >= 0 || slot.leases > 0 || slot.state !== 'running') return; // already in the order: lazy
  if (slot.retryTimer !== undefined) {
    clearTimeout(slot.retryTimer);
    slot.retryTimer = undefined;
  }
  const p = slot.partition;
  slot.idleStamp = slot.stamp;
  p.idle.set(slot.key, slot);
  if (p.sweepTimer === undefined) scheduleSweep(m, p);
}

export function leaveIdle(slot: Slot): void {
  if (slot.idleStamp < 0) return;
  slot.idleStamp = -1;
  slot.partition.idle.delete(slot.key);
}

/** The least recently used slot of the idle order (see {@link Partition.idle}). */
export function idleHead(p: Partition): Slot | undefined {
  for (;;) {
    const first = p.idle.values().next();
    if (first.done) return undefined;
    const slot = first.value;
    if (slot.stamp === slot.idleStamp) return slot;
    p.idle.delete(slot.key); // touched since it entered: to the tail
    p.idle.set(slot.key, slot);
    slot.idleStamp = slot.stamp;
  }
}

export function lease(m: ManagerState, slot: Slot): void {
  slot.leases += 1;
  if (slot.retryTimer !== undefined) {
    clearTimeout(slot.retryTimer);
    slot.retryTimer = undefined;
  }
  if (m.timed) slot.lastActive = Date.now();
  slot.stamp = ++m.seq;
  leaveIdle(slot);
}
