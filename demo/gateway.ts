/**
 * The gateway demo: a small chat gateway built only on threadvisor's public API.
 *
 * - N instances (one worker thread each, or `--per-worker` of them per worker) long-poll the
 *   platform simulator (`demo/platform-sim.ts`, started in this process on 127.0.0.1) over real
 *   HTTP with the `gateway-sim` channel (`threadvisor/http`), a token each; its updates spread
 *   over many rooms. `--loopback`: in-memory `loopback` instances instead, no network.
 *   Over HTTP, the provider burst and the revoked token are the simulator's own (5xx, 401), and
 *   the summary adds the simulator's counters: 429s honoured, requests over the limit (must be
 *   0: every retry waited for its `retry_after`) and 409s (must be 0).
 * - Every inbound message goes to its room's keyed agent in an `InstanceManager` (get-or-start;
 *   idle rooms hibernate to a `FileStorage` under a temp dir and thaw on their next message);
 *   the agent's reply goes back out with `rt.send(instanceId, reply)` through that instance's
 *   outbound queue (at least once, across worker deaths).
 * - On a schedule, five faults hit five distinct instances: a crash, a hang (busy loop), a heap
 *   blow-up (under `resourceLimits`), a burst of provider errors (refused connects, 503s on send,
 *   a connection reset) and revoked credentials (fatal). The other instances are siblings that
 *   must not notice.
 * - `--per-worker <n>` packs n instances into each worker thread (`placement.instancesPerWorker`).
 *   The faulted instances then stay in shared workers like any other: a gateway cannot know in
 *   advance which bot will take its worker down, and giving them `isolation: 'dedicated'` would
 *   make the sibling check pass by hiding exactly what packing costs. (The heap blow-up is the
 *   exception: its own `resourceLimits` give it a worker of its own, as they would in production.)
 *   They are spread one per worker as far as there are workers. A crash (an uncaught throw from
 *   the instance's callback) is attributed to its instance: only it restarts, in place, and its
 *   worker-mates must notice nothing. A hang ends the whole worker, and the runtime restarts every
 *   instance in it (restart kind `group`), so the hung instance's worker-mates are expected
 *   casualties, not disturbed siblings: they are read from `health().worker.threadId` just before
 *   the fault is injected, and each must show nothing but that group restart (no error, no
 *   refused reconnect) and be connected again at the end. Every other instance, the worker-mates
 *   of the crash, provider and fatal faults included, must notice nothing.
 * - A live table (in place on a TTY, periodic log lines otherwise, and the final table once at the
 *   end), then a summary; the exit code is non-zero when a send was lost, a sibling was disturbed
 *   (an expected casualty that did not come back counts as disturbed) or a fault went undetected.
 *   Beyond 24 instances the table shows summary rows (by status, by worker) and only the
 *   instances that need attention.
 *
 * - The ops endpoint (`serveOps` from `threadvisor/ops`) on 127.0.0.1 and a free port (or
 *   `--ops-port`): its URL, the live status page, is printed at start; `/metrics`, `/readyz`,
 *   `/instances` answer while the demo runs. Closed before the runtime stops.
 *
 *   npm run demo -- [--duration <s>] [--instances <n>] [--per-worker <n>] [--rooms <n>] [--rate <n>] [--loopback] [--ops-port <n>] [--json] [--log-level <level>]
 *
 * @packageDocumentation
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { DeliveryFailedError, FileStorage, InstanceManager, Runtime, ThreadvisorError } from '../src/index.js';
import { serveOps, type OpsServer } from '../src/ops.js';
import { startPlatformSim, type PlatformSim } from './platform-sim.js';
import { RoomAgent, type RoomReply } from './room-agent.js';
import { redraw, renderLogLine, renderTable, secs, type Frame, type InstanceRow } from './table.js';

// ───────────────────────────────────────────────────────────────────────── options

/** Requests per second per token the simulator allows (getUpdates excepted) before it answers 429. */
const SIM_RATE_LIMIT = 30;
/** The channel module of the HTTP mode. */
const GATEWAY_SIM = new URL('./channels/gateway-sim.js', import.meta.url);

const USAGE = `threadvisor gateway demo: instances on worker threads talking HTTP to a platform simulator,
rooms as keyed agents, faults injected on a schedule, and a summary that must show nothing lost.

usage: npm run demo -- [options]        (or: node dist/demo/gateway.js [options])

  --duration <s>       seconds to run after warm-up (default 30, at least 6)
  --instances <n>      instances (default 8, at least 2); min(5, n - 1) of them get
                       a fault, the rest are siblings; beyond 24 instances the table shows
                       summary rows and only the instances that need attention
  --per-worker <n>     instances per worker thread, placement.instancesPerWorker (default 1:
                       a worker each; at most 1000). Shared workers: the heap blow-up still
                       gets a worker of its own (its resourceLimits), the other faulted
                       instances stay in shared workers, one per worker as far as there are
                       workers. A crash is attributed to its instance, which alone restarts
                       in place. A hang ends the worker and restarts all of its instances
                       (restart kind group): those worker-mates, read from
                       health().worker.threadId before the fault, are expected casualties and
                       must only be restarted and connected again; all others, undisturbed
  --rooms <n>          rooms per instance (default 24; a quarter of them are hot)
  --rate <n>           inbound messages per second per instance (default 20)
  --loopback           in-memory loopback instances instead of HTTP against the simulator
                       (which allows ${SIM_RATE_LIMIT} requests per second per token, answering
                       429 + retry_after beyond)
  --ops-port <n>       port of the ops endpoint and its live status page, on 127.0.0.1
                       (default 0: a free port; the URL is printed at start)
  --json               print the summary as one JSON object on the last line of stdout;
                       everything else goes to stderr
  --log-level <level>  level of the library's pino logs on stderr: fatal, error, warn (default),
                       info, debug, trace, silent
  --help               this text

exit code: 0 when nothing was lost, no sibling was disturbed (expected casualties came back)
and every fault was detected (over HTTP also: no request over the limit, no 409).`;

/** The runtime's largest `placement.instancesPerWorker`. */
const MAX_PER_WORKER = 1000;

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

