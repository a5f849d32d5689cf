import assert from "node:assert/strict";
import fc from "fast-check";
import { compileConfig, type CompiledStream } from "../../src/config/mod.ts";
import { ingestItems, type IngestReply, MAX_ID_LENGTH } from "../../src/ingest/pipeline.ts";
import { type BodyItem, RejectedCounts } from "../../src/ingest/mod.ts";
import { listWindows, type WindowRow } from "../../src/query/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import type { AppliedBatch, IngestObserver } from "../../src/fanout/types.ts";
import {
  cellUpdatesOf,
  type StoreBatch,
  StoreRefusedError,
  StoreUnavailableError,
} from "../../src/store/types.ts";
import { CHECK_BUDGET_MESSAGE, type Event, patternCompileSize } from "../../src/validate/mod.ts";
import {
  MAX_REQUEST_PATTERN_COMPILE,
  PATTERN_COMPILE_OVERHEAD,
  patternBudgetCutMessage,
  requestPatternBudgetMessage,
} from "../../src/transform/mod.ts";
import { counterCell, type WindowSpec } from "../../src/window/mod.ts";

const MINUTE = 60_000;
/** Start of the time range events fall in: 2026-01-01T00:00:00Z. */
const T0 = Date.parse("2026-01-01T00:00:00Z");
/** Receive time of every request: ten minutes after T0. */
const NOW = T0 + 10 * MINUTE;

/** A stream with every window kind and aggregate; lateness 2m, events in [T0, NOW). */
const CONFIG = {
  streams: {
    orders: {
      schema: {
        type: "object",
        properties: {
          id: { type: ["string", "number", "boolean", "object", "null"] },
          ts: { type: ["string", "number"] },
          country: { type: "string" },
          amount: { type: ["number", "string"] },
          customer: { type: "string" },
          skip: { type: "boolean" },
        },
      },
      time: { field: "ts", lateness: "2m", maxFuture: "5m" },
      dedupe: { field: "id", ttl: "1h" },
      transform: [{ filter: "!has(event.skip) || !event.skip" }],
      counters: {
        count_1m: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
        sum_hop: {
          window: { hopping: "3m", every: "2m" },
          groupBy: ["country"],
          aggregate: { sum: "amount" },
        },
        min_slide: { window: { sliding: "3m", precision: "1m" }, aggregate: { min: "amount" } },
        max_2m: { window: { tumbling: "2m" }, groupBy: ["country"], aggregate: { max: "amount" } },
        avg_hop: { window: { hopping: "4m", every: "1m" }, aggregate: { avg: "amount" } },
        distinct_slide: {
          window: { sliding: "2m", precision: "30s" },
          groupBy: ["country"],
          aggregate: { distinct: "customer" },
        },
      },
    },
  },
};

function compileStream(): CompiledStream {
  return compileConfig(CONFIG).get("orders")!;
}

function newStore(): MemoryStore {
  return new MemoryStore({ now: () => NOW });
}

function items(...values: unknown[]): BodyItem[] {
  return values.map((value) => ({ ok: true, value }));
}

/** Every row of every counter, in a fixed order. */
async function readAll(stream: CompiledStream, store: MemoryStore) {
  const out: Record<string, WindowRow[]> = {};
  for (const counter of stream.counters) {
    out[counter.name] = await listWindows(stream, counter, { store, nowMs: NOW }, {
      limit: 1_000_000,
    });
  }
  return out;
}

async function rowsOf(stream: CompiledStream, store: MemoryStore, counter: string) {
  return (await readAll(stream, store))[counter].map((row) => ({
    start: row.start,
    group: row.group,
    value: row.value,
  }));
}

function at(ms: number): string {
  return new Date(ms).toISOString();
}

Deno.test("ingestItems() applies valid events and counts them in every counter", async () => {
  const stream = compileStream();
  const store = newStore();
  const reply = await ingestItems(
    stream,
    items(
      { id: "a", ts: T0 + 5_000, country: "DE", amount: 10, customer: "x" },
      { id: "b", ts: at(T0 + 30_000), country: "DE", amount: 4, customer: "y" },
      { id: "c", ts: T0 + 70_000, country: "FR", amount: 1, customer: "x" },
    ),
    { store: store, nowMs: NOW },
  );
  assert.deepEqual(reply, { accepted: 3, duplicates: 0, late: 0, filtered: 0, rejected: [] });
  assert.deepEqual(await rowsOf(stream, store, "count_1m"), [
    { start: at(T0 + MINUTE), group: { country: "FR" }, value: 1 },
    { start: at(T0), group: { country: "DE" }, value: 2 },
  ]);
  assert.deepEqual(await rowsOf(stream, store, "max_2m"), [
    { start: at(T0), group: { country: "DE" }, value: 10 },
    { start: at(T0), group: { country: "FR" }, value: 1 },
  ]);
  const stats = await store.stats("orders", stream.counterMetas);
  assert.equal(stats.accepted, 3);
  assert.equal(stats.applied, 3);
  assert.equal(stats.watermark, T0 + 70_000);
});

Deno.test("ingestItems() runs CEL arithmetic that mixes int literals with whole and fractional JSON numbers", async () => {
  const stream = compileConfig({
    streams: {
      orders: {
        time: { field: "ts" },
        transform: [
          { filter: "event.amount * 2 > 20" },
          {
            set: {
              doubled: "event.amount * 2",
              next: "event.count + 1",
              big: "event.amount > 100",
            },
          },
        ],
        counters: {
          doubled: { window: { tumbling: "1m" }, aggregate: { sum: "doubled" } },
          next: { window: { tumbling: "1m" }, aggregate: { sum: "next" } },
          by_size: { window: { tumbling: "1m" }, groupBy: ["big"], aggregate: "count" },
        },
      },
    },
  }).get("orders")!;
  const store = newStore();
  const reply = await ingestItems(
    stream,
    items(
      { ts: T0, amount: 150, count: 3 },
      { ts: T0, amount: 12.5, count: 2.5 },
      { ts: T0, amount: 5, count: 1 },
    ),
    { store, nowMs: NOW },
  );
  assert.deepEqual(reply, { accepted: 3, duplicates: 0, late: 0, filtered: 1, rejected: [] });
  assert.deepEqual((await rowsOf(stream, store, "doubled")).map((row) => row.value), [325]);
  assert.deepEqual((await rowsOf(stream, store, "next")).map((row) => row.value), [7.5]);
  assert.deepEqual(
    (await rowsOf(stream, store, "by_size")).map((row) => [row.group, row.value]),
    [[{ big: false }, 1], [{ big: true }, 1]],
  );
});

