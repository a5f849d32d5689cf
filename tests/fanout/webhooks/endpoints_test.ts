/** The endpoint registry on its own; the HTTP routes over it are tested in service_test.ts. */
import assert from "node:assert/strict";
import { compileConfig } from "../../../src/config/mod.ts";
import {
  DEFAULT_EVENT_TYPES,
  EndpointRegistry,
  InvalidEndpointError,
  SECRET_OVERLAP_MS,
  WebhookNotFoundError,
  WebhookPreconditionError,
} from "../../../src/fanout/webhooks/endpoints.ts";
import { UrlPolicy } from "../../../src/fanout/webhooks/ssrf.ts";
import {
  type DeliveryStore,
  MemoryDeliveryStore,
  RedisDeliveryStore,
} from "../../../src/store/mod.ts";
import { MemoryStore } from "../../../src/store/memory/store.ts";
import { redisTest, restClient } from "../../_redis.ts";
import { CONFIG, T0 } from "./_setup.ts";

const URL_OK = "http://127.0.0.1:9000/hook";

function registry(changes: string[] = []) {
  const clock = { now: T0 };
  const now = () => clock.now;
  const endpoints = new EndpointRegistry(new MemoryDeliveryStore({ now }), {
    store: new MemoryStore({ now }),
    streams: compileConfig(CONFIG),
    now,
    policy: new UrlPolicy({
      allow: ["127.0.0.1"],
      resolve: () => Promise.reject(new Error("No DNS in tests")),
    }),
    // Finishes a macrotask later: only an awaited onChange is seen when a change returns.
    onChange: async () => {
      await new Promise((resolve) => setTimeout(resolve, 0));
      changes.push("changed");
    },
  });
  return { endpoints, clock };
}

Deno.test("EndpointRegistry awaits onChange after every stored change and not after a refusal", async () => {
  const changes: string[] = [];
  const { endpoints } = registry(changes);
  const { endpoint } = await endpoints.create({ url: URL_OK });
  assert.deepEqual(changes, ["changed"]);
  await endpoints.update(endpoint.id, { description: "orders" });
  await endpoints.rotateSecret(endpoint.id);
  await endpoints.delete(endpoint.id);
  assert.equal(changes.length, 4);
  await assert.rejects(endpoints.create({ url: "https://10.0.0.1/hook" }), InvalidEndpointError);
  await assert.rejects(endpoints.update("ep_nope", {}), WebhookNotFoundError);
  await assert.rejects(endpoints.delete("ep_nope"), WebhookNotFoundError);
  assert.equal(changes.length, 4);
});

Deno.test("EndpointRegistry.create() applies defaults and versions every change", async () => {
  const { endpoints } = registry();
  const { endpoint, secret } = await endpoints.create({ url: URL_OK });
  assert.deepEqual(endpoint.eventTypes, DEFAULT_EVENT_TYPES);
  assert.equal(endpoint.streams, null);
  assert.equal(endpoint.disabled, false);
  assert.equal(endpoint.version, 1);
  assert.deepEqual(endpoint.secrets, [{ secret, expiresMs: null }]);
  const changed = await endpoints.update(endpoint.id, { disabled: true });
  assert.equal(changed.version, 2);
  assert.equal(changed.disabledReason, "Disabled by its owner");
  assert.deepEqual(await endpoints.list(), [changed]);
  assert.deepEqual(await endpoints.get(endpoint.id), changed);
});

Deno.test("EndpointRegistry names the input field at fault", async () => {
  const { endpoints } = registry();
  const cases: Array<[Parameters<EndpointRegistry["create"]>[0], string]> = [
    [{ url: "https://169.254.169.254/" }, "url"],
    [{ url: URL_OK, streams: ["nope"] }, "streams"],
    [{ url: URL_OK, filter: "payload.type ==" }, "filter"],
    [{ url: URL_OK, headers: { "Content-Type": "text/plain" } }, "headers"],
    [{ url: URL_OK, headers: { "bad name": "x" } }, "headers"],
    [{ url: URL_OK, headers: { "x-a": "a".repeat(4097) } }, "headers"],
    [
      {
        url: URL_OK,
        headers: Object.fromEntries(Array.from({ length: 33 }, (_, n) => [`x-${n}`, "1"])),
      },
      "headers",
    ],
  ];
  for (const [input, field] of cases) {
    await assert.rejects(endpoints.create(input), (error) => {
      assert.ok(error instanceof InvalidEndpointError, String(error));
      assert.equal(error.field, field, JSON.stringify(input));
      return true;
    });
  }
  assert.deepEqual(await endpoints.list(), []);
});

