/**
 * `PUT` and `DELETE /v1/streams/{stream}` through the app: created and
 * replaced streams, the error envelope for every refusal, config streams
 * read-only, counters that may not change, and a re-created stream that
 * starts empty.
 */
import assert from "node:assert/strict";
import { Ajv } from "ajv";
import { RE2JS } from "re2js";
import { createApp } from "../../src/app.ts";
import {
  compileConfig,
  type CompileOptions,
  compileStreamDefinition,
  counterIdentities,
  StreamRegistry,
} from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import {
  type DefinitionStore,
  MemoryDefinitionStore,
  MemoryStore,
  RedisDefinitionStore,
  RedisStore,
  type Store,
  StoreUnavailableError,
} from "../../src/store/mod.ts";
import { MemoryKeyStore } from "../../src/store/memory/key_store.ts";
import { patternCompileSize } from "../../src/validate/mod.ts";
import { collectingLogs, messageOf } from "../_logs.ts";
import { redisTest, restClient } from "../_redis.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const ADMIN = "admin-key-0123456789";
const READ = "read-key-01234567890";
const INGEST = "ingest-key-0123456789";

const CONFIG = {
  streams: {
    orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } },
  },
};

const SIGNUPS = {
  description: "Sign-ups",
  time: { field: "t" },
  counters: { perMinute: { window: { tumbling: "1m" }, groupBy: ["plan"], aggregate: "count" } },
};

async function appWith(options: { keyed?: boolean } = {}) {
  const keys = await KeyRing.parse(
    options.keyed ? `admin:${ADMIN},read:${READ},ingest:${INGEST}` : "",
  );
  return createApp({
    streams: compileConfig(CONFIG),
    store: new MemoryStore({ now: () => T0 }),
    keys,
    now: () => T0,
  });
}

type App = Awaited<ReturnType<typeof appWith>>;

/**
 * An app whose definition store holds `definition` as `name`, written by a release that took it
 * (compiled with `options`), as an earlier release would have left it.
 */
async function appStoring(name: string, definition: unknown, options: CompileOptions) {
  const definitions = new MemoryDefinitionStore();
  const compiled = compileStreamDefinition(name, definition, options);
  const written = await definitions.write(name, {
    source: "api",
    generation: 1,
    definition,
    counters: counterIdentities(compiled),
    deleted: false,
  }, 0);
  assert.equal(written.status, "written");
  return createApp({
    streams: new StreamRegistry(compileConfig(CONFIG), { definitions, now: () => T0, pollMs: 0 }),
    store: new MemoryStore({ now: () => T0 }),
    keys: await KeyRing.parse(""),
    now: () => T0,
  });
}

