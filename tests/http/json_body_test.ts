/**
 * Every operation whose body is JSON reads it one way (`readJsonText` in src/http/body.ts): bytes
 * that are not UTF-8 are `400 invalid_utf8`, a `charset` other than UTF-8 and another
 * `Content-Type` are `415`, and a refused request changes nothing. The operations are taken from
 * the OpenAPI document, so a JSON-body route added later is checked too.
 */
import assert from "node:assert/strict";
import { ADMIN_KEY, call, setup } from "../fanout/webhooks/_setup.ts";

// deno-lint-ignore no-explicit-any
type Json = any;

const UTF8 = new TextEncoder();

/** `{"description":"caf<0xE9>"}`: Latin-1 "café", not UTF-8. */
function latin1Body(): Uint8Array<ArrayBuffer> {
  const head = UTF8.encode('{"description":"caf');
  const tail = UTF8.encode('"}');
  const bytes = new Uint8Array(head.length + 1 + tail.length);
  bytes.set(head);
  bytes[head.length] = 0xe9;
  bytes.set(tail, head.length + 1);
  return bytes;
}

async function withApp(
  run: (ctx: Awaited<ReturnType<typeof setup>> & { webhookId: string }) => Promise<void>,
) {
  const ctx = await setup({ auth: true });
  try {
    const res = await call(
      ctx.app,
      "POST",
      "/v1/webhooks",
      { url: "http://127.0.0.1:9/hook" },
      ADMIN_KEY,
    );
    assert.equal(res.status, 201, res.text);
    await run({ ...ctx, webhookId: res.body.id });
  } finally {
    await ctx.close();
  }
}

/** The `METHOD path` of every documented operation that takes a JSON body, its path filled in. */
async function jsonOperations(
  app: { request(path: string): Response | Promise<Response> },
  fill: Record<string, string>,
): Promise<{ method: string; path: string }[]> {
  const document: Json = await (await app.request("/openapi.json")).json();
  const operations: { method: string; path: string }[] = [];
  for (const [template, item] of Object.entries<Json>(document.paths)) {
    for (const [method, operation] of Object.entries<Json>(item)) {
      if (!operation?.requestBody?.content?.["application/json"]) continue;
      const path = template.replaceAll(/\{(\w+)\}/g, (_, name: string) => {
        assert.ok(fill[name], `no value for {${name}} of ${template}`);
        return fill[name];
      });
      operations.push({ method: method.toUpperCase(), path });
    }
  }
  return operations;
}

/**
 * What the management reads show: any change a refused request made would show here. Read it once
 * before the state to compare with: the first counter read of a config stream records it (its
 * `version` goes from 0 to 1), a change of reading, not of a request.
 */
async function state(
  app: { request(path: string, init: RequestInit): Response | Promise<Response> },
) {
  const seen: Record<string, unknown> = {};
  for (
    const path of [
      "/v1/keys",
      "/v1/webhooks",
      "/v1/streams",
      "/v1/streams/orders/counters/per_minute",
    ]
  ) {
    const res = await app.request(path, { headers: { Authorization: `Bearer ${ADMIN_KEY}` } });
    assert.equal(res.status, 200, path);
    seen[path] = await res.json();
  }
  return seen;
}

Deno.test("every JSON-body operation refuses bytes that are not UTF-8 (400 invalid_utf8) and changes nothing", async () => {
  await withApp(async ({ app, webhookId }) => {
    const operations = await jsonOperations(app, { stream: "orders", id: webhookId });
    const names = operations.map(({ method, path }) => `${method} ${path}`).sort();
    // The probe's routes are among them: keys, webhooks (create, change, replay), streams, ingest.
    for (
      const expected of [
        "POST /v1/keys",
        "POST /v1/webhooks",
        `PATCH /v1/webhooks/${webhookId}`,
        `POST /v1/webhooks/${webhookId}/replay`,
        "PUT /v1/streams/orders",
        "POST /v1/streams/orders/events",
      ]
    ) assert.ok(names.includes(expected), `${expected} in ${names.join(", ")}`);
    await state(app);
    const before = await state(app);
    for (const { method, path } of operations) {
      const res = await app.request(path, {
        method,
        headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": "application/json" },
        body: latin1Body(),
      });
      const body = await res.json();
      assert.equal(res.status, 400, `${method} ${path}: ${JSON.stringify(body)}`);
      assert.equal(body.error.code, "invalid_utf8", `${method} ${path}`);
      assert.equal(body.error.message, "Body is not valid UTF-8", `${method} ${path}`);
    }
    assert.deepEqual(await state(app), before);
  });
});

