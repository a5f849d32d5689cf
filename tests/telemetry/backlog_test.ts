/**
 * The webhook backlog gauges are reported by one instance at a time: two
 * reporters sharing one delivery store (as two instances share Redis) take
 * turns through the lease, on an injected clock.
 */
import assert from "node:assert/strict";
import { MemoryDeliveryStore } from "../../src/store/mod.ts";
import { WebhookBacklogGauges } from "../../src/telemetry/mod.ts";
import { config, delivery, T0 } from "../store/_delivery_fixtures.ts";

Deno.test("WebhookBacklogGauges: one instance reports at a time, renews its lease, and another takes over when it stops", async () => {
  let now = T0;
  const deliveries = new MemoryDeliveryStore({ now: () => now });
  const options = { leaseMs: 10_000, now: () => now };
  const a = new WebhookBacklogGauges(deliveries, options);
  const b = new WebhookBacklogGauges(deliveries, options);
  try {
    assert.deepEqual(await a.refresh(), { pending: 0, dead: 0 });
    assert.equal(await b.refresh(), null, "another instance holds the lease");
    // The lease the README names: held, so no one else takes it.
    assert.equal(await deliveries.acquireLease("telemetry:webhook-backlog", 1_000), null);
    assert.deepEqual(a.reported, { pending: 0, dead: 0 });
    assert.equal(b.reported, null);

    await deliveries.putEndpoint(config("ep_a"), { expectVersion: null });
    await deliveries.createDeliveries([delivery(1, "ep_a")]);
    now = T0 + 4_000;
    assert.deepEqual(await a.refresh(), { pending: 1, dead: 0 }, "the holder reads fresh counts");
    now = T0 + 6_000;
    assert.deepEqual(await a.refresh(), { pending: 1, dead: 0 }, "past half its lease it renews");
    assert.equal(await b.refresh(), null);
    now = T0 + 15_000;
    assert.deepEqual(a.reported, { pending: 1, dead: 0 }, "the renewed lease lasts");
    assert.equal(await b.refresh(), null);

    // `a` stops sweeping: once its lease ends it reports nothing and `b` takes over.
    now = T0 + 16_000;
    assert.equal(a.reported, null);
    assert.deepEqual(await b.refresh(), { pending: 1, dead: 0 });
    assert.deepEqual(b.reported, { pending: 1, dead: 0 });

    // Closing gives the lease back at once.
    await b.close();
    assert.equal(b.reported, null);
    assert.deepEqual(await a.refresh(), { pending: 1, dead: 0 });
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("WebhookBacklogGauges: after the instance's wall clock steps back, it reports nothing until it renews its lease", async () => {
  let storeNow = T0;
  let now = T0;
  const deliveries = new MemoryDeliveryStore({ now: () => storeNow });
  const a = new WebhookBacklogGauges(deliveries, { leaseMs: 10_000, now: () => now });
  const b = new WebhookBacklogGauges(deliveries, { leaseMs: 10_000, now: () => storeNow });
  try {
    assert.deepEqual(await a.refresh(), { pending: 0, dead: 0 });
    // An hour back: the lease, taken "later", may be over in the store (its own clock) without
    // this instance knowing; it would report, and not renew, for the hour.
    now = T0 - 3_600_000;
    storeNow = T0 + 1_000;
    assert.equal(a.reported, null);
    assert.deepEqual(await a.refresh(), { pending: 0, dead: 0 }, "renewed at once");
    storeNow = T0 + 10_500;
    now = T0 - 3_600_000 + 9_500;
    assert.deepEqual(a.reported, { pending: 0, dead: 0 }, "the renewed lease lasts");
    assert.equal(await b.refresh(), null);
  } finally {
    await a.close();
    await b.close();
  }
});

Deno.test("WebhookBacklogGauges: overlapping refreshes (sweeps of one process) share one", async () => {
  const deliveries = new MemoryDeliveryStore();
  const backlog = new WebhookBacklogGauges(deliveries, { leaseMs: 10_000 });
  try {
    const both = await Promise.all([backlog.refresh(), backlog.refresh()]);
    assert.deepEqual(both, [{ pending: 0, dead: 0 }, { pending: 0, dead: 0 }]);
    assert.deepEqual(backlog.reported, { pending: 0, dead: 0 });
  } finally {
    await backlog.close();
  }
});
