/**
 * A stream's result log trims no result before the webhook dispatch took it: a backlog of
 * `window.closed` results larger than the log's retained entries reaches a real receiver whole,
 * on the memory store and on Redis (log bounds and dispatch pages made small). Past the log's
 * hard bound results are trimmed, and `markDispatched` counts them.
 */
import assert from "node:assert/strict";
import { compileConfig } from "../../../src/config/mod.ts";
import { Dispatcher } from "../../../src/fanout/webhooks/mod.ts";
import {
  type DeliveryStore,
  type Endpoint,
  MemoryDeliveryStore,
  RedisDeliveryStore,
} from "../../../src/store/mod.ts";
import { MemoryStore } from "../../../src/store/memory/store.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import {
  compareLogIds,
  type LogBounds,
  MAX_LOG_BACKLOG,
  MAX_LOG_ENTRIES,
  parseLogId,
  type Store,
} from "../../../src/store/types.ts";
import { type RedisFixture, redisTest, restClient, withDirect } from "../../_redis.ts";
import { collectingLogs, messageOf } from "../../_logs.ts";
import { Receiver } from "./_receiver.ts";
import {
  at,
  call,
  type Clock,
  CONFIG,
  ingest,
  register,
  setup,
  type SetupOptions,
  sweep,
  T0,
} from "./_setup.ts";

const GROUPS = 100;
const BOUNDS: LogBounds = { retain: 20, max: 1_000 };

function redisStores(fixture: RedisFixture, clock: Clock, log: LogBounds) {
  const redis = restClient(fixture);
  const now = () => clock.now;
  return {
    store: new RedisStore(redis, { now, log }),
    deliveries: new RedisDeliveryStore(redis, { now }),
  };
}

/** 100 groups close in one sweep: 101 results, five times the retained 20, 20 dispatched a sweep. */
async function backlogReachesReceiver(
  options: SetupOptions & { clock: Clock; unheld?: boolean },
) {
  const app = await setup({ ...options, dispatch: { pageSize: 10, maxPages: 2 } });
  const receiver = await Receiver.start(() => options.clock.now);
  try {
    const { secret } = await register(app.app, {
      url: receiver.url(),
      eventTypes: ["window.closed"],
    });
    receiver.secrets = [secret];
    // No dispatch before the close: the registration holds the log, or else (a stream created
    // after the endpoint, say) the sweep does before it closes windows.
    if (options.unheld) await app.store.markDispatched("orders", null);
    const events = Array.from({ length: GROUPS }, (_, i) => ({
      id: `e${i}`,
      ts: at(1 + i / 10),
      country: `c${i}`,
      amount: 1,
    }));
    await ingest(app.app, events);
    await ingest(app.app, [{ id: "tick", ts: at(200), country: "DE" }]);
    let queued = 0;
    let sweeps = 0;
    for (let first = true; first || queued > 0; first = false) {
      const reply = await sweep(app.app, app.webhooks);
      queued = reply.webhooks?.queued ?? reply.queued ?? 0;
      sweeps += 1;
      assert.ok(sweeps < 50, "the backlog drains");
    }
    const closed = receiver.received.filter((item) => item.payload.type === "window.closed");
    const perMinute = closed.filter((item) => item.payload.data.counter === "per_minute");
    const groups = new Set(perMinute.map((item) => item.payload.data.group.country));
    assert.equal(groups.size, GROUPS, `groups delivered: ${groups.size} of ${GROUPS}`);
    assert.equal(perMinute.length, GROUPS, "none twice");
    assert.equal(closed.filter((item) => item.payload.data.counter === "amount").length, 1);
    assert.ok(sweeps > 3, `dispatch took several sweeps (${sweeps}), so the log held a backlog`);
    // All dispatched: the log is back near its retained entries, and keeps them for resumes.
    const log = await app.store.readLog("orders", null, 1_000);
    assert.ok(log.length >= BOUNDS.retain!, `the log keeps its newest ${BOUNDS.retain}`);
    assert.ok(
      log.length <= BOUNDS.retain! + 2,
      `the log trimmed what was dispatched: ${log.length}`,
    );
  } finally {
    await app.close();
    await receiver.close();
  }
}

