import assert from "node:assert/strict";
import { withContext } from "@logtape/logtape";

import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import {
  filterPatternBudgetMessage,
  LiveHub,
  matchesSubscription,
  type Subscription,
  type SubscriptionStart,
} from "../../src/fanout/live.ts";
import type { PublicPayload } from "../../src/fanout/payload.ts";
import { ingestFanoutFor, ingestItems } from "../../src/ingest/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import { Redis } from "@upstash/redis";
import { type RedisFixture, redisTest } from "../_redis.ts";
import {
  MAX_LOG_ENTRIES,
  StoreRequestTooLargeError,
  StoreUnavailableError,
} from "../../src/store/types.ts";
import { compileExpression, MAX_REQUEST_PATTERN_COMPILE } from "../../src/transform/mod.ts";
import { at, NOW, TEST_CONFIG } from "../_fixtures.ts";
import { eventually, within } from "../_live.ts";
import { jsonLines, writtenLogs } from "../_logs.ts";

const streams = compileConfig(TEST_CONFIG);
const orders = streams.get("orders")!;

function setup(
  options: {
    updateIntervalMs?: number;
    shared?: boolean;
    maxRememberedWindows?: number;
    readLimit?: number;
  } = {},
) {
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, ...options });
  const ingest = (events: object[]) =>
    ingestItems(orders, events.map((value) => ({ ok: true as const, value })), {
      ...ingestFanoutFor("orders", { demand: [live], observers: [live.observer] }),
      store,
      nowMs: NOW,
    });
  return { store, live, ingest };
}

function collector() {
  const received: PublicPayload[] = [];
  const ids: string[] = [];
  const closed: string[] = [];
  const starts: SubscriptionStart[] = [];
  return {
    received,
    ids,
    closed,
    starts,
    sink: {
      open: (start: SubscriptionStart) => starts.push(start),
      send: (payload: PublicPayload, id: string) => {
        received.push(payload);
        ids.push(id);
      },
      close: (r: string) => closed.push(r),
    },
  };
}

