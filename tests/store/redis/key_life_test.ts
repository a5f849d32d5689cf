/**
 * How long the Redis store keeps a stream's keys: the apply script extends a key's life only when
 * it is due (see `lifeOf` in `_lua_common.ts`), yet every key a write needs must live at least its
 * TTL after that write. Real time and short TTLs: each key's expiry is read back (PTTL) right
 * after every write.
 */
import assert from "node:assert/strict";
import { compileConfig } from "../../../src/config/mod.ts";
import { ingestItems } from "../../../src/ingest/mod.ts";
import { listWindows } from "../../../src/query/mod.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { CALL_REPLY_TTL_MS } from "../../../src/store/redis/_lua_common.ts";
import { redisTest, restClient, withDirect } from "../../_redis.ts";

/**
 * Every counter keeps a pane 6 s after its last write (4 s window, no lateness, 2 s retention):
 * short, yet TTL/16 leaves a loaded machine some hundreds of ms between a write and reading PTTL.
 */
const PANE_TTL = 6_000;
const STATS_TTL = 6_000;
const DEDUPE_TTL = 4_000;

const stream = compileConfig({
  streams: {
    t: {
      time: { field: "t", lateness: "0s" },
      dedupe: { field: "id", ttl: "4s" },
      counters: {
        count: { window: { tumbling: "4s" }, groupBy: ["g"], aggregate: "count", retention: "2s" },
        users: {
          window: { tumbling: "4s" },
          groupBy: ["g"],
          aggregate: { distinct: "u" },
          retention: "2s",
        },
        spread: {
          window: { tumbling: "4s" },
          groupBy: ["g"],
          aggregate: { quantiles: "v" },
          retention: "2s",
        },
        total: {
          window: { hopping: "4s", every: "2s" },
          groupBy: ["g"],
          aggregate: { sum: "v" },
          retention: "2s",
        },
      },
    },
  },
}).get("t")!;

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** How long (ms) a key of this kind must live after a write, and how long at most. */
function lifeBounds(kind: string): { least: number; most: number } {
  // An apply's reply under its token, for the same apply sent again.
  if (kind === "call") return { least: CALL_REPLY_TTL_MS, most: CALL_REPLY_TTL_MS };
  if (kind === "ids") return { least: DEDUPE_TTL, most: 2 * DEDUPE_TTL + DEDUPE_TTL / 8 };
  const ttl = kind === "stats" ? STATS_TTL : PANE_TTL;
  return { least: ttl, most: ttl + Math.ceil(ttl / 8) };
}

