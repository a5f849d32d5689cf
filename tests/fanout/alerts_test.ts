import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import {
  ALERT_QUANTILE_FIELDS,
  ALERT_WINDOW_FIELDS,
  compileConfig,
  StreamRegistry,
} from "../../src/config/mod.ts";
import { AlertWatcher, evaluateAlerts } from "../../src/fanout/alerts.ts";
import { startSweeping, sweepOnce } from "../../src/fanout/sweep.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { Redis } from "@upstash/redis";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import { OTHER_GROUP, type Store, StoreUnavailableError } from "../../src/store/types.ts";
import { emptyState } from "../../src/window/mod.ts";
import { collectingLogs, messageOf } from "../_logs.ts";
import { redisTest, restClient, withDirect } from "../_redis.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");

const ORDERS = {
  time: { field: "ts", lateness: "10s" },
  counters: {
    per_minute: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
    biggest: { window: { hopping: "2m", every: "1m" }, aggregate: { max: "amount" } },
  },
  alerts: [
    { name: "busy", counter: "per_minute", when: "value >= 3.0" },
    { name: "german", counter: "per_minute", when: "group.country == 'DE' && value >= 1.0" },
    { name: "whale", counter: "biggest", when: "value > 1000.0" },
    {
      name: "first_minute",
      counter: "per_minute",
      when: "window.start == '2026-01-01T00:00:00.000Z' && window.counter == 'per_minute'",
    },
  ],
};
const streams = compileConfig({ streams: { orders: ORDERS } });
const orders = streams.get("orders")!;
const perMinute = orders.counters[0];

function items(events: object[]) {
  return events.map((value) => ({ ok: true as const, value }));
}

function at(seconds: number) {
  return new Date(T0 + seconds * 1000).toISOString();
}

/**
 * `store` as an AlertWatcher reads it, each firing it is asked to fire listed in `asked`
 * (`alert:group`); `readWindows` answers in place of the store's when given.
 */
function countingFires(
  store: Store,
  { readWindows }: { readWindows?: Store["readWindows"] } = {},
): { store: Store; asked: string[]; counters: unknown[] } {
  const asked: string[] = [];
  // The counters each call said its firings were evaluated by (see Store.fireAlerts).
  const counters: unknown[] = [];
  const counting = {
    readWindows: readWindows ?? ((...args) => store.readWindows(...args)),
    fireAlerts(...args) {
      asked.push(...args[1].map((firing) => `${firing.alert}:${firing.group}`));
      counters.push(args[2]?.counters);
      return store.fireAlerts(...args);
    },
  } satisfies Pick<Store, "readWindows" | "fireAlerts">;
  return { store: counting as unknown as Store, asked, counters };
}

Deno.test("evaluateAlerts() fires the alerts on the counter whose condition is true", () => {
  const state = { ...emptyState(), count: 3 };
  const firings = evaluateAlerts(orders, perMinute, [
    { start: T0, end: T0 + 60_000, group: '["DE"]', state },
    { start: T0 + 60_000, end: T0 + 120_000, group: '["FR"]', state: { ...state, count: 1 } },
  ]);
  assert.deepEqual(firings.map((item) => [item.alert, item.group, item.start - T0, item.value]), [
    ["busy", '["DE"]', 0, 3],
    ["german", '["DE"]', 0, 3],
    ["first_minute", '["DE"]', 0, 3],
  ]);
  assert.equal(firings[0].end, T0 + 60_000);
  assert.ok(firings[0].ttlMs >= perMinute.meta.ttlMs);
});

Deno.test("README alerts: group holds each groupBy field by its name as written, a dotted path too (group['user.country'])", () => {
  const config = compileConfig({
    streams: {
      shop: {
        counters: {
          n: { window: { tumbling: "1m" }, groupBy: ["user.country", "os"], aggregate: "count" },
        },
        alerts: [
          { name: "de", counter: "n", when: "group['user.country'] == 'DE' && group.os == 'ios'" },
        ],
      },
    },
  });
  const shop = config.get("shop")!;
  const row = { start: T0, end: T0 + 60_000, state: { ...emptyState(), count: 1 } };
  const firings = evaluateAlerts(shop, shop.counters[0], [
    { ...row, group: '["DE","ios"]' },
    { ...row, group: '["FR","ios"]' },
  ]);
  assert.deepEqual(firings.map((firing) => firing.group), ['["DE","ios"]']);
});

Deno.test("evaluateAlerts() gives window the fields an alert may name (ALERT_WINDOW_FIELDS) for every window kind, and group every groupBy field, the other group's too", () => {
  const fields = ALERT_WINDOW_FIELDS.map((field) => `has(window.${field})`).join(" && ");
  const config = compileConfig({
    streams: {
      shop: {
        counters: {
          n: {
            window: { hopping: "2m", every: "1m" },
            groupBy: ["meta", "user.plan"],
            aggregate: "count",
          },
          visit: { window: { session: "30s" }, aggregate: "count" },
        },
        alerts: [
          { name: "fields", counter: "n", when: `${fields} && size(window) == 3` },
          { name: "session", counter: "visit", when: `${fields} && size(window) == 3` },
          {
            name: "eu",
            counter: "n",
            when: `has(group.meta) && "user.plan" in group && group.meta.region == "EU"`,
          },
          { name: "pro", counter: "n", when: `group["user.plan"] == "pro"` },
        ],
      },
    },
  });
  const shop = config.get("shop")!;
  const row = { start: T0, end: T0 + 120_000, state: { ...emptyState(), count: 1 } };
  const fired = (counter: number, group: string) =>
    evaluateAlerts(shop, shop.counters[counter], [{ ...row, group }]).map((firing) => firing.alert);
  assert.deepEqual(fired(0, '[{"region":"EU"},"pro"]'), ["fields", "eu", "pro"]);
  assert.deepEqual(fired(0, '[{"region":"US"},null]'), ["fields"]);
  assert.deepEqual(fired(0, OTHER_GROUP), ["fields"]);
  assert.deepEqual(fired(1, "[]"), ["session"]);
});

Deno.test("evaluateAlerts() gives a quantiles counter's value exactly the fields an alert may name (ALERT_QUANTILE_FIELDS), and any other counter's a number", () => {
  const fields = ALERT_QUANTILE_FIELDS.map((field) => `has(value.${field})`).join(" && ");
  const shop = compileConfig({
    streams: {
      shop: {
        counters: {
          latency: { window: { tumbling: "1m" }, aggregate: { quantiles: "ms" } },
          mean: { window: { tumbling: "1m" }, aggregate: { avg: "ms" } },
        },
        alerts: [
          { name: "fields", counter: "latency", when: `${fields} && size(value) == 8` },
          { name: "number", counter: "mean", when: "value > 1.0" },
        ],
      },
    },
  }).get("shop")!;
  const row = { start: T0, end: T0 + 60_000, group: "[]" };
  const [quantiles] = evaluateAlerts(shop, shop.counters[0], [{ ...row, state: emptyState() }]);
  assert.equal(quantiles.alert, "fields");
  assert.deepEqual(
    Object.keys(quantiles.value as object).sort(),
    [...ALERT_QUANTILE_FIELDS].sort(),
  );
  const state = { ...emptyState(), count: 2, sum: 5 };
  const [number] = evaluateAlerts(shop, shop.counters[1], [{ ...row, state }]);
  assert.equal(number.value, 2.5);
});

Deno.test("evaluateAlerts() marks a firing approximate when its window's distinct count is an estimate, and only then", () => {
  const config = compileConfig({
    streams: {
      visits: {
        counters: { users: { window: { tumbling: "1m" }, aggregate: { distinct: "user" } } },
        alerts: [{ name: "crowd", counter: "users", when: "value >= 2.0" }],
      },
    },
  });
  const visits = config.get("visits")!;
  const row = { start: T0, end: T0 + 60_000, group: "[]" };
  const [estimated] = evaluateAlerts(visits, visits.counters[0], [
    { ...row, state: { ...emptyState(), distinct: 2, approximate: true } },
  ]);
  assert.equal(estimated.approximate, true);
  const [exact] = evaluateAlerts(visits, visits.counters[0], [
    { ...row, state: { ...emptyState(), distinct: 2, approximate: false } },
  ]);
  assert.equal("approximate" in exact, false);
});

