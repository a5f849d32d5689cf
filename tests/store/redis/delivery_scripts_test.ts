/**
 * The Redis delivery store's scripts when a key they write holds another type (something else
 * wrote over it) or a field holds what they cannot use: Redis keeps what a script wrote before one
 * of its commands failed, so each script reads or checks every key it may write before its first
 * write. A refused call writes nothing (no write command runs, no key changes) and names the key;
 * once the key is repaired (here: deleted) the same call goes through.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import type { Attempt, AttemptRecord, Claim, ClaimRelease } from "../../../src/store/deliveries.ts";
import { RedisDeliveryStore } from "../../../src/store/redis/delivery_store.ts";
import { StoreRefusedError } from "../../../src/store/types.ts";
import { type RedisFixture, redisTest, restClient } from "../../_redis.ts";
import { config, delivery, T0 } from "../_delivery_fixtures.ts";
import { refusedWhole, send, snapshot, WRITES } from "./_key_checks.ts";

const DAY = 86_400_000;
/** The default prefix of the delivery store's keys. */
const P = "es:{wh}:";

function deliveryStore(
  fixture: RedisFixture,
  options: { replayScan?: number } = {},
): RedisDeliveryStore {
  const redis = restClient(fixture);
  return new RedisDeliveryStore(redis, { now: () => T0, ...options });
}

function claimOptions(nowMs: number) {
  return { nowMs, limit: 100, leaseMs: 30_000, maxConcurrency: 100 };
}

function record(claim: Claim, outcome: "retrying" | "dead"): AttemptRecord {
  const attempt: Attempt = {
    attempt: 1,
    timeMs: T0 + 3_000,
    durationMs: 12,
    status: 500,
    error: "HTTP 500",
    responseExcerpt: "body",
    outcome,
    nextAttemptMs: outcome === "retrying" ? T0 + 60_000 : null,
  };
  return {
    deliveryId: claim.delivery.id,
    endpointId: claim.delivery.endpointId,
    token: claim.token,
    attempt,
    nowMs: T0 + 3_000,
    disableAfterMs: 5 * DAY,
    failingReason: "Failing",
  };
}

/** The command that writes `field` of the hash at `key` as `value`, its other fields kept. */
async function withField(
  fixture: RedisFixture,
  key: string,
  field: string,
  value: string,
): Promise<string[]> {
  const fields = await send(fixture, "HGETALL", key) as string[];
  return ["HSET", key, ...fields, field, value];
}

/** ep_a with delivery 1, claimed. */
async function oneClaim(store: RedisDeliveryStore): Promise<Claim> {
  await store.putEndpoint(config("ep_a"), { expectVersion: null });
  await store.createDeliveries([delivery(1)]);
  const claims = await store.claimDue(claimOptions(T0 + 2_000));
  assert.equal(claims.length, 1);
  return claims[0];
}

for (
  const [what, key, call] of [
    ["a new endpoint finds the endpoints index a string", "endpoints", "create"],
    ["an update finds the endpoint's state a string", "eps:ep_a", "update"],
    ["an update finds the endpoint's JSON no object", "ep:ep_a", "update"],
  ] as const
) {
  redisTest(`putEndpoint(): ${what} and writes nothing`, async (fixture) => {
    const store = deliveryStore(fixture);
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    const put = () =>
      call === "create"
        ? store.putEndpoint(config("ep_b"), { expectVersion: null })
        : store.putEndpoint(config("ep_a", { version: 2 }), { expectVersion: 1 });
    const corrupt = key === "ep:ep_a" ? ["SET", P + key, "[1"] : ["SET", P + key, "x"];
    await refusedWhole(fixture, P + key, { corrupt, call: put });
    if (key === "ep:ep_a") {
      // Deleted as the repair: the endpoint is made again.
      assert.ok(await store.putEndpoint(config("ep_a"), { expectVersion: null }));
    } else {
      assert.ok(await put());
      const id = call === "create" ? "ep_b" : "ep_a";
      assert.equal((await store.getEndpoint(id))?.version, call === "create" ? 1 : 2);
    }
  });
}

