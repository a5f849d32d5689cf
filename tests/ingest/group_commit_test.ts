import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { createApp } from "../../src/app.ts";
import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import { LiveHub } from "../../src/fanout/mod.ts";
import type { AppliedBatch } from "../../src/fanout/types.ts";
import { KeyRing } from "../../src/http/auth.ts";
import {
  approximateEventBytes,
  type BodyItem,
  GroupCommitter,
  IdempotencyError,
  ingestItems,
  type IngestOptions,
  type IngestReply,
  RateLimitedError,
  RejectedCounts,
} from "../../src/ingest/mod.ts";
import {
  generationKey,
  MemoryStore,
  RedisDefinitionStore,
  RedisStore,
} from "../../src/store/mod.ts";
import {
  type BatchEvent,
  type Store,
  type StoreBatch,
  StoreRefusedError,
  StoreUnavailableError,
} from "../../src/store/types.ts";
import { at, NOW, postEvents, TEST_CONFIG } from "../_fixtures.ts";
import { denoClient } from "../_live.ts";
import { redisTest, restClient } from "../_redis.ts";
import { commandNames, startUpstashProxy } from "../_upstash_proxy.ts";

/**
 * A memory store that records each apply, can hold applies until released
 * (a slow store: the first apply is in flight while later requests queue),
 * and can fail an apply. Its `kind` is not "memory", so createApp groups.
 */
