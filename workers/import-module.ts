/**
 * The worker side's dynamic `import()`, and its code cache. The runtime runs the instance worker
 * bundled as a script (see `instance-worker-script.ts`), and a script compiled by `node:vm` cannot
 * `import()` by itself: its loader, an ES module, lends it its own `import()` under
 * {@link IMPORT_HOOK}, and what makes the script's code cache under {@link CODE_CACHE_HOOK}. Run
 * as modules (the unbundled files, `threadvisor/worker` in a user's worker), this falls back to
 * `import()`, and there is no code cache.
 *
 * @packageDocumentation
 */

/** Where the script's loader puts its `import()` (a global of the worker thread). */
export const IMPORT_HOOK = Symbol.for('threadvisor.importModule');

/** `import(specifier)`, through the loader's hook when there is one. */
export function importModule(specifier: string): Promise<unknown> {
  const hook = (globalThis as { [IMPORT_HOOK]?: (specifier: string) => Promise<unknown> })[IMPORT_HOOK];
  return hook === undefined ? import(specifier) : hook(specifier);
}

/** Where the script's loader puts what makes its code cache (see `instance-worker-script.ts`). */
export const CODE_CACHE_HOOK = Symbol.for('threadvisor.codeCache');

/** V8's code cache of the script this thread runs, as compiled so far; undefined when it does not run as a script. */
export function scriptCodeCache(): Uint8Array | undefined {
  const hook = (globalThis as { [CODE_CACHE_HOOK]?: () => Uint8Array })[CODE_CACHE_HOOK];
  return hook?.();
}
