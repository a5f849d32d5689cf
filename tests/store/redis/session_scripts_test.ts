/**
 * Session counters on Redis: an ingest stays one EVALSHA however many
 * sessions it opens, extends and merges, and every session key lives under
 * the stream's hash-tagged prefix with a TTL.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { compileConfig } from "../../../src/config/mod.ts";
import { ingestItems } from "../../../src/ingest/mod.ts";
import { MemoryStore } from "../../../src/store/memory/store.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { redisTest, restClient, withDirect } from "../../_redis.ts";
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
    const redis = restClient(fixture);
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
    for (const kind of ["sz", "so", "sa", "sc", "ss", "sv", "sh"]) {
      assert.ok(kinds.has(kind), `no '${kind}' key among ${[...kinds].join(", ")}`);
    }
  },
);

redisTest(
  "a batch with a late event beside a quantiles counter is rebuilt in the script and still extends sessions",
  async (fixture) => {
    const redis = restClient(fixture);
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

/** Calls per command name (lower case) the scripts ran since the last `CONFIG RESETSTAT`. */
async function commandCalls(fixture: { redisUrl: string }): Promise<Record<string, number>> {
  const info = String(await withDirect(fixture.redisUrl, (send) => send("INFO", "commandstats")));
  return Object.fromEntries(
    [...info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)].map((match) => [match[1], Number(match[2])]),
  );
}

redisTest(
  "a sweep keeps alive only the open sessions whose life ends within ttl/2, each once, and forgets closed ones that expired",
  async (fixture) => {
    const redis = restClient(fixture);
    let clock = NOW;
    const store = new RedisStore(redis, { now: () => clock });
    const send = (...args: string[]) => withDirect(fixture.redisUrl, (direct) => direct(...args));
    await ingestItems(stream, items(events(0, 40)), { store, nowMs: clock });
    const sessionCounters = stream.counterMetas.filter((meta) => meta.session);
    const ttl = sessionCounters[0].ttlMs;
    assert.equal(ttl, 30_000 + 3_600_000 + 3_600_000);
    const open = Number(await send("ZCARD", "es:{visits}:so:visit"));
    assert.ok(open >= 20, String(open));
    const sweep = async (latenessMs: number) => {
      await send("CONFIG", "RESETSTAT");
      const closed = await store.closeWindows("visits", stream.counterMetas, { latenessMs });
      const calls = await commandCalls(fixture);
      const writes = ["zadd", "zrem", "zremrangebyscore", "pexpire", "hset", "xadd"]
        .map((name) => calls[name] ?? 0).reduce((a, b) => a + b, 0);
      return {
        closed: closed.length,
        visits: closed.filter((window) => window.counter === "visit").length,
        calls,
        writes,
      };
    };
    // Nothing near its end: the sweep writes nothing, and asks per session counter its open
    // sessions near their end, its closed ones expired and those due (and per window counter its
    // live panes near their end and windows due), whatever the sessions' number; then, to say
    // when a close next has something to do, per session counter the open session its keep-alive
    // comes to first and per window counter (with an open window) its first live pane past it.
    clock = NOW + 1_000;
    let swept = await sweep(3_600_000);
    // (Its one write: the stats' note of when a close next has something to do.)
    assert.deepEqual(
      [swept.closed, swept.writes, swept.calls.hset],
      [0, 1, 1],
      JSON.stringify(swept.calls),
    );
    assert.equal(
      swept.calls.zrangebyscore,
      4 * sessionCounters.length + 3 * (stream.counterMetas.length - sessionCounters.length),
      JSON.stringify(swept.calls),
    );
    // Half its life gone: each open session gets ttl from now, with its HyperLogLog and group.
    clock = NOW + ttl / 2;
    swept = await sweep(3_600_000);
    assert.equal(swept.closed, 0);
    // (And the window counter's live panes, as its open windows keep them.)
    const panes = Number(await send("ZCARD", "es:{visits}:panes:perMinute"));
    assert.equal(
      swept.calls.zadd,
      open * sessionCounters.length + panes,
      JSON.stringify(swept.calls),
    );
    for (const name of ["visit", "pages", "spent"]) {
      const scores = await send(
        "ZRANGE",
        `es:{visits}:sa:${name}`,
        "0",
        "-1",
        "WITHSCORES",
      ) as string[];
      assert.equal(scores.length, 2 * open);
      for (let i = 1; i < scores.length; i += 2) assert.equal(Number(scores[i]), clock + ttl, name);
    }
    // Kept once: the next sweep writes nothing.
    swept = await sweep(3_600_000);
    assert.deepEqual([swept.closed, swept.writes], [0, 0], JSON.stringify(swept.calls));
    // Closed: out of the open sessions' index, into the closed ones' with ttl from the close.
    clock += 10_000;
    swept = await sweep(0);
    const closed = swept.visits;
    assert.ok(closed > 0);
    const closedMembers = await send(
      "ZRANGE",
      "es:{visits}:sc:visit",
      "0",
      "-1",
      "WITHSCORES",
    ) as string[];
    assert.equal(closedMembers.length, 2 * closed);
    assert.equal(Number(closedMembers[1]), clock + ttl);
    assert.equal(await send("ZSCORE", "es:{visits}:sa:visit", closedMembers[0]), null);
    assert.notEqual(await send("ZSCORE", "es:{visits}:ss:visit", closedMembers[0]), null);
    // Expired: gone from the index by start too.
    clock += ttl + 1;
    await sweep(0);
    assert.equal(await send("ZCARD", "es:{visits}:sc:visit"), 0);
    assert.equal(await send("ZSCORE", "es:{visits}:ss:visit", closedMembers[0]), null);
  },
);

