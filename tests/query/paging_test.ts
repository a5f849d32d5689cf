/**
 * Pages of a counter's windows cost about their rows: walking every page of a window of many
 * groups (or of a sliding counter's many windows) gets each row once, in group key order, with
 * the values a whole read gives, while the store merges and returns at most a page (plus one row)
 * per page, on both stores.
 */
import assert from "node:assert/strict";
import { compileConfig } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import {
  compactPosition,
  currentWindow,
  listWindows,
  listWindowsPage,
  type WindowRow,
} from "../../src/query/mod.ts";
import { compareGroupKeys, MemoryStore, RedisStore, type Store } from "../../src/store/mod.ts";
import { groupKey } from "../../src/window/mod.ts";
import { redisTest, restClient } from "../_redis.ts";
import { at, postEvents, testApp } from "../_fixtures.ts";
import { cursorOfText } from "../../src/store/mod.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 30 * 60_000;

const config = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "1h" },
      counters: {
        count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
        sum: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { sum: "v" } },
        min: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { min: "v" } },
        distinct: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { distinct: "u" } },
        quantiles: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { quantiles: "v" } },
      },
    },
    w: {
      time: { field: "t", lateness: "1h" },
      counters: {
        slide: {
          window: { sliding: "10m", precision: "1m" },
          groupBy: ["g"],
          aggregate: "count",
        },
      },
    },
  },
});
const stream = config.get("s")!;
const wide = config.get("w")!;

