/**
 * sketchQuantiles() as it read sketches before it read only their occupied buckets: a DDSketch of
 * the library, its stores filled with the counts and walked by `keyAtRank`. The model the sparse
 * read must match bucket for bucket (tests/store/sketch_test.ts) and the baseline it is timed
 * against (bench/quantile_read.ts).
 */
import { DDSketch } from "@datadog/sketches-js";
import type { SketchBins } from "../../src/store/sketch.ts";

/** The quantiles `qs` of `bins` at `accuracy`, read through a DDSketch's dense stores. */
export function denseQuantiles(
  bins: SketchBins,
  accuracy: number,
  qs: readonly number[],
): number[] {
  const sketch = new DDSketch({ relativeAccuracy: accuracy });
  let count = 0;
  for (const bin in bins) {
    count += bins[bin];
    if (bin === "z") sketch.zeroCount += bins[bin];
    else if (bin[0] === "p") sketch.store.add(Number(bin.slice(1)), bins[bin]);
    else sketch.negativeStore.add(Number(bin.slice(1)), bins[bin]);
  }
  const negatives = sketch.negativeStore.count;
  return qs.map((q) => {
    // The exact rank of the decimal q names, as sketchQuantiles() takes it.
    const [mantissa, exponent = "0"] = String(q).split("e");
    const [whole, fraction = ""] = mantissa.split(".");
    const scale = fraction.length - Number(exponent);
    const product = BigInt(`${whole}${fraction}`) * BigInt(count - 1);
    const rank = Number(
      scale <= 0 ? product * 10n ** BigInt(-scale) : product / 10n ** BigInt(scale),
    );
    if (rank < negatives) {
      return -sketch.mapping.value(sketch.negativeStore.keyAtRank(negatives - rank - 1, false));
    }
    if (rank < sketch.zeroCount + negatives) return 0;
    return sketch.mapping.value(sketch.store.keyAtRank(rank - sketch.zeroCount - negatives));
  });
}
