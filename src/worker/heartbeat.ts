/**
 * The heartbeat of a {@link WorkerHost}: pings on the dedicated heartbeat port on a fixed
 * schedule, reads the pongs (ELU and heap of the worker), counts missed beats, and runs the stall
 * watchdog that declares the worker hung after `maxMissed` intervals without a pong.
 *
 * @packageDocumentation
 */
import type { EventEmitter } from 'node:events';
import type { MessagePort } from 'node:worker_threads';
import type { Logger } from 'pino';
import { publish } from '../telemetry.js';
import type { PongMessage } from '../wire/host.js';
import type { WorkerHealth, WorkerHostStats } from './host-types.js';

/** The fields of {@link WorkerHealth} the heartbeat knows. */
export type HeartbeatHealth = Pick<WorkerHealth, 'lastPongAt' | 'lastPongAgeMs' | 'missedBeats' | 'elu' | 'heapUsed'>;

/** The counters of {@link WorkerHostStats} the heartbeat keeps. */
export type HeartbeatCounters = Pick<WorkerHostStats, 'pings' | 'pongs' | 'missedBeats' | 'supervisorStalls'>;

/** What a {@link HeartbeatMonitor} needs of its host. */
export interface HeartbeatHost {
  /** The host: `heartbeat` and `heartbeat_missed` are published on it. */
  readonly emitter: EventEmitter;
  readonly childId: string;
  readonly threadId: number;
  /** The main-thread end of the heartbeat channel. */
  readonly port: MessagePort;
  readonly log: Logger;
  /** Milliseconds between pings (0: no heartbeats). */
  readonly intervalMs: number;
  /** Consecutive unanswered pings after which the worker counts as hung. */
  readonly maxMissed: number;
  /** Whether the worker is up and not dying: only then is it pinged and judged. */
  isWatched(): boolean;
  /** The watchdog's verdict: no pong for `maxMissed` intervals (the missed count is already full). */
  onHang(): void;
  /** A pong that fails the protocol. */
  onMalformed(reason: string): void;
}

/** The heartbeat of one worker: ping schedule, pongs, missed beats and the stall watchdog. */
export class HeartbeatMonitor {
  readonly #host: HeartbeatHost;

  #heartbeatTimer: NodeJS.Timeout | undefined;
  /** Fires when no pong has arrived for `maxMissed × intervalMs`; refreshed by every pong. */
  #watchdog: NodeJS.Timeout | undefined;
  /** When the watchdog is due (performance.now()), and its current duration. */
  #watchdogDue = 0;
  #watchdogMs = 0;
  /** A stalled main thread already gave the worker one more interval (reset by a pong). */
  #graced = false;
  /** Set between the watchdog firing and its verdict (see {@link HeartbeatMonitor.#onWatchdog}). */
  #verdict: NodeJS.Immediate | undefined;

  #seq = 0;
  #answeredSeq = 0;
  #lastPingAt = 0;
  #missed = 0;
  #lastPongAt: number | null = null;
  #elu: number | null = null;
  #heapUsed: number | null = null;

  #pings = 0;
  #pongs = 0;
  #stalls = 0;
  #missedTotal = 0;

  constructor(host: HeartbeatHost) {
    this.#host = host;
  }

  /** Milliseconds between pings (0: no heartbeats). */
  get intervalMs(): number {
    return this.#host.intervalMs;
  }

  /** Consecutive unanswered pings after which the worker counts as hung. */
  get maxMissed(): number {
    return this.#host.maxMissed;
  }

  /** Consecutive unanswered heartbeat ticks right now. */
  get missed(): number {
    return this.#missed;
  }

  /** The heartbeat's part of {@link WorkerHost.health}: last pong and its age, missed beats, ELU and heap. */
  health(): HeartbeatHealth {
    return {
      lastPongAt: this.#lastPongAt,
      lastPongAgeMs: this.#lastPongAt === null ? null : Date.now() - this.#lastPongAt,
      missedBeats: this.#missed,
      elu: this.#elu,
      heapUsed: this.#heapUsed,
    };
  }

  /** The heartbeat's counters of {@link WorkerHost.stats}. */
  counters(): HeartbeatCounters {
    return {
      pings: this.#pings,
      pongs: this.#pongs,
      missedBeats: this.#missedTotal,
      supervisorStalls: this.#stalls,
    };
  }

