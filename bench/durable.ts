/**
 * Durable sends (cluster mode, `durability: 'redis'`) with a real `redis-server` (started here on
 * a free port, no persistence for both sides), each figure next to a baseline measured in the same
 * run:
 * - throughput (msgs/s): `rt.send` on the owner node with the receipt awaited (append → the owner's consumer-group
 *   read → the instance's queue and worker → the `loopback` channel → settle: XACK + XDEL + the
 *   reply to the sender → receipt), a closed loop of `WINDOW` sends in flight over 2 instances,
 *   vs a raw ioredis loop doing the least of that work by hand: pipelined `XADD`, one
 *   `XREADGROUP` per batch, one `XACK` per batch, the same window (target >= 0.5x); beside it
 *   `ack: 'accepted'` (resolved once Redis holds the entry; informational);
 * - latency (ms): at half the raw loop's saturation rate, sends paced by a 1 ms timer for a few
 *   seconds; each message's send → receipt time, p50 and p99, vs the raw loop's `XADD` → `XACK`
 *   time at the same rate (target p99 <= 2x);
 * - informational: the same closed loop from a node that does not own the instance (a second
 *   node joins and takes one of the two; the receipt comes back on the sender's reply stream);
 * - `durability: 'memory'` on the owner node: a cluster-mode runtime owning its instance, the
 *   same closed loop as `bench/send.ts` (1,000 in flight) vs a local-mode runtime, interleaved
 *   round by round (target >= 0.95x).
 */
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { Runtime } from '../src/index.js';
import { startRedis } from '../test/helpers/redis.js';
import { compare, pct, quick, report, type Comparison } from './lib.js';

const logger = pino({ level: 'silent' });
const N = quick ? 5_000 : 20_000;
const WINDOW = 1_000;
const ROUNDS = quick ? 2 : 3;
const LAT_MS = quick ? 1_500 : 3_000;
const MEM_N = quick ? 20_000 : 100_000;
const IDS = ['d0', 'd1'];
const r2 = (x: number): number => Math.round(x * 100) / 100;

interface Msg {
  room: string;
  text: string;
  n: number;
}
const msg = (n: number): Msg => ({ room: 'r1', text: `hello ${n}`, n });

