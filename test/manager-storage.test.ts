/**
 * Checkpoint storage: the Storage contract for MemoryStorage and FileStorage, FileStorage's
 * layout, integrity checks and atomic writes, and InstanceManager over real files (corrupt
 * checkpoint fails closed, two managers on one directory, idle → hibernate → thaw).
 */
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { CorruptCheckpointError, RevisionConflictError } from '../src/errors.js';
import { FileStorage } from '../src/manager/file-storage.js';
import { InstanceManager } from '../src/manager/manager.js';
import { MemoryStorage, type CheckpointData, type Storage } from '../src/manager/storage.js';
import { findNonJson } from '../src/manager/json.js';
import type { InstanceManagerOptions } from '../src/manager/types.js';
import { makeCounter, silent, until } from './manager-fixtures.js';

vi.setConfig({ testTimeout: 15_000, hookTimeout: 15_000 });

let root: string;
let n = 0;
const freshDir = (): string => path.join(root, `d${++n}`);
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'threadvisor-manager-'));
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

const managers: InstanceManager[] = [];
async function start<C extends InstanceManagerOptions['agent']>(opts: InstanceManagerOptions<C>): Promise<InstanceManager<C>> {
  const m = await InstanceManager.start({ logger: silent, ...opts });
  managers.push(m as unknown as InstanceManager);
  return m;
}
afterEach(async () => {
  await Promise.all(managers.splice(0).map((m) => m.close({ discardUnsaved: true })));
});

const data = (state: unknown): CheckpointData => ({ version: 1, stateVersion: 1, agent: 'T', savedAt: 123, state: state as never });

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await fs.readdir(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) out.push(path.relative(dir, path.join(e.parentPath, e.name)));
  }
  return out.sort();
}

describe.each([
  ['MemoryStorage', () => new MemoryStorage() as Storage],
  ['FileStorage', () => new FileStorage({ dir: freshDir() }) as Storage],
  ['FileStorage (no fsync, 1 io)', () => new FileStorage({ dir: freshDir(), fsync: false, maxConcurrentIo: 1 }) as Storage],
])('Storage contract: %s', { timeout: 15_000 }, (_name, make) => {
  const k = { manager: 'm', key: 'k' };

  it('get of a missing checkpoint is undefined; put assigns revisions 1, 2, …; overwrite', async () => {
    const s = make();
    expect(await s.get(k)).toBeUndefined();
    const a = await s.put(k, data({ v: 1 }));
    expect(a).toEqual({ manager: 'm', key: 'k', revision: 1, version: 1, stateVersion: 1, agent: 'T', savedAt: 123, state: { v: 1 } });
    const b = await s.put(k, data({ v: 2 }));
    expect(b.revision).toBe(2);
    expect(await s.get(k)).toEqual(b);
  });

  it('expectedRevision: 0 means "must not exist"; a mismatch rejects with revision_conflict and changes nothing', async () => {
    const s = make();
    await s.put(k, data({ v: 1 }), { expectedRevision: 0 });
    const err = await s.put(k, data({ v: 2 }), { expectedRevision: 0 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RevisionConflictError);
    expect(err).toMatchObject({ code: 'revision_conflict', details: { expected: 0, actual: 1 } });
    await s.put(k, data({ v: 2 }), { expectedRevision: 1 });
    await expect(s.delete(k, { expectedRevision: 1 })).rejects.toMatchObject({ code: 'revision_conflict' });
    expect((await s.get(k))?.state).toEqual({ v: 2 });
    expect(await s.delete(k, { expectedRevision: 2 })).toBe(true);
  });

  it('delete is idempotent', async () => {
    const s = make();
    await s.put(k, data(1));
    expect(await s.delete(k)).toBe(true);
    expect(await s.delete(k)).toBe(false);
    expect(await s.get(k)).toBeUndefined();
  });

  it('keys are isolated by manager and by key', async () => {
    const s = make();
    await s.put({ manager: 'a', key: 'x' }, data('ax'));
    await s.put({ manager: 'b', key: 'x' }, data('bx'));
    await s.put({ manager: 'a', key: 'y' }, data('ay'));
    await s.put({ manager: 'a/x', key: '' }, data('odd'));
    expect((await s.get({ manager: 'a', key: 'x' }))?.state).toBe('ax');
    expect((await s.get({ manager: 'b', key: 'x' }))?.state).toBe('bx');
    expect((await s.get({ manager: 'a', key: 'y' }))?.state).toBe('ay');
    expect((await s.get({ manager: 'a/x', key: '' }))?.state).toBe('odd');
  });

  it('compare-and-set under concurrency has exactly one winner', async () => {
    const s = make();
    const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => s.put(k, data(i), { expectedRevision: 0 })));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(results.filter((r) => r.status === 'rejected').every((r) => (r.reason as { code: string }).code === 'revision_conflict')).toBe(true);
    expect((await s.get(k))?.revision).toBe(1);
  });

  it('a stored checkpoint is a copy: later changes to the state object do not reach it', async () => {
    const s = make();
    const state = { list: [1] };
    await s.put(k, data(state));
    state.list.push(2);
    const got = await s.get(k);
    expect(got?.state).toEqual({ list: [1] });
    (got?.state as { list: number[] }).list.push(3);
    expect((await s.get(k))?.state).toEqual({ list: [1] });
  });
});

