/**
 * Plain-JSON checks for agent snapshots. A checkpoint must come back exactly as it was saved, so
 * anything `JSON.stringify` would silently change (a `Date`, a `Map`, `NaN`, a class instance, a
 * function) is refused at save time with the path of the bad value, instead of being lost later.
 */

/** A value that survives `JSON.stringify` → `JSON.parse` unchanged. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/**
 * Returns the path (`$.a[2].b`) and a description of the first value in `value` that is not plain
 * JSON, or `undefined` when all of it is. Object properties whose value is `undefined` are
 * allowed (they are simply absent after a round trip); `undefined` elsewhere is not.
 */
export function findNonJson(value: unknown): { path: string; problem: string } | undefined {
  const seen = new Set<object>();
  const walk = (v: unknown, path: string): { path: string; problem: string } | undefined => {
    switch (typeof v) {
      case 'string':
      case 'boolean':
        return undefined;
      case 'number':
        return Number.isFinite(v) ? undefined : { path, problem: `non-finite number ${String(v)}` };
      case 'object': {
        if (v === null) return undefined;
        if (seen.has(v)) return { path, problem: 'circular reference' };
        if (Array.isArray(v)) {
          seen.add(v);
          for (let i = 0; i < v.length; i++) {
            if (!(i in v) || v[i] === undefined) return { path: `${path}[${i}]`, problem: 'undefined array element' };
            const bad = walk(v[i], `${path}[${i}]`);
            if (bad) return bad;
          }
          seen.delete(v);
          return undefined;
        }
        const proto: unknown = Object.getPrototypeOf(v);
        if (proto !== Object.prototype && proto !== null) {
          const name = (v as { constructor?: { name?: string } }).constructor?.name ?? 'object';
          return { path, problem: `${name} is not a plain object` };
        }
        seen.add(v);
        for (const [k, item] of Object.entries(v)) {
          if (item === undefined) continue;
          const bad = walk(item, `${path}.${k}`);
          if (bad) return bad;
        }
        seen.delete(v);
        return undefined;
      }
      default:
        return { path, problem: `${typeof v} is not JSON` };
    }
  };
  return walk(value, '$');
}