function gatedStore(kind = "gated", inner: Store = new MemoryStore({ now: () => NOW })) {
  const control = {
    batches: [] as StoreBatch[],
    gate: null as PromiseWithResolvers<void> | null,
    /** The error the apply with this number (1, 2, …) throws. */
    failures: new Map<number, unknown>(),
    hold() {
      control.gate = Promise.withResolvers<void>();
    },
    release() {
      control.gate?.resolve();
      control.gate = null;
    },
  };
  const store = new Proxy(inner, {
    get(target, property) {
      if (property === "kind") return kind;
      if (property === "applyBatch") {
        return async (batch: StoreBatch) => {
          control.batches.push(batch);
          const number = control.batches.length;
          if (control.gate) await control.gate.promise;
          if (control.failures.has(number)) throw control.failures.get(number);
          return await target.applyBatch(batch);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  }) as Store;
  return { store, control };
}

/** Waits (without a timing assertion) until `test` holds. */
async function until(what: string, test: () => boolean): Promise<void> {
  for (let i = 0; i < 2_000; i++) {
    if (test()) return;
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  throw new Error(`Gave up waiting for ${what}`);
}

const STREAMS = compileConfig({
  streams: {
    ...TEST_CONFIG.streams,
    /** Receive time as event time and no lateness allowance: the clock decides lateness. */
    clock: {
      time: { lateness: "0s" },
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
});
const ORDERS = STREAMS.get("orders")!;

function items(...values: unknown[]): BodyItem[] {
  return values.map((value) => ({ ok: true, value }));
}

function order(id: string, extra: Record<string, unknown> = {}) {
  return { id, ts: at(300), country: "DE", amount: 2, ...extra };
}

/** Events (as sent to the store) of the requests of each apply. */
function requestSizes(batches: StoreBatch[]): number[][] {
  return batches.map((batch) =>
    (batch.requests ?? [{ events: batch.events.length }]).map((request) => request.events)
  );
}

/** Settles each promise to its value or its error, so one rejection does not hide the rest. */
function settle<T>(promise: Promise<T>): Promise<T | Error> {
  return promise.catch((error) => error as Error);
}

Deno.test("GroupCommitter sends a batch at once, with no timer, when no apply of its stream runs", () => {
  const { store, control } = gatedStore();
  control.hold();
  const committer = new GroupCommitter(store);
  const batch = storeBatch("s", [event()]);
  const pending = committer.applyBatch(batch);
  // Synchronously: nothing waits for a timer or a later tick at low load.
  assert.equal(control.batches.length, 1);
  assert.equal(control.batches[0], batch, "a lone batch goes to the store as it is");
  control.release();
  return pending.then((result) => assert.deepEqual(result.outcomes, ["applied"]));
});

Deno.test("concurrent ingest requests of a stream share one applyBatch and each gets its own reply", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  const seen: AppliedBatch[] = [];
  const options: IngestOptions = {
    store,
    nowMs: NOW,
    groupCommit: committer,
    inFlight: new Set(),
    observers: [(batch) => seen.push(batch)],
    rejectedCounts: new RejectedCounts(committer, { now: () => NOW }),
  };
  control.hold();
  const first = ingestItems(ORDERS, items(order("a")), options);
  assert.equal(control.batches.length, 1);
  const replies = [
    // A rejected event and two valid ones.
    ingestItems(ORDERS, [...items(order("b"), order("c")), ...items({ country: "DE" })], options),
    // A duplicate of an id of the request before it in the same apply.
    ingestItems(ORDERS, items(order("b"), order("d")), options),
    // Filtered out by the transform, and a late event (lateness 30s behind ts 300s).
    ingestItems(ORDERS, items(order("e", { test: true }), order("f", { ts: at(10) })), options),
    // Nothing valid: answered at once, its rejected event counted later by an apply of no event.
    ingestItems(ORDERS, items({ country: "FR" }), options),
  ];
  await until("three requests waiting", () => committer.stats.waiting === 3);
  assert.equal(control.batches.length, 1, "later requests wait for the running apply");
  let answered = 0;
  for (const reply of [first, ...replies]) reply.then(() => answered += 1);
  await new Promise((resolve) => setTimeout(resolve, 10));
  // Only the request with nothing valid, which waits for no apply, is answered yet.
  assert.equal(answered, 1);
  control.release();
  assert.deepEqual(await first, {
    accepted: 1,
    duplicates: 0,
    late: 0,
    filtered: 0,
    rejected: [],
  });
  const [b, d, f, none] = await Promise.all(replies);
  assert.deepEqual(requestSizes(control.batches), [[1], [2, 2, 1]]);
  assert.deepEqual(committer.stats, { submitted: 4, applies: 2, waiting: 0 });
  // Its count's apply, through the committer.
  await options.rejectedCounts!.flush();
  assert.deepEqual(requestSizes(control.batches), [[1], [2, 2, 1], [0]]);
  assert.deepEqual(committer.stats, { submitted: 5, applies: 3, waiting: 0 });
  const missingId = [{ path: "id", message: "Required field is missing (expected string)" }];
  assert.deepEqual(b, {
    accepted: 2,
    duplicates: 0,
    late: 0,
    filtered: 0,
    rejected: [{ index: 2, errors: missingId }],
  });
  assert.deepEqual(d, { accepted: 2, duplicates: 1, late: 0, filtered: 0, rejected: [] });
  assert.deepEqual(f, { accepted: 2, duplicates: 0, late: 1, filtered: 1, rejected: [] });
  assert.deepEqual(none, {
    accepted: 0,
    duplicates: 0,
    late: 0,
    filtered: 0,
    rejected: [{ index: 0, errors: missingId }],
  });
  // Each request's observers call holds only its own events and outcomes.
  assert.deepEqual(
    seen.map((batch) => [batch.events.map((event) => event.id), batch.outcomes]),
    [
      [["a"], ["applied"]],
      [["b", "c"], ["applied", "applied"]],
      [["b", "d"], ["duplicate", "applied"]],
      [["f"], ["late"]],
    ],
  );
  const stats = await store.stats("orders", ORDERS.counterMetas);
  assert.deepEqual(
    [stats.accepted, stats.applied, stats.duplicates, stats.late, stats.filtered, stats.rejected],
    [7, 4, 1, 1, 1, 2],
  );
});

Deno.test("a group applies, replays and refuses each request by its own Idempotency-Key", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  // No in-process in-flight set, so the same key twice reaches the store in one apply.
  const options = (key?: string, body?: string, nowMs = NOW): IngestOptions => ({
    store,
    nowMs,
    groupCommit: committer,
    idempotency: key === undefined ? undefined : { key, body: body ?? key },
  });
  const stored = await ingestItems(ORDERS, items(order("k1")), options("done", "body-1"));
  await ingestItems(ORDERS, items(order("k2")), options("other", "body-2"));
  control.hold();
  const first = ingestItems(ORDERS, items(order("x")), options());
  const results = [
    ingestItems(ORDERS, items(order("k1")), options("done", "body-1")),
    ingestItems(ORDERS, items(order("k3")), options("other", "another body")),
    ingestItems(ORDERS, items(order("n1"), order("n2")), options("new", "body-3")),
    // Received after the one before it (they may reach the committer in either order).
    ingestItems(ORDERS, items(order("n3")), options("new", "body-3", NOW + 1)),
    ingestItems(ORDERS, items(order("y")), options()),
  ].map(settle);
  await until("five requests waiting", () => committer.stats.waiting === 5);
  control.release();
  await first;
  const [replayed, conflict, applied, inFlight, plain] = await Promise.all(results);
  // Keyed requests reach the committer after hashing: the order within the apply may differ.
  assert.deepEqual(requestSizes(control.batches).slice(2).map((sizes) => sizes.sort()), [
    [1],
    [1, 1, 1, 1, 2],
  ]);
  assert.deepEqual(replayed, { ...stored, replayed: true });
  assert.ok(conflict instanceof IdempotencyError && conflict.problem === "conflict");
  assert.deepEqual(applied, { accepted: 2, duplicates: 0, late: 0, filtered: 0, rejected: [] });
  assert.ok(inFlight instanceof IdempotencyError && inFlight.problem === "in_flight");
  assert.deepEqual(plain, { accepted: 1, duplicates: 0, late: 0, filtered: 0, rejected: [] });
  // Applied: k1, k2, x, n1, n2, y; the replay, the conflict and the in-flight request changed nothing.
  const stats = await store.stats("orders", ORDERS.counterMetas);
  assert.deepEqual([stats.accepted, stats.applied], [6, 6]);
});

Deno.test("a request the rate limit refuses in a group fails alone while the others apply", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  const limited = (ids: string[]) =>
    settle(ingestItems(ORDERS, items(...ids.map((id) => order(id))), {
      store,
      nowMs: NOW,
      groupCommit: committer,
      rateLimits: [{ key: "client", limit: 3, windowMs: 60_000, name: "key", subject: "key" }],
    }));
  control.hold();
  const first = ingestItems(ORDERS, items(order("x")), {
    store,
    nowMs: NOW,
    groupCommit: committer,
  });
  const results = [
    limited(["a", "b"]),
    limited(["c", "d"]), // 2 tokens asked, 1 left: refused whole
    limited(["e"]),
    settle(ingestItems(ORDERS, items(order("f")), { store, nowMs: NOW, groupCommit: committer })),
  ];
  await until("four requests waiting", () => committer.stats.waiting === 4);
  control.release();
  await first;
  const [ab, cd, e, f] = await Promise.all(results);
  assert.equal(control.batches.length, 2);
  assert.deepEqual(ab, { accepted: 2, duplicates: 0, late: 0, filtered: 0, rejected: [] });
  assert.ok(cd instanceof RateLimitedError, String(cd));
  assert.ok(cd.retryAfterMs > 0);
  assert.deepEqual(e, { accepted: 1, duplicates: 0, late: 0, filtered: 0, rejected: [] });
  assert.deepEqual(f, { accepted: 1, duplicates: 0, late: 0, filtered: 0, rejected: [] });
  const stats = await store.stats("orders", ORDERS.counterMetas);
  assert.deepEqual([stats.accepted, stats.applied], [5, 5]);
});

Deno.test("a failed shared apply fails every request of the group with the same error", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  const options: IngestOptions = { store, nowMs: NOW, groupCommit: committer, inFlight: new Set() };
  const down = new StoreUnavailableError("Redis did not answer within 5000 ms (applyBatch)", {
    outcome: "unknown",
  });
  control.failures.set(2, down);
  control.hold();
  const first = ingestItems(ORDERS, items(order("a")), options);
  const results = [
    ingestItems(ORDERS, items(order("b")), options),
    ingestItems(ORDERS, items(order("c")), { ...options, idempotency: { key: "k", body: "c" } }),
    ingestItems(ORDERS, items(order("d"), order("e")), options),
  ].map(settle);
  await until("three requests waiting", () => committer.stats.waiting === 3);
  control.release();
  assert.equal((await first).accepted, 1);
  for (const result of await Promise.all(results)) assert.equal(result, down);
  assert.equal(options.inFlight!.size, 0, "the key is free again for a retry");
  // The next request is sent on its own and applies.
  const retry = await ingestItems(ORDERS, items(order("c")), {
    ...options,
    idempotency: { key: "k", body: "c" },
  });
  assert.equal(retry.accepted, 1);
  assert.deepEqual(requestSizes(control.batches).map((sizes) => sizes.sort()), [[1], [1, 1, 2], [
    1,
  ]]);
});

Deno.test("a shared apply the store refused is made again one request at a time: only the one it concerns fails", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  const options: IngestOptions = { store, nowMs: NOW, groupCommit: committer, inFlight: new Set() };
  const refused = new StoreRefusedError(
    "Redis refused applyBatch: WRONGTYPE edgestream key …: nothing was written",
  );
  control.failures.set(2, refused); // the group
  control.failures.set(4, refused); // its second request, alone
  control.hold();
  const first = ingestItems(ORDERS, items(order("a")), options);
  const results = [
    ingestItems(ORDERS, items(order("b")), options),
    ingestItems(ORDERS, items(order("c")), { ...options, idempotency: { key: "k", body: "c" } }),
    ingestItems(ORDERS, items(order("d"), order("e")), options),
  ].map(settle);
  await until("three requests waiting", () => committer.stats.waiting === 3);
  control.release();
  assert.equal((await first).accepted, 1);
  const [b, c, d] = await Promise.all(results);
  assert.equal((b as { accepted: number }).accepted, 1);
  assert.equal(c, refused);
  assert.equal((d as { accepted: number }).accepted, 2);
  assert.deepEqual(requestSizes(control.batches), [[1], [1, 1, 2], [1], [1], [2]]);
  const stats = await store.stats("orders", ORDERS.counterMetas);
  assert.equal(stats.accepted, 4, "a, b, d and e, once each");
});

Deno.test("a shared apply that failed other than refused is not made again: it may have written part", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  const options: IngestOptions = { store, nowMs: NOW, groupCommit: committer, inFlight: new Set() };
  const failed = new Error("Redis refused applyBatch: ERR user_script:1: attempt to compare nil");
  control.failures.set(2, failed);
  control.hold();
  const first = ingestItems(ORDERS, items(order("a")), options);
  const results = [
    ingestItems(ORDERS, items(order("b")), options),
    ingestItems(ORDERS, items(order("c"), order("d")), options),
  ].map(settle);
  await until("two requests waiting", () => committer.stats.waiting === 2);
  control.release();
  assert.equal((await first).accepted, 1);
  for (const result of await Promise.all(results)) assert.equal(result, failed);
  assert.deepEqual(requestSizes(control.batches), [[1], [1, 2]]);
});