Deno.test("memory: a backlog of results larger than the retained log reaches the webhook", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  await backlogReachesReceiver({
    clock,
    store: new MemoryStore({ now: () => clock.now, log: BOUNDS }),
  });
});

redisTest(
  "redis: a backlog of results larger than the retained log reaches the webhook",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    await backlogReachesReceiver({ clock, ...redisStores(fixture, clock, BOUNDS) });
  },
);

/** Past the hard bound the oldest undispatched entries go, each counted once; without a hold, the log keeps its newest. */
async function hardBoundCounts(store: Store, approximate: boolean) {
  const record = (i: number) => ({ type: "window.updated", n: i }) as never;
  assert.equal(await store.markDispatched("orders", "0-0"), 0);
  for (let i = 0; i < 30; i++) await store.appendLog("orders", [record(i)]);
  const held = await store.readLog("orders", null, 100);
  const lost = await store.markDispatched("orders", "0-0");
  assert.ok(held.length >= 20 && held.length <= 21, `held ${held.length}`);
  assert.equal(lost + held.length, 30, "every trimmed entry is counted");
  assert.equal(await store.markDispatched("orders", "0-0"), 0, "counted once");
  // What was trimmed is known by its newest id: just before what the log holds.
  const position = await store.logPosition("orders");
  assert.equal(position.lastId, held.at(-1)!.id);
  assert.ok(
    position.trimmedThrough !== null &&
      compareLogIds(parseLogId(position.trimmedThrough), parseLogId(held[0].id)) < 0 &&
      compareLogIds(parseLogId(position.trimmedThrough), parseLogId("0-0")) > 0,
    `trimmed through ${position.trimmedThrough}, holds from ${held[0].id}`,
  );
  // Dispatched through the 8th newest: what is at or before it goes.
  await store.markDispatched("orders", held[held.length - 8].id);
  const after = await store.readLog("orders", null, 100);
  assert.deepEqual(after.map((entry) => entry.id), held.slice(-7).map((entry) => entry.id));
  // At or after the newest trimmed, before the oldest held (Redis: the id just before it).
  const trimmed = (await store.logPosition("orders")).trimmedThrough;
  assert.ok(
    trimmed !== null &&
      compareLogIds(parseLogId(trimmed), parseLogId(held[held.length - 8].id)) >= 0 &&
      compareLogIds(parseLogId(trimmed), parseLogId(held[held.length - 7].id)) < 0,
    `trimmed through ${trimmed}`,
  );
  // Dispatched through the newest: the newest 5 stay, for resumes.
  await store.markDispatched("orders", held[held.length - 1].id);
  const all = await store.readLog("orders", null, 100);
  assert.deepEqual(all.map((entry) => entry.id), held.slice(-5).map((entry) => entry.id));
  // A mark never moves back.
  await store.markDispatched("orders", held[0].id);
  for (let i = 0; i < 3; i++) await store.appendLog("orders", [record(50 + i)]);
  await store.markDispatched("orders", held[0].id);
  assert.equal((await store.readLog("orders", null, 100)).length, 5);
  // No hold: the log keeps its newest 5 (about).
  assert.equal(await store.markDispatched("orders", null), 0);
  for (let i = 0; i < 10; i++) await store.appendLog("orders", [record(100 + i)]);
  const free = await store.readLog("orders", null, 100);
  assert.equal((free.at(-1)?.record as unknown as { n: number }).n, 109);
  // Redis trims MAXLEN ~ in whole nodes (100 entries), so a log this small keeps all 15.
  if (approximate) assert.equal(free.length, 15);
  else assert.ok(free.length >= 5 && free.length <= 6, `kept ${free.length}`);
}

Deno.test("memory: a sweep holds a log no registration held before it closes windows", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  const store = new MemoryStore({ now: () => clock.now, log: BOUNDS });
  await backlogReachesReceiver({ clock, store, unheld: true });
});

redisTest(
  "redis: a sweep holds a log no registration held before it closes windows",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    await backlogReachesReceiver({ clock, unheld: true, ...redisStores(fixture, clock, BOUNDS) });
  },
);

Deno.test("memory: the log's hard bound trims the oldest undispatched and counts them", async () => {
  await hardBoundCounts(new MemoryStore({ log: { retain: 5, max: 20 } }), false);
});

