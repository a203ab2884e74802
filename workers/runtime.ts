/**
 * The worker side of threadvisor, imported by worker scripts as `threadvisor/worker`.
 *
 * ```ts
 * import { serve, workerData } from 'threadvisor/worker';
 * serve({ echo: (x: string) => x }, { onStop: async () => flush() });
 * ```
 *
 * `serve()` exposes the API to the main thread's `WorkerHost` over comlink, answers heartbeat pings
 * on a dedicated port, and reports ready. This module loads no validation library, so it adds
 * little to a worker's start-up time.
 *
 * @packageDocumentation
 */
import type { EventLoopUtilization, Performance } from 'node:perf_hooks';
import { MessagePort, isMainThread, workerData as rawWorkerData } from 'node:worker_threads';
import * as Comlink from 'comlink';
import { importModule } from './import-module.js';
import { AlreadyStartedError, InvalidConfigError } from '../src/errors.js';
import {
  PROTOCOL_VERSION,
  nodeEndpoint,
  type BootstrapData,
  type ControlRoot,
  type DyingMessage,
  type PongMessage,
  type ReadyMessage,
} from '../src/wire/host.js';

type Perf = Performance;

function readBootstrap(): BootstrapData | undefined {
  if (isMainThread) return undefined;
  const raw: unknown = rawWorkerData;
  if (typeof raw !== 'object' || raw === null || !('threadvisor' in raw)) return undefined;
  const boot: unknown = raw.threadvisor;
  if (typeof boot !== 'object' || boot === null) return undefined;
  const { control, heartbeat, version } = boot as Partial<Record<keyof BootstrapData, unknown>>;
  if (!(control instanceof MessagePort) || !(heartbeat instanceof MessagePort) || typeof version !== 'number') {
    return undefined;
  }
  return { control, heartbeat, version };
}

const bootstrap = readBootstrap();

/**
 * The `workerData` the user passed to `WorkerHost.start` (for a thread not started by threadvisor:
 * Node's own `workerData`). Validate it before use: it crossed a thread boundary.
 */
export const workerData: unknown = bootstrap ? (rawWorkerData as { data: unknown }).data : rawWorkerData;

/** True when this thread was started by a threadvisor `WorkerHost` (so `serve()` can be called). */
export function isSupervised(): boolean {
  return bootstrap !== undefined;
}

/** Options of {@link serve}. */
export interface ServeOptions {
  /**
   * Runs when the supervisor asks for a graceful stop, before the thread exits (code 0, or 1 when
   * the hook throws; its error is reported to the main thread's log). The supervisor terminates the
   * thread anyway once the child's shutdown budget has passed.
   */
  onStop?: () => void | Promise<void>;
}

let serving = false;

function isPing(message: unknown): message is { type: 'ping'; seq: number } {
  return (
    typeof message === 'object' &&
    message !== null &&
    (message as { type?: unknown }).type === 'ping' &&
    typeof (message as { seq?: unknown }).seq === 'number'
  );
}

/**
 * Serves `api` to the main thread and reports ready. Call it once, after the worker's own setup.
 * Methods may be sync or async; their results and errors cross the boundary by structured clone.
 * From then on the thread stays alive until the supervisor stops it (or it dies).
 *
 * @throws {@link InvalidConfigError} when the thread was not started by a `WorkerHost`, or `api` is not an object.
 * @throws {@link AlreadyStartedError} when called a second time.
 */
export function serve<API extends object>(api: API, opts: ServeOptions = {}): void {
  if (!bootstrap) {
    throw new InvalidConfigError('serve()', [
      { path: 'workerData.threadvisor', message: 'this thread was not started by a threadvisor WorkerHost' },
    ]);
  }
  if ((typeof api !== 'object' && typeof api !== 'function') || api === null) {
    throw new InvalidConfigError('serve()', [{ path: 'api', message: 'expected an object' }]);
  }
  if (serving) throw new AlreadyStartedError('serve()');
  serving = true;
  const { heartbeat, control } = bootstrap;

  // Heartbeats have their own port and listener: a flood of control traffic cannot starve them.
  // `perf_hooks` (for the event loop's utilization) is loaded at the first ping, not at start:
  // loading it takes about 0.9 ms of every worker's start and restart. Until it is loaded, pings
  // wait for it in order.
  let perf: Perf | undefined;
  let loading: Promise<unknown> | undefined;
  let lastElu: EventLoopUtilization | undefined;
  const pong = (seq: number, p: Perf): void => {
    const now = p.eventLoopUtilization();
    // The first covers the thread's life so far, its boot included (serve() does not read the
    // clock: that would load perf_hooks at start).
    const utilization = lastElu === undefined ? now.utilization : p.eventLoopUtilization(now, lastElu).utilization;
    lastElu = now;
    const message: PongMessage = {
      type: 'pong',
      seq,
      elu: Number.isFinite(utilization) ? Math.min(1, Math.max(0, utilization)) : 0,
      // This thread's V8 heap (process.memoryUsage() reads the calling thread's isolate); it spares
      // loading node:v8 at every worker start.
      heapUsed: process.memoryUsage().heapUsed,
    };
    heartbeat.postMessage(message);
  };
  const pongWithout = (seq: number): void => {
    heartbeat.postMessage({ type: 'pong', seq, elu: 0, heapUsed: process.memoryUsage().heapUsed } satisfies PongMessage);
  };
  heartbeat.on('message', (message: unknown) => {
    if (!isPing(message)) return;
    if (perf !== undefined) return pong(message.seq, perf);
    loading ??= importModule('node:perf_hooks').then(
      (m) => {
        perf = (m as { performance: Perf }).performance;
      },
      () => undefined,
    );
    // (Should perf_hooks ever fail to load, the pongs go on with elu 0.)
    void loading.then(() => (perf === undefined ? pongWithout(message.seq) : pong(message.seq, perf)));
  });

  let stopping: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    let code = 0;
    try {
      await opts.onStop?.();
    } catch (err) {
      code = 1;
      throw err;
    } finally {
      // Exit after the reply (or the hook's error) has been posted back.
      setImmediate(() => process.exit(code));
    }
  };
  const root: ControlRoot<API> = {
    api,
    control: {
      stop: () => (stopping ??= stop()),
    },
  };
  Comlink.expose(root, nodeEndpoint(control));
  // An uncaught exception that nothing handles ends this thread: the host hears it now, before Node
  // serializes the error for the Worker's `error` event. A handled one (a listener or a capture
  // callback) is not a death, and a thrown non-Error is left to the `error` event.
  process.on('uncaughtExceptionMonitor', (err: unknown) => {
    if (!(err instanceof Error) || process.listenerCount('uncaughtException') > 0 || process.hasUncaughtExceptionCaptureCallback()) return;
    try {
      // Clipped to what the host accepts (its schema bounds each field).
      const dying: DyingMessage = { type: 'dying', name: String(err.name).slice(0, 200), message: String(err.message).slice(0, 8192), stack: String(err.stack).slice(0, 16384) };
      heartbeat.postMessage(dying);
    } catch {
      // An error whose fields cannot be read, or a closed port: the `error` event still tells.
    }
  });
  const ready: ReadyMessage = { type: 'ready', version: PROTOCOL_VERSION };
  heartbeat.postMessage(ready);
}