Deno.test("ingestItems() counts a repeated id within one batch once", async () => {
  const stream = compileStream();
  const store = newStore();
  const reply = await ingestItems(
    stream,
    items(
      { id: "a", ts: T0, amount: 1 },
      { id: "a", ts: T0, amount: 100 },
      { id: "b", ts: T0, amount: 2 },
    ),
    { store: store, nowMs: NOW },
  );
  assert.deepEqual(reply, { accepted: 3, duplicates: 1, late: 0, filtered: 0, rejected: [] });
  assert.deepEqual(await rowsOf(stream, store, "count_1m"), [
    { start: at(T0), group: { country: null }, value: 2 },
  ]);
  assert.deepEqual((await rowsOf(stream, store, "max_2m"))[0].value, 2);
});

Deno.test("ingestItems() counts a repeated id across batches once", async () => {
  const stream = compileStream();
  const store = newStore();
  await ingestItems(stream, items({ id: 7, ts: T0, amount: 1 }), { store: store, nowMs: NOW });
  const reply = await ingestItems(
    stream,
    items({ id: 7, ts: T0, amount: 5 }, { id: "7", ts: T0, amount: 9 }),
    { store: store, nowMs: NOW },
  );
  assert.deepEqual(reply, { accepted: 2, duplicates: 2, late: 0, filtered: 0, rejected: [] });
  assert.deepEqual(await rowsOf(stream, store, "count_1m"), [
    { start: at(T0), group: { country: null }, value: 1 },
  ]);
  const stats = await store.stats("orders", stream.counterMetas);
  assert.equal(stats.duplicates, 2);
  assert.equal(stats.accepted, 3);
  assert.equal(stats.applied, 1);
});

Deno.test("ingestItems() counts events without an id every time", async () => {
  const stream = compileStream();
  const store = newStore();
  const reply = await ingestItems(stream, items({ ts: T0 }, { ts: T0 }, { id: null, ts: T0 }), {
    store: store,
    nowMs: NOW,
  });
  assert.equal(reply.duplicates, 0);
  assert.equal((await rowsOf(stream, store, "count_1m"))[0].value, 3);
});

Deno.test("ingestItems() acknowledges late events but leaves them out of the windows", async () => {
  const stream = compileStream();
  const store = newStore();
  const watermark = T0 + 6 * MINUTE;
  const reply = await ingestItems(
    stream,
    items(
      { id: "new", ts: watermark, country: "DE" },
      { id: "late", ts: watermark - 2 * MINUTE - 1, country: "DE" },
      { id: "edge", ts: watermark - 2 * MINUTE, country: "DE" },
    ),
    { store: store, nowMs: NOW },
  );
  assert.deepEqual(reply, { accepted: 3, duplicates: 0, late: 1, filtered: 0, rejected: [] });
  assert.deepEqual(await rowsOf(stream, store, "count_1m"), [
    { start: at(watermark), group: { country: "DE" }, value: 1 },
    { start: at(watermark - 2 * MINUTE), group: { country: "DE" }, value: 1 },
  ]);
  const stats = await store.stats("orders", stream.counterMetas);
  assert.equal(stats.late, 1);
  assert.equal(stats.applied, 2);
  assert.equal(stats.watermark, watermark);
  const again = await ingestItems(stream, items({ id: "later", ts: T0, country: "DE" }), {
    store: store,
    nowMs: NOW,
  });
  assert.equal(again.late, 1);
});

Deno.test("ingestItems() rejects events too far in the future", async () => {
  const stream = compileStream();
  const store = newStore();
  const limit = NOW + 5 * MINUTE;
  const reply = await ingestItems(
    stream,
    items({ id: "ok", ts: limit }, { id: "future", ts: limit + 1 }),
    { store: store, nowMs: NOW },
  );
  assert.equal(reply.accepted, 1);
  assert.deepEqual(reply.rejected, [{
    index: 1,
    errors: [{
      path: "ts",
      message: `Event time ${
        at(limit + 1)
      } is too far in the future: more than the stream's time.maxFuture (5m) ahead of the clock`,
    }],
  }]);
  const stats = await store.stats("orders", stream.counterMetas);
  assert.equal(stats.watermark, limit);
});

Deno.test("ingestItems() names the stream's own time.maxFuture, as the shortest exact duration text (90s is 1m30s), when an event is past it", async () => {
  const orders = CONFIG.streams.orders;
  const stream = compileConfig({
    streams: { orders: { ...orders, time: { ...orders.time, maxFuture: "90s" } } },
  }).get("orders")!;
  const reply = await ingestItems(stream, items({ id: "future", ts: NOW + 90_001 }), {
    store: newStore(),
    nowMs: NOW,
  });
  assert.deepEqual(reply.rejected, [{
    index: 0,
    errors: [{
      path: "ts",
      message: `Event time ${
        at(NOW + 90_001)
      } is too far in the future: more than the stream's time.maxFuture (1m30s) ahead of the clock`,
    }],
  }]);
});

