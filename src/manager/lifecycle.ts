/**
 * The lifecycle of a key's agent: start or thaw on demand, idle sweep and eviction,
 * hibernation (save, then stop), the end of an activation, and the manager's close.
 *
 * @packageDocumentation
 */
import {
  AgentCrashedError,
  HibernateFailedError,
  RevisionConflictError,
  StartFailureError,
  StoppedError,
  ThawFailedError,
} from '../errors.js';
import { backoffDelay } from '../supervisor/backoff.js';
import { MAX_TIMER_MS } from '../wire/timers.js';
import { findNonJson } from './json.js';
import { deliver, enqueue, type ControlJob } from './mailbox.js';
import { ckey, emit, errMessage, noop, type ManagerState } from './manager-state.js';
import { clock, idleHead, idleSince, lease, leaveIdle, partitionOf, touch, type Partition } from './registry.js';
import { Slot, ended } from './slot.js';
import { CHECKPOINT_VERSION, type Checkpoint, type Storage } from './storage.js';
import type { AgentStopReason, AnyAgent } from './types.js';

// --- acquisition -----------------------------------------------------------------------------

/**
 * Resolves with the key's running slot, starting or thawing it if needed; with `attach`, takes
 * a lease in the same synchronous step that finds it running (so nothing can hibernate it in
 * between).
 */
export async function acquire(m: ManagerState, key: string, initialState: unknown, attach: boolean): Promise<Slot> {
  const p = partitionOf(m, key);
  for (;;) {
    if (m.state !== 'open') throw new StoppedError(`instance manager ${m.name}`);
    const q = p.quarantine.get(key);
    if (q) throw new AgentCrashedError(m.name, key, 'quarantined', { details: { until: q.until } });
    if (m.node && !p.slots.has(key)) {
      // Cluster mode: only the node that owns the key runs its agent (not_owner elsewhere).
      await m.node.claim(key);
      if (m.state !== 'open') throw new StoppedError(`instance manager ${m.name}`);
    }
    const slot = p.slots.get(key) ?? startSlot(m, p, key, initialState);
    if (slot.state === 'running') {
      if (attach) lease(m, slot);
      else touch(m, slot);
      return slot;
    }
    if (slot.state === 'starting') await slot.ready;
    else await slot.settled;
  }
}

function startSlot(m: ManagerState, p: Partition, key: string, initialState: unknown): Slot {
  const slot = new Slot(key, p, ++m.incarnations);
  p.slots.set(key, slot);
  slot.ready = activate(m, slot, initialState);
  slot.ready.catch(noop); // waiters see the rejection; an unobserved one is not an error
  return slot;
}

async function activate(m: ManagerState, slot: Slot, initialState: unknown): Promise<void> {
  const { key } = slot;
  let cp: Checkpoint | undefined;
  let agent: AnyAgent;
  try {
    cp = await readCheckpoint(m, key);
    const state = cp ? await migrate(m, cp) : initialState;
    try {
      agent = await construct(m, key, state, cp, 0);
    } catch (err) {
      if (cp) throw new ThawFailedError(m.name, key, `init rejected the checkpoint: ${errMessage(err)}`, { cause: err });
      throw new StartFailureError(`${m.name}/${key}`, errMessage(err), { cause: err, details: { manager: m.name, key } });
    }
  } catch (err) {
    const p = slot.partition;
    if (p.slots.get(key) === slot) p.slots.delete(key);
    if (m.node && !p.slots.has(key)) void m.node.unclaim(key);
    slot.state = 'stopped';
    slot.endReason = 'restart_failed';
    const event = err instanceof ThawFailedError ? 'thaw_failed' : 'start_failed';
    m.logger.warn({ key, err }, event === 'thaw_failed' ? 'thaw failed; nothing started or overwritten' : 'agent failed to start');
    emit(m, event, () => ({ key, incarnation: slot.incarnation, error: err, reason: errMessage(err) }));
    throw err;
  }
  slot.agent = agent;
  slot.ready = undefined;
  slot.revision = cp?.revision ?? 0;
  slot.initialState = cp ? undefined : initialState;
  slot.state = 'running';
  m.resident += 1;
  if (cp) {
    m.logger.debug({ key, revision: cp.revision }, 'agent thawed');
    emit(m, 'thawed', () => ({ key, incarnation: slot.incarnation, revision: cp.revision }));
  }
  m.logger.debug({ key, thawed: cp !== undefined }, 'agent started');
  emit(m, 'started', () => ({ key, incarnation: slot.incarnation, thawed: cp !== undefined, revision: slot.revision }));
  evict(m); // before the new agent joins the idle order, so it is never its own victim
  touch(m, slot);
}