interface Args {
  durationMs: number;
  instances: number;
  perWorker: number;
  rooms: number;
  rate: number;
  loopback: boolean;
  opsPort: number;
  json: boolean;
  logLevel: string;
}

function parseCli(): Args {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        duration: { type: 'string', default: '30' },
        instances: { type: 'string', default: '8' },
        'per-worker': { type: 'string', default: '1' },
        rooms: { type: 'string', default: '24' },
        rate: { type: 'string', default: '20' },
        loopback: { type: 'boolean', default: false },
        'ops-port': { type: 'string', default: '0' },
        json: { type: 'boolean', default: false },
        'log-level': { type: 'string', default: 'warn' },
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
  const num = (name: string, raw: string, min: number, integer: boolean, max = Infinity): number => {
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      const range = max === Infinity ? `>= ${min}` : `from ${min} to ${max}`;
      process.stderr.write(`--${name} must be ${integer ? 'an integer' : 'a number'} ${range}, got ${raw}\n\n${USAGE}\n`);
      process.exit(2);
    }
    return n;
  };
  const logLevel = values['log-level'];
  if (!LEVELS.includes(logLevel)) {
    process.stderr.write(`--log-level must be one of ${LEVELS.join(', ')}\n`);
    process.exit(2);
  }
  return {
    durationMs: Math.round(num('duration', values.duration, 6, false) * 1000),
    instances: num('instances', values.instances, 2, true),
    perWorker: num('per-worker', values['per-worker'], 1, true, MAX_PER_WORKER),
    rooms: num('rooms', values.rooms, 1, true),
    rate: num('rate', values.rate, 1, false),
    loopback: values.loopback,
    opsPort: num('ops-port', values['ops-port'], 0, true, 65535),
    json: values.json,
    logLevel,
  };
}

// ───────────────────────────────────────────────────────────────────────── the plan

/** The faults, in the order they are given to instances (and injected). */
type FaultName = 'crash' | 'hang' | 'oom' | 'provider' | 'fatal';
const FAULT_ORDER: readonly FaultName[] = ['crash', 'hang', 'oom', 'provider', 'fatal'];
/** When each fault is injected, as a fraction of the run. */
const FAULT_AT: Record<FaultName, number> = { crash: 0.15, hang: 0.27, oom: 0.39, provider: 0.51, fatal: 0.63 };
/** What each fault means, for the summary. */
const FAULT_TEXT: Record<FaultName, string> = {
  crash: 'uncaught exception in the worker',
  hang: 'busy loop: the event loop never yields',
  oom: 'heap blow-up under resourceLimits.maxOldGenerationSizeMb 64',
  provider: '3 refused connects + 6 failed sends (HTTP 5xx) at start, then a connection reset',
  fatal: 'credentials revoked (HTTP 401): fatal, no restart loop',
};
/**
 * Faults that end the worker: in a shared worker, every instance in it restarts with the faulted
 * one. Not a crash: an uncaught throw from an instance's callback is attributed to it in a shared
 * worker, and only that instance restarts (kind `crash`), in place.
 */
const WORKER_ENDING: ReadonlySet<FaultName> = new Set<FaultName>(['hang', 'oom']);
const CONNECT_FAILURES = 3;
const SEND_FAILURES = 6;
/** The credential of the instance whose token gets revoked: it never shows in logs, events or health. */
const TOKEN = 'demo-token-8c1f2e';
const HEARTBEAT = { intervalMs: 250, maxMissed: 4 };
/** Attempts of each instance's first start (see `startOne`). */
const START_ATTEMPTS = 3;
/** Events of the same text from several instances within this long are noted as one line. */
const BATCH_MS = 150;
/** Hot rooms appear this many times in the loopback's round-robin list; cold ones once. */
const HOT_WEIGHT = 8;

/**
 * Which instance gets which fault (index → fault; `undefined`: a sibling), min(5, n - 1) faults.
 * One worker each: the first instances, in {@link FAULT_ORDER} (gw-0 crash, gw-1 hang, …).
 * Shared workers: the heap blow-up goes to the last instance (its `resourceLimits` give it a
 * worker of its own), the others one per worker as far as there are workers: instances start in
 * order and fill one worker after the other, so the k-th goes to the first instance of the k-th
 * worker (gw-0, gw-50, gw-100, … with 50 per worker). That is only where they are expected to
 * land; the verdict uses the thread ids the runtime reports.
 */
function planFaults(instances: number, perWorker: number): Array<FaultName | undefined> {
  const plan = new Array<FaultName | undefined>(instances).fill(undefined);
  const faults = FAULT_ORDER.slice(0, Math.min(FAULT_ORDER.length, instances - 1));
  if (perWorker === 1) {
    faults.forEach((f, i) => (plan[i] = f));
    return plan;
  }
  let shared = instances;
  if (faults.includes('oom')) {
    plan[instances - 1] = 'oom';
    shared = instances - 1;
  }
  const workers = Math.ceil(shared / perWorker);
  faults
    .filter((f) => f !== 'oom')
    .forEach((f, k) => {
      let at = (k % workers) * perWorker + Math.floor(k / workers);
      while (at >= shared || plan[at] !== undefined) at = (at + 1) % shared;
      plan[at] = f;
    });
  return plan;
}

/** The loopback's room list for one instance: a quarter hot rooms, interleaved with the cold ones. */
function roomList(instance: string, count: number): string[] {
  const names = Array.from({ length: count }, (_, i) => `${instance}/room-${String(i).padStart(2, '0')}`);
  const hot = names.slice(0, Math.max(1, Math.ceil(count / 4)));
  const cold = names.slice(hot.length);
  const list: string[] = [];
  for (let k = 0; k < HOT_WEIGHT; k++) {
    list.push(...hot, ...cold.slice(Math.floor((k * cold.length) / HOT_WEIGHT), Math.floor(((k + 1) * cold.length) / HOT_WEIGHT)));
  }
  return list;
}

// ───────────────────────────────────────────────────────────────────────── bookkeeping

interface InstanceEvent {
  instanceId: string;
  name: string;
  at: number;
}
interface RestartEvent extends InstanceEvent {
  class: 'recoverable' | 'fatal';
  reason: string | null;
  kind?: string;
  restartCount: number;
}
interface ReasonEvent extends InstanceEvent {
  reason: string | null;
  trigger?: string;
}
interface ReconnectEvent extends InstanceEvent {
  phase: 'scheduled' | 'attempt' | 'failed' | 'exhausted';
  attempt: number;
  reason?: string | null;
}
interface AgentEvent {
  key: string;
}

