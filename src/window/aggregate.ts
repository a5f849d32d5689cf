/**
 * Aggregate state: what a pane holds for one group, how panes merge into a
 * window, and what value a window reports. Pure functions, no I/O.
 *
 * @module
 */
import type { AggregateSpec } from "./spec.ts";

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
}

/** The value a counter reports for a state: null where no value exists (min of nothing). */
export function aggregateValue(spec: AggregateSpec, state: AggregateState): number | null {
  switch (spec.kind) {
    case "count":
      return state.count;
    case "sum":
      return state.sum;
    case "min":
      return state.min;
    case "max":
      return state.max;
    case "avg":
      return state.count === 0 ? null : state.sum / state.count;
    case "distinct":
      return state.distinct;
  }
}

/**
 * Canonical text of a value for distinct counting, so `1` and `"1"` stay
 * different: a string is itself (no copy on the hot path), anything else —
 * and a string that starts with NUL or is not well-formed Unicode — is NUL
 * followed by its JSON text, which no plain string can equal.
 */
export function distinctKey(value: unknown): string {
  if (typeof value === "string" && value.charCodeAt(0) !== 0 && value.isWellFormed()) return value;
  return `\u0000${JSON.stringify(value)}`;
}

/** Strings JSON writes as they are, between quotes. */
// deno-lint-ignore no-control-regex -- control characters are exactly what must be escaped
export const PLAIN_STRING = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;

/**
 * Keeps only what an aggregate kind reports (count always; sum for sum/avg;
 * min, max, distinct for their kinds), so every store returns the same state.
 */
export function normalizeState(kind: AggregateSpec["kind"], state: AggregateState): AggregateState {
  return {
    count: state.count,
    sum: kind === "sum" || kind === "avg" ? state.sum : 0,
    min: kind === "min" ? state.min : null,
    max: kind === "max" ? state.max : null,
    distinct: kind === "distinct" ? state.distinct : 0,
    approximate: state.approximate,
  };
}
