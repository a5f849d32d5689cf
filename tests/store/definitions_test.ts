/**
 * One contract suite for the definition stores, run on memory and on Redis,
 * plus the version each store's apply reports and the generations that keep
 * a re-created stream's data apart.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import {
  DEFAULT_PLACE_LEASE_MS,
  DEFAULT_RECOUNT_EVERY_MS,
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
  StoredLimitError,
  StreamChangedError,
} from "../../src/store/mod.ts";
import { redisTest, restClient, withDirect } from "../_redis.ts";

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

  async "write() of an identical record another call wrote one version on is a conflict: that call made it, not this one"(
    store,
  ) {
    // Two admins' identical creations at once: only the first creates.
    assert.deepEqual(await store.write("orders", record(), 0), { status: "written", version: 1 });
    assert.deepEqual(await store.write("orders", record(), 0), { status: "conflict", version: 1 });
    const deleted = record({ deleted: true, definition: null });
    assert.deepEqual(await store.write("orders", deleted, 1), { status: "written", version: 2 });
    assert.deepEqual(await store.write("orders", deleted, 1), { status: "conflict", version: 2 });
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
  const redis = restClient(fixture);
  return {
    definitions: new RedisDefinitionStore(redis),
    store: new RedisStore(redis, { definitionsHere: true }),
  };
}

for (const [name, scenario] of Object.entries(scenarios)) {
  Deno.test(`MemoryDefinitionStore: ${name}`, () => scenario(new MemoryDefinitionStore()));
  redisTest(`RedisDefinitionStore: ${name}`, (fixture) => scenario(redisPair(fixture).definitions));
}

redisTest(
  "RedisDefinitionStore: a write's script sent again (a connection lost once Redis ran it) is written, once",
  async (fixture) => {
    const redis = restClient(fixture);
    // Each script runs twice with the same arguments; the first reply is lost, as when the
    // connection drops after Redis ran it and the client sends the request again.
    const sentTwice = {
      async evalsha(...args: Parameters<Redis["evalsha"]>) {
        await redis.evalsha(...args).catch(() => {});
        return await redis.evalsha(...args);
      },
      async eval(...args: Parameters<Redis["eval"]>) {
        await redis.eval(...args).catch(() => {});
        return await redis.eval(...args);
      },
    } as unknown as Redis;
    const store = new RedisDefinitionStore(sentTwice);
    assert.deepEqual(await store.write("orders", record(), 0), { status: "written", version: 1 });
    const deleted = record({ deleted: true, definition: null });
    assert.deepEqual(await store.write("orders", deleted, 1), { status: "written", version: 2 });
    assert.equal((await store.get("orders"))?.version, 2);
  },
);

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

  async "closeWindows() of a generation the record says is gone closes nothing and says gone"(
    { store, definitions },
  ) {
    await definitions.write("orders", record(), 0);
    const first = generationKey("orders", 1);
    await store.applyBatch(batch(first));
    // Created again (generation 2): generation 1's due window is closed by no one.
    await definitions.write("orders", record({ generation: 2 }), 1);
    const late = { latenessMs: 0, nowMs: T0 + 600_000, idleMs: 60_000 };
    const stale = await store.closeWindows(first, [COUNTER], late);
    // Of another generation: gone, its record not missing.
    assert.deepEqual([stale.length, stale.gone, stale.recordMissing], [0, true, undefined]);
    // The live generation closes as usual, and is not gone.
    const live = generationKey("orders", 2);
    await store.applyBatch(batch(live));
    const closed = await store.closeWindows(live, [COUNTER], late);
    assert.deepEqual([closed.length, closed.gone], [1, undefined]);
    // Deleted: its last generation closes nothing either (a batch first, so that the close runs:
    // a stream unchanged since its last close is skipped before the record is read).
    await store.applyBatch(batch(live));
    await definitions.write(
      "orders",
      record({ generation: 2, deleted: true, definition: null }),
      2,
    );
    const deleted = await store.closeWindows(live, [COUNTER], late);
    assert.deepEqual([deleted.gone, deleted.recordMissing], [true, undefined]);
  },

  async "fireAlerts() of a generation the record says is gone fires nothing, logs nothing and says gone, as its close closes nothing"(
    { store, definitions },
  ) {
    const firing = (group: string) => ({
      alert: "busy",
      counter: "n",
      start: T0,
      end: T0 + 60_000,
      group,
      value: 3,
      ttlMs: 120_000,
    });
    // The groups fired, and `gone` when the call says the incarnation is gone.
    const fired = async (key: string, group: string) => {
      const reply = await store.fireAlerts(key, [firing(group)]);
      return reply.gone ? ["gone", ...reply.map((f) => f.group)] : reply.map((f) => f.group);
    };
    const alerts = async (key: string) =>
      (await store.readLog(key, null, 100)).map((entry) => entry.record.type);
    await definitions.write("orders", record(), 0);
    const first = generationKey("orders", 1);
    // The control: the generation the record names fires.
    assert.deepEqual(await fired(first, '["DE"]'), ['["DE"]']);
    // Created again (generation 2): generation 1 fires nothing more, and logs nothing.
    await definitions.write("orders", record({ generation: 2 }), 1);
    assert.deepEqual(await fired(first, '["FR"]'), ["gone"]);
    assert.deepEqual(await alerts(first), ["alert.fired"]);
    const live = generationKey("orders", 2);
    assert.deepEqual(await fired(live, '["FR"]'), ['["FR"]']);
    // Deleted: its last generation fires nothing either.
    await definitions.write(
      "orders",
      record({ generation: 2, deleted: true, definition: null }),
      2,
    );
    assert.deepEqual(await fired(live, '["US"]'), ["gone"]);
    assert.deepEqual(await alerts(live), ["alert.fired"]);
    // A stream with no record (a config stream before it is recorded) fires as before.
    assert.deepEqual(await fired("cfg", '["DE"]'), ['["DE"]']);
  },

  async "closeWindows() of a stream the caller recorded whose record is missing closes nothing and says gone, as its apply is refused"(
    { store, definitions },
  ) {
    // No record (as in a Redis restored from before it was written): a batch not said recorded
    // applies, one said recorded is refused.
    await store.applyBatch(batch("orders"));
    await assert.rejects(
      store.applyBatch({ ...batch("orders"), recorded: true }),
      (error: Error) => {
        assert.ok(error instanceof StreamChangedError);
        assert.deepEqual([error.stream, error.version], ["orders", 0]);
        return true;
      },
    );
    const late = { latenessMs: 0, nowMs: T0 + 600_000, idleMs: 60_000 };
    const missing = await store.closeWindows("orders", [COUNTER], { ...late, recorded: true });
    assert.deepEqual([missing.length, missing.gone, missing.recordMissing], [0, true, true]);
    // Nothing was closed: the window is still due, closed by a close not said recorded.
    const closed = await store.closeWindows("orders", [COUNTER], late);
    assert.deepEqual([closed.length, closed.gone, closed[0]?.groups[0]?.state.count], [
      1,
      undefined,
      1,
    ]);
    // Recorded with its record there, it closes as usual.
    await definitions.write("orders", record({ source: "config", generation: 0 }), 0);
    const later = T0 + 600_000;
    await store.applyBatch({
      ...fromCellUpdates({
        stream: "orders",
        nowMs: later,
        latenessMs: 0,
        dedupeTtlMs: 0,
        counters: [COUNTER],
        events: [{ timeMs: later, updates: [{ counter: 0, pane: later, group: "[]" }] }],
      }),
      recorded: true,
    });
    const kept = await store.closeWindows("orders", [COUNTER], {
      ...late,
      nowMs: T0 + 1_200_000,
      recorded: true,
    });
    assert.deepEqual([kept.length, kept.gone], [1, undefined]);
  },

  async "applyBatch() of a config stream recorded at generation 0 applies (the call leaves gen 0 out)"(
    { store, definitions },
  ) {
    await definitions.write("cfg", record({ source: "config", generation: 0 }), 0);
    assert.equal((await store.applyBatch(batch("cfg"))).definitionVersion, 1);
    assert.equal((await store.stats("cfg", [])).applied, 1);
  },

  async "write() with keepFinal raises the written generation's closedThrough to what the replaced definitions called final, in the write, never lowering it"(
    { store, definitions },
  ) {
    const key = generationKey("orders", 1);
    const by = (latenessMs: number, idleMs: number | null = null) => ({ latenessMs, idleMs });
    await definitions.write("orders", record(), 0);
    // No watermark yet: nothing is final, nothing kept.
    await definitions.write("orders", record(), 1, { keepFinal: { nowMs: T0, by: [by(0)] } });
    assert.equal((await store.stats(key, [])).closedThrough, undefined);
    await store.applyBatch(batch(key));
    // The latest of what each called final: the watermark (T0) less 10 s, or the clock less
    // idle (1 m) less 5 s.
    await definitions.write("orders", record(), 2, {
      keepFinal: { nowMs: T0 + 120_000, by: [by(10_000), by(5_000, 60_000)] },
    });
    assert.equal((await store.stats(key, [])).closedThrough, T0 + 55_000);
    // Never lowered; a refused write (version 4 is current) keeps nothing.
    await definitions.write("orders", record(), 3, { keepFinal: { nowMs: T0, by: [by(0)] } });
    assert.equal((await store.stats(key, [])).closedThrough, T0 + 55_000);
    const refused = await definitions.write("orders", record(), 3, {
      keepFinal: { nowMs: T0 + 600_000, by: [by(0, 0)] },
    });
    assert.equal(refused.status, "conflict");
    assert.equal((await store.stats(key, [])).closedThrough, T0 + 55_000);
  },

  async "write() with keepFinal stores its version in the written generation's stats, in the write, watermark or not; a write without, or refused, leaves it"(
    { store, definitions },
  ) {
    const key = generationKey("orders", 1);
    const keep = { nowMs: T0, by: [{ latenessMs: 0, idleMs: null }] };
    await definitions.write("orders", record(), 0);
    assert.equal((await store.stats(key, [])).definitionVersion, undefined);
    // No watermark yet: a batch applied after the write, under an older definition, is judged by
    // a lateness the store no longer holds; the stats say a later one kept final.
    await definitions.write("orders", record(), 1, { keepFinal: keep });
    assert.equal((await store.stats(key, [])).definitionVersion, 2);
    await store.applyBatch(batch(key));
    assert.equal((await store.stats(key, [])).definitionVersion, 2);
    await definitions.write("orders", record(), 2);
    assert.equal((await store.stats(key, [])).definitionVersion, 2);
    await definitions.write("orders", record(), 3, { keepFinal: keep });
    assert.equal((await store.stats(key, [])).definitionVersion, 4);
    const refused = await definitions.write("orders", record(), 3, { keepFinal: keep });
    assert.equal(refused.status, "conflict");
    assert.equal((await store.stats(key, [])).definitionVersion, 4);
  },

  async "readWindows() and readSessions() with stats return the version a keepFinal write stored, as stats() does"(
    { store, definitions },
  ) {
    const key = generationKey("orders", 1);
    const versions = async () => [
      (await store.readWindows(key, COUNTER, [{ start: T0, panes: [T0] }], { stats: true }))
        .stats?.definitionVersion,
      (await store.readSessions(key, { ...COUNTER, session: { gapMs: 1_000, maxSessions: 10 } }, {
        fromMs: T0,
        toMs: T0 + 1,
        stats: true,
      })).stats?.definitionVersion,
    ];
    await definitions.write("orders", record(), 0);
    assert.deepEqual(await versions(), [undefined, undefined]);
    await definitions.write("orders", record(), 1, {
      keepFinal: { nowMs: T0, by: [{ latenessMs: 0, idleMs: null }] },
    });
    assert.deepEqual(await versions(), [2, 2]);
  },

  async "applyBatch() built under an older definition version than the record's keeps final its watermark less its lateness; under the record's, nothing"(
    { store, definitions },
  ) {
    const key = generationKey("orders", 1);
    await definitions.write("orders", record(), 0);
    const late = (definitionVersion?: number) => ({
      ...batch(key),
      latenessMs: 10_000,
      definitionVersion,
    });
    await store.applyBatch(late(1));
    await store.applyBatch(late());
    assert.equal((await store.stats(key, [])).closedThrough, undefined);
    await definitions.write("orders", record(), 1);
    await store.applyBatch(late(2));
    assert.equal((await store.stats(key, [])).closedThrough, undefined);
    // Without a version (a release before versions, deploy/README.md's "Finality and added
    // counters across releases"): nothing kept final either.
    await store.applyBatch(late());
    assert.equal((await store.stats(key, [])).closedThrough, undefined);
    await store.applyBatch(late(1));
    assert.equal((await store.stats(key, [])).closedThrough, T0 - 10_000);
  },

  async "closeWindows() for a definition older than the one whose write kept final closes and peeks nothing, moves no watermark and says that version; for that one it closes"(
    { store, definitions },
  ) {
    const key = generationKey("orders", 1);
    await definitions.write("orders", record(), 0);
    await store.applyBatch(batch(key));
    const keep = { nowMs: T0, by: [{ latenessMs: 0, idleMs: null }] };
    await definitions.write("orders", record(), 1, { keepFinal: keep });
    // The clock (idle 0) makes [T0, T0 + 1 m) due.
    const close = (definitionVersion: number, peek = false) =>
      store.closeWindows(key, [COUNTER], {
        latenessMs: 0,
        idleMs: 0,
        nowMs: T0 + 120_000,
        definitionVersion,
        peek,
      });
    for (const peek of [true, false]) {
      const stale = await close(1, peek);
      assert.equal(stale.length, 0);
      assert.equal(stale.laterDefinition, 2);
    }
    assert.equal((await store.stats(key, [])).watermark, T0);
    assert.deepEqual((await close(2, true)).map((window) => window.start), [T0]);
    const closed = await close(2);
    assert.deepEqual(closed.map((window) => window.start), [T0]);
    assert.equal(closed.laterDefinition, undefined);
    assert.equal((await store.stats(key, [])).closedThrough, T0 + 60_000);
  },

  async "write() with addedCounters raises their partial bounds to the watermark then plus 1 and reports them; an API one then refuses a batch under an older version"(
    { store, definitions },
  ) {
    const key = generationKey("orders", 1);
    const at = (definitionVersion?: number) => ({ ...batch(key), definitionVersion });
    // No watermark yet: no bound, only those given; the bounds reported are the record's.
    await definitions.write("orders", record(), 0);
    const first = await definitions.write(
      "orders",
      record({ partialBefore: { old: 5 } }),
      1,
      { addedCounters: ["early"] },
    );
    assert.deepEqual(first, { status: "written", version: 2, partialBefore: { old: 5 } });
    await store.applyBatch(at(2));
    // A bound given above the watermark stays; one below rises to it plus 1.
    const second = await definitions.write(
      "orders",
      record({ partialBefore: { old: 5, added: T0 + 60_000 } }),
      2,
      { addedCounters: ["added", "again"] },
    );
    const partialBefore = { old: 5, added: T0 + 60_000, again: T0 + 1 };
    assert.deepEqual(second, { status: "written", version: 3, partialBefore });
    assert.deepEqual((await definitions.get("orders"))?.partialBefore, partialBefore);
    // Built before version 3 (without its counters): refused, nothing applied.
    for (const stale of [1, 2]) {
      await assert.rejects(store.applyBatch(at(stale)), (error: Error) => {
        assert.ok(error instanceof StreamChangedError);
        assert.deepEqual([error.stream, error.version], ["orders", 3]);
        return true;
      });
    }
    assert.equal((await store.stats(key, [])).accepted, 1);
    // Under version 3 or later, or without a version: applied; a write adding none refuses
    // nothing more.
    await store.applyBatch(at(3));
    await store.applyBatch(at());
    await definitions.write("orders", record(), 3);
    await store.applyBatch(at(3));
    assert.equal((await store.stats(key, [])).accepted, 4);
    // A config record's write adding counters refuses no batch (its instances serve their file).
    await definitions.write("cfg", record({ source: "config", generation: 0 }), 0);
    await definitions.write("cfg", record({ source: "config", generation: 0 }), 1, {
      addedCounters: ["added"],
    });
    await store.applyBatch({ ...batch("cfg"), definitionVersion: 1 });
    assert.equal((await store.stats("cfg", [])).accepted, 1);
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
    const store = new MemoryStore({ now: () => T0, definitions, definitionsHere: true });
    return scenario({ store, definitions });
  });
  redisTest(`RedisStore: ${name}`, (fixture) => scenario(redisPair(fixture)));
}

/**
 * Without `definitionsHere` (both stores' default, as for a caller that keeps its definitions
 * elsewhere): a batch and a close its caller recorded apply and close, though the definitions
 * beside the store hold no record of the stream, instead of being refused as gone.
 */
