import assert from "node:assert/strict";
import fc from "fast-check";
import { compileConfig, StreamRegistry } from "../../../src/config/mod.ts";
import { createApp } from "../../../src/app.ts";
import { KeyRing } from "../../../src/http/auth.ts";
import { generationKey, MemoryDefinitionStore } from "../../../src/store/mod.ts";
import { ingestItems } from "../../../src/ingest/mod.ts";
import { DEFAULT_MAX_REPLY_BYTES, MemoryStore } from "../../../src/store/memory/store.ts";
import { collectingLogs, messageOf } from "../../_logs.ts";
import {
  type BatchOfCellUpdates,
  type CounterMeta,
  type EventWithCellUpdates,
  fromCellUpdates,
  OTHER_GROUP,
  type StoreBatch,
} from "../../../src/store/types.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const MINUTE = 60_000;

/** Counter metas as compiled: `count` (1m tumbling, ttl 1m + 0 lateness + 1m retention), `people` (distinct, 2 groups). */
const [COUNT, PEOPLE]: CounterMeta[] = compileConfig({
  streams: {
    s: {
      time: { lateness: "0s" },
      counters: {
        count: { window: { tumbling: "1m" }, aggregate: "count", retention: "1m", maxGroups: 2 },
        people: {
          window: { tumbling: "1m" },
          aggregate: { distinct: "who" },
          retention: "1m",
          maxGroups: 2,
        },
      },
    },
  },
}).get("s")!.counterMetas;
const TTL = 2 * MINUTE;

/** A store whose read clock the test sets. */
function clockedStore() {
  const clock = { now: T0 };
  const store = new MemoryStore({ now: () => clock.now, sweepEveryMs: 1 });
  return { clock, store };
}

function batch(
  nowMs: number,
  events: EventWithCellUpdates[],
  options: Partial<BatchOfCellUpdates> = {},
): StoreBatch {
  return fromCellUpdates({
    stream: "s",
    nowMs,
    latenessMs: 0,
    dedupeTtlMs: 0,
    counters: [COUNT, PEOPLE],
    events,
    filtered: 0,
    ...options,
  });
}

/** An event at T0 counted once in group `group` of the count counter. */
function countEvent(group = "[]", id?: string): EventWithCellUpdates {
  return { id, timeMs: T0, updates: [{ counter: 0, pane: T0, group }] };
}

async function counts(store: MemoryStore, meta = COUNT): Promise<Record<string, number>> {
  const values = await store.readWindows("s", meta, [{ start: T0, panes: [T0] }]);
  return Object.fromEntries(values.map((value) => [value.group, value.state.count]));
}

Deno.test("MemoryStore keeps a pane until its ttl after the last write has passed", async () => {
  const { clock, store } = clockedStore();
  await store.applyBatch(batch(T0, [countEvent()]));
  clock.now = T0 + TTL - 1;
  assert.deepEqual(await store.panes("s", COUNT, { fromMs: T0, toMs: T0 + 1 }), [T0]);
  assert.deepEqual(await counts(store), { "[]": 1 });
  clock.now = T0 + TTL;
  assert.deepEqual(await store.panes("s", COUNT, { fromMs: T0, toMs: T0 + 1 }), []);
  assert.deepEqual(await counts(store), {});
});

Deno.test("MemoryStore extends a pane's life on every write", async () => {
  const { clock, store } = clockedStore();
  await store.applyBatch(batch(T0, [countEvent()]));
  await store.applyBatch(batch(T0 + MINUTE, [countEvent()]));
  clock.now = T0 + TTL + MINUTE - 1;
  assert.deepEqual(await counts(store), { "[]": 2 });
  clock.now = T0 + TTL + MINUTE;
  assert.deepEqual(await counts(store), {});
});

