/**
 * Baseline of bench/send.ts: a bare worker that acknowledges what it receives, with no runtime,
 * channel, queue or validation in between. A single message `{ n, … }` is answered with one ack
 * `{ n, ok: true }`; an array of messages with one array of acks, one per message (the shape of
 * the runtime's batched acks, minus the receipt the channel makes).
 */
import { parentPort } from 'node:worker_threads';

type Msg = { n: number };
type Ack = { n: number; ok: true };

const port = parentPort;
if (!port) throw new Error('raw-echo-worker must run in a worker thread');
port.postMessage('ready');
port.on('message', (m: Msg | Msg[]) => {
  if (Array.isArray(m)) {
    const acks: Ack[] = new Array<Ack>(m.length);
    for (let i = 0; i < m.length; i++) acks[i] = { n: (m[i] as Msg).n, ok: true };
    port.postMessage(acks);
  } else {
    port.postMessage({ n: m.n, ok: true } satisfies Ack);
  }
});
