/**
 * The lease deadline a cluster node shares with its workers, on a real instance worker: past it
 * the instance neither polls nor sends (a process resumed after a pause must not act on a lease
 * that may have passed on); moved forward again, it goes on where it stopped.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { fenceNow, fenceView, isFenced } from '../src/wire/fence.js';
import { harnesses, inboundMessages, startInstanceWorker } from './helpers/instance.js';
import { waitFor } from './helpers/fixtures.js';

afterEach(async () => {
  await Promise.all([...harnesses].map((h) => h.host.shutdown('brutal_kill')));
});

describe('lease deadline in the worker', { timeout: 30_000 }, () => {
  it('the fence view reads the shared deadline on one time scale', () => {
    const view = fenceView(new SharedArrayBuffer(8));
    expect(isFenced(view)).toBe(true); // 0: fenced until the first renewal
    view[0] = fenceNow() + 60_000;
    expect(isFenced(view)).toBe(false);
  });

  it('past the deadline an instance neither polls nor sends; moved forward, it goes on', async () => {
    const fence = new SharedArrayBuffer(8);
    const deadline = fenceView(fence);
    deadline[0] = fenceNow() + 60_000;
    const h = await startInstanceWorker({ fence, settings: { inbound: { ratePerSec: 200, batch: 5 } } });
    await h.waitForNotice('status', (n) => n.status === 'connected');
    await waitFor(() => inboundMessages(h.notices).length > 0);
    expect(await h.send({ text: 'before' })).toMatchObject({ externalId: expect.any(String) });

    deadline[0] = 0; // the node fenced itself (or its renewal is overdue)
    await new Promise((r) => setTimeout(r, 50)); // a poll in progress may finish
    const inboundAtFence = inboundMessages(h.notices).length;
    let sent = false;
    const pending = h.send({ text: 'held' }).then((r) => {
      sent = true;
      return r;
    });
    await new Promise((r) => setTimeout(r, 300));
    expect(sent).toBe(false);
    expect(inboundMessages(h.notices).length).toBe(inboundAtFence);

    deadline[0] = fenceNow() + 60_000; // renewed
    expect(await pending).toMatchObject({ externalId: expect.any(String) });
    await waitFor(() => inboundMessages(h.notices).length > inboundAtFence);
  });
});
