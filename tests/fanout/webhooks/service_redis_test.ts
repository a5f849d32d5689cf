/**
 * The webhook service over Redis: two app instances sharing one Redis (one
 * Upstash bridge) deliver each result exactly once under concurrent sweeps
 * (whose sends overlap the next sweeps), a new instance picks up what an
 * earlier one could not deliver, what an alert costs in round trips, and, as on the memory
 * store, that a deleted endpoint's delivery is not found and that an endpoint changed to hear
 * more streams gets none of their results logged before the change, and that an endpoint
 * registered after a batch no ingest observer had work for gets the next batch's events at once;
 * that a PATCH racing a receiver's 410 keeps the disable and answers it (README's endpoints section);
 * and what deploy/README.md's rolling deploys list says of endpoints a release before e4aa3d6
 * registers, disables or deletes.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { RedisDeliveryStore } from "../../../src/store/mod.ts";
import { RedisStore } from "../../../src/store/redis/store.ts";
import { type RedisFixture, redisTest, restClient } from "../../_redis.ts";
import { sweepOnce } from "../../../src/fanout/sweep.ts";
import { Receiver } from "./_receiver.ts";
import { at, call, type Clock, ingest, register, setup, sweep, T0 } from "./_setup.ts";

function instance(fixture: RedisFixture, clock: Clock) {
  const redis = restClient(fixture);
  const now = () => clock.now;
  return setup({
    clock,
    store: new RedisStore(redis, { now }),
    deliveries: new RedisDeliveryStore(redis, { now }),
  });
}

redisTest(
  "two instances on one Redis deliver each window.closed and alert.fired exactly once",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const a = await instance(fixture, clock);
    const b = await instance(fixture, clock);
    const receiver = await Receiver.start(() => clock.now);
    try {
      const { secret } = await register(a.app, {
        url: receiver.url(),
        eventTypes: ["window.closed", "alert.fired"],
      });
      receiver.secrets = [secret];
      const countries = ["DE", "FR", "IT"];
      const events = Array.from({ length: 24 }, (_, i) => ({
        id: `e${i}`,
        ts: at(1 + i * 4),
        country: countries[i % 3],
        amount: i,
      }));
      // Every event goes to both instances at once: retried deliveries of one client.
      await Promise.all([
        ...events.map((event) => ingest(a.app, [event])),
        ...events.map((event) => ingest(b.app, [event])),
      ]);
      await ingest(a.app, [{ id: "tick", ts: at(200), country: "DE" }]);
      await Promise.all([a.webhooks.idle(), b.webhooks.idle()]);
      await Promise.all([sweep(a.app), sweep(b.app)]);
      await Promise.all([sweep(a.app), sweep(b.app)]);
      await Promise.all([a.webhooks.idle(), b.webhooks.idle()]);

      const closed = receiver.received.filter((item) => item.payload.type === "window.closed");
      const keys = closed.map((item) =>
        `${item.payload.data.counter}@${item.payload.data.start}/${
          JSON.stringify(item.payload.data.group)
        }`
      );
      assert.equal(new Set(keys).size, keys.length, `a window was delivered twice: ${keys.sort()}`);
      // Minutes 0 and 1 (events up to 93 s) close: 3 groups each for per_minute, 1 for amount.
      assert.equal(keys.length, 8, keys.sort().join("\n"));
      const perMinute = closed.filter((item) => item.payload.data.counter === "per_minute");
      assert.equal(perMinute.reduce((sum, item) => sum + item.payload.data.value, 0), 24);
      const alerts = receiver.received.filter((item) => item.payload.type === "alert.fired");
      const alertKeys = alerts.map((item) =>
        `${item.payload.data.start}/${item.payload.data.group.country}`
      );
      assert.deepEqual(alertKeys.sort(), [
        `${at(0)}/DE`,
        `${at(0)}/FR`,
        `${at(0)}/IT`,
        `${at(60)}/DE`,
        `${at(60)}/FR`,
        `${at(60)}/IT`,
      ]);
      const ids = receiver.received.map((item) => item.id);
      assert.equal(new Set(ids).size, ids.length, "no webhook-id was sent twice");
      assert.ok(receiver.received.every((item) => item.verifiedWith.length === 1));
    } finally {
      await a.close();
      await b.close();
      await receiver.close();
    }
  },
);

redisTest(
  "two instances on one Redis deliver each window.closed once in batches; a failed batch is retried by the other with the same webhook-id and body",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const a = await instance(fixture, clock);
    const b = await instance(fixture, clock);
    const receiver = await Receiver.start(() => clock.now);
    try {
      const batched = await call(a.app, "POST", "/v1/webhooks", {
        url: receiver.url("/batched"),
        eventTypes: ["window.closed"],
        filter: "data.counter == 'per_minute'",
        batch: { maxEvents: 2, maxWait: "1s" },
      });
      assert.equal(batched.status, 201, batched.text);
      const one = await register(a.app, {
        url: receiver.url("/one"),
        eventTypes: ["window.closed"],
      });
      receiver.secrets = [batched.body.secret, one.secret];
      receiver.respond = (request) =>
        request.path === "/batched" && receiver.on("/batched").length === 1
          ? new Response("broken", { status: 500 })
          : new Response(null, { status: 204 });
      const countries = ["DE", "FR", "IT"];
      const events = Array.from({ length: 24 }, (_, i) => ({
        id: `e${i}`,
        ts: at(1 + i * 4),
        country: countries[i % 3],
        amount: i,
      }));
      await Promise.all([
        ...events.map((event) => ingest(a.app, [event])),
        ...events.map((event) => ingest(b.app, [event])),
      ]);
      await ingest(a.app, [{ id: "tick", ts: at(200), country: "DE" }]);
      await Promise.all([sweep(a.app), sweep(b.app)]);
      await Promise.all([sweep(a.app), sweep(b.app)]);
      await Promise.all([a.webhooks.idle(), b.webhooks.idle()]);
      clock.now += 5_000;
      await sweep(b.app);
      await Promise.all([a.webhooks.idle(), b.webhooks.idle()]);

      const key = (data: { counter: string; start: string; group: unknown }) =>
        `${data.counter}@${data.start}/${JSON.stringify(data.group)}`;
      // Without batch: each of the 8 results once (minutes 0 and 1: 3 countries, 1 sum).
      const single = receiver.on("/one").map((item) => item.payload.data);
      assert.equal(single.length, 8);
      assert.equal(new Set(single.map(key)).size, 8);
      // With it: the 6 per_minute results, each once, in deliveries of at most 2.
      const posts = receiver.on("/batched");
      const failed = posts[0];
      const retried = posts.filter((item) => item.id === failed.id);
      assert.equal(retried.length, 2, "the failed batch went out once more");
      assert.equal(retried[1].body, failed.body);
      const delivered = posts.slice(1);
      assert.ok(delivered.every((item) => item.payload.data.length <= 2));
      const ids = delivered.map((item) => item.id);
      assert.equal(new Set(ids).size, ids.length, "no webhook-id was delivered twice");
      const items = delivered.flatMap((item) => item.payload.data);
      assert.deepEqual(
        items.map(key).sort(),
        single.filter((data) => data.counter === "per_minute").map(key).sort(),
      );
      assert.equal(items.reduce((sum: number, data: { value: number }) => sum + data.value, 0), 24);
      assert.ok(receiver.received.every((item) => item.verifiedWith.length === 1));
    } finally {
      await a.close();
      await b.close();
      await receiver.close();
    }
  },
);

redisTest(
  "a new instance on the same Redis sends what the previous one could not",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const first = await instance(fixture, clock);
    const receiver = await Receiver.start(() => clock.now);
    try {
      const { id, secret } = await register(first.app, { url: receiver.url() });
      receiver.secrets = [secret];
      await receiver.down();
      await ingest(first.app, [{ id: "1", ts: at(1), country: "DE" }]);
      await ingest(first.app, [{ id: "2", ts: at(75), country: "DE" }]);
      await sweep(first.app);
      await first.webhooks.idle();
      await first.close();

      const second = await instance(fixture, clock);
      try {
        await receiver.up();
        clock.now += 5_000;
        await sweep(second.app);
        await second.webhooks.idle();
        assert.equal(receiver.received.length, 1);
        assert.deepEqual(receiver.received[0].verifiedWith, [secret]);
        const res = await call(second.app, "GET", `/v1/webhooks/${id}/deliveries`);
        assert.equal(res.body.deliveries.length, 1);
        const [delivery] = res.body.deliveries;
        assert.equal(delivery.messageId, receiver.received[0].id);
        assert.equal(delivery.status, "succeeded");
        assert.deepEqual(
          delivery.attemptLog.map((item: { outcome: string }) => item.outcome),
          ["succeeded", "retrying"],
        );
      } finally {
        await second.close();
      }
    } finally {
      await receiver.close();
    }
  },
);

redisTest(
  "an admin sweep answers before a slow receiver does; a sweep on another instance meanwhile sends nothing again",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const a = await instance(fixture, clock);
    const b = await instance(fixture, clock);
    const receiver = await Receiver.start(() => clock.now);
    const order: string[] = [];
    const { promise: released, resolve: release } = Promise.withResolvers<void>();
    let timer: ReturnType<typeof setTimeout> | undefined;
    // A slow receiver: it answers after 3 s, or when the test releases it.
    const slow = new Promise<void>((resolve) => timer = setTimeout(resolve, 3_000));
    receiver.respond = async () => {
      await Promise.race([released, slow]);
      order.push("receiver answered");
      return new Response(null, { status: 204 });
    };
    try {
      const { id, secret } = await register(a.app, {
        url: receiver.url(),
        eventTypes: ["window.closed"],
        filter: "data.counter == 'per_minute'",
      });
      receiver.secrets = [secret];
      await ingest(a.app, [{ id: "1", ts: at(1), country: "DE" }]);
      await ingest(a.app, [{ id: "2", ts: at(75), country: "DE" }]);
      const reply = await sweep(a.app);
      order.push("sweep replied");
      assert.deepEqual(order, ["sweep replied"], "the sweep waited for the receiver");
      assert.deepEqual(reply.webhooks, { queued: 1 });
      await receiver.waitFor(1);
      assert.deepEqual((await sweep(b.app)).webhooks, { queued: 0 });
      release();
      await Promise.all([a.webhooks.idle(), b.webhooks.idle()]);
      assert.deepEqual(order, ["sweep replied", "receiver answered"]);
      assert.equal(receiver.received.length, 1);
      assert.deepEqual(receiver.received[0].verifiedWith, [secret]);
      const res = await call(b.app, "GET", `/v1/webhooks/${id}/deliveries`);
      assert.deepEqual(
        res.body.deliveries.map((item: { status: string; attempts: number }) => [
          item.status,
          item.attempts,
        ]),
        [["succeeded", 1]],
      );
    } finally {
      release();
      clearTimeout(timer);
      await a.close();
      await b.close();
      await receiver.close();
    }
  },
);

redisTest(
  "on Redis an alert costs two delivery store calls before its signed POST, and one without endpoints",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const now = () => clock.now;
    const options = { url: fixture.restUrl, token: fixture.restToken, enableTelemetry: false };
    let calls = 0;
    // Counts the delivery store's script calls: one EVALSHA each (and an EVAL after it the first
    // time this Redis sees the script).
    const counted = new Proxy(new Redis(options), {
      get(target, property) {
        const value = Reflect.get(target, property);
        if (property !== "evalsha") return value;
        return (...args: unknown[]) => {
          calls += 1;
          return value.apply(target, args);
        };
      },
    });
    const app = await setup({
      clock,
      store: new RedisStore(new Redis(options), { now }),
      deliveries: new RedisDeliveryStore(counted, { now }),
    });
    const receiver = await Receiver.start(() => clock.now);
    const callsBeforePost: number[] = [];
    receiver.respond = () => {
      callsBeforePost.push(calls);
      return new Response(null, { status: 204 });
    };
    try {
      await app.webhooks.refreshEndpoints();
      calls = 0;
      await ingest(app.app, [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE" })));
      await app.webhooks.idle();
      assert.equal(calls, 1, "no endpoint: the call that finds none is all");

      const { secret } = await register(app.app, {
        url: receiver.url(),
        eventTypes: ["alert.fired"],
      });
      receiver.secrets = [secret];
      await app.webhooks.idle();
      calls = 0;
      await ingest(app.app, [1, 2, 3].map((n) => ({ id: `fr${n}`, ts: at(n), country: "FR" })));
      await app.webhooks.idle();
      // Open (endpoints, lease, cursor), then store the page (lease given back, delivery claimed).
      assert.deepEqual(callsBeforePost, [2]);
      assert.deepEqual(receiver.received.map((item) => item.payload.data.group), [{
        country: "FR",
      }]);
      assert.deepEqual(receiver.received[0].verifiedWith, [secret]);
    } finally {
      await app.close();
      await receiver.close();
    }
  },
);

type App = Awaited<ReturnType<typeof setup>>;

/**
 * Registers `run` twice: on an app over the memory stores, and on one over Redis (a fresh
 * redis-server, the clock at `T0` + 10 min); `name` names each by its store's kind ("memory",
 * "Redis"). The app is closed after `run`, however it ends.
 */
