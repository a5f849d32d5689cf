/**
 * Top groups of a window: the `top` groups with the highest value (ties by
 * group key) and the rest merged into one `others` value, so a chart can
 * show a few lines and "everything else" without reading every group.
 *
 * Merging the rest is exact where the aggregate merges exactly: counts and
 * sums add, min and max take the extreme, avg divides the merged sum by the
 * merged count, quantiles add sketch buckets. Distinct values cannot be
 * merged from counts; the store returns the union of the rest
 * ({@linkcode ReadOptions.top}: a set union in memory, a HyperLogLog union
 * on Redis).
 *
 * @module
 */
import {
  type AggregateState,
  compareGroupKeys,
  emptyState,
  mergeState,
  normalizeState,
  type ReadOptions,
  REST_GROUP,
  sketchQuantiles,
  type WindowValue,
} from "../store/mod.ts";
import { aggregateValue, type CompiledCounter } from "../window/mod.ts";

export type { ReadOptions };

/** Options of a top-groups read. */
export interface TopOptions {
  /** How many groups per window to report by name. */
  top: number;
  /** Quantiles counters: the quantile (0 to 1) groups are ranked by. @default {0.5} */
  by?: number;
}

/** One window ranked: its top groups in order, the rest merged, and how many groups it has. */
export interface RankedWindow {
  /** The top groups, highest value first (ties by group key). */
  top: WindowValue[];
  /** The other groups merged into one state, or null when there are none. */
  rest: AggregateState | null;
  /** Groups in the window (top and rest). */
  groups: number;
}

/** The number a group is ranked by: its value, or for quantiles the estimate at `by`. */
function rankOf(counter: CompiledCounter, state: AggregateState, by: number): number | null {
  const spec = counter.aggregate;
  if (spec.kind === "quantiles") {
    return sketchQuantiles(state.bins ?? {}, spec.accuracy, [by], state)[0];
  }
  return aggregateValue(spec, state) as number | null;
}

/**
 * Ranks the groups of one window (`values` all share a start; a
 * {@linkcode REST_GROUP} row from the store is the distinct union of the rest).
 */
export function rankWindow(
  counter: CompiledCounter,
  values: readonly WindowValue[],
  options: TopOptions,
): RankedWindow {
  const restRow = values.find((value) => value.group === REST_GROUP);
  const by = options.by ?? 0.5;
  const ranked = values.filter((value) => value.group !== REST_GROUP)
    .map((value) => ({ value, rank: rankOf(counter, value.state, by) }))
    .sort((a, b) => {
      // Groups without a value (min of nothing) come last.
      if (a.rank !== b.rank) {
        if (a.rank === null) return 1;
        if (b.rank === null) return -1;
        return b.rank - a.rank;
      }
      return compareGroupKeys(a.value.group, b.value.group);
    });
  const top = ranked.slice(0, options.top).map((item) => item.value);
  const others = ranked.slice(options.top);
  let rest: AggregateState | null = null;
  if (others.length > 0) {
    if (counter.aggregate.kind === "distinct") {
      rest = restRow?.state ?? null;
    } else {
      rest = emptyState();
      for (const item of others) mergeState(rest, item.value.state);
      rest = normalizeState(counter.aggregate.kind, rest);
    }
  }
  return { top, rest, groups: ranked.length };
}
