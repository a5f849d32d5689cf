/**
 * Quantiles counters through the API: the value object of a window, `?q=`
 * to pick quantiles (and a 400 that changes nothing for bad ones), alerts on
 * `value.p99`, and webhook/live payloads that carry the object.
 */
import assert from "node:assert/strict";
import { sweepOnce } from "../../src/fanout/sweep.ts";
import { publicPayload } from "../../src/fanout/payload.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { MemoryStore } from "../../src/store/mod.ts";
import { at, NOW, postEvents, testApp } from "../_fixtures.ts";

const CONFIG = {
  streams: {
    api: {
      time: { field: "ts", lateness: "10s" },
      counters: {
        latency: {
          window: { tumbling: "1m" },
          groupBy: ["endpoint"],
          aggregate: { quantiles: "ms", accuracy: 0.01 },
        },
        hits: { window: { tumbling: "1m" }, aggregate: "count" },
      },
      alerts: [{ name: "slow", counter: "latency", when: "value.p99 > 500.0" }],
    },
  },
};

/** 100 requests per endpoint: /a takes 1..100 ms, /b 10..1000 ms. */
function requests() {
  const events = [];
  for (let i = 1; i <= 100; i++) {
    events.push({ ts: at(1), endpoint: "/a", ms: i });
    events.push({ ts: at(2), endpoint: "/b", ms: i * 10 });
  }
  return events;
}

Deno.test("a quantiles counter's window value is {count, min, max, p50, p90, p95, p99, approximate}", async () => {
  const { app } = await testApp({ config: CONFIG });
  assert.equal((await postEvents(app, requests(), { stream: "api" })).status, 202);
  const res = await app.request("/v1/streams/api/counters/latency?group.endpoint=/a");
  assert.equal(res.status, 200);
  const body = await res.json();
  assert.equal(body.aggregate, "quantiles");
  const [row] = body.windows;
  assert.equal(row.approximate, true);
  assert.deepEqual(Object.keys(row.value).sort(), [
    "approximate",
    "count",
    "max",
    "min",
    "p50",
    "p90",
    "p95",
    "p99",
  ]);
  assert.deepEqual([row.value.count, row.value.min, row.value.max], [100, 1, 100]);
  // Rank floor(q × 99): 50, 90, 95, 99 (the 50th … 99th values, 1-based).
  for (const [name, exact] of [["p50", 50], ["p90", 90], ["p95", 95], ["p99", 99]]) {
    const estimate = row.value[name as string];
    assert.ok(
      Math.abs(estimate - (exact as number)) <= 0.01 * (exact as number),
      `${name} ${estimate}`,
    );
  }
});

Deno.test("?q= picks the quantiles a read reports, on the list and on /current", async () => {
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(30)) });
  await postEvents(app, requests(), { stream: "api" });
  for (
    const path of ["/v1/streams/api/counters/latency", "/v1/streams/api/counters/latency/current"]
  ) {
    const res = await app.request(`${path}?q=0.5,0.999,0,1&group.endpoint=/b`);
    assert.equal(res.status, 200, path);
    const [row] = (await res.json()).windows;
    assert.deepEqual(Object.keys(row.value).sort(), [
      "approximate",
      "count",
      "max",
      "min",
      "p0",
      "p100",
      "p50",
      "p99.9",
    ]);
    assert.ok(Math.abs(row.value.p0 - 10) <= 0.1 && row.value.p0 >= 10, `p0 ${row.value.p0}`);
    // Estimates never leave [min, max].
    assert.ok(row.value.p100 <= 1000 && row.value.p100 >= 990, `p100 ${row.value.p100}`);
    assert.ok(Math.abs(row.value["p99.9"] - 990) <= 9.9, `p99.9 ${row.value["p99.9"]}`);
  }
});

