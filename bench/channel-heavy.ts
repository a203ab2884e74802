/** The same channel module as bench/channel-light.ts, defined through the main entry (`threadvisor`, here its source) instead of `threadvisor/channel`. */
import { defineChannel } from '../src/index.js';
import light from './channel-light.js';

export default defineChannel({ ...light, type: 'heavy' });