async function recordedElsewhere({ store }: { store: Store }) {
  const applied = await store.applyBatch({ ...batch("orders"), recorded: true });
  assert.equal(applied.definitionVersion, 0);
  const late = { latenessMs: 0, nowMs: T0 + 600_000, idleMs: 60_000, recorded: true };
  const closed = await store.closeWindows("orders", [COUNTER], late);
  assert.deepEqual([closed.length, closed.gone, closed.recordMissing], [1, undefined, undefined]);
}

Deno.test("MemoryStore: by default (no definitionsHere) a batch and a close its caller recorded apply though its definitions hold no record, as on Redis", () => {
  const definitions = new MemoryDefinitionStore();
  return recordedElsewhere({ store: new MemoryStore({ now: () => T0, definitions }) });
});

redisTest(
  "RedisStore: by default (no definitionsHere) a batch and a close its caller recorded apply though its definitions hold no record, as in memory",
  (fixture) => recordedElsewhere({ store: new RedisStore(restClient(fixture), { now: () => T0 }) }),
);

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

/** The bound of streams created through the API (`maxApiStreams`), on both stores. */
const boundScenarios: Record<
  string,
  (make: (maxApiStreams: number) => DefinitionStore) => Promise<void>
> = {
  async "write() of a new API stream past maxApiStreams throws StoredLimitError and writes nothing"(
    make,
  ) {
    const store = make(2);
    await store.write("a", record(), 0);
    await store.write("b", record(), 0);
    // Config streams do not count, whatever their number.
    for (const name of ["c1", "c2", "c3"]) {
      assert.equal(
        (await store.write(name, record({ source: "config", generation: 0 }), 0)).status,
        "written",
      );
    }
    const refused = await store.write("c", record(), 0).then(
      () => assert.fail("created past the bound"),
      (error) => error,
    );
    assert.ok(refused instanceof StoredLimitError, String(refused));
    assert.deepEqual([refused.kind, refused.max, refused.held], ["streams", 2, 2]);
    assert.equal(await store.get("c"), null);
    assert.deepEqual([...(await store.versions()).keys()].sort(), ["a", "b", "c1", "c2", "c3"]);
    // A config record made an API stream is one more: refused too.
    await assert.rejects(store.write("c1", record({ generation: 1 }), 1), StoredLimitError);
    // A replacement adds none: written at the bound.
    assert.deepEqual(await store.write("a", record({ definition: { changed: true } }), 1), {
      status: "written",
      version: 2,
    });
  },

  async "a deleted API stream frees its place, and creating it again takes one"(make) {
    const store = make(2);
    await store.write("a", record(), 0);
    await store.write("b", record(), 0);
    await store.write("a", record({ deleted: true, definition: null, counters: {} }), 1);
    assert.equal((await store.write("c", record(), 0)).status, "written");
    await assert.rejects(store.write("a", record({ generation: 2 }), 2), StoredLimitError);
    await store.write("b", record({ deleted: true, definition: null, counters: {} }), 1);
    assert.deepEqual(await store.write("a", record({ generation: 2 }), 2), {
      status: "written",
      version: 3,
    });
  },

  async "an API stream whose name a config file takes over leaves the count"(make) {
    const store = make(1);
    await store.write("a", record(), 0);
    await assert.rejects(store.write("b", record(), 0), StoredLimitError);
    // As the registry records a config stream over an API one: source config, the next generation.
    assert.deepEqual(await store.write("a", record({ source: "config", generation: 2 }), 1), {
      status: "written",
      version: 2,
    });
    assert.deepEqual(await store.write("b", record(), 0), { status: "written", version: 1 });
    await assert.rejects(store.write("c", record(), 0), StoredLimitError);
  },

  async "a creation that loses to another write takes no place"(make) {
    const store = make(2);
    await store.write("a", record(), 0);
    await store.write("b", record({ source: "config", generation: 0 }), 0);
    // Written at version 0 expected, but "b" is at 1 (a config stream): a conflict.
    assert.deepEqual(await store.write("b", record(), 0), { status: "conflict", version: 1 });
    assert.equal((await store.write("c", record(), 0)).status, "written");
    await assert.rejects(store.write("d", record(), 0), StoredLimitError);
  },
};