for (const key of ["endpoints", "qe"]) {
  redisTest(
    `deleteEndpoint() that finds ${key} a string deletes nothing; repaired, it deletes`,
    async (fixture) => {
      const store = deliveryStore(fixture);
      await store.putEndpoint(config("ep_a"), { expectVersion: null });
      await store.createDeliveries([delivery(1)]);
      await refusedWhole(fixture, P + key, {
        corrupt: ["SET", P + key, "x"],
        call: () => store.deleteEndpoint("ep_a"),
      });
      assert.equal(await store.deleteEndpoint("ep_a"), true);
      assert.equal(await store.getEndpoint("ep_a"), null);
    },
  );
}

redisTest(
  "deleteEndpoint() at a version that finds the endpoint's JSON no object deletes nothing and names the key",
  async (fixture) => {
    const store = deliveryStore(fixture);
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await refusedWhole(fixture, P + "ep:ep_a", {
      corrupt: ["SET", P + "ep:ep_a", "[1"],
      call: () => store.deleteEndpoint("ep_a", { expectVersion: 1 }),
    });
  },
);

for (
  const [what, call] of [
    ["getEndpoint()", (store: RedisDeliveryStore) => store.getEndpoint("ep_a")],
    ["listEndpoints()", (store: RedisDeliveryStore) => store.listEndpoints()],
    ["listEndpointsVersioned()", (store: RedisDeliveryStore) => store.listEndpointsVersioned()],
    ["pageEndpoints()", (store: RedisDeliveryStore) => store.pageEndpoints({ limit: 10 })],
    [
      "openDispatch()",
      (store: RedisDeliveryStore) =>
        store.openDispatch("s", { lease: "dispatch:s", leaseMs: 60_000, listEndpoints: true }),
    ],
    ["claimDue()", (store: RedisDeliveryStore) => store.claimDue(claimOptions(T0 + 2_000))],
  ] as const
) {
  redisTest(
    `${what} that finds an endpoint's JSON overwritten with other text names the key`,
    async (fixture) => {
      const store = deliveryStore(fixture);
      await store.putEndpoint(config("ep_a"), { expectVersion: null });
      await store.createDeliveries([delivery(1)]);
      for (const text of ["not json", "[1,2]", '{"id":"ep_a"}']) {
        await refusedWhole(fixture, P + "ep:ep_a", {
          corrupt: ["SET", P + "ep:ep_a", text],
          call: () => call(store),
        });
      }
    },
  );
}

redisTest(
  "openDispatch() that finds the stream's cursor a string takes no lease; repaired, it does",
  async (fixture) => {
    const store = deliveryStore(fixture);
    const open = () => store.openDispatch("s", { lease: "dispatch:s", leaseMs: 60_000 });
    await refusedWhole(fixture, P + "cur:s", { corrupt: ["SET", P + "cur:s", "x"], call: open });
    assert.notEqual((await open()).lease, null);
  },
);

for (const key of ["q:ep_a", "ix:ep_a", "qe"]) {
  redisTest(
    `createDeliveries() that finds ${key} a string creates nothing; repaired, it creates`,
    async (fixture) => {
      const store = deliveryStore(fixture);
      await store.putEndpoint(config("ep_a"), { expectVersion: null });
      await store.createDeliveries([delivery(1)]);
      await refusedWhole(fixture, P + key, {
        corrupt: ["SET", P + key, "x"],
        call: () => store.createDeliveries([delivery(2)]),
      });
      assert.equal(await store.createDeliveries([delivery(2)]), 1);
      assert.ok(await store.getDelivery(delivery(2).id));
    },
  );
}

