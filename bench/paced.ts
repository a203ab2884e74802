/** The send loops the benches share (open-loop paced, closed-loop) and the figures of the latency benches (bench/send.ts, bench/tail.ts, bench/alloc-profile.ts). */
import { PerformanceObserver } from 'node:perf_hooks';

export interface Paced {
  latencies: number[];
  sent: number;
  /** Achieved send rate, msgs/s (pacing kept up if close to the asked one). */
  rate: number;
}

/**
 * Calls `sendOne(i)` at `rate` msgs/s for `ms`, paced on a 1 ms timer (what is due is sent at
 * once, so a late tick catches up); `sendOne` calls `record(latency)` when its message is
 * acknowledged. Resolves once every message settled. A timer, not a setImmediate spin: on a
 * 2-core machine a spinning pacer takes a whole core from the worker threads it measures.
 */
export async function paced(rate: number, ms: number, sendOne: (i: number, record: (latencyMs: number) => void) => void, flush?: () => void): Promise<Paced> {
  const latencies: number[] = [];
  let sent = 0;
  let settled = 0;
  let allSent = false;
  let onAll: (() => void) | undefined;
  const record = (latencyMs: number): void => {
    if (Number.isFinite(latencyMs)) latencies.push(latencyMs); // NaN: a send that failed

    if (++settled === sent && allSent) onAll?.();
  };
  const start = performance.now();
  await new Promise<void>((resolve) => {
    const tick = (): void => {
      const elapsed = performance.now() - start;
      const due = Math.floor((Math.min(elapsed, ms) * rate) / 1000);
      while (sent < due) sendOne(sent++, record);
      flush?.();
      if (elapsed < ms) setTimeout(tick, 1);
      else resolve();
    };
    setTimeout(tick, 1);
  });
  const sendSpan = performance.now() - start;
  allSent = true;
  if (settled < sent) await new Promise<void>((resolve) => (onAll = resolve));
  return { latencies, sent, rate: Math.round(sent / (sendSpan / 1000)) };
}

/** Main-thread GC pauses seen while `fn` runs. */
export async function withGcPauses<T>(fn: () => Promise<T>): Promise<{ result: T; gc: { count: number; totalMs: number; maxMs: number } }> {
  const durations: number[] = [];
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) durations.push(e.duration);
  });
  obs.observe({ entryTypes: ['gc'] });
  try {
    const result = await fn();
    await new Promise((r) => setImmediate(r)); // the observer reports asynchronously
    return { result, gc: { count: durations.length, totalMs: round3(durations.reduce((a, b) => a + b, 0)), maxMs: round3(maxOf(durations)) } };
  } finally {
    obs.disconnect();
  }
}

export function maxOf(xs: readonly number[]): number {
  let m = -Infinity;
  for (const x of xs) if (x > m) m = x;
  return m;
}
export function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

/**
 * A closed loop: `outstanding` sends in flight, the next sent as each settles, until every one of
 * `msgs` settled; msgs/s.
 */
export async function closedLoop<T>(msgs: readonly T[], send: (m: T) => Promise<unknown>, outstanding = 1000): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let next = 0;
    let settled = 0;
    const done = (): void => {
      if (++settled === msgs.length) resolve();
      else if (next < msgs.length) void send(msgs[next++] as T).then(done);
    };
    while (next < outstanding && next < msgs.length) void send(msgs[next++] as T).then(done);
  });
  return msgs.length / ((performance.now() - t0) / 1000);
}
