import type { Logger } from 'pino';
import { z } from 'zod';
import { InvalidConfigError } from './errors.js';

/** Zod schema of a pino logger option (anything with `child`), shared by every options schema. */
export const loggerSchema = z.custom<Logger>(
  (v) => typeof v === 'object' && v !== null && typeof (v as Logger).child === 'function',
  'expected a pino logger',
);

/** One bad field: its dotted path and what is wrong with it. */
export interface ConfigIssue {
  path: string;
  message: string;
}

function joinPath(prefix: string, path: ReadonlyArray<PropertyKey>): string {
  const parts = path.map((p) => String(p));
  return [prefix, ...parts].filter((p) => p.length > 0).join('.');
}

/**
 * Flattens zod issues into `{ path, message }` pairs. Unions are resolved to the branch whose type
 * matched (so `heartbeat: { intervalMs: -1 }` reports `heartbeat.intervalMs`, not just `heartbeat`),
 * and unknown keys are reported one path each.
 */
export function flattenIssues(issues: ReadonlyArray<z.core.$ZodIssue>, prefix = ''): ConfigIssue[] {
  const out: ConfigIssue[] = [];
  for (const issue of issues) {
    const here = joinPath(prefix, issue.path);
    if (issue.code === 'unrecognized_keys') {
      for (const key of issue.keys) out.push({ path: joinPath(here, [key]), message: 'unknown option' });
    } else if (issue.code === 'invalid_union') {
      // A branch "matched the type" when none of its issues is a type mismatch at its own root.
      const matched = issue.errors.filter(
        (branch) =>
          branch.length > 0 &&
          !branch.some((i) => i.path.length === 0 && (i.code === 'invalid_type' || i.code === 'invalid_value')),
      );
      const first = matched[0];
      if (matched.length === 1 && first) out.push(...flattenIssues(first, here));
      else out.push({ path: here, message: issue.message });
    } else {
      out.push({ path: here, message: issue.message });
    }
  }
  return out;
}

/**
 * The issues of a failed parse as one line, `path: message; ...` (`(root)` for the value itself):
 * for logs and error reasons about data that is not an option (a worker's message, a checkpoint).
 */
export function describeIssues(issues: ReadonlyArray<z.core.$ZodIssue>): string {
  return flattenIssues(issues)
    .map((i) => `${i.path || '(root)'}: ${i.message}`)
    .join('; ');
}

/**
 * The one validation helper of the project: parses `value` with `schema` and throws
 * {@link InvalidConfigError} naming `what` and listing every bad field path (see
 * {@link flattenIssues}). Every option and argument check goes through it.
 */
export function parseConfig<S extends z.ZodType>(what: string, schema: S, value: unknown): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw new InvalidConfigError(what, flattenIssues(result.error.issues));
}
