/**
 * One contract suite for the delivery store, run against the memory and the
 * Redis implementation: endpoints with optimistic versions, idempotent
 * deliveries, leased claims with per-endpoint caps, attempt records with
 * endpoint health, retry and replay, dispatch cursors, pages and leases.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import fc from "fast-check";
import {
  type Attempt,
  type AttemptRecord,
  type Claim,
  type Delivery,
  type DeliveryStore,
  encodeCursor,
  InvalidCursorError,
  MAX_ATTEMPTS_LOGGED,
  type NewDelivery,
  type Page,
} from "../../src/store/deliveries.ts";
import { StoredLimitError } from "../../src/store/limits.ts";
import { StoreUnavailableError } from "../../src/store/types.ts";
import { MemoryDeliveryStore } from "../../src/store/memory/delivery_store.ts";
import { RedisDeliveryStore } from "../../src/store/redis/delivery_store.ts";
import type { RedisScriptClient } from "../../src/store/redis/call.ts";
import { type RedisFixture, redisTest, restClient, withDirect } from "../_redis.ts";
import { type DroppingProxy, startDroppingProxy } from "../_upstash_proxy.ts";
import { config, delivery, T0 } from "./_delivery_fixtures.ts";

const LEASE = 30_000;
const DAY = 86_400_000;

function attempt(
  outcome: Attempt["outcome"],
  nextAttemptMs: number | null,
  status: number | null = outcome === "succeeded" ? 200 : 500,
): Attempt {
  return {
    attempt: 1,
    timeMs: T0,
    durationMs: 12,
    status,
    error: outcome === "succeeded" ? null : `HTTP ${status}`,
    responseExcerpt: "body",
    outcome,
    nextAttemptMs,
  };
}

/** An attempt numbered `n`, started at `timeMs`, that a stopping sender cut off before an answer. */
function interrupted(n: number, timeMs: number): Attempt {
  return {
    attempt: n,
    timeMs,
    durationMs: 7,
    status: null,
    error: "Cut off: this instance stopped before the receiver answered; sent again at once",
    responseExcerpt: "",
    outcome: "interrupted",
    nextAttemptMs: timeMs + 7,
  };
}

/** The record of an attempt under `claim` that its endpoint answered 410 Gone: dead, disabling it. */
function goneRecord(claim: Claim): AttemptRecord {
  return {
    deliveryId: claim.delivery.id,
    endpointId: claim.endpoint.id,
    token: claim.token,
    attempt: attempt("dead", null, 410),
    nowMs: T0,
    disableReason: "Endpoint answered 410 Gone",
    disableAfterMs: 5 * DAY,
    failingReason: "Failing",
  };
}

function claimOptions(nowMs: number, overrides: { limit?: number; maxConcurrency?: number } = {}) {
  return {
    nowMs,
    limit: overrides.limit ?? 100,
    leaseMs: LEASE,
    maxConcurrency: 100,
    ...overrides,
  };
}

type Scenario = (store: DeliveryStore) => Promise<void>;

