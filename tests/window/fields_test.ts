import assert from "node:assert/strict";
import { eventTimeError, eventTimeMs, readField } from "../../src/window/mod.ts";

/** {@linkcode eventTimeMs} and {@linkcode eventTimeError} as one answer, as ingest uses them. */
function readEventTime(
  value: unknown,
  receivedMs: number,
): { ok: true; timeMs: number } | { ok: false; message: string } {
  const timeMs = eventTimeMs(value, receivedMs);
  return timeMs === null ? { ok: false, message: eventTimeError(value) } : { ok: true, timeMs };
}

const RECEIVED = Date.parse("2026-01-01T00:10:00Z");

Deno.test("readField() reads a key, then a dotted path", () => {
  const event = { a: 1, user: { country: "DE", tags: ["x"] }, "dotted.key": "own" };
  assert.equal(readField(event, "a"), 1);
  assert.equal(readField(event, "user.country"), "DE");
  assert.equal(readField(event, "user.tags.0"), "x");
  assert.equal(readField(event, "dotted.key"), "own");
  assert.deepEqual(readField(event, "user"), { country: "DE", tags: ["x"] });
});

Deno.test("readField() is undefined for absent fields and never reads inherited ones", () => {
  const event = { a: 1, user: { country: null } };
  assert.equal(readField(event, "missing"), undefined);
  assert.equal(readField(event, "a.b"), undefined);
  assert.equal(readField(event, "user.city"), undefined);
  assert.equal(readField(event, "user.country"), null);
  assert.equal(readField(event, "toString"), undefined);
  assert.equal(readField(event, "user.constructor"), undefined);
  assert.equal(readField(event, "a.toFixed"), undefined);
});

Deno.test("eventTimeMs() uses the receive time when the field is absent or null", () => {
  assert.deepEqual(readEventTime(undefined, RECEIVED), { ok: true, timeMs: RECEIVED });
  assert.deepEqual(readEventTime(null, RECEIVED), { ok: true, timeMs: RECEIVED });
});

Deno.test("eventTimeMs() reads epoch milliseconds, flooring fractions", () => {
  assert.deepEqual(readEventTime(1_700_000_000_000, RECEIVED), { ok: true, timeMs: 1.7e12 });
  assert.deepEqual(readEventTime(1.9, RECEIVED), { ok: true, timeMs: 1 });
  assert.deepEqual(readEventTime(-1.5, RECEIVED), { ok: true, timeMs: -2 });
  assert.deepEqual(readEventTime(8.64e15, RECEIVED), { ok: true, timeMs: 8.64e15 });
});

Deno.test("eventTimeMs() refuses numbers outside the Date range", () => {
  for (const value of [8.64e15 + 1, -8.64e15 - 1, Infinity, Number.NaN]) {
    const result = readEventTime(value, RECEIVED);
    assert.equal(result.ok, false, String(value));
    if (!result.ok) assert.match(result.message, /is not a valid epoch millisecond value$/);
  }
});

Deno.test("eventTimeMs() reads ISO-8601 text with an offset", () => {
  const cases: Array<[string, string]> = [
    ["2026-01-01T00:10:00Z", "2026-01-01T00:10:00.000Z"],
    ["2026-01-01T00:10:00.123Z", "2026-01-01T00:10:00.123Z"],
    ["2026-01-01T00:10:00.123456789Z", "2026-01-01T00:10:00.123Z"],
    ["2026-01-01T01:10:00+01:00", "2026-01-01T00:10:00.000Z"],
    ["2026-01-01T01:10:00+0100", "2026-01-01T00:10:00.000Z"],
    ["2025-12-31T19:10-05:00", "2026-01-01T00:10:00.000Z"],
    ["2026-01-01 00:10:00Z", "2026-01-01T00:10:00.000Z"],
    ["2026-01-01t00:10:00z", "2026-01-01T00:10:00.000Z"],
    ["2026-01-01", "2026-01-01T00:00:00.000Z"],
  ];
  for (const [text, iso] of cases) {
    assert.deepEqual(readEventTime(text, RECEIVED), { ok: true, timeMs: Date.parse(iso) }, text);
  }
});

Deno.test("eventTimeMs() reads ISO-8601 text without an offset as UTC", () => {
  assert.deepEqual(readEventTime("2026-01-01T00:10", RECEIVED), { ok: true, timeMs: RECEIVED });
  assert.deepEqual(readEventTime("2026-01-01 00:10:00.5", RECEIVED), {
    ok: true,
    timeMs: RECEIVED + 500,
  });
});

