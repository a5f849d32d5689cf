/**
 * The ingest route's `Idempotency-Key`: a retry gets the first reply and
 * applies nothing; a reuse with another body is 422; a second request while
 * the first is in progress is 409.
 */
import assert from "node:assert/strict";
import { cursorOfText, MemoryDefinitionStore, MemoryStore } from "../../src/store/mod.ts";
import { createApp } from "../../src/app.ts";
import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { MAX_STORED_REJECTED_CHARS } from "../../src/ingest/mod.ts";
import type { ApplyResult, Store, StoreBatch } from "../../src/store/mod.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import { RedisDeliveryStore } from "../../src/store/redis/delivery_store.ts";
import { register, setup } from "../fanout/webhooks/_setup.ts";
import { at, createKey, KEYS, NOW, postEvents, testApp } from "../_fixtures.ts";
import { redisTest, restClient, withDirect } from "../_redis.ts";
import { collectingLogs, messageOf } from "../_logs.ts";

type App = Awaited<ReturnType<typeof testApp>>["app"];

/** A stream without dedupe ids: only the key keeps a retry from counting twice. */
const CONFIG = {
  streams: {
    orders: {
      schema: {
        type: "object",
        properties: {
          ts: { type: "string" },
          country: { type: "string" },
          test: { type: "boolean" },
        },
      },
      time: { field: "ts", lateness: "1h" },
      transform: [{ filter: "!has(event.test) || !event.test" }],
      counters: { count_1m: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
};

function send(app: App, body: unknown, key?: string) {
  return app.request("/v1/streams/orders/events", {
    method: "POST",
    headers: {
      "Content-Type": "application/json",
      ...(key === undefined ? {} : { "Idempotency-Key": key }),
    },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

const batch = [
  { ts: at(10), country: "DE" },
  { ts: 17, country: "FR" },
  { ts: at(12), country: "DE", test: true },
];

async function countOf(app: App): Promise<number> {
  const res = await app.request("/v1/streams/orders/counters/count_1m");
  const body = await res.json();
  return body.windows.reduce((sum: number, row: { value: number }) => sum + row.value, 0);
}

Deno.test("a retry with the same Idempotency-Key and body gets the first reply and applies nothing", async () => {
  const { app, store } = await testApp({ config: CONFIG });
  const first = await send(app, batch, "retry-1");
  assert.equal(first.status, 202);
  assert.equal(first.headers.get("Idempotent-Replayed"), null);
  const reply = await first.json();
  assert.equal(reply.accepted, 2);
  assert.equal(reply.filtered, 1);
  assert.equal(reply.rejected.length, 1);
  assert.equal(reply.rejected[0].index, 1);

  const retry = await send(app, batch, "retry-1");
  assert.equal(retry.status, 202);
  assert.equal(retry.headers.get("Idempotent-Replayed"), "true");
  assert.deepEqual(await retry.json(), { ...reply, replayed: true });
  assert.equal(await countOf(app), 1);
  const stats = await store.stats("orders", []);
  assert.deepEqual([stats.accepted, stats.applied, stats.filtered], [2, 1, 1]);
});

Deno.test("the key may come as ?idempotencyKey= (beacons cannot set headers), and is the same key; two different keys are refused", async () => {
  const { app } = await testApp({ config: CONFIG });
  const post = (path: string, headers: Record<string, string> = {}) =>
    app.request(path, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: JSON.stringify(batch),
    });
  const first = await post("/v1/streams/orders/events?idempotencyKey=beacon-1");
  assert.equal(first.status, 202);
  const again = await post("/v1/streams/orders/events", { "Idempotency-Key": "beacon-1" });
  assert.equal(again.headers.get("Idempotent-Replayed"), "true");
  const bad = await post("/v1/streams/orders/events?idempotencyKey=has%20space");
  assert.equal(bad.status, 400);
  assert.equal((await bad.json()).error.code, "invalid_idempotency_key");
  // Two different keys: which one was meant cannot be told, so nothing is applied.
  const two = await post("/v1/streams/orders/events?idempotencyKey=k2", {
    "Idempotency-Key": "k3",
  });
  assert.equal(two.status, 400);
  const { error } = await two.json();
  assert.equal(error.code, "invalid_idempotency_key");
  assert.match(error.message, /^Two different idempotency keys/);
  // And the API document says so, not that one of them wins.
  const doc = await (await app.request("/openapi.json")).json();
  const parameter = doc.paths["/v1/streams/{stream}/events"].post.parameters.find((
    parameter: { name: string; in: string },
  ) => parameter.name === "idempotencyKey" && parameter.in === "query");
  assert.match(parameter.description, /differs, 400 `invalid_idempotency_key`/);
  assert.doesNotMatch(parameter.description, /wins/);
  // As any query parameter given twice.
  const repeated = await post("/v1/streams/orders/events?idempotencyKey=k2&idempotencyKey=k3");
  assert.equal(repeated.status, 400);
  assert.equal((await repeated.json()).error.code, "invalid_query");
  // The same key twice is one key.
  const same = await post("/v1/streams/orders/events?idempotencyKey=beacon-1", {
    "Idempotency-Key": "beacon-1",
  });
  assert.equal(same.headers.get("Idempotent-Replayed"), "true");
  assert.equal(await countOf(app), 1);
});

Deno.test("?idempotencyKey= with a percent-encoded name is the same key: a retry is not counted twice", async () => {
  const { app } = await testApp({ config: CONFIG });
  const post = (path: string) =>
    app.request(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(batch),
    });
  // `%69` is `i`: the name decodes to idempotencyKey, as every other parameter's does.
  assert.equal((await post("/v1/streams/orders/events?%69dempotencyKey=enc-1")).status, 202);
  const again = await post("/v1/streams/orders/events?idempotency%4Bey=enc-1");
  assert.equal(again.headers.get("Idempotent-Replayed"), "true");
  assert.equal(await countOf(app), 1);
});

Deno.test("another key, or no key, applies the same body again", async () => {
  const { app } = await testApp({ config: CONFIG });
  const events = [{ ts: at(10), country: "DE" }];
  assert.equal((await send(app, events, "a")).status, 202);
  assert.equal((await send(app, events, "b")).status, 202);
  assert.equal((await send(app, events)).status, 202);
  assert.equal(await countOf(app), 3);
});

Deno.test("an Idempotency-Key reused with another body is 422 and applies nothing", async () => {
  const { app, store } = await testApp({ config: CONFIG });
  assert.equal((await send(app, [{ ts: at(10), country: "DE" }], "k")).status, 202);
  const reused = await send(app, [{ ts: at(20), country: "FR" }], "k");
  const body = await reused.json();
  assert.equal(reused.status, 422);
  assert.equal(body.error.code, "idempotency_key_reused");
  assert.equal(
    body.error.message,
    "Idempotency-Key 'k' was used with another body within the last 1d",
  );
  // A body none of whose events is valid is refused first, as without a key: 400, nothing applied.
  const invalid = await send(app, [{ ts: "not a time", country: "FR" }], "k");
  assert.equal(invalid.status, 400);
  assert.equal((await invalid.json()).error.code, "no_events_accepted");
  assert.equal((await store.stats("orders", [])).accepted, 1);
});

Deno.test("a request whose events were all refused keeps no reply: the fixed retry applies", async () => {
  const { app } = await testApp({ config: CONFIG });
  const refused = await send(app, [{ ts: "not a time", country: "DE" }], "fix-me");
  assert.equal(refused.status, 400);
  assert.equal((await refused.json()).error.code, "no_events_accepted");
  const fixed = await send(app, [{ ts: at(10), country: "DE" }], "fix-me");
  assert.equal(fixed.status, 202);
  assert.equal(fixed.headers.get("Idempotent-Replayed"), null);
  assert.equal(await countOf(app), 1);
});

Deno.test("a stream's stats count rejected events, of a 400 no_events_accepted too, in the OpenAPI document too", async () => {
  const { app, store, rejectedCounts } = await testApp({ config: CONFIG });
  assert.equal((await send(app, batch)).status, 202);
  // No event accepted: still counted, as a producer sending only bad events must show (off the
  // request's path, within about a second: flushed here).
  assert.equal((await send(app, [{ ts: "not a time" }, { ts: "nor this" }])).status, 400);
  await rejectedCounts.flush();
  const res = await app.request("/v1/streams/orders");
  assert.deepEqual(
    [(await res.json()).stats.rejected, (await store.stats("orders", [])).rejected],
    [3, 3],
  );
  const doc = await (await app.request("/openapi.json")).json();
  assert.ok(doc.components.schemas.StreamStats.required.includes("rejected"));
});

Deno.test("a second request with a key still in progress is 409 and applies nothing", async () => {
  let release!: () => void;
  const gate = new Promise<void>((resolve) => release = resolve);
  const memory = new MemoryStore({ now: () => NOW });
  // The first apply waits at the gate, so the second arrives while it is in flight.
  const store = Object.assign(Object.create(memory), {
    async applyBatch(batch: StoreBatch): Promise<ApplyResult> {
      await gate;
      return memory.applyBatch(batch);
    },
  });
  const { app } = await testApp({ store, config: CONFIG });
  const events = [{ ts: at(10), country: "DE" }];
  const first = send(app, events, "slow");
  await new Promise((resolve) => setTimeout(resolve, 20));
  const second = await send(app, events, "slow");
  const body = await second.json();
  assert.equal(second.status, 409);
  assert.equal(body.error.code, "idempotency_key_in_flight");
  release();
  assert.equal((await first).status, 202);
  assert.equal((await memory.stats("orders", [])).accepted, 1);
  // Once the first is done, the same request is a replay.
  assert.equal((await send(app, events, "slow")).headers.get("Idempotent-Replayed"), "true");
});

Deno.test("a malformed Idempotency-Key is 400 and applies nothing", async () => {
  const { app, store } = await testApp({ config: CONFIG });
  for (const key of ["", "has space", "x".repeat(256), "é"]) {
    let res: Response;
    try {
      res = await app.request("/v1/streams/orders/events", {
        method: "POST",
        headers: new Headers([["Content-Type", "application/json"], ["Idempotency-Key", key]]),
        body: JSON.stringify([{ ts: at(10), country: "DE" }]),
      });
    } catch {
      continue; // A header the runtime itself refuses never reaches us.
    }
    assert.equal(res.status, 400, key);
    assert.equal((await res.json()).error.code, "invalid_idempotency_key");
  }
  // An empty one is no key left out: 1-255 characters, as `?idempotencyKey=` too.
  const empty = await app.request("/v1/streams/orders/events?idempotencyKey=", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify([{ ts: at(10), country: "DE" }]),
  });
  assert.equal(empty.status, 400);
  assert.deepEqual(
    [(await empty.json()).error.message],
    ["Idempotency-Key must be 1-255 characters, got 0"],
  );
  assert.equal((await store.stats("orders", [])).accepted, 0);
});

Deno.test("a stream's idempotencyTtl bounds how long a reply is kept", async () => {
  let now = NOW;
  const { app } = await testApp({
    config: { streams: { orders: { ...CONFIG.streams.orders, idempotencyTtl: "1m" } } },
    now: () => now,
    store: new MemoryStore({ now: () => now }),
  });
  const events = [{ ts: at(10) }];
  assert.equal((await send(app, events, "k")).status, 202);
  now += 59_000;
  assert.equal((await send(app, events, "k")).headers.get("Idempotent-Replayed"), "true");
  now += 2_000;
  const later = await send(app, events, "k");
  assert.equal(later.status, 202);
  assert.equal(later.headers.get("Idempotent-Replayed"), null);
});

Deno.test("an Idempotency-Key of 255 printable ASCII characters is taken, and its retry replayed", async () => {
  const { app } = await testApp({ config: CONFIG });
  const key = "!~".repeat(127) + "k";
  assert.equal(key.length, 255);
  const events = [{ ts: at(10), country: "DE" }];
  const first = await send(app, events, key);
  assert.equal(first.status, 202);
  const retry = await send(app, events, key);
  assert.equal(retry.headers.get("Idempotent-Replayed"), "true");
  assert.equal(await countOf(app), 1);
});

Deno.test("an Idempotency-Key header sent twice (joined 'a, a') is 400 saying so, not that the key is no printable ASCII; nothing applied", async () => {
  const { app } = await testApp({ config: CONFIG });
  const events = [{ ts: at(10), country: "DE" }];
  for (const values of [["a", "a"], ["a", "b"], ["k".repeat(200), "k".repeat(200)]]) {
    const headers = new Headers({ "Content-Type": "application/json" });
    for (const value of values) headers.append("Idempotency-Key", value);
    const res = await app.request("/v1/streams/orders/events", {
      method: "POST",
      headers,
      body: JSON.stringify(events),
    });
    assert.equal(res.status, 400);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_idempotency_key");
    assert.match(
      error.message,
      /^Idempotency-Key was sent more than once \(its values joined: '.+, .+'\): send the header once$/,
    );
  }
  // One header with a space is no repeat; a query key holding ', ' neither.
  const spaced = await send(app, events, "a b");
  assert.equal(
    (await spaced.json()).error.message,
    "Idempotency-Key must be printable ASCII without spaces",
  );
  const query = await app.request("/v1/streams/orders/events?idempotencyKey=a,%20a", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(events),
  });
  assert.equal(
    (await query.json()).error.message,
    "Idempotency-Key must be printable ASCII without spaces",
  );
  assert.equal(await countOf(app), 0);
});

/**
 * A replay on `store` of a request with 3 rejected events (the first reply whole) and of one with
 * 150 (the first ones that fit in 4,096 characters of JSON, and how many it leaves out).
 */
async function replaysShortenedOnlyPastTheBound(
  store: Store,
): Promise<{ app: App; events: unknown[]; reply: { rejected: unknown[] } }> {
  const { app } = await testApp({ config: CONFIG, store });
  const rejectedOf = (count: number) => [
    { ts: at(10), country: "DE" },
    ...Array.from({ length: count }, () => ({ ts: at(10), country: 1 })),
  ];
  // The usual request: its replay is its first reply.
  const few = await (await send(app, rejectedOf(3), "few-rejected")).json();
  assert.equal(few.rejected.length, 3);
  const fewAgain = await send(app, rejectedOf(3), "few-rejected");
  assert.equal(fewAgain.headers.get("Idempotent-Replayed"), "true");
  assert.deepEqual(await fewAgain.json(), { ...few, replayed: true });

  const events = rejectedOf(150);
  const first = await send(app, events, "many-rejected");
  assert.equal(first.status, 202);
  const reply = await first.json();
  // The first reply is whole, and says nothing of a bound.
  assert.equal(reply.rejected.length, 150);
  assert.equal("rejectedOmitted" in reply, false);
  const retry = await send(app, events, "many-rejected");
  assert.equal(retry.headers.get("Idempotent-Replayed"), "true");
  const replayed = await retry.json();
  const kept = replayed.rejected.length;
  assert.ok(kept > 0 && kept < 150, `${kept} kept`);
  assert.ok(JSON.stringify(replayed.rejected).length <= MAX_STORED_REJECTED_CHARS);
  assert.ok(JSON.stringify(reply.rejected.slice(0, kept + 1)).length > MAX_STORED_REJECTED_CHARS);
  assert.deepEqual(replayed, {
    ...reply,
    rejected: reply.rejected.slice(0, kept),
    rejectedOmitted: 150 - kept,
    replayed: true,
  });
  // The replay applied nothing, so the stream's stats count the rejected events once.
  assert.equal((await store.stats("orders", [])).rejected, 153);
  return { app, events, reply };
}

Deno.test("memory: a replay is the first reply whole for a few rejected events; past 4,096 characters of them, the first ones and 'rejectedOmitted'", async () => {
  const store = new MemoryStore({ now: () => NOW });
  await replaysShortenedOnlyPastTheBound(store);
});

redisTest(
  "redis: a replay is the first reply whole for a few rejected events; past 4,096 characters of them, the first ones and 'rejectedOmitted'",
  async (fixture) => {
    const { app, events, reply } = await replaysShortenedOnlyPastTheBound(
      new RedisStore(restClient(fixture), { now: () => NOW }),
    );
    // Each stored reply, its key and Redis's own overhead: at most some 6 KB, under 1 KB with few
    // rejected events (README).
    const usage = await withDirect(fixture.redisUrl, async (command) => {
      const keys = (await command("KEYS", "*idem:*")) as string[];
      return await Promise.all(
        keys.map(async (key) => Number(await command("MEMORY", "USAGE", key))),
      );
    });
    assert.equal(usage.length, 2);
    assert.ok(
      Math.min(...usage) < 1_024 && Math.max(...usage) <= 6_144,
      `${usage.join(", ")} bytes`,
    );
    // A reply an older release stored (the first 100 rejected events, no 'rejectedOmitted') is
    // replayed as it was stored.
    const older = `{"accepted":1,"filtered":0,"rejected":${
      JSON.stringify(reply.rejected.slice(0, 100))
    }}`;
    await withDirect(fixture.redisUrl, async (command) => {
      for (const key of (await command("KEYS", "*idem:*")) as string[]) {
        const stored = (await command("HGET", key, "r")) as string;
        if (stored.includes("rejectedOmitted")) await command("HSET", key, "r", older);
      }
    });
    const replayed = await (await send(app, events, "many-rejected")).json();
    assert.deepEqual(replayed, {
      ...reply,
      rejected: reply.rejected.slice(0, 100),
      replayed: true,
    });
  },
);

/** A stream whose schema finds an error in each item of `tags` that is not a string. */
const TAGGED = {
  streams: {
    tagged: {
      schema: {
        type: "object",
        properties: { tags: { type: "array", items: { type: "string" } } },
      },
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
};

Deno.test("a rejected event lists its first 10 errors and how many more; a stored reply no more events than 4,096 characters of JSON hold", async () => {
  // Each string in `tags` that is a number is an error of its own: 200 errors an event.
  const { app } = await testApp({ config: TAGGED });
  const events = [
    { tags: ["ok"] },
    ...Array.from({ length: 100 }, () => ({ tags: Array.from({ length: 200 }, () => 1) })),
  ];
  const post = () =>
    app.request("/v1/streams/tagged/events", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": "many-errors" },
      body: JSON.stringify(events),
    });
  const first = await post();
  assert.equal(first.status, 202);
  const reply = await first.json();
  // 200 errors an event: the answer lists the first 10 and says how many more.
  assert.equal(reply.rejected.length, 100);
  for (const item of reply.rejected) {
    assert.deepEqual(
      item.errors.map((error: { path: string }) => error.path),
      [...Array.from({ length: 10 }, (_, i) => `tags.${i}`), ""],
    );
    assert.deepEqual(item.errors[10], { path: "", message: "and 190 more errors not listed" });
  }
  const retry = await post();
  assert.equal(retry.headers.get("Idempotent-Replayed"), "true");
  const replayed = await retry.json();
  const stored = replayed.rejected as Array<{ index: number; errors: unknown[] }>;
  // The first ones in order, as answered, as many as fit in 4,096 characters.
  assert.ok(stored.length > 0 && stored.length < 100, `${stored.length} stored`);
  assert.deepEqual(stored, reply.rejected.slice(0, stored.length));
  assert.ok(JSON.stringify(stored).length <= MAX_STORED_REJECTED_CHARS);
  assert.ok(
    JSON.stringify(reply.rejected.slice(0, stored.length + 1)).length > MAX_STORED_REJECTED_CHARS,
  );
  assert.deepEqual(
    { ...replayed, rejected: [] },
    { ...reply, rejected: [], rejectedOmitted: 100 - stored.length, replayed: true },
  );
});

Deno.test("README: a number dedupe id past 2^53 is the nearest number JSON gives, so two such ids are one (send them as strings)", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "An integer past 2^53 is read as the nearest number JSON gives (`9007199254740993` is `9007199254740992`), so two such ids can be one: send ids that large (64-bit database ids, snowflakes) as strings.";
  assert.ok(readme.includes(claim), claim);
  const { app } = await testApp({
    config: {
      streams: {
        big: {
          dedupe: { field: "id", ttl: "1h" },
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    },
  });
  const send = (body: string) =>
    app.request("/v1/streams/big/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body,
    });
  const numbers = await (await send('[{"id": 9007199254740992}, {"id": 9007199254740993}]')).json();
  assert.deepEqual([numbers.accepted, numbers.duplicates], [2, 1]);
  const strings = await (await send('[{"id": "9007199254740994"}, {"id": "9007199254740995"}]'))
    .json();
  assert.deepEqual([strings.accepted, strings.duplicates], [2, 0]);
});

Deno.test("a stored reply keeps the first rejected event, shortened, even when it alone is over 65,536 characters of JSON", async () => {
  // Objects nested 28 deep under 250-character keys, with 12 numbers where objects are wanted at
  // the bottom: each error's path is about 7,000 characters, the rejection over 65,536.
  const { app } = await testApp({
    config: {
      streams: {
        nested: {
          schema: {
            $defs: { node: { type: "object", additionalProperties: { $ref: "#/$defs/node" } } },
            $ref: "#/$defs/node",
          },
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    },
  });
  let deep: Record<string, unknown> = Object.fromEntries(
    Array.from({ length: 12 }, (_, i) => [`leaf${i}`, i]),
  );
  for (let level = 0; level < 28; level++) deep = { [`${level}`.padEnd(250, "k")]: deep };
  const post = () =>
    app.request("/v1/streams/nested/events", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": "one-big-rejection" },
      body: JSON.stringify([{}, deep]),
    });
  const first = await (await post()).json();
  assert.equal(first.rejected.length, 1);
  assert.ok(JSON.stringify(first.rejected).length > 65_536, "the rejection is over the bound");
  const replayed = await (await post()).json();
  assert.equal(replayed.replayed, true);
  // Kept, its paths quoted within 256 characters as client input is: the stored reply stays small.
  const cut = (text: string) => `${[...text].slice(0, 256).join("")}… (${text.length} characters)`;
  assert.deepEqual(replayed.rejected, [{
    index: 1,
    errors: first.rejected[0].errors.map((error: { path: string; message: string }) => ({
      path: error.path.length > 256 ? cut(error.path) : error.path,
      message: error.message,
    })),
  }]);
  assert.ok(JSON.stringify(replayed.rejected).length < 65_536);
  assert.equal("rejectedOmitted" in replayed, false, "the one rejected event is listed");
});

Deno.test("a stored reply's first rejected event, alone past the bound with paths and messages JSON escapes 6 times over, is shortened within 4,096 characters", async () => {
  // Keys of control characters (each `\u0001` in JSON) whose values are not in an enum of strings
  // of them: each of the 11 errors listed has a path and a message over 256 characters, each
  // character 6 of JSON.
  const escaped = "\u0001".repeat(300);
  const { app } = await testApp({
    config: {
      streams: {
        escaped: {
          schema: { type: "object", additionalProperties: { enum: [escaped, `${escaped}"`] } },
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    },
  });
  const event = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`${escaped}${i}`, 1]));
  const post = () =>
    app.request("/v1/streams/escaped/events", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": "escaped-rejection" },
      body: JSON.stringify([{}, event]),
    });
  const first = await (await post()).json();
  const errors = first.rejected[0].errors as Array<{ path: string; message: string }>;
  assert.equal(errors.length, 11);
  assert.ok(
    errors.slice(0, 10).every((error) => error.path.length > 256 && error.message.length > 256),
  );
  const replayed = await (await post()).json();
  assert.equal(replayed.replayed, true);
  assert.ok(
    JSON.stringify(replayed.rejected).length <= MAX_STORED_REJECTED_CHARS,
    `${JSON.stringify(replayed.rejected).length} characters stored`,
  );
  // Every error kept, each path and message its first characters and `…` alone, no count: a path's
  // key is cut already with the key's count (`… (301 characters)`), which a count of the path's
  // characters would read as.
  const stored = replayed.rejected[0].errors as Array<{ path: string; message: string }>;
  assert.equal(replayed.rejected[0].index, 1);
  assert.equal(stored.length, 11);
  for (const [i, error] of stored.slice(0, 10).entries()) {
    assert.match(errors[i].path, /… \(30\d characters\)$/);
    for (
      const [cut, answered] of [[error.path, errors[i].path], [error.message, errors[i].message]]
    ) {
      assert.ok(cut.endsWith("…") && !cut.includes(" characters)"), cut);
      assert.ok(answered.startsWith(cut.slice(0, -1)), cut);
      assert.ok(cut.length > 1 && cut.length < answered.length, cut);
    }
  }
  assert.deepEqual(stored[10], errors[10]);
  assert.equal("rejectedOmitted" in replayed, false, "the one rejected event is listed");
});

Deno.test("a rejected event with 11 errors lists 10 and 'and 1 more error not listed'; with 10, all 10", async () => {
  const { app } = await testApp({ config: TAGGED });
  const response = await app.request("/v1/streams/tagged/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify([{ tags: Array(11).fill(1) }, { tags: Array(10).fill(1) }]),
  });
  assert.equal(response.status, 400);
  const { rejected } = await response.json();
  assert.equal(rejected[0].errors.length, 11);
  assert.deepEqual(rejected[0].errors[10], { path: "", message: "and 1 more error not listed" });
  assert.deepEqual(
    rejected[1].errors.map((error: { path: string }) => error.path),
    Array.from({ length: 10 }, (_, i) => `tags.${i}`),
  );
});

Deno.test("a stream's stats show an idle stream's watermark following the clock (time.idle), though no close raised it in the store", async () => {
  let clock = NOW;
  const { app } = await testApp({
    config: {
      streams: {
        r: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } },
        e: {
          time: { field: "ts", lateness: "0s" },
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    },
    now: () => clock,
  });
  for (const [stream, event] of [["r", {}], ["e", { ts: at(5) }]] as const) {
    const res = await postEvents(app, [event], { stream });
    assert.ok(res.ok, await res.text());
  }
  clock = NOW + 42_000;
  const watermark = async (stream: string) =>
    (await (await app.request(`/v1/streams/${stream}`)).json()).stats.watermark;
  // Receive time (idle 0s): the clock; event time without idle: its largest event time.
  assert.equal(await watermark("r"), new Date(clock).toISOString());
  assert.equal(await watermark("e"), new Date(at(5)).toISOString());
});

Deno.test("a window's start before year 0 (an expanded year) reads back as from and to, and as event time", async () => {
  const { app } = await testApp({ config: CONFIG });
  const res = await postEvents(app, [{ ts: "-000001-06-15T10:00:30Z" }]);
  const body = await res.text();
  assert.ok(res.ok, body);
  assert.equal(JSON.parse(body).accepted, 1, body);
  const all = await (await app.request("/v1/streams/orders/counters/count_1m")).json();
  assert.deepEqual(all.windows.map((row: { start: string }) => row.start), [
    "-000001-06-15T10:00:00.000Z",
  ]);
  const start = encodeURIComponent(all.windows[0].start);
  const end = encodeURIComponent(all.windows[0].end);
  const read = await app.request(`/v1/streams/orders/counters/count_1m?from=${start}&to=${end}`);
  const text = await read.text();
  assert.equal(read.status, 200, text);
  assert.deepEqual(JSON.parse(text).windows, all.windows);
  const before = await app.request(`/v1/streams/orders/counters/count_1m?to=${start}`);
  assert.deepEqual((await before.json()).windows, []);
});

Deno.test("README Reading counters: from <= start < to holds for a from or to with digits past the millisecond", async () => {
  const { app } = await testApp({ config: CONFIG });
  const res = await postEvents(app, [{ ts: at(0) }, { ts: at(60) }]);
  assert.ok(res.ok, await res.text());
  const starts = async (query: string) => {
    const read = await app.request(`/v1/streams/orders/counters/count_1m?${query}`);
    const text = await read.text();
    assert.equal(read.status, 200, text);
    return JSON.parse(text).windows.map((row: { start: string }) => row.start);
  };
  // The windows start at 00:00:00.000 and 00:01:00.000. A bound a tenth of a millisecond after a
  // start was read as that start (the digits past the millisecond dropped): from= returned the
  // window starting before it, to= left out the one starting before it.
  assert.deepEqual(await starts("from=2026-01-01T00:00:00.0001Z"), [at(60)]);
  assert.deepEqual(await starts("from=2026-01-01T00:00:00.000999999Z"), [at(60)]);
  assert.deepEqual(await starts("to=2026-01-01T00:01:00.0001Z"), [at(60), at(0)]);
  assert.deepEqual(await starts("from=2026-01-01T00:00:00.0001Z&to=2026-01-01T00:01:00.0001Z"), [
    at(60),
  ]);
  // Zeros past the millisecond change nothing: the bound is that millisecond.
  assert.deepEqual(await starts("from=2026-01-01T00:00:00.000000Z&to=2026-01-01T00:01:00.0000Z"), [
    at(0),
  ]);
});

Deno.test("a counter read words every bad from or to alike, whether it looks like a time or not", async () => {
  const { app } = await testApp({ config: CONFIG });
  for (
    const [name, text] of [
      ["from", "soon"],
      ["from", "2026-02-30"],
      ["to", "yesterday"],
      ["to", "2026-01-01T24:00:00Z"],
      ["from", "1.5"],
    ]
  ) {
    const read = await app.request(
      `/v1/streams/orders/counters/count_1m?${name}=${encodeURIComponent(text)}`,
    );
    assert.equal(read.status, 400, text);
    const body = await read.json();
    assert.equal(body.error.code, "invalid_query", text);
    assert.equal(
      body.error.message,
      `Invalid query parameter ${name}: expected a time (ISO-8601, UTC when it has no offset, or epoch milliseconds), received '${text}'`,
    );
  }
});

Deno.test("a counter read's from or to in ISO 8601's basic form or with a comma fraction is refused, saying which", async () => {
  const { app } = await testApp({ config: CONFIG });
  for (
    const [name, text, why] of [
      ["from", "20260101T000500Z", "the basic form, without '-' and ':', is not read"],
      ["to", "2026-01-01T00:05:00,5Z", "a fraction of a second follows '.', not ','"],
    ]
  ) {
    const read = await app.request(
      `/v1/streams/orders/counters/count_1m?${name}=${encodeURIComponent(text)}`,
    );
    assert.equal(read.status, 400, text);
    assert.equal(
      (await read.json()).error.message,
      `Invalid query parameter ${name}: expected a time (ISO-8601, UTC when it has no offset, or epoch milliseconds), received '${text}': ${why}`,
    );
  }
});

Deno.test("a counter read's from or to whose '+' a URL query read as a space says to write it as %2B", async () => {
  const { app } = await testApp({ config: CONFIG });
  for (
    const [query, received, hint] of [
      [
        "from=2026-01-01T10:00:00+01:00",
        "2026-01-01T10:00:00 01:00",
        "2026-01-01T10:00:00%2B01:00",
      ],
      ["to=+010000-01-01", " 010000-01-01", "%2B010000-01-01"],
    ]
  ) {
    const name = query.slice(0, query.indexOf("="));
    const read = await app.request(`/v1/streams/orders/counters/count_1m?${query}`);
    assert.equal(read.status, 400, query);
    const body = await read.json();
    assert.equal(body.error.code, "invalid_query", query);
    assert.equal(
      body.error.message,
      `Invalid query parameter ${name}: expected a time (ISO-8601, UTC when it has no offset, or epoch milliseconds), received '${received}'; a '+' in a URL query reads as a space, so write it as %2B (${name}=${hint})`,
    );
    // Written as the message says, it reads.
    const fixed = await app.request(`/v1/streams/orders/counters/count_1m?${name}=${hint}`);
    assert.equal(fixed.status, 200, await fixed.text());
  }
  // A space that no '+' explains gets no such hint.
  const other = await app.request("/v1/streams/orders/counters/count_1m?from=soon%20ish");
  assert.equal(
    (await other.json()).error.message,
    "Invalid query parameter from: expected a time (ISO-8601, UTC when it has no offset, or epoch milliseconds), received 'soon ish'",
  );
});

Deno.test("README group filters: a '+' in a value is written %2B (group.g=1e%2B21 finds the number 1e21); sent as '+' it filters on a space, a value a group may have, and the API document says so", async () => {
  const { app } = await testApp({
    config: {
      streams: {
        shop: {
          time: { field: "ts" },
          counters: { n: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" } },
        },
      },
    },
  });
  const values = [1e21, "1e 21", "C++", "C  "];
  const events = values.map((g, i) => ({ ts: at(i + 1), g }));
  assert.equal((await postEvents(app, events, { stream: "shop" })).status, 202);
  const groups = async (query: string) => {
    const read = await app.request(`/v1/streams/shop/counters/n?${query}`);
    assert.equal(read.status, 200, query);
    return (await read.json()).windows.map((row: { group: { g: unknown } }) => row.group.g);
  };
  assert.deepEqual(await groups("group.g=1e%2B21"), [1e21]);
  assert.deepEqual(await groups("group.g=1e+21"), ["1e 21"]);
  assert.deepEqual(await groups("group.g=C%2B%2B"), ["C++"]);
  assert.deepEqual(await groups("group.g=C++"), ["C  "]);
  // Where no group has the space: an empty reply, no error (a group could have had it).
  assert.deepEqual(await groups("group.g=2e+21"), []);
  const doc = await (await app.request("/openapi.json")).json();
  const group = doc.paths["/v1/streams/{stream}/counters/{counter}"].get.parameters
    .find((parameter: { name: string }) => parameter.name === "group");
  assert.match(
    group.description,
    /A URL query reads `\+` as a space, so a `\+` in a value is written `%2B`: `group\.g=1e%2B21` for the number 1e21/,
  );
});

Deno.test("…/current refuses from and to (which bound the listing, not the current window): 400 invalid_query naming the parameter", async () => {
  const { app } = await testApp({ config: CONFIG });
  const res = await postEvents(app, [{ ts: at(5) }]);
  assert.ok(res.ok, await res.text());
  for (
    const [query, name] of [
      ["from=0", "from"],
      ["to=2026-01-01T00:00:00Z", "to"],
      ["%66rom=0", "from"],
      ["limit=5&to=0", "to"],
      ["top=1&from=0", "from"],
    ]
  ) {
    const read = await app.request(`/v1/streams/orders/counters/count_1m/current?${query}`);
    assert.equal(read.status, 400, query);
    const body = await read.json();
    assert.equal(body.error.code, "invalid_query", query);
    assert.equal(
      body.error.message,
      `Query parameter '${name}' bounds the windows of GET /v1/streams/{stream}/counters/{counter}, not the current window: leave it out, or read that listing`,
    );
  }
  // The same read without them answers.
  const current = await app.request("/v1/streams/orders/counters/count_1m/current");
  assert.equal(current.status, 200);
});

Deno.test("…/current refuses a cursor naming a window outside the time range: 400 invalid_cursor, not a 500", async () => {
  const { app } = await testApp({ config: CONFIG });
  const res = await postEvents(app, [{ ts: at(5) }]);
  assert.ok(res.ok, await res.text());
  // Starts of 1m windows, safe integers, whose window cannot be written as a time.
  for (const startMs of [8.64e15, 9e15, -9e15]) {
    const cursor = cursorOfText(JSON.stringify([startMs, null, 2]));
    const read = await app.request(`/v1/streams/orders/counters/count_1m/current?cursor=${cursor}`);
    assert.equal(read.status, 400, `start ${startMs}`);
    const body = await read.json();
    assert.equal(body.error.code, "invalid_cursor");
    assert.match(body.error.message, /outside the time range/);
  }
});

Deno.test("a hand-written cursor naming a group by digest with a start shorter than a cut key is 400 invalid_cursor, not a search of every key of the window", async () => {
  const config = {
    streams: {
      shop: {
        time: { field: "ts", lateness: "1h" },
        counters: { n: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" } },
      },
    },
  };
  let pageReads = 0;
  class CountingStore extends MemoryStore {
    override readWindows(...args: Parameters<MemoryStore["readWindows"]>) {
      if (args[3]?.page) pageReads++;
      return super.readWindows(...args);
    }
  }
  const { app } = await testApp({ config, store: new CountingStore({ now: () => NOW }) });
  for (let batch = 0; batch < 5; batch++) {
    const events = Array.from({ length: 500 }, (_, i) => ({ ts: at(5), g: `k${batch * 500 + i}` }));
    assert.equal((await postEvents(app, events, { stream: "shop" })).status, 202);
  }
  const startMs = Date.parse(at(0));
  const digest = "0".repeat(64);
  for (const path of ["", "/current"]) {
    // An empty start begins every key: the page would read all 2,500 of them, 1,000 at a time.
    for (const start of ["", '["k', "x".repeat(998)]) {
      const cursor = cursorOfText(JSON.stringify([startMs, start, 3, digest]));
      const read = await app.request(`/v1/streams/shop/counters/n${path}?cursor=${cursor}`);
      assert.equal(read.status, 400, `${path} ${start.length}`);
      const body = await read.json();
      assert.equal(body.error.code, "invalid_cursor");
      assert.match(body.error.message, /its group's start is not one a cursor holds/);
    }
    assert.equal(pageReads, 0, path);
    // A start as long as a cut key's is read: no key has it, so the page goes on after it.
    for (const start of ["y".repeat(999), "y".repeat(1000)]) {
      const cursor = cursorOfText(JSON.stringify([startMs, start, 3, digest]));
      const read = await app.request(`/v1/streams/shop/counters/n${path}?cursor=${cursor}`);
      assert.equal(read.status, 200, `${path} ${start.length}`);
      assert.deepEqual((await read.json()).windows, []);
    }
    pageReads = 0;
  }
});

Deno.test("a legacy cursor whose group holds a value nested 20,000 deep is 400 invalid_cursor, not a 500", async () => {
  const config = {
    streams: {
      shop: {
        time: { field: "ts", lateness: "1h" },
        counters: { n: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" } },
      },
    },
  };
  const { app } = await testApp({ config });
  assert.equal((await postEvents(app, [{ ts: at(5), g: "a" }], { stream: "shop" })).status, 202);
  const deep = "[".repeat(20_000) + "]".repeat(20_000);
  // The release that ordered groups by their object's JSON text: [start, group object as text].
  const cursor = cursorOfText(JSON.stringify([Date.parse(at(0)), `{"g":${deep}}`]));
  for (const path of ["", "/current"]) {
    const read = await app.request(`/v1/streams/shop/counters/n${path}?cursor=${cursor}`);
    assert.equal(read.status, 400, path);
    const body = await read.json();
    assert.equal(body.error.code, "invalid_cursor", path);
    assert.match(body.error.message, /not a cursor this API gave out/);
  }
  // A legacy cursor with a plain group still reads.
  const plain = cursorOfText(JSON.stringify([Date.parse(at(0)), '{"g":"0"}']));
  const read = await app.request(`/v1/streams/shop/counters/n?cursor=${plain}`);
  assert.equal(read.status, 200);
  assert.deepEqual((await read.json()).windows.map((row: { group: unknown }) => row.group), [
    { g: "a" },
  ]);
});

Deno.test("a counter read quotes a bad time or group filter within 256 characters, as every error message does", async () => {
  const { app } = await testApp({ config: CONFIG });
  const long = "9".repeat(20_000);
  for (
    const query of [
      `from=${long}`,
      `to=2026-01-01T${long}`,
      `group.${long}=1`,
    ]
  ) {
    for (const path of ["", "/current"]) {
      if (path && !query.startsWith("group")) continue;
      const res = await app.request(`/v1/streams/orders/counters/count_1m${path}?${query}`);
      assert.equal(res.status, 400);
      const body = await res.json();
      assert.equal(body.error.code, "invalid_query");
      assert.ok(
        body.error.message.length < 400,
        `${query.slice(0, 20)}: ${body.error.message.length}`,
      );
      assert.match(body.error.message, /… \(\d+ characters\)/);
    }
  }
});

redisTest(
  "POST /v1/admin/sweep marks a HyperLogLog distinct count approximate, closed and fired alike",
  async (fixture) => {
    let clock = NOW;
    const redis = restClient(fixture);
    const { app } = await testApp({
      config: {
        streams: {
          visits: {
            time: { field: "ts", lateness: "0s" },
            counters: {
              users: { window: { tumbling: "1m" }, aggregate: { distinct: "user" } },
            },
            alerts: [{ name: "any", counter: "users", when: "value >= 1.0" }],
          },
        },
      },
      store: new RedisStore(redis, { now: () => clock }),
      now: () => clock,
    });
    const events = [{ ts: at(5), user: "a" }, { ts: at(6), user: "b" }, { ts: at(65), user: "c" }];
    const res = await postEvents(app, events, { stream: "visits" });
    assert.ok(res.ok, await res.text());
    clock = NOW + 60_000;
    const body = await (await app.request("/v1/admin/sweep", { method: "POST" })).json();
    const closed = body.closed.find((window: { start: string }) => window.start === at(0));
    assert.deepEqual(closed.groups, [{ group: {}, value: 2, approximate: true }]);
    const fired = body.fired.find((firing: { start: string }) => firing.start === at(0));
    assert.equal(fired.value, 2);
    assert.equal(fired.approximate, true);
  },
);

/**
 * The admin sweep's reply lists each window's groups in code point order of their group key, as a
 * read does: a hopping window's groups came in each store's own order (on Redis, a pane's hash past
 * 512 fields is read back in no set order), the same groups in another order. Its 150 groups stay
 * in a listpack, read back in insertion order, so each pane's are written shuffled: without the
 * sort both stores list them unsorted.
 */
async function sweepListsGroupsByKey(store: Store, setClock: (ms: number) => void) {
  const { app } = await testApp({
    config: {
      streams: {
        shop: {
          time: { field: "ts", lateness: "2m" },
          counters: {
            amount: {
              window: { hopping: "2m", every: "1m" },
              groupBy: ["sku"],
              aggregate: { sum: "price" },
            },
          },
        },
      },
    },
    store,
    now: () => NOW,
  });
  const skus = (step: number) =>
    Array.from({ length: 150 }, (_, i) => `s${String((i * step) % 150).padStart(3, "0")}`);
  // The second pane's groups first, then the first pane's, each in a shuffled order.
  for (const [seconds, step] of [[61, 37], [1, 41]]) {
    const events = skus(step).map((sku) => ({ ts: at(seconds), sku, price: 1 }));
    const res = await postEvents(app, events, { stream: "shop" });
    assert.ok(res.ok, await res.text());
  }
  const tick = await postEvents(app, [{ ts: at(400), sku: "z", price: 1 }], { stream: "shop" });
  assert.ok(tick.ok, await tick.text());
  setClock(NOW + 60_000);
  const body = await (await app.request("/v1/admin/sweep", { method: "POST" })).json();
  const listed = body.closed.find((window: { start: string }) => window.start === at(0));
  const sorted = skus(1).sort();
  assert.deepEqual(listed.groups.map((item: { group: { sku: string } }) => item.group.sku), sorted);
  assert.deepEqual(listed.groups.map((item: { value: number }) => item.value), sorted.map(() => 2));
}

Deno.test("Memory store: POST /v1/admin/sweep lists a hopping window's groups by group key", () => {
  let clock = NOW;
  return sweepListsGroupsByKey(new MemoryStore({ now: () => clock }), (ms) => clock = ms);
});

redisTest(
  "Redis store: POST /v1/admin/sweep lists a hopping window's groups by group key",
  (fixture) => {
    let clock = NOW;
    const redis = restClient(fixture);
    return sweepListsGroupsByKey(
      new RedisStore(redis, { now: () => clock }),
      (ms) => clock = ms,
    );
  },
);

/**
 * The admin sweep's reply lists `fired` by stream name, then alert name, then window start, then
 * group key: the firings came in the order the store gave each window's groups (its own: on Redis
 * a pane's hash past 512 fields is read back in no set order), so the same state fired in another
 * order on each store.
 */
async function sweepListsFiredInOneOrder(store: Store, setClock: (ms: number) => void) {
  const { app } = await testApp({
    config: {
      streams: {
        shop: {
          time: { field: "ts", lateness: "2m" },
          counters: {
            amount: {
              window: { hopping: "2m", every: "1m" },
              groupBy: ["sku"],
              aggregate: { sum: "price" },
            },
          },
          alerts: [
            { name: "pair", counter: "amount", when: "value >= 2.0" },
            { name: "any", counter: "amount", when: "value >= 1.0" },
          ],
        },
        // Swept after `shop` (definition order), listed before it.
        basket: {
          time: { field: "ts", lateness: "2m" },
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
          alerts: [{ name: "zzz", counter: "n", when: "value >= 1.0" }],
        },
      },
    },
    store,
    now: () => NOW,
  });
  const skus = (step: number) =>
    Array.from({ length: 600 }, (_, i) => `s${String((i * step) % 600).padStart(3, "0")}`);
  // The second pane's groups first, then the first pane's, each in a shuffled order: more than a
  // Redis hash keeps in insertion order (512 fields by default), so Redis reads them in its own.
  for (const [seconds, step] of [[61, 37], [1, 41]]) {
    const events = skus(step).map((sku) => ({ ts: at(seconds), sku, price: 1 }));
    const res = await postEvents(app, events, { stream: "shop" });
    assert.ok(res.ok, await res.text());
  }
  const tick = await postEvents(app, [{ ts: at(400), sku: "z", price: 1 }], { stream: "shop" });
  assert.ok(tick.ok, await tick.text());
  const basket = await postEvents(app, [{ ts: at(1) }, { ts: at(400) }], { stream: "basket" });
  assert.ok(basket.ok, await basket.text());
  setClock(NOW + 60_000);
  const body = await (await app.request("/v1/admin/sweep", { method: "POST" })).json();
  const sorted = skus(1).sort();
  // Windows [-1m, 1m) and [1m, 3m) hold one event of each sku, [0, 2m) two.
  const expected = [
    `basket zzz ${at(0)} undefined`,
    ...[at(-60), at(0), at(60)].flatMap((start) => sorted.map((sku) => `shop any ${start} ${sku}`)),
    ...sorted.map((sku) => `shop pair ${at(0)} ${sku}`),
  ];
  assert.deepEqual(
    body.fired.map((
      item: { stream: string; alert: string; start: string; group: { sku?: string } },
    ) => `${item.stream} ${item.alert} ${item.start} ${item.group.sku}`),
    expected,
  );
}

Deno.test("Memory store: POST /v1/admin/sweep lists fired alerts by stream, alert name, window start and group key", () => {
  let clock = NOW;
  return sweepListsFiredInOneOrder(new MemoryStore({ now: () => clock }), (ms) => clock = ms);
});

redisTest(
  "Redis store: POST /v1/admin/sweep lists fired alerts by stream, alert name, window start and group key",
  (fixture) => {
    let clock = NOW;
    const redis = restClient(fixture);
    return sweepListsFiredInOneOrder(
      new RedisStore(redis, { now: () => clock }),
      (ms) => clock = ms,
    );
  },
);

/** A stream counting per minute by country, for the group filter tests. */
const SHOP_BY_COUNTRY = {
  streams: {
    shop: {
      time: { field: "ts" },
      counters: {
        n: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
      },
    },
  },
};

/** An app on SHOP_BY_COUNTRY at minute 30, given one event of minute 1 from each country. */
async function shopWith(countries: string[]) {
  const { app } = await testApp({ config: SHOP_BY_COUNTRY, now: () => Date.parse(at(30)) });
  const events = countries.map((country) => ({ ts: at(1), country }));
  assert.equal((await postEvents(app, events, { stream: "shop" })).status, 202);
  return app;
}

Deno.test("a group field given twice, as group.<field> and group[<field>], uses the value given last in the URL", async () => {
  const app = await shopWith(["DE", "FR", "US"]);
  const deep = encodeURIComponent("group[country]");
  for (
    const [query, last] of [
      [`group.country=DE&${deep}=FR&group.country=US`, "US"],
      [`${deep}=DE&group.country=FR&${deep}=US`, "US"],
      [`group.country=DE&${deep}=FR`, "FR"],
      [`${deep}=DE&group.country=FR&group.country=US&${deep}=DE`, "DE"],
    ]
  ) {
    for (const path of ["", "/current"]) {
      const res = await app.request(`/v1/streams/shop/counters/n${path}?${query}`);
      assert.equal(res.status, 200, query);
      const rows = (await res.json()).windows;
      assert.deepEqual(rows.map((row: { group: { country: string } }) => row.group.country), [
        last,
      ], `${path}?${query}`);
    }
  }
});

Deno.test("a group[ filter whose bracket is left open is a 400 naming it, not every group of the window", async () => {
  const app = await shopWith(["DE", "FR"]);
  for (const path of ["", "/current"]) {
    const res = await app.request(
      `/v1/streams/shop/counters/n${path}?${encodeURIComponent("group[country")}=DE`,
    );
    assert.equal(res.status, 400, path);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_query");
    assert.match(error.message, /'group\[country' is no group filter/);
  }
});

Deno.test("a parameter named group itself (the OpenAPI object sent unexploded, or bare) is a 400, not every group of the window", async () => {
  const app = await shopWith(["DE", "FR"]);
  for (const path of ["", "/current"]) {
    for (const query of ["group=group.country,DE", "group=DE", "group"]) {
      const res = await app.request(`/v1/streams/shop/counters/n${path}?${query}`);
      assert.equal(res.status, 400, `${path}?${query}`);
      const { error } = await res.json();
      assert.equal(error.code, "invalid_query");
      assert.match(error.message, /'group' is no group filter: write group\.<field>=<value>/);
    }
  }
});

Deno.test("a query parameter the counter reads do not take (a misspelled filter) is a 400 naming it and those taken, not every group of the window", async () => {
  const app = await shopWith(["DE", "FR"]);
  const taken = {
    "": "from, to, limit, cursor, q, top, by, group.<field>",
    "/current": "q, top, by, limit, cursor, group.<field>",
  };
  for (const [path, names] of Object.entries(taken)) {
    for (
      const [query, name, hint] of [
        ["Group.country=DE", "Group.country", " (names are case-sensitive: 'group.country'?)"],
        ["GROUP.country=DE", "GROUP.country", " (names are case-sensitive: 'group.country'?)"],
        [
          `${encodeURIComponent("Group[country]")}=DE`,
          "Group[country]",
          " (names are case-sensitive: 'group[country]'?)",
        ],
        // A name a few edits from a taken one says which.
        ["grp.country=DE", "grp.country", " (did you mean 'group.country'?)"],
        ["grop.Country=DE", "grop.Country", " (did you mean 'group.Country'?)"],
        ["limt=1", "limt", " (did you mean 'limit'?)"],
        ["curser=x", "curser", " (did you mean 'cursor'?)"],
        ["tp=1", "tp", " (did you mean 'top'?)"],
        // None for a name as many edits as half the name meant (`x`: `q`, `t`: `to`), or more.
        ["x=1", "x", ""],
        ["t=1", "t", ""],
        ["limitless=1", "limitless", ""],
        // No hint to another name that is no filter (the bracket left open).
        [`${encodeURIComponent("Group[country")}=DE`, "Group[country", ""],
        ["country=DE", "country", ""],
        ["group.country=DE&Top=1", "Top", " (names are case-sensitive: 'top'?)"],
        ["LIMIT=1", "LIMIT", " (names are case-sensitive: 'limit'?)"],
        // Read by decoded name, as the repeat check reads names.
        ["%67rp.country=DE", "grp.country", " (did you mean 'group.country'?)"],
        ["token=k", "token", " (send the key as 'Authorization: Bearer <key>')"],
      ]
    ) {
      const res = await app.request(`/v1/streams/shop/counters/n${path}?${query}`);
      assert.equal(res.status, 400, `${path}?${query}`);
      const { error } = await res.json();
      assert.equal(error.code, "invalid_query");
      assert.equal(
        error.message,
        `Query parameter '${name}' is not taken here${hint}; this route takes: ${names}`,
        `${path}?${query}`,
      );
    }
  }
});

Deno.test("README Reading counters: the misspelled-filter messages, the cache-buster _ and the repeated-parameter message it quotes are the API's", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(
    readme.indexOf("### Reading counters"),
    readme.indexOf("#### Top groups"),
  );
  const quoted = (start: string) => {
    const found = new RegExp("`(" + start + "[^`]*)`").exec(section);
    assert.ok(found, start);
    return found[1];
  };
  const app = await shopWith(["DE"]);
  const misspelled = await app.request("/v1/streams/shop/counters/n?Group.country=DE");
  assert.equal(misspelled.status, 400);
  assert.equal((await misspelled.json()).error.message, quoted("Query parameter 'Group.country'"));
  const near = await app.request(`/v1/streams/shop/counters/n?${quoted("grp\\.")}`);
  assert.equal(near.status, 400);
  assert.ok((await near.json()).error.message.includes(quoted("\\(did you mean")));
  const buster = quoted("_=");
  assert.equal((await app.request(`/v1/streams/shop/counters/n?${buster}`)).status, 200);
  const twice = quoted("limit=1&limit=2");
  const repeated = await app.request(`/v1/streams/shop/counters/n?${twice}`);
  assert.equal(repeated.status, 400);
  assert.equal((await repeated.json()).error.message, quoted("Query parameter 'limit'"));
});

Deno.test("the counter reads take jQuery's cache-buster _ and ignore it; from and to on current keep their own 400", async () => {
  const app = await shopWith(["DE", "FR"]);
  for (const path of ["", "/current"]) {
    const res = await app.request(
      `/v1/streams/shop/counters/n${path}?group.country=DE&_=1765097000000`,
    );
    assert.equal(res.status, 200, path);
    const rows = (await res.json()).windows;
    assert.deepEqual(rows.map((row: { group: { country: string } }) => row.group.country), ["DE"]);
  }
  const bounds = await app.request("/v1/streams/shop/counters/n/current?from=0");
  assert.equal(bounds.status, 400);
  assert.match((await bounds.json()).error.message, /^Query parameter 'from' bounds the windows/);
});

Deno.test("group[group.x] filters the field x; a field whose path starts with group. is group.group.x", async () => {
  const config = {
    streams: {
      shop: {
        time: { field: "ts" },
        counters: { n: { window: { tumbling: "1m" }, groupBy: ["group.x"], aggregate: "count" } },
      },
    },
  };
  const { app } = await testApp({ config, now: () => Date.parse(at(30)) });
  const events = ["a", "b"].map((x) => ({ ts: at(1), group: { x } }));
  assert.equal((await postEvents(app, events, { stream: "shop" })).status, 202);
  for (const name of ["group.group.x", "group[group.group.x]"]) {
    const res = await app.request(`/v1/streams/shop/counters/n?${encodeURIComponent(name)}=b`);
    assert.equal(res.status, 200, name);
    const rows = (await res.json()).windows;
    assert.deepEqual(rows.map((row: { group: Record<string, string> }) => row.group["group.x"]), [
      "b",
    ], name);
  }
  const res = await app.request(
    `/v1/streams/shop/counters/n?${encodeURIComponent("group[group.x]")}=b`,
  );
  assert.equal(res.status, 400);
  assert.match(
    (await res.json()).error.message,
    /'group\[group\.x\]' names no field .* \(group\.x\)/,
  );
});

Deno.test("ingest without a valid key is 401 and looks no stream up: keyless requests spend none of the unknown-name look-ups a keyed one needs", async () => {
  let reads = 0;
  class CountingDefinitions extends MemoryDefinitionStore {
    override get(name: string) {
      reads++;
      return super.get(name);
    }
  }
  const definitions = new CountingDefinitions();
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  const keys = await KeyRing.parse(`ingest:${KEYS.ingest}`);
  const app = createApp({ streams, store: new MemoryStore({ now: () => NOW }), keys });
  const post = (name: string, headers: Record<string, string>) =>
    app.request(`/v1/streams/${name}/events`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...headers },
      body: "{}",
    });
  // More than the 20 unknown names a second the instance looks up, with no key, a made-up one,
  // and from a page.
  for (let i = 0; i < 30; i++) {
    const attempts: Record<string, string>[] = [
      {},
      { Authorization: "Bearer not-a-key-0123456789" },
      { Origin: "https://page.example" },
    ];
    for (const headers of attempts) {
      const res = await post(`unknown-${i}`, headers);
      assert.equal(res.status, 401, `unknown-${i} ${JSON.stringify(headers)}`);
      assert.equal((await res.json()).error.code, "unauthorized");
    }
  }
  assert.equal(reads, 0, "no definition read for a request without a valid key");
  // A keyed request for a name the instance does not know is still looked up: 404, not 503.
  const keyed = await post("created-elsewhere", { Authorization: `Bearer ${KEYS.ingest}` });
  assert.equal(keyed.status, 404);
  assert.equal((await keyed.json()).error.code, "stream_not_found");
  assert.equal(reads, 1);
});

redisTest(
  "POST /v1/admin/sweep says webhooks.error when one stream's dispatch fails on a broken key, not only queued 0",
  async (fixture) => {
    const redis = restClient(fixture);
    const clock = { now: NOW };
    const { app, close } = await setup({
      clock,
      store: new RedisStore(redis, { now: () => clock.now }),
      deliveries: new RedisDeliveryStore(redis, { now: () => clock.now }),
      config: {
        streams: {
          visits: {
            time: { field: "ts", lateness: "0s" },
            counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
          },
        },
      },
    });
    try {
      await register(app, { url: "http://127.0.0.1:9/hook", eventTypes: ["window.closed"] });
      const res = await postEvents(app, [{ ts: at(5) }, { ts: at(65) }], { stream: "visits" });
      assert.ok(res.ok, await res.text());
      // Something else wrote over the queue of due deliveries: the stream's page cannot be stored.
      await redis.set("es:{wh}:qe", "oops");
      clock.now = NOW + 120_000;
      const swept = await app.request("/v1/admin/sweep", { method: "POST" });
      const body = await swept.json();
      assert.equal(swept.status, 200, JSON.stringify(body));
      assert.deepEqual(body.closed.map((window: { start: string }) => window.start), [at(0)]);
      assert.equal(body.webhooks.queued, 0);
      assert.equal(body.webhooks.error?.code, "internal_error", JSON.stringify(body.webhooks));
      // The key repaired, the next sweep makes the delivery the failed one did not, without error.
      await redis.del("es:{wh}:qe");
      const again = await (await app.request("/v1/admin/sweep", { method: "POST" })).json();
      assert.deepEqual(again.closed, []);
      assert.equal(again.webhooks.queued, 1);
      assert.equal(again.webhooks.error, undefined);
    } finally {
      await close();
    }
  },
);

redisTest(
  "README admin sweep: a stream's own dispatch that fails is logged naming it, and the streams after it are dispatched all the same, queued counting theirs, with webhooks.error",
  async (fixture) => {
    const redis = restClient(fixture);
    const clock = { now: NOW };
    const count = { window: { tumbling: "1m" }, aggregate: "count" };
    const { app, close } = await setup({
      clock,
      store: new RedisStore(redis, { now: () => clock.now }),
      deliveries: new RedisDeliveryStore(redis, { now: () => clock.now }),
      config: {
        streams: {
          visits: { time: { field: "ts", lateness: "0s" }, counters: { n: count } },
          clicks: { time: { field: "ts", lateness: "0s" }, counters: { n: count } },
        },
      },
    });
    try {
      await register(app, { url: "http://127.0.0.1:9/hook", eventTypes: ["window.closed"] });
      for (const stream of ["visits", "clicks"]) {
        const res = await postEvents(app, [{ ts: at(5) }, { ts: at(65) }], { stream });
        assert.ok(res.ok, await res.text());
      }
      // Something else wrote over visits' own dispatch cursor: only its dispatch fails, and
      // visits comes first, so clicks is dispatched after a failure.
      await redis.set("es:{wh}:cur:visits", "oops");
      clock.now = NOW + 120_000;
      const { body, lines } = await collectingLogs(async (records) => {
        const swept = await app.request("/v1/admin/sweep", { method: "POST" });
        const body = await swept.json();
        assert.equal(swept.status, 200, JSON.stringify(body));
        return {
          body,
          lines: records.map((record) => [record.level, messageOf(record)] as const),
        };
      });
      assert.deepEqual(
        body.closed.map((window: { stream: string }) => window.stream).sort(),
        ["clicks", "visits"],
      );
      // clicks' one window.closed delivery was made; visits' was not.
      assert.equal(body.webhooks.queued, 1, JSON.stringify(body.webhooks));
      assert.equal(body.webhooks.error?.code, "internal_error", JSON.stringify(body.webhooks));
      const failed = lines.filter(([, message]) =>
        message.startsWith("Webhook dispatch of stream")
      );
      assert.equal(failed.length, 1, JSON.stringify(lines));
      assert.equal(failed[0][0], "error");
      assert.match(failed[0][1], /^Webhook dispatch of stream visits failed: /);
      // The key repaired, the next sweep makes visits' delivery, without error.
      await redis.del("es:{wh}:cur:visits");
      const again = await (await app.request("/v1/admin/sweep", { method: "POST" })).json();
      assert.equal(again.webhooks.queued, 1, JSON.stringify(again.webhooks));
      assert.equal(again.webhooks.error, undefined);
    } finally {
      await close();
    }
  },
);

redisTest(
  "POST /v1/admin/sweep lists the windows it closed when the webhook dispatch then fails on a broken key",
  async (fixture) => {
    const redis = restClient(fixture);
    const clock = { now: NOW };
    const { app, close } = await setup({
      clock,
      store: new RedisStore(redis, { now: () => clock.now }),
      deliveries: new RedisDeliveryStore(redis, { now: () => clock.now }),
      config: {
        streams: {
          visits: {
            time: { field: "ts", lateness: "0s" },
            counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
          },
        },
      },
    });
    try {
      const res = await postEvents(app, [{ ts: at(5) }, { ts: at(65) }], { stream: "visits" });
      assert.ok(res.ok, await res.text());
      // Something else wrote over the list of webhook endpoints: the dispatch cannot read it.
      await redis.set("es:{wh}:endpoints", "oops");
      clock.now = NOW + 120_000;
      const swept = await app.request("/v1/admin/sweep", { method: "POST" });
      const body = await swept.json();
      assert.equal(swept.status, 200, JSON.stringify(body));
      assert.deepEqual(body.closed.map((window: { start: string }) => window.start), [at(0)]);
      assert.equal(body.webhooks.queued, 0);
      assert.equal(body.webhooks.error.code, "internal_error");
      // Closed once: a sweep again, the key repaired, has nothing more of them.
      await redis.del("es:{wh}:endpoints");
      const again = await (await app.request("/v1/admin/sweep", { method: "POST" })).json();
      assert.deepEqual(again.closed, []);
      assert.equal(again.webhooks.error, undefined);
    } finally {
      await close();
    }
  },
);

/** A memory store whose stats carry fields of the store's own besides the documented ones. */
class InternalFieldsStore extends MemoryStore {
  override async stats(...args: Parameters<MemoryStore["stats"]>) {
    const stats = await super.stats(...args);
    return {
      ...stats,
      closedThrough: 1,
      definitionVersion: 2,
      // One a later release adds for its own use.
      someInternalField: "not for clients",
    };
  }
}

Deno.test("a stream's stats answer exactly the documented fields (the OpenAPI StreamStats), not fields the store adds for its own use", async () => {
  const { app } = await testApp({
    config: CONFIG,
    store: new InternalFieldsStore({ now: () => NOW }),
  });
  const res = await postEvents(app, [{ ts: at(10), country: "DE" }]);
  assert.ok(res.ok, await res.text());
  const doc = await (await app.request("/openapi.json")).json();
  const documented = Object.keys(doc.components.schemas.StreamStats.properties).sort();
  assert.ok(
    documented.includes("accepted") && documented.includes("watermark"),
    String(documented),
  );
  const one = await (await app.request("/v1/streams/orders")).json();
  assert.deepEqual(Object.keys(one.stats).sort(), documented);
  assert.equal(one.stats.accepted, 1);
  const list = await (await app.request("/v1/streams")).json();
  for (const stream of list.streams) assert.deepEqual(Object.keys(stream.stats).sort(), documented);
});

Deno.test("A 404 for a misspelled stream names the one meant only to a key GET /v1/streams shows it to", async () => {
  const { app } = await testApp({ auth: true });
  const message = async (path: string, key: string | undefined, init: RequestInit = {}) => {
    const headers = new Headers(init.headers);
    if (key !== undefined) headers.set("Authorization", `Bearer ${key}`);
    const res = await app.request(path, { ...init, headers });
    assert.equal(res.status, 404, `${path} ${key}`);
    const { error } = await res.json();
    assert.equal(error.code, "stream_not_found");
    return error.message;
  };
  const post = { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" };
  const hinted = "Stream 'order' does not exist (did you mean 'orders'?)";
  const bare = "Stream 'order' does not exist";
  // As README quotes it.
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  assert.ok(readme.includes(`(\`${hinted}\`)`));
  // Keys with the read scope (admin includes it), which list the streams anyway: on every route.
  for (const key of [KEYS.admin, KEYS.read]) {
    assert.equal(await message("/v1/streams/order", key), hinted);
    assert.equal(await message("/v1/streams/order/counters/by_country", key), hinted);
    const stream = { headers: { Accept: "text/event-stream" } };
    assert.equal(await message("/v1/streams/order/subscribe", key, stream), hinted);
  }
  assert.equal(await message("/v1/streams/order/events", KEYS.admin, post), hinted);
  // A DELETE of a stream that does not exist says only that, to any key.
  assert.equal(await message("/v1/streams/order", KEYS.admin, { method: "DELETE" }), bare);
  // In another case: the name as served.
  assert.equal(
    await message("/v1/streams/ORDERS", KEYS.admin),
    "Stream 'ORDERS' does not exist (did you mean 'orders'?)",
  );
  // Nothing near: no hint.
  assert.equal(
    await message("/v1/streams/payments", KEYS.admin),
    "Stream 'payments' does not exist",
  );
  // An ingest-only key is not told what streams exist, nor is the WebSocket's.
  assert.equal(await message("/v1/streams/order/events", KEYS.ingest, post), bare);
  const upgrade = { headers: { Upgrade: "websocket", Connection: "Upgrade" } };
  assert.equal(await message("/v1/streams/order/ws", KEYS.ingest, upgrade), bare);
  assert.equal(await message("/v1/streams/order/ws", KEYS.admin, upgrade), hinted);
  // A key limited to streams is shown only those: 'orders' is not among them.
  const limited = await createKey(app, { scopes: ["read", "ingest"], streams: ["order"] });
  assert.equal(await message("/v1/streams/order", limited.key), bare);
  assert.equal(await message("/v1/streams/order/events", limited.key, post), bare);
  // A publishable key (ingest only) is not, whatever streams it names.
  const publishable = await createKey(app, {
    type: "publishable",
    streams: ["order", "orders"],
    origins: ["https://shop.example"],
  });
  assert.equal(
    await message(`/v1/streams/order/events?key=${publishable.key}`, undefined, {
      ...post,
      headers: { ...post.headers, Origin: "https://shop.example" },
    }),
    bare,
  );
});

Deno.test("A 404 for a misspelled stream names the one meant in open mode", async () => {
  const { app } = await testApp();
  const res = await app.request("/v1/streams/order");
  assert.equal(res.status, 404);
  assert.equal(
    (await res.json()).error.message,
    "Stream 'order' does not exist (did you mean 'orders'?)",
  );
});

Deno.test("POST …/events with the WebSocket envelope's shape is one event over HTTP, and its 400 says to send an array or NDJSON", async () => {
  const { app } = await testApp();
  const send = (stream: string, body: string, type = "application/json") =>
    app.request(`/v1/streams/${stream}/events`, {
      method: "POST",
      headers: { "Content-Type": type },
      body,
    });
  const events = [{ id: "a", ts: at(1_000) }, { id: "b", ts: at(2_000) }];
  const hint =
    "No event was accepted; see 'rejected' (the body is one object with 'events', which HTTP takes as one event: {\"events\": [...]} is the WebSocket envelope; send the events as a JSON array, or as NDJSON, one a line)";
  // README quotes its start.
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const quoted = readme.match(/\(`… (\(the body is one object [^`]*): …\)`\)/);
  assert.ok(quoted && hint.includes(quoted[1]), "README quotes the hint");
  // `orders` requires an `id`, which the envelope lacks: refused, saying why.
  for (
    const [body, type] of [
      [JSON.stringify({ events }), "application/json"],
      [JSON.stringify({ seq: 1, idempotencyKey: "k", events }), "application/json"],
      [`${JSON.stringify({ events })}\n`, "application/x-ndjson"],
    ]
  ) {
    const res = await send("orders", body, type);
    assert.equal(res.status, 400, body);
    const reply = await res.json();
    assert.equal(reply.error.code, "no_events_accepted");
    assert.equal(reply.error.message, hint);
    assert.deepEqual(reply.rejected[0].errors, [{
      path: "id",
      message: "Required field is missing (expected string)",
    }]);
  }
  // Other refused bodies: no hint (an array, an object with another key too).
  for (const body of [JSON.stringify([{ events }]), JSON.stringify({ events, name: "x" })]) {
    const res = await send("orders", body);
    assert.equal(res.status, 400, body);
    assert.equal((await res.json()).error.message, "No event was accepted; see 'rejected'", body);
  }
  // Unchanged: a stream whose schema takes it counts it, as one event.
  const taken = await send("open", JSON.stringify({ events }));
  assert.equal(taken.status, 202);
  assert.deepEqual(await taken.json(), {
    accepted: 1,
    duplicates: 0,
    late: 0,
    filtered: 0,
    rejected: [],
  });
});
