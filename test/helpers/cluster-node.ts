/**
 * A cluster node in its own process for tests (`test/fixtures/cluster-node.ts`, forked): IPC
 * calls, the events it reports, and the activity spans of its `stamp` instances.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { fixtureUrl } from './fixtures.js';

/** An event a node reported. */
export interface Ev {
  event: string;
  nodeId: string;
  instanceId?: string;
  fencingToken?: number;
  at: number;
}

export class NodeProc {
  readonly events: Ev[] = [];
  readonly #child: ChildProcess;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error & Record<string, unknown>) => void }>();
  #seq = 0;
  readonly ready: Promise<void>;
  readonly exited: Promise<number | null>;

  /** Activity spans of `stamp` instances: instance id → [from, to] spans (ms epoch). */
  readonly spans = new Map<string, { from: number; to: number }[]>();

  constructor(
    readonly id: string,
    redisUrl: string,
    leaseMs: number,
    durability?: 'redis' | 'memory',
  ) {
    this.#child = fork(fileURLToPath(fixtureUrl('cluster-node')), [redisUrl, id, String(leaseMs), ...(durability ? [durability] : [])], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    let readyResolve!: () => void;
    this.ready = new Promise((r) => (readyResolve = r));
    this.exited = new Promise((r) => this.#child.once('exit', (code) => r(code)));
    this.#child.on('message', (m: Record<string, unknown>) => {
      if (m.ready) return readyResolve();
      if (typeof m.span === 'string') {
        const list = this.spans.get(m.span) ?? [];
        const last = list[list.length - 1];
        const span = { from: m.from as number, to: m.to as number };
        if (last && last.from === span.from) last.to = span.to;
        else list.push(span);
        this.spans.set(m.span, list);
        return;
      }
      if (typeof m.re === 'number') {
        const p = this.#pending.get(m.re);
        this.#pending.delete(m.re);
        if (m.ok) p?.resolve(m.value);
        else p?.reject(Object.assign(new Error(String((m.error as { message?: string }).message)), m.error as Record<string, unknown>));
        return;
      }
      this.events.push(m as unknown as Ev);
    });
  }

  call<T = unknown>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const re = ++this.#seq;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(re, { resolve: resolve as (v: unknown) => void, reject });
      this.#child.send({ re, cmd, ...args });
    });
  }

  running(): Set<string> {
    const on = new Set<string>();
    for (const e of this.events) {
      if (e.event === 'instance:connected' && e.instanceId) on.add(e.instanceId);
      if (e.event === 'instance:stopped' && e.instanceId) on.delete(e.instanceId);
    }
    return on;
  }

  kill(signal: NodeJS.Signals): void {
    this.#child.kill(signal);
  }
}

