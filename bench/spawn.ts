/** Shared by the lifecycle benches: the bare-spawn baseline, and the time an instance reports `connected`. */
import { Worker } from 'node:worker_threads';
import type { Runtime } from '../src/index.js';

const bare = new URL('./bare-worker.js', import.meta.url);

/** The baseline: a bare `new Worker` spawn to its first message, ms (the worker is terminated after). */
export async function bareSpawn(): Promise<number> {
  const t0 = performance.now();
  const w = new Worker(bare);
  await new Promise((r) => w.once('message', r));
  const dt = performance.now() - t0;
  await w.terminate();
  return dt;
}

/** Resolves with `performance.now()` when instance `id` of `rt` next reports `instance:connected`. */
export function connectedOn(rt: Runtime, id: string): Promise<number> {
  return new Promise((resolve) => {
    const on = (e: { instanceId: string }): void => {
      if (e.instanceId !== id) return;
      rt.off('instance:connected', on);
      resolve(performance.now());
    };
    rt.on('instance:connected', on);
  });
}
