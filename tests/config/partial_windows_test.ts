/**
 * A counter added to a stream that already has events (or removed and added back) says which of
 * its windows miss some: `"partial": true` on the windows starting before the stream's watermark
 * at the time it came in (a session: before it plus the gap), in counter reads, current reads and
 * `window.closed` webhook payloads, through HTTP, on the memory store and on a real Redis. The
 * bound is in the definition record, so another instance serves it too; a counter the stream had
 * from its start, and a stream created anew, are never partial.
 */
import assert from "node:assert/strict";
import type { OpenAPIHono } from "@hono/zod-openapi";
import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import {
  type DefinitionStore,
  fromCellUpdates,
  MemoryDefinitionStore,
  MemoryStore,
  RedisDefinitionStore,
  RedisStore,
  type Store,
  StreamChangedError,
} from "../../src/store/mod.ts";
import { type RedisFixture, redisTest, restClient, withDirect } from "../_redis.ts";
import { RacingDefinitions } from "./_racing_definitions.ts";
import { Receiver } from "../fanout/webhooks/_receiver.ts";
import { call, register, setup, sweep } from "../fanout/webhooks/_setup.ts";

/** A minute's start, 10 minutes ago: Redis expires panes by the wall clock. */
const T0 = Math.floor(Date.now() / 60_000) * 60_000 - 600_000;
const iso = (seconds: number) => new Date(T0 + seconds * 1000).toISOString();

const COUNT = { window: { tumbling: "1m" }, aggregate: "count" };
const HOP = { window: { hopping: "2m", every: "1m" }, aggregate: "count" };
const SESSION = { window: { session: "30s" }, aggregate: "count" };

function definition(counters: Record<string, unknown>) {
  return { time: { field: "ts", lateness: "10s" }, counters };
}

/**
 * Where an instance keeps definitions and data: the same for every memory instance (on the first
 * one's clock), a new client of the same Redis for each Redis one.
 */
type Backend = (clock: { now: number }) => { definitions: DefinitionStore; store: Store };

function memoryBackend(): Backend {
  const definitions = new MemoryDefinitionStore();
  let store: MemoryStore | undefined;
  return (clock) => {
    store ??= new MemoryStore({ now: () => clock.now, definitions, definitionsHere: true });
    return { definitions, store };
  };
}

function redisBackend(fixture: RedisFixture): Backend {
  return () => {
    const redis = restClient(fixture);
    return {
      definitions: new RedisDefinitionStore(redis),
      store: new RedisStore(redis, { definitionsHere: true }),
    };
  };
}

/** An instance: a registry over the backend's definitions, an app with a webhook service. */
async function instance(
  backend: Backend,
  clock: { now: number },
  config: object = {},
  racing?: (definitions: DefinitionStore) => RacingDefinitions,
) {
  const held = backend(clock);
  const { store } = held;
  const definitions = racing ? racing(held.definitions) : held.definitions;
  const streams = new StreamRegistry(compileConfig({ streams: config }), {
    definitions,
    now: () => clock.now,
    data: store,
  });
  const wrapped = streams.wrap(store);
  return { ...(await setup({ clock, streams, store: wrapped })), streams };
}

async function events(app: OpenAPIHono, seconds: number[]) {
  const res = await call(
    app,
    "POST",
    "/v1/streams/s/events",
    seconds.map((second) => ({ ts: iso(second) })),
  );
  assert.equal(res.status, 202, res.text);
}

/** A counter's windows as [start second, value, partial], newest first. */
async function windows(app: OpenAPIHono, counter: string) {
  const res = await call(app, "GET", `/v1/streams/s/counters/${counter}`);
  assert.equal(res.status, 200, res.text);
  return (res.body.windows as Array<{ start: string; value: number; partial?: boolean }>).map(
    (row) => [(Date.parse(row.start) - T0) / 1000, row.value, row.partial ?? false],
  );
}

async function putStream(app: OpenAPIHono, counters: Record<string, unknown>) {
  const res = await call(app, "PUT", "/v1/streams/s", definition(counters));
  assert.ok(res.status === 200 || res.status === 201, res.text);
}