function onBothStores(
  name: (kind: "memory" | "Redis") => string,
  run: (app: App) => Promise<void>,
) {
  Deno.test(name("memory"), async () => {
    const app = await setup();
    try {
      await run(app);
    } finally {
      await app.close();
    }
  });
  redisTest(name("Redis"), async (fixture) => {
    const app = await instance(fixture, { now: T0 + 600_000 });
    try {
      await run(app);
    } finally {
      await app.close();
    }
  });
}

/**
 * A delivery of an endpoint since deleted, retried: `404 delivery_not_found` on either store (the
 * memory store drops it with its endpoint; Redis leaves it to expire, unread), as for an unknown
 * delivery id.
 */
async function deletedEndpointDelivery(app: App) {
  const { id } = await register(app.app, { url: "http://127.0.0.1:9/refused" });
  const queued = await call(app.app, "POST", `/v1/webhooks/${id}/test`);
  assert.equal(queued.status, 202, queued.text);
  const deliveryId = queued.body.delivery.id;
  await app.webhooks.idle();
  const listed = await call(app.app, "GET", `/v1/webhooks/${id}/deliveries`);
  assert.deepEqual(listed.body.deliveries.map((item: { id: string }) => item.id), [deliveryId]);
  assert.equal((await call(app.app, "DELETE", `/v1/webhooks/${id}`)).status, 204);
  for (const retried of [deliveryId, "msg_none.ep_none"]) {
    const res = await call(app.app, "POST", `/v1/deliveries/${retried}/retry`);
    assert.equal(res.status, 404, retried);
    assert.deepEqual([res.body.error.code, res.body.error.message], [
      "delivery_not_found",
      `No delivery has id '${retried}'`,
    ], retried);
  }
}

