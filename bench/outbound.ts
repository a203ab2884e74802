/**
 * The outbound queue's own overhead, without threads: enqueue → take (credit 64) → ack of N
 * messages through an {@link OutboundQueue}, in messages/s, each next to baselines measured in
 * the same run:
 * - a plain array push / shift of the same messages in the same batches (the floor: what any
 *   queue costs at all);
 * - batched `postMessage` of the same messages to a bare echo worker, 64 per message, round
 *   trip (the thread boundary the queue feeds). The queue must be far faster than this one, so
 *   that end to end it costs a small part of the boundary's budget.
 */
import { Worker } from 'node:worker_threads';
import { OutboundQueue } from '../src/runtime/outbound/queue.js';
import type { AckResult } from '../src/runtime/outbound/types.js';
import { compare, quick, report, summary } from './lib.js';

const N = quick ? 20_000 : 100_000;
const CHUNK = 1000; // the default capacity: enqueue a full queue, then drain it
const CREDIT = 64;
const RUNS = quick ? 3 : 11;
const bare = new URL('./bare-worker.js', import.meta.url);

type Msg = { id?: string; room: string; text: string; n: number };

function makeMessages(keyed: boolean): Msg[] {
  return Array.from({ length: N }, (_, n) => (keyed ? { id: `m-${n}`, room: 'r1', text: `hello ${n}`, n } : { room: 'r1', text: `hello ${n}`, n }));
}

/** enqueue → take → ack through the queue; resolves when every send promise settled. */
async function queueRun(messages: Msg[]): Promise<number> {
  const q = new OutboundQueue<Msg, string>({ instanceId: 'bench', capacity: CHUNK });
  const t0 = performance.now();
  let last: Promise<string> | undefined;
  let settled = 0;
  const done = (): void => {
    settled++;
  };
  for (let i = 0; i < N; i += CHUNK) {
    const end = Math.min(N, i + CHUNK);
    for (let j = i; j < end; j++) {
      last = q.enqueue(messages[j] as Msg);
      last.then(done, done);
    }
    for (let b = q.take(CREDIT); b.length > 0; b = q.take(CREDIT)) {
      const acks: AckResult<string>[] = new Array(b.length);
      for (let k = 0; k < b.length; k++) acks[k] = { seq: b.seq + k, ok: true, receipt: 'ext' };
      q.ack(acks);
    }
  }
  await last;
  await new Promise((r) => setImmediate(r));
  const dt = performance.now() - t0;
  if (settled !== N) throw new Error(`settled ${settled} of ${N}`);
  return N / (dt / 1000);
}

/** The floor: the same messages through a plain array, push then shift in batches. */
async function arrayRun(messages: Msg[]): Promise<number> {
  const t0 = performance.now();
  const arr: Msg[] = [];
  let sink = 0;
  for (let i = 0; i < N; i += CHUNK) {
    const end = Math.min(N, i + CHUNK);
    for (let j = i; j < end; j++) arr.push(messages[j] as Msg);
    while (arr.length > 0) {
      const batch: Msg[] = [];
      for (let k = 0; k < CREDIT && arr.length > 0; k++) batch.push(arr.shift() as Msg);
      sink += batch.length;
    }
  }
  await Promise.resolve();
  const dt = performance.now() - t0;
  if (sink !== N) throw new Error('lost messages');
  return N / (dt / 1000);
}

/** The thread boundary: batches of 64 posted to a bare echo worker, round trip. */
async function postRun(w: Worker, messages: Msg[]): Promise<number> {
  const t0 = performance.now();
  let got = 0;
  const done = new Promise<void>((resolve) => {
    const on = (m: Msg[]): void => {
      got += m.length;
      if (got >= N) {
        w.off('message', on);
        resolve();
      }
    };
    w.on('message', on);
  });
  for (let i = 0; i < N; i += CREDIT) w.postMessage(messages.slice(i, i + CREDIT));
  await done;
  return N / ((performance.now() - t0) / 1000);
}

async function main(): Promise<void> {
  const plain = makeMessages(false);
  const keyed = makeMessages(true);
  const w = new Worker(bare);
  await new Promise((r) => w.once('message', r));

  const samples: Record<string, number[]> = { queue: [], queueKeyed: [], array: [], post: [] };
  // warm up every path once, then interleave the runs so drift hits them alike
  await queueRun(plain);
  await queueRun(keyed);
  await arrayRun(plain);
  await postRun(w, plain);
  for (let r = 0; r < RUNS; r++) {
    samples.queue?.push(await queueRun(plain));
    samples.queueKeyed?.push(await queueRun(keyed));
    samples.array?.push(await arrayRun(plain));
    samples.post?.push(await postRun(w, plain));
  }
  await w.terminate();

  const med = (k: string) => Math.round(summary(samples[k] as number[]).median);
  const rows = [
    compare('queue enqueue→take→ack (no key)', 'msgs/s', med('queue'), 'array push/shift', med('array'), { min: 0.05 }),
    compare('queue enqueue→take→ack (no key)', 'msgs/s', med('queue'), 'batched postMessage round trip', med('post'), { min: 2 }),
    // keys add two Map writes and an LRU insert per message; >= 1x keeps the queue's share of
    // the end-to-end budget at or below the boundary's own (the data-plane target is 0.5x of it)
    compare('queue enqueue→take→ack (idempotency keys)', 'msgs/s', med('queueKeyed'), 'batched postMessage round trip', med('post'), { min: 1 }),
  ];
  report('outbound', rows, {
    messages: N,
    chunk: CHUNK,
    credit: CREDIT,
    runs: RUNS,
    samples: Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, summary(v)])),
  });
}

await main();
