/**
 * What a supervisor does when a child dies: whether to restart it (its restart type), whether
 * the restart intensity is exceeded (escalation), which children go down and come back with it
 * (the strategy), after which backoff delay, and the restart of that group in start order.
 *
 * @packageDocumentation
 */
import { backoffDelay } from './backoff.js';
import { emitExit, startEntry, terminate, terminateAll } from './child-lifecycle.js';
import { clearTimers, removeEntry, serial, type Entry, type SupervisorCore } from './supervisor-core.js';
import { publish } from '../telemetry.js';
import { isNormalExit, type ChildExit, type RunningChild } from './types.js';

/**
 * A running child's `doomed` (else its `exited`) resolved. Ignored when the supervisor stopped the
 * child on purpose; otherwise the end is recorded and published and, while running, the restart
 * decision is queued. A doomed child still ending is kept among the dying until its `exited`.
 */
export function onChildExit(core: SupervisorCore, entry: Entry, child: RunningChild, exit: ChildExit): void {
  if (entry.running !== child) return; // the supervisor stopped it on purpose
  entry.running = undefined;
  if (child.doomed) {
    core.dying.add(child);
    void child.exited.then(() => core.dying.delete(child));
  }
  entry.status = 'terminated';
  entry.lastExit = exit;
  emitExit(core, entry, exit);
  if (core.state !== 'running') return;
  void serial(core, () => handleDeath(core, entry, exit)).catch((err: unknown) => {
    core.logger.error({ err }, 'restart handling failed');
  });
}

/**
 * Decides a dead child's restart: none (its restart type), escalation (intensity exceeded), or
 * its group by strategy stopped in reverse order, marked `restarting`, and restarted after the
 * backoff delay.
 */
async function handleDeath(core: SupervisorCore, entry: Entry, exit: ChildExit): Promise<void> {
  if (core.state !== 'running' || !core.entries.includes(entry) || entry.running) return;
  const restart =
    entry.spec.restart === 'permanent' || (entry.spec.restart === 'transient' && !isNormalExit(exit));
  if (!restart) {
    if (entry.spec.restart === 'temporary') removeEntry(core, entry);
    return;
  }
  if (core.intensity.record()) {
    await escalate(core, entry, exit);
    return;
  }
  // Which children go down with it, and come back up, by strategy.
  const i = core.entries.indexOf(entry);
  const group =
    core.strategy === 'one_for_one' ? [entry] : core.strategy === 'one_for_all' ? [...core.entries] : core.entries.slice(i);
  for (const sibling of [...group].reverse()) {
    if (sibling === entry) continue;
    await terminate(core, sibling);
    if (sibling.spec.restart === 'temporary') {
      removeEntry(core, sibling);
      group.splice(group.indexOf(sibling), 1);
    }
  }
  // stop() may have run while the siblings were stopping: then nothing is restarted.
  if (core.state !== 'running') return;
  if (Date.now() - entry.startedAt >= core.backoffResetMs) entry.attempt = 0;
  const attempt = entry.attempt;
  const delayMs = backoffDelay(core.backoff, attempt);
  entry.attempt += 1;
  for (const e of group) e.status = 'restarting';
  core.logger.info({ childId: entry.spec.id, attempt, delayMs, class: exit.class }, 'restarting child');
  publish(core.events, 'supervisor:child_restarting', () => ({
    supervisor: core.name,
    childId: entry.spec.id,
    attempt,
    delayMs,
    children: group.map((e) => e.spec.id),
    class: exit.class,
    reason: core.redact(exit.reason),
    code: exit.code,
  }), 'child_restarting');
  const restartNow = (): void => {
    core.timers.delete(cancel);
    void serial(core, () => restartGroup(core, group, entry, attempt, delayMs, exit)).catch((err: unknown) => {
      core.logger.error({ err }, 'restart failed');
    });
  };
  // No delay: the next turn of the event loop, not a timer (a 0 ms timer waits a millisecond or more).
  let cancel: () => void;
  if (delayMs > 0) {
    const timer = setTimeout(restartNow, delayMs);
    cancel = () => clearTimeout(timer);
  } else {
    const immediate = setImmediate(restartNow);
    cancel = () => clearImmediate(immediate);
  }
  core.timers.add(cancel);
}

/** Restarts a group in start order; a failed restart counts as another death of that child. */
async function restartGroup(core: SupervisorCore, group: Entry[], cause: Entry, attempt: number, delayMs: number, exit: ChildExit): Promise<void> {
  for (const e of group) {
    if (core.state !== 'running') return;
    if (!core.entries.includes(e) || e.status !== 'restarting') continue;
    e.restarts += 1;
    let child: RunningChild | undefined;
    try {
      child = await startEntry(core, e, e.restarts);
    } catch (err) {
      if (core.state !== 'running') return;
      // A failed restart counts as another death of that child.
      const failure: ChildExit = e.lastExit ?? { class: 'start_failure', reason: String(err) };
      for (const rest of group) if (rest.status === 'restarting') rest.status = 'terminated';
      emitExit(core, e, failure);
      await handleDeath(core, e, failure);
      return;
    }
    if (!child) continue; // ignored: it stays down, the rest of the group restarts
    publish(core.events, 'supervisor:child_restarted', () => ({
      supervisor: core.name,
      childId: e.spec.id,
      attempt: e === cause ? attempt : undefined,
      restarts: e.restarts,
      delayMs,
      cause: cause.spec.id,
      class: exit.class,
      reason: core.redact(exit.reason),
    }), 'child_restarted');
  }
}

/** Intensity exceeded: stops every child in reverse order and resolves `exited` as `escalated`. */
async function escalate(core: SupervisorCore, entry: Entry, exit: ChildExit): Promise<void> {
  const reason = `restart intensity exceeded: more than ${core.intensity.maxRestarts} restarts in ${core.intensity.periodMs} ms (last: ${entry.spec.id} ${exit.class}: ${core.redact(exit.reason)})`;
  core.state = 'escalated';
  clearTimers(core);
  core.logger.error({ childId: entry.spec.id, class: exit.class }, reason);
  await terminateAll(core);
  publish(core.events, 'supervisor:escalated', () => ({
    supervisor: core.name,
    childId: entry.spec.id,
    class: exit.class,
    reason,
    maxRestarts: core.intensity.maxRestarts,
    periodMs: core.intensity.periodMs,
  }), 'escalated');
  core.resolveExited({ class: 'escalated', reason });
}
