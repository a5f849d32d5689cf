/**
 * The OpenAPI document as clients and generators read it: every operation
 * named and tagged, the routes that need no key marked so (and really
 * answering without one), and the query conventions described.
 */
import assert from "node:assert/strict";
import { Ajv } from "ajv";
import { ADMIN_KEY, call, setup } from "../fanout/webhooks/_setup.ts";
import { ERROR_CODES } from "../../src/http/errors.ts";
import { DEFAULT_MAX_REFUSED_SOCKETS } from "../../src/http/_drop_socket.ts";
import { testApp } from "../_fixtures.ts";

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/** Routes that answer without a key, in keyed mode too. */
const PUBLIC_ROUTES = ["GET /healthz", "GET /readyz", "GET /openapi.json"];

interface Operation {
  operationId?: string;
  tags?: string[];
  security?: unknown[];
  description?: string;
  parameters?: Array<{ name: string; in: string; [key: string]: unknown }>;
  requestBody?: unknown;
  responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
}

// deno-lint-ignore no-explicit-any
type Document = any;

async function documentOf(): Promise<Document> {
  const ctx = await setup({ auth: true });
  try {
    const res = await call(ctx.app, "GET", "/openapi.json");
    assert.equal(res.status, 200, "the document needs no key");
    return res.body;
  } finally {
    await ctx.close();
  }
}

function operations(doc: Document): Array<[string, Operation]> {
  const out: Array<[string, Operation]> = [];
  for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
    for (const method of METHODS) {
      if (item[method]) out.push([`${method.toUpperCase()} ${path}`, item[method] as Operation]);
    }
  }
  return out;
}

Deno.test("every operation has a unique operationId and tags the document declares", async () => {
  const doc = await documentOf();
  const declared = new Map<string, string>(
    doc.tags.map((tag: { name: string; description: string }) => [tag.name, tag.description]),
  );
  assert.deepEqual(
    [...declared.keys()].sort(),
    ["admin", "health", "ingest", "keys", "live", "meta", "streams", "webhooks"],
  );
  for (const [name, description] of declared) assert.ok(description, `tag ${name} is described`);
  const ops = operations(doc);
  assert.ok(ops.length >= 20, `${ops.length} operations`);
  const ids = new Set<string>();
  const used = new Set<string>();
  for (const [route, operation] of ops) {
    assert.match(operation.operationId ?? "", /^[a-z][A-Za-z]+$/, `${route} has an operationId`);
    assert.ok(!ids.has(operation.operationId!), `${route}: operationId is unique`);
    ids.add(operation.operationId!);
    assert.ok((operation.tags ?? []).length > 0, `${route} has a tag`);
    for (const tag of operation.tags!) {
      assert.ok(declared.has(tag), `${route}: tag ${tag} is declared`);
      used.add(tag);
    }
  }
  assert.deepEqual([...used].sort(), [...declared.keys()].sort(), "every declared tag is used");
});

Deno.test("/healthz, /readyz and /openapi.json say they need no key; every other route needs one", async () => {
  const doc = await documentOf();
  assert.deepEqual(doc.security, [{ bearer: [] }]);
  assert.deepEqual(doc.components.securitySchemes.bearer, { type: "http", scheme: "bearer" });
  const ops = new Map(operations(doc));
  for (const route of PUBLIC_ROUTES) {
    assert.ok(ops.has(route), `${route} is documented`);
    assert.deepEqual(ops.get(route)!.security, [], `${route} has security: []`);
    assert.deepEqual(ops.get(route)!.tags, route === "GET /openapi.json" ? ["meta"] : ["health"]);
  }
  for (const [route, operation] of ops) {
    if (!PUBLIC_ROUTES.includes(route)) {
      assert.equal(operation.security, undefined, `${route} keeps the document's bearer rule`);
    }
  }
  assert.ok(ops.get("GET /healthz")!.responses["200"].content?.["application/json"]);
});

Deno.test("with keys configured, /healthz, /readyz and /openapi.json answer a real request without a key", async () => {
  const ctx = await setup({ auth: true });
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, ctx.app.fetch);
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    const health = await fetch(`${base}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(await health.json(), { status: "ok" });
    const ready = await fetch(`${base}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: "ready", store: "memory" });
    const doc = await fetch(`${base}/openapi.json`);
    assert.equal(doc.status, 200);
    assert.equal((await doc.json()).openapi, "3.1.0");
    const guarded = await fetch(`${base}/v1/streams`);
    assert.equal(guarded.status, 401, "a route with a scope still wants a key");
    await guarded.body?.cancel();
    const keyed = await fetch(`${base}/v1/streams`, {
      headers: { Authorization: `Bearer ${ADMIN_KEY}` },
    });
    assert.equal(keyed.status, 200);
    await keyed.body?.cancel();
  } finally {
    await server.shutdown();
    await ctx.close();
  }
});

Deno.test("both WebSocket routes say, in the same words, that past the bound of refused WebSockets a refused key is answered before the upgrade as plain 401 or 403", async () => {
  const doc = await documentOf();
  const pastBound =
    `while the server holds ${DEFAULT_MAX_REFUSED_SOCKETS} such refused WebSockets (of ingest and subscriptions together), it is answered before the upgrade instead, as plain HTTP: 401 \`unauthorized\` or 403 \`forbidden\` with the error body`;
  const routes = [["/v1/streams/{stream}/ws", "ingest"], [
    "/v1/streams/{stream}/subscribe",
    "read",
  ]];
  for (const [path, scope] of routes) {
    const keyParagraph = (doc.paths[path].get.description as string).split("\n\n")
      .find((paragraph) => paragraph.startsWith("Key: "));
    // Before, the subscription's said only "closes a WebSocket with 1008 ... and answers SSE
    // with 401/403": not that past the bound its WebSocket gets a plain 401 or 403 too.
    assert.ok(keyParagraph?.includes(pastBound), `${path}: ${keyParagraph}`);
    assert.ok(
      keyParagraph!.includes(
        `A refused key (missing, unknown, without \`${scope}\`, or limited to other streams)`,
      ),
      `${path}: ${keyParagraph}`,
    );
    for (const status of ["401", "403"]) assert.ok(doc.paths[path].get.responses[status], path);
  }
});

