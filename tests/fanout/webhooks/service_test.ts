/**
 * The webhook service end to end, in process: an app with a webhook service
 * over memory stores, a real receiver on localhost verifying every delivery
 * with `npm:standardwebhooks`, time on an injected clock.
 */
import assert from "node:assert/strict";
import type { OpenAPIHono } from "@hono/zod-openapi";
import { withContext } from "@logtape/logtape";
import { sweepOnce } from "../../../src/fanout/sweep.ts";
import { UrlPolicy } from "../../../src/fanout/webhooks/ssrf.ts";
import type {
  DeliveryCallOptions,
  DeliveryStore,
  DispatchOpening,
  Endpoint,
  OpenDispatchOptions,
  StoredPage,
  StoredPageResult,
} from "../../../src/store/deliveries.ts";
import { MemoryDeliveryStore } from "../../../src/store/mod.ts";
import { MemoryStore } from "../../../src/store/memory/store.ts";
import {
  type Store,
  StoreRequestTooLargeError,
  StoreUnavailableError,
} from "../../../src/store/types.ts";
import { jsonLines, writtenLogs } from "../../_logs.ts";
import { Receiver } from "./_receiver.ts";
import {
  ADMIN_KEY,
  at,
  call,
  type Clock,
  ingest,
  READ_KEY,
  register,
  setup,
  type SetupOptions,
  sweep,
  T0,
} from "./_setup.ts";

const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;

/** Runs a test with an app, a webhook service and a receiver on the same clock. */
async function withApp(
  options: SetupOptions,
  run: (ctx: Awaited<ReturnType<typeof setup>> & { receiver: Receiver }) => Promise<void>,
) {
  const ctx = await setup(options);
  const receiver = await Receiver.start(() => ctx.clock.now);
  try {
    await run({ ...ctx, receiver });
  } finally {
    await ctx.close();
    await receiver.close();
  }
}

/**
 * Ingests events in the first minute, one at 75 s to pass the lateness bound,
 * and sweeps; the sweep's sends may still be running (await `webhooks.idle()`).
 */
async function closeFirstMinute(app: OpenAPIHono, countries = ["DE"]) {
  if (countries.length > 0) {
    await ingest(app, countries.map((country, i) => ({ id: `e${i}`, ts: at(i + 1), country })));
  }
  await ingest(app, [{ id: "tick", ts: at(75), country: "XX" }]);
  return await sweep(app);
}

async function deliveriesOf(app: OpenAPIHono, id: string, query = "") {
  const res = await call(app, "GET", `/v1/webhooks/${id}/deliveries${query}`);
  assert.equal(res.status, 200, res.text);
  return res.body.deliveries;
}

function advance(clock: Clock, ms: number) {
  clock.now += ms;
}

Deno.test("window.closed reaches the receiver once per group, signed and verifiable", async () => {
  await withApp({}, async ({ app, webhooks, receiver, clock }) => {
    const { secret } = await register(app, { url: receiver.url() });
    receiver.secrets = [secret];
    await ingest(app, [
      { id: "1", ts: at(1), country: "DE", amount: 5 },
      { id: "2", ts: at(2), country: "DE", amount: 7 },
      { id: "3", ts: at(3), country: "FR", amount: 1 },
    ]);
    await ingest(app, [{ id: "4", ts: at(75), country: "DE", amount: 1 }]);
    await sweep(app, webhooks);
    await sweep(app, webhooks);
    await webhooks.idle();
    const closed = receiver.received.filter((item) => item.payload.type === "window.closed");
    assert.deepEqual(
      closed.map((item) => [
        item.payload.data.counter,
        item.payload.data.group,
        item.payload.data.value,
      ]).sort((a, b) => JSON.stringify(a) < JSON.stringify(b) ? -1 : 1),
      [
        ["amount", {}, 13],
        ["per_minute", { country: "DE" }, 2],
        ["per_minute", { country: "FR" }, 1],
      ],
    );
    for (const item of receiver.received) {
      assert.deepEqual(item.verifiedWith, [secret], `delivery ${item.id} must verify`);
      assert.match(item.id, /^msg_orders_\d+-\d+$/);
      assert.equal(item.timestamp, Math.floor(clock.now / 1000));
      assert.equal(item.headers.get("content-type"), "application/json");
    }
    assert.equal(new Set(receiver.received.map((item) => item.id)).size, receiver.received.length);
    const amount = closed.find((item) => item.payload.data.counter === "amount")!;
    assert.deepEqual(amount.payload, {
      type: "window.closed",
      timestamp: amount.payload.timestamp,
      data: {
        stream: "orders",
        counter: "amount",
        aggregate: "sum",
        group: {},
        start: at(0),
        end: at(60),
        value: 13,
      },
    });
  });
});

Deno.test("alert.fired reaches the receiver right after ingest, once per window and group", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const { secret } = await register(app, { url: receiver.url(), eventTypes: ["alert.fired"] });
    receiver.secrets = [secret];
    await ingest(app, [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE" })));
    await webhooks.idle();
    assert.equal(receiver.received.length, 1, "fired before any sweep");
    await ingest(app, [4, 5].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE" })));
    await ingest(app, [6, 7, 8].map((n) => ({ id: `fr${n}`, ts: at(n), country: "FR" })));
    await ingest(app, [{ id: "next", ts: at(61), country: "DE" }]);
    await webhooks.idle();
    await closeFirstMinute(app);
    await sweep(app, webhooks);
    await webhooks.idle();
    const fired = receiver.received.map((item) => item.payload);
    assert.deepEqual(
      fired.map((payload) => [payload.data.alert, payload.data.group, payload.data.start]).sort(),
      [["busy", { country: "DE" }, at(0)], ["busy", { country: "FR" }, at(0)]],
    );
    assert.equal(fired[0].type, "alert.fired");
    assert.equal(fired[0].data.value, 3);
    assert.ok(receiver.received.every((item) => item.verifiedWith.length === 1));
  });
});

/** `inner`, noting the name of each delivery store call as it starts. */
function noting(inner: DeliveryStore, notes: string[]): DeliveryStore {
  return new Proxy(inner, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        notes.push(String(property));
        return value.apply(target, args);
      };
    },
  });
}

Deno.test("an alert's delivery is sent two delivery store calls after it fires: the lease with the endpoints, then the page with the claim", async () => {
  const notes: string[] = [];
  const deliveries = noting(new MemoryDeliveryStore({ now: () => T0 }), notes);
  await withApp({ deliveries }, async ({ app, webhooks, receiver }) => {
    const { secret } = await register(app, { url: receiver.url(), eventTypes: ["alert.fired"] });
    receiver.secrets = [secret];
    let beforePost: string[] = [];
    receiver.respond = () => {
      beforePost = [...notes];
      return new Response(null, { status: 204 });
    };
    await webhooks.idle();
    notes.length = 0;
    await ingest(app, [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE" })));
    await webhooks.idle();
    assert.equal(receiver.received.length, 1);
    assert.equal(receiver.received[0].verifiedWith.length, 1);
    // On a remote store each call is a round trip on the way to the receiver. The endpoints are
    // listed fresh, in the call that takes the lease; the lease goes back, and the delivery is
    // claimed, with the page.
    assert.deepEqual(beforePost, ["openDispatch", "storePage"]);
  });
});

Deno.test("an alert with no webhook endpoint costs one delivery store call, and takes no lease", async () => {
  const notes: string[] = [];
  const deliveries = noting(new MemoryDeliveryStore({ now: () => T0 }), notes);
  await withApp({ deliveries }, async ({ app, webhooks }) => {
    await webhooks.refreshEndpoints();
    notes.length = 0;
    await ingest(app, [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE" })));
    await webhooks.idle();
    assert.deepEqual(notes, ["openDispatch"]);
  });
});

Deno.test("an alert that fires while this process's sweep dispatches its stream is dispatched after the sweep, not after a lease retry", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  let refused = 0;
  const { promise: leaseRefused, resolve: onRefused } = Promise.withResolvers<void>();
  // Counts dispatches of this process that find the stream's lease held.
  class CountsRefusals extends MemoryDeliveryStore {
    override async openDispatch(...args: Parameters<DeliveryStore["openDispatch"]>) {
      const opened = await super.openDispatch(...args);
      if (opened.lease === null && opened.endpoints?.length !== 0) {
        refused += 1;
        onRefused();
      }
      return opened;
    }
  }
  const { promise: sweepReading, resolve: onSweepReading } = Promise.withResolvers<void>();
  let sweeping = false;
  // The sweep's dispatch of orders, holding its lease, waits while the alert fires: until the
  // alert's dispatch finds the lease held, or (when it waits its turn instead) a while.
  class SweepWaits extends MemoryStore {
    override async readLog(...args: Parameters<Store["readLog"]>) {
      if (sweeping && args[0] === "orders") {
        sweeping = false;
        onSweepReading();
        await Promise.race([leaseRefused, new Promise((resolve) => setTimeout(resolve, 300))]);
      }
      return await super.readLog(...args);
    }
  }
  await withApp(
    {
      clock,
      store: new SweepWaits({ now: () => clock.now }),
      deliveries: new CountsRefusals({ now: () => clock.now }),
    },
    async ({ app, webhooks, receiver }) => {
      const { secret } = await register(app, { url: receiver.url(), eventTypes: ["alert.fired"] });
      receiver.secrets = [secret];
      await webhooks.idle();
      sweeping = true;
      const swept = webhooks.sweep();
      await sweepReading;
      await ingest(app, [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE" })));
      await swept;
      await webhooks.idle();
      assert.equal(refused, 0, "no dispatch of this process found the lease held");
      assert.deepEqual(receiver.received.map((item) => item.payload.data.group), [{
        country: "DE",
      }]);
      assert.equal(receiver.received[0].verifiedWith.length, 1);
    },
  );
});

Deno.test("a receiver answering 500 gets the same webhook-id on every retry until it succeeds", async () => {
  await withApp({}, async ({ app, webhooks, receiver, clock }) => {
    const { id, secret } = await register(app, { url: receiver.url() });
    receiver.secrets = [secret];
    receiver.respond = (_, index) =>
      index < 2
        ? new Response(`broken ${index}`, { status: 500 })
        : new Response("thanks", { status: 200 });
    await closeFirstMinute(app);
    await webhooks.idle();
    assert.equal(receiver.received.length, 1);
    const [first] = await deliveriesOf(app, id, "?status=retrying");
    assert.equal(first.nextAttemptAt, new Date(clock.now + 5 * SECOND).toISOString());
    advance(clock, 5 * SECOND - 1);
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 1, "not due before 5 s");
    advance(clock, 1);
    await webhooks.idle();
    assert.equal(receiver.received.length, 1, "due, it waits for the next sweep");
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 2);
    advance(clock, 5 * MINUTE);
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 3);
    assert.equal(new Set(receiver.received.map((item) => item.id)).size, 1, "same webhook-id");
    assert.deepEqual(
      receiver.received.map((item) => item.timestamp),
      [T0 + 600_000, T0 + 605_000, T0 + 905_000].map((ms) => Math.floor(ms / 1000)),
      "the timestamp is that of each attempt",
    );
    assert.ok(receiver.received.every((item) => item.verifiedWith.length === 1));
    const [delivery] = await deliveriesOf(app, id);
    assert.equal(delivery.status, "succeeded");
    assert.equal(delivery.attempts, 3);
    assert.equal(delivery.messageId, receiver.received[0].id);
    assert.deepEqual(
      delivery.attemptLog.map((item: { status: number; responseExcerpt: string }) => [
        item.status,
        item.responseExcerpt,
      ]),
      [[200, "thanks"], [500, "broken 1"], [500, "broken 0"]],
    );
    assert.ok(delivery.attemptLog.every((item: { durationMs: number }) => item.durationMs >= 0));
  });
});

Deno.test("a receiver that is down and then up gets the delivery with the same webhook-id", async () => {
  await withApp({}, async ({ app, webhooks, receiver, clock }) => {
    const { id, secret } = await register(app, { url: receiver.url() });
    receiver.secrets = [secret];
    await receiver.down();
    await closeFirstMinute(app);
    await webhooks.idle();
    const [failed] = await deliveriesOf(app, id);
    assert.equal(failed.status, "retrying");
    assert.equal(failed.attemptLog[0].status, null);
    assert.match(failed.attemptLog[0].error, /refused/i);
    await receiver.up();
    advance(clock, 5 * SECOND);
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 1);
    assert.equal(receiver.received[0].id, failed.messageId);
    assert.deepEqual(receiver.received[0].verifiedWith, [secret]);
    assert.equal((await deliveriesOf(app, id))[0].status, "succeeded");
  });
});

Deno.test("Retry-After on 429 and 503 decides the next attempt", async () => {
  await withApp({}, async ({ app, webhooks, receiver, clock }) => {
    const { id, secret } = await register(app, { url: receiver.url() });
    receiver.secrets = [secret];
    const answers = [
      new Response(null, { status: 429, headers: { "Retry-After": "120" } }),
      new Response(null, { status: 503, headers: { "Retry-After": "600" } }),
      new Response(null, { status: 204 }),
    ];
    receiver.respond = () => answers.shift()!;
    await closeFirstMinute(app);
    await webhooks.idle();
    assert.equal(
      (await deliveriesOf(app, id))[0].nextAttemptAt,
      new Date(clock.now + 120 * SECOND).toISOString(),
    );
    advance(clock, 119 * SECOND);
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 1, "the 5 s schedule step yields to Retry-After");
    advance(clock, SECOND);
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 2);
    advance(clock, 599 * SECOND);
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 2);
    advance(clock, SECOND);
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 3);
    assert.equal((await deliveriesOf(app, id))[0].status, "succeeded");
  });
});

