/**
 * What a channel module's imports cost an instance: its worker loads them at every start and
 * restart. Instance start → `connected` and crash → `connected` again (restart delay 0) for a
 * channel module importing `threadvisor/channel` (bench/channel-light.ts) and for the same module
 * importing the main entry `threadvisor` (bench/channel-heavy.ts), each beside a bare
 * `new Worker` spawn-to-first-message measured in the same loop (medians).
 *
 * Run: `npm run build && node --expose-gc dist/bench/channel-import.js [--quick]`.
 */
import { pino } from 'pino';
import { Runtime } from '../src/index.js';
import { compare, quick, report, summary } from './lib.js';
import { bareSpawn, connectedOn } from './spawn.js';

const runs = quick ? 5 : 15;
const modules = { light: new URL('./channel-light.js', import.meta.url), heavy: new URL('./channel-heavy.js', import.meta.url) } as const;
type Kind = keyof typeof modules;

const rt = await Runtime.start({
  logger: pino({ level: 'silent' }),
  restart: { maxRestarts: 1_000_000, periodMs: 1000, backoff: { initialDelayMs: 0, maxDelayMs: 0, jitter: 0 } },
});

async function start(kind: Kind, n: number): Promise<number> {
  const id = `${kind}-${n}`;
  const back = connectedOn(rt, id);
  const t0 = performance.now();
  await rt.startInstance({ id, name: id, channelType: kind, channel: modules[kind] });
  const dt = (await back) - t0;
  await rt.stopInstance(id);
  return dt;
}

async function crash(id: string): Promise<number> {
  const back = connectedOn(rt, id);
  const t0 = performance.now();
  void rt.send(id, { crash: true }).catch(() => undefined);
  return (await back) - t0;
}

const t = { bare: [] as number[], startLight: [] as number[], startHeavy: [] as number[], crashLight: [] as number[], crashHeavy: [] as number[] };
await start('light', -1); // warm-up: the main thread's import of each module
await start('heavy', -1);
for (let i = 0; i < runs; i++) {
  t.bare.push(await bareSpawn());
  t.startLight.push(await start('light', i));
  t.startHeavy.push(await start('heavy', i));
}
for (const kind of ['light', 'heavy'] as const) await rt.startInstance({ id: kind, name: kind, channelType: kind, channel: modules[kind] }, { waitFor: 'connected' });
for (let i = 0; i < runs; i++) {
  t.crashLight.push(await crash('light'));
  t.crashHeavy.push(await crash('heavy'));
}
await rt.stop();

const m = (xs: number[]): number => Math.round(summary(xs).median * 10) / 10;
const bareName = 'bare Worker spawn-to-first-message';
report(
  'channel-import',
  [
    compare('instance start → connected, channel module importing threadvisor/channel (median)', 'ms', m(t.startLight), bareName, m(t.bare)),
    compare('instance start → connected, the same module importing threadvisor (main entry)', 'ms', m(t.startHeavy), bareName, m(t.bare)),
    compare('instance crash → connected again, delay 0, importing threadvisor/channel', 'ms', m(t.crashLight), bareName, m(t.bare)),
    compare('instance crash → connected again, delay 0, importing threadvisor (main entry)', 'ms', m(t.crashHeavy), bareName, m(t.bare)),
  ],
  { runs },
);
