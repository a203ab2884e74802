import type { ChildExit, ChildSpec, RunningChild, Shutdown } from '../../src/supervisor/types.js';

/**
 * An in-process child for the supervisor's pure logic (ordering, intensity, restart types).
 * Thread behaviour is tested with real workers elsewhere.
 */
export class FakeChild implements RunningChild {
  readonly exited: Promise<ChildExit>;
  #resolve!: (e: ChildExit) => void;
  ended = false;
  /** When set, a graceful shutdown never finishes by itself (only brutal_kill ends it). */
  stubborn = false;
  /** When set, a graceful shutdown takes this long. */
  slowMs = 0;
  readonly budgets: Shutdown[] = [];

  constructor(readonly id: string, readonly log: string[]) {
    this.exited = new Promise((r) => (this.#resolve = r));
  }

  die(exit: ChildExit = { class: 'crash', reason: 'boom' }): void {
    if (this.ended) return;
    this.ended = true;
    this.log.push(`exit:${this.id}:${exit.class}`);
    this.#resolve(exit);
  }

  shutdown(budget: Shutdown): Promise<ChildExit> {
    this.budgets.push(budget);
    if (!this.ended) {
      if (budget === 'brutal_kill') this.die({ class: 'shutdown', reason: 'brutal_kill' });
      else if (this.slowMs > 0) setTimeout(() => this.die({ class: 'shutdown', reason: 'shutdown' }), this.slowMs);
      else if (!this.stubborn) this.die({ class: 'shutdown', reason: 'shutdown' });
    }
    return this.exited;
  }
}

/** A registry of fake children by id, with the latest instance of each. */
export class FakeWorld {
  readonly log: string[] = [];
  readonly current = new Map<string, FakeChild>();
  readonly starts = new Map<string, number>();
  /** ids whose next starts fail (count). */
  readonly failStarts = new Map<string, number>();

  spec(id: string, extra: Partial<ChildSpec> = {}): ChildSpec {
    return {
      id,
      start: async () => {
        const f = this.failStarts.get(id) ?? 0;
        if (f > 0) {
          this.failStarts.set(id, f - 1);
          this.log.push(`startfail:${id}`);
          throw new Error(`cannot start ${id}`);
        }
        const c = new FakeChild(id, this.log);
        this.current.set(id, c);
        this.starts.set(id, (this.starts.get(id) ?? 0) + 1);
        this.log.push(`start:${id}`);
        return c;
      },
      ...extra,
    };
  }

  get(id: string): FakeChild {
    const c = this.current.get(id);
    if (!c) throw new Error(`no child ${id}`);
    return c;
  }
}

/** Resolves when `cond()` holds, polling; rejects after `timeoutMs` (a liveness bound only). */
export async function until(cond: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