function subscription(types: string[], extra: Partial<Subscription> = {}): Subscription {
  return { stream: "orders", types: new Set(types) as Subscription["types"], ...extra };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("LiveHub throttles window.updated per counter and group: many batches, few updates, the last final", async () => {
  const { live, ingest } = setup({ updateIntervalMs: 100 });
  const { received, sink } = collector();
  const stop = await live.subscribe(
    subscription(["window.updated"], { counter: "count_1m" }),
    sink,
  );
  try {
    const started = Date.now();
    for (let i = 0; i < 60; i++) {
      await ingest([{ id: `e${i}`, ts: at(10), country: "DE" }]);
      await sleep(5);
    }
    const elapsed = Date.now() - started;
    await eventually(() => received.at(-1)?.data.value === 60);
    await sleep(150);
    const de = received.filter((payload) =>
      (payload.data.group as { country: string }).country === "DE"
    );
    assert.equal(de.length, received.length);
    // Leading edge plus one per 100 ms interval, at most.
    assert.ok(de.length <= Math.ceil(elapsed / 100) + 2, `${de.length} updates in ${elapsed} ms`);
    assert.ok(de.length < 60 / 2, `${de.length} updates`);
    assert.deepEqual(de.at(-1), {
      type: "window.updated",
      timestamp: new Date(NOW).toISOString(),
      data: {
        stream: "orders",
        counter: "count_1m",
        aggregate: "count",
        group: { country: "DE" },
        start: at(0),
        end: at(60),
        value: 60,
      },
    });
    const values = de.map((payload) => payload.data.value as number);
    assert.deepEqual(values, [...values].sort((a, b) => a - b));
  } finally {
    stop();
    await live.close();
  }
});

Deno.test("LiveHub publishes window.updated for every window a pane belongs to (hopping, sliding)", async () => {
  const { live, ingest } = setup();
  const { received, sink } = collector();
  const stop = await live.subscribe(subscription(["window.updated"]), sink);
  try {
    await ingest([{ id: "h", ts: at(90), country: "DE", amount: 2, customer: "c1" }]);
    await eventually(() => received.length >= 8);
    const windowsOf = (counter: string) =>
      received.filter((payload) => payload.data.counter === counter).map((p) => p.data.start)
        .sort();
    assert.deepEqual(windowsOf("doubled_hop"), [at(0), at(60)]);
    assert.deepEqual(windowsOf("customers_sliding"), [at(-60), at(0), at(60)]);
    assert.deepEqual(windowsOf("count_1m"), [at(60)]);
  } finally {
    stop();
    await live.close();
  }
});

Deno.test("LiveHub reads the windows a batch touched a few at a time, never all of a sliding day's 1,440 in one store read", async () => {
  const day = compileConfig({
    streams: {
      orders: {
        time: { field: "ts" },
        counters: { daily: { window: { sliding: "1d", precision: "1m" }, aggregate: "count" } },
      },
    },
  });
  const memory = new MemoryStore({ now: () => NOW });
  const reads: number[] = [];
  // Every call but readWindows goes to the store as it is.
  const store = new Proxy(memory, {
    get(target, property) {
      if (property === "readWindows") {
        return (...args: Parameters<MemoryStore["readWindows"]>) => {
          reads.push(args[2].reduce((sum, read) => sum + read.panes.length, 0));
          return target.readWindows(...args);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const live = new LiveHub(day, store, { pollMs: 10 });
  const { received, sink } = collector();
  const stop = await live.subscribe(subscription(["window.updated"]), sink);
  try {
    await ingestItems(day.get("orders")!, [{ ok: true as const, value: { ts: at(30) } }], {
      ...ingestFanoutFor("orders", { demand: [live], observers: [live.observer] }),
      store,
      nowMs: NOW,
    });
    await eventually(() => received.length >= 1440);
    // One Redis script merging 1,440 windows of 1,440 panes blocked Redis for seconds.
    assert.equal(reads.reduce((sum, panes) => sum + panes, 0), 1440 * 1440);
    assert.ok(Math.max(...reads) < 4096 + 1440, `reads of ${Math.max(...reads)} panes`);
  } finally {
    stop();
    await live.close();
  }
});

/** `counter@start` of each message, sorted. */
function windowsOf(payloads: PublicPayload[]): string[] {
  return payloads.map((payload) => `${payload.data.counter}@${payload.data.start}`).sort();
}

Deno.test("LiveHub publishes each window a batch touched once, nothing more until a value changes, then only what changed", async () => {
  const { live, ingest } = setup({ updateIntervalMs: 20 });
  const { received, sink } = collector();
  const stop = await live.subscribe(subscription(["window.updated"]), sink);
  try {
    await ingest([
      { id: "a", ts: at(90), country: "DE", amount: 2, customer: "c1" },
      { id: "b", ts: at(91), country: "DE", amount: 1, customer: "c1" },
    ]);
    const first = [
      `count_1m@${at(60)}`,
      `customers_sliding@${at(-60)}`,
      `customers_sliding@${at(0)}`,
      `customers_sliding@${at(60)}`,
      `doubled_hop@${at(0)}`,
      `doubled_hop@${at(60)}`,
      `max_1m@${at(60)}`,
      `sum_1m@${at(60)}`,
    ];
    await eventually(() => received.length >= first.length);
    // Several update intervals pass without new events: nothing is published again.
    await sleep(120);
    assert.deepEqual(windowsOf(received), first);
    assert.equal(live.stats.updatesPublished, first.length);

    // Same customer (distinct unchanged), smaller amount (max unchanged).
    await ingest([{ id: "c", ts: at(95), country: "DE", amount: 1, customer: "c1" }]);
    await eventually(() => received.length >= first.length + 4);
    await sleep(120);
    const second = received.slice(first.length);
    assert.deepEqual(windowsOf(second), [
      `count_1m@${at(60)}`,
      `doubled_hop@${at(0)}`,
      `doubled_hop@${at(60)}`,
      `sum_1m@${at(60)}`,
    ]);
    assert.deepEqual(second.map((payload) => payload.data.value), [3, 4, 8, 8]);
  } finally {
    stop();
    await live.close();
  }
});

Deno.test("LiveHub forgets what it published for windows that became final or while nobody subscribes, and remembers at most maxRememberedWindows", async () => {
  const { live, ingest } = setup({ updateIntervalMs: 10 });
  const { received, sink } = collector();
  const stop = await live.subscribe(subscription(["window.updated"]), sink);
  try {
    await ingest([{ id: "a", ts: at(90), country: "DE", amount: 2, customer: "c1" }]);
    await eventually(() => received.length === 8);
    assert.equal(live.stats.remembered, 8);
    // The watermark moves past every window of the first event plus the 30 s lateness.
    await ingest([{ id: "b", ts: at(400), country: "FR" }]);
    await eventually(() => received.length === 8 + 3);
    await sleep(30);
    assert.deepEqual(windowsOf(received.slice(8)), [
      `count_1m@${at(360)}`,
      `doubled_hop@${at(300)}`,
      `doubled_hop@${at(360)}`,
    ]);
    assert.equal(live.stats.remembered, 3);
    // While nobody wants window.updated, values change unseen: forget them all.
    stop();
    await ingest([{ id: "c", ts: at(401), country: "FR" }]);
    assert.equal(live.stats.remembered, 0);
  } finally {
    stop();
    await live.close();
  }

  const small = setup({ updateIntervalMs: 10, maxRememberedWindows: 3 });
  const other = collector();
  const stopSmall = await small.live.subscribe(subscription(["window.updated"]), other.sink);
  try {
    await small.ingest([{ id: "a", ts: at(90), country: "DE", amount: 2, customer: "c1" }]);
    await eventually(() => other.received.length === 8);
    assert.equal(small.live.stats.remembered, 3);
  } finally {
    stopSmall();
    await small.live.close();
  }
});

Deno.test("LiveHub publishes nothing while no subscriber anywhere wants it, shared store or not", async () => {
  for (const shared of [false, true]) {
    const { store, live, ingest } = setup({ shared });
    await ingest([{ id: "a", ts: at(1), country: "DE" }]);
    await sleep(30);
    const log = await store.readLog("orders", null, 100);
    assert.equal(log.some((entry) => entry.record.type === "window.updated"), false);
    await live.close();
  }
});

Deno.test("LiveHub's observer is idle for a stream nobody here subscribes to, store not shared: a subscriber who comes gets window.updated of the next batch, also of one applied while it subscribed", async () => {
  // On a shared store each batch says what subscribers elsewhere want: never idle.
  const elsewhere = setup({ shared: true }).live;
  assert.equal(elsewhere.observer.idle?.(orders), false);
  await elsewhere.close();
  const { store, live, ingest } = setup({ updateIntervalMs: 0 });
  const count = (received: PublicPayload[]) =>
    received.filter((payload) => payload.data.counter === "count_1m").at(-1)?.data.value;
  const first = collector();
  const second = collector();
  const stops: (() => void)[] = [];
  try {
    assert.equal(live.observer.idle?.(orders), true);
    await ingest([{ id: "a", ts: at(1), country: "DE" }]);
    stops.push(await live.subscribe(subscription(["window.updated"]), first.sink));
    assert.equal(live.observer.idle?.(orders), false);
    await ingest([{ id: "b", ts: at(2), country: "DE" }]);
    await eventually(() => count(first.received) === 2);
    // A batch whose apply ends while a subscriber comes: asked after it, the hub is told of it.
    stops.pop()!();
    await eventually(() => live.observer.idle?.(orders) === true);
    let release = () => {};
    const gate = new Promise<void>((resolve) => release = resolve);
    const gated = Object.assign(Object.create(store), {
      async applyBatch(batch: unknown) {
        const result = await store.applyBatch(batch as Parameters<MemoryStore["applyBatch"]>[0]);
        await gate;
        return result;
      },
    }) as MemoryStore;
    const applying = ingestItems(orders, [{
      ok: true,
      value: { id: "c", ts: at(3), country: "DE" },
    }], {
      ...ingestFanoutFor("orders", { demand: [live], observers: [live.observer] }),
      store: gated,
      nowMs: NOW,
    });
    stops.push(await live.subscribe(subscription(["window.updated"]), second.sink));
    release();
    await applying;
    await eventually(() => count(second.received) === 3);
  } finally {
    for (const stop of stops) stop();
    await live.close();
  }
});

Deno.test("LiveHub on a shared store publishes what another instance's subscribers signalled", async () => {
  const { store, live, ingest } = setup({ shared: true });
  await store.signalDemand("orders", ["window.updated"], 10_000);
  await ingest([{ id: "a", ts: at(1), country: "DE" }]);
  await eventually(async () =>
    (await store.readLog("orders", null, 100)).some((entry) =>
      entry.record.type === "window.updated"
    )
  );
  assert.equal(live.wants("orders", "window.updated"), true);
  assert.equal(live.wants("orders", "event.processed"), false);
  await live.close();
});

Deno.test("LiveHub on a shared store has a batch's events logged if the store's demand wants them while what other instances want is unknown", async () => {
  let now = NOW;
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, shared: true, now: () => now });
  const ingest = (id: string) =>
    ingestItems(orders, [{ ok: true as const, value: { id, ts: at(1), country: "DE" } }], {
      ...ingestFanoutFor("orders", { demand: [live], observers: [live.observer] }),
      store,
      nowMs: NOW,
    });
  const logged = async () =>
    (await store.readLog("orders", null, 1000))
      .filter((entry) => entry.record.type === "event.processed")
      .map((entry) => (entry.record as { event: { id: string } }).event.id);
  // This instance has applied nothing yet: it cannot know, so the store decides.
  assert.equal(live.wants("orders", "event.processed"), false);
  assert.equal(live.mayWant("orders", "event.processed"), true);
  assert.deepEqual(ingestFanoutFor("orders", { demand: [live], observers: [] }).log, {
    processed: true,
    late: true,
    ifWanted: true,
  });
  // Nobody subscribes anywhere: nothing logged, and the reply says so.
  await ingest("unwanted");
  assert.deepEqual(await logged(), []);
  assert.equal(live.mayWant("orders", "event.processed"), false);
  // A subscriber on another instance; this one learns it from its next apply's reply only once
  // what it knew expires (10 s): that first batch is logged by the store's demand.
  await store.signalDemand("orders", ["event.processed"], 60_000);
  now += 10_001;
  assert.equal(live.mayWant("orders", "event.processed"), true);
  await ingest("first");
  assert.deepEqual(await logged(), ["first"]);
  assert.equal(live.wants("orders", "event.processed"), true);
  await ingest("second");
  assert.deepEqual(await logged(), ["first", "second"]);
  await live.close();

  // Not shared: this instance's subscribers are all there are.
  const alone = new LiveHub(streams, new MemoryStore({ now: () => NOW }));
  assert.equal(alone.mayWant("orders", "event.processed"), false);
  await alone.close();
});

Deno.test("LiveHub on a shared store logs a batch's events after it when its reply shows a subscriber the batch went without", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, shared: true });
  const ingest = (id: string) =>
    ingestItems(orders, [{ ok: true as const, value: { id, ts: at(1), country: "DE" } }], {
      ...ingestFanoutFor("orders", { demand: [live], observers: [live.observer] }),
      store,
      nowMs: NOW,
    });
  const logged = async () =>
    (await store.readLog("orders", null, 1000))
      .filter((entry) => entry.record.type === "event.processed")
      .map((entry) => (entry.record as { event: { id: string } }).event.id);
  // A busy instance: its last reply said nobody wants events, and it takes that as known.
  await ingest("unwanted");
  assert.equal(live.mayWant("orders", "event.processed"), false);
  assert.equal(ingestFanoutFor("orders", { demand: [live], observers: [] }).log, undefined);
  // A subscriber comes on another instance; the next batch goes without its events.
  await store.signalDemand("orders", ["event.processed"], 60_000);
  await ingest("next");
  await eventually(async () => (await logged()).length === 1);
  assert.deepEqual(await logged(), ["next"], "logged after the batch, from its reply");
  await ingest("after");
  assert.deepEqual(await logged(), ["next", "after"], "then with the batch, once each");
  await live.close();
});

/**
 * Two instances on one Redis: `busy` ingests, `other` serves subscribers (polling its log every
 * `otherPollMs`); `run` gets them, and they are closed after it.
 */
async function twoInstances(
  fixture: RedisFixture,
  otherPollMs: number,
  run: (instances: {
    busyLive: LiveHub;
    otherLive: LiveHub;
    ingest: (id: string) => Promise<unknown>;
  }) => Promise<void>,
): Promise<void> {
  const redis = () =>
    new Redis({ url: fixture.restUrl, token: fixture.restToken, enableTelemetry: false });
  const busy = new RedisStore(redis(), { now: () => NOW });
  const other = new RedisStore(redis(), { now: () => NOW });
  const busyLive = new LiveHub(streams, busy, { pollMs: 10, shared: true });
  const otherLive = new LiveHub(streams, other, { pollMs: otherPollMs, shared: true });
  const ingest = (id: string) =>
    ingestItems(orders, [{ ok: true as const, value: { id, ts: at(1), country: "DE" } }], {
      ...ingestFanoutFor("orders", { demand: [busyLive], observers: [busyLive.observer] }),
      store: busy,
      nowMs: NOW,
    });
  try {
    await run({ busyLive, otherLive, ingest });
  } finally {
    await busyLive.close();
    await otherLive.close();
    await busy.close();
    await other.close();
  }
}

/** The ids of the `event.processed` payloads received. */
function eventIds(received: PublicPayload[]): string[] {
  return received.map((payload) => (payload.data as { event: { id: string } }).event.id);
}

redisTest(
  "a subscriber on one instance gets the events of the next batch another, busy, instance applies on Redis",
  (fixture) =>
    twoInstances(fixture, 10, async ({ busyLive, otherLive, ingest }) => {
      await ingest("before");
      assert.equal(
        busyLive.mayWant("orders", "event.processed"),
        false,
        "it takes its reply as known",
      );
      const { received, sink } = collector();
      const stop = await otherLive.subscribe(subscription(["event.processed"]), sink);
      await ingest("next");
      await ingest("after");
      await eventually(() => received.length >= 2);
      await sleep(100);
      assert.deepEqual(eventIds(received).sort(), ["after", "next"]);
      stop();
    }),
);

redisTest(
  "a subscriber joining a stream its instance already follows gets every event applied elsewhere once it is subscribed",
  // The other instance polls seldom: what a new subscriber wants must not wait for its next poll.
  (fixture) =>
    twoInstances(fixture, 2_000, async ({ busyLive, otherLive, ingest }) => {
      // The dashboard's subscription: the stream's tail on the other instance exists already.
      const first = collector();
      const stopFirst = await otherLive.subscribe(subscription(["window.updated"]), first.sink);
      await ingest("before");
      assert.equal(busyLive.mayWant("orders", "event.processed"), false);
      const { received, sink } = collector();
      const stop = await otherLive.subscribe(subscription(["event.processed"]), sink);
      await ingest("next");
      await eventually(() => received.length >= 1, 10_000);
      await sleep(100);
      assert.deepEqual(eventIds(received), ["next"]);
      stop();
      stopFirst();
    }),
);

Deno.test("LiveHub asks ingest to log event.processed only while a subscriber wants it", async () => {
  const { store, live, ingest } = setup();
  const types = async () => (await store.readLog("orders", null, 1000)).map((e) => e.record.type);
  await ingest([{ id: "before", ts: at(1), country: "DE" }]);
  assert.deepEqual(await types(), []);
  assert.equal(live.wants("orders", "event.processed"), false);

  const { received, sink } = collector();
  const stop = await live.subscribe(subscription(["event.processed"]), sink);
  assert.equal(live.wants("orders", "event.processed"), true);
  assert.equal(live.wants("orders", "event.late"), false);
  await ingest([{ id: "during", ts: at(2), country: "DE", amount: 3 }]);
  await eventually(() => received.length === 1);
  assert.deepEqual(received[0].data, {
    stream: "orders",
    time: at(2),
    event: { id: "during", ts: at(2), country: "DE", amount: 3, doubled: 6 },
  });
  stop();
  assert.equal(live.wants("orders", "event.processed"), false);
  await ingest([{ id: "after", ts: at(3), country: "DE" }]);
  assert.deepEqual(await types(), ["event.processed"]);
  await live.close();
});

Deno.test("LiveHub starts a subscriber at the log's end and stops tailing when the last one leaves", async () => {
  const { store, live } = setup();
  const record = (group: string) => ({
    type: "window.closed" as const,
    counter: "count_1m",
    start: Date.parse(at(0)),
    end: Date.parse(at(60)),
    group,
    state: { count: 1, sum: 0, min: null, max: null, distinct: 0, approximate: false },
  });
  await store.appendLog("orders", [record('["old"]')]);
  const { received, sink } = collector();
  const stop = await live.subscribe(subscription(["window.closed"]), sink);
  assert.equal(live.stats.tails, 1);
  await store.appendLog("orders", [record('["new"]')]);
  await eventually(() => received.length === 1);
  await sleep(30);
  assert.deepEqual(received.map((payload) => payload.data.group), [{ country: "new" }]);
  stop();
  assert.deepEqual(live.stats, {
    subscribers: 0,
    tails: 0,
    updatesPublished: 0,
    remembered: 0,
    behind: 0,
  });
  await store.appendLog("orders", [record('["later"]')]);
  await sleep(30);
  assert.equal(received.length, 1);
  await live.close();
});

function closedRecord(group: string) {
  return {
    type: "window.closed" as const,
    counter: "count_1m",
    start: Date.parse(at(0)),
    end: Date.parse(at(60)),
    group: JSON.stringify([group]),
    state: { count: 1, sum: 0, min: null, max: null, distinct: 0, approximate: false },
  };
}

async function appendClosed(store: MemoryStore, groups: string[]): Promise<void> {
  await store.appendLog("orders", groups.map(closedRecord));
}

Deno.test("LiveHub.subscribe() with afterId replays what followed it, then hands over to the tail: none missed, none twice", async () => {
  const { store, live } = setup({ readLimit: 2 });
  const id = (n: number) => `${NOW}-${n}`;
  const range = (from: number, to: number) =>
    Array.from({ length: to - from + 1 }, (_, i) => id(from + i));
  const a = collector();
  const b = collector();
  const c = collector();
  const d = collector();
  const stops = [await live.subscribe(subscription(["window.closed"]), a.sink)];
  try {
    assert.deepEqual(a.starts, [{ afterId: "0-0" }]);
    await appendClosed(store, ["r0", "r1", "r2", "r3", "r4", "r5"]);
    await eventually(() => a.ids.length === 6);
    // The tail is at r5: B gets r2..r5 from the log (pages of 2), then r6, r7 from the tail.
    stops.push(
      await live.subscribe(subscription(["window.closed"]), b.sink, { afterId: id(1) }),
    );
    assert.deepEqual(b.starts, [{ afterId: id(1), resumed: true }]);
    assert.deepEqual(b.ids, range(2, 5));
    await appendClosed(store, ["r6", "r7"]);
    await eventually(() => a.ids.length === 8 && b.ids.length === 6);

    // r8, r9 are logged but the tail has not read them yet: C resumes past the
    // tail's cursor and must not get them from the tail; D resumes before them.
    await appendClosed(store, ["r8", "r9"]);
    stops.push(
      await live.subscribe(subscription(["window.closed"]), c.sink, { afterId: id(9) }),
      await live.subscribe(subscription(["window.closed"]), d.sink, { afterId: id(7) }),
    );
    assert.deepEqual([c.ids, d.ids], [[], []]);
    await appendClosed(store, ["r10"]);
    await eventually(() => a.ids.length === 11 && d.ids.length === 3 && c.ids.length === 1);
    await sleep(30);
    assert.deepEqual(a.ids, range(0, 10));
    assert.deepEqual(b.ids, range(2, 10));
    assert.deepEqual(c.ids, range(10, 10));
    assert.deepEqual(d.ids, range(8, 10));
    assert.deepEqual(
      d.received.map((payload) => payload.data.group),
      [{ country: "r8" }, { country: "r9" }, { country: "r10" }],
    );
  } finally {
    for (const stop of stops) stop();
    await live.close();
  }
});

Deno.test("LiveHub.subscribe() with an afterId the log cannot resume from says why and starts at the log's end", async () => {
  const { store, live } = setup();
  const first = collector();
  const stops = [
    await live.subscribe(subscription(["window.closed"]), first.sink, { afterId: "5-0" }),
  ];
  try {
    assert.deepEqual(first.starts, [{
      afterId: "0-0",
      resumed: false,
      reason: "Cannot resume after '5-0': the result log of stream 'orders' ends at '0-0'",
    }]);
    await appendClosed(store, ["r0", "r1"]);
    await eventually(() => first.ids.length === 2);
    const cases: Array<[string, string]> = [
      ["nope", "Cannot resume after 'nope': not a result log id (<ms>-<seq>)"],
      ["12-x", "Cannot resume after '12-x': not a result log id (<ms>-<seq>)"],
      [
        `${NOW}-2`,
        `Cannot resume after '${NOW}-2': the result log of stream 'orders' ends at '${NOW}-1'`,
      ],
    ];
    const refused: Array<ReturnType<typeof collector>> = [];
    for (const [afterId, reason] of cases) {
      const sink = collector();
      stops.push(await live.subscribe(subscription(["window.closed"]), sink.sink, { afterId }));
      assert.deepEqual(sink.starts, [{ afterId: `${NOW}-1`, resumed: false, reason }], afterId);
      refused.push(sink);
    }
    await appendClosed(store, ["r2"]);
    await eventually(() => refused.every((sink) => sink.ids.length === 1));
    await sleep(30);
    for (const sink of refused) assert.deepEqual(sink.ids, [`${NOW}-2`]);
  } finally {
    for (const stop of stops) stop();
    await live.close();
  }
});

Deno.test("LiveHub refuses to resume after an id of a log deleted since (a store restarted, a stream deleted and created again) rather than say resumed with what it lost missing", async () => {
  // The log a subscriber read up to r0, then lost with the process (or its stream's delete): r1
  // and r2 followed r0 there, and are gone.
  const before = new MemoryStore({ now: () => NOW });
  await appendClosed(before, ["r0", "r1", "r2"]);
  const [seen] = await before.readLog("orders", null, 1);
  // The log of the store after it: an entry of its own, later.
  const store = new MemoryStore({ now: () => NOW + 1_000 });
  await appendClosed(store, ["s0"]);
  const [oldest] = await store.readLog("orders", null, 1);
  const live = new LiveHub(streams, store, { pollMs: 10 });
  const refused = collector();
  const fromStart = collector();
  const stops = [
    await live.subscribe(subscription(["window.closed"]), refused.sink, { afterId: seen.id }),
    // 0-0 (what a subscription begun on an empty log starts after) still resumes.
    await live.subscribe(subscription(["window.closed"]), fromStart.sink, { afterId: "0-0" }),
  ];
  try {
    assert.deepEqual(refused.starts, [{
      afterId: oldest.id,
      resumed: false,
      reason:
        `Cannot resume after '${seen.id}': the result log of stream 'orders' starts at '${oldest.id}' and never had that id (its stream deleted and created again, or the store's log lost)`,
    }]);
    assert.deepEqual(refused.ids, []);
    assert.deepEqual(fromStart.starts, [{ afterId: "0-0", resumed: true }]);
    assert.deepEqual(fromStart.ids, [oldest.id]);
    // Live results follow the refusal.
    await appendClosed(store, ["s1"]);
    await eventually(() => refused.ids.length === 1);
  } finally {
    for (const stop of stops) stop();
    await live.close();
  }
});

redisTest(
  "LiveHub on Redis refuses to resume after an id of a log deleted since, and still resumes after its own oldest entry",
  async (fixture) => {
    const redis = () =>
      new Redis({ url: fixture.restUrl, token: fixture.restToken, enableTelemetry: false });
    // The stream's log before its delete, and the log of the stream created again (another key).
    const before = new RedisStore(redis(), { prefix: "gone" });
    const store = new RedisStore(redis(), { prefix: "again" });
    const record = (n: number) => ({ type: "event.processed" as const, event: { n }, timeMs: n });
    await before.appendLog("orders", [record(1), record(2)]);
    const [seen] = await before.readLog("orders", null, 1);
    await sleep(5);
    await store.appendLog("orders", [record(3), record(4)]);
    const [oldest, newest] = await store.readLog("orders", null, 2);
    const live = new LiveHub(streams, store, { pollMs: 10, shared: true });
    const refused = collector();
    const resumed = collector();
    const stops = [
      await live.subscribe(subscription(["event.processed"]), refused.sink, { afterId: seen.id }),
      await live.subscribe(subscription(["event.processed"]), resumed.sink, { afterId: oldest.id }),
    ];
    try {
      assert.equal(refused.starts[0].resumed, false);
      assert.equal(
        refused.starts[0].reason,
        `Cannot resume after '${seen.id}': the result log of stream 'orders' starts at '${oldest.id}' and never had that id (its stream deleted and created again, or the store's log lost)`,
      );
      assert.deepEqual(resumed.starts, [{ afterId: oldest.id, resumed: true }]);
      assert.deepEqual(resumed.ids, [newest.id]);
    } finally {
      for (const stop of stops) stop();
      await live.close();
      await before.close();
      await store.close();
    }
  },
);

Deno.test("LiveHub ends a resumed subscription with a reason when the log is trimmed past it during the replay", async () => {
  const { store, live } = setup({ readLimit: 2 });
  const full = Array.from({ length: MAX_LOG_ENTRIES }, (_, i) => `r${i}`);
  await appendClosed(store, full);
  const { ids, closed, sink } = collector();
  let trimmed = false;
  await live.subscribe(subscription(["window.closed"]), {
    ...sink,
    send(payload, id) {
      sink.send(payload, id);
      if (trimmed) return;
      trimmed = true;
      // More entries than the memory store lets its log run over its bound (1/64 of it) push
      // the oldest out, among them ones not replayed yet.
      const more = Math.ceil(MAX_LOG_ENTRIES / 64) + 10;
      store.appendLog("orders", Array.from({ length: more }, (_, i) => closedRecord(`n${i}`)));
    },
  }, { afterId: `${NOW}-0` });
  // Without the check the replay would skip from r2 to r10 and go on (a cheap failure).
  assert.equal(ids.length, 2, `${ids.length} replayed`);
  assert.deepEqual(ids, [`${NOW}-1`, `${NOW}-2`]);
  assert.deepEqual(closed, [
    `Cannot resume after '${NOW}-0': the result log of stream 'orders' was trimmed past '${NOW}-2' during the replay`,
  ]);
  assert.equal(live.stats.subscribers, 0);
  await live.close();
});

Deno.test("LiveHub.subscribe() ends the subscription when its signal aborts, also during the replay", async () => {
  const { store, live } = setup({ readLimit: 1 });
  await appendClosed(store, ["r0", "r1", "r2", "r3"]);
  const aborting = new AbortController();
  const { ids, sink } = collector();
  await live.subscribe(subscription(["window.closed"]), {
    ...sink,
    send(payload, id) {
      sink.send(payload, id);
      aborting.abort(); // after the first replayed message
    },
  }, { afterId: `${NOW}-0`, signal: aborting.signal });
  assert.deepEqual(ids, [`${NOW}-1`]);
  assert.equal(live.stats.subscribers, 0);
  await live.close();
});

Deno.test("LiveHub.close() ends every subscription with a reason", async () => {
  const { live } = setup();
  const { closed, sink } = collector();
  await live.subscribe(subscription(["window.closed"]), sink);
  await live.close();
  assert.deepEqual(closed, ["Server is shutting down"]);
  assert.equal(live.stats.subscribers, 0);
  await assert.rejects(() => live.subscribe(subscription(["window.closed"]), sink), /closed/);
});

Deno.test("LiveHub.close() settles once every subscriber's connection closed (LiveSink.closed)", async () => {
  const { live } = setup();
  const { closed, sink } = collector();
  const connectionClosed = Promise.withResolvers<void>();
  await live.subscribe(subscription(["window.closed"]), {
    ...sink,
    closed: () => connectionClosed.promise,
  });
  let settled = false;
  const closing = live.close().then(() => settled = true);
  await new Promise((resolve) => setTimeout(resolve, 0)); // every other wait of the close is done
  assert.deepEqual(closed, ["Server is shutting down"], "told at once");
  assert.equal(settled, false, "still waiting for the connection");
  connectionClosed.resolve();
  await closing;
  assert.equal(settled, true);
});

Deno.test("matchesSubscription() applies types, counter and the CEL filter", () => {
  const payload: PublicPayload = {
    type: "window.updated",
    timestamp: at(0),
    data: { stream: "orders", counter: "sum_1m", group: { country: "DE" }, value: 12 },
  };
  const event: PublicPayload = {
    type: "event.processed",
    timestamp: at(0),
    data: { stream: "orders", time: at(0), event: { id: "a" } },
  };
  const filter = compileExpression("payload.data.value > 10.0", ["payload"]);
  assert.equal(matchesSubscription(subscription(["window.updated"]), payload), true);
  assert.equal(matchesSubscription(subscription(["window.closed"]), payload), false);
  assert.equal(
    matchesSubscription(subscription(["window.updated"], { counter: "sum_1m" }), payload),
    true,
  );
  assert.equal(
    matchesSubscription(subscription(["window.updated"], { counter: "count_1m" }), payload),
    false,
  );
  assert.equal(
    matchesSubscription(subscription(["event.processed"], { counter: "count_1m" }), event),
    true,
  );
  assert.equal(matchesSubscription(subscription(["window.updated"], { filter }), payload), true);
  assert.equal(
    matchesSubscription(subscription(["window.updated"], { filter }), {
      ...payload,
      data: { ...payload.data, value: 3 },
    }),
    false,
  );
  // A filter that fails on a message (no data.value) does not match it.
  assert.equal(matchesSubscription(subscription(["event.processed"], { filter }), event), false);
  // Nor does one that goes past the evaluation budget: 100³ steps, stopped at 100,000.
  const costly = compileExpression(
    "payload.data.event.n.all(a, payload.data.event.n.all(b, payload.data.event.n.all(c, a + b + c > 0.0)))",
    ["payload"],
  );
  const n = Array.from({ length: 100 }, (_, i) => i + 1);
  const many = { ...event, data: { ...event.data, event: { id: "b", n } } } as PublicPayload;
  assert.equal(
    matchesSubscription(subscription(["event.processed"], { filter: costly }), many),
    false,
  );
  // Nor one whose matches() calls go past their budget, though its pattern matches (4,003
  // instructions over 5,000 characters: about 0.5 s of matching, refused before it runs).
  const matching = compileExpression(
    `payload.data.event.s.matches("${"[a-z]{1000}".repeat(4)}[^a]")`,
    ["payload"],
  );
  const long = {
    ...event,
    data: { ...event.data, event: { id: "c", s: `${"a".repeat(4_999)}b` } },
  };
  assert.equal(
    matchesSubscription(
      subscription(["event.processed"], { filter: matching }),
      long as PublicPayload,
    ),
    false,
  );
  const few = {
    ...event,
    data: { ...event.data, event: { id: "c", n: n.slice(0, 5) } },
  } as PublicPayload;
  assert.equal(
    matchesSubscription(subscription(["event.processed"], { filter: costly }), few),
    true,
  );
});

/** `event.processed` records whose `customer` is a pattern of about 4,000 instructions of its own. */
function patternRecords(prefix: string, count: number) {
  return Array.from({ length: count }, (_, i) => ({
    type: "event.processed" as const,
    timeMs: NOW,
    event: { id: `${prefix}${i}`, country: "DE", customer: `^(D|${prefix}${i}x.{0,1000}.{0,990})` },
  }));
}

const PATTERN_FILTER = compileExpression(
  "payload.data.event.country.matches(payload.data.event.customer)",
  ["payload"],
  { returns: "bool" },
);

Deno.test("LiveHub bounds what a filter's patterns taken from messages cost to compile per subscriber a second: past it the subscription ends with the reason; resuming after the last id sent goes on from the message it ended at; a second later the bound is whole again", async () => {
  let clock = NOW;
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, now: () => clock });
  const first = collector();
  const resumed = collector();
  const paced = collector();
  try {
    await live.subscribe(subscription(["event.processed"], { filter: PATTERN_FILTER }), first.sink);
    // 40 at once, within one second: 32 fit 131,072 (each about 4,000 instructions and 32 more).
    await store.appendLog("orders", patternRecords("a", 40));
    await eventually(() => first.closed.length === 1, 10_000);
    assert.deepEqual(first.closed, [filterPatternBudgetMessage(MAX_REQUEST_PATTERN_COMPILE)]);
    assert.deepEqual(eventIds(first.received), patternRecords("a", 32).map((r) => r.event.id));
    // Resumed after the last id sent, with a budget of its own: the rest, none missed.
    const stopResumed = await live.subscribe(
      subscription(["event.processed"], { filter: PATTERN_FILTER }),
      resumed.sink,
      { afterId: first.ids.at(-1)! },
    );
    await eventually(() => resumed.received.length === 8, 10_000);
    assert.deepEqual(
      eventIds(resumed.received),
      patternRecords("a", 40).slice(32).map((r) => r.event.id),
    );
    // Alone: a pattern another subscriber compiled first would be held for it, costing it nothing.
    stopResumed();
    await live.subscribe(subscription(["event.processed"], { filter: PATTERN_FILTER }), paced.sink);
    // 20 and, a second later, 20 more: each second's within the bound.
    await store.appendLog("orders", patternRecords("b", 20));
    await eventually(() => paced.received.length === 20, 10_000);
    clock += 1_000;
    await store.appendLog("orders", patternRecords("c", 20));
    await eventually(() => paced.received.length === 40, 10_000);
    assert.deepEqual(paced.closed, []);
  } finally {
    await live.close();
  }
});