const scenarios: Record<string, Scenario> = {
  async "putEndpoint() creates once and updates only the expected version, returning what it stored"(
    store,
  ) {
    const created = await store.putEndpoint(config("ep_a"), { expectVersion: null });
    assert.deepEqual(created, await store.getEndpoint("ep_a"));
    assert.equal(await store.putEndpoint(config("ep_a"), { expectVersion: null }), null);
    assert.equal(
      await store.putEndpoint(config("ep_a", { url: "https://x.test/", version: 2 }), {
        expectVersion: 7,
      }),
      null,
    );
    const changed = await store.putEndpoint(
      config("ep_a", { url: "https://x.test/", version: 2 }),
      {
        expectVersion: 1,
      },
    );
    assert.equal(
      await store.putEndpoint(config("ep_missing"), { expectVersion: 1 }),
      null,
      "an update of a missing endpoint must not create it",
    );
    const endpoint = await store.getEndpoint("ep_a");
    assert.deepEqual(endpoint, {
      ...config("ep_a", { url: "https://x.test/", version: 2 }),
      disabled: false,
      disabledReason: null,
      failingSinceMs: null,
    });
    assert.deepEqual(changed, endpoint);
    assert.equal(await store.getEndpoint("ep_missing"), null);
  },

  async "putEndpoint() returns the state it stored with: kept, or as given, not a later one's"(
    store,
  ) {
    const created = await store.putEndpoint(config("ep_a"), {
      expectVersion: null,
      state: { disabled: true, disabledReason: "By its owner" },
    });
    assert.deepEqual(
      [created?.disabled, created?.disabledReason, created?.failingSinceMs],
      [true, "By its owner", null],
    );
    // Without state, the stored one stays and is returned with the new config.
    const kept = await store.putEndpoint(config("ep_a", { description: "d", version: 2 }), {
      expectVersion: 1,
    });
    assert.deepEqual(kept, {
      ...config("ep_a", { description: "d", version: 2 }),
      disabled: true,
      disabledReason: "By its owner",
      failingSinceMs: null,
    });
    const enabled = await store.putEndpoint(config("ep_a", { version: 3 }), {
      expectVersion: 2,
      state: { disabled: false, disabledReason: null },
    });
    await store.putEndpoint(config("ep_a", { version: 4 }), {
      expectVersion: 3,
      state: { disabled: true, disabledReason: "Later" },
    });
    assert.deepEqual([enabled?.version, enabled?.disabled, enabled?.disabledReason], [
      3,
      false,
      null,
    ]);
  },

  async "putEndpoint() with expectDisabled writes only over that state: not over a 410's disable, which moves no version"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const [claim] = await store.claimDue(claimOptions(T0));
    assert.deepEqual(await store.recordAttempt(goneRecord(claim)), {
      recorded: true,
      disabled: true,
    });
    const enabling = {
      expectVersion: 1,
      expectDisabled: false,
      state: { disabled: false, disabledReason: null, failingSinceMs: null },
    };
    assert.equal(await store.putEndpoint(config("ep_a", { version: 2 }), enabling), null);
    const disabled = await store.getEndpoint("ep_a");
    assert.deepEqual(
      [disabled?.version, disabled?.disabled, disabled?.disabledReason],
      [1, true, "Endpoint answered 410 Gone"],
    );
    const written = await store.putEndpoint(config("ep_a", { version: 2 }), {
      ...enabling,
      expectDisabled: true,
    });
    assert.deepEqual([written?.version, written?.disabled], [2, false]);
    assert.deepEqual(written, await store.getEndpoint("ep_a"));
  },

  async "listEndpoints() lists oldest first with state; deleteEndpoint() removes one"(store) {
    await store.putEndpoint(config("ep_b", { createdMs: T0 + 1 }), { expectVersion: null });
    await store.putEndpoint(config("ep_a"), {
      expectVersion: null,
      state: { disabled: true, disabledReason: "By its owner" },
    });
    const list = await store.listEndpoints();
    assert.deepEqual(list.map((item) => [item.id, item.disabled, item.disabledReason]), [
      ["ep_a", true, "By its owner"],
      ["ep_b", false, null],
    ]);
    await store.putEndpoint(config("ep_a", { version: 2 }), {
      expectVersion: 1,
      state: { disabled: false, disabledReason: null },
    });
    assert.equal((await store.getEndpoint("ep_a"))?.disabled, false);
    assert.equal((await store.getEndpoint("ep_a"))?.disabledReason, null);
    assert.equal(await store.deleteEndpoint("ep_b"), true);
    assert.equal(await store.deleteEndpoint("ep_b"), false);
    assert.deepEqual((await store.listEndpoints()).map((item) => item.id), ["ep_a"]);
  },

  async "an endpoint whose text holds a lone surrogate (stored before the API refused one) is listed, changed and deleted as any"(
    store,
  ) {
    const odd = { description: "x\ud800y", headers: { "X-Team": "\udc00" } };
    assert.ok(await store.putEndpoint(config("ep_a", odd), { expectVersion: null }));
    await store.putEndpoint(config("ep_b", { createdMs: T0 + 1 }), { expectVersion: null });
    assert.deepEqual((await store.listEndpoints()).map((item) => item.id), ["ep_a", "ep_b"]);
    assert.equal((await store.getEndpoint("ep_a"))?.description, "x\ud800y");
    assert.ok(
      await store.putEndpoint(config("ep_a", { ...odd, version: 2 }), { expectVersion: 1 }),
    );
    assert.equal((await store.getEndpoint("ep_a"))?.version, 2);
    assert.equal(await store.deleteEndpoint("ep_a"), true);
    assert.deepEqual((await store.listEndpoints()).map((item) => item.id), ["ep_b"]);
  },

  async "createDeliveries() is idempotent and the first attempt is due at creation"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    assert.equal(await store.createDeliveries([delivery(1), delivery(2)]), 2);
    assert.equal(await store.createDeliveries([delivery(2), delivery(3)]), 1);
    assert.equal(await store.createDeliveries([]), 0);
    assert.deepEqual(await store.getDelivery(delivery(1).id), {
      ...delivery(1),
      status: "pending",
      attempts: 0,
      tries: 0,
      interruptions: 0,
      firstAttemptMs: null,
      nextAttemptMs: T0,
      lastStatus: null,
      lastError: null,
      updatedMs: T0,
    });
    assert.equal(await store.getDelivery("nope"), null);
    assert.deepEqual(await store.claimDue(claimOptions(T0 - 1)), []);
    const claims = await store.claimDue(claimOptions(T0));
    assert.deepEqual(claims.map((claim) => claim.delivery.id).sort(), [
      delivery(1).id,
      delivery(2).id,
      delivery(3).id,
    ]);
    assert.equal(claims[0].endpoint.id, "ep_a");
    assert.equal(claims[0].endpoint.url, "https://example.com/ep_a");
    const one = claims.find((claim) => claim.delivery.id === delivery(1).id);
    assert.equal(one?.delivery.payload, delivery(1).payload);
  },

  async "createDeliveries(onlyToStoredEndpoints) creates none for an endpoint not stored (deleted since it was read)"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.putEndpoint(config("ep_b"), { expectVersion: null });
    assert.equal(await store.deleteEndpoint("ep_b"), true);
    assert.equal(
      await store.createDeliveries(
        [delivery(1), delivery(2, "ep_b"), delivery(3, "ep_never")],
        { onlyToStoredEndpoints: true },
      ),
      1,
    );
    assert.equal(await store.getDelivery(delivery(2, "ep_b").id), null);
    assert.deepEqual(await store.countDeliveries(), { pending: 1, dead: 0 });
    const claims = await store.claimDue(claimOptions(T0));
    assert.deepEqual(claims.map((claim) => claim.delivery.id), [delivery(1).id]);
  },

  async "claimDue() leases a delivery: nobody else gets it until the lease ends"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const [first] = await store.claimDue(claimOptions(T0));
    assert.ok(first);
    assert.deepEqual(await store.claimDue(claimOptions(T0 + 1_000)), []);
    assert.deepEqual(await store.claimDue(claimOptions(T0 + LEASE - 1)), []);
    const [second] = await store.claimDue(claimOptions(T0 + LEASE));
    assert.ok(second, "an expired lease makes the delivery due again");
    assert.notEqual(second.token, first.token);
    // A claimer killed before recording leads to a second send: with the same webhook-id.
    assert.equal(second.delivery.messageId, first.delivery.messageId);
    assert.equal(second.delivery.payload, first.delivery.payload);
    const stale = await store.recordAttempt({
      deliveryId: first.delivery.id,
      endpointId: "ep_a",
      token: first.token,
      attempt: attempt("succeeded", null),
      nowMs: T0 + LEASE,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.deepEqual(stale, { recorded: false, disabled: false });
    assert.equal((await store.getDelivery(first.delivery.id))?.status, "pending");
    const fresh = await store.recordAttempt({
      deliveryId: second.delivery.id,
      endpointId: "ep_a",
      token: second.token,
      attempt: attempt("succeeded", null),
      nowMs: T0 + LEASE,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.deepEqual(fresh, { recorded: true, disabled: false });
  },

  async "recordAttempt() schedules the retry, logs attempts newest first and finishes"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    const [claim] = await store.claimDue(claimOptions(T0));
    await store.recordAttempt({
      deliveryId: id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: attempt("retrying", T0 + 5_000),
      nowMs: T0,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    const retrying = await store.getDelivery(id);
    assert.equal(retrying?.status, "retrying");
    assert.equal(retrying?.attempts, 1);
    assert.equal(retrying?.tries, 1);
    assert.equal(retrying?.nextAttemptMs, T0 + 5_000);
    assert.equal(retrying?.lastStatus, 500);
    assert.equal(retrying?.lastError, "HTTP 500");
    assert.deepEqual(await store.claimDue(claimOptions(T0 + 4_999)), []);
    const [again] = await store.claimDue(claimOptions(T0 + 5_000));
    assert.equal(again.delivery.id, id);
    assert.equal(again.delivery.tries, 1);
    await store.recordAttempt({
      deliveryId: id,
      endpointId: "ep_a",
      token: again.token,
      attempt: { ...attempt("succeeded", null), attempt: 2 },
      nowMs: T0 + 5_000,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    const done = await store.getDelivery(id);
    assert.equal(done?.status, "succeeded");
    assert.equal(done?.nextAttemptMs, null);
    assert.equal(done?.lastError, null);
    assert.deepEqual(
      (await store.listAttempts(id)).map((item) => [item.attempt, item.outcome, item.status]),
      [[2, "succeeded", 200], [1, "retrying", 500]],
    );
    assert.deepEqual(await store.claimDue(claimOptions(T0 + DAY)), []);
  },

  async "releaseClaim() gives a claim back: due again at once, slot free, nothing recorded"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1, "ep_a", T0 - 2), delivery(2, "ep_a", T0 - 1)]);
    const capped = { ...claimOptions(T0), maxConcurrency: 1 };
    const [first] = await store.claimDue(capped);
    assert.equal(first.delivery.id, delivery(1).id);
    assert.deepEqual(await store.claimDue(capped), [], "the cap holds while the claim does");
    const before = await store.getDelivery(first.delivery.id);

    const release = { deliveryId: first.delivery.id, endpointId: "ep_a", token: first.token };
    assert.equal(await store.releaseClaim(release), true);
    assert.deepEqual(await store.getDelivery(first.delivery.id), before, "status and counts kept");
    assert.deepEqual(await store.listAttempts(first.delivery.id), []);
    assert.equal(await store.releaseClaim(release), false, "a claim is released once");

    // Due again at its own time, ahead of the later delivery, long before the lease would end.
    const [again] = await store.claimDue(capped);
    assert.equal(again.delivery.id, first.delivery.id);
    assert.notEqual(again.token, first.token);
    assert.deepEqual(
      await store.recordAttempt({
        deliveryId: first.delivery.id,
        endpointId: "ep_a",
        token: first.token,
        attempt: attempt("succeeded", null),
        nowMs: T0,
        disableAfterMs: 5 * DAY,
        failingReason: "Failing",
      }),
      { recorded: false, disabled: false },
      "the released token records nothing",
    );
    assert.equal(await store.releaseClaim(release), false, "nor releases the new claim");
    assert.deepEqual(await store.claimDue(capped), [], "the new claim holds the slot");
    assert.equal(
      (await store.recordAttempt({
        deliveryId: again.delivery.id,
        endpointId: "ep_a",
        token: again.token,
        attempt: attempt("succeeded", null),
        nowMs: T0,
        disableAfterMs: 5 * DAY,
        failingReason: "Failing",
      })).recorded,
      true,
    );
    assert.equal((await store.getDelivery(first.delivery.id))?.attempts, 1);
  },

  async "releaseClaim() after its lease lapsed and another claim took the delivery gives back nothing, logs nothing"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    const capped = { ...claimOptions(T0), maxConcurrency: 1 };
    const [late] = await store.claimDue(capped);
    // The lease lapses; a second claimant takes the delivery.
    const [holder] = await store.claimDue({ ...capped, nowMs: T0 + LEASE + 1 });
    assert.equal(holder?.delivery.id, id);
    assert.notEqual(holder.token, late.token);
    const before = await store.getDelivery(id);
    const lateRelease = { deliveryId: id, endpointId: "ep_a", token: late.token };
    assert.equal(await store.releaseClaim(lateRelease), false);
    assert.equal(
      await store.releaseClaim({
        ...lateRelease,
        cutOff: { attempt: interrupted(1, T0), nowMs: T0 + LEASE + 2 },
      }),
      false,
    );
    assert.deepEqual(await store.getDelivery(id), before, "nothing changed");
    assert.deepEqual(await store.listAttempts(id), [], "nothing logged");
    assert.deepEqual(
      await store.claimDue({ ...capped, nowMs: T0 + LEASE + 3 }),
      [],
      "the holder keeps its claim and its endpoint's slot",
    );
    assert.equal(
      await store.releaseClaim({ deliveryId: id, endpointId: "ep_a", token: holder.token }),
      true,
      "the holder's own release still works",
    );
  },

  async "releaseClaim() of a retry keeps its retry status and due time"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    const [claim] = await store.claimDue(claimOptions(T0));
    await store.recordAttempt({
      deliveryId: id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: attempt("retrying", T0 + 5_000),
      nowMs: T0,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    const [retry] = await store.claimDue(claimOptions(T0 + 6_000));
    assert.equal(
      await store.releaseClaim({ deliveryId: id, endpointId: "ep_a", token: retry.token }),
      true,
    );
    const released = await store.getDelivery(id);
    assert.equal(released?.status, "retrying");
    assert.equal(released?.tries, 1);
    assert.equal(released?.nextAttemptMs, T0 + 5_000);
    assert.equal((await store.claimDue(claimOptions(T0 + 6_000)))[0]?.delivery.id, id);
  },

  async "releaseClaim() with a cut-off attempt logs and counts it; status, tries, due time and health kept"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1), delivery(2)]);
    const id = delivery(1).id;
    const claims = await store.claimDue(claimOptions(T0));
    const claim = claims.find((item) => item.delivery.id === id)!;
    await store.recordAttempt({
      deliveryId: id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: attempt("retrying", T0 + 5_000),
      nowMs: T0,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    const [retry] = await store.claimDue(claimOptions(T0 + 6_000));
    assert.equal(retry.delivery.id, id);
    const cut = interrupted(2, T0 + 6_000);
    const release = {
      deliveryId: id,
      endpointId: "ep_a",
      token: retry.token,
      cutOff: { attempt: cut, nowMs: T0 + 6_007 },
    };
    assert.equal(await store.releaseClaim(release), true);
    const released = await store.getDelivery(id);
    assert.deepEqual(
      released && [released.status, released.attempts, released.tries, released.nextAttemptMs],
      ["retrying", 2, 1, T0 + 5_000],
      "counted, its status, retry schedule and due time kept",
    );
    assert.deepEqual(
      released && [released.lastStatus, released.lastError, released.updatedMs],
      [500, "HTTP 500", T0 + 6_007],
      "lastStatus and lastError stay the receiver's; the cut-off is in the attempt log",
    );
    assert.equal(released?.interruptions, 1);
    const log = await store.listAttempts(id);
    assert.deepEqual(log[0], cut);
    assert.deepEqual(log.map((item) => [item.attempt, item.outcome]), [
      [2, "interrupted"],
      [1, "retrying"],
    ]);
    assert.equal((await store.getEndpoint("ep_a"))?.failingSinceMs, T0, "not the receiver's doing");

    // A stale token logs nothing, as it releases nothing.
    assert.equal(await store.releaseClaim(release), false);
    assert.equal((await store.listAttempts(id)).length, 2);
    assert.equal((await store.getDelivery(id))?.attempts, 2);

    // Due again at once; the next attempt is the third.
    const [again] = await store.claimDue(claimOptions(T0 + 6_007));
    assert.equal(again.delivery.id, id);
    assert.equal(again.delivery.attempts, 2);
    assert.equal(again.delivery.tries, 1);

    // A first attempt cut off leaves the delivery pending.
    const first = claims.find((item) => item.delivery.id === delivery(2).id)!;
    assert.equal(
      await store.releaseClaim({
        deliveryId: first.delivery.id,
        endpointId: "ep_a",
        token: first.token,
        cutOff: { attempt: interrupted(1, T0), nowMs: T0 + 7 },
      }),
      true,
    );
    const pending = await store.getDelivery(first.delivery.id);
    assert.deepEqual(pending && [pending.status, pending.attempts, pending.tries], [
      "pending",
      1,
      0,
    ]);
    assert.deepEqual(await store.listAttempts(first.delivery.id), [interrupted(1, T0)]);
  },

  async "releaseClaim()'s cut-off attempts keep the attempt log to MAX_ATTEMPTS_LOGGED"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    for (let n = 1; n <= MAX_ATTEMPTS_LOGGED + 2; n++) {
      const [claim] = await store.claimDue(claimOptions(T0));
      assert.equal(claim?.delivery.attempts, n - 1);
      assert.equal(
        await store.releaseClaim({
          deliveryId: id,
          endpointId: "ep_a",
          token: claim.token,
          cutOff: { attempt: interrupted(n, T0 + n), nowMs: T0 + n },
        }),
        true,
      );
    }
    const log = await store.listAttempts(id);
    assert.equal(log.length, MAX_ATTEMPTS_LOGGED);
    assert.deepEqual([log[0].attempt, log.at(-1)?.attempt], [MAX_ATTEMPTS_LOGGED + 2, 3]);
    const kept = await store.getDelivery(id);
    assert.deepEqual(
      kept && [kept.attempts, kept.firstAttemptMs],
      [MAX_ATTEMPTS_LOGGED + 2, T0 + 1],
      "the count and the first attempt's time outlive its log entry",
    );
  },

  async "A full attempt log drops its oldest entries for recorded attempts too; firstAttemptMs stays the first's"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    assert.equal((await store.getDelivery(id))?.firstAttemptMs, null, "none before an attempt");
    const total = MAX_ATTEMPTS_LOGGED + 5;
    for (let n = 1; n <= total; n++) {
      const [claim] = await store.claimDue(claimOptions(T0 + n * 10));
      assert.equal(claim?.delivery.attempts, n - 1);
      const release = { deliveryId: id, endpointId: "ep_a", token: claim.token };
      if (n % 2 === 1) {
        assert.equal(
          await store.releaseClaim({
            ...release,
            cutOff: { attempt: interrupted(n, T0 + n * 10), nowMs: T0 + n * 10 },
          }),
          true,
        );
      } else {
        const failed = { ...attempt("retrying", T0 + n * 10 + 1), attempt: n, timeMs: T0 + n * 10 };
        assert.equal(
          (await store.recordAttempt({
            ...release,
            attempt: failed,
            nowMs: T0 + n * 10,
            disableAfterMs: 5 * DAY,
            failingReason: "Failing",
          })).recorded,
          true,
        );
      }
    }
    const log = await store.listAttempts(id);
    assert.deepEqual(
      log.map((item) => item.attempt),
      Array.from({ length: MAX_ATTEMPTS_LOGGED }, (_, i) => total - i),
      "the newest kept, newest first",
    );
    const kept = await store.getDelivery(id);
    assert.deepEqual(kept && [kept.attempts, kept.firstAttemptMs], [total, T0 + 10]);
    // A replay starts a fresh schedule, not a fresh history.
    assert.equal(await store.retry(id, T0 + DAY), "requeued");
    const replayed = await store.getDelivery(id);
    assert.deepEqual(replayed && [replayed.attempts, replayed.firstAttemptMs], [total, T0 + 10]);
  },

  async "releaseClaim() counts interruptions in a row; a recorded attempt and a retry start them over"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    const cutOnce = async (n: number) => {
      const [claim] = await store.claimDue(claimOptions(T0 + n));
      assert.equal(
        await store.releaseClaim({
          deliveryId: id,
          endpointId: "ep_a",
          token: claim.token,
          cutOff: { attempt: interrupted(n, T0 + n), nowMs: T0 + n },
        }),
        true,
      );
      return (await store.getDelivery(id))!;
    };
    assert.equal((await store.getDelivery(id))?.interruptions, 0);
    assert.equal((await cutOnce(1)).interruptions, 1);
    assert.equal((await cutOnce(2)).interruptions, 2);
    const [claim] = await store.claimDue(claimOptions(T0 + 3));
    assert.equal(claim.delivery.interruptions, 2, "the claim shows them");
    await store.recordAttempt({
      deliveryId: id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: { ...attempt("retrying", T0 + 4), attempt: 3, timeMs: T0 + 3 },
      nowMs: T0 + 3,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.equal((await store.getDelivery(id))?.interruptions, 0, "an answer starts them over");
    assert.equal((await cutOnce(4)).interruptions, 1);
    assert.equal(await store.retry(id, T0 + 5), "requeued");
    const retried = (await store.getDelivery(id))!;
    assert.deepEqual([retried.tries, retried.interruptions], [0, 0], "a retry starts them over");
  },

  async "releaseClaim() with a cut-off that uses a try: tries + 1, retrying at its time, then dead"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    const [claim] = await store.claimDue(claimOptions(T0));
    assert.equal(claim.delivery.id, id);
    await store.recordAttempt({
      deliveryId: id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: attempt("retrying", T0 + 5_000),
      nowMs: T0,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    const [retry] = await store.claimDue(claimOptions(T0 + 5_000));
    const usedTry = { ...interrupted(2, T0 + 5_000), nextAttemptMs: T0 + 305_000 };
    assert.equal(
      await store.releaseClaim({
        deliveryId: id,
        endpointId: "ep_a",
        token: retry.token,
        cutOff: { attempt: usedTry, nowMs: T0 + 5_007, usesTry: true },
      }),
      true,
    );
    const retrying = (await store.getDelivery(id))!;
    assert.deepEqual(
      [retrying.status, retrying.attempts, retrying.tries, retrying.interruptions],
      ["retrying", 2, 2, 1],
    );
    assert.deepEqual(
      [retrying.nextAttemptMs, retrying.lastStatus, retrying.lastError],
      [T0 + 305_000, 500, "HTTP 500"],
    );
    assert.deepEqual(await store.claimDue(claimOptions(T0 + 305_000 - 1)), [], "not due before it");
    assert.equal((await store.getEndpoint("ep_a"))?.failingSinceMs, T0, "health unchanged");

    const [last] = await store.claimDue(claimOptions(T0 + 305_000));
    assert.equal(last.delivery.id, id);
    const noneLeft = { ...interrupted(3, T0 + 305_000), nextAttemptMs: null };
    assert.equal(
      await store.releaseClaim({
        deliveryId: id,
        endpointId: "ep_a",
        token: last.token,
        cutOff: { attempt: noneLeft, nowMs: T0 + 305_007, usesTry: true },
      }),
      true,
    );
    const dead = (await store.getDelivery(id))!;
    assert.deepEqual(
      [dead.status, dead.attempts, dead.tries, dead.interruptions, dead.nextAttemptMs],
      ["dead", 3, 3, 2, null],
    );
    assert.deepEqual(await store.listAttempts(id).then((log) => log[0]), noneLeft);
    assert.deepEqual(await store.claimDue(claimOptions(T0 + DAY)), [], "never claimed again");
    assert.deepEqual(await store.countDeliveries(), { pending: 0, dead: 1 });
    assert.deepEqual(
      (await store.listDeliveries("ep_a", { limit: 10, status: "dead" })).items.map((d) => d.id),
      [id],
    );
  },

  async "claimDue() keeps each endpoint under its concurrency cap, across claims"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([1, 2, 3, 4, 5].map((n) => delivery(n)));
    const first = await store.claimDue({ ...claimOptions(T0), maxConcurrency: 2 });
    assert.equal(first.length, 2);
    assert.equal((await store.claimDue({ ...claimOptions(T0), maxConcurrency: 2 })).length, 0);
    await store.recordAttempt({
      deliveryId: first[0].delivery.id,
      endpointId: "ep_a",
      token: first[0].token,
      attempt: attempt("succeeded", null),
      nowMs: T0,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.equal((await store.claimDue({ ...claimOptions(T0), maxConcurrency: 2 })).length, 1);
  },

  async "claimDue() spends an endpoint's rate limit as a token bucket"(store) {
    await store.putEndpoint(config("ep_a", { rateLimit: 2 }), { expectVersion: null });
    await store.createDeliveries([1, 2, 3, 4, 5, 6].map((n) => delivery(n)));
    assert.equal((await store.claimDue(claimOptions(T0))).length, 2);
    assert.equal((await store.claimDue(claimOptions(T0 + 100))).length, 0);
    assert.equal((await store.claimDue(claimOptions(T0 + 500))).length, 1);
    assert.equal((await store.claimDue(claimOptions(T0 + 10_000))).length, 2, "burst is the rate");
  },

  async "claimDue() gives no tokens for a clock behind an endpoint's bucket: it keeps that update"(
    store,
  ) {
    // Two instances sending to one endpoint (2/s: a burst of 2, refilled from empty in 1 s), one
    // 500 ms behind the other, take turns. The one behind wrote its own "now" as the bucket's
    // update, and the next claim of the one ahead refilled the 500 ms between the clocks again:
    // a delivery more at every turn, whatever the time that passed.
    await store.putEndpoint(config("ep_a", { rateLimit: 2 }), { expectVersion: null });
    await store.createDeliveries([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((n) => delivery(n)));
    const claim = async (nowMs: number, limit = 100) =>
      (await store.claimDue(claimOptions(T0 + nowMs, { limit }))).length;
    assert.equal(await claim(10_000, 1), 1);
    // Behind: the token left is taken (a clock behind takes none away)...
    assert.equal(await claim(9_500), 1);
    // ...and the one ahead, no time passed, gets none: not the 500 ms between the clocks again.
    assert.equal(await claim(10_000), 0);
    // Half a second later by the clock ahead, one; the turn again gives none.
    assert.equal(await claim(10_500), 1);
    assert.equal(await claim(10_000), 0);
    assert.equal(await claim(10_500), 0);
    // The clock behind catches up: the bucket refilled from the update it kept, one token.
    assert.equal(await claim(11_000), 1);
    assert.equal(await claim(11_000), 0);
    // An update further ahead than the bucket's refill from empty is a clock gone wrong: from a
    // claim 60 s ahead, the bucket refills from the claiming clock's time on.
    assert.equal(await claim(71_000), 2);
    assert.equal(await claim(12_000), 0);
    assert.equal(await claim(13_000), 2);
  },

  async "a capped endpoint does not hold back another endpoint's deliveries"(store) {
    await store.putEndpoint(config("ep_slow"), { expectVersion: null });
    await store.putEndpoint(config("ep_fast", { createdMs: T0 + 1 }), { expectVersion: null });
    await store.createDeliveries(
      Array.from({ length: 50 }, (_, n) => delivery(n, "ep_slow", T0 - 1_000 + n)),
    );
    assert.equal((await store.claimDue({ ...claimOptions(T0), maxConcurrency: 2 })).length, 2);
    await store.createDeliveries([delivery(99, "ep_fast")]);
    const claims = await store.claimDue({ ...claimOptions(T0), maxConcurrency: 2, limit: 5 });
    assert.deepEqual(claims.map((claim) => claim.delivery.id), [delivery(99, "ep_fast").id]);
  },

  async "claimDue() holds slow endpoints to one claim in flight each, and to their share of the call"(
    store,
  ) {
    for (const [n, id] of ["ep_s1", "ep_s2", "ep_s3", "ep_ok"].entries()) {
      await store.putEndpoint(config(id), { expectVersion: null });
      await store.createDeliveries([1, 2, 3].map((k) => delivery(k, id, T0 - 1_000 + 10 * n + k)));
    }
    const slow = { endpointIds: ["ep_s1", "ep_s2", "ep_s3"], limit: 2 };
    const ids = (claims: Claim[]) => claims.map((claim) => claim.delivery.id).sort();
    const first = await store.claimDue({ ...claimOptions(T0), maxConcurrency: 8, slow });
    assert.deepEqual(
      ids(first),
      [
        delivery(1, "ep_ok").id,
        delivery(2, "ep_ok").id,
        delivery(3, "ep_ok").id,
        delivery(1, "ep_s1").id,
        delivery(1, "ep_s2").id,
      ].sort(),
    );
    // ep_s1 and ep_s2 are at their one; ep_s3, left out, is due as it was.
    const second = await store.claimDue({
      ...claimOptions(T0),
      maxConcurrency: 8,
      slow: { ...slow, limit: 5 },
    });
    assert.deepEqual(ids(second), [delivery(1, "ep_s3").id]);
    const s1 = first.find((claim) => claim.endpoint.id === "ep_s1")!;
    await store.recordAttempt({
      deliveryId: s1.delivery.id,
      endpointId: "ep_s1",
      token: s1.token,
      attempt: attempt("succeeded", null),
      nowMs: T0,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.deepEqual(
      ids(
        await store.claimDue({
          ...claimOptions(T0),
          maxConcurrency: 8,
          slow: { ...slow, limit: 5 },
        }),
      ),
      [delivery(2, "ep_s1").id],
      "one claim again once its one in flight is recorded",
    );
    // A second on: an endpoint at its cap is looked at again after that (on Redis).
    assert.equal(
      (await store.claimDue({ ...claimOptions(T0 + 1_000), maxConcurrency: 8 })).length,
      5,
      "not slow in a claim that does not say so: up to the cap (ep_s1 1, ep_s2 2, ep_s3 2)",
    );
  },

  async "slow endpoints left out of a claim hold back no other endpoint's deliveries"(store) {
    const slowIds = Array.from({ length: 12 }, (_, n) => `ep_s${n + 10}`);
    for (const [n, id] of slowIds.entries()) {
      await store.putEndpoint(config(id), { expectVersion: null });
      await store.createDeliveries([delivery(1, id, T0 - 1_000 + n)]);
    }
    await store.putEndpoint(config("ep_ok"), { expectVersion: null });
    await store.createDeliveries([delivery(1, "ep_ok")]);
    const slow = { endpointIds: slowIds, limit: 0 };
    const claims = await store.claimDue({ ...claimOptions(T0), limit: 1, slow });
    assert.deepEqual(claims.map((claim) => claim.delivery.id), [delivery(1, "ep_ok").id]);
    const stored = await store.storePage("s", {
      cursor: null,
      end: "5-0",
      deliveries: [delivery(2, "ep_ok")],
      claim: { ...claimOptions(T0), limit: 1, slow },
    });
    assert.deepEqual(
      stored?.claims.map((claim) => claim.delivery.id),
      [delivery(2, "ep_ok").id],
      "storePage() claims as claimDue() does",
    );
    // Left due as they were: the earliest first once the slow ones have a share again.
    const later = await store.claimDue({
      ...claimOptions(T0),
      limit: 3,
      slow: { ...slow, limit: 2 },
    });
    assert.deepEqual(
      later.map((claim) => claim.delivery.id).sort(),
      [delivery(1, "ep_s10").id, delivery(1, "ep_s11").id],
    );
  },

  async "storePage() holds slow endpoints to one claim each and their share, as claimDue() does"(
    store,
  ) {
    await store.putEndpoint(config("ep_s"), { expectVersion: null });
    await store.putEndpoint(config("ep_t"), { expectVersion: null });
    await store.putEndpoint(config("ep_ok"), { expectVersion: null });
    const stored = await store.storePage("s", {
      cursor: null,
      end: "5-0",
      deliveries: ["ep_s", "ep_t", "ep_ok"].flatMap((id) => [1, 2, 3].map((n) => delivery(n, id))),
      claim: {
        ...claimOptions(T0),
        maxConcurrency: 2,
        slow: { endpointIds: ["ep_s", "ep_t"], limit: 1 },
      },
    });
    const perEndpoint = new Map<string, number>();
    for (const claim of stored?.claims ?? []) {
      perEndpoint.set(claim.endpoint.id, (perEndpoint.get(claim.endpoint.id) ?? 0) + 1);
    }
    assert.equal(perEndpoint.get("ep_ok"), 2);
    assert.equal((perEndpoint.get("ep_s") ?? 0) + (perEndpoint.get("ep_t") ?? 0), 1);
    assert.equal(stored?.claims.length, 3);
  },

  async "due deliveries of a disabled endpoint become dead, of a deleted one vanish"(store) {
    await store.putEndpoint(config("ep_a"), {
      expectVersion: null,
      state: { disabled: true, disabledReason: "Gone" },
    });
    await store.putEndpoint(config("ep_b"), { expectVersion: null });
    await store.createDeliveries([delivery(1, "ep_a"), delivery(2, "ep_b")]);
    await store.deleteEndpoint("ep_b");
    assert.deepEqual(await store.claimDue(claimOptions(T0)), []);
    const dead = await store.getDelivery(delivery(1, "ep_a").id);
    assert.equal(dead?.status, "dead");
    assert.equal(dead?.lastError, "Endpoint is disabled");
    assert.equal(dead?.nextAttemptMs, null);
  },

  async "a delivery made dead after its claim lapsed cannot be recorded by that claim any more"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const [claim] = await store.claimDue(claimOptions(T0));
    await store.putEndpoint(config("ep_a", { version: 2 }), {
      expectVersion: 1,
      state: { disabled: true, disabledReason: "By its owner" },
    });
    // The claimer went quiet past its lease; the next claim finds the endpoint disabled.
    assert.deepEqual(await store.claimDue(claimOptions(T0 + LEASE + 1)), []);
    assert.equal((await store.getDelivery(claim.delivery.id))?.status, "dead");
    const late = await store.recordAttempt({
      deliveryId: claim.delivery.id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: attempt("retrying", T0 + LEASE + 5_000),
      nowMs: T0 + LEASE + 2,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.deepEqual(late, { recorded: false, disabled: false });
    const dead = await store.getDelivery(claim.delivery.id);
    assert.equal(dead?.status, "dead");
    assert.equal(dead?.attempts, 0);
  },

  async "recordAttempt() tracks failing endpoints and disables them when asked or after a while"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.putEndpoint(config("ep_b"), { expectVersion: null });
    await store.createDeliveries([1, 2, 3].map((n) => delivery(n, "ep_a", T0 + n)));
    const record = async (nowMs: number, outcome: Attempt["outcome"], extra = {}) => {
      const [claim] = await store.claimDue({ ...claimOptions(nowMs), limit: 1 });
      return await store.recordAttempt({
        deliveryId: claim.delivery.id,
        endpointId: claim.endpoint.id,
        token: claim.token,
        attempt: attempt(outcome, outcome === "retrying" ? nowMs + DAY * 10 : null),
        nowMs,
        disableAfterMs: 5 * DAY,
        failingReason: "Failing for 5 days",
        ...extra,
      });
    };
    assert.deepEqual(await record(T0 + 10, "retrying"), { recorded: true, disabled: false });
    assert.equal((await store.getEndpoint("ep_a"))?.failingSinceMs, T0 + 10);
    assert.deepEqual(await record(T0 + 20, "succeeded"), { recorded: true, disabled: false });
    assert.equal((await store.getEndpoint("ep_a"))?.failingSinceMs, null);
    await store.createDeliveries([4, 5].map((n) => delivery(n, "ep_a", T0 + 100 + n)));
    await record(T0 + 1_000, "retrying");
    assert.deepEqual(await record(T0 + 1_000 + 5 * DAY, "retrying"), {
      recorded: true,
      disabled: true,
    });
    const endpoint = await store.getEndpoint("ep_a");
    assert.equal(endpoint?.disabled, true);
    assert.equal(endpoint?.disabledReason, "Failing for 5 days");
    await store.createDeliveries([delivery(9, "ep_b")]);
    const [gone] = await store.claimDue(claimOptions(T0));
    assert.equal(gone.endpoint.id, "ep_b");
    assert.deepEqual(
      await store.recordAttempt({
        deliveryId: gone.delivery.id,
        endpointId: "ep_b",
        token: gone.token,
        attempt: attempt("dead", null, 410),
        nowMs: T0,
        disableReason: "Endpoint answered 410 Gone",
        disableAfterMs: 5 * DAY,
        failingReason: "Failing",
      }),
      { recorded: true, disabled: true },
    );
    assert.equal((await store.getEndpoint("ep_b"))?.disabledReason, "Endpoint answered 410 Gone");
  },

  async "recordAttempt() that disables an endpoint sets its updatedMs; a later putEndpoint sets its own"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1), delivery(2)]);
    const [first] = await store.claimDue({ ...claimOptions(T0), limit: 1 });
    // A failure that does not disable it changes only failingSinceMs.
    await store.recordAttempt({
      deliveryId: first.delivery.id,
      endpointId: "ep_a",
      token: first.token,
      attempt: attempt("retrying", T0 + DAY),
      nowMs: T0 + 1_000,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.equal((await store.getEndpoint("ep_a"))?.updatedMs, T0);
    const [second] = await store.claimDue({ ...claimOptions(T0 + 2_000), limit: 1 });
    assert.deepEqual(
      await store.recordAttempt({ ...goneRecord(second), nowMs: T0 + 2_000 }),
      { recorded: true, disabled: true },
    );
    const disabled = await store.getEndpoint("ep_a");
    assert.deepEqual(
      [disabled?.disabled, disabled?.updatedMs, disabled?.version],
      [true, T0 + 2_000, 1],
    );
    assert.equal((await store.listEndpoints())[0].updatedMs, T0 + 2_000);
    // Enabled again through the API: the change's own time.
    assert.ok(
      await store.putEndpoint(config("ep_a", { updatedMs: T0 + 3_000, version: 2 }), {
        expectVersion: 1,
        state: { disabled: false, disabledReason: null },
      }),
    );
    const enabled = await store.getEndpoint("ep_a");
    assert.deepEqual([enabled?.disabled, enabled?.updatedMs], [false, T0 + 3_000]);
  },

  async "retry() requeues with a fresh schedule, unless the delivery is in flight"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    assert.equal(await store.retry("nope", T0), "not_found");
    const [claim] = await store.claimDue(claimOptions(T0));
    assert.equal(await store.retry(id, T0 + 1), "in_flight");
    await store.recordAttempt({
      deliveryId: id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: attempt("dead", null),
      nowMs: T0 + 2,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.deepEqual(await store.claimDue(claimOptions(T0 + DAY)), []);
    assert.equal(await store.retry(id, T0 + 3), "requeued");
    const requeued = await store.getDelivery(id);
    assert.equal(requeued?.status, "pending");
    assert.equal(requeued?.tries, 0);
    assert.equal(requeued?.attempts, 1);
    assert.equal(requeued?.nextAttemptMs, T0 + 3);
    const [again] = await store.claimDue(claimOptions(T0 + 3));
    assert.equal(again.delivery.id, id);
    assert.equal(again.delivery.messageId, "msg_s_1");
  },

  async "a deleted endpoint's deliveries are found no more: getDelivery() null, retry() not_found, no attempts; another endpoint's stay"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.putEndpoint(config("ep_b"), { expectVersion: null });
    await store.createDeliveries([delivery(1), delivery(2, "ep_b")]);
    const id = delivery(1).id;
    const [claim] = (await store.claimDue(claimOptions(T0))).filter((item) =>
      item.delivery.id === id
    );
    await store.recordAttempt({
      deliveryId: id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: attempt("dead", null),
      nowMs: T0 + 1,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.equal((await store.getDelivery(id))?.status, "dead");
    assert.equal((await store.listAttempts(id)).length, 1);
    assert.equal(await store.deleteEndpoint("ep_a"), true);
    assert.equal(await store.getDelivery(id), null);
    assert.deepEqual(await store.listAttempts(id), []);
    assert.equal(await store.retry(id, T0 + 2), "not_found");
    // The retry brought nothing back: nothing of it to claim, nothing counted dead.
    assert.equal(await store.getDelivery(id), null);
    const later = await store.claimDue(claimOptions(T0 + DAY));
    assert.deepEqual(later.map((item) => item.delivery.id), [delivery(2, "ep_b").id]);
    assert.equal((await store.countDeliveries()).dead, 0);
    assert.equal((await store.getDelivery(delivery(2, "ep_b").id))?.endpointId, "ep_b");
  },

  async "replay() requeues retrying and dead deliveries created since a time"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([1, 2, 3, 4].map((n) => delivery(n, "ep_a", T0 + n * 1_000)));
    const outcomes: Attempt["outcome"][] = ["dead", "dead", "retrying", "succeeded"];
    for (const claim of await store.claimDue(claimOptions(T0 + 10_000))) {
      const n = Number(claim.delivery.messageId.split("_")[2]);
      const outcome = outcomes[n - 1];
      await store.recordAttempt({
        deliveryId: claim.delivery.id,
        endpointId: "ep_a",
        token: claim.token,
        attempt: attempt(outcome, outcome === "retrying" ? T0 + DAY : null),
        nowMs: T0 + 10_000,
        disableAfterMs: 5 * DAY,
        failingReason: "Failing",
      });
    }
    assert.equal(await store.replay("ep_a", { sinceMs: T0 + 2_000, nowMs: T0 + 20_000 }), 2);
    const statuses = await Promise.all(
      [1, 2, 3, 4].map(async (n) => (await store.getDelivery(delivery(n).id))?.status),
    );
    assert.deepEqual(statuses, ["dead", "pending", "pending", "succeeded"]);
    const claims = await store.claimDue(claimOptions(T0 + 20_000));
    assert.deepEqual(claims.map((claim) => claim.delivery.id).sort(), [
      delivery(2).id,
      delivery(3).id,
    ]);
  },

  async "listDeliveries() lists newest first, filtered by status"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([1, 2, 3].map((n) => delivery(n, "ep_a", T0 + n)));
    const [claim] = await store.claimDue({ ...claimOptions(T0 + 10), limit: 1 });
    await store.recordAttempt({
      deliveryId: claim.delivery.id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: attempt("dead", null),
      nowMs: T0 + 10,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.deepEqual(
      (await store.listDeliveries("ep_a", { limit: 10 })).items.map((item) => item.messageId),
      ["msg_s_3", "msg_s_2", "msg_s_1"],
    );
    assert.deepEqual(
      (await store.listDeliveries("ep_a", { limit: 2 })).items.map((item) => item.messageId),
      ["msg_s_3", "msg_s_2"],
    );
    assert.deepEqual(
      (await store.listDeliveries("ep_a", { limit: 10, status: "dead" })).items.map((item) =>
        item.messageId
      ),
      ["msg_s_1"],
    );
    assert.deepEqual(await store.listDeliveries("ep_other", { limit: 10 }), {
      items: [],
      nextCursor: null,
    });
  },

  async "pageEndpoints() pages oldest first, each endpoint once, while endpoints come and go"(
    store,
  ) {
    assert.deepEqual(await store.pageEndpoints({ limit: 5 }), { items: [], nextCursor: null });
    const created: Array<[string, number]> = [
      ["ep_d", T0],
      ["ep_b", T0],
      ["ep_e", T0 + 1],
      ["ep_a", T0],
      ["ep_g", T0 + 2],
      ["ep_c", T0],
      ["ep_f", T0 + 2],
    ];
    for (const [id, createdMs] of created) {
      await store.putEndpoint(config(id, { createdMs }), { expectVersion: null });
    }
    const ids = (page: Page<{ id: string }>) => page.items.map((item) => item.id);
    const all = await store.pageEndpoints({ limit: 7 });
    assert.deepEqual(ids(all), ["ep_a", "ep_b", "ep_c", "ep_d", "ep_e", "ep_f", "ep_g"]);
    assert.equal(all.nextCursor, null, "a page that ends the list says so");
    const first = await store.pageEndpoints({ limit: 3 });
    assert.deepEqual(ids(first), ["ep_a", "ep_b", "ep_c"]);
    assert.equal(typeof first.nextCursor, "string");
    assert.match(first.nextCursor!, /^[A-Za-z0-9_-]+$/, "the cursor is base64url");
    assert.deepEqual(
      await store.pageEndpoints({ limit: 3, cursor: first.nextCursor }),
      await store.pageEndpoints({ limit: 3, cursor: first.nextCursor }),
      "a cursor can be followed again",
    );
    // Between pages: one sorts before the cursor, two after it, and the cursor's own goes.
    await store.putEndpoint(config("ep_0", { createdMs: T0 }), { expectVersion: null });
    await store.putEndpoint(config("ep_cc", { createdMs: T0 }), { expectVersion: null });
    await store.putEndpoint(config("ep_z", { createdMs: T0 + 5 }), { expectVersion: null });
    await store.deleteEndpoint("ep_c");
    const second = await store.pageEndpoints({ limit: 3, cursor: first.nextCursor });
    assert.deepEqual(ids(second), ["ep_cc", "ep_d", "ep_e"]);
    const third = await store.pageEndpoints({ limit: 3, cursor: second.nextCursor });
    assert.deepEqual(ids(third), ["ep_f", "ep_g", "ep_z"]);
    assert.equal(third.nextCursor, null);
    assert.equal(third.items[2].url, "https://example.com/ep_z", "items are whole endpoints");
  },

  async "listDeliveries() pages newest first, each delivery once, while deliveries are added"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.putEndpoint(config("ep_b"), { expectVersion: null });
    const at = (n: number | string, createdMs: number): NewDelivery => ({
      ...delivery(0),
      id: `msg_s_${n}.ep_a`,
      messageId: `msg_s_${n}`,
      createdMs,
    });
    await store.createDeliveries([
      ...[1, 2, 3, 4, 5].map((n) => at(n, T0 + 10)),
      ...[6, 7, 8].map((n) => at(n, T0 + 20)),
      at(9, T0 + 5),
      delivery(1, "ep_b", T0 + 10),
    ]);
    const names = (page: Page<Delivery>) => page.items.map((item) => item.messageId.slice(6));
    const first = await store.listDeliveries("ep_a", { limit: 4 });
    assert.deepEqual(names(first), ["8", "7", "6", "5"]);
    // Between pages: a newer one (before the cursor) and two that sort after it.
    await store.createDeliveries([at("new", T0 + 30), at("4b", T0 + 10), at(0, T0 + 1)]);
    const second = await store.listDeliveries("ep_a", { limit: 4, cursor: first.nextCursor });
    assert.deepEqual(names(second), ["4b", "4", "3", "2"]);
    const third = await store.listDeliveries("ep_a", { limit: 4, cursor: second.nextCursor });
    assert.deepEqual(names(third), ["1", "9", "0"]);
    assert.equal(third.nextCursor, null);
    assert.equal(third.items[0].payload, delivery(0).payload, "items are whole deliveries");
    const fromGone = await store.listDeliveries("ep_a", {
      limit: 10,
      cursor: encodeCursor("deliveries", { createdMs: T0 + 10, id: "msg_s_3z.ep_a" }),
    });
    assert.deepEqual(
      names(fromGone),
      ["3", "2", "1", "9", "0"],
      "a cursor whose item is gone continues from its position",
    );
    const exact = await store.listDeliveries("ep_a", { limit: 3, cursor: second.nextCursor });
    assert.deepEqual(names(exact), ["1", "9", "0"]);
    assert.equal(exact.nextCursor, null, "a page that ends the list exactly says so");
  },

  async "listDeliveries() pages a status filter: each matching delivery once"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([1, 2, 3, 4, 5, 6, 7].map((n) => delivery(n, "ep_a", T0 + n)));
    for (const claim of await store.claimDue(claimOptions(T0 + 10))) {
      const n = Number(claim.delivery.messageId.split("_")[2]);
      await store.recordAttempt({
        deliveryId: claim.delivery.id,
        endpointId: "ep_a",
        token: claim.token,
        attempt: attempt(n % 2 === 1 ? "dead" : "succeeded", null),
        nowMs: T0 + 10,
        disableAfterMs: 5 * DAY,
        failingReason: "Failing",
      });
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    for (let round = 0; round < 20; round++) {
      const page: Page<Delivery> = await store.listDeliveries("ep_a", {
        limit: 2,
        status: "dead",
        cursor,
      });
      assert.ok(page.items.length <= 2);
      assert.ok(page.items.every((item) => item.status === "dead"));
      seen.push(...page.items.map((item) => item.messageId));
      cursor = page.nextCursor;
      if (cursor === null) break;
    }
    assert.equal(cursor, null, "the pages end");
    assert.deepEqual(seen, ["msg_s_7", "msg_s_5", "msg_s_3", "msg_s_1"]);
  },

  async "a cursor no list of that kind gave out is refused with InvalidCursorError"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.putEndpoint(config("ep_b"), { expectVersion: null });
    await store.createDeliveries([1, 2, 3].map((n) => delivery(n)));
    const endpointCursor = (await store.pageEndpoints({ limit: 1 })).nextCursor!;
    const deliveryCursor = (await store.listDeliveries("ep_a", { limit: 1 })).nextCursor!;
    const base64url = (text: string) =>
      btoa(text).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
    const bad = [
      "",
      "not a cursor!",
      `${deliveryCursor}=`,
      base64url("x.1767225600000.ep_a"),
      base64url("d.01767225600000.msg_s_1.ep_a"),
      base64url("d.1767225600000."),
      base64url("d.-5.msg_s_1.ep_a"),
      base64url("d.99999999999999999.msg_s_1.ep_a"),
      "gA",
      endpointCursor,
    ];
    for (const cursor of bad) {
      await assert.rejects(
        store.listDeliveries("ep_a", { limit: 5, cursor }),
        (error: Error) => error instanceof InvalidCursorError && /cursor/.test(error.message),
        JSON.stringify(cursor),
      );
    }
    await assert.rejects(
      store.pageEndpoints({ limit: 5, cursor: deliveryCursor }),
      InvalidCursorError,
      "a delivery cursor is no endpoint cursor",
    );
  },

  async "pages of random lists cover every delivery exactly once, in order (property)"(store) {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(
          fc.record({
            t: fc.integer({ min: 0, max: 4 }),
            n: fc.integer({ min: 0, max: 60 }),
          }),
          { selector: (item) => item.n, maxLength: 25 },
        ),
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.integer({ min: 61, max: 80 }), { maxLength: 4 }),
        async (items, limit, addedLater) => {
          const endpointId = `ep_run${run++}`;
          const make = (n: number, t: number): NewDelivery => ({
            ...delivery(0, endpointId),
            id: `msg_p_${n}.${endpointId}`,
            messageId: `msg_p_${n}`,
            createdMs: T0 + t,
          });
          await store.createDeliveries(items.map((item) => make(item.n, item.t)));
          const expected = items.map((item) => make(item.n, item.t))
            .sort((a, b) => b.createdMs - a.createdMs || (a.id < b.id ? 1 : -1))
            .map((item) => item.id);
          const seen: string[] = [];
          let cursor: string | null = null;
          for (let page = 0; page < 100; page++) {
            const result: Page<Delivery> = await store.listDeliveries(endpointId, {
              limit,
              cursor,
            });
            seen.push(...result.items.map((item) => item.id));
            cursor = result.nextCursor;
            if (cursor === null) break;
            // Added meanwhile at random times: each shows at most once.
            const n = addedLater[page];
            if (n !== undefined) await store.createDeliveries([make(n, n % 5)]);
          }
          assert.equal(cursor, null);
          assert.equal(new Set(seen).size, seen.length, "no delivery twice");
          const key = (id: string) => {
            const n = Number(id.split(".")[0].slice(6));
            return [items.find((item) => item.n === n)?.t ?? n % 5, id] as const;
          };
          for (let i = 1; i < seen.length; i++) {
            const [before, after] = [key(seen[i - 1]), key(seen[i])];
            assert.ok(
              before[0] > after[0] || (before[0] === after[0] && before[1] > after[1]),
              `newest first: ${seen[i - 1]} before ${seen[i]}`,
            );
          }
          assert.deepEqual(seen.filter((id) => expected.includes(id)), expected);
        },
      ),
      { numRuns: 25 },
    );
  },

  async "countDeliveries() counts waiting and dead deliveries of existing endpoints"(store) {
    assert.deepEqual(await store.countDeliveries(), { pending: 0, dead: 0 });
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.putEndpoint(config("ep_b"), { expectVersion: null });
    await store.createDeliveries([...[1, 2, 3].map((n) => delivery(n)), delivery(4, "ep_b")]);
    assert.deepEqual(await store.countDeliveries(), { pending: 4, dead: 0 });
    const claims = await store.claimDue(claimOptions(T0));
    assert.equal(claims.length, 4);
    assert.deepEqual(await store.countDeliveries(), { pending: 4, dead: 0 }, "claimed still wait");
    const outcomes: Record<string, Attempt["outcome"]> = {
      [delivery(1).id]: "succeeded",
      [delivery(2).id]: "retrying",
      [delivery(3).id]: "dead",
      [delivery(4, "ep_b").id]: "dead",
    };
    for (const claim of claims) {
      const outcome = outcomes[claim.delivery.id];
      await store.recordAttempt({
        deliveryId: claim.delivery.id,
        endpointId: claim.endpoint.id,
        token: claim.token,
        attempt: attempt(outcome, outcome === "retrying" ? T0 + 5_000 : null),
        nowMs: T0,
        disableAfterMs: 5 * DAY,
        failingReason: "Failing",
      });
    }
    assert.deepEqual(await store.countDeliveries(), { pending: 1, dead: 2 });
    assert.equal(await store.retry(delivery(3).id, T0 + 1), "requeued");
    assert.deepEqual(await store.countDeliveries(), { pending: 2, dead: 1 }, "a retry revives");
    await store.deleteEndpoint("ep_b");
    assert.deepEqual(await store.countDeliveries(), { pending: 2, dead: 0 });
    await store.putEndpoint(config("ep_c"), {
      expectVersion: null,
      state: { disabled: true, disabledReason: "Gone" },
    });
    await store.createDeliveries([delivery(5, "ep_c")]);
    assert.deepEqual(await store.countDeliveries(), { pending: 3, dead: 0 });
    await store.claimDue(claimOptions(T0 + 2));
    assert.deepEqual(
      await store.countDeliveries(),
      { pending: 2, dead: 1 },
      "due deliveries of a disabled endpoint die",
    );
    assert.equal(await store.replay("ep_a", { sinceMs: T0, nowMs: T0 + 3 }), 1);
    assert.deepEqual(await store.countDeliveries(), { pending: 2, dead: 1 });
  },

  async "beginPage() fixes one page per cursor and commitPage() moves the cursor once"(store) {
    assert.deepEqual(await store.dispatchState("s"), { cursor: null, planEnd: null });
    assert.deepEqual(await store.beginPage("s", null, "5-0"), { cursor: null, planEnd: "5-0" });
    assert.deepEqual(
      await store.beginPage("s", null, "9-0"),
      { cursor: null, planEnd: "5-0" },
      "a second planner adopts the first plan",
    );
    assert.deepEqual(await store.beginPage("s", "1-0", "9-0"), { cursor: null, planEnd: "5-0" });
    assert.equal(await store.commitPage("s", "1-0", "5-0"), false);
    assert.equal(await store.commitPage("s", null, "5-0"), true);
    assert.equal(await store.commitPage("s", null, "5-0"), false);
    assert.deepEqual(await store.dispatchState("s"), { cursor: "5-0", planEnd: null });
    assert.deepEqual(await store.dispatchState("other"), { cursor: null, planEnd: null });
  },

  async "openDispatch() takes the lease and reads the state, listing the endpoints when asked, and takes no lease for none"(
    store,
  ) {
    const lease = "dispatch:s";
    const { version } = await store.listEndpointsVersioned();
    assert.deepEqual(
      await store.openDispatch("s", { lease, leaseMs: 60_000, listEndpoints: true }),
      {
        endpoints: [],
        lease: null,
        state: { cursor: null, planEnd: null },
        endpointsVersion: version,
      },
      "no endpoint: no lease",
    );
    const free = await store.acquireLease(lease, 60_000);
    assert.ok(free, "the lease was not taken");
    await store.releaseLease(lease, free);
    await store.putEndpoint(config("ep_b", { createdMs: T0 + 1 }), { expectVersion: null });
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.beginPage("s", null, "5-0");
    const opened = await store.openDispatch("s", { lease, leaseMs: 60_000, listEndpoints: true });
    assert.deepEqual(opened.endpoints, [
      await store.getEndpoint("ep_a"),
      await store.getEndpoint("ep_b"),
    ]);
    assert.ok(opened.lease);
    assert.deepEqual(opened.state, { cursor: null, planEnd: "5-0" });
    assert.equal(opened.endpointsVersion, (await store.listEndpointsVersioned()).version);
    const held = await store.openDispatch("s", { lease, leaseMs: 60_000 });
    assert.deepEqual(held, {
      endpoints: null,
      lease: null,
      state: { cursor: null, planEnd: "5-0" },
      endpointsVersion: opened.endpointsVersion,
    });
    await store.releaseLease(lease, opened.lease);
    const unlisted = await store.openDispatch("other", {
      lease: "dispatch:other",
      leaseMs: 60_000,
    });
    assert.equal(unlisted.endpoints, null);
    assert.ok(unlisted.lease, "not listing, it takes the lease");
  },

  async "openDispatch() with unlessVersion lists the endpoints when one was created, changed or deleted since that version"(
    store,
  ) {
    const lease = "dispatch:s";
    const open = async (unlessVersion: string) => {
      const opened = await store.openDispatch("s", { lease, leaseMs: 60_000, unlessVersion });
      if (opened.lease) await store.releaseLease(lease, opened.lease);
      return opened.endpoints?.map((endpoint) => endpoint.id) ?? null;
    };
    const empty = await store.listEndpointsVersioned();
    assert.deepEqual(empty.endpoints, []);
    assert.equal(await open(empty.version), null, "unchanged: not listed");
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    // Created since: listed, as with listEndpoints.
    assert.deepEqual(await open(empty.version), ["ep_a"]);
    const one = await store.listEndpointsVersioned();
    assert.deepEqual(one.endpoints.map((endpoint) => endpoint.id), ["ep_a"]);
    assert.notEqual(one.version, empty.version);
    assert.equal(await open(one.version), null, "unchanged: not listed");
    // A put refused (another version expected) changes nothing.
    assert.equal(await store.putEndpoint(config("ep_a"), { expectVersion: 7 }), null);
    assert.equal(await open(one.version), null, "a refused put: not listed");
    // Changed since (a PATCH, enabled again): listed with the change.
    await store.putEndpoint(config("ep_a", { version: 2, streams: ["s"] }), {
      expectVersion: 1,
      state: { disabled: true, disabledReason: "Disabled by its owner" },
    });
    assert.deepEqual(await open(one.version), ["ep_a"]);
    const changed = await store.listEndpointsVersioned();
    assert.notEqual(changed.version, one.version);
    assert.deepEqual(changed.endpoints[0].streams, ["s"]);
    // Deleted since: listed (none left, so no lease either).
    assert.equal(await store.deleteEndpoint("ep_a"), true);
    const opened = await store.openDispatch("s", {
      lease,
      leaseMs: 60_000,
      unlessVersion: changed.version,
    });
    assert.deepEqual(opened.endpoints, []);
    assert.equal(opened.lease, null, "no endpoint: no lease");
    const gone = await store.listEndpointsVersioned();
    assert.notEqual(gone.version, changed.version);
    assert.equal(await store.deleteEndpoint("ep_a"), false);
    assert.equal((await store.listEndpointsVersioned()).version, gone.version, "nothing deleted");
  },

  async "recordAttempt() that disables an endpoint changes the endpoint list's version, and one that does not leaves it"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1), delivery(2)]);
    const [first, second] = await store.claimDue(claimOptions(T0));
    const before = (await store.listEndpointsVersioned()).version;
    const failed = await store.recordAttempt({
      deliveryId: first.delivery.id,
      endpointId: "ep_a",
      token: first.token,
      attempt: attempt("retrying", T0 + 5_000),
      nowMs: T0,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    assert.deepEqual(failed, { recorded: true, disabled: false });
    assert.equal((await store.listEndpointsVersioned()).version, before, "not disabled: unchanged");
    assert.deepEqual(await store.recordAttempt(goneRecord(second)), {
      recorded: true,
      disabled: true,
    });
    const after = await store.listEndpointsVersioned();
    assert.notEqual(after.version, before);
    assert.equal(after.endpoints[0].disabled, true);
    // A page made for the list before the endpoint was disabled is not stored.
    const page = { cursor: null, end: "5-0", deliveries: [delivery(3)], endpointsVersion: before };
    assert.equal((await store.storePage("s", page))?.endpointsChanged, true);
  },

  async "storePage() with endpointsVersion stores nothing once an endpoint was created, changed or deleted since that version"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    const { version } = await store.listEndpointsVersioned();
    const page = { cursor: null, end: "5-0", deliveries: [delivery(1)] };
    await store.putEndpoint(config("ep_b"), { expectVersion: null });
    assert.deepEqual(await store.storePage("s", { ...page, endpointsVersion: version }), {
      created: 0,
      claims: [],
      endpointsChanged: true,
    });
    assert.deepEqual(await store.dispatchState("s"), { cursor: null, planEnd: null });
    assert.equal(await store.getDelivery(delivery(1).id), null, "nothing created");
    const now = (await store.listEndpointsVersioned()).version;
    assert.equal((await store.storePage("s", { ...page, endpointsVersion: now }))?.created, 1);
    assert.deepEqual(await store.dispatchState("s"), { cursor: "5-0", planEnd: null });
  },

  async "storePage() creates a page's deliveries and moves the cursor in one step, once per cursor"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    const lease = (await store.acquireLease("dispatch:s", 60_000))!;
    const created = async (page: Parameters<DeliveryStore["storePage"]>[1]) =>
      (await store.storePage("s", page))?.created ?? null;
    assert.equal(
      await created({ cursor: null, end: "5-0", deliveries: [delivery(1), delivery(2)] }),
      2,
    );
    assert.deepEqual(await store.dispatchState("s"), { cursor: "5-0", planEnd: null });
    assert.equal(
      await created({ cursor: null, end: "9-0", deliveries: [delivery(3)] }),
      null,
      "the cursor moved: nothing is stored",
    );
    assert.equal(await store.getDelivery(delivery(3).id), null);
    assert.equal(
      await created({
        cursor: "5-0",
        end: "9-0",
        deliveries: [delivery(2), delivery(3)],
        releaseLease: { name: "dispatch:s", token: "not-the-token" },
      }),
      1,
      "a delivery that exists is not created again",
    );
    assert.equal(await store.acquireLease("dispatch:s", 60_000), null, "still held");
    assert.deepEqual(
      await store.storePage("s", {
        cursor: "9-0",
        end: "12-0",
        deliveries: [],
        releaseLease: { name: "dispatch:s", token: lease },
      }),
      { created: 0, claims: [] },
    );
    assert.ok(await store.acquireLease("dispatch:s", 60_000), "given back with the page");
    assert.deepEqual(await store.dispatchState("s"), { cursor: "12-0", planEnd: null });
    const [due] = await store.claimDue({
      nowMs: T0,
      limit: 10,
      leaseMs: LEASE,
      maxConcurrency: 10,
    });
    assert.equal(due.delivery.id, delivery(1).id, "stored deliveries are due");
  },

  async "storePage() claims what is due in the same step when asked, as claimDue() does"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    const claim = { nowMs: T0, limit: 2, leaseMs: LEASE, maxConcurrency: 3 };
    const stored = await store.storePage("s", {
      cursor: null,
      end: "5-0",
      deliveries: [delivery(1), delivery(2), delivery(3)],
      claim,
    });
    assert.equal(stored?.created, 3);
    assert.equal(stored?.claims.length, 2);
    assert.equal(stored?.claims[0].endpoint.id, "ep_a");
    // One slot of the endpoint's three is left: the third delivery, and nothing twice.
    const rest = await store.claimDue({ ...claim, limit: 10 });
    assert.deepEqual(
      [...stored!.claims, ...rest].map((item) => item.delivery.id).sort(),
      [delivery(1).id, delivery(2).id, delivery(3).id],
    );
    const [first] = stored!.claims;
    const { recorded } = await store.recordAttempt({
      deliveryId: first.delivery.id,
      endpointId: "ep_a",
      token: first.token,
      attempt: attempt("succeeded", null),
      nowMs: T0 + 1,
      disableAfterMs: DAY,
      failingReason: "failing",
    });
    assert.equal(recorded, true, "its token records the attempt");
    assert.equal(
      await store.storePage("s", { cursor: null, end: "9-0", deliveries: [], claim }),
      null,
      "a refused page claims nothing",
    );
  },

  async "storePage() stores a page fixed by beginPage() only as it was fixed"(store) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.beginPage("s", null, "5-0");
    assert.equal(
      await store.storePage("s", { cursor: null, end: "9-0", deliveries: [delivery(1)] }),
      null,
    );
    assert.deepEqual(await store.dispatchState("s"), { cursor: null, planEnd: "5-0" });
    assert.deepEqual(
      await store.storePage("s", { cursor: null, end: "5-0", deliveries: [delivery(1)] }),
      { created: 1, claims: [] },
    );
    assert.deepEqual(await store.dispatchState("s"), { cursor: "5-0", planEnd: null });
  },

  async "deleteEndpoint() with expectVersion deletes only that version, compared in the store; without it, any"(
    store,
  ) {
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.putEndpoint({ ...config("ep_a"), version: 2 }, { expectVersion: 1 });
    await store.createDeliveries([delivery(1)]);
    // A stale version (another admin's change made it 2): nothing deleted, its queue kept.
    assert.equal(await store.deleteEndpoint("ep_a", { expectVersion: 1 }), false);
    assert.equal((await store.getEndpoint("ep_a"))?.version, 2);
    assert.ok(await store.getDelivery(delivery(1).id));
    assert.equal(await store.deleteEndpoint("ep_missing", { expectVersion: 1 }), false);
    assert.equal(await store.deleteEndpoint("ep_a", { expectVersion: 2 }), true);
    assert.equal(await store.getEndpoint("ep_a"), null);
    assert.equal(await store.getDelivery(delivery(1).id), null);
    await store.putEndpoint(config("ep_b"), { expectVersion: null });
    assert.equal(await store.deleteEndpoint("ep_b"), true);
    assert.equal(await store.deleteEndpoint("ep_b"), false);
  },

  async "acquireLease() gives a lease to one holder at a time"(store) {
    const token = await store.acquireLease("dispatch:s", 60_000);
    assert.ok(token);
    assert.equal(await store.acquireLease("dispatch:s", 60_000), null);
    assert.ok(await store.acquireLease("dispatch:other", 60_000));
    await store.releaseLease("dispatch:s", "not-the-token");
    assert.equal(await store.acquireLease("dispatch:s", 60_000), null);
    await store.releaseLease("dispatch:s", token);
    assert.ok(await store.acquireLease("dispatch:s", 60_000));
  },
};

