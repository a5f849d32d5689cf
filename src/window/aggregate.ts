/**
 * What value a window reports from its aggregate state, and the canonical key
 * of a distinct value. The state itself and its merge functions belong to
 * `store/aggregate_state.ts` and are re-exported here. Pure functions, no I/O.
 *
 * @module
 */
import type { AggregateState } from "../store/aggregate_state.ts";
import { sketchQuantiles } from "../store/sketch.ts";
import type { AggregateSpec } from "./spec.ts";

export {
  addValue,
  type AggregateState,
  emptyState,
  mergeState,
  normalizeState,
} from "../store/aggregate_state.ts";

/**
 * A quantiles counter's value: count, exact min and max, and an estimate per
 * quantile asked for (`p50`, `p99.9`, …); `approximate` is always true.
 */
export interface QuantileValue {
  [name: string]: number | boolean | null;
  /** Values counted. */
  count: number;
  /** Smallest value (exact). */
  min: number | null;
  /** Largest value (exact). */
  max: number | null;
  /** The quantiles are estimates within the counter's relative accuracy. */
  approximate: true;
}

/** What a counter reports for a window: a number, null (no value), or a quantile summary. */
export type AggregateValue = number | null | QuantileValue;

/** Quantiles a quantiles counter reports unless a read asks for others. */
export const DEFAULT_QUANTILES: readonly number[] = [0.5, 0.9, 0.95, 0.99];

/**
 * Name of a quantile in a value: `p` and the percentage (`0.5` → `p50`, `0.999` → `p99.9`,
 * `0.9999999999999` → `p99.99999999999`): the decimal that names `q`, its point moved two places,
 * so no digit of it is rounded away (`q * 100` would be `28.999999999999996` for `0.29`). The
 * point is moved in the text: the double nearest to the moved decimal may print with a digit
 * fewer or another last digit (`0.8029312186167659` would be `p80.2931218616766`, the name of
 * `0.802931218616766` too). Always plain decimal, as README says and as `by=` takes a name:
 * `1e-9` → `p0.0000001`, not `p1e-7` as JavaScript prints the percentage.
 */
export function quantileName(q: number): string {
  return `p${movePoint(String(q), 2)}`;
}

/** `text` (a non-negative number as JavaScript prints it) times 10^`places`, as plain decimal text. */
function movePoint(text: string, places: number): string {
  const [mantissa, exponent = "0"] = text.split("e");
  const [whole, fraction = ""] = mantissa.split(".");
  const digits = `${whole}${fraction}`;
  const point = whole.length + Number(exponent) + places;
  const plain = point <= 0
    ? `0.${"0".repeat(-point)}${digits}`
    : point >= digits.length
    ? digits + "0".repeat(point - digits.length)
    : `${digits.slice(0, point)}.${digits.slice(point)}`;
  // No zeros before the first digit of the whole part, none after the last of the fraction.
  return plain.replace(/^0+(?=\d)/, "").replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
}

/** Options for {@linkcode aggregateValue}. */
export interface ValueOptions {
  /** Quantiles (each in [0, 1]) a quantiles counter reports. @default {DEFAULT_QUANTILES} */
  quantiles?: readonly number[];
}

/** The value a counter reports for a state: null where no value exists (min of nothing). */
export function aggregateValue(
  spec: AggregateSpec,
  state: AggregateState,
  options: ValueOptions = {},
): AggregateValue {
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
    case "quantiles":
      return quantileValue(spec.accuracy, state, options.quantiles ?? DEFAULT_QUANTILES);
  }
}

function quantileValue(
  accuracy: number,
  state: AggregateState,
  quantiles: readonly number[],
): QuantileValue {
  const value: QuantileValue = {
    count: state.count,
    min: state.min,
    max: state.max,
    approximate: true,
  };
  const estimates = sketchQuantiles(state.bins ?? {}, accuracy, quantiles, state);
  quantiles.forEach((q, i) => value[quantileName(q)] = estimates[i]);
  return value;
}

/**
 * Canonical text of a value for distinct counting, so `1` and `"1"` stay
 * different: a string is itself (no copy on the hot path), anything else —
 * and a string that starts with NUL or is not well-formed Unicode — is NUL
 * followed by its JSON text, which no plain string can equal.
 */
export function distinctKey(value: unknown): string {
  if (typeof value === "string" && value.charCodeAt(0) !== 0 && value.isWellFormed()) return value;
  return `\u0000${canonicalJson(value)}`;
}

/**
 * Whether a JSON value is or holds a number JSON text cannot write (`JSON.parse` reads `1e400` as
 * `Infinity`, which `JSON.stringify` writes as `null`), so it cannot stand for a group or a
 * distinct value: it would count as `null`.
 */
export function holdsNonFinite(value: unknown): boolean {
  if (typeof value === "number") return !Number.isFinite(value);
  if (typeof value !== "object" || value === null) return false;
  if (Array.isArray(value)) return value.some(holdsNonFinite);
  for (const key in value) {
    if (Object.hasOwn(value, key) && holdsNonFinite((value as Record<string, unknown>)[key])) {
      return true;
    }
  }
  return false;
}

/**
 * JSON text of a value with every object's keys in one order (UTF-16 code unit order, as
 * `Array.prototype.sort` gives), so two objects that differ only in the order their keys were
 * written give one text: JSON objects are unordered, and a producer's serializer picks the order.
 * Anything that is not an object or holds none is its `JSON.stringify` text (`undefined`: `null`).
 */
export function canonicalJson(value: unknown): string {
  if (typeof value !== "object" || value === null) return JSON.stringify(value) ?? "null";
  if (Array.isArray(value)) {
    let text = "[";
    for (let i = 0; i < value.length; i++) {
      if (i > 0) text += ",";
      const item = value[i];
      text += item === undefined ? "null" : canonicalJson(item);
    }
    return `${text}]`;
  }
  const record = value as Record<string, unknown>;
  let text = "{";
  for (const key of Object.keys(record).sort()) {
    const item = record[key];
    if (item === undefined) continue;
    if (text.length > 1) text += ",";
    text += `${JSON.stringify(key)}:${canonicalJson(item)}`;
  }
  return `${text}}`;
}

/** Strings JSON writes as they are, between quotes. */
// deno-lint-ignore no-control-regex -- control characters are exactly what must be escaped
export const PLAIN_STRING = /^[^"\\\u0000-\u001f\ud800-\udfff]*$/;
