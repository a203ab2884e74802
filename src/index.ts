/**
 * threadvisor: Erlang/OTP-style supervision of long-lived work on Node.js worker threads.
 *
 * @packageDocumentation
 */
export * from './errors.js';
export { Supervisor } from './supervisor/supervisor.js';
export type {
  ChildCounts,
  ChildInfo,
  ChildStatus,
  Strategy,
  SupervisorOptions,
  SupervisorState,
} from './supervisor/supervisor.js';
export { backoffDelay, backoffFloor, seededRandom, IntensityWindow } from './supervisor/backoff.js';
export type { BackoffOptions, BackoffPolicy } from './supervisor/backoff.js';
export { isNormalExit } from './supervisor/types.js';
export type {
  ChildExit,
  ChildSpec,
  ChildType,
  ExitClass,
  RestartType,
  RunningChild,
  Shutdown,
  StartContext,
} from './supervisor/types.js';
export { eventChannel, defaultLogger, REDACT_PATHS } from './telemetry.js';
export type { EventPayload } from './telemetry.js';
export { WorkerHost, workerChild } from './worker/host.js';
export type {
  HeartbeatOptions,
  WorkerChildOptions,
  WorkerHealth,
  WorkerHostOptions,
  WorkerHostStats,
  WorkerState,
} from './worker/host.js';
export * from './instance/index.js';
export { Runtime, BUILTIN_CHANNELS } from './runtime/runtime.js';
export type { InstanceHealth, OnMessage, RestartPolicy, RuntimeOptions, RuntimeStats, StartInstanceOptions } from './runtime/runtime.js';
export { OutboundQueue, PRESSURE_LEVELS } from './runtime/outbound.js';
export type { AckResult, EnqueueManyOptions, EnqueueOptions, SendOutcome, IdempotencyKey, OutboundCounters, OutboundStats, PressureLevel, RetryOptions } from './runtime/outbound.js';
export { noticeSchema } from './runtime/protocol.js';
export type { InstanceBoot, InstanceWorkerApi, Notice, ReconnectPolicy, CallbackTimeouts } from './wire/protocol.js';
export { defineChannel, checkChannelDefinition } from './channel.js';
export type {
  ChannelContext,
  ChannelDefinition,
  ChannelInstance,
  ChannelLogger,
  ProbeOutcome as ChannelProbeOutcome,
  ProbeResult,
} from './channel.js';
export * from './manager/index.js';
export type { LoopbackSettings } from '../workers/channels/loopback.js';
