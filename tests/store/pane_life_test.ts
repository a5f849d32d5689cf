/**
 * How many panes a counter holds, the README's sizing figures: a pane lives window size +
 * `lateness` + `retention` of the store's clock after its last write, whatever its event time. A
 * live stream (event time near the clock) so holds what its windows, lateness and retention span;
 * a backfill holds a pane for every window of event time it wrote within that much clock time.
 */
import assert from "node:assert/strict";
import { compileConfig } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import type { Store } from "../../src/store/types.ts";
import { redisTest, restClient } from "../_redis.ts";

const NOW = Date.parse("2026-01-01T00:00:00Z");
const MINUTE = 60_000;
const DAY = 1_440 * MINUTE;
/** `tumbling: "1m"` with the defaults the README names: `lateness` 30s, `retention` 1h. */
const STREAMS = compileConfig({
  streams: {
    live: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } },
    backfill: {
      time: { field: "ts" },
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
});
const LIVE = STREAMS.get("live")!;
const BACKFILL = STREAMS.get("backfill")!;
const ALL_TIME = { fromMs: -8.64e15, toMs: 8.64e15 };

function items(events: object[]) {
  return events.map((value) => ({ ok: true as const, value }));
}

/** Sends one event a minute of event time over the `days` before `nowMs`, oldest first. */
async function backfill(store: Store, days: number, nowMs: number): Promise<number> {
  const minutes = days * 1_440;
  let late = 0;
  for (let first = 0; first < minutes; first += 1_000) {
    const events = [];
    for (let minute = first; minute < Math.min(first + 1_000, minutes); minute++) {
      events.push({ ts: nowMs - days * DAY + minute * MINUTE });
    }
    late += (await ingestItems(BACKFILL, items(events), { store, nowMs })).late;
  }
  return late;
}

Deno.test("A live 1-minute tumbling counter with lateness 30s and retention 1h holds 62 panes", async () => {
  let now = NOW;
  const store = new MemoryStore({ now: () => now });
  // Three hours of one event every 10 s, at receive time.
  for (; now < NOW + 3 * 60 * MINUTE; now += 10_000) {
    await ingestItems(LIVE, items([{}]), { store, nowMs: now });
  }
  const panes = await store.panes("live", LIVE.counterMetas[0], ALL_TIME);
  assert.equal(panes.length, 62);
});

Deno.test("A backfill of 6 days of event time within a minute holds 8,640 panes until 61.5 minutes of the clock pass", async () => {
  let now = NOW;
  const store = new MemoryStore({ now: () => now });
  assert.equal(await backfill(store, 6, now), 0, "none late: the watermark follows the events");
  const meta = BACKFILL.counterMetas[0];
  assert.equal((await store.panes("backfill", meta, ALL_TIME)).length, 6 * 1_440);
  // The first minute of history is still readable: its pane was written moments ago.
  assert.deepEqual(await store.panes("backfill", meta, { fromMs: 0, toMs: NOW - 6 * DAY + 1 }), [
    NOW - 6 * DAY,
  ]);
  now += MINUTE + 30_000 + 60 * MINUTE - 1;
  assert.equal((await store.panes("backfill", meta, ALL_TIME)).length, 6 * 1_440);
  now += 1;
  assert.equal((await store.panes("backfill", meta, ALL_TIME)).length, 0);
});

redisTest("On Redis too, a backfill of 6 days of event time holds 8,640 panes", async (fixture) => {
  const redis = restClient(fixture);
  const now = Date.now();
  const store = new RedisStore(redis, { now: () => now });
  assert.equal(await backfill(store, 6, now), 0);
  const panes = await store.panes("backfill", BACKFILL.counterMetas[0], ALL_TIME);
  assert.equal(panes.length, 6 * 1_440);
});