Deno.test("evaluateAlerts() counts an expression that fails on a window, or gives no bool, as false, and warns once a minute per alert", async () => {
  // A fresh compile: alerts warned about by other tests must not hold back this one's warning.
  const stream = compileConfig({
    streams: {
      orders: {
        ...ORDERS,
        alerts: [
          ...ORDERS.alerts,
          { name: "p99", counter: "per_minute", when: "value.p99 > 1.0" },
          { name: "bare", counter: "per_minute", when: "value" },
        ],
      },
    },
    // `value.p99` of a count is refused since; as stored before, it fails on every window.
  }, { unknownAlertFields: true }).get("orders")!;
  const [perMinute, biggest] = stream.counters;
  const empty = { start: T0, end: T0 + 120_000, group: "[]", state: emptyState() };
  const counted = { ...empty, group: '["DE"]', state: { ...emptyState(), count: 5 } };
  await collectingLogs(async (records) => {
    for (let i = 0; i < 3; i++) {
      assert.deepEqual(evaluateAlerts(stream, biggest, [empty]), []);
      const firings = evaluateAlerts(stream, perMinute, [counted]);
      assert.deepEqual(firings.map((firing) => firing.alert), ["busy", "german", "first_minute"]);
    }
    await Promise.resolve();
    // The first line of each (CEL's error goes on with the expression, marked).
    assert.deepEqual(
      records.map((record) => [record.level, messageOf(record).split("\n")[0]]),
      [
        [
          "warning",
          "Alert whale of stream orders: its condition value > 1000.0 failed on a window of counter biggest whose value is null, so it did not fire there (test value != null first): no such overload: dyn<null> > double",
        ],
        [
          "warning",
          "Alert p99 of stream orders: its condition value.p99 > 1.0 failed on a window of counter per_minute, so it did not fire there: No such key: p99",
        ],
        [
          "warning",
          "Alert bare of stream orders: its condition value failed on a window of counter per_minute, so it did not fire there: The condition must return a bool, got number",
        ],
      ],
    );
  });
});

Deno.test("AlertWatcher fires after ingest, off the request path, once per alert, window and group", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const fired: string[] = [];
  const watcher = new AlertWatcher(store, {
    onFired: (stream, firings) => fired.push(...firings.map((f) => `${stream}:${f.alert}`)),
  });
  const options = { observers: [watcher.observe] };
  await ingestItems(orders, items([{ ts: at(1), country: "DE" }, { ts: at(2), country: "FR" }]), {
    ...options,
    store: store,
    nowMs: T0,
  });
  assert.deepEqual(await store.readLog("orders", null, 100), [], "nothing ran before the reply");
  await watcher.idle();
  assert.deepEqual(fired.sort(), ["orders:first_minute", "orders:first_minute", "orders:german"]);
  await ingestItems(orders, items([{ ts: at(3), country: "DE" }, { ts: at(4), country: "DE" }]), {
    ...options,
    store: store,
    nowMs: T0,
  });
  await ingestItems(orders, items([{ ts: at(5), country: "DE", amount: 5000 }]), {
    ...options,
    store: store,
    nowMs: T0,
  });
  await watcher.idle();
  const records = (await store.readLog("orders", null, 100)).map((entry) => entry.record);
  const keys = records.map((record) =>
    record.type === "alert.fired" ? `${record.alert}:${record.group}:${record.start - T0}` : "?"
  ).sort();
  assert.deepEqual(keys, [
    'busy:["DE"]:0',
    'first_minute:["DE"]:0',
    'first_minute:["FR"]:0',
    'german:["DE"]:0',
    "whale:[]:-60000",
    "whale:[]:0",
  ]);
  await watcher.close();
});

Deno.test("AlertWatcher reads the windows an event touched a few at a time, never all of a sliding day's 1,440 in one store read", async () => {
  const day = compileConfig({
    streams: {
      visits: {
        time: { field: "ts" },
        counters: {
          daily: { window: { sliding: "1d", precision: "1m" }, aggregate: "count" },
        },
        alerts: [{ name: "any", counter: "daily", when: "value >= 1.0" }],
      },
    },
  }).get("visits")!;
  const store = new MemoryStore({ now: () => T0 });
  const reads: number[] = [];
  const { store: counting } = countingFires(store, {
    readWindows(...args) {
      reads.push(args[2].reduce((sum, read) => sum + read.panes.length, 0));
      return store.readWindows(...args);
    },
  });
  const watcher = new AlertWatcher(counting, { now: () => T0 });
  await ingestItems(day, items([{ ts: at(1) }]), {
    observers: [watcher.observe],
    store,
    nowMs: T0,
  });
  await watcher.idle();
  // 1,440 windows of 1,440 panes: one Redis script merging 2,073,600 panes blocked Redis for
  // seconds. Each read takes windows until they cover 4,096 panes, as a page's reads do.
  assert.equal(reads.reduce((sum, panes) => sum + panes, 0), 1440 * 1440);
  assert.ok(Math.max(...reads) < 4096 + 1440, `reads of ${Math.max(...reads)} panes`);
  // Every window the event is in fired, once.
  const fired = (await store.readLog("visits", null, 2000)).map((entry) => entry.record.type);
  assert.equal(fired.filter((type) => type === "alert.fired").length, 1440);
  await watcher.close();
});

Deno.test("AlertWatcher asks the store to fire an alert once, not again on every batch that keeps it true", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const { store: counting, asked, counters } = countingFires(store);
  const watcher = new AlertWatcher(counting, { now: () => T0 });
  const ingest = async (events: object[]) => {
    await ingestItems(orders, items(events), {
      observers: [watcher.observe],
      store,
      nowMs: T0,
    });
    await watcher.idle();
  };
  await ingest([{ ts: at(1), country: "DE" }]);
  assert.deepEqual(asked.sort(), ['first_minute:["DE"]', 'german:["DE"]']);
  // Still true for DE on every later batch: only what is new for the store is asked for
  // (a round trip less before the evaluation of the next batch, whose alert may be new).
  asked.length = 0;
  await ingest([{ ts: at(2), country: "DE" }]);
  await ingest([{ ts: at(3), country: "DE" }, { ts: at(4), country: "FR" }]);
  assert.deepEqual(asked.sort(), ['busy:["DE"]', 'first_minute:["FR"]']);
  const fired = (await store.readLog("orders", null, 100)).map((entry) => entry.record.type);
  assert.equal(fired.length, 4);
  // Each asked by the counters of the definition it evaluated, as the sweep asks: a registry's
  // store fires to that incarnation, never to one created again since.
  assert.ok(counters.length > 0);
  for (const given of counters) assert.deepEqual(given, orders.counterMetas);
  await watcher.close();
});

Deno.test("AlertWatcher asks the store again about a firing after its wall clock steps back, not only once it passes the answer's time again", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const { store: counting, asked } = countingFires(store);
  let now = T0;
  const watcher = new AlertWatcher(counting, { now: () => now });
  const ingest = async (events: object[]) => {
    await ingestItems(orders, items(events), { observers: [watcher.observe], store, nowMs: T0 });
    await watcher.idle();
  };
  await ingest([{ ts: at(1), country: "DE" }]);
  assert.deepEqual(asked.sort(), ['first_minute:["DE"]', 'german:["DE"]']);
  asked.length = 0;
  // Before, the firings stayed known as fired until the clock passed their time again, an hour
  // for a step of an hour: the store, which keeps its own time, was not asked meanwhile.
  now -= 3_600_000;
  await ingest([{ ts: at(2), country: "DE" }]);
  assert.deepEqual(asked.sort(), ['first_minute:["DE"]', 'german:["DE"]']);
  // The store still fired each once.
  assert.equal((await store.readLog("orders", null, 100)).length, 2);
  await watcher.close();
});

Deno.test("AlertWatcher asks the store again about a firing it no longer remembers", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const { store: counting, asked } = countingFires(store);
  // Remembers one firing: DE's two (german, first_minute) push each other out.
  const watcher = new AlertWatcher(counting, { now: () => T0, maxRemembered: 1 });
  for (const second of [1, 2]) {
    await ingestItems(orders, items([{ ts: at(second), country: "DE" }]), {
      observers: [watcher.observe],
      store,
      nowMs: T0,
    });
    await watcher.idle();
  }
  assert.equal(asked.length, 3, "the second batch asks about the forgotten firing only");
  // The store still fires each once.
  assert.equal((await store.readLog("orders", null, 100)).length, 2);
  await watcher.close();
});

