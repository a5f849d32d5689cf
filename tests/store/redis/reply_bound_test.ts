/**
 * The Redis store's bound on a stream's stored Idempotency-Key replies (`maxReplyBytes`), against
 * real redis-server: as the memory store, it forgets the oldest past the bound, counts them in
 * `stats.repliesForgotten` and warns once, a forgotten key applies again, a kept one still replays,
 * and replies still expire by their TTL; replies an older release stored (no index) still replay.
 */
import assert from "node:assert/strict";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { DEFAULT_MAX_REPLY_BYTES, type StoreBatch } from "../../../src/store/types.ts";
import { collectingLogs, messageOf } from "../../_logs.ts";
import { redisTest, restClient, withDirect } from "../../_redis.ts";
import { refusedWhole } from "./_key_checks.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const DAY = 86_400_000;

/**
 * A batch of one request of no event (one filtered out) with an Idempotency-Key: its reply counts
 * 128 + 64 + 64 + 16 = 272 bytes, so three fit in 900.
 */
function keyed(
  key: string,
  options: { stream?: string; nowMs?: number; ttlMs?: number; body?: string } = {},
): StoreBatch {
  return {
    stream: options.stream ?? "s",
    nowMs: options.nowMs ?? T0,
    latenessMs: 0,
    dedupeTtlMs: 0,
    counters: [],
    events: [],
    updates: [],
    filtered: 0,
    requests: [{
      events: 0,
      filtered: 1,
      idempotency: {
        keyHash: key.repeat(64),
        bodyHash: (options.body ?? "b").repeat(64),
        ttlMs: options.ttlMs ?? DAY,
        reply: "r".repeat(16),
      },
    }],
  } as unknown as StoreBatch;
}

async function statusOf(store: RedisStore, batch: StoreBatch): Promise<string> {
  return (await store.applyBatch(batch)).requests[0].status;
}

const WARNING =
  "Stream 's' forgets Idempotency-Key replies before their idempotencyTtl, as it holds at most 900 bytes of them: a request sent again with a forgotten key applies again (stats.repliesForgotten counts them)";

redisTest(
  "RedisStore holds at most maxReplyBytes of Idempotency-Key replies per stream, forgetting the oldest first",
  async (fixture) => {
    const store = new RedisStore(restClient(fixture), { maxReplyBytes: 900, now: () => T0 });
    await collectingLogs(async (records) => {
      const warnings = () => records.filter((record) => record.level === "warning").map(messageOf);
      for (const key of ["a", "b", "c"]) assert.equal(await statusOf(store, keyed(key)), "applied");
      assert.deepEqual(warnings(), []);
      assert.equal((await store.stats("s", [])).repliesForgotten, 0);
      await store.applyBatch(keyed("d"));
      await store.applyBatch(keyed("e"));
      await store.applyBatch(keyed("a", { stream: "other" }));
      // a and b went (the oldest), c, d and e are replayed; the other stream holds its own.
      const statuses = [];
      for (const key of ["e", "d", "c", "b", "a"]) statuses.push(await statusOf(store, keyed(key)));
      assert.deepEqual(statuses, ["replayed", "replayed", "replayed", "applied", "applied"]);
      assert.equal(await statusOf(store, keyed("a", { stream: "other" })), "replayed");
      // A kept one replays its reply; the same key with another body is still a conflict.
      const replay = (await store.applyBatch(keyed("a"))).requests[0];
      assert.deepEqual(replay, {
        status: "replayed",
        reply: "r".repeat(16),
        duplicates: 0,
        late: 0,
      });
      assert.equal(await statusOf(store, keyed("e", { body: "x" })), "conflict");
      // Counted: a and b, then c and d for b and a stored again; the other stream forgot none.
      assert.equal((await store.stats("s", [])).repliesForgotten, 4);
      assert.equal((await store.stats("other", [])).repliesForgotten, 0);
      // Once per stream (and process), as the memory store's.
      assert.deepEqual(warnings(), [WARNING]);
    });
    // The index holds what is kept (key hash, size, expiry), and the stats its total (with the last score and the index's expiry): three
    // replies of 272 bytes.
    await withDirect(fixture.redisUrl, async (send) => {
      const members = await send("LRANGE", "es:{s}:replies", "0", "-1") as string[];
      assert.deepEqual(members.map((member) => member.split(" ").slice(0, 3).join(" ")), [
        `${"e".repeat(64)} 272 ${T0 + DAY}`,
        `${"b".repeat(64)} 272 ${T0 + DAY}`,
        `${"a".repeat(64)} 272 ${T0 + DAY}`,
      ]);
      assert.equal((await send("HGET", "es:{s}:stats", "ri") as string).split(" ")[0], "816");
    });
    assert.throws(() => new RedisStore(restClient(fixture), { maxReplyBytes: 0 }), RangeError);
    assert.equal(DEFAULT_MAX_REPLY_BYTES, 128 * 1024 * 1024);
  },
);

