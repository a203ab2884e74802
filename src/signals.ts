/**
 * Graceful shutdown on process signals: `stopOnSignals(rt)` stops the runtime on the first
 * SIGTERM or SIGINT (queued sends get `shutdownMs` to be delivered, every instance stops, once)
 * and then exits the process. Exported from `threadvisor/ops`.
 *
 * @packageDocumentation
 */
import { constants } from 'node:os';
import { z } from 'zod';
import { InvalidConfigError } from './errors.js';
import type { Runtime, RuntimeMode } from './runtime/runtime.js';
import { parseConfig } from './validate.js';
import { MAX_TIMER_MS } from './wire/timers.js';

/** Options of {@link stopOnSignals}. */
export interface StopOnSignalsOptions {
  /** The signals that stop the runtime. Default `['SIGTERM', 'SIGINT']`. `SIGKILL` and `SIGSTOP` cannot be caught. */
  signals?: NodeJS.Signals[];
  /**
   * With `exit`: how long the stop may take, in ms, before the process exits with code 1 anyway
   * (default 30000). `rt.stop()` takes up to `shutdownMs` to deliver what is queued, then up to
   * `shutdownMs` (and a little) for the workers' graceful stop: keep it above twice `shutdownMs`,
   * and below the orchestrator's own grace period (Kubernetes: `terminationGracePeriodSeconds`,
   * 30 s by default).
   */
  deadlineMs?: number;
  /**
   * Default true: once the stop settled, `process.exit(0)` (code 1 when `rt.stop()`, `onSignal` or `beforeStop`
   * rejected, or the deadline passed first); a second signal during the stop exits with code 1 at
   * once. With `false` nothing calls `process.exit`: the handlers are removed at the first signal
   * (a second one has its usual effect) and the process ends when nothing is left to run.
   */
  exit?: boolean;
  /**
   * Called with the signal on the first signal, right before `rt.stop()` (to close an HTTP server,
   * log, flush); a returned promise is awaited together with the stop. A throw or a rejection
   * counts as a failed stop (exit code 1); the runtime stops anyway.
   */
  onSignal?: (signal: NodeJS.Signals) => void | Promise<void>;
  /**
   * Called with the signal on the first signal, after `onSignal`; `rt.stop()` waits until its
   * promise settles. The place to stop taking new work and let work already accepted finish
   * while the runtime still delivers (a gateway's drain). It runs within `deadlineMs`; a throw or
   * a rejection counts as a failed stop (exit code 1) and the runtime stops anyway.
   */
  beforeStop?: (signal: NodeJS.Signals) => void | Promise<void>;
}

/** Signals no process can handle. */
const UNCATCHABLE = new Set(['SIGKILL', 'SIGSTOP']);

const signalSchema = z
  .string()
  .refine((s) => Object.hasOwn(constants.signals, s), 'expected a signal name (SIGTERM, SIGINT, ...)')
  .refine((s) => !UNCATCHABLE.has(s), 'SIGKILL and SIGSTOP cannot be caught');

const optionsSchema = z.strictObject({
  signals: z.array(signalSchema).min(1, 'expected at least one signal').optional(),
  deadlineMs: z.number().int().min(1).max(MAX_TIMER_MS).optional(),
  exit: z.boolean().optional(),
  onSignal: z.custom<StopOnSignalsOptions['onSignal']>((v) => typeof v === 'function', 'expected a function').optional(),
  beforeStop: z.custom<StopOnSignalsOptions['beforeStop']>((v) => typeof v === 'function', 'expected a function').optional(),
});

/** Calls `fn(signal)` and turns a throw into a rejection. */
function settle(fn: ((signal: NodeJS.Signals) => void | Promise<void>) | undefined, signal: NodeJS.Signals): Promise<void> {
  try {
    return Promise.resolve(fn?.(signal));
  } catch (err) {
    return Promise.reject(err);
  }
}

function isRuntime(v: unknown): v is Runtime {
  return typeof v === 'object' && v !== null && typeof (v as Partial<Runtime>).stop === 'function';
}

/**
 * Stops `rt` gracefully when the process receives one of `options.signals` (default SIGTERM and
 * SIGINT), then exits: code 0 when `rt.stop()` (and `onSignal`) resolved within `deadlineMs`,
 * 1 otherwise; a second signal during the stop exits with code 1 at once. With `exit: false` it
 * only stops the runtime (see {@link StopOnSignalsOptions.exit}).
 *
 * Returns a disposer that removes the handlers (idempotent); a stop already under way goes on.
 * Bad options throw `InvalidConfigError` naming the field.
 */
export function stopOnSignals(rt: Runtime<RuntimeMode>, options: StopOnSignalsOptions = {}): () => void {
  if (!isRuntime(rt)) throw new InvalidConfigError('stopOnSignals arguments', [{ path: 'runtime', message: 'expected a Runtime' }]);
  const o = parseConfig('stopOnSignals options', optionsSchema, options);
  const signals = [...new Set(o.signals ?? ['SIGTERM', 'SIGINT'])] as NodeJS.Signals[];
  const exit = o.exit ?? true;
  const deadlineMs = o.deadlineMs ?? 30_000;
  const { onSignal, beforeStop } = o;
  let stopping = false;
  let installed = true;

  const dispose = (): void => {
    if (!installed) return;
    installed = false;
    for (const s of signals) process.off(s, handler);
  };

  function handler(signal: NodeJS.Signals): void {
    if (stopping) {
      // Only reached with `exit`: without it the handlers went at the first signal.
      process.exit(1);
    }
    stopping = true;
    if (!exit) dispose();
    const hook = settle(onSignal, signal);
    const drain = settle(beforeStop, signal);
    // The runtime stops once `beforeStop` settled, whatever its outcome.
    const stop = drain.then(
      () => rt.stop(),
      () => rt.stop(),
    );
    const done = Promise.allSettled([hook, drain, stop]).then((results) => results.every((r) => r.status === 'fulfilled'));
    if (!exit) {
      void done;
      return;
    }
    // Ref'd on purpose: the process is meant to end here, stop or no stop.
    const deadline = setTimeout(() => process.exit(1), deadlineMs);
    void done.then((ok) => {
      clearTimeout(deadline);
      process.exit(ok ? 0 : 1);
    });
  }

  for (const s of signals) process.on(s, handler);
  return dispose;
}
