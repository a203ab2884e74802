/**
 * The worker of the supervision showcase: it "polls" (counts ticks) and takes faults on request.
 */
import { serve } from '../workers/runtime.js';

let ticks = 0;
const timer = setInterval(() => (ticks += 1), 10);

/** The control-plane API of a showcase worker. */
export const api = {
  ticks: () => ticks,
  /** Injects a fault a moment after answering, so the call itself resolves. */
  fault(kind: 'crash' | 'exit' | 'hang' | 'oom'): string {
    setTimeout(() => {
      if (kind === 'crash') throw new Error('injected crash');
      if (kind === 'exit') process.exit(3);
      if (kind === 'hang') for (;;);
      const hog: number[][] = [];
      for (;;) hog.push(new Array(100_000).fill(hog.length));
    }, 20);
    return kind;
  },
};

serve(api, { onStop: () => clearInterval(timer) });