Deno.test("AlertWatcher fires the alerts of a stream deleted and created again anew", async () => {
  const registry = new StreamRegistry(compileConfig({ streams: {} }), { now: () => T0 });
  const store = registry.wrap(new MemoryStore({ now: () => T0 }));
  const watcher = new AlertWatcher(store, { now: () => T0 });
  const definition = {
    time: { field: "ts", lateness: "10s" },
    counters: { per_minute: { window: { tumbling: "1m" }, aggregate: "count" } },
    alerts: [{ name: "any", counter: "per_minute", when: "value >= 1.0" }],
  };
  const firedTypes = async () =>
    (await store.readLog("orders", null, 100)).map((entry) => entry.record.type);
  for (let incarnation = 0; incarnation < 2; incarnation++) {
    if (incarnation > 0) await registry.remove("orders");
    await registry.put("orders", definition);
    await ingestItems(registry.get("orders")!, items([{ ts: at(1) }]), {
      observers: [watcher.observe],
      store,
      nowMs: T0,
    });
    await watcher.idle();
    // The same alert, window and group as before: the new incarnation's log holds its firing.
    assert.deepEqual(await firedTypes(), ["alert.fired"], `incarnation ${incarnation}`);
  }
  await watcher.close();
});

Deno.test("AlertWatcher evaluates a new batch while the evaluation of an earlier one waits for the store", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  let reads = 0;
  const { store: slowFirstRead } = countingFires(store, {
    async readWindows(...args) {
      // The first evaluation's read hangs until the test lets it go (or a while passes).
      if (++reads === 1) {
        await Promise.race([released, new Promise((resolve) => setTimeout(resolve, 1_000))]);
      }
      return await store.readWindows(...args);
    },
  });
  const fired: string[] = [];
  const { promise: whale, resolve: onWhale } = Promise.withResolvers<boolean>();
  const watcher = new AlertWatcher(slowFirstRead, {
    now: () => T0,
    onFired: (_, firings) => {
      fired.push(...firings.map((firing) => firing.alert));
      if (firings.some((firing) => firing.alert === "whale")) onWhale(true);
    },
  });
  const ingest = (events: object[]) =>
    ingestItems(orders, items(events), { observers: [watcher.observe], store, nowMs: T0 });
  await ingest([{ ts: at(1), country: "DE" }]);
  while (reads === 0) await new Promise((resolve) => setTimeout(resolve, 1));
  await ingest([{ ts: at(2), country: "FR", amount: 5000 }]);
  const firedWhileWaiting = await Promise.race([
    whale,
    new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 500)),
  ]);
  release();
  await watcher.idle();
  assert.equal(firedWhileWaiting, true, "the second batch's alert waited for the first read");
  assert.ok(fired.includes("german"), "the first batch is evaluated too");
  await watcher.close();
});

Deno.test("AlertWatcher reports store failures and keeps going", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const errors: unknown[] = [];
  let failing = true;
  const { store: flaky } = countingFires(store, {
    readWindows(...args) {
      if (failing) return Promise.reject(new Error("Store is down"));
      return store.readWindows(...args);
    },
  });
  const watcher = new AlertWatcher(flaky, { onError: (error) => errors.push(error) });
  const options = { observers: [watcher.observe] };
  await ingestItems(orders, items([{ ts: at(1), country: "DE" }]), {
    ...options,
    store: store,
    nowMs: T0,
  });
  await watcher.idle();
  assert.equal(errors.length, 1);
  failing = false;
  await ingestItems(orders, items([{ ts: at(2), country: "DE" }]), {
    ...options,
    store: store,
    nowMs: T0,
  });
  await watcher.idle();
  assert.ok(
    (await store.readLog("orders", null, 100)).some((entry) => entry.record.type === "alert.fired"),
  );
  await watcher.close();
});

Deno.test("sweepOnce() fires alerts on the final values of the windows it closes, once", async () => {
  const store = new MemoryStore({ now: () => T0 });
  await ingestItems(
    orders,
    items([
      { ts: at(1), country: "DE" },
      { ts: at(2), country: "DE" },
      { ts: at(3), country: "DE" },
      { ts: at(4), country: "FR" },
    ]),
    { store: store, nowMs: T0 },
  );
  await ingestItems(orders, items([{ ts: at(200), country: "FR" }]), { store: store, nowMs: T0 });
  const report = await sweepOnce(streams.values(), store);
  assert.deepEqual(
    report.fired.map((item) => `${item.stream}:${item.alert}:${item.group}`).sort(),
    [
      'orders:busy:["DE"]',
      'orders:first_minute:["DE"]',
      'orders:first_minute:["FR"]',
      'orders:german:["DE"]',
    ],
  );
  assert.equal((await sweepOnce(streams.values(), store)).fired.length, 0);
  const alerts = (await store.readLog("orders", null, 100)).filter((entry) =>
    entry.record.type === "alert.fired"
  );
  assert.equal(alerts.length, 4);
});

/** A memory store whose first claiming close fails, as if the process died right before it. */
class CrashBeforeClose extends MemoryStore {
  crashes = 1;
  override closeWindows(...args: Parameters<Store["closeWindows"]>) {
    if (!args[2].peek && this.crashes-- > 0) return Promise.reject(new Error("killed"));
    return super.closeWindows(...args);
  }
}

Deno.test("sweepOnce() fires final-value alerts before it closes their windows, so a crash in between loses none", async () => {
  const store = new CrashBeforeClose({ now: () => T0 });
  await ingestItems(orders, items([{ ts: at(1), country: "DE" }, { ts: at(200), country: "FR" }]), {
    store: store,
    nowMs: T0,
  });
  const crashed = await sweepOnce(streams.values(), store);
  assert.deepEqual(crashed.failed.map((failure) => failure.stream), ["orders"]);
  assert.match(String(crashed.failed[0].error), /killed/);
  const firedBeforeCrash = (await store.readLog("orders", null, 100))
    .filter((entry) => entry.record.type === "alert.fired").length;
  assert.equal(firedBeforeCrash, 2, "german and first_minute on DE");
  const report = await sweepOnce(streams.values(), store);
  assert.ok(report.closed.length > 0);
  assert.equal(report.fired.length, 0, "already fired before the crash: not again");
});

/** A memory store whose closes of one stream fail, as a broken key or a failing script would. */
class BrokenStream extends MemoryStore {
  override closeWindows(...args: Parameters<Store["closeWindows"]>) {
    if (args[0] === "broken") return Promise.reject(new Error("WRONGTYPE"));
    return super.closeWindows(...args);
  }
}

Deno.test("sweepOnce() sweeps the other streams and runs its consumers when one stream fails", async () => {
  const two = compileConfig({
    streams: {
      broken: { time: ORDERS.time, counters: ORDERS.counters },
      orders: ORDERS,
    },
  });
  const store = new BrokenStream({ now: () => T0 });
  for (const name of ["broken", "orders"]) {
    await ingestItems(
      two.get(name)!,
      items([{ ts: at(1), country: "DE" }, { ts: at(200), country: "FR" }]),
      { store, nowMs: T0 },
    );
  }
  let consumed = 0;
  const report = await sweepOnce(two.values(), store, {
    consumers: [{ sweep: () => Promise.resolve(++consumed) }],
  });
  assert.deepEqual(report.failed.map((failure) => failure.stream), ["broken"]);
  assert.match(String(report.failed[0].error), /WRONGTYPE/);
  assert.ok(report.closed.some((window) => window.stream === "orders"));
  assert.ok(report.fired.some((firing) => firing.stream === "orders"));
  assert.deepEqual(report.fanout, [1]);
});

Deno.test("sweepOnce() stops at a store that cannot be reached, rather than fail every stream after its deadline", async () => {
  let calls = 0;
  class Unreachable extends MemoryStore {
    override closeWindows(): Promise<never> {
      calls += 1;
      return Promise.reject(new StoreUnavailableError("Redis did not answer within 5000 ms"));
    }
  }
  const many = compileConfig({
    streams: Object.fromEntries(
      Array.from({ length: 5 }, (_, i) => [`s${i}`, { counters: ORDERS.counters }]),
    ),
  });
  await assert.rejects(sweepOnce(many.values(), new Unreachable()), StoreUnavailableError);
  assert.equal(calls, 1);
});

Deno.test("startSweeping() runs one sweep at a time, reports each failed stream, and stop() waits for a running one", async () => {
  const clock = FakeTimers.install({ toFake: ["setInterval", "clearInterval"] });
  try {
    let started = 0;
    const hold = Promise.withResolvers<void>();
    const errors: Array<[string, string | undefined]> = [];
    const sweeping = startSweeping(
      async () => {
        started += 1;
        await hold.promise;
        return {
          closed: [],
          fired: [],
          failed: [{ stream: "broken", error: new Error("WRONGTYPE") }],
        };
      },
      500,
      { onError: (error, stream) => errors.push([String(error), stream]) },
    );
    clock.tick(500);
    // The store is slow: ten more ticks while the first sweep waits start nothing.
    clock.tick(5_000);
    assert.equal(started, 1);
    let stopped = false;
    const stopping = sweeping.stop().then(() => stopped = true);
    await Promise.resolve();
    assert.equal(stopped, false);
    hold.resolve();
    await stopping;
    assert.deepEqual(errors, [["Error: WRONGTYPE", "broken"]]);
    clock.tick(5_000);
    assert.equal(started, 1);
  } finally {
    clock.uninstall();
  }
});

