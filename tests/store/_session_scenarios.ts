/**
 * Session-window cases of the store contract: `contract_test.ts` runs each on
 * the memory store and on Redis.
 */
import assert from "node:assert/strict";
import { compileConfig, type CompiledStream } from "../../src/config/mod.ts";
import { ingestItems } from "../../src/ingest/mod.ts";
import { currentWindow, listWindows } from "../../src/query/mod.ts";
import type { Store } from "../../src/store/types.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");

/** A stream with one session counter (gap 30 s, lateness 2 min) per aggregate. */
export const SESSION_CONFIG = {
  streams: {
    visits: {
      time: { field: "t", lateness: "2m" },
      counters: {
        count: { window: { session: "30s" }, groupBy: ["u"], aggregate: "count" },
        sum: { window: { session: "30s" }, groupBy: ["u"], aggregate: { sum: "v" } },
        min: { window: { session: "30s" }, groupBy: ["u"], aggregate: { min: "v" } },
        max: { window: { session: "30s" }, groupBy: ["u"], aggregate: { max: "v" } },
        avg: { window: { session: "30s" }, groupBy: ["u"], aggregate: { avg: "v" } },
        distinct: { window: { session: "30s" }, groupBy: ["u"], aggregate: { distinct: "p" } },
        capped: {
          window: { session: "30s" },
          groupBy: ["u"],
          aggregate: "count",
          maxSessions: 2,
        },
        // maxGroups is for panes: a stream stored before it was refused on sessions ignores it.
        wide: { window: { session: "30s" }, groupBy: ["u"], aggregate: "count", maxGroups: 1 },
      },
    },
  },
};

/** The compiled session stream. */
export const sessionStream: CompiledStream = compileConfig(SESSION_CONFIG, {
  sessionMaxGroups: true,
}).get("visits")!;

function items(events: object[]) {
  return events.map((value) => ({ ok: true as const, value }));
}

function iso(offsetMs: number): string {
  return new Date(T0 + offsetMs).toISOString();
}

/** Ingests events at `T0 + t` seconds into the session stream. */
function ingest(store: Store, events: Array<Record<string, unknown> & { t: number }>) {
  return ingestItems(
    sessionStream,
    items(events.map((event) => ({ ...event, t: T0 + event.t * 1000 }))),
    { store, nowMs: T0 + 3_600_000 },
  );
}

/** `[start, end, group.u, value, final]` of a counter's sessions, newest first. */
async function sessions(store: Store, counter: string) {
  const compiled = sessionStream.counters.find((item) => item.name === counter)!;
  const rows = await listWindows(sessionStream, compiled, { store, nowMs: T0 }, { limit: 1000 });
  return rows.map((row) => [row.start, row.end, row.group.u, row.value, row.final]);
}

const LATENESS = { latenessMs: 120_000 };

const capped = () => sessionStream.counters.find((item) => item.name === "capped")!;

const metas = (...names: string[]) =>
  sessionStream.counterMetas.filter((meta) => names.includes(meta.name));

/** A stream whose session counter comes before its window counter (lateness 0). */
const mixedStream: CompiledStream = compileConfig({
  streams: {
    mixed: {
      time: { field: "t", lateness: "0s" },
      counters: {
        visits: { window: { session: "30s" }, groupBy: ["u"], aggregate: "count" },
        minutes: { window: { tumbling: "1m" }, aggregate: "count" },
      },
    },
  },
}).get("mixed")!;

