/**
 * The worker side's clock: milliseconds on the process's monotonic clock (`process.hrtime`),
 * which is one scale in every thread of the process.
 *
 * Why not `performance.now()`: in a fresh worker thread the first touch of `performance` loads
 * Node's ten `perf_hooks` modules, about 0.9 ms measured on every worker start and restart,
 * where `process.hrtime` loads nothing. The instance worker reads time only through this.
 *
 * Part of the wire layer: no dependencies.
 *
 * @packageDocumentation
 */

/** Now, in milliseconds on the process's monotonic clock (an arbitrary origin; compare, do not print). */
export function monotonicMs(): number {
  const t = process.hrtime();
  return t[0] * 1e3 + t[1] / 1e6;
}
