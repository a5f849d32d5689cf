import assert from "node:assert/strict";
import { createApp, servedRoutes } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { MemoryStore } from "../../src/store/mod.ts";
import { MemoryKeyStore } from "../../src/store/memory/key_store.ts";
import { KEYS, TEST_CONFIG, testApp } from "../_fixtures.ts";
import { rawStatus, startServer } from "../_live.ts";
import { ADMIN_KEY, setup } from "../fanout/webhooks/_setup.ts";
import fc from "fast-check";
import { deflateRawSync } from "node:zlib";
import { type ApiError, apiErrorOf } from "../../src/http/errors.ts";
import {
  BodyError,
  bodyFormat,
  decodeUtf8,
  DEFAULT_LIMITS,
  isEnvelopeBody,
  parseEvents,
  readLimitedBody,
  utf8Length,
} from "../../src/http/body.ts";

/** Asserts a BodyError that the error table answers with this status and code. */
function assertBodyError(error: unknown, status: number, code: string): ApiError {
  assert.ok(error instanceof BodyError, `expected a BodyError, got ${error}`);
  const api = apiErrorOf(error);
  assert.ok(api);
  assert.equal(api.status, status);
  assert.equal(api.code, code);
  return api;
}

/** Asserts `fn` throws a BodyError answered with this status and code; returns the API error. */
function assertApiError(fn: () => unknown, status: number, code: string): ApiError {
  let caught: unknown;
  try {
    fn();
  } catch (error) {
    caught = error;
  }
  return assertBodyError(caught, status, code);
}

async function assertRejectsApiError(promise: Promise<unknown>, status: number, code: string) {
  await assert.rejects(promise, (error: unknown) => {
    assertBodyError(error, status, code);
    return true;
  });
}

Deno.test("bodyFormat() maps JSON and NDJSON media types, ignoring case and parameters", () => {
  assert.equal(bodyFormat("application/json"), "json");
  assert.equal(bodyFormat("application/json; charset=utf-8"), "json");
  assert.equal(bodyFormat("Application/JSON ;charset=UTF-8"), "json");
  assert.equal(bodyFormat("application/x-ndjson"), "ndjson");
  assert.equal(bodyFormat("application/ndjson; charset=utf-8"), "ndjson");
});

Deno.test("bodyFormat() refuses a charset other than UTF-8, which would be misread", () => {
  assert.equal(bodyFormat('application/json; charset="UTF-8"'), "json");
  assert.equal(bodyFormat("application/x-ndjson; foo=bar; charset=utf8"), "ndjson");
  for (const charset of ["utf-16", "iso-8859-1", ""]) {
    assert.throws(
      () => bodyFormat(`application/json; charset=${charset}`),
      (error) =>
        error instanceof BodyError && error.code === "unsupported_media_type" &&
        error.message ===
          `Bodies are read as UTF-8: Content-Type charset must be utf-8, got '${charset}'`,
      charset,
    );
  }
});

Deno.test("bodyFormat() refuses other or missing media types with 415", () => {
  const cases: Array<[string | undefined, string]> = [
    [undefined, "(none)"],
    ["", "(none)"],
    ["text/plain", "text/plain"],
    ["application/json-patch+json", "application/json-patch+json"],
    ["application/jsonx", "application/jsonx"],
    ["multipart/form-data; boundary=x", "multipart/form-data"],
  ];
  for (const [header, shown] of cases) {
    const error = assertApiError(() => bodyFormat(header), 415, "unsupported_media_type");
    assert.equal(
      error.message,
      `Content-Type must be application/json, application/x-ndjson or application/ndjson, got '${shown}'`,
    );
  }
});

Deno.test("parseEvents() reads one JSON object as one event", () => {
  assert.deepEqual(parseEvents('{"a": 1}', "json"), [{ ok: true, value: { a: 1 } }]);
});

Deno.test("parseEvents() reads a JSON array as one item per element", () => {
  assert.deepEqual(parseEvents('[{"a": 1}, 2, null]', "json"), [
    { ok: true, value: { a: 1 } },
    { ok: true, value: 2 },
    { ok: true, value: null },
  ]);
});

Deno.test("parseEvents() refuses an empty or blank body", () => {
  for (const format of ["json", "ndjson"] as const) {
    for (const text of ["", "   ", "\n\r\n\t"]) {
      assertApiError(() => parseEvents(text, format), 400, "empty_body");
    }
  }
});

Deno.test("parseEvents() refuses an empty array", () => {
  assertApiError(() => parseEvents("[]", "json"), 400, "empty_batch");
  assertApiError(() => parseEvents(" [ ] ", "json"), 400, "empty_batch");
});

Deno.test("parseEvents() refuses a scalar or null body", () => {
  const cases: Array<[string, string]> = [
    ["null", "null"],
    ["5", "number"],
    ['"text"', "string"],
    ["true", "boolean"],
  ];
  for (const [text, type] of cases) {
    const error = assertApiError(() => parseEvents(text, "json"), 400, "invalid_body");
    assert.equal(
      error.message,
      `Body must be a JSON object or an array of objects, got ${type}`,
    );
  }
});

Deno.test("parseEvents() refuses a body that is not JSON", () => {
  const error = assertApiError(() => parseEvents('{"a": ', "json"), 400, "invalid_json");
  assert.match(error.message, /^Body is not valid JSON: /);
});

Deno.test("parseEvents() says NDJSON sent as JSON is read with Content-Type: application/x-ndjson", () => {
  const hint =
    " (one JSON event a line is NDJSON: send it with Content-Type: application/x-ndjson)";
  for (
    const [text, where] of [
      ['{"id":"n1"}\n{"id":"n2"}\n', "at line 2, column 1"],
      ['\n  {"id":"n1"}\r\n{"id":"n2"}', "at line 3, column 1"],
    ]
  ) {
    const error = assertApiError(() => parseEvents(text, "json"), 400, "invalid_json");
    assert.equal(
      error.message,
      `Body is not valid JSON: Unexpected non-whitespace character after JSON ${where}${hint}`,
    );
  }
  // JSON broken otherwise: its reason alone (a first line that is no object, or the only line).
  for (const text of ['{\n"a": 1,\n}', '{"a": 1} {"b": 2}', '[{"a": 1}]\n[{"b": 2}]']) {
    const error = assertApiError(() => parseEvents(text, "json"), 400, "invalid_json");
    assert.ok(!error.message.includes("NDJSON"), error.message);
  }
  // Sent as NDJSON, the same text is two events.
  assert.equal(parseEvents('{"id":"n1"}\n{"id":"n2"}\n', "ndjson").length, 2);
});

