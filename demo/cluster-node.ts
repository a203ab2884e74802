/**
 * One node of the cluster demo (demo/cluster.ts), in its own process:
 * `node cluster-node.js <redisUrl> <nodeId> <leaseMs>`. A Runtime in cluster mode (public API
 * only) that reports to its parent (IPC) `instance:connected`, `instance:stopped` and the
 * `cluster:*` events with a timestamp, and obeys `{ cmd: 'declare', specs }` and
 * `{ cmd: 'stop' }` (answered `{ re, ok, value | error }`).
 */
import { pino } from 'pino';
import { Runtime } from '../src/index.js';

const [redis, nodeId, leaseMs] = process.argv.slice(2) as [string, string, string];
const send = (m: unknown): void => {
  if (process.connected) process.send?.(m);
};

const rt = await Runtime.start({
  logger: pino({ level: 'silent' }),
  shutdownMs: 500,
  placement: { instancesPerWorker: 8 },
  cluster: { redis, nodeId, leaseMs: Number(leaseMs), credentials: (spec) => ({ token: `token-of-${spec.id}` }) },
});
for (const event of ['instance:connected', 'instance:stopped', 'cluster:acquired', 'cluster:released', 'cluster:lost', 'cluster:node_up', 'cluster:node_down', 'cluster:degraded'] as const) {
  rt.on(event, (p: { instanceId?: string; nodeId?: string }) => send({ event, nodeId, instanceId: p.instanceId, other: event.startsWith('cluster:node') ? p.nodeId : undefined, at: Date.now() }));
}

process.on('message', (raw: unknown) => {
  const m = raw as { re: number; cmd: string; specs?: never[] };
  const answer = (p: Promise<unknown>, then?: () => void): void => {
    p.then(
      (value) => send({ re: m.re, ok: true, value }),
      (err: unknown) => send({ re: m.re, ok: false, error: { code: (err as { code?: string }).code, message: (err as Error).message } }),
    ).finally(() => then?.());
  };
  if (m.cmd === 'declare') answer(Promise.all((m.specs ?? []).map((s) => rt.startInstance(s))));
  if (m.cmd === 'stop') answer(rt.stop(), () => setTimeout(() => process.exit(0), 20));
});
// The parent went away (it was killed): nothing here must outlive it.
process.on('disconnect', () => void rt.stop().finally(() => process.exit(0)));
send({ ready: true, nodeId });
