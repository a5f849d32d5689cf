/**
 * A stream's incarnations (generations: the stream deleted and created again) each have a result
 * log of their own, and a later one's ids come after every id an earlier one's log was given,
 * also when it is created within the millisecond of the old log's last entry or after the clock
 * stepped back: webhook message ids and the dispatch cursor are made of log ids, so an id given
 * out again would be taken for a result delivered already (or behind the cursor). On both stores.
 */
import assert from "node:assert/strict";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import { EARLIER_LOG_GENERATIONS } from "../../src/store/redis/_scripts.ts";
import { compareLogIds, type LogRecord, parseLogId, type Store } from "../../src/store/types.ts";
import { redisTest, restClient, withDirect } from "../_redis.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");

function record(n: number): LogRecord {
  return { type: "event.processed", timeMs: T0 + n, event: { n } };
}

function after(id: string, than: string): boolean {
  return compareLogIds(parseLogId(id), parseLogId(than)) > 0;
}

/**
 * Appends to the log of `stream`, then makes its clock fall behind that log's last id (as a clock
 * that steps back, or one still in that millisecond); resolves that id.
 */
type Behind = (stream: string) => Promise<string>;

async function continuesAfterEarlierIncarnations(store: Store, behind: Behind) {
  // Generation 1 logs, generation 2 never does, generation 3 continues after generation 1.
  const old = await behind("s#1");
  await store.appendLog("s#3", [record(3), record(4)]);
  const entries = await store.readLog("s#3", null, 10);
  assert.equal(entries.length, 2);
  assert.ok(after(entries[0].id, old), `${entries[0].id} after ${old}`);
  assert.ok(after(entries[1].id, entries[0].id), `${entries[1].id} after ${entries[0].id}`);
  // A dispatch cursor the old incarnation left passes over none of them.
  assert.deepEqual((await store.readLog("s#3", old, 10)).map((entry) => entry.id), [
    entries[0].id,
    entries[1].id,
  ]);
  // Each log's position is its own: one that never logged has none.
  assert.deepEqual(await store.logPosition("s#2"), {
    lastId: "0-0",
    trimmedThrough: "0-0",
    firstId: null,
  });
  assert.equal((await store.logPosition("s#3")).lastId, entries[1].id);
  assert.equal((await store.logPosition("s#1")).lastId, old);
  // Generation 0 (a config stream's, or one stored before generations) and the API stream after.
  const config = await behind("c");
  await store.appendLog("c#1", [record(5)]);
  const [first] = await store.readLog("c#1", null, 1);
  assert.ok(after(first.id, config), `${first.id} after ${config}`);
}

Deno.test("MemoryStore: a stream's later incarnation continues its log after every id an earlier one's log was given, in the same millisecond or after the clock stepped back", async () => {
  const clock = { now: T0 + 600_000 };
  const store = new MemoryStore({ now: () => clock.now });
  // The clock stays in the old log's last millisecond, then steps back.
  const steps = [0, -5_000];
  await continuesAfterEarlierIncarnations(store, async (stream) => {
    await store.appendLog(stream, [record(1), record(2)]);
    clock.now += steps.shift()!;
    return (await store.lastLogId(stream))!;
  });
  // A stream of another name starts at the clock.
  await store.appendLog("other", [record(6)]);
  assert.equal(await store.lastLogId("other"), `${clock.now}-0`);
});

redisTest(
  "RedisStore: a stream's later incarnation continues its log after every id an earlier one's log was given, after the server's clock stepped back",
  async (fixture) => {
    const store = new RedisStore(
      restClient(fixture),
    );
    const ahead = async (stream: string) => {
      await store.appendLog(stream, [record(1)]);
      // An entry the server's clock gave an id an hour ahead (it stepped back since): XADD * gives
      // the next entries of this log ids after it, and a new log ids at the clock.
      const id = `${Date.now() + 3_600_000}-0`;
      await withDirect(
        fixture.redisUrl,
        (send) => send("XADD", store.keyPrefix(stream) + "log", id, "r", JSON.stringify(record(2))),
      );
      assert.equal(await store.lastLogId(stream), id);
      return id;
    };
    await continuesAfterEarlierIncarnations(store, ahead);
    // A stream of another name starts at the clock.
    const nearClock = async (stream: string) => {
      const [ms] = parseLogId((await store.lastLogId(stream))!);
      assert.ok(Math.abs(ms - Date.now()) < 60_000, `${stream}: ${ms} near ${Date.now()}`);
    };
    await store.appendLog("other", [record(6)]);
    await nearClock("other");
    // The logs of the EARLIER_LOG_GENERATIONS incarnations before are looked at, no more.
    assert.equal(EARLIER_LOG_GENERATIONS, 100);
    const near = await ahead("near#1");
    await store.appendLog("near#101", [record(7)]);
    const last = (await store.lastLogId("near#101"))!;
    assert.ok(after(last, near), `${last} after ${near}`);
    await ahead("far#1");
    await store.appendLog("far#102", [record(7)]);
    await nearClock("far#102");
  },
);

redisTest(
  "RedisStore: a batch that logs nothing into a stream without a log reads no earlier incarnation's log, and the first it logs still continues after one",
  async (fixture) => {
    const store = new RedisStore(
      restClient(fixture),
    );
    // Generation 2's log has an entry an hour ahead of the server's clock (it stepped back since).
    const ahead = `${Date.now() + 3_600_000}-0`;
    await withDirect(
      fixture.redisUrl,
      (send) => send("XADD", store.keyPrefix("q#2") + "log", ahead, "r", JSON.stringify(record(1))),
    );
    const apply = (ids: string[], log: { processed?: boolean; late?: boolean }) =>
      store.applyBatch({
        stream: "q#3",
        nowMs: T0,
        latenessMs: 1e12,
        dedupeTtlMs: 0,
        counters: [],
        filtered: 0,
        events: ids.map((id) => ({ id, timeMs: T0, payload: '{"n":1}' })),
        log,
      });
    // Only late events are logged and none is late: nothing is logged, no log is made.
    await apply(["a"], { late: true });
    await withDirect(fixture.redisUrl, (send) => send("CONFIG", "RESETSTAT"));
    await apply(["b"], { late: true });
    const info = String(await withDirect(fixture.redisUrl, (send) => send("INFO", "commandstats")));
    const calls = (command: string) =>
      Number(info.match(new RegExp(`^cmdstat_${command}:calls=(\\d+)`, "m"))?.[1] ?? 0);
    assert.equal(await store.lastLogId("q#3"), null);
    assert.equal(calls("xrevrange"), 1, "its own log only");
    assert.equal(calls("exists"), 0);
    assert.equal(calls("time"), 0);
    // The first entry it logs comes after generation 2's.
    await apply(["c"], { processed: true });
    const last = (await store.lastLogId("q#3"))!;
    assert.ok(after(last, ahead), `${last} after ${ahead}`);
  },
);
