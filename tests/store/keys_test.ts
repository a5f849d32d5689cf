/** One contract suite for the API-key store, run against memory and Redis. */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import {
  type ApiKeyRecord,
  compareKeys,
  KEY_PAGE_MAX_BYTES,
  KeyConflictError,
  type KeyStore,
} from "../../src/store/keys.ts";
import { encodeCursor, InvalidCursorError, type Page } from "../../src/store/deliveries.ts";
import { StoredLimitError } from "../../src/store/limits.ts";
import { MemoryKeyStore } from "../../src/store/memory/key_store.ts";
import { RedisKeyStore } from "../../src/store/redis/key_store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import { type RedisFixture, redisTest, restClient, withDirect } from "../_redis.ts";
import { startDroppingProxy } from "../_upstash_proxy.ts";
import { refusedWhole, send } from "./redis/_key_checks.ts";

function key(id: string, overrides: Partial<ApiKeyRecord> = {}): ApiKeyRecord {
  return JSON.parse(JSON.stringify({
    id,
    type: "publishable",
    hash: `hash-of-${id}`,
    prefix: "pk_abcd",
    scopes: ["ingest"],
    streams: ["orders"],
    origins: ["https://shop.example"],
    rateLimit: { eventsPerSecond: 2.5, burst: 10 },
    description: "Shop pages",
    expiresAt: 1_900_000_000_000,
    createdAt: 1_800_000_000_000,
    ...overrides,
  }));
}

function redisKeyStore(fixture: RedisFixture): RedisKeyStore {
  const redis = restClient(fixture);
  return new RedisKeyStore(redis);
}