const LITERAL_FILTER = compileExpression(
  "payload.data.event.country.matches('^D')",
  ["payload"],
  { returns: "bool" },
);

Deno.test("LiveHub's filter pattern bound cuts only the subscriber past it: an unfiltered one and a literal-pattern one on the same tail get every message", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, now: () => NOW });
  const cut = collector();
  const plain = collector();
  const literal = collector();
  try {
    await live.subscribe(subscription(["event.processed"], { filter: PATTERN_FILTER }), cut.sink);
    await live.subscribe(subscription(["event.processed"]), plain.sink);
    await live.subscribe(
      subscription(["event.processed"], { filter: LITERAL_FILTER }),
      literal.sink,
    );
    await store.appendLog("orders", patternRecords("a", 40));
    await eventually(() => plain.received.length === 40 && literal.received.length === 40, 10_000);
    await eventually(() => cut.closed.length === 1, 10_000);
    assert.equal(cut.received.length, 32);
    assert.deepEqual(cut.closed, [filterPatternBudgetMessage(MAX_REQUEST_PATTERN_COMPILE)]);
    assert.deepEqual([plain.closed, literal.closed], [[], []]);
  } finally {
    await live.close();
  }
});

Deno.test("LiveHub's filter pattern bound holds for a subscriber behind too: caught up from the log, it is cut at the same message", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, now: () => NOW });
  let ready = false;
  const behind = collector();
  try {
    await live.subscribe(subscription(["event.processed"], { filter: PATTERN_FILTER }), {
      ...behind.sink,
      ready: () => ready,
    });
    await store.appendLog("orders", patternRecords("c", 40));
    await sleep(300);
    assert.equal(behind.received.length, 0);
    // Ready again: the rest comes from the log, the catch-up path, not the tail.
    ready = true;
    await eventually(() => behind.closed.length === 1, 10_000);
    await sleep(300);
    assert.deepEqual(eventIds(behind.received), patternRecords("c", 32).map((r) => r.event.id));
    assert.deepEqual(behind.closed, [filterPatternBudgetMessage(MAX_REQUEST_PATTERN_COMPILE)]);
  } finally {
    await live.close();
  }
});

