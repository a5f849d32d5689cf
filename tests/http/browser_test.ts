/** Ingest from web pages: publishable keys, origins, CORS, beacons and rate limits. */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { MemoryDefinitionStore, MemoryStore } from "../../src/store/mod.ts";
import { keyedApp, KEYS, NOW } from "../_fixtures.ts";

const SHOP = "https://shop.example";
const OTHER = "https://evil.example";

const CONFIG = {
  streams: {
    pageviews: {
      dedupe: { field: "id" },
      counters: { views: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
    limited: {
      limits: { eventsPerSecond: 2, burst: 4 },
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
    listed: {
      origins: ["https://docs.example/"],
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
};

/**
 * An app on CONFIG with keys on (`keyedApp`: the admin and ingest keys, `createKey` making more),
 * and `stats` of its streams.
 */
async function setup(options: { now?: () => number; allowedOrigins?: string[] } = {}) {
  const { app, store, createKey } = await keyedApp({
    streams: CONFIG,
    now: options.now,
    origins: { allowedOrigins: options.allowedOrigins },
  });
  return { app, createKey, stats: statsOf(store) };
}

/** An app on CONFIG with no keys (open mode, which answers `localhost`), and `stats` of its streams. */
async function openSetup() {
  const store = new MemoryStore({ now: () => NOW });
  const keys = await KeyRing.parse("", { now: () => NOW });
  const app = createApp({ streams: compileConfig(CONFIG), store, keys, now: () => NOW });
  return { app, stats: statsOf(store) };
}

/** The stats of a stream of CONFIG in `store`. */
function statsOf(store: MemoryStore) {
  return (stream: string) => store.stats(stream, compileConfig(CONFIG).get(stream)!.counterMetas);
}

/**
 * A refusal a page can read: its origin allowed to read it (never with credentials), its
 * X-Request-Id exposed, and Vary: Origin so no cache hands it to another origin.
 */
function assertReadableRefusal(res: Response, origin: string): void {
  assert.equal(res.headers.get("Access-Control-Allow-Origin"), origin);
  assert.match(res.headers.get("Access-Control-Expose-Headers")!, /X-Request-Id/);
  assert.equal(res.headers.get("Access-Control-Allow-Credentials"), null);
  assert.match(res.headers.get("Vary")!, /Origin/);
}

const PUBLISHABLE = {
  type: "publishable",
  streams: ["pageviews", "limited"],
  origins: [SHOP],
};

function send(
  stream: string,
  body: unknown,
  options: { key?: string; query?: string; origin?: string; type?: string; host?: string } = {},
): [string, RequestInit] {
  const headers: Record<string, string> = { "Content-Type": options.type ?? "application/json" };
  if (options.key) headers.Authorization = `Bearer ${options.key}`;
  if (options.origin) headers.Origin = options.origin;
  const query = options.query ? `?key=${options.query}` : "";
  return [`http://${options.host ?? "edge.example"}/v1/streams/${stream}/events${query}`, {
    method: "POST",
    headers,
    body: typeof body === "string" ? body : JSON.stringify(body),
  }];
}

Deno.test("a page on an origin EDGESTREAM_ALLOWED_ORIGINS lists reads its ingest answers (CORS headers), with any ingest key", async () => {
  const { app, stats } = await setup({ allowedOrigins: [SHOP] });
  const ok = await app.request(
    ...send("pageviews", { id: "a" }, { key: KEYS.ingest, origin: SHOP }),
  );
  assert.equal(ok.status, 202);
  assert.equal(ok.headers.get("Access-Control-Allow-Origin"), SHOP);
  assert.equal(
    ok.headers.get("Access-Control-Expose-Headers"),
    "Retry-After, RateLimit, RateLimit-Policy, Idempotent-Replayed, X-Request-Id",
  );
  // Its errors too: a page reads why (here an unknown stream).
  const missing = await app.request(
    ...send("nope", { id: "b" }, { key: KEYS.ingest, origin: SHOP }),
  );
  assert.equal(missing.status, 404);
  assert.equal(missing.headers.get("Access-Control-Allow-Origin"), SHOP);
  const refused = await app.request(
    ...send("pageviews", { id: "c" }, { key: KEYS.ingest, origin: OTHER }),
  );
  assert.equal(refused.status, 403);
  // Readable, so its page learns why (the events are refused either way).
  assertReadableRefusal(refused, OTHER);
  assert.equal((await stats("pageviews")).accepted, 1);
});

Deno.test("a publishable key is ingest-only and starts with pk_", async () => {
  const { app, createKey } = await setup();
  const pk = await createKey(PUBLISHABLE);
  assert.match(pk.key, /^pk_/);
  assert.equal((await app.request(...send("pageviews", { id: "a" }, { key: pk.key }))).status, 202);
  const read = await app.request("/v1/streams/pageviews", {
    headers: { Authorization: `Bearer ${pk.key}` },
  });
  assert.equal(read.status, 403);
});

Deno.test("a cross-origin POST with a publishable key is admitted from its origins only, with CORS headers", async () => {
  const { app, createKey, stats } = await setup();
  const pk = await createKey(PUBLISHABLE);
  const ok = await app.request(...send("pageviews", { id: "a" }, { query: pk.key, origin: SHOP }));
  assert.equal(ok.status, 202);
  assert.equal(ok.headers.get("Access-Control-Allow-Origin"), SHOP);
  assert.equal(
    ok.headers.get("Access-Control-Expose-Headers"),
    "Retry-After, RateLimit, RateLimit-Policy, Idempotent-Replayed, X-Request-Id",
  );
  assert.match(ok.headers.get("Vary")!, /Origin/);
  const refused = await app.request(
    ...send("pageviews", { id: "b" }, { query: pk.key, origin: OTHER }),
  );
  assert.equal(refused.status, 403);
  // Readable, so its page learns why (the events are refused either way).
  assertReadableRefusal(refused, OTHER);
  const body = await refused.json();
  assert.equal(body.error.code, "origin_not_allowed");
  assert.match(
    body.error.message,
    /may be used only from https:\/\/shop\.example; .*evil\.example/,
  );
  // A script sends no Origin (or any it likes): the key alone admits it.
  assert.equal(
    (await app.request(...send("pageviews", { id: "c" }, { query: pk.key }))).status,
    202,
  );
  assert.equal((await stats("pageviews")).accepted, 2);
});

Deno.test("ingest errors answered before the origin is judged (a repeated query's 400, 401s, a key's 403) carry CORS headers for the page, and so does a refused origin's 403 origin_not_allowed", async () => {
  const { app, createKey, stats } = await setup();
  const pk = await createKey(PUBLISHABLE);
  // SHOP is only the key's origin: the server's and the streams' lists do not name it.
  const limited = await createKey({ scopes: ["ingest"], streams: ["limited"] });
  const cases: Array<[string, [string, RequestInit], number, string]> = [
    [
      "repeated query",
      send("pageviews", { id: "a" }, { query: `${pk.key}&key=x`, origin: SHOP }),
      400,
      "invalid_query",
    ],
    ["no key", send("pageviews", { id: "a" }, { origin: SHOP }), 401, "unauthorized"],
    [
      "a key that is none",
      send("pageviews", { id: "a" }, { key: "pk_0000000000000000madeup", origin: SHOP }),
      401,
      "unauthorized",
    ],
    [
      "a key of other streams",
      send("pageviews", { id: "a" }, { key: limited.key, origin: SHOP }),
      403,
      "forbidden",
    ],
  ];
  for (const [what, request, status, code] of cases) {
    const res = await app.request(...request);
    assert.equal(res.status, status, what);
    assert.equal((await res.json()).error.code, code, what);
    assert.equal(res.headers.get("Access-Control-Allow-Origin"), SHOP, what);
    assert.match(res.headers.get("Access-Control-Expose-Headers")!, /Retry-After/, what);
    assert.match(res.headers.get("Vary")!, /Origin/, what);
  }
  // Judged and refused: readable too, so the page learns why; nothing counted.
  const refused = await app.request(
    ...send("pageviews", { id: "b" }, { key: KEYS.ingest, origin: SHOP }),
  );
  assert.equal(refused.status, 403);
  // Readable, so its page learns why (the events are refused either way).
  assertReadableRefusal(refused, SHOP);
  assert.equal((await stats("pageviews")).accepted, 0);
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  assert.match(
    readme,
    /is `403` `origin_not_allowed` and counts nothing, but the page reads it \(`Access-Control-Allow-Origin: <origin>`, the same exposed headers, no credentials\), so `\/sdk\.js` warns/,
  );
});

Deno.test("open mode's 421 for a Host it does not answer carries no CORS header, on ingest too", async () => {
  const app = createApp({
    streams: compileConfig(CONFIG),
    store: new MemoryStore(),
    keys: await KeyRing.parse(""),
    origins: { allowedOrigins: [SHOP] },
  });
  const res = await app.request(...send("pageviews", { id: "a" }, { origin: SHOP }));
  assert.equal(res.status, 421);
  assert.equal(res.headers.get("Access-Control-Allow-Origin"), null);
});

Deno.test("a cross-origin POST with a secret key is still refused unless an origin list admits it", async () => {
  const { app, createKey } = await setup();
  const res = await app.request(
    ...send("pageviews", { id: "a" }, { key: KEYS.ingest, origin: SHOP }),
  );
  assert.equal(res.status, 403);
  assert.match(
    (await res.json()).error.message,
    /EDGESTREAM_ALLOWED_ORIGINS.*or to the key's or the stream's 'origins'/,
  );
  const sk = await createKey({ scopes: ["ingest"], origins: [SHOP] });
  const listed = await app.request(
    ...send("pageviews", { id: "a" }, { key: sk.key, origin: SHOP }),
  );
  assert.equal(listed.status, 202);
  assert.equal(listed.headers.get("Access-Control-Allow-Origin"), SHOP);
  // The stream's own origins admit any key.
  const byStream = await app.request(
    ...send("listed", {}, { key: KEYS.ingest, origin: "https://docs.example" }),
  );
  assert.equal(byStream.status, 202);
  assert.equal(byStream.headers.get("Access-Control-Allow-Origin"), "https://docs.example");
});

Deno.test("a preflight answers alike for a stream that exists and one that does not, granting any origin; the POST is where an unlisted origin is refused and an unknown stream is 404", async () => {
  const { app, createKey, stats } = await setup();
  const pk = await createKey(PUBLISHABLE);
  const preflight = (origin: string, query = `?key=${pk.key}`, stream = "pageviews") =>
    app.request(`http://edge.example/v1/streams/${stream}/events${query}`, {
      method: "OPTIONS",
      headers: {
        Origin: origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, idempotency-key",
      },
    });
  /** Status and headers, but the request id each answer has of its own. */
  const answer = async (response: Response) => {
    await response.body?.cancel();
    const headers = [...response.headers].filter(([name]) => name !== "x-request-id");
    return { status: response.status, headers };
  };
  const allowed = await preflight(SHOP);
  assert.equal(allowed.status, 204);
  assert.equal(allowed.headers.get("Access-Control-Allow-Origin"), SHOP);
  assert.equal(allowed.headers.get("Access-Control-Allow-Methods"), "POST");
  assert.equal(
    allowed.headers.get("Access-Control-Allow-Headers"),
    "authorization, content-type, content-encoding, idempotency-key, x-request-id, traceparent, tracestate, baggage",
  );
  assert.equal(allowed.headers.get("Allow"), "POST");
  const expected = await answer(allowed);
  // A stream listing the origin, one not listing it, one that does not exist: one answer,
  // with the key in the URL or without it.
  for (
    const [query, stream] of [["", "pageviews"], ["", "listed"], ["", "nope"], [undefined, "nope"]]
  ) {
    assert.deepEqual(
      await answer(await preflight(SHOP, query, stream)),
      expected,
      `${stream} ${query}`,
    );
  }
  for (const stream of ["listed", "nope"]) {
    const docs = await answer(await preflight("https://docs.example", "", stream));
    assert.deepEqual(docs, await answer(await preflight("https://docs.example", "", "pageviews")));
    assert.ok(
      docs.headers.some(([name, value]) =>
        name === "access-control-allow-origin" && value === "https://docs.example"
      ),
    );
  }
  // A path that names no stream (not a name at all) too: its POST is the name check's 400, which
  // the page reads only when its preflight was granted (a refused one is a network error).
  for (const stream of ["a%20b", "a.b", "x".repeat(65)]) {
    assert.deepEqual(await answer(await preflight(SHOP, "", stream)), expected, stream);
  }
  // Without an Origin it is no preflight: the Allow alone, for any name.
  for (const stream of ["pageviews", "nope", "a.b"]) {
    const plain = await app.request(`http://edge.example/v1/streams/${stream}/events`, {
      method: "OPTIONS",
    });
    assert.equal(plain.status, 204);
    assert.equal(plain.headers.get("Allow"), "POST");
    assert.equal(plain.headers.get("Access-Control-Allow-Origin"), null);
  }
  // The POST decides: an origin neither the key nor the stream lists is refused, nothing counted.
  const refused = await app.request(
    ...send("pageviews", { id: "x" }, { query: pk.key, origin: OTHER }),
  );
  assert.equal(refused.status, 403);
  assert.equal((await refused.json()).error.code, "origin_not_allowed");
  // Readable, so its page learns why (the events are refused either way).
  assertReadableRefusal(refused, OTHER);
  assert.equal((await stats("pageviews")).accepted, 0);
  // With a key, an unknown stream is 404 (from a page: with a key admitting its origin, which
  // the stream cannot); without one, 401 as for a stream that exists.
  const shopKey = await createKey({ scopes: ["ingest"], origins: [SHOP] });
  for (const [key, origin] of [[KEYS.ingest, undefined], [shopKey.key, SHOP]]) {
    const unknown = await app.request(...send("nope", { id: "x" }, { key, origin }));
    assert.equal(unknown.status, 404, origin ?? "no origin");
    assert.equal((await unknown.json()).error.code, "stream_not_found");
  }
  for (const stream of ["pageviews", "nope"]) {
    const keyless = await app.request(...send(stream, { id: "x" }, { origin: SHOP }));
    assert.equal(keyless.status, 401, stream);
    await keyless.body?.cancel();
  }
});

Deno.test("beacons: a text/plain body holding JSON is read for publishable keys only, in UTF-8 only", async () => {
  const { app, createKey, stats } = await setup();
  const pk = await createKey(PUBLISHABLE);
  const beacon = await app.request(
    ...send("pageviews", JSON.stringify([{ id: "a" }, { id: "b" }]), {
      query: pk.key,
      origin: SHOP,
      type: "text/plain;charset=UTF-8",
    }),
  );
  assert.equal(beacon.status, 202);
  assert.equal((await beacon.json()).accepted, 2);
  const secret = await app.request(
    ...send("pageviews", JSON.stringify({ id: "c" }), { key: KEYS.ingest, type: "text/plain" }),
  );
  assert.equal(secret.status, 415);
  assert.equal(
    (await secret.json()).error.message,
    "Content-Type must be application/json, application/x-ndjson or application/ndjson, got 'text/plain'",
  );
  // With a publishable key the 415 names text/plain too.
  const html = await app.request(
    ...send("pageviews", JSON.stringify({ id: "h" }), {
      query: pk.key,
      origin: SHOP,
      type: "text/html",
    }),
  );
  assert.equal(html.status, 415);
  assert.equal(
    (await html.json()).error.message,
    "Content-Type must be application/json, application/x-ndjson, application/ndjson or text/plain (JSON), got 'text/html'",
  );
  for (const charset of ["iso-8859-1", "utf-16"]) {
    const other = await app.request(
      ...send("pageviews", JSON.stringify({ id: "d" }), {
        query: pk.key,
        origin: SHOP,
        type: `text/plain; charset=${charset}`,
      }),
    );
    assert.equal(other.status, 415, charset);
    const error = (await other.json()).error;
    assert.equal(error.code, "unsupported_media_type");
    assert.match(error.message, new RegExp(`charset must be utf-8, got '${charset}'`));
  }
  assert.equal((await stats("pageviews")).accepted, 2);
});

Deno.test("beacons in open mode: a text/plain body holding JSON is read, as no key can be publishable there", async () => {
  const { app, stats } = await openSetup();
  // The SDK's beacon from a page of the server's own origin and from one the stream lists; before,
  // both were 415 (text/plain only for publishable keys, which open mode cannot make), so what a
  // page left by beacon was lost.
  for (
    const [stream, origin] of [["pageviews", "http://localhost"], [
      "listed",
      "https://docs.example",
    ]]
  ) {
    const res = await app.request(
      ...send(stream, [{ id: "a" }, { id: "b" }], {
        host: "localhost",
        query: "pk_dev",
        origin,
        type: "text/plain;charset=UTF-8",
      }),
    );
    assert.equal(res.status, 202, await res.clone().text());
    assert.equal((await res.json()).accepted, 2);
    assert.equal(res.headers.get("Access-Control-Allow-Origin"), origin);
  }
  // Refused origins still are, before the body is read.
  const foreign = await app.request(
    ...send("pageviews", { id: "c" }, { host: "localhost", origin: OTHER, type: "text/plain" }),
  );
  assert.equal(foreign.status, 403);
  await foreign.body?.cancel();
  assert.equal((await stats("pageviews")).accepted, 2);
  assert.equal((await stats("listed")).accepted, 2);
});

Deno.test("beacons in open mode: a text/plain body without an Origin is 415 (a browser may leave it off a cross-site text/plain form), and a charset other than UTF-8 is 415; nothing is applied", async () => {
  const { app, stats } = await openSetup();
  const beacon = (options: { type: string; origin?: string }) =>
    app.request(...send("pageviews", [{ id: "a" }], { host: "localhost", ...options }));
  // A request without an Origin passes the Origin rules: text/plain is not read as JSON for it.
  const bare = await beacon({ type: "text/plain" });
  assert.equal(bare.status, 415);
  const refusal = (await bare.json()).error;
  assert.equal(refusal.code, "unsupported_media_type");
  assert.equal(
    refusal.message,
    "Content-Type must be application/json, application/x-ndjson, application/ndjson or text/plain (JSON) with an Origin, got 'text/plain'",
  );
  for (const charset of ["iso-8859-1", "utf-16"]) {
    const other = await beacon({
      type: `text/plain; charset=${charset}`,
      origin: "http://localhost",
    });
    assert.equal(other.status, 415);
    assert.equal(
      (await other.json()).error.message,
      `Bodies are read as UTF-8: Content-Type charset must be utf-8, got '${charset}'`,
    );
  }
  // JSON without an Origin is taken as before (a script, curl).
  assert.equal((await beacon({ type: "application/json" })).status, 202);
  assert.equal((await stats("pageviews")).accepted, 1);
});

Deno.test("a secret key is refused in ?key=, as URLs reach logs", async () => {
  const { app, createKey } = await setup();
  const sk = await createKey({ scopes: ["ingest"] });
  const res = await app.request(...send("pageviews", { id: "a" }, { query: sk.key }));
  assert.equal(res.status, 401);
  assert.match(
    (await res.json()).error.message,
    /Only publishable keys \(pk_…\) may be sent as '\?key='/,
  );
});

Deno.test("a stream's limit answers 429 with Retry-After and RateLimit headers, refuses a request whole and counts none of it", async () => {
  const { app, stats } = await setup();
  const three = [{}, {}, {}];
  const admitted = await app.request(...send("limited", three, { key: KEYS.ingest }));
  assert.equal(admitted.status, 202);
  // Only a refusal carries the rate limit's header fields.
  assert.equal(admitted.headers.get("RateLimit"), null);
  const res = await app.request(...send("limited", three, { key: KEYS.ingest }));
  assert.equal(res.status, 429);
  // One token left, three needed: two more refill at 2 per second.
  assert.equal(res.headers.get("Retry-After"), "1");
  assert.equal(res.headers.get("RateLimit-Policy"), '"stream";q=4;w=2');
  assert.equal(res.headers.get("RateLimit"), '"stream";r=1;t=1');
  const body = await res.json();
  assert.equal(body.error.code, "rate_limited");
  assert.equal(
    body.error.message,
    "Rate limit of stream 'limited' (2 events/s, burst 4) reached: it holds 1 event now, fewer than this request's 3; the request was refused whole (nothing applied): retry in 1000 ms",
  );
  assert.equal((await app.request(...send("limited", [{}], { key: KEYS.ingest }))).status, 202);
  const counted = await stats("limited");
  assert.deepEqual([counted.accepted, counted.applied], [4, 4]);
});

Deno.test("a request larger than the burst is refused with 413 too_many_events, the burst in its details", async () => {
  const { app, stats } = await setup();
  const res = await app.request(...send("limited", [{}, {}, {}, {}, {}], { key: KEYS.ingest }));
  // No wait makes it fit: no 429 and no Retry-After, which a client would wait for and resend.
  assert.equal(res.status, 413);
  assert.equal(res.headers.get("Retry-After"), null);
  const { error } = await res.json();
  assert.equal(error.code, "too_many_events");
  assert.deepEqual(error.details, { maxEvents: 4 });
  assert.match(
    error.message,
    /this request's 5 events are more than its burst of 4, so it can never fit \(nothing applied\): send at most 4 events per request/,
  );
  assert.equal((await stats("limited")).accepted, 0);
});

Deno.test("a request past a key's burst is 413 although the stream's bucket is the one that lacks tokens longest", async () => {
  const { app, createKey } = await setup();
  const limited = await createKey({
    scopes: ["ingest"],
    rateLimit: { eventsPerSecond: 1, burst: 2 },
  });
  assert.equal(
    (await app.request(...send("limited", [{}, {}, {}, {}], { key: KEYS.ingest }))).status,
    202,
  );
  const res = await app.request(...send("limited", [{}, {}, {}], { key: limited.key }));
  assert.equal(res.status, 413);
  const { error } = await res.json();
  assert.deepEqual([error.code, error.details], ["too_many_events", { maxEvents: 2 }]);
  assert.match(
    error.message,
    /^Rate limit of key '[^']+' on stream 'limited' \(1 events\/s, burst 2\)/,
  );
});

Deno.test("a key's rate limit is counted per stream, beside the stream's own", async () => {
  const { app, createKey } = await setup();
  const pk = await createKey({ ...PUBLISHABLE, rateLimit: { eventsPerSecond: 1, burst: 2 } });
  const twice = () => [{ id: crypto.randomUUID() }, { id: crypto.randomUUID() }];
  assert.equal((await app.request(...send("pageviews", twice(), { query: pk.key }))).status, 202);
  const res = await app.request(...send("pageviews", twice(), { query: pk.key }));
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("RateLimit-Policy"), '"key";q=2;w=2');
  assert.equal(res.headers.get("RateLimit"), '"key";r=0;t=2');
  assert.match(
    (await res.json()).error.message,
    new RegExp(`key '${pk.id}' on stream 'pageviews'`),
  );
  // A page on the key's origin can read the refusal and its Retry-After.
  const fromPage = await app.request(
    ...send("pageviews", twice(), { query: pk.key, origin: SHOP }),
  );
  assert.equal(fromPage.status, 429);
  assert.equal(fromPage.headers.get("Access-Control-Allow-Origin"), SHOP);
  assert.match(fromPage.headers.get("Access-Control-Expose-Headers")!, /Retry-After/);
  // Another stream has its own bucket for the key.
  assert.equal((await app.request(...send("limited", [{}, {}], { query: pk.key }))).status, 202);
  // Other keys are not limited by it.
  assert.equal(
    (await app.request(...send("pageviews", twice(), { key: KEYS.ingest }))).status,
    202,
  );
});

Deno.test("a stream created at run time on another instance takes preflights, origins and its limit at once", async () => {
  // Two instances sharing one store and its definitions; B never polled.
  const definitions = new MemoryDefinitionStore();
  const store = new MemoryStore({ now: () => NOW, definitions });
  const instance = async () => {
    const keys = await KeyRing.parse(`admin:${KEYS.admin},ingest:${KEYS.ingest}`, {
      now: () => NOW,
    });
    const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
    return createApp({ streams, store, keys, now: () => NOW });
  };
  const [a, b] = [await instance(), await instance()];
  const created = await a.request("/v1/streams/signups", {
    method: "PUT",
    headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      origins: [SHOP],
      limits: { eventsPerSecond: 1, burst: 2 },
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    }),
  });
  assert.equal(created.status, 201, await created.clone().text());
  const preflight = await b.request("http://edge.example/v1/streams/signups/events", {
    method: "OPTIONS",
    headers: { Origin: SHOP, "Access-Control-Request-Method": "POST" },
  });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("Access-Control-Allow-Origin"), SHOP);
  const first = await b.request(...send("signups", [{}, {}], { key: KEYS.ingest, origin: SHOP }));
  assert.equal(first.status, 202, await first.clone().text());
  assert.equal(first.headers.get("Access-Control-Allow-Origin"), SHOP);
  const over = await b.request(...send("signups", [{}], { key: KEYS.ingest, origin: SHOP }));
  assert.equal(over.status, 429);
  assert.ok(over.headers.get("Retry-After"));
});

