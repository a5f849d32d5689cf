import assert from "node:assert/strict";
import fc from "fast-check";
import {
  alignDown,
  assignWindows,
  currentWindowStart,
  hopWidth,
  panesOfWindow,
  paneStart,
  paneWidth,
  windowsOfPane,
  type WindowSpec,
} from "../../src/window/mod.ts";

const MINUTE = 60_000;

/** Window specs as the config allows them: hopping every <= size, sliding size a multiple of precision. */
const specArbitrary: fc.Arbitrary<WindowSpec> = fc.oneof(
  fc.integer({ min: 1, max: 5_000 }).map((sizeMs): WindowSpec => ({ kind: "tumbling", sizeMs })),
  fc.integer({ min: 1, max: 5_000 }).chain((sizeMs) =>
    fc.integer({ min: 1, max: sizeMs }).map((everyMs): WindowSpec => ({
      kind: "hopping",
      sizeMs,
      everyMs,
    }))
  ),
  fc.tuple(fc.integer({ min: 1, max: 1_000 }), fc.integer({ min: 1, max: 60 })).map((
    [precisionMs, panes],
  ): WindowSpec => ({ kind: "sliding", sizeMs: precisionMs * panes, precisionMs })),
);

/** Event times near the epoch (negative too) and across the whole Date range. */
const timeArbitrary = fc.oneof(
  fc.integer({ min: -1_000_000, max: 1_000_000 }),
  fc.integer({ min: -8.64e15, max: 8.64e15 }),
);

function floorDiv(a: bigint, b: bigint): bigint {
  const quotient = a / b;
  return (a % b !== 0n && (a < 0n) !== (b < 0n)) ? quotient - 1n : quotient;
}

/** Every multiple `s` of the hop with `s <= t < s + size`, computed exactly with bigints. */
function expectedWindows(timeMs: number, spec: WindowSpec): number[] {
  const hop = BigInt(
    spec.kind === "hopping"
      ? spec.everyMs
      : spec.kind === "sliding"
      ? spec.precisionMs
      : spec.sizeMs,
  );
  const time = BigInt(timeMs);
  const size = BigInt(spec.sizeMs);
  const starts: number[] = [];
  // Smallest multiple of hop greater than time - size.
  for (let start = (floorDiv(time - size, hop) + 1n) * hop; start <= time; start += hop) {
    starts.push(Number(start));
  }
  return starts;
}

Deno.test("assignWindows() puts an event in the one tumbling window around it", () => {
  const spec: WindowSpec = { kind: "tumbling", sizeMs: MINUTE };
  assert.deepEqual(assignWindows(0, spec), [0]);
  assert.deepEqual(assignWindows(59_999, spec), [0]);
  assert.deepEqual(assignWindows(60_000, spec), [60_000]);
  assert.deepEqual(assignWindows(-1, spec), [-60_000]);
});

Deno.test("assignWindows() puts an event at a hopping boundary in both windows", () => {
  const spec: WindowSpec = { kind: "hopping", sizeMs: 2 * MINUTE, everyMs: MINUTE };
  assert.deepEqual(assignWindows(90_000, spec), [0, 60_000]);
  assert.deepEqual(assignWindows(60_000, spec), [0, 60_000]);
  assert.deepEqual(assignWindows(120_000, spec), [60_000, 120_000]);
});

Deno.test("assignWindows() handles a hop that does not divide the size", () => {
  const spec: WindowSpec = { kind: "hopping", sizeMs: 10 * MINUTE, everyMs: 3 * MINUTE };
  assert.deepEqual(assignWindows(10 * MINUTE, spec), [3, 6, 9].map((m) => m * MINUTE));
  assert.deepEqual(assignWindows(9 * MINUTE + 59_999, spec), [0, 3, 6, 9].map((m) => m * MINUTE));
  assert.equal(paneWidth(spec), MINUTE);
  assert.deepEqual(panesOfWindow(3 * MINUTE, spec).length, 10);
});

Deno.test("assignWindows() gives a sliding event one window per precision step", () => {
  const spec: WindowSpec = { kind: "sliding", sizeMs: 3 * MINUTE, precisionMs: MINUTE };
  assert.deepEqual(assignWindows(150_000, spec), [0, 60_000, 120_000]);
  assert.deepEqual(assignWindows(-1, spec), [-180_000, -120_000, -60_000]);
});

Deno.test("alignDown() floors negative times away from zero", () => {
  assert.equal(alignDown(-1, 10), -10);
  assert.equal(alignDown(-10, 10), -10);
  assert.equal(alignDown(-11, 10), -20);
  assert.equal(alignDown(19, 10), 10);
});

