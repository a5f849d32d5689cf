/**
 * The stream registry across instances on one real Redis: a stream created
 * through one app ingests on another at once (lookup on a miss) and is found
 * by the poll; a new version reaches an instance through the apply result;
 * a deleted stream goes away; unknown names cost a bounded number of store
 * lookups; config streams are checked against the counters the store holds.
 */
import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import { createApp } from "../../src/app.ts";
import {
  compileConfig,
  ConfigError,
  type StreamDefinitionError,
  StreamRegistry,
} from "../../src/config/mod.ts";
import { INDEX_READ_MS } from "../../src/config/registry.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { sweepOnce } from "../../src/fanout/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { listWindows } from "../../src/query/mod.ts";
import {
  type DefinitionStore,
  generationKey,
  MemoryDefinitionStore,
  MemoryStore,
  RedisDefinitionStore,
  RedisStore,
  type Store,
  type StoredDefinition,
  StoreRequestTooLargeError,
  StoreUnavailableError,
  StreamChangedError,
} from "../../src/store/mod.ts";
import { DownDefinitions } from "../_fixtures.ts";
import { RacingDefinitions } from "./_racing_definitions.ts";
import { collectingLogs, messageOf } from "../_logs.ts";
import { type RedisFixture, redisTest, restClient, withDirect } from "../_redis.ts";

const SIGNUPS = {
  counters: { perMinute: { window: { tumbling: "1m" }, groupBy: ["plan"], aggregate: "count" } },
};

/** One instance: its own client, store, definitions and registry, sharing the fixture's Redis. */
async function instance(
  fixture: RedisFixture,
  options: {
    config?: object;
    pollMs?: number;
    definitions?: (redis: ReturnType<typeof restClient>) => DefinitionStore;
  } = {},
) {
  const redis = restClient(fixture);
  const streams = new StreamRegistry(compileConfig(options.config ?? { streams: {} }), {
    definitions: options.definitions?.(redis) ?? new RedisDefinitionStore(redis),
    pollMs: options.pollMs,
  });
  // The definitions beside the store, as storesFromEnv makes them.
  const store = new RedisStore(redis, { definitionsHere: true });
  const app = createApp({ streams, store, keys: await KeyRing.parse("") });
  return { app, streams };
}

type Instance = Awaited<ReturnType<typeof instance>>;

