/**
 * A stream created through the API closes windows, fires alerts and
 * reaches webhook receivers as a config-file stream does, when the webhook
 * service is wired as `env.ts` wires it (the registry as its streams, the
 * registry's store).
 */
import assert from "node:assert/strict";
import { compileConfig, StreamRegistry } from "../../../src/config/mod.ts";
import {
  generationKey,
  MemoryDefinitionStore,
  MemoryDeliveryStore,
  MemoryStore,
  RedisDefinitionStore,
  RedisDeliveryStore,
  RedisStore,
  type Store,
} from "../../../src/store/mod.ts";
import { collectingLogs, messageOf } from "../../_logs.ts";
import { redisTest, restClient, withDirect } from "../../_redis.ts";
import { Receiver } from "./_receiver.ts";
import { at, call, CONFIG, ingest, register, setup, sweep, T0 } from "./_setup.ts";

Deno.test("An API stream's closed windows and fired alerts reach a webhook receiver", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { now });
  const { app, webhooks } = await setup({
    clock,
    streams,
    store: streams.wrap(new MemoryStore({ now })),
  });
  const receiver = await Receiver.start(now);
  try {
    const created = await call(app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
    assert.equal(created.status, 201, created.text);
    const { secret } = await register(app, { url: receiver.url(), streams: ["orders"] });
    receiver.secrets = [secret];
    await ingest(
      app,
      [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE", amount: n })),
    );
    await ingest(app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }]);
    await sweep(app, webhooks);
    await webhooks.idle();
    const received = receiver.received.map((item) => item.payload);
    assert.deepEqual(
      received.filter((payload) => payload.type === "alert.fired").map((payload) => [
        payload.data.stream,
        payload.data.alert,
        payload.data.group,
      ]),
      [["orders", "busy", { country: "DE" }]],
    );
    assert.deepEqual(
      received.filter((payload) => payload.type === "window.closed").map((payload) => [
        payload.data.counter,
        payload.data.value,
      ]).sort(),
      [["amount", 6], ["per_minute", 3]],
    );
    assert.ok(receiver.received.every((item) => item.verifiedWith.length === 1));
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

Deno.test("A webhook may name a stream another instance created, before this one serves it", async () => {
  const clock = { now: T0 };
  const now = () => clock.now;
  const definitions = new MemoryDefinitionStore();
  const elsewhere = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  await elsewhere.put("orders", CONFIG.streams.orders);
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions, now });
  const { app, webhooks } = await setup({
    clock,
    streams,
    store: streams.wrap(new MemoryStore({ now })),
  });
  try {
    assert.equal(streams.has("orders"), false);
    const created = await call(app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/hook",
      streams: ["orders"],
    });
    assert.equal(created.status, 201, created.text);
    const unknown = await call(app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/hook",
      streams: ["nope"],
    });
    assert.equal(unknown.status, 400);
  } finally {
    await webhooks.close();
  }
});

Deno.test("A webhook naming a stream another instance created, before this one serves it, gets none of the results that stream logged before it registered", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const definitions = new MemoryDefinitionStore();
  const data = new MemoryStore({ now });
  const elsewhere = new StreamRegistry(compileConfig({ streams: {} }), { definitions, now });
  const a = await setup({ clock, streams: elsewhere, store: elsewhere.wrap(data) });
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions, now });
  const b = await setup({ clock, streams, store: streams.wrap(data) });
  const receiver = await Receiver.start(now);
  try {
    const created = await call(a.app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
    assert.equal(created.status, 201, created.text);
    // Minute 0 closes on the other instance, which has no endpoint: its results stay in the log.
    await ingest(a.app, [{ id: "before", ts: at(1), country: "DE", amount: 1 }]);
    await ingest(a.app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }]);
    await sweep(a.app, a.webhooks);
    assert.equal(streams.has("orders"), false);
    const { secret } = await register(b.app, {
      url: receiver.url(),
      eventTypes: ["window.closed"],
      streams: ["orders"],
    });
    receiver.secrets = [secret];
    await sweep(b.app, b.webhooks);
    assert.deepEqual(receiver.received.map((item) => item.payload.data.start), []);
    // Minute 1 closes after the registration: its results reach the endpoint.
    await ingest(a.app, [{ id: "late", ts: at(135), country: "XX", amount: 0 }]);
    await sweep(b.app, b.webhooks);
    assert.deepEqual(
      receiver.received.map((item) => [item.payload.data.counter, item.payload.data.start]).sort(),
      [["amount", at(60)], ["per_minute", at(60)]],
    );
  } finally {
    await a.close();
    await b.close();
    await receiver.close();
  }
});

