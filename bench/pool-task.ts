/** A stateless CPU task for the compute-pool bench. */
function fib(n: number): number {
  return n < 2 ? n : fib(n - 1) + fib(n - 2);
}

export default function task({ n }: { n: number }): number {
  return fib(n);
}
