/** Keys in requests: where they are read from, and how a key in the URL is logged. */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  authenticate,
  authorize,
  HEADER_PLACE,
  KeyRing,
  oneKey,
  presentedKey,
  sha256,
  toHex,
} from "../../src/http/auth.ts";
import type { ApiError } from "../../src/http/errors.ts";
import { createApp } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { MemoryKeyStore } from "../../src/store/memory/key_store.ts";
import { MemoryStore, StoreUnavailableError } from "../../src/store/mod.ts";
import { createKey, keyedApp, KEYS, TEST_CONFIG } from "../_fixtures.ts";
import { nodeClient, startServer } from "../_live.ts";
import { jsonLines, writtenLogs } from "../_logs.ts";

Deno.test("presentedKey() takes the key from the header, ?token= (marked inQuery) or the subprotocol, and refuses two that differ", () => {
  const url = "http://localhost/v1/streams/orders/subscribe";
  const header = new Request(url, { headers: { Authorization: "Bearer from-header" } });
  assert.deepEqual(presentedKey(header), { key: "from-header", protocol: undefined });
  const query = new Request(`${url}?token=from-query`, {
    headers: { "Sec-WebSocket-Protocol": "app" },
  });
  assert.deepEqual(presentedKey(query), { key: "from-query", protocol: "app", inQuery: true });
  const protocol = new Request(url, { headers: { "Sec-WebSocket-Protocol": "bearer.from-proto" } });
  assert.deepEqual(presentedKey(protocol), { key: "from-proto", protocol: "bearer.from-proto" });
  assert.deepEqual(presentedKey(new Request(`${url}?token=`)), {
    key: undefined,
    protocol: undefined,
  });
  // The same key in every place is one key, still marked as in the URL.
  const same = new Request(`${url}?token=k`, {
    headers: { Authorization: "Bearer k", "Sec-WebSocket-Protocol": "app, bearer.k" },
  });
  assert.deepEqual(presentedKey(same), { key: "k", protocol: "app", inQuery: true });
  // Two that differ: no place wins silently; the refusal names both places, never a key.
  for (
    const [init, places] of [
      [
        { query: "b", header: "a" },
        /one in the 'Authorization: Bearer' header, another in '\?token='/,
      ],
      [
        { header: "a", proto: "b" },
        /one in the 'Authorization: Bearer' header, another in subprotocol 'bearer\.<key>'/,
      ],
      [{ query: "a", proto: "b" }, /one in '\?token=', another in subprotocol 'bearer\.<key>'/],
    ] as const
  ) {
    const headers: Record<string, string> = {};
    if ("header" in init) headers.Authorization = `Bearer ${init.header}`;
    if ("proto" in init) headers["Sec-WebSocket-Protocol"] = `bearer.${init.proto}`;
    const request = new Request("query" in init ? `${url}?token=${init.query}` : url, { headers });
    assert.throws(() => presentedKey(request), (error: ApiError) => {
      assert.equal(error.status, 400);
      assert.equal(error.code, "invalid_request");
      assert.match(error.message, places);
      assert.match(error.message, /; send one key, in one place$/);
      return true;
    });
  }
});

Deno.test("presentedKey() reads every bearer subprotocol: two different ones are refused, the same one twice is one key", () => {
  const url = "http://localhost/v1/streams/orders/subscribe";
  const offering = (protocols: string) =>
    new Request(url, { headers: { "Sec-WebSocket-Protocol": protocols } });
  assert.throws(() => presentedKey(offering("bearer.a, bearer.b")), (error: ApiError) => {
    assert.equal(error.status, 400);
    assert.match(
      error.message,
      /^Two different API keys: one in the 1st 'bearer\.<key>' subprotocol, another in the 2nd 'bearer\.<key>' subprotocol; /,
    );
    return true;
  });
  // Positions count every bearer subprotocol offered, an empty one and the same key again too.
  assert.throws(() => presentedKey(offering("bearer., bearer.a, app, bearer.a, bearer.b")), (
    error: ApiError,
  ) => {
    assert.match(
      error.message,
      /one in the 2nd 'bearer\.<key>' subprotocol, another in the 4th 'bearer\.<key>' subprotocol; /,
    );
    return true;
  });
  assert.deepEqual(presentedKey(offering("bearer.a, app, bearer.a")), {
    key: "a",
    protocol: "app",
  });
  // An empty one ('bearer.' alone) is no key, not a second one.
  assert.deepEqual(presentedKey(offering("bearer., bearer.a")), {
    key: "a",
    protocol: "bearer.",
  });
});

Deno.test("oneKey() ignores empty keys: neither a second key nor the one served", () => {
  assert.equal(oneKey([[HEADER_PLACE, ""], ["'?key='", "a"]]), "a");
  assert.equal(oneKey([[HEADER_PLACE, "a"], ["'?key='", ""]]), "a");
  assert.equal(oneKey([[HEADER_PLACE, ""], ["'?key='", undefined]]), undefined);
});

Deno.test("A subscription whose subprotocol key differs from its header's, or with two different bearer subprotocols, is 400; the same key twice is served", async () => {
  const server = await startServer({ auth: true });
  const subscribe = (headers: Record<string, string>) =>
    fetch(`${server.base}/v1/streams/orders/subscribe?types=window.closed`, {
      headers: { Accept: "text/event-stream", ...headers },
    });
  try {
    // Two different keys are refused; the same key twice is one key. Status, then headers.
    const cases: [number, Record<string, string>][] = [
      [400, {
        Authorization: `Bearer ${KEYS.read}`,
        "Sec-WebSocket-Protocol": `bearer.${KEYS.admin}`,
      }],
      [400, { "Sec-WebSocket-Protocol": `bearer.${KEYS.read}, bearer.${KEYS.admin}` }],
      [200, {
        Authorization: `Bearer ${KEYS.read}`,
        "Sec-WebSocket-Protocol": `bearer.${KEYS.read}`,
      }],
      [200, { "Sec-WebSocket-Protocol": `bearer.${KEYS.read}, bearer.${KEYS.read}` }],
    ];
    for (const [status, headers] of cases) {
      const res = await subscribe(headers);
      const label = `${status}: ${JSON.stringify(Object.keys(headers))}`;
      assert.equal(res.status, status, label);
      if (status === 200) {
        await res.body?.cancel();
        continue;
      }
      const { error } = await res.json();
      assert.equal(error.code, "invalid_request", label);
      assert.match(error.message, /^Two different API keys: /, label);
    }
  } finally {
    await server.close();
  }
});