Deno.test("ingestItems() rejects an event a window would hold that starts before the earliest date", async () => {
  const stream = compileConfig({
    streams: {
      edge: {
        time: { field: "ts", lateness: "1m" },
        counters: {
          t: { window: { tumbling: "1m" }, aggregate: "count" },
          h: { window: { hopping: "1m", every: "20s" }, aggregate: "count" },
          s: { window: { session: "30s" }, aggregate: "count" },
        },
      },
    },
  }).get("edge")!;
  const store = newStore();
  // The earliest time a Date holds: the tumbling window and the session start there, but the
  // hopping windows holding it start 20 s and 40 s before it, which no date can write.
  const earliest = -8.64e15;
  const reply = await ingestItems(
    stream,
    items(
      { ts: earliest },
      { ts: earliest + 20_000 },
      { ts: earliest + 40_000 },
      { ts: earliest + 600_000 },
    ),
    { store, nowMs: NOW },
  );
  const message = (ts: number) =>
    `Event time ${at(ts)} is too early: counter 'h' would hold it in a window starting before ${
      at(earliest)
    }, the earliest time edgestream can write`;
  assert.deepEqual(reply.rejected, [
    { index: 0, errors: [{ path: "ts", message: message(earliest) }] },
    { index: 1, errors: [{ path: "ts", message: message(earliest + 20_000) }] },
  ]);
  assert.equal(reply.accepted, 2);
  // What closes is written as dates: the admin sweep's reply and window.closed payloads write
  // them (a window starting 40 s before the earliest date made the sweep answer 500).
  const closed = await store.closeWindows("edge", stream.counterMetas, { latenessMs: 60_000 });
  assert.ok(closed.length > 0);
  for (const window of closed) {
    assert.equal(new Date(window.start).toISOString(), at(window.start));
    assert.ok(window.start >= earliest, `${window.counter} ${window.start}`);
  }
});

Deno.test("ingestItems() rejects an unreadable event time", async () => {
  const stream = compileStream();
  const reply = await ingestItems(stream, items({ ts: "soon" }), { store: newStore(), nowMs: NOW });
  assert.equal(reply.accepted, 0);
  assert.equal(reply.rejected.length, 1);
  assert.equal(reply.rejected[0].errors[0].path, "ts");
  assert.match(
    reply.rejected[0].errors[0].message,
    /^Event time must be ISO-8601 in its extended form/,
  );
});

Deno.test("ingestItems() uses the receive time for events without a time field", async () => {
  const stream = compileConfig({
    streams: { s: { counters: { c: { window: { tumbling: "1m" }, aggregate: "count" } } } },
  }).get("s")!;
  const store = newStore();
  await ingestItems(stream, items({ a: 1 }), { store: store, nowMs: NOW + 1_234 });
  assert.equal((await store.stats("s", [])).watermark, NOW + 1_234);
});

Deno.test("ingestItems() rejects a dedupe id that is not a string or number", async () => {
  const stream = compileStream();
  const store = newStore();
  const reply = await ingestItems(
    stream,
    items({ id: true, ts: T0 }, { id: { v: 1 }, ts: T0 }, {
      id: "x".repeat(MAX_ID_LENGTH + 1),
      ts: T0,
    }, { id: "a\ud800", ts: T0 }),
    { store: store, nowMs: NOW },
  );
  assert.equal(reply.accepted, 0);
  assert.deepEqual(reply.rejected, [
    {
      index: 0,
      errors: [{ path: "id", message: "Dedupe id must be a string or a number, got boolean" }],
    },
    {
      index: 1,
      errors: [{ path: "id", message: "Dedupe id must be a string or a number, got object" }],
    },
    {
      index: 2,
      errors: [{ path: "id", message: "Dedupe id is 257 characters; at most 256 are allowed" }],
    },
    {
      index: 3,
      errors: [{
        path: "id",
        message: "Dedupe id must be well-formed Unicode (it has a lone surrogate)",
      }],
    },
  ]);
  const accepted = await ingestItems(stream, items({ id: "x".repeat(MAX_ID_LENGTH), ts: T0 }), {
    store: store,
    nowMs: NOW,
  });
  assert.equal(accepted.accepted, 1);
});

Deno.test("ingestItems() rejects a dedupe id out of a number's range (1e400), which would be one id with every other", async () => {
  // No schema: any JSON value reaches the dedupe step.
  const stream = compileConfig({
    streams: { s: { time: { field: "ts" }, dedupe: { field: "id", ttl: "1h" } } },
  }).get("s")!;
  const store = newStore();
  const parsed = JSON.parse(`[{"id": 1e400, "ts": ${T0}}, {"id": -2e400, "ts": ${T0}}]`);
  const reply = await ingestItems(
    stream,
    [
      ...items({ id: "Infinity", ts: T0 }),
      ...parsed.map((value: unknown) => ({ ok: true, value })),
    ],
    { store, nowMs: NOW },
  );
  // Refused as every event holding a number out of range is (see validateEvent).
  const error = {
    path: "id",
    message: "Number is out of range (JSON reads 1e400 as Infinity, which it passes on as null)",
  };
  assert.deepEqual([reply.accepted, reply.duplicates], [1, 0]);
  assert.deepEqual(reply.rejected, [{ index: 1, errors: [error] }, { index: 2, errors: [error] }]);
});

Deno.test("ingestItems() counts filtered events as accepted and filtered, not in windows", async () => {
  const stream = compileStream();
  const store = newStore();
  const reply = await ingestItems(
    stream,
    items({ id: "a", ts: T0, skip: true }, { id: "b", ts: T0, skip: false }),
    { store: store, nowMs: NOW },
  );
  assert.deepEqual(reply, { accepted: 2, duplicates: 0, late: 0, filtered: 1, rejected: [] });
  assert.equal((await rowsOf(stream, store, "count_1m"))[0].value, 1);
  const onlyFiltered = await ingestItems(stream, items({ ts: T0, skip: true }), {
    store: store,
    nowMs: NOW,
  });
  assert.deepEqual(onlyFiltered, {
    accepted: 1,
    duplicates: 0,
    late: 0,
    filtered: 1,
    rejected: [],
  });
  const stats = await store.stats("orders", stream.counterMetas);
  assert.equal(stats.filtered, 2);
  assert.equal(stats.accepted, 3);
  assert.equal(stats.applied, 1);
  // A filtered event's id is not remembered.
  const retry = await ingestItems(stream, items({ id: "a", ts: T0 }), { store: store, nowMs: NOW });
  assert.equal(retry.duplicates, 0);
});

Deno.test("ingestItems() lists an event's first 10 counter errors and how many more, as it does its schema errors", async () => {
  const counters = Object.fromEntries(
    Array.from({ length: 12 }, (_, i) => [
      `sum${i}`,
      { window: { tumbling: "1m" }, aggregate: { sum: "amount" } },
    ]),
  );
  const stream = compileConfig({ streams: { many: { counters } } }).get("many")!;
  const reply = await ingestItems(stream, items({ amount: "12" }), {
    store: newStore(),
    nowMs: NOW,
  });
  assert.equal(reply.rejected.length, 1);
  const { errors } = reply.rejected[0];
  assert.equal(errors.length, 11);
  assert.match(errors[9].message, /^Counter 'sum9' \(sum\) needs a number/);
  assert.deepEqual(errors[10], { path: "", message: "and 2 more errors not listed" });
});