Deno.test("an Idempotency-Key is one per stream, whichever API key sends it", async () => {
  const { app, createKey } = await setup();
  const other = await createKey({ scopes: ["ingest"] });
  const post = (key: string, body: unknown) => {
    const [url, init] = send("limited", body, { key });
    return app.request(url, {
      ...init,
      headers: { ...init.headers as Record<string, string>, "Idempotency-Key": "order-1" },
    });
  };
  assert.equal((await post(KEYS.ingest, [{}])).status, 202);
  const replay = await post(other.key, [{}]);
  assert.equal(replay.status, 202);
  assert.equal(replay.headers.get("Idempotent-Replayed"), "true");
  assert.equal((await post(other.key, [{}, {}])).status, 422);
});

Deno.test("the README's 429: a stream of 500 events/s and burst 1000 holding 3 refuses a request of 10 with its headers, message and details.retryAfterMs", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const keys = await KeyRing.parse(`ingest:${KEYS.ingest}`, { now: () => NOW });
  const streams = compileConfig({
    streams: {
      orders: {
        limits: { eventsPerSecond: 500, burst: 1000 },
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  });
  const app = createApp({ streams, store, keys, now: () => NOW });
  const events = (n: number) => Array.from({ length: n }, () => ({}));
  assert.equal(
    (await app.request(...send("orders", events(997), { key: KEYS.ingest }))).status,
    202,
  );
  const res = await app.request(...send("orders", events(10), { key: KEYS.ingest }));
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("Retry-After"), "1");
  assert.equal(res.headers.get("RateLimit-Policy"), '"stream";q=1000;w=2');
  assert.equal(res.headers.get("RateLimit"), '"stream";r=3;t=1');
  const { error } = await res.json();
  assert.equal(error.code, "rate_limited");
  assert.equal(
    error.message,
    "Rate limit of stream 'orders' (500 events/s, burst 1000) reached: it holds 3 events now, fewer than this request's 10; the request was refused whole (nothing applied): retry in 14 ms",
  );
  // The wait in whole ms, machine-readable, as a WebSocket frame's.
  assert.deepEqual(error.details, { retryAfterMs: 14 });
});

