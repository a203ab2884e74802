/**
 * Durable sends under chaos, with real processes and a real persistent redis-server (append-only
 * file): 3 node processes send to 30 `ledger` instances with `ack: 'accepted'` from every node
 * while nodes are killed (SIGKILL) and restarted at random and Redis is restarted once. Every
 * delivery is written to a file by the channel (synchronously, so it survives the kill). Then:
 * every accepted send was delivered, the first deliveries of each sender to each instance came in
 * the order it sent them, every repeated delivery was marked as a redelivery, and repeats stay
 * within the in-flight window per death.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { seededRandom } from '../src/supervisor/backoff.js';
import { NodeProc } from './helpers/cluster-node.js';
import { fixtureUrl, waitFor } from './helpers/fixtures.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

const LEASE_MS = 1000;
const DURATION_MS = 30_000;
const TARGET = 20_000;
const INSTANCES = 30;
const BATCH = 50;
/** In-flight entries per instance a node may hold unsettled (src/cluster/durable.ts `WINDOW`). */
const WINDOW = 512;
const NODE_IDS = ['n0', 'n1', 'n2'];

interface Line {
  i: string;
  s: string;
  q: number;
  r: boolean;
  t: number;
}

let redis: TestRedis;
let dir: string;
beforeAll(async () => {
  redis = await startRedis({ persistent: true });
  dir = mkdtempSync(join(tmpdir(), 'threadvisor-ledger-'));
});
afterAll(async () => {
  await redis.stop();
  rmSync(dir, { recursive: true, force: true });
});

/** Every delivery written so far, in time order (a file's own order within one millisecond). */
function ledger(): Line[] {
  const lines: (Line & { f: number; n: number })[] = [];
  readdirSync(dir).forEach((file, f) => {
    readFileSync(join(dir, file), 'utf8')
      .split('\n')
      .forEach((text, n) => {
        if (text === '') return;
        try {
          lines.push({ ...(JSON.parse(text) as Line), f, n });
        } catch {
          // A line cut by a kill mid-write: not a delivery the channel finished writing.
        }
      });
  });
  return lines.sort((a, b) => a.t - b.t || a.f - b.f || a.n - b.n);
}