Deno.test("the windows operations document the group.<field> filter as free-form query parameters", async () => {
  const doc = await documentOf();
  const ops = new Map(operations(doc));
  for (
    const route of [
      "GET /v1/streams/{stream}/counters/{counter}",
      "GET /v1/streams/{stream}/counters/{counter}/current",
    ]
  ) {
    const operation = ops.get(route)!;
    assert.match(operation.description ?? "", /group\.<field>=<value>/, route);
    const group = operation.parameters?.find((parameter) => parameter.name === "group");
    assert.ok(group, `${route} has the group parameter`);
    assert.equal(group.in, "query");
    assert.equal(group.style, "form");
    assert.equal(group.explode, true);
    assert.equal(group.required, false);
    assert.deepEqual(group.schema, {
      type: "object",
      propertyNames: { pattern: "^group\\..+$" },
      additionalProperties: { type: "string" },
    });
    assert.deepEqual(group.example, { "group.country": "DE" });
  }
});

for (
  const [what, values] of [
    ["", { stream: "orders", counter: "per_minute" }],
    // Input before state: the query is refused before what the path names is looked up, on
    // every route alike (`GET /v1/streams/nope/counters/x?bogus=1` is the 400, not the 404).
    [" of a stream and counter that do not exist", { stream: "nope", counter: "x" }],
  ] as const
) {
  Deno.test(`every GET of /v1/…${what} refuses a query parameter its operation does not list: 400 invalid_query naming it and those listed`, async () => {
    const doc = await documentOf();
    const ctx = await setup({ auth: true });
    const known = values.stream === "orders";
    const upgrade = {
      Upgrade: "websocket",
      Connection: "Upgrade",
      "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
      "Sec-WebSocket-Version": "13",
    };
    try {
      const reads = operations(doc).filter(([name]) => name.startsWith("GET /v1/"));
      assert.ok(reads.length >= 12, reads.map(([name]) => name).join(", "));
      for (const [name, operation] of reads) {
        // An id of the form taken, of nothing: the query is refused before it is looked up.
        const id = name.includes("/v1/keys/") ? "key_0123456789abcdef" : "wh_nope";
        const path = name.slice(4).replace(
          /\{(\w+)\}/g,
          (_, param: string) => (values as Record<string, string>)[param] ?? id,
        );
        const listed = (operation.parameters ?? [])
          .filter((parameter) => parameter.in === "query")
          .map((parameter) => parameter.name === "group" ? "group.<field>" : parameter.name);
        // Group filters last, as the message lists them.
        listed.sort((a, b) => Number(a === "group.<field>") - Number(b === "group.<field>"));
        const headers: Record<string, string> = { Authorization: `Bearer ${ADMIN_KEY}` };
        if (path.endsWith("/ws")) Object.assign(headers, upgrade);
        if (path.endsWith("/subscribe")) headers.Accept = "text/event-stream";
        const res = await ctx.app.request(`${path}?unlisted=1`, { headers });
        const body = await res.json();
        assert.equal(res.status, 400, `${name}: ${JSON.stringify(body)}`);
        assert.equal(body.error.code, "invalid_query", name);
        assert.equal(
          body.error.message,
          `Query parameter 'unlisted' is not taken here; this route takes${
            listed.length === 0 ? " none" : `: ${listed.join(", ")}`
          }`,
          name,
        );
        // A HEAD of it is refused alike (its status; a HEAD answer has no body).
        const head = await ctx.app.request(`${path}?unlisted=1`, { method: "HEAD", headers });
        assert.equal(head.status, 400, `${name} as HEAD: ${await head.text()}`);
        // Before the key is looked up too: without one it is the same 400, not a 401.
        const { Authorization: _, ...keyless } = headers;
        const unkeyed = await ctx.app.request(`${path}?unlisted=1`, { headers: keyless });
        assert.equal(unkeyed.status, 400, `${name} without a key: ${await unkeyed.text()}`);
        if (!listed.includes("group.<field>")) {
          // A group filter is a counter read's: elsewhere it is one more name not taken.
          const grouped = await ctx.app.request(`${path}?group.country=DE`, { headers });
          assert.match(await grouped.text(), /Query parameter 'group\.country' is not taken here/);
          assert.equal(grouped.status, 400, name);
        }
        // The cache-buster is taken (and ignored) by each.
        if (!known) continue;
        const busted = await ctx.app.request(`${path}?_=1765097000000`, { headers });
        const type = busted.headers.get("Content-Type") ?? "";
        // A subscription taken streams without end: that it began is the answer.
        const answer = type.startsWith("text/event-stream")
          ? (await busted.body?.cancel(), `${busted.status} ${type}`)
          : await busted.text();
        assert.ok(!answer.includes("invalid_query"), `${name} with _: ${answer}`);
        // The upgrade and the subscription are made: past every check of the query.
        if (path.endsWith("/ws")) assert.equal(busted.status, 101, `${name} with _: ${answer}`);
        if (path.endsWith("/subscribe")) {
          assert.equal(answer, "200 text/event-stream", `${name} with _: ${answer}`);
        }
      }
    } finally {
      await ctx.close();
    }
  });
}

Deno.test("the README's examples of a query parameter a GET does not take are what the API answers", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const ctx = await setup({ auth: true });
  try {
    for (
      const [path, message] of [
        [
          "/v1/streams?limt=10",
          "Query parameter 'limt' is not taken here (did you mean 'limit'?); this route takes: limit, cursor",
        ],
        ["/v1/key?x=1", "Query parameter 'x' is not taken here; this route takes none"],
      ]
    ) {
      const res = await call(ctx.app, "GET", path, undefined, ADMIN_KEY);
      assert.equal(res.status, 400, res.text);
      assert.equal(res.body.error.code, "invalid_query");
      assert.equal(res.body.error.message, message);
      const quoted = message.replace(/^Query parameter 'x'/, "…");
      assert.ok(readme.includes(`\`${quoted}\``), `README quotes ${quoted}`);
      assert.ok(readme.includes(`\`GET ${path}\``), `README names GET ${path}`);
    }
  } finally {
    await ctx.close();
  }
});

