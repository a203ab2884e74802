/**
 * Test helpers: where the compiled fixture workers live, and how to check that nothing (worker
 * threads, message ports, timers) outlives a test.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import type { Worker } from 'node:worker_threads';

/** URL of the compiled fixture `name` (run `npx tsc -p tsconfig.build.json` first). */
export function fixtureUrl(name: string): URL {
  return new URL(`../../dist/test/fixtures/${name}.js`, import.meta.url);
}

/** Counts of `process.getActiveResourcesInfo()` by resource type (ref'ed resources only). */
export function activeResources(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1;
  return counts;
}

/**
 * Resource types whose count grew from `before` to `after` (e.g. `{ MessagePort: 2 }`), ignoring
 * the ones in `ignore` (the test runner's own).
 */
export function resourceGrowth(
  before: Record<string, number>,
  after: Record<string, number>,
  ignore: readonly string[] = [],
): Record<string, number> {
  const growth: Record<string, number> = {};
  for (const [type, count] of Object.entries(after)) {
    if (ignore.includes(type)) continue;
    const delta = count - (before[type] ?? 0);
    if (delta > 0) growth[type] = delta;
  }
  return growth;
}

/** Tracks every Worker this thread creates (via the `worker_threads` diagnostics channel) until it exits. */
export interface WorkerTracker {
  /** Workers created since tracking began that have not exited yet. */
  live(): number;
  /** Workers created since tracking began. */
  created(): number;
  /** Stops tracking. */
  dispose(): void;
}

/** Starts a {@link WorkerTracker}. */
export function trackWorkers(): WorkerTracker {
  const live = new Set<Worker>();
  let created = 0;
  const onWorker = (message: unknown): void => {
    const worker = (message as { worker: Worker }).worker;
    created++;
    live.add(worker);
    worker.once('exit', () => live.delete(worker));
  };
  diagnostics_channel.subscribe('worker_threads', onWorker);
  return {
    live: () => live.size,
    created: () => created,
    dispose: () => diagnostics_channel.unsubscribe('worker_threads', onWorker),
  };
}

/** Polls `condition` every `intervalMs` until it holds; rejects after `timeoutMs`. */
export async function waitFor(condition: () => boolean, timeoutMs = 10_000, intervalMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