for (
  const [what, key, corrupt] of [
    ["the in-flight set of an endpoint due before the page", "f:ep_a", ["SET", "x"]],
    ["the state of the endpoint the page makes due", "eps:ep_b", ["SET", "x"]],
    ["the lease it gives back", "lease:dispatch:s", ["HSET", "f", "1"]],
  ] as const
) {
  redisTest(
    `storePage() that finds ${what} of another type stores nothing; repaired, it stores`,
    async (fixture) => {
      const store = deliveryStore(fixture);
      await store.putEndpoint(config("ep_a"), { expectVersion: null });
      await store.putEndpoint(config("ep_b"), { expectVersion: null });
      await store.createDeliveries([delivery(1)]);
      const token = (await store.acquireLease("dispatch:s", 60_000))!;
      const page = {
        cursor: null,
        end: "1-0",
        deliveries: [delivery(2, "ep_b")],
        releaseLease: { name: "dispatch:s", token },
        claim: claimOptions(T0 + 2_000),
      };
      await refusedWhole(fixture, P + key, {
        corrupt: [corrupt[0], P + key, ...corrupt.slice(1)],
        call: () => store.storePage("s", page),
      });
      const stored = await store.storePage("s", page);
      assert.equal(stored?.created, 1);
      assert.ok(stored.claims.some((claim) => claim.delivery.id === delivery(2, "ep_b").id));
      assert.deepEqual(await store.dispatchState("s"), { cursor: "1-0", planEnd: null });
    },
  );
}

for (
  const [what, key, disabled] of [
    ["the second endpoint's delivery a string", `d:${delivery(2, "ep_b").id}`, false],
    ["the second endpoint's state a string", "eps:ep_b", false],
    ["the second endpoint's queue a string", "q:ep_b", false],
    ["the second endpoint's in-flight set a string", "f:ep_b", false],
    ["the second endpoint's rate-limit bucket a string", "rl:ep_b", false],
    ["the second, disabled endpoint's delivery a string", `d:${delivery(2, "ep_b").id}`, true],
    ["the second, disabled endpoint's dead set a string", "dd:ep_b", true],
  ] as const
) {
  redisTest(
    `claimDue() that finds ${what} claims nothing; repaired, it claims`,
    async (fixture) => {
      const store = deliveryStore(fixture);
      await store.putEndpoint(config("ep_a"), { expectVersion: null });
      await store.putEndpoint(config("ep_b", { rateLimit: 5 }), {
        expectVersion: null,
        state: { disabled },
      });
      await store.createDeliveries([delivery(1), delivery(2, "ep_b", T0 + 1_000)]);
      const claim = () => store.claimDue(claimOptions(T0 + 2_000));
      await refusedWhole(fixture, P + key, { corrupt: ["SET", P + key, "x"], call: claim });
      const claims = await claim();
      assert.ok(claims.some((made) => made.delivery.id === delivery(1).id));
    },
  );
}

redisTest(
  "claimDue() takes a rate-limit bucket holding text as a full one: no error",
  async (fixture) => {
    const store = deliveryStore(fixture);
    await store.putEndpoint(config("ep_a", { rateLimit: 5 }), { expectVersion: null });
    await store.createDeliveries([1, 2, 3, 4, 5, 6].map((n) => delivery(n)));
    await send(fixture, "HSET", P + "rl:ep_a", "tk", "x", "ts", "y");
    const claims = await store.claimDue(claimOptions(T0 + 2_000));
    assert.equal(claims.length, 5, "a full bucket: the burst of 5/s");
  },
);

redisTest(
  "claimDue() takes a bucket of fewer than no tokens as a full one, and one updated in the future as updated now",
  async (fixture) => {
    const store = deliveryStore(fixture);
    await store.putEndpoint(config("ep_a", { rateLimit: 5 }), { expectVersion: null });
    await store.createDeliveries([1, 2, 3, 4, 5, 6, 7, 8].map((n) => delivery(n)));
    const now = T0 + 2_000;
    await send(fixture, "HSET", P + "rl:ep_a", "tk", "-1000000", "ts", String(now));
    assert.equal((await store.claimDue(claimOptions(now))).length, 5, "a full bucket");
    // Two tokens left, "updated" a year ahead: the two now, not none until then.
    await send(fixture, "HSET", P + "rl:ep_a", "tk", "2", "ts", String(now + 365 * 86_400_000));
    assert.equal((await store.claimDue(claimOptions(now + 1))).length, 2);
  },
);

