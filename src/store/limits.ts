/**
 * Bounds on what admins create at run time and a deployment stores for good: API keys, webhook
 * endpoints and stream definitions. Each is stored, listed, polled or swept by every instance, so
 * without a bound a flood of them (a script in a loop, a leaked admin key) would slow every
 * instance and, on Redis, fill its memory. The bound holds per deployment (every instance sharing
 * a store), enforced by the store in the same atomic step that creates: two instances cannot both
 * take the last place. Deleting one frees its place. Config-file streams and the keys of
 * `EDGESTREAM_KEYS` are not stored this way and do not count.
 *
 * @module
 */

/** What a bound counts: run-time API keys, webhook endpoints, run-time (API) streams. */
export type StoredKind = "keys" | "webhooks" | "streams";

/** Default most run-time API keys of a deployment. */
export const DEFAULT_KEYS_MAX = 10_000;
/** Default most webhook endpoints of a deployment. */
export const DEFAULT_WEBHOOKS_MAX = 1_000;
/** Default most streams created through the API of a deployment. */
export const DEFAULT_STREAMS_MAX = 1_000;

/** How refusals name what is counted. */
export const STORED_NOUNS: Record<StoredKind, string> = {
  keys: "run-time API keys",
  webhooks: "webhook endpoints",
  streams: "streams created through the API",
};

/**
 * A creation refused: the deployment holds `held` of its kind, `max` or more. Nothing was changed.
 */
export class StoredLimitError extends Error {
  /** What is bounded. */
  readonly kind: StoredKind;
  /** The bound. */
  readonly max: number;
  /** How many the deployment holds. */
  readonly held: number;

  constructor(kind: StoredKind, max: number, held: number, options?: ErrorOptions) {
    super(
      `Cannot create more ${
        STORED_NOUNS[kind]
      }: this deployment holds ${held}; the limit is ${max}; delete one first`,
      options,
    );
    this.name = "StoredLimitError";
    this.kind = kind;
    this.max = max;
    this.held = held;
  }
}

/** A bound as a store takes it: a whole number of at least 1, or a RangeError naming `what`. */
export function checkedMax(what: string, max: number): number {
  if (!(Number.isSafeInteger(max) && max >= 1)) {
    throw new RangeError(`${what}: expected a whole number of at least 1, got ${max}`);
  }
  return max;
}