Deno.test("LiveHub's filter pattern bound starts a new second when the clock steps back", async () => {
  let clock = NOW;
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, now: () => clock });
  const stepped = collector();
  try {
    await live.subscribe(
      subscription(["event.processed"], { filter: PATTERN_FILTER }),
      stepped.sink,
    );
    // 20 and, with the clock 10 s back, 20 more: past the bound were they charged to one second.
    await store.appendLog("orders", patternRecords("d", 20));
    await eventually(() => stepped.received.length === 20, 10_000);
    clock -= 10_000;
    await store.appendLog("orders", patternRecords("e", 20));
    await eventually(() => stepped.received.length === 40, 10_000);
    assert.deepEqual(stepped.closed, []);
  } finally {
    await live.close();
  }
});

Deno.test("LiveHub publishes no window.updated for session counters, and still for the others", async () => {
  const visitStreams = compileConfig({
    streams: {
      visits: {
        time: { field: "ts", lateness: "1m" },
        counters: {
          visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" },
          per_minute: { window: { tumbling: "1m" }, aggregate: "count" },
        },
      },
    },
  });
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(visitStreams, store, { pollMs: 10 });
  const { received, sink } = collector();
  const stop = await live.subscribe(
    { stream: "visits", types: new Set(["window.updated"]) as Subscription["types"] },
    sink,
  );
  try {
    await ingestItems(
      visitStreams.get("visits")!,
      [{ ok: true as const, value: { ts: at(10), user: "u1" } }],
      {
        ...ingestFanoutFor("visits", { demand: [live], observers: [live.observer] }),
        store,
        nowMs: NOW,
      },
    );
    await eventually(() => received.length > 0);
    await sleep(50);
    assert.deepEqual(received.map((payload) => payload.data.counter), ["per_minute"]);
  } finally {
    stop();
    await live.close();
  }
});