for (
  const [what, key, outcome] of [
    ["the delivery's tries holding text", "d", "retrying"],
    ["the attempt log a string", "a", "retrying"],
    ["the endpoint's state a string", "eps:ep_a", "retrying"],
    ["the endpoint's dead set a string", "dd:ep_a", "dead"],
    ["the endpoints due a string", "qe", "retrying"],
  ] as const
) {
  redisTest(`recordAttempt() that finds ${what} records nothing`, async (fixture) => {
    const store = deliveryStore(fixture);
    const claim = await oneClaim(store);
    const full = key === "d" || key === "a" ? `${P}${key}:${claim.delivery.id}` : P + key;
    const corrupt = key === "d" ? await withField(fixture, full, "tries", "x") : ["SET", full, "x"];
    await refusedWhole(fixture, full, {
      corrupt,
      call: () => store.recordAttempt(record(claim, outcome)),
    });
    // The delivery itself deleted as the repair: nothing left to record.
    if (key !== "d") {
      assert.equal((await store.recordAttempt(record(claim, outcome))).recorded, true);
    }
  });
}

for (const key of ["qe", "f:ep_a"]) {
  redisTest(
    `releaseClaim() that finds ${key} a string gives nothing back; repaired, it does`,
    async (fixture) => {
      const store = deliveryStore(fixture);
      const claim = await oneClaim(store);
      const release = { deliveryId: claim.delivery.id, endpointId: "ep_a", token: claim.token };
      await refusedWhole(fixture, P + key, {
        corrupt: ["SET", P + key, "x"],
        call: () => store.releaseClaim(release),
      });
      assert.equal(await store.releaseClaim(release), true);
    },
  );
}

/** The release of `claim` with its attempt cut off after the POST started. */
function cutRelease(claim: Claim): ClaimRelease {
  const attempt: Attempt = {
    attempt: 1,
    timeMs: T0 + 3_000,
    durationMs: 12,
    status: null,
    error: "Cut off",
    responseExcerpt: "",
    outcome: "interrupted",
    nextAttemptMs: T0 + 3_012,
  };
  return {
    deliveryId: claim.delivery.id,
    endpointId: claim.delivery.endpointId,
    token: claim.token,
    cutOff: { attempt, nowMs: T0 + 3_012 },
  };
}

for (const [what, key] of [["the attempt log a string", "a"], ["attempts no integer", "d"]]) {
  redisTest(
    `releaseClaim() of a cut-off attempt that finds ${what} gives nothing back; repaired, it does`,
    async (fixture) => {
      const store = deliveryStore(fixture);
      const claim = await oneClaim(store);
      const full = `${P}${key}:${claim.delivery.id}`;
      const corrupt = key === "d"
        ? await withField(fixture, full, "attempts", "1.5")
        : ["SET", full, "x"];
      await refusedWhole(fixture, full, {
        corrupt,
        call: () => store.releaseClaim(cutRelease(claim)),
      });
      // The delivery itself deleted as the repair: nothing left to give back.
      assert.equal(await store.releaseClaim(cutRelease(claim)), key === "a");
    },
  );
}

