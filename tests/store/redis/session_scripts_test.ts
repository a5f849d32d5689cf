/**
 * Session counters on Redis: an ingest stays one EVALSHA however many
 * sessions it opens, extends and merges, and every session key lives under
 * the stream's hash-tagged prefix with a TTL.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { compileConfig } from "../../../src/config/mod.ts";
import { ingestItems } from "../../../src/ingest/mod.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { redisTest, withDirect } from "../../_redis.ts";
import { billedCommands, commandNames, startUpstashProxy } from "../../_upstash_proxy.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 3_600_000;

const stream = compileConfig({
  streams: {
    visits: {
      time: { field: "t", lateness: "1h" },
      counters: {
        visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" },
        pages: { window: { session: "30s" }, groupBy: ["user"], aggregate: { distinct: "page" } },
        spent: { window: { session: "30s" }, groupBy: ["user"], aggregate: { sum: "amount" } },
        perMinute: { window: { tumbling: "1m" }, aggregate: "count" },
      },
    },
  },
}).get("visits")!;

/** `count` events of 20 users on a 25 s grid over 50 min, shuffled, so later batches merge. */
function events(offset: number, count: number): object[] {
  return Array.from({ length: count }, (_, i) => ({
    t: T0 + ((offset + i) * 7_919 % 120) * 25_000,
    user: `u${(offset + i) % 20}`,
    page: `/p${i % 7}`,
    amount: i % 5,
  }));
}

function items(list: object[]) {
  return list.map((value) => ({ ok: true as const, value }));
}

redisTest(
  "an ingest into session counters is one EVALSHA for 1, 100 or 1000 events",
  async (fixture) => {
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    try {
      const redis = new Redis({ url: proxy.url, token: fixture.restToken, enableTelemetry: false });
      const store = new RedisStore(redis, { now: () => NOW });
      await ingestItems(stream, items(events(0, 1)), { store, nowMs: NOW });
      proxy.take();
      let offset = 1;
      for (const size of [1, 100, 1000]) {
        const reply = await ingestItems(stream, items(events(offset, size)), { store, nowMs: NOW });
        offset += size;
        assert.equal(reply.accepted, size);
        const requests = proxy.take().map((request) => ({
          names: commandNames(request),
          billed: billedCommands(request),
        }));
        assert.deepEqual(requests, [{ names: ["evalsha"], billed: 1 }], `batch of ${size}`);
      }
      assert.equal((await store.stats("visits", [])).applied, 1102);
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "session keys live under the stream's hash-tagged prefix, each with a TTL",
  async (fixture) => {
    const redis = new Redis({
      url: fixture.restUrl,
      token: fixture.restToken,
      enableTelemetry: false,
    });
    const store = new RedisStore(redis, { now: () => NOW });
    await ingestItems(stream, items(events(0, 200)), { store, nowMs: NOW });
    await ingestItems(stream, items([{ t: T0 + 3_500_000, user: "tick", page: "/", amount: 0 }]), {
      store,
      nowMs: NOW,
    });
    // Some sessions close (their keys stay readable until their TTL), others stay open.
    const closed = await store.closeWindows("visits", stream.counterMetas, {
      latenessMs: 3_600_000,
    });
    assert.equal(closed.length, 0);
    const closedNow = await store.closeWindows("visits", stream.counterMetas, {
      latenessMs: 300_000,
      limit: 1000,
    });
    assert.ok(closedNow.length > 0);
    const kinds = new Set<string>();
    await withDirect(fixture.redisUrl, async (send) => {
      for (const key of (await send("KEYS", "*")) as string[]) {
        assert.ok(key.startsWith("es:{visits}:"), `${key}: outside the es:{visits}: prefix`);
        const ttl = Number(await send("PTTL", key));
        assert.ok(ttl > 0, `${key}: PTTL is ${ttl}, every key must expire`);
        kinds.add(key.slice("es:{visits}:".length).split(":")[0]);
      }
    });
    for (const kind of ["sz", "so", "sa", "ss", "sv", "sh"]) {
      assert.ok(kinds.has(kind), `no '${kind}' key among ${[...kinds].join(", ")}`);
    }
  },
);

redisTest(
  "a batch with a late event beside a quantiles counter is rebuilt in the script and still extends sessions",
  async (fixture) => {
    const redis = new Redis({
      url: fixture.restUrl,
      token: fixture.restToken,
      enableTelemetry: false,
    });
    const store = new RedisStore(redis, { now: () => NOW });
    const mixed = compileConfig({
      streams: {
        visits: {
          time: { field: "t", lateness: "1m" },
          counters: {
            visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" },
            ms: { window: { tumbling: "1m" }, aggregate: { quantiles: "ms" } },
          },
        },
      },
    }).get("visits")!;
    await ingestItems(mixed, items([{ t: NOW - 1_000, user: "a", ms: 5 }]), { store, nowMs: NOW });
    // The second event is beyond lateness: the script rebuilds the cells without it.
    const reply = await ingestItems(
      mixed,
      items([{ t: NOW, user: "a", ms: 7 }, { t: NOW - 3_600_000, user: "a", ms: 9 }]),
      { store, nowMs: NOW },
    );
    assert.equal(reply.late, 1);
    const visit = mixed.counters.find((counter) => counter.name === "visit")!;
    const sessions = await store.readSessions("visits", visit.meta, { fromMs: 0, toMs: NOW + 1 });
    assert.equal(sessions.length, 1);
    assert.equal(sessions[0].end, NOW);
  },
);
