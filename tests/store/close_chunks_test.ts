/**
 * A close bounded in work per call (`CloseOptions.cells`): a window of more cells than a call
 * may merge is closed over several calls, each group logged once, with the values a close in one
 * call gives. Run against both stores with a tiny chunk, so tens of groups make many calls.
 */
import assert from "node:assert/strict";
import { compileConfig, type CompiledStream } from "../../src/config/mod.ts";
import { sweepOnce } from "../../src/fanout/sweep.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { listWindows } from "../../src/query/mod.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import type { ClosedWindow, LogRecord, Store } from "../../src/store/types.ts";
import { type RedisFixture, redisTest, restClient } from "../_redis.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 600_000;
const clock = () => NOW;

const CONFIG = {
  streams: {
    s: {
      time: { field: "t", lateness: "0s" },
      counters: {
        count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
        sum: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { sum: "v" } },
        low: { window: { hopping: "2m", every: "1m" }, groupBy: ["g"], aggregate: { min: "v" } },
        avg: {
          window: { sliding: "3m", precision: "1m" },
          groupBy: ["g"],
          aggregate: { avg: "v" },
        },
        users: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { distinct: "u" } },
        spread: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { quantiles: "v" } },
      },
    },
  },
};
const stream: CompiledStream = compileConfig(CONFIG).get("s")!;
const GROUPS = 40;

/** Events over four minutes: group g<i> in some of them, so windows hold 10 to 40 groups. */
function events(): object[] {
  const out: object[] = [];
  for (let minute = 0; minute < 4; minute++) {
    for (let i = 0; i < GROUPS; i++) {
      if ((i + minute) % 4 === 3 && minute > 0) continue;
      for (let n = 0; n <= i % 3; n++) {
        out.push({
          t: T0 + minute * 60_000 + 1_000 + n,
          g: `g${i}`,
          v: i * 10 + n + minute,
          u: `u${n}`,
        });
      }
    }
  }
  // Closes every window but the last minute's.
  out.push({ t: T0 + 5 * 60_000 });
  return out;
}

async function fill(store: Store): Promise<void> {
  const all = events().map((value) => ({ ok: true as const, value }));
  await ingestItems(stream, all, { store, nowMs: NOW });
}

function redisStore(fixture: RedisFixture, cells?: number): RedisStore {
  const redis = restClient(fixture);
  return new RedisStore(redis, { now: clock, prefix: `p${cells ?? 0}`, closeCells: cells });
}

/** The `window.closed` records of the log, as sorted lines (counter, start, group, state). */
async function closedRecords(store: Store): Promise<string[]> {
  const lines: string[] = [];
  let after: string | null = null;
  for (;;) {
    const entries = await store.readLog("s", after, 500);
    if (entries.length === 0) break;
    after = entries.at(-1)!.id;
    for (const { record } of entries) {
      if (record.type !== "window.closed") continue;
      lines.push(recordLine(record));
    }
  }
  return lines.sort();
}

function recordLine(record: LogRecord & { type: "window.closed" }): string {
  const { state } = record;
  const value = {
    count: state.count,
    sum: state.sum,
    min: state.min,
    max: state.max,
    distinct: state.distinct,
    bins: state.bins,
  };
  return JSON.stringify([record.counter, record.start - T0, record.end - T0, record.group, value]);
}

/** The windows' groups as sorted lines, as the log's. */
function windowLines(windows: ClosedWindow[]): string[] {
  return windows.flatMap((window) =>
    window.groups.map(({ group, state }) =>
      recordLine({
        type: "window.closed",
        counter: window.counter,
        start: window.start,
        end: window.end,
        group,
        state,
      })
    )
  ).sort();
}

/**
 * Calls closeWindows until it says nothing more is due, taking turns between `stores` (instances
 * sharing one store); each call's windows and cost.
 */
