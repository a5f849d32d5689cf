import assert from "node:assert/strict";
import { Hono } from "hono";
import { headAnswers } from "../../src/http/head.ts";
import { KEYS } from "../_fixtures.ts";
import { eventually, rawStatus, rawUpgrade, startServer } from "../_live.ts";

Deno.test("HEAD answers with the Content-Length GET sends, over a real server", async () => {
  const server = await startServer({ auth: true });
  try {
    const read = { Authorization: `Bearer ${KEYS.read}` };
    for (
      const [path, headers] of [
        ["/", {}],
        ["/healthz", {}],
        ["/sdk.js", {}],
        ["/favicon.ico", {}],
        ["/v1/streams", read],
        ["/v1/streams/orders", read],
        ["/v1/streams/nosuch", read],
      ] as const
    ) {
      const get = await fetch(`${server.base}${path}`, { headers });
      const bytes = (await get.arrayBuffer()).byteLength;
      const head = await fetch(`${server.base}${path}`, { method: "HEAD", headers });
      assert.equal(head.status, get.status, path);
      assert.equal(head.headers.get("Content-Type"), get.headers.get("Content-Type"), path);
      assert.ok(bytes > 0, path);
      assert.equal(head.headers.get("Content-Length"), String(bytes), path);
      assert.equal((await head.arrayBuffer()).byteLength, 0, path);
    }
  } finally {
    await server.close();
  }
});

Deno.test("HEAD of a 404 or a 405 is answered GET's headers over a real server: the same Content-Length", async () => {
  const server = await startServer({ auth: true });
  try {
    const admin = { Authorization: `Bearer ${KEYS.admin}` };
    // A 404 of no route, a 405 of a POST-only path, a 404 of a stream.
    for (const path of ["/nowhere", "/v1/streams/orders/events", "/v1/streams/nosuch"]) {
      const get = await fetch(`${server.base}${path}`, { headers: admin });
      const body = await get.text();
      const head = await fetch(`${server.base}${path}`, { method: "HEAD", headers: admin });
      assert.equal(head.status, get.status, path);
      assert.equal(await head.text(), "", path);
      assert.equal(
        get.headers.get("Content-Length"),
        String(new TextEncoder().encode(body).length),
      );
      // Every header but those of the moment and of the request.
      const headers = (res: Response) =>
        [...res.headers].filter(([name]) => name !== "date" && name !== "x-request-id");
      assert.deepEqual(headers(head), headers(get), path);
    }
  } finally {
    await server.close();
  }
});

Deno.test("HEAD of a subscription leaves no subscriber behind", async () => {
  const server = await startServer();
  try {
    for (let i = 0; i < 3; i++) {
      const res = await fetch(`${server.base}/v1/streams/orders/subscribe`, {
        method: "HEAD",
        headers: { Accept: "text/event-stream" },
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("Content-Type"), "text/event-stream");
      await res.body?.cancel();
    }
    await eventually(() => server.live.stats.subscribers === 0);
    assert.equal(server.live.stats.subscribers, 0);
    // A GET's subscriber is counted while it reads, so the count above can show a leak.
    const controller = new AbortController();
    const get = await fetch(`${server.base}/v1/streams/orders/subscribe`, {
      headers: { Accept: "text/event-stream" },
      signal: controller.signal,
    });
    assert.equal(get.status, 200);
    await eventually(() => server.live.stats.subscribers === 1);
    controller.abort();
    await get.body?.cancel().catch(() => {});
    await eventually(() => server.live.stats.subscribers === 0);
  } finally {
    await server.close();
  }
});

Deno.test("headAnswers: other methods, a set Content-Length and a 304 pass unchanged", async () => {
  const app = new Hono();
  app.use(headAnswers());
  app.get("/text", (c) => c.text("héllo"));
  app.get("/sized", (c) => c.body("abc", 200, { "Content-Length": "3" }));
  app.get("/none", (c) => c.body(null, 304));
  const get = await app.request("/text");
  assert.equal(await get.text(), "héllo");
  assert.equal(get.headers.get("Content-Length"), null);
  const head = await app.request("/text", { method: "HEAD" });
  // Bytes, not characters: é is two.
  assert.equal(head.headers.get("Content-Length"), "6");
  assert.equal(head.body, null);
  assert.equal(
    (await app.request("/sized", { method: "HEAD" })).headers.get("Content-Length"),
    "3",
  );
  const none = await app.request("/none", { method: "HEAD" });
  assert.equal(none.status, 304);
  assert.equal(none.headers.get("Content-Length"), null);
});

Deno.test("a WebSocket upgrade asked with HEAD is 400 invalid_upgrade, not 101", async () => {
  const server = await startServer();
  try {
    for (const path of ["/v1/streams/orders/ws", "/v1/streams/orders/subscribe"]) {
      const upgrade = (method: string) => rawUpgrade(path, { method });
      assert.equal(await rawStatus(server.base, upgrade("HEAD")), "HTTP/1.1 400 Bad Request", path);
      // The same request as a GET upgrades: the 400 is the method's.
      assert.equal(
        await rawStatus(server.base, upgrade("GET")),
        "HTTP/1.1 101 Switching Protocols",
        path,
      );
    }
    await eventually(() => server.live.stats.subscribers === 0);
  } finally {
    await server.close();
  }
});

Deno.test("HEAD of a subscription says no Content-Length over a real server (GET's body has none)", async () => {
  const server = await startServer();
  try {
    for (const query of ["", "?counter=count_1m"]) {
      const res = await fetch(`${server.base}/v1/streams/orders/subscribe${query}`, {
        method: "HEAD",
        headers: { Accept: "text/event-stream" },
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers.get("Content-Type"), "text/event-stream");
      // Hono's body-less HEAD answer made Deno.serve write `Content-Length: 0`.
      assert.equal(res.headers.get("Content-Length"), null, query);
      assert.equal((await res.arrayBuffer()).byteLength, 0);
    }
    await eventually(() => server.live.stats.subscribers === 0);
  } finally {
    await server.close();
  }
});
