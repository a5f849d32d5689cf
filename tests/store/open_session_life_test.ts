/**
 * Both stores keep an open session while its producer pauses (an event-time stream without
 * `idle`, whose watermark then stands still) for longer than gap + lateness + `retention`, as long
 * as the sweep runs: the session closes with its values once the producer resumes (one
 * `window.closed` each) and stays readable after. The ttl is short (1 s gap, no lateness, 2 s
 * retention) and the pause real, as Redis expires keys by its own clock.
 */
import assert from "node:assert/strict";
import { compileConfig } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { readSessionRows } from "../../src/query/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import type { Store } from "../../src/store/types.ts";
import { redisTest, restClient } from "../_redis.ts";

const stream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "0s" },
      counters: {
        visits: { window: { session: "1s" }, groupBy: ["g"], aggregate: "count", retention: "2s" },
        users: {
          window: { session: "1s" },
          groupBy: ["g"],
          aggregate: { distinct: "u" },
          retention: "2s",
        },
      },
    },
  },
}).get("s")!;

/** Event time of the first sessions, far from the clock: only the events move the watermark. */
const E = Date.parse("2026-01-01T00:00:00Z");

function items(events: object[]) {
  return events.map((value) => ({ ok: true as const, value }));
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function pauseAndResume(store: Store): Promise<void> {
  const sweep = () => store.closeWindows("s", stream.counterMetas, { latenessMs: 0 });
  await ingestItems(
    stream,
    items([
      { t: E + 100, g: "a", u: "x" },
      { t: E + 200, g: "a", u: "y" },
      { t: E + 300, g: "b", u: "x" },
    ]),
    { store, nowMs: Date.now() },
  );
  // The producer pauses for more than twice the sessions' ttl (3 s); the sweep runs on, closing
  // nothing: the watermark stands at the last event.
  const pausedUntil = Date.now() + 7_000;
  while (Date.now() < pausedUntil) {
    assert.deepEqual(await sweep(), []);
    await sleep(150);
  }
  await ingestItems(stream, items([{ t: E + 10_000, g: "c", u: "z" }]), {
    store,
    nowMs: Date.now(),
  });
  const closed = await sweep();
  const bySession = closed.map((window) => [
    window.counter,
    window.start - E,
    window.end - E,
    window.groups.map((group) => [
      group.group,
      window.counter === "users" ? group.state.distinct : group.state.count,
    ]),
  ]).sort((a, b) => String(a).localeCompare(String(b)));
  assert.deepEqual(bySession, [
    ["users", 100, 200, [['["a"]', 2]]],
    ["users", 300, 300, [['["b"]', 1]]],
    ["visits", 100, 200, [['["a"]', 2]]],
    ["visits", 300, 300, [['["b"]', 1]]],
  ]);
  assert.deepEqual(await sweep(), [], "each closes once");
  const logged = (await store.readLog("s", null, 100))
    .filter((entry) => entry.record.type === "window.closed");
  assert.equal(logged.length, 4, JSON.stringify(logged));
  // Closed, and still readable.
  const visits = stream.counters.find((counter) => counter.name === "visits")!;
  const rows = await readSessionRows(stream, visits, {
    store,
    nowMs: Date.now(),
    fromMs: E,
    toMs: E + 1_000,
  });
  assert.deepEqual(
    rows.map((row) => [row.start, row.end, row.group.g, row.value, row.final]),
    [
      [new Date(E + 300).toISOString(), new Date(E + 300).toISOString(), "b", 1, true],
      [new Date(E + 100).toISOString(), new Date(E + 200).toISOString(), "a", 2, true],
    ],
  );
}

Deno.test("MemoryStore: an open session outlives a producer's pause longer than its ttl and closes with its values", async () => {
  await pauseAndResume(new MemoryStore());
});

redisTest(
  "RedisStore: an open session outlives a producer's pause longer than its ttl and closes with its values",
  async (fixture) => {
    const redis = restClient(fixture);
    await pauseAndResume(new RedisStore(redis));
  },
);
