/**
 * Durable sends, the send side: appends a send to its instance's stream (the sends of one turn to
 * one instance in one `APPEND_MANY` script), and waits for the owner's receipt on this node's
 * reply stream.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import { AbortedError, ChannelError, DeliveryFailedError, InstanceNotFoundError, InvalidMessageError, QueueFullError, StoppedError, ThreadvisorError, UnavailableError, type ErrorCode } from '../errors.js';
import { findNonJson } from '../manager/json.js';
import { defaultIdempotencyKey, type IdempotencyKey } from '../runtime/outbound/idempotency.js';
import { BLOCK_MS, deliveredKey, fieldsOf, streamKey, type DurableState, type StreamEntry } from './durable-state.js';
import type { AcceptedSend } from './options.js';
import { TurnBatches } from './redis-client.js';

// Appends the sends of one turn to one stream. KEYS: specs, the stream, the call's answer key,
// then the delivered keys the sends name. ARGV: id, default capacity, count, the answer key's TTL
// (ms), then per send: message JSON, key JSON ('' for none), node to answer ('' for none),
// correlation, delivered-key index into KEYS (0: none). Returns per send {1, entryId} | {0} (not
// declared) | {2, receipt JSON} (key delivered) | {3, capacity} (full).
//
// The answer is kept under the answer key (one key per call, deleted once the answer arrived):
// a call the client sends again after a lost connection (ioredis resends the commands a closed
// connection left unanswered) gets the first answer back instead of appending its sends twice.
const APPEND_MANY = `
local prior = redis.call('GET', KEYS[3])
if prior then return cjson.decode(prior) end
local n = tonumber(ARGV[3])
local out = {}
local spec = redis.call('HGET', KEYS[1], ARGV[1])
if not spec then
  for i = 1, n do out[i] = {0} end
  return out
end
local cap = tonumber(ARGV[2])
local ok, decoded = pcall(cjson.decode, spec)
if ok and type(decoded) == 'table' and type(decoded.queueCapacity) == 'number' then cap = decoded.queueCapacity end
local len = redis.call('XLEN', KEYS[2])
for i = 0, n - 1 do
  local b = 5 + i * 5
  local dk = tonumber(ARGV[b + 4])
  local r = false
  if dk > 0 then r = redis.call('GET', KEYS[dk]) end
  if r then
    out[i + 1] = {2, r}
  elseif len >= cap then
    out[i + 1] = {3, cap}
  else
    out[i + 1] = {1, redis.call('XADD', KEYS[2], '*', 'm', ARGV[b], 'k', ARGV[b + 1], 'n', ARGV[b + 2], 'c', ARGV[b + 3])}
    len = len + 1
  end
end
redis.call('SET', KEYS[3], cjson.encode(out), 'PX', ARGV[4])
return out
`;
/** Sends appended by one script call at most. */
const APPEND_BATCH = 256;
/**
 * How long the answer of an append call is kept for a resend of the call (ms). It is deleted as
 * soon as the answer arrives; the TTL only bounds what a node that died meanwhile leaves behind.
 */
const ANSWER_TTL_MS = 600_000;

/** A send waiting to be appended (the sends of one turn to one instance go in one script). */
interface Append {
  readonly json: string;
  readonly keyJson: string;
  readonly node: string;
  readonly corr: string;
  readonly resolve: (r: AppendResult) => void;
  readonly reject: (err: unknown) => void;
}
type AppendResult = [number, string | number | undefined];

/** Options of one durable send (those of `rt.send`, plus `ack`). */
export interface DurableSendOptions {
  idempotencyKey?: IdempotencyKey | null;
  signal?: AbortSignal;
  waitForCapacity?: boolean;
  ack?: 'delivered' | 'accepted';
}

