/** A supervised bench worker: echoes, and blocks or crashes on request. */
import { serve } from '../workers/runtime.js';

serve({
  echo: <T>(v: T): T => v,
  crash(): void {
    setImmediate(() => {
      throw new Error('bench crash');
    });
  },
  hang(): void {
    setImmediate(() => {
      for (;;);
    });
  },
});
