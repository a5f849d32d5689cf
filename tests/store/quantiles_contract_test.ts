/**
 * Quantiles counters on both stores, by the same cases: a pane holds DDSketch
 * bucket counts, so any split of the events into batches, panes and
 * instances gives the same sketch, and memory and Redis answer identically.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { Redis } from "@upstash/redis";
import { compileConfig, type CompiledStream } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { listTopWindows, listWindows, type WindowRow } from "../../src/query/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import { sketchBin, type SketchBins } from "../../src/store/sketch.ts";
import type { Store } from "../../src/store/types.ts";
import { aggregateValue, panesOfWindow } from "../../src/window/mod.ts";
import { type RedisFixture, redisTest, restClient } from "../_redis.ts";
import { commandNames, startUpstashProxy } from "../_upstash_proxy.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 400_000;

const stream: CompiledStream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "1m" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        tumbling: {
          window: { tumbling: "1m" },
          groupBy: ["g"],
          aggregate: { quantiles: "v" },
        },
        hopping: {
          window: { hopping: "3m", every: "1m" },
          aggregate: { quantiles: "v", accuracy: 0.001 },
        },
        sliding: {
          window: { sliding: "2m", precision: "30s" },
          groupBy: ["g"],
          aggregate: { quantiles: "v", accuracy: 0.05 },
          maxGroups: 2,
        },
      },
    },
  },
}).get("s")!;

function items(events: object[]) {
  return events.map((value) => ({ ok: true as const, value }));
}

function redisStore(fixture: RedisFixture, prefix = "es"): RedisStore {
  const redis = restClient(fixture);
  return new RedisStore(redis, { prefix, now: () => NOW });
}

async function allWindows(store: Store): Promise<Record<string, WindowRow[]>> {
  const out: Record<string, WindowRow[]> = {};
  for (const counter of stream.counters) {
    out[counter.name] = await listWindows(stream, counter, { store, nowMs: NOW }, {
      limit: 1000,
      quantiles: [0, 0.25, 0.5, 0.9, 0.99, 1],
    });
  }
  return out;
}

/** Every window's merged bucket counts per group, as the store returns them. */
async function allBins(store: Store): Promise<Record<string, SketchBins>> {
  const out: Record<string, SketchBins> = {};
  for (const counter of stream.counters) {
    const panes = await store.panes("s", counter.meta, { fromMs: -8.64e15, toMs: 8.64e15 });
    const values = await store.readWindows(
      "s",
      counter.meta,
      panes.map((start) => ({ start, panes: panesOfWindow(start, counter.window) })),
    );
    for (const value of values) {
      out[`${counter.name}|${value.start}|${value.group}`] = value.state.bins ?? {};
    }
  }
  return out;
}

const eventArbitrary = fc.record({
  id: fc.integer({ min: 0, max: 40 }).map((n) => `id${n}`),
  t: fc.integer({ min: 0, max: 300_000 }).map((n) => T0 + n),
  g: fc.constantFrom("a", "b", "c"),
  v: fc.oneof(
    fc.constantFrom(0, -0, 1e-12, -3, 42),
    fc.integer({ min: -1000, max: 1000 }),
    fc.double({ min: -1e9, max: 1e9, noNaN: true }),
  ),
});

type Scenario = (store: Store) => Promise<void>;

