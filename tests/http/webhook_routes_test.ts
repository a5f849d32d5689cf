/**
 * The webhook routes' list pages and request/reply shapes, in process over
 * memory stores: cursor pagination of `GET /v1/webhooks` and of an
 * endpoint's deliveries, and the one shape of `batch`.
 */
import assert from "node:assert/strict";
import { cursorOfText, type NewDelivery } from "../../src/store/deliveries.ts";
import { MemoryDeliveryStore } from "../../src/store/memory/delivery_store.ts";
import { UrlPolicy } from "../../src/fanout/webhooks/ssrf.ts";
import { at, call, ingest, setup, sweep, T0 } from "../fanout/webhooks/_setup.ts";
import { Receiver } from "../fanout/webhooks/_receiver.ts";

type Ctx = Awaited<ReturnType<typeof setup>>;

async function withSetup(run: (ctx: Ctx) => Promise<void>): Promise<void> {
  const ctx = await setup();
  try {
    await run(ctx);
  } finally {
    await ctx.close();
  }
}

async function registerMany(ctx: Ctx, count: number): Promise<string[]> {
  const ids: string[] = [];
  for (let n = 0; n < count; n++) {
    // Two per millisecond, so the id orders endpoints created together.
    ctx.clock.now += n % 2;
    const res = await call(ctx.app, "POST", "/v1/webhooks", { url: `http://127.0.0.1:9/h${n}` });
    assert.equal(res.status, 201, res.text);
    ids.push(res.body.id);
  }
  return ids;
}

/** Follows `nextCursor` from `path` until it is null; returns the pages' item ids. */
async function walk(ctx: Ctx, path: string, field: string): Promise<string[][]> {
  const pages: string[][] = [];
  let cursor: string | null = null;
  do {
    const separator = path.includes("?") ? "&" : "?";
    const url: string = cursor === null
      ? path
      : `${path}${separator}cursor=${encodeURIComponent(cursor)}`;
    const res = await call(ctx.app, "GET", url);
    assert.equal(res.status, 200, res.text);
    assert.ok("nextCursor" in res.body, "the reply always has nextCursor");
    pages.push(res.body[field].map((item: { id: string }) => item.id));
    cursor = res.body.nextCursor;
  } while (cursor !== null && pages.length < 50);
  return pages;
}

Deno.test("GET /v1/webhooks pages oldest first by limit and cursor; nextCursor is null at the end", async () => {
  await withSetup(async (ctx) => {
    await registerMany(ctx, 5);
    const all = await call(ctx.app, "GET", "/v1/webhooks");
    assert.equal(all.body.webhooks.length, 5);
    assert.equal(all.body.nextCursor, null);
    const order = all.body.webhooks.map((item: { id: string }) => item.id);
    const pages = await walk(ctx, "/v1/webhooks?limit=2", "webhooks");
    assert.deepEqual(pages.map((page) => page.length), [2, 2, 1]);
    assert.deepEqual(pages.flat(), order);
    const exact = await walk(ctx, "/v1/webhooks?limit=5", "webhooks");
    assert.deepEqual(exact, [order], "a page that ends the list says so");
  });
});

Deno.test("GET /v1/webhooks shows an endpoint registered between pages once, at its place", async () => {
  await withSetup(async (ctx) => {
    await registerMany(ctx, 3);
    const first = await call(ctx.app, "GET", "/v1/webhooks?limit=2");
    ctx.clock.now += 10;
    const [late] = await registerMany(ctx, 1);
    const rest = await walk(
      ctx,
      `/v1/webhooks?limit=2&cursor=${encodeURIComponent(first.body.nextCursor)}`,
      "webhooks",
    );
    const seen = [...first.body.webhooks.map((item: { id: string }) => item.id), ...rest.flat()];
    assert.equal(new Set(seen).size, 4);
    assert.equal(seen[3], late);
  });
});

Deno.test("GET /v1/webhooks?stream= keeps the endpoints that hear from the stream; a stream that is no name is a 400 invalid_query", async () => {
  const counters = { n: { window: { tumbling: "1m" }, aggregate: "count" } };
  const ctx = await setup({ config: { streams: { orders: { counters }, clicks: { counters } } } });
  try {
    const ids: Record<string, string> = {};
    for (const [name, streams] of [["orders", ["orders"]], ["all", null], ["clicks", ["clicks"]]]) {
      ctx.clock.now += 1; // In this order.
      const res = await call(ctx.app, "POST", "/v1/webhooks", {
        url: `http://127.0.0.1:9/${name}`,
        streams,
      });
      assert.equal(res.status, 201, res.text);
      ids[name as string] = res.body.id;
    }
    const listed = async (path: string) => (await walk(ctx, path, "webhooks")).flat().sort();
    assert.deepEqual(await listed("/v1/webhooks?stream=orders"), [ids.orders, ids.all].sort());
    assert.deepEqual(await listed("/v1/webhooks?stream=clicks"), [ids.all, ids.clicks].sort());
    assert.deepEqual(await listed("/v1/webhooks?stream=nowhere"), [ids.all]);
    // Filtered after the page is read: a page of one may be empty before the end.
    const pages = await walk(ctx, "/v1/webhooks?stream=orders&limit=1", "webhooks");
    assert.deepEqual(pages, [[ids.orders], [ids.all], []]);
    for (const bad of ["a%20b", "x".repeat(65), ""]) {
      const res = await call(ctx.app, "GET", `/v1/webhooks?stream=${bad}`);
      assert.equal(res.status, 400, `${bad}: ${res.text}`);
      assert.equal(res.body.error.code, "invalid_query", bad);
      assert.equal(
        res.body.error.message,
        `Invalid query parameter stream: Names are 1-64 characters of letters, digits, '_' and '-', got '${
          decodeURIComponent(bad)
        }'`,
      );
    }
  } finally {
    await ctx.close();
  }
});

Deno.test("list routes refuse a bad cursor or limit with a 400 JSON error", async () => {
  await withSetup(async (ctx) => {
    const [id, other] = await registerMany(ctx, 3);
    const endpointCursor = (await call(ctx.app, "GET", "/v1/webhooks?limit=1")).body.nextCursor;
    // A cursor of another endpoint's deliveries.
    for (let n = 0; n < 2; n++) await call(ctx.app, "POST", `/v1/webhooks/${other}/test`);
    const page = await call(ctx.app, "GET", `/v1/webhooks/${other}/deliveries?limit=1`);
    const otherCursor = page.body.nextCursor;
    assert.ok(otherCursor);
    assert.equal(
      (await call(ctx.app, "GET", `/v1/webhooks/${other}/deliveries?cursor=${otherCursor}`)).status,
      200,
    );
    for (
      const path of [
        "/v1/webhooks?cursor=garbage!",
        "/v1/webhooks?cursor=ZC4xLmVwX2E",
        `/v1/webhooks/${id}/deliveries?cursor=${endpointCursor}`,
        `/v1/webhooks/${id}/deliveries?cursor=bm9wZQ`,
        `/v1/webhooks/${id}/deliveries?cursor=${otherCursor}`,
        // Empty or long: not a cursor either list gave out, as for counter reads.
        "/v1/webhooks?cursor=",
        `/v1/webhooks/${id}/deliveries?cursor=`,
        `/v1/webhooks?cursor=${"A".repeat(3000)}`,
      ]
    ) {
      const res = await call(ctx.app, "GET", path);
      assert.equal(res.status, 400, path);
      assert.equal(res.body.error.code, "invalid_cursor", path);
      assert.match(res.body.error.message, /^Cannot read cursor '/, path);
    }
    // A cursor of another endpoint's deliveries as long as a cursor may be (a 1,024-character
    // position, about 1.4 KB): quoted shortened, as every other refused cursor is, not whole.
    const longCursor = cursorOfText(`d.1.msg_${"x".repeat(1019 - other.length)}.${other}`);
    assert.ok(longCursor.length > 1300);
    const refused = await call(
      ctx.app,
      "GET",
      `/v1/webhooks/${id}/deliveries?cursor=${longCursor}`,
    );
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error.code, "invalid_cursor");
    assert.equal(
      refused.body.error.message,
      `Cannot read cursor '${
        longCursor.slice(0, 64)
      }…': it is a cursor of another endpoint's deliveries`,
    );
    for (
      const path of [
        "/v1/webhooks?limit=0",
        "/v1/webhooks?limit=1001",
        `/v1/webhooks/${id}/deliveries?limit=201`,
      ]
    ) {
      const res = await call(ctx.app, "GET", path);
      assert.equal(res.status, 400, path);
      assert.equal(res.body.error.code, "invalid_query", path);
    }
    assert.equal((await call(ctx.app, "GET", "/v1/webhooks?limit=1000")).status, 200);
  });
});

Deno.test("GET /v1/webhooks/{id}/deliveries pages newest first, with a status filter too", async () => {
  await withSetup(async (ctx) => {
    const [id, other] = await registerMany(ctx, 2);
    const delivery = (n: number, endpointId = id): NewDelivery => ({
      id: `msg_t_${n}.${endpointId}`,
      messageId: `msg_t_${n}`,
      endpointId,
      stream: "orders",
      eventType: "window.closed",
      payload: JSON.stringify({ type: "window.closed", n }),
      createdMs: T0 + Math.floor(n / 2),
    });
    await ctx.deliveries.createDeliveries([
      ...[1, 2, 3, 4, 5, 6, 7].map((n) => delivery(n)),
      delivery(1, other),
    ]);
    const pages = await walk(ctx, `/v1/webhooks/${id}/deliveries?limit=3`, "deliveries");
    assert.deepEqual(pages, [
      [7, 6, 5].map((n) => `msg_t_${n}.${id}`),
      [4, 3, 2].map((n) => `msg_t_${n}.${id}`),
      [`msg_t_1.${id}`],
    ]);
    const pending = await walk(
      ctx,
      `/v1/webhooks/${id}/deliveries?status=pending&limit=4`,
      "deliveries",
    );
    assert.deepEqual(pending.flat(), pages.flat());
    const none = await call(ctx.app, "GET", `/v1/webhooks/${id}/deliveries?status=dead`);
    assert.deepEqual(none.body, { deliveries: [], nextCursor: null });
  });
});

