import assert from "node:assert/strict";
import fc from "fast-check";
import {
  describeDuration,
  DurationError,
  formatDuration,
  parseDuration,
} from "../../src/config/duration.ts";

Deno.test("parseDuration() reads every unit as milliseconds", () => {
  assert.equal(parseDuration("250ms"), 250);
  assert.equal(parseDuration("30s"), 30_000);
  assert.equal(parseDuration("5m"), 300_000);
  assert.equal(parseDuration("1h"), 3_600_000);
  assert.equal(parseDuration("7d"), 604_800_000);
  assert.equal(parseDuration("2w"), 1_209_600_000);
});

Deno.test("parseDuration() adds the parts of a combined duration", () => {
  assert.equal(parseDuration("1h30m"), 5_400_000);
  assert.equal(parseDuration("1m1s1ms"), 61_001);
  // Any order, each unit once.
  assert.equal(parseDuration("30m1h"), 5_400_000);
});

Deno.test("parseDuration() refuses a unit given twice, naming it and where, unless lenient (as releases before that check added the parts)", () => {
  for (
    const [text, unit, position] of [["1m1m", "m", 2], ["1s2ms1s", "s", 5], [
      "1h0h",
      "h",
      2,
    ]] as const
  ) {
    assert.throws(() => parseDuration(text), {
      name: "DurationError",
      message:
        `Cannot read duration '${text}' at position ${position}: unit '${unit}' is given twice; give each unit once`,
    });
  }
  assert.equal(parseDuration("1m1m", { lenient: true }), 120_000);
  assert.equal(parseDuration("1s1s", { lenient: true }), 2_000);
});

Deno.test("parseDuration() tells minutes from milliseconds", () => {
  assert.equal(parseDuration("1m"), 60_000);
  assert.equal(parseDuration("1ms"), 1);
  assert.equal(parseDuration("1m5ms"), 60_005);
});

Deno.test("parseDuration() accepts fractions that come to whole milliseconds", () => {
  assert.equal(parseDuration("1.5h"), 5_400_000);
  assert.equal(parseDuration("0.25s"), 250);
  assert.equal(parseDuration("1.1s"), 1_100);
  assert.equal(parseDuration("0.001s"), 1);
  assert.equal(parseDuration("2.0ms"), 2);
  assert.equal(parseDuration("0.00001d1ms"), 865);
});

Deno.test("parseDuration() refuses a fraction of a millisecond, naming the part, unless lenient (as releases before that check rounded it)", () => {
  for (
    const [text, part] of [
      ["0.6ms", "0.6ms"],
      ["1.6ms", "1.6ms"],
      ["0.4ms", "0.4ms"],
      ["0.0001s", "0.0001s"],
      ["1m0.0005s", "0.0005s"],
      [`0.${"0".repeat(30)}1w`, `0.${"0".repeat(30)}1w`],
    ]
  ) {
    assert.throws(() => parseDuration(text), {
      name: "DurationError",
      message:
        `Cannot read duration '${text}': '${part}' is not a whole number of milliseconds; a duration is counted in whole ms`,
    }, text);
  }
  assert.equal(parseDuration("0.6ms", { lenient: true }), 1);
  assert.equal(parseDuration("1.6ms", { lenient: true }), 2);
  assert.equal(parseDuration("0.4ms", { lenient: true }), 0);
});

Deno.test("parseDuration() ignores surrounding whitespace and reads zero", () => {
  assert.equal(parseDuration("  5m\n"), 300_000);
  assert.equal(parseDuration("0s"), 0);
});

Deno.test("parseDuration() refuses empty and blank text", () => {
  assert.throws(() => parseDuration(""), { name: "DurationError", message: "Duration is empty" });
  assert.throws(() => parseDuration("   "), DurationError);
});

