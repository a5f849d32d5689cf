import assert from "node:assert/strict";
import fc from "fast-check";
import FakeTimers from "@sinonjs/fake-timers";
import { withContext } from "@logtape/logtape";
import {
  RETRY_SCHEDULE_MS,
  retryDelayMs,
  Sender,
  UrlPolicy,
} from "../../../src/fanout/webhooks/mod.ts";
import {
  type Attempt,
  type AttemptRecord,
  type Claim,
  type ClaimOptions,
  type DeliveryStore,
  MemoryDeliveryStore,
  RedisDeliveryStore,
  StoreUnavailableError,
} from "../../../src/store/mod.ts";
import { config, delivery, T0 } from "../../store/_delivery_fixtures.ts";
import { jsonLines, writtenLogs } from "../../_logs.ts";
import { redisTest, restClient } from "../../_redis.ts";
import { Receiver } from "./_receiver.ts";

Deno.test("retryDelayMs() follows Svix's schedule and gives up after the eighth attempt", () => {
  const middle = () => 0.5;
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6, 7].map((tries) => retryDelayMs(tries, { random: middle })),
    [5_000, 300_000, 1_800_000, 7_200_000, 18_000_000, 36_000_000, 36_000_000],
  );
  assert.equal(retryDelayMs(8, { random: middle }), null);
  assert.equal(RETRY_SCHEDULE_MS.length, 8);
  assert.equal(RETRY_SCHEDULE_MS[0], 0);
});

Deno.test("retryDelayMs() jitters within ±20%", () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 7 }),
      fc.double({ min: 0, max: 0.9999999, noNaN: true }),
      (
        tries,
        random,
      ) => {
        const delay = retryDelayMs(tries, { random: () => random })!;
        const base = RETRY_SCHEDULE_MS[tries];
        assert.ok(delay >= Math.floor(base * 0.8) && delay <= Math.ceil(base * 1.2), `${delay}`);
      },
    ),
  );
  assert.equal(retryDelayMs(1, { random: () => 0 }), 4_000);
  assert.equal(retryDelayMs(1, { random: () => 0.999999999 }), 6_000);
});

Deno.test("Sender holds its free slots while it claims, so a dispatch's reserve cannot take them too", async () => {
  const { promise: claimed, resolve: answer } = Promise.withResolvers<Claim[]>();
  const asked: number[] = [];
  const deliveries = new MemoryDeliveryStore();
  const store = Object.assign(Object.create(deliveries), {
    claimDue(options: ClaimOptions) {
      asked.push(options.limit);
      return claimed;
    },
  }) as DeliveryStore;
  const sender = new Sender(store, {
    policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
    maxInFlight: 2,
  });
  sender.kick();
  // The pump waits for the store with both slots: a dispatch finds none free.
  assert.deepEqual(asked, [2]);
  assert.equal(sender.reserve(5), null);
  answer([]);
  await sender.idle();
  // Nothing was claimed: the slots are free again.
  assert.equal(sender.reserve(5)?.limit, 2);
});

Deno.test("Sender claims at most 8 in flight per endpoint unless told otherwise, each for the 15 s request timeout + 15 s", async () => {
  const caps: number[] = [];
  const leases: number[] = [];
  const deliveries = new MemoryDeliveryStore();
  const store = Object.assign(Object.create(deliveries), {
    claimDue(options: ClaimOptions) {
      caps.push(options.maxConcurrency);
      leases.push(options.leaseMs);
      return Promise.resolve([]);
    },
  }) as DeliveryStore;
  const policy = new UrlPolicy({ allow: ["127.0.0.1"] });
  for (
    const sender of [
      new Sender(store, { policy }),
      new Sender(store, { policy, maxConcurrency: 3 }),
    ]
  ) {
    sender.kick();
    await sender.idle();
  }
  assert.deepEqual(caps, [8, 3]);
  assert.deepEqual(leases, [30_000, 30_000]);
});

Deno.test("Sender claims with a lease of its request timeout (15 s by default) + 15 s: 30 s", async () => {
  const leases: number[] = [];
  const deliveries = new MemoryDeliveryStore();
  const store = Object.assign(Object.create(deliveries), {
    claimDue(options: ClaimOptions) {
      leases.push(options.leaseMs);
      return Promise.resolve([]);
    },
  }) as DeliveryStore;
  const policy = new UrlPolicy({ allow: ["127.0.0.1"] });
  for (
    const sender of [new Sender(store, { policy }), new Sender(store, { policy, timeoutMs: 5_000 })]
  ) {
    sender.kick();
    await sender.idle();
  }
  assert.deepEqual(leases, [30_000, 20_000]);
});

