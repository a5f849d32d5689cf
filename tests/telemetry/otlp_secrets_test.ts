/**
 * No API key, webhook secret or custom webhook header value reaches the
 * exported OpenTelemetry data: a keyed server with `OTEL_DENO=true` is used
 * the way the README says (keys in the `Authorization` header or the
 * `bearer.<key>` subprotocol, never in a URL), and every OTLP body it sent is
 * searched for them. Deno's own serve spans record full URLs, which is why
 * `?token=` is deprecated.
 */
import assert from "node:assert/strict";
import { eventually, otelEnv, startOtlpReceiver } from "./_otlp.ts";
import { startServerProcess } from "../_server_process.ts";

const ADMIN = "admin-secret-key-7f3a9c21e4b0";
const INGEST = "ingest-secret-key-5d8e2b6a1c9f";
const READ = "read-secret-key-0a4c7e9b2d6f";

Deno.test("a keyed server exports no key, webhook secret or webhook header value over OTLP", async () => {
  const receiver = startOtlpReceiver();
  const server = await startServerProcess("otlp-secrets", {
    ...otelEnv(receiver),
    EDGESTREAM_KEYS: `admin:${ADMIN},ingest:${INGEST},read:${READ}`,
    EDGESTREAM_SWEEP_EVERY: "200ms",
    EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
  });
  const hook = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, async (request) => {
    await request.text();
    return new Response("ok");
  });
  let webhookSecret = "";
  try {
    const base = server.url;
    const admin = { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" };
    const created = await fetch(`${base}/v1/webhooks`, {
      method: "POST",
      headers: admin,
      body: JSON.stringify({
        url: `http://127.0.0.1:${hook.addr.port}/hook`,
        eventTypes: ["event.processed"],
        headers: { "X-Receiver-Token": "receiver-header-value-91c2" },
      }),
    });
    assert.equal(created.status, 201, await created.clone().text());
    webhookSecret = (await created.json()).secret;
    const ingest = await fetch(`${base}/v1/streams/orders/events`, {
      method: "POST",
      headers: { Authorization: `Bearer ${INGEST}`, "Content-Type": "application/json" },
      body: JSON.stringify({ id: "o1", country: "DE", amount: 5 }),
    });
    assert.equal(ingest.status, 202);
    const socket = new WebSocket(`${base.replace("http", "ws")}/v1/streams/orders/ws`, [
      `bearer.${INGEST}`,
    ]);
    await new Promise((resolve) => socket.onopen = resolve);
    socket.send(JSON.stringify({ id: "o2", country: "FR", amount: 7 }));
    await new Promise((resolve) => socket.onmessage = resolve);
    socket.close();
    const read = await fetch(`${base}/v1/streams/orders`, {
      headers: { Authorization: `Bearer ${READ}` },
    });
    assert.equal(read.status, 200);
    await read.body?.cancel();
    // Spans and metrics of all of that (and a sweep's delivery) are exported within a second.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
  } finally {
    await server.stop();
    await hook.shutdown();
  }
  const exported = receiver.bodies.map((body) => body.text).join("\n");
  await receiver.close();
  assert.ok(receiver.bodies.some((body) => body.path === "/v1/traces"), "no traces exported");
  assert.match(exported, /edgestream\.ingest/, "the ingest spans were exported");
  const secrets = [ADMIN, INGEST, READ, webhookSecret, webhookSecret.replace(/^whsec_/, "")];
  for (const secret of [...secrets, "receiver-header-value-91c2"]) {
    assert.ok(secret.length > 8 && !exported.includes(secret), `OTLP output holds ${secret}`);
  }
});

Deno.test("a query string reaches only Deno's own server spans over OTLP (url.query, url.full), none of edgestream's", async () => {
  const receiver = startOtlpReceiver();
  const server = await startServerProcess("otlp-query", {
    ...otelEnv(receiver),
    EDGESTREAM_KEYS: `ingest:${INGEST}`,
  });
  const idempotencyKey = "idem-value-7c1e3a9b";
  try {
    const ingest = await fetch(
      `${server.url}/v1/streams/orders/events?idempotencyKey=${idempotencyKey}`,
      {
        method: "POST",
        headers: { Authorization: `Bearer ${INGEST}`, "Content-Type": "application/json" },
        body: JSON.stringify({ id: "q1", country: "DE", amount: 5 }),
      },
    );
    assert.equal(ingest.status, 202);
    await ingest.body?.cancel();
    // A secret key in a beacon's `?key=` is refused (401), after Deno's span recorded it.
    const beacon = await fetch(`${server.url}/v1/streams/orders/events?key=${INGEST}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ id: "q0", country: "DE", amount: 1 }),
    });
    assert.equal(beacon.status, 401);
    await beacon.body?.cancel();
    // The deprecated `?token=`, which WebSocket ingest still takes.
    const socket = new WebSocket(
      `${server.url.replace("http", "ws")}/v1/streams/orders/ws?token=${INGEST}`,
    );
    await new Promise((resolve) => socket.onopen = resolve);
    socket.send(JSON.stringify({ id: "q2", country: "FR", amount: 7 }));
    const ack = await new Promise<MessageEvent>((resolve) => socket.onmessage = resolve);
    assert.equal(JSON.parse(ack.data).type, "ack");
    socket.close();
    await eventually(() => {
      const names = receiver.spans().filter((span) => span.scope === "edgestream")
        .map((span) => span.name);
      assert.equal(names.filter((name) => name === "edgestream.ingest").length, 2);
      assert.equal(receiver.spans().filter((span) => "url.query" in span.attributes).length, 3);
    });
  } finally {
    await server.stop();
  }
  const spans = receiver.spans();
  await receiver.close();
  const own = spans.filter((span) => span.scope === "edgestream");
  for (const span of own) {
    const text = JSON.stringify(span.attributes);
    assert.ok(!text.includes(idempotencyKey) && !text.includes(INGEST), `${span.name}: ${text}`);
    assert.deepEqual(Object.keys(span.attributes).filter((key) => key.startsWith("url.")), []);
  }
  // Deno's span of each request records its query as sent: edgestream cannot redact it there.
  const served = spans.filter((span) => span.scope === "deno" && "url.query" in span.attributes)
    .map((span) => [span.name, span.attributes["url.query"], span.attributes["url.full"]]);
  assert.deepEqual(served.map(([name, query]) => [name, query]).sort(), [
    ["GET", `token=${INGEST}`],
    ["POST", `idempotencyKey=${idempotencyKey}`],
    ["POST", `key=${INGEST}`],
  ]);
  for (const [, query, full] of served) assert.ok(String(full).endsWith(`?${query}`));
});
