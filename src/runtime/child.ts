/**
 * The types of {@link Runtime.childSpec}: a `Runtime` as the child of a `Supervisor`.
 *
 * @packageDocumentation
 */
import type { RestartType, RunningChild, Shutdown } from '../supervisor/types.js';
import type { Runtime, StartInstanceOptions } from './runtime.js';

/** Child-spec settings of {@link Runtime.childSpec}. */
export interface RuntimeChildOptions {
  /** Child id. Default `'runtime'`. */
  id?: string;
  /**
   * Default `transient`: a runtime ends on its own only when something calls `rt.stop()`, and
   * that is final. A restarted runtime starts empty but for {@link RuntimeChildOptions.instances}.
   */
  restart?: RestartType;
  /**
   * Budget of the graceful stop (`rt.stop()`: each instance delivers what is queued and
   * disconnects, within the runtime's `shutdownMs`). When it expires, every instance's worker is
   * terminated at once. `'brutal_kill'` terminates them at once; `'infinity'` waits. Default 30 000 ms.
   */
  shutdown?: Shutdown;
  /**
   * Instances the child starts with its runtime, in order, on every start (restarts included),
   * each as `rt.startInstance(options)`. One that fails to start stops the runtime and fails the
   * child's start.
   */
  instances?: readonly StartInstanceOptions[];
}

/**
 * The running child of {@link Runtime.childSpec}: the runtime, adapted to a supervisor. Its exit
 * is `shutdown` when the supervisor stopped it, and `normal` (reason `runtime stopped`) when
 * something else called `rt.stop()`.
 */
export interface RuntimeChild extends RunningChild {
  /** The runtime this child runs. */
  readonly runtime: Runtime;
}