Deno.test("A key sent as ?token= still works, is never logged, marks the line keyInQuery and warns once that it is deprecated", async () => {
  const server = await startServer({ auth: true });
  try {
    await writtenLogs(async (lines) => {
      for (let i = 0; i < 2; i++) {
        const sse = await fetch(
          `${server.base}/v1/streams/orders/subscribe?types=window.closed&token=${KEYS.read}`,
          { headers: { Accept: "text/event-stream" } },
        );
        assert.equal(sse.status, 200);
        // The line is written when the stream opens, not when it ends.
        assert.equal(jsonLines(lines, "edgestream.http").at(-1)?.status, 200);
        await sse.body?.cancel();
      }
      const socket = await nodeClient(server.wsUrl(`/v1/streams/orders/ws?token=${KEYS.ingest}`));
      socket.socket.send(JSON.stringify({ id: "q1" }));
      assert.equal((await socket.inbox.next()).type, "ack");
      await socket.close();
      const header = await nodeClient(server.wsUrl("/v1/streams/orders/ws"), {
        headers: { Authorization: `Bearer ${KEYS.ingest}` },
      });
      await header.close();

      const http = jsonLines(lines, "edgestream.http");
      const requests = http.filter((line) => line.method === "GET");
      assert.deepEqual(
        requests.map((line) => [line.path, line.status, line.keyInQuery]),
        [
          ["/v1/streams/orders/subscribe", 200, true],
          ["/v1/streams/orders/subscribe", 200, true],
          ["/v1/streams/orders/ws", 101, true],
          ["/v1/streams/orders/ws", 101, undefined],
        ],
      );
      const warnings = http.filter((line) => line.level === "warning");
      assert.equal(warnings.length, 1, JSON.stringify(warnings));
      assert.match(warnings[0].message, /'\?token=', which is deprecated/);
      const text = lines.map((line) => line.text).join("\n");
      for (const key of Object.values(KEYS)) assert.ok(!text.includes(key), key);
    });
  } finally {
    await server.close();
  }
});

Deno.test("A WebSocket upgrade with a refused key is closed 1008 and its request line names the error", async () => {
  const server = await startServer({ auth: true });
  try {
    await writtenLogs(async (lines) => {
      for (const path of ["/v1/streams/orders/ws", "/v1/streams/orders/subscribe"]) {
        const socket = await nodeClient(server.wsUrl(path), {
          headers: { Authorization: "Bearer not-a-key-0123456789" },
        });
        assert.equal((await socket.inbox.closed).code, 1008);
        await socket.close();
      }
      const refused = jsonLines(lines, "edgestream.http").filter((line) => line.method === "GET");
      assert.deepEqual(
        refused.map((line) => [line.path, line.status, (line.error as { code: string })?.code]),
        [
          ["/v1/streams/orders/ws", 101, "unauthorized"],
          ["/v1/streams/orders/subscribe", 101, "unauthorized"],
        ],
      );
    });
  } finally {
    await server.close();
  }
});

Deno.test("An Authorization header that holds no 'Bearer <key>' is 401 saying so, not 'Missing API key', on every kind of route", async () => {
  const server = await startServer({ auth: true });
  const unreadable = /^Unreadable Authorization header: it must hold one key as 'Bearer <key>'; /;
  try {
    for (
      const authorization of [
        KEYS.read, // the key without "Bearer"
        `Basic ${btoa("user:password")}`,
        `Bearer ${KEYS.read}, Bearer ${KEYS.admin}`, // two headers, as Headers joins them
      ]
    ) {
      for (
        const [method, path, headers] of [
          ["GET", "/v1/streams", {}],
          ["POST", "/v1/streams/orders/events", { "Content-Type": "application/json" }],
          ["GET", "/v1/streams/orders/subscribe", { Accept: "text/event-stream" }],
        ] as const
      ) {
        const res = await fetch(`${server.base}${path}`, {
          method,
          headers: { ...headers, Authorization: authorization },
          body: method === "POST" ? "{}" : undefined,
        });
        assert.equal(res.status, 401, `${method} ${path}`);
        const { error } = await res.json();
        assert.equal(error.code, "unauthorized");
        assert.match(error.message, unreadable, `${method} ${path}`);
      }
      // No header at all is still a missing key.
      const none = await fetch(`${server.base}/v1/streams`);
      assert.match((await none.json()).error.message, /^Missing API key: /);
    }
    // Over a WebSocket, the key in a subprotocol still counts when the header is unreadable.
    const socket = await nodeClient(server.wsUrl("/v1/streams/orders/ws"), {
      headers: { Authorization: "Token abc" },
      protocols: [`bearer.${KEYS.ingest}`],
    });
    assert.equal(socket.status, undefined, "upgraded");
    await socket.close();
  } finally {
    await server.close();
  }
});

/** A key store that counts its look-ups. */
class CountingKeyStore extends MemoryKeyStore {
  lookups = 0;
  override keyByHash(hash: string) {
    this.lookups += 1;
    return super.keyByHash(hash);
  }
}

const RUNTIME_SECRET = "sk_runtimeKeyRuntimeKey0123456789";

