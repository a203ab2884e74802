/**
 * The code cache the runtime hands every instance worker (src/runtime/worker-code.ts): it fits
 * the script the workers run, lives in shared memory, a worker booted with it runs its instance,
 * and the cache of a running worker replaces the main thread's once. Run after `npm run build`.
 */
import { readFileSync } from 'node:fs';
import { Script } from 'node:vm';
import { afterEach, describe, expect, it } from 'vitest';
import { askWorkerCode, instanceWorkerCode, learnWorkerCode, makeWorkerCode } from '../src/runtime/worker-code.js';
import { harnesses, startInstanceWorker } from './helpers/instance.js';
import { waitFor } from './helpers/fixtures.js';

const script = new URL('../dist/workers/instance-worker.bundle.cjs', import.meta.url);

afterEach(async () => {
  for (const h of [...harnesses]) await h.dispose();
});

describe('the instance worker code cache', { timeout: 30_000 }, () => {
  it('fits the script the workers run, in shared memory', () => {
    const code = makeWorkerCode(script);
    expect(code).toBeInstanceOf(Uint8Array);
    expect((code as Uint8Array).buffer).toBeInstanceOf(SharedArrayBuffer);
    const compiled = new Script(readFileSync(script, 'utf8'), { filename: script.href, cachedData: code });
    expect(compiled.cachedDataRejected).toBe(false);
    // The script is one function expression, run by the loader with its require.
    expect(typeof compiled.runInThisContext()).toBe('function');
    expect(makeWorkerCode(new URL('./does-not-exist.cjs', script))).toBeUndefined();
  });

  it('is not made under NODE_V8_COVERAGE (code from a cache reports no branch coverage), and made once otherwise', () => {
    const saved = process.env.NODE_V8_COVERAGE;
    try {
      process.env.NODE_V8_COVERAGE = '/tmp/unused';
      expect(instanceWorkerCode()).toBeUndefined();
      delete process.env.NODE_V8_COVERAGE;
      const code = instanceWorkerCode();
      expect(code).toBeInstanceOf(Uint8Array);
      expect(instanceWorkerCode()).toBe(code);
    } finally {
      if (saved === undefined) delete process.env.NODE_V8_COVERAGE;
      else process.env.NODE_V8_COVERAGE = saved;
    }
  });

  it('a worker booted with it connects its instance and answers heartbeats', async () => {
    const h = await startInstanceWorker({ code: makeWorkerCode(script) });
    await waitFor(() => h.notices.some((n) => n.t === 'status' && n.status === 'connected'));
    await waitFor(() => h.host.health().lastPongAt !== null);
  });

  it("a running worker's cache (its boot's functions compiled) is larger, fits the script, and replaces the main thread's once", async () => {
    const h = await startInstanceWorker();
    await waitFor(() => h.notices.some((n) => n.t === 'status' && n.status === 'connected'));
    const fromWorker = await askWorkerCode(h.host);
    expect(fromWorker?.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect((fromWorker as Uint8Array).byteLength).toBeGreaterThan((makeWorkerCode(script) as Uint8Array).byteLength);
    expect(new Script(readFileSync(script, 'utf8'), { filename: script.href, cachedData: fromWorker }).cachedDataRejected).toBe(false);

    const saved = process.env.NODE_V8_COVERAGE;
    try {
      delete process.env.NODE_V8_COVERAGE;
      const before = instanceWorkerCode();
      // A worker that answers nothing (gone as it was asked) leaves it to the next one.
      let asked = 0;
      const gone = {
        call: () => {
          asked++;
          return Promise.reject(new Error('worker exited'));
        },
      } as unknown as typeof h.host;
      learnWorkerCode(gone);
      await waitFor(() => asked === 1);
      await new Promise((r) => setTimeout(r, 10));
      expect(instanceWorkerCode()).toBe(before);
      learnWorkerCode(h.host);
      await waitFor(() => instanceWorkerCode() !== before);
      const learned = instanceWorkerCode() as Uint8Array;
      expect(learned.byteLength).toBeGreaterThan((before as Uint8Array).byteLength);
      learnWorkerCode(h.host); // once per process: nothing more is asked
      expect(instanceWorkerCode()).toBe(learned);
      // A worker booted with it runs.
      const h2 = await startInstanceWorker({ id: 'i2', code: learned });
      await waitFor(() => h2.notices.some((n) => n.t === 'status' && n.status === 'connected'));
    } finally {
      if (saved === undefined) delete process.env.NODE_V8_COVERAGE;
      else process.env.NODE_V8_COVERAGE = saved;
    }
  });
});