Deno.test("MemoryStore starts an expired pane afresh when it is written again", async () => {
  const { clock, store } = clockedStore();
  await store.applyBatch(batch(T0, [countEvent('["a"]')]));
  await store.applyBatch(batch(T0 + TTL, [countEvent('["b"]')]));
  clock.now = T0 + TTL;
  assert.deepEqual(await counts(store), { '["b"]': 1 });
});

/** Late in a 10-minute dedupe bucket, the worst case for how long an id is remembered. */
const LATE_IN_BUCKET = Math.floor(T0 / (10 * MINUTE)) * 10 * MINUTE + 10 * MINUTE - 1;

Deno.test("MemoryStore remembers a dedupe id for at least its ttl and forgets it within twice that", async () => {
  const { store } = clockedStore();
  const dedupe = { dedupeTtlMs: 10 * MINUTE };
  const t = LATE_IN_BUCKET;
  const first = await store.applyBatch(batch(t, [countEvent("[]", "x")], dedupe));
  assert.deepEqual(first.outcomes, ["applied"]);
  const during = await store.applyBatch(
    batch(t + 10 * MINUTE - 1, [countEvent("[]", "x")], dedupe),
  );
  assert.deepEqual(during.outcomes, ["duplicate"]);
  const after = await store.applyBatch(batch(t + 11 * MINUTE, [countEvent("[]", "x")], dedupe));
  assert.deepEqual(after.outcomes, ["applied"]);
  const stats = await store.stats("s", [COUNT]);
  assert.equal(stats.duplicates, 1);
  assert.equal(stats.applied, 2);
});

Deno.test("MemoryStore drops a stream's ids past their TTL though the stream gets no more batches", async () => {
  const { store } = clockedStore();
  const dedupe = { dedupeTtlMs: 10 * MINUTE };
  const ids = Array.from({ length: 100 }, (_, i) => countEvent("[]", `id${i}`));
  await store.applyBatch(batch(T0, ids, { ...dedupe, stream: "deleted" }));
  assert.equal(store.heldIds("deleted"), 100);
  // Batches of another stream only (the first was deleted, say): its ids go within twice the TTL.
  await store.applyBatch(batch(T0 + 10 * MINUTE, [countEvent()], { stream: "other" }));
  await store.applyBatch(batch(T0 + 20 * MINUTE + 1, [countEvent()], { stream: "other" }));
  assert.equal(store.heldIds("deleted"), 0);
  // A stream whose dedupe is turned off drops its ids at its next batch.
  await store.applyBatch(batch(T0 + 21 * MINUTE, ids, { ...dedupe, stream: "other" }));
  assert.equal(store.heldIds("other"), 100);
  await store.applyBatch(batch(T0 + 21 * MINUTE, [countEvent()], { stream: "other" }));
  assert.equal(store.heldIds("other"), 0);
});

Deno.test("MemoryStore does not extend a dedupe id's life when a duplicate arrives", async () => {
  const { store } = clockedStore();
  const dedupe = { dedupeTtlMs: 10 * MINUTE };
  const t = LATE_IN_BUCKET;
  await store.applyBatch(batch(t, [countEvent("[]", "x"), countEvent("[]", "y")], dedupe));
  const again = await store.applyBatch(batch(t + 5 * MINUTE, [countEvent("[]", "x")], dedupe));
  assert.deepEqual(again.outcomes, ["duplicate"]);
  const result = await store.applyBatch(
    batch(t + 11 * MINUTE, [countEvent("[]", "x"), countEvent("[]", "y")], dedupe),
  );
  assert.deepEqual(result.outcomes, ["applied", "applied"]);
});

Deno.test("MemoryStore ignores ids when the stream does not dedupe", async () => {
  const { store } = clockedStore();
  const result = await store.applyBatch(batch(T0, [countEvent("[]", "x"), countEvent("[]", "x")]));
  assert.deepEqual(result.outcomes, ["applied", "applied"]);
  assert.deepEqual(await counts(store), { "[]": 2 });
});