Deno.test("concurrent HTTP requests whose shared apply timed out all get 503 with outcome unknown", async () => {
  const { store, control } = gatedStore();
  const groupCommit = new GroupCommitter(store);
  const keys = await KeyRing.parse("");
  const app = createApp({ streams: STREAMS, store, keys, now: () => NOW, groupCommit });
  control.failures.set(
    2,
    new StoreUnavailableError("Redis did not answer within 5000 ms (applyBatch)"),
  );
  control.hold();
  const first = postEvents(app, order("a"));
  await until("the first apply", () => control.batches.length === 1);
  const later = ["b", "c", "d"].map((id) => postEvents(app, order(id)));
  await until("three requests waiting", () => groupCommit.stats.waiting === 3);
  control.release();
  assert.equal((await first).status, 202);
  const responses = await Promise.all(later);
  assert.deepEqual(requestSizes(control.batches), [[1], [1, 1, 1]]);
  for (const res of responses) {
    assert.equal(res.status, 503);
    assert.equal(res.headers.has("Retry-After"), true);
    const body = await res.json();
    assert.equal(body.error.code, "store_unavailable");
    assert.equal(body.error.details.outcome, "unknown");
  }
});

function event(extra: Partial<BatchEvent> = {}): BatchEvent {
  return { timeMs: NOW, ...extra };
}