function put(at: Instance, name: string, body: unknown) {
  return at.app.request(`/v1/streams/${name}`, {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

function ingest(at: Instance, name: string, events: unknown[]) {
  return at.app.request(`/v1/streams/${name}/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(events),
  });
}

async function getStream(at: Instance, name: string) {
  const response = await at.app.request(`/v1/streams/${name}`);
  return { status: response.status, body: await response.json() };
}

redisTest(
  "A stream created through one instance ingests on a second at once, and both count it",
  async (fixture) => {
    const [a, b] = [await instance(fixture), await instance(fixture)];
    assert.equal((await put(a, "signups", SIGNUPS)).status, 201);
    // B never polled: the unknown name is looked up once.
    assert.equal((await ingest(b, "signups", [{ plan: "pro" }, { plan: "free" }])).status, 202);
    assert.equal((await ingest(a, "signups", [{ plan: "pro" }])).status, 202);
    assert.equal((await getStream(a, "signups")).body.stats.applied, 3);
    const onB = await getStream(b, "signups");
    assert.equal(onB.body.stats.applied, 3);
    assert.equal(onB.body.source, "api");
    assert.equal(onB.body.version, 1);
  },
);

redisTest(
  "The poll finds a stream created on another instance and a deletion, within its interval",
  async (fixture) => {
    const a = await instance(fixture);
    const b = await instance(fixture, { pollMs: 100 });
    b.streams.startPolling();
    try {
      await put(a, "signups", SIGNUPS);
      await waitFor(() => b.streams.has("signups"), "B serves signups");
      const listed = await (await b.app.request("/v1/streams")).json();
      assert.deepEqual(listed.streams.map((item: { name: string }) => item.name), ["signups"]);
      await a.app.request("/v1/streams/signups", { method: "DELETE" });
      await waitFor(() => !b.streams.has("signups"), "B drops signups");
    } finally {
      b.streams.stop();
    }
  },
);

redisTest(
  "A new version reaches another instance through the apply result, without a poll",
  async (fixture) => {
    const [a, b] = [await instance(fixture), await instance(fixture)];
    await put(a, "signups", SIGNUPS);
    await ingest(b, "signups", [{ plan: "pro" }]);
    const next = {
      ...SIGNUPS,
      counters: { ...SIGNUPS.counters, total: { window: { tumbling: "1h" }, aggregate: "count" } },
    };
    assert.equal((await put(a, "signups", next)).status, 200);
    // B still serves version 1: nothing told it yet.
    assert.equal((await getStream(b, "signups")).body.version, 1);
    // Its next ingest is applied with what it holds, and the reply of that apply says version 2.
    assert.equal((await ingest(b, "signups", [{ plan: "pro" }])).status, 202);
    await b.streams.settled();
    const onB = await getStream(b, "signups");
    assert.equal(onB.body.version, 2);
    assert.deepEqual(onB.body.counters, ["perMinute", "total"]);
  },
);

redisTest(
  "A stream deleted and created again on another instance starts empty there too",
  async (fixture) => {
    const [a, b] = [await instance(fixture), await instance(fixture)];
    await put(a, "signups", SIGNUPS);
    await ingest(b, "signups", [{ plan: "pro" }, { plan: "pro" }]);
    await a.app.request("/v1/streams/signups", { method: "DELETE" });
    const recreated = {
      counters: { perMinute: { window: { tumbling: "5m" }, aggregate: "count" } },
    };
    assert.equal((await put(a, "signups", recreated)).status, 201);
    await b.streams.poll();
    const onB = await getStream(b, "signups");
    assert.equal(onB.body.version, 3);
    assert.equal(onB.body.stats.applied, 0);
    const now = Date.now();
    const windows = await (await b.app.request(
      `/v1/streams/signups/counters/perMinute?from=${now - 600_000}&to=${now + 600_000}`,
    )).json();
    assert.deepEqual(windows.windows, []);
  },
);

redisTest(
  "An instance that still serves a stream deleted and created again elsewhere applies nothing to the old one: its ingest counts in the new",
  async (fixture) => {
    const [a, b] = [await instance(fixture), await instance(fixture)];
    await put(a, "signups", SIGNUPS);
    assert.equal((await ingest(b, "signups", [{ plan: "pro" }])).status, 202);
    await a.app.request("/v1/streams/signups", { method: "DELETE" });
    assert.equal((await put(a, "signups", SIGNUPS)).status, 201);
    // B never polled: it still serves the first incarnation when these arrive.
    for (let i = 0; i < 3; i++) {
      const reply = await ingest(b, "signups", [{ plan: "free" }]);
      assert.equal(reply.status, 202);
      assert.equal((await reply.json()).accepted, 1);
    }
    for (const at of [a, b]) {
      const stats = (await getStream(at, "signups")).body.stats;
      assert.deepEqual([stats.accepted, stats.applied], [3, 3], "every acknowledged event counts");
    }
    const now = Date.now();
    const windows = await (await a.app.request(
      `/v1/streams/signups/counters/perMinute?from=${now - 600_000}&to=${now + 600_000}`,
    )).json();
    assert.deepEqual(windows.windows.map((row: { value: number }) => row.value), [3]);
  },
);

redisTest(
  "An instance that still serves a stream deleted elsewhere acknowledges nothing for it: 404",
  async (fixture) => {
    const [a, b] = [await instance(fixture), await instance(fixture)];
    await put(a, "signups", SIGNUPS);
    assert.equal((await ingest(b, "signups", [{ plan: "pro" }])).status, 202);
    await a.app.request("/v1/streams/signups", { method: "DELETE" });
    const reply = await ingest(b, "signups", [{ plan: "free" }]);
    assert.equal(reply.status, 404);
    assert.equal((await reply.json()).error.code, "stream_not_found");
    assert.equal(b.streams.has("signups"), false);
  },
);

redisTest(
  "A WebSocket frame on an instance that still serves a stream deleted and created again elsewhere counts in the new one",
  async (fixture) => {
    const [a, b] = [await instance(fixture), await instance(fixture)];
    await put(a, "signups", SIGNUPS);
    const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, b.app.fetch);
    const socket = new WebSocket(`ws://127.0.0.1:${server.addr.port}/v1/streams/signups/ws`);
    const replies: { type: string; seq: number; accepted?: number }[] = [];
    socket.onmessage = (event) => replies.push(JSON.parse(event.data));
    try {
      await new Promise((resolve, reject) => {
        socket.onopen = resolve;
        socket.onerror = reject;
      });
      const send = async (seq: number) => {
        socket.send(JSON.stringify({ seq, events: [{ plan: "free" }] }));
        await waitFor(() => replies.some((reply) => reply.seq === seq), `reply ${seq}`);
        return replies.find((reply) => reply.seq === seq)!;
      };
      assert.equal((await send(1)).accepted, 1);
      await a.app.request("/v1/streams/signups", { method: "DELETE" });
      assert.equal((await put(a, "signups", SIGNUPS)).status, 201);
      assert.deepEqual(await send(2), {
        type: "ack",
        seq: 2,
        accepted: 1,
        duplicates: 0,
        late: 0,
        filtered: 0,
        rejected: [],
      });
      assert.equal((await getStream(a, "signups")).body.stats.applied, 1);
    } finally {
      socket.close();
      await server.shutdown();
    }
  },
);

/** A definition store that counts its reads. */
class CountingDefinitions implements DefinitionStore {
  gets = 0;
  #inner: DefinitionStore;
  constructor(inner: DefinitionStore) {
    this.#inner = inner;
  }
  get holdsData() {
    return this.#inner.holdsData;
  }
  get(name: string): Promise<StoredDefinition | null> {
    this.gets += 1;
    return this.#inner.get(name);
  }
  versions() {
    return this.#inner.versions();
  }
  /** Polls that read the whole index. */
  indexReads = 0;
  async versionsSince(mark?: string) {
    const read = await this.#inner.versionsSince(mark);
    if (read.versions !== null) this.indexReads += 1;
    return read;
  }
  write(...args: Parameters<DefinitionStore["write"]>) {
    return this.#inner.write(...args);
  }
}

redisTest(
  "Requests for an unknown stream cost one store lookup per name until the negative cache expires",
  async (fixture) => {
    const redis = restClient(fixture);
    const definitions = new CountingDefinitions(new RedisDefinitionStore(redis));
    let now = 1_000_000;
    const streams = new StreamRegistry(compileConfig({ streams: {} }), {
      definitions,
      // The README's 5 s: the default.
      now: () => now,
    });
    const app = createApp({ streams, store: new RedisStore(redis), keys: await KeyRing.parse("") });
    const replies = await Promise.all(
      Array.from({ length: 50 }, () =>
        app.request("/v1/streams/nope/events", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: "{}",
        })),
    );
    assert.ok(replies.every((reply) => reply.status === 404));
    for (let i = 0; i < 50; i++) assert.equal((await app.request("/v1/streams/nope")).status, 404);
    assert.equal(definitions.gets, 1);
    now += 4_999;
    assert.equal((await app.request("/v1/streams/nope")).status, 404);
    assert.equal(definitions.gets, 1);
    now += 2;
    assert.equal((await app.request("/v1/streams/nope")).status, 404);
    assert.equal(definitions.gets, 2);
  },
);

redisTest(
  "A poll reads the definition index only when its mark moved, and a write that set no mark within 30 s",
  async (fixture) => {
    const redis = restClient(fixture);
    const writer = new StreamRegistry(compileConfig({ streams: {} }), {
      definitions: new RedisDefinitionStore(redis),
    });
    const definitions = new CountingDefinitions(new RedisDefinitionStore(redis));
    let now = 1_000_000;
    const reader = new StreamRegistry(compileConfig({ streams: {} }), {
      definitions,
      now: () => now,
    });
    await reader.poll();
    await reader.poll();
    assert.equal(definitions.indexReads, 1);
    await writer.put("signups", SIGNUPS);
    await reader.poll();
    assert.equal(definitions.indexReads, 2);
    assert.ok(reader.has("signups"));
    now += 30_000 - 1;
    await reader.poll();
    assert.equal(definitions.indexReads, 2);
    // A write by a release that sets no mark (an older instance during a rolling deploy): the
    // mark is put back as it was before the write.
    const markKey = "es:{@definitions}:index:mark";
    const mark = await withDirect(fixture.redisUrl, (send) => send("GET", markKey));
    await writer.put("orders", SIGNUPS);
    await withDirect(fixture.redisUrl, (send) => send("SET", markKey, String(mark)));
    await reader.poll();
    assert.equal(reader.has("orders"), false);
    // An event for it meanwhile looks it up; the next polls, with the kept list, keep serving it.
    assert.ok(await reader.find("orders"));
    await reader.poll();
    assert.ok(reader.has("orders"), "not dropped by a poll that read no list");
    now += 1;
    await reader.poll();
    assert.equal(definitions.indexReads, 3);
    assert.ok(reader.has("orders"));
    // A deletion moves the mark.
    await writer.remove("signups");
    await reader.poll();
    assert.equal(reader.has("signups"), false);
  },
);

redisTest(
  "During a rolling deploy a change an older release wrote (no mark moved) is served within 30 s, or at the stream's next ingest; its identical PUT raises the version",
  async (fixture) => {
    const redis = restClient(fixture);
    const definitions = new RedisDefinitionStore(redis);
    const writer = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
    let now = 1_000_000;
    const reader = new StreamRegistry(compileConfig({ streams: {} }), {
      definitions: new RedisDefinitionStore(redis),
      now: () => now,
    });
    const app = createApp({
      streams: reader,
      store: new RedisStore(redis),
      keys: await KeyRing.parse(""),
    });
    await writer.put("signups", SIGNUPS);
    await reader.poll();
    assert.equal(reader.describe("signups")?.version, 1);
    // What a release before the change mark does: it writes the record and the index, not the mark.
    const markKey = "es:{@definitions}:index:mark";
    const olderRelease = async (write: () => Promise<unknown>) => {
      const mark = await withDirect(fixture.redisUrl, (send) => send("GET", markKey));
      await write();
      await withDirect(fixture.redisUrl, (send) => send("SET", markKey, String(mark)));
    };
    const withTotal = {
      counters: { ...SIGNUPS.counters, total: { window: { tumbling: "1h" }, aggregate: "count" } },
    };
    await olderRelease(() => writer.put("signups", withTotal));
    now += 2_000;
    await reader.poll();
    assert.equal(reader.describe("signups")?.version, 1, "not found by a poll that read the mark");
    now += 30_000 - 2_000;
    await reader.poll();
    assert.equal(reader.describe("signups")?.version, 2, "found by the whole read, 30 s on");
    assert.ok(reader.get("signups")!.counters.some((counter) => counter.name === "total"));
    // A release before the identical-PUT fix wrote the same definition again at the next version.
    const stored = (await definitions.get("signups"))!;
    await olderRelease(() =>
      definitions.write("signups", {
        source: stored.source,
        generation: stored.generation,
        definition: stored.definition,
        counters: stored.counters,
        deleted: false,
      }, stored.version)
    );
    assert.equal((await definitions.get("signups"))!.version, 3);
    now += 2_000;
    await reader.poll();
    assert.equal(reader.describe("signups")?.version, 2);
    // An ingest on this instance reads the record's version in its apply and reloads it.
    const response = await app.request("/v1/streams/signups/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify([{ plan: "pro" }]),
    });
    assert.equal(response.status, 202);
    await reader.settled();
    assert.equal(reader.describe("signups")?.version, 3);
    // So an admin's If-Match of version 2 no longer holds anywhere.
    const stale = await app.request("/v1/streams/signups", {
      method: "PUT",
      headers: { "Content-Type": "application/json", "If-Match": '"2"' },
      body: JSON.stringify(withTotal),
    });
    assert.equal(stale.status, 412);
  },
);

redisTest(
  "During a rolling deploy each instance counts a config stream as its own file says: a counter the new file adds misses the events old instances take",
  async (fixture) => {
    const counters = { n: { window: { tumbling: "1h" }, aggregate: "count" } };
    const old = await instance(fixture, { config: { streams: { orders: { counters } } } });
    const added = {
      streams: {
        orders: {
          counters: { ...counters, total: { window: { tumbling: "1h" }, aggregate: "count" } },
        },
      },
    };
    const current = await instance(fixture, { config: added });
    await old.streams.registerConfig();
    await current.streams.registerConfig();
    await old.streams.poll();
    await current.streams.poll();
    assert.deepEqual(old.streams.get("orders")!.counters.map((counter) => counter.name), ["n"]);
    assert.equal((await ingest(old, "orders", [{}, {}])).status, 202);
    assert.equal((await ingest(current, "orders", [{}])).status, 202);
    const read = async (counter: string) => {
      const response = await current.app.request(`/v1/streams/orders/counters/${counter}/current`);
      const { windows } = await response.json();
      return windows.reduce((sum: number, row: { value: number }) => sum + row.value, 0);
    };
    assert.equal(await read("n"), 3);
    assert.equal(await read("total"), 1);
  },
);

Deno.test("Lookups of many different unknown names are bounded per second", async () => {
  const definitions = new CountingDefinitions(new MemoryDefinitionStore());
  let now = 1_000_000;
  // The README's 20 a second: the default.
  const streams = new StreamRegistry(compileConfig({ streams: {} }), {
    definitions,
    now: () => now,
  });
  const busy = async (name: string) => {
    try {
      return await streams.find(name);
    } catch (error) {
      assert.equal((error as StreamDefinitionError).code, "stream_lookup_busy");
      return "busy";
    }
  };
  const answers = [];
  for (let i = 0; i < 500; i++) answers.push(await busy(`name${i}`));
  assert.equal(definitions.gets, 20);
  // Past the bound a name is not answered unknown: it may exist (created on another instance).
  assert.deepEqual(
    [answers.slice(0, 20).every((answer) => answer === undefined), answers.slice(20)],
    [true, Array(480).fill("busy")],
  );
  now += 1_000;
  for (let i = 500; i < 1_000; i++) await busy(`name${i}`);
  assert.equal(definitions.gets, 40);
});

Deno.test("A stream created on another instance is not answered 404 while unknown names use up the lookups", async () => {
  const definitions = new MemoryDefinitionStore();
  const writer = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  const now = 1_000_000;
  const reader = new StreamRegistry(compileConfig({ streams: {} }), {
    definitions,
    now: () => now,
    lookupsPerSecond: 20,
  });
  const app = createApp({
    streams: reader,
    store: new MemoryStore(),
    keys: await KeyRing.parse(""),
  });
  const post = (name: string) =>
    app.request(`/v1/streams/${name}/events`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
  await writer.put("signups", SIGNUPS);
  for (let i = 0; i < 60; i++) await post(`spray${i}`);
  const res = await post("signups");
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("Retry-After"), "1");
  assert.equal((await res.json()).error.code, "stream_lookup_busy");
});

Deno.test("A name remembered as unknown is looked up again after the wall clock steps back, not only once it passes the time again", async () => {
  const definitions = new MemoryDefinitionStore();
  const writer = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  let now = 10_000_000;
  const reader = new StreamRegistry(compileConfig({ streams: {} }), {
    definitions,
    now: () => now,
    missTtlMs: 5_000,
  });
  assert.equal(await reader.find("signups"), undefined);
  await writer.put("signups", SIGNUPS);
  now += 4_999;
  assert.equal(await reader.find("signups"), undefined);
  now -= 3_600_000;
  assert.ok(await reader.find("signups"));
});

Deno.test("A poll reads the whole definition index after the wall clock steps back, not only once it passes the last read again", async () => {
  const definitions = new CountingDefinitions(new MemoryDefinitionStore());
  let now = 10_000_000;
  const reader = new StreamRegistry(compileConfig({ streams: {} }), {
    definitions,
    now: () => now,
  });
  await reader.poll();
  now += INDEX_READ_MS - 1;
  await reader.poll();
  assert.equal(definitions.indexReads, 1);
  // Before, the time since the last read was negative for the hour: the whole read (the only one
  // that finds a change an older release wrote, moving no mark) was put off by the step.
  now -= 3_600_000;
  await reader.poll();
  assert.equal(definitions.indexReads, 2);
  // Then every INDEX_READ_MS from that read.
  now += INDEX_READ_MS - 1;
  await reader.poll();
  assert.equal(definitions.indexReads, 2);
  now += 1;
  await reader.poll();
  assert.equal(definitions.indexReads, 3);
});

Deno.test("A stream created meanwhile is served after the poll although its name was remembered as unknown", async () => {
  const definitions = new MemoryDefinitionStore();
  const writer = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  const reader = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  assert.equal(await reader.find("signups"), undefined);
  await writer.put("signups", SIGNUPS);
  // Remembered as unknown until the negative cache expires, or the poll finds it sooner.
  assert.equal(await reader.find("signups"), undefined);
  await reader.poll();
  assert.ok(await reader.find("signups"));
});

Deno.test("StreamRegistry polls every 2 s by default, so a new stream is served within the 5 s the README promises", async () => {
  const clock = FakeTimers.install({ toFake: ["setInterval", "clearInterval"] });
  try {
    const definitions = new MemoryDefinitionStore();
    const writer = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
    const reader = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
    reader.startPolling();
    await writer.put("signups", SIGNUPS);
    await clock.tickAsync(1_999);
    await reader.settled();
    assert.equal(reader.has("signups"), false);
    await clock.tickAsync(1);
    await reader.settled();
    assert.equal(reader.has("signups"), true);
    reader.stop();
  } finally {
    clock.uninstall();
  }
});

Deno.test("A registry reads the watermark that marks an added counter's windows partial in its data option's store; wrapping a store no longer makes it that", async () => {
  const nowMs = Date.parse("2026-01-01T00:00:00Z");
  const grown = {
    counters: { ...SIGNUPS.counters, added: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  const addedBound = async (registry: StreamRegistry, store: MemoryStore) => {
    const wrapped = registry.wrap(store);
    await registry.put("signups", SIGNUPS);
    await ingestItems(registry.get("signups")!, [{ ok: true as const, value: { plan: "pro" } }], {
      store: wrapped,
      nowMs,
    });
    await registry.put("signups", grown);
    return registry.get("signups")!.counters.find((counter) => counter.name === "added")!
      .partialBefore;
  };
  const store = new MemoryStore({ now: () => nowMs });
  const named = new StreamRegistry(compileConfig({ streams: {} }), { data: store });
  assert.equal(await addedBound(named, store), nowMs + 1);
  // Only wrapped: no store to read the watermark in, so no bound (it was learnt from wrap()).
  const bare = new StreamRegistry(compileConfig({ streams: {} }));
  assert.equal(await addedBound(bare, new MemoryStore({ now: () => nowMs })), null);
});

Deno.test("An ingest built from a deleted stream's definition applies nothing: neither in its old incarnation, which counts nowhere, nor in the re-created one", async () => {
  const nowMs = Date.parse("2026-01-01T00:00:00Z");
  const store = new MemoryStore({ now: () => nowMs });
  const streams = new StreamRegistry(compileConfig({ streams: {} }));
  const wrapped = streams.wrap(store);
  await streams.put("signups", SIGNUPS);
  // An ingest request holds the stream it found before the delete and the re-create.
  const held = streams.get("signups")!;
  await streams.remove("signups");
  await streams.put("signups", {
    counters: { perMinute: { window: { tumbling: "5m" }, aggregate: "count" } },
  });
  await assert.rejects(
    ingestItems(held, [{ ok: true as const, value: { plan: "pro" } }], {
      store: wrapped,
      nowMs,
    }),
    StreamChangedError,
  );
  assert.equal((await wrapped.stats("signups", [])).applied, 0);
  assert.equal((await store.stats(generationKey("signups", 1), [])).applied, 0);
  assert.equal((await store.stats(generationKey("signups", 2), [])).applied, 0);
});

redisTest(
  "A config stream force-deleted elsewhere while this file still holds it is recorded again: its events count where it reads them",
  async (fixture) => {
    const held = await instance(fixture, { config: { streams: { signups: SIGNUPS } } });
    await held.streams.registerConfig();
    const other = await instance(fixture);
    assert.equal((await ingest(held, "signups", [{ plan: "pro" }])).status, 202);
    const forced = await other.app.request("/v1/streams/signups?force=true", { method: "DELETE" });
    assert.equal(forced.status, 204);
    for (let i = 0; i < 3; i++) {
      const reply = await ingest(held, "signups", [{ plan: "free" }]);
      assert.equal(reply.status, 202);
      await reply.body?.cancel();
    }
    // Counted in the generation the file's stream was recorded under again, which it reads.
    const stats = (await getStream(held, "signups")).body.stats;
    assert.deepEqual([stats.accepted, stats.applied], [3, 3]);
    const record = await new RedisDefinitionStore(
      restClient(fixture),
    ).get("signups");
    assert.deepEqual([record?.source, record?.deleted], ["config", false]);
    assert.equal(record?.generation, held.streams.generationOf("signups"));
  },
);

interface ConfigShape {
  streams: { orders: { counters: Record<string, object>; transform?: object[] } };
}

const CONFIG_V1 = {
  streams: {
    orders: {
      counters: {
        n: { window: { tumbling: "1m" }, aggregate: "count" },
        revenue: { window: { tumbling: "1m" }, aggregate: { sum: "amount" } },
      },
    },
  },
};

redisTest(
  "registerConfig() refuses a redeploy that changes a counter, naming the stream and counter",
  async (fixture) => {
    const redis = restClient(fixture);
    const definitions = new RedisDefinitionStore(redis);
    const first = new StreamRegistry(compileConfig(CONFIG_V1), { definitions });
    await first.registerConfig();
    assert.equal(first.describe("orders")?.version, 1);

    // The same config again changes nothing; an added counter and a new transform are allowed.
    const again = new StreamRegistry(compileConfig(CONFIG_V1), { definitions });
    await again.registerConfig();
    assert.equal(again.describe("orders")?.version, 1);
    const grown = structuredClone(CONFIG_V1) as ConfigShape;
    grown.streams.orders.counters.big = { window: { tumbling: "1h" }, aggregate: "count" };
    grown.streams.orders.transform = [{ filter: "event.amount > 0" }];
    const next = new StreamRegistry(compileConfig(grown), { definitions });
    await next.registerConfig();
    assert.equal(next.describe("orders")?.version, 2);
    assert.equal(next.describe("orders")?.generation, 0);

    const changed = structuredClone(CONFIG_V1) as ConfigShape;
    changed.streams.orders.counters.revenue = {
      window: { tumbling: "1m" },
      aggregate: { avg: "amount" },
    };
    const refused = new StreamRegistry(compileConfig(changed), { definitions });
    await assert.rejects(refused.registerConfig(), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.match(
        error.message,
        /^Stream 'orders' cannot change the window, aggregate or groupBy of counter 'revenue' .*add a new counter instead$/,
      );
      assert.ok(!error.message.includes("\n"));
      return true;
    });
    // An API stream may not take a config stream's name stored by another deployment.
    const other = await instance(fixture);
    const taken = await put(other, "orders", SIGNUPS);
    assert.equal(taken.status, 409);
    assert.equal((await taken.json()).error.code, "stream_from_config");
    const deleted = await other.app.request("/v1/streams/orders", { method: "DELETE" });
    assert.equal(deleted.status, 409);
    assert.equal((await deleted.json()).error.code, "stream_from_config");
  },
);

Deno.test("registerConfig() refuses a counter a redeploy removed and a later one adds back with another meaning", async () => {
  const definitions = new MemoryDefinitionStore();
  await new StreamRegistry(compileConfig(CONFIG_V1), { definitions }).registerConfig();
  const without = structuredClone(CONFIG_V1) as ConfigShape;
  delete without.streams.orders.counters.revenue;
  const removed = new StreamRegistry(compileConfig(without), { definitions });
  await removed.registerConfig();
  assert.equal(removed.describe("orders")?.version, 2);
  const again = new StreamRegistry(compileConfig(without), { definitions });
  await again.registerConfig();
  assert.equal(again.describe("orders")?.version, 2, "the same config again writes nothing");

  const back = structuredClone(CONFIG_V1) as ConfigShape;
  back.streams.orders.counters.revenue = {
    window: { tumbling: "1m" },
    aggregate: { avg: "amount" },
  };
  await assert.rejects(
    new StreamRegistry(compileConfig(back), { definitions }).registerConfig(),
    (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.match(
        error.message,
        /^Stream 'orders' had a counter 'revenue' with another window, aggregate or groupBy before it was removed .*under a new name$/,
      );
      return true;
    },
  );
  // Back as it was is the same counter.
  const restored = new StreamRegistry(compileConfig(CONFIG_V1), { definitions });
  await restored.registerConfig();
  assert.equal(restored.describe("orders")?.version, 3);
});

Deno.test("a config stream not recorded at startup is recorded before its first event is counted", async () => {
  const definitions = new DownDefinitions();
  // The name is an API stream's, at generation 1, when this deployment's config takes it.
  definitions.down = false;
  await new StreamRegistry(compileConfig({ streams: {} }), { definitions }).put("orders", SIGNUPS);
  definitions.down = true;
  const streams = new StreamRegistry(compileConfig({ streams: { orders: SIGNUPS } }), {
    definitions,
  });
  await assert.rejects(streams.registerConfig(), StoreUnavailableError);
  const app = createApp({ streams, store: new MemoryStore(), keys: await KeyRing.parse("") });
  const event = [{ plan: "pro" }];
  const refused = await app.request("/v1/streams/orders/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(event),
  });
  assert.equal(refused.status, 503, "nothing counted while the check cannot be made");
  // Only the record was tried: the events were not applied, and the reply says so.
  assert.deepEqual((await refused.json()).error.details, { outcome: "not_applied" });
  const unread = await app.request("/v1/streams/orders/counters/perMinute/current");
  assert.equal(unread.status, 503, "nor read, from a generation not known yet");
  await unread.body?.cancel();
  definitions.down = false;
  const accepted = await app.request("/v1/streams/orders/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(event),
  });
  assert.equal(accepted.status, 202);
  await accepted.body?.cancel();
  const record = await definitions.get("orders");
  assert.deepEqual([record?.source, record?.generation], ["config", 2]);
  assert.equal(streams.generationOf("orders"), 2, "counted in the generation recorded");
  const current = await app.request("/v1/streams/orders/counters/perMinute/current");
  assert.equal((await current.json()).windows[0].value, 1);
});

