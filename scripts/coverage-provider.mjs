// @ts-check
/**
 * The coverage provider behind `vitest run --coverage`: @vitest/coverage-v8, plus the code that runs
 * in the worker threads (and child processes) the tests start.
 *
 * @vitest/coverage-v8 only sees the isolate of each test file's process; the instance workers run
 * the built `dist/workers/**` and `dist/src/**` in threads of their own. Node writes V8 coverage
 * for every thread and process that starts with `NODE_V8_COVERAGE` set, so:
 *
 * 1. `initialize` points `NODE_V8_COVERAGE` at `<reportsDirectory>/.v8-threads` in vitest's own
 *    environment, which the test-file processes vitest forks (and every thread and process they
 *    start) inherit. Setting it in `new Worker({ env })` would not do (nodejs/node#46378).
 * 2. `generateCoverage` lets vitest build its coverage map, then reads the raw files, keeps the
 *    scripts under the project root (not `node_modules`) that have a source map next to them
 *    (the `tsc` build writes `dist/**\/*.js.map`), merges each script's counts over all threads and
 *    processes, maps them back to the `.ts` sources with the converter vitest itself uses
 *    (ast-v8-to-istanbul) and merges the result into vitest's map, for the files `coverage.include`
 *    selects. A file vitest saw but never executed (an all-zero entry for an untested file) is
 *    replaced by the threads' coverage; one both executed is merged, statement by statement.
 * 3. Reports and `coverage.thresholds` then apply to the combined map as usual.
 *
 * Threads still running when their process is killed write nothing; the tests stop what they start.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import v8 from '@vitest/coverage-v8';

/** @typedef {import('vitest/node').CoverageProvider} CoverageProvider */
/** @typedef {{ url: string, scriptId?: string, functions: Array<{ functionName: string, isBlockCoverage: boolean, ranges: Array<{ startOffset: number, endOffset: number, count: number }> }> }} ScriptCov */

const RAW_DIR = '.v8-threads';

/** @type {import('vitest/node').CoverageProviderModule} */
export default {
  ...v8,
  async getProvider() {
    return withThreadCoverage(/** @type {any} */ (await v8.getProvider()));
  },
};

/**
 * @param {any} provider the V8CoverageProvider instance (its `options`, `ctx`, `isIncluded` are
 *   BaseCoverageProvider members)
 * @returns {CoverageProvider}
 */
function withThreadCoverage(provider) {
  const { initialize, clean, cleanAfterRun, generateCoverage } = provider;
  let rawDir = '';

  provider.initialize = function (/** @type {any} */ ctx) {
    initialize.call(this, ctx);
    rawDir = resolve(this.options.reportsDirectory, RAW_DIR);
    process.env.NODE_V8_COVERAGE = rawDir;
  };
  provider.clean = async function (/** @type {boolean | undefined} */ cleanReports) {
    await clean.call(this, cleanReports);
    await rm(rawDir, { recursive: true, force: true, maxRetries: 10 });
  };
  provider.cleanAfterRun = async function () {
    // Before vitest's own cleanup, which removes the reports directory when it is left empty.
    await rm(rawDir, { recursive: true, force: true, maxRetries: 10 });
    await cleanAfterRun.call(this);
  };
  provider.generateCoverage = async function (/** @type {any} */ context) {
    const map = await generateCoverage.call(this, context);
    const threads = await convertThreadCoverage(this, rawDir);
    for (const file of threads.files()) {
      const ours = threads.fileCoverageFor(file).data;
      if (map.files().includes(file)) {
        const theirs = map.fileCoverageFor(file).data;
        if (Object.values(theirs.s).some((count) => count > 0)) alignLocations(theirs, ours);
        else map.filter((/** @type {string} */ f) => f !== file);
      }
      map.addFileCoverage(ours);
    }
    return map;
  };
  return provider;
}

/** @typedef {{ line: number, column: number }} Position */
/** @typedef {{ start: Position, end: Position }} Range */
/**
 * @typedef {{
 *   statementMap: Record<string, Range>,
 *   fnMap: Record<string, { name: string, decl: Range, loc: Range }>,
 *   branchMap: Record<string, { type: string, loc: Range, locations: Range[] }>,
 *   s: Record<string, number>,
 * }} FileCoverageData
 */

/**
 * Istanbul merges statements, functions and branches whose ranges are identical. Both sides come
 * from the same converter and the same `.ts` file, but through different source maps (vite's
 * transform for the test processes, `tsc`'s for `dist/`): they agree on lines, not always on
 * columns (where a statement ends, where an arrow function or a body after a stripped type
 * starts). Give each of `source`'s items the ranges of the `target` item it stands for, so they
 * merge instead of being counted twice.
 * @param {FileCoverageData} target
 * @param {FileCoverageData} source
 */
