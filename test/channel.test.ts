import { describe, expect, it } from 'vitest';
import * as api from '../src/index.js';
import { checkChannelDefinition, defineChannel } from '../src/channel.js';

const base = { type: 't', connect: () => {}, disconnect: () => {}, send: () => 1 };

describe('channel contract', { timeout: 10_000 }, () => {
  it('defineChannel returns the definition itself', () => {
    const def = defineChannel(base);
    expect(def).toBe(base);
  });

  it('the check accepts poll, listen or neither', () => {
    expect(checkChannelDefinition(base)).toEqual([]);
    expect(checkChannelDefinition({ ...base, poll: () => [] })).toEqual([]);
    expect(checkChannelDefinition({ ...base, listen: () => {} })).toEqual([]);
  });

  it('the check names each missing or mistyped member and refuses poll with listen', () => {
    const { send: _send, ...noSend } = base;
    expect(checkChannelDefinition(noSend).map((i) => i.path)).toEqual(['send']);
    expect(checkChannelDefinition({ ...base, poll: () => [], listen: () => {} }).map((i) => i.path)).toEqual(['listen']);
    expect(checkChannelDefinition({ ...base, probe: 'x' }).map((i) => i.path)).toEqual(['probe']);
    expect(checkChannelDefinition({ ...base, type: '' }).map((i) => i.path)).toEqual(['type']);
    expect(checkChannelDefinition({}).map((i) => i.path)).toEqual(['type', 'connect', 'disconnect', 'send']);
    expect(checkChannelDefinition(null)).toEqual([{ path: '(root)', message: 'expected an object, got null' }]);
    const hostile = Object.defineProperty({ ...base }, 'send', {
      get() {
        throw new Error('no');
      },
    });
    expect(checkChannelDefinition(hostile)).toEqual([
      { path: 'send', message: 'reading it threw: no' },
      { path: 'send', message: 'expected send to be a function' },
    ]);
  });

  it('the factory form: create and no callbacks; defineChannel returns it as it is', () => {
    const factory = defineChannel({ type: 'f', create: () => ({ connect: () => {}, disconnect: () => {}, send: () => 1 }) });
    expect(factory.create).toBeTypeOf('function');
    expect(checkChannelDefinition(factory)).toEqual([]);
    expect(checkChannelDefinition({ type: 'f', create: 1 }).map((i) => i.path)).toEqual(['create']);
    const both = checkChannelDefinition({ ...base, create: () => base });
    expect(both).toEqual([{ path: 'create', message: 'a channel has its callbacks or create, not both (found connect, disconnect, send)' }]);
  });
});

describe('public API', { timeout: 10_000 }, () => {
  it('exports the runtime, supervisor, worker host, channel contract and error classes', () => {
    for (const name of ['Runtime', 'Supervisor', 'WorkerHost', 'workerChild', 'defineChannel', 'checkChannelDefinition', 'ChannelError', 'NotFoundError', 'classifyError', 'CLASSIFICATION_TABLE']) {
      expect(api, name).toHaveProperty(name);
    }
    expect(new api.NotFoundError('instance', 'x').code).toBe('not_found');
  });

  it('keeps internals off the main entry (they are in threadvisor/testing)', () => {
    for (const name of ['TRANSITIONS', 'noticeSchema', 'OutboundQueue', 'scrubSecrets', 'backoffDelay', 'findNonJson']) {
      expect(api, name).not.toHaveProperty(name);
    }
  });
});
