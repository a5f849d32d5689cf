/**
 * A Redis sweep of a stream with nothing to do costs one `HMGET` of its stats rather than the
 * close script (with its reads, a reply key `SET` and a watermark `HSET`), counted here in
 * `INFO commandstats`; and with that skip in place windows and sessions still close at the first
 * sweep after they are due, by the clock (`idle`) or by a batch another instance applied.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import { compileConfig, type CompiledStream } from "../../../src/config/mod.ts";
import { sweepOnce } from "../../../src/fanout/sweep.ts";
import { ingestItems } from "../../../src/ingest/mod.ts";
import { type RedisClient, RedisStore } from "../../../src/store/redis/store.ts";
import { type RedisFixture, redisTest, restClient, withDirect } from "../../_redis.ts";

/** A minute's start near the real clock (Redis expires keys by its own). */
const M = Math.floor(Date.now() / 60_000) * 60_000;
const SECOND = 1_000;

function client(fixture: RedisFixture): Redis {
  return restClient(fixture);
}

function items(list: object[]) {
  return list.map((value) => ({ ok: true as const, value }));
}

/** Calls per command name since the last `CONFIG RESETSTAT`, the test's own (INFO, CONFIG) left out. */
async function commandCalls(fixture: RedisFixture): Promise<Record<string, number>> {
  const info = String(await withDirect(fixture.redisUrl, (send) => send("INFO", "commandstats")));
  const calls = Object.fromEntries(
    [...info.matchAll(/^cmdstat_([\w|]+):calls=(\d+)/gm)].map((m) => [m[1], Number(m[2])]),
  );
  for (const name of Object.keys(calls)) {
    if (name === "info" || name.startsWith("config")) delete calls[name];
  }
  return calls;
}

function resetStats(fixture: RedisFixture): Promise<unknown> {
  return withDirect(fixture.redisUrl, (send) => send("CONFIG", "RESETSTAT"));
}

/** The windows (and sessions) a sweep closed, as `counter@start`. */
async function swept(streams: Iterable<CompiledStream>, store: RedisStore): Promise<string[]> {
  const report = await sweepOnce(streams, store);
  assert.deepEqual(report.failed, []);
  return report.closed.map((window) => `${window.counter}@${window.start - M}`);
}

redisTest(
  "a sweep of idle streams costs one HMGET a stream: no close script, no reply key, no watermark write",
  async (fixture) => {
    let clock = M;
    const store = new RedisStore(client(fixture), { now: () => clock });
    const names = Array.from({ length: 20 }, (_, i) => `s${i}`);
    const streams = compileConfig({
      streams: Object.fromEntries(names.map((name) => [name, {
        counters: {
          c: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
          s: { window: { sliding: "10m", precision: "1m" }, aggregate: { sum: "v" } },
        },
      }])),
    });
    for (const stream of streams.values()) {
      await ingestItems(stream, items([{ g: "a", v: 1 }]), { store, nowMs: M - 20 * 60_000 });
    }
    // The first sweep closes every window of them (receive time: the clock is the watermark).
    assert.equal((await swept(streams.values(), store)).length, 20 * 11);
    for (const after of [5 * SECOND, 10 * SECOND]) {
      clock = M + after;
      await resetStats(fixture);
      assert.deepEqual(await swept(streams.values(), store), []);
      assert.deepEqual(await commandCalls(fixture), { hmget: 20 }, `sweep at +${after} ms`);
    }
  },
);

/** The store's client, counting its own `HMGET`s (not the close script's). */
function countingHmget(fixture: RedisFixture): { redis: RedisClient; hmgets: () => number } {
  const upstash = client(fixture);
  let hmgets = 0;
  const redis: RedisClient = {
    evalsha: (...args) => upstash.evalsha(...args),
    eval: (...args) => upstash.eval(...args),
    hgetall: (...args) => upstash.hgetall(...args),
    xrange: (...args) => upstash.xrange(...args),
    xrevrange: (...args) => upstash.xrevrange(...args),
    ping: (...args) => upstash.ping(...args),
    hmget: (...args) => {
      hmgets++;
      return upstash.hmget(...args);
    },
  } as RedisClient;
  return { redis, hmgets: () => hmgets };
}