for (const [name, scenario] of Object.entries(scenarios)) {
  Deno.test(`MemoryDeliveryStore: ${name}`, () =>
    scenario(new MemoryDeliveryStore({ now: () => T0 })));
  redisTest(`RedisDeliveryStore: ${name}`, (fixture) =>
    scenario(
      new RedisDeliveryStore(
        restClient(fixture),
        { now: () => T0 },
      ),
    ));
}

Deno.test("MemoryDeliveryStore: a lease ends after its time", async () => {
  let now = T0;
  const store = new MemoryDeliveryStore({ now: () => now });
  assert.ok(await store.acquireLease("x", 1_000));
  now += 999;
  assert.equal(await store.acquireLease("x", 1_000), null);
  now += 1;
  assert.ok(await store.acquireLease("x", 1_000));
});

Deno.test("MemoryDeliveryStore: deliveries are forgotten after the retention period", async () => {
  let now = T0;
  const store = new MemoryDeliveryStore({ now: () => now, retentionMs: DAY });
  await store.putEndpoint(config("ep_a"), { expectVersion: null });
  await store.createDeliveries([delivery(1)]);
  now += DAY - 1;
  assert.ok(await store.getDelivery(delivery(1).id));
  now += 1;
  assert.equal(await store.getDelivery(delivery(1).id), null);
  await store.createDeliveries([delivery(2)]);
  assert.deepEqual(
    (await store.listDeliveries("ep_a", { limit: 10 })).items.map((item) => item.messageId),
    ["msg_s_2"],
  );
});