function storeBatch(stream: string, events: BatchEvent[], extra: Partial<StoreBatch> = {}) {
  return {
    stream,
    nowMs: NOW,
    latenessMs: 30_000,
    dedupeTtlMs: 0,
    counters: ORDERS.counterMetas,
    events,
    ...extra,
  } satisfies StoreBatch;
}

Deno.test("a group holds at most maxEvents events; a larger request goes alone, never split", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store, { maxEvents: 3 });
  const send = (size: number) =>
    committer.applyBatch(storeBatch("s", Array.from({ length: size }, () => event())));
  control.hold();
  const pending = [send(1), send(2), send(1), send(1), send(2), send(5), send(1)];
  // 2+1 fill a group; the next 1 sends it at once, though an apply runs, and opens another; the
  // 5 sends that one and waits alone, until the last 1 sends it.
  assert.deepEqual(requestSizes(control.batches), [[1], [2, 1], [1, 2], [5]]);
  control.release();
  const results = await Promise.all(pending);
  assert.deepEqual(results.map((result) => result.outcomes.length), [1, 2, 1, 1, 2, 5, 1]);
  assert.deepEqual(requestSizes(control.batches), [[1], [2, 1], [1, 2], [5], [1]]);
});

Deno.test("a group holds at most 1000 events and 1 MiB by default", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  const send = (size: number, payloadBytes = 0) => {
    const payload = payloadBytes > 0 ? JSON.stringify("x".repeat(payloadBytes - 2)) : undefined;
    const events = Array.from({ length: size }, () => event({ payload }));
    return committer.applyBatch(storeBatch("s", events, { log: { processed: true } }));
  };
  control.hold();
  const pending = [send(1), send(1), send(999), send(1), send(1, 600_000), send(1, 500_000)];
  assert.equal(
    approximateEventBytes(event({ payload: JSON.stringify("x".repeat(599_998)) })),
    600_016,
  );
  control.release();
  await Promise.all(pending);
  assert.deepEqual(requestSizes(control.batches), [[1], [1, 999], [1, 1], [1]]);
});

