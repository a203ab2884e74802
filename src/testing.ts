/**
 * `threadvisor/testing`: internals for tests and benchmarks. **Not a stable API**: anything here
 * may change or go in any release, minor or patch. Applications should import from `threadvisor`.
 *
 * It holds the pure helpers and data tables behind the documented behaviour (restart backoff and
 * intensity, the instance status table, the failure classification table, credential scrubbing,
 * the instance record), and the outbound queue on its own, so a test can check them directly.
 * The wire protocol between the main thread and the workers is not here: it is private.
 *
 * @packageDocumentation
 */

// Restart backoff and intensity (the supervisor's delay formula, see the README).
export { IntensityWindow, backoffDelay, backoffFloor } from './supervisor/backoff.js';
export type { BackoffPolicy } from './supervisor/backoff.js';

// The instance status table.
export { TRANSITIONS, canTransition, isInstanceStatus, transitionKind } from './instance/state-machine.js';
export type { TransitionKind } from './instance/state-machine.js';

// Failure classification: the tables behind `CLASSIFICATION_TABLE` and `classifyError`.
export {
  DEFAULT_FAILURE_CLASS,
  DEGRADED_CODES,
  FAILURE_CLASSES,
  FATAL_CODES,
  MAX_CAUSE_DEPTH,
  NETWORK_CODES,
  TRANSIENT_CODES,
  errorFacts,
  isFailureClass,
} from './wire/classify.js';
export type { ErrorFacts } from './wire/classify.js';

// The instance record and credential scrubbing.
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
} from './instance/record.js';
export type { Instance, InstanceInput } from './instance/record.js';

// The outbound queue of one instance, without a runtime.
export { OutboundQueue } from './runtime/outbound/queue.js';
export { InstanceServer } from './instance/server.js';
export type { AckResult, OutboundCounters, OutboundQueueOptions, RetryOptions } from './runtime/outbound/types.js';

// Checkpoints: the envelope version and the plain-JSON check of a snapshot.
export { CHECKPOINT_VERSION } from './manager/storage.js';
export { findNonJson } from './manager/json.js';
