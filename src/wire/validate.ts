/**
 * The hand-written checks of the data port's hot path, shared by both threads: a run of acks
 * (worker → main), a send batch and an inbound ack (main → worker). Each reads a message that
 * crossed the thread boundary and returns what it carries, or `undefined` when it is malformed;
 * every check is made before any work per item, so a hostile message (a sparse array claiming
 * billions of items) costs nothing. The rare messages (notices, lists of ack results) are
 * checked with zod on the main thread (`src/runtime/protocol.ts`).
 *
 * Part of the wire layer: no dependencies.
 *
 * @packageDocumentation
 */
import { readColumns } from './columns.js';

/** A run of consecutive successes: send `seq + i` was delivered with `receipts[i]`. */
export interface AckRun {
  readonly seq: number;
  readonly receipts: unknown[];
}

/** A send batch as the worker holds it (see `SendBatch`). */
export interface ReadBatch {
  readonly epoch: number;
  readonly seq: number;
  readonly messages: readonly unknown[];
  readonly attempts: readonly number[] | undefined;
  readonly keys: readonly (string | null)[] | undefined;
  readonly redelivered: readonly boolean[] | undefined;
}

function isSeq(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Whether an `acks` message is in the run form (`receipts`, or columns) rather than a list of `results`. */
export function isAckRun(raw: object): boolean {
  const run = raw as { receipts?: unknown; columns?: unknown };
  return run.receipts !== undefined || run.columns !== undefined;
}

/**
 * Reads an ack run of at most `maxItems` sends (the credit window: no honest worker holds more),
 * or `undefined` when it is malformed.
 */
export function readAckRun(raw: object, maxItems: number): AckRun | undefined {
  const run = raw as { seq?: unknown; receipts?: unknown; n?: unknown; fields?: unknown; columns?: unknown };
  const seq = run.seq;
  if (!isSeq(seq)) return undefined;
  const receipts = Array.isArray(run.receipts) ? (run.receipts.length > maxItems ? undefined : (run.receipts as unknown[])) : readColumns(run.fields, run.columns, run.n, maxItems);
  return receipts === undefined ? undefined : { seq, receipts };
}

/** Reads a send batch, or `undefined` when it is not one. */
export function readSendBatch(raw: unknown): ReadBatch | undefined {
  const b = raw as { t?: unknown; seq?: unknown; epoch?: unknown; messages?: unknown; n?: unknown; fields?: unknown; columns?: unknown; attempts?: unknown; keys?: unknown; redelivered?: unknown } | null;
  if (b === null || typeof b !== 'object' || b.t !== 'send' || !isSeq(b.seq)) return undefined;
  const messages = Array.isArray(b.messages) ? (b.messages as unknown[]) : readColumns(b.fields, b.columns, b.n, Number.MAX_SAFE_INTEGER);
  if (messages === undefined) return undefined;
  return {
    epoch: typeof b.epoch === 'number' ? b.epoch : 0,
    seq: b.seq,
    messages,
    attempts: Array.isArray(b.attempts) ? (b.attempts as number[]) : undefined,
    keys: Array.isArray(b.keys) ? (b.keys as (string | null)[]) : undefined,
    redelivered: Array.isArray(b.redelivered) ? (b.redelivered as boolean[]) : undefined,
  };
}

/** Reads an inbound ack's `upTo`, or `undefined` when `raw` is not an inbound ack. */
export function readInboundAck(raw: unknown): number | undefined {
  const a = raw as { t?: unknown; upTo?: unknown } | null;
  return a !== null && typeof a === 'object' && a.t === 'inbound_ack' && typeof a.upTo === 'number' ? a.upTo : undefined;
}
