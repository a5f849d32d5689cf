/**
 * Counters in compiled form, and what one event contributes to each: its
 * pane, its group and its value. Pure functions.
 *
 * @module
 */
import type { BatchUpdates, CellUpdate, CounterMeta } from "../store/types.ts";
import { OTHER_GROUP } from "../store/types.ts";
import type { Event, FieldError } from "../validate/mod.ts";
import { describe } from "../validate/mod.ts";
import { canonicalJson, distinctKey, holdsNonFinite, PLAIN_STRING } from "./aggregate.ts";
import { alignDown } from "./assign.ts";
import { readField } from "./fields.ts";
import type { AggregateSpec, WindowSpec } from "./spec.ts";

/** A counter ready for the hot path. */
export interface CompiledCounter {
  /** Counter name. */
  name: string;
  /** Position in its stream's counter list (and in {@linkcode StoreBatch.counters}). */
  index: number;
  /** Window over event time. */
  window: WindowSpec;
  /** Width (ms) of its panes: `paneWidth(window)`, worked out once rather than per event. */
  paneMs: number;
  /** Fields whose values form the group. */
  groupBy: string[];
  /** What is computed. */
  aggregate: AggregateSpec;
  /** How long (ms) closed windows stay queryable. */
  retentionMs: number;
  /** What the store needs. */
  meta: CounterMeta;
  /**
   * The event-time bound (ms) below which this counter missed events: it was added to (or added
   * back to) a stream that had events already, whose watermark was then just below it. A window
   * starting before it (a session starting before it plus the gap) is partial, see
   * {@linkcode partialWindow}. null: it counted every event of its stream. Set from the stream's
   * definition record (see `StoredDefinition.partialBefore`), never on the hot path.
   */
  partialBefore?: number | null;
}

/**
 * Whether the window (a session: the session) of `counter` starting at `startMs` misses events
 * that were applied while the counter was not in its stream's definition. A window holds the
 * events from its start on, so it missed some when it starts before the bound; a session also
 * when an event missed within its gap before its first one would have joined it.
 */
export function partialWindow(
  counter: Pick<CompiledCounter, "window" | "partialBefore">,
  startMs: number,
): boolean {
  const bound = counter.partialBefore;
  if (bound === undefined || bound === null) return false;
  const reach = counter.window.kind === "session" ? counter.window.gapMs : 0;
  return startMs < bound + reach;
}

/** Largest magnitude accepted for summed values, so sums stay exact integers where they can. */
export const MAX_VALUE = Number.MAX_SAFE_INTEGER;

/**
 * Keys of single plain-string groups already built, so the hot path reuses one flat string. Only
 * values of at most {@linkcode MAX_CACHED_KEY_LENGTH} characters: the cache kept each value and its
 * key until 10,000 were held, so events with distinct 60 KB group values (or longer, built by a
 * transform's `set`) kept 240 MB after 2,000 of them, whatever `maxGroups` said.
 */
const singleKeys = new Map<string, string>();
const MAX_CACHED_KEYS = 10_000;
/** Longest group value {@linkcode singleKeys} holds (at most some 10 MB between them). */
const MAX_CACHED_KEY_LENGTH = 256;

/**
 * Group key of a list of group values: their JSON text, every object's keys in one order
 * ({@linkcode canonicalJson}), so objects that differ only in key order are one group;
 * {@linkcode OTHER_GROUP} when every value
 * is the text `__other__`, so such an event counts into the overflow group, which reads the same,
 * instead of into a second row no reader could tell from it.
 */
export function groupKey(values: unknown[]): string {
  if (values.length === 1) {
    return values[0] === OTHER_GROUP ? OTHER_GROUP : singleGroupKey(values[0]);
  }
  if (values.length === 0) return "[]";
  return values.every((value) => value === OTHER_GROUP) ? OTHER_GROUP : canonicalJson(values);
}

/**
 * The string {@linkcode singleGroupKey} last returned a cached key for, and that key: counters
 * grouped by the same field ask for the same value one after another, and a compare is cheaper
 * than a lookup.
 */
let lastValue: string | undefined;
let lastKey = "";

/** {@linkcode groupKey} of one value, without building the list for the common cases. */
function singleGroupKey(value: unknown): string {
  if (typeof value === "string") {
    if (value === lastValue) return lastKey;
    const cached = singleKeys.get(value);
    if (cached !== undefined) {
      lastValue = value;
      lastKey = cached;
      return cached;
    }
  } else if (value === true) return "[true]";
  else if (value === false) return "[false]";
  return uncachedGroupKey(value);
}

/**
 * {@linkcode singleGroupKey} of a value it holds no key for (a function of its own: what the hot
 * cases do not need kept out of a function V8 inlines).
 */
function uncachedGroupKey(value: unknown): string {
  if (typeof value === "string" && PLAIN_STRING.test(value)) {
    const key = `["${value}"]`;
    if (value.length > MAX_CACHED_KEY_LENGTH) return key;
    if (singleKeys.size >= MAX_CACHED_KEYS) singleKeys.clear();
    singleKeys.set(value, key);
    return key;
  }
  if (value === null) return "[null]";
  return `[${canonicalJson(value)}]`;
}

