/**
 * The dispatcher: a process killed between planning a page, creating its
 * deliveries and moving the cursor (the stepwise dispatch of earlier
 * versions) loses nothing and creates nothing twice, on the memory and on
 * the Redis stores; the store calls of a dispatch; matching by event type,
 * stream, CEL filter and registration point; batching.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { compileConfig } from "../../../src/config/mod.ts";
import {
  type ClaimSink,
  Dispatcher,
  MARK_AFTER_ENTRIES,
  markAfterEntries,
  PAGE_BYTES,
} from "../../../src/fanout/webhooks/mod.ts";
import {
  type DeliveryStore,
  type Endpoint,
  MemoryDeliveryStore,
  type NewDelivery,
  RedisDeliveryStore,
} from "../../../src/store/mod.ts";
import { MemoryStore } from "../../../src/store/memory/store.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import type { StoredPage, StoredPageResult } from "../../../src/store/deliveries.ts";
import { type LogRecord, type Store, StoreRequestTooLargeError } from "../../../src/store/types.ts";
import { collectingLogs, messageOf } from "../../_logs.ts";
import { type RedisFixture, redisTest, restClient } from "../../_redis.ts";
import { startUpstashProxy } from "../../_upstash_proxy.ts";
import { CONFIG, T0 } from "./_setup.ts";
import { commitPage, planPage } from "./_stepwise.ts";

const streams = compileConfig(CONFIG);
const orders = streams.get("orders")!;

function endpoint(id: string, overrides: Partial<Endpoint> = {}): Endpoint {
  return {
    id,
    url: `https://example.com/${id}`,
    description: null,
    eventTypes: ["window.closed", "alert.fired", "event.processed", "event.late"],
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
    ...overrides,
  };
}

function closed(n: number, country = "DE"): LogRecord {
  return {
    type: "window.closed",
    counter: "per_minute",
    start: T0 + n * 60_000,
    end: T0 + (n + 1) * 60_000,
    group: JSON.stringify([country]),
    state: { count: n, sum: 0, min: null, max: null, distinct: 0, approximate: false },
  };
}

function processed(n: number): LogRecord {
  return { type: "event.processed", timeMs: T0 + n, event: { id: String(n), amount: n } };
}

async function allDeliveries(deliveries: DeliveryStore, endpointId: string) {
  return (await deliveries.listDeliveries(endpointId, { limit: 1000 })).items;
}

type Stores = { store: Store; deliveries: DeliveryStore };

const crashScenarios: Record<string, (stores: () => Stores) => Promise<void>> = {
  async "a dispatch killed after planning a page loses nothing"(make) {
    const { store, deliveries } = make();
    const endpoints = [endpoint("ep_a")];
    await store.appendLog("orders", [closed(1), closed(2), closed(3)]);
    // Planned as a dispatcher of an earlier version would, and killed there.
    const plan = await planPage({ store, deliveries }, orders, { pageSize: 2 });
    assert.equal(plan?.entries.length, 2);
    // The process dies here; more results arrive; a fresh process dispatches.
    await store.appendLog("orders", [closed(4)]);
    const fresh = new Dispatcher(store, deliveries, { now: () => T0, pageSize: 2 });
    assert.equal(await fresh.dispatch(orders, endpoints), 4);
    const log = await store.readLog("orders", null, 100);
    const ids = (await allDeliveries(deliveries, "ep_a")).map((item) => item.messageId).sort();
    assert.deepEqual(ids, log.map((entry) => `msg_orders_${entry.id}`).sort());
    assert.equal(await fresh.dispatch(orders, endpoints), 0);
  },

  async "a dispatch killed after creating deliveries creates none twice"(make) {
    const { store, deliveries } = make();
    const endpoints = [endpoint("ep_a"), endpoint("ep_b")];
    await store.appendLog("orders", [closed(1), closed(2)]);
    const killed = new Dispatcher(store, deliveries, { now: () => T0 });
    const plan = (await planPage({ store, deliveries }, orders))!;
    assert.equal(await deliveries.createDeliveries(killed.deliveriesFor(plan, endpoints)), 4);
    // Dies before moving the cursor.
    await store.appendLog("orders", [closed(3)]);
    const fresh = new Dispatcher(store, deliveries, { now: () => T0 + 1 });
    assert.equal(await fresh.dispatch(orders, endpoints), 2, "only the new entry's deliveries");
    for (const id of ["ep_a", "ep_b"]) {
      const list = await allDeliveries(deliveries, id);
      assert.equal(list.length, 3);
      assert.equal(new Set(list.map((item) => item.messageId)).size, 3);
    }
  },

  async "two dispatchers on one stream adopt one page and create each delivery once"(make) {
    const { store, deliveries } = make();
    const endpoints = [endpoint("ep_a")];
    await store.appendLog("orders", [closed(1), closed(2)]);
    const first = new Dispatcher(store, deliveries, { now: () => T0 });
    const second = new Dispatcher(store, deliveries, { now: () => T0 });
    const planA = (await planPage({ store, deliveries }, orders))!;
    await store.appendLog("orders", [closed(3)]);
    const planB = (await planPage({ store, deliveries }, orders))!;
    assert.equal(planB.end, planA.end, "the second adopts the page the first fixed");
    assert.deepEqual(
      planB.entries.map((entry) => entry.id),
      planA.entries.map((entry) => entry.id),
    );
    const created = await Promise.all([
      deliveries.createDeliveries(first.deliveriesFor(planA, endpoints)),
      deliveries.createDeliveries(second.deliveriesFor(planB, endpoints)),
    ]);
    assert.equal(created[0] + created[1], 2);
    await Promise.all([commitPage(deliveries, planA), commitPage(deliveries, planB)]);
    assert.equal(await first.dispatch(orders, endpoints), 1);
    assert.equal((await allDeliveries(deliveries, "ep_a")).length, 3);
  },

  async "an endpoint registered while a dispatch reads the log gets the results logged after its registration"(
    make,
  ) {
    const { store, deliveries } = make();
    const configOf = (full: Endpoint) => {
      const { disabled: _disabled, disabledReason: _reason, failingSinceMs: _failing, ...config } =
        full;
      return config;
    };
    await deliveries.putEndpoint(configOf(endpoint("ep_a")), { expectVersion: null });
    await store.appendLog("orders", [closed(1)]);
    let registered = false;
    // Once the dispatch listed the endpoints (taking its lease) and before it reads the log,
    // another instance registers one, which starts after the log's last entry, and a result
    // is logged.
    const hooked = new Proxy(store, {
      get(target, property) {
        if (property === "readLog") {
          return async (...args: Parameters<Store["readLog"]>) => {
            if (!registered) {
              registered = true;
              const start = await target.lastLogId("orders");
              const late = endpoint("ep_b", { startAfter: { orders: start } });
              await deliveries.putEndpoint(configOf(late), { expectVersion: null });
              await target.appendLog("orders", [closed(2)]);
            }
            return await target.readLog(...args);
          };
        }
        const value = Reflect.get(target, property, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const dispatcher = new Dispatcher(hooked, deliveries, { now: () => T0 });
    await dispatcher.dispatch(orders, null);
    const log = await store.readLog("orders", null, 100);
    assert.equal(log.length, 2);
    const ids = async (id: string) =>
      (await allDeliveries(deliveries, id)).map((item) => item.messageId).sort();
    assert.deepEqual(await ids("ep_a"), log.map((entry) => `msg_orders_${entry.id}`).sort());
    assert.deepEqual(await ids("ep_b"), [`msg_orders_${log[1].id}`]);
  },
};

for (const [name, scenario] of Object.entries(crashScenarios)) {
  Deno.test(`Dispatcher (memory): ${name}`, () =>
    scenario(() => ({
      store: new MemoryStore({ now: () => T0 }),
      deliveries: new MemoryDeliveryStore({ now: () => T0 }),
    })));
  redisTest(`Dispatcher (Redis): ${name}`, (fixture) =>
    scenario(() => {
      const redis = restClient(fixture);
      return {
        store: new RedisStore(redis),
        deliveries: new RedisDeliveryStore(redis, { now: () => T0 }),
      };
    }));
}

Deno.test("Dispatcher matches event types, streams, CEL filters and skips disabled endpoints", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  await store.appendLog("orders", [closed(1, "DE"), closed(5, "FR"), processed(1)]);
  await store.appendLog("signups", [closed(1)]);
  const endpoints = [
    endpoint("ep_all"),
    endpoint("ep_closed", { eventTypes: ["window.closed"] }),
    endpoint("ep_signups", { streams: ["signups"] }),
    endpoint("ep_big", { filter: "payload.type == 'window.closed' && data.value > 2.0" }),
    endpoint("ep_de", { filter: "has(data.group) && data.group.country == 'DE'" }),
    endpoint("ep_off", { disabled: true }),
  ];
  const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
  await dispatcher.dispatch(orders, endpoints);
  await dispatcher.dispatch(streams.get("signups")!, endpoints);
  const typesOf = async (id: string) =>
    (await allDeliveries(deliveries, id)).map((item) => {
      const payload = JSON.parse(item.payload);
      return `${item.stream}:${payload.type}:${payload.data.group?.country ?? "-"}`;
    }).sort();
  assert.deepEqual(await typesOf("ep_all"), [
    "orders:event.processed:-",
    "orders:window.closed:DE",
    "orders:window.closed:FR",
    "signups:window.closed:-",
  ]);
  assert.deepEqual(await typesOf("ep_closed"), [
    "orders:window.closed:DE",
    "orders:window.closed:FR",
    "signups:window.closed:-",
  ]);
  assert.deepEqual(await typesOf("ep_signups"), ["signups:window.closed:-"]);
  assert.deepEqual(await typesOf("ep_big"), ["orders:window.closed:FR"]);
  assert.deepEqual(await typesOf("ep_de"), ["orders:window.closed:DE"]);
  assert.deepEqual(await typesOf("ep_off"), []);
});

Deno.test("Dispatcher serves a filter registered before its patterns' character classes were counted, as it was", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  await store.appendLog("orders", [closed(1, "DE"), closed(5, "FR")]);
  // 2,006 instructions by patternSize (taken at registration then), 320,010 with their classes'
  // ranges: refused at registration now, past MAX_EXPRESSION_PATTERN_SIZE.
  const heavy = (tail: string) =>
    `data.group.country.matches("^[\\\\p{L}\\\\p{N}\\\\p{S}\\\\p{P}]{1000}|${tail}")`;
  const endpoints = [
    endpoint("ep_old", {
      eventTypes: ["window.closed"],
      filter: `${heavy("DE")} || ${heavy("XX")}`,
    }),
  ];
  const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
  await dispatcher.dispatch(orders, endpoints);
  const sent = (await allDeliveries(deliveries, "ep_old")).map((item) =>
    JSON.parse(item.payload).data.group.country
  );
  assert.deepEqual(sent, ["DE"]);
});

/**
 * Endpoints stored by earlier releases, their filters refused at registration now, read back by
 * a fresh dispatcher (a restarted process): each served as it was, with one warning a version.
 */