Deno.test("MemoryStore counts groups beyond maxGroups into __other__ and reports the overflow", async () => {
  const { store } = clockedStore();
  await store.applyBatch(
    batch(T0, ['["a"]', '["b"]', '["c"]', '["d"]', '["a"]', '["c"]'].map((g) => countEvent(g))),
  );
  assert.deepEqual(await counts(store), { '["a"]': 2, '["b"]': 1, [OTHER_GROUP]: 3 });
  const stats = await store.stats("s", [COUNT, PEOPLE]);
  assert.deepEqual(stats.overflow, { count: 3, people: 0 });
});

Deno.test("MemoryStore applies maxGroups per pane", async () => {
  const { store } = clockedStore();
  const next = T0 + MINUTE;
  await store.applyBatch(batch(T0, [countEvent('["a"]'), countEvent('["b"]')]));
  await store.applyBatch(
    batch(T0, [{ timeMs: next, updates: [{ counter: 0, pane: next, group: '["c"]' }] }]),
  );
  const values = await store.readWindows("s", COUNT, [{ start: next, panes: [next] }]);
  assert.deepEqual(values.map((value) => value.group), ['["c"]']);
  assert.deepEqual((await store.stats("s", [COUNT])).overflow, { count: 0 });
});

Deno.test("MemoryStore merges distinct values of overflowing groups", async () => {
  const { store } = clockedStore();
  const person = (group: string, who: string): EventWithCellUpdates => ({
    timeMs: T0,
    updates: [{ counter: 1, pane: T0, group, value: JSON.stringify(who) }],
  });
  await store.applyBatch(batch(T0, [
    person('["a"]', "ann"),
    person('["b"]', "bob"),
    person('["c"]', "cy"),
    person('["d"]', "cy"),
    person('["e"]', "dee"),
  ]));
  const values = await store.readWindows("s", PEOPLE, [{ start: T0, panes: [T0] }]);
  const other = values.find((value) => value.group === OTHER_GROUP);
  assert.ok(other);
  assert.equal(other.state.count, 3);
  assert.equal(other.state.distinct, 2);
  assert.deepEqual((await store.stats("s", [COUNT, PEOPLE])).overflow, { count: 0, people: 3 });
});

Deno.test("MemoryStore keeps streams apart and forgets everything on close", async () => {
  const { store } = clockedStore();
  await store.applyBatch(batch(T0, [countEvent()]));
  await store.applyBatch(batch(T0, [countEvent(), countEvent()], { stream: "other" }));
  assert.deepEqual(await counts(store), { "[]": 1 });
  assert.equal((await store.stats("other", [])).applied, 2);
  assert.equal(store.logClocks, 2);
  await store.close();
  assert.deepEqual(await counts(store), {});
  assert.equal((await store.stats("s", [])).watermark, null);
  assert.equal(store.logClocks, 0);
});

/** A batch of id-only events for a stream that dedupes for a minute. */
function idBatch(ids: string[], stream = "s"): StoreBatch {
  return {
    stream,
    nowMs: 1_000,
    latenessMs: 0,
    dedupeTtlMs: 60_000,
    counters: [],
    filtered: 0,
    events: ids.map((id) => ({ id, timeMs: 1_000 })),
  };
}

/** Runs `body` with the warnings logged recorded; `warnings()` gives their messages so far. */
async function recordingWarnings(body: (warnings: () => string[]) => Promise<void>): Promise<void> {
  await collectingLogs((records) =>
    body(() => records.filter((record) => record.level === "warning").map(messageOf))
  );
}

Deno.test("MemoryStore holds at most maxDedupeIds per stream, forgetting the oldest ids first", async () => {
  const store = new MemoryStore({ maxDedupeIds: 4 });
  await recordingWarnings(async () => {
    await store.applyBatch(idBatch(["a", "b", "c", "d", "e"]));
    const again = await store.applyBatch(idBatch(["e", "d", "c", "a"]));
    assert.deepEqual(again.outcomes, ["duplicate", "duplicate", "duplicate", "applied"]);
  });
});