Deno.test("LiveHub reads a running tail with the stream as served now: a counter added at run time reaches its subscribers", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const served = new Map(streams);
  const live = new LiveHub(served, store, { pollMs: 10 });
  const first = collector();
  const later = collector();
  const stops = [await live.subscribe(subscription(["window.closed"]), first.sink)];
  try {
    // The stream gains counter `added` (a PUT at run time) while the tail runs.
    const config = structuredClone(TEST_CONFIG) as {
      streams: { orders: { counters: Record<string, unknown> } };
    };
    config.streams.orders.counters.added = { window: { tumbling: "1m" }, aggregate: "count" };
    served.set("orders", compileConfig(config).get("orders")!);
    stops.push(
      await live.subscribe(subscription(["window.closed"], { counter: "added" }), later.sink),
    );
    await store.appendLog("orders", [{ ...closedRecord("x"), counter: "added", group: "[]" }]);
    await eventually(() => later.received.length === 1 && first.received.length === 1);
  } finally {
    for (const stop of stops) stop();
    await live.close();
  }
});

/** A memory store whose log reads and demand signals fail as an unreachable Redis's do, while `down`. */
class FlakyLogStore extends MemoryStore {
  down = false;
  failedReads = 0;
  #check(): void {
    if (!this.down) return;
    this.failedReads++;
    throw new StoreUnavailableError("Redis is unavailable (readLog): fetch failed");
  }
  override readLog(...args: Parameters<MemoryStore["readLog"]>) {
    try {
      this.#check();
    } catch (error) {
      return Promise.reject(error);
    }
    return super.readLog(...args);
  }
  override lastLogId(stream: string) {
    try {
      this.#check();
    } catch (error) {
      return Promise.reject(error);
    }
    return super.lastLogId(stream);
  }
}

Deno.test("LiveHub.subscribe() rejects with the store's error while the log cannot be read, also when the stream is tailed already; a subscriber from before keeps its place", async () => {
  const store = new FlakyLogStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10 });
  try {
    // No tail yet: starting one reads the log's end.
    store.down = true;
    await assert.rejects(
      () => live.subscribe(subscription(["window.closed"]), collector().sink),
      StoreUnavailableError,
    );
    assert.deepEqual([live.stats.subscribers, live.stats.tails], [0, 0]);

    store.down = false;
    const before = collector();
    await live.subscribe(subscription(["window.closed"]), before.sink);
    assert.equal(before.starts.length, 1);
    // The store goes away: the running tail's reads fail (it goes on trying).
    store.down = true;
    const failed = store.failedReads;
    await eventually(() => store.failedReads > failed);
    await assert.rejects(
      () => live.subscribe(subscription(["window.closed"]), collector().sink),
      StoreUnavailableError,
    );
    assert.deepEqual([live.stats.subscribers, live.stats.tails], [1, 1]);
    assert.deepEqual(before.closed, [], "an outage ends no subscription");

    // Back: what was logged meanwhile reaches the subscriber from before, and new ones join.
    await store.appendLog("orders", [closedRecord("during")]);
    store.down = false;
    await eventually(() => before.received.length === 1);
    assert.deepEqual(before.received[0].data.group, { country: "during" });
    const after = collector();
    await live.subscribe(subscription(["window.closed"]), after.sink);
    assert.equal(after.starts.length, 1);
  } finally {
    await live.close();
  }
});

Deno.test("LiveHub on a shared store: window.updated written while this instance could not reach the store for longer than the demand lasts is missed; after it signals again, none is", async () => {
  let clock = NOW;
  const now = () => clock;
  const shared = new MemoryStore({ now });
  // Instance A's view of the shared store, which it cannot reach while `down`.
  let down = false;
  const unreachable = new Set(["readLog", "lastLogId", "signalDemand"]);
  const viewOfA = new Proxy(shared, {
    get(target, name) {
      const value = Reflect.get(target, name, target);
      if (typeof value !== "function") return value;
      if (down && unreachable.has(String(name))) {
        return () =>
          Promise.reject(new StoreUnavailableError("Redis is unavailable: fetch failed"));
      }
      return value.bind(target);
    },
  });
  const options = { pollMs: 10, shared: true, demandTtlMs: 1_000, updateIntervalMs: 0, now };
  const hubA = new LiveHub(streams, viewOfA, options);
  const hubB = new LiveHub(streams, shared, options);
  // Instance B ingests into the shared store.
  const ingestB = (events: object[]) =>
    ingestItems(orders, events.map((value) => ({ ok: true as const, value })), {
      ...ingestFanoutFor("orders", { demand: [hubB], observers: [hubB.observer] }),
      store: shared,
      nowMs: clock,
    });
  const updates = (seen: PublicPayload[]) =>
    seen.filter((payload) => payload.type === "window.updated").length;
  const subscriber = collector();
  try {
    await hubA.subscribe(subscription(["window.updated"]), subscriber.sink);
    await ingestB([{ id: "before", ts: at(1), country: "DE" }]);
    await eventually(() => updates(subscriber.received) > 0);
    const before = updates(subscriber.received);

    // A cannot reach the store for longer than its subscribers' demand lasts.
    down = true;
    clock += 1_500;
    await ingestB([{ id: "during", ts: at(2), country: "FR" }]);
    await sleep(100);
    down = false;
    await sleep(100);
    assert.equal(updates(subscriber.received), before, "the update written during the lapse");

    // A signals again as soon as it reaches the store (its clock has not moved since): B's next
    // update reaches A's subscriber.
    await ingestB([{ id: "after", ts: at(3), country: "IT" }]);
    await eventually(() => updates(subscriber.received) > before);
    assert.deepEqual(subscriber.closed, []);
  } finally {
    await hubA.close();
    await hubB.close();
  }
});