Deno.test("the Error schema documents details, which 503 store errors carry", async () => {
  const doc = await documentOf();
  const error = doc.components.schemas.Error.properties.error;
  assert.ok(error.properties.details, "details is in the schema");
  assert.ok(!error.required.includes("details"), "details is optional");
  assert.match(error.properties.details.description, /outcome/);
});

Deno.test("every operation with a request body documents 400, 408, 413 and 415", async () => {
  const withBody = operations(await documentOf()).filter(([, operation]) => operation.requestBody);
  for (const [name, operation] of withBody) {
    for (const status of ["400", "408", "413", "415"]) {
      assert.ok(operation.responses[status], `${name}: ${status}`);
    }
  }
  assert.ok(withBody.length >= 6, `${withBody.length} operations with a body`);
});

Deno.test("the document lists every API route but the ingest preflight and the pages", async () => {
  const doc = await documentOf();
  const listed = operations(doc).map(([name]) => name);
  for (const left of ["GET /", "GET /docs", "GET /sdk.js", "GET /favicon.ico"]) {
    assert.ok(!listed.includes(left), left);
  }
  assert.ok(!listed.some((name) => name.startsWith("OPTIONS ")), JSON.stringify(listed));
  for (
    const route of [
      "POST /v1/streams/{stream}/events",
      "GET /v1/streams/{stream}/ws",
      "GET /v1/streams/{stream}/subscribe",
      "PUT /v1/streams/{stream}",
      "POST /v1/keys",
      "POST /v1/webhooks",
      "POST /v1/admin/sweep",
    ]
  ) assert.ok(listed.includes(route), route);
});

Deno.test("/openapi.json is served as the /docs files are: gzipped when accepted, with a strong ETag and 304", async () => {
  const ctx = await setup({ auth: true });
  try {
    const plain = await ctx.app.request("/openapi.json");
    assert.equal(plain.status, 200);
    assert.equal(plain.headers.get("Content-Type"), "application/json");
    assert.equal(plain.headers.get("Content-Encoding"), null);
    assert.equal(plain.headers.get("Cache-Control"), "no-cache");
    assert.equal(plain.headers.get("Vary"), "Accept-Encoding");
    const etag = plain.headers.get("ETag")!;
    assert.match(etag ?? "", /^"[0-9a-f]{32}"$/);
    const text = await plain.text();
    assert.equal(
      plain.headers.get("Content-Length"),
      String(new TextEncoder().encode(text).length),
    );

    const gzip = await ctx.app.request("/openapi.json", {
      headers: { "Accept-Encoding": "gzip, deflate, br" },
    });
    assert.equal(gzip.status, 200);
    assert.equal(gzip.headers.get("Content-Encoding"), "gzip");
    const gzipEtag = gzip.headers.get("ETag")!;
    assert.equal(gzipEtag, `${etag.slice(0, -1)}-gzip"`, "each encoding has its own ETag");
    const compressed = await gzip.bytes();
    assert.ok(compressed.length < text.length / 3, `gzip: ${compressed.length} of ${text.length}`);
    const unzipped = await new Response(
      new Blob([compressed]).stream().pipeThrough(new DecompressionStream("gzip")),
    ).text();
    assert.equal(unzipped, text, "the same document either way");
    assert.equal(JSON.parse(text).openapi, "3.1.0");

    const refused = await ctx.app.request("/openapi.json", {
      headers: { "Accept-Encoding": "gzip;q=0" },
    });
    assert.equal(refused.headers.get("Content-Encoding"), null);
    assert.equal(await refused.text(), text);

    for (const [tag, encoding] of [[etag, ""], [`W/${etag}`, ""], [gzipEtag, "gzip"]]) {
      const res = await ctx.app.request("/openapi.json", {
        headers: { "If-None-Match": tag, "Accept-Encoding": encoding },
      });
      assert.equal(res.status, 304, tag);
      assert.equal(res.headers.get("ETag"), encoding ? gzipEtag : etag);
      assert.equal(await res.text(), "");
    }
    const stale = await ctx.app.request("/openapi.json", { headers: { "If-None-Match": '"x"' } });
    assert.equal(stale.status, 200);
    assert.equal(await stale.text(), text, "generated once: the same bytes each time");
  } finally {
    await ctx.close();
  }
});

Deno.test("every API operation of the document lists a 400: a query parameter given twice is one on each", async () => {
  const { app } = await testApp();
  const document = await (await app.request("/openapi.json")).json();
  const missing: string[] = [];
  for (
    const [path, item] of Object.entries<Record<string, { responses?: object }>>(document.paths)
  ) {
    if (!path.startsWith("/v1/")) continue;
    for (const [method, operation] of Object.entries(item)) {
      if (!(operation.responses && "400" in operation.responses)) missing.push(`${method} ${path}`);
    }
  }
  assert.deepEqual(missing, []);
  assert.ok(!("400" in document.paths["/healthz"].get.responses));
});

Deno.test("the document references the 421 of open mode from every operation, and a 413 on every operation a body may come with", async () => {
  const { app } = await testApp();
  const document = await (await app.request("/openapi.json")).json();
  assert.match(document.components.responses.HostNotAllowed.description, /421 host_not_allowed/);
  const missing: string[] = [];
  for (const [name, operation] of operations(document)) {
    if (
      (operation.responses["421"] as Document)?.$ref !== "#/components/responses/HostNotAllowed"
    ) {
      missing.push(`${name} lists no 421`);
    }
  }
  for (const [path, item] of Object.entries<Record<string, object>>(document.paths)) {
    for (
      const [method, operation] of Object.entries<{ requestBody?: object; responses?: object }>(
        item,
      )
    ) {
      // Any method but GET: the app refuses a body over 1 MiB before any route reads it.
      if (method !== "get" && !("413" in (operation.responses ?? {}))) {
        missing.push(`${method} ${path}`);
      }
      // A GET has no body to refuse: the runtime drops it (see below).
      if (method === "get" && "413" in (operation.responses ?? {})) {
        missing.push(`${method} ${path} declares a 413 it cannot give`);
      }
    }
  }
  assert.deepEqual(missing, []);
  // Some that take no body (the webhook routes' are checked by openapi_conformance_test.ts).
  for (
    const [path, method] of [
      ["/v1/streams/{stream}", "delete"],
      ["/v1/admin/sweep", "post"],
      ["/v1/keys/{id}", "delete"],
    ]
  ) {
    const declared = document.paths[path][method].responses["413"];
    assert.ok(declared, `${method} ${path}`);
    assert.match(declared.description, /payload_too_large/);
  }
  // Why GET is left out: a Deno Request of GET (or HEAD) cannot hold a body.
  assert.throws(() => new Request("http://localhost/v1/streams", { method: "GET", body: "{}" }));
});

