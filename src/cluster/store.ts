/**
 * The cluster's state in Redis, through ioredis: declared instance specs (never credentials),
 * leases with fencing tokens, node membership, and committed inbound cursors. Every change that
 * must be atomic is one Lua script (acquire, renew a node's whole set, compare-and-delete), so no
 * consensus code of ours runs anywhere: Redis's single-threaded execution is the arbiter, and a
 * lease expires by Redis's own clock (`PX`).
 *
 * Keys (all under one hash tag, `{<namespace>}`, so the scripts touch one slot):
 * - `{ns}:specs` hash id → spec JSON (no credentials);
 * - `{ns}:lease:<id>` string `<nodeId>|<token>` with `PX leaseMs`;
 * - `{ns}:fence:<id>` counter, `INCR`ed at every acquisition (the fencing token);
 * - `{ns}:owned:<nodeId>` set of the ids the node holds;
 * - `{ns}:nodes` sorted set nodeId → deadline (Redis time, ms) of its membership;
 * - `{ns}:cursor:<id>` the last inbound cursor `onMessage` finished (JSON).
 *
 * This module imports ioredis: only cluster mode loads it.
 *
 * @packageDocumentation
 */
import { Redis, type RedisOptions } from 'ioredis';

/** One tick's outcome for a node (see {@link LeaseStore.tick}). */
export interface TickResult {
  /** Ids the node held and no longer does (its lease expired or was taken). */
  readonly lost: string[];
  /** Ids acquired in this tick, with their fencing token and spec JSON. */
  readonly acquired: { id: string; token: number; spec: string }[];
  /** Ids the node holds after the tick. */
  readonly owned: string[];
  /** Live nodes (their membership not expired), this one included. */
  readonly nodes: string[];
  /** Declared instances. */
  readonly declared: number;
}

// Renews the node's membership and every lease it still holds, drops those it lost, and acquires
// free declared instances up to its fair share: ceil(declared / live nodes). One round trip.
// KEYS: specs, nodes, owned. ARGV: nodeId, leaseMs, prefix ('{ns}:'), maxAcquire, offset.
const TICK = `
local specs, nodes, owned = KEYS[1], KEYS[2], KEYS[3]
local node, lease, prefix = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local maxAcquire, offset = tonumber(ARGV[4]), tonumber(ARGV[5])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', nodes, now + lease, node)
redis.call('ZREMRANGEBYSCORE', nodes, '-inf', now)
local live = redis.call('ZRANGE', nodes, 0, -1)
local lost, held = {}, {}
for _, id in ipairs(redis.call('SMEMBERS', owned)) do
  local key = prefix .. 'lease:' .. id
  local v = redis.call('GET', key)
  local mine = v and string.sub(v, 1, #node + 1) == node .. '|'
  if mine and redis.call('HEXISTS', specs, id) == 1 then
    redis.call('PEXPIRE', key, lease)
    held[#held + 1] = id
  else
    -- Expired, taken by another node, or no longer declared (then the lease goes at once).
    if mine then redis.call('DEL', key) end
    redis.call('SREM', owned, id)
    lost[#lost + 1] = id
  end
end
local ids = redis.call('HKEYS', specs)
local declared = #ids
local share = math.ceil(declared / math.max(1, #live))
local want = math.min(maxAcquire, share - #held)
local acquired = {}
if want > 0 and declared > 0 then
  for k = 0, declared - 1 do
    if want <= 0 then break end
    local id = ids[((k + offset) % declared) + 1]
    local key = prefix .. 'lease:' .. id
    if redis.call('EXISTS', key) == 0 then
      local token = redis.call('INCR', prefix .. 'fence:' .. id)
      redis.call('SET', key, node .. '|' .. token, 'PX', lease)
      redis.call('SADD', owned, id)
      held[#held + 1] = id
      acquired[#acquired + 1] = id
      acquired[#acquired + 1] = token
      acquired[#acquired + 1] = redis.call('HGET', specs, id)
      want = want - 1
    end
  end
end
return { lost, acquired, held, live, declared }
`;

// Compare-and-delete of one lease. KEYS: lease, owned. ARGV: nodeId, id. Returns 1 when released.
const RELEASE = `
local v = redis.call('GET', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
`;

// Releases every lease the node holds and ends its membership. KEYS: owned, nodes. ARGV: nodeId, prefix.
const LEAVE = `
local node, prefix = ARGV[1], ARGV[2]
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = prefix .. 'lease:' .. id
  local v = redis.call('GET', key)
  if v and string.sub(v, 1, #node + 1) == node .. '|' then
    redis.call('DEL', key)
    n = n + 1
  end
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], node)
return n
`;

type Scripted = Redis & {
  tvTick(specs: string, nodes: string, owned: string, node: string, leaseMs: number, prefix: string, maxAcquire: number, offset: number): Promise<unknown[]>;
  tvRelease(lease: string, owned: string, node: string, id: string): Promise<number>;
  tvLeave(owned: string, nodes: string, node: string, prefix: string): Promise<number>;
};

