/**
 * The event table (src/events.ts) is complete and true: every event the source publishes is in
 * `EVENTS` and every name there is published somewhere; diagnostics channel names come from it;
 * and the payloads a real runtime emits (a loopback instance started, sent to, restarted and
 * stopped) have exactly the fields their payload map declares, on the emitter and on the channel.
 */
import diagnostics_channel from 'node:diagnostics_channel';
import type { EventEmitter } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { EVENTS, INSTANCE_EVENTS, channelName, type EventEmitterKind, type RuntimeEvents } from '../src/events.js';
import { InstanceManager } from '../src/manager/manager.js';
import { Runtime } from '../src/runtime/runtime.js';
import { Supervisor } from '../src/supervisor/supervisor.js';
import type { WorkerHost } from '../src/worker/host.js';
import { declaredShape } from './helpers/events-table.js';

const src = fileURLToPath(new URL('../src', import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
    d.isDirectory() ? sources(join(dir, d.name)) : d.name.endsWith('.ts') && d.name !== 'events.ts' ? [join(dir, d.name)] : [],
  );
}

/** Every channel name of the table. */
function allChannels(): Set<string> {
  const out = new Set<string>();
  for (const [emitter, names] of Object.entries(EVENTS)) for (const n of names) out.add(channelName(emitter as EventEmitterKind, n));
  return out;
}

/** Checks one payload against its declared fields. */
function expectShape(emitter: EventEmitterKind, event: string, payload: object): void {
  const shape = declaredShape(emitter, event);
  const keys = Object.keys(payload);
  for (const k of shape.required) expect(keys, `${event} has ${k}`).toContain(k);
  if (!shape.meta) for (const k of keys) expect([...shape.required, ...shape.optional], `${event} declares ${k}`).toContain(k);
  expect(typeof (payload as { at?: unknown }).at).toBe('number');
}

describe('the event table', { timeout: 60_000 }, () => {
  it('lists every event the source publishes, and publishes every event it lists', () => {
    const text = sources(src).map((f) => readFileSync(f, 'utf8')).join('\n');
    const published = new Set<string>();
    for (const m of text.matchAll(/publish(?:Unchecked)?\(\s*[^,]+,\s*['`]([a-z_]+:[a-z_]+)['`]/g)) published.add(`threadvisor:${m[1]}`);
    const channels = allChannels();
    expect(published.size).toBeGreaterThan(20);
    for (const c of published) expect(channels, c).toContain(c);
    // The instance's and the manager's own helpers publish `instance:${event}` / `agent:${event}`:
    // each listed name appears as a string in the source.
    for (const names of Object.values(EVENTS)) {
      for (const name of names) expect(text, name).toMatch(new RegExp(`['\`](${name}|${name.split(':').pop()})['\`]`));
    }
  });

  it('names the channels threadvisor:<scope>:<event>, and INSTANCE_EVENTS has pressure', () => {
    expect(channelName('runtime', 'instance:connected')).toBe('threadvisor:instance:connected');
    expect(channelName('supervisor', 'child_exited')).toBe('threadvisor:supervisor:child_exited');
    expect(channelName('worker', 'heartbeat')).toBe('threadvisor:worker:heartbeat');
    expect(channelName('manager', 'agent:started')).toBe('threadvisor:agent:started');
    expect(INSTANCE_EVENTS).toContain('pressure');
    expect(EVENTS.runtime).toEqual(expect.arrayContaining(INSTANCE_EVENTS.map((e) => `instance:${e}`)));
    expect(EVENTS.instance).not.toContain('instance:pressure');
    for (const c of allChannels()) expect(c).toMatch(/^threadvisor:[a-z]+:[a-z_]+$/);
  });

  it('types on/once/off by the payload maps; the emitters stay EventEmitters', () => {
    // Compile-time checks (tsc runs over test/): the calls below are never made.
    const typed = (rt: Runtime, sup: Supervisor, host: WorkerHost, m: InstanceManager): EventEmitter[] => {
      rt.on('instance:connected', (p) => p.connectedAt.toFixed());
      rt.once('delivery:gave_up', (p) => p.reason.toUpperCase());
      sup.on('child_exited', (p) => p.class.length);
      host.off('heartbeat', (p) => p.rttMs);
      m.on('agent:crashed', (p) => p.quarantined);
      m.on('cluster:acquired', (p) => p.fencingToken);
      rt.on('newListener', (event) => String(event)); // EventEmitter's own events still type-check
      // @ts-expect-error not an event of the runtime
      rt.on('instance:conected', () => undefined);
      // @ts-expect-error `instance:stopped` has no `connectedAt`
      rt.on('instance:stopped', (p) => p.connectedAt);
      // @ts-expect-error a supervisor event is not a worker host's
      host.on('child_exited', () => undefined);
      return [rt, sup, host, m];
    };
    expect(typeof typed).toBe('function');
    expect(Supervisor.prototype.on).toBe(InstanceManager.prototype.on); // EventEmitter's own, unwrapped
    expect(Runtime.prototype.on).toBe(Supervisor.prototype.on);
  });

  it('a runtime emits the declared payloads, the same object on the emitter and on the channel', async () => {
    const names = [
      'instance:started',
      'instance:connecting',
      'instance:connected',
      'instance:restart',
      'instance:stopped',
      'delivery:queued',
      'delivery:attempt',
      'delivery:delivered',
    ] as const satisfies ReadonlyArray<keyof RuntimeEvents>;
    const emitted: Array<[string, object]> = [];
    const published: Array<[string, unknown]> = [];
    const subs = names.map((n) => {
      const fn = (m: unknown): void => void published.push([n, m]);
      diagnostics_channel.subscribe(channelName('runtime', n), fn);
      return [channelName('runtime', n), fn] as const;
    });
    const rt = await Runtime.start({ logger: pino({ level: 'silent' }) });
    try {
      for (const n of names) rt.on(n, (p) => emitted.push([n, p]));
      await rt.startInstance({ id: 'ev', name: 'ev', channelType: 'loopback', channel: 'loopback' }, { waitFor: 'connected', timeoutMs: 10_000 });
      await rt.send('ev', { text: 'hello' }, { idempotencyKey: 'k1' });
      await rt.restartInstance('ev');
      await rt.whenStatus('ev', 'connected', { timeoutMs: 10_000 });
      await rt.stopInstance('ev');
    } finally {
      await rt.stop();
      for (const [c, fn] of subs) diagnostics_channel.unsubscribe(c, fn);
    }
    const seen = new Set(emitted.map(([n]) => n));
    for (const n of names) expect(seen, n).toContain(n);
    for (const [n, p] of emitted) expectShape('runtime', n, p);
    const mine = published.filter(([, m]) => (m as { instanceId?: unknown }).instanceId === 'ev');
    expect(mine.length).toBe(emitted.length);
    mine.forEach(([n, m], i) => {
      expect(n).toBe(emitted[i]![0]);
      expect(m).toBe(emitted[i]![1]);
    });
    const started = emitted.filter(([n]) => n === 'instance:started').map(([, p]) => p as RuntimeEvents['instance:started']);
    expect(started.map((p) => p.fresh)).toEqual([false, true]);
    const queued = emitted.find(([n]) => n === 'delivery:queued')![1] as RuntimeEvents['delivery:queued'];
    expect(queued).toMatchObject({ instanceId: 'ev', messageId: 'k1', attempt: 0 });
  });
});
