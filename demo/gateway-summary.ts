/**
 * The gateway demo's verdict and summary, once the run is over: each fault judged (detected as
 * what, how fast, connected again), the expected casualties of a worker-ending fault and the
 * disturbed siblings, nothing lost, the simulator clean; printed as lines, and with `--json` as
 * one JSON object on the last line of stdout. Returns the exit code.
 *
 * @packageDocumentation
 */
import type { Args } from './gateway-args.js';
import { CONNECT_FAILURES, FAULT_TEXT, HEARTBEAT, WORKER_ENDING, type FaultName } from './gateway-plan.js';
import { simulatorTotals, type AgentCounts, type FaultRecord, type Health, type Inst, type StartRetry, type Totals } from './gateway-state.js';
import type { PlatformSim } from './platform-sim.js';
import { secs } from './table.js';

/** What the run leaves for the verdict. */
export interface RunRecord {
  args: Args;
  insts: readonly Inst[];
  faults: readonly FaultRecord[];
  /** Each instance's last health, read before the runtime stopped. */
  final: ReadonlyMap<string, Health | undefined>;
  t: Totals;
  /** When the warm-up ended (the run's clock). */
  t0: number;
  interrupted: boolean;
  idleTimeoutMs: number;
  rejectedByCode: Record<string, number>;
  refusedByCode: Record<string, number>;
  restartsByKind: Record<string, number>;
  restartsByClass: Record<string, number>;
  agents: AgentCounts;
  startRetries: readonly StartRetry[];
  sim: PlatformSim | undefined;
  /** Every accepted send settled before the runtime stopped. */
  drained: boolean;
  /** Sends still unsettled after the runtime stopped. */
  pendingAtExit: number;
}

/** Judges the run, prints the summary with `say` (and the JSON with `--json`); returns the exit code (0, 1 failed, 130 interrupted). */
export function verdict(run: RunRecord, say: (line: string) => void): number {
  const { args, insts, faults, final, t, t0, interrupted, idleTimeoutMs, rejectedByCode, refusedByCode, restartsByKind, restartsByClass, agents, startRetries, sim, drained, pendingAtExit } = run;
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
  const exitCode = !summary.ok ? 1 : interrupted ? 130 : 0;

  // ---- print it
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
  return exitCode;
}
