/**
 * How an error crosses the thread boundary, in one structured form: {@link WireError}
 * `{ class, code, reason }`. A failed send's ack carries it, and so does every notice that
 * reports a failure (`class` and `reason`). `class` is `recoverable`, `fatal` or `degraded`;
 * `code` is the error's code (`timeout`, a channel's own code such as `ECONNRESET` or
 * `unauthorized`, else `error`), made of word characters, `.`, `:` and `-` only
 * ({@link wireCode}).
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
  /** How long the channel asked to wait before the next try, ms (a `ChannelError`'s `retryAfterMs`). */
  retryAfterMs?: number | undefined;
}

/** Builds the {@link WireError} of a failure. */
export function wireError(cls: FailureClass, code: unknown, reason: string, retryAfterMs?: number): WireError {
  return retryAfterMs === undefined ? { class: cls, code: wireCode(code), reason } : { class: cls, code: wireCode(code), reason, retryAfterMs };
}

/** A thrown value's `retryAfterMs`, when it is a non-negative finite number (else undefined). */
export function retryAfterOf(err: unknown): number | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  let v: unknown;
  try {
    v = (err as { retryAfterMs?: unknown }).retryAfterMs;
  } catch {
    return undefined;
  }
  return typeof v === 'number' && Number.isFinite(v) && v >= 0 ? v : undefined;
}

/** Normalises an error's code to the characters allowed on the wire (`error` when it has none). */
export function wireCode(code: unknown): string {
  const text = typeof code === 'string' || typeof code === 'number' ? String(code) : '';
  const clean = text.replace(/[^\w.:-]/g, '_').slice(0, 64);
  return clean.length > 0 ? clean : 'error';
}