Deno.test("Sender.close(signal) cuts off a POST its receiver holds: the claim is given back and the attempt logged as interrupted", async () => {
  const clock = { now: T0 };
  const now = () => clock.now;
  const deliveries = new MemoryDeliveryStore({ now });
  const receiver = await Receiver.start(now);
  const { promise: answered, resolve: answer } = Promise.withResolvers<void>();
  // The first request is held until the test ends: only the stop ends that exchange.
  receiver.respond = async (_request, index) => {
    if (index === 0) await answered;
    return new Response(null, { status: 204 });
  };
  const policy = new UrlPolicy({ allow: ["127.0.0.1"] });
  const told: Attempt[] = [];
  const stopping = new Sender(deliveries, {
    policy,
    now,
    onAttempt: (_claim, attempt) => told.push(attempt),
  });
  const other = new Sender(deliveries, { policy, now });
  try {
    const endpoint = config("ep_a", { url: receiver.url() });
    receiver.secrets = [endpoint.secrets[0].secret];
    await deliveries.putEndpoint(endpoint, { expectVersion: null });
    await deliveries.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    stopping.kick();
    await receiver.waitFor(1);
    clock.now = T0 + 1_000;
    const stop = new AbortController();
    const closed = stopping.close({ signal: stop.signal });
    stop.abort();
    await closed;

    const cut = await deliveries.getDelivery(id);
    assert.deepEqual(cut && [cut.status, cut.attempts, cut.tries, cut.nextAttemptMs], [
      "pending",
      1,
      0,
      T0,
    ]);
    const [logged, ...older] = await deliveries.listAttempts(id);
    assert.deepEqual(older, []);
    assert.deepEqual({ ...logged, durationMs: 0 }, {
      attempt: 1,
      timeMs: T0,
      durationMs: 0,
      status: null,
      error: "Cut off: this instance stopped before the receiver answered; sent again at once",
      responseExcerpt: "",
      outcome: "interrupted",
      nextAttemptMs: T0 + 1_000,
    });
    assert.ok(Number.isInteger(logged.durationMs) && logged.durationMs >= 0);
    assert.deepEqual(told, [logged], "onAttempt hears of it");

    // Due at once: another sender sends it again, same webhook-id, as attempt 2.
    assert.deepEqual(await other.deliverDue(), { attempted: 1, succeeded: 1, failed: 0 });
    assert.equal(receiver.received.length, 2);
    assert.equal(receiver.received[1].id, receiver.received[0].id);
    assert.deepEqual(receiver.received[1].verifiedWith, receiver.secrets);
    assert.deepEqual(
      (await deliveries.listAttempts(id)).map((item) => [item.attempt, item.outcome]),
      [[2, "succeeded"], [1, "interrupted"]],
    );
    const done = await deliveries.getDelivery(id);
    assert.deepEqual(done && [done.status, done.attempts, done.tries], ["succeeded", 2, 1]);
  } finally {
    answer();
    await other.close();
    await receiver.close();
  }
});

Deno.test("A delivery cut off at every shutdown uses a try from its fourth interruption in a row on, and dies when none is left", async () => {
  const clock = { now: T0 };
  const now = () => clock.now;
  const deliveries = new MemoryDeliveryStore({ now });
  const receiver = await Receiver.start(now);
  const { promise: never, resolve: release } = Promise.withResolvers<void>();
  // A receiver that never answers before the process stops.
  receiver.respond = async () => {
    await never;
    return new Response(null, { status: 204 });
  };
  const policy = new UrlPolicy({ allow: ["127.0.0.1"] });
  const schedule = [0, 5_000];
  try {
    const endpoint = config("ep_a", { url: receiver.url() });
    receiver.secrets = [endpoint.secrets[0].secret];
    await deliveries.putEndpoint(endpoint, { expectVersion: null });
    await deliveries.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    const seen: [string, number, number, number][] = [];
    // Each instance sends it and is stopped before the receiver answers; a bound on instances
    // fails the test where the delivery would be sent again forever.
    for (let instance = 1; instance <= 20; instance++) {
      const sender = new Sender(deliveries, { policy, now, schedule, jitter: 0 });
      sender.kick();
      await receiver.waitFor(instance);
      await sender.close({ signal: AbortSignal.abort() });
      const cut = (await deliveries.getDelivery(id))!;
      seen.push([cut.status, cut.attempts, cut.tries, cut.interruptions]);
      if (cut.status === "dead") break;
      if (cut.nextAttemptMs !== null) clock.now = Math.max(clock.now, cut.nextAttemptMs);
    }
    assert.deepEqual(seen, [
      ["pending", 1, 0, 1],
      ["pending", 2, 0, 2],
      ["pending", 3, 0, 3],
      ["retrying", 4, 1, 4],
      ["dead", 5, 2, 5],
    ]);
    const log = await deliveries.listAttempts(id);
    assert.deepEqual(log.map((item) => [item.attempt, item.outcome, item.nextAttemptMs]), [
      [5, "interrupted", null],
      [4, "interrupted", T0 + 5_000],
      [3, "interrupted", T0],
      [2, "interrupted", T0],
      [1, "interrupted", T0],
    ]);
    assert.match(log[0].error!, /interruption 5 in a row \(over 3\) uses a try, and none is left/);
    const dead = (await deliveries.getDelivery(id))!;
    assert.deepEqual([dead.lastStatus, dead.lastError, dead.nextAttemptMs], [null, null, null]);
    assert.deepEqual(
      await deliveries.claimDue({
        nowMs: T0 + 86_400_000,
        limit: 1,
        leaseMs: 30_000,
        maxConcurrency: 8,
      }),
      [],
      "no longer sent",
    );
    assert.deepEqual(await deliveries.countDeliveries(), { pending: 0, dead: 1 });
  } finally {
    release();
    await receiver.close();
  }
});

