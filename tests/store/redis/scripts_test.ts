/**
 * The Redis store's scripts when a key they write holds another type (something else wrote over
 * it): Redis keeps what a script wrote before one of its commands failed, so each script checks
 * every key it may write before its first write. A refused call writes nothing (no write command
 * runs; a single event's apply, which counts its count and distinct cells before it checks a new
 * group, undoes what it wrote before it is refused), its dedupe ids, stored replies and open
 * windows stay as they were, and once the key is repaired the same call applies whole.
 */
import assert from "node:assert/strict";
import { compileConfig, type CompiledStream } from "../../../src/config/mod.ts";
import { ingestItems } from "../../../src/ingest/mod.ts";
import { listWindows } from "../../../src/query/mod.ts";
import { rateLimitsFor } from "../../../src/http/browser.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { type RedisFixture, redisTest, restClient } from "../../_redis.ts";
import { keyLike, refusedWhole, send } from "./_key_checks.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 600_000;

const STREAMS = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "10s" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
        sum: { window: { hopping: "2m", every: "1m" }, groupBy: ["g"], aggregate: { sum: "v" } },
        users: { window: { tumbling: "1m" }, aggregate: { distinct: "u" } },
        lat: { window: { tumbling: "1m" }, aggregate: { quantiles: "v" } },
      },
    },
    visits: {
      time: { field: "t", lateness: "1m" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        visits: { window: { session: "30s" }, groupBy: ["u"], aggregate: "count" },
        pages: { window: { session: "30s" }, groupBy: ["u"], aggregate: { distinct: "p" } },
      },
    },
  },
});
const S = STREAMS.get("s")!;
const VISITS = STREAMS.get("visits")!;

function redisStore(fixture: RedisFixture): RedisStore {
  const redis = restClient(fixture);
  return new RedisStore(redis, { now: () => NOW });
}

/** A Redis test with a store on its fixture, closed once the test ends. */
function storeTest(
  name: string,
  fn: (store: RedisStore, fixture: RedisFixture) => Promise<void>,
): void {
  redisTest(name, async (fixture) => {
    const store = redisStore(fixture);
    try {
      await fn(store, fixture);
    } finally {
      await store.close();
    }
  });
}

function items(events: object[]) {
  return events.map((value) => ({ ok: true as const, value }));
}

/** `count` events with ids `<prefix>0…` in the minute starting at `fromMs`. */
function events(prefix: string, count: number, fromMs = T0): object[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `${prefix}${i}`,
    t: fromMs + 1_000 + i * 100,
    g: ["de", "fr"][i % 2],
    v: i + 0.5,
    u: `user${i % 7}`,
  }));
}

async function ingest(stream: CompiledStream, store: RedisStore, list: object[]) {
  return await ingestItems(stream, items(list), { store, nowMs: NOW });
}

/** The key `name` under a stream's prefix (where its stats are), whether it exists or not. */
async function streamKey(fixture: RedisFixture, stream: string, name: string): Promise<string> {
  return (await keyLike(fixture, `*{${stream}}:stats`)).replace(/stats$/, name);
}

/** The `count` counter's window at T0, by group. */
async function countsAtT0(store: RedisStore): Promise<Record<string, number>> {
  const counter = S.counterMetas.find((meta) => meta.name === "count")!;
  const rows = await store.readWindows("s", counter, [{ start: T0, panes: [T0] }]);
  return Object.fromEntries(rows.map((row) => [row.group, row.state.count]));
}

for (
  const [what, pattern, corrupt, size] of [
    ["a pane of the second counter is a string (a batch)", "*:p:sum:*", ["SET", "x"], 20],
    ["a pane of the second counter is a string (one event)", "*:p:sum:*", ["SET", "x"], 1],
    ["the distinct counter's HyperLogLog is a hash", "*:h:users:*", ["HSET", "f", "1"], 20],
    ["the distinct counter's HyperLogLog is another string", "*:h:users:*", ["SET", "x"], 1],
    ["the distinct counter's HyperLogLog is a bare HYLL", "*:h:users:*", ["SET", "HYLL"], 1],
    ["the quantiles counter's sketch is a list", "*:q:lat:*", ["RPUSH", "x"], 20],
  ] as const
) {
  storeTest(
    `an apply that finds ${what} writes nothing; repaired, the events count once`,
    async (store, fixture) => {
      // Makes the keys, then sends events into the same panes.
      await ingest(S, store, events("a", 10));
      const key = await keyLike(fixture, pattern);
      const more = events("b", size);
      await refusedWhole(fixture, key, {
        corrupt: [corrupt[0], key, ...corrupt.slice(1)],
        call: () => ingest(S, store, more),
      });
      const reply = await ingest(S, store, more);
      assert.equal(reply.accepted, size);
      assert.equal(reply.duplicates, 0, "the refused apply kept no dedupe id");
      const expected = { '["de"]': 5 + Math.ceil(size / 2), '["fr"]': 5 + Math.floor(size / 2) };
      assert.deepEqual(await countsAtT0(store), expected, "counted once");
    },
  );
}

