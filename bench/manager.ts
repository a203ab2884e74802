/**
 * InstanceManager costs, each next to a baseline measured in the same run:
 * - `get` of a resident key (10k resident, read in a shuffled order) vs a bare `Map.get` (sync),
 *   and vs `await Promise.resolve(map.get)` (the floor of any promise-returning lookup); also
 *   with 16 registry partitions;
 * - get-or-start of new keys vs a bare get-or-create (`Map` miss → `new Agent` → `init` → set),
 *   with and without the same storage read (a `MemoryStorage` miss) the manager does;
 * - heap per resident agent at 100k keys vs a bare `Map` of the same agents.
 *
 * Per-op figures come from batches of 1000 ops (one op is below the timer's resolution), so
 * "p99" is the p99 of a batch divided by 1000: a tail of batches, not of single calls.
 * Run with `node --expose-gc` for the memory figure (without it the heap deltas are noisier).
 */
import { Bench } from 'tinybench';
import { pino } from 'pino';
import { InstanceManager, MemoryStorage, type Agent } from '../src/manager/index.js';
import { seededRandom } from '../src/supervisor/backoff.js';
import { compare, quick, report } from './lib.js';

const logger = pino({ level: 'silent' });
const BATCH = 1000;
const RESIDENT = quick ? 2_000 : 10_000;
const MEM_KEYS = quick ? 20_000 : 100_000;
const time = quick ? 300 : 1500;

class Session implements Agent<{ count: number }, { type: 'inc' }, number> {
  count = 0;
  constructor(readonly key: string) {}
  init(state: { count: number } | undefined): void {
    this.count = state?.count ?? 0;
  }
  handle(): number {
    return ++this.count;
  }
  snapshot(): { count: number } {
    return { count: this.count };
  }
}

const keys = Array.from({ length: RESIDENT }, (_, i) => `user-${i}`);
/**
 * The order the resident keys are read in: shuffled (seeded), as real traffic would be. Reading
 * them in insertion order would flatter a single Map (its entries sit in insertion order, so
 * consecutive keys share cache lines) and penalize partitions for the wrong reason.
 */
