/**
 * threadvisor: Erlang/OTP-style supervision of long-lived work on Node.js worker threads.
 *
 * The main entry holds what the README documents: the supervisor and worker children, the
 * instance `Runtime`, the channel contract, `InstanceManager` and its storages, the error classes,
 * and the types a channel author or a consumer of events needs. Internals some tests need (pure
 * helpers, tables, the outbound queue) are in `threadvisor/testing`, which is not a stable API.
 *
 * @packageDocumentation
 */
export * from './errors.js';

// --- supervision -----------------------------------------------------------------------------
export { Supervisor } from './supervisor/supervisor.js';
export type { ChildCounts, ChildInfo, ChildStatus, Strategy, SupervisorOptions, SupervisorState } from './supervisor/supervisor.js';
export { seededRandom } from './supervisor/backoff.js';
export type { BackoffOptions } from './supervisor/backoff.js';
export { isNormalExit } from './supervisor/types.js';
export type { ChildExit, ChildSpec, ChildType, ExitClass, RestartType, RunningChild, Shutdown, StartContext } from './supervisor/types.js';
export { WorkerHost, workerChild } from './worker/host.js';
export type {
  HeartbeatEvent,
  HeartbeatMissedEvent,
  HeartbeatOptions,
  WorkerChildOptions,
  WorkerExitEvent,
  WorkerHealth,
  WorkerHostOptions,
  WorkerHostStats,
  WorkerState,
} from './worker/host.js';

// --- telemetry -------------------------------------------------------------------------------
export { eventChannel, defaultLogger, REDACT_PATHS } from './telemetry.js';
export type { EventPayload } from './telemetry.js';

// --- instances: the runtime ------------------------------------------------------------------
export { Runtime, BUILTIN_CHANNELS } from './runtime/runtime.js';
export type {
  InstanceHealth,
  OnMessage,
  PlacementOptions,
  RestartPolicy,
  StandbyOptions,
  RuntimeMode,
  RuntimeOptions,
  StartedInstance,
  RuntimeStats,
  SendOptions,
  StartInstanceOptions,
  StartWaitOptions,
  WhenStatusOptions,
} from './runtime/runtime.js';
export type { RuntimeChild, RuntimeChildOptions } from './runtime/child.js';
export type { StandbyStats } from './runtime/standby.js';
export type { AcceptedSend, ClusterDeclaration, ClusterOptions, ClusterSpecView, ClusterView } from './cluster/options.js';
export type { IdempotencyKey } from './runtime/outbound/idempotency.js';
export { PRESSURE_LEVELS } from './runtime/outbound/types.js';
export type { EnqueueManyOptions, EnqueueOptions, OutboundStats, PressureLevel, SendOutcome } from './runtime/outbound/types.js';
export { INSTANCE_STATUSES } from './instance/state-machine.js';
export type { InstanceStatus } from './instance/state-machine.js';
export type { RedactedInstance } from './instance/record.js';
export { EVENTS, INSTANCE_EVENTS } from './events.js';
export type {
  AgentEventBase,
  AgentEvents,
  ClusterEvents,
  DeliveryEvents,
  EmitterEvent,
  EmitterListener,
  EventBase,
  EventEmitterKind,
  InstanceEventBase,
  InstanceEvents,
  InstanceHandleEvents,
  ManagerEvents,
  RuntimeEvents,
  SupervisorEvents,
  WorkerEvents,
} from './events.js';
export type { InstanceHandle, InstanceListener } from './instance/handle.js';
export type {
  HealthSnapshot,
  InstanceEmitName,
  InstanceEventName,
  InstanceStatusInfo,
  ProbeRecord,
  ReconnectPhase,
  RestartClass,
  RestartKind,
  WorkerHealth as InstanceWorkerHealth,
  WorkerState as InstanceWorkerState,
} from './instance/server.js';

// --- the channel contract --------------------------------------------------------------------
export { defineChannel, checkChannelDefinition } from './channel.js';
export type {
  ChannelContext,
  ChannelDefinition,
  ChannelFactory,
  ChannelHandlers,
  ChannelInstance,
  ChannelLogger,
  Cursor,
  DefinitionIssue,
  PollResult,
  ProbeOutcome as ChannelProbeOutcome,
  ProbeOutcome,
  ProbeResult,
  SendInfo,
  SettingsSchema,
} from './channel.js';
export { CLASSIFICATION_TABLE, classifyError, explainClassification } from './wire/classify.js';
export type { Classification, ClassificationRow, ClassifyHook, FailureClass } from './wire/classify.js';
export type { LoopbackSettings } from '../workers/channels/loopback.js';

// --- keyed agents ----------------------------------------------------------------------------
export * from './manager/index.js';
