/**
 * Prometheus metrics for a {@link Runtime} (and optionally an {@link InstanceManager}), on a
 * prom-client registry: `import { collectMetrics } from 'threadvisor/prometheus'`.
 *
 * prom-client is an optional peer dependency: only this entry imports it, the main entry never
 * does, so an application that does not collect metrics neither installs nor loads it.
 *
 * Sources, and nothing else: gauges are computed from the runtime's (and manager's) snapshots at
 * scrape time (`collect()`; nothing runs between scrapes); counters and histograms count the
 * runtime's own events. The `delivery:*` figures come from the runtime's internal delivery feed
 * (deliveries once per run of acks, each send's `totalMs` in one array; failures, duplicates and
 * retries where their events are published): the same counts and values as the events, without
 * building a payload per send or adding a listener to the queues. Labels are instance ids, statuses, kinds, classes, outcomes and the
 * manager's name: never a credential, a name, a reason or a message.
 *
 * @packageDocumentation
 */
import diagnostics_channel from 'node:diagnostics_channel';
import type { EventEmitter } from 'node:events';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { InvalidConfigError } from './errors.js';
import { channelName } from './events.js';
import { INSTANCE_STATUSES } from './instance/state-machine.js';
import type { InstanceManager } from './manager/manager.js';
import { deliveryFeedOf } from './runtime/outbound/feed.js';
import { PRESSURE_LEVELS } from './runtime/outbound/types.js';
import type { InstanceHealth, Runtime, RuntimeMode } from './runtime/runtime.js';
import { DUPLICATE, EventCells, FAILED, LocalHistogram, NO_LABELS, OK, SendTap, str, type Labels } from './prometheus-series.js';

type Payload = Record<string, unknown>;

/** A metric's name (set by prom-client on every metric, absent from its typings). */
const nameOf = (metric: Counter | Gauge | Histogram): string => (metric as unknown as { name: string }).name;
const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);

/** Options of {@link collectMetrics}. */
export interface CollectMetricsOptions {
  /** The prom-client registry the metrics are registered on (required: never the global one implicitly). */
  registry: Registry;
  /**
   * Label per-instance series with `instance` (the instance id). Default true. With `false` every
   * per-instance figure is aggregated without it, for runtimes with thousands of instances.
   */
  perInstance?: boolean;
  /** An {@link InstanceManager} whose agents are counted too (label `manager`: its name). */
  manager?: InstanceManager;
  /** Histogram buckets of `threadvisor_send_duration_seconds`. Default prom-client's defaults. */
  sendDurationBuckets?: number[];
  /** Histogram buckets of `threadvisor_heartbeat_rtt_seconds`. Default 0.1 ms … 1 s. */
  heartbeatRttBuckets?: number[];
}

/** What {@link collectMetrics} returns. */
export interface MetricsHandle {
  /** Removes every listener and every metric it registered. Idempotent. */
  stop(): void;
}

const OPTION_KEYS = new Set(['registry', 'perInstance', 'manager', 'sendDurationBuckets', 'heartbeatRttBuckets']);
const DEFAULT_RTT_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

type Issue = { path: string; message: string };

function isRegistry(v: unknown): v is Registry {
  const r = v as Partial<Registry> | null;
  return typeof r === 'object' && r !== null && typeof r.registerMetric === 'function' && typeof r.removeSingleMetric === 'function' && typeof r.metrics === 'function';
}

function isRuntime(v: unknown): v is Runtime {
  const r = v as Partial<Runtime> | null;
  return typeof r === 'object' && r !== null && typeof r.on === 'function' && typeof r.off === 'function' && typeof r.listInstances === 'function' && typeof r.listHealth === 'function';
}

function isManager(v: unknown): v is InstanceManager {
  const m = v as Partial<InstanceManager> | null;
  return typeof m === 'object' && m !== null && typeof m.on === 'function' && typeof m.off === 'function' && typeof m.stats === 'function';
}

