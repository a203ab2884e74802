/**
 * Supervision showcase: four worker children under one supervisor. Each receives a different
 * fault (a crash, process.exit(3), a blocked event loop, a heap blow-up); the supervisor detects,
 * classifies and restarts each one while the others keep answering their heartbeats.
 *
 *   npm run demo -- [--duration <s>] [--json]
 */
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { Supervisor, workerChild, type WorkerHost } from '../src/index.js';
import type { api } from './showcase-worker.js';

type Api = typeof api;
const { values } = parseArgs({
  options: {
    duration: { type: 'string', default: '12' },
    json: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log('usage: npm run demo -- [--duration <seconds, default 12>] [--json]');
  process.exit(0);
}
const durationMs = Math.max(6, Number(values.duration)) * 1000;
const out = values.json ? process.stderr : process.stdout;
const say = (line: string) => out.write(`${line}\n`);

const faults = [
  { id: 'alpha', kind: 'crash', class: 'crash' },
  { id: 'bravo', kind: 'exit', class: 'exit' },
  { id: 'charlie', kind: 'hang', class: 'hang' },
  { id: 'delta', kind: 'oom', class: 'oom' },
] as const;
const heartbeat = { intervalMs: 200, maxMissed: 3 };
const logger = pino({ level: 'silent' });

const sup = await Supervisor.start({
  name: 'showcase',
  maxRestarts: 10,
  periodMs: 10_000,
  logger,
  children: faults.map((f) =>
    workerChild<Api>(f.id, {
      filename: new URL('./showcase-worker.js', import.meta.url),
      heartbeat,
      resourceLimits: { maxOldGenerationSizeMb: 32 },
    }),
  ),
});

const t0 = Date.now();
const injectedAt = new Map<string, number>();
const exits: Array<{ id: string; class: string; reason: string; detectMs: number }> = [];
const backAt = new Map<string, number>();
sup.on('child_exited', (e: { childId: string; class: string; reason: string; at: number }) => {
  if (e.class === 'shutdown') return;
  exits.push({ id: e.childId, class: e.class, reason: e.reason, detectMs: e.at - (injectedAt.get(e.childId) ?? e.at) });
});
sup.on('child_restarted', (e: { childId: string; at: number }) => backAt.set(e.childId, e.at));

const host = (id: string) => sup.child(id) as WorkerHost<Api> | undefined;
// Each child's fault, one after the other.
faults.forEach((f, i) => {
  setTimeout(() => {
    injectedAt.set(f.id, Date.now());
    say(`[${((Date.now() - t0) / 1000).toFixed(1)}s] injecting ${f.kind} into ${f.id}`);
    host(f.id)?.call('fault', f.kind).catch(() => undefined);
  }, 1000 + i * 1200).unref();
});

function table(): void {
  const rows = sup.whichChildren().map((c) => {
    const h = (c.child as WorkerHost<Api> | undefined)?.health();
    return [
      c.id.padEnd(8),
      c.status.padEnd(10),
      String(c.restarts).padStart(8),
      (c.lastExit ? `${c.lastExit.class}: ${c.lastExit.reason}` : '-').slice(0, 34).padEnd(34),
      (h?.lastPongAgeMs != null ? `${h.lastPongAgeMs} ms` : '-').padStart(8),
      (h?.elu != null ? h.elu.toFixed(2) : '-').padStart(5),
      (h?.heapUsed != null ? `${(h.heapUsed / 2 ** 20).toFixed(1)} MiB` : '-').padStart(9),
    ].join(' ');
  });
  const head = `${'child'.padEnd(8)} ${'status'.padEnd(10)} restarts ${'last exit'.padEnd(34)} beat-age   elu      heap`;
  say(`[${((Date.now() - t0) / 1000).toFixed(1)}s]\n${head}\n${rows.join('\n')}`);
}
const painter = setInterval(table, 1000);
await new Promise((r) => setTimeout(r, durationMs));
clearInterval(painter);
table();

const summary = {
  faults: faults.map((f) => {
    const exit = exits.find((e) => e.id === f.id);
    const back = backAt.get(f.id);
    return {
      child: f.id,
      injected: f.kind,
      detectedAs: exit?.class ?? null,
      detectMs: exit?.detectMs ?? null,
      faultToRestartedMs: back && injectedAt.get(f.id) ? back - injectedAt.get(f.id)! : null,
      ok: exit?.class === f.class && back !== undefined,
    };
  }),
  // A sibling is disturbed if it died without having been given a fault.
  siblingsDisturbed: exits.filter((e) => !injectedAt.has(e.id) || exits.filter((x) => x.id === e.id).length > 1).length,
  allRunning: sup.whichChildren().every((c) => c.status === 'running'),
};
await sup.stop();
say('');
for (const f of summary.faults)
  say(`${f.child.padEnd(8)} ${f.injected.padEnd(6)} -> detected as ${String(f.detectedAs).padEnd(6)} in ${f.detectMs} ms, running again ${f.faultToRestartedMs} ms after the fault ${f.ok ? 'OK' : 'FAILED'}`);
say(`siblings disturbed: ${summary.siblingsDisturbed}; all children running at the end: ${summary.allRunning}`);
if (values.json) console.log(JSON.stringify(summary));
process.exitCode = summary.faults.every((f) => f.ok) && summary.siblingsDisturbed === 0 && summary.allRunning ? 0 : 1;
