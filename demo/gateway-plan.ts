/**
 * The gateway demo's plan: the five faults (what each is, when in the run it is injected, which
 * instance gets it), the run's fixed settings (heartbeat, provider burst, revoked token) and each
 * instance's room list.
 *
 * @packageDocumentation
 */

/** The faults, in the order they are given to instances (and injected). */
export type FaultName = 'crash' | 'hang' | 'oom' | 'provider' | 'fatal';
export const FAULT_ORDER: readonly FaultName[] = ['crash', 'hang', 'oom', 'provider', 'fatal'];
/** When each fault is injected, as a fraction of the run. */
export const FAULT_AT: Record<FaultName, number> = { crash: 0.15, hang: 0.27, oom: 0.39, provider: 0.51, fatal: 0.63 };
/** What each fault means, for the summary. */
export const FAULT_TEXT: Record<FaultName, string> = {
  crash: 'uncaught exception in the worker',
  hang: 'busy loop: the event loop never yields',
  oom: 'heap blow-up under resourceLimits.maxOldGenerationSizeMb 64',
  provider: '3 refused connects + 6 failed sends (HTTP 5xx) at start, then a connection reset',
  fatal: 'credentials revoked (HTTP 401): fatal, no restart loop',
};
/**
 * Faults that end the worker: in a shared worker, every instance in it restarts with the faulted
 * one. Not a crash: an uncaught throw from an instance's callback is attributed to it in a shared
 * worker, and only that instance restarts (kind `crash`), in place.
 */
export const WORKER_ENDING: ReadonlySet<FaultName> = new Set<FaultName>(['hang', 'oom']);
export const CONNECT_FAILURES = 3;
export const SEND_FAILURES = 6;
/** The credential of the instance whose token gets revoked: it never shows in logs, events or health. */
export const TOKEN = 'demo-token-8c1f2e';
export const HEARTBEAT = { intervalMs: 250, maxMissed: 4 };
/** Attempts of each instance's first start (see `startOne`). */
export const START_ATTEMPTS = 3;
/** Hot rooms appear this many times in the loopback's round-robin list; cold ones once. */
export const HOT_WEIGHT = 8;

/**
 * Which instance gets which fault (index → fault; `undefined`: a sibling), min(5, n - 1) faults.
 * One worker each: the first instances, in {@link FAULT_ORDER} (gw-0 crash, gw-1 hang, …).
 * Shared workers: the heap blow-up goes to the last instance (its `resourceLimits` give it a
 * worker of its own), the others one per worker as far as there are workers: instances start in
 * order and fill one worker after the other, so the k-th goes to the first instance of the k-th
 * worker (gw-0, gw-50, gw-100, … with 50 per worker). That is only where they are expected to
 * land; the verdict uses the thread ids the runtime reports.
 */
export function planFaults(instances: number, perWorker: number): Array<FaultName | undefined> {
  const plan = new Array<FaultName | undefined>(instances).fill(undefined);
  const faults = FAULT_ORDER.slice(0, Math.min(FAULT_ORDER.length, instances - 1));
  if (perWorker === 1) {
    faults.forEach((f, i) => (plan[i] = f));
    return plan;
  }
  let shared = instances;
  if (faults.includes('oom')) {
    plan[instances - 1] = 'oom';
    shared = instances - 1;
  }
  const workers = Math.ceil(shared / perWorker);
  faults
    .filter((f) => f !== 'oom')
    .forEach((f, k) => {
      let at = (k % workers) * perWorker + Math.floor(k / workers);
      while (at >= shared || plan[at] !== undefined) at = (at + 1) % shared;
      plan[at] = f;
    });
  return plan;
}

/** The loopback's room list for one instance: a quarter hot rooms, interleaved with the cold ones. */
export function roomList(instance: string, count: number): string[] {
  const names = Array.from({ length: count }, (_, i) => `${instance}/room-${String(i).padStart(2, '0')}`);
  const hot = names.slice(0, Math.max(1, Math.ceil(count / 4)));
  const cold = names.slice(hot.length);
  const list: string[] = [];
  for (let k = 0; k < HOT_WEIGHT; k++) {
    list.push(...hot, ...cold.slice(Math.floor((k * cold.length) / HOT_WEIGHT), Math.floor(((k + 1) * cold.length) / HOT_WEIGHT)));
  }
  return list;
}