/** Session cases, each run on both stores. */
export const sessionScenarios: Record<string, (store: Store) => Promise<void>> = {
  async "closeWindows() lists a stream's window closes before its session closes, on both stores, whatever order its counters come in"(
    store,
  ) {
    // The session counter first in the definition: the memory store closed counter by counter
    // (the session, then the window), Redis every window counter first, then the sessions, so the
    // sweep's `closed` and the result log (webhooks, live) came in another order on each store.
    await ingestItems(
      mixedStream,
      items([{ u: "a", t: T0 }, { u: "b", t: T0 + 300_000 }]),
      { store, nowMs: T0 + 3_600_000 },
    );
    const closed = await store.closeWindows("mixed", mixedStream.counterMetas, { latenessMs: 0 });
    assert.deepEqual(closed.map((window) => [window.counter, window.start, window.end]), [
      ["minutes", T0, T0 + 60_000],
      ["visits", T0, T0],
    ]);
    const log = (await store.readLog("mixed", null, 100)).map((entry) => entry.record)
      .flatMap((record) => record.type === "window.closed" ? [[record.counter, record.start]] : []);
    assert.deepEqual(log, [["minutes", T0], ["visits", T0]]);
  },
  async "sessions: events less than the gap apart form one session, a longer gap a new one"(store) {
    await ingest(store, [
      { u: "a", t: 0, v: 4, p: "x" },
      { u: "a", t: 25, v: -1, p: "y" },
      { u: "a", t: 54.999, v: 2, p: "x" },
      // 30 s after the last event: not below the gap, so a new session.
      { u: "a", t: 84.999, v: 7, p: "z" },
      { u: "b", t: 10, v: 1, p: "x" },
    ]);
    assert.deepEqual(await sessions(store, "count"), [
      [iso(84_999), iso(84_999), "a", 1, false],
      [iso(10_000), iso(10_000), "b", 1, false],
      [iso(0), iso(54_999), "a", 3, false],
    ]);
    const values = async (counter: string) => (await sessions(store, counter)).map((row) => row[3]);
    assert.deepEqual(await values("sum"), [7, 1, 5]);
    assert.deepEqual(await values("min"), [7, 1, -1]);
    assert.deepEqual(await values("max"), [7, 1, 4]);
    assert.deepEqual(await values("avg"), [7, 1, 5 / 3]);
    assert.deepEqual(await values("distinct"), [1, 1, 2]);
    assert.deepEqual(await sessions(store, "wide"), await sessions(store, "count"));
  },

  async "sessions: an event within the gap of two sessions merges them, and of three"(store) {
    await ingest(store, [
      { u: "a", t: 100, v: 1, p: "x" },
      { u: "a", t: 140, v: 2, p: "y" },
      { u: "a", t: 180, v: 3, p: "z" },
    ]);
    assert.equal((await sessions(store, "count")).length, 3);
    // 20 s after the first and before the second: one session of both.
    await ingest(store, [{ u: "a", t: 120, v: 10, p: "x" }]);
    assert.deepEqual(await sessions(store, "count"), [
      [iso(180_000), iso(180_000), "a", 1, false],
      [iso(100_000), iso(140_000), "a", 3, false],
    ]);
    // Two events in one batch bridge the rest: one session of all three.
    await ingest(store, [{ u: "a", t: 160, v: -5, p: "w" }, { u: "a", t: 85, v: 0, p: "y" }]);
    assert.deepEqual(await sessions(store, "count"), [[iso(85_000), iso(180_000), "a", 6, false]]);
    const value = async (counter: string) => (await sessions(store, counter))[0][3];
    assert.equal(await value("sum"), 11);
    assert.equal(await value("min"), -5);
    assert.equal(await value("max"), 10);
    assert.equal(await value("avg"), 11 / 6);
    assert.equal(await value("distinct"), 4);
  },

  async "closeWindows() closes a session once, when the watermark passes end + gap + lateness"(
    store,
  ) {
    await ingest(store, [
      { u: "a", t: 0, v: 1, p: "x" },
      { u: "a", t: 25, v: 2, p: "y" },
      { u: "b", t: 30, v: 3, p: "x" },
    ]);
    // The session of a ends at 25 s: final once the watermark reaches 25 s + 30 s + 2 min.
    await ingest(store, [{ u: "c", t: 174.999 }]);
    assert.deepEqual(await store.closeWindows("visits", metas("sum"), LATENESS), []);
    await ingest(store, [{ u: "c", t: 175 }]);
    const closed = await store.closeWindows("visits", metas("sum", "distinct"), LATENESS);
    assert.deepEqual(
      closed.map((window) => [window.counter, window.start, window.end, window.groups.length]),
      [["sum", T0, T0 + 25_000, 1], ["distinct", T0, T0 + 25_000, 1]],
    );
    assert.equal(closed[0].groups[0].group, '["a"]');
    assert.equal(closed[0].groups[0].state.sum, 3);
    assert.equal(closed[1].groups[0].state.distinct, 2);
    assert.deepEqual(await store.closeWindows("visits", metas("sum", "distinct"), LATENESS), []);
    const log = (await store.readLog("visits", null, 100)).map((entry) => entry.record)
      .filter((record) => record.type === "window.closed");
    assert.deepEqual(
      log.map((record) =>
        record.type === "window.closed"
          ? [record.counter, record.start, record.end, record.group, record.state.count]
          : null
      ),
      [["sum", T0, T0 + 25_000, '["a"]', 2], ["distinct", T0, T0 + 25_000, '["a"]', 2]],
    );
    const rows = await sessions(store, "sum");
    assert.deepEqual(rows.find((row) => row[2] === "a"), [iso(0), iso(25_000), "a", 3, true]);
    assert.deepEqual(rows.find((row) => row[2] === "b"), [iso(30_000), iso(30_000), "b", 3, false]);
  },

  async "closeWindows() with through and throughSession closes, of the sessions due at through, none after the one named, in the order a peek lists them"(
    store,
  ) {
    // Four sessions ending at 10 s, due together; U+FF5E sorts before U+1F600 by code point (and
    // by their UTF-8), after it by UTF-16 units. One of z ends earlier.
    const groups = ["a", "b", "\uff5e", "\u{1f600}"];
    await ingest(store, [{ u: "z", t: 0 }, ...groups.map((u) => ({ u, t: 10 }))]);
    await ingest(store, [{ u: "tick", t: 300 }]);
    const order = ["z", ...groups].map((u) => JSON.stringify([u]));
    const peeked = await store.closeWindows("visits", metas("count"), { ...LATENESS, peek: true });
    assert.deepEqual(peeked.map((window) => window.groups[0].group), order);
    const through = T0 + 40_000;
    const bound = { start: T0 + 10_000, group: order[3] };
    const first = await store.closeWindows("visits", metas("count"), {
      ...LATENESS,
      through,
      throughSession: bound,
    });
    assert.deepEqual(first.map((window) => window.groups[0].group), order.slice(0, 4));
    // The one named closed already (another instance, say): still none after it.
    assert.deepEqual(
      [
        ...await store.closeWindows("visits", metas("count"), {
          ...LATENESS,
          through,
          throughSession: bound,
        }),
      ],
      [],
    );
    const rest = await store.closeWindows("visits", metas("count"), LATENESS);
    assert.deepEqual(rest.map((window) => window.groups[0].group), order.slice(4));
  },

  async "closeWindows() closes up to ten sessions per window of its limit"(store) {
    await ingest(store, Array.from({ length: 25 }, (_, i) => ({ u: `u${i}`, t: i })));
    await ingest(store, [{ u: "z", t: 300 }]);
    const close = () => store.closeWindows("visits", metas("count"), { ...LATENESS, limit: 2 });
    assert.equal((await close()).length, 20);
    assert.equal((await close()).length, 5);
    assert.equal((await close()).length, 0);
  },

  async "closeWindows() closes at most 1,000 sessions of a counter by default (a sweep's)"(store) {
    const users = Array.from({ length: 1005 }, (_, i) => ({ u: `u${i}`, t: i }));
    await ingest(store, users.slice(0, 1000));
    await ingest(store, users.slice(1000));
    await ingest(store, [{ u: "z", t: 1300 }]);
    const close = () => store.closeWindows("visits", metas("count"), LATENESS);
    assert.equal((await close()).length, 1000);
    assert.equal((await close()).length, 5);
  },

  async "closeWindows() peeks at due sessions without claiming them"(store) {
    await ingest(store, [{ u: "a", t: 0 }, { u: "z", t: 200 }]);
    const peeked = await store.closeWindows("visits", metas("count"), { ...LATENESS, peek: true });
    assert.deepEqual(peeked.map((window) => [window.start, window.end]), [[T0, T0]]);
    const closed = await store.closeWindows("visits", metas("count"), LATENESS);
    assert.deepEqual(closed.map((window) => [window.start, window.end]), [[T0, T0]]);
  },

  async "sessions: an event beyond lateness is late and changes no session"(store) {
    await ingest(store, [{ u: "a", t: 0 }, { u: "b", t: 300 }]);
    // Within lateness (300 s - 2 min) an event still extends b's session backwards.
    const within = await ingest(store, [{ u: "b", t: 280 }]);
    assert.equal(within.late, 0);
    // Within a's gap, but beyond lateness: late, so a's session (final by now) stays as it was.
    const beyond = await ingest(store, [{ u: "a", t: 20 }, { u: "b", t: 179.999 }]);
    assert.equal(beyond.late, 2);
    assert.deepEqual(await sessions(store, "count"), [
      [iso(280_000), iso(300_000), "b", 2, false],
      [iso(0), iso(0), "a", 1, true],
    ]);
  },

  async "sessions: a raised lateness opens no session inside a closed one's gap"(store) {
    await ingest(store, [{ u: "a", t: 0 }, { u: "a", t: 5 }, { u: "b", t: 300 }]);
    const closed = await store.closeWindows("visits", metas("count"), LATENESS);
    assert.deepEqual(closed.map((window) => [window.start, window.end]), [[T0, T0 + 5_000]]);
    const raised = compileConfig({
      streams: {
        visits: { ...SESSION_CONFIG.streams.visits, time: { field: "t", lateness: "1h" } },
      },
    }, { sessionMaxGroups: true }).get("visits")!;
    const reply = await ingestItems(
      raised,
      items([{ u: "a", t: T0 + 8_000 }, { u: "a", t: T0 + 12_000 }]),
      { store, nowMs: T0 + 3_600_000 },
    );
    assert.equal(reply.late, 2);
    const rows = (await sessions(store, "count")).filter((row) => row[2] === "a");
    assert.deepEqual(rows, [[iso(0), iso(5_000), "a", 2, true]]);
    assert.equal((await store.stats("visits", [])).closedThrough, T0 + 35_000);
  },

  async "sessions: a close by a raised lateness closes those closedThrough keeps final, as reads call them final"(
    store,
  ) {
    await ingest(store, [
      { u: "a", t: 10 },
      { u: "b", t: 250 },
      { u: "c", t: 250.001 },
      { u: "d", t: 400 },
    ]);
    // What the 2 min of lateness called final, kept so by a write raising it to 1 h.
    await store.keepFinal("visits", T0 + 280_000);
    const raised = compileConfig({
      streams: {
        visits: { ...SESSION_CONFIG.streams.visits, time: { field: "t", lateness: "1h" } },
      },
    }, { sessionMaxGroups: true }).get("visits")!;
    const count = raised.counters.find((item) => item.name === "count")!;
    const finalUsers = async () =>
      (await listWindows(raised, count, { store, nowMs: T0 + 400_000 }, { limit: 1000 }))
        .filter((row) => row.final).map((row) => row.group.u).sort();
    // End + gap at or before closedThrough: a and b, not c (1 ms after).
    assert.deepEqual(await finalUsers(), ["a", "b"]);
    const closed = await store.closeWindows("visits", metas("count"), { latenessMs: 3_600_000 });
    assert.deepEqual(closed.map((window) => [window.start - T0, window.groups[0].group]), [
      [10_000, '["a"]'],
      [250_000, '["b"]'],
    ]);
    const log = (await store.readLog("visits", null, 100)).map((entry) => entry.record)
      .flatMap((record) => record.type === "window.closed" ? [record.group] : []);
    assert.deepEqual(log, ['["a"]', '["b"]']);
    assert.deepEqual(
      await store.closeWindows("visits", metas("count"), { latenessMs: 3_600_000 }),
      [],
    );
    assert.deepEqual(await finalUsers(), ["a", "b"]);
    assert.equal((await store.stats("visits", [])).closedThrough, T0 + 280_000);
  },

  async "sessions: past maxSessions open sessions, an event that would open one is dropped"(
    store,
  ) {
    await ingest(store, [{ u: "a", t: 0 }, { u: "b", t: 1 }, { u: "c", t: 2 }, { u: "a", t: 3 }]);
    // Two sessions are open (a, b): c would open a third and is dropped; a@3 extends a.
    // b@40 is a gap after b's session and d is new: both would open one, both dropped.
    await ingest(store, [{ u: "b", t: 40 }, { u: "d", t: 5 }]);
    assert.deepEqual(
      (await sessions(store, "capped")).map((row) => [row[2], row[3]]),
      [["b", 1], ["a", 2]],
    );
    const overflow = async () => (await store.stats("visits", sessionStream.counterMetas)).overflow;
    assert.deepEqual([(await overflow()).capped, (await overflow()).count], [3, 0]);
    // Other counters still count the dropped events.
    assert.deepEqual(
      (await sessions(store, "count")).map((row) => [row[2], row[3]]),
      [["b", 1], ["d", 1], ["c", 1], ["b", 1], ["a", 2]],
    );
    // z raises the watermark (and is dropped too); once a and b close, a new session fits.
    await ingest(store, [{ u: "z", t: 200 }]);
    assert.equal((await store.closeWindows("visits", metas("capped"), LATENESS)).length, 2);
    await ingest(store, [{ u: "e", t: 200 }]);
    assert.deepEqual(
      (await sessions(store, "capped")).map((row) => [row[2], row[3]]),
      [["e", 1], ["b", 1], ["a", 2]],
    );
    assert.equal((await overflow()).capped, 4);
  },

  async "sessions: an open session that expired before a sweep closed it takes no room of maxSessions"(
    store,
  ) {
    const ttl = metas("capped")[0].ttlMs;
    const at = (u: string, t: number, nowMs: number) =>
      ingestItems(sessionStream, items([{ u, t: T0 + t * 1000 }]), { store, nowMs });
    const N = T0 + 3_600_000;
    await at("a", 0, N);
    await at("b", 1, N + ttl / 2);
    // a and b open: a third is dropped.
    await at("x", 2, N + ttl - 500);
    // a expired (no sweep closed it), 1 ms ago: c opens a session in its room.
    await at("c", 3, N + ttl + 1);
    const rows = await listWindows(sessionStream, capped(), { store, nowMs: N + ttl + 1 }, {
      limit: 10,
    });
    assert.deepEqual(rows.map((row) => [row.group.u, row.value]), [["c", 1], ["b", 1]]);
    assert.equal((await store.stats("visits", sessionStream.counterMetas)).overflow.capped, 1);
    // b and c open: full again.
    await at("y", 4, N + ttl + 2);
    assert.equal((await store.stats("visits", sessionStream.counterMetas)).overflow.capped, 2);
  },

  async "sessions: a close takes sessions due at the same time by their start's text, then group, on both stores"(
    store,
  ) {
    // Near the epoch, so starts have texts of different lengths: a's (9000) sorts after the
    // others' (10000) as text, as Redis keeps them; all end at 10 s.
    const groups = ["b", "c", "d", "e", "f", "g", "h", "i", "j", "k"];
    const events = [
      { u: "a", t: 9_000 },
      ...[{ u: "a" }, ...groups.map((u) => ({ u }))]
        .map(({ u }) => ({ u, t: 10_000 })),
      { u: "z", t: 200_000 },
    ];
    await ingestItems(sessionStream, items(events), { store, nowMs: T0 });
    const close = async () =>
      (await store.closeWindows("visits", metas("count"), { ...LATENESS, limit: 1, nowMs: T0 }))
        .map((item) => [item.start, JSON.parse(item.groups[0].group)[0]]);
    // One window's worth (ten sessions): the first ten of the eleven due together.
    assert.deepEqual(await close(), groups.map((u) => [10_000, u]));
    assert.deepEqual(await close(), [[9_000, "a"]]);
  },

  async "sessions: a read of the open sessions (…/current) reads at most maxSessions, however many closed ones are retained"(
    store,
  ) {
    // Three rounds of two sessions (maxSessions of capped) that close, then two left open.
    for (const round of [0, 1, 2]) {
      const t = round * 300;
      await ingest(store, [{ u: `a${round}`, t }, { u: `b${round}`, t }]);
      // Raises the watermark past their end + gap + lateness (dropped from capped: it is full).
      await ingest(store, [{ u: "z", t: t + 200 }]);
      assert.equal((await store.closeWindows("visits", metas("capped"), LATENESS)).length, 2);
    }
    await ingest(store, [{ u: "x", t: 1_000 }, { u: "y", t: 1_000 }]);
    const [meta] = metas("capped");
    const all = { fromMs: -8.64e15, toMs: 8.64e15 };
    // Every live session (open and closed) is read by a list…
    const live = await store.readSessions("visits", meta, all);
    assert.equal(live.length, 8);
    assert.equal(live.filter((session) => session.closed).length, 6);
    // …the open ones alone by `open`: no more than maxSessions, newest first, ties by group.
    const open = await store.readSessions("visits", meta, { ...all, open: true });
    assert.deepEqual(open.map((session) => [session.group, session.closed]), [
      ['["x"]', false],
      ['["y"]', false],
    ]);
    assert.deepEqual(
      (await store.readSessions("visits", meta, { ...all, open: true, limit: 1 })).map((s) =>
        s.group
      ),
      ['["x"]'],
    );
    assert.deepEqual(
      await store.readSessions("visits", meta, { fromMs: T0, toMs: T0 + 1, open: true }),
      [],
    );
    // …/current reads only those: at most maxSessions sessions from the store.
    const read: number[] = [];
    const counting = new Proxy(store, {
      get(target, property) {
        if (property !== "readSessions") return Reflect.get(target, property).bind(target);
        return async (...args: Parameters<Store["readSessions"]>) => {
          const sessions = await target.readSessions(...args);
          read.push(sessions.length);
          return sessions;
        };
      },
    });
    const compiled = sessionStream.counters.find((item) => item.name === "capped")!;
    const current = await currentWindow(sessionStream, compiled, {
      store: counting,
      nowMs: T0 + 1_000_000,
    });
    assert.deepEqual(current.rows.map((row) => row.group.u), ["x", "y"]);
    assert.deepEqual(read, [2]);
    // A list reads at most its limit; with a group filter, every live session in from/to (README).
    const list = (options: Parameters<typeof listWindows>[3]) =>
      listWindows(sessionStream, compiled, { store: counting, nowMs: T0 + 1_000_000 }, options);
    read.length = 0;
    assert.equal((await list({ limit: 1 })).length, 1);
    assert.deepEqual(read, [1]);
    read.length = 0;
    assert.deepEqual((await list({ limit: 1, groups: { u: "a0" } })).map((row) => row.group.u), [
      "a0",
    ]);
    assert.deepEqual(read, [8]);
    read.length = 0;
    await list({ limit: 1, groups: { u: "a0" }, fromMs: T0 + 600_000 });
    assert.deepEqual(read, [4]);
  },

  async "sessions: past maxSessions, a batch is taken group by group (first seen first), in runs by time"(
    store,
  ) {
    // Two streams alike; the second's batches also have a late event (l), the first's have not.
    const capped = {
      time: { field: "t", lateness: "2m" },
      counters: {
        capped: { window: { session: "30s" }, groupBy: ["u"], aggregate: "count", maxSessions: 2 },
      },
    };
    const streams = compileConfig({ streams: { first: capped, second: capped } });
    const events = [{ u: "b", t: 100 }, { u: "a", t: 130 }, { u: "b", t: 40 }];
    const send = (stream: CompiledStream, batch: Array<{ u: string; t: number }>) =>
      ingestItems(stream, items(batch.map((event) => ({ ...event, t: T0 + event.t * 1000 }))), {
        store,
        nowMs: T0 + 3_600_000,
      });
    for (const [name, batch] of [["first", events], ["second", [...events, { u: "l", t: 0 }]]]) {
      const stream = streams.get(name as string)!;
      const read = async () =>
        (await listWindows(stream, stream.counters[0], { store, nowMs: T0 }, {})).map((row) => [
          row.group.u,
          row.start,
          row.end,
        ]);
      await send(stream, batch as typeof events);
      // b's two sessions (b seen first, its events in time order) take both places: a is dropped.
      assert.deepEqual(
        await read(),
        [["b", iso(100_000), iso(100_000)], ["b", iso(40_000), iso(40_000)]],
        name as string,
      );
      // b@70 alone is a gap from both sessions, but b@80, less than the gap after it, reaches the
      // later one: the run is taken whole, whichever of its events comes first.
      const run = [{ u: "b", t: 70 }, { u: "b", t: 80 }];
      await send(stream, name === "first" ? run : [...run, { u: "l", t: 0 }]);
      assert.deepEqual(
        await read(),
        [["b", iso(70_000), iso(100_000)], ["b", iso(40_000), iso(40_000)]],
        name as string,
      );
      assert.equal((await store.stats(name as string, stream.counterMetas)).overflow.capped, 1);
    }
  },

  async "readSessions() reads the newest starts first, at most limit, within the range"(store) {
    await ingest(store, [
      { u: "a", t: 0 },
      { u: "b", t: 0 },
      { u: "a", t: 100 },
      { u: "c", t: 200 },
      { u: "a", t: 300 },
    ]);
    const count = metas("count")[0];
    const read = async (range: { fromMs: number; toMs: number; limit?: number }) =>
      (await store.readSessions("visits", count, range)).map((session) => [
        session.start - T0,
        session.group,
      ]);
    assert.deepEqual(await read({ fromMs: T0, toMs: T0 + 300_000, limit: 2 }), [
      [200_000, '["c"]'],
      [100_000, '["a"]'],
    ]);
    const everything = await read({ fromMs: T0 - 1, toMs: T0 + 301_000 });
    assert.equal(everything.length, 5);
    assert.deepEqual(everything.slice(0, 3), [[300_000, '["a"]'], [200_000, '["c"]'], [
      100_000,
      '["a"]',
    ]]);
    const compiled = sessionStream.counters.find((item) => item.name === "count")!;
    const rows = await listWindows(sessionStream, compiled, { store, nowMs: T0 }, { limit: 2 });
    assert.deepEqual(rows.map((row) => [row.start, row.group.u]), [
      [iso(300_000), "a"],
      [iso(200_000), "c"],
    ]);
    const filtered = await listWindows(sessionStream, compiled, { store, nowMs: T0 }, {
      limit: 2,
      groups: { u: "a" },
    });
    assert.deepEqual(filtered.map((row) => row.start), [iso(300_000), iso(100_000)]);
  },

  async "a limited session read cuts sessions that start together by group, as the whole list"(
    store,
  ) {
    // Six groups; b, d and e start together, and a and f together before them.
    await ingest(store, [
      { u: "f", t: 0 },
      { u: "a", t: 0 },
      { u: "e", t: 100 },
      { u: "b", t: 100 },
      { u: "d", t: 100 },
      { u: "c", t: 200 },
    ]);
    const compiled = sessionStream.counters.find((item) => item.name === "count")!;
    const read = async (limit: number) =>
      (await listWindows(sessionStream, compiled, { store, nowMs: T0 }, { limit })).map((row) =>
        row.group.u
      );
    const all = await read(1000);
    assert.deepEqual(all, ["c", "b", "d", "e", "a", "f"]);
    for (let limit = 1; limit <= 6; limit++) {
      assert.deepEqual(await read(limit), all.slice(0, limit), `limit ${limit}`);
    }
    // The store reads no more than the limit, however many start together.
    const count = metas("count")[0];
    const range = { fromMs: T0 - 1, toMs: T0 + 300_000 };
    for (let limit = 1; limit <= 6; limit++) {
      const read = await store.readSessions("visits", count, { ...range, limit });
      assert.equal(read.length, limit);
    }
    await ingest(store, Array.from({ length: 50 }, (_, i) => ({ u: `g${i}`, t: 250 })));
    const tied = await store.readSessions("visits", count, { ...range, limit: 3 });
    assert.deepEqual(tied.map((session) => session.group), ['["g0"]', '["g1"]', '["g10"]']);
  },

  async "sessions: an empty groupBy keeps one session for the whole stream"(store) {
    const stream = compileConfig({
      streams: {
        visits: {
          time: { field: "t", lateness: "10s" },
          counters: { all: { window: { session: "30s" }, aggregate: "count" } },
        },
      },
    }).get("visits")!;
    await ingestItems(
      stream,
      items([{ u: "a", t: T0 }, { u: "b", t: T0 + 20_000 }, { u: "c", t: T0 + 60_000 }]),
      { store, nowMs: T0 + 3_600_000 },
    );
    const rows = await listWindows(stream, stream.counters[0], { store, nowMs: T0 });
    assert.deepEqual(rows.map((row) => [row.start, row.end, row.group, row.value]), [
      [iso(60_000), iso(60_000), {}, 1],
      [iso(0), iso(20_000), {}, 2],
    ]);
  },
};