Deno.test("when a stream's and a key's bucket both lack tokens, Retry-After is the longer wait and the headers name that bucket", async () => {
  const { app, createKey } = await setup();
  const key = await createKey({ scopes: ["ingest"], rateLimit: { eventsPerSecond: 1, burst: 2 } });
  // The key's bucket is empty (2 s to hold 2 again), the stream's too (1 s to hold 2).
  assert.equal((await app.request(...send("limited", [{}, {}], { key: key.key }))).status, 202);
  assert.equal((await app.request(...send("limited", [{}, {}], { key: KEYS.ingest }))).status, 202);
  const res = await app.request(...send("limited", [{}, {}], { key: key.key }));
  assert.equal(res.status, 429);
  assert.equal(res.headers.get("Retry-After"), "2");
  assert.equal(res.headers.get("RateLimit-Policy"), '"key";q=2;w=2');
  assert.equal(res.headers.get("RateLimit"), '"key";r=0;t=2');
  assert.match((await res.json()).error.message, /^Rate limit of key '[^']+' on stream 'limited'/);
});

Deno.test("a rate limit takes a token per accepted event: rejected events cost none", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const keys = await KeyRing.parse(`ingest:${KEYS.ingest}`, { now: () => NOW });
  const streams = compileConfig({
    streams: {
      limited: {
        schema: { type: "object", properties: { n: { type: "number" } } },
        limits: { eventsPerSecond: 2, burst: 4 },
        transform: [{ filter: "!has(event.skip)" }],
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  });
  const app = createApp({ streams, store, keys, now: () => NOW });
  // Three accepted (one of them filtered, which is still accepted) and three rejected: 3 tokens.
  const mixed = [{ n: 1 }, { n: "x" }, { n: 2 }, { n: "y" }, { skip: true }, { n: "z" }];
  const first = await app.request(...send("limited", mixed, { key: KEYS.ingest }));
  assert.equal(first.status, 202);
  const reply = await first.json();
  assert.deepEqual([reply.accepted, reply.filtered, reply.rejected.length], [3, 1, 3]);
  // One token left: one more event fits, a second is refused.
  assert.equal(
    (await app.request(...send("limited", [{ n: 3 }], { key: KEYS.ingest }))).status,
    202,
  );
  const refused = await app.request(...send("limited", [{ n: 4 }], { key: KEYS.ingest }));
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get("RateLimit"), '"stream";r=0;t=1');
});

