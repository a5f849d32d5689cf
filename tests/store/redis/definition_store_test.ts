import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { type DefinitionWrite, generationKey } from "../../../src/store/definitions.ts";
import { dataKeyPrefix, RedisDefinitionStore } from "../../../src/store/redis/definition_store.ts";
import { STREAM_KEYS } from "../../../src/store/redis/_scripts.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { redisTest } from "../../_redis.ts";
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
      const redis = new Redis({
        url: fixture.restUrl,
        token: fixture.restToken,
        enableTelemetry: false,
      });
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
    const redis = new Redis({
      url: fixture.restUrl,
      token: fixture.restToken,
      enableTelemetry: false,
    });
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
    const redis = new Redis({
      url: fixture.restUrl,
      token: fixture.restToken,
      enableTelemetry: false,
    });
    const store = new RedisStore(redis);
    const key = generationKey("s", 0);
    const stats = dataKeyPrefix("es", key) + STREAM_KEYS.stats;
    await send(fixture, "HSET", stats, "dv", "x");
    assert.equal((await store.stats(key, [])).definitionVersion, undefined);
    await send(fixture, "HSET", stats, "dv", "3");
    assert.equal((await store.stats(key, [])).definitionVersion, 3);
    await store.close();
  },
);
