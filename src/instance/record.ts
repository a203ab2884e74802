/**
 * The Instance record (the Elixir `Jido.Messaging.Instance` struct) and the credential redaction
 * helpers every output path goes through.
 *
 * Redaction policy (one rule for health, status, events, logs and `getInstance`):
 * - `credentials` keep their **keys** but every value becomes the marker `'[Redacted]'` (the same
 *   censor pino uses for `REDACT_PATHS` in `src/telemetry.ts`). Keys say which secrets are configured, which helps
 *   debugging; they are not secret themselves.
 * - Every credential **string value of 4 characters or more** (nested values included) is replaced
 *   by `'[Redacted]'` wherever it appears inside free text: error messages, reasons, settings
 *   strings, event metadata. Its URI-encoded and JSON-escaped forms are replaced too. Shorter
 *   values and non-string values (numbers, booleans) are not searched for: too short to be secrets
 *   and too likely to collide with ordinary text.
 *
 * @packageDocumentation
 */
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { parseOrThrow } from '../validate.js';
import { INSTANCE_STATUSES } from './state-machine.js';

/** The marker that replaces a secret in any output. Same as the pino censor of the library. */
export const REDACTED = '[Redacted]';

/** Shortest credential string that is searched for (and replaced) inside free text. */
export const MIN_SECRET_LENGTH = 4;

/** Longest rendered reason kept in status, health, events and logs; longer ones are cut. */
export const MAX_REASON_LENGTH = 1024;

/** zod schema of an instance status. */
export const instanceStatusSchema = z.enum(INSTANCE_STATUSES);

/**
 * zod schema of the Instance record. Unknown keys are rejected (a misspelt `credential` must not
 * silently drop the credentials).
 *
 * - `id`: non-empty string; `crypto.randomUUID()` when absent.
 * - `name`, `channelType`: non-empty strings.
 * - `credentials`, `settings`: plain records, default `{}`.
 * - `status`: default `'starting'` (the live status is owned by `InstanceServer`).
 * - `insertedAt`: ms epoch, default `Date.now()`.
 */
export const instanceSchema = z
  .object({
    id: z.string().min(1).default(() => randomUUID()),
    name: z.string().min(1),
    channelType: z.string().min(1),
    credentials: z.record(z.string(), z.unknown()).default(() => ({})),
    settings: z.record(z.string(), z.unknown()).default(() => ({})),
    status: instanceStatusSchema.default('starting'),
    insertedAt: z.number().int().nonnegative().default(() => Date.now()),
  })
  .strict();

/** A parsed Instance record (defaults filled in). */
export type Instance = z.output<typeof instanceSchema>;

/** What {@link parseInstance} accepts: `id`, `credentials`, `settings`, `status`, `insertedAt` optional. */
export type InstanceInput = z.input<typeof instanceSchema>;

/**
 * An Instance record safe for output: every credential value replaced by `'[Redacted]'` and
 * credential strings scrubbed from settings.
 */
export type RedactedInstance = Omit<Instance, 'credentials'> & {
  readonly credentials: Readonly<Record<string, typeof REDACTED>>;
};

/**
 * Parses and validates an Instance record, filling defaults.
 *
 * @throws {@link InvalidConfigError} listing every bad field path (e.g. `name`, `credentials`).
 */
export function parseInstance(input: unknown): Instance {
  return parseOrThrow(instanceSchema, input, 'instance');
}

/**
 * Every credential string value of at least {@link MIN_SECRET_LENGTH} characters, nested values
 * included, longest first (so a secret containing another is replaced whole).
 */
export function collectSecrets(credentials: Readonly<Record<string, unknown>>): string[] {
  const found = new Set<string>();
  const seen = new WeakSet<object>();
  const walk = (v: unknown): void => {
    if (typeof v === 'string') {
      if (v.length >= MIN_SECRET_LENGTH) found.add(v);
    } else if (typeof v === 'object' && v !== null && !seen.has(v)) {
      seen.add(v);
      for (const x of Array.isArray(v) ? v : Object.values(v)) walk(x);
    }
  };
  walk(credentials);
  const all = new Set<string>();
  for (const s of found) {
    all.add(s);
    all.add(encodeURIComponent(s));
    all.add(JSON.stringify(s).slice(1, -1));
  }
  return [...all].filter((s) => s.length >= MIN_SECRET_LENGTH).sort((a, b) => b.length - a.length);
}

