/**
 * Loading a channel module in an instance worker: its **default export** (required), validated
 * with `checkChannelDefinition`, and its `type` checked against the instance's `channelType`.
 * Each module is imported once per worker (instances of one channel type share it).
 *
 * @packageDocumentation
 */
import { monotonicMs } from '../../src/wire/clock.js';
import { importModule } from '../import-module.js';
import { checkChannelDefinition, checkChannelHandlers, isChannelFactory, type ChannelFactory, type ChannelInstance } from '../../src/channel.js';
import { clip, describe, get } from './util.js';
import type { AnyChannel } from './context.js';

/**
 * A loaded channel, or why it could not be used (the reason names the member or the load error).
 * `importMs` is how long this worker took to import the module (each worker imports it once).
 */
export type LoadedChannel = { ok: true; channel: AnyChannel | ChannelFactory; importMs: number } | { ok: false; reason: string };

type Imported = { ok: true; def: unknown; importMs: number } | { ok: false; reason: string };

const CALLBACKS = ['connect', 'disconnect', 'send', 'poll', 'listen', 'probe', 'classify'] as const;

/**
 * One instance's channel: a definition as it is, or what a factory's `create` makes for
 * `instance` (checked, its methods bound to it, so a class instance works too). A throw or an
 * invalid result is the reason the instance cannot start.
 */
export function instantiate(channel: AnyChannel | ChannelFactory, instance: ChannelInstance): { ok: true; channel: AnyChannel } | { ok: false; reason: string } {
  if (!isChannelFactory(channel)) return { ok: true, channel };
  let handlers: unknown;
  try {
    handlers = channel.create(instance);
  } catch (err) {
    return { ok: false, reason: clip(`channel ${channel.type}: create threw: ${describe(err)}`) };
  }
  const issues = checkChannelHandlers(handlers);
  if (issues.length > 0) return { ok: false, reason: clip(`channel ${channel.type}: create returned an invalid channel: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`) };
  const made: Record<string, unknown> = { type: channel.type };
  for (const key of CALLBACKS) {
    const fn = get(handlers, key);
    if (typeof fn === 'function') made[key] = (fn as (...args: unknown[]) => unknown).bind(handlers);
  }
  return { ok: true, channel: made as unknown as AnyChannel };
}

/** One worker's channel modules, by URL. */
export class ChannelModules {
  readonly #modules = new Map<string, Promise<Imported>>();

  /** The channel of module `url` for an instance of `channelType`. Never rejects. */
  async load(url: string, channelType: string): Promise<LoadedChannel> {
    const mod = await this.#imported(url);
    if (!mod.ok) return mod;
    const channel = mod.def as AnyChannel | ChannelFactory;
    if (channel.type !== channelType) {
      return { ok: false, reason: `channel module ${url} has type '${channel.type}', but the instance's channelType is '${channelType}'` };
    }
    return { ok: true, channel, importMs: mod.importMs };
  }

  /** Imports module `url` ahead of need (once). Never rejects: a failure is answered by `load`. */
  async preload(url: string): Promise<void> {
    await this.#imported(url);
  }

  #imported(url: string): Promise<Imported> {
    let pending = this.#modules.get(url);
    if (!pending) {
      pending = this.#import(url);
      this.#modules.set(url, pending);
    }
    return pending;
  }

  async #import(url: string): Promise<Imported> {
    let mod: unknown;
    const t0 = monotonicMs();
    try {
      mod = await importModule(url);
    } catch (err) {
      return { ok: false, reason: clip(`channel module ${url} failed to load: ${describe(err)}`) };
    }
    const def = get(mod, 'default');
    if (def === undefined) return { ok: false, reason: `channel module ${url} has no default export (expected defineChannel({...}))` };
    const issues = checkChannelDefinition(def);
    if (issues.length > 0) {
      return { ok: false, reason: clip(`channel module ${url} is invalid: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`) };
    }
    return { ok: true, def, importMs: monotonicMs() - t0 };
  }
}
