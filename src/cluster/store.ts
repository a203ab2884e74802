/**
 * The cluster's state in Redis, through ioredis: declared instance specs (never credentials),
 * ownership with fencing tokens, node membership, and committed inbound cursors. Every change
 * that must be atomic is one Lua script (tick, release, undeclare, leave), so no consensus code of
 * ours runs anywhere: Redis's single-threaded execution is the arbiter, and time is Redis's own
 * (`TIME` inside the scripts).
 *
 * **Ownership rests on membership.** A node owns an instance while its own membership is live: a
 * node's tick sets its membership deadline to now + `leaseMs`, which renews every instance it owns
 * in one write (the work of a tick in Redis does not grow with the instances a node runs). The
 * first tick (of any node) after a node's deadline frees everything that node owned.
 *
 * Keys (all under one hash tag, `{<namespace>}`, so the scripts touch one slot):
 * - `{ns}:specs` hash id → spec JSON (no credentials);
 * - `{ns}:owners` hash id → `<nodeId>|<token>`;
 * - `{ns}:fences` hash id → the last fencing token (`HINCRBY` at every acquisition: only grows);
 * - `{ns}:owned:<nodeId>` set of the ids the node owns;
 * - `{ns}:nodes` sorted set nodeId → membership deadline (Redis time, ms);
 * - `{ns}:cursor:<id>` the last inbound cursor `onMessage` finished (JSON).
 *
 * This module imports ioredis: only cluster mode loads it.
 *
 * @packageDocumentation
 */
import { Redis, type RedisOptions } from 'ioredis';

/** One tick's outcome for a node (see {@link LeaseStore.tick}). */
export interface TickResult {
  /** Ids the node owns after the tick (an id it ran and that is not here was lost). */
  readonly owned: string[];
  /** Ids acquired in this tick, with their fencing token and spec JSON. */
  readonly acquired: { id: string; token: number; spec: string }[];
  /** Live nodes (their membership not expired), this one included. */
  readonly nodes: string[];
  /** Declared instances. */
  readonly declared: number;
}

// One tick of a node: frees what expired nodes owned, renews this node's membership (and with it
// everything it owns), and acquires free declared instances up to its fair share
// ceil(declared / live nodes), looking for them only when some are free. One round trip.
// KEYS: specs, nodes, owners, fences. ARGV: nodeId, leaseMs, prefix ('{ns}:'), offset.
const TICK = `
local specs, nodes, owners, fences = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local node, lease, prefix, offset = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for _, d in ipairs(redis.call('ZRANGEBYSCORE', nodes, '-inf', now)) do
  local key = prefix .. 'owned:' .. d
  for _, id in ipairs(redis.call('SMEMBERS', key)) do
    local v = redis.call('HGET', owners, id)
    if v and string.sub(v, 1, #d + 1) == d .. '|' then redis.call('HDEL', owners, id) end
  end
  redis.call('DEL', key)
  redis.call('ZREM', nodes, d)
end
redis.call('ZADD', nodes, now + lease, node)
local mine = prefix .. 'owned:' .. node
local live = redis.call('ZRANGE', nodes, 0, -1)
local declared = redis.call('HLEN', specs)
local free = declared - redis.call('HLEN', owners)
local share = math.ceil(declared / math.max(1, #live))
local want = math.min(share - redis.call('SCARD', mine), free)
local acquired = {}
if want > 0 then
  local ids = redis.call('HKEYS', specs)
  for k = 0, #ids - 1 do
    if want <= 0 then break end
    local id = ids[((k + offset) % #ids) + 1]
    if redis.call('HEXISTS', owners, id) == 0 then
      local token = redis.call('HINCRBY', fences, id, 1)
      redis.call('HSET', owners, id, node .. '|' .. token)
      redis.call('SADD', mine, id)
      acquired[#acquired + 1] = id
      acquired[#acquired + 1] = token
      acquired[#acquired + 1] = redis.call('HGET', specs, id)
      want = want - 1
    end
  end
end
return { redis.call('SMEMBERS', mine), acquired, live, declared }
`;

