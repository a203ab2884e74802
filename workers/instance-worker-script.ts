/**
 * The thread entry the runtime spawns for instance workers. It runs the instance worker
 * (`instance-worker.ts` and everything it imports, bundled into one script by
 * `scripts/bundle-worker.mjs`) through `node:vm`, with the code cache the runtime compiled once
 * and passes in the boot (`code`): a fresh thread then skips compiling the bundle and the
 * functions its boot runs. Without a cache, or with one V8 refuses (another Node, other flags),
 * the script is compiled as usual. The worker's `codeCache` call answers the cache as this thread
 * compiled it (see `import-module.ts` for the hooks).
 *
 * The script gets this module's `require`: the node builtins it imports and the two modules it
 * shares with channel modules (the channel contract and the error classes: one class per error),
 * imported here as ES modules; and this module's `import()` for channel modules (see
 * `import-module.ts`).
 *
 * @packageDocumentation
 */
import * as asyncHooks from 'node:async_hooks';
import { readFileSync } from 'node:fs';
import * as utilTypes from 'node:util/types';
import { Script } from 'node:vm';
import * as workerThreads from 'node:worker_threads';
import * as channel from '../src/channel.js';
import * as errors from '../src/errors.js';

/** The bundle, next to this file. */
export const SCRIPT_URL = new URL('./instance-worker.bundle.cjs', import.meta.url);

/** What the bundle may `require` (a test checks that it requires nothing else). */
export const SCRIPT_REQUIRES: Readonly<Record<string, unknown>> = {
  'node:async_hooks': asyncHooks,
  'node:util/types': utilTypes,
  'node:worker_threads': workerThreads,
  '../src/channel.js': channel,
  '../src/errors.js': errors,
};

function scriptRequire(id: string): unknown {
  const m = SCRIPT_REQUIRES[id];
  if (m === undefined) throw new Error(`instance worker script: ${id} cannot be required`);
  return m;
}

// Only in a thread a WorkerHost started (a test or a tool may import this file to read the above).
const bootstrap = workerThreads.workerData as { threadvisor?: unknown; data?: { code?: unknown } } | undefined;
if (!workerThreads.isMainThread && typeof bootstrap?.threadvisor === 'object') {
  // The hook of import-module.ts (its key, not an import of it: one file less to load).
  (globalThis as Record<symbol, unknown>)[Symbol.for('threadvisor.importModule')] = (specifier: string) => import(specifier);
  const code = bootstrap.data?.code;
  const cachedData = code instanceof Uint8Array ? code : undefined;
  const script = new Script(readFileSync(SCRIPT_URL, 'utf8'), { filename: SCRIPT_URL.href, cachedData });
  // The code cache as this thread compiled it, for the worker's `codeCache` call.
  (globalThis as Record<symbol, unknown>)[Symbol.for('threadvisor.codeCache')] = () => script.createCachedData();
  const module = { exports: {} };
  (script.runInThisContext() as (req: typeof scriptRequire, m: typeof module, e: object) => void)(scriptRequire, module, module.exports);
}
