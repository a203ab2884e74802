import type { Logger } from 'pino';
import { z } from 'zod';
import { InvalidConfigError } from './errors.js';

/** Zod schema of a pino logger option (anything with `child`), shared by every options schema. */
export const loggerSchema = z.custom<Logger>(
  (v) => typeof v === 'object' && v !== null && typeof (v as Logger).child === 'function',
  'expected a pino logger',
);

/**
 * Parses `input` with `schema`; on failure throws {@link InvalidConfigError} naming `what` and
 * listing every bad field path. The one place public options meet zod.
 */
export function parseOrThrow<S extends z.ZodType>(schema: S, input: unknown, what: string): z.output<S> {
  const r = schema.safeParse(input);
  if (r.success) return r.data;
  throw new InvalidConfigError(
    what,
    r.error.issues.map((i) => ({ path: i.path.map(String).join('.'), message: i.message })),
  );
}
