/**
 * Ingest and apply spans, in a child process with Deno's OpenTelemetry
 * export on: an apply that serves the requests of two ingest spans is a
 * child of the span it runs in and links to the other request's span (the
 * shape group commit needs).
 */
import assert from "node:assert/strict";
import { eventually, runWithOtel, startOtlpReceiver } from "./_otlp.ts";

Deno.test("an apply serving requests of two ingest spans is a child of one and links to the other", async () => {
  const receiver = startOtlpReceiver();
  try {
    await runWithOtel(receiver, "tests/telemetry/_store_calls.ts");
    await eventually(() => {
      const spans = receiver.spans();
      const ingest = (transport: string) => {
        const found = spans.filter((span) =>
          span.name === "edgestream.ingest" && span.attributes["edgestream.stream"] === "s" &&
          span.attributes["edgestream.transport"] === transport
        );
        assert.equal(found.length, 1, `${transport}: ${JSON.stringify(spans)}`);
        return found[0];
      };
      const http = ingest("http");
      const ws = ingest("ws");
      assert.notEqual(http.traceId, ws.traceId, "two requests, two traces");
      const apply = spans.find((span) =>
        span.name === "edgestream.store.applyBatch" && span.parentSpanId === ws.spanId
      );
      assert.ok(apply, "the apply is a child of the span it runs in");
      assert.equal(apply.traceId, ws.traceId);
      assert.equal(apply.attributes["edgestream.batch.requests"], 2);
      assert.deepEqual(apply.links, [{ traceId: http.traceId, spanId: http.spanId }]);
    });
  } finally {
    await receiver.close();
  }
});
