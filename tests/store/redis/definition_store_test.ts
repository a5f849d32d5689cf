import assert from "node:assert/strict";
import { type DefinitionWrite, generationKey } from "../../../src/store/definitions.ts";
import { fromCellUpdates, StreamChangedError } from "../../../src/store/mod.ts";
import {
  dataKeyPrefix,
  definitionKey,
  RedisDefinitionStore,
} from "../../../src/store/redis/definition_store.ts";
import { DEFAULT_STATS_TTL_MS, STREAM_KEYS } from "../../../src/store/redis/_scripts.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { redisTest, restClient } from "../../_redis.ts";
import { refusedWhole, send } from "./_key_checks.ts";

const RECORD: DefinitionWrite = {
  source: "config",
  generation: 0,
  definition: { time: { field: "t", lateness: "1h" } },
  counters: {},
  deleted: false,
};

// A write that keeps final reads the stats' `wm` and `cl` as the apply does: text no script writes
// is refused naming the field, not taken as none (and `cl` written over).
for (const field of ["cl", "wm"]) {
  redisTest(
    `a definition write that keeps final refuses the stats field ${field} holding what no script writes, naming it, and writes nothing`,
    async (fixture) => {
      const redis = restClient(fixture);
      const definitions = new RedisDefinitionStore(redis);
      assert.equal((await definitions.write("s", RECORD, 0)).status, "written");
      const stats = dataKeyPrefix("es", generationKey("s", 0)) + STREAM_KEYS.stats;
      const keepFinal = { nowMs: 0, by: [{ latenessMs: 10_000, idleMs: null }] };
      const fields = { wm: "600000", cl: "1000", [field]: "x" };
      await refusedWhole(fixture, stats, {
        corrupt: ["HSET", stats, ...Object.entries(fields).flat()],
        call: () =>
          definitions.write("s", RECORD, 1, { keepFinal }).catch((error: Error) => {
            assert.ok(error.message.includes(`${stats} field ${field} holds 'x'`), error.message);
            throw error;
          }),
      });
      assert.equal((await definitions.get("s"))?.version, 1);
      // Repaired: the write raises `cl` to the watermark less the replaced lateness.
      await send(fixture, "HSET", stats, "wm", "600000", "cl", "1000");
      assert.equal((await definitions.write("s", RECORD, 1, { keepFinal })).status, "written");
      assert.equal(await send(fixture, "HGET", stats, "cl"), "590000");
    },
  );
}

// A write adding counters reads the stats' `wm` as the apply does: text no script writes is refused
// naming the field, not taken as no watermark (which would record no partial bound).
redisTest(
  "a definition write adding counters refuses the stats field wm holding what no script writes, naming it, and writes nothing",
  async (fixture) => {
    const redis = restClient(fixture);
    const definitions = new RedisDefinitionStore(redis);
    assert.equal((await definitions.write("s", RECORD, 0)).status, "written");
    const stats = dataKeyPrefix("es", generationKey("s", 0)) + STREAM_KEYS.stats;
    await refusedWhole(fixture, stats, {
      corrupt: ["HSET", stats, "wm", "x"],
      call: () =>
        definitions.write("s", RECORD, 1, { addedCounters: ["n"] }).catch((error: Error) => {
          assert.ok(error.message.includes(`${stats} field wm holds 'x'`), error.message);
          throw error;
        }),
    });
    assert.equal((await definitions.get("s"))?.version, 1);
    // Repaired: the added counter's bound is the watermark plus 1.
    await send(fixture, "HSET", stats, "wm", "600000");
    const written = await definitions.write("s", RECORD, 1, { addedCounters: ["n"] });
    assert.equal(written.status, "written");
    assert.deepEqual((await definitions.get("s"))?.partialBefore, { n: 600001 });
  },
);

