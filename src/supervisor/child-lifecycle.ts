/**
 * The start and stop of one child of a supervisor: calling its `start` and checking what it
 * resolved with, recording a start failure, publishing its end, stopping it within its shutdown
 * budget, and stopping (or killing) every child.
 *
 * @packageDocumentation
 */
import { StartFailureError, StoppedError } from '../errors.js';
import { publish } from '../telemetry.js';
import { describeNonChild, isRunningChild } from './child-spec.js';
import { removeEntry, type Entry, type SupervisorCore } from './supervisor-core.js';
import { isNormalExit, type ChildExit, type RunningChild, type Shutdown } from './types.js';

/**
 * Starts one entry; on failure it is left `terminated` and the error thrown. Resolves
 * `undefined` if the child ignored its start (it is left `terminated`, a temporary one removed).
 */
export async function startEntry(core: SupervisorCore, entry: Entry, attempt: number): Promise<RunningChild | undefined> {
  entry.status = 'starting';
  // The run is measured from the start attempt: a start that fails never counts as stable.
  entry.startedAt = Date.now();
  const { id } = entry.spec;
  let result: unknown;
  try {
    result = await entry.spec.start({
      supervisor: core.name,
      childId: id,
      attempt,
      logger: core.logger.child({ childId: id }),
      redact: core.redact,
    });
  } catch (err) {
    const reason = core.redact(err instanceof Error ? err.message : String(err));
    startFailed(core, entry, reason, err);
    throw err instanceof StartFailureError ? err : new StartFailureError(id, reason, { cause: err });
  }
  // Anything but a RunningChild or undefined (ignore) fails like a start() that throws.
  if (result !== undefined && !isRunningChild(result)) {
    const reason = core.redact(`start() resolved with ${describeNonChild(result)}, not a RunningChild`);
    const err = new StartFailureError(id, reason);
    startFailed(core, entry, reason, err);
    throw err;
  }
  const child = result;
  if (core.state !== 'running' || !core.entries.includes(entry)) {
    // Stopped (or deleted) while it was starting: do not keep it.
    if (child) await child.shutdown(entry.spec.shutdown);
    entry.status = 'terminated';
    throw new StoppedError(`supervisor ${core.name}`);
  }
  if (!child) {
    // OTP `ignore`: nothing runs and nothing is restarted; the spec stays for restartChild.
    entry.status = 'terminated';
    if (entry.spec.restart === 'temporary') removeEntry(core, entry);
    core.logger.info({ childId: id, attempt }, 'child ignored its start');
    return undefined;
  }
  entry.running = child;
  entry.status = 'running';
  publish(core.events, 'supervisor:child_started', () => ({ supervisor: core.name, childId: id, attempt }), 'child_started');
  // A child that tells its end early (see RunningChild.doomed) is restarted before it is gone.
  void (child.doomed ?? child.exited).then((exit) => core.onExit(entry, child, exit));
  return child;
}

/** Leaves a child that failed to start `terminated`, with a `start_failure` as its last exit. */
function startFailed(core: SupervisorCore, entry: Entry, reason: string, err: unknown): void {
  entry.status = 'terminated';
  entry.lastExit = { class: 'start_failure', reason, ...(err instanceof Error ? { error: err } : {}) };
  core.logger.warn({ childId: entry.spec.id, reason }, 'child failed to start');
}

/** Logs a child's end and publishes `child_exited` (reason redacted). */
export function emitExit(core: SupervisorCore, entry: Entry, exit: ChildExit): void {
  const log = isNormalExit(exit) ? 'debug' : 'warn';
  const reason = core.redact(exit.reason);
  core.logger[log]({ childId: entry.spec.id, class: exit.class, reason, code: exit.code }, 'child exited');
  publish(core.events, 'supervisor:child_exited', () => ({
    supervisor: core.name,
    childId: entry.spec.id,
    class: exit.class,
    reason,
    code: exit.code,
  }), 'child_exited');
}

/** Stops one child within `budget` (default: its spec's) and records and publishes its end. */
export async function terminate(core: SupervisorCore, entry: Entry, budget?: Shutdown): Promise<void> {
  const child = entry.running;
  entry.status = 'terminated';
  if (!child) return;
  entry.running = undefined; // its exit is now expected, not a death
  core.terminating.add(child);
  const exit = await child.shutdown(budget ?? entry.spec.shutdown).finally(() => core.terminating.delete(child));
  entry.lastExit = exit;
  emitExit(core, entry, exit);
}

/**
 * Stops every child in reverse start order, one after the other, then waits until every child
 * handled as dead at its `doomed` is gone too.
 */
export async function terminateAll(core: SupervisorCore, budget?: Shutdown): Promise<void> {
  for (const e of [...core.entries].reverse()) await terminate(core, e, budget);
  // A brutal kill hurries them too; any other budget waits for their own end.
  await Promise.all([...core.dying].map((c) => (budget === 'brutal_kill' ? c.shutdown('brutal_kill') : c.exited)));
}

/** Kills at once, concurrently, every child still up or still shutting down. */
export async function killAll(core: SupervisorCore): Promise<void> {
  // Budget expired: whatever is still up is killed at once, concurrently.
  const inProgress = [...core.terminating, ...core.dying].map((c) => c.shutdown('brutal_kill'));
  const live = core.entries.filter((e) => e.running);
  await Promise.all([...inProgress, ...live.map((e) => terminate(core, e, 'brutal_kill'))]);
}
