/**
 * The server as a user runs it (`src/main.ts` in a child process) with
 * Deno's OpenTelemetry export on (`OTEL_DENO=true`, `http/json`) to a local
 * OTLP receiver: events sent over HTTP and a WebSocket, webhook deliveries,
 * live subscribers and the sweep show up as the documented instruments, and
 * an ingest request as a span with its store apply beneath.
 */
import assert from "node:assert/strict";
import {
  eventually,
  type ExportedSpan,
  otelEnv,
  type OtlpReceiver,
  type Point,
  startOtlpReceiver,
  valueWhere,
} from "./_otlp.ts";
import { startServerProcess } from "../_server_process.ts";

const CONFIG = {
  streams: {
    clicks: {
      schema: { type: "object", properties: { id: { type: "string" } } },
      time: { field: "ts", lateness: "1s", idle: "0s" },
      dedupe: { field: "id" },
      transform: [{ filter: "!has(event.bot) || !event.bot" }],
      counters: {
        per_second: { window: { tumbling: "1s" }, aggregate: "count", retention: "1m" },
      },
      alerts: [{ name: "any", counter: "per_second", when: "value >= 1.0" }],
    },
  },
};

/** A webhook receiver answering 200 on `/ok`, 503 with a long Retry-After on `/busy`, 410 on `/gone`. */
function startReceiver() {
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    await request.text();
    const path = new URL(request.url).pathname;
    if (path === "/ok") return new Response("ok");
    if (path === "/busy") {
      return new Response("busy", { status: 503, headers: { "Retry-After": "3600" } });
    }
    return new Response("gone", { status: 410 });
  });
  return { url: `http://127.0.0.1:${server.addr.port}`, close: () => server.shutdown() };
}

function describePoints(receiver: OtlpReceiver, name: string): string {
  return `${name}: ${JSON.stringify(receiver.points(name))}`;
}

/** The point of metric `name` with these attributes, once it satisfies `accept`. */
function pointWhere(
  receiver: OtlpReceiver,
  name: string,
  attributes: Record<string, string>,
  accept: (point: Point) => boolean,
): Point {
  const point = valueWhere(receiver.points(name), attributes);
  assert.ok(
    point && accept(point),
    `no acceptable point ${JSON.stringify(attributes)} in ${describePoints(receiver, name)}`,
  );
  return point;
}

/** The ingest span of `transport` that has an apply span beneath it. */
function ingestWithApply(spans: ExportedSpan[], transport: string) {
  for (const ingest of spans) {
    if (ingest.name !== "edgestream.ingest") continue;
    if (ingest.attributes["edgestream.transport"] !== transport) continue;
    const apply = spans.find((span) =>
      span.name === "edgestream.store.applyBatch" && span.parentSpanId === ingest.spanId &&
      span.traceId === ingest.traceId
    );
    if (apply) return { ingest, apply };
  }
  throw new Error(
    `no ${transport} ingest span with an apply child among: ${
      spans.map((span) => span.name).join(", ")
    }`,
  );
}

