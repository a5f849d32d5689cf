/**
 * Top groups against a naive model on both stores: per window the `top`
 * groups with the highest value (ties by group key), `others` merged from the
 * rest's raw values, and the group count, for every aggregate with an order.
 */
import assert from "node:assert/strict";
import { compileConfig } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { currentWindow, listTopWindows } from "../../src/query/mod.ts";
import {
  MemoryStore,
  RedisStore,
  sketchBin,
  type SketchBins,
  sketchQuantiles,
  type Store,
} from "../../src/store/mod.ts";
import { redisTest, restClient } from "../_redis.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 30_000;

const stream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "1m" },
      counters: {
        count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
        sum: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { sum: "v" } },
        min: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { min: "v" } },
        max: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { max: "v" } },
        avg: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { avg: "v" } },
        distinct: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { distinct: "u" } },
        quantiles: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { quantiles: "v" } },
      },
    },
  },
}).get("s")!;

/** Six groups of different sizes and spreads; "e" and "f" tie on count. */
function events() {
  const out: Array<{ t: number; g: string; v: number; u: string }> = [];
  const sizes: Record<string, number> = { a: 40, b: 7, c: 25, d: 3, e: 10, f: 10 };
  for (const [g, size] of Object.entries(sizes)) {
    for (let i = 0; i < size; i++) {
      const v = (g.charCodeAt(0) - 96) * 10 + ((i * 37) % 23) - 5;
      out.push({ t: T0 + 1000 + i, g, v, u: `${g}${i % (size > 9 ? 9 : size)}` });
    }
  }
  return out;
}

function model(name: string, values: Array<{ v: number; u: string }>): number {
  const numbers = values.map((item) => item.v);
  switch (name) {
    case "count":
      return values.length;
    case "sum":
      return numbers.reduce((a, b) => a + b, 0);
    case "min":
      return Math.min(...numbers);
    case "max":
      return Math.max(...numbers);
    case "avg":
      return numbers.reduce((a, b) => a + b, 0) / numbers.length;
    case "distinct":
      return new Set(values.map((item) => item.u)).size;
    default: {
      const bins: SketchBins = {};
      for (const v of numbers) bins[sketchBin(v, 0.01)] = (bins[sketchBin(v, 0.01)] ?? 0) + 1;
      return sketchQuantiles(bins, 0.01, [0.99], {
        min: Math.min(...numbers),
        max: Math.max(...numbers),
      })[0]!;
    }
  }
}

async function checkTop(store: Store) {
  const all = events();
  await ingestItems(stream, all.map((value) => ({ ok: true as const, value })), {
    store,
    nowMs: NOW,
  });
  const byGroup = Map.groupBy(all, (event) => event.g);
  for (const counter of stream.counters) {
    const ranked = [...byGroup].map(([g, values]) => ({ g, rank: model(counter.name, values) }))
      .sort((a, b) => b.rank - a.rank || (a.g < b.g ? -1 : 1));
    const top = ranked.slice(0, 2).map((item) => item.g);
    const rest = ranked.slice(2).flatMap((item) => byGroup.get(item.g)!);
    const result = await listTopWindows(stream, counter, { store, nowMs: NOW }, {
      top: 2,
      by: 0.99,
    });
    assert.deepEqual(result.windows.map((row) => row.group.g), top, counter.name);
    assert.equal(result.others.length, 1);
    const others = result.others[0];
    assert.equal(others.groups, 6, counter.name);
    const expected = model(counter.name, rest);
    if (counter.name === "quantiles") {
      const value = others.value as Record<string, number>;
      assert.equal(value.count, rest.length);
      assert.equal(value.min, Math.min(...rest.map((item) => item.v)));
      assert.equal(value.p99, expected);
      assert.equal(others.approximate, true);
    } else if (counter.name === "distinct") {
      // The union: groups share no values here, so it is the sum of theirs.
      assert.ok(Math.abs((others.value as number) - expected) <= 1, `${others.value} ${expected}`);
    } else {
      assert.ok(
        Math.abs((others.value as number) - expected) <= 1e-9 * Math.abs(expected),
        `${counter.name}: ${others.value} vs ${expected}`,
      );
    }
    const current = await currentWindow(stream, counter, { store, nowMs: NOW }, {
      top: 2,
      by: 0.99,
    });
    assert.deepEqual(current.rows.map((row) => row.group.g), top, counter.name);
    assert.deepEqual(current.others, others);
  }
}

async function checkDistinctUnion(store: Store) {
  // Overlapping groups: the union counts a shared value once, unlike a sum.
  const shared = [];
  for (let i = 0; i < 30; i++) shared.push({ t: T0 + i, g: "big", v: 1, u: `x${i}` });
  for (const g of ["p", "q", "r"]) {
    for (let i = 0; i < 5; i++) shared.push({ t: T0 + i, g, v: 1, u: `y${i}` });
  }
  await ingestItems(stream, shared.map((value) => ({ ok: true as const, value })), {
    store,
    nowMs: NOW,
  });
  const distinct = stream.counters.find((counter) => counter.name === "distinct")!;
  const result = await listTopWindows(stream, distinct, { store, nowMs: NOW }, { top: 1 });
  assert.deepEqual(result.windows.map((row) => [row.group.g, row.value]), [["big", 30]]);
  assert.deepEqual([result.others[0].groups, result.others[0].value], [4, 5]);
}

