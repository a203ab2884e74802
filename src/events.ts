/**
 * The event table: every event threadvisor emits, by the object that emits it, with its payload.
 *
 * Each event is emitted on its object (`rt.on('instance:connected', …)`,
 * `supervisor.on('child_exited', …)`) and published on `node:diagnostics_channel` under
 * {@link channelName} (`threadvisor:<scope>:<event>`); the payload is the same object on both and
 * always has a numeric `at` (ms epoch). The names here are the only ones the library publishes:
 * telemetry's `publish` takes a key of {@link ChannelPayloads}, so an emit site cannot
 * invent one, and its payload is checked against the declared shape.
 *
 * @packageDocumentation
 */
import type { AgentStopReason } from './manager/types.js';
import type { DeliveryFailureReason } from './errors.js';
import type { IdempotencyKey } from './runtime/outbound/idempotency.js';
import type { PressureLevel } from './runtime/outbound/types.js';
import type { ProbeOutcome, ReconnectPhase, RestartClass, RestartKind } from './instance/server.js';
import type { InstanceStatus } from './instance/state-machine.js';
import type { ChildExit, ExitClass } from './supervisor/types.js';
import type { FailureClass } from './wire/classify.js';

// --- names ------------------------------------------------------------------------------------

/** The events an `InstanceServer` emits (as `instance:<event>`); `pressure` comes from the outbound queue. */
const SERVER_EVENTS = [
  'started',
  'connecting',
  'connected',
  'disconnected',
  'error',
  'stopped',
  'restart',
  'reconnect',
  'probe',
  'invalid_transition',
  'quarantined',
] as const;

/**
 * Every instance event, without its `instance:` prefix: the lifecycle events of the instance's
 * status record, and `pressure` (its outbound queue's level changed). On the runtime and on an
 * instance handle they are named `instance:<event>`; on diagnostics_channel
 * `threadvisor:instance:<event>`.
 */
export const INSTANCE_EVENTS = [...SERVER_EVENTS, 'pressure'] as const;

/** An instance event name (without the `instance:` prefix). */
export type InstanceEventName = (typeof INSTANCE_EVENTS)[number];

/** The emitter-side name of an instance event, e.g. `instance:connected`. */
export type InstanceEmitName = `instance:${InstanceEventName}`;

/** An event the instance's status record (`InstanceServer`) emits, without the prefix. */
export type ServerEventName = (typeof SERVER_EVENTS)[number];

const SUPERVISOR_EVENTS = ['child_started', 'child_exited', 'child_restarting', 'child_restarted', 'escalated', 'stopped'] as const;
const WORKER_EVENTS = ['heartbeat', 'heartbeat_missed', 'exit'] as const;
const DELIVERY_EVENTS = ['queued', 'attempt', 'retry', 'delivered', 'gave_up', 'skipped_duplicate', 'requeued'] as const;
const CLUSTER_EVENTS = ['acquired', 'released', 'lost', 'node_up', 'node_down', 'degraded'] as const;
const AGENT_EVENTS = [
  'started',
  'thawed',
  'start_failed',
  'thaw_failed',
  'idle',
  'hibernated',
  'hibernate_failed',
  'stopped',
  'crashed',
  'restarted',
  'quarantined',
] as const;

const prefixed = <P extends string, const N extends readonly string[]>(p: P, names: N): { [I in keyof N]: `${P}:${N[I] & string}` } =>
  names.map((n) => `${p}:${n}`) as { [I in keyof N]: `${P}:${N[I] & string}` };

const instance = prefixed('instance', INSTANCE_EVENTS);
const delivery = prefixed('delivery', DELIVERY_EVENTS);
const cluster = prefixed('cluster', CLUSTER_EVENTS);

/**
 * Every event name, by the object that emits it, as its `on` takes it. `runtime`: a `Runtime`;
 * `instance`: an instance handle (`startInstance`, `whereis`; `instance:pressure` only on the
 * runtime); `supervisor`: a `Supervisor`; `worker`: a `WorkerHost`; `manager`: an
 * `InstanceManager` (the `cluster:*` ones in cluster mode, with the key as `instanceId`);
 * `delivery` and `cluster`: the runtime's `delivery:*` and `cluster:*` subsets.
 */
