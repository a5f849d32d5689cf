/**
 * An ingest into a stream deleted meanwhile is a 404 that writes nothing, also one queued in group
 * commit behind a running apply, or inside the store's apply, when the DELETE came: on the memory
 * store and on Redis.
 */
import assert from "node:assert/strict";
import { createApp } from "../../src/app.ts";
import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { GroupCommitter } from "../../src/ingest/mod.ts";
import {
  type DefinitionStore,
  generationKey,
  MemoryDefinitionStore,
  MemoryStore,
  RedisDefinitionStore,
  RedisStore,
  type Store,
} from "../../src/store/mod.ts";
import { redisTest, restClient } from "../_redis.ts";

const SIGNUPS = {
  time: { field: "t" },
  counters: { perMinute: { window: { tumbling: "1m" }, groupBy: ["plan"], aggregate: "count" } },
};

/** `store` whose applies wait at the gate until it opens; `entered` resolves at the first. */
function gated(store: Store) {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => open = resolve);
  let entered!: () => void;
  const first = new Promise<void>((resolve) => entered = resolve);
  const wrapped = new Proxy(store, {
    get(target, property) {
      if (property === "applyBatch") {
        return async (...args: Parameters<Store["applyBatch"]>) => {
          entered();
          await gate;
          return await target.applyBatch(...args);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { store: wrapped, open, entered: first };
}

async function deletedWhileQueued(store: Store, definitions: DefinitionStore) {
  const streams = new StreamRegistry(compileConfig({ streams: {} }), { definitions, data: store });
  const { store: slow, open, entered } = gated(store);
  const groupCommit = new GroupCommitter(streams.wrap(slow));
  const app = createApp({ streams, store: slow, keys: await KeyRing.parse(""), groupCommit });
  const put = await app.request("/v1/streams/signups", {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(SIGNUPS),
  });
  assert.equal(put.status, 201);
  const generation = streams.generationOf("signups");
  const ingest = (plan: string) =>
    app.request("/v1/streams/signups/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify([{ t: new Date().toISOString(), plan }]),
    });
  // The first is inside the store's apply, the second waits for it in group commit.
  const inside = ingest("inside");
  await entered;
  const queued = ingest("queued");
  while (groupCommit.stats.waiting === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  const deleted = await app.request("/v1/streams/signups", { method: "DELETE" });
  assert.equal(deleted.status, 204);
  open();
  for (const response of [await inside, await queued]) {
    assert.equal(response.status, 404, await response.clone().text());
    assert.equal((await response.json()).error.code, "stream_not_found");
  }
  assert.equal((await ingest("after")).status, 404);
  const stats = await store.stats(generationKey("signups", generation), []);
  assert.deepEqual([stats.accepted, stats.applied], [0, 0]);
  // Nor in any generation after it.
  const next = await store.stats(generationKey("signups", generation + 1), []);
  assert.deepEqual([next.accepted, next.applied], [0, 0]);
}

Deno.test("Memory store: an ingest inside the apply or queued in group commit when its stream is deleted is a 404 and writes nothing", async () => {
  const definitions = new MemoryDefinitionStore();
  await deletedWhileQueued(new MemoryStore({ definitions, definitionsHere: true }), definitions);
});

redisTest(
  "Redis store: an ingest inside the apply or queued in group commit when its stream is deleted is a 404 and writes nothing",
  async (fixture) => {
    const redis = restClient(fixture);
    await deletedWhileQueued(
      new RedisStore(redis, { definitionsHere: true }),
      new RedisDefinitionStore(redis),
    );
  },
);
