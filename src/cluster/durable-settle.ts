/**
 * Durable sends, settling: once a delivered entry's outcome is known, acknowledges and deletes it,
 * remembers its delivered idempotency key and answers its sender (the settlements of one turn in
 * one `SETTLE_MANY` script per stream), retrying while Redis cannot take them.
 *
 * @packageDocumentation
 */
import { DeliveryFailedError, ThreadvisorError } from '../errors.js';
import type { IdempotencyKey } from '../runtime/outbound/idempotency.js';
import { deliveredKey, GROUP, type DurableState, type Stream } from './durable-state.js';
import { TurnBatches } from './redis-client.js';

/** A node's reply stream is trimmed near this length and expires this long after its last reply. */
const REPLY_MAXLEN = 100_000;
const REPLY_TTL_MS = 3_600_000;

// Settles entries of one stream. KEYS: the stream, then the delivered keys and reply streams the
// entries name. ARGV: key TTL ms, entry count, then per entry: entryId, outcome ('ok' | 'err'),
// payload JSON, correlation, delivered-key index into KEYS (0: none), reply index (0: none).
const SETTLE_MANY = `
local n = tonumber(ARGV[2])
local ids = {}
local touched = {}
for i = 0, n - 1 do
  local b = 3 + i * 6
  local dk = tonumber(ARGV[b + 4])
  local rk = tonumber(ARGV[b + 5])
  ids[#ids + 1] = ARGV[b]
  if dk > 0 and ARGV[b + 1] == 'ok' then redis.call('SET', KEYS[dk], ARGV[b + 2], 'PX', ARGV[1]) end
  if rk > 0 then
    redis.call('XADD', KEYS[rk], 'MAXLEN', '~', '${REPLY_MAXLEN}', '*', 'c', ARGV[b + 3], 'o', ARGV[b + 1], 'p', ARGV[b + 2])
    touched[rk] = true
  end
end
redis.call('XACK', KEYS[1], '${GROUP}', unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
for rk in pairs(touched) do redis.call('PEXPIRE', KEYS[rk], ${REPLY_TTL_MS}) end
return n
`;
/** Entries settled by one script call at most. */
const SETTLE_BATCH = 256;

/** A delivered entry waiting to be settled. */
interface Settlement {
  readonly stream: Stream;
  readonly id: string;
  readonly entryId: string;
  readonly corr: string;
  /** The delivered-key to remember (outcome `ok` only), if the send had an idempotency key. */
  readonly dk: string | undefined;
  /** The reply stream of the node to answer, if any. */
  readonly reply: string | undefined;
  readonly outcome: 'ok' | 'err';
  readonly payload: string;
  readonly attempt: number;
}

/** A JSON form of an error a sending node can rebuild. */
export function errorJson(err: unknown): string {
  if (err instanceof DeliveryFailedError) {
    return JSON.stringify({ code: err.code, message: err.message, details: err.details, lastError: { message: err.lastError.message, class: err.lastError.class, code: err.lastError.channelCode } });
  }
  if (err instanceof ThreadvisorError) return JSON.stringify({ code: err.code, message: err.message, details: err.details });
  return JSON.stringify({ code: 'delivery_failed', message: err instanceof Error ? err.message : String(err), details: {} });
}

/** A receipt as JSON (a receipt that is not JSON travels as null). */
export function receiptJson(receipt: unknown): string {
  try {
    return JSON.stringify(receipt) ?? 'null';
  } catch {
    return 'null';
  }
}

/** Answers a send this process made, without a reply through Redis (the send side's `answer`). */
export type AnswerHere = (corr: string, outcome: 'ok' | 'err', payload: string) => void;

/** The settling of one node's delivered entries. */
export class DurableSettles {
  readonly #s: DurableState;
  readonly #answer: AnswerHere;
  /** Settlements of this turn, by stream key. */
  readonly #toSettle = new TurnBatches<Settlement>(SETTLE_BATCH, (key, batch) => this.#settleBatch(key, batch));

  constructor(state: DurableState, answer: AnswerHere) {
    this.#s = state;
    this.#answer = answer;
    this.#s.cmd.defineCommand('tvSettleMany', { lua: SETTLE_MANY });
  }

  /**
   * Acknowledges, deletes and answers one delivered entry: the settlements of one turn go to Redis
   * together, one script per stream. While Redis cannot take them they are retried (with backoff)
   * as long as this node delivers the instance; the entry stays pending meanwhile, and a next
   * owner delivers it again (at least once).
   */
  settle(stream: Stream, id: string, entryId: string, f: Record<string, string>, key: IdempotencyKey | undefined, outcome: 'ok' | 'err', payload: string): void {
    const node = f.n ?? '';
    const keyJson = key === undefined ? '' : (f.k ?? '');
    this.#queueSettle({
      stream,
      id,
      entryId,
      corr: f.c ?? '',
      dk: keyJson === '' ? undefined : deliveredKey(this.#s, id, keyJson),
      reply: node === '' ? undefined : `${this.#s.prefix}r:${node}`,
      outcome,
      payload,
      attempt: 0,
    });
  }

  #queueSettle(s: Settlement): void {
    this.#toSettle.add(s.stream.key, s);
  }

  #settleBatch(streamKey: string, batch: Settlement[]): void {
    const keys = [streamKey];
    const index = new Map<string, number>();
    const at = (k: string): number => {
      let i = index.get(k);
      if (i === undefined) {
        keys.push(k);
        i = keys.length;
        index.set(k, i);
      }
      return i;
    };
    const args: (string | number)[] = [this.#s.o.deliveredKeyTtlMs, batch.length];
    // A send this process made is answered here once settled, without a reply through Redis (a
    // send of an earlier process with this node id has nobody waiting: no reply either).
    const own = (r: string | undefined): boolean => r === this.#s.replyKey;
    for (const s of batch) args.push(s.entryId, s.outcome, s.payload, s.corr, s.dk === undefined ? 0 : at(s.dk), s.reply === undefined || own(s.reply) ? 0 : at(s.reply));
    (this.#s.cmd as unknown as { tvSettleMany(...a: unknown[]): Promise<unknown> }).tvSettleMany(keys.length, ...keys, ...args).then(
      () => {
        for (const s of batch) {
          s.stream.held.delete(s.entryId);
          if (own(s.reply)) this.#answer(s.corr, s.outcome, s.payload);
        }
        this.#s.counters.settled += batch.length;
      },
      (err: unknown) => {
        const first = batch[0] as Settlement;
        if (first.attempt === 0) this.#s.o.log.warn({ instanceId: first.id, entries: batch.length, reason: err instanceof Error ? err.message : String(err) }, 'durable sends: delivered but not acknowledged yet; retrying');
        for (const s of batch) {
          if (this.#s.closed || !this.#s.host.holds(s.id)) {
            s.stream.held.delete(s.entryId);
            continue;
          }
          setTimeout(() => this.#queueSettle({ ...s, attempt: s.attempt + 1 }), Math.min(2000, 100 * 2 ** s.attempt)).unref();
        }
      },
    );
  }
}
