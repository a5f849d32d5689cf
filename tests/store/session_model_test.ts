/**
 * Session windows against a naive model: random out-of-order events (some
 * within lateness, some beyond it), split into batches any way, applied to
 * the memory store, to Redis, and to two Redis clients at once. The sessions
 * the stores keep, and the ones they close, must be exactly the model's
 * sessions of the applied events, each closed once.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import { Redis } from "@upstash/redis";
import { compileConfig } from "../../src/config/mod.ts";
import { listWindows } from "../../src/query/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import {
  type ClosedWindow,
  type EventWithCellUpdates,
  fromCellUpdates,
  type Store,
  type StoreBatch,
} from "../../src/store/types.ts";
import { counterCell } from "../../src/window/mod.ts";
import { type RedisFixture, redisTest, restClient } from "../_redis.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const GAP = 10_000;
const LATENESS = 20_000;

const stream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "20s" },
      counters: {
        count: { window: { session: "10s" }, groupBy: ["u"], aggregate: "count" },
        sum: { window: { session: "10s" }, groupBy: ["u"], aggregate: { sum: "v" } },
        min: { window: { session: "10s" }, groupBy: ["u"], aggregate: { min: "v" } },
        max: { window: { session: "10s" }, groupBy: ["u"], aggregate: { max: "v" } },
        distinct: { window: { session: "10s" }, groupBy: ["u"], aggregate: { distinct: "p" } },
      },
    },
  },
}).get("s")!;

interface ModelEvent {
  u: string;
  t: number;
  v: number;
  p: string;
}

/** `[group, start, end, count, sum, min, max, distinct]` of one session. */
type SessionTuple = [string, number, number, number, number, number, number, number];

/** The naive model: per group, sort the times and cut wherever the next is a gap or more away. */
function modelSessions(events: readonly ModelEvent[]): SessionTuple[] {
  const byGroup = new Map<string, ModelEvent[]>();
  for (const event of events) byGroup.set(event.u, [...(byGroup.get(event.u) ?? []), event]);
  const out: SessionTuple[] = [];
  for (const [u, list] of byGroup) {
    list.sort((a, b) => a.t - b.t);
    let run: ModelEvent[] = [];
    const flush = () => {
      if (run.length === 0) return;
      const values = run.map((event) => event.v);
      out.push([
        JSON.stringify([u]),
        run[0].t,
        run.at(-1)!.t,
        run.length,
        values.reduce((a, b) => a + b, 0),
        Math.min(...values),
        Math.max(...values),
        new Set(run.map((event) => event.p)).size,
      ]);
    };
    for (const event of list) {
      if (run.length > 0 && event.t - run.at(-1)!.t >= GAP) {
        flush();
        run = [];
      }
      run.push(event);
    }
    flush();
  }
  return out.sort(compareTuples);
}

function compareTuples(a: SessionTuple, b: SessionTuple): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[1] - b[1];
}

/** The store batch of some events, built as the ingest pipeline builds it. */
function batchOf(events: readonly ModelEvent[], nowMs: number): StoreBatch {
  const batchEvents: EventWithCellUpdates[] = events.map((event) => ({
    timeMs: event.t,
    updates: stream.counters.map((counter) => {
      const update = counterCell(counter, event as never, event.t);
      if (update === null || "message" in update) throw new Error("Unexpected update failure");
      return update;
    }),
  }));
  return fromCellUpdates({
    stream: "s",
    nowMs,
    latenessMs: LATENESS,
    idleMs: null,
    dedupeTtlMs: 0,
    counters: stream.counterMetas,
    events: batchEvents,
  });
}

/** Closed windows of all counters as session tuples, one counter's values per field. */
function closedTuples(closed: readonly ClosedWindow[]): SessionTuple[] {
  const byKey = new Map<string, SessionTuple>();
  for (const window of closed) {
    assert.equal(window.groups.length, 1);
    const { group, state } = window.groups[0];
    const key = `${group}|${window.start}`;
    let tuple = byKey.get(key);
    if (!tuple) {
      tuple = [group, window.start, window.end, 0, 0, 0, 0, 0];
      byKey.set(key, tuple);
    }
    assert.equal(tuple[2], window.end, `${key}: end`);
    if (window.counter === "count") tuple[3] += state.count;
    if (window.counter === "sum") tuple[4] += state.sum;
    if (window.counter === "min") tuple[5] += state.min!;
    if (window.counter === "max") tuple[6] += state.max!;
    if (window.counter === "distinct") tuple[7] += state.distinct;
  }
  return [...byKey.values()].sort(compareTuples);
}

