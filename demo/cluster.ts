/**
 * Cluster demo: a `redis-server` started here on a free loopback port, 3 node processes
 * (demo/cluster-node.ts, each a Runtime in cluster mode), 24 `loopback` instances declared
 * cluster-wide. It shows which node runs what, live; after a few seconds it kills one node with
 * SIGKILL and shows its instances moving to the survivors once their leases expire. It ends with
 * a summary: overlaps (two nodes running one instance at the same time, from the nodes' own
 * connected / stopped reports; the killed node's copies end at the kill), the longest outage of an
 * instance, and the instances per node at the end. Exit 0 when there was no overlap and every
 * instance runs at the end; 1 otherwise; 2 for bad flags or no `redis-server` on PATH.
 *
 *   npm run demo:cluster -- [--duration <s>] [--nodes <n>] [--instances <n>] [--lease-ms <ms>] [--json]
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const USAGE = `usage: npm run demo:cluster -- [flags]
  --duration <s>     how long it runs (default 15, at least 6)
  --nodes <n>        node processes (default 3, 2 to 10)
  --instances <n>    loopback instances declared (default 24, 1 to 500)
  --lease-ms <ms>    cluster.leaseMs (default 2000, 300 to 10000): a killed node's instances move after at most this long
  --json             the summary as one JSON object on the last line of stdout (everything else on stderr)
  --help             this text`;

interface Args {
  durationMs: number;
  nodes: number;
  instances: number;
  leaseMs: number;
  json: boolean;
}

function parseCli(): Args {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        duration: { type: 'string', default: '15' },
        nodes: { type: 'string', default: '3' },
        instances: { type: 'string', default: '24' },
        'lease-ms': { type: 'string', default: '2000' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n\n${USAGE}\n`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const num = (name: string, raw: string, min: number, max: number, integer: boolean): number => {
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      process.stderr.write(`--${name} must be ${integer ? 'an integer' : 'a number'} from ${min} to ${max}, got ${raw}\n\n${USAGE}\n`);
      process.exit(2);
    }
    return n;
  };
  return {
    durationMs: Math.round(num('duration', values.duration, 6, 3600, false) * 1000),
    nodes: num('nodes', values.nodes, 2, 10, true),
    instances: num('instances', values.instances, 1, 500, true),
    leaseMs: num('lease-ms', values['lease-ms'], 300, 10_000, true),
    json: values.json,
  };
}

const args = parseCli();
const out = args.json ? process.stderr : process.stdout;
const tty = out.isTTY === true;
const t0 = Date.now();
const stamp = (at = Date.now()): string => `${((at - t0) / 1000).toFixed(1)}s`;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** A deadline for a race: it keeps nothing alive once the race is won. */
const timeout = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

// ─────────────────────────────────────────────────────────── redis-server

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Starts `redis-server` from PATH on a free loopback port, without persistence. */
async function startRedis(): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] });
  await new Promise<void>((resolve) => {
    let log = '';
    const timer = setTimeout(() => fail(`redis-server did not start on port ${port}:\n${log.slice(-1000)}`), 10_000);
    const fail = (message: string): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      process.stderr.write(`${message}\n`);
      process.exit(2);
    };
    child.once('error', (err: NodeJS.ErrnoException) =>
      fail(
        err.code === 'ENOENT'
          ? 'redis-server is not on PATH: the cluster demo starts its own Redis (>= 6.2). Install it (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis) and run it again.'
          : `redis-server could not be started: ${err.message}`,
      ),
    );
    child.once('exit', (code) => fail(`redis-server exited (${code}) before it was ready:\n${log.slice(-1000)}`));
    const onData = (chunk: Buffer): void => {
      log += chunk.toString();
      if (log.includes('Ready to accept connections')) {
        clearTimeout(timer);
        child.removeAllListeners('exit');
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
  });
  return { url: `redis://127.0.0.1:${port}`, child };
}

// ─────────────────────────────────────────────────────────── node processes

interface Ev {
  event: string;
  nodeId: string;
  instanceId?: string;
  other?: string;
  at: number;
}