/** What a node needs of Redis. */
export class LeaseStore {
  readonly #redis: Scripted;
  readonly #owns: boolean;
  readonly #p: string;
  readonly nodeId: string;
  readonly leaseMs: number;

  /**
   * `redis`: a URL, ioredis options, or a client (not closed by {@link LeaseStore.close}). A client
   * made here fails commands at once while it is disconnected (no offline queue), so an outage is
   * seen at the next tick instead of queued behind it.
   */
  constructor(redis: string | RedisOptions | Redis, options: { namespace: string; nodeId: string; leaseMs: number }) {
    const quick: RedisOptions = { enableOfflineQueue: false, maxRetriesPerRequest: 1, lazyConnect: true, connectTimeout: 2000 };
    const client = redis instanceof Redis ? redis : typeof redis === 'string' ? new Redis(redis, quick) : new Redis({ ...quick, ...redis });
    this.#owns = !(redis instanceof Redis);
    // A disconnected client reports through its commands; an 'error' event with no listener would throw.
    if (this.#owns) client.on('error', () => undefined);
    client.defineCommand('tvTick', { numberOfKeys: 3, lua: TICK });
    client.defineCommand('tvRelease', { numberOfKeys: 2, lua: RELEASE });
    client.defineCommand('tvLeave', { numberOfKeys: 2, lua: LEAVE });
    this.#redis = client as Scripted;
    this.#p = `{${options.namespace}}:`;
    this.nodeId = options.nodeId;
    this.leaseMs = options.leaseMs;
  }

  /** Connects (a client made here) and checks Redis answers. */
  async connect(): Promise<void> {
    if (this.#owns && this.#redis.status === 'wait') await this.#redis.connect();
    await this.#redis.ping();
  }

  /** Stores a declaration (idempotent by id: the latest spec wins). */
  async declare(id: string, spec: string): Promise<void> {
    await this.#redis.hset(`${this.#p}specs`, id, spec);
  }

  /** Removes a declaration; its owner sees it lost at its next tick. */
  async undeclare(id: string): Promise<boolean> {
    const [[, removed]] = (await this.#redis.multi().hdel(`${this.#p}specs`, id).del(`${this.#p}cursor:${id}`).exec()) as [[unknown, number], unknown];
    return removed > 0;
  }

  /** The declared spec JSON of `id`, or null. */
  async spec(id: string): Promise<string | null> {
    return this.#redis.hget(`${this.#p}specs`, id);
  }

  /** One tick of this node: see the script. `offset` spreads where nodes start looking for free instances. */
  async tick(maxAcquire: number, offset: number): Promise<TickResult> {
    const p = this.#p;
    const raw = await this.#redis.tvTick(`${p}specs`, `${p}nodes`, `${p}owned:${this.nodeId}`, this.nodeId, this.leaseMs, p, maxAcquire, offset);
    const [lost, flat, owned, nodes, declared] = raw as [string[], (string | number)[], string[], string[], number];
    const acquired: TickResult['acquired'] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) acquired.push({ id: String(flat[i]), token: Number(flat[i + 1]), spec: String(flat[i + 2]) });
    return { lost, acquired, owned, nodes, declared: Number(declared) };
  }

  /** Compare-and-delete of this node's lease on `id`. */
  async release(id: string): Promise<boolean> {
    return (await this.#redis.tvRelease(`${this.#p}lease:${id}`, `${this.#p}owned:${this.nodeId}`, this.nodeId, id)) === 1;
  }

  /** Releases every lease of this node and ends its membership (others take over at once). */
  async leave(): Promise<number> {
    return this.#redis.tvLeave(`${this.#p}owned:${this.nodeId}`, `${this.#p}nodes`, this.nodeId, this.#p);
  }

  /** The node holding `id` now, or null. */
  async owner(id: string): Promise<string | null> {
    const v = await this.#redis.get(`${this.#p}lease:${id}`);
    return v === null ? null : v.slice(0, v.lastIndexOf('|'));
  }

  /** Live nodes. */
  async nodes(): Promise<string[]> {
    const [sec, micro] = await this.#redis.time();
    const now = Number(sec) * 1000 + Math.floor(Number(micro) / 1000);
    return this.#redis.zrangebyscore(`${this.#p}nodes`, now, '+inf');
  }

  /** Commits the inbound cursor of `id` (what `onMessage` finished), for the next owner. */
  async commitCursor(id: string, cursor: unknown): Promise<void> {
    await this.#redis.set(`${this.#p}cursor:${id}`, JSON.stringify(cursor));
  }

  /** The committed inbound cursor of `id`, or undefined. */
  async cursor(id: string): Promise<unknown> {
    const v = await this.#redis.get(`${this.#p}cursor:${id}`);
    return v === null ? undefined : (JSON.parse(v) as unknown);
  }

  /** Closes a client made here. */
  async close(): Promise<void> {
    if (!this.#owns) return;
    try {
      await this.#redis.quit();
    } catch {
      this.#redis.disconnect();
    }
  }
}