export async function readCheckpoint(m: ManagerState, key: string): Promise<Checkpoint | undefined> {
  if (!m.storage) return undefined;
  let cp: Checkpoint | undefined;
  try {
    cp = await m.storage.get(ckey(m, key));
  } catch (err) {
    throw new ThawFailedError(m.name, key, `storage could not read the checkpoint: ${errMessage(err)}`, { cause: err });
  }
  if (cp !== undefined && cp.version > CHECKPOINT_VERSION) {
    throw new ThawFailedError(m.name, key, `checkpoint format version ${cp.version} is newer than ${CHECKPOINT_VERSION}`);
  }
  return cp;
}

export async function migrate(m: ManagerState, cp: Checkpoint): Promise<unknown> {
  const current = m.stateVersion;
  if (cp.stateVersion === current) return cp.state;
  if (cp.stateVersion > current) {
    throw new ThawFailedError(m.name, cp.key, `checkpoint state version ${cp.stateVersion} is newer than the agent's ${current}`);
  }
  const migrateFn = m.agent.migrate;
  if (typeof migrateFn !== 'function') {
    throw new ThawFailedError(m.name, cp.key, `checkpoint state version ${cp.stateVersion} needs a migration to ${current}; the agent has no static migrate()`);
  }
  try {
    return await migrateFn.call(m.agent, cp.state, cp.stateVersion);
  } catch (err) {
    throw new ThawFailedError(m.name, cp.key, `migrate from state version ${cp.stateVersion} threw: ${errMessage(err)}`, { cause: err });
  }
}

export async function construct(m: ManagerState, key: string, state: unknown, cp: Checkpoint | undefined, restarts: number): Promise<AnyAgent> {
  const agent = new m.agent(key, m.agentOptions as never);
  if (typeof agent.init === 'function') {
    await agent.init(state, { key, thawed: cp !== undefined, revision: cp?.revision ?? 0, restarts });
  }
  return agent;
}

// --- releases, idle sweep, eviction ----------------------------------------------------------

export function release(m: ManagerState, slot: Slot): void {
  if (slot.state === 'stopped' || slot.leases === 0) return;
  slot.leases -= 1;
  if (slot.leases === 0 && slot.state === 'running' && m.state === 'open') {
    touch(m, slot);
    evict(m); // the cap was exceeded while everything was attached
  }
}

export function scheduleSweep(m: ManagerState, p: Partition): void {
  if (!m.timed || m.state !== 'open') return;
  const head = idleHead(p);
  if (head === undefined) return;
  const delay = Math.min(MAX_TIMER_MS, Math.max(0, head.lastActive + m.idleMs - clock(m)));
  p.sweepTimer = setTimeout(() => sweep(m, p), delay);
}

function sweep(m: ManagerState, p: Partition): void {
  p.sweepTimer = undefined;
  const now = clock(m);
  for (let head = idleHead(p); head !== undefined && head.lastActive + m.idleMs <= now; head = idleHead(p)) {
    const slot = head;
    m.logger.debug({ key: slot.key }, 'agent idle');
    emit(m, 'idle', () => ({ key: slot.key, incarnation: slot.incarnation, idleMs: now - slot.lastActive }));
    passivate(m, slot, 'idle'); // leaves the idle order
  }
  scheduleSweep(m, p);
}

/** Hibernates the least recently used unattached agents while more than `maxResident` run. */
function evict(m: ManagerState): void {
  while (m.resident > m.maxResident) {
    let victim: Slot | undefined;
    for (const p of m.partitions) {
      const head = idleHead(p);
      if (head !== undefined && (victim === undefined || idleSince(head) < idleSince(victim))) victim = head;
    }
    if (victim === undefined) return; // everything else is attached or already on its way out
    passivate(m, victim, 'evicted');
  }
}

/** Idle or eviction hibernation of an unattached running agent (no waiter; failures retry). */
function passivate(m: ManagerState, slot: Slot, reason: 'idle' | 'evicted'): void {
  leaveIdle(slot);
  if (slot.state !== 'running' || slot.leases > 0) return;
  void endSlot(m, slot, reason, { save: m.storage !== null, force: false }).catch(noop);
}

// --- saves and ends --------------------------------------------------------------------------

