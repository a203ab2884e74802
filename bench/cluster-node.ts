/**
 * One cluster node of bench/cluster.ts, in its own process (forked):
 * `node cluster-node.js <redisUrl> <nodeId> <leaseMs>`. It starts a Runtime in cluster mode
 * (`loopback` instances, 50 per worker thread), reports to its parent (IPC) every `cluster:*`
 * event and every `instance:connected` / `instance:stopped` with a timestamp (`Date.now()`), and
 * obeys (answered `{ re, ok, value | error }`):
 * - `{ cmd: 'declare', specs }`: `startInstance` for each, all at once;
 * - `{ cmd: 'undeclare', ids }`: `stopInstance` for each, all at once;
 * - `{ cmd: 'spawn', n }`: the baseline: a local-mode Runtime of the same options in this process
 *   starts `n` instances at once until every one is `connected`; answers the ms it took (and
 *   stops that runtime);
 * - `{ cmd: 'stop' }`: `rt.stop()`, then answers the worker threads still alive (after up to
 *   5 s of grace) and exits.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import type { Worker } from 'node:worker_threads';
import { pino } from 'pino';
import { Runtime, type RuntimeOptions } from '../src/index.js';

const [redis, nodeId, leaseMs] = process.argv.slice(2) as [string, string, string];
const send = (m: unknown): void => {
  if (process.connected) process.send?.(m);
};

// Every worker thread this process creates, until it exits.
const live = new Set<Worker>();
diagnostics_channel.subscribe('worker_threads', (message: unknown) => {
  const worker = (message as { worker: Worker }).worker;
  live.add(worker);
  worker.once('exit', () => live.delete(worker));
});

const base: RuntimeOptions = {
  logger: pino({ level: 'silent' }),
  heartbeat: { intervalMs: 500, maxMissed: 20 },
  shutdownMs: 500,
  readyTimeoutMs: 60_000,
  placement: { instancesPerWorker: 50 },
};
const rt = await Runtime.start({ ...base, cluster: { redis, nodeId, leaseMs: Number(leaseMs) } });
for (const event of ['cluster:acquired', 'cluster:released', 'cluster:lost', 'cluster:node_up', 'cluster:node_down', 'cluster:degraded', 'instance:connected', 'instance:stopped'] as const) {
  rt.on(event, (p: { at: number; instanceId?: unknown; reason?: unknown; fencingToken?: unknown }) => send({ event, nodeId, instanceId: p.instanceId, reason: p.reason, at: Date.now() }));
}

async function spawnLocal(n: number): Promise<number> {
  const local = await Runtime.start(base);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: n }, (_, i) => local.startInstance({ id: `spawn-${i}`, name: `spawn-${i}`, channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected', timeoutMs: 60_000 })),
  );
  const ms = performance.now() - t0;
  await local.stop();
  return ms;
}

async function stop(): Promise<number> {
  await rt.stop();
  const deadline = Date.now() + 5000;
  while (live.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return live.size;
}

process.on('message', (raw: unknown) => {
  const m = raw as { re: number; cmd: string; specs?: never[]; ids?: string[]; n?: number };
  const answer = (p: Promise<unknown>, then?: () => void): void => {
    p.then(
      (value) => send({ re: m.re, ok: true, value }),
      (err: unknown) => send({ re: m.re, ok: false, error: { code: (err as { code?: string }).code, message: (err as Error).message } }),
    ).finally(() => then?.());
  };
  switch (m.cmd) {
    case 'declare':
      return answer(Promise.all((m.specs ?? []).map((s) => rt.startInstance(s))));
    case 'undeclare':
      return answer(Promise.all((m.ids ?? []).map((id) => rt.stopInstance(id))));
    case 'spawn':
      return answer(spawnLocal(m.n ?? 0));
    case 'stop':
      return answer(stop(), () => setTimeout(() => process.exit(0), 50));
  }
});
// The parent went away (killed): nothing here must outlive it.
process.on('disconnect', () => void rt.stop().finally(() => process.exit(0)));
send({ ready: true, nodeId });