redisTest(
  "RedisStore's maxReplyBytes counts no reply that expired, and a reply still expires by its TTL",
  async (fixture) => {
    let now = T0;
    const store = new RedisStore(restClient(fixture), { maxReplyBytes: 900, now: () => now });
    await collectingLogs(async (records) => {
      // Real time: Redis expires the reply itself (PEXPIRE, its clock), the index by the callers'.
      assert.equal(await statusOf(store, keyed("x", { ttlMs: 300 })), "applied");
      assert.equal(await statusOf(store, keyed("x", { ttlMs: 300 })), "replayed");
      await new Promise((resolve) => setTimeout(resolve, 400));
      now = T0 + 400;
      assert.equal(await statusOf(store, keyed("x", { nowMs: now, ttlMs: 300 })), "applied");
      await new Promise((resolve) => setTimeout(resolve, 400));
      now = T0 + 800;
      // A full bound's worth of new replies, all replayed: the expired one no longer counts.
      for (const key of ["a", "b", "c"]) await store.applyBatch(keyed(key, { nowMs: now }));
      const statuses = [];
      for (const key of ["c", "b", "a"]) {
        statuses.push(await statusOf(store, keyed(key, { nowMs: now })));
      }
      assert.deepEqual(statuses, ["replayed", "replayed", "replayed"]);
      assert.equal((await store.stats("s", [])).repliesForgotten, 0);
      assert.deepEqual(records.filter((record) => record.level === "warning").map(messageOf), []);
    });
    await withDirect(fixture.redisUrl, async (send) => {
      // The expired one's entry dropped, its size out of the total.
      assert.equal(await send("LLEN", "es:{s}:replies"), 3);
      assert.equal((await send("HGET", "es:{s}:stats", "ri") as string).split(" ")[0], "816");
      // The index lives at least as long as the latest reply (a day), and an eighth more at most
      // (extended only when due).
      const left = Number(await send("PTTL", "es:{s}:replies"));
      assert.ok(left > DAY - 60_000 && left <= DAY + DAY / 8, `PTTL ${left}`);
    });
  },
);

redisTest(
  "RedisStore replays a reply an older release stored (no index) and counts only those it indexed",
  async (fixture) => {
    const store = new RedisStore(restClient(fixture), { maxReplyBytes: 900, now: () => T0 });
    // As the release before kept one: the reply's hash alone, no index entry.
    await withDirect(fixture.redisUrl, async (send) => {
      await send(
        "HSET",
        `es:{s}:idem:${"o".repeat(64)}`,
        "b",
        "b".repeat(64),
        "r",
        "old",
        "d",
        "0",
        "l",
        "0",
      );
      await send("PEXPIRE", `es:{s}:idem:${"o".repeat(64)}`, String(DAY));
    });
    for (const key of ["a", "b", "c"]) await store.applyBatch(keyed(key));
    const replay = (await store.applyBatch(keyed("o"))).requests[0];
    assert.deepEqual(replay, { status: "replayed", reply: "old", duplicates: 0, late: 0 });
    assert.equal((await store.stats("s", [])).repliesForgotten, 0);
  },
);