Deno.test("ingestItems() stores nothing of a rejected event", async () => {
  const stream = compileStream();
  const store = newStore();
  // Valid for the schema, but "12" is not a number for the sum, min, max and avg counters.
  const reply = await ingestItems(
    stream,
    items({ id: "a", ts: T0 + 5 * MINUTE, country: "DE", amount: "12", customer: "x" }),
    { store: store, nowMs: NOW },
  );
  assert.equal(reply.accepted, 0);
  assert.equal(reply.rejected.length, 1);
  assert.deepEqual(reply.rejected[0].errors.map((error) => error.path), [
    "amount",
    "amount",
    "amount",
    "amount",
  ]);
  assert.match(reply.rejected[0].errors[0].message, /^Counter 'sum_hop' \(sum\) needs a number/);
  for (const rows of Object.values(await readAll(stream, store))) assert.deepEqual(rows, []);
  const stats = await store.stats("orders", stream.counterMetas);
  assert.equal(stats.accepted, 0);
  assert.equal(stats.watermark, null);
  // Its id was not consumed and its time did not move the watermark.
  const next = await ingestItems(stream, items({ id: "a", ts: T0, amount: 12 }), {
    store: store,
    nowMs: NOW,
  });
  assert.deepEqual(next, { accepted: 1, duplicates: 0, late: 0, filtered: 0, rejected: [] });
});

Deno.test("ingestItems() reports body items that failed and schema errors by index", async () => {
  const stream = compileStream();
  const store = newStore();
  const reply = await ingestItems(stream, [
    { ok: false, error: { path: "", message: "Line 1 is not valid JSON" } },
    { ok: true, value: { id: "a", ts: T0 } },
    { ok: true, value: { id: "b", country: 5 } },
    { ok: true, value: [1] },
  ], { store: store, nowMs: NOW });
  assert.equal(reply.accepted, 1);
  assert.deepEqual(reply.rejected.map((rejection) => rejection.index), [0, 2, 3]);
  assert.deepEqual(reply.rejected[0].errors, [{ path: "", message: "Line 1 is not valid JSON" }]);
  assert.equal(reply.rejected[1].errors[0].path, "country");
  assert.equal(reply.rejected[2].errors[0].message, "Event must be a JSON object, got an array");
});

Deno.test("ingestItems() reports a transform failure with the step path", async () => {
  const stream = compileConfig({
    streams: { s: { transform: [{ set: { half: "event.amount / 2.0" } }] } },
  }).get("s")!;
  const reply = await ingestItems(stream, items({ amount: 3 }, {}), {
    store: newStore(),
    nowMs: NOW,
  });
  assert.equal(reply.accepted, 1);
  assert.equal(reply.rejected.length, 1);
  assert.equal(reply.rejected[0].index, 1);
  assert.equal(reply.rejected[0].errors[0].path, "transform[0].set.half");
});