redisTest(
  "a sweep keeps at most limit × 10 open sessions alive, those nearest their end first, and moves a previous release's closed ones out of the open sessions' index",
  async (fixture) => {
    const redis = restClient(fixture);
    let clock = NOW;
    const store = new RedisStore(redis, { now: () => clock });
    const send = (...args: string[]) => withDirect(fixture.redisUrl, (direct) => direct(...args));
    const one = compileConfig({
      streams: {
        visits: {
          time: { field: "t", lateness: "1h" },
          counters: {
            visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" },
          },
        },
      },
    }).get("visits")!;
    const ttl = one.counterMetas[0].ttlMs;
    // 250 open sessions written in one burst: their lives end together.
    const burst = Array.from({ length: 250 }, (_, i) => ({ t: T0, user: `u${i}` }));
    await ingestItems(one, items(burst), { store, nowMs: clock });
    // A session a release before this one closed: left in `sa`, not in `so`.
    await send("ZADD", "es:{visits}:sa:visit", String(NOW + ttl), `${T0 - 600_000}:["old"]`);
    await send("ZADD", "es:{visits}:ss:visit", String(T0 - 600_000), `${T0 - 600_000}:["old"]`);
    clock = NOW + ttl / 2;
    const keptPerSweep: number[] = [];
    for (let sweep = 0; sweep < 4; sweep++) {
      await send("CONFIG", "RESETSTAT");
      const closed = await store.closeWindows("visits", one.counterMetas, {
        latenessMs: 3_600_000,
        limit: 10,
      });
      assert.equal(closed.length, 0);
      keptPerSweep.push((await commandCalls(fixture)).zadd ?? 0);
      clock += 1_000;
    }
    // 100 a sweep (the previous release's closed one moved with the first hundred: 99 + 1).
    assert.deepEqual(keptPerSweep, [100, 100, 51, 0]);
    const scores = await send(
      "ZRANGE",
      "es:{visits}:sa:visit",
      "0",
      "-1",
      "WITHSCORES",
    ) as string[];
    assert.equal(scores.length, 2 * 250);
    for (let i = 1; i < scores.length; i += 2) assert.ok(Number(scores[i]) > NOW + ttl);
    assert.deepEqual(
      await send("ZRANGE", "es:{visits}:sc:visit", "0", "-1", "WITHSCORES"),
      [`${T0 - 600_000}:["old"]`, String(NOW + ttl)],
    );
  },
);

