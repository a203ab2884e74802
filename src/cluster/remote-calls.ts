/**
 * Calls to keyed agents across nodes (an `InstanceManager` in cluster mode): a `call` on a node
 * that does not own the key travels through Redis to the node that does, and its answer back.
 *
 * - Each node has one request stream `{ns}:mc:<nodeId>` and one answer stream `{ns}:ma:<nodeId>`,
 *   both read by one blocking `XREAD` on a connection of its own.
 * - A request carries the key, the message (JSON), the asking node, a correlation and a deadline
 *   (epoch ms). The owner runs it as a local call (one at a time per key, in order, as every call),
 *   answers on the asker's answer stream, and deletes the request. A request read after its
 *   deadline is dropped: the asker has given up on it already.
 * - Streams are trimmed near {@link MAXLEN} and expire an hour after their last entry.
 *
 * This module imports ioredis: only a manager in cluster mode loads it.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import type { Redis, RedisOptions } from 'ioredis';
import { clusterClient } from './redis-client.js';
import type { Logger } from 'pino';
import { StoppedError, ThreadvisorError, TimeoutError, UnavailableError, type ErrorCode } from '../errors.js';

const MAXLEN = 100_000;
const TTL_MS = 3_600_000;
const BLOCK_MS = 5_000;

/** What a node needs to run a call it was asked for. */
export type RemoteHandler = (key: string, message: unknown) => Promise<unknown>;

/** Options of {@link RemoteCalls}. */
export interface RemoteCallsOptions {
  readonly redis: string | RedisOptions | Redis;
  /** Key prefix (the manager's cluster namespace). */
  readonly namespace: string;
  readonly nodeId: string;
  readonly log: Logger;
}

interface Waiting {
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

type StreamEntry = [id: string, fields: string[]];

function fieldsOf(raw: string[]): Record<string, string> {
  const f: Record<string, string> = {};
  for (let i = 0; i + 1 < raw.length; i += 2) f[raw[i] as string] = raw[i + 1] as string;
  return f;
}

/** An error as JSON for the asking node: its code, message and details. */
function errorJson(err: unknown): string {
  if (err instanceof ThreadvisorError) {
    let details: unknown = err.details;
    try {
      JSON.stringify(details);
    } catch {
      details = {};
    }
    return JSON.stringify({ code: err.code, message: err.message, details });
  }
  return JSON.stringify({ code: 'agent_crashed', message: err instanceof Error ? err.message : String(err), details: {} });
}

/** Rebuilds an error the owner answered: a `ThreadvisorError` with the owner's code. */
function errorFrom(json: string): ThreadvisorError {
  try {
    const e = JSON.parse(json) as { code?: string; message?: string; details?: Record<string, unknown> };
    return new ThreadvisorError((e.code ?? 'agent_crashed') as ErrorCode, typeof e.message === 'string' ? e.message : 'the call failed on the owner', e.details ?? {});
  } catch {
    return new ThreadvisorError('unavailable', 'the owner answered an unreadable failure');
  }
}

/** One node's side of remote calls: asking other nodes, and answering them. */
export class RemoteCalls {
  readonly #o: RemoteCallsOptions;
  readonly #cmd: Redis;
  readonly #reader: Redis;
  readonly #prefix: string;
  readonly #requests: string;
  readonly #answers: string;
  readonly #waiting = new Map<string, Waiting>();
  readonly #epoch = randomUUID().slice(0, 8);
  #seq = 0;
  #lastRequest = '$';
  #lastAnswer = '$';
  #closed = false;
  #loop: Promise<void> | undefined;
  #handler: RemoteHandler | undefined;
  /** Requests answered and answers read, for stats and tests. */
  readonly counters = { asked: 0, answered: 0, expired: 0, timedOut: 0 };

  constructor(options: RemoteCallsOptions) {
    this.#o = options;
    this.#prefix = `{${options.namespace}}:`;
    this.#requests = `${this.#prefix}mc:${options.nodeId}`;
    this.#answers = `${this.#prefix}ma:${options.nodeId}`;
    const make = (extra: RedisOptions): Redis => clusterClient(options.redis, extra);
    this.#cmd = make({ enableAutoPipelining: true });
    this.#reader = make({ autoResendUnfulfilledCommands: false });
  }