Deno.test("parseEvents() refuses more events than allowed with 413 too_many_events", () => {
  const many = JSON.stringify(Array.from({ length: 1001 }, (_, i) => ({ i })));
  const error = assertApiError(() => parseEvents(many, "json"), 413, "too_many_events");
  assert.equal(error.message, "Batch has 1001 events; at most 1000 are allowed per request");
  assert.deepEqual(error.details, { maxEvents: 1000 }, "what a client splits the batch by");
  const exactly = JSON.stringify(Array.from({ length: 1000 }, (_, i) => ({ i })));
  assert.equal(parseEvents(exactly, "json").length, 1000);
  const lines = Array.from({ length: 1001 }, (_, i) => JSON.stringify({ i })).join("\n");
  assertApiError(() => parseEvents(lines, "ndjson"), 413, "too_many_events");
  assertApiError(
    () => parseEvents("{}\n{}\n{}", "ndjson", { maxEvents: 2 }),
    413,
    "too_many_events",
  );
});

Deno.test("parseEvents() reads NDJSON, skipping blank lines and CRLF endings, each event naming its line", () => {
  assert.deepEqual(parseEvents('{"a":1}\r\n\n  {"a":2}  \n', "ndjson"), [
    { ok: true, value: { a: 1 }, line: 1 },
    { ok: true, value: { a: 2 }, line: 3 },
  ]);
});

Deno.test("parseEvents() fails only the bad NDJSON line", () => {
  const items = parseEvents('{"a":1}\n{"a":\n{"a":3}', "ndjson");
  assert.equal(items.length, 3);
  assert.deepEqual(items[0], { ok: true, value: { a: 1 }, line: 1 });
  assert.deepEqual(items[2], { ok: true, value: { a: 3 }, line: 3 });
  assert.equal(items[1].ok, false);
  if (!items[1].ok) {
    assert.equal(items[1].error.path, "");
    assert.match(items[1].error.message, /^Line 2 is not valid JSON: /);
  }
});

Deno.test("parseEvents() fails an event over 64 KiB and keeps the others", () => {
  const big = { pad: "x".repeat(DEFAULT_LIMITS.maxEventBytes) };
  const bigBytes = JSON.stringify(big).length;
  const json = parseEvents(JSON.stringify([{ a: 1 }, big, { a: 2 }]), "json");
  assert.deepEqual(json[0], { ok: true, value: { a: 1 } });
  assert.deepEqual(json[2], { ok: true, value: { a: 2 } });
  assert.deepEqual(json[1], {
    ok: false,
    error: { path: "", message: `Event is ${bigBytes} bytes; the limit is 65536 bytes` },
  });
  const ndjson = parseEvents(`{"a":1}\n${JSON.stringify(big)}`, "ndjson");
  assert.deepEqual(ndjson[0], { ok: true, value: { a: 1 }, line: 1 });
  assert.deepEqual(ndjson[1], { ...json[1], line: 2 });
  const single = parseEvents(JSON.stringify(big), "json");
  assert.equal(single.length, 1);
  assert.equal(single[0].ok, false);
});

Deno.test("parseEvents() accepts an event of exactly the byte limit", () => {
  const limit = DEFAULT_LIMITS.maxEventBytes;
  const exact = JSON.stringify({ pad: "x".repeat(limit - '{"pad":""}'.length) });
  assert.equal(exact.length, limit);
  assert.equal(parseEvents(exact, "json")[0].ok, true);
  assert.equal(parseEvents(`[${exact}]`, "json")[0].ok, true);
  assert.equal(parseEvents(exact, "ndjson")[0].ok, true);
});

Deno.test("parseEvents() sizes an event by its compact JSON, however it was sent", () => {
  // 12,000 escapes and 70,000 spaces: 12,000 letters of data, refused alone and accepted in an
  // array before.
  const escaped = `{"pad": "${"\\u0041".repeat(12_000)}"${" ".repeat(70_000)}}`;
  const spread = (text: string) => [text, `[${text}]`, ` [ ${text} , {"a": 1} ] `];
  for (const body of spread(escaped)) {
    const [item] = parseEvents(body, "json");
    assert.deepEqual(item, { ok: true, value: { pad: "A".repeat(12_000) } }, body.slice(0, 20));
  }
  assert.equal(parseEvents(escaped, "ndjson")[0].ok, true);
  // Over the limit as compact JSON: refused the same way in each, with the same size.
  const big = `{ "pad" : "${"A".repeat(DEFAULT_LIMITS.maxEventBytes)}" }`;
  for (const [body, format] of [...spread(big).map((text) => [text, "json"]), [big, "ndjson"]]) {
    const [item] = parseEvents(body, format as "json" | "ndjson");
    assert.deepEqual(item, {
      ok: false,
      error: { path: "", message: "Event is 65546 bytes; the limit is 65536 bytes" },
      ...(format === "ndjson" ? { line: 1 } : {}),
    });
  }
});