function alignLocations(target, source) {
  const statements = pair(Object.values(target.statementMap), Object.values(source.statementMap), (range) => range.start);
  for (const [id, range] of Object.entries(source.statementMap)) source.statementMap[id] = statements.get(range) ?? range;

  const functions = pair(Object.values(target.fnMap), Object.values(source.fnMap), (fn) => fn.decl.start);
  for (const [fn, match] of functions) Object.assign(fn, { decl: match.decl, loc: match.loc });

  const branches = pair(Object.values(target.branchMap), Object.values(source.branchMap), (branch) => branch.loc.start, (branch) => `${branch.type}/${branch.locations.length}`);
  for (const [branch, match] of branches) Object.assign(branch, { loc: match.loc, locations: match.locations });
}

/**
 * Pairs each source item with the target item of the same kind that starts at the same position;
 * the items left over on a line are paired in column order when both sides have as many there.
 * @template T
 * @param {T[]} targets
 * @param {T[]} sources
 * @param {(item: T) => Position} startOf
 * @param {(item: T) => string} [kindOf]
 * @returns {Map<T, T>} source item → target item
 */
function pair(targets, sources, startOf, kindOf = () => '') {
  /** @param {T[]} items @param {(item: T) => string} keyOf */
  const groupBy = (items, keyOf) => {
    /** @type {Map<string, T[]>} */
    const groups = new Map();
    for (const item of items) groups.set(keyOf(item), [...(groups.get(keyOf(item)) ?? []), item]);
    return groups;
  };
  /** @param {T} item */
  const line = (item) => `${kindOf(item)}@${startOf(item).line}`;
  /** @param {T} item */
  const position = (item) => `${line(item)}:${startOf(item).column}`;

  /** @type {Map<T, T>} */
  const pairs = new Map();
  const exact = groupBy(targets, position);
  /** @type {T[]} */
  const unpaired = [];
  for (const item of sources) {
    const match = exact.get(position(item))?.shift();
    if (match) pairs.set(item, match);
    else unpaired.push(item);
  }
  const left = groupBy([...exact.values()].flat(), line);
  for (const [key, items] of groupBy(unpaired, line)) {
    const candidates = left.get(key);
    if (candidates?.length !== items.length) continue;
    const byColumn = (/** @type {T} */ a, /** @type {T} */ b) => startOf(a).column - startOf(b).column;
    candidates.sort(byColumn);
    items.sort(byColumn).forEach((item, i) => pairs.set(item, /** @type {T} */ (candidates[i])));
  }
  return pairs;
}

/**
 * Raw V8 coverage in `dir` → Istanbul coverage data of the included source files.
 * @param {any} provider
 * @param {string} dir
 * @returns {Promise<any>} an istanbul-lib-coverage CoverageMap
 */
async function convertThreadCoverage(provider, dir) {
  const { mergeScriptCovs } = await import('@bcoe/v8-coverage');
  const { default: astV8ToIstanbul } = await import('ast-v8-to-istanbul');
  const { parseAstAsync } = await import('vitest/node');

  const rootUrl = `${pathToFileURL(provider.ctx.config.root).href}/`;
  /** @type {Map<string, ScriptCov[]>} */
  const byUrl = new Map();
  const names = existsSync(dir) ? (await readdir(dir)).filter((n) => /^coverage-.*\.json$/.test(n)) : [];
  for (const name of names) {
    const raw = await readCoverageFile(provider, join(dir, name));
    for (const script of raw?.result ?? []) {
      if (!script.url.startsWith(rootUrl) || script.url.includes('/node_modules/') || !/\.[cm]?js$/.test(script.url)) continue;
      const list = byUrl.get(script.url) ?? [];
      list.push(script);
      byUrl.set(script.url, list);
    }
  }

  const result = provider.createCoverageMap();
  for (const [url, scripts] of byUrl) {
    const path = fileURLToPath(url);
    const code = await readFile(path, 'utf8').catch(() => null);
    // Only build output that maps back to sources; anything else (vitest's own transforms of the
    // test files' modules) is vitest's coverage already.
    if (code === null || !/\/\/# sourceMappingURL=\S+\.map\s*$/.test(code)) continue;
    const merged = mergeScriptCovs(scripts);
    if (!merged) continue;
    const data = await astV8ToIstanbul({
      code,
      ast: parseAstAsync(code),
      coverage: { url, functions: merged.functions },
      ignoreClassMethods: provider.options.ignoreClassMethods,
    });
    for (const [file, fileData] of Object.entries(data)) {
      if (provider.isIncluded(file) && existsSync(file)) result.merge({ [file]: fileData });
    }
  }
  return result;
}

/**
 * A process that is being stopped may still be writing its file when the run ends: retry a few
 * times, then skip it with a warning (the threads of interest wrote theirs when they exited).
 * @param {any} provider
 * @param {string} file
 * @returns {Promise<{ result: ScriptCov[] } | null>}
 */
async function readCoverageFile(provider, file) {
  for (let attempt = 0; ; attempt++) {
    try {
      return JSON.parse(await readFile(file, 'utf8'));
    } catch (error) {
      if (attempt === 5) {
        provider.ctx.logger.warn(`Skipping unreadable V8 coverage file ${file}: ${String(error)}`);
        return null;
      }
      await sleep(200);
    }
  }
}
