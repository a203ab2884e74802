/**
 * Durable sends (cluster mode, `durability: 'redis'`, the default) with a real redis-server: a send
 * from any node is delivered by the owner and answered with its receipt; `ack: 'accepted'`
 * resolves once Redis holds it; an idempotency key delivered once answers with its first receipt
 * cluster-wide; the backlog is bounded by `queueCapacity`; bad messages are refused before
 * anything is written; an unreachable Redis rejects sends with `unavailable` at once; a Redis
 * without persistence loses the backlog on a restart (with AOF nothing is lost: see
 * durable-chaos.test.ts); and when the
 * owner process is killed (SIGKILL) with sends in flight, the next owner delivers every one of
 * them, the cut-short ones marked as redeliveries; an append whose answer a lost connection took
 * is resent by the client and appends nothing twice.
 */
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer, connect as tcpConnect, type AddressInfo, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { Runtime } from '../src/runtime/runtime.js';
import type { Seen } from './fixtures/channels/receipt.js';
import { NodeProc } from './helpers/cluster-node.js';
import { fixtureUrl, waitFor } from './helpers/fixtures.js';
import { startRedis, type TestRedis } from './helpers/redis.js';

const silent = pino({ level: 'silent' });

/** Waits for an async condition (liveness bound only). */
async function eventually(condition: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`condition not met within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
const receiptChannel = fixtureUrl('channels/receipt').href;
const spec = (id: string, settings: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => ({ id, name: id, channelType: 'receipt', channel: receiptChannel, settings, ...extra });

let redis: TestRedis;
let raw: Redis;
const runtimes: Runtime<'cluster'>[] = [];
const procs: NodeProc[] = [];

async function start(nodeId: string, durability?: 'redis' | 'memory', url = redis.url): Promise<Runtime<'cluster'>> {
  const rt = await Runtime.start({
    logger: silent,
    shutdownMs: 500,
    heartbeat: { intervalMs: 250, maxMissed: 8 },
    cluster: { redis: url, nodeId, leaseMs: 1000, ...(durability ? { durability } : {}) },
  });
  runtimes.push(rt);
  return rt;
}

beforeAll(async () => {
  redis = await startRedis();
  raw = new Redis(redis.url, { lazyConnect: true });
  await raw.connect();
});
afterEach(async () => {
  await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
  await Promise.all(
    procs.splice(0).map((p) => {
      p.kill('SIGKILL');
      return p.exited;
    }),
  );
  await redis.flush();
});
afterAll(async () => {
  raw.disconnect();
  await redis.stop();
});

/**
 * A TCP proxy to the test's Redis that, once, swallows Redis's answer to the first client write
 * containing `marker` and closes that connection: Redis ran the command, its client never heard.
 */
async function answerLosingProxy(marker: string): Promise<{ url: string; lost: () => boolean; close: () => Promise<void> }> {
  const port = Number(new URL(redis.url).port);
  let armed = true;
  let lost = false;
  const server: Server = createServer((client) => {
    const upstream = tcpConnect(port, '127.0.0.1');
    let dropNext = false;
    client.on('data', (chunk: Buffer) => {
      if (armed && chunk.includes(marker)) {
        armed = false;
        dropNext = true;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!dropNext) return void client.write(chunk);
      lost = true;
      client.destroy();
      upstream.destroy();
    });
    const end = (): void => {
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `redis://127.0.0.1:${(server.address() as AddressInfo).port}`,
    lost: () => lost,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.unref();
      }),
  };
}