Deno.test("main.ts with OTEL_DENO=true exports the documented instruments and ingest spans over OTLP", async () => {
  const receiver = startOtlpReceiver();
  const hooks = startReceiver();
  const dir = await Deno.makeTempDir();
  const configPath = `${dir}/config.json`;
  await Deno.writeTextFile(configPath, JSON.stringify(CONFIG));
  const server = await startServerProcess("otlp", {
    ...otelEnv(receiver),
    EDGESTREAM_CONFIG: configPath,
    EDGESTREAM_SWEEP_EVERY: "200ms",
    EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
    // The two subscribers below fill a client address's places: a third is refused and counted.
    EDGESTREAM_SUBSCRIPTIONS_PER_KEY: "2",
    // The one ingest socket below fills the process's place: a second is refused and counted.
    EDGESTREAM_INGEST_SOCKETS_MAX: "1",
    // The three webhooks below fill the deployment's places: a fourth is refused and counted.
    EDGESTREAM_WEBHOOKS_MAX: "3",
  });
  const sockets: WebSocket[] = [];
  const sse = new AbortController();
  try {
    const post = (path: string, body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${server.url}${path}`, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...headers },
        body: JSON.stringify(body),
      });

    // Live subscribers, one per transport.
    const subscriber = new WebSocket(
      `${server.url.replace("http", "ws")}/v1/streams/clicks/subscribe`,
    );
    sockets.push(subscriber);
    await new Promise((resolve, reject) => {
      subscriber.onmessage = resolve;
      subscriber.onerror = reject;
    });
    const stream = await fetch(`${server.url}/v1/streams/clicks/subscribe`, {
      headers: { Accept: "text/event-stream" },
      signal: sse.signal,
    });
    assert.equal(stream.status, 200);
    const reader = stream.body!.getReader();
    assert.match(new TextDecoder().decode((await reader.read()).value), /subscribed/);
    const third = await fetch(`${server.url}/v1/streams/clicks/subscribe`, {
      headers: { Accept: "text/event-stream" },
    });
    assert.equal(third.status, 429);
    await third.body?.cancel();

    // HTTP: two applied, a duplicate, a filtered, a late and a rejected event; then a replay.
    const batch = [
      { id: "a" },
      { id: "b" },
      { id: "a" },
      { id: "c", bot: true },
      { id: "d", ts: Date.now() - 3_600_000 },
      { id: 5 },
    ];
    for (let i = 0; i < 2; i++) {
      const reply = await post("/v1/streams/clicks/events", batch, { "Idempotency-Key": "k-1" });
      const body = await reply.json();
      assert.equal(reply.status, 202, JSON.stringify(body));
      assert.deepEqual(
        [body.accepted, body.duplicates, body.late, body.filtered, body.rejected.length],
        [5, 1, 1, 1, 1],
      );
      assert.equal(body.replayed === true, i === 1);
    }
    // A request that fails whole counts no event, but its time and span.
    const unreadable = await fetch(`${server.url}/v1/streams/clicks/events`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{not json",
    });
    assert.equal(unreadable.status, 400);
    await unreadable.body?.cancel();
    // Every event rejected: a 400 whose events count as rejected, and an apply that counts them in
    // the stream's stats.
    const refused = await post("/v1/streams/clicks/events", [{ id: 6 }]);
    assert.equal((await refused.json()).error.code, "no_events_accepted");

    // WebSocket: one frame of three events.
    const socket = new WebSocket(`${server.url.replace("http", "ws")}/v1/streams/clicks/ws`);
    sockets.push(socket);
    await new Promise((resolve, reject) => {
      socket.onopen = resolve;
      socket.onerror = reject;
    });
    const ack = new Promise<string>((resolve) => socket.onmessage = (event) => resolve(event.data));
    socket.send(JSON.stringify({ seq: 1, events: [{ id: "w1" }, { id: "w2" }, { id: "w3" }] }));
    assert.equal(JSON.parse(await ack).accepted, 3);
    const secondSocket = await fetch(`${server.url}/v1/streams/clicks/ws`, {
      headers: {
        Upgrade: "websocket",
        Connection: "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
      },
    });
    assert.equal(secondSocket.status, 503);
    assert.equal((await secondSocket.json()).error.code, "ingest_sockets_full");
    // And one frame that cannot be read: its span is an error, as the unreadable request's.
    const badFrame = new Promise<string>((resolve) =>
      socket.onmessage = (event) => resolve(event.data)
    );
    socket.send("{bad");
    assert.equal(JSON.parse(await badFrame).error.code, "invalid_json");

    // Webhooks: one delivery that succeeds, one that fails with a retry, one that dies.
    for (const path of ["/ok", "/busy", "/gone"]) {
      const created = await post("/v1/webhooks", {
        url: `${hooks.url}${path}`,
        eventTypes: ["alert.fired"],
        filter: "false",
      });
      const endpoint = await created.json();
      assert.equal(created.status, 201, JSON.stringify(endpoint));
      assert.equal((await post(`/v1/webhooks/${endpoint.id}/test`, {})).status, 202);
    }
    // A fourth endpoint is past EDGESTREAM_WEBHOOKS_MAX: refused, and counted.
    const fourth = await post("/v1/webhooks", { url: `${hooks.url}/ok`, filter: "false" });
    assert.equal(fourth.status, 409);
    assert.equal((await fourth.json()).error.code, "too_many_webhooks");

    const events = "edgestream.events";
    await eventually(() => {
      for (
        const [outcome, transport, value] of [
          ["accepted", "http", 2],
          ["duplicate", "http", 1],
          ["late", "http", 1],
          ["filtered", "http", 1],
          ["rejected", "http", 2],
          ["accepted", "ws", 3],
        ] as const
      ) {
        pointWhere(
          receiver,
          events,
          { stream: "clicks", outcome, transport },
          (point) => point.value === value,
        );
      }
      assert.equal(receiver.points(events).length, 6, describePoints(receiver, events));
      for (const point of receiver.points(events)) assert.equal(point.temporality, 2);
      for (const [transport, count] of [["http", 4], ["ws", 2]] as const) {
        const point = pointWhere(
          receiver,
          "edgestream.ingest.duration",
          { stream: "clicks", transport },
          (point) => point.count === count && point.sum! > 0,
        );
        assert.equal(point.temporality, 2);
        assert.deepEqual([point.bounds?.[0], point.bounds?.at(-1)], [0.001, 15]);
      }
      pointWhere(
        receiver,
        "edgestream.store.calls",
        { operation: "applyBatch", result: "ok" },
        (point) => point.value === 4,
      );
      pointWhere(
        receiver,
        "edgestream.store.duration",
        { operation: "applyBatch", result: "ok" },
        (point) => point.count === 4,
      );
      pointWhere(
        receiver,
        "edgestream.windows.closed",
        { stream: "clicks", counter: "per_second" },
        (point) => point.value! >= 1,
      );
      pointWhere(
        receiver,
        "edgestream.alerts.fired",
        { stream: "clicks", alert: "any" },
        (point) => point.value! >= 1,
      );
      for (const outcome of ["succeeded", "failed", "dead"]) {
        pointWhere(
          receiver,
          "edgestream.webhook.deliveries",
          { outcome },
          (point) => point.value === 1,
        );
        pointWhere(
          receiver,
          "edgestream.webhook.delivery.duration",
          { outcome },
          (point) => point.count === 1,
        );
      }
      pointWhere(receiver, "edgestream.webhook.pending", {}, (point) => point.value === 1);
      pointWhere(receiver, "edgestream.webhook.dead", {}, (point) => point.value === 1);
      pointWhere(
        receiver,
        "edgestream.live.refused",
        { limit: "key" },
        (point) => point.value === 1,
      );
      pointWhere(
        receiver,
        "edgestream.ingest.sockets.refused",
        { limit: "process" },
        (point) => point.value === 1,
      );
      pointWhere(
        receiver,
        "edgestream.stored.refused",
        { kind: "webhooks" },
        (point) => point.value === 1,
      );
      for (const transport of ["ws", "sse"]) {
        pointWhere(
          receiver,
          "edgestream.live.subscribers",
          { transport },
          (point) => point.value === 1,
        );
      }
    });

    // A subscriber that leaves is subtracted.
    subscriber.close();
    await eventually(() =>
      pointWhere(
        receiver,
        "edgestream.live.subscribers",
        { transport: "ws" },
        (point) => point.value === 0,
      )
    );

    // One span per ingest request (HTTP, under Deno's own request span) and per
    // WebSocket frame, each with its store apply as a child.
    await eventually(() => {
      const spans = receiver.spans();
      const http = ingestWithApply(spans, "http");
      assert.equal(http.ingest.attributes["edgestream.stream"], "clicks");
      // Once answered, the reply's counts (built only for a recording span).
      assert.equal(typeof http.ingest.attributes["edgestream.events.accepted"], "number");
      assert.equal(typeof http.ingest.attributes["edgestream.events.rejected"], "number");
      assert.equal(http.ingest.attributes["edgestream.replayed"], false);
      assert.equal(http.apply.attributes["edgestream.batch.events"] !== undefined, true);
      const parent = spans.find((span) => span.spanId === http.ingest.parentSpanId);
      assert.equal(parent?.name, "POST", "the HTTP ingest span sits under Deno.serve's span");
      ingestWithApply(spans, "ws");
      const failed = spans.filter((span) =>
        span.name === "edgestream.ingest" && span.status.code === 2
      );
      assert.deepEqual(
        failed.map((span) => span.attributes["edgestream.transport"]).sort(),
        ["http", "ws"],
        "the unreadable request's and frame's spans are errors, no other",
      );
      for (const span of failed) assert.match(span.status.message ?? "", /JSON/);
    });
    // edgestream's own log lines go to stdout, not through console: none is exported as a log.
    assert.match(server.output(), /"message":"POST \/v1\/streams\/clicks\/events 202 /);
    const logs = receiver.bodies.filter((body) => body.path === "/v1/logs");
    assert.doesNotMatch(
      logs.map((body) => body.text).join("\n"),
      /\/v1\/streams\/clicks\/events|edgestream\.http/,
    );
  } finally {
    sse.abort();
    for (const socket of sockets) socket.close();
    await server.stop();
    await hooks.close();
    await receiver.close();
    await Deno.remove(dir, { recursive: true });
  }
});
