/**
 * Failure classification: one documented table deciding whether a failure is `recoverable`
 * (reconnect with bounded backoff), `fatal` (retrying cannot help; restart with a fatal marker /
 * escalate) or `degraded` (keep running without the capability).
 *
 * The Elixir original has two disagreeing tables (Story-02: default recoverable; HEAD: default
 * fatal). threadvisor follows Story 00's intent — "transient → recoverable, misconfiguration →
 * fatal, unsupported/policy → degraded" — with **recoverable as the default**: an unknown error is
 * retried within the reconnect budget, which is bounded, so a wrong guess costs a few attempts
 * rather than a permanently dead instance.
 *
 * Precedence (first that applies wins):
 * 1. an explicit `class` property on the error (`ChannelError`, or any object/error with a valid
 *    `class`);
 * 2. the per-channel `custom` hook, when it returns a class;
 * 3. {@link CLASSIFICATION_TABLE}, rows in order, applied to the error and then to each link of
 *    its cause chain (`cause`, or `reason` of a plain object; at most {@link MAX_CAUSE_DEPTH}
 *    links), a deeper link's own explicit `class` also counting (e.g. `fetch failed` caused by
 *    `ECONNREFUSED`);
 * 4. otherwise `recoverable`.
 *
 * A bare string is read as a code (`'timeout'`, `'ECONNRESET'`, `'unsupported'`). Codes are
 * compared case-insensitively. Classification never throws.
 *
 * @packageDocumentation
 */
import type { FailureClass } from './errors.js';

export type { FailureClass } from './errors.js';

/** Every failure class. */
export const FAILURE_CLASSES: readonly FailureClass[] = Object.freeze(['recoverable', 'fatal', 'degraded'] as const);

/** The class of a failure nothing in the table matches. */
export const DEFAULT_FAILURE_CLASS: FailureClass = 'recoverable';

/** How many `cause` links are followed below the error itself. */
export const MAX_CAUSE_DEPTH = 5;

/**
 * A per-channel classification hook: returns a class for failures it knows, `undefined` to defer
 * to the table. A hook that throws or returns anything else is ignored.
 */
export type ClassifyHook = (err: unknown) => FailureClass | undefined;

/** What the table rows look at, extracted from one link of the error chain. */
export interface ErrorFacts {
  /** `code` (or the bare string), lower-cased. */
  readonly code: string | undefined;
  /** The error's `name` (e.g. `AbortError`), as is. */
  readonly name: string | undefined;
  /** HTTP status from `status`, `statusCode`, `response.status` or `response.statusCode`. */
  readonly status: number | undefined;
}

/** One row of {@link CLASSIFICATION_TABLE}. */
export interface ClassificationRow {
  /** Stable row id, also reported by {@link explainClassification}. */
  readonly id: string;
  /** Human-readable description of what the row matches (for docs). */
  readonly match: string;
  /** The class a matching failure gets. */
  readonly class: FailureClass;
  /** The predicate. */
  readonly test: (facts: ErrorFacts) => boolean;
}

const codes = (...list: string[]): ReadonlySet<string> => new Set(list);

/** Codes of misconfiguration and rejected credentials (fatal). */
export const FATAL_CODES = codes(
  'invalid_config',
  'invalid_configuration',
  'misconfigured',
  'invalid_credentials',
  'bad_credentials',
  'invalid_token',
  'unauthenticated',
  'authentication_failed',
  'unauthorized',
  'forbidden',
  'channel_invalid',
  'invalid_callback',
  'invalid_return',
  'invalid_request',
  'err_invalid_url',
);

/** Codes of unsupported operations and policy denials (degraded). */
export const DEGRADED_CODES = codes(
  'unsupported',
  'not_supported',
  'not_implemented',
  'unsupported_method',
  'unsupported_operation',
  'policy_denied',
  'media_policy_denied',
  'denied',
  'unauthorized_sender',
  'forbidden_sender',
);

/** Node.js socket / DNS error codes (recoverable); `UND_ERR_*` (undici) is matched by prefix. */
export const NETWORK_CODES = codes(
  'econnreset',
  'econnrefused',
  'econnaborted',
  'etimedout',
  'esockettimedout',
  'eai_again',
  'enotfound',
  'epipe',
  'enetunreach',
  'enetdown',
  'ehostunreach',
  'ehostdown',
  'eaddrnotavail',
  'err_socket_closed',
  'err_stream_premature_close',
);

/** Transient conditions named by channels or by threadvisor itself (recoverable). */
export const TRANSIENT_CODES = codes(
  'timeout',
  'abort_err',
  'network_error',
  'closed',
  'nxdomain',
  'disconnected',
  'temporary_unavailable',
  'unavailable',
  'rate_limited',
  'too_many_requests',
);

/**
 * The classification table, applied in order (first match wins) after the explicit `class` and
 * the custom hook. Exported as data so documentation and code cannot drift.
 */