Deno.test("EndpointRegistry refuses a header value with a control character (NUL too, not called a line break), which no delivery could send, on registration and on change", async () => {
  const { endpoints } = registry();
  const { endpoint } = await endpoints.create({ url: URL_OK, headers: { "x-a": "tab\tis fine" } });
  const controls = [["x\u0000", "0000"], ["a\x01b", "0001"], ["a\x0bb", "000B"], [
    "a\x7fb",
    "007F",
  ]];
  for (const [value, code] of controls) {
    const message =
      `header 'x-a' holds a control character (U+${code}); only tab, space and visible characters can be sent`;
    await assert.rejects(
      endpoints.create({ url: URL_OK, headers: { "x-a": value } }),
      (error) =>
        error instanceof InvalidEndpointError && error.field === "headers" &&
        error.message === `Cannot register webhook as ${message}`,
    );
    await assert.rejects(
      endpoints.update(endpoint.id, { headers: { "x-a": value } }),
      (error) =>
        error instanceof InvalidEndpointError && error.field === "headers" &&
        error.message === `Cannot change webhook as ${message}`,
    );
  }
  // A carriage return or a line feed is one: said so.
  for (const value of ["a\rb", "a\nb"]) {
    await assert.rejects(
      endpoints.create({ url: URL_OK, headers: { "x-a": value } }),
      (error) =>
        error instanceof InvalidEndpointError && error.field === "headers" &&
        error.message === "Cannot register webhook as header 'x-a' holds a line break",
    );
  }
  assert.deepEqual((await endpoints.get(endpoint.id)).headers, { "x-a": "tab\tis fine" });
  assert.equal((await endpoints.list()).length, 1);
});

Deno.test("EndpointRegistry.rotateSecret() keeps the previous secret for the overlap only", async () => {
  const { endpoints, clock } = registry();
  const { endpoint, secret: first } = await endpoints.create({ url: URL_OK });
  const { secret: second, previousExpiresMs } = await endpoints.rotateSecret(endpoint.id);
  assert.equal(previousExpiresMs, T0 + SECRET_OVERLAP_MS);
  assert.deepEqual((await endpoints.get(endpoint.id)).secrets, [
    { secret: second, expiresMs: null },
    { secret: first, expiresMs: previousExpiresMs },
  ]);
  clock.now = previousExpiresMs + 1;
  const { secret: third } = await endpoints.rotateSecret(endpoint.id);
  assert.deepEqual((await endpoints.get(endpoint.id)).secrets.map((item) => item.secret), [
    third,
    second,
  ]);
});

Deno.test("EndpointRegistry.rotateSecret() returns the version it wrote (its ETag), not that of a change landing before it returns, whose If-Match it must not pass", async () => {
  const now = () => T0;
  let interleave: (() => Promise<unknown>) | undefined;
  const endpoints: EndpointRegistry = new EndpointRegistry(new MemoryDeliveryStore({ now }), {
    store: new MemoryStore({ now }),
    streams: compileConfig(CONFIG),
    now,
    policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
    // Another admin's change, stored between the rotation's write and its return.
    onChange: async () => {
      const change = interleave;
      interleave = undefined;
      await change?.();
    },
  });
  const { endpoint } = await endpoints.create({ url: URL_OK });
  interleave = () => endpoints.update(endpoint.id, { description: "another admin's" });
  const rotated = await endpoints.rotateSecret(endpoint.id, { versions: [1] });
  assert.equal(rotated.version, 2);
  assert.equal((await endpoints.get(endpoint.id)).version, 3);
  await assert.rejects(
    endpoints.update(endpoint.id, { description: "unseen" }, { versions: [rotated.version] }),
    WebhookPreconditionError,
  );
  // A stale version rotates nothing.
  const secrets = (await endpoints.get(endpoint.id)).secrets;
  await assert.rejects(endpoints.rotateSecret(endpoint.id, { versions: [2] }), {
    name: "WebhookPreconditionError",
    message:
      `Webhook endpoint '${endpoint.id}' is not at version 2 (it is at version 3): read it again and retry`,
  });
  assert.deepEqual((await endpoints.get(endpoint.id)).secrets, secrets);
});

/** Registers `run` as two tests, named by `name`: on a memory delivery store, and on Redis. */
function onBothStores(
  name: (kind: "memory" | "Redis") => string,
  run: (deliveries: DeliveryStore) => Promise<void>,
) {
  Deno.test(name("memory"), () => run(new MemoryDeliveryStore({ now: () => T0 })));
  redisTest(
    name("Redis"),
    (fixture) => run(new RedisDeliveryStore(restClient(fixture), { now: () => T0 })),
  );
}