Deno.test("An interrupted attempt keeps the delivery's lastStatus and lastError: the receiver's last failure", async () => {
  const clock = { now: T0 };
  const now = () => clock.now;
  const deliveries = new MemoryDeliveryStore({ now });
  const receiver = await Receiver.start(now);
  const { promise: never, resolve: release } = Promise.withResolvers<void>();
  receiver.respond = async (_request, index) => {
    if (index === 0) return new Response("down", { status: 503 });
    await never;
    return new Response(null, { status: 204 });
  };
  const policy = new UrlPolicy({ allow: ["127.0.0.1"] });
  try {
    const endpoint = config("ep_a", { url: receiver.url() });
    receiver.secrets = [endpoint.secrets[0].secret];
    await deliveries.putEndpoint(endpoint, { expectVersion: null });
    await deliveries.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    const first = new Sender(deliveries, { policy, now, jitter: 0 });
    assert.deepEqual(await first.deliverDue(), { attempted: 1, succeeded: 0, failed: 1 });
    await first.close();
    const failed = (await deliveries.getDelivery(id))!;
    assert.deepEqual([failed.lastStatus, failed.lastError], [503, "HTTP 503"]);
    clock.now = failed.nextAttemptMs!;
    const second = new Sender(deliveries, { policy, now, jitter: 0 });
    second.kick();
    await receiver.waitFor(2);
    await second.close({ signal: AbortSignal.abort() });
    const cut = (await deliveries.getDelivery(id))!;
    assert.deepEqual(
      [cut.status, cut.attempts, cut.tries, cut.interruptions, cut.lastStatus, cut.lastError],
      ["retrying", 2, 1, 1, 503, "HTTP 503"],
    );
    assert.equal((await deliveries.listAttempts(id))[0].outcome, "interrupted");
  } finally {
    release();
    await receiver.close();
  }
});

Deno.test("Sender.close(signal) during the URL check gives the claim back with nothing logged: nothing was sent", async () => {
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const { promise: resolved, resolve } = Promise.withResolvers<string[]>();
  const { promise: asked, resolve: ask } = Promise.withResolvers<void>();
  const policy = new UrlPolicy({
    resolve: () => {
      ask();
      return resolved;
    },
  });
  const sender = new Sender(deliveries, { policy, now: () => T0 });
  try {
    await deliveries.putEndpoint(config("ep_a", { url: "https://hook.example/" }), {
      expectVersion: null,
    });
    await deliveries.createDeliveries([delivery(1)]);
    sender.kick();
    await asked;
    await sender.close({ signal: AbortSignal.abort() });
    const released = await deliveries.getDelivery(delivery(1).id);
    assert.deepEqual(released && [released.status, released.attempts], ["pending", 0]);
    assert.deepEqual(await deliveries.listAttempts(delivery(1).id), []);
    assert.equal(
      (await deliveries.claimDue({
        nowMs: T0,
        limit: 1,
        leaseMs: 30_000,
        maxConcurrency: 8,
      })).length,
      1,
      "due again at once",
    );
  } finally {
    resolve(["93.184.215.14"]);
  }
});

Deno.test("Sender's attempt ends within its request timeout when the URL's lookup was slow: the lookup counts against it, so the attempt cannot outlast the claim's lease", async () => {
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const receiver = await Receiver.start(() => T0);
  const { promise: released, resolve: release } = Promise.withResolvers<void>();
  receiver.respond = async () => {
    await released;
    return new Response(null, { status: 204 });
  };
  const timeoutMs = 600;
  const policy = new UrlPolicy({
    allow: ["127.0.0.1"],
    // A resolver that answers after most of the timeout.
    resolve: () =>
      new Promise((resolve) => setTimeout(() => resolve(["127.0.0.1"]), timeoutMs / 2)),
  });
  const sender = new Sender(deliveries, { policy, now: () => T0, timeoutMs });
  try {
    const port = new URL(receiver.url()).port;
    await deliveries.putEndpoint(config("ep_a", { url: `http://hooks.test:${port}/hook` }), {
      expectVersion: null,
    });
    await deliveries.createDeliveries([delivery(1)]);
    const started = performance.now();
    assert.deepEqual(await sender.deliverDue(), { attempted: 1, succeeded: 0, failed: 1 });
    const elapsedMs = performance.now() - started;
    assert.equal(receiver.received.length, 1, "the POST went out after the lookup");
    const [attempt] = await deliveries.listAttempts(delivery(1).id);
    // Named as configured, not as what the lookup left of it (about 300 ms).
    assert.equal(attempt.error, "Timed out after 600 ms");
    assert.ok(
      elapsedMs < timeoutMs * 1.4,
      `lookup and POST took ${Math.round(elapsedMs)} ms, past the ${timeoutMs} ms timeout`,
    );
  } finally {
    release();
    await sender.close();
    await receiver.close();
  }
});

