/**
 * Every reply carries `X-Content-Type-Options: nosniff` (JSON API replies, errors, ingest's own
 * fast path, pages, preflights, subscriptions); both pages (`/`, `/docs`) send
 * `Referrer-Policy: no-referrer`.
 */
import assert from "node:assert/strict";
import { at, KEYS, testApp } from "../_fixtures.ts";

Deno.test("every reply carries X-Content-Type-Options: nosniff, whichever route and status", async () => {
  const { app } = await testApp({ auth: true });
  const admin = { Authorization: `Bearer ${KEYS.admin}` };
  const json = { "Content-Type": "application/json" };
  const cases: Array<[string, string, RequestInit, number]> = [
    ["GET", "/healthz", {}, 200],
    ["GET", "/v1/streams", { headers: admin }, 200],
    ["GET", "/v1/streams", {}, 401],
    ["GET", "/v1/streams/orders/counters/nope", { headers: admin }, 404],
    ["GET", "/v1/nothing-here", { headers: admin }, 404],
    ["DELETE", "/healthz", {}, 405],
    ["HEAD", "/v1/streams", { headers: admin }, 200],
    ["OPTIONS", "/v1/streams/orders/events", { headers: { Origin: "https://x.example" } }, 204],
    // Ingest runs without the middleware chain: its replies are made with their headers.
    [
      "POST",
      "/v1/streams/orders/events",
      {
        headers: { ...json, Authorization: `Bearer ${KEYS.ingest}` },
        body: JSON.stringify({ id: "a", ts: at(1), country: "DE", amount: 1 }),
      },
      202,
    ],
    [
      "POST",
      "/v1/streams/orders/events",
      { headers: { ...json, Authorization: `Bearer ${KEYS.ingest}` }, body: "{" },
      400,
    ],
    ["POST", "/v1/streams/orders/events", { headers: json, body: "{}" }, 401],
    ["GET", "/openapi.json", {}, 200],
    ["GET", "/docs", {}, 200],
    ["GET", "/", {}, 200],
  ];
  for (const [method, path, init, status] of cases) {
    const res = await app.request(path, { method, ...init });
    await res.body?.cancel();
    assert.equal(res.status, status, `${method} ${path}`);
    assert.equal(res.headers.get("X-Content-Type-Options"), "nosniff", `${method} ${path}`);
    assert.ok(res.headers.get("X-Request-Id"), `${method} ${path}`);
  }
  // A subscription's stream too.
  const controller = new AbortController();
  const sse = await app.request("/v1/streams/orders/subscribe", {
    headers: { Authorization: `Bearer ${KEYS.read}`, Accept: "text/event-stream" },
    signal: controller.signal,
  });
  assert.equal(sse.status, 200);
  assert.equal(sse.headers.get("X-Content-Type-Options"), "nosniff");
  await sse.body?.cancel();
  controller.abort();
});

Deno.test("both pages send Referrer-Policy: no-referrer", async () => {
  const { app } = await testApp();
  for (const path of ["/", "/docs"]) {
    const res = await app.request(path);
    await res.body?.cancel();
    assert.equal(res.status, 200, path);
    assert.equal(res.headers.get("Referrer-Policy"), "no-referrer", path);
  }
});
