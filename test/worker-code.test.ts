/**
 * The code cache the runtime hands every instance worker (src/runtime/worker-code.ts): made once,
 * and accepted by V8 for the script the workers run. Run after `npm run build`.
 */
import { readFileSync } from 'node:fs';
import { Script } from 'node:vm';
import { describe, expect, it } from 'vitest';
import { instanceWorkerCode } from '../src/runtime/worker-code.js';

const script = new URL('../dist/workers/instance-worker.bundle.cjs', import.meta.url);

describe('the instance worker code cache', { timeout: 30_000 }, () => {
  it('is made once per process and fits the script the workers run', () => {
    const code = instanceWorkerCode();
    expect(code).toBeInstanceOf(Uint8Array);
    expect(instanceWorkerCode()).toBe(code);
    const compiled = new Script(readFileSync(script, 'utf8'), { filename: script.href, cachedData: code });
    expect(compiled.cachedDataRejected).toBe(false);
    // The script is one function expression, run by the loader with its require.
    expect(typeof compiled.runInThisContext()).toBe('function');
  });
});
