/**
 * One contract suite for the definition stores, run on memory and on Redis,
 * plus the version each store's apply reports and the generations that keep
 * a re-created stream's data apart.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import {
  type DefinitionStore,
  type DefinitionWrite,
  fromCellUpdates,
  generationKey,
  MemoryDefinitionStore,
  MemoryStore,
  RedisDefinitionStore,
  RedisStore,
  splitGenerationKey,
  type Store,
  type StoreBatch,
  StreamChangedError,
} from "../../src/store/mod.ts";
import { redisTest, withDirect } from "../_redis.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");

function record(overrides: Partial<DefinitionWrite> = {}): DefinitionWrite {
  return {
    source: "api",
    generation: 1,
    definition: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } },
    counters: { n: '{"window":{"tumbling":60000}}' },
    deleted: false,
    ...overrides,
  };
}

const scenarios: Record<string, (store: DefinitionStore) => Promise<void>> = {
  async "get() is null for a name never written"(store) {
    assert.equal(await store.get("orders"), null);
    assert.deepEqual(await store.versions(), new Map());
  },

  async "write() creates at version 1 and get() returns the record"(store) {
    assert.deepEqual(await store.write("orders", record(), 0), { status: "written", version: 1 });
    assert.deepEqual(await store.get("orders"), { name: "orders", version: 1, ...record() });
    assert.deepEqual(await store.versions(), new Map([["orders", 1]]));
  },

  async "write() with a stale expected version writes nothing and reports the current one"(store) {
    await store.write("orders", record(), 0);
    assert.deepEqual(await store.write("orders", record({ generation: 7 }), 0), {
      status: "conflict",
      version: 1,
    });
    assert.equal((await store.get("orders"))?.generation, 1);
  },

  async "write() of the very record again, one version on, is the same write sent twice: written"(
    store,
  ) {
    assert.deepEqual(await store.write("orders", record(), 0), { status: "written", version: 1 });
    assert.deepEqual(await store.write("orders", record(), 0), { status: "written", version: 1 });
    const deleted = record({ deleted: true, definition: null });
    assert.deepEqual(await store.write("orders", deleted, 1), { status: "written", version: 2 });
    assert.deepEqual(await store.write("orders", deleted, 1), { status: "written", version: 2 });
    // Anything else at a stale version is a conflict: another record, or the same one further on.
    assert.deepEqual(await store.write("orders", record({ deleted: true }), 1), {
      status: "conflict",
      version: 2,
    });
    assert.deepEqual(await store.write("orders", record(), 0), { status: "conflict", version: 2 });
    assert.equal((await store.get("orders"))?.version, 2);
  },

  async "a delete keeps the name with a higher version and no definition"(store) {
    await store.write("orders", record(), 0);
    await store.write("orders", record({ deleted: true, definition: null }), 1);
    const stored = await store.get("orders");
    assert.equal(stored?.deleted, true);
    assert.equal(stored?.definition, null);
    assert.equal(stored?.version, 2);
    assert.deepEqual(await store.versions(), new Map([["orders", 2]]));
  },

  async "versions() lists every name"(store) {
    await store.write("a", record(), 0);
    await store.write("b", record({ source: "config", generation: 0 }), 0);
    await store.write("b", record({ source: "config", generation: 0 }), 1);
    assert.deepEqual(await store.versions(), new Map([["a", 1], ["b", 2]]));
    assert.equal((await store.get("b"))?.source, "config");
  },

  async "versionsSince() gives the whole index only when it changed since the mark"(store) {
    const first = await store.versionsSince();
    assert.deepEqual(first.versions, new Map());
    assert.deepEqual(await store.versionsSince(first.mark), { mark: first.mark, versions: null });
    await store.write("a", record(), 0);
    const second = await store.versionsSince(first.mark);
    assert.notEqual(second.mark, first.mark);
    assert.deepEqual(second.versions, new Map([["a", 1]]));
    assert.deepEqual(await store.versionsSince(second.mark), { mark: second.mark, versions: null });
    // A mark never answered, and none, read the index.
    assert.deepEqual((await store.versionsSince("other")).versions, new Map([["a", 1]]));
    assert.deepEqual((await store.versionsSince()).versions, new Map([["a", 1]]));
    // A deletion is a change too.
    await store.write("a", record({ deleted: true, definition: null }), 1);
    assert.deepEqual((await store.versionsSince(second.mark)).versions, new Map([["a", 2]]));
  },
};

function redisPair(fixture: { restUrl: string; restToken: string }) {
  const redis = new Redis({
    url: fixture.restUrl,
    token: fixture.restToken,
    enableTelemetry: false,
  });
  return { definitions: new RedisDefinitionStore(redis), store: new RedisStore(redis) };
}

for (const [name, scenario] of Object.entries(scenarios)) {
  Deno.test(`MemoryDefinitionStore: ${name}`, () => scenario(new MemoryDefinitionStore()));
  redisTest(`RedisDefinitionStore: ${name}`, (fixture) => scenario(redisPair(fixture).definitions));
}

const COUNTER = {
  name: "n",
  aggregate: "count" as const,
  maxGroups: 10,
  ttlMs: 3_600_000,
  sizeMs: 60_000,
  hopMs: 60_000,
};

function batch(stream: string): StoreBatch {
  return fromCellUpdates({
    stream,
    nowMs: T0,
    latenessMs: 0,
    dedupeTtlMs: 0,
    counters: [COUNTER],
    events: [{ timeMs: T0, updates: [{ counter: 0, pane: T0, group: "[]" }] }],
  });
}

const applyScenarios: Record<
  string,
  (stores: { store: Store; definitions: DefinitionStore }) => Promise<void>
> = {
  async "applyBatch() reports the stream's definition version, 0 without one"(
    { store, definitions },
  ) {
    assert.equal((await store.applyBatch(batch("orders"))).definitionVersion, 0);
    await definitions.write("orders", record(), 0);
    await definitions.write("orders", record(), 1);
    assert.equal((await store.applyBatch(batch(generationKey("orders", 1)))).definitionVersion, 2);
    assert.equal((await store.applyBatch(batch("other"))).definitionVersion, 0);
  },

  async "applyBatch() of a generation the record says is gone applies nothing"(
    { store, definitions },
  ) {
    await definitions.write("orders", record(), 0);
    // Created again: generation 2.
    await definitions.write("orders", record({ generation: 2 }), 1);
    for (const stale of [generationKey("orders", 1), "orders"]) {
      await assert.rejects(store.applyBatch(batch(stale)), (error: Error) => {
        assert.ok(error instanceof StreamChangedError);
        assert.deepEqual([error.stream, error.version], ["orders", 2]);
        return true;
      });
      assert.equal((await store.stats(stale, [])).accepted, 0);
    }
    assert.equal((await store.applyBatch(batch(generationKey("orders", 2)))).definitionVersion, 2);
    // Deleted: no generation is read any more.
    await definitions.write(
      "orders",
      record({ generation: 2, deleted: true, definition: null }),
      2,
    );
    await assert.rejects(store.applyBatch(batch(generationKey("orders", 2))), StreamChangedError);
    assert.equal((await store.stats(generationKey("orders", 2), [])).accepted, 1);
  },

  async "generations keep a stream's data apart"({ store }) {
    await store.applyBatch(batch(generationKey("orders", 1)));
    await store.applyBatch(batch(generationKey("orders", 1)));
    await store.applyBatch(batch(generationKey("orders", 2)));
    const read = (key: string) =>
      store.readWindows(key, COUNTER, [{ start: T0, panes: [T0] }]).then((rows) =>
        rows.map((row) => row.state.count)
      );
    assert.deepEqual(await read(generationKey("orders", 1)), [2]);
    assert.deepEqual(await read(generationKey("orders", 2)), [1]);
    assert.deepEqual(await read("orders"), []);
    assert.equal((await store.stats(generationKey("orders", 2), [])).applied, 1);
  },
};

for (const [name, scenario] of Object.entries(applyScenarios)) {
  Deno.test(`MemoryStore: ${name}`, () => {
    const definitions = new MemoryDefinitionStore();
    return scenario({ store: new MemoryStore({ now: () => T0, definitions }), definitions });
  });
  redisTest(`RedisStore: ${name}`, (fixture) => scenario(redisPair(fixture)));
}

Deno.test("generationKey() keeps generation 0 as the stream name and splits back", () => {
  assert.equal(generationKey("orders", 0), "orders");
  assert.equal(generationKey("orders", 3), "orders#3");
  assert.deepEqual(splitGenerationKey("orders#3"), { stream: "orders", generation: 3 });
  assert.deepEqual(splitGenerationKey("orders"), { stream: "orders", generation: 0 });
});

redisTest(
  "RedisStore: a generation's keys carry it after the stream's hash tag",
  async (fixture) => {
    const { store } = redisPair(fixture);
    assert.equal(store.keyPrefix("orders"), "es:{orders}:");
    assert.equal(store.keyPrefix(generationKey("orders", 2)), "es:{orders}:g2:");
    await store.applyBatch(batch(generationKey("orders", 2)));
    const keys = await withDirect(fixture.redisUrl, (send) => send("KEYS", "*")) as string[];
    assert.ok(keys.length > 0);
    assert.deepEqual(keys.filter((key) => !key.startsWith("es:{orders}:g2:")), []);
  },
);
