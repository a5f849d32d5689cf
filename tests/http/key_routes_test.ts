/** The run-time key routes (`/v1/keys`) and what created keys may do. */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { MemoryKeyStore } from "../../src/store/memory/key_store.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { keyedApp, KEYS, NOW, TEST_CONFIG, testApp } from "../_fixtures.ts";
import { apiErrorOf } from "../../src/http/errors.ts";
import { KeyConflictError, type KeyStore } from "../../src/store/keys.ts";
import { StoreUnavailableError } from "../../src/store/types.ts";
import { ADMIN_KEY, setup } from "../fanout/webhooks/_setup.ts";

function post(key: string, body: unknown, headers: Record<string, string> = {}) {
  return {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json", ...headers },
    body: JSON.stringify(body),
  };
}

const ORDER = { id: "o-1", country: "DE", amount: 5 };

Deno.test("/v1/keys is refused in open mode with a clear error, whatever the method", async () => {
  const app = createApp({
    streams: compileConfig(TEST_CONFIG),
    store: new MemoryStore(),
    keys: await KeyRing.parse(""),
  });
  for (
    const [method, path] of [
      ["POST", "/v1/keys"],
      ["GET", "/v1/keys"],
      ["GET", "/v1/keys/key_0123456789abcdef"],
      ["DELETE", "/v1/keys/key_0123456789abcdef"],
    ]
  ) {
    const res = await app.request(path, {
      method,
      headers: { "Content-Type": "application/json" },
      body: method === "POST" ? JSON.stringify({ scopes: ["ingest"] }) : undefined,
    });
    assert.equal(res.status, 403, `${method} ${path}`);
    const body = await res.json();
    assert.equal(body.error.code, "open_mode");
    assert.match(body.error.message, /open mode \(no EDGESTREAM_KEYS set\).*EDGESTREAM_KEYS=admin/);
  }
});

Deno.test("POST /v1/keys sends the key's secret with Cache-Control: no-store; reads of keys hold none", async () => {
  const { app } = await keyedApp();
  const res = await app.request("/v1/keys", post(KEYS.admin, { scopes: ["read"] }));
  assert.equal(res.status, 201, await res.clone().text());
  // The only answer that holds the secret: no cache (a proxy's, the browser's) may keep it.
  assert.equal(res.headers.get("Cache-Control"), "no-store");
  const { id, key } = await res.json();
  assert.match(key, /^sk_/);
  const auth = { headers: { Authorization: `Bearer ${KEYS.admin}` } };
  for (const path of ["/v1/keys", `/v1/keys/${id}`]) {
    const read = await app.request(path, auth);
    assert.equal(read.status, 200);
    assert.equal((await read.text()).includes(key), false, path);
  }
});

Deno.test("POST /v1/keys takes null, as a key's reply shows a field it lacks, as the field left out: a reply's fields can be sent back", async () => {
  const { app } = await keyedApp();
  const fields = { streams: null, origins: null, rateLimit: null, description: null };
  const res = await app.request(
    "/v1/keys",
    post(KEYS.admin, { scopes: ["read"], ...fields, expiresAt: null }),
  );
  assert.equal(res.status, 201, await res.clone().text());
  const created = await res.json();
  assert.deepEqual(
    { ...fields, expiresAt: null },
    {
      streams: created.streams,
      origins: created.origins,
      rateLimit: created.rateLimit,
      description: created.description,
      expiresAt: created.expiresAt,
    },
  );
  // A reply's own fields, sent back as they are, make a key like it.
  const { type, scopes, streams, origins, rateLimit, description, expiresAt } = created;
  const again = await app.request(
    "/v1/keys",
    post(KEYS.admin, { type, scopes, streams, origins, rateLimit, description, expiresAt }),
  );
  assert.equal(again.status, 201, await again.clone().text());
  // type and scopes, which a reply always shows, take no null (README): a 400 naming the field.
  for (const field of ["type", "scopes"]) {
    const refused = await app.request(
      "/v1/keys",
      post(KEYS.admin, { scopes: ["read"], [field]: null }),
    );
    assert.equal(refused.status, 400, field);
    const { error } = await refused.json();
    assert.equal(error.code, "invalid_request");
    assert.match(error.message, new RegExp(`^Invalid request body ${field}: `));
  }
});

Deno.test("the README's defaults of a key's type and scopes are what POST /v1/keys does: type secret, scopes only on a publishable key", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  assert.ok(
    readme.includes(
      'leave `type` out for `secret`; `scopes` has a default only on a publishable key, `["ingest"]`: a secret key without `scopes` is `400 invalid_key`, "A secret key needs \'scopes\', e.g. ["ingest"]"',
    ),
    "the README says which of type and scopes has a default",
  );
  const { app } = await keyedApp();
  const secret = await app.request("/v1/keys", post(KEYS.admin, { scopes: ["read"] }));
  assert.equal(secret.status, 201, await secret.clone().text());
  assert.equal((await secret.json()).type, "secret");
  const publishable = await app.request(
    "/v1/keys",
    post(KEYS.admin, {
      type: "publishable",
      streams: ["orders"],
      origins: ["https://shop.example"],
    }),
  );
  assert.equal(publishable.status, 201, await publishable.clone().text());
  assert.deepEqual((await publishable.json()).scopes, ["ingest"]);
  for (const body of [{}, { type: "secret" }, { streams: ["orders"] }]) {
    const refused = await app.request("/v1/keys", post(KEYS.admin, body));
    assert.equal(refused.status, 400, JSON.stringify(body));
    const { error } = await refused.json();
    assert.equal(error.code, "invalid_key");
    assert.match(error.message, /^A secret key needs 'scopes'/);
  }
});

Deno.test("POST /v1/keys shows the secret once and stores only its digest; the key then ingests", async () => {
  const { app, keyStore } = await keyedApp();
  const res = await app.request(
    "/v1/keys",
    post(KEYS.admin, { scopes: ["ingest"], description: "Backend" }),
  );
  assert.equal(res.status, 201);
  const created = await res.json();
  assert.match(created.key, /^sk_[A-Za-z0-9_-]{32}$/);
  assert.match(created.id, /^key_[0-9a-f]{16}$/);
  assert.equal(created.prefix, created.key.slice(0, 7));
  assert.deepEqual(
    { ...created, key: undefined, id: undefined, prefix: undefined },
    {
      type: "secret",
      scopes: ["ingest"],
      streams: null,
      origins: null,
      rateLimit: null,
      description: "Backend",
      expiresAt: null,
      expired: false,
      createdAt: new Date(NOW).toISOString(),
      key: undefined,
      id: undefined,
      prefix: undefined,
    },
  );
  // Neither the store nor a later read holds the secret.
  assert.ok(!JSON.stringify(await keyStore.listKeys()).includes(created.key));
  const listed = await (await app.request("/v1/keys", {
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  })).json();
  assert.equal(listed.keys.length, 1);
  assert.equal(listed.keys[0].key, undefined);
  const one = await app.request(`/v1/keys/${created.id}`, {
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  });
  assert.equal((await one.json()).id, created.id);
  const ingest = await app.request(
    "/v1/streams/orders/events",
    post(created.key, ORDER),
  );
  assert.equal(ingest.status, 202);
  // Ingest only: reading is refused.
  const read = await app.request("/v1/streams/orders", {
    headers: { Authorization: `Bearer ${created.key}` },
  });
  assert.equal(read.status, 403);
});

