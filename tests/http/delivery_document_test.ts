/**
 * The deliveries the OpenAPI document describes (its top-level `webhooks`) against what a real
 * verifying receiver gets: every type, one by one and batched, and a test delivery, each body
 * valid by the document's schema for its type with no field the document lacks, and signed with
 * the headers it names; and every result an SSE subscription gets, against `LivePayload`.
 */
import assert from "node:assert/strict";
import { Ajv } from "ajv";
import { Receiver } from "../fanout/webhooks/_receiver.ts";
import { at, call, ingest, register, setup, sweep } from "../fanout/webhooks/_setup.ts";
import { at as liveAt } from "../_fixtures.ts";
import { SseReader, startServer } from "../_live.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { publicPayload } from "../../src/fanout/payload.ts";
import { TEST_CONFIG } from "../_fixtures.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

/** `schema` with every object that lists `properties` closed to others. */
function closed(schema: Json): Json {
  if (Array.isArray(schema)) return schema.map(closed);
  if (typeof schema !== "object" || schema === null) return schema;
  const copy: Json = Object.fromEntries(
    Object.entries(schema).map(([key, value]) => [key, closed(value)]),
  );
  if (copy.properties && copy.additionalProperties === undefined) {
    copy.additionalProperties = false;
  }
  return copy;
}

Deno.test("every delivery a receiver gets is as the document's webhooks describe it: each type, one by one and batched, and a test", async () => {
  const ctx = await setup();
  const receiver = await Receiver.start(() => ctx.clock.now);
  try {
    const doc: Json = await (await ctx.app.request("/openapi.json")).json();
    assert.deepEqual(
      Object.fromEntries(
        Object.entries(doc.webhooks).map((
          [type, item]: [string, Json],
        ) => [type, item.post.summary]),
      ),
      {
        "window.closed": "A window.closed delivery",
        "alert.fired": "An alert.fired delivery",
        "event.processed": "An event.processed delivery",
        "event.late": "An event.late delivery",
        "webhook.test": "A test delivery (`POST /v1/webhooks/{id}/test`)",
      },
      "each summary reads as English in the API reference",
    );
    const one = await register(ctx.app, {
      url: receiver.url("/one"),
      eventTypes: ["window.closed", "alert.fired", "event.processed", "event.late"],
    });
    const batched = await register(ctx.app, {
      url: receiver.url("/batched"),
      eventTypes: ["window.closed", "alert.fired", "event.processed"],
      batch: { maxEvents: 100, eventTypes: ["window.closed", "alert.fired", "event.processed"] },
    });
    receiver.secrets = [one.secret, batched.secret];
    await ingest(ctx.app, [
      { id: "a", ts: at(1), country: "DE", amount: 2.5 },
      { id: "b", ts: at(2), country: "DE", amount: 1 },
      { id: "c", ts: at(3), country: "DE" },
      { id: "d", ts: at(4), country: "FR", amount: 4 },
    ]);
    await ingest(ctx.app, [{ id: "tick", ts: at(75), country: "XX" }]);
    await ingest(ctx.app, [{ id: "old", ts: at(5), country: "FR" }]); // past lateness: late
    await sweep(ctx.app, ctx.webhooks);
    assert.equal((await call(ctx.app, "POST", `/v1/webhooks/${one.id}/test`)).status, 202);
    await ctx.webhooks.idle();

    const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
    ajv.addSchema(closed(doc), "openapi");
    const problems: string[] = [];
    const seen = new Set<string>();
    for (const received of receiver.received) {
      const { type } = received.payload;
      const batch = Array.isArray(received.payload.data);
      seen.add(`${received.path} ${type}${batch ? " batch" : ""}`);
      assert.ok(received.verifiedWith.length > 0, "signed with the endpoint's secret");
      const operation = doc.webhooks[type]?.post;
      if (!operation) {
        problems.push(`${type}: no webhook in the document`);
        continue;
      }
      for (const header of operation.parameters.filter((item: Json) => item.in === "header")) {
        if (header.required && !received.headers.has(header.name)) {
          problems.push(`${type}: header ${header.name} missing`);
        }
      }
      const pointer = ["webhooks", type, "post", "requestBody", "content", "application/json"]
        .concat("schema").map((token) => encodeURIComponent(token.replaceAll("/", "~1")))
        .join("/");
      const validate = ajv.getSchema(`openapi#/${pointer}`)!;
      if (!validate(received.payload)) {
        problems.push(`${type}: ${ajv.errorsText(validate.errors)} in ${received.body}`);
      }
    }
    assert.deepEqual(problems, []);
    assert.deepEqual([...seen].sort(), [
      "/batched alert.fired batch",
      "/batched event.processed batch",
      "/batched window.closed batch",
      "/one alert.fired",
      "/one event.late",
      "/one event.processed",
      "/one webhook.test",
      "/one window.closed",
    ]);
  } finally {
    await ctx.close();
    await receiver.close();
  }
});