Deno.test("MemoryDeliveryStore: a cut-off attempt keeps the delivery the retention period from then", async () => {
  let now = T0;
  const store = new MemoryDeliveryStore({ now: () => now, retentionMs: DAY });
  await store.putEndpoint(config("ep_a"), { expectVersion: null });
  await store.createDeliveries([delivery(1)]);
  now += DAY / 2;
  const [claim] = await store.claimDue(claimOptions(now));
  const cutOff = { attempt: interrupted(1, now), nowMs: now };
  assert.ok(
    await store.releaseClaim({
      deliveryId: claim.delivery.id,
      endpointId: "ep_a",
      token: claim.token,
      cutOff,
    }),
  );
  now = T0 + DAY + DAY / 2 - 1;
  assert.equal((await store.listAttempts(delivery(1).id)).length, 1);
  now += 1;
  assert.equal(await store.getDelivery(delivery(1).id), null);
});

Deno.test("MemoryDeliveryStore: a delivery is kept 7 days by default, as the README says", async () => {
  let now = T0;
  const store = new MemoryDeliveryStore({ now: () => now });
  await store.putEndpoint(config("ep_a"), { expectVersion: null });
  await store.createDeliveries([delivery(1)]);
  now += 7 * DAY - 1;
  assert.ok(await store.getDelivery(delivery(1).id));
  now += 1;
  assert.equal(await store.getDelivery(delivery(1).id), null);
});

