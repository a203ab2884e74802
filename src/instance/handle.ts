/**
 * What `Runtime.startInstance` and `Runtime.whereis` hand out: a read-only view of one instance.
 * It reads the instance's {@link InstanceServer} (the single source of truth for its status,
 * counters and events) and lets you listen to its events, but changes nothing: state changes go
 * through the `Runtime` (`restartInstance`, `stopInstance`, …), which owns the status machine.
 *
 * @packageDocumentation
 */
import type { RedactedInstance } from './record.js';
import type { InstanceStatus } from './state-machine.js';
import type { InstanceHealth } from '../runtime/runtime.js';
import type { InstanceServer, InstanceStatusInfo, RestartClass } from './server.js';
import type { InstanceHandleEvents } from '../events.js';

/** A listener of instance event `K` (`instance:connected`, …); its payload is in {@link InstanceHandleEvents}. */
export type InstanceListener<K extends keyof InstanceHandleEvents = keyof InstanceHandleEvents> = (payload: InstanceHandleEvents[K]) => void;

/** A read-only view of one instance (see the module notes). */
export class InstanceHandle {
  readonly #server: InstanceServer;
  readonly #health: () => InstanceHealth;

  /** @internal Built by the runtime; `health` gives its full snapshot (worker and delivery included). */
  constructor(server: InstanceServer, health: () => InstanceHealth) {
    this.#server = server;
    this.#health = health;
  }

  /** The instance's id. */
  get instanceId(): string {
    return this.#server.instanceId;
  }
  /** Its human-readable name. */
  get name(): string {
    return this.#server.name;
  }
  /** Its channel type. */
  get channelType(): string {
    return this.#server.channelType;
  }
  /** Its status now. */
  get currentStatus(): InstanceStatus {
    return this.#server.currentStatus;
  }
  /** When it last connected (ms epoch), or null. */
  get connectedAt(): number | null {
    return this.#server.connectedAt;
  }
  /** Failures in a row (see `maxConsecutiveFailures`). */
  get consecutiveFailures(): number {
    return this.#server.consecutiveFailures;
  }
  /** The last error (scrubbed), or null. */
  get lastError(): string | null {
    return this.#server.lastError;
  }
  /** Class of the last restart, or null. */
  get lastRestartClass(): RestartClass | null {
    return this.#server.lastRestartClass;
  }
  /** Reason of the last restart (scrubbed), or null. */
  get lastRestartReason(): string | null {
    return this.#server.lastRestartReason;
  }
  /** The reconnect attempt in progress (0 when none). */
  get reconnectAttempt(): number {
    return this.#server.reconnectAttempt;
  }
  /** Restarts so far. */
  get restartCount(): number {
    return this.#server.restartCount;
  }
  /** When it was registered (ms epoch). */
  get startedAt(): number {
    return this.#server.startedAt;
  }
  /** Whether it was stopped (`instance:stopped` was emitted). */
  get stopped(): boolean {
    return this.#server.stoppedEmitted;
  }

  /** Its record (id, name, channel type, settings) with every credential redacted, and its status. */
  getInstance(): RedactedInstance {
    return this.#server.getInstance();
  }

  /** Its status map (the same as `rt.status(id)`). */
  status(): InstanceStatusInfo {
    return this.#server.status();
  }

  /** Its health snapshot, worker liveness and delivery included (the same as `rt.health(id)`). */
  health(): InstanceHealth {
    return this.#health();
  }

  /** Listens to one of its events (`instance:connected`, …). */
  on<K extends keyof InstanceHandleEvents>(event: K, listener: InstanceListener<K>): this {
    this.#server.on(event, listener);
    return this;
  }

  /** Listens to the next one of its events. */
  once<K extends keyof InstanceHandleEvents>(event: K, listener: InstanceListener<K>): this {
    this.#server.once(event, listener);
    return this;
  }

  /** Stops listening. */
  off<K extends keyof InstanceHandleEvents>(event: K, listener: InstanceListener<K>): this {
    this.#server.off(event, listener);
    return this;
  }
}
