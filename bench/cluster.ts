/**
 * Cluster mode with a real `redis-server` (started here on a free port) and real node processes
 * (bench/cluster-node.ts, forked), each figure next to a baseline measured in the same run:
 * - failover: 200 `loopback` instances on 2 nodes (leaseMs 2000); the node running 100 of them
 *   is killed with SIGKILL; the time from the kill until all 100 are `connected` on the survivor,
 *   as a multiple of leaseMs (info), and against leaseMs + the time the survivor's process takes to
 *   spawn 100 instances (a local-mode runtime of the same options, measured first) + 1 s
 *   (target <= 1x);
 * - graceful hand-off: a second node joins (the survivor hands it half), then a third: for every
 *   instance that moved to the third, the time from its `instance:stopped` on the old node to its
 *   `instance:connected` on the new one; the longest (info, beside one tick, leaseMs / 3);
 * - no overlap over the whole run: two nodes never ran one instance at the same time (from their
 *   connected / stopped reports; the killed node's copies end at the kill) (target 0);
 * - Redis load at steady state: commands per second (`INFO stats` total_commands_processed, which
 *   counts the commands the tick script runs inside Redis too, our own INFO calls left out) with
 *   1,000 instances on 3 nodes vs 100 on the same 3 nodes (target <= 1.5x: the goal is a cost
 *   independent of the instance count); beside it, the script calls (round trips) per second and
 *   Redis's own CPU (info).
 * The script fails (exit 1) when a node process or one of its worker threads is left at the end.
 */
import { fork, type ChildProcess } from 'node:child_process';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import { startRedis } from '../test/helpers/redis.js';
import { compare, pct, quick, report, type Comparison } from './lib.js';

const LEASE_MS = 2000;
const TICK_MS = LEASE_MS / 3;
/** The steady-state window over which Redis's counters are read: a whole number of ticks. */
const WINDOW_MS = Math.round(TICK_MS * (quick ? 6 : 12));
const FAILOVER_N = 100;
const SMALL = 100;
const LARGE = 1000;
const r2 = (x: number): number => Math.round(x * 100) / 100;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** A deadline for a race: it keeps nothing alive once the race is won. */
const timeout = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

interface Ev {
  event: string;
  nodeId: string;
  instanceId?: string;
  reason?: string;
  at: number;
}

/** A forked node process, driven over IPC; it keeps what its node runs from its reports. */
class NodeProc {
  readonly events: Ev[] = [];
  /** Ids connected on this node and not stopped since. */
  readonly on = new Set<string>();
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #seq = 0;
  readonly ready: Promise<void>;
  readonly exited: Promise<number | null>;
  #exitCode: number | null | undefined;

  constructor(
    readonly id: string,
    redisUrl: string,
  ) {
    const file = fileURLToPath(new URL('./cluster-node.js', import.meta.url));
    this.#child = fork(file, [redisUrl, id, String(LEASE_MS)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let readyResolve!: () => void;
    let readyReject!: (e: Error) => void;
    this.ready = new Promise((resolve, reject) => ((readyResolve = resolve), (readyReject = reject)));
    this.exited = new Promise((r) =>
      this.#child.once('exit', (code) => {
        this.#exitCode = code;
        readyReject(new Error(`node ${id} exited (${code}) before it was ready`));
        for (const p of this.#pending.values()) p.reject(new Error(`node ${id} exited`));
        this.#pending.clear();
        r(code);
      }),
    );
    this.#child.on('message', (m: Record<string, unknown>) => {
      if (m.ready) return readyResolve();
      if (typeof m.re === 'number') {
        const p = this.#pending.get(m.re);
        this.#pending.delete(m.re);
        if (m.ok) p?.resolve(m.value);
        else p?.reject(new Error(`${id}: ${String((m.error as { message?: string }).message)}`));
        return;
      }
      const e = m as unknown as Ev;
      this.events.push(e);
      if (!e.instanceId) return;
      if (e.event === 'instance:connected') this.on.add(e.instanceId);
      if (e.event === 'instance:stopped') this.on.delete(e.instanceId);
    });
  }

  get alive(): boolean {
    return this.#exitCode === undefined;
  }

  call<T = unknown>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const re = ++this.#seq;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(re, { resolve: resolve as (v: unknown) => void, reject });
      this.#child.send({ re, cmd, ...args });
    });
  }

  kill(signal: NodeJS.Signals): void {
    if (this.alive) this.#child.kill(signal);
  }
}

async function waitFor(cond: () => boolean, timeoutMs: number, what: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
    await sleep(20);
  }
}

const spec = (id: string) => ({ id, name: id, channelType: 'loopback', channel: 'loopback' });
const ids = (prefix: string, from: number, to: number): string[] => Array.from({ length: to - from }, (_, i) => `${prefix}${from + i}`);
const sizes = (ps: NodeProc[]): string => ps.map((p) => `${p.id}=${p.on.size}`).join(' ');