/** The sessions a store lists (open and closed), as tuples. */
async function listedTuples(store: Store): Promise<SessionTuple[]> {
  const byKey = new Map<string, SessionTuple>();
  for (const counter of stream.counters) {
    const rows = await listWindows(stream, counter, { store, nowMs: T0 }, { limit: 1000 });
    for (const row of rows) {
      const group = JSON.stringify([row.group.u]);
      const start = Date.parse(row.start);
      const key = `${group}|${start}`;
      let tuple = byKey.get(key);
      if (!tuple) {
        tuple = [group, start, Date.parse(row.end), 0, 0, 0, 0, 0];
        byKey.set(key, tuple);
      }
      const index = ["", "", "", "count", "sum", "min", "max", "distinct"].indexOf(counter.name);
      tuple[index] = row.value as number;
    }
  }
  return [...byKey.values()].sort(compareTuples);
}

/** Events in roughly increasing time, some arriving up to 40 s late (beyond the 20 s lateness). */
const eventsArbitrary = fc.array(
  fc.record({
    u: fc.constantFrom("a", "b", "c"),
    step: fc.constantFrom(0, 500, 1_000, 3_000, 9_999, 10_000, 15_000),
    back: fc.oneof(
      { weight: 2, arbitrary: fc.constant(0) },
      { weight: 3, arbitrary: fc.integer({ min: 0, max: 20 }).map((n) => n * 1_000) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 40_000 }) },
    ),
    v: fc.integer({ min: -100, max: 100 }),
    p: fc.constantFrom("x", "y", "z", "w"),
  }),
  { minLength: 1, maxLength: 80 },
).map((drafts) => {
  let clock = T0;
  return drafts.map(({ u, step, back, v, p }) => {
    clock += step;
    return { u, t: clock - back, v, p };
  });
});

const sizesArbitrary = fc.array(fc.integer({ min: 1, max: 15 }), { minLength: 1, maxLength: 8 });

/** Splits events into batches of the given sizes, cycling through them. */
function split<T>(events: readonly T[], sizes: readonly number[]): T[][] {
  const batches: T[][] = [];
  for (let offset = 0, i = 0; offset < events.length; i++) {
    batches.push(events.slice(offset, offset + sizes[i % sizes.length]));
    offset += sizes[i % sizes.length];
  }
  return batches;
}

/** Closes everything that is due, from each store in turn, until nothing is left. */
async function closeAll(stores: readonly Store[]): Promise<ClosedWindow[]> {
  const closed: ClosedWindow[] = [];
  for (let more = true, calls = 0; more; calls++) {
    // Each session closes once: far fewer rounds than this unless one comes back.
    assert.ok(calls < 500, "closing never ends: sessions are closed again");
    const rounds = await Promise.all(
      stores.map((store) =>
        store.closeWindows("s", stream.counterMetas, { latenessMs: LATENESS, limit: 7 })
      ),
    );
    more = rounds.some((round) => round.length > 0);
    for (const round of rounds) closed.push(...round);
  }
  return closed;
}

/**
 * Applies the batches (spread over the stores, concurrently when there are
 * several), closing what is due after each round; then raises the watermark
 * far and closes the rest. Checks the model against what was applied.
 */