Deno.test("only admin keys manage keys; bad inputs are refused with 400 and change nothing", async () => {
  const { app, keyStore } = await keyedApp();
  const byIngest = await app.request("/v1/keys", post(KEYS.ingest, { scopes: ["ingest"] }));
  assert.equal(byIngest.status, 403);
  const cases: Array<[unknown, RegExp, string?]> = [
    [{}, /secret key needs 'scopes'/],
    [{ type: "publishable", origins: ["https://a.example"] }, /needs 'streams'/],
    [{ type: "publishable", streams: ["orders"] }, /needs 'origins'/],
    [
      {
        type: "publishable",
        scopes: ["read"],
        streams: ["orders"],
        origins: ["https://a.example"],
      },
      /may only ingest; got scopes read/,
    ],
    // Named by its path, as a stream definition's origins are (not as the setting
    // EDGESTREAM_ALLOWED_ORIGINS, "allowed origin", which a key's field is not).
    [
      { scopes: ["ingest"], origins: ["https://a.example/path"] },
      /^origins\[0\]: Origin 'https:\/\/a\.example\/path' must be http\(s\):\/\/host\[:port\] without path/,
    ],
    [
      { scopes: ["ingest"], origins: ["https://a.example", "*"] },
      /^origins\[1\]: Origin '\*' must/,
    ],
    [
      { scopes: ["ingest"], origins: ["https://*.example.com"] },
      /^origins\[0\]: Origin 'https:\/\/\*\.example\.com' must/,
    ],
    [{ scopes: ["ingest"], expiresAt: "2020-01-01T00:00:00Z" }, /is not in the future/],
    // ISO-8601 only, as README and the API document say: digits are no epoch milliseconds.
    [
      { scopes: ["ingest"], expiresAt: "4102444800000" },
      /^'expiresAt' is not an ISO-8601 time .*: 4102444800000$/,
    ],
    // A field of the wrong shape, refused by the schema rather than by the key's rules.
    [
      { scopes: ["ingest"], rateLimit: { eventsPerSecond: 0, burst: 1 } },
      /rateLimit/,
      "invalid_request",
    ],
    // Slower than one event in 1,000 s: its bucket's times outgrow integers (Redis refused
    // every ingest with the key with a 500).
    [
      { scopes: ["ingest"], rateLimit: { eventsPerSecond: 1e-15, burst: 1 } },
      /rateLimit\.eventsPerSecond/,
      "invalid_request",
    ],
  ];
  for (const [input, message, code = "invalid_key"] of cases) {
    const res = await app.request("/v1/keys", post(KEYS.admin, input));
    assert.equal(res.status, 400, JSON.stringify(input));
    const { error } = await res.json();
    assert.match(error.message, message);
    assert.equal(error.code, code, JSON.stringify(input));
  }
  assert.deepEqual(await keyStore.listKeys(), []);
  // Credentials in a refused origin are not repeated in the reply (nor its log line).
  {
    const res = await app.request(
      "/v1/keys",
      post(KEYS.admin, { scopes: ["read"], origins: ["https://ops:hunter2@app.example.com"] }),
    );
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(
      error.message,
      "origins[0]: Origin 'https://[REDACTED]@app.example.com' must be http(s)://host[:port] without path, e.g. 'https://app.example.com'",
    );
  }
  // 1e400 parses as Infinity: a number out of range, not "none" (it was handed on as null, so a
  // key for every stream that never expires was made).
  for (const field of ["streams", "expiresAt"]) {
    const res = await app.request("/v1/keys", {
      ...post(KEYS.admin, {}),
      body: `{"scopes": ["read"], "${field}": 1e400}`,
    });
    assert.equal(res.status, 400, field);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_request");
    assert.match(error.message, new RegExp(`^Invalid request body ${field}: .*received Infinity$`));
  }
  assert.deepEqual(await keyStore.listKeys(), []);
});

Deno.test("a key's expiresAt is at most the last millisecond of the year 9999, as README says: a later one is 400 invalid_key (it was taken and shown back as +275760-…, no RFC 3339 time)", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  assert.ok(
    readme.includes(
      "in the future; at most `9999-12-31T23:59:59.999Z` (replies are RFC 3339, with four-digit years): a later one, or digits alone, as epoch milliseconds, are `400 invalid_key`",
    ),
  );
  const { app, keyStore } = await keyedApp();
  for (
    const expiresAt of [
      "+275760-09-13T00:00:00Z",
      "+010000-01-01T00:00:00Z",
      // The millisecond after the last one allowed, written in the year 9999 with an offset.
      "9999-12-31T23:00:00.000-01:00",
    ]
  ) {
    const res = await app.request("/v1/keys", post(KEYS.admin, { scopes: ["read"], expiresAt }));
    assert.equal(res.status, 400, expiresAt);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_key");
    assert.match(
      error.message,
      /^'expiresAt' \+\d{6}-.* is after the year 9999 \(at most 9999-12-31T23:59:59\.999Z\)$/,
    );
  }
  assert.deepEqual(await keyStore.listKeys(), []);
  // The last millisecond of 9999, written in ISO 8601's expanded form too, is taken, and shown back
  // with four digits of year.
  for (const expiresAt of ["9999-12-31T23:59:59.999Z", "+009999-12-31T23:59:59.999Z"]) {
    const res = await app.request("/v1/keys", post(KEYS.admin, { scopes: ["read"], expiresAt }));
    assert.equal(res.status, 201, await res.clone().text());
    assert.equal((await res.json()).expiresAt, "9999-12-31T23:59:59.999Z");
  }
});

Deno.test("DELETE /v1/keys/{id} revokes a key on this instance at once; a second delete is 404", async () => {
  const { app } = await keyedApp();
  const created = await (await app.request(
    "/v1/keys",
    post(KEYS.admin, { scopes: ["ingest"] }),
  )).json();
  assert.equal(
    (await app.request("/v1/streams/orders/events", post(created.key, ORDER))).status,
    202,
  );
  const del = await app.request(`/v1/keys/${created.id}`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  });
  assert.equal(del.status, 204);
  const after = await app.request(
    "/v1/streams/orders/events",
    post(created.key, { ...ORDER, id: "o-2" }),
  );
  assert.equal(after.status, 401);
  const again = await app.request(`/v1/keys/${created.id}`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  });
  assert.equal(again.status, 404);
  assert.equal((await again.json()).error.code, "key_not_found");
});

