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
  /**
   * For tests only, not part of the API: a tally to which the bucket slots looked at are added (to
   * test its cost: the occupied buckets of each sketch read, not the span of bucket keys between
   * them). @default {none}
   * @internal
   */
  tally?: { slotsRead: number };
}

/** A sketch's occupied buckets of one sign, by key, ascending: keys and their counts. */
interface Side {
  keys: number[];
  counts: number[];
  /** All the side's counts added. */
  total: number;
}

function sideOf(entries: Array<[number, number]>): Side {
  entries.sort((a, b) => a[0] - b[0]);
  let total = 0;
  for (const [, count] of entries) total += count;
  return { keys: entries.map(([key]) => key), counts: entries.map(([, count]) => count), total };
}

/**
 * The key of the bucket holding a whole rank of a side, counting from its smallest key: the first
 * whose running count passes the rank, as DDSketch's `DenseStore.keyAtRank` walks its slots.
 */
function keyAtRank(side: Side, rank: number, tally?: { slotsRead: number }): number {
  let running = 0;
  let i = 0;
  while (i < side.keys.length - 1) {
    running += side.counts[i];
    if (running > rank) break;
    i++;
  }
  if (tally) tally.slotsRead += i + 1;
  return side.keys[i];
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
  const positive: Array<[number, number]> = [];
  const negative: Array<[number, number]> = [];
  let zeros = 0;
  for (const bin in bins) {
    const weight = bins[bin];
    if (!(weight > 0)) continue;
    if (bin === "z") zeros += weight;
    else if (bin[0] === "p") positive.push([Number(bin.slice(1)), weight]);
    else negative.push([Number(bin.slice(1)), weight]);
  }
  const positives = sideOf(positive);
  const negatives = sideOf(negative);
  const count = negatives.total + zeros + positives.total;
  if (count === 0) return qs.map(() => null);
  const { mapping } = mappingOf(accuracy);
  const { min, max, tally } = options;
  return qs.map((q) => {
    const rank = rankOf(q, count - 1);
    // As getValueAtQuantile: negatives from the largest magnitude down, then zeros, then positives.
    let value: number;
    if (rank < negatives.total) {
      value = -mapping.value(keyAtRank(negatives, negatives.total - rank - 1, tally));
    } else if (rank < negatives.total + zeros) {
      value = 0;
    } else {
      value = mapping.value(keyAtRank(positives, rank - zeros - negatives.total, tally));
    }
    if (typeof min === "number" && value < min) value = min;
    if (typeof max === "number" && value > max) value = max;
    return value;
  });
}

/**
 * `floor(q × last)` of the decimal that names `q` (its shortest text, as `String` writes it),
 * exactly: `rankOf(0.29, 100)` is 29, where `Math.floor(0.29 * 100)` is 28.
 */
function rankOf(q: number, last: number): number {
  const [mantissa, exponent = "0"] = String(q).split("e");
  const [whole, fraction = ""] = mantissa.split(".");
  // q = digits / 10^scale; q is in [0, 1], so the scale is never negative but for 1 itself.
  const digits = BigInt(`${whole}${fraction}`);
  const scale = fraction.length - Number(exponent);
  const product = digits * BigInt(last);
  return Number(scale <= 0 ? product * 10n ** BigInt(-scale) : product / 10n ** BigInt(scale));
}