function put(app: App, name: string, body: unknown, headers: Record<string, string> = {}) {
  return app.request(`/v1/streams/${name}`, {
    method: "PUT",
    headers: { "Content-Type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

function ingest(app: App, name: string, events: unknown[]) {
  return app.request(`/v1/streams/${name}/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(events),
  });
}

async function errorOf(response: Response): Promise<{ code: string; message: string }> {
  return (await response.json()).error;
}

Deno.test("PUT /v1/streams/{stream} creates a stream (201) that ingests and reads like a config one", async () => {
  const app = await appWith();
  const created = await put(app, "signups", SIGNUPS);
  assert.equal(created.status, 201);
  const body = await created.json();
  assert.equal(body.name, "signups");
  assert.equal(body.source, "api");
  assert.equal(body.version, 1);
  assert.deepEqual(body.definition, SIGNUPS);
  assert.deepEqual(body.counters, ["perMinute"]);

  const t = new Date(T0 - 1_000).toISOString();
  assert.equal(
    (await ingest(app, "signups", [{ t, plan: "pro" }, { t, plan: "pro" }])).status,
    202,
  );
  const windows = await (await app.request(
    `/v1/streams/signups/counters/perMinute?from=${T0 - 60_000}&to=${T0}`,
  )).json();
  assert.deepEqual(windows.windows.map((row: { value: number }) => row.value), [2]);

  const listed = await (await app.request("/v1/streams")).json();
  assert.deepEqual(
    listed.streams.map((item: { name: string; source: string }) => [item.name, item.source]),
    [["orders", "config"], ["signups", "api"]],
  );
  const got = await (await app.request("/v1/streams/signups")).json();
  assert.equal(got.version, 1);
  assert.equal(got.stats.applied, 2);
});

Deno.test("the README's PUT of signups: 201, and its reply has the fields the README's comment shows, in order", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const example = readme.match(
    /curl -s -X PUT localhost:8000\/v1\/streams\/signups \\\n.*\n\s+-d '([^']+)'\n((?:# .*\n)+)/,
  );
  assert.ok(example, "the README shows a PUT of signups with its reply");
  const [, body, comment] = example;
  const shown = comment.replace(/^#\s+/gm, "").replaceAll("\n", "");
  const app = await appWith();
  const created = await put(app, "signups", body);
  assert.equal(created.status, 201);
  const reply = await created.json();
  // The comment elides values with …; its keys are the reply's, in the reply's order.
  const shownKeys = [...shown.matchAll(/"(\w+)":/g)].map((key) => key[1]);
  assert.deepEqual(Object.keys(reply), shownKeys);
  assert.match(shown, new RegExp(`"version":${reply.version},"servable":${reply.servable},`));
  assert.deepEqual(reply.counters, ["per_minute"]);
});

Deno.test("a lateness lowered by PUT applies at once: an event behind the watermark by more than the new one is late", async () => {
  const app = await appWith();
  const define = async (lateness: string) => {
    const res = await put(app, "signups", { ...SIGNUPS, time: { field: "t", lateness } });
    assert.ok(res.status === 200 || res.status === 201, await res.text());
  };
  // How many of one event at t are late (acknowledged, not counted).
  const late = async (t: number) => {
    const res = await ingest(app, "signups", [{ t, plan: "pro" }]);
    assert.equal(res.status, 202);
    return (await res.json()).late;
  };
  const mark = T0 - 60_000;
  await define("1h");
  assert.equal(await late(mark), 0);
  // 10 minutes behind the watermark: within an hour's lateness.
  assert.equal(await late(mark - 600_000), 0);
  await define("5m");
  // The very next request, as far behind: late under the 5 minutes now in force.
  assert.equal(await late(mark - 600_000), 1);
  assert.equal(await late(mark - 240_000), 0);
});

Deno.test("PUT /v1/streams/{stream} replaces a stream (200, a new version) adding counters, transforms and alerts", async () => {
  const app = await appWith();
  await put(app, "signups", SIGNUPS);
  const next = {
    ...SIGNUPS,
    time: { field: "t", lateness: "2m" },
    transform: [{ filter: "event.plan != 'test'" }],
    counters: {
      ...SIGNUPS.counters,
      perHour: { window: { tumbling: "1h" }, aggregate: "count", retention: "2h" },
    },
    alerts: [{ name: "busy", counter: "perMinute", when: "value > 100" }],
  };
  const replaced = await put(app, "signups", next);
  assert.equal(replaced.status, 200);
  const body = await replaced.json();
  assert.equal(body.version, 2);
  assert.deepEqual(body.counters, ["perMinute", "perHour"]);

  // Removing a counter is allowed too, and so is a new retention.
  const fewer = await put(app, "signups", {
    ...SIGNUPS,
    counters: {
      perHour: { window: { tumbling: "1h" }, aggregate: "count", retention: "3h", maxGroups: 50 },
    },
  });
  assert.equal(fewer.status, 200);
  assert.equal((await fewer.json()).version, 3);
});

Deno.test("PUT /v1/streams/{stream} refuses a counter removed and added again with another meaning", async () => {
  const app = await appWith();
  await put(app, "signups", SIGNUPS);
  const event = { t: "2026-01-01T00:00:00Z", plan: "pro", v: 100 };
  for (let i = 0; i < 5; i++) assert.equal((await ingest(app, "signups", [event])).status, 202);
  assert.equal((await put(app, "signups", { ...SIGNUPS, counters: {} })).status, 200);
  // Read under the new meaning, the five counted before would make this average 100/6.
  const avg = { window: { tumbling: "1m" }, groupBy: ["plan"], aggregate: { avg: "v" } };
  const refused = await put(app, "signups", { ...SIGNUPS, counters: { perMinute: avg } });
  assert.equal(refused.status, 409);
  const error = await errorOf(refused);
  assert.equal(error.code, "counter_changed");
  assert.match(
    error.message,
    /^Stream 'signups' had a counter 'perMinute' with another window, aggregate or groupBy before it was removed \(stored: .*"count".*, now: .*"avg".*\); .*under a new name$/,
  );
  // Added again as it was, it reads its data again; a new name is a new counter.
  assert.equal((await put(app, "signups", SIGNUPS)).status, 200);
  const current = await app.request("/v1/streams/signups/counters/perMinute/current");
  assert.deepEqual((await current.json()).windows.map((row: { value: number }) => row.value), [5]);
  const renamed = await put(app, "signups", { ...SIGNUPS, counters: { meanV: avg } });
  assert.equal(renamed.status, 200);
  // A stream deleted and created again starts over: the name is free.
  assert.equal((await app.request("/v1/streams/signups", { method: "DELETE" })).status, 204);
  assert.equal(
    (await put(app, "signups", { ...SIGNUPS, counters: { perMinute: avg } })).status,
    201,
  );
});

Deno.test("PUT /v1/streams/{stream} refuses a changed counter with 409 counter_changed and changes nothing", async () => {
  const app = await appWith();
  await put(app, "signups", SIGNUPS);
  for (
    const counter of [
      { window: { tumbling: "5m" }, groupBy: ["plan"], aggregate: "count" },
      { window: { tumbling: "1m" }, groupBy: ["plan"], aggregate: { sum: "amount" } },
      { window: { tumbling: "1m" }, groupBy: [], aggregate: "count" },
    ]
  ) {
    const refused = await put(app, "signups", { ...SIGNUPS, counters: { perMinute: counter } });
    assert.equal(refused.status, 409);
    const error = await errorOf(refused);
    assert.equal(error.code, "counter_changed");
    assert.match(error.message, /counter 'perMinute'.*add a new counter instead$/);
  }
  const got = await (await app.request("/v1/streams/signups")).json();
  assert.equal(got.version, 1);
  // The same window written another way is the same counter.
  const same = await put(app, "signups", {
    ...SIGNUPS,
    counters: { perMinute: { window: { tumbling: "60s" }, groupBy: ["plan"], aggregate: "count" } },
  });
  assert.equal(same.status, 200);
});

Deno.test("PUT /v1/streams/{stream} answers bad JSON, a bad definition and a bad Content-Type with the error envelope", async () => {
  const app = await appWith();
  const badJson = await put(app, "signups", "{");
  assert.equal(badJson.status, 400);
  assert.equal((await errorOf(badJson)).code, "invalid_json");
  for (const body of ["", "  "]) {
    const empty = await put(app, "signups", body);
    assert.equal(empty.status, 400);
    assert.equal((await errorOf(empty)).code, "empty_body");
  }

  const invalid = await put(app, "signups", {
    counters: { n: { window: { tumbling: "5x" }, aggregate: "count" } },
  });
  assert.equal(invalid.status, 400);
  const error = await errorOf(invalid);
  assert.equal(error.code, "invalid_definition");
  assert.match(
    error.message,
    /^Invalid stream definition: counters\.n\.window\.tumbling: Cannot read duration '5x'/,
  );

  // A key in the wrong case, as a newcomer writes it: the one meant is named.
  const misnamed = await put(app, "signups", {
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count", groupby: ["country"] } },
  });
  assert.equal(misnamed.status, 400);
  assert.deepEqual(await errorOf(misnamed), {
    code: "invalid_definition",
    message:
      'Invalid stream definition: counters.n: Unrecognized key: "groupby" (did you mean "groupBy"?)',
    requestId: misnamed.headers.get("X-Request-Id"),
  });

  // A config file's shape, pasted as it is: the body is what it wraps.
  const definition = {
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  for (
    const [body, wrapper, problem] of [
      [{ streams: { signups: definition } }, "streams", 'Unrecognized key: "streams"'],
      [{ signups: definition }, "signups", 'Unrecognized key: "signups"'],
    ] as const
  ) {
    const wrapped = await put(app, "signups", body);
    assert.equal(wrapped.status, 400);
    assert.deepEqual(await errorOf(wrapped), {
      code: "invalid_definition",
      message:
        `Invalid stream definition: (root): ${problem}; the body is one stream's definition, what a config file's streams.signups holds, not wrapped in {"${wrapper}": …}`,
      requestId: wrapped.headers.get("X-Request-Id"),
    });
  }
  // A stream named as a definition's key takes that key as a definition's.
  const named = await put(app, "counters", { counters: { nope: 1 } });
  assert.equal(named.status, 400);
  assert.ok(!(await errorOf(named)).message.includes("wrapped"));
  assert.equal((await app.request("/v1/streams/signups")).status, 404);

  // A key given twice (JSON keeps the last: the first counters would go without a word).
  const twice = await put(
    app,
    "signups",
    `{"counters": {"n": {"window": {"tumbling": "1m"}, "aggregate": "count"}}, "counters": {}}`,
  );
  assert.equal(twice.status, 400);
  assert.deepEqual(await errorOf(twice), {
    code: "invalid_definition",
    message:
      "Invalid stream definition: counters: key 'counters' is given twice in one object (JSON would keep only the last); remove or rename one",
    requestId: twice.headers.get("X-Request-Id"),
  });
  assert.equal((await app.request("/v1/streams/signups")).status, 404);

  // A schema keyword of the wrong kind names its path, and nothing is stored.
  const malformed = await put(app, "signups", {
    schema: { type: "object", properties: { n: { minimum: "x" } } },
  });
  assert.equal(malformed.status, 400);
  const malformedError = await errorOf(malformed);
  assert.equal(malformedError.code, "invalid_definition");
  assert.match(
    malformedError.message,
    /schema: Cannot compile event schema: properties\.n\.minimum: expected a number, got "x"$/,
  );
  assert.equal((await app.request("/v1/streams/signups")).status, 404);

  // A default of 1e400 is Infinity, which was filled in as null: refused, naming its path.
  const infinite = await put(
    app,
    "signups",
    `{"schema": {"type": "object", "properties": {"n": {"type": "number", "default": 1e400}}}}`,
  );
  assert.equal(infinite.status, 400);
  const infiniteError = await errorOf(infinite);
  assert.equal(infiniteError.code, "invalid_definition");
  assert.match(
    infiniteError.message,
    /schema: Cannot compile event schema: properties\.n\.default: expected a number within the double range, got Infinity/,
  );
  assert.equal((await app.request("/v1/streams/signups")).status, 404);

  // A format zod does not know checked nothing: refused, naming its path and the known ones.
  const misspelt = await put(app, "signups", {
    schema: { type: "object", properties: { contact: { type: "string", format: "emial" } } },
  });
  assert.equal(misspelt.status, 400);
  const misspeltError = await errorOf(misspelt);
  assert.equal(misspeltError.code, "invalid_definition");
  assert.match(
    misspeltError.message,
    /schema: Cannot compile event schema: properties\.contact\.format: expected a known format \(date-time, .*email.*\), got "emial"$/,
  );
  assert.equal((await app.request("/v1/streams/signups")).status, 404);

  // Slower than one event in 1,000 s: on Redis every ingest of the stream answered 500.
  const slow = await put(app, "signups", {
    limits: { eventsPerSecond: 1e-14, burst: 1 },
    counters: {},
  });
  assert.equal(slow.status, 400);
  assert.match((await errorOf(slow)).message, /limits\.eventsPerSecond/);

  // The body itself is the root, not the config file's streams.signups.
  for (const body of ["null", "[]", '"x"']) {
    const notObject = await put(app, "signups", body);
    assert.equal(notObject.status, 400, body);
    assert.match((await errorOf(notObject)).message, /^Invalid stream definition: \(root\): /);
  }

  const unknownField = await put(app, "signups", { countres: {} });
  assert.equal(unknownField.status, 400);
  assert.match((await errorOf(unknownField)).message, /countres/);

  const badAlert = await put(app, "signups", {
    counters: {},
    alerts: [{ name: "a", counter: "missing", when: "value > 1" }],
  });
  assert.equal(badAlert.status, 400);
  assert.match((await errorOf(badAlert)).message, /alerts\[0\]\.counter: No counter 'missing'/);

  const text = await put(app, "signups", JSON.stringify(SIGNUPS), { "Content-Type": "text/plain" });
  assert.equal(text.status, 415);

  const badName = await put(app, "bad.name", SIGNUPS);
  assert.equal(badName.status, 400);
  // Nothing was created by any of them.
  assert.equal((await app.request("/v1/streams/signups")).status, 404);
});

Deno.test("PUT /v1/streams/{stream} of the stream as GET answers it (the edit-and-send-back of an If-Match) is 400 invalid_definition saying to send its definition, and changes nothing", async () => {
  const app = await appWith();
  assert.equal((await put(app, "signups", SIGNUPS)).status, 201);
  const read = await app.request("/v1/streams/signups");
  const etag = read.headers.get("ETag")!;
  const stream = await read.json();
  // The reply edited as an admin would, then sent back whole with its tag; or its definition
  // sent wrapped in the reply's field name.
  const edited = { ...stream, definition: { ...stream.definition, description: "edited" } };
  for (const body of [edited, { definition: edited.definition }]) {
    const refused = await put(app, "signups", body, { "If-Match": etag });
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.equal(error.code, "invalid_definition");
    assert.match(error.message, /^Invalid stream definition: /);
    assert.ok(
      error.message.endsWith(
        `; the body is one stream's definition, not the stream as GET /v1/streams/signups answers it: send what its "definition" holds`,
      ),
      error.message,
    );
  }
  const after = await app.request("/v1/streams/signups");
  assert.equal(after.headers.get("ETag"), etag);
  assert.equal((await after.json()).definition.description, SIGNUPS.description);
  // What the reply's "definition" holds, sent with the tag, is the change.
  const changed = await put(app, "signups", edited.definition, { "If-Match": etag });
  assert.equal(changed.status, 200);
  assert.equal((await changed.json()).definition.description, "edited");
  // A definition that takes no such key is not told about one it lacks, nor one whose
  // "definition" holds no definition.
  for (const body of [{ counters: [] }, { ...SIGNUPS, definition: "v2" }]) {
    const plain = await put(app, "signups", body);
    assert.equal(plain.status, 400);
    assert.ok(!(await errorOf(plain)).message.includes("GET /v1/streams"));
  }
});

Deno.test("PUT and DELETE /v1/streams/{stream} need the admin scope", async () => {
  const app = await appWith({ keyed: true });
  const anonymous = await put(app, "signups", SIGNUPS);
  assert.equal(anonymous.status, 401);
  const reader = await put(app, "signups", SIGNUPS, { Authorization: `Bearer ${READ}` });
  assert.equal(reader.status, 403);
  const refused = await errorOf(reader);
  assert.equal(refused.code, "forbidden");
  assert.match(refused.message, /lacks the 'admin' scope/);
  for (const key of [READ, INGEST]) {
    const deleted = await app.request("/v1/streams/signups", {
      method: "DELETE",
      headers: { Authorization: `Bearer ${key}` },
    });
    assert.equal(deleted.status, 403);
    // Not "lacks the 'read' scope", which an ingest key lacks too.
    assert.match((await errorOf(deleted)).message, /lacks the 'admin' scope/);
  }
  const admin = await put(app, "signups", SIGNUPS, { Authorization: `Bearer ${ADMIN}` });
  assert.equal(admin.status, 201);
});

Deno.test("Config-file streams are read-only through the API: PUT and DELETE answer 409 stream_from_config", async () => {
  const app = await appWith();
  const replaced = await put(app, "orders", SIGNUPS);
  assert.equal(replaced.status, 409);
  assert.equal((await errorOf(replaced)).code, "stream_from_config");
  const deleted = await app.request("/v1/streams/orders", { method: "DELETE" });
  assert.equal(deleted.status, 409);
  assert.equal((await errorOf(deleted)).code, "stream_from_config");
  const got = await (await app.request("/v1/streams/orders")).json();
  assert.equal(got.source, "config");
  assert.deepEqual(got.counters, ["n"]);
});

Deno.test("DELETE /v1/streams/{stream} answers 204, then the stream is gone; an unknown one is 404", async () => {
  const app = await appWith();
  await put(app, "signups", SIGNUPS);
  const deleted = await app.request("/v1/streams/signups", { method: "DELETE" });
  assert.equal(deleted.status, 204);
  const read = await app.request("/v1/streams/signups");
  assert.equal(read.status, 404);
  // Not "not configured": it was never in the config file.
  assert.equal((await errorOf(read)).message, "Stream 'signups' does not exist");
  const t = new Date(T0).toISOString();
  const sent = await ingest(app, "signups", [{ t, plan: "pro" }]);
  assert.equal(sent.status, 404);
  assert.equal((await errorOf(sent)).message, "Stream 'signups' does not exist");
  const again = await app.request("/v1/streams/signups", { method: "DELETE" });
  assert.equal(again.status, 404);
  assert.equal((await errorOf(again)).code, "stream_not_found");
});

Deno.test("a key limited to a stream not created yet is made (its names are not checked) and ingests into it once it is", async () => {
  const keys = await KeyRing.parse(`admin:${ADMIN}`, {
    store: new MemoryKeyStore(),
    now: () => T0,
  });
  const app = createApp({
    streams: compileConfig(CONFIG),
    store: new MemoryStore({ now: () => T0 }),
    keys,
    now: () => T0,
  });
  const admin = { Authorization: `Bearer ${ADMIN}`, "Content-Type": "application/json" };
  const created = await app.request("/v1/keys", {
    method: "POST",
    headers: admin,
    body: JSON.stringify({ scopes: ["ingest"], streams: ["signups"] }),
  });
  assert.equal(created.status, 201, await created.clone().text());
  const { key, streams } = await created.json();
  assert.deepEqual(streams, ["signups"]);
  const t = new Date(T0).toISOString();
  const send = () =>
    app.request("/v1/streams/signups/events", {
      method: "POST",
      headers: { Authorization: `Bearer ${key}`, "Content-Type": "application/json" },
      body: JSON.stringify([{ t, plan: "pro" }]),
    });
  assert.equal((await send()).status, 404);
  assert.equal(
    (await put(app, "signups", SIGNUPS, { Authorization: `Bearer ${ADMIN}` })).status,
    201,
  );
  const sent = await send();
  assert.equal(sent.status, 202, await sent.clone().text());
  assert.equal((await sent.json()).accepted, 1);
});

Deno.test("A stream deleted and created again starts empty, even with the same counter", async () => {
  const app = await appWith();
  await put(app, "signups", SIGNUPS);
  const t = new Date(T0 - 1_000).toISOString();
  await ingest(app, "signups", [{ t, plan: "pro" }, { t, plan: "free" }]);
  await app.request("/v1/streams/signups", { method: "DELETE" });
  const recreated = await put(app, "signups", SIGNUPS);
  assert.equal(recreated.status, 201);
  const body = await recreated.json();
  assert.equal(body.version, 3);
  assert.equal(body.stats.applied, 0);
  const windows = await (await app.request(
    `/v1/streams/signups/counters/perMinute?from=${T0 - 60_000}&to=${T0}`,
  )).json();
  assert.deepEqual(windows.windows, []);
  await ingest(app, "signups", [{ t, plan: "pro" }]);
  const after = await (await app.request(
    `/v1/streams/signups/counters/perMinute?from=${T0 - 60_000}&to=${T0}`,
  )).json();
  assert.deepEqual(after.windows.map((row: { value: number }) => row.value), [1]);
});

Deno.test("/openapi.json documents PUT and DELETE /v1/streams/{stream} with their errors", async () => {
  const app = await appWith();
  const doc = await (await app.request("/openapi.json")).json();
  const path = doc.paths["/v1/streams/{stream}"];
  assert.deepEqual(Object.keys(path.put.responses).sort(), [
    "200",
    "201",
    "400",
    "401",
    "403",
    "408",
    "409",
    "412",
    "413",
    "415",
    "421",
    "503",
  ]);
  assert.deepEqual(Object.keys(path.delete.responses).sort(), [
    "204",
    "400",
    "401",
    "403",
    "404",
    "409",
    "412",
    "413",
    "421",
    "503",
  ]);
  assert.equal(path.put.parameters[0].name, "stream");
  const parameters = (operation: { parameters: { name: string; in: string }[] }) =>
    operation.parameters.map((parameter) => `${parameter.in}:${parameter.name}`).sort();
  assert.deepEqual(parameters(path.put), [
    "header:if-match",
    "header:if-none-match",
    "path:stream",
  ]);
  assert.deepEqual(parameters(path.delete), [
    "header:if-match",
    "header:if-none-match",
    "path:stream",
    "query:force",
  ]);
  assert.ok(doc.components.schemas.Stream.properties.source);
});

Deno.test("PUT /v1/streams/{stream} refuses a new quantiles accuracy or session gap: both decide what the stored state means", async () => {
  const app = await appWith();
  const counters = {
    latency: { window: { tumbling: "1m" }, aggregate: { quantiles: "ms", accuracy: 0.01 } },
    visits: { window: { session: "30m" }, groupBy: ["user"], aggregate: "count" },
  };
  assert.equal((await put(app, "pages", { counters })).status, 201);
  for (
    const [name, counter] of [
      ["latency", { ...counters.latency, aggregate: { quantiles: "ms", accuracy: 0.02 } }],
      ["visits", { ...counters.visits, window: { session: "10m" } }],
    ] as const
  ) {
    const refused = await put(app, "pages", { counters: { ...counters, [name]: counter } });
    assert.equal(refused.status, 409);
    assert.equal((await errorOf(refused)).code, "counter_changed");
  }
  // maxSessions is a bound, not a meaning: it may change.
  const bounded = await put(app, "pages", {
    counters: { ...counters, visits: { ...counters.visits, maxSessions: 10 } },
  });
  assert.equal(bounded.status, 200);
});

Deno.test("POST /v1/admin/sweep reports what it closed of a stream deleted while it ran", async () => {
  let now = T0;
  const memory = new MemoryStore({ now: () => now });
  const closing = Promise.withResolvers<void>();
  const release = Promise.withResolvers<void>();
  // The store's close waits until the stream is deleted, as a slow Redis or another instance can.
  const store = new Proxy(memory, {
    get(target, property) {
      if (property === "closeWindows") {
        return async (...args: Parameters<MemoryStore["closeWindows"]>) => {
          const closed = await target.closeWindows(...args);
          closing.resolve();
          await release.promise;
          return closed;
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  const app = createApp({
    streams: compileConfig({ streams: {} }),
    store,
    keys: await KeyRing.parse(""),
    now: () => now,
  });
  // An idle stream's watermark follows the clock, so its window becomes final an hour later.
  assert.equal((await put(app, "signups", { ...SIGNUPS, time: { idle: "1m" } })).status, 201);
  const ingested = await app.request("/v1/streams/signups/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify([{ plan: "pro" }]),
  });
  assert.equal(ingested.status, 202);
  now += 3_600_000;
  const sweeping = app.request("/v1/admin/sweep", { method: "POST" });
  await closing.promise;
  assert.equal((await app.request("/v1/streams/signups", { method: "DELETE" })).status, 204);
  release.resolve();
  const swept = await sweeping;
  assert.equal(swept.status, 200, await swept.clone().text());
  const body = await swept.json();
  assert.deepEqual(
    body.closed.filter((window: { stream: string }) => window.stream === "signups").map((
      window: { groups: unknown[] },
    ) => window.groups),
    [[{ group: { plan: "pro" }, value: 1 }]],
  );
});

Deno.test("POST /v1/admin/sweep marks partial the windows and sessions it closed and the alerts it fired of counters added after events, as their payloads and reads do", async () => {
  const app = await appWith();
  const base = { time: { field: "t", lateness: "0s" }, counters: SIGNUPS.counters };
  assert.equal((await put(app, "signups", base)).status, 201);
  const at = (ms: number) => new Date(T0 - 600_000 + ms).toISOString();
  assert.equal((await ingest(app, "signups", [{ t: at(1_000), plan: "pro" }])).status, 202);
  const grown = {
    ...base,
    counters: {
      ...base.counters,
      added: { window: { tumbling: "1m" }, aggregate: "count" },
      visits: { window: { session: "10s" }, aggregate: "count" },
    },
    // Session alerts are judged only at close: the sweep fires it.
    alerts: [{ name: "visited", counter: "visits", when: "value >= 1.0" }],
  };
  assert.equal((await put(app, "signups", grown)).status, 200);
  // One more event in the window and gap the added counters missed the first of, then one that
  // makes them final.
  const events = [{ t: at(2_000), plan: "pro" }, { t: at(300_000), plan: "pro" }];
  assert.equal((await ingest(app, "signups", events)).status, 202);
  const swept = await app.request("/v1/admin/sweep", { method: "POST" });
  assert.equal(swept.status, 200, await swept.clone().text());
  const body = await swept.json();
  const closed = Object.fromEntries(
    body.closed.map((window: { counter: string; partial?: boolean }) => [
      window.counter,
      window.partial,
    ]),
  );
  assert.deepEqual(closed, { perMinute: undefined, added: true, visits: true });
  assert.deepEqual(
    body.fired.map((
      firing: { alert: string; partial?: boolean },
    ) => [firing.alert, firing.partial]),
    [["visited", true]],
  );
  const read = await (await app.request("/v1/streams/signups/counters/visits")).json();
  assert.equal(read.windows.at(-1).partial, true);
});

Deno.test("POST /v1/admin/sweep sweeps the other streams when one fails and reports both; an unreachable store is a 503", async () => {
  let now = T0;
  let failure: Error = new Error(
    "WRONGTYPE Operation against a key holding the wrong kind of value",
  );
  const closedBy = new Map<string, number>();
  class BrokenStream extends MemoryStore {
    override async closeWindows(...args: Parameters<MemoryStore["closeWindows"]>) {
      if (args[0].startsWith("broken")) throw failure;
      const closed = await super.closeWindows(...args);
      if (!args[2].peek) closedBy.set(args[0], (closedBy.get(args[0]) ?? 0) + closed.length);
      return closed;
    }
  }
  const app = createApp({
    streams: compileConfig({ streams: {} }),
    store: new BrokenStream({ now: () => now }),
    keys: await KeyRing.parse(""),
    now: () => now,
  });
  for (const name of ["broken", "signups"]) {
    assert.equal((await put(app, name, { ...SIGNUPS, time: { idle: "1m" } })).status, 201);
    const ingested = await app.request(`/v1/streams/${name}/events`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify([{ plan: "pro" }]),
    });
    assert.equal(ingested.status, 202);
  }
  now += 3_600_000;
  const [swept, logged] = await collectingLogs(async (records) => {
    const res = await app.request("/v1/admin/sweep", { method: "POST" });
    return [res, records.filter((record) => record.level === "error")] as const;
  });
  // The failed stream is logged as an error, naming it, with its error.
  assert.deepEqual(logged.map((record) => messageOf(record).split(": ")[0]), [
    "Sweep of stream 'broken' failed",
  ]);
  assert.equal(logged[0].properties.error, failure);
  assert.equal(swept.status, 200);
  const body = await swept.json();
  assert.deepEqual(body.closed.map((window: { stream: string }) => window.stream), ["signups"]);
  assert.deepEqual(body.failed, [{
    stream: "broken",
    error: { code: "internal_error", message: "Internal server error" },
  }]);
  assert.deepEqual([...closedBy.values()], [1]);
  // The store unreachable fails every stream alike: the sweep stops at the first.
  failure = new StoreUnavailableError("Redis is unavailable");
  const down = await app.request("/v1/admin/sweep", { method: "POST" });
  assert.equal(down.status, 503);
  const { error } = await down.json();
  assert.equal(error.code, "store_unavailable");
  // Repeating a sweep is always safe: its advice says so (no state to read back first).
  assert.equal(
    error.message,
    "Redis is unavailable; it may have been applied: sending the sweep again is safe",
  );
});

Deno.test("PUT /v1/streams/{stream} refuses a pattern RE2 cannot run, and its events are matched in linear time", async () => {
  const app = await appWith();
  for (
    const definition of [
      { schema: { type: "object", properties: { a: { type: "string", pattern: "^(?!x)" } } } },
      { transform: [{ filter: 'event.a.matches("(a)\\\\1")' }] },
    ]
  ) {
    const refused = await put(app, "rx", { ...definition, counters: {} });
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.equal(error.code, "invalid_definition");
    assert.match(error.message, /RE2/);
  }
  const pattern = "^([a-zA-Z0-9]+\\.?)+@example\\.com$";
  const created = await put(app, "rx", {
    schema: { type: "object", properties: { email: { type: "string", pattern } } },
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  });
  assert.equal(created.status, 201);
  // Forty-odd letters and a "!" would hold a backtracking engine (and every request) for minutes.
  const reply = await app.request("/v1/streams/rx/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify([{ email: `${"a".repeat(60)}!` }, { email: "first.last@example.com" }]),
  });
  assert.equal(reply.status, 202);
  const body = await reply.json();
  assert.equal(body.accepted, 1);
  assert.deepEqual(body.rejected.map((item: { index: number }) => item.index), [0]);
});

/**
 * An app over a store where an earlier release stored `signups` with a lookahead pattern, which
 * this release cannot compile; one event was counted before.
 */
async function unservableSetup() {
  const definitions = new MemoryDefinitionStore();
  const registryOf = () =>
    new StreamRegistry(compileConfig(CONFIG), { definitions, now: () => T0, pollMs: 0 });
  const keys = await KeyRing.parse("");
  const store = new MemoryStore({ now: () => T0 });
  const appOf = (streams: StreamRegistry) => createApp({ streams, store, keys, now: () => T0 });
  const firstStreams = registryOf();
  const first = appOf(firstStreams);
  assert.equal((await put(first, "signups", SIGNUPS)).status, 201);
  assert.equal((await ingest(first, "signups", [UNSERVABLE_EVENT])).status, 202);
  const stored = (await definitions.get("signups"))!;
  const old = {
    ...SIGNUPS,
    schema: { properties: { plan: { type: "string", pattern: "^(?!x)" } } },
  };
  const written = await definitions.write(
    "signups",
    { ...stored, definition: old },
    stored.version,
  );
  assert.equal(written.status, "written");
  const streams = registryOf();
  return { streams, app: appOf(streams), first, firstStreams, definitions };
}

const UNSERVABLE_EVENT = { t: "2026-01-01T00:00:00Z", plan: "pro" };

Deno.test("a stored API stream this release cannot compile answers 409 stream_not_servable, not 404, until replaced", async () => {
  const { streams, app } = await unservableSetup();
  for (
    const response of [
      await ingest(app, "signups", [UNSERVABLE_EVENT]),
      await app.request("/v1/streams/signups"),
      await app.request("/v1/streams/signups/counters/perMinute/current"),
      await app.request("/v1/streams/signups/subscribe", {
        headers: { Accept: "text/event-stream" },
      }),
      await app.request("/v1/streams/signups/ws", { headers: { Upgrade: "websocket" } }),
    ]
  ) {
    const error = await errorOf(response);
    assert.equal(response.status, 409, JSON.stringify(error));
    assert.equal(error.code, "stream_not_servable");
    assert.match(error.message, /^Stream 'signups' \(version 2\) is stored, but this release/);
    assert.match(
      error.message,
      /: schema: Cannot compile event schema: Pattern "\^\(\?!x\)" is not supported: .*\. Replace it with PUT \/v1\/streams\/signups$/,
    );
  }
  assert.equal((await app.request("/v1/streams/nothing")).status, 404);
  // A preflight, keyless, answers every name alike (browser_test.ts): this one too.
  const preflight = await app.request("/v1/streams/signups/events", {
    method: "OPTIONS",
    headers: { Origin: "https://shop.example", "Access-Control-Request-Method": "POST" },
  });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers.get("Access-Control-Allow-Origin"), "https://shop.example");
  assert.equal((await put(app, "signups", SIGNUPS)).status, 200);
  assert.equal(streams.unservable("signups"), undefined);
  assert.equal((await ingest(app, "signups", [UNSERVABLE_EVENT])).status, 202);
  const current = await app.request("/v1/streams/signups/counters/perMinute/current");
  const windows = (await current.json()).windows;
  assert.deepEqual(windows.map((row: { value: number }) => row.value), [2], "counted before stays");
});

Deno.test("PUT /v1/streams/{stream} refuses more counters, or groups between them, than a stream may hold; one stored before is not served", async () => {
  const counters = (n: number, maxGroups: number) =>
    Object.fromEntries(
      Array.from({ length: n }, (_, i) => [
        `c${i}`,
        { window: { tumbling: "1h" }, groupBy: ["g"], aggregate: "count", maxGroups },
      ]),
    );
  const app = await appWith();
  for (
    const [definition, message] of [
      [
        { counters: counters(600, 1000) },
        /^Invalid stream definition: counters: a stream may have at most 64 counters; this one has 600$/,
      ],
      [
        { counters: counters(5, 1_000_000) },
        /^Invalid stream definition: counters\.c1\.maxGroups: the stream's counters would hold up to 2000000 groups per pane with this one; at most 1000000 together$/,
      ],
    ] as const
  ) {
    const refused = await put(app, "tenant", definition);
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.equal(error.code, "invalid_definition");
    assert.match(error.message, message);
  }
  assert.equal((await app.request("/v1/streams/tenant")).status, 404);
  assert.equal((await put(app, "tenant", { counters: counters(64, 15_625) })).status, 201);

  // One an earlier release stored with more is not served (409), and the process keeps going.
  const { definitions, streams, app: later } = await unservableSetup();
  const stored = (await definitions.get("signups"))!;
  const written = await definitions.write(
    "signups",
    { ...stored, definition: { ...SIGNUPS, counters: counters(65, 1000) } },
    stored.version,
  );
  assert.equal(written.status, "written");
  await streams.poll();
  const response = await ingest(later, "signups", [UNSERVABLE_EVENT]);
  assert.equal(response.status, 409);
  const error = await errorOf(response);
  assert.equal(error.code, "stream_not_servable");
  assert.match(error.message, /counters: a stream may have at most 64 counters; this one has 65/);
  assert.equal((await ingest(later, "orders", [{}])).status, 202);
});

Deno.test("an instance that served a stream stops serving it once its stored version does not compile, as one that never did", async () => {
  const { first, firstStreams, definitions } = await unservableSetup();
  // It held version 1 when version 2 was written; the poll finds version 2.
  await firstStreams.poll();
  const refused = await ingest(first, "signups", [UNSERVABLE_EVENT]);
  assert.equal(refused.status, 409);
  assert.equal((await errorOf(refused)).code, "stream_not_servable");
  assert.equal(firstStreams.has("signups"), false);
  // Once noted, later polls do not read the record again.
  let reads = 0;
  const get = definitions.get.bind(definitions);
  definitions.get = (name: string) => {
    reads += 1;
    return get(name);
  };
  await firstStreams.poll();
  await firstStreams.poll();
  assert.equal(reads, 0);
});

Deno.test("GET /v1/streams lists a stored API stream this release cannot compile as not servable, until replaced or deleted", async () => {
  // deno-lint-ignore no-explicit-any
  const list = async (app: App, query = ""): Promise<any> =>
    await (await app.request(`/v1/streams${query}`)).json();
  const { streams, app } = await unservableSetup();
  // Found by the poll that reads every stored name, as on an instance just started.
  await streams.poll();
  const { streams: listed, nextCursor } = await list(app);
  assert.equal(nextCursor, null);
  assert.deepEqual(
    listed.map((stream: { name: string; servable: boolean }) => [stream.name, stream.servable]),
    [["orders", true], ["signups", false]],
  );
  // What its 409 says, and no definition, counters or stats, which cannot be read.
  const refused = await errorOf(await app.request("/v1/streams/signups"));
  assert.deepEqual(listed[1], {
    name: "signups",
    source: "api",
    version: 2,
    servable: false,
    problem: refused.message,
  });
  assert.match(listed[1].problem, /cannot compile its definition: schema: Cannot compile/);
  // Paged as the served ones are.
  const first = await list(app, "?limit=1");
  assert.deepEqual(first.streams.map((stream: { name: string }) => stream.name), ["orders"]);
  const second = await list(app, `?limit=1&cursor=${encodeURIComponent(first.nextCursor)}`);
  assert.deepEqual(second.streams.map((stream: { name: string }) => stream.name), ["signups"]);
  assert.equal(second.nextCursor, null);
  // Replaced at the version listed: served, listed with its definition and stats (the event
  // counted before stays).
  assert.equal((await put(app, "signups", SIGNUPS, { "If-Match": '"2"' })).status, 200);
  const replaced = (await list(app)).streams[1];
  assert.deepEqual(
    [replaced.name, replaced.servable, replaced.version, replaced.counters, replaced.stats.applied],
    ["signups", true, 3, ["perMinute"], 1],
  );
  assert.equal(replaced.problem, undefined);

  // Deleted: gone from the list.
  const { streams: other, app: again } = await unservableSetup();
  await other.poll();
  assert.equal((await list(again)).streams.length, 2);
  assert.equal((await again.request("/v1/streams/signups", { method: "DELETE" })).status, 204);
  assert.deepEqual(
    (await list(again)).streams.map((stream: { name: string }) => stream.name),
    ["orders"],
  );
});

Deno.test("a stored API stream this release cannot compile, deleted, is gone at once", async () => {
  const { app } = await unservableSetup();
  assert.equal((await app.request("/v1/streams/signups")).status, 409);
  assert.equal((await app.request("/v1/streams/signups", { method: "DELETE" })).status, 204);
  assert.equal((await app.request("/v1/streams/signups")).status, 404);
  assert.equal((await ingest(app, "signups", [UNSERVABLE_EVENT])).status, 404);
});

Deno.test("a schema default fills a missing field before counters group by it", async () => {
  const app = await appWith();
  const definition = {
    ...SIGNUPS,
    schema: { properties: { plan: { type: "string", default: "free" } } },
  };
  assert.equal((await put(app, "signups", definition)).status, 201);
  const events = [{ t: "2026-01-01T00:00:00Z" }, { t: "2026-01-01T00:00:01Z", plan: "pro" }];
  assert.equal((await ingest(app, "signups", events)).status, 202);
  const rows = (await (await app.request("/v1/streams/signups/counters/perMinute")).json()).windows;
  assert.deepEqual(
    rows.map((row: { group: { plan: string }; value: number }) => [row.group.plan, row.value])
      .sort(),
    [["free", 1], ["pro", 1]],
  );
});

Deno.test("PUT /v1/streams/{stream} refuses a definition over 64 KiB with 413 payload_too_large", async () => {
  const app = await appWith();
  const body = JSON.stringify({ counters: {}, transform: [{ drop: ["x".repeat(70_000)] }] });
  const res = await app.request("/v1/streams/big", {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body,
  });
  assert.equal(res.status, 413);
  assert.deepEqual((await res.json()).error.code, "payload_too_large");
  assert.equal((await app.request("/v1/streams/big")).status, 404);
});

Deno.test("If-Match compares strongly (RFC 9110): a weak tag of the current version is 412 precondition_failed on PUT and DELETE, nothing changed; GET's If-None-Match stays weak", async () => {
  const app = await appWith();
  assert.equal((await put(app, "signups", SIGNUPS)).status, 201);
  const changed = await put(app, "signups", { ...SIGNUPS, description: "weak" }, {
    "If-Match": 'W/"1"',
  });
  assert.equal(changed.status, 412);
  const error = await errorOf(changed);
  assert.equal(error.code, "precondition_failed");
  assert.equal(
    error.message,
    `Stream 'signups' is at no version named by a strong tag (it is at version 1); a weak tag (W/"1") matches no version, as If-Match compares strongly: send '"<version>"': read it again and retry`,
  );
  const deleted = await app.request("/v1/streams/signups", {
    method: "DELETE",
    headers: { "If-Match": 'W/"1", W/"2"' },
  });
  assert.equal(deleted.status, 412);
  assert.equal((await errorOf(deleted)).code, "precondition_failed");
  const stored = await app.request("/v1/streams/signups");
  assert.equal(stored.status, 200);
  assert.equal(stored.headers.get("ETag"), '"1"');
  assert.equal((await stored.json()).definition.description, SIGNUPS.description);
  // A strong tag beside a weak one still matches.
  const strong = await put(app, "signups", { ...SIGNUPS, description: "strong" }, {
    "If-Match": 'W/"1", "1"',
  });
  assert.equal(strong.status, 200);
  await strong.body?.cancel();
  // GET's If-None-Match compares weakly (RFC 9110 §13.1.2): W/ of a file's tag is its 304.
  for (const path of ["/openapi.json", "/docs", "/", "/static/dashboard/main.js"]) {
    const first = await app.request(path);
    const tag = first.headers.get("ETag")!;
    await first.body?.cancel();
    assert.match(tag, /^"[^"]+"$/, path);
    for (const header of [tag, `W/${tag}`, `"other", W/${tag}`]) {
      const again = await app.request(path, { headers: { "If-None-Match": header } });
      assert.equal(again.status, 304, `${path} ${header}`);
      await again.body?.cancel();
    }
  }
});

Deno.test('If-Match compares the tag\'s characters (RFC 9110 §8.8.3.2): "01" is not the tag "1" of version 1, so it is 412 on PUT and DELETE, nothing changed', async () => {
  const app = await appWith();
  assert.equal((await put(app, "signups", SIGNUPS)).status, 201);
  const changed = await put(app, "signups", { ...SIGNUPS, description: "zeros" }, {
    "If-Match": '"01"',
  });
  assert.equal(changed.status, 412);
  assert.equal(
    (await errorOf(changed)).message,
    "Stream 'signups' is at no version named by a strong tag (it is at version 1): read it again and retry",
  );
  const deleted = await app.request("/v1/streams/signups", {
    method: "DELETE",
    headers: { "If-Match": '"001", "2"' },
  });
  assert.equal(deleted.status, 412);
  assert.equal((await errorOf(deleted)).code, "precondition_failed");
  const stored = await app.request("/v1/streams/signups");
  assert.equal(stored.headers.get("ETag"), '"1"');
  assert.equal((await stored.json()).definition.description, SIGNUPS.description);
  // "0" is a tag of its own (no stream is at version 0): a 412 too, not a 400.
  const zero = await put(app, "signups", SIGNUPS, { "If-Match": '"0"' });
  assert.equal(zero.status, 412);
  await zero.body?.cancel();
});

Deno.test('If-Match ignores empty list elements (RFC 9110 §5.6.1.2): `"1", ` and `"7", , "1"` name version 1; weak and zero-padded tags still match nothing, and a header naming no tag is 400', async () => {
  const app = await appWith();
  assert.equal((await put(app, "signups", SIGNUPS)).status, 201);
  const trailing = await put(app, "signups", { ...SIGNUPS, description: "two" }, {
    "If-Match": '"1", ',
  });
  assert.equal(trailing.status, 200);
  assert.equal(trailing.headers.get("ETag"), '"2"');
  await trailing.body?.cancel();
  const between = await put(app, "signups", { ...SIGNUPS, description: "three" }, {
    "If-Match": ', "7", , "2",,',
  });
  assert.equal(between.status, 200);
  assert.equal(between.headers.get("ETag"), '"3"');
  await between.body?.cancel();
  // Empty elements change nothing else: a weak or zero-padded tag of version 3 is still a 412.
  for (const header of ['W/"3", ', '"03", , ', ' , W/"3",']) {
    const refused = await put(app, "signups", { ...SIGNUPS, description: "no" }, {
      "If-Match": header,
    });
    assert.equal(refused.status, 412, header);
    assert.equal((await errorOf(refused)).code, "precondition_failed");
  }
  // A header whose elements are all empty names no tag: malformed, as an empty one is.
  for (const header of [",", " , ,", ""]) {
    const bad = await put(app, "signups", { ...SIGNUPS, description: "no" }, {
      "If-Match": header,
    });
    assert.equal(bad.status, 400, JSON.stringify(header));
    assert.equal((await errorOf(bad)).code, "invalid_request");
  }
  const deleted = await app.request("/v1/streams/signups", {
    method: "DELETE",
    headers: { "If-Match": '"3", ' },
  });
  assert.equal(deleted.status, 204);
  const read = await app.request("/v1/streams/signups");
  assert.equal(read.status, 404);
  await read.body?.cancel();
});

Deno.test('If-Match with a well-formed tag that is no version (`"x"`, `""`, `"a,b"`, a 16-digit number) is 412 precondition_failed on PUT and DELETE (RFC 9110 §13.1.1), nothing changed; only a header that is not entity tags is 400', async () => {
  const app = await appWith();
  assert.equal((await put(app, "signups", SIGNUPS)).status, 201);
  for (const header of ['"x"', '""', '"a,b"', '"1234567890123456"', 'W/"x", "v1"', '"x", , ']) {
    const changed = await put(app, "signups", { ...SIGNUPS, description: "other" }, {
      "If-Match": header,
    });
    assert.equal(changed.status, 412, header);
    const error = await errorOf(changed);
    assert.equal(error.code, "precondition_failed", header);
    assert.equal(
      error.message,
      "Stream 'signups' is at no version named by a strong tag (it is at version 1): read it again and retry",
      header,
    );
    const deleted = await app.request("/v1/streams/signups", {
      method: "DELETE",
      headers: { "If-Match": header },
    });
    assert.equal(deleted.status, 412, header);
    assert.equal((await errorOf(deleted)).code, "precondition_failed", header);
  }
  // On a stream that does not exist, as for any tag.
  const missing = await put(app, "nothing", SIGNUPS, { "If-Match": '"x"' });
  assert.equal(missing.status, 412);
  assert.equal(
    (await errorOf(missing)).message,
    "Stream 'nothing' does not exist: read it again and retry",
  );
  // Beside the current version's tag, the others do not matter; a comma inside quotes is the tag's.
  const listed = await put(app, "signups", { ...SIGNUPS, description: "listed" }, {
    "If-Match": '"a,b", "1"',
  });
  assert.equal(listed.status, 200);
  assert.equal(listed.headers.get("ETag"), '"2"');
  await listed.body?.cancel();
  // Not entity-tag syntax: still 400, nothing changed.
  for (const header of ["x", '"x" "2"', '"x', "W/x", '"2"x']) {
    const bad = await put(app, "signups", SIGNUPS, { "If-Match": header });
    assert.equal(bad.status, 400, header);
    assert.equal((await errorOf(bad)).code, "invalid_request", header);
  }
  const stored = await app.request("/v1/streams/signups");
  assert.equal(stored.headers.get("ETag"), '"2"');
  assert.equal((await stored.json()).definition.description, "listed");
});

Deno.test("If-Match with a long run of spaces before what is no entity tag is 400 at once: reading it does not backtrack over the spaces", async () => {
  const app = await appWith();
  assert.equal((await put(app, "signups", SIGNUPS)).status, 201);
  for (const header of [`"1",${" ".repeat(100_000)}x`, `"1",${" \t".repeat(50_000)}x`]) {
    const started = performance.now();
    const bad = await put(app, "signups", { ...SIGNUPS, description: "other" }, {
      "If-Match": header,
    });
    const elapsedMs = performance.now() - started;
    assert.equal(bad.status, 400);
    assert.equal((await errorOf(bad)).code, "invalid_request");
    // Linear, a few milliseconds; quadratic in the spaces, seconds (the event loop held all along).
    assert.ok(elapsedMs < 1_000, `${Math.round(elapsedMs)} ms`);
  }
  const stored = await app.request("/v1/streams/signups");
  assert.equal(stored.headers.get("ETag"), '"1"');
  await stored.body?.cancel();
});

Deno.test("`*` with empty list elements (`*, `, `, *,`) is `*` in If-Match and If-None-Match (RFC 9110 §5.6.1.2); `*` beside a tag is still 400", async () => {
  const app = await appWith();
  // If-None-Match: create only.
  assert.equal((await put(app, "signups", SIGNUPS, { "If-None-Match": "*, " })).status, 201);
  const again = await put(app, "signups", SIGNUPS, { "If-None-Match": " , *," });
  assert.equal(again.status, 412);
  assert.equal((await errorOf(again)).code, "precondition_failed");
  // If-Match: any version, none when the stream does not exist.
  const changed = await put(app, "signups", { ...SIGNUPS, description: "two" }, {
    "If-Match": "*,",
  });
  assert.equal(changed.status, 200);
  assert.equal(changed.headers.get("ETag"), '"2"');
  await changed.body?.cancel();
  const missing = await put(app, "nothing", SIGNUPS, { "If-Match": ", *, ," });
  assert.equal(missing.status, 412);
  assert.equal((await errorOf(missing)).code, "precondition_failed");
  for (const [name, value] of [["If-Match", '*, "2"'], ["If-None-Match", '*, "1"']]) {
    const bad = await put(app, "signups", SIGNUPS, { [name]: value });
    assert.equal(bad.status, 400, `${name}: ${value}`);
    assert.equal((await errorOf(bad)).code, "invalid_request");
  }
  const deleted = await app.request("/v1/streams/signups", {
    method: "DELETE",
    headers: { "If-Match": "*, " },
  });
  assert.equal(deleted.status, 204);
});

Deno.test("If-Match and If-None-Match keep two admins from overwriting each other: 412 precondition_failed, nothing changed", async () => {
  const app = await appWith();
  // Create only.
  assert.equal((await put(app, "signups", SIGNUPS, { "If-None-Match": "*" })).status, 201);
  const again = await put(app, "signups", SIGNUPS, { "If-None-Match": "*" });
  assert.equal(again.status, 412);
  assert.equal((await errorOf(again)).code, "precondition_failed");
  const read = await app.request("/v1/streams/signups");
  assert.equal(read.headers.get("ETag"), '"1"');
  await read.body?.cancel();
  // Two admins read version 1; the first one's change wins, the second is told.
  const next = { ...SIGNUPS, description: "first" };
  const first = await put(app, "signups", next, { "If-Match": '"1"' });
  assert.equal(first.status, 200);
  assert.equal(first.headers.get("ETag"), '"2"');
  await first.body?.cancel();
  const second = await put(app, "signups", { ...SIGNUPS, description: "second" }, {
    "If-Match": '"1"',
  });
  assert.equal(second.status, 412);
  const error = await errorOf(second);
  assert.equal(error.code, "precondition_failed");
  assert.equal(
    error.message,
    "Stream 'signups' is not at version 1 (it is at version 2): read it again and retry",
  );
  const stored = await (await app.request("/v1/streams/signups")).json();
  assert.deepEqual([stored.version, stored.definition.description], [2, "first"]);
  // Several tags, weak ones too, and *.
  const listed = await put(app, "signups", { ...next, description: "third" }, {
    "If-Match": 'W/"7", "2"',
  });
  assert.equal(listed.status, 200);
  await listed.body?.cancel();
  assert.equal((await put(app, "nothing", SIGNUPS, { "If-Match": "*" })).status, 412);
  for (const header of ["3", "x", "", '"1" "2"', 'w/"2"', '"2', '"a"b"']) {
    const bad = await put(app, "signups", next, { "If-Match": header });
    assert.equal(bad.status, 400, header);
    assert.equal((await errorOf(bad)).code, "invalid_request");
  }
  // DELETE takes If-Match too.
  const stale = await app.request("/v1/streams/signups", {
    method: "DELETE",
    headers: { "If-Match": '"2"' },
  });
  assert.equal(stale.status, 412);
  await stale.body?.cancel();
  const deleted = await app.request("/v1/streams/signups", {
    method: "DELETE",
    headers: { "If-Match": '"3"' },
  });
  assert.equal(deleted.status, 204);
  // Gone: If-Match holds for no version (412, as for PUT); without it, 404.
  const gone = await app.request("/v1/streams/signups", {
    method: "DELETE",
    headers: { "If-Match": '"3"' },
  });
  assert.equal(gone.status, 412);
  await gone.body?.cancel();
  const plain = await app.request("/v1/streams/signups", { method: "DELETE" });
  assert.equal(plain.status, 404);
  await plain.body?.cancel();
});

Deno.test("DELETE with If-None-Match: * holds only for a stream that does not exist: 412 when it does, nothing deleted; 404 when not; a tag is 400", async () => {
  const app = await appWith();
  assert.equal((await put(app, "signups", SIGNUPS)).status, 201);
  const del = (headers: Record<string, string>) =>
    app.request("/v1/streams/signups", { method: "DELETE", headers });
  const refused = await del({ "If-None-Match": "*" });
  assert.equal(refused.status, 412);
  assert.deepEqual(await errorOf(refused), {
    code: "precondition_failed",
    message:
      "Stream 'signups' exists (it is at version 1): If-None-Match: * holds only while it does not exist",
    requestId: refused.headers.get("X-Request-Id"),
  });
  const tagged = await del({ "If-None-Match": '"1"' });
  assert.equal(tagged.status, 400);
  // Worded for a delete as for a create: not "create only".
  assert.deepEqual(await errorOf(tagged), {
    code: "invalid_request",
    message: `If-None-Match: only '*' (the stream must not exist) is taken, got '"1"'`,
    requestId: tagged.headers.get("X-Request-Id"),
  });
  // Nothing was deleted: the stream is still served at version 1.
  const read = await app.request("/v1/streams/signups");
  assert.equal(read.status, 200);
  assert.equal((await read.json()).version, 1);
  assert.equal((await del({})).status, 204);
  const gone = await del({ "If-None-Match": "*" });
  assert.equal(gone.status, 404);
  assert.equal((await errorOf(gone)).code, "stream_not_found");
});

/** Two instances on one definition store and one stream store, neither polling. */
async function twoInstances() {
  const definitions = new MemoryDefinitionStore();
  const keys = await KeyRing.parse("");
  const store = new MemoryStore({ now: () => T0 });
  const appOn = () =>
    createApp({
      streams: new StreamRegistry(compileConfig(CONFIG), { definitions, pollMs: 0 }),
      store,
      keys,
      now: () => T0,
    });
  return { definitions, first: appOn(), second: appOn() };
}

Deno.test("a 412 brings the answering instance up to the stored version: read again, its ETag is the one to send", async () => {
  const { first, second } = await twoInstances();
  assert.equal((await put(first, "signups", SIGNUPS)).status, 201);
  const tagOn = async (app: App) => {
    const res = await app.request("/v1/streams/signups");
    await res.body?.cancel();
    return res.headers.get("ETag");
  };
  assert.equal(await tagOn(second), '"1"');
  assert.equal((await put(first, "signups", { ...SIGNUPS, description: "v2" })).status, 200);
  // The second instance has not heard of version 2 yet (no poll ran).
  assert.equal(await tagOn(second), '"1"');
  const stale = await put(second, "signups", SIGNUPS, { "If-Match": '"1"' });
  assert.equal(stale.status, 412);
  await stale.body?.cancel();
  assert.equal(await tagOn(second), '"2"');
  const retried = await put(second, "signups", SIGNUPS, { "If-Match": '"2"' });
  assert.equal(retried.status, 200);
  await retried.body?.cancel();
  const missing = await put(second, "nothing", SIGNUPS, { "If-Match": '"1"' });
  assert.equal(
    (await errorOf(missing)).message,
    "Stream 'nothing' does not exist: read it again and retry",
  );
});

Deno.test("PUT of the definition stored, keys in any order, changes nothing: 200, the same version, on an instance behind too", async () => {
  const { definitions, first, second } = await twoInstances();
  assert.equal((await put(first, "signups", SIGNUPS)).status, 201);
  const reordered = {
    counters: { perMinute: { aggregate: "count", groupBy: ["plan"], window: { tumbling: "1m" } } },
    time: { field: "t" },
    description: "Sign-ups",
  };
  for (const [app, body] of [[first, SIGNUPS], [first, reordered], [second, reordered]] as const) {
    const again = await put(app, "signups", body, { "If-Match": '"1"' });
    assert.equal(again.status, 200);
    assert.equal(again.headers.get("ETag"), '"1"');
    assert.equal((await again.json()).version, 1);
  }
  assert.equal((await definitions.get("signups"))?.version, 1);
  // A change is still one: the version rises, and the old tag no longer holds.
  const changed = await put(second, "signups", { ...SIGNUPS, description: "v2" });
  assert.equal((await changed.json()).version, 2);
  const stale = await put(first, "signups", SIGNUPS, { "If-Match": '"1"' });
  assert.equal(stale.status, 412);
  await stale.body?.cancel();
});

Deno.test("PUT /v1/streams/{stream} with a schema or expression nested too deep (or a schema too large once its $refs are expanded) is 400 every time, and stores nothing", async () => {
  const app = await appWith();
  let schema: Record<string, unknown> = { type: "object" };
  for (let level = 0; level < 2_500; level++) schema = { properties: { a: schema } };
  const counters = { n: { window: { tumbling: "1m" }, aggregate: "count" } };
  // 40 definitions, each an anyOf of two $refs to the next: 2^40 leaves once expanded.
  const $defs: Record<string, unknown> = { d40: { type: "string" } };
  for (let i = 0; i < 40; i++) {
    $defs[`d${i}`] = { anyOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] };
  }
  const wide = { type: "object", properties: { a: { $ref: "#/$defs/d0" } }, $defs };
  for (
    const [body, message] of [
      [{ schema, counters }, /^Invalid stream definition: schema: .*nests deeper than 128 levels/],
      [
        { schema: wide, counters },
        /^Invalid stream definition: schema: .*holds more than 131072 objects and arrays once its \$refs are expanded/,
      ],
      [
        { transform: [{ filter: `${"!".repeat(4_000)}true` }], counters },
        /^Invalid stream definition: transform\[0\]\.filter: .*nests deeper than 250 levels/,
      ],
    ] as const
  ) {
    // The same answer each time: compiling no longer depends on what the stack holds.
    for (let attempt = 0; attempt < 3; attempt++) {
      const res = await put(app, "deep", body);
      assert.equal(res.status, 400);
      const error = await errorOf(res);
      assert.equal(error.code, "invalid_definition");
      assert.match(error.message, message);
    }
  }
  assert.equal((await app.request("/v1/streams/deep")).status, 404);
});

Deno.test("PUT /v1/streams/{stream} refuses a charset other than UTF-8 (415) and bytes that are not UTF-8 (400 invalid_utf8), changing nothing", async () => {
  const app = await appWith();
  const latin = await put(app, "signups", JSON.stringify(SIGNUPS), {
    "Content-Type": "application/json; charset=iso-8859-1",
  });
  assert.equal(latin.status, 415);
  assert.equal((await errorOf(latin)).code, "unsupported_media_type");
  assert.equal(
    (await put(app, "signups", JSON.stringify(SIGNUPS), {
      "Content-Type": "application/json; charset=UTF-8",
    })).status,
    201,
  );
  const text = JSON.stringify({ ...SIGNUPS, description: "Sign ups: @@" });
  const bytes = new TextEncoder().encode(text);
  bytes.set([0xff, 0xfe], text.indexOf("@@"));
  const notUtf8 = await app.request("/v1/streams/signups", {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: bytes,
  });
  assert.equal(notUtf8.status, 400);
  assert.equal((await errorOf(notUtf8)).code, "invalid_utf8");
  const read = await (await app.request("/v1/streams/signups")).json();
  assert.deepEqual([read.version, read.definition], [1, SIGNUPS]);
});

Deno.test("PUT /v1/streams/{stream} past EDGESTREAM_STREAMS_MAX answers 409 too_many_streams and creates nothing; config streams do not count, a deletion frees a place", async () => {
  const definitions = new MemoryDefinitionStore({ maxApiStreams: 2 });
  const app = createApp({
    streams: new StreamRegistry(compileConfig(CONFIG), { definitions, pollMs: 0 }),
    store: new MemoryStore({ now: () => T0 }),
    keys: await KeyRing.parse(""),
    now: () => T0,
  });
  // The config file's "orders" is served and does not count.
  assert.equal((await put(app, "signups", SIGNUPS)).status, 201);
  assert.equal((await put(app, "visits", SIGNUPS)).status, 201);
  const refused = await put(app, "clicks", SIGNUPS);
  assert.equal(refused.status, 409);
  const body = await refused.json();
  assert.equal(body.error.code, "too_many_streams");
  assert.equal(
    body.error.message,
    "Cannot create more streams created through the API: this deployment holds 2; the limit is 2 (EDGESTREAM_STREAMS_MAX); delete one first",
  );
  assert.deepEqual(body.error.details, { kind: "streams", max: 2, held: 2 });
  assert.equal(await definitions.get("clicks"), null);
  assert.equal((await app.request("/v1/streams/clicks")).status, 404);
  // A replacement adds none, nor the same PUT sent again (a client's retry).
  assert.equal((await put(app, "signups", { ...SIGNUPS, description: "Changed" })).status, 200);
  const retried = await put(app, "signups", { ...SIGNUPS, description: "Changed" });
  assert.equal(retried.status, 200);
  assert.equal(retried.headers.get("ETag"), '"2"', "the same version: nothing written");
  assert.equal((await app.request("/v1/streams/visits", { method: "DELETE" })).status, 204);
  assert.equal((await put(app, "clicks", SIGNUPS)).status, 201);
});

Deno.test("a groupBy naming a field twice is 400 invalid_definition naming it; one stored before is served as before and may be kept by a PUT", async () => {
  const twice = {
    ...SIGNUPS,
    counters: {
      perMinute: {
        window: { tumbling: "1m" },
        groupBy: ["plan", "region", "plan"],
        aggregate: "count",
      },
    },
  };
  const app = await appWith();
  const refused = await put(app, "signups", twice);
  assert.equal(refused.status, 400);
  assert.deepEqual(await errorOf(refused), {
    code: "invalid_definition",
    message:
      "Invalid stream definition: counters.perMinute.groupBy[2]: Field 'plan' is already at groupBy[0]; group by each field once",
    requestId: refused.headers.get("X-Request-Id"),
  });
  assert.equal((await app.request("/v1/streams/signups")).status, 404);

  // Stored by a release that took it: served, counting as it did.
  const stored = await appStoring("signups", twice, { repeatedGroupBy: true });
  const read = await stored.request("/v1/streams/signups");
  assert.equal(read.status, 200);
  assert.deepEqual((await read.json()).definition, twice);
  const event = { t: "2026-01-01T00:00:00Z", plan: "pro", region: "eu" };
  assert.equal((await ingest(stored, "signups", [event])).status, 202);
  const current = await stored.request("/v1/streams/signups/counters/perMinute/current");
  assert.equal(current.status, 200);
  const windows = (await current.json()).windows;
  assert.deepEqual(
    windows.map((row: { group: unknown; value: number }) => [row.group, row.value]),
    [[{ plan: "pro", region: "eu" }, 1]],
  );
  // Its other parts may change while the counter stays as counted; a new counter may not repeat.
  const kept = await put(stored, "signups", { ...twice, description: "kept" });
  assert.equal(kept.status, 200, await kept.clone().text());
  await kept.body?.cancel();
  const added = await put(stored, "signups", {
    ...twice,
    counters: { ...twice.counters, again: { ...twice.counters.perMinute, groupBy: ["t", "t"] } },
  });
  assert.equal(added.status, 400);
  assert.equal(
    (await errorOf(added)).message,
    "Invalid stream definition: counters.again.groupBy[1]: Field 't' is already at groupBy[0]; group by each field once",
  );
});

Deno.test("a schema keyword not of its kind is 400 invalid_definition naming its path; a stream stored with one before is served as it was, and a PUT must fix it", async () => {
  const loose = {
    ...SIGNUPS,
    schema: { type: "object", required: "plan", properties: { n: { minimum: "x" } } },
  };
  const refusal = await put(await appWith(), "signups", loose);
  assert.equal(refusal.status, 400);
  assert.match(
    (await errorOf(refusal)).message,
    /^Invalid stream definition: schema: Cannot compile event schema: required: expected an array of property names, got "plan"$/,
  );

  // Stored by a release that took it: served, its schema as zod's converter read it then.
  const stored = await appStoring("signups", loose, { malformedSchemaKeywords: true });
  assert.equal((await stored.request("/v1/streams/signups")).status, 200);
  const sent = await ingest(stored, "signups", [{ t: "2026-01-01T00:00:00Z", n: -5 }]);
  assert.equal(sent.status, 202);
  assert.equal((await sent.json()).accepted, 1);
  // Sent again it is refused; fixed, it is taken.
  assert.equal((await put(stored, "signups", { ...loose, description: "kept" })).status, 400);
  const fixed = { ...loose, schema: { type: "object", required: ["plan"] } };
  assert.equal((await put(stored, "signups", fixed)).status, 200);
});

Deno.test("an origin no browser sends (a wildcard host, credentials) is 400 invalid_definition naming its path; a stream stored with one before is served as it was, and a PUT must fix it", async () => {
  const wild = { ...SIGNUPS, origins: ["https://shop.example", "https://*.shop.example"] };
  const refusal = await put(await appWith(), "signups", wild);
  assert.equal(refusal.status, 400);
  const error = await errorOf(refusal);
  assert.equal(error.code, "invalid_definition");
  assert.match(
    error.message,
    /^Invalid stream definition: origins\[1\]: Origin 'https:\/\/\*\.shop\.example' has a host no browser sends in Origin/,
  );
  const credentials = { ...SIGNUPS, origins: ["https://user:pw@shop.example"] };
  const refused = await put(await appWith(), "signups", credentials);
  assert.equal(refused.status, 400);
  const refusedError = await errorOf(refused);
  assert.match(
    refusedError.message,
    /^Invalid stream definition: origins\[0\]: Origin 'https:\/\/\[REDACTED\]@shop\.example' holds credentials/,
  );
  assert.doesNotMatch(JSON.stringify(refusedError), /pw/);

  // Stored by a release that took it: served as it was.
  const stored = await appStoring("signups", wild, { malformedOrigins: true });
  assert.equal((await stored.request("/v1/streams/signups")).status, 200);
  const sent = await ingest(stored, "signups", [{ t: "2026-01-01T00:00:00Z", plan: "a" }]);
  assert.equal(sent.status, 202, await sent.clone().text());
  await sent.body?.cancel();
  // Sent again it is refused; fixed, it is taken.
  assert.equal((await put(stored, "signups", { ...wild, description: "kept" })).status, 400);
  const fixed = { ...wild, origins: ["https://shop.example"] };
  assert.equal((await put(stored, "signups", fixed)).status, 200);
});

Deno.test("a duration with a fraction of a millisecond or a unit given twice is 400 invalid_definition naming its path; a stream stored with one before is served as it was read then, said once on load, and a PUT must fix it", async () => {
  const app = await appWith();
  for (
    const [window, message] of [
      [
        { tumbling: "1m1m" },
        "Invalid stream definition: counters.perMinute.window.tumbling: Cannot read duration '1m1m' at position 2: unit 'm' is given twice; give each unit once",
      ],
      [
        { tumbling: "0.6ms" },
        "Invalid stream definition: counters.perMinute.window.tumbling: Cannot read duration '0.6ms': '0.6ms' is not a whole number of milliseconds; a duration is counted in whole ms",
      ],
    ] as const
  ) {
    const refused = await put(app, "signups", {
      ...SIGNUPS,
      counters: { perMinute: { ...SIGNUPS.counters.perMinute, window } },
    });
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.deepEqual([error.code, error.message], ["invalid_definition", message]);
  }
  assert.equal((await app.request("/v1/streams/signups")).status, 404);

  // Stored by a release that took it: served as read then (2 minutes), said once on load.
  const twice = {
    ...SIGNUPS,
    counters: { perMinute: { ...SIGNUPS.counters.perMinute, window: { tumbling: "1m1m" } } },
  };
  const [stored, logged] = await collectingLogs(async (records) => {
    const stored = await appStoring("signups", twice, { malformedDurations: true });
    for (let i = 0; i < 2; i++) {
      const read = await stored.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    return [stored, records.filter((record) => record.level === "warning").map(messageOf)];
  });
  assert.deepEqual(logged, [
    "Stored stream 'signups' version 1: streams.signups.counters.perMinute.window.tumbling: Cannot read duration '1m1m' at position 2: unit 'm' is given twice; give each unit once; served as stored before this check; replace it with PUT /v1/streams/signups, which refuses it as it is",
  ]);
  const sent = await ingest(stored, "signups", [{ t: "2026-01-01T00:00:00Z", plan: "a" }]);
  assert.equal(sent.status, 202, await sent.clone().text());
  await sent.body?.cancel();
  const counter = await (await stored.request("/v1/streams/signups/counters/perMinute")).json();
  assert.equal(counter.windows[0].end, "2026-01-01T00:02:00.000Z", JSON.stringify(counter));
  // Sent again it is refused; fixed (the same 2 minutes), it is taken.
  assert.equal((await put(stored, "signups", { ...twice, description: "kept" })).status, 400);
  const fixed = {
    ...twice,
    counters: { perMinute: { ...twice.counters.perMinute, window: { tumbling: "2m" } } },
  };
  assert.equal((await put(stored, "signups", fixed)).status, 200);
});

/**
 * An option that does nothing (`refused`: `accepted` with it): `PUT` refuses it (400
 * invalid_definition with `problem` at `path`) and changes nothing, creating or replacing; a
 * stream stored with it before (compiled with `lenient`) is served, said once on load, refused
 * when sent again with it and taken without it.
 */
async function checkRefusedOption(
  { accepted, refused, path, problem, lenient }: {
    accepted: Record<string, unknown>;
    refused: Record<string, unknown>;
    path: string;
    problem: string;
    lenient: CompileOptions;
  },
): Promise<Awaited<ReturnType<typeof appWith>>> {
  const message = `Invalid stream definition: ${path}: ${problem}`;
  const app = await appWith();
  const refusal = await put(app, "signups", refused);
  assert.equal(refusal.status, 400);
  const error = await errorOf(refusal);
  assert.deepEqual([error.code, error.message], ["invalid_definition", message]);
  assert.equal((await app.request("/v1/streams/signups")).status, 404);
  // Replacing a stream: refused, the stream served as it was.
  assert.equal((await put(app, "signups", accepted)).status, 201);
  const before = await app.request("/v1/streams/signups");
  const tag = before.headers.get("ETag");
  await before.body?.cancel();
  const replaced = await put(app, "signups", { ...refused, description: "changed" });
  assert.equal(replaced.status, 400);
  const replacedError = await errorOf(replaced);
  assert.deepEqual([replacedError.code, replacedError.message], ["invalid_definition", message]);
  const after = await app.request("/v1/streams/signups");
  assert.equal(after.headers.get("ETag"), tag);
  assert.equal((await after.json()).definition.description, SIGNUPS.description);

  // Stored by a release that took it (and did nothing with it): served, said once on load.
  const [stored, logged] = await collectingLogs(async (records) => {
    const stored = await appStoring("signups", refused, lenient);
    for (let i = 0; i < 2; i++) {
      const read = await stored.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    return [stored, records.filter((record) => record.level === "warning").map(messageOf)];
  });
  assert.deepEqual(logged, [
    `Stored stream 'signups' version 1: streams.signups.${path}: ${problem}; served as stored before this check; replace it with PUT /v1/streams/signups, which refuses it as it is`,
  ]);
  // Sent again it is refused; without it, it is taken.
  assert.equal((await put(stored, "signups", { ...refused, description: "kept" })).status, 400);
  assert.equal((await put(stored, "signups", accepted)).status, 200);
  return app;
}

Deno.test("PUT /v1/streams/{stream} refuses maxGroups on a session counter (400 invalid_definition naming its path) and changes nothing; a stream stored with it before is served, said once on load", async () => {
  const visits = {
    ...SIGNUPS,
    counters: { visits: { window: { session: "30m" }, groupBy: ["plan"], aggregate: "count" } },
  };
  await checkRefusedOption({
    accepted: visits,
    refused: { ...visits, counters: { visits: { ...visits.counters.visits, maxGroups: 50 } } },
    path: "counters.visits.maxGroups",
    problem:
      "only tumbling, hopping and sliding windows have maxGroups; this window is session, whose cap is maxSessions: remove maxGroups",
    lenient: { sessionMaxGroups: true },
  });
});

Deno.test("PUT /v1/streams/{stream} refuses time.maxFuture without time.field (400 invalid_definition naming its path) and changes nothing; lateness is taken; a stream stored with it before is served, said once on load", async () => {
  const app = await checkRefusedOption({
    accepted: { ...SIGNUPS, time: { lateness: "1m" } },
    refused: { ...SIGNUPS, time: { lateness: "1m", maxFuture: "1h" } },
    path: "time.maxFuture",
    problem:
      "only a stream with time.field has maxFuture; this one has none, so each event is timed when it is received, never ahead of the clock: remove maxFuture or set time.field",
    lenient: { receiveTimeMaxFuture: true },
  });
  // With time.field it is taken.
  assert.equal(
    (await put(app, "signups", { ...SIGNUPS, time: { field: "t", maxFuture: "1h" } })).status,
    200,
  );
});

Deno.test("a window shorter than 1s is 400 invalid_definition naming its path; a stream stored with one before is served as it was, said once on load, and a PUT may keep that counter as it is but add none so short", async () => {
  const app = await appWith();
  const fast = (window: object) => ({
    ...SIGNUPS,
    counters: { ...SIGNUPS.counters, fast: { window, aggregate: "count" } },
  });
  for (
    const [window, path, message] of [
      [{ tumbling: "500ms" }, "tumbling", "Window size is 500 ms"],
      [{ hopping: "2s", every: "100ms" }, "every", "Hop ('every') is 100 ms"],
      [{ sliding: "500ms", precision: "250ms" }, "sliding", "Window size is 500 ms"],
      [{ session: "999ms" }, "session", "Session gap is 999 ms"],
    ] as const
  ) {
    const refused = await put(app, "signups", fast(window));
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.deepEqual([error.code, error.message], [
      "invalid_definition",
      `Invalid stream definition: counters.fast.window.${path}: ${message}, shorter than the minimum of 1s: a sweep closes a bounded number of a counter's windows each run, so windows this short would close later and later behind a steady stream of events; use '1s' or more`,
    ]);
  }
  assert.equal((await app.request("/v1/streams/signups")).status, 404);
  assert.equal((await put(app, "signups", fast({ tumbling: "1s" }))).status, 201);

  // Stored by a release that took it: served as it was, said once on load.
  const stored = fast({ tumbling: "100ms" });
  const [served, logged] = await collectingLogs(async (records) => {
    const served = await appStoring("signups", stored, { shortWindows: true });
    for (let i = 0; i < 2; i++) {
      const read = await served.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    return [served, records.filter((record) => record.level === "warning").map(messageOf)];
  });
  assert.deepEqual(logged, [
    "Stored stream 'signups' version 1: streams.signups.counters.fast.window.tumbling: Window size is 100 ms, shorter than the minimum of 1s: a sweep closes a bounded number of a counter's windows each run, so windows this short would close later and later behind a steady stream of events; use '1s' or more; served as stored before this check (its windows may close later and later behind its events); a PUT may keep this counter as it is, but adds none this short",
  ]);
  const sent = await ingest(served, "signups", [{ t: "2026-01-01T00:00:00.250Z", plan: "a" }]);
  assert.equal(sent.status, 202, await sent.clone().text());
  await sent.body?.cancel();
  const counter = await (await served.request("/v1/streams/signups/counters/fast")).json();
  assert.deepEqual(
    [counter.windows[0].start, counter.windows[0].end],
    ["2026-01-01T00:00:00.200Z", "2026-01-01T00:00:00.300Z"],
    JSON.stringify(counter),
  );
  // Its other parts may change, the counter kept as it is; a new counter so short is refused.
  assert.equal((await put(served, "signups", { ...stored, description: "kept" })).status, 200);
  const more = {
    ...stored,
    counters: { ...stored.counters, faster: { window: { tumbling: "10ms" }, aggregate: "count" } },
  };
  const refused = await put(served, "signups", more);
  assert.equal(refused.status, 400);
  assert.match(
    (await errorOf(refused)).message,
    /^Invalid stream definition: counters\.faster\.window\.tumbling: Window size is 10 ms, shorter than the minimum of 1s/,
  );
});

Deno.test("PUT /v1/streams/{stream} answers an idle stream's watermark by the app's clock, as GET does", async () => {
  const app = await appWith();
  const idle = { ...SIGNUPS, time: { field: "t", idle: "1m" } };
  assert.equal((await put(app, "signups", idle)).status, 201);
  assert.equal((await ingest(app, "signups", [{ t: T0 - 600_000, plan: "a" }])).status, 202);
  const changed = await put(app, "signups", { ...idle, description: "Sign-ups, idle" });
  assert.equal(changed.status, 200);
  const read = await (await app.request("/v1/streams/signups")).json();
  // The clock less idle (the event is older), not the wall clock's.
  assert.equal(read.stats.watermark, new Date(T0 - 60_000).toISOString());
  assert.equal((await changed.json()).stats.watermark, read.stats.watermark);
});

Deno.test("PUT /v1/streams/__proto__ is 400 invalid_request about the name, which a config file cannot hold either, not a definition error about a key the body lacks", async () => {
  const app = await appWith();
  const res = await put(app, "__proto__", SIGNUPS);
  assert.equal(res.status, 400);
  const { error } = await res.json();
  assert.equal(error.code, "invalid_request");
  assert.match(error.message, /^Invalid path parameter stream: '__proto__' cannot name a stream/);
  const listed = await (await app.request("/v1/streams")).json();
  assert.deepEqual(listed.streams.map((item: { name: string }) => item.name), ["orders"]);
});

/**
 * `definitions` whose first `parties` writes wait for one another, then go on in the order they
 * came: each was begun after reading the same record, as two instances' requests at once do.
 */
function writesMeet(definitions: DefinitionStore, parties: number): DefinitionStore {
  let arrived = 0;
  const met = Promise.withResolvers<void>();
  let turn = Promise.resolve();
  return new Proxy(definitions, {
    get(target, property) {
      if (property === "write") {
        return async (...args: Parameters<DefinitionStore["write"]>) => {
          if (arrived >= parties) return await target.write(...args);
          arrived += 1;
          if (arrived === parties) met.resolve();
          await met.promise;
          const mine = turn.then(() => target.write(...args));
          turn = mine.then(() => {}, () => {});
          return await mine;
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** Two instances' PUTs of one definition at once: one creates, the other is told it did not. */
async function identicalCreations(definitions: DefinitionStore) {
  const both = async (name: string, headers: Record<string, string>) => {
    const meeting = writesMeet(definitions, 2);
    const instance = async () =>
      createApp({
        streams: new StreamRegistry(compileConfig({ streams: {} }), {
          definitions: meeting,
          now: () => T0,
          pollMs: 0,
        }),
        store: new MemoryStore({ now: () => T0 }),
        keys: await KeyRing.parse(""),
        now: () => T0,
      });
    const [a, b] = [await instance(), await instance()];
    const answers = await Promise.all([
      put(a, name, SIGNUPS, headers),
      put(b, name, SIGNUPS, headers),
    ]);
    return await Promise.all(
      answers.map(async (res) => [
        res.status,
        res.headers.get("ETag"),
        (await res.json()).error?.code,
      ]),
    );
  };
  // With If-None-Match: * only the one that created succeeds (RFC 9110 §13.1.2).
  assert.deepEqual(
    (await both("signups", { "If-None-Match": "*" })).sort(),
    [[201, '"1"', undefined], [412, null, "precondition_failed"]],
  );
  // Without: the other PUT found the definition stored, a change of nothing (200, same version).
  assert.deepEqual(
    (await both("orders", {})).sort(),
    [[200, '"1"', undefined], [201, '"1"', undefined]],
  );
}

Deno.test("Memory store: of two instances' identical PUTs at once, one creates (201) and the other is 412 with If-None-Match: *, else 200 at the same version", () =>
  identicalCreations(new MemoryDefinitionStore()));

redisTest(
  "Redis store: of two instances' identical PUTs at once, one creates (201) and the other is 412 with If-None-Match: *, else 200 at the same version",
  (fixture) =>
    identicalCreations(
      new RedisDefinitionStore(
        restClient(fixture),
      ),
    ),
);

Deno.test("a stream stored before a check it fails (an origin no browser sends, a schema keyword not of its kind) is served, and its load says so once, naming the path", async () => {
  const definition = {
    ...SIGNUPS,
    schema: { type: "object", properties: { plan: { type: "string", minimum: "1" } } },
    origins: ["https://shop.example", "https://user:pw-0123@shop.example"],
  };
  const logged = await collectingLogs(async (records) => {
    const stored = await appStoring("signups", definition, {
      malformedOrigins: true,
      malformedSchemaKeywords: true,
    });
    for (let i = 0; i < 2; i++) {
      const read = await stored.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    return records.filter((record) => record.level === "warning").map(messageOf);
  });
  assert.equal(logged.length, 2, logged.join("\n"));
  assert.match(
    logged[0],
    /^Stored stream 'signups' version 1: streams\.signups\.schema: .*minimum.*; served as stored before this check; replace it with PUT \/v1\/streams\/signups/,
  );
  assert.match(
    logged[1],
    /^Stored stream 'signups' version 1: streams\.signups\.origins\[1\]: Origin 'https:\/\/\[REDACTED\]@shop\.example' holds credentials/,
  );
  assert.doesNotMatch(logged.join("\n"), /pw-0123/);
});

Deno.test("a stream whose schema is past the expanded size, stored before that check, is served and its load says so once; a PUT of it is refused", async () => {
  // 15 definitions, each an anyOf of two $refs to the next: about 5 * 2^15 once expanded.
  const $defs: Record<string, unknown> = { d15: { type: "string" } };
  for (let i = 0; i < 15; i++) {
    $defs[`d${i}`] = { anyOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] };
  }
  const definition = {
    ...SIGNUPS,
    schema: { type: "object", properties: { plan: { $ref: "#/$defs/d0" } }, $defs },
  };
  const logged = await collectingLogs(async (records) => {
    const stored = await appStoring("signups", definition, { largeSchemaExpansion: true });
    for (let i = 0; i < 2; i++) {
      const read = await stored.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    const taken = await ingest(stored, "signups", [{ t: T0, plan: "pro" }]);
    assert.equal(taken.status, 202, await taken.clone().text());
    await taken.body?.cancel();
    const again = await put(stored, "signups", definition);
    assert.equal(again.status, 400);
    assert.match(
      (await again.json()).error.message,
      /^Invalid stream definition: schema: .*holds more than 131072 objects and arrays once its \$refs are expanded/,
    );
    return records.filter((record) => record.level === "warning").map(messageOf);
  });
  assert.deepEqual(logged, [
    "Stored stream 'signups' version 1: streams.signups.schema: it holds more than 131072 objects and arrays once its $refs are expanded (each event value is checked against every anyOf/oneOf member that applies to it); served as stored before this check; replace it with PUT /v1/streams/signups, which refuses it as it is",
  ]);
});

Deno.test("PUT /v1/streams/{stream} refuses an alert naming a group or window field its windows lack (400 invalid_definition naming its path and the fields); one stored before is served, its load says so once, and a PUT must fix it", async () => {
  const app = await appWith();
  const typo = {
    ...SIGNUPS,
    alerts: [
      { name: "busy", counter: "perMinute", when: "value > 100.0" },
      { name: "pro", counter: "perMinute", when: `group.paln == "pro" && value > 10.0` },
    ],
  };
  for (
    const [alerts, message] of [
      [
        typo.alerts,
        "Invalid stream definition: alerts[1].when: group has no field 'paln'; it has the groupBy fields of counter 'perMinute': plan",
      ],
      [
        [{ name: "late", counter: "perMinute", when: `window.strat < "2026"` }],
        "Invalid stream definition: alerts[0].when: window has no field 'strat'; it has: counter, start, end",
      ],
    ] as const
  ) {
    const refused = await put(app, "signups", { ...SIGNUPS, alerts });
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.deepEqual([error.code, error.message], ["invalid_definition", message]);
  }
  assert.equal((await app.request("/v1/streams/signups")).status, 404);
  const valid = {
    ...SIGNUPS,
    alerts: [{
      name: "pro",
      counter: "perMinute",
      when: `has(group.plan) && group["plan"] == "pro" && window.start < window.end`,
    }],
  };
  assert.equal((await put(app, "signups", valid)).status, 201);

  // Stored by a release that took it: served as it was, said once on load.
  const [stored, logged] = await collectingLogs(async (records) => {
    const stored = await appStoring("signups", typo, { unknownAlertFields: true });
    for (let i = 0; i < 2; i++) {
      const read = await stored.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    return [stored, records.filter((record) => record.level === "warning").map(messageOf)];
  });
  assert.deepEqual(logged, [
    "Stored stream 'signups' version 1: streams.signups.alerts[1].when: group has no field 'paln'; it has the groupBy fields of counter 'perMinute': plan; served as stored before this check; replace it with PUT /v1/streams/signups, which refuses it as it is",
  ]);
  const sent = await ingest(stored, "signups", [{ t: "2026-01-01T00:00:00Z", plan: "pro" }]);
  assert.equal(sent.status, 202, await sent.clone().text());
  await sent.body?.cancel();
  // Sent again it is refused; fixed, it is taken.
  assert.equal((await put(stored, "signups", { ...typo, description: "kept" })).status, 400);
  assert.equal((await put(stored, "signups", valid)).status, 200);
});

Deno.test("PUT /v1/streams/{stream} refuses an alert naming a field of a value that is a number, or a quantile its counter's value lacks (400 invalid_definition naming its path, the field and what value is); one stored before is served, its load says so once, and a PUT must fix it", async () => {
  const app = await appWith();
  const counters = {
    ...SIGNUPS.counters,
    latency: { window: { tumbling: "1m" }, aggregate: { quantiles: "ms" } },
  };
  const typo = {
    ...SIGNUPS,
    counters,
    alerts: [
      { name: "busy", counter: "perMinute", when: "value > 100.0" },
      { name: "slow", counter: "perMinute", when: "value.p99 > 500.0" },
    ],
  };
  for (
    const [alerts, message] of [
      [
        typo.alerts,
        "Invalid stream definition: alerts[1].when: value has no field 'p99'; counter 'perMinute' aggregates count, so value is a number",
      ],
      [
        [{ name: "slowest", counter: "latency", when: `value["p99.9"] > 500.0` }],
        "Invalid stream definition: alerts[0].when: value has no field 'p99.9'; counter 'latency' computes quantiles, so value has: count, min, max, approximate, p50, p90, p95, p99",
      ],
    ] as const
  ) {
    const refused = await put(app, "signups", { ...SIGNUPS, counters, alerts });
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.deepEqual([error.code, error.message], ["invalid_definition", message]);
  }
  assert.equal((await app.request("/v1/streams/signups")).status, 404);
  const valid = {
    ...SIGNUPS,
    counters,
    alerts: [
      { name: "busy", counter: "perMinute", when: "value > 100.0" },
      { name: "slow", counter: "latency", when: "has(value.p99) && value.p99 > 500.0" },
    ],
  };
  assert.equal((await put(app, "signups", valid)).status, 201);

  // Stored by a release that took it: served as it was, said once on load.
  const [stored, logged] = await collectingLogs(async (records) => {
    const stored = await appStoring("signups", typo, { unknownAlertFields: true });
    for (let i = 0; i < 2; i++) {
      const read = await stored.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    return [stored, records.filter((record) => record.level === "warning").map(messageOf)];
  });
  assert.deepEqual(logged, [
    "Stored stream 'signups' version 1: streams.signups.alerts[1].when: value has no field 'p99'; counter 'perMinute' aggregates count, so value is a number; served as stored before this check; replace it with PUT /v1/streams/signups, which refuses it as it is",
  ]);
  const sent = await ingest(stored, "signups", [{ t: "2026-01-01T00:00:00Z", plan: "pro" }]);
  assert.equal(sent.status, 202, await sent.clone().text());
  await sent.body?.cancel();
  // Sent again it is refused; fixed, it is taken.
  assert.equal((await put(stored, "signups", { ...typo, description: "kept" })).status, 400);
  assert.equal((await put(stored, "signups", valid)).status, 200);
});

/** What `run` answers, asserting that RE2 compiled no pattern meanwhile. */
async function compilingNone<T>(run: () => T | Promise<T>): Promise<T> {
  const compile = RE2JS.compile;
  let compiled = 0;
  RE2JS.compile = (...args: Parameters<typeof compile>) => {
    compiled++;
    return compile(...args);
  };
  try {
    return await run();
  } finally {
    RE2JS.compile = compile;
    assert.equal(compiled, 0, "patterns compiled");
  }
}

/** A pattern of 2,003 instructions once its repeats are expanded, told apart by `index`. */
function costly(index: number): string {
  return `[a-z]{1000}[^x]{999}|${index}`;
}

Deno.test("PUT /v1/streams/{stream} refuses patterns past MAX_DEFINITION_PATTERN_SIZE together (schema, transform and alerts) with 400 invalid_definition naming the first past it, before compiling any, and changes nothing", async () => {
  const app = await appWith();
  assert.equal((await put(app, "signups", SIGNUPS)).status, 201);
  const before = await (await app.request("/v1/streams/signups")).json();
  // Ten schema patterns: the eighth brings 16,024 (a thousand of them took seconds to compile).
  const properties = Object.fromEntries(
    Array.from(
      { length: 10 },
      (_, index) => [`f${index}`, { type: "string", pattern: costly(index) }],
    ),
  );
  const schemaOnly = await compilingNone(() =>
    put(app, "signups", { ...SIGNUPS, schema: { type: "object", properties } })
  );
  assert.equal(schemaOnly.status, 400);
  assert.deepEqual(await errorOf(schemaOnly), {
    code: "invalid_definition",
    message:
      "Invalid stream definition: schema.properties.f7.pattern: the stream's patterns would compile to 16024 instructions with this one (2003), past the 16000 a definition may have together (a pattern counts its size once its repeats are expanded: [a-z]{1000} is 1002; a character class 1 more for each 32 ranges of characters it holds: [\\p{L}] is about 24; each at most 5000 without its classes' ranges); shorten or drop patterns",
    requestId: schemaOnly.headers.get("X-Request-Id"),
  });
  // One pattern past MAX_PATTERN_SIZE on its own.
  const single = await compilingNone(() =>
    put(app, "signups", {
      ...SIGNUPS,
      schema: { type: "object", properties: { sku: { pattern: "[a-z]{1000}".repeat(6) } } },
    })
  );
  assert.equal(single.status, 400);
  assert.match(
    (await errorOf(single)).message,
    /^Invalid stream definition: schema\.properties\.sku\.pattern: Pattern '(\[a-z\]\{1000\}){6}' is too large: it compiles to about 6002 instructions once its repeats are expanded, past the 5000 a pattern may have/,
  );
  // Counted together: five in the schema, two literal matches() in the transform, one in an alert.
  const mixed = {
    ...SIGNUPS,
    schema: {
      type: "object",
      patternProperties: Object.fromEntries(
        Array.from({ length: 5 }, (_, index) => [costly(index), { type: "string" }]),
      ),
    },
    transform: [
      { filter: `!has(event.a) || event.a.matches("${costly(5)}")` },
      { set: { b: `has(event.b) && matches(event.b, "${costly(6)}")` } },
    ],
    alerts: [{ name: "eu", counter: "perMinute", when: `group.plan.matches("${costly(7)}")` }],
  };
  const together = await compilingNone(() => put(app, "signups", mixed));
  assert.equal(together.status, 400);
  assert.match(
    (await errorOf(together)).message,
    /^Invalid stream definition: alerts\[0\]\.when: the stream's patterns would compile to 16024 instructions with this one \(2003\), past the 16000/,
  );
  // One fewer: taken.
  const fewer = await put(app, "signups", { ...mixed, alerts: [] });
  assert.equal(fewer.status, 200, await fewer.clone().text());
  // The refusals changed nothing (the version went from 1 to 2 by the taken one only).
  const after = await (await app.request("/v1/streams/signups")).json();
  assert.equal(before.version, 1);
  assert.equal(after.version, 2);
  const again = await put(app, "signups", { ...SIGNUPS, schema: { type: "object", properties } });
  assert.equal(again.status, 400);
  assert.equal((await (await app.request("/v1/streams/signups")).json()).version, 2);
});

Deno.test("PUT /v1/streams/{stream} takes a large definition of ordinary patterns (300 in the schema, 40 in matches()), well within the budget", async () => {
  const ordinary = [
    "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$",
    "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
    "^[A-Z]{2}$",
  ];
  const properties = Object.fromEntries(
    Array.from({ length: 300 }, (_, index) => [`f${index}`, {
      type: "string",
      pattern: `${ordinary[index % 3]}|^${index}$`,
    }]),
  );
  const transform = Array.from({ length: 40 }, (_, index) => ({
    filter: `!has(event.f${index}) || event.f${index}.matches("${
      ordinary[index % 3].replaceAll("\\", "\\\\")
    }|^${index}$")`,
  }));
  const app = await appWith();
  const created = await put(app, "signups", {
    ...SIGNUPS,
    schema: { type: "object", properties },
    transform,
  });
  assert.equal(created.status, 201, await created.clone().text());
  const sent = await ingest(app, "signups", [
    {
      t: "2026-01-01T00:00:00Z",
      plan: "a",
      f0: "a@b.example",
      f1: "0f8fad5b-d9cb-469f-a165-70867728950e",
      f2: "DE",
    },
    { t: "2026-01-01T00:00:00Z", plan: "a", f2: "Germany" },
  ]);
  assert.equal(sent.status, 202);
  assert.equal((await sent.json()).accepted, 1);
  // 8,446 instructions together; two patterns of 4,002 more in the schema, counted before the
  // transform, bring its 22nd past the budget.
  const costlier = {
    ...SIGNUPS,
    schema: {
      type: "object",
      properties: {
        ...properties,
        big1: { pattern: "[a-z]{1000}".repeat(4) },
        big2: { pattern: "[A-Z]{1000}".repeat(4) },
      },
    },
    transform,
  };
  const refused = await put(app, "signups", costlier);
  assert.equal(refused.status, 400);
  assert.match(
    (await errorOf(refused)).message,
    /^Invalid stream definition: transform\[21\]\.filter: the stream's patterns would compile to 16012 instructions with this one \(17\)/,
  );
});

/** A pattern of 1,003 instructions, 40,003 with its classes' ranges, told apart by `index`. */
function classHeavy(index: number): string {
  return `^[\\p{L}\\p{N}\\p{S}\\p{P}]{1000}|${index}`;
}

Deno.test("PUT /v1/streams/{stream} counts a pattern's character classes by their ranges against MAX_DEFINITION_PATTERN_SIZE; a stream stored before is served as it was, said once on load", async () => {
  const app = await appWith();
  // Its classes' ranges are looked up once (by compiling each class alone), before counting.
  patternCompileSize(classHeavy(0));
  // 15 in the schema: 15,045 instructions by patternSize (taken before), 0.35–1.2 s to compile.
  const properties = Object.fromEntries(
    Array.from({ length: 15 }, (_, index) => [`f${index}`, {
      type: "string",
      pattern: classHeavy(index),
    }]),
  );
  const schema = await compilingNone(() =>
    put(app, "signups", { ...SIGNUPS, schema: { type: "object", properties } })
  );
  assert.equal(schema.status, 400);
  assert.match(
    (await errorOf(schema)).message,
    /^Invalid stream definition: schema\.properties\.f0\.pattern: the stream's patterns would compile to 40005 instructions with this one \(40005\), past the 16000 a definition may have together .*a character class 1 more for each 32 ranges of characters it holds: \[\\p\{L\}\] is about 24/,
  );
  const over = {
    ...SIGNUPS,
    transform: [{
      filter: `!has(event.a) || event.a.matches("${classHeavy(0).replaceAll("\\", "\\\\")}")`,
    }],
  };
  const transform = await put(app, "signups", over);
  assert.equal(transform.status, 400);
  assert.match(
    (await errorOf(transform)).message,
    /^Invalid stream definition: transform\[0\]\.filter: the stream's patterns would compile to 40005 instructions/,
  );
  // A few Unicode classes: taken.
  const names = {
    ...SIGNUPS,
    schema: {
      type: "object",
      properties: {
        name: { type: "string", pattern: "^[\\p{L} .'-]+$" },
        country: { type: "string", pattern: "^\\p{Lu}{2}$" },
      },
    },
    transform: [{ filter: `!has(event.city) || event.city.matches("^[\\\\p{L} .'-]+$")` }],
  };
  const taken = await put(app, "signups", names);
  assert.equal(taken.status, 201, await taken.clone().text());
  const sentNames = await ingest(app, "signups", [
    { t: "2026-01-01T00:00:00Z", plan: "a", name: "Zoë", country: "BR", city: "São Paulo" },
  ]);
  assert.equal((await sentNames.json()).accepted, 1);
  // Stored before this check: served (its filter compiled as it was), warned about once.
  const [stored, logged] = await collectingLogs(async (records) => {
    const stored = await appStoring("signups", over, { oversizedPatterns: true });
    for (let i = 0; i < 2; i++) {
      const read = await stored.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    return [stored, records.filter((record) => record.level === "warning").map(messageOf)];
  });
  assert.equal(logged.length, 1);
  assert.match(
    logged[0],
    /^Stored stream 'signups' version 1: streams\.signups\.transform\[0\]\.filter: the stream's patterns would compile to 40005 instructions .*; served as stored before this check; replace it with PUT \/v1\/streams\/signups, which refuses it as it is$/,
  );
  const sent = await ingest(stored, "signups", [
    { t: "2026-01-01T00:00:00Z", plan: "a", a: "3" },
    { t: "2026-01-01T00:00:00Z", plan: "a", a: "0" },
  ]);
  assert.equal(sent.status, 202);
  const body = await sent.json();
  assert.equal(body.accepted, 2);
  assert.equal(body.filtered, 1);
});

Deno.test("a stream stored with patterns past the budget before it is served as it was, said once on load, and a PUT must bring it within", async () => {
  const properties = Object.fromEntries(
    Array.from(
      { length: 9 },
      (_, index) => [`f${index}`, { type: "string", pattern: costly(index) }],
    ),
  );
  const over = { ...SIGNUPS, schema: { type: "object", properties } };
  const [stored, logged] = await collectingLogs(async (records) => {
    const stored = await appStoring("signups", over, { oversizedPatterns: true });
    for (let i = 0; i < 2; i++) {
      const read = await stored.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    return [stored, records.filter((record) => record.level === "warning").map(messageOf)];
  });
  assert.equal(logged.length, 1);
  assert.match(
    logged[0],
    /^Stored stream 'signups' version 1: streams\.signups\.schema\.properties\.f7\.pattern: the stream's patterns would compile to 16024 instructions .*; served as stored before this check; replace it with PUT \/v1\/streams\/signups, which refuses it as it is$/,
  );
  const sent = await ingest(stored, "signups", [{ t: "2026-01-01T00:00:00Z", plan: "a" }]);
  assert.equal(sent.status, 202);
  await sent.body?.cancel();
  assert.equal((await put(stored, "signups", { ...over, description: "kept" })).status, 400);
  const within = { ...over, schema: { type: "object", properties: { f0: properties.f0 } } };
  assert.equal((await put(stored, "signups", within)).status, 200);
});

Deno.test("a stream stored before the 5,000-instruction bound with a pattern past it is served as it was, said once on load, and a PUT of it is still refused", async () => {
  // Written as an earlier release stored it: nothing now compiles it with a pattern this large.
  const big = "[a-z]{1000}".repeat(6);
  const over = {
    ...SIGNUPS,
    schema: { type: "object", properties: { sku: { type: "string", pattern: `^x|${big}` } } },
    transform: [{ filter: `!has(event.a) || event.a.matches("^0|${big}")` }],
  };
  const definitions = new MemoryDefinitionStore();
  const written = await definitions.write("signups", {
    source: "api",
    generation: 1,
    definition: over,
    counters: counterIdentities(compileStreamDefinition("signups", SIGNUPS)),
    deleted: false,
  }, 0);
  assert.equal(written.status, "written");
  const [stored, logged] = await collectingLogs(async (records) => {
    const stored = createApp({
      streams: new StreamRegistry(compileConfig(CONFIG), { definitions, now: () => T0, pollMs: 0 }),
      store: new MemoryStore({ now: () => T0 }),
      keys: await KeyRing.parse(""),
      now: () => T0,
    });
    for (let i = 0; i < 2; i++) {
      const read = await stored.request("/v1/streams/signups");
      assert.equal(read.status, 200, await read.clone().text());
      await read.body?.cancel();
    }
    const noted = records.filter((record) =>
      record.level === "warning" || record.level === "error"
    );
    return [stored, noted.map(messageOf)];
  });
  // The first pattern past a bound, as for patterns past the definition's budget.
  assert.deepEqual(logged, [
    `Stored stream 'signups' version 1: streams.signups.schema.properties.sku.pattern: Pattern '^x|${big}' is too large: it compiles to about 6005 instructions once its repeats are expanded, past the 5000 a pattern may have ([a-z]{1000} is 1002); served as stored before this check; replace it with PUT /v1/streams/signups, which refuses it as it is`,
  ]);
  const sent = await ingest(stored, "signups", [
    { t: "2026-01-01T00:00:00Z", plan: "a", sku: "x", a: "0" },
    { t: "2026-01-01T00:00:00Z", plan: "a", sku: "x", a: "1" },
    { t: "2026-01-01T00:00:00Z", plan: "a", sku: "y" },
  ]);
  assert.equal(sent.status, 202, await sent.clone().text());
  const body = await sent.json();
  // Its schema's pattern and its filter's both tested: sku 'y' refused, a: '1' filtered out.
  assert.equal(body.accepted, 2, JSON.stringify(body));
  assert.equal(body.filtered, 1);
  assert.deepEqual(body.rejected.map((item: { index: number }) => item.index), [2]);
  const refused = await put(stored, "signups", { ...over, description: "kept" });
  assert.equal(refused.status, 400);
  assert.match(
    (await errorOf(refused)).message,
    /schema\.properties\.sku\.pattern: .*past the 5000/,
  );
});

Deno.test("PUT /v1/streams/{stream} refuses a counter field its closed schema can never hold (400 invalid_definition naming its path and the fields the schema holds); one stored before is served, its load says so once, and a PUT must fix it", async () => {
  const app = await appWith();
  const schema = {
    type: "object",
    additionalProperties: false,
    properties: { t: { type: "string" }, plan: { type: "string" }, amount: { type: "number" } },
  };
  const counter = (extra: Record<string, unknown>) => ({
    ...SIGNUPS,
    schema,
    counters: {
      ...SIGNUPS.counters,
      revenue: { window: { tumbling: "1m" }, aggregate: { sum: "amount" }, ...extra },
    },
  });
  const typo = counter({ aggregate: { sum: "amont" } });
  const why =
    `is not in the schema, which holds no other fields ("additionalProperties": false), and no transform sets it, so it is always missing; the schema holds: t, plan, amount`;
  for (
    const [definition, message] of [
      [typo, `counters.revenue.aggregate.sum: Field 'amont' ${why}`],
      [counter({ groupBy: ["contry"] }), `counters.revenue.groupBy[0]: Field 'contry' ${why}`],
    ] as const
  ) {
    const refused = await put(app, "signups", definition);
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.deepEqual(
      [error.code, error.message],
      ["invalid_definition", `Invalid stream definition: ${message}`],
    );
  }
  assert.equal((await app.request("/v1/streams/signups")).status, 404);
  // Set by a transform, or the schema open: taken.
  const set = { ...typo, transform: [{ set: { amont: "1" } }] };
  assert.equal((await put(app, "signups", set)).status, 201);
  const open = { ...typo, schema: { ...schema, additionalProperties: true } };
  assert.equal((await put(app, "open", open)).status, 201);

  // Stored by a release that took it: served as it was, said once on load.
  const [stored, logged] = await collectingLogs(async (records) => {
    const stored = await appStoring("signups", typo, { unknownCounterFields: true });
    for (let i = 0; i < 2; i++) {
      const read = await stored.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    return [stored, records.filter((record) => record.level === "warning").map(messageOf)];
  });
  assert.deepEqual(logged, [
    `Stored stream 'signups' version 1: streams.signups.counters.revenue.aggregate.sum: Field 'amont' ${why} (the field is always missing: a counter reading it counts nothing or groups as null); fix the field or the schema; served as stored before this check; replace it with PUT /v1/streams/signups, which refuses it as it is`,
  ]);
  assert.equal((await put(stored, "signups", { ...typo, description: "kept" })).status, 400);
  const fixed = { ...typo, schema: { ...schema, properties: { ...schema.properties, amont: {} } } };
  assert.equal((await put(stored, "signups", fixed)).status, 200);
});

Deno.test("PUT /v1/streams/{stream} refuses a field path with an empty part (400 invalid_definition naming its path); one stored before is served, its load says so once, and a PUT may keep such a counter as it is but not add one", async () => {
  const app = await appWith();
  const why =
    "has an empty part (a dot at its start or end, or two dots together); a dotted path names the keys read in turn, as 'user.country'";
  const byEmpty = (groupBy: string[]) => ({
    ...SIGNUPS,
    counters: {
      ...SIGNUPS.counters,
      byEmpty: { window: { tumbling: "1m" }, groupBy, aggregate: "count" },
    },
  });
  for (
    const [definition, message] of [
      [byEmpty(["plan..tier"]), `counters.byEmpty.groupBy[0]: Field path 'plan..tier' ${why}`],
      [
        { ...SIGNUPS, counters: { s: { window: { tumbling: "1m" }, aggregate: { sum: ".n" } } } },
        `counters.s.aggregate.sum: Field path '.n' ${why}`,
      ],
      [{ ...SIGNUPS, time: { field: "t." } }, `time.field: Field path 't.' ${why}`],
      [{ ...SIGNUPS, dedupe: { field: "a..id" } }, `dedupe.field: Field path 'a..id' ${why}`],
    ] as const
  ) {
    const refused = await put(app, "signups", definition);
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.deepEqual(
      [error.code, error.message],
      ["invalid_definition", `Invalid stream definition: ${message}`],
    );
  }
  assert.equal((await app.request("/v1/streams/signups")).status, 404);

  // Stored by a release that took it: served as it was (the key written so counts), said once.
  const stored = byEmpty(["plan..tier"]);
  const [served, logged] = await collectingLogs(async (records) => {
    const served = await appStoring("signups", stored, { emptyPathParts: true });
    for (let i = 0; i < 2; i++) {
      const read = await served.request("/v1/streams/signups");
      assert.equal(read.status, 200);
      await read.body?.cancel();
    }
    return [served, records.filter((record) => record.level === "warning").map(messageOf)];
  });
  assert.deepEqual(logged, [
    `Stored stream 'signups' version 1: streams.signups.counters.byEmpty.groupBy[0]: Field path 'plan..tier' ${why}; served as stored before this check (it reads the key written so, else the parts in turn); a PUT may keep this counter as it is, but adds none with such a path`,
  ]);
  const sent = await ingest(served, "signups", [{ t: T0, "plan..tier": "pro" }]);
  assert.equal(sent.status, 202, await sent.clone().text());
  await sent.body?.cancel();
  const counted = await (await served.request("/v1/streams/signups/counters/byEmpty")).json();
  assert.deepEqual(counted.windows.map((w: { group: unknown }) => w.group), [
    { "plan..tier": "pro" },
  ]);
  // Its other parts may change, the counter kept as it is; a new one, or time.field, is refused.
  assert.equal((await put(served, "signups", { ...stored, description: "kept" })).status, 200);
  const more = {
    ...stored,
    counters: {
      ...stored.counters,
      also: { window: { tumbling: "1m" }, groupBy: [".plan"], aggregate: "count" },
    },
  };
  for (
    const [definition, message] of [
      [more, `counters.also.groupBy[0]: Field path '.plan' ${why}`],
      [{ ...stored, time: { field: ".t" } }, `time.field: Field path '.t' ${why}`],
    ] as const
  ) {
    const refused = await put(served, "signups", definition);
    assert.equal(refused.status, 400);
    assert.equal((await errorOf(refused)).message, `Invalid stream definition: ${message}`);
  }
});

Deno.test("PUT /v1/streams/{stream} refuses a counter field below a closed object schema or removed by a transform's drop, rename or pick (400 invalid_definition naming its path); one stored before is served with a warning once", async () => {
  const app = await appWith();
  const schema = {
    type: "object",
    additionalProperties: false,
    properties: {
      t: { type: "string" },
      user: {
        type: "object",
        additionalProperties: false,
        properties: { plan: { type: "string" } },
      },
      debug: {},
    },
  };
  const counting = (groupBy: string[], transform: unknown[] = []) => ({
    ...SIGNUPS,
    schema,
    transform,
    counters: { perMinute: { window: { tumbling: "1m" }, groupBy, aggregate: "count" } },
  });
  const nested = counting(["user.plna"]);
  for (
    const [definition, message] of [
      [
        nested,
        `counters.perMinute.groupBy[0]: Field 'user.plna' is not in the schema, whose 'user' holds no other fields ("additionalProperties": false), and no transform sets 'user', so it is always missing; 'user' holds: plan`,
      ],
      [
        counting(["debug"], [{ drop: ["debug"] }]),
        `counters.perMinute.groupBy[0]: Field 'debug' is always missing: transform[0] drops 'debug', and no step after it sets 'debug'`,
      ],
      [
        counting(["debug"], [{ rename: { debug: "note" } }]),
        `counters.perMinute.groupBy[0]: Field 'debug' is always missing: transform[0] renames 'debug' to 'note', and no step after it sets 'debug'`,
      ],
      [
        counting(["user.plan", "debug"], [{ pick: ["t", "user"] }]),
        `counters.perMinute.groupBy[1]: Field 'debug' is always missing: transform[0] picks only t, user, and no step after it sets 'debug'`,
      ],
    ] as const
  ) {
    const refused = await put(app, "signups", definition);
    assert.equal(refused.status, 400);
    const error = await errorOf(refused);
    assert.deepEqual(
      [error.code, error.message],
      ["invalid_definition", `Invalid stream definition: ${message}`],
    );
  }
  assert.equal((await app.request("/v1/streams/signups")).status, 404);
  assert.equal((await put(app, "signups", counting(["user.plan"]))).status, 201);

  const [served, logged] = await collectingLogs(async (records) => {
    const served = await appStoring("signups", nested, { unknownCounterFields: true });
    const read = await served.request("/v1/streams/signups");
    assert.equal(read.status, 200);
    await read.body?.cancel();
    return [served, records.filter((record) => record.level === "warning").map(messageOf)];
  });
  assert.equal(logged.length, 1);
  assert.match(
    logged[0],
    /^Stored stream 'signups' version 1: streams\.signups\.counters\.perMinute\.groupBy\[0\]: Field 'user\.plna' is not in the schema, whose 'user' holds no other fields .* \(the field is always missing: a counter reading it counts nothing or groups as null\); fix the field or the schema; served as stored before this check/,
  );
  assert.equal((await put(served, "signups", { ...nested, description: "kept" })).status, 400);
});

/**
 * A lateness raised by PUT before any sweep closed a window a read called final: that window,
 * and a session read as final, stay final and take no event the new lateness would have let in.
 */
async function raisedLatenessKeepsFinal(store: Store, definitions: DefinitionStore) {
  const app = createApp({
    streams: new StreamRegistry(compileConfig(CONFIG), { definitions, now: () => T0, pollMs: 0 }),
    store,
    keys: await KeyRing.parse(""),
    now: () => T0,
  });
  const define = async (lateness: string) => {
    const res = await put(app, "visits", {
      time: { field: "t", lateness },
      counters: {
        perMinute: { window: { tumbling: "1m" }, groupBy: ["plan"], aggregate: "count" },
        sessions: { window: { session: "1m" }, groupBy: ["plan"], aggregate: "count" },
      },
    });
    assert.ok(res.status === 200 || res.status === 201, await res.text());
  };
  const send = async (t: number, plan: string) => {
    const res = await ingest(app, "visits", [{ t, plan }]);
    assert.equal(res.status, 202, await res.clone().text());
    return (await res.json()).late;
  };
  const rows = async (counter: string) => {
    const res = await app.request(
      `/v1/streams/visits/counters/${counter}?from=${T0 - 600_000}&to=${
        T0 - 200_000
      }&group.plan=pro`,
    );
    assert.equal(res.status, 200);
    return (await res.json()).windows.map((
      row: { value: number; final: boolean },
    ) => [row.value, row.final]);
  };
  await define("10s");
  assert.equal(await send(T0 - 300_000, "pro"), 0);
  // The watermark at T0 - 60 s: the window [T0 - 300 s, T0 - 240 s) and the session ending at
  // T0 - 300 s (+ 1 m of gap) are final under 10 s of lateness; no sweep has closed them.
  assert.equal(await send(T0 - 60_000, "free"), 0);
  assert.deepEqual(await rows("perMinute"), [[1, true]]);
  assert.deepEqual(await rows("sessions"), [[1, true]]);
  await define("1h");
  // Within the hour now allowed, but in a window and a session a read called final: late.
  assert.equal(await send(T0 - 290_000, "pro"), 1);
  assert.deepEqual(await rows("perMinute"), [[1, true]]);
  assert.deepEqual(await rows("sessions"), [[1, true]]);
  // Behind the watermark by more than the old 10 s, but after all that was final (T0 - 70 s):
  // the raised lateness takes it.
  assert.equal(await send(T0 - 65_000, "pro"), 0);

  // `idle` dropped: the watermark the clock raised (T0 - 1 m) no longer counts, but what it made
  // final stays so.
  const quiet = async (time: Record<string, string>) => {
    const res = await put(app, "quiet", {
      time: { field: "t", ...time },
      counters: { perMinute: { window: { tumbling: "1m" }, aggregate: "count" } },
    });
    assert.ok(res.status === 200 || res.status === 201, await res.text());
  };
  const late = async (t: number) => {
    const res = await ingest(app, "quiet", [{ t }]);
    assert.equal(res.status, 202, await res.clone().text());
    return (await res.json()).late;
  };
  const quietRows = async () => {
    const res = await app.request(`/v1/streams/quiet/counters/perMinute?to=${T0 - 500_000}`);
    return (await res.json()).windows.map((
      row: { value: number; final: boolean },
    ) => [row.value, row.final]);
  };
  await quiet({ lateness: "10s" });
  assert.equal(await late(T0 - 600_000), 0);
  assert.deepEqual(await quietRows(), [[1, false]]);
  await quiet({ lateness: "10s", idle: "1m" });
  assert.deepEqual(await quietRows(), [[1, true]]);
  await quiet({ lateness: "10s" });
  assert.equal(await late(T0 - 590_000), 1);
  assert.deepEqual(await quietRows(), [[1, true]]);
}

Deno.test("Memory store: a lateness raised by PUT re-opens no window or session a read called final before a sweep closed it", () =>
  raisedLatenessKeepsFinal(new MemoryStore({ now: () => T0 }), new MemoryDefinitionStore()));

redisTest(
  "Redis store: a lateness raised by PUT re-opens no window or session a read called final before a sweep closed it",
  (fixture) => {
    const redis = restClient(fixture);
    return raisedLatenessKeepsFinal(
      new RedisStore(redis, { now: () => T0 }),
      new RedisDefinitionStore(redis),
    );
  },
);

Deno.test("a PUT whose definition is stored but whose reply's stats read fails answers its success, with the ETag and Location and stats null, so the client's precondition goes on", async () => {
  let failure: StoreUnavailableError | undefined;
  // Redis answering BUSY or LOADING to the stats read, which says that read ran nothing.
  class BusyStats extends MemoryStore {
    override stats(...args: Parameters<MemoryStore["stats"]>) {
      return failure ? Promise.reject(failure) : super.stats(...args);
    }
  }
  const app = createApp({
    streams: compileConfig(CONFIG),
    store: new BusyStats({ now: () => T0 }),
    keys: await KeyRing.parse(""),
    now: () => T0,
  });
  const doc = await (await app.request("/openapi.json")).json();
  const ajv = new Ajv({ strict: false });
  for (const [name, schema] of Object.entries(doc.components.schemas)) {
    ajv.addSchema(schema as object, `#/components/schemas/${name}`);
  }
  const documented = ajv.getSchema("#/components/schemas/StoredStream")!;
  failure = new StoreUnavailableError("BUSY Redis is busy running a script", {
    outcome: "not_applied",
  });
  const [created, warned] = await collectingLogs(async (records) => {
    const created = await put(app, "signups", SIGNUPS, { "If-None-Match": "*" });
    return [created, records.filter((record) => record.level === "warning")] as const;
  });
  // The store's failure is said, though the answer is the write's success.
  assert.deepEqual(warned.map(messageOf), [
    "Stream 'signups' was stored as version 1, but its stats for the reply could not be read: BUSY Redis is busy running a script",
  ]);
  assert.equal(created.status, 201);
  assert.equal(created.headers.get("ETag"), '"1"');
  assert.equal(created.headers.get("Location"), "/v1/streams/signups");
  assert.equal(created.headers.get("Retry-After"), null);
  const body = await created.json();
  assert.equal(body.version, 1);
  assert.equal(body.source, "api");
  assert.equal(body.stats, null);
  assert.deepEqual(body.counters, Object.keys(SIGNUPS.counters));
  assert.ok(documented(body), ajv.errorsText(documented.errors));
  // The client goes on from the ETag it was given: its next change applies, not a 412.
  const changed = await put(app, "signups", { ...SIGNUPS, description: "new" }, {
    "If-Match": '"1"',
  });
  assert.equal(changed.status, 200);
  assert.equal(changed.headers.get("ETag"), '"2"');
  assert.equal((await changed.json()).stats, null);
  failure = undefined;
  const read = await app.request("/v1/streams/signups");
  assert.equal(read.status, 200);
  assert.equal(read.headers.get("ETag"), '"2"');
  const stream = await read.json();
  assert.equal(stream.definition.description, "new");
  assert.notEqual(stream.stats, null);
  // Only the PUT's reply may hold null stats: GET's document still says an object.
  assert.equal(ajv.validate("#/components/schemas/Stream", { ...stream, stats: null }), false);
});

Deno.test('an alert\'s evaluate ("live" or "close") round-trips through PUT and GET; any other value is 400 invalid_definition naming it; a session counter\'s alert takes either', async () => {
  const app = await appWith();
  const definition = {
    ...SIGNUPS,
    counters: {
      ...SIGNUPS.counters,
      visits: { window: { session: "30m" }, groupBy: ["plan"], aggregate: "count" },
    },
    alerts: [
      { name: "quiet", counter: "perMinute", when: "value < 3.0", evaluate: "close" },
      { name: "busy", counter: "perMinute", when: "value > 100.0", evaluate: "live" },
      { name: "plain", counter: "perMinute", when: "value > 1000.0" },
      { name: "long", counter: "visits", when: "value > 10.0", evaluate: "live" },
      { name: "short", counter: "visits", when: "value < 2.0", evaluate: "close" },
    ],
  };
  assert.equal((await put(app, "signups", definition)).status, 201);
  const stored = await (await app.request("/v1/streams/signups")).json();
  assert.deepEqual(stored.definition, definition);
  // The same definition again is no change.
  const again = await put(app, "signups", definition);
  assert.equal(again.status, 200);
  assert.equal((await again.json()).version, 1);

  const refused = await put(app, "signups", {
    ...SIGNUPS,
    alerts: [{ name: "quiet", counter: "perMinute", when: "value < 3.0", evaluate: "final" }],
  });
  assert.equal(refused.status, 400);
  const error = await errorOf(refused);
  assert.equal(error.code, "invalid_definition");
  assert.match(error.message, /alerts\[0\]\.evaluate: .*"live".*"close"/);
});

Deno.test("README alerts (mixed releases): a stored stream whose alert has an option this release does not know, as evaluate is to an earlier release, is not served (409 stream_not_servable naming it)", async () => {
  const definitions = new MemoryDefinitionStore();
  const registryOf = () =>
    new StreamRegistry(compileConfig(CONFIG), { definitions, now: () => T0, pollMs: 0 });
  const keys = await KeyRing.parse("");
  const store = new MemoryStore({ now: () => T0 });
  const app = createApp({ streams: registryOf(), store, keys, now: () => T0 });
  assert.equal((await put(app, "signups", SIGNUPS)).status, 201);
  const stored = (await definitions.get("signups"))!;
  const newer = {
    ...SIGNUPS,
    alerts: [{ name: "quiet", counter: "perMinute", when: "value < 3.0", repeat: "hourly" }],
  };
  const written = await definitions.write(
    "signups",
    { ...stored, definition: newer },
    stored.version,
  );
  assert.equal(written.status, "written");
  const other = createApp({ streams: registryOf(), store, keys, now: () => T0 });
  for (
    const response of [
      await ingest(other, "signups", [UNSERVABLE_EVENT]),
      await other.request("/v1/streams/signups"),
    ]
  ) {
    const error = await errorOf(response);
    assert.equal(response.status, 409, JSON.stringify(error));
    assert.equal(error.code, "stream_not_servable");
    assert.match(error.message, /alerts\[0\]: .*repeat/);
  }
});