export const EVENTS = {
  runtime: [...instance, 'message:failed', 'worker:split', ...delivery, ...cluster, 'durable:malformed'],
  instance: prefixed('instance', SERVER_EVENTS),
  supervisor: SUPERVISOR_EVENTS,
  worker: WORKER_EVENTS,
  manager: [...prefixed('agent', AGENT_EVENTS), ...cluster],
  delivery,
  cluster,
} as const;

/** The emitters of {@link EVENTS}. */
export type EventEmitterKind = keyof typeof EVENTS;

/**
 * The diagnostics channel of an event as `emitter`'s `on` names it: `threadvisor:<name>` for the
 * prefixed names, `threadvisor:supervisor:<name>` and `threadvisor:worker:<name>` for a
 * supervisor's and a worker host's.
 */
export function channelName(emitter: EventEmitterKind, name: string): string {
  return emitter === 'supervisor' || emitter === 'worker' ? `threadvisor:${emitter}:${name}` : `threadvisor:${name}`;
}

// --- payloads ---------------------------------------------------------------------------------

/** What every payload has: when it was published (ms epoch). */
export type EventBase = {
  readonly at: number;
};

/** What every instance lifecycle payload has (not `instance:pressure`, which has `instanceId` only). */
export type InstanceEventBase = EventBase & {
  readonly instanceId: string;
  readonly channelType: string;
  readonly name: string;
};

/** A credential-free reason, or null when none was given. */
type Reason = string | null;

/**
 * Payloads of the instance events, on the runtime and on an instance handle. Reasons are
 * credential-free strings.
 */
export interface InstanceEvents {
  /** A start: `fresh` false for the first one, true for each fresh start after a restart (with its `reason`). */
  'instance:started': InstanceEventBase & { readonly fresh: boolean; readonly from: InstanceStatus | null; readonly restartCount: number; readonly reason?: Reason };
  /** The channel is connecting (on a status transition). */
  'instance:connecting': InstanceEventBase & { readonly from: InstanceStatus };
  /** Connected (on a status transition), with the caller's meta merged in (scrubbed; e.g. `attempts`, `elapsedMs` after a reconnect). */
  'instance:connected': InstanceEventBase & { readonly from: InstanceStatus; readonly connectedAt: number; readonly [meta: string]: unknown };
  /** The connection was lost (on a status transition). */
  'instance:disconnected': InstanceEventBase & { readonly from: InstanceStatus; readonly reason: Reason };
  /** Entered `error`, once on entry: a fatal error, or `maxConsecutiveFailures` failures in a row. */
  'instance:error': InstanceEventBase & {
    readonly from: InstanceStatus;
    readonly reason: Reason;
    readonly consecutiveFailures: number;
    readonly trigger: 'fatal' | 'max_consecutive_failures';
    /** For the `fatal` trigger. */
    readonly class?: 'fatal';
  };
  /** Stopped: exactly once per instance, whatever the path. */
  'instance:stopped': InstanceEventBase & { readonly status: InstanceStatus; readonly reason: Reason; readonly restartCount: number; readonly uptimeMs: number };
  /** A restart marker, written just before the worker restarts (or the tree escalates); `kind` says why. */
  'instance:restart': InstanceEventBase & {
    readonly class: RestartClass;
    readonly reason: Reason;
    readonly restartCount: number;
    readonly kind?: RestartKind;
    readonly attempt?: number;
    readonly delayMs?: number;
  };
  /** Progress of the worker's reconnect loop (`phase`). */
  'instance:reconnect': InstanceEventBase & {
    readonly phase: ReconnectPhase;
    readonly attempt: number;
    readonly reason: Reason;
    readonly class: FailureClass;
    readonly delayMs?: number;
  };
  /** A health probe's result (`class` for a non-ok outcome). */
  'instance:probe': InstanceEventBase & { readonly outcome: ProbeOutcome; readonly latencyMs: number; readonly reason: Reason; readonly class?: FailureClass };
  /** A status change the transition table refuses; the status is left alone. */
  'instance:invalid_transition': InstanceEventBase & { readonly from: InstanceStatus; readonly to: InstanceStatus; readonly via: string; readonly reason: Reason };
  /** `quarantined` true: put alone in a worker of its own (its shared worker kept dying); false: released. */
  'instance:quarantined': InstanceEventBase & { readonly quarantined: boolean; readonly reason: Reason };
  /** The outbound queue's pressure level changed (emitted by the queue, forwarded by the runtime). */
  'instance:pressure': EventBase & {
    readonly instanceId: string;
    readonly level: PressureLevel;
    readonly previous: PressureLevel;
    readonly depth: number;
    readonly capacity: number;
  };
}