redisTest(
  "a delivery attempted before intr and first were written reads as 0 interruptions and no first time, and gets none later",
  async (fixture) => {
    const store = deliveryStore(fixture);
    const claim = await oneClaim(store);
    const key = `${P}d:${claim.delivery.id}`;
    // As a delivery hash looked before these fields: attempted 3 times, none of them logged now.
    await send(fixture, "HSET", key, "attempts", "3", "tries", "3");
    await send(fixture, "HDEL", key, "intr", "first");
    const before = await store.getDelivery(claim.delivery.id);
    assert.deepEqual(before && [before.attempts, before.interruptions, before.firstAttemptMs], [
      3,
      0,
      null,
    ]);
    const cut: Attempt = {
      attempt: 4,
      timeMs: T0 + 3_000,
      durationMs: 5,
      status: null,
      error: "Cut off",
      responseExcerpt: "",
      outcome: "interrupted",
      nextAttemptMs: T0 + 3_005,
    };
    const release = { deliveryId: claim.delivery.id, endpointId: "ep_a", token: claim.token };
    assert.equal(
      await store.releaseClaim({ ...release, cutOff: { attempt: cut, nowMs: T0 + 3_005 } }),
      true,
    );
    const [again] = await store.claimDue(claimOptions(T0 + 4_000));
    assert.equal((await store.recordAttempt({ ...record(again, "retrying") })).recorded, true);
    const after = await store.getDelivery(claim.delivery.id);
    assert.deepEqual(after && [after.attempts, after.interruptions, after.firstAttemptMs], [
      5,
      0,
      null,
    ], "its 4th and 5th attempts are not its first");
  },
);

redisTest("releaseClaim() of a delivery whose next is NaN makes it due now", async (fixture) => {
  const store = deliveryStore(fixture);
  const claim = await oneClaim(store);
  await send(fixture, "HSET", `${P}d:${claim.delivery.id}`, "next", "nan");
  const release = { deliveryId: claim.delivery.id, endpointId: "ep_a", token: claim.token };
  assert.equal(await store.releaseClaim(release), true);
  assert.equal(await send(fixture, "ZSCORE", P + "q:ep_a", claim.delivery.id), String(T0));
});

for (const key of ["f:ep_a", "q:ep_a", "qe"]) {
  redisTest(
    `retry() that finds ${key} a string requeues nothing; repaired, it requeues`,
    async (fixture) => {
      const store = deliveryStore(fixture);
      const claim = await oneClaim(store);
      await store.recordAttempt(record(claim, "dead"));
      await refusedWhole(fixture, P + key, {
        corrupt: ["SET", P + key, "x"],
        call: () => store.retry(claim.delivery.id, T0 + 10_000),
      });
      assert.equal(await store.retry(claim.delivery.id, T0 + 10_000), "requeued");
    },
  );
}

for (
  const [what, key, count] of [
    ["the queue a string", "q:ep_a", 2],
    ["the second delivery a string", `d:${delivery(2).id}`, 1],
  ] as const
) {
  redisTest(
    `replay() that finds ${what} requeues nothing; repaired, it requeues`,
    async (fixture) => {
      const store = deliveryStore(fixture);
      await store.putEndpoint(config("ep_a"), { expectVersion: null });
      await store.createDeliveries([delivery(1), delivery(2, "ep_a", T0 + 1_000)]);
      for (const claim of await store.claimDue(claimOptions(T0 + 2_000))) {
        await store.recordAttempt(record(claim, "dead"));
      }
      const replay = () => store.replay("ep_a", { sinceMs: T0, nowMs: T0 + 10_000 });
      await refusedWhole(fixture, P + key, { corrupt: ["SET", P + key, "x"], call: replay });
      assert.equal(await replay(), count);
    },
  );
}

