/**
 * `RedisStore.logPosition` on a Redis that refuses `XINFO` in a script (a hosted Redis may not
 * serve it): the newest entry's id, and nothing known of trims, so a resume is judged by the log's
 * oldest entry as before `XINFO` was asked; the subscription still starts.
 */
import assert from "node:assert/strict";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { redisTest, restClient, withDirect } from "../../_redis.ts";

redisTest(
  "logPosition() without XINFO: the newest entry's id, trims and the oldest entry unknown",
  async (fixture) => {
    const store = new RedisStore(
      restClient(fixture),
      { prefix: "lp" },
    );
    await store.appendLog("s", [{ type: "event.processed", event: { n: 1 }, timeMs: 1 }]);
    await store.appendLog("s", [{ type: "event.processed", event: { n: 2 }, timeMs: 2 }]);
    const newest = await store.lastLogId("s");
    const [oldest] = await store.readLog("s", null, 1);
    assert.deepEqual(await store.logPosition("s"), {
      lastId: newest,
      trimmedThrough: "0-0",
      firstId: oldest.id,
    });
    await withDirect(fixture.redisUrl, (send) => send("ACL", "SETUSER", "default", "-xinfo"));
    try {
      assert.deepEqual(await store.logPosition("s"), {
        lastId: newest,
        trimmedThrough: null,
        firstId: null,
      });
      assert.deepEqual(await store.logPosition("none"), {
        lastId: "0-0",
        trimmedThrough: "0-0",
        firstId: null,
      });
    } finally {
      await withDirect(fixture.redisUrl, (send) => send("ACL", "SETUSER", "default", "+xinfo"));
    }
  },
);