Deno.test("LiveHub: a subscription begun on an empty log starts after 0-0, and resuming after it replays everything logged since", async () => {
  const { store, live } = setup();
  const early = collector();
  const stop = await live.subscribe(subscription(["window.closed"]), early.sink);
  assert.deepEqual(early.starts, [{ afterId: "0-0" }]);
  stop(); // dropped before its first result
  await appendClosed(store, ["r0", "r1"]);
  const stops: Array<() => void> = [];
  try {
    const back = collector();
    stops.push(
      await live.subscribe(subscription(["window.closed"]), back.sink, { afterId: "0-0" }),
    );
    assert.deepEqual(back.starts, [{ afterId: "0-0", resumed: true }]);
    assert.deepEqual(back.ids, [`${NOW}-0`, `${NOW}-1`]);
    // Another id before the oldest entry of a log that never trimmed one was never this log's.
    const foreign = collector();
    stops.push(
      await live.subscribe(subscription(["window.closed"]), foreign.sink, { afterId: "1-0" }),
    );
    assert.equal(foreign.starts[0].resumed, false);
    assert.deepEqual(foreign.ids, []);
  } finally {
    for (const stop of stops) stop();
    await live.close();
  }
});

Deno.test("LiveHub refuses to resume only after entries the log trimmed", async () => {
  // Keeps its newest 2 entries, trimmed once past 3.
  const store = new MemoryStore({ now: () => NOW, log: { retain: 2 } });
  const live = new LiveHub(streams, store, { pollMs: 10 });
  await appendClosed(store, ["r0", "r1", "r2", "r3"]);
  const stops: Array<() => void> = [];
  try {
    const refused = collector();
    stops.push(
      await live.subscribe(subscription(["window.closed"]), refused.sink, { afterId: "0-0" }),
    );
    assert.deepEqual(refused.starts, [{
      afterId: `${NOW}-3`,
      resumed: false,
      reason:
        `Cannot resume after '0-0': the result log of stream 'orders' was trimmed through '${NOW}-1'`,
    }]);
    const resumed = collector();
    stops.push(
      await live.subscribe(subscription(["window.closed"]), resumed.sink, {
        afterId: `${NOW}-1`,
      }),
    );
    assert.deepEqual(resumed.starts, [{ afterId: `${NOW}-1`, resumed: true }]);
    assert.deepEqual(resumed.ids, [`${NOW}-2`, `${NOW}-3`]);
  } finally {
    for (const stop of stops) stop();
    await live.close();
  }
});

Deno.test("LiveHub sends a sink that is not ready nothing more, then what followed from the log at its pace: none missing, none twice", async () => {
  const { store, live } = setup({ readLimit: 3 });
  const a = collector();
  let room = 4;
  const held: string[] = [];
  const stop = await live.subscribe(subscription(["window.closed"]), {
    ...a.sink,
    ready: () => held.length < room,
    send(payload, id) {
      a.sink.send(payload, id);
      held.push(id);
    },
  });
  try {
    // A burst the tail reads in one poll: more than the sink takes.
    await appendClosed(store, Array.from({ length: 20 }, (_, i) => `r${i}`));
    await eventually(() => held.length === 4 && live.stats.behind === 1);
    await sleep(30);
    assert.equal(a.ids.length, 4, "nothing past what the sink takes");
    // It reads: the rest comes from the log, while more is logged.
    room = 1_000;
    await appendClosed(store, Array.from({ length: 5 }, (_, i) => `s${i}`));
    await eventually(() => a.ids.length === 25 && live.stats.behind === 0);
    // Back with the tail: live entries come from it again.
    await appendClosed(store, ["t0"]);
    await eventually(() => a.ids.length === 26);
    await sleep(30);
    assert.deepEqual(a.ids, Array.from({ length: 26 }, (_, i) => `${NOW}-${i}`));
    assert.deepEqual(a.closed, []);
  } finally {
    stop();
    await live.close();
  }
});

/** A memory store counting the reads of its result log (the tail's polls, the catch-up's pages). */
class CountingReads extends MemoryStore {
  reads = 0;
  override readLog(...args: Parameters<MemoryStore["readLog"]>) {
    this.reads++;
    return super.readLog(...args);
  }
}

Deno.test("LiveHub waits for a sink behind that says when it drains: not asked whether it is ready meanwhile, then sent the rest, none missing", async () => {
  const store = new CountingReads({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, readLimit: 3, stalledMs: 60_000 });
  const a = collector();
  let room = 2;
  let asks = 0;
  const drained = Promise.withResolvers<void>();
  const stop = await live.subscribe(subscription(["window.closed"]), {
    ...a.sink,
    ready() {
      asks++;
      return a.ids.length < room;
    },
    drained: () => drained.promise,
  });
  try {
    await appendClosed(store, Array.from({ length: 10 }, (_, i) => `r${i}`));
    await eventually(() => a.ids.length === 2 && live.stats.behind === 1);
    // Ten polls of the tail while it waits (each ~10 ms): a sink asked every 5 ms would be asked
    // about twenty times; one that drains is asked nothing until it does.
    const asked = asks;
    const reads = store.reads;
    await eventually(() => store.reads >= reads + 10);
    assert.equal(asks - asked, 0, "ready() asked while waiting for the sink to drain");
    room = 1_000;
    drained.resolve();
    await eventually(() => a.ids.length === 10 && live.stats.behind === 0);
    assert.deepEqual(a.ids, Array.from({ length: 10 }, (_, i) => `${NOW}-${i}`));
    assert.deepEqual(a.closed, []);
  } finally {
    stop();
    await live.close();
  }
});

Deno.test("LiveHub still drops a sink behind that never drains at stalledMs, with one timer for the wait; close() ends such a wait at once", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, stalledMs: 200 });
  const patient = new LiveHub(streams, store, { pollMs: 10, stalledMs: 60_000 });
  const stalled = collector();
  const waiting = collector();
  let asks = 0;
  const never = new Promise<void>(() => {});
  try {
    await live.subscribe(subscription(["window.closed"]), {
      ...stalled.sink,
      ready() {
        asks++;
        return false;
      },
      drained: () => never,
    });
    await patient.subscribe(subscription(["window.closed"]), {
      ...waiting.sink,
      ready: () => false,
      drained: () => never,
    });
    await appendClosed(store, ["r0"]);
    await eventually(() => stalled.closed.length === 1 && patient.stats.behind === 1);
    assert.match(
      stalled.closed[0],
      /^Subscriber too slow: it read nothing of what was waiting to be sent for \d+ ms$/,
    );
    // Asked by the tail, by the catch-up before its wait and once the wait's timer fired (twice
    // should the timer fire a clock tick early), not every 5 ms for 200 ms.
    assert.ok(asks <= 4, `ready() asked ${asks} times`);
    // The patient hub's subscriber waits for a drain that never comes, with a 60 s timer: closing
    // the hub ends its wait rather than waiting for the timer.
    await within(patient.close(), 5_000);
    assert.deepEqual(waiting.closed, ["Server is shutting down"]);
    assert.equal(patient.stats.behind, 0);
  } finally {
    await live.close();
    await patient.close();
  }
});

Deno.test("LiveHub asks a sink that says it drained but is not ready again after a wait, not in a loop: still dropped at stalledMs", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, stalledMs: 200 });
  const stalled = collector();
  let asks = 0;
  try {
    await live.subscribe(subscription(["window.closed"]), {
      ...stalled.sink,
      ready() {
        asks++;
        return false;
      },
      drained: () => Promise.resolve(),
    });
    await appendClosed(store, ["r0"]);
    await eventually(() => stalled.closed.length === 1);
    assert.match(
      stalled.closed[0],
      /^Subscriber too slow: it read nothing of what was waiting to be sent for \d+ ms$/,
    );
    // Twice a wait of 5 ms: about 80 in 200 ms (a loop of settled promises asked it 56,192 times
    // in one run, holding the event loop until the stall).
    assert.ok(asks <= 200, `ready() asked ${asks} times`);
  } finally {
    await live.close();
  }
});

Deno.test("LiveHub still drops a sink behind at stalledMs when the clock steps back meanwhile, not once the clock is back where it was", async () => {
  const store = new MemoryStore({ now: () => NOW });
  // The wall clock, stepped back an hour once both subscribers are behind (an NTP correction).
  let stepMs = 0;
  const live = new LiveHub(streams, store, {
    pollMs: 10,
    stalledMs: 200,
    now: () => Date.now() - stepMs,
  });
  const waiting = collector();
  const asking = collector();
  const never = new Promise<void>(() => {});
  try {
    // One sink says when it drains (a wait with a timer), the other does not (asked again and again).
    await live.subscribe(subscription(["window.closed"]), {
      ...waiting.sink,
      ready: () => false,
      drained: () => never,
    });
    await live.subscribe(subscription(["window.closed"]), { ...asking.sink, ready: () => false });
    await appendClosed(store, ["r0"]);
    await eventually(() => live.stats.behind === 2);
    stepMs = 3_600_000;
    // Before, the stall counted from a time an hour ahead: each was kept for the hour.
    await eventually(() => waiting.closed.length === 1 && asking.closed.length === 1, 3_000);
    for (const reason of [...waiting.closed, ...asking.closed]) {
      assert.match(
        reason,
        /^Subscriber too slow: it read nothing of what was waiting to be sent for \d+ ms$/,
      );
    }
    assert.equal(live.stats.subscribers, 0);
  } finally {
    await live.close();
  }
});