redisTest(
  "a stream with an alert: an idle sweep is one HMGET (the peek's, skipped, so nothing is closed after it), a busy one runs its scripts without one",
  async (fixture) => {
    let clock = M;
    const counted = countingHmget(fixture);
    const store = new RedisStore(counted.redis, { now: () => clock });
    const streams = compileConfig({
      streams: {
        a: {
          counters: { c: { window: { tumbling: "1m" }, aggregate: "count" } },
          alerts: [{ name: "many", counter: "c", when: "value >= 100.0" }],
        },
      },
    });
    const stream = streams.get("a")!;
    await ingestItems(stream, items([{}]), { store, nowMs: M - 20 * 60_000 });
    assert.equal((await swept(streams.values(), store)).length, 1);
    clock = M + 5 * SECOND;
    await resetStats(fixture);
    assert.deepEqual(await swept(streams.values(), store), []);
    assert.deepEqual(await commandCalls(fixture), { hmget: 1 });
    // A batch since: the peek and the close both run the script, with no HMGET of their own.
    await ingestItems(stream, items([{}]), { store, nowMs: clock });
    const before = counted.hmgets();
    clock = M + 10 * SECOND;
    await swept(streams.values(), store);
    assert.equal(counted.hmgets() - before, 0);
  },
);

redisTest(
  "with idle sweeps skipped, windows and sessions still close by the clock at the first sweep once due",
  async (fixture) => {
    let clock = M + 10 * SECOND;
    const store = new RedisStore(client(fixture), { now: () => clock });
    const streams = compileConfig({
      streams: {
        r: {
          time: { lateness: "30s" },
          counters: {
            n: { window: { tumbling: "1m" }, aggregate: "count" },
            visit: { window: { session: "30s" }, groupBy: ["u"], aggregate: "count" },
          },
        },
      },
    });
    await ingestItems(streams.get("r")!, items([{ u: "a" }]), { store, nowMs: clock });
    const at = async (ms: number) => {
      clock = M + ms;
      return await swept(streams.values(), store);
    };
    assert.deepEqual(await at(20 * SECOND), []);
    await resetStats(fixture);
    // The session (ends at 10 s) closes once the clock passes its end + gap + lateness: 70 s.
    assert.deepEqual(await at(69_999), []);
    assert.deepEqual(await commandCalls(fixture), { hmget: 1 });
    assert.deepEqual(await at(70 * SECOND), ["visit@10000"]);
    // The window [0, 60 s) once it passes its end + lateness: 90 s.
    assert.deepEqual(await at(89_999), []);
    assert.deepEqual(await at(90 * SECOND), ["n@0"]);
  },
);