/** A stream whose filter matches each event's text against the pattern the event gives. */
function patternStream(): CompiledStream {
  return compileConfig({
    streams: {
      s: {
        transform: [{ filter: "event.text.matches(event.p)" }],
        counters: { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  }).get("s")!;
}

Deno.test("ingestItems() bounds what compiling the patterns a request's events give matches() costs: the event past MAX_REQUEST_PATTERN_COMPILE and every later one are refused, the earlier applied", async () => {
  const stream = patternStream();
  // Each event its own pattern of about 4,000 instructions, matching its text (a prefix no other
  // test compiles: compiled patterns are kept between requests).
  const pattern = (index: number) =>
    `^(?:hello|pipe${String(index).padStart(3, "0")}.{0,1000}.{0,990})`;
  const size = patternCompileSize(pattern(0)) + PATTERN_COMPILE_OVERHEAD;
  const fit = Math.floor(MAX_REQUEST_PATTERN_COMPILE / size);
  // As README says: 131,072 in all, 32 more a pattern; 32 patterns of about 4,000 instructions.
  assert.deepEqual([MAX_REQUEST_PATTERN_COMPILE, PATTERN_COMPILE_OVERHEAD], [131_072, 32]);
  assert.deepEqual([size, fit], [3_996 + 32, 32]);
  const events = Array.from({ length: 40 }, (_, index) => ({ text: "hello", p: pattern(index) }));
  const store = newStore();
  const reply = await ingestItems(stream, items(...events), { store, nowMs: NOW });
  assert.equal(reply.accepted, fit);
  const message = requestPatternBudgetMessage(MAX_REQUEST_PATTERN_COMPILE);
  assert.deepEqual(reply.rejected, [
    {
      index: fit,
      errors: [{ path: "transform[0].filter", message: `Expression failed: ${message}` }],
    },
    ...Array.from({ length: 40 - fit - 1 }, (_, later) => ({
      index: fit + 1 + later,
      errors: [{ path: "", message: patternBudgetCutMessage(fit) }],
    })),
  ]);
  assert.deepEqual((await rowsOf(stream, store, "count_1m")).map((row) => row.value), [fit]);
  // The next request has a budget of its own: the refused events, sent again, are applied.
  const again = await ingestItems(stream, items(...events.slice(fit)), { store, nowMs: NOW });
  assert.deepEqual([again.accepted, again.rejected.length], [40 - fit, 0]);
});

Deno.test("patternBudgetCutMessage() is short and names the index of the event that cut the request, as the README quotes it", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const message =
    "Refused unprocessed: past the request's budget for compiling matches() patterns taken from its events (see index 32)";
  assert.equal(patternBudgetCutMessage(32), message);
  assert.ok(readme.includes(`(\`${message}\`)`));
  assert.ok(message.length < requestPatternBudgetMessage(MAX_REQUEST_PATTERN_COMPILE).length / 2);
});

Deno.test("ingestItems() charges each pattern an event gives matches() PATTERN_COMPILE_OVERHEAD beyond its instructions: a request of small distinct patterns is cut as well", async () => {
  const stream = patternStream();
  // 19 instructions each: with the overhead 51, so 2,570 fit.
  const pattern = (index: number) => `^(?:hello|small${String(index).padStart(4, "0")})$`;
  const size = patternCompileSize(pattern(0)) + PATTERN_COMPILE_OVERHEAD;
  const fit = Math.floor(MAX_REQUEST_PATTERN_COMPILE / size);
  assert.deepEqual([size, fit], [19 + 32, 2_570]);
  const events = Array.from(
    { length: fit + 2 },
    (_, index) => ({ text: "hello", p: pattern(index) }),
  );
  const reply = await ingestItems(stream, items(...events), { store: newStore(), nowMs: NOW });
  assert.equal(reply.accepted, fit);
  assert.deepEqual(reply.rejected.map((rejected) => rejected.index), [fit, fit + 1]);
});

Deno.test("ingestItems() charges a pattern an event gives matches() once it is compiled, not per event: 1,000 events of three large patterns are all applied", async () => {
  const stream = patternStream();
  const patterns = [0, 1, 2].map((index) => `^(?:hello|repeated${index}.{0,1000}.{0,990})`);
  const events = Array.from({ length: 1_000 }, (_, index) => ({
    text: "hello",
    p: patterns[index % 3],
  }));
  const reply = await ingestItems(stream, items(...events), { store: newStore(), nowMs: NOW });
  assert.deepEqual([reply.accepted, reply.rejected.length], [1_000, 0]);
});

/** 5 distinct patterns of 3,996 instructions (a prefix no other test compiles), as README has them. */
function alternatingPatterns(prefix: string): string[] {
  const patterns = [0, 1, 2, 3, 4].map((index) => `^(?:hello|${prefix}${index}.{0,1000}.{0,990})`);
  // Together past the 16,384 instructions kept compiled; each far within the request's budget.
  assert.deepEqual(patterns.map(patternCompileSize), [3_996, 3_996, 3_996, 3_996, 3_996]);
  return patterns;
}

Deno.test("ingestItems() charges a pattern an event gives matches() again once dropped from the patterns kept compiled: 5 patterns of 3,996 instructions alternating event by event are cut after 32 events", async () => {
  const stream = patternStream();
  const patterns = alternatingPatterns("altern");
  const events = Array.from({ length: 100 }, (_, index) => ({
    text: "hello",
    p: patterns[index % 5],
  }));
  const reply = await ingestItems(stream, items(...events), { store: newStore(), nowMs: NOW });
  // Each compiled again as it comes back (4 × 3,996 kept of 16,384): 32 × 4,028 fit in 131,072.
  assert.equal(reply.accepted, 32);
  assert.deepEqual(reply.rejected[0], {
    index: 32,
    errors: [{
      path: "transform[0].filter",
      message: `Expression failed: ${requestPatternBudgetMessage(MAX_REQUEST_PATTERN_COMPILE)}`,
    }],
  });
  assert.equal(reply.rejected.length, 100 - 32);
  // The message says so, and what to do, rather than that a compiled pattern costs nothing.
  const message = requestPatternBudgetMessage(MAX_REQUEST_PATTERN_COMPILE);
  assert.ok(message.includes("one dropped and used again is compiled and charged again"));
  assert.ok(message.includes("keep a request's distinct event patterns within 16384 instructions"));
  assert.ok(!message.includes("a pattern already compiled costs nothing"));
});

Deno.test("ingestItems() charges each of 5 patterns of 3,996 instructions once where each one's events come together: 100 events are all applied", async () => {
  const stream = patternStream();
  const patterns = alternatingPatterns("groupd");
  const events = Array.from({ length: 100 }, (_, index) => ({
    text: "hello",
    p: patterns[Math.floor(index / 20)],
  }));
  const reply = await ingestItems(stream, items(...events), { store: newStore(), nowMs: NOW });
  assert.deepEqual([reply.accepted, reply.rejected.length], [100, 0]);
});

Deno.test("ingestItems() answers a request that accepted none at once, the store slow, refusing or unavailable, and counts its rejected events later in one apply of no event", async () => {
  const seen: StoreBatch[] = [];
  let mode: "ok" | "slow" | "refused" | "down" = "ok";
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  class TroubledStore extends MemoryStore {
    override async applyBatch(batch: StoreBatch) {
      seen.push(batch);
      if (mode === "slow") await gate;
      if (mode === "refused") {
        throw new StoreRefusedError("WRONGTYPE Operation against a key holding the wrong kind");
      }
      if (mode === "down") {
        throw new StoreUnavailableError("Redis is unavailable (applyBatch): connection refused", {
          outcome: "not_applied",
        });
      }
      return super.applyBatch(batch);
    }
  }
  const store = new TroubledStore();
  const stream = compileStream();
  // No timer of its own in this test: flush() makes its applies.
  const rejectedCounts = new RejectedCounts(store, { now: () => NOW, intervalMs: 3_600_000 });
  const options = { store, nowMs: NOW, rejectedCounts };
  const answers: Record<string, string> = {};
  for (const troubled of ["slow", "refused", "down"] as const) {
    mode = troubled;
    // Answered while the store would hold or fail an apply (a slow store held the 400 for as long).
    let timer: ReturnType<typeof setTimeout> | undefined;
    answers[troubled] = await Promise.race([
      ingestItems(stream, items([1], { ts: "bad" }), options).then(
        (reply) => `${reply.accepted} accepted, ${reply.rejected.length} rejected`,
        (error) => `thrown: ${error.name}`,
      ),
      new Promise<string>((resolve) => timer = setTimeout(() => resolve("unanswered"), 2_000)),
    ]);
    clearTimeout(timer);
  }
  assert.deepEqual(answers, {
    slow: "0 accepted, 2 rejected",
    refused: "0 accepted, 2 rejected",
    down: "0 accepted, 2 rejected",
  });
  assert.equal(seen.length, 0, "no store call on the request's path");
  mode = "ok";
  release();
  await rejectedCounts.flush();
  assert.deepEqual(
    seen.map((batch) => [batch.stream, batch.events.length, batch.requests]),
    [["orders", 0, [{ events: 0, filtered: 0, rejected: 6 }]]],
  );
  const stats = await store.stats("orders", stream.counterMetas);
  assert.deepEqual([stats.accepted, stats.applied, stats.rejected], [0, 0, 6]);
  // A count whose apply fails is lost, its error kept from every request.
  mode = "refused";
  await ingestItems(stream, items({ ts: "bad" }), options);
  await rejectedCounts.flush();
  mode = "ok";
  await rejectedCounts.flush();
  assert.equal(seen.length, 2);
  assert.equal((await store.stats("orders", stream.counterMetas)).rejected, 6);
  // Without a RejectedCounts, nothing is counted, nothing applied.
  await ingestItems(stream, items({ ts: "bad" }), { store, nowMs: NOW });
  assert.equal(seen.length, 2);
});

Deno.test("ingestItems() names an idempotent request by the SHA-256 hex of its key and of its body", async () => {
  // Stored replies outlive a deploy: the names must stay what earlier versions stored them under.
  const seen: StoreBatch[] = [];
  class CapturingStore extends MemoryStore {
    override applyBatch(batch: StoreBatch) {
      seen.push(batch);
      return super.applyBatch(batch);
    }
  }
  const hex = async (text: string) =>
    [...new Uint8Array(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text)))]
      .map((byte) => byte.toString(16).padStart(2, "0")).join("");
  const store = new CapturingStore();
  const body = '{"ts":1767225600000,"country":"DE","note":"Grüße"}';
  await ingestItems(compileStream(), items({ ts: T0 }), {
    store,
    nowMs: NOW,
    idempotency: { key: "order-42", body },
  });
  await ingestItems(compileStream(), items({ ts: T0 }), {
    store,
    nowMs: NOW,
    idempotency: { key: "order-43", body: new TextEncoder().encode(body) },
  });
  const claims = seen.map((batch) => batch.requests![0].idempotency!);
  assert.equal(claims[0].keyHash, await hex("order-42"));
  assert.equal(claims[0].bodyHash, await hex(body));
  assert.equal(claims[1].keyHash, await hex("order-43"));
  assert.equal(claims[1].bodyHash, await hex(body));
});