interface Waiting {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

/** Rebuilds an error answered by the owner. */
function errorFrom(json: string): Error {
  let e: { code?: string; message?: string; details?: Record<string, unknown>; lastError?: { message?: string; class?: string; code?: string } };
  try {
    e = JSON.parse(json) as typeof e;
  } catch {
    return new ThreadvisorError('delivery_failed', 'the owner answered an unreadable failure');
  }
  const message = typeof e.message === 'string' ? e.message : 'send failed on the owner';
  const details = e.details ?? {};
  if (e.code === 'delivery_failed' && e.lastError) {
    const last = new ChannelError(e.lastError.message ?? message, {
      class: (e.lastError.class ?? 'fatal') as ChannelError['class'],
      ...(e.lastError.code ? { code: e.lastError.code } : {}),
    });
    return new DeliveryFailedError(String(details.what ?? 'instance'), (details.messageId as string | number | undefined) ?? '?', Number(details.attempts ?? 0), (details.reason ?? 'fatal') as DeliveryFailedError['reason'], last);
  }
  const err = new ThreadvisorError((e.code ?? 'delivery_failed') as ErrorCode, message, details);
  return err;
}

/** The send side of one node's durable sends: appends, and the sends waiting for a receipt. */
export class DurableAppends {
  readonly #s: DurableState;
  readonly #waiting = new Map<string, Waiting>();
  /** Correlations are `<epoch>.<n>`: a reply to an earlier process with this node id is ignored. */
  readonly #epoch = randomUUID().slice(0, 8);
  #seq = 0;
  /** Append calls made: each has its own answer key. */
  #calls = 0;
  #lastReply = '0-0';
  /** Sends of this turn, by instance id. */
  readonly #toAppend = new TurnBatches<Append>(APPEND_BATCH, (id, batch) => this.#appendBatch(id, batch));

  constructor(state: DurableState) {
    this.#s = state;
    this.#s.cmd.defineCommand('tvAppendMany', { lua: APPEND_MANY });
  }

