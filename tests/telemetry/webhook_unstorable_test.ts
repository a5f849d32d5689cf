/**
 * `edgestream.webhook.unstorable` (README metrics table): webhook deliveries dropped at dispatch as
 * larger than the store takes in one call, counted per stream, in a child process with Deno's
 * OpenTelemetry export on. (`tests/fanout/webhooks/dispatcher_test.ts` checks that the dispatcher
 * drops such a delivery, through a proxy that refuses large requests, with its error.)
 */
import assert from "node:assert/strict";
import { eventually, runWithOtel, startOtlpReceiver, valueWhere } from "./_otlp.ts";

Deno.test("edgestream.webhook.unstorable counts the deliveries each stream dropped as too large for the store", async () => {
  const receiver = startOtlpReceiver();
  try {
    await runWithOtel(receiver, "tests/telemetry/_webhook_unstorable.ts");
    await eventually(() => {
      const points = receiver.points("edgestream.webhook.unstorable");
      assert.equal(valueWhere(points, { stream: "orders" })?.value, 2, JSON.stringify(points));
      assert.equal(valueWhere(points, { stream: "clicks" })?.value, 1, JSON.stringify(points));
    });
  } finally {
    await receiver.close();
  }
});
