/**
 * Group filters of counter reads: what a read costs does not grow with the filter's text times
 * the groups it looks at.
 */
import assert from "node:assert/strict";
import { compileConfig } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import {
  currentWindow,
  currentWindowPage,
  listTopWindows,
  listWindows,
} from "../../src/query/mod.ts";
import { MemoryStore, RedisStore, type Store } from "../../src/store/mod.ts";
import { redisTest, restClient } from "../_redis.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 30_000;

const stream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "1h" },
      counters: {
        windows: {
          window: { tumbling: "1h" },
          groupBy: ["g"],
          aggregate: "count",
          maxGroups: 100_000,
        },
        sessions: { window: { session: "1h" }, groupBy: ["g"], aggregate: "count" },
      },
    },
  },
}).get("s")!;

Deno.test("a group filter's text is read once a read, not once for each group it is compared with", async () => {
  const store = new MemoryStore({ now: () => NOW });
  // 5,000 groups of array values ([0], [1], …) and 5,000 of strings.
  const events = Array.from({ length: 5000 }, (_, i) => [
    { t: T0 + 1000, g: [i] },
    { t: T0 + 1000, g: `s${i}` },
  ]).flat();
  for (let at = 0; at < events.length; at += 1000) {
    await ingestItems(
      stream,
      events.slice(at, at + 1000).map((value) => ({ ok: true as const, value })),
      { store, nowMs: NOW },
    );
  }
  // A filter of 60 KB: JSON text of an array, and a JSON string in double quotes. Parsing it for
  // every group of a window took seconds of the event loop (one parse per group, 5,000 of them).
  const filters = [
    `[${Array(15_000).fill(1).join(",")}]`,
    JSON.stringify("x".repeat(60_000)),
    "[ 4999 ]",
    '"s4999"',
  ];
  for (const counter of stream.counters) {
    for (const wanted of filters) {
      const started = performance.now();
      const rows = await listWindows(stream, counter, { store, nowMs: NOW }, {
        groups: { g: wanted },
      });
      const current = await currentWindow(stream, counter, { store, nowMs: NOW }, {
        groups: { g: wanted },
      });
      const elapsed = performance.now() - started;
      const expected = wanted === "[ 4999 ]" ? [[4999]] : wanted === '"s4999"' ? ["s4999"] : [];
      assert.deepEqual(rows.map((row) => row.group.g), expected, `${counter.name} ${wanted}`);
      assert.deepEqual(current.rows.map((row) => row.group.g), expected, counter.name);
      assert.ok(elapsed < 1000, `${counter.name}, ${wanted.slice(0, 10)}…: ${elapsed} ms`);
    }
  }
});

/**
 * `store` whose first read of values (`readWindows` or `readSessions`) applies `between` once the
 * values are read, before it returns; a `stats` asked while that read is under way is answered
 * after `between`: the two reads of one query as a batch applied between them orders them.
 */
function applyingBetweenReads(store: Store, between: () => Promise<unknown>): Store {
  let applied: Promise<unknown> | undefined;
  let done!: () => void;
  const batchDone = new Promise<void>((resolve) => done = resolve);
  const readThenApply = (read: () => Promise<unknown>) => async () => {
    const first = applied === undefined;
    applied = batchDone;
    const values = await read();
    if (first) {
      await between();
      done();
    }
    return values;
  };
  return new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== "function") return value;
      if (property === "readWindows" || property === "readSessions") {
        return (...args: unknown[]) => readThenApply(() => value.apply(target, args))();
      }
      if (property === "stats") {
        return async (...args: unknown[]) => {
          if (applied !== undefined) await applied;
          return await value.apply(target, args);
        };
      }
      return value.bind(target);
    },
  });
}

const lateStream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "1m" },
      counters: {
        windows: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
        sessions: { window: { session: "1m" }, groupBy: ["g"], aggregate: "count" },
      },
    },
  },
}).get("s")!;

/**
 * A read calls a window or session final only with every event its stats call on time: an event
 * is added to group a's window (and session) and another moves the watermark past them between
 * the query's two reads (values, stats). Read alongside, the stats saw the later watermark and
 * the values missed the added event: final with count 1, then 2 after.
 */
async function checkFinalWithItsValues(makeStore: () => Store) {
  const at = (ms: number, g: string) => ({ ok: true as const, value: { t: T0 + ms, g } });
  const reads = {
    current: async (store: Store) =>
      (await currentWindow(lateStream, lateStream.counters[0], { store, nowMs: NOW })).rows,
    top: async (store: Store) =>
      (await listTopWindows(lateStream, lateStream.counters[0], { store, nowMs: NOW }, { top: 5 }))
        .windows,
    sessions: (store: Store) =>
      listWindows(lateStream, lateStream.counters[1], { store, nowMs: NOW }),
    currentSessions: async (store: Store) =>
      (await currentWindow(lateStream, lateStream.counters[1], { store, nowMs: NOW })).rows,
    // Listings and pages of windows: their stats come with the first batch of windows they read.
    list: (store: Store) => listWindows(lateStream, lateStream.counters[0], { store, nowMs: NOW }),
    listFiltered: (store: Store) =>
      listWindows(lateStream, lateStream.counters[0], { store, nowMs: NOW }, {
        groups: { g: '"a"' },
      }),
    currentPage: async (store: Store) =>
      (await currentWindowPage(lateStream, lateStream.counters[0], { store, nowMs: NOW }, {
        limit: 10,
      })).rows,
  };
  const wrong: string[] = [];
  for (const [name, read] of Object.entries(reads)) {
    const store = makeStore();
    await ingestItems(lateStream, [at(10_000, "a")], { store, nowMs: NOW });
    const racing = applyingBetweenReads(store, async () => {
      await ingestItems(lateStream, [at(20_000, "a")], { store, nowMs: NOW });
      // Watermark T0 + 300 s: the window [T0, T0 + 1m) and a's session (last event T0 + 20 s,
      // gap 1m) are final by a lateness of 1m.
      await ingestItems(lateStream, [at(300_000, "b")], { store, nowMs: NOW });
    });
    const rows = (await read(racing)).filter((row) => row.group.g === "a");
    // The current sessions are those not final: a's is left out when its read calls it final.
    if (rows.length === 0) wrong.push(`${name}: none`);
    for (const row of rows) {
      if (row.final && row.value !== 2) wrong.push(`${name}: final with ${row.value}`);
    }
    // Read again: final, with both events.
    const after = (await read(store)).filter((row) => row.group.g === "a");
    if (name !== "currentSessions") {
      assert.deepEqual(after.map((row) => [row.value, row.final]), [[2, true]], name);
    }
  }
  assert.deepEqual(wrong, []);
}

Deno.test("MemoryStore: a window or session read as final has every event its stats call on time", () =>
  checkFinalWithItsValues(() => new MemoryStore({ now: () => NOW })));
redisTest(
  "RedisStore: a window or session read as final has every event its stats call on time",
  async (fixture) => {
    let n = 0;
    await checkFinalWithItsValues(() =>
      new RedisStore(
        restClient(fixture),
        { now: () => NOW, prefix: `final${n++}` },
      )
    );
  },
);