Deno.test("a config stream taking the name of a stream created through the API says so in the log", async () => {
  const definitions = new MemoryDefinitionStore();
  await new StreamRegistry(compileConfig({ streams: {} }), { definitions }).put("orders", SIGNUPS);
  const warnings = await collectingLogs(async (records) => {
    await new StreamRegistry(compileConfig({ streams: { orders: SIGNUPS } }), { definitions })
      .registerConfig();
    return records.filter((record) => record.level === "warning").map(messageOf);
  });
  assert.deepEqual(warnings, [
    "Stream 'orders' of the config file replaces the stream of that name created through the API (version 1); it starts empty, and the API stream's data is not read again",
  ]);
});

Deno.test("a config stream no deployment declares any more is freed by DELETE ?force=true from an instance whose file does not hold it", async () => {
  const definitions = new MemoryDefinitionStore();
  const former = new StreamRegistry(compileConfig({ streams: { orders: SIGNUPS } }), {
    definitions,
  });
  await former.registerConfig();
  const keys = await KeyRing.parse("");
  const appOf = (streams: StreamRegistry) => createApp({ streams, store: new MemoryStore(), keys });
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  const app = appOf(streams);
  const refused = await app.request("/v1/streams/orders", { method: "DELETE" });
  assert.equal(refused.status, 409);
  const error = (await refused.json()).error;
  assert.equal(error.code, "stream_from_config");
  assert.match(error.message, /DELETE it with \?force=true/);
  const bad = await app.request("/v1/streams/orders?force=yes", { method: "DELETE" });
  assert.equal(bad.status, 400);
  await bad.body?.cancel();
  // Never on the instance whose own file holds it.
  const own = await appOf(former).request("/v1/streams/orders?force=true", { method: "DELETE" });
  assert.equal(own.status, 409);
  await own.body?.cancel();
  assert.equal((await definitions.get("orders"))?.deleted, false);
  const forced = await app.request("/v1/streams/orders?force=true", { method: "DELETE" });
  assert.equal(forced.status, 204);
  assert.equal((await definitions.get("orders"))?.deleted, true);
  // The name is free for the API.
  const created = await app.request("/v1/streams/orders", {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(SIGNUPS),
  });
  assert.equal(created.status, 201);
  await created.body?.cancel();
});

Deno.test("a poll that cannot record a config stream still serves the streams created meanwhile", async () => {
  class OrdersDown extends MemoryDefinitionStore {
    override get(name: string) {
      return name === "orders"
        ? Promise.reject(new StoreUnavailableError("down"))
        : super.get(name);
    }
  }
  const definitions = new OrdersDown();
  const streams = new StreamRegistry(compileConfig({ streams: { orders: SIGNUPS } }), {
    definitions,
  });
  await assert.rejects(streams.registerConfig(), StoreUnavailableError);
  await new StreamRegistry(compileConfig({ streams: {} }), { definitions }).put("signups", SIGNUPS);
  await streams.poll();
  assert.ok(streams.has("signups"));
  assert.equal(streams.isRecorded("orders"), false);
});

Deno.test("a config stream that conflicts with the store, found after startup, takes no events (409)", async () => {
  const definitions = new DownDefinitions();
  definitions.down = false;
  await new StreamRegistry(compileConfig(CONFIG_V1), { definitions }).registerConfig();
  definitions.down = true;
  const changed = structuredClone(CONFIG_V1) as ConfigShape;
  changed.streams.orders.counters.n = { window: { tumbling: "5m" }, aggregate: "count" };
  const streams = new StreamRegistry(compileConfig(changed), { definitions });
  await assert.rejects(streams.registerConfig(), StoreUnavailableError);
  definitions.down = false;
  const app = createApp({ streams, store: new MemoryStore(), keys: await KeyRing.parse("") });
  for (let attempt = 0; attempt < 2; attempt++) {
    const res = await app.request("/v1/streams/orders/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify([{ amount: 1 }]),
    });
    assert.equal(res.status, 409);
    const error = (await res.json()).error;
    assert.equal(error.code, "counter_changed");
    assert.match(error.message, /cannot change the window, aggregate or groupBy of counter 'n'/);
  }
  // Nor are the store's windows closed by this file's definition, or read as if they were its.
  const sweep = await app.request("/v1/admin/sweep", { method: "POST" });
  assert.equal(sweep.status, 200);
  const swept = await sweep.json();
  assert.deepEqual(swept.closed, []);
  assert.deepEqual(
    swept.failed.map((item: { stream: string; error: { code: string } }) => [
      item.stream,
      item.error.code,
    ]),
    [["orders", "counter_changed"]],
  );
  const read = await app.request("/v1/streams/orders/counters/n/current");
  assert.equal(read.status, 409);
  assert.equal((await read.json()).error.code, "counter_changed");
  assert.equal(streams.isRecorded("orders"), false);
});

