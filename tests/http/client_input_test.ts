/**
 * What a request's log line and its error message quote of client input (the path, names): within
 * bounds, whatever the client sent; a name that is no name gets one answer, in one wording, from
 * every route and whichever key sent it.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { MAX_QUOTED_CHARACTERS, quoteInput } from "../../src/telemetry/logging.ts";
import { keyedApp, KEYS, NOW, TEST_CONFIG } from "../_fixtures.ts";
import { jsonLines, writtenLogs } from "../_logs.ts";

/** An app with keys on, and two keys it created limited to `orders`. */
async function limitedKeys() {
  const { app, createKey } = await keyedApp();
  return {
    app,
    limitedRead: (await createKey({ scopes: ["read", "ingest"], streams: ["orders"] })).key,
    limitedAdmin: (await createKey({ scopes: ["admin"], streams: ["orders"] })).key,
  };
}

const NAME_WORDS = "Names are 1-64 characters of letters, digits, '_' and '-', got ";

Deno.test("quoteInput() keeps short text whole and cuts long text to its first characters and its length", () => {
  assert.equal(quoteInput("orders"), "orders");
  const exact = "a".repeat(MAX_QUOTED_CHARACTERS);
  assert.equal(quoteInput(exact), exact);
  assert.equal(
    quoteInput("a".repeat(60_000)),
    `${"a".repeat(MAX_QUOTED_CHARACTERS)}… (60000 characters)`,
  );
  assert.equal(quoteInput("abcdef", 3), "abc… (6 characters)");
  // Characters are code points: an emoji is one (two UTF-16 code units), never cut in half.
  assert.equal(quoteInput("ab😀cd", 3), "ab😀… (5 characters)");
  assert.equal(quoteInput("ab😀", 3), "ab😀");
  const emoji = "😀".repeat(MAX_QUOTED_CHARACTERS);
  assert.equal(quoteInput(emoji), emoji);
  assert.equal(quoteInput(`${emoji}😀x`), `${emoji}… (258 characters)`);
  // A lone surrogate is a character of its own.
  assert.equal(quoteInput("\uDC00\uD800\uD800\uDC00x", 2), "\uDC00\uD800… (4 characters)");
});

Deno.test("a 60,000-character path is quoted within bounds in the log line and in the error message, with every kind of key", async () => {
  const { app, limitedRead } = await limitedKeys();
  const name = "a".repeat(60_000);
  const path = `/v1/streams/${name}/counters/x`;
  await writtenLogs(async (lines) => {
    for (const key of [undefined, KEYS.admin, limitedRead]) {
      const res = await app.request(path, {
        headers: key ? { Authorization: `Bearer ${key}` } : {},
      });
      const text = await res.text();
      assert.ok(res.status === 401 || res.status === 400, `${res.status} ${text.slice(0, 200)}`);
      assert.ok(text.length < 1_000, `reply of ${text.length} characters`);
    }
    const http = jsonLines(lines, "edgestream.http");
    assert.equal(http.length, 3);
    for (const line of http) {
      const written = JSON.stringify(line);
      assert.ok(written.length < 2_500, `line of ${written.length} characters`);
      assert.equal(line.path, `/v1/streams/${"a".repeat(244)}… (60023 characters)`);
      assert.equal(line.stream, `${"a".repeat(MAX_QUOTED_CHARACTERS)}… (60000 characters)`);
      assert.match(String(line.message), /^GET \/v1\/streams\/a+… \(60023 characters\) 40[01] /);
    }
  });
});