Deno.test("a quantile is the value at rank floor(q × (count − 1)) counting from 0: p90 of 1 and 2 estimates 1", async () => {
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(30)) });
  const events = [1, 2].map((ms) => ({ ts: at(1), endpoint: "/c", ms }));
  assert.equal((await postEvents(app, events, { stream: "api" })).status, 202);
  const res = await app.request(
    "/v1/streams/api/counters/latency?q=0,0.5,0.9,0.99,1&group.endpoint=/c",
  );
  assert.equal(res.status, 200);
  const { value } = (await res.json()).windows[0];
  // floor(q × 1) is 0 (the smaller value) for every q below 1: not 2 (nearest rank), nor 1.9.
  const expected = { p0: 1, p50: 1, p90: 1, p99: 1, p100: 2 };
  for (const [name, exact] of Object.entries(expected)) {
    assert.ok(Math.abs(value[name] - exact) <= 0.01 * exact, `${name} ${value[name]}`);
  }
});

Deno.test("?q= names each quantile by its decimal with the point moved two places, no digit rounded away", async () => {
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(30)) });
  await postEvents(app, requests(), { stream: "api" });
  const res = await app.request(
    "/v1/streams/api/counters/latency?q=0.9999999999999,0.29,0.001,1e-7&group.endpoint=/b",
  );
  assert.equal(res.status, 200);
  const [row] = (await res.json()).windows;
  // `0.9999999999999` was named p100 (as 1 is), and `0.29 * 100` is 28.999999999999996.
  for (const name of ["p99.99999999999", "p29", "p0.1", "p0.00001"]) {
    assert.equal(typeof row.value[name], "number", `${name} in ${Object.keys(row.value)}`);
  }
  assert.equal(row.value.p100, undefined);
});

Deno.test("?q= names a tiny quantile as README says, the plain decimal with its point moved two places (1e-9 is p0.0000001, not p1e-7), which by= takes back", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  assert.match(
    readme.replace(/\s+/g, " "),
    /the number with its point moved two places, no digit dropped, in plain decimal, as `by` takes it \(`1e-9` gives `p0\.0000001`\)/,
  );
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(30)) });
  await postEvents(app, requests(), { stream: "api" });
  const tiny = `p0.${"0".repeat(321)}5`;
  const res = await app.request(
    "/v1/streams/api/counters/latency?q=1e-9,5e-324&group.endpoint=/b",
  );
  assert.equal(res.status, 200);
  const [row] = (await res.json()).windows;
  assert.deepEqual(
    Object.keys(row.value).filter((key) => key.startsWith("p")).sort(),
    ["p0.0000001", tiny].sort(),
  );
  for (const name of ["p0.0000001", tiny]) {
    const ranked = await app.request(
      `/v1/streams/api/counters/latency?top=1&q=1e-9,5e-324&by=${name}`,
    );
    assert.equal(ranked.status, 200, await ranked.text());
  }
});

Deno.test("?q= of two quantiles whose percentages print alike as doubles names both, each with its digits", async () => {
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(30)) });
  await postEvents(app, requests(), { stream: "api" });
  // 0.8029312186167659 × 100 as a double prints 80.2931218616766, the percentage of the second.
  const res = await app.request(
    "/v1/streams/api/counters/latency?q=0.8029312186167659,0.802931218616766&group.endpoint=/b",
  );
  assert.equal(res.status, 200, await res.clone().text());
  const [row] = (await res.json()).windows;
  for (const name of ["p80.29312186167659", "p80.2931218616766"]) {
    assert.equal(typeof row.value[name], "number", `${name} in ${Object.keys(row.value)}`);
  }
});