/** Replaces every occurrence of each of `secrets` (as produced by {@link collectSecrets}) in `text`. */
export function scrubWith(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) if (out.includes(s)) out = out.split(s).join(REDACTED);
  return out;
}

/**
 * Replaces every credential string value (length ≥ 4) occurring inside `text` with
 * `'[Redacted]'`. Use it on any free text that may echo a secret, e.g. an error message
 * (`Error: 401 for https://api.example/bot<token>/getMe`).
 */
export function scrubSecrets(text: string, credentials: Readonly<Record<string, unknown>>): string {
  return scrubWith(text, collectSecrets(credentials));
}

/**
 * A deep copy of `value` with every string scrubbed by `secrets`. Plain objects and arrays are
 * copied, `Error`s become `{ name, message, code? }`, functions and symbols are dropped, other
 * values (numbers, dates, …) are kept. Cycles become `'[Circular]'`.
 */
export function scrubValue(value: unknown, secrets: readonly string[]): unknown {
  const stack = new Set<object>();
  const walk = (v: unknown): unknown => {
    if (typeof v === 'string') return scrubWith(v, secrets);
    if (typeof v === 'function' || typeof v === 'symbol') return undefined;
    if (typeof v !== 'object' || v === null) return v;
    if (stack.has(v)) return '[Circular]';
    if (v instanceof Error) {
      const code = (v as { code?: unknown }).code;
      const e: Record<string, unknown> = { name: v.name, message: scrubWith(v.message, secrets) };
      if (typeof code === 'string' || typeof code === 'number') e.code = code;
      return e;
    }
    if (!Array.isArray(v) && Object.getPrototypeOf(v) !== Object.prototype && Object.getPrototypeOf(v) !== null) {
      return v;
    }
    stack.add(v);
    let out: unknown;
    if (Array.isArray(v)) out = v.map(walk);
    else {
      const o: Record<string, unknown> = {};
      for (const [k, x] of Object.entries(v)) {
        const w = walk(x);
        if (w !== undefined) o[k] = w;
      }
      out = o;
    }
    stack.delete(v);
    return out;
  };
  return walk(value);
}

/**
 * Renders any reason (an `Error`, a string, a code, a plain object) as one credential-free string
 * of at most {@link MAX_REASON_LENGTH} characters, or `null` for `null`/`undefined`.
 *
 * - string: itself; `Error`: `Name[code]: message` (`[code]` only when the error has one);
 * - plain object: its JSON (strings scrubbed before and after serialising); other values: `String(v)`.
 *
 * Secrets are scrubbed **before** cutting to length, so a cut can never leave half a secret.
 */
export function renderReason(reason: unknown, secrets: readonly string[]): string | null {
  if (reason === undefined || reason === null) return null;
  let text: string;
  if (typeof reason === 'string') text = reason;
  else if (reason instanceof Error) {
    const code = (reason as { code?: unknown }).code;
    const tag = typeof code === 'string' || typeof code === 'number' ? `[${code}]` : '';
    text = `${reason.name}${tag}: ${reason.message}`;
  } else if (typeof reason === 'object') {
    try {
      text = JSON.stringify(scrubValue(reason, secrets)) ?? String(reason);
    } catch {
      text = Object.prototype.toString.call(reason);
    }
  } else text = String(reason);
  text = scrubWith(text, secrets);
  return text.length > MAX_REASON_LENGTH ? `${text.slice(0, MAX_REASON_LENGTH - 1)}…` : text;
}

/**
 * A copy of `instance` safe for any output: each credential value replaced by `'[Redacted]'`
 * (keys kept), and credential strings scrubbed from `settings` (deep copy).
 */
export function redactInstance(instance: Instance): RedactedInstance {
  const secrets = collectSecrets(instance.credentials);
  const credentials: Record<string, typeof REDACTED> = {};
  for (const k of Object.keys(instance.credentials)) credentials[k] = REDACTED;
  return {
    ...instance,
    credentials,
    settings: scrubValue(instance.settings, secrets) as Record<string, unknown>,
  };
}