// A stats `dv` holding text no script writes is taken as none: as a number it would read NaN,
// later than no version, and every read would mark the stats stale and ask for a reload.
redisTest(
  "stats() takes a stats field dv holding what no script writes as no definition version",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisStore(redis);
    const key = generationKey("s", 0);
    const stats = dataKeyPrefix("es", key) + STREAM_KEYS.stats;
    // Nor text a number reads, but no write makes: "0x10" would be version 16. (The client reads
    // JSON numbers itself: " 3" comes as 3, the version it says.)
    for (const text of ["x", "0x10", "1.5", "01", "0", "-1"]) {
      await send(fixture, "HSET", stats, "dv", text);
      assert.equal((await store.stats(key, [])).definitionVersion, undefined, text);
    }
    await send(fixture, "HSET", stats, "dv", "3");
    assert.equal((await store.stats(key, [])).definitionVersion, 3);
    await store.close();
  },
);

// The close checks the stats' `dv` as the stats read does: text no write makes (17 digits past
// 2^53, "0", a sign) is no later definition, and does not stop every close of the stream.
redisTest(
  "closeWindows() takes a stats field dv holding what no write makes as no later definition, and closes",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisStore(redis);
    const t0 = Date.parse("2026-01-01T00:00:00Z");
    const counter = {
      name: "n",
      aggregate: "count" as const,
      maxGroups: 10,
      ttlMs: 3_600_000,
      sizeMs: 60_000,
      hopMs: 60_000,
    };
    const key = generationKey("s", 0);
    const stats = dataKeyPrefix("es", key) + STREAM_KEYS.stats;
    const close = (start: number) =>
      store.closeWindows(key, [counter], {
        latenessMs: 0,
        idleMs: 0,
        nowMs: start + 120_000,
        definitionVersion: 1,
      });
    const texts = ["10000000000000000", "1000000000000000", "0", "-5", "+5", "05"];
    for (const [i, text] of texts.entries()) {
      const start = t0 + i * 600_000;
      await store.applyBatch(fromCellUpdates({
        stream: key,
        nowMs: start,
        latenessMs: 0,
        dedupeTtlMs: 0,
        counters: [counter],
        events: [{ timeMs: start, updates: [{ counter: 0, pane: start, group: "[]" }] }],
      }));
      await send(fixture, "HSET", stats, "dv", text);
      const closed = await close(start);
      assert.deepEqual(closed.map((window) => window.start), [start], text);
      assert.equal(closed.laterDefinition, undefined, text);
    }
    // A version a write makes, later than the caller's, still stops it.
    const start = t0 + texts.length * 600_000;
    await store.applyBatch(fromCellUpdates({
      stream: key,
      nowMs: start,
      latenessMs: 0,
      dedupeTtlMs: 0,
      counters: [counter],
      events: [{ timeMs: start, updates: [{ counter: 0, pane: start, group: "[]" }] }],
    }));
    await send(fixture, "HSET", stats, "dv", "7");
    const stale = await close(start);
    assert.equal(stale.length, 0);
    assert.equal(stale.laterDefinition, 7);
    await store.close();
  },
);