Deno.test("a path that names no stream is the same 400 for a key limited to streams as for an admin key, before the 403 of its streams", async () => {
  const { app, limitedRead, limitedAdmin } = await limitedKeys();
  const cases: Array<[string, string, string]> = [
    ["GET", "/v1/streams/a%0d%0ab/counters/x", KEYS.admin],
    ["GET", "/v1/streams/a%0d%0ab/counters/x", limitedRead],
    ["GET", "/v1/streams/a%0d%0ab", limitedRead],
    ["GET", "/v1/streams/a%0d%0ab/counters/x/current", limitedRead],
    ["GET", "/v1/streams/a%0d%0ab/counters/x/current", KEYS.admin],
    ["DELETE", "/v1/streams/a%0d%0ab", limitedAdmin],
    ["DELETE", "/v1/streams/a%0d%0ab", KEYS.admin],
    ["PUT", "/v1/streams/a%0d%0ab", limitedAdmin],
    ["PUT", "/v1/streams/a%0d%0ab", KEYS.admin],
    ["POST", "/v1/streams/a%0d%0ab/events", limitedRead],
    ["POST", "/v1/streams/a%0d%0ab/events", KEYS.admin],
    ["GET", "/v1/streams/a%0d%0ab/subscribe", limitedRead],
  ];
  for (const [method, path, key] of cases) {
    const res = await app.request(path, {
      method,
      headers: {
        Authorization: `Bearer ${key}`,
        "Content-Type": "application/json",
        Accept: "text/event-stream",
      },
      body: method === "GET" ? undefined : "{}",
    });
    const body = await res.json();
    assert.equal(res.status, 400, `${method} ${path}: ${JSON.stringify(body)}`);
    assert.equal(body.error.code, "invalid_request", `${method} ${path}`);
    assert.equal(
      body.error.message,
      `Invalid path parameter stream: ${NAME_WORDS}'a\r\nb'`,
      `${method} ${path}`,
    );
  }
  // A name that is one, of another stream, is still the key's 403.
  const other = await app.request("/v1/streams/open/counters/x", {
    headers: { Authorization: `Bearer ${limitedRead}` },
  });
  assert.equal(other.status, 403);
  assert.match((await other.json()).error.message, /limited to streams orders: not 'open'/);
});