Deno.test("sweepOnce() runs its consumers after closing windows and reports what they did", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const seen: number[] = [];
  const report = await sweepOnce(streams.values(), store, {
    consumers: [{
      async sweep() {
        seen.push((await store.readLog("orders", null, 10)).length);
        return { ran: true };
      },
    }],
  });
  assert.deepEqual(seen, [0]);
  assert.deepEqual(report.fanout, [{ ran: true }]);
  assert.equal((await sweepOnce(streams.values(), store)).fanout, undefined);
});

Deno.test("AlertWatcher leaves session counters to the sweep: no early firing, no error", async () => {
  const visits = compileConfig({
    streams: {
      visits: {
        time: { field: "ts", lateness: "10s" },
        counters: { visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" } },
        alerts: [{ name: "any", counter: "visit", when: "value >= 1.0" }],
      },
    },
  }).get("visits")!;
  const store = new MemoryStore({ now: () => T0 });
  const errors: unknown[] = [];
  const watcher = new AlertWatcher(store, { onError: (error) => errors.push(error) });
  // Observers' throws are only logged by ingest: catch them here to see them.
  const observe = (batch: Parameters<typeof watcher.observe>[0]) => {
    try {
      watcher.observe(batch);
    } catch (error) {
      errors.push(error);
    }
  };
  await ingestItems(visits, items([{ ts: at(1), user: "u1" }]), {
    observers: [observe],
    store,
    nowMs: T0,
  });
  await watcher.idle();
  assert.deepEqual(errors, []);
  assert.deepEqual(await store.readLog("visits", null, 10), []);
  await watcher.close();
});

/** A memory store whose peek misses all but the first due window, as if the others became due after it. */
class PeekSeesOne extends MemoryStore {
  override async closeWindows(...args: Parameters<Store["closeWindows"]>) {
    const windows = await super.closeWindows(...args);
    if (!args[2].peek) return windows;
    // As a peek that saw only the first: its cutoff as it found it.
    return Object.assign(windows.slice(0, 1), { cutoff: windows.cutoff });
  }
}

Deno.test("sweepOnce() fires final-value alerts on sessions of other groups with the same start that became due after its peek", async () => {
  const visitStreams = compileConfig({
    streams: {
      visits: {
        time: { field: "ts", lateness: "10s" },
        counters: { visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" } },
        alerts: [{ name: "visited", counter: "visit", when: "value >= 1.0" }],
      },
    },
  });
  const store = new PeekSeesOne({ now: () => T0 });
  const visits = visitStreams.get("visits")!;
  await ingestItems(visits, items([{ ts: at(1), user: "u1" }, { ts: at(1), user: "u2" }]), {
    store,
    nowMs: T0,
  });
  await ingestItems(visits, items([{ ts: at(100), user: "tick" }]), { store, nowMs: T0 });
  const report = await sweepOnce(visitStreams.values(), store);
  assert.deepEqual(report.closed.length, 2);
  assert.deepEqual(report.fired.map((firing) => firing.group).sort(), ['["u1"]', '["u2"]']);
});

redisTest(
  "README alerts: two instances on one Redis, ingesting into the same windows at once and both sweeping, fire each alert once per window and group",
  async (fixture) => {
    const instance = () => {
      const redis = new Redis({
        url: fixture.restUrl,
        token: fixture.restToken,
        enableTelemetry: false,
      });
      const store = new RedisStore(redis, { now: () => T0 });
      const fired: string[] = [];
      const watcher = new AlertWatcher(store, {
        onFired: (_stream, firings) => fired.push(...firings.map((f) => f.alert)),
      });
      return { store, watcher, fired };
    };
    const a = instance();
    const b = instance();
    try {
      // Each instance alone makes busy (3 DE events in minute 0) true several times over.
      const ingests = [];
      for (let round = 0; round < 4; round++) {
        for (const [name, { store, watcher }] of [["a", a], ["b", b]] as const) {
          const batch = [1, 2, 3].map((i) => ({
            id: `${name}${round}-${i}`,
            ts: at(round * 10 + i),
            country: "DE",
            amount: 2000,
          }));
          ingests.push(
            ingestItems(orders, items(batch), { store, nowMs: T0, observers: [watcher.observe] }),
          );
        }
      }
      await Promise.all(ingests);
      await Promise.all([a.watcher.idle(), b.watcher.idle()]);
      // Minute 3 moves the watermark past minutes 0 and 1: both sweep their final values at once.
      await ingestItems(orders, items([{ id: "late", ts: at(200), country: "FR" }]), {
        store: a.store,
        nowMs: T0,
      });
      const sweeps = await Promise.all([
        sweepOnce(streams.values(), a.store),
        sweepOnce(streams.values(), b.store),
      ]);
      const records = (await a.store.readLog("orders", null, 1_000)).map((entry) => entry.record);
      const keys = records.flatMap((record) =>
        record.type === "alert.fired"
          ? [`${record.alert}:${record.group}:${record.start - T0}`]
          : []
      ).sort();
      assert.deepEqual(keys, [
        'busy:["DE"]:0',
        'first_minute:["DE"]:0',
        'german:["DE"]:0',
        "whale:[]:-60000",
        "whale:[]:0",
      ]);
      // What the instances report firing adds up to the log's firings: none twice.
      const reported = [
        ...a.fired,
        ...b.fired,
        ...sweeps.flatMap((s) => s.fired.map((f) => f.alert)),
      ];
      assert.equal(reported.length, keys.length, reported.join(", "));
    } finally {
      await a.watcher.close();
      await b.watcher.close();
    }
  },
);

Deno.test("README alerts: an alert fired right after ingest carries the value it saw, not the final one, and the close does not fire it again", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const watcher = new AlertWatcher(store);
  const options = { store, nowMs: T0, observers: [watcher.observe] };
  try {
    await ingestItems(orders, items([1, 2, 3].map((s) => ({ ts: at(s), country: "DE" }))), options);
    await watcher.idle();
    await ingestItems(orders, items([4, 5].map((s) => ({ ts: at(s), country: "DE" }))), options);
    await watcher.idle();
    await ingestItems(orders, items([{ ts: at(200), country: "FR" }]), options);
    const report = await sweepOnce(streams.values(), store);
    assert.deepEqual(report.fired.filter((firing) => firing.alert === "busy"), []);
    const records = (await store.readLog("orders", null, 1_000)).map((entry) => entry.record);
    const busy = records.filter((record) =>
      record.type === "alert.fired" && record.alert === "busy"
    );
    assert.deepEqual(busy, [{
      type: "alert.fired",
      alert: "busy",
      counter: "per_minute",
      start: T0,
      end: T0 + 60_000,
      group: '["DE"]',
      value: 3,
    }]);
    const closed = records.find((record) =>
      record.type === "window.closed" && record.counter === "per_minute" &&
      record.group === '["DE"]' && record.start === T0
    );
    assert.ok(closed?.type === "window.closed");
    assert.equal(closed.state.count, 5);
  } finally {
    await watcher.close();
  }
});

Deno.test("README alerts: a condition a window's value can stop meeting (value < 3.0 of a count) fires at the window's first event, on that partial value, whatever the window ends with", async () => {
  const quiet = compileConfig({
    streams: {
      orders: {
        time: { field: "ts", lateness: "10s" },
        counters: { per_minute: { window: { tumbling: "1m" }, aggregate: "count" } },
        alerts: [{ name: "quiet", counter: "per_minute", when: "value < 3.0" }],
      },
    },
  });
  const stream = quiet.get("orders")!;
  const store = new MemoryStore({ now: () => T0 });
  const watcher = new AlertWatcher(store);
  const options = { store, nowMs: T0, observers: [watcher.observe] };
  try {
    await ingestItems(stream, items([{ ts: at(1) }]), options);
    await watcher.idle();
    await ingestItems(stream, items([2, 3, 4, 5, 6].map((s) => ({ ts: at(s) }))), options);
    await watcher.idle();
    // Past the window's end and its lateness: the sweep closes it with its final count.
    await ingestItems(stream, items([{ ts: at(200) }]), options);
    await watcher.idle();
    const report = await sweepOnce(quiet.values(), store);
    assert.deepEqual(report.fired.filter((firing) => firing.start === T0), []);
    const records = (await store.readLog("orders", null, 1_000)).map((entry) => entry.record);
    const fired = records.filter((record) => record.type === "alert.fired" && record.start === T0);
    assert.deepEqual(fired.map((record) => record.type === "alert.fired" && record.value), [1]);
    const closed = records.find((record) => record.type === "window.closed" && record.start === T0);
    assert.ok(closed?.type === "window.closed");
    assert.equal(closed.state.count, 6);
  } finally {
    await watcher.close();
  }
});

/**
 * `evaluate: "close"`: `value < 3.0` on a count is judged on the window's final count only, so it
 * neither fires at a group's first event (count 1) nor at a tick opening a later window, and at
 * close fires for the group whose count ended below 3 (DE: 1), not for the one that ended at 3
 * (FR), once; a `live` alert on the same counter still fires right after ingest.
 */
async function closeOnlyAlertScenario(store: Store): Promise<void> {
  const quietStreams = compileConfig({
    streams: {
      orders: {
        time: { field: "ts", lateness: "10s" },
        counters: {
          per_minute: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
        },
        alerts: [
          { name: "quiet", counter: "per_minute", when: "value < 3.0", evaluate: "close" },
          { name: "any", counter: "per_minute", when: "value >= 1.0", evaluate: "live" },
        ],
      },
    },
  });
  const stream = quietStreams.get("orders")!;
  const watcher = new AlertWatcher(store);
  const options = { store, nowMs: T0, observers: [watcher.observe] };
  const firedLogged = async () =>
    (await store.readLog("orders", null, 1_000)).flatMap(({ record }) =>
      record.type === "alert.fired"
        ? [[record.alert, record.group, record.start, record.value]]
        : []
    );
  try {
    await ingestItems(stream, items([{ ts: at(1), country: "FR" }]), options);
    await watcher.idle();
    assert.deepEqual(await firedLogged(), [["any", '["FR"]', T0, 1]], "quiet not at count 1");
    await ingestItems(
      stream,
      items([{ ts: at(2), country: "DE" }, { ts: at(3), country: "FR" }, {
        ts: at(4),
        country: "FR",
      }]),
      options,
    );
    await watcher.idle();
    // Past the window's end and its lateness: the next sweep closes it with its final counts.
    await ingestItems(stream, items([{ ts: at(200), country: "tick" }]), options);
    await watcher.idle();
    assert.deepEqual(
      (await firedLogged()).filter(([alert]) => alert === "quiet"),
      [],
      "nothing before close",
    );
    const report = await sweepOnce(quietStreams.values(), store);
    assert.deepEqual(
      report.fired.filter((firing) => firing.alert === "quiet").map((firing) => [
        firing.group,
        firing.start,
        firing.end,
        firing.value,
      ]),
      [['["DE"]', T0, T0 + 60_000, 1]],
    );
    assert.deepEqual((await sweepOnce(quietStreams.values(), store)).fired, [], "once");
    const logged = (await store.readLog("orders", null, 1_000)).map(({ record }) => record);
    const quiet = logged.filter((record) =>
      record.type === "alert.fired" && record.alert === "quiet"
    );
    assert.equal(quiet.length, 1);
    const closed = logged.find((record) =>
      record.type === "window.closed" && record.start === T0 && record.group === '["DE"]'
    );
    assert.ok(closed?.type === "window.closed");
    // The same payload as any alert.fired: the window.closed's fields, the alert's name and value.
    assert.deepEqual(quiet[0], {
      type: "alert.fired",
      alert: "quiet",
      counter: closed.counter,
      start: closed.start,
      end: closed.end,
      group: closed.group,
      value: 1,
    });
  } finally {
    await watcher.close();
  }
}

Deno.test('AlertWatcher reads nothing after ingest for a stream whose alerts all have evaluate "close", and only the live alert\'s counter for one with both', async () => {
  const counters = {
    per_minute: { window: { tumbling: "1m" }, aggregate: "count" },
    per_hour: { window: { tumbling: "1h" }, aggregate: "count" },
  };
  const quiet = { name: "quiet", counter: "per_minute", when: "value < 3.0", evaluate: "close" };
  const compiled = compileConfig({
    streams: {
      closing: { time: ORDERS.time, counters, alerts: [quiet] },
      mixed: {
        time: ORDERS.time,
        counters,
        alerts: [quiet, { name: "hourly", counter: "per_hour", when: "value >= 1.0" }],
      },
    },
  });
  const store = new MemoryStore({ now: () => T0 });
  const read: string[] = [];
  const { store: counting, asked } = countingFires(store, {
    readWindows(stream, counter, ...rest) {
      read.push(`${stream}:${counter.name}`);
      return store.readWindows(stream, counter, ...rest);
    },
  });
  const watcher = new AlertWatcher(counting);
  const options = { store, nowMs: T0, observers: [watcher.observe] };
  try {
    await ingestItems(compiled.get("closing")!, items([{ ts: at(1) }]), options);
    await watcher.idle();
    assert.deepEqual([read, asked], [[], []]);
    await ingestItems(compiled.get("mixed")!, items([{ ts: at(1) }]), options);
    await watcher.idle();
    assert.deepEqual([read, asked], [["mixed:per_hour"], ["hourly:[]"]]);
  } finally {
    await watcher.close();
  }
});

onBothStores(
  (kind) =>
    `README alerts: with evaluate "close", value < 3.0 of a count fires at close when the window ends below 3, not at its first event nor when it ends at 3 (${kind} store)`,
  closeOnlyAlertScenario,
);

/** A session alert: none while the session is open (a merge moves its start), once at its close. */
async function sessionAlertScenario(store: Store): Promise<void> {
  const visitStreams = compileConfig({
    streams: {
      visits: {
        time: { field: "ts", lateness: "10s" },
        counters: { visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" } },
        alerts: [{ name: "twice", counter: "visit", when: "value >= 2.0" }],
      },
    },
  });
  const visits = visitStreams.get("visits")!;
  const watcher = new AlertWatcher(store);
  const options = { store, nowMs: T0, observers: [watcher.observe] };
  try {
    await ingestItems(
      visits,
      items([{ ts: at(20), user: "u1" }, { ts: at(25), user: "u1" }]),
      options,
    );
    await watcher.idle();
    // Out of order, within lateness: merged into the open session, whose start moves to 18 s.
    const merged = await ingestItems(visits, items([{ ts: at(18), user: "u1" }]), options);
    assert.equal(merged.accepted, 1);
    await watcher.idle();
    assert.deepEqual(await store.readLog("visits", null, 100), [], "no firing while open");
    // Nothing closes yet; then the watermark passes the session's end (25 s + 30 s gap + lateness).
    assert.deepEqual((await sweepOnce(visitStreams.values(), store)).fired, []);
    await ingestItems(visits, items([{ ts: at(200), user: "tick" }]), options);
    await watcher.idle();
    const first = await sweepOnce(visitStreams.values(), store);
    assert.deepEqual(first.fired.map((firing) => [firing.group, firing.start, firing.value]), [
      ['["u1"]', T0 + 18_000, 3],
    ]);
    assert.deepEqual((await sweepOnce(visitStreams.values(), store)).fired, []);
    const fired = (await store.readLog("visits", null, 100)).filter((entry) =>
      entry.record.type === "alert.fired"
    );
    assert.equal(fired.length, 1);
  } finally {
    await watcher.close();
  }
}

onBothStores(
  (kind) =>
    `README sessions: an alert on a session counter is evaluated only when the session closes, and fires once (${kind} store)`,
  sessionAlertScenario,
);

Deno.test("AlertWatcher evaluates batches of a stream's old and new definition, pending together, each by its own counters", async () => {
  // A PUT that adds a counter before an existing one moves that one's place: batches built on
  // the old definition and on the new one may wait for one evaluation together (one is observed
  // before the evaluation of the other runs, or while evaluations wait for the store).
  const alerts = [{ name: "busy", counter: "per_minute", when: "value >= 1.0" }];
  const perMinute = { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" };
  const before = compileConfig({
    streams: { orders: { time: ORDERS.time, counters: { per_minute: perMinute }, alerts } },
  }).get("orders")!;
  const after = compileConfig({
    streams: {
      orders: {
        time: ORDERS.time,
        counters: { biggest: ORDERS.counters.biggest, per_minute: perMinute },
        alerts,
      },
    },
  }).get("orders")!;
  const store = new MemoryStore({ now: () => T0 });
  const errors: unknown[] = [];
  const fired: string[] = [];
  const watcher = new AlertWatcher(store, {
    now: () => T0,
    onError: (error) => errors.push(error),
    onFired: (_, firings) => fired.push(...firings.map((f) => `${f.alert}:${f.group}`)),
  });
  const options = { observers: [watcher.observe], store, nowMs: T0 };
  await Promise.all([
    ingestItems(before, items([{ ts: at(1), country: "FR" }]), options),
    ingestItems(after, items([{ ts: at(2), country: "DE", amount: 5 }]), options),
  ]);
  await watcher.idle();
  await watcher.close();
  assert.deepEqual(errors.map(String), []);
  assert.deepEqual(fired.toSorted(), ['busy:["DE"]', 'busy:["FR"]']);
});

/**
 * Registers `test` twice: on a memory store and on a Redis store (a fresh redis-server), both with
 * the clock at `T0` and `options`; `name` names each by its store's kind ("memory", "Redis").
 */
function onBothStores(
  name: (kind: "memory" | "Redis") => string,
  test: (store: Store) => Promise<void>,
  options: { closeCells?: number } = {},
): void {
  Deno.test(name("memory"), () => test(new MemoryStore({ now: () => T0, ...options })));
  redisTest(name("Redis"), (fixture) => {
    const redis = new Redis({
      url: fixture.restUrl,
      token: fixture.restToken,
      enableTelemetry: false,
    });
    return test(new RedisStore(redis, { now: () => T0, ...options }));
  });
}

/**
 * Makes `store` (a memory or Redis store) see, right after its first peek of `orders`, what `race`
 * does as another instance (by default a batch that raises the watermark past minute 0, whose
 * window the peek did not find due), and then fail its next `fireAlerts` as a Redis gone away
 * would (or a process killed there). Calls `race` makes go to the store as they are. `atClose`:
 * `race` runs after the peek's firings instead, as the first close (after a peek) starts.
 */
function raceAfterPeek<S extends Store>(
  store: S,
  race: (store: S) => Promise<unknown> = (store) =>
    ingestItems(orders, items([{ ts: at(200), country: "FR" }]), { store, nowMs: T0 }),
  atClose = false,
): S {
  let raced = false;
  let racing = false;
  let failFire = false;
  const close = store.closeWindows.bind(store);
  const fire = store.fireAlerts.bind(store);
  store.closeWindows = async (...args: Parameters<Store["closeWindows"]>) => {
    if (racing) return close(...args);
    // Only a firing of the sweep that raced fails.
    if (args[2].peek) failFire = false;
    const runRace = async () => {
      raced = true;
      racing = true;
      await race(store).finally(() => racing = false);
      failFire = true;
    };
    // After the peek's firings, right before the close.
    if (atClose && !args[2].peek && !raced) await runRace();
    const windows = await close(...args);
    if (!atClose && args[2].peek && !raced) await runRace();
    return windows;
  };
  store.fireAlerts = (...args: Parameters<Store["fireAlerts"]>) => {
    if (failFire && !racing) {
      failFire = false;
      return Promise.reject(
        new StoreUnavailableError("Redis is unavailable (fireAlerts): fetch failed", {
          outcome: "unknown",
        }),
      );
    }
    return fire(...args);
  };
  return store;
}

for (const swept of [false, true]) {
  const name = (kind: string) =>
    `sweepOnce() on the ${kind} store${
      swept ? ", after a sweep that found nothing due," : ""
    } closes only windows its alert peek found due: one due after the peek waits for the next sweep, so a firing that fails after the close loses no alert`;
  onBothStores(name, async (plain) => {
    await ingestItems(orders, items([{ ts: at(1), country: "DE" }]), { store: plain, nowMs: T0 });
    // A sweep before that found nothing due: on Redis the peek is then skipped (its stats
    // unchanged since), with no cutoff, so the sweep closes nothing and the next one peeks again.
    if (swept) assert.deepEqual((await sweepOnce(streams.values(), plain)).closed, []);
    const store = raceAfterPeek(plain);
    // The peek finds nothing due; an ingest elsewhere then makes minute 0 due before the close, and
    // the firing after the close fails. The window must not be closed with its alerts unfired.
    await sweepOnce(streams.values(), store).catch(() => undefined);
    const report = await sweepOnce(streams.values(), store);
    const records = (await store.readLog("orders", null, 1_000)).map((entry) => entry.record);
    const fired = records.flatMap((record) =>
      record.type === "alert.fired" && record.counter === "per_minute" && record.start === T0
        ? [`${record.alert}:${record.group}`]
        : []
    ).sort();
    assert.deepEqual(fired, ['first_minute:["DE"]', 'german:["DE"]'], JSON.stringify(report));
    const closed = records.filter((record) =>
      record.type === "window.closed" && record.counter === "per_minute" && record.start === T0
    );
    assert.equal(closed.length, 1);
  });
}

/** The `german` firings and the closes of `per_minute` in `store`'s log, by window start. */
async function germanAndClosed(store: Store) {
  const records = (await store.readLog("orders", null, 10_000)).map((entry) => entry.record);
  const fired = records.flatMap((record) =>
    record.type === "alert.fired" && record.counter === "per_minute" && record.alert === "german"
      ? [record.start]
      : []
  );
  const closed = records.flatMap((record) =>
    record.type === "window.closed" && record.counter === "per_minute" ? [record.start] : []
  );
  return { fired: fired.sort((a, b) => a - b), closed: closed.sort((a, b) => a - b) };
}

onBothStores(
  (kind) =>
    `sweepOnce() on the ${kind} store, its alert peek finding nothing as no batch was applied yet, closes nothing: a first batch of another instance landing before the close waits for the next sweep, so a firing that fails after the close loses no alert`,
  async (plain) => {
    // The other instance's first batch makes minute 0 due (events at 1 s and 200 s).
    const store = raceAfterPeek(
      plain,
      (store) =>
        ingestItems(
          orders,
          items([{ ts: at(1), country: "DE" }, { ts: at(200), country: "FR" }]),
          { store, nowMs: T0 },
        ),
    );
    await sweepOnce(streams.values(), store).catch(() => undefined);
    await sweepOnce(streams.values(), store);
    assert.deepEqual(await germanAndClosed(store), { fired: [T0], closed: [T0] });
  },
);

onBothStores(
  (kind) =>
    `sweepOnce() on the ${kind} store closes no window past where its alert peek stopped at its limit: another instance closing the windows the peek listed before the close leaves the next ones to a later sweep, so a firing that fails after the close loses no alert`,
  async (plain) => {
    // 149 windows due, one DE order each: a peek lists the first 100.
    const minutes = Array.from({ length: 149 }, (_, minute) => minute);
    await ingestItems(
      orders,
      items([
        ...minutes.map((minute) => ({ ts: at(minute * 60 + 1), country: "DE" })),
        { ts: at(149 * 60 + 30), country: "FR" },
      ]),
      { store: plain, nowMs: T0 + (149 * 60 + 30) * 1000 },
    );
    // Another instance sweeps between the peek and the close: it closes the 100 the peek listed.
    const store = raceAfterPeek(plain, (store) => sweepOnce(streams.values(), store), true);
    await sweepOnce(streams.values(), store).catch(() => undefined);
    await sweepOnce(streams.values(), store);
    await sweepOnce(streams.values(), store);
    const all = minutes.map((minute) => T0 + minute * 60_000);
    assert.deepEqual(await germanAndClosed(store), { fired: all, closed: all });
  },
);

onBothStores(
  (kind) =>
    `sweepOnce() on the ${kind} store closes no window past where its alert peek stopped at its cells: another instance closing the windows the peek listed before the close leaves the next ones to a later call, so a firing that fails after the close loses no alert`,
  async (plain) => {
    // 10 windows due, one DE order each; a call closes 3 cells: a peek lists minutes 0 to 2.
    const minutes = Array.from({ length: 10 }, (_, minute) => minute);
    await ingestItems(
      orders,
      items([
        ...minutes.map((minute) => ({ ts: at(minute * 60 + 1), country: "DE" })),
        { ts: at(10 * 60 + 30), country: "FR" },
      ]),
      { store: plain, nowMs: T0 + (10 * 60 + 30) * 1000 },
    );
    // Another instance's close call between the peek and the close claims what the peek listed.
    const store = raceAfterPeek(
      plain,
      (store) => store.closeWindows("orders", orders.counterMetas, { latenessMs: 10_000 }),
      true,
    );
    await sweepOnce(streams.values(), store).catch(() => undefined);
    await sweepOnce(streams.values(), store);
    const all = minutes.map((minute) => T0 + minute * 60_000);
    assert.deepEqual(await germanAndClosed(store), { fired: all, closed: all });
  },
  { closeCells: 3 },
);

onBothStores(
  (kind) =>
    `sweepOnce() on the ${kind} store closes no group of a window closed over several calls past what its alert peek listed: another instance moving the close on between the peek and the close leaves the next groups to a later call, so a firing that fails after the close loses no alert`,
  async (plain) => {
    const germanLike = compileConfig({
      streams: {
        orders: {
          time: ORDERS.time,
          counters: { per_minute: ORDERS.counters.per_minute },
          alerts: [{ name: "any", counter: "per_minute", when: "value >= 1.0" }],
        },
      },
    }).get("orders")!;
    // Minute 0 has 10 groups, one order each; a call closes 3 cells.
    const countries = Array.from({ length: 10 }, (_, i) => `D${i}`);
    await ingestItems(
      germanLike,
      items([
        ...countries.map((country) => ({ ts: at(1), country })),
        { ts: at(100), country: "later" },
      ]),
      { store: plain, nowMs: T0 },
    );
    // Another instance claimed minute 0 and closed a first part (its alerts are its own).
    const first = await plain.closeWindows("orders", germanLike.counterMetas, {
      latenessMs: 10_000,
    });
    const before = first.flatMap((window) => window.groups.map((group) => group.group));
    assert.equal(before.length, 3);
    // Between this sweep's peek (and its firings) and its close, the other instance closes the
    // next part, the one the peek listed.
    const store = raceAfterPeek(
      plain,
      (store) => store.closeWindows("orders", germanLike.counterMetas, { latenessMs: 10_000 }),
      true,
    );
    await sweepOnce([germanLike], store).catch(() => undefined);
    await sweepOnce([germanLike], store);
    const records = (await store.readLog("orders", null, 1_000)).map((entry) => entry.record);
    const groups = (type: string) =>
      records.flatMap((record) =>
        record.type === type && (record.type === "alert.fired" || record.type === "window.closed")
          ? [record.group]
          : []
      ).sort();
    const all = countries.map((country) => JSON.stringify([country])).sort();
    assert.deepEqual({
      fired: groups("alert.fired"),
      closed: groups("window.closed"),
    }, {
      fired: all.filter((group) => !before.includes(group)),
      closed: all,
    });
  },
  { closeCells: 3 },
);

Deno.test("sweepOnce() leaves a stream to the next sweep when a close after its alert peek closes nothing though more is due (another instance moving on first each time), rather than peek again at once", async () => {
  const store = new MemoryStore({ now: () => T0 });
  await ingestItems(orders, items([{ ts: at(1), country: "DE" }, { ts: at(200), country: "FR" }]), {
    store,
    nowMs: T0,
  });
  let calls = 0;
  const close = store.closeWindows.bind(store);
  store.closeWindows = (...args: Parameters<Store["closeWindows"]>) => {
    if (++calls > 20) return Promise.reject(new Error("peeked again and again"));
    if (args[2].peek) return close(...args);
    // Another instance closed what the peek listed, and more is due.
    return Promise.resolve(Object.assign([], { more: true }));
  };
  const report = await sweepOnce(streams.values(), store);
  assert.deepEqual(report.failed.map((item) => String(item.error)), []);
  assert.deepEqual(report.closed, []);
  assert.equal(calls, 2);
});

onBothStores(
  (kind) =>
    `sweepOnce() on the ${kind} store closes no session past where its alert peek stopped at its limit: another instance closing the sessions the peek listed before the close leaves the next ones to a later sweep, so a firing that fails after the close loses no alert`,
  async (plain) => {
    const visitStreams = compileConfig({
      streams: {
        visits: {
          time: { field: "ts", lateness: "10s" },
          counters: {
            visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" },
          },
          alerts: [{ name: "visited", counter: "visit", when: "value >= 1.0" }],
        },
      },
    });
    const visits = visitStreams.get("visits")!;
    // 1,500 sessions due, each ending at its own millisecond: a peek lists the first 1,000.
    const users = Array.from({ length: 1_500 }, (_, user) => user);
    for (const part of [users.slice(0, 750), users.slice(750)]) {
      await ingestItems(
        visits,
        items(part.map((user) => ({ ts: at(user / 10), user: `u${user}` }))),
        {
          store: plain,
          nowMs: T0,
        },
      );
    }
    await ingestItems(visits, items([{ ts: at(300), user: "tick" }]), { store: plain, nowMs: T0 });
    const store = raceAfterPeek(plain, (store) => sweepOnce(visitStreams.values(), store), true);
    await sweepOnce(visitStreams.values(), store).catch(() => undefined);
    await sweepOnce(visitStreams.values(), store);
    await sweepOnce(visitStreams.values(), store);
    const records = (await store.readLog("visits", null, 100_000)).map((entry) => entry.record);
    const groups = (type: string) =>
      records.flatMap((record) =>
        record.type === type && (record.type === "alert.fired" || record.type === "window.closed")
          ? [record.group]
          : []
      ).sort();
    const all = users.map((user) => JSON.stringify([`u${user}`])).sort();
    assert.deepEqual({ fired: groups("alert.fired"), closed: groups("window.closed") }, {
      fired: all,
      closed: all,
    });
  },
);

onBothStores(
  (kind) =>
    `sweepOnce() on the ${kind} store closes no session past where its alert peek stopped at its limit among more than 1,000 ending in the same millisecond: another instance closing the ones the peek listed before the close leaves the next ones to a later sweep, so a firing that fails after the close loses no alert`,
  async (plain) => {
    const visitStreams = compileConfig({
      streams: {
        visits: {
          time: { field: "ts", lateness: "10s" },
          counters: {
            visit: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" },
          },
          alerts: [{ name: "visited", counter: "visit", when: "value >= 1.0" }],
        },
      },
    });
    const visits = visitStreams.get("visits")!;
    // 1,500 sessions due, all ending in the same millisecond: a peek lists the first 1,000 (by
    // group, their starts being the same too).
    const users = Array.from({ length: 1_500 }, (_, user) => user);
    for (const part of [users.slice(0, 750), users.slice(750)]) {
      await ingestItems(visits, items(part.map((user) => ({ ts: at(5), user: `u${user}` }))), {
        store: plain,
        nowMs: T0,
      });
    }
    await ingestItems(visits, items([{ ts: at(300), user: "tick" }]), { store: plain, nowMs: T0 });
    // Another instance sweeps between the peek and the close: it closes the 1,000 the peek listed.
    const store = raceAfterPeek(plain, (store) => sweepOnce(visitStreams.values(), store), true);
    await sweepOnce(visitStreams.values(), store).catch(() => undefined);
    await sweepOnce(visitStreams.values(), store);
    await sweepOnce(visitStreams.values(), store);
    const records = (await store.readLog("visits", null, 100_000)).map((entry) => entry.record);
    const groups = (type: string) =>
      records.flatMap((record) =>
        record.type === type && (record.type === "alert.fired" || record.type === "window.closed")
          ? [record.group]
          : []
      ).sort();
    const all = users.map((user) => JSON.stringify([`u${user}`])).sort();
    assert.deepEqual({ fired: groups("alert.fired"), closed: groups("window.closed") }, {
      fired: all,
      closed: all,
    });
  },
);

onBothStores(
  (kind) =>
    `sweepOnce() on the ${kind} store holds back no counter by another's backlog: where its alert peek stopped one counter at its limit, the other counters still close all that is due`,
  async (store) => {
    const clickStreams = compileConfig({
      streams: {
        clicks: {
          time: { field: "ts", lateness: "10s" },
          counters: {
            per_minute: { window: { tumbling: "1m" }, aggregate: "count" },
            per_hour: { window: { tumbling: "1h" }, aggregate: "count" },
          },
          alerts: [{ name: "many", counter: "per_minute", when: "value >= 100.0" }],
        },
      },
    });
    const clicks = clickStreams.get("clicks")!;
    // 600 minutes due (a backfill), one click each: 10 hours, 9 of them due before the last event.
    const minutes = Array.from({ length: 600 }, (_, minute) => minute);
    await ingestItems(
      clicks,
      items([...minutes.map((minute) => ({ ts: at(minute * 60 + 1) })), { ts: at(600 * 60 + 30) }]),
      { store, nowMs: T0 + (600 * 60 + 30) * 1000 },
    );
    const hoursClosed: number[] = [];
    for (let sweep = 0; sweep < 7; sweep++) {
      const report = await sweepOnce(clickStreams.values(), store);
      hoursClosed.push(report.closed.filter((window) => window.counter === "per_hour").length);
    }
    // The minute counter closes its 600 over 6 sweeps; the hours all close in the first.
    assert.deepEqual(hoursClosed, [10, 0, 0, 0, 0, 0, 0]);
  },
);

onBothStores(
  (kind) =>
    `sweepOnce() on the ${kind} store bounds each counter its alert peek stopped at its limit by where it stopped that counter, not by the earliest of them`,
  async (store) => {
    const clickStreams = compileConfig({
      streams: {
        clicks: {
          time: { field: "ts", lateness: "10s" },
          counters: {
            per_minute: { window: { tumbling: "1m" }, aggregate: "count" },
            per_two: { window: { tumbling: "2m" }, aggregate: "count" },
          },
          alerts: [{ name: "many", counter: "per_minute", when: "value >= 100.0" }],
        },
      },
    });
    // 300 minutes due, one click each: 150 two-minute windows, both counters past their 100.
    const minutes = Array.from({ length: 300 }, (_, minute) => minute);
    await ingestItems(
      clickStreams.get("clicks")!,
      items([...minutes.map((minute) => ({ ts: at(minute * 60 + 1) })), { ts: at(300 * 60 + 30) }]),
      { store, nowMs: T0 + (300 * 60 + 30) * 1000 },
    );
    const closed: Array<[number, number]> = [];
    for (let sweep = 0; sweep < 4; sweep++) {
      const report = await sweepOnce(clickStreams.values(), store);
      const of = (counter: string) =>
        report.closed.filter((window) => window.counter === counter).length;
      closed.push([of("per_minute"), of("per_two")]);
    }
    // Each closes its 100 a sweep: the two-minute windows are not held at the 100th minute.
    assert.deepEqual(closed, [[100, 100], [100, 50], [100, 0], [0, 0]]);
  },
);

onBothStores(
  (kind) =>
    `sweepOnce() on the ${kind} store closes and alerts on counters named as Object's members (constructor, toString, hasOwnProperty), over one call and over several`,
  async (store) => {
    const names = ["constructor", "toString", "hasOwnProperty"];
    const streams = compileConfig({
      streams: {
        orders: {
          time: { field: "ts", lateness: "10s" },
          counters: Object.fromEntries(names.map((name) => [name, {
            window: { tumbling: "1m" },
            aggregate: "count",
            groupBy: ["country"],
          }])),
          alerts: names.map((name) => ({
            name: `any_${name}`,
            counter: name,
            when: "value >= 1.0",
          })),
        },
      },
    });
    // Six groups in minute 0 (closed over several calls at 4 cells a call), one past the lateness.
    const countries = ["A", "B", "C", "D", "E", "F"];
    await ingestItems(
      streams.get("orders")!,
      items([...countries.map((country) => ({ ts: at(1), country })), {
        ts: at(200),
        country: "A",
      }]),
      { store, nowMs: T0 + 200_000 },
    );
    const fired: string[] = [];
    const closed: string[] = [];
    for (let sweep = 0; sweep < 12; sweep++) {
      const report = await sweepOnce(streams.values(), store);
      assert.deepEqual(report.failed.map((failure) => String(failure.error)), []);
      for (const window of report.closed) {
        for (const group of window.groups) closed.push(`${window.counter}:${group.group}`);
      }
      for (const firing of report.fired) fired.push(`${firing.alert}:${firing.group}`);
    }
    const all = (prefix: string) =>
      names.flatMap((name) => countries.map((country) => `${prefix}${name}:["${country}"]`)).sort();
    assert.deepEqual(closed.sort(), all(""));
    assert.deepEqual(fired.sort(), all("any_"));
  },
  { closeCells: 4 },
);

onBothStores(
  (kind) =>
    `sweepOnce() (${kind}) fires every group of a window the peek listed in part before it closes, though it fits whole into its own close call`,
  async (store) => {
    const stream = compileConfig({
      streams: {
        orders: {
          time: { field: "ts", lateness: "10s" },
          counters: {
            total: { window: { tumbling: "1m" }, aggregate: "count" },
            per_minute: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
          },
          alerts: [{ name: "any", counter: "per_minute", when: "value >= 1.0" }],
        },
      },
    }).get("orders")!;
    // The peek's 4 cells list minute 0 of per_minute in part; its close call starts afresh.
    await ingestItems(
      stream,
      items([
        { ts: at(1), country: "D0" },
        { ts: at(2), country: "D1" },
        { ts: at(3), country: "D2" },
        { ts: at(61), country: "X" },
        { ts: at(121), country: "X" },
        { ts: at(200), country: "X" },
      ]),
      { store, nowMs: T0 },
    );
    // A firing after a close in the same sweep fails, as in a process stopped there.
    let closedInSweep = false;
    const close = store.closeWindows.bind(store);
    const fire = store.fireAlerts.bind(store);
    store.closeWindows = async (...args: Parameters<Store["closeWindows"]>) => {
      const windows = await close(...args);
      if (!args[2].peek && windows.length > 0) closedInSweep = true;
      return windows;
    };
    store.fireAlerts = (...args: Parameters<Store["fireAlerts"]>) =>
      closedInSweep ? Promise.reject(new Error("Process stopped after the close")) : fire(...args);
    for (let sweep = 0; sweep < 10; sweep++) {
      closedInSweep = false;
      await sweepOnce([stream], store);
    }
    const records = (await store.readLog("orders", null, 1_000)).map((entry) => entry.record);
    const order = (type: string) =>
      records.flatMap((record, index) =>
        record.type === type && "counter" in record && record.counter === "per_minute" &&
          "start" in record && record.start === T0 && "group" in record
          ? [[record.group, index] as const]
          : []
      );
    const firedAt = new Map(order("alert.fired"));
    const closed = order("window.closed");
    assert.deepEqual(closed.map(([group]) => group).sort(), ['["D0"]', '["D1"]', '["D2"]']);
    for (const [group, index] of closed) {
      assert.ok((firedAt.get(group) ?? Infinity) < index, `${group} fired before its close`);
    }
  },
  { closeCells: 4 },
);

redisTest(
  "sweepOnce() (Redis) closes the windows of a stream with alerts that its peek listed whole, tumbling or sliding with each group in one pane, with no pane's keys read (HKEYS)",
  async (fixture) => {
    const store = new RedisStore(restClient(fixture), { now: () => T0 });
    const stream = compileConfig({
      streams: {
        orders: {
          time: { field: "ts", lateness: "10s" },
          counters: {
            per_minute: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
            recent: {
              window: { sliding: "3m", precision: "1m" },
              groupBy: ["country"],
              aggregate: "count",
            },
          },
          alerts: [
            { name: "any", counter: "per_minute", when: "value >= 1.0" },
            { name: "any_recent", counter: "recent", when: "value >= 1.0" },
          ],
        },
      },
    }).get("orders")!;
    const countries = ["D0", "D1", "D2", "D3", "D4"];
    const groups = countries.map((country) => `["${country}"]`);
    await ingestItems(
      stream,
      items([...countries.map((country, i) => ({ ts: at(i + 1), country })), {
        ts: at(200),
        country: "X",
      }]),
      { store, nowMs: T0 },
    );
    await withDirect(fixture.redisUrl, (send) => send("CONFIG", "RESETSTAT"));
    const report = await sweepOnce([stream], store);
    const info = String(await withDirect(fixture.redisUrl, (send) => send("INFO", "commandstats")));
    // Minute 0 of per_minute, and the three sliding windows that hold minute 0 (all due by 3m20s).
    for (
      const [counter, start] of [["per_minute", 0], ["recent", -2], ["recent", -1], [
        "recent",
        0,
      ]] as const
    ) {
      const windows = report.closed.filter((window) =>
        window.counter === counter && window.start === T0 + start * 60_000
      );
      const closed = windows.flatMap((window) => window.groups.map((group) => group.group));
      assert.deepEqual(closed.sort(), groups, `${counter} at minute ${start} closed whole`);
      const fired = report.fired.filter((firing) =>
        firing.counter === counter && firing.start === T0 + start * 60_000
      );
      assert.deepEqual(
        fired.map((firing) => firing.group).sort(),
        groups,
        `${counter} at minute ${start} fired`,
      );
    }
    // The close script ran (the peek and the close), yet read no pane's field names.
    assert.match(info, /^cmdstat_evalsha:calls=/m);
    assert.doesNotMatch(info, /^cmdstat_hkeys:/m);
  },
);