Deno.test("Sender's claim loop logs without the requestId of the request that kicked it (a replay, say): it goes on for every endpoint's deliveries after that reply", async () => {
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const refusing = Object.assign(Object.create(deliveries), {
    claimDue: () => Promise.reject(new Error("claims refused")),
  }) as DeliveryStore;
  const sender = new Sender(refusing, { policy: new UrlPolicy({ allow: ["127.0.0.1"] }) });
  await writtenLogs(async (lines) => {
    withContext({ requestId: "replay-1" }, () => sender.kick());
    await sender.idle();
    const [failure] = jsonLines(lines, "edgestream.webhooks");
    assert.match(failure?.message ?? "", /Webhook delivery failed: .*claims refused/);
    assert.equal(failure.requestId, undefined);
  });
  await sender.close();
});

Deno.test("Sender says the store unavailable to its claims once, at warning without stacks, and when it claims again", async () => {
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  let down = true;
  const flaky = Object.assign(Object.create(deliveries), {
    claimDue: (options: ClaimOptions) =>
      down
        ? Promise.reject(new StoreUnavailableError("Redis did not answer claimDue within 5000 ms"))
        : deliveries.claimDue(options),
  }) as DeliveryStore;
  const sender = new Sender(flaky, { policy: new UrlPolicy({ allow: ["127.0.0.1"] }) });
  await writtenLogs(async (lines) => {
    // Every send that ends, every sweep and dispatch kicks the claim loop: each claim fails.
    for (let i = 0; i < 3; i++) {
      sender.kick();
      await sender.idle();
    }
    down = false;
    sender.kick();
    await sender.idle();
    const said = jsonLines(lines, "edgestream.webhooks");
    assert.deepEqual(said.map((line) => line.level), ["warning", "info"], JSON.stringify(said));
    assert.equal(
      said[0].message,
      "Webhook delivery failed: StoreUnavailableError: Redis did not answer claimDue within 5000 ms",
    );
    assert.equal(typeof said[0].error, "string", "the error as one line of text, no stack");
    assert.match(
      said[1].message,
      /^Webhook deliveries claimed and recorded again after 3 failures since /,
    );
  });
  await sender.close();
});

/** Endpoints whose receiver never answers, 8 deliveries each, all claimed before the test goes on. */
async function stuckEndpoints(
  deliveries: DeliveryStore,
  options: { count: number; timeoutMs: number },
) {
  const stuck = await Receiver.start(() => T0);
  const healthy = await Receiver.start(() => T0);
  const { promise: never, resolve: release } = Promise.withResolvers<void>();
  stuck.respond = async () => {
    await never;
    return new Response(null, { status: 204 });
  };
  const failed: string[] = [];
  const sender = new Sender(deliveries, {
    policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
    now: () => T0,
    timeoutMs: options.timeoutMs,
    onAttempt: (claim, attempt) => {
      if (attempt.outcome !== "succeeded") failed.push(claim.endpoint.id);
    },
  });
  const stuckIds = Array.from({ length: options.count }, (_, i) => `ep_stuck${i + 1}`);
  for (const id of [...stuckIds, "ep_ok"]) {
    const receiver = id === "ep_ok" ? healthy : stuck;
    const endpoint = config(id, { url: receiver.url(`/${id}`) });
    receiver.secrets = [endpoint.secrets[0].secret];
    await deliveries.putEndpoint(endpoint, { expectVersion: null });
  }
  await deliveries.createDeliveries(
    stuckIds.flatMap((id) => Array.from({ length: 8 }, (_, n) => delivery(n + 1, id))),
  );
  sender.kick();
  // With the defaults (64 slots, 8 per endpoint): 48 go to the first 6 endpoints, 8 each, and
  // the 16 kept slots to one each of the next ones.
  const held = Math.min(48, 8 * options.count) + Math.min(16, Math.max(0, options.count - 6));
  await stuck.waitFor(held);
  return {
    stuck,
    healthy,
    sender,
    failed,
    held,
    /** Sends to each stuck endpoint, fewest first. */
    perEndpoint: () => stuckIds.map((id) => stuck.on(`/${id}`).length).sort((a, b) => a - b),
    /** Creates the healthy endpoint's 3 deliveries and starts sending them. */
    sendHealthy: async () => {
      await deliveries.createDeliveries([1, 2, 3].map((n) => delivery(n, "ep_ok")));
      sender.kick();
    },
    async close() {
      await sender.close({ signal: AbortSignal.abort() });
      release();
      await stuck.close();
      await healthy.close();
    },
  };
}

