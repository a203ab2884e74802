import diagnostics_channel from 'node:diagnostics_channel';
import type { EventEmitter } from 'node:events';
import { pino, type Logger } from 'pino';
import type { ChannelKey, ChannelPayloads } from './events.js';

/**
 * Every event threadvisor emits is published on `node:diagnostics_channel` under
 * `threadvisor:<scope>:<event>` (for example `threadvisor:supervisor:child_exited`) and emitted on
 * the owning object (`supervisor.on('child_exited', ...)`). The payload is the same object in both.
 * Channels cost nothing while nobody subscribes.
 */
export type EventPayload = Record<string, unknown> & { readonly at: number };

const channels = new Map<string, diagnostics_channel.Channel>();

/** The diagnostics channel for `threadvisor:<scope>:<event>` (cached). */
export function eventChannel(scope: string, event: string): diagnostics_channel.Channel {
  const name = `threadvisor:${scope}:${event}`;
  let ch = channels.get(name);
  if (!ch) {
    ch = diagnostics_channel.channel(name);
    channels.set(name, ch);
  }
  return ch;
}

/** The arguments of {@link publish}: one tuple per event, so a payload is checked against its own key. */
type PublishArgs = {
  [K in ChannelKey]: [emitter: EventEmitter, key: K, build: () => Omit<ChannelPayloads[K], 'at'>, emitName?: string];
}[ChannelKey];

/** The diagnostics channel `threadvisor:<key>` of an event of the table (cached). */
export function channelOf(key: ChannelKey): diagnostics_channel.Channel {
  const i = key.indexOf(':');
  return eventChannel(key.slice(0, i), key.slice(i + 1));
}

/**
 * Publishes one event on its diagnostics channel (`threadvisor:<key>`, see `channelName` in
 * events.ts) and on `emitter`. The payload is built lazily: when nobody listens on either side,
 * `build` is not called at all.
 *
 * `emitName` is the event name used on `emitter` (default: `key`); a supervisor and a worker
 * host emit their events unprefixed, e.g. `publish(sup, 'supervisor:stopped', build, 'stopped')`.
 */
export function publish(...args: PublishArgs): void {
  const [emitter, key, build, emitName = key] = args;
  publishUnchecked(emitter, key, build, emitName);
}

/**
 * {@link publish} for an emitter that checks its payloads with its own typed wrapper (an
 * instance's status record, a manager): the key must still be one of the table.
 */
export function publishUnchecked(emitter: EventEmitter, key: ChannelKey, build: () => object, emitName: string = key): void {
  const ch = channelOf(key);
  const local = emitter.listenerCount(emitName) > 0;
  if (!local && !ch.hasSubscribers) return;
  const payload: EventPayload = { ...build(), at: Date.now() };
  if (ch.hasSubscribers) ch.publish(payload);
  if (local) emitter.emit(emitName, payload);
}

/**
 * {@link publish} for hot paths: the channel is resolved once by the caller (no name built and
 * looked up per event) and the payload is not copied: `build` must return a fresh object, whose
 * `at` is set in place.
 */
export function publishOn(ch: diagnostics_channel.Channel, emitter: EventEmitter, emitName: string, build: () => Record<string, unknown>): void {
  const local = emitter.listenerCount(emitName) > 0;
  if (!local && !ch.hasSubscribers) return;
  const payload = build() as Record<string, unknown> & { at: number };
  payload.at = Date.now();
  if (ch.hasSubscribers) ch.publish(payload);
  if (local) emitter.emit(emitName, payload);
}

/** Paths redacted from every log line of the library (credentials never reach a log). */
export const REDACT_PATHS = [
  'credentials',
  '*.credentials',
  'instance.credentials',
  'token',
  '*.token',
  'password',
  '*.password',
  'secret',
  '*.secret',
  'apiKey',
  '*.apiKey',
];

/**
 * The logger used when none is given: JSON lines to stderr (fd 2, so they never mix into the
 * application's stdout) at `warn` (or `THREADVISOR_LOG_LEVEL`), credentials redacted.
 */
export function defaultLogger(): Logger {
  return pino(
    {
      name: 'threadvisor',
      level: process.env.THREADVISOR_LOG_LEVEL ?? 'warn',
      redact: { paths: REDACT_PATHS, censor: '[Redacted]' },
    },
    pino.destination(2),
  );
}
