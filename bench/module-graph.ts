/**
 * The module graph a compiled entry loads: a static walk of its `import … from`, `export … from`,
 * side-effect `import '…'` and string-literal `import('…')` specifiers (type-only imports are
 * gone from compiled JavaScript). Relative specifiers are followed; bare ones are recorded as
 * packages (by package name) and not followed; `node:` built-ins are left out.
 */
import { readFileSync } from 'node:fs';
import { dirname, relative, resolve } from 'node:path';

/** What an entry loads. */
export interface ModuleGraph {
  /** Project files, relative to `root`, in the order first reached. */
  readonly files: string[];
  /** Packages imported by any of those files (`pino`, `@scope/name`). */
  readonly packages: string[];
  /** For each file, the files that import it (to explain how a module was reached). */
  readonly importers: ReadonlyMap<string, string[]>;
}

const SPECIFIER = /(?:^|[\s;}])(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;}])import\s*['"]([^'"]+)['"]|\bimport\(\s*['"]([^'"]+)['"]\s*\)/g;

function packageName(spec: string): string {
  const parts = spec.split('/');
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : (parts[0] as string);
}

/** Walks the graph of the compiled module `entry` (an absolute path); paths are given relative to `root`. */
export function moduleGraph(entry: string, root: string): ModuleGraph {
  const files: string[] = [];
  const packages = new Set<string>();
  const importers = new Map<string, string[]>();
  const seen = new Set<string>();
  const queue = [resolve(entry)];
  while (queue.length > 0) {
    const file = queue.shift() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    files.push(relative(root, file));
    // Comments go first: a doc example's `import … from 'threadvisor'` is not an import.
    const text = readFileSync(file, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
    for (const m of text.matchAll(SPECIFIER)) {
      const spec = (m[1] ?? m[2] ?? m[3]) as string;
      if (spec.startsWith('node:')) continue;
      if (spec.startsWith('.')) {
        const target = resolve(dirname(file), spec);
        const key = relative(root, target);
        importers.set(key, [...(importers.get(key) ?? []), relative(root, file)]);
        queue.push(target);
      } else packages.add(packageName(spec));
    }
  }
  return { files, packages: [...packages].sort(), importers };
}
