import assert from "node:assert/strict";
import { compileConfig, type CompiledStream } from "../../src/config/mod.ts";
import { type BodyItem, ingestItems, RejectedCounts } from "../../src/ingest/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import {
  type Store,
  type StoreBatch,
  StoreRefusedError,
  StreamChangedError,
} from "../../src/store/types.ts";
import { collectingLogs, messageOf } from "../_logs.ts";
import { redisTest, restClient } from "../_redis.ts";

const NOW = Date.parse("2026-01-01T00:10:00Z");

function ordersStream(): CompiledStream {
  return compileConfig({
    streams: {
      orders: {
        schema: { type: "object", properties: { n: { type: "number" } }, required: ["n"] },
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  }).get("orders")!;
}

/** A body of `count` events that all fail the schema. */
function bad(count: number): BodyItem[] {
  return Array.from({ length: count }, () => ({ ok: true as const, value: { n: "x" } }));
}

/** `store` with its applies recorded, each failing with `fail()`'s error when it gives one. */
function recording<S extends Store>(store: S, fail: () => Error | undefined = () => undefined) {
  const applies: StoreBatch[] = [];
  const target: S = Object.assign(Object.create(store), {
    applyBatch(batch: StoreBatch) {
      applies.push(batch);
      const error = fail();
      return error ? Promise.reject(error) : store.applyBatch(batch);
    },
  });
  return { applies, target };
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 5_000) {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function manyRejectedMakeOneApplyASecond(store: Store) {
  const stream = ordersStream();
  const { applies, target } = recording(store);
  const rejectedCounts = new RejectedCounts(target, { now: () => NOW });
  // Every apply, the requests' own too, goes through `target`.
  const options = { store: target, nowMs: NOW, rejectedCounts };
  const stats = async () => (await store.stats("orders", stream.counterMetas)).rejected;
  // 300 requests of two bad events each, one after another and 100 at once: no apply yet.
  for (let i = 0; i < 200; i++) {
    assert.equal((await ingestItems(stream, bad(2), options)).accepted, 0);
  }
  await Promise.all(Array.from({ length: 100 }, () => ingestItems(stream, bad(2), options)));
  assert.equal(applies.length, 0, "no apply on the requests' path");
  // The timer's apply, a second after the first of them, carries all 600.
  await until("600 rejected counted", async () => await stats() === 600);
  assert.equal(applies.length, 1);
  assert.deepEqual(applies[0].requests, [{ events: 0, filtered: 0, rejected: 600 }]);
  assert.equal(applies[0].events.length, 0);
  // The next ones wait a second again: one more apply for them all.
  for (let i = 0; i < 100; i++) await ingestItems(stream, bad(1), options);
  await until("700 rejected counted", async () => await stats() === 700);
  assert.equal(applies.length, 2);
  assert.equal(rejectedCounts.applies, 2);
}

Deno.test("RejectedCounts: hundreds of requests that accepted none within a second make one apply, a second later, that counts them all (memory store)", async () => {
  await manyRejectedMakeOneApplyASecond(new MemoryStore({ now: () => NOW }));
});

redisTest(
  "RejectedCounts: hundreds of requests that accepted none within a second make one apply, a second later, that counts them all (Redis)",
  async (fixture) => {
    await manyRejectedMakeOneApplyASecond(new RedisStore(restClient(fixture), { now: () => NOW }));
  },
);

Deno.test("RejectedCounts: a failing timer apply loses its count, is logged once until one succeeds, and a changed stream drops what is pending", async () => {
  const stream = ordersStream();
  const store = new MemoryStore({ now: () => NOW });
  let failWith: Error | undefined;
  const { applies, target } = recording(store, () => failWith);
  const rejectedCounts = new RejectedCounts(target, { now: () => NOW, intervalMs: 5 });
  // Each count goes in the timer's apply, not a flush.
  const applied = async (count: number) => {
    await until(`${count} applies`, () => applies.length === count && !rejectedCounts.waiting);
  };
  const warnings = await collectingLogs(async (records) => {
    failWith = new StoreRefusedError("WRONGTYPE Operation against a key holding the wrong kind");
    for (let i = 0; i < 3; i++) {
      rejectedCounts.add(stream, 2);
      await applied(i + 1);
    }
    failWith = undefined;
    rejectedCounts.add(stream, 1);
    await applied(4);
    failWith = new StoreRefusedError("WRONGTYPE again");
    rejectedCounts.add(stream, 1);
    await applied(5);
    return records.filter((record) => record.level === "warning");
  });
  assert.equal(applies.length, 5);
  assert.deepEqual(warnings.map(messageOf), [
    "Cannot count 2 rejected events of stream orders (requests that accepted none), so they are lost: StoreRefusedError: WRONGTYPE Operation against a key holding the wrong kind (further failures unlogged until an apply succeeds)",
    "Cannot count 1 rejected events of stream orders (requests that accepted none), so they are lost: StoreRefusedError: WRONGTYPE again (further failures unlogged until an apply succeeds)",
  ]);
  assert.equal((await store.stats("orders", stream.counterMetas)).rejected, 1);

  // Deleted meanwhile: the count added while its apply ran is dropped with it, unlogged.
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const changing = {
    async applyBatch(batch: StoreBatch) {
      applies.push(batch);
      await gate;
      throw new StreamChangedError("orders", 0);
    },
  };
  const dropping = new RejectedCounts(changing, { now: () => NOW, intervalMs: 3_600_000 });
  const logged = await collectingLogs(async (records) => {
    dropping.add(stream, 5);
    const flushed = dropping.flush();
    dropping.add(stream, 7);
    release();
    await flushed;
    await dropping.flush();
    return records.length;
  });
  assert.equal(logged, 0);
  assert.deepEqual(applies.slice(5).map((batch) => batch.requests), [[{
    events: 0,
    filtered: 0,
    rejected: 5,
  }]]);
});

Deno.test("RejectedCounts: flush() logs what it cannot apply, streams and total, in one line, though the store was failing (unlogged) before it", async () => {
  const orders = ordersStream();
  const clicks = compileConfig({
    streams: { clicks: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
  }).get("clicks")!;
  const store = new MemoryStore({ now: () => NOW });
  let failWith: Error | undefined;
  const { applies, target } = recording(store, () => failWith);
  const rejectedCounts = new RejectedCounts(target, { now: () => NOW, intervalMs: 5 });
  const warnings = await collectingLogs(async (records) => {
    failWith = new StoreRefusedError("connection closed");
    // Failing since before the stop: the timer's first failure is logged, its second is not.
    rejectedCounts.add(orders, 1);
    await until("the first apply", () => applies.length === 1 && !rejectedCounts.waiting);
    rejectedCounts.add(orders, 1);
    await until("the second apply", () => applies.length === 2 && !rejectedCounts.waiting);
    // The stop's flush: counts of two streams, and one added while its applies run.
    rejectedCounts.add(orders, 3);
    rejectedCounts.add(clicks, 4);
    const flushed = rejectedCounts.flush();
    rejectedCounts.add(orders, 2);
    await flushed;
    assert.equal(rejectedCounts.waiting, false);
    // A flush with nothing lost logs nothing.
    failWith = undefined;
    rejectedCounts.add(clicks, 1);
    await rejectedCounts.flush();
    return records.filter((record) => record.level === "warning").map(messageOf);
  });
  assert.equal(applies.length, 6);
  assert.deepEqual(warnings, [
    "Cannot count 1 rejected events of stream orders (requests that accepted none), so they are lost: StoreRefusedError: connection closed (further failures unlogged until an apply succeeds)",
    "Cannot count 9 rejected events (requests that accepted none) of stream(s) orders, clicks on flush, so they are lost: StoreRefusedError: connection closed",
  ]);
});

Deno.test("RejectedCounts: counts added while a slow apply runs wait for it and then go in one apply, none lost; flush() meanwhile waits for both", async () => {
  const stream = ordersStream();
  const store = new MemoryStore({ now: () => NOW });
  const held = Promise.withResolvers<void>();
  const applies: number[] = [];
  const target: Pick<Store, "applyBatch"> = {
    async applyBatch(batch: StoreBatch) {
      applies.push(batch.requests?.[0].rejected ?? 0);
      // The first apply is slow: the store answers it once released.
      if (applies.length === 1) await held.promise;
      return await store.applyBatch(batch);
    },
  };
  const counts = new RejectedCounts(target, { now: () => NOW, intervalMs: 20 });
  counts.add(stream, 2);
  await until("the first apply started", () => applies.length === 1);
  // Behind the slow apply: no second apply of the stream runs beside it.
  for (let i = 0; i < 5; i++) counts.add(stream, 1);
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.deepEqual(applies, [2]);
  const flushed = counts.flush();
  held.resolve();
  await flushed;
  assert.deepEqual(applies, [2, 5]);
  assert.equal(counts.waiting, false);
  assert.equal((await store.stats("orders", stream.counterMetas)).rejected, 7);
});
