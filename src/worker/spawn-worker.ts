/**
 * Spawning the thread of a {@link WorkerHost}: the control and heartbeat channels, the bootstrap
 * `workerData`, `new Worker` (its failure is a start failure), and the host's child id and logger.
 *
 * @packageDocumentation
 */
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker, type MessagePort, type TransferListItem } from 'node:worker_threads';
import type { Logger } from 'pino';
import { StartFailureError } from '../errors.js';
import type { StartContext } from '../supervisor/types.js';
import { defaultLogger } from '../telemetry.js';
import { PROTOCOL_VERSION, type SupervisedWorkerData } from '../wire/host.js';
import { errorCode } from './exit-classification.js';
import type { WorkerHostOptions } from './host-types.js';

/** The options after validation (zod types the transfer list loosely). */
export type ParsedOptions = Omit<WorkerHostOptions, 'transferList'> & { transferList?: readonly unknown[] };

/** A spawned worker thread and the main-thread ends of its two channels. */
export interface SpawnedWorker {
  readonly worker: Worker;
  /** Main-thread end of the control (comlink) channel. */
  readonly controlPort: MessagePort;
  /** Main-thread end of the heartbeat channel. */
  readonly heartbeatPort: MessagePort;
}

let sharedDefaultLogger: Logger | undefined;
function fallbackLogger(): Logger {
  sharedDefaultLogger ??= defaultLogger();
  return sharedDefaultLogger;
}

/** The child id of a host with neither a start context's id nor a `name`: the script's base name. */
export function defaultChildId(filename: string | URL): string {
  const path = typeof filename === 'string' ? filename : filename.protocol === 'file:' ? fileURLToPath(filename) : filename.href;
  return basename(path).replace(/\.[cm]?js$/, '') || 'worker';
}

/**
 * Creates both channels and spawns the worker with its bootstrap data (the worker-side ends
 * transferred with the user's transferables).
 *
 * @throws {@link StartFailureError} when `new Worker` throws (all four ports are closed first).
 */
export function spawnWorker(opts: ParsedOptions, childId: string, ctx: Partial<StartContext> | undefined): SpawnedWorker {
  const control = new MessageChannel();
  const heartbeatChannel = new MessageChannel();
  const bootstrap: SupervisedWorkerData = {
    threadvisor: { version: PROTOCOL_VERSION, control: control.port2, heartbeat: heartbeatChannel.port2 },
    data: opts.workerData,
  };
  let worker: Worker;
  try {
    worker = new Worker(opts.filename, {
      workerData: bootstrap,
      transferList: [control.port2, heartbeatChannel.port2, ...((opts.transferList ?? []) as TransferListItem[])],
      resourceLimits: opts.resourceLimits,
      name: opts.name ?? childId,
      env: opts.env,
      execArgv: opts.execArgv,
      stdout: opts.stdout,
      stderr: opts.stderr,
    });
  } catch (err) {
    for (const port of [control.port1, control.port2, heartbeatChannel.port1, heartbeatChannel.port2]) port.close();
    const reason = (ctx?.redact ?? String)(err instanceof Error ? err.message : String(err));
    throw new StartFailureError(childId, reason, {
      cause: err,
      details: { exitClass: 'start_failure', errorCode: errorCode(err instanceof Error ? err : undefined) },
    });
  }
  return { worker, controlPort: control.port1, heartbeatPort: heartbeatChannel.port1 };
}

/**
 * The host's logger: a child of the `logger` option bound to `childId` and `threadId`, else of the
 * start context's logger (which already carries the child id when the context gives one), else of
 * the library's default logger.
 */
export function hostLogger(opts: ParsedOptions, ctx: Partial<StartContext> | undefined, childId: string, threadId: number): Logger {
  const base = opts.logger ?? ctx?.logger;
  return base
    ? base.child(opts.logger || !ctx?.childId ? { childId, threadId } : { threadId })
    : fallbackLogger().child({ childId, threadId });
}