Deno.test("a Retry-After shorter than the schedule does not hurry it, so throttling uses up no attempts", async () => {
  await withApp({}, async ({ app, webhooks, receiver, clock }) => {
    const { id, secret } = await register(app, { url: receiver.url() });
    receiver.secrets = [secret];
    receiver.respond = () => new Response(null, { status: 429, headers: { "Retry-After": "1" } });
    await closeFirstMinute(app);
    await webhooks.idle();
    const [first] = await deliveriesOf(app, id);
    assert.equal(first.nextAttemptAt, new Date(clock.now + 5 * SECOND).toISOString());
    for (let second = 1; second <= 4; second++) {
      advance(clock, SECOND);
      await sweep(app, webhooks);
    }
    assert.equal(receiver.received.length, 1, "not sent again after Retry-After's 1 s");
    advance(clock, SECOND);
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 2);
    const [second] = await deliveriesOf(app, id);
    assert.equal(second.status, "retrying");
    assert.equal(second.nextAttemptAt, new Date(clock.now + 5 * MINUTE).toISOString());
  });
});

Deno.test("a send that fails before any request is a failed attempt, retried on schedule", async () => {
  class BrokenPolicy extends UrlPolicy {
    broken = false;
    override check(url: string) {
      // As node:https threw when the process lacked a permission.
      return this.broken ? Promise.reject(new TypeError("no permission")) : super.check(url);
    }
  }
  const policy = new BrokenPolicy({ allow: ["127.0.0.1"] });
  await withApp({ policy }, async ({ app, webhooks, receiver }) => {
    const { id } = await register(app, { url: receiver.url() });
    policy.broken = true;
    await closeFirstMinute(app);
    await webhooks.idle();
    const [delivery] = await deliveriesOf(app, id);
    assert.equal(delivery.status, "retrying");
    assert.equal(delivery.attemptLog.length, 1);
    assert.equal(delivery.attemptLog[0].error, "Cannot send: no permission");
  });
});

Deno.test("after the last attempt a delivery is dead; replay and retry send it again", async () => {
  await withApp({}, async ({ app, webhooks, receiver, clock }) => {
    const { id, secret } = await register(app, { url: receiver.url() });
    receiver.secrets = [secret];
    let healthy = false;
    receiver.respond = () => new Response(null, { status: healthy ? 204 : 500 });
    const createdAt = new Date(clock.now).toISOString();
    await closeFirstMinute(app);
    await webhooks.idle();
    for (
      const delay of [5 * SECOND, 5 * MINUTE, 30 * MINUTE, 2 * HOUR, 5 * HOUR, 10 * HOUR, 10 * HOUR]
    ) {
      advance(clock, delay);
      await sweep(app, webhooks);
    }
    assert.equal(receiver.received.length, 8);
    const dead = await deliveriesOf(app, id, "?status=dead");
    assert.equal(dead.length, 1);
    assert.equal(dead[0].attempts, 8);
    assert.equal(dead[0].nextAttemptAt, null);
    assert.equal(dead[0].attemptLog[0].outcome, "dead");
    advance(clock, 24 * HOUR);
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 8, "a dead delivery is not retried by itself");

    // A time past the millisecond the delivery was created in is after it (read rounded up, as a
    // counter query bound is): the dead delivery is not replayed.
    assert.match(dead[0].createdAt, /\.\d{3}Z$/);
    const pastTheMilli = await call(app, "POST", `/v1/webhooks/${id}/replay`, {
      since: dead[0].createdAt.replace(/Z$/, "0001Z"),
    });
    assert.equal(pastTheMilli.status, 202, pastTheMilli.text);
    assert.deepEqual(pastTheMilli.body, { requeued: 0 });

    healthy = true;
    const replay = await call(app, "POST", `/v1/webhooks/${id}/replay`, { since: createdAt });
    assert.equal(replay.status, 202, replay.text);
    assert.deepEqual(replay.body, { requeued: 1 });
    await webhooks.idle();
    assert.equal(receiver.received.length, 9);
    assert.equal(receiver.received[8].id, dead[0].messageId);
    assert.deepEqual(receiver.received[8].verifiedWith, [secret]);
    assert.equal((await deliveriesOf(app, id))[0].status, "succeeded");

    const retry = await call(app, "POST", `/v1/deliveries/${dead[0].id}/retry`);
    assert.equal(retry.status, 202, retry.text);
    assert.equal(retry.body.delivery.status, "pending");
    await webhooks.idle();
    assert.equal(receiver.received.length, 10);
    assert.equal(receiver.received[9].id, dead[0].messageId);

    const nothing = await call(app, "POST", `/v1/webhooks/${id}/replay`, {
      since: new Date(clock.now + 1).toISOString(),
    });
    assert.deepEqual(nothing.body, { requeued: 0 });
    // Epoch milliseconds as a JSON number, as in events.
    const asNumber = await call(app, "POST", `/v1/webhooks/${id}/replay`, { since: clock.now + 1 });
    assert.equal(asNumber.status, 202, JSON.stringify(asNumber.body));
    assert.deepEqual(asNumber.body, { requeued: 0 });
    const tooFar = await call(app, "POST", `/v1/webhooks/${id}/replay`, { since: 1e16 });
    assert.equal(tooFar.status, 400);
    const soon = await call(app, "POST", `/v1/webhooks/${id}/replay`, { since: "soon" });
    assert.equal(soon.status, 400);
    assert.equal(soon.body.error.message, "Invalid request body since: not a time: soon");
    const unknown = await call(app, "POST", "/v1/deliveries/nope/retry");
    assert.equal(unknown.status, 404);
    assert.equal(unknown.body.error.code, "delivery_not_found");
    assert.match(unknown.body.error.message, /No delivery has id 'nope'/);
  });
});

Deno.test("410 Gone disables the endpoint; re-enabled it gets deliveries again, not those of results written while it was disabled", async () => {
  await withApp({}, async ({ app, webhooks, receiver, clock }) => {
    const { id, secret } = await register(app, { url: receiver.url() });
    receiver.secrets = [secret];
    receiver.respond = () => new Response("gone", { status: 410 });
    advance(clock, SECOND);
    await closeFirstMinute(app);
    await webhooks.idle();
    assert.equal(receiver.received.length, 1);
    const endpoint = await call(app, "GET", `/v1/webhooks/${id}`);
    assert.equal(endpoint.body.disabled, true);
    assert.equal(endpoint.body.disabledReason, "Endpoint answered 410 Gone");
    // No change of its settings (README): its ETag, the version an admin's If-Match names, stays.
    const tagged = await app.request(`/v1/webhooks/${id}`);
    await tagged.body?.cancel();
    assert.equal(tagged.headers.get("ETag"), '"1"');
    // Disabled is a change, as by PATCH: updatedAt is when the 410 came.
    assert.equal(endpoint.body.updatedAt, new Date(clock.now).toISOString());
    assert.notEqual(endpoint.body.updatedAt, endpoint.body.createdAt);
    assert.equal((await deliveriesOf(app, id))[0].status, "dead");
    await ingest(app, [{ id: "later", ts: at(130), country: "DE" }]);
    await sweep(app, webhooks);
    await webhooks.idle();
    assert.equal(receiver.received.length, 1, "a disabled endpoint gets nothing");
    const test = await call(app, "POST", `/v1/webhooks/${id}/test`);
    assert.equal(test.status, 409);
    assert.match(test.body.error.message, /is disabled; enable it first/);

    receiver.respond = () => new Response(null, { status: 204 });
    const enabled = await call(app, "PATCH", `/v1/webhooks/${id}`, { disabled: false });
    assert.equal(enabled.status, 200, enabled.text);
    assert.equal(enabled.body.disabled, false);
    assert.equal(enabled.body.disabledReason, null);
    await ingest(app, [{ id: "much later", ts: at(200), country: "DE" }]);
    await sweep(app, webhooks);
    await webhooks.idle();
    assert.ok(receiver.received.length > 1);
    assert.equal(receiver.received.at(-1)!.payload.data.start, at(120));
    // The window that closed while it was disabled is not sent after it is enabled again.
    assert.deepEqual(
      receiver.received.filter((item) => item.payload.data.start === at(60)),
      [],
    );
    assert.deepEqual(
      (await deliveriesOf(app, id)).filter((item: { payload: { data: { start: string } } }) =>
        item.payload?.data?.start === at(60)
      ),
      [],
    );
  });
});

Deno.test("an endpoint enabled again gets no delivery of a result logged while it was disabled, even one not yet dispatched when it was enabled", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    // Another endpoint batching event.processed holds the stream's dispatch for its maxWait.
    await register(app, {
      url: receiver.url("/other"),
      eventTypes: ["event.processed"],
      batch: { maxEvents: 10, maxWait: "2s" },
    });
    const { id } = await register(app, {
      url: receiver.url("/enabled-again"),
      eventTypes: ["event.processed"],
      disabled: true,
    });
    await ingest(app, [{ id: "while-disabled", ts: at(1), country: "DE" }]);
    // Enabled before that dispatch: the event was logged while it was disabled all the same.
    const enabled = await call(app, "PATCH", `/v1/webhooks/${id}`, { disabled: false });
    assert.equal(enabled.status, 200, enabled.text);
    await sweep(app, webhooks);
    assert.deepEqual(receiver.received.map((item) => item.path), ["/other"]);
    assert.deepEqual(await deliveriesOf(app, id), []);
    // What is logged once it is enabled reaches it.
    await ingest(app, [{ id: "enabled", ts: at(2), country: "DE" }]);
    await sweep(app, webhooks);
    assert.deepEqual(
      receiver.received.filter((item) => item.path === "/enabled-again")
        .map((item) => item.payload.data.event.id),
      ["enabled"],
    );
  });
});

Deno.test("a rate-limited endpoint gets its deliveries at its rateLimit, not one burst a sweep", async () => {
  // Real time: the bucket refills as the clock runs, and no sweep runs here.
  const clock = {
    get now() {
      return Date.now();
    },
  } as Clock;
  await withApp({ clock }, async ({ app, webhooks, receiver }) => {
    await register(app, {
      url: receiver.url(),
      eventTypes: ["event.processed"],
      rateLimit: 4,
    });
    const events = Array.from({ length: 8 }, (_, i) => ({ id: `r${i}`, country: "DE" }));
    await ingest(app, events);
    await webhooks.idle();
    // The burst: one second's worth.
    assert.equal(receiver.received.length, 4);
    // The rest at 4/s, about 1 s later, without a sweep.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      receiver.waitFor(8),
      new Promise((resolve) => timer = setTimeout(resolve, 3_000)),
    ]);
    clearTimeout(timer);
    assert.equal(receiver.received.length, 8);
  });
});

Deno.test("an event.late goes out at once to an endpoint whose batch holds its event.processed: maxWait holds only event.processed", async () => {
  await withApp({}, async ({ app, receiver }) => {
    await ingest(app, [{ id: "on-time", ts: at(100), country: "DE" }]);
    await register(app, {
      url: receiver.url(),
      eventTypes: ["event.processed", "event.late"],
      batch: { maxEvents: 10, maxWait: "1m" },
    });
    const late = await ingest(app, [{ id: "late", ts: at(1), country: "DE" }]);
    assert.equal(late.late, 1);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      receiver.waitFor(1),
      new Promise((resolve) => timer = setTimeout(resolve, 3_000)),
    ]);
    clearTimeout(timer);
    assert.deepEqual(receiver.received.map((item) => item.payload.type), ["event.late"]);
  });
});