redisTest(
  "a sweep skipping an idle stream still closes a window once another instance's batch moved its watermark",
  async (fixture) => {
    const clock = M;
    const sweeping = new RedisStore(client(fixture), { now: () => clock });
    const other = new RedisStore(client(fixture), { now: () => clock });
    const streams = compileConfig({
      streams: {
        e: {
          time: { field: "t", lateness: "0s" },
          dedupe: { field: "id", ttl: "1h" },
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    });
    const stream = streams.get("e")!;
    const E = M - 3_600_000;
    await ingestItems(stream, items([{ id: "a", t: E + SECOND }]), {
      store: sweeping,
      nowMs: clock,
    });
    // Event time, no idle: nothing closes before a later event, however long the sweep waits.
    assert.deepEqual(await swept(streams.values(), sweeping), []);
    await resetStats(fixture);
    assert.deepEqual(await swept(streams.values(), sweeping), []);
    assert.deepEqual(await commandCalls(fixture), { hmget: 1 });
    // A duplicate applied elsewhere changes nothing: still skipped.
    await ingestItems(stream, items([{ id: "a", t: E + SECOND }]), { store: other, nowMs: clock });
    await resetStats(fixture);
    assert.deepEqual(await swept(streams.values(), sweeping), []);
    assert.deepEqual(await commandCalls(fixture), { hmget: 1 });
    // Another instance applies an event of the next minute: the window [E, E + 1 min) is due.
    await ingestItems(stream, items([{ id: "b", t: E + 61 * SECOND }]), {
      store: other,
      nowMs: clock,
    });
    const closed = await sweepOnce(streams.values(), sweeping);
    assert.deepEqual(closed.closed.map((window) => [window.counter, window.start - E]), [["n", 0]]);
  },
);

redisTest(
  "a process that has not swept a stream yet skips it by what the last close of any process left in its stats, for the same counters and options",
  async (fixture) => {
    let clock = M;
    const first = new RedisStore(client(fixture), { now: () => clock });
    const config = (lateness: string) =>
      compileConfig({
        streams: {
          r: {
            time: { lateness },
            counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
          },
        },
      });
    const streams = config("30s");
    await ingestItems(streams.get("r")!, items([{}]), { store: first, nowMs: M - 20 * 60_000 });
    assert.deepEqual(await swept(streams.values(), first), ["n@-1200000"]);
    // The note's hash is text the client cannot read back as a number (it parses such replies).
    const qk = (await client(fixture).hmget<Record<string, unknown>>("es:{r}:stats", "qk"))?.qk;
    assert.match(String(qk), /^h[\w-]{16}$/);
    assert.equal(typeof qk, "string");
    // A new process (an isolate started for a cron run, say): one HMGET, nothing closed.
    clock = M + 5 * SECOND;
    const second = new RedisStore(client(fixture), { now: () => clock });
    await resetStats(fixture);
    assert.deepEqual(await swept(streams.values(), second), []);
    assert.deepEqual(await commandCalls(fixture), { hmget: 1 });
    // Another lateness asks anew: the close script runs.
    const third = new RedisStore(client(fixture), { now: () => clock });
    await resetStats(fixture);
    assert.deepEqual(await swept(config("40s").values(), third), []);
    assert.equal((await commandCalls(fixture)).evalsha, 1);
    // A stream that never took a batch has nothing to close: one HMGET.
    const empty = compileConfig({
      streams: { z: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
    });
    await resetStats(fixture);
    assert.deepEqual(await swept(empty.values(), new RedisStore(client(fixture))), []);
    assert.deepEqual(await commandCalls(fixture), { hmget: 1 });
  },
);

redisTest(
  "an idle stream's stats stay alive while it is swept: a close is due when their life needs extending, as each sweep's watermark write did",
  async (fixture) => {
    const DAY = 86_400_000;
    let clock = M;
    const redis = client(fixture);
    const store = new RedisStore(redis, { now: () => clock, statsTtlMs: DAY });
    const streams = compileConfig({
      streams: {
        r: {
          time: { idle: "1m", lateness: "0s" },
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    });
    await ingestItems(streams.get("r")!, items([{}]), { store, nowMs: clock });
    clock = M + 10 * 60_000;
    assert.deepEqual(await swept(streams.values(), store), ["n@0"]);
    const stats = async () =>
      (await redis.hgetall<Record<string, string | number>>("es:{r}:stats")) ?? {};
    // Nothing is open: the next close is due when the stats' life needs extending (it would
    // expire a day and an eighth after its last write, the watermark, counts and `cl` with it).
    const { qn, exp } = await stats();
    assert.equal(Number(qn), Number(exp) - DAY - DAY / 16 + 1);
    clock = Number(qn) - 1;
    await resetStats(fixture);
    assert.deepEqual(await swept(streams.values(), store), []);
    assert.deepEqual(await commandCalls(fixture), { hmget: 1 });
    clock = Number(qn);
    assert.deepEqual(await swept(streams.values(), store), []);
    const after = await stats();
    assert.equal(Number(after.exp), clock + DAY + DAY / 8);
    assert.equal(Number(after.wm), clock - 60_000);
    assert.equal((await store.stats("r", [])).applied, 1);
  },
);

redisTest(
  "past quietKept the oldest note is forgotten: that stream's sweep reads its stats, finds the batch applied since and still closes what is due",
  async (fixture) => {
    const clock = M;
    const counted = countingCalls(fixture);
    const store = new RedisStore(counted.redis, { now: () => clock, quietKept: 2 });
    const streams = compileConfig({
      streams: Object.fromEntries(["a", "b", "c"].map((name) => [name, {
        time: { field: "t", lateness: "0s" },
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      }])),
    });
    const E = M - 3_600_000;
    const ingest = (name: string, t: number) =>
      ingestItems(streams.get(name)!, items([{ t }]), { store, nowMs: clock });
    const sweepOf = (name: string) => sweepOnce([streams.get(name)!], store);
    // Event time, no idle: nothing is due until a later event moves the watermark.
    for (const name of ["a", "b", "c"]) await ingest(name, E + SECOND);
    assert.deepEqual(await swept(streams.values(), store), []);
    // A batch to each, a first: only two notes are kept, so a's (a batch since) is forgotten.
    for (const name of ["a", "b", "c"]) await ingest(name, E + 61 * SECOND);
    // c's note is kept: the close script straight away, no HMGET.
    counted.reset();
    const closedC = await sweepOf("c");
    assert.deepEqual(closedC.closed.map((window) => [window.counter, window.start - E]), [[
      "n",
      0,
    ]]);
    assert.deepEqual(counted.calls(), { evalsha: 1 });
    // a's is not: one HMGET of its stats first, whose `applied` is not the last close's, then
    // the close script, which closes the window as it would have with the note kept.
    counted.reset();
    const closedA = await sweepOf("a");
    assert.deepEqual(closedA.closed.map((window) => [window.counter, window.start - E]), [[
      "n",
      0,
    ]]);
    assert.deepEqual(counted.calls(), { hmget: 1, evalsha: 1 });
    // b's window too (its note forgotten as well, by a's), then nothing closes twice.
    assert.deepEqual(await swept(streams.values(), store), [`n@${E - M}`]);
    assert.deepEqual(await swept(streams.values(), store), []);
  },
);

/** The store's client, counting its own calls by method (not the commands of its scripts). */
function countingCalls(
  fixture: RedisFixture,
): { redis: RedisClient; calls: () => Record<string, number>; reset: () => void } {
  const upstash = client(fixture);
  let calls: Record<string, number> = {};
  const methods = ["evalsha", "eval", "hgetall", "hmget", "xrange", "xrevrange", "ping"];
  const redis = Object.fromEntries(methods.map((method) => [method, (...args: unknown[]) => {
    calls[method] = (calls[method] ?? 0) + 1;
    return (upstash[method as keyof Redis] as (...args: unknown[]) => unknown)
      .apply(upstash, args);
  }])) as unknown as RedisClient;
  return { redis, calls: () => calls, reset: () => calls = {} };
}

redisTest(
  "keepFinal() with no batch since a sweep's close: the next sweep closes what it keeps final, in this process and in a new one",
  async (fixture) => {
    const clock = M;
    const store = new RedisStore(client(fixture), { now: () => clock });
    const streams = compileConfig({
      streams: {
        k: {
          time: { lateness: "1h" },
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    });
    const stream = streams.get("k")!;
    await ingestItems(stream, items([{}]), { store, nowMs: M - 20 * 60_000 });
    await ingestItems(stream, items([{}]), { store, nowMs: M - 18 * 60_000 });
    // Nothing is final by 1 h of lateness: the close notes that, and the next sweep skips it.
    assert.deepEqual(await swept(streams.values(), store), []);
    await resetStats(fixture);
    assert.deepEqual(await swept(streams.values(), store), []);
    assert.deepEqual(await commandCalls(fixture), { hmget: 1 });
    // Kept final with no batch (the watermark and `applied` as the close left them): a process
    // that has not closed the stream reads the note in the stats, whose `cl` is not the stats'.
    await store.keepFinal("k", M - 19 * 60_000);
    const fresh = new RedisStore(client(fixture), { now: () => clock });
    assert.deepEqual(await swept(streams.values(), fresh), [`n@${-20 * 60_000}`]);
    // This process's own note is older than that raise too: its close runs (the note's `cl` is
    // not the stats'), and finds nothing left.
    await resetStats(fixture);
    assert.deepEqual(await swept(streams.values(), store), []);
    assert.equal((await commandCalls(fixture)).evalsha, 1);
    // Raised again: this process's note (the close just above) holds the `cl` it left.
    await store.keepFinal("k", M - 17 * 60_000);
    assert.deepEqual(await swept(streams.values(), store), [`n@${-18 * 60_000}`]);
    assert.deepEqual(await swept(streams.values(), fresh), []);
  },
);

redisTest(
  "a stream whose batches were all filtered (counts, no watermark) costs one HMGET a sweep once its close has run",
  async (fixture) => {
    const store = new RedisStore(client(fixture), { now: () => M });
    const streams = compileConfig({
      streams: {
        f: {
          // Event time: a receive-time stream's batch raises the watermark to the clock anyway.
          time: { field: "t" },
          transform: [{ filter: "false" }],
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    });
    const stream = streams.get("f")!;
    await ingestItems(stream, items([{ t: M - 1 }, { t: M - 2 }]), { store, nowMs: M });
    assert.equal((await store.stats("f", [])).watermark, null);
    // The batch wrote its counts but no watermark: this sweep's close runs and notes that.
    assert.deepEqual(await swept(streams.values(), store), []);
    await resetStats(fixture);
    assert.deepEqual(await swept(streams.values(), store), []);
    assert.deepEqual(await commandCalls(fixture), { hmget: 1 });
  },
);