const scenarios: Record<string, (backend: Backend) => Promise<void>> = {
  async "counters added to an API stream read, close and send their partial windows as such"(
    backend,
  ) {
    const clock = { now: T0 + 100_000 };
    const first = await instance(backend, clock);
    const receiver = await Receiver.start(() => clock.now);
    try {
      await putStream(first.app, { n: COUNT });
      const { secret } = await register(first.app, { url: receiver.url(), streams: ["s"] });
      receiver.secrets = [secret];
      await events(first.app, [10, 70]);
      // Added once the watermark is at 70 s: what came before is not in them.
      await putStream(first.app, { n: COUNT, added: COUNT, hop: HOP, sess: SESSION });
      await events(first.app, [75]);
      const current = await call(first.app, "GET", "/v1/streams/s/counters/added/current");
      assert.deepEqual(
        current.body.windows.map((row: { value: number; partial?: boolean }) => [
          row.value,
          row.partial,
        ]),
        [[1, true]],
      );
      clock.now = T0 + 300_000;
      await events(first.app, [130, 200]);

      assert.deepEqual(await windows(first.app, "n"), [
        [180, 1, false],
        [120, 1, false],
        [60, 2, false],
        [0, 1, false],
      ]);
      assert.deepEqual(await windows(first.app, "added"), [
        [180, 1, false],
        [120, 1, false],
        [60, 1, true],
      ]);
      // A hopping window holds the events from its start on: those starting by 70 s missed some.
      assert.deepEqual(await windows(first.app, "hop"), [
        [180, 1, false],
        [120, 2, false],
        [60, 2, true],
        [0, 1, true],
      ]);
      // A session starting within the gap after 70 s would have taken the event at 70 s.
      assert.deepEqual(await windows(first.app, "sess"), [
        [200, 1, false],
        [130, 1, false],
        [75, 1, true],
      ]);

      // Another instance reads the bounds from the record.
      const second = await instance(backend, clock);
      try {
        assert.deepEqual(await windows(second.app, "added"), await windows(first.app, "added"));
      } finally {
        await second.close();
      }

      // The windows that closed reach the receiver flagged, the others without the field.
      await sweep(first.app, first.webhooks);
      await first.webhooks.idle();
      const closed = receiver.received.map((item) => item.payload)
        .filter((payload) => payload.type === "window.closed")
        .map((payload) => [
          payload.data.counter,
          (Date.parse(payload.data.start) - T0) / 1000,
          payload.data.value,
          payload.data.partial,
        ])
        .sort((a, b) => String(a[0]).localeCompare(String(b[0])) || Number(a[1]) - Number(b[1]));
      assert.deepEqual(closed, [
        ["added", 60, 1, true],
        ["added", 120, 1, undefined],
        ["hop", 0, 1, true],
        ["hop", 60, 2, true],
        ["n", 0, 1, undefined],
        ["n", 60, 2, undefined],
        ["n", 120, 1, undefined],
        ["sess", 75, 1, true],
        ["sess", 130, 1, undefined],
      ]);
      assert.ok(receiver.received.every((item) => item.verifiedWith.length === 1));

      // Removed, then added back at 250 s: it missed what came meanwhile, so up to there.
      await putStream(first.app, { n: COUNT });
      await events(first.app, [250]);
      await putStream(first.app, { n: COUNT, added: COUNT });
      await events(first.app, [260]);
      assert.deepEqual(await windows(first.app, "added"), [
        [240, 1, true],
        [180, 1, true],
        [120, 1, true],
        [60, 1, true],
      ]);
      // Deleted and created again: a new stream, counted from its start.
      assert.equal((await call(first.app, "DELETE", "/v1/streams/s")).status, 204);
      await putStream(first.app, { n: COUNT, added: COUNT });
      await events(first.app, [270]);
      assert.deepEqual(await windows(first.app, "added"), [[240, 1, false]]);
    } finally {
      await first.close();
      await receiver.close();
    }
  },

  async "a counter a redeploy adds to a config stream is partial before the watermark then"(
    backend,
  ) {
    const clock = { now: T0 + 100_000 };
    const old = await instance(backend, clock, { s: definition({ n: COUNT }) });
    await old.streams.registerConfig();
    await events(old.app, [10, 70]);
    await old.close();
    const grown = { s: definition({ n: COUNT, added: COUNT }) };
    const next = await instance(backend, clock, grown);
    await next.streams.registerConfig();
    // Another instance of the same deployment finds the record as it is, bounds included.
    const sibling = await instance(backend, clock, grown);
    await sibling.streams.registerConfig();
    try {
      await events(next.app, [75, 130]);
      for (const app of [next.app, sibling.app]) {
        assert.deepEqual(await windows(app, "added"), [[120, 1, false], [60, 1, true]]);
        assert.deepEqual(await windows(app, "n"), [[120, 1, false], [60, 2, false], [0, 1, false]]);
      }
      assert.equal(next.streams.describe("s")?.version, 2);
      assert.equal(sibling.streams.describe("s")?.version, 2);
    } finally {
      await next.close();
      await sibling.close();
    }
  },

  async "a batch applied between a PUT's read of the watermark and its write is within the partial windows of the counter it adds"(
    backend,
  ) {
    const clock = { now: T0 + 300_000 };
    let racing: RacingDefinitions | undefined;
    const first = await instance(backend, clock, {}, (definitions) => {
      racing = new RacingDefinitions(definitions);
      return racing;
    });
    try {
      await putStream(first.app, { n: COUNT });
      await events(first.app, [10, 70]);
      racing!.beforeWrite = async () => {
        // After the PUT read the watermark (70 s), before its write: under the definition
        // without \`added\`, the watermark moves to 130 s.
        await events(first.app, [130]);
      };
      await putStream(first.app, { n: COUNT, added: COUNT });
      assert.equal(racing!.beforeWrite, undefined);
      await events(first.app, [140]);
      assert.deepEqual(await windows(first.app, "n"), [[120, 2, false], [60, 1, false], [
        0,
        1,
        false,
      ]]);
      // The event at 130 s is not in \`added\`: its window is partial, here and on another instance.
      assert.deepEqual(await windows(first.app, "added"), [[120, 1, true]]);
      const second = await instance(backend, clock);
      try {
        assert.deepEqual(await windows(second.app, "added"), [[120, 1, true]]);
      } finally {
        await second.close();
      }
    } finally {
      await first.close();
    }
  },

  async "a batch of an instance not yet on a PUT that adds a counter is made again on it, counted in it"(
    backend,
  ) {
    const clock = { now: T0 + 300_000 };
    const first = await instance(backend, clock);
    const second = await instance(backend, clock);
    try {
      await putStream(first.app, { n: COUNT });
      // The second instance serves version 1 (found by its first request).
      await events(second.app, [10, 70]);
      assert.equal(second.streams.describe("s")?.version, 1);
      await putStream(first.app, { n: COUNT, added: COUNT });
      // Not polled yet: its batch, built without \`added\`, is refused, and made again on version 2.
      assert.equal(second.streams.describe("s")?.version, 1);
      await events(second.app, [130]);
      for (const app of [first.app, second.app]) {
        assert.deepEqual(await windows(app, "added"), [[120, 1, false]]);
        assert.deepEqual(await windows(app, "n"), [[120, 1, false], [60, 1, false], [0, 1, false]]);
      }
      assert.equal(second.streams.describe("s")?.version, 2);
    } finally {
      await first.close();
      await second.close();
    }
  },

  async "a batch built before a PUT that adds a counter and applied after it is refused, though the instance serves the new definition by then"(
    backend,
  ) {
    const clock = { now: T0 + 300_000 };
    const first = await instance(backend, clock);
    try {
      await putStream(first.app, { n: COUNT });
      await events(first.app, [10, 70]);
      // Built on version 1 (without \`added\`), as the ingest pipeline builds one.
      const built = first.streams.describe("s")!.stream;
      const batch = fromCellUpdates({
        stream: "s",
        nowMs: clock.now,
        latenessMs: built.latenessMs,
        dedupeTtlMs: 0,
        counters: built.counterMetas,
        events: [{
          timeMs: T0 + 130_000,
          updates: [{ counter: 0, pane: T0 + 120_000, group: "[]" }],
        }],
      });
      await putStream(first.app, { n: COUNT, added: COUNT });
      assert.equal(first.streams.describe("s")?.version, 2);
      await assert.rejects(first.streams.wrap(first.store).applyBatch(batch), StreamChangedError);
      assert.deepEqual(await windows(first.app, "n"), [[60, 1, false], [0, 1, false]]);
    } finally {
      await first.close();
    }
  },

  async "a stream created with its counters, or before any event, has no partial window"(backend) {
    const clock = { now: T0 + 100_000 };
    const { app, close } = await instance(backend, clock);
    try {
      await putStream(app, { n: COUNT });
      await putStream(app, { n: COUNT, early: COUNT });
      await events(app, [10, 70]);
      assert.deepEqual(await windows(app, "n"), [[60, 1, false], [0, 1, false]]);
      assert.deepEqual(await windows(app, "early"), [[60, 1, false], [0, 1, false]]);
    } finally {
      await close();
    }
  },
};

