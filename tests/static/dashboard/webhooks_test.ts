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
    });
  } finally {
    globalThis.fetch = realFetch;
    sessionStorage.clear();
  }
});
