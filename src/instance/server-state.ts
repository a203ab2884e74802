/**
 * The mutable state of one {@link InstanceServer}, in one object that the server passes to its
 * helpers: the frozen record, its credential values, the logger, the options, the live status
 * and every counter. `createServerState` validates the record and the options and builds it.
 *
 * @packageDocumentation
 */
import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { z } from 'zod';
import { defaultLogger } from '../telemetry.js';
import { loggerSchema, parseConfig } from '../validate.js';
import { MAX_TIMER_MS } from '../wire/timers.js';
import { collectSecrets, parseInstance, type Instance, type InstanceInput } from './record.js';
import type { InstanceStatus } from './state-machine.js';
import type { InstanceServerOptions, ProbeRecord, RestartClass } from './server-types.js';

const optionsSchema = z
  .object({
    maxConsecutiveFailures: z.number().int().min(1).default(10),
    stableAfterMs: z.number().int().min(0).max(MAX_TIMER_MS).default(5000),
    logger: loggerSchema.optional(),
    queueDepth: z.custom<() => number>((v) => typeof v === 'function', 'expected a function').optional(),
  })
  .strict();

let sharedDefaultLogger: Logger | undefined;

/** Everything an instance server knows; the server and its helpers read and update it in place. */
export interface ServerState {
  /** The server itself: where events are published. */
  readonly events: EventEmitter;
  readonly instance: Instance;
  readonly secrets: readonly string[];
  readonly log: Logger;
  readonly maxConsecutiveFailures: number;
  readonly queueDepth: (() => number) | undefined;
  readonly startedAt: number;
  status: InstanceStatus;
  connectedAt: number | null;
  consecutiveFailures: number;
  readonly stableAfterMs: number;
  /** When the last failure was counted (ms epoch), or null. */
  lastFailureAt: number | null;
  lastError: string | null;
  lastRestartClass: RestartClass | null;
  lastRestartReason: string | null;
  reconnectAttempt: number;
  restartCount: number;
  quarantined: boolean;
  lastProbe: ProbeRecord | null;
  invalidTransitions: number;
  ignoredAfterStop: number;
  startedEmitted: boolean;
  stoppedEmitted: boolean;
}

/**
 * Validates the record (its `status` is ignored: a server always begins at `starting`) and the
 * options, and builds the state of a new server publishing on `events`.
 *
 * @throws {@link InvalidConfigError} when the record or the options are invalid.
 */
export function createServerState(
  events: EventEmitter,
  instance: Instance | InstanceInput,
  options: InstanceServerOptions,
): ServerState {
  const parsed = parseInstance(instance);
  const opts = parseConfig('instance server options', optionsSchema, options);
  const frozen: Instance = Object.freeze({
    ...parsed,
    credentials: Object.freeze({ ...parsed.credentials }),
    settings: Object.freeze({ ...parsed.settings }),
  });
  const secrets = collectSecrets(parsed.credentials);
  const base = opts.logger ?? (sharedDefaultLogger ??= defaultLogger());
  const log = base.child({ component: 'instance', instanceId: parsed.id, channelType: parsed.channelType });
  return {
    events,
    instance: frozen,
    secrets,
    log,
    maxConsecutiveFailures: opts.maxConsecutiveFailures,
    stableAfterMs: opts.stableAfterMs,
    queueDepth: opts.queueDepth,
    startedAt: Date.now(),
    status: 'starting',
    connectedAt: null,
    consecutiveFailures: 0,
    lastFailureAt: null,
    lastError: null,
    lastRestartClass: null,
    lastRestartReason: null,
    reconnectAttempt: 0,
    restartCount: 0,
    quarantined: false,
    lastProbe: null,
    invalidTransitions: 0,
    ignoredAfterStop: 0,
    startedEmitted: false,
    stoppedEmitted: false,
  };
}