Deno.test("eventTimeMs() does not depend on the server's time zone", async () => {
  const module = new URL("../../src/window/fields.ts", import.meta.url).href;
  const script = `
    const { eventTimeMs } = await import(${JSON.stringify(module)});
    console.log(JSON.stringify(["2026-01-01T00:10", "2026-01-01 00:10:00", "2026-01-01"]
      .map((text) => eventTimeMs(text, 0))));`;
  for (const zone of ["America/New_York", "Asia/Kolkata"]) {
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--cached-only", script],
      env: { TZ: zone, NO_COLOR: "1" },
      stdout: "piped",
      stderr: "inherit",
    }).output();
    assert.equal(output.code, 0);
    const offset = await new Deno.Command(Deno.execPath(), {
      args: ["eval", "--cached-only", "console.log(new Date(2026, 0, 1).getTimezoneOffset())"],
      env: { TZ: zone, NO_COLOR: "1" },
      stdout: "piped",
    }).output();
    assert.notEqual(new TextDecoder().decode(offset.stdout).trim(), "0", `${zone} is not UTC`);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(output.stdout)), [
      RECEIVED,
      RECEIVED,
      Date.parse("2026-01-01T00:00:00Z"),
    ], zone);
  }
});

Deno.test("eventTimeMs() refuses text that is not ISO-8601 and other types", () => {
  const bad: unknown[] = [
    "yesterday",
    "01/02/2026",
    "2026-01-01T00:10:00 UTC",
    "1700000000000",
    "2026-13-01",
    "",
    true,
    { ms: 1 },
    [1],
  ];
  for (const value of bad) {
    const result = readEventTime(value, RECEIVED);
    assert.equal(result.ok, false, JSON.stringify(value));
    if (!result.ok) {
      assert.match(
        result.message,
        /^Event time must be ISO-8601 in its extended form \(2026-01-01T10:15:00\.5Z, 2026-01-01\) or epoch milliseconds, got /,
      );
    }
  }
  const long = readEventTime("x".repeat(1000), RECEIVED);
  assert.ok(!long.ok && long.message.length < 200, "the message quotes at most 64 characters");
});

Deno.test("eventTimeMs() refuses ISO 8601's basic form and a comma before a fraction, and the message says the extended form is read", () => {
  const basic = "the basic form, without '-' and ':', is not read";
  const comma = "a fraction of a second follows '.', not ','";
  const cases: Array<[string, string]> = [
    ["20261207T132021Z", basic],
    ["20261207T132021.5Z", basic],
    ["20261207T1320+0100", basic],
    ["20261207", basic],
    ["2026-12-07T13:20:21,5Z", comma],
    ["2026-12-07 13:20:21,500+01:00", comma],
  ];
  for (const [text, why] of cases) {
    const result = readEventTime(text, RECEIVED);
    assert.equal(result.ok, false, text);
    assert.equal(
      !result.ok && result.message,
      `Event time must be ISO-8601 in its extended form (2026-01-01T10:15:00.5Z, 2026-01-01) or epoch milliseconds, got ${
        JSON.stringify(text)
      }: ${why}`,
      text,
    );
  }
  // Their extended forms are read.
  assert.deepEqual(readEventTime("2026-12-07T13:20:21Z", RECEIVED), {
    ok: true,
    timeMs: Date.parse("2026-12-07T13:20:21Z"),
  });
  assert.deepEqual(readEventTime("2026-12-07T13:20:21.5Z", RECEIVED), {
    ok: true,
    timeMs: Date.parse("2026-12-07T13:20:21.500Z"),
  });
  // Other text gets no such clause.
  const other = readEventTime("yesterday", RECEIVED);
  assert.ok(!other.ok && other.message.endsWith('got "yesterday"'));
});

Deno.test("eventTimeMs() refuses calendar days that do not exist instead of rolling them over", () => {
  for (
    const text of [
      "2026-02-30T10:00:00Z",
      "2026-04-31",
      "2025-02-29T00:00Z",
      "2026-13-01",
      "2026-00-10",
    ]
  ) {
    assert.equal(readEventTime(text, 0).ok, false, text);
  }
  assert.deepEqual(readEventTime("2024-02-29T00:00:00Z", 0), {
    ok: true,
    timeMs: Date.parse("2024-02-29T00:00:00Z"),
  });
});

Deno.test("readField() does not mistake Object.prototype members for event fields", () => {
  const event = JSON.parse('{"a": {"b": 1}}');
  for (const path of ["toString", "constructor", "hasOwnProperty", "valueOf", "a.toString"]) {
    assert.equal(readField(event, path), undefined, path);
  }
  assert.equal(readField(event, "a.b"), 1);
});