Deno.test("a group holds at most maxBytes of events", async () => {
  const { store, control } = gatedStore();
  // A JSON string of `size` characters.
  const payload = (size: number) => event({ payload: JSON.stringify("x".repeat(size - 2)) });
  const hundred = payload(84);
  assert.equal(approximateEventBytes(hundred), 100);
  const committer = new GroupCommitter(store, { maxBytes: 250 });
  const log = { processed: true };
  const send = (...events: BatchEvent[]) => committer.applyBatch(storeBatch("s", events, { log }));
  control.hold();
  const pending = [send(hundred), send(hundred), send(hundred), send(hundred), send(payload(300))];
  assert.deepEqual(requestSizes(control.batches), [[1], [1, 1], [1]]);
  control.release();
  await Promise.all(pending);
  assert.deepEqual(requestSizes(control.batches), [[1], [1, 1], [1], [1]]);
});

Deno.test("a group counts each request's stored Idempotency-Key reply in maxBytes, requests of no events too", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store, { maxBytes: 2_000 });
  // A request whose events a filter dropped has none, but its reply is sent and stored all the same.
  const keyed = (key: string, events: BatchEvent[]) =>
    committer.applyBatch(storeBatch("s", events, {
      requests: [{
        events: events.length,
        filtered: events.length === 0 ? 1 : 0,
        idempotency: {
          keyHash: key.padEnd(64, "0"),
          bodyHash: "b".repeat(64),
          ttlMs: 60_000,
          reply: JSON.stringify({ note: "x".repeat(600) }),
        },
      }],
    }));
  control.hold();
  const pending = [
    keyed("a", [event()]),
    keyed("b", [event()]),
    keyed("c", []),
    keyed("d", [event()]),
    keyed("e", []),
  ];
  // About 800 bytes a request: two fill a group of 2,000, the third sends it and opens the next.
  assert.deepEqual(requestSizes(control.batches), [[1], [1, 0]]);
  control.release();
  await Promise.all(pending);
  assert.deepEqual(requestSizes(control.batches), [[1], [1, 0], [1, 0]]);
});

