/**
 * One contract suite, run against both stores: same inputs, same counters
 * (HyperLogLog within its error bound), same outcomes, same closing.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { compileConfig, type CompiledStream } from "../../src/config/mod.ts";
import { ingestItems, RejectedCounts } from "../../src/ingest/mod.ts";
import {
  listWindows,
  listWindowsPage,
  type RowPosition,
  type WindowRow,
} from "../../src/query/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import {
  type BatchOfCellUpdates,
  type BatchRequest,
  type EventWithCellUpdates,
  fromCellUpdates,
  type IdempotencyClaim,
  type Store,
  type StoreBatch,
} from "../../src/store/types.ts";
import { type RedisFixture, redisTest, restClient } from "../_redis.ts";
import { recordingApplies } from "./redis/_apply_headers.ts";
import { sessionScenarios, sessionStream } from "./_session_scenarios.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");

const CONFIG = {
  streams: {
    s: {
      time: { field: "t", lateness: "10s" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
        sum: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { sum: "v" } },
        min: { window: { hopping: "2m", every: "1m" }, aggregate: { min: "v" } },
        max: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { max: "v" } },
        avg: { window: { sliding: "3m", precision: "1m" }, aggregate: { avg: "v" } },
        distinct: { window: { tumbling: "1m" }, aggregate: { distinct: "u" } },
        capped: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count", maxGroups: 2 },
      },
    },
  },
};

const stream: CompiledStream = compileConfig(CONFIG).get("s")!;

/** Every aggregate with a cap of two groups, apart from `s` so its other scenarios stay as they are. */
const CAPPED: CompiledStream = compileConfig({
  streams: {
    c: {
      time: { field: "t", lateness: "10s" },
      counters: {
        count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count", maxGroups: 2 },
        sum: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { sum: "v" }, maxGroups: 2 },
        low: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { min: "v" }, maxGroups: 2 },
        users: {
          window: { tumbling: "1m" },
          groupBy: ["g"],
          aggregate: { distinct: "u" },
          maxGroups: 2,
        },
      },
    },
  },
}).get("c")!;

function items(events: object[]) {
  return events.map((value) => ({ ok: true as const, value }));
}

/** The clock the stores read with; batches use times near it. */
const clock = () => T0 + 300_000;

function redisStore(fixture: RedisFixture, now = clock): RedisStore {
  const redis = restClient(fixture);
  return new RedisStore(redis, { now });
}

async function allWindows(store: Store, nowMs: number): Promise<Record<string, WindowRow[]>> {
  const out: Record<string, WindowRow[]> = {};
  for (const counter of stream.counters) {
    out[counter.name] = await listWindows(stream, counter, { store, nowMs }, { limit: 1000 });
  }
  return out;
}

/** Compares counters; distinct (HLL) may differ by its error bound, nothing else. */
function assertSameCounters(
  actual: Record<string, WindowRow[]>,
  expected: Record<string, WindowRow[]>,
) {
  for (const name of Object.keys(expected)) {
    assert.equal(actual[name].length, expected[name].length, `${name}: number of windows`);
    actual[name].forEach((row, i) => {
      const want = expected[name][i];
      assert.deepEqual([row.start, row.end, row.group, row.final], [
        want.start,
        want.end,
        want.group,
        want.final,
      ], name);
      // These counters' values are numbers (quantiles have their own suite).
      const [got, wanted] = [row.value as number | null, want.value as number | null];
      if (got === null || wanted === null) {
        assert.equal(row.value, want.value, name);
      } else if (name === "distinct") {
        assert.ok(
          Math.abs(got - wanted) <= Math.max(1, wanted * 0.02),
          `${name}: ${row.value} vs ${want.value}`,
        );
      } else {
        // Sums too, to the last bit (sums_contract_test.ts); min and max as numbers (-0 is 0).
        const same = name === "sum" || name === "avg" ? Object.is(got, wanted) : got === wanted;
        assert.ok(same, `${name}: ${row.value} vs ${want.value}`);
      }
    });
  }
}

type Scenario = (store: Store) => Promise<void>;