Deno.test("MemoryDeliveryStore: deleting an endpoint frees its deliveries, not another's", async () => {
  const store = new MemoryDeliveryStore({ now: () => T0 });
  await store.putEndpoint(config("ep_a"), { expectVersion: null });
  await store.putEndpoint(config("ep_b"), { expectVersion: null });
  await store.createDeliveries([delivery(1), delivery(2), delivery(3, "ep_b")]);
  assert.equal(await store.deleteEndpoint("ep_a"), true);
  assert.equal(await store.getDelivery(delivery(1).id), null);
  assert.equal(await store.getDelivery(delivery(2).id), null);
  assert.ok(await store.getDelivery(delivery(3, "ep_b").id));
});

/**
 * Creates a delivery at T0, fails it half a retention later (which keeps it a retention from
 * then), and creates another just past the first's creation plus a retention: what the list
 * shows then, and how many a replay since T0 requeues.
 */
async function keptPastCreationRetention(
  store: DeliveryStore,
  setNow: (ms: number) => void,
  retentionMs: number,
): Promise<{ listed: string[]; replayed: number }> {
  await store.putEndpoint(config("ep_a"), { expectVersion: null });
  await store.createDeliveries([delivery(1)]);
  const failedMs = T0 + retentionMs / 2;
  setNow(failedMs);
  const [claim] = await store.claimDue(claimOptions(failedMs));
  await store.recordAttempt({
    deliveryId: claim.delivery.id,
    endpointId: "ep_a",
    token: claim.token,
    attempt: attempt("retrying", failedMs + 5_000),
    nowMs: failedMs,
    disableAfterMs: 5 * DAY,
    failingReason: "Failing",
  });
  const laterMs = T0 + retentionMs + 1_000;
  setNow(laterMs);
  await store.createDeliveries([delivery(2, "ep_a", laterMs)]);
  const page = await store.listDeliveries("ep_a", { limit: 10 });
  return {
    listed: page.items.map((item) => item.messageId),
    replayed: await store.replay("ep_a", { sinceMs: T0, nowMs: laterMs }),
  };
}

