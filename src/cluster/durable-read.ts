/**
 * Durable sends, the owner's side: reads the streams of the instances this node delivers (one
 * blocking `XREADGROUP` across all of them), hands their entries to the instances, reads its own
 * pending entries again after a lost connection, sweeps for pending entries nobody here holds, and
 * adopts a stream by claiming what a previous owner left pending.
 *
 * @packageDocumentation
 */
import type { Redis } from 'ioredis';
import type { IdempotencyKey } from '../runtime/outbound/idempotency.js';
import { publish } from '../telemetry.js';
import { BLOCK_MS, fieldsOf, GROUP, READ_COUNT, streamKey, type DurableState, type Fields, type Stream, type StreamEntry } from './durable-state.js';
import { errorJson, receiptJson, type DurableSettles } from './durable-settle.js';

/** Entries of one instance handed to its queue and not yet settled, at most. */
const WINDOW = 512;
/** How often an owner looks for pending entries of its streams that nobody here holds (ms). */
const SWEEP_MS = 5_000;
/** A pending entry the sweep claims has been idle this long at least (ms). */
const SWEEP_MIN_IDLE_MS = 2_000;

const isBusyGroup = (err: unknown): boolean => err instanceof Error && err.message.startsWith('BUSYGROUP');
const isNoGroup = (err: unknown): boolean => err instanceof Error && err.message.startsWith('NOGROUP');

/** The reading of the streams one node delivers, their recovery and sweep, and adoption. */
export class DurableReads {
  readonly #s: DurableState;
  readonly #settles: DurableSettles;
  /** Blocking reads of the owned streams. */
  readonly #reader: Redis;
  #readerId: number | undefined;
  /** Instances this node delivers, by id. */
  readonly #streams = new Map<string, Stream>();
  /** Adoptions under way (claiming a previous owner's entries), by instance id: a drop cancels one. */
  readonly #adopting = new Map<string, symbol>();
  /** Entries handed to a local instance and not yet settled, by instance id (kept across a drop and a new adopt). */
  readonly #held = new Map<string, Set<string>>();
  #blocked = false;
  #rescan = false;
  #wake: (() => void) | undefined;
  #reading = true;
  #sweepWake: (() => void) | undefined;