Deno.test("?q= with an exponent's '+' a URL query read as a space says to write it as %2B; a space no '+' explains gets no such hint", async () => {
  const { app } = await testApp({ config: CONFIG });
  await postEvents(app, requests(), { stream: "api" });
  for (
    const [q, bad, hint] of [
      ["1e+0", "1e 0", "1e%2B0"],
      ["0.5,0.1e+1", "0.1e 1", "0.1e%2B1"],
      ["0.5,+1e+0", " 1e 0", "%2B1e%2B0"],
      ["+0.5", " 0.5", "%2B0.5"],
      ["0.5,+1", " 1", "%2B1"],
    ]
  ) {
    const res = await app.request(`/v1/streams/api/counters/latency?q=${q}`);
    assert.equal(res.status, 400, q);
    const body = await res.json();
    assert.equal(body.error.code, "invalid_query");
    assert.equal(
      body.error.message,
      `Query parameter 'q' must list numbers from 0 to 1, got '${bad}'; a '+' in a URL query reads as a space, so write it as %2B (${hint})`,
    );
    // Written as the message says, it reads.
    const fixed = await app.request(
      `/v1/streams/api/counters/latency?q=${q.replace(/[^,]*$/, hint)}`,
    );
    assert.equal(fixed.status, 200, await fixed.text());
  }
  // With the '+' back still no quantile (5), or no '+' to put back: no hint.
  for (
    const [q, bad] of [
      ["5e+0", "5e 0"],
      ["0.5%200.9", "0.5 0.9"],
      ["1e%20%200", "1e  0"],
      ["0.5%20", "0.5 "],
      ["%20%200.5", "  0.5"],
    ]
  ) {
    const res = await app.request(`/v1/streams/api/counters/latency/current?q=${q}`);
    assert.equal(res.status, 400, q);
    assert.equal(
      (await res.json()).error.message,
      `Query parameter 'q' must list numbers from 0 to 1, got '${bad}'`,
    );
  }
});

Deno.test("?q= takes no space (README): q=+0.5, arriving as ' 0.5', is refused with the %2B hint as q=1e+0 is, on the list and /current; %2B0.5 reads as 0.5", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  assert.match(
    readme.replace(/\s+/g, " "),
    /naming the bad part, a space in it included; a `\+`, an exponent's or a sign's, is written `%2B` \(`q=1e%2B0`, `q=%2B0\.5`\), as a URL query reads `\+` as a space: one sent as `\+` \(`q=1e\+0`, `q=\+0\.5`\) is refused with a message that says so/,
  );
  const { app } = await testApp({ config: CONFIG, now: () => Date.parse(at(30)) });
  await postEvents(app, requests(), { stream: "api" });
  for (const route of ["", "/current"]) {
    for (
      const [q, bad, hint] of [
        ["+0.5", " 0.5", "%2B0.5"],
        ["1e+0", "1e 0", "1e%2B0"],
        ["0.5,+0.9", " 0.9", "%2B0.9"],
      ]
    ) {
      const res = await app.request(`/v1/streams/api/counters/latency${route}?q=${q}`);
      assert.equal(res.status, 400, q);
      const body = await res.json();
      assert.equal(body.error.code, "invalid_query");
      assert.equal(
        body.error.message,
        `Query parameter 'q' must list numbers from 0 to 1, got '${bad}'; a '+' in a URL query reads as a space, so write it as %2B (${hint})`,
      );
    }
    const trailing = await app.request(`/v1/streams/api/counters/latency${route}?q=0.5%20`);
    assert.equal(trailing.status, 400);
    assert.equal(
      (await trailing.json()).error.message,
      "Query parameter 'q' must list numbers from 0 to 1, got '0.5 '",
    );
  }
  const signed = await app.request(
    "/v1/streams/api/counters/latency?q=%2B0.5,%2B1e-1&group.endpoint=/b",
  );
  assert.equal(signed.status, 200, await signed.clone().text());
  const [row] = (await signed.json()).windows;
  assert.deepEqual(Object.keys(row.value).filter((key) => key.startsWith("p")).sort(), [
    "p10",
    "p50",
  ]);
  const twice = await app.request("/v1/streams/api/counters/latency?q=0.5,%2B0.50");
  assert.equal((await twice.json()).error.message, "Query parameter 'q' names p50 twice");
});