async function servesStoredFiltersPastTheBudgets({ store, deliveries }: Stores): Promise<void> {
  // 5,009 instructions, past MAX_PATTERN_SIZE (5,000) on its own.
  const long = "^[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}$|^DE$";
  // 2,006 instructions by patternSize; with their classes' ranges, as registration counts them
  // now, the first alone is 40,006, past MAX_EXPRESSION_PATTERN_SIZE (16,000).
  const heavy = (tail: string) =>
    `data.group.country.matches("^[\\\\p{L}\\\\p{N}\\\\p{S}\\\\p{P}]{1000}|${tail}")`;
  const stored = [
    endpoint("ep_heavy", {
      eventTypes: ["window.closed"],
      filter: `${heavy("DE")} || ${heavy("XX")}`,
    }),
    endpoint("ep_long", {
      eventTypes: ["window.closed"],
      filter: `data.group.country.matches("${long}")`,
    }),
    endpoint("ep_plain", { eventTypes: ["window.closed"], filter: "data.group.country == 'DE'" }),
  ];
  for (const { disabled: _d, disabledReason: _r, failingSinceMs: _f, ...config } of stored) {
    assert.ok(await deliveries.putEndpoint(config, { expectVersion: null }));
  }
  await store.appendLog("orders", [closed(1, "DE"), closed(5, "FR")]);
  const warnings = await collectingLogs(async (records) => {
    const restarted = new Dispatcher(store, deliveries, { now: () => T0 });
    await restarted.dispatch(orders, null);
    // The same versions again: not said again.
    await store.appendLog("orders", [closed(7, "DE")]);
    await restarted.dispatch(orders, null);
    return records.map(messageOf);
  }, { level: "warning" });
  for (const id of ["ep_heavy", "ep_long", "ep_plain"]) {
    const sent = (await allDeliveries(deliveries, id)).map((item) =>
      JSON.parse(item.payload).data.group.country
    );
    assert.deepEqual(sent, ["DE", "DE"], id);
  }
  assert.equal(warnings.length, 2, JSON.stringify(warnings));
  assert.match(
    warnings[0],
    /^Webhook ep_heavy version 1's 'filter': its matches\(\) patterns would compile to 40006 instructions together, past the 16000 an expression may have \(a character class counts 1 more .*\); served as registered before this check; replace it with PATCH \/v1\/webhooks\/ep_heavy, which refuses it as it is$/,
  );
  assert.match(
    warnings[1],
    /^Webhook ep_long version 1's 'filter': Pattern '\^\[a-z\]\{1000\}.*' is too large: it compiles to about 5009 instructions once its repeats are expanded, past the 5000 a pattern may have .*; served as registered before this check; replace it with PATCH \/v1\/webhooks\/ep_long, which refuses it as it is$/,
  );
}

Deno.test("Dispatcher (memory): a stored filter past the pattern budgets (one pattern past 5,000 instructions, or past 16,000 with its classes' ranges) is served as it was, with one warning", () =>
  servesStoredFiltersPastTheBudgets({
    store: new MemoryStore({ now: () => T0 }),
    deliveries: new MemoryDeliveryStore({ now: () => T0 }),
  }));

redisTest(
  "Dispatcher (Redis): a stored filter past the pattern budgets (one pattern past 5,000 instructions, or past 16,000 with its classes' ranges) is served as it was, with one warning",
  (fixture) => {
    const redis = restClient(fixture);
    return servesStoredFiltersPastTheBudgets({
      store: new RedisStore(redis),
      deliveries: new RedisDeliveryStore(redis, { now: () => T0 }),
    });
  },
);