  constructor(state: DurableState, reader: Redis, settles: DurableSettles) {
    this.#s = state;
    this.#reader = reader;
    this.#settles = settles;
    // A lost connection may have taken the answer of a read with it: those entries are pending
    // here but were never delivered. Read this consumer's pending entries again before new ones.
    this.#reader.on('close', () => {
      this.#readerId = undefined; // a new connection has a new client id
      for (const s of this.#streams.values()) s.recover = '0-0';
    });
  }

  /** Learns the reading connection's client id (to interrupt its blocking read). */
  async identify(): Promise<void> {
    this.#readerId = Number(await this.#reader.client('ID'));
  }

  /**
   * Starts delivering `id` here (its lease was acquired and its instance started): claims what a
   * previous owner left pending and delivers it first, then reads new entries. Retries while Redis
   * is unreachable, until {@link DurableReads.drop}.
   */
  async adopt(id: string): Promise<void> {
    if (this.#s.closed || this.#streams.has(id)) return;
    const token = Symbol(id);
    this.#adopting.set(id, token);
    const wanted = (): boolean => !this.#s.closed && this.#adopting.get(id) === token;
    const stream: Stream = { key: streamKey(this.#s, id), inflight: 0, held: this.#held.get(id) ?? new Set(), recover: undefined };
    this.#held.set(id, stream.held);
    for (let attempt = 0; ; attempt++) {
      if (!wanted()) return;
      try {
        await this.#ensureGroup(stream.key);
        let cursor = '0-0';
        do {
          const res = (await this.#s.cmd.xautoclaim(stream.key, GROUP, this.#s.o.nodeId, 0, cursor, 'COUNT', READ_COUNT)) as unknown as [string, (StreamEntry | null)[]];
          cursor = res[0];
          if (!wanted()) return; // dropped meanwhile: what was just claimed stays pending for the next owner
          for (const e of res[1]) {
            if (!e || stream.held.has(e[0])) continue;
            this.#s.counters.claimed++;
            this.#deliver(id, stream, e, true);
          }
        } while (cursor !== '0-0');
        break;
      } catch (err) {
        this.#s.o.log.warn({ instanceId: id, reason: err instanceof Error ? err.message : String(err) }, 'durable sends: could not take over the stream; retrying');
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

  /** Stops reading any stream (the runtime stops). */
  halt(): void {
    this.#reading = false;
    this.#streams.clear();
    this.#kick();
  }

  /** Ends the wait between two sweeps (the layer closes). */
  wakeSweep(): void {
    this.#sweepWake?.();
  }

  async #ensureGroup(key: string): Promise<void> {
    try {
      await this.#s.cmd.xgroup('CREATE', key, GROUP, '0', 'MKSTREAM');
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
      this.#s.cmd.client('UNBLOCK', this.#readerId).catch(() => undefined);
    }
  }

  /** Reads the owned streams until the layer closes. */
  async readLoop(): Promise<void> {
    while (!this.#s.closed) {
      this.#rescan = false;
      const open = this.#reading ? [...this.#streams.entries()].filter(([, s]) => s.inflight < WINDOW) : [];
      if (open.length === 0) {
        await new Promise<void>((resolve) => {
          if (this.#rescan || this.#s.closed) return resolve();
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
            this.#s.o.nodeId,
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
              this.#s.counters.recovered++;
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
          this.#s.o.nodeId,
          'COUNT',
          READ_COUNT,
          'BLOCK',
          this.#s.o.readBlockMs ?? BLOCK_MS,
          'STREAMS',
          ...open.map(([, s]) => s.key),
          ...open.map(() => '>'),
        )) as [string, StreamEntry[]][] | null;
      } catch (err) {
        if (this.#s.closed) return;
        if (isNoGroup(err)) {
          // A stream was removed (its instance undeclared) or Redis lost it: recreate the groups.
          for (const [, s] of open) await this.#ensureGroup(s.key).catch(() => undefined);
          continue;
        }
        for (const [, s] of open) s.recover ??= '0-0';
        this.#s.o.log.warn({ reason: err instanceof Error ? err.message : String(err) }, 'durable sends: read failed; retrying');
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
      this.#s.counters.malformed++;
      this.#s.o.log.error({ instanceId: id, entryId }, 'durable sends: an entry that is not a threadvisor send was settled as invalid_message');
      publish(this.#s.o.emitter, 'durable:malformed', () => ({ instanceId: id, entryId }));
      this.#settles.settle(stream, id, entryId, f, undefined, 'err', JSON.stringify({ code: 'invalid_message', message: `entry ${entryId} of instance ${id} is not a threadvisor send`, details: {} }));
      return;
    }
    stream.inflight++;
    stream.held.add(entryId);
    const credit = (): void => {
      if (stream.inflight-- === WINDOW) this.#kick();
    };
    this.#s.host.deliver(id, message, key, redelivery).then(
      (receipt) => {
        credit();
        this.#settles.settle(stream, id, entryId, f, key, 'ok', receiptJson(receipt));
      },
      (err: unknown) => {
        credit();
        // Cut short because the instance stopped or moved: the next owner delivers it.
        if (!this.#s.host.holds(id) || this.#s.closed) {
          stream.held.delete(entryId);
          return;
        }
        this.#settles.settle(stream, id, entryId, f, key, 'err', errorJson(err));
      },
    );
  }

  /**
   * Every {@link SWEEP_MS}: an owned stream whose pending entries are not all held here (an entry
   * left with another consumer by a read that outlived its stream's move, or one of this node's
   * whose read answer was lost) is claimed and those entries are delivered, as redeliveries.
   */
  async sweepLoop(): Promise<void> {
    while (!this.#s.closed) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, SWEEP_MS);
        this.#sweepWake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.#sweepWake = undefined;
      for (const [id, stream] of [...this.#streams]) {
        if (this.#s.closed) return;
        try {
          const [count, , , consumers] = (await this.#s.cmd.xpending(stream.key, GROUP)) as [number, string | null, string | null, [string, string][] | null];
          if (count === 0 || this.#streams.get(id) !== stream) continue;
          const mine = Number((consumers ?? []).find(([c]) => c === this.#s.o.nodeId)?.[1] ?? 0);
          if (mine === count && mine <= stream.held.size) continue;
          let cursor = '0-0';
          do {
            // Idle for a while: not an entry whose read answer is on its way here right now.
            const res = (await this.#s.cmd.xautoclaim(stream.key, GROUP, this.#s.o.nodeId, SWEEP_MIN_IDLE_MS, cursor, 'COUNT', READ_COUNT)) as unknown as [string, (StreamEntry | null)[]];
            cursor = res[0];
            if (this.#streams.get(id) !== stream) break;
            for (const e of res[1]) {
              if (!e || stream.held.has(e[0])) continue;
              this.#s.counters.recovered++;
              this.#deliver(id, stream, e, true);
            }
          } while (cursor !== '0-0');
        } catch {
          // Redis unreachable: the next sweep tries again.
        }
      }
    }
  }
}