Deno.test("KeyRing: a key store that cannot answer makes the request a 503, and leaves no rejection unhandled", async () => {
  class DownKeyStore extends MemoryKeyStore {
    override keyByHash(): Promise<never> {
      return Promise.reject(new StoreUnavailableError("Redis did not answer keyByHash"));
    }
  }
  const keys = await KeyRing.parse("admin:admin-key-0123456789", { store: new DownKeyStore() });
  await assert.rejects(keys.grantOf(RUNTIME_SECRET), StoreUnavailableError);
  const app = createApp({
    streams: compileConfig({ streams: {} }),
    store: new MemoryStore(),
    keys,
  });
  const res = await app.request("/v1/streams", {
    headers: { Authorization: `Bearer ${RUNTIME_SECRET}` },
  });
  assert.equal(res.status, 503);
  assert.equal((await res.json()).error.code, "store_unavailable");
  // An unhandled rejection (the lookup's copy kept for concurrent requests) ended the process.
  await new Promise((resolve) => setTimeout(resolve, 20));
  // An ingest refused there applied nothing, and says so: no resend advice for a lookup.
  const ingest = await app.request("/v1/streams/orders/events", {
    method: "POST",
    headers: { Authorization: `Bearer ${RUNTIME_SECRET}`, "Content-Type": "application/json" },
    body: "{}",
  });
  assert.equal(ingest.status, 503);
  const { error } = await ingest.json();
  assert.equal(error.details.outcome, "not_applied");
  assert.match(error.message, /nothing was applied$/);
});

function runtimeRecord(id: string, secret: string) {
  return {
    id,
    type: "secret" as const,
    hash: toHex(sha256(secret)),
    prefix: secret.slice(0, 7),
    scopes: ["ingest"],
    createdAt: 0,
  };
}

Deno.test("authenticate() passes any key that grants something, whatever its scopes and streams; authorize() needs the scope it checks", async () => {
  let now = 1_000_000;
  const store = new MemoryKeyStore();
  const keys = await KeyRing.parse("read:read-key-0123456789", { store, now: () => now });
  const limited = "sk_limitedKeyLimitedKey0123456789";
  await store.createKey({
    ...runtimeRecord("key_0000000000000002", limited),
    streams: ["orders"],
    expiresAt: now + 1_000,
  });
  // authorize() without a scope is a type error: no value of its scope means "any key".
  // @ts-expect-error: `scope` is a Scope, never undefined
  const scopeless = await authorize(keys, "read-key-0123456789", undefined);
  // Were one passed at run time, it would be no scope the key has: refused, never "any".
  assert.equal(scopeless.error?.status, 403);
  const granted = async (key: string | undefined) => (await authenticate(keys, key)).grant;
  assert.deepEqual([...(await granted("read-key-0123456789"))?.scopes ?? []], ["read"]);
  // A key of other streams, and of no scope this route names, still learns what it may do.
  assert.deepEqual([...(await granted(limited))?.streams ?? []], ["orders"]);
  assert.equal(
    (await authorize(keys, limited, "read", { stream: "orders" })).error?.status,
    403,
    "authorize() still checks the scope",
  );
  const refusal = async (key: string | undefined) => {
    const { error } = await authenticate(keys, key);
    return [error?.status, error?.message];
  };
  assert.deepEqual(await refusal(undefined), [
    401,
    "Missing API key: send 'Authorization: Bearer <key>'",
  ]);
  assert.deepEqual(await refusal("sk_unknownKeyUnknownKey0123456789"), [401, "Invalid API key"]);
  now += 1_000;
  assert.deepEqual(await refusal(limited), [
    401,
    `API key 'key_0000000000000002' expired at ${new Date(1_001_000).toISOString()}`,
  ]);
  const open = await KeyRing.parse("");
  assert.deepEqual(
    [...(await authenticate(open, undefined)).grant?.scopes ?? []].sort(),
    ["admin", "ingest", "read"],
  );
});

Deno.test("KeyRing: a deleted key stops working on another instance within the cache bound, and a new one appears within it", async () => {
  let now = 1_000_000;
  const store = new MemoryKeyStore();
  const options = { store, now: () => now, cacheTtlMs: 2_000 };
  const instanceA = await KeyRing.parse("admin:admin-key-0123456789", options);
  const instanceB = await KeyRing.parse("admin:admin-key-0123456789", options);
  // B looks first, before the key exists: "no such key" is cached too.
  assert.equal(await instanceB.grantOf(RUNTIME_SECRET), null);
  await store.createKey(runtimeRecord("key_0000000000000001", RUNTIME_SECRET));
  assert.equal((await instanceA.grantOf(RUNTIME_SECRET))?.id, "key_0000000000000001");
  now += 1_999;
  assert.equal(await instanceB.grantOf(RUNTIME_SECRET), null);
  now += 1;
  assert.equal((await instanceB.grantOf(RUNTIME_SECRET))?.id, "key_0000000000000001");
  // Deleted (through A's store): B keeps its verdict at most 2 s.
  await store.deleteKey("key_0000000000000001");
  instanceA.forget();
  assert.equal(await instanceA.grantOf(RUNTIME_SECRET), null);
  now += 1_999;
  assert.ok(await instanceB.grantOf(RUNTIME_SECRET));
  now += 1;
  assert.equal(await instanceB.grantOf(RUNTIME_SECRET), null);
});

