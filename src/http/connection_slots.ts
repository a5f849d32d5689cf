/**
 * Bounds on the long-lived connections a client can open: live subscriptions (SSE and WebSocket
 * `…/subscribe`) and WebSocket ingest connections (`…/ws`). Each one holds a connection, a file
 * descriptor and its buffers for as long as its client likes, so without a bound one key could
 * open them until the process runs out of files or memory. A process takes at most `perProcess`
 * of one kind, and one holder at most `perKey` of them: an API key (a run-time key, publishable
 * ones too, by its id; an environment key by its digest), or in open mode (no keys) a client
 * address. Both count this process's connections only; instances sharing a store count their own.
 *
 * Each kind has a pool of its own ({@linkcode ConnectionSlots}): ingest sockets filling up do
 * not lock readers out of their subscriptions, nor the other way round, and each has its own
 * settings, error codes and metric.
 *
 * A connection takes its slot before it is set up (before the upgrade or the SSE `200`) and gives
 * it back when it ends, however it ends. Who holds it is `slotHolder` in `auth.ts` (which knows
 * keys; this module imports nothing, so `errors.ts` can read its errors without a cycle).
 *
 * @module
 */

/** What a pool bounds: live subscriptions or WebSocket ingest connections. */
export type SlotKind = "subscription" | "ingest_socket";

/** Default most live subscriptions of one key (or, in open mode, one client address). */
export const DEFAULT_SUBSCRIPTIONS_PER_KEY = 100;
/** Default most live subscriptions of one process. */
export const DEFAULT_SUBSCRIPTIONS_MAX = 10_000;
/** Default most WebSocket ingest connections of one key (or, in open mode, one client address). */
export const DEFAULT_INGEST_SOCKETS_PER_KEY = 100;
/** Default most WebSocket ingest connections of one process. */
export const DEFAULT_INGEST_SOCKETS_MAX = 10_000;
/** Seconds a refused client is told to wait (`Retry-After`). */
export const SLOT_RETRY_AFTER_SECONDS = 5;

/** The bounds of one pool. */
export interface SlotLimits {
  /** Most connections of one key or client address. @default {100} */
  perKey?: number;
  /** Most connections of the process. @default {10000} */
  perProcess?: number;
}

const DEFAULTS: Record<SlotKind, Required<SlotLimits>> = {
  subscription: { perKey: DEFAULT_SUBSCRIPTIONS_PER_KEY, perProcess: DEFAULT_SUBSCRIPTIONS_MAX },
  ingest_socket: {
    perKey: DEFAULT_INGEST_SOCKETS_PER_KEY,
    perProcess: DEFAULT_INGEST_SOCKETS_MAX,
  },
};

/** How refusals name what is counted. */
const NOUNS: Record<SlotKind, string> = {
  subscription: "live subscriptions",
  ingest_socket: "WebSocket ingest connections",
};

/**
 * A connection refused: its holder's bound (`key`) or the process's (`process`) is reached.
 * `kind` says which pool refused it.
 */
export class SlotLimitError extends Error {
  /** Which pool. */
  readonly kind: SlotKind;
  /** Which bound. */
  readonly limit: "key" | "process";
  /** Its value. */
  readonly max: number;

  constructor(kind: SlotKind, limit: "key" | "process", max: number, message: string) {
    super(message);
    this.name = "SlotLimitError";
    this.kind = kind;
    this.limit = limit;
    this.max = max;
  }
}

/** A slot held: {@linkcode release} gives it back (once; later calls do nothing). */
export interface ConnectionSlot {
  release(): void;
}

/**
 * The connections of one kind in one process, by holder.
 *
 * @example
 * ```ts
 * import { ConnectionSlots } from "./connection_slots.ts";
 *
 * const slots = new ConnectionSlots("ingest_socket", { perKey: 2, perProcess: 100 });
 * const slot = slots.take("key:abc", "API key 'abc'");
 * // …when the connection ends:
 * slot.release();
 * ```
 */
export class ConnectionSlots {
  #kind: SlotKind;
  #perKey: number;
  #perProcess: number;
  #byHolder = new Map<string, number>();
  #total = 0;

  constructor(kind: SlotKind, limits: SlotLimits = {}) {
    this.#kind = kind;
    this.#perKey = limits.perKey ?? DEFAULTS[kind].perKey;
    this.#perProcess = limits.perProcess ?? DEFAULTS[kind].perProcess;
  }

  /** Connections held now, of `holder` or of the process. */
  held(holder?: string): number {
    return holder === undefined ? this.#total : this.#byHolder.get(holder) ?? 0;
  }

  /**
   * Takes a slot for `holder` (`named` says who it is in the refusal, without the key text);
   * throws {@linkcode SlotLimitError} when a bound is reached.
   */
  take(holder: string, named: string): ConnectionSlot {
    const noun = NOUNS[this.#kind];
    const mine = this.#byHolder.get(holder) ?? 0;
    if (mine >= this.#perKey) {
      throw new SlotLimitError(
        this.#kind,
        "key",
        this.#perKey,
        `Too many ${noun}: ${named} has ${mine} open on this server; the limit is ${this.#perKey}; close one first`,
      );
    }
    if (this.#total >= this.#perProcess) {
      throw new SlotLimitError(
        this.#kind,
        "process",
        this.#perProcess,
        `Too many ${noun} on this server: ${this.#total} open; the limit is ${this.#perProcess}; try again later or another instance`,
      );
    }
    this.#byHolder.set(holder, mine + 1);
    this.#total += 1;
    let held = true;
    return {
      release: () => {
        if (!held) return;
        held = false;
        this.#total -= 1;
        const left = (this.#byHolder.get(holder) ?? 1) - 1;
        if (left === 0) this.#byHolder.delete(holder);
        else this.#byHolder.set(holder, left);
      },
    };
  }
}
