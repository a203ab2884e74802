/**
 * The registry of slots: the partitions keys hash to, each with its slots, its idle order and
 * its quarantined keys; and the bookkeeping of activity and leases that keeps the idle order.
 *
 * @packageDocumentation
 */
import { InvalidConfigError } from '../errors.js';
import { scheduleSweep } from './lifecycle.js';
import type { ManagerState } from './manager-state.js';
import { Slot, type Core } from './slot.js';

/** One registry shard. */
export class Partition {
  /** Every key in memory: starting, running or hibernating. */
  readonly slots = new Map<string, Slot>();
  /**
   * Unattached running agents, in the order they entered (oldest first): a circular list linked
   * through the slots' `idlePrev`/`idleNext` (no allocation per agent), with this sentinel as
   * its end. Activity does not reorder it (that would cost pointer updates on every
   * `get`/`call`, touching the neighbours' memory); it only sets the slot's `stamp`, which is
   * negated (`-stamp` at entry) while the slot is untouched since it entered. The sweep and
   * eviction look at the head, and move a touched head to the tail ({@link idleHead}). A head
   * that was not touched since it entered is the least recently used of all: every entry
   * behind it entered later, and stamps only grow.
   */
  readonly idle: Slot;
  readonly quarantine = new Map<string, { until: number; timer: NodeJS.Timeout | undefined }>();
  sweepTimer: NodeJS.Timeout | undefined;
  constructor(
    readonly index: number,
    /** The owning manager's functions, for refs and leases (one per partition, not per agent). */
    readonly core: Core,
  ) {
    const end = new Slot('', this, 0);
    end.idlePrev = end;
    end.idleNext = end;
    this.idle = end;
  }
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

/**
 * Ms since the manager's epoch, as a small integer: `Math.floor` hands V8 back a Smi where a
 * plain subtraction of two doubles gives a heap number, and a slot's `lastActive` field would
 * then box every value (16 more bytes per agent). Past 2^31 ms (24.8 days) V8 widens the field
 * to a double: still correct, just boxed again.
 */
export const clock = (m: ManagerState): number => Math.floor(Date.now() - m.epoch);

export function touch(m: ManagerState, slot: Slot): void {
  if (!m.tracking) return;
  if (m.timed) slot.lastActive = clock(m);
  slot.stamp = ++m.seq;
  if (slot.idleNext !== undefined || slot.leases > 0 || slot.state !== 'running') return; // already in the order: lazy
  if (slot.retryTimer !== undefined) {
    clearTimeout(slot.retryTimer);
    slot.retryTimer = undefined;
  }
  const p = slot.partition;
  append(p.idle, slot);
  if (p.sweepTimer === undefined) scheduleSweep(m, p);
}

/** Puts a slot at the tail of an idle order, as untouched since now (its `stamp` negated). */
function append(end: Slot, slot: Slot): void {
  const last = end.idlePrev as Slot;
  slot.idlePrev = last;
  slot.idleNext = end;
  last.idleNext = slot;
  end.idlePrev = slot;
  slot.stamp = -slot.stamp;
}

export function leaveIdle(slot: Slot): void {
  const next = slot.idleNext;
  if (next === undefined) return;
  const prev = slot.idlePrev as Slot;
  prev.idleNext = next;
  next.idlePrev = prev;
  slot.idlePrev = undefined;
  slot.idleNext = undefined;
  if (slot.stamp < 0) slot.stamp = -slot.stamp;
}

/** The activity counter when an idle-order head entered (or was moved to the tail). */
export const idleSince = (head: Slot): number => -head.stamp;

/** The least recently used slot of the idle order (see {@link Partition.idle}). */
export function idleHead(p: Partition): Slot | undefined {
  const end = p.idle;
  for (;;) {
    const slot = end.idleNext as Slot;
    if (slot === end) return undefined;
    if (slot.stamp < 0) return slot;
    leaveIdle(slot); // touched since it entered: to the tail
    append(end, slot);
  }
}

export function lease(m: ManagerState, slot: Slot): void {
  slot.leases += 1;
  if (slot.retryTimer !== undefined) {
    clearTimeout(slot.retryTimer);
    slot.retryTimer = undefined;
  }
  if (m.timed) slot.lastActive = clock(m);
  slot.stamp = ++m.seq;
  leaveIdle(slot);
}