redisTest(
  "an apply keeping a reply that finds the reply index, or the stats' repliesForgotten, of the wrong kind writes nothing",
  async (fixture) => {
    const store = new RedisStore(restClient(fixture), { maxReplyBytes: 900, now: () => T0 });
    for (const key of ["a", "b", "c"]) await store.applyBatch(keyed(key));
    await refusedWhole(fixture, "es:{s}:replies", {
      corrupt: ["SET", "es:{s}:replies", "x"],
      call: () => store.applyBatch(keyed("d")),
    });
    // (refusedWhole deleted it: the total starts again.) Read only when the apply forgets a reply:
    // g takes the total past the bound.
    for (const key of ["d", "e", "f"]) await store.applyBatch(keyed(key));
    await refusedWhole(fixture, "es:{s}:stats", {
      // (The stats deleted and written anew: the total kept with them.)
      corrupt: ["HSET", "es:{s}:stats", "repliesForgotten", "many", "ri", "816 6 0"],
      call: () => store.applyBatch(keyed("g")),
    });
  },
);

redisTest(
  "two RedisStores on one Redis share a stream's bound, and a call keeping several replies keeps their order",
  async (fixture) => {
    const first = new RedisStore(restClient(fixture), { maxReplyBytes: 900, now: () => T0 });
    const second = new RedisStore(restClient(fixture), { maxReplyBytes: 900, now: () => T0 });
    // One call of two requests (as group commit sends them), then one of the other instance.
    const two = keyed("a");
    two.requests = [...keyed("b").requests!, ...keyed("a").requests!];
    assert.deepEqual((await first.applyBatch(two)).requests.map((r) => r.status), [
      "applied",
      "applied",
    ]);
    await second.applyBatch(keyed("c"));
    // d, from the first, forgets the oldest: b, kept first in the two-request call.
    await first.applyBatch(keyed("d"));
    assert.equal(await statusOf(second, keyed("a")), "replayed");
    assert.equal(await statusOf(second, keyed("b")), "applied");
    assert.equal((await second.stats("s", [])).repliesForgotten, 2);
  },
);

redisTest(
  "forgetting the old index entry of a key stored again deletes not its new reply, and counts none",
  async (fixture) => {
    const store = new RedisStore(restClient(fixture), { maxReplyBytes: 900, now: () => T0 });
    await store.applyBatch(keyed("a"));
    // Redis expired a's reply before the callers' clock says (a clock ahead): its entry stays.
    await withDirect(fixture.redisUrl, (send) => send("DEL", `es:{s}:idem:${"a".repeat(64)}`));
    assert.equal(await statusOf(store, keyed("a")), "applied");
    await store.applyBatch(keyed("b"));
    // c passes the bound: the oldest entry, a's old one, goes; a's new reply stays.
    await store.applyBatch(keyed("c"));
    assert.equal(await statusOf(store, keyed("a")), "replayed");
    assert.equal((await store.stats("s", [])).repliesForgotten, 0);
    await withDirect(fixture.redisUrl, async (send) => {
      assert.equal(await send("LLEN", "es:{s}:replies"), 3);
      assert.equal((await send("HGET", "es:{s}:stats", "ri") as string).split(" ")[0], "816");
    });
  },
);

redisTest(
  "the reply index gets a TTL again when it was deleted, though the stats say it is not due",
  async (fixture) => {
    const store = new RedisStore(restClient(fixture), { maxReplyBytes: 900, now: () => T0 });
    await store.applyBatch(keyed("a"));
    await withDirect(fixture.redisUrl, (send) => send("DEL", "es:{s}:replies"));
    await store.applyBatch(keyed("b"));
    await withDirect(fixture.redisUrl, async (send) => {
      const left = Number(await send("PTTL", "es:{s}:replies"));
      assert.ok(left > DAY - 60_000 && left <= DAY + DAY / 8, `PTTL ${left}`);
      // Counted from none again: b alone.
      assert.equal((await send("HGET", "es:{s}:stats", "ri") as string).split(" ")[0], "272");
    });
  },
);

