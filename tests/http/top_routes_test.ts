/** `?top=` and `?by=` on the counter routes: top groups, others, ties, and clear 400s. */
import assert from "node:assert/strict";
import { at, postEvents, testApp } from "../_fixtures.ts";
import { cursorOfText } from "../../src/store/mod.ts";

const CONFIG = {
  streams: {
    api: {
      time: { field: "ts", lateness: "10s" },
      counters: {
        hits: { window: { tumbling: "1m" }, groupBy: ["endpoint"], aggregate: "count" },
        latency: {
          window: { tumbling: "1m" },
          groupBy: ["endpoint"],
          aggregate: { quantiles: "ms" },
        },
      },
    },
  },
};

/** /a: 5 hits of 1..5 ms; /b and /c: 3 hits each (a tie); /d: 1 hit of 900 ms. */
const EVENTS = [
  ...[1, 2, 3, 4, 5].map((ms) => ({ ts: at(1), endpoint: "/a", ms })),
  ...[10, 20, 30].map((ms) => ({ ts: at(2), endpoint: "/c", ms })),
  ...[100, 200, 300].map((ms) => ({ ts: at(3), endpoint: "/b", ms })),
  { ts: at(4), endpoint: "/d", ms: 900 },
];

Deno.test("?top= gives each window's top groups, ties by group key, and the rest summed in others", async () => {
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(30)) });
  await postEvents(app, EVENTS, { stream: "api" });
  const res = await app.request("/v1/streams/api/counters/hits?top=2");
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.deepEqual(
    body.windows.map((
      row: { group: { endpoint: string }; value: number },
    ) => [row.group.endpoint, row.value]),
    [
      ["/a", 5],
      ["/b", 3],
    ],
  );
  assert.deepEqual(body.others, [{
    start: at(0),
    end: at(60),
    groups: 4,
    value: 4,
    final: false,
  }]);
  const current = await (await app.request("/v1/streams/api/counters/hits/current?top=2")).json();
  assert.deepEqual(current.windows, body.windows);
  assert.deepEqual(current.others, body.others[0]);
  // Without top: every group, no others.
  const all = await (await app.request("/v1/streams/api/counters/hits")).json();
  assert.equal(all.windows.length, 4);
  assert.equal(all.others, undefined);
});

Deno.test("?by= ranks a quantiles counter's groups by that quantile; others is the merged sketch", async () => {
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(30)) });
  // /e: mostly 1 ms with one 5 s outlier, last by its median, first by p100.
  const outlier = [1, 1, 1, 1, 5000].map((ms) => ({ ts: at(5), endpoint: "/e", ms }));
  await postEvents(app, [...EVENTS, ...outlier], { stream: "api" });
  const endpoints = (body: { windows: Array<{ group: { endpoint: string } }> }) =>
    body.windows.map((row) => row.group.endpoint);
  const byMax = await (await app.request("/v1/streams/api/counters/latency?top=2&by=p100")).json();
  assert.deepEqual(endpoints(byMax), ["/e", "/d"]);
  const byMedian = await (await app.request("/v1/streams/api/counters/latency?top=2")).json();
  assert.deepEqual(endpoints(byMedian), ["/d", "/b"]);
  const others = byMax.others[0];
  assert.deepEqual(
    [others.groups, others.value.count, others.value.min, others.value.max],
    [5, 11, 1, 300],
  );
  assert.equal(others.approximate, true);
});

Deno.test("?by=p1.4 ranks by the quantile 0.014 exactly, not by 1.4 / 100", async () => {
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(30)) });
  // 501 values: rank floor(0.014 × 500) = 7. /f's seventh value (rank 6) is 1 ms, its eighth
  // 1,000 ms; /g's are all 500 ms. 1.4 / 100 is 0.013999999999999999, whose rank is 6.
  const f = Array.from({ length: 501 }, (_, i) => ({
    ts: at(5),
    endpoint: "/f",
    ms: i < 7 ? 1 : 1000,
  }));
  const g = Array.from({ length: 501 }, () => ({ ts: at(6), endpoint: "/g", ms: 500 }));
  await postEvents(app, f, { stream: "api" });
  await postEvents(app, g, { stream: "api" });
  const body = await (await app.request("/v1/streams/api/counters/latency?top=1&by=p1.4")).json();
  assert.deepEqual(
    body.windows.map((row: { group: { endpoint: string } }) => row.group.endpoint),
    ["/f"],
  );
});

Deno.test("with top, limit counts windows: each keeps its top groups and its others", async () => {
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(130)) });
  const later = EVENTS.map((event) => ({ ...event, ts: at(61) }));
  await postEvents(app, [...EVENTS, ...later], { stream: "api" });
  const both = await (await app.request("/v1/streams/api/counters/hits?top=2")).json();
  assert.deepEqual(both.others.map((row: { start: string }) => row.start), [at(60), at(0)]);
  assert.equal(both.windows.length, 4);
  const newest = await (await app.request("/v1/streams/api/counters/hits?top=2&limit=1")).json();
  assert.deepEqual(
    newest.windows.map((row: { start: string; value: number }) => [row.start, row.value]),
    [[at(60), 5], [at(60), 3]],
  );
  assert.deepEqual(newest.others.map((row: { start: string }) => row.start), [at(60)]);
});