function redisStore(fixture: { restUrl: string; restToken: string }) {
  return new RedisStore(
    restClient(fixture),
    { now: () => NOW },
  );
}

Deno.test("MemoryStore: top groups and others match the naive model for every aggregate", () =>
  checkTop(new MemoryStore({ now: () => NOW })));
redisTest(
  "RedisStore: top groups and others match the naive model for every aggregate",
  (fixture) => checkTop(redisStore(fixture)),
);
Deno.test("MemoryStore: others of a distinct counter is the union of the rest's values", () =>
  checkDistinctUnion(new MemoryStore({ now: () => NOW })));
redisTest(
  "RedisStore: others of a distinct counter is the union of the rest's values",
  (fixture) => checkDistinctUnion(redisStore(fixture)),
);

Deno.test("a window with no more groups than top has others null and its group count", async () => {
  const store = new MemoryStore({ now: () => NOW });
  await ingestItems(stream, [{ ok: true as const, value: { t: T0, g: "a", v: 1, u: "x" } }], {
    store,
    nowMs: NOW,
  });
  const result = await listTopWindows(stream, stream.counters[0], { store, nowMs: NOW }, {
    top: 3,
  });
  assert.deepEqual(result.others.map((row) => [row.groups, row.value]), [[1, null]]);
});

Deno.test("top groups' others of a window its counter missed events of carry partial, as its rows do; other windows' carry none", async () => {
  const store = new MemoryStore({ now: () => T0 + 600_000 });
  const events = [];
  for (const minute of [0, 1, 2]) {
    for (const g of ["a", "b", "c"]) events.push({ t: T0 + minute * 60_000 + 1_000, g, v: 1 });
  }
  await ingestItems(stream, events.map((value) => ({ ok: true as const, value })), {
    store,
    nowMs: T0 + 600_000,
  });
  const base = stream.counters.find((counter) => counter.name === "count")!;
  // Added once the watermark was past the second minute's start.
  const counter = { ...base, partialBefore: T0 + 60_000 + 1 };
  const added = { ...stream, counters: [counter] };
  const read = await listTopWindows(added, counter, { store, nowMs: T0 + 600_000 }, { top: 1 });
  assert.deepEqual(read.others.map((row) => [row.start, row.groups, row.partial]), [
    [new Date(T0 + 120_000).toISOString(), 3, undefined],
    [new Date(T0 + 60_000).toISOString(), 3, true],
    [new Date(T0).toISOString(), 3, true],
  ]);
  assert.deepEqual(read.windows.map((row) => row.partial), [undefined, true, true]);
});

const sliding = compileConfig({
  streams: {
    l: {
      time: { field: "t", lateness: "1h" },
      counters: {
        n: { window: { sliding: "2h", precision: "1m" }, groupBy: ["g"], aggregate: "count" },
      },
    },
  },
}).get("l")!;

/**
 * Top groups read windows as a page does, each store read taking windows until they cover 4,096
 * panes (at least one window): 35 windows of 120 panes (4,200) a read, not all 100 in one.
 */
async function checkTopPanesARead(store: Store) {
  const nowMs = T0 + 240 * 60_000;
  const events = Array.from({ length: 240 }, (_, i) => ({ t: T0 + i * 60_000, g: `g${i % 3}` }));
  await ingestItems(sliding, events.map((value) => ({ ok: true as const, value })), {
    store,
    nowMs,
  });
  const panes: number[] = [];
  const counted = new Proxy(store, {
    get(target, property) {
      if (property === "readWindows") {
        return (...args: Parameters<Store["readWindows"]>) => {
          panes.push(args[2].reduce((n, read) => n + read.panes.length, 0));
          return target.readWindows(...args);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const counter = sliding.counters[0];
  const batched = await listTopWindows(sliding, counter, { store: counted, nowMs }, {
    top: 1,
    limit: 100,
  });
  assert.deepEqual(panes, [35 * 120, 35 * 120, 30 * 120]);
  // The same answer as reading window by window.
  assert.equal(batched.others.length, 100);
  for (const [i, others] of batched.others.entries()) {
    const start = Date.parse(others.start);
    const one = await listTopWindows(sliding, counter, { store, nowMs }, {
      top: 1,
      fromMs: start,
      toMs: start + 1,
    });
    assert.deepEqual(one.others, [others], others.start);
    assert.deepEqual(one.windows, [batched.windows[i]], others.start);
  }
}

Deno.test("MemoryStore: top groups read windows until they cover 4,096 panes a store read", () =>
  checkTopPanesARead(new MemoryStore({ now: () => T0 + 240 * 60_000 })));
redisTest(
  "RedisStore: top groups read windows until they cover 4,096 panes a store read",
  (fixture) =>
    checkTopPanesARead(
      new RedisStore(
        restClient(fixture),
        { now: () => T0 + 240 * 60_000 },
      ),
    ),
);