Deno.test("ingestItems() passes the store's failure on and acknowledges nothing", async () => {
  class DownStore extends MemoryStore {
    override applyBatch(_batch: StoreBatch): never {
      throw new StoreUnavailableError("Store timed out");
    }
  }
  await assert.rejects(
    ingestItems(compileStream(), items({ ts: T0 }), { store: new DownStore(), nowMs: NOW }),
    StoreUnavailableError,
  );
});

// ---------------------------------------------------------------------------
// Properties: batching does not change results, and results match a naive model.

interface GeneratedEvent {
  id?: number | string;
  ts: number;
  country?: string;
  amount?: number | string;
  customer?: string;
  skip?: boolean;
}

const eventArbitrary: fc.Arbitrary<GeneratedEvent> = fc.record({
  id: fc.oneof(
    fc.integer({ min: 0, max: 12 }),
    fc.integer({ min: 0, max: 12 }).map(String),
  ),
  // Mostly on a 15-second grid, so events land on window edges and exactly at the lateness bound.
  ts: fc.oneof(
    { weight: 3, arbitrary: fc.integer({ min: 0, max: 39 }).map((step) => T0 + step * 15_000) },
    { weight: 1, arbitrary: fc.integer({ min: T0, max: NOW - 1 }) },
  ),
  country: fc.constantFrom("DE", "FR", "US"),
  amount: fc.oneof(
    { weight: 8, arbitrary: fc.integer({ min: -1_000, max: 1_000 }) },
    { weight: 1, arbitrary: fc.constant("bad") },
  ),
  customer: fc.constantFrom("ann", "bob", "cy", "dee"),
  skip: fc.boolean(),
}, { requiredKeys: ["ts"] }).map((event) =>
  event.skip === false ? { ...event, skip: undefined } : event
)
  .map((event) => JSON.parse(JSON.stringify(event)));

/** Events plus cut points that split them into consecutive batches. */
const scenarioArbitrary = fc.array(eventArbitrary, { minLength: 1, maxLength: 40 }).chain((
  events,
) =>
  fc.tuple(
    fc.constant(events),
    fc.uniqueArray(fc.integer({ min: 1, max: Math.max(1, events.length - 1) }), {
      maxLength: events.length,
    }).map((cuts) => cuts.filter((cut) => cut < events.length).sort((a, b) => a - b)),
  )
);

function split<T>(list: T[], cuts: number[]): T[][] {
  const batches: T[][] = [];
  let from = 0;
  for (const cut of [...cuts, list.length]) {
    batches.push(list.slice(from, cut));
    from = cut;
  }
  return batches;
}

function sumReplies(replies: IngestReply[]) {
  return replies.reduce(
    (total, reply) => ({
      accepted: total.accepted + reply.accepted,
      duplicates: total.duplicates + reply.duplicates,
      late: total.late + reply.late,
      filtered: total.filtered + reply.filtered,
      rejected: total.rejected + reply.rejected.length,
    }),
    { accepted: 0, duplicates: 0, late: 0, filtered: 0, rejected: 0 },
  );
}

Deno.test("ingestItems() gives the same counters and stats however the events are batched", async () => {
  const stream = compileStream();
  await fc.assert(
    fc.asyncProperty(scenarioArbitrary, async ([events, cuts]) => {
      const whole = newStore();
      const wholeCounts = new RejectedCounts(whole, { now: () => NOW, intervalMs: 3_600_000 });
      const wholeReply = await ingestItems(stream, items(...events), {
        store: whole,
        nowMs: NOW,
        rejectedCounts: wholeCounts,
      });
      await wholeCounts.flush();
      const batched = newStore();
      const rejectedCounts = new RejectedCounts(batched, { now: () => NOW, intervalMs: 3_600_000 });
      const replies: IngestReply[] = [];
      for (const batch of split(events, cuts)) {
        replies.push(
          await ingestItems(stream, items(...batch), {
            store: batched,
            nowMs: NOW,
            rejectedCounts,
          }),
        );
      }
      await rejectedCounts.flush();
      const { rejected, ...counts } = wholeReply;
      assert.deepEqual(sumReplies(replies), { ...counts, rejected: rejected.length });
      assert.deepEqual(await readAll(stream, batched), await readAll(stream, whole));
      // Rejected events count in a request that accepted none too: no stat depends on batching.
      assert.deepEqual(
        await batched.stats("orders", stream.counterMetas),
        await whole.stats("orders", stream.counterMetas),
      );
    }),
    { numRuns: 150 },
  );
});

