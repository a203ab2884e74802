/**
 * V8's code cache of the instance worker script (`workers/instance-worker-script.ts`), which every
 * instance worker's boot carries (`code`): a fresh thread then skips compiling the bundle.
 *
 * Made on the main thread at the first spawn, once per process: a code cache holds only for the
 * V8 version and flags that made it, which are the process's, so one made at build time would be
 * refused under other flags (`--expose-gc`, say). It lives in a `SharedArrayBuffer`: every worker
 * reads the same bytes, none gets a copy. It is made again when the script file changes on disk
 * (V8 checks a cache against its source's length only), and not at all under `NODE_V8_COVERAGE`:
 * code compiled from a cache reports no branch coverage.
 *
 * @packageDocumentation
 */
import { readFileSync, statSync } from 'node:fs';
import { Script } from 'node:vm';
import { builtinUrl } from './options.js';

/** The code cache of the script at `url`, in shared memory, or undefined when it cannot be made. */
export function makeWorkerCode(url: URL): Uint8Array | undefined {
  try {
    const made = new Script(readFileSync(url, 'utf8'), { filename: url.href }).createCachedData();
    const shared = new Uint8Array(new SharedArrayBuffer(made.byteLength));
    shared.set(made);
    return shared;
  } catch {
    return undefined;
  }
}

let memo: { stamp: string; code: Uint8Array | undefined } | undefined;

/** The code cache of the instance worker script, or undefined (the worker then compiles it). */
export function instanceWorkerCode(): Uint8Array | undefined {
  if (process.env.NODE_V8_COVERAGE !== undefined) return undefined;
  const url = builtinUrl('instance-worker.bundle.cjs');
  let stamp: string;
  try {
    const st = statSync(url);
    stamp = `${st.size}:${st.mtimeMs}`;
  } catch {
    return undefined;
  }
  if (memo?.stamp !== stamp) memo = { stamp, code: makeWorkerCode(url) };
  return memo.code;
}