Deno.test("the OpenAPI document gives both list operations limit and cursor, and nextCursor", async () => {
  await withSetup(async (ctx) => {
    const doc = (await call(ctx.app, "GET", "/openapi.json")).body;
    for (
      const [path, field, max] of [
        ["/v1/webhooks", "webhooks", 1000],
        ["/v1/webhooks/{id}/deliveries", "deliveries", 200],
      ] as const
    ) {
      const operation = doc.paths[path].get;
      const parameter = (name: string) =>
        operation.parameters.find((item: { name: string }) => item.name === name);
      assert.equal(parameter("limit").in, "query", path);
      assert.equal(parameter("limit").schema.maximum, max, path);
      assert.equal(parameter("cursor").in, "query", path);
      assert.match(parameter("cursor").description, /nextCursor/, path);
      const schema = operation.responses["200"].content["application/json"].schema;
      const reply = schema.$ref ? doc.components.schemas[schema.$ref.split("/").pop()] : schema;
      assert.deepEqual(reply.required.sort(), [field, "nextCursor"].sort(), path);
      assert.deepEqual(reply.properties.nextCursor.type, ["string", "null"], path);
      assert.ok(operation.responses["400"], path);
    }
  });
});

Deno.test("the OpenAPI document lists every attempt outcome, interrupted (cut off at shutdown) included", async () => {
  await withSetup(async (ctx) => {
    const doc = (await call(ctx.app, "GET", "/openapi.json")).body;
    const outcome = doc.components.schemas.DeliveryAttempt.properties.outcome;
    assert.deepEqual(outcome.enum, ["succeeded", "retrying", "dead", "interrupted"]);
    assert.match(outcome.description, /`interrupted`: the sending instance stopped/);
  });
});

Deno.test("batch is accepted and echoed in one shape: maxEvents and maxWait as a duration", async () => {
  await withSetup(async (ctx) => {
    const created = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/batched",
      eventTypes: ["event.processed"],
      batch: { maxEvents: 50, maxWait: "1s" },
    });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.body.batch, {
      maxEvents: 50,
      maxWait: "1s",
      eventTypes: ["event.processed"],
    });
    const { id } = created.body;
    const read = await call(ctx.app, "GET", `/v1/webhooks/${id}`);
    assert.deepEqual(read.body.batch, {
      maxEvents: 50,
      maxWait: "1s",
      eventTypes: ["event.processed"],
    });
    const listed = await call(ctx.app, "GET", "/v1/webhooks");
    assert.deepEqual(listed.body.webhooks[0].batch, {
      maxEvents: 50,
      maxWait: "1s",
      eventTypes: ["event.processed"],
    });
    // Written another way, a duration reads back in its shortest exact form.
    const changed = await call(ctx.app, "PATCH", `/v1/webhooks/${id}`, {
      batch: { maxEvents: 5, maxWait: "1500ms" },
    });
    assert.equal(changed.status, 200, changed.text);
    assert.deepEqual(changed.body.batch, {
      maxEvents: 5,
      maxWait: "1s500ms",
      eventTypes: ["event.processed"],
    });
    const again = await call(ctx.app, "PATCH", `/v1/webhooks/${id}`, {
      batch: changed.body.batch,
    });
    assert.equal(again.status, 200, "what is echoed is accepted back");
    assert.deepEqual(again.body.batch, changed.body.batch);
    assert.equal((await ctx.webhooks.getEndpoint(id)).batch?.maxWaitMs, 1_500);
    const tooLong = await call(ctx.app, "PATCH", `/v1/webhooks/${id}`, {
      batch: { maxEvents: 5, maxWait: "2m" },
    });
    assert.equal(tooLong.status, 400);
    assert.equal(
      tooLong.body.error.message,
      "Invalid request body batch.maxWait: at most 1m, got 2m",
    );
    const old = await call(ctx.app, "PATCH", `/v1/webhooks/${id}`, {
      batch: { maxEvents: 5, maxWaitMs: 1000 },
    });
    assert.equal(old.status, 400, "the reply's former shape is not taken either");
    assert.deepEqual(
      (await call(ctx.app, "GET", `/v1/webhooks/${id}`)).body.batch,
      again.body.batch,
    );
    const cleared = await call(ctx.app, "PATCH", `/v1/webhooks/${id}`, { batch: null });
    assert.equal(cleared.body.batch, null);
  });
});

Deno.test("batch.maxWait may be left out (it holds only event.processed): 1s, shown in replies", async () => {
  await withSetup(async (ctx) => {
    const closes = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/closes",
      batch: { maxEvents: 500, eventTypes: ["window.closed"] },
    });
    assert.equal(closes.status, 201, closes.text);
    assert.deepEqual(closes.body.batch, {
      maxEvents: 500,
      maxWait: "1s",
      eventTypes: ["window.closed"],
    });
    const events = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/events",
      eventTypes: ["event.processed"],
      batch: { maxEvents: 50 },
    });
    assert.equal(events.status, 201, events.text);
    assert.equal((await ctx.webhooks.getEndpoint(events.body.id)).batch?.maxWaitMs, 1_000);
    // A PATCH with batch replaces it whole: a wait it leaves out is the default again.
    const slow = await call(ctx.app, "PATCH", `/v1/webhooks/${events.body.id}`, {
      batch: { maxEvents: 50, maxWait: "30s" },
    });
    assert.equal(slow.body.batch.maxWait, "30s");
    const replaced = await call(ctx.app, "PATCH", `/v1/webhooks/${events.body.id}`, {
      batch: { maxEvents: 200 },
    });
    assert.equal(replaced.status, 200, replaced.text);
    assert.deepEqual(replaced.body.batch, {
      maxEvents: 200,
      maxWait: "1s",
      eventTypes: ["event.processed"],
    });
  });
});

Deno.test("the OpenAPI document gives batch one schema for input and reply", async () => {
  await withSetup(async (ctx) => {
    const doc = (await call(ctx.app, "GET", "/openapi.json")).body;
    const { schemas } = doc.components;
    assert.deepEqual(Object.keys(schemas.WebhookBatch.properties).sort(), [
      "eventTypes",
      "maxEvents",
      "maxWait",
    ]);
    assert.deepEqual(schemas.WebhookBatch.properties.eventTypes.items.enum, [
      "window.closed",
      "alert.fired",
      "event.processed",
    ]);
    assert.deepEqual(schemas.WebhookBatch.required.sort(), ["maxEvents"]);
    for (const name of ["WebhookInput", "Webhook"]) {
      assert.match(
        JSON.stringify(schemas[name].properties.batch),
        /#\/components\/schemas\/WebhookBatch/,
        name,
      );
    }
    assert.doesNotMatch(JSON.stringify(doc), /maxWaitMs/);
  });
});

Deno.test("operations that take no body refuse one (bad JSON, any field) and change nothing; none or {} passes", async () => {
  await withSetup(async (ctx) => {
    const [id] = await registerMany(ctx, 1);
    const send = async (path: string, body?: string) => {
      const res = await ctx.app.request(path, {
        method: "POST",
        headers: body === undefined ? {} : { "Content-Type": "application/json" },
        body,
      });
      return { status: res.status, body: await res.json() };
    };
    const paths = [
      "/v1/admin/sweep",
      `/v1/webhooks/${id}/rotate-secret`,
      `/v1/webhooks/${id}/test`,
    ];
    for (const path of paths) {
      const bad = await send(path, "{bad json");
      assert.equal(bad.status, 400, path);
      assert.equal(bad.body.error.code, "invalid_json");
      const fields = await send(path, '{"secret": "mine"}');
      assert.equal(fields.status, 400, path);
      assert.equal(fields.body.error.code, "invalid_body");
      assert.equal(fields.body.error.message, "This operation takes no body: send none, or {}");
    }
    const retry = await send("/v1/deliveries/msg_x.ep_y/retry", "[]");
    assert.equal(retry.body.error.code, "invalid_body");
    // Nothing was rotated or sent by the refused calls.
    const endpoint = await call(ctx.app, "GET", `/v1/webhooks/${id}`);
    assert.equal(endpoint.body.previousSecretExpiresAt ?? null, null);
    const deliveries = await call(ctx.app, "GET", `/v1/webhooks/${id}/deliveries`);
    assert.equal(deliveries.body.deliveries.length, 0);
    assert.equal((await send(`/v1/webhooks/${id}/rotate-secret`, " {} ")).status, 200);
    assert.equal((await send(`/v1/webhooks/${id}/test`)).status, 202);
    assert.equal((await send("/v1/admin/sweep", "")).status, 200);
  });
});

