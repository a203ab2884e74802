/**
 * The wire protocol between a {@link WorkerHost} on the main thread and `serve()` inside its worker.
 * This module has no runtime dependencies (no zod), so the worker side stays cheap to load; the
 * main side validates incoming messages with the schemas of `src/worker/schemas.ts`.
 *
 * Two dedicated `MessageChannel`s cross the boundary:
 * - the **heartbeat** port carries `ready` (worker → main, once), `ping` (main → worker) and `pong`
 *   (worker → main). The worker answers on its own listener, so a busy control port never starves it;
 * - the **control** port carries comlink requests. The worker exposes a {@link ControlRoot}: the
 *   user's API under `api` and the reserved lifecycle methods under `control`, so a user method name
 *   can never collide with a reserved one.
 *
 * @packageDocumentation
 */
import type { Endpoint } from 'comlink';
import type { MessagePort } from 'node:worker_threads';

/** Version of the protocol; bumped on any incompatible change of the messages below. */
export const PROTOCOL_VERSION = 1;

/** What the host puts under `workerData.threadvisor` (the user's own data sits under `data`). */
export interface BootstrapData {
  /** Protocol version spoken by the host. */
  readonly version: number;
  /** Worker-side end of the control (comlink) channel. */
  readonly control: MessagePort;
  /** Worker-side end of the heartbeat channel. */
  readonly heartbeat: MessagePort;
}

/** The whole `workerData` of a supervised worker. */
export interface SupervisedWorkerData {
  /** Threadvisor's own bootstrap data. */
  readonly threadvisor: BootstrapData;
  /** The user's `workerData`, untouched. */
  readonly data: unknown;
}

/** Main → worker: a heartbeat probe. */
export interface PingMessage {
  readonly type: 'ping';
  /** Sequence number, increasing from 1. */
  readonly seq: number;
}

/** Worker → main: the worker is serving. Sent once, by `serve()`. */
export interface ReadyMessage {
  readonly type: 'ready';
  /** Protocol version spoken by the worker. */
  readonly version: number;
}

/** Worker → main: the answer to a {@link PingMessage}. */
export interface PongMessage {
  readonly type: 'pong';
  /** The `seq` of the ping being answered. */
  readonly seq: number;
  /** Event-loop utilisation (0..1) of the worker since its previous pong. */
  readonly elu: number;
  /** Bytes of V8 heap in use in the worker. */
  readonly heapUsed: number;
}

/**
 * Worker → main: an uncaught exception that nothing handles is ending the thread. Sent by
 * `serve()` from `uncaughtExceptionMonitor`, before Node serializes the error for the Worker's
 * `error` event (which follows): the host can act on the death that much sooner.
 */
export interface DyingMessage {
  readonly type: 'dying';
  /** The error's `name`, `message` and `stack`. */
  readonly name: string;
  readonly message: string;
  readonly stack: string;
}

/** Every message the worker sends on the heartbeat port. */
export type WorkerHeartbeatMessage = ReadyMessage | PongMessage | DyingMessage;

/** The reserved lifecycle methods `serve()` exposes next to the user's API. */
export interface ControlApi {
  /**
   * Graceful stop: run the user's `onStop` hook, then end the thread (exit code 0, or 1 when the
   * hook failed). Idempotent.
   */
  stop(): Promise<void>;
}

/** The object `serve()` exposes over comlink. */
export interface ControlRoot<API> {
  /** The user's API. */
  readonly api: API;
  /** Reserved lifecycle methods. */
  readonly control: ControlApi;
}

/** A `MessagePort`-like object with Node's `EventEmitter` listener methods. */
export interface NodeMessageEndpoint {
  postMessage(message: unknown, transfer?: readonly unknown[]): void;
  on(type: 'message', listener: (data: unknown) => void): unknown;
  off(type: 'message', listener: (data: unknown) => void): unknown;
  start?: () => void;
}

type EventHandler = Parameters<Endpoint['addEventListener']>[1];
type TransferList = Parameters<Endpoint['postMessage']>[1];

/**
 * Adapts a Node `MessagePort` to comlink's DOM-style {@link Endpoint}: the same mapping as comlink's
 * own `node-adapter`, typed, and without its ESM/UMD import-path split.
 */
export function nodeEndpoint(port: NodeMessageEndpoint): Endpoint {
  const listeners = new WeakMap<object, (data: unknown) => void>();
  const endpoint: Endpoint = {
    postMessage: (message: unknown, transfer?: TransferList) => {
      port.postMessage(message, transfer);
    },
    addEventListener: (_type: string, handler: EventHandler) => {
      if (!handler) return;
      const listener = (data: unknown): void => {
        const event = { data } as MessageEvent;
        if (typeof handler === 'function') handler(event);
        else handler.handleEvent(event);
      };
      port.on('message', listener);
      listeners.set(handler, listener);
    },
    removeEventListener: (_type: string, handler: EventHandler) => {
      if (!handler) return;
      const listener = listeners.get(handler);
      if (!listener) return;
      port.off('message', listener);
      listeners.delete(handler);
    },
  };
  if (port.start) {
    const start = port.start.bind(port);
    endpoint.start = () => start();
  }
  return endpoint;
}
