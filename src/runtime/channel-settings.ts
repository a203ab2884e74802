/**
 * A channel's `settingsSchema`, read on the main thread so that `startInstance` can refuse bad
 * settings with `invalid_config` before any worker is spawned. The channel module is imported
 * here once per URL (the promise is cached for the process, as `import()` caches the module);
 * a module that fails to load, or takes longer than the start budget, is left to the worker,
 * which reports it as `channel_invalid` as before.
 *
 * @packageDocumentation
 */
import type { z } from 'zod';
import type { SettingsSchema } from '../channel.js';
import { InvalidConfigError } from '../errors.js';
import { flattenIssues } from '../validate.js';

/** Per channel URL: the pending load, and its result once settled (read synchronously then). */
const schemas = new Map<string, { readonly pending: Promise<SettingsSchema | undefined>; settled: boolean; schema: SettingsSchema | undefined }>();

function isSchema(v: unknown): v is SettingsSchema {
  return typeof v === 'object' && v !== null && typeof (v as { safeParse?: unknown }).safeParse === 'function';
}

async function load(url: string): Promise<SettingsSchema | undefined> {
  try {
    const mod = (await import(url)) as { default?: { settingsSchema?: unknown } };
    const schema = mod.default?.settingsSchema;
    return isSchema(schema) ? schema : undefined;
  } catch {
    return undefined; // the worker loads it again and reports why it cannot be used
  }
}

function entry(url: string): { readonly pending: Promise<SettingsSchema | undefined>; settled: boolean; schema: SettingsSchema | undefined } {
  let e = schemas.get(url);
  if (e === undefined) {
    const loaded: { pending: Promise<SettingsSchema | undefined>; settled: boolean; schema: SettingsSchema | undefined } = {
      pending: Promise.resolve(undefined),
      settled: false,
      schema: undefined,
    };
    loaded.pending = load(url).then((schema) => {
      loaded.settled = true;
      loaded.schema = schema;
      return schema;
    });
    e = loaded;
    schemas.set(url, e);
  }
  return e;
}

/**
 * The `settingsSchema` of the channel module at `url` when its module was already read:
 * `{ schema }` (`schema` is `undefined` when it has none or could not be loaded), or `undefined`
 * when it was not read yet (its load is started then: see {@link channelSettingsSchema}).
 */
export function knownSettingsSchema(url: string): { schema: SettingsSchema | undefined } | undefined {
  const e = entry(url);
  return e.settled ? { schema: e.schema } : undefined;
}

/** The `settingsSchema` of the channel module at `url`, or `undefined` (none, or it could not be read within `budgetMs`). */
export async function channelSettingsSchema(url: string, budgetMs: number): Promise<SettingsSchema | undefined> {
  const { pending } = entry(url);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(resolve, budgetMs, undefined);
    timer.unref();
  });
  try {
    return await Promise.race([pending, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Checks `settings` with the channel's schema; throws {@link InvalidConfigError} (`what`) naming
 * every bad field as `settings.<path>`. The settings are not replaced by what the schema returns:
 * the channel sees them as given.
 */
export function checkSettings(schema: SettingsSchema, settings: unknown, what: string): void {
  let result: ReturnType<SettingsSchema['safeParse']>;
  try {
    result = schema.safeParse(settings);
  } catch (err) {
    const name = err instanceof Error ? err.name : 'error';
    throw new InvalidConfigError(what, [{ path: 'settings', message: `the channel's settingsSchema threw (${name})` }]);
  }
  if (result.success) return;
  const issues = (result.error as { issues?: unknown } | undefined)?.issues;
  if (!Array.isArray(issues) || issues.length === 0) {
    throw new InvalidConfigError(what, [{ path: 'settings', message: "rejected by the channel's settingsSchema" }]);
  }
  throw new InvalidConfigError(what, flattenIssues(issues as z.core.$ZodIssue[], 'settings'));
}