Deno.test("operations that take no body answer a body of another Content-Type 415, as JSON routes do; none passes whatever the type", async () => {
  await withSetup(async (ctx) => {
    const [id] = await registerMany(ctx, 1);
    const operations: Array<[string, number]> = [
      ["/v1/admin/sweep", 200],
      [`/v1/webhooks/${id}/rotate-secret`, 200],
      [`/v1/webhooks/${id}/test`, 202],
    ];
    for (const [path] of operations) {
      for (
        const [type, body, got] of [
          ["text/plain", "{}", "text/plain"],
          ["text/plain", "hello", "text/plain"],
          ["application/x-www-form-urlencoded", "{}", "application/x-www-form-urlencoded"],
          [null, "{}", "(none)"],
        ] as const
      ) {
        const res = await ctx.app.request(path, {
          method: "POST",
          headers: type === null ? {} : { "Content-Type": type },
          body: new TextEncoder().encode(body),
        });
        assert.equal(res.status, 415, `${path} with ${type}: ${body}`);
        const { error } = await res.json();
        assert.equal(error.code, "unsupported_media_type");
        assert.equal(error.message, `Content-Type must be application/json, got '${got}'`);
      }
      const charset = await ctx.app.request(path, {
        method: "POST",
        headers: { "Content-Type": "application/json; charset=latin1" },
        body: "{}",
      });
      assert.equal(charset.status, 415, `${path} with charset latin1`);
      await charset.body?.cancel();
    }
    // The refused calls rotated and sent nothing.
    const endpoint = await call(ctx.app, "GET", `/v1/webhooks/${id}`);
    assert.equal(endpoint.body.previousSecretExpiresAt ?? null, null);
    const deliveries = await call(ctx.app, "GET", `/v1/webhooks/${id}/deliveries`);
    assert.equal(deliveries.body.deliveries.length, 0);
    // No bytes are no body, whatever the type says (fetch calls an empty string text/plain).
    for (const [path, status] of operations) {
      const none = await ctx.app.request(path, {
        method: "POST",
        headers: { "Content-Type": "text/plain;charset=UTF-8" },
        body: "",
      });
      assert.equal(none.status, status, `${path} with an empty text/plain body`);
      await none.body?.cancel();
    }
  });
});

Deno.test("operations that take no body take none whatever its Content-Encoding says, and decode a gzip {}", async () => {
  await withSetup(async (ctx) => {
    const [id] = await registerMany(ctx, 1);
    const gzipped = new Uint8Array(
      await new Response(
        new Blob(["{}"]).stream().pipeThrough(new CompressionStream("gzip")),
      ).arrayBuffer(),
    );
    const operations: Array<[string, number]> = [
      ["/v1/admin/sweep", 200],
      [`/v1/webhooks/${id}/rotate-secret`, 200],
      [`/v1/webhooks/${id}/test`, 202],
    ];
    for (const [path, status] of operations) {
      for (const encoding of ["gzip", "deflate", "br"]) {
        const res = await ctx.app.request(path, {
          method: "POST",
          headers: { "Content-Encoding": encoding },
        });
        assert.equal(res.status, status, `${path} with Content-Encoding ${encoding}, no body`);
        await res.body?.cancel();
      }
      const res = await ctx.app.request(path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Content-Encoding": "gzip" },
        body: gzipped,
      });
      assert.equal(res.status, status, `${path} with a gzip {}`);
      await res.body?.cancel();
    }
  });
});

Deno.test("operations that take no body answer a body in another Content-Encoding 415, as their OpenAPI operations declare", async () => {
  await withSetup(async (ctx) => {
    const [id] = await registerMany(ctx, 1);
    const paths = await (await ctx.app.request("/openapi.json")).json().then((doc) => doc.paths);
    for (
      const [path, template] of [
        ["/v1/admin/sweep", "/v1/admin/sweep"],
        [`/v1/webhooks/${id}/rotate-secret`, "/v1/webhooks/{id}/rotate-secret"],
        [`/v1/webhooks/${id}/test`, "/v1/webhooks/{id}/test"],
        ["/v1/deliveries/msg_x.ep_y/retry", "/v1/deliveries/{deliveryId}/retry"],
      ]
    ) {
      const res = await ctx.app.request(path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Content-Encoding": "br" },
        body: "{}",
      });
      assert.equal(res.status, 415, path);
      assert.equal((await res.json()).error.code, "unsupported_media_type", path);
      assert.ok(paths[template].post.responses["415"], `${template} declares 415`);
    }
  });
});

Deno.test("list pages hold 100 endpoints and 20 deliveries by default, at most 1,000 and 200", async () => {
  await withSetup(async (ctx) => {
    const ids = await registerMany(ctx, 101);
    const endpoints = await call(ctx.app, "GET", "/v1/webhooks");
    assert.equal(endpoints.body.webhooks.length, 100);
    assert.notEqual(endpoints.body.nextCursor, null);
    const id = ids[0];
    await ctx.deliveries.createDeliveries(
      Array.from({ length: 201 }, (_, n): NewDelivery => ({
        id: `msg_d_${n}.${id}`,
        messageId: `msg_d_${n}`,
        endpointId: id,
        stream: "orders",
        eventType: "window.closed",
        payload: JSON.stringify({ type: "window.closed", n }),
        createdMs: T0 + n,
      })),
    );
    const deliveries = await call(ctx.app, "GET", `/v1/webhooks/${id}/deliveries`);
    assert.equal(deliveries.body.deliveries.length, 20);
    const most = await call(ctx.app, "GET", `/v1/webhooks/${id}/deliveries?limit=200`);
    assert.equal(most.body.deliveries.length, 200);
  });
});

Deno.test("an endpoint's rateLimit is at least 0.001 deliveries/s, and batch needs a type it can group", async () => {
  await withSetup(async (ctx) => {
    const slowest = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/slow",
      rateLimit: 0.001,
    });
    assert.equal(slowest.status, 201, slowest.text);
    const slower = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/slower",
      rateLimit: 0.0009,
    });
    assert.equal(slower.status, 400);
    assert.match(slower.body.error.message, /rateLimit/);
    const late = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/batched",
      eventTypes: ["event.late"],
      batch: { maxEvents: 10, maxWait: "1s" },
    });
    assert.equal(late.status, 400);
    assert.match(late.body.error.message, /'eventTypes' \(event\.late\) has none/);
    const closed = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/batched",
      eventTypes: ["window.closed"],
      batch: { maxEvents: 10, maxWait: "1s" },
    });
    assert.equal(closed.status, 201, closed.text);
    assert.deepEqual(closed.body.batch.eventTypes, ["window.closed"]);
  });
});

Deno.test("the README's webhook registration: 201, and its reply's fields as its comment shows them, those before its … first and those after it last", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const example = readme.match(
    /curl -s -X POST localhost:8000\/v1\/webhooks -H 'Content-Type: application\/json' -d '(\{\n[^]*?\n\})'\n# (\{.*\})/,
  );
  assert.ok(example, "the README shows a webhook registration with its reply");
  // The shell's '"'"' is a ' in the body; the example's host resolves nowhere here.
  const body = JSON.parse(example[1].replaceAll(`'"'"'`, "'"));
  // `{"id":"ep_…",…,"secret":"whsec_…"}`: the fields left out are where the lone … stands.
  const [head, tail = ""] = example[2].split(/,…(?=[,}])/);
  const keysOf = (text: string) => [...text.matchAll(/"(\w+)":/g)].map((key) => key[1]);
  await withSetup(async (ctx) => {
    const res = await call(ctx.app, "POST", "/v1/webhooks", {
      ...body,
      url: "http://127.0.0.1:9/h",
    });
    assert.equal(res.status, 201, res.text);
    const keys = Object.keys(res.body);
    assert.deepEqual(keys.slice(0, keysOf(head).length), keysOf(head));
    assert.deepEqual(keys.slice(keys.length - keysOf(tail).length), keysOf(tail));
    assert.match(res.body.secret, /^whsec_/);
    assert.equal(res.body.filter, body.filter);
  });
});

Deno.test("README's webhook fields state the rateLimit (100,000) and streams (256) maximums the schema holds: at each 201, one past each a 400 naming the bound", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const webhooks = readme.slice(readme.indexOf("### Webhooks"));
  const fields = webhooks.slice(webhooks.indexOf("- Fields: "), webhooks.indexOf("\n- A delivery"))
    .replace(/\s+/g, " ");
  assert.match(fields, /`streams` \(at least one, at most 256 different,/);
  assert.match(fields, /`rateLimit` \(deliveries\/s, at least 0\.001 and at most 100,000:/);
  await withSetup(async (ctx) => {
    const register = (fields: Record<string, unknown>) =>
      call(ctx.app, "POST", "/v1/webhooks", { url: "http://127.0.0.1:9/h", ...fields });
    const fastest = await register({ rateLimit: 100_000 });
    assert.equal(fastest.status, 201, fastest.text);
    const faster = await register({ rateLimit: 100_001 });
    assert.equal(faster.status, 400, faster.text);
    assert.match(faster.body.error.message, /rateLimit: .*100000/);
    // Repeats are removed before the bound: 257 entries naming one stream are one stream (the
    // bound of different streams is covered below, with streams enough to name).
    const most = await register({ streams: Array.from({ length: 257 }, () => "orders") });
    assert.equal(most.status, 201, most.text.slice(0, 300));
    assert.deepEqual(most.body.streams, ["orders"]);
    const more = await register({ streams: Array.from({ length: 1025 }, () => "orders") });
    assert.equal(more.status, 400, more.text.slice(0, 300));
    assert.match(more.body.error.message, /streams: .*1024/);
    assert.equal((await call(ctx.app, "GET", "/v1/webhooks")).body.webhooks.length, 2);
  });
});

Deno.test("a webhook URL is stored and shown as fetch requests it (WHATWG href), and deliveries go to that URL", async () => {
  const ctx = await setup();
  const receiver = await Receiver.start(() => ctx.clock.now);
  try {
    const sent = receiver.url("/in box/<img src=x onerror=alert(4)>");
    const href = new URL(sent).href;
    assert.notEqual(href, sent);
    const created = await call(ctx.app, "POST", "/v1/webhooks", { url: sent });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.url, href);
    assert.ok(href.endsWith("/in%20box/%3Cimg%20src=x%20onerror=alert(4)%3E"), href);
    const listed = await call(ctx.app, "GET", "/v1/webhooks");
    assert.deepEqual(listed.body.webhooks.map((item: { url: string }) => item.url), [href]);
    // What is called is what is shown.
    const test = await call(ctx.app, "POST", `/v1/webhooks/${created.body.id}/test`);
    assert.equal(test.status, 202, test.text);
    await receiver.waitFor(1);
    assert.equal(new URL(receiver.received[0].path, href).href, href);
    // A change of the URL is stored the same way; the host is checked as fetch reads it
    // (`0x7f.1` is 127.0.0.1, which the allow-list admits; `HTTP:` is http).
    const port = new URL(href).port;
    const changed = await call(ctx.app, "PATCH", `/v1/webhooks/${created.body.id}`, {
      url: `HTTP://0x7f.1:${port}/a b`,
    });
    assert.equal(changed.status, 200, changed.text);
    assert.equal(changed.body.url, `http://127.0.0.1:${port}/a%20b`);
  } finally {
    await receiver.close();
    await ctx.close();
  }
});

