import assert from "node:assert/strict";
import fc from "fast-check";
import { parseInstant, parseInstantText, unreadIsoForm } from "../../src/validate/mod.ts";

Deno.test("parseInstant() reads ISO-8601 text with an offset", () => {
  const cases: Array<[string, string]> = [
    ["2026-01-01T10:15:00Z", "2026-01-01T10:15:00.000Z"],
    ["2026-01-01T10:15:00.123Z", "2026-01-01T10:15:00.123Z"],
    ["2026-01-01T10:15:00.123456789Z", "2026-01-01T10:15:00.123Z"],
    ["2026-01-01T10:15:00.5Z", "2026-01-01T10:15:00.500Z"],
    ["2026-01-01T11:15:00+01:00", "2026-01-01T10:15:00.000Z"],
    ["2026-01-01T11:15:00+0100", "2026-01-01T10:15:00.000Z"],
    ["2026-01-01T05:15-05:00", "2026-01-01T10:15:00.000Z"],
    ["2026-01-01 10:15:00Z", "2026-01-01T10:15:00.000Z"],
    ["2026-01-01t10:15:00z", "2026-01-01T10:15:00.000Z"],
    ["2026-01-02T00:15:00+14:00", "2026-01-01T10:15:00.000Z"],
  ];
  for (const [text, iso] of cases) assert.equal(parseInstant(text), Date.parse(iso), text);
});

Deno.test("parseInstant() reads a fraction of any length, as RFC 3339 and format date-time do", () => {
  // "2026-01-01T10:15:00.1234567891Z" (picoseconds) passes a schema's `format: date-time`; as event
  // time it was refused: the fraction was read up to 9 digits only.
  for (const digits of ["1234567891", "123456789012", "9".repeat(30)]) {
    assert.equal(
      parseInstant(`2026-01-01T10:15:00.${digits}Z`),
      Date.parse(`2026-01-01T10:15:00.${digits.slice(0, 3)}Z`),
      digits,
    );
  }
});

Deno.test("parseInstant() reads ISO-8601 text without an offset as UTC", () => {
  assert.equal(parseInstant("2026-01-01T10:15:00"), Date.parse("2026-01-01T10:15:00Z"));
  assert.equal(parseInstant("2026-01-01T10:15"), Date.parse("2026-01-01T10:15:00Z"));
  assert.equal(parseInstant("2026-01-01 10:15:00.25"), Date.parse("2026-01-01T10:15:00.250Z"));
  assert.equal(parseInstant("2026-01-01"), Date.parse("2026-01-01T00:00:00Z"));
});

Deno.test("parseInstant() reads numbers as epoch milliseconds, flooring fractions", () => {
  assert.equal(parseInstant(1_767_262_500_000), 1_767_262_500_000);
  assert.equal(parseInstant(1.9), 1);
  assert.equal(parseInstant(-1.5), -2);
  assert.equal(parseInstant(8.64e15), 8.64e15);
  assert.equal(parseInstant(-8.64e15), -8.64e15);
});

Deno.test("parseInstant() refuses impossible dates and times instead of rolling them over", () => {
  const bad = [
    "2026-02-30T10:00:00Z",
    "2026-04-31",
    "2025-02-29T00:00Z",
    "2026-13-01",
    "2026-00-10",
    "2026-01-00",
    "2026-01-01T24:00:00Z",
    "2026-01-01T10:60:00Z",
    "2026-01-01T10:15:60Z",
    "2026-01-01T10:15:00+24:00",
    "2026-01-01T10:15:00+01:60",
  ];
  for (const text of bad) assert.equal(parseInstant(text), null, text);
  assert.equal(parseInstant("2024-02-29T00:00:00Z"), Date.parse("2024-02-29T00:00:00Z"));
});

