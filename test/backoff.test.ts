import { describe, expect, it, vi } from 'vitest';
import {
  IntensityWindow,
  backoffDelay,
  backoffFloor,
  backoffOptionsSchema,
  resolveBackoff,
  seededRandom,
} from '../src/supervisor/backoff.js';

const policy = (o: Record<string, unknown> = {}) => resolveBackoff(backoffOptionsSchema.parse(o));

describe('backoffDelay', () => {
  it('doubles from initialDelayMs up to maxDelayMs without jitter', () => {
    const p = policy({ initialDelayMs: 100, maxDelayMs: 1000, jitter: 0 });
    expect([0, 1, 2, 3, 4, 5, 50, 5000].map((n) => backoffDelay(p, n))).toEqual([100, 200, 400, 800, 1000, 1000, 1000, 1000]);
  });

  it('stays within [floor, maxDelayMs] for any random value and attempt', () => {
    const rnd = seededRandom(42);
    const p = policy({ initialDelayMs: 50, maxDelayMs: 2000, jitter: 0.5, random: rnd });
    const floor = backoffFloor(p);
    expect(floor).toBe(25);
    for (let n = 0; n < 2000; n++) {
      const d = backoffDelay(p, n % 40);
      expect(d).toBeGreaterThanOrEqual(floor);
      expect(d).toBeLessThanOrEqual(2000);
    }
  });

  it('spreads ±jitter around the nominal delay at the extremes of random', () => {
    const lo = policy({ initialDelayMs: 100, maxDelayMs: 10_000, jitter: 0.2, random: () => 0 });
    const hi = policy({ initialDelayMs: 100, maxDelayMs: 10_000, jitter: 0.2, random: () => 0.999999 });
    expect(backoffDelay(lo, 2)).toBeCloseTo(320, 5);
    expect(backoffDelay(hi, 2)).toBeCloseTo(480, 2);
    // near the cap the upward jitter is clipped
    expect(backoffDelay({ ...hi, maxDelayMs: 400 }, 2)).toBe(400);
  });

  it('is immediate when initialDelayMs is 0 (OTP behaviour)', () => {
    expect(backoffDelay(policy({ initialDelayMs: 0, maxDelayMs: 0 }), 7)).toBe(0);
  });

  it('is reproducible with a seeded random source', () => {
    const a = policy({ random: seededRandom(7) });
    const b = policy({ random: seededRandom(7) });
    const xs = Array.from({ length: 10 }, (_, i) => backoffDelay(a, i));
    const ys = Array.from({ length: 10 }, (_, i) => backoffDelay(b, i));
    expect(xs).toEqual(ys);
    expect(new Set(xs).size).toBeGreaterThan(1);
  });

  it('rejects invalid options with the bad paths', () => {
    const r = backoffOptionsSchema.safeParse({ initialDelayMs: 10, maxDelayMs: 5, jitter: 2 });
    expect(r.success).toBe(false);
    const paths = r.error!.issues.map((i) => i.path.join('.'));
    expect(paths).toContain('jitter');
  });
  it('rejects maxDelayMs below initialDelayMs', () => {
    const r = backoffOptionsSchema.safeParse({ initialDelayMs: 10, maxDelayMs: 5 });
    expect(r.error!.issues.map((i) => i.path.join('.'))).toEqual(['maxDelayMs']);
  });
});

describe('seededRandom', () => {
  it('yields values in [0, 1)', () => {
    const r = seededRandom(1);
    for (let i = 0; i < 10_000; i++) {
      const x = r();
      expect(x >= 0 && x < 1).toBe(true);
    }
  });
});

describe('IntensityWindow', () => {
  it('is exceeded by more than maxRestarts restarts within the period, with fake timers', () => {
    vi.useFakeTimers();
    try {
      const w = new IntensityWindow(3, 5000, () => Date.now());
      expect(w.record()).toBe(false);
      expect(w.record()).toBe(false);
      expect(w.record()).toBe(false);
      expect(w.count()).toBe(3);
      expect(w.record()).toBe(true); // the 4th within 5 s
      vi.advanceTimersByTime(5000);
      expect(w.count()).toBe(0);
      expect(w.record()).toBe(false);
    } finally {
      vi.useRealTimers();
    }
  });

  it('slides: old restarts leave the window one by one', () => {
    let t = 0;
    const w = new IntensityWindow(2, 1000, () => t);
    w.record();
    t = 600;
    w.record();
    t = 1100; // the first has left the window
    expect(w.record()).toBe(false);
    t = 1200;
    expect(w.record()).toBe(true);
    w.reset();
    expect(w.count()).toBe(0);
  });

  it('intensity 0 escalates on the first restart', () => {
    expect(new IntensityWindow(0, 1000).record()).toBe(true);
  });
});