/** Runs a control job (a save, or an end) off the mailbox. */
export async function control(m: ManagerState, slot: Slot, job: ControlJob): Promise<void> {
  slot.activeControl = job;
  if (job.kind === 'checkpoint') {
    try {
      const cp = m.storage ? await save(m, slot) : undefined;
      if (ended(slot)) return; // force-ended meanwhile: end() settled the job
      slot.activeControl = undefined;
      job.resolve(cp);
    } catch (err) {
      if (ended(slot)) return;
      slot.activeControl = undefined;
      saveFailed(m, slot, 'checkpoint', err);
      job.reject(err);
    }
    return;
  }
  let persisted = false;
  if (job.save) {
    try {
      await save(m, slot);
      persisted = true;
    } catch (err) {
      if (ended(slot)) return; // force-ended meanwhile (shutdown budget expired)
      saveFailed(m, slot, job.reason, err);
      if (!job.force) {
        slot.activeControl = undefined;
        leaveHibernating(m, slot, job.reason);
        job.reject(err);
        return;
      }
    }
    if (ended(slot)) return;
    if (persisted) {
      m.logger.debug({ key: slot.key, reason: job.reason, revision: slot.revision }, 'agent hibernated');
      emit(m, 'hibernated', () => ({ key: slot.key, incarnation: slot.incarnation, reason: job.reason, revision: slot.revision }));
    }
  }
  const agent = slot.agent;
  slot.activeControl = undefined;
  end(m, slot, job.reason, persisted);
  if (agent && typeof agent.terminate === 'function') {
    try {
      await agent.terminate(job.reason);
    } catch (err) {
      m.logger.warn({ key: slot.key, err }, 'agent terminate threw');
    }
  }
  job.resolve(undefined);
}

/** Snapshot → JSON check → conditional put. Throws `HibernateFailedError`. */
async function save(m: ManagerState, slot: Slot): Promise<Checkpoint> {
  const { key } = slot;
  const storage = m.storage as Storage;
  let state: unknown;
  try {
    state = await (slot.agent as AnyAgent).snapshot();
  } catch (err) {
    throw new HibernateFailedError(m.name, [key], `snapshot threw: ${errMessage(err)}`, { cause: err });
  }
  const bad = findNonJson(state);
  if (bad) throw new HibernateFailedError(m.name, [key], `snapshot is not plain JSON at ${bad.path}: ${bad.problem}`);
  let cp: Checkpoint;
  try {
    cp = await storage.put(
      ckey(m, key),
      { version: CHECKPOINT_VERSION, stateVersion: m.stateVersion, agent: m.agentName, savedAt: Date.now(), state: state as never },
      { expectedRevision: slot.revision },
    );
  } catch (err) {
    const why = err instanceof RevisionConflictError ? 'revision_conflict (another writer changed the checkpoint)' : `storage put failed: ${errMessage(err)}`;
    throw new HibernateFailedError(m.name, [key], why, { cause: err });
  }
  slot.revision = cp.revision;
  slot.initialState = undefined;
  slot.hibernateAttempt = 0;
  return cp;
}

function saveFailed(m: ManagerState, slot: Slot, reason: AgentStopReason | 'checkpoint', err: unknown): void {
  const attempt = slot.hibernateAttempt;
  m.logger.error({ key: slot.key, reason, attempt, err }, 'agent state could not be saved; it stays resident');
  emit(m, 'hibernate_failed', () => ({ key: slot.key, incarnation: slot.incarnation, reason, attempt, error: err }));
}

/** Starts an `end` job (the slot turns `hibernating` at once) and resolves when it is done. */
export function endSlot(m: ManagerState, slot: Slot, reason: AgentStopReason, how: { save: boolean; force: boolean }): Promise<void> {
  if (slot.state === 'running') {
    m.resident -= 1;
    slot.state = 'hibernating';
    leaveIdle(slot);
    if (slot.retryTimer !== undefined) {
      clearTimeout(slot.retryTimer);
      slot.retryTimer = undefined;
    }
    slot.settled = new Promise((resolve) => (slot.resolveSettled = resolve));
  }
  return new Promise<unknown>((resolve, reject) =>
    enqueue(m, slot, { kind: 'end', reason, save: how.save, force: how.force, resolve, reject }),
  ).then(noop);
}

/** A failed save: back to running, and (idle/eviction) a retry later. */
function leaveHibernating(m: ManagerState, slot: Slot, reason: AgentStopReason): void {
  slot.state = 'running';
  m.resident += 1;
  slot.hibernateAttempt += 1;
  const resolve = slot.resolveSettled;
  slot.settled = undefined;
  slot.resolveSettled = undefined;
  resolve?.();
  if (m.state !== 'open' || slot.leases > 0) return;
  if (reason === 'idle' || reason === 'evicted') {
    const delay = backoffDelay(m.retry, slot.hibernateAttempt - 1);
    slot.retryTimer = setTimeout(() => {
      slot.retryTimer = undefined;
      passivate(m, slot, reason);
    }, Math.min(delay, MAX_TIMER_MS));
  } else {
    touch(m, slot);
  }
}