Deno.test("DELETE /v1/keys/{id} answered 404 (deleted through another instance, or by a try answered 503) leaves the key refused on this instance at once, not cached valid", async () => {
  const store = new MemoryKeyStore();
  let deleteFails = false;
  // A deletion the store applied whose answer was lost: 503 with outcome unknown.
  const flaky: KeyStore = {
    kind: store.kind,
    createKey: (record) => store.createKey(record),
    keyByHash: (hash) => store.keyByHash(hash),
    getKey: (id) => store.getKey(id),
    listKeys: () => store.listKeys(),
    pageKeys: (options) => store.pageKeys(options),
    deleteKey: async (id) => {
      const deleted = await store.deleteKey(id);
      if (deleteFails) throw new StoreUnavailableError("Redis did not answer in time");
      return deleted;
    },
  };
  const instance = async (keyStore: KeyStore) => {
    const keys = await KeyRing.parse(`admin:${KEYS.admin}`, { store: keyStore, now: () => NOW });
    return createApp({
      streams: compileConfig(TEST_CONFIG),
      store: new MemoryStore({ now: () => NOW }),
      keys,
      now: () => NOW,
    });
  };
  const [a, b] = [await instance(store), await instance(flaky)];
  const remove = (app: typeof a, id: string) =>
    app.request(`/v1/keys/${id}`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${KEYS.admin}` },
    });
  const ingestWith = (app: typeof a, key: string, id: string) =>
    app.request("/v1/streams/orders/events", post(key, { ...ORDER, id }));
  // Deleted through instance a while b holds the key's verdict: b's DELETE says it is gone.
  const first = await (await a.request("/v1/keys", post(KEYS.admin, { scopes: ["ingest"] })))
    .json();
  assert.equal((await ingestWith(b, first.key, "o-1")).status, 202);
  assert.equal((await remove(a, first.id)).status, 204);
  const gone = await remove(b, first.id);
  assert.equal(gone.status, 404);
  assert.equal((await gone.json()).error.code, "key_not_found");
  assert.equal((await ingestWith(b, first.key, "o-2")).status, 401);
  // Deleted through b by a call answered 503 (outcome unknown), then its retry's 404.
  const second = await (await b.request("/v1/keys", post(KEYS.admin, { scopes: ["ingest"] })))
    .json();
  assert.equal((await ingestWith(b, second.key, "o-3")).status, 202);
  deleteFails = true;
  const lost = await remove(b, second.id);
  assert.equal(lost.status, 503);
  assert.equal((await lost.json()).error.details.outcome, "unknown");
  assert.equal((await ingestWith(b, second.key, "o-4")).status, 401);
  deleteFails = false;
  assert.equal((await remove(b, second.id)).status, 404);
  assert.equal((await ingestWith(b, second.key, "o-5")).status, 401);
});

Deno.test("DELETE /v1/keys/{id} answered 503 not_applied (Redis BUSY) leaves the key working: the instance drops its verdicts and checks the key anew", async () => {
  const store = new MemoryKeyStore();
  let lookups = 0;
  const busy: KeyStore = {
    kind: store.kind,
    createKey: (record) => store.createKey(record),
    keyByHash: (hash) => {
      lookups++;
      return store.keyByHash(hash);
    },
    getKey: (id) => store.getKey(id),
    listKeys: () => store.listKeys(),
    pageKeys: (options) => store.pageKeys(options),
    deleteKey: () =>
      Promise.reject(
        new StoreUnavailableError("BUSY Redis is busy running a script", {
          outcome: "not_applied",
        }),
      ),
  };
  const keys = await KeyRing.parse(`admin:${KEYS.admin}`, { store: busy, now: () => NOW });
  const app = createApp({
    streams: compileConfig(TEST_CONFIG),
    store: new MemoryStore({ now: () => NOW }),
    keys,
    now: () => NOW,
  });
  const created = await (await app.request("/v1/keys", post(KEYS.admin, { scopes: ["ingest"] })))
    .json();
  const ingest = (id: string) =>
    app.request("/v1/streams/orders/events", post(created.key, { ...ORDER, id }));
  assert.equal((await ingest("o-1")).status, 202);
  const looked = lookups;
  const refused = await app.request(`/v1/keys/${created.id}`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  });
  assert.equal(refused.status, 503);
  assert.equal((await refused.json()).error.details.outcome, "not_applied");
  // Not refused: the key exists still, looked up again since its cached verdict was dropped.
  assert.equal((await ingest("o-2")).status, 202);
  assert.equal(lookups, looked + 1);
});

Deno.test("a key limited to streams uses only those, lists only those, and no other route that names none", async () => {
  const { app } = await keyedApp();
  const created = await (await app.request(
    "/v1/keys",
    post(KEYS.admin, { scopes: ["ingest", "read"], streams: ["open"] }),
  )).json();
  assert.equal(
    (await app.request("/v1/streams/open/events", post(created.key, {}))).status,
    202,
  );
  const other = await app.request("/v1/streams/orders/events", post(created.key, ORDER));
  assert.equal(other.status, 403);
  assert.match((await other.json()).error.message, /limited to streams open: not 'orders'/);
  const get = (path: string) =>
    app.request(path, { headers: { Authorization: `Bearer ${created.key}` } });
  assert.equal((await get("/v1/streams/open")).status, 200);
  assert.equal((await get("/v1/streams/orders")).status, 403);
  // GET /v1/streams (the dashboard's first read) answers only the key's streams.
  const listed = await get("/v1/streams");
  assert.equal(listed.status, 200);
  assert.deepEqual((await listed.json()).streams.map((s: { name: string }) => s.name), ["open"]);
  // Other routes that name no stream still refuse a key limited to streams, even an admin one.
  const admin = await (await app.request(
    "/v1/keys",
    post(KEYS.admin, { scopes: ["admin"], streams: ["open"] }),
  )).json();
  for (
    const [method, path] of [["GET", "/v1/keys"], ["POST", "/v1/admin/sweep"], [
      "GET",
      "/v1/streams",
    ]]
  ) {
    const res = await app.request(path, {
      method,
      headers: { Authorization: `Bearer ${admin.key}` },
    });
    if (path === "/v1/streams") {
      assert.equal(res.status, 200);
      assert.deepEqual((await res.json()).streams.map((s: { name: string }) => s.name), ["open"]);
      continue;
    }
    assert.equal(res.status, 403, path);
    assert.match((await res.json()).error.message, /this route names no stream/, path);
  }
  // A key limited to a stream that is not served lists none.
  const none = await (await app.request(
    "/v1/keys",
    post(KEYS.admin, { scopes: ["read"], streams: ["later"] }),
  )).json();
  const empty = await app.request("/v1/streams", {
    headers: { Authorization: `Bearer ${none.key}` },
  });
  assert.equal(empty.status, 200);
  assert.deepEqual((await empty.json()).streams, []);
});

Deno.test("a key stops working at its expiresAt, and is then listed as expired", async () => {
  let now = NOW;
  const { app } = await keyedApp({ now: () => now });
  const created = await (await app.request(
    "/v1/keys",
    post(KEYS.admin, {
      scopes: ["ingest"],
      expiresAt: new Date(NOW + 60_000).toISOString(),
    }),
  )).json();
  assert.equal(created.expiresAt, new Date(NOW + 60_000).toISOString());
  assert.equal(
    (await app.request("/v1/streams/open/events", post(created.key, {}))).status,
    202,
  );
  assert.equal(created.expired, false);
  const read = async () =>
    (await app.request(`/v1/keys/${created.id}`, {
      headers: { Authorization: `Bearer ${KEYS.admin}` },
    })).json();
  assert.equal((await read()).expired, false);
  now = NOW + 60_000;
  const refused = await app.request("/v1/streams/open/events", post(created.key, {}));
  assert.equal(refused.status, 401);
  assert.equal(
    (await refused.json()).error.message,
    `API key '${created.id}' expired at ${new Date(NOW + 60_000).toISOString()}`,
  );
  assert.equal((await read()).expired, true);
  const listed = await (await app.request("/v1/keys", {
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  })).json();
  assert.deepEqual(listed.keys.map((key: { expired: boolean }) => key.expired), [true]);
});

Deno.test("a key id or hash clash from the key store is a 409 conflict from the one error table", () => {
  const api = apiErrorOf(new KeyConflictError("Key 'k1' exists already"));
  assert.equal(api?.status, 409);
  assert.equal(api?.code, "conflict");
  assert.equal(api?.message, "Key 'k1' exists already");
});

Deno.test("API bodies: bad JSON is invalid_json, not JSON is 415 saying so, and one over 1 MiB is 413 before it is read, on keys and webhooks", async () => {
  const { app, keyStore } = await keyedApp();
  const hooks = await setup({ auth: true });
  try {
    for (
      const [server, path, key] of [
        [app, "/v1/keys", KEYS.admin],
        [hooks.app, "/v1/webhooks", ADMIN_KEY],
      ] as const
    ) {
      const headers = { Authorization: `Bearer ${key}`, "Content-Type": "application/json" };
      const bad = await server.request(path, { method: "POST", headers, body: "{" });
      const badBody = await bad.json();
      assert.equal(bad.status, 400, path);
      assert.equal(badBody.error.code, "invalid_json", path);
      // The parser's reason, as ingest and a stream's PUT give it.
      assert.match(badBody.error.message, /^Body is not valid JSON: \S/, path);
      const plain = await server.request(path, {
        method: "POST",
        headers: { ...headers, "Content-Type": "text/plain" },
        body: "{}",
      });
      assert.equal(plain.status, 415, path);
      assert.deepEqual(
        (await plain.json()).error.message,
        "Content-Type must be application/json, got 'text/plain'",
      );

      // 1 MiB and one byte of JSON, with its length and streamed (no Content-Length).
      const big = JSON.stringify({ url: "x", description: "x".repeat(1024 * 1024 - 27) });
      assert.equal(big.length, 1024 * 1024 + 1);
      for (const body of [big, new Blob([big]).stream()]) {
        const res = await server.request(path, { method: "POST", headers, body });
        const reply = await res.json();
        assert.equal(res.status, 413, path);
        assert.equal(reply.error.code, "payload_too_large", path);
      }
    }
    // An endpoint needs a body: none is empty_body, as at ingest.
    for (const body of ["", " \n"]) {
      const empty = await hooks.app.request("/v1/webhooks", {
        method: "POST",
        headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": "application/json" },
        body,
      });
      assert.equal(empty.status, 400);
      assert.deepEqual((await empty.json()).error, {
        code: "empty_body",
        message: "Body is empty: send a JSON object",
        requestId: empty.headers.get("X-Request-Id"),
      });
    }
    assert.deepEqual(await keyStore.listKeys(), []);
    assert.deepEqual(await hooks.deliveries.listEndpoints(), []);
  } finally {
    await hooks.close();
  }
});

Deno.test("keys and webhooks take every form of application/json that ingest and a stream's PUT take, and refuse another charset as they do", async () => {
  const { app, keyStore } = await keyedApp();
  const hooks = await setup({ auth: true });
  try {
    const bodies = [
      [app, "/v1/keys", KEYS.admin, { scopes: ["read"] }],
      [hooks.app, "/v1/webhooks", ADMIN_KEY, { url: "http://127.0.0.1:9/hook" }],
    ] as const;
    for (const [server, path, key, body] of bodies) {
      for (
        const type of [
          "application/json ;charset=utf-8",
          "application/json;",
          "application/json; charset=UTF-8",
          "Application/JSON",
        ]
      ) {
        const res = await server.request(path, {
          method: "POST",
          headers: { Authorization: `Bearer ${key}`, "Content-Type": type },
          body: JSON.stringify(body),
        });
        assert.equal(res.status, 201, `${path} ${type}: ${await res.clone().text()}`);
        await res.body?.cancel();
      }
      const latin = await server.request(path, {
        method: "POST",
        headers: {
          Authorization: `Bearer ${key}`,
          "Content-Type": "application/json;charset=latin1",
        },
        body: JSON.stringify(body),
      });
      assert.equal(latin.status, 415, path);
      assert.match((await latin.json()).error.message, /charset must be utf-8, got 'latin1'/, path);
    }
    assert.equal((await keyStore.listKeys()).length, 4);
    assert.equal((await hooks.deliveries.listEndpoints()).length, 4);
  } finally {
    await hooks.close();
  }
});

Deno.test("POST /v1/keys with no body, or an empty one with its Content-Type, reads it as {}: the same 400 naming what a key needs", async () => {
  const { app, keyStore } = await keyedApp();
  for (const init of [{}, { headers: { "Content-Type": "application/json" }, body: " " }]) {
    const res = await app.request(
      "/v1/keys",
      {
        method: "POST",
        ...init,
        headers: { Authorization: `Bearer ${KEYS.admin}`, ...init.headers },
      },
    );
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.deepEqual([error.code, error.message], [
      "invalid_key",
      `A secret key needs 'scopes', e.g. ["ingest"]`,
    ]);
  }
  assert.deepEqual(await keyStore.listKeys(), []);
});

Deno.test("the README's key creation: its reply, the list without secrets, the read and a 204 delete", async () => {
  const { app } = await keyedApp();
  const admin = { headers: { Authorization: `Bearer ${KEYS.admin}` } };
  const res = await app.request(
    "/v1/keys",
    post(KEYS.admin, {
      scopes: ["ingest"],
      streams: ["orders"],
      description: "checkout service",
      rateLimit: { eventsPerSecond: 100, burst: 500 },
      expiresAt: "2099-01-01T00:00:00Z",
    }),
  );
  assert.equal(res.status, 201);
  const created = await res.json();
  assert.deepEqual(Object.keys(created), [
    "id",
    "type",
    "prefix",
    "scopes",
    "streams",
    "origins",
    "rateLimit",
    "description",
    "expiresAt",
    "expired",
    "createdAt",
    "key",
  ]);
  assert.match(created.id, /^key_[0-9a-f]{16}$/);
  assert.match(created.prefix, /^sk_.{4}$/);
  assert.ok(created.key.startsWith(created.prefix));
  assert.deepEqual({ ...created, id: 0, prefix: 0, key: 0, createdAt: 0 }, {
    id: 0,
    type: "secret",
    prefix: 0,
    scopes: ["ingest"],
    streams: ["orders"],
    origins: null,
    rateLimit: { eventsPerSecond: 100, burst: 500 },
    description: "checkout service",
    expiresAt: "2099-01-01T00:00:00.000Z",
    expired: false,
    createdAt: 0,
    key: 0,
  });
  const listed = await (await app.request("/v1/keys", admin)).json();
  assert.deepEqual(Object.keys(listed), ["keys", "nextCursor"]);
  assert.deepEqual(
    listed.keys,
    [{ ...created, key: undefined }].map(({ key: _, ...rest }) => rest),
  );
  const one = await app.request(`/v1/keys/${created.id}`, admin);
  assert.deepEqual(await one.json(), listed.keys[0]);
  const deleted = await app.request(`/v1/keys/${created.id}`, { ...admin, method: "DELETE" });
  assert.equal(deleted.status, 204);
  const gone = await app.request(`/v1/keys/${created.id}`, admin);
  assert.equal(gone.status, 404);
  assert.equal((await gone.json()).error.code, "key_not_found");
});

Deno.test("GET /v1/keys pages oldest first by limit and cursor, as the other lists; a bad limit or cursor is 400", async () => {
  const { app } = await keyedApp();
  const ids: string[] = [];
  for (let n = 0; n < 5; n++) {
    const res = await app.request("/v1/keys", post(KEYS.admin, { scopes: ["read"] }));
    assert.equal(res.status, 201);
    ids.push((await res.json()).id);
  }
  const get = (path: string) =>
    app.request(path, { headers: { Authorization: `Bearer ${KEYS.admin}` } });
  // Created in one millisecond (the test clock): ordered by id.
  const expected = [...ids].sort();
  const pages: string[][] = [];
  let cursor: string | null = null;
  do {
    const res: Response = await get(
      `/v1/keys?limit=2${cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`}`,
    );
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.ok("nextCursor" in body);
    assert.ok(body.keys.every((key: { key: unknown }) => key.key === undefined), "no secrets");
    pages.push(body.keys.map((key: { id: string }) => key.id));
    cursor = body.nextCursor;
  } while (cursor !== null && pages.length < 10);
  assert.deepEqual(pages, [expected.slice(0, 2), expected.slice(2, 4), expected.slice(4)]);
  // Default: up to 100 on one page.
  const all = await (await get("/v1/keys")).json();
  assert.deepEqual(all.keys.map((key: { id: string }) => key.id), expected);
  assert.equal(all.nextCursor, null);
  for (
    const [query, code] of [
      ["limit=0", "invalid_query"],
      ["limit=1001", "invalid_query"],
      ["limit=x", "invalid_query"],
      ["cursor=nope", "invalid_cursor"],
    ]
  ) {
    const res = await get(`/v1/keys?${query}`);
    assert.equal(res.status, 400, query);
    assert.equal((await res.json()).error.code, code, query);
  }
});

