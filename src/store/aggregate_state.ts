/**
 * Aggregate state: what a pane holds for one group and how panes merge into a
 * window. It is storage vocabulary (both stores hold and merge it), so it
 * lives here; `window/` re-exports it. Pure functions, no I/O.
 *
 * @module
 */
import { addBins, type SketchBins } from "./sketch.ts";

/** The kinds of aggregate a counter may compute. */
export type AggregateKind = "count" | "sum" | "min" | "max" | "avg" | "distinct" | "quantiles";

/** Mergeable state of one counter for one group over one pane or window. */
export interface AggregateState {
  /** Events counted. */
  count: number;
  /** Sum of the values (sum, avg). */
  sum: number;
  /** Smallest value seen, or null. */
  min: number | null;
  /** Largest value seen, or null. */
  max: number | null;
  /** Number of distinct values (distinct). */
  distinct: number;
  /** True when `distinct` is an estimate (HyperLogLog) rather than exact. */
  approximate: boolean;
  /** DDSketch bucket counts (quantiles; see `sketch.ts`). */
  bins?: SketchBins;
}

/** A state with nothing counted. */
export function emptyState(): AggregateState {
  return { count: 0, sum: 0, min: null, max: null, distinct: 0, approximate: false };
}

/** Adds one numeric value (or none, for count) to a state in place. */
export function addValue(state: AggregateState, value: number | undefined): void {
  state.count += 1;
  if (value === undefined) return;
  state.sum += value;
  if (state.min === null || value < state.min) state.min = value;
  if (state.max === null || value > state.max) state.max = value;
}

/**
 * Merges `from` into `into` in place. `distinct` cannot be merged from counts;
 * callers that merge distinct sets set it themselves.
 */
export function mergeState(into: AggregateState, from: AggregateState): void {
  into.count += from.count;
  into.sum += from.sum;
  if (from.min !== null && (into.min === null || from.min < into.min)) into.min = from.min;
  if (from.max !== null && (into.max === null || from.max > into.max)) into.max = from.max;
  into.approximate ||= from.approximate;
  if (from.bins) addBins(into.bins ??= {}, from.bins);
}

/**
 * Keeps only what an aggregate kind reports (count always; sum for sum/avg;
 * min, max, distinct for their kinds; min, max and buckets for quantiles), so
 * every store returns the same state.
 */
export function normalizeState(kind: AggregateKind, state: AggregateState): AggregateState {
  const quantiles = kind === "quantiles";
  const normal: AggregateState = {
    count: state.count,
    sum: kind === "sum" || kind === "avg" ? state.sum : 0,
    min: kind === "min" || quantiles ? state.min : null,
    max: kind === "max" || quantiles ? state.max : null,
    distinct: kind === "distinct" ? state.distinct : 0,
    approximate: state.approximate || quantiles,
  };
  if (quantiles) normal.bins = { ...state.bins };
  return normal;
}
