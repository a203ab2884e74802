/**
 * A Telegram-like channel built with `httpChannel`, pointing at the platform simulator
 * (`demo/platform-sim.ts`): `settings.baseUrl` is the simulator's URL, `credentials.token` the
 * bot token (it goes into the path, `/bot<token>/...`, as with Telegram). Inbound messages are
 * the updates; `send({ chatId, text })` resolves with `{ messageId }`.
 *
 * @packageDocumentation
 */
import { z } from 'zod';
import { httpChannel } from '../../src/http.js';

/** The settings of a telegram-sim instance. */
export interface TelegramSimSettings {
  /** The simulator's URL, e.g. `http://127.0.0.1:8081`. */
  baseUrl: string;
}

/** The credentials of a telegram-sim instance. */
export interface TelegramSimCredentials {
  /** The bot token. */
  token: string;
}

/** One outbound message. */
export interface TelegramSimMessage {
  chatId: number | string;
  text: string;
}

/** A telegram-sim update, as `onMessage` receives it. */
export interface TelegramSimUpdate {
  update_id: number;
  message?: { message_id: number; chat: { id: number }; text?: string; date: number };
}

interface Envelope<T> {
  ok: boolean;
  result: T;
}

export default httpChannel<TelegramSimMessage, { messageId: number }, TelegramSimSettings, TelegramSimCredentials>({
  type: 'telegram-sim',
  settingsSchema: z.strictObject({ baseUrl: z.url({ protocol: /^https?$/ }) }),
  baseUrl: (instance) => `${instance.settings.baseUrl.replace(/\/+$/, '')}/bot${encodeURIComponent(instance.credentials.token)}`,
  connect: {
    path: '/getMe',
    meta: (body) => ({ username: (body as Envelope<{ username: string }>).result.username }),
  },
  poll: {
    path: '/getUpdates',
    timeoutSec: 25,
    toMessages(body) {
      const updates = (body as Envelope<TelegramSimUpdate[]>).result;
      const last = updates.at(-1);
      return last === undefined ? { messages: [] } : { messages: updates, nextOffset: last.update_id + 1 };
    },
  },
  send: {
    path: '/sendMessage',
    body: (message) => ({ chat_id: message.chatId, text: message.text }),
    receipt: (body) => ({ messageId: (body as Envelope<{ message_id: number }>).result.message_id }),
  },
});