Deno.test("a webhook URL's #fragment, which no request carries, is neither stored nor shown, on POST and PATCH", async () => {
  const ctx = await setup();
  const receiver = await Receiver.start(() => ctx.clock.now);
  try {
    const called = receiver.url("/hook");
    const created = await call(ctx.app, "POST", "/v1/webhooks", { url: `${called}#top` });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.url, called);
    const shown = await call(ctx.app, "GET", `/v1/webhooks/${created.body.id}`);
    assert.equal(shown.body.url, called);
    // What is called is what is shown.
    const test = await call(ctx.app, "POST", `/v1/webhooks/${created.body.id}/test`);
    assert.equal(test.status, 202, test.text);
    await receiver.waitFor(1);
    assert.equal(new URL(receiver.received[0].path, called).href, called);
    // An empty fragment goes too.
    const changed = await call(ctx.app, "PATCH", `/v1/webhooks/${created.body.id}`, {
      url: receiver.url("/other#"),
    });
    assert.equal(changed.status, 200, changed.text);
    assert.equal(changed.body.url, receiver.url("/other"));
  } finally {
    await receiver.close();
    await ctx.close();
  }
});

Deno.test("a webhook URL whose host's lookup never answers is 400 invalid_webhook naming the host and the bound, like one that does not resolve, on POST and PATCH, and changes nothing", async () => {
  const ctx = await setup({
    policy: new UrlPolicy({
      allow: ["127.0.0.1"],
      // NXDOMAIN for one name; no answer ever for the others.
      resolve: (hostname) =>
        hostname === "nowhere.example.com"
          ? Promise.reject(new Error("NXDOMAIN"))
          : new Promise<string[]>(() => {}),
      resolveTimeoutMs: 50,
    }),
  });
  let guard: ReturnType<typeof setTimeout> | undefined;
  // Without a bound the request hangs: fail after 2 s rather than wait for ever.
  const within = <T>(promise: Promise<T>) =>
    Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        guard = setTimeout(() => reject(new Error("the request still hangs after 2 s")), 2_000);
      }),
    ]).finally(() => clearTimeout(guard));
  try {
    const refused = await within(
      call(ctx.app, "POST", "/v1/webhooks", { url: "https://silent.example.com/hook" }),
    );
    assert.equal(refused.status, 400, refused.text);
    assert.equal(refused.body.error.code, "invalid_webhook");
    assert.equal(
      refused.body.error.message,
      "Cannot register webhook as 'url' host 'silent.example.com' did not resolve within 50 ms",
    );
    // As a name that does not resolve at all is answered.
    const unknown = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "https://nowhere.example.com/hook",
    });
    assert.equal(unknown.status, 400, unknown.text);
    assert.equal(unknown.body.error.code, "invalid_webhook");
    assert.equal(
      unknown.body.error.message,
      "Cannot register webhook as 'url' host 'nowhere.example.com' does not resolve",
    );
    assert.deepEqual((await call(ctx.app, "GET", "/v1/webhooks")).body.webhooks, []);
    const created = await call(ctx.app, "POST", "/v1/webhooks", { url: "http://127.0.0.1:9/h" });
    assert.equal(created.status, 201, created.text);
    const before = await call(ctx.app, "GET", `/v1/webhooks/${created.body.id}`);
    ctx.clock.now += 1_000;
    const changed = await within(
      call(ctx.app, "PATCH", `/v1/webhooks/${created.body.id}`, {
        url: "https://silent.example.com/hook",
      }),
    );
    assert.equal(changed.status, 400, changed.text);
    assert.equal(changed.body.error.code, "invalid_webhook");
    assert.match(
      changed.body.error.message,
      /'silent\.example\.com' did not resolve within 50 ms$/,
    );
    const after = await call(ctx.app, "GET", `/v1/webhooks/${created.body.id}`);
    assert.equal(after.body.url, "http://127.0.0.1:9/h");
    assert.deepEqual(after.body, before.body);
  } finally {
    await ctx.close();
  }
});

Deno.test("a webhook URL of at most 2048 characters that encoding makes longer is refused on POST and PATCH, so every URL shown can be sent back", async () => {
  const ctx = await setup();
  try {
    const base = "http://127.0.0.1:9/";
    // 2048 characters as sent; each `é` becomes `%C3%A9`, six.
    const long = base + "é".repeat(2048 - base.length);
    const refused = await call(ctx.app, "POST", "/v1/webhooks", { url: long });
    assert.equal(refused.status, 400, refused.text);
    assert.equal(refused.body.error.code, "invalid_webhook");
    assert.match(refused.body.error.message, /'url' is \d+ characters .*longer than 2048/);
    const listed = await call(ctx.app, "GET", "/v1/webhooks");
    assert.deepEqual(listed.body.webhooks, []);
    // At the bound once encoded: taken, shown as stored, and sent back as it is.
    const atBound = base + "é".repeat(Math.floor((2048 - base.length) / 6)) +
      "a".repeat((2048 - base.length) % 6);
    const created = await call(ctx.app, "POST", "/v1/webhooks", { url: atBound });
    assert.equal(created.status, 201, created.text);
    assert.equal(created.body.url.length, 2048);
    const again = await call(ctx.app, "PATCH", `/v1/webhooks/${created.body.id}`, {
      url: created.body.url,
    });
    assert.equal(again.status, 200, again.text);
    const changed = await call(ctx.app, "PATCH", `/v1/webhooks/${created.body.id}`, { url: long });
    assert.equal(changed.status, 400, changed.text);
    assert.equal(changed.body.error.code, "invalid_webhook");
    const shown = await call(ctx.app, "GET", `/v1/webhooks/${created.body.id}`);
    assert.equal(shown.body.url, created.body.url);
  } finally {
    await ctx.close();
  }
});

Deno.test("a webhook URL past 2048 characters as sent is 400 invalid_webhook (README), as one encoding makes longer is, on POST and PATCH (an unknown id too), changing nothing; the OpenAPI document keeps maxLength", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  assert.match(
    readme.replace(/\s+/g, " "),
    /at most 2,048 characters as sent and so encoded, where `é` takes six: a longer one, as sent or once encoded, is `400 invalid_webhook`/,
  );
  await withSetup(async (ctx) => {
    const kept = await call(ctx.app, "POST", "/v1/webhooks", { url: "http://127.0.0.1:9/h" });
    assert.equal(kept.status, 201, kept.text);
    const base = "http://127.0.0.1:9/";
    const long = base + "a".repeat(2049 - base.length);
    const post = await call(ctx.app, "POST", "/v1/webhooks", { url: long });
    assert.equal(post.status, 400, post.text.slice(0, 300));
    assert.equal(post.body.error.code, "invalid_webhook", post.text.slice(0, 300));
    assert.equal(
      post.body.error.message,
      "Cannot register webhook as 'url' is 2049 characters, longer than 2048",
    );
    for (const id of [kept.body.id, "ep_nope"]) {
      const patch = await call(ctx.app, "PATCH", `/v1/webhooks/${id}`, { url: long });
      assert.equal(patch.status, 400, patch.text.slice(0, 300));
      assert.equal(patch.body.error.code, "invalid_webhook", patch.text.slice(0, 300));
      assert.equal(
        patch.body.error.message,
        "Cannot change webhook as 'url' is 2049 characters, longer than 2048",
      );
    }
    // The bound as sent holds even where encoding would shorten it (a dropped fragment).
    const fragment = base + "#" + "a".repeat(2048 - base.length);
    const withFragment = await call(ctx.app, "POST", "/v1/webhooks", { url: fragment });
    assert.equal(withFragment.body.error.code, "invalid_webhook", withFragment.text.slice(0, 300));
    const atBound = await call(ctx.app, "POST", "/v1/webhooks", { url: long.slice(0, 2048) });
    assert.equal(atBound.status, 201, atBound.text);
    const list = await call(ctx.app, "GET", "/v1/webhooks");
    assert.deepEqual(
      list.body.webhooks.map((item: { url: string }) => item.url).sort(),
      [long.slice(0, 2048), "http://127.0.0.1:9/h"].sort(),
    );
    const doc = (await call(ctx.app, "GET", "/openapi.json")).body;
    for (const name of ["WebhookInput", "WebhookPatch"]) {
      const url = doc.components.schemas[name].properties.url;
      assert.equal(url.maxLength, 2048, name);
      assert.equal(url.minLength, 1, name);
      assert.match(url.description, /longer one is 400 invalid_webhook/, name);
    }
  });
});

