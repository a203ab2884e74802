/**
 * One instance's record in the runtime (`Entry`), the public health and counter types built from
 * it, and the helpers every part of the runtime shares about an instance's worker exits.
 */
import type { MessagePort, ResourceLimits } from 'node:worker_threads';
import type { Logger } from 'pino';
import type { ThreadvisorError } from '../errors.js';
import type { HealthSnapshot, InstanceServer, WorkerHealth } from '../instance/server.js';
import { InstanceHandle } from '../instance/handle.js';
import { IntensityWindow } from '../supervisor/backoff.js';
import type { ChildExit } from '../supervisor/types.js';
import type { WorkerHost } from '../worker/host.js';
import { ColumnEncoder } from '../wire/columns.js';
import type { InstanceWorkerApi } from '../wire/protocol.js';
import type { Phase } from './lifecycle.js';
import type { OutboundQueue } from './outbound/queue.js';
import type { OutboundStats, PressureLevel } from './outbound/types.js';
import type { Resolved } from './options.js';
import type { WorkerGroup } from './worker-group.js';

/** Runtime-level counters, from {@link Runtime.stats}. */
export interface RuntimeStats {
  readonly instances: number;
  /** Notices from workers that failed their schema (logged, counted, dropped). */
  readonly malformedMessages: number;
  /** Inbound messages delivered to `onMessage`. */
  readonly inboundDelivered: number;
  /** `onMessage` calls that threw or rejected. */
  readonly handlerErrors: number;
}

export interface Entry {
  /** The instance's number on the wire (`i` on every data-port message about it). */
  readonly iid: number;
  readonly id: string;
  readonly server: InstanceServer;
  /** Credential values, for scrubbing what the worker sends back (log objects). */
  readonly secrets: readonly string[];
  /** Scrubs every form of the credential values out of text (no truncation); given to the queue. */
  readonly redact: (text: string) => string;
  /**
   * The raw credentials, for the worker's boot only. Kept here, in the runtime's private entry,
   * and nowhere in the `InstanceServer` handed to users; never put them in any output.
   */
  readonly credentials: Readonly<Record<string, unknown>>;
  /** Serialises this instance's start, stop, restart and fatal stop (instances never wait on each other). */
  ops: Promise<unknown>;
  readonly channel: string;
  readonly resourceLimits: ResourceLimits | undefined;
  readonly restart: Resolved['restart'];
  readonly log: Logger;
  /** A worker of its own (asked for, or its own `resourceLimits`). */
  readonly dedicated: boolean;
  /** Put alone by a split of a shared worker that kept dying; stays alone until released. */
  quarantined: boolean;
  /** The worker group hosting it, while it runs. */
  group: WorkerGroup<Entry> | undefined;
  /** The worker hosting it now. */
  host: WorkerHost<InstanceWorkerApi> | undefined;
  recoverTimer: NodeJS.Timeout | undefined;
  /** Its own restarts in a shared worker (the worker's deaths are the group's), for its restart intensity. */
  readonly intensity: IntensityWindow;
  /** The backoff pause before such a restart; `stopInstance` cuts it short. */
  pause: { timer: NodeJS.Timeout; done: () => void } | undefined;
  inbound: Promise<void>;
  /** The outbound queue: authoritative, survives worker restarts (replaced only after a fatal error closed it). */
  queue: OutboundQueue;
  /** The current worker's data port, once it can take sends. */
  dataPort: MessagePort | undefined;
  /** Column encoding of the send batches posted to the current worker. */
  columns: ColumnEncoder;
  readonly capacity: number;
  /** The last inbound cursor whose batch `onMessage` finished; handed to the next worker. */
  cursor: unknown;
  /** Cluster mode: the fencing token of this node's lease (given to the channel as `ctx.fencingToken`). */
  readonly fencingToken: number | undefined;
  /** Why the instance is in error after a fatal failure (sends reject with it). */
  failure: ThreadvisorError | undefined;
  /** The settings as given (the server's copy has credential values scrubbed out). */
  readonly settings: Record<string, unknown>;
  /** `startInstance` is still starting it: a channel that cannot load fails the call, not the instance. */
  firstStart: boolean;
  /** The read-only view handed out by `startInstance` and `whereis`. */
  handle: InstanceHandle;
}

/** A health snapshot with the data plane's figures. */
export type InstanceHealth = HealthSnapshot & {
  /** Sends handed to the worker and not yet acknowledged. */
  readonly inFlight: number;
  /** Queue pressure level: `normal`, `warn` (≥ 70% full), `degraded` (≥ 85%), `shed` (≥ 95%). */
  readonly pressure: PressureLevel;
  /** The outbound queue's counters. */
  readonly delivery: OutboundStats;
  /** Cluster mode: the fencing token of this node's lease on the instance; null otherwise. */
  readonly fencingToken: number | null;
};

/** Why the runtime ends a worker whose instance spent its reconnect attempts (the restart's kind too). */
export const RECONNECT_EXHAUSTED = 'reconnect_exhausted';

/** How a worker's exit is named in restart kinds and reasons. */
export function exitKind(exit: Pick<ChildExit, 'class' | 'reason'>): string {
  return exit.class === 'exit' && exit.reason === RECONNECT_EXHAUSTED ? RECONNECT_EXHAUSTED : exit.class;
}

/**
 * The health snapshot of an instance, worker liveness and the data plane's figures included;
 * `phase` is the instance's lifecycle phase (from `InstanceLifecycle.phase`).
 */
export function instanceHealth(e: Entry, phase: Phase): InstanceHealth {
  const h = e.host?.health();
  let state: WorkerHealth['state'] = 'down';
  if (h?.state === 'up') state = 'up';
  else if (phase === 'running' || phase === 'restarting') state = 'restarting';
  const worker: WorkerHealth = {
    state,
    lastHeartbeatAgeMs: h?.state === 'up' ? h.lastPongAgeMs : null,
    elu: h?.elu ?? null,
    heapUsed: h?.heapUsed ?? null,
    threadId: h?.threadId ?? null,
    instances: e.group?.size ?? 0,
  };
  const delivery = e.queue.stats();
  return { ...e.server.healthSnapshot({ worker }), inFlight: delivery.inFlight, pressure: delivery.pressure, delivery, fencingToken: e.fencingToken ?? null };
}

/** What a new entry is made of; everything else starts empty (no worker, no group). */
export type EntryParts = Pick<
  Entry,
  'id' | 'iid' | 'server' | 'secrets' | 'redact' | 'credentials' | 'channel' | 'resourceLimits' | 'restart' | 'log' | 'dedicated' | 'capacity' | 'cursor' | 'fencingToken' | 'settings' | 'queue'
>;

/** A new instance record, and its read-only handle (`phaseOf`: the lifecycle's phase of an instance). */
export function newEntry(parts: EntryParts, phaseOf: (e: Entry) => Phase): Entry {
  const entry: Entry = {
    ...parts,
    ops: Promise.resolve(),
    quarantined: false,
    group: undefined,
    host: undefined,
    recoverTimer: undefined,
    intensity: new IntensityWindow(parts.restart.maxRestarts, parts.restart.periodMs),
    pause: undefined,
    inbound: Promise.resolve(),
    failure: undefined,
    dataPort: undefined,
    columns: new ColumnEncoder(),
    firstStart: true,
    handle: undefined as unknown as InstanceHandle,
  };
  entry.handle = new InstanceHandle(parts.server, () => instanceHealth(entry, phaseOf(entry)));
  return entry;
}
