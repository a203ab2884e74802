/**
 * Main-thread allocation per send: a sampling heap profile (objects a young or a full GC
 * collected included, one sample per KiB on average) over the same closed loop (1000 sends
 * outstanding) through `rt.send` to one `loopback` instance and through the hand-rolled baseline
 * (bench/handrolled.ts), in the same run. Prints bytes per send and where `rt.send`'s go, by
 * allocating function; the loop's own callback is counted on both sides alike.
 *
 * Run: `npm run build && node --expose-gc dist/bench/alloc-profile.js [--quick]`.
 */
import { Session } from 'node:inspector/promises';
import { pino } from 'pino';
import { Runtime } from '../src/index.js';
import { HandRolled } from './handrolled.js';
import { compare, quick, report } from './lib.js';
import { closedLoop } from './paced.js';

const N = quick ? 50_000 : 200_000;
const msgs = Array.from({ length: N }, (_, n) => ({ room: 'r1', text: `hello ${n}`, n }));
type Node = { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: Node[] };

/** Bytes allocated per send over a profiled loop, and by allocating function. */
async function profile(s: Session, send: (m: unknown) => Promise<unknown>): Promise<{ perSend: number; by: Map<string, number> }> {
  await closedLoop(msgs.slice(0, 20_000), send); // warm-up
  (globalThis as { gc?: () => void }).gc?.();
  await s.post('HeapProfiler.startSampling', { samplingInterval: 1024, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true });
  await closedLoop(msgs, send);
  const { profile: p } = await s.post('HeapProfiler.stopSampling');
  const by = new Map<string, number>();
  let total = 0;
  const walk = (n: Node): void => {
    const k = `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').slice(-2).join('/')}:${n.callFrame.lineNumber + 1}`;
    by.set(k, (by.get(k) ?? 0) + n.selfSize);
    total += n.selfSize;
    n.children.forEach(walk);
  };
  walk(p.head as unknown as Node);
  return { perSend: Math.round(total / N), by };
}

const rt = await Runtime.start({ logger: pino({ level: 'silent' }) });
await rt.startInstance({ id: 'p0', name: 'p0', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
const hand = await HandRolled.start();
const s = new Session();
s.connect();
await s.post('HeapProfiler.enable');
const ours = await profile(s, (m) => rt.send('p0', m));
const theirs = await profile(s, (m) => hand.send(m));
await rt.stop();
await hand.terminate();
console.log(`rt.send: ${ours.perSend} B per send; hand-rolled: ${theirs.perSend} B. Where rt.send's go:`);
for (const [k, v] of [...ours.by].sort((a, b) => b[1] - a[1]).slice(0, 12)) console.log(`${Math.round(v / N).toString().padStart(6)} B  ${k}`);
report('alloc', [
  compare('main-thread allocation per rt.send (closed loop, 1000 outstanding)', 'B', ours.perSend, 'hand-rolled, same loop', theirs.perSend),
]);