Deno.test("POST /v1/webhooks past EDGESTREAM_WEBHOOKS_MAX answers 409 too_many_webhooks and registers nothing; a deletion frees a place", async () => {
  const ctx = await setup({
    deliveries: new MemoryDeliveryStore({ now: () => T0, maxEndpoints: 2 }),
  });
  try {
    const [first] = await registerMany(ctx, 2);
    const refused = await call(ctx.app, "POST", "/v1/webhooks", { url: "http://127.0.0.1:9/h9" });
    assert.equal(refused.status, 409, refused.text);
    assert.equal(refused.body.error.code, "too_many_webhooks");
    assert.equal(
      refused.body.error.message,
      "Cannot create more webhook endpoints: this deployment holds 2; the limit is 2 (EDGESTREAM_WEBHOOKS_MAX); delete one first",
    );
    assert.deepEqual(refused.body.error.details, { kind: "webhooks", max: 2, held: 2 });
    assert.equal((await call(ctx.app, "GET", "/v1/webhooks")).body.webhooks.length, 2);
    // Changing an endpoint at the bound adds none: never refused.
    const changed = await call(ctx.app, "PATCH", `/v1/webhooks/${first}`, {
      url: "http://127.0.0.1:9/changed",
    });
    assert.equal(changed.status, 200, changed.text);
    assert.equal(changed.body.url, "http://127.0.0.1:9/changed");
    assert.equal((await call(ctx.app, "DELETE", `/v1/webhooks/${first}`)).status, 204);
    assert.equal(
      (await call(ctx.app, "POST", "/v1/webhooks", { url: "http://127.0.0.1:9/h9" })).status,
      201,
    );
  } finally {
    await ctx.close();
  }
});

Deno.test("batch.maxEvents is at most 1,000 and maxWait at most 1m (README), each past it a 400 naming it", async () => {
  await withSetup(async (ctx) => {
    const at = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/most",
      eventTypes: ["window.closed"],
      batch: { maxEvents: 1_000, maxWait: "1m" },
    });
    assert.equal(at.status, 201, at.text);
    for (
      const [batch, field] of [
        [{ maxEvents: 1_001 }, "batch.maxEvents"],
        [{ maxEvents: 10, maxWait: "1m1ms" }, "batch.maxWait"],
      ] as const
    ) {
      const past = await call(ctx.app, "POST", "/v1/webhooks", {
        url: "http://127.0.0.1:9/past",
        eventTypes: ["window.closed"],
        batch,
      });
      assert.equal(past.status, 400, JSON.stringify(batch));
      assert.ok(past.body.error.message.includes(field), past.body.error.message);
    }
  });
});

Deno.test("batch.maxWait with a fraction of a millisecond or a unit given twice is a 400 naming it, on POST and PATCH, changing nothing", async () => {
  await withSetup(async (ctx) => {
    const created = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/batched",
      eventTypes: ["window.closed"],
      batch: { maxEvents: 10, maxWait: "2s" },
    });
    assert.equal(created.status, 201, created.text);
    for (
      const [maxWait, problem] of [
        [
          "1s1s",
          "Cannot read duration '1s1s' at position 2: unit 's' is given twice; give each unit once",
        ],
        [
          "0.5ms",
          "Cannot read duration '0.5ms': '0.5ms' is not a whole number of milliseconds; a duration is counted in whole ms",
        ],
      ]
    ) {
      const posted = await call(ctx.app, "POST", "/v1/webhooks", {
        url: "http://127.0.0.1:9/refused",
        eventTypes: ["window.closed"],
        batch: { maxEvents: 10, maxWait },
      });
      assert.equal(posted.status, 400, maxWait);
      assert.deepEqual(
        [posted.body.error.code, posted.body.error.message],
        ["invalid_request", `Invalid request body batch.maxWait: ${problem}`],
      );
      const patched = await call(ctx.app, "PATCH", `/v1/webhooks/${created.body.id}`, {
        batch: { maxEvents: 10, maxWait },
      });
      assert.equal(patched.status, 400, maxWait);
      assert.equal(patched.body.error.message, `Invalid request body batch.maxWait: ${problem}`);
    }
    const read = await call(ctx.app, "GET", `/v1/webhooks/${created.body.id}`);
    assert.equal(read.body.batch.maxWait, "2s", read.text);
    const listed = await call(ctx.app, "GET", "/v1/webhooks");
    assert.equal(listed.body.webhooks.length, 1, listed.text);
  });
});

Deno.test("an endpoint's streams list names at least one stream (an empty one would hear from none): 400 on POST and PATCH; null is all", async () => {
  await withSetup(async (ctx) => {
    const empty = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/none",
      streams: [],
    });
    assert.equal(empty.status, 400, empty.text);
    assert.match(empty.body.error.message, /streams/);
    const all = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/all",
      streams: null,
    });
    assert.equal(all.status, 201, all.text);
    assert.equal(all.body.streams, null);
    const emptied = await call(ctx.app, "PATCH", `/v1/webhooks/${all.body.id}`, { streams: [] });
    assert.equal(emptied.status, 400, emptied.text);
    assert.equal((await call(ctx.app, "GET", `/v1/webhooks/${all.body.id}`)).body.streams, null);
  });
});

Deno.test("an endpoint's streams named twice are kept once, as its eventTypes and a key's streams are: on POST and PATCH", async () => {
  await withSetup(async (ctx) => {
    const created = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/twice",
      streams: ["orders", "signups", "orders"],
      eventTypes: ["alert.fired", "alert.fired"],
    });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.body.streams, ["orders", "signups"]);
    assert.deepEqual(created.body.eventTypes, ["alert.fired"]);
    const changed = await call(ctx.app, "PATCH", `/v1/webhooks/${created.body.id}`, {
      streams: ["signups", "signups"],
    });
    assert.equal(changed.status, 200, changed.text);
    assert.deepEqual(changed.body.streams, ["signups"]);
    const read = await call(ctx.app, "GET", `/v1/webhooks/${created.body.id}`);
    assert.deepEqual(read.body.streams, ["signups"]);
  });
});

Deno.test("a header name past 128 characters is refused saying so, its message quoting it shortened (a 500 KB name was echoed whole as 'not a valid token'), and nothing is registered", async () => {
  await withSetup(async (ctx) => {
    const long = `X-${"a".repeat(500_000)}`;
    for (const headers of [{ [long]: "1" }, { [long]: "1", [long.toUpperCase()]: "2" }]) {
      const res = await call(ctx.app, "POST", "/v1/webhooks", {
        url: "http://127.0.0.1:9/long",
        headers,
      });
      assert.equal(res.status, 400, res.text.slice(0, 300));
      assert.equal(res.body.error.code, "invalid_webhook");
      assert.ok(res.text.length < 1_000, `${res.text.length} characters`);
      assert.match(res.body.error.message, /\(500002 characters\)/);
    }
    const tooLong = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/long",
      headers: { [`X-${"a".repeat(127)}`]: "1" },
    });
    assert.equal(tooLong.status, 400, tooLong.text);
    assert.match(tooLong.body.error.message, /is longer than 128 characters/);
    const spaced = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/long",
      headers: { "X A": "1" },
    });
    assert.match(spaced.body.error.message, /header name 'X A' is not a valid token/);
    const fits = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/long",
      headers: { [`X-${"a".repeat(126)}`]: "1" },
    });
    assert.equal(fits.status, 201, fits.text);
    // The README's other bounds: 32 headers, values of 4,096 characters.
    const many = Object.fromEntries(Array.from({ length: 33 }, (_, n) => [`X-${n}`, "1"]));
    const tooMany = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/long",
      headers: many,
    });
    assert.equal(tooMany.status, 400, tooMany.text);
    assert.equal(tooMany.body.error.code, "invalid_webhook");
    assert.equal(
      tooMany.body.error.message,
      "Cannot register webhook as 'headers' has 33 headers, more than 32",
    );
    const longValue = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/long",
      headers: { "X-A": "a".repeat(4097) },
    });
    assert.equal(longValue.status, 400, longValue.text);
    assert.equal(longValue.body.error.code, "invalid_webhook");
    assert.equal(
      longValue.body.error.message,
      "Cannot register webhook as header 'X-A' has a value of 4097 characters, longer than 4096",
    );
    assert.equal((await call(ctx.app, "GET", "/v1/webhooks")).body.webhooks.length, 1);
  });
});

Deno.test("every header problem is 400 invalid_webhook (README), the bounds (33 headers, a value of 4,097) as the rules are, on POST and PATCH, changing nothing", async () => {
  await withSetup(async (ctx) => {
    const kept = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/h",
      headers: { "X-Kept": "1" },
    });
    assert.equal(kept.status, 201, kept.text);
    const many = Object.fromEntries(Array.from({ length: 33 }, (_, n) => [`X-${n}`, "1"]));
    const bad: Record<string, string>[] = [
      many,
      { "X-A": "a".repeat(4097) },
      { Host: "x" },
      { "X-A": "1", "x-a": "2" },
      { "X-A": "a\x01" },
      { "X A": "1" },
    ];
    for (const headers of bad) {
      const post = await call(ctx.app, "POST", "/v1/webhooks", {
        url: "http://127.0.0.1:9/h",
        headers,
      });
      assert.equal(post.status, 400, post.text.slice(0, 300));
      assert.equal(post.body.error.code, "invalid_webhook", post.text.slice(0, 300));
      const patch = await call(ctx.app, "PATCH", `/v1/webhooks/${kept.body.id}`, { headers });
      assert.equal(patch.status, 400, patch.text.slice(0, 300));
      assert.equal(patch.body.error.code, "invalid_webhook", patch.text.slice(0, 300));
    }
    const thirtyTwo = Object.fromEntries(Array.from({ length: 32 }, (_, n) => [`X-${n}`, "1"]));
    const fits = await call(ctx.app, "PATCH", `/v1/webhooks/${kept.body.id}`, {
      headers: thirtyTwo,
    });
    assert.equal(fits.status, 200, fits.text);
    assert.equal(fits.body.headerNames.length, 32);
    const list = await call(ctx.app, "GET", "/v1/webhooks");
    assert.equal(list.body.webhooks.length, 1);
    // The header values are typed still: another shape is the body's, 400 invalid_request.
    const number = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/h",
      headers: { "X-A": 1 },
    });
    assert.equal(number.body.error.code, "invalid_request", number.text);
  });
});

