/**
 * Durable sends (cluster mode, `durability: 'redis'`): `rt.send` on any node appends the message
 * to its instance's Redis stream, and the node that owns the instance delivers it.
 *
 * - **Accepted means written.** A send is accepted once Redis has its entry (one Lua script:
 *   the instance must be declared, its backlog below its `queueCapacity`, and an idempotency key
 *   already delivered answers with its first receipt instead). When Redis cannot take it the send
 *   rejects with `unavailable`: nothing is accepted and then lost.
 * - **Delivery by the owner.** The owner reads its instances' streams with one consumer group
 *   (`owners`, one consumer per node) in one blocking `XREADGROUP` across all of them, hands each
 *   entry to the instance's local queue (order, retries, pressure and the crash-loop guard as for
 *   any send), and once it settles acknowledges and deletes the entry, remembers a delivered
 *   idempotency key, and answers the sending node, in one script. A stream's length is thus the
 *   instance's backlog.
 * - **Failover.** A node that acquires an instance first claims the previous owner's pending
 *   entries (`XAUTOCLAIM`) and delivers them, in stream order, marked as redeliveries, before any
 *   new one. An entry whose delivery was cut short here (the instance stopped or moved) stays
 *   pending for the next owner.
 * - **Lost answers.** A read whose answer a lost connection took is not replayed; this node's
 *   pending entries are read again (those it does not hold already) before any new one. A sweep
 *   every few seconds claims pending entries of an owned stream that nobody here holds (left with
 *   another consumer by a read that outlived its stream's move). A settlement Redis could not
 *   take is retried while this node delivers the instance.
 * - **Receipts** travel back on the sending node's reply stream (read with a blocking `XREAD`).
 *
 * Keys (under the cluster's hash tag `{ns}`):
 * - `{ns}:q:<id>` the instance's stream: fields `m` (message JSON), `k` (idempotency key JSON, or
 *   empty), `n` (the node to answer, empty for `ack: 'accepted'`), `c` (the sender's correlation);
 * - `{ns}:r:<nodeId>` a node's reply stream: `c`, `o` (`ok` | `err`), `p` (receipt or error JSON);
 * - `{ns}:dk:<id>:<key>` the first receipt of a delivered idempotency key, for `deliveredKeyTtlMs`.
 *
 * This module imports ioredis: only cluster mode with durable sends loads it.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type { Redis, RedisOptions } from 'ioredis';
import type { Logger } from 'pino';
import { AbortedError, ChannelError, DeliveryFailedError, InstanceNotFoundError, InvalidMessageError, QueueFullError, StoppedError, ThreadvisorError, UnavailableError, type ErrorCode } from '../errors.js';
import { findNonJson } from '../manager/json.js';
import { defaultIdempotencyKey, type IdempotencyKey } from '../runtime/outbound/idempotency.js';
import { publish } from '../telemetry.js';
import type { AcceptedSend } from './options.js';
import { clusterClient, TurnBatches } from './redis-client.js';

/** The consumer group every owner reads with. */
const GROUP = 'owners';
/** Entries read per stream per `XREADGROUP`. */
const READ_COUNT = 256;
/** Entries of one instance handed to its queue and not yet settled, at most. */
const WINDOW = 512;
/** How often an owner looks for pending entries of its streams that nobody here holds (ms). */
const SWEEP_MS = 5_000;
/** A pending entry the sweep claims has been idle this long at least (ms). */
const SWEEP_MIN_IDLE_MS = 2_000;
/** Longest blocking read (ms): a change of the streams read interrupts it at once anyway. */
const BLOCK_MS = 5_000;
/** A node's reply stream is trimmed near this length and expires this long after its last reply. */
const REPLY_MAXLEN = 100_000;
const REPLY_TTL_MS = 3_600_000;

