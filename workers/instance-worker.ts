/**
 * The instance worker's thread entry (the worker host): it reads the boot, loads the channel
 * module (once per module, see `./instance/channel-module.ts`), creates one
 * {@link InstanceContext} per hosted instance and routes the data port's messages to them by
 * instance number (`i`); the heartbeat and control ports are `serve()`'s. It hosts one instance
 * (a dedicated worker) or up to `placement.instancesPerWorker` (a shared one); a standby worker
 * boots with none (a {@link StandbyBoot}) and hosts them all by `host` calls once it is taken.
 * The runtime spawns this file bundled with its imports (`scripts/bundle-worker.mjs`). The pieces of an instance are in `./instance/`: the
 * context (`context.ts`), its connect loop (`connect.ts`), inbound loop and credit
 * (`inbound.ts`), probes (`probe.ts`) and send drain (`send-drain.ts`).
 *
 * The runtime spawns it through a `WorkerHost` with an {@link InstanceBoot} as `workerData`,
 * calls `start` (the one control-plane call), posts send batches and inbound acks on the boot's
 * `data` port, and stops it through the host's graceful shutdown. Everything else flows back as
 * {@link Notice}s and acks on that port.
 *
 * The worker loads only the wire layer (`src/wire/`), the channel contract and the error classes
 * of the project, and of packages only comlink (a test walks its import graph).
 *
 * ## `start()`
 * Before ready, the worker imports the channel module (`boot.channel`, a URL), takes its
 * **default export** (required) and validates it with `checkChannelDefinition`. A load error, a
 * missing default export, a missing or mistyped member, or a `type` other than the instance's
 * `channelType` makes `start()` answer `{ ok: false, code: 'channel_invalid', reason }` (the
 * reason names the member or the load error), and the worker idles until the runtime stops it.
 * Otherwise `start()` answers `{ ok: true }` and the connect loop starts on the next turn. A second
 * call returns the first call's promise. The instance of a boot does not wait for the call: it is
 * started right after ready (its notices wait on the data port until the runtime listens, and the
 * runtime's `start` gets the same answer), which spares a round trip to the main thread on every
 * spawn of a worker, after a crash above all.
 *
 * ## Notice sequences
 * Attempt 0 is the initial connect; reconnect attempts are numbered 1..`reconnect.maxAttempts`.
 *
 * - **Connect succeeds:** `status connecting` → `status connected` (`meta`: what `connect`
 *   returned, if a plain object) → the first `probe` right away (when the channel has `probe` and
 *   `probe.intervalMs` > 0) → `inbound` batches.
 * - **A connect attempt fails recoverable** (also a connect timeout, and a `degraded` connect error,
 *   which is retried like a recoverable one but reported with its own class):
 *   `reconnect failed {attempt, reason, class}` → `status disconnected {reason}` →
 *   `reconnect scheduled {attempt: n+1, delayMs}` → (the delay) → `reconnect attempt {attempt: n+1}`
 *   → … → on success `status connected` with `meta` extended by
 *   `{ attempts, reason (what broke the connection first), elapsedMs }`.
 * - **The connection is lost** (recoverable poll error, a failed probe, `listen` returned or threw):
 *   [`probe failed`] → `status disconnected {reason}` → `disconnect` (best effort) →
 *   `reconnect scheduled {attempt: 1}` → `reconnect attempt {attempt: 1}` → … as above.
 * - **Exhaustion** (attempt `maxAttempts` failed): `reconnect failed {attempt: max}` →
 *   `status disconnected` → `reconnect exhausted {attempt: max, reason, class: 'recoverable'}`;
 *   nothing more is attempted. The thread stays up: the main thread decides what follows (the runtime starts the instance
 *   over in a fresh worker, a restart counted by its supervisor).
 * - **Fatal** (a fatal connect error): `reconnect failed {attempt, class: 'fatal'}` →
 *   `fatal {reason, code: 'fatal_connect'}`; fatal poll / probe / listen errors post
 *   `fatal {code: 'fatal_poll' | 'fatal_probe' | 'fatal_listen'}` (a failed probe posts its `probe`
 *   notice first). No further attempts; the connection is closed (best effort) and the worker idles
 *   until the runtime stops it. It does not exit by itself.
 * - **Degraded** poll error: `failure {op: 'poll', class: 'degraded'}`, the loop goes on after
 *   `pollIdleMs`. A degraded probe (returned or thrown): only its `probe` notice.
 * - **send:** each message of a send batch is acknowledged: `acks` with the receipt (runs of
 *   successes), or with `{ class, code, reason }` (see `src/wire/errors.ts`), e.g.
 *   `{ class: 'recoverable', code: 'timeout', reason: 'send timed out after 200 ms' }`. A send
 *   error never ends the instance by itself, whatever its class: a fatal send error (a 403 for one
 *   recipient, an invalid payload) condemns that message, not the connection; revoked credentials
 *   surface through the next poll or probe. Sends wait in the worker until the channel is
 *   connected (see `./instance/send-drain.ts`).
 *
 * After a graceful stop has begun no status or reconnect notice is posted any more.
 *
 * ## Timeouts and signals
 * Every callback runs under its budget from `boot.timeouts` (`listen` has none: it runs until its
 * signal aborts). A budget that runs out rejects with `TimeoutError` (code `timeout`, recoverable)
 * and aborts the callback's `ctx.signal`, which also aborts when its connection ends (loss,
 * reconnect, fatal error, stop). `disconnect` gets a signal of its own budget only.
 *
 * ## Data work
 * Inbound batches are posted from the poll loop (the next poll runs on the next `setImmediate`
 * turn), or, for `listen` channels, `ctx.emit` queues messages and one `inbound` notice per
 * event-loop turn carries them (at most {@link INBOUND_CHUNK} per notice). No data work runs in a
 * message handler, so heartbeats always get through. A batch that cannot be cloned is sent with
 * functions and symbols dropped (and a `warn` log notice).
 *
 * Inbound batches are flow-controlled: the runtime acknowledges each batch once `onMessage`
 * handled it (`inbound_ack`), and the worker keeps at most `inboundWindow` batches unacknowledged,
 * so a channel that produces faster than the main thread consumes waits in the worker instead
 * of filling the main thread's port queue. Sends come in batches within the runtime's credit
 * window (`sendWindow`) and go back as batched acks (see "batched sends" below).
 *
 * @packageDocumentation
 */