Deno.test("MemoryStore counts dedupe ids forgotten early in stats and warns once per stream", async () => {
  const store = new MemoryStore({ maxDedupeIds: 4 });
  await recordingWarnings(async (warnings) => {
    await store.applyBatch(idBatch(["a", "b", "c", "d"]));
    assert.equal((await store.stats("s", [])).dedupeForgotten, 0);
    assert.deepEqual(warnings(), []);
    await store.applyBatch(idBatch(["e", "f"]));
    assert.equal((await store.stats("s", [])).dedupeForgotten, 2);
    assert.equal(warnings().length, 1);
    assert.match(warnings()[0], /Stream 's'/);
    assert.match(warnings()[0], /maxDedupeIds/);
    assert.match(warnings()[0], /EDGESTREAM_MEMORY_DEDUPE_MAX/);
    await store.applyBatch(idBatch(["g", "h", "i", "j"]));
    assert.equal((await store.stats("s", [])).dedupeForgotten, 6);
    assert.equal(warnings().length, 1);
    await store.applyBatch(idBatch(["a", "b", "c", "d"], "other"));
    assert.equal((await store.stats("other", [])).dedupeForgotten, 0);
    await store.applyBatch(idBatch(["e"], "other"));
    assert.equal((await store.stats("other", [])).dedupeForgotten, 2);
    assert.equal(warnings().length, 2);
    assert.match(warnings()[1], /Stream 'other'/);
  });
});

Deno.test("MemoryStore's warning of dedupe ids forgotten names the stream, not its generation's key", async () => {
  // A stream created through the API lives under a generation: its data key is `s#1`.
  const store = new MemoryStore({ maxDedupeIds: 4 });
  await recordingWarnings(async (warnings) => {
    await store.applyBatch(idBatch(["a", "b", "c", "d", "e", "f"], generationKey("s", 1)));
    assert.equal((await store.stats(generationKey("s", 1), [])).dedupeForgotten, 2);
    assert.equal(warnings().length, 1);
    assert.match(warnings()[0], /^Stream 's' forgets dedupe ids/);
  });
});

Deno.test("MemoryStore still detects duplicates within the ttl after many ids", async () => {
  const store = new MemoryStore();
  const ids = Array.from({ length: 300_000 }, (_, i) => `evt-${i}`);
  for (let i = 0; i < ids.length; i += 1_000) {
    await store.applyBatch(idBatch(ids.slice(i, i + 1_000)));
  }
  const again = await store.applyBatch(idBatch([ids[0], ids[123_456], ids.at(-1)!, "new"]));
  assert.deepEqual(again.outcomes, ["duplicate", "duplicate", "duplicate", "applied"]);
  assert.equal((await store.stats("s", [])).dedupeForgotten, 0);
});

Deno.test("MemoryStore refuses a maxDedupeIds below 2", () => {
  assert.throws(
    () => new MemoryStore({ maxDedupeIds: 1 }),
    /^RangeError: maxDedupeIds must be an integer of at least 2, got 1$/,
  );
});