storeTest(
  "a k:<counter> stats field holding what the script never writes is taken as none: the apply counts once and writes it anew",
  async (store, fixture) => {
    await ingest(S, store, events("a", 1));
    const stats = await keyLike(fixture, "*:stats");
    const good = await send(fixture, "HGET", stats, "k:count") as string;
    assert.match(good, /^-?\d+ \d+$/);
    let n = 0;
    for (const text of ["99999999999999999 y", "abc", "1 nan", "1 inf", ""]) {
      await send(fixture, "HSET", stats, "k:count", text);
      n += 1;
      // A new group and an existing one in one pane (it used to fail after writing the pane).
      const reply = await ingest(S, store, [
        { id: `k${n}`, t: T0 + 61_000 + n, g: `g${n}`, v: 1, u: "x" },
        { id: `j${n}`, t: T0 + 61_000, g: "de", v: 1, u: "x" },
      ]);
      assert.equal(reply.accepted, 2, text);
      assert.match(await send(fixture, "HGET", stats, "k:count") as string, /^-?\d+ \d+$/, text);
    }
    const rows = await listWindows(S, S.counters[0], { store, nowMs: NOW }, { limit: 100 });
    const byGroup = Object.fromEntries(
      rows.map((row) => [`${row.start} ${row.group.g}`, row.value]),
    );
    assert.equal(
      byGroup[`${new Date(T0 + 60_000).toISOString()} de`],
      5,
      JSON.stringify(byGroup),
    );
    for (let i = 1; i <= 5; i++) {
      assert.equal(byGroup[`${new Date(T0 + 60_000).toISOString()} g${i}`], 1, `g${i}`);
    }
  },
);

storeTest(
  "an apply that finds a count field holding text writes nothing",
  async (store, fixture) => {
    await ingest(S, store, events("a", 10));
    const key = await keyLike(fixture, "*:p:count:*");
    const fields = await send(fixture, "HGETALL", key) as string[];
    await refusedWhole(fixture, key, {
      corrupt: ["HSET", key, ...fields.slice(0, 2), fields[0], "text"],
      call: () => ingest(S, store, events("b", 1)),
      undone: true,
    });
  },
);

storeTest(
  "an apply that opens a pane finds its counter's open windows a hash and writes nothing",
  async (store, fixture) => {
    await ingest(S, store, events("a", 4));
    const key = await keyLike(fixture, "*:open:count");
    // The next minute: a new pane, which opens a window.
    await refusedWhole(fixture, key, {
      corrupt: ["HSET", key, "f", "1"],
      call: () => ingest(S, store, events("b", 4, T0 + 60_000)),
    });
  },
);

