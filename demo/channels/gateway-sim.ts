/**
 * The gateway demo's channel over real HTTP: the Telegram-like calls of the platform simulator
 * (`demo/platform-sim.ts`), built with `threadvisor/http` (`getMe` to connect, a `getUpdates`
 * long-poll with an offset, `sendMessage`), shaped for the gateway's rooms.
 *
 * - Settings: `baseUrl` (the simulator's URL), `rooms` (the instance's room list: update `n`
 *   goes to `rooms[(n - 1) % rooms.length]`), `faults` (lets `send({ fault })` end the worker).
 *   Credentials: `token` (in the path, `/bot<token>/…`, never in a log line).
 * - Inbound: each update becomes `{ id, room, text }`, as the gateway's loopback produces.
 * - Outbound: a room's reply `{ id, room, text }` is `sendMessage({ chat_id: room, text })`; the
 *   receipt is `{ messageId }`. With `faults`, `send({ fault: 'crash' | 'hang' | 'oom' })`
 *   answers at once and then throws uncaught, spins forever, or allocates without bound (not on
 *   a redelivery: a fault kills one worker, not each one its message is redelivered to). The
 *   platform's own faults (5xx, revoked tokens, 429s) come from the simulator itself.
 *
 * @packageDocumentation
 */
import { z } from 'zod';
import { defineChannel, type ChannelHandlers, type ChannelInstance } from '../../src/channel.js';
import { httpChannel } from '../../src/http.js';

/** The settings of a gateway-sim instance. */
export interface GatewaySimSettings {
  baseUrl: string;
  rooms: string[];
  faults?: boolean;
}

/** The credentials of a gateway-sim instance. */
export interface GatewaySimCredentials {
  token: string;
}

/** An outbound message: a room's reply, or (with `faults`) a fault to inject. */
export type GatewaySimMessage = { id: string; room: string; text: string } | { id: string; fault: 'crash' | 'hang' | 'oom' };

interface Update {
  update_id: number;
  message?: { text?: string };
}

interface Envelope<T> {
  ok: boolean;
  result: T;
}

const settingsSchema = z.strictObject({
  baseUrl: z.url({ protocol: /^https?$/ }),
  rooms: z.array(z.string().min(1)).min(1),
  faults: z.boolean().optional(),
});

const http = httpChannel<{ chatId: string; text: string }, { messageId: number }, GatewaySimSettings, GatewaySimCredentials>({
  type: 'gateway-sim',
  baseUrl: (instance) => `${instance.settings.baseUrl.replace(/\/+$/, '')}/bot${encodeURIComponent(instance.credentials.token)}`,
  connect: { path: '/getMe' },
  poll: {
    path: '/getUpdates',
    timeoutSec: 10,
    toMessages(body) {
      const updates = (body as Envelope<Update[]>).result;
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

let spins = 0;

function inject(fault: 'crash' | 'hang' | 'oom'): void {
  setImmediate(() => {
    if (fault === 'crash') throw new Error('gateway-sim: injected crash');
    if (fault === 'hang') for (;;) spins++;
    const hoard: number[][] = [];
    for (;;) hoard.push(new Array<number>(100_000).fill(spins++));
  });
}

function create(instance: ChannelInstance<GatewaySimSettings, GatewaySimCredentials>): ChannelHandlers<GatewaySimMessage, { messageId: number }, GatewaySimSettings, GatewaySimCredentials> {
  const inner = http.create(instance);
  const { rooms, faults } = instance.settings;
  const poll = inner.poll as NonNullable<typeof inner.poll>;
  return {
    connect: (ctx) => inner.connect(ctx),
    disconnect: (ctx) => inner.disconnect(ctx),
    async poll(ctx) {
      const batch = (await poll(ctx)) as { messages: Update[]; cursor?: unknown };
      const messages = batch.messages.map((u) => ({ id: `u${u.update_id}`, room: rooms[(u.update_id - 1) % rooms.length] as string, text: u.message?.text ?? '' }));
      return batch.cursor === undefined ? { messages } : { messages, cursor: batch.cursor };
    },
    send(ctx, message, info) {
      if ('fault' in message) {
        if (faults === true && !info.redelivery) inject(message.fault);
        return { messageId: 0 };
      }
      return inner.send(ctx, { chatId: message.room, text: message.text }, info);
    },
  };
}

export default defineChannel<GatewaySimMessage, { messageId: number }, GatewaySimSettings, GatewaySimCredentials>({ type: 'gateway-sim', settingsSchema, create });