Deno.test("LiveHub drops a subscriber behind that takes nothing for stalledMs, or that the log was trimmed past", async () => {
  const store = new MemoryStore({ now: () => NOW, log: { retain: 4 } });
  const live = new LiveHub(streams, store, { pollMs: 10, stalledMs: 50 });
  // The other subscriber's hub waits long enough for the log to be trimmed past it.
  const patient = new LiveHub(streams, store, { pollMs: 10, stalledMs: 60_000 });
  const stalled = collector();
  const trimmed = collector();
  let trimmedReady = true;
  try {
    await live.subscribe(subscription(["window.closed"]), { ...stalled.sink, ready: () => false });
    await patient.subscribe(subscription(["window.closed"]), {
      ...trimmed.sink,
      ready: () => trimmedReady,
      send(payload, id) {
        trimmed.sink.send(payload, id);
        trimmedReady = false; // takes one, then nothing until the log moved past it
      },
    });
    await appendClosed(store, ["r0", "r1"]);
    await eventually(() => stalled.closed.length === 1);
    assert.match(
      stalled.closed[0],
      /^Subscriber too slow: it read nothing of what was waiting to be sent for \d+ ms$/,
    );
    assert.deepEqual(stalled.ids, []);
    await appendClosed(store, Array.from({ length: 10 }, (_, i) => `s${i}`));
    trimmedReady = true;
    await eventually(() => trimmed.closed.length === 1);
    assert.deepEqual(trimmed.ids, [`${NOW}-0`]);
    assert.match(
      trimmed.closed[0],
      new RegExp(
        `^Subscriber too slow: the result log of stream 'orders' was trimmed through '${NOW}-\\d+', past '${NOW}-0' that it had read up to$`,
      ),
    );
    assert.equal(live.stats.subscribers + patient.stats.subscribers, 0);
  } finally {
    await live.close();
    await patient.close();
  }
});

Deno.test("LiveHub drops a subscriber behind whose log was deleted meanwhile (the stream deleted, the key expired), rather than waiting for it for ever", async () => {
  /** A memory store whose result log can vanish, as a Redis log key that expired. */
  class VanishingLog extends MemoryStore {
    gone = false;
    override readLog(...args: Parameters<MemoryStore["readLog"]>) {
      return this.gone ? Promise.resolve([]) : super.readLog(...args);
    }
  }
  const store = new VanishingLog({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, stalledMs: 60_000 });
  const behind = collector();
  let ready = true;
  try {
    await live.subscribe(subscription(["window.closed"]), {
      ...behind.sink,
      ready: () => ready,
      send(payload, id) {
        behind.sink.send(payload, id);
        ready = false; // takes one, then nothing for a while
      },
    });
    await appendClosed(store, ["r0", "r1", "r2"]);
    await eventually(() => behind.ids.length === 1 && live.stats.behind === 1);
    store.gone = true;
    ready = true;
    await eventually(() => behind.closed.length === 1);
    assert.equal(
      behind.closed[0],
      `Subscriber too slow: the result log of stream 'orders' no longer holds what followed '${NOW}-0'`,
    );
    assert.equal(live.stats.behind, 0);
  } finally {
    await live.close();
  }
});

Deno.test("LiveHub keeps nothing per stream for streams gone: many streams subscribed, ingested and left leave its maps small; an expired demand is dropped, not read", async () => {
  const names = Array.from({ length: 60 }, (_, i) => `api_${i}`);
  const many = compileConfig({
    streams: Object.fromEntries(names.map((name) => [name, TEST_CONFIG.streams.orders])),
  });
  let now = NOW;
  const store = new MemoryStore({ now: () => now });
  const live = new LiveHub(many, store, {
    pollMs: 10,
    shared: true,
    demandTtlMs: 1_000,
    updateIntervalMs: 0,
    now: () => now,
  });
  const ingest = (name: string, id: string) =>
    ingestItems(many.get(name)!, [{ ok: true, value: { id, ts: at(1), country: "DE" } }], {
      ...ingestFanoutFor(name, { demand: [live], observers: [live.observer] }),
      store,
      nowMs: now,
    });
  try {
    for (const name of names) {
      const { received, sink } = collector();
      const stop = await live.subscribe(subscription(["window.updated"], { stream: name }), sink);
      await ingest(name, "a");
      await eventually(() => received.length > 0);
      stop();
      // The stream is deleted: nothing more arrives for it; a second pass of time goes by.
      now += 100;
    }
    // What another instance wants of a stream, known until its entry expires, is then dropped on
    // reading: never taken as current.
    assert.equal(live.wants(names[0], "window.updated"), false);
    assert.equal(live.mayWant(names[0], "event.processed"), true);
    now += 1_001;
    await ingest(names[0], "b");
    // The last stream's updates may be flushing still: forgotten once they are.
    await eventually(() => live.retained.pending === 0);
    assert.deepEqual(live.retained, { remoteDemand: 1, pending: 0, tails: 0, demand: 0 });
  } finally {
    await live.close();
  }
});

Deno.test("LiveHub, store not shared: a stream subscribed, ingested into and left (then deleted) keeps no pending updates nor demand", async () => {
  const names = Array.from({ length: 40 }, (_, i) => `api_${i}`);
  const many = compileConfig({
    streams: Object.fromEntries(names.map((name) => [name, TEST_CONFIG.streams.orders])),
  });
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(many, store, { pollMs: 10, updateIntervalMs: 0 });
  try {
    for (const name of names) {
      const { received, sink } = collector();
      const stop = await live.subscribe(subscription(["window.updated"], { stream: name }), sink);
      await ingestItems(many.get(name)!, [{
        ok: true,
        value: { id: "a", ts: at(1), country: "DE" },
      }], {
        ...ingestFanoutFor(name, { demand: [live], observers: [live.observer] }),
        store,
        nowMs: NOW,
      });
      await eventually(() => received.length > 0);
      // Let the stream's publication loop run out with the subscriber still there, then leave.
      await sleep(20);
      stop();
    }
    await eventually(() => live.retained.pending === 0);
    assert.deepEqual(live.retained, { remoteDemand: 0, pending: 0, tails: 0, demand: 0 });
  } finally {
    await live.close();
  }
});

Deno.test("LiveHub publishes window.updated by the stream's definition now: a counter removed at run time moves the others' places, and their values still go out under their own names", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, updateIntervalMs: 0 });
  const { received, sink } = collector();
  const stop = await live.subscribe(subscription(["window.updated"]), sink);
  const ingestInto = (stream: typeof orders, id: string) =>
    ingestItems(stream, [{ ok: true, value: { id, ts: at(1), country: "DE", amount: 5 } }], {
      ...ingestFanoutFor("orders", { demand: [live], observers: [live.observer] }),
      store,
      nowMs: NOW,
    });
  try {
    await ingestInto(orders, "a");
    await eventually(() => received.length > 0);
    await sleep(30);
    // The stream loses its first counter (a PUT at run time): every other counter's index moves.
    const config = structuredClone(TEST_CONFIG) as {
      streams: { orders: { counters: Record<string, unknown> } };
    };
    delete config.streams.orders.counters.count_1m;
    const changed = compileConfig(config).get("orders")!;
    received.length = 0;
    await ingestInto(changed, "b");
    await eventually(() => received.some((payload) => payload.data.counter === "sum_1m"));
    await sleep(30);
    const sums = received.filter((payload) => payload.data.counter === "sum_1m");
    assert.deepEqual(sums.map((payload) => payload.data.value), [10]);
    assert.equal(received.some((payload) => payload.data.counter === "count_1m"), false);
  } finally {
    stop();
    await live.close();
  }
});

Deno.test("LiveHub publishes a window again only when its value changed, also while batches of a stream's old and new definition (a PUT moving counters' places) arrive in turn", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, updateIntervalMs: 0 });
  const { received, sink } = collector();
  const stop = await live.subscribe(subscription(["window.updated"]), sink);
  // The stream loses its first counter (a PUT at run time): every other counter's place moves.
  const config = structuredClone(TEST_CONFIG) as {
    streams: { orders: { counters: Record<string, unknown> } };
  };
  delete config.streams.orders.counters.count_1m;
  const changed = compileConfig(config).get("orders")!;
  const of = (counter: string) =>
    received.filter((payload) => payload.data.counter === counter)
      .map((payload) => payload.data.value);
  let customers = 0;
  // Each batch has a new customer, so each publishes customers_sliding's windows (3 of a 3m
  // sliding counter) at the count of customers so far: the sign it was published.
  const ingestInto = async (stream: typeof orders, amount: number) => {
    customers += 1;
    const id = `e${customers}`;
    await ingestItems(stream, [{
      ok: true,
      value: { id, ts: at(1), country: "DE", amount, customer: id },
    }], {
      ...ingestFanoutFor("orders", { demand: [live], observers: [live.observer] }),
      store,
      nowMs: NOW,
    });
    await eventually(() => of("customers_sliding").includes(customers));
  };
  try {
    await ingestInto(orders, 5);
    // In turn, adding nothing to the sums: their windows are not published again.
    for (const stream of [changed, orders, changed, orders]) await ingestInto(stream, 0);
    await ingestInto(changed, 3);
    assert.deepEqual(of("sum_1m"), [5, 8]);
    assert.deepEqual(of("customers_sliding"), [1, 2, 3, 4, 5, 6].flatMap((n) => [n, n, n]));
  } finally {
    stop();
    await live.close();
  }
});