/** A Redis definition store; every refusal recounts unless `recountEveryMs` says otherwise. */
function redisDefinitions(
  fixture: { restUrl: string; restToken: string },
  maxApiStreams: number,
  options: { recountEveryMs?: number } = {},
) {
  return new RedisDefinitionStore(
    restClient(fixture),
    { maxApiStreams, recountEveryMs: 0, ...options },
  );
}

for (const [name, scenario] of Object.entries(boundScenarios)) {
  Deno.test(`MemoryDefinitionStore: ${name}`, () =>
    scenario((maxApiStreams) => new MemoryDefinitionStore({ maxApiStreams })));
  redisTest(
    `RedisDefinitionStore: ${name}`,
    (fixture) => scenario((maxApiStreams) => redisDefinitions(fixture, maxApiStreams)),
  );
}

redisTest(
  "RedisDefinitionStore: a bound lowered below what the store holds keeps every stream and refuses creations until deletions bring it under",
  async (fixture) => {
    const before = redisDefinitions(fixture, 3);
    for (const name of ["a", "b", "c"]) await before.write(name, record(), 0);
    // A redeploy with EDGESTREAM_STREAMS_MAX=1.
    const lowered = redisDefinitions(fixture, 1);
    await assert.rejects(
      lowered.write("d", record(), 0),
      (error: unknown) => error instanceof StoredLimitError && error.held === 3 && error.max === 1,
    );
    assert.deepEqual(
      [...(await lowered.versions()).keys()].sort(),
      ["a", "b", "c"],
      "nothing held is dropped",
    );
    // Replacing a held stream is no creation: written.
    assert.equal((await lowered.write("a", record({ definition: { v: 2 } }), 1)).status, "written");
    await lowered.write("a", record({ deleted: true, definition: null, counters: {} }), 2);
    await assert.rejects(lowered.write("d", record(), 0), StoredLimitError, "2 held, still over 1");
    await lowered.write("b", record({ deleted: true, definition: null, counters: {} }), 1);
    await assert.rejects(lowered.write("d", record(), 0), StoredLimitError, "1 held: at the bound");
    await lowered.write("c", record({ deleted: true, definition: null, counters: {} }), 1);
    assert.deepEqual(await lowered.write("d", record(), 0), { status: "written", version: 1 });
  },
);