const scenarios: Record<string, (store: KeyStore, fixture?: RedisFixture) => Promise<void>> = {
  async "createKey() stores a key that keyByHash(), getKey() and listKeys() return whole"(store) {
    await store.createKey(key("key_b", { createdAt: 2 }));
    await store.createKey(key("key_a", { createdAt: 2, type: "secret", streams: undefined }));
    await store.createKey(key("key_c", { createdAt: 1 }));
    assert.deepEqual(await store.keyByHash("hash-of-key_b"), key("key_b", { createdAt: 2 }));
    assert.deepEqual(
      await store.getKey("key_a"),
      key("key_a", { createdAt: 2, type: "secret", streams: undefined }),
    );
    assert.equal(await store.keyByHash("hash-of-nothing"), null);
    assert.equal(await store.getKey("key_none"), null);
    assert.deepEqual((await store.listKeys()).map((item) => item.id), ["key_c", "key_a", "key_b"]);
  },

  async "createKey() refuses an id or a digest that exists"(store) {
    await store.createKey(key("key_a"));
    await assert.rejects(store.createKey(key("key_a", { hash: "other" })), KeyConflictError);
    await assert.rejects(
      store.createKey(key("key_b", { hash: "hash-of-key_a" })),
      KeyConflictError,
    );
    assert.equal((await store.listKeys()).length, 1);
  },

  async "createKey() of the very record it holds is the same call sent again: it succeeds"(store) {
    await store.createKey(key("key_a"));
    await store.createKey(key("key_a"));
    assert.deepEqual(await store.listKeys(), [key("key_a")]);
    // Only the very record: another creation time is another call.
    await assert.rejects(store.createKey(key("key_a", { createdAt: 3 })), KeyConflictError);
  },

  async "a key whose description holds a lone surrogate (stored before POST /v1/keys refused one) is listed, paged and deleted as any"(
    store,
  ) {
    await store.createKey(key("key_a", { createdAt: 1 }));
    await store.createKey(key("key_b", { createdAt: 2, description: "x\ud800y" }));
    await store.createKey(key("key_c", { createdAt: 3 }));
    const first = await store.pageKeys({ limit: 2 });
    assert.deepEqual(first.items.map((item) => item.id), ["key_a", "key_b"]);
    assert.equal(first.items[1].description, "x\ud800y");
    const second = await store.pageKeys({ limit: 2, cursor: first.nextCursor! });
    assert.deepEqual(second.items.map((item) => item.id), ["key_c"]);
    assert.equal(await store.deleteKey("key_b"), true);
    assert.equal(await store.keyByHash("hash-of-key_b"), null);
    assert.deepEqual((await store.pageKeys({ limit: 10 })).items.map((item) => item.id), [
      "key_a",
      "key_c",
    ]);
    // Its digest is free again.
    await store.createKey(key("key_d", { hash: "hash-of-key_b" }));
  },

  async "deleteKey() removes the key and its digest, and says whether there was one"(store) {
    await store.createKey(key("key_a"));
    assert.equal(await store.deleteKey("key_a"), true);
    assert.equal(await store.deleteKey("key_a"), false);
    assert.equal(await store.keyByHash("hash-of-key_a"), null);
    assert.equal(await store.getKey("key_a"), null);
    assert.deepEqual(await store.listKeys(), []);
    // The digest is free again.
    await store.createKey(key("key_b", { hash: "hash-of-key_a" }));
  },

  async "pageKeys() pages oldest first by limit and cursor; a key added or deleted between pages is seen at its place or not at all"(
    store,
  ) {
    for (
      const [id, createdAt] of [["key_c", 1], ["key_a", 1], ["key_e", 3], ["key_b", 2]] as const
    ) {
      await store.createKey(key(id, { createdAt, hash: `hash-of-${id}` }));
    }
    const first = await store.pageKeys({ limit: 2 });
    assert.deepEqual(first.items.map((item) => item.id), ["key_a", "key_c"]);
    assert.deepEqual(first.items[0], key("key_a", { createdAt: 1 }));
    assert.notEqual(first.nextCursor, null);
    // Between pages: one created after the cursor's place, one before it, one deleted ahead.
    await store.createKey(key("key_d", { createdAt: 3 }));
    await store.createKey(key("key_0", { createdAt: 0 }));
    assert.equal(await store.deleteKey("key_b"), true);
    const second = await store.pageKeys({ limit: 2, cursor: first.nextCursor });
    assert.deepEqual(second.items.map((item) => item.id), ["key_d", "key_e"]);
    assert.equal(second.nextCursor, null);
    // A limit past the end: every key, no cursor.
    const all = await store.pageKeys({ limit: 1000 });
    assert.deepEqual(all.items.map((item) => item.id), [
      "key_0",
      "key_a",
      "key_c",
      "key_d",
      "key_e",
    ]);
    assert.equal(all.nextCursor, null);
    assert.deepEqual(await store.pageKeys({ limit: 5 }), { ...all, nextCursor: null });
    // Exactly full: a cursor, then an empty last page.
    const four = await store.pageKeys({ limit: 4 });
    assert.equal(four.items.length, 4);
    assert.deepEqual(await store.pageKeys({ limit: 4, cursor: four.nextCursor }), {
      items: [key("key_e", { createdAt: 3 })],
      nextCursor: null,
    });
    // A cursor no page of this list gave out.
    await assert.rejects(store.pageKeys({ limit: 2, cursor: "garbage!" }), InvalidCursorError);
    await assert.rejects(
      store.pageKeys({ limit: 2, cursor: encodeCursor("endpoints", { createdMs: 1, id: "x" }) }),
      InvalidCursorError,
    );
  },

  async "pageKeys() stops a page before its records pass KEY_PAGE_MAX_BYTES, with a cursor that reads on (README)"(
    store,
  ) {
    assert.equal(KEY_PAGE_MAX_BYTES, 1_000_000);
    // Records of some 300 KB in UTF-8 (150,000 'é' of two bytes each): three fit in a page.
    for (let i = 0; i < 7; i++) {
      await store.createKey(key(`key_${i}`, { createdAt: i, description: "é".repeat(150_000) }));
    }
    // One record alone past the bound (1.2 MB) is a page of its own.
    await store.createKey(key("key_huge", { createdAt: 7, description: "x".repeat(1_200_000) }));
    const pages: string[][] = [];
    let cursor: string | null = null;
    do {
      const page: Page<ApiKeyRecord> = await store.pageKeys({ limit: 10, cursor });
      pages.push(page.items.map((item) => item.id));
      cursor = page.nextCursor;
    } while (cursor !== null);
    assert.deepEqual(pages, [
      ["key_0", "key_1", "key_2"],
      ["key_3", "key_4", "key_5"],
      ["key_6"],
      ["key_huge"],
    ]);
    // A limit the bytes do not reach first is kept.
    assert.deepEqual((await store.pageKeys({ limit: 2 })).items.map((item) => item.id), [
      "key_0",
      "key_1",
    ]);
  },

  async "pageKeys() continues after a cursor whose key was deleted, and pages keys of one millisecond by id"(
    store,
  ) {
    // Ids in byte order: digits before letters, shorter before longer.
    const ids = ["key_b", "key_a1", "key_9", "key_a", "key_c", "key_0"];
    for (const id of ids) await store.createKey(key(id, { createdAt: 5 }));
    await store.createKey(key("key_z", { createdAt: 4 }));
    await store.createKey(key("key_y", { createdAt: 10_000_000_000_000 }));
    const first = await store.pageKeys({ limit: 3 });
    assert.deepEqual(first.items.map((item) => item.id), ["key_z", "key_0", "key_9"]);
    assert.equal(await store.deleteKey("key_9"), true);
    const second = await store.pageKeys({ limit: 3, cursor: first.nextCursor });
    assert.deepEqual(second.items.map((item) => item.id), ["key_a", "key_a1", "key_b"]);
    const third = await store.pageKeys({ limit: 3, cursor: second.nextCursor });
    assert.deepEqual(third.items.map((item) => item.id), ["key_c", "key_y"]);
    assert.equal(third.nextCursor, null);
  },
};

