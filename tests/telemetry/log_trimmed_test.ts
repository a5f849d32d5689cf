/**
 * `edgestream.log.trimmed` (README metrics table): results a stream's result log trimmed at its
 * hard bound before webhook dispatch took them, counted per stream, in a child process with
 * Deno's OpenTelemetry export on. (`tests/fanout/webhooks/log_bounds_test.ts` checks that the
 * dispatcher reports what the stores trimmed, with its warning.)
 */
import assert from "node:assert/strict";
import { eventually, runWithOtel, startOtlpReceiver, valueWhere } from "./_otlp.ts";

Deno.test("edgestream.log.trimmed counts the results each stream's log lost before dispatch", async () => {
  const receiver = startOtlpReceiver();
  try {
    await runWithOtel(receiver, "tests/telemetry/_log_trimmed.ts");
    await eventually(() => {
      const points = receiver.points("edgestream.log.trimmed");
      assert.equal(valueWhere(points, { stream: "orders" })?.value, 5, JSON.stringify(points));
      assert.equal(valueWhere(points, { stream: "clicks" })?.value, 1, JSON.stringify(points));
      assert.equal(valueWhere(points, { stream: "quiet" }), undefined, JSON.stringify(points));
    });
  } finally {
    await receiver.close();
  }
});