import { MessagePort } from 'node:worker_threads';
import type { InstanceBoot, InstanceWorkerApi, Notice, StandbyBoot } from '../src/wire/protocol.js';
import { ChannelModules } from './instance/channel-module.js';
import { InstanceContext } from './instance/context.js';
import { installFaultHandlers } from './instance/fault.js';
import { scriptCodeCache } from './import-module.js';
import { describe } from './instance/util.js';
import { serve, workerData } from './runtime.js';

/** What the worker was booted with: its data port, the instance it starts with (none on standby), modules to import before ready. */
interface Boot {
  port: MessagePort;
  first: Omit<InstanceBoot, 'data'> | undefined;
  preload: string[];
}

function readBoot(raw: unknown): Boot {
  const b = raw as (Partial<InstanceBoot> & Partial<Omit<StandbyBoot, 'data'>>) | undefined;
  const problems: string[] = [];
  if (typeof b !== 'object' || b === null) throw new TypeError('instance worker: workerData is not an InstanceBoot');
  if (!(b.data instanceof MessagePort)) problems.push('data (a MessagePort)');
  if (b.standby === true) {
    if (!Array.isArray(b.preload) || !b.preload.every((u) => typeof u === 'string')) problems.push('preload (URLs)');
  } else {
    if (typeof b.iid !== 'number') problems.push('iid (a number)');
    if (typeof b.channel !== 'string') problems.push('channel (a URL)');
    if (typeof b.instance !== 'object' || b.instance === null) problems.push('instance');
    if (typeof b.reconnect !== 'object' || b.reconnect === null) problems.push('reconnect');
    if (typeof b.timeouts !== 'object' || b.timeouts === null) problems.push('timeouts');
    if (typeof b.probe !== 'object' || b.probe === null) problems.push('probe');
  }
  if (problems.length > 0) throw new TypeError(`instance worker: workerData lacks ${problems.join(', ')}`);
  if (b.standby === true) return { port: b.data as MessagePort, first: undefined, preload: b.preload as string[] };
  // The code cache was the loader's (instance-worker-script.ts); no context keeps it.
  const { data, code: _code, ...first } = b as InstanceBoot;
  return { port: data, first, preload: [] };
}

// A malformed boot is a bug of the runtime: throwing here fails the worker's start.
const { port, first, preload } = readBoot(workerData);
const modules = new ChannelModules();
/** The hosted instances, by instance number. */
const contexts = new Map<number, InstanceContext>();
/** Numbers of instances being hosted (their channel module loading). */
const arriving = new Set<number>();

