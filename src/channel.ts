/**
 * The channel contract: what a channel module (one platform: a chat API, a stream, a webhook
 * source) implements. A channel module's default export is `defineChannel({...})`. It is loaded
 * and validated inside the instance's worker thread; every callback runs there. The runtime also
 * imports it once on the main thread, only to read its optional `settingsSchema`.
 *
 * This module has no dependencies (a channel module imports it, so every worker loads it).
 *
 * @packageDocumentation
 */
import type { FailureClass } from './errors.js';

/** The instance a channel serves, as its worker sees it (credentials included: they stay in this thread). */
export interface ChannelInstance<Settings = Record<string, unknown>, Credentials = Record<string, unknown>> {
  readonly id: string;
  readonly name: string;
  readonly channelType: string;
  readonly settings: Settings;
  readonly credentials: Credentials;
}

/** A logger whose lines are forwarded to the runtime's pino logger (redacted there). */
export interface ChannelLogger {
  trace(msg: string, obj?: Record<string, unknown>): void;
  debug(msg: string, obj?: Record<string, unknown>): void;
  info(msg: string, obj?: Record<string, unknown>): void;
  warn(msg: string, obj?: Record<string, unknown>): void;
  error(msg: string, obj?: Record<string, unknown>): void;
}

/** What every channel callback receives first. */
export interface ChannelContext<Settings = Record<string, unknown>, Credentials = Record<string, unknown>> {
  /** The instance: id, name, channelType, settings and credentials. */
  readonly instance: ChannelInstance<Settings, Credentials>;
  /** Forwarded to the runtime's logger. */
  readonly logger: ChannelLogger;
  /**
   * Aborts when the connection this callback belongs to ends (disconnect, reconnect or stop), or
   * when the callback's own timeout budget runs out. `listen` must return once it aborts.
   */
  readonly signal: AbortSignal;
  /**
   * Pushes one inbound message to the runtime's `onMessage` (for `listen` channels), with the
   * channel's cursor after it (an offset, an update id), if the channel has one.
   */
  emit(message: unknown, cursor?: Cursor): void;
  /**
   * The last cursor whose messages `onMessage` has handled, kept by the runtime across worker
   * restarts: `connect` resumes after it, so a crash neither skips messages nor re-reads more
   * than the batch that was in hand. `undefined` on the very first connect.
   */
  readonly cursor: Cursor | undefined;
  /**
   * Cluster mode: the fencing token of this node's lease on the instance, larger at every new
   * acquisition. A platform or store that accepts a token can refuse a write from an older owner.
   * `undefined` outside cluster mode.
   */
  readonly fencingToken?: number;
}

/** A channel's inbound position: any structured-cloneable value (a number, a string, an object). */
export type Cursor = unknown;

/** What `poll` returns: a batch, or a batch with the cursor after its last message. */
export type PollResult = unknown[] | { messages: unknown[]; cursor?: Cursor };

/** What `send` learns about the delivery besides the message. */
export interface SendInfo {
  /** The idempotency key (the message's `id` unless the sender gave one), if any. */
  readonly idempotencyKey?: string;
  /** 1 on the first attempt, then 2, 3, ... on retries after a failure. */
  readonly attempt: number;
  /**
   * True when the message was handed to a worker before: it was in flight when that worker died
   * (a crash does not count as an attempt), or it is a retry. The channel may have delivered it
   * already: an idempotent platform call (by `idempotencyKey`) makes that harmless.
   */
  readonly redelivery: boolean;
}

/**
 * A schema of a channel's settings: a zod schema, or any object with a zod-like `safeParse`
 * (failure issues carry a `path` and a `message`). See {@link ChannelDefinitionBase.settingsSchema}.
 */
export interface SettingsSchema {
  safeParse(value: unknown):
    | { success: true }
    | { success: false; error: { issues: ReadonlyArray<{ readonly path: ReadonlyArray<PropertyKey>; readonly message: string; readonly code?: string }> } };
}

/** Outcome of a probe: `ok`, `degraded` (still running, visible in health) or `failed`. */
export type ProbeOutcome = 'ok' | 'degraded' | 'failed';

/** What `probe` may return: nothing (= ok), an outcome, or an outcome with a reason. */
export type ProbeResult = void | ProbeOutcome | { outcome: ProbeOutcome; reason?: string };

/**
 * The members every channel definition has besides `probe` (see {@link ChannelDefinition}).
 */
