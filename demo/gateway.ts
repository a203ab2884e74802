/**
 * The gateway demo: a small chat gateway built only on threadvisor's public API.
 *
 * - N `loopback` instances (one worker thread each) poll generated inbound traffic for many rooms.
 * - Every inbound message goes to its room's keyed agent in an `InstanceManager` (get-or-start;
 *   idle rooms hibernate to a `FileStorage` under a temp dir and thaw on their next message);
 *   the agent's reply goes back out with `rt.send(instanceId, reply)` through that instance's
 *   outbound queue (at least once, across worker deaths).
 * - On a schedule, five faults hit five distinct instances: a crash, a hang (busy loop), a heap
 *   blow-up (under `resourceLimits`), a burst of provider errors (refused connects, 503s on send,
 *   a connection reset) and revoked credentials (fatal). The other instances are siblings that
 *   must not notice.
 * - A live table (in place on a TTY, periodic log lines otherwise), then a summary; the exit code
 *   is non-zero when a send was lost, a sibling was disturbed or a fault went undetected.
 *
 *   npm run demo -- [--duration <s>] [--instances <n>] [--rooms <n>] [--rate <n>] [--json] [--log-level <level>]
 *
 * @packageDocumentation
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { DeliveryFailedError, FileStorage, InstanceManager, Runtime, ThreadvisorError } from '../src/index.js';
import { RoomAgent, type RoomReply } from './room-agent.js';
import { redraw, renderLogLine, secs, type Frame, type InstanceRow } from './table.js';

// ───────────────────────────────────────────────────────────────────────── options

const USAGE = `threadvisor gateway demo: loopback instances on worker threads, rooms as keyed agents,
faults injected on a schedule, and a summary that must show nothing lost.

usage: npm run demo -- [options]        (or: node dist/demo/gateway.js [options])

  --duration <s>       seconds to run after warm-up (default 30, at least 6)
  --instances <n>      loopback instances, one worker thread each (default 8, at least 2);
                       the faults go to the first min(5, n - 1), the rest are siblings
  --rooms <n>          rooms per instance (default 24; a quarter of them are hot)
  --rate <n>           inbound messages per second per instance (default 20)
  --json               print the summary as one JSON object on the last line of stdout;
                       everything else goes to stderr
  --log-level <level>  level of the library's pino logs on stderr: fatal, error, warn (default),
                       info, debug, trace, silent
  --help               this text

exit code: 0 when nothing was lost, no sibling was disturbed and every fault was detected.`;

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

interface Args {
  durationMs: number;
  instances: number;
  rooms: number;
  rate: number;
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
        rooms: { type: 'string', default: '24' },
        rate: { type: 'string', default: '20' },
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
  const num = (name: string, raw: string, min: number, integer: boolean): number => {
    const n = Number(raw);
    if (!Number.isFinite(n) || n < min || (integer && !Number.isInteger(n))) {
      process.stderr.write(`--${name} must be ${integer ? 'an integer' : 'a number'} >= ${min}, got ${raw}\n\n${USAGE}\n`);
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
    rooms: num('rooms', values.rooms, 1, true),
    rate: num('rate', values.rate, 1, false),
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
  provider: '3 refused connects + 6 HTTP 503s at start, then a connection reset',
  fatal: 'credentials revoked (HTTP 401): fatal, no restart loop',
};
const CONNECT_FAILURES = 3;
const SEND_FAILURES = 6;
/** The credential of the instance whose token gets revoked: it never shows in logs, events or health. */
const TOKEN = 'demo-token-8c1f2e';
const HEARTBEAT = { intervalMs: 250, maxMissed: 4 };
/** Attempts of each instance's first start (see `startOne`). */
const START_ATTEMPTS = 3;
/** Hot rooms appear this many times in the loopback's round-robin list; cold ones once. */
const HOT_WEIGHT = 8;

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
  reason: string;
  kind?: string;
  restartCount: number;
}
interface ReasonEvent extends InstanceEvent {
  reason: string;
  trigger?: string;
}
interface ReconnectEvent extends InstanceEvent {
  phase: 'scheduled' | 'attempt' | 'failed' | 'exhausted';
  attempt: number;
  reason?: string;
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

// ───────────────────────────────────────────────────────────────────────── main

async function main(): Promise<number> {
  const args = parseCli();
  const out = args.json ? process.stderr : process.stdout;
  const tty = out.isTTY === true;
  const say = (line: string) => out.write(`${line}\n`);
  const logger = pino({ level: args.logLevel }, pino.destination(2));

  const names = Array.from({ length: args.instances }, (_, i) => `gw-${i}`);
  const faultCount = Math.min(FAULT_ORDER.length, args.instances - 1);
  const insts: Inst[] = names.map((id, index) => ({
    index,
    id,
    fault: index < faultCount ? FAULT_ORDER[index] : undefined,
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
  const removeDir = () => rm(dir, { recursive: true, force: true });
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
  const note = (line: string) => {
    const text = `${stamp()} ${line}`;
    eventLines.push(text);
    if (eventLines.length > 14) eventLines.shift();
    if (!tty) say(text);
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
    note(`${inst.id} restart: kind ${kind}, class ${e.class} (${e.reason})`);
  });
  rt.on('instance:connected', (e: InstanceEvent) => {
    const inst = nameOf(e);
    if (!inst) return;
    const again = inst.connected.length > 0 || inst.reconnectFailures.length > 0;
    inst.connected.push(e.at);
    if (again) note(`${inst.id} connected${inst.connected.length > 1 ? ' again' : ` after ${inst.reconnectFailures.length} refused connect(s)`}`);
  });
  rt.on('instance:disconnected', (e: ReasonEvent) => {
    const inst = nameOf(e);
    if (!inst) return;
    inst.disconnected.push(e);
    note(`${inst.id} disconnected: ${e.reason}`);
  });
  rt.on('instance:error', (e: ReasonEvent) => {
    const inst = nameOf(e);
    if (!inst) return;
    inst.errors.push(e);
    note(`${inst.id} error (${e.trigger ?? '?'}): ${e.reason}`);
  });
  rt.on('instance:reconnect', (e: ReconnectEvent) => {
    const inst = nameOf(e);
    if (!inst || (e.phase !== 'failed' && e.phase !== 'exhausted')) return;
    inst.reconnectFailures.push(e);
  });
  rt.on('message:failed', () => t.handlerErrors++);

  const timers: NodeJS.Timeout[] = [];
  let painter: NodeJS.Timeout | undefined;
  let exitCode: number;
  const faults: FaultRecord[] = [];
  try {
    // ---- start the instances -------------------------------------------------------------
    const header = `threadvisor gateway · ${args.instances} loopback instances · ${args.rooms} rooms each · ${args.rate} msg/s each · idle ${idleTimeoutMs} ms`;
    say(`${header} · storage ${dir}`);
    say(`starting ${args.instances} instances (faults for ${faultCount} of them) …`);
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
      for (let attempt = 1; ; attempt++) {
        try {
          await rt.startInstance({ id: inst.id, name: inst.id, channelType: 'loopback', channel: 'loopback', settings, ...extra });
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
    for (let i = 0; i < insts.length; i += 2) await Promise.all(insts.slice(i, i + 2).map(startOne));
    // Warm-up: every instance connected (the provider instance is still fighting its refused
    // connects, on purpose; it is not waited for).
    const warm = await waitFor(() => insts.every((i) => i.fault === 'provider' || i.connected.length > 0 || i.errors.length > 0) || interrupted, 20_000);
    if (!warm) note('warm-up: not every instance connected within 20 s');
    for (const inst of insts) {
      inst.prevInbound = inst.inbound;
      inst.prevDelivered = inst.delivered;
    }

    // ---- run, with the fault schedule --------------------------------------------------
    t0 = Date.now();
    for (const inst of insts) {
      if (!inst.fault) continue;
      const rec: FaultRecord = { fault: inst.fault, instance: inst, atMs: Math.round(args.durationMs * FAULT_AT[inst.fault]), injectedAt: undefined, sendOutcome: 'not sent' };
      faults.push(rec);
      timers.push(
        setTimeout(() => {
          if (phase !== 'running') return;
          const fault = rec.fault === 'provider' ? 'disconnect' : rec.fault;
          rec.injectedAt = Date.now();
          rec.sendOutcome = 'pending';
          note(`inject ${rec.fault} → ${inst.id}: send({ fault: '${fault}' })`);
          void send(inst, { id: `fault-${rec.fault}`, fault }).then((outcome) => (rec.sendOutcome = outcome));
        }, rec.atMs),
      );
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
          worker: h?.worker?.state ?? '-',
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
    const paint = async () => {
      const f = await frame();
      if (tty) out.write(redraw(f, out.columns ?? 120));
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
    await paint();
    const final = new Map(insts.map((i) => [i.id, i.health]));
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
        const kinds: string[] = rec.fault === 'oom' ? ['oom', 'hang'] : [rec.fault];
        const r = inst.restarts.find((e) => afterFault(e.at) && kinds.includes(e.kind ?? ''));
        const c = r ? connectedAfter(r.at) : undefined;
        res.detectedAs = r
          ? `restart kind ${r.kind}${r.kind === rec.fault ? '' : ' (the allocation loop blocked the event loop past the heartbeat first)'}`
          : (inst.restarts.find((e) => afterFault(e.at))?.kind ?? null);
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
    const siblings = insts.filter((i) => !i.fault);
    const disturbed = siblings
      .map((i) => ({ instance: i.id, restarts: i.restarts.length, errors: i.errors.length, disconnects: i.disconnected.length, reconnectFailures: i.reconnectFailures.length }))
      .filter((d) => d.restarts + d.errors + d.disconnects + d.reconnectFailures > 0);
    const siblingsDisturbed = disturbed.reduce((n, d) => n + d.restarts + d.errors + d.disconnects + d.reconnectFailures, 0);
    const byFault = (f: FaultName) => faultResults.find((r) => r.fault === f);
    const sum = (pick: (h: Health) => number) => [...final.values()].reduce((n, h) => n + (h ? pick(h) : 0), 0);
    const summary = {
      ok: false,
      durationMs: Date.now() - t0,
      instances: args.instances,
      roomsPerInstance: args.rooms,
      ratePerSecPerInstance: args.rate,
      idleTimeoutMs,
      inbound: t.inbound,
      inboundAfterClose: t.inboundAfterClose,
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
      siblingsDisturbed,
      disturbedSiblings: disturbed,
      agents: { rooms: agents.keys.size, activations: agents.started, thawed: agents.thaws, hibernations: agents.hibernations },
      handlerErrors: t.handlerErrors,
      startRetries,
      interrupted,
    };
    summary.ok = lost === 0 && siblingsDisturbed === 0 && faultResults.every((r) => r.ok || r.skipped);
    exitCode = !summary.ok ? 1 : interrupted ? 130 : 0;

    // ---- print it --------------------------------------------------------------------------
    const ms = (v: number | null) => (v === null ? '-' : `${v} ms`);
    say('');
    say(`summary (${secs(summary.durationMs)}, ${args.instances} instances, ${agents.keys.size} rooms)`);
    say(`  inbound ${t.inbound} (${t.inboundAfterClose} after closing began, not answered) · accepted ${accepted} · delivered ${t.delivered} · rejected ${t.rejected} ${JSON.stringify(rejectedByCode)} · refused ${t.refused} ${JSON.stringify(refusedByCode)}`);
    say(`  lost ${lost}${lost === 0 ? ' (every accepted send settled)' : '  <-- LOST'} · redelivered after a worker death ${summary.redelivered} · retried ${summary.deliveryRetries} · duplicates skipped ${summary.duplicatesSkipped}`);
    say(`  restarts by kind ${JSON.stringify(restartsByKind)} · by class ${JSON.stringify(restartsByClass)}`);
    say(`  agents: ${agents.started} activations, ${agents.thaws} thawed from disk, ${agents.hibernations} hibernations`);
    for (const r of faultResults) {
      say(`  ${r.ok ? 'OK  ' : r.skipped ? 'SKIP' : 'FAIL'} ${r.fault.padEnd(8)} ${r.instance.padEnd(6)} ${r.what}`);
      if (r.skipped) continue;
      say(`       injected at ${ms(r.injectedAtMs)} → ${r.detectedAs ?? 'NOT DETECTED'}; detected in ${ms(r.detectMs)}${r.recoveredMs === null ? '' : `, connected again after ${ms(r.recoveredMs)}`}; fault send: ${r.faultSend}`);
    }
    say(`  hang detected in ${ms(summary.hangDetectMs)} (heartbeat ${HEARTBEAT.intervalMs} ms × ${HEARTBEAT.maxMissed}) · crash to connected again ${ms(summary.crashToConnectedMs)}`);
    if (startRetries.length > 0) say(`  first starts retried: ${startRetries.map((r) => `${r.instance} (${r.reason})`).join('; ')}`);
    say(`  siblings ${siblings.map((i) => i.id).join(', ') || '-'}: ${siblingsDisturbed === 0 ? 'undisturbed' : `DISTURBED ${JSON.stringify(disturbed)}`}`);
    say(summary.ok ? `result: OK${interrupted ? ' (interrupted: faults not yet injected were skipped)' : ''}` : 'result: FAILED');
    if (args.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  } finally {
    process.off('SIGINT', onSigint);
    for (const timer of timers) clearTimeout(timer);
    if (painter) clearInterval(painter);
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
