import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Worker-thread tests spawn real threads; keep files from competing for 2 cores too hard.
    maxWorkers: 2,
    reporters: ['default', 'json'],
    outputFile: { json: 'test-results/results.json' },
    coverage: {
      provider: 'v8',
      include: ['src/**/*.ts'],
      reporter: ['text-summary', 'text'],
      thresholds: { lines: 90 },
    },
  },
});
