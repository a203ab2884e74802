/**
 * Small helpers of the instance worker: describing and clipping errors, copying values so they
 * survive structured clone, and abortable sleeps.
 *
 * @packageDocumentation
 */
import { TimeoutError } from '../../src/errors.js';
import { runAsWorker } from './fault.js';

/** A channel callback, named in reasons and timeouts. */
export type Op = 'connect' | 'disconnect' | 'send' | 'poll' | 'probe' | 'listen';

/** Reasons are cut to this many characters before they are posted. */
export const MAX_REASON = 2000;
/** Depth below which log objects and connect metadata are copied (deeper: a placeholder). */
const MAX_DEPTH = 8;

/** `text`, cut to {@link MAX_REASON} characters. */
export function clip(text: string): string {
  return text.length > MAX_REASON ? `${text.slice(0, MAX_REASON - 1)}…` : text;
}

/** `o[key]`, or `undefined` when `o` is no object or the getter throws. */
export function get(o: unknown, key: string): unknown {
  if (typeof o !== 'object' || o === null) return undefined;
  try {
    return (o as Record<string, unknown>)[key];
  } catch {
    return undefined;
  }
}

/** The error's own code: a `ChannelError`'s channel code, else `code`. */
export function codeOf(err: unknown): string | undefined {
  const channelCode = get(err, 'channelCode');
  if (typeof channelCode === 'string' && channelCode) return channelCode;
  const code = get(err, 'code');
  return typeof code === 'string' || typeof code === 'number' ? String(code) : undefined;
}

/** A one-line description of anything thrown. */
export function describe(err: unknown): string {
  if (err instanceof Error) {
    const message = err.message || err.name || 'error';
    const code = codeOf(err);
    return code && code !== 'channel_error' && !message.includes(code) ? `${message} (${code})` : message;
  }
  if (typeof err === 'string') return err;
  try {
    return JSON.stringify(err) ?? String(err);
  } catch {
    return String(err);
  }
}

/** The reason posted for a failure of `op`: our own timeouts already say what timed out. */
export function reasonOf(op: Op, err: unknown): string {
  return clip(err instanceof TimeoutError ? err.message : `${op} failed: ${describe(err)}`);
}

/**
 * A structured-cloneable copy of `value`: functions and symbols dropped, errors reduced to
 * `{ name, message, code }`, cycles and depth cut with placeholders.
 */
export function cloneable(value: unknown, depth = 0, seen = new WeakSet<object>()): unknown {
  if (value === null) return null;
  switch (typeof value) {
    case 'string':
    case 'number':
    case 'boolean':
    case 'bigint':
    case 'undefined':
      return value;
    case 'function':
    case 'symbol':
      return undefined;
    default:
      break;
  }
  const obj = value as object;
  if (obj instanceof Error) {
    const code = codeOf(obj);
    return code === undefined ? { name: obj.name, message: obj.message } : { name: obj.name, message: obj.message, code };
  }
  if (obj instanceof Date || obj instanceof RegExp || ArrayBuffer.isView(obj) || obj instanceof ArrayBuffer) return obj;
  if (depth >= MAX_DEPTH) return '[depth]';
  if (seen.has(obj)) return '[circular]';
  seen.add(obj);
  try {
    if (Array.isArray(obj)) return obj.map((v) => cloneable(v, depth + 1, seen) ?? null);
    if (obj instanceof Map) {
      return new Map([...obj].map(([k, v]) => [cloneable(k, depth + 1, seen), cloneable(v, depth + 1, seen)]));
    }
    if (obj instanceof Set) return new Set([...obj].map((v) => cloneable(v, depth + 1, seen)));
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(obj)) {
      const v = cloneable(get(obj, key), depth + 1, seen);
      if (v !== undefined) out[key] = v;
    }
    return out;
  } finally {
    seen.delete(obj);
  }
}

/** A plain object (Object.prototype or null prototype, not an array). */
export function isPlainRecord(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Resolves after `ms`, or at once when any signal aborts. */
export function sleep(ms: number, ...signals: AbortSignal[]): Promise<void> {
  return new Promise<void>((resolve) => {
    if (signals.some((s) => s.aborted)) {
      resolve();
      return;
    }
    const done = (): void => {
      clearTimeout(timer);
      for (const s of signals) s.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, Math.max(0, ms));
    for (const s of signals) s.addEventListener('abort', done, { once: true });
  });
}

/** Resolves on the next turn of the event loop (after pending I/O, heartbeats included). */
export const nextTurn = (): Promise<void> => new Promise<void>((resolve) => setImmediate(resolve));

/** Re-throws `err` outside any promise chain: an internal bug crashes the worker (and it restarts). */
export function crash(err: unknown): void {
  // The worker's own bug, not an instance's: thrown outside every instance's context.
  runAsWorker(() =>
    setImmediate(() => {
      throw err;
    }),
  );
}