redisTest(
  "redis: the log's hard bound trims the oldest undispatched and counts them",
  async (fixture) => {
    const clock: Clock = { now: Date.now() };
    await hardBoundCounts(redisStores(fixture, clock, { retain: 5, max: 20 }).store, true);
  },
);

/** 101 results close into a log whose hard bound is 30: the dispatch warns, naming the stream. */
async function hardBoundWarns(options: SetupOptions & { clock: Clock }) {
  await collectingLogs(async (records) => {
    const app = await setup(options);
    const receiver = await Receiver.start(() => options.clock.now);
    try {
      const { secret } = await register(app.app, {
        url: receiver.url(),
        eventTypes: ["window.closed"],
      });
      receiver.secrets = [secret];
      await ingest(
        app.app,
        Array.from(
          { length: GROUPS },
          (_, i) => ({ id: `e${i}`, ts: at(1), country: `c${i}`, amount: 1 }),
        ),
      );
      await ingest(app.app, [{ id: "tick", ts: at(200), country: "DE" }]);
      await sweep(app.app, app.webhooks);
      await sweep(app.app, app.webhooks);
      const warnings = records.filter((record) =>
        record.level === "warning" && messageOf(record).includes("hard bound")
      );
      assert.equal(warnings.length, 1, warnings.map(messageOf).join("\n"));
      const { stream, lost } = warnings[0].properties as { stream: string; lost: number };
      assert.equal(stream, "orders");
      // What reached the receiver and what was counted lost make up every result.
      assert.equal(receiver.received.length + lost, GROUPS + 1);
      assert.ok(lost >= GROUPS + 1 - 31, `lost ${lost}`);
    } finally {
      await app.close();
      await receiver.close();
    }
  }, { level: "warning" });
}

Deno.test("memory: results trimmed at the hard bound before dispatch are warned about", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  const store = new MemoryStore({ now: () => clock.now, log: { retain: 10, max: 30 } });
  await hardBoundWarns({ clock, store });
});

redisTest(
  "redis: results trimmed at the hard bound before dispatch are warned about",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    await hardBoundWarns({ clock, ...redisStores(fixture, clock, { retain: 10, max: 30 }) });
  },
);

/**
 * Entries a log retains in the tests of deferred marks: a mark is deferred for a tenth of them
 * (25), more than the 20 ingests dispatched.
 */
const DEFERRING: LogBounds = { retain: 250, max: 1_000 };

/** Fills a stream's log up to what it retains, so that what a lagging mark keeps shows. */
async function fillLog(store: Store): Promise<void> {
  const record = (i: number) => ({ type: "window.updated", n: i }) as never;
  await store.appendLog("orders", Array.from({ length: DEFERRING.retain! }, (_, i) => record(i)));
}

/**
 * An `event.processed` endpoint: every ingest is dispatched at once, its mark left to the sweep.
 * Each of 20 ingests reaches the receiver; the store is marked by none of them, so the log holds
 * them all (nothing trimmed before dispatch, nor after: the mark lags); the sweep marks once and
 * the log trims what was dispatched. `marks` counts the store's `markDispatched` calls of the
 * stream.
 */
async function ingestDispatchDefersMark(
  options: SetupOptions & { clock: Clock },
  marks: () => number,
) {
  await fillLog(options.store!);
  const app = await setup(options);
  const receiver = await Receiver.start(() => options.clock.now);
  try {
    const { secret } = await register(app.app, {
      url: receiver.url(),
      eventTypes: ["event.processed"],
    });
    receiver.secrets = [secret];
    const one = (i: number) => [{ id: `p${i}`, ts: at(1), country: "DE", amount: 1 }];
    // The first dispatch marks (this dispatcher had not): the log is held from there.
    await ingest(app.app, one(0));
    await app.webhooks.idle();
    const before = marks();
    for (let i = 1; i <= 20; i++) {
      await ingest(app.app, one(i));
      await app.webhooks.idle();
    }
    const processed = () =>
      receiver.received.filter((item) => item.payload.type === "event.processed").length;
    assert.equal(processed(), 21);
    assert.equal(marks() - before, 0, "a mark an ingest");
    const held = await app.store.readLog("orders", null, 1_000);
    assert.ok(
      held.length >= DEFERRING.retain! + 20,
      `the log holds what the lagging mark covers: ${held.length}`,
    );
    // The sweep marks what the ingests dispatched: once.
    await sweep(app.app, app.webhooks);
    assert.equal(marks() - before, 1);
    const log = await app.store.readLog("orders", null, 1_000);
    assert.ok(
      log.length <= DEFERRING.retain! + 2,
      `the log trimmed what was dispatched: ${log.length}`,
    );
    assert.equal(processed(), 21);
  } finally {
    await app.close();
    await receiver.close();
  }
}

