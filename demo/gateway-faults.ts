/**
 * The gateway demo's faults: how each instance is started (its settings, credentials and limits,
 * loopback or HTTP against the simulator, with the fault it will get prepared), and the schedule
 * that injects each fault at its time (a send carrying it, or over HTTP the simulator's own 500
 * and revoked token), recording who shared the faulted instance's worker just before.
 *
 * @packageDocumentation
 */
import type { Runtime } from '../src/index.js';
import type { Args } from './gateway-args.js';
import { CONNECT_FAILURES, FAULT_AT, SEND_FAILURES, TOKEN, WORKER_ENDING, roomList } from './gateway-plan.js';
import type { FaultRecord, Inst } from './gateway-state.js';
import type { PlatformSim } from './platform-sim.js';

/** The channel module of the HTTP mode. */
const GATEWAY_SIM = new URL('./channels/gateway-sim.js', import.meta.url);

/** What `rt.startInstance` takes. */
export type StartOptions = Parameters<Runtime['startInstance']>[0];

/** Each instance's token over HTTP (the revoked one is {@link TOKEN}). */
export const tokenOf = (inst: Inst): string => (inst.fault === 'fatal' ? TOKEN : `${inst.id}-token-${inst.index}`);

/**
 * How `inst` is started: a loopback instance, or over HTTP (`sim`) a `gateway-sim` instance with
 * its token. Over HTTP the provider fault's refused connects and failing sends are queued in the
 * simulator here.
 */
export function startOptions(inst: Inst, args: Args, sim: PlatformSim | undefined): StartOptions {
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
  let start: StartOptions = { id: inst.id, name: inst.id, channelType: 'loopback', channel: 'loopback', settings, ...extra };
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
  return start;
}

/** What {@link scheduleFaults} needs of the run. */
export interface FaultContext {
  args: Args;
  insts: readonly Inst[];
  rt: Pick<Runtime, 'listHealth'>;
  sim: PlatformSim | undefined;
  /** False once the run is closing: a fault due then is not injected. */
  isRunning: () => boolean;
  /** Sends through the runtime, counted; resolves with the outcome (`delivered` or an error code). */
  send: (inst: Inst, message: unknown) => Promise<string>;
  note: (line: string) => void;
  logger: { error(obj: object, msg: string): void };
  /** The injection timers go here (cleared at the end). */
  timers: NodeJS.Timeout[];
}

/** Schedules each planned fault at its time in the run (from now); returns their records. */
export function scheduleFaults({ args, insts, rt, sim, isRunning, send, note, logger, timers }: FaultContext): FaultRecord[] {
  const faults: FaultRecord[] = [];
  for (const inst of insts) {
    if (!inst.fault) continue;
    const rec: FaultRecord = { fault: inst.fault, instance: inst, atMs: Math.round(args.durationMs * FAULT_AT[inst.fault]), injectedAt: undefined, sendOutcome: 'not sent', threadId: null, mates: [] };
    faults.push(rec);
    const inject = async () => {
      // Who shares the faulted instance's worker, just before the fault.
      const before = await rt.listHealth();
      if (!isRunning()) return;
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
  return faults;
}