Deno.test("Dispatcher sends nothing to a stored filter that no longer compiles and says so once a version", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  // Four patterns of 5,007 instructions: 20,028 together, past the 16,000 an expression may have
  // even counted without their classes' ranges (registered before that bound).
  const long = (tail: string) =>
    `data.group.country.matches("^[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}[a-z]{1000}$|${tail}")`;
  const filter = ["DE", "FR", "IT", "ES"].map(long).join(" || ");
  const endpoints = [endpoint("ep_broken", { eventTypes: ["window.closed"], filter })];
  const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
  const warnings = await collectingLogs(async (records) => {
    await store.appendLog("orders", [closed(1, "DE")]);
    await dispatcher.dispatch(orders, endpoints);
    await store.appendLog("orders", [closed(2, "DE")]);
    await dispatcher.dispatch(orders, endpoints);
    return records.map(messageOf);
  }, { level: "warning" });
  assert.deepEqual(await allDeliveries(deliveries, "ep_broken"), []);
  assert.equal(warnings.length, 1, JSON.stringify(warnings));
  assert.match(
    warnings[0],
    /^Webhook ep_broken version 1's 'filter' no longer compiles, so nothing is sent to it: Invalid expression .*its matches\(\) patterns would compile to 20028 instructions together, past the 16000 .*; replace it with PATCH \/v1\/webhooks\/ep_broken$/,
  );
});

Deno.test("Dispatcher keeps the compiled filters of the endpoints listed only: 1,000 created, dispatched to and deleted leave one", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
  const kept = endpoint("ep_kept", { filter: "data.value > 999.0" });
  for (let i = 0; i < 1_000; i++) {
    await store.appendLog("orders", [closed(i + 1)]);
    // Each endpoint deleted once dispatched to: the next dispatch lists the kept one and a new one.
    const fresh = endpoint(`ep_${i}`, { filter: `data.value > ${i}.0` });
    await dispatcher.dispatch(orders, [kept, fresh]);
  }
  // At most twice those listed: a dispatch may add those it lists to the ones kept from before.
  assert.ok(dispatcher.filters <= 4, `${dispatcher.filters} filters kept`);
  await store.appendLog("orders", [closed(2_000)]);
  await dispatcher.dispatch(orders, [kept]);
  assert.equal(dispatcher.filters, 1);
  // The kept endpoint's filter still decides what it gets.
  assert.equal((await allDeliveries(deliveries, "ep_kept")).length, 2);
});

Deno.test("Dispatcher warns, at most once a minute per endpoint, when a filter fails on a payload and the payload is not sent", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  let now = T0;
  // event.processed has no group: reading data.group fails instead of answering.
  const endpoints = [endpoint("ep_de", { filter: "data.group.country == 'DE'" })];
  const dispatcher = new Dispatcher(store, deliveries, { now: () => now });
  const warnings = await collectingLogs(async (records) => {
    await store.appendLog("orders", [processed(1), processed(2), closed(1, "DE")]);
    await dispatcher.dispatch(orders, endpoints);
    now += 30_000;
    await store.appendLog("orders", [processed(3)]);
    await dispatcher.dispatch(orders, endpoints);
    now += 30_000;
    await store.appendLog("orders", [processed(4)]);
    await dispatcher.dispatch(orders, endpoints);
    return records.map(messageOf);
  }, { level: "warning" });
  assert.equal(warnings.length, 2, JSON.stringify(warnings));
  for (const warning of warnings) {
    assert.match(
      warning,
      /^Webhook ep_de's filter failed on a payload of type event\.processed, which was not sent to it: .+/,
    );
  }
  assert.deepEqual(
    (await allDeliveries(deliveries, "ep_de")).map((item) => JSON.parse(item.payload).type),
    ["window.closed"],
  );
});

Deno.test("Dispatcher warns, as for a failing filter, when a filter gives no bool on a payload (data.value alone) and the payload is not sent", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  let now = T0;
  // Types known only at run time, so registration takes it: a number for window.closed.
  const endpoints = [endpoint("ep_value", { eventTypes: ["window.closed"], filter: "data.value" })];
  const dispatcher = new Dispatcher(store, deliveries, { now: () => now });
  const warnings = await collectingLogs(async (records) => {
    await store.appendLog("orders", [closed(1), closed(2)]);
    await dispatcher.dispatch(orders, endpoints);
    now += 60_000;
    await store.appendLog("orders", [closed(3)]);
    await dispatcher.dispatch(orders, endpoints);
    return records.map(messageOf);
  }, { level: "warning" });
  assert.deepEqual(await allDeliveries(deliveries, "ep_value"), []);
  assert.equal(warnings.length, 2, JSON.stringify(warnings));
  for (const warning of warnings) {
    assert.equal(
      warning,
      "Webhook ep_value's filter failed on a payload of type window.closed, which was not sent to it: The filter must return a bool, got number",
    );
  }
});

Deno.test("Dispatcher delivers to an endpoint only what was logged after it registered", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  await store.appendLog("orders", [closed(1), closed(2)]);
  const registeredAt = await store.lastLogId("orders");
  await store.appendLog("orders", [closed(3)]);
  const late = endpoint("ep_late", { startAfter: { orders: registeredAt } });
  await new Dispatcher(store, deliveries, { now: () => T0 }).dispatch(orders, [late]);
  const list = await allDeliveries(deliveries, "ep_late");
  assert.deepEqual(list.map((item) => JSON.parse(item.payload).data.value), [3]);
});

Deno.test("Dispatcher batches event.processed into deliveries of at most maxEvents", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  await store.appendLog("orders", [1, 2, 3, 4, 5].map(processed));
  await store.appendLog("orders", [closed(1)]);
  const batched = endpoint("ep_batch", { batch: { maxEvents: 2, maxWaitMs: 1_000 } });
  await new Dispatcher(store, deliveries, { now: () => T0 }).dispatch(orders, [batched]);
  const log = await store.readLog("orders", null, 100);
  // Created in one millisecond, so listed by id: the order of the log ids they carry.
  const list = (await allDeliveries(deliveries, "ep_batch")).reverse();
  assert.deepEqual(list.map((item) => item.messageId), [
    `msg_orders_${log[0].id}_${log[1].id}`,
    `msg_orders_${log[2].id}_${log[3].id}`,
    `msg_orders_${log[4].id}_${log[4].id}`,
    `msg_orders_${log[5].id}`,
  ]);
  const batches = list.filter((item) => item.eventType === "event.processed")
    .map((item) => JSON.parse(item.payload));
  assert.deepEqual(
    batches.map((payload) => payload.data.map((item: { event: { id: string } }) => item.event.id)),
    [["1", "2"], ["3", "4"], ["5"]],
  );
  assert.equal(batches[0].type, "event.processed");
  for (const item of list) assert.ok(!item.messageId.includes("."));
});