for (const [name, scenario] of Object.entries(scenarios)) {
  Deno.test(`MemoryKeyStore: ${name}`, () => scenario(new MemoryKeyStore()));
  redisTest(`RedisKeyStore: ${name}`, (fixture) => scenario(redisKeyStore(fixture)));
}

redisTest("RedisKeyStore keeps keys apart from a stream called 'keys'", async (fixture) => {
  const redis = restClient(fixture);
  const keys = new RedisKeyStore(redis);
  await keys.createKey(key("key_a"));
  const streams = new RedisStore(redis);
  assert.ok(!(await redis.keys("*")).some((name) => name.startsWith(streams.keyPrefix("keys"))));
});

redisTest(
  "RedisKeyStore keeps keys under es:{$apikeys}: without a TTL, as the README says",
  async (fixture) => {
    const redis = restClient(fixture);
    await new RedisKeyStore(redis).createKey(key("key_a"));
    const names = await redis.keys("*");
    assert.ok(names.length > 0);
    for (const name of names) {
      assert.ok(name.startsWith("es:{$apikeys}:"), name);
      assert.equal(await redis.pttl(name), -1, `${name} has a TTL`);
    }
  },
);

redisTest(
  "RedisKeyStore: a creation the client sends again after its connection was lost succeeds once",
  async (fixture) => {
    // The script in Redis's cache first, so the dropped request is the EVALSHA that runs it.
    await redisKeyStore(fixture).createKey(key("key_warm"));
    const proxy = startDroppingProxy({ targetUrl: fixture.restUrl });
    try {
      const redis = new Redis({ url: proxy.url, token: fixture.restToken, enableTelemetry: false });
      const keys = new RedisKeyStore(redis);
      proxy.dropNextConnection(() => true);
      // Redis created the key, the reply was lost and the client sent the same call again.
      await keys.createKey(key("key_a"));
      assert.equal(proxy.dropped, 1);
      assert.deepEqual(await keys.getKey("key_a"), key("key_a"));
      assert.equal((await keys.listKeys()).length, 2);
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "RedisKeyStore: a deletion the client sends again after its connection was lost answers as the first",
  async (fixture) => {
    const direct = redisKeyStore(fixture);
    await direct.createKey(key("key_a"));
    // The script in Redis's cache first, so the dropped request is the EVALSHA that runs it.
    assert.equal(await direct.deleteKey("key_none"), false);
    const proxy = startDroppingProxy({ targetUrl: fixture.restUrl });
    try {
      const redis = new Redis({ url: proxy.url, token: fixture.restToken, enableTelemetry: false });
      const keys = new RedisKeyStore(redis);
      proxy.dropNextConnection(() => true);
      assert.equal(await keys.deleteKey("key_a"), true);
      assert.equal(proxy.dropped, 1);
      assert.equal(await keys.getKey("key_a"), null);
      // Another deletion of it is another call: there is nothing left to delete.
      assert.equal(await keys.deleteKey("key_a"), false);
      // Its answer is kept a minute, under its one-time token.
      const kept = (await redis.keys("es:{$apikeys}:call:*")) as string[];
      assert.equal(kept.length, 1);
      const life = await redis.pttl(kept[0]);
      assert.ok(life > 55_000 && life <= 60_000, `PTTL ${life}`);
    } finally {
      await proxy.close();
    }
  },
);

/** The bound of keys (`maxKeys`), on both stores. */
const boundScenarios: Record<
  string,
  (make: (maxKeys: number) => KeyStore) => Promise<void>
> = {
  async "createKey() past maxKeys throws StoredLimitError and stores nothing; a deletion frees a place"(
    make,
  ) {
    const store = make(2);
    await store.createKey(key("key_a"));
    await store.createKey(key("key_b"));
    const refused = await store.createKey(key("key_c")).then(
      () => assert.fail("created past the bound"),
      (error) => error,
    );
    assert.ok(refused instanceof StoredLimitError, String(refused));
    assert.deepEqual([refused.kind, refused.max, refused.held], ["keys", 2, 2]);
    assert.equal(await store.getKey("key_c"), null);
    assert.equal(await store.keyByHash("hash-of-key_c"), null);
    assert.deepEqual((await store.listKeys()).map((item) => item.id), ["key_a", "key_b"]);
    // The same call sent again is no new key: it still succeeds at the bound.
    await store.createKey(key("key_b"));
    assert.equal(await store.deleteKey("key_a"), true);
    await store.createKey(key("key_c"));
    assert.deepEqual((await store.listKeys()).map((item) => item.id), ["key_b", "key_c"]);
  },
  async "an expired key counts toward maxKeys until it is deleted"(make) {
    const store = make(1);
    // Expired long before now (2001): it no longer works, yet it is stored and counted.
    await store.createKey(key("key_old", { expiresAt: 1_000_000_000_000 }));
    await assert.rejects(
      store.createKey(key("key_new")),
      (error: unknown) => error instanceof StoredLimitError && error.held === 1,
    );
    assert.equal(await store.deleteKey("key_old"), true);
    await store.createKey(key("key_new"));
  },
};

for (const [name, scenario] of Object.entries(boundScenarios)) {
  Deno.test(`MemoryKeyStore: ${name}`, () =>
    scenario((maxKeys) => new MemoryKeyStore({ maxKeys })));
  redisTest(`RedisKeyStore: ${name}`, (fixture) =>
    scenario((maxKeys) =>
      new RedisKeyStore(
        restClient(fixture),
        { maxKeys },
      )
    ));
}

redisTest(
  "RedisKeyStore: two instances racing for the last place under maxKeys: one creates, the other is refused",
  async (fixture) => {
    const instance = () =>
      new RedisKeyStore(
        restClient(fixture),
        { maxKeys: 3 },
      );
    const [first, second] = [instance(), instance()];
    await first.createKey(key("key_a"));
    await second.createKey(key("key_b"));
    // Many rounds: each time both send their creation at once for the one place left.
    for (let round = 0; round < 20; round++) {
      const results = await Promise.allSettled([
        first.createKey(key(`key_x${round}`)),
        second.createKey(key(`key_y${round}`)),
      ]);
      const created = results.filter((result) => result.status === "fulfilled");
      const refused = results.filter((result) =>
        result.status === "rejected" && result.reason instanceof StoredLimitError
      );
      assert.equal(created.length, 1, `round ${round}: ${JSON.stringify(results)}`);
      assert.equal(refused.length, 1, `round ${round}`);
      assert.equal((await first.listKeys()).length, 3);
      const winner = (await first.listKeys()).find((item) => item.id.endsWith(String(round)));
      assert.equal(await second.deleteKey(winner!.id), true);
    }
  },
);

/** Redis's command counts since the last CONFIG RESETSTAT, without INFO's own. */
async function commandCalls(fixture: RedisFixture): Promise<Record<string, number>> {
  const info = String(await withDirect(fixture.redisUrl, (send) => send("INFO", "commandstats")));
  return Object.fromEntries(
    [...info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)]
      .filter((match) => match[1] !== "info")
      .map((match) => [match[1], Number(match[2])]),
  );
}

redisTest(
  "RedisKeyStore: a page of keys is one script that reads only the page's records, through the index of places (README)",
  async (fixture) => {
    const keys = redisKeyStore(fixture);
    for (let i = 0; i < 30; i++) {
      await keys.createKey(key(`key_${String(i).padStart(2, "0")}`, { createdAt: i }));
    }
    // Once, so the script is loaded (a first EVALSHA is refused and sent again as EVAL).
    await keys.pageKeys({ limit: 1 });
    let cursor: string | null = null;
    for (const expected of [["key_00", "key_04"], ["key_05", "key_09"]]) {
      await withDirect(fixture.redisUrl, (send) => send("CONFIG", "RESETSTAT"));
      const page: Awaited<ReturnType<RedisKeyStore["pageKeys"]>> = await keys.pageKeys({
        limit: 5,
        cursor,
      });
      assert.deepEqual([page.items[0].id, page.items.at(-1)!.id], expected);
      // One call: six places (the page's five, and one to tell that more follow), the five
      // records' sizes, then the five records by id; no command that reads every record (HVALS,
      // HGETALL, HSCAN). The first page of a listing also checks every id (HKEYS) against the
      // index (ZRANGE): ids, not records.
      assert.deepEqual(await commandCalls(fixture), {
        evalsha: 1,
        zrangebylex: 1,
        hstrlen: 5,
        hmget: 1,
        zcard: 1,
        hlen: 1,
        ...(cursor === null ? { zrange: 1, hkeys: 1 } : {}),
      });
      cursor = page.nextCursor;
    }
  },
);

/** Writes a key as a release before the index did: its record and digest only. */
async function storeUnindexed(fixture: RedisFixture, record: ApiKeyRecord): Promise<void> {
  await withDirect(fixture.redisUrl, async (send) => {
    await send("HSET", "es:{$apikeys}:id", record.id, JSON.stringify(record));
    await send("HSET", "es:{$apikeys}:hash", record.hash, record.id);
  });
}

redisTest(
  "RedisKeyStore: keys stored before the index are indexed by the first page, in batches, and listed in order",
  async (fixture) => {
    // 250 keys of an older release, created in an order other than their ids'.
    const old = Array.from(
      { length: 250 },
      (_, i) => key(`key_${String(249 - i).padStart(3, "0")}`, { createdAt: 1000 + (i % 7) }),
    );
    for (const record of old) await storeUnindexed(fixture, record);
    const keys = redisKeyStore(fixture);
    // One created through this release, and one of the old ones deleted through it.
    await keys.createKey(key("key_new", { createdAt: 2000 }));
    assert.equal(await keys.deleteKey("key_100"), true);
    await withDirect(fixture.redisUrl, (send) => send("CONFIG", "RESETSTAT"));
    const seen: ApiKeyRecord[] = [];
    let cursor: string | null = null;
    do {
      const page: Awaited<ReturnType<RedisKeyStore["pageKeys"]>> = await keys.pageKeys({
        limit: 40,
        cursor,
      });
      seen.push(...page.items);
      cursor = page.nextCursor;
    } while (cursor !== null);
    const expected = [
      ...old.filter((item) => item.id !== "key_100"),
      key("key_new", {
        createdAt: 2000,
      }),
    ].sort(compareKeys);
    assert.deepEqual(seen, expected);
    // The records were read a batch at a time (HSCAN), never all in one call (HVALS).
    const calls = await commandCalls(fixture);
    assert.ok((calls.hscan ?? 0) > 1, JSON.stringify(calls));
    assert.equal(calls.hvals, undefined, JSON.stringify(calls));
    // Indexed once: the next page needs no rebuild.
    await withDirect(fixture.redisUrl, (send) => send("CONFIG", "RESETSTAT"));
    assert.equal((await keys.pageKeys({ limit: 3 })).items.length, 3);
    assert.deepEqual(Object.keys(await commandCalls(fixture)).sort(), [
      "evalsha",
      "hkeys",
      "hlen",
      "hmget",
      "hstrlen",
      "zcard",
      "zrange",
      "zrangebylex",
    ]);
  },
);

redisTest(
  "RedisKeyStore: a key an older release created or deleted is indexed, or its place removed, by the next page",
  async (fixture) => {
    const keys = redisKeyStore(fixture);
    for (const id of ["key_a", "key_b", "key_c"]) {
      await keys.createKey(key(id, { createdAt: id.charCodeAt(4) }));
    }
    // An older release deletes key_b (its record and digest only), then creates key_d.
    await withDirect(fixture.redisUrl, async (send) => {
      await send("HDEL", "es:{$apikeys}:id", "key_b");
      await send("HDEL", "es:{$apikeys}:hash", "hash-of-key_b");
    });
    assert.deepEqual((await keys.pageKeys({ limit: 10 })).items.map((item) => item.id), [
      "key_a",
      "key_c",
    ]);
    assert.equal(await send(fixture, "ZCARD", "es:{$apikeys}:order"), 2);
    await storeUnindexed(fixture, key("key_d", { createdAt: 1 }));
    assert.deepEqual((await keys.pageKeys({ limit: 10 })).items.map((item) => item.id), [
      "key_d",
      "key_a",
      "key_c",
    ]);
    assert.equal(await keys.deleteKey("key_d"), true);
    assert.equal(await send(fixture, "ZCARD", "es:{$apikeys}:order"), 2);
  },
);

redisTest(
  "RedisKeyStore: a creation or deletion that finds the index of places written over writes nothing and names it; a page is refused",
  async (fixture) => {
    const keys = redisKeyStore(fixture);
    await keys.createKey(key("key_a", { createdAt: 1 }));
    await storeUnindexed(fixture, key("key_b", { createdAt: 2 }));
    const order = "es:{$apikeys}:order";
    const corrupt = ["SET", order, "not a sorted set"];
    await refusedWhole(fixture, order, { corrupt, call: () => keys.createKey(key("key_c")) });
    await refusedWhole(fixture, order, { corrupt, call: () => keys.deleteKey("key_a") });
    // A page reads the index first: Redis itself refuses it, before anything is written.
    await refusedWhole(fixture, order, {
      corrupt,
      call: () => keys.pageKeys({ limit: 10 }),
      read: true,
    });
    // The index gone with the key written over: the next page rebuilds it.
    assert.deepEqual((await keys.pageKeys({ limit: 10 })).items.map((item) => item.id), [
      "key_a",
      "key_b",
    ]);
  },
);

/** Every key of a listing, following `nextCursor` from the first page. */
async function listing(keys: KeyStore, limit: number): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  do {
    const page: Page<ApiKeyRecord> = await keys.pageKeys({ limit, cursor });
    ids.push(...page.items.map((item) => item.id));
    cursor = page.nextCursor;
  } while (cursor !== null);
  return ids;
}