Deno.test("POST /v1/keys past EDGESTREAM_KEYS_MAX answers 409 too_many_keys and creates nothing; the env keys do not count, a deletion frees a place", async () => {
  const store = new MemoryKeyStore({ maxKeys: 2 });
  const keys = await KeyRing.parse(`admin:${KEYS.admin},ingest:${KEYS.ingest}`, { store });
  const app = createApp({
    streams: compileConfig(TEST_CONFIG),
    store: new MemoryStore(),
    keys,
    now: () => NOW,
  });
  const ids: string[] = [];
  for (let n = 0; n < 2; n++) {
    const res = await app.request("/v1/keys", post(KEYS.admin, { scopes: ["read"] }));
    assert.equal(res.status, 201);
    ids.push((await res.json()).id);
  }
  const refused = await app.request("/v1/keys", post(KEYS.admin, { scopes: ["read"] }));
  assert.equal(refused.status, 409);
  const body = await refused.json();
  assert.equal(body.error.code, "too_many_keys");
  assert.equal(
    body.error.message,
    "Cannot create more run-time API keys: this deployment holds 2; the limit is 2 (EDGESTREAM_KEYS_MAX); delete one first",
  );
  assert.deepEqual(body.error.details, { kind: "keys", max: 2, held: 2 });
  assert.equal((await store.listKeys()).length, 2);
  const deleted = await app.request(`/v1/keys/${ids[0]}`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  });
  assert.equal(deleted.status, 204);
  assert.equal((await app.request("/v1/keys", post(KEYS.admin, { scopes: ["read"] }))).status, 201);
});

