/**
 * The handle `manager.get(key)` gives on a node that does not own `key` (an `InstanceManager` in
 * cluster mode): its `call` travels to the owner through Redis (src/cluster/remote-calls.ts).
 *
 * @packageDocumentation
 */
import type { AgentRef } from './types.js';

/** What a remote ref needs from its manager. */
export interface RemoteCore {
  readonly name: string;
  callRemote(key: string, message: unknown): Promise<unknown>;
}

/**
 * A ref to an agent another node runs: `status` is `'running'` (as the owner reported it when the
 * ref was made), `incarnation` and `restarts` are 0 (the owner's are not known here), `touch()`
 * does nothing (a call counts as activity on the owner).
 */
export class RemoteRef implements AgentRef {
  readonly #core: RemoteCore;
  readonly #key: string;
  constructor(core: RemoteCore, key: string) {
    this.#core = core;
    this.#key = key;
  }
  get manager(): string {
    return this.#core.name;
  }
  get key(): string {
    return this.#key;
  }
  get incarnation(): number {
    return 0;
  }
  get status(): 'running' | 'hibernating' | 'stopped' {
    return 'running';
  }
  get restarts(): number {
    return 0;
  }
  call(message: never): Promise<never> {
    return this.#core.callRemote(this.#key, message) as Promise<never>;
  }
  touch(): void {
    // The owner counts each call as activity.
  }
}