redisTest(
  "every key a write needs lives at least its TTL after the write, though writes extend keys only when due",
  async (fixture) => {
    const redis = restClient(fixture);
    // Two instances whose clocks disagree by 50 ms, well within the TTL/16 the script allows.
    const skews = [0, 50, -50];
    // One pane per counter (the `total` hopping one included) all along: the same event time,
    // as a backfill of an old minute would be. Group "a" is written once, group "b" every time,
    // so "a"'s own keys (HyperLogLog, sketch) live on only by the pane's refresh.
    const eventTime = Math.floor((Date.now() - 86_400_000) / 4_000) * 4_000 + 500;
    let refreshed = 0;
    let lastPaneTtl = Infinity;
    for (let i = 0; i < 14; i++) {
      const skew = skews[i % skews.length];
      const store = new RedisStore(redis, { now: () => Date.now() + skew, statsTtlMs: STATS_TTL });
      const written = Date.now();
      const groups = i === 0 ? ["a", "b"] : ["b"];
      await ingestItems(
        stream,
        groups.map((g) => ({
          ok: true as const,
          value: { id: `${i}${g}`, t: eventTime, g, u: `u${i}`, v: i },
        })),
        { store, nowMs: written + skew },
      );
      await withDirect(fixture.redisUrl, async (send) => {
        const keys = (await send("KEYS", "es:{t}:*")) as string[];
        const kinds = new Set<string>();
        for (const key of keys) {
          const kind = key.slice("es:{t}:".length).split(":")[0];
          if (kind === "log") continue;
          kinds.add(kind);
          const before = Date.now();
          const pttl = Number(await send("PTTL", key));
          // The key expires no earlier than `before + pttl`.
          const { least, most } = lifeBounds(kind);
          // An earlier dedupe bucket holds only ids of earlier writes; each write's own reply
          // (`call`) lives its fixed time from then.
          const bucket = `es:{t}:ids:${Math.floor((written + skew) / DEDUPE_TTL)}`;
          assert.ok(
            (kind === "ids" && key !== bucket) || kind === "call" ||
              before + pttl >= written + least,
            `write ${i}: ${key} expires ${
              written + least - before - pttl
            } ms before its TTL after the write`,
          );
          assert.ok(pttl <= most + 5, `write ${i}: ${key} lives ${pttl} ms, longer than ${most}`);
          assert.ok(pttl > 0, `write ${i}: ${key} has no TTL (PTTL ${pttl})`);
          if (kind === "p" && key.includes(":count:")) {
            if (pttl > lastPaneTtl) refreshed += 1;
            lastPaneTtl = pttl;
          }
        }
        assert.deepEqual([...kinds].sort(), [
          "call",
          "h",
          "ids",
          "open",
          "p",
          "panes",
          "q",
          "stats",
        ]);
        for (const counter of stream.counterMetas) {
          const members = (await send(
            "ZRANGE",
            `es:{t}:panes:${counter.name}`,
            "0",
            "-1",
            "WITHSCORES",
          )) as string[];
          // The stats remember each counter's pane with the expiry it has now, so the next write
          // finds it not due (else every write after a refresh would refresh again).
          const remembered = await send("HGET", "es:{t}:stats", `k:${counter.name}`);
          assert.equal(remembered, `${members[0]} ${members[1]}`, `write ${i}: ${counter.name}`);
          // A listed pane's keys, its groups' own keys included, outlive its listing.
          for (let m = 0; m < members.length; m += 2) {
            const listedUntil = Number(members[m + 1]);
            const pane = members[m];
            const paneKeys = keys.filter((key) =>
              key.startsWith(`es:{t}:p:${counter.name}:${pane}`) ||
              key.startsWith(`es:{t}:h:${counter.name}:${pane}:`) ||
              key.startsWith(`es:{t}:q:${counter.name}:${pane}:`)
            );
            assert.ok(paneKeys.length > 0, `no keys for pane ${pane} of ${counter.name}`);
            for (const key of paneKeys) {
              const before = Date.now();
              const pttl = Number(await send("PTTL", key));
              assert.ok(
                before + pttl >= listedUntil - 200,
                `write ${i}: ${key} expires ${
                  listedUntil - before - pttl
                } ms before its pane is unlisted`,
              );
            }
          }
        }
      });
      await delay(130);
    }
    // The test saw the pane's life extended by a later write, not only set when it was new.
    assert.ok(refreshed >= 2, `the pane was extended ${refreshed} times`);
  },
);

redisTest(
  "a pane whose keys vanished while it was listed (evicted) is made again with a TTL",
  async (fixture) => {
    const redis = restClient(fixture);
    // Both writes at one instant, so the second finds the pane listed and not due.
    const now = Date.now();
    const store = new RedisStore(redis, { now: () => now });
    const eventTime = now - 86_400_000;
    const write = (id: string, groups: string[]) =>
      ingestItems(
        stream,
        groups.map((g) => ({
          ok: true as const,
          value: { id: id + g, t: eventTime, g, u: id, v: 1 },
        })),
        { store, nowMs: now },
      );
    await write("1", ["a"]);
    await withDirect(fixture.redisUrl, async (send) => {
      const panes = (await send("KEYS", "es:{t}:p:*")) as string[];
      assert.equal(panes.length, stream.counterMetas.length);
      for (const key of panes) await send("DEL", key);
    });
    // Two groups, so the count and sum panes are written with one HSET each (not HINCRBY).
    await write("2", ["a", "b"]);
    await withDirect(fixture.redisUrl, async (send) => {
      for (const key of (await send("KEYS", "es:{t}:p:*")) as string[]) {
        const pttl = Number(await send("PTTL", key));
        assert.ok(pttl > 0, `${key}: PTTL is ${pttl}`);
      }
    });
    // The groups' own keys the vanished panes left behind are not added to: the new panes hold
    // only the second write, as a memory store's new pane would.
    for (const name of ["users", "spread"]) {
      const counter = stream.counters.find((item) => item.name === name)!;
      const [row] = await listWindows(stream, counter, { store, nowMs: now }, { limit: 10 });
      const value = row.value as number | { count: number };
      assert.equal(
        typeof value === "number" ? value : value.count,
        1,
        `${name}: ${JSON.stringify(value)}`,
      );
    }
  },
);