Deno.test("an ingest POST from a page to a stream name that is no name is the name check's 400, which the page reads, not a 403 telling to list its origin", async () => {
  const { app, createKey } = await setup();
  const shopKey = await createKey({ scopes: ["ingest"], origins: [SHOP] });
  const pk = await createKey(PUBLISHABLE);
  for (const name of ["a.b", "a%20b", "x".repeat(65)]) {
    // From an origin the key lists, one it does not, and with a publishable key: the key is
    // verified, then the name refused (it tells nothing about any stream).
    for (
      const [options, origin] of [
        [{ key: shopKey.key, origin: SHOP }, SHOP],
        [{ key: shopKey.key, origin: OTHER }, OTHER],
        [{ query: pk.key, origin: SHOP }, SHOP],
        [{ key: KEYS.ingest, origin: SHOP }, SHOP],
      ] as const
    ) {
      const res = await app.request(...send(name, { id: "a" }, options));
      assert.equal(res.status, 400, `${name} ${JSON.stringify(options)}`);
      const { error } = await res.json();
      assert.equal(error.code, "invalid_request");
      assert.match(error.message, /^Invalid path parameter stream: Names are 1-64 characters/);
      assert.equal(res.headers.get("Access-Control-Allow-Origin"), origin);
    }
    // Without a key: 401, as for a name.
    const keyless = await app.request(...send(name, { id: "a" }, { origin: SHOP }));
    assert.equal(keyless.status, 401);
    await keyless.body?.cancel();
  }
  // Open mode: the same 400 from a page on another origin.
  const open = createApp({
    streams: compileConfig(CONFIG),
    store: new MemoryStore({ now: () => NOW }),
    keys: await KeyRing.parse(""),
    now: () => NOW,
  });
  const res = await open.request("http://localhost/v1/streams/a.b/events", {
    method: "POST",
    headers: { "Content-Type": "application/json", Origin: SHOP },
    body: "{}",
  });
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.code, "invalid_request");
});