/** A registry over `deliveries` whose onChange runs `interleave` once: another admin's change. */
function interleaved(deliveries: DeliveryStore) {
  const now = () => T0;
  const hook: { interleave?: () => Promise<unknown> } = {};
  const store = new MemoryStore({ now });
  const endpoints: EndpointRegistry = new EndpointRegistry(deliveries, {
    store,
    streams: compileConfig(CONFIG),
    now,
    policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
    onChange: async () => {
      const change = hook.interleave;
      hook.interleave = undefined;
      await change?.();
    },
  });
  return { endpoints, hook, store };
}

/** PATCH answers what it wrote though another change or a delete lands before it returns. */
async function patchAnswersWhatItWrote(deliveries: DeliveryStore): Promise<void> {
  const { endpoints, hook } = interleaved(deliveries);
  const { endpoint } = await endpoints.create({ url: URL_OK });
  hook.interleave = () => endpoints.update(endpoint.id, { description: "another admin's" });
  const changed = await endpoints.update(endpoint.id, { description: "mine" }, { versions: [1] });
  assert.equal(changed.version, 2);
  assert.equal(changed.description, "mine");
  assert.equal(changed.disabled, false);
  assert.equal((await endpoints.get(endpoint.id)).version, 3);
  await assert.rejects(
    endpoints.update(endpoint.id, { description: "unseen" }, { versions: [changed.version] }),
    WebhookPreconditionError,
  );
  // Deleted before it returns, a change that applied is answered, not a 404.
  hook.interleave = () => endpoints.delete(endpoint.id);
  const last = await endpoints.update(endpoint.id, { description: "applied" });
  assert.equal(last.version, 4);
  assert.equal(last.description, "applied");
  await assert.rejects(endpoints.get(endpoint.id), WebhookNotFoundError);
}

onBothStores(
  (kind) =>
    `EndpointRegistry.update() returns what it wrote, not a change or delete landing before it returns (${kind})`,
  patchAnswersWhatItWrote,
);

/**
 * `deliveries` whose next `putEndpoint` first runs `hook.beforePut` (once): what lands between a
 * change's read and its write.
 */