onBothStores(
  (kind) =>
    `${kind} store: a deleted endpoint's delivery retried is 404 delivery_not_found${
      kind === "Redis" ? ", as on the memory store" : ""
    }`,
  deletedEndpointDelivery,
);

/**
 * A stream without alerts and without endpoints leaves the service's ingest observer idle, and
 * ingest skips it; an endpoint registered then gets the next batch's event.processed right after
 * that ingest (the observer's dispatch), before any sweep.
 */
async function endpointAfterIdleBatch(app: App) {
  const receiver = await Receiver.start(() => app.clock.now);
  try {
    const signups = app.streams.get("signups")!;
    assert.equal(app.webhooks.observer.idle?.(signups), true);
    await ingest(app.app, [{ id: "before", ts: at(1) }], "signups");
    await register(app.app, {
      url: receiver.url(),
      eventTypes: ["event.processed"],
      streams: ["signups"],
    });
    assert.equal(app.webhooks.observer.idle?.(signups), false);
    await ingest(app.app, [{ id: "after", ts: at(2) }], "signups");
    await app.webhooks.idle();
    assert.deepEqual(receiver.received.map((item) => item.payload.data.event.id), ["after"]);
  } finally {
    await receiver.close();
  }
}

onBothStores(
  (kind) =>
    `${kind} store: an endpoint registered after a batch no observer had work for gets the next batch's event.processed right after ingest${
      kind === "Redis" ? ", as on the memory store" : ""
    }`,
  endpointAfterIdleBatch,
);

