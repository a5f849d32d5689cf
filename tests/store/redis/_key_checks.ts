/**
 * Helpers for tests of the Redis scripts' key checks: a key corrupted (written over with another
 * type, or a field holding what a command cannot add to) must make a writing call fail before its
 * first write, as Redis does not undo what a script wrote before one of its commands failed (or,
 * a single event's apply, which counts first, fail having undone what it wrote).
 *
 * @module
 */
import assert from "node:assert/strict";
import { StoreRefusedError } from "../../../src/store/types.ts";
import { type RedisFixture, withDirect } from "../../_redis.ts";

/** Commands that change what Redis holds, of those the scripts use. */
export const WRITES = [
  "hset",
  "hincrby",
  "hincrbyfloat",
  "hdel",
  "pfadd",
  "pfmerge",
  "zadd",
  "zrem",
  "zremrangebyscore",
  "xadd",
  "pexpire",
  "set",
  "del",
  "lpush",
  "ltrim",
];

/**
 * Every key and what it holds (DUMP), for comparing before and after; of a HyperLogLog its
 * registers, without the cardinality PFCOUNT caches in its header (16 bytes); and whether it has a
 * TTL.
 */
export async function snapshot(fixture: RedisFixture): Promise<Map<string, unknown>> {
  return await withDirect(fixture.redisUrl, async (send) => {
    const out = new Map<string, unknown>();
    for (const key of (await send("KEYS", "*")) as string[]) {
      const hll = await send("TYPE", key) === "string" &&
        await send("GETRANGE", key, "0", "3") === "HYLL";
      const held = hll ? await send("GETRANGE", key, "16", "-1") : await send("DUMP", key);
      out.set(key, [held, await send("PTTL", key) === -1 ? "no ttl" : "ttl"]);
    }
    return out;
  });
}

/** The one key matching `pattern` (a Redis glob). */
export async function keyLike(fixture: RedisFixture, pattern: string): Promise<string> {
  const keys = await withDirect(fixture.redisUrl, (send) => send("KEYS", pattern)) as string[];
  assert.equal(keys.length, 1, `one key like ${pattern}: ${JSON.stringify(keys)}`);
  return keys[0];
}

/** Sends one command to the fixture's Redis over a connection of its own. */
export async function send(fixture: RedisFixture, ...args: string[]): Promise<unknown> {
  return await withDirect(fixture.redisUrl, (direct) => direct(...args));
}

/**
 * Runs `call` against a store with `key` corrupted (by `corrupt`), asserts it is refused naming
 * the key (or, with `read`, by Redis itself: a key the script reads anyway) and that no write
 * command ran (with `undone`, a single event's apply, which counts before it checks a new group
 * and undoes what it wrote when refused: write commands may run) and no key changed; then deletes
 * `key`.
 */
export async function refusedWhole(
  fixture: RedisFixture,
  key: string,
  options: { corrupt: string[]; call: () => Promise<unknown>; read?: boolean; undone?: boolean },
): Promise<void> {
  await send(fixture, "DEL", key);
  await send(fixture, ...options.corrupt);
  const before = await snapshot(fixture);
  await send(fixture, "CONFIG", "RESETSTAT");
  await assert.rejects(options.call(), (error: Error) => {
    // What the group committer takes as "nothing written".
    assert.ok(error instanceof StoreRefusedError, String(error));
    if (options.read) {
      assert.match(
        error.message,
        /WRONGTYPE Operation against a key holding the wrong kind of value/,
      );
    } else {
      assert.match(error.message, /WRONGTYPE edgestream key /);
      assert.ok(error.message.includes(key), error.message);
      assert.match(error.message, /nothing was written/);
    }
    return true;
  });
  const info = String(await send(fixture, "INFO", "commandstats"));
  const ran = [...info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)].map((match) => match[1]);
  if (!options.undone) assert.deepEqual(ran.filter((name) => WRITES.includes(name)), [], info);
  assert.deepEqual(await snapshot(fixture), before);
  await send(fixture, "DEL", key);
}
