import assert from "node:assert/strict";
import { createApp, servedRoutes } from "../src/app.ts";
import { compileConfig } from "../src/config/mod.ts";
import { OpenConnections } from "../src/http/open_connections.ts";
import { KeyRing } from "../src/http/auth.ts";
import { ERROR_CODES, STORE_RETRY_AFTER_SECONDS } from "../src/http/errors.ts";
import { READY_WAIT_MS } from "../src/http/stream_routes.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import {
  checkBudgetCutMessage,
  patternCompileSize,
  REQUEST_CHECK_BUDGET_MESSAGE,
} from "../src/validate/mod.ts";
import { type Store, StoreUnavailableError } from "../src/store/types.ts";
import { RedisStore } from "../src/store/mod.ts";
import { redisTest, restClient } from "./_redis.ts";
import {
  at,
  changedOnFirstApply,
  KEYS,
  NOW,
  postEvents,
  TEST_CONFIG,
  testApp,
} from "./_fixtures.ts";
import { jsonLines, writtenLogs } from "./_logs.ts";
import { emptyItems, HUNDRED_PROPERTIES } from "./validate/_hundred_properties.ts";

type App = Awaited<ReturnType<typeof testApp>>["app"];

async function getJson(app: App, path: string, key?: string) {
  const res = await app.request(path, {
    headers: key ? { Authorization: `Bearer ${key}` } : {},
  });
  return { status: res.status, body: await res.json(), headers: res.headers };
}

async function windows(app: App, counter: string, query = "") {
  const { status, body } = await getJson(app, `/v1/streams/orders/counters/${counter}${query}`);
  assert.equal(status, 200, JSON.stringify(body));
  return body.windows as Array<
    { start: string; end: string; group: Record<string, unknown>; value: number; final: boolean }
  >;
}

async function assertUntouched(app: App) {
  const { body } = await getJson(app, "/v1/streams/orders");
  assert.equal(body.stats.accepted, 0);
  assert.equal(body.stats.applied, 0);
  assert.equal(body.stats.watermark, null);
  assert.deepEqual(await windows(app, "count_1m"), []);
}

Deno.test("POST events counts a batch and reports duplicates, filtered and rejected events", async () => {
  const { app } = await testApp();
  const res = await postEvents(app, [
    { id: "a", ts: at(5), country: "DE", amount: 10 },
    { id: "b", ts: at(6), country: "FR", amount: 2.5 },
    { id: "a", ts: at(5), country: "DE", amount: 10 },
    { id: "c", ts: at(7), country: "DE", amount: "lots" },
    { id: "d", ts: at(8), country: "DE", amount: 1, test: true },
  ]);
  assert.equal(res.status, 202);
  assert.deepEqual(await res.json(), {
    accepted: 4,
    duplicates: 1,
    late: 0,
    filtered: 1,
    rejected: [{
      index: 3,
      errors: [{ path: "amount", message: "Invalid input: expected number, received string" }],
    }],
  });
  assert.deepEqual(await windows(app, "count_1m"), [
    { start: at(0), end: at(60), group: { country: "DE" }, value: 1, final: false },
    { start: at(0), end: at(60), group: { country: "FR" }, value: 1, final: false },
  ]);
  assert.deepEqual((await windows(app, "sum_1m")).map((row) => row.value), [10, 2.5]);
});

Deno.test("POST events accepts NDJSON and rejects only the bad line; index counts events, not blank lines", async () => {
  const { app } = await testApp();
  const body = [
    JSON.stringify({ id: "a", ts: at(1), country: "DE" }),
    "",
    "{not json",
    "  ",
    JSON.stringify({ id: "b", ts: at(2), country: "DE" }),
    JSON.stringify({ ts: at(2), country: "DE" }),
    "",
  ].join("\n");
  const res = await postEvents(app, body, { raw: true, contentType: "application/x-ndjson" });
  assert.equal(res.status, 202);
  const reply = await res.json();
  assert.equal(reply.accepted, 2);
  assert.deepEqual(reply.rejected.map((item: { index: number }) => item.index), [1, 3]);
  assert.match(reply.rejected[0].errors[0].message, /^Line 3 is not valid JSON/);
  assert.equal(reply.rejected[1].errors[0].path, "id");
  assert.equal((await windows(app, "count_1m"))[0].value, 2);
});

/**
 * A stream whose events are each checked against 100 optional properties an item: an event of
 * 2,600 empty items takes 260,000 checks beyond its values, within one event's bound (262,144).
 */