Deno.test("the three operations that create what a deployment bounds declare its 409, naming the code and the setting", async () => {
  const doc = await documentOf();
  const ops = new Map(operations(doc));
  for (
    const [route, code, setting] of [
      ["POST /v1/keys", "too_many_keys", "EDGESTREAM_KEYS_MAX"],
      ["POST /v1/webhooks", "too_many_webhooks", "EDGESTREAM_WEBHOOKS_MAX"],
      ["PUT /v1/streams/{stream}", "too_many_streams", "EDGESTREAM_STREAMS_MAX"],
    ]
  ) {
    const conflict = ops.get(route)?.responses["409"] as { description?: string } | undefined;
    assert.ok(conflict, `${route} declares 409`);
    assert.ok(
      conflict.description?.includes(`\`${code}\` (${setting})`),
      String(conflict.description),
    );
  }
});

Deno.test("a DELETE, which reads no body, documents no 408; every other operation a body may come with does", async () => {
  const doc = await documentOf();
  for (const [name, operation] of operations(doc)) {
    if (name.startsWith("GET ")) continue;
    assert.equal(Boolean(operation.responses["408"]), !name.startsWith("DELETE "), name);
  }
});

Deno.test("the ingest route's 400 documents no_events_accepted's counts and rejected, and its body is required, with an example", async () => {
  const doc = await documentOf();
  const ingest = doc.paths["/v1/streams/{stream}/events"].post;
  const refused = ingest.responses["400"].content["application/json"].schema;
  const schema = doc.components.schemas[refused.$ref.split("/").at(-1)];
  for (const field of ["error", "accepted", "duplicates", "late", "filtered", "rejected"]) {
    assert.ok(schema.properties[field], field);
  }
  assert.deepEqual(schema.required, ["error"]);
  assert.equal(ingest.requestBody.required, true);
  assert.ok(Array.isArray(ingest.requestBody.content["application/json"].schema.example));
});

Deno.test("every stream path parameter takes the same name pattern; the token query parameter is marked deprecated", async () => {
  const doc = await documentOf();
  const patterns = new Set<unknown>();
  let tokens = 0;
  for (const [name, operation] of operations(doc)) {
    for (const parameter of operation.parameters ?? []) {
      if (parameter.in === "path" && parameter.name === "stream") {
        patterns.add((parameter.schema as { pattern?: string }).pattern);
      }
      if (parameter.in === "query" && parameter.name === "token") {
        assert.equal(parameter.deprecated, true, name);
        tokens++;
      }
    }
  }
  assert.deepEqual([...patterns], ["^[A-Za-z0-9_-]{1,64}$"]);
  assert.equal(tokens, 2);
});

Deno.test("the document's path parameter examples name what the quick start's config serves", async () => {
  const doc = await documentOf();
  const config = await quickStartConfig();
  for (const [name, operation] of operations(doc)) {
    const example = (parameter: string) =>
      (operation.parameters ?? []).find((item) => item.in === "path" && item.name === parameter)
        ?.schema as { example?: string } | undefined;
    const stream = example("stream")?.example;
    if (stream === undefined) continue;
    assert.ok(config.streams[stream], `${name}: stream ${stream}`);
    const counter = example("counter")?.example;
    if (counter !== undefined) {
      assert.ok(config.streams[stream].counters[counter], `${name}: counter ${counter}`);
    }
  }
});

Deno.test("a stream definition is typed in the document, from the schema that checks it: its example is taken, a bad one refused by both", async () => {
  const doc = await documentOf();
  const put = doc.paths["/v1/streams/{stream}"].put;
  assert.deepEqual(put.requestBody.content["application/json"].schema, {
    $ref: "#/components/schemas/StreamDefinition",
  });
  const schema = doc.components.schemas.StreamDefinition;
  assert.deepEqual(doc.components.schemas.Stream.properties.definition, {
    $ref: "#/components/schemas/StreamDefinition",
  });
  const ajv = new Ajv({ strict: false });
  const validate = ajv.compile(schema);
  assert.ok(validate(schema.example), ajv.errorsText(validate.errors));
  const bad = { counters: { n: { window: { tumbling: "1m" }, aggregate: "counts" } } };
  assert.equal(validate(bad), false);
  assert.equal(validate({ ...schema.example, extra: 1 }), false);
  // An alert's evaluate: "live" or "close", nothing else.
  const alert = (evaluate: string) => ({
    ...schema.example,
    alerts: [{ name: "quiet", counter: "per_minute", when: "value < 3.0", evaluate }],
  });
  assert.ok(validate(alert("close")), ajv.errorsText(validate.errors));
  assert.ok(validate(alert("live")), ajv.errorsText(validate.errors));
  assert.equal(validate(alert("final")), false);
  const ctx = await setup({ auth: true });
  try {
    assert.equal(
      (await call(ctx.app, "PUT", "/v1/streams/from_example", schema.example, ADMIN_KEY)).status,
      201,
    );
    assert.equal((await call(ctx.app, "PUT", "/v1/streams/other", bad, ADMIN_KEY)).status, 400);
  } finally {
    await ctx.close();
  }
});

