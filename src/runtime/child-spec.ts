/**
 * The body of {@link Runtime.childSpec}: a `Runtime` adapted to run as the child of a
 * `Supervisor` (start, stop within a budget, exit classes).
 */
import type { ChildExit, ChildSpec, Shutdown } from '../supervisor/types.js';
import type { Supervisor } from '../supervisor/supervisor.js';
import type { RuntimeChild, RuntimeChildOptions } from './child.js';
import type { RuntimeOptions } from './options.js';
import type { Runtime } from './runtime.js';

/** What the child spec needs of the `Runtime` class, its private state included. */
export interface RuntimeAccess {
  /** `Runtime.start`. */
  start(options: RuntimeOptions): Promise<Runtime>;
  /** `Runtime.prototype.stop`: the runtime's own stop, whatever `rt.stop` is later set to. */
  readonly stop: (this: Runtime) => Promise<void>;
  /** Whether the runtime's stop has begun. */
  stopping(rt: Runtime): boolean;
  /** The instance trees (supervisors) of the runtime's worker groups, as they are now. */
  trees(rt: Runtime): Supervisor[];
}

/** See {@link Runtime.childSpec}. */
export function runtimeChildSpec(options: RuntimeOptions, child: RuntimeChildOptions, access: RuntimeAccess): ChildSpec<RuntimeChild> {
  const instances = [...(child.instances ?? [])];
  return {
    id: child.id ?? 'runtime',
    type: 'supervisor',
    restart: child.restart ?? 'transient',
    shutdown: child.shutdown ?? 30_000,
    start: async (ctx) => {
      const rt = await access.start({ logger: ctx.logger, ...options });
      try {
        for (const instance of instances) await rt.startInstance(instance);
      } catch (err) {
        await rt.stop();
        throw err;
      }
      let resolveExited!: (exit: ChildExit) => void;
      let ended = false;
      const exited = new Promise<ChildExit>((resolve) => (resolveExited = resolve));
      const end = (exit: ChildExit): void => {
        if (ended) return;
        ended = true;
        resolveExited(exit);
      };
      const failed = (err: unknown): ChildExit => ({
        class: 'crash',
        reason: `runtime stop failed: ${err instanceof Error ? err.message : String(err)}`,
        ...(err instanceof Error ? { error: err } : {}),
      });
      const stop = access.stop;
      let bySupervisor = false;
      // `rt.stop()` called by anything but the supervisor ends the child too: a normal exit.
      Object.defineProperty(rt, 'stop', {
        configurable: true,
        writable: true,
        value: (): Promise<void> => {
          const stopping = stop.call(rt);
          if (!bySupervisor) stopping.then(() => end({ class: 'normal', reason: 'runtime stopped' }), (err: unknown) => end(failed(err)));
          return stopping;
        },
      });
      let trees: Supervisor[] | undefined;
      let killing: Promise<void> | undefined;
      const kill = (why: string): Promise<void> => {
        killing ??= (async () => {
          ctx.logger.warn({ reason: why }, 'runtime shutdown forced: terminating every instance worker');
          await Promise.all((trees ?? []).map((t) => t.shutdown('brutal_kill')));
          end({ class: 'shutdown', reason: why });
        })();
        return killing;
      };
      const running: RuntimeChild = {
        runtime: rt,
        exited,
        shutdown: (budget: Shutdown): Promise<ChildExit> => {
          if (ended) return exited;
          if (trees === undefined && !access.stopping(rt)) {
            // The instance trees as they are now: stop() detaches them from their entries.
            trees = access.trees(rt);
            bySupervisor = true;
            stop.call(rt).then(() => end({ class: 'shutdown', reason: 'shutdown' }), (err: unknown) => end({ ...failed(err), class: 'shutdown' }));
          }
          if (budget === 'brutal_kill') void kill('brutal_kill');
          else if (typeof budget === 'number') {
            const timer = setTimeout(() => void kill('shutdown budget expired'), budget);
            void exited.finally(() => clearTimeout(timer));
          }
          return exited;
        },
      };
      return running;
    },
  };
}