redisTest(
  "RedisDefinitionStore: a creation the recount still finds at the bound is refused by the recount's count, without taking a place again",
  async (fixture) => {
    const setup = redisDefinitions(fixture, 2);
    for (const name of ["a", "b"]) await setup.write(name, record(), 0);
    const calls: string[] = [];
    const counted = redisDefinitionsWith(
      fixture,
      { maxApiStreams: 2 },
      (redis) =>
        new Proxy(redis, {
          get(target, property, receiver) {
            const value = Reflect.get(target, property, receiver);
            if (property !== "evalsha" && property !== "eval") return value;
            return (script: string, keys: string[], args: string[]) => {
              const arg = String(args[0]);
              calls.push(
                arg.includes('"max":') ? "reserve" : arg.includes('"rows":') ? "recount" : "other",
              );
              return value.call(target, script, keys, args);
            };
          },
        }),
    );
    await assert.rejects(
      counted.write("c", record(), 0),
      (error: unknown) => error instanceof StoredLimitError && error.held === 2 && error.max === 2,
    );
    assert.deepEqual(calls.filter((call) => call !== "other"), ["reserve", "recount"]);
    // Under the bound after the recount (a place freed by a deletion whose index step failed,
    // here its place set by hand): it takes a place once more and creates.
    await setup.write("b", record({ deleted: true, definition: null, counters: {} }), 1);
    await withDirect(
      fixture.redisUrl,
      (send) => send("HSET", "es:{@definitions}:index:api", "b", "1"),
    );
    calls.length = 0;
    assert.deepEqual(await counted.write("c", record(), 0), { status: "written", version: 1 });
    assert.deepEqual(calls.filter((call) => call !== "other"), ["reserve", "recount", "reserve"]);
  },
);

