/**
 * The OpenAPI document against the app's real answers: requests covering
 * every documented operation (but the two upgrades) go through the app, and
 * each answer's status must be one the operation documents, and its JSON
 * body must match the schema documented for that status (Ajv). A status or
 * a field the code sends but the document does not describe fails here.
 * Response headers too: each header a response declares `required` must be
 * on the answer, and each header of {@linkcode SENT_HEADERS} the answer
 * carries must be declared by its response.
 */
import assert from "node:assert/strict";
import { Ajv } from "ajv";
import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import { RefusedSockets } from "../../src/http/_drop_socket.ts";
import { MemoryDefinitionStore } from "../../src/store/mod.ts";
import { ADMIN_KEY, at, READ_KEY, setup } from "../fanout/webhooks/_setup.ts";
import { KEYS } from "../_fixtures.ts";
import { rawUpgrade, rawUpgradeAnswer, silentUpgrade, startServer } from "../_live.ts";

const CONFIG = {
  streams: {
    orders: {
      time: { field: "ts", lateness: "10s" },
      dedupe: { field: "id", ttl: "1h" },
      schema: { type: "object", properties: { amount: { type: "number" } } },
      origins: ["https://shop.example"],
      counters: {
        per_minute: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
        amount: { window: { hopping: "2m", every: "1m" }, aggregate: { sum: "amount" } },
        latency: { window: { tumbling: "1m" }, aggregate: { quantiles: "amount" } },
        users: { window: { tumbling: "1m" }, aggregate: { distinct: "user" } },
        visits: { window: { session: "5m" }, groupBy: ["user"], aggregate: "count" },
      },
      alerts: [{ name: "busy", counter: "per_minute", when: "value >= 2.0" }],
    },
    limited: {
      limits: { eventsPerSecond: 0.001, burst: 1 },
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
};

// deno-lint-ignore no-explicit-any
type Json = any;

/**
 * A copy of the document whose object schemas with `properties` allow no other property, but
 * those that are `allOf` members (inline or by `$ref`): another member adds their properties.
 */
function closed(doc: Json): Json {
  const open = new Set<string>();
  const findMembers = (node: Json): void => {
    if (Array.isArray(node)) return node.forEach(findMembers);
    if (typeof node !== "object" || node === null) return;
    for (const member of node.allOf ?? []) {
      if (typeof member?.$ref === "string") open.add(member.$ref.split("/").at(-1));
    }
    Object.values(node).forEach(findMembers);
  };
  findMembers(doc);
  const close = (node: Json, member: boolean): Json => {
    if (Array.isArray(node)) return node.map((item) => close(item, false));
    if (typeof node !== "object" || node === null) return node;
    const copy: Json = {};
    for (const [key, value] of Object.entries(node)) {
      copy[key] = key === "allOf"
        ? (value as Json[]).map((item) => close(item, true))
        : key === "schemas" && node === doc.components
        ? Object.fromEntries(
          Object.entries(value as Json).map((
            [name, schema],
          ) => [name, close(schema, open.has(name))]),
        )
        : close(value, false);
    }
    if (!member && copy.properties && copy.additionalProperties === undefined) {
      copy.additionalProperties = false;
    }
    return copy;
  };
  return close(doc, false);
}

/** The response headers the API sends that the document must declare where they are sent. */
const SENT_HEADERS = [
  "Retry-After",
  "RateLimit",
  "RateLimit-Policy",
  "ETag",
  "Idempotent-Replayed",
  "X-Request-Id",
  "Allow",
  "Upgrade",
  "Location",
  "Cache-Control",
  "Vary",
  "Access-Control-Allow-Origin",
  "Access-Control-Expose-Headers",
];

/**
 * What is wrong with the headers of `res`, answered as `documented` (a response object, whose
 * headers may be `$ref`s into `doc`): a required header missing, a sent one undeclared, a value
 * not of its schema's type.
 */
function headerProblems(doc: Json, documented: Json, res: Response): string[] {
  const problems: string[] = [];
  const declared = new Map<string, Json>();
  for (const [name, header] of Object.entries<Json>(documented.headers ?? {})) {
    const resolved = header.$ref ? doc.components.headers[header.$ref.split("/").at(-1)] : header;
    assert.ok(resolved, `header ${name} resolves`);
    declared.set(name.toLowerCase(), resolved);
  }
  for (const [name, header] of declared) {
    const value = res.headers.get(name);
    if (value === null) {
      if (header.required) problems.push(`required header ${name} missing`);
      continue;
    }
    if (header.schema?.type === "integer" && !/^\d+$/.test(value)) {
      problems.push(`header ${name}: '${value}' is not an integer`);
    }
    if (header.schema?.enum && !header.schema.enum.includes(value)) {
      problems.push(`header ${name}: '${value}' not among ${header.schema.enum}`);
    }
  }
  for (const name of SENT_HEADERS) {
    if (res.headers.has(name) && !declared.has(name.toLowerCase())) {
      problems.push(`header ${name} sent, not documented`);
    }
  }
  return problems;
}

/** One JSON Pointer token, as a URI fragment holds it. */
function token(text: string): string {
  return encodeURIComponent(text.replaceAll("~", "~0").replaceAll("/", "~1"));
}

Deno.test("every answer's status and JSON body are as the OpenAPI document describes them", async () => {
  // Beside the config's streams, one stored through the API that this release cannot compile (a
  // pattern with lookahead), listed as not servable.
  const definitions = new MemoryDefinitionStore();
  const written = await definitions.write("legacy", {
    source: "api",
    generation: 1,
    definition: { schema: { properties: { plan: { type: "string", pattern: "^(?!x)" } } } },
    counters: {},
    deleted: false,
  }, 0);
  assert.equal(written.status, "written");
  const streams = new StreamRegistry(compileConfig(CONFIG), { definitions });
  await streams.poll();
  assert.ok(streams.unservable("legacy"));
  const ctx = await setup({ auth: true, streams });
  try {
    const doc: Json = await (await ctx.app.request("/openapi.json")).json();
    const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
    // Every documented object closed: a field the code sends but the document lacks fails too.
    ajv.addSchema(closed(doc), "openapi");
    const exercised = new Set<string>();
    const problems: string[] = [];
    const headersSeen: string[] = [];

    /** Sends a request to `path` (of the documented `template`); checks and returns the answer. */
    const check = async (
      method: string,
      template: string,
      path: string,
      options: { body?: unknown; key?: string | null; headers?: Record<string, string> } = {},
    ): Promise<{ status: number; body: Json }> => {
      const headers: Record<string, string> = { ...options.headers };
      const key = options.key === undefined ? ADMIN_KEY : options.key;
      if (key !== null) headers.Authorization = `Bearer ${key}`;
      let body: string | undefined;
      if (options.body !== undefined) {
        headers["Content-Type"] ??= "application/json";
        body = typeof options.body === "string" ? options.body : JSON.stringify(options.body);
      }
      const res = await ctx.app.request(path, { method, headers, body });
      const text = await res.text();
      const name = `${method} ${path} → ${res.status}`;
      const operation = doc.paths[template]?.[method.toLowerCase()];
      assert.ok(operation, `${method} ${template} is not documented`);
      exercised.add(`${method} ${template}`);
      const documented = operation.responses[String(res.status)];
      if (!documented) {
        problems.push(`${name}: status not documented (${text.slice(0, 120)})`);
        return { status: res.status, body: null };
      }
      for (const problem of headerProblems(doc, documented, res)) {
        problems.push(`${name}: ${problem}`);
      }
      headersSeen.push(...SENT_HEADERS.filter((header) => res.headers.has(header)));
      const type = res.headers.get("Content-Type")?.split(";")[0] ?? "";
      if (text === "") {
        if (documented.content) problems.push(`${name}: empty body, documented with content`);
        return { status: res.status, body: null };
      }
      const content = documented.content?.[type];
      if (!content) {
        problems.push(`${name}: ${type} not documented (${Object.keys(documented.content ?? {})})`);
        return { status: res.status, body: null };
      }
      const parsed = type === "application/json" ? JSON.parse(text) : text;
      if (content.schema && type === "application/json") {
        const pointer = ["paths", template, method.toLowerCase(), "responses", String(res.status)]
          .concat(["content", type, "schema"]).map(token).join("/");
        const validate = ajv.getSchema(`openapi#/${pointer}`)!;
        if (!validate(parsed)) {
          problems.push(
            `${name}: ${ajv.errorsText(validate.errors)} in ${
              JSON.stringify(parsed).slice(0, 300)
            }`,
          );
        }
      }
      return { status: res.status, body: parsed };
    };

    const events = "/v1/streams/{stream}/events";
    const order = (n: number, seconds: number) => ({
      id: `o${n}`,
      ts: at(seconds),
      country: n % 2 ? "DE" : "FR",
      amount: n * 1.5,
      user: `u${n % 3}`,
    });
    await check("GET", "/healthz", "/healthz", { key: null });
    await check("GET", "/readyz", "/readyz", { key: null });
    const docAnswer = await ctx.app.request("/openapi.json");
    await docAnswer.body?.cancel();
    await check("GET", "/openapi.json", "/openapi.json", { key: null });
    assert.equal(
      (await check("GET", "/openapi.json", "/openapi.json", {
        key: null,
        headers: { "If-None-Match": docAnswer.headers.get("ETag")! },
      })).status,
      304,
    );

    // A method a path does not take, which no operation is: the 405 the document's description
    // tells of, with `Allow`, the headers of every answer and the Error envelope.
    const notAllowed = {
      headers: {
        Allow: { required: true, schema: { type: "string" } },
        Vary: { schema: { type: "string" } },
        "X-Request-Id": { $ref: "#/components/headers/X-Request-Id" },
        "X-Content-Type-Options": { $ref: "#/components/headers/X-Content-Type-Options" },
      },
    };
    assert.match(
      doc.info.description,
      /`405 method_not_allowed` with the methods it takes in `Allow`.*on a `\/v1\/…` path with `Vary: Origin`/,
    );
    for (const [method, path] of [["PATCH", "/v1/streams"], ["POST", "/healthz"]]) {
      const res = await ctx.app.request(path, {
        method,
        headers: { Authorization: `Bearer ${ADMIN_KEY}` },
      });
      assert.equal(res.status, 405, `${method} ${path}`);
      for (const problem of headerProblems(doc, notAllowed, res)) {
        problems.push(`${method} ${path} → 405: ${problem}`);
      }
      const validate = ajv.getSchema(
        `openapi#/${["components", "schemas", "Error"].map(token).join("/")}`,
      )!;
      if (!validate(await res.json())) problems.push(`405: ${ajv.errorsText(validate.errors)}`);
      headersSeen.push("Allow");
    }

    // Ingest: accepted, duplicates and rejections, and each way a request fails.
    ctx.clock.now = Date.parse(at(600));
    const batch = [order(1, 540), order(2, 545), order(3, 590), order(1, 540), { amount: "x" }];
    assert.equal(
      (await check("POST", events, "/v1/streams/orders/events", { body: batch })).status,
      202,
    );
    await check("POST", events, "/v1/streams/orders/events", {
      body: [order(4, 100)],
      headers: { "Idempotency-Key": "k1" },
    });
    const replayed = await check("POST", events, "/v1/streams/orders/events", {
      body: [order(4, 100)],
      headers: { "Idempotency-Key": "k1" },
    });
    assert.equal(replayed.status, 202, "the same key and body: the first reply again");
    await check("POST", events, "/v1/streams/orders/events", {
      body: [order(5, 100)],
      headers: { "Idempotency-Key": "k1" },
    });
    await check("POST", events, "/v1/streams/orders/events", { body: "{" });
    await check("POST", events, "/v1/streams/orders/events", { body: [] });
    // No event accepted: the counts and each event's reasons come with the error.
    const refused = await check("POST", events, "/v1/streams/orders/events", {
      body: [{ amount: "x" }],
    });
    assert.equal(refused.status, 400);
    assert.equal(refused.body.error.code, "no_events_accepted");
    assert.equal(refused.body.rejected.length, 1);
    // From a page the stream admits: CORS headers on the reply, as on its errors.
    for (const body of [[order(7, 590)], "{"]) {
      await check("POST", events, "/v1/streams/orders/events", {
        body,
        headers: { Origin: "https://shop.example" },
      });
    }
    await check("POST", events, "/v1/streams/orders/events", { body: [order(6, 590)], key: null });
    await check("POST", events, "/v1/streams/orders/events", {
      body: [order(6, 590)],
      key: READ_KEY,
    });
    await check("POST", events, "/v1/streams/nope/events", { body: [order(6, 590)] });
    await check("POST", events, "/v1/streams/orders/events", {
      body: "a=b",
      headers: { "Content-Type": "text/csv" },
    });
    await check("POST", events, "/v1/streams/orders/events", {
      body: JSON.stringify(Array.from({ length: 1001 }, () => ({}))),
    });
    await check("POST", events, "/v1/streams/orders/events", { body: "x".repeat(1_048_577) });
    await check("POST", events, "/v1/streams/limited/events", { body: [{}] });
    assert.equal(
      (await check("POST", events, "/v1/streams/limited/events", { body: [{}] })).status,
      429,
    );

    // Streams and counters, every aggregate's shape.
    const listed = await check("GET", "/v1/streams", "/v1/streams", { key: READ_KEY });
    assert.deepEqual(
      listed.body.streams.map((stream: Json) => [stream.name, stream.servable]),
      [["legacy", false], ["limited", true], ["orders", true]],
    );
    await check("GET", "/v1/streams/{stream}", "/v1/streams/legacy", { key: READ_KEY });
    await check("GET", "/v1/streams/{stream}", "/v1/streams/orders", { key: READ_KEY });
    await check("GET", "/v1/streams/{stream}", "/v1/streams/nope", { key: READ_KEY });
    // From a page on another origin: a 401 any page reads (CORS headers), the rest none.
    for (const key of [null, READ_KEY]) {
      await check("GET", "/v1/streams/{stream}", "/v1/streams/orders", {
        key,
        headers: { Origin: "https://status.example" },
      });
    }
    const windows = "/v1/streams/{stream}/counters/{counter}";
    const current = `${windows}/current`;
    for (const counter of ["per_minute", "amount", "latency", "users", "visits"]) {
      const rows = await check("GET", windows, `/v1/streams/orders/counters/${counter}`);
      assert.equal(rows.status, 200);
      assert.ok(rows.body.windows.length > 0, `${counter} has windows`);
      await check("GET", current, `/v1/streams/orders/counters/${counter}/current`);
    }
    await check("GET", windows, "/v1/streams/orders/counters/per_minute?top=1");
    await check("GET", current, "/v1/streams/orders/counters/per_minute/current?top=1");
    await check("GET", windows, "/v1/streams/orders/counters/latency?q=0.5,0.999&top=1&by=p50");
    await check("GET", windows, "/v1/streams/orders/counters/per_minute?from=yesterday");
    await check("GET", windows, "/v1/streams/orders/counters/nope");

    // Streams at run time.
    const definition = { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } };
    const stream = "/v1/streams/{stream}";
    await check("PUT", stream, "/v1/streams/signups", { body: definition });
    await check("PUT", stream, "/v1/streams/signups", { body: definition });
    await check("PUT", stream, "/v1/streams/signups", { body: { counters: 1 } });
    await check("PUT", stream, "/v1/streams/orders", { body: definition });
    await check("PUT", stream, "/v1/streams/signups", {
      body: { counters: { n: { window: { tumbling: "2m" }, aggregate: "count" } } },
    });
    await check("DELETE", stream, "/v1/streams/signups");
    await check("DELETE", stream, "/v1/streams/signups");

    // The sweep closes windows and fires the alert.
    ctx.clock.now = Date.parse(at(1200));
    await check("POST", "/v1/admin/sweep", "/v1/admin/sweep", { body: "{bad" });
    const swept = await check("POST", "/v1/admin/sweep", "/v1/admin/sweep");
    assert.equal(swept.status, 200);

    // API keys.
    const created = await check("POST", "/v1/keys", "/v1/keys", {
      body: {
        scopes: ["ingest"],
        streams: ["orders"],
        rateLimit: { eventsPerSecond: 10, burst: 20 },
        description: "conformance",
        expiresAt: "2099-01-01T00:00:00Z",
      },
    });
    assert.equal(created.status, 201);
    await check("POST", "/v1/keys", "/v1/keys", { body: { type: "publishable" } });
    await check("POST", "/v1/keys", "/v1/keys", { body: { scopes: ["everything"] } });
    await check("GET", "/v1/keys", "/v1/keys");
    await check("GET", "/v1/key", "/v1/key");
    await check("GET", "/v1/keys/{id}", `/v1/keys/${created.body.id}`);
    await check("GET", "/v1/keys/{id}", "/v1/keys/key_nope");
    await check("DELETE", "/v1/keys/{id}", `/v1/keys/${created.body.id}`);
    await check("DELETE", "/v1/keys/{id}", `/v1/keys/${created.body.id}`);

    // Webhooks: an endpoint that cannot be reached (port 9), so deliveries fail and retry.
    const hook = await check("POST", "/v1/webhooks", "/v1/webhooks", {
      body: { url: "http://127.0.0.1:9/hook", description: "conformance", streams: ["orders"] },
    });
    assert.equal(hook.status, 201);
    const id = hook.body.id;
    await check("POST", "/v1/webhooks", "/v1/webhooks", { body: { url: "ftp://x" } });
    await check("GET", "/v1/webhooks", "/v1/webhooks");
    await check("GET", "/v1/webhooks/{id}", `/v1/webhooks/${id}`);
    await check("GET", "/v1/webhooks/{id}", "/v1/webhooks/ep_nope");
    await check("PATCH", "/v1/webhooks/{id}", `/v1/webhooks/${id}`, {
      body: { description: "changed" },
    });
    await check("PATCH", "/v1/webhooks/{id}", `/v1/webhooks/${id}`, { body: { url: 3 } });
    await check("POST", "/v1/webhooks/{id}/rotate-secret", `/v1/webhooks/${id}/rotate-secret`);
    await check("POST", "/v1/webhooks/{id}/test", `/v1/webhooks/${id}/test`);
    await check("POST", "/v1/webhooks/{id}/test", `/v1/webhooks/${id}/test`, { body: { a: 1 } });
    await ctx.webhooks.idle();
    const deliveries = await check(
      "GET",
      "/v1/webhooks/{id}/deliveries",
      `/v1/webhooks/${id}/deliveries`,
    );
    assert.ok(deliveries.body.deliveries.length > 0, "the test delivery is listed");
    await check("GET", "/v1/webhooks/{id}/deliveries", `/v1/webhooks/${id}/deliveries?limit=0`);
    await check("POST", "/v1/webhooks/{id}/replay", `/v1/webhooks/${id}/replay`, {
      body: { since: at(0) },
    });
    const retry = "/v1/deliveries/{deliveryId}/retry";
    await check("POST", retry, `/v1/deliveries/${deliveries.body.deliveries[0].id}/retry`);
    await check("POST", retry, "/v1/deliveries/dl_nope/retry");
    await check("DELETE", "/v1/webhooks/{id}", `/v1/webhooks/${id}`);
    await check("DELETE", "/v1/webhooks/{id}", `/v1/webhooks/${id}`);

    // The WebSocket ingest's refusals before upgrading.
    const ws = "/v1/streams/{stream}/ws";
    const upgrade = {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Version": "13",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    };
    const refusals = [
      await check("GET", ws, "/v1/streams/orders/ws", {
        headers: { ...upgrade, "Sec-WebSocket-Protocol": "a,b" },
      }),
      await check("GET", ws, "/v1/streams/orders/ws", {
        headers: { ...upgrade, Origin: "http://evil.test" },
      }),
      await check("GET", ws, "/v1/streams/orders/ws"),
    ];
    assert.deepEqual(refusals.map((answer) => answer.body?.error?.code), [
      "invalid_upgrade",
      "origin_not_allowed",
      "upgrade_required",
    ]);

    // A body over 1 MiB, to every operation it may come with (any method but GET, whose body the
    // runtime drops): 413 before the route reads it, whether the operation takes a body or not.
    const tooLarge = "x".repeat(1_048_577);
    for (const [template, item] of Object.entries<Json>(doc.paths)) {
      for (const method of Object.keys(item).filter((method) => method !== "get")) {
        // The body is refused before any route is reached, but ingest's own, after its stream.
        const path = template.replaceAll(
          /\{(\w+)\}/g,
          (_, name: string) => name === "stream" ? "orders" : "x",
        );
        const answer = await check(method.toUpperCase(), template, path, { body: tooLarge });
        assert.equal(answer.status, 413, `${method} ${template}`);
        assert.equal(answer.body?.error?.code, "payload_too_large", `${method} ${template}`);
      }
    }

    assert.deepEqual(problems, []);
    // Each header of the list was on some answer, so each was checked somewhere.
    assert.deepEqual(SENT_HEADERS.filter((header) => !headersSeen.includes(header)), []);
    const upgrades = ["GET /v1/streams/{stream}/ws", "GET /v1/streams/{stream}/subscribe"];
    const documented = Object.entries(doc.paths).flatMap(([path, operations]) =>
      Object.keys(operations as object).map((method) => `${method.toUpperCase()} ${path}`)
    ).filter((operation) => !upgrades.includes(operation));
    assert.deepEqual(documented.filter((operation) => !exercised.has(operation)), []);
  } finally {
    await ctx.close();
  }
});

Deno.test("a WebSocket refused for its key over a real socket gets what the document lists: 101 then close 1008, or past the refused sockets' bound a 401 or 403 with the error body", async () => {
  const operations = [
    ["/v1/streams/{stream}/ws", "/v1/streams/orders/ws", KEYS.read],
    ["/v1/streams/{stream}/subscribe", "/v1/streams/orders/subscribe", KEYS.ingest],
  ] as const;
  // Room for refused sockets (the default): upgraded, then closed 1008 with the reason.
  const roomy = await startServer({
    auth: true,
    liveRoutes: { refusedCloseMs: 100, socket: { refusedCloseMs: 100 } },
  });
  try {
    const doc: Json = await (await fetch(`${roomy.base}/openapi.json`)).json();
    for (const [template, path, wrongKey] of operations) {
      for (const query of ["", `?token=${wrongKey}`]) {
        const { status, code } = await silentUpgrade(roomy, rawUpgrade(`${path}${query}`));
        assert.match(status, /^HTTP\/1\.1 101 /, `${path}${query}`);
        assert.equal(code, 1008, `${path}${query}`);
        assert.ok(doc.paths[template].get.responses["101"], template);
      }
    }
  } finally {
    await roomy.close();
  }
  // No room: the refusal is answered before the upgrade, as plain HTTP with the error body.
  const full = await startServer({
    auth: true,
    liveRoutes: { refusedSockets: new RefusedSockets(0) },
  });
  try {
    const doc: Json = await (await fetch(`${full.base}/openapi.json`)).json();
    const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
    ajv.addSchema(closed(doc), "openapi");
    for (const [template, path, wrongKey] of operations) {
      for (
        const [query, expected] of [["", 401], [`?token=${wrongKey}`, 403]] as const
      ) {
        const answer = await rawUpgradeAnswer(full.base, `${path}${query}`);
        answer.conn.close();
        const status = Number(answer.status.split(" ")[1]);
        const body: Json = JSON.parse(answer.body || "null");
        const what = `GET ${path}${query}`;
        assert.equal(status, expected, `${what}: ${JSON.stringify(body)}`);
        assert.ok(
          doc.paths[template].get.responses[String(status)],
          `${what}: ${status} is not documented for GET ${template}`,
        );
        const schema = ajv.getSchema(
          `openapi#/${
            ["paths", template, "get", "responses", String(status), "content", "application/json"]
              .concat("schema").map(token).join("/")
          }`,
        )!;
        assert.equal(schema(body), true, `${what}: ${JSON.stringify(schema.errors)}`);
        assert.equal(body.error.code, expected === 401 ? "unauthorized" : "forbidden", what);
      }
    }
  } finally {
    await full.close();
  }
});

Deno.test("the conformance check itself refuses a field the document does not describe", async () => {
  // Beside the config's streams, one stored through the API that this release cannot compile (a
  // pattern with lookahead), listed as not servable.
  const definitions = new MemoryDefinitionStore();
  const written = await definitions.write("legacy", {
    source: "api",
    generation: 1,
    definition: { schema: { properties: { plan: { type: "string", pattern: "^(?!x)" } } } },
    counters: {},
    deleted: false,
  }, 0);
  assert.equal(written.status, "written");
  const streams = new StreamRegistry(compileConfig(CONFIG), { definitions });
  await streams.poll();
  assert.ok(streams.unservable("legacy"));
  const ctx = await setup({ auth: true, streams });
  try {
    const doc: Json = await (await ctx.app.request("/openapi.json")).json();
    const ajv = new Ajv({ strict: false, allErrors: true, validateFormats: false });
    ajv.addSchema(closed(doc), "openapi");
    const schemaOf = (path: string, method: string, status: string) =>
      ajv.getSchema(
        `openapi#/${
          ["paths", path, method, "responses", status, "content", "application/json", "schema"]
            .map(token).join("/")
        }`,
      )!;
    const reply = { accepted: 1, duplicates: 0, late: 0, filtered: 0, rejected: [] };
    const ingest = schemaOf("/v1/streams/{stream}/events", "post", "202");
    assert.equal(ingest(reply), true);
    assert.equal(ingest({ ...reply, undocumented: 1 }), false);
    const created = schemaOf("/v1/keys", "post", "201");
    const error = schemaOf("/v1/keys", "post", "400");
    const envelope = { error: { code: "invalid_request", message: "m", requestId: "r" } };
    assert.equal(error(envelope), true);
    assert.equal(error({ error: { ...envelope.error, extra: true } }), false);
    assert.equal(created({}), false, "a created key has its fields");
  } finally {
    await ctx.close();
  }
});

Deno.test("a 201 says in Location where a GET reads what it created", async () => {
  const ctx = await setup({ auth: true, config: CONFIG });
  try {
    const send = async (method: string, path: string, body: unknown) => {
      const res = await ctx.app.request(path, {
        method,
        headers: { Authorization: `Bearer ${ADMIN_KEY}`, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      await res.body?.cancel();
      return res;
    };
    const counters = { n: { window: { tumbling: "1m" }, aggregate: "count" } };
    const created = [
      await send("PUT", "/v1/streams/made", { counters }),
      await send("POST", "/v1/keys", { scopes: ["read"] }),
      await send("POST", "/v1/webhooks", { url: "http://127.0.0.1:9/hook" }),
    ];
    for (const res of created) {
      assert.equal(res.status, 201);
      const location = res.headers.get("Location")!;
      assert.match(location, /^\/v1\/(streams|keys|webhooks)\/[\w-]+$/);
      const read = await ctx.app.request(location, {
        headers: { Authorization: `Bearer ${ADMIN_KEY}` },
      });
      assert.equal(read.status, 200, location);
      await read.body?.cancel();
    }
    // Replaced, not created: no Location.
    const replaced = await send("PUT", "/v1/streams/made", { counters, description: "again" });
    assert.equal(replaced.status, 200);
    assert.equal(replaced.headers.get("Location"), null);
  } finally {
    await ctx.close();
  }
});