Deno.test("webhook header names and values are ASCII, so README's 128 and 4,096 count characters and bytes alike: a name of 100 emoji is no token, not 'longer than 128 characters'", async () => {
  await withSetup(async (ctx) => {
    const register = (headers: Record<string, string>) =>
      call(ctx.app, "POST", "/v1/webhooks", { url: "http://127.0.0.1:9/h", headers });
    const emoji = "\u{1F600}".repeat(100);
    const name = await register({ [emoji]: "1" });
    assert.equal(name.status, 400, name.text);
    assert.equal(
      name.body.error.message,
      `Cannot register webhook as header name '${emoji}' is not a valid token`,
    );
    const latin = await register({ ["X-\u00E9"]: "1" });
    assert.match(latin.body.error.message, /is not a valid token$/);
    // A value of 4,096 ASCII characters (bytes) is taken; one of 4,096 'é' (under the count) is
    // refused for its characters, not its length.
    const fits = await register({ "X-A": "a".repeat(4096) });
    assert.equal(fits.status, 201, fits.text.slice(0, 300));
    const accented = await register({ "X-A": "\u00E9".repeat(4096) });
    assert.equal(accented.status, 400);
    assert.match(
      accented.body.error.message,
      /is not a valid header value \(only characters up to U\+007E/,
    );
    assert.equal((await call(ctx.app, "GET", "/v1/webhooks")).body.webhooks.length, 1);
  });
});

Deno.test("an unknown endpoint id is 404 webhook_not_found on every endpoint route, one past 256 characters (or a delivery id past 512) a 400 invalid_request, as the README says", async () => {
  await withSetup(async (ctx) => {
    const routes: Array<[string, string, unknown?]> = [
      ["GET", ""],
      ["PATCH", "", {}],
      ["DELETE", ""],
      ["POST", "/rotate-secret"],
      ["POST", "/test"],
      ["GET", "/deliveries"],
      ["POST", "/replay", { since: 0 }],
    ];
    for (const [method, suffix, body] of routes) {
      const unknown = await call(ctx.app, method, `/v1/webhooks/ep_nope${suffix}`, body);
      assert.equal(unknown.status, 404, `${method} ${suffix} ${unknown.text}`);
      assert.equal(unknown.body.error.code, "webhook_not_found");
      const long = await call(ctx.app, method, `/v1/webhooks/${"e".repeat(257)}${suffix}`, body);
      assert.equal(long.status, 400, `${method} ${suffix} ${long.text}`);
      assert.equal(long.body.error.code, "invalid_request");
      assert.match(long.body.error.message, /^Invalid path parameter id: /);
    }
    const delivery = await call(ctx.app, "POST", "/v1/deliveries/d_nope/retry");
    assert.equal(delivery.status, 404, delivery.text);
    assert.equal(delivery.body.error.code, "delivery_not_found");
    const longDelivery = await call(ctx.app, "POST", `/v1/deliveries/${"d".repeat(513)}/retry`);
    assert.equal(longDelivery.status, 400, longDelivery.text);
    assert.equal(longDelivery.body.error.code, "invalid_request");
  });
});

Deno.test("a webhook request's body is checked before its id (README), as a stream's PUT is before its If-Match: PATCH and replay of an unknown id with a refused body are 400, a body that passes 404", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  assert.match(
    readme.replace(/\s+/g, " "),
    /A request's body is checked before its id is looked up, as on the other routes/,
  );
  await withSetup(async (ctx) => {
    const refused: Array<[string, unknown, string]> = [
      ["", { url: "ftp://example.com/h" }, "invalid_webhook"],
      ["", { streams: ["nope"] }, "invalid_webhook"],
      ["", { headers: { Host: "x" } }, "invalid_webhook"],
      ["", { filter: "payload.type ==" }, "invalid_webhook"],
      ["", { url: "" }, "invalid_request"],
      ["", { rateLimit: 0 }, "invalid_request"],
      ["", { batch: { maxEvents: 1, maxWait: "2m" } }, "invalid_request"],
      ["/replay", { since: "not a time" }, "invalid_request"],
    ];
    for (const [suffix, body, code] of refused) {
      const method = suffix === "" ? "PATCH" : "POST";
      const res = await call(ctx.app, method, `/v1/webhooks/ep_nope${suffix}`, body);
      assert.equal(res.status, 400, `${JSON.stringify(body)} ${res.text}`);
      assert.equal(res.body.error.code, code, res.text);
    }
    // A definition the stream PUT refuses, for a version of a stream that does not exist.
    const put = await ctx.app.request("/v1/streams/not_there", {
      method: "PUT",
      headers: { "Content-Type": "application/json", "If-Match": '"3"' },
      body: JSON.stringify({ counters: 5 }),
    });
    assert.equal(put.status, 400, await put.clone().text());
    assert.equal((await put.json()).error.code, "invalid_definition");
    for (
      const body of [
        { url: "http://127.0.0.1:9/h" },
        { streams: ["orders"] },
        { batch: { maxEvents: 1 } },
      ]
    ) {
      const res = await call(ctx.app, "PATCH", "/v1/webhooks/ep_nope", body);
      assert.equal(res.status, 404, `${JSON.stringify(body)} ${res.text}`);
      assert.equal(res.body.error.code, "webhook_not_found");
    }
  });
});

Deno.test("an endpoint's streams must be streams served (unlike a key's): another name is 400 invalid_webhook naming it, on POST and PATCH, and changes nothing", async () => {
  await withSetup(async (ctx) => {
    const refused = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/s",
      streams: ["orders", "nope"],
    });
    assert.equal(refused.status, 400, refused.text);
    assert.equal(refused.body.error.code, "invalid_webhook");
    assert.match(
      refused.body.error.message,
      /'streams' names an unknown stream: nope; streams are: /,
    );
    const created = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/s",
      streams: ["orders"],
    });
    assert.equal(created.status, 201, created.text);
    const changed = await call(ctx.app, "PATCH", `/v1/webhooks/${created.body.id}`, {
      streams: ["nope"],
    });
    assert.equal(changed.status, 400, changed.text);
    assert.equal(changed.body.error.code, "invalid_webhook");
    assert.match(
      changed.body.error.message,
      /^Cannot change webhook as 'streams' names an unknown stream: nope/,
    );
    const listed = await call(ctx.app, "GET", "/v1/webhooks");
    assert.deepEqual(
      listed.body.webhooks.map((endpoint: { streams: string[] }) => endpoint.streams),
      [["orders"]],
    );
  });
});

Deno.test("a PATCH with headers replaces them all (README): replies list their names only, {} removes them, a PATCH without headers keeps them", async () => {
  await withSetup(async (ctx) => {
    const created = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/h",
      headers: { "X-A": "a-secret", "X-B": "b" },
    });
    assert.equal(created.status, 201, created.text);
    assert.deepEqual(created.body.headerNames, ["X-A", "X-B"]);
    assert.ok(!created.text.includes("a-secret"));
    const path = `/v1/webhooks/${created.body.id}`;
    const replaced = await call(ctx.app, "PATCH", path, { headers: { "X-C": "c" } });
    assert.equal(replaced.status, 200, replaced.text);
    assert.deepEqual(replaced.body.headerNames, ["X-C"]);
    const kept = await call(ctx.app, "PATCH", path, { description: "d" });
    assert.deepEqual(kept.body.headerNames, ["X-C"]);
    const removed = await call(ctx.app, "PATCH", path, { headers: {} });
    assert.deepEqual(removed.body.headerNames, []);
    assert.deepEqual((await call(ctx.app, "GET", path)).body.headerNames, []);
  });
});

Deno.test("a webhook's secret is sent with Cache-Control: no-store, on creation and rotation; reads of the endpoint hold none", async () => {
  await withSetup(async (ctx) => {
    const created = await ctx.app.request("/v1/webhooks", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ url: "http://127.0.0.1:9/hook" }),
    });
    assert.equal(created.status, 201);
    // The only answers that hold the secret: no cache (a proxy's, the browser's) may keep them.
    assert.equal(created.headers.get("Cache-Control"), "no-store");
    const { id, secret } = await created.json();
    assert.match(secret, /^whsec_/);
    const rotated = await ctx.app.request(`/v1/webhooks/${id}/rotate-secret`, { method: "POST" });
    assert.equal(rotated.status, 200);
    assert.equal(rotated.headers.get("Cache-Control"), "no-store");
    const next = (await rotated.json()).secret;
    for (const path of ["/v1/webhooks", `/v1/webhooks/${id}`]) {
      const read = await ctx.app.request(path);
      assert.equal(read.status, 200);
      assert.equal(read.headers.get("Cache-Control"), null, path);
      const text = await read.text();
      assert.equal(text.includes(secret) || text.includes(next), false, path);
    }
  });
});