const PARTS_CONFIG = {
  streams: {
    parts: {
      schema: HUNDRED_PROPERTIES,
      counters: { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
};

Deno.test("POST events cuts a request at its budget of schema checks: 8 events of 260,000 checks each are applied, the rest refused", async () => {
  const { app } = await testApp({ config: PARTS_CONFIG });
  const line = JSON.stringify(emptyItems(2_600));
  const body = Array.from({ length: 10 }, () => line).join("\n");
  const res = await postEvents(app, body, {
    stream: "parts",
    raw: true,
    contentType: "application/x-ndjson",
  });
  assert.equal(res.status, 202);
  const reply = await res.json();
  // 8 × 260,000 is within 2,097,152; the ninth would pass it.
  assert.equal(reply.accepted, 8);
  // The event that cut it has the budget's message; each later one a short one naming it.
  assert.deepEqual(reply.rejected, [
    { index: 8, line: 9, errors: [{ path: "", message: REQUEST_CHECK_BUDGET_MESSAGE }] },
    { index: 9, line: 10, errors: [{ path: "", message: checkBudgetCutMessage(8) }] },
  ]);
  const counted = await getJson(app, "/v1/streams/parts/counters/count_1m");
  assert.deepEqual(counted.body.windows.map((row: { value: number }) => row.value), [8]);
  const { body: stream } = await getJson(app, "/v1/streams/parts");
  assert.deepEqual([stream.stats.accepted, stream.stats.rejected], [8, 2]);
});

Deno.test("POST events cut by its budget of schema checks gives the budget's message once: a reply to 1,000 events, 992 refused, within 140,000 characters", async () => {
  const { app } = await testApp({ config: PARTS_CONFIG });
  const big = JSON.stringify({ items: Array.from({ length: 2_600 }, () => ({})) });
  // 8 events of 260,000 checks fit, the ninth cuts; the 991 after it are refused unjudged.
  const lines = [
    ...Array.from({ length: 9 }, () => big),
    ...Array.from({ length: 991 }, () => "{}"),
  ];
  const res = await postEvents(app, lines.join("\n"), {
    stream: "parts",
    raw: true,
    contentType: "application/x-ndjson",
  });
  assert.equal(res.status, 202);
  const text = await res.text();
  // The budget's message (382 characters) once, then about 135 characters of JSON an event: with
  // the whole message each, the reply was 439,000.
  assert.equal(REQUEST_CHECK_BUDGET_MESSAGE.length, 382);
  assert.ok(text.length <= 140_000, `${text.length} characters`);
  const reply = JSON.parse(text);
  assert.equal(reply.accepted, 8);
  assert.equal(reply.rejected.length, 992);
  assert.deepEqual(reply.rejected[0], {
    index: 8,
    line: 9,
    errors: [{ path: "", message: REQUEST_CHECK_BUDGET_MESSAGE }],
  });
  for (const [at, entry] of reply.rejected.slice(1).entries()) {
    const index = 9 + at;
    assert.deepEqual(entry, {
      index,
      line: index + 1,
      errors: [{ path: "", message: checkBudgetCutMessage(8) }],
    });
  }
});

Deno.test("POST events cut by its budget of schema checks: a later NDJSON line that is not JSON keeps its own error, later events get the short message", async () => {
  const { app } = await testApp({ config: PARTS_CONFIG });
  const big = JSON.stringify({ items: Array.from({ length: 2_600 }, () => ({})) });
  const lines = [...Array.from({ length: 9 }, () => big), "{not json", "{}"];
  const res = await postEvents(app, lines.join("\n"), {
    stream: "parts",
    raw: true,
    contentType: "application/x-ndjson",
  });
  assert.equal(res.status, 202);
  const reply = await res.json();
  assert.deepEqual(reply.rejected.map((entry: { index: number }) => entry.index), [8, 9, 10]);
  assert.match(reply.rejected[1].errors[0].message, /^Line 10 is not valid JSON/);
  assert.deepEqual(reply.rejected[2].errors, [{ path: "", message: checkBudgetCutMessage(8) }]);
});

Deno.test("POST events retried on a changed stream is judged again with a budget of its own: 5 events of 260,000 checks, all 5 applied on the retry", async () => {
  // The first apply finds the stream changed (nothing applied): the request runs once more.
  const { store, applies } = changedOnFirstApply("parts");
  const { app } = await testApp({ config: PARTS_CONFIG, store });
  const line = JSON.stringify({ items: Array.from({ length: 2_600 }, () => ({})) });
  const body = Array.from({ length: 5 }, () => line).join("\n");
  const res = await postEvents(app, body, {
    stream: "parts",
    raw: true,
    contentType: "application/x-ndjson",
  });
  assert.equal(res.status, 202);
  const reply = await res.json();
  assert.equal(applies(), 2);
  // The first pass spent 5 × 260,000 of 2,097,152; continuing that budget, the retry would cut
  // the fourth event: a request within the budget refused for the race.
  assert.equal(reply.accepted, 5);
  assert.deepEqual(reply.rejected, []);
  const counted = await getJson(app, "/v1/streams/parts/counters/count_1m");
  assert.deepEqual(counted.body.windows.map((row: { value: number }) => row.value), [5]);
});

Deno.test("POST events retried on a changed stream compiles its events' matches() patterns with a budget of its own: 32 distinct patterns of 3,996 instructions, all 32 applied on the retry", async () => {
  // The first apply finds the stream changed (nothing applied): the request runs once more.
  const { store, applies } = changedOnFirstApply("texts");
  const config = {
    streams: {
      texts: {
        transform: [{ filter: "event.text.matches(event.p)" }],
        counters: { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  };
  const { app } = await testApp({ config, store });
  // Each event its own pattern (a prefix no other test compiles): 32 × (3,996 + 32) fit in 131,072.
  const pattern = (index: number) =>
    `^(?:hello|retry${String(index).padStart(2, "0")}.{0,1000}.{0,990})`;
  assert.equal(patternCompileSize(pattern(0)), 3_996);
  const events = Array.from({ length: 32 }, (_, index) => ({ text: "hello", p: pattern(index) }));
  const res = await postEvents(app, events, { stream: "texts" });
  assert.equal(res.status, 202);
  const reply = await res.json();
  assert.equal(applies(), 2);
  // The first pass spent all but 2,176 of the budget (32 × (3,996 + 32) of 131,072), and the
  // cache keeps only the last 4 patterns:
  // continuing that budget, the retry would cut its first event.
  assert.equal(reply.accepted, 32);
  assert.deepEqual(reply.rejected, []);
  const counted = await getJson(app, "/v1/streams/texts/counters/count_1m");
  assert.deepEqual(counted.body.windows.map((row: { value: number }) => row.value), [32]);
});

Deno.test("POST events: events judged on an estimate of their checks (often far above them) leave the request's budget to the counted ones: 1,000 events of 1,485 checks each are all applied", async () => {
  const { app } = await testApp({ config: PARTS_CONFIG });
  // 15 items of one property: 2 + 15 × 101 checks, less its 32 values, 1,485; estimated at
  // (3 × 103 - 1) × 32 = 9,856. 1,485,000 in all, within 2,097,152.
  const line = JSON.stringify({ items: Array.from({ length: 15 }, () => ({ p0: "x" })) });
  const body = Array.from({ length: 1_000 }, () => line).join("\n");
  const res = await postEvents(app, body, {
    stream: "parts",
    raw: true,
    contentType: "application/x-ndjson",
  });
  assert.equal(res.status, 202);
  const reply = await res.json();
  assert.equal(reply.rejected.length, 0, JSON.stringify(reply.rejected.slice(0, 1)));
  assert.equal(reply.accepted, 1_000);
});

Deno.test("an NDJSON rejection names the event's line in the body beside its index, blank lines counted, in a replay too", async () => {
  const { app } = await testApp();
  const body = [
    JSON.stringify({ id: "a", ts: at(1), country: "DE" }),
    "",
    "\r",
    JSON.stringify({ id: "b", ts: at(2), amount: "x" }),
    "  ",
    "{not json",
    JSON.stringify({ ts: at(2), country: "DE" }),
    "",
  ].join("\n");
  const post = () =>
    app.request("/v1/streams/orders/events", {
      method: "POST",
      headers: { "Content-Type": "application/x-ndjson", "Idempotency-Key": "lines-1" },
      body,
    });
  for (const replayed of [undefined, true]) {
    const res = await post();
    assert.equal(res.status, 202);
    const reply = await res.json();
    assert.equal(reply.replayed, replayed);
    assert.deepEqual(
      reply.rejected.map((item: { index: number; line: number; errors: { path: string }[] }) => [
        item.index,
        item.line,
        item.errors[0].path,
      ]),
      [[1, 4, "amount"], [2, 6, ""], [3, 7, "id"]],
    );
    assert.match(reply.rejected[1].errors[0].message, /^Line 6 is not valid JSON/);
  }
  // A JSON body's rejections have no line: its events are not lines.
  const res = await postEvents(app, [{ id: "c", ts: at(3) }, { ts: at(3) }]);
  assert.deepEqual((await res.json()).rejected, [{
    index: 1,
    errors: [{ path: "id", message: "Required field is missing (expected string)" }],
  }]);
});

/**
 * Events holding a number out of range (1e400, which JSON.parse reads as Infinity) as a group,
 * distinct, aggregated value, event time or anywhere else are rejected naming it, and count
 * nowhere: JSON writes Infinity as null, so they would have counted into the null group.
 */
async function outOfRangeScenario(store: Store, now: number) {
  const config = {
    streams: {
      shop: {
        time: { field: "ts" },
        counters: {
          n: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
          users: { window: { tumbling: "1m" }, aggregate: { distinct: "u" } },
          total: { window: { tumbling: "1m" }, aggregate: { sum: "v" } },
          top: { window: { tumbling: "1m" }, aggregate: { max: "v" } },
          spread: { window: { tumbling: "1m" }, aggregate: { quantiles: "v" } },
        },
      },
    },
  };
  const { app } = await testApp({ config, store, now: () => now });
  const ts = `"${new Date(now - 1_000).toISOString()}"`;
  const body = `[{"ts": ${ts}, "g": 1e400, "u": "a"}, {"ts": ${ts}, "g": null, "u": "b", "v": 2},` +
    ` {"ts": ${ts}, "g": "x", "u": {"n": [-1e999]}}, {"ts": ${ts}, "v": 1e400},` +
    ` {"ts": ${ts}, "v": -1e400}, {"ts": 1e400}, {"ts": ${ts}, "other": [1e400]}]`;
  const res = await postEvents(app, body, { raw: true, stream: "shop" });
  assert.equal(res.status, 202);
  const reply = await res.json();
  assert.equal(reply.accepted, 1);
  assert.deepEqual(
    reply.rejected.map((item: { index: number; errors: { path: string; message: string }[] }) => [
      item.index,
      item.errors[0].path,
      item.errors[0].message,
    ]),
    [[0, "g"], [2, "u.n.0"], [3, "v"], [4, "v"], [5, "ts"], [6, "other.0"]].map((
      [index, path],
    ) => [
      index,
      path,
      "Number is out of range (JSON reads 1e400 as Infinity, which it passes on as null)",
    ]),
  );
  const values = async (counter: string) => {
    const { body: rows } = await getJson(app, `/v1/streams/shop/counters/${counter}`);
    return rows.windows.map((row: { group: unknown; value: unknown }) => [row.group, row.value]);
  };
  assert.deepEqual(await values("n"), [[{ g: null }, 1]]);
  assert.deepEqual(await values("users"), [[{}, 1]]);
  assert.deepEqual(await values("total"), [[{}, 2]]);
  assert.deepEqual(await values("top"), [[{}, 2]]);
  assert.equal((await values("spread"))[0][1].count, 1);
  assert.equal((await store.stats("shop", [])).rejected, 6);
}

/** A minute's start plus 30 s, near now: Redis expires panes by the wall clock. */
const WALL_NOW = Math.floor(Date.now() / 60_000) * 60_000 + 30_000;

Deno.test("memory: POST events rejects an event holding a number out of range (1e400) as a group, distinct or aggregated value, time or any field", async () => {
  await outOfRangeScenario(new MemoryStore({ now: () => WALL_NOW }), WALL_NOW);
});

redisTest(
  "redis: POST events rejects an event holding a number out of range (1e400) as a group, distinct or aggregated value, time or any field",
  async (fixture) => {
    const redis = restClient(fixture);
    await outOfRangeScenario(new RedisStore(redis), WALL_NOW);
  },
);

Deno.test("POST events replies 400 with the reply body when nothing was accepted", async () => {
  const { app } = await testApp();
  const res = await postEvents(app, [{ id: 1 }, { country: "DE" }]);
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(body.error.code, "no_events_accepted");
  assert.equal(body.accepted, 0);
  assert.deepEqual(body.rejected.map((item: { index: number }) => item.index), [0, 1]);
  assert.equal(body.rejected[1].errors[0].path, "id");
  await assertUntouched(app);
});

Deno.test("bad ingest requests get the right status and error code, and change nothing", async (t) => {
  const cases: Array<{
    name: string;
    body: BodyInit;
    contentType?: string | null;
    status: number;
    code: string;
    stream?: string;
  }> = [
    { name: "malformed JSON", body: '{"id": "a",', status: 400, code: "invalid_json" },
    { name: "JSON scalar", body: "42", status: 400, code: "invalid_body" },
    { name: "JSON null", body: "null", status: 400, code: "invalid_body" },
    { name: "empty body", body: "", status: 400, code: "empty_body" },
    { name: "whitespace body", body: "  \n ", status: 400, code: "empty_body" },
    { name: "empty array", body: "[]", status: 400, code: "empty_batch" },
    {
      name: "invalid UTF-8",
      body: new Uint8Array([0x7b, 0x22, 0x69, 0x64, 0x22, 0x3a, 0x22, 0xff, 0xfe, 0x22, 0x7d]),
      status: 400,
      code: "invalid_utf8",
    },
    {
      // Not text/plain: open mode reads it as JSON, as the SDK's beacons send it (browser_test.ts).
      name: "text/html",
      body: '{"id":"a"}',
      contentType: "text/html",
      status: 415,
      code: "unsupported_media_type",
    },
    {
      name: "no content type",
      // Bytes: a string body would be sent as text/plain, which open mode reads as JSON.
      body: new TextEncoder().encode('{"id":"a"}'),
      contentType: null,
      status: 415,
      code: "unsupported_media_type",
    },
    {
      name: "body over 1 MiB",
      body: JSON.stringify([{ id: "x".repeat(1_100_000) }]),
      status: 413,
      code: "payload_too_large",
    },
    {
      name: "over 1000 events",
      body: JSON.stringify(Array.from({ length: 1001 }, (_, i) => ({ id: `e${i}` }))),
      status: 413,
      code: "too_many_events",
    },
    {
      name: "unknown stream",
      body: '{"id":"a"}',
      stream: "nope",
      status: 404,
      code: "stream_not_found",
    },
    {
      name: "__proto__ key",
      body: '{"id":"a","__proto__":{"polluted":true}}',
      status: 400,
      code: "no_events_accepted",
    },
    {
      name: "constructor key",
      body: '{"id":"a","constructor":{"x":1}}',
      status: 400,
      code: "no_events_accepted",
    },
    {
      name: "deep nesting",
      body: `{"id":"a","deep":${"[".repeat(5000)}${"]".repeat(5000)}}`,
      status: 400,
      code: "no_events_accepted",
    },
    {
      name: "huge number for sum",
      body: '{"id":"a","amount":1e400}',
      status: 400,
      code: "no_events_accepted",
    },
    {
      name: "number beyond 2^53 for sum",
      body: '{"id":"a","amount":1e300}',
      status: 400,
      code: "no_events_accepted",
    },
    {
      name: "event over 64 KiB",
      body: JSON.stringify({ id: "a", pad: "y".repeat(70_000) }),
      status: 400,
      code: "no_events_accepted",
    },
    {
      name: "bad event time",
      body: '{"id":"a","ts":"yesterday"}',
      status: 400,
      code: "no_events_accepted",
    },
    {
      name: "event time too far ahead",
      body: JSON.stringify({ id: "a", ts: NOW + 600_000 }),
      status: 400,
      code: "no_events_accepted",
    },
  ];
  for (const item of cases) {
    await t.step(item.name, async () => {
      const { app } = await testApp();
      const headers: Record<string, string> = {};
      if (item.contentType !== null) {
        headers["Content-Type"] = item.contentType ?? "application/json";
      }
      const res = await app.request(`/v1/streams/${item.stream ?? "orders"}/events`, {
        method: "POST",
        headers,
        body: item.body,
      });
      assert.equal(res.status, item.status);
      assert.match(res.headers.get("Content-Type") ?? "", /application\/json/);
      const body = await res.json();
      assert.equal(body.error.code, item.code, JSON.stringify(body));
      assert.equal(typeof body.error.message, "string");
      assert.ok(body.error.message.length > 0);
      await assertUntouched(app);
    });
  }
});

Deno.test("a missing group field groups as null", async () => {
  const { app } = await testApp();
  assert.equal((await postEvents(app, { id: "a", ts: at(1) })).status, 202);
  const rows = await windows(app, "count_1m");
  assert.deepEqual(rows.map((row) => row.group), [{ country: null }]);
  const filtered = await windows(app, "count_1m", "?group.country=null");
  assert.equal(filtered.length, 1);
});

Deno.test("group filters on several fields must all match; a field given twice uses the last value", async () => {
  const config = {
    streams: {
      shop: {
        time: { field: "ts" },
        counters: {
          n: { window: { tumbling: "1m" }, groupBy: ["country", "plan"], aggregate: "count" },
        },
      },
    },
  };
  const { app } = await testApp({ config });
  const events = [
    { ts: at(1), country: "DE", plan: "pro" },
    { ts: at(2), country: "DE", plan: "free" },
    { ts: at(3), country: "FR", plan: "pro" },
  ];
  assert.equal((await postEvents(app, events, { stream: "shop" })).status, 202);
  const groups = async (query: string) => {
    const { status, body } = await getJson(app, `/v1/streams/shop/counters/n${query}`);
    assert.equal(status, 200, JSON.stringify(body));
    return body.windows.map((row: { group: { country: string; plan: string } }) =>
      `${row.group.country}/${row.group.plan}`
    ).sort();
  };
  assert.deepEqual(await groups(""), ["DE/free", "DE/pro", "FR/pro"]);
  assert.deepEqual(await groups("?group.country=DE&group.plan=pro"), ["DE/pro"]);
  assert.deepEqual(await groups("?group.plan=pro"), ["DE/pro", "FR/pro"]);
  assert.deepEqual(await groups("?group.country=FR&group.country=DE"), ["DE/free", "DE/pro"]);
  // As clients that send the document's `group` object in deepObject style write it
  // (openapi-fetch: `group[group.country]=DE`): the same filter, not ignored.
  const deep = (name: string) => `?${encodeURIComponent(name)}=DE`;
  assert.deepEqual(await groups(deep("group[group.country]")), ["DE/free", "DE/pro"]);
  assert.deepEqual(await groups(`${deep("group[country]")}&group%5Bplan%5D=pro`), ["DE/pro"]);
  const unknown = await getJson(app, `/v1/streams/shop/counters/n${deep("group[nope]")}`);
  assert.equal(unknown.status, 400);
  assert.equal(unknown.body.error.code, "invalid_query");
});

/** A stream `shop` counting per minute by the field `g`. */
const SHOP_BY_G = {
  streams: {
    shop: {
      time: { field: "ts" },
      counters: { n: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" } },
    },
  },
};

Deno.test("object group values written in two key orders are one group, which a filter in either order finds", async () => {
  const { app } = await testApp({ config: SHOP_BY_G });
  const body = `[{"ts": "${at(1)}", "g": {"os": "ios", "v": [1, {"b": 2, "a": 1}]}},` +
    ` {"ts": "${at(2)}", "g": {"v": [1, {"a": 1, "b": 2}], "os": "ios"}}, {"ts": "${
      at(3)
    }", "g": [1]}]`;
  assert.equal((await postEvents(app, body, { raw: true, stream: "shop" })).status, 202);
  const values = async (query: string) => {
    const { status, body } = await getJson(app, `/v1/streams/shop/counters/n${query}`);
    assert.equal(status, 200, JSON.stringify(body));
    return body.windows.map((
      row: { group: { g: unknown }; value: number },
    ) => [row.group.g, row.value]);
  };
  const device = { os: "ios", v: [1, { a: 1, b: 2 }] };
  assert.deepEqual(await values(""), [[[1], 1], [device, 2]]);
  for (const text of [JSON.stringify(device), '{"v":[1,{"b":2,"a":1}],"os":"ios"}']) {
    assert.deepEqual(await values(`?group.g=${encodeURIComponent(text)}`), [[device, 2]], text);
  }
  assert.deepEqual(await values(`?group.g=${encodeURIComponent("[1]")}`), [[[1], 1]]);
  // Any JSON text of the same value (README): spaces and number forms inside aside.
  assert.deepEqual(await values(`?group.g=${encodeURIComponent("[ 1.0 ]")}`), [[[1], 1]]);
  assert.deepEqual(await values(`?group.g=${encodeURIComponent('{"os":"ios"}')}`), []);
});

Deno.test("a group filter in double quotes matches only that string, not a number, boolean or null", async () => {
  const { app } = await testApp({ config: SHOP_BY_G });
  const values = [null, "null", 1, "1", true, "true", "DE", '"DE"'];
  const events = values.map((g, i) => ({ ts: at(i + 1), g }));
  assert.equal((await postEvents(app, events, { stream: "shop" })).status, 202);
  const groups = async (value: string) => {
    const query = `?group.g=${encodeURIComponent(value)}`;
    const { status, body } = await getJson(app, `/v1/streams/shop/counters/n${query}`);
    assert.equal(status, 200, JSON.stringify(body));
    return body.windows.map((row: { group: { g: unknown } }) => JSON.stringify(row.group.g))
      .sort();
  };
  assert.deepEqual(await groups("null"), ['"null"', "null"]);
  // Only `null` itself, as a number only by its JSON text: not JSON text that reads as null.
  for (const text of [" null", "null ", "\nnull"]) assert.deepEqual(await groups(text), [], text);
  assert.deepEqual(await groups(" 1"), []);
  assert.deepEqual(await groups('"null"'), ['"null"']);
  assert.deepEqual(await groups("1"), ['"1"', "1"]);
  assert.deepEqual(await groups('"1"'), ['"1"']);
  assert.deepEqual(await groups('"true"'), ['"true"']);
  assert.deepEqual(await groups("DE"), ['"DE"']);
  assert.deepEqual(await groups('"DE"'), ['"DE"']);
  assert.deepEqual(await groups('"\\"DE\\""'), ['"\\"DE\\""']);
});

Deno.test("late events are acknowledged as late and not counted; windows become final", async () => {
  const { app } = await testApp();
  await postEvents(app, { id: "a", ts: at(10), country: "DE" });
  await postEvents(app, { id: "b", ts: at(200), country: "DE" });
  const res = await postEvents(app, { id: "c", ts: at(20), country: "DE" });
  assert.equal(res.status, 202);
  const reply = await res.json();
  assert.equal(reply.late, 1);
  assert.equal(reply.accepted, 1);
  const rows = await windows(app, "count_1m");
  assert.deepEqual(rows.map((row) => [row.start, row.value, row.final]), [
    [at(180), 1, false],
    [at(0), 1, true],
  ]);
  const stats = (await getJson(app, "/v1/streams/orders")).body.stats;
  assert.equal(stats.late, 1);
  assert.equal(stats.watermark, at(200));
});

Deno.test("an event within the lateness bound still counts into its open window", async () => {
  const { app } = await testApp();
  await postEvents(app, { id: "a", ts: at(70), country: "DE" });
  const reply = await (await postEvents(app, { id: "b", ts: at(45), country: "DE" })).json();
  assert.equal(reply.late, 0);
  assert.deepEqual((await windows(app, "count_1m")).map((row) => row.value), [1, 1]);
});

Deno.test("hopping windows hold every event in each window that contains it", async () => {
  const { app } = await testApp();
  await postEvents(app, [
    { id: "a", ts: at(30), amount: 1 },
    { id: "b", ts: at(90), amount: 10 },
  ]);
  const rows = await windows(app, "doubled_hop");
  assert.deepEqual(rows.map((row) => [row.start, row.end, row.value]), [
    [at(60), at(180), 20],
    [at(0), at(120), 22],
    [at(-60), at(60), 2],
  ]);
});

Deno.test("current reads the last size of a sliding window and the current tumbling window", async () => {
  let now = Date.parse(at(150));
  const { app } = await testApp({ now: () => now });
  await postEvents(app, [
    { id: "a", ts: at(10), customer: "x" },
    { id: "b", ts: at(70), customer: "y" },
    { id: "c", ts: at(130), customer: "x" },
    { id: "d", ts: at(140), customer: "z", country: "DE" },
  ]);
  let current = (await getJson(app, "/v1/streams/orders/counters/customers_sliding/current")).body;
  assert.equal(current.start, at(0));
  assert.equal(current.end, at(180));
  assert.equal(current.windows[0].value, 3);
  now = Date.parse(at(200));
  current = (await getJson(app, "/v1/streams/orders/counters/customers_sliding/current")).body;
  assert.equal(current.start, at(60));
  assert.equal(current.windows[0].value, 3);
  now = Date.parse(at(250));
  current = (await getJson(app, "/v1/streams/orders/counters/customers_sliding/current")).body;
  assert.equal(current.start, at(120));
  assert.equal(current.windows[0].value, 2);
  const tumbling =
    (await getJson(app, "/v1/streams/orders/counters/count_1m/current?group.country=DE")).body;
  assert.equal(tumbling.start, at(240));
  assert.deepEqual(tumbling.windows, []);
});

Deno.test("from, to, limit and group filters narrow the windows listed", async () => {
  const { app } = await testApp();
  const events = [];
  for (let minute = 0; minute < 5; minute++) {
    events.push({ id: `de${minute}`, ts: at(minute * 60 + 1), country: "DE" });
    events.push({ id: `fr${minute}`, ts: at(minute * 60 + 2), country: "FR" });
  }
  await postEvents(app, events);
  assert.equal((await windows(app, "count_1m")).length, 10);
  const de = await windows(app, "count_1m", "?group.country=DE");
  assert.deepEqual(de.map((row) => row.start), [at(240), at(180), at(120), at(60), at(0)]);
  const ranged = await windows(
    app,
    "count_1m",
    `?from=${encodeURIComponent(at(60))}&to=${Date.parse(at(180))}`,
  );
  assert.deepEqual(ranged.map((row) => row.start), [at(120), at(120), at(60), at(60)]);
  assert.equal((await windows(app, "count_1m", "?limit=3")).length, 3);
  // A group filter on a field the counter does not group by would match nothing: refused.
  for (
    const path of ["count_1m?group.=x", "count_1m?group.city=x", "count_1m/current?group.city=x"]
  ) {
    const bad = await getJson(app, `/v1/streams/orders/counters/${path}`);
    assert.equal(bad.status, 400, path);
    assert.equal(bad.body.error.code, "invalid_query", path);
    assert.match(bad.body.error.message, /names no field counter 'count_1m' groups by \(country\)/);
  }
  // A bad query parameter is invalid_query whether its schema or its route refuses it.
  for (const query of ["from=soon", "from=2026-02-30", "limit=0", "limit=5&limit=7"]) {
    const bad = await getJson(app, `/v1/streams/orders/counters/count_1m?${query}`);
    assert.equal(bad.status, 400, query);
    assert.equal(bad.body.error.code, "invalid_query", query);
    assert.match(bad.body.error.message, /from|limit/, query);
  }
  const missing = await getJson(app, "/v1/streams/orders/counters/nope");
  assert.equal(missing.status, 404);
  assert.equal(missing.body.error.code, "counter_not_found");
});

Deno.test("a window counter's rows page with nextCursor: every row once, in order, with and without group filters", async () => {
  const { app } = await testApp({
    config: {
      streams: {
        orders: {
          time: { field: "ts", lateness: "30s" },
          counters: {
            count_1m: {
              window: { tumbling: "1m" },
              groupBy: ["country"],
              aggregate: "count",
              maxGroups: 5000,
            },
          },
        },
      },
    },
  });
  // 1,500 groups in the newest window (more than one reply's 1,000 rows), a few in 4 older ones.
  // (Oldest first: lateness is 30 s.)
  const events = [];
  for (let minute = 0; minute < 4; minute++) {
    for (const country of ["DE", "FR", `m${minute}`]) {
      events.push({ ts: at(minute * 60 + 1), country });
    }
  }
  for (let i = 0; i < 1500; i++) events.push({ ts: at(241), country: `c${i}` });
  for (let from = 0; from < events.length; from += 1000) {
    assert.equal((await postEvents(app, events.slice(from, from + 1000))).status, 202);
  }
  const key = (row: { start: string; group: Record<string, unknown> }) =>
    `${row.start} ${row.group.country}`;
  const read = async (query: string) => {
    const res = await getJson(app, `/v1/streams/orders/counters/count_1m?${query}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body as {
      windows: Array<{ start: string; group: Record<string, unknown> }>;
      nextCursor: string | null;
    };
  };
  for (
    const [filter, limit, total] of [["", 1000, 1512], ["", 7, 1512], [
      "group.country=DE&",
      3,
      4,
    ]] as const
  ) {
    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page = await read(`${filter}limit=${limit}${cursor ? `&cursor=${cursor}` : ""}`);
      assert.ok(page.windows.length <= limit);
      seen.push(...page.windows.map(key));
      cursor = page.nextCursor;
      pages += 1;
    } while (cursor !== null && pages < 1000);
    assert.equal(seen.length, total, `${filter} limit ${limit}`);
    assert.equal(new Set(seen).size, total, "no row twice");
    // The listing's order: newest window first, groups by their JSON text within one.
    const sorted = [...seen].sort((a, b) => {
      const [sa, ga] = a.split(" ");
      const [sb, gb] = b.split(" ");
      return sa < sb
        ? 1
        : sa > sb
        ? -1
        : JSON.stringify({ country: ga }) < JSON.stringify({ country: gb })
        ? -1
        : 1;
    });
    assert.deepEqual(seen, sorted);
  }
  // A cursor holds its last row's group, a long one only its start and digest (whole, 6,000
  // three-byte characters were 32 KiB of cursor): it is still taken back.
  const long = "長".repeat(6000);
  assert.equal(
    (await postEvents(app, [{ ts: at(302), country: `${long}1` }, {
      ts: at(302),
      country: `${long}2`,
    }])).status,
    202,
  );
  const longPage = await read(`from=${encodeURIComponent(at(300))}&limit=1`);
  assert.ok(longPage.nextCursor && longPage.nextCursor.length < 8_192);
  assert.deepEqual(
    (await read(`from=${encodeURIComponent(at(300))}&limit=1&cursor=${longPage.nextCursor}`))
      .windows.map((row) => row.group.country),
    [`${long}2`],
  );
  const first = await read("limit=1000");
  assert.equal(first.windows.length, 1000);
  assert.ok(first.nextCursor);
  for (const cursor of ["garbage!", "WzEsMl0", btoa("[1]")]) {
    const bad = await getJson(app, `/v1/streams/orders/counters/count_1m?cursor=${cursor}`);
    assert.equal(bad.status, 400, cursor);
    assert.equal(bad.body.error.code, "invalid_cursor", cursor);
  }
  // …/current has no limit: every group of the window containing now.
  const now = Array.from({ length: 1100 }, (_, i) => ({ ts: at(601), country: `n${i}` }));
  assert.equal((await postEvents(app, now.slice(0, 1000))).status, 202);
  assert.equal((await postEvents(app, now.slice(1000))).status, 202);
  const current = await getJson(app, "/v1/streams/orders/counters/count_1m/current");
  assert.equal(current.body.windows.length, 1100);
  const top = await getJson(
    app,
    `/v1/streams/orders/counters/count_1m?top=3&cursor=${first.nextCursor}`,
  );
  assert.equal(top.status, 400);
  assert.equal(top.body.error.code, "invalid_query");
});

Deno.test("groups beyond maxGroups count into __other__ and the overflow stat says so", async () => {
  const { app } = await testApp({
    config: {
      streams: {
        orders: {
          counters: {
            count_1m: {
              window: { tumbling: "1m" },
              groupBy: ["country"],
              aggregate: "count",
              maxGroups: 2,
            },
          },
        },
      },
    },
  });
  await postEvents(app, ["DE", "FR", "IT", "ES", "DE"].map((country) => ({ country })));
  const rows = await windows(app, "count_1m");
  const byCountry = Object.fromEntries(rows.map((row) => [row.group.country, row.value]));
  assert.deepEqual(byCountry, { DE: 2, FR: 1, __other__: 2 });
  const stats = (await getJson(app, "/v1/streams/orders")).body.stats;
  assert.deepEqual(stats.overflow, { count_1m: 2 });
});

Deno.test("a stream's stats show the dedupe ids the memory store forgot early, in the OpenAPI document too", async () => {
  const { app } = await testApp({ store: new MemoryStore({ now: () => NOW, maxDedupeIds: 2 }) });
  // One id per bucket: "c" makes the store forget "a" before its 1h TTL.
  await postEvents(app, ["a", "b", "c"].map((id) => ({ id, ts: at(1) })));
  const stats = (await getJson(app, "/v1/streams/orders")).body.stats;
  assert.equal(stats.dedupeForgotten, 1);
  assert.equal((await (await postEvents(app, [{ id: "a", ts: at(1) }])).json()).duplicates, 0);
  const doc = (await getJson(app, "/openapi.json")).body;
  assert.ok(doc.components.schemas.StreamStats.required.includes("dedupeForgotten"));
});

Deno.test("a stream's stats show the Idempotency-Key replies the memory store forgot early, in the OpenAPI document too", async () => {
  // About 300 bytes a reply: the second forgets the first before its idempotencyTtl.
  const { app } = await testApp({ store: new MemoryStore({ now: () => NOW, maxReplyBytes: 400 }) });
  const keyed = (key: string) =>
    app.request("/v1/streams/orders/events", {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": key },
      body: JSON.stringify([{ id: key, ts: at(1) }]),
    });
  const before = (await getJson(app, "/v1/streams/orders")).body.stats;
  assert.equal(before.repliesForgotten, 0);
  for (const key of ["a", "b"]) assert.equal((await keyed(key)).status, 202);
  const stats = (await getJson(app, "/v1/streams/orders")).body.stats;
  assert.equal(stats.repliesForgotten, 1);
  const doc = (await getJson(app, "/openapi.json")).body;
  assert.ok(doc.components.schemas.StreamStats.required.includes("repliesForgotten"));
});

Deno.test("API keys: 401 without or with a wrong key, 403 without the scope, admin implies all", async () => {
  const { app } = await testApp({ auth: true });
  const event = { id: "a", ts: at(1) };
  let res = await postEvents(app, event);
  assert.equal(res.status, 401);
  assert.equal((await res.json()).error.code, "unauthorized");
  res = await postEvents(app, event, { key: "wrong-key-0123456789" });
  assert.equal(res.status, 401);
  res = await postEvents(app, event, { key: KEYS.read });
  assert.equal(res.status, 403);
  assert.equal((await res.json()).error.code, "forbidden");
  assert.equal((await postEvents(app, event, { key: KEYS.ingest })).status, 202);
  assert.equal((await postEvents(app, { id: "b" }, { key: KEYS.admin })).status, 202);

  assert.equal((await getJson(app, "/v1/streams")).status, 401);
  assert.equal((await getJson(app, "/v1/streams", KEYS.ingest)).status, 403);
  assert.equal(
    (await getJson(app, "/v1/streams/orders/counters/count_1m", KEYS.ingest)).status,
    403,
  );
  assert.equal((await getJson(app, "/v1/streams/orders", KEYS.read)).status, 200);
  const read = await getJson(app, "/v1/streams/orders/counters/count_1m", KEYS.admin);
  assert.equal(read.status, 200);
  assert.equal(read.body.windows.length, 2);
});

Deno.test("an unknown stream on an authenticated route is 401 before 404", async () => {
  const { app } = await testApp({ auth: true });
  assert.equal((await postEvents(app, { id: "a" }, { stream: "nope" })).status, 401);
  assert.equal(
    (await postEvents(app, { id: "a" }, { stream: "nope", key: KEYS.ingest })).status,
    404,
  );
});

class UnavailableStore extends MemoryStore {
  override applyBatch(): never {
    throw new StoreUnavailableError("Redis did not answer within 2000 ms");
  }
  override ping(): Promise<void> {
    return Promise.reject(new StoreUnavailableError("Redis did not answer within 2000 ms"));
  }
}

Deno.test("a store outage answers 503 with Retry-After, and /readyz reports it with Retry-After too", async () => {
  const store: Store = new UnavailableStore();
  const { app } = await testApp({ store });
  const res = await postEvents(app, { id: "a" });
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("Retry-After"), "1");
  assert.equal((await res.json()).error.code, "store_unavailable");
  const ready = await getJson(app, "/readyz");
  assert.equal(ready.status, 503);
  assert.equal(ready.body.status, "unavailable");
  // A balancer or client is told when to ask again, as the failed request is.
  assert.equal(ready.headers.get("Retry-After"), String(STORE_RETRY_AFTER_SECONDS));
  const healthy = await getJson((await testApp()).app, "/readyz");
  assert.deepEqual(healthy.body, { status: "ready", store: "memory" });
});

Deno.test("/readyz answers 503 shutting_down with Retry-After once the instance began to stop, so a load balancer drains it, while ingest is still served", async () => {
  const connections = new OpenConnections();
  const app = createApp({
    streams: compileConfig(TEST_CONFIG),
    store: new MemoryStore({ now: () => NOW }),
    keys: await KeyRing.parse(""),
    now: () => NOW,
    connections,
  });
  assert.deepEqual((await getJson(app, "/readyz")).body, { status: "ready", store: "memory" });
  await connections.close("Server is shutting down");
  const stopping = await getJson(app, "/readyz");
  assert.equal(stopping.status, 503);
  assert.equal(stopping.headers.get("Retry-After"), "1");
  assert.equal(stopping.body.status, "shutting_down");
  assert.equal(stopping.body.store, "memory");
  assert.match(stopping.body.error, /shutting down/);
  assert.equal(typeof stopping.body.requestId, "string");
  // Requests in flight and those on open connections are still served until the listener closes.
  const res = await postEvents(app, { id: "s1", ts: at(1) });
  assert.equal(res.status, 202);
  assert.equal((await getJson(app, "/healthz")).status, 200);
});

Deno.test("/readyz answers 503 starting while the webhook endpoints load, its log line saying why", async () => {
  let starting = true;
  const app = createApp({
    streams: compileConfig(TEST_CONFIG),
    store: new MemoryStore({ now: () => NOW }),
    keys: await KeyRing.parse(""),
    now: () => NOW,
    starting: () => starting,
  });
  await writtenLogs(async (lines) => {
    const res = await app.request("/readyz");
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("Retry-After"), "1");
    const body = await res.json();
    assert.equal(body.status, "starting");
    const line = jsonLines(lines, "edgestream.http").at(-1)!;
    assert.equal(line.status, 503);
    assert.deepEqual(line.error, { code: "starting", message: body.error });
    // A code of the one error table (README's), as `shutting_down` and `store_unavailable` are.
    assert.ok(Object.hasOwn(ERROR_CODES, line.error.code), line.error.code);
    assert.match(body.error, /starting/);
  });
  starting = false;
  assert.equal((await app.request("/readyz")).status, 200);
});

Deno.test("/readyz asks a reachable store at most once a second, and a failing one every time, its log line saying why", async () => {
  let now = NOW;
  let pings = 0;
  let down = false;
  class CountingStore extends MemoryStore {
    override ping(): Promise<void> {
      pings += 1;
      return down ? Promise.reject(new StoreUnavailableError("Redis is down")) : super.ping();
    }
  }
  const { app } = await testApp({ store: new CountingStore({ now: () => now }), now: () => now });
  const statuses = await Promise.all(
    Array.from({ length: 50 }, async () => (await app.request("/readyz")).status),
  );
  assert.deepEqual(new Set(statuses), new Set([200]));
  for (let i = 0; i < 50; i++) assert.equal((await app.request("/readyz")).status, 200);
  assert.equal(pings, 1);
  now += 1_000;
  down = true;
  await writtenLogs(async (lines) => {
    assert.equal((await app.request("/readyz")).status, 503);
    assert.equal((await app.request("/readyz")).status, 503);
    const line = jsonLines(lines, "edgestream.http").at(-1)!;
    assert.deepEqual(line.error, { code: "store_unavailable", message: "Redis is down" });
    assert.equal(line.cause, "StoreUnavailableError: Redis is down");
  });
  assert.equal(pings, 3);
  down = false;
  assert.equal((await app.request("/readyz")).status, 200);
});

Deno.test("/readyz asks the store again once the clock went back (an NTP step): a ready answer is kept for a second of time, not until the clock passes it again", async () => {
  let now = NOW;
  let down = false;
  class FailingStore extends MemoryStore {
    override ping(): Promise<void> {
      return down ? Promise.reject(new StoreUnavailableError("Redis is down")) : super.ping();
    }
  }
  const { app } = await testApp({ store: new FailingStore({ now: () => now }), now: () => now });
  assert.equal((await app.request("/readyz")).status, 200);
  // The clock steps back an hour, and the store goes down.
  now -= 3_600_000;
  down = true;
  assert.equal((await app.request("/readyz")).status, 503);
});

Deno.test("/readyz answers 503 when the store does not answer a ping in time, without waiting for it, and asks it once meanwhile", async () => {
  let pings = 0;
  let answer: (() => void) | undefined;
  class HungStore extends MemoryStore {
    override ping(): Promise<void> {
      pings += 1;
      return new Promise((resolve) => answer = resolve);
    }
  }
  const { app } = await testApp({ store: new HungStore() });
  await writtenLogs(async (lines) => {
    const [first, second] = await Promise.all([app.request("/readyz"), app.request("/readyz")]);
    for (const res of [first, second]) {
      assert.equal(res.status, 503);
      // With its request id, as every error reply.
      assert.deepEqual(await res.json(), {
        status: "unavailable",
        store: "memory",
        error: `The store did not answer a ping within ${READY_WAIT_MS} ms`,
        requestId: res.headers.get("X-Request-Id"),
      });
    }
    const line = jsonLines(lines, "edgestream.http").at(-1)!;
    assert.equal(line.error.code, "store_unavailable");
    // No error behind it: the ping has not failed, it has not answered yet.
    assert.equal(line.cause, undefined);
  });
  // The ping still in flight is the one later probes wait for; its answer makes them ready.
  const later = app.request("/readyz");
  answer!();
  assert.equal((await later).status, 200);
  assert.equal(pings, 1);
});

Deno.test("/readyz waits for a ping still in flight past a second too: a hung store is asked once, not once a second until its deadline", async () => {
  let now = NOW;
  let pings = 0;
  let answer: (() => void) | undefined;
  class HungStore extends MemoryStore {
    override ping(): Promise<void> {
      pings += 1;
      return new Promise((resolve) => answer = resolve);
    }
  }
  const { app } = await testApp({ store: new HungStore({ now: () => now }), now: () => now });
  assert.equal((await app.request("/readyz")).status, 503);
  // Past the second a reachable store's answer is kept, the first ping still has not answered.
  now += 4_000;
  assert.equal((await app.request("/readyz")).status, 503);
  assert.equal(pings, 1);
  const later = app.request("/readyz");
  answer!();
  assert.equal((await later).status, 200);
  assert.equal(pings, 1);
});

Deno.test("GET /v1/streams lists definitions and stats", async () => {
  const { app } = await testApp();
  await postEvents(app, [{ id: "a", ts: at(1) }, { id: "a", ts: at(1) }]);
  const { body } = await getJson(app, "/v1/streams");
  // By name (code point order), a page at a time.
  assert.deepEqual(body.streams.map((stream: { name: string }) => stream.name), ["open", "orders"]);
  assert.equal(body.nextCursor, null);
  const orders = body.streams[1];
  assert.deepEqual(orders.counters, [
    "count_1m",
    "sum_1m",
    "doubled_hop",
    "customers_sliding",
    "max_1m",
  ]);
  assert.equal(orders.stats.accepted, 2);
  assert.equal(orders.stats.duplicates, 1);
  assert.equal(orders.definition.dedupe.field, "id");
  assert.equal((await getJson(app, "/v1/streams/nope")).body.error.code, "stream_not_found");
});

Deno.test("unknown routes get the JSON error envelope", async () => {
  const { app } = await testApp();
  const { status, body } = await getJson(app, "/v2/nothing");
  assert.equal(status, 404);
  assert.equal(body.error.code, "not_found");
});

Deno.test("a path served but for its trailing slash is 404 naming the path without it", async () => {
  const { app } = await testApp();
  for (
    const [method, path, hint] of [
      ["GET", "/v1/streams/orders/", "; without the trailing slash: GET /v1/streams/orders"],
      ["GET", "/docs/", "; without the trailing slash: GET /docs"],
      ["GET", "/v1/streams//", "; without the trailing slash: GET /v1/streams"],
      [
        "POST",
        "/v1/streams/orders/events/",
        "; without the trailing slash: POST /v1/streams/orders/events",
      ],
      [
        "GET",
        "/v1/streams/orders/events/",
        "; without the trailing slash, /v1/streams/orders/events takes POST",
      ],
      [
        "GET",
        "/v1/streams/orders/counters/count_1m/",
        "; without the trailing slash: GET /v1/streams/orders/counters/count_1m",
      ],
      // Nothing served without it either: the plain 404.
      ["GET", "/v2/nothing/", ""],
      ["GET", "/v1/streams/orders/nothing/", ""],
    ]
  ) {
    const res = await app.request(path, {
      method,
      ...(method === "POST" ? { headers: { "Content-Type": "application/json" }, body: "{}" } : {}),
    });
    assert.equal(res.status, 404, `${method} ${path}`);
    const { error } = await res.json();
    assert.equal(error.code, "not_found", `${method} ${path}`);
    assert.equal(error.message, `No route for ${method} ${path}${hint}`);
  }
});

Deno.test("a 404's trailing-slash hint takes time linear in the path: a long run of slashes ended by another character and a slash does not hold the event loop", async () => {
  const { app } = await testApp();
  // A path Deno.serve takes (about 60,000 characters). Trimmed by `/\/+$/`, its 60,000 slashes
  // before the `x` made some 1.8e9 backtracking steps: seconds of a blocked event loop for one
  // request, no key needed. A security bound, not a speed target: linear work takes about a
  // millisecond here, so a second is far from flaky.
  const path = `/${"/".repeat(60_000)}x/`;
  const started = performance.now();
  const res = await app.request(path);
  const elapsed = performance.now() - started;
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error.code, "not_found");
  assert.ok(elapsed < 1_000, `${Math.round(elapsed)} ms for one 404`);
});

Deno.test("a route or page asked with a method it does not take is 405 with Allow", async () => {
  const { app } = await testApp();
  for (
    const [method, path, allow] of [
      ["GET", "/v1/streams/orders/events", "POST"],
      ["POST", "/v1/streams", "GET, HEAD"],
      ["PATCH", "/v1/streams/orders", "DELETE, GET, HEAD, PUT"],
      ["POST", "/openapi.json", "GET, HEAD"],
      ["POST", "/docs", "GET, HEAD"],
      ["DELETE", "/", "GET, HEAD"],
      ["PUT", "/sdk.js", "GET, HEAD"],
      ["POST", "/static/dashboard/alerts.js", "GET, HEAD"],
      ["DELETE", "/healthz", "GET, HEAD"],
    ]
  ) {
    const res = await app.request(path, { method });
    assert.equal(res.status, 405, `${method} ${path}`);
    assert.equal(res.headers.get("Allow"), allow);
    const { error } = await res.json();
    assert.equal(error.code, "method_not_allowed");
    assert.equal(error.message, `${path} takes ${allow}, not ${method}`);
  }
  const options = await app.request("/v1/streams/orders", { method: "OPTIONS" });
  assert.equal(options.status, 204);
  assert.equal(options.headers.get("Allow"), "DELETE, GET, HEAD, PUT");
  const page = await app.request("/docs", { method: "OPTIONS" });
  assert.equal(page.status, 204);
  assert.equal(page.headers.get("Allow"), "GET, HEAD");
  const file = await app.request("/static/dashboard/alerts.js", { method: "OPTIONS" });
  assert.equal(file.status, 204);
  assert.equal(file.headers.get("Allow"), "GET, HEAD");
  // A static file that is not there is 404 whatever the method: a 405 would say it is.
  for (const method of ["GET", "POST", "DELETE", "OPTIONS"]) {
    for (const path of ["/static/dashboard/nosuch.js", "/static/vendor/uplot/nosuch.css"]) {
      const res = await app.request(path, { method });
      assert.equal(res.status, 404, `${method} ${path}`);
      assert.equal(res.headers.get("Allow"), null);
      assert.equal((await res.json()).error.code, "not_found");
    }
  }
  // The ingest path's preflight names what its 405 names.
  const ingest = await app.request("/v1/streams/orders/events", { method: "OPTIONS" });
  assert.equal(ingest.status, 204);
  assert.equal(ingest.headers.get("Allow"), "POST");
});

Deno.test("with keys, 405 and OPTIONS answer a request with a key; one without gets 401 first", async () => {
  const { app } = await testApp({ auth: true });
  const ask = (method: string, key?: string) =>
    app.request("/v1/streams/orders", {
      method,
      headers: key ? { Authorization: `Bearer ${key}` } : {},
    });
  assert.equal((await ask("OPTIONS")).status, 401);
  assert.equal((await ask("PATCH")).status, 401);
  const options = await ask("OPTIONS", KEYS.read);
  assert.equal(options.status, 204);
  assert.equal(options.headers.get("Allow"), "DELETE, GET, HEAD, PUT");
  const patch = await ask("PATCH", KEYS.read);
  assert.equal(patch.status, 405);
  assert.equal(patch.headers.get("Allow"), "DELETE, GET, HEAD, PUT"); // Also on the paths whose routes read their key themselves: ingest, WebSocket, subscribe.
  for (
    const [method, path, key, allow] of [
      ["GET", "/v1/streams/orders/events", KEYS.ingest, "POST"],
      ["PUT", "/v1/streams/orders/events", KEYS.ingest, "POST"],
      ["POST", "/v1/streams/orders/ws", KEYS.ingest, "GET, HEAD"],
      ["POST", "/v1/streams/orders/subscribe", KEYS.read, "GET, HEAD"],
    ]
  ) {
    const without = await app.request(path, { method });
    assert.equal(without.status, 401, `${method} ${path}`);
    const keyed = await app.request(path, { method, headers: { Authorization: `Bearer ${key}` } });
    assert.equal(keyed.status, 405, `${method} ${path}`);
    assert.equal(keyed.headers.get("Allow"), allow);
  }
  // A preflight carries no key: the ingest path answers it without one.
  const preflight = await app.request("/v1/streams/orders/events", { method: "OPTIONS" });
  assert.equal(preflight.status, 204);
});

Deno.test("/openapi.json documents every route from the same schemas", async () => {
  const { app } = await testApp();
  const { status, body } = await getJson(app, "/openapi.json");
  assert.equal(status, 200);
  assert.equal(body.openapi, "3.1.0");
  for (
    const path of [
      "/v1/streams/{stream}/events",
      "/v1/streams",
      "/v1/streams/{stream}",
      "/v1/streams/{stream}/counters/{counter}",
      "/v1/streams/{stream}/counters/{counter}/current",
      "/readyz",
    ]
  ) assert.ok(body.paths[path], `missing ${path}`);
  assert.ok(body.components.schemas.IngestReply);
  assert.ok(body.paths["/v1/streams/{stream}/events"].post.responses["202"]);
});

Deno.test("POST /v1/admin/sweep reports the webhook deliveries it queued, as the OpenAPI document says", async () => {
  const { app } = await testApp();
  const res = await app.request("/v1/admin/sweep", { method: "POST" });
  assert.equal(res.status, 200);
  assert.deepEqual(await res.json(), { closed: [], fired: [], webhooks: { queued: 0 } });
  const doc = (await getJson(app, "/openapi.json")).body;
  const schema = doc.paths["/v1/admin/sweep"].post.responses["200"].content["application/json"]
    .schema;
  assert.deepEqual(schema.required, ["closed", "fired", "webhooks"]);
  assert.deepEqual(schema.properties.webhooks.required, ["queued"]);
  assert.equal(schema.properties.webhooks.properties.queued.type, "integer");
});

Deno.test("a receive-time stream's windows turn final and close by the clock alone", async () => {
  let now = Date.parse(at(30));
  const config = {
    streams: {
      clicks: {
        time: { lateness: "5s" },
        counters: { per_minute: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  };
  const { app } = await testApp({ config, now: () => now });
  assert.equal((await postEvents(app, [{}, {}], { stream: "clicks" })).status, 202);
  const read = async () =>
    (await getJson(app, "/v1/streams/clicks/counters/per_minute")).body.windows[0].final;
  assert.equal(await read(), false);
  const sweep = async () =>
    (await (await app.request("/v1/admin/sweep", { method: "POST" })).json()).closed;
  assert.deepEqual(await sweep(), []);
  now = Date.parse(at(65));
  assert.equal(await read(), true);
  const closed = await sweep();
  assert.deepEqual(closed.map((window: { start: string }) => window.start), [at(0)]);
  assert.deepEqual(closed[0].groups.map((group: { value: number }) => group.value), [2]);
});

Deno.test("on a receive-time stream shared by instances, lateness must cover their clocks' skew", async () => {
  const streams = (lateness: string) => ({
    streams: {
      clicks: {
        time: { lateness },
        counters: { per_minute: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  });
  for (const [lateness, late] of [["0s", 1], ["30s", 0]] as const) {
    // Two instances on one store, the second's clock 2 s ahead of the first's.
    const store = new MemoryStore({ now: () => Date.parse(at(30)) });
    const config = streams(lateness);
    const { app: behind } = await testApp({ config, store, now: () => Date.parse(at(30)) });
    const { app: ahead } = await testApp({ config, store, now: () => Date.parse(at(32)) });
    assert.equal((await postEvents(ahead, [{}], { stream: "clicks" })).status, 202);
    const reply = await (await postEvents(behind, [{}], { stream: "clicks" })).json();
    assert.equal(reply.late, late, lateness);
    const windows = (await getJson(behind, "/v1/streams/clicks/counters/per_minute")).body.windows;
    assert.deepEqual(windows.map((row: { value: number }) => row.value), [2 - late]);
  }
});

Deno.test("POST /v1/admin/sweep reports the alerts that final values fired", async () => {
  const config = {
    streams: {
      orders: {
        time: { field: "ts", lateness: "0s" },
        counters: { per_minute: { window: { tumbling: "1m" }, aggregate: "count" } },
        alerts: [{ name: "busy", counter: "per_minute", when: "value >= 2.0" }],
      },
    },
  };
  const { app } = await testApp({ config });
  await postEvents(app, [{ ts: at(1) }, { ts: at(2) }, { ts: at(100) }]);
  const report = await (await app.request("/v1/admin/sweep", { method: "POST" })).json();
  assert.deepEqual(report.fired, [{
    stream: "orders",
    alert: "busy",
    counter: "per_minute",
    start: at(0),
    end: at(60),
    group: {},
    value: 2,
  }]);
});

Deno.test("the middleware chain's layers for an ingest POST are those ingestApp runs in their stead", async () => {
  const { app } = await testApp({ auth: true });
  // The chain's handlers for an ingest POST. ingestApp (http/stream_routes.ts) runs their steps
  // in one handler: a middleware added here must be added there too.
  const [matched] = app.router.match("POST", "/v1/streams/orders/events");
  assert.deepEqual(
    matched.map(([[, route]]) => `${route.method} ${route.path}`),
    [
      "ALL /*", // requestLog
      "ALL /*", // headAnswers: acts on HEAD only
      "ALL /*", // originGuard
      "ALL /v1/*", // apiCors: passes ingest on (its CORS is ingestCors, addIngestCorsHeaders)
      "ALL /*", // limitBody: ingestApp reads the body within its own limits (readLimitedBody)
      "ALL /*", // apiQueryChecks: ingestApp calls refuseRepeatedQuery (a POST takes any name)
      "ALL /v1/streams/:stream/events", // ingestCors
      "ALL /v1/streams/:stream/events", // requireScopeForOtherMethods: passes POST on
      "POST /v1/streams/:stream/events", // requireIngestKey
      "POST /v1/streams/:stream/events", // the route
    ],
  );
});

Deno.test("a query parameter given twice is 400 invalid_query naming it, on every route, and changes nothing", async () => {
  const { app, store } = await testApp();
  for (
    const [method, path, name] of [
      ["GET", "/v1/streams/orders/counters/count_1m?limit=1&limit=2", "limit"],
      ["GET", "/v1/streams/orders/counters/count_1m/current?from=0&from=1", "from"],
      ["GET", "/v1/streams/orders/subscribe?types=window.closed&types=alert.fired", "types"],
      ["GET", "/v1/streams/orders/subscribe?counter=count_1m&counter=sum_1m", "counter"],
      ["POST", "/v1/streams/orders/events?key=a&key=b", "key"],
      ["GET", "/v1/keys?x=1&x=2", "x"],
    ]
  ) {
    const res = await app.request(path, {
      method,
      headers: { "Content-Type": "application/json" },
      body: method === "POST" ? JSON.stringify({ id: "twice", ts: at(1) }) : undefined,
    });
    assert.equal(res.status, 400, path);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_query", path);
    assert.equal(error.message, `Query parameter '${name}' is given more than once; give it once`);
  }
  assert.equal((await store.stats("orders", [])).accepted, 0);
  // group.<field> filters are apart: a field given twice uses the last value.
  const groups = await app.request(
    "/v1/streams/orders/counters/count_1m?group.country=FR&group.country=DE",
  );
  assert.equal(groups.status, 200);
});

Deno.test("a query parameter given twice on a path or method nothing serves is still its 404 or 405", async () => {
  const { app } = await testApp();
  for (
    const [method, path, status, code] of [
      ["GET", "/nope?a=1&a=2", 404, "not_found"],
      ["GET", "/v1/nope?limit=1&limit=2", 404, "not_found"],
      ["DELETE", "/healthz?a=1&a=2", 405, "method_not_allowed"],
      ["PATCH", "/v1/streams/orders/counters/count_1m?limit=1&limit=2", 405, "method_not_allowed"],
    ] as const
  ) {
    const res = await app.request(path, { method });
    assert.equal(res.status, status, `${method} ${path}`);
    assert.equal((await res.json()).error.code, code, `${method} ${path}`);
  }
  // OPTIONS on a served path still answers what it takes.
  const options = await app.request("/healthz?a=1&a=2", { method: "OPTIONS" });
  assert.equal(options.status, 204);
  assert.equal(options.headers.get("Allow"), "GET, HEAD"); // Pages, health checks and the API document take any query (tracking links, cache busters).
  for (const path of ["/", "/docs", "/sdk.js", "/healthz", "/readyz", "/openapi.json"]) {
    const res = await app.request(`${path}?utm=1&utm=2`);
    assert.equal(res.status, 200, path);
    await res.body?.cancel();
  }
});

Deno.test("with keys, a query parameter given twice to the API is a 400 before the key is checked", async () => {
  const { app } = await testApp({ auth: true });
  const res = await app.request("/v1/streams/orders/counters/count_1m?limit=1&limit=2");
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.code, "invalid_query");
});

Deno.test("servedRoutes() leaves out a path URLPattern cannot read (a regex parameter) rather than fail every 404", () => {
  const routes = servedRoutes({
    routes: [
      { method: "GET", path: "/a/:id{[0-9]+}" },
      { method: "GET", path: "/b/:id" },
      { method: "POST", path: "/b/:id" },
      { method: "ALL", path: "/*" },
    ],
  });
  assert.deepEqual(
    routes.map((route) => [route.pattern.pathname, route.methods]),
    [["/b/:id", ["GET", "HEAD", "POST"]]],
  );
});

Deno.test("a counter read gives 100 rows by default and at most 1,000; top is 1 to 1,000 and counts windows", async () => {
  const { app } = await testApp();
  const events = Array.from(
    { length: 1_001 },
    (_, i) => ({ id: `e${i}`, ts: at(5), country: `c${i}` }),
  );
  assert.equal((await postEvents(app, events.slice(0, 1_000))).status, 202);
  assert.equal((await postEvents(app, events.slice(1_000))).status, 202);
  const first = await getJson(app, "/v1/streams/orders/counters/count_1m");
  assert.equal(first.body.windows.length, 100);
  assert.ok(first.body.nextCursor);
  assert.equal(
    (await getJson(app, "/v1/streams/orders/counters/count_1m?limit=1000")).body.windows.length,
    1_000,
  );
  const top = await getJson(app, "/v1/streams/orders/counters/count_1m?top=1000&limit=1");
  assert.equal(top.status, 200);
  assert.equal(top.body.windows.length, 1_000, "limit counts windows with top");
  assert.deepEqual(top.body.others.map((row: { groups: number }) => row.groups), [1_001]);
  for (const query of ["limit=1001", "limit=0", "top=1001", "top=0"]) {
    const res = await getJson(app, `/v1/streams/orders/counters/count_1m?${query}`);
    assert.equal(res.status, 400, query);
    assert.equal(res.body.error.code, "invalid_query", query);
    assert.match(res.body.error.message, new RegExp(query.split("=")[0]), query);
  }
});