Deno.test("KeyRing: after the wall clock steps back, a deleted key stops working and a new one appears within the cache bound", async () => {
  let now = 10_000_000;
  const store = new MemoryKeyStore();
  const options = { store, now: () => now, cacheTtlMs: 2_000 };
  const instanceA = await KeyRing.parse("admin:admin-key-0123456789", options);
  const instanceB = await KeyRing.parse("admin:admin-key-0123456789", options);
  const other = `${RUNTIME_SECRET}x`;
  // B caches "no such key" for one text, and a grant for another.
  assert.equal(await instanceB.grantOf(other), null);
  await store.createKey(runtimeRecord("key_0000000000000001", RUNTIME_SECRET));
  await store.createKey(runtimeRecord("key_0000000000000002", other));
  assert.equal((await instanceB.grantOf(RUNTIME_SECRET))?.id, "key_0000000000000001");
  // Deleted through A; then the clock steps back an hour.
  await store.deleteKey("key_0000000000000001");
  instanceA.forget();
  now -= 3_600_000;
  assert.equal(instanceB.cachedGrantOf(RUNTIME_SECRET), undefined);
  assert.equal(await instanceB.grantOf(RUNTIME_SECRET), null);
  assert.equal(instanceB.cachedGrantOf(other), undefined);
  assert.equal((await instanceB.grantOf(other))?.id, "key_0000000000000002");
  // Cached again from the new time, for the bound.
  await store.deleteKey("key_0000000000000002");
  now += 1_999;
  assert.ok(await instanceB.grantOf(other));
  now += 1;
  assert.equal(await instanceB.grantOf(other), null);
});

Deno.test("KeyRing: verdicts are cached, so a key is looked up once per bound, and env keys never", async () => {
  let now = 1_000_000;
  const store = new CountingKeyStore();
  await store.createKey(runtimeRecord("key_0000000000000001", RUNTIME_SECRET));
  const ring = await KeyRing.parse("ingest:ingest-key-0123456789", {
    store,
    now: () => now,
    cacheTtlMs: 2_000,
  });
  for (let i = 0; i < 5; i++) assert.ok(await ring.grantOf(RUNTIME_SECRET));
  assert.equal(store.lookups, 1);
  now += 2_000;
  assert.ok(await ring.grantOf(RUNTIME_SECRET));
  assert.equal(store.lookups, 2);
  assert.deepEqual([...(await ring.scopesOf("ingest-key-0123456789"))], ["ingest"]);
  // Texts that are no run-time key never reach the store.
  assert.equal(await ring.grantOf("not-a-key-at-all-0123456789"), null);
  assert.equal(await ring.grantOf("sk_short"), null);
  assert.equal(store.lookups, 2);
});

Deno.test("KeyRing: concurrent first uses of a key share one look-up", async () => {
  const store = new CountingKeyStore();
  await store.createKey(runtimeRecord("key_0000000000000001", RUNTIME_SECRET));
  const ring = await KeyRing.parse("ingest:ingest-key-0123456789", { store });
  const grants = await Promise.all(Array.from({ length: 10 }, () => ring.grantOf(RUNTIME_SECRET)));
  assert.ok(grants.every((grant) => grant?.id === "key_0000000000000001"));
  assert.equal(store.lookups, 1);
});

Deno.test("KeyRing: the verified-key cache holds at most cacheSize verdicts of each kind (10,000 by default), and texts that are no key push no key out", async () => {
  const store = new CountingKeyStore();
  for (let i = 1; i <= 3; i++) {
    await store.createKey(runtimeRecord(`key_000000000000000${i}`, `${RUNTIME_SECRET}${i}`));
  }
  const ring = await KeyRing.parse("ingest:ingest-key-0123456789", {
    cacheSize: 3,
    store,
    lookupsPerSecond: 1_000,
  });
  for (let i = 1; i <= 3; i++) assert.ok(await ring.grantOf(`${RUNTIME_SECRET}${i}`));
  for (let i = 0; i < 20; i++) {
    assert.equal(await ring.grantOf(`sk_unknownKeyNumber${String(i).padStart(6, "0")}`), null);
  }
  assert.equal(ring.cached, 3);
  assert.equal(ring.missed, 3);
  const lookups = store.lookups;
  for (let i = 1; i <= 3; i++) assert.ok(await ring.grantOf(`${RUNTIME_SECRET}${i}`));
  assert.equal(store.lookups, lookups, "the keys' verdicts are still cached");

  // 10,000 unless told otherwise.
  const byDefault = await KeyRing.parse("ingest:ingest-key-0123456789", { now: () => 0 });
  for (let i = 0; i < 10_050; i++) {
    await byDefault.grantOf(`unknown-text-${String(i).padStart(6, "0")}`);
  }
  assert.equal(byDefault.missed, 10_000);
});

Deno.test("KeyRing: past lookupsPerSecond (20 by default) store look-ups of unknown run-time keys a second, a new one is 503 key_lookup_busy; keys seen valid still verify", async () => {
  const store = new CountingKeyStore();
  await store.createKey(runtimeRecord("key_0000000000000001", RUNTIME_SECRET));
  await store.createKey(runtimeRecord("key_0000000000000002", `${RUNTIME_SECRET}new`));
  let now = 0;
  const ring = await KeyRing.parse("ingest:ingest-key-0123456789", { store, now: () => now });
  assert.ok(await ring.grantOf(RUNTIME_SECRET));
  for (let i = 0; i < 20; i++) {
    assert.equal(await ring.grantOf(`sk_unknownKeyNumber${String(i).padStart(6, "0")}`), null);
  }
  const lookups = store.lookups;
  for (const key of ["sk_unknownKeyNumber999999", `${RUNTIME_SECRET}new`]) {
    await assert.rejects(ring.grantOf(key), (error: ApiError) => {
      assert.deepEqual([error.status, error.code], [503, "key_lookup_busy"]);
      assert.equal(error.headers?.["Retry-After"], "1");
      return true;
    });
  }
  assert.equal(store.lookups, lookups, "no store call for them");
  // Over HTTP: 503 with Retry-After, as the stream-name look-ups past their bound.
  const app = createApp({
    streams: compileConfig({ streams: {} }),
    store: new MemoryStore(),
    keys: ring,
  });
  const busy = await app.request("/v1/streams", {
    headers: { Authorization: "Bearer sk_unknownKeyNumber888888" },
  });
  assert.equal(busy.status, 503);
  assert.equal(busy.headers.get("Retry-After"), "1");
  assert.equal((await busy.json()).error.code, "key_lookup_busy");
  // Known misses are answered from the cache, and a key seen valid is looked up again.
  assert.equal(await ring.grantOf("sk_unknownKeyNumber000000"), null);
  now += 2_500;
  assert.ok(await ring.grantOf(RUNTIME_SECRET));
  // A second on, the budget is back: the new key verifies, and gives its turn back.
  assert.ok(await ring.grantOf(`${RUNTIME_SECRET}new`));
  // A key deleted through this instance expires every cached verdict; keys seen valid are still
  // verified without a turn while made-up keys use the budget up.
  for (let i = 0; i < 25; i++) {
    await ring.grantOf(`sk_unknownKeyNumber${String(100 + i).padStart(6, "0")}`).catch(() => {});
  }
  ring.forget();
  const before = store.lookups;
  assert.ok(await ring.grantOf(RUNTIME_SECRET));
  assert.ok(await ring.grantOf(`${RUNTIME_SECRET}new`));
  assert.equal(store.lookups, before + 2, "each looked up again");
});