Deno.test("an alert.fired on a distinct count estimated (Redis's HyperLogLog) is as the document describes it: its approximate is documented", async () => {
  const ctx = await setup();
  try {
    const doc: Json = await (await ctx.app.request("/openapi.json")).json();
    const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
    ajv.addSchema(closed(doc), "openapi");
    // The payload the Redis store's estimate makes (the memory store counts exactly).
    const orders = compileConfig(TEST_CONFIG).get("orders")!;
    const payload = publicPayload(orders, {
      id: "1-0",
      timeMs: Date.parse(liveAt(190)),
      record: {
        type: "alert.fired",
        alert: "crowd",
        counter: "customers_sliding",
        start: Date.parse(liveAt(0)),
        end: Date.parse(liveAt(180)),
        group: "[]",
        value: 2,
        approximate: true,
      },
    });
    assert.equal(payload?.data.approximate, true);
    const webhook = "webhooks/alert.fired/post/requestBody/content/application~1json/schema";
    const batch = { ...payload, data: [payload!.data] };
    for (
      const [where, schema, body] of [
        ["one result", webhook, payload],
        ["a batch", webhook, batch],
        ["a live result", "components/schemas/LivePayload", payload],
      ] as const
    ) {
      const validate = ajv.getSchema(`openapi#/${schema}`)!;
      assert.ok(validate(body), `${where}: ${ajv.errorsText(validate.errors)}`);
    }
  } finally {
    await ctx.close();
  }
});

Deno.test("every result an SSE subscription gets is a LivePayload of the document: each type, with its log id", async () => {
  const config = {
    streams: {
      orders: {
        time: { field: "ts", lateness: "10s" },
        dedupe: { field: "id", ttl: "1h" },
        counters: {
          count_1m: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
          users: { window: { tumbling: "1m" }, aggregate: { distinct: "user" } },
        },
        alerts: [{ name: "busy", counter: "count_1m", when: "value >= 2.0" }],
      },
    },
  };
  const server = await startServer({ config, hub: { updateIntervalMs: 10 } });
  const types = "window.updated,window.closed,alert.fired,event.processed,event.late";
  const res = await fetch(`${server.base}/v1/streams/orders/subscribe?types=${types}`, {
    headers: { Accept: "text/event-stream" },
  });
  const reader = new SseReader(res);
  try {
    const doc: Json = await (await fetch(`${server.base}/openapi.json`)).json();
    const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
    ajv.addSchema(closed(doc), "openapi");
    const validate = ajv.getSchema("openapi#/components/schemas/LivePayload")!;
    assert.equal((await reader.next()).event, "subscribed");
    const send = async (events: object[]) => {
      const reply = await fetch(`${server.base}/v1/streams/orders/events`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(events),
      });
      assert.equal(reply.status, 202, await reply.text());
    };
    await send([
      { id: "a", ts: liveAt(1), country: "DE", user: "u1" },
      { id: "b", ts: liveAt(2), country: "DE", user: "u2" },
    ]);
    await send([{ id: "tick", ts: liveAt(90), country: "FR", user: "u3" }]);
    await send([{ id: "old", ts: liveAt(3), country: "FR", user: "u4" }]); // late
    const swept = await fetch(`${server.base}/v1/admin/sweep`, { method: "POST" });
    assert.equal(swept.status, 200);
    await swept.body?.cancel();
    const seen = new Set<string>();
    const problems: string[] = [];
    while (seen.size < 5) {
      const { event, data, id } = await reader.next();
      seen.add(event);
      assert.equal(data.type, event, "the SSE event is named by the result's type");
      assert.match(id ?? "", /^\d+-\d+$/, "with its log id");
      if (!validate(data)) {
        problems.push(`${event}: ${ajv.errorsText(validate.errors)} in ${JSON.stringify(data)}`);
      }
    }
    assert.deepEqual(problems, []);
    assert.deepEqual([...seen].sort(), types.split(",").sort());
  } finally {
    await reader.cancel();
    await server.close();
  }
});

Deno.test("the document's window results say a session's end is its last event, inclusive, as README does", async () => {
  const ctx = await setup();
  try {
    const doc: Json = await (await ctx.app.request("/openapi.json")).json();
    const window = doc.components.schemas.WindowResult.properties;
    assert.match(window.start.description, /a session's first event/);
    // A session's end is the time of its last event (README, Session windows), not an
    // exclusive bound: a receiver reading "exclusive" would drop the last event's instant.
    assert.match(window.end.description, /exclusive/);
    assert.match(window.end.description, /a session's last event, inclusive/);
    const alert = doc.components.schemas.AlertResult.properties;
    assert.equal(alert.end.description, window.end.description);
  } finally {
    await ctx.close();
  }
});