// Compare-and-delete of one ownership. KEYS: owners, the node's owned set. ARGV: nodeId, id.
const RELEASE = `
local v = redis.call('HGET', KEYS[1], ARGV[2])
redis.call('SREM', KEYS[2], ARGV[2])
if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return 1
end
return 0
`;

// Removes a declaration, its ownership and its durable-send stream (answering the senders still
// waiting on its entries). KEYS: specs, owners. ARGV: id, prefix, the answer's error JSON.
const UNDECLARE = `
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
local v = redis.call('HGET', KEYS[2], ARGV[1])
if v then
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('SREM', ARGV[2] .. 'owned:' .. string.sub(v, 1, string.find(v, '|[^|]*$') - 1), ARGV[1])
end
redis.call('DEL', ARGV[2] .. 'cursor:' .. ARGV[1])
-- Durable sends still in the instance's stream: each sending node that waits for a receipt is
-- answered with the error ARGV[3] before the stream goes.
local q = ARGV[2] .. 'q:' .. ARGV[1]
local touched = {}
for _, e in ipairs(redis.call('XRANGE', q, '-', '+')) do
  local f = e[2]
  local n, c = '', ''
  for i = 1, #f, 2 do
    if f[i] == 'n' then n = f[i + 1] elseif f[i] == 'c' then c = f[i + 1] end
  end
  if n ~= '' then
    local r = ARGV[2] .. 'r:' .. n
    redis.call('XADD', r, 'MAXLEN', '~', '100000', '*', 'c', c, 'o', 'err', 'p', ARGV[3])
    touched[r] = true
  end
end
for r in pairs(touched) do redis.call('PEXPIRE', r, 3600000) end
redis.call('DEL', q)
return removed
`;

// Gives up everything the node owns and ends its membership. KEYS: owners, owned, nodes. ARGV: nodeId.
const LEAVE = `
local n = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local v = redis.call('HGET', KEYS[1], id)
  if v and string.sub(v, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
    redis.call('HDEL', KEYS[1], id)
    n = n + 1
  end
end
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return n
`;

// Claims one id for this node (single activation of a key, not a declared instance): it is
// this node's already, or free, or owned by a node whose membership expired (freed here). This
// node's own membership must be live. KEYS: owners, nodes, fences. ARGV: nodeId, id, prefix.
// Returns { 1, token } (this node owns it) or { 0, owner } (another live node does) or { -1 }
// (this node's membership is not live: tick first).
const CLAIM = `
local owners, nodes, fences = KEYS[1], KEYS[2], KEYS[3]
local node, id, prefix = ARGV[1], ARGV[2], ARGV[3]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local mine = tonumber(redis.call('ZSCORE', nodes, node) or '0')
if mine <= now then return { -1 } end
local v = redis.call('HGET', owners, id)
if v then
  local at = string.find(v, '|[^|]*$')
  local other = string.sub(v, 1, at - 1)
  if other == node then return { 1, tonumber(string.sub(v, at + 1)) } end
  local deadline = tonumber(redis.call('ZSCORE', nodes, other) or '0')
  if deadline > now then return { 0, other } end
  redis.call('SREM', prefix .. 'owned:' .. other, id)
end
local token = redis.call('HINCRBY', fences, id, 1)
redis.call('HSET', owners, id, node .. '|' .. token)
redis.call('SADD', prefix .. 'owned:' .. node, id)
return { 1, token }
`;

// The live owner of an id, or false. KEYS: owners, nodes. ARGV: id.
const OWNER = `
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return false end
local node = string.sub(v, 1, string.find(v, '|[^|]*$') - 1)
local deadline = redis.call('ZSCORE', KEYS[2], node)
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if not deadline or tonumber(deadline) <= now then return false end
return node
`;