redisTest(
  "text in the stats' ri that the apply did not write is taken as none, not refused, and written anew",
  async (fixture) => {
    const store = new RedisStore(restClient(fixture), { maxReplyBytes: 900, now: () => T0 });
    await store.applyBatch(keyed("a"));
    await withDirect(fixture.redisUrl, (send) => send("HSET", "es:{s}:stats", "ri", "many"));
    assert.equal(await statusOf(store, keyed("b")), "applied");
    await withDirect(fixture.redisUrl, async (send) => {
      // Counted from none: b alone (a's entry dropped with the list, its reply kept uncounted).
      const [total, last] = (await send("HGET", "es:{s}:stats", "ri") as string).split(" ");
      assert.deepEqual([total, last], ["272", "1"]);
      assert.equal(await send("LLEN", "es:{s}:replies"), 1);
    });
    assert.equal(await statusOf(store, keyed("a")), "replayed");
  },
);

redisTest(
  "a stream's stats outlive the replies the bound counts, though statsTtlMs is shorter than their TTL",
  async (fixture) => {
    const store = new RedisStore(restClient(fixture), {
      maxReplyBytes: 900,
      statsTtlMs: 200,
      now: () => T0,
    });
    for (const key of ["a", "b", "c"]) await store.applyBatch(keyed(key));
    // Past statsTtlMs and its eighth (real time: Redis expires the stats by its own clock).
    await new Promise((resolve) => setTimeout(resolve, 400));
    // Still counted: d, e and f forget a, b and c, so three replies are held, not six.
    for (const key of ["d", "e", "f"]) await store.applyBatch(keyed(key));
    assert.equal((await store.stats("s", [])).repliesForgotten, 3);
    await withDirect(fixture.redisUrl, async (send) => {
      assert.equal((await send("HGET", "es:{s}:stats", "ri") as string).split(" ")[0], "816");
      const left = Number(await send("PTTL", "es:{s}:stats"));
      assert.ok(left > DAY, `PTTL ${left}`);
    });
    const statuses = [];
    for (const key of ["f", "e", "d", "c"]) statuses.push(await statusOf(store, keyed(key)));
    assert.deepEqual(statuses, ["replayed", "replayed", "replayed", "applied"]);
  },
);

redisTest(
  "an index found without the stats' ri (stats a release before let expire) is dropped, its entries taking nothing off the new total",
  async (fixture) => {
    const store = new RedisStore(restClient(fixture), { maxReplyBytes: 900, now: () => T0 });
    for (const key of ["a", "b", "c"]) await store.applyBatch(keyed(key));
    // The stats gone, as a release before let them expire while the index lived on.
    await withDirect(fixture.redisUrl, (send) => send("DEL", "es:{s}:stats"));
    // Counted from none, a, b and c no more indexed (their replies kept until their TTL): g, h, i
    // and j each forget the oldest of d to j, so that three are indexed and counted, not six.
    for (const key of ["d", "e", "f", "g", "h", "i", "j"]) await store.applyBatch(keyed(key));
    assert.equal((await store.stats("s", [])).repliesForgotten, 4);
    await withDirect(fixture.redisUrl, async (send) => {
      const members = await send("LRANGE", "es:{s}:replies", "0", "-1") as string[];
      assert.deepEqual(members.map((member) => member[0]), ["h", "i", "j"]);
      assert.equal((await send("HGET", "es:{s}:stats", "ri") as string).split(" ")[0], "816");
    });
    assert.equal(await statusOf(store, keyed("a")), "replayed");
  },
);