Deno.test("paneWidth() and hopWidth() follow the window kind", () => {
  assert.equal(paneWidth({ kind: "tumbling", sizeMs: 500 }), 500);
  assert.equal(hopWidth({ kind: "tumbling", sizeMs: 500 }), 500);
  assert.equal(paneWidth({ kind: "hopping", sizeMs: 600, everyMs: 400 }), 200);
  assert.equal(hopWidth({ kind: "hopping", sizeMs: 600, everyMs: 400 }), 400);
  assert.equal(paneWidth({ kind: "sliding", sizeMs: 600, precisionMs: 100 }), 100);
  assert.equal(hopWidth({ kind: "sliding", sizeMs: 600, precisionMs: 100 }), 100);
});

Deno.test("assignWindows() returns exactly the aligned starts s with s <= t < s + size", () => {
  fc.assert(
    fc.property(specArbitrary, timeArbitrary, (spec, timeMs) => {
      const starts = assignWindows(timeMs, spec);
      assert.deepEqual(starts, expectedWindows(timeMs, spec));
      assert.ok(starts.length >= 1);
    }),
    { numRuns: 500 },
  );
});

Deno.test("panesOfWindow() partitions a window into consecutive aligned panes", () => {
  fc.assert(
    fc.property(specArbitrary, timeArbitrary, (spec, timeMs) => {
      const width = paneWidth(spec);
      const starts = assignWindows(timeMs, spec);
      // The oldest, the newest and one in between keep runs fast for hop-1 windows.
      const sample = [starts[0], starts[starts.length >> 1], starts[starts.length - 1]];
      for (const start of sample) {
        const panes = panesOfWindow(start, spec);
        assert.equal(panes.length, spec.sizeMs / width);
        assert.equal(panes[0], start);
        panes.forEach((pane, i) => {
          assert.equal(paneStart(pane, spec), pane);
          if (i > 0) assert.equal(pane - panes[i - 1], width);
        });
        assert.equal(panes[panes.length - 1] + width, start + spec.sizeMs);
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("the pane holding an event lies inside every window holding it", () => {
  fc.assert(
    fc.property(specArbitrary, timeArbitrary, (spec, timeMs) => {
      const pane = paneStart(timeMs, spec);
      assert.ok(pane <= timeMs && timeMs < pane + paneWidth(spec));
      for (const start of assignWindows(timeMs, spec)) {
        assert.ok(panesOfWindow(start, spec).includes(pane), `pane ${pane} in window ${start}`);
      }
    }),
    { numRuns: 300 },
  );
});

Deno.test("windowsOfPane() lists the windows of every time inside the pane", () => {
  fc.assert(
    fc.property(specArbitrary, timeArbitrary, (spec, timeMs) => {
      assert.deepEqual(windowsOfPane(paneStart(timeMs, spec), spec), assignWindows(timeMs, spec));
    }),
    { numRuns: 300 },
  );
});

Deno.test("currentWindowStart() is the window holding now that ends soonest", () => {
  fc.assert(
    fc.property(specArbitrary, timeArbitrary, (spec, nowMs) => {
      const start = currentWindowStart(nowMs, spec);
      assert.ok(start <= nowMs && nowMs < start + spec.sizeMs);
      assert.equal(start, Math.min(...assignWindows(nowMs, spec)));
      if (spec.kind === "sliding") {
        // The last `size` ending at the end of the current pane.
        assert.equal(start + spec.sizeMs, paneStart(nowMs, spec) + spec.precisionMs);
      }
      if (spec.kind === "tumbling") assert.equal(start, alignDown(nowMs, spec.sizeMs));
    }),
    { numRuns: 300 },
  );
});

Deno.test("currentWindowStart() reads the last ten minutes of a sliding window", () => {
  const spec: WindowSpec = { kind: "sliding", sizeMs: 10 * MINUTE, precisionMs: MINUTE };
  const now = Date.parse("2026-01-01T00:10:30Z");
  assert.equal(currentWindowStart(now, spec), Date.parse("2026-01-01T00:01:00Z"));
});

Deno.test("paneWidth() of a hopping window is the gcd of its size and hop, whole number of hops or not", () => {
  const gcd = (a: number, b: number): number => b === 0 ? a : gcd(b, a % b);
  fc.assert(fc.property(
    fc.integer({ min: 1, max: 100_000 }),
    fc.integer({ min: 1, max: 100 }),
    fc.integer({ min: 0, max: 99_999 }),
    (everyMs, hops, extra) => {
      // Sizes that are a whole number of hops, and sizes that are not.
      const sizeMs = everyMs * hops + (extra % everyMs);
      assert.equal(paneWidth({ kind: "hopping", sizeMs, everyMs }), gcd(sizeMs, everyMs));
    },
  ));
});