redisTest(
  "a close forgets at most limit × 10 expired closed sessions of a counter a call, the rest at the next ones",
  async (fixture) => {
    const redis = restClient(fixture);
    let clock = NOW;
    const store = new RedisStore(redis, { now: () => clock });
    const send = (...args: string[]) => withDirect(fixture.redisUrl, (direct) => direct(...args));
    const one = compileConfig({
      streams: {
        visits: {
          time: { field: "t", lateness: "1s" },
          counters: {
            visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" },
          },
        },
      },
    }).get("visits")!;
    const ttl = one.counterMetas[0].ttlMs;
    // 250 sessions closed by one sweep (idle 0: the clock is the watermark) expire together.
    const burst = Array.from({ length: 250 }, (_, i) => ({ t: T0, user: `u${i}` }));
    await ingestItems(one, items(burst), { store, nowMs: clock });
    const closed = await store.closeWindows("visits", one.counterMetas, {
      latenessMs: 1_000,
      idleMs: 0,
      limit: 100,
    });
    assert.equal(closed.length, 250);
    assert.equal(await send("ZCARD", "es:{visits}:sc:visit"), 250);
    clock += ttl + 1;
    const left: number[] = [];
    for (let sweep = 0; sweep < 3; sweep++) {
      await store.closeWindows("visits", one.counterMetas, { latenessMs: 1_000, limit: 10 });
      left.push(Number(await send("ZCARD", "es:{visits}:sc:visit")));
    }
    assert.deepEqual(left, [150, 50, 0]);
  },
);

redisTest(
  "deploy/README's rollback past 0577fb3: the sessions this release closed (in sc) go back to sa with their expiry, where the old release forgets them from the index by start",
  async (fixture) => {
    const redis = restClient(fixture);
    let clock = NOW;
    const store = new RedisStore(redis, { now: () => clock });
    const send = (...args: string[]) => withDirect(fixture.redisUrl, (direct) => direct(...args));
    const one = compileConfig({
      streams: {
        visits: {
          time: { field: "t", lateness: "1s" },
          counters: {
            visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" },
          },
        },
      },
    }).get("visits")!;
    const ttl = one.counterMetas[0].ttlMs;
    const users = ["a", "b", "c"];
    // Three sessions, and an event of another user that moves the watermark past their close.
    const sessions = [...users.map((user) => ({ t: NOW - 120_000, user })), { t: NOW, user: "z" }];
    await ingestItems(one, items(sessions), { store, nowMs: clock });
    const closed = await store.closeWindows("visits", one.counterMetas, { latenessMs: 1_000 });
    assert.equal(closed.length, 3);
    const [sa, sc, ss] = ["sa", "sc", "ss"].map((name) => `es:{visits}:${name}:visit`);
    const members = (key: string) => send("ZRANGE", key, "0", "-1", "WITHSCORES");
    // This release: closed sessions leave sa (z's, open, stays) for sc; ss holds all four.
    assert.equal((await members(sa) as string[]).length, 2);
    const inClosed = await members(sc) as string[];
    assert.equal(inClosed.length, 2 * 3);
    assert.equal((await members(ss) as string[]).length, 2 * 4);
    // The release before 0577fb3 forgets from ss what sa says expired (its close script,
    // `git show 0577fb3^:src/store/redis/_session_scripts.ts`, lines 199-203), and never reads sc.
    const oldForget = async (now: number) => {
      const expired = await send("ZRANGEBYSCORE", sa, "-inf", String(now)) as string[];
      if (expired.length > 0) await send("ZREM", ss, ...expired);
      await send("ZREMRANGEBYSCORE", sa, "-inf", String(now));
    };
    clock = NOW + 2 * ttl;
    await oldForget(clock);
    assert.equal((await members(ss) as string[]).length, 2 * 3, "left in ss for good");
    // The recipe puts them back where it forgets them.
    await send("ZUNIONSTORE", sa, "2", sa, sc, "AGGREGATE", "MAX");
    await send("PEXPIRE", sa, String(ttl));
    assert.deepEqual(await members(sa), inClosed);
    await oldForget(clock);
    assert.deepEqual(await members(ss), []);
  },
);