Deno.test("the Error schema names every code of ERROR_CODES; the ingest body's events take any field", async () => {
  const doc = await documentOf();
  const code = doc.components.schemas.Error.properties.error.properties.code;
  for (const name of Object.keys(ERROR_CODES)) {
    assert.match(code.description, new RegExp(`\\b${name}\\b`), name);
  }
  const body = doc.paths["/v1/streams/{stream}/events"].post.requestBody.content["application/json"]
    .schema;
  assert.equal(body.oneOf[0].additionalProperties, true);
  assert.equal(body.oneOf[1].items.additionalProperties, true);
});

Deno.test("the text/plain ingest example says what \"Try it out\" on /docs gets: 403 with the keys example's key, which does not list the page's origin; 202 with one that does, or in open mode", async () => {
  const doc = await documentOf();
  const plain = doc.paths["/v1/streams/{stream}/events"].post.requestBody.content["text/plain"]
    .schema;
  assert.match(plain.description, /from a page on one of the key's `origins`/);
  assert.match(plain.description, /open mode/);
  assert.match(
    plain.description,
    /403 `origin_not_allowed` unless the key lists this server's origin too/,
  );
  // As the docs page sends it: from the server's own origin (`app.request`'s is http://localhost).
  const fromDocs = async (app: Awaited<ReturnType<typeof setup>>["app"], key?: string) =>
    await app.request(`/v1/streams/orders/events${key ? `?key=${key}` : ""}`, {
      method: "POST",
      headers: { "Content-Type": "text/plain", Origin: "http://localhost" },
      body: plain.example,
    });
  const keyExample = doc.components.schemas.KeyInput.example;
  const ctx = await quickStartApp();
  try {
    const example = await call(ctx.app, "POST", "/v1/keys", keyExample, ADMIN_KEY);
    assert.equal(example.status, 201, example.text);
    const refused = await fromDocs(ctx.app, example.body.key);
    assert.equal(refused.status, 403);
    assert.equal((await refused.json()).error.code, "origin_not_allowed");
    const listing = await call(ctx.app, "POST", "/v1/keys", {
      ...keyExample,
      origins: [...keyExample.origins, "http://localhost"],
    }, ADMIN_KEY);
    const taken = await fromDocs(ctx.app, listing.body.key);
    assert.equal(taken.status, 202, await taken.clone().text());
    assert.equal((await taken.json()).accepted, 1);
  } finally {
    await ctx.close();
  }
  const open = await setup({ config: await quickStartConfig() });
  try {
    const taken = await fromDocs(open.app);
    assert.equal(taken.status, 202, await taken.clone().text());
  } finally {
    await open.close();
  }
});

/** examples/config.json, the quick start's config. */
async function quickStartConfig() {
  return JSON.parse(
    await Deno.readTextFile(new URL("../../examples/config.json", import.meta.url)),
  );
}

/**
 * A server with the quick start's config and auth, as a README reader runs it; example.com as a
 * public address resolves, so the webhook example's URL is taken as it stands.
 */
async function quickStartApp() {
  return await setup({
    auth: true,
    config: await quickStartConfig(),
    resolve: () => Promise.resolve(["93.184.215.14"]),
  });
}

/** The JSON body (`-d '…'`) of the README's first `curl` whose command line starts so. */
async function readmeBody(command: string): Promise<unknown> {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const start = readme.indexOf(command);
  assert.ok(start >= 0, `the README has no '${command}'`);
  const body = /-d '([^']*)'/.exec(readme.slice(start))!;
  return JSON.parse(body[1]);
}

/**
 * `schema` as openapi-typescript (7, by default: `defaultNonNullable`) types a component: a
 * property with a `default` is required (it skips the rule only for schemas written inline in a
 * request body or parameter, not for those it reaches through a `$ref`).
 */
function withDefaultedRequired(schema: Document): Document {
  if (Array.isArray(schema)) return schema.map(withDefaultedRequired);
  if (schema === null || typeof schema !== "object") return schema;
  const copy: Document = {};
  for (const [name, value] of Object.entries(schema)) copy[name] = withDefaultedRequired(value);
  if (copy.properties && typeof copy.properties === "object") {
    const defaulted = Object.entries<Document>(copy.properties)
      .filter(([, property]) => property && typeof property === "object" && "default" in property)
      .map(([name]) => name);
    if (defaulted.length > 0) {
      copy.required = [...new Set([...(copy.required ?? []), ...defaulted])];
    }
  }
  return copy;
}

Deno.test("the README's POST /v1/keys and PUT /v1/streams bodies fit their request schemas as a generated client types them: what a client may omit carries no default", async () => {
  const doc = await documentOf();
  const ajv = new Ajv({ strict: false });
  const components = withDefaultedRequired(doc.components);
  const cases: Array<[string, string, string]> = [
    ["/v1/keys", "post", "curl -s -X POST localhost:8000/v1/keys"],
    ["/v1/streams/{stream}", "put", "curl -s -X PUT localhost:8000/v1/streams/signups"],
  ];
  for (const [path, method, command] of cases) {
    const schema = doc.paths[path][method].requestBody.content["application/json"].schema;
    const validate = ajv.compile({ ...withDefaultedRequired(schema), components });
    const body = await readmeBody(command);
    assert.ok(validate(body), `${method} ${path}: ${ajv.errorsText(validate.errors)}`);
  }
  // No request schema (body or parameter, through its references) says `default`: a default is
  // the server's, told in the description.
  const reached = new Set<string>();
  const found: string[] = [];
  function visit(node: Document, at: string): void {
    if (Array.isArray(node)) return node.forEach((item, i) => visit(item, `${at}/${i}`));
    if (node === null || typeof node !== "object") return;
    if (typeof node.$ref === "string" && !reached.has(node.$ref)) {
      reached.add(node.$ref);
      const target = node.$ref.slice(2).split("/").reduce(
        (item: Document, key: string) => item?.[key],
        doc,
      );
      visit(target, node.$ref);
    }
    if ("default" in node && at.includes("schema")) found.push(at);
    for (const [key, value] of Object.entries(node)) visit(value, `${at}/${key}`);
  }
  for (const [name, operation] of operations(doc)) {
    visit(operation.requestBody, `${name} requestBody`);
    visit(operation.parameters, `${name} parameters`);
  }
  assert.deepEqual(found, []);
});