redisTest(
  "RedisDefinitionStore: a recount reads every name the index holds, tombstones too, 16 records at a time",
  async (fixture) => {
    const setup = redisDefinitions(fixture, 1);
    // 40 tombstones (each created, then deleted: its place freed) and one live stream.
    for (let n = 0; n < 40; n++) {
      await setup.write(`t${n}`, record(), 0);
      await setup.write(`t${n}`, record({ deleted: true, definition: null, counters: {} }), 1);
    }
    await setup.write("live", record(), 0);
    let inFlight = 0;
    let most = 0;
    const read: string[] = [];
    const counted = redisDefinitionsWith(
      fixture,
      { maxApiStreams: 1 },
      (redis) =>
        new Proxy(redis, {
          get(target, property, receiver) {
            const value = Reflect.get(target, property, receiver);
            if (property !== "evalsha" && property !== "eval") return value;
            return async (script: string, keys: string[], args: string[]) => {
              // A record read: one key, the stream's definition record.
              const one = keys.length === 1 && keys[0].endsWith(":def");
              if (one) {
                read.push(keys[0]);
                most = Math.max(most, ++inFlight);
              }
              try {
                return await value.call(target, script, keys, args);
              } finally {
                if (one) inFlight -= 1;
              }
            };
          },
        }),
    );
    await assert.rejects(
      counted.write("new", record(), 0),
      (error: unknown) => error instanceof StoredLimitError && error.held === 1,
    );
    const names = [...Array.from({ length: 40 }, (_, n) => `t${n}`), "live"];
    for (const name of names) {
      assert.ok(read.includes(`es:{${name}}:def`), `${name}'s record read (tombstones included)`);
    }
    assert.equal(most, 16, "README: one store call each, 16 at a time");
  },
);

