/**
 * What `collectMetrics` (threadvisor/prometheus) costs, in one run:
 *
 * - send throughput with metrics on vs off (target >= 0.95x): the closed loop of bench/send.ts
 *   (1000 sends outstanding per instance, the next sent as each settles) over 2 loopback
 *   instances of one runtime; rounds alternate off / on, and which goes first (`collectMetrics`
 *   on a fresh registry before an "on" round, `stop()` after it), so drift hits both alike;
 *   medians compared;
 * - `/metrics` scrape time (`registry.metrics()`, the text the ops endpoint serves) for 5,000
 *   loopback instances packed 500 per worker, with `perInstance: true` vs `false` (two registries
 *   on the same runtime, scraped alternately; each instance has sent one message first, so its
 *   counter series exist). Informational: no target.
 */
import { pino } from 'pino';
import { Registry } from 'prom-client';
import { Runtime } from '../src/index.js';
import { collectMetrics } from '../src/prometheus.js';
import { compare, quick, report, summary, type Comparison } from './lib.js';

const logger = pino({ level: 'silent' });
const N = quick ? 20_000 : 100_000;
const ROUNDS = quick ? 3 : 7;
const OUTSTANDING = 1000;
const SCRAPE_INSTANCES = quick ? 1000 : 5000;
const PER_WORKER = 500;
const SCRAPES = quick ? 3 : 7;

type Msg = { room: string; text: string; n: number };
const messages: Msg[] = Array.from({ length: N }, (_, n) => ({ room: 'r1', text: `hello ${n}`, n }));

const gc = (globalThis as { gc?: () => void }).gc;
const settle = async (): Promise<void> => {
  gc?.();
  await new Promise((r) => setTimeout(r, 20));
};

/** The closed loop: msgs/s. */
async function closed(rt: Runtime, ids: readonly string[], msgs: readonly Msg[]): Promise<number> {
  let failed = 0;
  const t0 = performance.now();
  await new Promise<void>((resolve) => {
    let settled = 0;
    let next = 0;
    const sendNext = (id: string): void => {
      const m = msgs[next++] as Msg;
      rt.send(id, m).then(
        () => done(id),
        () => {
          failed++;
          done(id);
        },
      );
    };
    const done = (id: string): void => {
      if (++settled === msgs.length) resolve();
      else if (next < msgs.length) sendNext(id);
    };
    for (let i = 0; i < OUTSTANDING * ids.length && next < msgs.length; i++) sendNext(ids[i % ids.length] as string);
  });
  if (failed > 0) throw new Error(`${failed} of ${msgs.length} sends failed`);
  return msgs.length / ((performance.now() - t0) / 1000);
}

async function throughput(): Promise<{ rows: Comparison[]; off: number[]; on: number[] }> {
  const rt = await Runtime.start({ logger });
  try {
    const ids = ['m0', 'm1'];
    for (const id of ids) await rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected' });
    await closed(rt, ids, messages.slice(0, Math.min(N, 20_000))); // warm-up
    const off: number[] = [];
    const on: number[] = [];
    const withMetrics = async (): Promise<void> => {
      await settle();
      const handle = collectMetrics(rt, { registry: new Registry() });
      try {
        on.push(await closed(rt, ids, messages));
      } finally {
        handle.stop();
      }
    };
    const without = async (): Promise<void> => {
      await settle();
      off.push(await closed(rt, ids, messages));
    };
    // Off then on in even rounds, on then off in odd ones: neither always runs second.
    for (let r = 0; r < ROUNDS; r++) {
      if (r % 2 === 0) {
        await without();
        await withMetrics();
      } else {
        await withMetrics();
        await without();
      }
    }
    const offM = Math.round(summary(off).median);
    const onM = Math.round(summary(on).median);
    console.log(`send msgs/s per round: off ${off.map(Math.round).join('/')} · on ${on.map(Math.round).join('/')}`);
    return { rows: [compare('send throughput, 2 instances, collectMetrics on', 'msgs/s', onM, 'off', offM, { min: 0.95 })], off, on };
  } finally {
    await rt.stop();
  }
}

async function scrape(): Promise<{ rows: Comparison[]; extra: Record<string, unknown> }> {
  const rt = await Runtime.start({ logger, placement: { instancesPerWorker: PER_WORKER } });
  try {
    const ids = Array.from({ length: SCRAPE_INSTANCES }, (_, i) => `s${i}`);
    const t0 = performance.now();
    for (let i = 0; i < ids.length; i += 250) {
      await Promise.all(ids.slice(i, i + 250).map((id) => rt.startInstance({ id, name: id, channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected', timeoutMs: 120_000 })));
    }
    const startMs = Math.round(performance.now() - t0);
    const per = new Registry();
    const agg = new Registry();
    const handles = [collectMetrics(rt, { registry: per }), collectMetrics(rt, { registry: agg, perInstance: false })];
    try {
      await Promise.all(ids.map((id, n) => rt.send(id, { room: 'r1', text: 'hello', n })));
      await per.metrics(); // warm-up
      await agg.metrics();
      const perMs: number[] = [];
      const aggMs: number[] = [];
      let perBytes = 0;
      let aggBytes = 0;
      for (let r = 0; r < SCRAPES; r++) {
        await settle();
        let t = performance.now();
        perBytes = (await per.metrics()).length;
        perMs.push(performance.now() - t);
        await settle();
        t = performance.now();
        aggBytes = (await agg.metrics()).length;
        aggMs.push(performance.now() - t);
      }
      const p = summary(perMs);
      const a = summary(aggMs);
      console.log(`${SCRAPE_INSTANCES} instances started in ${startMs} ms; scrape ms per round: perInstance ${perMs.map((x) => x.toFixed(1)).join('/')} · aggregated ${aggMs.map((x) => x.toFixed(1)).join('/')}`);
      console.log(`scrape size: perInstance ${perBytes} bytes · aggregated ${aggBytes} bytes`);
      return {
        rows: [compare(`/metrics scrape, ${SCRAPE_INSTANCES} instances, perInstance true`, 'ms', p.median, 'perInstance false', a.median)],
        extra: { scrape: { instances: SCRAPE_INSTANCES, perWorker: PER_WORKER, startMs, perInstance: { ...p, bytes: perBytes }, aggregated: { ...a, bytes: aggBytes } } },
      };
    } finally {
      for (const h of handles) h.stop();
    }
  } finally {
    await rt.stop();
  }
}

async function main(): Promise<void> {
  // `--only throughput` / `--only scrape`: one half alone (for profiling); no result file then.
  const at = process.argv.indexOf('--only');
  const only = at < 0 ? undefined : process.argv[at + 1];
  const t = only === 'scrape' ? undefined : await throughput();
  const s = only === 'throughput' ? undefined : await scrape();
  if (t && s) report('metrics', [...t.rows, ...s.rows], { throughput: { off: summary(t.off), on: summary(t.on) }, ...s.extra });
  else console.table([...(t?.rows ?? []), ...(s?.rows ?? [])]);
}

await main();
