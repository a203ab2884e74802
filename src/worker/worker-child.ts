/**
 * {@link workerChild}: a supervisor child spec whose child is a {@link WorkerHost}.
 *
 * @packageDocumentation
 */
import { InvalidConfigError } from '../errors.js';
import type { ChildSpec, RestartType, Shutdown, StartContext } from '../supervisor/types.js';
import type { AnyMethod, WorkerHostOptions } from './host-types.js';
import { DEFAULT_WORKER_SHUTDOWN, WorkerHost } from './host.js';
import { flattenIssues, shutdownSchema, workerHostOptionsSchema } from './schemas.js';

/** Per-child settings of {@link workerChild}. */
export interface WorkerChildOptions {
  /** Restart type (default `permanent`). */
  restart?: RestartType;
  /** Shutdown budget (default 5000 ms). */
  shutdown?: Shutdown;
}

/**
 * A child spec whose child is a {@link WorkerHost}. `options` may be a function of the start
 * context, e.g. to build fresh transferables or per-attempt `workerData` on every restart. Static
 * options are validated now, so a bad spec fails where it is written.
 *
 * @throws {@link InvalidConfigError} on a bad id, options or shutdown budget.
 */
export function workerChild<API extends object = Record<string, AnyMethod>>(
  id: string,
  options: WorkerHostOptions | ((ctx: StartContext) => WorkerHostOptions),
  childOptions: WorkerChildOptions = {},
): ChildSpec {
  const issues = [];
  if (typeof id !== 'string' || id.length === 0) issues.push({ path: 'id', message: 'expected a non-empty string' });
  if (typeof options !== 'function') {
    const result = workerHostOptionsSchema.safeParse(options);
    if (!result.success) issues.push(...flattenIssues(result.error.issues, 'options'));
  }
  const restart = childOptions.restart ?? 'permanent';
  if (!['permanent', 'transient', 'temporary'].includes(restart)) {
    issues.push({ path: 'restart', message: "expected 'permanent', 'transient' or 'temporary'" });
  }
  const shutdown = childOptions.shutdown ?? DEFAULT_WORKER_SHUTDOWN;
  const budget = shutdownSchema.safeParse(shutdown);
  if (!budget.success) issues.push(...flattenIssues(budget.error.issues, 'shutdown'));
  if (issues.length > 0) throw new InvalidConfigError(`worker child ${String(id)}`, issues);
  return {
    id,
    type: 'worker',
    restart,
    shutdown,
    start: (ctx) => WorkerHost.start<API>(typeof options === 'function' ? options(ctx) : options, ctx),
  };
}