const scenarios: Record<string, Scenario> = {
  async "applyBatch() reports duplicates within and across batches, and late events"(store) {
    const first = await ingestItems(
      stream,
      items([
        { id: "a", t: T0 + 5_000, g: "x", v: 1, u: "p" },
        { id: "a", t: T0 + 5_000, g: "x", v: 1, u: "p" },
        { id: "b", t: T0 + 65_000, g: "y", v: 2, u: "q" },
      ]),
      { store: store, nowMs: T0 + 70_000 },
    );
    assert.deepEqual([first.accepted, first.duplicates, first.late], [3, 1, 0]);
    const second = await ingestItems(
      stream,
      items([
        { id: "b", t: T0 + 65_000, g: "y", v: 2 },
        { id: "c", t: T0 + 50_000, g: "x", v: 3 },
        { id: "d", t: T0 + 56_000, g: "x", v: 4 },
      ]),
      { store: store, nowMs: T0 + 70_000 },
    );
    assert.deepEqual([second.duplicates, second.late], [1, 1]);
    const stats = await store.stats("s", stream.counterMetas);
    assert.equal(stats.watermark, T0 + 65_000);
    assert.deepEqual(
      [stats.accepted, stats.applied, stats.duplicates, stats.late],
      [6, 3, 2, 1],
    );
    // Within its bound a store forgets no dedupe id early (Redis has no bound), nor a stored reply.
    assert.equal(stats.dedupeForgotten, 0);
    assert.equal(stats.repliesForgotten, 0);
  },

  async 'a number dedupe id is its JavaScript text: 0 and "0", 12.5 and "12.5", 1e21 and "1e+21" are one id'(
    store,
  ) {
    const ids = (list: (string | number)[], t: number) =>
      items(list.map((id, i) => ({ id, t: t + i, g: "x", v: 1 })));
    const first = await ingestItems(stream, ids([0, 12.5, 1e21, 7], T0 + 5_000), {
      store,
      nowMs: T0 + 10_000,
    });
    assert.deepEqual([first.accepted, first.duplicates], [4, 0]);
    // The same ids as strings, and -0 (its text is "0"), are duplicates; "00", "7.0" are not.
    const second = await ingestItems(
      stream,
      ids(["0", "12.5", "1e+21", "7", -0, "00", "7.0", "0.0"], T0 + 6_000),
      { store, nowMs: T0 + 10_000 },
    );
    assert.deepEqual([second.accepted, second.duplicates], [8, 5]);
  },

  async "readWindows() merges panes for every aggregate"(store) {
    await ingestItems(
      stream,
      items([
        { id: "1", t: T0 + 1_000, g: "x", v: 5, u: "a" },
        { id: "2", t: T0 + 2_000, g: "x", v: -2.5, u: "b" },
        { id: "3", t: T0 + 61_000, g: "x", v: 10, u: "a" },
        { id: "4", t: T0 + 62_000, g: "y", v: 1, u: "c" },
        { id: "5", t: T0 + 63_000, g: "y" },
      ]),
      { store: store, nowMs: T0 + 70_000 },
    );
    const rows = await allWindows(store, T0 + 70_000);
    const values = (name: string) => rows[name].map((row) => [row.start, row.group, row.value]);
    const m0 = new Date(T0).toISOString();
    const m1 = new Date(T0 + 60_000).toISOString();
    const mm1 = new Date(T0 - 60_000).toISOString();
    assert.deepEqual(values("count"), [[m1, { g: "x" }, 1], [m1, { g: "y" }, 2], [
      m0,
      { g: "x" },
      2,
    ]]);
    assert.deepEqual(values("sum"), [[m1, { g: "x" }, 10], [m1, { g: "y" }, 1], [
      m0,
      { g: "x" },
      2.5,
    ]]);
    assert.deepEqual(values("min"), [[m1, {}, 1], [m0, {}, -2.5], [mm1, {}, -2.5]]);
    assert.deepEqual(values("max"), [[m1, { g: "x" }, 10], [m1, { g: "y" }, 1], [
      m0,
      { g: "x" },
      5,
    ]]);
    assert.deepEqual(values("avg").map((row) => row[2]), [11 / 2, 13.5 / 4, 13.5 / 4, 2.5 / 2]);
    assert.deepEqual(values("distinct"), [[m1, {}, 2], [m0, {}, 2]]);
  },

  async "object values differing only in key order are one group and one distinct value"(store) {
    await ingestItems(
      stream,
      items([
        { id: "1", t: T0 + 1_000, g: { os: "ios", v: [1, { a: 1, b: 2 }] }, u: { k: 1, j: 2 } },
        { id: "2", t: T0 + 2_000, g: { v: [1, { b: 2, a: 1 }], os: "ios" }, u: { j: 2, k: 1 } },
        { id: "3", t: T0 + 3_000, g: { os: "ios", v: [{ a: 1, b: 2 }, 1] }, u: { k: 2, j: 1 } },
      ]),
      { store: store, nowMs: T0 + 70_000 },
    );
    const rows = await allWindows(store, T0 + 70_000);
    const m0 = new Date(T0).toISOString();
    // Array order still counts: the third event is a group (and a value) of its own.
    assert.deepEqual(rows.count.map((row) => [row.start, row.group, row.value]), [
      [m0, { g: { os: "ios", v: [1, { a: 1, b: 2 }] } }, 2],
      [m0, { g: { os: "ios", v: [{ a: 1, b: 2 }, 1] } }, 1],
    ]);
    assert.deepEqual(rows.distinct.map((row) => row.value), [2]);
  },

  async "groups beyond maxGroups count into __other__ with an overflow stat"(store) {
    await ingestItems(
      stream,
      items(
        ["a", "b", "c", "d", "a", "c"].map((g, i) => ({ id: `e${i}`, t: T0 + 1_000, g })),
      ),
      { store: store, nowMs: T0 + 2_000 },
    );
    const rows = (await allWindows(store, T0 + 2_000)).capped;
    const byGroup = Object.fromEntries(rows.map((row) => [row.group.g, row.value]));
    assert.deepEqual(byGroup, { a: 2, b: 1, __other__: 3 });
    assert.equal((await store.stats("s", stream.counterMetas)).overflow.capped, 3);
  },

  async "a group past maxGroups that repeats in a row counts each event into __other__ and the overflow stat"(
    store,
  ) {
    await ingestItems(
      stream,
      items(
        ["a", "a", "b", "c", "c", "c", "b", "a"].map((g, i) => ({ id: `e${i}`, t: T0 + 1_000, g })),
      ),
      { store: store, nowMs: T0 + 2_000 },
    );
    const rows = (await allWindows(store, T0 + 2_000)).capped;
    const byGroup = Object.fromEntries(rows.map((row) => [row.group.g, row.value]));
    assert.deepEqual(byGroup, { a: 3, b: 2, __other__: 3 });
    assert.equal((await store.stats("s", stream.counterMetas)).overflow.capped, 3);
  },

  async "groups beyond maxGroups go to __other__ across batches too, for every aggregate"(store) {
    // Each batch its own apply: the pane fills in the first, later new groups overflow, and
    // groups already in the pane (__other__ included) keep counting.
    const batches = [["a", "b"], ["c", "a"], ["d"], ["b", "c", "d"]];
    let i = 0;
    for (const groups of batches) {
      const events = groups.map((g) => {
        i += 1;
        return { t: T0 + 1_000, g, v: i, u: `u${i}` };
      });
      await ingestItems(CAPPED, items(events), { store: store, nowMs: T0 + 2_000 });
    }
    const values: Record<string, Record<string, unknown>> = {};
    for (const counter of CAPPED.counters) {
      const rows = await listWindows(CAPPED, counter, { store, nowMs: T0 + 2_000 }, { limit: 10 });
      values[counter.name] = Object.fromEntries(rows.map((row) => [row.group.g, row.value]));
    }
    // a: events 1, 4; b: 2, 6; __other__: c 3, 7 and d 5, 8.
    assert.deepEqual(values, {
      count: { a: 2, b: 2, __other__: 4 },
      sum: { a: 5, b: 8, __other__: 23 },
      low: { a: 1, b: 2, __other__: 3 },
      users: { a: 2, b: 2, __other__: 4 },
    });
    assert.deepEqual((await store.stats("c", CAPPED.counterMetas)).overflow, {
      count: 4,
      sum: 4,
      low: 4,
      users: 4,
    });
  },

  async "listWindowsPage() pages every row once, in the listing's order, across a window of many groups"(
    store,
  ) {
    const wide: CompiledStream = compileConfig({
      streams: {
        w: {
          time: { field: "t", lateness: "10s" },
          counters: {
            count: {
              window: { tumbling: "1m" },
              groupBy: ["g"],
              aggregate: "count",
              maxGroups: 500,
            },
          },
        },
      },
    }).get("w")!;
    // 250 groups in the newest window, 3 in each of three older ones (oldest first: lateness).
    const events = [];
    for (let minute = 0; minute < 3; minute++) {
      for (const g of ["a", "b", `m${minute}`]) events.push({ t: T0 + minute * 60_000 + 1_000, g });
    }
    for (let i = 0; i < 250; i++) events.push({ t: T0 + 180_000 + 1_000, g: `n${i}` });
    await ingestItems(wide, items(events), { store, nowMs: T0 + 182_000 });
    const context = { store, nowMs: T0 + 182_000 };
    const counter = wide.counters[0];
    const whole = await listWindows(wide, counter, context, { limit: 1000 });
    assert.equal(whole.length, 259);
    // (Limit 1 with a filter: pages that end where a window ends, read whole.)
    for (const [limit, groups] of [[100, {}], [7, {}], [2, { g: "a" }], [1, { g: "a" }]] as const) {
      const seen: WindowRow[] = [];
      let after: RowPosition | undefined;
      for (let pages = 0; pages < 100; pages++) {
        const page = await listWindowsPage(wide, counter, context, { limit, groups, after });
        assert.ok(page.rows.length <= limit);
        seen.push(...page.rows);
        if (page.next === null) break;
        after = page.next;
      }
      const wanted = whole.filter((row) => !("g" in groups) || row.group.g === groups.g);
      assert.deepEqual(seen, wanted, `limit ${limit}`);
    }
  },

  async "events whose group reads __other__ count into the overflow group: one row, not two alike"(
    store,
  ) {
    const groups = ["__other__", "a", "x", "__other__", "y"];
    await ingestItems(
      CAPPED,
      items(groups.map((g, i) => ({ t: T0 + 1_000, g, v: i + 1, u: `u${i}` }))),
      { store: store, nowMs: T0 + 2_000 },
    );
    const rows = await listWindows(CAPPED, CAPPED.counters[0], { store, nowMs: T0 + 2_000 }, {
      limit: 10,
    });
    // __other__ took a slot as any first group does; x and y overflow into the same row.
    assert.deepEqual(rows.map((row) => [row.group.g, row.value]).sort(), [
      ["__other__", 4],
      ["a", 1],
    ]);
    assert.equal((await store.stats("c", CAPPED.counterMetas)).overflow.count, 2);
  },

  async "events reading __other__ that reach a full pane together count one overflow, as one by one"(
    store,
  ) {
    // The first opens the overflow group past maxGroups (an overflow); the next find it there, as
    // events of a group already in the pane do. Redis counted the whole batch's run as overflow.
    await ingestItems(CAPPED, items([{ t: T0 + 1_000, g: "a" }, { t: T0 + 1_000, g: "b" }]), {
      store,
      nowMs: T0 + 2_000,
    });
    await ingestItems(
      CAPPED,
      items([{ t: T0 + 1_000, g: "__other__" }, { t: T0 + 1_000, g: "__other__" }]),
      { store, nowMs: T0 + 2_000 },
    );
    const rows = await listWindows(CAPPED, CAPPED.counters[0], { store, nowMs: T0 + 2_000 }, {
      limit: 10,
    });
    assert.deepEqual(rows.map((row) => [row.group.g, row.value]).sort(), [
      ["__other__", 2],
      ["a", 1],
      ["b", 1],
    ]);
    assert.equal((await store.stats("c", CAPPED.counterMetas)).overflow.count, 1);
  },

  async "closeWindows() returns each final window once, with its values"(store) {
    await ingestItems(
      stream,
      items([
        { id: "1", t: T0 + 1_000, g: "x", v: 1 },
        { id: "2", t: T0 + 61_000, g: "x", v: 2 },
      ]),
      { store: store, nowMs: T0 + 62_000 },
    );
    const count = stream.counterMetas.filter((meta) => meta.name === "count");
    assert.deepEqual(await store.closeWindows("s", count, { latenessMs: 10_000 }), []);
    await ingestItems(stream, items([{ id: "3", t: T0 + 75_000, g: "y" }]), {
      store: store,
      nowMs: T0 + 76_000,
    });
    const closed = await store.closeWindows("s", count, { latenessMs: 10_000 });
    assert.equal(closed.length, 1);
    assert.equal(closed[0].start, T0);
    assert.equal(closed[0].end, T0 + 60_000);
    assert.deepEqual(closed[0].groups.map((g) => [g.group, g.state.count]), [['["x"]', 1]]);
    assert.deepEqual(await store.closeWindows("s", count, { latenessMs: 10_000 }), []);
    const hopping = stream.counterMetas.filter((meta) => meta.name === "min");
    await ingestItems(stream, items([{ id: "4", t: T0 + 200_000 }]), {
      store: store,
      nowMs: T0 + 200_000,
    });
    const hops = await store.closeWindows("s", hopping, { latenessMs: 10_000 });
    assert.deepEqual(hops.map((w) => w.start - T0), [-60_000, 0, 60_000]);
    assert.deepEqual(hops.map((w) => w.groups[0].state.min), [1, 1, 2]);
  },

  async "a raised lateness re-opens no closed window: its events are late, its value and close stay"(
    store,
  ) {
    const at = (t: number, g: string, id: string) => ({ id, t: T0 + t * 1000, g });
    const count = stream.counters.find((counter) => counter.name === "count")!;
    const metas = stream.counterMetas.filter((meta) => meta.name === "count");
    await ingestItems(stream, items([at(10, "a", "1"), at(11, "a", "2"), at(12, "a", "3")]), {
      store,
      nowMs: T0 + 301_000,
    });
    await ingestItems(stream, items([at(300, "b", "4")]), { store, nowMs: T0 + 301_000 });
    const first = await store.closeWindows("s", metas, { latenessMs: 10_000 });
    assert.deepEqual(first.map((w) => [w.start - T0, w.groups.map((g) => g.state.count)]), [
      [0, [3]],
    ]);
    // The same definition with lateness 1h: what falls in the closed window is late, whatever
    // the group; a window that never closed takes an event the old lateness called late.
    const raised = compileConfig({
      streams: { s: { ...CONFIG.streams.s, time: { field: "t", lateness: "1h" } } },
    }).get("s")!;
    const reply = await ingestItems(
      raised,
      items([at(20, "a", "5"), at(21, "c", "6"), at(200, "d", "7")]),
      { store, nowMs: T0 + 302_000 },
    );
    assert.equal(reply.late, 2);
    const context = { store, nowMs: T0 + 302_000 };
    const rows = await listWindows(raised, count, context, { limit: 1000 });
    assert.deepEqual(rows.map((row) => [row.start, row.group.g, row.value, row.final]), [
      [new Date(T0 + 300_000).toISOString(), "b", 1, false],
      [new Date(T0 + 180_000).toISOString(), "d", 1, false],
      [new Date(T0).toISOString(), "a", 3, true],
    ]);
    assert.deepEqual(await store.closeWindows("s", metas, { latenessMs: 3_600_000 }), []);
    // Lowered again: the window at 3 min closes; the one at 0 never again.
    const second = await store.closeWindows("s", metas, { latenessMs: 0 });
    assert.deepEqual(second.map((w) => w.start - T0), [180_000]);
    const closes = (await store.readLog("s", null, 100)).map((entry) => entry.record)
      .flatMap((r) => r.type === "window.closed" ? [[r.start - T0, r.group, r.state.count]] : []);
    assert.deepEqual(closes, [[0, '["a"]', 3], [180_000, '["d"]', 1]]);
    assert.equal((await store.stats("s", [])).closedThrough, T0 + 240_000);
  },

  async "keepFinal() makes events before its bound late under any lateness, never lowers it, and marks nothing of a stream without a watermark"(
    store,
  ) {
    const at = (t: number, g: string, id: string) => ({ id, t: T0 + t * 1000, g });
    await store.keepFinal("s", T0 + 100_000);
    assert.equal((await store.stats("s", [])).closedThrough, undefined);
    await ingestItems(stream, items([at(10, "a", "1"), at(290, "b", "2")]), {
      store,
      nowMs: T0 + 301_000,
    });
    // What the 10 s of lateness called final, kept so before the lateness is raised to 1 h.
    await store.keepFinal("s", T0 + 280_000);
    await store.keepFinal("s", T0 + 120_000);
    assert.equal((await store.stats("s", [])).closedThrough, T0 + 280_000);
    const raised = compileConfig({
      streams: { s: { ...CONFIG.streams.s, time: { field: "t", lateness: "1h" } } },
    }).get("s")!;
    const reply = await ingestItems(
      raised,
      items([at(20, "a", "3"), at(279, "c", "4"), at(281, "d", "5")]),
      { store, nowMs: T0 + 302_000 },
    );
    assert.deepEqual([reply.accepted, reply.late], [3, 2]);
    const count = raised.counters.find((counter) => counter.name === "count")!;
    const rows = await listWindows(raised, count, { store, nowMs: T0 + 302_000 }, {
      limit: 1000,
    });
    assert.deepEqual(rows.map((row) => [row.start, row.group.g, row.value, row.final]), [
      [new Date(T0 + 240_000).toISOString(), "b", 1, false],
      [new Date(T0 + 240_000).toISOString(), "d", 1, false],
      [new Date(T0).toISOString(), "a", 1, true],
    ]);
  },

  async "readWindows() and readSessions() with stats return the stats fields a read judges finality by, as stats() has them, with the values or without any"(
    store,
  ) {
    const finality = async () => {
      const { watermark, closedThrough, definitionVersion } = await store.stats("s", []);
      return { watermark, closedThrough, definitionVersion };
    };
    const count = stream.counterMetas.find((meta) => meta.name === "count")!;
    const session = sessionStream.counterMetas[0];
    const range = { fromMs: T0 - 600_000, toMs: T0 + 600_000 };
    const window = [{ start: T0, panes: [T0] }];
    const reads = async () => {
      const windows = await store.readWindows("s", count, window, { stats: true });
      const paged = await store.readWindows("s", count, window, {
        stats: true,
        page: { limit: 10 },
      });
      const none = await store.readWindows("s", count, [], { stats: true });
      const sessions = await store.readSessions("s", session, { ...range, stats: true });
      const open = await store.readSessions("s", session, { ...range, open: true, stats: true });
      return {
        rows: [windows.length, paged.length, none.length, sessions.length, open.length],
        stats: [windows.stats, paged.stats, none.stats, sessions.stats, open.stats],
      };
    };
    // A stream never written: no watermark.
    assert.deepEqual(await reads(), {
      rows: [0, 0, 0, 0, 0],
      stats: Array(5).fill({ watermark: null }),
    });
    await ingestItems(
      stream,
      items([{ id: "1", t: T0 + 5_000, g: "x" }, { id: "2", t: T0 + 6_000, g: "y" }]),
      {
        store,
        nowMs: T0 + 10_000,
      },
    );
    await store.keepFinal("s", T0 - 60_000);
    const expected = { watermark: T0 + 6_000, closedThrough: T0 - 60_000 };
    assert.deepEqual(await finality(), { ...expected, definitionVersion: undefined });
    assert.deepEqual(await reads(), { rows: [2, 2, 0, 0, 0], stats: Array(5).fill(expected) });
    // Without stats asked, none.
    assert.equal((await store.readWindows("s", count, window)).stats, undefined);
    assert.equal((await store.readSessions("s", session, range)).stats, undefined);
  },

  async "a close by a raised lateness closes what closedThrough keeps final, as reads call it final"(
    store,
  ) {
    const at = (t: number, g: string, id: string) => ({ id, t: T0 + t * 1000, g });
    await ingestItems(
      stream,
      items([at(10, "a", "1"), at(70, "a", "2"), at(130, "c", "3"), at(290, "b", "4")]),
      { store, nowMs: T0 + 301_000 },
    );
    // What a lateness lower than the 1 h raised to called final (a definition write, a batch
    // of an instance on the older definition): final for reads at once.
    await store.keepFinal("s", T0 + 120_000);
    const raised = compileConfig({
      streams: { s: { ...CONFIG.streams.s, time: { field: "t", lateness: "1h" } } },
    }).get("s")!;
    const count = raised.counters.find((counter) => counter.name === "count")!;
    const metas = raised.counterMetas.filter((meta) => meta.name === "count");
    const finalStarts = async () =>
      (await listWindows(raised, count, { store, nowMs: T0 + 302_000 }, { limit: 1000 }))
        .filter((row) => row.final).map((row) => Date.parse(row.start) - T0);
    assert.deepEqual(await finalStarts(), [60_000, 0]);
    // The sweep's close by the raised lateness closes them, and only them (the window ending at
    // closedThrough, not the one after).
    const closed = await store.closeWindows("s", metas, { latenessMs: 3_600_000 });
    assert.deepEqual(closed.map((w) => [w.start - T0, w.groups.map((g) => g.state.count)]), [
      [0, [1]],
      [60_000, [1]],
    ]);
    const closes = (await store.readLog("s", null, 100)).map((entry) => entry.record)
      .flatMap((r) => r.type === "window.closed" ? [[r.start - T0, r.group]] : []);
    assert.deepEqual(closes, [[0, '["a"]'], [60_000, '["a"]']]);
    assert.deepEqual(await store.closeWindows("s", metas, { latenessMs: 3_600_000 }), []);
    assert.deepEqual(await finalStarts(), [60_000, 0]);
    assert.equal((await store.stats("s", [])).closedThrough, T0 + 120_000);
  },

  async "a close with nothing due, then keepFinal() with no batch between: the same close again closes what it keeps final"(
    store,
  ) {
    const at = (t: number, g: string, id: string) => ({ id, t: T0 + t * 1000, g });
    await ingestItems(
      stream,
      items([at(10, "a", "1"), at(70, "a", "2"), at(130, "c", "3"), at(290, "b", "4")]),
      { store, nowMs: T0 + 301_000 },
    );
    const metas = stream.counterMetas.filter((meta) => meta.name === "count");
    // By 1 h of lateness nothing is due (on Redis the close notes that in the stats).
    assert.deepEqual(await store.closeWindows("s", metas, { latenessMs: 3_600_000 }), []);
    // Kept final without a batch (watermark and applied count unchanged): due at once.
    await store.keepFinal("s", T0 + 120_000);
    const closed = await store.closeWindows("s", metas, { latenessMs: 3_600_000 });
    assert.deepEqual(closed.map((w) => w.start - T0), [0, 60_000]);
    assert.deepEqual(await store.closeWindows("s", metas, { latenessMs: 3_600_000 }), []);
    // Raised again: the window it now keeps final closes too.
    await store.keepFinal("s", T0 + 180_000);
    const again = await store.closeWindows("s", metas, { latenessMs: 3_600_000 });
    assert.deepEqual(again.map((w) => w.start - T0), [120_000]);
  },

  async "a counter removed and added back, or added mid-window, holds only what was applied while it was defined"(
    store,
  ) {
    // The store holds what was applied while the counter was defined; that such a window is
    // partial comes from the stream's definition record (tests/config/partial_windows_test.ts).
    const c = { window: { tumbling: "1m" }, aggregate: "count" };
    const version = (counters: Record<string, unknown>) =>
      compileConfig({ streams: { r: { time: { field: "t", lateness: "0s" }, counters } } })
        .get("r")!;
    const both = version({ c, k: c });
    const send = (compiled: CompiledStream, seconds: number[]) =>
      ingestItems(compiled, items(seconds.map((t) => ({ t: T0 + t * 1000 }))), {
        store,
        nowMs: T0 + 200_000,
      });
    await send(both, [1, 2, 3]);
    await send(version({ k: c }), [4, 5]);
    await send(both, [6]);
    await send(version({ k: c, added: c }), [7]);
    await send(version({ k: c, added: c, c }), [120]);
    const closed = await store.closeWindows("r", version({ k: c, added: c, c }).counterMetas, {
      latenessMs: 0,
    });
    assert.deepEqual(
      closed.map((w) => [w.counter, w.start - T0, w.groups[0].state.count]),
      [["k", 0, 7], ["added", 0, 1], ["c", 0, 4]],
    );
  },

  async "the result log holds processed and late events written with the batch"(store) {
    const event = (id: string, t: number) => ({
      id,
      timeMs: t,
      payload: JSON.stringify({ id, nested: { ok: true } }),
    });
    const base = {
      stream: "s",
      nowMs: T0 + 100_000,
      latenessMs: 10_000,
      dedupeTtlMs: 60_000,
      counters: [],
      filtered: 0,
    };
    await store.applyBatch({
      ...base,
      events: [event("a", T0 + 90_000)],
      log: { processed: true },
    });
    await store.applyBatch({
      ...base,
      events: [event("b", T0 + 1_000), event("a", T0 + 90_000), event("c", T0 + 95_000)],
      log: { late: true },
    });
    const log = await store.readLog("s", null, 100);
    assert.deepEqual(log.map((entry) => entry.record), [
      { type: "event.processed", timeMs: T0 + 90_000, event: { id: "a", nested: { ok: true } } },
      { type: "event.late", timeMs: T0 + 1_000, event: { id: "b", nested: { ok: true } } },
    ]);
    assert.deepEqual(await store.readLog("s", log[0].id, 100), log.slice(1));
    assert.deepEqual(await store.readLog("s", log[1].id, 100), []);
    assert.deepEqual(await store.readLog("s", null, 1), log.slice(0, 1));
  },

  async "a batch logged ifWanted writes the types the live demand lists, and no other"(store) {
    const event = (id: string, t: number) => ({
      id,
      timeMs: t,
      payload: JSON.stringify({ id }),
    });
    const batch = (events: ReturnType<typeof event>[]) => ({
      stream: "s",
      nowMs: T0 + 100_000,
      latenessMs: 10_000,
      dedupeTtlMs: 60_000,
      counters: [],
      filtered: 0,
      events,
      log: { processed: true, late: true, ifWanted: true },
    });
    // Nobody asked: nothing is logged.
    await store.applyBatch(batch([event("a", T0 + 90_000), event("x", T0 + 1_000)]));
    assert.deepEqual(await store.readLog("s", null, 100), []);
    await store.signalDemand("s", ["event.late"], 60_000);
    const result = await store.applyBatch(
      batch([event("b", T0 + 91_000), event("y", T0 + 2_000)]),
    );
    assert.deepEqual(result.demand, ["event.late"]);
    assert.deepEqual((await store.readLog("s", null, 100)).map((entry) => entry.record), [
      { type: "event.late", timeMs: T0 + 2_000, event: { id: "y" } },
    ]);
  },

  async "lastLogId() names the newest log entry, so reading after it returns only new ones"(store) {
    assert.equal(await store.lastLogId("s"), null);
    const record = (group: string) => ({
      type: "window.updated" as const,
      counter: "count",
      start: T0,
      end: T0 + 60_000,
      group,
      state: { count: 1, sum: 0, min: null, max: null, distinct: 0, approximate: false },
    });
    await store.appendLog("s", [record('["a"]'), record('["b"]')]);
    const last = await store.lastLogId("s");
    assert.equal(last, (await store.readLog("s", null, 100)).at(-1)!.id);
    assert.deepEqual(await store.readLog("s", last, 100), []);
    await store.appendLog("s", [record('["c"]')]);
    assert.deepEqual((await store.readLog("s", last, 100)).map((entry) => entry.record), [
      record('["c"]'),
    ]);
  },

  async "logPosition() gives the newest id ever logged (0-0 before any), the newest trimmed and the oldest held"(
    store,
  ) {
    assert.deepEqual(await store.logPosition("s"), {
      lastId: "0-0",
      trimmedThrough: "0-0",
      firstId: null,
    });
    const record = (group: string) => ({
      type: "window.updated" as const,
      counter: "count",
      start: T0,
      end: T0 + 60_000,
      group,
      state: { count: 1, sum: 0, min: null, max: null, distinct: 0, approximate: false },
    });
    await store.appendLog("s", [record('["a"]'), record('["b"]')]);
    const ids = (await store.readLog("s", null, 100)).map((entry) => entry.id);
    assert.deepEqual(await store.logPosition("s"), {
      lastId: ids[1],
      trimmedThrough: "0-0",
      firstId: ids[0],
    });
    // Nothing trimmed: resuming after 0-0 (before the first entry) misses nothing.
    assert.deepEqual((await store.readLog("s", "0-0", 100)).map((entry) => entry.id), ids);
  },

  async "closeWindows() with peek reports due windows without claiming or logging them"(store) {
    await ingestItems(
      stream,
      items([
        { id: "1", t: T0 + 1_000, g: "x", v: 4 },
        { id: "2", t: T0 + 90_000, g: "x" },
      ]),
      { store: store, nowMs: T0 + 90_000 },
    );
    const sum = stream.counterMetas.filter((meta) => meta.name === "sum");
    const peeked = await store.closeWindows("s", sum, { latenessMs: 10_000, peek: true });
    assert.deepEqual(peeked.map((window) => [window.start, window.groups[0].state.sum]), [[T0, 4]]);
    assert.deepEqual(await store.readLog("s", null, 100), []);
    // The end through which it found windows due: the watermark less the lateness.
    assert.equal(peeked.cutoff, T0 + 80_000);
    const closed = await store.closeWindows("s", sum, { latenessMs: 10_000 });
    assert.deepEqual([...closed], [...peeked]);
    assert.equal(closed.cutoff, undefined);
    assert.equal((await store.readLog("s", null, 100)).length, 1);
    assert.deepEqual(
      [...await store.closeWindows("s", sum, { latenessMs: 10_000, peek: true })],
      [],
    );
  },

  async "closeWindows() with through closes no window ending after it, and leaves it due"(store) {
    await ingestItems(
      stream,
      items([
        { id: "1", t: T0 + 1_000, g: "x", v: 4 },
        { id: "2", t: T0 + 61_000, g: "x", v: 5 },
        { id: "3", t: T0 + 200_000, g: "x" },
      ]),
      { store: store, nowMs: T0 + 200_000 },
    );
    const sum = stream.counterMetas.filter((meta) => meta.name === "sum");
    const options = { latenessMs: 10_000 };
    const peeked = await store.closeWindows("s", sum, { ...options, peek: true });
    assert.deepEqual(peeked.map((window) => window.start), [T0, T0 + 60_000]);
    assert.equal(peeked.cutoff, T0 + 190_000);
    const first = await store.closeWindows("s", sum, { ...options, through: T0 + 60_000 });
    assert.deepEqual(first.map((window) => window.start), [T0]);
    const rest = await store.closeWindows("s", sum, options);
    assert.deepEqual(rest.map((window) => [window.start, window.groups[0].state.sum]), [[
      T0 + 60_000,
      5,
    ]]);
  },

  async "closeWindows() logs one window.closed record per group"(store) {
    await ingestItems(
      stream,
      items([
        { id: "1", t: T0 + 1_000, g: "x", v: 4 },
        { id: "2", t: T0 + 2_000, g: "y", v: 6 },
        { id: "3", t: T0 + 2_500, g: "y", v: 1.5 },
        { id: "4", t: T0 + 90_000, g: "x" },
      ]),
      { store: store, nowMs: T0 + 90_000 },
    );
    const sum = stream.counterMetas.filter((meta) => meta.name === "sum" || meta.name === "max");
    const closed = await store.closeWindows("s", sum, { latenessMs: 10_000 });
    assert.equal(closed.length, 2);
    const records = (await store.readLog("s", null, 100)).map((entry) => entry.record);
    assert.deepEqual(records, [
      {
        type: "window.closed",
        counter: "sum",
        start: T0,
        end: T0 + 60_000,
        group: '["x"]',
        state: { count: 1, sum: 4, min: null, max: null, distinct: 0, approximate: false },
      },
      {
        type: "window.closed",
        counter: "sum",
        start: T0,
        end: T0 + 60_000,
        group: '["y"]',
        state: { count: 2, sum: 7.5, min: null, max: null, distinct: 0, approximate: false },
      },
      {
        type: "window.closed",
        counter: "max",
        start: T0,
        end: T0 + 60_000,
        group: '["x"]',
        state: { count: 1, sum: 0, min: null, max: 4, distinct: 0, approximate: false },
      },
      {
        type: "window.closed",
        counter: "max",
        start: T0,
        end: T0 + 60_000,
        group: '["y"]',
        state: { count: 2, sum: 0, min: null, max: 6, distinct: 0, approximate: false },
      },
    ]);
  },

  async "fireAlerts() fires each alert once per window and group, and logs it"(store) {
    const firing = {
      alert: "big",
      counter: "sum",
      start: T0,
      end: T0 + 60_000,
      group: '["x"]',
      value: 12.5,
      ttlMs: 3_600_000,
    };
    const other = { ...firing, group: '["y"]', value: null };
    assert.deepEqual(await store.fireAlerts("s", [firing]), [firing]);
    assert.deepEqual(await store.fireAlerts("s", [firing, other]), [other]);
    assert.deepEqual(await store.fireAlerts("s", [firing, other]), []);
    const records = (await store.readLog("s", null, 100)).map((entry) => entry.record);
    const { ttlMs: _, ...logged } = firing;
    const { ttlMs: __, ...loggedOther } = other;
    assert.deepEqual(records, [
      { type: "alert.fired", ...logged },
      { type: "alert.fired", ...loggedOther },
    ]);
  },

  async "fireAlerts() logs a firing's approximate mark, and none for one without"(store) {
    const firing = {
      alert: "many",
      counter: "users",
      start: T0,
      end: T0 + 60_000,
      group: "[]",
      value: 3,
      approximate: true as const,
      ttlMs: 3_600_000,
    };
    const exact = { ...firing, alert: "exact", approximate: undefined };
    delete exact.approximate;
    assert.deepEqual(await store.fireAlerts("s", [firing, exact]), [firing, exact]);
    const records = (await store.readLog("s", null, 100)).map((entry) => entry.record);
    const { ttlMs: _, ...logged } = firing;
    const { ttlMs: __, ...loggedExact } = exact;
    assert.deepEqual(records, [
      { type: "alert.fired", ...logged },
      { type: "alert.fired", ...loggedExact },
    ]);
  },

  async "appendLog() adds records readers see in order"(store) {
    const updated = {
      type: "window.updated" as const,
      counter: "count",
      start: T0,
      end: T0 + 60_000,
      group: '["x"]',
      state: { count: 3, sum: 0, min: null, max: null, distinct: 0, approximate: false },
    };
    await store.appendLog("s", [updated, { ...updated, group: '["y"]' }]);
    await store.appendLog("s", []);
    const log = await store.readLog("s", null, 10);
    assert.deepEqual(log.map((entry) => entry.record), [updated, { ...updated, group: '["y"]' }]);
    assert.ok(log[0].id < log[1].id || log[0].id.length < log[1].id.length);
  },

  async "an idle watermark follows the clock: quiet windows close and old events are late"(store) {
    const base = {
      stream: "s",
      latenessMs: 10_000,
      dedupeTtlMs: 0,
      counters: stream.counterMetas,
      filtered: 0,
    };
    const count = stream.counterMetas.filter((meta) => meta.name === "count");
    const event = (timeMs: number) => ({
      timeMs,
      updates: [{ counter: 0, pane: Math.floor(timeMs / 60_000) * 60_000, group: '["x"]' }],
    });
    const apply = (batch: BatchOfCellUpdates) => store.applyBatch(fromCellUpdates(batch));
    await apply({
      ...base,
      nowMs: T0 + 5_000,
      idleMs: 30_000,
      events: [event(T0 + 5_000)],
    });
    // No newer event: only the clock moves past the window's end + lateness + idle.
    assert.deepEqual(
      await store.closeWindows("s", count, {
        latenessMs: 10_000,
        idleMs: 30_000,
        nowMs: T0 + 99_000,
      }),
      [],
    );
    const closed = await store.closeWindows("s", count, {
      latenessMs: 10_000,
      idleMs: 30_000,
      nowMs: T0 + 100_000,
    });
    assert.deepEqual(closed.map((window) => window.start), [T0]);
    assert.equal((await store.stats("s", [])).watermark, T0 + 70_000);
    const late = await apply({
      ...base,
      nowMs: T0 + 100_000,
      idleMs: 30_000,
      events: [event(T0 + 59_000), event(T0 + 61_000)],
    });
    assert.deepEqual(late.outcomes, ["late", "applied"]);
    const without = await apply({
      ...base,
      nowMs: T0 + 500_000,
      events: [event(T0 + 61_000)],
    });
    assert.deepEqual(
      without.outcomes,
      ["applied"],
      "no idleMs: the watermark moves with events only",
    );
  },

  async "a sweep with idleMs gives a stream it holds nothing of no watermark; its first batch is judged against the clock floor"(
    store,
  ) {
    const count = stream.counterMetas.filter((meta) => meta.name === "count");
    for (const nowMs of [T0 + 100_000, T0 + 200_000]) {
      const options = { latenessMs: 10_000, idleMs: 30_000, nowMs };
      assert.deepEqual(await store.closeWindows("s", count, options), []);
      assert.deepEqual(await store.closeWindows("s", count, { ...options, peek: true }), []);
    }
    assert.equal((await store.stats("s", [])).watermark, null);
    const event = (timeMs: number) => ({
      timeMs,
      updates: [{ counter: 0, pane: Math.floor(timeMs / 60_000) * 60_000, group: '["x"]' }],
    });
    const applied = await store.applyBatch(fromCellUpdates({
      stream: "s",
      nowMs: T0 + 200_000,
      idleMs: 30_000,
      latenessMs: 10_000,
      dedupeTtlMs: 0,
      counters: stream.counterMetas,
      filtered: 0,
      events: [event(T0 + 159_000), event(T0 + 161_000)],
    }));
    assert.deepEqual(applied.outcomes, ["late", "applied"], "before now - idle - lateness: late");
    assert.equal((await store.stats("s", [])).watermark, T0 + 170_000);
  },

  async "signalDemand() is reported back by applyBatch() until its TTL runs out"(store) {
    const batch = (nowMs: number) => ({
      stream: "s",
      nowMs,
      latenessMs: 0,
      dedupeTtlMs: 0,
      counters: [],
      filtered: 0,
      events: [{ timeMs: nowMs }],
    });
    assert.deepEqual((await store.applyBatch(batch(clock()))).demand, []);
    await store.signalDemand("s", ["window.updated", "event.processed"], 60_000);
    await store.signalDemand("other", ["event.late"], 60_000);
    const demand = (await store.applyBatch(batch(clock()))).demand;
    assert.deepEqual([...demand].sort(), ["event.processed", "window.updated"]);
    assert.deepEqual((await store.applyBatch(batch(clock() + 61_000))).demand, []);
  },

  async "a dedupe id lives at least its TTL and a duplicate does not extend it"(store) {
    const ttl = 60_000;
    const batch = (nowMs: number) => ({
      stream: "s",
      nowMs,
      latenessMs: 1e12,
      dedupeTtlMs: ttl,
      counters: [],
      filtered: 0,
      events: [{ id: "x", timeMs: nowMs }],
    });
    const t = Math.floor(clock() / ttl) * ttl + ttl - 1_000; // late in a TTL-wide bucket
    assert.deepEqual((await store.applyBatch(batch(t))).outcomes, ["applied"]);
    assert.deepEqual((await store.applyBatch(batch(t + 30_000))).outcomes, ["duplicate"]);
    assert.deepEqual((await store.applyBatch(batch(t + ttl - 1))).outcomes, ["duplicate"]);
    assert.deepEqual((await store.applyBatch(batch(t + ttl + 2_000))).outcomes, ["applied"]);
  },

  async "a dedupe id stays a duplicate across changes of the TTL, down and up, for the TTL it was sent under"(
    store,
  ) {
    const HOUR = 3_600_000;
    const outcomes = async (nowMs: number, dedupeTtlMs: number, ids: string[]) =>
      (await store.applyBatch({
        stream: "s",
        nowMs,
        latenessMs: 1e12,
        dedupeTtlMs,
        counters: [],
        filtered: 0,
        events: ids.map((id) => ({ id, timeMs: nowMs })),
      })).outcomes;
    // Sent under 24h, in a batch and alone (the script asks one id apart).
    const t = clock();
    assert.deepEqual(await outcomes(t, 24 * HOUR, ["x1", "x2"]), ["applied", "applied"]);
    assert.deepEqual(await outcomes(t, 24 * HOUR, ["y"]), ["applied"]);
    const ttls = [12 * HOUR, HOUR, 300_000, 48 * HOUR, 7 * 24 * HOUR, 24 * HOUR];
    for (const [i, ttl] of ttls.entries()) {
      const now = t + 1_000 * (i + 1);
      assert.deepEqual(await outcomes(now, ttl, ["x1"]), ["duplicate"], `x1 alone, ttl ${ttl}`);
      assert.deepEqual(
        await outcomes(now, ttl, ["x1", "x2", `new${i}`]),
        ["duplicate", "duplicate", "applied"],
        `ttl ${ttl}`,
      );
      assert.deepEqual(await outcomes(now, ttl, ["y"]), ["duplicate"], `y alone, ttl ${ttl}`);
    }
    // Sent under 1h, then the TTL is 1m: held for the hour it was sent under, no longer.
    const base = T0 + 10 * HOUR;
    assert.deepEqual(await outcomes(base + 1_000, HOUR, ["w"]), ["applied"]);
    assert.deepEqual(await outcomes(base + 2_000, 60_000, ["w"]), ["duplicate"]);
    assert.deepEqual(await outcomes(base + 59 * 60_000, 60_000, ["w", "w2"]), [
      "duplicate",
      "applied",
    ]);
    assert.deepEqual(await outcomes(base + 2 * HOUR + 1_000, 60_000, ["w"]), ["applied"]);
    // Sent under 1m, then the TTL is 1h: held for the minute it was sent under, no longer.
    assert.deepEqual(await outcomes(base + 2 * HOUR + 2_000, 60_000, ["v"]), ["applied"]);
    assert.deepEqual(await outcomes(base + 2 * HOUR + 3_000, HOUR, ["v"]), ["duplicate"]);
    assert.deepEqual(await outcomes(base + 2 * HOUR + 50_000, HOUR, ["v", "v2"]), [
      "duplicate",
      "applied",
    ]);
    assert.deepEqual(await outcomes(base + 2 * HOUR + 3 * 60_000, HOUR, ["v"]), ["applied"]);
    // Nothing forgotten before its time.
    assert.equal((await store.stats("s", [])).dedupeForgotten, 0);
  },

  async "panes() lists live panes in a range"(store) {
    await ingestItems(
      stream,
      items([
        { id: "1", t: T0 + 1_000 },
        { id: "2", t: T0 + 61_000 },
        { id: "3", t: T0 + 125_000 },
      ]),
      { store: store, nowMs: T0 + 130_000 },
    );
    const meta = stream.counterMetas[0];
    assert.deepEqual(await store.panes("s", meta, { fromMs: T0, toMs: T0 + 120_000 }), [
      T0,
      T0 + 60_000,
    ]);
    assert.deepEqual(await store.panes("s", meta, { fromMs: T0 + 60_000, toMs: T0 + 1e9 }), [
      T0 + 60_000,
      T0 + 120_000,
    ]);
    assert.deepEqual(await store.panes("other", meta, { fromMs: 0, toMs: 1e15 }), []);
  },
};