Deno.test("a delivery cursor written by hand is read as the position it names (README: cursors are not signed); one naming another endpoint's delivery is 400, and a page holds its endpoint's deliveries only", async () => {
  await withSetup(async (ctx) => {
    const [id, other] = await registerMany(ctx, 2);
    const delivery = (n: number, endpointId: string): NewDelivery => ({
      id: `msg_t_${n}.${endpointId}`,
      messageId: `msg_t_${n}`,
      endpointId,
      stream: "orders",
      eventType: "window.closed",
      payload: JSON.stringify({ type: "window.closed", n }),
      createdMs: T0 + n,
    });
    await ctx.deliveries.createDeliveries([
      ...[1, 2, 3].map((n) => delivery(n, id)),
      ...[1, 2, 3, 4].map((n) => delivery(n, other)),
    ]);
    const cursorOf = (text: string) =>
      new TextEncoder().encode(text).toBase64({ alphabet: "base64url", omitPadding: true });
    // After the position of the newest of `other`'s, yet ending with this endpoint's id.
    const handWritten = cursorOf(`d.${T0 + 4}.msg_t_4.${id}`);
    const page = await call(ctx.app, "GET", `/v1/webhooks/${id}/deliveries?cursor=${handWritten}`);
    assert.equal(page.status, 200, page.text);
    assert.deepEqual(
      page.body.deliveries.map((item: { id: string }) => item.id),
      [3, 2, 1].map((n) => `msg_t_${n}.${id}`),
    );
    const middle = await call(
      ctx.app,
      "GET",
      `/v1/webhooks/${id}/deliveries?cursor=${cursorOf(`d.${T0 + 2}.msg_t_2.${id}`)}`,
    );
    assert.deepEqual(middle.body.deliveries.map((item: { id: string }) => item.id), [
      `msg_t_1.${id}`,
    ]);
    const foreign = await call(
      ctx.app,
      "GET",
      `/v1/webhooks/${id}/deliveries?cursor=${cursorOf(`d.${T0 + 4}.msg_t_4.${other}`)}`,
    );
    assert.equal(foreign.status, 400, foreign.text);
    assert.equal(foreign.body.error.code, "invalid_cursor");
  });
});

/** A config of `count` streams, `s0`…, each with one counter. */
function manyStreams(count: number) {
  return {
    streams: Object.fromEntries(
      Array.from({ length: count }, (_, i) => [
        `s${i}`,
        { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } },
      ]),
    ),
  };
}

Deno.test("POST and PATCH /v1/webhooks remove repeats of eventTypes, batch.eventTypes and streams before their bounds (README): 256 streams and one named again is 201 of 256, 257 different is 400 naming streams; past the caps of entries as sent (16, 1,024) 400 naming the field", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const webhooks = readme.slice(readme.indexOf("### Webhooks"));
  const fields = webhooks.slice(webhooks.indexOf("- Fields: "), webhooks.indexOf("\n- A delivery"))
    .replace(/\s+/g, " ");
  assert.match(fields, /Repeats in `eventTypes`, `batch\.eventTypes` and `streams` are removed/);
  assert.match(fields, /16 `eventTypes` or `batch\.eventTypes`, 1,024 `streams`/);
  const ctx = await setup({ config: manyStreams(257) });
  try {
    const streams = Array.from({ length: 256 }, (_, i) => `s${i}`);
    const types = ["window.closed", "alert.fired", "event.processed", "event.late"];
    const created = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/h",
      streams: [...streams, "s7"],
      eventTypes: [...types, "alert.fired"],
      batch: { maxEvents: 10, eventTypes: ["window.closed", "alert.fired", "window.closed"] },
    });
    assert.equal(created.status, 201, created.text.slice(0, 300));
    assert.deepEqual(created.body.streams, streams);
    assert.deepEqual(created.body.eventTypes, types);
    assert.deepEqual(created.body.batch.eventTypes, ["window.closed", "alert.fired"]);
    const id = created.body.id;
    const patched = await call(ctx.app, "PATCH", `/v1/webhooks/${id}`, {
      streams: [...streams.slice(1), "s256", "s256"],
      eventTypes: [...types, ...types],
    });
    assert.equal(patched.status, 200, patched.text.slice(0, 300));
    assert.deepEqual(patched.body.streams, [...streams.slice(1), "s256"]);
    assert.deepEqual(patched.body.eventTypes, types);
    const tooMany = [...streams, "s256", "s0"];
    for (
      const [body, message] of [
        [
          { streams: tooMany },
          /^Invalid request body streams: Too big: expected at most 256 different streams \(repeats are removed\), got 257$/,
        ],
        [
          { streams: Array.from({ length: 1025 }, () => "s0") },
          /^Invalid request body streams: Too big/,
        ],
        [
          { eventTypes: Array.from({ length: 17 }, () => "alert.fired") },
          /^Invalid request body eventTypes: Too big/,
        ],
        [
          {
            batch: { maxEvents: 10, eventTypes: Array.from({ length: 17 }, () => "window.closed") },
          },
          /^Invalid request body batch\.eventTypes: Too big/,
        ],
      ] as const
    ) {
      for (const [method, path] of [["POST", "/v1/webhooks"], ["PATCH", `/v1/webhooks/${id}`]]) {
        const url = method === "POST" ? { url: "http://127.0.0.1:9/h2" } : {};
        const res = await call(ctx.app, method, path, { ...url, ...body });
        assert.equal(res.status, 400, `${method} ${res.text.slice(0, 300)}`);
        assert.equal(res.body.error.code, "invalid_request");
        assert.match(res.body.error.message, message);
      }
    }
    const listed = await call(ctx.app, "GET", "/v1/webhooks");
    assert.equal(listed.body.webhooks.length, 1, "nothing else created");
    assert.deepEqual(listed.body.webhooks[0].streams, [...streams.slice(1), "s256"]);
  } finally {
    await ctx.close();
  }
});

