/**
 * One key's activation: the slot (its state and accessors, the rarely used part allocated on
 * demand), and the handles callers hold on it (its ref, and the leases of `attach`).
 *
 * @packageDocumentation
 */
import type { IntensityWindow } from '../supervisor/backoff.js';
import type { ControlJob, Job } from './mailbox.js';
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
 * The per-key state of one activation. Hot fields live on the object; the rest (crash, retry
 * and shutdown bookkeeping) in a {@link SlotExtra} allocated on first write, behind accessors.
 */
export class Slot {
  state: SlotState = 'starting';
  agent: AnyAgent | undefined;
  /** Revision of the checkpoint this activation descends from (0: none). */
  revision = 0;
  leases = 0;
  /** Time of the last activity (ms since the epoch; kept only with an idle timeout). */
  lastActive = 0;
  /** Recency: the manager's activity counter at the last activity. */
  stamp = 0;
  /** `stamp` when it entered the idle order (`-1`: not in it). */
  idleStamp = -1;
  queue: Array<Job | undefined> | undefined;
  head = 0;
  /** A pump is scheduled or running (or a restart is in progress). */
  busy = false;
  /** The start in progress (only while `starting`). */
  ready: Promise<void> | undefined;
  readonly ref: AgentRef;
  #x: SlotExtra | undefined;
  constructor(
    readonly key: string,
    readonly partition: Partition,
    readonly incarnation: number,
  ) {
    this.ref = new Ref(this);
  }
  get #extra(): SlotExtra {
    return (this.#x ??= new SlotExtra());
  }
  /** The `initialState` it was started with, until its first save (a crash restart needs it). */
  get initialState(): unknown {
    return this.#x?.initialState;
  }
  set initialState(v: unknown) {
    if (v !== undefined || this.#x) this.#extra.initialState = v;
  }
  /** Crash restarts so far. */
  get restarts(): number {
    return this.#x?.restarts ?? 0;
  }
  set restarts(v: number) {
    this.#extra.restarts = v;
  }
  get intensity(): IntensityWindow | undefined {
    return this.#x?.intensity;
  }
  set intensity(v: IntensityWindow | undefined) {
    this.#extra.intensity = v;
  }
  /** Pending retry of a failed idle/eviction hibernation. */
  get retryTimer(): NodeJS.Timeout | undefined {
    return this.#x?.retryTimer;
  }
  set retryTimer(v: NodeJS.Timeout | undefined) {
    if (v !== undefined || this.#x) this.#extra.retryTimer = v;
  }
  /** Consecutive failed saves (the backoff attempt of the next retry). */
  get hibernateAttempt(): number {
    return this.#x?.hibernateAttempt ?? 0;
  }
  set hibernateAttempt(v: number) {
    if (v !== 0 || this.#x) this.#extra.hibernateAttempt = v;
  }
  /** Resolves when a hibernation ends either way (only while `hibernating`). */
  get settled(): Promise<void> | undefined {
    return this.#x?.settled;
  }
  set settled(v: Promise<void> | undefined) {
    if (v !== undefined || this.#x) this.#extra.settled = v;
  }
  get resolveSettled(): (() => void) | undefined {
    return this.#x?.resolveSettled;
  }
  set resolveSettled(v: (() => void) | undefined) {
    if (v !== undefined || this.#x) this.#extra.resolveSettled = v;
  }
  /** The control job (save or end) being run, so a forced end can settle it. */
  get activeControl(): ControlJob | undefined {
    return this.#x?.activeControl;
  }
  set activeControl(v: ControlJob | undefined) {
    if (v !== undefined || this.#x) this.#extra.activeControl = v;
  }
  get endReason(): AgentStopReason | undefined {
    return this.#x?.endReason;
  }
  set endReason(v: AgentStopReason | undefined) {
    this.#extra.endReason = v;
  }
  /** What calls on this (stopped) activation reject with, when not `StoppedError`. */
  get endError(): (() => Error) | undefined {
    return this.#x?.endError;
  }
  set endError(v: (() => Error) | undefined) {
    if (v !== undefined || this.#x) this.#extra.endError = v;
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

class Ref implements AgentRef {
  readonly #slot: Slot;
  constructor(slot: Slot) {
    this.#slot = slot;
  }
  get manager(): string {
    return this.#slot.partition.core.name;
  }
  get key(): string {
    return this.#slot.key;
  }
  get incarnation(): number {
    return this.#slot.incarnation;
  }
  get status(): 'running' | 'hibernating' | 'stopped' {
    const s = this.#slot.state;
    return s === 'starting' ? 'running' : s;
  }
  get restarts(): number {
    return this.#slot.restarts;
  }
  call(message: never): Promise<never> {
    return this.#slot.partition.core.call(this.#slot, message) as Promise<never>;
  }
  touch(): void {
    if (this.#slot.state === 'running') this.#slot.partition.core.touch(this.#slot);
  }
}

export class LeaseImpl implements Lease {
  readonly ref: AgentRef;
  readonly #slot: Slot;
  readonly #core: Core;
  #detached = false;
  #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => this.detach();
  constructor(slot: Slot, core: Core, signal: AbortSignal | undefined) {
    this.ref = slot.ref;
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