Deno.test("parseInstant() refuses other text, other types and instants outside the Date range", () => {
  const bad: unknown[] = [
    "yesterday",
    "01/02/2026",
    "2026-01-01T10:15:00 UTC",
    "2026-1-1",
    "1767262500000",
    "",
    " 2026-01-01",
    true,
    null,
    undefined,
    { ms: 1 },
    [1],
    8.64e15 + 1,
    -8.64e15 - 1,
    Infinity,
    Number.NaN,
    "+275760-09-13T00:00:00.001Z",
    "-271821-04-19T23:59:59.999Z",
    "+275760-09-13T00:00:00-00:01",
    // Expanded years have a sign and six digits; year zero is written +000000 only.
    "+2026-01-01",
    "002026-01-01",
    "+02026-01-01",
    "-000000-01-01T00:00:00Z",
    "+999999-01-01",
  ];
  for (const value of bad) assert.equal(parseInstant(value), null, String(value));
  assert.equal(parseInstant("0000-01-01T00:00:00Z"), Date.parse("0000-01-01T00:00:00Z"));
});

Deno.test("parseInstant() reads ISO-8601 expanded years (a sign and six digits) to the edges of the Date range", () => {
  const cases: Array<[string, number]> = [
    ["+275760-09-13T00:00:00Z", 8.64e15],
    ["-271821-04-20T00:00:00.000Z", -8.64e15],
    ["-271821-04-20", -8.64e15],
    // Past the edge as written, back inside once its offset is taken.
    ["-271821-04-19T23:00:00-01:00", -8.64e15],
    ["+275760-09-13T01:00:00+01:00", 8.64e15],
    ["+002026-01-01T10:15:00Z", Date.parse("2026-01-01T10:15:00Z")],
    ["+000000-01-01", Date.parse("0000-01-01T00:00:00Z")],
    ["-000001-12-31T23:59:59.999Z", Date.parse("0000-01-01T00:00:00Z") - 1],
    ["+010000-02-29", Date.parse("+010000-02-29T00:00:00Z")],
  ];
  for (const [text, ms] of cases) assert.equal(parseInstant(text), ms, text);
  // 10100 is not a leap year, as 2100 is not.
  assert.equal(parseInstant("+010100-02-29"), null);
});

Deno.test("parseInstant() reads back every toISOString() of the Date range, with and without Z", () => {
  fc.assert(
    fc.property(fc.integer({ min: -8.64e15, max: 8.64e15 }), (ms) => {
      const iso = new Date(ms).toISOString();
      assert.equal(parseInstant(iso), ms, iso);
      assert.equal(parseInstant(iso.slice(0, -1)), ms, iso);
    }),
    { numRuns: 2_000 },
  );
});

Deno.test("parseInstantText() reads digits as epoch milliseconds and other text as ISO-8601", () => {
  assert.equal(parseInstantText("1767262500000"), 1_767_262_500_000);
  assert.equal(parseInstantText("-5"), -5);
  assert.equal(parseInstantText("2026-01-01T10:15:00"), Date.parse("2026-01-01T10:15:00Z"));
  assert.equal(parseInstantText("8640000000000001"), null);
  assert.equal(parseInstantText("1.5"), null);
  assert.equal(parseInstantText("soon"), null);
});

Deno.test("parseInstant() reads back every toISOString() of the years 0000-9999, with and without Z", () => {
  fc.assert(
    fc.property(
      fc.integer({
        min: Date.parse("0000-01-01T00:00:00Z"),
        max: Date.parse("9999-12-31T23:59:59.999Z"),
      }),
      (ms) => {
        const iso = new Date(ms).toISOString();
        assert.equal(parseInstant(iso), ms, iso);
        assert.equal(parseInstant(iso.slice(0, -1)), ms, iso);
      },
    ),
  );
});

