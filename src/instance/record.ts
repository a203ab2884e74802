/**
 * The Instance record (the Elixir `Jido.Messaging.Instance` struct) and the credential redaction
 * helpers every output path goes through.
 *
 * Redaction policy (one rule for health, status, events, logs and `getInstance`):
 * - `credentials` keep their **keys** but every value becomes the marker `'[Redacted]'` (the same
 *   censor pino uses for `REDACT_PATHS` in `src/telemetry.ts`). Keys say which secrets are configured, which helps
 *   debugging; they are not secret themselves.
 * - Every credential **string value of 4 characters or more** (nested values included) is replaced
 *   by `'[Redacted]'` wherever it appears inside free text: error messages, stacks, codes, reasons,
 *   settings strings, event metadata. So are its encoded forms (see {@link collectSecrets}):
 *   URI-encoded, JSON-escaped, base64 (standard and url-safe, alone or inside longer base64 data
 *   such as a `Basic` authorization header), and the case variants of each (matching ignores
 *   case). Shorter values and non-string values (numbers, booleans) are not searched for: too
 *   short to be secrets and too likely to collide with ordinary text.
 *
 * @packageDocumentation
 */
import { Buffer } from 'node:buffer';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { parseConfig } from '../validate.js';
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
  return parseConfig('instance', instanceSchema, input);
}

/**
 * Shortest base64 fragment searched for: a credential base64-encoded inside longer data leaves
 * only its middle characters fixed, and fragments shorter than this would collide with ordinary
 * text.
 */
const MIN_ENCODED_LENGTH = 8;

/** Keys whose value names a user, paired with every secret for `Basic` authorization forms. */
const USER_KEY = /^(?:user(?:_?name)?|login|account|email|client_?id|key_?id|access_?key_?id)$/i;

/**
 * The base64 characters of `bytes` that stay the same wherever the bytes sit inside longer
 * base64-encoded data: one fragment per alignment (0, 1 or 2 bytes before them in their 3-byte
 * group), without the edge characters that mix in the bits of neighbouring bytes.
 */
function base64Fragments(bytes: Buffer, encoding: 'base64' | 'base64url'): string[] {
  const out: string[] = [];
  for (let lead = 0; lead < 3; lead++) {
    const total = lead + bytes.length;
    const encoded = Buffer.concat([Buffer.alloc(lead), bytes]).toString(encoding);
    const from = [0, 2, 3][lead] as number;
    const to = Math.floor(total / 3) * 4 + ([0, 1, 2][total % 3] as number);
    if (to - from >= MIN_ENCODED_LENGTH) out.push(encoded.slice(from, to));
  }
  return out;
}

/** `value` as it appears inside a URI component and inside a JSON string. */
function textual(value: string): string[] {
  return [value, encodeURIComponent(value), JSON.stringify(value).slice(1, -1)];
}

/**
 * Every form in which the credentials may leak into text, longest first (so a secret containing
 * another is replaced whole). The secrets are the credential string values of at least
 * {@link MIN_SECRET_LENGTH} characters, nested values included; for each of them:
 *
 * - the value, its `encodeURIComponent` form and its JSON-escaped form;
 * - its base64, standard (padded and not) and url-safe, and the fragments of it that stay fixed
 *   when it is encoded inside longer data (a `Basic` header with any user, a JSON body), each
 *   also URI-encoded and JSON-escaped;
 * - the base64 of `user:secret` for every user-like value (`user`, `username`, `login`,
 *   `clientId`, … keys) of the credentials: `Basic` authorization headers.
 *
 * Case variants need no entry of their own: {@link scrubWith} matches ignoring case. The list is
 * meant for {@link scrubWith} / {@link scrubValue} / {@link renderReason}, which compile it into one
 * regular expression on first use; compute it once per set of credentials.
 */
export function collectSecrets(credentials: Readonly<Record<string, unknown>>): string[] {
  const values = new Set<string>();
  const users = new Set<string>();
  const seen = new WeakSet<object>();
  const walk = (v: unknown, key: string | undefined): void => {
    if (typeof v === 'string') {
      if (v.length >= MIN_SECRET_LENGTH) values.add(v);
      if (v.length > 0 && key !== undefined && USER_KEY.test(key)) users.add(v);
    } else if (typeof v === 'object' && v !== null && !seen.has(v)) {
      seen.add(v);
      if (Array.isArray(v)) for (const x of v) walk(x, undefined);
      else for (const [k, x] of Object.entries(v)) walk(x, k);
    }
  };
  walk(credentials, undefined);
  const forms = new Map<string, string>(); // lower-cased form → form: matching ignores case anyway
  const add = (form: string): void => {
    if (form.length >= MIN_SECRET_LENGTH) forms.set(form.toLowerCase(), form);
  };
  const addEncoded = (plain: string): void => {
    const bytes = Buffer.from(plain, 'utf8');
    const std = bytes.toString('base64');
    const encoded = [std, std.replace(/=+$/, ''), bytes.toString('base64url')];
    for (const enc of ['base64', 'base64url'] as const) encoded.push(...base64Fragments(bytes, enc));
    for (const e of encoded) if (e.length >= MIN_ENCODED_LENGTH) for (const t of textual(e)) add(t);
  };
  for (const secret of values) {
    for (const t of textual(secret)) add(t);
    addEncoded(secret);
    for (const user of users) if (user !== secret) addEncoded(`${user}:${secret}`);
  }
  return [...forms.values()].sort((a, b) => b.length - a.length);
}

/** Compiled forms of a secrets list, rebuilt when the list changed length (it should not change). */
const compiled = new WeakMap<readonly string[], { readonly length: number; readonly pattern: RegExp | null }>();

const REGEXP_SPECIAL = /[\\^$.*+?()[\]{}|/]/g;

/** The one case-insensitive pattern matching any of `secrets`, longest alternative first. */
function patternOf(secrets: readonly string[]): RegExp | null {
  const hit = compiled.get(secrets);
  if (hit !== undefined && hit.length === secrets.length) return hit.pattern;
  const alternatives = secrets
    .filter((s) => typeof s === 'string' && s.length > 0)
    .sort((a, b) => b.length - a.length)
    .map((s) => s.replace(REGEXP_SPECIAL, '\\$&'));
  const pattern = alternatives.length === 0 ? null : new RegExp(alternatives.join('|'), 'gi');
  compiled.set(secrets, { length: secrets.length, pattern });
  return pattern;
}

/**
 * Replaces every occurrence of each of `secrets` (as produced by {@link collectSecrets}), in any
 * letter case, in `text`, in a single pass (so the marker is never scrubbed again). The list is
 * compiled into one regular expression on first use and cached for the array.
 */
export function scrubWith(text: string, secrets: readonly string[]): string {
  if (secrets.length === 0 || text.length === 0) return text;
  const pattern = patternOf(secrets);
  return pattern === null ? text : text.replace(pattern, REDACTED);
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
      const e: Record<string, unknown> = { name: scrubWith(v.name, secrets), message: scrubWith(v.message, secrets) };
      if (typeof code === 'string') e.code = scrubWith(code, secrets);
      else if (typeof code === 'number') e.code = code;
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
