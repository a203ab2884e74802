/**
 * A worker loads only what it runs: the instance worker's module graph (compiled, as the runtime
 * spawns it) holds the wire layer, the channel contract, the error classes and the worker's own
 * files, and nothing of the main thread's (no outbound queue, telemetry, supervisor, runtime or
 * manager code) and no pino. The runtime spawns the same graph bundled in one script
 * (`scripts/bundle-worker.mjs`, run by `workers/instance-worker-script.ts`). Run after `npm run build`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { moduleGraph } from '../bench/module-graph.js';

const root = fileURLToPath(new URL('../dist/', import.meta.url));
const entry = `${root}workers/instance-worker.js`;

/** What the worker side may load of the project. */
const ALLOWED = [/^src\/wire\/[\w-]+\.js$/, /^src\/channel\.js$/, /^src\/errors\.js$/, /^workers\/([\w-]+\/)*[\w-]+\.js$/];

describe('the instance worker module graph', { timeout: 30_000 }, () => {
  it('holds no main-thread module and no pino', () => {
    expect(existsSync(entry), 'run npm run build first').toBe(true);
    const g = moduleGraph(entry, root);
    const foreign = g.files.filter((f) => !ALLOWED.some((re) => re.test(f)));
    expect(foreign.map((f) => `${f} (imported by ${(g.importers.get(f) ?? []).join(', ')})`)).toEqual([]);
    // comlink serves the control port; nothing else (no zod: the channel check is hand-written).
    expect(g.packages).toEqual(['comlink']);
    expect(g.files).toContain('src/wire/protocol.js');
  });

  it('what the runtime spawns is that graph bundled in one script, whose loader imports only node builtins and the two shared modules', async () => {
    const bundle = `${root}workers/instance-worker.bundle.cjs`;
    expect(existsSync(bundle), 'run npm run build first').toBe(true);
    const g = moduleGraph(`${root}workers/instance-worker-script.js`, root);
    // comlink and the worker's own files are inside the script; the channel contract and the error
    // classes stay shared with the channel modules (one class per error, one contract).
    expect([...g.files].sort()).toEqual(['src/channel.js', 'src/errors.js', 'workers/instance-worker-script.js']);
    expect(g.packages).toEqual([]);
    // The script requires what the loader lends it, no more and no less.
    const required = new Set([...readFileSync(bundle, 'utf8').matchAll(/\brequire\("([^"]+)"\)/g)].map((m) => m[1]));
    const { SCRIPT_REQUIRES } = (await import('../dist/workers/instance-worker-script.js')) as { SCRIPT_REQUIRES: Record<string, unknown> };
    expect([...required].sort()).toEqual(Object.keys(SCRIPT_REQUIRES).sort());
  });

  it('the channel entry point (threadvisor/channel) loads only the contract and the error classes', () => {
    const g = moduleGraph(`${root}src/channel-api.js`, root);
    expect([...g.files].sort()).toEqual(['src/channel-api.js', 'src/channel.js', 'src/errors.js']);
    expect(g.packages).toEqual([]);
  });

  it('the walk follows static, re-export and dynamic imports', () => {
    const g = moduleGraph(`${root}src/index.js`, root);
    // The package entry reaches the main-thread modules through re-exports, and pino through telemetry.
    expect(g.files).toContain('src/runtime/outbound/queue.js');
    expect(g.files).toContain('src/telemetry.js');
    expect(g.packages).toContain('pino');
    const w = moduleGraph(entry, root);
    expect(w.files).toContain('src/channel.js'); // loaded with a dynamic import
  });
});