type Health = Awaited<ReturnType<Runtime['health']>>;

interface Inst {
  readonly index: number;
  readonly id: string;
  readonly fault: FaultName | undefined;
  inbound: number;
  sent: number;
  delivered: number;
  rejected: number;
  /** Counters at the previous frame, for rates. */
  prevInbound: number;
  prevDelivered: number;
  restarts: RestartEvent[];
  connected: number[];
  disconnected: ReasonEvent[];
  errors: ReasonEvent[];
  reconnectFailures: ReconnectEvent[];
  health: Health | undefined;
}

interface FaultRecord {
  readonly fault: FaultName;
  readonly instance: Inst;
  readonly atMs: number;
  injectedAt: number | undefined;
  /** How the send that carried the fault settled: `delivered`, an error code, or `pending`. */
  sendOutcome: string;
  /** The faulted instance's worker just before the fault (`health().worker.threadId`). */
  threadId: number | null;
  /** The other instances in that worker just before the fault. */
  mates: string[];
}

/** A send's outcome: delivered, or the error code it was rejected with. */
const REFUSED = new Set(['not_running', 'queue_full', 'not_found', 'invalid_config']);

function errorCode(err: unknown): string | undefined {
  if (err instanceof DeliveryFailedError) return `delivery_failed:${err.reason}`;
  if (err instanceof ThreadvisorError) return err.code;
  return undefined;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function waitFor(cond: () => boolean, timeoutMs: number, stepMs = 25): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() >= until) return false;
    await sleep(stepMs);
  }
  return true;
}

/** The simulator's counters summed over its tokens. */
function simulatorTotals(sim: PlatformSim): { requests: number; sent: number; rateLimited: number; overLimit: number; conflicts: number; serverErrors: number; unauthorized: number } {
  const total = { requests: 0, sent: 0, rateLimited: 0, overLimit: 0, conflicts: 0, serverErrors: 0, unauthorized: 0 };
  for (const st of Object.values(sim.stats())) for (const k of Object.keys(total) as Array<keyof typeof total>) total[k] += st[k];
  return total;
}

// ───────────────────────────────────────────────────────────────────────── main