Deno.test("MemoryDeliveryStore: a delivery kept by a recent attempt stays listed and replayable past its creation's retention", async () => {
  let now = T0;
  const store = new MemoryDeliveryStore({ now: () => now, retentionMs: DAY });
  assert.deepEqual(await keptPastCreationRetention(store, (ms) => now = ms, DAY), {
    listed: ["msg_s_2", "msg_s_1"],
    replayed: 1,
  });
});

redisTest(
  "RedisDeliveryStore: a delivery kept by a recent attempt stays listed and replayable past its creation's retention",
  async (fixture) => {
    let now = T0;
    const redis = restClient(fixture);
    const store = new RedisDeliveryStore(redis, { now: () => now, retentionMs: DAY });
    assert.deepEqual(await keptPastCreationRetention(store, (ms) => now = ms, DAY), {
      listed: ["msg_s_2", "msg_s_1"],
      replayed: 1,
    });
  },
);

redisTest(
  "RedisDeliveryStore: the index drops a delivery created a retention ago once it is gone, not before",
  async (fixture) => {
    let now = T0;
    const redis = restClient(fixture);
    const store = new RedisDeliveryStore(redis, { prefix: "t", now: () => now, retentionMs: DAY });
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1), delivery(2)]);
    // The first expired (its key's TTL is real time: gone by hand), the second is kept.
    await redis.del(`t:{wh}:d:${delivery(1).id}`);
    now = T0 + DAY + 1_000;
    await store.createDeliveries([delivery(3, "ep_a", now)]);
    assert.equal(await redis.zscore("t:{wh}:ix:ep_a", delivery(1).id), null);
    assert.equal(await redis.zscore("t:{wh}:ix:ep_a", delivery(2).id), T0);
  },
);

/** Kills one delivery at T0 and counts at the end of its retention and just after. */
async function deadCountsAroundRetention(
  store: DeliveryStore,
  setNow: (ms: number) => void,
  retentionMs: number,
): Promise<number[]> {
  await store.putEndpoint(config("ep_a"), { expectVersion: null });
  await store.createDeliveries([delivery(1)]);
  const [claim] = await store.claimDue(claimOptions(T0));
  await store.recordAttempt({
    deliveryId: claim.delivery.id,
    endpointId: "ep_a",
    token: claim.token,
    attempt: attempt("dead", null),
    nowMs: T0,
    disableAfterMs: 5 * DAY,
    failingReason: "Failing",
  });
  const counts = [];
  for (const nowMs of [T0, T0 + retentionMs - 1_000, T0 + retentionMs + 1_000]) {
    setNow(nowMs);
    counts.push((await store.countDeliveries()).dead);
  }
  return counts;
}

Deno.test("MemoryDeliveryStore: countDeliveries() stops counting a dead delivery it forgot", async () => {
  let now = T0;
  const store = new MemoryDeliveryStore({ now: () => now, retentionMs: DAY });
  assert.deepEqual(await deadCountsAroundRetention(store, (ms) => now = ms, DAY), [1, 1, 0]);
});

redisTest(
  "RedisDeliveryStore: countDeliveries() stops counting a dead delivery it forgot",
  async (fixture) => {
    let now = T0;
    const redis = restClient(fixture);
    const store = new RedisDeliveryStore(redis, { now: () => now, retentionMs: DAY });
    assert.deepEqual(await deadCountsAroundRetention(store, (ms) => now = ms, DAY), [1, 1, 0]);
  },
);

redisTest(
  "RedisDeliveryStore: keys sit under the {wh} hash tag and growing ones expire",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisDeliveryStore(redis, { prefix: "t", now: () => T0 });
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const [claim] = await store.claimDue(claimOptions(T0));
    await store.recordAttempt({
      deliveryId: claim.delivery.id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: attempt("retrying", T0 + 5_000),
      nowMs: T0,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
    await store.beginPage("s", null, "1-0");
    const keys = (await redis.keys("*")).sort();
    assert.ok(keys.length > 0);
    for (const key of keys) assert.ok(key.startsWith("t:{wh}:"), key);
    // (`epv`, the endpoint list's version, is one short string that does not grow.)
    const lasting = new Set([
      "t:{wh}:ep:ep_a",
      "t:{wh}:eps:ep_a",
      "t:{wh}:endpoints",
      "t:{wh}:qe",
      "t:{wh}:epv",
    ]);
    for (const key of keys) {
      const ttl = await redis.pttl(key);
      if (lasting.has(key)) assert.equal(ttl, -1, key);
      else assert.ok(ttl > 0, `${key} must expire, has PTTL ${ttl}`);
    }
  },
);

redisTest(
  "RedisDeliveryStore: a cut-off attempt keeps the delivery and its new attempt log the retention period",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisDeliveryStore(redis, { prefix: "t", now: () => T0, retentionMs: DAY });
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([delivery(1)]);
    const id = delivery(1).id;
    await redis.pexpire(`t:{wh}:d:${id}`, 60_000);
    const [claim] = await store.claimDue(claimOptions(T0));
    const cutOff = { attempt: interrupted(1, T0), nowMs: T0 };
    assert.ok(
      await store.releaseClaim({ deliveryId: id, endpointId: "ep_a", token: claim.token, cutOff }),
    );
    for (const key of [`t:{wh}:d:${id}`, `t:{wh}:a:${id}`]) {
      const ttl = await redis.pttl(key);
      assert.ok(ttl > DAY - 60_000 && ttl <= DAY, `${key} PTTL ${ttl}`);
    }
  },
);

redisTest(
  "RedisDeliveryStore: a slow endpoint's rate-limit bucket lives until it refills (0.01/s: 100 s)",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisDeliveryStore(redis, { prefix: "slow", now: () => T0 });
    await store.putEndpoint(config("ep_a", { rateLimit: 0.01 }), { expectVersion: null });
    await store.createDeliveries([delivery(1), delivery(2)]);
    assert.equal((await store.claimDue(claimOptions(T0))).length, 1);
    const ttl = await redis.pttl("slow:{wh}:rl:ep_a");
    // One token spent at 0.01/s refills in 100 s; a 60 s expiry would allow one a minute.
    assert.ok(ttl > 99_000 && ttl <= 100_000, `bucket PTTL ${ttl}`);
    assert.equal((await store.claimDue(claimOptions(T0 + 60_000))).length, 0);
  },
);

redisTest(
  "RedisDeliveryStore: a bucket kept at an update ahead of the claim's clock lives until it refills from it",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisDeliveryStore(redis, { prefix: "skew", now: () => T0 });
    await store.putEndpoint(config("ep_a", { rateLimit: 2 }), { expectVersion: null });
    await store.createDeliveries([1, 2, 3].map((n) => delivery(n)));
    assert.equal((await store.claimDue(claimOptions(T0 + 10_000, { limit: 1 }))).length, 1);
    // 500 ms behind, the last token: the bucket, empty, refills from T0 + 10 s, 1 s to full by
    // the clock ahead, 1.5 s by this one's.
    assert.equal((await store.claimDue(claimOptions(T0 + 9_500))).length, 1);
    assert.deepEqual(await redis.hgetall("skew:{wh}:rl:ep_a"), { tk: 0, ts: T0 + 10_000 });
    const ttl = await redis.pttl("skew:{wh}:rl:ep_a");
    assert.ok(ttl > 1_400 && ttl <= 1_500, `bucket PTTL ${ttl}`);
    // Blocked, it looks again when the bucket holds a token: 500 ms after that update, not after
    // its own clock.
    assert.equal((await store.claimDue(claimOptions(T0 + 9_500))).length, 0);
    assert.equal(await redis.zscore("skew:{wh}:qe", "ep_a"), T0 + 10_500);
  },
);

redisTest(
  "RedisDeliveryStore: a status page looks at listScan entries at most, then goes on from there",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisDeliveryStore(redis, { now: () => T0, listScan: 3 });
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    await store.createDeliveries([1, 2, 3, 4, 5, 6, 7, 8].map((n) => delivery(n, "ep_a", T0 + n)));
    for (const claim of await store.claimDue(claimOptions(T0 + 10))) {
      const n = Number(claim.delivery.messageId.split("_")[2]);
      await store.recordAttempt({
        deliveryId: claim.delivery.id,
        endpointId: "ep_a",
        token: claim.token,
        attempt: attempt(n === 1 || n === 8 ? "dead" : "succeeded", null),
        nowMs: T0 + 10,
        disableAfterMs: 5 * DAY,
        failingReason: "Failing",
      });
    }
    const pages: string[][] = [];
    let cursor: string | null = null;
    for (let round = 0; round < 10; round++) {
      const page: Page<Delivery> = await store.listDeliveries("ep_a", {
        limit: 2,
        status: "dead",
        cursor,
      });
      pages.push(page.items.map((item) => item.messageId));
      cursor = page.nextCursor;
      if (cursor === null) break;
    }
    assert.deepEqual(pages, [["msg_s_8"], [], ["msg_s_1"]], "8 7 6 | 5 4 3 | 2 1");
    const all = await store.listDeliveries("ep_a", { limit: 8 });
    assert.equal(all.items.length, 8, "without a status, a page looks at limit + 1 at least");
    assert.equal(all.nextCursor, null);
  },
);