describe('FileStorage', { timeout: 15_000 }, () => {
  it('rejects invalid options', () => {
    expect(() => new FileStorage({ dir: '' })).toThrow(expect.objectContaining({ code: 'invalid_config' }));
    expect(() => new FileStorage({ dir: 'x', maxConcurrentIo: 0 })).toThrow(expect.objectContaining({ code: 'invalid_config' }));
  });

  it('lays files out as <dir>/<slug>-<hash>/<sha256(key)>.ckpt, one header line + payload, no temp files left', async () => {
    const dir = freshDir();
    const s = new FileStorage({ dir });
    const key = { manager: 'chat rooms/eu', key: 'room:42' };
    await s.put(key, data({ hello: 'world' }));
    await s.put(key, data({ hello: 'again' }));
    const mdir = `chat_rooms_eu-${createHash('sha256').update('chat rooms/eu').digest('hex').slice(0, 16)}`;
    const file = `${createHash('sha256').update('room:42').digest('base64url')}.ckpt`;
    expect(await listFiles(dir)).toEqual([path.join(mdir, file)]);
    expect(s.fileOf(key)).toBe(path.join(dir, mdir, file));
    const text = await fs.readFile(s.fileOf(key), 'utf8');
    const [headerLine, payload] = [text.slice(0, text.indexOf('\n')), text.slice(text.indexOf('\n') + 1)];
    const header = JSON.parse(headerLine) as Record<string, unknown>;
    expect(header).toEqual({ format: 'threadvisor-checkpoint', version: 1, sha256: createHash('sha256').update(payload).digest('hex'), bytes: Buffer.byteLength(payload) });
    expect(JSON.parse(payload)).toMatchObject({ manager: 'chat rooms/eu', key: 'room:42', revision: 2, state: { hello: 'again' } });
  });

  it('[6.28] arbitrary keys round-trip and never escape the directory', async () => {
    const dir = freshDir();
    const s = new FileStorage({ dir });
    const keys = ['../../etc/passwd', '', 'C:\\x', 'ключ 🔑', 'a'.repeat(10_000), '.', 'nul\u0000byte', 'Case', 'case'];
    for (const [i, key] of keys.entries()) await s.put({ manager: '..', key }, data(i));
    for (const [i, key] of keys.entries()) expect((await s.get({ manager: '..', key }))?.state).toBe(i);
    const files = await listFiles(dir);
    expect(files).toHaveLength(keys.length);
    for (const f of files) expect(f.split(path.sep)).toHaveLength(2);
  });

  describe('integrity: a damaged checkpoint rejects with corrupt_checkpoint and stays byte-identical', () => {
    const key = { manager: 'm', key: 'k' };
    const cases: Array<[string, (bytes: Buffer, s: FileStorage) => Buffer | string | Promise<Buffer | string>, RegExp]> = [
      ['a flipped payload byte', (b) => Buffer.from(b.toString('utf8').replace('"count":7', '"count":8')), /checksum mismatch/],
      ['truncation', (b) => b.subarray(0, b.length - 5), /length/],
      ['no header line', () => 'garbage without newline', /no header line/],
      ['an unparsable header', (b) => `{oops\n${b.toString('utf8').split('\n')[1]}`, /unreadable header/],
      ['a foreign file', () => '{"format":"other"}\n{}', /not a threadvisor checkpoint/],
      ['a newer format version', (b) => b.toString('utf8').replace('"version":1,"sha256"', '"version":2,"sha256"'), /unsupported format version 2/],
      ['valid checksum over invalid JSON', () => withHeader('{not json'), /unreadable payload/],
      ['valid checksum over a bad shape', () => withHeader(JSON.stringify({ manager: 'm', key: 'k', state: 1 })), /bad shape/],
      ['valid checksum over a checkpoint of another key', async (_b, s) => fs.readFile(s.fileOf({ manager: 'm', key: 'other' })), /holds m\/other/],
      [
        'a checkpoint version newer than supported',
        () => withHeader(JSON.stringify({ manager: 'm', key: 'k', revision: 1, version: 9, stateVersion: 1, agent: 'T', savedAt: 1, state: 1 })),
        /unsupported checkpoint version 9/,
      ],
    ];
    it.each(cases)('%s', async (_name, damage, reason) => {
      const s = new FileStorage({ dir: freshDir() });
      await s.put(key, data({ count: 7 }));
      await s.put({ manager: 'm', key: 'other' }, data({ count: 1 }));
      const file = s.fileOf(key);
      await fs.writeFile(file, await damage(await fs.readFile(file), s));
      const before = await fs.readFile(file);
      const err = await s.get(key).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CorruptCheckpointError);
      expect((err as Error).message).toMatch(reason);
      // [6.38] a write over it rejects too, and leaves it as it was
      await expect(s.put(key, data({ count: 0 }))).rejects.toMatchObject({ code: 'corrupt_checkpoint' });
      expect((await fs.readFile(file)).equals(before)).toBe(true);
      // delete is the way out
      expect(await s.delete(key)).toBe(true);
      expect((await s.put(key, data({ count: 0 }))).revision).toBe(1);
    });
  });

  it('an unreadable checkpoint (here: a directory in its place) rejects with the I/O error', async () => {
    const s = new FileStorage({ dir: freshDir() });
    const key = { manager: 'm', key: 'k' };
    await fs.mkdir(s.fileOf(key), { recursive: true });
    await expect(s.get(key)).rejects.toMatchObject({ code: 'EISDIR' });
    await expect(s.delete(key)).rejects.toBeDefined();
  });

  it('a failed write removes its temp file and leaves the old checkpoint', async () => {
    const dir = freshDir();
    const s = new FileStorage({ dir });
    const key = { manager: 'm', key: 'k' };
    await s.put(key, data(1));
    const spy = vi.spyOn(fs, 'rename').mockRejectedValueOnce(Object.assign(new Error('EIO: simulated'), { code: 'EIO' }));
    try {
      await expect(s.put(key, data(2))).rejects.toMatchObject({ code: 'EIO' });
    } finally {
      spy.mockRestore();
    }
    expect(await listFiles(dir)).toEqual([path.relative(dir, s.fileOf(key))]);
    expect((await s.get(key))?.state).toBe(1);
  });

  it('recreates its directory when it is removed under it', async () => {
    const dir = freshDir();
    const s = new FileStorage({ dir });
    const key = { manager: 'm', key: 'k' };
    await s.put(key, data(1));
    await fs.rm(dir, { recursive: true });
    expect((await s.put(key, data(2))).revision).toBe(1);
    expect((await s.get(key))?.state).toBe(2);
  });

  it('bounds concurrent file operations and still completes them all', async () => {
    const s = new FileStorage({ dir: freshDir(), maxConcurrentIo: 2 });
    await Promise.all(Array.from({ length: 50 }, (_, i) => s.put({ manager: 'm', key: `k${i}` }, data(i))));
    const got = await Promise.all(Array.from({ length: 50 }, (_, i) => s.get({ manager: 'm', key: `k${i}` })));
    expect(got.map((c) => c?.state)).toEqual(Array.from({ length: 50 }, (_, i) => i));
  });
});

