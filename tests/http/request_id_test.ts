/**
 * Request ids: kept from a valid `X-Request-Id`, else new; on every response,
 * in every error body and in WebSocket ingest error frames.
 */
import assert from "node:assert/strict";
import { Hono } from "hono";
import {
  carriesRequestId,
  jsonWithRequestId,
  madeJsonWithRequestId,
  MAX_REQUEST_ID_LENGTH,
  requestIdFrom,
  setRequestId,
} from "../../src/http/request_id.ts";
import type { Store } from "../../src/store/types.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { at, KEYS, NOW, postEvents, testApp } from "../_fixtures.ts";
import { startServer } from "../_live.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

Deno.test("requestIdFrom() keeps 1 to 128 characters of [A-Za-z0-9._-] and replaces anything else", () => {
  const longest = "a".repeat(MAX_REQUEST_ID_LENGTH);
  for (const kept of ["job-42", "A.b_C-9", "x", longest]) {
    assert.equal(requestIdFrom(kept), kept);
  }
  const refused = [
    undefined,
    null,
    "",
    `${longest}b`,
    "has space",
    "slash/id",
    'quote"id',
    "new\nline",
    "café",
    "semi;colon",
  ];
  for (const value of refused) {
    const id = requestIdFrom(value);
    assert.match(id, UUID, JSON.stringify(value));
  }
  assert.notEqual(requestIdFrom(undefined), requestIdFrom(undefined));
});

Deno.test("Every response carries X-Request-Id: a valid incoming one kept, a too long or bad one replaced", async () => {
  const { app } = await testApp({ auth: true });
  const requests: Array<[string, RequestInit]> = [
    ["/healthz", {}],
    ["/v1/streams", { headers: { Authorization: `Bearer ${KEYS.read}` } }],
    ["/v1/streams", {}], // 401
    ["/v1/nothing-here", {}], // 404 from notFound
    ["/v1/streams/orders/events", { method: "POST", body: "{" }], // 401 before the body
    ["/v1/streams/orders/ws", { headers: { Authorization: `Bearer ${KEYS.ingest}` } }], // 426
  ];
  for (const [path, init] of requests) {
    const headers = new Headers(init.headers);
    const fresh = await app.request(path, { ...init, headers });
    assert.match(fresh.headers.get("X-Request-Id") ?? "", UUID, path);
    await fresh.body?.cancel();

    headers.set("X-Request-Id", "client-id_1.2");
    const kept = await app.request(path, { ...init, headers });
    assert.equal(kept.headers.get("X-Request-Id"), "client-id_1.2", path);
    await kept.body?.cancel();

    for (const bad of ["x".repeat(129), "bad id", "bad/id"]) {
      headers.set("X-Request-Id", bad);
      const replaced = await app.request(path, { ...init, headers });
      assert.match(replaced.headers.get("X-Request-Id") ?? "", UUID, `${path} ${bad}`);
      await replaced.body?.cancel();
    }
  }
});

Deno.test("Every error body carries the request id as error.requestId, the same as the header", async () => {
  const { app } = await testApp({ auth: true });
  const auth = { Authorization: `Bearer ${KEYS.admin}` };
  const failures: Array<[string, RequestInit, number, string]> = [
    ["/v1/streams", {}, 401, "unauthorized"],
    ["/v1/streams/nope", { headers: auth }, 404, "stream_not_found"],
    ["/v1/nothing-here", { headers: auth }, 404, "not_found"],
    [
      "/v1/streams/orders/events",
      { method: "POST", headers: { ...auth, "Content-Type": "application/json" }, body: "{" },
      400,
      "invalid_json",
    ],
    ["/v1/streams/orders/counters/count_1m?limit=0", { headers: auth }, 400, "invalid_query"],
    ["/healthz", { headers: { Host: "attacker.example" } }, 200, ""],
  ];
  for (const [path, init, status, code] of failures) {
    for (const sent of ["req-7", undefined]) {
      const headers = new Headers(init.headers);
      if (sent) headers.set("X-Request-Id", sent);
      const res = await app.request(path, { ...init, headers });
      const body = await res.json();
      assert.equal(res.status, status, `${path}: ${JSON.stringify(body)}`);
      if (status === 200) continue; // keyed mode answers any Host
      const id = res.headers.get("X-Request-Id");
      assert.equal(body.error.code, code, path);
      assert.equal(body.error.requestId, id, path);
      if (sent) assert.equal(id, sent, path);
    }
  }
  const open = (await testApp()).app;
  const refused = await open.request("/healthz", { headers: { Host: "attacker.example" } });
  const body = await refused.json();
  assert.equal(refused.status, 421);
  assert.equal(body.error.requestId, refused.headers.get("X-Request-Id"));
});

Deno.test("An ingest that accepts nothing and a 500 keep requestId in their error bodies", async () => {
  const { app } = await testApp();
  const none = await postEvents(app, [{ no_id: true }]);
  const noneBody = await none.json();
  assert.equal(none.status, 400);
  assert.equal(noneBody.error.code, "no_events_accepted");
  assert.equal(noneBody.error.requestId, none.headers.get("X-Request-Id"));
  assert.equal(noneBody.rejected.length, 1);

  const broken: Store = Object.assign(new MemoryStore({ now: () => NOW }), {
    stats(): never {
      throw new Error("stats exploded");
    },
  });
  const failing = (await testApp({ store: broken })).app;
  const res = await failing.request("/v1/streams", { headers: { "X-Request-Id": "r-500" } });
  assert.equal(res.status, 500);
  assert.deepEqual(await res.json(), {
    error: { code: "internal_error", message: "Internal server error", requestId: "r-500" },
  });
});

