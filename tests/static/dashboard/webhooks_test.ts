/**
 * The webhooks panel's endpoint health (static/dashboard/webhooks.js) from the deliveries API,
 * answered here by a stubbed `fetch`.
 */
import assert from "node:assert/strict";
import { rememberKey } from "../../../static/dashboard/api.js";
import { endpointHealth } from "../../../static/dashboard/webhooks.js";

Deno.test("endpoint health leaves attempts cut off by a stopping instance out of the success rate and the last error", async () => {
  const attemptLog = [
    { attempt: 3, at: "2026-01-01T00:00:30.000Z", status: 204, error: null, outcome: "succeeded" },
    {
      attempt: 2,
      at: "2026-01-01T00:00:20.000Z",
      status: null,
      error: "Cut off: this instance stopped before the receiver answered; sent again at once",
      outcome: "interrupted",
    },
    {
      attempt: 1,
      at: "2026-01-01T00:00:10.000Z",
      status: 500,
      error: "HTTP 500",
      outcome: "retrying",
    },
  ];
  const fetched: string[] = [];
  const realFetch = globalThis.fetch;
  globalThis.fetch = (input: string | URL | Request) => {
    const url = new URL(String(input), "http://dashboard.test");
    fetched.push(url.searchParams.get("status") ?? "recent");
    const deliveries = url.searchParams.has("status") ? [] : [{ attemptLog }];
    return Promise.resolve(Response.json({ deliveries, nextCursor: null }));
  };
  rememberKey("admin-key");
  try {
    const health = await endpointHealth("ep_a");
    assert.deepEqual(fetched.sort(), ["dead", "pending", "recent", "retrying"]);
    assert.deepEqual(health, {
      attempts: 2,
      successRate: 0.5,
      lastError: { at: "2026-01-01T00:00:10.000Z", text: "HTTP 500" },
      pending: 0,
      dead: 0,
      waitingSince: null,
      interrupted: {
        waiting: { deliveries: 0, mostInARow: 0 },
        dead: { deliveries: 0, mostInARow: 0 },
      },
    });
  } finally {
    globalThis.fetch = realFetch;
    sessionStorage.clear();
  }
});

/** Answers the deliveries API from `byStatus` (the recent list: every status), as a stub `fetch`. */
function stubDeliveries(byStatus: Record<string, unknown[]>, limit = 200): () => void {
  const realFetch = globalThis.fetch;
  globalThis.fetch = (input: string | URL | Request) => {
    const url = new URL(String(input), "http://dashboard.test");
    assert.equal(url.searchParams.get("limit"), url.searchParams.has("status") ? "200" : "100");
    const status = url.searchParams.get("status");
    const deliveries = status ? byStatus[status] ?? [] : Object.values(byStatus).flat();
    return Promise.resolve(
      Response.json({ deliveries: deliveries.slice(0, limit), nextCursor: null }),
    );
  };
  rememberKey("admin-key");
  return () => {
    globalThis.fetch = realFetch;
    sessionStorage.clear();
  };
}

Deno.test("endpoint health gives the earliest first attempt of a delivery still waiting, and the waiting and dead deliveries whose last attempts were cut off", async () => {
  const delivery = (firstAttemptAt: string | null, interruptions: number) => ({
    firstAttemptAt,
    interruptions,
    attemptLog: [],
  });
  const restore = stubDeliveries({
    pending: [delivery(null, 0), delivery("2026-01-01T00:05:00.000Z", 2)],
    retrying: [delivery("2026-01-01T00:01:00.000Z", 0), delivery("2026-01-01T00:03:00.000Z", 1)],
    dead: [delivery("2026-01-01T00:00:00.000Z", 5), delivery("2026-01-01T00:00:00.000Z", 0)],
  });
  try {
    const health = await endpointHealth("ep_a");
    assert.equal(health.pending, 4);
    assert.equal(health.dead, 2);
    // A dead delivery's first attempt is not a waiting one's.
    assert.deepEqual(health.waitingSince, { at: "2026-01-01T00:01:00.000Z", orEarlier: false });
    assert.deepEqual(health.interrupted, {
      waiting: { deliveries: 2, mostInARow: 2 },
      dead: { deliveries: 1, mostInARow: 5 },
    });
  } finally {
    restore();
  }
  // 200 read of a status: older ones (newest first) were not, so the time is an upper bound.
  const many = Array.from({ length: 200 }, () => delivery("2026-01-01T01:00:00.000Z", 0));
  const restoreMany = stubDeliveries({ retrying: many });
  try {
    const health = await endpointHealth("ep_a");
    assert.deepEqual(health.waitingSince, { at: "2026-01-01T01:00:00.000Z", orEarlier: true });
  } finally {
    restoreMany();
  }
});