type Scripted = Redis & {
  tvTick(specs: string, nodes: string, owners: string, fences: string, node: string, leaseMs: number, prefix: string, offset: number): Promise<unknown[]>;
  tvRelease(owners: string, owned: string, node: string, id: string): Promise<number>;
  tvUndeclare(specs: string, owners: string, id: string, prefix: string, answer: string): Promise<number>;
  tvLeave(owners: string, owned: string, nodes: string, node: string): Promise<number>;
  tvOwner(owners: string, nodes: string, id: string): Promise<string | null>;
  tvClaim(owners: string, nodes: string, fences: string, node: string, id: string, prefix: string): Promise<[number, (number | string)?]>;
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
    client.defineCommand('tvTick', { numberOfKeys: 4, lua: TICK });
    client.defineCommand('tvRelease', { numberOfKeys: 2, lua: RELEASE });
    client.defineCommand('tvUndeclare', { numberOfKeys: 2, lua: UNDECLARE });
    client.defineCommand('tvLeave', { numberOfKeys: 3, lua: LEAVE });
    client.defineCommand('tvOwner', { numberOfKeys: 2, lua: OWNER });
    client.defineCommand('tvClaim', { numberOfKeys: 3, lua: CLAIM });
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

  /**
   * Removes a declaration (and its ownership; its owner sees it lost at its next tick) and the
   * instance's durable-send stream, answering each send still in it that waits for a receipt
   * with `stopped`.
   */
  async undeclare(id: string): Promise<boolean> {
    // Senders of durable sends still queued for it learn at once that the instance went.
    const answer = JSON.stringify({ code: 'stopped', message: `instance ${id} was removed (rt.stopInstance) before this send's receipt: it may not have been delivered`, details: { what: `instance ${id}` } });
    return (await this.#redis.tvUndeclare(`${this.#p}specs`, `${this.#p}owners`, id, this.#p, answer)) > 0;
  }

  /** The declared spec JSON of `id`, or null. */
  async spec(id: string): Promise<string | null> {
    return this.#redis.hget(`${this.#p}specs`, id);
  }

  /** One tick of this node: see the script. `offset` spreads where nodes start looking for free instances. */
  async tick(offset: number): Promise<TickResult> {
    const p = this.#p;
    const raw = await this.#redis.tvTick(`${p}specs`, `${p}nodes`, `${p}owners`, `${p}fences`, this.nodeId, this.leaseMs, p, offset);
    const [owned, flat, nodes, declared] = raw as [string[], (string | number)[], string[], number];
    const acquired: TickResult['acquired'] = [];
    for (let i = 0; i + 2 < flat.length; i += 3) acquired.push({ id: String(flat[i]), token: Number(flat[i + 1]), spec: String(flat[i + 2]) });
    return { owned, acquired, nodes, declared: Number(declared) };
  }

  /**
   * Claims `id` for this node (see the script): `{ token }` when this node owns it now,
   * `{ owner }` when another live node does, `{ stale: true }` when this node's membership is not
   * live (it must tick first).
   */
  async claim(id: string): Promise<{ token: number } | { owner: string } | { stale: true }> {
    const p = this.#p;
    const [code, value] = await this.#redis.tvClaim(`${p}owners`, `${p}nodes`, `${p}fences`, this.nodeId, id, p);
    if (code === 1) return { token: Number(value) };
    if (code === 0) return { owner: String(value) };
    return { stale: true };
  }

  /** Compare-and-delete of this node's ownership of `id`. */
  async release(id: string): Promise<boolean> {
    return (await this.#redis.tvRelease(`${this.#p}owners`, `${this.#p}owned:${this.nodeId}`, this.nodeId, id)) === 1;
  }

  /** Gives up everything this node owns and ends its membership (others take over at once). */
  async leave(): Promise<number> {
    return this.#redis.tvLeave(`${this.#p}owners`, `${this.#p}owned:${this.nodeId}`, `${this.#p}nodes`, this.nodeId);
  }

  /** The live node owning `id` now, or null. */
  async owner(id: string): Promise<string | null> {
    return (await this.#redis.tvOwner(`${this.#p}owners`, `${this.#p}nodes`, id)) ?? null;
  }

  /** Live nodes. */
  async nodes(): Promise<string[]> {
    const [sec, micro] = await this.#redis.time();
    const now = Number(sec) * 1000 + Math.floor(Number(micro) / 1000);
    return this.#redis.zrangebyscore(`${this.#p}nodes`, `(${now}`, '+inf');
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