async function waitFor(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`Not within 5 s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Holds the answer of the first `get` until released, as a slow store can. */
class HeldFirstGet extends CountingDefinitions {
  release = Promise.withResolvers<void>();
  override async get(name: string): Promise<StoredDefinition | null> {
    const first = this.gets === 0;
    const record = await super.get(name);
    if (first) await this.release.promise;
    return record;
  }
}

Deno.test("A lookup that read a stream before this instance deleted it does not bring it back", async () => {
  const shared = new MemoryDefinitionStore();
  const writer = new StreamRegistry(compileConfig({ streams: {} }), { definitions: shared });
  await writer.put("signups", SIGNUPS);
  const definitions = new HeldFirstGet(shared);
  const reader = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  const found = reader.find("signups"); // reads version 1, answer held
  await reader.remove("signups");
  definitions.release.resolve();
  await found;
  assert.equal(reader.get("signups"), undefined);
  assert.equal(reader.has("signups"), false);
});

Deno.test("an ingest for a name looked up while the store is down answers 503 with outcome not_applied: only a read was tried", async () => {
  const streams = new StreamRegistry(compileConfig({ streams: {} }), {
    definitions: new DownDefinitions(),
  });
  const app = createApp({ streams, store: new MemoryStore(), keys: await KeyRing.parse("") });
  const res = await app.request("/v1/streams/signups/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify([{ plan: "pro" }]),
  });
  assert.equal(res.status, 503);
  const error = (await res.json()).error;
  assert.equal(error.code, "store_unavailable");
  assert.deepEqual(error.details, { outcome: "not_applied" });
  assert.match(error.message, /nothing was applied$/);
});

Deno.test("a config stream recorded under a later generation is served there by every instance of its file: after a restart, and beside one that recorded it again", async () => {
  const definitions = new MemoryDefinitionStore();
  const store = new MemoryStore({ definitions });
  const keys = await KeyRing.parse("");
  const config = () => compileConfig({ streams: { orders: SIGNUPS } });
  const post = (streams: StreamRegistry) =>
    createApp({ streams, store, keys }).request("/v1/streams/orders/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ plan: "pro" }),
    });
  // The file takes a name first created through the API: generation 2.
  await new StreamRegistry(compileConfig({ streams: {} }), { definitions }).put("orders", SIGNUPS);
  const first = new StreamRegistry(config(), { definitions });
  await first.registerConfig();
  assert.equal((await post(first)).status, 202);
  // A restart with the same file counts in that generation, and reads what was counted there.
  const restarted = new StreamRegistry(config(), { definitions });
  await restarted.registerConfig();
  assert.equal(restarted.generationOf("orders"), 2);
  assert.equal((await post(restarted)).status, 202);
  assert.equal((await restarted.wrap(store).stats("orders", [])).accepted, 2);
  // Force-deleted elsewhere: the first instance to ingest records it again (generation 3); the
  // other then finds the record as its file has it, and follows.
  await new StreamRegistry(compileConfig({ streams: {} }), { definitions }).remove("orders", {
    force: true,
  });
  assert.equal((await post(first)).status, 202);
  for (let i = 0; i < 2; i++) assert.equal((await post(restarted)).status, 202);
  assert.deepEqual([first.generationOf("orders"), restarted.generationOf("orders")], [3, 3]);
  assert.equal((await first.wrap(store).stats("orders", [])).accepted, 3);
});

Deno.test("every instance of a deployment follows its config stream's record: recorded again elsewhere after a force delete, the next poll moves the others too", async () => {
  const definitions = new MemoryDefinitionStore();
  const nowMs = Date.parse("2026-01-01T00:00:30Z");
  const store = new MemoryStore({ now: () => nowMs, definitions });
  const item = { ok: true as const, value: { plan: "pro" } };
  const deployment = (config: object) => {
    const streams = new StreamRegistry(compileConfig(config), { definitions });
    return { streams, store: streams.wrap(store) };
  };
  const [a, b] = [deployment({ streams: { s: SIGNUPS } }), deployment({ streams: { s: SIGNUPS } })];
  await a.streams.registerConfig();
  await b.streams.registerConfig();
  const admin = deployment({ streams: {} });
  await admin.streams.poll();
  await admin.streams.remove("s", { force: true });
  // A's next ingest records it again (generation 1), after one refused attempt.
  await assert.rejects(
    ingestItems(a.streams.get("s")!, [item], { store: a.store, nowMs }),
    StreamChangedError,
  );
  assert.equal(
    (await ingestItems(a.streams.get("s")!, [item], { store: a.store, nowMs })).accepted,
    1,
  );
  assert.equal(a.streams.generationOf("s"), 1);
  // B receives no events: one poll moves its reads, sweeps and alerts to that generation.
  await b.streams.poll();
  assert.equal(b.streams.generationOf("s"), 1);
  assert.equal((await b.store.stats("s", [])).applied, 1);
});

Deno.test("a config stream refused for a counter conflict is checked again once its record changes: freed by a force delete, it is recorded and takes events", async () => {
  const definitions = new MemoryDefinitionStore();
  const nowMs = Date.parse("2026-01-01T00:00:30Z");
  const store = new MemoryStore({ now: () => nowMs, definitions });
  const item = { ok: true as const, value: { plan: "pro" } };
  const changed = {
    counters: { perMinute: { window: { tumbling: "5m" }, groupBy: ["plan"], aggregate: "count" } },
  };
  await new StreamRegistry(compileConfig({ streams: { s: SIGNUPS } }), { definitions })
    .registerConfig();
  const v2 = new StreamRegistry(compileConfig({ streams: { s: changed } }), { definitions });
  await assert.rejects(v2.registerConfig(), ConfigError);
  const wrapped = v2.wrap(store);
  await assert.rejects(
    ingestItems(v2.get("s")!, [item], { store: wrapped, nowMs }),
    (error: StreamDefinitionError) => error.code === "counter_changed",
  );
  const admin = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  await admin.poll();
  await admin.remove("s", { force: true });
  await v2.poll();
  assert.equal((await ingestItems(v2.get("s")!, [item], { store: wrapped, nowMs })).accepted, 1);
  assert.equal(v2.generationOf("s"), 1);
});

/**
 * Probe 10, defect 1: a stream another deployment's config file records (another
 * EDGESTREAM_CONFIG on the same store and prefix) is not served by instances whose file lacks
 * it, and every answer there says why, alike: reads, ingest and counter reads
 * `409 stream_not_servable`, PUT and DELETE `409 stream_from_config`, both naming "another
 * deployment's config file"; GET /v1/streams leaves it out. `DELETE ?force=true` frees it.
 */
async function anotherDeploymentsConfigStream(
  make: (config?: object) => Promise<{ app: Instance["app"]; streams: StreamRegistry }>,
) {
  const served = await make();
  // An API stream, served here before the other deployment starts.
  assert.equal((await put(served, "p10b", SIGNUPS)).status, 201);
  assert.equal((await ingest(served, "p10b", [{ plan: "pro" }])).status, 202);
  // The other deployment's file names it: it takes the name over.
  const otherDeployment = await make({ streams: { p10b: SIGNUPS } });
  await otherDeployment.streams.registerConfig();
  assert.equal((await ingest(otherDeployment, "p10b", [{ plan: "pro" }])).status, 202);
  await served.streams.poll();
  // An instance that never served it looks it up.
  const fresh = await make();
  const elsewhere = /^Stream 'p10b' \(version \d+\) is defined in another deployment's config file/;
  for (const at of [served, fresh]) {
    for (
      const response of [
        await at.app.request("/v1/streams/p10b"),
        await ingest(at, "p10b", [{ plan: "pro" }]),
        await at.app.request("/v1/streams/p10b/counters/perMinute"),
        await at.app.request("/v1/streams/p10b/counters/perMinute/current"),
      ]
    ) {
      const body = await response.json();
      assert.equal(response.status, 409, JSON.stringify(body));
      assert.equal(body.error.code, "stream_not_servable");
      assert.match(body.error.message, elsewhere);
    }
    const list = await (await at.app.request("/v1/streams")).json();
    assert.deepEqual(list.streams.map((s: { name: string }) => s.name), []);
    for (
      const response of [
        await put(at, "p10b", SIGNUPS),
        await at.app.request("/v1/streams/p10b", { method: "DELETE" }),
      ]
    ) {
      const body = await response.json();
      assert.equal(response.status, 409);
      assert.equal(body.error.code, "stream_from_config");
      assert.match(body.error.message, /is defined in another deployment's config file/);
    }
  }
  // Freed by an admin who says so: then unknown, and the name may be taken through the API.
  const forced = await served.app.request("/v1/streams/p10b?force=true", { method: "DELETE" });
  assert.equal(forced.status, 204);
  const gone = await served.app.request("/v1/streams/p10b");
  assert.equal(gone.status, 404);
  assert.equal((await gone.json()).error.code, "stream_not_found");
  assert.equal((await put(served, "p10b", SIGNUPS)).status, 201);
}

Deno.test("another deployment's config stream answers 409 saying so on instances whose file lacks it (memory store)", async () => {
  const definitions = new MemoryDefinitionStore();
  const store = new MemoryStore({ definitions });
  await anotherDeploymentsConfigStream(async (config = { streams: {} }) => {
    const streams = new StreamRegistry(compileConfig(config), { definitions });
    const app = createApp({ streams, store, keys: await KeyRing.parse("") });
    return { app, streams };
  });
});

redisTest(
  "another deployment's config stream answers 409 saying so on instances whose file lacks it (Redis)",
  async (fixture) => {
    await anotherDeploymentsConfigStream((config) => instance(fixture, { config }));
  },
);

redisTest(
  "A stream whose definition record vanished from Redis takes no more events: an API stream is 404 after, a config stream is recorded again, and each is logged",
  async (fixture) => {
    const at = await instance(fixture, { config: { streams: { orders: SIGNUPS } } });
    await at.streams.registerConfig();
    assert.equal((await put(at, "signups", SIGNUPS)).status, 201);
    for (const name of ["signups", "orders"]) {
      assert.equal((await ingest(at, name, [{ plan: "pro" }])).status, 202);
    }
    // As a Redis restored from a snapshot taken before either record was written.
    await withDirect(
      fixture.redisUrl,
      (send) => send("DEL", "es:{signups}:def", "es:{orders}:def"),
    );
    const refused = await collectingLogs(async (records) => {
      const statuses = [];
      for (const name of ["signups", "orders"]) {
        const reply = await ingest(at, name, [{ plan: "free" }]);
        statuses.push(reply.status);
        await reply.body?.cancel();
      }
      return { statuses, warnings: records.filter((r) => r.level === "warning").map(messageOf) };
    }, { level: "warning" });
    // Refused by the store, the definitions read again and the request made again on them: the
    // API stream is gone (404), the config stream recorded again as at startup (202).
    assert.deepEqual(refused.statuses, [404, 202]);
    for (const name of ["signups", "orders"]) {
      assert.ok(
        refused.warnings.some((line) =>
          line.includes(`definition record of stream '${name}' is missing`)
        ),
        refused.warnings.join("\n"),
      );
    }
    // And stays so; the config stream counts where it reads.
    const gone = await ingest(at, "signups", [{ plan: "free" }]);
    assert.equal(gone.status, 404);
    await gone.body?.cancel();
    assert.equal((await ingest(at, "orders", [{ plan: "free" }])).status, 202);
    const record = await new RedisDefinitionStore(
      restClient(fixture),
    ).get("orders");
    assert.equal(record?.source, "config");
    const stats = (await getStream(at, "orders")).body.stats;
    assert.deepEqual([stats.accepted, stats.applied], [3, 3]);
    // README (Redis persistence and eviction): the API stream created again starts over at
    // generation 1, where its first incarnation's data still is (its record alone was lost).
    assert.equal((await put(at, "signups", SIGNUPS)).status, 201);
    const again = (await getStream(at, "signups")).body.stats;
    assert.equal(again.accepted, 1, "the first incarnation's event, not a fresh stream's 0");
  },
);

Deno.test("every poll tries to record a config stream not recorded yet, saying the store unavailable once, then that it was recorded", async () => {
  const definitions = new DownDefinitions();
  const streams = new StreamRegistry(compileConfig({ streams: { orders: SIGNUPS } }), {
    definitions,
    pollMs: 5,
  });
  await assert.rejects(streams.registerConfig(), StoreUnavailableError);
  const records = await collectingLogs(async (records) => {
    streams.startPolling();
    try {
      // Some 15 polls, each finding the stream not recorded.
      await new Promise((resolve) => setTimeout(resolve, 80));
      definitions.down = false;
      for (let i = 0; i < 100 && !streams.isRecorded("orders"); i++) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    } finally {
      streams.stop();
    }
    return [...records];
  });
  assert.ok(streams.isRecorded("orders"));
  assert.deepEqual(records.map((record) => [record.level, messageOf(record)]), [
    ["warning", "Cannot record config stream 'orders' yet: StoreUnavailableError: down"],
    ["info", "Recorded config stream 'orders' in the store"],
  ]);
});

Deno.test("a name another deployment's config recorded, then stored through the API by another release with a definition this one cannot compile, answers that problem, not the other deployment's", async () => {
  const definitions = new MemoryDefinitionStore();
  const store = new MemoryStore({ definitions });
  const keys = await KeyRing.parse("");
  const otherDeployment = new StreamRegistry(compileConfig({ streams: { legacy: SIGNUPS } }), {
    definitions,
  });
  await otherDeployment.registerConfig();
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  const app = createApp({ streams, store, keys });
  await streams.poll();
  assert.deepEqual(streams.definedElsewhere("legacy"), { version: 1 });
  // Between two polls of this instance, an instance of another release frees the name
  // (`DELETE ?force=true`) and stores it through the API with a lookahead pattern, which this
  // release refuses: this instance reads only the last record.
  const recorded = (await definitions.get("legacy"))!;
  const freed = await definitions.write("legacy", {
    source: "api",
    generation: recorded.generation,
    definition: null,
    counters: {},
    deleted: true,
  }, recorded.version);
  assert.equal(freed.status, "written");
  const definition = {
    ...SIGNUPS,
    schema: { properties: { plan: { type: "string", pattern: "^(?!x)" } } },
  };
  const stored = await definitions.write("legacy", {
    source: "api",
    generation: recorded.generation + 1,
    definition,
    // Its counters are SIGNUPS', as the config stream's.
    counters: recorded.counters,
    deleted: false,
  }, freed.version);
  assert.equal(stored.status, "written");
  await collectingLogs(() => streams.poll(), { level: "error" });
  const response = await app.request("/v1/streams/legacy");
  const body = await response.json();
  assert.equal(response.status, 409, JSON.stringify(body));
  assert.equal(body.error.code, "stream_not_servable");
  assert.match(
    body.error.message,
    /^Stream 'legacy' \(version 3\) is stored, but this release cannot compile its definition: /,
  );
  assert.equal(streams.definedElsewhere("legacy"), undefined);
  assert.equal(streams.unservable("legacy")?.version, 3);
});

Deno.test("a live stream's record keeps at most 1024 counter names: a PUT naming more new ones is refused, one reusing them is not, and a stream created again starts over", async () => {
  // Each name counted stays in the record (it keeps its meaning), so a key limited to its stream
  // could grow the record every instance polls without end, 64 new counters a PUT.
  const definitions = new MemoryDefinitionStore();
  const registry = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  const named = (from: number) => ({
    counters: Object.fromEntries(
      Array.from({ length: 64 }, (_, i) => [
        `c${from + i}`,
        { window: { tumbling: "1m" }, aggregate: "count" },
      ]),
    ),
  });
  for (let put = 0; put < 16; put++) await registry.put("s", named(put * 64));
  assert.equal(Object.keys((await definitions.get("s"))!.counters).length, 1024);
  await assert.rejects(
    registry.put("s", named(16 * 64)),
    (error: StreamDefinitionError) =>
      error.code === "invalid_definition" &&
      error.message.startsWith(
        "Invalid stream definition: counters: the stream would have had 1088 counter names while it lives, past the 1024 its record keeps",
      ),
  );
  assert.equal(Object.keys((await definitions.get("s"))!.counters).length, 1024);
  // Names it had, as they were: taken.
  assert.equal((await registry.put("s", named(0))).created, false);
  await registry.remove("s");
  assert.equal((await registry.put("s", named(16 * 64))).created, true);
});

const T0_REDEPLOY = Date.parse("2026-01-01T00:00:00Z");

/**
 * `run` as two tests: on the memory store with its definitions beside it, and on Redis with the
 * definitions beside the store, as storesFromEnv makes them; the store's clock is `clock.now`, at
 * T0_REDEPLOY until `run` moves it.
 */
function onBothStores(
  title: string,
  run: (store: Store, definitions: DefinitionStore, clock: { now: number }) => Promise<void>,
): void {
  Deno.test(`Memory store: ${title}`, () => {
    const definitions = new MemoryDefinitionStore();
    const clock = { now: T0_REDEPLOY };
    return run(
      new MemoryStore({ now: () => clock.now, definitions, definitionsHere: true }),
      definitions,
      clock,
    );
  });
  redisTest(`Redis store: ${title}`, (fixture) => {
    const redis = restClient(fixture);
    const clock = { now: T0_REDEPLOY };
    return run(
      new RedisStore(redis, { definitionsHere: true, now: () => clock.now }),
      new RedisDefinitionStore(redis),
      clock,
    );
  });
}

type App = ReturnType<typeof createApp>;

/**
 * A config file redeployed with a raised lateness before any sweep closed a window a read called
 * final under the file before: the new deployment, over the same store, keeps that window and
 * session final and takes no event for them, as a PUT does (`tests/http/definition_routes_test.ts`).
 */
async function redeployKeepsFinal(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const deploy = async (lateness: string) => {
    const config = {
      streams: {
        visits: {
          time: { field: "t", lateness },
          counters: {
            perMinute: { window: { tumbling: "1m" }, groupBy: ["plan"], aggregate: "count" },
            sessions: { window: { session: "1m" }, groupBy: ["plan"], aggregate: "count" },
          },
        },
      },
    };
    const streams = new StreamRegistry(compileConfig(config), {
      definitions,
      data: store,
      now: () => T0,
    });
    await streams.registerConfig();
    return createApp({ streams, store, keys: await KeyRing.parse(""), now: () => T0 });
  };
  const send = async (app: App, t: number, plan: string) => {
    const res = await app.request("/v1/streams/visits/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify([{ t, plan }]),
    });
    assert.equal(res.status, 202, await res.clone().text());
    return (await res.json()).late;
  };
  const rows = async (app: App, counter: string) => {
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
  const before = await deploy("10s");
  assert.equal(await send(before, T0 - 300_000, "pro"), 0);
  // The watermark at T0 - 60 s: the window [T0 - 300 s, T0 - 240 s) and the session ending at
  // T0 - 300 s (+ 1 m of gap) are final under 10 s of lateness; no sweep has closed them.
  assert.equal(await send(before, T0 - 60_000, "free"), 0);
  assert.deepEqual(await rows(before, "perMinute"), [[1, true]]);
  assert.deepEqual(await rows(before, "sessions"), [[1, true]]);
  const after = await deploy("1h");
  // Within the hour now allowed, but in a window and a session a read called final: late.
  assert.equal(await send(after, T0 - 290_000, "pro"), 1);
  assert.deepEqual(await rows(after, "perMinute"), [[1, true]]);
  assert.deepEqual(await rows(after, "sessions"), [[1, true]]);
  // Behind the watermark by more than the old 10 s, but after all that was final (T0 - 70 s):
  // the raised lateness takes it.
  assert.equal(await send(after, T0 - 65_000, "pro"), 0);
  // The same file again (a restart, another instance) moves nothing.
  const again = await deploy("1h");
  assert.equal(await send(again, T0 - 66_000, "pro"), 0);
  // The next sweep closes the window and the session reads call final (by 1 h of lateness alone,
  // not for an hour), and nothing else.
  const first = new Date(T0 - 300_000).toISOString();
  assert.deepEqual(await sweepVia(again), [`perMinute ${first}`, `sessions ${first}`]);
  assert.deepEqual(await sweepVia(again), []);
}

Deno.test("Memory store: a config file redeployed with a raised lateness re-opens no window or session a read called final before a sweep closed it", () =>
  redeployKeepsFinal(new MemoryStore({ now: () => T0_REDEPLOY }), new MemoryDefinitionStore()));

redisTest(
  "Redis store: a config file redeployed with a raised lateness re-opens no window or session a read called final before a sweep closed it",
  (fixture) => {
    const redis = restClient(fixture);
    // The definitions beside the store, as storesFromEnv makes them.
    return redeployKeepsFinal(
      new RedisStore(redis, { definitionsHere: true, now: () => T0_REDEPLOY }),
      new RedisDefinitionStore(redis),
    );
  },
);

/**
 * A config file redeployed with a raised lateness while an instance of the deployment before still
 * runs (a rolling deploy): that instance, once it polled the new record (which it notes but does
 * not serve, its file being authoritative there), still reads by the stored mark, not by its own
 * lower lateness, and its batches still keep final what its lateness calls so.
 */
async function oldDeploymentKeepsFinal(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const deploy = async (lateness: string) => {
    const streams = new StreamRegistry(
      compileConfig({ streams: { visits: visitsDefinition(lateness) } }),
      { definitions, data: store, now: () => T0 },
    );
    await streams.registerConfig();
    const app = createApp({ streams, store, keys: await KeyRing.parse(""), now: () => T0 });
    return { streams, app };
  };
  // The window [T0 - 60 s, T0).
  const lastMinute = async (app: App) => {
    const res = await app.request(
      `/v1/streams/visits/counters/perMinute?from=${T0 - 60_000}&to=${T0 - 1}`,
    );
    assert.equal(res.status, 200);
    return (await res.json()).windows.map((
      row: { value: number; final: boolean },
    ) => [row.value, row.final]);
  };
  const old = await deploy("10s");
  assert.equal(await sendVisit(old.app, T0 - 50_000), 0);
  const next = await deploy("1h");
  await old.streams.poll();
  // The watermark at T0 + 60 s: the old 10 s calls [T0 - 60 s, T0) final, the recorded 1 h not.
  assert.equal(await sendVisit(next.app, T0 + 60_000), 0);
  assert.deepEqual(await lastMinute(old.app), [[1, false]]);
  assert.equal(await sendVisit(next.app, T0 - 40_000), 0);
  assert.deepEqual(await lastMinute(old.app), [[2, false]]);
  // A batch of the old deployment keeps final what its 10 s calls so (through T0 + 51 s).
  assert.equal(await sendVisit(old.app, T0 + 61_000), 0);
  assert.equal(await sendVisit(next.app, T0 - 30_000), 1);
  await old.streams.settled();
}

onBothStores(
  "an instance of the deployment before a lateness-raising redeploy, once it polled the new record, calls final no window the new file re-opens",
  oldDeploymentKeepsFinal,
);

Deno.test("a PUT on an instance still serving a deleted incarnation keeps final what the recorded one called final, not what the deleted one did", async () => {
  const definitions = new MemoryDefinitionStore();
  const nowMs = Date.parse("2026-01-01T00:00:30Z");
  const store = new MemoryStore({ now: () => nowMs, definitions });
  const item = { ok: true as const, value: { plan: "pro" } };
  const lateness = (value: string) => ({ ...SIGNUPS, time: { lateness: value } });
  const registry = () =>
    new StreamRegistry(compileConfig({ streams: {} }), {
      definitions,
      data: store,
      now: () => nowMs,
    });
  const [a, b] = [registry(), registry()];
  await a.put("signups", lateness("0s"));
  // B deletes it and creates it again with a 10 min lateness; A has not polled since.
  await b.poll();
  await b.remove("signups");
  await b.put("signups", lateness("10m"));
  await ingestItems(b.get("signups")!, [item], { store: b.wrap(store), nowMs });
  assert.equal(a.generationOf("signups"), 1);
  await a.put("signups", lateness("20m"));
  // Reads of generation 2 called final what ended 10 min before its watermark, no later.
  const stats = await store.stats(generationKey("signups", 2), []);
  assert.equal(stats.watermark, nowMs);
  assert.equal(stats.closedThrough, nowMs - 10 * 60_000);
});

/** The stream `visits` of the keep-final tests: a count per minute of events timed by `t`. */
function visitsDefinition(lateness: string) {
  return {
    time: { field: "t", lateness },
    counters: { perMinute: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
}

/** Sends one event at `t` to `visits` through `app`; returns how many were late. */
async function sendVisit(app: App, t: number): Promise<number> {
  const res = await app.request("/v1/streams/visits/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify([{ t }]),
  });
  assert.equal(res.status, 202, await res.clone().text());
  return (await res.json()).late;
}

/** The value and finality of `visits`' window [T0_REDEPLOY, T0_REDEPLOY + 1 m) read through `app`. */
async function firstMinute(app: App): Promise<[number, boolean]> {
  const res = await app.request(
    `/v1/streams/visits/counters/perMinute?from=${T0_REDEPLOY}&to=${T0_REDEPLOY + 60_000}`,
  );
  assert.equal(res.status, 200);
  const [row] = (await res.json()).windows as Array<{ value: number; final: boolean }>;
  return [row.value, row.final];
}

/** An instance at T0_REDEPLOY: a registry over `definitions` (polled once), an app over it. */
async function visitsInstance(store: Store, definitions: DefinitionStore) {
  const streams = new StreamRegistry(compileConfig({ streams: {} }), {
    definitions,
    data: store,
    now: () => T0_REDEPLOY,
  });
  await streams.poll();
  return {
    streams,
    app: createApp({ streams, store, keys: await KeyRing.parse(""), now: () => T0_REDEPLOY }),
  };
}

redisTest(
  "A sweep of a stream whose definition record vanished from Redis closes nothing, as its batches are refused, and says the record is missing: the API stream's due window is logged by no one, and it is 404 after",
  async (fixture) => {
    const T0 = T0_REDEPLOY;
    const redis = restClient(fixture);
    const store = new RedisStore(redis, { definitionsHere: true, now: () => T0 });
    const a = await visitsInstance(store, new RedisDefinitionStore(redis));
    await a.streams.put("visits", visitsDefinition("10s"));
    assert.equal(await sendVisit(a.app, T0 + 10_000), 0);
    // The watermark at T0 + 2 m: [T0, T0 + 1 m) is due.
    assert.equal(await sendVisit(a.app, T0 + 120_000), 0);
    // As a Redis restored from a snapshot taken before the record was written.
    await withDirect(fixture.redisUrl, (send) => send("DEL", "es:{visits}:def"));
    const swept = await collectingLogs(async (records) => ({
      closed: await sweepVia(a.app),
      warnings: records.filter((r) => r.level === "warning").map(messageOf),
    }), { level: "warning" });
    assert.deepEqual(swept.closed, []);
    // Said as a refused batch says it.
    assert.ok(
      swept.warnings.some((line) =>
        line.includes("definition record of stream 'visits' is missing") &&
        line.includes("the close was refused")
      ),
      swept.warnings.join("\n"),
    );
    // The definition read again: there is none, so the stream is gone, as a refused batch finds
    // (README: "A sweep finds the same in its close, which closes (and logs) nothing").
    const res = await a.app.request("/v1/streams/visits");
    assert.equal(res.status, 404);
    await res.body?.cancel();
  },
);

/**
 * A batch applied under the stored definition after a PUT that raises the lateness read the
 * stream's stats and before it wrote the new definition moves the watermark, so the stored one
 * calls another window final: the write keeps that final too (the mark is raised in the same
 * atomic step as the write, from the watermark then), so the new lateness re-opens it not.
 */
async function raceKeepsFinal(store: Store, inner: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const definitions = new RacingDefinitions(inner);
  const streams = new StreamRegistry(compileConfig({ streams: {} }), {
    definitions,
    data: store,
    now: () => T0,
  });
  const app = createApp({ streams, store, keys: await KeyRing.parse(""), now: () => T0 });
  await streams.put("visits", visitsDefinition("10s"));
  assert.equal(await sendVisit(app, T0 + 10_000), 0);
  // The watermark at T0 + 10 s: [T0, T0 + 1 m) is open under 10 s of lateness.
  assert.deepEqual(await firstMinute(app), [1, false]);
  definitions.beforeWrite = async () => {
    // Between the PUT's read of the stats and its write, still under 10 s: the watermark moves
    // to T0 + 2 m, and a read calls [T0, T0 + 1 m) final.
    assert.equal(await sendVisit(app, T0 + 120_000), 0);
    assert.deepEqual(await firstMinute(app), [1, true]);
  };
  await streams.put("visits", visitsDefinition("1h"));
  assert.equal(definitions.beforeWrite, undefined);
  // Within the hour now allowed, but in the window the read called final: late.
  assert.equal(await sendVisit(app, T0 + 30_000), 1);
  assert.deepEqual(await firstMinute(app), [1, true]);
  // After what the old definition called final (T0 + 110 s): the raised lateness takes it.
  assert.equal(await sendVisit(app, T0 + 115_000), 0);
}

onBothStores(
  "a batch applied between a lateness-raising PUT's read of the stats and its write re-opens no window a read called final",
  raceKeepsFinal,
);

/**
 * Another instance's PUT lands between each of a PUT's (or DELETE's) reads of the record and its
 * write, every time it tries: after its last try it gives up with `409 definition_conflict`
 * (README's error table), naming the version stored, and writes nothing of its own.
 */
async function writesLosingEveryTryConflict(store: Store, inner: DefinitionStore) {
  const definitions = new RacingDefinitions(inner);
  const streams = new StreamRegistry(compileConfig({ streams: {} }), {
    definitions,
    data: store,
    now: () => T0_REDEPLOY,
  });
  const app = createApp({ streams, store, keys: await KeyRing.parse(""), now: () => T0_REDEPLOY });
  const other = await visitsInstance(store, inner);
  await other.streams.put("visits", visitsDefinition("10s"));
  let raced = 0;
  const race = async () => {
    raced++;
    await other.streams.put("visits", visitsDefinition(`${10 + raced}s`));
    definitions.beforeWrite = race;
  };
  const send = (method: string, lateness: string) =>
    app.request("/v1/streams/visits", {
      method,
      headers: { "Content-Type": "application/json" },
      body: method === "PUT" ? JSON.stringify(visitsDefinition(lateness)) : undefined,
    });

  for (const method of ["PUT", "DELETE"]) {
    const before = raced;
    definitions.beforeWrite = race;
    const res = await send(method, "1h");
    const body = await res.json();
    assert.equal(res.status, 409, JSON.stringify(body));
    assert.equal(body.error.code, "definition_conflict");
    const stored = await inner.get("visits");
    assert.ok(stored !== null && !stored.deleted, method);
    assert.equal(
      body.error.message,
      `Stream 'visits' was changed by another request meanwhile (now version ${stored.version}); retry`,
    );
    // Each try lost to another write; the last one stored is the other instance's.
    assert.ok(raced - before > 1, `${method} tried ${raced - before} times`);
    assert.deepEqual(stored.definition, visitsDefinition(`${10 + raced}s`), method);
  }

  // Once the other instance stops writing, the same PUT goes through.
  definitions.beforeWrite = undefined;
  const res = await send("PUT", "1h");
  assert.equal(res.status, 200, await res.text());
  assert.deepEqual((await inner.get("visits"))?.definition, visitsDefinition("1h"));
}

onBothStores(
  "a PUT or DELETE of a stream that loses every try to another instance's write is 409 definition_conflict and writes nothing",
  writesLosingEveryTryConflict,
);

/**
 * Instances that have not polled a lateness-raising PUT yet still judge by the old lateness: one
 * applies a batch after the write, and another, reading, calls a window final by the watermark
 * that batch moved. The stale batch keeps that final (the store sees the record's later version),
 * so the new lateness re-opens it not.
 */
async function staleBatchKeepsFinal(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const a = await visitsInstance(store, definitions);
  await a.streams.put("visits", visitsDefinition("10s"));
  const [b, c] = [
    await visitsInstance(store, definitions),
    await visitsInstance(store, definitions),
  ];
  assert.equal(await sendVisit(a.app, T0 + 10_000), 0);
  await a.streams.put("visits", visitsDefinition("1h"));
  // B and C still serve 10 s. B's batch moves the watermark to T0 + 2 m; C reads
  // [T0, T0 + 1 m) as final.
  assert.equal(b.streams.describe("visits")?.version, 1);
  assert.equal(await sendVisit(b.app, T0 + 120_000), 0);
  assert.equal(c.streams.describe("visits")?.version, 1);
  assert.deepEqual(await firstMinute(c.app), [1, true]);
  // Within the hour A allows, but in the window C called final: late.
  assert.equal(await sendVisit(a.app, T0 + 30_000), 1);
  assert.deepEqual(await firstMinute(a.app), [1, true]);
  // After what 10 s called final (T0 + 110 s): taken.
  assert.equal(await sendVisit(a.app, T0 + 115_000), 0);
  await b.streams.settled();
}

/**
 * README's limit of a lowered lateness (not closed yet): until an instance loads the new
 * definition, its batches take events by the previous, longer lateness, so one may add to a window
 * a read on the new definition called final.
 */
async function staleBatchAfterLoweredLateness(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const a = await visitsInstance(store, definitions);
  await a.streams.put("visits", visitsDefinition("1h"));
  const b = await visitsInstance(store, definitions);
  await a.streams.put("visits", visitsDefinition("10s"));
  assert.equal(await sendVisit(a.app, T0 + 10_000), 0);
  assert.equal(await sendVisit(a.app, T0 + 120_000), 0);
  assert.deepEqual(await firstMinute(a.app), [1, true]);
  // B still serves 1 h: it takes an event in the window A read as final.
  assert.equal(b.streams.describe("visits")?.version, 1);
  assert.equal(await sendVisit(b.app, T0 + 30_000), 0);
  assert.deepEqual(await firstMinute(a.app), [2, true]);
  await b.streams.settled();
}

onBothStores(
  "a batch of an instance not yet on a lateness-lowering PUT may add to a window a read on the new definition called final (README: not closed yet)",
  staleBatchAfterLoweredLateness,
);

onBothStores(
  "a batch applied by an instance not yet on a lateness-raising PUT re-opens no window a read called final",
  staleBatchKeepsFinal,
);

/**
 * An instance that has not polled a lateness-raising PUT yet, and applies no batch, reads after
 * a batch through an instance on the new definition moved the watermark: by its old lateness it
 * called final a window the new definition then took an event into. The write stores its version
 * with the stream's stats, and a read on an older version counts only `closedThrough` as final
 * (and loads the later definition).
 */
async function staleReadKeepsFinal(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const a = await visitsInstance(store, definitions);
  await a.streams.put("visits", visitsDefinition("10s"));
  const [b, c] = [
    await visitsInstance(store, definitions),
    await visitsInstance(store, definitions),
  ];
  assert.equal(await sendVisit(a.app, T0 + 10_000), 0);
  await a.streams.put("visits", visitsDefinition("1h"));
  // B and C still serve 10 s; a batch through A (the new definition) moves the watermark to
  // T0 + 2 m, past [T0, T0 + 1 m) plus 10 s.
  assert.equal(await sendVisit(a.app, T0 + 120_000), 0);
  assert.equal(c.streams.describe("visits")?.version, 1);
  // C, stale, judges by the stored definition's mark: not final (1 h has not passed).
  assert.deepEqual(await firstMinute(c.app), [1, false]);
  // Within the hour the stored definition allows: taken, as C's read said it could be.
  assert.equal(await sendVisit(a.app, T0 + 30_000), 0);
  assert.deepEqual(await firstMinute(a.app), [2, false]);
  // C's stats read asked for the later definition: once loaded, it reads as A does.
  await c.streams.settled();
  assert.equal(c.streams.describe("visits")?.version, 2);
  assert.deepEqual(await firstMinute(c.app), [2, false]);
  await b.streams.settled();
}

onBothStores(
  "a read on an instance not yet on a lateness-raising PUT calls final no window the new definition re-opens",
  staleReadKeepsFinal,
);

/**
 * A read resolves its stream, then reads the stats: an instance that loads a lateness-raising
 * definition between the two (its poll, or a version an apply noted) must not pair the old
 * stream's lateness with the new version. The read judges by the version of the stream it holds,
 * so the stats' later version counts only `closedThrough` as final, and the window the new
 * lateness still takes events into reads as not final.
 */
async function raceReadKeepsFinal(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const a = await visitsInstance(store, definitions);
  await a.streams.put("visits", visitsDefinition("10s"));
  const c = await visitsInstance(store, definitions);
  assert.equal(await sendVisit(a.app, T0 + 10_000), 0);
  // The stream a read on C resolved, before C loads the next version.
  const held = c.streams.get("visits")!;
  assert.equal(held.latenessMs, 10_000);
  await a.streams.put("visits", visitsDefinition("1h"));
  // The watermark at T0 + 2 m, past [T0, T0 + 1 m) plus 10 s.
  assert.equal(await sendVisit(a.app, T0 + 120_000), 0);
  await c.streams.poll();
  assert.equal(c.streams.describe("visits")?.version, 2);
  // The read goes on with the stream it holds: its stats come after C serves version 2.
  const read = () =>
    listWindows(held, held.counters[0], { store: c.streams.wrap(store), nowMs: T0 }, {
      fromMs: T0,
      toMs: T0 + 1,
    });
  assert.deepEqual((await read()).map((row) => [row.value, row.final]), [[1, false]]);
  // Within the hour the stored definition allows: taken, as the read said it could be.
  assert.equal(await sendVisit(a.app, T0 + 30_000), 0);
  assert.deepEqual((await read()).map((row) => [row.value, row.final]), [[2, false]]);
  assert.deepEqual(await firstMinute(c.app), [2, false]);
}

onBothStores(
  "a read holding the stream a lateness-raising PUT replaced, whose stats come after the instance loaded the PUT, calls final no window the new definition re-opens",
  raceReadKeepsFinal,
);

/** POSTs a sweep to `app`; returns the windows it closed, as `counter start`. */
async function sweepVia(app: App): Promise<string[]> {
  const res = await app.request("/v1/admin/sweep", { method: "POST" });
  assert.equal(res.status, 200, await res.clone().text());
  const { closed } = await res.json() as { closed: Array<{ counter: string; start: number }> };
  return closed.map((window) => `${window.counter} ${window.start}`);
}

/**
 * An instance that has not polled a lateness-raising PUT yet sweeps after a batch through an
 * instance on the new definition moved the watermark: by its old lateness it would close (and log
 * `window.closed` for) a window the new definition still takes events into, and those events
 * would then be late. The close carries the version the instance serves and closes nothing when
 * the stats say a later definition kept final (and the later one is loaded).
 */
async function staleSweepKeepsOpen(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const a = await visitsInstance(store, definitions);
  await a.streams.put("visits", visitsDefinition("10s"));
  const c = await visitsInstance(store, definitions);
  assert.equal(await sendVisit(a.app, T0 + 10_000), 0);
  await a.streams.put("visits", visitsDefinition("1h"));
  // The watermark at T0 + 2 m, past [T0, T0 + 1 m) plus 10 s.
  assert.equal(await sendVisit(a.app, T0 + 120_000), 0);
  // C still serves 10 s: its sweep closes nothing the stored definition takes events into.
  assert.equal(c.streams.describe("visits")?.version, 1);
  assert.deepEqual(await sweepVia(c.app), []);
  // Within the hour the stored definition allows: taken.
  assert.equal(await sendVisit(a.app, T0 + 30_000), 0);
  assert.deepEqual(await firstMinute(a.app), [2, false]);
  // C's close asked for the later definition: once loaded, it sweeps as A does (nothing due).
  await c.streams.settled();
  assert.equal(c.streams.describe("visits")?.version, 2);
  assert.deepEqual(await sweepVia(c.app), []);
  assert.deepEqual(await sweepVia(a.app), []);
  assert.deepEqual(await firstMinute(c.app), [2, false]);
}

onBothStores(
  "a sweep on an instance not yet on a lateness-raising PUT closes no window the new definition takes events into",
  staleSweepKeepsOpen,
);

/**
 * A sweep holds the stream it began with: a poll that loads a lateness-raising PUT while it runs
 * must not let its close go by the old lateness as the version served now (which the store would
 * take). The sweep's close carries the version of the stream it holds, and closes nothing.
 */
async function sweepCarriesHeldVersion(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const a = await visitsInstance(store, definitions);
  await a.streams.put("visits", visitsDefinition("10s"));
  const b = await visitsInstance(store, definitions);
  // The watermark at T0 + 10 s: 10 s of lateness calls nothing final yet.
  assert.equal(await sendVisit(a.app, T0 + 10_000), 0);
  const held = a.streams.get("visits")!;
  // Before A's first close reaches the store: the PUT of 1 h through B, a batch through B moving
  // the watermark to T0 + 4 m, and A's poll loading the PUT.
  let raised = false;
  const racing = new Proxy(a.streams.wrap(store), {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (property !== "closeWindows") {
        return typeof value === "function" ? value.bind(target) : value;
      }
      return async (...args: Parameters<Store["closeWindows"]>) => {
        if (!raised) {
          raised = true;
          await b.streams.put("visits", visitsDefinition("1h"));
          assert.equal(await sendVisit(b.app, T0 + 240_000), 0);
          await a.streams.poll();
          assert.equal(a.streams.describe("visits")?.version, 2);
        }
        return await target.closeWindows(...args);
      };
    },
  });
  const report = await sweepOnce([held], racing);
  assert.ok(raised);
  assert.deepEqual(report.failed, []);
  // By 10 s, windows up to T0 + 3 m would be due; the stored definition takes events into them.
  assert.deepEqual(report.closed, []);
  assert.equal(await sendVisit(b.app, T0 + 30_000), 0);
  assert.deepEqual(await firstMinute(a.app), [2, false]);
}

onBothStores(
  "a sweep whose instance loads a lateness-raising PUT while it runs closes nothing by the stream it held",
  sweepCarriesHeldVersion,
);

/**
 * The stats a read of windows or sessions takes with its values (`ReadOptions.stats`, one store
 * call) through an instance not yet on a lateness-raising PUT carry the later version as `stats()`
 * does (a read judges by it, see `closedBefore`), and the later definition is loaded.
 */
async function staleStatsWithValues(store: Store, definitions: DefinitionStore) {
  const a = await visitsInstance(store, definitions);
  await a.streams.put("visits", visitsDefinition("10s"));
  const [b, c] = [
    await visitsInstance(store, definitions),
    await visitsInstance(store, definitions),
  ];
  assert.equal(await sendVisit(a.app, T0_REDEPLOY + 10_000), 0);
  const meta = b.streams.get("visits")!.counterMetas[0];
  const range = { fromMs: T0_REDEPLOY, toMs: T0_REDEPLOY + 60_000 };
  const window = [{ start: T0_REDEPLOY, panes: [T0_REDEPLOY] }];
  const reads = {
    windows: async (streams: StreamRegistry) =>
      (await streams.wrap(store).readWindows("visits", meta, window, { stats: true })).stats,
    sessions: async (streams: StreamRegistry) =>
      (await streams.wrap(store).readSessions(
        "visits",
        { ...meta, session: { gapMs: 1_000, maxSessions: 10 } },
        { ...range, stats: true },
      )).stats,
  };
  // No write kept final yet: no version in the stats.
  assert.equal((await reads.windows(b.streams))?.definitionVersion, undefined);
  assert.equal((await reads.sessions(c.streams))?.definitionVersion, undefined);
  await a.streams.put("visits", visitsDefinition("1h"));
  assert.deepEqual(await reads.windows(b.streams), {
    watermark: T0_REDEPLOY + 10_000,
    closedThrough: T0_REDEPLOY,
    definitionVersion: 2,
  });
  assert.equal((await reads.sessions(c.streams))?.definitionVersion, 2);
  for (const instance of [b, c]) {
    await instance.streams.settled();
    assert.equal(instance.streams.describe("visits")?.version, 2);
  }
  await a.streams.settled();
}

onBothStores(
  "a read of windows or sessions with its stats on an instance not yet on a lateness-raising PUT carry the later version and load the later definition",
  staleStatsWithValues,
);

/**
 * A lateness-raising PUT keeps final what the lateness before called final, so reads call it final
 * at once: the next sweep closes it (logs `window.closed`, fires alerts on it) then too, not once
 * the watermark is past its end by the new lateness.
 */
async function raisedPutClosesKeptFinal(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const a = await visitsInstance(store, definitions);
  await a.streams.put("visits", visitsDefinition("10s"));
  assert.equal(await sendVisit(a.app, T0 + 10_000), 0);
  // The watermark at T0 + 2 m: 10 s of lateness calls [T0, T0 + 1 m) final; no sweep closed it.
  assert.equal(await sendVisit(a.app, T0 + 120_000), 0);
  await a.streams.put("visits", visitsDefinition("1h"));
  assert.deepEqual(await firstMinute(a.app), [1, true]);
  assert.deepEqual(await sweepVia(a.app), [`perMinute ${new Date(T0).toISOString()}`]);
  assert.deepEqual(await sweepVia(a.app), []);
  const closes = (await store.readLog(generationKey("visits", 1), null, 100))
    .flatMap((entry) => entry.record.type === "window.closed" ? [entry.record.start] : []);
  assert.deepEqual(closes, [T0]);
  assert.deepEqual(await firstMinute(a.app), [1, true]);
}

onBothStores(
  "a lateness-raising PUT's next sweep closes the window reads call final",
  raisedPutClosesKeptFinal,
);

/**
 * Deployment B raised a config stream's lateness (its record, version 2, kept final) and was then
 * withdrawn (a canary aborted) while an instance of A, still on its file's 10 s, runs on: its
 * close by its file's version is refused, so without more no instance would close the stream.
 * Once it loaded B's record it closes by the later-closing terms of both (1 h) as of B's version,
 * so the store takes the close, and closes no window 1 h still takes events into; once it records
 * its own file again, by its own.
 */
async function withdrawnDeploymentStillCloses(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const deploy = async (lateness: string) => {
    const visits = {
      ...visitsDefinition(lateness),
      time: { field: "t", lateness, maxFuture: "3h" },
    };
    const streams = new StreamRegistry(compileConfig({ streams: { visits } }), {
      definitions,
      data: store,
      now: () => T0,
    });
    await streams.registerConfig();
    const app = createApp({ streams, store, keys: await KeyRing.parse(""), now: () => T0 });
    return { streams, app };
  };
  const a = await deploy("10s");
  const b = await deploy("1h");
  assert.equal(b.streams.describe("visits")?.version, 2);
  // Through B: [T0, T0 + 1 m) and [T0 + 30 m, T0 + 31 m); the watermark at T0 + 30 m.
  assert.equal(await sendVisit(b.app, T0 + 10_000), 0);
  assert.equal(await sendVisit(b.app, T0 + 1_800_000), 0);
  // B is withdrawn. A's 10 s would close [T0, T0 + 1 m): refused, and B's record loaded.
  assert.deepEqual(await sweepVia(a.app), []);
  await a.streams.settled();
  assert.equal(a.streams.describe("visits")?.version, 2);
  assert.equal(a.streams.get("visits")?.latenessMs, 10_000);
  // By 1 h nothing is due yet.
  assert.deepEqual(await sweepVia(a.app), []);
  // A's own events move the watermark to T0 + 2 h. Their batches carry A's version 1, older than
  // B's 2, so the apply keeps final up to the watermark less A's 10 s (closedThrough
  // T0 + 2 h - 10 s): no definition takes events into [T0 + 90 m, T0 + 91 m) any more, and the
  // close, whose cutoff is the later of the watermark less 1 h and closedThrough, closes it with
  // the two windows 1 h calls due.
  assert.equal(await sendVisit(a.app, T0 + 5_400_000), 0);
  assert.equal(await sendVisit(a.app, T0 + 7_200_000), 0);
  const window = (start: number) => `perMinute ${new Date(start).toISOString()}`;
  assert.deepEqual(await sweepVia(a.app), [
    window(T0),
    window(T0 + 1_800_000),
    window(T0 + 5_400_000),
  ]);
  assert.deepEqual(await sweepVia(a.app), []);
  // A records its file again (version 3, later than B's): it closes by its own 10 s. Its batches
  // of version 3 keep nothing final, so only its own lateness calls [T0 + 2 h, T0 + 2 h + 1 m)
  // due (B's 1 h, as of version 2, would not).
  a.streams.unrecord("visits");
  await a.streams.recordConfigStream("visits");
  assert.equal(a.streams.get("visits")?.definitionVersion, 3);
  assert.equal(await sendVisit(a.app, T0 + 7_500_000), 0);
  assert.deepEqual(await sweepVia(a.app), [window(T0 + 7_200_000)]);
}

onBothStores(
  "an instance of a config deployment whose lateness-raising successor was withdrawn still closes, by the longer lateness",
  withdrawnDeploymentStillCloses,
);

/**
 * The idle of the close terms, not the file's: A's file has `idle: "1m"`, B's record none (event
 * time only). Once A closes by B's record's version, a sweep with the clock moved on and no events
 * must not raise the watermark to the clock less A's minute: that would call due, and close,
 * windows B still takes events into. Closes nothing and leaves the watermark where it was.
 */
async function withdrawnDeploymentIdleTerms(
  store: Store,
  definitions: DefinitionStore,
  clock: { now: number },
) {
  const T0 = T0_REDEPLOY;
  const deploy = async (time: Record<string, unknown>) => {
    const visits = { ...visitsDefinition("1h"), time: { field: "t", maxFuture: "3h", ...time } };
    const streams = new StreamRegistry(compileConfig({ streams: { visits } }), {
      definitions,
      data: store,
      now: () => clock.now,
    });
    await streams.registerConfig();
    const app = createApp({ streams, store, keys: await KeyRing.parse(""), now: () => clock.now });
    return { streams, app };
  };
  const a = await deploy({ lateness: "10s", idle: "1m" });
  const b = await deploy({ lateness: "1h" });
  // Through B: [T0, T0 + 1 m) and [T0 + 30 m, T0 + 31 m); the watermark at T0 + 30 m.
  assert.equal(await sendVisit(b.app, T0 + 10_000), 0);
  assert.equal(await sendVisit(b.app, T0 + 1_800_000), 0);
  // B is withdrawn: A's close by its file's version is refused, and B's record loaded.
  assert.deepEqual(await sweepVia(a.app), []);
  await a.streams.settled();
  assert.deepEqual(a.streams.get("visits")?.closeTerms, {
    latenessMs: 3_600_000,
    idleMs: null,
    definitionVersion: 2,
  });
  // Three hours on, no events: A's 1 m idle would raise the watermark to T0 + 3 h - 1 m and close
  // both windows, into which B (event time only, 1 h) still takes events.
  clock.now = T0 + 3 * 3_600_000;
  assert.deepEqual(await sweepVia(a.app), []);
  assert.equal((await a.streams.wrap(store).stats("visits", [])).watermark, T0 + 1_800_000);
  assert.equal(await sendVisit(b.app, T0 + 20_000), 0);
}

onBothStores(
  "an instance of a config deployment whose successor was withdrawn closes by the longer idle (none), not its file's",
  withdrawnDeploymentIdleTerms,
);

/** The terms the sweep closes by once another deployment's file replaced the record. */
Deno.test("a config stream whose record another deployment's file replaced closes by the longer lateness and idle of both, as of that record's version", async () => {
  const definitions = new MemoryDefinitionStore();
  const file = (time: Record<string, unknown>) =>
    compileConfig({ streams: { visits: { ...visitsDefinition("1m"), time } } });
  const deploy = async (time: Record<string, unknown>) => {
    const streams = new StreamRegistry(file(time), { definitions });
    await streams.registerConfig();
    return streams;
  };
  const a = await deploy({ lateness: "1m", idle: "5m" });
  assert.equal(a.get("visits")?.closeTerms, undefined);
  await deploy({ lateness: "30s", idle: "10m" });
  await a.poll();
  assert.deepEqual(a.get("visits")?.closeTerms, {
    latenessMs: 60_000,
    idleMs: 600_000,
    definitionVersion: 2,
  });
  // Event time only (no idle) is the longest.
  await deploy({ field: "t", lateness: "2m" });
  await a.poll();
  assert.deepEqual(a.get("visits")?.closeTerms, {
    latenessMs: 120_000,
    idleMs: null,
    definitionVersion: 3,
  });
  // A record this release cannot compile (a newer release's, with an option it does not know):
  // its lateness and idle read from its time alone, with compile's defaults.
  const stored = (await definitions.get("visits"))!;
  const newer = (time: Record<string, unknown>) => ({
    ...stored,
    definition: { ...visitsDefinition("1m"), time: { ...time, pace: "fast" } },
  });
  const logs = await collectingLogs(async (records) => {
    const terms = async (time: Record<string, unknown>, expected: number) => {
      await definitions.write("visits", newer(time), expected);
      await a.poll();
      await a.poll();
      return a.get("visits")?.closeTerms;
    };
    assert.deepEqual(await terms({ lateness: "3m", idle: "7m" }, 3), {
      latenessMs: 180_000,
      idleMs: 420_000,
      definitionVersion: 4,
    });
    // Receive time and no idle: 0, as compiled; the file's 5 m is the longer.
    assert.deepEqual(await terms({ lateness: "2m" }, 4), {
      latenessMs: 120_000,
      idleMs: 300_000,
      definitionVersion: 5,
    });
    // An event time field and no idle: none, the longest; no lateness: 30 s, as compiled.
    assert.deepEqual(await terms({ field: "t" }, 5), {
      latenessMs: 60_000,
      idleMs: null,
      definitionVersion: 6,
    });
    // Nor can it read the lateness: none, closes by its own version (refused while that record
    // kept final).
    assert.equal(await terms({ lateness: "soon" }, 6), undefined);
    return records.filter((record) => record.level === "error" || record.level === "warning")
      .map((record) => `${record.level} ${messageOf(record)}`);
  });
  // Only the unreadable time is logged: a record that merely uses an unknown option is not.
  assert.equal(logs.length, 1, logs.join("\n"));
  assert.match(
    logs[0],
    /^error Cannot read the lateness and idle of config stream 'visits' version 7, .* until it restarts or the record moves/,
  );
  await definitions.write("visits", stored, 7);
  await a.poll();
  assert.equal(a.get("visits")?.closeTerms?.definitionVersion, 8);
  // Deleted by force: no other deployment's terms (it records its file again, its own).
  await definitions.write("visits", { ...stored, deleted: true }, 8);
  await a.poll();
  assert.equal(a.get("visits")?.closeTerms, undefined);
});

/**
 * A config stream not recorded at startup is recorded by its first close (see `#checkedKey`); a
 * redeploy raising the lateness that comes between that record and the close's script (here: in
 * the store's close, before it runs) must not let the close go by the file's old lateness, which
 * calls due windows the new file still takes events into. The close carries the version recorded.
 */
async function firstCloseAfterRecordChecksVersion(store: Store, definitions: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const deploy = async (lateness: string, options: { record?: boolean; store?: Store } = {}) => {
    const streams = new StreamRegistry(
      compileConfig({ streams: { visits: visitsDefinition(lateness) } }),
      { definitions, data: store, now: () => T0 },
    );
    if (options.record !== false) await streams.registerConfig();
    const app = createApp({
      streams,
      store: options.store ?? store,
      keys: await KeyRing.parse(""),
      now: () => T0,
    });
    return { streams, app };
  };
  const a = await deploy("10s");
  assert.equal(await sendVisit(a.app, T0 + 10_000), 0);
  assert.equal(await sendVisit(a.app, T0 + 120_000), 0);
  // The redeploy with 1 h, and a batch through it moving the watermark to T0 + 4 m, once C's
  // first close has recorded C's file (the record A made, as it is) and reaches the store.
  let raised: Awaited<ReturnType<typeof deploy>> | undefined;
  const racing = new Proxy(store, {
    get(target, property, receiver) {
      if (property !== "closeWindows") return Reflect.get(target, property, receiver);
      return async (...args: Parameters<Store["closeWindows"]>) => {
        if (raised === undefined) {
          raised = await deploy("1h");
          assert.equal(await sendVisit(raised.app, T0 + 240_000), 0);
        }
        return await target.closeWindows(...args);
      };
    },
  });
  const c = await deploy("10s", { record: false, store: racing });
  // By 10 s, windows up to T0 + 3 m would be due; the stored definition takes events into them.
  assert.deepEqual(await sweepVia(c.app), []);
  assert.ok(raised);
  assert.equal(await sendVisit(raised.app, T0 + 150_000), 0);
  assert.deepEqual(await sweepVia(raised.app), [`perMinute ${new Date(T0).toISOString()}`]);
}

onBothStores(
  "a config stream's first close, which records it, closes nothing a redeploy made in between takes events into",
  firstCloseAfterRecordChecksVersion,
);

/**
 * A lateness-raising PUT refused because another write came first (here with `If-Match`, so the
 * retry is refused too) keeps nothing final: a definition store that holds the data raises
 * `closedThrough` only in the write it makes.
 */
async function refusedPutKeepsNothing(store: Store, inner: DefinitionStore) {
  const T0 = T0_REDEPLOY;
  const definitions = new RacingDefinitions(inner);
  const streams = new StreamRegistry(compileConfig({ streams: {} }), {
    definitions,
    data: store,
    now: () => T0,
  });
  await streams.put("visits", visitsDefinition("10s"));
  // The watermark at T0 + 2 m: 10 s of lateness calls final what ended by T0 + 110 s.
  await ingestItems(streams.get("visits")!, [{ ok: true, value: { t: T0 + 120_000 } }], {
    store: streams.wrap(store),
    nowMs: T0,
  });
  const key = generationKey("visits", 1);
  const before = (await store.stats(key, [])).closedThrough;
  definitions.beforeWrite = async () => {
    const stored = (await inner.get("visits"))!;
    await inner.write("visits", { ...stored, definition: visitsDefinition("20s") }, stored.version);
  };
  await assert.rejects(
    streams.put("visits", visitsDefinition("1h"), { versions: [1] }),
    (error: StreamDefinitionError) => error.code === "precondition_failed",
  );
  assert.equal((await inner.get("visits"))?.version, 2);
  assert.equal((await store.stats(key, [])).closedThrough, before);
}

onBothStores(
  "a lateness-raising PUT refused by a conflicting write leaves closedThrough as it was",
  refusedPutKeepsNothing,
);

/**
 * Two instances on one store: `held` serves the stream as it was (its poll has not run since the
 * other deleted it, or deleted and created it again), and sweeps. `change: "none"` is the control:
 * nothing deleted, the same sweep closes minute 0. Re-created, the stream has 10 minutes of
 * lateness and the other instance ingests the same events into it: none of its windows is due yet.
 * With `alerts`, the stream has an alert, so each close is first a peek (see `closeOnce`).
 */
async function sweepAfterDeleteElsewhere(
  store: Store,
  definitions: DefinitionStore,
  clock: { now: number },
  options: { change: "none" | "delete" | "recreate"; alerts?: boolean },
) {
  const T0 = clock.now;
  const registry = () =>
    new StreamRegistry(compileConfig({ streams: {} }), { definitions, data: store, now: () => T0 });
  const other = registry();
  const held = registry();
  const definition = {
    time: { field: "t", lateness: "0s" },
    counters: { perMinute: { window: { tumbling: "1m" }, aggregate: "count" } },
    ...(options.alerts
      ? { alerts: [{ name: "busy", counter: "perMinute", when: "value >= 100.0" }] }
      : {}),
  };
  await other.put("visits", definition);
  // The store's closes, by key (the store itself, its client real).
  const closes: string[] = [];
  const counting = new Proxy(store, {
    get(target, property) {
      const value = Reflect.get(target, property, target);
      if (typeof value !== "function") return value;
      if (property !== "closeWindows") return value.bind(target);
      return (key: string, ...rest: unknown[]) => {
        closes.push(key);
        return value.call(target, key, ...rest);
      };
    },
  });
  const wrapped = held.wrap(counting);
  const stream = (await held.find("visits"))!;
  // Minute 0 is due to close once an event of minute 5 is in.
  const items = [T0, T0 + 5 * 60_000].map((t) => ({ ok: true as const, value: { t } }));
  await ingestItems(stream, items, { store: wrapped, nowMs: T0 + 5 * 60_000 });
  if (options.change !== "none") await other.remove("visits");
  if (options.change === "recreate") {
    await other.put("visits", { ...definition, time: { field: "t", lateness: "10m" } });
    await ingestItems(other.get("visits")!, items, {
      store: other.wrap(store),
      nowMs: T0 + 5 * 60_000,
    });
  }
  // `held` has not heard of it: it still serves the deleted incarnation.
  assert.equal(held.get("visits"), stream);
  const oldKey = generationKey("visits", held.generationOf("visits"));
  clock.now = T0 + 6 * 60_000;
  const { report, warnings } = await collectingLogs(async (records) => ({
    report: await sweepOnce(held.values(), wrapped),
    warnings: records.filter((r) => r.level === "warning").map(messageOf),
  }), { level: "warning" });
  assert.deepEqual(report.failed, []);
  // Deleted (or created again), not missing: the refused close says nothing of a missing record.
  assert.deepEqual(warnings.filter((line) => line.includes("is missing")), []);
  const logged = await store.readLog(oldKey, null, 10);
  if (options.change === "none") {
    // Minute 0 was due: what the deleted incarnation's sweep below does not close.
    const minute0 = Math.floor(T0 / 60_000) * 60_000;
    assert.deepEqual(
      report.closed.map((window) => `${window.stream} ${window.counter} ${window.start}`),
      [`visits perMinute ${minute0}`],
    );
    assert.notDeepEqual(logged, []);
    return;
  }
  assert.deepEqual(report.closed, [], "a deleted stream's window closed after the DELETE");
  // Nothing was logged for webhooks either.
  assert.deepEqual(logged, []);
  if (options.change === "recreate") {
    // A sweep's later call closes some of the counters, in a list of its own: the same.
    const some = await wrapped.closeWindows("visits", [...stream.counterMetas], { latenessMs: 0 });
    assert.deepEqual([...some], []);
    // Nor was the new incarnation's minute 0 closed by the deleted one's lateness.
    const newKey = generationKey("visits", other.generationOf("visits"));
    assert.notEqual(newKey, oldKey);
    assert.deepEqual(await store.readLog(newKey, null, 10), [], "closed by the old definition");
  }
  // The refused close told `held` to read the record again: the next sweep closes nothing of the
  // deleted incarnation, and runs no close of it either.
  assert.ok(closes.includes(oldKey));
  closes.length = 0;
  clock.now = T0 + 7 * 60_000;
  assert.deepEqual((await sweepOnce(held.values(), wrapped)).closed, []);
  assert.deepEqual(closes.filter((key) => key === oldKey), [], "the refused close ran again");
}

onBothStores(
  "control: a sweep on an instance serving a stream nobody deleted closes its due window",
  (store, definitions, clock) =>
    sweepAfterDeleteElsewhere(store, definitions, clock, { change: "none" }),
);

for (const change of ["delete", "recreate"] as const) {
  for (const alerts of [false, true]) {
    onBothStores(
      `a sweep on an instance that has not heard of its stream's deletion${
        change === "recreate" ? " and re-creation" : ""
      } elsewhere closes none of the deleted stream's windows (README: its windows never close)${
        change === "recreate" ? " nor any of the new one's by the old definition" : ""
      }${alerts ? ", with an alert (each close peeks first)" : ""}`,
      (store, definitions, clock) =>
        sweepAfterDeleteElsewhere(store, definitions, clock, { change, alerts }),
    );
  }
}

/** A stream of one counter whose alert `busy` fires on every window with an event. */
const BUSY_VISITS = {
  counters: { perMinute: { window: { tumbling: "1m" }, aggregate: "count" } },
  alerts: [{ name: "busy", counter: "perMinute", when: "value >= 1.0" }],
};

/** A firing of {@linkcode BUSY_VISITS}'s alert, of the window starting at `startMs`. */
function busyFiring(startMs: number, group: string) {
  return {
    alert: "busy",
    counter: "perMinute",
    start: startMs,
    end: startMs + 60_000,
    group,
    value: 1,
    ttlMs: 120_000,
  };
}

for (const change of ["delete", "recreate"] as const) {
  onBothStores(
    `an alert firing refused for an incarnation ${
      change === "delete" ? "deleted" : "deleted and created again"
    } elsewhere says gone and makes the instance read the record again, as a refused close does`,
    async (store, definitions, clock) => {
      const registry = () =>
        new StreamRegistry(compileConfig({ streams: {} }), {
          definitions,
          data: store,
          now: () => clock.now,
        });
      const other = registry();
      const held = registry();
      await other.put("visits", BUSY_VISITS);
      const stream = (await held.find("visits"))!;
      const wrapped = held.wrap(store);
      const fire = (group: string) =>
        wrapped.fireAlerts("visits", [busyFiring(clock.now, group)], {
          counters: stream.counterMetas,
        });
      // The control: the incarnation `held` serves fires, and is not gone.
      const fired = await fire('["DE"]');
      assert.deepEqual([fired.map((f) => f.group), fired.gone], [['["DE"]'], undefined]);
      await other.remove("visits");
      if (change === "recreate") await other.put("visits", BUSY_VISITS);
      // `held` has not heard of it: it still serves the deleted incarnation.
      assert.equal(held.get("visits"), stream);
      const refused = await fire('["FR"]');
      assert.deepEqual([refused.length, refused.gone], [0, true]);
      // Read again at once, not at the next poll.
      assert.notEqual(held.get("visits"), stream, "still serves the incarnation gone");
      assert.equal(held.get("visits")?.name, change === "recreate" ? "visits" : undefined);
    },
  );
}

/** The index step of the last write of `signups` lost: the index says version 1. */
function loseIndexStep(fixture: RedisFixture) {
  const index = "es:{@definitions}:index";
  return withDirect(fixture.redisUrl, (send) => send("HSET", index, "signups", "1"));
}

redisTest(
  "a DELETE whose index step was lost (answered 503, or its process killed) is seen by every instance's poll once the DELETE is sent again and answers 404",
  async (fixture) => {
    const writer = await instance(fixture);
    const reader = await instance(fixture);
    assert.equal((await put(writer, "signups", SIGNUPS)).status, 201);
    await reader.streams.poll();
    assert.ok(reader.streams.get("signups"));
    assert.equal(
      (await writer.app.request("/v1/streams/signups", { method: "DELETE" })).status,
      204,
    );
    // The record is deleted (version 2), but the index step after it did not run: the index still
    // says version 1, as the reader serves.
    await loseIndexStep(fixture);
    await reader.streams.poll();
    assert.ok(reader.streams.get("signups"), "the lost index step hides the delete");
    // The admin sends the DELETE again: the stream is gone already, and the index follows.
    const again = await writer.app.request("/v1/streams/signups", { method: "DELETE" });
    assert.equal(again.status, 404);
    await reader.streams.poll();
    assert.equal(reader.streams.get("signups"), undefined);
  },
);

redisTest(
  "a PUT whose index step was lost is seen by every instance's poll once the same PUT is sent again",
  async (fixture) => {
    const writer = await instance(fixture);
    const reader = await instance(fixture);
    assert.equal((await put(writer, "signups", SIGNUPS)).status, 201);
    await reader.streams.poll();
    assert.equal(reader.streams.describe("signups")?.version, 1);
    const grown = {
      counters: {
        ...SIGNUPS.counters,
        perHour: { window: { tumbling: "1h" }, aggregate: "count" },
      },
    };
    assert.equal((await put(writer, "signups", grown)).status, 200);
    await loseIndexStep(fixture);
    await reader.streams.poll();
    assert.equal(reader.streams.describe("signups")?.version, 1, "the lost index step hides it");
    // Sent again: the definition stored, so no change (200, the same version), and the index
    // follows.
    const again = await put(writer, "signups", grown);
    assert.equal(again.status, 200);
    assert.equal(again.headers.get("ETag"), '"2"');
    await reader.streams.poll();
    assert.equal(reader.streams.describe("signups")?.version, 2);
  },
);

redisTest(
  "a DELETE with If-Match whose index step was lost repairs the index when sent again, though its precondition now fails (412)",
  async (fixture) => {
    const writer = await instance(fixture);
    const reader = await instance(fixture);
    assert.equal((await put(writer, "signups", SIGNUPS)).status, 201);
    await reader.streams.poll();
    const remove = () =>
      writer.app.request("/v1/streams/signups", {
        method: "DELETE",
        headers: { "If-Match": '"1"' },
      });
    assert.equal((await remove()).status, 204);
    await loseIndexStep(fixture);
    await reader.streams.poll();
    assert.ok(reader.streams.get("signups"), "the lost index step hides the delete");
    // Sent again as it was: the stream no longer exists, so If-Match fails; the index follows.
    assert.equal((await remove()).status, 412);
    await reader.streams.poll();
    assert.equal(reader.streams.get("signups"), undefined);
  },
);

redisTest(
  "a PUT with If-Match whose index step was lost repairs the index when sent again, though its precondition now fails (412)",
  async (fixture) => {
    const writer = await instance(fixture);
    const reader = await instance(fixture);
    assert.equal((await put(writer, "signups", SIGNUPS)).status, 201);
    await reader.streams.poll();
    const grown = {
      counters: {
        ...SIGNUPS.counters,
        perHour: { window: { tumbling: "1h" }, aggregate: "count" },
      },
    };
    const change = () =>
      writer.app.request("/v1/streams/signups", {
        method: "PUT",
        headers: { "Content-Type": "application/json", "If-Match": '"1"' },
        body: JSON.stringify(grown),
      });
    assert.equal((await change()).status, 200);
    await loseIndexStep(fixture);
    await reader.streams.poll();
    assert.equal(reader.streams.describe("signups")?.version, 1, "the lost index step hides it");
    // Sent again as it was: the stream is at version 2 now, so If-Match fails; the index follows.
    const again = await change();
    assert.equal(again.status, 412);
    await reader.streams.poll();
    assert.equal(reader.streams.describe("signups")?.version, 2);
  },
);

/** A Redis definition store whose index step fails with `error` (out of reach), once `down`. */
class ReindexDown extends RedisDefinitionStore {
  down = false;
  error: Error = new StoreUnavailableError("index down");
  override reindex(name: string, record: StoredDefinition): Promise<void> {
    if (this.down) return Promise.reject(this.error);
    return super.reindex(name, record);
  }
}

redisTest(
  "a PUT sent again whose index step the store refuses as too large answers as usual (the store is not down: no 503)",
  async (fixture) => {
    let definitions: ReindexDown | undefined;
    const writer = await instance(fixture, {
      definitions: (redis) => (definitions = new ReindexDown(redis)),
    });
    assert.equal((await put(writer, "signups", SIGNUPS)).status, 201);
    definitions!.down = true;
    definitions!.error = new StoreRequestTooLargeError("ERR max request size exceeded");
    const again = await put(writer, "signups", SIGNUPS);
    assert.equal(again.status, 200, await again.text());
  },
);

redisTest(
  "a PUT or DELETE sent again to repair the index answers 503 with Retry-After while the index step cannot reach the store, not its usual answer",
  async (fixture) => {
    let definitions: ReindexDown | undefined;
    const writer = await instance(fixture, {
      definitions: (redis) => (definitions = new ReindexDown(redis)),
    });
    assert.equal((await put(writer, "signups", SIGNUPS)).status, 201);
    definitions!.down = true;
    const unavailable = async (response: Response, what: string) => {
      assert.equal(response.status, 503, what);
      assert.ok(response.headers.get("Retry-After"), what);
      assert.equal((await response.json()).error.code, "store_unavailable", what);
    };
    // The definition stored, sent again (else 200).
    await unavailable(await put(writer, "signups", SIGNUPS), "same PUT");
    // With an If-Match that no longer holds (else 412).
    await unavailable(
      await writer.app.request("/v1/streams/signups", {
        method: "PUT",
        headers: { "Content-Type": "application/json", "If-Match": '"7"' },
        body: JSON.stringify(SIGNUPS),
      }),
      "PUT with a failing If-Match",
    );
    definitions!.down = false;
    assert.equal(
      (await writer.app.request("/v1/streams/signups", { method: "DELETE" })).status,
      204,
    );
    definitions!.down = true;
    // A DELETE of the stream deleted already (else 404).
    await unavailable(
      await writer.app.request("/v1/streams/signups", { method: "DELETE" }),
      "DELETE again",
    );
    definitions!.down = false;
    assert.equal(
      (await writer.app.request("/v1/streams/signups", { method: "DELETE" })).status,
      404,
    );
  },
);

Deno.test("StreamRegistry.poll() runs one poll at a time, and polls called while one waits to start share it: a webhook sweep's and the timer's never overlap, and each reads after it was called", async () => {
  const inner = new MemoryDefinitionStore();
  let reads = 0;
  let reading = 0;
  let most = 0;
  const gates: Array<() => void> = [];
  const definitions = new CountingDefinitions({
    get holdsData() {
      return inner.holdsData;
    },
    get: (name: string) => inner.get(name),
    versions: () => inner.versions(),
    // Reads, then answers once the test lets it: a write meanwhile is not in the answer.
    versionsSince: async (mark?: string) => {
      reads += 1;
      reading += 1;
      most = Math.max(most, reading);
      const read = await inner.versionsSince(mark);
      await new Promise<void>((resolve) => gates.push(resolve));
      reading -= 1;
      return read;
    },
    write: (...args: Parameters<DefinitionStore["write"]>) => inner.write(...args),
  } as unknown as DefinitionStore);
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions });
  const elsewhere = new StreamRegistry(compileConfig({ streams: {} }), { definitions: inner });
  const reached = async () => {
    for (let waited = 0; gates.length === 0; waited++) {
      assert.ok(waited < 2_000, "no read of the index started");
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    // The others wait: one read of the index at a time.
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.equal(gates.length, 1);
  };
  // The timer's poll runs; a sweep's and another called meanwhile wait for it, together.
  const running = streams.poll();
  await reached();
  const waiting = [streams.poll(), streams.poll()];
  let settled = 0;
  for (const poll of waiting) poll.then(() => settled += 1);
  gates.shift()!();
  await running;
  // Their read runs; a stream created now is not in it, so a poll called now reads again.
  await reached();
  await elsewhere.put("orders", {
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  });
  const after = streams.poll();
  gates.shift()!();
  // The next read, the last poll's, runs once both waiting polls are answered by the one before.
  await reached();
  assert.equal(settled, 2, "the polls called while one waited to start did not share a read");
  gates.shift()!();
  await after;
  assert.ok(streams.has("orders"));
  assert.deepEqual([reads, most], [3, 1]);
});