const postToMain = (message: Notice): void => port.postMessage(message);

let attributing = false;
/**
 * A shared worker restarts the one instance an escaped error belongs to; an error that belongs to
 * none ends the worker. A dedicated worker installs nothing: any escaped error ends it. Installed
 * by the first shared boot (the spawn's, or a standby worker's first `host`).
 */
function attributeFaults(): void {
  if (attributing) return;
  attributing = true;
  installFaultHandlers((err, origin, iid) => {
    const ctx = iid === undefined ? undefined : contexts.get(iid);
    if (ctx === undefined) return false;
    ctx.fault(`${origin === 'uncaught' ? 'uncaught exception' : 'unhandled rejection'}: ${describe(err)}`, origin);
    return true;
  });
}

/** A channel module whose import took at least this long in a worker gets a warning (once per worker). */
const SLOW_IMPORT_MS = 100;
/** Channel modules this worker already warned about. */
const slowWarned = new Set<string>();

/** Creates the context of an instance; a channel that cannot be used is answered by its `start()`. */
async function host(boot: Omit<InstanceBoot, 'data'>): Promise<InstanceContext> {
  if (boot.shared === true) attributeFaults();
  const loaded = await modules.load(boot.channel, boot.instance.channelType);
  const ctx = new InstanceContext(boot, loaded.ok ? loaded.channel : loaded.reason, postToMain);
  contexts.set(ctx.iid, ctx);
  if (loaded.ok && loaded.importMs >= SLOW_IMPORT_MS && !slowWarned.has(boot.channel)) {
    // Every worker that starts or restarts imports its channel modules again: say what it costs.
    slowWarned.add(boot.channel);
    ctx.log(
      'warn',
      `channel module took ${Math.round(loaded.importMs)} ms to import in its worker, and every worker start and restart pays it: import threadvisor/channel (not threadvisor) in a channel module, keep what only the main thread needs out of it, or keep standby workers`,
      { importMs: Math.round(loaded.importMs) },
    );
  }
  return ctx;
}

port.on('message', (message: unknown) => {
  const i = (message as { i?: unknown } | null)?.i;
  if (typeof i === 'number') contexts.get(i)?.receive(message); // a message for no hosted instance is ignored
});

// Load zod and the channel module before reporting ready: evaluating modules blocks this
// thread's event loop (heartbeat answers included), so it belongs under the ready timeout, not
// under the heartbeat, which would take a slow load on a busy machine for a hang.
// A standby worker (booted with no instance) imports the channel modules seen so far instead.
// (In a function, not at the top level: the runtime runs this file bundled as a script, which
// has no top-level await; see instance-worker-script.ts.)
async function bootWorker(): Promise<void> {
  const instance = first ? await host(first) : undefined;
  await Promise.all(preload.map((url) => modules.preload(url)));
  serve(api(instance), { onStop: async () => void (await Promise.all([...contexts.values()].map((c) => c.stop()))) });
  // Ready is posted: the boot's instance connects from the next turn on, without waiting for `start`.
  void instance?.start();
}

/** The control API of this worker; `instance` is the boot's own, if it has one. */
const api = (instance: InstanceContext | undefined): InstanceWorkerApi => ({
  start: () =>
    instance ? instance.start() : Promise.resolve({ ok: false, code: 'channel_invalid', reason: 'this worker was booted without an instance (standby): host one instead' } as const),

  async host(boot) {
    const iid: unknown = (boot as { iid?: unknown } | null)?.iid;
    if (typeof iid !== 'number' || contexts.has(iid) || arriving.has(iid)) {
      return { ok: false, code: 'channel_invalid', reason: `instance number ${String(iid)} is missing or already hosted in this worker` };
    }
    arriving.add(iid);
    try {
      const started = await (await host(boot)).start();
      if (!started.ok) contexts.delete(iid); // nothing runs: not hosted
      return started;
    } finally {
      arriving.delete(iid);
    }
  },

  async preload(url) {
    if (typeof url === 'string') await modules.preload(url);
  },

  codeCache: () => Promise.resolve(scriptCodeCache()),

  async unhost(iid) {
    const ctx = contexts.get(iid);
    if (!ctx) return;
    contexts.delete(iid);
    await ctx.stop();
  },
});

// A failure (a boot the runtime got wrong) ends the thread before ready: a start failure.
bootWorker().catch((err: unknown) => {
  setImmediate(() => {
    throw err;
  });
});
