import assert from "node:assert/strict";
import fc from "fast-check";
import {
  RETRY_SCHEDULE_MS,
  retryDelayMs,
  Sender,
  UrlPolicy,
} from "../../../src/fanout/webhooks/mod.ts";
import {
  type Claim,
  type ClaimOptions,
  type DeliveryStore,
  MemoryDeliveryStore,
} from "../../../src/store/mod.ts";

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