async function closeInSteps(stores: Store[]) {
  const calls: Array<{ windows: ClosedWindow[]; cells: number }> = [];
  for (;;) {
    const store = stores[calls.length % stores.length];
    const windows = await store.closeWindows("s", stream.counterMetas, { latenessMs: 0 });
    // A group costs at least one cell (one per pane of its window holding it).
    calls.push({ windows, cells: windows.reduce((n, w) => n + w.groups.length, 0) });
    if (!windows.more) return calls;
    assert.ok(calls.length < 1000, "closes end");
  }
}

/** `small` (and `other`, sharing its data) close 4 cells a call, `whole` all at once. */
async function scenario(small: Store, whole: Store, other: Store = small): Promise<void> {
  await fill(small);
  await fill(whole);
  const oneShot = await whole.closeWindows("s", stream.counterMetas, { latenessMs: 0 });
  assert.equal(oneShot.more, undefined);
  const calls = await closeInSteps([small, other]);
  // Each call merged at most 4 cells (or the one group of a window of more panes).
  assert.ok(calls.length > 20, `closed over many calls, not ${calls.length}`);
  for (const call of calls) assert.ok(call.cells <= 4, `a call merged ${call.cells} cells`);
  // The same groups with the same values, each once, returned and logged.
  const stepped = calls.flatMap((call) => call.windows);
  // Each window returned once without `continued`, by whichever instance claimed it.
  const claimed = stepped.filter((w) => !w.continued).map((w) => `${w.counter}|${w.start}`);
  assert.deepEqual(claimed.toSorted(), oneShot.map((w) => `${w.counter}|${w.start}`).toSorted());
  assert.ok(stepped.some((w) => w.continued), "some windows closed over several calls");
  assert.deepEqual(windowLines(stepped), windowLines(oneShot));
  assert.deepEqual(await closedRecords(small), await closedRecords(whole));
  assert.deepEqual(await closedRecords(small), windowLines(oneShot));
  assert.equal(new Set(windowLines(oneShot)).size, windowLines(oneShot).length);
  // Nothing more to close; the claimed windows are final, their events late.
  assert.deepEqual(
    [...await small.closeWindows("s", stream.counterMetas, { latenessMs: 0 })],
    [],
  );
  assert.equal((await small.stats("s", [])).closedThrough, T0 + 300_000);
  assert.equal((await whole.stats("s", [])).closedThrough, T0 + 300_000);
}

/** `store` closes 5 cells a call. */
async function claimedAtStart(store: Store): Promise<void> {
  await fill(store);
  const count = stream.counterMetas.filter((meta) => meta.name === "count");
  const first = await store.closeWindows("s", count, { latenessMs: 0 });
  assert.equal(first.more, true);
  assert.deepEqual(first.map((w) => [w.start - T0, w.groups.length]), [[0, 5]]);
  // The call that claims it says so by leaving `continued` out (a count of windows closed counts
  // it there, once); every later call of it, and a peek of one, sets it.
  assert.equal(first[0].continued, undefined);
  // The window is claimed: an event in it is late, and its rows read as final.
  const reply = await ingestItems(stream, [{ ok: true, value: { t: T0 + 2_000, g: "g0" } }], {
    store,
    nowMs: NOW,
  });
  assert.equal(reply.late, 1);
  const rows = await listWindows(stream, stream.counters[0], { store, nowMs: NOW }, {
    limit: 1000,
  });
  assert.ok(rows.filter((row) => row.start === new Date(T0).toISOString()).every((r) => r.final));
  // A peek reports what the next call closes, without moving on.
  const peeked = await store.closeWindows("s", count, { latenessMs: 0, peek: true });
  const next = await store.closeWindows("s", count, { latenessMs: 0 });
  assert.deepEqual(windowLines(peeked), windowLines(next));
  assert.equal(next.length, 1);
  assert.equal(next[0].start, T0);
  assert.deepEqual([peeked[0].continued, next[0].continued], [true, true]);
  assert.equal(new Set([...windowLines(first), ...windowLines(next)]).size, 10);
}

/** The stream with an alert on every group of `count` and of `low`. */
const alerting: CompiledStream = compileConfig({
  streams: {
    s: {
      ...CONFIG.streams.s,
      alerts: [
        { name: "any", counter: "count", when: "value >= 1.0" },
        { name: "low", counter: "low", when: "value >= 0.0" },
      ],
    },
  },
}).get("s")!;