redisTest(
  "a HyperLogLog made in a pane that is listed and not due (a new group, or one evicted) gets a TTL",
  async (fixture) => {
    const redis = restClient(fixture);
    // Every write at one instant: the pane is new at the first only, so no later write refreshes
    // it (which would extend its groups' keys too).
    const now = Date.now();
    const store = new RedisStore(redis, { now: () => now });
    const eventTime = now - 86_400_000;
    const write = (id: string, g: string, u: string) =>
      ingestItems(stream, [{ ok: true as const, value: { id, t: eventTime, g, u, v: 1 } }], {
        store,
        nowMs: now,
      });
    const hllOf = async (g: string) =>
      ((await withDirect(fixture.redisUrl, (send) => send("KEYS", "es:{t}:h:users:*"))) as string[])
        .find((key) => key.endsWith(`:${JSON.stringify([g])}`))!;
    const pttl = (key: string) => withDirect(fixture.redisUrl, (send) => send("PTTL", key));
    await write("1", "a", "u1");
    // A group new in the pane: its HyperLogLog is made by this write alone.
    await write("2", "b", "u2");
    assert.ok(Number(await pttl(await hllOf("b"))) > 0, "new group's HyperLogLog has no TTL");
    // A group the pane holds whose HyperLogLog is gone (evicted): made again, with a TTL.
    const evicted = await hllOf("a");
    await withDirect(fixture.redisUrl, (send) => send("DEL", evicted));
    await write("3", "a", "u3");
    assert.ok(Number(await pttl(evicted)) > 0, "evicted HyperLogLog made again has no TTL");
    // One that is there keeps the TTL it has (a later write does not need to set it).
    const before = Number(await pttl(evicted));
    await write("4", "a", "u4");
    const after = Number(await pttl(evicted));
    assert.ok(after > 0 && after <= before, `PTTL ${before} then ${after}`);
  },
);

redisTest(
  "a sketch made again in a pane that is listed and not due (its key evicted) gets a TTL",
  async (fixture) => {
    const redis = restClient(fixture);
    // Every write at one instant: the pane is new at the first only, so no later write refreshes
    // it (which would extend its groups' keys too).
    const now = Date.now();
    const store = new RedisStore(redis, { now: () => now });
    const eventTime = now - 86_400_000;
    const write = (id: string, v: number) =>
      ingestItems(stream, [{ ok: true as const, value: { id, t: eventTime, g: "a", u: id, v } }], {
        store,
        nowMs: now,
      });
    await write("1", 1);
    const [sketch] = (await withDirect(
      fixture.redisUrl,
      (send) => send("KEYS", "es:{t}:q:spread:*"),
    )) as string[];
    // The group's sketch is gone (evicted) while its pane still holds the group: the next value
    // makes it again with HINCRBY, which must not leave it without a TTL for good.
    await withDirect(fixture.redisUrl, (send) => send("DEL", sketch));
    await write("2", 5);
    const pttl = Number(await withDirect(fixture.redisUrl, (send) => send("PTTL", sketch)));
    assert.ok(pttl > 0, `sketch made again has PTTL ${pttl}`);
    // One that is there keeps the TTL it has (a later write of a bucket it holds does not set it).
    await write("3", 5);
    const after = Number(await withDirect(fixture.redisUrl, (send) => send("PTTL", sketch)));
    assert.ok(after > 0 && after <= pttl, `PTTL ${pttl} then ${after}`);
  },
);

