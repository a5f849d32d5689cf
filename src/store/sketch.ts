/**
 * DDSketch bucket counts: what a quantile counter's pane holds for one group.
 *
 * A value goes to one bucket of DDSketch's logarithmic mapping (from
 * `@datadog/sketches-js`): `p<key>` for a positive value, `n<key>` for a
 * negative one (the key of its magnitude, mirrored), `z` for zero. A pane
 * keeps only counts per bucket, so merging panes, batches and instances is
 * adding counts: the result does not depend on how events were split or in
 * which order they came, and both stores hold the same numbers.
 *
 * Keys are clamped to the buckets of magnitudes between
 * {@linkcode SKETCH_MIN_MAGNITUDE} and {@linkcode SKETCH_MAX_MAGNITUDE}, so a
 * pane holds a bounded number of buckets whatever it is sent (clamping, unlike
 * DDSketch's collapsing stores, depends on each value alone, not on order).
 * Nonzero values of smaller magnitude lose the accuracy guarantee (they count
 * as about ±1e-9); larger ones are refused before they reach a counter.
 *
 * Quantiles are read at DDSketch's rank, `floor(q × (count − 1))`, with the
 * library's own bucket value (the bucket of the value at that rank, no
 * interpolation), then clamped into the exact `[min, max]`. The rank is taken
 * of the decimal `q` names (`0.29 × 100` is 29, where the library's floating
 * product, 28.999999999999996, would read the value one rank lower).
 *
 * @module
 */
import { DDSketch } from "@datadog/sketches-js";
import { quantilesOf } from "./_sketch_quantiles.ts";

/** Smallest nonzero magnitude whose quantiles keep the relative-accuracy guarantee. */
export const SKETCH_MIN_MAGNITUDE = 1e-9;
/** Largest magnitude with its own bucket (2^53, above any accepted value). */
export const SKETCH_MAX_MAGNITUDE = 2 ** 53;
/** Relative accuracy of a quantile counter without one. */
export const DEFAULT_ACCURACY = 0.01;

/** Bucket counts of a sketch: bucket name (`z`, `p<key>`, `n<key>`) → count. */
export type SketchBins = Record<string, number>;

interface Mapping {
  /** The LogarithmicMapping a `DDSketch` of this accuracy uses. */
  mapping: DDSketch["mapping"];
  lowest: number;
  highest: number;
}

const mappings = new Map<number, Mapping>();

function mappingOf(accuracy: number): Mapping {
  let found = mappings.get(accuracy);
  if (!found) {
    const mapping = new DDSketch({ relativeAccuracy: accuracy }).mapping;
    found = {
      mapping,
      lowest: mapping.key(SKETCH_MIN_MAGNITUDE),
      highest: mapping.key(SKETCH_MAX_MAGNITUDE),
    };
    mappings.set(accuracy, found);
  }
  return found;
}

/** The bucket a value counts in, for a sketch of the given relative accuracy. */
export function sketchBin(value: number, accuracy: number): string {
  if (value === 0) return "z";
  const { mapping, lowest, highest } = mappingOf(accuracy);
  const key = Math.min(highest, Math.max(lowest, mapping.key(Math.abs(value))));
  return (value > 0 ? "p" : "n") + key;
}

/** Adds the counts of `from` to `into`, in place. */
export function addBins(into: SketchBins, from: SketchBins): void {
  for (const bin in from) into[bin] = (into[bin] ?? 0) + from[bin];
}

/** Options for {@linkcode sketchQuantiles}. */
export interface QuantileOptions {
  /** Smallest value counted; estimates are clamped to at least it. @default {no clamp} */
  min?: number | null;
  /** Largest value counted; estimates are clamped to at most it. @default {no clamp} */
  max?: number | null;
}

/**
 * Estimates of the quantiles `qs` (each in [0, 1]) of a sketch, within
 * `accuracy` of the exact value at rank `floor(q × (count − 1))` for values in
 * the guaranteed range; null for each when the sketch is empty.
 *
 * It reads the occupied buckets only, as `DDSketch.getValueAtQuantile` would
 * read them (the same bucket, the same value), without building a
 * `DDSketch`: its dense stores allocate and walk every key between the
 * smallest and the largest occupied one, some 29,000 for a sketch of 0.001
 * holding 1e-9 and 2^53, for each group a read ranks or reports.
 */
export function sketchQuantiles(
  bins: SketchBins,
  accuracy: number,
  qs: readonly number[],
  options: QuantileOptions = {},
): Array<number | null> {
  // The clamps only: the walk's other options (its tally) are not part of this API, and a field
  // of that name on the object a caller passes (a window's state, say) is not honoured.
  const { min, max } = options;
  return quantilesOf(bins, () => mappingOf(accuracy).mapping, qs, { min, max });
}
