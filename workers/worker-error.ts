/**
 * How an instance worker's control-plane errors cross the thread boundary. comlink rebuilds a
 * thrown `Error` on the main thread as a plain `Error` keeping only `name`, `message` and `stack`,
 * so the failure class and the error code travel inside the message:
 *
 * ```text
 * name:    the original error's name (ChannelError, TimeoutError, Error, …)
 * message: [<class>/<code>] <reason>        e.g. "[recoverable/timeout] send timed out after 200 ms"
 * ```
 *
 * `<class>` is `recoverable`, `fatal` or `degraded`; `<code>` is the error's code (`timeout`,
 * `not_connected`, a channel's own code such as `ECONNRESET` or `unauthorized`, else `error`),
 * made of word characters, `.`, `:` and `-` only. {@link decodeWorkerError} reads it back.
 * This module has no dependencies, so either thread can import it cheaply.
 *
 * @packageDocumentation
 */

/** A failure class, as carried in an encoded worker error. */
export type WorkerErrorClass = 'recoverable' | 'fatal' | 'degraded';

/** What {@link decodeWorkerError} recovers from an error rejected by an instance worker. */
export interface DecodedWorkerError {
  /** The original error's name (e.g. `ChannelError`, `TimeoutError`). */
  readonly name: string;
  /** The failure class the worker gave it. */
  readonly class: WorkerErrorClass;
  /** The error code (`timeout`, `not_connected`, the channel's own code, or `error`). */
  readonly code: string;
  /** The reason text (may mention anything the channel put in its message; scrub before logging). */
  readonly reason: string;
}

const PATTERN = /^\[(recoverable|fatal|degraded)\/([\w.:-]+)\] ([\s\S]*)$/;

/** Normalises `code` to the characters allowed in an encoded message. */
export function wireCode(code: unknown): string {
  const text = typeof code === 'string' || typeof code === 'number' ? String(code) : '';
  const clean = text.replace(/[^\w.:-]/g, '_').slice(0, 64);
  return clean.length > 0 ? clean : 'error';
}

/** Builds the error an instance worker rejects a control-plane call with. */
export function encodeWorkerError(name: string, cls: WorkerErrorClass, code: unknown, reason: string): Error {
  const err = new Error(`[${cls}/${wireCode(code)}] ${reason}`);
  err.name = name || 'Error';
  return err;
}

/**
 * Reads back an error encoded by {@link encodeWorkerError} (after comlink rebuilt it), or
 * `undefined` when `err` is not one (e.g. a `WorkerExitedError` or `TimeoutError` raised by the
 * `WorkerHost` itself).
 */
export function decodeWorkerError(err: unknown): DecodedWorkerError | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const message = (err as { message?: unknown }).message;
  if (typeof message !== 'string') return undefined;
  const m = PATTERN.exec(message);
  if (!m) return undefined;
  const name = (err as { name?: unknown }).name;
  return {
    name: typeof name === 'string' ? name : 'Error',
    class: m[1] as WorkerErrorClass,
    code: m[2] as string,
    reason: m[3] as string,
  };
}