for (const [name, scenario] of Object.entries(scenarios)) {
  Deno.test(`memory: ${name}`, () => scenario(memoryBackend()));
  redisTest(`redis: ${name}`, (fixture) => scenario(redisBackend(fixture)));
}

/** The previous release's `RedisDefinitionStore.get()` (at 7044e4b), which knows no `p`. */
async function previousReleaseGet(redisUrl: string, name: string) {
  const flat = await withDirect(
    redisUrl,
    (send) => send("HGETALL", `es:{${name}}:def`),
  ) as unknown as Record<string, string> | string[];
  const raw: Record<string, string> = Array.isArray(flat)
    ? Object.fromEntries(
      Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]]),
    )
    : flat;
  return {
    name,
    source: raw.s === "config" ? "config" : "api",
    version: Number(raw.v),
    generation: Number(raw.g),
    definition: raw.x === "1" ? null : JSON.parse(raw.d),
    counters: JSON.parse(raw.c),
    deleted: raw.x === "1",
  };
}

redisTest(
  "RedisDefinitionStore: the partial bounds are a field of their own a previous release reads past and keeps when it writes the next version, and bounds of another generation (left by one) are not read",
  async (fixture) => {
    const { definitions } = redisBackend(fixture)({ now: T0 });
    const record = {
      source: "api" as const,
      generation: 1,
      definition: definition({ n: COUNT, added: COUNT }),
      counters: { n: "{}", added: "{}" },
      partialBefore: { added: T0 + 70_001 },
      deleted: false,
    };
    assert.deepEqual(await definitions.write("s", record, 0), { status: "written", version: 1 });
    assert.deepEqual((await definitions.get("s"))?.partialBefore, { added: T0 + 70_001 });
    // Another call's write is a conflict, identical or with other bounds (a call sent again
    // is written: tests/store/definitions_test.ts).
    assert.deepEqual(await definitions.write("s", record, 0), { status: "conflict", version: 1 });
    assert.deepEqual(
      await definitions.write("s", { ...record, partialBefore: { added: 1 } }, 0),
      { status: "conflict", version: 1 },
    );
    // An instance of the previous release reads the record as it always did.
    const { partialBefore: _, ...rest } = record;
    assert.deepEqual(await previousReleaseGet(fixture.redisUrl, "s"), {
      ...rest,
      name: "s",
      version: 1,
    });
    // The previous release writes the stream's next version (same generation) with the fields it
    // knows: the bounds stay, and this release reads them still.
    await withDirect(fixture.redisUrl, async (send) => {
      await send(
        "HSET",
        "es:{s}:def",
        "v",
        "2",
        "g",
        "1",
        "s",
        "api",
        "d",
        JSON.stringify(record.definition),
        "c",
        JSON.stringify(record.counters),
        "x",
        "0",
      );
    });
    const next = await definitions.get("s");
    assert.deepEqual([next?.version, next?.partialBefore], [2, { added: T0 + 70_001 }]);
    // The previous release deletes the stream and creates it again (generation 2), writing the
    // fields it knows: the bounds it leaves are generation 1's, not read for generation 2.
    await withDirect(fixture.redisUrl, async (send) => {
      await send(
        "HSET",
        "es:{s}:def",
        "v",
        "2",
        "g",
        "2",
        "s",
        "api",
        "d",
        JSON.stringify(record.definition),
        "c",
        JSON.stringify(record.counters),
        "x",
        "0",
      );
    });
    const again = await definitions.get("s");
    assert.equal(again?.generation, 2);
    assert.equal(again?.partialBefore, undefined);
    // A write without bounds removes the field (`w` is the id of the write that made the record).
    await definitions.write("s", { ...record, generation: 2, partialBefore: {} }, 2);
    const fields = await withDirect(fixture.redisUrl, (send) => send("HKEYS", "es:{s}:def"));
    assert.deepEqual((fields as string[]).sort(), ["c", "d", "g", "s", "v", "w", "x"]);
  },
);
