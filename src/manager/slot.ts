/**
 * One key's activation: the slot (its state and accessors, the rarely used part allocated on
 * demand; it is also the ref callers hold on it), and the leases of `attach`.
 *
 * @packageDocumentation
 */
import { inspect } from 'node:util';
import type { IntensityWindow } from '../supervisor/backoff.js';
import type { ControlJob, Mailbox } from './mailbox.js';
import type { Partition } from './registry.js';
import type { AgentRef, AgentStopReason, AnyAgent, Lease } from './types.js';

export type SlotState = 'starting' | 'running' | 'hibernating' | 'stopped';

/** The rarely needed part of a slot, allocated on first use (keeps a resident agent small). */
class SlotExtra {
  initialState: unknown;
  restarts = 0;
  intensity: IntensityWindow | undefined;
  retryTimer: NodeJS.Timeout | undefined;
  hibernateAttempt = 0;
  settled: Promise<void> | undefined;
  resolveSettled: (() => void) | undefined;
  activeControl: ControlJob | undefined;
  endReason: AgentStopReason | undefined;
  endError: (() => Error) | undefined;
}

/**
 * The per-key state of one activation, and the handle callers hold on it: a slot is its own
 * {@link AgentRef} (one object per resident agent, not two). Hot fields live on the object; the
 * rest (crash, retry and shutdown bookkeeping) in a {@link SlotExtra} allocated on first write,
 * behind accessors. Its JSON and `util.inspect` forms show only the ref's public fields.
 *
 * Every field is initialized here (in the constructor), so V8 keeps them all in the object.
 */
