/** Shared helpers of the bench scripts: stats, tables, result files. */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';

export const quick = process.argv.includes('--quick');

/** Percentile of a sample (nearest rank). */
export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
}

/** Median, p90 and mean of a sample, rounded to 0.01. */
export function summary(xs: number[]): { median: number; p90: number; mean: number; n: number } {
  const r = (x: number) => Math.round(x * 100) / 100;
  return { median: r(pct(xs, 50)), p90: r(pct(xs, 90)), mean: r(xs.reduce((a, b) => a + b, 0) / xs.length), n: xs.length };
}

/** One comparison row: a figure, its baseline, the ratio, and the target it is held to. */
export interface Comparison {
  name: string;
  unit: string;
  value: number;
  baselineName: string;
  baseline: number;
  ratio: number;
  target: string;
  /** Whether the target is met; null for an informational figure (no target). */
  met: boolean | null;
}

export function compare(name: string, unit: string, value: number, baselineName: string, baseline: number, target: { max?: number; min?: number } = {}): Comparison {
  const ratio = Math.round((value / baseline) * 100) / 100;
  const info = target.max === undefined && target.min === undefined;
  const met = info ? null : (target.max === undefined || ratio <= target.max) && (target.min === undefined || ratio >= target.min);
  const t = target.max !== undefined ? `<= ${target.max}x` : target.min !== undefined ? `>= ${target.min}x` : 'info';
  return { name, unit, value, baselineName, baseline, ratio, target: t, met };
}

/** Prints a table and writes `bench/results/<name>.json` with the machine it ran on. */
export function report(name: string, rows: Comparison[], extra: Record<string, unknown> = {}): void {
  console.log(`\n## ${name}${quick ? ' (quick)' : ''}`);
  console.table(
    rows.map((r) => ({ figure: r.name, value: `${r.value} ${r.unit}`, baseline: `${r.baselineName}: ${r.baseline} ${r.unit}`, ratio: r.ratio, target: r.target, met: r.met })),
  );
  const dir = new URL('../../bench/results/', import.meta.url);
  mkdirSync(dir, { recursive: true });
  const file = new URL(`${name}.json`, dir);
  const doc = {
    name,
    date: new Date().toISOString(),
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    quick,
    comparisons: rows,
    ...extra,
  };
  writeFileSync(file, `${JSON.stringify(doc, null, 2)}\n`);
  console.log(`wrote ${file.pathname}`);
}