Deno.test("KeyRing: an environment key still verifies after its cached verdict expired", async () => {
  let now = 0;
  const ring = await KeyRing.parse("read:read-key-0123456789abc", { now: () => now });
  assert.deepEqual([...(await ring.scopesOf("read-key-0123456789abc"))], ["read"]);
  now += 10_000;
  assert.deepEqual([...(await ring.scopesOf("read-key-0123456789abc"))], ["read"]);
  assert.equal((await ring.scopesOf("read-key-0123456789abd")).size, 0);
});

Deno.test("KeyRing: a cached verdict answers only its own key, never another text (a neighbour, a prefix, other code units)", async () => {
  // A key is visible ASCII (what a header carries); the texts tried against it need not be.
  const key = "admin-key-0123456789abcdef~!";
  // A clock that stands still: the cached verdict must not expire while the property runs.
  const ring = await KeyRing.parse(`admin:${key}`, { now: () => 0 });
  assert.equal((await ring.scopesOf(key)).has("admin"), true);
  assert.equal(ring.cachedGrantOf(key)?.scopes.has("admin"), true);
  const near = fc.oneof(
    fc.string({ unit: "binary", maxLength: 40 }),
    fc.nat({ max: key.length - 1 }).map((at) => key.slice(0, at)),
    fc.tuple(fc.nat({ max: key.length - 1 }), fc.nat({ max: 0xffff })).map(([at, unit]) =>
      key.slice(0, at) + String.fromCharCode(unit) + key.slice(at + 1)
    ),
    // Code units that share a byte with the key's: a unit's high byte set, a unit split in two.
    fc.constantFrom(key.replace("~", "\uff7e"), key.replace("~", "\u007e\u0000"), `${key}\u0000`),
  ).filter((text) => text !== key);
  await fc.assert(
    fc.asyncProperty(near, async (text) => {
      // Not cached yet, or cached as no key.
      assert.equal(ring.cachedGrantOf(text) ?? null, null);
      assert.equal((await ring.scopesOf(text)).size, 0);
      assert.equal(ring.cachedGrantOf(text), null);
    }),
  );
  assert.equal(ring.cachedGrantOf(key)?.scopes.has("admin"), true);
});

Deno.test("A key listed in EDGESTREAM_KEYS under two scopes gets both", async () => {
  const both = await KeyRing.parse("ingest:shared-key-0123456789, read:shared-key-0123456789");
  const grant = await both.grantOf("shared-key-0123456789");
  assert.deepEqual([...grant?.scopes ?? []].sort(), ["ingest", "read"]);
  const one = await KeyRing.parse("read:shared-key-0123456789");
  assert.deepEqual([...(await one.grantOf("shared-key-0123456789"))?.scopes ?? []], ["read"]);
});

Deno.test("KeyRing: by default a verdict is cached 2 s, then the store is asked again", async () => {
  let now = 1_000_000;
  const store = new CountingKeyStore();
  await store.createKey(runtimeRecord("key_0000000000000001", RUNTIME_SECRET));
  const ring = await KeyRing.parse("ingest:ingest-key-0123456789", { store, now: () => now });
  assert.ok(await ring.grantOf(RUNTIME_SECRET));
  now += 1_999;
  assert.ok(await ring.grantOf(RUNTIME_SECRET));
  assert.equal(store.lookups, 1);
  now += 1;
  assert.ok(await ring.grantOf(RUNTIME_SECRET));
  assert.equal(store.lookups, 2);
});

Deno.test("KeyRing: a look-up still reading the store when a key is deleted through the instance leaves it refused at once, not cached valid for the bound", async () => {
  /** A key store whose look-ups answer what they read only when released, as a slow Redis does. */
  class SlowKeyStore extends MemoryKeyStore {
    release: () => void = () => {};
    override async keyByHash(hash: string) {
      const found = await super.keyByHash(hash);
      await new Promise<void>((resolve) => this.release = resolve);
      return found;
    }
  }
  const store = new SlowKeyStore();
  await store.createKey(runtimeRecord("key_0000000000000001", RUNTIME_SECRET));
  const ring = await KeyRing.parse("admin:admin-key-0123456789", { store, cacheTtlMs: 2_000 });
  // A request's look-up has read the key, its answer still on the way.
  const early = ring.grantOf(RUNTIME_SECRET);
  await new Promise((resolve) => setTimeout(resolve, 0));
  // Deleted through this instance meanwhile.
  const deleted = store.deleteKey("key_0000000000000001");
  assert.equal(await deleted, true);
  ring.forget();
  // A request that comes after the deletion must not share the look-up begun before it.
  const late = ring.grantOf(RUNTIME_SECRET);
  store.release();
  await early;
  store.release();
  assert.equal(await late, null);
  // Nor may the early look-up's answer be cached as a grant.
  const after = ring.grantOf(RUNTIME_SECRET);
  store.release();
  assert.equal(await after, null);
});