redisTest(
  "a stream's stats live at least 30 days after the last write by default, and at most an eighth more",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisStore(redis);
    const written = Date.now();
    await ingestItems(stream, [{ ok: true as const, value: { id: "x", t: written, g: "a" } }], {
      store,
      nowMs: written,
    });
    const days30 = 30 * 86_400_000;
    await withDirect(fixture.redisUrl, async (send) => {
      const before = Date.now();
      const pttl = Number(await send("PTTL", "es:{t}:stats"));
      assert.ok(before + pttl >= written + days30, `stats expire in ${pttl} ms`);
      // A first write sets the whole life the script gives: the TTL and an eighth (less the ms
      // between the write and PTTL).
      const life = days30 + days30 / 8;
      assert.ok(pttl <= life && pttl > life - 60_000, `stats live ${pttl} ms, not ${life}`);
    });
  },
);

redisTest(
  "a stream's stats live as long as its counters' data where that is longer than the stats' TTL: a closed window stays final",
  async (fixture) => {
    const redis = restClient(fixture);
    // Windows kept a minute after they close, stats 1 s after the last write (as a retention of
    // 90 days would outlive the default 30 days of the stats).
    const long = compileConfig({
      streams: {
        l: {
          time: { field: "t", lateness: "0s" },
          counters: { n: { window: { tumbling: "1s" }, aggregate: "count", retention: "1m" } },
        },
      },
    }).get("l")!;
    const store = new RedisStore(redis, { statsTtlMs: 1_000 });
    const t0 = Math.floor(Date.now() / 1_000) * 1_000 - 10_000;
    const send = (t: number) =>
      ingestItems(long, [{ ok: true as const, value: { t } }], { store, nowMs: Date.now() });
    await send(t0 + 100);
    await send(t0 + 5_000);
    const closed = await store.closeWindows("l", long.counterMetas, {
      latenessMs: 0,
      nowMs: Date.now(),
    });
    assert.ok(closed.some((window) => window.start === t0), JSON.stringify(closed));
    // Past the stats' own TTL (and its eighth), well within the closed window's retention.
    await delay(1_500);
    const stats = await store.stats("l", long.counterMetas);
    assert.equal(stats.watermark, t0 + 5_000);
    assert.ok((stats.closedThrough ?? -Infinity) >= t0 + 1_000, JSON.stringify(stats));
    // An event of the closed window is late, as it was: the final window does not change.
    const reply = await send(t0 + 200);
    assert.equal(reply.late, 1, JSON.stringify(reply));
    const [row] = await listWindows(long, long.counters[0], { store, nowMs: Date.now() }, {
      fromMs: t0,
      toMs: t0 + 1_000,
    });
    assert.equal(row?.value, 1, JSON.stringify(row));
    assert.equal(row.final, true);
  },
);

redisTest(
  "a lowered retention shortens no life already given: a window written before stays listed after a write under the new one",
  async (fixture) => {
    const redis = restClient(fixture);
    const withRetention = (retention: string) =>
      compileConfig({
        streams: {
          r: {
            time: { field: "t", lateness: "0s" },
            counters: { n: { window: { tumbling: "1s" }, aggregate: "count", retention } },
          },
        },
      }).get("r")!;
    const before = withRetention("1m");
    const lowered = withRetention("1s");
    const store = new RedisStore(redis);
    const t0 = Math.floor(Date.now() / 1_000) * 1_000 - 10_000;
    const send = (definition: typeof before, t: number) =>
      ingestItems(definition, [{ ok: true as const, value: { t } }], { store, nowMs: Date.now() });
    // Written under a retention of a minute, then one event under the lowered one (1 s).
    await send(before, t0);
    await send(lowered, t0 + 5_000);
    const listed = () => store.panes("r", lowered.counterMetas[0], { fromMs: 0, toMs: 8.64e15 });
    assert.deepEqual(await listed(), [t0, t0 + 5_000]);
    // Past the new life (window + lateness + retention: 2 s, and its eighth), well within the
    // first window's (61 s): that window is still kept, and listed.
    await delay(2_600);
    assert.deepEqual(await listed(), [t0], "the window written before the change is still read");
  },
);