/**
 * An endpoint changed (`PATCH`) to hear more streams, or all, starts on each stream it newly hears
 * as a registration does, after what that stream logged so far: a result logged before the change,
 * even one no dispatch took yet (another endpoint's batch holds the stream's dispatch), is not
 * sent to it, and what is logged after reaches it, on either store.
 */
async function patchedToMoreStreams(app: App) {
  const receiver = await Receiver.start(() => app.clock.now);
  try {
    await register(app.app, {
      url: receiver.url("/other"),
      eventTypes: ["event.processed"],
      streams: ["signups"],
      batch: { maxEvents: 10, maxWait: "2s" },
    });
    const listed = await register(app.app, {
      url: receiver.url("/listed"),
      eventTypes: ["event.processed"],
      streams: ["orders"],
    });
    const all = await register(app.app, {
      url: receiver.url("/all"),
      eventTypes: ["event.processed"],
      streams: ["orders"],
    });
    await ingest(app.app, [{ id: "before", ts: at(1) }], "signups");
    for (const [id, streams] of [[listed.id, ["orders", "signups"]], [all.id, null]] as const) {
      const res = await call(app.app, "PATCH", `/v1/webhooks/${id}`, { streams });
      assert.equal(res.status, 200, res.text);
    }
    await sweep(app.app, app.webhooks);
    assert.deepEqual(receiver.received.map((item) => item.path), ["/other"]);
    for (const id of [listed.id, all.id]) {
      const res = await call(app.app, "GET", `/v1/webhooks/${id}/deliveries`);
      assert.deepEqual(res.body.deliveries, [], id);
    }
    await ingest(app.app, [{ id: "after", ts: at(2) }], "signups");
    await sweep(app.app, app.webhooks);
    for (const path of ["/listed", "/all"]) {
      assert.deepEqual(
        receiver.received.filter((item) => item.path === path)
          .map((item) => item.payload.data.event.id),
        ["after"],
        path,
      );
    }
  } finally {
    await receiver.close();
  }
}

onBothStores(
  (kind) =>
    `${kind} store: an endpoint changed to hear more streams, or all, gets no result those streams logged before the change`,
  patchedToMoreStreams,
);

/** What {@linkcode registerDuringSweep} hands its `then`. */
interface SweepRegistration {
  /** The instance that swept. */
  a: App;
  clock: Clock;
  /** The receiver of the endpoint registered during the sweep. */
  late: Receiver;
  /** The ids of the endpoint registered before the sweep and of the one registered during it. */
  early: string;
  registered: string;
  /** The message ids of an endpoint's deliveries, sorted. */
  messageIds: (id: string) => Promise<string[]>;
}

/**
 * Two instances on one Redis, A's cached endpoint list stale: A's sweep lists the endpoints, then
 * B registers one (as a release before e4aa3d6 does with `olderRelease`) before that sweep's
 * closes log per_minute's windows of DE and FR; `then` checks what follows.
 */
