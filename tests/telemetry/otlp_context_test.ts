/**
 * What a caller's trace context reaches, with `OTEL_DENO=true`: a request's W3C `baggage` goes no
 * further than the process (not to webhook receivers, the store or anyone `fetch` calls), the
 * webhook sends an ingest starts run in traces of their own, and each WebSocket frame has its own
 * trace, linked to the upgrade request's span.
 */
import assert from "node:assert/strict";
import { eventually, otelEnv, startOtlpReceiver } from "./_otlp.ts";
import { startServerProcess } from "../_server_process.ts";

const CALLER_TRACE = "cccccccccccccccccccccccccccccccc";

Deno.test("a caller's baggage and trace reach no webhook receiver, and WebSocket frames get traces of their own", async () => {
  const receiver = startOtlpReceiver();
  const server = await startServerProcess("otlp-context", {
    ...otelEnv(receiver),
    EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
  });
  const delivered: Array<{ baggage: string | null; traceparent: string | null }> = [];
  const hook = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    await request.text();
    delivered.push({
      baggage: request.headers.get("baggage"),
      traceparent: request.headers.get("traceparent"),
    });
    return new Response("ok");
  });
  let socket: WebSocket | undefined;
  try {
    const base = server.url;
    const created = await fetch(`${base}/v1/webhooks`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({
        url: `http://127.0.0.1:${hook.addr.port}/hook`,
        eventTypes: ["event.processed"],
      }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    const ingest = await fetch(`${base}/v1/streams/orders/events`, {
      method: "POST",
      headers: {
        "Content-Type": "application/json",
        traceparent: `00-${CALLER_TRACE}-bbbbbbbbbbbbbbbb-01`,
        baggage: "userId=INJECTED",
      },
      body: JSON.stringify({ id: "o1", country: "DE", amount: 5 }),
    });
    assert.equal(ingest.status, 202, await ingest.text());
    await eventually(() => assert.ok(delivered.length >= 1));
    for (const delivery of delivered) {
      assert.equal(delivery.baggage, null);
      assert.ok(!delivery.traceparent?.includes(CALLER_TRACE), delivery.traceparent ?? "");
    }

    socket = new WebSocket(`${base.replace("http", "ws")}/v1/streams/orders/ws`);
    await new Promise((resolve, reject) => {
      socket!.onopen = resolve;
      socket!.onerror = reject;
    });
    const ack = new Promise((resolve) => socket!.onmessage = resolve);
    socket.send(JSON.stringify({ id: "o2", country: "FR", amount: 7 }));
    await ack;
    await eventually(() => {
      const spans = receiver.spans();
      // The HTTP ingest stays in the caller's trace.
      const http = spans.find((span) =>
        span.name === "edgestream.ingest" && span.attributes["edgestream.transport"] === "http"
      );
      assert.equal(http?.traceId, CALLER_TRACE);
      const frame = spans.find((span) =>
        span.name === "edgestream.ingest" && span.attributes["edgestream.transport"] === "ws"
      );
      assert.ok(frame, "the frame's span");
      assert.equal(frame.parentSpanId, "", "a trace of its own");
      const upgrade = spans.find((span) => span.spanId === frame.links[0]?.spanId);
      assert.equal(upgrade?.name, "GET", "linked to the upgrade request's span");
      assert.notEqual(frame.traceId, upgrade.traceId);
    });
  } finally {
    socket?.close();
    await hook.shutdown();
    await server.stop();
    await receiver.close();
  }
});
