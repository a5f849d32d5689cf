/**
 * Both stores keep an open window's data while its producer pauses (an event-time stream without
 * `idle`, whose watermark then stands still) for longer than its panes' ttl, as long as the sweep
 * runs: the window closes with its values once the producer resumes, and stays readable after.
 * The panes' ttl is short (1 s window, no lateness, 500 ms retention) and the pause real, as Redis
 * expires keys by its own clock.
 */
import assert from "node:assert/strict";
import { compileConfig } from "../../src/config/mod.ts";
import { alertMarkerTtlMs } from "../../src/fanout/alerts.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { listWindows } from "../../src/query/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import type { Store } from "../../src/store/types.ts";
import { type RedisFixture, redisTest, restClient } from "../_redis.ts";

const stream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "0s" },
      counters: {
        count: { window: { tumbling: "1s" }, aggregate: "count", retention: "500ms" },
        users: { window: { tumbling: "1s" }, aggregate: { distinct: "u" }, retention: "500ms" },
        hops: {
          window: { hopping: "2s", every: "1s" },
          aggregate: { max: "v" },
          retention: "500ms",
        },
      },
    },
  },
}).get("s")!;

/** Event time of the first window, far from the clock: only the events move the watermark. */
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
    items([{ t: E + 100, u: "a", v: 3 }, { t: E + 200, u: "b", v: 5 }]),
    { store, nowMs: Date.now() },
  );
  // The producer pauses for more than three times the panes' ttl (1.5 s); the sweep runs on,
  // closing nothing: the watermark stands at the last event.
  const pausedUntil = Date.now() + 5_000;
  while (Date.now() < pausedUntil) {
    assert.deepEqual(await sweep(), []);
    await sleep(150);
  }
  await ingestItems(stream, items([{ t: E + 10_000, u: "c", v: 1 }]), {
    store,
    nowMs: Date.now(),
  });
  const closed = await sweep();
  const byWindow = closed.map((window) => [
    window.counter,
    window.start - E,
    window.groups.map((group) => [
      group.state.count,
      window.counter === "hops" ? group.state.max : group.state.distinct,
    ]),
  ]);
  assert.deepEqual(byWindow, [
    ["count", 0, [[2, 0]]],
    ["users", 0, [[2, 2]]],
    ["hops", -1_000, [[2, 5]]],
    ["hops", 0, [[2, 5]]],
  ]);
  // Closed, and still readable.
  const count = stream.counters.find((counter) => counter.name === "count")!;
  const rows = await listWindows(stream, count, { store, nowMs: Date.now() }, {
    fromMs: E,
    toMs: E + 1_000,
  });
  assert.deepEqual(rows.map((row) => [row.start, row.value, row.final]), [[
    new Date(E).toISOString(),
    2,
    true,
  ]]);
}

Deno.test("MemoryStore: an open window outlives a producer's pause longer than its ttl and closes with its values", async () => {
  await pauseAndResume(new MemoryStore());
});

redisTest(
  "RedisStore: an open window outlives a producer's pause longer than its ttl and closes with its values",
  (fixture) => pauseAndResume(redisStore(fixture)),
);

/** A firing of alert `any` on the `count` counter's first window, with the marker life it gets. */
function firstWindowFiring() {
  const count = stream.counters.find((counter) => counter.name === "count")!;
  return {
    alert: "any",
    counter: "count",
    start: E,
    end: E + 1_000,
    group: "[]",
    value: 1,
    ttlMs: alertMarkerTtlMs(count),
  };
}

/** A Redis store through the fixture's Upstash bridge. */
function redisStore(fixture: RedisFixture): RedisStore {
  return new RedisStore(
    restClient(fixture),
  );
}

/**
 * An alert that fired early in a window (its marker: twice the panes' ttl, 3 s here) is still
 * marked when the window closes after a producer's pause longer than that: it does not fire again.
 */
async function alertAfterPause(store: Store): Promise<void> {
  const sweep = () => store.closeWindows("s", stream.counterMetas, { latenessMs: 0 });
  await ingestItems(stream, items([{ t: E + 100, u: "a", v: 3 }]), { store, nowMs: Date.now() });
  const firing = firstWindowFiring();
  assert.equal(firing.ttlMs, 3_000);
  assert.deepEqual(await store.fireAlerts("s", [firing]), [firing]);
  const pausedUntil = Date.now() + 4_500;
  while (Date.now() < pausedUntil) {
    assert.deepEqual(await sweep(), []);
    await sleep(150);
  }
  // The window still open: the close's evaluation asks to fire it again, and it is marked.
  assert.deepEqual(await store.fireAlerts("s", [{ ...firing, value: 2 }]), []);
  await ingestItems(stream, items([{ t: E + 10_000, u: "c", v: 1 }]), {
    store,
    nowMs: Date.now(),
  });
  assert.equal((await sweep()).filter((window) => window.counter === "count").length, 1);
  assert.deepEqual(await store.fireAlerts("s", [{ ...firing, value: 2 }]), []);
  const fired = (await store.readLog("s", null, 100)).filter((entry) =>
    entry.record.type === "alert.fired"
  );
  assert.equal(fired.length, 1);
}

