/**
 * The control calls of a {@link WorkerHost}: the comlink proxies into the worker's `serve()` root
 * (its API methods by name, `control.stop`), the calls in flight with their deadlines, their
 * rejection when the worker dies, and the release of the proxies with the host.
 *
 * @packageDocumentation
 */
import type { MessagePort } from 'node:worker_threads';
import * as Comlink from 'comlink';
import { NotFoundError, TimeoutError, WorkerExitedError } from '../errors.js';
import { nodeEndpoint } from '../wire/host.js';
import { MAX_TIMER_MS } from '../wire/timers.js';
import type { ProvisionalExit } from './exit-classification.js';
import type { WorkerHostStats } from './host-types.js';
import type { HostTimers } from './host-timers.js';

/** The counters of {@link WorkerHostStats} the control calls keep. */
export type CallCounters = Pick<WorkerHostStats, 'calls' | 'callTimeouts' | 'callsRejectedOnExit' | 'pendingCalls'>;

/** The comlink-side view of what `serve()` exposes; calls are made by name, so it is kept loose. */
interface RemoteRoot {
  api: Comlink.ProxyMarked & Record<string, (...args: unknown[]) => Promise<unknown>>;
  control: Comlink.ProxyMarked & { stop(): Promise<void> };
}

interface PendingCall {
  readonly method: string;
  readonly reject: (err: Error) => void;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Whether a call's rejection is comlink failing to apply a method the worker's API does not have
 * (`api[method]` is undefined or not a function): a `TypeError` about `apply` thrown by comlink's
 * own frame, not by the method (a method's own `TypeError` has its own frame on top).
 */
function isMissingMethod(err: unknown): boolean {
  if (!(err instanceof Error) || err.name !== 'TypeError' || !/\bapply\b/.test(err.message)) return false;
  const top = err.stack?.split('\n').find((line) => line.trimStart().startsWith('at '));
  return top !== undefined && /[\\/]comlink[\\/]/.test(top);
}

/** Calls into one worker over its control port, and the comlink proxies they go through. */
export class ControlCalls {
  /** Held for the worker's whole life: a collected root proxy would release the endpoint. */
  readonly #remote: Comlink.Remote<RemoteRoot>;
  /**
   * comlink builds a new proxy on every property access, and each one waits in comlink's
   * FinalizationRegistry (holding the endpoint) until a cleanup task gets to it: the proxies a
   * host needs (`api`, its methods by name, `control.stop`) are made once and released with the
   * host (see {@link ControlCalls.releaseProxies}).
   */
  #api: RemoteRoot['api'] | undefined;
  readonly #methods = new Map<string, (...args: unknown[]) => Promise<unknown>>();
  #stop: (() => Promise<void>) | undefined;
  /** The host's timers: call deadlines are held there. */
  readonly #timers: HostTimers;
  readonly #pending = new Set<PendingCall>();

  #calls = 0;
  #callTimeouts = 0;
  #rejectedOnExit = 0;

  /** Wraps the main-thread end of the control channel with comlink. */
  constructor(port: MessagePort, timers: HostTimers) {
    this.#timers = timers;
    this.#remote = Comlink.wrap<RemoteRoot>(nodeEndpoint(port));
  }

  /** The call counters of {@link WorkerHost.stats}. */
  counters(): CallCounters {
    return {
      calls: this.#calls,
      callTimeouts: this.#callTimeouts,
      callsRejectedOnExit: this.#rejectedOnExit,
      pendingCalls: this.#pending.size,
    };
  }

  /** Calls currently in flight. */
  get pendingCount(): number {
    return this.#pending.size;
  }

  /**
   * Calls `method` of the worker's API with a deadline of `timeoutMs` (validated by the caller;
   * `Infinity` or beyond the timer range: none). Rejects with {@link TimeoutError} after the
   * deadline, {@link NotFoundError} when the API has no such method, and with the method's own
   * error as comlink rebuilds it.
   */
  call(timeoutMs: number, method: string, args: unknown[]): Promise<unknown> {
    const what = `call ${method}`;
    this.#calls++;
    return new Promise<unknown>((resolve, reject) => {
      const pending: PendingCall = { method, reject, timer: undefined };
      this.#pending.add(pending);
      if (Number.isFinite(timeoutMs) && timeoutMs <= MAX_TIMER_MS) {
        pending.timer = this.#timers.arm(() => {
          pending.timer = undefined;
          if (!this.#pending.delete(pending)) return;
          this.#callTimeouts++;
          reject(new TimeoutError(what, timeoutMs));
        }, timeoutMs);
      }
      const settle = (): boolean => {
        if (!this.#pending.delete(pending)) return false;
        this.#timers.disarm(pending.timer);
        return true;
      };
      let result: Promise<unknown>;
      try {
        result = this.#method(method)(...args);
      } catch (err) {
        result = Promise.reject(err);
      }
      result.then(
        (value) => {
          if (settle()) resolve(value);
        },
        (err: unknown) => {
          if (!settle()) return;
          if (isMissingMethod(err)) reject(new NotFoundError('worker method', method));
          else reject(err instanceof Error ? err : new Error(String(err)));
        },
      );
    });
  }

  #method(name: string): (...args: unknown[]) => Promise<unknown> {
    let fn = this.#methods.get(name);
    if (!fn) {
      this.#api ??= this.#remote.api as unknown as RemoteRoot['api'];
      fn = this.#api[name] as (...args: unknown[]) => Promise<unknown>;
      this.#methods.set(name, fn);
    }
    return fn;
  }

  /** Asks `serve()` to stop: runs the worker's `onStop` hook, then its thread ends. */
  stop(): Promise<void> {
    this.#stop ??= this.#remote.control.stop as unknown as () => Promise<void>;
    return this.#stop();
  }

  /** Rejects every call in flight with {@link WorkerExitedError}: the worker can no longer answer. */
  rejectAll(exit: ProvisionalExit): void {
    for (const pending of this.#pending) {
      this.#timers.disarm(pending.timer);
      this.#rejectedOnExit++;
      pending.reject(new WorkerExitedError(`call ${pending.method}`, exit));
    }
    this.#pending.clear();
  }

  /**
   * Releases the comlink proxies: comlink registers every proxy in a process-wide
   * FinalizationRegistry that holds the endpoint strongly (see {@link WorkerHost.#release}).
   */
  releaseProxies(): void {
    const proxies = [...this.#methods.values(), this.#api, this.#stop, this.#remote] as unknown as Array<{ [Comlink.releaseProxy]: () => void } | undefined>;
    this.#methods.clear();
    this.#api = undefined;
    this.#stop = undefined;
    for (const proxy of proxies) {
      try {
        // Unregisters the proxy; the release message it posts to the closed port goes nowhere.
        proxy?.[Comlink.releaseProxy]();
      } catch {
        // already released
      }
    }
  }
}
