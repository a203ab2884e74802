/**
 * V8's code cache of the instance worker script (`workers/instance-worker-script.ts`), which every
 * instance worker's boot carries (`code`): a fresh thread then skips compiling the bundle.
 *
 * Made on the main thread at the first spawn, once per process: a code cache holds only for the
 * V8 version and flags that made it, which are the process's, so one made at build time would be
 * refused under other flags (`--expose-gc`, say). Once a worker has connected an instance, the
 * cache as that worker compiled the script replaces it ({@link learnWorkerCode}). It lives in a
 * `SharedArrayBuffer`: every worker reads the same bytes, none gets a copy. It is made again when
 * the script file changes on disk (V8 checks a cache against its source's length only), and not
 * at all under `NODE_V8_COVERAGE`: code compiled from a cache reports no branch coverage.
 *
 * @packageDocumentation
 */
import { readFileSync, statSync } from 'node:fs';
import { Script } from 'node:vm';
import type { InstanceWorkerApi } from '../wire/protocol.js';
import type { WorkerHost } from '../worker/host.js';
import { builtinUrl } from './options.js';

/** At most this many bytes of code cache are taken from a worker (the instance worker's is about 75 KB). */
export const MAX_WORKER_CODE_BYTES = 8 * 1024 * 1024;

/** `bytes` copied into shared memory. */
function shared(bytes: Uint8Array): Uint8Array {
  const copy = new Uint8Array(new SharedArrayBuffer(bytes.byteLength));
  copy.set(bytes);
  return copy;
}

/** The code cache of the script at `url` (compiled, not run), in shared memory, or undefined when it cannot be made. */
export function makeWorkerCode(url: URL): Uint8Array | undefined {
  try {
    return shared(new Script(readFileSync(url, 'utf8'), { filename: url.href }).createCachedData());
  } catch {
    return undefined;
  }
}

/**
 * Asks a running instance worker for the code cache as it compiled the script (`codeCache`): the
 * functions its boot and its instances' connects ran are in it, which a cache made on the main
 * thread (which compiles, never runs, the script) lacks. Measured: a worker's boot to
 * `connected` took about 5.9 ms with it against 7.8 ms with the main thread's. In shared memory;
 * undefined when the worker has none or answers something else.
 */
export async function askWorkerCode(host: WorkerHost<InstanceWorkerApi>): Promise<Uint8Array | undefined> {
  try {
    const code: unknown = await host.call('codeCache');
    return code instanceof Uint8Array && code.byteLength > 0 && code.byteLength <= MAX_WORKER_CODE_BYTES ? shared(code) : undefined;
  } catch {
    return undefined;
  }
}

/** Workers asked at most, per process and script file, for their code cache (one that dies as it is asked answers nothing). */
const MAX_ASKS = 3;

let memo: { stamp: string; code: Uint8Array | undefined; learned: boolean; asking: boolean; asked: number } | undefined;

/** The stamp of the script file on disk (its size and time), or undefined when it cannot be read. */
function stampOf(url: URL): string | undefined {
  try {
    const st = statSync(url);
    return `${st.size}:${st.mtimeMs}`;
  } catch {
    return undefined;
  }
}

/**
 * Once per process (per script file): after an instance worker connected its first instance, its
 * code cache (see {@link askWorkerCode}) replaces the main thread's for the workers booted next.
 * A worker that answers nothing (it died as it was asked) leaves it to the next one, up to
 * three. Nothing under `NODE_V8_COVERAGE`. Never throws.
 */
export function learnWorkerCode(host: WorkerHost<InstanceWorkerApi>): void {
  const m = memo;
  if (m === undefined || m.learned || m.asking || process.env.NODE_V8_COVERAGE !== undefined) return;
  m.asking = true;
  m.asked++;
  void askWorkerCode(host).then((code) => {
    m.asking = false;
    // No answer (the worker died as it was asked, say): the next worker that connects is asked.
    if (code === undefined) {
      m.learned = m.asked >= MAX_ASKS;
      return;
    }
    m.learned = true;
    // Kept only for the file it was compiled from.
    if (memo === m && stampOf(builtinUrl('instance-worker.bundle.cjs')) === m.stamp) m.code = code;
  });
}

/** The code cache of the instance worker script, or undefined (the worker then compiles it). */
export function instanceWorkerCode(): Uint8Array | undefined {
  if (process.env.NODE_V8_COVERAGE !== undefined) return undefined;
  const url = builtinUrl('instance-worker.bundle.cjs');
  const stamp = stampOf(url);
  if (stamp === undefined) return undefined;
  if (memo?.stamp !== stamp) memo = { stamp, code: makeWorkerCode(url), learned: false, asking: false, asked: 0 };
  return memo.code;
}