Deno.test('the document tells each default the server fills into a stream definition left out, a duration\'s as it is written (`"1h"`), as the README says', async () => {
  const doc = await documentOf();
  const definition = doc.components.schemas.StreamDefinition;
  const counter = definition.properties.counters.additionalProperties;
  // Every field a definition may leave out, but those the server fills nothing into.
  const NO_DEFAULT = new Set([
    "description",
    "time.field",
    "time.idle",
    "dedupe",
    "limits",
    "origins",
    "counters.*.description",
    "alerts[].description",
  ]);
  const untold: string[] = [];
  const told = new Map<string, string>();
  for (
    const [schema, at] of [
      [definition, ""],
      [definition.properties.time, "time."],
      [definition.properties.dedupe, "dedupe."],
      [counter, "counters.*."],
      [definition.properties.alerts.items, "alerts[]."],
      [definition.properties.limits, "limits."],
    ] as const
  ) {
    assert.ok(schema?.properties, `${at}: an object schema`);
    for (const [key, property] of Object.entries<Document>(schema.properties)) {
      if ((schema.required ?? []).includes(key) || NO_DEFAULT.has(at + key)) continue;
      const text = /Default: `[^`]*`/.exec(property.description ?? "")?.[0];
      if (text === undefined) untold.push(at + key);
      else told.set(at + key, text);
    }
  }
  assert.deepEqual(untold, []);
  assert.deepEqual(Object.fromEntries(told), {
    schema: 'Default: `{"type":"object"}`',
    time: "Default: `{}`",
    "time.lateness": 'Default: `"30s"`',
    "time.maxFuture": 'Default: `"5m"`',
    "dedupe.ttl": 'Default: `"24h"`',
    idempotencyTtl: 'Default: `"24h"`',
    transform: "Default: `[]`",
    counters: "Default: `{}`",
    "counters.*.groupBy": "Default: `[]`",
    "counters.*.retention": 'Default: `"1h"`',
    "counters.*.maxGroups": "Default: `1000`",
    "counters.*.maxSessions": "Default: `100000`",
    alerts: "Default: `[]`",
    "alerts[].evaluate": 'Default: `"live"`',
  });
});

Deno.test("every component the document declares is referenced from an operation or a webhook, and its one server is where it is served", async () => {
  const doc = await documentOf();
  const reached = new Set<string>();
  function visit(node: Document): void {
    if (node === null || typeof node !== "object") return;
    if (Array.isArray(node)) return node.forEach(visit);
    if (typeof node.$ref === "string" && !reached.has(node.$ref)) {
      reached.add(node.$ref);
      visit(
        node.$ref.slice(2).split("/").reduce((item: Document, key: string) => item?.[key], doc),
      );
    }
    Object.values(node).forEach(visit);
  }
  visit(doc.paths);
  visit(doc.webhooks);
  const unreferenced: string[] = [];
  for (const [kind, entries] of Object.entries<Record<string, unknown>>(doc.components)) {
    // Security schemes are named by `security`, not referenced.
    if (kind === "securitySchemes") continue;
    for (const name of Object.keys(entries)) {
      if (!reached.has(`#/components/${kind}/${name}`)) unreferenced.push(`${kind}/${name}`);
    }
  }
  assert.deepEqual(unreferenced, []);
  assert.deepEqual(doc.servers, [{ url: "/" }]);
});

Deno.test("a key's scopes, streams and origins with repeats fit the document's KeyInput as the server takes them: repeats are removed before the bounds", async () => {
  const doc = await documentOf();
  const ajv = new Ajv({ strict: false });
  const schema = doc.paths["/v1/keys"].post.requestBody.content["application/json"].schema;
  const validate = ajv.compile({ ...schema, components: doc.components });
  const bodies = [
    // Three scopes, one named twice.
    { scopes: ["admin", "read", "ingest", "read"] },
    // 256 streams and 64 origins, each bound, and one named again.
    {
      scopes: ["read"],
      streams: [...Array.from({ length: 256 }, (_, i) => `s${i}`), "s7"],
      origins: [
        ...Array.from({ length: 64 }, (_, i) => `https://o${i}.example`),
        "https://o7.example",
      ],
    },
  ];
  const ctx = await setup({ auth: true });
  try {
    for (const body of bodies) {
      assert.ok(
        validate(body),
        `the document refuses ${JSON.stringify(body).slice(0, 80)}…: ${
          ajv.errorsText(validate.errors)
        }`,
      );
      const res = await call(ctx.app, "POST", "/v1/keys", body, ADMIN_KEY);
      assert.equal(res.status, 201, res.text.slice(0, 300));
    }
  } finally {
    await ctx.close();
  }
  // maxItems is the raw cap, repeats included, far past the bound of different entries.
  for (const [field, cap] of [["scopes", 16], ["streams", 1024], ["origins", 256]] as const) {
    const property = doc.components.schemas.KeyInput.properties[field];
    assert.equal(property.maxItems, cap, field);
    assert.match(property.description, /[Rr]epeats are removed/, field);
  }
  assert.match(doc.components.schemas.KeyInput.properties.streams.description, /at most 256/);
  assert.match(doc.components.schemas.KeyInput.properties.origins.description, /at most 64/);
});

Deno.test("the If-None-Match the stream PUT and DELETE document takes what the server takes: `*` with empty list elements, nothing else", async () => {
  const doc = await documentOf();
  const ajv = new Ajv({ strict: false });
  const values = [
    "*",
    "*,",
    "*, ",
    ", *, ,",
    "*\t,",
    ",,*",
    '*, "1"',
    '"1"',
    'W/"1"',
    ",",
    "**",
    "* *",
    "",
  ];
  const ctx = await setup({ auth: true });
  try {
    let accepted = 0;
    for (const method of ["put", "delete"] as const) {
      const parameter = doc.paths["/v1/streams/{stream}"][method].parameters.find((
        item: { name: string; in: string },
      ) => item.in === "header" && item.name === "if-none-match");
      const validate = ajv.compile(parameter.schema);
      for (const [i, value] of values.entries()) {
        const res = await ctx.app.request(`/v1/streams/nm_${method}_${i}`, {
          method: method.toUpperCase(),
          headers: {
            Authorization: `Bearer ${ADMIN_KEY}`,
            "Content-Type": "application/json",
            "If-None-Match": value,
          },
          body: method === "put"
            ? JSON.stringify({
              counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
            })
            : undefined,
        });
        await res.body?.cancel();
        // PUT creates (201); DELETE of a stream that does not exist is 404: the header held.
        const taken = res.status !== 400;
        assert.equal(
          res.status,
          taken ? (method === "put" ? 201 : 404) : 400,
          `${method} ${value}`,
        );
        assert.equal(validate(value), taken, `${method} If-None-Match: ${JSON.stringify(value)}`);
        if (taken) accepted++;
      }
    }
    assert.equal(accepted, 12, "six forms of `*`, on PUT and DELETE");
  } finally {
    await ctx.close();
  }
});

