/**
 * The DDSketch buckets against an exact model: on 100k values of several
 * distributions every quantile is within the relative accuracy of the value
 * at DDSketch's rank (`floor(q × (count − 1))` of the sorted values, no
 * interpolation); clamping below 1e-9 is the documented exception.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { DDSketch } from "@datadog/sketches-js";
import {
  addBins,
  type QuantileOptions,
  sketchBin,
  type SketchBins,
  sketchQuantiles,
} from "../../src/store/sketch.ts";
import { quantilesOf } from "../../src/store/_sketch_quantiles.ts";
import { denseQuantiles } from "./_dense_quantiles.ts";

const QS = [0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1];

/** A seeded generator (mulberry32), so every run sees the same values. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function normal(next: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
}

const N = 100_000;

/** The distributions of the accuracy test, 100k values each. */
export const DISTRIBUTIONS: Record<string, (next: () => number) => number> = {
  uniform: (next) => next() * 1000,
  lognormal: (next) => Math.exp(normal(next) * 2),
  bimodal: (next) => next() < 0.7 ? 10 + normal(next) : 1000 + 50 * normal(next),
  constants: () => 42,
  zeros: () => 0,
  negatives: (next) => -Math.exp(normal(next) * 1.5) * 100,
  mixed: (next) => next() < 0.2 ? 0 : (next() < 0.5 ? -1 : 1) * next() * 1e6,
  integers: (next) => Math.floor(next() * 5000),
};

function binsOf(values: number[], accuracy: number): SketchBins {
  const bins: SketchBins = {};
  for (const value of values) {
    const bin = sketchBin(value, accuracy);
    bins[bin] = (bins[bin] ?? 0) + 1;
  }
  return bins;
}

/** The exact value DDSketch's rank names. */
function exactQuantile(sorted: number[], q: number): number {
  return sorted[Math.floor(q * (sorted.length - 1))];
}

function relativeError(estimate: number, exact: number): number {
  if (exact === 0) return estimate === 0 ? 0 : Infinity;
  return Math.abs(estimate - exact) / Math.abs(exact);
}

/** Max relative error over QS for 100k values of one distribution. */
export function maxRelativeError(
  draw: (next: () => number) => number,
  accuracy: number,
  seed = 1,
): number {
  const next = random(seed);
  const values = Array.from({ length: N }, () => draw(next));
  const sorted = values.toSorted((a, b) => a - b);
  const estimates = sketchQuantiles(binsOf(values, accuracy), accuracy, QS, {
    min: sorted[0],
    max: sorted.at(-1),
  });
  let worst = 0;
  QS.forEach((q, i) => {
    worst = Math.max(worst, relativeError(estimates[i]!, exactQuantile(sorted, q)));
  });
  return worst;
}

/** The largest relative errors the README gives (the values are seeded: the same every run). */
const README_ERRORS: Record<number, Record<string, string>> = {
  0.01: {
    uniform: "0.0096",
    lognormal: "0.0089",
    bimodal: "0.0079",
    negatives: "0.0099",
    mixed: "0.0096",
    integers: "0.0086",
    constants: "0.0",
    zeros: "0.0",
  },
  0.001: {
    uniform: "0.00095",
    lognormal: "0.00098",
    bimodal: "0.00084",
    negatives: "0.00093",
    mixed: "0.00094",
    integers: "0.00080",
    constants: "0.0",
    zeros: "0.0",
  },
};

for (const accuracy of [0.01, 0.001, 0.05]) {
  for (const [name, draw] of Object.entries(DISTRIBUTIONS)) {
    Deno.test(`sketchQuantiles() is within ${accuracy} of the exact quantile on 100k ${name} values`, () => {
      const worst = maxRelativeError(draw, accuracy);
      // A hair over the accuracy for the rounding of log and pow.
      assert.ok(worst <= accuracy * (1 + 1e-9), `${name}: max relative error ${worst}`);
      const stated = README_ERRORS[accuracy]?.[name];
      if (stated !== undefined) assert.equal(worst.toPrecision(2), stated, name);
    });
  }
}

Deno.test("sketchQuantiles() follows DDSketch's rank, floor(q × (count − 1)), without interpolation", () => {
  const bins = binsOf([1, 100], 0.01);
  // Interpolation would give about 50.5; DDSketch answers the lower value up to q = 1.
  assert.deepEqual(sketchQuantiles(bins, 0.01, [0.5, 0.99], { min: 1, max: 100 }), [1, 1]);
  assert.deepEqual(sketchQuantiles(bins, 0.01, [1], { min: 1, max: 100 }), [100]);
});

Deno.test("sketchQuantiles() takes the rank of the decimal q names: p29 of 1..101 is about 30", () => {
  // 0.29 × 100 is 28.999999999999996 in floating point: DDSketch's own rank read the value 29.
  const values = Array.from({ length: 101 }, (_, i) => i + 1);
  const [p29, p57] = sketchQuantiles(binsOf(values, 0.01), 0.01, [0.29, 0.57], {
    min: 1,
    max: 101,
  });
  assert.ok(relativeError(p29!, 30) <= 0.01, `p29 ${p29}`);
  assert.ok(relativeError(p57!, 58) <= 0.01, `p57 ${p57}`);
});

