/**
 * Routes what an instance's worker posts on the data port: acks go to the data plane, inbound
 * batches to delivery, channel logs to the instance's logger, and lifecycle notices (status,
 * reconnects, probes, failures, faults) to the instance's server and the runtime's restart logic.
 */
import type { MessagePort } from 'node:worker_threads';
import { ChannelInvalidError } from '../errors.js';
import { scrubValue } from '../instance/record.js';
import type { ChildExit } from '../supervisor/types.js';
import type { WorkerHost } from '../worker/host.js';
import type { InstanceWorkerApi, LifecycleBody } from '../wire/protocol.js';
import type { DataPlane, RuntimeCounters } from './data-plane.js';
import { RECONNECT_EXHAUSTED, type Entry } from './entry.js';
import { noticeSchema } from './protocol.js';
import { learnWorkerCode } from './worker-code.js';
import { describeIssues } from '../validate.js';

/** What notice routing needs of its runtime. */
export interface NoticeContext {
  readonly data: DataPlane;
  readonly counters: RuntimeCounters;
  /** Whether the instance is `running` (see `InstanceLifecycle.running`). */
  running(entry: Entry): boolean;
  /** The instance goes to `error` (and, when `recover`, a fresh start is scheduled). */
  toError(entry: Entry, reason: string, recover: boolean): void;
  /** The instance alone starts over in its shared worker, after its backoff. */
  restartInPlace(entry: Entry, kind: string, reason: string, exit?: ChildExit): void;
  /** Fatal: the instance goes to `error`, no restart loop. */
  fatal(entry: Entry, reason: string): void;
}

export class Notices {
  readonly #ctx: NoticeContext;
  readonly #data: DataPlane;
  readonly #counters: RuntimeCounters;

  constructor(ctx: NoticeContext) {
    this.#ctx = ctx;
    this.#data = ctx.data;
    this.#counters = ctx.counters;
  }

  /** A message on the data port about this instance. */
  onMessage(entry: Entry, host: WorkerHost<InstanceWorkerApi>, port: MessagePort, raw: object): void {
    const m = raw as { t?: unknown };
    if (m.t === 'acks') return this.#data.onAcks(entry, m);
    const parsed = noticeSchema.safeParse(raw);
    if (!parsed.success) {
      this.#counters.malformed++;
      const issues = describeIssues(parsed.error.issues);
      entry.log.warn({ issues, malformedMessages: this.#counters.malformed }, 'malformed notice from instance worker');
      return;
    }
    try {
      this.#onNotice(entry, host, port, parsed.data);
    } catch (err) {
      // Never let one worker's notice take the main thread down.
      this.#counters.malformed++;
      entry.log.warn({ reason: entry.server.redactReason(err) }, 'notice from instance worker could not be handled');
    }
  }

  #onNotice(entry: Entry, host: WorkerHost<InstanceWorkerApi>, port: MessagePort, n: LifecycleBody): void {
    const { server } = entry;
    if (n.t === 'inbound') return this.#data.deliver(entry, port, n.messages, n.n, n.cursor);
    if (n.t === 'log') {
      const obj = n.obj ? (scrubValue(n.obj, entry.secrets) as Record<string, unknown>) : {};
      entry.log[n.level]({ ...obj, source: 'channel' }, server.redactReason(n.msg) ?? '');
      return;
    }
    // Lifecycle notices from a worker that is no longer the instance's current one are stale.
    if (entry.host !== host || !this.#ctx.running(entry)) return;
    switch (n.t) {
      case 'status':
        if (n.status === 'connecting') server.notifyConnecting();
        else if (n.status === 'connected') {
          server.notifyConnected(n.meta ?? {});
          this.#data.pump(entry);
          learnWorkerCode(host);
        }
        else server.notifyDisconnected(n.reason ?? 'unknown');
        return;
      case 'reconnect':
        if (n.phase === 'attempt') server.notifyReconnectAttempt(n.attempt, n.reason);
        else server.notifyReconnect(n.phase, n.attempt, n.reason, n.delayMs, n.class);
        // The instance spent its reconnect attempts: it starts over in a fresh worker, a restart
        // its supervisor counts (and escalates past its intensity), as for a crash.
        // In a shared worker it starts over in place; its worker-mates go on.
        if (n.phase === 'exhausted') {
          if (entry.group?.dedicated) void host.terminate(RECONNECT_EXHAUSTED);
          else this.#ctx.restartInPlace(entry, RECONNECT_EXHAUSTED, RECONNECT_EXHAUSTED);
        }
        return;
      case 'probe':
        server.notifyProbe(n.outcome, n.latencyMs, n.reason, n.class);
        if (n.outcome === 'failed') {
          server.notifyFailure(n.reason ?? 'probe failed');
          if (server.currentStatus === 'error') this.#ctx.toError(entry, `max consecutive failures: ${n.reason ?? 'probe failed'}`, true);
        } else if (n.outcome === 'ok') server.notifySuccess();
        return;
      case 'failure':
        server.notifyFailure(n.reason);
        if (server.currentStatus === 'error') this.#ctx.toError(entry, `max consecutive failures: ${n.reason}`, true);
        return;
      case 'success':
        server.notifySuccess();
        return;
      case 'fault':
        // An error escaped one of its callbacks in a shared worker: it alone starts over.
        this.#ctx.restartInPlace(entry, 'crash', n.reason, { class: 'crash', reason: n.reason });
        return;
      case 'fatal':
        if (n.code === 'channel_invalid') entry.failure = new ChannelInvalidError(entry.id, server.redactReason(n.reason) ?? 'invalid channel');
        this.#ctx.fatal(entry, n.reason);
        return;
    }
  }
}