Deno.test("memory: dispatches of ingests for event.processed leave the log's mark to the sweep: none an ingest, one a sweep", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  let marks = 0;
  class CountsMarks extends MemoryStore {
    override markDispatched(...args: Parameters<MemoryStore["markDispatched"]>) {
      if (args[0] === "orders") marks += 1;
      return super.markDispatched(...args);
    }
  }
  const store = new CountsMarks({ now: () => clock.now, log: DEFERRING });
  await ingestDispatchDefersMark({ clock, store }, () => marks);
});

redisTest(
  "redis: dispatches of ingests for event.processed leave the log's mark to the sweep: none an ingest, one a sweep",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const { deliveries } = redisStores(fixture, clock, BOUNDS);
    let marks = 0;
    class CountsMarks extends RedisStore {
      override markDispatched(...args: Parameters<RedisStore["markDispatched"]>) {
        if (args[0] === "orders") marks += 1;
        return super.markDispatched(...args);
      }
    }
    const redis = restClient(fixture);
    const store = new CountsMarks(redis, { now: () => clock.now, log: DEFERRING });
    await ingestDispatchDefersMark({ clock, store, deliveries }, () => marks);
  },
);

/**
 * The README's defaults: without endpoints a stream's result log keeps about its newest 100,000
 * entries (Redis: `MAXLEN ~`, somewhat more; the memory store trims in steps of 1/64 of it), and
 * the hold's hard bound is 1,200,000 entries (pinned only: too many to write in a test).
 */
async function keepsItsNewest(store: Store, slack: number) {
  assert.equal(MAX_LOG_ENTRIES, 100_000);
  assert.equal(MAX_LOG_BACKLOG, 1_200_000);
  const record = (i: number) => ({ type: "window.updated", n: i }) as never;
  for (let i = 0; i < 110_000; i += 10_000) {
    await store.appendLog("orders", Array.from({ length: 10_000 }, (_, j) => record(i + j)));
  }
  const kept = await store.readLog("orders", null, 200_000);
  assert.ok(
    kept.length >= 100_000 && kept.length <= 100_000 + slack,
    `kept ${kept.length}`,
  );
  assert.equal((kept.at(-1)!.record as unknown as { n: number }).n, 109_999);
}

Deno.test("memory: without endpoints a stream's log keeps about its newest 100,000 entries by default", async () => {
  await keepsItsNewest(new MemoryStore(), Math.ceil(100_000 / 64));
});

redisTest(
  "redis: without endpoints a stream's log keeps about its newest 100,000 entries by default",
  async (fixture) => {
    const clock: Clock = { now: Date.now() };
    const redis = restClient(fixture);
    // MAXLEN ~ trims whole nodes of 100 entries.
    await keepsItsNewest(new RedisStore(redis, { now: () => clock.now }), 100);
  },
);

/**
 * README: when the last endpoint is deleted, the next sweep lets the held logs go, back to their
 * retained entries (here 20).
 */
async function lastEndpointLetsGo(options: SetupOptions & { clock: Clock }) {
  const app = await setup({ ...options, dispatch: { pageSize: 10, maxPages: 2 } });
  const receiver = await Receiver.start(() => options.clock.now);
  try {
    const { id, secret } = await register(app.app, {
      url: receiver.url(),
      eventTypes: ["window.closed"],
    });
    receiver.secrets = [secret];
    await ingest(
      app.app,
      Array.from({ length: GROUPS }, (_, i) => ({ id: `e${i}`, ts: at(1), country: `c${i}` })),
    );
    await ingest(app.app, [{ id: "tick", ts: at(200), country: "DE" }]);
    await sweep(app.app, app.webhooks);
    const held = (await app.store.readLog("orders", null, 1_000)).length;
    // Held for dispatch, which took 20 of them: more than the 20 retained.
    assert.ok(held > 3 * BOUNDS.retain!, `held ${held}`);
    assert.equal((await call(app.app, "DELETE", `/v1/webhooks/${id}`)).status, 204);
    await sweep(app.app, app.webhooks);
    const kept = (await app.store.readLog("orders", null, 1_000)).length;
    assert.ok(kept >= BOUNDS.retain! && kept <= BOUNDS.retain! + 2, `kept ${kept}`);
  } finally {
    await app.close();
    await receiver.close();
  }
}