const scenarios: Record<string, Scenario> = {
  async "a quantiles counter reports count, exact min and max, and p50/p90/p95/p99 as approximate"(
    store,
  ) {
    const values = Array.from({ length: 1000 }, (_, i) => i + 1);
    await ingestItems(stream, items(values.map((v) => ({ t: T0 + 1000, g: "x", v }))), {
      store,
      nowMs: T0 + 2000,
    });
    const [row] = await listWindows(stream, stream.counters[0], { store, nowMs: T0 + 2000 });
    const value = row.value as Record<string, number | boolean>;
    assert.deepEqual(Object.keys(value), [
      "count",
      "min",
      "max",
      "approximate",
      "p50",
      "p90",
      "p95",
      "p99",
    ]);
    assert.deepEqual([value.count, value.min, value.max, value.approximate], [1000, 1, 1000, true]);
    assert.equal(row.approximate, true);
    // DDSketch's rank floor(q × 999): the 500th, 900th, 950th and 990th values.
    for (const [name, exact] of [["p50", 500], ["p90", 900], ["p95", 950], ["p99", 990]] as const) {
      assert.ok(
        Math.abs((value[name] as number) - exact) <= 0.01 * exact,
        `${name}: ${value[name]}`,
      );
    }
  },

  async "a quantiles counter refuses a value that is not a number, as other numeric aggregates do"(
    store,
  ) {
    const reply = await ingestItems(stream, items([{ t: T0 + 1000, g: "x", v: "12ms" }]), {
      store,
      nowMs: T0 + 2000,
    });
    assert.equal(reply.accepted, 0);
    assert.match(JSON.stringify(reply), /Counter 'tumbling' \(quantiles\) needs a number, got/);
    const huge = await ingestItems(stream, items([{ t: T0 + 1000, g: "x", v: 2 ** 54 }]), {
      store,
      nowMs: T0 + 2000,
    });
    assert.match(JSON.stringify(huge), /\(quantiles\) accepts values up to ±9007199254740991/);
    assert.deepEqual(
      await listWindows(stream, stream.counters[0], { store, nowMs: T0 + 2000 }),
      [],
    );
  },

  async "hopping and sliding windows merge their panes' sketches into the sketch of all their values"(
    store,
  ) {
    // One value per minute: 1, 10, 100, 1000, 10000.
    const events = [1, 10, 100, 1000, 10000].map((v, i) => ({
      t: T0 + i * 60_000 + 5_000,
      g: "x",
      v,
    }));
    await ingestItems(stream, items(events), { store, nowMs: T0 + 300_000 });
    const windows = await allWindows(store);
    const hopping = Object.fromEntries(
      windows.hopping.map((row) => [row.start, row.value as Record<string, number>]),
    );
    // The 3-minute window from T0 + 1m holds 10, 100, 1000.
    const middle = hopping[new Date(T0 + 60_000).toISOString()];
    assert.deepEqual([middle.count, middle.min, middle.max], [3, 10, 1000]);
    assert.ok(Math.abs(middle.p50 - 100) <= 0.1, `p50 ${middle.p50}`);
    // Bucket counts of a window are those of its values, whatever the panes.
    const bins = await allBins(store);
    const expected: SketchBins = {};
    for (const v of [10, 100, 1000]) expected[sketchBin(v, 0.001)] = 1;
    assert.deepEqual(bins[`hopping|${T0 + 60_000}|[]`], expected);
    const sliding = windows.sliding.find((row) =>
      row.start === new Date(T0 + 90_000).toISOString()
    );
    assert.deepEqual(
      [
        (sliding!.value as Record<string, number>).min,
        (sliding!.value as Record<string, number>).max,
      ],
      [100, 1000],
    );
  },

  async "duplicates and late events are left out of a quantiles counter's sketch"(store) {
    await ingestItems(
      stream,
      items([
        { id: "a", t: T0 + 200_000, g: "x", v: 5 },
        { id: "a", t: T0 + 200_000, g: "x", v: 5000 },
        { id: "b", t: T0 + 10_000, g: "x", v: 7 },
      ]),
      { store, nowMs: T0 + 200_000 },
    );
    const bins = await allBins(store);
    assert.deepEqual(bins[`tumbling|${T0 + 180_000}|["x"]`], { [sketchBin(5, 0.01)]: 1 });
    assert.equal(bins[`tumbling|${T0}|["x"]`], undefined);
  },

  async "a closed quantiles window logs its buckets, and the log's value is the read value"(store) {
    await ingestItems(
      stream,
      items([{ t: T0 + 1000, g: "x", v: 3 }, { t: T0 + 2000, g: "x", v: -8 }]),
      {
        store,
        nowMs: T0 + 2000,
      },
    );
    const before = await listWindows(stream, stream.counters[0], { store, nowMs: T0 + 2000 });
    await ingestItems(stream, items([{ t: T0 + 300_000, g: "y", v: 1 }]), { store, nowMs: NOW });
    const closed = await store.closeWindows("s", [stream.counters[0].meta], { latenessMs: 60_000 });
    const first = closed.find((window) => window.start === T0)!;
    assert.deepEqual(first.groups[0].state.bins, {
      [sketchBin(3, 0.01)]: 1,
      [sketchBin(-8, 0.01)]: 1,
    });
    const log = await store.readLog("s", null, 100);
    const record = log.map((entry) => entry.record).find((r) => r.type === "window.closed")!;
    assert.ok(record.type === "window.closed");
    assert.deepEqual(
      aggregateValue(stream.counters[0].aggregate, record.state),
      before[0].value,
    );
  },

  async "an alert on a quantiles counter is logged with its value object"(store) {
    const value = { count: 2, min: 1, max: 9, p50: 1, p99: 9.03, approximate: true };
    const firing = { alert: "slow", counter: "tumbling", start: T0, end: T0 + 60_000 };
    await store.fireAlerts("s", [{ ...firing, group: '["x"]', value, ttlMs: 60_000 }]);
    const [entry] = await store.readLog("s", null, 10);
    assert.deepEqual(entry.record, { type: "alert.fired", ...firing, group: '["x"]', value });
  },
};

for (const [name, scenario] of Object.entries(scenarios)) {
  Deno.test(`MemoryStore: ${name}`, () => scenario(new MemoryStore({ now: () => NOW })));
  redisTest(`RedisStore: ${name}`, (fixture) => scenario(redisStore(fixture)));
}