class NodeProc {
  readonly events: Ev[] = [];
  /** Ids connected on this node and not stopped since. */
  readonly on = new Set<string>();
  readonly ready: Promise<void>;
  readonly exited: Promise<void>;
  killedAt: number | undefined;
  #alive = true;
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #seq = 0;

  constructor(
    readonly id: string,
    redisUrl: string,
    onEvent: (p: NodeProc, e: Ev) => void,
  ) {
    this.#child = fork(fileURLToPath(new URL('./cluster-node.js', import.meta.url)), [redisUrl, id, String(args.leaseMs)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let ready!: () => void;
    let notReady!: (e: Error) => void;
    this.ready = new Promise((resolve, reject) => ((ready = resolve), (notReady = reject)));
    this.exited = new Promise((resolve) =>
      this.#child.once('exit', (code, signal) => {
        this.#alive = false;
        notReady(new Error(`${id} exited (${signal ?? code}) before it was ready`));
        for (const p of this.#pending.values()) p.reject(new Error(`${id} exited`));
        resolve();
      }),
    );
    this.#child.on('message', (m: Record<string, unknown>) => {
      if (m.ready) return ready();
      if (typeof m.re === 'number') {
        const p = this.#pending.get(m.re);
        this.#pending.delete(m.re);
        if (m.ok) p?.resolve(m.value);
        else p?.reject(new Error(`${id}: ${String((m.error as { message?: string }).message)}`));
        return;
      }
      const e = m as unknown as Ev;
      this.events.push(e);
      if (e.instanceId && e.event === 'instance:connected') this.on.add(e.instanceId);
      if (e.instanceId && e.event === 'instance:stopped') this.on.delete(e.instanceId);
      onEvent(this, e);
    });
  }

  get alive(): boolean {
    return this.#alive && this.killedAt === undefined;
  }

  call<T = unknown>(cmd: string, a: Record<string, unknown> = {}): Promise<T> {
    const re = ++this.#seq;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(re, { resolve: resolve as (v: unknown) => void, reject });
      this.#child.send({ re, cmd, ...a });
    });
  }

  kill(): void {
    if (!this.#alive) return;
    this.killedAt ??= Date.now();
    this.#child.kill('SIGKILL');
  }
}

// ─────────────────────────────────────────────────────────── display

let drawn = 0;
/** The live block is drawn (a terminal, until the summary). */
let live = tty;
function block(): string[] {
  const lines = nodes.map((p) => {
    const state = p.killedAt !== undefined ? 'killed' : 'alive ';
    const list = [...(p.alive ? p.on : [])].map((id) => id.replace(/^inst-0*/, '')).sort((a, b) => Number(a) - Number(b));
    const shown = list.length > 24 ? `${list.slice(0, 24).join(' ')} …` : list.join(' ');
    return `  ${p.id.padEnd(8)} ${state} ${String(list.length).padStart(4)}  ${'█'.repeat(Math.min(40, list.length)).padEnd(40)} ${shown}`.trimEnd();
  });
  const running = new Set(nodes.flatMap((p) => (p.alive ? [...p.on] : []))).size;
  return [`[${stamp()}] running ${running}/${args.instances}`, ...lines];
}
function erase(): void {
  if (live && drawn > 0) out.write(`\x1b[${drawn}F\x1b[J`);
  drawn = 0;
}
function draw(): void {
  if (!live) return;
  erase();
  const lines = block();
  out.write(`${lines.join('\n')}\n`);
  drawn = lines.length;
}
/** A line above the live block (or a plain log line when not a terminal). */
function say(line: string): void {
  erase();
  out.write(`${line}\n`);
  draw();
}
let lastLogged = '';
/** Not a terminal: a line with the counts per node each second, when they changed. */
function logCounts(): void {
  const line = nodes.map((p) => (p.alive ? `${p.id}: ${p.on.size}` : `${p.id}: killed`)).join(', ');
  if (line === lastLogged) return;
  lastLogged = line;
  out.write(`[${stamp()}] ${line}\n`);
}

// ─────────────────────────────────────────────────────────── run