Deno.test("sketchQuantiles() is within its accuracy at every whole percentile of 1 to 200 values of either sign", () => {
  let checked = 0;
  for (const sign of [1, -1]) {
    for (let n = 1; n <= 200; n++) {
      const values = Array.from({ length: n }, (_, i) => sign * (i + 1));
      const sorted = values.toSorted((a, b) => a - b);
      const bins = binsOf(values, 0.01);
      const qs = Array.from({ length: 101 }, (_, percent) => percent / 100);
      const estimates = sketchQuantiles(bins, 0.01, qs, { min: sorted[0], max: sorted.at(-1) });
      for (let percent = 0; percent <= 100; percent++) {
        // The rank in whole numbers: floor(percent × (n − 1) / 100), no floating product.
        const exact = sorted[Math.floor((percent * (n - 1)) / 100)];
        const estimate = estimates[percent]!;
        assert.ok(
          relativeError(estimate, exact) <= 0.01 * (1 + 1e-9),
          `p${percent} of ${sign * n}: ${estimate} vs ${exact}`,
        );
        checked++;
      }
    }
  }
  assert.equal(checked, 2 * 200 * 101);
});

Deno.test("sketchQuantiles() keeps negative, zero and positive values apart, in order", () => {
  const values = [-1000, -10, 0, 0, 5, 500];
  const estimates = sketchQuantiles(binsOf(values, 0.01), 0.01, [0, 0.2, 0.4, 0.6, 0.8, 1]);
  values.forEach((exact, i) => {
    assert.ok(relativeError(estimates[i]!, exact) <= 0.01, `${estimates[i]} vs ${exact}`);
  });
});

Deno.test("sketchQuantiles() of one repeated value is that value exactly, with min and max", () => {
  for (const value of [42, -0.37, 1e15]) {
    const bins = binsOf(Array(1000).fill(value), 0.01);
    assert.deepEqual(
      sketchQuantiles(bins, 0.01, [0, 0.5, 0.99, 1], { min: value, max: value }),
      [value, value, value, value],
    );
  }
});

Deno.test("sketchQuantiles() of no values is null for each quantile", () => {
  assert.deepEqual(sketchQuantiles({}, 0.01, [0.5, 0.99]), [null, null]);
  // Whatever the accuracy: no bucket is read, so no mapping is built (DDSketch throws for 0).
  assert.deepEqual(sketchQuantiles({}, 0, [0.5]), [null]);
  assert.deepEqual(sketchQuantiles({ p3: 0 }, 1, [0.5]), [null]);
});

Deno.test("sketchBin() clamps magnitudes below 1e-9 into the bucket of 1e-9, losing the guarantee", () => {
  assert.equal(sketchBin(1e-15, 0.01), sketchBin(1e-9, 0.01));
  assert.equal(sketchBin(-1e-15, 0.01), sketchBin(-1e-9, 0.01));
  assert.notEqual(sketchBin(1e-15, 0.01), sketchBin(-1e-15, 0.01));
  const [estimate] = sketchQuantiles(binsOf([1e-15, 1], 0.01), 0.01, [0]);
  assert.ok(relativeError(estimate!, 1e-9) <= 0.01 && relativeError(estimate!, 1e-15) > 0.01);
  // Clamped to [min, max] when they are known, so a lone small value is exact.
  assert.deepEqual(
    sketchQuantiles(binsOf([1e-15], 0.01), 0.01, [0.5], { min: 1e-15, max: 1e-15 }),
    [
      1e-15,
    ],
  );
});

Deno.test("sketchBin() keeps the guarantee from 1e-9 up to the largest accepted value", () => {
  for (const value of [1e-9, 3e-7, 1, 1e12, Number.MAX_SAFE_INTEGER, -Number.MAX_SAFE_INTEGER]) {
    const [estimate] = sketchQuantiles(binsOf([value], 0.01), 0.01, [0.5]);
    assert.ok(relativeError(estimate!, value) <= 0.01, `${estimate} vs ${value}`);
  }
});

Deno.test("adding the buckets of any split of the values gives the buckets of all of them", () => {
  fc.assert(
    fc.property(
      fc.array(fc.double({ min: -1e9, max: 1e9, noNaN: true }), { maxLength: 200 }),
      fc.array(fc.integer({ min: 1, max: 30 }), { minLength: 1, maxLength: 10 }),
      (values, sizes) => {
        const merged: SketchBins = {};
        let offset = 0;
        for (let i = 0; offset < values.length; i++) {
          const part = values.slice(offset, offset + sizes[i % sizes.length]);
          offset += part.length;
          addBins(merged, binsOf(part.toReversed(), 0.01));
        }
        assert.deepEqual(merged, binsOf(values, 0.01));
      },
    ),
  );
});