  /**
   * Appends a send to the instance's stream; resolves with the owner's receipt (or, with
   * `ack: 'accepted'`, with {@link AcceptedSend} once Redis has it).
   */
  async send(id: string, message: unknown, options: DurableSendOptions = {}): Promise<unknown> {
    if (this.#s.closed) throw new StoppedError('runtime');
    if (message === undefined) throw new InvalidMessageError(`instance ${id}`, 'the message is undefined');
    const bad = findNonJson(message);
    if (bad !== undefined) throw new InvalidMessageError(`instance ${id}`, `${bad.problem} (durable sends are stored as JSON)`, { path: bad.path });
    if (options.signal?.aborted) throw new AbortedError(`send on instance ${id}`, { cause: options.signal.reason });
    const key = options.idempotencyKey === undefined ? defaultIdempotencyKey(message) : (options.idempotencyKey ?? undefined);
    const keyJson = key === undefined ? '' : JSON.stringify(key);
    const answer = options.ack !== 'accepted';
    const corr = `${this.#epoch}.${++this.#seq}`;
    const json = JSON.stringify(message);
    let waiting: Promise<unknown> | undefined;
    if (answer) {
      waiting = new Promise((resolve, reject) => this.#waiting.set(corr, { resolve, reject }));
      waiting.catch(() => undefined);
    }
    for (;;) {
      let r: [number, string | number | undefined];
      try {
        r = await this.#append(id, json, keyJson, answer ? this.#s.o.nodeId : '', corr);
      } catch (err) {
        this.#waiting.delete(corr);
        throw new UnavailableError(`send to instance ${id}: Redis cannot take it (${err instanceof Error ? err.message : String(err)})`, { cause: err });
      }
      if (r[0] === 1) {
        this.#s.counters.appended++;
        if (!answer) return { accepted: true, entryId: String(r[1]) } satisfies AcceptedSend;
        break;
      }
      if (r[0] === 2) {
        this.#waiting.delete(corr);
        this.#s.counters.duplicates++;
        return JSON.parse(String(r[1])) as unknown;
      }
      if (r[0] === 0) {
        this.#waiting.delete(corr);
        throw new InstanceNotFoundError(id);
      }
      // Full: wait for room when asked (polling the backlog), else reject.
      if (!options.waitForCapacity) {
        this.#waiting.delete(corr);
        throw new QueueFullError(`backlog of instance ${id}`, Number(r[1]));
      }
      await new Promise((resolve) => setTimeout(resolve, 50));
      if (options.signal?.aborted) {
        this.#waiting.delete(corr);
        throw new AbortedError(`send on instance ${id}`, { cause: options.signal.reason });
      }
      if (this.#s.closed) throw new StoppedError('runtime');
    }
    const signal = options.signal;
    if (!signal) return waiting;
    // An abort ends the wait for the receipt; the send stands (it is in Redis).
    return new Promise((resolve, reject) => {
      const onAbort = (): void => {
        this.#waiting.delete(corr);
        reject(new AbortedError(`waiting for the receipt of a send on instance ${id} (the send stands)`, { cause: signal.reason }));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      (waiting as Promise<unknown>).then(
        (v) => {
          signal.removeEventListener('abort', onAbort);
          resolve(v);
        },
        (e: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
    });
  }

  /** Sends waiting for a receipt. */
  get waiting(): number {
    return this.#waiting.size;
  }

  /** Rejects every wait still open with `stopped` (their sends stand). */
  stopWaiting(): void {
    for (const w of this.#waiting.values()) w.reject(new StoppedError('runtime (the send stands and is delivered by the owner)'));
    this.#waiting.clear();
  }

  /** Queues one send for this turn's append to its instance's stream. */
  #append(id: string, json: string, keyJson: string, node: string, corr: string): Promise<AppendResult> {
    return new Promise((resolve, reject) => this.#toAppend.add(id, { json, keyJson, node, corr, resolve, reject }));
  }

  #appendBatch(id: string, batch: Append[]): void {
    const answerKey = `${this.#s.prefix}ans:${this.#s.o.nodeId}:${this.#epoch}.${++this.#calls}`;
    const keys = [`${this.#s.prefix}specs`, streamKey(this.#s, id), answerKey];
    const index = new Map<string, number>();
    const args: (string | number)[] = [id, this.#s.o.defaultCapacity, batch.length, ANSWER_TTL_MS];
    for (const a of batch) {
      let dk = 0;
      if (a.keyJson !== '') {
        const k = deliveredKey(this.#s, id, a.keyJson);
        dk = index.get(k) ?? 0;
        if (dk === 0) {
          keys.push(k);
          dk = keys.length;
          index.set(k, dk);
        }
      }
      args.push(a.json, a.keyJson, a.node, a.corr, dk);
    }
    (this.#s.cmd as unknown as { tvAppendMany(...a: unknown[]): Promise<AppendResult[]> }).tvAppendMany(keys.length, ...keys, ...args).then(
      (results) => {
        this.#s.cmd.del(answerKey).catch(() => undefined);
        batch.forEach((a, i) => a.resolve(results[i] ?? [0, undefined]));
      },
      (err: unknown) => {
        for (const a of batch) a.reject(err);
      },
    );
  }

  /** Resolves (or rejects) the send waiting under `corr`, if this process has one. */
  answer(corr: string, outcome: 'ok' | 'err', payload: string): void {
    const w = this.#waiting.get(corr);
    if (!w) return;
    this.#waiting.delete(corr);
    if (outcome === 'ok') {
      try {
        w.resolve(JSON.parse(payload));
      } catch {
        w.resolve(null);
      }
    } else w.reject(errorFrom(payload));
  }

  /** Reads this node's reply stream (blocking `XREAD` on `replies`) until the layer closes. */
  async replyLoop(replies: Redis): Promise<void> {
    while (!this.#s.closed) {
      let res: [string, StreamEntry[]][] | null;
      try {
        res = (await replies.xread('COUNT', 512, 'BLOCK', BLOCK_MS, 'STREAMS', this.#s.replyKey, this.#lastReply)) as [string, StreamEntry[]][] | null;
      } catch (err) {
        if (this.#s.closed) return;
        this.#s.o.log.warn({ reason: err instanceof Error ? err.message : String(err) }, 'durable sends: reading replies failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      if (!res) continue;
      const done: string[] = [];
      for (const [, entries] of res) {
        for (const [rid, raw] of entries) {
          this.#lastReply = rid;
          done.push(rid);
          const f = fieldsOf(raw);
          this.answer(f.c ?? '', f.o === 'ok' ? 'ok' : 'err', f.p ?? (f.o === 'ok' ? 'null' : '{}'));
        }
      }
      if (done.length > 0) this.#s.cmd.xdel(this.#s.replyKey, ...done).catch(() => undefined);
    }
  }
}