/** The events of an instance handle (all instance events but `instance:pressure`, which is the runtime's). */
export type InstanceHandleEvents = Omit<InstanceEvents, 'instance:pressure'>;

/** What every delivery payload has. */
type DeliveryBase = EventBase & {
  readonly instanceId: string;
  /** The idempotency key, or the queue's own message number when there is none. */
  readonly messageId: IdempotencyKey;
};

/** Payloads of the `delivery:*` events (on the runtime; built only when someone listens). */
export interface DeliveryEvents {
  /** A send was accepted into the instance's queue. */
  'delivery:queued': DeliveryBase & { readonly attempt: 0; readonly depth: number };
  /** A send is handed to the worker; `queuedMs`: enqueue → this dispatch. */
  'delivery:attempt': DeliveryBase & { readonly seq: number; readonly attempt: number; readonly queuedMs: number };
  /** An attempt (`attempt`) failed recoverably; the next runs after `delayMs` (at least the channel's `retryAfterMs`, when it gave one). */
  'delivery:retry': DeliveryBase & {
    readonly seq: number;
    readonly attempt: number;
    readonly nextAttempt: number;
    readonly delayMs: number;
    readonly retryAfterMs?: number;
    readonly class: FailureClass;
    readonly code: string | undefined;
    readonly reason: string;
    readonly totalMs: number;
  };
  /** Delivered; `queuedMs`: enqueue → first dispatch, `totalMs`: enqueue → receipt. */
  'delivery:delivered': DeliveryBase & { readonly seq: number; readonly attempt: number; readonly queuedMs: number; readonly totalMs: number };
  /** The send failed for good (`reason`: `max_attempts`, `fatal`, `degraded` or `crashed`); `error` is the last failure's message. */
  'delivery:gave_up': DeliveryBase & {
    readonly attempt: number;
    readonly reason: DeliveryFailureReason;
    readonly class: FailureClass;
    readonly code: string | undefined;
    /** The last failure's message. */
    readonly error: string;
    readonly totalMs: number;
  };
  /** A send whose idempotency key is delivered (`state`) or pending was not queued again. */
  'delivery:skipped_duplicate': DeliveryBase & { readonly attempt: 0; readonly state: 'delivered' | 'pending' };
  /** In-flight sends went back to the queue (`crashed`: their worker died). */
  'delivery:requeued': EventBase & { readonly instanceId: string; readonly count: number; readonly reason: string; readonly crashed: boolean };
}

/** Payloads of the `cluster:*` events (on a cluster runtime, and on a cluster `InstanceManager` with the key as `instanceId`). */
export interface ClusterEvents {
  /** This node took an instance's lease (`fencingToken`) and runs it. */
  'cluster:acquired': EventBase & { readonly instanceId: string; readonly nodeId: string; readonly fencingToken: number };
  /** This node gave a lease up: `released` when the instance stops here, `rebalance` to hand it on. */
  'cluster:released': EventBase & { readonly instanceId: string; readonly nodeId: string; readonly reason: 'released' | 'rebalance' };
  /** This node lost a lease (gone at renewal, or `fenced`) and stopped the instance. */
  'cluster:lost': EventBase & { readonly instanceId: string; readonly nodeId: string; readonly reason: string };
  /** Another node joined the cluster. */
  'cluster:node_up': EventBase & { readonly nodeId: string };
  /** A node left the cluster. */
  'cluster:node_down': EventBase & { readonly nodeId: string };
  /** The cluster store cannot be reached (what runs is kept until the lease deadline), or renewal was overdue and the node stopped `fenced` instances. */
  'cluster:degraded': EventBase & { readonly nodeId: string; readonly reason: string; readonly running: number; readonly fenced?: number };
}