function beforeWrite(deliveries: DeliveryStore) {
  const hook: { beforePut?: () => Promise<unknown> } = {};
  const wrapped = new Proxy(deliveries, {
    get(target, name) {
      const value = Reflect.get(target, name, target);
      if (name === "putEndpoint") {
        return async (...args: Parameters<DeliveryStore["putEndpoint"]>) => {
          const before = hook.beforePut;
          hook.beforePut = undefined;
          await before?.();
          return target.putEndpoint(...args);
        };
      }
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { wrapped, hook };
}

/** The receiver of `endpointId` answers 410 Gone to a delivery: the store disables it (no version moves). */
async function goneMeanwhile(deliveries: DeliveryStore, endpointId: string): Promise<void> {
  const messageId = `msg_gone_${crypto.randomUUID()}`;
  await deliveries.createDeliveries([{
    id: `${messageId}.${endpointId}`,
    messageId,
    endpointId,
    stream: "orders",
    eventType: "window.closed",
    payload: "{}",
    createdMs: T0,
  }]);
  const [claim] = await deliveries.claimDue({
    nowMs: T0 + 60_000,
    limit: 1,
    leaseMs: 30_000,
    maxConcurrency: 10,
  });
  const result = await deliveries.recordAttempt({
    deliveryId: claim.delivery.id,
    endpointId,
    token: claim.token,
    attempt: {
      attempt: 1,
      timeMs: T0 + 60_000,
      durationMs: 5,
      status: 410,
      error: "HTTP 410",
      responseExcerpt: "",
      outcome: "dead",
      nextAttemptMs: null,
    },
    nowMs: T0 + 60_000,
    disableReason: "Endpoint answered 410 Gone",
    disableAfterMs: 86_400_000,
    failingReason: "Failing",
  });
  assert.deepEqual(result, { recorded: true, disabled: true });
}

/**
 * A PATCH whose endpoint a 410 disables between its read and its write, and another change lands
 * before it returns: it answers the state it wrote (disabled); one enabling it again restarts it
 * after what its streams logged by then, as a PATCH after the 410 does, not from its old start.
 */
async function patchOverGone(deliveries: DeliveryStore): Promise<void> {
  const { wrapped, hook } = beforeWrite(deliveries);
  const { endpoints, hook: after, store } = interleaved(wrapped);
  const { endpoint } = await endpoints.create({ url: URL_OK, streams: ["orders"] });
  hook.beforePut = () => goneMeanwhile(deliveries, endpoint.id);
  after.interleave = () => endpoints.update(endpoint.id, { description: "another admin's" });
  const changed = await endpoints.update(endpoint.id, { description: "mine" });
  assert.deepEqual(
    [changed.version, changed.description, changed.disabled, changed.disabledReason],
    [2, "mine", true, "Endpoint answered 410 Gone"],
  );
  const stored = await endpoints.get(endpoint.id);
  assert.deepEqual([stored.version, stored.disabled], [3, true]);

  // Enabled again, it is disabled by a 410 before the enabling write: that write restarts it.
  await endpoints.update(endpoint.id, { disabled: false });
  const started = (await endpoints.get(endpoint.id)).startAfter.orders;
  hook.beforePut = async () => {
    await goneMeanwhile(deliveries, endpoint.id);
    await store.appendLog("orders", [{ type: "event.processed", timeMs: T0, event: { id: "1" } }]);
  };
  const enabled = await endpoints.update(endpoint.id, { disabled: false });
  assert.deepEqual([enabled.disabled, enabled.disabledReason], [false, null]);
  assert.notEqual(enabled.startAfter.orders, started);
  assert.equal(enabled.startAfter.orders, await store.lastLogId("orders"));
}

onBothStores(
  (kind) =>
    `EndpointRegistry.update() over a 410's disable landing between its read and write answers it and keeps it, or restarts the endpoint it enables (${kind})`,
  patchOverGone,
);

/**
 * A PATCH sending `"disabled": true` whose endpoint a 410 disables between its read and its
 * write: the endpoint stays disabled for the 410 (its reason is not replaced by the owner's), and
 * the answer is that state, as written with the PATCH's other fields.
 */
async function ownerDisableOverGone(deliveries: DeliveryStore): Promise<void> {
  const { wrapped, hook } = beforeWrite(deliveries);
  const { endpoints } = interleaved(wrapped);
  const { endpoint } = await endpoints.create({ url: URL_OK, streams: ["orders"] });
  hook.beforePut = () => goneMeanwhile(deliveries, endpoint.id);
  const changed = await endpoints.update(endpoint.id, { disabled: true, description: "mine" });
  assert.deepEqual(
    [changed.version, changed.description, changed.disabled, changed.disabledReason],
    [2, "mine", true, "Endpoint answered 410 Gone"],
  );
  const stored = await endpoints.get(endpoint.id);
  assert.deepEqual(
    [stored.version, stored.description, stored.disabled, stored.disabledReason],
    [2, "mine", true, "Endpoint answered 410 Gone"],
  );
}

onBothStores(
  (kind) =>
    `EndpointRegistry.update() sending disabled: true over a 410's disable landing between its read and write keeps the 410's reason (${kind})`,
  ownerDisableOverGone,
);

/**
 * A secret rotation whose endpoint a 410 disables between its read and its write: the new secret
 * is stored and the endpoint stays disabled for the 410; the rotation answers the version it wrote.
 */
async function rotationOverGone(deliveries: DeliveryStore): Promise<void> {
  const { wrapped, hook } = beforeWrite(deliveries);
  const { endpoints } = interleaved(wrapped);
  const { endpoint, secret: first } = await endpoints.create({ url: URL_OK, streams: ["orders"] });
  hook.beforePut = () => goneMeanwhile(deliveries, endpoint.id);
  const rotated = await endpoints.rotateSecret(endpoint.id, { versions: [1] });
  assert.equal(rotated.version, 2);
  const stored = await endpoints.get(endpoint.id);
  assert.deepEqual(
    [stored.version, stored.disabled, stored.disabledReason],
    [2, true, "Endpoint answered 410 Gone"],
  );
  assert.deepEqual(stored.secrets, [
    { secret: rotated.secret, expiresMs: null },
    { secret: first, expiresMs: rotated.previousExpiresMs },
  ]);
}

onBothStores(
  (kind) =>
    `EndpointRegistry.rotateSecret() over a 410's disable landing between its read and write rotates and keeps the disable (${kind})`,
  rotationOverGone,
);

Deno.test("EndpointRegistry answers a creation, change and rotation with what the store wrote: no read after the write", async () => {
  const reads: string[] = [];
  const counting = new Proxy(new MemoryDeliveryStore({ now: () => T0 }), {
    get(target, name) {
      const value = Reflect.get(target, name, target);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        if (name === "getEndpoint") reads.push(String(name));
        return value.apply(target, args);
      };
    },
  });
  const { endpoints } = interleaved(counting);
  const { endpoint } = await endpoints.create({ url: URL_OK });
  assert.deepEqual(reads, [], "create");
  const changed = await endpoints.update(endpoint.id, { description: "d" });
  assert.deepEqual([reads.length, changed.description, changed.version], [1, "d", 2]);
  const { version } = await endpoints.rotateSecret(endpoint.id);
  assert.deepEqual([reads.length, version], [2, 3]);
});

Deno.test("EndpointRegistry.create() whose write the store answers null though it wrote (a retry past the kept reply's life) answers the endpoint written, read back, or not found when deleted since", async () => {
  class RetriedPastItsReply extends MemoryDeliveryStore {
    override async putEndpoint(...args: Parameters<MemoryDeliveryStore["putEndpoint"]>) {
      await super.putEndpoint(...args);
      return null;
    }
  }
  const deliveries = new RetriedPastItsReply({ now: () => T0 });
  const { endpoints } = interleaved(deliveries);
  const { endpoint, secret } = await endpoints.create({ url: URL_OK, description: "d" });
  assert.deepEqual(endpoint, await deliveries.getEndpoint(endpoint.id));
  assert.deepEqual([endpoint.description, endpoint.version, endpoint.disabled], ["d", 1, false]);
  assert.deepEqual(endpoint.secrets, [{ secret, expiresMs: null }]);
  // Deleted by its id before it is read back: not found, not a TypeError.
  class DeletedBeforeRead extends MemoryDeliveryStore {
    override async putEndpoint(...args: Parameters<MemoryDeliveryStore["putEndpoint"]>) {
      await super.putEndpoint(...args);
      await this.deleteEndpoint(args[0].id);
      return null;
    }
  }
  await assert.rejects(
    interleaved(new DeletedBeforeRead({ now: () => T0 })).endpoints.create({ url: URL_OK }),
    WebhookNotFoundError,
  );
});

Deno.test("EndpointRegistry.rotateSecret() again within the overlap drops the oldest secret: at most two sign", async () => {
  const { endpoints, clock } = registry();
  const { endpoint } = await endpoints.create({ url: URL_OK });
  let last = "";
  let replaced = "";
  for (let i = 0; i < 5; i++) {
    clock.now += 1_000;
    replaced = last;
    const rotated = await endpoints.rotateSecret(endpoint.id);
    last = rotated.secret;
    assert.equal(rotated.previousExpiresMs, clock.now + SECRET_OVERLAP_MS);
  }
  assert.deepEqual((await endpoints.get(endpoint.id)).secrets, [
    { secret: last, expiresMs: null },
    { secret: replaced, expiresMs: clock.now + SECRET_OVERLAP_MS },
  ]);
});

Deno.test("EndpointRegistry.create() holds and reads the streams' logs together, at most 16 at a time, each held before its start is read: the same start as one by one", async () => {
  const names = Array.from({ length: 40 }, (_, i) => `s${String(i).padStart(2, "0")}`);
  const streams = compileConfig({
    streams: Object.fromEntries(names.map((name) => [name, {
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    }])),
  });
  const now = () => T0;
  const store = new MemoryStore({ now });
  // Some logs hold entries, the others none.
  for (const name of names.filter((_, i) => i % 3 === 0)) {
    await store.appendLog(name, [{ type: "event.processed", timeMs: T0, event: { name } }]);
  }
  const expected = Object.fromEntries(
    await Promise.all(names.map(async (name) => [name, await store.lastLogId(name)] as const)),
  );
  const calls: string[] = [];
  let inFlight = 0;
  let most = 0;
  const watched = new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (property !== "markDispatched" && property !== "lastLogId") {
        return typeof value === "function" ? value.bind(target) : value;
      }
      return async (name: string, ...rest: unknown[]) => {
        most = Math.max(most, ++inFlight);
        calls.push(`${String(property)} ${name}`);
        await new Promise((resolve) => setTimeout(resolve, 2));
        try {
          return await (value as (...args: unknown[]) => Promise<unknown>).call(
            target,
            name,
            ...rest,
          );
        } finally {
          inFlight -= 1;
          calls.push(`${String(property)} ${name} done`);
        }
      };
    },
  });
  const endpoints = new EndpointRegistry(new MemoryDeliveryStore({ now }), {
    store: watched,
    streams,
    now,
    policy: new UrlPolicy({
      allow: ["127.0.0.1"],
      resolve: () => Promise.reject(new Error("No DNS in tests")),
    }),
  });
  const listened = names.filter((_, i) => i % 2 === 0);
  const { endpoint } = await endpoints.create({ url: URL_OK, streams: listened });
  assert.deepEqual(endpoint.startAfter, expected);
  assert.deepEqual(Object.keys(endpoint.startAfter), names, "in the streams' order");
  assert.ok(most > 1 && most <= 16, `at most 16 calls at once, more than 1: ${most}`);
  for (const name of names) {
    const read = calls.indexOf(`lastLogId ${name}`);
    assert.ok(read >= 0, `${name}'s start read`);
    const held = calls.indexOf(`markDispatched ${name} done`);
    if (listened.includes(name)) assert.ok(held >= 0 && held < read, `${name} held before read`);
    else assert.equal(calls.indexOf(`markDispatched ${name}`), -1, `${name} not held`);
  }
});

