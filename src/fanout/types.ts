/**
 * The interfaces fan-out consumers implement, owned here by the consumers so
 * that ingest depends on fan-out's contract rather than the other way round.
 *
 * @module
 */
import type { CompiledStream } from "../config/mod.ts";
import type { BatchEvent, BatchUpdates, EventOutcome } from "../store/types.ts";

/** What an {@linkcode IngestObserver} is told after the store applied a batch. */
export interface AppliedBatch {
  /** The stream. */
  stream: CompiledStream;
  /** Valid events as sent to the store. */
  events: readonly BatchEvent[];
  /** Their counter updates, as sent to the store. @default {none} */
  updates?: BatchUpdates;
  /** What happened to each of them. */
  outcomes: readonly EventOutcome[];
  /** Receive time (ms). */
  nowMs: number;
  /** Result types live subscribers on any instance want from this stream (`ApplyResult.demand`). */
  demand: readonly string[];
  /**
   * Which of its events the store was asked to log (`event.processed`, `event.late`; with
   * `ifWanted`, those a subscriber wanted). @default {neither}
   */
  logged?: { processed: boolean; late: boolean };
}

/**
 * Called after every applied batch (e.g. to publish running window values). Must not throw.
 *
 * One that has often nothing to do (no subscriber, no endpoint, no alert) says so with `idle`:
 * when every observer is idle for a batch's stream, ingest calls none, and saves the context it
 * calls them in (`detached`). It is asked for each batch, after the store applied it and right
 * before the call (in the same turn of the event loop), so one that gains work (a subscriber
 * comes) is told of the next batch.
 */
export interface IngestObserver {
  (batch: AppliedBatch): void;
  /**
   * True when a batch of `stream` applied now would change nothing and start nothing: calling it
   * must then be the same as not calling it. @default {never idle}
   */
  idle?(stream: CompiledStream): boolean;
}

/** A fan-out consumer's interest in `event.processed` / `event.late` of a stream. */
export interface LogDemand {
  /** Whether any consumer wants events of `type` from `stream` right now. */
  wants(stream: string, type: "event.processed" | "event.late"): boolean;
  /**
   * Whether a consumer elsewhere may want them, which this instance cannot
   * tell: the store then logs them only if its live demand says so.
   */
  mayWant?(stream: string, type: "event.processed" | "event.late"): boolean;
}
