/**
 * Sums on both stores, by the same random batches: a batch adds to each cell (counter, pane,
 * group) the sum of its applied values, in event order, in doubles, so memory and Redis hold
 * the same double, to the last bit (`Object.is`), through several calls, duplicates, late events
 * and groups past maxGroups. Session sums are the same for one event per call (a batch's events of
 * one group are added as runs on Redis, in time order, one by one in memory).
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { compileConfig, type CompiledStream } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { listWindows } from "../../src/query/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import type { Store } from "../../src/store/types.ts";
import { panesOfWindow } from "../../src/window/mod.ts";
import { type RedisFixture, redisTest, restClient } from "../_redis.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 400_000;

const stream: CompiledStream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "1m" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        sum: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { sum: "v" } },
        avg: { window: { hopping: "3m", every: "1m" }, aggregate: { avg: "v" } },
        capped: {
          window: { tumbling: "1m" },
          groupBy: ["g"],
          aggregate: { sum: "v" },
          maxGroups: 2,
        },
        session: { window: { session: "30s" }, groupBy: ["g"], aggregate: { sum: "v" } },
      },
    },
  },
}).get("s")!;

const windowCounters = stream.counters.filter((counter) => counter.name !== "session");

function items(events: object[]) {
  return events.map((value) => ({ ok: true as const, value }));
}

function redisStore(fixture: RedisFixture, prefix: string): RedisStore {
  const redis = restClient(fixture);
  return new RedisStore(redis, { prefix, now: () => NOW });
}

/** Every window's sum per group, as the store merges it from its panes. */
async function paneSums(store: Store): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const counter of windowCounters) {
    const panes = await store.panes("s", counter.meta, { fromMs: -8.64e15, toMs: 8.64e15 });
    // Each pane alone (the stored sum), then each window (its panes merged).
    const alone = panes.map((start) => ({ start, panes: [start] }));
    const windows = panes.map((start) => ({ start, panes: panesOfWindow(start, counter.window) }));
    for (const [what, reads] of [["pane", alone], ["window", windows]] as const) {
      for (const value of await store.readWindows("s", counter.meta, reads)) {
        out.set(`${what}|${counter.name}|${value.start}|${value.group}`, value.state.sum);
      }
    }
  }
  return out;
}

/** Every session's sum, as listed. */
async function sessionSums(store: Store): Promise<unknown[]> {
  const counter = stream.counters.find((item) => item.name === "session")!;
  const rows = await listWindows(stream, counter, { store, nowMs: NOW }, { limit: 1000 });
  return rows.map((row) => [row.start, row.end, row.group, row.value]);
}

/** Asserts the two maps hold the same keys and, per key, the same double (`Object.is`). */
function assertSameSums(redis: Map<string, number>, memory: Map<string, number>) {
  assert.deepEqual([...redis.keys()].sort(), [...memory.keys()].sort());
  for (const [key, sum] of memory) {
    assert.ok(Object.is(redis.get(key), sum), `${key}: Redis ${redis.get(key)}, memory ${sum}`);
  }
}

const valueArbitrary = fc.oneof(
  fc.constantFrom(0.1, 0.2, 0.3, 0.7, 1e-7, 123.456, -0.1, -2.675, 1e15 + 0.3, 3, 0, -0),
  fc.double({ min: -1e6, max: 1e6, noNaN: true }),
  fc.integer({ min: -1000, max: 1000 }).map((n) => n / 100),
);

const eventArbitrary = fc.record({
  // Some ids twice (duplicates), some events more than the lateness of 1m behind (late).
  id: fc.integer({ min: 0, max: 200 }).map((n) => `id${n}`),
  t: fc.integer({ min: 170_000, max: 300_000 }).map((n) => T0 + n),
  g: fc.constantFrom("a", "b", "c", "d"),
  v: valueArbitrary,
});

redisTest(
  "sums: the same batches give memory and Redis the same sums, bit for bit",
  async (fixture) => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(eventArbitrary, { minLength: 1, maxLength: 60 }),
        fc.array(fc.integer({ min: 1, max: 20 }), { minLength: 1, maxLength: 8 }),
        async (events, sizes) => {
          run += 1;
          const memory = new MemoryStore({ now: () => NOW });
          const redis = redisStore(fixture, `w${run}`);
          let offset = 0;
          for (let i = 0; offset < events.length; i++) {
            const batch = items(events.slice(offset, offset + sizes[i % sizes.length]));
            offset += batch.length;
            const a = await ingestItems(stream, batch, { store: memory, nowMs: NOW });
            const b = await ingestItems(stream, batch, { store: redis, nowMs: NOW });
            assert.deepEqual(b, a);
          }
          assertSameSums(await paneSums(redis), await paneSums(memory));
        },
      ),
      { numRuns: 40 },
    );
  },
);

redisTest(
  "sums: one event per call gives memory and Redis the same session sums, bit for bit",
  async (fixture) => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(eventArbitrary, { minLength: 1, maxLength: 30 }),
        async (events) => {
          run += 1;
          const memory = new MemoryStore({ now: () => NOW });
          const redis = redisStore(fixture, `e${run}`);
          for (const event of events) {
            await ingestItems(stream, items([event]), { store: memory, nowMs: NOW });
            await ingestItems(stream, items([event]), { store: redis, nowMs: NOW });
          }
          const [a, b] = [await sessionSums(memory), await sessionSums(redis)];
          assert.deepEqual(b, a);
          // deepEqual takes -0 for 0: the values again, by Object.is.
          b.forEach((row, i) => {
            const [got, want] = [(row as unknown[])[3], (a[i] as unknown[])[3]];
            assert.ok(Object.is(got, want), `session ${i}: Redis ${got}, memory ${want}`);
          });
          assertSameSums(await paneSums(redis), await paneSums(memory));
        },
      ),
      { numRuns: 30 },
    );
  },
);

redisTest(
  "sums: a pane's __other__ group adds each overflowing group's batch sum in turn, on both stores (README)",
  async (fixture) => {
    const memory = new MemoryStore({ now: () => NOW });
    const redis = redisStore(fixture, "other");
    // `capped` keeps 2 groups a pane: a and b open it, c and d overflow into __other__.
    const first = items([
      { id: "1", t: T0 + 1_000, g: "a", v: 1 },
      { id: "2", t: T0 + 1_000, g: "b", v: 1 },
    ]);
    // In event order the overflowing values give (2^53 − 1 + 0.5) − (2^53 − 1) = 1; per group,
    // c's 0 plus d's 0.5 give 0.5.
    const second = items([
      { id: "3", t: T0 + 2_000, g: "c", v: 9007199254740991 },
      { id: "4", t: T0 + 2_000, g: "d", v: 0.5 },
      { id: "5", t: T0 + 2_000, g: "c", v: -9007199254740991 },
    ]);
    for (const store of [memory, redis]) {
      await ingestItems(stream, first, { store, nowMs: NOW });
      await ingestItems(stream, second, { store, nowMs: NOW });
      const sums = await paneSums(store);
      const other = [...sums].filter(([key]) =>
        key.startsWith("window|capped|") && key.includes("__other__")
      );
      assert.deepEqual(other.map(([, sum]) => sum), [0.5], JSON.stringify([...sums]));
    }
  },
);