Deno.test("an event's compact JSON is at most 3 UTF-8 bytes per UTF-16 unit of any text it came as, 6 with exponents", () => {
  // What lets parseEvents skip measuring the events of a body under a third of the limit (a
  // sixth when it writes a number with an exponent).
  for (let digits = 1; digits <= 3; digits++) {
    for (let exponent = -30; exponent <= 30; exponent++) {
      for (const sign of ["", "+"]) {
        const text = `${"9".repeat(digits)}e${exponent >= 0 ? sign : ""}${exponent}`;
        const compact = utf8Length(JSON.stringify(JSON.parse(text)));
        assert.ok(compact <= 6 * text.length, `${text}: ${compact}`);
      }
    }
  }
  const escapeAll = (text: string) =>
    text.replace(/[^ -~]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  fc.assert(
    fc.property(fc.jsonValue({ stringUnit: "binary" }), (value) => {
      const compact = utf8Length(JSON.stringify(value));
      for (const text of [JSON.stringify(value), escapeAll(JSON.stringify(value))]) {
        assert.ok(compact <= 3 * text.length, text);
      }
    }),
  );
});

Deno.test("parseEvents() measures one event whose numbers grow as compact JSON (1e20: 21 bytes)", () => {
  // About 20,000 units, 88,000 bytes as compact JSON: accepted before, unmeasured.
  const text = `{"n":[${Array(4_000).fill("1e20").join(",")}]}`;
  assert.ok(text.length < DEFAULT_LIMITS.maxEventBytes / 3);
  // One event, alone or on an NDJSON line, is measured exactly (in a batch, see mayHoldLarge).
  assert.equal(parseEvents(text, "json")[0].ok, false);
  assert.equal(parseEvents(text, "ndjson")[0].ok, false);
});

Deno.test("parseEvents() measures events in UTF-8 bytes, not characters", () => {
  // 30000 × "€" is 30000 characters but 90000 bytes.
  const euros = JSON.stringify({ pad: "€".repeat(30_000) });
  for (const format of ["json", "ndjson"] as const) {
    const [item] = parseEvents(euros, format);
    assert.equal(item.ok, false, format);
    if (!item.ok) assert.match(item.error.message, /^Event is 90010 bytes;/);
  }
  const [inArray] = parseEvents(`[${euros}]`, "json");
  assert.equal(inArray.ok, false);
  const fits = parseEvents(JSON.stringify({ pad: "€".repeat(20_000) }), "ndjson");
  assert.equal(fits[0].ok, true);
  const small = parseEvents('{"a":"€"}', "json", { maxEventBytes: 10 });
  assert.equal(small[0].ok, false, "11 bytes over a 10-byte limit");
});

Deno.test("parseEvents() refuses one JSON event exactly when its UTF-8 text exceeds the limit, for any text and limit", () => {
  // Mostly 3-byte units, the most bytes per UTF-16 unit.
  const unit = fc.constantFrom("€", "€", "€", "€", "€", "a", "é", "😀");
  fc.assert(
    fc.property(
      fc.string({ unit, maxLength: 80, size: "max" }),
      fc.integer({ min: -12, max: 12 }),
      (pad, offset) => {
        const text = JSON.stringify({ pad });
        const bytes = new TextEncoder().encode(text).length;
        // Limits around the event's size.
        const limit = Math.max(1, bytes + offset);
        const [item] = parseEvents(text, "json", { maxEventBytes: limit });
        assert.equal(item.ok, bytes <= limit);
      },
    ),
  );
});

Deno.test("utf8Length() counts the bytes of 1-, 2-, 3- and 4-byte characters", () => {
  assert.equal(utf8Length(""), 0);
  assert.equal(utf8Length("a"), 1);
  assert.equal(utf8Length("é"), 2);
  assert.equal(utf8Length("€"), 3);
  assert.equal(utf8Length("😀"), 4);
  assert.equal(utf8Length("a€😀é"), 10);
});

Deno.test("utf8Length() equals the length of TextEncoder's output for any string", () => {
  const encoder = new TextEncoder();
  const anyCodeUnit = fc.integer({ min: 0, max: 0xffff }).map((code) => String.fromCharCode(code));
  const strings = fc.oneof(
    fc.string({ unit: "binary" }),
    fc.string({ unit: anyCodeUnit }),
    fc.string({ unit: fc.constantFrom("a", "é", "€", "😀", "\ud800", "\udc00") }),
  );
  fc.assert(
    fc.property(strings, (text) => {
      assert.equal(utf8Length(text), encoder.encode(text).length);
    }),
    { numRuns: 300 },
  );
});

Deno.test("decodeUtf8() decodes valid UTF-8 and drops a byte order mark", () => {
  assert.equal(decodeUtf8(new TextEncoder().encode('{"a":"€😀"}')), '{"a":"€😀"}');
  assert.equal(decodeUtf8(new Uint8Array([0xef, 0xbb, 0xbf, 0x7b, 0x7d])), "{}");
  assert.equal(decodeUtf8(new Uint8Array()), "");
  // U+FFFD sent as such is valid text, not a decoding error.
  assert.equal(decodeUtf8(new TextEncoder().encode('{"a":"\uFFFD"}')), '{"a":"\uFFFD"}');
});

Deno.test("decodeUtf8() accepts exactly what a strict decoder accepts", () => {
  const strict = new TextDecoder("utf-8", { fatal: true });
  fc.assert(
    fc.property(
      fc.oneof(
        fc.uint8Array({ maxLength: 12 }),
        fc.string({ unit: "binary" }).map((text) => new TextEncoder().encode(text)),
        fc.tuple(fc.string({ unit: "binary" }), fc.uint8Array({ maxLength: 3 })).map(
          ([text, tail]) => new Uint8Array([...new TextEncoder().encode(text), ...tail]),
        ),
      ),
      (bytes) => {
        let expected: string | undefined;
        try {
          expected = strict.decode(bytes);
        } catch {
          expected = undefined;
        }
        if (expected === undefined) {
          assertApiError(() => decodeUtf8(bytes), 400, "invalid_utf8");
        } else assert.equal(decodeUtf8(bytes), expected);
      },
    ),
    { numRuns: 2_000 },
  );
});

Deno.test("decodeUtf8() refuses invalid bytes with 400 invalid_utf8", () => {
  const invalid = [
    [0xff],
    [0x7b, 0xc3],
    [0xc0, 0xaf],
    [0xed, 0xa0, 0x80],
    [0x22, 0xe2, 0x82, 0x22],
  ];
  for (const bytes of invalid) {
    const error = assertApiError(() => decodeUtf8(new Uint8Array(bytes)), 400, "invalid_utf8");
    assert.equal(error.message, "Body is not valid UTF-8");
  }
  // The shared decoder is not left in a broken state.
  assert.equal(decodeUtf8(new TextEncoder().encode("ok")), "ok");
});

Deno.test("readLimitedBody() returns the whole body within the limit", async () => {
  const body = new TextEncoder().encode('{"a":"€"}');
  const bytes = await readLimitedBody(
    new Request("http://test/", { method: "POST", body }),
    body.length,
  );
  assert.deepEqual(bytes, body);
  const empty = await readLimitedBody(new Request("http://test/"), 10);
  assert.equal(empty.length, 0);
});

Deno.test("readLimitedBody() reads a body with a Content-Length without making it a stream", async () => {
  // `request.body` makes a ReadableStream of a body the runtime holds whole (a cost per request);
  // `bytes()` hands it over as it is.
  const body = new TextEncoder().encode('{"a":1}');
  const request = new Request("http://test/", {
    method: "POST",
    body,
    headers: { "Content-Length": String(body.length) },
  });
  Object.defineProperty(request, "body", {
    get() {
      throw new Error("request.body was read");
    },
  });
  assert.deepEqual(await readLimitedBody(request, 100), body);
  // A request without a body but with a Content-Length reads as empty, as before.
  const bodiless = new Request("http://test/", { headers: { "Content-Length": "0" } });
  assert.equal((await readLimitedBody(bodiless, 100)).length, 0);
});

Deno.test("readLimitedBody() joins a body that arrives in chunks", async () => {
  const chunks = ["[", '{"a":1}', ",", '{"a":2}', "]"].map((text) =>
    new TextEncoder().encode(text)
  );
  const stream = ReadableStream.from(chunks);
  const bytes = await readLimitedBody(
    new Request("http://test/", { method: "POST", body: stream }),
    100,
  );
  assert.equal(new TextDecoder().decode(bytes), '[{"a":1},{"a":2}]');
});

Deno.test("readLimitedBody() refuses a declared Content-Length over the limit before reading", async () => {
  let pulled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulled = true;
      controller.enqueue(new Uint8Array(1));
      controller.close();
    },
  }, { highWaterMark: 0 });
  const request = new Request("http://test/", {
    method: "POST",
    body,
    headers: { "Content-Length": "1048577" },
  });
  await assertRejectsApiError(readLimitedBody(request, 1_048_576), 413, "payload_too_large");
  assert.equal(pulled, false);
});