Deno.test("the If-None-Match a webhook endpoint's PATCH, DELETE and rotate-secret document takes what the server takes: `*` with empty list elements, nothing else", async () => {
  const doc = await documentOf();
  const ajv = new Ajv({ strict: false });
  const values = ["*", "*,", ", *, ,", "*\t,", '*, "1"', '"1"', 'W/"1"', ",", "**", ""];
  const ctx = await setup({ auth: true });
  try {
    let accepted = 0;
    for (
      const [path, method] of [
        ["/v1/webhooks/{id}", "patch"],
        ["/v1/webhooks/{id}", "delete"],
        ["/v1/webhooks/{id}/rotate-secret", "post"],
      ] as const
    ) {
      const parameter = doc.paths[path][method].parameters.find((
        item: { name: string; in: string },
      ) => item.in === "header" && item.name === "if-none-match");
      const validate = ajv.compile(parameter.schema);
      for (const value of values) {
        const res = await ctx.app.request(path.replace("{id}", "ep_none"), {
          method: method.toUpperCase(),
          headers: {
            Authorization: `Bearer ${ADMIN_KEY}`,
            "Content-Type": "application/json",
            "If-None-Match": value,
          },
          body: method === "patch" ? "{}" : undefined,
        });
        await res.body?.cancel();
        // An endpoint that does not exist: the header held, so 404.
        const taken = res.status !== 400;
        assert.equal(res.status, taken ? 404 : 400, `${method} ${value}`);
        assert.equal(validate(value), taken, `${method} If-None-Match: ${JSON.stringify(value)}`);
        if (taken) accepted++;
      }
    }
    assert.equal(accepted, 12, "four forms of `*`, on PATCH, DELETE and rotate-secret");
  } finally {
    await ctx.close();
  }
});

Deno.test("the document's maxItems of a key's and a webhook's lists is the server's cap of entries as sent, repeats included: at it the server takes the list, one past it is 400 naming the field", async () => {
  const doc = await documentOf();
  const schemas = doc.components.schemas;
  const ctx = await setup({
    auth: true,
    config: {
      streams: Object.fromEntries(
        Array.from({ length: 256 }, (_, i) => [
          `s${i}`,
          { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } },
        ]),
      ),
    },
  });
  try {
    const created = await call(
      ctx.app,
      "POST",
      "/v1/webhooks",
      { url: "http://127.0.0.1:9/h" },
      ADMIN_KEY,
    );
    assert.equal(created.status, 201, created.text);
    const webhook = `/v1/webhooks/${created.body.id}`;
    const streams = (length: number) => Array.from({ length }, (_, i) => `s${i % 256}`);
    const cases: Array<[number | undefined, string, string, string, (length: number) => unknown]> =
      [
        [schemas.KeyInput.properties.scopes.maxItems, "POST", "/v1/keys", "scopes", (length) => ({
          scopes: Array.from({ length }, () => "read"),
        })],
        [schemas.KeyInput.properties.streams.maxItems, "POST", "/v1/keys", "streams", (length) => ({
          scopes: ["read"],
          streams: streams(length),
        })],
        [schemas.KeyInput.properties.origins.maxItems, "POST", "/v1/keys", "origins", (length) => ({
          scopes: ["read"],
          origins: Array.from({ length }, (_, i) => `https://o${i % 64}.example`),
        })],
        [
          schemas.WebhookInput.properties.streams.maxItems,
          "POST",
          "/v1/webhooks",
          "streams",
          (length) => ({
            url: "http://127.0.0.1:9/h",
            streams: streams(length),
          }),
        ],
        [
          schemas.WebhookInput.properties.eventTypes.maxItems,
          "POST",
          "/v1/webhooks",
          "eventTypes",
          (length) => ({
            url: "http://127.0.0.1:9/h",
            eventTypes: Array.from({ length }, () => "window.closed"),
          }),
        ],
        [
          schemas.WebhookPatch.properties.streams.maxItems,
          "PATCH",
          webhook,
          "streams",
          (length) => ({
            streams: streams(length),
          }),
        ],
        [
          schemas.WebhookPatch.properties.eventTypes.maxItems,
          "PATCH",
          webhook,
          "eventTypes",
          (length) => ({
            eventTypes: Array.from({ length }, () => "window.closed"),
          }),
        ],
        [
          schemas.WebhookBatch.properties.eventTypes.maxItems,
          "PATCH",
          webhook,
          "batch.eventTypes",
          (length) => ({
            eventTypes: ["window.closed"],
            batch: { maxEvents: 10, eventTypes: Array.from({ length }, () => "window.closed") },
          }),
        ],
      ];
    for (const [cap, method, path, field, body] of cases) {
      assert.equal(
        typeof cap,
        "number",
        `${method} ${path} ${field}: the document states maxItems`,
      );
      const at = await call(ctx.app, method, path, body(cap!), ADMIN_KEY);
      assert.ok(
        at.status === 200 || at.status === 201,
        `${method} ${path} ${field} at ${cap}: ${at.text.slice(0, 300)}`,
      );
      const past = await call(ctx.app, method, path, body(cap! + 1), ADMIN_KEY);
      assert.equal(past.status, 400, `${method} ${path} ${field} past ${cap}`);
      assert.equal(past.body.error.code, "invalid_request");
      assert.match(
        past.body.error.message,
        new RegExp(`^Invalid request body ${field.replace(".", "\\.")}: Too big`),
      );
    }
  } finally {
    await ctx.close();
  }
});