/** Removes a slot for good, then settles what was queued behind its end. */
export function end(m: ManagerState, slot: Slot, reason: AgentStopReason, persisted: boolean, error?: () => Error): void {
  if (ended(slot)) return;
  if (slot.state === 'running') m.resident -= 1;
  slot.state = 'stopped';
  slot.endReason = reason;
  slot.endError = error;
  slot.agent = undefined;
  slot.initialState = undefined;
  const p = slot.partition;
  if (p.slots.get(slot.key) === slot) p.slots.delete(slot.key);
  if (m.node && !p.slots.has(slot.key)) void m.node.unclaim(slot.key);
  leaveIdle(slot);
  if (slot.retryTimer !== undefined) clearTimeout(slot.retryTimer);
  slot.retryTimer = undefined;
  const box = slot.mailbox;
  const pending = box === undefined ? [] : box.jobs.slice(box.head);
  if (slot.activeControl !== undefined) pending.unshift(slot.activeControl);
  slot.activeControl = undefined;
  slot.mailbox = undefined;
  const resolve = slot.resolveSettled;
  slot.settled = undefined;
  slot.resolveSettled = undefined;
  m.logger.debug({ key: slot.key, reason, persisted }, 'agent stopped');
  emit(m, 'stopped', () => ({ key: slot.key, incarnation: slot.incarnation, reason, persisted }));
  for (const job of pending) {
    if (job === undefined) continue;
    if (job.kind === 'call') deliver(m, slot, job);
    else if (job.kind === 'end') job.resolve(undefined);
    else job.reject(error?.() ?? new StoppedError(`agent ${m.name}/${slot.key}`));
  }
  resolve?.();
}

// --- closing ---------------------------------------------------------------------------------

export async function doClose(m: ManagerState, discardUnsaved: boolean): Promise<void> {
  for (const p of m.partitions) {
    clearTimeout(p.sweepTimer);
    p.sweepTimer = undefined;
    for (const q of p.quarantine.values()) clearTimeout(q.timer);
    p.quarantine.clear();
  }
  const failed = new Set<string>();
  let causes: unknown[] = [];
  // Slots can change state while we wait (starts finish, saves fail): loop until all are settled.
  for (;;) {
    const pending: Array<Promise<unknown>> = [];
    for (const p of m.partitions) {
      for (const slot of p.slots.values()) {
        if (slot.retryTimer !== undefined) {
          clearTimeout(slot.retryTimer);
          slot.retryTimer = undefined;
        }
        if (slot.state === 'starting') pending.push((slot.ready as Promise<void>).catch(noop));
        else if (slot.state === 'hibernating') pending.push(slot.settled as Promise<void>);
        else if (slot.state === 'running' && !failed.has(slot.key)) {
          pending.push(
            endSlot(m, slot, 'close', { save: m.storage !== null, force: discardUnsaved }).catch((err: unknown) => {
              failed.add(slot.key);
              causes.push(err);
            }),
          );
        }
      }
    }
    if (pending.length === 0) break;
    await Promise.all(pending);
  }
  if (failed.size > 0) {
    const cause = causes.length === 1 ? causes[0] : new AggregateError(causes, 'hibernate failures');
    causes = [];
    throw new HibernateFailedError(
      m.name,
      [...failed],
      `close: ${failed.size} agent(s) could not be saved and stay resident; call close() again, or close({ discardUnsaved: true })`,
      { cause },
    );
  }
  // Cluster mode: every agent is saved and gone: the claims go at once (the others need not wait).
  await m.remote?.close();
  await m.node?.close(true);
  m.state = 'closed';
  m.logger.debug('instance manager closed');
  m.resolveExited({ class: 'shutdown', reason: 'shutdown' });
}

/** Shutdown budget expired (or brutal_kill): every agent in memory stops now without saving, loudly. */
export function forceEndAll(m: ManagerState): void {
  const keys: string[] = [];
  for (const p of m.partitions) {
    for (const slot of [...p.slots.values()]) {
      if (slot.state === 'starting') continue;
      keys.push(slot.key);
      end(m, slot, 'close', false);
    }
  }
  if (keys.length > 0) {
    m.logger.error({ count: keys.length, keys: keys.slice(0, 20) }, 'shutdown budget expired: agents stopped without saving their latest state');
  }
}