/**
 * The same with a producer whose stale events keep the window open past its marker's life: each
 * apply gives the window's panes life again, so no pane is due when the sweep runs, and the
 * marker is still kept. Firings of other alerts in that window, each before the markers' index is
 * due (every 1.2 s; due 1.41 s after it was last given life), do not put that off.
 */
async function alertWhileStaleEventsArrive(store: Store): Promise<void> {
  const sweep = () => store.closeWindows("s", stream.counterMetas, { latenessMs: 0 });
  await ingestItems(stream, items([{ t: E + 100, u: "a", v: 3 }]), { store, nowMs: Date.now() });
  const firing = firstWindowFiring();
  assert.deepEqual(await store.fireAlerts("s", [firing]), [firing]);
  const started = Date.now();
  const others = [1_200, 2_400];
  while (Date.now() < started + 4_500) {
    await ingestItems(stream, items([{ t: E + 100, u: "b", v: 1 }]), {
      store,
      nowMs: Date.now(),
    });
    assert.deepEqual(await sweep(), []);
    if (others.length > 0 && Date.now() >= started + others[0]) {
      const other = { ...firing, alert: `other${others.shift()}` };
      assert.deepEqual(await store.fireAlerts("s", [other]), [other]);
    }
    await sleep(100);
  }
  assert.deepEqual(await store.fireAlerts("s", [{ ...firing, value: 9 }]), []);
  const fired = (await store.readLog("s", null, 1000)).filter((entry) =>
    entry.record.type === "alert.fired"
  );
  assert.equal(fired.length, 3);
}

Deno.test("MemoryStore: an alert that fired early in a window stale events keep open does not fire again", async () => {
  await alertWhileStaleEventsArrive(new MemoryStore());
});

redisTest(
  "RedisStore: an alert that fired early in a window stale events keep open does not fire again",
  (fixture) => alertWhileStaleEventsArrive(redisStore(fixture)),
);

Deno.test("MemoryStore: an alert that fired early in a window a producer's pause keeps open does not fire again at its close", async () => {
  await alertAfterPause(new MemoryStore());
});

redisTest(
  "RedisStore: an alert that fired early in a window a producer's pause keeps open does not fire again at its close",
  (fixture) => alertAfterPause(redisStore(fixture)),
);

const sessions = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "0s" },
      counters: {
        visits: { window: { session: "1s" }, groupBy: ["g"], aggregate: "count", retention: "5s" },
      },
    },
  },
}).get("s")!;

/**
 * Events at E, a pause of `pauseMs` of clock with a sweep every `sweepEveryMs`, then one more
 * event.
 */
async function sessionAfterPause(idleMs: number | null, pauseMs: number, sweepEveryMs = 500) {
  let clock = Date.parse("2026-06-01T00:00:00Z");
  const store = new MemoryStore({ now: () => clock });
  const closed: unknown[] = [];
  const sweep = async () => {
    for (
      const window of await store.closeWindows("s", sessions.counterMetas, {
        latenessMs: 0,
        idleMs,
      })
    ) {
      closed.push(window.groups.map((group) => [group.group, group.state.count]));
    }
  };
  await ingestItems(sessions, items([{ t: E + 100, g: "a" }, { t: E + 200, g: "a" }]), {
    store,
    nowMs: clock,
  });
  for (let waited = 0; waited < pauseMs; waited += sweepEveryMs) {
    clock += sweepEveryMs;
    await sweep();
  }
  await ingestItems(sessions, items([{ t: E + 60_000, g: "b" }]), { store, nowMs: clock });
  await sweep();
  return closed;
}

Deno.test("README retention: an open session outlives a pause longer than gap + lateness + retention while the sweep runs more often than half that; with idle it closes during the pause", async () => {
  // gap + lateness + retention: 6 s. A pause within it: it closes, with both events, once the
  // producer resumes.
  assert.deepEqual(await sessionAfterPause(null, 4_000), [[['["a"]', 2]]]);
  // Far longer, swept every 500 ms (or every 2.5 s): kept, it closes then too.
  assert.deepEqual(await sessionAfterPause(null, 60_000), [[['["a"]', 2]]]);
  assert.deepEqual(await sessionAfterPause(null, 60_000, 2_500), [[['["a"]', 2]]]);
  // Swept less often than half its life: lost unclosed.
  assert.deepEqual(await sessionAfterPause(null, 60_000, 7_000), []);
  // With idle shorter than retention the watermark moves on during the pause and it closes.
  assert.deepEqual(await sessionAfterPause(1_000, 10_000), [[['["a"]', 2]]]);
});