Deno.test("?q= with a value outside [0, 1], not a decimal number, too small to tell from 0 or too close to 1, named twice, or on another counter is a 400 naming it", async () => {
  const { app } = await testApp({ config: CONFIG });
  await postEvents(app, requests(), { stream: "api" });
  const cases = [["1.5", "1.5"], ["0.5,x", "x"], ["0.5,", ""], ["-0.1", "-0.1"], ["0x1", "0x1"]];
  for (const [q, bad] of cases.concat([["0b1", "0b1"], ["Infinity", "Infinity"]])) {
    const res = await app.request(`/v1/streams/api/counters/latency?q=${q}`);
    assert.equal(res.status, 400, q);
    const body = await res.json();
    assert.equal(body.error.code, "invalid_query");
    assert.equal(
      body.error.message,
      `Query parameter 'q' must list numbers from 0 to 1, got '${bad}'`,
    );
  }
  for (const q of ["1e-400", "0.5,.1e-330"]) {
    const res = await app.request(`/v1/streams/api/counters/latency?q=${q}`);
    assert.equal(res.status, 400, q);
    const bad = q.split(",").at(-1);
    assert.equal(
      (await res.json()).error.message,
      `Query parameter 'q' lists '${bad}', too small to tell from 0 (ask for 0)`,
    );
  }
  for (const q of ["0.99999999999999999", "0.5,1.00000000000000001"]) {
    const res = await app.request(`/v1/streams/api/counters/latency?q=${q}`);
    assert.equal(res.status, 400, q);
    const bad = q.split(",").at(-1);
    assert.equal(
      (await res.json()).error.message,
      `Query parameter 'q' lists '${bad}', too close to 1 to tell from it (ask for 1)`,
    );
  }
  for (
    const q of ["0.5", ".5", "1", "1e-3", "+0.25", "0e-400", "0.000", "5e-324"].concat(
      ["1.000", "1.", "10e-1", "0.1e+1", "100e-2", "+1", "0.99"],
    )
  ) {
    const res = await app.request(`/v1/streams/api/counters/latency?q=${encodeURIComponent(q)}`);
    assert.equal(res.status, 200, q);
  }
  for (const path of ["/v1/streams/api/counters/hits", "/v1/streams/api/counters/hits/current"]) {
    const res = await app.request(`${path}?q=0.5`);
    assert.equal(res.status, 400);
    assert.equal(
      (await res.json()).error.message,
      "Query parameter 'q' applies to quantiles counters; 'hits' is count",
    );
  }
  const many = Array.from({ length: 21 }, () => "0.5").join(",");
  const res = await app.request(`/v1/streams/api/counters/latency/current?q=${many}`);
  assert.equal(res.status, 400);
  assert.match((await res.json()).error.message, /names 21 quantiles; at most 20/);
  // Two that name one value field: the reply could hold only one of them.
  for (const [q, name] of [["0.5,0.5", "p50"], ["0.999,0.9990", "p99.9"], [".5,5e-1", "p50"]]) {
    for (const route of ["", "/current"]) {
      const twice = await app.request(`/v1/streams/api/counters/latency${route}?q=${q}`);
      assert.equal(twice.status, 400, q);
      assert.deepEqual((await twice.json()).error.code, "invalid_query");
    }
    const twice = await app.request(`/v1/streams/api/counters/latency?q=${q}`);
    assert.equal((await twice.json()).error.message, `Query parameter 'q' names ${name} twice`);
  }
});

Deno.test("?q= with more digits than a double keeps, which reads as another number, is a 400 naming the number it reads as", async () => {
  const { app } = await testApp({ config: CONFIG });
  // 101 values, 0 to 100: the decimal 0.2999999999999999999 is rank 29, but it reads as 0.3,
  // whose rank is 30; it was answered as p30, the value at rank 30, which it did not ask for.
  const events = Array.from({ length: 101 }, (_, ms) => ({ ts: at(1), endpoint: "/r", ms }));
  assert.equal((await postEvents(app, events, { stream: "api" })).status, 202);
  const cases = [
    ["0.2999999999999999999", "0.3", "p30"],
    ["0.5,0.123456789012345678", "0.12345678901234568", "p12.345678901234568"],
  ];
  for (const [q, reads, name] of cases) {
    for (const route of ["", "/current"]) {
      const res = await app.request(`/v1/streams/api/counters/latency${route}?q=${q}`);
      assert.equal(res.status, 400, q);
      const body = await res.json();
      assert.equal(body.error.code, "invalid_query");
      assert.equal(
        body.error.message,
        `Query parameter 'q' lists '${
          q.split(",").at(-1)
        }', more digits than a number keeps: it reads as ${reads} (${name}; ask for that)`,
      );
    }
  }
  // The same number written with other digits (zeros, an exponent) is that number.
  for (const q of ["0.30", "3e-1", "0.300000000000000000000", "30e-2", "0.12345678901234568"]) {
    const res = await app.request(`/v1/streams/api/counters/latency?q=${q}&group.endpoint=/r`);
    assert.equal(res.status, 200, q);
    await res.body?.cancel();
  }
});