Deno.test("A webhook registered, or changed, to hear all streams on an instance not serving one another instance created gets none of the results that stream logged before", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const definitions = new MemoryDefinitionStore();
  const data = new MemoryStore({ now });
  const deliveries = new MemoryDeliveryStore({ now });
  const instance = async () => {
    const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions, now });
    return { ...await setup({ clock, streams, store: streams.wrap(data), deliveries }), streams };
  };
  // a serves orders; b and c, which serve it not, register and change an endpoint to hear all.
  const [a, b, c] = [await instance(), await instance(), await instance()];
  const receiver = await Receiver.start(now);
  try {
    for (const name of ["orders", "signups"] as const) {
      const created = await call(a.app, "PUT", `/v1/streams/${name}`, CONFIG.streams[name]);
      assert.equal(created.status, 201, created.text);
    }
    // Minute 0 of orders closes while no endpoint exists: its results stay in the log.
    await ingest(a.app, [{ id: "before", ts: at(1), country: "DE", amount: 1 }]);
    await ingest(a.app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }]);
    await sweep(a.app, a.webhooks);
    assert.equal(b.streams.has("orders"), false);
    const all = await register(b.app, { url: receiver.url("/all"), eventTypes: ["window.closed"] });
    const changed = await register(c.app, {
      url: receiver.url("/changed"),
      eventTypes: ["window.closed"],
      streams: ["signups"],
    });
    assert.equal(c.streams.has("orders"), false);
    const res = await call(c.app, "PATCH", `/v1/webhooks/${changed.id}`, { streams: null });
    assert.equal(res.status, 200, res.text);
    receiver.secrets = [all.secret, changed.secret];
    // The instance serving orders dispatches its log to the endpoints.
    await sweep(a.app, a.webhooks);
    assert.deepEqual(receiver.received.map((item) => [item.path, item.payload.data.start]), []);
    // Minute 1 closes after: its results reach both.
    await ingest(a.app, [{ id: "late", ts: at(135), country: "XX", amount: 0 }]);
    await sweep(a.app, a.webhooks);
    for (const path of ["/all", "/changed"]) {
      assert.deepEqual(
        receiver.received.filter((item) => item.path === path)
          .map((item) => [item.payload.data.counter, item.payload.data.start]).sort(),
        [["amount", at(60)], ["per_minute", at(60)]],
        path,
      );
    }
  } finally {
    for (const app of [a, b, c]) await app.close();
    await receiver.close();
  }
});