Deno.test("readLimitedBody() stops reading a streamed body once it passes the limit", async () => {
  let chunksPulled = 0;
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      chunksPulled += 1;
      controller.enqueue(new Uint8Array(1024));
    },
    cancel() {
      cancelled = true;
    },
  });
  const request = new Request("http://test/", { method: "POST", body });
  assert.equal(request.headers.get("Content-Length"), null);
  await assert.rejects(readLimitedBody(request, 4096), (error: unknown) => {
    const api = assertBodyError(error, 413, "payload_too_large");
    assert.equal(api.message, "Body exceeds the 4096-byte limit");
    return true;
  });
  assert.ok(chunksPulled <= 8, `read ${chunksPulled} chunks of an endless body`);
  assert.equal(cancelled, true);
});

Deno.test("readLimitedBody() accepts a body of exactly the limit", async () => {
  const body = ReadableStream.from([new Uint8Array(3), new Uint8Array(3)]);
  const bytes = await readLimitedBody(new Request("http://test/", { method: "POST", body }), 6);
  assert.equal(bytes.length, 6);
});

Deno.test("parseEvents() names the body's own line number for a bad NDJSON line after blank lines", () => {
  const items = parseEvents('{"a":1}\n\n\n{oops\n', "ndjson");
  assert.equal(items.length, 2);
  assert.equal(items[1].ok, false);
  if (!items[1].ok) assert.match(items[1].error.message, /^Line 4 is not valid JSON/);
  assert.deepEqual(items.map((item) => item.line), [1, 4]);
});

Deno.test("readLimitedBody() cancels a body that trickles past the timeout with 408 body_timeout", async () => {
  let cancelled = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let sent = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      // One byte every 30 ms for 3 s: without a timeout the read would succeed.
      return new Promise((resolve) => {
        timer = setTimeout(() => {
          if (++sent > 100) controller.close();
          else controller.enqueue(new Uint8Array([0x20]));
          resolve();
        }, 30);
      });
    },
    cancel() {
      cancelled = true;
      clearTimeout(timer);
    },
  });
  const request = new Request("http://test/", { method: "POST", body });
  await assert.rejects(readLimitedBody(request, 1_048_576, { timeoutMs: 150 }), (error) => {
    const api = assertBodyError(error, 408, "body_timeout");
    assert.match(api.message, /^Body did not arrive within 150 ms \(received \d+ bytes\)$/);
    return true;
  });
  assert.equal(cancelled, true);
});

Deno.test("readLimitedBody() answers a body with a Content-Length that stalls with 408 body_timeout", async () => {
  let pulled = false;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      // Two of the ten declared bytes, then nothing.
      if (!pulled) controller.enqueue(new Uint8Array([0x5b, 0x5d]));
      pulled = true;
      return new Promise(() => {});
    },
  });
  const request = new Request("http://test/", {
    method: "POST",
    body,
    headers: { "Content-Length": "10" },
  });
  await assert.rejects(readLimitedBody(request, 1_048_576, { timeoutMs: 100 }), (error) => {
    const api = assertBodyError(error, 408, "body_timeout");
    assert.equal(api.message, "Body did not arrive within 100 ms (Content-Length 10)");
    return true;
  });
});

Deno.test("readLimitedBody() answers a body with a Content-Length cut off mid-way with 503 body_interrupted", async () => {
  let pulls = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (++pulls === 1) controller.enqueue(new Uint8Array([0x5b, 0x7b]));
      else controller.error(new Error("connection reset"));
    },
  });
  const request = new Request("http://test/", {
    method: "POST",
    body,
    headers: { "Content-Length": "10" },
  });
  await assert.rejects(readLimitedBody(request, 1_048_576), (error) => {
    const api = assertBodyError(error, 503, "body_interrupted");
    assert.equal(
      api.message,
      "Body was cut off before its 10 declared bytes arrived: connection reset; nothing was applied, send it again",
    );
    return true;
  });
});

Deno.test("readLimitedBody() refuses a body longer than the limit even when its Content-Length says less", async () => {
  // A runtime holds a request to its Content-Length; a Request made in process is not held.
  const request = new Request("http://test/", {
    method: "POST",
    body: "[" + "1,".repeat(20) + "1]",
    headers: { "Content-Length": "2" },
  });
  await assert.rejects(readLimitedBody(request, 16), (error) => {
    assertBodyError(error, 413, "payload_too_large");
    return true;
  });
});