redisTest(
  "replay() in pages that finds a delivery a string on its second page keeps the first page replayed and requeues nothing more; repaired, the same replay requeues the rest",
  async (fixture) => {
    const store = deliveryStore(fixture, { replayScan: 2 });
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([1, 2, 3, 4, 5, 6].map((n) => delivery(n, "ep_a", T0 + n)));
    for (const claim of await store.claimDue(claimOptions(T0 + 2_000))) {
      await store.recordAttempt(record(claim, "dead"));
    }
    // Delivery 4's hash, on the second page (3 and 4), overwritten with text.
    const key = `${P}d:${delivery(4).id}`;
    await send(fixture, "SET", key, "x");
    const replay = () => store.replay("ep_a", { sinceMs: T0, nowMs: T0 + 10_000 });
    await assert.rejects(
      replay(),
      (error) => error instanceof StoreRefusedError && error.message.includes(key),
    );
    // Delivery 4 left out: its hash is what fails.
    const statuses = async () =>
      await Promise.all(
        [1, 2, 3, 5, 6].map(async (n) => (await store.getDelivery(delivery(n).id))?.status),
      );
    // Each page is one script call, refused whole: the first page stays replayed, the third is
    // not reached.
    assert.deepEqual(await statuses(), ["pending", "pending", "dead", "dead", "dead"]);
    await send(fixture, "DEL", key);
    assert.equal(await replay(), 3);
    assert.deepEqual(await statuses(), ["pending", "pending", "pending", "pending", "pending"]);
  },
);

/** The delivery store's writing calls, as the property below makes them. */
const CALLS = [
  "storePage",
  "claimDue",
  "createDeliveries",
  "recordAttempt",
  "releaseClaim",
  "retry",
  "replay",
  "putEndpoint",
  "deleteEndpoint",
  "openDispatch",
  "beginPage",
  "commitPage",
  "acquireLease",
  "releaseLease",
] as const;

/** Fields written over with what the scripts never write: [key name, field, value]. */
const FIELDS = [
  ["d", "tries", "x"],
  ["d", "attempts", "1.5"],
  ["d", "next", "nan"],
  ["d", "until", "x"],
  ["eps", "rate", "x"],
  ["eps", "rate", "0"],
  ["eps", "rate", "inf"],
  ["eps", "fail", "x"],
  ["rl", "tk", "x"],
  ["rl", "ts", "nan"],
] as const;