Deno.test("KeyRing: a verdict is cached for the bound from when the store was asked, so a slow answer does not stretch revocation past it", async () => {
  let now = 1_000_000;
  /** A key store that answers what it read after `latencyMs` of the clock, as a slow network. */
  class SlowKeyStore extends MemoryKeyStore {
    override async keyByHash(hash: string) {
      const found = await super.keyByHash(hash);
      now += 1_500;
      return found;
    }
  }
  const store = new SlowKeyStore();
  await store.createKey(runtimeRecord("key_0000000000000001", RUNTIME_SECRET));
  const ring = await KeyRing.parse("admin:admin-key-0123456789", {
    store,
    now: () => now,
    cacheTtlMs: 2_000,
  });
  const asked = now;
  assert.ok(await ring.grantOf(RUNTIME_SECRET));
  // Deleted through another instance just after this one's read.
  await store.deleteKey("key_0000000000000001");
  now = asked + 2_000;
  const late = ring.grantOf(RUNTIME_SECRET);
  assert.equal(await late, null);
});

/** Who may call each operation of the API document, as README's table of routes says. */
const OPERATION_SCOPES: Record<string, "none" | "any" | "ingest" | "read" | "admin"> = {
  "GET /healthz": "none",
  "GET /readyz": "none",
  "GET /openapi.json": "none",
  "GET /v1/key": "any",
  "POST /v1/streams/{stream}/events": "ingest",
  "GET /v1/streams/{stream}/ws": "ingest",
  "GET /v1/streams": "read",
  "GET /v1/streams/{stream}": "read",
  "GET /v1/streams/{stream}/counters/{counter}": "read",
  "GET /v1/streams/{stream}/counters/{counter}/current": "read",
  "GET /v1/streams/{stream}/subscribe": "read",
  "PUT /v1/streams/{stream}": "admin",
  "DELETE /v1/streams/{stream}": "admin",
  "POST /v1/admin/sweep": "admin",
  "POST /v1/keys": "admin",
  "GET /v1/keys": "admin",
  "GET /v1/keys/{id}": "admin",
  "DELETE /v1/keys/{id}": "admin",
  "POST /v1/webhooks": "admin",
  "GET /v1/webhooks": "admin",
  "GET /v1/webhooks/{id}": "admin",
  "PATCH /v1/webhooks/{id}": "admin",
  "DELETE /v1/webhooks/{id}": "admin",
  "POST /v1/webhooks/{id}/rotate-secret": "admin",
  "POST /v1/webhooks/{id}/test": "admin",
  "GET /v1/webhooks/{id}/deliveries": "admin",
  "POST /v1/webhooks/{id}/replay": "admin",
  "POST /v1/deliveries/{deliveryId}/retry": "admin",
};