Deno.test("Dispatcher batches each type its batch names apart, in log order, the same ids on every dispatch of a page", async () => {
  const store = new MemoryStore({ now: () => T0 });
  await store.appendLog("orders", [closed(1, "DE"), processed(1), closed(1, "FR")]);
  await store.appendLog("orders", [processed(2), closed(1, "IT"), processed(3)]);
  const both = endpoint("ep_both", {
    eventTypes: ["window.closed", "event.processed"],
    batch: { maxEvents: 2, maxWaitMs: 1_000, eventTypes: ["window.closed", "event.processed"] },
  });
  const closedOnly = endpoint("ep_closed", {
    eventTypes: ["window.closed", "event.processed"],
    batch: { maxEvents: 10, maxWaitMs: 1_000, eventTypes: ["window.closed"] },
  });
  const log = await store.readLog("orders", null, 100);
  const made = [];
  for (let round = 0; round < 2; round++) {
    const deliveries = new MemoryDeliveryStore({ now: () => T0 });
    await new Dispatcher(store, deliveries, { now: () => T0 }).dispatch(orders, [both, closedOnly]);
    const list = [
      ...await allDeliveries(deliveries, "ep_both"),
      ...await allDeliveries(deliveries, "ep_closed"),
    ].map((item) => ({
      id: item.id,
      eventType: item.eventType,
      data: JSON.parse(item.payload).data,
    })).sort((x, y) => x.id < y.id ? -1 : 1);
    made.push(list);
  }
  assert.deepEqual(made[1], made[0], "a page dispatched again makes the same deliveries");
  const summary = made[0].map((item) =>
    `${item.id.split(".")[1]} ${item.eventType} ${
      Array.isArray(item.data)
        ? item.data.map((data: { group?: { country: string }; event?: { id: string } }) =>
          data.group?.country ?? data.event?.id
        ).join(",")
        : "one"
    }`
  ).sort();
  assert.deepEqual(summary, [
    "ep_both event.processed 1,2",
    "ep_both event.processed 3",
    "ep_both window.closed DE,FR",
    "ep_both window.closed IT",
    "ep_closed event.processed one",
    "ep_closed event.processed one",
    "ep_closed event.processed one",
    "ep_closed window.closed DE,FR,IT",
  ]);
  const ids = made[0].map((item) => item.id);
  assert.ok(ids.includes(`msg_orders_${log[0].id}_${log[2].id}.ep_both`));
  assert.ok(ids.includes(`msg_orders_${log[1].id}_${log[3].id}.ep_both`));
});

/** `deliveries` noting when each of its calls starts and when it settles. */
function noting(deliveries: DeliveryStore, notes: string[]): DeliveryStore {
  return new Proxy(deliveries, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        notes.push(`start ${String(property)}`);
        const result = value.apply(target, args);
        return result instanceof Promise
          ? result.finally(() => notes.push(`end ${String(property)}`))
          : result;
      };
    },
  });
}

Deno.test("Dispatcher takes the lease with the dispatch state in one delivery store call and stores a page in one more", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const notes: string[] = [];
  const deliveries = noting(new MemoryDeliveryStore({ now: () => T0 }), notes);
  await store.appendLog("orders", [closed(1)]);
  const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
  assert.equal(await dispatcher.dispatch(orders, [endpoint("ep_a")]), 1);
  // Two round trips on a remote store on the way to every alert, the lease given back in the
  // second.
  const calls = notes.filter((note) => note.startsWith("start ")).map((note) => note.slice(6));
  assert.deepEqual(calls, ["openDispatch", "storePage"]);
  assert.equal(await dispatcher.dispatch(orders, [endpoint("ep_a")]), 0, "nothing twice");
  const lease = await deliveries.acquireLease("dispatch:orders", 1_000);
  assert.notEqual(lease, null, "the lease is free again");
});

Deno.test("Dispatcher lists the endpoints in the call that takes the lease, and with none takes no lease", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const notes: string[] = [];
  const inner = new MemoryDeliveryStore({ now: () => T0 });
  const deliveries = noting(inner, notes);
  await store.appendLog("orders", [closed(1)]);
  const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
  assert.equal(await dispatcher.dispatch(orders, null), 0);
  const calls = notes.filter((note) => note.startsWith("start ")).map((note) => note.slice(6));
  assert.deepEqual(calls, ["openDispatch"], "one call when there is no endpoint");
  const lease = await inner.acquireLease("dispatch:orders", 1_000);
  assert.notEqual(lease, null, "no lease was taken");
  await inner.releaseLease("dispatch:orders", lease!);
  await inner.putEndpoint(endpoint("ep_a"), { expectVersion: null });
  // The cursor did not move: the entry is still to dispatch, to the endpoint listed now.
  assert.equal(await dispatcher.dispatch(orders, null), 1);
  assert.equal((await allDeliveries(inner, "ep_a")).length, 1);
});

Deno.test("Dispatcher reads ahead from where it left the cursor, and reads again when another moved it", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const notes: string[] = [];
  const reads: Array<string | null> = [];
  const noted = noting(deliveries, notes);
  const logged = new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (property !== "readLog") return typeof value === "function" ? value.bind(target) : value;
      return (...args: Parameters<Store["readLog"]>) => {
        notes.push("start readLog");
        reads.push(args[1]);
        return store.readLog(...args);
      };
    },
  });
  const endpoints = [endpoint("ep_a")];
  const first = new Dispatcher(logged, noted, { now: () => T0 });
  const other = new Dispatcher(store, deliveries, { now: () => T0 });
  await store.appendLog("orders", [closed(1)]);
  assert.equal(await first.dispatch(orders, endpoints, { readAhead: true }), 1);
  await store.appendLog("orders", [closed(2)]);
  notes.length = 0;
  reads.length = 0;
  assert.equal(await first.dispatch(orders, endpoints, { readAhead: true }), 1);
  assert.deepEqual(notes.slice(0, 2), ["start readLog", "start openDispatch"], notes.join(", "));
  assert.equal(reads.length, 1, "the read ahead was the page");
  // Another dispatcher moves the cursor past entry 3; entry 4 follows.
  await store.appendLog("orders", [closed(3)]);
  assert.equal(await other.dispatch(orders, endpoints), 1);
  await store.appendLog("orders", [closed(4)]);
  reads.length = 0;
  assert.equal(await first.dispatch(orders, endpoints, { readAhead: true }), 1, "entry 4 only");
  assert.equal(reads.length, 2, "read ahead from an old cursor, then from the real one");
  const log = await store.readLog("orders", null, 100);
  const ids = (await allDeliveries(deliveries, "ep_a")).map((item) => item.messageId).sort();
  assert.deepEqual(ids, log.map((entry) => `msg_orders_${entry.id}`).sort());
});

Deno.test("Dispatcher given a dispatch state that is out of date creates nothing twice", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const endpoints = [endpoint("ep_a")];
  await store.appendLog("orders", [closed(1), closed(2)]);
  const first = new Dispatcher(store, deliveries, { now: () => T0 });
  const old = await deliveries.dispatchState("orders");
  const planned = (await planPage({ store, deliveries }, orders))!;
  const stale = await deliveries.dispatchState("orders");
  assert.equal(await deliveries.createDeliveries(first.deliveriesFor(planned, endpoints)), 2);
  await commitPage(deliveries, planned);
  await store.appendLog("orders", [closed(3)]);
  const second = new Dispatcher(store, deliveries, { now: () => T0 });
  // From before the first page was planned: that page is planned by now, so it reads again.
  const again = (await planPage({ store, deliveries }, orders, { state: old }))!;
  assert.equal(again.entries.length, 1);
  // From while it was planned: it adopts that page, whose deliveries exist already.
  const adopted = (await planPage({ store, deliveries }, orders, { state: stale }))!;
  assert.equal(await deliveries.createDeliveries(second.deliveriesFor(adopted, endpoints)), 0);
  await commitPage(deliveries, adopted);
  assert.equal(await second.dispatch(orders, endpoints), 1);
  assert.equal((await allDeliveries(deliveries, "ep_a")).length, 3);
});