redisTest(
  "a lowered retention shortens no life already given: a session closed before stays listed after a write and a close under the new one",
  async (fixture) => {
    const redis = restClient(fixture);
    const withRetention = (retention: string) =>
      compileConfig({
        streams: {
          r: {
            time: { field: "t", lateness: "0s" },
            counters: {
              v: { window: { session: "1s" }, groupBy: ["user"], aggregate: "count", retention },
            },
          },
        },
      }).get("r")!;
    const before = withRetention("1m");
    const lowered = withRetention("1s");
    const store = new RedisStore(redis);
    const t0 = Math.floor(Date.now() / 1_000) * 1_000 - 20_000;
    const send = (definition: typeof before, t: number) =>
      ingestItems(definition, items([{ t, user: "ann" }]), { store, nowMs: Date.now() });
    const close = (definition: typeof before) =>
      store.closeWindows("r", definition.counterMetas, { latenessMs: 0, nowMs: Date.now() });
    // A session closed under a retention of a minute; then, under the lowered one (1 s), another
    // written and closed.
    await send(before, t0);
    await send(before, t0 + 5_000);
    assert.deepEqual((await close(before)).map((session) => session.start), [t0]);
    await send(lowered, t0 + 10_000);
    assert.deepEqual((await close(lowered)).map((session) => session.start), [t0 + 5_000]);
    await send(lowered, t0 + 15_000);
    const listed = async () =>
      (await store.readSessions("r", lowered.counterMetas[0], { fromMs: 0, toMs: 8.64e15 }))
        .map((session) => session.start);
    assert.ok((await listed()).includes(t0));
    // Past the new life (gap + lateness + retention: 2 s), well within the first session's (61 s).
    await new Promise((resolve) => setTimeout(resolve, 2_600));
    assert.ok((await listed()).includes(t0), "the session closed before the change is still read");
  },
);