redisTest(
  "RedisDefinitionStore keeps the keys the README names, each without a TTL: records, index, its change mark, the places, their mark and the places on their way",
  async (fixture) => {
    const store = redisDefinitions(fixture, 2);
    await store.write("a", record(), 0);
    await store.write("gone", record(), 0);
    await store.write("gone", record({ deleted: true, definition: null, counters: {} }), 1);
    // A creation cut short between its two steps leaves its place on its way.
    const killed = redisDefinitionsWith(fixture, { maxApiStreams: 2 }, (redis) =>
      new Proxy(redis, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver);
          if (property !== "evalsha" && property !== "eval") return value;
          return (script: string, keys: string[], args: string[]) =>
            String(args[0]).includes('"expected"')
              ? Promise.reject(new Error("killed"))
              : value.call(target, script, keys, args);
        },
      }));
    await assert.rejects(killed.write("b", record(), 0));
    // A refusal at the bound recounts (and marks the places built).
    await assert.rejects(store.write("c", record(), 0), StoredLimitError);
    const lives = await withDirect(fixture.redisUrl, async (send) => {
      const keys = ((await send("KEYS", "*")) as string[]).sort();
      return Promise.all(keys.map(async (key) => [key, Number(await send("PTTL", key))] as const));
    });
    // README, Running with Redis: "Only stream definitions (…) are kept without one".
    assert.deepEqual(lives, [
      ["es:{@definitions}:index", -1],
      ["es:{@definitions}:index:api", -1],
      ["es:{@definitions}:index:api:built", -1],
      ["es:{@definitions}:index:api:pending", -1],
      ["es:{@definitions}:index:mark", -1],
      ["es:{a}:def", -1],
      ["es:{gone}:def", -1],
    ]);
  },
);

redisTest(
  "RedisDefinitionStore: two instances racing for the last place under maxApiStreams: one creates, the other is refused",
  async (fixture) => {
    const [first, second] = [redisDefinitions(fixture, 2), redisDefinitions(fixture, 2)];
    await first.write("a", record(), 0);
    for (let round = 0; round < 20; round++) {
      const results = await Promise.allSettled([
        first.write(`x${round}`, record(), 0),
        second.write(`y${round}`, record(), 0),
      ]);
      const created = results.filter((result) => result.status === "fulfilled");
      const refused = results.filter((result) =>
        result.status === "rejected" && result.reason instanceof StoredLimitError
      );
      assert.equal(created.length, 1, `round ${round}: ${JSON.stringify(results)}`);
      assert.equal(refused.length, 1, `round ${round}`);
      const winner = (await first.get(`x${round}`)) ? `x${round}` : `y${round}`;
      const held = await second.get(winner);
      assert.equal(
        (await second.write(
          winner,
          record({ deleted: true, definition: null, counters: {} }),
          held!.version,
        ))
          .status,
        "written",
      );
    }
  },
);

redisTest(
  "RedisDefinitionStore counts the API streams a store held before the bound existed, once, from their records",
  async (fixture) => {
    const store = redisDefinitions(fixture, 3);
    await store.write("a", record(), 0);
    await store.write("b", record(), 0);
    await store.write("gone", record(), 0);
    await store.write("gone", record({ deleted: true, definition: null, counters: {} }), 1);
    await store.write("cfg", record({ source: "config", generation: 0 }), 0);
    // As a release before the bound left it: records and index, no places.
    await withDirect(fixture.redisUrl, async (send) => {
      assert.equal(
        await send("DEL", "es:{@definitions}:index:api", "es:{@definitions}:index:api:built"),
        2,
      );
    });
    const later = redisDefinitions(fixture, 2);
    await assert.rejects(later.write("c", record(), 0), StoredLimitError);
    assert.equal(await later.get("c"), null);
    await later.write("a", record({ deleted: true, definition: null, counters: {} }), 1);
    assert.equal((await later.write("c", record(), 0)).status, "written");
  },
);

redisTest(
  "RedisDefinitionStore: a write's index step run after a later deletion's frees the place for good (no place held by a deleted stream)",
  async (fixture) => {
    // The creating instance's index step is held back (a slow connection, a paused process)
    // until another instance has deleted the stream and indexed that deletion.
    let holdIndex = false;
    let released!: () => void;
    const release = new Promise<void>((resolve) => released = resolve);
    let reachedIndex!: () => void;
    const indexReached = new Promise<void>((resolve) => reachedIndex = resolve);
    const redis = restClient(fixture);
    const slow = new Proxy(redis, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver);
        if (property !== "evalsha" && property !== "eval") return value;
        return async (script: string, keys: string[], args: string[]) => {
          if (holdIndex && String(args[0]).includes('"mark"')) {
            holdIndex = false;
            reachedIndex();
            await release;
          }
          return await value.call(target, script, keys, args);
        };
      },
    });
    const creator = new RedisDefinitionStore(slow, { maxApiStreams: 1 });
    const other = redisDefinitions(fixture, 1);
    holdIndex = true;
    const creating = creator.write("a", record(), 0);
    await indexReached;
    // Written at version 1; deleted by the other instance at 2, whose index step frees the place.
    assert.equal(
      (await other.write("a", record({ deleted: true, definition: null, counters: {} }), 1))
        .status,
      "written",
    );
    released();
    assert.deepEqual(await creating, { status: "written", version: 1 });
    assert.equal((await other.get("a"))?.deleted, true);
    // No API stream is live: the one place is free.
    assert.deepEqual(await other.write("b", record(), 0), { status: "written", version: 1 });
  },
);

