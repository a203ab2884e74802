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
      // @vitest/coverage-v8 plus the V8 coverage of the worker threads the tests start, which run
      // the built dist/ files and are mapped back to the .ts sources (scripts/coverage-provider.mjs).
      provider: 'custom',
      customProviderModule: './scripts/coverage-provider.mjs',
      include: ['src/**/*.ts', 'workers/**/*.ts'],
      reporter: ['text-summary', 'text'],
      thresholds: { lines: 90 },
    },
  },
});
