/**
 * Warm standby workers (`RuntimeOptions.standby`): instance workers booted ahead of need, with
 * the worker's modules and the channel modules seen so far already imported, and no instance.
 * A worker group that needs a thread (a new instance, a restart after a crash or a hang, a
 * quarantine split) takes one here instead of spawning, and hosts its instances in it by control
 * calls; the pool then boots a replacement in the background.
 *
 * The replacement is booted one at a time, after a pause ({@link REFILL_DELAY_MS}), so that what
 * took the spare (a restart, a burst of starts) runs first. The thread's OS priority is not
 * lowered: a thread cannot raise it back when it is taken (not without privileges). A standby
 * worker that dies while it waits (its heartbeat is watched like any worker's) is replaced; a
 * boot that fails is retried with a growing pause, up to {@link MAX_RETRY_DELAY_MS}.
 *
 * @packageDocumentation
 */
import { isDeepStrictEqual } from 'node:util';
import { MessageChannel, type MessagePort, type ResourceLimits } from 'node:worker_threads';
import type { Logger } from 'pino';
import { WorkerHost } from '../worker/host.js';
import type { InstanceWorkerApi, StandbyBoot } from '../wire/protocol.js';
import { builtinUrl, type Resolved } from './options.js';
import { instanceWorkerCode } from './worker-code.js';

/** The pause before a replacement boots, ms. */
export const REFILL_DELAY_MS = 20;
/** The longest pause between failed boots, ms. */
export const MAX_RETRY_DELAY_MS = 30_000;

/** How the pool boots its workers (the runtime's settings for shared workers). */
export interface StandbyPoolOptions {
  /** Workers kept booted. */
  readonly workers: number;
  readonly filename: URL;
  readonly logger: Logger;
  readonly heartbeat: { intervalMs: number; maxMissed: number };
  readonly readyTimeoutMs: number;
  /** How long a standby worker gets to stop when the runtime stops. */
  readonly shutdownMs: number;
  /** The limits standby workers are booted with: only a group with the same limits takes one. */
  readonly resourceLimits: ResourceLimits | undefined;
  readonly redact: (text: string) => string;
}

/** A booted standby worker and the main thread's end of its data port. */
export interface Spare {
  readonly host: WorkerHost<InstanceWorkerApi>;
  readonly port: MessagePort;
}

/** What the pool holds and has done (see `Runtime.standby`). */
export interface StandbyStats {
  /** Workers it keeps booted (the option). */
  workers: number;
  /** Booted and waiting now. */
  ready: number;
  /** Thread ids of the waiting workers. */
  threadIds: number[];
  /** Spares taken by worker groups since the start. */
  taken: number;
  /** Workers booted since the start (taken or waiting or lost). */
  booted: number;
  /** Boots that failed since the start. */
  failedBoots: number;
}

/** Keeps `workers` instance workers booted for the runtime's worker groups. */
export class StandbyPool {
  readonly #o: StandbyPoolOptions;
  readonly #ready: Spare[] = [];
  /** Channel modules seen (hrefs): imported by every standby worker. */
  readonly #modules = new Set<string>();
  #booting: Promise<void> | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Boots failed in a row. */
  #failing = 0;
  #taken = 0;
  #booted = 0;
  #failedBoots = 0;
  #n = 0;

  constructor(options: StandbyPoolOptions) {
    this.#o = options;
  }

  /** Starts booting the workers (in the background). */
  start(): void {
    this.#fill(0);
  }

  /** What the pool holds and has done. */
  stats(): StandbyStats {
    return {
      workers: this.#o.workers,
      ready: this.#ready.length,
      threadIds: this.#ready.map((s) => s.host.threadId),
      taken: this.#taken,
      booted: this.#booted,
      failedBoots: this.#failedBoots,
    };
  }

