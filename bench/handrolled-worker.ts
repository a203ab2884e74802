/**
 * The baseline a user would write instead of threadvisor (bench/send.ts, "hand-rolled"): a worker
 * that takes batches of messages, awaits an async `send` per message in order (like a channel's
 * `send`, here resolving at once with a receipt, as the `loopback` channel does), and returns each
 * batch's receipts in one message `{ seq, receipts }`. No queue, no credits, no idempotency, no
 * validation, no restart: what threadvisor's send path has to earn its cost against.
 */
import { parentPort } from 'node:worker_threads';

type Msg = { n: number };
type Receipt = { externalId: string };

const port = parentPort;
if (!port) throw new Error('handrolled-worker must run in a worker thread');

let sent = 0;
/** The channel's send: async, one receipt per message. */
async function send(_m: Msg): Promise<Receipt> {
  return { externalId: `lb-${++sent}` };
}

// Batches are handled one after the other, each message awaited in order.
let chain: Promise<void> = Promise.resolve();
port.on('message', (batch: { seq: number; messages: Msg[] }) => {
  chain = chain.then(async () => {
    const receipts: Receipt[] = new Array<Receipt>(batch.messages.length);
    for (let i = 0; i < batch.messages.length; i++) receipts[i] = await send(batch.messages[i] as Msg);
    port.postMessage({ seq: batch.seq, receipts });
  });
});
port.postMessage('ready');
