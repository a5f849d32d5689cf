/**
 * The quantile read behind `sketchQuantiles` (./sketch.ts): its walk of a sketch's occupied
 * buckets, with a tally of the bucket slots it looks at for tests of its cost (not part of the
 * API: `QuantileOptions` has no such hook).
 *
 * @module
 */
/** A sketch's bucket counts (`SketchBins` of ./sketch.ts, which imports this module). */
type Bins = Record<string, number>;

/** The clamps of `QuantileOptions` (./sketch.ts). */
interface Clamps {
  min?: number | null;
  max?: number | null;
}

/** A bucket mapping's value of a key: the `mapping` of a `DDSketch`. */
interface KeyValues {
  value(key: number): number;
}

/** The bucket slots a read looked at, added up by {@linkcode quantilesOf} when given. */
export interface SlotTally {
  slotsRead: number;
}

/** Options for {@linkcode quantilesOf}: the clamps of `QuantileOptions`, and a tally for tests. */
export interface WalkOptions extends Clamps {
  /**
   * Has the bucket slots looked at added (the occupied buckets of each side read, not the span of
   * bucket keys between them). @default {no tally}
   */
  tally?: SlotTally;
}

/**
 * `sketchQuantiles(bins, accuracy, qs, options)` with `mappingOf()` the mapping of that accuracy,
 * called only when the sketch holds a value (an empty sketch's quantiles are null whatever the
 * accuracy).
 */
export function quantilesOf(
  bins: Bins,
  mappingOf: () => KeyValues,
  qs: readonly number[],
  options: WalkOptions = {},
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
  const mapping = mappingOf();
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

/** A sketch's occupied buckets of one sign, by key, ascending: keys and their counts. */
interface Side {
  keys: number[];
  counts: number[];
  /** All the side's counts added. */
  total: number;
}

/** The side of `entries` (bucket keys and their counts, of one sign), sorting them in place. */
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
function keyAtRank(side: Side, rank: number, tally?: SlotTally): number {
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