async function main(): Promise<number> {
  const args = parseCli();
  const out = args.json ? process.stderr : process.stdout;
  const tty = out.isTTY === true;
  const say = (line: string) => out.write(`${line}\n`);
  const logger = pino({ level: args.logLevel }, pino.destination(2));

  const names = Array.from({ length: args.instances }, (_, i) => `gw-${i}`);
  const faultCount = Math.min(FAULT_ORDER.length, args.instances - 1);
  const plan = planFaults(args.instances, args.perWorker);
  const insts: Inst[] = names.map((id, index) => ({
    index,
    id,
    fault: plan[index],
    inbound: 0,
    sent: 0,
    delivered: 0,
    rejected: 0,
    prevInbound: 0,
    prevDelivered: 0,
    restarts: [],
    connected: [],
    disconnected: [],
    errors: [],
    reconnectFailures: [],
    health: undefined,
  }));
  const byId = new Map(insts.map((i) => [i.id, i]));
  const listLength = roomList('x', args.rooms).length;
  const cycleMs = (listLength / args.rate) * 1000;
  // Cold rooms come round once per cycle: an idle timeout of about half a cycle makes them
  // hibernate and thaw all run long, while hot rooms stay resident.
  const idleTimeoutMs = Math.round(Math.min(3000, Math.max(300, cycleMs * 0.45)));

  // ---- SIGINT: the same clean shutdown, early --------------------------------------------
  let wake: (() => void) | undefined;
  let interrupted = false;
  const onSigint = () => {
    if (interrupted) {
      process.stderr.write('second SIGINT: exiting at once\n');
      process.exit(130);
    }
    interrupted = true;
    process.stderr.write('\nSIGINT: shutting down cleanly (again to force)\n');
    wake?.();
  };
  process.on('SIGINT', onSigint);

  const dir = await mkdtemp(join(tmpdir(), 'threadvisor-gateway-'));
  // Over HTTP: the platform simulator, in this process, generating `rate` updates per second per token.
  const sim: PlatformSim | undefined = args.loopback ? undefined : await startPlatformSim({ updates: { perSec: args.rate }, rateLimit: { perSec: SIM_RATE_LIMIT } });
  const removeDir = async () => {
    await sim?.stop();
    await rm(dir, { recursive: true, force: true });
  };
  /** Each instance's token over HTTP (the revoked one is {@link TOKEN}). */
  const tokenOf = (inst: Inst) => (inst.fault === 'fatal' ? TOKEN : `${inst.id}-token-${inst.index}`);
  let phase: 'running' | 'closing' = 'running';
  const t = {
    inbound: 0,
    sent: 0,
    refused: 0,
    delivered: 0,
    rejected: 0,
    untyped: 0,
    outstanding: 0,
    handling: 0,
    inboundAfterClose: 0,
    cutAtClose: 0,
    malformedInbound: 0,
    handlerErrors: 0,
  };
  const refusedByCode: Record<string, number> = {};
  const rejectedByCode: Record<string, number> = {};
  const restartsByKind: Record<string, number> = {};
  const restartsByClass: Record<string, number> = {};
  const agents = { started: 0, thaws: 0, hibernations: 0, keys: new Set<string>(), sleeping: new Set<string>() };
  const eventLines: string[] = [];
  const startRetries: Array<{ instance: string; attempt: number; reason: string }> = [];
  /** Set when the warm-up is over: the run's clock (fault times, event stamps) starts there. */
  let t0 = 0;
  const stamp = () => (t0 === 0 ? '[warm-up]' : `[${secs(Date.now() - t0).padStart(7)}]`);
  const noteAt = (at: string, line: string) => {
    const text = `${at} ${line}`;
    eventLines.push(text);
    if (eventLines.length > 14) eventLines.shift();
    if (!tty) say(text);
  };
  const note = (line: string) => noteAt(stamp(), line);
  // A shared worker's death disconnects, restarts and reconnects each of its instances: the same
  // event for many instances within BATCH_MS makes one line, `50 instances (gw-0, gw-1, …) …`.
  const batches = new Map<string, { at: string; ids: string[]; timer: NodeJS.Timeout }>();
  const flushBatch = (text: string) => {
    const b = batches.get(text);
    if (!b) return;
    batches.delete(text);
    clearTimeout(b.timer);
    const who = b.ids.length === 1 ? b.ids[0] : `${b.ids.length} instances (${b.ids.slice(0, 4).join(', ')}${b.ids.length > 4 ? ', …' : ''})`;
    noteAt(b.at, `${who} ${text}`);
  };
  const flushBatches = () => {
    for (const text of [...batches.keys()]) flushBatch(text);
  };
  const noteEach = (inst: Inst, text: string) => {
    const b = batches.get(text);
    if (b) b.ids.push(inst.id);
    else batches.set(text, { at: stamp(), ids: [inst.id], timer: setTimeout(() => flushBatch(text), BATCH_MS) });
  };

  // ---- the rooms ---------------------------------------------------------------------------
  const rooms = await InstanceManager.start({ name: 'rooms', agent: RoomAgent, idleTimeoutMs, storage: new FileStorage({ dir }), logger }).catch(async (err: unknown) => {
    await removeDir();
    throw err;
  });
  rooms.on('agent:started', (e: AgentEvent) => {
    agents.started++;
    agents.keys.add(e.key);
    agents.sleeping.delete(e.key);
  });
  rooms.on('agent:thawed', () => agents.thaws++);
  rooms.on('agent:hibernated', (e: AgentEvent) => {
    agents.hibernations++;
    agents.sleeping.add(e.key);
  });

  // ---- sends -------------------------------------------------------------------------------
  function send(inst: Inst, message: unknown): Promise<string> {
    t.sent++;
    inst.sent++;
    t.outstanding++;
    return rt.send(inst.id, message).then(
      () => {
        t.delivered++;
        inst.delivered++;
        return 'delivered';
      },
      (err: unknown) => {
        const code = errorCode(err);
        if (code === undefined) {
          t.untyped++; // not a ThreadvisorError: counted as lost
          logger.error({ err }, 'send rejected with an untyped error');
          return 'untyped';
        }
        inst.rejected++;
        if (REFUSED.has(code)) {
          t.refused++;
          refusedByCode[code] = (refusedByCode[code] ?? 0) + 1;
        } else {
          t.rejected++;
          rejectedByCode[code] = (rejectedByCode[code] ?? 0) + 1;
        }
        return code;
      },
    ).finally(() => t.outstanding--);
  }

  async function onMessage(message: unknown, meta: { instanceId: string }): Promise<void> {
    const inst = byId.get(meta.instanceId);
    if (!inst) return;
    inst.inbound++;
    t.inbound++;
    if (phase !== 'running') {
      t.inboundAfterClose++;
      return;
    }
    const m = message as { id?: unknown; room?: unknown; text?: unknown } | null;
    if (typeof m?.id !== 'string' || typeof m.room !== 'string') {
      t.malformedInbound++;
      return;
    }
    t.handling++;
    try {
      const room = await rooms.get(m.room);
      const reply: RoomReply = await room.call({ id: m.id, room: m.room, text: String(m.text ?? ''), instanceId: inst.id });
      void send(inst, reply);
    } catch (err) {
      // Still in hand when closing gave up waiting and closed the rooms (an overloaded main
      // thread): not answered, like the messages that arrive after closing began.
      if (phase === 'running' || errorCode(err) !== 'stopped') throw err;
      t.cutAtClose++;
    } finally {
      t.handling--;
    }
  }

  // ---- the runtime -------------------------------------------------------------------------
  const rt = await Runtime.start({
    logger,
    heartbeat: HEARTBEAT,
    restart: { maxRestarts: 5, periodMs: 30_000, backoff: { initialDelayMs: 100, maxDelayMs: 2000, jitter: 0.2 } },
    reconnect: { maxAttempts: 6, baseMs: 200, maxMs: 2000 },
    // Enough attempts for the provider burst: its 6 failing sends are retried, not given up.
    delivery: { maxAttempts: 8, initialDelayMs: 50, maxDelayMs: 1000 },
    // A safety net for every worker (a heap blow-up without a limit takes the whole process).
    resourceLimits: { maxOldGenerationSizeMb: 256 },
    placement: { instancesPerWorker: args.perWorker },
    onMessage,
  }).catch(async (err: unknown) => {
    await rooms.close().catch(() => undefined);
    await removeDir();
    throw err;
  });
  const nameOf = (e: InstanceEvent) => byId.get(e.instanceId);
  rt.on('instance:restart', (e: RestartEvent) => {
    const inst = nameOf(e);
    if (!inst) return;
    inst.restarts.push(e);
    const kind = e.kind ?? 'unknown';
    restartsByKind[kind] = (restartsByKind[kind] ?? 0) + 1;
    restartsByClass[e.class] = (restartsByClass[e.class] ?? 0) + 1;
    noteEach(inst, `restart: kind ${kind}, class ${e.class} (${e.reason})`);
  });
  rt.on('instance:connected', (e: InstanceEvent) => {
    const inst = nameOf(e);
    if (!inst) return;
    const again = inst.connected.length > 0 || inst.reconnectFailures.length > 0;
    inst.connected.push(e.at);
    if (again) noteEach(inst, `connected${inst.connected.length > 1 ? ' again' : ` after ${inst.reconnectFailures.length} refused connect(s)`}`);
  });
  rt.on('instance:disconnected', (e: ReasonEvent) => {
    const inst = nameOf(e);
    if (!inst) return;
    inst.disconnected.push(e);
    noteEach(inst, `disconnected: ${e.reason}`);
  });
  rt.on('instance:error', (e: ReasonEvent) => {
    const inst = nameOf(e);
    if (!inst) return;
    inst.errors.push(e);
    noteEach(inst, `error (${e.trigger ?? '?'}): ${e.reason}`);
  });
  rt.on('instance:reconnect', (e: ReconnectEvent) => {
    const inst = nameOf(e);
    if (!inst || (e.phase !== 'failed' && e.phase !== 'exhausted')) return;
    inst.reconnectFailures.push(e);
  });
  rt.on('message:failed', () => t.handlerErrors++);

  const timers: NodeJS.Timeout[] = [];
  let painter: NodeJS.Timeout | undefined;
  let ops: OpsServer | undefined;
  let exitCode: number;
  const faults: FaultRecord[] = [];
  try {
    // ---- start the instances -------------------------------------------------------------
    const packing = args.perWorker === 1 ? 'a worker each' : `${args.perWorker} per worker`;
    const kind = sim ? `HTTP instances against the simulator at ${sim.url}` : 'loopback instances';
    const header = `threadvisor gateway · ${args.instances} ${kind} (${packing}) · ${args.rooms} rooms each · ${args.rate} msg/s each · idle ${idleTimeoutMs} ms`;
    say(`${header} · storage ${dir}`);
    // The operator's view: /metrics, /healthz, /readyz, /instances and the live status page at /.
    ops = await serveOps(rt, { host: '127.0.0.1', port: args.opsPort, manager: rooms });
    say(`status page: ${ops.url}/ (also /metrics, /healthz, /readyz, /instances)`);
    const faulted = insts.filter((i) => i.fault).map((i) => `${i.fault} ${i.id}`);
    say(`starting ${args.instances} instances (faults for ${faultCount} of them: ${faulted.join(', ') || 'none'}) …`);
    const startOne = async (inst: Inst) => {
      const settings: Record<string, unknown> = { inbound: { ratePerSec: args.rate, rooms: roomList(inst.id, args.rooms), batch: 50 } };
      const extra: { credentials?: Record<string, unknown>; resourceLimits?: Record<string, number> } = {};
      switch (inst.fault) {
        case undefined:
          break;
        case 'oom':
          settings.faults = true;
          extra.resourceLimits = { maxOldGenerationSizeMb: 64 };
          break;
        case 'provider':
          Object.assign(settings, { faults: true, connectFailures: CONNECT_FAILURES, sendFailures: SEND_FAILURES });
          break;
        case 'fatal':
          // Its token is revoked mid-run (the next poll fails 401). Not `requireToken`: the
          // runtime scrubs credential values out of the settings it boots the worker with, so a
          // setting equal to the token arrives as '[REDACTED]' (see the report).
          settings.faults = true;
          extra.credentials = { token: TOKEN };
          break;
        default:
          settings.faults = true;
      }
      // The heartbeat already runs while a new worker loads zod and the channel module; on an
      // overloaded machine that can exceed 4 × 250 ms, and a first start that fails is not
      // retried by the runtime (startInstance rejects with start_failure). Retry it here.
      let start: Parameters<Runtime['startInstance']>[0] = { id: inst.id, name: inst.id, channelType: 'loopback', channel: 'loopback', settings, ...extra };
      if (sim) {
        // Over HTTP the provider's refused connects and 503s are the simulator's own 500s.
        const token = tokenOf(inst);
        if (inst.fault === 'provider') {
          sim.failNext(CONNECT_FAILURES, { token, method: 'getMe' });
          sim.failNext(SEND_FAILURES, { token, method: 'sendMessage' });
        }
        const httpSettings = { baseUrl: sim.url, rooms: roomList(inst.id, args.rooms), faults: settings.faults === true };
        start = { id: inst.id, name: inst.id, channelType: 'gateway-sim', channel: GATEWAY_SIM, settings: httpSettings, credentials: { token }, ...(extra.resourceLimits ? { resourceLimits: extra.resourceLimits } : {}) };
      }
      for (let attempt = 1; ; attempt++) {
        try {
          await rt.startInstance(start);
          return;
        } catch (err) {
          if (errorCode(err) !== 'start_failure' || attempt >= START_ATTEMPTS || interrupted) throw err;
          startRetries.push({ instance: inst.id, attempt, reason: err instanceof Error ? err.message : String(err) });
          note(`${inst.id} failed to start (attempt ${attempt}: ${err instanceof Error ? err.message : String(err)}); retrying`);
          Object.assign(inst, { restarts: [], connected: [], disconnected: [], errors: [], reconnectFailures: [] });
          await sleep(250 * attempt);
        }
      }
    };
    // Two at a time: on a small machine, spawning every worker at once competes with heartbeats.
    // In shared workers most starts spawn nothing (the worker is up): a few more at a time. In
    // order either way, so that the instances fill one worker after the other (see planFaults).
    const together = args.perWorker === 1 ? 2 : Math.min(args.perWorker, 10);
    const startedAt = Date.now();
    for (let i = 0; i < insts.length; i += together) await Promise.all(insts.slice(i, i + together).map(startOne));
    // Warm-up: every instance connected (the provider instance is still fighting its refused
    // connects, on purpose; it is not waited for).
    const warmMs = Math.max(20_000, args.instances * 10);
    const warm = await waitFor(() => insts.every((i) => i.fault === 'provider' || i.connected.length > 0 || i.errors.length > 0) || interrupted, warmMs);
    if (!warm) note(`warm-up: not every instance connected within ${secs(warmMs)}`);
    if (args.perWorker > 1) {
      const placed = await rt.listHealth();
      const threads = new Map<number, number>();
      for (const h of placed) if (typeof h.worker?.threadId === 'number') threads.set(h.worker.threadId, (threads.get(h.worker.threadId) ?? 0) + 1);
      const sizes = new Map<number, number>();
      for (const n of threads.values()) sizes.set(n, (sizes.get(n) ?? 0) + 1);
      const shape = [...sizes].sort((a, b) => b[0] - a[0]).map(([n, w]) => `${w} × ${n}`).join(', ');
      note(`${args.instances} instances started in ${secs(Date.now() - startedAt)} on ${threads.size} worker threads (workers × instances: ${shape})`);
    }
    for (const inst of insts) {
      inst.prevInbound = inst.inbound;
      inst.prevDelivered = inst.delivered;
    }

    // ---- run, with the fault schedule --------------------------------------------------
    t0 = Date.now();
    for (const inst of insts) {
      if (!inst.fault) continue;
      const rec: FaultRecord = { fault: inst.fault, instance: inst, atMs: Math.round(args.durationMs * FAULT_AT[inst.fault]), injectedAt: undefined, sendOutcome: 'not sent', threadId: null, mates: [] };
      faults.push(rec);
      const inject = async () => {
        // Who shares the faulted instance's worker, just before the fault.
        const before = await rt.listHealth();
        if (phase !== 'running') return;
        rec.threadId = before.find((h) => h.instanceId === inst.id)?.worker?.threadId ?? null;
        if (rec.threadId !== null) rec.mates = before.filter((h) => h.instanceId !== inst.id && h.worker?.threadId === rec.threadId).map((h) => h.instanceId);
        const fault = rec.fault === 'provider' ? 'disconnect' : rec.fault;
        rec.injectedAt = Date.now();
        rec.sendOutcome = 'pending';
        const where = rec.mates.length === 0 ? '' : ` (worker #${rec.threadId} with ${rec.mates.length} other instances${WORKER_ENDING.has(rec.fault) ? ': they go down with it' : ''})`;
        if (sim && (rec.fault === 'provider' || rec.fault === 'fatal')) {
          // Over HTTP the platform does it: a 500 on the next long-poll (the connection is
          // reset), or the token revoked (every call 401, the held long-poll too).
          if (rec.fault === 'provider') sim.failNext(1, { token: tokenOf(inst), method: 'getUpdates' });
          else sim.revoke(TOKEN);
          rec.sendOutcome = 'none (the simulator)';
          note(`inject ${rec.fault} → ${inst.id}: simulator ${rec.fault === 'provider' ? 'answers 500 to its next getUpdates' : 'revokes its token'}`);
          return;
        }
        note(`inject ${rec.fault} → ${inst.id}${where}: send({ fault: '${fault}' })`);
        void send(inst, { id: `fault-${rec.fault}`, fault }).then((outcome) => (rec.sendOutcome = outcome));
      };
      timers.push(setTimeout(() => void inject().catch((err: unknown) => logger.error({ err }, 'injecting a fault')), rec.atMs));
    }
    if (faultCount < FAULT_ORDER.length) note(`only ${args.instances} instances: skipping ${FAULT_ORDER.slice(faultCount).join(', ')} (one instance per fault, one sibling at least)`);

    const frameEvery = tty ? 500 : 2000;
    let lastFrameAt = Date.now();
    const frame = async (): Promise<Frame> => {
      const now = Date.now();
      const dt = Math.max(1, now - lastFrameAt) / 1000;
      lastFrameAt = now;
      const healths = await rt.listHealth();
      for (const h of healths) {
        const inst = byId.get(h.instanceId);
        if (inst) inst.health = h;
      }
      const rows: InstanceRow[] = insts.map((inst) => {
        const h = inst.health;
        const row: InstanceRow = {
          name: inst.id,
          fault: inst.fault ?? '-',
          status: h?.status ?? '?',
          inPerSec: (inst.inbound - inst.prevInbound) / dt,
          outPerSec: (inst.delivered - inst.prevDelivered) / dt,
          depth: h?.senderQueueDepth ?? 0,
          inFlight: h?.inFlight ?? 0,
          pressure: h?.pressure ?? '-',
          restarts: h?.restartCount ?? 0,
          reconnectAttempt: h?.reconnectAttempt ?? 0,
          worker: h?.worker ? `${h.worker.state}${typeof h.worker.threadId === 'number' ? ` #${h.worker.threadId}` : ''}` : '-',
          threadId: h?.worker?.threadId ?? null,
          workerInstances: h?.worker?.instances ?? 0,
          inbound: inst.inbound,
          delivered: inst.delivered,
          // lastError clears once the instance is healthy again: then show what restarted it last.
          lastError: h?.lastError ?? (h?.lastRestartReason ? `(last restart: ${h.lastRestartReason})` : null),
        };
        inst.prevInbound = inst.inbound;
        inst.prevDelivered = inst.delivered;
        return row;
      });
      const s = rooms.stats();
      return {
        elapsedMs: now - t0,
        durationMs: args.durationMs,
        header,
        rows,
        agents: { resident: s.resident, saving: s.hibernating, hibernated: agents.sleeping.size, started: agents.started, thaws: agents.thaws, hibernations: agents.hibernations },
        sends: { accepted: t.sent - t.refused, delivered: t.delivered, rejected: t.rejected, refused: t.refused, pending: t.outstanding },
        inbound: t.inbound,
        events: eventLines,
      };
    };
    const paint = async (last = false) => {
      const f = await frame();
      if (tty) out.write(redraw(f, out.columns ?? 120));
      else if (last) say(`\nfinal table\n${renderTable({ ...f, events: [] }, false, 120)}`); // the events were logged already
      else say(renderLogLine(f));
    };
    painter = setInterval(() => void paint().catch((err: unknown) => logger.warn({ err }, 'table')), frameEvery);

    await new Promise<void>((resolve) => {
      wake = resolve;
      if (interrupted) resolve();
      else timers.push(setTimeout(resolve, args.durationMs));
    });

    // ---- shutdown: stop taking traffic, let every accepted send settle, then close -------
    phase = 'closing';
    for (const timer of timers) clearTimeout(timer);
    note('closing: no new replies; waiting for every accepted send to settle');
    await waitFor(() => t.handling === 0, 5000);
    const drained = await waitFor(() => t.outstanding === 0, 10_000);
    clearInterval(painter);
    painter = undefined;
    flushBatches();
    await paint(true);
    const final = new Map(insts.map((i) => [i.id, i.health]));
    await ops.close();
    await rooms.close();
    await rt.stop();
    // rt.stop() settles whatever was still queued (typed `stopped`); give those a turn.
    await waitFor(() => t.outstanding === 0, 2000);
    const pendingAtExit = t.outstanding;

    // ---- the verdict ---------------------------------------------------------------------
    const accepted = t.sent - t.refused;
    const lost = accepted - t.delivered - t.rejected;
    const evaluate = (rec: FaultRecord) => {
      const inst = rec.instance;
      const from = rec.injectedAt;
      const res = { fault: rec.fault, instance: inst.id, what: FAULT_TEXT[rec.fault], injectedAtMs: from === undefined ? null : from - t0, faultSend: rec.sendOutcome, detectedAs: null as string | null, detectMs: null as number | null, recoveredMs: null as number | null, restarts: inst.restarts.length, ok: false, skipped: false };
      if (from === undefined) {
        res.skipped = interrupted; // interrupted before its turn; otherwise a failure
        return res;
      }
      const afterFault = (at: number) => at >= from;
      const connectedAfter = (at: number) => inst.connected.find((c) => c >= at);
      if (rec.fault === 'crash' || rec.fault === 'hang' || rec.fault === 'oom') {
        // A heap blow-up is a synchronous allocation loop: on an overloaded machine V8's last-resort
        // GCs can keep the event loop blocked past the heartbeat budget before the heap limit is
        // reached. Killed as hung is then as right as killed for OOM.
        // In a shared worker the worker's death is the group's: kind `group` for every instance
        // in it, the faulted one included (the reason says what ended the worker).
        const kinds: string[] = [...(rec.fault === 'oom' ? ['oom', 'hang'] : [rec.fault]), ...(args.perWorker > 1 && WORKER_ENDING.has(rec.fault) ? ['group'] : [])];
        const r = inst.restarts.find((e) => afterFault(e.at) && kinds.includes(e.kind ?? ''));
        const c = r ? connectedAfter(r.at) : undefined;
        const why =
          r?.kind === 'group'
            ? ` (its shared worker #${rec.threadId ?? '?'} ended: ${r.reason}; ${rec.mates.length} worker-mates restarted with it)`
            : r !== undefined && rec.mates.length > 0
              ? ` (in place: attributed to it in its shared worker #${rec.threadId ?? '?'}; its ${rec.mates.length} worker-mates went on)`
            : r !== undefined && r.kind !== rec.fault
              ? ' (the allocation loop blocked the event loop past the heartbeat first)'
              : '';
        res.detectedAs = r ? `restart kind ${r.kind}${why}` : (inst.restarts.find((e) => afterFault(e.at))?.kind ?? null);
        res.detectMs = r ? r.at - from : null;
        res.recoveredMs = c !== undefined ? c - from : null;
        res.ok = r !== undefined && c !== undefined;
      } else if (rec.fault === 'provider') {
        const d = inst.disconnected.find((e) => afterFault(e.at));
        const c = d ? connectedAfter(d.at) : undefined;
        const h = final.get(inst.id);
        const retried = h?.delivery.retried ?? 0;
        res.detectedAs = d ? `disconnected (${d.reason}); ${inst.reconnectFailures.length} refused connect(s) and ${retried} send retries before` : null;
        res.detectMs = d ? d.at - from : null;
        res.recoveredMs = c !== undefined ? c - from : null;
        res.ok = d !== undefined && c !== undefined && inst.reconnectFailures.length >= CONNECT_FAILURES && retried >= 1 && h?.status === 'connected';
      } else {
        const e = inst.errors.find((x) => afterFault(x.at));
        const r = inst.restarts.find((x) => afterFault(x.at) && x.kind === 'fatal');
        res.detectedAs = e ? `error (${e.trigger ?? '?'}), restart kind ${r?.kind ?? '-'}` : null;
        res.detectMs = e ? e.at - from : null;
        res.ok = e !== undefined && final.get(inst.id)?.status === 'error';
      }
      return res;
    };
    const faultResults = faults.map(evaluate);
    // Expected casualties: the worker-mates (just before the fault) of a fault that ends its
    // worker. From that fault on, each may show what a worker's death does to every instance in
    // it, a disconnect (`worker <kind>: …`) and a restart of kind `group`, and nothing else; and
    // it must be connected again at the end. Anything more, or on any other sibling, disturbs.
    const casualtyFrom = new Map<string, number>();
    for (const rec of faults) {
      if (!WORKER_ENDING.has(rec.fault) || rec.injectedAt === undefined) continue;
      for (const id of rec.mates) casualtyFrom.set(id, Math.min(casualtyFrom.get(id) ?? Infinity, rec.injectedAt));
    }
    const siblings = insts.filter((i) => !i.fault);
    const mates = siblings.filter((i) => casualtyFrom.has(i.id));
    const groupRestarted = (i: Inst) => i.restarts.some((e) => e.kind === 'group' && e.at >= (casualtyFrom.get(i.id) ?? Infinity));
    const casualties = {
      expected: mates.length,
      restartedWithGroup: mates.filter(groupRestarted).length,
      connectedAgain: mates.filter((i) => final.get(i.id)?.status === 'connected' && (!groupRestarted(i) || i.connected.some((c) => c >= (casualtyFrom.get(i.id) ?? Infinity)))).length,
    };
    const disturbed = siblings
      .map((i) => {
        const from = casualtyFrom.get(i.id) ?? Infinity;
        return {
          instance: i.id,
          restarts: i.restarts.filter((e) => !(e.at >= from && e.kind === 'group')).length,
          errors: i.errors.length,
          disconnects: i.disconnected.filter((e) => !(e.at >= from && e.reason?.startsWith('worker ') === true)).length,
          reconnectFailures: i.reconnectFailures.length,
          notConnectedAgain: from !== Infinity && final.get(i.id)?.status !== 'connected' ? 1 : 0,
        };
      })
      .filter((d) => d.restarts + d.errors + d.disconnects + d.reconnectFailures + d.notConnectedAgain > 0);
    const siblingsDisturbed = disturbed.reduce((n, d) => n + d.restarts + d.errors + d.disconnects + d.reconnectFailures + d.notConnectedAgain, 0);
    const workers = new Set([...final.values()].flatMap((h) => (typeof h?.worker?.threadId === 'number' ? [h.worker.threadId] : []))).size;
    const byFault = (f: FaultName) => faultResults.find((r) => r.fault === f);
    const sum = (pick: (h: Health) => number) => [...final.values()].reduce((n, h) => n + (h ? pick(h) : 0), 0);
    const summary = {
      ok: false,
      durationMs: Date.now() - t0,
      instances: args.instances,
      perWorker: args.perWorker,
      workers,
      roomsPerInstance: args.rooms,
      ratePerSecPerInstance: args.rate,
      idleTimeoutMs,
      inbound: t.inbound,
      inboundAfterClose: t.inboundAfterClose,
      inboundCutAtClose: t.cutAtClose,
      accepted,
      delivered: t.delivered,
      rejected: t.rejected,
      rejectedByCode,
      refused: t.refused,
      refusedByCode,
      lost,
      pendingAtExit,
      drainedBeforeStop: drained,
      redelivered: sum((h) => h.delivery.requeued),
      deliveryRetries: sum((h) => h.delivery.retried),
      duplicatesSkipped: sum((h) => h.delivery.duplicatesSkipped),
      restarts: restartsByKind,
      restartsByClass,
      hangDetectMs: byFault('hang')?.detectMs ?? null,
      crashToConnectedMs: byFault('crash')?.recoveredMs ?? null,
      oomDetectMs: byFault('oom')?.detectMs ?? null,
      providerResetToConnectedMs: byFault('provider')?.recoveredMs ?? null,
      fatalDetectMs: byFault('fatal')?.detectMs ?? null,
      faults: faultResults,
      siblings: siblings.map((i) => i.id),
      workerMates: faults.map((r) => ({ fault: r.fault, instance: r.instance.id, threadId: r.threadId, mates: r.mates.length, expectedCasualties: WORKER_ENDING.has(r.fault) })),
      casualties,
      siblingsDisturbed,
      disturbedSiblings: disturbed,
      agents: { rooms: agents.keys.size, activations: agents.started, thawed: agents.thaws, hibernations: agents.hibernations },
      handlerErrors: t.handlerErrors,
      startRetries,
      interrupted,
      simulator: sim ? simulatorTotals(sim) : null,
    };
    const platformOk = summary.simulator === null || (summary.simulator.overLimit === 0 && summary.simulator.conflicts === 0);
    summary.ok = lost === 0 && siblingsDisturbed === 0 && platformOk && faultResults.every((r) => r.ok || r.skipped);
    exitCode = !summary.ok ? 1 : interrupted ? 130 : 0;

    // ---- print it --------------------------------------------------------------------------
    const ms = (v: number | null) => (v === null ? '-' : `${v} ms`);
    say('');
    say(`summary (${secs(summary.durationMs)}, ${args.instances} instances on ${workers} worker threads, ${agents.keys.size} rooms)`);
    const cut = t.cutAtClose === 0 ? '' : `, ${t.cutAtClose} still in hand when the rooms closed`;
    say(`  inbound ${t.inbound} (${t.inboundAfterClose} after closing began${cut}, not answered) · accepted ${accepted} · delivered ${t.delivered} · rejected ${t.rejected} ${JSON.stringify(rejectedByCode)} · refused ${t.refused} ${JSON.stringify(refusedByCode)}`);
    say(`  lost ${lost}${lost === 0 ? ' (every accepted send settled)' : '  <-- LOST'} · redelivered after a worker death ${summary.redelivered} · retried ${summary.deliveryRetries} · duplicates skipped ${summary.duplicatesSkipped}`);
    say(`  restarts by kind ${JSON.stringify(restartsByKind)} · by class ${JSON.stringify(restartsByClass)}`);
    say(`  agents: ${agents.started} activations, ${agents.thaws} thawed from disk, ${agents.hibernations} hibernations`);
    for (const r of faultResults) {
      say(`  ${r.ok ? 'OK  ' : r.skipped ? 'SKIP' : 'FAIL'} ${r.fault.padEnd(8)} ${r.instance.padEnd(6)} ${r.what}`);
      if (r.skipped) continue;
      say(`       injected at ${ms(r.injectedAtMs)} → ${r.detectedAs ?? 'NOT DETECTED'}; detected in ${ms(r.detectMs)}${r.recoveredMs === null ? '' : `, connected again after ${ms(r.recoveredMs)}`}; fault send: ${r.faultSend}`);
    }
    const st = summary.simulator;
    if (st) {
      say(`  simulator: ${st.requests} requests, ${st.sent} messages sent · 429s honoured ${st.rateLimited - st.overLimit} · requests over the limit ${st.overLimit}${st.overLimit === 0 ? '' : '  <-- OVER'} · 409s ${st.conflicts}${st.conflicts === 0 ? '' : '  <-- CONFLICT'} · 5xx ${st.serverErrors} · 401s ${st.unauthorized}`);
    }
    say(`  hang detected in ${ms(summary.hangDetectMs)} (heartbeat ${HEARTBEAT.intervalMs} ms × ${HEARTBEAT.maxMissed}) · crash to connected again ${ms(summary.crashToConnectedMs)}`);
    if (startRetries.length > 0) say(`  first starts retried: ${startRetries.map((r) => `${r.instance} (${r.reason})`).join('; ')}`);
    const names = (list: Inst[]) => (list.length <= 8 ? list.map((i) => i.id).join(', ') || '-' : `${list.length} instances`);
    if (mates.length > 0) {
      const c = casualties;
      say(`  worker-mates of a hang or oom (expected casualties, restart kind group): ${names(mates)}; ${c.restartedWithGroup} restarted with their worker, ${c.connectedAgain} of ${c.expected} connected again`);
    }
    const others = siblings.filter((i) => !casualtyFrom.has(i.id));
    const shown = disturbed.slice(0, 8);
    const verdict = siblingsDisturbed === 0 ? 'undisturbed' : `DISTURBED ${JSON.stringify(shown)}${disturbed.length > shown.length ? ` and ${disturbed.length - shown.length} more` : ''}`;
    say(`  siblings ${names(others)}${mates.length > 0 ? ' (the rest)' : ''}: ${verdict}`);
    say(summary.ok ? `result: OK${interrupted ? ' (interrupted: faults not yet injected were skipped)' : ''}` : 'result: FAILED');
    if (args.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  } finally {
    process.off('SIGINT', onSigint);
    for (const timer of timers) clearTimeout(timer);
    if (painter) clearInterval(painter);
    await ops?.close().catch((err: unknown) => logger.error({ err }, 'closing the ops endpoint'));
    if (rooms.state === 'open') await rooms.close().catch((err: unknown) => logger.error({ err }, 'closing the rooms'));
    await rt.stop().catch((err: unknown) => logger.error({ err }, 'stopping the runtime'));
    await removeDir();
  }
  return exitCode;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`gateway demo failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