describe('durable sends', { timeout: 60_000 }, () => {
  it('a send from any node is delivered by the owner and answered with its receipt', async () => {
    const a = await start('a');
    const b = await start('b');
    for (let i = 0; i < 4; i++) await a.startInstance(spec(`d${i}`));
    await waitFor(() => a.cluster?.local().length === 2 && b.cluster?.local().length === 2, 15_000);
    await waitFor(() => [...a.listInstances(), ...b.listInstances()].filter((s) => s.status === 'connected').length === 4, 15_000);
    for (let i = 0; i < 4; i++) {
      for (const [from, rt] of [['a', a] as const, ['b', b] as const]) {
        const seen = (await rt.send(`d${i}`, { n: `${from}${i}` })) as Seen;
        expect(seen).toMatchObject({ n: `${from}${i}`, redelivery: false, pid: process.pid });
      }
    }
    // Many at once, in order per instance, from both nodes.
    const outcomes = await Promise.all([a.sendMany('d0', Array.from({ length: 200 }, (_, n) => ({ n }))), b.sendMany('d0', Array.from({ length: 200 }, (_, n) => ({ n: 1000 + n })))]);
    for (const list of outcomes) expect(list.every((o) => o.ok)).toBe(true);
    expect(outcomes[0].map((o) => (o.ok ? (o.receipt as Seen).n : -1))).toEqual(Array.from({ length: 200 }, (_, n) => n));
    // Settled entries are gone: a stream's length is its backlog.
    await eventually(async () => (await raw.xlen('{threadvisor}:q:d0')) === 0, 5_000);
  });

  it("ack: 'accepted' resolves once Redis holds the send; a delivered key answers with its first receipt on every node", async () => {
    const a = await start('a');
    const b = await start('b');
    await a.startInstance(spec('k0'));
    await waitFor(() => [...a.listInstances(), ...b.listInstances()].some((s) => s.instanceId === 'k0' && s.status === 'connected'), 15_000);
    const accepted = (await b.send('k0', { n: 1 }, { ack: 'accepted' })) as { accepted: boolean; entryId: string };
    expect(accepted).toMatchObject({ accepted: true, entryId: expect.stringMatching(/^\d+-\d+$/) });
    const first = (await a.send('k0', { id: 'msg-1', n: 2 })) as Seen;
    expect(first).toMatchObject({ n: 2, key: 'msg-1' });
    // The same key again, from the other node and with another body: the first receipt, not sent again.
    expect(await b.send('k0', { id: 'msg-1', n: 3 })).toEqual(first);
    expect(await a.send('k0', { n: 4 }, { idempotencyKey: 'msg-1' })).toEqual(first);
    await eventually(async () => (await raw.xlen('{threadvisor}:q:k0')) === 0, 5_000);
  });

  it('refuses a bad message before writing it, an unknown instance, bad options, and a full backlog', async () => {
    const a = await start('a');
    await a.startInstance(spec('slow', { delayMs: 500 }, { queueCapacity: 2 }));
    await waitFor(() => a.listInstances().some((s) => s.status === 'connected'), 15_000);
    await expect(a.send('slow', { n: new Date() })).rejects.toMatchObject({ code: 'invalid_message', details: expect.objectContaining({ path: '$.n' }) });
    await expect(a.send('slow', { n: () => 1 })).rejects.toMatchObject({ code: 'invalid_message' });
    await expect(a.send('slow', undefined)).rejects.toMatchObject({ code: 'invalid_message' });
    await expect(a.sendMany('slow', [{ n: 1 }, { n: NaN }])).rejects.toMatchObject({ code: 'invalid_message' });
    expect(await raw.xlen('{threadvisor}:q:slow')).toBe(0);
    await expect(a.send('slow', { n: 1 }, { ack: 'sometimes' } as never)).rejects.toMatchObject({ code: 'invalid_config' });
    await expect(a.send('nobody', { n: 1 })).rejects.toMatchObject({ code: 'not_found' });
    // The backlog (read or not, until settled) is bounded by queueCapacity.
    const held = [a.send('slow', { n: 1 }), a.send('slow', { n: 2 })];
    await expect(a.send('slow', { n: 3 })).rejects.toMatchObject({ code: 'queue_full' });
    await expect(a.send('slow', { n: 3 }, { ack: 'accepted' })).rejects.toMatchObject({ code: 'queue_full' });
    expect(((await Promise.all(held)) as Seen[]).map((s) => s.n)).toEqual([1, 2]);
    // waitForCapacity waits for room instead.
    const more = [a.send('slow', { n: 4 }), a.send('slow', { n: 5 }), a.send('slow', { n: 6 }, { waitForCapacity: true })];
    expect(((await Promise.all(more)) as Seen[]).map((s) => s.n)).toEqual([4, 5, 6]);
  });

  it("durability 'memory' keeps sends in the owner's memory: not_owner elsewhere, and no ack: 'accepted'", async () => {
    const a = await start('a', 'memory');
    await a.startInstance(spec('m0'));
    await waitFor(() => a.listInstances().some((s) => s.status === 'connected'), 15_000);
    expect(await a.send('m0', { n: 1 })).toMatchObject({ n: 1 });
    await expect(a.send('m0', { n: 1 }, { ack: 'accepted' })).rejects.toMatchObject({ code: 'invalid_config' });
    expect(await raw.exists('{threadvisor}:q:m0')).toBe(0);
  });

  it('an unreachable Redis rejects sends with unavailable at once; none hangs', async () => {
    const a = await start('a');
    await a.startInstance(spec('u0'));
    await waitFor(() => a.listInstances().some((s) => s.status === 'connected'), 15_000);
    await redis.kill();
    try {
      const t0 = Date.now();
      const results = await Promise.allSettled(Array.from({ length: 20 }, (_, n) => a.send('u0', { n })));
      expect(results.every((r) => r.status === 'rejected' && (r.reason as { code?: string }).code === 'unavailable')).toBe(true);
      expect(Date.now() - t0).toBeLessThan(10_000); // liveness: at once, not after a timeout per send
    } finally {
      await redis.restart();
    }
  });

  it('an instance removed with sends still queued in its stream: their senders get stopped at once', async () => {
    const a = await start('a');
    const b = await start('b');
    await a.startInstance(spec('s0', { delayMs: 2000 }));
    await waitFor(() => [...a.listInstances(), ...b.listInstances()].some((s) => s.status === 'connected'), 15_000);
    const sends = Array.from({ length: 5 }, (_, n) => b.send('s0', { n }).then(
      () => 'ok',
      (e: unknown) => (e as { code?: string }).code,
    ));
    await eventually(async () => (await raw.xlen('{threadvisor}:q:s0')) === 5, 5_000);
    await a.stopInstance('s0');
    const outcomes = await Promise.all(sends);
    // The one in the channel's hands may have been delivered; the others were not.
    expect(outcomes.filter((o) => o === 'stopped').length).toBeGreaterThanOrEqual(4);
    expect(await raw.exists('{threadvisor}:q:s0')).toBe(0);
  });

  it('without persistence a Redis restart loses the backlog, and the declarations with it: later sends reject not_found, none hangs', async () => {
    const a = await start('a');
    await a.startInstance(spec('p0', { delayMs: 1000 }));
    await waitFor(() => a.listInstances().some((s) => s.status === 'connected'), 15_000);
    const accepted = await Promise.all(Array.from({ length: 20 }, (_, n) => a.send('p0', { n }, { ack: 'accepted' })));
    expect(accepted.every((r) => (r as { accepted?: boolean }).accepted === true)).toBe(true);
    expect(await raw.xlen('{threadvisor}:q:p0')).toBeGreaterThan(10);
    await redis.restart(); // this redis-server keeps nothing on disk
    await eventually(async () => {
      const r = await a.send('p0', { n: 'after' }, { ack: 'accepted' }).then(
        () => 'accepted',
        (e: unknown) => (e as { code?: string }).code,
      );
      return r === 'not_found';
    }, 20_000);
    expect(await raw.xlen('{threadvisor}:q:p0')).toBe(0);
  });

  it('the owner killed with SIGKILL: the next owner delivers every accepted send, those cut short marked as redeliveries', async () => {
    const a = new NodeProc('a', redis.url, 1000);
    procs.push(a);
    await a.ready;
    const b = await start('b');
    await a.call('declare', { spec: spec('f0', { delayMs: 100 }) });
    await waitFor(() => a.running().has('f0') || b.cluster?.local().includes('f0') === true, 15_000);
    // Make sure a owns it: if b took it, move it by stopping b's copy through a fresh declaration on a.
    if (!a.running().has('f0')) {
      // b owns it: the roles swap (b is in this process and cannot be killed): start over with b stopped.
      await b.stop();
      await waitFor(() => a.running().has('f0'), 15_000);
    }
    const sender = b.state === 'running' ? b : await start('c');
    await waitFor(() => a.events.some((e) => e.event === 'instance:connected' && e.instanceId === 'f0'), 15_000);
    const sends = Array.from({ length: 40 }, (_, n) => sender.send('f0', { n }) as Promise<Seen>);
    // Some are delivered by a (100 ms each), then a dies with the rest accepted and in flight.
    await new Promise((resolve) => setTimeout(resolve, 450));
    a.kill('SIGKILL');
    await a.exited;
    const seen = await Promise.all(sends);
    expect(seen.map((s) => s.n)).toEqual(Array.from({ length: 40 }, (_, n) => n));
    const byA = seen.filter((s) => s.pid !== process.pid);
    const bySender = seen.filter((s) => s.pid === process.pid);
    expect(byA.length).toBeGreaterThan(0);
    expect(bySender.length).toBeGreaterThan(0);
    // The first one the new owner delivered was taken from the dead owner's pending entries.
    expect(bySender[0]?.redelivery).toBe(true);
    await eventually(async () => (await raw.xlen('{threadvisor}:q:f0')) === 0, 5_000);
  });

  it('an append whose answer a lost connection took is resent by the client and appends nothing twice', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'threadvisor-resend-'));
    const proxy = await answerLosingProxy('lost-answer');
    try {
      const a = await start('a', undefined, proxy.url);
      await a.startInstance({ id: 'r0', name: 'r0', channelType: 'ledger', channel: fixtureUrl('channels/ledger').href, settings: { dir } });
      await waitFor(() => a.listInstances().some((s) => s.instanceId === 'r0' && s.status === 'connected'), 15_000);
      expect(await a.send('r0', { s: 'before', q: 0 })).toEqual({ ok: true });
      // Redis appends this one, its answer is lost with the connection, the client sends the call again.
      expect(await a.send('r0', { s: 'lost-answer', q: 1 })).toEqual({ ok: true });
      expect(proxy.lost()).toBe(true);
      expect(await a.send('r0', { s: 'after', q: 2 })).toEqual({ ok: true });
      await eventually(async () => (await raw.xlen('{threadvisor}:q:r0')) === 0, 5_000);
      const lines = readdirSync(dir).flatMap((f) => readFileSync(join(dir, f), 'utf8').split('\n').filter((l) => l !== ''));
      expect(lines.map((l) => (JSON.parse(l) as { s: string }).s)).toEqual(['before', 'lost-answer', 'after']);
      // The answer kept for the resend is gone once it reached the node.
      await eventually(async () => (await raw.keys('{threadvisor}:ans:*')).length === 0, 5_000);
    } finally {
      await Promise.all(runtimes.splice(0).map((rt) => rt.stop()));
      await proxy.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