Deno.test("readLimitedBody() answers a body cut off mid-way (connection broken, server shutting down) with 503 body_interrupted", async () => {
  let pulls = 0;
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (++pulls === 1) controller.enqueue(new Uint8Array([0x5b, 0x7b]));
      else controller.error(new Error("Cannot read body as underlying resource unavailable"));
    },
  });
  const request = new Request("http://test/", { method: "POST", body });
  await assert.rejects(readLimitedBody(request, 1_048_576), (error) => {
    const api = assertBodyError(error, 503, "body_interrupted");
    assert.equal(
      api.message,
      "Body was cut off after 2 bytes: Cannot read body as underlying resource unavailable; nothing was applied, send it again",
    );
    assert.deepEqual(api.headers, { "Retry-After": "1" });
    return true;
  });
});

/** What a server at `port` answers a request whose `head` (and body start) is sent, then no more. */
async function stalledReply(port: number, head: string[]): Promise<string> {
  const connection = await Deno.connect({ hostname: "127.0.0.1", port });
  // Without a body timeout the server would wait forever: give up after 5 s.
  const giveUp = setTimeout(() => connection.close(), 5_000);
  try {
    await connection.write(new TextEncoder().encode(head.join("\r\n")));
    let reply = "";
    const buffer = new Uint8Array(4096);
    while (!reply.includes("}}")) {
      const read = await connection.read(buffer).catch(() => null);
      if (read === null) break;
      reply += new TextDecoder().decode(buffer.subarray(0, read));
    }
    return reply;
  } finally {
    clearTimeout(giveUp);
    try {
      connection.close();
    } catch {
      // Closed by the give-up timer.
    }
  }
}