Deno.test("an endpoint failing continuously for the configured period is disabled", async () => {
  await withApp({ disableAfterMs: MINUTE }, async ({ app, webhooks, receiver, clock }) => {
    const { id } = await register(app, { url: receiver.url() });
    receiver.respond = () => new Response(null, { status: 500 });
    await closeFirstMinute(app);
    await webhooks.idle();
    advance(clock, 5 * SECOND);
    await sweep(app, webhooks);
    assert.equal((await call(app, "GET", `/v1/webhooks/${id}`)).body.disabled, false);
    assert.equal(
      (await call(app, "GET", `/v1/webhooks/${id}`)).body.failingSince,
      new Date(clock.now - 5 * SECOND).toISOString(),
    );
    advance(clock, 5 * MINUTE);
    await sweep(app, webhooks);
    const endpoint = (await call(app, "GET", `/v1/webhooks/${id}`)).body;
    assert.equal(endpoint.disabled, true);
    assert.equal(endpoint.disabledReason, "Every attempt failed for 1 min");
  });
});

Deno.test("an endpoint disabled by a 410 or by failing for the configured period is said once, at warning", async () => {
  await withApp({ disableAfterMs: MINUTE }, async ({ app, webhooks, receiver, clock }) => {
    await writtenLogs(async (lines) => {
      const gone = await register(app, { url: receiver.url("/gone") });
      const failing = await register(app, { url: receiver.url("/failing") });
      receiver.respond = (request) =>
        request.path === "/gone"
          ? new Response("gone", { status: 410 })
          : new Response(null, { status: 500 });
      await closeFirstMinute(app);
      await webhooks.idle();
      advance(clock, 5 * SECOND);
      await sweep(app, webhooks);
      advance(clock, 5 * MINUTE);
      await sweep(app, webhooks);
      await webhooks.idle();
      advance(clock, 5 * MINUTE);
      await sweep(app, webhooks);
      await webhooks.idle();
      const said = jsonLines(lines, "edgestream.webhooks").filter((line) =>
        /is disabled/.test(line.message)
      );
      assert.deepEqual(
        said.map((line) => [line.level, line.endpoint, line.reason]).sort(),
        [
          ["warning", gone.id, "Endpoint answered 410 Gone"],
          ["warning", failing.id, "Every attempt failed for 1 min"],
        ].sort(),
      );
      assert.match(
        said[0].message,
        /^Webhook endpoint (ep_\w+) is disabled: .*; it gets no deliveries until it is enabled again \(PATCH \/v1\/webhooks\/\1 with disabled: false\)$/,
      );
    });
  });
});

Deno.test("a rotated secret signs alongside the new one for 24 h, then stops", async () => {
  await withApp({}, async ({ app, webhooks, receiver, clock }) => {
    const { id, secret: oldSecret } = await register(app, { url: receiver.url() });
    const rotated = await call(app, "POST", `/v1/webhooks/${id}/rotate-secret`);
    assert.equal(rotated.status, 200, rotated.text);
    const newSecret = rotated.body.secret;
    assert.match(newSecret, /^whsec_/);
    assert.notEqual(newSecret, oldSecret);
    assert.equal(
      rotated.body.previousSecretExpiresAt,
      new Date(clock.now + 24 * HOUR).toISOString(),
    );
    receiver.secrets = [oldSecret, newSecret];
    await closeFirstMinute(app);
    await webhooks.idle();
    assert.equal(receiver.received[0].signature.split(" ").length, 2);
    assert.deepEqual(receiver.received[0].verifiedWith, [oldSecret, newSecret]);
    assert.equal(
      (await call(app, "GET", `/v1/webhooks/${id}`)).body.previousSecretExpiresAt,
      rotated.body.previousSecretExpiresAt,
    );

    advance(clock, 24 * HOUR);
    await ingest(app, [{ id: "day2", ts: at(130), country: "DE" }]);
    await ingest(app, [{ id: "day2 tick", ts: at(200), country: "DE" }]);
    await sweep(app, webhooks);
    await webhooks.idle();
    const last = receiver.received.at(-1)!;
    assert.equal(last.payload.data.start, at(120));
    assert.equal(last.signature.split(" ").length, 1);
    assert.deepEqual(last.verifiedWith, [newSecret], "the old secret no longer signs");
    assert.equal((await call(app, "GET", `/v1/webhooks/${id}`)).body.previousSecretExpiresAt, null);
  });
});

Deno.test("filters: event types, streams and a CEL filter over the payload", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    await register(app, { url: receiver.url("/alerts"), eventTypes: ["alert.fired"] });
    await register(app, { url: receiver.url("/signups"), streams: ["signups"] });
    await register(app, {
      url: receiver.url("/big"),
      filter:
        "payload.type == 'window.closed' && data.counter == 'per_minute' && data.value >= 2.0",
    });
    await register(app, {
      url: receiver.url("/events"),
      eventTypes: ["event.processed"],
      filter: "data.event.country == 'FR'",
    });
    await ingest(app, [
      { id: "1", ts: at(1), country: "DE" },
      { id: "2", ts: at(2), country: "DE" },
      { id: "3", ts: at(3), country: "DE" },
      { id: "4", ts: at(4), country: "FR" },
    ]);
    await ingest(app, [{ id: "s1", ts: at(5) }, { id: "s2", ts: at(80) }], "signups");
    await closeFirstMinute(app, []);
    await webhooks.idle();
    const summary = (path: string) =>
      receiver.on(path).map((item) =>
        `${item.payload.type}:${item.payload.data.stream}:${
          item.payload.data.group?.country ?? item.payload.data.event?.id ?? "-"
        }`
      ).sort();
    assert.deepEqual(summary("/alerts"), ["alert.fired:orders:DE"]);
    assert.deepEqual(summary("/signups"), ["window.closed:signups:-"]);
    assert.deepEqual(summary("/big"), ["window.closed:orders:DE"]);
    assert.deepEqual(summary("/events"), ["event.processed:orders:4"]);
  });
});

Deno.test("event.processed can be batched: data is an array of up to maxEvents events", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const { secret } = await register(app, {
      url: receiver.url(),
      eventTypes: ["event.processed"],
      batch: { maxEvents: 2, maxWait: "10ms" },
    });
    receiver.secrets = [secret];
    await ingest(app, [1, 2, 3].map((n) => ({ id: `e${n}`, ts: at(n), country: "DE" })));
    await webhooks.idle();
    const batches = receiver.received.map((item) => item.payload);
    assert.deepEqual(
      batches.map((payload) => payload.data.map((item: { event: { id: string } }) => item.event.id))
        .sort(),
      [["e1", "e2"], ["e3"]],
      "deliveries go out concurrently, so they are compared in event order",
    );
    assert.ok(receiver.received.every((item) => item.verifiedWith.length === 1));
  });
});

Deno.test("window.closed can be batched: up to maxEvents results per delivery, each as one delivery would carry it, filtered one by one", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    // maxWait holds no window.closed: the sweep that closes the window dispatches it.
    const batched = await call(app, "POST", "/v1/webhooks", {
      url: receiver.url("/batched"),
      eventTypes: ["window.closed"],
      filter: "data.counter == 'per_minute' && data.group.country != 'FR'",
      batch: { maxEvents: 2, maxWait: "1m" },
    });
    assert.equal(batched.status, 201, batched.text);
    assert.deepEqual(batched.body.batch, {
      maxEvents: 2,
      maxWait: "1m",
      eventTypes: ["window.closed"],
    });
    const one = await register(app, { url: receiver.url("/one"), eventTypes: ["window.closed"] });
    receiver.secrets = [batched.body.secret, one.secret];
    const { webhooks: queued } = await closeFirstMinute(app, ["DE", "FR", "IT", "ES"]);
    await webhooks.idle();
    // Without batch: one delivery per result, as before (one per country; the events carry no
    // amount to sum).
    const single = receiver.on("/one").map((item) => item.payload);
    assert.equal(single.length, 4);
    assert.ok(single.every((payload) => !Array.isArray(payload.data)));
    // With it: the 3 results its filter passes, in 2 deliveries of at most 2.
    const batches = receiver.on("/batched");
    assert.equal(queued.queued, 4 + 2);
    assert.deepEqual(batches.map((item) => item.payload.data.length).sort(), [1, 2]);
    assert.ok(batches.every((item) => item.payload.type === "window.closed"));
    assert.ok(receiver.received.every((item) => item.verifiedWith.length === 1));
    const items = batches.flatMap((item) => item.payload.data);
    const byCountry = (data: { group: { country?: string } }) => data.group.country ?? "-";
    assert.deepEqual(items.map(byCountry).sort(), ["DE", "ES", "IT"]);
    // Each item is the data one delivery of that result carries.
    for (const item of items) {
      assert.deepEqual(
        item,
        single.find((payload) =>
          payload.data.counter === "per_minute" && byCountry(payload.data) === byCountry(item)
        )!.data,
      );
    }
    const listed = await deliveriesOf(app, batched.body.id);
    assert.equal(listed.length, 2);
    assert.ok(listed.every((item: { eventType: string }) => item.eventType === "window.closed"));
  });
});

Deno.test("a batch of window.closed that failed is retried with the same webhook-id and body", async () => {
  await withApp({}, async ({ app, webhooks, receiver, clock }) => {
    const { id, secret } = await register(app, {
      url: receiver.url(),
      eventTypes: ["window.closed"],
      batch: { maxEvents: 10, maxWait: "1s" },
    });
    receiver.secrets = [secret];
    receiver.respond = (_, index) =>
      index === 0 ? new Response("broken", { status: 500 }) : new Response(null, { status: 204 });
    await closeFirstMinute(app, ["DE", "FR", "IT"]);
    await webhooks.idle();
    assert.equal(receiver.received.length, 1);
    advance(clock, 5 * SECOND);
    await sweep(app, webhooks);
    assert.equal(receiver.received.length, 2);
    const [first, retry] = receiver.received;
    assert.equal(retry.id, first.id);
    assert.equal(retry.body, first.body);
    assert.equal(first.payload.data.length, 3, "one result per country");
    assert.ok(receiver.received.every((item) => item.verifiedWith.length === 1));
    const [delivery] = await deliveriesOf(app, id);
    assert.equal(delivery.status, "succeeded");
    assert.equal(delivery.attempts, 2);
  });
});

Deno.test("batch without eventTypes on an endpoint taking no event.processed batches its window.closed and alert.fired", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const created = await call(app, "POST", "/v1/webhooks", {
      url: receiver.url(),
      batch: { maxEvents: 100, maxWait: "1s" },
    });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.body.batch.eventTypes, ["window.closed", "alert.fired"]);
    receiver.secrets = [created.body.secret];
    // 3 events of DE and of FR in one request fire the `busy` alert (count >= 3) for both.
    await ingest(
      app,
      ["DE", "FR"].flatMap((country) =>
        [1, 2, 3].map((n) => ({ id: `${country}${n}`, ts: at(n), country }))
      ),
    );
    await ingest(app, [{ id: "tick", ts: at(75), country: "XX" }]);
    await sweep(app, webhooks);
    const alerts = receiver.received.filter((item) => item.payload.type === "alert.fired");
    assert.ok(alerts.every((item) => Array.isArray(item.payload.data)));
    assert.deepEqual(
      alerts.flatMap((item) =>
        item.payload.data.map((data: { alert: string; group: { country: string } }) =>
          `${data.alert}:${data.group.country}`
        )
      ).sort(),
      ["busy:DE", "busy:FR"],
    );
    const closed = receiver.received.filter((item) => item.payload.type === "window.closed");
    assert.equal(closed.length, 1, "the close's 2 results in one delivery");
    assert.equal(closed[0].payload.data.length, 2);
    assert.ok(receiver.received.every((item) => item.verifiedWith.length === 1));
  });
});

Deno.test("a batch waits up to maxWait, but not while another endpoint of the stream takes events one by one", async () => {
  const batch = { maxEvents: 100, maxWait: "1m" };
  // Alone, the batched endpoint gets nothing yet: its batch is held open.
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const { secret } = await register(app, {
      url: receiver.url("/batched"),
      eventTypes: ["event.processed"],
      batch,
    });
    receiver.secrets = [secret];
    await ingest(app, [{ id: "e1", ts: at(1), country: "DE" }]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    assert.equal(receiver.on("/batched").length, 0);
    await webhooks.close();
  });
  // Beside an endpoint without batch, the stream is dispatched at once: the batch goes too.
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const started = Date.now();
    const one = await register(app, { url: receiver.url("/one"), eventTypes: ["event.processed"] });
    const batched = await register(app, {
      url: receiver.url("/batched"),
      eventTypes: ["event.processed"],
      batch,
    });
    receiver.secrets = [one.secret, batched.secret];
    await ingest(app, [{ id: "e1", ts: at(1), country: "DE" }]);
    await webhooks.idle();
    assert.equal(receiver.on("/one").length, 1);
    assert.deepEqual(
      receiver.on("/batched").map((item) =>
        item.payload.data.map((entry: { event: { id: string } }) => entry.event.id)
      ),
      [["e1"]],
    );
    assert.ok(Date.now() - started < 30_000, "not after maxWait");
  });
});