Deno.test("keys and webhooks refuse a body that gives a key twice or a __proto__ key (400 invalid_body naming it), which their schema would drop without a word, and create nothing", async () => {
  const { app, keyStore } = await keyedApp();
  const hooks = await setup({ auth: true });
  try {
    const cases = [
      [app, "/v1/keys", KEYS.admin, '{"scopes": ["read"], "scopes": ["admin"]}', /scopes/],
      [
        hooks.app,
        "/v1/webhooks",
        ADMIN_KEY,
        '{"url": "http://127.0.0.1:9/a", "url": "http://127.0.0.1:9/b"}',
        /url/,
      ],
      [
        hooks.app,
        "/v1/webhooks",
        ADMIN_KEY,
        '{"url": "http://127.0.0.1:9/a", "headers": {"__proto__": "x", "X-Team": "a"}}',
        /headers\.__proto__: key '__proto__' is not taken/,
      ],
      [
        hooks.app,
        "/v1/webhooks/ep_x",
        ADMIN_KEY,
        '{"disabled": true, "disabled": false}',
        /disabled/,
      ],
      [hooks.app, "/v1/webhooks/ep_x/replay", ADMIN_KEY, '{"since": 1, "since": 2}', /since/],
    ] as const;
    for (const [server, path, key, body, named] of cases) {
      const res = await server.request(path, {
        method: path === "/v1/webhooks/ep_x" ? "PATCH" : "POST",
        headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
        body,
      });
      assert.equal(res.status, 400, body);
      const { error } = await res.json();
      assert.equal(error.code, "invalid_body", body);
      assert.match(error.message, named, body);
    }
    assert.deepEqual(await keyStore.listKeys(), []);
    assert.deepEqual(await hooks.deliveries.listEndpoints(), []);
  } finally {
    await hooks.close();
  }
});

Deno.test("an id not of a key's form (key_ and 16 lowercase hex digits) is 400 invalid_request on GET and DELETE, as the README says; a well-formed unknown one is 404", async () => {
  const { app, keyStore } = await keyedApp();
  const admin = { Authorization: `Bearer ${KEYS.admin}` };
  const created = await (await app.request("/v1/keys", post(KEYS.admin, { scopes: ["read"] })))
    .json();
  for (const method of ["GET", "DELETE"]) {
    for (
      const id of ["garbage", "key_ABCDEF0123456789", `${created.id}0`]
    ) {
      const res = await app.request(`/v1/keys/${id}`, { method, headers: admin });
      assert.equal(res.status, 400, `${method} ${id}`);
      const { error } = await res.json();
      assert.equal(error.code, "invalid_request");
      assert.match(error.message, /^Invalid path parameter id: .*key_\[0-9a-f\]\{16\}/);
    }
    const unknown = await app.request("/v1/keys/key_0000000000000000", { method, headers: admin });
    assert.equal(unknown.status, 404, method);
    assert.equal((await unknown.json()).error.code, "key_not_found");
  }
  assert.deepEqual((await keyStore.listKeys()).map((key) => key.id), [created.id]);
});