// Appends the sends of one turn to one stream. KEYS: specs, the stream, then the delivered keys
// the sends name. ARGV: id, default capacity, count, then per send: message JSON, key JSON ('' for
// none), node to answer ('' for none), correlation, delivered-key index into KEYS (0: none).
// Returns per send {1, entryId} | {0} (not declared) | {2, receipt JSON} (key delivered) |
// {3, capacity} (full).
const APPEND_MANY = `
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
  local b = 4 + i * 5
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
return out
`;
/** Sends appended by one script call at most. */
const APPEND_BATCH = 256;

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

/** Options of one durable send (those of `rt.send`, plus `ack`). */
export interface DurableSendOptions {
  idempotencyKey?: IdempotencyKey | null;
  signal?: AbortSignal;
  waitForCapacity?: boolean;
  ack?: 'delivered' | 'accepted';
}

/** What the durable layer needs of its runtime. */
export interface DurableHost {
  /**
   * Hands a message to the local instance's queue; settles with the channel's receipt or the
   * error its `send` would have rejected with. Rejects with `not_found` when it is not here.
   */
  deliver(id: string, message: unknown, key: IdempotencyKey | undefined, redelivery: boolean): Promise<unknown>;
  /** Whether the instance still runs here (a failure of a delivery is then final, not a hand-over). */
  holds(id: string): boolean;
}

/** Options of {@link DurableSends}. */
export interface DurableOptions {
  readonly redis: string | Record<string, unknown>;
  readonly nodeId: string;
  readonly namespace: string;
  /** Backlog bound of an instance declared without `queueCapacity`. */
  readonly defaultCapacity: number;
  /** How long a delivered idempotency key answers with its first receipt, ms. */
  readonly deliveredKeyTtlMs: number;
  /**
   * Longest blocking read of the owned streams (ms; default 5 000). Kept below half the lease's
   * safety margin, a read started before this node stopped an instance ends before any other
   * node can take the instance over, so it never takes an entry that belongs to the next owner.
   */
  readonly readBlockMs?: number;
  readonly log: Logger;
  /** Where `durable:*` events go (the runtime). */
  readonly emitter: EventEmitter;
}

/** Counters of the durable layer (health and tests). */
export interface DurableCounters {
  /** Sends this node appended. */
  appended: number;
  /** Entries this node delivered and settled (receipt or final failure). */
  settled: number;
  /** Entries claimed from a previous owner. */
  claimed: number;
  /** Sends answered from a delivered idempotency key without a new entry. */
  duplicates: number;
  /** Entries of this node read again after its reading connection was lost (delivered as redeliveries). */
  recovered: number;
  /** Entries that could not be read (not written by threadvisor): settled as `invalid_message`. */
  malformed: number;
}

interface Waiting {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
}

interface Stream {
  readonly key: string;
  inflight: number;
  /** Entries handed to the instance here and not yet settled (or given up), by entry id. */
  readonly held: Set<string>;
  /**
   * The reading connection was lost: a read Redis answered may never have reached this node, so
   * this consumer's pending entries that are not {@link Stream.held} are read again (from `from`).
   */
  recover: string | undefined;
}

type Fields = string[];
type StreamEntry = [id: string, fields: Fields];

/** The fields of an entry, by name. */
function fieldsOf(f: Fields): Record<string, string> {
  const out: Record<string, string> = {};
  for (let i = 0; i + 1 < f.length; i += 2) out[f[i] as string] = f[i + 1] as string;
  return out;
}