describe('durable sends under chaos', { timeout: 240_000 }, () => {
  it(`3 nodes, ${INSTANCES} instances, ${TARGET} accepted sends from every node, kills and a Redis restart: 0 lost, in order, repeats marked and bounded`, async () => {
    const random = seededRandom(20261206);
    const live = new Map<string, NodeProc>();
    const gen = new Map<string, number>();
    const spawnNode = async (id: string): Promise<NodeProc> => {
      const n = new NodeProc(id, redis.url, LEASE_MS);
      live.set(id, n);
      gen.set(id, (gen.get(id) ?? 0) + 1);
      await n.ready;
      return n;
    };
    for (const id of NODE_IDS) await spawnNode(id);
    const first = live.get('n0') as NodeProc;
    const channel = fixtureUrl('channels/ledger').href;
    for (let i = 0; i < INSTANCES; i++) {
      await first.call('declare', { spec: { id: `l${i}`, name: `l${i}`, channelType: 'ledger', channel, settings: { dir, delayMs: 10 }, queueCapacity: 100_000 } });
    }

    // Accepted sends, by instance and sender: the sequence numbers Redis took.
    const accepted = new Map<string, number[]>();
    const refused = new Map<string, number>();
    let total = 0;
    let stopping = false;
    const senderLoop = async (id: string): Promise<void> => {
      const seq = new Map<string, number>();
      while (!stopping && total < TARGET) {
        const n = live.get(id);
        if (!n) {
          await new Promise((r) => setTimeout(r, 50));
          continue;
        }
        const sender = `${id}.${gen.get(id) ?? 0}`;
        const instance = `l${Math.floor(random() * INSTANCES)}`;
        const k = `${instance} ${sender}`;
        const from = seq.get(k) ?? 0;
        seq.set(k, from + BATCH);
        const messages = Array.from({ length: BATCH }, (_, j) => ({ s: sender, q: from + j }));
        const out = await Promise.race([n.call<string[]>('sendEach', { id: instance, messages, options: { ack: 'accepted' } }), n.exited.then(() => undefined)]);
        if (!out) continue; // the node died with this batch open: none of it counts as accepted
        const list = accepted.get(k) ?? [];
        out.forEach((o, j) => {
          if (o === 'ok') {
            list.push(from + j);
            total++;
          } else refused.set(o, (refused.get(o) ?? 0) + 1);
        });
        accepted.set(k, list);
        // Paced so that the run spans the whole chaos window (about 800 sends/s across the nodes).
        await new Promise((r) => setTimeout(r, out.some((o) => o !== 'ok') ? 300 : 180));
      }
    };
    const senders = NODE_IDS.map((id) => senderLoop(id));

    const log: string[] = [];
    let deaths = 0;
    let redisRestarted = false;
    const t0 = Date.now();
    while (Date.now() - t0 < DURATION_MS && total < TARGET) {
      await new Promise((r) => setTimeout(r, 1500 + random() * 2000));
      if (!redisRestarted && Date.now() - t0 > DURATION_MS / 2) {
        redisRestarted = true;
        log.push(`${Date.now() - t0} redis restart (accepted so far ${total})`);
        await redis.restart();
        continue;
      }
      const id = NODE_IDS[Math.floor(random() * NODE_IDS.length)] as string;
      const n = live.get(id) as NodeProc;
      log.push(`${Date.now() - t0} kill ${id} (accepted so far ${total})`);
      live.delete(id);
      n.kill('SIGKILL');
      await n.exited;
      deaths++;
      await new Promise((r) => setTimeout(r, 200 + random() * 1000));
      await spawnNode(id);
    }
    if (!redisRestarted) {
      log.push(`${Date.now() - t0} redis restart (accepted so far ${total})`);
      await redis.restart();
    }
    stopping = true;
    await Promise.all(senders);

    // Every accepted send is delivered (liveness bound only).
    const missing = (): string[] => {
      const seen = new Set(ledger().map((l) => `${l.i} ${l.s} ${l.q}`));
      const out: string[] = [];
      for (const [k, qs] of accepted) for (const q of qs) if (!seen.has(`${k} ${q}`)) out.push(`${k} ${q}`);
      return out;
    };
    try {
      await waitFor(() => missing().length === 0, 90_000, 500);
    } catch {
      const r = new Redis(redis.url);
      const ids = [...new Set(missing().map((m) => m.split(' ')[0] as string))];
      const state = await Promise.all(ids.map(async (i) => `${i}: len ${await r.xlen(`{threadvisor}:q:${i}`)} pending ${JSON.stringify(await r.xpending(`{threadvisor}:q:${i}`, 'owners'))} range ${JSON.stringify(await r.xrange(`{threadvisor}:q:${i}`, '-', '+', 'COUNT', 5))}`));
      r.disconnect();
      expect(missing().slice(0, 20), `${missing().length} accepted sends never delivered\n${log.join('\n')}\n${state.join('\n')}`).toEqual([]);
    }

    const lines = ledger();
    const firstSeen = new Set<string>();
    const order = new Map<string, number>();
    const outOfOrder: string[] = [];
    const unmarked: string[] = [];
    let repeats = 0;
    for (const l of lines) {
      const key = `${l.i} ${l.s} ${l.q}`;
      if (firstSeen.has(key)) {
        repeats++;
        if (!l.r) unmarked.push(key);
        continue;
      }
      firstSeen.add(key);
      const k = `${l.i} ${l.s}`;
      if ((order.get(k) ?? -1) >= l.q) outOfOrder.push(`${key} after ${order.get(k)}`);
      order.set(k, l.q);
    }
    expect(total).toBeGreaterThan(TARGET / 4);
    const detail = outOfOrder.slice(0, 2).map((o) => {
      const [i, s] = o.split(' ');
      return lines.filter((l) => l.i === i && l.s === s).map((l) => `${l.q}${l.r ? 'r' : ''}@${l.t - t0}/${(l as Line & { f: number }).f}`).join(' ');
    });
    expect(outOfOrder.slice(0, 20), `${log.join('\n')}\n${detail.join('\n')}`).toEqual([]);
    expect(unmarked.slice(0, 20), log.join('\n')).toEqual([]);
    expect(repeats).toBeLessThanOrEqual((deaths + 1) * INSTANCES * WINDOW);
    console.log(
      `durable chaos: ${total} accepted, ${lines.length} deliveries, ${repeats} repeats, ${deaths} kills + 1 Redis restart, refused ${JSON.stringify(Object.fromEntries(refused))}\n${log.join('\n')}`,
    );

    for (const n of live.values()) n.kill('SIGKILL');
    await Promise.all([...live.values()].map((n) => n.exited));
  });
});
