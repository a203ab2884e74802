/** Where rt.send allocates on the main thread: a sampling heap profile (collected objects included) over a closed loop. */
import { Session } from 'node:inspector/promises';
import { writeFileSync } from 'node:fs';
import { pino } from 'pino';
import { Runtime } from '../src/index.js';

const rt = await Runtime.start({ logger: pino({ level: 'silent' }) });
await rt.startInstance({ id: 'p0', name: 'p0', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
const N = 200_000;
const msgs = Array.from({ length: N }, (_, n) => ({ room: 'r1', text: `hello ${n}`, n }));
async function loop(count: number): Promise<void> {
  await new Promise<void>((resolve) => {
    let next = 0;
    let settled = 0;
    const done = (): void => {
      if (++settled === count) resolve();
      else if (next < count) void rt.send('p0', msgs[next++]).then(done);
    };
    while (next < 1000 && next < count) void rt.send('p0', msgs[next++]).then(done);
  });
}
await loop(20_000);
const s = new Session();
s.connect();
await s.post('HeapProfiler.enable');
await s.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
await loop(N);
const { profile } = await s.post('HeapProfiler.stopSampling');
type Node = { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: Node[] };
const by = new Map<string, number>();
let total = 0;
const walk = (n: Node): void => {
  const k = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber + 1}`;
  by.set(k, (by.get(k) ?? 0) + n.selfSize);
  total += n.selfSize;
  n.children.forEach(walk);
};
walk(profile.head as unknown as Node);
console.log(`total sampled ${Math.round(total / N)} B per send`);
for (const [k, v] of [...by].sort((a, b) => b[1] - a[1]).slice(0, 25)) console.log(`${Math.round(v / N).toString().padStart(5)} B  ${k}`);
writeFileSync('/tmp/prof/send.heapprofile', JSON.stringify(profile));
await rt.stop();