redisTest(
  "a run reads only the sessions of its group it may reach: 1,000 runs before 20,000 open sessions apply at once, and still merge",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisStore(redis);
    const backfill = compileConfig({
      streams: {
        b: {
          time: { field: "t", lateness: "2d" },
          counters: { v: { window: { session: "1s" }, aggregate: "count" } },
        },
      },
    }).get("b")!;
    const now = T0 + 86_400_000;
    const send = async (times: number[]) => {
      const started = performance.now();
      const reply = await ingestItems(backfill, items(times.map((t) => ({ t }))), {
        store,
        nowMs: now,
      });
      assert.equal(reply.accepted, times.length);
      assert.equal(reply.late, 0);
      return performance.now() - started;
    };
    // 20,000 sessions of one group (an empty groupBy), 1.5 s apart (the gap is 1 s), sent oldest
    // first: each run comes after every session, so reading what follows it read nothing.
    for (let batch = 0; batch < 20; batch++) {
      await send(Array.from({ length: 1_000 }, (_, i) => T0 + (batch * 1_000 + i) * 1_500));
    }
    // 1,000 runs before all of them: reading every session that ends after a run's start less the
    // gap read all 20,000 for each (20 million entries, seconds of Redis held in one script, past
    // the store's 5 s call timeout on this machine); only those it may reach, a few.
    const earlier = Array.from({ length: 1_000 }, (_, i) => T0 - (i + 1) * 1_500);
    const took = await send(earlier);
    assert.ok(took < 2_500, `1,000 runs before 20,000 sessions took ${Math.round(took)} ms`);
    // Merges still find what they reach: an event less than the gap from two sessions joins them,
    // and one before a long session (ending more than the gap after the run) extends it.
    await send([T0 + 750]);
    await send([T0 + 40_000_000, T0 + 40_000_500, T0 + 40_001_000, T0 + 40_001_500]);
    await send([T0 + 39_999_400]);
    const sessions = await store.readSessions("b", backfill.counterMetas[0], {
      fromMs: T0 - 1,
      toMs: T0 + 1,
    });
    assert.deepEqual(
      sessions.map((session) => [session.start, session.end, session.state.count]),
      [[T0, T0 + 1_500, 3]],
    );
    const long = await store.readSessions("b", backfill.counterMetas[0], {
      fromMs: T0 + 39_000_000,
      toMs: T0 + 41_000_000,
    });
    assert.deepEqual(
      long.map((session) => [session.start, session.end, session.state.count]),
      [[T0 + 39_999_400, T0 + 40_001_500, 5]],
    );
    await withDirect(fixture.redisUrl, async (direct) => {
      // 20,000 + 1,000 + the long one, less the one the bridge merged away.
      assert.equal(await direct("ZCARD", "es:{b}:so:v"), 21_000);
    });
  },
);

redisTest(
  "a read skips expired sessions before its limit counts them and orders those that start together by group key, as the memory store does",
  async (fixture) => {
    const redis = restClient(fixture);
    // A session lives gap + lateness + retention (3 s) after its last event, by Redis's clock.
    const short = compileConfig({
      streams: {
        e: {
          time: { field: "t", lateness: "1s" },
          counters: {
            v: { window: { session: "1s" }, groupBy: ["g"], aggregate: "count", retention: "1s" },
          },
        },
      },
    }).get("e")!;
    const counter = short.counterMetas[0];
    const stores = [new MemoryStore(), new RedisStore(redis)];
    const send = async (events: object[]) => {
      for (const store of stores) {
        const reply = await ingestItems(short, items(events), { store, nowMs: Date.now() });
        assert.equal(reply.late, 0);
      }
    };
    // 'z0' to 'z99' start last (more than a chunk the read takes), and 'a' and 'c' start with
    // 'b', 'd' and 'e', but their last events are the oldest: they expire first. No sweep nor
    // write to the counter comes after, so Redis's index by start still lists them.
    await send([
      ...Array.from({ length: 100 }, (_, i) => ({ t: T0 + 300 + i, g: `z${i}` })),
      ...["a", "b", "c", "d", "e"].map((g) => ({ t: T0 + 200, g })),
      { t: T0 + 250, g: "x" },
      { t: T0, g: "y" },
    ]);
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    await send(["b", "d", "e", "x", "y"].map((g) => ({ t: T0 + 260, g })));
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const live = [
      ['["x"]', T0 + 250, 2],
      ['["b"]', T0 + 200, 2],
      ['["d"]', T0 + 200, 2],
      ['["e"]', T0 + 200, 2],
      ['["y"]', T0, 2],
    ];
    for (const limit of [1, 2, 3, 4, 5, 6, undefined]) {
      const [memory, onRedis] = await Promise.all(
        stores.map((store) =>
          store.readSessions("e", counter, { fromMs: T0 - 1, toMs: T0 + 1_000, limit })
        ),
      );
      const rows = (sessions: typeof memory) =>
        sessions.map((session) => [session.group, session.start, session.state.count]);
      assert.deepEqual(rows(memory), live.slice(0, limit), `limit ${limit}`);
      // Sessions that start together by group key, wherever the limit cuts.
      assert.deepEqual(rows(onRedis), rows(memory), `limit ${limit}`);
    }
  },
);