/** Deletes a key as a release before the index did: its record and digest only. */
async function deleteUnindexed(fixture: RedisFixture, id: string): Promise<void> {
  await withDirect(fixture.redisUrl, async (send) => {
    await send("HDEL", "es:{$apikeys}:id", id);
    await send("HDEL", "es:{$apikeys}:hash", `hash-of-${id}`);
  });
}

redisTest(
  "RedisKeyStore: an older release that created one key and deleted another (as many records as places) is noticed by the next listing's first page",
  async (fixture) => {
    const keys = redisKeyStore(fixture);
    for (let i = 0; i < 30; i++) {
      await keys.createKey(key(`key_${String(i).padStart(2, "0")}`, { createdAt: 100 + i }));
    }
    // One deleted and one created through an older release: 30 records, 30 places, one stale.
    await deleteUnindexed(fixture, "key_07");
    await storeUnindexed(fixture, key("key_new", { createdAt: 500 }));
    const expected = [
      ...Array.from({ length: 30 }, (_, i) => `key_${String(i).padStart(2, "0")}`)
        .filter((id) => id !== "key_07"),
      "key_new",
    ];
    assert.deepEqual(await listing(keys, 10), expected);
    // The index was rebuilt: the stale place is gone, the new key has one.
    assert.equal(await send(fixture, "ZCARD", "es:{$apikeys}:order"), 30);
    assert.equal(
      await send(fixture, "ZSCORE", "es:{$apikeys}:order", `${"500".padStart(16, "0")}.key_new`),
      "0",
    );
    // Once rebuilt, a first page checks the ids again and finds nothing to rebuild.
    await withDirect(fixture.redisUrl, (send) => send("CONFIG", "RESETSTAT"));
    assert.equal((await keys.pageKeys({ limit: 5 })).items.length, 5);
    const calls = await commandCalls(fixture);
    assert.equal(calls.hkeys, 1, JSON.stringify(calls));
    assert.equal(calls.hscan, undefined, JSON.stringify(calls));
  },
);

redisTest(
  "RedisKeyStore: a key an older release creates, with another deleted, while a listing is under way is missing from that listing only (README, deploy/README.md)",
  async (fixture) => {
    const keys = redisKeyStore(fixture);
    for (let i = 0; i < 6; i++) await keys.createKey(key(`key_${i}`, { createdAt: 100 + i }));
    const first = await keys.pageKeys({ limit: 3 });
    assert.deepEqual(first.items.map((item) => item.id), ["key_0", "key_1", "key_2"]);
    // Between pages, an older release deletes key_1 (read already) and creates key_new, which
    // sorts after the page read: counts stay equal, and later pages do not check the ids.
    await deleteUnindexed(fixture, "key_1");
    await storeUnindexed(fixture, key("key_new", { createdAt: 500 }));
    const second = await keys.pageKeys({ limit: 3, cursor: first.nextCursor });
    assert.deepEqual(second.items.map((item) => item.id), ["key_3", "key_4", "key_5"]);
    assert.equal(second.nextCursor, null);
    // The next listing has it.
    assert.deepEqual(await listing(keys, 3), [
      "key_0",
      "key_2",
      "key_3",
      "key_4",
      "key_5",
      "key_new",
    ]);
  },
);