Deno.test("registration refuses URLs that reach internal addresses, naming the address", async () => {
  await withApp({
    allow: [],
    resolve: (host) =>
      host === "internal.example.com"
        ? Promise.resolve(["10.0.0.7"])
        : Promise.reject(new Error("NXDOMAIN")),
  }, async ({ app }) => {
    const cases: Array<[string, RegExp]> = [
      ["https://127.0.0.1/hook", /loopback address: 127\.0\.0\.1/],
      ["https://10.0.0.1/hook", /private address: 10\.0\.0\.1/],
      ["https://169.254.169.254/latest/meta-data/", /link-local address: 169\.254\.169\.254/],
      ["https://[::1]/hook", /loopback address: ::1/],
      ["https://[::ffff:127.0.0.1]/hook", /loopback address: ::ffff:7f00:1/],
      ["https://100.64.0.1/hook", /carrier-grade NAT address: 100\.64\.0\.1/],
      ["https://[fc00::1]/hook", /unique-local address: fc00::1/],
      ["https://internal.example.com/hook", /resolves to a private address: 10\.0\.0\.7/],
      [
        "http://example.com/hook",
        /must use https; http is allowed only for hosts EDGESTREAM_WEBHOOK_ALLOW lists, or for every host with EDGESTREAM_WEBHOOK_ALLOW_HTTP=true$/,
      ],
      ["https://93.184.216.34:0/hook", /port must be 1 to 65535, got 0/],
    ];
    for (const [url, message] of cases) {
      const res = await call(app, "POST", "/v1/webhooks", { url });
      assert.equal(res.status, 400, url);
      assert.equal(res.body.error.code, "invalid_webhook", url);
      assert.match(res.body.error.message, /^Cannot register webhook as 'url' /, url);
      assert.match(res.body.error.message, message, url);
    }
    assert.deepEqual((await call(app, "GET", "/v1/webhooks")).body, {
      webhooks: [],
      nextCursor: null,
    });
  });
});

Deno.test("registration refuses localhost with the real resolver", async () => {
  const { resolveWithDns } = await import("../../../src/fanout/webhooks/ssrf.ts");
  await withApp({ allow: [], resolve: resolveWithDns }, async ({ app }) => {
    const res = await call(app, "POST", "/v1/webhooks", { url: "https://localhost:9443/hook" });
    assert.equal(res.status, 400);
    assert.match(
      res.body.error.message,
      /resolves only to internal addresses: 127\.0\.0\.1 \(loopback\), ::1 \(loopback\); EDGESTREAM_WEBHOOK_ALLOW can allow them$/,
    );
  });
});

Deno.test("a host that resolves to an internal address at delivery time is not contacted", async () => {
  const records: Record<string, string[]> = { "hooks.example.com": ["93.184.216.34"] };
  await withApp({
    allow: [],
    resolve: (host) => Promise.resolve(records[host] ?? []),
  }, async ({ app, webhooks }) => {
    const { id } = await register(app, { url: "https://hooks.example.com/in" });
    records["hooks.example.com"] = ["169.254.169.254"];
    await closeFirstMinute(app);
    await webhooks.idle();
    const [delivery] = await deliveriesOf(app, id);
    assert.equal(delivery.status, "retrying");
    assert.equal(delivery.attemptLog[0].status, null);
    assert.equal(
      delivery.attemptLog[0].error,
      "Refused: 'url' resolves to a link-local address: 169.254.169.254; EDGESTREAM_WEBHOOK_ALLOW can allow it",
    );
  });
});

Deno.test("other bad input: unknown stream, bad filter, reserved or twice-named header, unknown id", async () => {
  await withApp({}, async ({ app, receiver }) => {
    const url = receiver.url();
    const cases: Array<[unknown, RegExp]> = [
      [
        { url, streams: ["nope"] },
        /'streams' names an unknown stream: nope; streams are: orders, signups/,
      ],
      [{ url, filter: "payload.type ==" }, /'filter' is not valid: Invalid expression/],
      [{ url, filter: "1 + 1" }, /'filter' is not valid: .*must return a bool, returns int/],
      // 15 patterns of 1,003 instructions, 40,003 with their classes' ranges: 0.35–1.2 s to
      // compile, per request.
      [
        {
          url,
          filter: Array.from(
            { length: 15 },
            (_, i) => `payload.type.matches("^[\\\\p{L}\\\\p{N}\\\\p{S}\\\\p{P}]{1000}|${i}")`,
          ).join("||"),
        },
        /'filter' is not valid: .*its matches\(\) patterns would compile to 40005 instructions together, past the 16000 an expression may have \(a character class counts 1 more/,
      ],
      [{ url, headers: { "Webhook-Id": "x" } }, /header 'Webhook-Id' is set by edgestream/],
      // node:http (a host name's deliveries) refuses a Trailer on a body of known length: every
      // delivery to such a URL failed with "Trailers are invalid with this transfer encoding".
      [
        { url, headers: { Trailer: "x-sum" } },
        /^Cannot register webhook as header 'Trailer' cannot be sent: a delivery's body has a Content-Length, so it has no trailers$/,
      ],
      [{ url, headers: { "x-a": "b\r\nc" } }, /holds a line break/],
      // Neither fetch nor node:http sends it: every delivery would fail.
      [{ url, headers: { "x-a": "b\x01c" } }, /header 'x-a' holds a control character \(U\+0001\)/],
      // Two that differ only in case: only one would be sent.
      [
        { url, headers: { "X-A": "a", "x-a": "b" } },
        /^Cannot register webhook as headers 'X-A' and 'x-a' are one header \(names are case-insensitive\)$/,
      ],
      // fetch cannot send it: every delivery would fail.
      [{ url, headers: { "x-u": "日本" } }, /header 'x-u' is not a valid header value/],
      // Slower than one delivery in 1,000 s: its bucket's expiry outgrew Redis's integers, and
      // claiming failed for every endpoint.
      [{ url, rateLimit: 1e-15 }, /rateLimit/],
      [{ url, eventTypes: ["webhook.test"] }, /Invalid request body eventTypes\[0\]: /],
      [{ url, surprise: true }, /^Invalid request body: Unrecognized key: "surprise"$/],
      [{ url, batch: { maxEvents: 5, maxWait: "soon" } }, /batch\.maxWait/],
      // batch groups window.closed, alert.fired and event.processed; event.late alone has none.
      [
        { url, eventTypes: ["event.late"], batch: { maxEvents: 5, maxWait: "1s" } },
        /'batch' groups window\.closed, alert\.fired and event\.processed deliveries and 'eventTypes' \(event\.late\) has none/,
      ],
      // The types it groups are types the endpoint takes.
      [
        {
          url,
          eventTypes: ["window.closed"],
          batch: { maxEvents: 5, maxWait: "1s", eventTypes: ["window.closed", "alert.fired"] },
        },
        /'batch' groups alert\.fired \('batch\.eventTypes': window\.closed, alert\.fired\), which 'eventTypes' \(window\.closed\) lacks/,
      ],
      [
        { url, batch: { maxEvents: 5, maxWait: "1s", eventTypes: ["event.late"] } },
        /Invalid request body batch\.eventTypes\[0\]/,
      ],
    ];
    for (const [body, message] of cases) {
      const res = await call(app, "POST", "/v1/webhooks", body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.match(res.body.error.message, message, JSON.stringify(body));
    }
    // Up to U+00FF fetch sends it, as Latin-1, but node:http (to a host name) as UTF-8: refused,
    // on registration and on change.
    const latin = await call(app, "POST", "/v1/webhooks", { url, headers: { "x-l": "café" } });
    assert.equal(latin.status, 400);
    assert.equal(
      latin.body.error.message,
      "Cannot register webhook as header 'x-l' is not a valid header value (only characters up to U+007E; encode others, e.g. percent-encoding)",
    );
    const ascii = await call(app, "POST", "/v1/webhooks", { url, headers: { "x-l": "cafe" } });
    assert.equal(ascii.status, 201);
    const changed = await call(app, "PATCH", `/v1/webhooks/${ascii.body.id}`, {
      headers: { "x-l": "café" },
    });
    assert.equal(changed.status, 400);
    assert.equal(changed.body.error.code, "invalid_webhook");
    // A change that would leave batch grouping a type the endpoint no longer takes is refused too.
    const batched = await call(app, "POST", "/v1/webhooks", {
      url,
      eventTypes: ["event.processed"],
      batch: { maxEvents: 5, maxWait: "1s" },
    });
    assert.equal(batched.status, 201);
    const narrowed = await call(app, "PATCH", `/v1/webhooks/${batched.body.id}`, {
      eventTypes: ["window.closed"],
    });
    assert.equal(narrowed.status, 400);
    assert.match(
      narrowed.body.error.message,
      /^Cannot change webhook as 'batch' groups event\.processed \('batch\.eventTypes': event\.processed\), which 'eventTypes' \(window\.closed\) lacks: add it there, or send 'batch' with 'eventTypes' it takes, or 'batch': null$/,
    );
    const cased = await call(app, "PATCH", `/v1/webhooks/${batched.body.id}`, {
      headers: { "X-Tenant": "a", "x-tenant": "b" },
    });
    assert.equal(cased.status, 400);
    assert.match(cased.body.error.message, /^Cannot change webhook as headers 'X-Tenant' and /);
    const trailer = await call(app, "PATCH", `/v1/webhooks/${batched.body.id}`, {
      headers: { trailer: "x-sum" },
    });
    assert.equal(trailer.status, 400);
    assert.match(
      trailer.body.error.message,
      /^Cannot change webhook as header 'trailer' cannot be sent: /,
    );
    for (
      const [method, path] of [
        ["GET", "/v1/webhooks/ep_nope"],
        ["PATCH", "/v1/webhooks/ep_nope"],
        ["DELETE", "/v1/webhooks/ep_nope"],
        ["POST", "/v1/webhooks/ep_nope/rotate-secret"],
        ["POST", "/v1/webhooks/ep_nope/test"],
        ["GET", "/v1/webhooks/ep_nope/deliveries"],
      ]
    ) {
      const res = await call(
        app,
        method,
        path,
        method === "PATCH" ? { description: "x" } : undefined,
      );
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.deepEqual(res.body, {
        error: {
          code: "webhook_not_found",
          message: "No webhook endpoint has id 'ep_nope'",
          requestId: res.body.error.requestId,
        },
      });
      assert.equal(typeof res.body.error.requestId, "string");
    }
  });
});

Deno.test("secrets and header values never appear outside the create and rotate replies", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const created = await call(app, "POST", "/v1/webhooks", {
      url: receiver.url(),
      headers: { Authorization: "Bearer receiver-token-123" },
      description: "team hook",
    });
    assert.equal(created.status, 201);
    const { id, secret } = created.body;
    assert.match(secret, /^whsec_/);
    const rotated = (await call(app, "POST", `/v1/webhooks/${id}/rotate-secret`)).body.secret;
    await closeFirstMinute(app);
    await webhooks.idle();
    assert.equal(receiver.received[0].headers.get("authorization"), "Bearer receiver-token-123");
    const replies = [
      await call(app, "GET", "/v1/webhooks"),
      await call(app, "GET", `/v1/webhooks/${id}`),
      await call(app, "PATCH", `/v1/webhooks/${id}`, { description: "renamed" }),
      await call(app, "GET", `/v1/webhooks/${id}/deliveries`),
    ];
    for (const reply of replies) {
      assert.equal(reply.status, 200, reply.text);
      for (const hidden of [secret, rotated, "whsec_", "receiver-token-123"]) {
        assert.ok(!reply.text.includes(hidden), `${hidden} leaked into ${reply.text}`);
      }
    }
    assert.deepEqual(replies[1].body.headerNames, ["Authorization"]);
    assert.equal(replies[0].body.webhooks[0].id, id);
    assert.equal(replies[2].body.description, "renamed");
    assert.equal(created.body.description, "team hook");
  });
});

Deno.test("the test endpoint sends a signed webhook.test delivery", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const { id, secret } = await register(app, { url: receiver.url() });
    receiver.secrets = [secret];
    const res = await call(app, "POST", `/v1/webhooks/${id}/test`);
    assert.equal(res.status, 202, res.text);
    assert.match(res.body.delivery.messageId, /^msg_test_[0-9a-f]{32}$/);
    await webhooks.idle();
    assert.equal(receiver.received.length, 1);
    assert.equal(receiver.received[0].payload.type, "webhook.test");
    assert.equal(receiver.received[0].id, res.body.delivery.messageId);
    assert.deepEqual(receiver.received[0].verifiedWith, [secret]);
  });
});