/**
 * A sweep closes big windows over several calls and lists each once, with every group; their
 * alerts fire once a group, as a sweep that closes them in one call fires them.
 */
async function sweepLists(store: Store, whole: Store): Promise<void> {
  await fill(store);
  await fill(whole);
  // The groups each close call (not a peek) of the sweep returned.
  const calls: number[] = [];
  const counting = new Proxy(store, {
    get(target, property) {
      if (property !== "closeWindows") return Reflect.get(target, property).bind(target);
      return async (...args: Parameters<Store["closeWindows"]>) => {
        const windows = await target.closeWindows(...args);
        if (!args[2].peek) calls.push(windows.reduce((n, w) => n + w.groups.length, 0));
        return windows;
      };
    },
  });
  const report = await sweepOnce([alerting], counting);
  assert.ok(calls.length > 20, `one sweep, many close calls, not ${calls.length}`);
  assert.ok(calls.every((groups) => groups <= 3), `groups a call: ${calls}`);
  const all = await sweepOnce([alerting], whole);
  assert.deepEqual(report.failed, []);
  assert.deepEqual(windowLines(report.closed), windowLines(all.closed));
  const keys = report.closed.map((w) => `${w.counter}|${w.start}`);
  assert.equal(new Set(keys).size, keys.length);
  const fired = (r: typeof report) =>
    r.fired.map((f) => JSON.stringify([f.alert, f.counter, f.start, f.group])).sort();
  const alerted = all.closed.filter((w) => w.counter === "count" || w.counter === "low");
  assert.equal(fired(report).length, alerted.reduce((n, w) => n + w.groups.length, 0));
  assert.deepEqual(fired(report), fired(all));
  const again = await sweepOnce([alerting], store);
  assert.deepEqual([again.closed.length, again.fired.length], [0, 0]);
  const logged = (await store.readLog("s", null, 10_000)).filter((e) =>
    e.record.type === "alert.fired"
  );
  assert.equal(logged.length, fired(report).length);
}

Deno.test("MemoryStore: a close of more cells than a call may merge goes over many calls, each group once", () =>
  scenario(
    new MemoryStore({ now: clock, closeCells: 4 }),
    new MemoryStore({ now: clock, closeCells: 1_000_000 }),
  ));

redisTest(
  "RedisStore: a close of more cells than a call may merge goes over many calls, each group once, whichever instance calls",
  (fixture) =>
    scenario(redisStore(fixture, 4), redisStore(fixture, 1_000_000), redisStore(fixture, 4)),
);

Deno.test("MemoryStore: the first call of a window's close claims it; a peek reports the next call's groups", () =>
  claimedAtStart(new MemoryStore({ now: clock, closeCells: 5 })));

redisTest(
  "RedisStore: the first call of a window's close claims it; a peek reports the next call's groups",
  (fixture) => claimedAtStart(redisStore(fixture, 5)),
);

Deno.test("MemoryStore: a sweep calls the close again until done and lists each window once", () =>
  sweepLists(
    new MemoryStore({ now: clock, closeCells: 3 }),
    new MemoryStore({ now: clock }),
  ));

redisTest(
  "RedisStore: a sweep calls the close again until done and lists each window once",
  (fixture) => sweepLists(redisStore(fixture, 3), redisStore(fixture, 1_000_000)),
);

/** A backlog of 150 one-minute windows of 3 groups each, and an event that makes them all due. */
const backlog: CompiledStream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "0s" },
      counters: { count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" } },
    },
  },
}).get("s")!;

