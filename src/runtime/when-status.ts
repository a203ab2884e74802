/**
 * Waiting for an instance's status (`rt.whenStatus`, and `startInstance` with
 * `waitFor: 'connected'`): resolves once the instance is in one of the wanted statuses, at once
 * when it already is, so no event can be missed; rejects when it enters `error` first, is
 * stopped or removed, the timeout passes or the signal aborts.
 *
 * @packageDocumentation
 */
import { AbortedError, NotRunningError, StoppedError, TimeoutError } from '../errors.js';
import type { InstanceStatus } from '../instance/state-machine.js';
import type { Entry } from './entry.js';

/**
 * Resolves with `entry`'s status once it is one of `wanted`. Rejects with the instance's failure
 * (or `not_running`) when it enters `error` first, `stopped` when it is stopped or no longer the
 * entry `entries` holds for its id, `timeout` after `timeoutMs`, `aborted` on the signal.
 */
export function whenStatus(
entry: Entry,
entries: ReadonlyMap<string, Entry>,
wanted: readonly InstanceStatus[],
timeoutMs: number | undefined,
signal: AbortSignal | undefined,
): Promise<InstanceStatus> {
  const { server } = entry;
  const what = `instance ${entry.id} status ${wanted.join(' | ')}`;
  return new Promise<InstanceStatus>((resolve, reject) => {
    const events = ['started', 'connecting', 'connected', 'disconnected', 'error', 'stopped'].map((e) => `instance:${e}`);
    let timer: NodeJS.Timeout | undefined;
    const done = (): void => {
      for (const e of events) server.off(e, check);
      signal?.removeEventListener('abort', onAbort);
      if (timer) clearTimeout(timer);
    };
    const onAbort = (): void => {
      done();
      reject(new AbortedError(what, { cause: signal?.reason }));
    };
    const check = (): void => {
      const now = server.currentStatus;
      if (wanted.includes(now)) {
        done();
        resolve(now);
      } else if (server.stoppedEmitted || entries.get(entry.id) !== entry) {
        done();
        reject(new StoppedError(`instance ${entry.id}`));
      } else if (now === 'error') {
        done();
        reject(entry.failure ?? new NotRunningError(`instance ${entry.id}`));
      }
    };
    if (signal?.aborted) return onAbort();
    for (const e of events) server.on(e, check);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (timeoutMs !== undefined) {
      timer = setTimeout(() => {
        done();
        reject(new TimeoutError(what, timeoutMs));
      }, timeoutMs);
    }
    check();
  });
}