Deno.test("only batches of one stream with the same batch-level fields share an apply", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  control.hold();
  const pending = [
    committer.applyBatch(storeBatch("s", [event()])),
    committer.applyBatch(storeBatch("t", [event()])), // another stream: nothing of s runs
    committer.applyBatch(storeBatch("s", [event()])),
    committer.applyBatch(storeBatch("s", [event()])),
    committer.applyBatch(storeBatch("s", [event()], { log: { late: true } })),
    committer.applyBatch(storeBatch("s", [event()], { log: { late: true } })),
  ];
  assert.deepEqual(control.batches.map((batch) => batch.stream), ["s", "t", "s"]);
  assert.equal(
    control.batches[2].events.length,
    2,
    "s with no log, sent when the other shape came",
  );
  control.release();
  await Promise.all(pending);
  assert.deepEqual(requestSizes(control.batches), [[1], [1], [1, 1], [1, 1]]);
  assert.deepEqual(control.batches[3].log, { late: true });
});

Deno.test("batches whose quantiles counters differ in accuracy do not share an apply", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  control.hold();
  const meta = { ...ORDERS.counterMetas[0], aggregate: "quantiles" as const };
  const pending = [
    committer.applyBatch(storeBatch("s", [event()], { counters: [{ ...meta, accuracy: 0.01 }] })),
    committer.applyBatch(storeBatch("s", [event()], { counters: [{ ...meta, accuracy: 0.01 }] })),
    committer.applyBatch(storeBatch("s", [event()], { counters: [{ ...meta, accuracy: 0.05 }] })),
  ];
  control.release();
  await Promise.all(pending);
  assert.deepEqual(requestSizes(control.batches), [[1], [1], [1]]);
});

Deno.test("batches of two incarnations of a stream with equal counters do not share an apply", async () => {
  // A stream deleted and created again compiles to new counters: the registry stores each
  // incarnation under its own generation, found by this array, so they must stay apart.
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  control.hold();
  const old = ORDERS.counterMetas;
  const recreated = ORDERS.counterMetas.map((meta) => ({ ...meta }));
  const pending = [
    committer.applyBatch(storeBatch("s", [event()], { counters: old })),
    committer.applyBatch(storeBatch("s", [event()], { counters: recreated })),
    committer.applyBatch(storeBatch("s", [event()], { counters: old })),
  ];
  control.release();
  await Promise.all(pending);
  assert.deepEqual(requestSizes(control.batches), [[1], [1], [1]]);
  assert.deepEqual(control.batches.map((batch) => batch.counters === old), [true, false, true]);
});

Deno.test("a group applies its requests in receive order at the earliest receive time", async () => {
  const { store, control } = gatedStore();
  const committer = new GroupCommitter(store);
  const clock = STREAMS.get("clock")!;
  const send = (nowMs: number) =>
    ingestItems(clock, items({}), { store, nowMs, groupCommit: committer });
  control.hold();
  const first = send(NOW);
  // Received in this order but handed over the other way round (e.g. a slower body read).
  const later = send(NOW + 5);
  const earlier = send(NOW + 2);
  await until("two requests waiting", () => committer.stats.waiting === 2);
  control.release();
  await first;
  // No lateness allowance: an event behind the watermark would be late.
  assert.deepEqual([(await earlier).late, (await later).late], [0, 0]);
  assert.equal(control.batches[1].nowMs, NOW + 2);
  assert.deepEqual(control.batches[1].events.map((item) => item.timeMs), [NOW + 2, NOW + 5]);
});