/** Each of `ps` runs its fair share of `n`, every one of the `n` exactly once. */
function balanced(ps: NodeProc[], n: number): boolean {
  const share = Math.ceil(n / ps.length);
  const all = new Set<string>();
  let sum = 0;
  for (const p of ps) {
    if (p.on.size > share) return false;
    sum += p.on.size;
    for (const id of p.on) all.add(id);
  }
  return sum === n && all.size === n;
}

/** Waits until no node reported anything for `quietMs`. */
async function calm(ps: NodeProc[], quietMs: number, timeoutMs: number): Promise<void> {
  const last = (): number => Math.max(0, ...ps.map((p) => p.events[p.events.length - 1]?.at ?? 0));
  await waitFor(() => Date.now() - last() >= quietMs, timeoutMs, () => `${quietMs} ms without a cluster event`);
}

/** Pairs of nodes that ran one instance at the same time (a killed node's copies end at its kill). */
function overlaps(ps: NodeProc[], killedAt: Map<string, number>): string[] {
  const spans = new Map<string, { node: string; from: number; to: number }[]>();
  for (const p of ps) {
    const open = new Map<string, number>();
    for (const e of p.events) {
      if (!e.instanceId) continue;
      if (e.event === 'instance:connected') open.set(e.instanceId, e.at);
      if (e.event === 'instance:stopped' && open.has(e.instanceId)) {
        spans.set(e.instanceId, [...(spans.get(e.instanceId) ?? []), { node: p.id, from: open.get(e.instanceId) as number, to: e.at }]);
        open.delete(e.instanceId);
      }
    }
    for (const [id, from] of open) spans.set(id, [...(spans.get(id) ?? []), { node: p.id, from, to: killedAt.get(p.id) ?? Infinity }]);
  }
  const bad: string[] = [];
  for (const [id, list] of spans) {
    for (const a of list) for (const b of list) if (a.node < b.node && a.from < b.to && b.from < a.to) bad.push(`${id}: ${a.node} and ${b.node}`);
  }
  return bad;
}

/** For each instance that connected on `to` after `since`: its stop on another node → that connected, ms. */
function gaps(to: NodeProc, from: NodeProc[], since: number): number[] {
  const out: number[] = [];
  for (const e of to.events) {
    if (e.event !== 'instance:connected' || e.at < since || !e.instanceId) continue;
    let stoppedAt = -Infinity;
    for (const p of from) for (const s of p.events) if (s.event === 'instance:stopped' && s.instanceId === e.instanceId && s.at <= e.at && s.at > stoppedAt) stoppedAt = s.at;
    if (stoppedAt > -Infinity) out.push(e.at - stoppedAt);
  }
  return out;
}

interface RedisLoad {
  windowMs: number;
  /** Every command Redis ran, the tick script's own included (our INFO calls left out), per second. */
  commandsPerSec: number;
  /** Script calls (EVALSHA / EVAL: the nodes' ticks and other scripted calls), per second. */
  scriptCallsPerSec: number;
  /** Commands per script call (the tick script's work inside Redis, with the few other commands). */
  commandsPerScriptCall: number;
  /** Redis's own CPU (user + sys), ms per second. */
  redisCpuMsPerSec: number;
  top: Record<string, number>;
}

function parseInfo(text: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of text.split('\r\n')) {
    const i = line.indexOf(':');
    if (i > 0 && !line.startsWith('#')) m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}

async function sample(admin: Redis): Promise<{ at: number; total: number; cpu: number; calls: Map<string, number> }> {
  const info = parseInfo(await admin.info('everything'));
  const calls = new Map<string, number>();
  for (const [k, v] of info) if (k.startsWith('cmdstat_')) calls.set(k.slice(8), Number(/calls=(\d+)/.exec(v)?.[1] ?? 0));
  return { at: performance.now(), total: Number(info.get('total_commands_processed')), cpu: Number(info.get('used_cpu_user')) + Number(info.get('used_cpu_sys')), calls };
}

/** Redis's counters over `WINDOW_MS` of steady state. */
async function redisLoad(admin: Redis): Promise<RedisLoad> {
  const a = await sample(admin);
  await sleep(WINDOW_MS);
  const b = await sample(admin);
  const d = (k: string): number => (b.calls.get(k) ?? 0) - (a.calls.get(k) ?? 0);
  const s = (b.at - a.at) / 1000;
  const total = b.total - a.total - d('info');
  const scripts = d('evalsha') + d('eval');
  const top = Object.fromEntries(
    [...b.calls.keys()]
      .filter((k) => k !== 'info' && d(k) > 0)
      .map((k) => [k, Math.round(d(k) / s)] as const)
      .sort((x, y) => y[1] - x[1]),
  );
  return { windowMs: Math.round(b.at - a.at), commandsPerSec: Math.round(total / s), scriptCallsPerSec: r2(scripts / s), commandsPerScriptCall: r2(total / Math.max(1, scripts)), redisCpuMsPerSec: r2(((b.cpu - a.cpu) * 1000) / s), top };
}