Deno.test("parseDuration() refuses text that is not a number and a unit, naming the position", () => {
  const bad: Array<[string, number]> = [
    ["5", 0],
    ["m", 0],
    ["-1s", 0],
    ["+1s", 0],
    ["1e3s", 0],
    ["5M", 0],
    ["1 h", 0],
    ["1h 30m", 2],
    ["1h30", 2],
    ["1hour", 2],
    [".5s", 0],
    ["1.s", 0],
    ["1,5s", 0],
    ["Infinitys", 0],
  ];
  for (const [text, position] of bad) {
    assert.throws(
      () => parseDuration(text),
      (error: unknown) => {
        assert.ok(error instanceof DurationError, `${text}: ${error}`);
        assert.match(error.message, new RegExp(`at position ${position}:`), text);
        assert.match(error.message, /expected a number and a unit \(ms, s, m, h, d, w\)/);
        return true;
      },
      text,
    );
  }
});

Deno.test("parseDuration() names a position in the text as quoted, leading whitespace included", () => {
  const bad: Array<[string, number, RegExp]> = [
    ["  1h 30m", 4, /expected a number and a unit/],
    [" 1x", 1, /expected a number and a unit/],
    ["\t1m1m ", 3, /unit 'm' is given twice/],
  ];
  for (const [text, position, reason] of bad) {
    assert.throws(
      () => parseDuration(text),
      (error: unknown) => {
        assert.ok(error instanceof DurationError, `${text}: ${error}`);
        assert.match(error.message, new RegExp(`'${text}' at position ${position}: `), text);
        assert.match(error.message, reason, text);
        return true;
      },
      text,
    );
  }
  assert.equal(parseDuration(" 1m "), 60_000);
});

Deno.test("parseDuration() refuses a duration too large to be a number", () => {
  assert.throws(() => parseDuration(`${"9".repeat(400)}w`), {
    name: "DurationError",
    message: /is too large/,
  });
});

Deno.test("formatDuration() writes the largest units first", () => {
  assert.equal(formatDuration(0), "0s");
  assert.equal(formatDuration(1), "1ms");
  assert.equal(formatDuration(1_000), "1s");
  assert.equal(formatDuration(90_000), "1m30s");
  assert.equal(formatDuration(5_400_000), "1h30m");
  assert.equal(formatDuration(86_400_000), "1d");
  assert.equal(formatDuration(604_800_000 + 86_400_000 + 1), "1w1d1ms");
});

Deno.test("formatDuration() refuses negative, fractional and non-finite milliseconds", () => {
  for (const ms of [-1, -60_000, 1.5, Number.NaN, Infinity, -Infinity]) {
    assert.throws(() => formatDuration(ms), RangeError, String(ms));
  }
});

Deno.test("parseDuration() reads back what formatDuration() writes", () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (ms) => {
      assert.equal(parseDuration(formatDuration(ms)), ms);
    }),
  );
});

Deno.test("parseDuration() sums the parts of any well-formed duration", () => {
  const units = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 };
  const part = fc.tuple(
    fc.integer({ min: 0, max: 1000 }),
    fc.constantFrom(...Object.keys(units) as Array<keyof typeof units>),
  );
  const eachUnitOnce = { selector: ([, unit]: [number, string]) => unit };
  fc.assert(
    fc.property(fc.uniqueArray(part, { minLength: 1, maxLength: 6, ...eachUnitOnce }), (parts) => {
      const text = parts.map(([count, unit]) => `${count}${unit}`).join("");
      const expected = parts.reduce((total, [count, unit]) => total + count * units[unit], 0);
      assert.equal(parseDuration(text), expected);
    }),
  );
});

Deno.test("describeDuration() says a duration in the largest unit holding it whole, as the README does, else as a setting is written", () => {
  assert.equal(describeDuration(15_000), "15 s");
  assert.equal(describeDuration(3_000), "3 s");
  assert.equal(describeDuration(60_000), "1 min");
  assert.equal(describeDuration(2 * 3_600_000), "2 h");
  assert.equal(describeDuration(86_400_000), "1 day");
  assert.equal(describeDuration(5 * 86_400_000), "5 days");
  assert.equal(describeDuration(50), "50 ms");
  assert.equal(describeDuration(90_000), "90 s");
  assert.equal(describeDuration(1_500), "1s500ms");
  assert.throws(() => describeDuration(-1), RangeError);
});
