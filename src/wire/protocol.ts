/**
 * What crosses the boundary between the runtime (main thread) and an instance worker, besides
 * the WorkerHost's own heartbeat and control ports (`./host.ts`): the boot configuration (in
 * `workerData`), the send batches and inbound acks the main thread posts on the data port, and
 * the notices and acks the worker posts back.
 *
 * **Every message on the data port names its instance**: `i`, a small integer the main thread
 * assigns to each instance (`InstanceBoot.iid`). The main thread drops (and counts) a message
 * that names another instance; a worker ignores one.
 *
 * Part of the wire layer: types and constants only, no dependencies. Both threads import it;
 * neither keeps its own copy. The main thread checks what a worker posts (zod for the rare
 * notices, the hand-written checks of `./validate.ts` on the hot path); a malformed message is
 * classified, logged and counted, never a crash.
 *
 * @packageDocumentation
 */
import type { MessagePort } from 'node:worker_threads';
import type { FailureClass, WireError } from './errors.js';

/** Most messages carried by one `inbound` notice; larger batches are split. */
export const INBOUND_CHUNK = 1000;

/** Reconnect policy of the worker's connect loop. */
export interface ReconnectPolicy {
  /** Attempts after the first failed connect before the worker gives up (and is restarted). */
  maxAttempts: number;
  /** Delay before the first reconnect attempt, ms. */
  initialDelayMs: number;
  /** Upper bound of a reconnect delay, ms. */
  maxDelayMs: number;
  /** ± jitter ratio. */
  jitter: number;
  /**
   * A connection that stays up this long is stable: the attempts after its loss start over from
   * 1. A connection lost sooner continues the count (attempt n+1 after a connection made at
   * attempt n), so connections that break at once still exhaust `maxAttempts`.
   */
  resetAfterMs: number;
}

/** Timeout budgets of the channel callbacks, ms. */
export interface CallbackTimeouts {
  connectMs: number;
  disconnectMs: number;
  sendMs: number;
  pollMs: number;
  probeMs: number;
}

/** The boot configuration an instance worker receives in its `workerData`. */
export interface InstanceBoot {
  /** The instance's number on the wire: every data-port message about it carries it as `i`. */
  iid: number;
  instance: { id: string; name: string; channelType: string; settings: Record<string, unknown>; credentials: Record<string, unknown> };
  /** URL (href) of the channel module. */
  channel: string;
  reconnect: ReconnectPolicy;
  /** Probe schedule: every `intervalMs` (0 = never), the first right after connect. */
  probe: { intervalMs: number };
  timeouts: CallbackTimeouts;
  /** Pause after an empty poll batch, ms. */
  pollIdleMs: number;
  /** V8's code cache of the worker script (see src/runtime/worker-code.ts), if the runtime has one; spawns only. */
  code?: Uint8Array;
  /** The worker's end of the data channel (notices flow worker → main). */
  data: MessagePort;
  /** The last inbound cursor `onMessage` handled (given to the channel as `ctx.cursor`). */
  cursor?: unknown;
  /** Inbound batches the worker may have posted and not yet seen acknowledged (flow control); 0 or absent = no limit. */
  inboundWindow?: number;
  /**
   * Read from the boot the worker is spawned with: the worker is shared by several instances, so
   * an error that escapes one instance's callbacks restarts that instance alone (a `fault`
   * notice) instead of ending the worker.
   */
  shared?: boolean;
  /** Cluster mode: the fencing token of the node's lease on the instance (`ctx.fencingToken`). */
  fencingToken?: number;
  /** Cluster mode: the node's lease deadline, shared (see `./fence.ts`): past it the instance neither polls nor sends. */
  fence?: SharedArrayBuffer;
}

/**
 * The boot of a standby worker (see `RuntimeOptions.standby`): booted ahead of need with no
 * instance, its `data` port ready; the channel modules in `preload` are imported before it reports
 * ready. It hosts instances through {@link InstanceWorkerApi.host} once the runtime takes it.
 */
export interface StandbyBoot {
  standby: true;
  /** The worker's end of the data channel. */
  data: MessagePort;
  /** V8's code cache of the worker script (see src/runtime/worker-code.ts), if the runtime has one. */
  code?: Uint8Array;
  /** URLs (href) of channel modules to import before ready. */
  preload: string[];
}

/** Main → worker: inbound batches up to `upTo` (their `n`) were handled by `onMessage`. */
export interface InboundAck {
  t: 'inbound_ack';
  /** The instance (see {@link InstanceBoot.iid}). */
  i: number;
  upTo: number;
}

/**
 * A batch of sends, posted main → worker on the data port. Parallel arrays rather than an object
 * per message: the messages cross the boundary as they are, with nothing wrapped around them.
 * Message `i` has the delivery sequence number `seq + i` (the ack names it).
 */
export interface SendBatch {
  t: 'send';
  /** The instance (see {@link InstanceBoot.iid}). */
  i: number;
  /** The queue's epoch when the batch was taken (see `OutboundQueue`): after a failed send the worker returns, unsent, every held message of an epoch not newer than the failed one's. */
  epoch: number;
  /** Delivery sequence number of the first message. */
  seq: number;
  /** The messages, by structured clone; absent when they go in columns (`n`, `fields`, `columns`). */
  messages?: readonly unknown[];
  /** Number of messages in columns (see `toColumns`: flat objects of one shape, the common case). */
  n?: number;
  /** The messages' keys, when they go in columns. */
  fields?: readonly string[];
  /** One array of values per field, when the messages go in columns. */
  columns?: readonly (readonly unknown[])[];
  /** Attempt of each message (1 for the first); absent when every one is a first attempt. */
  attempts?: readonly number[];
  /** Idempotency key of each message (`null`: none), passed to the channel's `send`; absent when none has one. */
  keys?: readonly (string | null)[];
  /** Whether each message was handed to a worker before (e.g. in flight when one died); absent when none was. */
  redelivered?: readonly boolean[];
}

