/**
 * Cluster mode of an instance manager: joining the cluster (key claims, remote calls), serving
 * other nodes' calls, calling the owner of a key this node does not run, and dropping a key the
 * node lost.
 *
 * @packageDocumentation
 */
import { InvalidMessageError, NotOwnerError, TimeoutError, UnavailableError, type ThreadvisorError } from '../errors.js';
import { safeRedisUrl, type ResolvedCluster } from '../cluster/options.js';
import { findNonJson } from './json.js';
import { acquire, end } from './lifecycle.js';
import { noop, type ManagerState } from './manager-state.js';
import { checkKey, partitionOf } from './registry.js';
import { ended } from './slot.js';
import type { AgentRef } from './types.js';

/**
 * Cluster mode: one activation per key across nodes. This manager's node claims a key (in
 * Redis, namespace `<namespace>.mgr.<name>`) before it starts or thaws its agent, keeps it
 * while the agent is in memory, and gives it up once the agent is saved and gone. A node that
 * could not renew in time (see the runtime's cluster mode) stops its agents without saving.
 */
export async function joinCluster(m: ManagerState, c: ResolvedCluster): Promise<void> {
  const [{ LeaseStore }, { ClusterNode }] = await Promise.all([import('../cluster/store.js'), import('../cluster/node.js')]);
  const store = new LeaseStore(c.redis as never, { namespace: `${c.namespace}.mgr.${m.name}`, nodeId: c.nodeId, leaseMs: c.leaseMs });
  try {
    await store.connect();
  } catch (err) {
    await store.close();
    throw new UnavailableError(`instance manager ${m.name}: Redis at ${safeRedisUrl(c.redis)} cannot be reached (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }
  m.node = new ClusterNode(
    store,
    {
      runLocal: async () => undefined, // nothing is declared: keys are claimed one by one
      stopLocal: async (key) => dropKey(m, key),
    },
    { nodeId: c.nodeId, leaseMs: c.leaseMs, safetyMs: c.safetyMs, log: m.logger.child({ nodeId: c.nodeId }), emitter: m.emitter, balance: false },
  );
  m.node.start();
  await m.node.settled();
  const { RemoteCalls } = await import('../cluster/remote-calls.js');
  const remote = new RemoteCalls({ redis: c.redis, namespace: `${c.namespace}.mgr.${m.name}`, nodeId: c.nodeId, log: m.logger.child({ nodeId: c.nodeId }) });
  try {
    await remote.start((key, message) => serveRemote(m, key, message));
  } catch (err) {
    await remote.close();
    await m.node.close(true);
    throw new UnavailableError(`instance manager ${m.name}: Redis at ${safeRedisUrl(c.redis)} cannot be reached (${err instanceof Error ? err.message : String(err)})`, { cause: err });
  }
  m.remote = remote;
}

/** Cluster mode: runs a call another node asked for, here (`not_owner` when a third node has the key). */
async function serveRemote(m: ManagerState, key: string, message: unknown): Promise<unknown> {
  checkKey(key);
  const slot = await acquire(m, key, undefined, false);
  return (slot as AgentRef).call(message as never);
}

/** Cluster mode: a call through a `RemoteRef` (see `InstanceManager.callRemote`). */
export function callRemote(m: ManagerState, key: string, message: unknown): Promise<unknown> {
  const bad = findNonJson(message);
  if (bad !== undefined) return Promise.reject(new InvalidMessageError(`agent ${m.name}/${key}`, `${bad.problem} (calls to another node travel as JSON)`, { path: bad.path }));
  const prev = m.remoteChains.get(key) ?? Promise.resolve();
  const run = prev.then(() => remoteOnce(m, key, message));
  const tail = run.then(noop, noop);
  m.remoteChains.set(key, tail);
  void tail.then(() => {
    if (m.remoteChains.get(key) === tail) m.remoteChains.delete(key);
  });
  return run;
}

async function remoteOnce(m: ManagerState, key: string, message: unknown): Promise<unknown> {
  const timeoutMs = m.remoteCallTimeoutMs;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    let owner: string;
    try {
      const slot = await acquire(m, key, undefined, false);
      return await (slot as AgentRef).call(message as never);
    } catch (err) {
      if (!(err instanceof NotOwnerError) || err.owner === null) throw err;
      owner = err.owner;
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0 || !m.remote) throw new TimeoutError(`call to agent ${m.name}/${key}`, timeoutMs);
    try {
      return await m.remote.call(owner, key, message, remaining);
    } catch (err) {
      if ((err as ThreadvisorError).code !== 'not_owner') throw err;
      // The key moved: ask again (its new owner, or here).
      await new Promise((resolve) => setTimeout(resolve, 50));
      if (Date.now() >= deadline) throw new TimeoutError(`call to agent ${m.name}/${key}`, timeoutMs);
    }
  }
}

/** Cluster mode: the key is no longer this node's (lost, or fenced): its agent stops without saving. */
function dropKey(m: ManagerState, key: string): void {
  const slot = partitionOf(m, key).slots.get(key);
  if (slot && !ended(slot)) end(m, slot, 'stop', false);
}
