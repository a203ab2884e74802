/**
 * The heap stays bounded across crash → restart cycles of an instance: nothing of a dead worker
 * (its WorkerHost, ports, comlink proxies, loggers) or of a restart outlives the next one.
 *
 * Real workers, real crashes: the cycles run in a child `node --expose-gc` (a test runner's
 * worker cannot force a GC), from `dist/` (run `npm run build` first), which reports `heapUsed`
 * after a forced GC at a few cycles. Before the fix every cycle kept ~16 KB (a dead host stayed
 * reachable from comlink's FinalizationRegistry), ~2.6 MB over the measured cycles; a bounded
 * heap moves by well under 1 MB. The count of cycles is what two shared cores run in about a
 * minute: a loopback restart costs ~200 ms of CPU there (a bare worker thread's start ~80 ms),
 * ~300-500 ms of wall time under load, so 1,000 of them do not fit in a test file's budget.
 *
 * The first test checks the cause directly, in a few hundred milliseconds: a crashed
 * {@link WorkerHost} (with a call in flight when it died) is garbage once nothing holds it.
 */
import { execFile } from 'node:child_process';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { WorkerHost } from '../src/worker/host.js';
import type { BehaveApi } from './fixtures/behave.js';
import { fixtureUrl } from './helpers/fixtures.js';

// A forced GC inside the test runner's worker, for the WeakRef checks.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;
const silent = pino({ level: 'silent' });

/** Cycles before the first measurement (code warm-up, lazily built caches). */
const WARM = 40;
/** Measured cycles after the warm-up. */
const MEASURED = 160;
const CYCLES = WARM + MEASURED;
/** Allowed growth of the heap over the measured cycles (the leak made ~2.6 MB). */
const BOUND = 1024 * 1024;

interface Report {
  cycles: number;
  restartCount: number;
  marks: Record<string, number>;
}

function runCycles(cycles: number, marks: number[]): Promise<Report> {
  const script = fixtureUrl('restart-heap').pathname;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--expose-gc', script, String(cycles), ...marks.map(String)], { timeout: 110_000, maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`${err.message}\n${stderr}`));
      const line = stdout.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as Report);
      } catch {
        reject(new Error(`no report from the cycle script: ${stdout}\n${stderr}`));
      }
    });
  });
}

/** A host whose worker crashed (with a call in flight): only a WeakRef to it leaves this function. */
async function crashedHost(): Promise<WeakRef<WorkerHost<BehaveApi>>> {
  const host = await WorkerHost.start<BehaveApi>({ filename: fixtureUrl('behave'), workerData: { mode: 'serve' }, heartbeat: false, logger: silent });
  const inFlight = host.call('slow', 60_000).catch(() => undefined);
  await host.call('crash', 'restart-heap: crash');
  const exit = await host.exited;
  await inFlight;
  expect(exit.class).toBe('crash');
  return new WeakRef(host);
}

describe('restart heap', { timeout: 120_000 }, () => {
  it('lets a crashed worker host be collected', async () => {
    const refs: Array<WeakRef<WorkerHost<BehaveApi>>> = [];
    for (let i = 0; i < 3; i++) refs.push(await crashedHost());
    // A WeakRef keeps its target alive until the end of the job that created it.
    await nextTurn();
    gc();
    gc();
    expect(refs.filter((r) => r.deref() !== undefined)).toHaveLength(0);
  });

  it(`keeps the heap bounded over ${MEASURED} crash → connected cycles of a loopback instance`, async () => {
    const report = await runCycles(CYCLES, [WARM, WARM + MEASURED / 2, CYCLES]);
    expect(report.cycles).toBe(CYCLES);
    expect(report.restartCount).toBe(CYCLES);
    const at = (cycle: number): number => report.marks[String(cycle)] as number;
    expect(at(CYCLES) - at(WARM), `heapUsed after GC by cycle: ${JSON.stringify(report.marks)}`).toBeLessThan(BOUND);
  });
});
