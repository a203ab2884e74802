/** The same channel module importing the main entry (`threadvisor`, here its source) instead of `threadvisor/channel`. */
import { defineChannel } from '../src/index.js';

export default defineChannel({
  type: 'heavy',
  async connect() {},
  async disconnect() {},
  async send(_ctx, message) {
    if ((message as { crash?: boolean }).crash === true) {
      setTimeout(() => {
        throw new Error('crash');
      }, 0);
    }
    return { ok: true };
  },
});
