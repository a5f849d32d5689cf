/**
 * Run-time keys and rate limits across instances: two apps on one real
 * Redis, as two server processes would share it.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { createApp } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { RedisKeyStore } from "../../src/store/redis/key_store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import { KEYS } from "../_fixtures.ts";
import { type RedisFixture, redisTest, restClient } from "../_redis.ts";
import { commandNames, startUpstashProxy } from "../_upstash_proxy.ts";

const CONFIG = {
  streams: {
    limited: {
      limits: { eventsPerSecond: 1, burst: 5 },
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
};

async function instance(fixture: RedisFixture, now: () => number) {
  const redis = restClient(fixture);
  const store = new RedisStore(redis, { now });
  const keys = await KeyRing.parse(`admin:${KEYS.admin},ingest:${KEYS.ingest}`, {
    store: new RedisKeyStore(redis),
    now,
  });
  return { app: createApp({ streams: compileConfig(CONFIG), store, keys, now }), store };
}

function send(key: string, events: unknown[]): [string, RequestInit] {
  return ["/v1/streams/limited/events", {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
    body: JSON.stringify(events),
  }];
}

redisTest(
  "a key created on one instance works on another, and once deleted stops working on every instance within 2 s",
  async (fixture) => {
    let now = Date.now();
    const a = await instance(fixture, () => now);
    const b = await instance(fixture, () => now);
    const res = await a.app.request("/v1/keys", {
      method: "POST",
      headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
      body: JSON.stringify({ scopes: ["ingest"] }),
    });
    const created = await res.json();
    assert.equal((await b.app.request(...send(created.key, [{}]))).status, 202);
    const del = await a.app.request(`/v1/keys/${created.id}`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${KEYS.admin}` },
    });
    assert.equal(del.status, 204);
    assert.equal((await a.app.request(...send(created.key, [{}]))).status, 401);
    // B verified the key a moment ago and may keep that verdict up to the bound.
    now += 1_999;
    assert.equal((await b.app.request(...send(created.key, [{}]))).status, 202);
    now += 1;
    assert.equal((await b.app.request(...send(created.key, [{}]))).status, 401);
  },
);

redisTest(
  "a stream's rate limit holds across two instances in the same apply, refused events are not counted, and the 429 gives its wait as details.retryAfterMs",
  async (fixture) => {
    const now = Date.now();
    const a = await instance(fixture, () => now);
    const b = await instance(fixture, () => now);
    assert.equal((await a.app.request(...send(KEYS.ingest, [{}, {}, {}]))).status, 202);
    const refused = await b.app.request(...send(KEYS.ingest, [{}, {}, {}]));
    assert.equal(refused.status, 429);
    assert.equal(refused.headers.get("RateLimit-Policy"), '"stream";q=5;w=5');
    assert.equal(refused.headers.get("RateLimit"), '"stream";r=2;t=1');
    assert.equal(refused.headers.get("Retry-After"), "1");
    // Redis refills by its own clock: less than the 1000 ms to the next token, in whole ms, as the
    // message's "retry in" says.
    const { error } = await refused.json();
    assert.equal(error.code, "rate_limited");
    const retryAfterMs = error.details?.retryAfterMs;
    assert.ok(Number.isInteger(retryAfterMs), `whole ms: ${retryAfterMs}`);
    assert.ok(retryAfterMs > 0 && retryAfterMs <= 1000, `within 1000 ms: ${retryAfterMs}`);
    assert.equal(retryAfterMs, Number(/retry in (\d+) ms/.exec(error.message)?.[1]));
    assert.equal((await b.app.request(...send(KEYS.ingest, [{}, {}]))).status, 202);
    assert.equal((await a.app.request(...send(KEYS.ingest, [{}]))).status, 429);
    const stats = await a.store.stats(
      "limited",
      compileConfig(CONFIG).get("limited")!.counterMetas,
    );
    assert.deepEqual([stats.accepted, stats.applied], [5, 5]);
  },
);

redisTest(
  "a run-time key with a rate limit on a limited stream costs one look-up per cache bound, and each ingest stays one EVALSHA",
  async (fixture) => {
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    try {
      const now = Date.now();
      const redis = new Redis({ url: proxy.url, token: fixture.restToken, enableTelemetry: false });
      const keyStore = new RedisKeyStore(redis);
      const keys = await KeyRing.parse(`admin:${KEYS.admin}`, { store: keyStore, now: () => now });
      const config = {
        streams: {
          limited: {
            limits: { eventsPerSecond: 1000, burst: 1000 },
            counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
          },
        },
      };
      const app = createApp({
        streams: compileConfig(config),
        store: new RedisStore(redis, { now: () => now }),
        keys,
        now: () => now,
      });
      const created = await (await app.request("/v1/keys", {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
        body: JSON.stringify({
          scopes: ["ingest"],
          rateLimit: { eventsPerSecond: 100, burst: 100 },
        }),
      })).json();
      // Warm the script and the key's verdict.
      assert.equal((await app.request(...send(created.key, [{}]))).status, 202);
      proxy.take();
      for (let i = 0; i < 3; i++) {
        assert.equal((await app.request(...send(created.key, [{}, {}]))).status, 202);
        assert.deepEqual(proxy.take().map(commandNames), [["evalsha"]]);
      }
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "a read key limited to streams, created on one instance, lists only its streams on another (GET /v1/streams, the dashboard's first read)",
  async (fixture) => {
    const config = {
      streams: { ...CONFIG.streams, other: { counters: CONFIG.streams.limited.counters } },
    };
    const at = async () => {
      const redis = restClient(fixture);
      const keys = await KeyRing.parse(`admin:${KEYS.admin}`, { store: new RedisKeyStore(redis) });
      return createApp({ streams: compileConfig(config), store: new RedisStore(redis), keys });
    };
    const a = await at();
    const b = await at();
    const res = await a.request("/v1/keys", {
      method: "POST",
      headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
      body: JSON.stringify({ scopes: ["read"], streams: ["other"] }),
    });
    assert.equal(res.status, 201);
    const created = await res.json();
    const get = (path: string) =>
      b.request(path, { headers: { Authorization: `Bearer ${created.key}` } });
    const listed = await get("/v1/streams");
    assert.equal(listed.status, 200);
    assert.deepEqual((await listed.json()).streams.map((s: { name: string }) => s.name), [
      "other",
    ]);
    const everything = await b.request("/v1/streams", {
      headers: { Authorization: `Bearer ${KEYS.admin}` },
    });
    assert.equal((await everything.json()).streams.length, 2);
    const refused = await get("/v1/streams/limited");
    assert.equal(refused.status, 403);
    await refused.body?.cancel();
  },
);

redisTest(
  "a description with a lone surrogate is refused (400) and stores nothing: GET /v1/keys keeps working, as Redis's JSON decoder refuses such a record",
  async (fixture) => {
    const now = Date.now();
    const { app } = await instance(fixture, () => now);
    const admin = { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" };
    const res = await app.request("/v1/keys", {
      method: "POST",
      headers: admin,
      body: '{"scopes": ["read"], "description": "x\\udc00"}',
    });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.code, "invalid_body");
    const listed = await app.request("/v1/keys", { headers: admin });
    assert.equal(listed.status, 200);
    assert.deepEqual(await listed.json(), { keys: [], nextCursor: null });
  },
);
