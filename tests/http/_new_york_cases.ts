/**
 * Cases that `time_zone_test.ts` runs in a child `deno test` with
 * `TZ=America/New_York`: times without an offset are UTC through the HTTP API,
 * whatever the server's time zone.
 */
import assert from "node:assert/strict";
import { testApp } from "../_fixtures.ts";
import { call, register, setup } from "../fanout/webhooks/_setup.ts";
import { Receiver } from "../fanout/webhooks/_receiver.ts";

Deno.test("the child runs in New York (UTC-5 in January)", () => {
  assert.equal(new Date(2026, 0, 1).getTimezoneOffset(), 300);
});

Deno.test("an event at 10:15:00 is found by a counter query from 10:00:00", async () => {
  const { app } = await testApp({ now: () => Date.parse("2026-01-01T10:20:00Z") });
  const ingest = await app.request("/v1/streams/orders/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ id: "e1", ts: "2026-01-01T10:15:00", country: "DE" }),
  });
  assert.equal(ingest.status, 202, await ingest.text());
  const res = await app.request(
    "/v1/streams/orders/counters/count_1m?from=2026-01-01T10:00:00&to=2026-01-01T10:16:00",
  );
  assert.equal(res.status, 200);
  const { windows } = await res.json();
  assert.deepEqual(
    windows.map((row: { start: string; value: number }) => [row.start, row.value]),
    [["2026-01-01T10:15:00.000Z", 1]],
  );
});

Deno.test("webhook replay since an offset-less time requeues what failed after it in UTC", async () => {
  const ctx = await setup({ startMs: Date.parse("2026-01-01T10:15:00Z") });
  const receiver = await Receiver.start(() => ctx.clock.now);
  try {
    receiver.respond = () => new Response(null, { status: 500 });
    const { id } = await register(ctx.app, { url: receiver.url() });
    assert.equal((await call(ctx.app, "POST", `/v1/webhooks/${id}/test`)).status, 202);
    await ctx.webhooks.idle();
    const replay = await call(ctx.app, "POST", `/v1/webhooks/${id}/replay`, {
      since: "2026-01-01T10:00:00",
    });
    assert.equal(replay.status, 202, replay.text);
    assert.deepEqual(replay.body, { requeued: 1 });
  } finally {
    await ctx.close();
    await receiver.close();
  }
});
