/**
 * The code a user would write instead of threadvisor, the baseline of the send benches
 * (bench/send.ts, bench/tail.ts): a promise per message resolved with its receipt, queued
 * messages posted in batches of up to {@link HAND_BATCH} once per microtask turn, the worker
 * (bench/handrolled-worker.ts) awaiting an async send per message in order and answering each
 * batch's receipts in one message. No queue, no credits, no idempotency, no validation, no restart.
 */
import { Worker } from 'node:worker_threads';
import { closedLoop } from './paced.js';

/** Messages per posted batch. */
export const HAND_BATCH = 256;
const handRolledWorker = new URL('./handrolled-worker.js', import.meta.url);

export class HandRolled {
  readonly #w: Worker;
  readonly #batches = new Map<number, Array<(receipt: unknown) => void>>();
  #queued: unknown[] = [];
  #resolvers: Array<(receipt: unknown) => void> = [];
  #scheduled = false;
  #seq = 0;

  constructor(w: Worker) {
    this.#w = w;
    w.on('message', (m: { seq: number; receipts: unknown[] }) => {
      const rs = this.#batches.get(m.seq);
      if (!rs) return;
      this.#batches.delete(m.seq);
      for (let i = 0; i < rs.length; i++) (rs[i] as (r: unknown) => void)(m.receipts[i]);
    });
  }

  static async start(): Promise<HandRolled> {
    const w = new Worker(handRolledWorker);
    await new Promise((r) => w.once('message', r));
    return new HandRolled(w);
  }

  send(m: unknown): Promise<unknown> {
    return new Promise((resolve) => {
      this.#queued.push(m);
      this.#resolvers.push(resolve);
      if (!this.#scheduled) {
        this.#scheduled = true;
        queueMicrotask(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#scheduled = false;
    const q = this.#queued;
    const rs = this.#resolvers;
    this.#queued = [];
    this.#resolvers = [];
    for (let i = 0; i < q.length; i += HAND_BATCH) {
      const seq = ++this.#seq;
      this.#batches.set(seq, rs.slice(i, i + HAND_BATCH));
      this.#w.postMessage({ seq, messages: q.slice(i, i + HAND_BATCH) });
    }
  }

  terminate(): Promise<number> {
    return this.#w.terminate();
  }
}

/** The hand-rolled baseline in the subject's closed loop: `outstanding` sends in flight, the next sent as each settles; msgs/s. */
export function handRolledClosed(h: HandRolled, msgs: readonly unknown[], outstanding = 1000): Promise<number> {
  return closedLoop(msgs, (m) => h.send(m), outstanding);
}

/** The hand-rolled baseline's burst: every message sent at once, all awaited; msgs/s. */
export async function handRolledBurst(h: HandRolled, msgs: readonly unknown[]): Promise<number> {
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let settled = 0;
    const done = (): void => {
      if (++settled === msgs.length) resolve();
    };
    for (const m of msgs) void h.send(m).then(done);
  });
  return msgs.length / ((performance.now() - t0) / 1000);
}