Deno.test("LiveHub publishes the windows of a stream deleted and created again afresh, also at the values the old incarnation last published", async () => {
  const registry = new StreamRegistry(compileConfig({ streams: {} }), { now: () => NOW });
  const store = registry.wrap(new MemoryStore({ now: () => NOW }));
  const live = new LiveHub(registry, store, { pollMs: 10, updateIntervalMs: 0 });
  const { received, sink } = collector();
  const sums = () =>
    received.filter((payload) => payload.data.counter === "sum_1m")
      .map((payload) => payload.data.value);
  const ingestOnce = () =>
    ingestItems(registry.get("orders")!, [{
      ok: true,
      value: { id: "a", ts: at(1), country: "DE", amount: 5 },
    }], {
      ...ingestFanoutFor("orders", { demand: [live], observers: [live.observer] }),
      store,
      nowMs: NOW,
    });
  await registry.put("orders", TEST_CONFIG.streams.orders);
  const stop = await live.subscribe(subscription(["window.updated"]), sink);
  try {
    await ingestOnce();
    await eventually(() => sums().length === 1);
    await registry.remove("orders");
    await registry.put("orders", TEST_CONFIG.streams.orders);
    // The same event in the new incarnation: the same value, of another stream's window.
    await ingestOnce();
    await eventually(() => sums().length === 2);
    assert.deepEqual(sums(), [5, 5]);
  } finally {
    stop();
    await live.close();
  }
});

Deno.test("LiveHub publishes a stream created again afresh also when the old incarnation's publish was still being logged at its delete", async () => {
  const registry = new StreamRegistry(compileConfig({ streams: {} }), { now: () => NOW });
  // The first log append (the old incarnation's publish) waits until released.
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  let appends = 0;
  const memory = new MemoryStore({ now: () => NOW });
  const gated = new Proxy(memory, {
    get(target, property) {
      if (property === "appendLog") {
        return async (...args: Parameters<MemoryStore["appendLog"]>) => {
          if (++appends === 1) await held;
          return await target.appendLog(...args);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const store = registry.wrap(gated);
  const live = new LiveHub(registry, store, { pollMs: 10, updateIntervalMs: 0 });
  const ingestOnce = () =>
    ingestItems(registry.get("orders")!, [{
      ok: true,
      value: { id: "a", ts: at(1), country: "DE", amount: 5 },
    }], {
      ...ingestFanoutFor("orders", { demand: [live], observers: [live.observer] }),
      store,
      nowMs: NOW,
    });
  const sumsLogged = async () =>
    (await store.readLog("orders", null, 100)).filter((entry) =>
      entry.record.type === "window.updated" && entry.record.counter === "sum_1m"
    ).length;
  await registry.put("orders", TEST_CONFIG.streams.orders);
  const stop = await live.subscribe(subscription(["window.updated"]), collector().sink);
  try {
    await ingestOnce();
    await eventually(() => appends === 1);
    await registry.remove("orders");
    await registry.put("orders", TEST_CONFIG.streams.orders);
    // The same event in the new incarnation while the old one's publish still waits on its log.
    await ingestOnce();
    await sleep(30);
    release();
    // The new incarnation's window, at the value the old one's publish logged, is in its own log.
    await eventually(async () => (await sumsLogged()) === 1);
  } finally {
    release();
    stop();
    await live.close();
  }
});

Deno.test("LiveHub's tail logs its failures without the requestId of the subscription that started it: it serves every subscriber of the stream, for as long as any stays", async () => {
  const { store, live } = setup();
  let failing = false;
  const flaky = new Proxy(store, {
    get(target, property) {
      if (property === "readLog" && failing) {
        return () => Promise.reject(new Error("log read refused"));
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const hub = new LiveHub(streams, flaky, { pollMs: 10 });
  await live.close();
  await writtenLogs(async (lines) => {
    const stop = await withContext(
      { requestId: "first-subscriber" },
      () => hub.subscribe(subscription(["window.closed"]), collector().sink),
    );
    try {
      failing = true;
      await eventually(() => jsonLines(lines, "edgestream.live").length > 0);
      const [failure] = jsonLines(lines, "edgestream.live");
      assert.match(failure.message, /Cannot read the result log of stream orders/);
      assert.equal(failure.requestId, undefined);
    } finally {
      stop();
      await hub.close();
    }
  });
});

Deno.test("LiveHub's tail says a read of the log refused as too large once a failing streak, at error, not at every poll", async () => {
  class RefusingReads extends MemoryStore {
    refused = 0;
    refusing = false;
    override readLog(...args: Parameters<MemoryStore["readLog"]>) {
      if (!this.refusing) return super.readLog(...args);
      this.refused++;
      return Promise.reject(new StoreRequestTooLargeError("ERR max request size exceeded"));
    }
  }
  const store = new RefusingReads({ now: () => NOW });
  const hub = new LiveHub(streams, store, { pollMs: 10 });
  await writtenLogs(async (lines) => {
    const stop = await hub.subscribe(subscription(["window.closed"]), collector().sink);
    try {
      store.refusing = true;
      await eventually(() => store.refused >= 10);
      // Before, each of the ten polls said it (the guard let any StoreUnavailableError through).
      const said = jsonLines(lines, "edgestream.live");
      assert.deepEqual(said.map((line) => line.level), ["error"]);
      assert.match(
        said[0].message,
        /^Cannot read the result log of stream orders for live subscribers: StoreRequestTooLargeError/,
      );
    } finally {
      stop();
      await hub.close();
    }
  });
});

Deno.test("README resuming: the store is asked where its log stands (on Redis one read-only XINFO STREAM script) once a page of the replay, a short resume once", async () => {
  class CountingStore extends MemoryStore {
    positions = 0;
    override logPosition(stream: string) {
      this.positions++;
      return super.logPosition(stream);
    }
  }
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  assert.match(
    readme,
    /A resume asks Redis one read-only\s+script\s+\(`XINFO STREAM`\)\s+a page of 500\s+entries\s+it\s+replays/,
  );
  const store = new CountingStore({ now: () => NOW });
  const live = new LiveHub(streams, store, { pollMs: 10, readLimit: 2 });
  const tail = collector();
  const stops = [await live.subscribe(subscription(["window.closed"]), tail.sink)];
  try {
    await appendClosed(store, ["r0", "r1", "r2", "r3", "r4", "r5"]);
    await eventually(() => tail.ids.length === 6);
    const asked = (): number => {
      const count = store.positions;
      store.positions = 0;
      return count;
    };
    asked();
    // One entry after it: the replay is one page.
    const short = collector();
    stops.push(
      await live.subscribe(subscription(["window.closed"]), short.sink, { afterId: `${NOW}-4` }),
    );
    assert.deepEqual(short.ids, [`${NOW}-5`]);
    assert.equal(asked(), 1);
    // Five entries after it in pages of 2: three pages, each checked against what was trimmed.
    const long = collector();
    stops.push(
      await live.subscribe(subscription(["window.closed"]), long.sink, { afterId: `${NOW}-0` }),
    );
    assert.equal(long.ids.length, 5);
    assert.equal(asked(), 3);
  } finally {
    for (const stop of stops) stop();
    await live.close();
  }
});

Deno.test("LiveHub on a shared store after the wall clock steps back: what other instances want is learnt again, streams' expired demand is swept, and a tail signals its demand again", async () => {
  const names = ["api_a", "api_b"];
  const many = compileConfig({
    streams: Object.fromEntries(names.map((name) => [name, TEST_CONFIG.streams.orders])),
  });
  let now = NOW;
  let signals = 0;
  const store = new (class extends MemoryStore {
    override signalDemand(stream: string, types: string[], ttlMs: number) {
      signals += 1;
      return super.signalDemand(stream, types, ttlMs);
    }
  })({ now: () => NOW });
  const live = new LiveHub(many, store, {
    pollMs: 10,
    shared: true,
    demandTtlMs: 1_000,
    updateIntervalMs: 0,
    now: () => now,
  });
  const ingest = (name: string) =>
    ingestItems(many.get(name)!, [{ ok: true, value: { id: "a", ts: at(1), country: "DE" } }], {
      ...ingestFanoutFor(name, { demand: [live], observers: [live.observer] }),
      store,
      nowMs: NOW,
    });
  try {
    await ingest("api_a");
    assert.equal(live.retained.remoteDemand, 1);
    // The clock steps back an hour: api_a's demand, learnt "later", is no longer taken as known,
    // and the sweep is not put off by the step (it would keep api_a's entry for an hour).
    now -= 3_600_000;
    await ingest("api_b");
    assert.equal(live.retained.remoteDemand, 1);
    assert.equal(live.mayWant("api_b", "event.processed"), false);
    assert.equal(live.mayWant("api_a", "event.processed"), true);

    // A subscriber's demand, signalled with a TTL, is signalled again after the step: else it
    // would lapse in the store for the step's length.
    const { sink } = collector();
    const stop = await live.subscribe(subscription(["event.processed"], { stream: "api_a" }), sink);
    await eventually(() => signals > 0);
    const before = signals;
    now -= 3_600_000;
    await eventually(() => signals > before);
    stop();
  } finally {
    await live.close();
  }
});