Deno.test("memory: once the last endpoint is deleted, the next sweep lets the held log go", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  await lastEndpointLetsGo({
    clock,
    store: new MemoryStore({ now: () => clock.now, log: BOUNDS }),
  });
});

redisTest(
  "redis: once the last endpoint is deleted, the next sweep lets the held log go",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    await lastEndpointLetsGo({ clock, ...redisStores(fixture, clock, BOUNDS) });
  },
);

redisTest(
  "redis: a mark trims at most 20,000 of the entries it frees a call (README), the rest at the next marks",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisStore(redis);
    const record = (i: number) => ({ type: "window.updated", n: i }) as never;
    // Held from the start: 150,000 entries stay, 50,000 past the 100,000 retained.
    assert.equal(await store.markDispatched("orders", "0-0"), 0);
    for (let i = 0; i < 150_000; i += 10_000) {
      await store.appendLog("orders", Array.from({ length: 10_000 }, (_, j) => record(i + j)));
    }
    const newest = await store.lastLogId("orders");
    const length = () => withDirect(fixture.redisUrl, (send) => send("XLEN", "es:{orders}:log"));
    assert.equal(await length(), 150_000);
    const lengths = [];
    for (let mark = 0; mark < 4; mark++) {
      assert.equal(await store.markDispatched("orders", newest), 0, "nothing undispatched lost");
      lengths.push(await length());
    }
    assert.deepEqual(lengths, [130_000, 110_000, 100_000, 100_000]);
  },
);

/**
 * The process whose ingests deferred their marks stops before its sweep (a deploy, an evicted
 * isolate, SIGKILL); each later sweep runs in a new process (as `Deno.cron` may, see
 * `deploy/main.ts`) that holds the log first (`prepare`) and finds nothing new to dispatch. Its
 * sweep still marks how far the log was dispatched, so the log trims what was delivered rather
 * than keeping it until some process dispatches again.
 */
async function freshProcessSweepMarks(store: Store, deliveries?: SetupOptions["deliveries"]) {
  const clock: Clock = { now: T0 + 600_000 };
  await fillLog(store);
  const first = await setup({ clock, store, deliveries });
  const receiver = await Receiver.start(() => clock.now);
  try {
    const { secret } = await register(first.app, {
      url: receiver.url(),
      eventTypes: ["event.processed"],
    });
    receiver.secrets = [secret];
    // Event times well before the clock's minute closes: no sweep below closes a window.
    for (let i = 0; i <= 20; i++) {
      await ingest(first.app, [{ id: `p${i}`, ts: at(595), country: "DE", amount: 1 }]);
      await first.webhooks.idle();
    }
    await first.close();
    const held = (await store.readLog("orders", null, 1_000)).length;
    assert.ok(held >= DEFERRING.retain! + 20, `the mark lags: the log holds ${held}`);
    for (let round = 0; round < 3; round++) {
      clock.now += 1_000;
      const next = await setup({ clock, store, deliveries: first.deliveries });
      try {
        await sweep(next.app, next.webhooks);
      } finally {
        await next.close();
      }
    }
    const processed = receiver.received.filter((item) => item.payload.type === "event.processed");
    assert.equal(processed.length, 21);
    assert.equal(
      new Set(processed.map((item) => JSON.stringify(item.payload))).size,
      21,
      "none twice",
    );
    const log = await store.readLog("orders", null, 1_000);
    assert.ok(
      log.length <= DEFERRING.retain! + 2,
      `the log trimmed what was dispatched: ${log.length}`,
    );
  } finally {
    await receiver.close();
  }
}

Deno.test("memory: a new process's sweep marks what a stopped process's ingests dispatched with their marks deferred", async () => {
  await freshProcessSweepMarks(
    new MemoryStore({ now: () => T0 + 600_000, log: DEFERRING }),
  );
});