const ids = Array.from({ length: args.instances }, (_, i) => `inst-${String(i).padStart(2, '0')}`);
let victim: NodeProc | undefined;
/** Where each instance of the victim was when it was killed. */
const victimHad = new Set<string>();

function onEvent(p: NodeProc, e: Ev): void {
  if (!victim?.killedAt || p === victim || e.event !== 'instance:connected' || !e.instanceId || !victimHad.has(e.instanceId)) return;
  say(`[${stamp(e.at)}] ${e.instanceId} ${victim.id} → ${p.id}, ${((e.at - victim.killedAt) / 1000).toFixed(2)} s after the kill`);
}

const redis = await startRedis();
const nodes: NodeProc[] = Array.from({ length: args.nodes }, (_, i) => new NodeProc(`node-${i + 1}`, redis.url, onEvent));
let exitCode: number;
let summary: Record<string, unknown> | undefined;
const painter = setInterval(() => (tty ? draw() : logCounts()), tty ? 200 : 1000);

/** Every instance runs on exactly one live node. */
const allRunning = (): boolean => {
  const up = nodes.filter((p) => p.alive);
  const all = new Set(up.flatMap((p) => [...p.on]));
  return all.size === ids.length && up.reduce((n, p) => n + p.on.size, 0) === ids.length;
};
async function waitFor(cond: () => boolean, until: number): Promise<boolean> {
  while (!cond() && Date.now() < until) await sleep(25);
  return cond();
}