Deno.test("createApp groups ingest on a shared store, and not on the memory store", async () => {
  for (
    const [kind, groupCommit, grouped] of [
      ["gated", undefined, true],
      ["memory", undefined, false],
      ["gated", false, false],
      ["memory", true, true],
    ] as const
  ) {
    const what = `${kind} store, groupCommit ${groupCommit}`;
    const { store, control } = gatedStore(kind);
    const keys = await KeyRing.parse("");
    const app = createApp({ streams: STREAMS, store, keys, now: () => NOW, groupCommit });
    control.hold();
    const responses = ["a", "b", "c", "d"].map((id) => postEvents(app, order(id)));
    // Held: ungrouped requests each start an apply; grouped ones wait behind the first.
    const started = Date.now();
    await until(
      "applies to start",
      () => control.batches.length === 4 || Date.now() > started + 200,
    );
    assert.equal(control.batches.length, grouped ? 1 : 4, what);
    control.release();
    for (const res of await Promise.all(responses)) assert.equal(res.status, 202, what);
    const stats = await store.stats("orders", ORDERS.counterMetas);
    assert.equal(stats.applied, 4, what);
  }
});

Deno.test("WebSocket frames of different connections share an apply, each acked on its own", async () => {
  const { store, control } = gatedStore();
  const groupCommit = new GroupCommitter(store);
  const live = new LiveHub(STREAMS, store);
  const keys = await KeyRing.parse("");
  const app = createApp({ streams: STREAMS, store, keys, now: () => NOW, live, groupCommit });
  const listening = Promise.withResolvers<number>();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: ({ port }) => listening.resolve(port) },
    app.fetch,
  );
  const url = `ws://127.0.0.1:${await listening.promise}/v1/streams/orders/ws`;
  const clients = await Promise.all([1, 2, 3].map(() => denoClient(url)));
  try {
    control.hold();
    clients[0].socket.send(JSON.stringify(order("a")));
    await until("the first apply", () => control.batches.length === 1);
    // Two frames of one connection: the second waits for the first's ack, so never shares its apply.
    clients[1].socket.send(JSON.stringify([order("b"), order("a")]));
    clients[1].socket.send(JSON.stringify(order("e")));
    clients[2].socket.send(JSON.stringify({ seq: 9, events: [order("c"), { country: "DE" }] }));
    await until("two frames waiting", () => groupCommit.stats.waiting === 2);
    control.release();
    const acks = await Promise.all(clients.map((client) => client.inbox.next()));
    const second = await clients[1].inbox.next();
    // The two connections' frames may reach the server in either order.
    assert.deepEqual(requestSizes(control.batches).map((sizes) => sizes.sort()), [[1], [1, 2], [
      1,
    ]]);
    assert.deepEqual(
      [...acks, second].map((ack) => [
        ack.type,
        ack.seq,
        ack.accepted,
        ack.duplicates,
        ack.rejected.length,
      ]),
      [["ack", 1, 1, 0, 0], ["ack", 1, 2, 1, 0], ["ack", 9, 1, 0, 1], ["ack", 2, 1, 0, 0]],
    );
  } finally {
    await Promise.all(clients.map((client) => client.close()));
    await live.close();
    await server.shutdown();
  }
});