/** A request with headers (an `If-Match`); returns the status, the `ETag` and the body. */
async function send(
  ctx: Ctx,
  method: string,
  path: string,
  headers: Record<string, string>,
  body?: unknown,
  // deno-lint-ignore no-explicit-any
): Promise<{ status: number; etag: string | null; body: any }> {
  if (body !== undefined) headers = { ...headers, "Content-Type": "application/json" };
  const res = await ctx.app.request(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return {
    status: res.status,
    etag: res.headers.get("ETag"),
    body: text ? JSON.parse(text) : null,
  };
}

Deno.test('an endpoint\'s POST, GET, PATCH and rotate-secret answer its version as a strong ETag ("1", then "2"…); a PATCH or a rotation moves it', async () => {
  await withSetup(async (ctx) => {
    const created = await send(ctx, "POST", "/v1/webhooks", {}, { url: "http://127.0.0.1:9/h" });
    assert.equal(created.status, 201);
    assert.equal(created.etag, '"1"');
    const path = `/v1/webhooks/${created.body.id}`;
    assert.equal((await send(ctx, "GET", path, {})).etag, '"1"');
    const patched = await send(ctx, "PATCH", path, {}, { description: "a" });
    assert.equal(patched.status, 200);
    assert.equal(patched.etag, '"2"');
    assert.equal((await send(ctx, "GET", path, {})).etag, '"2"');
    const rotated = await send(ctx, "POST", `${path}/rotate-secret`, {});
    assert.equal(rotated.status, 200);
    // The rotation answers the version it wrote, as a PATCH does.
    assert.equal(rotated.etag, '"3"');
    assert.equal((await send(ctx, "GET", path, {})).etag, '"3"');
  });
});

Deno.test("two admins PATCHing headers with the same If-Match: the first wins, the second is 412 precondition_failed naming the version, nothing of it applied", async () => {
  await withSetup(async (ctx) => {
    const { body: { id } } = await send(ctx, "POST", "/v1/webhooks", {}, {
      url: "http://127.0.0.1:9/h",
      headers: { "X-Old": "1" },
    });
    const path = `/v1/webhooks/${id}`;
    const tag = (await send(ctx, "GET", path, {})).etag!;
    const first = await send(ctx, "PATCH", path, { "If-Match": tag }, {
      headers: { "X-First": "a" },
    });
    assert.equal(first.status, 200);
    assert.deepEqual(first.body.headerNames, ["X-First"]);
    const second = await send(ctx, "PATCH", path, { "If-Match": tag }, {
      headers: { "X-Second": "b" },
      description: "lost",
    });
    assert.equal(second.status, 412);
    assert.equal(second.body.error.code, "precondition_failed");
    assert.equal(
      second.body.error.message,
      `Webhook endpoint '${id}' is not at version 1 (it is at version 2): read it again and retry`,
    );
    const now = await send(ctx, "GET", path, {});
    assert.deepEqual(now.body.headerNames, ["X-First"]);
    assert.equal(now.body.description, null);
    assert.equal(now.etag, '"2"');
    // The tag it answered holds.
    assert.equal((await send(ctx, "PATCH", path, { "If-Match": now.etag! }, {})).status, 200);
  });
});

Deno.test("a disable by a receiver's 410 does not move the endpoint's version (README): the ETag read before still enables it with If-Match", async () => {
  await withSetup(async (ctx) => {
    const receiver = await Receiver.start(() => ctx.clock.now);
    try {
      receiver.respond = () => new Response("gone", { status: 410 });
      const { body: { id } } = await send(ctx, "POST", "/v1/webhooks", {}, {
        url: receiver.url(),
        eventTypes: ["window.closed"],
      });
      const path = `/v1/webhooks/${id}`;
      const before = await send(ctx, "GET", path, {});
      assert.equal(before.etag, '"1"');
      assert.equal(before.body.disabled, false);
      ctx.clock.now += 1_000;
      await ingest(ctx.app, [{ id: "a", ts: at(1), country: "DE" }]);
      await ingest(ctx.app, [{ id: "tick", ts: at(75), country: "XX" }]);
      await sweep(ctx.app, ctx.webhooks);
      assert.ok(receiver.received.length > 0, "the receiver was sent a delivery");
      const disabled = await send(ctx, "GET", path, {});
      assert.equal(disabled.body.disabled, true);
      assert.equal(disabled.body.disabledReason, "Endpoint answered 410 Gone");
      assert.equal(disabled.etag, before.etag);
      const enabled = await send(ctx, "PATCH", path, { "If-Match": before.etag! }, {
        disabled: false,
      });
      assert.equal(enabled.status, 200, JSON.stringify(enabled.body));
      assert.equal(enabled.body.disabled, false);
      assert.equal(enabled.body.disabledReason, null);
      assert.equal(enabled.etag, '"2"');
    } finally {
      await receiver.close();
    }
  });
});

Deno.test("DELETE of an endpoint with a stale If-Match is 412 and deletes nothing; with its ETag, 204; without one, as before", async () => {
  await withSetup(async (ctx) => {
    const { body: { id } } = await send(ctx, "POST", "/v1/webhooks", {}, {
      url: "http://127.0.0.1:9/h",
    });
    const path = `/v1/webhooks/${id}`;
    assert.equal((await send(ctx, "PATCH", path, {}, { description: "b" })).status, 200);
    const stale = await send(ctx, "DELETE", path, { "If-Match": '"1"' });
    assert.equal(stale.status, 412);
    assert.equal(stale.body.error.code, "precondition_failed");
    assert.equal((await send(ctx, "GET", path, {})).status, 200);
    assert.equal((await send(ctx, "DELETE", path, { "If-Match": '"2"' })).status, 204);
    assert.equal((await send(ctx, "GET", path, {})).status, 404);
    // If-Match on an endpoint that does not exist is a 412, as on a stream; without one, 404.
    assert.equal((await send(ctx, "DELETE", path, { "If-Match": '"2"' })).status, 412);
    assert.equal((await send(ctx, "DELETE", path, { "If-Match": "*" })).status, 412);
    assert.equal((await send(ctx, "PATCH", path, { "If-Match": "*" }, {})).status, 412);
    assert.equal((await send(ctx, "DELETE", path, {})).status, 404);
  });
});

Deno.test("rotate-secret takes If-Match as PATCH does: a stale tag is 412 precondition_failed and rotates nothing; the tag it answers holds for the next change", async () => {
  await withSetup(async (ctx) => {
    const { body: { id } } = await send(ctx, "POST", "/v1/webhooks", {}, {
      url: "http://127.0.0.1:9/h",
    });
    const path = `/v1/webhooks/${id}`;
    const rotate = `${path}/rotate-secret`;
    assert.equal((await send(ctx, "PATCH", path, {}, { description: "b" })).status, 200);
    const stale = await send(ctx, "POST", rotate, { "If-Match": '"1"' });
    assert.equal(stale.status, 412);
    assert.equal(stale.etag, null);
    assert.equal(stale.body.error.code, "precondition_failed");
    assert.equal(
      stale.body.error.message,
      `Webhook endpoint '${id}' is not at version 1 (it is at version 2): read it again and retry`,
    );
    // Nothing rotated: every rotation moves the version.
    assert.equal((await send(ctx, "GET", path, {})).etag, '"2"');
    const rotated = await send(ctx, "POST", rotate, { "If-Match": '"2"' });
    assert.equal(rotated.status, 200);
    assert.match(rotated.body.secret, /^whsec_/);
    assert.equal(rotated.etag, '"3"');
    // The tag it answered is the endpoint's: a PATCH with it applies, one with the tag read
    // before the rotation does not.
    assert.equal((await send(ctx, "PATCH", path, { "If-Match": '"2"' }, {})).status, 412);
    const patched = await send(ctx, "PATCH", path, { "If-Match": rotated.etag! }, {});
    assert.equal(patched.status, 200);
    assert.equal(patched.etag, '"4"');
    const malformed = await send(ctx, "POST", rotate, { "If-Match": "4" });
    assert.equal(malformed.status, 400);
    assert.equal(malformed.body.error.code, "invalid_request");
    // If-Match on an endpoint that does not exist is a 412, as on PATCH; without one, 404.
    assert.equal((await send(ctx, "DELETE", path, {})).status, 204);
    assert.equal((await send(ctx, "POST", rotate, { "If-Match": "*" })).status, 412);
    assert.equal((await send(ctx, "POST", rotate, {})).status, 404);
  });
});

Deno.test("If-None-Match on an endpoint's PATCH, DELETE and rotate-secret is taken as on a stream's DELETE: `*` is 412 precondition_failed while it exists, nothing changed, 404 once it does not; anything else 400 invalid_request", async () => {
  await withSetup(async (ctx) => {
    const { body: { id } } = await send(ctx, "POST", "/v1/webhooks", {}, {
      url: "http://127.0.0.1:9/h",
    });
    const path = `/v1/webhooks/${id}`;
    const requests: [string, string, unknown][] = [
      ["PATCH", path, { description: "no" }],
      ["DELETE", path, undefined],
      ["POST", `${path}/rotate-secret`, undefined],
    ];
    for (const [method, target, body] of requests) {
      for (const header of ["*", "*, ", " , *,"]) {
        const refused = await send(ctx, method, target, { "If-None-Match": header }, body);
        assert.equal(refused.status, 412, `${method} ${header}`);
        assert.equal(refused.body.error.code, "precondition_failed");
        assert.equal(
          refused.body.error.message,
          `Webhook endpoint '${id}' exists (it is at version 1): If-None-Match: * holds only while it does not exist`,
        );
      }
      for (const header of ['"1"', 'W/"1"', '*, "1"', ","]) {
        const refused = await send(ctx, method, target, { "If-None-Match": header }, body);
        assert.equal(refused.status, 400, `${method} ${header}`);
        assert.equal(refused.body.error.code, "invalid_request");
        assert.equal(
          refused.body.error.message,
          `If-None-Match: only '*' (the endpoint must not exist) is taken, got '${header}'`,
        );
      }
    }
    // Nothing changed, rotated or deleted: the version is still 1.
    const unchanged = await send(ctx, "GET", path, {});
    assert.equal(unchanged.status, 200);
    assert.equal(unchanged.etag, '"1"');
    assert.equal(unchanged.body.description, null);
    // With If-Match too, both must hold (RFC 9110 §13.2.2): If-Match holds here, If-None-Match not.
    const both = await send(ctx, "DELETE", path, { "If-Match": '"1"', "If-None-Match": "*" });
    assert.equal(both.status, 412);
    assert.equal((await send(ctx, "DELETE", path, {})).status, 204);
    for (const [method, target, body] of requests) {
      const gone = await send(ctx, method, target, { "If-None-Match": "*" }, body);
      assert.equal(gone.status, 404, method);
      assert.equal(gone.body.error.code, "webhook_not_found");
    }
  });
});

Deno.test("an endpoint's If-Match is read as a stream's: *, tag lists, empty elements; weak and non-version tags 412; a header that is no entity tags 400 invalid_request, nothing changed", async () => {
  await withSetup(async (ctx) => {
    const { body: { id } } = await send(ctx, "POST", "/v1/webhooks", {}, {
      url: "http://127.0.0.1:9/h",
    });
    const path = `/v1/webhooks/${id}`;
    for (const header of ['W/"1"', '"x"', '"01"', '"7", "8"']) {
      const res = await send(ctx, "PATCH", path, { "If-Match": header }, { description: "no" });
      assert.equal(res.status, 412, header);
      assert.equal(res.body.error.code, "precondition_failed", header);
    }
    const weak = await send(ctx, "DELETE", path, { "If-Match": 'W/"1"' });
    assert.equal(weak.status, 412);
    assert.equal(
      weak.body.error.message,
      `Webhook endpoint '${id}' is at no version named by a strong tag (it is at version 1); a weak tag (W/"1") matches no version, as If-Match compares strongly: send '"<version>"': read it again and retry`,
    );
    for (const header of ["1", '"1" "2"', ",", '*, "1"']) {
      for (const method of ["PATCH", "DELETE"]) {
        const res = await send(
          ctx,
          method,
          path,
          { "If-Match": header },
          method === "PATCH" ? { description: "no" } : undefined,
        );
        assert.equal(res.status, 400, `${method} ${header}`);
        assert.equal(res.body.error.code, "invalid_request");
        assert.equal(
          res.body.error.message,
          `If-Match: expected '*' or entity tags such as '"3"' (an endpoint's version), got '${header}'`,
        );
      }
    }
    const unchanged = await send(ctx, "GET", path, {});
    assert.equal(unchanged.etag, '"1"');
    assert.equal(unchanged.body.description, null);
    for (const [header, next] of [['"9", "1"', '"2"'], ['"2",', '"3"'], ["*,", '"4"']]) {
      const res = await send(ctx, "PATCH", path, { "If-Match": header }, { description: header });
      assert.equal(res.status, 200, header);
      assert.equal(res.etag, next, header);
    }
  });
});

Deno.test("the OpenAPI document gives an endpoint's GET, POST, PATCH and rotate-secret the ETag header, and PATCH, DELETE and rotate-secret If-Match, If-None-Match and the 412", async () => {
  await withSetup(async (ctx) => {
    const doc = (await call(ctx.app, "GET", "/openapi.json")).body;
    const one = doc.paths["/v1/webhooks/{id}"];
    const rotate = doc.paths["/v1/webhooks/{id}/rotate-secret"].post;
    assert.match(one.get.responses["200"].headers.ETag.description, /If-Match/);
    assert.match(one.patch.responses["200"].headers.ETag.description, /If-Match/);
    assert.match(rotate.responses["200"].headers.ETag.description, /If-Match/);
    assert.ok(rotate.responses["200"].headers["Cache-Control"]);
    assert.ok(doc.paths["/v1/webhooks"].post.responses["201"].headers.ETag);
    for (const operation of [one.patch, one.delete, rotate]) {
      const header = (name: string) =>
        operation.parameters.find((item: { name: string; in: string }) =>
          item.name === name && item.in === "header"
        );
      const ifMatch = header("if-match");
      assert.ok(ifMatch, operation.operationId);
      assert.match(ifMatch.description, /strongly/);
      const ifNoneMatch = header("if-none-match");
      assert.ok(ifNoneMatch, operation.operationId);
      assert.match(ifNoneMatch.description, /412 `precondition_failed` when it exists/);
      assert.ok(operation.responses["412"], operation.operationId);
      assert.ok(operation.responses["400"], operation.operationId);
    }
  });
});
