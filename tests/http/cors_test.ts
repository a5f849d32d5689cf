/** CORS for the API besides ingest (`src/http/cors.ts`): preflights, and who reads which answer. */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { API_EXPOSED_HEADERS } from "../../src/http/cors.ts";
import { MemoryKeyStore, MemoryStore, StoreUnavailableError } from "../../src/store/mod.ts";
import { KEYS, NOW } from "../_fixtures.ts";

const APP = "https://app.example";
const STATUS = "https://status.example";
const OTHER = "https://evil.example";
const BASE = "http://edge.example";

const CONFIG = {
  streams: {
    orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } },
  },
};

async function setup(options: { open?: boolean } = {}) {
  const now = () => NOW;
  const keys = await KeyRing.parse(
    options.open ? "" : `admin:${KEYS.admin},read:${KEYS.read}`,
    { now },
  );
  const app = createApp({
    streams: compileConfig(CONFIG),
    store: new MemoryStore({ now }),
    keys,
    now,
    origins: { allowedOrigins: [APP] },
  });
  /** A read key whose `origins` list the status page. */
  async function statusKey(): Promise<string> {
    const res = await app.request(`${BASE}/v1/keys`, {
      method: "POST",
      headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
      body: JSON.stringify({ scopes: ["read"], streams: ["orders"], origins: [STATUS] }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    return (await res.json()).key;
  }
  return { app, statusKey };
}

function from(origin: string, init: RequestInit & { key?: string } = {}): RequestInit {
  const headers = new Headers(init.headers);
  headers.set("Origin", origin);
  if (init.key) headers.set("Authorization", `Bearer ${init.key}`);
  return { ...init, headers };
}

Deno.test("a preflight of an API path grants any origin its methods and the API's headers, before any key and whether the stream exists", async () => {
  const { app } = await setup();
  for (const path of ["/v1/streams/orders/counters/n", "/v1/streams/nope/counters/n"]) {
    const res = await app.request(`${BASE}${path}`, {
      method: "OPTIONS",
      headers: {
        Origin: OTHER,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
      },
    });
    assert.equal(res.status, 204, path);
    assert.equal(res.headers.get("Access-Control-Allow-Origin"), OTHER);
    assert.equal(res.headers.get("Access-Control-Allow-Methods"), "GET, HEAD");
    assert.match(res.headers.get("Access-Control-Allow-Headers") ?? "", /\bauthorization\b/);
    assert.match(res.headers.get("Access-Control-Allow-Headers") ?? "", /\blast-event-id\b/);
    // What a page's OpenTelemetry fetch instrumentation adds: its default propagators' headers.
    for (const header of ["traceparent", "tracestate", "baggage"]) {
      assert.match(
        res.headers.get("Access-Control-Allow-Headers") ?? "",
        new RegExp(`\\b${header}\\b`),
      );
    }
    assert.equal(res.headers.get("Access-Control-Max-Age"), "600");
    assert.match(res.headers.get("Vary") ?? "", /Origin/);
  }
  // The WebSocket ingest path too: its preflight was 401, needing the key no preflight carries.
  const socket = await app.request(`${BASE}/v1/streams/orders/ws`, {
    method: "OPTIONS",
    headers: { Origin: OTHER, "Access-Control-Request-Method": "GET" },
  });
  assert.equal(socket.status, 204);
  assert.equal(socket.headers.get("Access-Control-Allow-Origin"), OTHER);
  assert.equal(socket.headers.get("Access-Control-Allow-Methods"), "GET, HEAD");
  // A definition's path takes PUT and DELETE with If-Match.
  const put = await app.request(`${BASE}/v1/streams/orders`, {
    method: "OPTIONS",
    headers: { Origin: APP, "Access-Control-Request-Method": "PUT" },
  });
  assert.equal(put.status, 204);
  const methods = (put.headers.get("Access-Control-Allow-Methods") ?? "").split(", ");
  assert.ok(methods.includes("PUT") && methods.includes("DELETE"), methods.join());
  assert.match(put.headers.get("Access-Control-Allow-Headers") ?? "", /\bif-match\b/);
  // No route: the 404 as before, no grant.
  const none = await app.request(`${BASE}/v1/nothing/here`, {
    method: "OPTIONS",
    headers: { Origin: OTHER, "Access-Control-Request-Method": "GET" },
  });
  assert.equal(none.status, 404);
  assert.equal(none.headers.get("Access-Control-Allow-Origin"), null);
  // An OPTIONS that is no preflight still needs its key, as before.
  const plain = await app.request(`${BASE}/v1/streams/orders/counters/n`, { method: "OPTIONS" });
  assert.equal(plain.status, 401);
});

Deno.test("an origin EDGESTREAM_ALLOWED_ORIGINS lists reads API answers, errors included; another origin is refused a read with a 403 it reads", async () => {
  const { app } = await setup();
  const ok = await app.request(
    `${BASE}/v1/streams/orders/counters/n`,
    from(APP, { key: KEYS.read }),
  );
  assert.equal(ok.status, 200);
  assert.equal(ok.headers.get("Access-Control-Allow-Origin"), APP);
  assert.equal(ok.headers.get("Access-Control-Expose-Headers"), API_EXPOSED_HEADERS);
  assert.match(ok.headers.get("Vary") ?? "", /Origin/);
  const missing = await app.request(`${BASE}/v1/streams/nope`, from(APP, { key: KEYS.read }));
  assert.equal(missing.status, 404);
  assert.equal(missing.headers.get("Access-Control-Allow-Origin"), APP);
  // Before, a 200 the page could not read: its fetch failed as a network error.
  const other = await app.request(
    `${BASE}/v1/streams/orders/counters/n`,
    from(OTHER, { key: KEYS.read }),
  );
  assert.equal(other.status, 403);
  assert.equal(other.headers.get("Access-Control-Allow-Origin"), OTHER);
  assert.equal(other.headers.get("Access-Control-Expose-Headers"), API_EXPOSED_HEADERS);
  assert.match(other.headers.get("Vary") ?? "", /Origin/);
  const refusal = (await other.json()).error;
  assert.equal(refusal.code, "origin_not_allowed");
  assert.equal(
    refusal.message,
    "Cross-origin read from 'https://evil.example' refused: this API key does not list it in its origins, nor does EDGESTREAM_ALLOWED_ORIGINS; add it to either to let its pages read",
  );
  // Without an Origin (a script, a server), or from the server's own origin, it reads as before.
  for (
    const init of [
      { headers: { Authorization: `Bearer ${KEYS.read}` } },
      from(BASE, { key: KEYS.read }),
    ]
  ) {
    const res = await app.request(`${BASE}/v1/streams/orders/counters/n`, init);
    assert.equal(res.status, 200);
    await res.body?.cancel();
  }
  // A state change from a listed origin: made, and its answer readable (ETag, Location exposed).
  const created = await app.request(`${BASE}/v1/streams/made`, {
    ...from(APP, { key: KEYS.admin, headers: { "Content-Type": "application/json" } }),
    method: "PUT",
    body: JSON.stringify(CONFIG.streams.orders),
  });
  assert.equal(created.status, 201, await created.clone().text());
  assert.equal(created.headers.get("Access-Control-Allow-Origin"), APP);
  assert.ok(created.headers.get("ETag"));
  // From an origin not listed: refused before anything changes, and unreadable.
  const refused = await app.request(`${BASE}/v1/streams/made2`, {
    ...from(OTHER, { key: KEYS.admin, headers: { "Content-Type": "application/json" } }),
    method: "PUT",
    body: JSON.stringify(CONFIG.streams.orders),
  });
  assert.equal(refused.status, 403);
  assert.equal(refused.headers.get("Access-Control-Allow-Origin"), null);
  const after = await app.request(`${BASE}/v1/streams/made2`, {
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  });
  assert.equal(after.status, 404);
});

Deno.test("a key's origins let their pages read what that key reads, the subscription too; other pages are refused with a 403 they read, no subscription opened", async () => {
  const { app, statusKey } = await setup();
  const key = await statusKey();
  const counter = await app.request(
    `${BASE}/v1/streams/orders/counters/n/current`,
    from(STATUS, { key }),
  );
  assert.equal(counter.status, 200);
  assert.equal(counter.headers.get("Access-Control-Allow-Origin"), STATUS);
  // The same page with a key that lists no origin.
  const unlisted = await app.request(
    `${BASE}/v1/streams/orders/counters/n/current`,
    from(STATUS, { key: KEYS.read }),
  );
  assert.equal(unlisted.status, 403);
  assert.equal(unlisted.headers.get("Access-Control-Allow-Origin"), STATUS);
  assert.equal((await unlisted.json()).error.code, "origin_not_allowed");
  // The key from a page its origins do not list.
  const elsewhere = await app.request(
    `${BASE}/v1/streams/orders/counters/n/current`,
    from(OTHER, { key }),
  );
  assert.equal(elsewhere.status, 403);
  assert.equal(elsewhere.headers.get("Access-Control-Allow-Origin"), OTHER);
  const refusal = (await elsewhere.json()).error;
  assert.equal(refusal.code, "origin_not_allowed");
  assert.match(
    refusal.message,
    /^Cross-origin read from 'https:\/\/evil\.example' refused: API key 'key_/,
  );
  // Its subscription: refused before it is opened (before, a 200 stream no page could read, which
  // /sdk.js opened again and again).
  const refused = await app.request(`${BASE}/v1/streams/orders/subscribe`, {
    ...from(OTHER, { key, headers: { Accept: "text/event-stream" } }),
  });
  assert.equal(refused.status, 403);
  assert.equal(refused.headers.get("Access-Control-Allow-Origin"), OTHER);
  assert.equal((await refused.json()).error.code, "origin_not_allowed");
  // A stream that does not exist: the same 403, which tells nothing of it.
  const unknown = await app.request(
    `${BASE}/v1/streams/nope/subscribe`,
    from(OTHER, { key: KEYS.read, headers: { Accept: "text/event-stream" } }),
  );
  assert.equal(unknown.status, 403);
  await unknown.body?.cancel();
  // The live subscription as a stream of events (SSE).
  const controller = new AbortController();
  const sse = await app.request(`${BASE}/v1/streams/orders/subscribe`, {
    ...from(STATUS, { key, headers: { Accept: "text/event-stream" } }),
    signal: controller.signal,
  });
  assert.equal(sse.status, 200);
  assert.equal(sse.headers.get("Access-Control-Allow-Origin"), STATUS);
  assert.equal(sse.headers.get("Content-Type")?.startsWith("text/event-stream"), true);
  controller.abort();
  await sse.body?.cancel().catch(() => {});
});

Deno.test("errors answered before a key is granted are readable by any page, so it can tell why; 421 and a refused origin are not", async () => {
  const { app } = await setup();
  const none = await app.request(`${BASE}/v1/streams/orders/counters/n`, from(OTHER));
  assert.equal(none.status, 401);
  assert.equal(none.headers.get("Access-Control-Allow-Origin"), OTHER);
  const wrong = await app.request(
    `${BASE}/v1/streams/orders/counters/n`,
    from(OTHER, { key: "not-a-key-0123456789" }),
  );
  assert.equal(wrong.status, 401);
  assert.equal(wrong.headers.get("Access-Control-Allow-Origin"), OTHER);
  const sse = await app.request(`${BASE}/v1/streams/orders/subscribe`, {
    ...from(OTHER, { headers: { Accept: "text/event-stream" } }),
  });
  assert.equal(sse.status, 401);
  assert.equal(sse.headers.get("Access-Control-Allow-Origin"), OTHER);
  // Open mode answers loopback names only: another Host is 421, unreadable.
  const open = await setup({ open: true });
  const host = await open.app.request(`${BASE}/v1/streams/orders/counters/n`, from(OTHER));
  assert.equal(host.status, 421);
  assert.equal(host.headers.get("Access-Control-Allow-Origin"), null);
  const local = await open.app.request(
    "http://localhost/v1/streams/orders/counters/n",
    from(APP),
  );
  assert.equal(local.status, 200);
  assert.equal(local.headers.get("Access-Control-Allow-Origin"), APP);
  const unlisted = await open.app.request(
    "http://localhost/v1/streams/orders/counters/n",
    from(OTHER),
  );
  assert.equal(unlisted.headers.get("Access-Control-Allow-Origin"), null);
});

Deno.test("ingest keeps its own CORS: its preflight and answers are as before", async () => {
  const { app } = await setup();
  const pre = await app.request(`${BASE}/v1/streams/orders/events`, {
    method: "OPTIONS",
    headers: { Origin: OTHER, "Access-Control-Request-Method": "POST" },
  });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get("Access-Control-Allow-Methods"), "POST");
  assert.equal(
    pre.headers.get("Access-Control-Allow-Headers"),
    "authorization, content-type, content-encoding, idempotency-key, x-request-id, traceparent, tracestate, baggage",
  );
});

Deno.test("the other errors answered before a key is granted are readable too: a repeated query, a stream that is no name, a key not looked up; a later error is not", async () => {
  const { app, statusKey } = await setup();
  const twice = await app.request(
    `${BASE}/v1/streams/orders/counters/n?limit=1&limit=2`,
    from(OTHER, { key: KEYS.read }),
  );
  assert.equal(twice.status, 400);
  assert.equal((await twice.json()).error.code, "invalid_query");
  assert.equal(twice.headers.get("Access-Control-Allow-Origin"), OTHER);
  // A path whose stream is no name: a key limited to streams is refused it before its grant
  // (the same 400 a key for all streams gets from the route). The page its key admits read the
  // one but not the other, its fetch failing as for a refused origin.
  const key = await statusKey();
  for (const path of ["/v1/streams/a%20b/counters/n", "/v1/streams/a%20b"]) {
    const named = await app.request(`${BASE}${path}`, from(STATUS, { key }));
    assert.equal(named.status, 400, path);
    assert.match((await named.json()).error.message, /Invalid path parameter stream/);
    assert.equal(named.headers.get("Access-Control-Allow-Origin"), STATUS, path);
    const unlimited = await app.request(`${BASE}${path}`, from(APP, { key: KEYS.read }));
    assert.equal(unlimited.status, 400, path);
    await unlimited.body?.cancel();
    assert.equal(unlimited.headers.get("Access-Control-Allow-Origin"), APP, path);
  }
  // A 400 of the route itself, once the key is granted: an origin the key does not admit never
  // reaches it (its readable 403 comes first); in open mode, where nothing is refused for its
  // origin, only the origins admitted read it.
  const bad = await app.request(
    `${BASE}/v1/streams/orders/counters/n?limit=nope`,
    from(OTHER, { key: KEYS.read }),
  );
  assert.equal(bad.status, 403);
  assert.equal((await bad.json()).error.code, "origin_not_allowed");
  const open = await setup({ open: true });
  const openBad = await open.app.request(
    "http://localhost/v1/streams/orders/counters/n?limit=nope",
    from(OTHER),
  );
  assert.equal(openBad.status, 400);
  await openBad.body?.cancel();
  assert.equal(openBad.headers.get("Access-Control-Allow-Origin"), null);

  class DownKeyStore extends MemoryKeyStore {
    override keyByHash(): Promise<never> {
      return Promise.reject(new StoreUnavailableError("Redis did not answer keyByHash"));
    }
  }
  const down = createApp({
    streams: compileConfig(CONFIG),
    store: new MemoryStore(),
    keys: await KeyRing.parse(`admin:${KEYS.admin}`, { store: new DownKeyStore() }),
  });
  const unknown = await down.request(
    `${BASE}/v1/streams/orders/counters/n`,
    from(STATUS, { key: "sk_runtimeKeyRuntimeKey0123456789" }),
  );
  assert.equal(unknown.status, 503);
  assert.equal(unknown.headers.get("Access-Control-Allow-Origin"), STATUS);
});

Deno.test("every API answer carries Vary: Origin, to a request without an Origin too, so a shared cache gives no page an answer stored for another origin or for none; /sdk.js answers * to all", async () => {
  const { app } = await setup();
  const path = `${BASE}/v1/streams/orders/counters/n`;
  // The same URL, with and without an Origin: only the page's answer carries its grant.
  const page = await app.request(path, from(APP, { key: KEYS.read }));
  assert.equal(page.headers.get("Access-Control-Allow-Origin"), APP);
  const answers = {
    "a 200": await app.request(path, { headers: { Authorization: `Bearer ${KEYS.read}` } }),
    "a 401": await app.request(path),
    "a 404": await app.request(`${BASE}/v1/streams/nope`, {
      headers: { Authorization: `Bearer ${KEYS.read}` },
    }),
    "an OPTIONS that is no preflight": await app.request(path, {
      method: "OPTIONS",
      headers: { "Access-Control-Request-Method": "GET" },
    }),
  };
  for (const [what, res] of Object.entries(answers)) {
    await res.body?.cancel();
    assert.equal(res.headers.get("Access-Control-Allow-Origin"), null, what);
    // Before, none: a cache keeping the answer without the grant gave it to the page, whose read
    // then failed (and the reverse).
    assert.match(res.headers.get("Vary") ?? "", /\bOrigin\b/, what);
  }
  // The SDK's module answers every origin, and none, alike (`*`): nothing to vary by.
  for (const init of [{}, from(OTHER)]) {
    const sdk = await app.request(`${BASE}/sdk.js`, init);
    await sdk.body?.cancel();
    assert.equal(sdk.status, 200);
    assert.equal(sdk.headers.get("Access-Control-Allow-Origin"), "*");
    assert.doesNotMatch(sdk.headers.get("Vary") ?? "", /\bOrigin\b/);
  }
});

Deno.test("the Origin policy's refusals, answered before CORS, carry no Vary: Origin: a state change's 403 from an origin not listed, open mode's 421", async () => {
  const { app } = await setup();
  const refused = await app.request(`${BASE}/v1/streams/made`, {
    ...from(OTHER, { key: KEYS.admin, headers: { "Content-Type": "application/json" } }),
    method: "PUT",
    body: JSON.stringify(CONFIG.streams.orders),
  });
  assert.equal(refused.status, 403);
  assert.equal((await refused.json()).error.code, "origin_not_allowed");
  assert.doesNotMatch(refused.headers.get("Vary") ?? "", /\bOrigin\b/);
  const open = await setup({ open: true });
  const otherHost = await open.app.request("http://elsewhere.example/v1/streams/orders");
  assert.equal(otherHost.status, 421);
  await otherHost.body?.cancel();
  assert.doesNotMatch(otherHost.headers.get("Vary") ?? "", /\bOrigin\b/);
});

Deno.test("a 405 on an API path carries Vary: Origin, and on the ingest path only to a request with an Origin, as the document's description says", async () => {
  const { app } = await setup();
  const api = await app.request(`${BASE}/v1/streams`, {
    method: "PATCH",
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  });
  assert.equal(api.status, 405);
  await api.body?.cancel();
  assert.match(api.headers.get("Vary") ?? "", /\bOrigin\b/);
  const ingest = `${BASE}/v1/streams/orders/events`;
  const plain = await app.request(ingest, { headers: { Authorization: `Bearer ${KEYS.admin}` } });
  assert.equal(plain.status, 405);
  await plain.body?.cancel();
  assert.doesNotMatch(plain.headers.get("Vary") ?? "", /\bOrigin\b/);
  const page = await app.request(ingest, from(APP, { key: KEYS.admin }));
  assert.equal(page.status, 405);
  await page.body?.cancel();
  assert.match(page.headers.get("Vary") ?? "", /\bOrigin\b/);
});

Deno.test("in open mode a live subscription (SSE) from a page EDGESTREAM_ALLOWED_ORIGINS does not list is refused a 403 origin_not_allowed it reads, before anything is opened; a listed page's and a script's are answered, and other reads are not refused", async () => {
  const { app } = await setup({ open: true });
  const url = "http://localhost/v1/streams/orders/subscribe";
  const sse = { headers: { Accept: "text/event-stream" } };
  for (const stream of ["orders", "nope"]) {
    const refused = await app.request(
      `http://localhost/v1/streams/${stream}/subscribe`,
      from(OTHER, sse),
    );
    assert.equal(refused.status, 403, stream);
    assert.equal(refused.headers.get("Access-Control-Allow-Origin"), OTHER);
    const { error } = await refused.json();
    assert.equal(error.code, "origin_not_allowed");
    assert.equal(
      error.message,
      "Cross-origin read from 'https://evil.example' refused: in open mode (no EDGESTREAM_KEYS) only the server's own origin and those EDGESTREAM_ALLOWED_ORIGINS lists read a subscription; add it there to let its pages read",
    );
  }
  for (const init of [from(APP, sse), sse, from("http://localhost", sse)]) {
    const controller = new AbortController();
    const res = await app.request(url, { ...init, signal: controller.signal });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("Content-Type")?.startsWith("text/event-stream"), true);
    controller.abort();
    await res.body?.cancel().catch(() => {});
  }
  // A read that ends at once is not refused in open mode: the page just cannot read it.
  const counter = await app.request("http://localhost/v1/streams/orders/counters/n", from(OTHER));
  assert.equal(counter.status, 200);
  assert.equal(counter.headers.get("Access-Control-Allow-Origin"), null);
  await counter.body?.cancel();
});
