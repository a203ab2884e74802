/**
 * Publication of an instance server's lifecycle events: every `instance:<event>` goes out on the
 * server (and diagnostics_channel) with the instance's id, channel type and name added.
 *
 * @packageDocumentation
 */
import { publishUnchecked } from '../telemetry.js';
import type { EmitArgs, InstanceEventBase, InstanceHandleEvents } from '../events.js';
import type { ServerState } from './server-state.js';

/** Publishes `instance:<event>` with the payload `build` returns plus the instance's identity. */
export function publishInstanceEvent(
  state: ServerState,
  ...args: EmitArgs<InstanceHandleEvents, 'instance', keyof InstanceEventBase>
): void {
  const [event, build] = args;
  const i = state.instance;
  publishUnchecked(state.events, `instance:${event}`, () => ({ ...build(), instanceId: i.id, channelType: i.channelType, name: i.name }));
}