const order = shuffle(keys, seededRandom(42));
function shuffle<T>(xs: readonly T[], random: () => number): T[] {
  const out = [...xs];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

async function residentGets(): Promise<Record<string, { opsPerSec: number; p99us: number }>> {
  const m1 = await InstanceManager.start({ name: 'b1', agent: Session, logger, idleTimeoutMs: 15 * 60_000 });
  const m16 = await InstanceManager.start({ name: 'b16', agent: Session, logger, idleTimeoutMs: 15 * 60_000, partitions: 16 });
  const map = new Map<string, Session>();
  for (const k of keys) {
    await m1.get(k);
    await m16.get(k);
    map.set(k, new Session(k));
  }
  let i = 0;
  let sink: unknown;
  const bench = new Bench({ time, warmup: true });
  bench
    .add('Map.get (sync)', () => {
      for (let n = 0; n < BATCH; n++) sink = map.get(order[i++ % RESIDENT] as string);
    })
    .add('await Promise.resolve(Map.get)', async () => {
      for (let n = 0; n < BATCH; n++) sink = await Promise.resolve(map.get(order[i++ % RESIDENT] as string));
    })
    .add('manager.get (1 partition)', async () => {
      for (let n = 0; n < BATCH; n++) sink = await m1.get(order[i++ % RESIDENT] as string);
    })
    .add('manager.get (16 partitions)', async () => {
      for (let n = 0; n < BATCH; n++) sink = await m16.get(order[i++ % RESIDENT] as string);
    });
  await bench.run();
  void sink;
  await Promise.all([m1.close(), m16.close()]);
  return figures(bench);
}

async function newKeys(): Promise<Record<string, { opsPerSec: number; p99us: number }>> {
  let run = 0;
  let m: InstanceManager<typeof Session> | undefined;
  let map = new Map<string, Session>();
  const storage = new MemoryStorage();
  const bench = new Bench({
    time,
    warmup: true,
    setup: async () => {
      await m?.close({ discardUnsaved: true });
      m = await InstanceManager.start({ name: `n${run++}`, agent: Session, logger, storage: new MemoryStorage(), idleTimeoutMs: 15 * 60_000 });
      map = new Map();
    },
  });
  let i = 0;
  bench
    .add('bare get-or-create', () => {
      for (let n = 0; n < BATCH; n++) {
        const k = `k${i++}`;
        let a = map.get(k);
        if (!a) {
          a = new Session(k);
          a.init(undefined);
          map.set(k, a);
        }
      }
    })
    .add('bare get-or-create + storage miss', async () => {
      for (let n = 0; n < BATCH; n++) {
        const k = `k${i++}`;
        let a = map.get(k);
        if (!a) {
          const cp = await storage.get({ manager: 'bare', key: k });
          a = new Session(k);
          a.init(cp?.state as { count: number } | undefined);
          map.set(k, a);
        }
      }
    })
    .add('manager.get of a new key', async () => {
      for (let n = 0; n < BATCH; n++) await (m as InstanceManager<typeof Session>).get(`k${i++}`);
    });
  await bench.run();
  await m?.close({ discardUnsaved: true });
  return figures(bench);
}

function figures(bench: Bench): Record<string, { opsPerSec: number; p99us: number }> {
  const out: Record<string, { opsPerSec: number; p99us: number }> = {};
  for (const t of bench.tasks) {
    const r = t.result;
    if (r.state !== 'completed') throw new Error(`task ${t.name} ${r.state}`);
    out[t.name] = {
      opsPerSec: Math.round(r.throughput.mean * BATCH),
      p99us: Math.round((r.latency.p99 / BATCH) * 1000 * 1000) / 1000,
    };
  }
  return out;
}

const gc = (globalThis as { gc?: () => void }).gc;
async function heap(): Promise<number> {
  for (let n = 0; n < 3; n++) {
    gc?.();
    await new Promise((r) => setImmediate(r));
  }
  return process.memoryUsage().heapUsed;
}

async function memoryPerAgent(): Promise<{ manager: number; bare: number }> {
  const memKeys = Array.from({ length: MEM_KEYS }, (_, i) => `session-${i}`);
  // bare: a Map of agents
  let h0 = await heap();
  let bare: Map<string, Session> | undefined = new Map();
  for (const k of memKeys) {
    const a = new Session(k);
    a.init(undefined);
    bare.set(k, a);
  }
  const bareBytes = ((await heap()) - h0) / MEM_KEYS;
  if (bare.size !== MEM_KEYS) throw new Error('bare map incomplete');
  bare = undefined;
  // manager: the same agents, resident, idle timeout on (so idle bookkeeping is counted)
  h0 = await heap();
  const m = await InstanceManager.start({ name: 'mem', agent: Session, logger, idleTimeoutMs: 15 * 60_000 });
  for (const k of memKeys) await m.get(k);
  const mBytes = ((await heap()) - h0) / MEM_KEYS;
  if (m.stats().resident !== MEM_KEYS) throw new Error('not all resident');
  await m.close({ discardUnsaved: true });
  void bare;
  return { manager: Math.round(mBytes), bare: Math.round(bareBytes) };
}

const mem = await memoryPerAgent(); // first, before the benches leave garbage behind
const g = await residentGets();
const nk = await newKeys();
const f = (name: string) => g[name] ?? nk[name] ?? { opsPerSec: NaN, p99us: NaN };

report(
  'manager',
  [
    compare('get, resident key (ops/s)', 'ops/s', f('manager.get (1 partition)').opsPerSec, 'Map.get (sync)', f('Map.get (sync)').opsPerSec, { min: 0.05 }),
    compare('get, resident key (ops/s)', 'ops/s', f('manager.get (1 partition)').opsPerSec, 'await Promise.resolve(Map.get)', f('await Promise.resolve(Map.get)').opsPerSec, { min: 0.5 }),
    compare('get, resident key (p99 per op)', 'µs', f('manager.get (1 partition)').p99us, 'await Promise.resolve(Map.get)', f('await Promise.resolve(Map.get)').p99us, { max: 2 }),
    compare('get, 16 partitions (ops/s)', 'ops/s', f('manager.get (16 partitions)').opsPerSec, 'get, 1 partition', f('manager.get (1 partition)').opsPerSec, { min: 0.8 }),
    compare('get-or-start, new key (ops/s)', 'ops/s', f('manager.get of a new key').opsPerSec, 'bare get-or-create + storage miss', f('bare get-or-create + storage miss').opsPerSec, { min: 0.25 }),
    compare('get-or-start, new key (ops/s)', 'ops/s', f('manager.get of a new key').opsPerSec, 'bare get-or-create (sync)', f('bare get-or-create').opsPerSec, { min: 0.02 }),
    compare(`heap per resident agent (${MEM_KEYS} keys)`, 'bytes', mem.manager, 'bare Map of the same agents', mem.bare, { max: 3 }),
  ],
  { batch: BATCH, residentKeys: RESIDENT, memoryKeys: MEM_KEYS, exposeGc: gc !== undefined, tasks: { ...g, ...nk }, memory: mem },
);
