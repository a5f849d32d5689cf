/**
 * What value a window reports from its aggregate state, and the canonical key
 * of a distinct value. The state itself and its merge functions belong to
 * `store/aggregate_state.ts` and are re-exported here. Pure functions, no I/O.
 *
 * @module
 */
import type { AggregateState } from "../store/aggregate_state.ts";
import type { AggregateSpec } from "./spec.ts";

export {
  addValue,
  type AggregateState,
  emptyState,
  mergeState,
  normalizeState,
} from "../store/aggregate_state.ts";

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