Deno.test("the README's quantiles cost figures are those of the two bench results it names", async () => {
  const root = new URL("../../", import.meta.url);
  const readme = await Deno.readTextFile(new URL("README.md", root));
  const cost = readme.slice(
    readme.indexOf("- **Cost**"),
    readme.indexOf("- In Redis a pane keeps"),
  );
  const runs = await Promise.all(
    ["08-55-14Z", "08-55-27Z"].map(async (time) => {
      const name = `bench/results/quantiles-2026-12-01T${time}.json`;
      assert.ok(cost.includes(time), `the README names ${name}`);
      return JSON.parse(await Deno.readTextFile(new URL(name, root)));
    }),
  );
  const whole = (n: number) => Math.round(n).toLocaleString("en-US");
  const span = (values: number[]) => `${Math.min(...values)}–${Math.max(...values)}`;
  const [small, large] = [0, 1].map((i) => runs.map((run) => run.panes[i]));
  const expected = [
    `${whole(small[0].sketchBytes)} bytes (${
      span(small.map((p) => p.buckets))
    } buckets) after 1,000`,
    `${whole(large[0].sketchBytes)} bytes (${
      span(large.map((p) => p.buckets))
    } buckets) after 100,000`,
    `${small[0].paneBytes} bytes of pane fields`,
    `${whole(runs[0].memoryEventsPerSecond)} and ${whole(runs[1].memoryEventsPerSecond)} events/s`,
    `${whole(runs[0].redisEventsPerSecond)} and ${whole(runs[1].redisEventsPerSecond)} (` +
    `${span(runs.map((run) => Number((1e6 / run.redisEventsPerSecond).toFixed(1))))} µs`,
  ];
  for (const run of runs) {
    for (const pane of run.panes) assert.equal(pane.paneBytes, small[0].paneBytes);
    assert.deepEqual(run.panes.map((pane: { sketchBytes: number }) => pane.sketchBytes), [
      small[0].sketchBytes,
      large[0].sketchBytes,
    ]);
  }
  const text = cost.replace(/\s+/g, " ");
  for (const figure of expected) assert.ok(text.includes(figure), `README Cost says '${figure}'`);
});

Deno.test("sketchQuantiles() reads the bucket and value a DDSketch of the same counts reads, at every rank", () => {
  const value = fc.oneof(
    fc.constant(0),
    fc.double({ min: 1e-12, max: 2 ** 53, noNaN: true }),
    fc.double({ min: -(2 ** 53), max: -1e-12, noNaN: true }),
    fc.integer({ min: -1000, max: 1000 }),
  );
  fc.assert(
    fc.property(
      fc.array(value, { minLength: 1, maxLength: 60 }),
      fc.constantFrom(0.001, 0.01, 0.05, 0.1),
      fc.array(fc.constantFrom(...QS, 0.29, 0.57, 0.333), { minLength: 1, maxLength: 20 }),
      (values, accuracy, qs) => {
        const bins = binsOf(values, accuracy);
        assert.deepEqual(sketchQuantiles(bins, accuracy, qs), denseQuantiles(bins, accuracy, qs));
      },
    ),
    { numRuns: 500 },
  );
});

Deno.test("sketchQuantiles() looks at the occupied buckets only, not every key between the smallest and the largest", () => {
  // 1e-9 and 2^53 - 1 of either sign at accuracy 0.001: four buckets some 29,000 keys apart on
  // each side. A DDSketch's dense stores allocate and walk those keys for every group a read
  // ranks or reports (1.7 ms a group: a top of a window of 20,000 such groups held the event loop
  // for over half a minute).
  const bins = binsOf([1e-9, Number.MAX_SAFE_INTEGER, -1e-9, -Number.MAX_SAFE_INTEGER], 0.001);
  const qs = [0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1];
  const tally = { slotsRead: 0 };
  const { mapping } = new DDSketch({ relativeAccuracy: 0.001 });
  const estimates = quantilesOf(bins, () => mapping, qs, { tally });
  const read = tally.slotsRead;
  // The walk counted is sketchQuantiles()' own: the same estimates.
  assert.deepEqual(sketchQuantiles(bins, 0.001, qs), estimates);
  // At least one slot a quantile (none is zero), at most every occupied one.
  assert.ok(
    read >= qs.length && read <= 4 * qs.length,
    `${read} bucket slots read for 4 buckets and ${qs.length} quantiles`,
  );
  assert.deepEqual(estimates, denseQuantiles(bins, 0.001, qs));
  assert.ok(relativeError(estimates[0]!, -Number.MAX_SAFE_INTEGER) <= 0.001);
  assert.ok(relativeError(estimates.at(-1)!, Number.MAX_SAFE_INTEGER) <= 0.001);
});

Deno.test("sketchQuantiles() hands the walk only its clamps: a stray tally field on the options is not honoured", () => {
  const bins = binsOf([1, 2, 3, 100], 0.01);
  const tally = { slotsRead: 0 };
  const options = { min: 2, max: 50, tally } as QuantileOptions;
  assert.deepEqual(
    sketchQuantiles(bins, 0.01, [0, 1], options),
    sketchQuantiles(bins, 0.01, [0, 1], { min: 2, max: 50 }),
  );
  assert.deepEqual(sketchQuantiles(bins, 0.01, [0, 1], options), [2, 50]);
  assert.equal(tally.slotsRead, 0);
});