Deno.test("a body's unknown field or record key of 500 KB is refused with a short message quoting it shortened, on keys and webhooks (it was echoed whole: a 500 KB error), and changes nothing", async () => {
  const { app, keyStore } = await keyedApp();
  const long = "a".repeat(500_000);
  const cases: Array<[unknown, RegExp]> = [
    [
      { scopes: ["read"], [long]: 1 },
      /^Invalid request body: Unrecognized key: "a{256}… \(500000 characters\)"$/,
    ],
    [
      { scopes: ["read"], rateLimit: { eventsPerSecond: 1, burst: 1, [long]: 1 } },
      /^Invalid request body rateLimit: Unrecognized key: "a{256}… \(500000 characters\)"$/,
    ],
    [
      {
        scopes: ["read"],
        ...Object.fromEntries(Array.from({ length: 20 }, (_, n) => [`x${n}`, 1])),
      },
      /^Invalid request body: Unrecognized keys: "x0", "x1", .*"x9" … and 10 more$/,
    ],
  ];
  for (const [input, message] of cases) {
    const res = await app.request("/v1/keys", post(KEYS.admin, input));
    assert.equal(res.status, 400);
    const text = await res.text();
    assert.ok(text.length < 1_000, `${text.length} characters`);
    const { error } = JSON.parse(text);
    assert.equal(error.code, "invalid_request");
    assert.match(error.message, message);
  }
  assert.deepEqual(await keyStore.listKeys(), []);
  const hooks = await setup();
  try {
    const admin = { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": "application/json" };
    for (
      const body of [
        { url: "http://127.0.0.1:9/h", [long]: 1 },
        { url: "http://127.0.0.1:9/h", headers: { [long]: "a".repeat(5_000) } },
      ]
    ) {
      const res = await hooks.app.request("/v1/webhooks", {
        method: "POST",
        headers: admin,
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 400);
      const text = await res.text();
      assert.ok(text.length < 1_000, `${text.length} characters`);
      assert.match(JSON.parse(text).error.message, /a… \(500000 characters\)/);
    }
    const listed = await hooks.app.request("/v1/webhooks", { headers: admin });
    assert.deepEqual((await listed.json()).webhooks, []);
  } finally {
    await hooks.close();
  }
});

Deno.test("a body's misspelled field names the one meant, on keys and webhooks, and changes nothing", async () => {
  const { app, keyStore } = await keyedApp();
  const cases: Array<[unknown, string]> = [
    [
      { scope: ["read"] },
      'Invalid request body: Unrecognized key: "scope" (did you mean "scopes"?)',
    ],
    [
      { scopes: ["read"], ratelimit: { eventsPerSecond: 1, burst: 1 } },
      'Invalid request body: Unrecognized key: "ratelimit" (did you mean "rateLimit"?)',
    ],
    [
      { scopes: ["read"], rateLimit: { eventsPerSec: 1, eventsPerSecond: 1, burst: 1 } },
      'Invalid request body rateLimit: Unrecognized key: "eventsPerSec" (did you mean "eventsPerSecond"?)',
    ],
    // Near none: named alone.
    [{ scopes: ["read"], zzzzzz: 1 }, 'Invalid request body: Unrecognized key: "zzzzzz"'],
  ];
  for (const [input, message] of cases) {
    const res = await app.request("/v1/keys", post(KEYS.admin, input));
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_request");
    assert.equal(error.message, message);
  }
  assert.deepEqual(await keyStore.listKeys(), []);
  const hooks = await setup();
  try {
    const admin = { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": "application/json" };
    for (
      const [body, message] of [
        [
          { url: "http://127.0.0.1:9/h", stream: ["orders"] },
          'Invalid request body: Unrecognized key: "stream" (did you mean "streams"?)',
        ],
        [
          { url: "http://127.0.0.1:9/h", event_types: ["alert.fired"] },
          'Invalid request body: Unrecognized key: "event_types" (did you mean "eventTypes"?)',
        ],
      ] as const
    ) {
      const res = await hooks.app.request("/v1/webhooks", {
        method: "POST",
        headers: admin,
        body: JSON.stringify(body),
      });
      assert.equal(res.status, 400);
      assert.equal((await res.json()).error.message, message);
    }
    const listed = await hooks.app.request("/v1/webhooks", { headers: admin });
    assert.deepEqual((await listed.json()).webhooks, []);
  } finally {
    await hooks.close();
  }
});

Deno.test("a key's rateLimit has the bounds of a stream's limits, as the README says: past them 400 invalid_request naming the field, nothing created", async () => {
  const { app, keyStore } = await keyedApp();
  const cases: Array<[object, RegExp]> = [
    [{ eventsPerSecond: 1, burst: 1_000_001 }, /^Invalid request body rateLimit\.burst: .*1000000/],
    [{ eventsPerSecond: 1, burst: 2 ** 53 }, /^Invalid request body rateLimit\.burst: /],
    [{ eventsPerSecond: 1, burst: 0 }, /^Invalid request body rateLimit\.burst: /],
    [{ eventsPerSecond: 1, burst: 1.5 }, /^Invalid request body rateLimit\.burst: /],
    [
      { eventsPerSecond: 1_000_001, burst: 1 },
      /^Invalid request body rateLimit\.eventsPerSecond: /,
    ],
    [{ eventsPerSecond: 1 }, /^Invalid request body rateLimit\.burst: /],
  ];
  for (const [rateLimit, message] of cases) {
    const res = await app.request("/v1/keys", post(KEYS.admin, { scopes: ["ingest"], rateLimit }));
    assert.equal(res.status, 400, JSON.stringify(rateLimit));
    const { error } = await res.json();
    assert.equal(error.code, "invalid_request", JSON.stringify(rateLimit));
    assert.match(error.message, message, JSON.stringify(rateLimit));
  }
  assert.deepEqual(await keyStore.listKeys(), []);
  const widest = { eventsPerSecond: 1_000_000, burst: 1_000_000 };
  const created = await app.request(
    "/v1/keys",
    post(KEYS.admin, { scopes: ["ingest"], rateLimit: widest }),
  );
  assert.equal(created.status, 201);
  assert.deepEqual((await created.json()).rateLimit, widest);
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("### Rate limits"), readme.indexOf("### Browsers"))
    .replace(/\s+/g, " ");
  assert.match(
    section,
    /A key's `rateLimit` has the bounds of a stream's `limits`: both fields required, each at most 1,000,000 \(`burst` a whole number of at least 1\); past them `POST \/v1\/keys` is `400 invalid_request`/,
  );
});

Deno.test("a key's rateLimit on a key that cannot ingest (scopes read only), which would bound nothing, is 400 invalid_key naming it, nothing created; with ingest or admin it is taken", async () => {
  const { app, keyStore } = await keyedApp();
  const rateLimit = { eventsPerSecond: 1, burst: 2 };
  for (const scopes of [["read"], ["read", "read"]]) {
    const res = await app.request("/v1/keys", post(KEYS.admin, { scopes, rateLimit }));
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_key");
    assert.equal(
      error.message,
      "rateLimit: a key's rate limit bounds the events it ingests, and a key of scopes read ingests none: remove rateLimit, or add the ingest scope",
    );
  }
  assert.deepEqual(await keyStore.listKeys(), []);
  // Null is a field left out, as a read key's reply shows it.
  const none = await app.request(
    "/v1/keys",
    post(KEYS.admin, { scopes: ["read"], rateLimit: null }),
  );
  assert.equal(none.status, 201);
  for (const scopes of [["ingest"], ["read", "ingest"], ["admin"]]) {
    const res = await app.request("/v1/keys", post(KEYS.admin, { scopes, rateLimit }));
    assert.equal(res.status, 201, JSON.stringify(scopes));
    assert.deepEqual((await res.json()).rateLimit, rateLimit);
  }
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf("### Rate limits"), readme.indexOf("### Browsers"))
    .replace(/\s+/g, " ");
  assert.match(
    section,
    /A `rateLimit` on a key that cannot ingest \(scopes `read` only\), which would bound nothing, is `400 invalid_key` naming it, creating nothing\./,
  );
});

Deno.test("keys and webhooks refuse a text with a lone surrogate (400 invalid_body naming where) and create nothing: on Redis such a record broke every list of them, and a key's own DELETE", async () => {
  const { app, keyStore } = await keyedApp();
  const res = await app.request("/v1/keys", {
    ...post(KEYS.admin, {}),
    body: '{"scopes": ["read"], "description": "x\\ud800y"}',
  });
  assert.equal(res.status, 400);
  const { error } = await res.json();
  assert.equal(error.code, "invalid_body");
  assert.equal(
    error.message,
    "Invalid request body: description: text holds the lone surrogate U+D800, which is no Unicode character",
  );
  assert.deepEqual(await keyStore.listKeys(), []);
  // So is a webhook endpoint's (on Redis, one made every list of endpoints fail, and the creation
  // itself answered 500 after storing it), in any text of the body, its keys too.
  const hooks = await setup({ auth: true });
  try {
    const cases = [
      [
        '{"url": "http://127.0.0.1:9/a", "description": "\\udc00"}',
        /^Invalid request body: description: text holds the lone surrogate U\+DC00/,
      ],
      [
        '{"url": "http://127.0.0.1:9/a", "headers": {"X-Team": "a\\ud800"}}',
        /headers\.X-Team: text holds the lone surrogate U\+D800/,
      ],
      [
        '{"url": "http://127.0.0.1:9/a", "headers": {"X-\\ud800": "a"}}',
        /^Invalid request body: headers: a key holds the lone surrogate U\+D800/,
      ],
    ] as const;
    for (const [body, named] of cases) {
      const refused = await hooks.app.request("/v1/webhooks", {
        method: "POST",
        headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": "application/json" },
        body,
      });
      assert.equal(refused.status, 400, body);
      const { error } = await refused.json();
      assert.equal(error.code, "invalid_body", body);
      assert.match(error.message, named, body);
    }
    assert.deepEqual(await hooks.deliveries.listEndpoints(), []);
    // A change of an endpoint and a replay of its deliveries likewise: nothing changed.
    const created = await hooks.app.request("/v1/webhooks", {
      method: "POST",
      headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": "application/json" },
      body: '{"url": "http://127.0.0.1:9/a", "description": "kept"}',
    });
    assert.equal(created.status, 201);
    const { id } = await created.json();
    for (
      const [method, path, body, named] of [
        [
          "PATCH",
          `/v1/webhooks/${id}`,
          '{"description": "\\ud800"}',
          /^Invalid request body: description: text holds the lone surrogate U\+D800/,
        ],
        [
          "POST",
          `/v1/webhooks/${id}/replay`,
          '{"since": "2026-01-01T00:00:00Z\\udc00"}',
          /^Invalid request body: since: text holds the lone surrogate U\+DC00/,
        ],
      ] as const
    ) {
      const refused = await hooks.app.request(path, {
        method,
        headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": "application/json" },
        body,
      });
      assert.equal(refused.status, 400, `${method} ${path}`);
      const { error } = await refused.json();
      assert.equal(error.code, "invalid_body", `${method} ${path}`);
      assert.match(error.message, named, `${method} ${path}`);
    }
    const [kept] = await hooks.deliveries.listEndpoints();
    assert.equal(kept.description, "kept");
  } finally {
    await hooks.close();
  }
  // A pair is a character as any other.
  const pair = await app.request("/v1/keys", {
    ...post(KEYS.admin, {}),
    body: '{"scopes": ["read"], "description": "x\\ud83d\\ude00y"}',
  });
  assert.equal(pair.status, 201);
  assert.equal((await pair.json()).description, "x\u{1F600}y");
});

Deno.test("GET /v1/keys?limit=1000 of keys with every field at its bound stops a page before its records pass 1,000,000 bytes, with a cursor that reads on (README)", async () => {
  const { app, keyStore } = await keyedApp();
  const body = {
    scopes: ["ingest", "read"],
    streams: Array.from({ length: 256 }, (_, i) => `s${i}`.padEnd(64, "x")),
    origins: Array.from({ length: 64 }, (_, i) => `https://${`o${i}`.padEnd(240, "o")}.example`),
    rateLimit: { eventsPerSecond: 100, burst: 500 },
    description: "d".repeat(1024),
    expiresAt: "2099-01-01T00:00:00Z",
  };
  const ids: string[] = [];
  for (let n = 0; n < 40; n++) {
    const res = await app.request("/v1/keys", post(KEYS.admin, body));
    assert.equal(res.status, 201, await res.clone().text());
    ids.push((await res.json()).id);
  }
  const stored = JSON.stringify(await keyStore.getKey(ids[0]));
  assert.ok(stored.length > 34_000 && stored.length < 36_000, `${stored.length} bytes`);
  const pages: string[][] = [];
  let cursor: string | null = null;
  do {
    const res: Response = await app.request(
      `/v1/keys?limit=1000${cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`}`,
      { headers: { Authorization: `Bearer ${KEYS.admin}` } },
    );
    assert.equal(res.status, 200);
    const page = await res.json();
    pages.push(page.keys.map((key: { id: string }) => key.id));
    cursor = page.nextCursor;
  } while (cursor !== null && pages.length < 10);
  // Some 35 KB a record: 28 on a page, then the rest, each key once, in order.
  assert.deepEqual(pages.map((page) => page.length), [28, 12]);
  assert.deepEqual(pages.flat(), [...ids].sort());
});

Deno.test("POST /v1/keys removes repeats of scopes, streams and origins before their bounds: three scopes named four times is a key of three; past a bound of different entries, 400 naming the field, nothing created", async () => {
  const { app, keyStore } = await keyedApp();
  const scoped = await app.request(
    "/v1/keys",
    post(KEYS.admin, { scopes: ["admin", "read", "ingest", "read"] }),
  );
  assert.equal(scoped.status, 201, await scoped.clone().text());
  assert.deepEqual((await scoped.json()).scopes, ["admin", "read", "ingest"]);
  const streams = Array.from({ length: 256 }, (_, i) => `s${i}`);
  const origins = [
    "https://shop.example",
    ...Array.from({ length: 63 }, (_, i) => `https://o${i}.example`),
  ];
  // An origin written differently is a repeat too: it is stored as the same origin (README).
  const listed = await app.request(
    "/v1/keys",
    post(KEYS.admin, {
      scopes: ["read"],
      streams: [...streams, "s3", "s0"],
      origins: [...origins, "https://o7.example", "HTTPS://Shop.example:443"],
    }),
  );
  assert.equal(listed.status, 201, await listed.clone().text());
  const created = await listed.json();
  assert.deepEqual(created.streams, streams);
  assert.deepEqual(created.origins, origins);
  const before = (await keyStore.pageKeys({ limit: 100 })).items.length;
  for (
    const [body, message] of [
      [
        { scopes: ["read"], streams: [...streams, "s256", "s0"] },
        "Invalid request body streams: Too big: expected at most 256 different streams (repeats are removed), got 257",
      ],
      [
        { scopes: ["read"], origins: [...origins, "https://o63.example", "https://o0.example"] },
        "Invalid request body origins: Too big: expected at most 64 different origins (repeats are removed), got 65",
      ],
    ] as const
  ) {
    const res = await app.request("/v1/keys", post(KEYS.admin, body));
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_request");
    assert.equal(error.message, message);
  }
  assert.equal((await keyStore.pageKeys({ limit: 100 })).items.length, before, "nothing created");
});

Deno.test("POST /v1/keys caps each list's entries as sent, repeats included (16 scopes, 1,024 streams, 256 origins): one past a cap is 400 invalid_request naming the field, at the cap with repeats 201", async () => {
  const { app, keyStore } = await keyedApp();
  const repeated = (values: string[], length: number) =>
    Array.from({ length }, (_, i) => values[i % values.length]);
  const streams = Array.from({ length: 256 }, (_, i) => `s${i}`);
  const origins = Array.from({ length: 64 }, (_, i) => `https://o${i}.example`);
  const atCaps = await app.request(
    "/v1/keys",
    post(KEYS.admin, {
      scopes: repeated(["read", "ingest"], 16),
      streams: repeated(streams, 1024),
      origins: repeated(origins, 256),
    }),
  );
  assert.equal(atCaps.status, 201, (await atCaps.clone().text()).slice(0, 300));
  const created = await atCaps.json();
  assert.deepEqual(created.scopes, ["read", "ingest"]);
  assert.deepEqual(created.streams, streams);
  assert.deepEqual(created.origins, origins);
  const before = (await keyStore.pageKeys({ limit: 100 })).items.length;
  for (
    const [field, body] of [
      ["scopes", { scopes: repeated(["read"], 17) }],
      ["streams", { scopes: ["read"], streams: repeated(["s0"], 1025) }],
      ["origins", { scopes: ["read"], origins: repeated(["https://o0.example"], 257) }],
    ] as const
  ) {
    const res = await app.request("/v1/keys", post(KEYS.admin, body));
    assert.equal(res.status, 400, field);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_request", field);
    assert.match(error.message, new RegExp(`^Invalid request body ${field}: Too big`), field);
  }
  assert.equal((await keyStore.pageKeys({ limit: 100 })).items.length, before, "nothing created");
});

Deno.test("GET /v1/key tells any key what it may do: its scopes (with those admin implies) and streams", async () => {
  const { app } = await testApp({ auth: true });
  const own = async (key?: string) => {
    const res = await app.request("/v1/key", {
      headers: key === undefined ? {} : { Authorization: `Bearer ${key}` },
    });
    return { status: res.status, body: await res.json() };
  };
  assert.deepEqual(await own(KEYS.read), {
    status: 200,
    body: { id: null, scopes: ["read"], streams: null },
  });
  assert.deepEqual(await own(KEYS.ingest), {
    status: 200,
    body: { id: null, scopes: ["ingest"], streams: null },
  });
  assert.deepEqual(await own(KEYS.admin), {
    status: 200,
    body: { id: null, scopes: ["admin", "ingest", "read"], streams: null },
  });
  const created = await app.request(
    "/v1/keys",
    post(KEYS.admin, { scopes: ["admin"], streams: ["orders", "clicks"] }),
  );
  assert.equal(created.status, 201);
  const { id, key } = await created.json();
  assert.deepEqual(await own(key), {
    status: 200,
    body: { id, scopes: ["admin", "ingest", "read"], streams: ["clicks", "orders"] },
  });
  // No key, or none it knows: 401 as on every route; it tells nothing of other keys.
  for (const key of [undefined, "sk_not-a-key-of-this-server"]) {
    const res = await own(key);
    assert.equal(res.status, 401, String(key));
    assert.equal(res.body.error.code, "unauthorized");
  }
  const open = await testApp();
  const res = await open.app.request("/v1/key");
  assert.deepEqual(await res.json(), {
    id: null,
    scopes: ["admin", "ingest", "read"],
    streams: null,
  });
});

Deno.test("GET /v1/key refuses an expired key (401 saying when) and a deleted one (401), as every route does", async () => {
  let now = NOW;
  const { app } = await keyedApp({ now: () => now });
  const own = async (key: string) => {
    const res = await app.request("/v1/key", { headers: { Authorization: `Bearer ${key}` } });
    return { status: res.status, body: await res.json() };
  };
  const create = async (body: unknown) => {
    const res = await app.request("/v1/keys", post(KEYS.admin, body));
    assert.equal(res.status, 201);
    return await res.json();
  };
  const expiring = await create({
    scopes: ["read"],
    expiresAt: new Date(NOW + 60_000).toISOString(),
  });
  const deleted = await create({ scopes: ["read"] });
  assert.equal((await own(expiring.key)).status, 200);
  assert.equal((await own(deleted.key)).status, 200);

  now = NOW + 60_000;
  const expired = await own(expiring.key);
  assert.equal(expired.status, 401);
  assert.equal(expired.body.error.code, "unauthorized");
  assert.equal(
    expired.body.error.message,
    `API key '${expiring.id}' expired at ${new Date(NOW + 60_000).toISOString()}`,
  );
  // The same message another route gives the same key.
  const elsewhere = await app.request("/v1/streams", {
    headers: { Authorization: `Bearer ${expiring.key}` },
  });
  assert.equal((await elsewhere.json()).error.message, expired.body.error.message);

  const deletion = await app.request(`/v1/keys/${deleted.id}`, {
    method: "DELETE",
    headers: { Authorization: `Bearer ${KEYS.admin}` },
  });
  assert.equal(deletion.status, 204);
  const gone = await own(deleted.key);
  assert.equal(gone.status, 401);
  assert.equal(gone.body.error.code, "unauthorized");
  assert.equal(gone.body.error.message, "Invalid API key");
});

Deno.test("GET /v1/key answers a publishable key its scopes (ingest) and streams, from any Origin; only its own origins may read the answer (CORS)", async () => {
  const { app } = await keyedApp();
  const created = await app.request(
    "/v1/keys",
    post(KEYS.admin, {
      type: "publishable",
      streams: ["orders", "clicks"],
      origins: ["https://shop.example"],
    }),
  );
  assert.equal(created.status, 201);
  const { id, key } = await created.json();
  for (const origin of [undefined, "https://shop.example", "https://other.example"]) {
    const res = await app.request("/v1/key", {
      headers: { Authorization: `Bearer ${key}`, ...(origin ? { Origin: origin } : {}) },
    });
    assert.equal(res.status, 200, String(origin));
    assert.deepEqual(await res.json(), { id, scopes: ["ingest"], streams: ["clicks", "orders"] });
    assert.equal(
      res.headers.get("Access-Control-Allow-Origin"),
      origin === "https://shop.example" ? origin : null,
      String(origin),
    );
  }
});
