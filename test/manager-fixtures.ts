/** Shared agents and storages of the `manager-*` tests. */
import { pino } from 'pino';
import type { Agent, AgentInitInfo, AgentStopReason } from '../src/manager/types.js';
import { MemoryStorage, type Checkpoint, type CheckpointData, type CheckpointKey, type Storage, type WriteOptions } from '../src/manager/storage.js';

export const silent = pino({ level: 'silent' });

export interface CounterState {
  count: number;
  [k: string]: unknown;
}

export type CounterMsg =
  | { type: 'inc'; by?: number }
  | { type: 'get' }
  | { type: 'boom' }
  | { type: 'async-boom' }
  | { type: 'slow'; ms: number }
  | { type: 'wait'; gate: Promise<void> }
  | { type: 'set'; key: string; value: unknown };

/** What a test can see of the agents of one `makeCounter()` class. */
export interface CounterWorld {
  log: string[];
  inits: Array<{ key: string; state: unknown; info: AgentInitInfo }>;
  terminates: Array<{ key: string; reason: AgentStopReason }>;
  /** Keys whose `init` throws (count of failures left; Infinity for always). */
  failInit: Map<string, number>;
  constructed: number;
}

/**
 * A fresh counter agent class with its own log (no state shared between tests). `handle`
 * replies with the count after the message; `boom` throws, `async-boom` rejects.
 */
export function makeCounter() {
  const world: CounterWorld = { log: [], inits: [], terminates: [], failInit: new Map(), constructed: 0 };
  class Counter implements Agent<CounterState, CounterMsg, number> {
    state: CounterState = { count: 0 };
    constructor(readonly key: string) {
      world.constructed += 1;
    }
    init(state: CounterState | undefined, info: AgentInitInfo): void {
      world.inits.push({ key: this.key, state, info });
      const f = world.failInit.get(this.key) ?? 0;
      if (f > 0) {
        world.failInit.set(this.key, f - 1);
        throw new Error(`init of ${this.key} refused`);
      }
      if (state) this.state = { ...state };
    }
    async handle(msg: CounterMsg): Promise<number> {
      world.log.push(`${this.key}:${msg.type}`);
      switch (msg.type) {
        case 'inc':
          this.state.count += msg.by ?? 1;
          break;
        case 'boom':
          throw new Error(`boom in ${this.key}`);
        case 'async-boom':
          await Promise.resolve();
          throw new Error(`async boom in ${this.key}`);
        case 'slow':
          await new Promise((r) => setTimeout(r, msg.ms));
          break;
        case 'wait':
          await msg.gate;
          break;
        case 'set':
          this.state[msg.key] = msg.value;
          break;
        default:
          break;
      }
      return this.state.count;
    }
    snapshot(): CounterState {
      return this.state;
    }
    terminate(reason: AgentStopReason): void {
      world.terminates.push({ key: this.key, reason });
    }
  }
  return { Counter, world };
}

/** A synchronous agent (handle returns a value, not a promise). */
export class SyncEcho implements Agent<{ n: number }, number, number> {
  n = 0;
  constructor(readonly key: string) {}
  init(state: { n: number } | undefined): void {
    this.n = state?.n ?? 0;
  }
  handle(x: number): number {
    if (x < 0) throw new Error('negative');
    this.n += x;
    return this.n;
  }
  snapshot(): { n: number } {
    return { n: this.n };
  }
}

/** A storage wrapper whose operations can be made to fail or wait. */
export class FlakyStorage implements Storage {
  /** Next N puts reject (Infinity: all). */
  failPuts = 0;
  /** Next N gets reject. */
  failGets = 0;
  /** While set, every put waits for it. */
  putGate: Promise<void> | undefined;
  /** While set, every get waits for it. */
  getGate: Promise<void> | undefined;
  gets = 0;
  puts = 0;
  readonly putLog: Array<{ key: CheckpointKey; data: CheckpointData; options?: WriteOptions }> = [];
  constructor(readonly inner: Storage = new MemoryStorage()) {}
  async get(key: CheckpointKey): Promise<Checkpoint | undefined> {
    this.gets += 1;
    if (this.getGate) await this.getGate;
    if (this.failGets > 0) {
      this.failGets -= 1;
      throw new Error('storage unavailable (get)');
    }
    return this.inner.get(key);
  }
  async put(key: CheckpointKey, data: CheckpointData, options?: WriteOptions): Promise<Checkpoint> {
    this.puts += 1;
    this.putLog.push({ key, data, options });
    if (this.putGate) await this.putGate;
    if (this.failPuts > 0) {
      this.failPuts -= 1;
      throw new Error('storage unavailable (put)');
    }
    return this.inner.put(key, data, options);
  }
  delete(key: CheckpointKey, options?: WriteOptions): Promise<boolean> {
    return this.inner.delete(key, options);
  }
}

/** A promise with its resolve function exposed. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/** Lets every pending microtask and immediate run. */
export async function flush(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setImmediate(r));
}

/** Resolves when `cond()` holds, polling; rejects after `timeoutMs` (a liveness bound only). */
export async function until(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 2));
  }
}