Deno.test("MemoryStore holds at most maxReplyBytes of Idempotency-Key replies per stream, forgetting the oldest first", async () => {
  // Each reply counts 128 + 64 + 64 + 16 = 272 bytes: three fit in 900.
  const store = new MemoryStore({ maxReplyBytes: 900, now: () => T0 });
  const keyed = (key: string, stream = "s") =>
    store.applyBatch(batch(T0, [], {
      stream,
      counters: [],
      requests: [{
        events: 0,
        filtered: 1,
        idempotency: {
          keyHash: key.repeat(64),
          bodyHash: "b".repeat(64),
          ttlMs: 86_400_000,
          reply: "r".repeat(16),
        },
      }],
    }));
  await recordingWarnings(async (warnings) => {
    for (const key of ["a", "b", "c"]) await keyed(key);
    assert.deepEqual(warnings(), []);
    await keyed("d");
    await keyed("e");
    await keyed("a", "other");
    // a and b went (the oldest), c, d and e are replayed; the other stream holds its own.
    const statuses = [];
    for (const key of ["e", "d", "c", "b", "a"]) {
      statuses.push((await keyed(key)).requests[0].status);
    }
    assert.deepEqual(statuses, ["replayed", "replayed", "replayed", "applied", "applied"]);
    assert.equal((await keyed("a", "other")).requests[0].status, "replayed");
    // The stats count each reply forgotten: a and b, then c and d for b and a stored again; the
    // other stream forgot none.
    assert.equal((await store.stats("s", [])).repliesForgotten, 4);
    assert.equal((await store.stats("other", [])).repliesForgotten, 0);
    assert.deepEqual(warnings(), [
      "Stream 's' forgets Idempotency-Key replies before their idempotencyTtl, as it holds at most 900 bytes of them: a request sent again with a forgotten key applies again (stats.repliesForgotten counts them)",
    ]);
  });
  assert.throws(() => new MemoryStore({ maxReplyBytes: 0 }), RangeError);
  // README: "at most 128 MiB of these replies a stream".
  assert.equal(DEFAULT_MAX_REPLY_BYTES, 128 * 1024 * 1024);
});

Deno.test("MemoryStore's maxReplyBytes counts no reply that expired, whether swept or stored again under its key", async () => {
  // Each reply counts 272 bytes: three fit in 900. The sweep runs at most once a minute.
  let now = T0;
  const store = new MemoryStore({ maxReplyBytes: 900, sweepEveryMs: 60_000, now: () => now });
  const keyed = (key: string, ttlMs = 86_400_000) =>
    store.applyBatch(batch(now, [], {
      counters: [],
      requests: [{
        events: 0,
        filtered: 1,
        idempotency: {
          keyHash: key.repeat(64),
          bodyHash: "b".repeat(64),
          ttlMs,
          reply: "r".repeat(16),
        },
      }],
    }));
  await recordingWarnings(async (warnings) => {
    await keyed("x", 1_000);
    // Expired, not swept yet: its key stored again takes the old reply's place (and bytes).
    now = T0 + 2_000;
    assert.equal((await keyed("x", 1_000)).requests[0].status, "applied");
    // Expired again, and this time swept (by the next apply).
    now = T0 + 120_000;
    for (const key of ["a", "b", "c"]) await keyed(key);
    const statuses = [];
    for (const key of ["c", "b", "a"]) statuses.push((await keyed(key)).requests[0].status);
    // A full bound's worth of new replies, all replayed: nothing expired still counts.
    assert.deepEqual(statuses, ["replayed", "replayed", "replayed"]);
    assert.deepEqual(warnings(), []);
  });
});

Deno.test("MemoryStore's maxReplyBytes counts a reply it drops that expired unswept as not forgotten, as Redis", async () => {
  // Each reply counts 272 bytes: three fit in 900. The sweep runs at most once a minute.
  let now = T0;
  const store = new MemoryStore({ maxReplyBytes: 900, sweepEveryMs: 60_000, now: () => now });
  const keyed = (key: string, ttlMs = 86_400_000) =>
    store.applyBatch(batch(now, [], {
      counters: [],
      requests: [{
        events: 0,
        filtered: 1,
        idempotency: {
          keyHash: key.repeat(64),
          bodyHash: "b".repeat(64),
          ttlMs,
          reply: "r".repeat(16),
        },
      }],
    }));
  await recordingWarnings(async (warnings) => {
    await keyed("x", 1_000);
    // x expired, not swept yet: c takes the bytes past the bound, and x goes, forgetting nothing.
    now = T0 + 2_000;
    for (const key of ["a", "b", "c"]) await keyed(key);
    assert.equal((await store.stats("s", [])).repliesForgotten, 0);
    assert.deepEqual(warnings(), []);
    const statuses = [];
    for (const key of ["c", "b", "a", "x"]) statuses.push((await keyed(key)).requests[0].status);
    assert.deepEqual(statuses, ["replayed", "replayed", "replayed", "applied"]);
  });
});