Deno.test("the WebSocket ingest's 101 declares no Vary (an upgrade carries none); its other answers declare Vary: Origin", async () => {
  const doc = await documentOf();
  const responses = (doc.paths as Record<string, Record<string, Operation>>)[
    "/v1/streams/{stream}/ws"
  ].get.responses as Record<string, { $ref?: string; headers?: Record<string, unknown> }>;
  assert.ok(responses["101"], "the upgrade is documented");
  // Before, every answer of the operation declared it, the 101 too.
  assert.equal(responses["101"].headers?.Vary, undefined);
  // Those written out here (a shared component, as open mode's 421, declares its own headers).
  const others = Object.entries(responses).filter(([status, response]) =>
    status !== "101" && response.$ref === undefined
  );
  assert.ok(others.length >= 3, JSON.stringify(Object.keys(responses)));
  for (const [status, response] of others) assert.ok(response.headers?.Vary, status);
});

Deno.test("every operation with a request body has a whole-body example of each media type it takes, and a server with the quick start's config takes each: the webhook registered is WebhookInput's example, and WebhookPatch's changes only the fields it names", async () => {
  // Swagger UI's "Try it out" sends the media type's or schema's own example when there is one;
  // without it, one it builds from the fields (random names, `additionalProp1`, `true`s) or the
  // text "string", which the server refuses.
  const doc = await documentOf();
  const schemaOf = (schema: { $ref?: string; example?: unknown }) =>
    schema.$ref ? doc.components.schemas[schema.$ref.split("/").at(-1)!] : schema;
  const ctx = await quickStartApp();
  try {
    // Collections before their members (the ids a POST made fill the members' `{id}`), keys
    // before ingest (its text/plain body comes with the publishable key the keys example makes).
    const withBody = operations(doc).filter(([, operation]) => operation.requestBody)
      .sort(([a], [b]) => a.split("/").length - b.split("/").length);
    const made = new Map<string, string>();
    let publishable: string | undefined;
    let webhook: Record<string, unknown> | undefined;
    const sent: string[] = [];
    for (const [name, operation] of withBody) {
      const [method, template] = name.split(" ");
      const path = template.replace(/\{(\w+)\}/g, (_, parameter: string) => {
        const declared = (operation.parameters ?? []).find((item) =>
          item.in === "path" && item.name === parameter
        ) as { example?: string; schema?: { example?: string } } | undefined;
        const value = made.get(template.slice(0, template.indexOf(`/{${parameter}}`))) ??
          declared?.example ?? declared?.schema?.example;
        assert.ok(value, `${name}: no value for {${parameter}}`);
        return encodeURIComponent(value);
      });
      const content = (operation.requestBody as {
        content: Record<
          string,
          { example?: unknown; schema: { $ref?: string; example?: unknown } }
        >;
      }).content;
      for (const [mediaType, media] of Object.entries(content)) {
        const example = media.example ?? schemaOf(media.schema).example;
        assert.ok(example !== undefined, `${name} ${mediaType}: no example`);
        const headers: Record<string, string> = { "Content-Type": mediaType };
        let target = path;
        if (mediaType === "text/plain") {
          // JSON as text/plain: a publishable key's beacon, from one of its origins.
          assert.ok(publishable, `${name}: no publishable key made before it`);
          target = `${path}?key=${publishable}`;
          headers.Origin = "https://shop.example";
        } else {
          headers.Authorization = `Bearer ${ADMIN_KEY}`;
        }
        const res = await ctx.app.request(target, {
          method,
          headers,
          body: typeof example === "string" ? example : JSON.stringify(example),
        });
        const text = await res.text();
        assert.ok(res.ok, `${name} ${mediaType}: ${res.status} ${text}`);
        const reply = text ? JSON.parse(text) : null;
        if (reply && typeof reply.accepted === "number") {
          assert.ok(reply.accepted > 0, `${name} ${mediaType}: ${text}`);
          assert.deepEqual(reply.rejected ?? [], [], `${name} ${mediaType}`);
        }
        if (name === "POST /v1/webhooks") {
          // The webhook registered is WebhookInput's example, as it stands.
          assert.deepEqual(media.schema, { $ref: "#/components/schemas/WebhookInput" });
          const input = example as { url: string; streams: string[] };
          assert.equal(reply.url, input.url);
          assert.deepEqual(reply.streams, input.streams);
          assert.equal(reply.disabled, false);
          webhook = reply;
        }
        if (name === "PATCH /v1/webhooks/{id}") {
          // WebhookPatch's example of a few fields changes those only.
          assert.deepEqual(media.schema, { $ref: "#/components/schemas/WebhookPatch" });
          assert.ok(webhook, `${name}: no webhook registered before it`);
          assert.deepEqual(
            { ...webhook, secret: undefined, updatedAt: undefined, ...(example as object) },
            { ...reply, secret: undefined, updatedAt: undefined },
          );
        }
        if (method === "POST" && typeof reply?.id === "string") made.set(template, reply.id);
        if (typeof reply?.key === "string" && reply.key.startsWith("pk_")) publishable = reply.key;
        sent.push(`${name} ${mediaType}`);
      }
    }
    // Every operation the document gives a body today was walked.
    for (
      const expected of [
        "POST /v1/streams/{stream}/events application/json",
        "POST /v1/streams/{stream}/events application/x-ndjson",
        "POST /v1/streams/{stream}/events application/ndjson",
        "POST /v1/streams/{stream}/events text/plain",
        "PUT /v1/streams/{stream} application/json",
        "POST /v1/webhooks application/json",
        "PATCH /v1/webhooks/{id} application/json",
        "POST /v1/webhooks/{id}/replay application/json",
        "POST /v1/keys application/json",
      ]
    ) assert.ok(sent.includes(expected), `${expected} not sent; sent: ${sent.join(", ")}`);
  } finally {
    await ctx.close();
  }
});
