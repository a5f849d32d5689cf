/**
 * What reading a quantiles value costs per group (what `?top=` ranks and every
 * listed row reports): `sketchQuantiles` against the read it replaced, a
 * DDSketch of the library filled with the same bucket counts and read by its
 * stores' `keyAtRank` (the baseline, in the same run, same answers checked).
 *
 * Two sets of groups at accuracy 0.001: 20,000 of two lognormal values each
 * (spread e^±10), and 2,000 "wide" ones holding ±1e-9 and ±(2^53 − 1), the
 * ends of the guaranteed range, which anyone who may ingest can send.
 * Prints ms per set and the ratio; writes no results file.
 *
 * `deno run -A bench/quantile_read.ts [rounds]`
 */
import { sketchBin, type SketchBins, sketchQuantiles } from "../src/store/sketch.ts";
import { denseQuantiles } from "../tests/store/_dense_quantiles.ts";

const ROUNDS = Number(Deno.args[0] ?? 5);
const ACCURACY = 0.001;
const QS = [0.5, 0.9, 0.95, 0.99];

function binsOf(values: number[]): SketchBins {
  const bins: SketchBins = {};
  for (const value of values) {
    const bin = sketchBin(value, ACCURACY);
    bins[bin] = (bins[bin] ?? 0) + 1;
  }
  return bins;
}

const sets: Record<string, SketchBins[]> = {
  "20,000 lognormal groups": Array.from(
    { length: 20_000 },
    () => binsOf([Math.exp(Math.random() * 20 - 10), Math.exp(Math.random() * 20 - 10)]),
  ),
  "2,000 wide groups": Array.from(
    { length: 2_000 },
    () => binsOf([1e-9, Number.MAX_SAFE_INTEGER, -1e-9, -Number.MAX_SAFE_INTEGER]),
  ),
};

for (const [name, groups] of Object.entries(sets)) {
  for (const bins of groups.slice(0, 200)) {
    const sparse = JSON.stringify(sketchQuantiles(bins, ACCURACY, QS));
    if (sparse !== JSON.stringify(denseQuantiles(bins, ACCURACY, QS))) {
      throw new Error(`${name}: answers differ`);
    }
  }
  for (let round = 1; round <= ROUNDS; round++) {
    let started = performance.now();
    for (const bins of groups) denseQuantiles(bins, ACCURACY, QS);
    const dense = performance.now() - started;
    started = performance.now();
    for (const bins of groups) sketchQuantiles(bins, ACCURACY, QS);
    const sparse = performance.now() - started;
    console.log(
      `${name}, round ${round}: DDSketch stores ${dense.toFixed(0)} ms, ` +
        `sketchQuantiles ${sparse.toFixed(0)} ms (${(dense / sparse).toFixed(0)}×)`,
    );
  }
}