/** Resolves to "late" after `ms` unless `promise` resolves first. */
async function within(promise: Promise<void>, ms: number): Promise<"in time" | "late"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise.then(() => "in time" as const),
      new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), ms)),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * 15 endpoints whose receiver never answers, 8 deliveries each, then 3 for a healthy endpoint:
 * the stuck ones hold 48 slots + 1 each of 9 kept ones (57 of 64), and the healthy endpoint's
 * deliveries go out at once, long before the stuck sends time out.
 */
async function healthyEndpointPastStuckOnes(deliveries: DeliveryStore): Promise<void> {
  const timeoutMs = 4_000;
  const run = await stuckEndpoints(deliveries, { count: 15, timeoutMs });
  try {
    const started = performance.now();
    await run.sendHealthy();
    const arrived = await within(run.healthy.waitFor(3), timeoutMs / 2);
    const elapsedMs = Math.round(performance.now() - started);
    assert.equal(
      arrived,
      "in time",
      `the healthy endpoint got ${run.healthy.received.length} of 3 within ${elapsedMs} ms`,
    );
    assert.deepEqual(run.failed, [], "no stuck send timed out meanwhile");
    assert.deepEqual(
      run.healthy.received.map((item) => [item.payload.n, item.verifiedWith.length])
        .sort(([a], [b]) => a - b),
      [[1, 1], [2, 1], [3, 1]],
    );
    assert.equal(run.held, 57);
    assert.deepEqual(run.perEndpoint(), [...Array(9).fill(1), ...Array(6).fill(8)]);
    assert.ok(run.stuck.received.every((item) => item.verifiedWith.length === 1));
  } finally {
    await run.close();
  }
}

Deno.test("Sender (memory) sends a healthy endpoint's deliveries at once while 15 endpoints are stuck on sends that never answer", () =>
  healthyEndpointPastStuckOnes(new MemoryDeliveryStore({ now: () => T0 })));

redisTest(
  "Sender (Redis) sends a healthy endpoint's deliveries at once while 15 endpoints are stuck on sends that never answer",
  (fixture) =>
    healthyEndpointPastStuckOnes(
      new RedisDeliveryStore(
        restClient(fixture),
        { now: () => T0 },
      ),
    ),
);

Deno.test("Sender's 64 slots are all held by 22 stuck endpoints (6 with 8 sends, 16 with one): a healthy endpoint then waits for a slot", async () => {
  const timeoutMs = 3_000;
  const run = await stuckEndpoints(new MemoryDeliveryStore({ now: () => T0 }), {
    count: 22,
    timeoutMs,
  });
  try {
    assert.equal(run.held, 64);
    assert.deepEqual(run.perEndpoint(), [...Array(16).fill(1), ...Array(6).fill(8)]);
    await run.sendHealthy();
    assert.equal(await within(run.healthy.waitFor(1), timeoutMs / 6), "late");
    assert.equal(run.healthy.received.length, 0);
    assert.deepEqual(run.failed, [], "no stuck send timed out yet");
  } finally {
    await run.close();
  }
});

/**
 * 40 endpoints whose receiver never answers (request timeout 2 s): one delivery each first, and
 * once each of those has timed out (the endpoint is slow from then on), 10 more each at once, as
 * a burst of events would bring. Slow endpoints get at most 32 slots, one each: 32 go out, and a
 * healthy endpoint's 10 deliveries, created then, go out at once. Without that, with all 40 at
 * nothing in flight, 6 of them would take 48 slots (8 each) and 16 the 16 kept ones: the healthy
 * endpoint would wait for the next round of timeouts.
 */
