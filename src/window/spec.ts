/** Window and aggregate specifications in their compiled form. */
import type { AggregateKind } from "../store/aggregate_state.ts";

export type { AggregateKind } from "../store/aggregate_state.ts";

/** A window over event time, with boundaries aligned to the epoch. */
export type WindowSpec =
  | { kind: "tumbling"; sizeMs: number }
  | { kind: "hopping"; sizeMs: number; everyMs: number }
  | { kind: "sliding"; sizeMs: number; precisionMs: number }
  /**
   * Sessions of a group: runs of events less than `gapMs` apart. `sizeMs`
   * equals the gap: a session stops growing at its end + `sizeMs`.
   */
  | { kind: "session"; gapMs: number; sizeMs: number };

/** The aggregate a counter computes over the events of a window. */
export type AggregateSpec =
  | { kind: "count" }
  | { kind: Exclude<AggregateKind, "count" | "quantiles">; field: string }
  | { kind: "quantiles"; field: string; accuracy: number };