redisTest(
  "16 concurrent single-event HTTP clients on Redis share EVALSHAs and every event counts once",
  async (fixture) => {
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    const redis = new Redis({ url: proxy.url, token: fixture.restToken, enableTelemetry: false });
    const store = new RedisStore(redis, { now: () => NOW });
    const streams = compileConfig(TEST_CONFIG);
    const app = createApp({ streams, store, keys: await KeyRing.parse(""), now: () => NOW });
    const listening = Promise.withResolvers<number>();
    const server = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen: ({ port }) => listening.resolve(port) },
      app.fetch,
    );
    const base = `http://127.0.0.1:${await listening.promise}`;
    try {
      const CLIENTS = 16;
      const EACH = 20;
      const replies: IngestReply[] = [];
      await Promise.all(Array.from({ length: CLIENTS }, async (_, client) => {
        for (let i = 0; i < EACH; i++) {
          const res = await fetch(`${base}/v1/streams/orders/events`, {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify(order(`c${client}-${i}`, { country: `C${client % 4}` })),
          });
          assert.equal(res.status, 202);
          replies.push(await res.json());
        }
      }));
      const requests = CLIENTS * EACH;
      const scripts = proxy.take().flatMap(commandNames)
        .filter((name) => name === "evalsha" || name === "eval").length;
      assert.ok(scripts <= requests / 2, `${scripts} script calls for ${requests} requests`);
      assert.deepEqual(
        replies.filter((reply) => reply.accepted !== 1 || reply.duplicates + reply.late !== 0),
        [],
      );
      const stats = await store.stats("orders", streams.get("orders")!.counterMetas);
      assert.deepEqual([stats.accepted, stats.applied, stats.duplicates], [requests, requests, 0]);
      const res = await fetch(`${base}/v1/streams/orders/counters/count_1m`);
      const windows: Array<{ group: { country: string }; value: number }> =
        (await res.json()).windows;
      assert.deepEqual(
        windows.map((window) => [window.group.country, window.value]).sort(),
        [0, 1, 2, 3].map((n) => [`C${n}`, requests / 4]),
      );
    } finally {
      await server.shutdown();
      await proxy.close();
    }
  },
);

/**
 * An API stream deleted on another instance while one of its ingest requests is in the store and
 * two wait in its group: all three, and one sent after, are 404 and nothing is counted in any
 * incarnation; the ingesting instance learns of the DELETE from the store's refusal. (The same
 * instance deleting it: tests/http/ingest_after_delete_test.ts.)
 */
async function deletedWhileQueued(
  inner: Store,
  registry: () => StreamRegistry,
): Promise<void> {
  const { store, control } = gatedStore(inner.kind, inner);
  const keys = await KeyRing.parse("");
  const streams = registry();
  const groupCommit = new GroupCommitter(streams.wrap(store));
  const app = createApp({ streams, store, keys, now: () => NOW, groupCommit });
  const admin = createApp({ streams: registry(), store: inner, keys, now: () => NOW });
  const created = await app.request("/v1/streams/signups", {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } }),
  });
  assert.equal(created.status, 201);
  const post = (plan: string) => postEvents(app, [{ plan }], { stream: "signups" });
  control.hold();
  const running = post("a");
  await until("the first apply", () => control.batches.length === 1);
  const queued = [post("b"), post("c")];
  await until("two requests waiting", () => groupCommit.stats.waiting === 2);
  const deleted = await admin.request("/v1/streams/signups", { method: "DELETE" });
  assert.equal(deleted.status, 204);
  control.release();
  for (const res of [...await Promise.all([running, ...queued]), await post("d")]) {
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error.code, "stream_not_found");
  }
  for (const generation of [0, 1, 2]) {
    const stats = await inner.stats(generationKey("signups", generation), []);
    assert.deepEqual([stats.accepted, stats.applied], [0, 0], `generation ${generation}`);
  }
}

redisTest(
  "redis: ingest requests of a stream deleted on another instance while they ran or waited in its group are 404 and write nothing",
  async (fixture) => {
    const redis = () => restClient(fixture);
    await deletedWhileQueued(
      new RedisStore(redis(), { definitionsHere: true }),
      () =>
        new StreamRegistry(compileConfig({ streams: {} }), {
          definitions: new RedisDefinitionStore(redis()),
          pollMs: 0,
        }),
    );
  },
);
