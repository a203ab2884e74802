/**
 * Test helpers for the instance worker (`workers/instance-worker.ts`) driven directly through a
 * `WorkerHost`, without a `Runtime`: builds an {@link InstanceBoot}, wires the data port, and
 * collects the worker's notices (each validated with `noticeSchema`). Sends go as the runtime
 * sends them: a `send` batch on the data port, answered by an ack (`harness.send`).
 */
import { MessageChannel, type MessagePort } from 'node:worker_threads';
import { pino } from 'pino';
import type { WireError } from '../../src/wire/errors.js';
import type { InstanceBoot, InstanceWorkerApi, LifecycleBody as Notice, SendBatch } from '../../src/wire/protocol.js';
import { isAckRun, readAckRun } from '../../src/wire/validate.js';
import { acksSchema, noticeSchema } from '../../src/runtime/protocol.js';
import { WorkerHost, type WorkerHostOptions } from '../../src/worker/host.js';
import { fixtureUrl, waitFor } from './fixtures.js';

/** URL of the compiled instance worker. */
export const instanceWorkerUrl = new URL('../../dist/workers/instance-worker.js', import.meta.url);
/** URL of what the runtime spawns: the loader that runs the instance worker bundled as a script. */
export const instanceWorkerScriptUrl = new URL('../../dist/workers/instance-worker-script.js', import.meta.url);
/** URL of the compiled built-in loopback channel. */
export const loopbackUrl = new URL('../../dist/workers/channels/loopback.js', import.meta.url);

/** URL of the compiled test channel `test/fixtures/channels/<name>.ts`. */
export function channelFixtureUrl(name: string): URL {
  return fixtureUrl(`channels/${name}`);
}

/** The notice of kind `T`. */
export type NoticeOf<T extends Notice['t']> = Extract<Notice, { t: T }>;

/** What a test may override in the boot configuration. */
export interface BootOverrides {
  id?: string;
  name?: string;
  channelType?: string;
  channel?: string | URL;
  settings?: Record<string, unknown>;
  credentials?: Record<string, unknown>;
  reconnect?: Partial<InstanceBoot['reconnect']>;
  probeIntervalMs?: number;
  timeouts?: Partial<InstanceBoot['timeouts']>;
  pollIdleMs?: number;
  /** Cluster mode's shared lease deadline (see `src/wire/fence.ts`). */
  fence?: SharedArrayBuffer;
  /** The code cache of the worker script (see `src/runtime/worker-code.ts`); none by default. */
  code?: Uint8Array;
}

/** A running instance worker and what it has posted so far. */
export interface InstanceHarness {
  readonly host: WorkerHost<InstanceWorkerApi>;
  /** Valid notices, in arrival order. */
  readonly notices: Notice[];
  /** Messages that failed `noticeSchema` (should stay empty). */
  readonly invalid: unknown[];
  /** The main side's end of the data channel. */
  readonly port: MessagePort;
  /** Resolves with the first notice of kind `t` (from index `from` on) matching `pred`. */
  waitForNotice<T extends Notice['t']>(
    t: T,
    pred?: (n: NoticeOf<T>) => boolean,
    opts?: { timeoutMs?: number; from?: number },
  ): Promise<NoticeOf<T>>;
  /**
   * Sends one message on the data port, as the runtime does (a batch of one, a fresh epoch):
   * resolves with the channel's receipt; rejects with a {@link SendFailure} carrying the
   * worker's `{ class, code, reason }`, or `unsent` when the worker handed it back.
   */
  send(message: unknown, opts?: { attempt?: number; key?: string; redelivered?: boolean; iid?: number }): Promise<unknown>;
  /** Notices of the other instances this worker hosts (see `host`), by instance number. */
  readonly others: Map<number, Notice[]>;
  /** Acks of every form received so far (for tests of the wire itself). */
  readonly acks: unknown[];
  /** Brutal kill (if still running) and port cleanup. Idempotent. */
  dispose(): Promise<void>;
}

const quiet = pino({ level: 'silent' });

/** Every harness started and not yet disposed (for `afterEach` cleanup). */
export const harnesses = new Set<InstanceHarness>();

/** A send the worker acknowledged as failed (or handed back unsent). */
export class SendFailure extends Error {
  constructor(
    readonly error: WireError | undefined,
    readonly unsent = false,
  ) {
    super(unsent ? 'handed back unsent' : `[${error?.class}/${error?.code}] ${error?.reason}`);
    this.name = 'SendFailure';
  }
}

/** The instance number a harness gives its worker (every notice must carry it). */
export const HARNESS_IID = 7;

/** Builds a boot configuration with fast test defaults (no `data` port yet). */
export function bootConfig(o: BootOverrides = {}): Omit<InstanceBoot, 'data'> {
  return {
    iid: HARNESS_IID,
    instance: {
      id: o.id ?? 'i1',
      name: o.name ?? 'test instance',
      channelType: o.channelType ?? 'loopback',
      settings: o.settings ?? {},
      credentials: o.credentials ?? {},
    },
    channel: String(o.channel ?? loopbackUrl),
    reconnect: { maxAttempts: 5, initialDelayMs: 10, maxDelayMs: 50, jitter: 0.2, resetAfterMs: 5000, ...o.reconnect },
    probe: { intervalMs: o.probeIntervalMs ?? 0 },
    timeouts: { connectMs: 2000, disconnectMs: 1000, sendMs: 2000, pollMs: 2000, probeMs: 1000, ...o.timeouts },
    pollIdleMs: o.pollIdleMs ?? 5,
    ...(o.fence ? { fence: o.fence } : {}),
  };
}