Deno.test("the README's ingest CORS says a POST to a stream name that is no name is 400 from any origin, never a 403 telling to list the origin", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(
    readme.indexOf("### Browsers: CORS, beacons and `/sdk.js`"),
    readme.indexOf("- **Beacons.**"),
  ).replace(/\s+/g, " ");
  assert.match(
    section,
    /a POST to a stream name that is not a name at all is a `400` \(`invalid_request`\) from any origin once its key is verified \(a `401` before\), never a `403` telling to list the origin/,
  );
  assert.match(
    section,
    /answers a stream that exists, one that does not and a stream name that is not a name at all alike/,
  );
  assert.match(section, /a repeated query's `400`, a stream name's `400`, a `401`/);
});

Deno.test("a publishable key sends only from its own origins: one the stream or EDGESTREAM_ALLOWED_ORIGINS lists is 403 for it, as the README says", async () => {
  const { app, createKey, stats } = await setup({ allowedOrigins: [OTHER] });
  const pk = await createKey({ type: "publishable", streams: ["listed"], origins: [SHOP] });
  for (const origin of ["https://docs.example", OTHER]) {
    const res = await app.request(
      ...send("listed", {}, { query: pk.key, origin, type: "text/plain" }),
    );
    assert.equal(res.status, 403, origin);
    assert.equal((await res.json()).error.code, "origin_not_allowed");
  }
  // A secret key with no origins of its own is admitted there by the stream's origins.
  const byStream = await app.request(
    ...send("listed", {}, { key: KEYS.ingest, origin: "https://docs.example" }),
  );
  assert.equal(byStream.status, 202);
  assert.equal((await stats("listed")).accepted, 1);
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(
    readme.indexOf("### Browsers: CORS, beacons and `/sdk.js`"),
    readme.indexOf("- **CORS.**"),
  ).replace(/\s+/g, " ");
  assert.match(
    section,
    /but with a publishable key only from the key's own `origins`: one the stream lists and the key does not is `403 origin_not_allowed`/,
  );
});