/** Payloads of the events a `Runtime` emits. */
export interface RuntimeEvents extends InstanceEvents, DeliveryEvents, ClusterEvents {
  /** `onMessage` threw. */
  'message:failed': EventBase & { readonly instanceId: string; readonly channelType: string; readonly reason: Reason };
  /** A shared worker that kept dying was split; `into`: the instance ids of each half. */
  'worker:split': EventBase & { readonly group: number; readonly deaths: number; readonly into: string[][]; readonly reason: string };
  /** Durable sends: a stream entry that is not a threadvisor send was settled as `invalid_message`. */
  'durable:malformed': EventBase & { readonly instanceId: string; readonly entryId: string };
}

/** What every supervisor payload has. */
type SupervisorBase = EventBase & {
  /** The supervisor's name. */
  readonly supervisor: string;
};

/** Payloads of the events a `Supervisor` emits. */
export interface SupervisorEvents {
  /** A child started (`attempt`: 0, then its restart count). */
  child_started: SupervisorBase & { readonly childId: string; readonly attempt: number };
  /** A child ended (`code` for worker children; none for a worker doomed by an uncaught exception, reported before its thread is gone). */
  child_exited: SupervisorBase & { readonly childId: string; readonly class: ExitClass; readonly reason: string; readonly code: number | undefined };
  /** A restart is scheduled; `attempt` is the 0-based backoff attempt, `children` every id the strategy restarts. */
  child_restarting: SupervisorBase & {
    readonly childId: string;
    readonly attempt: number;
    readonly delayMs: number;
    readonly children: string[];
    readonly class: ExitClass;
    readonly reason: string;
    readonly code: number | undefined;
  };
  /** It runs again; `cause` is the child whose death triggered it (`attempt` only for that one). */
  child_restarted: SupervisorBase & {
    readonly childId: string;
    readonly attempt: number | undefined;
    readonly restarts: number;
    readonly delayMs: number;
    readonly cause: string;
    readonly class: ExitClass;
    readonly reason: string;
  };
  /** More than `maxRestarts` restarts within `periodMs`: every child was stopped and the supervisor ends with `escalated`. */
  escalated: SupervisorBase & {
    readonly childId: string;
    readonly class: ExitClass;
    readonly reason: string;
    readonly maxRestarts: number;
    readonly periodMs: number;
  };
  /** The supervisor stopped (`shutdown`). */
  stopped: SupervisorBase;
}

/** Payload of the `heartbeat` event (and of `threadvisor:worker:heartbeat`). */
export interface HeartbeatEvent {
  readonly childId: string;
  readonly threadId: number;
  readonly seq: number;
  readonly elu: number;
  readonly heapUsed: number;
  /** Round trip of the ping in milliseconds. */
  readonly rttMs: number;
  readonly at: number;
}

/** Payload of the `heartbeat_missed` event (and of `threadvisor:worker:heartbeat_missed`). */
export interface HeartbeatMissedEvent {
  readonly childId: string;
  readonly threadId: number;
  readonly seq: number;
  /** Consecutive misses so far. */
  readonly missed: number;
  readonly maxMissed: number;
  readonly at: number;
}

/**
 * Payload of the `exit` event (and of `threadvisor:worker:exit`). When the start context has a
 * `redact` (a supervised child), `exit.error` is a scrubbed copy of the worker's error (name,
 * message, stack, code), never the raw one.
 */
export interface WorkerExitEvent {
  readonly childId: string;
  readonly threadId: number;
  readonly exit: ChildExit;
  readonly at: number;
}