/** A store whose readWindows calls are counted: rows each returned. */
function counting(store: Store): { store: Store; rows: number[] } {
  const rows: number[] = [];
  const proxy = new Proxy(store, {
    get(target, property) {
      if (property === "readWindows") {
        return async (...args: Parameters<Store["readWindows"]>) => {
          const read = await target.readWindows(...args);
          rows.push(read.length);
          return read;
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { store: proxy, rows };
}

/** 300 groups (keys of different lengths, one non-BMP) in one minute, 3 in the minute before. */
async function fill(store: Store) {
  const events = [];
  for (let i = 0; i < 300; i++) {
    const g = i === 7
      ? "g\u{1F600}"
      : i === 8
      ? "g\uFF21"
      : i % 4 === 0
      ? `g-same-prefix-${i}`
      : `g${i}`;
    events.push({ t: T0 + 60_000 + i, g, v: i % 17, u: `u${i % 5}` });
    events.push({ t: T0 + 61_000 + i, g, v: (i * 7) % 13, u: `w${i % 3}` });
  }
  for (let i = 0; i < 3; i++) events.push({ t: T0 + i, g: `old${i}`, v: i, u: "x" });
  events.sort((a, b) => a.t - b.t);
  await ingestItems(stream, events.map((value) => ({ ok: true as const, value })), {
    store,
    nowMs: NOW,
  });
  // The sliding counter: 5 groups in each of 25 minutes.
  const sliding = [];
  for (let minute = 0; minute < 25; minute++) {
    for (let g = 0; g < 5; g++) sliding.push({ t: T0 + minute * 60_000 + 500 + g, g: `s${g}` });
  }
  await ingestItems(wide, sliding.map((value) => ({ ok: true as const, value })), {
    store,
    nowMs: NOW,
  });
}

async function walk(store: Store, name: string, limit: number, groups?: Record<string, string>) {
  const of = name === "slide" ? wide : stream;
  const counter = of.counters.find((item) => item.name === name)!;
  const counted = counting(store);
  const rows: WindowRow[] = [];
  let after = undefined;
  let pages = 0;
  do {
    const page = await listWindowsPage(of, counter, { store: counted.store, nowMs: NOW }, {
      limit,
      after,
      groups,
    });
    rows.push(...page.rows);
    after = page.next ?? undefined;
    pages++;
    assert.ok(page.rows.length <= limit);
    assert.ok(pages < 1000);
  } while (after);
  return { rows, storeRows: counted.rows, pages };
}

const keyOf = (row: WindowRow) => groupKey([row.group.g]);

async function checkPages(store: Store) {
  await fill(store);
  for (const name of ["count", "sum", "min", "distinct", "quantiles"]) {
    const counter = stream.counters.find((item) => item.name === name)!;
    const { rows, storeRows, pages } = await walk(store, name, 40);
    assert.equal(rows.length, 303, name);
    assert.equal(pages, 8, name);
    // A page merges at most its rows and one more (the one telling a next page exists).
    assert.ok(storeRows.every((count) => count <= 41), `${name}: ${storeRows}`);
    assert.equal(storeRows.reduce((a, b) => a + b, 0), 303 + 7, name);
    // Newest window first, its groups in group key (code point) order, each once.
    const newest = rows.slice(0, 300).map(keyOf);
    assert.deepEqual(newest, [...newest].sort(compareGroupKeys), name);
    assert.equal(new Set(newest).size, 300, name);
    assert.deepEqual(rows.slice(300).map((row) => row.group.g), ["old0", "old1", "old2"], name);
    // The values a whole read of the window gives.
    const whole = await currentWindow(stream, counter, {
      store,
      nowMs: T0 + 90_000,
    });
    const byKey = new Map(whole.rows.map((row) => [keyOf(row), row]));
    for (const row of rows.slice(0, 300)) assert.deepEqual(row, byKey.get(keyOf(row)), name);
  }
}

async function checkSliding(store: Store) {
  await fill(store);
  const { rows, storeRows } = await walk(store, "slide", 7);
  // Windows starting from 9 minutes before the first pane to the last pane: 34, of 5 groups.
  assert.equal(rows.length, 34 * 5);
  assert.ok(storeRows.every((count) => count <= 8), `${storeRows}`);
  const starts = rows.map((row) => Date.parse(row.start));
  assert.deepEqual(starts, [...starts].sort((a, b) => b - a));
  assert.equal(new Set(rows.map((row) => `${row.start} ${row.group.g}`)).size, rows.length);
  assert.equal(rows[0].start, new Date(T0 + 24 * 60_000).toISOString());
  assert.equal(
    rows.find((row) => row.start === new Date(T0 + 9 * 60_000).toISOString())!.value,
    10,
  );
}

async function checkFiltered(store: Store) {
  await fill(store);
  const { rows } = await walk(store, "slide", 3, { g: "s2" });
  assert.equal(rows.length, 34);
  assert.ok(rows.every((row) => row.group.g === "s2"));
  const { rows: one } = await walk(store, "count", 2, { g: "g77" });
  assert.deepEqual(one.map((row) => [row.group.g, row.value]), [["g77", 2]]);
}

function redisStore(fixture: { restUrl: string; restToken: string }) {
  return new RedisStore(
    restClient(fixture),
    { now: () => NOW },
  );
}

Deno.test("MemoryStore: pages of a window of many groups merge about a page each", () =>
  checkPages(new MemoryStore({ now: () => NOW })));
redisTest(
  "RedisStore: pages of a window of many groups merge about a page each",
  (fixture) => checkPages(redisStore(fixture)),
);
Deno.test("MemoryStore: pages of a sliding counter read the windows of the page only", () =>
  checkSliding(new MemoryStore({ now: () => NOW })));
redisTest(
  "RedisStore: pages of a sliding counter read the windows of the page only",
  (fixture) => checkSliding(redisStore(fixture)),
);
Deno.test("MemoryStore: a group filter pages across windows", () =>
  checkFiltered(new MemoryStore({ now: () => NOW })));
redisTest(
  "RedisStore: a group filter pages across windows",
  (fixture) => checkFiltered(redisStore(fixture)),
);

Deno.test("a cursor of the release that ordered groups by their object's JSON text still reads", async () => {
  const { app } = await testApp();
  // The older window's event first: after the others it would be late.
  const events = [{ id: "old", ts: at(1), country: "IT" }];
  events.push(...["DE", "FR", "US"].map((country, i) => ({ id: `e${i}`, ts: at(61), country })));
  assert.equal((await postEvents(app, events)).status, 202);
  const start = Date.parse(at(60));
  const read = async (position: unknown) => {
    const cursor = cursorOfText(JSON.stringify(position));
    const res = await app.request(`/v1/streams/orders/counters/count_1m?cursor=${cursor}`);
    assert.equal(res.status, 200);
    return (await res.json()).windows.map((row: WindowRow) => row.group.country);
  };
  assert.deepEqual(await read([start, '{"country":"DE"}']), ["FR", "US", "IT"]);
  // Past every group of the window.
  assert.deepEqual(await read([start, "|"]), ["IT"]);
  // Today's cursors: [start, group key, 2].
  assert.deepEqual(await read([start, '["FR"]', 2]), ["US", "IT"]);
  assert.deepEqual(await read([start, null, 2]), ["IT"]);
});

/** A window whose group key order differs from the order of its group objects' JSON text. */
const ordered = compileConfig({
  streams: {
    o: {
      time: { field: "t", lateness: "1h" },
      counters: {
        n: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count", maxGroups: 3 },
      },
    },
  },
}).get("o")!;

/**
 * Rows within a window come in code point order of their group key (README, Reading counters):
 * `[1]` before `[1e+21]` (by the object's text, `{"g":1e+21}` came first), and the overflow group
 * `__other__` last (by the object's text, `{"g":"__other__"}` came before `{"g":"zz"}`); a walk
 * of pages of one row gives the same order.
 */
async function checkGroupKeyOrder(store: Store) {
  const values = [1e21, 1, "zz", "past the bound"];
  await ingestItems(
    ordered,
    values.map((g, i) => ({ ok: true as const, value: { t: T0 + 60_000 + i, g } })),
    { store, nowMs: NOW },
  );
  const counter = ordered.counters[0];
  const context = { store, nowMs: NOW };
  const groups = (rows: WindowRow[]) => rows.map((row) => row.group.g);
  const expected = ["zz", 1, 1e21, "__other__"];
  assert.deepEqual(groups(await listWindows(ordered, counter, context)), expected);
  const walked: WindowRow[] = [];
  let after = undefined;
  do {
    const page: Awaited<ReturnType<typeof listWindowsPage>> = await listWindowsPage(
      ordered,
      counter,
      context,
      { limit: 1, after },
    );
    walked.push(...page.rows);
    after = page.next ?? undefined;
  } while (after !== undefined);
  assert.deepEqual(groups(walked), expected);
}

Deno.test("MemoryStore: a window's rows come in group key order: a number before its exponent form, __other__ last", () =>
  checkGroupKeyOrder(new MemoryStore({ now: () => NOW })));

redisTest(
  "RedisStore: a window's rows come in group key order: a number before its exponent form, __other__ last",
  (fixture) => checkGroupKeyOrder(redisStore(fixture)),
);

/** Sliding 2h windows of 1m panes: 120 panes a window. */
const long = compileConfig({
  streams: {
    l: {
      time: { field: "t", lateness: "1h" },
      counters: {
        n: { window: { sliding: "2h", precision: "1m" }, groupBy: ["g"], aggregate: "count" },
      },
    },
  },
}).get("l")!;

/**
 * The README's cost of a page: windows are read a few at a time, each store read taking windows
 * until they cover 4,096 panes (at least one window): 35 windows of 120 panes (4,200) a read.
 */
async function checkPanesARead(store: Store) {
  const events = Array.from({ length: 240 }, (_, i) => ({ t: T0 + i * 60_000, g: "a" }));
  await ingestItems(long, events.map((value) => ({ ok: true as const, value })), {
    store,
    nowMs: T0 + 240 * 60_000,
  });
  const panes: number[] = [];
  const counted = new Proxy(store, {
    get(target, property) {
      if (property === "readWindows") {
        return (...args: Parameters<Store["readWindows"]>) => {
          panes.push(args[2].reduce((n, read) => n + read.panes.length, 0));
          return target.readWindows(...args);
        };
      }
      const value = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  // A filter no group matches: every window is read, and none fills the page.
  const page = await listWindowsPage(long, long.counters[0], {
    store: counted,
    nowMs: T0 + 240 * 60_000,
  }, { groups: { g: "none" } });
  assert.deepEqual(page.rows, []);
  assert.ok(panes.length >= 3, `${panes}`);
  for (const read of panes.slice(0, -1)) assert.equal(read, 35 * 120, `${panes}`);
  assert.ok(panes.at(-1)! <= 35 * 120, `${panes}`);
}

Deno.test("MemoryStore: a page reads windows until they cover 4,096 panes a store read", () =>
  checkPanesARead(new MemoryStore({ now: () => T0 + 240 * 60_000 })));

/** Groups of long values: their keys share their first thousands of characters. */
const LONG_CONFIG = {
  streams: {
    l: {
      time: { field: "t", lateness: "1h" },
      counters: { n: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" } },
    },
  },
};

async function checkLongKeys(store: Store) {
  const { app } = await testApp({ config: LONG_CONFIG, store, now: () => NOW });
  const t = new Date(T0 + 60_000).toISOString();
  // 50,000 characters: whole in a cursor, past the longest request line the server takes.
  const long = "x".repeat(50_000);
  const values = [`${long}a`, `${long}b`, `${long}\u{1F600}c`, `${long}\u{1F600}d`, "a", "z"];
  for (const g of values) {
    const res = await postEvents(app, [{ t, g }], { stream: "l" });
    assert.equal(res.status, 202);
  }
  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const query: string = cursor === null ? "" : `&cursor=${cursor}`;
    const res = await app.request(`/v1/streams/l/counters/n?limit=1${query}`);
    assert.equal(res.status, 200, await res.clone().text());
    const body = await res.json();
    seen.push(...body.windows.map((row: WindowRow) => row.group.g as string));
    cursor = body.nextCursor;
    assert.ok(cursor === null || cursor.length < 4_000, `a cursor of ${cursor?.length} characters`);
  } while (cursor !== null && ++pages < 20);
  assert.deepEqual(seen, ["a", ...values.slice(0, 4), "z"]);
  // The same through …/current's pages (its window contains now).
  const now = await testApp({ config: LONG_CONFIG, store, now: () => T0 + 90_000 });
  const current: string[] = [];
  cursor = null;
  pages = 0;
  do {
    const query: string = cursor === null ? "" : `&cursor=${cursor}`;
    const res = await now.app.request(`/v1/streams/l/counters/n/current?limit=2${query}`);
    assert.equal(res.status, 200, await res.clone().text());
    const body = await res.json();
    current.push(...body.windows.map((row: WindowRow) => row.group.g as string));
    cursor = body.nextCursor;
  } while (cursor !== null && ++pages < 20);
  assert.deepEqual(current, seen);
}

Deno.test("MemoryStore: a group value of 50,000 characters pages past with a cursor a URL can hold", () =>
  checkLongKeys(new MemoryStore({ now: () => NOW })));
redisTest(
  "RedisStore: a group value of 50,000 characters pages past with a cursor a URL can hold",
  (fixture) => checkLongKeys(redisStore(fixture)),
);

Deno.test("compactPosition() counts a cursor's 1,000 in UTF-16 code units, as README says: an emoji counts two", () => {
  const exact = { startMs: 0, group: groupKey(["a".repeat(996)]) };
  assert.equal(exact.group.length, 1000);
  assert.deepEqual(compactPosition(exact), exact);
  // 604 code points, 1,204 code units: cut, to 2 + 499 emoji.
  const key = groupKey(["\u{1F600}".repeat(600)]);
  assert.equal([...key].length, 604);
  const { group, groupDigest } = compactPosition({ startMs: 0, group: key });
  assert.equal(group, key.slice(0, 1000));
  assert.equal([...group!].length, 501);
  assert.match(groupDigest!, /^[0-9a-f]{64}$/);
  const readme = Deno.readTextFileSync(new URL("../../README.md", import.meta.url));
  assert.match(
    readme.replace(/\s+/g, " "),
    /group key \(the JSON array of its values\) whole up to 1,000 UTF-16 code units \(an emoji counts two\)/,
  );
});

Deno.test("compactPosition() keeps a short key whole and cuts a long one before a character it would split", () => {
  const short = { startMs: 0, group: groupKey(["a".repeat(990)]) };
  assert.deepEqual(compactPosition(short), short);
  // The emoji's two UTF-16 units straddle the 1,000th: the cut leaves it out whole.
  const key = groupKey(["x".repeat(997) + "\u{1F600}y"]);
  const { group, groupDigest } = compactPosition({ startMs: 0, group: key });
  assert.equal(group, key.slice(0, 999));
  assert.ok(group!.isWellFormed());
  assert.match(groupDigest!, /^[0-9a-f]{64}$/);
});