redisTest(
  "redis: a new process's sweep marks what a stopped process's ingests dispatched with their marks deferred",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const { store, deliveries } = redisStores(fixture, clock, DEFERRING);
    await freshProcessSweepMarks(store, deliveries);
  },
);

/**
 * Dispatches that defer their marks (an ingest's) let a log whose bound is small (50 entries)
 * hold at most a tenth more than it retains: the mark is made once 5 entries went unmarked, not
 * 10,000 as for the default bound.
 */
async function deferredMarksKeepTheBound(store: Store, deliveries: DeliveryStore) {
  const retain = 50;
  const orders = compileConfig(CONFIG).get("orders")!;
  const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
  // Pages move the cursor, no delivery made (no entry is a window.closed).
  const endpoint: Endpoint = {
    id: "ep_a",
    url: "https://example.com/ep_a",
    description: null,
    eventTypes: ["window.closed"],
    streams: null,
    filter: null,
    headers: {},
    rateLimit: null,
    batch: null,
    secrets: [],
    startAfter: {},
    createdMs: T0,
    updatedMs: T0,
    version: 1,
    disabled: false,
    disabledReason: null,
    failingSinceMs: null,
  };
  const record = (i: number) => ({ type: "window.updated", n: i }) as never;
  await dispatcher.hold("orders");
  let most = 0;
  for (let i = 0; i < 100; i++) {
    await store.appendLog("orders", [record(2 * i), record(2 * i + 1)]);
    await dispatcher.dispatch(orders, [endpoint], { deferMark: true });
    most = Math.max(most, (await store.readLog("orders", null, 1_000)).length);
  }
  assert.ok(most >= retain, `the log kept its newest ${retain}: at most ${most}`);
  assert.ok(most <= retain + retain / 10, `the log held ${most}, over its bound by a tenth`);
  assert.deepEqual(store.logBounds, { retain, max: 1_000 });
}

Deno.test("memory: dispatches that defer their marks let a log pass what it retains by a tenth at most", async () => {
  await deferredMarksKeepTheBound(
    new MemoryStore({ now: () => T0, log: { retain: 50, max: 1_000 } }),
    new MemoryDeliveryStore({ now: () => T0 }),
  );
});

redisTest(
  "redis: dispatches that defer their marks let a log pass what it retains by a tenth at most",
  async (fixture) => {
    const clock: Clock = { now: T0 };
    const { store, deliveries } = redisStores(fixture, clock, { retain: 50, max: 1_000 });
    await deferredMarksKeepTheBound(store, deliveries);
  },
);

/**
 * A registration refused (400) changes nothing: it does not hold the result logs either, which
 * no sweep would let go while no endpoint exists (the sweep let them go once already).
 */
async function refusedRegistrationHoldsNoLog(options: SetupOptions & { clock: Clock }) {
  const app = await setup(options);
  try {
    // The first sweep without endpoints lets the logs go; later ones have nothing to let go.
    await sweep(app.app, app.webhooks);
    const refused = await call(app.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/hook",
      eventTypes: ["window.closed"],
      batch: { maxEvents: 10, eventTypes: ["alert.fired"] },
    });
    assert.equal(refused.status, 400, refused.text);
    assert.equal(refused.body.error.code, "invalid_webhook");
    assert.deepEqual((await call(app.app, "GET", "/v1/webhooks")).body.webhooks, []);
    await ingest(
      app.app,
      Array.from({ length: GROUPS }, (_, i) => ({ id: `e${i}`, ts: at(1), country: `c${i}` })),
    );
    await ingest(app.app, [{ id: "tick", ts: at(200), country: "DE" }]);
    await sweep(app.app, app.webhooks);
    const kept = (await app.store.readLog("orders", null, 1_000)).length;
    assert.ok(kept <= BOUNDS.retain! + 2, `the log keeps its newest ${BOUNDS.retain}: ${kept}`);
  } finally {
    await app.close();
  }
}

Deno.test("memory: a registration refused for its batch does not hold the result log", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  await refusedRegistrationHoldsNoLog({
    clock,
    store: new MemoryStore({ now: () => clock.now, log: BOUNDS }),
  });
});

redisTest(
  "redis: a registration refused for its batch does not hold the result log",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    await refusedRegistrationHoldsNoLog({ clock, ...redisStores(fixture, clock, BOUNDS) });
  },
);
