/** A channel module as README writes it: imports `threadvisor/channel` (here its source). Crashes its worker on `{ crash: true }`. */
import { defineChannel } from '../src/channel-api.js';

export default defineChannel({
  type: 'light',
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