// ─────────────────────────────────────────────────────────── main

const tScript = performance.now();
const loadBefore = os.loadavg();
const redis = await startRedis();
const admin = new Redis(redis.url, { lazyConnect: true });
await admin.connect();
const procs: NodeProc[] = [];
const node = async (id: string): Promise<NodeProc> => {
  const p = new NodeProc(id, redis.url);
  procs.push(p);
  await p.ready;
  return p;
};
const log = (line: string): void => console.log(`[${((performance.now() - tScript) / 1000).toFixed(1)}s] ${line}`);
let leftover = 0;
let threadsLeft = 0;
let failed = false;

try {
  // ── failover: 200 on a and b; a (100) killed with SIGKILL
  const [a, b] = await Promise.all([node('a'), node('b')]);
  const spawnMs = await b.call<number>('spawn', { n: FAILOVER_N });
  log(`spawn of ${FAILOVER_N} instances (local runtime in node b's process): ${Math.round(spawnMs)} ms`);
  const first = ids('i', 0, 2 * FAILOVER_N);
  await a.call('declare', { specs: first.map(spec) });
  await waitFor(() => balanced([a, b], first.length), 60_000, () => `200 instances on a and b (${sizes([a, b])})`);
  await calm([a, b], TICK_MS, 30_000);
  const lost = [...a.on];
  const killedAt = new Map<string, number>();
  const tKill = Date.now();
  a.kill('SIGKILL');
  killedAt.set('a', tKill);
  await a.exited;
  await waitFor(() => lost.every((id) => b.on.has(id)), 60_000, () => `a's ${lost.length} instances on b (${b.on.size} there)`);
  const lostSet = new Set(lost);
  const failoverMs = Math.max(...b.events.filter((e) => e.event === 'instance:connected' && e.at >= tKill && lostSet.has(e.instanceId as string)).map((e) => e.at)) - tKill;
  const acquiredAt = Math.min(...b.events.filter((e) => e.event === 'cluster:acquired' && e.at >= tKill).map((e) => e.at)) - tKill;
  log(`failover: ${lost.length} instances of a on b ${failoverMs} ms after the kill (first acquired after ${acquiredAt} ms)`);

  // ── hand-off: c joins (b hands it half), then d (b and c hand it a third)
  const tC = Date.now();
  const c = await node('c');
  await waitFor(() => balanced([b, c], first.length), 60_000, () => `200 instances on b and c (${sizes([b, c])})`);
  await calm([b, c], TICK_MS, 30_000);
  const gapsC = gaps(c, [b], tC);
  // b hands its excess off one instance after the other inside one tick, renewing nothing meanwhile.
  const releasedC = b.events.filter((e) => e.event === 'cluster:released' && e.at >= tC).map((e) => e.at);
  const handoffLoopMs = releasedC.length > 0 ? Math.max(...releasedC) - Math.min(...b.events.filter((e) => e.event === 'instance:stopped' && e.at >= tC).map((e) => e.at)) : 0;
  log(`c joined: ${c.on.size} handed off to it, longest gap ${Math.max(...gapsC)} ms`);
  const tD = Date.now();
  const d = await node('d');
  await waitFor(() => balanced([b, c, d], first.length), 60_000, () => `200 instances on b, c and d (${sizes([b, c, d])})`);
  await calm([b, c, d], TICK_MS, 30_000);
  const gapsD = gaps(d, [b, c], tD);
  log(`d joined: ${d.on.size} handed off to it, longest gap ${Math.max(...gapsD)} ms`);

  // ── Redis load: 100, then 1000 instances on b, c, d
  const three = [b, c, d];
  await d.call('undeclare', { ids: first.slice(SMALL) });
  await waitFor(() => balanced(three, SMALL), 60_000, () => `${SMALL} instances on b, c and d (${sizes(three)})`);
  await calm(three, 2 * TICK_MS, 30_000);
  const small = await redisLoad(admin);
  log(`${SMALL} instances on 3 nodes: ${small.commandsPerSec} commands/s, ${small.scriptCallsPerSec} script calls/s`);
  const more = ids('j', 0, LARGE - SMALL);
  await b.call('declare', { specs: more.map(spec) });
  await waitFor(() => balanced(three, LARGE), 120_000, () => `${LARGE} instances on b, c and d (${sizes(three)})`);
  await calm(three, 2 * TICK_MS, 30_000);
  const large = await redisLoad(admin);
  log(`${LARGE} instances on 3 nodes: ${large.commandsPerSec} commands/s, ${large.scriptCallsPerSec} script calls/s`);

  // ── stop: every worker thread and node process must be gone
  const tStop = performance.now();
  const left = await Promise.all(three.map((p) => p.call<number>('stop').catch(() => Infinity)));
  threadsLeft = left.reduce((x, y) => x + y, 0);
  const stopMs = performance.now() - tStop;
  await Promise.race([Promise.all(procs.map((p) => p.exited)), timeout(10_000)]);
  leftover = procs.filter((p) => p.alive).length;
  const bad = overlaps(procs, killedAt);
  const moves = procs.reduce((n, p) => n + p.events.filter((e) => e.event === 'cluster:acquired').length, 0) - first.length - more.length;
  const degraded = procs.flatMap((p) => p.events.filter((e) => e.event === 'cluster:degraded').map((e) => `${p.id}: ${e.reason ?? ''}`));
  if (bad.length > 0) console.error(`overlaps: ${bad.slice(0, 10).join('; ')}`);
  if (degraded.length > 0) console.error(`cluster:degraded: ${degraded.slice(0, 5).join('; ')}`);

  const rows: Comparison[] = [
    compare(`(info) failover after SIGKILL: kill → all ${lost.length} running on the survivor (200 on 2 nodes)`, 'ms', failoverMs, 'leaseMs', LEASE_MS),
    compare(`failover after SIGKILL: kill → all ${lost.length} running on the survivor`, 'ms', failoverMs, `leaseMs + spawn of ${FAILOVER_N} (${Math.round(spawnMs)} ms) + 1 s`, Math.round(LEASE_MS + spawnMs + 1000), { max: 1 }),
    compare(`(info) graceful hand-off, a third node joins: longest stop → connected elsewhere (${gapsD.length} moved)`, 'ms', Math.max(...gapsD), 'one tick (leaseMs / 3)', Math.round(TICK_MS)),
    compare(`(info) graceful hand-off, a second node joins: longest stop → connected elsewhere (${gapsC.length} moved)`, 'ms', Math.max(...gapsC), 'one tick (leaseMs / 3)', Math.round(TICK_MS)),
    compare('instances run by two nodes at once, whole run', 'instances', bad.length, 'acquisitions of an instance placed before (moves)', moves, { max: 0 }),
    compare(`Redis commands/s at steady state, ${LARGE} instances on 3 nodes`, 'cmds/s', large.commandsPerSec, `${SMALL} instances on 3 nodes`, small.commandsPerSec, { max: 1.5 }),
    compare(`(info) Redis script calls (round trips)/s at steady state, ${LARGE} instances on 3 nodes`, 'calls/s', large.scriptCallsPerSec, `${SMALL} instances on 3 nodes`, small.scriptCallsPerSec),
    compare(`(info) Redis CPU at steady state, ${LARGE} instances on 3 nodes`, 'ms/s', large.redisCpuMsPerSec, `${SMALL} instances on 3 nodes`, small.redisCpuMsPerSec),
    compare('node processes and worker threads left after stop', '', leftover + threadsLeft, 'node processes started', procs.length, { max: 0 }),
  ];
  report('cluster', rows, {
    leaseMs: LEASE_MS,
    failover: { instances: lost.length, failoverMs, firstAcquiredMs: acquiredAt, spawnMs: Math.round(spawnMs) },
    handoff: {
      secondJoins: { moved: gapsC.length, maxMs: Math.max(...gapsC), medianMs: pct(gapsC, 50), handoffLoopMs, fenceAfterMs: LEASE_MS - Math.floor(LEASE_MS / 3) },
      thirdJoins: { moved: gapsD.length, maxMs: Math.max(...gapsD), medianMs: pct(gapsD, 50) },
    },
    overlaps: bad.length,
    degraded,
    redis: { small: { instances: SMALL, nodes: 3, ...small }, large: { instances: LARGE, nodes: 3, ...large } },
    stopMs: Math.round(stopMs),
    threadsLeft,
    processesLeft: leftover,
    totalSeconds: Math.round((performance.now() - tScript) / 100) / 10,
    loadAverage: { before: loadBefore.map(r2), after: os.loadavg().map(r2) },
  });
  if (bad.length > 0) failed = true;
} catch (err) {
  console.error(err);
  failed = true;
} finally {
  leftover = Math.max(leftover, procs.filter((p) => p.alive).length);
  for (const p of procs) p.kill('SIGKILL');
  await Promise.race([Promise.all(procs.map((p) => p.exited)), timeout(5000)]);
  admin.disconnect();
  await redis.stop();
}
console.log(`node processes left: ${leftover}; worker threads left in the nodes after stop(): ${threadsLeft}`);
if (failed || leftover > 0 || threadsLeft > 0) process.exitCode = 1;
