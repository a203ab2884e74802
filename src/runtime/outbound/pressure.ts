/**
 * The pressure level of an outbound queue from its depth, with hysteresis: the thresholds as
 * depths, the current level and the depth range `[lower, upper)` in which it holds. The queue
 * publishes `instance:pressure` when the level changes.
 *
 * @packageDocumentation
 */
import type { PressureOptions } from './types.js';

/** The pressure level of one queue; levels index `PRESSURE_LEVELS` (0 normal … 3 shed). */
export class PressureGauge {
  /** Current level. */
  level = 0;
  /** The level holds while depth is at least this. */
  lower = 0;
  /** … and below this. */
  upper = 0;
  readonly #capacity: number;
  /** Level thresholds: `#enter[k]` = min depth of level k, `#stay[k]` = min depth to remain in k. */
  readonly #enter: number[];
  readonly #stay: number[];

  /** @param p Thresholds as validated (every field set). */
  constructor(capacity: number, p: Required<PressureOptions>) {
    this.#capacity = capacity;
    const t = [0, p.warn, p.degraded, p.shed];
    this.#enter = t.map((r) => this.#minDepth(r));
    this.#stay = t.map((r, k) => (k === 0 ? 0 : this.#minDepth(r - p.hysteresis)));
    this.#setBounds();
  }

  /** Smallest depth d with d / capacity >= r (the exact comparison the levels are defined by). */
  #minDepth(r: number): number {
    const cap = this.#capacity;
    let d = Math.max(0, Math.ceil(r * cap));
    while (d > 0 && (d - 1) / cap >= r) d--;
    while (d / cap < r) d++;
    return d;
  }

  #setBounds(): void {
    const k = this.level;
    this.lower = this.#stay[k] as number;
    this.upper = k === 3 ? Infinity : (this.#enter[k + 1] as number);
  }

  /**
   * Recomputes the level after the depth `d` left `[lower, upper)`. Returns the previous level
   * when the level changed, else -1.
   */
  update(d: number): number {
    const previous = this.level;
    let level = previous;
    if (d >= this.upper) {
      level = 3;
      while (d < (this.#enter[level] as number)) level--;
    } else if (d < this.lower) {
      level = previous - 1;
      while (level > 0 && d < (this.#stay[level] as number)) level--;
    }
    if (level === previous) return -1;
    this.level = level;
    this.#setBounds();
    return previous;
  }
}