storeTest(
  "an apply with an Idempotency-Key and a rate limit refused for a key writes neither",
  async (store, fixture) => {
    const limited = compileConfig({
      streams: {
        s: {
          time: { field: "t", lateness: "10s" },
          dedupe: { field: "id", ttl: "1h" },
          // Slow to refill: the bucket lives (3 tokens missing: 3 s).
          limits: { eventsPerSecond: 1, burst: 1000 },
          counters: { count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" } },
        },
      },
    }).get("s")!;
    const rateLimits = rateLimitsFor(limited);
    await ingestItems(limited, items(events("a", 4)), { store, nowMs: NOW, rateLimits });
    const key = await keyLike(fixture, "*:p:count:*");
    const bucket = await keyLike(fixture, "*:rl:stream");
    const body = events("b", 3);
    const idempotency = { key: "k1", body: JSON.stringify(body) };
    const before = await send(fixture, "HGETALL", bucket);
    await refusedWhole(fixture, key, {
      corrupt: ["SET", key, "x"],
      call: () => ingestItems(limited, items(body), { store, nowMs: NOW, idempotency, rateLimits }),
    });
    assert.deepEqual(await send(fixture, "HGETALL", bucket), before, "no token taken");
    const reply = await ingestItems(limited, items(body), {
      store,
      nowMs: NOW,
      idempotency,
      rateLimits,
    });
    assert.equal(reply.replayed ?? false, false, "no reply was kept for the key");
    assert.equal(reply.accepted, 3);
    assert.equal(reply.duplicates, 0);
  },
);

storeTest(
  "a session apply that finds a session's sum holding text writes nothing",
  async (store, fixture) => {
    const stream = compileConfig({
      streams: {
        t: {
          time: { field: "t", lateness: "1m" },
          dedupe: { field: "id", ttl: "1h" },
          counters: {
            spent: { window: { session: "30s" }, groupBy: ["u"], aggregate: { sum: "v" } },
          },
        },
      },
    }).get("t")!;
    const buy = (id: string, t: number) => ({ id, t, u: "ann", v: 0.1 });
    await ingest(stream, store, [buy("1", T0), buy("2", T0 + 10_000)]);
    const key = await keyLike(fixture, "*:sv:spent:*");
    for (const text of ["x", "inf", ""]) {
      await refusedWhole(fixture, key, {
        corrupt: ["HSET", key, "s", text],
        call: () => ingest(stream, store, [buy("3", T0 + 20_000)]),
      });
    }
  },
);

storeTest(
  "a session apply that finds a session's hash a string writes nothing",
  async (store, fixture) => {
    const visit = (id: string, t: number, p: string) => ({ id, t, u: "ann", p });
    await ingest(VISITS, store, [visit("1", T0, "/a"), visit("2", T0 + 10_000, "/b")]);
    const key = await keyLike(fixture, "*:sv:visits:*");
    // Within the gap of the session: it would merge into it.
    await refusedWhole(fixture, key, {
      corrupt: ["SET", key, "x"],
      call: () => ingest(VISITS, store, [visit("3", T0 + 20_000, "/c")]),
    });
    const hll = await keyLike(fixture, "*:sh:pages:*");
    await refusedWhole(fixture, hll, {
      corrupt: ["HSET", hll, "f", "1"],
      call: () => ingest(VISITS, store, [visit("4", T0 + 25_000, "/d")]),
    });
    const reply = await ingest(VISITS, store, [
      visit("3", T0 + 20_000, "/c"),
      visit("4", T0 + 25_000, "/d"),
    ]);
    assert.equal(reply.duplicates, 0, "the refused applies kept no dedupe id");
  },
);

storeTest(
  "a close that finds the log or a pane of another type closes nothing; repaired, it closes",
  async (store, fixture) => {
    const close = () => store.closeWindows("s", S.counterMetas, { latenessMs: 10_000 });
    await ingest(S, store, [...events("a", 6), ...events("b", 2, T0 + 300_000)]);
    const log = await streamKey(fixture, "s", "log");
    await refusedWhole(fixture, log, { corrupt: ["SET", log, "x"], call: close });
    const pane = await streamKey(fixture, "s", `p:count:${T0}`);
    // Read before any write: Redis refuses it, unnamed.
    await refusedWhole(fixture, pane, { corrupt: ["SET", pane, "x"], call: close, read: true });
    const closed = await close();
    const counts = closed.filter((window) => window.counter === "count" && window.start === T0);
    assert.equal(counts.length, 1, "the window at T0 closes once repaired");
    assert.deepEqual(await close(), [], "and only once");
  },
);

// The stats fields a call reads and writes back: text the scripts never write is refused, naming
// the field, not taken as none and written over (a lost watermark, closedThrough or list of dedupe
// TTLs, a count restarted).
for (
  const [field, values, closes] of [
    ["wm", ["x", "inf", "nan", " 5", ""], true],
    ["cl", ["x", "-inf", "1e999", "5 ", ""], true],
    ["dk", ["x", "", "3600000 x", "3600000  1800000:99", "0", "3600000 0:5", "3600000:5"], false],
    ["accepted", ["x", "1.5", ""], false],
  ] as const
) {
  storeTest(
    `an apply${
      closes ? " or a close" : ""
    } that finds the stats field ${field} holding what no script writes writes nothing, naming it`,
    async (store, fixture) => {
      await ingest(S, store, events("a", 4));
      const stats = await streamKey(fixture, "s", "stats");
      const fields = await send(fixture, "HGETALL", stats) as string[];
      for (const value of values) {
        // The README quotes the watermark's: `…:stats field wm holds 'x' where a time in ms belongs`.
        const named = field === "wm" && value === "x"
          ? `${stats} field wm holds 'x' where a time in ms belongs`
          : `stats field ${field} holds`;
        const namingIt = (call: Promise<unknown>) =>
          call.catch((error: Error) => {
            assert.ok(error.message.includes(named), error.message);
            throw error;
          });
        const corrupt = ["HSET", stats, ...fields, field, value];
        for (const size of [3, 1]) {
          await refusedWhole(fixture, stats, {
            corrupt,
            call: () => namingIt(ingest(S, store, events(`b${size}`, size, T0 + 60_000))),
          });
        }
        if (closes) {
          await refusedWhole(fixture, stats, {
            corrupt,
            call: () =>
              namingIt(store.closeWindows("s", S.counterMetas, { latenessMs: 10_000, idleMs: 0 })),
          });
        }
      }
      await send(fixture, "HSET", stats, ...fields);
      const reply = await ingest(S, store, events("b", 3, T0 + 60_000));
      assert.equal(reply.accepted, 3);
      assert.equal(reply.duplicates, 0, "the refused applies kept no dedupe id");
      assert.equal((await ingest(S, store, events("a", 4))).duplicates, 4, "ids held as before");
    },
  );
}

// \`filtered\` and \`rejected\`, which only requests add to, are asked (and checked) only by an apply
// with requests (here an Idempotency-Key): a plain apply, which neither adds to them nor writes
// them, reads one field fewer each and leaves them as they are.
storeTest(
  "the stats fields filtered and rejected holding what no script writes refuse an apply with requests, naming the field; a plain apply leaves them",
  async (store, fixture) => {
    await ingest(S, store, events("a", 4));
    const stats = await streamKey(fixture, "s", "stats");
    const fields = await send(fixture, "HGETALL", stats) as string[];
    for (const field of ["filtered", "rejected"]) {
      const corrupt = ["HSET", stats, ...fields, field, "x"];
      for (const size of [3, 1]) {
        const body = events(`${field}${size}k`, size, T0 + 60_000);
        const idempotency = { key: `${field}${size}`, body: JSON.stringify(body) };
        await refusedWhole(fixture, stats, {
          corrupt,
          call: () =>
            ingestItems(S, items(body), { store, nowMs: NOW, idempotency }).catch(
              (error: Error) => {
                assert.ok(error.message.includes(`stats field ${field} holds 'x'`), error.message);
                throw error;
              },
            ),
        });
      }
      await send(fixture, ...corrupt);
      for (const size of [3, 1]) {
        const reply = await ingest(S, store, events(`${field}${size}p`, size, T0 + 60_000));
        assert.equal(reply.accepted, size);
      }
      assert.equal(await send(fixture, "HGET", stats, field), "x");
      await send(fixture, "DEL", stats);
      await send(fixture, "HSET", stats, ...fields);
    }
  },
);

// \`duplicates\` and \`late\` are read (and checked) only by an apply that adds to them: one with a
// duplicate or a late event. It writes nothing (a late single event's id, written before its
// lateness is known, is undone); an apply that adds to neither leaves them as they are.
storeTest(
  "the stats fields duplicates and late holding what no script writes refuse an apply with a duplicate or a late event, naming the field; an apply adding to neither leaves them",
  async (store, fixture) => {
    await ingest(S, store, events("a", 4));
    // The watermark a minute on: events at T0 are late (lateness 10 s).
    await ingest(S, store, events("w", 1, T0 + 60_000));
    const stats = await streamKey(fixture, "s", "stats");
    const fields = await send(fixture, "HGETALL", stats) as string[];
    // Late events: 3, 1, and 2 of which only the second has an id (the only id asked: written
    // before the check, as a single event's).
    const lateOnes = (size: number) =>
      size === 2
        ? events("late2", 2, T0 - 60_000).map((event, i) =>
          i === 0 ? { ...event, id: undefined } : event
        )
        : events(`late${size}`, size, T0 - 60_000);
    const cases = [
      ["duplicates", (size: number) => events("a", size), [3, 1]],
      ["late", lateOnes, [3, 1, 2]],
    ] as const;
    for (const [field, adding, sizes] of cases) {
      const corrupt = ["HSET", stats, ...fields, field, "-1x"];
      for (const size of sizes) {
        await refusedWhole(fixture, stats, {
          corrupt,
          call: () =>
            ingest(S, store, adding(size)).catch((error: Error) => {
              assert.ok(error.message.includes(`stats field ${field} holds '-1x'`), error.message);
              throw error;
            }),
          // A call's one id is written (a held one again, as it was) before the check.
          undone: size !== 3,
        });
      }
      await send(fixture, ...corrupt);
      for (const size of [3, 1]) {
        const reply = await ingest(S, store, events(`${field}${size}p`, size, T0 + 60_000));
        assert.deepEqual([reply.accepted, reply.duplicates, reply.late], [size, 0, 0]);
      }
      assert.equal(await send(fixture, "HGET", stats, field), "-1x");
      await send(fixture, "DEL", stats);
      await send(fixture, "HSET", stats, ...fields);
    }
    // The refused applies kept no id; repaired, the counts add to what was there.
    for (const size of [1, 2]) {
      const late = await ingest(S, store, lateOnes(size));
      assert.deepEqual([late.duplicates, late.late], [0, size], "late, and not a duplicate");
    }
    assert.equal((await ingest(S, store, events("a", 3))).duplicates, 3);
    const { duplicates, late: lateCount } = await store.stats("s", S.counterMetas);
    assert.deepEqual([duplicates, lateCount], [3, 3]);
  },
);

storeTest("a session close that finds the log a string closes nothing", async (store, fixture) => {
  const close = () => store.closeWindows("visits", VISITS.counterMetas, { latenessMs: 60_000 });
  await ingest(VISITS, store, [
    { id: "1", t: T0, u: "ann", p: "/a" },
    { id: "2", t: T0 + 300_000, u: "bob", p: "/a" },
  ]);
  const log = await streamKey(fixture, "visits", "log");
  await refusedWhole(fixture, log, { corrupt: ["SET", log, "x"], call: close });
  const closed = await close();
  assert.deepEqual(
    closed.map((window) => [window.counter, window.start]).sort(),
    [["pages", T0], ["visits", T0]],
  );
});

/** A firing of an alert on the `sum` counter's window at T0 (hopping 2m every 1m). */
const SUM_FIRING = {
  alert: "big",
  counter: "sum",
  start: T0,
  end: T0 + 120_000,
  group: '["de"]',
  value: 12.5,
  ttlMs: 3_600_000,
};

storeTest(
  "alert firings that find the log a string set no marker; repaired, they fire",
  async (store, fixture) => {
    await ingest(S, store, events("a", 2));
    const log = await streamKey(fixture, "s", "log");
    await refusedWhole(fixture, log, {
      corrupt: ["SET", log, "x"],
      call: () => store.fireAlerts("s", [SUM_FIRING]),
    });
    assert.deepEqual(await store.fireAlerts("s", [SUM_FIRING]), [SUM_FIRING]);
  },
);

storeTest(
  "a close, alert firings and a log append that find the log's dispatch hold of another type, or its counts holding text, write nothing; repaired, they close and fire",
  async (store, fixture) => {
    const close = () => store.closeWindows("s", S.counterMetas, { latenessMs: 10_000 });
    await ingest(S, store, [...events("a", 6), ...events("b", 2, T0 + 300_000)]);
    const hold = await streamKey(fixture, "s", "dispatched");
    const record = {
      type: "window.closed" as const,
      counter: "count",
      start: T0,
      end: T0 + 60_000,
      group: "[]",
      state: { count: 1, sum: 0, min: null, max: null, distinct: 0, approximate: false },
    };
    for (
      const corrupt of [
        ["SET", hold, "x"],
        ["RPUSH", hold, "x"],
        ["HSET", hold, "m", "0-1", "lost", "x"],
        ["HSET", hold, "m", "x"],
      ]
    ) {
      await refusedWhole(fixture, hold, { corrupt, call: close });
      await refusedWhole(fixture, hold, {
        corrupt,
        call: () => store.fireAlerts("s", [SUM_FIRING]),
      });
      await refusedWhole(fixture, hold, { corrupt, call: () => store.appendLog("s", [record]) });
    }
    const closed = await close();
    const counts = closed.filter((window) => window.counter === "count" && window.start === T0);
    assert.equal(counts.length, 1, "the window at T0 closes once repaired");
    assert.deepEqual(await store.fireAlerts("s", [SUM_FIRING]), [SUM_FIRING]);
  },
);

storeTest(
  "alert firings, and a close keeping an open window's markers, that find a counter's marker index a string write nothing",
  async (store, fixture) => {
    await ingest(S, store, events("a", 2));
    const index = await streamKey(fixture, "s", "alerted:sum");
    await refusedWhole(fixture, index, {
      corrupt: ["SET", index, "x"],
      call: () => store.fireAlerts("s", [SUM_FIRING]),
    });
    assert.deepEqual(await store.fireAlerts("s", [SUM_FIRING]), [SUM_FIRING]);
    // Indexed by its window's start.
    const marker = String(await send(fixture, "ZRANGE", index, "0", "-1"));
    assert.match(marker, /:alert:big:sum:\d+:\["de"\]$/);
    // A close once the panes are due for their life again (less than ttl + ttl/16 left) asks the
    // index for the open windows' markers.
    const sum = S.counterMetas.find((meta) => meta.name === "sum")!;
    const close = () =>
      store.closeWindows("s", S.counterMetas, {
        latenessMs: 10_000,
        nowMs: NOW + Math.ceil(sum.ttlMs / 8),
      });
    await refusedWhole(fixture, index, { corrupt: ["SET", index, "x"], call: close });
    await close();
  },
);

/** A stream of one counter over groups `g`, at most one of them: a second goes to the rest. */
const cappedStream = (counter: string, aggregate: unknown) => ({
  time: { field: "t", lateness: "10s" },
  dedupe: { field: "id", ttl: "1h" },
  counters: {
    [counter]: { window: { tumbling: "1m" }, groupBy: ["g"], maxGroups: 1, aggregate },
  },
});

/** Streams whose one counter keeps one group, so a second group goes to the rest's keys. */
const CAPPED = compileConfig({
  streams: {
    q: cappedStream("lat", { quantiles: "v" }),
    d: cappedStream("users", { distinct: "u" }),
    c: cappedStream("count", "count"),
    sm: cappedStream("total", { sum: "v" }),
    ss: {
      time: { field: "t", lateness: "1m" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        visits: {
          window: { session: "30s" },
          groupBy: ["u"],
          maxSessions: 1,
          aggregate: "count",
        },
      },
    },
  },
});

const event = (id: string, g: string, extra: object = {}) => ({
  id,
  t: T0 + 1_000,
  g,
  v: 3,
  u: "u",
  ...extra,
});

for (
  const [what, name, pattern, corrupt] of [
    ["the rest's sketch, where a new group overflows,", "q", "*:q:lat:*:__other__", ["SET", "x"]],
    ["the rest's HyperLogLog, where a new group overflows,", "d", "*:h:users:*:__other__", [
      "HSET",
      "f",
      "1",
    ]],
  ] as const
) {
  storeTest(
    `an apply that finds ${what} of another type writes nothing`,
    async (store, fixture) => {
      const stream = CAPPED.get(name)!;
      await ingest(stream, store, [event("1", "a"), event("2", "b")]);
      const key = await keyLike(fixture, pattern);
      await refusedWhole(fixture, key, {
        corrupt: [corrupt[0], key, ...corrupt.slice(1)],
        call: () => ingest(stream, store, [event("3", "c")]),
        // A distinct counter's single event is counted first (a count's too, below).
        undone: name === "d",
      });
      assert.equal((await ingest(stream, store, [event("3", "c")])).duplicates, 0);
    },
  );
}

for (
  const [what, name, key, field, value, group] of [
    ["a count holding 1.5, which HINCRBY refuses", "c", `p:count:${T0}`, 'c:["a"]', "1.5", "a"],
    ["a count holding ' 5'", "c", `p:count:${T0}`, 'c:["a"]', " 5", "a"],
    // Asked only when a group is new in its pane, the only time it may be added to.
    ["a groups overflow count holding text", "c", "stats", "overflow:count", "x", "c"],
    ["a sessions overflow count holding text", "ss", "stats", "overflow:visits", "x", "a"],
    // Sums are added in the script, to the field as read when checked.
    ["a sum holding text", "sm", `p:total:${T0}`, 's:["a"]', "x", "a"],
    ["a sum holding inf", "sm", `p:total:${T0}`, 's:["a"]', "inf", "a"],
    ["a sum holding ' 5'", "sm", `p:total:${T0}`, 's:["a"]', " 5", "a"],
    [
      "the rest's sum holding text, where a new group overflows,",
      "sm",
      `p:total:${T0}`,
      "s:__other__",
      "x",
      "c",
    ],
  ] as const
) {
  storeTest(`an apply that finds ${what} writes nothing`, async (store, fixture) => {
    const stream = CAPPED.get(name)!;
    // Sessions apart, each past maxSessions; the other counter's events in one pane.
    const gap = name === "ss" ? 200_000 : 0;
    await ingest(stream, store, [
      event("1", "a", { u: "ann" }),
      event("2", "b", { u: "bob", t: T0 + gap }),
    ]);
    const full = await streamKey(fixture, name, key);
    const fields = await send(fixture, "HGETALL", full) as string[];
    await refusedWhole(fixture, full, {
      corrupt: ["HSET", full, ...fields, field, value],
      call: () => ingest(stream, store, [event("3", group, { u: "cat", t: T0 + 2 * gap })]),
      undone: name === "c",
    });
  });
}

// The rest's fields are asked only when a group is new in its pane (the only time they may be
// added to); a group whose count is 0 counts as new, as HINCRBY would answer. (Two events of the
// group counted 0: a single event's apply counts first, and, refused, cannot tell a count of 0,
// which no apply writes, from none: it deletes the field. See countedNew in the apply script.)
for (
  const [what, group, extra, size] of [
    ["the rest's count holding text, where a new group overflows,", "c", [], 1],
    ["the rest's count holding text, where a group counted 0 overflows,", "a", ['c:["a"]', "0"], 2],
  ] as const
) {
  storeTest(`an apply that finds ${what} writes nothing`, async (store, fixture) => {
    const stream = CAPPED.get("c")!;
    await ingest(stream, store, [event("1", "a"), event("2", "b")]);
    const full = await streamKey(fixture, "c", `p:count:${T0}`);
    const fields = await send(fixture, "HGETALL", full) as string[];
    assert.ok(fields.includes("c:__other__"), JSON.stringify(fields));
    await refusedWhole(fixture, full, {
      corrupt: ["HSET", full, ...fields, "c:__other__", "x", ...extra],
      call: () => ingest(stream, store, [event("3", group), event("4", group)].slice(0, size)),
      undone: size === 1,
    });
  });
}

storeTest(
  "an apply that finds the rest's and the overflow count holding text adds to a group it holds",
  async (store, fixture) => {
    const stream = CAPPED.get("c")!;
    await ingest(stream, store, [event("1", "a"), event("2", "b")]);
    const full = await streamKey(fixture, "c", `p:count:${T0}`);
    const stats = await streamKey(fixture, "c", "stats");
    await send(fixture, "HSET", full, "c:__other__", "x");
    await send(fixture, "HSET", stats, "overflow:count", "x");
    assert.equal((await ingest(stream, store, [event("3", "a")])).duplicates, 0);
    assert.equal(await send(fixture, "HGET", full, 'c:["a"]'), "2");
    assert.equal(await send(fixture, "HGET", full, "c:__other__"), "x");
    assert.equal(await send(fixture, "HGET", stats, "overflow:count"), "x");
  },
);

storeTest(
  "an apply that finds a sketch's bucket holding text writes nothing",
  async (store, fixture) => {
    const stream = CAPPED.get("q")!;
    await ingest(stream, store, [event("1", "a")]);
    const key = await keyLike(fixture, "*:q:lat:*");
    const buckets = await send(fixture, "HGETALL", key) as string[];
    await refusedWhole(fixture, key, {
      corrupt: ["HSET", key, ...buckets.flatMap((text, i) => i % 2 === 0 ? [text] : ["x"])],
      call: () => ingest(stream, store, [event("2", "a")]),
    });
  },
);

storeTest(
  "an apply that finds an empty string where a HyperLogLog belongs writes nothing",
  async (store, fixture) => {
    await ingest(S, store, events("a", 2));
    const key = await keyLike(fixture, "*:h:users:*");
    await refusedWhole(fixture, key, {
      corrupt: ["SET", key, ""],
      call: () => ingest(S, store, events("b", 1)),
    });
  },
);

storeTest(
  "an apply into a pane whose keys were evicted checks its counter's open windows first",
  async (store, fixture) => {
    await ingest(S, store, events("a", 2));
    const pane = await streamKey(fixture, "s", `p:users:${T0}`);
    await send(fixture, "DEL", pane);
    const open = await streamKey(fixture, "s", "open:users");
    await refusedWhole(fixture, open, {
      corrupt: ["SET", open, "x"],
      call: () => ingest(S, store, events("b", 1)),
      undone: true,
    });
  },
);

// A single event's plain apply (no Idempotency-Key, limits, log or session counter) counts its
// count and distinct cells first (HINCRBY refuses a key of another type or a field that is no
// integer, and answers whether the group is new) instead of reading their panes to check them.
storeTest(
  "a single event's apply reads no count or distinct pane before counting it",
  async (store, fixture) => {
    await ingest(S, store, events("a", 10));
    await send(fixture, "CONFIG", "RESETSTAT");
    assert.equal((await ingest(S, store, events("b", 1))).accepted, 1);
    const info = String(await send(fixture, "INFO", "commandstats"));
    const calls = (name: string) =>
      Number(new RegExp(`^cmdstat_${name}:calls=(\\d+)`, "m").exec(info)?.[1] ?? 0);
    // The stream's definition, the stats, the sum's pane, the quantiles' pane and sketch: not the
    // count's or the distinct's pane.
    assert.equal(calls("hmget"), 5, info);
    // The count's, the distinct's and the quantiles' group, once each, and the sketch's bucket.
    assert.equal(calls("hincrby"), 4, info);
    assert.deepEqual(await countsAtT0(store), { '["de"]': 6, '["fr"]': 5 });
  },
);

storeTest(
  "a single event's apply that finds its distinct pane a string undoes its count and id",
  async (store, fixture) => {
    await ingest(S, store, events("a", 10));
    const key = await keyLike(fixture, "*:p:users:*");
    // The count's HINCRBY comes first and is written when the distinct's is refused.
    await refusedWhole(fixture, key, {
      corrupt: ["SET", key, "x"],
      call: () => ingest(S, store, events("b", 1)),
      undone: true,
    });
    const reply = await ingest(S, store, events("b", 1));
    assert.equal(reply.duplicates, 0, "the refused apply kept no dedupe id");
    assert.deepEqual(await countsAtT0(store), { '["de"]': 6, '["fr"]': 5 }, "counted once");
  },
);

storeTest(
  "a single event's apply refuses a count of 19 digits and adds to one of 18, as a batch does",
  async (store, fixture) => {
    await ingest(S, store, events("a", 10));
    const key = await keyLike(fixture, "*:p:count:*");
    const fields = await send(fixture, "HGETALL", key) as string[];
    await refusedWhole(fixture, key, {
      corrupt: ["HSET", key, ...fields, 'c:["de"]', "1000000000000000000"],
      call: () => ingest(S, store, events("b", 1)),
      undone: true,
    });
    await send(fixture, "HSET", key, ...fields, 'c:["de"]', "999999999999999990");
    assert.equal((await ingest(S, store, events("b", 1))).accepted, 1);
    assert.equal(await send(fixture, "HGET", key, 'c:["de"]'), "999999999999999991");
    await send(fixture, "HSET", key, 'c:["de"]', "-1000000000000000000");
    await assert.rejects(ingest(S, store, events("c", 1)), /holds '-1000000000000000000'/);
    assert.equal(await send(fixture, "HGET", key, 'c:["de"]'), "-1000000000000000000");
  },
);

storeTest(
  "a session close that finds a group's open sessions a string closes nothing",
  async (store, fixture) => {
    const close = () => store.closeWindows("visits", VISITS.counterMetas, { latenessMs: 60_000 });
    await ingest(VISITS, store, [
      { id: "1", t: T0, u: "ann", p: "/a" },
      { id: "2", t: T0 + 300_000, u: "bob", p: "/a" },
    ]);
    const group = await streamKey(fixture, "visits", 'sz:visits:["ann"]');
    await refusedWhole(fixture, group, { corrupt: ["SET", group, "x"], call: close });
    assert.equal((await close()).length, 2, "ann's two sessions close once repaired");
  },
);

storeTest(
  "a distinct counter's HyperLogLog, once dense, passes the check",
  async (store, fixture) => {
    for (let part = 0; part < 6; part++) {
      const list = Array.from({ length: 1_000 }, (_, i) => ({
        id: `d${part}-${i}`,
        t: T0 + 1_000,
        g: "de",
        v: 1,
        u: `user${part}-${i}`,
      }));
      await ingest(S, store, list);
    }
    const key = await keyLike(fixture, "*:h:users:*");
    assert.equal(await send(fixture, "STRLEN", key), 12_304, "dense");
    const reply = await ingest(S, store, [{ id: "last", t: T0 + 2_000, g: "de", v: 1, u: "last" }]);
    assert.equal(reply.accepted, 1);
  },
);

storeTest(
  "an apply, a close and alert firings that find the log's entry ids used up write nothing",
  async (store, fixture) => {
    const maxId = "18446744073709551615-18446744073709551615";
    await ingest(S, store, [...events("a", 6), ...events("b", 2, T0 + 300_000)]);
    const log = await streamKey(fixture, "s", "log");
    const corrupt = ["XADD", log, maxId, "r", "junk"];
    await refusedWhole(fixture, log, {
      corrupt,
      call: () => store.closeWindows("s", S.counterMetas, { latenessMs: 10_000 }),
    });
    await refusedWhole(fixture, log, { corrupt, call: () => store.fireAlerts("s", [SUM_FIRING]) });
    // An apply that logs its events (a live subscriber wants them).
    await store.signalDemand("s", ["event.processed"], 60_000);
    await refusedWhole(fixture, log, {
      corrupt,
      call: () =>
        ingestItems(S, items(events("c", 1)), {
          store,
          nowMs: NOW,
          log: { processed: true, late: true },
        }),
    });
    assert.equal(
      (await store.closeWindows("s", S.counterMetas, { latenessMs: 10_000 })).length > 0,
      true,
    );
    assert.deepEqual(await store.fireAlerts("s", [SUM_FIRING]), [SUM_FIRING]);
  },
);

storeTest(
  "a rate-limit bucket holding what the script never writes is taken as full: no error, no lockout",
  async (store, fixture) => {
    const limited = compileConfig({
      streams: {
        s: {
          time: { field: "t", lateness: "10s" },
          // Slow enough that the bucket outlives a loaded machine's pauses between the calls below
          // (at 10/s its TTL was 100 ms, and it could expire before the test read it).
          limits: { eventsPerSecond: 0.1, burst: 10 },
          counters: { count: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    }).get("s")!;
    const rateLimits = rateLimitsFor(limited);
    const send1 = (nowMs: number) =>
      ingestItems(limited, items(events("a", 1)), { store, nowMs, rateLimits });
    await send1(NOW);
    const bucket = await keyLike(fixture, "*:rl:stream");
    for (const [t, u] of [["-inf", "1"], ["nan", "1"], ["-5", String(NOW)], ["1", "x"]]) {
      await send(fixture, "HSET", bucket, "t", t, "u", u);
      assert.equal((await send1(NOW)).accepted, 1, `t=${t} u=${u}`);
    }
    // Written by an instance whose clock is ahead: no refill, but none taken away either, and the
    // bucket refills from now on (it was 3,100 years of Retry-After).
    await send(fixture, "HSET", bucket, "t", "0", "u", String(NOW + 1e11));
    await assert.rejects(send1(NOW), (error: Error & { retryAfterMs?: number }) => {
      assert.ok((error.retryAfterMs ?? Infinity) <= 10_000, String(error.retryAfterMs));
      return true;
    });
    assert.equal((await send1(NOW + 10_000)).accepted, 1);
    assert.ok(Number(await send(fixture, "PTTL", bucket)) <= 100_000);
  },
);