Deno.test(
  "MemoryStore answers idempotency keys as a model does while replies expire, come back and the TTL changes (sweeping every apply)",
  async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            key: fc.constantFrom("a", "b", "c", "d"),
            body: fc.constantFrom("x", "y"),
            advanceMs: fc.integer({ min: 0, max: 1_500 }),
            ttlMs: fc.constantFrom(1_000, 2_000),
          }),
          { minLength: 1, maxLength: 60 },
        ),
        async (steps) => {
          const { clock, store } = clockedStore();
          const model = new Map<string, { body: string; expiresAt: number }>();
          for (const step of steps) {
            clock.now += step.advanceMs;
            const now = clock.now;
            const { requests } = await store.applyBatch(batch(now, [], {
              counters: [],
              requests: [{
                events: 0,
                filtered: 0,
                idempotency: {
                  keyHash: step.key,
                  bodyHash: step.body,
                  ttlMs: step.ttlMs,
                  reply: JSON.stringify(step),
                },
              }],
            }));
            const held = model.get(step.key);
            const live = held !== undefined && held.expiresAt > now;
            const expected = !live ? "applied" : held.body === step.body ? "replayed" : "conflict";
            assert.equal(requests[0].status, expected);
            if (!live) model.set(step.key, { body: step.body, expiresAt: now + step.ttlMs });
          }
        },
      ),
      { numRuns: 300 },
    );
  },
);

// README, `retention`: "A raised `retention` keeps longer the windows closed or written after the
// change; a window closed before keeps the life it had then (at least the old `retention`), and a
// lowered one shortens no life already given."
/** Stream `s` (receive time, lateness 30s) with one 1-minute tumbling count kept `retention`. */
function retentionStream(retention: string) {
  return compileConfig({
    streams: {
      s: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count", retention } } },
    },
  }).get("s")!;
}

async function retentionScenario(store: MemoryStore, clock: { now: number }) {
  const before = retentionStream("1h");
  const raised = retentionStream("3h");
  const lowered = retentionStream("10m");
  const panes = async () =>
    (await store.panes("s", raised.counterMetas[0], { fromMs: 0, toMs: 8.64e15 }))
      .map((pane) => (pane - T0) / MINUTE);
  const write = async (definition: ReturnType<typeof retentionStream>) => {
    await ingestItems(definition, [{ ok: true as const, value: {} }], { store, nowMs: clock.now });
  };
  const sweep = (definition: ReturnType<typeof retentionStream>) =>
    store.closeWindows("s", definition.counterMetas, {
      latenessMs: definition.latenessMs,
      idleMs: definition.idleMs,
    });
  // Window 0 written and closed under 1h.
  await write(before);
  clock.now = T0 + 2 * MINUTE;
  await sweep(before);
  // Then retention is raised to 3h: window 3 written and closed under it, window 0 swept again.
  clock.now = T0 + 3 * MINUTE;
  await write(raised);
  clock.now = T0 + 5 * MINUTE;
  await sweep(raised);
  assert.deepEqual(await panes(), [0, 3]);
  // Past 1h + 1m + 30s after window 0's last write: gone, as then.
  clock.now = T0 + 75 * MINUTE;
  await sweep(raised);
  assert.deepEqual(await panes(), [3], "a window closed before keeps the life it had then");
  // Lowered to 10m: window 3 keeps the 3h it was given.
  await sweep(lowered);
  clock.now = T0 + 2 * 60 * MINUTE;
  await sweep(lowered);
  assert.deepEqual(await panes(), [3], "a lowered retention shortens no life already given");
  // Past 3h + 1m + 30s after its last write (at 3 min): gone.
  clock.now = T0 + 3 * MINUTE + Math.ceil((3 * 60 * MINUTE + 90_000) * 9 / 8) + MINUTE;
  assert.deepEqual(await panes(), []);
}