  /** Timers and immediates the heartbeat currently holds. */
  get timerCount(): number {
    return (this.#heartbeatTimer ? 1 : 0) + (this.#watchdog ? 1 : 0) + (this.#verdict ? 1 : 0);
  }

  /** Starts the ping schedule and the watchdog, when heartbeats are enabled. */
  start(): void {
    if (this.#host.intervalMs > 0) {
      this.#heartbeatTimer = setInterval(() => this.#tick(), this.#host.intervalMs);
      this.#heartbeatTimer.unref();
      // Hang = no sign of life for maxMissed intervals, measured from the last pong (not from
      // the next tick), so detection takes at most maxMissed × intervalMs after the loop blocks.
      this.#armWatchdog();
    }
  }

  #tick(): void {
    if (!this.#host.isWatched()) return;
    if (this.#seq > this.#answeredSeq) {
      if (this.#missed < this.#host.maxMissed) this.#countMissed();
      return;
    }
    this.#ping();
  }

  #ping(): void {
    this.#seq++;
    this.#pings++;
    this.#lastPingAt = performance.now();
    this.#host.port.postMessage({ type: 'ping', seq: this.#seq });
  }

  /** One more beat missed: counted, and published as `heartbeat_missed`. */
  #countMissed(): void {
    this.#missed++;
    this.#missedTotal++;
    const seq = this.#seq;
    const missed = this.#missed;
    publish(this.#host.emitter, 'worker:heartbeat_missed', () => ({
      childId: this.#host.childId,
      threadId: this.#host.threadId,
      seq,
      missed,
      maxMissed: this.#host.maxMissed,
    }), 'heartbeat_missed');
  }

  /** (Re)arms the watchdog: `ms` from now, by default the full `maxMissed × intervalMs`. */
  #armWatchdog(ms = this.#host.maxMissed * this.#host.intervalMs): void {
    this.#watchdogDue = performance.now() + ms;
    if (this.#watchdog !== undefined && ms === this.#watchdogMs) {
      this.#watchdog.refresh();
      return;
    }
    if (this.#watchdog !== undefined) clearTimeout(this.#watchdog);
    this.#watchdogMs = ms;
    this.#watchdog = setTimeout(() => this.#onWatchdog(), ms);
    this.#watchdog.unref();
  }

  #onWatchdog(): void {
    this.#watchdog = undefined;
    if (!this.#host.isWatched()) return;
    if (!this.#graced && performance.now() - this.#watchdogDue > this.#host.intervalMs) {
      // This thread ran more than an interval late (a long synchronous task, a GC pause): it
      // could neither ping nor read pongs meanwhile, so the silence proves nothing. Ping now and
      // give the worker one more interval to answer.
      this.#graced = true;
      this.#stalls++;
      this.#host.log.debug({ lateMs: Math.round(performance.now() - this.#watchdogDue) }, 'supervising thread stalled; pinging the worker again before judging it');
      this.#ping();
      this.#armWatchdog(this.#host.intervalMs);
      return;
    }
    // Pongs may wait in the port (timers run before I/O in a loop turn): the verdict waits one
    // turn, after the port is read.
    const pongs = this.#pongs;
    this.#verdict = setImmediate(() => {
      this.#verdict = undefined;
      if (!this.#host.isWatched() || this.#pongs !== pongs) return;
      this.#onHang();
    });
  }

  #onHang(): void {
    // No pong for maxMissed intervals: the ticks may lag the watchdog by part of an interval,
    // so the count is brought up to maxMissed here.
    while (this.#missed < this.#host.maxMissed) this.#countMissed();
    this.#host.onHang();
  }

  /** A pong (already validated against its schema) arrived on the heartbeat port. */
  onPong(msg: PongMessage): void {
    if (msg.seq > this.#seq) {
      this.#host.onMalformed(`pong for unsent ping ${msg.seq}`);
      return;
    }
    this.#pongs++;
    this.#answeredSeq = Math.max(this.#answeredSeq, msg.seq);
    this.#missed = 0;
    this.#graced = false;
    if (this.#heartbeatTimer !== undefined) this.#armWatchdog();
    this.#lastPongAt = Date.now();
    this.#elu = msg.elu;
    this.#heapUsed = msg.heapUsed;
    const rttMs = msg.seq === this.#seq ? performance.now() - this.#lastPingAt : Number.NaN;
    publish(this.#host.emitter, 'worker:heartbeat', () => ({
      childId: this.#host.childId,
      threadId: this.#host.threadId,
      seq: msg.seq,
      elu: msg.elu,
      heapUsed: msg.heapUsed,
      rttMs,
    }), 'heartbeat');
  }

  /** Stops pinging and judging: clears the schedule, the watchdog and a pending verdict. */
  stop(): void {
    if (this.#heartbeatTimer) clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
    if (this.#watchdog) clearTimeout(this.#watchdog);
    this.#watchdog = undefined;
    if (this.#verdict) clearImmediate(this.#verdict);
    this.#verdict = undefined;
  }
}