onBothStores(
  "an alert evaluated by a deleted and re-created stream's old definition fires into neither incarnation, as its close closes nothing",
  async (store, definitions, clock) => {
    const registry = new StreamRegistry(compileConfig({ streams: {} }), {
      definitions,
      data: store,
      now: () => clock.now,
    });
    await registry.put("visits", BUSY_VISITS);
    const old = registry.get("visits")!;
    const oldKey = generationKey("visits", registry.generationOf("visits"));
    // A sweep's peek closed old's window; meanwhile this instance heard of a re-create.
    await registry.remove("visits");
    await registry.put("visits", BUSY_VISITS);
    const newKey = generationKey("visits", registry.generationOf("visits"));
    assert.notEqual(newKey, oldKey);
    const wrapped = registry.wrap(store);
    const firing = (group: string) => busyFiring(clock.now, group);
    const fired = await wrapped.fireAlerts("visits", [firing('["DE"]')], {
      counters: old.counterMetas,
    });
    assert.deepEqual([fired.length, fired.gone], [0, true]);
    assert.deepEqual(await store.readLog(newKey, null, 10), [], "fired into the new incarnation");
    assert.deepEqual(await store.readLog(oldKey, null, 10), []);
    // The new incarnation's own firing of that window and group is not held back.
    const own = await wrapped.fireAlerts("visits", [firing('["DE"]')], {
      counters: registry.get("visits")!.counterMetas,
    });
    assert.deepEqual(own.map((f) => f.group), ['["DE"]']);
  },
);