Deno.test("a server answers a stalled request body on every route that takes it with 408 and connection: close, changing nothing", async () => {
  const store = new MemoryStore();
  const admin = "admin-key-0123456789";
  const app = createApp({
    streams: compileConfig(TEST_CONFIG),
    store,
    keys: await KeyRing.parse(`admin:${admin}`, { store: new MemoryKeyStore() }),
    limits: { bodyTimeoutMs: 200 },
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
  const json = [
    "Host: localhost",
    "Content-Type: application/json",
    `Authorization: Bearer ${admin}`,
  ];
  const declared = ["Content-Length: 100", "", '{"id": "a'];
  // Chunked: no length, so the whole body is read before the route, within the same bounds.
  const chunked = ["Transfer-Encoding: chunked", "", "4", '{"sc', ""];
  try {
    for (
      const [line, body] of [
        ["POST /v1/streams/orders/events", declared],
        ["POST /v1/streams/orders/events", chunked],
        ["POST /v1/keys", declared],
        ["POST /v1/keys", chunked],
        ["PUT /v1/streams/signups", chunked],
        ["POST /v1/admin/sweep", declared],
        ["POST /v1/admin/sweep", chunked],
      ]
    ) {
      const reply = await stalledReply(server.addr.port, [`${line} HTTP/1.1`, ...json, ...body]);
      const what = `${line}, ${body[0]}`;
      assert.match(reply, /^HTTP\/1\.1 408 /, what);
      assert.match(reply, /"code":"body_timeout"/, what);
      // The reply to a declared body it did not get says connection: close, to a chunked one not;
      // either connection is kept waiting for the rest (deploy/README.md "Slow clients": a proxy in
      // front times those out).
      if (body === declared) assert.match(reply, /\r\nconnection: close\r\n/i, what);
      else assert.doesNotMatch(reply, /\r\nconnection: close\r\n/i, what);
    }
    // No route takes the request: its 404 or 405 at once, the body never waited for.
    for (
      const [line, body, status] of [
        ["POST /nothing", chunked, "404"],
        ["POST /healthz", chunked, "405"],
        ["POST /healthz", declared, "405"],
      ] as const
    ) {
      const reply = await stalledReply(server.addr.port, [`${line} HTTP/1.1`, ...json, ...body]);
      assert.match(reply, new RegExp(`^HTTP/1\\.1 ${status} `), `${line}, ${body[0]}`);
    }
    assert.equal((await store.stats("orders", [])).accepted, 0);
    const listed = await app.request("/v1/keys", { headers: { Authorization: `Bearer ${admin}` } });
    assert.deepEqual((await listed.json()).keys, []);
    const streams = await app.request("/v1/streams/signups", {
      headers: { Authorization: `Bearer ${admin}` },
    });
    assert.equal(streams.status, 404);
    await streams.body?.cancel();
  } finally {
    // Bounded, so that a server still waiting for a body fails the test instead of hanging it.
    await Promise.race([server.shutdown(), new Promise((resolve) => setTimeout(resolve, 2_000))]);
  }
});

Deno.test("after a body's 408 the runtime waits for the rest on that connection: chunked, it then carries the next request", async () => {
  const app = createApp({
    streams: compileConfig(TEST_CONFIG),
    store: new MemoryStore(),
    keys: await KeyRing.parse(""),
    limits: { bodyTimeoutMs: 200 },
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
  const head = ["Host: localhost", "Content-Type: application/json"];
  const read = async (connection: Deno.Conn, until: string) => {
    let reply = "";
    const buffer = new Uint8Array(4096);
    while (!reply.includes(until)) {
      const count = await connection.read(buffer).catch(() => null);
      if (count === null) return reply + "<closed>";
      reply += new TextDecoder().decode(buffer.subarray(0, count));
    }
    return reply;
  };
  const send = (connection: Deno.Conn, lines: string[]) =>
    connection.write(new TextEncoder().encode(lines.join("\r\n")));
  try {
    for (const chunked of [true, false]) {
      const connection = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
      const giveUp = setTimeout(() => connection.close(), 5_000);
      try {
        const body = chunked ? ["Transfer-Encoding: chunked", "", "4", '{"sc', ""] : [
          "Content-Length: 10",
          "",
          '{"sc',
        ];
        await send(connection, ["POST /v1/admin/sweep HTTP/1.1", ...head, ...body]);
        assert.match(await read(connection, "}}"), /^HTTP\/1\.1 408 /);
        // The rest of the body, then another request on the same connection.
        await send(connection, [
          chunked ? "0\r\n" : '":1}  ',
          "GET /healthz HTTP/1.1",
          ...head,
          "",
          "",
        ]);
        const next = await read(connection, '"ok"}');
        if (chunked) assert.match(next, /^HTTP\/1\.1 200 /, next);
        else assert.match(next, /<closed>$/, next);
      } finally {
        clearTimeout(giveUp);
        try {
          connection.close();
        } catch {
          // Closed by the give-up timer.
        }
      }
    }
  } finally {
    await Promise.race([server.shutdown(), new Promise((resolve) => setTimeout(resolve, 2_000))]);
  }
});

/** `text` compressed as `format`. */
async function compressed(
  text: string,
  format: CompressionFormat,
): Promise<Uint8Array<ArrayBuffer>> {
  const stream = ReadableStream.from([new TextEncoder().encode(text)])
    .pipeThrough(new CompressionStream(format));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

/**
 * An app on a {@linkcode MemoryStore} and a `post` of a body to the `orders` stream's ingest with
 * the given Content-Encoding (and Content-Type, JSON unless given).
 */
async function encodedIngest(): Promise<{
  store: MemoryStore;
  post: (body: BodyInit, encoding: string, contentType?: string) => Promise<Response>;
}> {
  const store = new MemoryStore();
  const app = createApp({
    streams: compileConfig(TEST_CONFIG),
    store,
    keys: await KeyRing.parse(""),
  });
  const post = async (body: BodyInit, encoding: string, contentType = "application/json") =>
    await app.request("/v1/streams/orders/events", {
      method: "POST",
      headers: { "Content-Type": contentType, "Content-Encoding": encoding },
      body,
    });
  return { store, post };
}

Deno.test("Ingest takes a gzip or deflate body within the limits, and refuses other encodings and bad ones", async () => {
  const { store, post } = await encodedIngest();
  const events = JSON.stringify([{ id: "1", country: "DE", amount: 5 }, {
    id: "2",
    country: "FR",
    amount: 7,
  }]);
  for (const format of ["gzip", "deflate"] as const) {
    const res = await post(await compressed(events, format), format.toUpperCase());
    const reply = await res.json();
    assert.equal(res.status, 202, format);
    assert.equal(reply.accepted, 2, format);
  }
  const cases: Array<[BodyInit, string, number, string, RegExp]> = [
    [events, "br", 415, "unsupported_media_type", /Content-Encoding 'br' is not supported/],
    // Labelled gzip, sent as it is: not what the label says.
    [events, "gzip", 400, "invalid_body", /Body is not valid gzip/],
    // 2 MiB of spaces in 2 KiB: refused at the limit, not decompressed whole.
    [
      await compressed(`[${" ".repeat(2 * 1024 * 1024)}{}]`, "gzip"),
      "gzip",
      413,
      "payload_too_large",
      /once decompressed/,
    ],
  ];
  for (const [body, encoding, status, code, message] of cases) {
    const res = await post(body, encoding);
    const reply = await res.json();
    assert.equal(res.status, status, encoding);
    assert.equal(reply.error.code, code, encoding);
    assert.match(reply.error.message, message, encoding);
  }
  assert.equal((await store.stats("orders", [])).accepted, 4);
});

Deno.test("Ingest reads a gzip body of several members, as `cat a.gz b.gz` makes, in order", async () => {
  const { store, post: postAs } = await encodedIngest();
  const post = (body: BodyInit) => postAs(body, "gzip", "application/x-ndjson");
  const first = await compressed('{"id":"1","country":"DE","amount":5}\n', "gzip");
  const second = await compressed('{"id":"2","country":"FR","amount":7}\n', "gzip");
  const res = await post(new Uint8Array([...first, ...second]));
  assert.equal(res.status, 202, await res.clone().text());
  assert.equal((await res.json()).accepted, 2);
  // A member cut short, or followed by what is not one, is still refused, and changes nothing.
  for (const body of [first.subarray(0, -3), new Uint8Array([...first, 1, 2, 3, 4])]) {
    const bad = await post(body);
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.code, "invalid_body");
  }
  assert.equal((await store.stats("orders", [])).accepted, 2);
});

Deno.test("Ingest takes a deflate body sent without its zlib wrapper (raw deflate, as some clients send), within the same limit", async () => {
  const { store, post: postAs } = await encodedIngest();
  const post = (body: BodyInit) => postAs(body, "deflate");
  const res = await post(await compressed('{"id":"1","country":"DE","amount":5}', "deflate-raw"));
  assert.equal(res.status, 202, await res.clone().text());
  assert.equal((await res.json()).accepted, 1);
  const cases: Array<[BodyInit, number, string, RegExp]> = [
    [
      await compressed(`[${" ".repeat(2 * 1024 * 1024)}{}]`, "deflate-raw"),
      413,
      "payload_too_large",
      /once decompressed/,
    ],
    // Neither zlib nor raw deflate, nor raw deflate cut short.
    ['{"id":"2","country":"DE","amount":5}', 400, "invalid_body", /Body is not valid deflate/],
    [
      (await compressed('{"id":"3","country":"DE","amount":5}', "deflate-raw")).subarray(0, 5),
      400,
      "invalid_body",
      /Body is not valid deflate/,
    ],
  ];
  for (const [body, status, code, message] of cases) {
    const reply = await post(body);
    const json = await reply.json();
    assert.equal(reply.status, status, JSON.stringify(json));
    assert.equal(json.error.code, code);
    assert.match(json.error.message, message);
  }
  assert.equal((await store.stats("orders", [])).accepted, 1);
});

Deno.test("a deflate body is zlib when zlib's header check passes, else raw: plain JSON sent as deflate is 400 invalid_body, and what raw deflate inflates to is read as any body", async () => {
  const { store, post: postAs } = await encodedIngest();
  const post = (body: BodyInit) => postAs(body, "deflate");
  const refusals: Array<[BodyInit, string, RegExp]> = [
    // Plain JSON labelled deflate: no zlib header, and not raw deflate either.
    ['[{"id":"5","country":"DE","amount":5}]', "invalid_body", /Body is not valid deflate/],
    ['{"id":"6","country":"DE","amount":5}\n', "invalid_body", /Body is not valid deflate/],
    ["{}", "invalid_body", /Body is not valid deflate/],
    // Raw deflate carries no check: bytes it inflates to that are not UTF-8, or not JSON, are
    // refused as a body sent as they are would be.
    [deflateRawSync(new Uint8Array([0xff, 0xfe, 0x7b])), "invalid_utf8", /UTF-8/],
    [deflateRawSync(new TextEncoder().encode("garbage {")), "invalid_json", /JSON/],
  ];
  for (const [body, code, message] of refusals) {
    const reply = await post(body);
    const json = await reply.json();
    assert.equal(reply.status, 400, JSON.stringify(json));
    assert.equal(json.error.code, code, JSON.stringify(json));
    assert.match(json.error.message, message);
  }
  assert.equal((await store.stats("orders", [])).accepted, 0);
});

Deno.test("readLimitedBody() takes a decompressed body of exactly the limit, and refuses one byte more", async () => {
  for (const format of ["gzip", "deflate"] as const) {
    const read = async (size: number) =>
      readLimitedBody(
        new Request("http://x/", {
          method: "POST",
          headers: { "Content-Encoding": format },
          body: await compressed(" ".repeat(size), format),
        }),
        1000,
      );
    assert.equal((await read(1000)).byteLength, 1000, format);
    await assertRejectsApiError(read(1001), 413, "payload_too_large");
  }
});

Deno.test("readLimitedBody() stops a gzip body of zeros at the limit without inflating all of it", async () => {
  // 300 MiB of zeros in about 300 KB.
  const bomb = await compressed(" ".repeat(300 * 1024 * 1024), "gzip");
  const before = Deno.memoryUsage().rss;
  await assertRejectsApiError(
    readLimitedBody(
      new Request("http://x/", {
        method: "POST",
        headers: { "Content-Encoding": "gzip" },
        body: bomb,
      }),
      1024 * 1024,
    ),
    413,
    "payload_too_large",
  );
  // Inflated whole at once it took 300 MiB (and seconds); stopped at the limit, about the limit.
  const grown = Deno.memoryUsage().rss - before;
  assert.ok(grown < 64 * 1024 * 1024, `${Math.round(grown / 2 ** 20)} MiB more memory`);
});

Deno.test("parseEvents() leaves the events of a batch under 21,845 characters unmeasured, as the README says, and measures a longer batch's", () => {
  // 4,000 × 1e20: about 20,000 characters, 88,000 bytes as compact JSON.
  const event = `{"n":[${Array(4_000).fill("1e20").join(",")}]}`;
  const short = `[${event}]`;
  assert.ok(short.length < 21_845, `${short.length}`);
  assert.ok(utf8Length(JSON.stringify(JSON.parse(event))) > DEFAULT_LIMITS.maxEventBytes);
  assert.equal(parseEvents(short, "json")[0].ok, true, "a short batch is not measured");
  const long = `[${event},{"pad":"${"p".repeat(21_846 - short.length)}"}]`;
  assert.ok(long.length > 21_846, `${long.length}`);
  assert.deepEqual(parseEvents(long, "json").map((item) => item.ok), [false, true]);
});

Deno.test("a method a GET-only path does not take is 405 before its body's size is looked at, on every such path", async () => {
  const { app } = await testApp({ auth: true });
  const concrete = (pattern: string) =>
    pattern.replace(":stream", "orders").replace(":counter", "count_1m").replace(":id", "x");
  const getOnly = servedRoutes(app).filter((route) =>
    route.methods.every((method) => method === "GET" || method === "HEAD")
  ).map((route) => concrete(route.pattern.pathname));
  assert.ok(getOnly.includes("/healthz") && getOnly.includes("/readyz"), getOnly.join(" "));
  const large = new Uint8Array(DEFAULT_LIMITS.maxBodyBytes + 1);
  for (const path of getOnly) {
    for (const method of ["POST", "PUT", "DELETE"]) {
      const res = await app.request(path, {
        method,
        headers: {
          Authorization: `Bearer ${KEYS.admin}`,
          "Content-Type": "application/json",
          "Content-Length": String(large.length),
        },
        body: large,
      });
      const body = await res.json();
      assert.equal(res.status, 405, `${method} ${path}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, "method_not_allowed", `${method} ${path}`);
      assert.equal(res.headers.get("Allow"), "GET, HEAD", `${method} ${path}`);
    }
  }
  // A path no route serves: its 404, also before the size.
  const nowhere = await app.request("/nowhere", {
    method: "POST",
    headers: { "Content-Length": String(large.length) },
    body: large,
  });
  assert.equal(nowhere.status, 404);
});

Deno.test("a method a POST-only path does not take is 405, whatever body it carries, on every such path (the operations that take no body too)", async () => {
  // With webhooks, whose rotate-secret, test and retry take no body, as the sweep.
  const { app, close } = await setup({ auth: true });
  const concrete = (pattern: string) =>
    pattern.replace(":stream", "orders").replace(":id", "ep_x").replace(":deliveryId", "d_x");
  const postOnly = servedRoutes(app).filter((route) => route.methods.join() === "POST")
    .map((route) => concrete(route.pattern.pathname));
  for (
    const path of [
      "/v1/admin/sweep",
      "/v1/webhooks/ep_x/rotate-secret",
      "/v1/webhooks/ep_x/test",
      "/v1/deliveries/d_x/retry",
    ]
  ) {
    assert.ok(postOnly.includes(path), postOnly.join(" "));
  }
  const large = new Uint8Array(DEFAULT_LIMITS.maxBodyBytes + 1);
  const bodies: Array<[string, string, BodyInit]> = [
    ["text", "text/plain", "x"],
    ["not JSON", "application/json", "{"],
    ["other JSON", "application/json", "[1]"],
    ["over 1 MiB", "application/json", large],
  ];
  for (const path of postOnly) {
    for (const method of ["PUT", "PATCH", "DELETE"]) {
      for (const [what, type, body] of bodies) {
        const res = await app.request(path, {
          method,
          headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": type },
          body,
        });
        const answer = await res.json();
        const label = `${method} ${path} with ${what}: ${JSON.stringify(answer)}`;
        assert.equal(res.status, 405, label);
        assert.equal(answer.error.code, "method_not_allowed", label);
        assert.equal(res.headers.get("Allow"), "POST", label);
      }
    }
    // OPTIONS asks what the path takes: its 204, whatever body it carries.
    for (const [what, type, body] of bodies) {
      const res = await app.request(path, {
        method: "OPTIONS",
        headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": type },
        body,
      });
      const label = `OPTIONS ${path} with ${what}: ${await res.text()}`;
      assert.equal(res.status, 204, label);
      assert.equal(res.headers.get("Allow"), "POST", label);
    }
  }
  await close();
});

Deno.test("POST /healthz announcing a body over 1 MiB is answered 405 over a real server before the body is sent", async () => {
  const server = await startServer();
  try {
    const status = await rawStatus(
      server.base,
      "POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n" +
        `Content-Length: ${DEFAULT_LIMITS.maxBodyBytes * 2}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(status, "HTTP/1.1 405 Method Not Allowed");
  } finally {
    await server.close();
  }
});

Deno.test("a GET or HEAD with a body over 1 MiB is answered as without one (the runtime drops its body), not 413", async () => {
  const server = await startServer();
  try {
    const size = DEFAULT_LIMITS.maxBodyBytes + 1;
    for (const method of ["GET", "HEAD"]) {
      for (const path of ["/healthz", "/v1/streams", "/v1/streams/orders/counters/count_1m"]) {
        const status = await rawStatus(
          server.base,
          `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: ${size}\r\n` +
            `Connection: close\r\n\r\n${" ".repeat(size)}`,
        );
        assert.equal(status, "HTTP/1.1 200 OK", `${method} ${path}`);
      }
    }
  } finally {
    await server.close();
  }
});

Deno.test("a served POST /v1/keys with no body, with or without Content-Length: 0, reads it as {} (400 invalid_key), not 415", async () => {
  const server = await startServer({ auth: true });
  try {
    for (const headers of [{}, { "Content-Length": "0" }] as Record<string, string>[]) {
      const res = await fetch(`${server.base}/v1/keys`, {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.admin}`, ...headers },
      });
      const { error } = await res.json();
      assert.deepEqual([res.status, error.code], [400, "invalid_key"], JSON.stringify(headers));
    }
  } finally {
    await server.close();
  }
});

Deno.test("a served route reads zero bytes sent with Content-Encoding gzip or deflate as the empty body it is without one", async () => {
  const server = await startServer({ auth: true });
  try {
    const routes: Array<[string, string, string | undefined]> = [
      ["POST", "/v1/keys", "application/json"],
      ["POST", "/v1/keys", undefined],
      ["POST", "/v1/streams/orders/events", "application/json"],
      ["POST", "/v1/streams/orders/events", "application/x-ndjson"],
      ["PUT", "/v1/streams/fresh", "application/json"],
    ];
    for (const [method, path, type] of routes) {
      const answers = [];
      for (const encoding of [undefined, "gzip", "deflate"]) {
        const headers: Record<string, string> = { Authorization: `Bearer ${KEYS.admin}` };
        if (type) headers["Content-Type"] = type;
        if (encoding) headers["Content-Encoding"] = encoding;
        const res = await fetch(`${server.base}${path}`, {
          method,
          headers,
          body: new Uint8Array(),
        });
        const { error } = await res.json();
        answers.push([res.status, error.code]);
      }
      const label = `${method} ${path} ${type}`;
      assert.deepEqual(answers[1], answers[0], `${label}, gzip`);
      assert.deepEqual(answers[2], answers[0], `${label}, deflate`);
      assert.equal(answers[0][0], 400, label);
    }
  } finally {
    await server.close();
  }
});

Deno.test("parseEvents() says where a body or an NDJSON line stops being JSON, quoting none of its text", () => {
  // V8's message quotes about 10 characters either side: `..."-Api-Key":s3cr3t-val"...`.
  const secret = '{"url":"http://127.0.0.1:9/a","headers":{"X-Api-Key":s3cr3t-value-12345}}';
  const cases: [string, string][] = [
    [secret, "Unexpected character at line 1, column 54"],
    ['{"name":"Ada",\n "email": ada@example.org}', "Unexpected character at line 2, column 11"],
    ["personal", "Unexpected character at line 1, column 1"],
    // The engine's reason when it quotes nothing: what it expected.
    ['{"a":1', "Expected ',' or '}' after property value at line 1, column 7"],
    [
      '{"a":1} {"b":"private"}',
      "Unexpected non-whitespace character after JSON at line 1, column 9",
    ],
    ['{"a":tru', "Unexpected end at line 1, column 9"],
  ];
  for (const [text, where] of cases) {
    const error = assertApiError(() => parseEvents(text, "json"), 400, "invalid_json");
    assert.equal(error.message, `Body is not valid JSON: ${where}`, text);
  }
  const items = parseEvents(`{"a":1}\n  {"email": ada@example.org}\n`, "ndjson");
  assert.deepEqual(items[1], {
    ok: false,
    error: { path: "", message: "Line 2 is not valid JSON: Unexpected character at column 13" },
    line: 2,
  });
});

Deno.test("isEnvelopeBody() tells one object (or NDJSON line) shaped as the WebSocket envelope from other bodies", () => {
  const read = (text: string, format: "json" | "ndjson" = "json") =>
    isEnvelopeBody(text, parseEvents(text, format));
  assert.equal(read('{"events": [{"id": "a"}]}'), true);
  assert.equal(read(' {"seq": 1, "idempotencyKey": "k", "events": {"id": "a"}}'), true);
  assert.equal(read('{"events": [{"id": "a"}]}\n', "ndjson"), true);
  // An array holding one, another key, no `events`, two events: not the envelope's shape.
  assert.equal(read('[{"events": [{"id": "a"}]}]'), false);
  assert.equal(read('{"events": [], "name": "x"}'), false);
  assert.equal(read('{"id": "a"}'), false);
  assert.equal(read('{"events": []}\n{"events": []}\n', "ndjson"), false);
});