Deno.test("MemoryStore: a raised retention keeps longer only what is written or closed after it; a lowered one shortens no life given", async () => {
  const clock = { now: T0 };
  await retentionScenario(new MemoryStore({ now: () => clock.now }), clock);
});

Deno.test("MemoryStore: the data of a deleted or re-created API stream's old incarnation goes at the next sweep, so create–ingest–delete churn holds nothing of it", async () => {
  const definitions = new MemoryDefinitionStore();
  const store = new MemoryStore({ definitions, sweepEveryMs: 0 });
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  const app = createApp({ streams, store, keys: await KeyRing.parse("") });
  const send = async (method: string, path: string, body?: unknown) => {
    const response = await app.request(path, {
      method,
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    await response.body?.cancel();
    return response.status;
  };
  const definition = {
    dedupe: { field: "id" },
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  const events = (from: number) => [0, 1, 2].map((i) => ({ id: `e${from + i}` }));
  assert.equal(await send("PUT", "/v1/streams/other", definition), 201);
  for (let round = 1; round <= 3; round++) {
    assert.equal(await send("PUT", "/v1/streams/churn", definition), 201);
    assert.equal(await send("POST", "/v1/streams/churn/events", events(round * 10)), 202);
    assert.equal(store.heldIds(`churn#${round}`), 3, `incarnation ${round} holds its ids`);
    assert.equal(await send("DELETE", "/v1/streams/churn"), 204);
    // Any batch runs the store's sweep.
    assert.equal(await send("POST", "/v1/streams/other/events", events(round * 10)), 202);
    assert.equal(store.heldIds(`churn#${round}`), 0, `deleted incarnation ${round} holds nothing`);
  }
  assert.equal(store.heldIds("other#1"), 9, "a live stream keeps its ids");
});

Deno.test("MemoryStore: an API stream created again after its old incarnation's data went continues its log after the old log's last id, kept only until the clock passed it", async () => {
  const clock = { now: T0 };
  const now = () => clock.now;
  const definitions = new MemoryDefinitionStore();
  const store = new MemoryStore({ now, definitions, sweepEveryMs: 0 });
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions, now });
  const app = createApp({ streams, store, keys: await KeyRing.parse(""), now });
  const send = async (method: string, path: string, body?: unknown) => {
    const response = await app.request(path, {
      method,
      headers: { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    await response.body?.cancel();
    return response.status;
  };
  const definition = { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } };
  const processed = { type: "event.processed" as const, timeMs: T0, event: {} };
  assert.equal(await send("PUT", "/v1/streams/other", definition), 201);
  assert.equal(await send("PUT", "/v1/streams/churn", definition), 201);
  await store.appendLog("churn#1", [processed, processed]);
  assert.equal(await store.lastLogId("churn#1"), `${T0}-1`);
  assert.equal(await send("DELETE", "/v1/streams/churn"), 204);
  // Any batch runs the store's sweep: the old incarnation's log goes, its last id is kept.
  assert.equal(await send("POST", "/v1/streams/other/events", [{}]), 202);
  assert.equal(await store.lastLogId("churn#1"), null);
  assert.equal(await send("PUT", "/v1/streams/churn", definition), 201);
  await store.appendLog("churn#2", [processed]);
  assert.equal(await store.lastLogId("churn#2"), `${T0}-2`);
  assert.equal(store.logClocks, 2);
  // Deleted again, once the clock passed its last id: nothing of it is kept.
  assert.equal(await send("DELETE", "/v1/streams/churn"), 204);
  clock.now += 1;
  assert.equal(await send("POST", "/v1/streams/other/events", [{}]), 202);
  assert.equal(await store.lastLogId("churn#2"), null);
  assert.equal(store.logClocks, 1);
});