try {
  await Promise.all(nodes.map((p) => p.ready));
  say(`[${stamp()}] redis-server at ${redis.url}; ${nodes.length} nodes up (leaseMs ${args.leaseMs}); declaring ${ids.length} loopback instances on ${nodes[0]?.id}`);
  await nodes[0]?.call('declare', { specs: ids.map((id) => ({ id, name: id, channelType: 'loopback', channel: 'loopback' })) });
  if (!(await waitFor(allRunning, Date.now() + 30_000))) throw new Error('the instances did not all start within 30 s');
  say(`[${stamp()}] all ${ids.length} running: ${nodes.map((p) => `${p.id} ${p.on.size}`).join(', ')}`);

  // The kill: a few seconds in, the node running the most instances.
  await sleep(Math.max(1500, t0 + args.durationMs * 0.3 - Date.now()));
  victim = [...nodes].sort((a, b) => b.on.size - a.on.size)[0] as NodeProc;
  for (const id of victim.on) victimHad.add(id);
  victim.kill();
  say(`[${stamp()}] SIGKILL ${victim.id} (${victimHad.size} instances): its leases expire within ${args.leaseMs} ms, then the others take them at their next tick`);
  await victim.exited;

  // Until the end, and past it while the instances have not all moved yet.
  await sleep(Math.max(0, t0 + args.durationMs - Date.now()));
  const everyOneRuns = await waitFor(allRunning, Date.now() + 2 * args.leaseMs + 10_000);
  const perNode = Object.fromEntries(nodes.filter((p) => p.alive).map((p) => [p.id, p.on.size]));
  clearInterval(painter);
  if (tty) draw();
  else logCounts();
  live = false;
  drawn = 0;

  // Stop the survivors gracefully: every lease released, every copy reported stopped.
  await Promise.all(nodes.filter((p) => p.alive).map((p) => p.call('stop').catch(() => undefined)));
  await Promise.race([Promise.all(nodes.map((p) => p.exited)), timeout(10_000)]);

  const spans = spansOf(nodes);
  const overlaps = overlapsOf(spans);
  const outages = outagesOf(spans);
  const longest = outages.reduce<{ instanceId: string; ms: number; from: string; to: string } | null>((m, o) => (m === null || o.ms > m.ms ? o : m), null);
  const moved = outages.filter((o) => o.from === victim?.id);
  summary = {
    ok: overlaps.length === 0 && everyOneRuns,
    nodes: nodes.length,
    instances: ids.length,
    leaseMs: args.leaseMs,
    killed: { nodeId: victim.id, atMs: (victim.killedAt ?? t0) - t0, instances: victimHad.size },
    moved: moved.length,
    lastMovedAfterKillMs: moved.length > 0 ? Math.max(...moved.map((o) => o.at + t0 - (victim?.killedAt ?? 0))) : null,
    overlaps: overlaps.length,
    overlapDetails: overlaps.slice(0, 10),
    longestOutageMs: longest?.ms ?? 0,
    longestOutage: longest,
    allRunningAtEnd: everyOneRuns,
    perNode,
    durationMs: Date.now() - t0,
  };
  say('');
  say(`summary: ${summary.ok ? 'OK' : 'FAILED'}`);
  say(`  ${victim.id} killed at ${stamp(victim.killedAt)} with ${victimHad.size} instances; ${moved.length} moved, the last ${(((summary.lastMovedAfterKillMs as number | null) ?? 0) / 1000).toFixed(2)} s after the kill (leaseMs ${args.leaseMs})`);
  say(`  overlaps (two nodes running one instance at once): ${overlaps.length}${overlaps.length ? `: ${overlaps.slice(0, 5).join('; ')}` : ''}`);
  say(`  longest outage of an instance: ${longest ? `${(longest.ms / 1000).toFixed(2)} s (${longest.instanceId}, ${longest.from} → ${longest.to})` : 'none'}`);
  say(`  instances per node at the end: ${Object.entries(perNode).map(([n, c]) => `${n} ${c}`).join(', ')}; every instance running: ${everyOneRuns}`);
  exitCode = summary.ok ? 0 : 1;
} catch (err) {
  clearInterval(painter);
  live = false;
  drawn = 0;
  process.stderr.write(`cluster demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
  exitCode = 1;
} finally {
  clearInterval(painter);
  for (const p of nodes) p.kill();
  await Promise.race([Promise.all(nodes.map((p) => p.exited)), timeout(5000)]);
  redis.child.kill('SIGKILL');
}
if (args.json && summary) process.stdout.write(`${JSON.stringify(summary)}\n`);
process.exitCode = exitCode;

// ─────────────────────────────────────────────────────────── summary

interface Span {
  instanceId: string;
  nodeId: string;
  from: number;
  /** Its stop, or the kill of its node; Infinity while it runs. */
  to: number;
}

/** Each node's copies of each instance, from its connected / stopped reports (a killed node's end at the kill). */
function spansOf(ps: NodeProc[]): Span[] {
  const spans: Span[] = [];
  for (const p of ps) {
    const open = new Map<string, number>();
    for (const e of p.events) {
      if (!e.instanceId) continue;
      if (e.event === 'instance:connected') open.set(e.instanceId, e.at);
      if (e.event === 'instance:stopped' && open.has(e.instanceId)) {
        spans.push({ instanceId: e.instanceId, nodeId: p.id, from: open.get(e.instanceId) as number, to: e.at });
        open.delete(e.instanceId);
      }
    }
    for (const [instanceId, from] of open) spans.push({ instanceId, nodeId: p.id, from, to: p.killedAt ?? Infinity });
  }
  return spans;
}

function overlapsOf(spans: Span[]): string[] {
  const bad: string[] = [];
  for (const a of spans) {
    for (const b of spans) {
      if (a.instanceId === b.instanceId && a.nodeId < b.nodeId && a.from < b.to && b.from < a.to) bad.push(`${a.instanceId}: ${a.nodeId} and ${b.nodeId}`);
    }
  }
  return bad;
}

/** Each time an instance ran again after a copy ended (not the final stop of the demo): the gap. */
function outagesOf(spans: Span[]): { instanceId: string; ms: number; from: string; to: string; at: number }[] {
  const byId = new Map<string, Span[]>();
  for (const s of spans) byId.set(s.instanceId, [...(byId.get(s.instanceId) ?? []), s]);
  const out: { instanceId: string; ms: number; from: string; to: string; at: number }[] = [];
  for (const [instanceId, list] of byId) {
    list.sort((a, b) => a.from - b.from);
    for (let i = 1; i < list.length; i++) {
      const prev = list[i - 1] as Span;
      const next = list[i] as Span;
      out.push({ instanceId, ms: Math.max(0, next.from - prev.to), from: prev.nodeId, to: next.nodeId, at: next.from - t0 });
    }
  }
  return out;
}
