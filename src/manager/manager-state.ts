/**
 * The state an instance manager's parts share (registry, mailbox, lifecycle, crashes, cluster
 * mode): its resolved settings, its partitions, its counters and its cluster links. One object
 * per manager, passed to every part; no part keeps module-level state.
 *
 * @packageDocumentation
 */
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { InvalidConfigError } from '../errors.js';
import type { ClusterNode } from '../cluster/node.js';
import type { RemoteCalls } from '../cluster/remote-calls.js';
import { resolveBackoff, type BackoffPolicy } from '../supervisor/backoff.js';
import type { ChildExit } from '../supervisor/types.js';
import { defaultLogger, publishUnchecked } from '../telemetry.js';
import type { AgentEvents, EmitArgs } from '../events.js';
import type { ParsedOptions } from './options.js';
import { Partition } from './registry.js';
import type { Core } from './slot.js';
import { MemoryStorage, type CheckpointKey, type Storage } from './storage.js';
import type { AgentClass } from './types.js';

export class ManagerState {
  /** The manager's name (scopes its checkpoints). */
  readonly name: string;
  /** The manager itself: where its events are emitted. */
  readonly emitter: EventEmitter;
  readonly agent: AgentClass;
  readonly agentName: string;
  readonly stateVersion: number;
  readonly agentOptions: unknown;
  readonly storage: Storage | null;
  readonly idleMs: number;
  readonly touchOnCall: boolean;
  readonly maxResident: number;
  /** Idle order is kept only when something uses it (an idle timeout or a resident cap). */
  readonly tracking: boolean;
  readonly timed: boolean;
  /** Activity counter: each touch takes the next value as the slot's `stamp`. */
  seq = 0;
  /** When the manager started (ms since the epoch): slots keep `lastActive` relative to it. */
  readonly epoch = Date.now();
  readonly intensity: { maxRestarts: number; periodMs: number; quarantineMs: number };
  readonly retry: BackoffPolicy;
  readonly partitions: Partition[];
  readonly logger: Logger;
  resident = 0;
  incarnations = 0;
  state: 'open' | 'closing' | 'closed' = 'open';
  /** Settles the manager's `exited` (set by the manager when it makes that promise). */
  resolveExited!: (exit: ChildExit) => void;
  /** Cluster mode: this node's claims on keys (single activation across nodes). */
  node: ClusterNode | undefined;
  /** Cluster mode: calls to agents other nodes run, and this node's answers to theirs. */
  remote: RemoteCalls | undefined;
  /** Cluster mode: per key, the tail of this node's remote calls (one at a time per key, in order). */
  readonly remoteChains = new Map<string, Promise<unknown>>();
  readonly remoteCallTimeoutMs: number;

  constructor(emitter: EventEmitter, opts: ParsedOptions, core: Core) {
    this.name = opts.name;
    this.emitter = emitter;
    this.agent = opts.agent;
    this.agentName = opts.agent.name || 'anonymous';
    const sv = opts.agent.stateVersion ?? 1;
    if (!Number.isInteger(sv) || sv < 0) {
      throw new InvalidConfigError('instance manager options', [{ path: 'agent.stateVersion', message: 'expected a non-negative integer' }]);
    }
    this.stateVersion = sv;
    this.agentOptions = opts.agentOptions;
    this.storage = opts.storage === undefined ? new MemoryStorage() : opts.storage;
    this.idleMs = opts.idleTimeoutMs;
    this.remoteCallTimeoutMs = opts.remoteCallTimeoutMs;
    this.touchOnCall = opts.touchOnCall;
    this.maxResident = opts.maxResident;
    this.timed = Number.isFinite(opts.idleTimeoutMs);
    this.tracking = this.timed || Number.isFinite(opts.maxResident);
    this.intensity = opts.restartIntensity;
    this.retry = resolveBackoff(opts.hibernateRetry);
    this.logger = (opts.logger ?? defaultLogger()).child({ manager: opts.name });
    this.node = undefined;
    this.remote = undefined;
    this.partitions = Array.from({ length: opts.partitions }, (_, i) => new Partition(i, core));
  }
}

/** The storage key of a key's checkpoint. */
export function ckey(m: ManagerState, key: string): CheckpointKey {
  return { manager: m.name, key };
}

/** Emits `agent:<event>` on the manager and its diagnostics channel, with `manager` and `at`. */
export function emit(m: ManagerState, ...args: EmitArgs<AgentEvents, 'agent', 'manager' | 'at'>): void {
  const [event, build] = args;
  publishUnchecked(m.emitter, `agent:${event}`, () => ({ manager: m.name, ...build() }));
}

export const errMessage = (err: unknown): string => (err instanceof Error ? err.message : String(err));

export const noop = (): void => undefined;
