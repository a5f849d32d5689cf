/**
 * The webhook service end to end, in process: an app with a webhook service
 * over memory stores, a real receiver on localhost verifying every delivery
 * with `npm:standardwebhooks`, time on an injected clock.
 */
import assert from "node:assert/strict";
import { Receiver } from "./_receiver.ts";
import { at, call, ingest, register, setup, sweep, T0 } from "./_setup.ts";

Deno.test("window.closed reaches the receiver once per group, signed and verifiable", async () => {
  const { app, webhooks, close } = await setup();
  const receiver = await Receiver.start(() => T0 + 600_000);
  try {
    const { secret } = await register(app, { url: receiver.url() });
    receiver.secrets = [secret];
    await ingest(app, [
      { id: "1", ts: at(1), country: "DE", amount: 5 },
      { id: "2", ts: at(2), country: "DE", amount: 7 },
      { id: "3", ts: at(3), country: "FR", amount: 1 },
    ]);
    await ingest(app, [{ id: "4", ts: at(75), country: "DE", amount: 1 }]);
    await sweep(app);
    await sweep(app);
    await webhooks.idle();
    const closed = receiver.received.filter((item) => item.payload.type === "window.closed");
    assert.deepEqual(
      closed.map((
        item,
      ) => [item.payload.data.counter, item.payload.data.group, item.payload.data.value])
        .sort((a, b) => JSON.stringify(a) < JSON.stringify(b) ? -1 : 1),
      [
        ["amount", {}, 13],
        ["per_minute", { country: "DE" }, 2],
        ["per_minute", { country: "FR" }, 1],
      ],
    );
    for (const item of receiver.received) {
      assert.deepEqual(item.verifiedWith, [secret], `delivery ${item.id} must verify`);
      assert.match(item.id, /^msg_orders_\d+-\d+$/);
      assert.equal(item.timestamp, Math.floor((T0 + 600_000) / 1000));
      assert.equal(item.headers.get("content-type"), "application/json");
    }
    assert.equal(new Set(receiver.received.map((item) => item.id)).size, receiver.received.length);
    const first = closed.find((item) => item.payload.data.counter === "amount")!;
    assert.deepEqual(first.payload, {
      type: "window.closed",
      timestamp: first.payload.timestamp,
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
  } finally {
    await close();
    await receiver.close();
  }
});