/** However many calls it takes, a sweep closes 100 windows per counter, the next sweep the rest. */
async function hundredASweep(store: Store): Promise<void> {
  const events = [];
  for (let minute = 0; minute < 150; minute++) {
    for (const g of ["a", "b", "c"]) events.push({ t: T0 + minute * 60_000, g });
  }
  events.push({ t: T0 + 151 * 60_000, g: "a" });
  const items = events.map((value) => ({ ok: true as const, value }));
  await ingestItems(backlog, items, { store, nowMs: T0 + 152 * 60_000 });
  let calls = 0;
  const counting = new Proxy(store, {
    get(target, property) {
      if (property !== "closeWindows") return Reflect.get(target, property).bind(target);
      return (...args: Parameters<Store["closeWindows"]>) => {
        calls += 1;
        return target.closeWindows(...args);
      };
    },
  });
  const first = await sweepOnce([backlog], counting);
  assert.ok(calls > 50, `calls: ${calls}`);
  assert.equal(first.closed.length, 100);
  assert.ok(first.closed.every((w) => w.groups.length === 3));
  assert.deepEqual(first.closed.map((w) => (w.start - T0) / 60_000), [...Array(100).keys()]);
  const second = await sweepOnce([backlog], store);
  assert.deepEqual(second.closed.map((w) => (w.start - T0) / 60_000), [
    ...Array(50).keys().map((i) => i + 100),
  ]);
  assert.equal((await sweepOnce([backlog], store)).closed.length, 0);
}

Deno.test("MemoryStore: a sweep of many close calls still closes 100 windows per counter", () =>
  hundredASweep(new MemoryStore({ now: () => T0 + 152 * 60_000, closeCells: 2 })));

redisTest(
  "RedisStore: a sweep of many close calls still closes 100 windows per counter",
  (fixture) =>
    hundredASweep(
      new RedisStore(
        restClient(fixture),
        { now: () => T0 + 152 * 60_000, closeCells: 2 },
      ),
    ),
);

/** 2,500 groups in one minute of a tumbling and of a hopping counter, each its own stream. */
const cellsOf = (window: object) =>
  compileConfig({
    streams: {
      s: {
        time: { field: "t", lateness: "0s" },
        counters: { n: { window, groupBy: ["g"], aggregate: "count", maxGroups: 10_000 } },
      },
    },
  }).get("s")!;

/**
 * The README's bound, by default: a close merges at most 2,000 cells a call. A tumbling window
 * has a cell per group (2,000 of 2,500 groups, then the other 500); a hopping one of 2 panes whose
 * groups are in both has two (at most 1,000 groups a call).
 */
async function twoThousandCells(store: () => Store): Promise<void> {
  for (
    const [window, calls] of [
      [{ tumbling: "2m" }, [2_000, 500]],
      [{ hopping: "2m", every: "1m" }, null],
    ] as const
  ) {
    const stream = cellsOf(window);
    const into = store();
    const events = [];
    for (let i = 0; i < 2_500; i++) {
      events.push({ t: T0 + 1_000 + i, g: `g${i}` }, { t: T0 + 61_000 + i, g: `g${i}` });
    }
    events.push({ t: T0 + 8 * 60_000, g: "tick" });
    const items = events.map((value) => ({ ok: true as const, value }));
    await ingestItems(stream, items, { store: into, nowMs: NOW });
    const groups = [];
    for (let call = 0; call < 10; call++) {
      const closed = await into.closeWindows("s", stream.counterMetas, { latenessMs: 0 });
      const first = closed.filter((w) => w.start === T0);
      if (first.length === 0) break;
      groups.push(first.reduce((n, w) => n + w.groups.length, 0));
    }
    if (calls === null) {
      // Two cells a group: at most 1,000 groups of the window a call, over 3 calls.
      assert.equal(groups.reduce((a, b) => a + b, 0), 2_500);
      assert.ok(groups.length >= 3 && groups.every((n) => n <= 1_000), `${groups}`);
    } else {
      assert.deepEqual(groups, calls, JSON.stringify(window));
    }
  }
}

Deno.test("MemoryStore: a close merges at most 2,000 cells a call by default", () =>
  twoThousandCells(() => new MemoryStore({ now: clock })));

redisTest(
  "RedisStore: a close merges at most 2,000 cells a call by default",
  (fixture) => {
    let n = 0;
    return twoThousandCells(() =>
      new RedisStore(
        restClient(fixture),
        { now: clock, prefix: `d${n++}` },
      )
    );
  },
);