/** A JSON form of an error a sending node can rebuild. */
function errorJson(err: unknown): string {
  if (err instanceof DeliveryFailedError) {
    return JSON.stringify({ code: err.code, message: err.message, details: err.details, lastError: { message: err.lastError.message, class: err.lastError.class, code: err.lastError.channelCode } });
  }
  if (err instanceof ThreadvisorError) return JSON.stringify({ code: err.code, message: err.message, details: err.details });
  return JSON.stringify({ code: 'delivery_failed', message: err instanceof Error ? err.message : String(err), details: {} });
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

/** A receipt as JSON (a receipt that is not JSON travels as null). */
function receiptJson(receipt: unknown): string {
  try {
    return JSON.stringify(receipt) ?? 'null';
  } catch {
    return 'null';
  }
}

const isBusyGroup = (err: unknown): boolean => err instanceof Error && err.message.startsWith('BUSYGROUP');
const isNoGroup = (err: unknown): boolean => err instanceof Error && err.message.startsWith('NOGROUP');

/** Durable sends of one node (see the module's description). */
export class DurableSends {
  readonly #o: DurableOptions;
  readonly #prefix: string;
  readonly #replyKey: string;
  /** Commands (auto-pipelined: the sends and settlements of one turn go in one round trip). */
  readonly #cmd: Redis;
  /** Blocking reads of the owned streams. */
  readonly #reader: Redis;
  /** Blocking reads of this node's replies. */
  readonly #replies: Redis;
  #readerId: number | undefined;
  /** Instances this node delivers, by id. */
  readonly #streams = new Map<string, Stream>();
  /** Adoptions under way (claiming a previous owner's entries), by instance id: a drop cancels one. */
  readonly #adopting = new Map<string, symbol>();
  /** Entries handed to a local instance and not yet settled, by instance id (kept across a drop and a new adopt). */
  readonly #held = new Map<string, Set<string>>();
  readonly #waiting = new Map<string, Waiting>();
  /** Correlations are `<epoch>.<n>`: a reply to an earlier process with this node id is ignored. */
  readonly #epoch = randomUUID().slice(0, 8);
  #seq = 0;
  #lastReply = '0-0';
  #blocked = false;
  #rescan = false;
  #wake: (() => void) | undefined;
  #reading = true;
  #sweepWake: (() => void) | undefined;
  /** Settlements of this turn, by stream key. */
  readonly #toSettle = new TurnBatches<Settlement>(SETTLE_BATCH, (key, batch) => this.#settleBatch(key, batch));
  /** Sends of this turn, by instance id. */
  readonly #toAppend = new TurnBatches<Append>(APPEND_BATCH, (id, batch) => this.#appendBatch(id, batch));
  #closed = false;
  #loops: Promise<void>[] = [];
  readonly counters: DurableCounters = { appended: 0, settled: 0, claimed: 0, duplicates: 0, recovered: 0, malformed: 0 };

  constructor(options: DurableOptions, readonly host: DurableHost) {
    this.#o = options;
    this.#prefix = `{${options.namespace}}:`;
    this.#replyKey = `${this.#prefix}r:${options.nodeId}`;
    const make = (extra: RedisOptions): Redis => clusterClient(options.redis, extra);
    this.#cmd = make({ enableAutoPipelining: true });
    // A read cut by a lost connection is not replayed on the next one: by then this node may no
    // longer own some of the streams it named. The loop reads again with the streams it owns.
    this.#reader = make({ autoResendUnfulfilledCommands: false });
    // A lost connection may have taken the answer of a read with it: those entries are pending
    // here but were never delivered. Read this consumer's pending entries again before new ones.
    this.#reader.on('close', () => {
      this.#readerId = undefined; // a new connection has a new client id
      for (const s of this.#streams.values()) s.recover = '0-0';
    });
    this.#replies = make({});
    this.#cmd.defineCommand('tvAppendMany', { lua: APPEND_MANY });
    this.#cmd.defineCommand('tvSettleMany', { lua: SETTLE_MANY });
  }

  /** Connects and starts reading replies and owned streams. */
  async start(): Promise<void> {
    const connect = (c: Redis): Promise<void> => (c.status === 'wait' ? c.connect() : Promise.resolve());
    await Promise.all([connect(this.#cmd), connect(this.#reader), connect(this.#replies)]);
    this.#readerId = Number(await this.#reader.client('ID'));
    this.#loops = [this.#replyLoop(), this.#readLoop(), this.#sweepLoop()];
  }

  /**
   * Appends a send to the instance's stream; resolves with the owner's receipt (or, with
   * `ack: 'accepted'`, with {@link AcceptedSend} once Redis has it).
   */
  async send(id: string, message: unknown, options: DurableSendOptions = {}): Promise<unknown> {
    if (this.#closed) throw new StoppedError('runtime');
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
        r = await this.#append(id, json, keyJson, answer ? this.#o.nodeId : '', corr);
      } catch (err) {
        this.#waiting.delete(corr);
        throw new UnavailableError(`send to instance ${id}: Redis cannot take it (${err instanceof Error ? err.message : String(err)})`, { cause: err });
      }
      if (r[0] === 1) {
        this.counters.appended++;
        if (!answer) return { accepted: true, entryId: String(r[1]) } satisfies AcceptedSend;
        break;
      }
      if (r[0] === 2) {
        this.#waiting.delete(corr);
        this.counters.duplicates++;
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
      if (this.#closed) throw new StoppedError('runtime');
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

  /**
   * Starts delivering `id` here (its lease was acquired and its instance started): claims what a
   * previous owner left pending and delivers it first, then reads new entries. Retries while Redis
   * is unreachable, until {@link DurableSends.drop}.
   */
  async adopt(id: string): Promise<void> {
    if (this.#closed || this.#streams.has(id)) return;
    const token = Symbol(id);
    this.#adopting.set(id, token);
    const wanted = (): boolean => !this.#closed && this.#adopting.get(id) === token;
    const stream: Stream = { key: this.#streamKey(id), inflight: 0, held: this.#held.get(id) ?? new Set(), recover: undefined };
    this.#held.set(id, stream.held);
    for (let attempt = 0; ; attempt++) {
      if (!wanted()) return;
      try {
        await this.#ensureGroup(stream.key);
        let cursor = '0-0';
        do {
          const res = (await this.#cmd.xautoclaim(stream.key, GROUP, this.#o.nodeId, 0, cursor, 'COUNT', READ_COUNT)) as unknown as [string, (StreamEntry | null)[]];
          cursor = res[0];
          if (!wanted()) return; // dropped meanwhile: what was just claimed stays pending for the next owner
          for (const e of res[1]) {
            if (!e || stream.held.has(e[0])) continue;
            this.counters.claimed++;
            this.#deliver(id, stream, e, true);
          }
        } while (cursor !== '0-0');
        break;
      } catch (err) {
        this.#o.log.warn({ instanceId: id, reason: err instanceof Error ? err.message : String(err) }, 'durable sends: could not take over the stream; retrying');
        await new Promise((resolve) => setTimeout(resolve, Math.min(2000, 100 * 2 ** attempt)));
      }
    }
    if (!wanted()) return;
    this.#adopting.delete(id);
    this.#streams.set(id, stream);
    this.#kick();
  }

  /** Stops reading `id` here (it stops or moves): what was read and is not settled stays pending for the next owner. */
  drop(id: string): void {
    this.#adopting.delete(id);
    if (this.#streams.delete(id)) this.#kick();
  }

  /** Stops reading any stream (the runtime stops): settlements and replies go on until {@link DurableSends.close}. */
  halt(): void {
    this.#reading = false;
    this.#streams.clear();
    this.#kick();
  }

  /** Ends every loop and connection; waits still open reject with `stopped` (their sends stand). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.halt();
    for (const w of this.#waiting.values()) w.reject(new StoppedError('runtime (the send stands and is delivered by the owner)'));
    this.#waiting.clear();
    this.#sweepWake?.();
    this.#reader.disconnect();
    this.#replies.disconnect();
    await Promise.allSettled(this.#loops);
    await this.#cmd.quit().catch(() => this.#cmd.disconnect());
  }

  /** Sends waiting for a receipt. */
  get waiting(): number {
    return this.#waiting.size;
  }

  // --- internals -------------------------------------------------------------------------

  #streamKey(id: string): string {
    return `${this.#prefix}q:${id}`;
  }

  #deliveredKey(id: string, keyJson: string): string {
    return keyJson === '' ? `${this.#prefix}dk:-` : `${this.#prefix}dk:${id}:${keyJson}`;
  }

  async #ensureGroup(key: string): Promise<void> {
    try {
      await this.#cmd.xgroup('CREATE', key, GROUP, '0', 'MKSTREAM');
    } catch (err) {
      if (!isBusyGroup(err)) throw err;
    }
  }

  /** Wakes the read loop: the set of streams or their credit changed. */
  #kick(): void {
    this.#rescan = true;
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
    if (this.#blocked && this.#readerId !== undefined) {
      this.#blocked = false;
      this.#cmd.client('UNBLOCK', this.#readerId).catch(() => undefined);
    }
  }

  async #readLoop(): Promise<void> {
    while (!this.#closed) {
      this.#rescan = false;
      const open = this.#reading ? [...this.#streams.entries()].filter(([, s]) => s.inflight < WINDOW) : [];
      if (open.length === 0) {
        await new Promise<void>((resolve) => {
          if (this.#rescan || this.#closed) return resolve();
          this.#wake = resolve;
        });
        continue;
      }
      const recovering = open.filter(([, s]) => s.recover !== undefined);
      let res: [string, StreamEntry[]][] | null;
      try {
        this.#readerId ??= Number(await this.#reader.client('ID'));
        if (recovering.length > 0) {
          // This consumer's own pending entries, without blocking: delivered again unless held here.
          res = (await this.#reader.xreadgroup(
            'GROUP',
            GROUP,
            this.#o.nodeId,
            'COUNT',
            READ_COUNT,
            'STREAMS',
            ...recovering.map(([, s]) => s.key),
            ...recovering.map(([, s]) => s.recover as string),
          )) as [string, StreamEntry[]][] | null;
          const byKey = new Map(recovering.map(([id, s]) => [s.key, { id, s }]));
          const got = new Set<string>();
          for (const [key, entries] of res ?? []) {
            const own = byKey.get(key);
            if (!own || entries.length === 0) continue;
            got.add(key);
            for (const e of entries) {
              own.s.recover = e[0];
              if ((e[1] as Fields | null) === null || own.s.held.has(e[0])) continue;
              this.counters.recovered++;
              this.#deliver(own.id, own.s, e, true);
            }
          }
          for (const [, s] of recovering) if (!got.has(s.key)) s.recover = undefined;
          continue;
        }
        this.#blocked = true;
        res = (await this.#reader.xreadgroup(
          'GROUP',
          GROUP,
          this.#o.nodeId,
          'COUNT',
          READ_COUNT,
          'BLOCK',
          this.#o.readBlockMs ?? BLOCK_MS,
          'STREAMS',
          ...open.map(([, s]) => s.key),
          ...open.map(() => '>'),
        )) as [string, StreamEntry[]][] | null;
      } catch (err) {
        if (this.#closed) return;
        if (isNoGroup(err)) {
          // A stream was removed (its instance undeclared) or Redis lost it: recreate the groups.
          for (const [, s] of open) await this.#ensureGroup(s.key).catch(() => undefined);
          continue;
        }
        for (const [, s] of open) s.recover ??= '0-0';
        this.#o.log.warn({ reason: err instanceof Error ? err.message : String(err) }, 'durable sends: read failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      } finally {
        this.#blocked = false;
      }
      if (!res) continue;
      const byKey = new Map(open.map(([id, s]) => [s.key, { id, s }]));
      for (const [key, entries] of res) {
        const own = byKey.get(key);
        // A stream dropped while the read was blocked: its entries stay pending here until the
        // next owner's sweep claims them.
        if (!own || this.#streams.get(own.id) !== own.s) continue;
        for (const e of entries) this.#deliver(own.id, own.s, e, false);
      }
    }
  }

  /** Hands one entry to the instance and settles it once its outcome is known. */
  #deliver(id: string, stream: Stream, [entryId, raw]: StreamEntry, redelivery: boolean): void {
    const f = fieldsOf(raw);
    let message: unknown;
    let key: IdempotencyKey | undefined;
    try {
      message = JSON.parse(f.m ?? '');
      key = f.k ? (JSON.parse(f.k) as IdempotencyKey) : undefined;
    } catch {
      this.counters.malformed++;
      this.#o.log.error({ instanceId: id, entryId }, 'durable sends: an entry that is not a threadvisor send was settled as invalid_message');
      publish(this.#o.emitter, 'durable:malformed', () => ({ instanceId: id, entryId }));
      this.#settle(stream, id, entryId, f, undefined, 'err', JSON.stringify({ code: 'invalid_message', message: `entry ${entryId} of instance ${id} is not a threadvisor send`, details: {} }));
      return;
    }
    stream.inflight++;
    stream.held.add(entryId);
    const credit = (): void => {
      if (stream.inflight-- === WINDOW) this.#kick();
    };
    this.host.deliver(id, message, key, redelivery).then(
      (receipt) => {
        credit();
        this.#settle(stream, id, entryId, f, key, 'ok', receiptJson(receipt));
      },
      (err: unknown) => {
        credit();
        // Cut short because the instance stopped or moved: the next owner delivers it.
        if (!this.host.holds(id) || this.#closed) {
          stream.held.delete(entryId);
          return;
        }
        this.#settle(stream, id, entryId, f, key, 'err', errorJson(err));
      },
    );
  }

  /**
   * Acknowledges, deletes and answers one delivered entry: the settlements of one turn go to Redis
   * together, one script per stream. While Redis cannot take them they are retried (with backoff)
   * as long as this node delivers the instance; the entry stays pending meanwhile, and a next
   * owner delivers it again (at least once).
   */
  #settle(stream: Stream, id: string, entryId: string, f: Record<string, string>, key: IdempotencyKey | undefined, outcome: 'ok' | 'err', payload: string): void {
    const node = f.n ?? '';
    const keyJson = key === undefined ? '' : (f.k ?? '');
    this.#queueSettle({
      stream,
      id,
      entryId,
      corr: f.c ?? '',
      dk: keyJson === '' ? undefined : this.#deliveredKey(id, keyJson),
      reply: node === '' ? undefined : `${this.#prefix}r:${node}`,
      outcome,
      payload,
      attempt: 0,
    });
  }

  /** Queues one send for this turn's append to its instance's stream. */
  #append(id: string, json: string, keyJson: string, node: string, corr: string): Promise<AppendResult> {
    return new Promise((resolve, reject) => this.#toAppend.add(id, { json, keyJson, node, corr, resolve, reject }));
  }

  #appendBatch(id: string, batch: Append[]): void {
    const keys = [`${this.#prefix}specs`, this.#streamKey(id)];
    const index = new Map<string, number>();
    const args: (string | number)[] = [id, this.#o.defaultCapacity, batch.length];
    for (const a of batch) {
      let dk = 0;
      if (a.keyJson !== '') {
        const k = this.#deliveredKey(id, a.keyJson);
        dk = index.get(k) ?? 0;
        if (dk === 0) {
          keys.push(k);
          dk = keys.length;
          index.set(k, dk);
        }
      }
      args.push(a.json, a.keyJson, a.node, a.corr, dk);
    }
    (this.#cmd as unknown as { tvAppendMany(...a: unknown[]): Promise<AppendResult[]> }).tvAppendMany(keys.length, ...keys, ...args).then(
      (results) => batch.forEach((a, i) => a.resolve(results[i] ?? [0, undefined])),
      (err: unknown) => {
        for (const a of batch) a.reject(err);
      },
    );
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
    const args: (string | number)[] = [this.#o.deliveredKeyTtlMs, batch.length];
    // A send this process made is answered here once settled, without a reply through Redis (a
    // send of an earlier process with this node id has nobody waiting: no reply either).
    const own = (r: string | undefined): boolean => r === this.#replyKey;
    for (const s of batch) args.push(s.entryId, s.outcome, s.payload, s.corr, s.dk === undefined ? 0 : at(s.dk), s.reply === undefined || own(s.reply) ? 0 : at(s.reply));
    (this.#cmd as unknown as { tvSettleMany(...a: unknown[]): Promise<unknown> }).tvSettleMany(keys.length, ...keys, ...args).then(
      () => {
        for (const s of batch) {
          s.stream.held.delete(s.entryId);
          if (own(s.reply)) this.#answer(s.corr, s.outcome, s.payload);
        }
        this.counters.settled += batch.length;
      },
      (err: unknown) => {
        const first = batch[0] as Settlement;
        if (first.attempt === 0) this.#o.log.warn({ instanceId: first.id, entries: batch.length, reason: err instanceof Error ? err.message : String(err) }, 'durable sends: delivered but not acknowledged yet; retrying');
        for (const s of batch) {
          if (this.#closed || !this.host.holds(s.id)) {
            s.stream.held.delete(s.entryId);
            continue;
          }
          setTimeout(() => this.#queueSettle({ ...s, attempt: s.attempt + 1 }), Math.min(2000, 100 * 2 ** s.attempt)).unref();
        }
      },
    );
  }

  /**
   * Every {@link SWEEP_MS}: an owned stream whose pending entries are not all held here (an entry
   * left with another consumer by a read that outlived its stream's move, or one of this node's
   * whose read answer was lost) is claimed and those entries are delivered, as redeliveries.
   */
  async #sweepLoop(): Promise<void> {
    while (!this.#closed) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, SWEEP_MS);
        this.#sweepWake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#sweepWake = undefined;
      for (const [id, stream] of [...this.#streams]) {
        if (this.#closed) return;
        try {
          const [count, , , consumers] = (await this.#cmd.xpending(stream.key, GROUP)) as [number, string | null, string | null, [string, string][] | null];
          if (count === 0 || this.#streams.get(id) !== stream) continue;
          const mine = Number((consumers ?? []).find(([c]) => c === this.#o.nodeId)?.[1] ?? 0);
          if (mine === count && mine <= stream.held.size) continue;
          let cursor = '0-0';
          do {
            // Idle for a while: not an entry whose read answer is on its way here right now.
            const res = (await this.#cmd.xautoclaim(stream.key, GROUP, this.#o.nodeId, SWEEP_MIN_IDLE_MS, cursor, 'COUNT', READ_COUNT)) as unknown as [string, (StreamEntry | null)[]];
            cursor = res[0];
            if (this.#streams.get(id) !== stream) break;
            for (const e of res[1]) {
              if (!e || stream.held.has(e[0])) continue;
              this.counters.recovered++;
              this.#deliver(id, stream, e, true);
            }
          } while (cursor !== '0-0');
        } catch {
          // Redis unreachable: the next sweep tries again.
        }
      }
    }
  }

  /** Resolves (or rejects) the send waiting under `corr`, if this process has one. */
  #answer(corr: string, outcome: 'ok' | 'err', payload: string): void {
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

  async #replyLoop(): Promise<void> {
    while (!this.#closed) {
      let res: [string, StreamEntry[]][] | null;
      try {
        res = (await this.#replies.xread('COUNT', 512, 'BLOCK', BLOCK_MS, 'STREAMS', this.#replyKey, this.#lastReply)) as [string, StreamEntry[]][] | null;
      } catch (err) {
        if (this.#closed) return;
        this.#o.log.warn({ reason: err instanceof Error ? err.message : String(err) }, 'durable sends: reading replies failed; retrying');
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
          this.#answer(f.c ?? '', f.o === 'ok' ? 'ok' : 'err', f.p ?? (f.o === 'ok' ? 'null' : '{}'));
        }
      }
      if (done.length > 0) this.#cmd.xdel(this.#replyKey, ...done).catch(() => undefined);
    }
  }
}
