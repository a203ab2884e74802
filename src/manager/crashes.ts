/**
 * Crashes of a key's agent: the failed call and those queued behind it reject, and the agent
 * restarts from its last checkpoint, or its key is quarantined past the restart intensity.
 *
 * @packageDocumentation
 */
import { AgentCrashedError, ThawFailedError } from '../errors.js';
import { IntensityWindow } from '../supervisor/backoff.js';
import { MAX_TIMER_MS } from '../wire/timers.js';
import { construct, end, migrate, readCheckpoint } from './lifecycle.js';
import { pump, rejectPendingCalls, type CallJob } from './mailbox.js';
import { emit, type ManagerState } from './manager-state.js';
import { ended, type Slot } from './slot.js';
import type { Checkpoint } from './storage.js';

export function crash(m: ManagerState, slot: Slot, job: CallJob, err: unknown): void {
  const { key } = slot;
  job.reject(new AgentCrashedError(m.name, key, 'crashed', { cause: err, details: { incarnation: slot.incarnation } }));
  rejectPendingCalls(slot, () => new AgentCrashedError(m.name, key, 'pending', { cause: err, details: { incarnation: slot.incarnation } }));
  slot.restarts += 1;
  slot.agent = undefined;
  const window = (slot.intensity ??= new IntensityWindow(m.intensity.maxRestarts, m.intensity.periodMs));
  const exceeded = window.record();
  m.logger.warn({ key, err, restarts: slot.restarts, quarantined: exceeded }, 'agent crashed');
  emit(m, 'crashed', () => ({ key, incarnation: slot.incarnation, error: err, restarts: slot.restarts, quarantined: exceeded }));
  if (exceeded) quarantine(m, slot, err);
  else void restart(m, slot);
}

/** Re-reads the last checkpoint (or the initial state) into a new agent; `slot.mailbox` stays set (no pump starts meanwhile). */
async function restart(m: ManagerState, slot: Slot): Promise<void> {
  const { key } = slot;
  for (;;) {
    let cp: Checkpoint | undefined;
    let state: unknown;
    try {
      cp = await readCheckpoint(m, key);
      if ((cp?.revision ?? 0) !== slot.revision) {
        throw new ThawFailedError(m.name, key, `checkpoint revision ${cp?.revision ?? 0} is not ${slot.revision}, the one this agent descends from`);
      }
      state = cp ? await migrate(m, cp) : slot.initialState;
    } catch (err) {
      if (ended(slot)) return;
      m.logger.error({ key, err }, 'agent could not be restarted: its checkpoint cannot be read');
      const cause = err;
      end(m, slot, 'restart_failed', false, () => new AgentCrashedError(m.name, key, 'restart_failed', { cause }));
      return;
    }
    if (ended(slot)) return;
    try {
      slot.agent = await construct(m, key, state, cp, slot.restarts);
    } catch (err) {
      if (ended(slot)) return;
      slot.restarts += 1;
      const exceeded = (slot.intensity as IntensityWindow).record();
      m.logger.warn({ key, err, restarts: slot.restarts, quarantined: exceeded }, 'agent restart failed in init');
      emit(m, 'crashed', () => ({ key, incarnation: slot.incarnation, error: err, restarts: slot.restarts, quarantined: exceeded }));
      if (exceeded) {
        quarantine(m, slot, err);
        return;
      }
      continue;
    }
    if (ended(slot)) return;
    emit(m, 'restarted', () => ({ key, incarnation: slot.incarnation, restarts: slot.restarts, revision: slot.revision }));
    pump(m, slot);
    return;
  }
}

function quarantine(m: ManagerState, slot: Slot, err: unknown): void {
  const { key } = slot;
  const p = slot.partition;
  const { quarantineMs, maxRestarts, periodMs } = m.intensity;
  const until = Date.now() + quarantineMs;
  if (quarantineMs > 0 && m.state === 'open') {
    const timer = setTimeout(() => {
      if (p.quarantine.get(key)?.until === until) p.quarantine.delete(key);
    }, Math.min(quarantineMs, MAX_TIMER_MS));
    timer.unref();
    p.quarantine.set(key, { until, timer });
  }
  m.logger.error({ key, err, maxRestarts, periodMs, quarantineMs }, 'agent exceeded its restart intensity; key quarantined');
  emit(m, 'quarantined', () => ({ key, incarnation: slot.incarnation, until, maxRestarts, periodMs, error: err }));
  end(m, slot, 'quarantined', false, () => new AgentCrashedError(m.name, key, 'quarantined', { cause: err, details: { until } }));
}
