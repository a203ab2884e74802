/**
 * Public surface of the instance lifecycle core (record, status machine, classification,
 * `InstanceServer`).
 *
 * @packageDocumentation
 */
export {
  INSTANCE_STATUSES,
  TRANSITIONS,
  canTransition,
  isInstanceStatus,
  transitionKind,
} from './state-machine.js';
export type { InstanceStatus, TransitionKind } from './state-machine.js';
export {
  MAX_REASON_LENGTH,
  MIN_SECRET_LENGTH,
  REDACTED,
  collectSecrets,
  instanceSchema,
  instanceStatusSchema,
  parseInstance,
  redactInstance,
  renderReason,
  scrubSecrets,
  scrubValue,
  scrubWith,
} from './record.js';
export type { Instance, InstanceInput, RedactedInstance } from './record.js';
export {
  CLASSIFICATION_TABLE,
  DEFAULT_FAILURE_CLASS,
  DEGRADED_CODES,
  FAILURE_CLASSES,
  FATAL_CODES,
  MAX_CAUSE_DEPTH,
  NETWORK_CODES,
  TRANSIENT_CODES,
  classifyError,
  errorFacts,
  explainClassification,
  isFailureClass,
} from '../wire/classify.js';
export type { Classification, ClassificationRow, ClassifyHook, ErrorFacts, FailureClass } from '../wire/classify.js';
export { INSTANCE_EVENTS, InstanceServer } from './server.js';
export type {
  HealthExtra,
  HealthSnapshot,
  InstanceEmitName,
  InstanceEventName,
  InstanceServerOptions,
  InstanceStatusInfo,
  ProbeOutcome,
  ProbeRecord,
  ReconnectPhase,
  RestartClass,
  RestartDetails,
  RestartKind,
  WorkerHealth as InstanceWorkerHealth,
  WorkerState as InstanceWorkerState,
} from './server.js';