Deno.test("an ingest POST with a Content-Length from a page to a stream name that is no name is the name check's 400, not a 403 telling to list its origin", async () => {
  // Browsers send a Content-Length: the body is then not read again before the route, unlike
  // an in-process request without one.
  const { app } = await setup();
  for (const name of ["a.b", "a%20b"]) {
    const body = JSON.stringify({ id: "a" });
    const [url, init] = send(name, body, { key: KEYS.ingest, origin: OTHER });
    const request = new Request(url, init);
    request.headers.set("Content-Length", String(body.length));
    const res = await app.request(request);
    assert.equal(res.status, 400, name);
    assert.equal((await res.json()).error.code, "invalid_request");
    assert.equal(res.headers.get("Access-Control-Allow-Origin"), OTHER);
  }
});

Deno.test("an ingest POST over 1 MiB to a stream name that is no name is its key's 401 or the name's 400, from a page on any origin, its body unread", async () => {
  // Such a request reaches the app's middleware chain, whose body limit answered 413 before the
  // key or the origin was judged, having read a body without Content-Length.
  const { app } = await setup();
  const large = JSON.stringify({ id: "a", pad: "x".repeat(1_100_000) });
  for (
    const [options, status, code] of [
      [{ key: KEYS.ingest, origin: OTHER }, 400, "invalid_request"],
      [{ key: KEYS.ingest }, 400, "invalid_request"],
      [{ origin: OTHER }, 401, "unauthorized"],
      [{ key: "not-a-key-0123456789", origin: OTHER }, 401, "unauthorized"],
    ] as const
  ) {
    const [url, init] = send("a.b", large, options);
    const request = new Request(url, init);
    request.headers.set("Content-Length", String(large.length));
    const res = await app.request(request);
    assert.equal(res.status, status, JSON.stringify(options));
    assert.equal((await res.json()).error.code, code);
    if ("origin" in options) assert.equal(res.headers.get("Access-Control-Allow-Origin"), OTHER);
    // Without Content-Length (chunked): not a byte of it is read.
    let pulled = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulled += 1;
        controller.enqueue(new TextEncoder().encode(large.slice(0, 65536)));
        if (pulled === 20) controller.close();
      },
    }, { highWaterMark: 0 });
    const chunked = await app.request(url, { ...init, body, duplex: "half" } as RequestInit);
    assert.equal(chunked.status, status, `chunked ${JSON.stringify(options)}`);
    await chunked.body?.cancel();
    assert.equal(pulled, 0, `chunked ${JSON.stringify(options)}`);
  }
});