  /**
   * A booted worker for a group whose workers have `resourceLimits`, or undefined (none waiting,
   * or other limits). The caller owns it from now on; a replacement boots in the background.
   */
  take(resourceLimits: ResourceLimits | undefined): Spare | undefined {
    if (this.#closed || !isDeepStrictEqual(resourceLimits ?? {}, this.#o.resourceLimits ?? {})) return undefined;
    let spare: Spare | undefined;
    while ((spare = this.#ready.shift()) !== undefined && (spare.host.state !== 'up' || spare.host.isDoomed)) spare.port.close();
    if (spare) this.#taken++;
    this.#fill(REFILL_DELAY_MS);
    return spare;
  }

  /** A channel module (href) an instance uses: every standby worker imports it from now on. */
  seen(url: string): void {
    if (this.#modules.has(url)) return;
    this.#modules.add(url);
    for (const s of this.#ready) void s.host.call('preload', url).catch(() => undefined);
  }

  /** Stops every waiting worker and boots no more. Leaves no thread, port or timer. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    await this.#booting;
    const spares = this.#ready.splice(0);
    await Promise.all(
      spares.map(async (s) => {
        await s.host.shutdown(this.#o.shutdownMs);
        s.port.close();
      }),
    );
  }

  /** Boots the next worker after `delayMs`, unless one is booting or enough wait. */
  #fill(delayMs: number): void {
    if (this.#closed || this.#booting || this.#timer || this.#ready.length >= this.#o.workers) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#booting = this.#boot().finally(() => {
        this.#booting = undefined;
        this.#fill(this.#failing === 0 ? 0 : Math.min(MAX_RETRY_DELAY_MS, 250 * 2 ** this.#failing));
      });
    }, delayMs);
  }

  async #boot(): Promise<void> {
    const data = new MessageChannel();
    const boot: StandbyBoot = { standby: true, data: data.port2, preload: [...this.#modules] };
    const code = instanceWorkerCode();
    if (code !== undefined) boot.code = code;
    let host: WorkerHost<InstanceWorkerApi>;
    try {
      host = await WorkerHost.start<InstanceWorkerApi>(
        {
          filename: this.#o.filename,
          name: `threadvisor:standby-${++this.#n}`,
          workerData: boot,
          transferList: [data.port2],
          heartbeat: this.#o.heartbeat,
          readyTimeoutMs: this.#o.readyTimeoutMs,
          ...(this.#o.resourceLimits ? { resourceLimits: this.#o.resourceLimits } : {}),
        },
        { childId: 'worker', logger: this.#o.logger, redact: this.#o.redact },
      );
    } catch (err) {
      data.port1.close();
      this.#failing++;
      this.#failedBoots++;
      this.#o.logger.warn({ reason: this.#o.redact(err instanceof Error ? err.message : String(err)), failedInARow: this.#failing }, 'standby worker failed to boot');
      return;
    }
    this.#failing = 0;
    this.#booted++;
    const spare: Spare = { host, port: data.port1 };
    if (this.#closed) {
      await host.shutdown(this.#o.shutdownMs);
      spare.port.close();
      return;
    }
    this.#ready.push(spare);
    // Modules seen while it booted.
    for (const url of this.#modules) if (!boot.preload.includes(url)) void host.call('preload', url).catch(() => undefined);
    void host.exited.then((exit) => {
      const i = this.#ready.indexOf(spare);
      if (i < 0) return; // taken: its group owns its exit
      this.#ready.splice(i, 1);
      spare.port.close();
      if (this.#closed) return;
      this.#o.logger.warn({ exit: exit.class, reason: exit.reason }, 'standby worker died while waiting; booting another');
      this.#fill(REFILL_DELAY_MS);
    });
  }
}

/** The runtime's standby pool, started, when its options ask for standby workers (else undefined). */
export function startStandby(opts: Resolved, log: Logger, redact: (text: string) => string): StandbyPool | undefined {
  if (opts.standby.workers <= 0) return undefined;
  const pool = new StandbyPool({
    workers: opts.standby.workers,
    filename: builtinUrl('instance-worker-script.js'),
    logger: log.child({ standby: true }),
    heartbeat: opts.heartbeat,
    readyTimeoutMs: opts.readyTimeoutMs,
    shutdownMs: opts.shutdownMs,
    resourceLimits: opts.resourceLimits,
    redact,
  });
  pool.start();
  return pool;
}