Deno.test("every operation of the API document refuses a missing, unknown, deleted or expired key (401), a key without its scope or limited to other streams (403), and a refusal changes nothing", async () => {
  const { setup, ADMIN_KEY } = await import("../fanout/webhooks/_setup.ts");
  const { app, clock, close } = await setup({ auth: true });
  try {
    const admin = { Authorization: `Bearer ${ADMIN_KEY}` };
    const create = (body: unknown) => createKey(app, body, ADMIN_KEY);
    const deleted = await create({ scopes: ["admin"] });
    assert.equal(
      (await app.request(`/v1/keys/${deleted.id}`, { method: "DELETE", headers: admin })).status,
      204,
    );
    const expired = await create({
      scopes: ["admin"],
      expiresAt: new Date(clock.now + 1_000).toISOString(),
    });
    const byScope = {
      ingest: (await create({ scopes: ["ingest"] })).key,
      read: (await create({ scopes: ["read"] })).key,
    };
    // Admin implies every scope: only its streams limit it.
    const limited = await create({ scopes: ["admin"], streams: ["signups"] });
    const victim = await create({ scopes: ["read"], description: "not to be deleted" });
    const endpoint = await (await app.request("/v1/webhooks", {
      method: "POST",
      headers: { ...admin, "Content-Type": "application/json" },
      body: JSON.stringify({ url: "http://127.0.0.1:9/hook" }),
    })).json();
    const made = await app.request("/v1/streams/api_made", {
      method: "PUT",
      headers: { ...admin, "Content-Type": "application/json" },
      body: JSON.stringify({ counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } }),
    });
    assert.equal(made.status, 201);
    clock.now += 2_000;

    const snapshot = async () => {
      const parts = [];
      for (
        const path of [
          "/v1/keys",
          "/v1/webhooks",
          "/v1/streams",
          `/v1/webhooks/${endpoint.id}/deliveries`,
          "/v1/streams/orders/counters/per_minute",
        ]
      ) {
        const res = await app.request(path, { headers: admin });
        assert.equal(res.status, 200, path);
        parts.push(await res.text());
      }
      return parts;
    };
    // Reading a config stream's windows records it in the store (its version goes 0 → 1): once
    // before the snapshot taken.
    await snapshot();
    const before = await snapshot();

    const event = [{ id: "m-1", ts: new Date(clock.now).toISOString(), country: "DE" }];
    const bodies: Record<string, unknown> = {
      "POST /v1/streams/{stream}/events": event,
      "PUT /v1/streams/{stream}": {
        counters: { m: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
      "POST /v1/keys": { scopes: ["admin"] },
      "POST /v1/webhooks": { url: "http://127.0.0.1:9/other" },
      "PATCH /v1/webhooks/{id}": { description: "changed" },
      "POST /v1/webhooks/{id}/replay": {},
    };
    const document = await (await app.request("/openapi.json")).json();
    const operations: string[] = [];
    for (const [template, item] of Object.entries(document.paths as Record<string, object>)) {
      for (const method of Object.keys(item)) {
        if (["get", "put", "post", "patch", "delete"].includes(method)) {
          operations.push(`${method.toUpperCase()} ${template}`);
        }
      }
    }
    // A new operation gets its row here, and so an answer to who may call it.
    assert.deepEqual(operations.toSorted(), Object.keys(OPERATION_SCOPES).toSorted());

    const refusals: string[] = [];
    for (const operation of operations) {
      const scope = OPERATION_SCOPES[operation];
      // The WebSocket ingest route is asked without an upgrade here: ingest_socket_test.ts
      // checks its keys over real sockets.
      if (scope === "none" || operation === "GET /v1/streams/{stream}/ws") continue;
      const [method, template] = operation.split(" ");
      const namesStream = template.includes("{stream}");
      const path = (stream: string) =>
        template.replace("{stream}", stream).replace("{counter}", "per_minute")
          .replace("{id}", template.startsWith("/v1/keys") ? victim.id : endpoint.id)
          .replace("{deliveryId}", "dl_0123456789abcdef");
      const body = bodies[operation];
      const ask = async (key: string | undefined, stream: string) => {
        const headers: Record<string, string> = { Accept: "text/event-stream" };
        if (key !== undefined) headers.Authorization = `Bearer ${key}`;
        if (body !== undefined) headers["Content-Type"] = "application/json";
        const res = await app.request(path(stream), {
          method,
          headers,
          body: body === undefined ? undefined : JSON.stringify(body),
        });
        // A subscription let through would never end its body: the answer's status says enough.
        if (res.headers.get("Content-Type")?.startsWith("text/event-stream")) {
          await res.body?.cancel();
          return { status: res.status, code: undefined };
        }
        const text = await res.text();
        return { status: res.status, code: text ? JSON.parse(text).error?.code : undefined };
      };
      const expect = async (
        who: string,
        key: string | undefined,
        stream: string,
        status: number,
      ) => {
        const answer = await ask(key, stream);
        const code = status === 401 ? "unauthorized" : "forbidden";
        if (answer.status !== status || answer.code !== code) {
          refusals.push(`${operation} as ${who}: ${answer.status} ${answer.code}`);
        }
      };
      // PUT and DELETE act on a stream made through the API, which they could replace or delete.
      const stream = method === "PUT" || method === "DELETE" ? "api_made" : "orders";
      await expect("no key", undefined, stream, 401);
      await expect("an unknown key", "sk_unknown0123456789abcdef", stream, 401);
      await expect("a deleted key", deleted.key, stream, 401);
      await expect("an expired key", expired.key, stream, 401);
      for (const [held, key] of Object.entries(byScope)) {
        const lacks = scope === "admin" || (scope !== "any" && held !== scope);
        if (lacks) await expect(`a ${held} key`, key, stream, 403);
      }
      // GET /v1/streams answers a limited key its own streams; GET /v1/key any key.
      if (scope !== "any" && operation !== "GET /v1/streams") {
        await expect(
          "an admin key limited to other streams",
          limited.key,
          namesStream ? stream : "signups",
          403,
        );
      }
    }
    assert.deepEqual(refusals, []);
    assert.deepEqual(await snapshot(), before);
  } finally {
    await close();
  }
});

Deno.test("a method a path does not take is checked for the path's key first, on every path of the API document alike (as the README says): 401 without a key, 403 to a key with no scope the path's operations take, else 405 with Allow", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "on an API path only after a key check: `401` without a valid key, `403` to a key with none of the scopes the path's methods take (a `read` key's `PATCH /v1/streams/orders` is `405`, its `PATCH /v1/keys` `403`)";
  assert.ok(readme.includes(claim), claim);
  const { setup, ADMIN_KEY, READ_KEY } = await import("../fanout/webhooks/_setup.ts");
  const { app, close } = await setup({ auth: true });
  try {
    // The API document tells its clients so too.
    const document = await (await app.request("/openapi.json")).json();
    const told =
      "on a `/v1/…` path only after its key check (`401` without a valid key, `403` to a key with none of the scopes the path's operations take)";
    assert.ok(document.info.description.includes(told), told);
    const ingestKey = (await createKey(app, { scopes: ["ingest"] }, ADMIN_KEY)).key;
    const keyId = (await createKey(app, { scopes: ["read"] }, ADMIN_KEY)).id;
    const endpoint = await (await app.request("/v1/webhooks", {
      method: "POST",
      headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": "application/json" },
      body: JSON.stringify({ url: "http://127.0.0.1:9/hook" }),
    })).json();
    const keys = { ingest: ingestKey, read: READ_KEY, admin: ADMIN_KEY };
    // The scopes of each path's operations, and the methods it takes.
    const paths = new Map<string, { scopes: Set<string>; methods: Set<string> }>();
    for (const [operation, scope] of Object.entries(OPERATION_SCOPES)) {
      const [method, template] = operation.split(" ");
      const path = paths.get(template) ?? { scopes: new Set(), methods: new Set() };
      path.scopes.add(scope);
      path.methods.add(method);
      if (method === "GET") path.methods.add("HEAD");
      paths.set(template, path);
    }
    const answers: string[] = [];
    const expected: string[] = [];
    for (const [template, { scopes, methods }] of paths) {
      const path = template.replace("{stream}", "orders").replace("{counter}", "per_minute")
        .replace("{id}", template.startsWith("/v1/keys") ? keyId : endpoint.id)
        .replace("{deliveryId}", "dl_0123456789abcdef");
      const allow = [...methods].sort().join(", ");
      for (const method of ["GET", "POST", "PUT", "PATCH", "DELETE"]) {
        if (methods.has(method)) continue;
        for (const [who, key] of [["no key", undefined], ...Object.entries(keys)]) {
          const res = await app.request(path, {
            method,
            headers: key === undefined ? {} : { Authorization: `Bearer ${key}` },
          });
          const code = (await res.json()).error.code;
          answers.push(
            `${method} ${template} (${who}): ${res.status} ${code} ${res.headers.get("Allow")}`,
          );
          // Admin holds every scope; a path any caller may use asks no key.
          const allowed = scopes.has("none") ||
            (key !== undefined &&
              (who === "admin" || scopes.has("any") || scopes.has(who as string)));
          expected.push(
            `${method} ${template} (${who}): ${
              allowed
                ? `405 method_not_allowed ${allow}`
                : key === undefined
                ? "401 unauthorized null"
                : "403 forbidden null"
            }`,
          );
        }
      }
    }
    assert.deepEqual(answers, expected);
    // Each family answered both ways: 405 to one key, 403 to another.
    for (const family of ["/v1/streams/{stream}", "/v1/admin/sweep", "/v1/webhooks", "/v1/keys"]) {
      const of = answers.filter((answer) => answer.includes(` ${family} (`));
      assert.ok(of.some((answer) => answer.includes(": 405 ")), family);
      assert.ok(of.some((answer) => answer.includes(": 403 ")), family);
    }
  } finally {
    await close();
  }
});