/**
 * A memory delivery store that runs `race` once, right after the next call of its method has
 * stored or read what it was asked: a request that another one (a DELETE) overtakes.
 */
type RacedMethod = "getEndpoint" | "createDeliveries" | "retry" | "getDelivery";

class RacingDeliveryStore extends MemoryDeliveryStore {
  race: { after: RacedMethod; run: () => Promise<void> } | null = null;
  /** How many times a delivery was read. */
  deliveryReads = 0;

  async #raced<T>(method: RacedMethod, result: T): Promise<T> {
    const race = this.race;
    if (race?.after === method) {
      this.race = null;
      await race.run();
    }
    return result;
  }

  override async createDeliveries(
    ...args: Parameters<MemoryDeliveryStore["createDeliveries"]>
  ): Promise<number> {
    return await this.#raced("createDeliveries", await super.createDeliveries(...args));
  }

  override async retry(...args: Parameters<MemoryDeliveryStore["retry"]>) {
    return await this.#raced("retry", await super.retry(...args));
  }

  override async getDelivery(...args: Parameters<MemoryDeliveryStore["getDelivery"]>) {
    this.deliveryReads += 1;
    return await this.#raced("getDelivery", await super.getDelivery(...args));
  }

  override async getEndpoint(...args: Parameters<MemoryDeliveryStore["getEndpoint"]>) {
    return await this.#raced("getEndpoint", await super.getEndpoint(...args));
  }
}

/** An app whose delivery store is a {@linkcode RacingDeliveryStore}, and a receiver. */
async function withRacingApp(
  run: (
    ctx: Awaited<ReturnType<typeof setup>> & { receiver: Receiver; racing: RacingDeliveryStore },
  ) => Promise<void>,
) {
  const clock: Clock = { now: T0 + 10 * MINUTE };
  const racing = new RacingDeliveryStore({ now: () => clock.now });
  await withApp({ clock, deliveries: racing }, (ctx) => run({ ...ctx, racing }));
}

/** Deletes an endpoint through the API. */
async function deleteEndpoint(app: OpenAPIHono, id: string) {
  const res = await call(app, "DELETE", `/v1/webhooks/${id}`);
  assert.equal(res.status, 204, res.text);
}

/**
 * POSTs the test endpoint of an endpoint deleted right after the delivery store's `after` call
 * (`deleted`: when that is): 404 webhook_not_found, and nothing sent; `then` checks more.
 */
async function testOfEndpointDeletedAfter(
  after: RacedMethod,
  deleted: string,
  then: (racing: RacingDeliveryStore) => Promise<void> = () => Promise.resolve(),
) {
  await withRacingApp(async ({ app, webhooks, receiver, racing }) => {
    const { id } = await register(app, { url: receiver.url() });
    racing.race = { after, run: () => deleteEndpoint(app, id) };
    const res = await call(app, "POST", `/v1/webhooks/${id}/test`);
    assert.equal(racing.race, null, `the endpoint was deleted ${deleted}`);
    assert.equal(res.status, 404, res.text);
    assert.equal(res.body.error.code, "webhook_not_found");
    assert.equal(res.body.error.message, `No webhook endpoint has id '${id}'`);
    await webhooks.idle();
    assert.equal(receiver.received.length, 0);
    await then(racing);
  });
}

Deno.test("the test endpoint answers 404 webhook_not_found when the endpoint is deleted before its delivery is read back", async () => {
  await testOfEndpointDeletedAfter("createDeliveries", "after the delivery was written");
});

Deno.test("the test endpoint answers 404 webhook_not_found and holds no delivery when the endpoint is deleted between its read and the delivery's creation", async () => {
  await testOfEndpointDeletedAfter("getEndpoint", "after it was read", async (racing) => {
    // No delivery was created for the deleted endpoint: none is pending (for ever, as none of a
    // deleted endpoint is claimed) nor listed.
    assert.deepEqual(await racing.countDeliveries(), { pending: 0, dead: 0 });
    // None created is the answer: no delivery is read back to find it gone.
    assert.equal(racing.deliveryReads, 0);
  });
});

Deno.test("a retry answers 404 delivery_not_found when the endpoint is deleted during it, as for a deleted endpoint's delivery", async () => {
  await withRacingApp(async ({ app, webhooks, receiver, racing }) => {
    // Deleted after the retry is stored, before it is read back; or after the delivery is read,
    // before its endpoint is.
    for (const after of ["retry", "getDelivery"] as const) {
      const { id } = await register(app, { url: receiver.url() });
      const sent = await call(app, "POST", `/v1/webhooks/${id}/test`);
      assert.equal(sent.status, 202, sent.text);
      await webhooks.idle();
      racing.race = { after, run: () => deleteEndpoint(app, id) };
      const res = await call(app, "POST", `/v1/deliveries/${sent.body.delivery.id}/retry`);
      assert.equal(racing.race, null, `${after}: the endpoint was deleted during the retry`);
      assert.equal(res.status, 404, `${after}: ${res.text}`);
      assert.equal(res.body.error.code, "delivery_not_found", after);
    }
  });
});

Deno.test("a slow endpoint delays neither other endpoints nor ingest", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const { promise: released, resolve: release } = Promise.withResolvers<void>();
    receiver.respond = async (request) => {
      if (request.path === "/slow") await released;
      return new Response(null, { status: 204 });
    };
    await register(app, {
      url: receiver.url("/slow"),
      eventTypes: ["window.closed", "event.processed"],
    });
    await register(app, { url: receiver.url("/fast") });
    await ingest(
      app,
      ["DE", "FR", "IT"].map((country, i) => ({ id: `e${i}`, ts: at(i), country })),
    );
    await ingest(app, [{ id: "tick", ts: at(75), country: "XX" }]);
    const sweeping = sweep(app);
    try {
      // Every fast delivery arrives while the slow endpoint holds its requests open (the first
      // slow one may arrive after the fast ones: wait for both).
      while (receiver.on("/fast").length < 3 || receiver.on("/slow").length === 0) {
        await receiver.waitFor(receiver.received.length + 1);
      }
      const reply = await ingest(app, [{ id: "more", ts: at(80), country: "DE" }]);
      assert.equal(reply.accepted, 1, "ingest answers while deliveries hang");
    } finally {
      // Else a failure above would leave the slow sends, and the service's close, waiting.
      release();
    }
    await sweeping;
    await webhooks.idle();
    assert.equal(receiver.on("/fast").length, 3);
    assert.ok(receiver.on("/slow").length >= 8, `${receiver.on("/slow").length}`);
  });
});

Deno.test("webhook routes need the admin scope and appear in the OpenAPI document", async () => {
  await withApp({ auth: true }, async ({ app }) => {
    assert.equal((await call(app, "GET", "/v1/webhooks")).status, 401);
    assert.equal((await call(app, "GET", "/v1/webhooks", undefined, READ_KEY)).status, 403);
    assert.equal(
      (await call(app, "POST", "/v1/deliveries/x/retry", undefined, READ_KEY)).status,
      403,
    );
    assert.equal((await call(app, "GET", "/v1/webhooks", undefined, ADMIN_KEY)).status, 200);
    const doc = (await call(app, "GET", "/openapi.json")).body;
    for (
      const path of [
        "/v1/webhooks",
        "/v1/webhooks/{id}",
        "/v1/webhooks/{id}/rotate-secret",
        "/v1/webhooks/{id}/test",
        "/v1/webhooks/{id}/deliveries",
        "/v1/webhooks/{id}/replay",
        "/v1/deliveries/{deliveryId}/retry",
      ]
    ) {
      assert.ok(doc.paths[path], `${path} is documented`);
    }
    assert.deepEqual(Object.keys(doc.paths["/v1/webhooks/{id}"]).sort(), [
      "delete",
      "get",
      "patch",
    ]);
    assert.ok(doc.components.schemas.WebhookInput);
  });
});

Deno.test("DELETE removes an endpoint: nothing more is delivered to it", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const { id } = await register(app, { url: receiver.url() });
    const res = await call(app, "DELETE", `/v1/webhooks/${id}`);
    assert.equal(res.status, 204);
    await closeFirstMinute(app);
    await webhooks.idle();
    assert.equal(receiver.received.length, 0);
    assert.equal((await call(app, "GET", `/v1/webhooks/${id}`)).status, 404);
  });
});

Deno.test("deliveries go to the address the SSRF check resolved, not a second lookup's answer", async () => {
  await withApp({
    // hooks.test exists only in this resolver: a delivery can only arrive through the pinned address.
    policy: new UrlPolicy({
      allow: ["127.0.0.1/32"],
      allowHttp: true,
      resolve: (host) => Promise.resolve(host === "hooks.test" ? ["127.0.0.1"] : []),
    }),
  }, async ({ app, receiver }) => {
    const port = new URL(receiver.url()).port;
    const { id, secret } = await register(app, { url: `http://hooks.test:${port}/hook` });
    receiver.secrets = [secret];
    assert.equal((await call(app, "POST", `/v1/webhooks/${id}/test`)).status, 202);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const arrived = await Promise.race([
      receiver.waitFor(1).then(() => true),
      new Promise<boolean>((resolve) => timer = setTimeout(() => resolve(false), 5_000)),
    ]);
    clearTimeout(timer);
    assert.ok(arrived, "the delivery never reached the pinned address");
    assert.equal(receiver.received[0].headers.get("host"), `hooks.test:${port}`);
    assert.deepEqual(receiver.received[0].verifiedWith.length, 1);
  });
});

Deno.test("a delivery-time DNS lookup that hangs fails the attempt within the request timeout", async () => {
  let hang = false;
  await withApp({
    allow: [],
    timeoutMs: 200,
    resolve: () => hang ? new Promise(() => {}) : Promise.resolve(["93.184.216.34"]),
  }, async ({ app, webhooks }) => {
    const { id } = await register(app, { url: "https://hooks.example.com/in" });
    hang = true;
    await closeFirstMinute(app);
    await webhooks.idle();
    const [delivery] = await deliveriesOf(app, id);
    assert.equal(delivery.status, "retrying");
    assert.equal(delivery.attemptLog[0].error, "Refused: 'url' host did not resolve within 200 ms");
  });
});

/** An endpoint that gets exactly one delivery when the first minute closes. */
const ONE_WINDOW = {
  eventTypes: ["window.closed"],
  filter: "data.counter == 'per_minute' && data.group.country == 'DE'",
};

/** Ingests an event in the first minute and one at 75 s, so the next sweep closes the minute. */
async function fillFirstMinute(app: OpenAPIHono) {
  await ingest(app, [{ id: "e1", ts: at(1), country: "DE" }]);
  await ingest(app, [{ id: "tick", ts: at(75), country: "XX" }]);
}

Deno.test("POST /v1/admin/sweep answers once deliveries are stored, before a slow receiver answers; the delivery arrives once, signed", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const { id, secret } = await register(app, { url: receiver.url(), ...ONE_WINDOW });
    receiver.secrets = [secret];
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
      await fillFirstMinute(app);
      const first = await sweep(app);
      order.push("sweep replied");
      assert.deepEqual(order, ["sweep replied"], "the sweep waited for the receiver");
      assert.deepEqual(first.webhooks, { queued: 1 });
      const stored = await deliveriesOf(app, id);
      assert.equal(stored.length, 1, "the delivery is stored when the sweep replies");
      assert.equal(stored[0].attempts, 0);
      await receiver.waitFor(1);
      const second = await sweep(app);
      assert.deepEqual(second.webhooks, { queued: 0 }, "a sweep during the send queues nothing");
      release();
      // close() waits for the send the sweep left running, and its record.
      await webhooks.close();
    } finally {
      release();
      clearTimeout(timer);
    }
    assert.deepEqual(order, ["sweep replied", "receiver answered"]);
    assert.equal(receiver.received.length, 1, "sent once, also with a second sweep meanwhile");
    assert.deepEqual(receiver.received[0].verifiedWith, [secret]);
    const [delivery] = await deliveriesOf(app, id);
    assert.equal(delivery.status, "succeeded");
    assert.equal(delivery.attempts, 1);
    assert.equal(delivery.messageId, receiver.received[0].id);
  });
});

