import { describe, expect, it } from 'vitest';
import * as api from '../src/index.js';
import { channelDefinitionSchema, defineChannel } from '../src/channel.js';

const base = { type: 't', connect: () => {}, disconnect: () => {}, send: () => 1 };

describe('channel contract', { timeout: 10_000 }, () => {
  it('defineChannel returns the definition itself', () => {
    const def = defineChannel(base);
    expect(def).toBe(base);
  });

  it('the schema accepts poll, listen or neither', () => {
    expect(channelDefinitionSchema.safeParse(base).success).toBe(true);
    expect(channelDefinitionSchema.safeParse({ ...base, poll: () => [] }).success).toBe(true);
    expect(channelDefinitionSchema.safeParse({ ...base, listen: () => {} }).success).toBe(true);
  });

  it('the schema names a missing member and refuses poll with listen', () => {
    const { send: _send, ...noSend } = base;
    const r = channelDefinitionSchema.safeParse(noSend);
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => i.path.join('.'))).toEqual(['send']);
    const both = channelDefinitionSchema.safeParse({ ...base, poll: () => [], listen: () => {} });
    expect(both.error!.issues.map((i) => i.path.join('.'))).toEqual(['listen']);
    expect(channelDefinitionSchema.safeParse({ ...base, probe: 'x' }).success).toBe(false);
  });
});

describe('public API', { timeout: 10_000 }, () => {
  it('exports the runtime, supervisor, worker host, channel contract and error classes', () => {
    for (const name of ['Runtime', 'Supervisor', 'WorkerHost', 'workerChild', 'defineChannel', 'InstanceServer', 'ChannelError', 'NotFoundError', 'classifyError', 'CLASSIFICATION_TABLE', 'TRANSITIONS']) {
      expect(api, name).toHaveProperty(name);
    }
    expect(new api.NotFoundError('instance', 'x').code).toBe('not_found');
  });
});
