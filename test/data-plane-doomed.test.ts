/**
 * The data plane hands nothing to a doomed worker (its end is certain: `WorkerHost.isDoomed`),
 * even while acks drained from its data port would pump the queue: the sends wait for the
 * instance's next worker. Pure logic over a real MessageChannel; no thread.
 */
import { EventEmitter } from 'node:events';
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { DataPlane } from '../src/runtime/data-plane.js';
import type { Entry } from '../src/runtime/entry.js';
import { runtimeOptionsSchema } from '../src/runtime/options.js';
import { DeliveryFeed } from '../src/runtime/outbound/feed.js';
import { ColumnEncoder } from '../src/wire/columns.js';

describe('DataPlane.pump', { timeout: 10_000 }, () => {
  it('posts no batch to a doomed worker, and the same sends once the worker is not doomed', () => {
    const plane = new DataPlane({
      opts: runtimeOptionsSchema.parse({}),
      emitter: new EventEmitter(),
      deliveryForwarded: new Map(),
      feed: new DeliveryFeed(),
      counters: { malformed: 0, delivered: 0, handlerErrors: 0 },
      toError: () => undefined,
      commitCursor: () => undefined,
    });
    const { port1, port2 } = new MessageChannel();
    const queue = plane.newQueue('a', 100, () => undefined, (text) => text);
    let doomed = true;
    const entry = {
      iid: 7,
      dataPort: port1,
      server: { currentStatus: 'connected' },
      host: {
        get isDoomed() {
          return doomed;
        },
      },
      queue,
      columns: new ColumnEncoder(),
    } as unknown as Entry;
    const sends = [1, 2, 3].map((n) => queue.enqueue({ n }));
    for (const s of sends) s.catch(() => undefined);

    plane.pump(entry);
    expect(receiveMessageOnPort(port2)).toBeUndefined();
    expect(queue.depth).toBe(3);
    expect(queue.inFlight).toBe(0);

    doomed = false;
    plane.pump(entry);
    const posted = receiveMessageOnPort(port2)?.message as { t: string; i: number; messages: unknown[] };
    expect(posted).toMatchObject({ t: 'send', i: 7, messages: [{ n: 1 }, { n: 2 }, { n: 3 }] });
    expect(queue.inFlight).toBe(3);
    queue.close('test over');
    port1.close();
  });
});
