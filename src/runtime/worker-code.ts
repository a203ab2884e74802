/**
 * V8's code cache of the instance worker script (`workers/instance-worker-script.ts`), which every
 * instance worker's boot carries (`code`): a fresh thread then skips compiling the bundle.
 *
 * Made on the main thread at the first spawn, once per process: a code cache holds only for the
 * V8 version and flags that made it, which are the process's, so one made at build time would be
 * refused under other flags (`--expose-gc`, coverage).
 *
 * @packageDocumentation
 */
import { readFileSync } from 'node:fs';
import { Script } from 'node:vm';
import { builtinUrl } from './options.js';

let code: Uint8Array | null | undefined;

/** The code cache of the instance worker script, or undefined when it could not be made (the worker then compiles it). */
export function instanceWorkerCode(): Uint8Array | undefined {
  if (code === undefined) {
    try {
      const url = builtinUrl('instance-worker.bundle.cjs');
      code = new Script(readFileSync(url, 'utf8'), { filename: url.href }).createCachedData();
    } catch {
      code = null;
    }
  }
  return code ?? undefined;
}