/** A file body with a correct header over `payload` (to test the checks after the checksum). */
function withHeader(payload: string): string {
  const header = { format: 'threadvisor-checkpoint', version: 1, sha256: createHash('sha256').update(payload).digest('hex'), bytes: Buffer.byteLength(payload) };
  return `${JSON.stringify(header)}\n${payload}`;
}

describe('InstanceManager over FileStorage', { timeout: 20_000 }, () => {
  it('[6.16, 6.37] a corrupt checkpoint makes get reject with thaw_failed; no agent; the file is untouched', async () => {
    const storage = new FileStorage({ dir: freshDir() });
    const { Counter, world } = makeCounter();
    const m = await start({ name: 'sessions', agent: Counter, storage });
    await (await m.get('u1')).call({ type: 'inc', by: 19 });
    await m.stop('u1');
    const file = storage.fileOf({ manager: 'sessions', key: 'u1' });
    const good = await fs.readFile(file);
    const bad = Buffer.from(good);
    bad[bad.length - 3] = (bad[bad.length - 3] as number) ^ 0xff; // flip one payload byte
    await fs.writeFile(file, bad);
    const constructed = world.constructed;
    const results = await Promise.allSettled([m.get('u1'), m.get('u1'), m.attach('u1')]);
    for (const r of results) {
      expect(r.status).toBe('rejected');
      expect((r as PromiseRejectedResult).reason).toMatchObject({ code: 'thaw_failed', cause: { code: 'corrupt_checkpoint' } });
    }
    expect(world.constructed).toBe(constructed);
    expect(m.stats()).toMatchObject({ count: 0, starting: 0 });
    expect(await m.lookup('u1')).toBeUndefined();
    expect((await fs.readFile(file)).equals(bad)).toBe(true);
    await m.close(); // nothing to write, nothing overwritten
    expect((await fs.readFile(file)).equals(bad)).toBe(true);
    // restoring the good bytes brings the key back
    await fs.writeFile(file, good);
    const m2 = await start({ name: 'sessions', agent: Counter, storage });
    expect(await (await m2.get('u1')).call({ type: 'get' })).toBe(19);
  });

  it('two managers on one FileStorage keep separate checkpoints of the same keys', async () => {
    const dir = freshDir();
    const storage = new FileStorage({ dir });
    const { Counter } = makeCounter();
    const a = await start({ name: 'alpha', agent: Counter, storage });
    const b = await start({ name: 'beta', agent: Counter, storage });
    const keys = ['k1', 'k2', 'k3'];
    await Promise.all(
      keys.flatMap((k, i) => [
        a.get(k).then((r) => r.call({ type: 'inc', by: i + 1 })),
        b.get(k).then((r) => r.call({ type: 'inc', by: 100 * (i + 1) })),
      ]),
    );
    await Promise.all([a.close(), b.close()]); // concurrent hibernation into one directory
    expect(await listFiles(dir)).toHaveLength(6);
    const a2 = await start({ name: 'alpha', agent: Counter, storage });
    const b2 = await start({ name: 'beta', agent: Counter, storage });
    for (const [i, k] of keys.entries()) {
      expect(await (await a2.get(k)).call({ type: 'get' })).toBe(i + 1);
      expect(await (await b2.get(k)).call({ type: 'get' })).toBe(100 * (i + 1));
    }
  });

  it('idle → hibernate to disk → get thaws identical state (real timers)', async () => {
    const storage = new FileStorage({ dir: freshDir() });
    const { Counter } = makeCounter();
    const m = await start({ name: 's', agent: Counter, storage, idleTimeoutMs: 30 });
    const hibernated: string[] = [];
    m.on('agent:hibernated', (e: { key: string }) => hibernated.push(e.key));
    const ref = await m.get('room/1');
    const state = { deep: { list: [1, 2, { x: 'y' }], flag: false, nothing: null }, text: 'line\nbreak "quoted"' };
    await ref.call({ type: 'set', key: 'payload', value: state });
    await until(() => hibernated.length === 1, 5000, 'idle hibernation');
    expect(ref.status).toBe('stopped');
    const cp = await storage.get({ manager: 's', key: 'room/1' });
    expect(cp?.state).toEqual({ count: 0, payload: state });
    const again = await m.get('room/1');
    expect((await m.checkpoint('room/1'))?.state).toEqual({ count: 0, payload: state });
    expect(again.incarnation).not.toBe(ref.incarnation);
  });
});

