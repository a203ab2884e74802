/**
 * The series a Prometheus collector (`collectMetrics`, src/prometheus.ts) keeps on the send
 * path between scrapes: histograms observed here and written into prom-client at scrape time,
 * event counts in plain cells, and the collector's tap on the runtime's delivery feed.
 *
 * @packageDocumentation
 */
import type { Counter, Histogram } from 'prom-client';
import type { DeliveryTap, FedEvent } from './runtime/outbound/feed.js';

/** A series' label set. */
export type Labels = Record<string, string>;

/** A label value from an event's field: the string, or `fallback` when it is not a non-empty one. */
export const str = (v: unknown, fallback = 'unknown'): string => (typeof v === 'string' && v.length > 0 ? v : fallback);

/** prom-client's state of an unlabelled histogram (per-bound counts, not cumulative). */
interface HistogramEntry {
  bucketValues: Record<string, number>;
  sum: number;
  count: number;
}

/** The unlabelled histogram's state, when it has the shape this module knows (else undefined). */
function histogramEntry(h: Histogram): HistogramEntry | undefined {
  const map = (h as unknown as { hashMap?: Record<string, Partial<HistogramEntry>> }).hashMap;
  if (typeof map !== 'object' || map === null) return undefined;
  if (Object.keys(map).length === 0) h.zero({});
  const e = Object.values(map)[0];
  return e !== undefined && typeof e.bucketValues === 'object' && e.bucketValues !== null && typeof e.sum === 'number' && typeof e.count === 'number' ? (e as HistogramEntry) : undefined;
}

/**
 * Observations of an unlabelled histogram kept here (a bucket search and three adds per value:
 * prom-client's own `observe` builds and hashes a label set each time) and written into the
 * histogram at scrape time. When prom-client's internals are not the expected shape, every value
 * goes through `observe` instead.
 *
 * A class, like {@link EventCells} and {@link SendTap}: the send path calls the same functions
 * whichever collector it feeds (a collector started after another one does not meet code
 * specialised to the closures of the first).
 */
export class LocalHistogram {
  readonly #h: Histogram;
  readonly #buckets: readonly number[];
  readonly #local: boolean;
  readonly #counts: Float64Array;
  #sum = 0;
  #n = 0;

  constructor(h: Histogram, buckets: readonly number[]) {
    this.#h = h;
    this.#buckets = buckets;
    this.#local = histogramEntry(h) !== undefined;
    this.#counts = new Float64Array(buckets.length);
  }

  observe(v: number): void {
    if (!this.#local) {
      this.#h.observe(v);
      return;
    }
    const buckets = this.#buckets;
    let i = 0;
    while (i < buckets.length && v > (buckets[i] as number)) i++;
    if (i < buckets.length) this.#counts[i] = (this.#counts[i] as number) + 1;
    this.#sum += v;
    this.#n++;
  }

  flush(): void {
    if (!this.#local) return;
    const e = histogramEntry(this.#h);
    if (e === undefined) return;
    const buckets = this.#buckets;
    for (let i = 0; i < buckets.length; i++) e.bucketValues[String(buckets[i])] = this.#counts[i] as number;
    e.sum = this.#sum;
    e.count = this.#n;
  }
}

/** One counter series kept here: its labels and its value. */
export interface Cell {
  labels: Labels;
  value: number;
}

/**
 * Event counts accumulated in plain cells (per counter, per instance, per label key): one Map
 * lookup and an add per event, on the send path. The counters read them at scrape time
 * (collect), so prom-client hashes labels once per series and scrape, not once per event. An
 * instance's cells go when it stops (ids churn: no unbounded growth).
 */
export class EventCells {
  readonly #perInstance: boolean;
  readonly #cells = new Map<Counter, Map<string, Map<string, Cell>>>();

  constructor(perInstance: boolean) {
    this.#perInstance = perInstance;
  }

  /** Adds `by` to `counter`'s series `key` of `instanceId` (`labels` built once, for a new series). */
  add(counter: Counter, instanceId: unknown, key: string, labels: () => Labels, by = 1): void {
    const perInstance = this.#perInstance;
    const id = perInstance ? str(instanceId) : '';
    let byInstance = this.#cells.get(counter);
    if (!byInstance) this.#cells.set(counter, (byInstance = new Map()));
    let byKey = byInstance.get(id);
    if (!byKey) byInstance.set(id, (byKey = new Map()));
    const cell = byKey.get(key);
    if (cell) cell.value += by;
    else byKey.set(key, { labels: perInstance ? { instance: id, ...labels() } : labels(), value: by });
  }

  /** Every series of `counter`. */
  *series(counter: Counter): Iterable<Cell> {
    for (const byKey of this.#cells.get(counter)?.values() ?? []) yield* byKey.values();
  }

  /** Forgets the series of instance `id`. */
  dropInstance(id: string): void {
    for (const byInstance of this.#cells.values()) byInstance.delete(id);
  }

  clear(): void {
    this.#cells.clear();
  }
}

/** The label sets of the counters the feed adds to, built once per new series. */
export const NO_LABELS = (): Labels => ({});
export const OK = (): Labels => ({ outcome: 'ok' });
export const FAILED = (): Labels => ({ outcome: 'failed' });
export const DUPLICATE = (): Labels => ({ outcome: 'duplicate' });

/** A collector's tap on the runtime's delivery feed (see src/runtime/outbound/feed.ts). */
export class SendTap implements DeliveryTap {
  constructor(
    readonly cells: EventCells,
    readonly sends: Counter,
    readonly retries: Counter,
    readonly durations: LocalHistogram,
  ) {}

  delivered(instanceId: string, n: number, totalMs: Float64Array): void {
    this.cells.add(this.sends, instanceId, 'ok', OK, n);
    const d = this.durations;
    for (let i = 0; i < n; i++) d.observe((totalMs[i] as number) / 1000);
  }

  event(instanceId: string, event: FedEvent): void {
    if (event === 'delivery:gave_up') this.cells.add(this.sends, instanceId, 'failed', FAILED);
    else if (event === 'delivery:skipped_duplicate') this.cells.add(this.sends, instanceId, 'duplicate', DUPLICATE);
    else this.cells.add(this.retries, instanceId, '', NO_LABELS);
  }
}