/** Every message the main thread posts on an instance's data port. */
export type MainMessage = SendBatch | InboundAck;

/**
 * The outcome of one dispatch: delivered (`receipt`), failed (`error`), or returned without
 * being attempted (`unsent`: the worker stopped at an earlier failure or is shutting down;
 * it goes back to its place in the queue and does not count as an attempt).
 */
export type AckResult<R = unknown> =
  | { seq: number; ok: true; receipt: R }
  | { seq: number; ok: false; error: WireError }
  | { seq: number; ok: false; unsent: true };

/** The result of one send, as acknowledged by the worker. */
export type SendResult = AckResult;

/**
 * Acks, batched worker → main on the data port: a run of consecutive successes
 * (`seq`, `seq + 1`, … with their receipts: the hot path; receipts of one flat shape go in
 * columns, see `toColumns`), or a list of results of any kind (failures, messages handed back
 * unsent).
 */
export type AcksBody =
  | { t: 'acks'; seq: number; receipts: unknown[] }
  | { t: 'acks'; seq: number; n: number; fields: string[]; columns: unknown[][] }
  | { t: 'acks'; results: SendResult[] };

/** Acks as they cross the port, naming their instance. */
export type AcksNotice = AcksBody & Addressed;

/** What every data-port message carries: the instance it is about (see {@link InstanceBoot.iid}). */
export interface Addressed {
  i: number;
}

/** Log levels a channel's logger forwards. */
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error';

/** A lifecycle, data or log notice from an instance worker (everything but acks), before it is addressed. */
export type LifecycleBody =
  | { t: 'status'; status: 'connecting' | 'connected' | 'disconnected'; reason?: string | undefined; meta?: Record<string, unknown> | undefined }
  | {
      t: 'reconnect';
      phase: 'scheduled' | 'attempt' | 'failed' | 'exhausted';
      attempt: number;
      reason?: string | undefined;
      delayMs?: number | undefined;
      class?: FailureClass | undefined;
    }
  | { t: 'probe'; outcome: 'ok' | 'degraded' | 'failed'; latencyMs: number; reason?: string | undefined; class?: FailureClass | undefined }
  | { t: 'failure'; op: string; reason: string; class: FailureClass }
  | { t: 'success'; op: string }
  | { t: 'fatal'; reason: string; code?: string | undefined }
  | { t: 'fault'; reason: string; origin: 'uncaught' | 'rejection' }
  | { t: 'inbound'; messages: unknown[]; n?: number | undefined; cursor?: unknown }
  | { t: 'log'; level: LogLevel; msg: string; obj?: Record<string, unknown> | undefined };

/** A lifecycle, data or log notice as it crosses the port, naming its instance. */
export type LifecycleNotice = LifecycleBody & Addressed;

/** What an instance worker posts about an instance, before it is addressed. */
export type NoticeBody = LifecycleBody | AcksBody;

/** One message from an instance worker on its data port. */
export type Notice = LifecycleNotice | AcksNotice;

/** What {@link InstanceWorkerApi.start} answers: started, or why the channel cannot run. */
export type StartResult = { ok: true } | { ok: false; code: 'channel_invalid'; reason: string };

/** The control-plane API an instance worker serves (through the WorkerHost's comlink port). */
export interface InstanceWorkerApi {
  /**
   * Starts the boot's instance: connecting (then the inbound loop) in the background, after this
   * call has answered. The channel module was loaded and validated before the worker reported
   * ready; a module that failed is answered `{ ok: false, code: 'channel_invalid', reason }`, and
   * nothing starts.
   */
  start(): Promise<StartResult>;
  /**
   * Hosts one more instance in this worker (its number `config.iid` must be new here) and starts
   * it as `start` does: its channel module is loaded once per worker, its messages share the
   * worker's data port, addressed by its number. Answers as `start`; a number already hosted is
   * answered `{ ok: false, code: 'channel_invalid' }` naming it.
   */
  host(config: Omit<InstanceBoot, 'data'>): Promise<StartResult>;
  /**
   * Stops one hosted instance gracefully (its channel's `disconnect` runs within its budget) and
   * forgets it: later messages for its number are ignored. The worker and its other instances go
   * on. Resolves when it is done; an unknown number resolves at once.
   */
  unhost(iid: number): Promise<void>;
  /**
   * Imports the channel module at `url` (href) ahead of need, so that hosting an instance of it
   * later does not wait for the import. Never rejects: a module that fails is reported when an
   * instance of it is hosted.
   */
  preload(url: string): Promise<void>;
  /**
   * V8's code cache of the worker script as this worker has compiled it so far (its boot and its
   * instances' connects included), or undefined when the worker does not run as that script. The
   * runtime asks one worker once, and boots the next workers with it (see src/runtime/worker-code.ts).
   */
  codeCache(): Promise<Uint8Array | undefined>;
}
