import diagnostics_channel from 'node:diagnostics_channel';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import {
  INSTANCE_STATUSES,
  TRANSITIONS,
  canTransition,
  isInstanceStatus,
  transitionKind,
  type InstanceStatus,
} from '../src/instance/state-machine.js';
import { InstanceServer } from '../src/instance/server.js';

/**
 * The documented table, written out independently of the implementation: a change to either one
 * must be deliberate and fail this test.
 */
const DOCUMENTED: Record<InstanceStatus, InstanceStatus[]> = {
  starting: ['connecting', 'error'],
  connecting: ['connected', 'disconnected', 'error', 'starting'],
  connected: ['disconnected', 'error', 'starting'],
  disconnected: ['connecting', 'connected', 'error', 'starting'],
  error: ['starting'],
};

const PAIRS: Array<[InstanceStatus, InstanceStatus]> = INSTANCE_STATUSES.flatMap((from) =>
  INSTANCE_STATUSES.map((to): [InstanceStatus, InstanceStatus] => [from, to]),
);

const expectedKind = (from: InstanceStatus, to: InstanceStatus): 'transition' | 'noop' | 'invalid' =>
  from === to ? 'noop' : DOCUMENTED[from].includes(to) ? 'transition' : 'invalid';

const silent = pino({ level: 'silent' });

function server(): InstanceServer {
  return new InstanceServer({ name: 'sm', channelType: 'test', credentials: { token: 'tok-secret-1' } }, { logger: silent });
}

/** Drives a fresh server into `status` through valid transitions only. */
function serverIn(status: InstanceStatus): InstanceServer {
  const s = server();
  switch (status) {
    case 'starting':
      break;
    case 'connecting':
      s.notifyConnecting();
      break;
    case 'connected':
      s.notifyConnecting();
      s.notifyConnected();
      break;
    case 'disconnected':
      s.notifyConnecting();
      s.notifyDisconnected('drop');
      break;
    case 'error':
      s.notifyError('fatal');
      break;
  }
  expect(s.currentStatus).toBe(status);
  expect(s.invalidTransitions).toBe(0);
  return s;
}

/** Requests `to` through the notify method that targets it. */
function request(s: InstanceServer, to: InstanceStatus): boolean {
  switch (to) {
    case 'starting':
      return s.notifyStarting('restart');
    case 'connecting':
      return s.notifyConnecting();
    case 'connected':
      return s.notifyConnected();
    case 'disconnected':
      return s.notifyDisconnected('lost tok-secret-1');
    case 'error':
      return s.notifyError('boom');
  }
}

const STATUS_EVENT: Record<InstanceStatus, string> = {
  starting: 'instance:started',
  connecting: 'instance:connecting',
  connected: 'instance:connected',
  disconnected: 'instance:disconnected',
  error: 'instance:error',
};