Deno.test("Dispatcher.dispatch() with deferMark leaves the log's mark to a dispatch without it, unless a minute passed or a tenth of the entries the log retains were dispatched since", async () => {
  let now = T0;
  let marks = 0;
  class CountsMarks extends MemoryStore {
    override markDispatched(...args: Parameters<MemoryStore["markDispatched"]>) {
      marks += 1;
      return super.markDispatched(...args);
    }
  }
  // A tenth of 20: the mark is deferred for one entry, made at the second.
  const store = new CountsMarks({ now: () => now, log: { retain: 20 } });
  assert.equal(markAfterEntries(20), 2);
  assert.equal(markAfterEntries(5), 1);
  assert.equal(MARK_AFTER_ENTRIES, 10_000);
  assert.equal(markAfterEntries(100_000), MARK_AFTER_ENTRIES);
  const deliveries = new MemoryDeliveryStore({ now: () => now });
  const dispatcher = new Dispatcher(store, deliveries, { now: () => now });
  // The entries match no endpoint: pages move the cursor without deliveries.
  const endpoints = [endpoint("ep_a", { eventTypes: ["window.closed"] })];
  const append = (count: number) =>
    store.appendLog("orders", Array.from({ length: count }, (_, i) => processed(i)));
  const logLength = async () => (await store.readLog("orders", null, 20_000)).length;
  await dispatcher.hold("orders");
  assert.equal(marks, 1);
  // The log at its bound, marked: what follows is held.
  await append(20);
  await dispatcher.dispatch(orders, endpoints);
  assert.equal(marks, 2);
  assert.equal(await logLength(), 20);
  // An ingest's dispatch: no mark, so the log keeps what it dispatched (nothing is trimmed).
  await append(1);
  await dispatcher.dispatch(orders, endpoints, { deferMark: true });
  assert.equal(marks, 2);
  assert.equal(await logLength(), 21);
  // The sweep's: nothing moved since, but the deferred mark is made, and the log trims.
  await dispatcher.dispatch(orders, endpoints, { ifLogMoved: true });
  assert.equal(marks, 3);
  assert.equal(await logLength(), 20);
  await dispatcher.dispatch(orders, endpoints, { ifLogMoved: true });
  assert.equal(marks, 3, "nothing left to mark");
  // Deferred for at most a minute...
  await append(1);
  await dispatcher.dispatch(orders, endpoints, { deferMark: true });
  assert.equal(marks, 3);
  now += 61_000;
  await append(1);
  await dispatcher.dispatch(orders, endpoints, { deferMark: true });
  assert.equal(marks, 4);
  // ...and a tenth of the entries the log retains (2 of 20).
  await append(1);
  await dispatcher.dispatch(orders, endpoints, { deferMark: true });
  assert.equal(marks, 4);
  assert.equal(await logLength(), 21);
  await append(1);
  await dispatcher.dispatch(orders, endpoints, { deferMark: true });
  assert.equal(marks, 5);
  assert.equal(await logLength(), 20);
});

Deno.test("Dispatcher.dispatch() with deferMark marks the log once its clock is before the last mark's time (stepped back), rather than deferring until it passes it", async () => {
  let now = T0 + 3_600_000;
  let marks = 0;
  class CountsMarks extends MemoryStore {
    override markDispatched(...args: Parameters<MemoryStore["markDispatched"]>) {
      marks += 1;
      return super.markDispatched(...args);
    }
  }
  const store = new CountsMarks({ now: () => now, log: { retain: 1_000 } });
  const deliveries = new MemoryDeliveryStore({ now: () => now });
  const dispatcher = new Dispatcher(store, deliveries, { now: () => now });
  const endpoints = [endpoint("ep_a", { eventTypes: ["window.closed"] })];
  const append = () => store.appendLog("orders", [processed(0)]);
  await dispatcher.hold("orders");
  await append();
  await dispatcher.dispatch(orders, endpoints);
  assert.equal(marks, 2);
  await append();
  await dispatcher.dispatch(orders, endpoints, { deferMark: true });
  assert.equal(marks, 2, "deferred within the minute");
  now -= 3_600_000; // NTP steps the clock an hour back
  await append();
  await dispatcher.dispatch(orders, endpoints, { deferMark: true });
  assert.equal(marks, 3, "not deferred for an hour");
  await append();
  await dispatcher.dispatch(orders, endpoints, { deferMark: true });
  assert.equal(marks, 3, "deferred for a minute from there");
});

Deno.test("Dispatcher by default: a batch holds at most one page of 500 results whatever maxEvents, one dispatch takes 20 pages, and a batch's timestamp is its newest result's", async () => {
  let now = T0;
  const store = new MemoryStore({ now: () => now });
  // 10,600 results: 21.2 pages of 500.
  for (let i = 0; i < 10_600; i += 1_000) {
    await store.appendLog(
      "orders",
      Array.from({ length: Math.min(1_000, 10_600 - i) }, (_, j) => closed(i + j)),
    );
  }
  const ep = endpoint("ep_big", {
    eventTypes: ["window.closed"],
    batch: { maxEvents: 1_000, maxWaitMs: 1_000, eventTypes: ["window.closed"] },
  });
  const deliveries = new MemoryDeliveryStore({ now: () => now });
  const dispatcher = new Dispatcher(store, deliveries, { now: () => now });
  const sizes = async () =>
    (await allDeliveries(deliveries, "ep_big")).map((item) => JSON.parse(item.payload).data.length);
  await dispatcher.dispatch(orders, [ep]);
  assert.deepEqual(await sizes(), Array(20).fill(500));
  await dispatcher.dispatch(orders, [ep]);
  assert.deepEqual((await sizes()).sort((a, b) => a - b), [100, ...Array(21).fill(500)]);

  // Three results logged a second apart go as one batch stamped with the newest's time.
  for (const n of [1, 2, 3]) {
    now = T0 + n * 1_000;
    await store.appendLog("times", [closed(n)]);
  }
  const times = compileConfig({ streams: { times: CONFIG.streams.orders } }).get("times")!;
  const stamped = endpoint("ep_times", {
    eventTypes: ["window.closed"],
    batch: { maxEvents: 10, maxWaitMs: 1_000, eventTypes: ["window.closed"] },
  });
  await new Dispatcher(store, deliveries, { now: () => now }).dispatch(times, [stamped]);
  const [batch] = await allDeliveries(deliveries, "ep_times");
  const payload = JSON.parse(batch.payload);
  assert.equal(payload.data.length, 3);
  assert.equal(payload.timestamp, new Date(T0 + 3_000).toISOString());
  assert.deepEqual(
    payload.data.map((item: { start: string }) => item.start),
    [1, 2, 3].map((n) => new Date(T0 + n * 60_000).toISOString()),
    "oldest first",
  );
});

