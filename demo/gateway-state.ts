/**
 * The gateway demo's bookkeeping: what it records per instance (events with their times, counters,
 * the last health), per injected fault, and the event lines of the live table (the same event from
 * many instances within a moment batched into one line), plus small helpers (a send's error code,
 * waiting for a condition, the simulator's totals).
 *
 * @packageDocumentation
 */
import { DeliveryFailedError, ThreadvisorError, type Runtime } from '../src/index.js';
import type { FaultName } from './gateway-plan.js';
import type { PlatformSim } from './platform-sim.js';
import { secs } from './table.js';

/** Events of the same text from several instances within this long are noted as one line. */
const BATCH_MS = 150;
/** The event lines the live table keeps. */
const EVENT_LINES = 14;

/** The fields of an instance event the demo reads. */
export interface InstanceEvent {
  instanceId: string;
  name: string;
  at: number;
}
/** `instance:restart`. */
export interface RestartEvent extends InstanceEvent {
  class: 'recoverable' | 'fatal';
  reason: string | null;
  kind?: string;
  restartCount: number;
}
/** `instance:disconnected` and `instance:error`. */
export interface ReasonEvent extends InstanceEvent {
  reason: string | null;
  trigger?: string;
}
/** `instance:reconnect`. */
export interface ReconnectEvent extends InstanceEvent {
  phase: 'scheduled' | 'attempt' | 'failed' | 'exhausted';
  attempt: number;
  reason?: string | null;
}
/** An `InstanceManager` agent event. */
export interface AgentEvent {
  key: string;
}

/** An instance's health snapshot. */
export type Health = Awaited<ReturnType<Runtime['health']>>;

/** What the demo records of one instance. */
export interface Inst {
  readonly index: number;
  readonly id: string;
  readonly fault: FaultName | undefined;
  inbound: number;
  sent: number;
  delivered: number;
  rejected: number;
  /** Counters at the previous frame, for rates. */
  prevInbound: number;
  prevDelivered: number;
  restarts: RestartEvent[];
  connected: number[];
  disconnected: ReasonEvent[];
  errors: ReasonEvent[];
  reconnectFailures: ReconnectEvent[];
  health: Health | undefined;
}

/** One injected fault. */
export interface FaultRecord {
  readonly fault: FaultName;
  readonly instance: Inst;
  readonly atMs: number;
  injectedAt: number | undefined;
  /** How the send that carried the fault settled: `delivered`, an error code, or `pending`. */
  sendOutcome: string;
  /** The faulted instance's worker just before the fault (`health().worker.threadId`). */
  threadId: number | null;
  /** The other instances in that worker just before the fault. */
  mates: string[];
}

/** A send's outcome: delivered, or the error code it was rejected with. */
export const REFUSED = new Set(['not_running', 'queue_full', 'not_found', 'invalid_config']);

/** The code of a typed rejection (`delivery_failed:<reason>` for a failed delivery); undefined when untyped. */
export function errorCode(err: unknown): string | undefined {
  if (err instanceof DeliveryFailedError) return `delivery_failed:${err.reason}`;
  if (err instanceof ThreadvisorError) return err.code;
  return undefined;
}

/** Resolves after `ms`. */
export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Polls `cond` every `stepMs` until it holds (true) or `timeoutMs` passed (false). */
export async function waitFor(cond: () => boolean, timeoutMs: number, stepMs = 25): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() >= until) return false;
    await sleep(stepMs);
  }
  return true;
}

/** The simulator's counters summed over its tokens. */
export function simulatorTotals(sim: PlatformSim): { requests: number; sent: number; rateLimited: number; overLimit: number; conflicts: number; serverErrors: number; unauthorized: number } {
  const total = { requests: 0, sent: 0, rateLimited: 0, overLimit: 0, conflicts: 0, serverErrors: 0, unauthorized: 0 };
  for (const st of Object.values(sim.stats())) for (const k of Object.keys(total) as Array<keyof typeof total>) total[k] += st[k];
  return total;
}

/** The run's counters (sends, inbound messages, handler errors). */
export interface Totals {
  inbound: number;
  sent: number;
  refused: number;
  delivered: number;
  rejected: number;
  untyped: number;
  outstanding: number;
  handling: number;
  inboundAfterClose: number;
  cutAtClose: number;
  malformedInbound: number;
  handlerErrors: number;
}

/** The agents' counters: activations, thaws, hibernations, the keys seen and those asleep. */
export interface AgentCounts {
  started: number;
  thaws: number;
  hibernations: number;
  keys: Set<string>;
  sleeping: Set<string>;
}

/** A first start that was retried. */
export interface StartRetry {
  instance: string;
  attempt: number;
  reason: string;
}

/** A new instance's record. */
export function newInst(index: number, id: string, fault: FaultName | undefined): Inst {
  return {
    index,
    id,
    fault,
    inbound: 0,
    sent: 0,
    delivered: 0,
    rejected: 0,
    prevInbound: 0,
    prevDelivered: 0,
    restarts: [],
    connected: [],
    disconnected: [],
    errors: [],
    reconnectFailures: [],
    health: undefined,
  };
}

/**
 * The run's event lines: stamped with the time since the warm-up ended (`[warm-up]` before), the
 * last few kept for the live table, and each written at once when the output is not a TTY.
 */
export class EventNotes {
  /** The last lines, oldest first. */
  readonly lines: string[] = [];
  private readonly batches = new Map<string, { at: string; ids: string[]; timer: NodeJS.Timeout }>();

  /**
   * @param say - writes one line of output
   * @param tty - the output is a TTY (the lines show in the redrawn table instead)
   * @param startedAt - the run's clock: 0 during the warm-up, then when it ended
   */
  constructor(
    private readonly say: (line: string) => void,
    private readonly tty: boolean,
    private readonly startedAt: () => number,
  ) {}

  private stamp(): string {
    const t0 = this.startedAt();
    return t0 === 0 ? '[warm-up]' : `[${secs(Date.now() - t0).padStart(7)}]`;
  }

  private noteAt(at: string, line: string): void {
    const text = `${at} ${line}`;
    this.lines.push(text);
    if (this.lines.length > EVENT_LINES) this.lines.shift();
    if (!this.tty) this.say(text);
  }

  /** One line, now. */
  note(line: string): void {
    this.noteAt(this.stamp(), line);
  }

  /**
   * One instance's event. A shared worker's death disconnects, restarts and reconnects each of its
   * instances: the same event for many instances within BATCH_MS makes one line,
   * `50 instances (gw-0, gw-1, …) …`.
   */
  noteEach(inst: Inst, text: string): void {
    const b = this.batches.get(text);
    if (b) b.ids.push(inst.id);
    else this.batches.set(text, { at: this.stamp(), ids: [inst.id], timer: setTimeout(() => this.flushBatch(text), BATCH_MS) });
  }

  /** Writes every batch still open. */
  flushBatches(): void {
    for (const text of [...this.batches.keys()]) this.flushBatch(text);
  }

  private flushBatch(text: string): void {
    const b = this.batches.get(text);
    if (!b) return;
    this.batches.delete(text);
    clearTimeout(b.timer);
    const who = b.ids.length === 1 ? b.ids[0] : `${b.ids.length} instances (${b.ids.slice(0, 4).join(', ')}${b.ids.length > 4 ? ', …' : ''})`;
    this.noteAt(b.at, `${who} ${text}`);
  }
}