Deno.test("parseInstantText() rounds an instant between two milliseconds as asked: down by default (event time), up for a bound", () => {
  const at = Date.parse("2026-01-01T10:15:00.123Z");
  assert.equal(parseInstantText("2026-01-01T10:15:00.1230001Z"), at);
  assert.equal(parseInstantText("2026-01-01T10:15:00.1230001Z", "ceil"), at + 1);
  assert.equal(parseInstantText("2026-01-01T10:15:00.123999Z", "ceil"), at + 1);
  // Zeros past the millisecond are that millisecond, however rounded; so are three digits or none.
  assert.equal(parseInstantText("2026-01-01T10:15:00.123000000Z", "ceil"), at);
  assert.equal(parseInstantText("2026-01-01T10:15:00.123Z", "ceil"), at);
  assert.equal(parseInstantText("2026-01-01T10:15:00Z", "ceil"), at - 123);
  // Before 1970 and before year 0, up is still towards the later instant, not towards zero.
  const early = Date.parse("1969-12-31T23:59:59.999Z");
  assert.equal(parseInstantText("1969-12-31T23:59:59.9995Z", "ceil"), early + 1);
  assert.equal(parseInstantText("1969-12-31T23:59:59.9995Z"), early);
  const expanded = Date.parse("-000001-06-15T10:00:00.000Z");
  assert.equal(parseInstantText("-000001-06-15T10:00:00.0000001Z", "ceil"), expanded + 1);
  // Epoch milliseconds are whole: nothing to round.
  assert.equal(parseInstantText("-5", "ceil"), -5);
  // Rounded up past the end of the Date range, the instant is outside it.
  assert.equal(parseInstantText("+275760-09-13T00:00:00.000Z", "ceil"), 8.64e15);
  assert.equal(parseInstantText("+275760-09-13T00:00:00.0001Z"), 8.64e15);
  assert.equal(parseInstantText("+275760-09-13T00:00:00.0001Z", "ceil"), null);
});

Deno.test("parseInstant() reads a leap second (23:59:60 UTC, RFC 3339) as the last millisecond before it; a bound rounds up to the next minute", () => {
  const last = Date.parse("2016-12-31T23:59:59.999Z");
  for (
    const text of [
      "2016-12-31T23:59:60Z",
      "2016-12-31T23:59:60.5Z",
      "2016-12-31t23:59:60z",
      "2016-12-31T23:59:60",
      "2016-12-31 23:59:60",
      "2016-12-31T18:59:60-05:00",
      "2017-01-01T05:29:60.999+05:30",
      "2017-01-01T00:59:60+0100",
    ]
  ) {
    assert.equal(parseInstant(text), last, text);
    assert.equal(parseInstantText(text), last, text);
    assert.equal(parseInstantText(text, "ceil"), last + 1, text);
  }
  // Only the last second of a UTC day can be a leap second; 61 never is.
  for (
    const text of [
      "2016-12-31T23:58:60Z",
      "2016-12-31T22:59:60Z",
      "2016-12-31T23:59:60+01:00",
      "2016-12-31T23:59:61Z",
      "2016-12-31T10:15:60Z",
    ]
  ) {
    assert.equal(parseInstant(text), null, text);
    assert.equal(parseInstantText(text, "ceil"), null, text);
  }
});

Deno.test("unreadIsoForm() names ISO 8601's basic form and a comma fraction, which parseInstant() refuses, and nothing else", () => {
  for (
    const text of ["20261207T132021Z", "20261207T132021,5Z", "20261207", "+0020261207T13Z"]
  ) {
    assert.equal(parseInstant(text), null, text);
    assert.equal(unreadIsoForm(text), "the basic form, without '-' and ':', is not read", text);
  }
  for (const text of ["2026-12-07T13:20:21,5Z", "2026-12-07 13:20:21,25"]) {
    assert.equal(parseInstant(text), null, text);
    assert.equal(unreadIsoForm(text), "a fraction of a second follows '.', not ','", text);
  }
  for (
    // A fraction of a minute is read in neither form: "follows '.'" would be wrong advice.
    const text of [
      "yesterday",
      "2026-12-07T13:20:21.5Z",
      "1700000000000",
      "2026-12-07, 13:20",
      "",
      "2026-12-07T13:20,5Z",
    ]
  ) {
    assert.equal(unreadIsoForm(text), undefined, text);
  }
});