/** A registry over a memory store whose log calls (`markDispatched`, `lastLogId`) are recorded. */
function watchedRegistry() {
  const now = () => T0;
  const store = new MemoryStore({ now });
  const calls: string[] = [];
  const watched = new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== "function") return value;
      if (property !== "markDispatched" && property !== "lastLogId") return value.bind(target);
      return (name: string, ...rest: unknown[]) => {
        calls.push(`${String(property)} ${name}`);
        return value.call(target, name, ...rest);
      };
    },
  });
  const endpoints = new EndpointRegistry(new MemoryDeliveryStore({ now }), {
    store: watched,
    streams: compileConfig(CONFIG),
    now,
    policy: new UrlPolicy({
      allow: ["127.0.0.1"],
      resolve: () => Promise.reject(new Error("No DNS in tests")),
    }),
  });
  return { endpoints, store, calls };
}

Deno.test("EndpointRegistry.update() adding streams, or all, holds each newly heard log and starts it after its last entry now; the streams it heard keep their starts", async () => {
  const { endpoints, store, calls } = watchedRegistry();
  const { endpoint } = await endpoints.create({ url: URL_OK, streams: ["orders"] });
  const other = (await endpoints.create({ url: URL_OK, streams: ["orders"] })).endpoint;
  assert.deepEqual(endpoint.startAfter, { orders: null, signups: null });
  for (const name of ["orders", "signups"]) {
    await store.appendLog(name, [{ type: "event.processed", timeMs: T0, event: { name } }]);
  }
  const signups = await store.lastLogId("signups");
  calls.length = 0;
  const listed = await endpoints.update(endpoint.id, { streams: ["orders", "signups"] });
  assert.deepEqual(listed.startAfter, { orders: null, signups });
  assert.deepEqual(calls, ["markDispatched signups", "lastLogId signups"]);
  calls.length = 0;
  const all = await endpoints.update(other.id, { streams: null });
  assert.deepEqual(all.startAfter, { orders: null, signups });
  assert.deepEqual(calls, ["markDispatched signups", "lastLogId signups"]);
  // Hearing no stream it did not: nothing read, the starts as they were.
  calls.length = 0;
  await store.appendLog("signups", [{ type: "event.processed", timeMs: T0, event: {} }]);
  assert.deepEqual((await endpoints.update(other.id, { streams: ["signups"] })).startAfter, {
    orders: null,
    signups,
  });
  assert.deepEqual(calls, []);
});

Deno.test("EndpointRegistry.update() refused for its batch holds no log and changes nothing, also when it adds streams or enables the endpoint again", async () => {
  const { endpoints, calls } = watchedRegistry();
  const { endpoint } = await endpoints.create({
    url: URL_OK,
    streams: ["orders"],
    eventTypes: ["window.closed"],
    disabled: true,
  });
  const badBatch = { maxEvents: 10, maxWaitMs: 1_000, eventTypes: ["alert.fired" as const] };
  calls.length = 0;
  for (const patch of [{ streams: null }, { streams: ["signups"] }, { disabled: false }]) {
    await assert.rejects(endpoints.update(endpoint.id, { ...patch, batch: badBatch }), (error) => {
      assert.ok(error instanceof InvalidEndpointError, String(error));
      assert.equal(error.field, "batch");
      return true;
    });
  }
  assert.deepEqual(calls, []);
  assert.deepEqual(await endpoints.get(endpoint.id), endpoint);
});