Deno.test("a 429 states a key's rate as it was given and its refill time in whole seconds, without the rounding error of burst × 1000 / rate (6.999999999999999 events/s; w=31 for 30 s)", async () => {
  const { app, createKey } = await setup();
  const events = (n: number) => Array.from({ length: n }, () => ({}));
  const seven = await createKey({
    scopes: ["ingest"],
    rateLimit: { eventsPerSecond: 7, burst: 10 },
  });
  assert.equal(
    (await app.request(...send("pageviews", events(10), { key: seven.key }))).status,
    202,
  );
  const refused = await app.request(...send("pageviews", events(1), { key: seven.key }));
  assert.equal(refused.status, 429);
  assert.equal(refused.headers.get("RateLimit-Policy"), '"key";q=10;w=2');
  assert.match(
    (await refused.json()).error.message,
    /^Rate limit of key '[^']+' on stream 'pageviews' \(7 events\/s, burst 10\) reached/,
  );
  const slow = await createKey({
    scopes: ["ingest"],
    rateLimit: { eventsPerSecond: 0.7, burst: 21 },
  });
  assert.equal(
    (await app.request(...send("pageviews", events(21), { key: slow.key }))).status,
    202,
  );
  const again = await app.request(...send("pageviews", events(1), { key: slow.key }));
  assert.equal(again.status, 429);
  // 21 events at 0.7 a second: the bucket refills from empty in 30 s.
  assert.equal(again.headers.get("RateLimit-Policy"), '"key";q=21;w=30');
  assert.match((await again.json()).error.message, /\(0\.7 events\/s, burst 21\)/);
  const tooMany = await app.request(...send("pageviews", events(11), { key: seven.key }));
  assert.equal(tooMany.status, 413);
  assert.match((await tooMany.json()).error.message, /\(7 events\/s, burst 10\)/);
});