redisTest(
  "RedisDeliveryStore by default: a status page looks at no more than 5,000 deliveries, as README says, whatever its limit (at most 200)",
  async (fixture) => {
    const redis = restClient(fixture);
    const scans: unknown[] = [];
    const noted = (argv: unknown[]) => {
      const arg = JSON.parse(String(argv[0]));
      if (arg.ep !== undefined && arg.scan !== undefined && arg.since === undefined) {
        scans.push([arg.status, arg.limit, arg.scan]);
      }
    };
    // Noted once answered: an EVALSHA the script cache misses is sent again as EVAL.
    const client = {
      async evalsha(...args: Parameters<Redis["evalsha"]>) {
        const reply = await redis.evalsha(...args);
        noted(args[2]);
        return reply;
      },
      async eval(...args: Parameters<Redis["eval"]>) {
        const reply = await redis.eval(...args);
        noted(args[2]);
        return reply;
      },
    };
    const store = new RedisDeliveryStore(client as unknown as RedisScriptClient, { now: () => T0 });
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    for (const limit of [1, 200]) {
      assert.deepEqual(await store.listDeliveries("ep_a", { limit, status: "dead" }), {
        items: [],
        nextCursor: null,
      });
    }
    assert.deepEqual(scans, [["dead", 1, 5_000], ["dead", 200, 5_000]]);
    const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
      .replace(/\s+/g, " ");
    assert.ok(readme.includes("one page with `status` looks at no more than 5,000 deliveries"));
  },
);

/**
 * Twenty deliveries of ep_a created four to a millisecond (so that pages end between deliveries
 * created at once), attempted with every outcome, one still in flight; then a replay of those
 * created since `T0 + 1` (all but the first three). Returns what the replay answered, each
 * delivery's status after it, and what a second replay then answers.
 */
async function replayOfMany(
  store: DeliveryStore,
): Promise<{ replayed: number; statuses: string[]; again: number }> {
  const numbers = Array.from({ length: 20 }, (_, i) => i + 1);
  await store.putEndpoint(config("ep_a"), { expectVersion: null });
  await store.createDeliveries(numbers.map((n) => delivery(n, "ep_a", T0 + Math.floor(n / 4))));
  for (const claim of await store.claimDue(claimOptions(T0 + 10_000))) {
    const n = Number(claim.delivery.messageId.split("_")[2]);
    // Delivery 7 stays in flight: its lease outlives the replay.
    if (n === 7) continue;
    const outcome = n % 5 === 0 ? "succeeded" : n % 5 === 1 ? "retrying" : "dead";
    await store.recordAttempt({
      deliveryId: claim.delivery.id,
      endpointId: "ep_a",
      token: claim.token,
      attempt: attempt(outcome, outcome === "retrying" ? T0 + DAY : null),
      nowMs: T0 + 10_000,
      disableAfterMs: 5 * DAY,
      failingReason: "Failing",
    });
  }
  const replayed = await store.replay("ep_a", { sinceMs: T0 + 1, nowMs: T0 + 20_000 });
  const statuses = await Promise.all(
    numbers.map(async (n) => `${n}:${(await store.getDelivery(delivery(n).id))?.status}`),
  );
  const again = await store.replay("ep_a", { sinceMs: T0 + 1, nowMs: T0 + 20_000 });
  return { replayed, statuses, again };
}

/** What {@linkcode replayOfMany} gives: 4 to 20 but the succeeded and the one in flight. */
const REPLAYED_OF_MANY = [4, 6, 8, 9, 11, 12, 13, 14, 16, 17, 18, 19];

Deno.test("MemoryDeliveryStore: replay() requeues each retrying and dead delivery since a time once", async () => {
  const result = await replayOfMany(new MemoryDeliveryStore({ now: () => T0 }));
  assert.equal(result.replayed, REPLAYED_OF_MANY.length);
  // Those created before since stay as they were, so do the succeeded ones; 7, in flight, is.
  assert.deepEqual(
    result.statuses,
    Array.from({ length: 20 }, (_, i) => i + 1).map((n) =>
      `${n}:${n === 1 ? "retrying" : n < 4 ? "dead" : n % 5 === 0 ? "succeeded" : "pending"}`
    ),
  );
  assert.ok(REPLAYED_OF_MANY.every((n) => result.statuses[n - 1] === `${n}:pending`));
  assert.equal(result.again, 0, "each requeued once: none is retrying or dead any more");
});