/** Window starts containing `timeMs`, found by scanning every candidate start. */
function naiveWindows(timeMs: number, spec: WindowSpec): number[] {
  const hop = spec.kind === "tumbling"
    ? spec.sizeMs
    : spec.kind === "hopping"
    ? spec.everyMs
    : spec.kind === "sliding"
    ? spec.precisionMs
    : 1;
  const starts: number[] = [];
  const first = Math.floor((timeMs - spec.sizeMs) / hop) * hop;
  for (let start = first; start <= timeMs; start += hop) {
    if (start <= timeMs && timeMs < start + spec.sizeMs) starts.push(start);
  }
  return starts;
}

interface ModelCell {
  count: number;
  values: number[];
  distinct: Set<string>;
}

/** Recomputes replies, stats and every window from scratch, one event at a time. */
function naiveModel(stream: CompiledStream, batches: GeneratedEvent[][]) {
  const seen = new Set<string>();
  let watermark: number | null = null;
  const stats = { accepted: 0, applied: 0, duplicates: 0, late: 0, filtered: 0, rejected: 0 };
  const cells = new Map<string, Map<string, ModelCell>>();
  for (const counter of stream.counters) cells.set(counter.name, new Map());
  for (const batch of batches) {
    for (const event of batch) {
      // The filter runs before the counters see the amount.
      if (event.skip) {
        stats.accepted += 1;
        stats.filtered += 1;
        continue;
      }
      if (typeof event.amount === "string") {
        stats.rejected += 1;
        continue;
      }
      stats.accepted += 1;
      if (event.id !== undefined) {
        const id = String(event.id);
        if (seen.has(id)) {
          stats.duplicates += 1;
          continue;
        }
        seen.add(id);
      }
      if (watermark !== null && event.ts < watermark - stream.latenessMs) {
        stats.late += 1;
        continue;
      }
      watermark = Math.max(watermark ?? -Infinity, event.ts);
      stats.applied += 1;
      for (const counter of stream.counters) {
        const field = counter.aggregate.kind === "count" ? undefined : counter.aggregate.field;
        const value = field === undefined ? undefined : event[field as keyof GeneratedEvent];
        if (field !== undefined && value === undefined) continue;
        const group = counter.groupBy.length === 0 ? {} : { country: event.country ?? null };
        for (const start of naiveWindows(event.ts, counter.window)) {
          const key = JSON.stringify([start, group]);
          const cell = cells.get(counter.name)!.get(key) ??
            { count: 0, values: [], distinct: new Set<string>() };
          cells.get(counter.name)!.set(key, cell);
          cell.count += 1;
          if (typeof value === "number") cell.values.push(value);
          if (typeof value === "string") cell.distinct.add(value);
        }
      }
    }
  }
  const windows: Record<
    string,
    Array<{ start: number; group: unknown; value: number; final: boolean }>
  > = {};
  for (const counter of stream.counters) {
    windows[counter.name] = [...cells.get(counter.name)!].map(([key, cell]) => {
      const [start, group] = JSON.parse(key);
      const kind = counter.aggregate.kind;
      const value = kind === "count"
        ? cell.count
        : kind === "sum"
        ? cell.values.reduce((a, b) => a + b, 0)
        : kind === "min"
        ? Math.min(...cell.values)
        : kind === "max"
        ? Math.max(...cell.values)
        : kind === "avg"
        ? cell.values.reduce((a, b) => a + b, 0) / cell.values.length
        : cell.distinct.size;
      const final = watermark !== null &&
        start + counter.window.sizeMs <= watermark - stream.latenessMs;
      return { start, group, value, final };
    }).sort((a, b) =>
      a.start - b.start || JSON.stringify(a.group).localeCompare(JSON.stringify(b.group))
    );
  }
  return { stats, watermark, windows };
}

Deno.test("ingestItems() with the memory store matches a naive recomputation", async () => {
  const stream = compileStream();
  await fc.assert(
    fc.asyncProperty(scenarioArbitrary, async ([events, cuts]) => {
      const batches = split(events, cuts);
      const model = naiveModel(stream, batches);
      const store = newStore();
      const rejectedCounts = new RejectedCounts(store, { now: () => NOW, intervalMs: 3_600_000 });
      const replies: IngestReply[] = [];
      for (const batch of batches) {
        replies.push(
          await ingestItems(stream, items(...batch), { store, nowMs: NOW, rejectedCounts }),
        );
      }
      // The rejected events of batches that accepted none, counted off their requests' path.
      await rejectedCounts.flush();
      const { applied: _, ...replyStats } = model.stats;
      assert.deepEqual(sumReplies(replies), replyStats);
      const stats = await store.stats("orders", stream.counterMetas);
      assert.equal(stats.watermark, model.watermark);
      assert.equal(stats.accepted, model.stats.accepted);
      assert.equal(stats.applied, model.stats.applied);
      assert.equal(stats.duplicates, model.stats.duplicates);
      assert.equal(stats.late, model.stats.late);
      assert.equal(stats.filtered, model.stats.filtered);
      assert.equal(stats.rejected, model.stats.rejected);
      const actual = await readAll(stream, store);
      for (const counter of stream.counters) {
        const rows = actual[counter.name].map((row) => ({
          start: Date.parse(row.start),
          group: row.group,
          value: row.value,
          final: row.final,
        })).sort((a, b) =>
          a.start - b.start || JSON.stringify(a.group).localeCompare(JSON.stringify(b.group))
        );
        assert.deepEqual(rows, model.windows[counter.name], counter.name);
      }
    }),
    { numRuns: 150 },
  );
});