async function healthyEndpointPastManySlowOnes(deliveries: DeliveryStore): Promise<void> {
  const timeoutMs = 2_000;
  const stuck = await Receiver.start(() => T0);
  const healthy = await Receiver.start(() => T0);
  const { promise: never, resolve: release } = Promise.withResolvers<void>();
  stuck.respond = async () => {
    await never;
    return new Response(null, { status: 204 });
  };
  const stuckIds = Array.from({ length: 40 }, (_, i) => `ep_stuck${i + 1}`);
  const finished = new Map<string, number>();
  const { promise: allTimedOut, resolve: everyOneTimedOut } = Promise.withResolvers<void>();
  // The clock stands still: a failed delivery is never due again, so each is sent once.
  const sender = new Sender(deliveries, {
    policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
    now: () => T0,
    timeoutMs,
    onAttempt: (claim) => {
      const id = claim.endpoint.id;
      if (id === "ep_ok") return;
      finished.set(id, (finished.get(id) ?? 0) + 1);
      if (finished.size === stuckIds.length) everyOneTimedOut();
    },
  });
  /** Sends to each stuck endpoint not answered yet. */
  const inFlight = () => stuckIds.map((id) => stuck.on(`/${id}`).length - (finished.get(id) ?? 0));
  try {
    for (const id of [...stuckIds, "ep_ok"]) {
      const receiver = id === "ep_ok" ? healthy : stuck;
      const endpoint = config(id, { url: receiver.url(`/${id}`) });
      receiver.secrets = [endpoint.secrets[0].secret];
      await deliveries.putEndpoint(endpoint, { expectVersion: null });
    }
    await deliveries.createDeliveries(stuckIds.map((id) => delivery(1, id)));
    sender.kick();
    assert.equal(await within(allTimedOut, 3 * timeoutMs), "in time", "each first send timed out");
    await sender.idle();
    await deliveries.createDeliveries(
      stuckIds.flatMap((id) => Array.from({ length: 10 }, (_, n) => delivery(n + 2, id))),
    );
    sender.kick();
    await stuck.waitFor(40 + 32);
    // Whatever else the stuck endpoints could claim, they have by now.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const held = inFlight();
    const started = performance.now();
    await deliveries.createDeliveries(
      Array.from({ length: 10 }, (_, n) => delivery(n + 1, "ep_ok")),
    );
    sender.kick();
    const arrived = await within(healthy.waitFor(10), timeoutMs / 4);
    const elapsedMs = Math.round(performance.now() - started);
    assert.equal(
      arrived,
      "in time",
      `the healthy endpoint got ${healthy.received.length} of 10 within ${elapsedMs} ms`,
    );
    assert.deepEqual(
      [...held].sort((a, b) => b - a),
      [...Array(32).fill(1), ...Array(8).fill(0)],
      "32 slow endpoints hold one slot each",
    );
    assert.deepEqual(inFlight(), held, "no stuck send ended or started meanwhile");
    assert.deepEqual(
      healthy.received.map((item) => item.payload.n).sort((a, b) => a - b),
      [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
    );
  } finally {
    await sender.close({ signal: AbortSignal.abort() });
    release();
    await stuck.close();
    await healthy.close();
  }
}

Deno.test("Sender (memory) sends a healthy endpoint's deliveries at once while 40 endpoints are stuck on sends that time out", () =>
  healthyEndpointPastManySlowOnes(new MemoryDeliveryStore({ now: () => T0 })));

redisTest(
  "Sender (Redis) sends a healthy endpoint's deliveries at once while 40 endpoints are stuck on sends that time out",
  (fixture) =>
    healthyEndpointPastManySlowOnes(
      new RedisDeliveryStore(
        restClient(fixture),
        { now: () => T0 },
      ),
    ),
);

/** The slow endpoints a claim of `sender` would name now, sorted; its slots freed again. */
function slowNow(sender: Sender): { ids: string[]; limit: number } | null {
  const reserved = sender.reserve(Infinity);
  assert.ok(reserved);
  sender.take(reserved, []);
  if (!reserved.slow) return null;
  return { ids: [...reserved.slow.endpointIds].sort(), limit: reserved.slow.limit };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("Sender counts an endpoint as slow while a send to it has waited slowAfterMs, and for slowForMs after one took that long", async () => {
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const receiver = await Receiver.start(() => T0);
  const { promise: stuckAnswer, resolve: answerStuck } = Promise.withResolvers<void>();
  receiver.respond = async (request) => {
    if (request.path === "/ep_slow") await sleep(300);
    if (request.path === "/ep_stuck") await stuckAnswer;
    return new Response(null, { status: request.path === "/ep_slow" ? 500 : 204 });
  };
  const ended = new Set<string>();
  const sender = new Sender(deliveries, {
    policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
    now: () => T0,
    slowAfterMs: 200,
    slowForMs: 800,
    onAttempt: (claim) => ended.add(claim.endpoint.id),
  });
  try {
    for (const id of ["ep_fast", "ep_slow", "ep_stuck"]) {
      const endpoint = config(id, { url: receiver.url(`/${id}`) });
      receiver.secrets = [endpoint.secrets[0].secret];
      await deliveries.putEndpoint(endpoint, { expectVersion: null });
      await deliveries.createDeliveries([delivery(1, id)]);
    }
    sender.kick();
    await receiver.waitFor(3);
    assert.equal(slowNow(sender), null, "none has taken 200 ms yet");
    while (!ended.has("ep_slow")) await sleep(10);
    // ep_slow's send took 300 ms and failed; ep_stuck's has waited as long; ep_fast answered.
    // One slow send is in flight (ep_stuck's): 31 of the 32 slow slots are left.
    assert.deepEqual(slowNow(sender), { ids: ["ep_slow", "ep_stuck"], limit: 31 });
    answerStuck();
    await sender.idle();
    assert.deepEqual(slowNow(sender), { ids: ["ep_slow", "ep_stuck"], limit: 32 });
    await sleep(1_000);
    assert.equal(slowNow(sender), null, "800 ms on without a slow send: none is slow");
  } finally {
    answerStuck();
    await sender.close();
    await receiver.close();
  }
});

Deno.test("Sender does not count an endpoint as slow while its answered send waits for the store to record it", async () => {
  const { promise: storeBack, resolve: bringStoreBack } = Promise.withResolvers<void>();
  // The receiver answers at once; the store takes its time recording the attempt (a stall).
  class StallingStore extends MemoryDeliveryStore {
    override async recordAttempt(record: AttemptRecord) {
      await storeBack;
      return super.recordAttempt(record);
    }
  }
  const deliveries = new StallingStore({ now: () => T0 });
  const receiver = await Receiver.start(() => T0);
  const sender = new Sender(deliveries, {
    policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
    now: () => T0,
    slowAfterMs: 200,
  });
  try {
    const endpoint = config("ep_fast", { url: receiver.url("/ep_fast") });
    receiver.secrets = [endpoint.secrets[0].secret];
    await deliveries.putEndpoint(endpoint, { expectVersion: null });
    await deliveries.createDeliveries([delivery(1, "ep_fast")]);
    sender.kick();
    await receiver.waitFor(1);
    await sleep(300);
    assert.ok(sender.busy, "the attempt is still being recorded");
    assert.equal(slowNow(sender), null, "answered at once: not slow");
    bringStoreBack();
    await sender.idle();
    assert.equal(slowNow(sender), null);
  } finally {
    bringStoreBack();
    await sender.close();
    await receiver.close();
  }
});

Deno.test("Sender counts an endpoint as slow once a send to it has waited 5 s by default", async () => {
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const receiver = await Receiver.start(() => T0);
  const { promise: answer, resolve: release } = Promise.withResolvers<void>();
  receiver.respond = async () => {
    await answer;
    return new Response(null, { status: 204 });
  };
  const sender = new Sender(deliveries, {
    policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
    now: () => T0,
  });
  try {
    const endpoint = config("ep_a", { url: receiver.url("/ep_a") });
    await deliveries.putEndpoint(endpoint, { expectVersion: null });
    await deliveries.createDeliveries([delivery(1, "ep_a")]);
    const started = performance.now();
    sender.kick();
    await receiver.waitFor(1);
    await sleep(4_000 - (performance.now() - started));
    assert.equal(slowNow(sender), null, "waiting 4 s is not slow yet");
    await sleep(5_050 - (performance.now() - started));
    assert.deepEqual(slowNow(sender), { ids: ["ep_a"], limit: 31 });
  } finally {
    release();
    await sender.close();
    await receiver.close();
  }
});

Deno.test("Sender counts an endpoint as slow for 60 s by default after a send to it took 5 s", async () => {
  // Only performance.now() is faked: the sender measures sends and slowness with it.
  const clock = FakeTimers.install({ toFake: ["performance"] });
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const receiver = await Receiver.start(() => T0);
  receiver.respond = () => {
    clock.tick(5_000);
    return new Response(null, { status: 204 });
  };
  const sender = new Sender(deliveries, {
    policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
    now: () => T0,
  });
  try {
    const endpoint = config("ep_a", { url: receiver.url("/ep_a") });
    await deliveries.putEndpoint(endpoint, { expectVersion: null });
    await deliveries.createDeliveries([delivery(1, "ep_a")]);
    const [claim] = await deliveries.claimDue({
      nowMs: T0,
      limit: 1,
      leaseMs: 60_000,
      maxConcurrency: 8,
    });
    assert.equal((await sender.attempt(claim))?.outcome, "succeeded");
    assert.deepEqual(slowNow(sender), { ids: ["ep_a"], limit: 32 }, "an answer after 5 s is slow");
    clock.tick(59_999);
    assert.deepEqual(slowNow(sender), { ids: ["ep_a"], limit: 32 });
    clock.tick(1);
    assert.equal(slowNow(sender), null, "60 s after");
  } finally {
    clock.uninstall();
    await sender.close();
    await receiver.close();
  }
});

Deno.test("Sender names at most the 1,000 most recently slow endpoints in a claim, however many are slow; one left out gets its usual cap", async () => {
  // Only performance.now() is faked: the sender measures sends and slowness with it.
  const clock = FakeTimers.install({ toFake: ["performance"] });
  const claims: ClaimOptions[] = [];
  class RecordingStore extends MemoryDeliveryStore {
    override claimDue(options: ClaimOptions) {
      claims.push(options);
      return super.claimDue(options);
    }
  }
  // More endpoints than the default EDGESTREAM_WEBHOOKS_MAX, as a deployment may allow.
  const deliveries = new RecordingStore({ now: () => T0, maxEndpoints: 2_000 });
  // Every lookup takes 2 ms and finds a private address: each send fails at once, and is slow.
  const policy = new UrlPolicy({
    resolve: () => {
      clock.tick(2);
      return Promise.resolve(["10.0.0.7"]);
    },
  });
  // Slow after 1 ms, for an hour: every endpoint sent to stays slow (the defaults allow ~830).
  const sender = new Sender(deliveries, {
    policy,
    now: () => T0,
    slowAfterMs: 1,
    slowForMs: 3_600_000,
  });
  // Ids as long as the registry's (`ep_` and 32 hex digits).
  const ids = Array.from({ length: 1_500 }, (_, n) => `ep_${String(n).padStart(32, "0")}`);
  const idBytes = (claim: ClaimOptions) =>
    (claim.slow?.endpointIds ?? []).reduce((bytes, id) => bytes + id.length + 5, 0);
  try {
    for (const id of ids) await deliveries.putEndpoint(config(id), { expectVersion: null });
    await deliveries.createDeliveries(ids.map((id) => delivery(1, id)));
    assert.equal((await sender.deliverDue()).failed, 1_500, "each endpoint got one slow send");
    const most = Math.max(...claims.map((claim) => claim.slow?.endpointIds.length ?? 0));
    assert.equal(most, 1_000, "the sender's own claims named 1,000 slow endpoints at most");
    assert.ok(Math.max(...claims.map(idBytes)) <= 40_000, "about 40 KB of ids at most");
    // Five endpoints slow again are the most recently slow: named, in place of five others.
    const again = ids.slice(0, 5);
    await deliveries.createDeliveries(again.map((id) => delivery(2, id)));
    for (
      const claim of await deliveries.claimDue({
        nowMs: T0,
        limit: 5,
        leaseMs: 60_000,
        maxConcurrency: 8,
      })
    ) {
      await sender.attempt(claim);
    }
    const named = slowNow(sender)!;
    assert.equal(named.ids.length, 1_000);
    for (const id of again) assert.ok(named.ids.includes(id), `${id} is named`);
    // A slow endpoint left out is claimed as any other, up to its cap of 8; a named one, 1.
    const left = ids.find((id) => !named.ids.includes(id))!;
    await deliveries.createDeliveries([
      ...Array.from({ length: 10 }, (_, n) => delivery(n + 10, left)),
      ...Array.from({ length: 10 }, (_, n) => delivery(n + 10, again[0])),
    ]);
    const reserved = sender.reserve(Infinity)!;
    const claimed = await deliveries.claimDue(reserved);
    sender.take(reserved, []);
    const per = (id: string) => claimed.filter((claim) => claim.endpoint.id === id).length;
    assert.deepEqual([per(left), per(again[0])], [8, 1]);
  } finally {
    clock.uninstall();
    await sender.close({ signal: AbortSignal.abort() });
  }
});

Deno.test("Sender leaves out a Trailer header stored by an earlier release, which no delivery to a host name could send, and warns once naming the endpoint", async () => {
  const deliveries = new MemoryDeliveryStore({ now: () => T0 });
  const receiver = await Receiver.start(() => T0);
  // Through the host name: node:http refused the Trailer on a body of known length, so every
  // delivery failed with "Trailers are invalid with this transfer encoding".
  const url = receiver.url().replace("127.0.0.1", "localhost");
  try {
    // Written straight into the store, as a release before registration refused it left it.
    const endpoint = config("ep_a", { url, headers: { Trailer: "x-sum", "X-Team": "ops" } });
    receiver.secrets = [endpoint.secrets[0].secret];
    await deliveries.putEndpoint(endpoint, { expectVersion: null });
    await deliveries.createDeliveries([delivery(1), delivery(2)]);
    const sender = new Sender(deliveries, {
      policy: new UrlPolicy({ allow: ["127.0.0.1"] }),
      now: () => T0,
    });
    await writtenLogs(async (lines) => {
      assert.deepEqual(await sender.deliverDue(), { attempted: 2, succeeded: 2, failed: 0 });
      const said = jsonLines(lines, "edgestream.webhooks");
      assert.deepEqual(said.map((line) => [line.level, line.message]), [[
        "warning",
        "Webhook endpoint ep_a has header 'Trailer', stored by an earlier release: it cannot be sent (a delivery's body has a Content-Length, so it has no trailers) and is left out; PATCH /v1/webhooks/ep_a with headers without it to stop this warning",
      ]]);
    });
    await sender.close();
    assert.equal(receiver.received.length, 2);
    for (const received of receiver.received) {
      assert.equal(received.headers.get("trailer"), null);
      assert.equal(received.headers.get("x-team"), "ops");
      assert.equal(received.verifiedWith.length, 1);
    }
  } finally {
    await receiver.close();
  }
});
