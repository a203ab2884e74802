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
 * - SIGTERM or SIGINT (`stopOnSignals` from `threadvisor/ops`) end the run early the same clean
 *   way: its `beforeStop` waits for the demo's drain before `rt.stop()`; exit code 0 after SIGTERM,
 *   130 after SIGINT; a second signal ends the process at once.
 *
 * This file wires the run together (the simulator, the rooms, the runtime and its events, the
 * live table, the shutdown); the rest is split by concern: `gateway-args.ts` (the flags),
 * `gateway-plan.ts` (the faults and the run's settings), `gateway-state.ts` (the bookkeeping and
 * the event lines), `gateway-faults.ts` (how instances start, and the fault schedule),
 * `gateway-summary.ts` (the verdict and the summary), `table.ts` (the table's rendering).
 *
 *   npm run demo -- [--duration <s>] [--instances <n>] [--per-worker <n>] [--rooms <n>] [--rate <n>] [--loopback] [--ops-port <n>] [--json] [--log-level <level>]
 *
 * @packageDocumentation
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { FileStorage, InstanceManager, Runtime } from '../src/index.js';
import { serveOps, stopOnSignals, type OpsServer } from '../src/ops.js';
import { parseCli, SIM_RATE_LIMIT } from './gateway-args.js';
import { scheduleFaults, startOptions } from './gateway-faults.js';
import { FAULT_ORDER, HEARTBEAT, planFaults, roomList, START_ATTEMPTS } from './gateway-plan.js';
import {
  errorCode,
  EventNotes,
  newInst,
  REFUSED,
  sleep,
  waitFor,
  type AgentCounts,
  type AgentEvent,
  type FaultRecord,
  type Inst,
  type InstanceEvent,
  type ReasonEvent,
  type ReconnectEvent,
  type RestartEvent,
  type StartRetry,
  type Totals,
} from './gateway-state.js';
import { verdict } from './gateway-summary.js';
import { startPlatformSim, type PlatformSim } from './platform-sim.js';
import { RoomAgent, type RoomReply } from './room-agent.js';
import { redraw, renderLogLine, renderTable, secs, type Frame, type InstanceRow } from './table.js';

async function main(): Promise<number> {
  const args = parseCli();
  const out = args.json ? process.stderr : process.stdout;
  const tty = out.isTTY === true;
  const say = (line: string) => out.write(`${line}\n`);
  const logger = pino({ level: args.logLevel }, pino.destination(2));

  const names = Array.from({ length: args.instances }, (_, i) => `gw-${i}`);
  const faultCount = Math.min(FAULT_ORDER.length, args.instances - 1);
  const plan = planFaults(args.instances, args.perWorker);
  const insts: Inst[] = names.map((id, index) => newInst(index, id, plan[index]));
  const byId = new Map(insts.map((i) => [i.id, i]));
  const listLength = roomList('x', args.rooms).length;
  const cycleMs = (listLength / args.rate) * 1000;
  // Cold rooms come round once per cycle: an idle timeout of about half a cycle makes them
  // hibernate and thaw all run long, while hot rooms stay resident.
  const idleTimeoutMs = Math.round(Math.min(3000, Math.max(300, cycleMs * 0.45)));

  // ---- SIGTERM / SIGINT: the same clean shutdown, early (installed once the runtime exists) --
  let wake: (() => void) | undefined;
  let interrupted = false;
  let signalled: NodeJS.Signals | undefined;
  /** Resolved once the demo drained (no new replies, every accepted send settled): `rt.stop()` may go. */
  let releaseStop = () => {};
  const drainedForStop = new Promise<void>((resolve) => (releaseStop = resolve));

  const dir = await mkdtemp(join(tmpdir(), 'threadvisor-gateway-'));
  // Over HTTP: the platform simulator, in this process, generating `rate` updates per second per token.
  const sim: PlatformSim | undefined = args.loopback ? undefined : await startPlatformSim({ updates: { perSec: args.rate }, rateLimit: { perSec: SIM_RATE_LIMIT } });
  const removeDir = async () => {
    await sim?.stop();
    await rm(dir, { recursive: true, force: true });
  };
  let phase: 'running' | 'closing' = 'running';
  const t: Totals = {
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
  const agents: AgentCounts = { started: 0, thaws: 0, hibernations: 0, keys: new Set<string>(), sleeping: new Set<string>() };
  const startRetries: StartRetry[] = [];
  /** Set when the warm-up is over: the run's clock (fault times, event stamps) starts there. */
  let t0 = 0;
  const notes = new EventNotes(say, tty, () => t0);
  const note = (line: string) => notes.note(line);
  const noteEach = (inst: Inst, text: string) => notes.noteEach(inst, text);

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
    reconnect: { maxAttempts: 6, initialDelayMs: 200, maxDelayMs: 2000 },
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
  // The first signal wakes the run's wait and starts the shutdown below; `rt.stop()` follows once
  // the demo drained. `exit: false`: the demo prints its summary and sets its own exit code. The
  // handlers go at the first signal, so a second one ends the process at once (its usual effect).
  const disposeSignals = stopOnSignals(rt, {
    exit: false,
    onSignal: (signal) => {
      interrupted = true;
      signalled = signal;
      process.stderr.write(`\n${signal}: shutting down cleanly (again to force)\n`);
      wake?.();
    },
    beforeStop: () => drainedForStop,
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
      const start = startOptions(inst, args, sim);
      // The heartbeat already runs while a new worker loads zod and the channel module; on an
      // overloaded machine that can exceed 4 × 250 ms, and a first start that fails is not
      // retried by the runtime (startInstance rejects with start_failure). Retry it here.
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
    faults.push(...scheduleFaults({ args, insts, rt, sim, isRunning: () => phase === 'running', send, note, logger, timers }));
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
        events: notes.lines,
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
    notes.flushBatches();
    await paint(true);
    const final = new Map(insts.map((i) => [i.id, i.health]));
    await ops.close();
    await rooms.close();
    releaseStop();
    await rt.stop();
    // rt.stop() settles whatever was still queued (typed `stopped`); give those a turn.
    await waitFor(() => t.outstanding === 0, 2000);
    const pendingAtExit = t.outstanding;

    // ---- the verdict and the summary --------------------------------------------------------
    exitCode = verdict(
      { args, insts, faults, final, t, t0, interrupted, idleTimeoutMs, rejectedByCode, refusedByCode, restartsByKind, restartsByClass, agents, startRetries, sim, drained, pendingAtExit },
      say,
    );
    // SIGTERM is an orchestrator's ordinary stop: a clean shutdown then exits 0 (SIGINT: 130).
    if (signalled === 'SIGTERM' && exitCode === 130) exitCode = 0;
  } finally {
    disposeSignals();
    releaseStop();
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
