/**
 * The `threadvisor/channel` entry point: what a channel module imports, and nothing else.
 *
 * A worker thread starts with an empty module cache, so each instance worker loads its channel
 * module's imports at every start and restart. This entry is `defineChannel`, `ChannelError` and
 * the contract's types; it loads the channel contract and the error classes, which import nothing
 * (the instance worker shares those two modules with the channel, so `ChannelError` is one class).
 * A channel module that imports the main entry (`threadvisor`) instead makes each of its workers
 * load the whole main-thread library (the runtime, zod, pino): about 140 ms against 4 ms,
 * measured by `bench/channel-import.ts`.
 *
 * @packageDocumentation
 */
export { defineChannel, checkChannelDefinition } from './channel.js';
export type {
  AsyncProbeChannelDefinition,
  ChannelContext,
  ChannelDefinition,
  ChannelDefinitionBase,
  ChannelFactory,
  ChannelHandlers,
  ChannelInstance,
  ChannelLogger,
  Cursor,
  DefinitionIssue,
  PollResult,
  ProbeOutcome,
  ProbeResult,
  ProbeReturnHint,
  SendInfo,
  SettingsSchema,
} from './channel.js';
export { ChannelError, ThreadvisorError } from './errors.js';
export type { ErrorCode, FailureClass } from './errors.js';
