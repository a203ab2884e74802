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

/**
 * A slot's queue while it has work: allocated by the first job of a burst and dropped when the
 * pump drains it, so an idle agent carries one empty field for it. Its presence on the slot
 * means a pump is scheduled or running (or a crash restart is in progress).
 */
export class Mailbox {
  jobs: Array<Job | undefined>;
  /** Index of the next job to run. */
  head = 0;
  constructor(first: Job) {
    this.jobs = [first];
  }
}

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
  if (slot.mailbox !== undefined) {
    slot.mailbox.jobs.push(job);
    return;
  }
  slot.mailbox = new Mailbox(job);
  queueMicrotask(() => pump(m, slot));
}

/** Runs queued jobs one at a time. `slot.mailbox` stays set throughout, including async waits. */
export function pump(m: ManagerState, slot: Slot): void {
  const box = slot.mailbox;
  if (box === undefined) return; // nothing queued (end() settled the queue)
  if (slot.state === 'stopped') {
    slot.mailbox = undefined; // ended meanwhile
    return;
  }
  const q = box.jobs;
  while (box.head < q.length) {
    if (box.head > 1024 && box.head * 2 > q.length) {
      q.splice(0, box.head);
      box.head = 0;
    }
    const job = q[box.head] as Job;
    q[box.head++] = undefined;
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
  if (slot.mailbox === box) slot.mailbox = undefined; // drained: an idle agent keeps no queue
}

/** A crash: the calls queued behind it reject with `error()`; control jobs stay queued. */
export function rejectPendingCalls(slot: Slot, error: () => Error): void {
  const box = slot.mailbox as Mailbox;
  const q = box.jobs;
  const kept: Job[] = [];
  for (let i = box.head; i < q.length; i++) {
    const job = q[i];
    if (job === undefined) continue;
    if (job.kind === 'call') job.reject(error());
    else kept.push(job);
  }
  box.jobs = kept;
  box.head = 0;
}
