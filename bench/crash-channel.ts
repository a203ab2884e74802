/** A channel whose worker crashes right after every connect: a crash loop for the sibling bench. */
import { defineChannel } from '../src/channel-api.js';

export default defineChannel({
  type: 'crasher',
  connect() {
    setTimeout(() => {
      throw new Error('crash loop');
    }, 5);
  },
  disconnect() {},
  send: () => ({ externalId: 'never' }),
});
