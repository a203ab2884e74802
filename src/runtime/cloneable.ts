/**
 * A cheap check, at the edge, that a value can cross a thread boundary by structured clone: a
 * send (`rt.send`, `rt.sendMany`) or an instance's credentials and settings (`startInstance`)
 * that holds a function, a symbol or an object structured clone refuses (a `WeakMap`, a
 * `Promise`, a `MessagePort` not transferred, ...) is refused there, with the path of the bad
 * value, instead of failing later inside the data plane.
 *
 * The hot path stays cheap: primitives, arrays and plain objects (class instances included:
 * structured clone copies their own enumerable properties) are walked with `typeof` checks only.
 * Only a value of another built-in kind (a `Map`, a `Set`, an `Error`, anything with its own
 * `Symbol.toStringTag`) is handed to `structuredClone` to find out, that value alone.
 *
 * @packageDocumentation
 */

/** Where the first value that cannot be cloned is (`$.a[2].b`) and what it is (never the value itself). */
export interface CloneProblem {
  readonly path: string;
  readonly problem: string;
}

/** Built-in kinds structured clone always takes as they are (their content is not user values). */
const SAFE_TAGS = new Set([
  '[object Date]',
  '[object RegExp]',
  '[object ArrayBuffer]',
  '[object SharedArrayBuffer]',
  '[object Boolean]',
  '[object Number]',
  '[object String]',
  '[object BigInt]',
]);

/** Nesting deeper than this is checked by `structuredClone` itself (no deep recursion here). */
const MAX_WALK_DEPTH = 200;

const toTag = Object.prototype.toString;

interface Walk {
  seen: Set<object> | undefined;
  root: object;
}

/**
 * What the walk found: the problem, and the path's segments from the bad value outwards (the
 * path is joined only when something is found: a clean value builds no string).
 */
interface Found {
  readonly problem: string;
  readonly at: string[];
}

/** A walk state kept for the next check (taken while a check runs, so a re-entrant one makes its own). */
let spareWalk: Walk | undefined;
const hasOwn = Object.prototype.hasOwnProperty;

function kindOf(o: object): string {
  const name = (o as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === 'string' && name.length > 0 ? name : 'object';
}

function tryClone(o: object): Found | undefined {
  try {
    structuredClone(o);
    return undefined;
  } catch (err) {
    // The error's message may quote the value (a function's source): only its name goes out.
    const name = err instanceof Error ? err.name : 'error';
    return { problem: `${kindOf(o)} cannot be cloned (${name})`, at: [] };
  }
}

function checkValue(v: unknown, w: Walk, depth: number): Found | undefined {
  switch (typeof v) {
    case 'function':
      return { problem: 'a function cannot be cloned', at: [] };
    case 'symbol':
      return { problem: 'a symbol cannot be cloned', at: [] };
    case 'object': {
      if (v === null) return undefined;
      // Cycles are fine for structured clone; each object is walked once.
      const seen = (w.seen ??= new Set<object>([w.root]));
      if (seen.has(v)) return undefined;
      seen.add(v);
      return checkObject(v, w, depth + 1);
    }
    default:
      return undefined;
  }
}

function checkObject(o: object, w: Walk, depth: number): Found | undefined {
  if (depth > MAX_WALK_DEPTH) return tryClone(o);
  if (Array.isArray(o)) {
    for (let i = 0; i < o.length; i++) {
      const bad = checkValue(o[i], w, depth);
      if (bad) {
        bad.at.push(`[${i}]`);
        return bad;
      }
    }
    return undefined;
  }
  if (ArrayBuffer.isView(o)) return undefined;
  const proto: unknown = Object.getPrototypeOf(o);
  if (proto !== Object.prototype && proto !== null) {
    const tag = toTag.call(o);
    if (tag !== '[object Object]') return SAFE_TAGS.has(tag) ? undefined : tryClone(o);
  }
  // Own enumerable string keys, as structured clone copies them (for-in allocates no key array).
  for (const k in o) {
    if (!hasOwn.call(o, k)) continue;
    const bad = checkValue((o as Record<string, unknown>)[k], w, depth);
    if (bad) {
      bad.at.push(`.${k}`);
      return bad;
    }
  }
  return undefined;
}

/**
 * The path and kind of the first value in `value` that structured clone cannot copy, or
 * `undefined` when all of it can. `root` names the value itself in the path (default `$`).
 * Never throws: a getter that throws is reported (at `root`). Never quotes a value.
 */
export function findNonCloneable(value: unknown, root = '$'): CloneProblem | undefined {
  const w = spareWalk ?? { seen: undefined, root: EMPTY };
  spareWalk = undefined;
  let bad: Found | undefined;
  try {
    if (typeof value !== 'object' || value === null) bad = checkValue(value, w, 0);
    else {
      w.root = value;
      bad = checkObject(value, w, 0);
    }
  } catch (err) {
    const name = err instanceof Error ? err.name : 'error';
    return { path: root, problem: `a property could not be read (${name})` };
  } finally {
    w.seen = undefined;
    w.root = EMPTY;
    spareWalk = w;
  }
  return bad === undefined ? undefined : { path: root + bad.at.reverse().join(''), problem: bad.problem };
}

const EMPTY = {};
