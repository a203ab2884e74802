/**
 * How a worker's end is classified: the pure functions that turn what the host knows about the
 * end of its thread (a stop it asked for, a termination, a hang, a lost port, the thread's error)
 * into an exit record, the final one once the exit code is known or a provisional one before.
 *
 * @packageDocumentation
 */
import type { ChildExit, ExitClass } from '../supervisor/types.js';

/** Why a stop was forced: its budget ran out, or it was a brutal kill. */
export type ForcedReason = 'shutdown_timeout' | 'brutal_kill';

/** An exit record before the `exit` event told the code: the class may not be known yet. */
export type ProvisionalExit = { class: ExitClass | 'unknown'; reason: string; code?: number };

/**
 * What the host knows about how its worker ended, gathered as it happens and read by
 * {@link classifyExit} and {@link provisionalExit}. The host holds one and updates it in place.
 */
export interface ExitFacts {
  /** The owner asked for a stop ({@link WorkerHost.shutdown}). */
  stopRequested: boolean;
  /** The stop was forced, and why. */
  forced: ForcedReason | undefined;
  /** Why the owner ended the worker with {@link WorkerHost.terminate}. */
  terminated: string | undefined;
  /** The heartbeat watchdog declared the worker hung. */
  hangDetected: boolean;
  /** A port closed and the thread did not exit within the grace time. */
  lostPort: 'control' | 'heartbeat' | undefined;
  /** The error the thread died of (scrubbed when the host has a `redact`). */
  error: Error | undefined;
}

/** The facts of a worker that has not ended (yet). */
export function noExitFacts(): ExitFacts {
  return {
    stopRequested: false,
    forced: undefined,
    terminated: undefined,
    hangDetected: false,
    lostPort: undefined,
    error: undefined,
  };
}

/** The `code` property of an error (Node's error codes), if any. */
export function errorCode(err: Error | undefined): unknown {
  return err === undefined ? undefined : (err as Error & { code?: unknown }).code;
}

/**
 * A copy of a worker's error with its name, message, stack and code passed through `redact`: the
 * error a worker dies of may quote a secret, and its exit record is published and logged. Other
 * properties are not copied.
 */
export function scrubbedError(err: Error, redact: (text: string) => string): Error {
  const copy = new Error(redact(String(err.message)));
  copy.name = redact(String(err.name));
  copy.stack = typeof err.stack === 'string' ? redact(err.stack) : `${copy.name}: ${copy.message}`;
  const code = errorCode(err);
  if (typeof code === 'string') (copy as Error & { code?: unknown }).code = redact(code);
  else if (typeof code === 'number') (copy as Error & { code?: unknown }).code = code;
  return copy;
}

/** The exit record of a thread that exited with `code`; `redact` scrubs the error's message. */
export function classifyExit(facts: ExitFacts, code: number, redact: (text: string) => string): ChildExit {
  if (facts.stopRequested) return { class: 'shutdown', reason: facts.forced ?? 'shutdown', code };
  if (facts.terminated !== undefined) return { class: 'exit', reason: facts.terminated, code };
  if (facts.hangDetected) return { class: 'hang', reason: 'heartbeat_timeout', code };
  if (facts.lostPort) return { class: 'crash', reason: `${facts.lostPort} port closed without exit`, code };
  const err = facts.error;
  if (err) {
    const cls: ExitClass = errorCode(err) === 'ERR_WORKER_OUT_OF_MEMORY' ? 'oom' : 'crash';
    return { class: cls, reason: redact(err.message), code, error: err };
  }
  if (code === 0) return { class: 'normal', reason: 'normal', code };
  return { class: 'exit', reason: `exit(${code})`, code };
}

/**
 * The exit as far as it is known, for {@link WorkerExitedError}: ports close a little before
 * `exit` tells the code, so the class may still be `unknown`.
 *
 * @param settled - the final exit record, once there is one.
 * @param exitCode - the thread's exit code, once its `exit` event came.
 * @param starting - the worker has not reported ready.
 */
export function provisionalExit(
  facts: ExitFacts,
  settled: ChildExit | undefined,
  exitCode: number | undefined,
  starting: boolean,
  redact: (text: string) => string,
): ProvisionalExit {
  const known = settled ?? (exitCode === undefined ? undefined : classifyExit(facts, exitCode, redact));
  if (known) return { class: known.class, reason: known.reason, code: known.code };
  if (starting) return { class: 'start_failure', reason: 'worker died before ready' };
  if (facts.stopRequested) return { class: 'shutdown', reason: facts.forced ?? 'shutdown' };
  if (facts.terminated !== undefined) return { class: 'exit', reason: facts.terminated };
  if (facts.hangDetected) return { class: 'hang', reason: 'heartbeat_timeout' };
  if (facts.error) {
    return errorCode(facts.error) === 'ERR_WORKER_OUT_OF_MEMORY'
      ? { class: 'oom', reason: redact(facts.error.message) }
      : { class: 'crash', reason: redact(facts.error.message) };
  }
  return { class: 'unknown', reason: 'worker thread ended' };
}