/**
 * A Redis store, and a delivery store whose calls (only) go through a proxy that refuses requests
 * over 200,000 bytes as Upstash refuses those over its max request size.
 */
async function behindRefusingProxy(
  fixture: RedisFixture,
  wrap: (client: Redis) => Redis = (client) => client,
) {
  const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl, maxRequestBytes: 200_000 });
  const client = (url: string) =>
    new Redis({ url, token: fixture.restToken, enableTelemetry: false });
  return {
    proxy,
    store: new RedisStore(client(fixture.restUrl), { now: () => T0 }),
    deliveries: new RedisDeliveryStore(wrap(client(proxy.url)), { now: () => T0 }),
  };
}

/**
 * `client`, which also writes 90 KB elsewhere whenever it runs a script with over 100 KB of
 * arguments: made at the same moment, the write goes in the same request (the client's
 * auto-pipelining), as another part of a busy instance's would.
 */
function crowded(client: Redis): Redis {
  return new Proxy(client, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (name !== "evalsha" && name !== "eval") return value;
      return (...args: unknown[]) => {
        if (JSON.stringify(args).length > 100_000) {
          target.set("crowd", "y".repeat(90_000)).catch(() => {});
        }
        return value.apply(target, args);
      };
    },
  });
}

redisTest(
  "Dispatcher.dispatch() survives a store that refuses its pages as too large (Upstash's max request size): pages get smaller, every delivery is stored once",
  async (fixture) => {
    const { proxy, store, deliveries } = await behindRefusingProxy(fixture);
    try {
      for (let i = 0; i < 200; i += 50) {
        await store.appendLog("orders", Array.from({ length: 50 }, (_, j) => closed(i + j)));
      }
      const endpoints = Array.from({ length: 20 }, (_, i) => endpoint(`ep_${i}`));
      const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
      let created = 0;
      await collectingLogs(async (records) => {
        for (let round = 0; round < 5; round++) {
          const made = await dispatcher.dispatch(orders, endpoints);
          if (made === 0) break;
          created += made;
        }
        assert.ok(
          records.some((record) => messageOf(record).includes("refused a webhook dispatch page")),
          "the cut is said",
        );
      }, { level: "warning" });
      assert.equal(created, 200 * 20);
      const requests = proxy.take();
      const refused = requests.filter((request) => request.status === 400);
      assert.ok(refused.length > 0, "the proxy refused the first, larger pages");
      assert.ok(refused.length <= 5, `refused ${refused.length} times, not at every page`);
      for (const { id } of endpoints) {
        const items = await allDeliveries(deliveries, id);
        assert.equal(items.length, 200, id);
        assert.equal(new Set(items.map((item) => item.messageId)).size, 200, id);
      }
      assert.equal(await dispatcher.dispatch(orders, endpoints), 0, "the cursor is at the end");
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "Dispatcher.dispatch() stores one result whose deliveries no single store call can carry in several calls; webhooks after it are not held up",
  async (fixture) => {
    const { proxy, store, deliveries } = await behindRefusingProxy(fixture);
    try {
      // A window of a 30,000-character group: about 30 KB a delivery, 600 KB for 20 endpoints.
      await store.appendLog("orders", [closed(1, "x".repeat(30_000)), closed(2), closed(3)]);
      const endpoints = Array.from({ length: 20 }, (_, i) => endpoint(`ep_${i}`));
      const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
      let created = 0;
      await collectingLogs(async () => {
        for (let round = 0; round < 5; round++) {
          const made = await dispatcher.dispatch(orders, endpoints);
          if (made === 0) break;
          created += made;
        }
      }, { level: "warning" });
      assert.equal(created, 3 * 20);
      const requests = proxy.take();
      assert.ok(requests.some((request) => request.status === 400), "the proxy refused some");
      for (const { id } of endpoints) {
        const items = await allDeliveries(deliveries, id);
        assert.equal(items.length, 3, id);
        assert.equal(new Set(items.map((item) => item.messageId)).size, 3, id);
      }
      assert.equal(await dispatcher.dispatch(orders, endpoints), 0, "the cursor is at the end");
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "Dispatcher.dispatch() drops a delivery the store refuses in a request of its own (larger than any call), with an error and a count, and dispatches the results after it",
  async (fixture) => {
    const { proxy, store, deliveries } = await behindRefusingProxy(fixture);
    try {
      // A window of a 300,000-character group: one delivery larger than the proxy takes.
      await store.appendLog("orders", [closed(1, "x".repeat(300_000)), closed(2), closed(3)]);
      const [ours, other] = [endpoint("ep_0"), endpoint("ep_1", { eventTypes: [] })];
      const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
      const errors = await collectingLogs(async (records) => {
        assert.equal(await dispatcher.dispatch(orders, [ours, other]), 2);
        return records.map(messageOf);
      }, { level: "error" });
      assert.equal(errors.length, 1, errors.join("\n"));
      assert.match(
        errors[0],
        /^Webhook delivery msg_orders_\S+\.ep_0 of stream orders to endpoint ep_0 \(\d+ bytes\) is larger than the store takes in one call: it is dropped/,
      );
      // The page of three refused (pages are cut), then that delivery in a call of its own, then in
      // a request of its own, then not asked again.
      const refused = proxy.take().filter((request) => request.status === 400);
      assert.equal(refused.length, 3);
      const items = await allDeliveries(deliveries, "ep_0");
      assert.deepEqual(
        items.map((item) => JSON.parse(item.payload).data.group.country),
        ["DE", "DE"],
        "the two results after it",
      );
      assert.equal(await dispatcher.dispatch(orders, [ours, other]), 0, "the cursor is at the end");
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "Dispatcher.dispatch() sends a delivery refused together with other calls in a request of its own, and stores it",
  async (fixture) => {
    const { proxy, store, deliveries } = await behindRefusingProxy(fixture, crowded);
    try {
      // A window of a 120,000-character group: one delivery that fits alone, not with the write.
      await store.appendLog("orders", [closed(1, "x".repeat(120_000)), closed(2), closed(3)]);
      const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
      const errors = await collectingLogs(async (records) => {
        assert.equal(await dispatcher.dispatch(orders, [endpoint("ep_0")]), 3);
        return records.map(messageOf);
      }, { level: "error" });
      assert.deepEqual(errors, []);
      assert.ok(
        proxy.take().filter((request) => request.status === 400).length >= 2,
        "refused with the write",
      );
      const items = await allDeliveries(deliveries, "ep_0");
      assert.equal(items.length, 3);
      assert.ok(items.some((item) => item.payload.length > 120_000), "the large one too");
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "Dispatcher.dispatch() stores a delivery that fits though Redis lost its scripts and their text (EVAL) would not fit with it",
  async (fixture) => {
    const { proxy, store, deliveries } = await behindRefusingProxy(fixture);
    try {
      // 185,000 characters: EVALSHA with it fits in 200,000 bytes, EVAL (~20 KB more) does not.
      await store.appendLog("orders", [closed(1, "x".repeat(185_000)), closed(2)]);
      await restClient(fixture)
        .scriptFlush();
      const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
      const errors = await collectingLogs(async (records) => {
        assert.equal(await dispatcher.dispatch(orders, [endpoint("ep_0")]), 2);
        return records.map(messageOf);
      }, { level: "error" });
      assert.deepEqual(errors, []);
      assert.ok(proxy.take().some((request) => request.status === 400), "an EVAL refused");
      assert.equal((await allDeliveries(deliveries, "ep_0")).length, 2);
    } finally {
      await proxy.close();
    }
  },
);

/**
 * `deliveries`, whose calls carrying deliveries count what they create and, with `crashOnce`, the
 * first page stored after deliveries were created in calls of their own (a share of the page's)
 * fails before it reaches the store, as a process killed in between; with `maxBytes`, calls whose
 * deliveries (as JSON) are larger are refused as too large, as Upstash refuses them.
 */
function countingShares(
  deliveries: DeliveryStore,
  options: { crashOnce?: boolean; maxBytes?: number } = {},
) {
  const counts = { created: 0, shares: 0, crashed: false, createdBeforeCrash: 0 };
  const refuse = (items: readonly NewDelivery[]) => {
    if (JSON.stringify(items).length > (options.maxBytes ?? Infinity)) {
      throw new StoreRequestTooLargeError("ERR max request size exceeded");
    }
  };
  const wrapped = new Proxy(deliveries, {
    get(target, name, receiver) {
      const value = Reflect.get(target, name, receiver);
      if (name === "createDeliveries") {
        return async (items: readonly NewDelivery[], ...rest: unknown[]) => {
          refuse(items);
          const made: number = await value.apply(target, [items, ...rest]);
          counts.shares += 1;
          counts.created += made;
          return made;
        };
      }
      if (name === "storePage") {
        return async (stream: string, page: StoredPage, ...rest: unknown[]) => {
          refuse(page.deliveries);
          if (options.crashOnce && !counts.crashed && counts.shares > 0) {
            counts.crashed = true;
            counts.createdBeforeCrash = counts.created;
            throw new Error("Killed between the shares and the page");
          }
          const result: StoredPageResult | null = await value.apply(target, [
            stream,
            page,
            ...rest,
          ]);
          counts.created += result?.created ?? 0;
          return result;
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { deliveries: wrapped, counts };
}

/**
 * A page an earlier version fixed (its end cannot move) whose deliveries the store refuses in one
 * call (three results of about 30 KB sent to four endpoints, about 360 KB, over a 200,000-byte
 * limit): a process killed between its shares, and the next one, create each delivery once, and
 * the results after it are not held up.
 */
async function fixedPageTooLarge(
  store: Store,
  deliveries: DeliveryStore,
  counts: { crashed: boolean; createdBeforeCrash: number },
) {
  await store.appendLog("orders", [1, 2, 3].map((n) => closed(n, "x".repeat(30_000))));
  const plan = (await planPage({ store, deliveries }, orders))!;
  assert.equal(plan.entries.length, 3, "fixed as an earlier version did, and stopped");
  await store.appendLog("orders", [closed(4)]);
  const endpoints = Array.from({ length: 4 }, (_, i) => endpoint(`ep_${i}`));
  await collectingLogs(async () => {
    const killed = new Dispatcher(store, deliveries, { now: () => T0 });
    // Before the fix, the page was refused whole at every dispatch (a StoreRequestTooLargeError):
    // the stream's deliveries were stuck behind it.
    const failure = await killed.dispatch(orders, endpoints).then(() => null, (error) => error);
    assert.equal(failure?.message, "Killed between the shares and the page");
    assert.ok(counts.crashed);
    assert.ok(counts.createdBeforeCrash > 0, "some deliveries were created before the crash");
    const fresh = new Dispatcher(store, deliveries, { now: () => T0 });
    for (let round = 0; round < 5; round++) {
      if (await fresh.dispatch(orders, endpoints) === 0) break;
    }
  }, { level: "warning" });
  const log = await store.readLog("orders", null, 100);
  assert.equal(log.length, 4);
  for (const { id } of endpoints) {
    const items = await allDeliveries(deliveries, id);
    assert.deepEqual(
      items.map((item) => item.messageId).sort(),
      log.map((entry) => `msg_orders_${entry.id}`).sort(),
      id,
    );
  }
  assert.deepEqual(await deliveries.dispatchState("orders"), {
    cursor: log.at(-1)!.id,
    planEnd: null,
  });
}

Deno.test("Dispatcher.dispatch() (memory) stores a fixed page the store refuses as too large in shares, each delivery once, also after a crash between them; the results after it are not held up", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const { deliveries, counts } = countingShares(new MemoryDeliveryStore({ now: () => T0 }), {
    crashOnce: true,
    maxBytes: 200_000,
  });
  await fixedPageTooLarge(store, deliveries, counts);
  assert.equal(counts.created, 4 * 4, "each delivery created once");
});

redisTest(
  "Dispatcher.dispatch() (Redis) stores a fixed page the store refuses as too large in shares, each delivery once, also after a crash between them; the results after it are not held up",
  async (fixture) => {
    const { proxy, store, deliveries: behind } = await behindRefusingProxy(fixture);
    try {
      const { deliveries, counts } = countingShares(behind, { crashOnce: true });
      await fixedPageTooLarge(store, deliveries, counts);
      assert.equal(counts.created, 4 * 4, "each delivery created once");
      const requests = proxy.take();
      assert.ok(requests.some((request) => request.status === 400), "the proxy refused the page");
    } finally {
      await proxy.close();
    }
  },
);

/**
 * A claim sink as a sender's with `count` slow endpoints (its most, about 832 by default: 64 sends
 * of 5 s each 60 s, and those waiting): it asks for claims with their ids, ep_ and 32 hex digits as
 * generated, and records what each reservation got back.
 */
function slowClaimSink(count: number) {
  const endpointIds = Array.from(
    { length: count },
    (_, i) => `ep_${i.toString(16).padStart(32, "0")}`,
  );
  const taken: { limit: number; slowIds: number; claims: number }[] = [];
  const sink: ClaimSink = {
    reserve: (most) => ({
      nowMs: T0,
      limit: most,
      leaseMs: 30_000,
      maxConcurrency: 8,
      slow: { endpointIds, limit: 0 },
    }),
    take: (reserved, claims) =>
      taken.push({
        limit: reserved.limit,
        slowIds: reserved.slow?.endpointIds.length ?? 0,
        claims: claims.length,
      }),
  };
  return { sink, taken };
}

redisTest(
  "Dispatcher.dispatch() stores a delivery that fits alone though a claim naming 832 slow endpoints would not fit with it",
  async (fixture) => {
    const { proxy, store, deliveries } = await behindRefusingProxy(fixture);
    try {
      // 185,000 characters fit in the proxy's 200,000 bytes; with the ids (about 33 KB) they do not.
      await store.appendLog("orders", [closed(1, "x".repeat(185_000)), closed(2)]);
      await deliveries.putEndpoint(endpoint("ep_0"), { expectVersion: null });
      await deliveries.putEndpoint(endpoint("ep_0"), { expectVersion: null });
      const { sink, taken } = slowClaimSink(832);
      const dispatcher = new Dispatcher(store, deliveries, { now: () => T0 });
      const errors = await collectingLogs(async (records) => {
        assert.equal(await dispatcher.dispatch(orders, [endpoint("ep_0")], { claims: sink }), 2);
        return records.map(messageOf);
      }, { level: "error" });
      assert.deepEqual(errors, []);
      const items = await allDeliveries(deliveries, "ep_0");
      assert.equal(items.length, 2);
      assert.ok(items.some((item) => item.payload.length > 185_000), "the large one too");
      // Every reservation was given back, and the small page still claimed with the ids.
      assert.ok(taken.some((claim) => claim.slowIds === 832 && claim.claims > 0), "claimed");
      const sent = proxy.take().filter((request) => request.status === 200);
      assert.ok(sent.every((request) => request.bytes < 200_000));
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "Dispatcher.dispatch() stores a page its deliveries fill without a claim whose slow endpoint ids would take its call past the page's bytes",
  async (fixture) => {
    const { proxy, store, deliveries } = await behindRefusingProxy(fixture);
    try {
      // Two 85,000-character deliveries fill a 180,000-byte page and fit in the proxy's 200,000
      // bytes; with the ids of 832 slow endpoints (about 33 KB) they would not.
      await store.appendLog(
        "orders",
        [closed(1, "x".repeat(85_000)), closed(2, "y".repeat(85_000)), closed(3)],
      );
      await deliveries.putEndpoint(endpoint("ep_0"), { expectVersion: null });
      const { sink, taken } = slowClaimSink(832);
      const dispatcher = new Dispatcher(store, deliveries, {
        now: () => T0,
        maxPageBytes: 180_000,
      });
      let created = 0;
      for (let round = 0; round < 3; round++) {
        created += await dispatcher.dispatch(orders, [endpoint("ep_0")], { claims: sink });
      }
      assert.equal(created, 3);
      const requests = proxy.take();
      assert.deepEqual(
        requests.map((request) => [request.status, request.bytes]).filter(([status]) =>
          status !== 200
        ),
        [],
        "none refused",
      );
      assert.equal((await allDeliveries(deliveries, "ep_0")).length, 3);
      // The full page's slots were given back unused; a small page after it still claims.
      await store.appendLog("orders", [closed(4)]);
      assert.equal(await dispatcher.dispatch(orders, [endpoint("ep_0")], { claims: sink }), 1);
      assert.deepEqual(taken.map((claim) => claim.claims > 0), [false, true]);
    } finally {
      await proxy.close();
    }
  },
);

Deno.test("Dispatcher with maxPageBytes ends a page whose deliveries are larger early, one entry at least", async () => {
  const store = new MemoryStore({ now: () => T0 });
  const pages: number[] = [];
  class CountsPages extends MemoryDeliveryStore {
    override storePage(...args: Parameters<MemoryDeliveryStore["storePage"]>) {
      pages.push(args[1].deliveries.length);
      return super.storePage(...args);
    }
  }
  const deliveries = new CountsPages({ now: () => T0 });
  await store.appendLog("orders", Array.from({ length: 40 }, (_, i) => closed(i)));
  const endpoints = [endpoint("ep_a"), endpoint("ep_b")];
  // One delivery is about 400 bytes: 2,000 bytes take two entries' (four deliveries) at most.
  const dispatcher = new Dispatcher(store, deliveries, { now: () => T0, maxPageBytes: 2_000 });
  assert.equal(await dispatcher.dispatch(orders, endpoints), 80);
  assert.ok(pages.length >= 10, `pages: ${pages.join(", ")}`);
  assert.ok(pages.every((count) => count > 0 && count <= 4), `pages: ${pages.join(", ")}`);
  assert.equal((await allDeliveries(deliveries, "ep_b")).length, 40);
  // A page of one entry larger still: its deliveries are created in shares, the last one with
  // the page (here one delivery a call).
  const tiny = new Dispatcher(store, deliveries, { now: () => T0, maxPageBytes: 1 });
  await store.appendLog("orders", [closed(50), closed(51)]);
  pages.length = 0;
  assert.equal(await tiny.dispatch(orders, endpoints), 4);
  assert.deepEqual(pages, [1, 1]);
  assert.equal((await allDeliveries(deliveries, "ep_a")).length, 42);
  // By default about 1 MiB: 3,000 deliveries of about 430 bytes go in two pages.
  assert.equal(PAGE_BYTES, 1_048_576);
  await store.appendLog("orders", Array.from({ length: 300 }, (_, i) => closed(100 + i)));
  const ten = Array.from({ length: 10 }, (_, i) => endpoint(`ep_${i}`));
  pages.length = 0;
  const byDefault = new Dispatcher(store, deliveries, { now: () => T0 });
  assert.equal(await byDefault.dispatch(orders, ten), 3_000);
  assert.deepEqual(pages, [1_500, 1_500]);
});

Deno.test("Dispatcher delivers a stream created after the endpoint registered whatever its name, also one an object inherits (toString, constructor)", async () => {
  for (const name of ["toString", "constructor", "valueOf"]) {
    const stream = compileConfig({
      streams: { [name]: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
    }).get(name)!;
    const store = new MemoryStore({ now: () => T0 });
    const deliveries = new MemoryDeliveryStore({ now: () => T0 });
    await store.appendLog(name, [processed(1)]);
    // Registered before the stream existed: its start names only the streams there were.
    const early = endpoint("ep_early", { startAfter: { orders: null } });
    await new Dispatcher(store, deliveries, { now: () => T0 }).dispatch(stream, [early]);
    assert.equal((await allDeliveries(deliveries, "ep_early")).length, 1, name);
  }
});

Deno.test("Dispatcher gives a result the same webhook-id at every endpoint, and a batch with the same first and last result too, whatever else it holds there", async () => {
  const store = new MemoryStore({ now: () => T0 });
  await store.appendLog("orders", [closed(1, "DE"), closed(1, "FR"), closed(1, "IT")]);
  const batch = { maxEvents: 10, maxWaitMs: 1_000, eventTypes: ["window.closed" as const] };
  const endpoints = [
    endpoint("ep_one"),
    endpoint("ep_two"),
    endpoint("ep_all", { batch }),
    endpoint("ep_not_fr", { batch, filter: "data.group.country != 'FR'" }),
  ];
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  await new Dispatcher(store, deliveries, { now: () => T0 }).dispatch(orders, endpoints);
  const log = await store.readLog("orders", null, 100);
  const sent = async (id: string) =>
    (await allDeliveries(deliveries, id)).map((item) => ({
      messageId: item.messageId,
      countries: [JSON.parse(item.payload).data].flat().map((data) => data.group.country),
    })).sort((x, y) => x.messageId < y.messageId ? -1 : 1);
  const one = log.map((entry, i) => ({
    messageId: `msg_orders_${entry.id}`,
    countries: [["DE", "FR", "IT"][i]],
  }));
  assert.deepEqual(await sent("ep_one"), one);
  assert.deepEqual(await sent("ep_two"), one);
  const batchId = `msg_orders_${log[0].id}_${log[2].id}`;
  assert.deepEqual(await sent("ep_all"), [{ messageId: batchId, countries: ["DE", "FR", "IT"] }]);
  assert.deepEqual(await sent("ep_not_fr"), [{ messageId: batchId, countries: ["DE", "IT"] }]);
});