Deno.test("with top, top × limit is at most 1,000 rows: more is a 400 naming both; without limit, a top over 10 reads as many windows as keep within it (README)", async () => {
  // 25 one-minute windows, each with the groups /a and /b.
  const minutes = Array.from({ length: 25 }, (_, minute) => minute);
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(25 * 60 + 30)) });
  await postEvents(
    app,
    minutes.flatMap((minute) => [
      { ts: at(minute * 60 + 1), endpoint: "/a", ms: 1 },
      { ts: at(minute * 60 + 2), endpoint: "/b", ms: 1 },
    ]),
    { stream: "api" },
  );
  for (
    const [top, limit] of [[2, 501], [1000, 2], [11, 91], [1000, 1000]]
  ) {
    const res = await app.request(`/v1/streams/api/counters/hits?top=${top}&limit=${limit}`);
    assert.equal(res.status, 400, `top=${top}&limit=${limit}`);
    const { error } = await res.json();
    assert.equal(error.code, "invalid_query");
    assert.equal(
      error.message,
      `Query parameters 'top' (${top}) and 'limit' (${limit}) ask for up to ${
        top * limit
      } rows (the top groups of each of 'limit' windows); at most 1000: lower one of them`,
    );
  }
  // At the bound, taken.
  for (const [top, limit, windows] of [[2, 500, 25], [1000, 1, 1], [40, 25, 25]]) {
    const res = await app.request(`/v1/streams/api/counters/hits?top=${top}&limit=${limit}`);
    assert.equal(res.status, 200, `top=${top}&limit=${limit}`);
    const body = await res.json();
    assert.equal(body.others.length, windows, `top=${top}&limit=${limit}`);
  }
  // Without limit: 100 windows up to top=10, then 1000 / top of them, newest first.
  for (const [top, windows] of [[10, 25], [40, 25], [50, 20], [100, 10], [1000, 1]]) {
    const body = await (await app.request(`/v1/streams/api/counters/hits?top=${top}`)).json();
    assert.equal(body.others.length, windows, `top=${top}`);
    assert.equal(body.windows.length, windows * 2, `top=${top}`);
    assert.equal(body.others[0].start, at(24 * 60), `top=${top}`);
  }
});

Deno.test("bad top and by parameters are 400s that name the problem", async () => {
  const { app } = await testApp({ config: CONFIG });
  const cases: Array<[string, RegExp]> = [
    ["hits?by=p99", /Query parameter 'by' needs 'top'/],
    ["hits?top=2&by=p99", /'by' applies to quantiles counters; 'hits' is count/],
    ["latency?top=2&by=p101", /'by' must be p0 to p100, got 'p101'/],
    ["latency?top=2&by=99", /'by' must be p0 to p100, got '99'/],
    // Read as 1 and 0 they would rank by p100 and p0, which they do not name (as ?q= refuses).
    [
      "latency?top=2&by=p99.99999999999999999",
      /'by' names 'p99.99999999999999999', too close to p100 to tell from it \(ask for p100\)/,
    ],
    [
      `latency?top=2&by=p0.${"0".repeat(400)}1`,
      /'by' names 'p0\.0+… \(404 characters\)', too close to p0 to tell from it \(ask for p0\)/,
    ],
    // Read as 0.3 it would rank by p30, the value one rank above the one it names.
    [
      "latency?top=2&by=p29.99999999999999999",
      /'by' names 'p29.99999999999999999', more digits than a number keeps: it reads as p30 \(ask for p30\)/,
    ],
    ["hits?top=2&group.endpoint=/a", /cannot be combined with group filters: group.endpoint/],
    ["hits/current?top=2&group.endpoint=/a", /cannot be combined with group filters/],
    ["hits?top=0", /top/],
  ];
  for (const [path, message] of cases) {
    const res = await app.request(`/v1/streams/api/counters/${path}`);
    assert.equal(res.status, 400, path);
    assert.match(JSON.stringify(await res.json()), message, path);
  }
});

Deno.test("by= of a long run of zeros before a last digit is read in linear time", async () => {
  const { app } = await testApp({ config: CONFIG });
  // p100.000…001 reads as p100 (too close to it), p50.000…001 as p50 (another number): both
  // refused; /0+$/ on their digits tried every zero of the run, 60,000 of them about 2 s.
  const zeros = "0".repeat(60_000);
  for (const by of [`p100.${zeros}1`, `p50.${zeros}1`]) {
    const started = performance.now();
    const res = await app.request(`/v1/streams/api/counters/latency?top=2&by=${by}`);
    const elapsed = performance.now() - started;
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.code, "invalid_query");
    assert.ok(elapsed < 500, `${elapsed} ms`);
  }
});

