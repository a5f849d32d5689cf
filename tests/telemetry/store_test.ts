/**
 * The instrumented store, in a child process with Deno's OpenTelemetry export
 * on: every call counted and timed by operation and result (`ok`,
 * `unavailable` for an unreachable Redis, `refused` for any other failure),
 * and a failed apply's span marked as an error.
 */
import assert from "node:assert/strict";
import { eventually, runWithOtel, startOtlpReceiver, valueWhere } from "./_otlp.ts";

Deno.test("InstrumentedStore counts and times calls by operation and result (ok, unavailable, refused)", async () => {
  const receiver = startOtlpReceiver();
  try {
    const output = await runWithOtel(receiver, "tests/telemetry/_store_calls.ts");
    assert.match(output, /unavailable: StoreUnavailableError: /);
    assert.match(output, /refused: Batch requests cover 5 events, but the batch has 2/);
    await eventually(() => {
      const calls = receiver.points("edgestream.store.calls");
      const durations = receiver.points("edgestream.store.duration");
      const expected = [
        ["ping", "ok"],
        ["stats", "ok"],
        ["applyBatch", "ok"],
        ["applyBatch", "refused"],
        ["ping", "unavailable"],
        ["applyBatch", "unavailable"],
      ];
      assert.equal(calls.length, expected.length, JSON.stringify(calls));
      for (const [operation, result] of expected) {
        assert.equal(valueWhere(calls, { operation, result })?.value, 1, `${operation} ${result}`);
        const duration = valueWhere(durations, { operation, result });
        assert.equal(duration?.count, 1, `${operation} ${result}: ${JSON.stringify(durations)}`);
        assert.ok(duration.sum! >= 0);
      }
      const applies = receiver.spans().filter((span) =>
        span.name === "edgestream.store.applyBatch"
      );
      assert.equal(applies.length, 3);
      const refused = applies.find((span) =>
        span.attributes["edgestream.stream"] === "s" &&
        span.status.code === 2
      );
      assert.ok(
        refused,
        "the refused apply's span is an error, named by the stream (no generation)",
      );
      assert.match(refused.status.message ?? "", /RangeError: Batch requests cover 5 events/);
      assert.equal(refused.attributes["edgestream.batch.events"], 2);
      const redis = applies.find((span) => span.attributes["edgestream.stream"] === "redis");
      assert.ok(redis);
      assert.match(redis.status.message ?? "", /StoreUnavailableError: Redis is unavailable/);
      const spans = receiver.spans();
      const fetchSpan = spans.find((span) => span.parentSpanId === redis.spanId);
      assert.ok(fetchSpan, `Deno's fetch span beneath the apply: ${JSON.stringify(spans)}`);
      assert.equal(fetchSpan.scope, "deno");
      assert.match(String(fetchSpan.attributes["url.full"]), /^http:\/\/127\.0\.0\.1:1\//);
    });
  } finally {
    await receiver.close();
  }
});