/**
 * The group key of an event for `groupBy` (missing fields group as null; see {@linkcode groupKey}),
 * or the error of a field holding a number JSON cannot write (see {@linkcode holdsNonFinite}).
 */
function groupKeyOf(counter: CompiledCounter, event: Event): string | FieldError {
  const groupBy = counter.groupBy;
  if (groupBy.length === 0) return "[]";
  if (groupBy.length === 1) {
    const value = readField(event, groupBy[0]) ?? null;
    if (typeof value === "string") {
      return value === OTHER_GROUP ? OTHER_GROUP : singleGroupKey(value);
    }
    return holdsNonFinite(value) ? nonFiniteGroup(counter, groupBy[0]) : singleGroupKey(value);
  }
  const values: unknown[] = [];
  for (const field of groupBy) {
    const value = readField(event, field) ?? null;
    if (typeof value !== "string" && holdsNonFinite(value)) return nonFiniteGroup(counter, field);
    values.push(value);
  }
  return groupKey(values);
}

function nonFiniteGroup(counter: CompiledCounter, field: string): FieldError {
  return {
    path: field,
    message:
      `Counter '${counter.name}' groups by '${field}', which holds a number out of range (JSON reads 1e400 as Infinity)`,
  };
}

/** The group object (`{field: value}`) a group key stands for. */
export function decodeGroup(groupBy: readonly string[], key: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (key === OTHER_GROUP) {
    for (const field of groupBy) out[field] = OTHER_GROUP;
    return out;
  }
  const values = JSON.parse(key) as unknown[];
  groupBy.forEach((field, i) => out[field] = values[i] ?? null);
  return out;
}

/**
 * What one event adds to one counter's value: `undefined` for a count, the value, null when the
 * event skips the counter, or the error. A missing or null value skips the counter for this
 * event (as SQL's SUM skips NULL); a value of the wrong type is an error.
 */
function cellValue(
  counter: CompiledCounter,
  event: Event,
): number | string | undefined | null | FieldError {
  const spec = counter.aggregate;
  if (spec.kind === "count") return undefined;
  const value = readField(event, spec.field);
  if (value === undefined || value === null) return null;
  if (spec.kind === "distinct") {
    if (typeof value !== "string" && holdsNonFinite(value)) return valueError(counter, value);
    return distinctKey(value);
  }
  // Negated so that NaN and ±Infinity (JSON.parse reads 1e400 as Infinity) fail too.
  if (typeof value !== "number" || !(Math.abs(value) <= MAX_VALUE)) {
    return valueError(counter, value);
  }
  // -0 is 0 to a sketch, and Redis writes it as 0: min and max must agree.
  if (spec.kind === "quantiles" && value === 0) return 0;
  return value;
}

/**
 * The error of a value {@linkcode cellValue} refused (a function of its own: the messages' text
 * kept out of the hot function lets V8 inline it and what it calls).
 */
function valueError(counter: CompiledCounter, value: unknown): FieldError {
  const spec = counter.aggregate as Exclude<AggregateSpec, { kind: "count" }>;
  if (spec.kind === "distinct") {
    return {
      path: spec.field,
      message:
        `Counter '${counter.name}' (distinct) needs a value JSON can write, got a number out of range (JSON reads 1e400 as Infinity)`,
    };
  }
  if (typeof value !== "number") {
    return {
      path: spec.field,
      message: `Counter '${counter.name}' (${spec.kind}) needs a number, got ${describe(value)}`,
    };
  }
  return {
    path: spec.field,
    message:
      `Counter '${counter.name}' (${spec.kind}) accepts values up to ±${MAX_VALUE}, got ${value}`,
  };
}

/**
 * What one event adds to one counter: the update, null when the event skips the counter, or the
 * error. Missing group fields group as null. A missing or null value skips the counter for this
 * event (as SQL's SUM skips NULL); a value of the wrong type is an error.
 */
export function counterCell(
  counter: CompiledCounter,
  event: Event,
  timeMs: number,
): CellUpdate | FieldError | null {
  const value = cellValue(counter, event);
  if (value === null || typeof value === "object") return value;
  const pane = alignDown(timeMs, counter.paneMs);
  const group = groupKeyOf(counter, event);
  if (typeof group !== "string") return group;
  return value === undefined
    ? { counter: counter.index, pane, group }
    : { counter: counter.index, pane, group, value };
}

/**
 * {@linkcode counterCell} written into entry `at` of a batch's update columns (see
 * {@linkcode BatchUpdates}) instead of made as an object: that entry gets no group when the
 * event skips the counter. Returns the error, or null (then the entry is written).
 */
export function writeCounterCell(
  counter: CompiledCounter,
  event: Event,
  timeMs: number,
  columns: BatchUpdates,
  at: number,
): FieldError | null {
  const value = cellValue(counter, event);
  if (value !== null && typeof value === "object") return value;
  if (value === null) {
    columns.panes[at] = 0;
    columns.groups[at] = undefined;
    columns.values[at] = undefined;
    return null;
  }
  const group = groupKeyOf(counter, event);
  if (typeof group !== "string") return group;
  columns.panes[at] = alignDown(timeMs, counter.paneMs);
  columns.groups[at] = group;
  columns.values[at] = value;
  return null;
}