describe('findNonJson', () => {
  it('accepts plain JSON and names the first bad path otherwise', () => {
    expect(findNonJson({ a: [1, 'x', null, { b: true }], c: undefined })).toBeUndefined();
    expect(findNonJson(Object.create(null))).toBeUndefined();
    const cyc: Record<string, unknown> = {};
    cyc.self = cyc;
    const shared = { s: 1 };
    expect(findNonJson({ x: shared, y: shared })).toBeUndefined(); // shared, not circular
    const cases: Array<[unknown, string]> = [
      [undefined, '$: undefined is not JSON'],
      [{ a: NaN }, '$.a: non-finite number NaN'],
      [{ a: [1, undefined] }, '$.a[1]: undefined array element'],
      // eslint-disable-next-line no-sparse-arrays
      [[1, , 3], '$[1]: undefined array element'],
      [{ m: new Map() }, '$.m: Map is not a plain object'],
      [{ f: () => 1 }, '$.f: function is not JSON'],
      [{ b: 1n }, '$.b: bigint is not JSON'],
      [cyc, '$.self: circular reference'],
      [[[cyc]], '$[0][0].self: circular reference'],
    ];
    for (const [v, msg] of cases) {
      const bad = findNonJson(v);
      expect(`${bad?.path}: ${bad?.problem}`).toBe(msg);
    }
  });
});