async function registerDuringSweep(
  fixture: RedisFixture,
  options: { olderRelease: boolean; then: (race: SweepRegistration) => Promise<void> },
): Promise<void> {
  const clock: Clock = { now: T0 + 600_000 };
  const a = await instance(fixture, clock);
  const b = await instance(fixture, clock);
  const receiver = await Receiver.start(() => clock.now);
  const late = await Receiver.start(() => clock.now);
  try {
    const early = await register(a.app, { url: receiver.url(), streams: ["orders"] });
    await ingest(a.app, [
      { id: "1", ts: at(1), country: "DE" },
      { id: "2", ts: at(2), country: "FR" },
      { id: "tick", ts: at(75), country: "XX" },
    ]);
    // A's cached endpoint list is stale: its sweep's prepare() lists the endpoints again.
    clock.now += 10_000;
    let registered: { id: string; secret: string } | undefined;
    const registerLate = async () => {
      registered = await register(b.app, { url: late.url(), streams: ["orders"] });
    };
    await sweepOnce(a.streams.values(), a.store, {
      consumers: [{
        // B registers one once A's sweep listed the endpoints, before its closes log results.
        prepare: async () => {
          await a.webhooks.prepare();
          await (options.olderRelease ? asOlderRelease(fixture, registerLate) : registerLate());
        },
        sweep: () => a.webhooks.sweep(),
      }],
    });
    await Promise.all([a.webhooks.idle(), b.webhooks.idle()]);
    const messageIds = async (id: string): Promise<string[]> => {
      const res = await call(a.app, "GET", `/v1/webhooks/${id}/deliveries`);
      assert.equal(res.status, 200, res.text);
      return res.body.deliveries.map((delivery: { messageId: string }) => delivery.messageId)
        .sort();
    };
    await options.then({ a, clock, late, early: early.id, registered: registered!.id, messageIds });
  } finally {
    await Promise.all([a.close(), b.close()]);
    await Promise.all([receiver.close(), late.close()]);
  }
}

redisTest(
  "an endpoint another instance registers while a sweep closes windows gets the results that sweep logs after its registration",
  (fixture) =>
    registerDuringSweep(fixture, {
      olderRelease: false,
      then: async ({ late, early, registered, messageIds }) => {
        const expected = await messageIds(early);
        assert.equal(expected.length, 2, "per_minute's windows of DE and FR");
        assert.deepEqual(await messageIds(registered), expected);
        assert.equal(late.received.length, expected.length);
      },
    }),
);

/** deploy/README.md's rolling-deploy entry on webhook endpoints written by an older release. */
async function rollingDeployEntry(): Promise<string> {
  const text = await Deno.readTextFile(new URL("../../../deploy/README.md", import.meta.url));
  const section = text.slice(
    text.indexOf("## Rolling deploys"),
    text.indexOf("\n## ", 30 + text.indexOf("## Rolling deploys")),
  );
  const entry = section.split("\n- ").find((item) => item.startsWith("**Webhook endpoints"));
  assert.ok(entry, "deploy/README.md's rolling deploys list has an entry on webhook endpoints");
  return entry.replace(/\s+/g, " ");
}

/**
 * Runs `change` the way a release before e4aa3d6 makes it: the same keys written, the endpoint
 * list's version (`epv`) left as it was (that release neither writes nor reads it).
 */
async function asOlderRelease(fixture: RedisFixture, change: () => Promise<void>): Promise<void> {
  const redis = new Redis({
    url: fixture.restUrl,
    token: fixture.restToken,
    enableTelemetry: false,
    automaticDeserialization: false,
  });
  const key = "es:{wh}:epv";
  const before = await redis.get<string>(key);
  await change();
  assert.notEqual(await redis.get<string>(key), before, "the current release moved the version");
  if (before === null) await redis.del(key);
  else await redis.set(key, before);
}

redisTest(
  "deploy/README's rolling deploys: an endpoint a release before e4aa3d6 registers while a new instance's sweep closes windows misses the results that sweep logs; it gets those logged after the new instance lists the endpoints again",
  async (fixture) => {
    const entry = await rollingDeployEntry();
    for (
      const claim of [
        "through a release before e4aa3d6",
        "does not change the endpoint list's version",
        "never gets the results that dispatch logs after its registration",
        "at its next sweep once its list is 5 s old",
      ]
    ) assert.ok(entry.includes(claim), `${claim}: ${entry}`);
    await registerDuringSweep(fixture, {
      olderRelease: true,
      then: async ({ a, clock, late, early, registered, messageIds }) => {
        const minuteZero = await messageIds(early);
        assert.equal(minuteZero.length, 2, "per_minute's windows of DE and FR");
        // The sweep's lease call and stored page found the version unchanged: logged, not for it.
        assert.deepEqual(await messageIds(registered), []);
        assert.equal(late.received.length, 0);
        // A sweep of A with its endpoint list older than 5 s lists them again: the windows closed
        // then reach the late endpoint too. Minute 0's never do (no delivery to send or replay).
        await ingest(a.app, [{ id: "tock", ts: at(135), country: "XX" }]);
        clock.now += 10_000;
        await sweep(a.app, a.webhooks);
        const minuteOne = (await messageIds(early)).filter((id) => !minuteZero.includes(id));
        assert.equal(minuteOne.length, 1, "per_minute's window of XX");
        assert.deepEqual(await messageIds(registered), minuteOne);
        assert.equal(late.received.length, 1);
      },
    });
  },
);

