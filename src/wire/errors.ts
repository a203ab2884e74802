/**
 * How an error crosses the thread boundary, in one structured form: {@link WireError}
 * `{ class, code, reason }`. A failed send's ack carries it, and so does every notice that
 * reports a failure. The few control-plane calls that still go over comlink (which rebuilds a
 * thrown `Error` on the main thread as a plain `Error` keeping only `name`, `message` and
 * `stack`) carry the same three fields inside the message:
 *
 * ```text
 * name:    the original error's name (ChannelError, TimeoutError, Error, …)
 * message: [<class>/<code>] <reason>        e.g. "[recoverable/timeout] send timed out after 200 ms"
 * ```
 *
 * `<class>` is `recoverable`, `fatal` or `degraded`; `<code>` is the error's code (`timeout`,
 * `not_connected`, a channel's own code such as `ECONNRESET` or `unauthorized`, else `error`),
 * made of word characters, `.`, `:` and `-` only ({@link wireCode}). {@link decodeWorkerError}
 * reads it back.
 *
 * Part of the wire layer: no dependencies, so either thread can import it cheaply.
 *
 * @packageDocumentation
 */

/**
 * How a failure should be handled: `recoverable` (transient: retry / reconnect with backoff),
 * `fatal` (retrying cannot help: bad credentials, invalid config; restart with a fatal marker)
 * or `degraded` (the channel stays up but a capability is unavailable: unsupported, policy).
 * See `classifyError` in `src/wire/classify.ts` for the full table.
 */
export type FailureClass = 'recoverable' | 'fatal' | 'degraded';

/** A failure as it crosses the thread boundary (already clipped; the main thread scrubs it). */
export interface WireError {
  /** How the failure is handled: retried (`recoverable`) or final (`fatal`, `degraded`). */
  class: FailureClass;
  /** The error's own code ({@link wireCode}), if any. */
  code?: string | undefined;
  /** Human-readable reason. */
  reason: string;
}

/** Builds the {@link WireError} of a failure. */
export function wireError(cls: FailureClass, code: unknown, reason: string): WireError {
  return { class: cls, code: wireCode(code), reason };
}

/** A failure class, as carried in an encoded worker error. */
export type WorkerErrorClass = FailureClass;

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