redisTest(
  "every writing call, whatever key or field it finds corrupted, applies whole or writes nothing",
  async (fixture) => {
    const store = deliveryStore(fixture);
    const spot = fc.tuple(fc.nat(3), fc.nat(5_000));
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          endpoints: fc.array(
            fc.record({ disabled: fc.boolean(), rate: fc.constantFrom(null, 1, 3) }),
            { minLength: 1, maxLength: 4 },
          ),
          existing: fc.array(spot, { maxLength: 8 }),
          page: fc.array(spot, { minLength: 1, maxLength: 4 }),
          before: fc.nat(4),
          recorded: fc.nat(2),
          leased: fc.boolean(),
          limit: fc.integer({ min: 1, max: 4 }),
          maxConcurrency: fc.integer({ min: 1, max: 3 }),
          call: fc.constantFrom(...CALLS),
          pick: fc.nat(),
          field: fc.option(fc.constantFrom(...FIELDS)),
          corrupt: fc.nat(),
        }),
        async (c) => {
          await send(fixture, "FLUSHALL");
          const ids = c.endpoints.map((_, i) => `ep_${i}`);
          for (const [i, endpoint] of c.endpoints.entries()) {
            await store.putEndpoint(config(ids[i], { rateLimit: endpoint.rate }), {
              expectVersion: null,
              state: { disabled: endpoint.disabled },
            });
          }
          const at = ([ep, offset]: [number, number], n: number) =>
            delivery(n, ids[ep % ids.length], T0 + offset);
          const existing = c.existing.map((where, n) => at(where, n));
          await store.createDeliveries(existing);
          const held = c.before > 0
            ? await store.claimDue({
              ...claimOptions(T0 + 6_000),
              limit: c.before,
              maxConcurrency: 2,
            })
            : [];
          for (const [i, claim] of held.splice(0, c.recorded).entries()) {
            await store.recordAttempt(record(claim, i % 2 === 0 ? "dead" : "retrying"));
          }
          const token = c.leased ? await store.acquireLease("dispatch:s", 60_000) : null;

          const keys = ["endpoints", "qe", "cur:s", "lease:dispatch:s"];
          for (const id of ids) {
            for (const name of ["ep", "eps", "q", "f", "rl", "dd", "ix"]) {
              keys.push(`${name}:${id}`);
            }
          }
          for (const { id } of existing) keys.push(`d:${id}`, `a:${id}`);
          let key: string;
          let corrupt: string[];
          if (c.field) {
            const [name, field, value] = c.field;
            const of = name === "d" ? existing.map(({ id }) => id) : ids;
            key = `${P}${name}:${of[c.corrupt % Math.max(1, of.length)] ?? "none"}`;
            corrupt = ["HSET", key, field, value];
          } else {
            key = P + keys[c.corrupt % keys.length];
            await send(fixture, "DEL", key);
            const isString = /:(ep|lease):/.test(key);
            corrupt = isString ? ["HSET", key, "f", "1"] : ["SET", key, "x"];
          }
          await send(fixture, ...corrupt);

          const claim = {
            ...claimOptions(T0 + 10_000),
            limit: c.limit,
            maxConcurrency: c.maxConcurrency,
          };
          const endpoint = ids[c.pick % ids.length];
          const calls: Record<(typeof CALLS)[number], () => Promise<unknown>> = {
            storePage: () =>
              store.storePage("s", {
                cursor: null,
                end: "1-0",
                deliveries: c.page.map((where, n) => at(where, 100 + n)),
                releaseLease: token ? { name: "dispatch:s", token } : undefined,
                claim,
              }),
            claimDue: () => store.claimDue(claim),
            createDeliveries: () =>
              store.createDeliveries(c.page.map((where, n) => at(where, 100 + n))),
            recordAttempt: () =>
              held[0]
                ? store.recordAttempt(record(held[0], c.pick % 2 === 0 ? "dead" : "retrying"))
                : store.claimDue(claim),
            releaseClaim: () =>
              held[0]
                ? store.releaseClaim(
                  c.pick % 2 === 0 ? cutRelease(held[0]) : {
                    deliveryId: held[0].delivery.id,
                    endpointId: held[0].delivery.endpointId,
                    token: held[0].token,
                  },
                )
                : store.claimDue(claim),
            retry: () =>
              store.retry(
                existing[c.pick % Math.max(1, existing.length)]?.id ?? "none",
                T0 + 10_000,
              ),
            replay: () => store.replay(endpoint, { sinceMs: T0, nowMs: T0 + 10_000 }),
            putEndpoint: () =>
              c.pick % 2 === 0
                ? store.putEndpoint(config(endpoint, { version: 2, rateLimit: 2 }), {
                  expectVersion: 1,
                  state: { disabled: false, disabledReason: null, failingSinceMs: null },
                })
                : store.putEndpoint(config("ep_new"), { expectVersion: null }),
            deleteEndpoint: () => store.deleteEndpoint(endpoint),
            openDispatch: () =>
              store.openDispatch("s", {
                lease: "dispatch:s",
                leaseMs: 60_000,
                listEndpoints: c.pick % 2 === 0,
              }),
            beginPage: () => store.beginPage("s", null, "1-0"),
            commitPage: () => store.commitPage("s", null, "1-0"),
            acquireLease: () => store.acquireLease("dispatch:s", 60_000),
            releaseLease: () => store.releaseLease("dispatch:s", token ?? "none"),
          };
          const before = await snapshot(fixture);
          await send(fixture, "CONFIG", "RESETSTAT");
          try {
            await calls[c.call]();
          } catch (error) {
            refused++;
            assert.match(String(error), /WRONGTYPE edgestream key /);
            const info = String(await send(fixture, "INFO", "commandstats"));
            const ran = [...info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)].map((match) => match[1]);
            assert.deepEqual(ran.filter((name) => WRITES.includes(name)), [], info);
            assert.deepEqual(await snapshot(fixture), before);
          }
        },
      ),
      { numRuns: 500 },
    );
    assert.ok(refused >= 5, `only ${refused} of the calls were refused`);
  },
);