redisTest(
  "deploy/README's rolling deploys: an endpoint a release before e4aa3d6 disables or deletes while a new instance's sweep closes windows gets that sweep's results, dead or never sent",
  async (fixture) => {
    const entry = await rollingDeployEntry();
    for (
      const claim of [
        "One disabled meanwhile gets that dispatch's results as `dead` deliveries",
        "which a replay once it is enabled again sends",
        "One deleted meanwhile gets deliveries that nobody sends or can read",
        "kept in Redis for their retention (7 days)",
      ]
    ) assert.ok(entry.includes(claim), `${claim}: ${entry}`);
    const raw = new Redis({
      url: fixture.restUrl,
      token: fixture.restToken,
      enableTelemetry: false,
      automaticDeserialization: false,
    });
    const clock: Clock = { now: T0 + 600_000 };
    const a = await instance(fixture, clock);
    const b = await instance(fixture, clock);
    const receiver = await Receiver.start(() => clock.now);
    try {
      const early = await register(a.app, { url: receiver.url("/early"), streams: ["orders"] });
      const doomed = await register(a.app, { url: receiver.url("/doomed"), streams: ["orders"] });
      const paused = await register(a.app, { url: receiver.url("/paused"), streams: ["orders"] });
      await ingest(a.app, [
        { id: "1", ts: at(1), country: "DE" },
        { id: "2", ts: at(2), country: "FR" },
        { id: "tick", ts: at(75), country: "XX" },
      ]);
      clock.now += 10_000;
      await sweepOnce(a.streams.values(), a.store, {
        consumers: [{
          // B, an older release, deletes one and disables another once A's sweep listed them.
          prepare: async () => {
            await a.webhooks.prepare();
            await asOlderRelease(fixture, async () => {
              const deleted = await call(b.app, "DELETE", `/v1/webhooks/${doomed.id}`);
              assert.equal(deleted.status, 204, deleted.text);
              const disabled = await call(b.app, "PATCH", `/v1/webhooks/${paused.id}`, {
                disabled: true,
              });
              assert.equal(disabled.status, 200, disabled.text);
            });
          },
          sweep: () => a.webhooks.sweep(),
        }],
      });
      await Promise.all([a.webhooks.idle(), b.webhooks.idle()]);
      const deliveries = async (id: string) => {
        const res = await call(a.app, "GET", `/v1/webhooks/${id}/deliveries`);
        assert.equal(res.status, 200, res.text);
        return res.body.deliveries.map((delivery: { messageId: string; status: string }) =>
          `${delivery.messageId} ${delivery.status}`
        ).sort();
      };
      const sent = await deliveries(early.id);
      assert.equal(sent.length, 2, "per_minute's windows of DE and FR");
      assert.deepEqual(receiver.received.map((item) => item.path), ["/early", "/early"]);
      // Disabled: the same results, dead; a replay once enabled again sends them.
      assert.deepEqual(
        await deliveries(paused.id),
        sent.map((line: string) => line.replace(/ succeeded$/, " dead")),
      );
      const enabled = await call(a.app, "PATCH", `/v1/webhooks/${paused.id}`, { disabled: false });
      assert.equal(enabled.status, 200, enabled.text);
      const replay = await call(a.app, "POST", `/v1/webhooks/${paused.id}/replay`, { since: 0 });
      assert.equal(replay.status, 202, replay.text);
      assert.equal(replay.body.requeued, 2);
      await sweep(a.app, a.webhooks);
      assert.equal(receiver.received.filter((item) => item.path === "/paused").length, 2);
      // Deleted: deliveries made for it that nobody sends or reads, kept their retention.
      assert.equal(receiver.received.filter((item) => item.path === "/doomed").length, 0);
      const gone = await call(a.app, "GET", `/v1/webhooks/${doomed.id}/deliveries`);
      assert.equal(gone.status, 404, gone.text);
      const left = (await raw.keys("es:{wh}:*")).filter((key) => key.includes(doomed.id)).sort();
      assert.deepEqual(left.filter((key) => key.startsWith("es:{wh}:d:")).length, 2, `${left}`);
      assert.ok(left.includes(`es:{wh}:ix:${doomed.id}`), `${left}`);
      for (const key of left) {
        const ttl = await raw.pttl(key);
        assert.ok(ttl > 6 * 86_400_000 && ttl <= 7 * 86_400_000, `${key} ${ttl}`);
      }
    } finally {
      await Promise.all([a.close(), b.close()]);
      await receiver.close();
    }
  },
);

