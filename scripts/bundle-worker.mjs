// @ts-check
/**
 * The build's second step (after `tsc`): the instance worker and everything it imports, comlink
 * included, in one script, `dist/workers/instance-worker.bundle.cjs`, which the thread the runtime
 * spawns (`workers/instance-worker-script.ts`) compiles with V8's code cache and runs.
 *
 * The script is one function expression, `(function (require, module, exports) { … })`: its
 * `require` is the loader's, which answers the node builtins it imports and the two shared
 * modules below (ES modules the loader imported), and nothing else. A script, not an ES module,
 * because Node 20 takes a code cache only for scripts (`vm.Script`); so no top-level await, and
 * dynamic imports go through `workers/import-module.ts`.
 *
 * Why: a worker thread starts with an empty module cache, so every instance worker that starts or
 * restarts loads its modules again. Resolving, reading and linking about twenty files cost more
 * than the code in them (measured: 30 ms against 11 ms for the same code in one file, on a
 * machine where a bare `new Worker` takes about 50 ms to its first message).
 *
 * Two modules stay outside, imported from `dist/src/` as they are: `src/channel.js` (the channel
 * contract) and `src/errors.js` (the error classes). Channel modules import them too, through the
 * package's entry points, and must see the same module instances: one `FatalError` class, one
 * contract. They import nothing at run time themselves.
 *
 * The source map points at the `.ts` sources, so the worker threads' coverage maps back to them
 * (scripts/coverage-provider.mjs). The unbundled `dist/workers/instance-worker.js` stays too: it
 * runs the same code module by module (tests walk its import graph).
 */
import { build } from 'esbuild';
import { fileURLToPath, URL } from 'node:url';
import { resolve } from 'node:path';

const root = fileURLToPath(new URL('..', import.meta.url));
/** Sources kept outside the bundle → the import the bundle uses (relative to `dist/workers/`). */
const EXTERNAL = new Map([
  [resolve(root, 'src/channel.ts'), '../src/channel.js'],
  [resolve(root, 'src/errors.ts'), '../src/errors.js'],
]);

await build({
  entryPoints: [resolve(root, 'workers/instance-worker.ts')],
  outfile: resolve(root, 'dist/workers/instance-worker.bundle.cjs'),
  bundle: true,
  platform: 'node',
  format: 'cjs',
  // One function expression: the loader runs it with its `require` (see the header).
  banner: { js: '(function (require, module, exports) {' },
  footer: { js: '})' },
  target: 'node20',
  sourcemap: 'linked',
  logLevel: 'warning',
  plugins: [
    {
      name: 'shared-modules',
      setup(b) {
        b.onResolve({ filter: /\/(channel|errors)\.js$/ }, (args) => {
          const source = resolve(args.resolveDir, args.path).replace(/\.js$/, '.ts');
          const external = EXTERNAL.get(source);
          return external ? { path: external, external: true } : undefined;
        });
      },
    },
  ],
});
