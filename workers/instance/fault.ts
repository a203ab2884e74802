/**
 * Fault attribution in a shared worker: every channel callback of a hosted instance runs in an
 * async context that carries its instance number, so an uncaught exception or an unhandled
 * rejection that escapes it (from a timer, an immediate, a promise the channel started) is known
 * to be that instance's. The worker host then restarts that instance alone (see
 * `../instance-worker.ts`). What carries no instance number (an error of the worker's own code,
 * a `queueMicrotask` callback, which does not keep its async context) ends the worker, as it
 * would without attribution.
 *
 * @packageDocumentation
 */
import { AsyncLocalStorage } from 'node:async_hooks';

/** The instance number whose callback is running (undefined outside every instance's callbacks). */
export const owner = new AsyncLocalStorage<number>();

/**
 * Whether faults are attributed here ({@link installFaultHandlers} ran: a shared worker). Until
 * then the async context is not entered at all: on Node 20 a context once entered puts a hook on
 * every promise the thread makes, which a dedicated worker, where any escaped error ends the
 * worker, has no use for.
 */
let attributing = false;

/** Runs `fn` on behalf of instance `iid`: what it schedules carries the number too (in a worker that attributes faults). */
export function runAs<T>(iid: number, fn: () => T): T {
  return attributing ? owner.run(iid, fn) : fn();
}

/** Runs `fn` on behalf of no instance (the worker's own code). */
export function runAsWorker<T>(fn: () => T): T {
  return owner.exit(fn);
}

/** Where an escaped error came from. */
export type FaultOrigin = 'uncaught' | 'rejection';

/**
 * Installs the worker's handlers of uncaught exceptions and unhandled rejections. `attribute`
 * gets the error, its origin and the instance number it carries; it answers whether it took the
 * fault (restarting that instance). An error it does not take ends the worker: it is thrown
 * again, outside every instance's context and with the handlers removed, so it is uncaught.
 */
export function installFaultHandlers(attribute: (err: unknown, origin: FaultOrigin, iid: number | undefined) => boolean): void {
  attributing = true;
  const onError = (err: unknown, origin: FaultOrigin): void => {
    if (attribute(err, origin, owner.getStore())) return;
    process.off('uncaughtException', onUncaught);
    process.off('unhandledRejection', onRejection);
    runAsWorker(() =>
      setImmediate(() => {
        throw err;
      }),
    );
  };
  const onUncaught = (err: unknown): void => onError(err, 'uncaught');
  const onRejection = (reason: unknown): void => onError(reason, 'rejection');
  process.on('uncaughtException', onUncaught);
  process.on('unhandledRejection', onRejection);
}