async function runAndCheck(
  stores: readonly Store[],
  events: readonly ModelEvent[],
  sizes: readonly number[],
): Promise<void> {
  const nowMs = T0 + 10_000_000;
  const applied: ModelEvent[] = [];
  const closed: ClosedWindow[] = [];
  const batches = split(events, sizes);
  for (let i = 0; i < batches.length; i += stores.length) {
    const round = batches.slice(i, i + stores.length);
    const results = await Promise.all(
      round.map((batch, j) => stores[j].applyBatch(batchOf(batch, nowMs))),
    );
    results.forEach((result, j) => {
      result.outcomes.forEach((outcome, k) => {
        if (outcome === "applied") applied.push(round[j][k]);
        else assert.equal(outcome, "late");
      });
    });
    closed.push(...await closeAll(stores));
  }
  if (stores.length === 1) {
    // One store applies in order: an event is late exactly when it is behind the watermark.
    let watermark = -Infinity;
    const expected = events.filter((event) => {
      if (event.t < watermark - LATENESS) return false;
      watermark = Math.max(watermark, event.t);
      return true;
    });
    assert.deepEqual(applied, expected);
  }
  const model = modelSessions(applied);
  // Open and closed sessions alike, before the end.
  assert.deepEqual(await listedTuples(stores[0]), model);
  const last = Math.max(...events.map((event) => event.t));
  const end = { u: "~end", t: last + GAP + LATENESS + 1, v: 0, p: "x" };
  await stores[0].applyBatch(batchOf([end], nowMs));
  closed.push(...await closeAll(stores));
  // Every session closed exactly once, with the model's bounds and values.
  const keys = closed.map((window) =>
    `${window.counter}|${window.groups[0].group}|${window.start}`
  );
  assert.equal(new Set(keys).size, keys.length, "a session closed twice");
  assert.deepEqual(closedTuples(closed), model);
  // Each close logged one window.closed record, carrying the same bounds and values.
  const log = (await stores[0].readLog("s", null, 100_000)).map((entry) => entry.record);
  const logged = log.flatMap((record) =>
    record.type === "window.closed"
      ? [{ counter: record.counter, start: record.start, end: record.end, groups: [record] }]
      : []
  );
  assert.deepEqual(closedTuples(logged), model);
}

Deno.test("MemoryStore sessions equal the naive model for any arrival order and batch split", async () => {
  await fc.assert(
    fc.asyncProperty(eventsArbitrary, sizesArbitrary, async (events, sizes) => {
      await runAndCheck([new MemoryStore({ now: () => T0 })], events, sizes);
    }),
    { numRuns: 300 },
  );
});

Deno.test("MemoryStore sessions do not depend on the order of events within lateness", async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          u: fc.constantFrom("a", "b"),
          // Within 20 s of each other: none is late, whatever the order.
          t: fc.integer({ min: 0, max: 20 }).map((n) => T0 + n * 1_000),
          v: fc.integer({ min: -5, max: 5 }),
          p: fc.constantFrom("x", "y"),
        }),
        { minLength: 1, maxLength: 40 },
      ),
      sizesArbitrary,
      async (events, sizes) => {
        const store = new MemoryStore({ now: () => T0 });
        for (const batch of split(events, sizes)) {
          const result = await store.applyBatch(batchOf(batch, T0 + 10_000_000));
          assert.ok(result.outcomes.every((outcome) => outcome === "applied"));
        }
        assert.deepEqual(await listedTuples(store), modelSessions(events));
      },
    ),
    { numRuns: 200 },
  );
});

function redisClient(fixture: RedisFixture): Redis {
  return restClient(fixture);
}

redisTest(
  "RedisStore sessions equal the naive model for any arrival order and batch split",
  async (fixture) => {
    const redis = redisClient(fixture);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(eventsArbitrary, sizesArbitrary, async (events, sizes) => {
        run += 1;
        await runAndCheck(
          [new RedisStore(redis, { prefix: `one${run}`, now: () => T0 })],
          events,
          sizes,
        );
      }),
      { numRuns: 150 },
    );
  },
);

redisTest(
  "two RedisStore clients applying and closing at once close each session exactly once",
  async (fixture) => {
    const first = redisClient(fixture);
    const second = redisClient(fixture);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(eventsArbitrary, sizesArbitrary, async (events, sizes) => {
        run += 1;
        const prefix = `two${run}`;
        await runAndCheck(
          [
            new RedisStore(first, { prefix, now: () => T0 }),
            new RedisStore(second, { prefix, now: () => T0 }),
          ],
          events,
          sizes,
        );
      }),
      { numRuns: 30 },
    );
  },
);