Deno.test("by= takes p0 and p100 written any way that is exactly 0 or 100", async () => {
  const { app } = await testApp({ config: CONFIG });
  for (
    const by of ["p100", "p100.000", "p0", "p0.000", "p99.9999999999999", "p30.000000000000000"]
  ) {
    const res = await app.request(`/v1/streams/api/counters/latency?top=2&by=${by}`);
    assert.equal(res.status, 200, by);
    await res.body?.cancel();
  }
});

Deno.test("?top= on a distinct counter through the app merges the rest as a union, not a sum", async () => {
  const config = {
    streams: {
      visits: {
        time: { field: "ts", lateness: "10s" },
        counters: {
          users: { window: { tumbling: "1m" }, groupBy: ["page"], aggregate: { distinct: "u" } },
        },
      },
    },
  };
  const { app } = await testApp({ config, now: () => Date.parse(at(30)) });
  // /a: u1 u2 u3; /b: u1 u2; /c: u2 u4. The rest beyond /a holds u1 u2 u4: 3, where a sum says 4.
  const events = [
    ...["u1", "u2", "u3"].map((u) => ({ ts: at(1), page: "/a", u })),
    ...["u1", "u2"].map((u) => ({ ts: at(2), page: "/b", u })),
    ...["u2", "u4"].map((u) => ({ ts: at(3), page: "/c", u })),
  ];
  await postEvents(app, events, { stream: "visits" });
  const body = await (await app.request("/v1/streams/visits/counters/users?top=1")).json();
  assert.deepEqual(body.windows.map((row: { value: number }) => row.value), [3]);
  assert.equal(body.others[0].groups, 3);
  assert.equal(body.others[0].value, 3);
});

Deno.test("…/current pages its groups with limit and cursor, reading on in the cursor's window", async () => {
  let now = Date.parse(at(30));
  const { app } = await testApp({ config: CONFIG, now: () => now });
  await postEvents(app, EVENTS, { stream: "api" });
  const read = async (query: string) => {
    const res = await app.request(`/v1/streams/api/counters/hits/current?${query}`);
    return { status: res.status, body: await res.json() };
  };
  const first = await read("limit=3");
  assert.equal(first.status, 200);
  assert.deepEqual(
    first.body.windows.map((row: { group: { endpoint: string } }) => row.group.endpoint),
    [
      "/a",
      "/b",
      "/c",
    ],
  );
  assert.equal(first.body.start, at(0));
  // The next minute contains now: the cursor still reads the rest of the first page's window.
  now = Date.parse(at(90));
  const second = await read(`limit=3&cursor=${first.body.nextCursor}`);
  assert.equal(second.status, 200);
  assert.deepEqual(second.body.windows.map((row: { value: number }) => row.value), [1]);
  assert.equal(second.body.start, at(0));
  assert.equal(second.body.nextCursor, null);
  // Without limit and cursor: every group, and no nextCursor.
  now = Date.parse(at(30));
  const all = await read("");
  assert.equal(all.body.windows.length, 4);
  assert.equal("nextCursor" in all.body, false);
  for (const query of ["limit=1&top=2", "cursor=abc&top=1"]) {
    const res = await read(query);
    assert.equal(res.status, 400, query);
    assert.equal(res.body.error.code, "invalid_query", query);
  }
  for (const query of ["limit=0", "limit=1001", "top=1e1", "top=0x2", "limit=%2B3"]) {
    assert.equal((await read(query)).body.error.code, "invalid_query", query);
  }
  assert.equal((await read("cursor=abc")).body.error.code, "invalid_cursor");
  // A cursor made by hand for a time no window of the counter starts at reads nothing.
  const unaligned = cursorOfText(JSON.stringify([Date.parse(at(0)) + 7, null, 2]));
  const refused = await read(`limit=3&cursor=${encodeURIComponent(unaligned)}`);
  assert.equal(refused.status, 400);
  assert.equal(refused.body.error.code, "invalid_cursor");
  // A parameter it does not take is refused (ignored, a misspelled one would pass for a filter);
  // jQuery's cache-buster `_` is taken and ignored.
  const res = await app.request("/v1/streams/api/counters/hits/current?foo=1");
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.code, "invalid_query");
  const busted = await app.request("/v1/streams/api/counters/hits/current?_=1");
  assert.equal(busted.status, 200);
  assert.equal((await busted.json()).windows.length, 4);
});

Deno.test("…/current?top= of a final window without groups says others is final too", async () => {
  const now = Date.parse(at(30));
  const { app } = await testApp({
    config: {
      streams: {
        late0: {
          time: { field: "ts", lateness: "0s" },
          counters: { hits: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    },
    now: () => now,
  });
  // An event 3 minutes ahead (within maxFuture) moves the watermark past the current window.
  const res = await postEvents(app, [{ ts: at(210) }], { stream: "late0" });
  assert.ok(res.ok, await res.text());
  const current = await (await app.request("/v1/streams/late0/counters/hits/current?top=1")).json();
  assert.deepEqual(current.windows, []);
  assert.deepEqual(current.others, {
    start: at(0),
    end: at(60),
    groups: 0,
    value: null,
    final: true,
  });
});
