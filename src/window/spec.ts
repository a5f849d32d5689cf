/** Window and aggregate specifications in their compiled form. */

/** A window over event time, with boundaries aligned to the epoch. */
export type WindowSpec =
  | { kind: "tumbling"; sizeMs: number }
  | { kind: "hopping"; sizeMs: number; everyMs: number }
  | { kind: "sliding"; sizeMs: number; precisionMs: number };

/** The aggregate a counter computes over the events of a window. */
export type AggregateSpec =
  | { kind: "count" }
  | { kind: "sum" | "min" | "max" | "avg" | "distinct"; field: string };

/** The kinds of aggregate a counter may compute. */
export type AggregateKind = AggregateSpec["kind"];