/**
 * Spawns the instance worker with `overrides`, and (unless `start: false`) calls `start`.
 * `host` options are passed to `WorkerHost.start` (heartbeat, resourceLimits, …).
 */
export async function startInstanceWorker(
  overrides: BootOverrides = {},
  options: { host?: Partial<WorkerHostOptions>; start?: boolean } = {},
): Promise<InstanceHarness> {
  const { port1, port2 } = new MessageChannel();
  const notices: Notice[] = [];
  const invalid: unknown[] = [];
  const acks: unknown[] = [];
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextSeq = 0;
  const settle = (seq: number, fn: (p: { resolve: (v: unknown) => void; reject: (e: Error) => void }) => void): void => {
    const p = pending.get(seq);
    if (!p) return;
    pending.delete(seq);
    fn(p);
  };
  const others = new Map<number, Notice[]>();
  const known = (i: unknown): boolean => i === HARNESS_IID || (typeof i === 'number' && others.has(i));
  port1.on('message', (message: unknown) => {
    const i = (message as { i?: unknown } | null)?.i;
    if ((message as { t?: unknown } | null)?.t === 'acks' && known(i)) {
      acks.push(message);
      if (isAckRun(message as object)) {
        const run = readAckRun(message as object, 1_000_000);
        if (!run) return void invalid.push(message);
        run.receipts.forEach((r, k) => settle(run.seq + k, (p) => p.resolve(r)));
        return;
      }
      const parsed = acksSchema.safeParse(message);
      if (!parsed.success) return void invalid.push(message);
      for (const r of parsed.data.results) {
        if (r.ok) settle(r.seq, (p) => p.resolve(r.receipt));
        else settle(r.seq, (p) => p.reject('unsent' in r ? new SendFailure(undefined, true) : new SendFailure(r.error)));
      }
      return;
    }
    const parsed = noticeSchema.safeParse(message);
    if (parsed.success && i === HARNESS_IID) notices.push(parsed.data);
    else if (parsed.success && typeof i === 'number' && others.has(i)) others.get(i)?.push(parsed.data);
    else invalid.push(message);
  });
  const boot: InstanceBoot = { ...bootConfig(overrides), data: port2 };
  if (overrides.code !== undefined) boot.code = overrides.code;
  let host: WorkerHost<InstanceWorkerApi>;
  try {
    host = await WorkerHost.start<InstanceWorkerApi>({
      // What the runtime spawns (the bundle, run as a script), as the runtime spawns it.
      filename: instanceWorkerScriptUrl,
      workerData: boot,
      transferList: [port2],
      logger: quiet,
      heartbeat: { intervalMs: 200, maxMissed: 5 },
      ...options.host,
    });
  } catch (err) {
    port1.close();
    throw err;
  }
  let disposed = false;
  const harness: InstanceHarness = {
    host,
    notices,
    invalid,
    port: port1,
    acks,
    others,
    send(message, opts = {}) {
      const seq = nextSeq++;
      const batch: SendBatch = { t: 'send', i: opts.iid ?? HARNESS_IID, epoch: seq, seq, messages: [message] };
      if (opts.attempt !== undefined) batch.attempts = [opts.attempt];
      if (opts.key !== undefined) batch.keys = [opts.key];
      if (opts.redelivered !== undefined) batch.redelivered = [opts.redelivered];
      return new Promise<unknown>((resolve, reject) => {
        pending.set(seq, { resolve, reject });
        port1.postMessage(batch);
      });
    },
    async waitForNotice<T extends Notice['t']>(
      t: T,
      pred: (n: NoticeOf<T>) => boolean = () => true,
      { timeoutMs = 10_000, from = 0 }: { timeoutMs?: number; from?: number } = {},
    ): Promise<NoticeOf<T>> {
      let found: NoticeOf<T> | undefined;
      await waitFor(() => {
        found = notices.slice(from).find((n): n is NoticeOf<T> => n.t === t && pred(n as NoticeOf<T>));
        return found !== undefined;
      }, timeoutMs);
      return found as NoticeOf<T>;
    },
    async dispose() {
      if (disposed) return;
      disposed = true;
      harnesses.delete(harness);
      await host.shutdown('brutal_kill');
      port1.close();
    },
  };
  harnesses.add(harness);
  if (options.start !== false) await host.call('start');
  return harness;
}

/** The lifecycle notices (`status`, `reconnect`, `fatal`) as short strings, e.g. `reconnect:failed:0:recoverable`. */
export function lifecycle(notices: readonly Notice[]): string[] {
  const out: string[] = [];
  for (const n of notices) {
    if (n.t === 'status') out.push(`status:${n.status}`);
    else if (n.t === 'reconnect') out.push(`reconnect:${n.phase}:${n.attempt}${n.class ? `:${n.class}` : ''}`);
    else if (n.t === 'fatal') out.push(`fatal:${n.code ?? ''}`);
  }
  return out;
}

/** Every message of every `inbound` notice, in order. */
export function inboundMessages(notices: readonly Notice[]): unknown[] {
  return notices.flatMap((n) => (n.t === 'inbound' ? n.messages : []));
}