// The stats hash a write that keeps final makes (before any batch was applied) lives as long as the
// apply gives one, not forever; one that exists keeps its life.
redisTest(
  "a definition write that keeps final on a stream with no stats makes its stats hash with the apply's life, and never shortens an existing one",
  async (fixture) => {
    const redis = restClient(fixture);
    const keepFinal = { nowMs: 0, by: [{ latenessMs: 10_000, idleMs: null }] };
    for (const [stream, statsTtlMs] of [["s", undefined], ["t", 60_000]] as const) {
      const definitions = new RedisDefinitionStore(redis, { statsTtlMs });
      assert.equal((await definitions.write(stream, RECORD, 0)).status, "written");
      const stats = dataKeyPrefix("es", generationKey(stream, 0)) + STREAM_KEYS.stats;
      assert.equal(await send(fixture, "EXISTS", stats), 0);
      assert.equal((await definitions.write(stream, RECORD, 1, { keepFinal })).status, "written");
      assert.equal(await send(fixture, "HGET", stats, "dv"), "2");
      // The apply's life for a stats TTL (lifeOf in _lua_common.ts): the TTL and an eighth more.
      const ttl = statsTtlMs ?? DEFAULT_STATS_TTL_MS;
      const life = ttl + Math.ceil(ttl / 8);
      const left = Number(await send(fixture, "PTTL", stats));
      assert.ok(left > life - 60_000 && left <= life, `${stream}: PTTL ${left}, life ${life}`);
    }
    // An existing hash with a longer life (a counter's TTL past the stats TTL) keeps it.
    const stats = dataKeyPrefix("es", generationKey("s", 0)) + STREAM_KEYS.stats;
    const longer = 100 * 86_400_000;
    await send(fixture, "PEXPIRE", stats, String(longer));
    const definitions = new RedisDefinitionStore(redis);
    assert.equal((await definitions.write("s", RECORD, 2, { keepFinal })).status, "written");
    assert.ok(Number(await send(fixture, "PTTL", stats)) > longer - 60_000);
  },
);

// The record's `a` (the version of an API write that added counters) decides whether a batch built
// on an earlier version applies: text no write makes is refused naming the field, as the stats'
// `wm` and `cl` are, not taken as none (the batch, lacking those counters, applied).
for (const text of ["x", "0x10", "1.5", "01", "0", "-1", " 3"]) {
  redisTest(
    `an apply of a batch giving its definition version refuses the record field a holding '${text}', naming it, and writes nothing`,
    async (fixture) => {
      const redis = restClient(fixture);
      const store = new RedisStore(redis);
      const record = definitionKey("es", "s");
      const batch = fromCellUpdates({
        stream: "s",
        nowMs: 60_000,
        latenessMs: 0,
        dedupeTtlMs: 0,
        definitionVersion: 1,
        counters: [{
          name: "n",
          aggregate: "count",
          maxGroups: 10,
          ttlMs: 3_600_000,
          sizeMs: 60_000,
          hopMs: 60_000,
        }],
        events: [{ timeMs: 60_000, updates: [{ counter: 0, pane: 60_000, group: "[]" }] }],
      });
      await refusedWhole(fixture, record, {
        corrupt: ["HSET", record, "v", "2", "g", "0", "x", "0", "a", text],
        call: () =>
          store.applyBatch(batch).catch((error: Error) => {
            assert.ok(error.message.includes(`${record} field a holds '${text}'`), error.message);
            throw error;
          }),
      });
      // Repaired: a version after the batch's refuses it as changed; one it has applies it.
      await send(fixture, "HSET", record, "v", "2", "g", "0", "x", "0", "a", "2");
      await assert.rejects(store.applyBatch(batch), StreamChangedError);
      await send(fixture, "HSET", record, "a", "1");
      assert.equal((await store.applyBatch(batch)).definitionVersion, 2);
      await store.close();
    },
  );
}

redisTest(
  "reindex with a record older than the index's entry leaves the entry, its change mark and the API places alone",
  async (fixture) => {
    const definitions = new RedisDefinitionStore(restClient(fixture));
    const api: DefinitionWrite = { ...RECORD, source: "api" };
    assert.equal((await definitions.write("s", api, 0)).status, "written");
    const old = (await definitions.get("s"))!;
    const deleted = { ...api, definition: null, deleted: true };
    assert.equal((await definitions.write("s", deleted, 1)).status, "written");
    const index = "es:{@definitions}:index";
    const mark = await send(fixture, "GET", `${index}:mark`);
    assert.equal(await send(fixture, "HGET", `${index}:api`, "s"), null);
    // A resent request that read version 1 before the delete: its index step comes late.
    await definitions.reindex("s", old);
    assert.deepEqual(await definitions.versions(), new Map([["s", 2]]));
    assert.equal(await send(fixture, "GET", `${index}:mark`), mark);
    assert.equal(await send(fixture, "HGET", `${index}:api`, "s"), null, "place taken back");
  },
);