/** A store of the given options on the fixture's REST endpoint. */
function redisDefinitionsWith(
  fixture: { restUrl: string; restToken: string },
  options: { maxApiStreams: number; placeLeaseMs?: number },
  wrap: (redis: Redis) => Redis = (redis) => redis,
) {
  return new RedisDefinitionStore(
    wrap(restClient(fixture)),
    { recountEveryMs: 0, ...options },
  );
}

/**
 * Writes `name`'s record at `version` as a release without places does: the record and the index
 * (raised, its mark set), no place taken or freed.
 */
function oldReleaseWrite(
  redisUrl: string,
  name: string,
  version: number,
  deleted: boolean,
): Promise<unknown> {
  const written = record(deleted ? { deleted: true, definition: null, counters: {} } : {});
  return withDirect(redisUrl, async (send) => {
    await send(
      "HSET",
      `es:{${name}}:def`,
      "v",
      String(version),
      "g",
      String(written.generation),
      "s",
      written.source,
      "d",
      JSON.stringify(written.definition ?? null),
      "c",
      JSON.stringify(written.counters),
      "x",
      deleted ? "1" : "0",
    );
    await send("HSET", "es:{@definitions}:index", name, String(version));
    await send("SET", "es:{@definitions}:index:mark", crypto.randomUUID());
  });
}

redisTest(
  "RedisDefinitionStore: a place left by a creation killed between its two steps is freed by the next creation refused at the bound, once past placeLeaseMs",
  async (fixture) => {
    // The creating process dies after taking its place, before its record is written.
    assert.equal(DEFAULT_PLACE_LEASE_MS, 60_000, "README: a place taken less than a minute ago");
    const killed = redisDefinitionsWith(fixture, { maxApiStreams: 1 }, (redis) =>
      new Proxy(redis, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver);
          if (property !== "evalsha" && property !== "eval") return value;
          return (script: string, keys: string[], args: string[]) =>
            String(args[0]).includes('"expected"')
              ? Promise.reject(new Error("killed"))
              : value.call(target, script, keys, args);
        },
      }));
    await assert.rejects(killed.write("a", record(), 0));
    const current = redisDefinitionsWith(fixture, { maxApiStreams: 1 });
    assert.equal(await current.get("a"), null);
    // Within the lease the place may be a creation on its way: it still counts.
    await assert.rejects(
      current.write("b", record(), 0),
      (error: unknown) => error instanceof StoredLimitError && error.held === 1,
    );
    // Past it, the recount frees it: the creation goes through, and the next one is refused.
    const later = redisDefinitionsWith(fixture, { maxApiStreams: 1, placeLeaseMs: 0 });
    assert.deepEqual(await later.write("b", record(), 0), { status: "written", version: 1 });
    await assert.rejects(
      later.write("c", record(), 0),
      (error: unknown) => error instanceof StoredLimitError && error.held === 1,
    );
    assert.equal(await later.get("c"), null);
  },
);

redisTest(
  "RedisDefinitionStore: streams deleted or created by an older release (no places) are recounted at the next refusal",
  async (fixture) => {
    const store = redisDefinitions(fixture, 2);
    await store.write("a", record(), 0);
    // An old instance creates "c": no place taken, so "b" gets the second place (3 live).
    await oldReleaseWrite(fixture.redisUrl, "c", 1, false);
    await store.write("b", record(), 0);
    // An old instance deletes "a": its place stays taken.
    await oldReleaseWrite(fixture.redisUrl, "a", 2, true);
    // Refused after the recount: "b" and "c" are live, the bound is 2.
    await assert.rejects(
      store.write("d", record(), 0),
      (error: unknown) => error instanceof StoredLimitError && error.held === 2,
    );
    // An old instance deletes "c": the next creation recounts and takes its place.
    await oldReleaseWrite(fixture.redisUrl, "c", 2, true);
    assert.deepEqual(await store.write("d", record(), 0), { status: "written", version: 1 });
    await assert.rejects(store.write("e", record(), 0), StoredLimitError);
    await withDirect(fixture.redisUrl, async (send) => {
      assert.deepEqual(
        ((await send("HKEYS", "es:{@definitions}:index:api")) as string[]).sort(),
        ["b", "d"],
      );
    });
  },
);