describe('instance status machine', { timeout: 10_000 }, () => {
  it('lists the five statuses in lifecycle order', () => {
    expect(INSTANCE_STATUSES).toEqual(['starting', 'connecting', 'connected', 'disconnected', 'error']);
    expect(isInstanceStatus('connected')).toBe(true);
    expect(isInstanceStatus('stopped')).toBe(false);
    expect(isInstanceStatus(3)).toBe(false);
  });

  it('exports exactly the documented table, frozen', () => {
    expect(Object.keys(TRANSITIONS).sort()).toEqual([...INSTANCE_STATUSES].sort());
    for (const from of INSTANCE_STATUSES) expect([...TRANSITIONS[from]].sort()).toEqual([...DOCUMENTED[from]].sort());
    expect(Object.isFrozen(TRANSITIONS)).toBe(true);
    for (const from of INSTANCE_STATUSES) expect(Object.isFrozen(TRANSITIONS[from])).toBe(true);
  });

  it('has no self-loops in the table and can always reach error and (except from starting) starting', () => {
    for (const from of INSTANCE_STATUSES) {
      expect(TRANSITIONS[from]).not.toContain(from);
      if (from !== 'error') expect(TRANSITIONS[from]).toContain('error');
      if (from !== 'starting') expect(TRANSITIONS[from]).toContain('starting');
    }
    // error is left only through an explicit fresh start
    expect(TRANSITIONS.error).toEqual(['starting']);
    // deliberate absences
    expect(canTransition('starting', 'connected')).toBe(false);
    expect(canTransition('starting', 'disconnected')).toBe(false);
    expect(canTransition('connected', 'connecting')).toBe(false);
  });

  describe.each(PAIRS)('%s → %s', (from, to) => {
    const kind = expectedKind(from, to);

    it(`transitionKind / canTransition say ${kind}`, () => {
      expect(transitionKind(from, to)).toBe(kind);
      expect(canTransition(from, to)).toBe(kind !== 'invalid');
    });

    it(`InstanceServer applies it as ${kind} (never throws)`, () => {
      const s = serverIn(from);
      const statusEvents: unknown[] = [];
      const invalid: Array<Record<string, unknown>> = [];
      s.on(STATUS_EVENT[to], (p) => statusEvents.push(p));
      s.on('instance:invalid_transition', (p: Record<string, unknown>) => invalid.push(p));
      const before = s.status();
      let result: boolean | undefined;
      expect(() => (result = request(s, to))).not.toThrow();

      if (kind === 'invalid') {
        expect(result).toBe(false);
        expect(s.status()).toEqual({ ...before, invalidTransitions: 1 });
        expect(s.healthSnapshot().invalidTransitions).toBe(1);
        expect(statusEvents).toEqual([]);
        expect(invalid).toHaveLength(1);
        expect(invalid[0]).toMatchObject({ from, to, instanceId: s.instanceId, channelType: 'test' });
        expect(typeof invalid[0]!.via).toBe('string');
        expect(typeof invalid[0]!.at).toBe('number');
        expect(JSON.stringify(invalid[0])).not.toContain('tok-secret-1');
      } else {
        expect(result).toBe(true);
        expect(s.currentStatus).toBe(to);
        expect(s.invalidTransitions).toBe(0);
        expect(invalid).toEqual([]);
        // status events fire on real transitions only; a fresh start always announces itself
        const expectedEvents = kind === 'transition' || to === 'starting' ? 1 : 0;
        expect(statusEvents).toHaveLength(expectedEvents);
      }
    });
  });

  it.each(INSTANCE_STATUSES)('a reconnect attempt (→ connecting) from %s follows the table', (from) => {
    const s = serverIn(from);
    const ok = s.notifyReconnectAttempt(1, 'ETIMEDOUT');
    const kind = expectedKind(from, 'connecting');
    expect(ok).toBe(kind !== 'invalid');
    expect(s.currentStatus).toBe(kind === 'invalid' ? from : 'connecting');
    expect(s.reconnectAttempt).toBe(kind === 'invalid' ? 0 : 1);
    expect(s.invalidTransitions).toBe(kind === 'invalid' ? 1 : 0);
  });

  it('publishes rejected transitions on threadvisor:instance:invalid_transition and counts each', () => {
    const s = serverIn('error');
    const seen: unknown[] = [];
    const onMsg = (m: unknown): void => {
      seen.push(m);
    };
    diagnostics_channel.subscribe('threadvisor:instance:invalid_transition', onMsg);
    try {
      s.notifyConnected();
      s.notifyConnecting();
      s.notifyDisconnected();
    } finally {
      diagnostics_channel.unsubscribe('threadvisor:instance:invalid_transition', onMsg);
    }
    expect(seen).toHaveLength(3);
    expect(seen.map((m) => (m as { to: string }).to)).toEqual(['connected', 'connecting', 'disconnected']);
    expect(seen.map((m) => (m as { via: string }).via)).toEqual(['notifyConnected', 'notifyConnecting', 'notifyDisconnected']);
    expect(s.status().invalidTransitions).toBe(3);
    expect(s.currentStatus).toBe('error');
  });

  it('logs a rejected transition as a warning', () => {
    const lines: string[] = [];
    const logger = pino({ level: 'warn' }, { write: (l: string) => void lines.push(l) });
    const s = new InstanceServer({ name: 'log', channelType: 'test' }, { logger });
    s.notifyConnected();
    const entries = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(entries).toHaveLength(1);
    expect(entries[0]).toMatchObject({ level: 40, from: 'starting', to: 'connected', via: 'notifyConnected' });
    expect(entries[0]!.instanceId).toBe(s.instanceId);
  });
});