redisTest(
  "an alert marker an older release set without indexing it is indexed when a firing finds it in an open window, and kept with the window: the alert does not fire again",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisStore(redis);
    const count = stream.counterMetas.find((meta) => meta.name === "count")!;
    const t0 = Math.floor(Date.now() / 4_000) * 4_000 - 86_400_000;
    await ingestItems(stream, [{ ok: true as const, value: { id: "x", t: t0 + 100, g: "a" } }], {
      store,
      nowMs: Date.now(),
    });
    const firing = {
      alert: "busy",
      counter: "count",
      start: t0,
      end: t0 + 4_000,
      group: '["a"]',
      value: 1,
      ttlMs: 2 * count.ttlMs,
    };
    // As the release before markers were indexed left it: the marker alone, with little life
    // left (its window kept open since by the producer's stale events, or a pause).
    const marker = `es:{t}:alert:busy:count:${t0}:["a"]`;
    const index = "es:{t}:alerted:count";
    await withDirect(fixture.redisUrl, async (send) => {
      await send("SET", marker, "1", "PX", "300");
      await send("SET", marker.replace('["a"]', '["b"]'), "1", "PX", "300");
    });
    // An evaluation of the open window finds it: not fired again, and indexed, with a marker's
    // life, so the close keeps it as long as the window is open.
    assert.deepEqual(await store.fireAlerts("t", [firing]), []);
    await withDirect(fixture.redisUrl, async (send) => {
      assert.deepEqual(await send("ZRANGE", index, "0", "-1"), [marker]);
      const life = Number(await send("PTTL", marker));
      assert.ok(life > firing.ttlMs - 1_000, `marker lives ${life} ms`);
      const indexLife = Number(await send("PTTL", index));
      // Both given the same life in one script call, whose commands redis-server 7.0 times each
      // by its own clock: the index's expiry may fall a millisecond or two after the marker's
      // (11,998 against 11,997 in one CI run). The close renews markers once the index has less
      // than ttl + ttl/16 left, far ahead of either expiry, so such a difference changes nothing.
      assert.ok(
        indexLife > 0 && indexLife <= life + 5,
        `index lives ${indexLife} ms, marker ${life}`,
      );
    });
    // Past the life it had: still marked.
    await delay(600);
    assert.deepEqual(await store.fireAlerts("t", [{ ...firing, value: 2 }]), []);
    const fired = (await store.readLog("t", null, 100)).filter((entry) =>
      entry.record.type === "alert.fired"
    );
    assert.equal(fired.length, 0);
    // A marker of a closed window is not indexed again (the close dropped its entry).
    await withDirect(fixture.redisUrl, (send) => send("DEL", index));
    await ingestItems(stream, [{ ok: true as const, value: { id: "y", t: t0 + 9_000, g: "a" } }], {
      store,
      nowMs: Date.now(),
    });
    const closed = await store.closeWindows("t", stream.counterMetas, { latenessMs: 0 });
    assert.ok(closed.some((window) => window.counter === "count" && window.start === t0));
    assert.deepEqual(await store.fireAlerts("t", [firing]), []);
    assert.equal(await withDirect(fixture.redisUrl, (send) => send("EXISTS", index)), 0);
    // One that no evaluation found before it expired (no event of its window came) is gone: its
    // alert fires again at the close, as README says.
    const other = { ...firing, group: '["b"]' };
    assert.deepEqual(await store.fireAlerts("t", [other]), [other]);
  },
);