redisTest(
  "two instances on one Redis: an endpoint's If-Match holds across them, and of two PATCHes racing with the same tag one applies and one is 412",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const a = await instance(fixture, clock);
    const b = await instance(fixture, clock);
    const send = async (
      app: typeof a.app,
      method: string,
      path: string,
      ifMatch: string,
      body?: unknown,
    ) => {
      const res = await app.request(path, {
        method,
        headers: { "If-Match": ifMatch, "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, etag: res.headers.get("ETag"), body: text && JSON.parse(text) };
    };
    try {
      const { id } = await register(a.app, { url: "http://127.0.0.1:9/h" });
      const path = `/v1/webhooks/${id}`;
      const read = await a.app.request(path);
      assert.equal(read.headers.get("ETag"), '"1"');
      await read.body?.cancel();
      // Changed on b: a's tag is stale there.
      assert.equal((await send(b.app, "PATCH", path, '"1"', { description: "b" })).status, 200);
      const stale = await send(a.app, "PATCH", path, '"1"', { headers: { "X-A": "1" } });
      assert.equal(stale.status, 412);
      assert.equal(stale.body.error.code, "precondition_failed");
      assert.equal((await send(a.app, "DELETE", path, '"1"')).status, 412);
      // Racing on both instances with the version both read: the store compares it.
      const racing = await Promise.all([
        send(a.app, "PATCH", path, '"2"', { headers: { "X-A": "1" } }),
        send(b.app, "PATCH", path, '"2"', { headers: { "X-B": "1" } }),
      ]);
      assert.deepEqual(racing.map((res) => res.status).sort(), [200, 412]);
      const winner = racing.find((res) => res.status === 200)!;
      const now = (await call(b.app, "GET", path)).body;
      assert.deepEqual(now.headerNames, winner.body.headerNames);
      assert.equal(winner.etag, '"3"');
      assert.equal((await send(b.app, "DELETE", path, '"3"')).status, 204);
      assert.equal((await call(a.app, "GET", path)).status, 404);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  },
);

redisTest(
  "Redis store: a disable by a receiver's 410 does not move the endpoint's version (README): the ETag read before still enables it with If-Match, on the other instance too",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const a = await instance(fixture, clock);
    const b = await instance(fixture, clock);
    const receiver = await Receiver.start(() => clock.now);
    try {
      receiver.respond = () => new Response("gone", { status: 410 });
      const { id } = await register(a.app, { url: receiver.url(), eventTypes: ["window.closed"] });
      const path = `/v1/webhooks/${id}`;
      const before = await a.app.request(path);
      await before.body?.cancel();
      assert.equal(before.headers.get("ETag"), '"1"');
      clock.now += 1_000;
      await ingest(a.app, [{ id: "a", ts: at(1), country: "DE" }]);
      await ingest(a.app, [{ id: "tick", ts: at(75), country: "XX" }]);
      await sweep(a.app, a.webhooks);
      assert.ok(receiver.received.length > 0, "the receiver was sent a delivery");
      for (const app of [a.app, b.app]) {
        const disabled = await app.request(path);
        const body = await disabled.json();
        assert.equal(body.disabled, true);
        assert.equal(body.disabledReason, "Endpoint answered 410 Gone");
        assert.equal(disabled.headers.get("ETag"), '"1"');
      }
      const enabled = await b.app.request(path, {
        method: "PATCH",
        headers: { "If-Match": '"1"', "Content-Type": "application/json" },
        body: JSON.stringify({ disabled: false }),
      });
      const body = await enabled.json();
      assert.equal(enabled.status, 200, JSON.stringify(body));
      assert.equal(body.disabled, false);
      assert.equal(body.disabledReason, null);
      assert.equal(enabled.headers.get("ETag"), '"2"');
    } finally {
      await Promise.all([a.close(), b.close()]);
      await receiver.close();
    }
  },
);

redisTest(
  "Redis store: rotate-secret answers the version it wrote and takes If-Match across instances (a stale tag is 412, nothing rotated); If-None-Match: * is 412 on PATCH, DELETE and rotate-secret while the endpoint exists, 404 once deleted",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const a = await instance(fixture, clock);
    const b = await instance(fixture, clock);
    const send = async (
      app: typeof a.app,
      method: string,
      path: string,
      headers: Record<string, string>,
    ) => {
      const res = await app.request(path, {
        method,
        headers: method === "PATCH" ? { ...headers, "Content-Type": "application/json" } : headers,
        body: method === "PATCH" ? "{}" : undefined,
      });
      const text = await res.text();
      return { status: res.status, etag: res.headers.get("ETag"), body: text && JSON.parse(text) };
    };
    try {
      const { id } = await register(a.app, { url: "http://127.0.0.1:9/h" });
      const path = `/v1/webhooks/${id}`;
      const rotate = `${path}/rotate-secret`;
      const first = await send(a.app, "POST", rotate, { "If-Match": '"1"' });
      assert.equal(first.status, 200);
      assert.equal(first.etag, '"2"');
      // a's tag "1" is stale on b: refused, and nothing rotated (a rotation moves the version).
      const stale = await send(b.app, "POST", rotate, { "If-Match": '"1"' });
      assert.equal(stale.status, 412);
      assert.equal(stale.body.error.code, "precondition_failed");
      assert.equal((await send(b.app, "GET", path, {})).etag, '"2"');
      // Racing with the version both read: the store compares it, one rotation applies.
      const racing = await Promise.all([
        send(a.app, "POST", rotate, { "If-Match": '"2"' }),
        send(b.app, "POST", rotate, { "If-Match": '"2"' }),
      ]);
      assert.deepEqual(racing.map((res) => res.status).sort(), [200, 412]);
      assert.equal(racing.find((res) => res.status === 200)!.etag, '"3"');
      assert.equal((await send(a.app, "GET", path, {})).etag, '"3"');
      for (const method of ["PATCH", "DELETE", "POST"]) {
        const target = method === "POST" ? rotate : path;
        const refused = await send(b.app, method, target, { "If-None-Match": "*" });
        assert.equal(refused.status, 412, method);
        assert.equal(
          refused.body.error.message,
          `Webhook endpoint '${id}' exists (it is at version 3): If-None-Match: * holds only while it does not exist`,
        );
      }
      assert.equal((await send(a.app, "GET", path, {})).etag, '"3"', "nothing changed");
      assert.equal((await send(a.app, "DELETE", path, { "If-Match": '"3"' })).status, 204);
      for (const method of ["PATCH", "DELETE", "POST"]) {
        const target = method === "POST" ? rotate : path;
        const gone = await send(b.app, method, target, { "If-None-Match": "*" });
        assert.equal(gone.status, 404, method);
        assert.equal(gone.body.error.code, "webhook_not_found");
      }
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  },
);

redisTest(
  "a PATCH that read its endpoint before the receiver's 410 disabled it keeps the disable and answers it, though another change lands before it returns",
  async (fixture) => {
    const clock: Clock = { now: T0 + 600_000 };
    const redis = restClient(fixture);
    const now = () => clock.now;
    // What lands between the PATCH's read and its write, and after its write before it returns.
    const hooks: { beforePut?: () => Promise<unknown>; afterPut?: () => Promise<unknown> } = {};
    const deliveries = new Proxy(new RedisDeliveryStore(redis, { now }), {
      get(target, name) {
        if (name === "putEndpoint") {
          return async (...args: Parameters<RedisDeliveryStore["putEndpoint"]>) => {
            const before = hooks.beforePut;
            hooks.beforePut = undefined;
            await before?.();
            const written = await target.putEndpoint(...args);
            const after = written ? hooks.afterPut : undefined;
            if (after) hooks.afterPut = undefined;
            await after?.();
            return written;
          };
        }
        const value = Reflect.get(target, name, target);
        return typeof value === "function" ? value.bind(target) : value;
      },
    });
    const a = await setup({ clock, store: new RedisStore(redis, { now }), deliveries });
    const receiver = await Receiver.start(() => clock.now);
    try {
      let answer410 = () => {};
      const gone = new Promise<void>((resolve) => answer410 = resolve);
      receiver.respond = async () => {
        await gone;
        return new Response("gone", { status: 410 });
      };
      const { id } = await register(a.app, { url: receiver.url(), eventTypes: ["window.closed"] });
      await ingest(a.app, [{ id: "1", ts: at(1), country: "DE" }]);
      await ingest(a.app, [{ id: "tick", ts: at(75), country: "DE" }]);
      await sweep(a.app);
      await receiver.waitFor(1);
      hooks.beforePut = async () => {
        answer410();
        await a.webhooks.idle();
      };
      hooks.afterPut = () => call(a.app, "PATCH", `/v1/webhooks/${id}`, { description: "other" });
      const patched = await call(a.app, "PATCH", `/v1/webhooks/${id}`, { description: "mine" });
      assert.equal(patched.status, 200, patched.text);
      assert.deepEqual(
        [patched.body.description, patched.body.disabled, patched.body.disabledReason],
        ["mine", true, "Endpoint answered 410 Gone"],
      );
      const stored = await call(a.app, "GET", `/v1/webhooks/${id}`);
      assert.deepEqual([stored.body.description, stored.body.disabled], ["other", true]);
    } finally {
      await a.close();
      await receiver.close();
    }
  },
);
