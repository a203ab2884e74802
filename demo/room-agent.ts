/**
 * The gateway demo's keyed agent: one `RoomAgent` per chat room, run by an `InstanceManager`.
 * It counts the room's messages and answers each with a reply whose `id` is `<room>#<n>`, where
 * `n` is the room's message count. That count lives in the agent's state, so it survives
 * hibernation to disk: if a thaw ever brought back an older count, reply ids would repeat and
 * the runtime's idempotency cache would report them as duplicates (the demo checks that it
 * never does).
 *
 * @packageDocumentation
 */
import type { Agent, AgentInitInfo } from '../src/index.js';

/** An inbound message as the gateway hands it to a room. */
export interface RoomMessage {
  /** The platform's message id. */
  id: string;
  /** The room (the agent's key). */
  room: string;
  text: string;
  /** The instance the message came in on: the reply goes out through it. */
  instanceId: string;
}

/** What a room answers: sent with `rt.send(instanceId, reply)`. */
export interface RoomReply {
  /** `<room>#<n>`: unique per room as long as the room's state is never lost. */
  id: string;
  room: string;
  text: string;
  inReplyTo: string;
}

/** The state a room hibernates with (plain JSON). */
export interface RoomState {
  /** Messages handled over the room's whole life, across hibernations. */
  handled: number;
  /** Activations: 1 on the first start, +1 on each thaw. */
  activations: number;
  /** The last few message texts. */
  recent: string[];
}

const RECENT = 5;

/** One chat room. */
export class RoomAgent implements Agent<RoomState, RoomMessage, RoomReply> {
  #state: RoomState = { handled: 0, activations: 0, recent: [] };

  constructor(readonly key: string) {}

  init(state: RoomState | undefined, _info: AgentInitInfo): void {
    if (state) this.#state = { handled: state.handled, activations: state.activations, recent: [...state.recent] };
    this.#state.activations += 1;
  }

  handle(message: RoomMessage): RoomReply {
    const s = this.#state;
    s.handled += 1;
    s.recent.push(message.text);
    if (s.recent.length > RECENT) s.recent.shift();
    return {
      id: `${this.key}#${s.handled}`,
      room: this.key,
      text: `re: ${message.text} (message ${s.handled} of this room, activation ${s.activations})`,
      inReplyTo: message.id,
    };
  }

  snapshot(): RoomState {
    return { handled: this.#state.handled, activations: this.#state.activations, recent: [...this.#state.recent] };
  }
}