/** Payloads of the events a `WorkerHost` emits. */
export interface WorkerEvents {
  /** Every pong of the worker. */
  heartbeat: HeartbeatEvent;
  /** A heartbeat tick found the previous ping unanswered. */
  heartbeat_missed: HeartbeatMissedEvent;
  /** The worker ended (the same record as `exited`). */
  exit: WorkerExitEvent;
}

/** What every agent payload has. */
export type AgentEventBase = EventBase & {
  /** The manager's name. */
  readonly manager: string;
  readonly key: string;
  /** The start this is about: the manager numbers every start of any key, 1, 2, … */
  readonly incarnation: number;
};

/** An `agent:*` event name without its prefix. */
export type AgentEventName = (typeof AGENT_EVENTS)[number];

/** Payloads of the `agent:*` events an `InstanceManager` emits. */
export interface AgentEvents {
  /** An agent started (`thawed`: from its checkpoint at `revision`). */
  'agent:started': AgentEventBase & { readonly thawed: boolean; readonly revision: number };
  /** An agent was thawed from its checkpoint at `revision`. */
  'agent:thawed': AgentEventBase & { readonly revision: number };
  /** An agent's start threw; nothing runs for the key. */
  'agent:start_failed': AgentEventBase & { readonly error: unknown; readonly reason: string };
  /** Its checkpoint could not be read; nothing was started or overwritten. */
  'agent:thaw_failed': AgentEventBase & { readonly error: unknown; readonly reason: string };
  /** An agent was idle for `idleMs` (no lease, no activity) and is hibernated. */
  'agent:idle': AgentEventBase & { readonly idleMs: number };
  /** Its state was saved (`revision`) before it stops (`reason`). */
  'agent:hibernated': AgentEventBase & { readonly reason: AgentStopReason; readonly revision: number };
  /** The save failed; the agent stays resident and the save is retried. */
  'agent:hibernate_failed': AgentEventBase & { readonly reason: AgentStopReason | 'checkpoint'; readonly attempt: number; readonly error: unknown };
  /** An agent stopped (`persisted`: its state was saved first). */
  'agent:stopped': AgentEventBase & { readonly reason: AgentStopReason; readonly persisted: boolean };
  /** `handle` threw: the agent crashed (`quarantined`: more than `maxRestarts` within `periodMs`). */
  'agent:crashed': AgentEventBase & { readonly error: unknown; readonly restarts: number; readonly quarantined: boolean };
  /** A crashed agent runs again from its last checkpoint. */
  'agent:restarted': AgentEventBase & { readonly restarts: number; readonly revision: number };
  /** The key is quarantined until `until` (ms epoch) after too many crashes. */
  'agent:quarantined': AgentEventBase & { readonly until: number; readonly maxRestarts: number; readonly periodMs: number; readonly error: unknown };
}

/** Payloads of the events an `InstanceManager` emits. */
export interface ManagerEvents extends AgentEvents, ClusterEvents {}

type Scoped<S extends string, M> = { [K in keyof M & string as `${S}:${K}`]: M[K] };

/**
 * Every payload by its diagnostics channel name without the `threadvisor:` prefix (what
 * telemetry's `publish` takes).
 */
export type ChannelPayloads = RuntimeEvents & AgentEvents & Scoped<'supervisor', SupervisorEvents> & Scoped<'worker', WorkerEvents>;

/** A diagnostics channel name without its `threadvisor:` prefix. */
export type ChannelKey = keyof ChannelPayloads;

/**
 * The arguments of an emitter's own typed `emit` helper: `[event, build]` with the event without
 * its prefix `P` and the payload without the fields `Strip` the helper adds.
 */
export type EmitArgs<M, P extends string, Strip extends PropertyKey> = {
  [K in keyof M & string]: K extends `${P}:${infer E}` ? [event: E, build: () => Omit<M[K], Strip>] : never;
}[keyof M & string];

/** EventEmitter's own events (`newListener`, `removeListener`), still accepted by the typed `on`. */
export type EmitterEvent = 'newListener' | 'removeListener';

/** A listener of {@link EmitterEvent}: the event name and the listener added or removed. */
export type EmitterListener = (event: string | symbol, listener: (...args: never[]) => unknown) => void;
