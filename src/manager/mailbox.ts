/**
 * The mailbox of a key: its queue of calls and control jobs (save, end), run one at a time and
 * in order; a call that reaches a passivated activation follows the key to its next one.
 *
 * @packageDocumentation
 */
import { StoppedError } from '../errors.js';
import { crash } from './crashes.js';
import { acquire, control } from './lifecycle.js';
import type { ManagerState } from './manager-state.js';
import { touch } from './registry.js';
import type { Slot } from './slot.js';
import type { AgentStopReason, AnyAgent } from './types.js';

export interface CallJob {
  readonly kind: 'call';
  readonly message: unknown;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: unknown) => void;
}

export interface ControlJob {
  readonly kind: 'end' | 'checkpoint';
  /** `end` only: why it stops. */
  readonly reason: AgentStopReason;
  /** `end` only: save first (false: drop the state: `forget`, or no storage). */
  readonly save: boolean;
  /** `end` only: stop even if the save fails. */
  readonly force: boolean;
  readonly resolve: (value: unknown) => void;
  readonly reject: (err: unknown) => void;
}

export type Job = CallJob | ControlJob;

const isThenable = (v: unknown): v is PromiseLike<unknown> =>
  v !== null && (typeof v === 'object' || typeof v === 'function') && typeof (v as PromiseLike<unknown>).then === 'function';

export function call(m: ManagerState, slot: Slot, message: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => deliver(m, slot, { kind: 'call', message, resolve, reject }));
}

/** Queues a call on its activation; after a passivation it follows the key to its next one. */
export function deliver(m: ManagerState, slot: Slot, job: CallJob): void {
  if (slot.state === 'running' || slot.state === 'hibernating') {
    if (m.touchOnCall && slot.state === 'running') touch(m, slot);
    enqueue(m, slot, job);
    return;
  }
  if (reroutes(m, slot)) {
    acquire(m, slot.key, undefined, false).then(
      (next) => deliver(m, next, job),
      (err: unknown) => job.reject(err),
    );
    return;
  }
  job.reject(slot.endError?.() ?? new StoppedError(`agent ${m.name}/${slot.key}`));
}

function reroutes(m: ManagerState, slot: Slot): boolean {
  return m.state === 'open' && (slot.endReason === 'idle' || slot.endReason === 'evicted');
}

export function enqueue(m: ManagerState, slot: Slot, job: Job): void {
  (slot.queue ??= []).push(job);
  if (!slot.busy) {
    slot.busy = true;
    queueMicrotask(() => pump(m, slot));
  }
}

/** Runs queued jobs one at a time. `slot.busy` is true throughout, including async waits. */
export function pump(m: ManagerState, slot: Slot): void {
  const q = slot.queue;
  if (q === undefined || slot.state === 'stopped') {
    slot.busy = false; // nothing queued, or ended meanwhile (end() settled the queue)
    return;
  }
  while (slot.head < q.length) {
    if (slot.head > 1024 && slot.head * 2 > q.length) {
      q.splice(0, slot.head);
      slot.head = 0;
    }
    const job = q[slot.head] as Job;
    q[slot.head++] = undefined;
    if (job.kind === 'call') {
      let reply: unknown;
      try {
        reply = (slot.agent as AnyAgent).handle(job.message);
      } catch (err) {
        crash(m, slot, job, err);
        return;
      }
      if (isThenable(reply)) {
        Promise.resolve(reply).then(
          (value) => {
            job.resolve(value);
            pump(m, slot);
          },
          (err: unknown) => crash(m, slot, job, err),
        );
        return;
      }
      job.resolve(reply);
    } else {
      void control(m, slot, job).then(() => pump(m, slot));
      return;
    }
  }
  slot.queue = undefined; // drained: an idle agent keeps no queue array
  slot.head = 0;
  slot.busy = false;
}

/** A crash: the calls queued behind it reject with `error()`; control jobs stay queued. */
export function rejectPendingCalls(slot: Slot, error: () => Error): void {
  const q = slot.queue as Array<Job | undefined>;
  const kept: Job[] = [];
  for (let i = slot.head; i < q.length; i++) {
    const job = q[i];
    if (job === undefined) continue;
    if (job.kind === 'call') job.reject(error());
    else kept.push(job);
  }
  slot.queue = kept;
  slot.head = 0;
}