Deno.test("sweepOnce() and then settle() resolve only after the sweep's deliveries were sent (the Deno Deploy cron path)", async () => {
  await withApp({}, async ({ app, webhooks, receiver, streams, store }) => {
    await register(app, { url: receiver.url(), ...ONE_WINDOW });
    const order: string[] = [];
    const { promise: released, resolve: release } = Promise.withResolvers<void>();
    receiver.respond = async () => {
      await released;
      order.push("receiver answered");
      return new Response(null, { status: 204 });
    };
    await fillFirstMinute(app);
    // As deploy/main.ts's cron handler does.
    const sweeping = (async () => {
      const report = await sweepOnce(streams.values(), store, { consumers: [webhooks] });
      const sent = await webhooks.settle();
      order.push("sweep resolved");
      return { report, sent };
    })();
    await receiver.waitFor(1);
    release();
    const { report, sent } = await sweeping;
    assert.deepEqual(order, ["receiver answered", "sweep resolved"]);
    assert.deepEqual(report.fanout, [{ queued: 1 }]);
    assert.deepEqual(sent, { attempted: 1, succeeded: 1, failed: 0 });
  });
});

/** A delivery store whose process is "killed" right after a send: attempts are never recorded. */
function killedAfterSending(store: DeliveryStore): DeliveryStore {
  return new Proxy(store, {
    get(target, property) {
      if (property === "recordAttempt") {
        return () => Promise.reject(new Error("Process killed before recording the attempt"));
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

Deno.test("a delivery sent but never recorded (process killed) is sent again after its claim lease, with the same webhook-id", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const store = new MemoryStore({ now });
  const deliveries = new MemoryDeliveryStore({ now });
  const receiver = await Receiver.start(now);
  const killed = await setup({ clock, store, deliveries: killedAfterSending(deliveries) });
  const restarted = await setup({ clock, store, deliveries });
  try {
    const { id, secret } = await register(restarted.app, { url: receiver.url(), ...ONE_WINDOW });
    receiver.secrets = [secret];
    await fillFirstMinute(killed.app);
    await sweep(killed.app, killed.webhooks);
    assert.equal(receiver.received.length, 1);
    await killed.close();

    // The claim's lease (timeout 15 s + 15 s) still holds: nobody sends it meanwhile.
    clock.now += 30_000 - 1;
    await sweep(restarted.app, restarted.webhooks);
    assert.equal(receiver.received.length, 1, "sent again while the first claim's lease held");
    clock.now += 1;
    await sweep(restarted.app, restarted.webhooks);
    assert.equal(receiver.received.length, 2);

    const [first, again] = receiver.received;
    assert.equal(again.id, first.id, "a redelivery keeps its webhook-id");
    assert.equal(again.body, first.body);
    // Each signature verifies over `${webhook-id}.${webhook-timestamp}.${body}`: the same id.
    assert.deepEqual(first.verifiedWith, [secret]);
    assert.deepEqual(again.verifiedWith, [secret]);
    assert.equal(again.timestamp - first.timestamp, 30, "each attempt has its own timestamp");
    const [delivery] = await deliveriesOf(restarted.app, id);
    assert.equal(delivery.messageId, first.id);
    assert.equal(delivery.status, "succeeded");
    assert.equal(delivery.attempts, 1, "only the second send was recorded");
  } finally {
    await killed.close();
    await restarted.close();
    await receiver.close();
  }
});

Deno.test("close() that runs out of time cuts off a send waiting for an answer and gives its claim back: another instance sends it at once, with the same webhook-id", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  const now = () => clock.now;
  const store = new MemoryStore({ now });
  const deliveries = new MemoryDeliveryStore({ now });
  const receiver = await Receiver.start(now);
  const { promise: answered, resolve: answer } = Promise.withResolvers<void>();
  receiver.respond = async (_request, index) => {
    if (index === 0) await answered;
    return new Response(null, { status: 204 });
  };
  const stopping = await setup({ clock, store, deliveries });
  const other = await setup({ clock, store, deliveries });
  try {
    const { id, secret } = await register(other.app, { url: receiver.url() });
    receiver.secrets = [secret];
    const res = await call(stopping.app, "POST", `/v1/webhooks/${id}/test`);
    assert.equal(res.status, 202, res.text);
    await receiver.waitFor(1);

    // The clock stands still: only a given-back claim can be sent again now.
    const signal = AbortSignal.timeout(50);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const outcome = await Promise.race([
      stopping.webhooks.close({ signal }).then(() => "closed"),
      new Promise((resolve) => timer = setTimeout(() => resolve("still waiting"), 5_000)),
    ]);
    clearTimeout(timer);
    assert.equal(outcome, "closed", "close() waits for the receiver after its signal aborted");
    const [pending] = await deliveriesOf(other.app, id);
    assert.equal(pending.status, "pending");
    assert.equal(pending.attempts, 1, "the receiver got it: it counts");
    assert.deepEqual(
      pending.attemptLog.map((item: { attempt: number; status: null; outcome: string }) => [
        item.attempt,
        item.status,
        item.outcome,
      ]),
      [[1, null, "interrupted"]],
    );

    await sweep(other.app, other.webhooks);
    assert.equal(receiver.received.length, 2);
    const [first, again] = receiver.received;
    assert.equal(again.id, first.id);
    assert.deepEqual(again.verifiedWith, [secret]);
    const [delivery] = await deliveriesOf(other.app, id);
    assert.equal(delivery.status, "succeeded");
    assert.equal(delivery.attempts, 2);
    assert.deepEqual(
      delivery.attemptLog.map((item: { outcome: string }) => item.outcome),
      ["succeeded", "interrupted"],
    );
  } finally {
    answer();
    await stopping.close();
    await other.close();
    await receiver.close();
  }
});

Deno.test("close() without a signal waits for the send in flight and records it", async () => {
  await withApp({}, async ({ app, webhooks, receiver }) => {
    const { promise: answered, resolve: answer } = Promise.withResolvers<void>();
    receiver.respond = async () => {
      await answered;
      return new Response(null, { status: 204 });
    };
    const { id } = await register(app, { url: receiver.url() });
    assert.equal((await call(app, "POST", `/v1/webhooks/${id}/test`)).status, 202);
    await receiver.waitFor(1);
    const closing = webhooks.close();
    setTimeout(answer, 50);
    await closing;
    const [delivery] = await deliveriesOf(app, id);
    assert.equal(delivery.status, "succeeded");
  });
});

Deno.test("an alert's delivery is sent as soon as its page of the log is stored, not after the dispatch's later pages", async () => {
  // Under load a dispatch reads page after page while new alerts keep arriving; holding the
  // sends until the last page made alert.fired wait for all of them (Redis p99 in seconds).
  const clock: Clock = { now: T0 + 600_000 };
  let pages = 0;
  let firstSent: () => void;
  const sent = new Promise<boolean>((resolve) => firstSent = () => resolve(true));
  const store = new MemoryStore({ now: () => clock.now });
  // Set once the app runs: more alerts fire while the first page is being stored.
  let fireMore = () => Promise.resolve();
  class SecondPageWaits extends MemoryDeliveryStore {
    override async storePage(...args: Parameters<DeliveryStore["storePage"]>) {
      pages += 1;
      if (pages === 1) await fireMore();
      if (pages === 2) {
        const timeout = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 3000));
        sentBeforeSecondPage = await Promise.race([sent, timeout]);
      }
      return await super.storePage(...args);
    }
  }
  let sentBeforeSecondPage: boolean | undefined;
  await withApp(
    { clock, store, deliveries: new SecondPageWaits({ now: () => clock.now }) },
    async ({ app, webhooks, receiver }) => {
      receiver.respond = (_request, index) => {
        if (index === 0) firstSent();
        return new Response(null, { status: 204 });
      };
      await register(app, { url: receiver.url(), eventTypes: ["alert.fired"] });
      fireMore = async () => {
        await ingest(app, [1, 2, 3].map((n) => ({ id: `fr${n}`, ts: at(n), country: "FR" })));
      };
      await ingest(app, [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE" })));
      await webhooks.idle();
      assert.equal(pages, 2, "the FR alert came in a second page");
      assert.equal(sentBeforeSecondPage, true, "the first page's delivery went out first");
      assert.deepEqual(
        receiver.received.map((item) => item.payload.data.group.country).sort(),
        ["DE", "FR"],
      );
    },
  );
});

Deno.test("an alert whose dispatch finds the stream's lease held (a sweep, another instance) is dispatched again, not left for the next sweep", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  let refused = 0;
  class LeaseHeldOnce extends MemoryDeliveryStore {
    override async openDispatch(...args: Parameters<DeliveryStore["openDispatch"]>) {
      const opened = await super.openDispatch(...args);
      if (opened.lease !== null && refused === 0) {
        refused += 1;
        await this.releaseLease(args[1].lease, opened.lease);
        return { ...opened, lease: null };
      }
      return opened;
    }
  }
  await withApp(
    { clock, deliveries: new LeaseHeldOnce({ now: () => clock.now }) },
    async ({ app, webhooks, receiver }) => {
      await register(app, { url: receiver.url(), eventTypes: ["alert.fired"] });
      await ingest(app, [1, 2, 3].map((n) => ({ id: `de${n}`, ts: at(n), country: "DE" })));
      await webhooks.idle();
      assert.equal(refused, 1);
      assert.deepEqual(receiver.received.map((item) => item.payload.data.group), [{
        country: "DE",
      }]);
    },
  );
});

Deno.test("another instance logs event.processed for a new endpoint within 5 s: its endpoint list is cached that long", async () => {
  const a = await setup();
  const b = await setup({ clock: a.clock, store: a.store, deliveries: a.deliveries });
  try {
    await b.webhooks.refreshEndpoints();
    assert.equal(b.webhooks.wants("orders", "event.processed"), false);
    // Registered on instance a, with no receiver needed: only b's log demand is looked at.
    await register(a.app, { url: "http://127.0.0.1:9/hook", eventTypes: ["event.processed"] });
    assert.equal(a.webhooks.wants("orders", "event.processed"), true);
    // A call that finds the list due starts its reload, which the memory store answers at once.
    const wantsAfterReload = async () => {
      b.webhooks.wants("orders", "event.processed");
      await new Promise((resolve) => setTimeout(resolve, 0));
      return b.webhooks.wants("orders", "event.processed");
    };
    a.clock.now += 4_999;
    assert.equal(await wantsAfterReload(), false);
    a.clock.now += 1;
    assert.equal(await wantsAfterReload(), true);
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("another instance sees a new endpoint once its clock is before the time its list was loaded (stepped back), not only once it passes it again", async () => {
  const a = await setup();
  const b = await setup({ clock: a.clock, store: a.store, deliveries: a.deliveries });
  try {
    await b.webhooks.refreshEndpoints();
    await register(a.app, { url: "http://127.0.0.1:9/hook", eventTypes: ["event.processed"] });
    const wantsAfterReload = async () => {
      b.webhooks.wants("orders", "event.processed");
      await new Promise((resolve) => setTimeout(resolve, 0));
      return b.webhooks.wants("orders", "event.processed");
    };
    a.clock.now -= 3_600_000; // NTP steps the clock an hour back
    assert.equal(await wantsAfterReload(), true, "not cached for an hour");
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("a sweep's prepare lists the endpoints again once its clock is before the time the list was loaded (stepped back)", async () => {
  const a = await setup();
  const b = await setup({ clock: a.clock, store: a.store, deliveries: a.deliveries });
  try {
    await b.webhooks.refreshEndpoints();
    await register(a.app, { url: "http://127.0.0.1:9/hook", eventTypes: ["event.processed"] });
    a.clock.now -= 3_600_000;
    await b.webhooks.prepare();
    assert.equal(b.webhooks.wants("orders", "event.processed"), true, "listed again");
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("another instance logs event.processed for an endpoint enabled again, or changed to take it or its stream, within 5 s: its endpoint list is cached that long", async () => {
  const a = await setup();
  const b = await setup({ clock: a.clock, store: a.store, deliveries: a.deliveries });
  try {
    const { id } = await register(a.app, {
      url: "http://127.0.0.1:9/hook",
      eventTypes: ["window.closed"],
    });
    // A call that finds the list due starts its reload, which the memory store answers at once.
    const wantsAfterReload = async () => {
      b.webhooks.wants("orders", "event.processed");
      await new Promise((resolve) => setTimeout(resolve, 0));
      return b.webhooks.wants("orders", "event.processed");
    };
    const changes = [
      // Changed to take event.processed, while b lists it without.
      [{ description: "closes only" }, { eventTypes: ["window.closed", "event.processed"] }],
      // Disabled, as b lists it; then enabled again.
      [{ disabled: true }, { disabled: false }],
      // Another stream's, as b lists it; then the stream's too.
      [{ streams: ["signups"] }, { streams: ["signups", "orders"] }],
    ];
    for (const [before, after] of changes) {
      const first = await call(a.app, "PATCH", `/v1/webhooks/${id}`, before);
      assert.equal(first.status, 200, first.text);
      await b.webhooks.refreshEndpoints();
      assert.equal(b.webhooks.wants("orders", "event.processed"), false);
      const second = await call(a.app, "PATCH", `/v1/webhooks/${id}`, after);
      assert.equal(second.status, 200, second.text);
      assert.equal(a.webhooks.wants("orders", "event.processed"), true);
      a.clock.now += 4_999;
      assert.equal(await wantsAfterReload(), false);
      a.clock.now += 1;
      assert.equal(await wantsAfterReload(), true);
    }
  } finally {
    await a.close();
    await b.close();
  }
});

/**
 * A memory delivery store that can hold one endpoint listing's answer until released, and fail
 * the next listing not held.
 */
class HoldsAListing extends MemoryDeliveryStore {
  #next: { read: () => void; answer: Promise<void> } | null = null;
  #failure: Error | null = null;
  #releases: (() => void)[] = [];

  /** Fails the next listing that is not held. */
  failNext(): void {
    this.#failure = new StoreUnavailableError("Redis did not answer listEndpoints within 5000 ms");
  }

  /**
   * Holds the next listing's answer (read at once, answered when released): `read` resolves once
   * that listing was read.
   */
  holdNext(): { read: Promise<void>; release: () => void } {
    const read = Promise.withResolvers<void>();
    const answer = Promise.withResolvers<void>();
    this.#next = { read: read.resolve, answer: answer.promise };
    this.#releases.push(answer.resolve);
    return { read: read.promise, release: answer.resolve };
  }

  /** Releases every held listing (so that a failed test can close its service). */
  releaseAll(): void {
    for (const release of this.#releases) release();
  }

  override async listEndpointsVersioned() {
    const held = this.#next;
    this.#next = null;
    const failure = held ? null : this.#failure;
    if (failure) {
      this.#failure = null;
      throw failure;
    }
    const listed = await super.listEndpointsVersioned();
    if (held) {
      held.read();
      await held.answer;
    }
    return listed;
  }
}

Deno.test("a reload of the endpoint list that read before a change and answers after the change's own reload does not put the older list back", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  const deliveries = new HoldsAListing({ now: () => clock.now });
  const { app, webhooks, close } = await setup({ clock, deliveries });
  try {
    await webhooks.refreshEndpoints();
    let id = "";
    const patch = async (body: Record<string, unknown>) => {
      const res = await call(app, "PATCH", `/v1/webhooks/${id}`, body);
      assert.equal(res.status, 200, res.text);
    };
    const changes: [string, () => Promise<void>, () => Promise<void>][] = [
      ["created", async () => {}, async () => {
        ({ id } = await register(app, {
          url: "http://127.0.0.1:9/hook",
          eventTypes: ["event.processed"],
        }));
      }],
      ["enabled again", () => patch({ disabled: true }), () => patch({ disabled: false })],
      [
        "given the stream",
        () => patch({ streams: ["signups"] }),
        () => patch({ streams: ["signups", "orders"] }),
      ],
    ];
    for (const [change, before, after] of changes) {
      await before();
      assert.equal(webhooks.wants("orders", "event.processed"), false, change);
      clock.now += 5_000; // the cached list is due
      const held = deliveries.holdNext();
      // Ingest's log demand starts the background reload, which reads the list before the change.
      assert.equal(webhooks.wants("orders", "event.processed"), false, change);
      await held.read;
      await after(); // its own reload is answered at once
      assert.equal(webhooks.wants("orders", "event.processed"), true, change);
      held.release();
      await webhooks.idle(); // the held reload has answered
      assert.equal(webhooks.wants("orders", "event.processed"), true, change);
      clock.now += 4_999; // within the cache's period of the change's reload
      assert.equal(webhooks.wants("orders", "event.processed"), true, change);
    }
  } finally {
    deliveries.releaseAll();
    await close();
  }
});

Deno.test("an endpoint created while its change's reload of the endpoint list fails is answered 201 with its secret (the change is stored) and wanted at the next reload, not once the cached list's period passed", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  const deliveries = new HoldsAListing({ now: () => clock.now });
  const { app, webhooks, close } = await setup({ clock, deliveries });
  try {
    const hook = { url: "http://127.0.0.1:9/hook", eventTypes: ["event.processed"] };
    // Alone: the list in use was loaded just now.
    await webhooks.refreshEndpoints();
    deliveries.failNext();
    // The change is stored: answered as such, with its secret (shown only here), not a 503 a
    // client would create it again for.
    const alone = await writtenLogs(async (lines) => {
      const reply = await call(app, "POST", "/v1/webhooks", hook);
      const warned = lines.filter((line) => line.method === "warn").map((line) => line.text);
      assert.equal(warned.length, 1, warned.join("\n"));
      assert.match(
        JSON.parse(warned[0]).message,
        /^Webhook endpoint list not reloaded after a change \(.*listEndpoints.*\): stored, it is read again at the next look$/,
      );
      return reply;
    });
    assert.equal(alone.status, 201, alone.text);
    assert.match(alone.body.secret, /^whsec_/);
    // The next call finds the list due and reloads it.
    assert.equal(webhooks.wants("orders", "event.processed"), false);
    await webhooks.idle();
    assert.equal(webhooks.wants("orders", "event.processed"), true, "alone");
    // After a background reload that read before the change and answers after it failed.
    const [{ id }] = await webhooks.refreshEndpoints();
    clock.now += 5_000;
    const held = deliveries.holdNext();
    assert.equal(webhooks.wants("orders", "event.processed"), true);
    await held.read;
    deliveries.failNext();
    const disabled = await call(app, "PATCH", `/v1/webhooks/${id}`, { disabled: true });
    assert.equal(disabled.status, 200, disabled.text);
    assert.equal(disabled.body.disabled, true);
    held.release();
    await webhooks.idle();
    // The held list (still enabled) is in use, but due: the next call reloads it.
    assert.equal(webhooks.wants("orders", "event.processed"), true);
    await webhooks.idle();
    assert.equal(webhooks.wants("orders", "event.processed"), false, "after the held reload");
  } finally {
    deliveries.releaseAll();
    await close();
  }
});

Deno.test("a reload of the endpoint list that read before a 410 disabled an endpoint leaves the list due when it answers, not kept for the cache's period", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  const deliveries = new HoldsAListing({ now: () => clock.now });
  const disabled = Promise.withResolvers<void>();
  const options = {
    clock,
    deliveries,
    onAttempt: (_delivery: unknown, _attempt: unknown, endpointDisabled: boolean) => {
      if (endpointDisabled) disabled.resolve();
    },
  };
  await withApp(options, async ({ app, webhooks, receiver }) => {
    const answer = Promise.withResolvers<void>();
    try {
      await register(app, {
        url: receiver.url(),
        eventTypes: ["window.closed", "event.processed"],
      });
      receiver.respond = async () => {
        await answer.promise;
        return new Response("gone", { status: 410 });
      };
      await closeFirstMinute(app); // its sends wait for the receiver's answer
      clock.now += 5_000; // the cached list is due
      const held = deliveries.holdNext();
      // Ingest's log demand starts the background reload, which reads the list (enabled).
      assert.equal(webhooks.wants("orders", "event.processed"), true);
      await held.read;
      answer.resolve(); // 410 Gone: the endpoint is disabled
      await disabled.promise;
      held.release();
      await webhooks.idle(); // the held reload has answered
      // The held list (still enabled) is in use, but due: the next call reloads it.
      assert.equal(webhooks.wants("orders", "event.processed"), true);
      await webhooks.idle();
      assert.equal(webhooks.wants("orders", "event.processed"), false, "after the held reload");
    } finally {
      answer.resolve();
      deliveries.releaseAll();
    }
  });
});

Deno.test("a sweep dispatches to an endpoint created while its prepare listed the endpoints, not to the list that prepare read before", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  const deliveries = new HoldsAListing({ now: () => clock.now });
  await withApp({ clock, deliveries }, async ({ app, webhooks, store, streams, receiver }) => {
    await fillFirstMinute(app);
    clock.now += 5_000; // the cached list is due: prepare lists the endpoints
    const held = deliveries.holdNext();
    const sweeping = sweepOnce(streams.values(), store, { consumers: [webhooks] });
    await held.read;
    try {
      await register(app, { url: receiver.url(), ...ONE_WINDOW });
    } finally {
      held.release();
    }
    const report = await sweeping;
    assert.deepEqual(report.fanout, [{ queued: 1 }]);
    await webhooks.idle();
    assert.equal(receiver.received.length, 1);
  });
});

Deno.test("a sweep lists the webhook endpoints once, whether its prepare found the cached list stale or not", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  let listed = 0;
  class CountsLists extends MemoryDeliveryStore {
    override listEndpointsVersioned() {
      listed += 1;
      return super.listEndpointsVersioned();
    }
  }
  await withApp(
    { clock, deliveries: new CountsLists({ now: () => clock.now }) },
    async ({ app, webhooks, store, streams, receiver }) => {
      await register(app, { url: receiver.url() });
      const sweepAll = () => sweepOnce(streams.values(), store, { consumers: [webhooks] });
      // The cached list is stale (its 5 s passed): prepare() lists it, the dispatch takes that.
      advance(clock, 10 * SECOND);
      listed = 0;
      await sweepAll();
      assert.equal(listed, 1);
      // Fresh: prepare() takes the cache, the dispatch lists.
      listed = 0;
      await sweepAll();
      assert.equal(listed, 1);
      await webhooks.idle();
    },
  );
});

Deno.test("a sweep dispatches a stream whose log did not move since this process dispatched it with one log read, and its later results still go out", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  let opened = 0;
  class CountsOpens extends MemoryDeliveryStore {
    override openDispatch(...args: Parameters<DeliveryStore["openDispatch"]>) {
      opened += 1;
      return super.openDispatch(...args);
    }
  }
  let lastIds = 0;
  class CountsLastIds extends MemoryStore {
    override lastLogId(stream: string) {
      lastIds += 1;
      return super.lastLogId(stream);
    }
  }
  await withApp(
    {
      clock,
      store: new CountsLastIds({ now: () => clock.now }),
      deliveries: new CountsOpens({ now: () => clock.now }),
    },
    async ({ app, webhooks, receiver, streams }) => {
      const { secret } = await register(app, { url: receiver.url() });
      receiver.secrets = [secret];
      await closeFirstMinute(app);
      await webhooks.idle();
      const first = receiver.received.length;
      assert.ok(first > 0);
      // Nothing logged since: no lease taken for any stream, one log read each.
      opened = 0;
      lastIds = 0;
      await sweep(app, webhooks);
      assert.equal(opened, 0);
      assert.equal(lastIds, streams.size);
      // A result logged since goes out at the next sweep.
      await ingest(app, [{ id: "late-tick", ts: at(150), country: "FR" }]);
      await sweep(app, webhooks);
      assert.ok(opened > 0);
      assert.ok(receiver.received.length > first);
      // Once a minute the log is marked again (its hold kept): a full dispatch.
      await sweep(app, webhooks);
      opened = 0;
      advance(clock, 61 * SECOND);
      await sweep(app, webhooks);
      assert.equal(opened, streams.size);
    },
  );
});

Deno.test("a stream whose dispatch fails is logged and skipped: the streams after it are still dispatched in that sweep", async () => {
  const clock = { now: T0 + 600_000 };
  const memory = new MemoryStore({ now: () => clock.now });
  let broken = false;
  // While broken, reads of the orders stream's result log fail (as a page the store refuses
  // would); its windows still close, and signups, after it in the list, is dispatched as before.
  const store = new Proxy(memory, {
    get(target, name) {
      const value = Reflect.get(target, name, target);
      if (typeof value !== "function") return value;
      if (name !== "readLog" && name !== "lastLogId") return value.bind(target);
      return (stream: string, ...rest: unknown[]) =>
        broken && stream === "orders"
          ? Promise.reject(new Error("refused: the page is too large"))
          : value.call(target, stream, ...rest);
    },
  });
  await withApp({ store, clock }, async ({ app, webhooks, receiver }) => {
    await register(app, { url: receiver.url(), eventTypes: ["window.closed"] });
    broken = true;
    await ingest(app, [{ id: "1", ts: at(1), country: "DE" }]);
    await ingest(app, [{ id: "s1", ts: at(5) }, { id: "s2", ts: at(80) }], "signups");
    await closeFirstMinute(app, []);
    await webhooks.idle();
    const types = () =>
      receiver.on().map((item) => `${item.payload.type}:${item.payload.data.stream}`).sort();
    assert.deepEqual(types(), ["window.closed:signups"]);
    // Once the stream's reads work again, the next sweep sends what it missed.
    broken = false;
    await sweep(app, webhooks);
    assert.deepEqual(types(), ["window.closed:orders", "window.closed:signups"]);
  });
});

Deno.test("the endpoint list reload an ingest's log demand starts logs its failure without that request's id: the list it loads serves later requests too", async () => {
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const refusing = Object.assign(Object.create(deliveries), {
    listEndpointsVersioned: () => Promise.reject(new Error("listing refused")),
  }) as DeliveryStore;
  const { webhooks, close } = await setup({ deliveries: refusing });
  try {
    await writtenLogs(async (lines) => {
      // The list is due (never loaded): asking for the log demand, as an ingest does, reloads it.
      withContext({ requestId: "ingest-1" }, () => webhooks.wants("orders", "event.processed"));
      await webhooks.idle();
      const [failure] = jsonLines(lines, "edgestream.webhooks");
      assert.match(failure?.message ?? "", /Cannot load webhook endpoints: .*listing refused/);
      assert.equal(failure.requestId, undefined, JSON.stringify(failure));
    });
  } finally {
    await close();
  }
});

Deno.test("an endpoint registered while a sweep closes windows gets the results that sweep logs after its registration", async () => {
  await withApp({}, async ({ app, webhooks, receiver, store, streams, clock }) => {
    const early = await register(app, { url: receiver.url(), streams: ["orders"] });
    const late = await Receiver.start(() => clock.now);
    try {
      await ingest(app, [
        { id: "1", ts: at(1), country: "DE" },
        { id: "2", ts: at(2), country: "FR" },
        { id: "tick", ts: at(75), country: "XX" },
      ]);
      // The cached endpoint list is stale: the sweep's prepare() lists the endpoints again.
      advance(clock, 10 * SECOND);
      let registered: { id: string; secret: string } | undefined;
      await sweepOnce(streams.values(), store, {
        consumers: [{
          // Registered (here, or on another instance) once the sweep listed the endpoints and
          // before its closes log their results.
          prepare: async () => {
            await webhooks.prepare();
            registered = await register(app, { url: late.url(), streams: ["orders"] });
          },
          sweep: () => webhooks.sweep(),
        }],
      });
      await webhooks.idle();
      const messageIds = async (id: string) =>
        (await deliveriesOf(app, id)).map((delivery: { messageId: string }) => delivery.messageId)
          .sort();
      // Both endpoints were there before the minute's windows closed: both get their results.
      const expected = await messageIds(early.id);
      assert.equal(expected.length, 2, "per_minute's windows of DE and FR");
      assert.deepEqual(await messageIds(registered!.id), expected);
      assert.equal(late.received.length, expected.length);
    } finally {
      await late.close();
    }
  });
});

Deno.test("an endpoint a 410 disables while a sweep closes windows gets no delivery of the results that sweep logs", async () => {
  await withApp({}, async ({ app, webhooks, receiver, store, streams, clock }) => {
    const { id, secret } = await register(app, { url: receiver.url(), streams: ["orders"] });
    receiver.secrets = [secret];
    receiver.respond = () => new Response("gone", { status: 410 });
    await ingest(app, [
      { id: "1", ts: at(1), country: "DE" },
      { id: "tick", ts: at(75), country: "XX" },
    ]);
    // The cached endpoint list is stale: the sweep's prepare() lists the endpoints again.
    advance(clock, 10 * SECOND);
    await sweepOnce(streams.values(), store, {
      consumers: [{
        // Once the sweep listed the endpoints (it is enabled), and before its closes log results,
        // a send to it answers 410 Gone, which disables it.
        prepare: async () => {
          await webhooks.prepare();
          const test = await call(app, "POST", `/v1/webhooks/${id}/test`);
          assert.equal(test.status, 202, test.text);
          await webhooks.idle();
          assert.equal((await call(app, "GET", `/v1/webhooks/${id}`)).body.disabled, true);
        },
        sweep: () => webhooks.sweep(),
      }],
    });
    await webhooks.idle();
    // Only the test delivery: none of the window that closed while it was disabled, which a
    // replay once it is enabled again would send.
    assert.deepEqual(
      (await deliveriesOf(app, id)).map((delivery: { eventType: string }) => delivery.eventType),
      ["webhook.test"],
    );
  });
});

/** A memory delivery store whose `openDispatch` (a dispatch's first call) fails with `failure`. */
class FailingDispatchStore extends MemoryDeliveryStore {
  failure: Error | null = null;

  override openDispatch(stream: string, options: OpenDispatchOptions): Promise<DispatchOpening> {
    return this.failure ? Promise.reject(this.failure) : super.openDispatch(stream, options);
  }
}

Deno.test("an ingest's webhook dispatch that finds the store unavailable is logged at warning, and the next sweep dispatches its events: none lost", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  const deliveries = new FailingDispatchStore({ now: () => clock.now });
  await withApp({ clock, deliveries }, async ({ app, webhooks, receiver }) => {
    const { secret } = await register(app, {
      url: receiver.url("/events"),
      eventTypes: ["event.processed"],
    });
    receiver.secrets = [secret];
    await writtenLogs(async (lines) => {
      deliveries.failure = new StoreUnavailableError(
        "Redis did not answer openDispatch within 5000 ms",
      );
      await ingest(app, [{ id: "1", ts: at(1), country: "DE" }]);
      await webhooks.idle();
      // A call refused as too large is no outage: an error, each time, within the minute too.
      deliveries.failure = new StoreRequestTooLargeError("ERR max request size exceeded");
      await ingest(app, [{ id: "2", ts: at(2), country: "DE" }]);
      await webhooks.idle();
      // A defect, not an outage: still an error.
      deliveries.failure = new Error("openDispatch refused");
      await ingest(app, [{ id: "3", ts: at(3), country: "DE" }]);
      await webhooks.idle();
      const failed = jsonLines(lines, "edgestream.webhooks")
        .filter((line) => line.message.startsWith("Webhook dispatch failed"));
      assert.deepEqual(failed.map((line) => [line.level, line.message, line.stream]), [
        [
          "warning",
          "Webhook dispatch failed: StoreUnavailableError: Redis did not answer openDispatch within 5000 ms",
          "orders",
        ],
        [
          "error",
          "Webhook dispatch failed: StoreRequestTooLargeError: ERR max request size exceeded",
          "orders",
        ],
        ["error", "Webhook dispatch failed: Error: openDispatch refused", "orders"],
      ]);
    });
    assert.deepEqual(receiver.on("/events"), []);
    deliveries.failure = null;
    await sweep(app, webhooks);
    assert.deepEqual(
      receiver.on("/events").map((item) => item.payload.data.event.id).sort(),
      ["1", "2", "3"],
    );
  });
});

/**
 * A memory delivery store whose `storePage` fails with `failure` from its `failFrom`th call on
 * (counted from 1): a dispatch stopped by the store after it stored its first pages.
 */
class FailingPageStore extends MemoryDeliveryStore {
  failure: Error = new StoreUnavailableError("Redis did not answer storePage within 5000 ms");
  failFrom = Infinity;
  calls = 0;

  override storePage(
    stream: string,
    page: StoredPage,
    options?: DeliveryCallOptions,
  ): Promise<StoredPageResult | null> {
    this.calls += 1;
    return this.calls >= this.failFrom
      ? Promise.reject(this.failure)
      : super.storePage(stream, page, options);
  }
}

Deno.test("a dispatch the store stops after it stored a page leaves the cursor there: the next sweep sends the rest, none twice, and the outage is said as a sweep's, once a minute", async () => {
  const clock: Clock = { now: T0 + 600_000 };
  const deliveries = new FailingPageStore({ now: () => clock.now });
  // One entry a page: an ingest of three events is a dispatch of three pages.
  await withApp({ clock, deliveries, dispatch: { pageSize: 1 } }, async (ctx) => {
    const { app, webhooks, receiver } = ctx;
    const { secret } = await register(app, {
      url: receiver.url("/events"),
      eventTypes: ["event.processed"],
    });
    receiver.secrets = [secret];
    const sent = () => receiver.on("/events").map((item) => item.payload.data.event.id).sort();
    await writtenLogs(async (lines) => {
      // The first page is stored (its delivery sent), the second fails.
      deliveries.failFrom = deliveries.calls + 2;
      await ingest(app, [
        { id: "1", ts: at(1), country: "DE" },
        { id: "2", ts: at(2), country: "DE" },
        { id: "3", ts: at(3), country: "DE" },
      ]);
      await webhooks.idle();
      assert.deepEqual(sent(), ["1"]);
      // The outage goes on: a dispatch within the minute says nothing, one after it says how many.
      await ingest(app, [{ id: "4", ts: at(4), country: "DE" }]);
      await webhooks.idle();
      clock.now += 60_000;
      await ingest(app, [{ id: "5", ts: at(5), country: "DE" }]);
      await webhooks.idle();
      assert.deepEqual(sent(), ["1"]);
      // The store back: the next sweep dispatches from where the first dispatch stopped.
      deliveries.failFrom = Infinity;
      await sweep(app, webhooks);
      await ingest(app, [{ id: "6", ts: at(6), country: "DE" }]);
      await webhooks.idle();
      const said = jsonLines(lines, "edgestream.webhooks")
        .filter((line) => /^Webhook dispatch(es)? /.test(line.message));
      assert.deepEqual(said.map((line) => [line.level, line.message, line.stream]), [
        [
          "warning",
          "Webhook dispatch failed: StoreUnavailableError: Redis did not answer storePage within 5000 ms",
          "orders",
        ],
        [
          "warning",
          `Webhook dispatch failed: StoreUnavailableError: Redis did not answer storePage within 5000 ms (3 failures since ${
            new Date(T0 + 600_000).toISOString()
          })`,
          "orders",
        ],
        [
          "info",
          `Webhook dispatches run again after 3 failures since ${
            new Date(T0 + 600_000).toISOString()
          }`,
          "orders",
        ],
      ]);
    });
    // Each event sent once: none lost, none twice.
    assert.deepEqual(sent(), ["1", "2", "3", "4", "5", "6"]);
    const readme = (await Deno.readTextFile(new URL("../../../README.md", import.meta.url)))
      .replace(/\s+/g, " ");
    assert.ok(
      readme.includes(
        "a webhook dispatch after an ingest or an alert that finds the store unavailable, said as those tasks' failures are (`Webhook dispatch failed: StoreUnavailableError: …`, `Webhook dispatches run again after …`)",
      ),
      "README says how it is logged",
    );
  });
});

/**
 * `deliveries` whose listed endpoints count in `reads` each time the service asks one whether it
 * is disabled: the first thing every check of an endpoint against a stream reads.
 */
function countingEndpointReads(
  deliveries: DeliveryStore,
): { store: DeliveryStore; reads: number[] } {
  const reads = [0];
  const counted = (endpoint: Endpoint): Endpoint =>
    new Proxy(endpoint, {
      get(target, name, receiver) {
        if (name === "disabled") reads[0]++;
        return Reflect.get(target, name, receiver);
      },
    });
  const store = new Proxy(deliveries, {
    get(target, name) {
      if (name === "listEndpointsVersioned") {
        return async () => {
          const listed = await target.listEndpointsVersioned();
          return { ...listed, endpoints: listed.endpoints.map(counted) };
        };
      }
      const value = Reflect.get(target, name, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { store, reads };
}

Deno.test("an ingest batch reads the cached endpoint list once a stream until the list is loaded again, not on each of log demand, idle and dispatch", async () => {
  const clock = { now: T0 + 600_000 };
  const { store, reads } = countingEndpointReads(new MemoryDeliveryStore({ now: () => clock.now }));
  await withApp({ deliveries: store, clock }, async ({ app, webhooks, receiver }) => {
    const hooks = [
      { eventTypes: ["event.processed"] },
      { eventTypes: ["window.closed"] },
      { eventTypes: ["event.late"], streams: ["signups"] },
    ];
    for (const hook of hooks) await register(app, { url: receiver.url(), ...hook });
    await webhooks.refreshEndpoints();
    reads[0] = 0;
    await ingest(app, [{ id: "1", ts: at(1), country: "DE", amount: 1 }]);
    // One scan: each endpoint checked for event.processed and event.late of orders (log demand,
    // the observer's idle and its dispatch had each scanned it: 12 reads a batch).
    assert.equal(reads[0], 2 * hooks.length);
    const first = reads[0];
    await ingest(app, [{ id: "2", ts: at(2), country: "DE", amount: 1 }]);
    await ingest(app, [{ id: "3", ts: at(3), country: "FR", amount: 1 }]);
    assert.equal(reads[0], first, "later batches of the stream read no endpoint");
    // Loaded again (a change, or the cache's period passed): scanned once more.
    await webhooks.refreshEndpoints();
    await ingest(app, [{ id: "4", ts: at(4), country: "FR", amount: 1 }]);
    assert.equal(reads[0], 2 * first);
    await webhooks.idle();
  });
});