export const CLASSIFICATION_TABLE: readonly ClassificationRow[] = Object.freeze([
  {
    id: 'fatal_code',
    match: `code is one of ${[...FATAL_CODES].join(', ')} (invalid config, bad credentials, channel_invalid)`,
    class: 'fatal',
    test: (f) => f.code !== undefined && FATAL_CODES.has(f.code),
  },
  {
    id: 'degraded_code',
    match: `code is one of ${[...DEGRADED_CODES].join(', ')} (unsupported / policy)`,
    class: 'degraded',
    test: (f) => f.code !== undefined && DEGRADED_CODES.has(f.code),
  },
  {
    id: 'network_code',
    match: `code is one of ${[...NETWORK_CODES].map((c) => c.toUpperCase()).join(', ')}, or starts with UND_ERR_`,
    class: 'recoverable',
    test: (f) => f.code !== undefined && (NETWORK_CODES.has(f.code) || f.code.startsWith('und_err_')),
  },
  {
    id: 'transient_code',
    match: `code is one of ${[...TRANSIENT_CODES].join(', ')} (threadvisor TimeoutError has code timeout)`,
    class: 'recoverable',
    test: (f) => f.code !== undefined && TRANSIENT_CODES.has(f.code),
  },
  {
    id: 'timeout_name',
    match: 'name is AbortError or TimeoutError (AbortSignal.timeout, fetch aborts)',
    class: 'recoverable',
    test: (f) => f.name === 'AbortError' || f.name === 'TimeoutError',
  },
  {
    id: 'http_auth',
    match: 'HTTP status 401 or 403 (credentials rejected)',
    class: 'fatal',
    test: (f) => f.status === 401 || f.status === 403,
  },
  {
    id: 'http_not_implemented',
    match: 'HTTP status 501 (the platform does not implement the operation)',
    class: 'degraded',
    test: (f) => f.status === 501,
  },
  {
    id: 'http_transient',
    match: 'HTTP status 408, 425, 429 or 5xx other than 501',
    class: 'recoverable',
    test: (f) =>
      f.status !== undefined && (f.status === 408 || f.status === 425 || f.status === 429 || (f.status >= 500 && f.status <= 599)),
  },
] satisfies ClassificationRow[]);

/** True when `v` is one of the {@link FAILURE_CLASSES}. */
export function isFailureClass(v: unknown): v is FailureClass {
  return typeof v === 'string' && (FAILURE_CLASSES as readonly string[]).includes(v);
}

const get = (o: unknown, k: string): unknown => {
  if (typeof o !== 'object' || o === null) return undefined;
  try {
    return (o as Record<string, unknown>)[k];
  } catch {
    return undefined;
  }
};

const asStatus = (v: unknown): number | undefined => {
  const n = typeof v === 'string' && /^\d{3}$/.test(v) ? Number(v) : v;
  return typeof n === 'number' && Number.isInteger(n) && n >= 100 && n <= 599 ? n : undefined;
};

/** Extracts the {@link ErrorFacts} of one link (an error, an object or a bare code string). */
export function errorFacts(link: unknown): ErrorFacts {
  if (typeof link === 'string') return { code: link.trim().toLowerCase(), name: undefined, status: undefined };
  const code = get(link, 'code');
  const name = get(link, 'name');
  const response = get(link, 'response');
  return {
    code: typeof code === 'string' ? code.toLowerCase() : undefined,
    name: typeof name === 'string' ? name : undefined,
    status:
      asStatus(get(link, 'status')) ??
      asStatus(get(link, 'statusCode')) ??
      asStatus(get(response, 'status')) ??
      asStatus(get(response, 'statusCode')),
  };
}

/** The result of {@link explainClassification}. */
export interface Classification {
  /** The class. */
  readonly class: FailureClass;
  /** Which rule decided: `explicit`, `custom`, a table row id, or `default`. */
  readonly rule: string;
  /** Chain depth of the link that decided (0 = the error itself). */
  readonly depth: number;
}

/** Classifies `err` and says which rule decided. See the module docs for the precedence. */
export function explainClassification(err: unknown, custom?: ClassifyHook): Classification {
  const own = get(err, 'class');
  if (isFailureClass(own)) return { class: own, rule: 'explicit', depth: 0 };
  if (custom) {
    try {
      const c = custom(err);
      if (isFailureClass(c)) return { class: c, rule: 'custom', depth: 0 };
    } catch {
      // a broken hook defers to the table
    }
  }
  const seen = new Set<unknown>();
  let link: unknown = err;
  for (let depth = 0; depth <= MAX_CAUSE_DEPTH && link !== undefined && link !== null && !seen.has(link); depth++) {
    seen.add(link);
    const explicit = depth > 0 ? get(link, 'class') : undefined;
    if (isFailureClass(explicit)) return { class: explicit, rule: 'explicit', depth };
    const facts = errorFacts(link);
    for (const row of CLASSIFICATION_TABLE) if (row.test(facts)) return { class: row.class, rule: row.id, depth };
    const cause = get(link, 'cause');
    link = cause !== undefined || link instanceof Error ? cause : get(link, 'reason');
  }
  return { class: DEFAULT_FAILURE_CLASS, rule: 'default', depth: 0 };
}

/**
 * Classifies a failure as `recoverable`, `fatal` or `degraded`.
 *
 * @param err - anything a channel or the runtime failed with (an `Error`, a code string, an
 *   object with `code` / `status` / `class`).
 * @param custom - optional per-channel hook consulted after the error's own `class` and before the
 *   table.
 */
export function classifyError(err: unknown, custom?: ClassifyHook): FailureClass {
  return explainClassification(err, custom).class;
}