/** A stored-batch event of stream `s` at `t` in group `g` with value `v`. */
function batchEvent(id: string, t: number): EventWithCellUpdates {
  return {
    id,
    timeMs: t,
    updates: [{ counter: 0, pane: Math.floor(t / 60_000) * 60_000, group: '["x"]' }],
  };
}

function batchOf(
  events: EventWithCellUpdates[],
  requests: BatchRequest[],
  nowMs = T0 + 70_000,
): StoreBatch {
  return fromCellUpdates({
    stream: "s",
    nowMs,
    latenessMs: stream.latenessMs,
    dedupeTtlMs: 86_400_000,
    counters: stream.counterMetas,
    events,
    requests,
  });
}

function claim(key: string, body: string): IdempotencyClaim {
  return { keyHash: key, bodyHash: body, ttlMs: 60_000, reply: `{"accepted":2,"body":"${body}"}` };
}

const requestScenarios: Record<string, Scenario> = {
  async "a batch of only filtered events keeps the watermark, and a later one raises it to its latest event"(
    store,
  ) {
    const first = await store.applyBatch(
      batchOf([batchEvent("a", T0 + 50_000), batchEvent("b", T0 + 40_000)], [{
        events: 2,
        filtered: 0,
      }]),
    );
    assert.equal(first.watermark, T0 + 50_000);
    const none = await store.applyBatch(batchOf([], [{ events: 0, filtered: 3 }]));
    assert.deepEqual([none.outcomes, none.watermark], [[], T0 + 50_000]);
    const later = await store.applyBatch(
      batchOf([batchEvent("c", T0 + 45_000), batchEvent("d", T0 + 60_000)], [{
        events: 2,
        filtered: 0,
      }]),
    );
    assert.deepEqual([later.outcomes, later.watermark], [["applied", "applied"], T0 + 60_000]);
    const stats = await store.stats("s", stream.counterMetas);
    assert.deepEqual([stats.applied, stats.filtered, stats.watermark], [4, 3, T0 + 60_000]);
  },

  async "dedupe ids of any text are held alike whether every event of a batch has one or not"(
    store,
  ) {
    const odd = ['say "hi"', "back\\slash", "é ✓ 😀", "\u0000nul", "  ", "1e3"];
    const withIds = (ids: (string | undefined)[], t: number) =>
      batchOf(
        ids.map((id, i) => ({ ...batchEvent(id ?? "", t + i), id })),
        [{ events: ids.length, filtered: 0 }],
      );
    // Every event with an id, then the same ids in a batch where one event has none.
    const first = await store.applyBatch(withIds(odd, T0 + 50_000));
    assert.deepEqual(first.outcomes, odd.map(() => "applied"));
    const mixed = await store.applyBatch(withIds([...odd, undefined], T0 + 55_000));
    assert.deepEqual(mixed.outcomes, [...odd.map(() => "duplicate"), "applied"]);
    const again = await store.applyBatch(withIds(["fresh", undefined, odd[2]], T0 + 56_000));
    assert.deepEqual(again.outcomes, ["applied", "applied", "duplicate"]);
    const last = await store.applyBatch(withIds(["fresh"], T0 + 57_000));
    assert.deepEqual(last.outcomes, ["duplicate"]);
  },

  async "applyBatch() applies each request of a batch on its own and reports each"(store) {
    const result = await store.applyBatch(batchOf(
      [batchEvent("a", T0 + 1_000), batchEvent("a", T0 + 2_000), batchEvent("b", T0 + 3_000)],
      [{ events: 1, filtered: 2 }, { events: 2, filtered: 0 }],
    ));
    assert.deepEqual(result.outcomes, ["applied", "duplicate", "applied"]);
    assert.deepEqual(result.requests, [
      { status: "applied", duplicates: 0, late: 0 },
      { status: "applied", duplicates: 1, late: 0 },
    ]);
    const stats = await store.stats("s", stream.counterMetas);
    assert.deepEqual([stats.accepted, stats.applied, stats.duplicates, stats.filtered], [
      5,
      2,
      1,
      2,
    ]);
  },

  async "applyBatch() replays a stored reply for the same key and body, applying nothing"(store) {
    const first = await store.applyBatch(batchOf(
      [batchEvent("a", T0 + 1_000), batchEvent("a", T0 + 1_000)],
      [{ events: 2, filtered: 0, idempotency: claim("k1", "body1") }],
    ));
    assert.deepEqual(first.requests, [{ status: "applied", duplicates: 1, late: 0 }]);
    // The retry has no dedupe ids: only the key keeps it from counting twice.
    const retry = await store.applyBatch(batchOf(
      [{ ...batchEvent("a", T0 + 1_000), id: undefined }],
      [{ events: 1, filtered: 1, idempotency: claim("k1", "body1") }],
    ));
    assert.deepEqual(retry.outcomes, ["skipped"]);
    assert.deepEqual(retry.requests, [{
      status: "replayed",
      reply: '{"accepted":2,"body":"body1"}',
      duplicates: 1,
      late: 0,
    }]);
    const stats = await store.stats("s", stream.counterMetas);
    assert.deepEqual([stats.accepted, stats.applied, stats.filtered], [2, 1, 0]);
    const windows = await allWindows(store, T0 + 70_000);
    assert.equal(windows.count.reduce((sum, row) => sum + Number(row.value ?? 0), 0), 1);
  },

  async "applyBatch() refuses a key reused with another body, and the same key twice in a batch"(
    store,
  ) {
    await store.applyBatch(batchOf(
      [batchEvent("a", T0 + 1_000)],
      [{ events: 1, filtered: 0, idempotency: claim("k1", "body1") }],
    ));
    const result = await store.applyBatch(batchOf(
      [batchEvent("b", T0 + 2_000), batchEvent("c", T0 + 3_000), batchEvent("d", T0 + 4_000)],
      [
        { events: 1, filtered: 0, idempotency: claim("k1", "other body") },
        { events: 1, filtered: 0, idempotency: claim("k2", "body2") },
        { events: 1, filtered: 0, idempotency: claim("k2", "body2") },
      ],
    ));
    assert.deepEqual(result.outcomes, ["skipped", "applied", "skipped"]);
    assert.deepEqual(result.requests.map((r) => r.status), ["conflict", "applied", "in_flight"]);
    assert.equal((await store.stats("s", stream.counterMetas)).applied, 2);
  },

  async "applyBatch() forgets a stored reply after its ttl"(store) {
    await store.applyBatch(batchOf(
      [batchEvent("a", T0 + 1_000)],
      [{ events: 1, filtered: 0, idempotency: { ...claim("k1", "b"), ttlMs: 1_000 } }],
      T0 + 70_000,
    ));
    // Redis expires by its own clock: wait the ttl out for real.
    await new Promise((resolve) => setTimeout(resolve, 1_100));
    const again = await store.applyBatch(batchOf(
      [batchEvent("b", T0 + 2_000)],
      [{ events: 1, filtered: 0, idempotency: { ...claim("k1", "other"), ttlMs: 1_000 } }],
      T0 + 71_200,
    ));
    assert.deepEqual(again.requests, [{ status: "applied", duplicates: 0, late: 0 }]);
  },

  async "applyBatch() refuses a request past its rate limit whole, and refills over the window"(
    store,
  ) {
    const limit = { key: "api-key-1", limit: 3, windowMs: 60_000 };
    const at = (nowMs: number, ids: string[]) =>
      store.applyBatch(batchOf(
        ids.map((id) => batchEvent(id, T0 + 1_000)),
        [{ events: ids.length, filtered: 0, rateLimits: [{ ...limit, cost: ids.length }] }],
        nowMs,
      ));
    assert.equal((await at(T0 + 70_000, ["a", "b"])).requests[0].status, "applied");
    const refused = await at(T0 + 70_000, ["c", "d"]);
    assert.deepEqual(refused.outcomes, ["skipped", "skipped"]);
    // One token left, two needed: one more refills in 20 s.
    assert.deepEqual(refused.requests, [
      { status: "rate_limited", retryAfterMs: 20_000, claim: 0, remaining: 1 },
    ]);
    assert.equal((await at(T0 + 90_000, ["c", "d"])).requests[0].status, "applied");
    const stats = await store.stats("s", stream.counterMetas);
    assert.deepEqual([stats.accepted, stats.applied], [4, 4]);
  },

  async "applyBatch() takes no tokens away for a clock behind a bucket's last update"(store) {
    // Instances' clocks differ, and one steps back (NTP): a bucket written "later" than now is
    // refilled by nothing, not emptied (the memory store took 60 s of tokens away: 429 for 60 s).
    const limit = { key: "api-key-1", limit: 3, windowMs: 3_000 };
    const at = (nowMs: number, ids: string[]) =>
      store.applyBatch(batchOf(
        ids.map((id) => batchEvent(id, T0 + 1_000)),
        [{ events: ids.length, filtered: 0, rateLimits: [{ ...limit, cost: ids.length }] }],
        nowMs,
      ));
    assert.equal((await at(T0 + 70_000, ["a"])).requests[0].status, "applied");
    // 60 s behind: the two tokens left are still there.
    assert.equal((await at(T0 + 10_000, ["b", "c"])).requests[0].status, "applied");
    // An update 60 s ahead is further than the bucket's 3 s refill from empty: a clock gone wrong,
    // so the bucket refills from this clock's time on (kept, it stayed empty 61 s).
    const empty = await at(T0 + 10_000, ["d"]);
    assert.deepEqual(empty.requests, [
      { status: "rate_limited", retryAfterMs: 1_000, claim: 0, remaining: 0 },
    ]);
    assert.equal((await at(T0 + 11_000, ["e"])).requests[0].status, "applied");
  },

  async "applyBatch() gives no tokens for a clock behind a bucket's last update: it keeps that update"(
    store,
  ) {
    // Two instances sharing a bucket, one 2 s behind the other, take turns. The one behind wrote
    // its own "now" as the bucket's update, and the next request of the one ahead refilled the 2 s
    // between the two clocks again: at every turn, whatever the time that passed.
    const limit = { key: "api-key-1", limit: 3, windowMs: 3_000 };
    const at = (nowMs: number, ids: string[]) =>
      store.applyBatch(batchOf(
        ids.map((id) => batchEvent(id, T0 + 1_000)),
        [{ events: ids.length, filtered: 0, rateLimits: [{ ...limit, cost: ids.length }] }],
        nowMs,
      ));
    assert.equal((await at(T0 + 70_000, ["a", "b", "c"])).requests[0].status, "applied");
    // Behind: refused, the bucket empty; told the wait until the bucket, refilling from its update,
    // holds the token, by its own clock.
    assert.deepEqual((await at(T0 + 68_000, ["d"])).requests, [
      { status: "rate_limited", retryAfterMs: 3_000, claim: 0, remaining: 0 },
    ]);
    // Ahead again, no time passed: still empty (it held 2 tokens from nothing).
    assert.deepEqual((await at(T0 + 70_000, ["e", "f"])).requests, [
      { status: "rate_limited", retryAfterMs: 2_000, claim: 0, remaining: 0 },
    ]);
    // A second later by the clock ahead, one token; taken, and the turn again gives none.
    assert.equal((await at(T0 + 71_000, ["h"])).requests[0].status, "applied");
    assert.equal((await at(T0 + 69_000, ["i"])).requests[0].status, "rate_limited");
    assert.deepEqual((await at(T0 + 71_000, ["j"])).requests, [
      { status: "rate_limited", retryAfterMs: 1_000, claim: 0, remaining: 0 },
    ]);
    // The clock behind catches up: the bucket refills from the update it kept.
    assert.equal((await at(T0 + 72_000, ["k"])).requests[0].status, "applied");
    const stats = await store.stats("s", stream.counterMetas);
    assert.deepEqual([stats.accepted, stats.applied], [5, 5]);
  },

  async "applyBatch() applies the other requests of a batch when one is rate limited"(store) {
    const rateLimits = [{ key: "small", limit: 1, windowMs: 60_000, cost: 2 }];
    const result = await store.applyBatch(batchOf(
      [batchEvent("a", T0 + 1_000), batchEvent("b", T0 + 1_000), batchEvent("c", T0 + 1_000)],
      [{ events: 2, filtered: 0, rateLimits }, { events: 1, filtered: 0 }],
    ));
    assert.deepEqual(result.outcomes, ["skipped", "skipped", "applied"]);
    assert.equal(result.requests[0].status, "rate_limited");
    assert.equal(result.requests[1].status, "applied");
  },

  async "applyBatch() admits a request only when every one of its rate limits holds its cost, charging none otherwise"(
    store,
  ) {
    const wide = { key: "stream", limit: 10, windowMs: 10_000 };
    const narrow = { key: "key:k1", limit: 3, windowMs: 3_000 };
    const send = (ids: string[], claims = [wide, narrow]) =>
      store.applyBatch(batchOf(
        ids.map((id) => batchEvent(id, T0 + 1_000)),
        [{
          events: ids.length,
          filtered: 0,
          rateLimits: claims.map((claim) => ({ ...claim, cost: ids.length })),
        }],
        T0 + 70_000,
      ));
    assert.equal((await send(["a", "b"])).requests[0].status, "applied");
    // The stream's bucket holds 8, the key's 1: the key refuses, the stream is not charged.
    const refused = await send(["c", "d"]);
    assert.deepEqual(refused.outcomes, ["skipped", "skipped"]);
    assert.deepEqual(refused.requests, [
      { status: "rate_limited", retryAfterMs: 1_000, claim: 1, remaining: 1 },
    ]);
    // Without the key's bucket, the stream's still holds 8 of 10: nothing was taken.
    assert.equal(
      (await send(["e", "f", "g", "h", "i", "j", "k", "l"], [wide])).requests[0].status,
      "applied",
    );
    const full = await send(["m"], [wide]);
    assert.deepEqual(full.requests, [
      { status: "rate_limited", retryAfterMs: 1_000, claim: 0, remaining: 0 },
    ]);
    const stats = await store.stats("s", stream.counterMetas);
    assert.deepEqual([stats.accepted, stats.applied], [10, 10]);
  },

  async "applyBatch() answers the longest wait of the buckets that refuse, when the request fits in all"(
    store,
  ) {
    const stream = { key: "stream", limit: 40, windowMs: 2_000 };
    const key = { key: "key:k1", limit: 5, windowMs: 5_000 };
    const send = (ids: string[], claims: (typeof stream)[], nowMs: number) =>
      store.applyBatch(batchOf(
        ids.map((id) => batchEvent(id, T0 + 1_000)),
        [{
          events: ids.length,
          filtered: 0,
          rateLimits: claims.map((claim) => ({ ...claim, cost: ids.length })),
        }],
        nowMs,
      ));
    const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${i}`);
    assert.equal(
      (await send(ids("a", 5), [stream, key], T0 + 70_000)).requests[0].status,
      "applied",
    );
    assert.equal((await send(ids("b", 35), [stream], T0 + 70_000)).requests[0].status, "applied");
    // The stream's bucket is empty (refills in 250 ms for 5), the key's too (5 s for 5): the
    // request fits once both hold 5, in 5 s, which is what it is told (the key's bucket).
    const refused = await send(ids("c", 5), [stream, key], T0 + 70_000);
    assert.deepEqual(refused.requests, [
      { status: "rate_limited", retryAfterMs: 5_000, claim: 1, remaining: 0 },
    ]);
    assert.equal(
      (await send(ids("c", 5), [stream, key], T0 + 75_000)).requests[0].status,
      "applied",
    );
  },

  async "applyBatch() counts a request's rejected events in stats only when the request applies"(
    store,
  ) {
    const first = await store.applyBatch(batchOf(
      [batchEvent("a", T0 + 1_000), batchEvent("b", T0 + 1_000)],
      [
        { events: 1, filtered: 0, rejected: 2, idempotency: claim("k1", "body1") },
        {
          events: 1,
          filtered: 0,
          rejected: 4,
          rateLimits: [{ key: "r", limit: 1, windowMs: 60_000, cost: 2 }],
        },
      ],
    ));
    assert.deepEqual(first.requests.map((r) => r.status), ["applied", "rate_limited"]);
    // A replay of the first request applies nothing, so its rejections are not counted again.
    const replay = await store.applyBatch(batchOf(
      [batchEvent("a", T0 + 1_000)],
      [{ events: 1, filtered: 0, rejected: 2, idempotency: claim("k1", "body1") }],
    ));
    assert.equal(replay.requests[0].status, "replayed");
    await store.applyBatch(batchOf([batchEvent("c", T0 + 1_000)], [{ events: 1, filtered: 0 }]));
    const stats = await store.stats("s", stream.counterMetas);
    assert.deepEqual([stats.accepted, stats.applied, stats.rejected], [2, 2, 2]);
  },

  async "ingestItems() counts in stats.rejected the events of a request that accepted none (through RejectedCounts), alone or in a batch with others, and nothing else"(
    store,
  ) {
    const rejecting = [
      { ok: false as const, error: { path: "", message: "bad line" } },
      ...items([
        { id: "x", t: "not a time", g: "a", v: 1 },
      ]),
    ];
    const rejectedCounts = new RejectedCounts(store, { now: clock });
    const reply = await ingestItems(stream, rejecting, { store, nowMs: clock(), rejectedCounts });
    assert.deepEqual([reply.accepted, reply.rejected.length], [0, 2]);
    // Counted off the request's path: by the apply of no event that flush() makes now.
    await rejectedCounts.flush();
    assert.equal(rejectedCounts.applies, 1);
    let stats = await store.stats("s", stream.counterMetas);
    assert.deepEqual(
      [stats.accepted, stats.applied, stats.rejected, stats.watermark],
      [0, 0, 2, null],
    );
    // Grouped (as group commit does) with a request that applies: each counts its own.
    const grouped = await store.applyBatch(batchOf([batchEvent("a", T0 + 1_000)], [
      { events: 0, filtered: 0, rejected: 3 },
      { events: 1, filtered: 0, rejected: 1 },
    ]));
    assert.deepEqual(grouped.requests.map((r) => r.status), ["applied", "applied"]);
    stats = await store.stats("s", stream.counterMetas);
    assert.deepEqual(
      [stats.accepted, stats.applied, stats.rejected, stats.watermark],
      [1, 1, 6, T0 + 1_000],
    );
  },

  async "a sum adds whole and fractional batches in any order"(store) {
    // Whole values, then a fraction, then whole again, in one pane and group; and a group whose
    // batches add whole numbers (1 = 0.5 + 0.5) to a sum holding a fraction.
    const values = [[2, 3], [0.25], [4], [-0.75, 0.5], [1e15], [0.5], [0.5]];
    let n = 0;
    for (const batch of values) {
      await ingestItems(
        stream,
        items(batch.flatMap((v) => {
          n += 1;
          return [{ id: `s${n}`, t: T0 + 5_000, g: "x", v }, {
            id: `h${n}`,
            t: T0 + 5_000,
            g: "y",
            v: 0.5,
          }];
        })),
        { store: store, nowMs: T0 + 6_000 },
      );
    }
    const sums = await listWindows(stream, stream.counters.find((c) => c.name === "sum")!, {
      store,
      nowMs: T0 + 6_000,
    }, { limit: 10 });
    assert.deepEqual(sums.map((row) => [row.group, row.value]), [
      [{ g: "x" }, 1e15 + 10],
      [{ g: "y" }, 4.5],
    ]);
  },

  async "counts and sums of several groups in one pane add up across batches"(store) {
    // Each batch writes three groups into each pane; "z" is new in the second.
    const batches = [
      [["x", 1], ["y", 2], ["x", 3], ["w", 0.5]],
      [["x", 10], ["y", 20.25], ["z", 7], ["w", 0.25]],
    ] as const;
    let n = 0;
    for (const batch of batches) {
      await ingestItems(
        stream,
        items(batch.map(([g, v]) => ({ id: `m${++n}`, t: T0 + 5_000, g, v, u: "p" }))),
        { store: store, nowMs: T0 + 6_000 },
      );
    }
    const read = async (name: string) =>
      (await listWindows(stream, stream.counters.find((c) => c.name === name)!, {
        store,
        nowMs: T0 + 6_000,
      }, { limit: 10 })).map((row) => [row.group, row.value]);
    const byGroup = (rows: unknown[][]) =>
      Object.fromEntries(rows.map(([group, value]) => [(group as { g: string }).g, value]));
    assert.deepEqual(byGroup(await read("count")), { x: 3, y: 2, z: 1, w: 2 });
    assert.deepEqual(byGroup(await read("sum")), { x: 14, y: 22.25, z: 7, w: 0.75 });
  },

  async "applyBatch() refuses requests that do not cover the batch's events"(store) {
    await assert.rejects(
      store.applyBatch(batchOf([batchEvent("a", T0)], [{ events: 2, filtered: 0 }])),
      /Batch requests cover 2 events, but the batch has 1/,
    );
  },
};
Object.assign(scenarios, requestScenarios, sessionScenarios);

for (const [name, scenario] of Object.entries(scenarios)) {
  Deno.test(`MemoryStore: ${name}`, () => scenario(new MemoryStore({ now: clock })));
  redisTest(`RedisStore: ${name}`, (fixture) => scenario(redisStore(fixture)));
}

const eventArbitrary = fc.record({
  id: fc.integer({ min: 0, max: 40 }).map((n) => `id${n}`),
  t: fc.integer({ min: 0, max: 300_000 }).map((n) => T0 + n),
  g: fc.constantFrom("a", "b", "c", "d"),
  v: fc.oneof(
    fc.integer({ min: -1000, max: 1000 }),
    fc.double({ min: -1e6, max: 1e6, noNaN: true }),
  ),
  // Distinct values of every JSON type, some equal as text ("3" and 3 stay apart).
  u: fc.oneof(
    fc.integer({ min: 0, max: 30 }).map((n) => `user${n}`),
    fc.integer({ min: 0, max: 5 }),
    fc.constantFrom("3", true, "\u0000x", "\ud800", { a: 1 }),
  ),
});

redisTest(
  "memory and Redis stores give the same counters for the same random batches",
  async (fixture) => {
    const redis = restClient(fixture);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(eventArbitrary, { minLength: 1, maxLength: 60 }),
        fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 10 }),
        async (events, sizes) => {
          run += 1;
          const now = T0 + 400_000;
          const memory = new MemoryStore({ now: () => now });
          // A fresh prefix per run keeps runs apart without restarting Redis.
          const shared = new RedisStore(redis, { prefix: `run${run}`, now: () => now });
          let offset = 0;
          for (let i = 0; offset < events.length; i++) {
            const batch = events.slice(offset, offset + sizes[i % sizes.length]);
            offset += batch.length;
            const a = await ingestItems(stream, items(batch), { store: memory, nowMs: now });
            const b = await ingestItems(stream, items(batch), { store: shared, nowMs: now });
            assert.deepEqual(b, a);
          }
          assertSameCounters(await allWindows(shared, now), await allWindows(memory, now));
          assert.deepEqual(
            await shared.stats("s", stream.counterMetas),
            await memory.stats("s", stream.counterMetas),
          );
        },
      ),
      { numRuns: 25 },
    );
  },
);

// A single event's cells go to the script in short (`one`: per counter its pane, group and value,
// the count implied): every kind of cell, with and without a value, duplicates, late events and
// groups past maxGroups, one event a call.
redisTest(
  "memory and Redis stores give the same counters for the same random single events",
  async (fixture) => {
    const redis = restClient(fixture);
    let run = 0;
    // Some events without `v` or `u`: cells of a sum, min, max, avg or distinct with no value.
    const event = fc.tuple(eventArbitrary, fc.boolean(), fc.boolean()).map(([e, noV, noU]) => {
      const out: Record<string, unknown> = { ...e };
      if (noV) delete out.v;
      if (noU) delete out.u;
      return out;
    });
    await fc.assert(
      fc.asyncProperty(fc.array(event, { minLength: 1, maxLength: 30 }), async (events) => {
        run += 1;
        const now = T0 + 400_000;
        const memory = new MemoryStore({ now: () => now });
        const { client, headers } = recordingApplies(redis);
        const shared = new RedisStore(client, { prefix: `one${run}`, now: () => now });
        for (const single of events) {
          const a = await ingestItems(stream, items([single]), { store: memory, nowMs: now });
          const b = await ingestItems(stream, items([single]), { store: shared, nowMs: now });
          assert.deepEqual(b, a);
        }
        // Each went in short (no value here is one the short form cannot say), else the counters
        // compared below would be the full form's.
        assert.ok(headers.length > 0);
        for (const header of headers) assert.ok("one" in header && !("cells" in header));
        assertSameCounters(await allWindows(shared, now), await allWindows(memory, now));
        assert.deepEqual(
          await shared.stats("s", stream.counterMetas),
          await memory.stats("s", stream.counterMetas),
        );
      }),
      { numRuns: 20 },
    );
  },
);

/**
 * A close given `nowMs` keeps time by it, not by the store's clock (the sweep gives none; a caller
 * that does, such as a test or a bench, gets the same lives on both stores): a session it closes
 * stays readable ttl from `nowMs`, and an open one near its end is kept alive ttl from `nowMs`.
 * The memory store read its own clock for these: both sessions were gone at N + 1.5 ttl.
 */
async function closeKeepsTimeByNowMs(make: (now: () => number) => Store): Promise<void> {
  const N = T0 + 300_000;
  let clock = N;
  const store = make(() => clock);
  const [meta] = sessionStream.counterMetas.filter((item) => item.name === "sum");
  const counter = sessionStream.counters.find((item) => item.name === "sum")!;
  // The session of a (at T0) is due once the watermark passes T0 + 30 s gap + 2 min lateness;
  // b's (at T0 + 170 s) stays open.
  await ingestItems(
    sessionStream,
    items([{ u: "a", t: T0, v: 1 }, { u: "b", t: T0 + 170_000, v: 2 }]),
    { store, nowMs: N },
  );
  const closeAt = N + Math.floor(meta.ttlMs * 3 / 4);
  const closed = await store.closeWindows("visits", [meta], {
    latenessMs: 120_000,
    nowMs: closeAt,
  });
  assert.deepEqual(closed.map((window) => window.groups[0].group), ['["a"]']);
  // Past both sessions' first life (N + ttl), before what the close gave them (closeAt + ttl).
  clock = N + Math.floor(meta.ttlMs * 3 / 2);
  const read = await store.readSessions("visits", meta, { fromMs: T0, toMs: T0 + 3_600_000 });
  assert.deepEqual(read.map((session) => [session.group, session.closed]), [
    ['["b"]', false],
    ['["a"]', true],
  ]);
  const rows = await listWindows(sessionStream, counter, { store, nowMs: clock }, { limit: 10 });
  assert.deepEqual(rows.map((row) => [row.group.u, row.value]), [["b", 2], ["a", 1]]);
}

Deno.test("MemoryStore: closeWindows() keeps time by its nowMs: what it closes and keeps open lives ttl from it", () =>
  closeKeepsTimeByNowMs((now) => new MemoryStore({ now })));
redisTest(
  "RedisStore: closeWindows() keeps time by its nowMs: what it closes and keeps open lives ttl from it",
  (fixture) => closeKeepsTimeByNowMs((now) => redisStore(fixture, now)),
);