Deno.test("an OPTIONS is answered to a key limited to streams as its 405 is, whatever the path names (as the README says): 204 with the path's Allow, and a key without the scope 403", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "a path no route serves the `404`, or `405` when the path takes other methods, every key with the scope gets, whatever stream it names, as it gets the `204` with `Allow` of an `OPTIONS`";
  assert.ok(readme.includes(claim), claim);
  const { app, createKey } = await keyedApp({
    streams: {
      streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
    },
    now: () => 1_767_225_600_000,
  });
  const limitedAdmin = (await createKey({ scopes: ["admin"], streams: ["orders"] })).key;
  const limitedRead = (await createKey({ scopes: ["read"], streams: ["orders"] })).key;
  const ask = (method: string, path: string, key: string) =>
    app.request(path, { method, headers: { Authorization: `Bearer ${key}` } });
  for (
    const [path, key, other, allow] of [
      ["/v1/keys", limitedAdmin, "PATCH", "GET, HEAD, POST"],
      ["/v1/streams/signups", limitedRead, "POST", "DELETE, GET, HEAD, PUT"],
      ["/v1/streams/orders", limitedRead, "POST", "DELETE, GET, HEAD, PUT"],
    ] as const
  ) {
    const methodNotAllowed = await ask(other, path, key);
    assert.equal(methodNotAllowed.status, 405, `${other} ${path}`);
    const options = await ask("OPTIONS", path, key);
    assert.equal(options.status, 204, `OPTIONS ${path}`);
    assert.equal(methodNotAllowed.headers.get("Allow"), allow, path);
    assert.equal(options.headers.get("Allow"), allow, path);
  }
  // The scope is still needed: a read key is not told what /v1/keys takes.
  const unscoped = await ask("OPTIONS", "/v1/keys", limitedRead);
  assert.equal(unscoped.status, 403);
  assert.equal(unscoped.headers.get("Allow"), null);
});

// After the test of the once-per-process ?token= warning, which these requests would use up.
Deno.test("every route that takes a key in the query refuses a request whose header holds another (400 invalid_request naming both places) and counts nothing; the same key in both is served", async () => {
  const server = await startServer({ auth: true, keyRing: { store: new MemoryKeyStore() } });
  try {
    const created = await fetch(`${server.base}/v1/keys`, {
      method: "POST",
      headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
      body: JSON.stringify({
        type: "publishable",
        streams: ["orders"],
        origins: ["https://shop.example"],
      }),
    });
    assert.equal(created.status, 201);
    const pk: string = (await created.json()).key;
    const refusal = (place: string) =>
      new RegExp(
        `^Two different API keys: one in the 'Authorization: Bearer' header, another in '\\?${place}='; send one key, in one place$`,
      );
    const ingest = (query: string, header: string) =>
      fetch(`${server.base}/v1/streams/orders/events?key=${query}`, {
        method: "POST",
        headers: { Authorization: `Bearer ${header}`, "Content-Type": "application/json" },
        body: JSON.stringify({ id: crypto.randomUUID() }),
      });
    // A publishable key in ?key=, a secret one in the header, and the other way round.
    for (const [query, header] of [[pk, KEYS.ingest], [KEYS.ingest, pk]]) {
      const res = await ingest(query, header);
      assert.equal(res.status, 400);
      const { error } = await res.json();
      assert.equal(error.code, "invalid_request");
      assert.match(error.message, refusal("key"));
    }
    assert.equal((await ingest(pk, pk)).status, 202);
    // A secret key is in the URL all the same when the header holds it too: refused there.
    const secret = await ingest(KEYS.ingest, KEYS.ingest);
    assert.equal(secret.status, 401);
    assert.match(
      (await secret.json()).error.message,
      /^Only publishable keys \(pk_…\) may be sent as '\?key='/,
    );
    const stats = await server.store.stats(
      "orders",
      compileConfig(TEST_CONFIG).get("orders")!.counterMetas,
    );
    assert.equal(stats.accepted, 1);

    // Live subscriptions (SSE and WebSocket) and WebSocket ingest take ?token=.
    const sse = (token: string) =>
      fetch(`${server.base}/v1/streams/orders/subscribe?token=${token}`, {
        headers: { Accept: "text/event-stream", Authorization: `Bearer ${KEYS.read}` },
      });
    const differ = await sse(KEYS.admin);
    assert.equal(differ.status, 400);
    const { error } = await differ.json();
    assert.equal(error.code, "invalid_request");
    assert.match(error.message, refusal("token"));
    const same = await sse(KEYS.read);
    assert.equal(same.status, 200);
    await same.body?.cancel();
    for (const [path, key] of [["subscribe", KEYS.read], ["ws", KEYS.ingest]]) {
      const refused = await nodeClient(
        server.wsUrl(`/v1/streams/orders/${path}?token=${KEYS.admin}`),
        { headers: { Authorization: `Bearer ${key}` } },
      );
      assert.equal(refused.status, 400, path);
      const served = await nodeClient(server.wsUrl(`/v1/streams/orders/${path}?token=${key}`), {
        headers: { Authorization: `Bearer ${key}` },
      });
      assert.equal(served.status, undefined, `${path} upgraded`);
      await served.close();
    }
  } finally {
    await server.close();
  }
});