Deno.test("A PATCH to hear all streams is no 409 when a poll serves a stream created meanwhile, between its read and its write: it starts on that stream too", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const definitions = new MemoryDefinitionStore();
  const data = new MemoryStore({ now });
  const elsewhere = new StreamRegistry(compileConfig({ streams: {} }), { definitions, now });
  await elsewhere.put("orders", CONFIG.streams.orders);
  await elsewhere.put("signups", CONFIG.streams.signups);
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions, now });
  // While the PATCH reads its starts, another instance creates a stream and a background poll
  // here serves it.
  let meanwhile: (() => Promise<void>) | undefined;
  const store = new Proxy(data, {
    get(target, property) {
      if (property === "lastLogId") {
        return async (name: string) => {
          const hook = meanwhile;
          meanwhile = undefined;
          await hook?.();
          return await target.lastLogId(name);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const { app, webhooks, deliveries } = await setup({
    clock,
    streams,
    store: streams.wrap(store),
  });
  const receiver = await Receiver.start(now);
  try {
    const endpoint = await register(app, {
      url: receiver.url(),
      eventTypes: ["window.closed"],
      streams: ["signups"],
    });
    meanwhile = async () => {
      await elsewhere.put("visits", CONFIG.streams.signups);
      await streams.poll();
    };
    const res = await call(app, "PATCH", `/v1/webhooks/${endpoint.id}`, { streams: null });
    assert.equal(meanwhile, undefined, "the PATCH read a start");
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.streams, null);
    assert.ok(streams.has("visits"));
    // Each stream it did not hear has the start read for it, the one served meanwhile too (none
    // would send it what that stream logged before the change).
    const stored = await deliveries.getEndpoint(endpoint.id);
    assert.deepEqual(Object.keys(stored!.startAfter).sort(), ["orders", "signups", "visits"]);
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

Deno.test("A PATCH enabling a webhook again starts it on a stream a poll serves meanwhile, between its read and its write, too", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const definitions = new MemoryDefinitionStore();
  const data = new MemoryStore({ now });
  const elsewhere = new StreamRegistry(compileConfig({ streams: {} }), { definitions, now });
  await elsewhere.put("orders", CONFIG.streams.orders);
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions, now });
  // While the PATCH reads its starts, another instance creates a stream and a background poll
  // here serves it.
  let meanwhile: (() => Promise<void>) | undefined;
  const store = new Proxy(data, {
    get(target, property) {
      if (property === "lastLogId") {
        return async (name: string) => {
          const hook = meanwhile;
          meanwhile = undefined;
          await hook?.();
          return await target.lastLogId(name);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const { app, webhooks, deliveries } = await setup({
    clock,
    streams,
    store: streams.wrap(store),
  });
  const receiver = await Receiver.start(now);
  try {
    const endpoint = await register(app, { url: receiver.url(), eventTypes: ["window.closed"] });
    const off = await call(app, "PATCH", `/v1/webhooks/${endpoint.id}`, { disabled: true });
    assert.equal(off.status, 200, off.text);
    meanwhile = async () => {
      await elsewhere.put("visits", CONFIG.streams.signups);
      await streams.poll();
    };
    const res = await call(app, "PATCH", `/v1/webhooks/${endpoint.id}`, { disabled: false });
    assert.equal(meanwhile, undefined, "the PATCH read a start");
    assert.equal(res.status, 200, res.text);
    assert.equal(res.body.disabled, false);
    assert.ok(streams.has("visits"));
    // Each stream it hears has a start read by the PATCH, the one served meanwhile too (none
    // would send it what that stream logged before it was enabled again).
    const stored = await deliveries.getEndpoint(endpoint.id);
    assert.deepEqual(Object.keys(stored!.startAfter).sort(), ["orders", "visits"]);
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

Deno.test("A PATCH to hear more streams is still a 409 when the endpoint was changed to hear fewer between its read and its write", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const definitions = new MemoryDefinitionStore();
  const data = new MemoryStore({ now });
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions, now });
  let meanwhile: (() => Promise<void>) | undefined;
  const store = new Proxy(data, {
    get(target, property) {
      if (property === "lastLogId") {
        return async (name: string) => {
          const hook = meanwhile;
          meanwhile = undefined;
          await hook?.();
          return await target.lastLogId(name);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const { app, webhooks } = await setup({ clock, streams, store: streams.wrap(store) });
  const receiver = await Receiver.start(now);
  try {
    for (const name of ["orders", "signups"] as const) {
      const created = await call(app, "PUT", `/v1/streams/${name}`, CONFIG.streams[name]);
      assert.equal(created.status, 201, created.text);
    }
    const endpoint = await register(app, {
      url: receiver.url(),
      eventTypes: ["window.closed"],
      streams: ["orders"],
    });
    let fewer: { status: number; text: string } | undefined;
    meanwhile = async () => {
      fewer = await call(app, "PATCH", `/v1/webhooks/${endpoint.id}`, { streams: ["signups"] });
    };
    const res = await call(app, "PATCH", `/v1/webhooks/${endpoint.id}`, {
      streams: ["orders", "signups"],
    });
    assert.equal(meanwhile, undefined, "the PATCH read a start");
    assert.equal(fewer?.status, 200, fewer?.text ?? "no PATCH meanwhile");
    assert.equal(res.status, 409, res.text);
    assert.match(res.body.error.message, /changed meanwhile; try again$/);
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

Deno.test("A lateness raised by PUT after a window closed re-opens it not: its events are late, its read and its one window.closed agree", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { now });
  const { app, webhooks } = await setup({
    clock,
    streams,
    store: streams.wrap(new MemoryStore({ now })),
  });
  const receiver = await Receiver.start(now);
  const define = async (lateness: string) => {
    const orders = CONFIG.streams.orders;
    const res = await call(app, "PUT", "/v1/streams/orders", {
      ...orders,
      time: { ...orders.time, lateness },
    });
    assert.ok(res.status === 200 || res.status === 201, res.text);
  };
  const closes = () =>
    receiver.received.map((item) => item.payload)
      .filter((payload) =>
        payload.type === "window.closed" && payload.data.counter === "per_minute"
      )
      .map((payload) => [payload.data.start, payload.data.group.country, payload.data.value]);
  try {
    await define("10s");
    const { secret } = await register(app, { url: receiver.url(), streams: ["orders"] });
    receiver.secrets = [secret];
    await ingest(
      app,
      [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE", amount: n })),
    );
    await ingest(app, [{ id: "tick", ts: at(300), country: "XX", amount: 0 }]);
    await sweep(app, webhooks);
    assert.deepEqual(closes(), [[at(0), "DE", 3]]);
    await define("1h");
    const reply = await ingest(app, [
      { id: "de20", ts: at(20), country: "DE", amount: 1 },
      { id: "fr21", ts: at(21), country: "FR", amount: 1 },
    ]);
    assert.equal(reply.late, 2);
    const read = await call(app, "GET", `/v1/streams/orders/counters/per_minute?to=${at(60)}`);
    assert.deepEqual(
      read.body.windows.map((
        row: { group: { country: string }; value: number; final: boolean },
      ) => [
        row.group.country,
        row.value,
        row.final,
      ]),
      [["DE", 3, true]],
    );
    await define("0s");
    await sweep(app, webhooks);
    assert.deepEqual(closes(), [[at(0), "DE", 3]]);
    // The store's mark stays its own: the stats answered are those the OpenAPI document lists.
    const stats = (await call(app, "GET", "/v1/streams/orders")).body.stats;
    assert.equal("closedThrough" in stats, false);
    assert.equal(stats.late, 2);
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

Deno.test("A deleted API stream leaves no dispatch state behind, and one created again under its name is held anew: its results all reach the receiver, none of the old one's", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { now });
  // A log that keeps 2 entries unless a dispatch holds it: a result the hold missed is trimmed.
  const deliveries = new MemoryDeliveryStore({ now });
  const { app, webhooks } = await setup({
    clock,
    streams,
    store: streams.wrap(new MemoryStore({ now, log: { retain: 2, max: 1_000 } })),
    deliveries,
  });
  const receiver = await Receiver.start(now);
  const closes = () =>
    receiver.received.map((item) => item.payload)
      .filter((payload) =>
        payload.type === "window.closed" && payload.data.counter === "per_minute" &&
        payload.data.stream === "orders"
      )
      .map((payload) => [payload.data.start, payload.data.group.country, payload.data.value])
      .sort();
  try {
    const { secret } = await register(app, { url: receiver.url() });
    receiver.secrets = [secret];
    // Streams created, fed, dispatched and deleted: none is remembered once the sweep sees it gone.
    for (let i = 0; i < 20; i++) {
      const name = `gone_${i}`;
      const created = await call(app, "PUT", `/v1/streams/${name}`, CONFIG.streams.orders);
      assert.equal(created.status, 201, created.text);
      await ingest(app, [{ id: "a", ts: at(1), country: "DE", amount: 1 }], name);
      await ingest(app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }], name);
      await sweep(app, webhooks);
      assert.equal((await call(app, "DELETE", `/v1/streams/${name}`)).status, 204);
    }
    await sweep(app, webhooks);
    assert.equal(webhooks.dispatchedStreams, 0);
    assert.equal(deliveries.dispatches, 0);

    const created = await call(app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
    assert.equal(created.status, 201, created.text);
    await ingest(app, [{ id: "de1", ts: at(1), country: "DE", amount: 1 }]);
    await ingest(app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }]);
    await sweep(app, webhooks);
    assert.deepEqual(closes(), [[at(0), "DE", 1]]);
    // Counted into minute 1, then deleted before it closes: never delivered.
    await ingest(app, [{ id: "old", ts: at(80), country: "OLD", amount: 1 }]);
    assert.equal((await call(app, "DELETE", "/v1/streams/orders")).status, 204);
    clock.now += 1_000;
    const again = await call(app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
    assert.equal(again.status, 201, again.text);
    const countries = ["DE", "FR", "IT", "ES"];
    await ingest(
      app,
      countries.map((country) => ({ id: country, ts: at(130), country, amount: 1 })),
    );
    await ingest(app, [{ id: "tick", ts: at(300), country: "XX", amount: 0 }]);
    await sweep(app, webhooks);
    await webhooks.idle();
    assert.deepEqual(
      closes(),
      [
        [at(0), "DE", 1],
        ...countries.map((country) => [at(120), country, 1]).sort(),
      ].sort(),
    );
    assert.equal(webhooks.dispatchedStreams, 1);
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

Deno.test("Deliveries of a deleted API stream's results made before the DELETE are still sent and retried: they are results it computed, and the endpoint still asks for them", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { now });
  const { app, webhooks } = await setup({
    clock,
    streams,
    store: streams.wrap(new MemoryStore({ now })),
  });
  const receiver = await Receiver.start(now);
  let up = false;
  receiver.respond = () => new Response(null, { status: up ? 204 : 500 });
  try {
    const created = await call(app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
    assert.equal(created.status, 201, created.text);
    const { id, secret } = await register(app, { url: receiver.url(), streams: ["orders"] });
    receiver.secrets = [secret];
    // The alert fires and minute 0 closes: their deliveries fail once, and wait for a retry.
    await ingest(
      app,
      [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE", amount: n })),
    );
    await ingest(app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }]);
    await sweep(app, webhooks);
    const before = await call(app, "GET", `/v1/webhooks/${id}/deliveries`);
    assert.equal(before.status, 200, before.text);
    const made = before.body.deliveries.map((delivery: { id: string }) => delivery.id).sort();
    assert.ok(made.length >= 3, before.text);
    assert.ok(
      before.body.deliveries.every((delivery: { status: string }) =>
        delivery.status === "retrying"
      ),
    );
    const failed = receiver.received.length;
    assert.equal((await call(app, "DELETE", "/v1/streams/orders")).status, 204);
    up = true;
    clock.now += 60_000;
    await sweep(app, webhooks);

    // Each was sent again, with its webhook-id (the delivery's id without its endpoint), and succeeded.
    const retried = receiver.received.slice(failed);
    assert.deepEqual(
      retried.map((item) => item.id).sort(),
      made.map((delivery: string) => delivery.replace(/\.ep_\w+$/, "")),
    );
    assert.ok(retried.every((item) => item.verifiedWith.length === 1));
    assert.deepEqual(
      retried.map((item) => item.payload)
        .filter((payload) =>
          payload.type === "window.closed" && payload.data.counter === "per_minute"
        )
        .map((payload) => [payload.data.stream, payload.data.start, payload.data.value]),
      [["orders", at(0), 3]],
    );
    assert.ok(retried.some((payload) => payload.payload.type === "alert.fired"));
    const after = await call(app, "GET", `/v1/webhooks/${id}/deliveries`);
    assert.ok(
      after.body.deliveries.every((delivery: { status: string }) =>
        delivery.status === "succeeded"
      ),
      after.text,
    );
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

Deno.test("Results a deleted API stream logged that no dispatch made into deliveries before the DELETE are never sent: its log is not dispatched again", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { now });
  // One dispatch makes 2 entries into deliveries, as the default 20 pages of 500 make 10,000.
  const { app, webhooks } = await setup({
    clock,
    streams,
    store: streams.wrap(new MemoryStore({ now })),
    dispatch: { pageSize: 1, maxPages: 2 },
  });
  const receiver = await Receiver.start(now);
  const countries = ["DE", "FR", "IT", "ES"];
  const closed = (stream: string) =>
    receiver.received.map((item) => item.payload)
      .filter((payload) => payload.type === "window.closed" && payload.data.stream === stream)
      .length;
  try {
    const { secret } = await register(app, { url: receiver.url(), eventTypes: ["window.closed"] });
    receiver.secrets = [secret];
    // Two streams alike; each closes 5 windows (4 countries' per_minute, one amount) at once.
    for (const name of ["orders", "kept"]) {
      const created = await call(app, "PUT", `/v1/streams/${name}`, CONFIG.streams.orders);
      assert.equal(created.status, 201, created.text);
      await ingest(
        app,
        countries.map((country) => ({ id: country, ts: at(1), country, amount: 1 })),
        name,
      );
      await ingest(app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }], name);
    }
    await sweep(app, webhooks);
    assert.deepEqual([closed("orders"), closed("kept")], [2, 2]);
    assert.equal((await call(app, "DELETE", "/v1/streams/orders")).status, 204);
    for (let i = 0; i < 3; i++) {
      clock.now += 5_000;
      await sweep(app, webhooks);
    }
    // The stream kept gets the rest of its close; the deleted one's 3 stay in its log.
    assert.deepEqual([closed("orders"), closed("kept")], [2, 5]);
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

// The control (not deleted): the same sweep of b sends the close's other 3, so the DELETE is what
// keeps them from the receiver, not a sweep of b that would dispatch nothing anyway.
for (const deleted of [true, false]) {
  redisTest(
    deleted
      ? "On Redis, results a stream logged that no dispatch made into deliveries before its DELETE elsewhere are not sent by an instance that has not polled since: its sweep reads the definitions first"
      : "On Redis, results a stream logged that no dispatch made into deliveries are sent by another instance's sweep while the stream is not deleted",
    async (fixture) => {
      const clock = { now: T0 + 600_000 };
      const now = () => clock.now;
      const redis = restClient(fixture);
      const deliveries = new RedisDeliveryStore(redis, { now });
      // Two instances on one Redis, each with its own registry and store; `dispatch` is `a`'s.
      const instance = async (options: { dispatch?: { pageSize: number; maxPages: number } }) => {
        const data = new RedisStore(redis, { now, definitionsHere: true });
        const definitions = new RedisDefinitionStore(redis);
        // Reads of the definitions' index (polls), counted.
        const polls = { count: 0 };
        const versionsSince = definitions.versionsSince.bind(definitions);
        definitions.versionsSince = (mark) => {
          polls.count += 1;
          return versionsSince(mark);
        };
        const streams = new StreamRegistry(compileConfig({ streams: {} }), {
          now,
          definitions,
          data,
        });
        return {
          ...await setup({ clock, streams, store: streams.wrap(data), deliveries, ...options }),
          streams,
          polls,
        };
      };
      // One dispatch of a makes 2 entries into deliveries: the close's other 3 stay in the log.
      const a = await instance({ dispatch: { pageSize: 1, maxPages: 2 } });
      const b = await instance({});
      const receiver = await Receiver.start(now);
      const closed = () =>
        receiver.received.filter((item) => item.payload.type === "window.closed").length;
      try {
        const created = await call(a.app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
        assert.equal(created.status, 201, created.text);
        await b.streams.poll();
        assert.ok(b.streams.has("orders"));
        const { secret } = await register(a.app, {
          url: receiver.url(),
          eventTypes: ["window.closed"],
        });
        receiver.secrets = [secret];
        const countries = ["DE", "FR", "IT", "ES"];
        await ingest(
          a.app,
          countries.map((country) => ({ id: country, ts: at(1), country, amount: 1 })),
        );
        await ingest(a.app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }]);
        await sweep(a.app, a.webhooks);
        assert.equal(closed(), 2);
        if (deleted) {
          assert.equal((await call(a.app, "DELETE", "/v1/streams/orders")).status, 204);
        }
        // b has not polled since the DELETE: its sweep (whose close of the quiet stream reads no
        // record) dispatches what it serves.
        assert.ok(b.streams.has("orders"));
        clock.now += 1_000;
        const polled = b.polls.count;
        await sweep(b.app, b.webhooks);
        await b.webhooks.idle();
        if (deleted) assert.equal(closed(), 2, "the deleted stream's log was dispatched again");
        else assert.equal(closed(), 5, "b's sweep did not send the stream's leftovers");
        // One read of the definitions' index a sweep.
        assert.equal(b.polls.count - polled, 1);
        assert.equal(b.streams.has("orders"), !deleted);
      } finally {
        await a.close();
        await b.close();
        await receiver.close();
      }
    },
  );
}

/**
 * `data` recording into `logged` every firing it claims as new, as `key:alert:group` (`key`: the
 * incarnation it was asked under).
 */
function recordingFirings<T extends Store>(data: T, logged: string[]): T {
  const fireAlerts = data.fireAlerts.bind(data);
  data.fireAlerts = async (key, firings, options) => {
    const fired = await fireAlerts(key, firings, options);
    logged.push(...fired.map((firing) => `${key}:${firing.alert}:${firing.group}`));
    return fired;
  };
  return data;
}

/**
 * `store` whose next window read after `hold()` answers only once the test lets it:
 * `hold().reached` resolves once that read has its values, and `release()` lets it answer.
 */
function heldReads<T extends Store>(store: T) {
  let gate: { reached: () => void; released: Promise<void> } | undefined;
  const held = new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (property !== "readWindows") {
        return typeof value === "function" ? value.bind(target) : value;
      }
      return async (...args: Parameters<Store["readWindows"]>) => {
        const armed = gate;
        gate = undefined;
        const values = await store.readWindows(...args);
        if (armed) {
          armed.reached();
          await armed.released;
        }
        return values;
      };
    },
  });
  return {
    store: held,
    hold() {
      const reached = Promise.withResolvers<void>();
      const released = Promise.withResolvers<void>();
      gate = { reached: reached.resolve, released: released.promise };
      return { reached: reached.promise, release: () => released.resolve() };
    },
  };
}

for (const recreated of [false, true]) {
  Deno.test(
    `An alert check that runs after a DELETE${
      recreated ? " and a PUT creating the stream again" : ""
    } landed between its ingest and it fires nothing: no alert.fired logged, none delivered`,
    async () => {
      const clock = { now: T0 + 600_000 };
      const now = () => clock.now;
      const streams = new StreamRegistry(compileConfig({ streams: {} }), { now });
      // Every firing the data store logs, under whichever key (incarnation) it was asked to.
      const logged: string[] = [];
      const data = recordingFirings(new MemoryStore({ now }), logged);
      // The alert check's window read, once held, answers only once the test lets it: the read
      // was made before the DELETE, its answer comes after.
      const reads = heldReads(streams.wrap(data));
      const store = reads.store;
      const { app, webhooks } = await setup({ clock, streams, store });
      const receiver = await Receiver.start(now);
      const alertsOf = async () =>
        (await store.readLog("orders", null, 100)).filter((entry) =>
          entry.record.type === "alert.fired"
        ).length;
      try {
        const created = await call(app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
        assert.equal(created.status, 201, created.text);
        const { secret } = await register(app, { url: receiver.url(), streams: ["orders"] });
        receiver.secrets = [secret];
        const held = reads.hold();
        // 3 DE events: `busy` (value >= 3) holds for minute 0.
        await ingest(
          app,
          [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE", amount: n })),
        );
        await held.reached;
        assert.equal((await call(app, "DELETE", "/v1/streams/orders")).status, 204);
        if (recreated) {
          const again = await call(app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
          assert.equal(again.status, 201, again.text);
        }
        // Dropped quietly: no "Alert evaluation failed" for a stream that is gone.
        const complaints = await collectingLogs(async (records) => {
          held.release();
          await webhooks.idle();
          return records.filter((record) => record.category[1] === "alerts").map(messageOf);
        }, { level: "info" });
        assert.deepEqual(complaints, []);
        await sweep(app, webhooks);
        await webhooks.idle();
        assert.deepEqual(logged, [], "alert.fired logged");
        if (recreated) assert.equal(await alertsOf(), 0, "alert.fired in the new incarnation");
        assert.deepEqual(receiver.received.map((item) => item.payload.type), []);
        // The control: the same check, with no DELETE in between, fires and is delivered.
        if (recreated) {
          await ingest(
            app,
            [1, 2, 3].map((n) => ({ id: `fr${n}`, ts: at(n), country: "FR", amount: n })),
          );
          await webhooks.idle();
          assert.deepEqual(
            receiver.received.map((item) => [item.payload.type, item.payload.data.group]),
            [["alert.fired", { country: "FR" }]],
          );
        }
      } finally {
        await webhooks.close();
        await receiver.close();
      }
    },
  );
}

// The control (not deleted): the same held check on b fires, and is delivered, so the DELETE is
// what keeps it from the log, not a check of b that would fire nothing anyway.
for (const deleted of [true, false]) {
  redisTest(
    deleted
      ? "On Redis, an alert check on an instance that has not polled since a DELETE elsewhere fires nothing: the store reads the definition record as it fires, so no alert.fired is logged or delivered"
      : "On Redis, an alert check held past another instance's request fires and is delivered while the stream is not deleted",
    async (fixture) => {
      const clock = { now: T0 + 600_000 };
      const now = () => clock.now;
      const redis = restClient(fixture);
      const deliveries = new RedisDeliveryStore(redis, { now });
      // Every firing the data store claims as new, under whichever key (incarnation) it was asked.
      const logged: string[] = [];
      const instance = async () => {
        const data = recordingFirings(
          new RedisStore(redis, { now, definitionsHere: true }),
          logged,
        );
        const streams = new StreamRegistry(compileConfig({ streams: {} }), {
          now,
          definitions: new RedisDefinitionStore(redis),
          data,
        });
        // The alert check's window read, once held, answers only once the test lets it.
        const reads = heldReads(streams.wrap(data));
        return {
          ...await setup({ clock, streams, store: reads.store, deliveries }),
          streams,
          hold: reads.hold,
        };
      };
      const a = await instance();
      const b = await instance();
      const receiver = await Receiver.start(now);
      try {
        const created = await call(a.app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
        assert.equal(created.status, 201, created.text);
        await b.streams.poll();
        assert.ok(b.streams.has("orders"));
        const { secret } = await register(a.app, { url: receiver.url(), streams: ["orders"] });
        receiver.secrets = [secret];
        const held = b.hold();
        // 3 DE events on b: `busy` (value >= 3) holds for minute 0; b's check reads the window.
        await ingest(
          b.app,
          [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE", amount: n })),
        );
        await held.reached;
        if (deleted) {
          assert.equal((await call(a.app, "DELETE", "/v1/streams/orders")).status, 204);
        }
        // b has not polled since: it still serves the stream, so its own check lets the firing go.
        assert.ok(b.streams.has("orders"));
        held.release();
        await b.webhooks.idle();
        await a.webhooks.idle();
        if (deleted) {
          assert.deepEqual(logged, [], "alert.fired logged for a deleted stream");
          assert.deepEqual(receiver.received.map((item) => item.payload.type), []);
        } else {
          assert.deepEqual(logged, [`${generationKey("orders", 1)}:busy:["DE"]`]);
          assert.deepEqual(
            receiver.received.map((item) => [item.payload.type, item.payload.data.group]),
            [["alert.fired", { country: "DE" }]],
          );
        }
      } finally {
        await a.close();
        await b.close();
        await receiver.close();
      }
    },
  );
}

Deno.test("Results of a counter logged before a PUT removed it still reach the webhook as they were, with their aggregate and group", async () => {
  const clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { now });
  // One dispatch makes 1 entry into a delivery: the others wait in the log past the PUT.
  const { app, webhooks } = await setup({
    clock,
    streams,
    store: streams.wrap(new MemoryStore({ now })),
    dispatch: { pageSize: 1, maxPages: 1 },
  });
  const receiver = await Receiver.start(now);
  try {
    const { secret } = await register(app, { url: receiver.url(), eventTypes: ["window.closed"] });
    receiver.secrets = [secret];
    const created = await call(app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
    assert.equal(created.status, 201, created.text);
    await ingest(
      app,
      ["DE", "FR"].map((country) => ({ id: country, ts: at(1), country, amount: 2 })),
    );
    await ingest(app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }]);
    // Minute 0 closes: per_minute's DE and FR, amount's one window; one goes out now.
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 1);
    const { per_minute: _, ...counters } = CONFIG.streams.orders.counters;
    const replaced = await call(app, "PUT", "/v1/streams/orders", {
      ...CONFIG.streams.orders,
      counters,
      alerts: [],
    });
    assert.equal(replaced.status, 200, replaced.text);
    for (let i = 0; i < 3; i++) {
      clock.now += 5_000;
      await sweep(app, webhooks);
    }
    assert.deepEqual(
      receiver.received.map(({ payload }) => [
        payload.data.counter,
        payload.data.aggregate,
        payload.data.group,
        payload.data.value,
      ]).sort(),
      [
        ["amount", "sum", {}, 4],
        ["per_minute", "count", { country: "DE" }, 1],
        ["per_minute", "count", { country: "FR" }, 1],
      ],
    );
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

for (
  const [step, swept] of [[0, false], [0, true], [-5_000, false]] as const
) {
  Deno.test(
    `An API stream created again ${
      step === 0 ? "in the millisecond its old log ended" : "after the clock stepped back"
    }${
      swept ? ", with a sweep in between," : ""
    } has its results delivered under webhook-ids the old one never used`,
    async () => {
      const clock = { now: T0 + 600_000 };
      const now = () => clock.now;
      const streams = new StreamRegistry(compileConfig({ streams: {} }), { now });
      const { app, webhooks } = await setup({
        clock,
        streams,
        store: streams.wrap(new MemoryStore({ now })),
      });
      const receiver = await Receiver.start(now);
      const results = (from: number) =>
        receiver.received.slice(from).map((
          { payload },
        ) => [
          payload.type,
          payload.data.counter,
          payload.data.group?.country ?? null,
          payload.data.value,
        ]).sort();
      try {
        const { secret } = await register(app, { url: receiver.url() });
        receiver.secrets = [secret];
        for (const country of ["DE", "FR"]) {
          const from = receiver.received.length;
          const created = await call(app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
          assert.equal(created.status, 201, created.text);
          await ingest(
            app,
            [1, 2, 3].map((n) => ({ id: `${country}${n}`, ts: at(n), country, amount: n })),
          );
          await ingest(app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }]);
          await sweep(app, webhooks);
          assert.deepEqual(results(from), [
            ["alert.fired", "per_minute", country, 3],
            ["window.closed", "amount", null, 6],
            ["window.closed", "per_minute", country, 3],
          ]);
          assert.equal((await call(app, "DELETE", "/v1/streams/orders")).status, 204);
          // A sweep sees the stream gone: it forgets its dispatch state (memory delivery store).
          if (swept) await sweep(app, webhooks);
          clock.now += step;
        }
        const ids = receiver.received.map((item) => item.id);
        assert.equal(new Set(ids).size, ids.length, `a webhook-id was used twice: ${ids}`);
      } finally {
        await webhooks.close();
        await receiver.close();
      }
    },
  );
}

redisTest(
  "On Redis, an API stream created again after the server's clock stepped back has its results delivered under webhook-ids the old one never used",
  async (fixture) => {
    const clock = { now: T0 + 600_000 };
    const now = () => clock.now;
    const redis = restClient(fixture);
    const data = new RedisStore(redis, { now, definitionsHere: true });
    const streams = new StreamRegistry(compileConfig({ streams: {} }), {
      now,
      definitions: new RedisDefinitionStore(redis),
      data,
    });
    const { app, webhooks } = await setup({
      clock,
      streams,
      store: streams.wrap(data),
      deliveries: new RedisDeliveryStore(redis, { now }),
    });
    const receiver = await Receiver.start(now);
    const results = (from: number) =>
      receiver.received.slice(from).map((
        { payload },
      ) => [
        payload.type,
        payload.data.counter,
        payload.data.group?.country ?? null,
        payload.data.value,
      ]).sort();
    try {
      const { secret } = await register(app, {
        url: receiver.url(),
        eventTypes: ["window.closed", "alert.fired"],
      });
      receiver.secrets = [secret];
      for (const country of ["DE", "FR"]) {
        const from = receiver.received.length;
        const created = await call(app, "PUT", "/v1/streams/orders", CONFIG.streams.orders);
        assert.equal(created.status, 201, created.text);
        if (country === "DE") {
          // The server's clock was an hour ahead when the first incarnation's log began (and stepped
          // back since): its ids, from XADD *, are an hour ahead of the second's.
          const log = data.keyPrefix(generationKey("orders", streams.generationOf("orders"))) +
            "log";
          await withDirect(fixture.redisUrl, (send) =>
            send(
              "XADD",
              log,
              `${Date.now() + 3_600_000}-0`,
              "r",
              JSON.stringify({ type: "event.processed", timeMs: T0, event: {} }),
            ));
        }
        await ingest(
          app,
          [1, 2, 3].map((n) => ({ id: `${country}${n}`, ts: at(n), country, amount: n })),
        );
        await ingest(app, [{ id: "tick", ts: at(75), country: "XX", amount: 0 }]);
        await sweep(app, webhooks);
        assert.deepEqual(results(from), [
          ["alert.fired", "per_minute", country, 3],
          ["window.closed", "amount", null, 6],
          ["window.closed", "per_minute", country, 3],
        ]);
        assert.equal((await call(app, "DELETE", "/v1/streams/orders")).status, 204);
      }
      const ids = receiver.received.map((item) => item.id);
      assert.equal(new Set(ids).size, ids.length, `a webhook-id was used twice: ${ids}`);
    } finally {
      await webhooks.close();
      await receiver.close();
    }
  },
);