Deno.test("every JSON-body operation refuses a charset other than UTF-8 and another Content-Type (415) and changes nothing", async () => {
  await withApp(async ({ app, webhookId }) => {
    const operations = await jsonOperations(app, { stream: "orders", id: webhookId });
    await state(app);
    const before = await state(app);
    // Bodies each operation would take: the refusal is the header's alone.
    const valid: Record<string, unknown> = {
      "POST /v1/keys": { scopes: ["read"] },
      "POST /v1/webhooks": { url: "http://127.0.0.1:9/other" },
      [`PATCH /v1/webhooks/${webhookId}`]: { description: "changed" },
      [`POST /v1/webhooks/${webhookId}/replay`]: { since: 0 },
      "PUT /v1/streams/orders": {},
      "POST /v1/streams/orders/events": { id: "e-1", ts: "2026-01-01T00:10:00Z", country: "DE" },
    };
    // A stream that does not exist yet is not created either.
    for (const { method, path } of [...operations, { method: "PUT", path: "/v1/streams/fresh" }]) {
      const name = `${method} ${path}`;
      for (
        const [contentType, message] of [
          [
            "application/json; charset=latin1",
            "Bodies are read as UTF-8: Content-Type charset must be utf-8, got 'latin1'",
          ],
          [
            'application/json; charset="ISO-8859-1"',
            "Bodies are read as UTF-8: Content-Type charset must be utf-8, got 'iso-8859-1'",
          ],
          ["text/plain", /^Content-Type must be application\/json.*, got 'text\/plain'$/],
        ] as const
      ) {
        const res = await app.request(path, {
          method,
          headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": contentType },
          body: JSON.stringify(valid[name] ?? {}),
        });
        const body = await res.json();
        assert.equal(res.status, 415, `${name} ${contentType}: ${JSON.stringify(body)}`);
        assert.equal(body.error.code, "unsupported_media_type", `${name} ${contentType}`);
        if (typeof message === "string") assert.equal(body.error.message, message, name);
        else assert.match(body.error.message, message, name);
      }
    }
    assert.deepEqual(await state(app), before);
  });
});

Deno.test("a JSON-body operation still takes UTF-8 (charset or not), and POST /v1/keys no body", async () => {
  await withApp(async ({ app, webhookId }) => {
    for (const contentType of ["application/json", "application/json; charset=UTF-8"]) {
      const res = await app.request(`/v1/webhooks/${webhookId}`, {
        method: "PATCH",
        headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": contentType },
        body: JSON.stringify({ description: "café ☕ 𝄞" }),
      });
      assert.equal(res.status, 200, contentType);
      assert.equal((await res.json()).description, "café ☕ 𝄞");
    }
    // The key body is optional: none is a key without scopes, refused for that, not for its type.
    const res = await app.request("/v1/keys", {
      method: "POST",
      headers: { Authorization: `Bearer ${ADMIN_KEY}` },
    });
    const body = await res.json();
    assert.equal(res.status, 400, JSON.stringify(body));
    assert.equal(body.error.code, "invalid_key");
    // A body without a Content-Type is 415, as before.
    const untyped = await app.request("/v1/keys", {
      method: "POST",
      headers: { Authorization: `Bearer ${ADMIN_KEY}` },
      body: UTF8.encode(JSON.stringify({ scopes: ["read"] })),
    });
    assert.equal(untyped.status, 415);
    assert.equal((await untyped.json()).error.code, "unsupported_media_type");
  });
});

/** `text` compressed as `Content-Encoding: format` says. */
async function compressed(
  text: string,
  format: "gzip" | "deflate",
): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([text]).stream().pipeThrough(new CompressionStream(format));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

Deno.test("every JSON-body operation reads a gzip or deflate body, and refuses another Content-Encoding (415) changing nothing", async () => {
  await withApp(async ({ app, webhookId }) => {
    const operations = await jsonOperations(app, { stream: "orders", id: webhookId });
    // Bodies each operation takes (a config stream cannot be replaced: a new one is made).
    const valid: Record<string, [string, unknown]> = {
      "POST /v1/keys": ["/v1/keys", { scopes: ["read"] }],
      "POST /v1/webhooks": ["/v1/webhooks", { url: "http://127.0.0.1:9/other" }],
      [`PATCH /v1/webhooks/${webhookId}`]: [`/v1/webhooks/${webhookId}`, { description: "x" }],
      [`POST /v1/webhooks/${webhookId}/replay`]: [`/v1/webhooks/${webhookId}/replay`, {
        since: 0,
      }],
      "PUT /v1/streams/orders": ["/v1/streams/fresh", {}],
      "POST /v1/streams/orders/events": ["/v1/streams/orders/events", {
        ts: "2026-01-01T00:10:00Z",
        country: "DE",
      }],
    };
    assert.deepEqual(
      operations.map(({ method, path }) => `${method} ${path}`).sort(),
      Object.keys(valid).sort(),
      "every JSON-body operation has a body here",
    );
    await state(app);
    const before = await state(app);
    for (const { method, path } of operations) {
      const [, body] = valid[`${method} ${path}`];
      const res = await app.request(path, {
        method,
        headers: {
          Authorization: `Bearer ${ADMIN_KEY}`,
          "Content-Type": "application/json",
          "Content-Encoding": "br",
        },
        body: JSON.stringify(body),
      });
      const reply = await res.json();
      assert.equal(res.status, 415, `${method} ${path} br: ${JSON.stringify(reply)}`);
      assert.equal(reply.error.code, "unsupported_media_type");
    }
    assert.deepEqual(await state(app), before, "a refused encoding changes nothing");
    for (const format of ["gzip", "deflate"] as const) {
      for (const { method, path } of operations) {
        const [target, body] = valid[`${method} ${path}`];
        const res = await app.request(target.replace("fresh", `fresh-${format}`), {
          method,
          headers: {
            Authorization: `Bearer ${ADMIN_KEY}`,
            "Content-Type": "application/json",
            "Content-Encoding": format,
          },
          body: await compressed(JSON.stringify(body), format),
        });
        assert.ok(
          res.status < 300,
          `${method} ${target} ${format}: ${res.status} ${await res.text()}`,
        );
      }
    }
  });
});