export interface ChannelDefinitionBase<Message = unknown, Receipt = unknown, Settings = Record<string, unknown>, Credentials = Record<string, unknown>> {
  /** The channel type, e.g. `telegram`; must equal the instance's `channelType`. */
  readonly type: string;
  /**
   * The schema of the instance's `settings` (optional). The runtime reads it on the main thread
   * (it imports the channel module there once per module) and `startInstance` rejects settings
   * that fail it with `invalid_config`, naming each bad field as `settings.<path>`, before any
   * worker is spawned. The channel still receives the settings as given (not the parsed output).
   */
  readonly settingsSchema?: SettingsSchema;
  /** Opens the connection. May return metadata (shown in the `connected` event). */
  connect(ctx: ChannelContext<Settings, Credentials>): Promise<void | Record<string, unknown>> | void | Record<string, unknown>;
  /** Closes the connection. */
  disconnect(ctx: ChannelContext<Settings, Credentials>): Promise<void> | void;
  /**
   * Delivers one outbound message; resolves with the platform's receipt (e.g. its message id).
   * `info.idempotencyKey` lets a channel whose platform supports it make redelivery after a
   * crash harmless (sends are at-least-once); `info.attempt` is 1 on the first try.
   */
  send(ctx: ChannelContext<Settings, Credentials>, message: Message, info: SendInfo): Promise<Receipt> | Receipt;
  /** Fetches the next batch of inbound messages (empty when there is none), optionally with its cursor. */
  poll?(ctx: ChannelContext<Settings, Credentials>): Promise<PollResult> | PollResult;
  /** Pushes inbound messages with `ctx.emit` until `ctx.signal` aborts. */
  listen?(ctx: ChannelContext<Settings, Credentials>): Promise<void> | void;
  /** Classifies an error this channel threw; `undefined` defers to the runtime's table. */
  classify?(err: unknown): FailureClass | undefined;
}

/**
 * A channel. `connect`, `disconnect` and `send` are required; a channel has `poll` (the runtime
 * calls it in a loop and delivers each returned batch), `listen` (it pushes with `ctx.emit` until
 * `ctx.signal` aborts) or neither. An error a callback throws may carry
 * `class: 'recoverable' | 'fatal' | 'degraded'` (or be a `ChannelError`); otherwise `classify`,
 * then the runtime's classification table decides.
 */
export interface ChannelDefinition<Message = unknown, Receipt = unknown, Settings = Record<string, unknown>, Credentials = Record<string, unknown>>
  extends ChannelDefinitionBase<Message, Receipt, Settings, Credentials> {
  /** Checks the connection's health; a throw or a timeout is a failed probe. */
  probe?(ctx: ChannelContext<Settings, Credentials>): Promise<ProbeResult> | ProbeResult;
}

/** The callbacks of one instance's channel, as a {@link ChannelFactory}'s `create` returns them. */
export type ChannelHandlers<Message = unknown, Receipt = unknown, Settings = Record<string, unknown>, Credentials = Record<string, unknown>> = Omit<
  ChannelDefinition<Message, Receipt, Settings, Credentials>,
  'type' | 'settingsSchema'
>;

/**
 * A channel in factory form: `create` makes one instance's callbacks, so whatever they keep in
 * their closure (a client, a cache, counters) belongs to that instance alone. A channel module is
 * loaded once per worker, so module-level state would be shared by every instance in a shared
 * worker (`placement.instancesPerWorker` > 1); the factory form is the way to keep state per
 * instance. `create` runs in the instance's worker each time the instance starts there (its first
 * start and every restart), before `connect`; a throw, or callbacks that are not a valid channel
 * (the same rules as {@link ChannelDefinition}), fail that instance's start with
 * `channel_invalid`.
 */
export interface ChannelFactory<Message = unknown, Receipt = unknown, Settings = Record<string, unknown>, Credentials = Record<string, unknown>> {
  /** The channel type, e.g. `telegram`; must equal the instance's `channelType`. */
  readonly type: string;
  /** As {@link ChannelDefinitionBase.settingsSchema}. */
  readonly settingsSchema?: SettingsSchema;
  /** Makes the callbacks of one instance (its settings and credentials in `instance`). */
  create(instance: ChannelInstance<Settings, Credentials>): ChannelHandlers<Message, Receipt, Settings, Credentials>;
}

/**
 * The contextual return type of `probe` in {@link defineChannel}'s first overload. TypeScript
 * widens an `async` function's single returned literal (`return 'ok'`) to `string` when the
 * expected return type is a union of a promise and a non-promise (`Promise<T> | T`, see
 * microsoft/TypeScript#30185), so `ChannelDefinition`'s own `probe` type would reject it. Every
 * member here is a promise, which keeps the literal for `async` probes; the intersections keep it
 * for synchronous ones, which then match the second overload (plain `ChannelDefinition`).
 */
export type ProbeReturnHint = Promise<ProbeResult> | (Promise<ProbeResult> & Exclude<ProbeResult, void>);

/** {@link ChannelDefinition} with `probe` typed by {@link ProbeReturnHint} (the first overload of {@link defineChannel}). */
export interface AsyncProbeChannelDefinition<Message = unknown, Receipt = unknown, Settings = Record<string, unknown>, Credentials = Record<string, unknown>>
  extends ChannelDefinitionBase<Message, Receipt, Settings, Credentials> {
  /** Checks the connection's health; a throw or a timeout is a failed probe. */
  probe?(ctx: ChannelContext<Settings, Credentials>): ProbeReturnHint;
}

/**
 * Identity function that types a channel definition. Use it as the module's default export.
 *
 * A `probe` may return `'ok'`, `'degraded'` or `'failed'` (or `{ outcome, reason? }`, or nothing)
 * from an `async` or a synchronous function; the literal is inferred, no `as const` needed.
 *
 * The factory form, `defineChannel({ type, create(instance) { return { connect, send, ... } } })`,
 * makes each instance's callbacks separately (see {@link ChannelFactory}).
 */