export class Slot implements AgentRef {
  state: SlotState = 'starting';
  agent: AnyAgent | undefined = undefined;
  /** Revision of the checkpoint this activation descends from (0: none). */
  revision = 0;
  leases = 0;
  /**
   * Time of the last activity, in ms since the manager's `epoch` (kept only with an idle
   * timeout). Relative, so it stays a small integer (a Smi) rather than a boxed heap number.
   */
  lastActive = 0;
  /**
   * Recency: the manager's activity counter at the last activity. Negated while the slot sits in
   * its partition's idle order untouched since it entered it (see {@link Partition.idle}).
   */
  stamp = 0;
  /** Neighbours in the partition's idle order (`idleNext` undefined: not in it). */
  idlePrev: Slot | undefined = undefined;
  idleNext: Slot | undefined = undefined;
  /** Queued jobs; present while a pump is scheduled or running (or a restart is in progress). */
  mailbox: Mailbox | undefined = undefined;
  /** The start in progress (only while `starting`). */
  ready: Promise<void> | undefined = undefined;
  #x: SlotExtra | undefined = undefined;
  constructor(
    readonly key: string,
    readonly partition: Partition,
    readonly incarnation: number,
  ) {}
  // The accessors write through `this.#x ??= …` inline: a private method or accessor would add a
  // brand field to every slot.
  /** The `initialState` it was started with, until its first save (a crash restart needs it). */
  get initialState(): unknown {
    return this.#x?.initialState;
  }
  set initialState(v: unknown) {
    if (v !== undefined || this.#x) (this.#x ??= new SlotExtra()).initialState = v;
  }
  /** Crash restarts so far. */
  get restarts(): number {
    return this.#x?.restarts ?? 0;
  }
  set restarts(v: number) {
    (this.#x ??= new SlotExtra()).restarts = v;
  }
  get intensity(): IntensityWindow | undefined {
    return this.#x?.intensity;
  }
  set intensity(v: IntensityWindow | undefined) {
    (this.#x ??= new SlotExtra()).intensity = v;
  }
  /** Pending retry of a failed idle/eviction hibernation. */
  get retryTimer(): NodeJS.Timeout | undefined {
    return this.#x?.retryTimer;
  }
  set retryTimer(v: NodeJS.Timeout | undefined) {
    if (v !== undefined || this.#x) (this.#x ??= new SlotExtra()).retryTimer = v;
  }
  /** Consecutive failed saves (the backoff attempt of the next retry). */
  get hibernateAttempt(): number {
    return this.#x?.hibernateAttempt ?? 0;
  }
  set hibernateAttempt(v: number) {
    if (v !== 0 || this.#x) (this.#x ??= new SlotExtra()).hibernateAttempt = v;
  }
  /** Resolves when a hibernation ends either way (only while `hibernating`). */
  get settled(): Promise<void> | undefined {
    return this.#x?.settled;
  }
  set settled(v: Promise<void> | undefined) {
    if (v !== undefined || this.#x) (this.#x ??= new SlotExtra()).settled = v;
  }
  get resolveSettled(): (() => void) | undefined {
    return this.#x?.resolveSettled;
  }
  set resolveSettled(v: (() => void) | undefined) {
    if (v !== undefined || this.#x) (this.#x ??= new SlotExtra()).resolveSettled = v;
  }
  /** The control job (save or end) being run, so a forced end can settle it. */
  get activeControl(): ControlJob | undefined {
    return this.#x?.activeControl;
  }
  set activeControl(v: ControlJob | undefined) {
    if (v !== undefined || this.#x) (this.#x ??= new SlotExtra()).activeControl = v;
  }
  get endReason(): AgentStopReason | undefined {
    return this.#x?.endReason;
  }
  set endReason(v: AgentStopReason | undefined) {
    (this.#x ??= new SlotExtra()).endReason = v;
  }
  /** What calls on this (stopped) activation reject with, when not `StoppedError`. */
  get endError(): (() => Error) | undefined {
    return this.#x?.endError;
  }
  set endError(v: (() => Error) | undefined) {
    if (v !== undefined || this.#x) (this.#x ??= new SlotExtra()).endError = v;
  }

  // --- AgentRef ------------------------------------------------------------------------------

  get manager(): string {
    return this.partition.core.name;
  }
  get status(): 'running' | 'hibernating' | 'stopped' {
    const s = this.state;
    return s === 'starting' ? 'running' : s;
  }
  call(message: never): Promise<never> {
    return this.partition.core.call(this, message) as Promise<never>;
  }
  touch(): void {
    if (this.state === 'running') this.partition.core.touch(this);
  }
  /** The ref's public view (not the slot's internals). */
  toJSON(): { manager: string; key: string; incarnation: number; status: string; restarts: number } {
    return { manager: this.manager, key: this.key, incarnation: this.incarnation, status: this.status, restarts: this.restarts };
  }
  [inspect.custom](): object {
    return this.toJSON();
  }
}

/** True once a slot has ended (a function, so TypeScript does not narrow it across awaits). */
export const ended = (slot: Slot): boolean => slot.state === 'stopped';

/** What refs and leases need from their manager. */
export interface Core {
  readonly name: string;
  call(slot: Slot, message: unknown): Promise<unknown>;
  touch(slot: Slot): void;
  release(slot: Slot): void;
}

export class LeaseImpl implements Lease {
  readonly ref: AgentRef;
  readonly #slot: Slot;
  readonly #core: Core;
  #detached = false;
  #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => this.detach();
  constructor(slot: Slot, core: Core, signal: AbortSignal | undefined) {
    this.ref = slot;
    this.#slot = slot;
    this.#core = core;
    if (signal) {
      this.#signal = signal;
      signal.addEventListener('abort', this.#onAbort, { once: true });
    }
  }
  get detached(): boolean {
    return this.#detached || this.#slot.state === 'stopped';
  }
  detach(): void {
    if (this.#detached) return;
    this.#detached = true;
    this.#signal?.removeEventListener('abort', this.#onAbort);
    this.#signal = undefined;
    this.#core.release(this.#slot);
  }
  [Symbol.dispose](): void {
    this.detach();
  }
}