  /** Connects and starts reading requests (answered with `handler`) and answers. */
  async start(handler: RemoteHandler): Promise<void> {
    this.#handler = handler;
    const connect = (c: Redis): Promise<void> => (c.status === 'wait' ? c.connect() : Promise.resolve());
    await Promise.all([connect(this.#cmd), connect(this.#reader)]);
    // Start after what is there now: requests left from an earlier process with this node id have
    // expired on the asking side already.
    const last = async (key: string): Promise<string> => {
      const r = (await this.#cmd.xrevrange(key, '+', '-', 'COUNT', 1)) as StreamEntry[];
      return r[0]?.[0] ?? '0-0';
    };
    [this.#lastRequest, this.#lastAnswer] = await Promise.all([last(this.#requests), last(this.#answers)]);
    this.#loop = this.#readLoop();
  }

  /**
   * Asks `owner` to run `message` on `key`'s agent; resolves with its answer, or rejects with the
   * owner's error (its code kept), `TimeoutError` (`timeout`) after `timeoutMs`, `unavailable`
   * when Redis cannot take the request.
   */
  async call(owner: string, key: string, message: unknown, timeoutMs: number): Promise<unknown> {
    if (this.#closed) throw new StoppedError('remote calls');
    const corr = `${this.#epoch}.${++this.#seq}`;
    const answer = new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiting.delete(corr);
        this.counters.timedOut++;
        reject(new TimeoutError(`call to agent ${key} on node ${owner}`, timeoutMs));
      }, timeoutMs);
      this.#waiting.set(corr, { resolve, reject, timer });
    });
    answer.catch(() => undefined);
    const key_ = `${this.#prefix}mc:${owner}`;
    try {
      await this.#cmd
        .multi()
        .xadd(key_, 'MAXLEN', '~', MAXLEN, '*', 'k', key, 'm', JSON.stringify(message), 'n', this.#o.nodeId, 'c', corr, 'd', String(Date.now() + timeoutMs))
        .pexpire(key_, TTL_MS)
        .exec();
    } catch (err) {
      const w = this.#waiting.get(corr);
      if (w) clearTimeout(w.timer);
      this.#waiting.delete(corr);
      throw new UnavailableError(`call to agent ${key}: Redis cannot take it (${err instanceof Error ? err.message : String(err)})`, { cause: err });
    }
    this.counters.asked++;
    return answer;
  }

  /** Ends the loop and the connections; calls still waiting reject with `stopped`. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#waiting.values()) {
      clearTimeout(w.timer);
      w.reject(new StoppedError('remote calls'));
    }
    this.#waiting.clear();
    this.#reader.disconnect();
    await this.#loop?.catch(() => undefined);
    await this.#cmd.quit().catch(() => this.#cmd.disconnect());
  }

  async #readLoop(): Promise<void> {
    while (!this.#closed) {
      let res: [string, StreamEntry[]][] | null;
      try {
        res = (await this.#reader.xread('COUNT', 256, 'BLOCK', BLOCK_MS, 'STREAMS', this.#requests, this.#answers, this.#lastRequest, this.#lastAnswer)) as [string, StreamEntry[]][] | null;
      } catch (err) {
        if (this.#closed) return;
        this.#o.log.warn({ reason: err instanceof Error ? err.message : String(err) }, 'remote calls: read failed; retrying');
        await new Promise((resolve) => setTimeout(resolve, 200));
        continue;
      }
      for (const [stream, entries] of res ?? []) {
        const done: string[] = [];
        for (const [id, raw] of entries) {
          done.push(id);
          if (stream === this.#requests) {
            this.#lastRequest = id;
            this.#serve(fieldsOf(raw));
          } else {
            this.#lastAnswer = id;
            this.#settle(fieldsOf(raw));
          }
        }
        if (done.length > 0) this.#cmd.xdel(stream, ...done).catch(() => undefined);
      }
    }
  }

  #serve(f: Record<string, string>): void {
    const deadline = Number(f.d);
    if (!(deadline > Date.now())) {
      this.counters.expired++;
      return;
    }
    let message: unknown;
    try {
      message = JSON.parse(f.m ?? '');
    } catch {
      this.#answer(f, 'err', JSON.stringify({ code: 'invalid_message', message: 'the request is not JSON', details: {} }));
      return;
    }
    const handler = this.#handler as RemoteHandler;
    handler(f.k ?? '', message).then(
      (value) => {
        let json: string;
        try {
          json = JSON.stringify(value) ?? 'null';
        } catch {
          json = 'null';
        }
        this.#answer(f, 'ok', json);
      },
      (err: unknown) => this.#answer(f, 'err', errorJson(err)),
    );
  }

  #answer(f: Record<string, string>, outcome: 'ok' | 'err', payload: string): void {
    if (this.#closed || !f.n) return;
    this.counters.answered++;
    const to = `${this.#prefix}ma:${f.n}`;
    this.#cmd
      .multi()
      .xadd(to, 'MAXLEN', '~', MAXLEN, '*', 'c', f.c ?? '', 'o', outcome, 'p', payload)
      .pexpire(to, TTL_MS)
      .exec()
      .catch((err: unknown) => this.#o.log.warn({ reason: err instanceof Error ? err.message : String(err) }, 'remote calls: could not answer'));
  }

  #settle(f: Record<string, string>): void {
    const w = this.#waiting.get(f.c ?? '');
    if (!w) return;
    this.#waiting.delete(f.c ?? '');
    clearTimeout(w.timer);
    if (f.o === 'ok') {
      try {
        w.resolve(JSON.parse(f.p ?? 'null'));
      } catch {
        w.resolve(null);
      }
    } else w.reject(errorFrom(f.p ?? '{}'));
  }
}
