/**
 * Health probes of one hosted instance: `probe` runs right after connect and then every
 * `probe.intervalMs` while the connection is open. A failed probe (returned or thrown,
 * recoverable) ends the connection; a fatal one ends the instance's attempts; a degraded one is
 * only reported.
 *
 * @packageDocumentation
 */
import { monotonicMs } from '../../src/wire/clock.js';
import type { ProbeOutcome } from '../../src/channel.js';
import type { FailureClass } from '../../src/wire/errors.js';
import type { LifecycleBody } from '../../src/wire/protocol.js';
import type { AnyChannel, Connection, InstanceContext } from './context.js';
import { clip, get, reasonOf, sleep } from './util.js';

const OUTCOMES: readonly string[] = ['ok', 'degraded', 'failed'];

/** Reads what a channel's `probe` returned. */
export function readProbeResult(result: unknown): { outcome: ProbeOutcome; reason?: string } {
  if (result === undefined || result === null || result === true) return { outcome: 'ok' };
  if (result === false) return { outcome: 'failed', reason: 'probe returned false' };
  if (typeof result === 'string' && OUTCOMES.includes(result)) return { outcome: result as ProbeOutcome };
  const outcome = get(result, 'outcome');
  if (typeof outcome === 'string' && OUTCOMES.includes(outcome)) {
    const reason = get(result, 'reason');
    return typeof reason === 'string' ? { outcome: outcome as ProbeOutcome, reason: clip(reason) } : { outcome: outcome as ProbeOutcome };
  }
  return { outcome: 'degraded', reason: 'probe returned an unexpected result' };
}

/** Probes while `conn` is open. */
export async function probeLoop(ctx: InstanceContext, channel: AnyChannel, conn: Connection): Promise<void> {
  const probe = channel.probe as NonNullable<AnyChannel['probe']>;
  const signal = conn.controller.signal;
  while (!signal.aborted) {
    const t0 = monotonicMs();
    let outcome: ProbeOutcome;
    let reason: string | undefined;
    let cls: FailureClass | undefined;
    try {
      ({ outcome, reason } = readProbeResult(await ctx.invoke('probe', ctx.config.timeouts.probeMs, signal, (c) => probe.call(channel, c))));
      if (outcome === 'degraded') cls = 'degraded';
      else if (outcome === 'failed') cls = 'recoverable';
    } catch (err) {
      outcome = 'failed';
      reason = reasonOf('probe', err);
      cls = ctx.classify(err);
    }
    // A probe that ended with its connection says nothing about the next one.
    if (signal.aborted) return;
    const latencyMs = Math.max(0, Math.round((monotonicMs() - t0) * 1000) / 1000);
    const notice: LifecycleBody & { t: 'probe' } = { t: 'probe', outcome, latencyMs };
    if (reason !== undefined) notice.reason = reason;
    if (cls !== undefined) notice.class = cls;
    ctx.report(notice);
    if (outcome === 'failed' && cls !== 'degraded') {
      const why = reason ?? 'probe failed';
      if (cls === 'fatal') ctx.enterFatal(why, 'fatal_probe', conn);
      else ctx.connectionLost(conn, why);
      return;
    }
    await sleep(ctx.config.probe.intervalMs, signal);
  }
}