Deno.test("a path no route serves is the same 404, or 405 naming its methods, for every key, whatever stream it names", async () => {
  const { app, limitedRead, limitedAdmin } = await limitedKeys();
  const unlimited = await app.request("/v1/keys", {
    method: "POST",
    headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
    body: JSON.stringify({ scopes: ["read", "ingest"] }),
  });
  const everyKey = [KEYS.admin, (await unlimited.json()).key, limitedRead, limitedAdmin];
  const cases: Array<[string, string, number, string?]> = [];
  // A name that is none, one of another stream, and the limited keys' own.
  for (const name of ["a%0d%0ab", "open", "orders"]) {
    cases.push(
      ["GET", `/v1/streams/${name}/counters/x/y`, 404],
      ["GET", `/v1/streams/${name}/counters`, 404],
      ["POST", `/v1/streams/${name}/ws`, 405, "GET, HEAD"],
      ["POST", `/v1/streams/${name}/subscribe`, 405, "GET, HEAD"],
      ["DELETE", `/v1/streams/${name}/counters/x`, 405, "GET, HEAD"],
      ["PATCH", `/v1/streams/${name}`, 405, "DELETE, GET, HEAD, PUT"],
      ["GET", `/v1/streams/${name}/events`, 405, "POST"],
    );
  }
  for (const [method, path, status, allow] of cases) {
    for (const key of everyKey) {
      const res = await app.request(path, {
        method,
        headers: { Authorization: `Bearer ${key}` },
      });
      const body = await res.json();
      const what = `${method} ${path} (${key === KEYS.admin ? "admin" : key.slice(0, 8)})`;
      assert.equal(res.status, status, `${what}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, status === 404 ? "not_found" : "method_not_allowed", what);
      assert.equal(res.headers.get("Allow"), allow ?? null, what);
      // Nothing about the key: neither its streams nor the name check.
      assert.doesNotMatch(body.error.message, /limited|Names are/, what);
    }
  }
});

Deno.test("a bad counter name and a bad name in a key's streams are worded as a bad stream name", async () => {
  const { app } = await limitedKeys();
  const counter = await app.request("/v1/streams/orders/counters/a%20b", {
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  });
  assert.equal(counter.status, 400);
  assert.equal(
    (await counter.json()).error.message,
    `Invalid path parameter counter: ${NAME_WORDS}'a b'`,
  );
  const key = await app.request("/v1/keys", {
    method: "POST",
    headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
    body: JSON.stringify({ scopes: ["read"], streams: ["x".repeat(300)] }),
  });
  assert.equal(key.status, 400);
  assert.equal(
    (await key.json()).error.message,
    `Invalid request body streams[0]: ${NAME_WORDS}'${"x".repeat(256)}… (300 characters)'`,
  );
});

Deno.test("long headers and query values (Host, Origin, Content-Encoding, ?counter=, ?types=) are quoted within bounds in the error and its log line", async () => {
  const { app } = await limitedKeys();
  const openApp = createApp({
    streams: compileConfig(TEST_CONFIG),
    store: new MemoryStore({ now: () => NOW }),
    keys: await KeyRing.parse(""),
    now: () => NOW,
  });
  const long = "x".repeat(20_000);
  const admin = { Authorization: `Bearer ${KEYS.admin}` };
  const ingest = { ...admin, "Content-Type": "application/json" };
  const cases: [typeof app, string, RequestInit, number][] = [
    [openApp, "/v1/streams", { headers: { Host: `${long}.example` } }, 421],
    [openApp, "/v1/streams", { headers: { Host: `a, ${long}` } }, 421],
    [app, "/v1/streams/orders/events", {
      method: "POST",
      headers: { ...ingest, Origin: `https://${long}.example` },
      body: "{}",
    }, 403],
    [app, "/v1/streams/orders/events", {
      method: "POST",
      headers: { ...ingest, "Content-Encoding": long },
      body: "{}",
    }, 415],
    [app, `/v1/streams/orders/subscribe?counter=${long}`, {
      headers: { ...admin, Accept: "text/event-stream" },
    }, 400],
    [app, `/v1/streams/orders/subscribe?types=${long}`, {
      headers: { ...admin, Accept: "text/event-stream" },
    }, 400],
  ];
  await writtenLogs(async (lines) => {
    for (const [target, path, init, status] of cases) {
      const res = await target.request(path, init);
      const text = await res.text();
      assert.equal(res.status, status, `${path.slice(0, 60)}: ${text.slice(0, 200)}`);
      assert.ok(text.length < 1_000, `${path.slice(0, 60)}: reply of ${text.length} characters`);
      assert.match(text, /… \(\d+ characters\)/);
    }
    const http = jsonLines(lines, "edgestream.http");
    assert.equal(http.length, cases.length);
    for (const line of http) {
      const written = JSON.stringify(line);
      assert.ok(written.length < 2_500, `line of ${written.length} characters`);
    }
  });
});

Deno.test("a CEL expression that does not compile is quoted within bounds in its 400: a stream's PUT, a subscription's ?filter=", async () => {
  const { app } = await limitedKeys();
  const admin = { Authorization: `Bearer ${KEYS.admin}` };
  // 4,000 characters, within the expression limit, that do not compile (its end is cut off).
  const expression = `event.amount > ${"1 + ".repeat(996)}`;
  assert.equal(expression.length, 3_999);
  const quoted = `'${expression.slice(0, MAX_QUOTED_CHARACTERS)}… (3999 characters)'`;
  const put = await app.request("/v1/streams/bounded", {
    method: "PUT",
    headers: { ...admin, "Content-Type": "application/json" },
    body: JSON.stringify({ transform: [{ filter: expression }] }),
  });
  const subscribe = await app.request(
    `/v1/streams/orders/subscribe?filter=${encodeURIComponent(expression)}`,
    { headers: { ...admin, Accept: "text/event-stream" } },
  );
  for (const [what, res] of [["PUT", put], ["subscribe", subscribe]] as const) {
    const text = await res.text();
    assert.equal(res.status, 400, `${what}: ${text.slice(0, 300)}`);
    assert.ok(text.length < 1_000, `${what}: reply of ${text.length} characters`);
    const message: string = JSON.parse(text).error.message;
    assert.ok(message.includes(`Invalid expression ${quoted}: `), `${what}: ${message}`);
  }
});
