/**
 * Stateless task throughput through `rt.pool` vs a bare piscina pool with the same size, in the
 * same run (target: >= 0.9x).
 */
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import { pino } from 'pino';
import { Runtime } from '../src/index.js';
import { compare, quick, report } from './lib.js';

const filename = fileURLToPath(new URL('./pool-task.js', import.meta.url));
const tasks = quick ? 800 : 4000;
const rounds = quick ? 3 : 5;
const n = 18;

async function throughput(run: (i: number) => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await Promise.all(Array.from({ length: tasks }, (_, i) => run(i)));
  return tasks / ((performance.now() - t0) / 1000);
}

const bare = new Piscina({ filename, maxThreads: availableParallelism() });
const rt = await Runtime.start({ logger: pino({ level: 'silent' }) });
const pool = rt.pool;
// warm both pools (threads spawned, code compiled)
await Promise.all(Array.from({ length: 50 }, () => bare.run({ n })));
await Promise.all(Array.from({ length: 50 }, () => pool.run({ n }, { filename })));

const bareRates: number[] = [];
const rtRates: number[] = [];
for (let r = 0; r < rounds; r++) {
  bareRates.push(await throughput(() => bare.run({ n })));
  rtRates.push(await throughput(() => pool.run({ n }, { filename })));
}
await bare.destroy();
await rt.stop();

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const b = Math.round(median(bareRates));
const v = Math.round(median(rtRates));
report('pool', [compare(`rt.pool task throughput (fib(${n}), ${tasks} tasks)`, 'tasks/s', v, 'bare piscina pool, same size', b, { min: 0.9 })], {
  samples: { bare: bareRates.map(Math.round), rtPool: rtRates.map(Math.round) },
  threads: availableParallelism(),
});