Deno.test("ingestItems() hands the store each applied event's counter updates as columns, as counterCell makes them", async () => {
  const stream = compileStream();
  const width = stream.counters.length;
  await fc.assert(
    fc.asyncProperty(fc.array(eventArbitrary, { minLength: 1, maxLength: 40 }), async (events) => {
      const store = newStore();
      const batches: StoreBatch[] = [];
      const recording = Object.assign(Object.create(store), {
        applyBatch(batch: StoreBatch) {
          batches.push(batch);
          return store.applyBatch(batch);
        },
      }) as MemoryStore;
      const observed: AppliedBatch[] = [];
      await ingestItems(stream, items(...events), {
        store: recording,
        nowMs: NOW,
        observers: [(batch) => observed.push(batch)],
      });
      for (const batch of batches) {
        // Refused events (a counter's error after others were written) leave no entries.
        assert.equal(batch.updates?.groups.length ?? 0, batch.events.length * width);
        batch.events.forEach((event, e) => {
          const expected = stream.counters.map((counter) =>
            counterCell(counter, event.value as Event, event.timeMs)
          ).filter((cell) => cell !== null);
          assert.deepEqual(cellUpdatesOf(batch.updates, width, e), expected);
        });
      }
      await new Promise((resolve) => setTimeout(resolve, 0));
      // The apply that only counts a request's rejected events (it accepted none) is not observed.
      const acknowledging = batches.filter((batch) =>
        batch.requests?.some((request) => request.events + request.filtered > 0)
      );
      assert.deepEqual(observed.map((batch) => batch.updates), acknowledging.map((b) => b.updates));
    }),
    { numRuns: 200 },
  );
});

Deno.test("ingestItems() rejects an event whose schema checks would pass their budget, by index, and applies the rest", async () => {
  // An anyOf of 200 objects of 5 consts under items: 5,000 items took zod 5.3 s to refuse.
  const anyOf = Array.from({ length: 200 }, (_, member) => ({
    type: "object",
    properties: { kind: { const: `k${member}` }, n: { type: "number" } },
    required: ["kind"],
  }));
  const stream = compileConfig({
    streams: {
      parts: {
        schema: { type: "object", properties: { parts: { type: "array", items: { anyOf } } } },
        counters: { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  }).get("parts")!;
  const many = { parts: Array.from({ length: 5_000 }, () => ({ kind: "x" })) };
  const reply = await ingestItems(
    stream,
    items(many, { parts: [{ kind: "k199", n: 1 }] }, { parts: [{ kind: "x" }] }),
    { store: newStore(), nowMs: NOW },
  );
  assert.equal(reply.accepted, 1);
  assert.deepEqual(reply.rejected, [
    { index: 0, errors: [{ path: "", message: CHECK_BUDGET_MESSAGE }] },
    { index: 2, errors: [{ path: "parts.0", message: "Invalid input" }] },
  ]);
  assert.match(
    CHECK_BUDGET_MESSAGE,
    /^Event would take more than 262144 checks against its schema/,
  );
});

Deno.test("ingestItems() rejects an event whose schema patterns or matches() calls would cost past their budgets, by index, and applies the rest", async () => {
  // 4,003 instructions: over 5,000 characters each test took about 0.5 s.
  const big = `${"[a-z]{1000}".repeat(4)}[^a]`;
  const stream = compileConfig({
    streams: {
      codes: {
        schema: { type: "object", properties: { code: { type: "string", pattern: big } } },
        transform: [{ filter: `!has(event.note) || !event.note.matches("${big}")` }],
        counters: { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  }).get("codes")!;
  const long = `${"a".repeat(4_999)}b`;
  const reply = await ingestItems(stream, items({ code: long }, { note: long }, { note: "b" }), {
    store: newStore(),
    nowMs: NOW,
  });
  assert.equal(reply.accepted, 1);
  assert.deepEqual(reply.rejected, [
    {
      index: 0,
      errors: [{
        path: "",
        message:
          "Event would cost more than 262144 to test against its schema's patterns (text characters × instructions a pattern may visit a character, per event): a pattern of 4003 instructions over 5000 characters costs 20015000",
      }],
    },
    {
      index: 1,
      errors: [{
        path: "transform[0].filter",
        message:
          "Expression failed: Expression exceeded its matches() budget of 262144 (text characters × instructions a pattern may visit a character, per evaluation): a pattern of 4003 instructions over 5000 characters costs 20015000",
      }],
    },
  ]);
});

Deno.test("ingestItems() calls no observer while every one says it is idle for the stream, asks again for each batch after its apply, and then calls them all", async () => {
  const stream = compileStream();
  const store = newStore();
  let idle = true;
  const asked: string[] = [];
  const told: string[] = [];
  const quiet: IngestObserver = Object.assign(
    (batch: AppliedBatch) => told.push(`quiet ${batch.events.length}`),
    {
      idle: (of: CompiledStream) => {
        assert.equal(of, stream);
        asked.push(idle ? "idle" : "busy");
        return idle;
      },
    },
  );
  const plain: IngestObserver = () => told.push("plain");
  const alwaysIdle: IngestObserver = Object.assign(() => told.push("always idle"), {
    idle: () => true,
  });
  // The store applies the second batch while the first observer gains work: it is told of it.
  const gaining = Object.assign(Object.create(store), {
    async applyBatch(batch: StoreBatch) {
      const result = await store.applyBatch(batch);
      if (batch.events.length === 2) idle = false;
      return result;
    },
  }) as MemoryStore;
  const options = { store: gaining, nowMs: NOW, observers: [quiet, alwaysIdle] };
  await ingestItems(stream, items({ id: "a", ts: at(NOW - MINUTE) }), options);
  assert.deepEqual(told, []);
  await ingestItems(
    stream,
    items({ id: "b", ts: at(NOW - MINUTE) }, { id: "c", ts: at(NOW - MINUTE) }),
    options,
  );
  assert.deepEqual(told, ["quiet 2", "always idle"]);
  // One without `idle` is never idle: every observer is told, each batch.
  idle = true;
  told.length = 0;
  await ingestItems(stream, items({ id: "d", ts: at(NOW - MINUTE) }), {
    ...options,
    observers: [quiet, plain],
  });
  assert.deepEqual(told, ["quiet 1", "plain"]);
  assert.deepEqual(asked, ["idle", "busy", "idle"]);
});
