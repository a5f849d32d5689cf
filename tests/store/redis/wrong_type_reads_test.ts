/**
 * The Redis store's reads outside scripts (the stats' HMGET and HGETALL, the log's XRANGE and
 * XREVRANGE) of a key something else wrote over with another type: Redis's `WRONGTYPE` error,
 * not "Redis is unavailable", with auto-pipelining and without; and a sweep that meets one sweeps
 * the other streams.
 *
 * @module
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { createApp } from "../../../src/app.ts";
import { compileConfig } from "../../../src/config/mod.ts";
import { sweepOnce } from "../../../src/fanout/mod.ts";
import { KeyRing } from "../../../src/http/auth.ts";
import { ingestItems } from "../../../src/ingest/mod.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { StoreRefusedError, StoreUnavailableError } from "../../../src/store/types.ts";
import { redisTest } from "../../_redis.ts";
import { send } from "./_key_checks.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 300_000;

const STREAMS = compileConfig({
  streams: Object.fromEntries(
    ["a", "b"].map((name) => [name, {
      time: { field: "t" },
      counters: { count: { window: { tumbling: "1m" }, aggregate: "count" } },
    }]),
  ),
});

/** Asserts `call` fails as Redis's WRONGTYPE refusal, not as the store being unavailable. */
async function assertWrongType(call: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(call, (error: unknown) => {
    assert.ok(!(error instanceof StoreUnavailableError), `${what}: ${error}`);
    assert.ok(error instanceof StoreRefusedError, `${what}: ${error}`);
    assert.match(error.message, /^Redis refused \w+: WRONGTYPE /);
    return true;
  });
}

for (const enableAutoPipelining of [true, false]) {
  const mode = enableAutoPipelining ? "auto-pipelining" : "no auto-pipelining";
  redisTest(
    `a stats or log key of another type fails its read as WRONGTYPE, not as Redis unavailable, and the sweep sweeps the other streams (${mode})`,
    async (fixture) => {
      const redis = new Redis({
        url: fixture.restUrl,
        token: fixture.restToken,
        enableTelemetry: false,
        enableAutoPipelining,
      });
      const store = new RedisStore(redis, { now: () => NOW });
      for (const stream of STREAMS.values()) {
        const events = [{ t: T0 }, { t: T0 + 61_000 }, { t: T0 + 125_000 }].map((value) => ({
          ok: true as const,
          value,
        }));
        const result = await ingestItems(stream, events, { store, nowMs: NOW });
        assert.equal(result.accepted, 3);
      }
      await send(fixture, "SET", `${store.keyPrefix("a")}stats`, "x");
      await send(fixture, "DEL", `${store.keyPrefix("a")}log`);
      await send(fixture, "SET", `${store.keyPrefix("a")}log`, "x");

      await assertWrongType(store.stats("a", []), "stats (HGETALL)");
      await assertWrongType(store.readLog("a", null, 10), "readLog (XRANGE)");
      await assertWrongType(store.lastLogId("a"), "lastLogId (XREVRANGE)");
      // Sent at the same time (in one HTTP request when pipelined): the other stream's reads answer.
      const [bad, good, log] = await Promise.allSettled([
        store.stats("a", []),
        store.stats("b", []),
        store.readLog("b", null, 10),
      ]);
      assert.equal(bad.status, "rejected");
      assert.equal(good.status, "fulfilled", String((good as PromiseRejectedResult).reason));
      assert.equal(log.status, "fulfilled", String((log as PromiseRejectedResult).reason));

      // Closes sent at the same time by a store that has not closed either stream yet: their stats'
      // HMGETs go in one HTTP request when pipelined, and only "a"'s fails.
      const fresh = new RedisStore(redis, { now: () => NOW });
      const closes = await Promise.allSettled(
        ["a", "b"].map((name) =>
          fresh.closeWindows(name, STREAMS.get(name)!.counterMetas, { latenessMs: 0, peek: true })
        ),
      );
      assert.equal(closes[0].status, "rejected");
      assert.ok(
        (closes[0] as PromiseRejectedResult).reason instanceof StoreRefusedError,
        String((closes[0] as PromiseRejectedResult).reason),
      );
      assert.equal(
        closes[1].status,
        "fulfilled",
        String((closes[1] as PromiseRejectedResult).reason),
      );

      // "a" fails, "b" still closes.
      // A store that has not closed "a" yet (another instance, a restart): its first read of a
      // stream in a close is the stats' HMGET.
      const report = await sweepOnce(STREAMS.values(), new RedisStore(redis, { now: () => NOW }));
      assert.deepEqual(report.failed.map((failure) => failure.stream), ["a"]);
      assert.ok(
        report.failed[0].error instanceof StoreRefusedError,
        String(report.failed[0].error),
      );
      assert.deepEqual(
        report.closed.map((window) => [window.stream, window.counter, window.start]),
        [["b", "count", T0]],
      );

      // Over HTTP: the request's 500, the sweep's reply naming the stream.
      const app = await createApp({
        streams: STREAMS,
        store: new RedisStore(redis, { now: () => NOW }),
        keys: await KeyRing.parse(""),
        now: () => NOW,
      });
      const res = await app.request("/v1/streams/a");
      assert.equal(res.status, 500);
      assert.equal((await res.json()).error.code, "internal_error");
      await send(fixture, "DEL", `${store.keyPrefix("b")}stats`);
      const swept = await app.request("/v1/admin/sweep", { method: "POST" });
      assert.equal(swept.status, 200);
      const body = await swept.json();
      assert.deepEqual(body.failed.map((failure: { stream: string }) => failure.stream), ["a"]);
      assert.equal(body.failed[0].error.code, "internal_error");
    },
  );
}
