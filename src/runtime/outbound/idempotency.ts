/**
 * Idempotency keys of outbound messages: the key type and the default key of a message.
 *
 * @packageDocumentation
 */

/** An idempotency key: messages with the same key are delivered once. */
export type IdempotencyKey = string | number;

/** The default idempotency key of a message: its `id`, when a string or a finite number. */
export function defaultIdempotencyKey(message: unknown): IdempotencyKey | undefined {
  if (typeof message !== 'object' || message === null) return undefined;
  const id = (message as { id?: unknown }).id;
  if (typeof id === 'string') return id.length > 0 ? id : undefined;
  if (typeof id === 'number' && Number.isFinite(id)) return id;
  return undefined;
}