redisTest(
  "quantiles: any split into batches and instances gives memory and Redis the same sketches and values",
  async (fixture) => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(eventArbitrary, { minLength: 1, maxLength: 80 }),
        fc.array(fc.integer({ min: 1, max: 25 }), { minLength: 1, maxLength: 8 }),
        async (events, sizes) => {
          run += 1;
          // Memory takes everything in one batch; Redis, split, through two instances.
          const memory = new MemoryStore({ now: () => NOW });
          const instances = [redisStore(fixture, `q${run}`), redisStore(fixture, `q${run}`)];
          await ingestItems(stream, items(events), { store: memory, nowMs: NOW });
          let offset = 0;
          for (let i = 0; offset < events.length; i++) {
            const batch = events.slice(offset, offset + sizes[i % sizes.length]);
            offset += batch.length;
            await ingestItems(stream, items(batch), { store: instances[i % 2], nowMs: NOW });
          }
          // Dedupe keeps the first of an id, lateness depends on order: compare
          // with memory fed the same batches too.
          const split = new MemoryStore({ now: () => NOW });
          offset = 0;
          for (let i = 0; offset < events.length; i++) {
            const batch = events.slice(offset, offset + sizes[i % sizes.length]);
            offset += batch.length;
            await ingestItems(stream, items(batch), { store: split, nowMs: NOW });
          }
          assert.deepEqual(await allBins(instances[0]), await allBins(split));
          assert.deepEqual(await allWindows(instances[1]), await allWindows(split));
        },
      ),
      { numRuns: 30 },
    );
  },
);

Deno.test("quantiles: the sketch of a window does not depend on the order or batches of its events", async () => {
  await fc.assert(
    fc.asyncProperty(
      // Unique ids, all within lateness: only the split and order vary.
      fc.array(
        eventArbitrary.map((event) => ({ ...event, t: T0 + 300_000 - (event.t - T0) % 50_000 })),
        {
          minLength: 1,
          maxLength: 80,
        },
      ).map((events) => events.map((event, i) => ({ ...event, id: `e${i}` }))),
      fc.array(fc.integer({ min: 1, max: 25 }), { minLength: 1, maxLength: 8 }),
      async (events, sizes) => {
        const whole = new MemoryStore({ now: () => NOW });
        await ingestItems(stream, items(events), { store: whole, nowMs: NOW });
        const split = new MemoryStore({ now: () => NOW });
        const shuffled = events.toReversed();
        let offset = 0;
        for (let i = 0; offset < shuffled.length; i++) {
          const batch = shuffled.slice(offset, offset + sizes[i % sizes.length]);
          offset += batch.length;
          await ingestItems(stream, items(batch), { store: split, nowMs: NOW });
        }
        // Which groups overflow maxGroups depends on arrival order: leave out the capped counter.
        const uncapped = <T>(all: Record<string, T>) =>
          Object.entries(all).filter(([key]) => !key.startsWith("sliding")).sort();
        assert.deepEqual(uncapped(await allBins(split)), uncapped(await allBins(whole)));
        assert.deepEqual(uncapped(await allWindows(split)), uncapped(await allWindows(whole)));
      },
    ),
  );
});

redisTest(
  "quantiles on Redis: an ingest is one EVALSHA, and a read with top costs what a plain read does",
  async (fixture) => {
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    try {
      const redis = new Redis({
        url: proxy.url,
        token: fixture.restToken,
        enableTelemetry: false,
        enableAutoPipelining: false,
      });
      const store = new RedisStore(redis, { now: () => NOW });
      const batch = (n: number) =>
        items(Array.from({ length: n }, (_, i) => ({ t: NOW - i, g: `g${i % 7}`, v: i * 1.5 })));
      await ingestItems(stream, batch(10), { store, nowMs: NOW }); // loads the script
      proxy.take();
      await ingestItems(stream, batch(1000), { store, nowMs: NOW });
      assert.deepEqual(proxy.take().map(commandNames), [["evalsha"]]);
      const counter = stream.counters[0];
      // Warm the read script, then count.
      await listTopWindows(stream, counter, { store, nowMs: NOW }, { top: 2 });
      proxy.take();
      // The calls as a set: each read sends two of them at once (the stats beside the panes or
      // the windows), so the order the proxy sees them in is theirs to race.
      const calls = () => proxy.take().map((request) => commandNames(request).join(" ")).sort();
      await listWindows(stream, counter, { store, nowMs: NOW });
      const plain = calls();
      await listTopWindows(stream, counter, { store, nowMs: NOW }, { top: 2, by: 0.99 });
      assert.deepEqual(calls(), plain);
    } finally {
      await proxy.close();
    }
  },
);