function checkBuckets(v: unknown, path: string, issues: Issue[]): void {
  if (v === undefined) return;
  if (!Array.isArray(v) || v.length === 0 || !v.every((b) => typeof b === 'number' && Number.isFinite(b) && b > 0)) {
    issues.push({ path, message: 'expected a non-empty array of positive finite numbers' });
    return;
  }
  for (let i = 1; i < v.length; i++) {
    if ((v[i] as number) <= (v[i - 1] as number)) {
      issues.push({ path, message: 'buckets must increase' });
      return;
    }
  }
}

function parseOptions(rt: unknown, options: unknown): Required<Omit<CollectMetricsOptions, 'manager'>> & { manager: InstanceManager | undefined } {
  const issues: Issue[] = [];
  if (!isRuntime(rt)) issues.push({ path: 'runtime', message: 'expected a Runtime' });
  if (typeof options !== 'object' || options === null) {
    throw new InvalidConfigError('collectMetrics options', [...issues, { path: '', message: 'expected an object' }]);
  }
  const o = options as Record<string, unknown>;
  for (const key of Object.keys(o)) if (!OPTION_KEYS.has(key)) issues.push({ path: key, message: 'unknown option' });
  if (!isRegistry(o['registry'])) issues.push({ path: 'registry', message: 'expected a prom-client Registry' });
  if (o['perInstance'] !== undefined && typeof o['perInstance'] !== 'boolean') issues.push({ path: 'perInstance', message: 'expected a boolean' });
  if (o['manager'] !== undefined && !isManager(o['manager'])) issues.push({ path: 'manager', message: 'expected an InstanceManager' });
  checkBuckets(o['sendDurationBuckets'], 'sendDurationBuckets', issues);
  checkBuckets(o['heartbeatRttBuckets'], 'heartbeatRttBuckets', issues);
  if (issues.length > 0) throw new InvalidConfigError('collectMetrics options', issues);
  const opts = options as CollectMetricsOptions;
  return {
    registry: opts.registry,
    perInstance: opts.perInstance ?? true,
    manager: opts.manager,
    sendDurationBuckets: opts.sendDurationBuckets ?? [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    heartbeatRttBuckets: opts.heartbeatRttBuckets ?? DEFAULT_RTT_BUCKETS,
  };
}

/**
 * Registers threadvisor's metrics for `rt` on `options.registry` and returns a handle whose
 * `stop()` removes them and every listener. Metric names must be free on the registry (one
 * collector per registry). Bad options throw {@link InvalidConfigError} naming the field.
 *
 * | metric | type | labels | source |
 * |---|---|---|---|
 * | `threadvisor_instances` | gauge | `status` | `rt.listInstances()` at scrape |
 * | `threadvisor_instance_restarts_total` | counter | `instance`, `kind`, `class` | `instance:restart` |
 * | `threadvisor_reconnect_attempts_total` | counter | `instance` | `instance:reconnect` (phase `attempt`) |
 * | `threadvisor_sends_total` | counter | `instance`, `outcome` (`ok`, `failed`, `duplicate`) | `delivery:delivered` / `gave_up` / `skipped_duplicate` (fed, see below) |
 * | `threadvisor_send_retries_total` | counter | `instance` | `delivery:retry` (fed) |
 * | `threadvisor_send_duration_seconds` | histogram | none | `delivery:delivered` `totalMs` (accepted → receipt; fed) |
 * | `threadvisor_queue_depth` | gauge | `instance` | `rt.listHealth()` `senderQueueDepth` |
 * | `threadvisor_queue_in_flight` | gauge | `instance` | `rt.listHealth()` `inFlight` |
 * | `threadvisor_queue_pressure` | gauge | `instance` | `rt.listHealth()` `pressure` as 0–3 (without `instance`: the highest) |
 * | `threadvisor_heartbeat_age_seconds` | gauge | `instance` | `rt.listHealth()` `worker.lastHeartbeatAgeMs` (without `instance`: the oldest) |
 * | `threadvisor_heartbeat_rtt_seconds` | histogram | none | `threadvisor:worker:heartbeat` diagnostics channel `rttMs`: every worker host of the process |
 * | `threadvisor_worker_elu` | gauge | `instance` | `rt.listHealth()` `worker.elu` (without `instance`: the mean) |
 * | `threadvisor_worker_heap_bytes` | gauge | `instance` | `rt.listHealth()` `worker.heapUsed` (without `instance`: the sum) |
 *
 * With a manager: gauges `threadvisor_manager_resident_agents`, `threadvisor_manager_hibernating_agents`,
 * `threadvisor_manager_attached_agents`, `threadvisor_manager_quarantined_agents` (`stats()`), counters
 * `threadvisor_manager_hibernations_total`, `threadvisor_manager_thaws_total`,
 * `threadvisor_manager_thaw_failures_total`, `threadvisor_manager_hibernate_failures_total`,
 * `threadvisor_manager_crashes_total` (its `agent:*` events); label `manager`.
 *
 * An instance's labelled counter series are removed when it is stopped (`instance:stopped`).
 */
export function collectMetrics(rt: Runtime<RuntimeMode>, options: CollectMetricsOptions): MetricsHandle {
  const o = parseOptions(rt, options);
  const { registry, perInstance } = o;
  const inst = perInstance ? ['instance'] : [];
  const registered: string[] = [];
  const undo: Array<() => void> = [];
  const listen = (emitter: Runtime | InstanceManager, event: string, fn: (p: Payload) => void): void => {
    const handler = (p: unknown): void => {
      if (typeof p === 'object' && p !== null) fn(p as Payload);
    };
    const on = emitter as EventEmitter;
    on.on(event, handler);
    undo.push(() => on.off(event, handler));
  };
  // Registered one by one: a name already taken throws, and only what this call registered is removed.
  const reg = <T extends Counter | Gauge | Histogram>(metric: T): T => {
    registry.registerMetric(metric);
    registered.push(nameOf(metric));
    return metric;
  };

  // One health snapshot per scrape, shared by every gauge that reads it (their collect() hooks all
  // run in the same turn of registry.metrics()).
  let health: Promise<InstanceHealth[]> | undefined;
  const snapshot = (): Promise<InstanceHealth[]> => {
    health ??= rt.listHealth().finally(() => {
      health = undefined;
    });
    return health;
  };

  const cells = new EventCells(perInstance);
  const count = (counter: Counter, instanceId: unknown, key: string, labels: () => Labels, by = 1): void => cells.add(counter, instanceId, key, labels, by);
  /** A counter fed by {@link count}. */
  const eventCounter = (name: string, help: string, labelNames: string[]): Counter =>
    reg(
      new Counter({
        name,
        help,
        labelNames,
        registers: [],
        collect() {
          this.reset();
          for (const cell of cells.series(this)) this.inc(cell.labels, cell.value);
        },
      }),
    );

  try {
    // ── instances by status ────────────────────────────────────────────────────────────────
    reg(
        new Gauge({
          name: 'threadvisor_instances',
          help: 'Instances of the runtime by status.',
          labelNames: ['status'],
          registers: [],
          collect() {
            const by = new Map<string, number>(INSTANCE_STATUSES.map((s) => [s, 0]));
            for (const s of rt.listInstances()) by.set(s.status, (by.get(s.status) ?? 0) + 1);
            this.reset();
            for (const [status, n] of by) this.set({ status }, n);
          },
        }),
    );

    // ── counters from events ───────────────────────────────────────────────────────────────
    const restarts = eventCounter('threadvisor_instance_restarts_total', 'Worker restarts and fresh starts of instances, by kind and class (instance:restart).', [...inst, 'kind', 'class']);
    const reconnects = eventCounter('threadvisor_reconnect_attempts_total', 'Reconnect attempts (instance:reconnect, phase attempt).', inst);
    const sends = eventCounter('threadvisor_sends_total', 'Settled sends by outcome: ok (delivered), failed (gave up), duplicate (answered by idempotency key).', [...inst, 'outcome']);
    const retries = eventCounter('threadvisor_send_retries_total', 'Send retries scheduled after recoverable failures (delivery:retry).', inst);
    const duration = reg(
      new Histogram({
        name: 'threadvisor_send_duration_seconds',
        help: 'Time from a send accepted into the queue to its receipt (delivery:delivered totalMs).',
        buckets: o.sendDurationBuckets,
        registers: [],
        collect() {
          sendDurations.flush();
        },
      }),
    );
    // Per send: kept locally, written into the histogram at scrape time.
    const sendDurations = new LocalHistogram(duration, o.sendDurationBuckets);

    const none = NO_LABELS;
    const ok = OK;
    listen(rt, 'instance:restart', (p) => {
      const kind = str(p['kind']);
      const cls = str(p['class']);
      count(restarts, p['instanceId'], `${kind}\u0000${cls}`, () => ({ kind, class: cls }));
    });
    listen(rt, 'instance:reconnect', (p) => {
      if (p['phase'] === 'attempt') count(reconnects, p['instanceId'], '', none);
    });
    // Send outcomes come from the runtime's delivery feed: deliveries once per run of acks, with
    // each send's accepted → receipt time (the `totalMs` of `delivery:delivered`), failures,
    // duplicates and retries where the queue publishes their events. No payload is built per
    // send and no listener is added to a queue. A runtime without a feed (another copy of the
    // library) is listened to instead.
    const failed = FAILED;
    const duplicate = DUPLICATE;
    const feed = deliveryFeedOf(rt);
    if (feed !== undefined) {
      undo.push(feed.add(new SendTap(cells, sends, retries, sendDurations)));
    } else {
      listen(rt, 'delivery:delivered', (p) => {
        count(sends, p['instanceId'], 'ok', ok);
        const ms = num(p['totalMs']);
        if (ms !== undefined) sendDurations.observe(ms / 1000);
      });
      listen(rt, 'delivery:gave_up', (p) => count(sends, p['instanceId'], 'failed', failed));
      listen(rt, 'delivery:skipped_duplicate', (p) => count(sends, p['instanceId'], 'duplicate', duplicate));
      listen(rt, 'delivery:retry', (p) => count(retries, p['instanceId'], '', none));
    }
    listen(rt, 'instance:stopped', (p) => {
      if (!perInstance) return;
      const id = str(p['instanceId']);
      cells.dropInstance(id);
    });

    // ── gauges from the health snapshot ───────────────────────────────────────────────────
    const healthGauge = (name: string, help: string, pick: (h: InstanceHealth) => number | null, aggregate: (values: number[]) => number | undefined): void => {
      reg(
          new Gauge({
            name,
            help,
            labelNames: inst,
            registers: [],
            async collect() {
              const all = await snapshot();
              this.reset();
              const values: number[] = [];
              for (const h of all) {
                const v = pick(h);
                if (v === null || !Number.isFinite(v)) continue;
                if (perInstance) this.set({ instance: h.instanceId }, v);
                else values.push(v);
              }
              if (!perInstance) {
                const v = aggregate(values);
                if (v !== undefined) this.set(v);
              }
            },
          }),
      );
    };
    const sum = (vs: number[]): number => vs.reduce((a, b) => a + b, 0);
    const max = (vs: number[]): number => vs.reduce((a, b) => Math.max(a, b), 0);
    const mean = (vs: number[]): number | undefined => (vs.length === 0 ? undefined : sum(vs) / vs.length);
    healthGauge('threadvisor_queue_depth', 'Sends waiting in the outbound queue (health senderQueueDepth).', (h) => h.senderQueueDepth, sum);
    healthGauge('threadvisor_queue_in_flight', 'Sends handed to the worker, not yet acknowledged (health inFlight).', (h) => h.inFlight, sum);
    healthGauge(
      'threadvisor_queue_pressure',
      'Outbound queue pressure level: 0 normal, 1 warn, 2 degraded, 3 shed (without instance: the highest).',
      (h) => PRESSURE_LEVELS.indexOf(h.pressure),
      max,
    );
    healthGauge(
      'threadvisor_heartbeat_age_seconds',
      'Seconds since the worker last answered a heartbeat (without instance: the oldest).',
      (h) => (h.worker?.lastHeartbeatAgeMs == null ? null : h.worker.lastHeartbeatAgeMs / 1000),
      max,
    );
    healthGauge('threadvisor_worker_elu', 'Event-loop utilisation (0..1) of the instance worker, from its last heartbeat (without instance: the mean).', (h) => h.worker?.elu ?? null, mean);
    healthGauge('threadvisor_worker_heap_bytes', 'V8 heap bytes in use by the instance worker, from its last heartbeat (without instance: the sum).', (h) => h.worker?.heapUsed ?? null, sum);

    // ── heartbeat round trips ──────────────────────────────────────────────────────────────
    // The runtime does not re-emit its worker hosts' heartbeats; they are published on the
    // diagnostics channel only, without the instance id: so this counts every worker host of the
    // process (all runtimes, supervisor worker children), and has no instance label.
    const rtt = reg(
      new Histogram({
        name: 'threadvisor_heartbeat_rtt_seconds',
        help: 'Heartbeat ping round trips of every threadvisor worker host in the process (threadvisor:worker:heartbeat).',
        buckets: o.heartbeatRttBuckets,
        registers: [],
      }),
    );
    const onBeat = (message: unknown): void => {
      const ms = num((message as Payload | null)?.['rttMs']);
      if (ms !== undefined) rtt.observe(ms / 1000);
    };
    const heartbeats = channelName('worker', 'heartbeat');
    diagnostics_channel.subscribe(heartbeats, onBeat);
    undo.push(() => diagnostics_channel.unsubscribe(heartbeats, onBeat));

    // ── manager ────────────────────────────────────────────────────────────────────────────
    const manager = o.manager;
    if (manager) {
      const statGauge = (name: string, help: string, pick: (s: ReturnType<InstanceManager['stats']>) => number): void => {
        reg(
            new Gauge({
              name,
              help,
              labelNames: ['manager'],
              registers: [],
              collect() {
                const s = manager.stats();
                this.reset();
                this.set({ manager: s.name }, pick(s));
              },
            }),
        );
      };
      statGauge('threadvisor_manager_resident_agents', 'Agents running in memory (stats().resident).', (s) => s.resident);
      statGauge('threadvisor_manager_hibernating_agents', 'Agents being saved on their way out (stats().hibernating).', (s) => s.hibernating);
      statGauge('threadvisor_manager_attached_agents', 'Agents held by at least one lease (stats().attached).', (s) => s.attached);
      statGauge('threadvisor_manager_quarantined_agents', 'Keys in quarantine (stats().quarantined).', (s) => s.quarantined);
      const events: Array<[string, string, string]> = [
        ['agent:hibernated', 'threadvisor_manager_hibernations_total', 'Agents saved and stopped (agent:hibernated).'],
        ['agent:thawed', 'threadvisor_manager_thaws_total', 'Agents started from a checkpoint (agent:thawed).'],
        ['agent:thaw_failed', 'threadvisor_manager_thaw_failures_total', 'Checkpoints that could not be read or restored (agent:thaw_failed).'],
        ['agent:hibernate_failed', 'threadvisor_manager_hibernate_failures_total', 'Failed hibernation saves (agent:hibernate_failed).'],
        ['agent:crashed', 'threadvisor_manager_crashes_total', 'Agent handle() throws (agent:crashed).'],
      ];
      for (const [event, name, help] of events) {
        const c = reg(new Counter({ name, help, labelNames: ['manager'], registers: [] }));
        listen(manager, event, () => c.inc({ manager: manager.name }));
      }
    }
  } catch (err) {
    for (const fn of undo) fn();
    for (const name of registered) if (registry.getSingleMetric(name)) registry.removeSingleMetric(name);
    throw err;
  }

  let stopped = false;
  return {
    stop(): void {
      if (stopped) return;
      stopped = true;
      for (const fn of undo) fn();
      for (const name of registered) registry.removeSingleMetric(name);
      cells.clear();
    },
  };
}