Deno.test("/openapi.json documents error.requestId in the error envelope", async () => {
  const { app } = await testApp();
  const doc = await (await app.request("/openapi.json")).json();
  const error = doc.components.schemas.Error.properties.error;
  assert.equal(error.properties.requestId.type, "string");
  assert.ok(error.required.includes("requestId"));
});

Deno.test("madeJsonWithRequestId() answers as jsonWithRequestId() does on a context without prepared headers, and is known to carry the id", async () => {
  const app = new Hono();
  const body = { accepted: 2, duplicates: 0, late: 0, filtered: 0, rejected: [], note: "é\u2028" };
  const made: Record<string, boolean> = {};
  for (
    const [path, reply] of [["/c", jsonWithRequestId], ["/made", madeJsonWithRequestId]] as const
  ) {
    app.post(path, (c) => {
      setRequestId(c, "id-1");
      const response = reply(c, body, 202);
      made[path] = carriesRequestId(c, response);
      return response;
    });
    // Without a request id, both are c.json.
    app.post(`${path}/none`, (c) => reply(c, body, 202));
  }
  for (const suffix of ["", "/none"]) {
    const [hono, plain] = await Promise.all(
      ["/c", "/made"].map((path) => app.request(path + suffix, { method: "POST" })),
    );
    assert.equal(plain.status, hono.status);
    assert.deepEqual([...plain.headers], [...hono.headers]);
    assert.equal(await plain.text(), await hono.text());
  }
  assert.deepEqual(made, { "/c": true, "/made": true });
});

/** The status line and headers of one raw HTTP/1.1 exchange with `port`, `date` left out. */
async function responseHead(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(request));
    let text = "";
    const buffer = new Uint8Array(4096);
    while (!text.includes("\r\n\r\n")) {
      const read = await conn.read(buffer);
      if (read === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, read));
    }
    return text.slice(0, text.indexOf("\r\n\r\n")).split("\r\n")
      .filter((line) => !line.startsWith("date:")).join("\n");
  } finally {
    conn.close();
  }
}

Deno.test("An ingest answer's head on the wire: its headers in order and their names as sent (a made 202 names its id in lowercase, as Hono's c.json names headers), the id after content-type, nosniff after the id", async () => {
  const server = await startServer({ auth: true });
  try {
    const port = Number(new URL(server.base).port);
    const post = (body: string, headers: string) =>
      responseHead(
        port,
        `POST /v1/streams/orders/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${KEYS.ingest}\r\nContent-Type: application/json\r\nContent-Length: ${
          new TextEncoder().encode(body).length
        }\r\n${headers}\r\n${body}`,
      );
    const event = JSON.stringify({ id: "wire-1", ts: at(1), country: "DE", amount: 1 });
    assert.equal(
      await post(event, "X-Request-Id: wire-a\r\n"),
      "HTTP/1.1 202 Accepted\ncontent-type: application/json\nx-request-id: wire-a\nx-content-type-options: nosniff\ncontent-length: 65",
    );
    assert.equal(
      await post(event, "X-Request-Id: wire-b\r\nIdempotency-Key: k-1\r\n"),
      "HTTP/1.1 202 Accepted\ncontent-type: application/json\nx-request-id: wire-b\nx-content-type-options: nosniff\ncontent-length: 65",
    );
    assert.equal(
      await post(event, "X-Request-Id: wire-c\r\nIdempotency-Key: k-1\r\n"),
      "HTTP/1.1 202 Accepted\ncontent-type: application/json\nidempotent-replayed: true\nX-Request-Id: wire-c\nX-Content-Type-Options: nosniff\ncontent-length: 81",
    );
    assert.equal(
      await post("{}", "X-Request-Id: wire-d\r\n"),
      "HTTP/1.1 400 Bad Request\ncontent-type: application/json\nX-Request-Id: wire-d\nX-Content-Type-Options: nosniff\ncontent-length: 266",
    );
  } finally {
    await server.close();
  }
});

Deno.test("An ingest answer keeps the headers middleware around the app prepared with c.header (an embedder's)", async () => {
  const { app } = await testApp();
  const outer = new Hono();
  outer.use(async (c, next) => {
    c.header("X-Frame-Options", "DENY");
    await next();
  });
  outer.route("/", app);
  // One event, and a batch with a rejected event (answered 202 with `rejected`).
  for (
    const body of [{ id: "e-embed-1", ts: NOW }, [{ id: "e-embed-2", ts: NOW }, { no_id: true }]]
  ) {
    const response = await postEvents(outer, body);
    assert.equal(response.status, 202);
    assert.equal(response.headers.get("X-Frame-Options"), "DENY");
    assert.match(response.headers.get("X-Request-Id") ?? "", UUID);
    await response.body?.cancel();
  }
});

Deno.test("A WebSocket upgrade's 101 carries the request's X-Request-Id and nosniff, as the OpenAPI document declares", async () => {
  const server = await startServer({});
  try {
    const port = Number(new URL(server.base).port);
    for (const path of ["/v1/streams/orders/ws", "/v1/streams/orders/subscribe"]) {
      const head = await responseHead(
        port,
        `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Request-Id: upgrade-1\r\n\r\n`,
      );
      assert.match(head, /^HTTP\/1\.1 101 /, path);
      assert.match(head, /\nx-request-id: upgrade-1(\n|$)/i, path);
      assert.match(head, /\nx-content-type-options: nosniff(\n|$)/i, path);
    }
    const document = await (await fetch(`${server.base}/openapi.json`)).json();
    for (const path of ["/v1/streams/{stream}/ws", "/v1/streams/{stream}/subscribe"]) {
      assert.ok(document.paths[path].get.responses["101"].headers["X-Request-Id"], path);
      assert.ok(document.paths[path].get.responses["101"].headers["X-Content-Type-Options"], path);
    }
  } finally {
    await server.close();
  }
});
