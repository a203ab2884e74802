/**
 * The connect loop of one hosted instance: the initial connect, and after a loss, reconnect
 * attempts with bounded, jittered backoff (the boot's `reconnect` policy). Attempt 0 is the
 * initial connect; reconnect attempts are numbered 1..`reconnect.maxAttempts`. Once connected it
 * starts the inbound loop (`poll` or `listen`) and the probes.
 *
 * @packageDocumentation
 */
import { monotonicMs } from '../../src/wire/clock.js';
import { backoffDelay } from '../../src/wire/backoff.js';
import { retryAfterOf } from '../../src/wire/errors.js';
import { timerDelay } from '../../src/wire/timers.js';
import type { Connection, InstanceContext } from './context.js';
import { pollLoop, runListen } from './inbound.js';
import { probeLoop } from './probe.js';
import { clip, cloneable, crash, isPlainRecord, reasonOf, sleep } from './util.js';

/**
 * Reconnect attempts are exhausted: report it; nothing more is attempted. What follows is the
 * main thread's decision (the runtime starts the instance over), not this thread's: an instance's
 * outcome never ends the thread that hosts it.
 */
function exhausted(ctx: InstanceContext, attempt: number, reason: string): void {
  ctx.finished = true;
  ctx.report({ t: 'reconnect', phase: 'exhausted', attempt, reason: clip(reason), class: 'recoverable' });
}

/**
 * Connects, starting at `firstAttempt` (0: the initial connect, reported as `status connecting`;
 * n > 0: reconnect attempt n, after its backoff delay). `cause` is what broke the connection;
 * `retryAfterMs` (a channel error's, e.g. a 429's) is a floor on the first reconnect's delay, as a
 * failed connect's own `retryAfterMs` is on the next one.
 */
export async function connectLoop(ctx: InstanceContext, firstAttempt: number, cause?: string, retryAfterMs?: number): Promise<void> {
  const channel = ctx.channel;
  if (!channel) return;
  const { config } = ctx;
  const maxAttempts = Math.max(0, Math.floor(config.reconnect.maxAttempts));
  const loopStart = monotonicMs();
  let originalReason = cause;
  let attempt = firstAttempt;
  let floorMs = retryAfterMs;
  if (attempt > maxAttempts) {
    // No reconnect attempt left (maxAttempts 0, or connections that kept breaking at once): the
    // loss itself exhausts the budget.
    exhausted(ctx, maxAttempts, cause ?? 'connection lost');
    return;
  }
  for (;;) {
    if (ctx.stopped || ctx.finished) return;
    if (attempt === 0) {
      ctx.report({ t: 'status', status: 'connecting' });
    } else {
      const backoffMs = backoffDelay(ctx.backoff, attempt - 1);
      const delayMs = Math.round(floorMs === undefined ? backoffMs : timerDelay(Math.max(backoffMs, floorMs)));
      ctx.report({ t: 'reconnect', phase: 'scheduled', attempt, delayMs });
      await sleep(delayMs, ctx.stopController.signal);
      if (ctx.stopped) return;
      ctx.report({ t: 'reconnect', phase: 'attempt', attempt });
    }
    const conn: Connection = { controller: new AbortController(), opened: false, attempt, openedAt: 0 };
    const call = ctx.invoke('connect', config.timeouts.connectMs, conn.controller.signal, (c) => channel.connect(c));
    ctx.connecting = { conn, call };
    let meta: unknown;
    try {
      meta = await call;
      conn.opened = true;
    } catch (err) {
      ctx.connecting = undefined;
      conn.controller.abort(err);
      if (ctx.stopped) return;
      const cls = ctx.classify(err);
      const reason = reasonOf('connect', err);
      floorMs = retryAfterOf(err);
      originalReason ??= reason;
      ctx.report({ t: 'reconnect', phase: 'failed', attempt, reason, class: cls });
      if (cls === 'fatal') {
        ctx.enterFatal(reason, 'fatal_connect');
        return;
      }
      ctx.report({ t: 'status', status: 'disconnected', reason });
      if (attempt >= maxAttempts) {
        exhausted(ctx, attempt, reason);
        return;
      }
      attempt++;
      continue;
    }
    ctx.connecting = undefined;
    // A stop that arrived meanwhile closes this connection itself (see InstanceContext.stop).
    if (ctx.stopped) return;
    ctx.opened(conn);
    const info: Record<string, unknown> = isPlainRecord(meta) ? (cloneable(meta) as Record<string, unknown>) : {};
    if (attempt > 0) {
      info.attempts = attempt;
      if (originalReason !== undefined) info.reason = originalReason;
      info.elapsedMs = Math.round(monotonicMs() - loopStart);
    }
    ctx.report(Object.keys(info).length > 0 ? { t: 'status', status: 'connected', meta: info } : { t: 'status', status: 'connected' });
    if (channel.poll) void pollLoop(ctx, channel, conn).catch(crash);
    else if (channel.listen) runListen(ctx, channel, conn);
    if (channel.probe && config.probe.intervalMs > 0) void probeLoop(ctx, channel, conn).catch(crash);
    return;
  }
}