export function defineChannel<Message = unknown, Receipt = unknown, Settings = Record<string, unknown>, Credentials = Record<string, unknown>>(
  definition: AsyncProbeChannelDefinition<Message, Receipt, Settings, Credentials>,
): ChannelDefinition<Message, Receipt, Settings, Credentials>;
export function defineChannel<Message = unknown, Receipt = unknown, Settings = Record<string, unknown>, Credentials = Record<string, unknown>>(
  definition: ChannelDefinition<Message, Receipt, Settings, Credentials>,
): ChannelDefinition<Message, Receipt, Settings, Credentials>;
export function defineChannel<Message = unknown, Receipt = unknown, Settings = Record<string, unknown>, Credentials = Record<string, unknown>>(
  factory: ChannelFactory<Message, Receipt, Settings, Credentials>,
): ChannelFactory<Message, Receipt, Settings, Credentials>;
export function defineChannel<Message, Receipt, Settings, Credentials>(
  definition: ChannelDefinition<Message, Receipt, Settings, Credentials> | ChannelFactory<Message, Receipt, Settings, Credentials>,
): ChannelDefinition<Message, Receipt, Settings, Credentials> | ChannelFactory<Message, Receipt, Settings, Credentials> {
  return definition;
}

/** Whether a (checked) channel module's default export is in factory form. */
export function isChannelFactory(def: unknown): def is ChannelFactory {
  return typeof def === 'object' && def !== null && typeof (def as { create?: unknown }).create === 'function';
}

/** One problem of a channel definition: the member (`(root)` for the whole) and what is wrong. */
export interface DefinitionIssue {
  readonly path: string;
  readonly message: string;
}

const REQUIRED = ['connect', 'disconnect', 'send'] as const;
const OPTIONAL = ['poll', 'listen', 'probe', 'classify'] as const;

/** A reader of an object's members that records a throwing getter as a problem of its member. */
function reader(obj: object, issues: DefinitionIssue[]): (key: string) => unknown {
  return (key) => {
    try {
      return (obj as Record<string, unknown>)[key];
    } catch (err) {
      issues.push({ path: key, message: `reading it threw: ${err instanceof Error ? err.message : String(err)}` });
      return undefined;
    }
  };
}

/**
 * Checks one instance's channel callbacks (a definition's, or what a factory's `create`
 * returned): functions `connect`, `disconnect` and `send`; optional functions `poll` or `listen`
 * (not both), `probe` and `classify`. Returns every problem found. Never throws.
 */
export function checkChannelHandlers(handlers: unknown): DefinitionIssue[] {
  if (typeof handlers !== 'object' || handlers === null) return [{ path: '(root)', message: `expected an object, got ${handlers === null ? 'null' : typeof handlers}` }];
  const issues: DefinitionIssue[] = [];
  const read = reader(handlers, issues);
  for (const key of REQUIRED) if (typeof read(key) !== 'function') issues.push({ path: key, message: `expected ${key} to be a function` });
  for (const key of OPTIONAL) {
    const v = read(key);
    if (v !== undefined && typeof v !== 'function') issues.push({ path: key, message: `expected ${key} to be a function` });
  }
  if (read('poll') !== undefined && read('listen') !== undefined) issues.push({ path: 'listen', message: 'a channel has poll, listen or neither, not both' });
  return issues;
}

/**
 * Checks what a channel module's default export must be (the worker checks it at load, before
 * anything runs): a non-empty `type`; an optional `settingsSchema` with a `safeParse`; and either
 * the callbacks (see {@link checkChannelHandlers}) or, in factory form, a `create` function and
 * no callbacks (what `create` returns is checked for each instance). Returns every problem found
 * (empty when it is a valid definition). Never throws (a throwing getter is a problem of its
 * member).
 */
export function checkChannelDefinition(def: unknown): DefinitionIssue[] {
  if (typeof def !== 'object' || def === null) return [{ path: '(root)', message: `expected an object, got ${def === null ? 'null' : typeof def}` }];
  const issues: DefinitionIssue[] = [];
  const read = reader(def, issues);
  const type = read('type');
  if (typeof type !== 'string' || type.length === 0) issues.push({ path: 'type', message: 'expected a non-empty string' });
  const create = read('create');
  if (create === undefined) issues.push(...checkChannelHandlers(def));
  else if (typeof create !== 'function') issues.push({ path: 'create', message: 'expected create to be a function' });
  else {
    const both = [...REQUIRED, ...OPTIONAL].filter((key) => read(key) !== undefined);
    if (both.length > 0) issues.push({ path: 'create', message: `a channel has its callbacks or create, not both (found ${both.join(', ')})` });
  }
  const schema = read('settingsSchema');
  if (schema !== undefined && (typeof schema !== 'object' || schema === null || typeof (schema as { safeParse?: unknown }).safeParse !== 'function')) {
    issues.push({ path: 'settingsSchema', message: 'expected settingsSchema to be a schema with safeParse (a zod schema)' });
  }
  return issues;
}