redisTest(
  "RedisDefinitionStore: a refusal at the bound recounts at most once per recountEveryMs, so creating in a loop at the bound does not recount per request",
  async (fixture) => {
    assert.equal(DEFAULT_RECOUNT_EVERY_MS, 10_000, "README: at most once every 10 s");
    const store = redisDefinitions(fixture, 1, { recountEveryMs: 60_000 });
    await store.write("a", record(), 0);
    // Refused after a recount ("a" is live).
    await assert.rejects(store.write("b", record(), 0), StoredLimitError);
    // An old instance deletes "a": its place stays taken, and within the interval no recount
    // looks, so the creations meanwhile are refused as the places say.
    await oldReleaseWrite(fixture.redisUrl, "a", 2, true);
    await assert.rejects(store.write("b", record(), 0), StoredLimitError);
    await assert.rejects(store.write("c", record(), 0), StoredLimitError);
    // Another store object (another instance) recounts on its own schedule: "a"'s place is freed.
    const other = redisDefinitions(fixture, 1, { recountEveryMs: 60_000 });
    assert.deepEqual(await other.write("b", record(), 0), { status: "written", version: 1 });
  },
);

redisTest(
  "RedisDefinitionStore: two instances racing for a place a recount frees: one creates, the other is refused",
  async (fixture) => {
    const [first, second] = [redisDefinitions(fixture, 2), redisDefinitions(fixture, 2)];
    await first.write("a", record(), 0);
    await first.write("gone", record(), 0);
    let stale = "gone";
    let staleVersion = 1;
    for (let round = 0; round < 10; round++) {
      // An old instance deletes the second stream: its place stays taken until a recount.
      await oldReleaseWrite(fixture.redisUrl, stale, staleVersion + 1, true);
      const results = await Promise.allSettled([
        first.write(`x${round}`, record(), 0),
        second.write(`y${round}`, record(), 0),
      ]);
      const created = results.filter((result) => result.status === "fulfilled");
      const refused = results.filter((result) =>
        result.status === "rejected" && result.reason instanceof StoredLimitError &&
        result.reason.held === 2
      );
      assert.equal(created.length, 1, `round ${round}: ${JSON.stringify(results)}`);
      assert.equal(refused.length, 1, `round ${round}`);
      stale = (await first.get(`x${round}`)) ? `x${round}` : `y${round}`;
      staleVersion = (await first.get(stale))!.version;
      await withDirect(fixture.redisUrl, async (send) => {
        assert.equal(await send("HLEN", "es:{@definitions}:index:api"), 2, `round ${round}`);
      });
    }
  },
);

redisTest(
  "RedisDefinitionStore: a deletion whose index step failed after its record was written frees its place at the next refusal",
  async (fixture) => {
    let failIndex = false;
    const flaky = redisDefinitionsWith(fixture, { maxApiStreams: 1 }, (redis) =>
      new Proxy(redis, {
        get(target, property, receiver) {
          const value = Reflect.get(target, property, receiver);
          if (property !== "evalsha" && property !== "eval") return value;
          return (script: string, keys: string[], args: string[]) =>
            failIndex && String(args[0]).includes('"mark"')
              ? Promise.reject(new Error("connection lost"))
              : value.call(target, script, keys, args);
        },
      }));
    await flaky.write("a", record(), 0);
    failIndex = true;
    await assert.rejects(
      flaky.write("a", record({ deleted: true, definition: null, counters: {} }), 1),
    );
    failIndex = false;
    // The record says deleted (a retried DELETE would be a 404), yet the place was not freed.
    assert.equal((await flaky.get("a"))?.deleted, true);
    assert.deepEqual(await flaky.write("b", record(), 0), { status: "written", version: 1 });
    await assert.rejects(flaky.write("c", record(), 0), StoredLimitError);
  },
);

redisTest(
  "RedisDefinitionStore: a recount gives no place to a stream deleted after the recount read it",
  async (fixture) => {
    let holdRecount = false;
    let released!: () => void;
    const release = new Promise<void>((resolve) => released = resolve);
    let reachedRecount!: () => void;
    const recountReached = new Promise<void>((resolve) => reachedRecount = resolve);
    const recounting = redisDefinitionsWith(
      fixture,
      { maxApiStreams: 2 },
      (redis) =>
        new Proxy(redis, {
          get(target, property, receiver) {
            const value = Reflect.get(target, property, receiver);
            if (property !== "evalsha" && property !== "eval") return value;
            return async (script: string, keys: string[], args: string[]) => {
              if (holdRecount && String(args[0]).includes('"lease"')) {
                holdRecount = false;
                reachedRecount();
                await release;
              }
              return await value.call(target, script, keys, args);
            };
          },
        }),
    );
    const other = redisDefinitions(fixture, 2);
    await other.write("a", record(), 0);
    // An old instance creates "c" (no place), so "b" takes the second place: 3 live.
    await oldReleaseWrite(fixture.redisUrl, "c", 1, false);
    await other.write("b", record(), 0);
    holdRecount = true;
    const refused = recounting.write("d", record(), 0);
    // The recount has read "c" live; it is deleted before the recount writes.
    await recountReached;
    await other.write("c", record({ deleted: true, definition: null, counters: {} }), 1);
    released();
    await assert.rejects(
      refused,
      (error: unknown) => error instanceof StoredLimitError && error.held === 2,
    );
    await withDirect(fixture.redisUrl, async (send) => {
      assert.deepEqual(
        ((await send("HKEYS", "es:{@definitions}:index:api")) as string[]).sort(),
        ["a", "b"],
      );
    });
  },
);