redisTest(
  "RedisDeliveryStore: replay() goes over the deliveries replayScan at a time, one script call each, and requeues each once, as the memory store does",
  async (fixture) => {
    const redis = restClient(fixture);
    const reference = await replayOfMany(new MemoryDeliveryStore({ now: () => T0 }));
    // The whole history in one call, with the default scan.
    assert.deepEqual(
      await replayOfMany(new RedisDeliveryStore(redis, { prefix: "whole", now: () => T0 })),
      reference,
    );
    // Three entries a call: each replay script call and what it looked at and requeued.
    const calls: Array<{ scan: number; count: number; next: unknown }> = [];
    const noted = (argv: unknown[], reply: unknown) => {
      const arg = JSON.parse(String(argv[0]));
      if (arg.since === undefined || arg.scan === undefined) return;
      const { count, next } = typeof reply === "string" ? JSON.parse(reply) : reply as never;
      calls.push({ scan: arg.scan, count, next });
    };
    const client = {
      async evalsha(...args: Parameters<Redis["evalsha"]>) {
        const reply = await redis.evalsha(...args);
        noted(args[2], reply);
        return reply;
      },
      async eval(...args: Parameters<Redis["eval"]>) {
        const reply = await redis.eval(...args);
        noted(args[2], reply);
        return reply;
      },
    };
    const paged = new RedisDeliveryStore(client as unknown as RedisScriptClient, {
      prefix: "paged",
      now: () => T0,
      replayScan: 3,
    });
    assert.deepEqual(await replayOfMany(paged), reference);
    // 17 deliveries created since: 6 calls of at most 3 (the last finds 2), and as many again
    // for the second replay; none looked at more.
    assert.equal(calls.length, 12, JSON.stringify(calls));
    assert.ok(calls.every((call) => call.scan === 3 && call.count <= 3), JSON.stringify(calls));
    // In index order (by creation, then id as text): 4 5 6 | 7 10 11 | 8 9 12 | 13 14 15 |
    // 16 17 18 | 19 20, 7 in flight and 5, 10, 15 and 20 succeeded.
    assert.deepEqual(calls.map((call) => call.count), [2, 1, 3, 2, 3, 1, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(calls.map((call) => call.next === false), [
      ...[false, false, false, false, false, true],
      ...[false, false, false, false, false, true],
    ]);
    assert.throws(
      () => new RedisDeliveryStore(redis, { replayScan: 0 }),
      /replayScan: expected a whole number of at least 1, got 0/,
    );
    // By default 1,000 entries a call: 1,001 deliveries take two.
    calls.length = 0;
    const byDefault = new RedisDeliveryStore(client as unknown as RedisScriptClient, {
      prefix: "default",
      now: () => T0,
    });
    await byDefault.putEndpoint(config("ep_a"), { expectVersion: null });
    await byDefault.createDeliveries(Array.from({ length: 1_001 }, (_, i) => delivery(i + 1)));
    assert.equal(await byDefault.replay("ep_a", { sinceMs: T0, nowMs: T0 }), 0);
    assert.deepEqual(calls.map((call) => [call.scan, call.next === false]), [
      [1_000, false],
      [1_000, true],
    ]);
  },
);

/**
 * Runs `fn` with a Redis delivery store through a dropping proxy (`direct`: one without it, on
 * the same Redis).
 */
async function viaDroppingProxy(
  fixture: RedisFixture,
  fn: (
    stores: { store: DeliveryStore; direct: DeliveryStore; proxy: DroppingProxy },
  ) => Promise<void>,
): Promise<void> {
  const direct = new RedisDeliveryStore(
    restClient(fixture),
    { now: () => T0 },
  );
  const proxy = startDroppingProxy({ targetUrl: fixture.restUrl });
  try {
    const store = new RedisDeliveryStore(
      new Redis({ url: proxy.url, token: fixture.restToken, enableTelemetry: false }),
      { now: () => T0 },
    );
    await fn({ store, direct, proxy });
  } finally {
    await proxy.close();
  }
}

redisTest(
  "RedisDeliveryStore: an attempt record the client sends again after its connection was lost answers as the first",
  (fixture) =>
    viaDroppingProxy(fixture, async ({ store, direct, proxy }) => {
      await direct.putEndpoint(config("ep_b"), { expectVersion: null });
      await direct.createDeliveries([delivery(9, "ep_b")]);
      const [gone] = await direct.claimDue(claimOptions(T0));
      const record = goneRecord(gone);
      // The script in Redis's cache first, so the dropped request is the EVALSHA that runs it.
      await store.recordAttempt({ ...record, deliveryId: "none" });
      proxy.dropNextConnection(() => true);
      const reply = await store.recordAttempt(record);
      assert.equal(proxy.dropped, 1);
      // Recorded, and the endpoint disabled, by the first send: the client is told so.
      assert.deepEqual(reply, { recorded: true, disabled: true });
      assert.equal((await store.getDelivery(gone.delivery.id))?.attempts, 1);
    }),
);

redisTest(
  "RedisDeliveryStore: an endpoint change the client sends again after its connection was lost answers as the first, with what it stored",
  (fixture) =>
    viaDroppingProxy(fixture, async ({ store, direct, proxy }) => {
      await direct.putEndpoint(config("ep_a"), { expectVersion: null });
      // The script in Redis's cache first, so the dropped request is the EVALSHA that runs it.
      assert.equal(await store.putEndpoint(config("ep_a"), { expectVersion: 9 }), null);
      proxy.dropNextConnection(() => true);
      const written = await store.putEndpoint(config("ep_a", { description: "d", version: 2 }), {
        expectVersion: 1,
        state: { disabled: true, disabledReason: "By its owner" },
      });
      assert.equal(proxy.dropped, 1);
      // Written by the first send (the version moved since): the client gets what it stored.
      assert.deepEqual(written, {
        ...config("ep_a", { description: "d", version: 2 }),
        disabled: true,
        disabledReason: "By its owner",
        failingSinceMs: null,
      });
      assert.deepEqual(written, await direct.getEndpoint("ep_a"));
    }),
);

redisTest(
  "RedisDeliveryStore: a claim release the client sends again after its connection was lost answers as the first",
  (fixture) =>
    viaDroppingProxy(fixture, async ({ store, direct, proxy }) => {
      await direct.putEndpoint(config("ep_a"), { expectVersion: null });
      await direct.createDeliveries([delivery(1), delivery(2)]);
      const claims = await direct.claimDue(claimOptions(T0));
      const [plain, cut] = claims.map((claim) => ({
        deliveryId: claim.delivery.id,
        endpointId: "ep_a",
        token: claim.token,
      }));
      // The script in Redis's cache first, so the dropped request is the EVALSHA that runs it.
      assert.equal(await store.releaseClaim({ ...plain, token: "none" }), false);
      proxy.dropNextConnection(() => true);
      assert.equal(await store.releaseClaim(plain), true, "given back by the first send");
      assert.equal(proxy.dropped, 1);

      proxy.dropNextConnection(() => true);
      const cutOff = { attempt: interrupted(1, T0), nowMs: T0 + 7 };
      assert.equal(await store.releaseClaim({ ...cut, cutOff }), true);
      assert.equal(proxy.dropped, 2);
      // Logged and counted once.
      assert.deepEqual(await store.listAttempts(cut.deliveryId), [interrupted(1, T0)]);
      const released = await store.getDelivery(cut.deliveryId);
      assert.deepEqual(released && [released.attempts, released.interruptions], [1, 1]);
      // Another release with that token is another call: nothing is left to give back.
      assert.equal(await store.releaseClaim(plain), false);
    }),
);

redisTest(
  "RedisDeliveryStore: an endpoint deletion the client sends again after its connection was lost answers as the first",
  (fixture) =>
    viaDroppingProxy(fixture, async ({ store, direct, proxy }) => {
      await direct.putEndpoint(config("ep_a"), { expectVersion: null });
      assert.equal(await store.deleteEndpoint("ep_none"), false);
      proxy.dropNextConnection(() => true);
      assert.equal(await store.deleteEndpoint("ep_a"), true);
      assert.equal(proxy.dropped, 1);
      assert.equal(await store.getEndpoint("ep_a"), null);
      // Another deletion is another call: nothing is left to delete.
      assert.equal(await store.deleteEndpoint("ep_a"), false);
    }),
);

redisTest(
  "RedisDeliveryStore: an endpoint write the client sends again after its connection was lost answers as the first",
  (fixture) =>
    viaDroppingProxy(fixture, async ({ store, proxy }) => {
      await store.putEndpoint(config("ep_a"), { expectVersion: null });
      proxy.dropNextConnection(() => true);
      const next = config("ep_a", { url: "https://x.test/", version: 2, updatedMs: T0 + 1 });
      assert.ok(
        await store.putEndpoint(next, { expectVersion: 1, state: { disabled: true } }),
      );
      assert.equal(proxy.dropped, 1);
      const endpoint = await store.getEndpoint("ep_a");
      assert.deepEqual([endpoint?.url, endpoint?.version, endpoint?.disabled], [
        "https://x.test/",
        2,
        true,
      ]);
      // The same config from another call is another write: refused at a stale version, and
      // its state is not taken.
      assert.equal(
        await store.putEndpoint(next, { expectVersion: 1, state: { disabled: false } }),
        null,
      );
      assert.equal((await store.getEndpoint("ep_a"))?.disabled, true);
    }),
);

redisTest(
  "RedisDeliveryStore: a lease, retry or replay the client sends again after its connection was lost answers as the first",
  (fixture) =>
    viaDroppingProxy(fixture, async ({ store, direct, proxy }) => {
      // Each script in Redis's cache first, so each dropped request is the EVALSHA that runs it.
      await store.acquireLease("warm", 1_000);
      await store.retry("none", T0);
      await store.replay("ep_none", { sinceMs: T0, nowMs: T0 });

      proxy.dropNextConnection(() => true);
      const token = await store.acquireLease("backlog", 30_000);
      assert.equal(proxy.dropped, 1);
      // The first send took it: this call holds it, and nobody else gets it.
      assert.ok(token);
      assert.equal(await direct.acquireLease("backlog", 30_000), null);

      await direct.putEndpoint(config("ep_a"), { expectVersion: null });
      await direct.createDeliveries([delivery(1), delivery(2)]);
      for (const claim of await direct.claimDue(claimOptions(T0))) {
        await direct.recordAttempt({ ...goneRecord(claim), disableReason: undefined });
      }
      proxy.dropNextConnection(() => true);
      assert.equal(await store.replay("ep_a", { sinceMs: T0, nowMs: T0 + 1 }), 2);
      assert.equal(proxy.dropped, 2);

      // Held half a second once Redis ran it: the delivery is claimed before the second send.
      const [claim] = await direct.claimDue(claimOptions(T0 + 2));
      await direct.recordAttempt({ ...goneRecord(claim), disableReason: undefined });
      proxy.dropNextConnection(() => true, { holdMs: 500 });
      const retried = store.retry(claim.delivery.id, T0 + 3);
      await new Promise((resolve) => setTimeout(resolve, 200));
      assert.equal((await direct.claimDue(claimOptions(T0 + 3))).length, 1);
      assert.equal(await retried, "requeued");
      assert.equal(proxy.dropped, 3);
    }),
);

redisTest(
  "RedisDeliveryStore: a claim or a stored page the client sends again after its connection was lost answers the first one's claims",
  (fixture) =>
    viaDroppingProxy(fixture, async ({ store, direct, proxy }) => {
      await direct.putEndpoint(config("ep_a"), { expectVersion: null });
      // Both scripts in Redis's cache first.
      await store.claimDue(claimOptions(T0));
      await store.storePage("warm", { cursor: null, end: "1-0", deliveries: [] });

      await direct.createDeliveries([delivery(1), delivery(2)]);
      proxy.dropNextConnection(() => true);
      const claims = await store.claimDue(claimOptions(T0));
      assert.equal(proxy.dropped, 1);
      // The first send claimed both: the caller gets them (and sends them now, not after the
      // lease), and nothing else was claimed.
      assert.deepEqual(claims.map((claim) => claim.delivery.id).sort(), [
        delivery(1).id,
        delivery(2).id,
      ]);
      for (const claim of claims) {
        assert.equal(claim.endpoint.url, "https://example.com/ep_a");
        const recorded = await store.recordAttempt({
          ...goneRecord(claim),
          attempt: attempt("succeeded", null),
          disableReason: undefined,
        });
        assert.deepEqual(recorded, { recorded: true, disabled: false });
      }

      proxy.dropNextConnection(() => true);
      const stored = await store.storePage("s", {
        cursor: null,
        end: "5-0",
        deliveries: [delivery(3)],
        claim: claimOptions(T0),
      });
      assert.equal(proxy.dropped, 2);
      assert.equal(stored?.created, 1);
      assert.deepEqual(stored?.claims.map((claim) => claim.delivery.id), [delivery(3).id]);
      assert.deepEqual(await store.dispatchState("s"), { cursor: "5-0", planEnd: null });
    }),
);

redisTest(
  "RedisDeliveryStore: a status page looks at 5,000 deliveries at most by default",
  async (fixture) => {
    const redis = restClient(fixture);
    const store = new RedisDeliveryStore(redis, { now: () => T0 });
    await store.putEndpoint(config("ep_a"), { expectVersion: null });
    for (let from = 1; from <= 5_000; from += 500) {
      await store.createDeliveries(
        Array.from({ length: 500 }, (_, i) => delivery(from + i, "ep_a", T0 + from + i)),
      );
    }
    // The oldest dies; the others it claims with it succeed.
    for (const claim of await store.claimDue(claimOptions(T0 + 10))) {
      await store.recordAttempt({
        deliveryId: claim.delivery.id,
        endpointId: "ep_a",
        token: claim.token,
        attempt: attempt(claim.delivery.messageId === "msg_s_1" ? "dead" : "succeeded", null),
        nowMs: T0 + 10,
        disableAfterMs: 5 * DAY,
        failingReason: "Failing",
      });
    }
    const dead = async (cursor: string | null = null) =>
      await store.listDeliveries("ep_a", { limit: 10, status: "dead", cursor });
    // The dead one is the 5,000th newest: the first page reaches it.
    assert.deepEqual((await dead()).items.map((item) => item.messageId), ["msg_s_1"]);
    // One newer delivery puts it 5,001st: the first page stops short of it, the next finds it.
    await store.createDeliveries([delivery(5_001, "ep_a", T0 + 5_001)]);
    const first = await dead();
    assert.deepEqual(first.items, []);
    assert.notEqual(first.nextCursor, null);
    assert.deepEqual(
      (await dead(first.nextCursor)).items.map((item) => item.messageId),
      ["msg_s_1"],
    );
  },
);

/** The bound of endpoints (`maxEndpoints`), on both stores. */
const boundScenarios: Record<
  string,
  (make: (maxEndpoints: number) => DeliveryStore) => Promise<void>
> = {
  async "putEndpoint() creating past maxEndpoints throws StoredLimitError and stores nothing; a deletion frees a place"(
    make,
  ) {
    const store = make(2);
    assert.ok(await store.putEndpoint(config("ep_a"), { expectVersion: null }));
    assert.ok(await store.putEndpoint(config("ep_b"), { expectVersion: null }));
    const refused = await store.putEndpoint(config("ep_c"), { expectVersion: null }).then(
      () => assert.fail("created past the bound"),
      (error) => error,
    );
    assert.ok(refused instanceof StoredLimitError, String(refused));
    assert.deepEqual([refused.kind, refused.max, refused.held], ["webhooks", 2, 2]);
    assert.equal(await store.getEndpoint("ep_c"), null);
    assert.deepEqual((await store.listEndpoints()).map((item) => item.id), ["ep_a", "ep_b"]);
    // An update at the bound adds none: it goes through; an existing id still answers false.
    assert.ok(
      await store.putEndpoint(config("ep_a", { url: "https://example.com/new", version: 2 }), {
        expectVersion: 1,
      }),
    );
    assert.equal(await store.putEndpoint(config("ep_b"), { expectVersion: null }), null);
    assert.equal(await store.deleteEndpoint("ep_a"), true);
    assert.ok(await store.putEndpoint(config("ep_c"), { expectVersion: null }));
    assert.deepEqual((await store.listEndpoints()).map((item) => item.id), ["ep_b", "ep_c"]);
  },
};

function redisDeliveryStore(fixture: RedisFixture, maxEndpoints: number): RedisDeliveryStore {
  return new RedisDeliveryStore(
    restClient(fixture),
    { now: () => T0, maxEndpoints },
  );
}

for (const [name, scenario] of Object.entries(boundScenarios)) {
  Deno.test(`MemoryDeliveryStore: ${name}`, () =>
    scenario((maxEndpoints) => new MemoryDeliveryStore({ now: () => T0, maxEndpoints })));
  redisTest(
    `RedisDeliveryStore: ${name}`,
    (fixture) => scenario((maxEndpoints) => redisDeliveryStore(fixture, maxEndpoints)),
  );
}

redisTest(
  "RedisDeliveryStore: two instances racing for the last place under maxEndpoints: one creates, the other is refused",
  async (fixture) => {
    const [first, second] = [redisDeliveryStore(fixture, 2), redisDeliveryStore(fixture, 2)];
    await first.putEndpoint(config("ep_a"), { expectVersion: null });
    for (let round = 0; round < 20; round++) {
      const results = await Promise.allSettled([
        first.putEndpoint(config(`ep_x${round}`), { expectVersion: null }),
        second.putEndpoint(config(`ep_y${round}`), { expectVersion: null }),
      ]);
      const created = results.filter((result) => result.status === "fulfilled");
      const refused = results.filter((result) =>
        result.status === "rejected" && result.reason instanceof StoredLimitError
      );
      assert.equal(created.length, 1, `round ${round}: ${JSON.stringify(results)}`);
      assert.equal(refused.length, 1, `round ${round}`);
      const held = await first.listEndpoints();
      assert.equal(held.length, 2);
      assert.equal(await second.deleteEndpoint(held.find((item) => item.id !== "ep_a")!.id), true);
    }
  },
);

redisTest(
  "RedisDeliveryStore: a dispatch opening or lease whose reply was lost gives back the lease it may have taken, so the next one need not wait out its life",
  async (fixture) => {
    const redis = restClient(fixture);
    let loseReply = false;
    // Runs the call in Redis, then fails as a reply lost on the way back would.
    const client = {
      async evalsha(...args: Parameters<Redis["evalsha"]>) {
        const reply = await redis.evalsha(...args);
        if (loseReply) {
          loseReply = false;
          throw new TypeError("error sending request: connection closed before message completed");
        }
        return reply;
      },
      eval: (...args: Parameters<Redis["eval"]>) => redis.eval(...args),
    };
    const store = new RedisDeliveryStore(client as unknown as RedisScriptClient, { now: () => T0 });
    const lease = "dispatch:s";
    const first = await store.openDispatch("s", { lease, leaseMs: 60_000 });
    assert.ok(first.lease, "the script in Redis's cache, the lease taken");
    await store.releaseLease(lease, first.lease);
    loseReply = true;
    await assert.rejects(
      store.openDispatch("s", { lease, leaseMs: 60_000 }),
      (error) => error instanceof StoreUnavailableError && error.outcome === "unknown",
    );
    const next = await store.openDispatch("s", { lease, leaseMs: 60_000 });
    assert.ok(next.lease, "the lease the lost call took was given back");
    await store.releaseLease(lease, next.lease);
    // The same for a lease taken alone (the backlog gauge's); its script in Redis's cache first.
    assert.ok(await store.acquireLease("warm", 1));
    loseReply = true;
    await assert.rejects(store.acquireLease("gauge", 60_000), StoreUnavailableError);
    assert.ok(await store.acquireLease("gauge", 60_000), "given back");
  },
);

/** The argument object of a delivery store call (its one ARGV), as a proxy sees it. */
function callArgs(commands: unknown[][]): Record<string, unknown> {
  try {
    return JSON.parse(String(commands[0]?.[4] ?? "null")) ?? {};
  } catch {
    return {};
  }
}

redisTest(
  "RedisDeliveryStore: after a dispatch opening's lost reply, a give-back Redis does not answer is waited for about 1 s, not the call's deadline",
  async (fixture) => {
    const proxy = startDroppingProxy({ targetUrl: fixture.restUrl });
    try {
      const redis = new Redis({
        url: proxy.url,
        token: fixture.restToken,
        enableTelemetry: false,
        retry: false,
      });
      // A deadline far beyond the bound, so only the bound can end the wait.
      const store = new RedisDeliveryStore(redis, { now: () => T0, timeoutMs: 60_000 });
      const lease = "dispatch:s";
      const warm = await store.openDispatch("s", { lease, leaseMs: 60_000 });
      await store.releaseLease(lease, warm.lease!);
      // The opening runs, its connection closes with no reply (and again for each send Deno's
      // fetch repeats on a new connection); the give-back runs, and its connection stays open,
      // answering nothing, until the proxy closes.
      const opening = (commands: unknown[][]) => callArgs(commands).list !== undefined;
      for (let i = 0; i < 5; i++) proxy.dropNextConnection(opening);
      proxy.dropNextConnection(
        (commands) => {
          const args = callArgs(commands);
          return args.token !== undefined && args.ttl === undefined && args.list === undefined;
        },
        { holdMs: 600_000 },
      );
      const received = proxy.received;
      const dropped = proxy.dropped;
      let guard: ReturnType<typeof setTimeout> | undefined;
      const outcome = await Promise.race([
        store.openDispatch("s", { lease, leaseMs: 60_000 }).then(
          () => "answered",
          (error) => error instanceof StoreUnavailableError ? error.outcome : String(error),
        ),
        // Ten times the bound: a wait for the give-back's own deadline (60 s) ends here.
        new Promise((resolve) => guard = setTimeout(() => resolve("still waiting"), 10_000)),
      ]);
      clearTimeout(guard);
      assert.equal(outcome, "unknown");
      // Every send of the opening dropped; the give-back received, neither answered nor dropped.
      const opened = proxy.dropped - dropped;
      assert.ok(opened >= 1, "the opening's reply was lost");
      assert.equal(proxy.received - received, opened + 1, "the give-back is still unanswered");
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "RedisDeliveryStore: a dispatch opening that runs in Redis after its deadline and its give-back takes no lease, so the next one need not wait out its life",
  async (fixture) => {
    const redis = restClient(fixture);
    let hold: Promise<void> | null = null;
    let late: Promise<unknown> | null = null;
    // Holds a lease-taking call on its way to Redis until `hold` settles, as a slow network or
    // a Redis busy past the call's deadline would.
    const client = {
      evalsha(...args: Parameters<Redis["evalsha"]>) {
        const argv = JSON.parse(String(args[2][0]));
        if (hold && argv.ttl !== undefined) {
          const waiting = hold;
          hold = null;
          late = waiting.then(() => redis.evalsha(...args));
          return late;
        }
        return redis.evalsha(...args);
      },
      eval: (...args: Parameters<Redis["eval"]>) => redis.eval(...args),
    };
    const store = new RedisDeliveryStore(client as unknown as RedisScriptClient, {
      now: () => T0,
      timeoutMs: 200,
    });
    for (
      const take of [
        (name: string) =>
          store.openDispatch("s", { lease: name, leaseMs: 60_000 }).then(({ lease }) => lease),
        (name: string) => store.acquireLease(name, 60_000),
      ]
    ) {
      const name = `lease-${crypto.randomUUID()}`;
      const warm = await take(name);
      assert.ok(warm, "the script in Redis's cache, the lease taken");
      await store.releaseLease(name, warm);
      let go!: () => void;
      hold = new Promise((resolve) => go = resolve);
      await assert.rejects(
        take(name),
        (error) => error instanceof StoreUnavailableError && error.outcome === "unknown",
      );
      // Given back (nothing held yet), then the call runs in Redis: it takes nothing.
      go();
      const reply: unknown = await late;
      assert.ok(reply !== null, "the late call ran");
      const next = await take(name);
      assert.ok(next, "the next call takes the lease at once");
      await store.releaseLease(name, next);
    }
    // What marks a token given back lives no longer than the lease would have.
    const gone = await withDirect(
      fixture.redisUrl,
      (send) => send("KEYS", "es:{wh}:gone:*"),
    ) as string[];
    assert.equal(gone.length, 2);
    for (const key of gone) {
      const ttl = Number(await withDirect(fixture.redisUrl, (send) => send("PTTL", key)));
      assert.ok(ttl > 0 && ttl <= 60_000, `${key}: ${ttl}`);
    }
  },
);