/** Starts `ids` as loopback instances and waits until they are connected. */
async function startInstances(rt: Runtime<'cluster'> | Runtime, ids: readonly string[]): Promise<void> {
  for (const id of ids) await rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback', queueCapacity: 100_000 });
  // In cluster mode an instance starts once this node acquires its lease: wait for it to be here.
  const deadline = Date.now() + 20_000;
  while (!ids.every((id) => rt.listInstances().some((s) => s.instanceId === id && s.status === 'connected'))) {
    if (Date.now() > deadline) throw new Error(`instances not connected: ${ids.join(', ')}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A closed loop of `window` sends in flight spread over `ids`; msgs/s. */
async function closedLoop(send: (id: string, m: Msg) => Promise<unknown>, ids: readonly string[], n: number, window: number): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((resolve, reject) => {
    let next = 0;
    let done = 0;
    const one = (): void => {
      const k = next++;
      send(ids[k % ids.length] as string, msg(k)).then(() => {
        if (++done === n) resolve();
        else if (next < n) one();
      }, reject);
    };
    for (let i = 0; i < window && next < n; i++) one();
  });
  return n / ((performance.now() - t0) / 1000);
}

/** Sends at `rate` msgs/s for `ms` (1 ms timer, catching up) and returns each send → settle time. */
async function paced(send: (m: Msg) => Promise<unknown>, rate: number, ms: number): Promise<number[]> {
  const lat: number[] = [];
  const open: Promise<unknown>[] = [];
  const t0 = performance.now();
  let sent = 0;
  while (performance.now() - t0 < ms) {
    const due = Math.floor(((performance.now() - t0) / 1000) * rate);
    for (; sent < due; sent++) {
      const at = performance.now();
      open.push(send(msg(sent)).then(() => lat.push(performance.now() - at)));
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(open);
  return lat;
}

/**
 * The raw baseline: producer and consumer on their own ioredis connections, one consumer group;
 * `send` resolves when the consumer has acknowledged the message.
 */
async function rawLoop(url: string, ids: readonly string[]): Promise<{ send: (id: string, m: Msg) => Promise<unknown>; close: () => Promise<void> }> {
  const prod = new Redis(url, { enableAutoPipelining: true });
  const cons = new Redis(url);
  const acker = new Redis(url, { enableAutoPipelining: true });
  const keys = ids.map((id) => `raw:q:${id}`);
  for (const k of keys) await prod.xgroup('CREATE', k, 'g', '$', 'MKSTREAM').catch(() => undefined);
  const waiting = new Map<string, () => void>();
  let seq = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const res = (await cons.xreadgroup('GROUP', 'g', 'c', 'COUNT', 256, 'BLOCK', 100, 'STREAMS', ...keys, ...keys.map(() => '>'))) as [string, [string, string[]][]][] | null;
      for (const [key, entries] of res ?? []) {
        const done: string[] = [];
        const corr: string[] = [];
        for (const [entryId, fields] of entries) {
          // "Delivery": the message is parsed, as a consumer would before handing it on.
          JSON.parse(fields[1] as string);
          done.push(entryId);
          corr.push(fields[3] as string);
        }
        void acker.xack(key, 'g', ...done).then(() => {
          for (const c of corr) {
            waiting.get(c)?.();
            waiting.delete(c);
          }
        });
      }
    }
  })();
  return {
    send: (id, m) =>
      new Promise<void>((resolve, reject) => {
        const c = String(++seq);
        waiting.set(c, resolve);
        prod.xadd(`raw:q:${id}`, '*', 'm', JSON.stringify(m), 'c', c).catch(reject);
      }),
    close: async () => {
      running = false;
      await loop;
      for (const k of keys) await prod.del(k);
      prod.disconnect();
      cons.disconnect();
      acker.disconnect();
    },
  };
}

async function main(): Promise<void> {
  const redis = await startRedis();
  const rows: Comparison[] = [];
  const extra: Record<string, unknown> = {};
  try {
    const rt = await Runtime.start({ logger, cluster: { redis: redis.url, nodeId: 'a', leaseMs: 2000, namespace: 'bench-durable' } });
    const local = await Runtime.start({ logger });
    const mem = await Runtime.start({ logger, cluster: { redis: redis.url, nodeId: 'm', leaseMs: 2000, namespace: 'bench-memory', durability: 'memory' } });
    const raw = await rawLoop(redis.url, IDS);
    try {
      await startInstances(rt, IDS);
      await startInstances(local, ['l0']);
      await startInstances(mem, ['m0']);

      // Throughput, interleaved round by round.
      const ours: number[] = [];
      const accepted: number[] = [];
      const base: number[] = [];
      await closedLoop((id, m) => rt.send(id, m), IDS, Math.min(N, 2_000), WINDOW); // warm-up
      await closedLoop(raw.send, IDS, Math.min(N, 2_000), WINDOW);
      for (let r = 0; r < ROUNDS; r++) {
        base.push(await closedLoop(raw.send, IDS, N, WINDOW));
        ours.push(await closedLoop((id, m) => rt.send(id, m), IDS, N, WINDOW));
        accepted.push(await closedLoop((id, m) => rt.send(id, m, { ack: 'accepted' }), IDS, N, WINDOW));
      }
      const med = (xs: number[]): number => Math.round(pct(xs, 50));
      rows.push(compare(`durable rt.send from the owner node, receipt awaited (2 instances, ${WINDOW} in flight)`, 'msgs/s', med(ours), 'raw ioredis XADD + XREADGROUP + XACK', med(base), { min: 0.5 }));
      rows.push(compare("durable rt.send from the owner node, ack: 'accepted'", 'msgs/s', med(accepted), 'raw ioredis XADD + XREADGROUP + XACK', med(base)));
      // Wait until the accepted ones are delivered before measuring latency.
      for (const id of IDS) {
        const probe = (await rt.send(id, msg(-1))) as unknown;
        void probe;
      }

      // Latency at half the raw loop's saturation rate.
      const rate = Math.round(med(base) / 2);
      const latOurs = await paced((m) => rt.send(IDS[m.n % IDS.length] as string, m), rate, LAT_MS);
      const latBase = await paced((m) => raw.send(IDS[m.n % IDS.length] as string, m), rate, LAT_MS);
      rows.push(compare(`durable rt.send p99 at ${rate} msgs/s (half the raw saturation)`, 'ms', r2(pct(latOurs, 99)), 'raw p99 at the same rate', r2(pct(latBase, 99)), { max: 2 }));
      rows.push(compare(`durable rt.send p50 at ${rate} msgs/s`, 'ms', r2(pct(latOurs, 50)), 'raw p50 at the same rate', r2(pct(latBase, 50))));
      extra.latency = { rate, ours: { p50: r2(pct(latOurs, 50)), p99: r2(pct(latOurs, 99)), n: latOurs.length }, raw: { p50: r2(pct(latBase, 50)), p99: r2(pct(latBase, 99)), n: latBase.length } };

      // durability 'memory' on the owner node vs local mode, interleaved.
      const memRates: number[] = [];
      const localRates: number[] = [];
      await closedLoop((id, m) => mem.send(id, m), ['m0'], Math.min(MEM_N, 20_000), 1000);
      await closedLoop((id, m) => local.send(id, m), ['l0'], Math.min(MEM_N, 20_000), 1000);
      for (let r = 0; r < ROUNDS + 2; r++) {
        localRates.push(await closedLoop((id, m) => local.send(id, m), ['l0'], MEM_N, 1000));
        memRates.push(await closedLoop((id, m) => mem.send(id, m), ['m0'], MEM_N, 1000));
      }
      rows.push(compare("cluster, durability 'memory', rt.send on the owner (1 instance, 1,000 in flight)", 'msgs/s', med(memRates), 'local-mode rt.send', med(localRates), { min: 0.95 }));
      // From a node that does not own the instance: a second node joins and takes one of the two.
      const other = await Runtime.start({ logger, cluster: { redis: redis.url, nodeId: 'b', leaseMs: 2000, namespace: 'bench-durable' } });
      try {
        const deadline = Date.now() + 20_000;
        while ((other.cluster?.local().length ?? 0) !== 1 || !other.listInstances().some((x) => x.status === 'connected')) {
          if (Date.now() > deadline) throw new Error('the second node took no instance');
          await new Promise((r) => setTimeout(r, 50));
        }
        const remoteId = other.cluster?.local()[0] as string;
        const remote: number[] = [];
        for (let r = 0; r < ROUNDS; r++) remote.push(await closedLoop((id, m) => rt.send(id, m), [remoteId], N, WINDOW));
        rows.push(compare(`durable rt.send from a node that does not own the instance, receipt awaited (1 instance, ${WINDOW} in flight)`, 'msgs/s', med(remote), 'raw ioredis XADD + XREADGROUP + XACK', med(base)));
        extra.remote = remote;
      } finally {
        await other.stop();
      }
      extra.rounds = { ours, accepted, base, memRates, localRates };
    } finally {
      await raw.close();
      await Promise.all([rt.stop(), local.stop(), mem.stop()]);
    }
  } finally {
    await redis.stop();
  }
  report('durable', rows, extra);
}

await main();
