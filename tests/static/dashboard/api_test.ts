/**
 * The dashboard's talk to the API (static/dashboard/api.js), run in Deno with a recording `fetch`
 * and fake timers: how a live subscription reconnects.
 */
import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import { follow, forgetKey, rememberKey } from "../../../static/dashboard/api.js";

Deno.test("a subscription answered 503 is asked again after 1 s, backing off to 15 s, with the key in the header only", async () => {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const original = globalThis.fetch;
  const asked: Array<{ at: number; url: string; authorization: string | undefined }> = [];
  globalThis.fetch = ((url: string, init: { headers: Record<string, string> }) => {
    asked.push({ at: clock.now, url, authorization: init.headers.Authorization });
    return Promise.resolve(
      Response.json({ error: { code: "store_unavailable" } }, { status: 503 }),
    );
  }) as typeof fetch;
  rememberKey("k-dashboard");
  const states: string[] = [];
  const stop = follow("orders", {
    types: ["window.updated"],
    onMessage: () => {},
    onState: (state: string) => states.push(state),
  });
  try {
    await clock.tickAsync(60_000);
    const gaps = asked.slice(1).map((request, i) => request.at - asked[i].at);
    assert.deepEqual(gaps.slice(0, 7), [1_000, 2_000, 4_000, 8_000, 15_000, 15_000, 15_000]);
    assert.equal(asked[0].url, "/v1/streams/orders/subscribe?types=window.updated");
    assert.ok(asked.every((request) => request.authorization === "Bearer k-dashboard"));
    assert.equal(states[0], "reconnecting (subscription answered 503)");
  } finally {
    stop();
    forgetKey();
    globalThis.fetch = original;
    clock.uninstall();
  }
});