Deno.test("?q= of a long run of digits that is no number is refused in linear time, not by trying every split of the run", async () => {
  const { app } = await testApp({ config: CONFIG });
  // Before, 40,000 ones and an x held the event loop 4 s, 60,000 about 9 s (quadratic).
  const q = "1".repeat(60_000) + "x";
  const started = performance.now();
  const res = await app.request(`/v1/streams/api/counters/latency?q=${q}`);
  const elapsed = performance.now() - started;
  assert.equal(res.status, 400);
  assert.equal((await res.json()).error.code, "invalid_query");
  assert.ok(elapsed < 1_000, `${elapsed} ms`);
});

Deno.test("?q= of a long run of zeros before a last digit is read in linear time, not by trying every zero as the start of the trailing ones", async () => {
  const { app } = await testApp({ config: CONFIG });
  // 1.000…001 reads as 1 and 0.5000…001 as 0.5: both are refused, as another number than they
  // name. Stripping their trailing zeros with /0+$/ tried every zero of the run, each to its end:
  // 60,000 of them held the event loop about 2 s.
  const zeros = "0".repeat(60_000);
  for (const q of [`1.${zeros}1`, `0.5${zeros}1`]) {
    const started = performance.now();
    const res = await app.request(`/v1/streams/api/counters/latency?q=${q}`);
    const elapsed = performance.now() - started;
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.code, "invalid_query");
    assert.ok(elapsed < 500, `${elapsed} ms`);
  }
});

Deno.test("an alert reads value.p99 of a quantiles window and fires with the value object", async () => {
  const store = new MemoryStore({ now: () => NOW });
  const { app } = await testApp({ config: CONFIG, store });
  await postEvents(app, requests(), { stream: "api" });
  await postEvents(app, [{ ts: at(200), endpoint: "/a", ms: 1 }], { stream: "api" });
  const streams = compileConfig(CONFIG);
  const report = await sweepOnce(streams.values(), store);
  assert.deepEqual(report.fired.map((firing) => firing.group), ['["/b"]']);
  const value = report.fired[0].value as Record<string, number>;
  assert.deepEqual([value.count, value.min, value.max], [100, 10, 1000]);
  assert.ok(value.p99 > 500);
  const log = await store.readLog("api", null, 1000);
  const fired = log.find((entry) => entry.record.type === "alert.fired")!;
  // The webhook/live payload carries the object, as does window.closed.
  const payload = publicPayload(streams.get("api")!, fired)!;
  assert.deepEqual(payload.data.value, value);
  const closed = log.find((entry) =>
    entry.record.type === "window.closed" && entry.record.group === '["/b"]'
  )!;
  const closedPayload = publicPayload(streams.get("api")!, closed)!;
  assert.deepEqual(closedPayload.data.value, value);
  assert.equal(closedPayload.data.approximate, true);
});

Deno.test("the README's quantiles example: the values 1 to 1000 at accuracy 0.01 read back as that value object", async () => {
  const { app } = await testApp({ config: CONFIG });
  const events = Array.from({ length: 1000 }, (_, i) => ({ ts: at(1), endpoint: "/r", ms: i + 1 }));
  assert.equal((await postEvents(app, events, { stream: "api" })).status, 202);
  const res = await app.request("/v1/streams/api/counters/latency?group.endpoint=/r");
  assert.equal(res.status, 200);
  const [row] = (await res.json()).windows;
  assert.deepEqual(row.value, {
    count: 1000,
    min: 1,
    max: 1000,
    approximate: true,
    p50: 497.7794014558298,
    p90: 907.0313473738394,
    p95: 944.0492576839644,
    p99: 982.5779489474655,
  });
});
