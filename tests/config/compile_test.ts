import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  AS_STORED,
  compileConfig,
  type CompiledStream,
  compileStreamDefinition,
  CONFIG_PIPE_WRITER_WAIT_MS,
  ConfigError,
  DEFAULT_MAX_SESSIONS,
  emptyPathParts,
  largeSchemaExpansion,
  loadConfigFile,
  malformedDuration,
  malformedOrigin,
  MAX_CONFIG_FILE_BYTES,
  MAX_COUNTERS_PER_STREAM,
  MAX_LISTED_PROBLEMS,
  MAX_STREAM_GROUPS,
  MIN_WINDOW_MS,
  receiveTimeMaxFuture,
  sessionMaxGroups,
  shortWindowProblem,
  shortWindows,
  streamDefinitionSchema,
  unknownAlertField,
  unknownCounterField,
} from "../../src/config/mod.ts";
import { WINDOWS_PER_SWEEP } from "../../src/fanout/sweep.ts";
import { compileExpression } from "../../src/transform/mod.ts";
import { SESSIONS_PER_WINDOW } from "../../src/store/types.ts";

/** A config with one stream `orders` holding the given fields. */
function orders(definition: Record<string, unknown>): unknown {
  return { streams: { orders: definition } };
}

/** A config with one counter `x` on stream `orders`. */
function counter(definition: Record<string, unknown>): unknown {
  return orders({
    counters: { x: { window: { tumbling: "1m" }, aggregate: "count", ...definition } },
  });
}

/** Asserts `raw` is refused with a ConfigError whose message matches every pattern. */
function assertRefused(raw: unknown, ...patterns: RegExp[]): ConfigError {
  let caught: unknown;
  try {
    compileConfig(raw);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${caught}`);
  assert.equal(caught.name, "ConfigError");
  for (const pattern of patterns) assert.match(caught.message, pattern);
  return caught;
}

function only(streams: Map<string, CompiledStream>): CompiledStream {
  assert.equal(streams.size, 1);
  return [...streams.values()][0];
}

Deno.test("compileConfig() applies the defaults of an empty stream", () => {
  const stream = only(compileConfig({ streams: { open: {} } }));
  assert.equal(stream.name, "open");
  assert.deepEqual(stream.definition, {});
  assert.equal(stream.timeField, undefined);
  assert.equal(stream.latenessMs, 30_000);
  assert.equal(stream.maxFutureMs, 300_000);
  assert.equal(stream.dedupe, undefined);
  assert.deepEqual(stream.counters, []);
  assert.deepEqual(stream.counterMetas, []);
  assert.deepEqual(stream.parsed.schema, { type: "object" });
  assert.deepEqual(stream.parsed.transform, []);
  const event = { anything: [1, { nested: true }] };
  assert.equal(stream.transform(event), event);
  assert.deepEqual(stream.schema.parse(event), event);
});

Deno.test("compileConfig() applies counter defaults and computes the pane ttl", () => {
  const stream = only(compileConfig(counter({})));
  assert.equal(stream.counters.length, 1);
  const [x] = stream.counters;
  assert.equal(x.name, "x");
  assert.equal(x.index, 0);
  assert.deepEqual(x.window, { kind: "tumbling", sizeMs: 60_000 });
  assert.deepEqual(x.groupBy, []);
  assert.deepEqual(x.aggregate, { kind: "count" });
  assert.equal(x.retentionMs, 3_600_000);
  assert.equal(x.meta.name, "x");
  assert.equal(x.meta.aggregate, "count");
  assert.equal(x.meta.maxGroups, 1000);
  assert.equal(x.meta.ttlMs, 60_000 + 30_000 + 3_600_000);
  assert.deepEqual(stream.counterMetas, [x.meta]);
});

Deno.test("compileConfig() fills the dedupe ttl default and keeps explicit time settings", () => {
  const stream = only(compileConfig(orders({
    time: { field: "ts", lateness: "0s", maxFuture: "1h" },
    dedupe: { field: "id" },
  })));
  assert.equal(stream.timeField, "ts");
  assert.equal(stream.latenessMs, 0);
  assert.equal(stream.maxFutureMs, 3_600_000);
  assert.deepEqual(stream.dedupe, { field: "id", ttlMs: 86_400_000 });
  assert.equal(stream.parsed.time.lateness, 0);
});

Deno.test("compileConfig() compiles every window kind and aggregate in definition order", () => {
  const stream = only(compileConfig(orders({
    time: { lateness: "10s" },
    counters: {
      a: { window: { hopping: "10m", every: "4m" }, aggregate: { sum: "amount" }, retention: "5m" },
      b: { window: { sliding: "10m", precision: "1m" }, aggregate: { distinct: "user.id" } },
      c: { window: { tumbling: "1h" }, aggregate: { avg: "amount" }, groupBy: ["country", "city"] },
      d: { window: { tumbling: "1h" }, aggregate: { min: "amount" }, maxGroups: 3 },
      e: { window: { tumbling: "1h" }, aggregate: { max: "amount" } },
    },
  })));
  assert.deepEqual(stream.counters.map((c) => [c.name, c.index]), [
    ["a", 0],
    ["b", 1],
    ["c", 2],
    ["d", 3],
    ["e", 4],
  ]);
  const [a, b, c, d, e] = stream.counters;
  assert.deepEqual(a.window, { kind: "hopping", sizeMs: 600_000, everyMs: 240_000 });
  assert.deepEqual(a.aggregate, { kind: "sum", field: "amount" });
  assert.equal(a.meta.ttlMs, 600_000 + 10_000 + 300_000);
  assert.deepEqual(b.window, { kind: "sliding", sizeMs: 600_000, precisionMs: 60_000 });
  assert.deepEqual(b.aggregate, { kind: "distinct", field: "user.id" });
  assert.equal(b.meta.aggregate, "distinct");
  assert.deepEqual(c.groupBy, ["country", "city"]);
  assert.deepEqual(c.aggregate, { kind: "avg", field: "amount" });
  assert.equal(d.meta.maxGroups, 3);
  assert.deepEqual(d.aggregate, { kind: "min", field: "amount" });
  assert.deepEqual(e.aggregate, { kind: "max", field: "amount" });
});

Deno.test("compileConfig() names the path of a bad window", () => {
  assertRefused(
    counter({ window: { tumbling: "1x" } }),
    /^Invalid config: streams\.orders\.counters\.x\.window\.tumbling: Cannot read duration '1x'/,
  );
  assertRefused(
    counter({ window: { weekly: "1w" } }),
    /streams\.orders\.counters\.x\.window: Window must be/,
  );
  assertRefused(
    counter({ window: { tumbling: "0s" } }),
    /streams\.orders\.counters\.x\.window\.tumbling: Duration must be greater than zero/,
  );
});

Deno.test('compileConfig() says what an aggregate or a transform step takes when it has two shapes\' keys, not that it is not "count"', () => {
  // Every object shape had an unknown key, so the one left to explain was the literal "count".
  assertRefused(
    counter({ window: { tumbling: "1m" }, aggregate: { sum: "x", min: "y" } }),
    /^Invalid config: streams\.orders\.counters\.x\.aggregate: Aggregate must be "count", one of /,
  );
  assertRefused(
    orders({ transform: [{ filter: "true", drop: ["a"] }] }),
    /^Invalid config: streams\.orders\.transform\[0\]: Transform step must be one of /,
  );
  // One shape whose field is wrong is explained by that field.
  assertRefused(
    counter({ window: { tumbling: "1m" }, aggregate: { sum: 5 } }),
    /^Invalid config: streams\.orders\.counters\.x\.aggregate\.sum: .*expected string/,
  );
});

Deno.test("compileConfig() lists every problem with its own path", () => {
  const error = assertRefused(orders({
    time: { lateness: "soon" },
    counters: { x: { window: { tumbling: "1m" }, aggregate: "median" } },
  }));
  // One line (a startup mistake prints one), the problems apart by "; ".
  assert.ok(!error.message.includes("\n"), error.message);
  const lines = error.message.replace(/^Invalid config: /, "").split(/; (?=streams\.)/);
  assert.equal(lines.length, 2);
  assert.ok(
    lines.some((line) => line.startsWith("streams.orders.time.lateness: Cannot read duration")),
  );
  assert.ok(
    lines.some((line) => line.startsWith("streams.orders.counters.x.aggregate: Aggregate must")),
  );
});

Deno.test("compileConfig() refuses a hopping window whose hop exceeds its size", () => {
  assertRefused(
    counter({ window: { hopping: "1m", every: "2m" } }),
    /^Invalid config: streams\.orders\.counters\.x\.window: 'every' is 2m, longer than the window size 1m; a hop is at most the window size$/,
  );
});

Deno.test("compileConfig() accepts a hopping hop equal to the size and one that does not divide it", () => {
  const stream = only(compileConfig(orders({
    counters: {
      same: { window: { hopping: "1m", every: "1m" }, aggregate: "count" },
      uneven: { window: { hopping: "10m", every: "3m" }, aggregate: "count" },
    },
  })));
  assert.deepEqual(stream.counters.map((c) => c.window), [
    { kind: "hopping", sizeMs: 60_000, everyMs: 60_000 },
    { kind: "hopping", sizeMs: 600_000, everyMs: 180_000 },
  ]);
});

Deno.test("compileConfig() refuses a sliding size that is not a multiple of the precision", () => {
  assertRefused(
    counter({ window: { sliding: "10m", precision: "3m" } }),
    /^Invalid config: streams\.orders\.counters\.x\.window: sliding size 10m is not a multiple of its precision 3m; the size must be a whole number of precisions$/,
  );
  assertRefused(
    counter({ window: { sliding: "1m", precision: "2m" } }),
    /streams\.orders\.counters\.x\.window: sliding size 1m is not a multiple of its precision 2m/,
  );
});

Deno.test("compileConfig() refuses windows of more than 1440 panes", () => {
  assertRefused(
    counter({ window: { sliding: "1441m", precision: "1m" } }),
    /^Invalid config: streams\.orders\.counters\.x\.window: a sliding window spans 1441 panes \(size \/ precision\); at most 1440$/,
  );
  // gcd(1d, 7s) = 1s: 86400 panes.
  assertRefused(
    counter({ window: { hopping: "1d", every: "7s" } }),
    /^Invalid config: streams\.orders\.counters\.x\.window: a window spans 86400 panes of 1s \(size over the greatest common divisor of size and 'every'\); at most 1440: pick sizes with a larger common divisor$/,
  );
  const stream = only(compileConfig(counter({ window: { sliding: "1d", precision: "1m" } })));
  assert.deepEqual(stream.counters[0].window, {
    kind: "sliding",
    sizeMs: 86_400_000,
    precisionMs: 60_000,
  });
});

/** `n` counters `c0`…, each `{ window: tumbling 1h, count, ...definition }`. */
function counters(n: number, definition: Record<string, unknown> = {}): Record<string, unknown> {
  return Object.fromEntries(
    Array.from({ length: n }, (_, i) => [
      `c${i}`,
      { window: { tumbling: "1h" }, groupBy: ["g"], aggregate: "count", ...definition },
    ]),
  );
}

Deno.test("compileConfig() bounds what one stream's counters may hold together", () => {
  assert.equal(MAX_COUNTERS_PER_STREAM, 64);
  assert.equal(MAX_STREAM_GROUPS, 1_000_000);
  // The probe's tenant: 600 counters, and 5 of 1,000,000 groups a pane each.
  assertRefused(
    orders({ counters: counters(600) }),
    /^Invalid config: streams\.orders\.counters: a stream may have at most 64 counters; this one has 600$/,
  );
  assertRefused(
    orders({ counters: counters(5, { maxGroups: 1_000_000 }) }),
    /streams\.orders\.counters\.c1\.maxGroups: the stream's counters would hold up to 2000000 groups per pane with this one; at most 1000000 together/,
  );
  assertRefused(
    orders({
      counters: {
        ...counters(2, { window: { session: "30m" }, maxSessions: 600_000 }),
        plain: { window: { tumbling: "1m" }, aggregate: "count" },
      },
    }),
    /streams\.orders\.counters\.c1\.maxSessions: the stream's counters would hold up to 1200000 sessions open with this one; at most 1000000 together/,
  );
  // Bad counters past 64: that one line, not the first 20 of their problems (counted before they
  // are checked)…
  assertRefused(
    orders({ counters: counters(65, { groupby: ["x"] }) }),
    /^Invalid config: streams\.orders\.counters: a stream may have at most 64 counters; this one has 65$/,
  );
  // …and so many that checking them overflowed zod's stack (a 15 MB file): the same line, not a
  // RangeError (startup ended with a stack trace).
  assertRefused(
    orders({ counters: counters(200_000, { groupby: ["x"] }) }),
    /^Invalid config: streams\.orders\.counters: a stream may have at most 64 counters; this one has 200000$/,
  );
  // Ten session counters at the default (100,000) fill it exactly; an eleventh does not fit.
  only(compileConfig(orders({ counters: counters(10, { window: { session: "30m" } }) })));
  assertRefused(
    orders({ counters: counters(11, { window: { session: "30m" } }) }),
    /streams\.orders\.counters\.c10\.maxSessions: .* up to 1100000 sessions open/,
  );
  // At the bounds: 64 counters, groups and sessions each adding up to 1,000,000.
  const full = only(compileConfig(orders({
    counters: {
      ...counters(62, { maxGroups: 16_000 }),
      big: { window: { tumbling: "1m" }, aggregate: "count", maxGroups: 8_000 },
      visits: { window: { session: "30m" }, aggregate: "count", maxSessions: 1_000_000 },
    },
  })));
  assert.equal(full.counters.length, 64);
  assert.equal(
    full.counters.reduce((sum, item) => sum + (item.meta.session ? 0 : item.meta.maxGroups), 0),
    1_000_000,
  );
});

Deno.test("compileConfig() refuses a bad aggregate, group list or limit", () => {
  assertRefused(
    counter({ aggregate: "sum" }),
    /streams\.orders\.counters\.x\.aggregate: Aggregate/,
  );
  assertRefused(
    counter({ aggregate: { sum: "amount", max: "amount" } }),
    /streams\.orders\.counters\.x\.aggregate/,
  );
  assertRefused(counter({ aggregate: { sum: "" } }), /streams\.orders\.counters\.x\.aggregate/);
  assertRefused(
    counter({ groupBy: ["a", "b", "c", "d", "e", "f", "g", "h", "i"] }),
    /streams\.orders\.counters\.x\.groupBy:/,
  );
  // A field named twice: refused naming it (a stored stream compiles with repeatedGroupBy).
  assertRefused(
    counter({ groupBy: ["a", "b.c", "b.c"] }),
    /^Invalid config: streams\.orders\.counters\.x\.groupBy\[2\]: Field 'b\.c' is already at groupBy\[1\]; group by each field once$/,
  );
  assert.deepEqual(
    compileStreamDefinition(
      "orders",
      (counter({ groupBy: ["a", "a"] }) as {
        streams: { orders: unknown };
      }).streams.orders,
      { repeatedGroupBy: true },
    ).counters[0].groupBy,
    ["a", "a"],
  );
  assertRefused(counter({ maxGroups: 0 }), /streams\.orders\.counters\.x\.maxGroups:/);
  assertRefused(counter({ maxGroups: 1.5 }), /streams\.orders\.counters\.x\.maxGroups:/);
  assertRefused(counter({ retention: "forever" }), /streams\.orders\.counters\.x\.retention:/);
});

Deno.test("compileConfig() refuses bad stream-level settings with their paths", () => {
  assertRefused(
    orders({ time: { lateness: "-1s" } }),
    /streams\.orders\.time\.lateness: Cannot read/,
  );
  assertRefused(orders({ time: { field: "" } }), /streams\.orders\.time\.field:/);
  assertRefused(
    orders({ dedupe: { field: "id", ttl: "0s" } }),
    /streams\.orders\.dedupe\.ttl: Duration must be greater than zero/,
  );
  assertRefused(orders({ dedupe: { ttl: "1h" } }), /streams\.orders\.dedupe\.field:/);
  assertRefused(orders({ schema: "object" }), /streams\.orders\.schema:/);
  assertRefused(orders({ transform: [{ explode: "now" }] }), /streams\.orders\.transform\[0\]:/);
});

Deno.test("compileConfig() refuses unknown keys at every level", () => {
  assertRefused({ streams: {}, extra: 1 }, /\(root\): Unrecognized key: "extra"/);
  assertRefused(orders({ counter: {} }), /streams\.orders: Unrecognized key: "counter"/);
  assertRefused(
    orders({ time: { field: "ts", latenes: "1s" } }),
    /streams\.orders\.time: Unrecognized key: "latenes"/,
  );
  assertRefused(counter({ windw: 1 }), /streams\.orders\.counters\.x: Unrecognized key: "windw"/);
  assertRefused(
    counter({ window: { tumbling: "1m", every: "1m" } }),
    /streams\.orders\.counters\.x\.window/,
  );
  assertRefused(
    orders({ transform: [{ filter: "true", set: { a: "1" } }] }),
    /streams\.orders\.transform\[0\]/,
  );
});

Deno.test("compileConfig() names the key a misspelled one stands for, if one alone is near", () => {
  const error = assertRefused({
    streams: {
      orders: {
        tim: {},
        time: { latenes: "1s" },
        dedupe: { field: "id", TTL: "1h" },
        counters: {
          c: { window: { tumbling: "1m" }, aggregate: "count", groupby: ["x"], zzzzzz: 1 },
          // In a union's member: which member was meant is not known, so no hint.
          d: { window: { tumbling: "1m", evry: "1m" }, aggregate: "count" },
        },
        alerts: [{ name: "a", counter: "c", when: "true", evaluation: "live" }],
        limits: { eventsPerSec: 1, burst: 1 },
      },
    },
    stream: 1,
  });
  const lines = error.message.replace(/^Invalid config: /, "").split("; ");
  for (
    const line of [
      '(root): Unrecognized key: "stream" (did you mean "streams"?)',
      'streams.orders: Unrecognized key: "tim" (did you mean "time"?)',
      'streams.orders.time: Unrecognized key: "latenes" (did you mean "lateness"?)',
      'streams.orders.dedupe: Unrecognized key: "TTL" (did you mean "ttl"?)',
      'streams.orders.counters.c: Unrecognized keys: "groupby" (did you mean "groupBy"?), "zzzzzz"',
      'streams.orders.counters.d.window: Unrecognized key: "evry"',
      'streams.orders.alerts[0]: Unrecognized key: "evaluation" (did you mean "evaluate"?)',
      'streams.orders.limits: Unrecognized key: "eventsPerSec" (did you mean "eventsPerSecond"?)',
    ]
  ) {
    assert.ok(lines.includes(line), `${line} in ${error.message}`);
  }
  // A name two apart from the one given is not guessed between.
  assertRefused(
    orders({ time: { maxFutur: "1m", field: "ts" } }),
    /streams\.orders\.time: Unrecognized key: "maxFutur" \(did you mean "maxFuture"\?\)$/,
  );
  assertRefused(counter({ x: 1 }), /streams\.orders\.counters\.x: Unrecognized key: "x"$/);
});

Deno.test("compileConfig() says where the definitions of a config without streams go", () => {
  const hint =
    '; a config file holds its streams under "streams": {"streams": {"<name>": <definition>}}';
  const error = assertRefused({ orders: { counters: {} } });
  assert.equal(
    error.message,
    `Invalid config: streams: Required field is missing (expected record); (root): Unrecognized key: "orders"${hint}`,
  );
  // With streams, or with something no definition is: said as it was.
  for (const raw of [{ streams: {}, orders: {} }, { stream: 1 }, {}, []]) {
    let message = "";
    try {
      compileConfig(raw);
    } catch (error) {
      message = (error as Error).message;
    }
    assert.ok(!message.includes(hint), message);
  }
});

Deno.test("compileConfig() refuses something that is not a config object", () => {
  assertRefused(null, /^Invalid config: \(root\): /);
  assertRefused([], /\(root\): /);
  assertRefused({}, /streams: /);
  assertRefused({ streams: [] }, /streams: /);
});

Deno.test("compileConfig() refuses stream and counter names with bad characters, saying why", () => {
  for (const name of ["bad name", "bad.name", "bad/name", "", "x".repeat(65), "ünïcode"]) {
    assertRefused({ streams: { [name]: {} } }, /streams\./, /letters, digits, '_' and '-'/);
    assertRefused(
      orders({ counters: { [name]: { window: { tumbling: "1m" }, aggregate: "count" } } }),
      /streams\.orders\.counters\./,
      /letters, digits, '_' and '-'/,
    );
  }
  const streams = compileConfig({ streams: { "Orders_2-b": {}, ["x".repeat(64)]: {} } });
  assert.deepEqual([...streams.keys()], ["Orders_2-b", "x".repeat(64)]);
});

Deno.test("compileConfig() refuses a bad CEL expression at load, naming the step", () => {
  assertRefused(
    orders({ transform: [{ filter: "event.amount >" }] }),
    /^Invalid config: streams\.orders\.transform\[0\]\.filter: Invalid expression 'event\.amount >'/,
  );
  assertRefused(
    orders({ transform: [{ filter: "true" }, { set: { total: "unknownFunction(event.a)" } }] }),
    /^Invalid config: streams\.orders\.transform\[1\]\.set\.total: Invalid expression 'unknownFunction\(event\.a\)'/,
  );
  assertRefused(
    orders({ transform: [{ filter: "other.flag" }] }),
    /transform\[0\]\.filter: .*Unknown variable: other/,
  );
  assertRefused(orders({ transform: [{ filter: "" }] }), /streams\.orders\.transform\[0\]/);
});

Deno.test("compileConfig() loads expressions mixing int literals with numbers, and refuses type errors it can see", () => {
  const streams = compileConfig(orders({
    transform: [
      { filter: "event.amount > 100" },
      { set: { doubled: "event.amount * 2", next: "event.count + 1" } },
    ],
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    alerts: [{ name: "double", counter: "n", when: "value * 2 >= 10" }],
  }));
  const stream = streams.get("orders")!;
  assert.deepEqual(stream.transform({ amount: 150, count: 3 }), {
    amount: 150,
    count: 3,
    doubled: 300,
    next: 4,
  });
  assert.equal(stream.alerts[0].when({ value: 5, group: {}, window: {} }), true);
  assertRefused(
    orders({ transform: [{ set: { label: '"n" + 1' } }] }),
    /^Invalid config: streams\.orders\.transform\[0\]\.set\.label: Invalid expression '"n" \+ 1'/,
  );
  // A filter known to give no bool would reject every event; a set may give anything.
  for (const filter of ["1 + 1", '"abc"']) {
    assertRefused(
      orders({ transform: [{ filter }, { set: { two: "1 + 1" } }] }),
      /^Invalid config: streams\.orders\.transform\[0\]\.filter: Invalid expression .*: must return a bool, returns (int|string)$/,
    );
  }
  assert.ok(compileConfig(orders({ transform: [{ filter: "event.flag" }] })));
});

Deno.test("compileConfig() refuses an event schema that is not an object schema or not valid", () => {
  assertRefused(
    orders({ schema: { type: "string" } }),
    /^Invalid config: streams\.orders\.schema: Event schema must have type 'object', got "string"$/,
  );
  assertRefused(
    orders({ schema: { type: "object", properties: { a: { type: "nonsense" } } } }),
    /^Invalid config: streams\.orders\.schema: Cannot compile event schema: /,
  );
  assertRefused(
    orders({ schema: { type: "object", properties: { a: { $ref: "https://example.com/a" } } } }),
    /^Invalid config: streams\.orders\.schema: Cannot compile event schema: /,
  );
});

Deno.test("compileConfig() refuses transforms that write or rename to prototype keys", () => {
  for (const key of ["__proto__", "constructor", "prototype"]) {
    const steps = [
      { set: JSON.parse(`{${JSON.stringify(key)}: "1"}`) },
      { rename: { a: key } },
      { drop: [key] },
      { pick: [key] },
    ];
    for (const step of steps) {
      assertRefused(orders({ transform: [step] }), /streams\.orders\.transform\[0\]/);
    }
  }
});

Deno.test("compileConfig() refuses a __proto__ key wherever JSON.parse put one", () => {
  const texts = [
    '{"streams": {"__proto__": {}}}',
    '{"streams": {"s": {"counters": {"__proto__": {"window": {"tumbling": "1m"}, "aggregate": "count"}}}}}',
    '{"streams": {"s": {"transform": [{"set": {"__proto__": "1", "ok": "2"}}]}}}',
    '{"streams": {"s": {"transform": [{"rename": {"__proto__": "a"}}]}}}',
  ];
  for (const text of texts) {
    assertRefused(JSON.parse(text), /__proto__/);
  }
  assertRefused(JSON.parse(texts[2]), /streams\.s\.transform\[0\]\.set\.__proto__: /);
  // Found under arrays and objects, its path spelled out whole.
  assertRefused(
    JSON.parse(
      '{"streams": {"s": {"transform": [{"set": {"a": "1"}}, {"set": {"__proto__": "2"}}]}}}',
    ),
    /: streams\.s\.transform\[1\]\.set\.__proto__: Key/,
  );
});

Deno.test("compileConfig() refuses a definition nested 100,000 deep without a path copied per level", () => {
  // Each level copied its whole path: 30 s of one CPU for this (2.2 s for a 64 KB body through
  // PUT /v1/streams, the server deaf meanwhile); now ~25 ms. The bound is a guard against that
  // blow-up, 200 times what it takes, not a speed target.
  const depth = 100_000;
  const text = `{"streams":{"deep":{"schema":{"type":"object","x":${"[".repeat(depth)}${
    "]".repeat(depth)
  }}}}}`;
  const started = performance.now();
  assertRefused(
    JSON.parse(text),
    /^Invalid config: streams\.deep\.schema: Event schema nests deeper than 128 levels/,
  );
  assert.ok(performance.now() - started < 5_000, `took ${performance.now() - started} ms`);
});

Deno.test("compileConfig() keeps the written definition next to the parsed one", () => {
  const raw = orders({ time: { field: "ts" } });
  const stream = only(compileConfig(raw));
  assert.deepEqual(stream.definition, { time: { field: "ts" } });
  assert.deepEqual(stream.parsed.time, { field: "ts", lateness: 30_000, maxFuture: 300_000 });
});

Deno.test("compileConfig() compiles transforms that run on the hot path", () => {
  const stream = only(compileConfig(orders({
    transform: [{ filter: "event.amount > 0.0" }, { set: { big: "event.amount >= 100.0" } }],
  })));
  assert.deepEqual(stream.transform({ amount: 150 }), { amount: 150, big: true });
  assert.equal(stream.transform({ amount: 0 }), null);
});

Deno.test("loadConfigFile() compiles the shipped example config", async () => {
  const streams = await loadConfigFile(
    fileURLToPath(new URL("../../examples/config.json", import.meta.url)),
  );
  const stream = streams.get("orders");
  assert.ok(stream);
  assert.equal(stream.timeField, "ts");
  assert.equal(stream.latenessMs, 30_000);
  assert.deepEqual(stream.dedupe, { field: "id", ttlMs: 86_400_000 });
  assert.deepEqual(stream.counters.map((c) => [c.name, c.window.kind, c.aggregate.kind]), [
    ["orders_per_minute", "tumbling", "count"],
    ["revenue_per_hour", "hopping", "sum"],
    ["customers_last_10m", "sliding", "distinct"],
  ]);
  assert.deepEqual(
    stream.transform({ id: "a", country: "DE", amount: 120, test: false }),
    { id: "a", country: "DE", amount: 120, big: true },
  );
  assert.equal(stream.transform({ id: "b", country: "DE", amount: 1, test: true }), null);
});

Deno.test("loadConfigFile() reports a missing file as a ConfigError naming it", async () => {
  const path = `${await Deno.makeTempDir()}/missing.json`;
  await assert.rejects(loadConfigFile(path), (error: unknown) => {
    assert.ok(error instanceof ConfigError);
    assert.match(error.message, /^Cannot read config file .*missing\.json: /);
    assert.ok(error.cause instanceof Deno.errors.NotFound);
    return true;
  });
});

Deno.test("loadConfigFile() refuses an endless file (/dev/zero) after reading its first 16 MiB, naming it", async () => {
  await assert.rejects(
    loadConfigFile("/dev/zero"),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(
        error.message,
        `Config file /dev/zero is larger than ${MAX_CONFIG_FILE_BYTES} bytes (16 MiB), the most it may have: give the path of a JSON file of stream definitions (each at most 64 KiB, as through the API)`,
      );
      return true;
    },
  );
});

Deno.test("loadConfigFile() refuses a named pipe no process writes to, naming it, instead of waiting to open it forever", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/config.fifo`;
    await new Deno.Command("mkfifo", { args: [path] }).output();
    const started = Date.now();
    await assert.rejects(loadConfigFile(path), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(
        error.message,
        `Config file ${path} is a named pipe (FIFO) that no process opened for writing within 5 s: give the path of a JSON file of stream definitions`,
      );
      return true;
    });
    assert.ok(Date.now() - started >= CONFIG_PIPE_WRITER_WAIT_MS);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfigFile() reads a named pipe a process writes the config to", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/config.fifo`;
    await new Deno.Command("mkfifo", { args: [path] }).output();
    const writer = new Deno.Command("sh", {
      args: ["-c", `sleep 0.2; printf '%s' '{"streams": {"s": {}}}' > "$0"`, path],
    }).output();
    assert.deepEqual([...(await loadConfigFile(path)).keys()], ["s"]);
    assert.equal((await writer).code, 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfigFile() reads a file of exactly 16 MiB and refuses one byte more", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/config.json`;
    const body = '{"streams": {}}';
    await Deno.writeTextFile(path, body + " ".repeat(MAX_CONFIG_FILE_BYTES - body.length));
    assert.equal((await loadConfigFile(path)).size, 0);
    await Deno.writeTextFile(path, " ", { append: true });
    await assert.rejects(loadConfigFile(path), ConfigError, "is larger than 16777216 bytes");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfigFile() reports bad JSON as a ConfigError naming the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/bad.json`;
    await Deno.writeTextFile(path, '{"streams": {');
    await assert.rejects(loadConfigFile(path), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      // Where, not the text: V8's message (the cause it would be) quotes the text near it.
      assert.match(
        error.message,
        /^Config file .*bad\.json is not valid JSON: Expected property name or '}' at line 1, column 14$/,
      );
      assert.equal(error.cause, undefined);
      return true;
    });
    await Deno.writeTextFile(path, '{"streams": {"s": {"counters": {"x": {}}}}}');
    await assert.rejects(loadConfigFile(path), {
      name: "ConfigError",
      message: /streams\.s\.counters\.x\.window/,
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfigFile() serves a file with bytes that are not UTF-8 as before, and warns naming the file and the line", async () => {
  // Read as U+FFFD without a word: a groupBy field or a filter written in Latin-1 named another
  // field than the one meant, where a PUT body with such bytes is refused (400 invalid_utf8).
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/latin1.json`;
    const head = '{"streams": {\n  "s": {\n    "description": "caf';
    const tail = '"\n  }\n}}';
    const encoder = new TextEncoder();
    await Deno.writeFile(
      path,
      new Uint8Array([...encoder.encode(head), 0xe9, ...encoder.encode(tail)]),
    );
    const warnings: string[] = [];
    const streams = await loadConfigFile(path, { onWarning: (text) => warnings.push(text) });
    assert.equal((streams.get("s")!.parsed as { description?: string }).description, "caf\uFFFD");
    assert.deepEqual(warnings, [
      `Config file ${path} is not UTF-8 at line 3 (byte ${
        encoder.encode(head).length
      }): read with U+FFFD in place of each byte that is not; save it as UTF-8 (a definition sent through the API with such bytes is refused)`,
    ]);
    // A character cut off at the end is found too; a UTF-8 file gives no warning.
    await Deno.writeFile(
      path,
      new Uint8Array([...encoder.encode('{"streams": {}}\n'), 0xe2, 0x82]),
    );
    const cut: string[] = [];
    await loadConfigFile(path, { onWarning: (text) => cut.push(text) }).catch(() => {});
    assert.match(cut[0] ?? "", / at line 2 \(byte 16\)/);
    await Deno.writeTextFile(path, '{"streams": {"s": {"description": "café ☕"}}}');
    const none: string[] = [];
    await loadConfigFile(path, { onWarning: (text) => none.push(text) });
    assert.deepEqual(none, []);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compileConfig() refuses durations over 366 days and prototype keys in field paths", () => {
  assert.throws(
    () =>
      compileConfig({
        streams: {
          s: { counters: { c: { window: { tumbling: "20000000w" }, aggregate: "count" } } },
        },
      }),
    /streams\.s\.counters\.c\.window.*longer than 366 days/s,
  );
  assert.throws(
    () =>
      compileConfig({
        streams: {
          s: {
            counters: {
              c: { window: { tumbling: "1m" }, groupBy: ["__proto__"], aggregate: "count" },
            },
          },
        },
      }),
    /groupBy\[0\]: Field path '__proto__' is not allowed/,
  );
  assert.throws(
    () =>
      compileConfig({
        streams: {
          s: {
            counters: { c: { window: { tumbling: "1m" }, aggregate: { sum: "a.constructor" } } },
          },
        },
      }),
    /not allowed/,
  );
});

Deno.test("compileConfig() compiles alerts over value, group and window", () => {
  const stream = only(compileConfig(orders({
    counters: { x: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" } },
    alerts: [{ name: "busy", counter: "x", when: "value > 2.0 && group.country == 'DE'" }],
  })));
  assert.equal(stream.alerts.length, 1);
  const [alert] = stream.alerts;
  assert.equal(alert.name, "busy");
  assert.equal(alert.counter.name, "x");
  assert.equal(alert.when({ value: 3, group: { country: "DE" }, window: {} }), true);
  assert.equal(alert.when({ value: 3, group: { country: "FR" }, window: {} }), false);
  assert.deepEqual(only(compileConfig(orders({}))).alerts, []);
});

Deno.test("compileConfig() refuses an alert with a bad expression, an unknown counter or a reused name", () => {
  const counters = { x: { window: { tumbling: "1m" }, aggregate: "count" } };
  assertRefused(
    orders({ counters, alerts: [{ name: "a", counter: "x", when: "value >" }] }),
    /^Invalid config: streams\.orders\.alerts\[0\]\.when: Invalid expression 'value >'/,
  );
  assertRefused(
    orders({ counters, alerts: [{ name: "a", counter: "x", when: "event.amount > 1.0" }] }),
    /streams\.orders\.alerts\[0\]\.when: Invalid expression/,
  );
  // Known to be no bool, whatever the window: it could never fire.
  assertRefused(
    orders({ counters, alerts: [{ name: "a", counter: "x", when: "1" }] }),
    /^Invalid config: streams\.orders\.alerts\[0\]\.when: Invalid expression '1': must return a bool, returns int$/,
  );
  assertRefused(
    orders({ counters, alerts: [{ name: "a", counter: "nope", when: "value > 1.0" }] }),
    /^Invalid config: streams\.orders\.alerts\[0\]\.counter: No counter 'nope' in this stream; it has: x$/,
  );
  assertRefused(
    orders({
      counters,
      alerts: [
        { name: "a", counter: "x", when: "value > 1.0" },
        { name: "a", counter: "x", when: "value > 2.0" },
      ],
    }),
    /^Invalid config: streams\.orders\.alerts\[1\]\.name: Alert 'a' is defined twice$/,
  );
  assertRefused(
    orders({ counters, alerts: [{ name: "a", counter: "x" }] }),
    /streams\.orders\.alerts\[0\]\.when/,
  );
});

Deno.test("compileConfig() refuses an alert naming a field of group no groupBy field is, or of window one it lacks, naming its path and the fields there are; unknownAlertFields takes it as before", () => {
  const counters = {
    x: { window: { tumbling: "1m" }, groupBy: ["country", "user.plan"], aggregate: "count" },
    total: { window: { session: "30m" }, aggregate: "count" },
  };
  const alert = (when: string, counter = "x") =>
    orders({ counters, alerts: [{ name: "a", counter, when }] });
  const it = "it has the groupBy fields of counter 'x': country, user\\.plan";
  for (
    const [when, message] of [
      [`group.contry == "DE"`, `group has no field 'contry'; ${it}$`],
      [`value > 1.0 && group["Country"] == "DE"`, `group has no field 'Country'; ${it}$`],
      [`has(group.contry) && value > 1.0`, `group has no field 'contry'; ${it}$`],
      [`"contry" in group`, `group has no field 'contry'; ${it}$`],
      [
        `group.user.plan == "pro"`,
        `group has no field 'user'; ${it} \\(a dotted groupBy path is one field: write group\\['user\\.plan'\\]\\)$`,
      ],
      [`window.strat > "2026"`, `window has no field 'strat'; it has: counter, start, end$`],
    ]
  ) {
    assertRefused(
      alert(when),
      new RegExp(`^Invalid config: streams\\.orders\\.alerts\\[0\\]\\.when: ${message}`),
    );
  }
  assertRefused(
    alert(`group.country == "DE"`, "total"),
    /^Invalid config: streams\.orders\.alerts\[0\]\.when: group has no field 'country'; it has none, as counter 'total' groups by nothing$/,
  );
  // What is there: groupBy fields by their names as written, a field of a group value that is a
  // map, every window's fields (a session's too), the value's, a macro's own variable.
  for (
    const [when, counter] of [
      [`group.country == "DE" && group["user.plan"] == "pro"`, "x"],
      [`has(group.country) && "user.plan" in group && group.country.region == "EU"`, "x"],
      [`group[window.counter] == "x" || size(group) == 2`, "x"],
      [`[{"anything": 1}].exists(group, group.anything > 0) && value > 1.0`, "x"],
      [`window.counter == "total" && window.start < window.end && size(group) == 0`, "total"],
    ]
  ) {
    assert.equal(only(compileConfig(alert(when, counter))).alerts.length, 1, when);
  }
  // Stored or deployed before this check: compiled as it was (it fails where it reads the
  // field), found to warn.
  const stored = only(compileConfig(alert(`group.contry == "DE"`), { unknownAlertFields: true }));
  assert.throws(() => stored.alerts[0].when({ value: 1, group: { country: "DE" }, window: {} }));
  assert.match(
    unknownAlertField(stored)!,
    /^streams\.orders\.alerts\[0\]\.when: group has no field 'contry'; it has the groupBy fields/,
  );
  assert.equal(unknownAlertField(only(compileConfig(alert(`group.country == "DE"`)))), undefined);
});

Deno.test("compileConfig() refuses an alert naming a field of a value that is a number, or a quantile its quantiles value lacks, naming its path, the field and what value is; unknownAlertFields takes it as before", () => {
  const counters = {
    n: { window: { tumbling: "1m" }, aggregate: "count" },
    total: { window: { tumbling: "1m" }, aggregate: { sum: "amount" } },
    uniques: { window: { tumbling: "1m" }, aggregate: { distinct: "user" } },
    biggest: { window: { tumbling: "1m" }, aggregate: { max: "amount" } },
    mean: { window: { tumbling: "1m" }, aggregate: { avg: "amount" } },
    visit: { window: { session: "30m" }, aggregate: "count" },
    latency: { window: { tumbling: "1m" }, aggregate: { quantiles: "ms" } },
  };
  const alert = (when: string, counter: string) =>
    orders({ counters, alerts: [{ name: "a", counter, when }] });
  const path = "^Invalid config: streams\\.orders\\.alerts\\[0\\]\\.when: ";
  const quantiles = "counter 'latency' computes quantiles, so value has: count, min, max, " +
    "approximate, p50, p90, p95, p99$";
  for (
    const [when, counter, message] of [
      [
        `value.p99 > 1.0`,
        "n",
        `value has no field 'p99'; counter 'n' aggregates count, so value is a number$`,
      ],
      [
        `has(value.p99)`,
        "total",
        `value has no field 'p99'; counter 'total' aggregates sum, so value is a number$`,
      ],
      [
        `value["count"] > 1.0`,
        "uniques",
        `value has no field 'count'; counter 'uniques' aggregates distinct, so value is a number$`,
      ],
      [
        `"max" in value`,
        "biggest",
        `value has no field 'max'; counter 'biggest' aggregates max, so value is a number or null$`,
      ],
      [
        `value != null && value.avg > 1.0`,
        "mean",
        `value has no field 'avg'; counter 'mean' aggregates avg, so value is a number or null$`,
      ],
      [
        `value.p50 > 1.0`,
        "visit",
        `value has no field 'p50'; counter 'visit' aggregates count, so value is a number$`,
      ],
      [`value["p99.9"] > 500.0`, "latency", `value has no field 'p99\\.9'; ${quantiles}`],
      [
        `has(value.p999) && value.p999 > 500.0`,
        "latency",
        `value has no field 'p999'; ${quantiles}`,
      ],
      [`value.P99 > 500.0`, "latency", `value has no field 'P99'; ${quantiles}`],
    ]
  ) {
    assertRefused(alert(when, counter), new RegExp(`${path}${message}`));
  }
  // What is there: a number used as one (a session's too), every field of a quantiles value, a
  // macro's own variable named value, a computed key.
  for (
    const [when, counter] of [
      [`value > 1.0 && value + 1 > 2`, "n"],
      [`value != null && value >= 1.0`, "biggest"],
      [`value >= 2`, "visit"],
      [`has(value.p99) && value.p99 > 500.0 && value["p50"] < value.p95`, "latency"],
      [
        `"p90" in value && value.count > 10 && value.min < value.max && value.approximate`,
        "latency",
      ],
      [`[{"p1": 1}].exists(value, value.p1 > 0) && value > 1`, "n"],
      [`value[window.counter] > 1.0`, "latency"],
    ]
  ) {
    assert.equal(only(compileConfig(alert(when, counter))).alerts.length, 1, when);
  }
  // Stored or deployed before this check: compiled as it was (it fails where it reads the
  // field), found to warn.
  const stored = only(compileConfig(alert(`value.p99 > 1.0`, "n"), { unknownAlertFields: true }));
  assert.throws(() => stored.alerts[0].when({ value: 1000, group: {}, window: {} }));
  assert.equal(
    unknownAlertField(stored),
    "streams.orders.alerts[0].when: value has no field 'p99'; counter 'n' aggregates count, so value is a number",
  );
  assert.equal(
    unknownAlertField(only(compileConfig(alert(`value.p99 > 1.0`, "latency")))),
    undefined,
  );
});

Deno.test("compileConfig() reads a stream's limits and origins, and names bad ones", () => {
  const stream = compileConfig(orders({
    limits: { eventsPerSecond: 500, burst: 1000 },
    origins: ["https://Shop.Example/", "http://localhost:8080"],
  })).get("orders")!;
  assert.deepEqual(stream.parsed.limits, { eventsPerSecond: 500, burst: 1000 });
  assert.deepEqual(stream.parsed.origins, ["https://shop.example", "http://localhost:8080"]);
  assertRefused(
    orders({ limits: { eventsPerSecond: 0, burst: 10 } }),
    /streams\.orders\.limits\.eventsPerSecond/,
  );
  assertRefused(
    orders({ limits: { eventsPerSecond: 5, burst: 1.5 } }),
    /streams\.orders\.limits\.burst/,
  );
  assertRefused(
    orders({ origins: ["https://shop.example/page"] }),
    /streams\.orders\.origins\[0\]: Origin 'https:\/\/shop\.example\/page' must be http\(s\):\/\/host\[:port\] without path/,
  );
});

Deno.test("compileConfig() refuses an origin with a wildcard host or credentials, as allowed origins are, naming its path; malformedOrigins takes it as before", () => {
  assertRefused(
    orders({ origins: ["https://shop.example", "https://*.shop.example"] }),
    /^Invalid config: streams\.orders\.origins\[1\]: Origin 'https:\/\/\*\.shop\.example' has a host no browser sends in Origin \(a wildcard matches no page: list each origin\); expected http\(s\):\/\/host\[:port\] without path, credentials or wildcard/,
  );
  assertRefused(
    orders({ origins: ["https://user:pw@shop.example"] }),
    /^Invalid config: streams\.orders\.origins\[0\]: Origin 'https:\/\/\[REDACTED\]@shop\.example' holds credentials, which no browser sends in Origin; expected/,
  );
  assertRefused(orders({ origins: ["https://a!b.example"] }), /streams\.orders\.origins\[0\]/);
  // As releases before the check took them: a wildcard kept (it matches nothing), credentials
  // dropped; found to warn.
  const raw = orders({ origins: ["https://*.shop.example", "https://user:pw@shop.example"] });
  const stream = only(compileConfig(raw, { malformedOrigins: true }));
  assert.deepEqual(stream.parsed.origins, ["https://*.shop.example", "https://shop.example"]);
  assert.match(malformedOrigin(stream)!, /^streams\.orders\.origins\[0\]: Origin 'https:\/\/\*/);
  assert.equal(
    malformedOrigin(only(compileConfig(orders({ origins: ["https://a.example"] })))),
    undefined,
  );
});

Deno.test("compileConfig() refuses a duration with a fraction of a millisecond or a unit given twice, naming its path, wherever a definition holds one; malformedDurations takes it as before", () => {
  const places: Array<[Record<string, unknown>, string]> = [
    [{ time: { lateness: "D" } }, "time.lateness"],
    [{ time: { field: "ts", maxFuture: "D" } }, "time.maxFuture"],
    [{ time: { idle: "D" } }, "time.idle"],
    [{ dedupe: { field: "id", ttl: "D" } }, "dedupe.ttl"],
    [{ idempotencyTtl: "D" }, "idempotencyTtl"],
    [
      { counters: { x: { window: { tumbling: "D" }, aggregate: "count" } } },
      "counters.x.window.tumbling",
    ],
    [
      { counters: { x: { window: { hopping: "D", every: "1m" }, aggregate: "count" } } },
      "counters.x.window.hopping",
    ],
    [
      { counters: { x: { window: { hopping: "2m", every: "D" }, aggregate: "count" } } },
      "counters.x.window.every",
    ],
    [
      { counters: { x: { window: { sliding: "D", precision: "1m" }, aggregate: "count" } } },
      "counters.x.window.sliding",
    ],
    [
      { counters: { x: { window: { sliding: "2m", precision: "D" }, aggregate: "count" } } },
      "counters.x.window.precision",
    ],
    [
      { counters: { x: { window: { session: "D" }, aggregate: "count" } } },
      "counters.x.window.session",
    ],
    [
      { counters: { x: { window: { tumbling: "1m" }, aggregate: "count", retention: "D" } } },
      "counters.x.retention",
    ],
  ];
  for (const [definition, path] of places) {
    for (
      const [text, problem] of [
        [
          "1m1m",
          "Cannot read duration '1m1m' at position 2: unit 'm' is given twice; give each unit once",
        ],
        [
          // 119,999.6 ms, read before as 2 minutes (windows of 2m, 1m panes, compile).
          "1m59.9996s",
          "Cannot read duration '1m59.9996s': '59.9996s' is not a whole number of milliseconds; a duration is counted in whole ms",
        ],
      ]
    ) {
      const raw = orders(
        JSON.parse(JSON.stringify(definition).replace('"D"', JSON.stringify(text))),
      );
      const error = assertRefused(raw);
      assert.equal(
        error.message,
        `Invalid config: streams.orders.${path}: ${problem}`,
        `${path} ${text}`,
      );
      // As releases before the check read it (rounded, added up); found to warn.
      const stream = only(compileConfig(raw, { malformedDurations: true }));
      assert.equal(
        malformedDuration(stream),
        `streams.orders.${path}: ${problem}`,
        `${path} ${text}`,
      );
    }
  }
  const taken = only(compileConfig(
    orders({
      time: { field: "ts", lateness: "1m1m", maxFuture: "0.6ms" },
      idempotencyTtl: "1h0.4ms",
    }),
    { malformedDurations: true },
  ));
  assert.deepEqual([taken.latenessMs, taken.maxFutureMs, taken.idempotencyTtlMs], [
    120_000,
    1,
    3_600_000,
  ]);
  // One that rounds to zero was refused by every release: it says why, not only that it is zero.
  for (const options of [{}, { malformedDurations: true }]) {
    assert.throws(
      () => compileConfig(counter({ window: { tumbling: "0.4ms" } }), options),
      {
        name: "ConfigError",
        message:
          "Invalid config: streams.orders.counters.x.window.tumbling: Cannot read duration '0.4ms': '0.4ms' is not a whole number of milliseconds; a duration is counted in whole ms",
      },
    );
  }
  assert.equal(malformedDuration(only(compileConfig(counter({ retention: "1.5h" })))), undefined);
});

/** A zod schema as the walk of {@linkcode durationPlaces} reads it (zod 4's `_zod.def`). */
interface SchemaNode {
  _zod: {
    def: {
      type: string;
      innerType?: SchemaNode;
      shape?: Record<string, SchemaNode>;
      options?: SchemaNode[];
      valueType?: SchemaNode;
      element?: SchemaNode;
      in?: SchemaNode;
      values?: unknown[];
      getter?: () => SchemaNode;
    };
  };
  safeParse(value: unknown): { success: boolean; data?: unknown };
}

/** Wrappers that hold one schema and take what it takes. */
const WRAPPERS = new Set(["optional", "default", "prefault", "nullable", "readonly", "catch"]);

/** Whether `node` reads a duration: it takes the text `1m1m` leniently, as 120,000 ms. */
function readsDuration(node: SchemaNode): boolean {
  const result = node.safeParse("1m1m");
  return result.success && result.data === 120_000;
}

/** A smallest value `node` takes: its required fields only, a duration as `1m`. */
function sampleOf(node: SchemaNode): unknown {
  const def = node._zod.def;
  if (readsDuration(node)) return "1m";
  switch (def.type) {
    case "string":
      return "x";
    case "literal":
      return def.values![0];
    case "union":
      return sampleOf(def.options![0]);
    case "object":
      return requiredFields(node);
    case "record":
      return {};
    case "array":
      return [];
    case "pipe":
      return sampleOf(def.in!);
    default:
      throw new Error(`No sample value for a required ${def.type}: teach sampleOf()`);
  }
}

/** Samples of the fields of an object schema that are neither optional nor defaulted. */
function requiredFields(node: SchemaNode): Record<string, unknown> {
  return Object.fromEntries(
    Object.entries(node._zod.def.shape!)
      .filter(([, field]) => !["optional", "default", "prefault"].includes(field._zod.def.type))
      .map(([key, field]) => [key, sampleOf(field)]),
  );
}

/**
 * Every place the schema `node` reads a duration, found by walking the schema (not a list), each
 * with its path and a smallest value `node` takes that holds `1m1m` there.
 */
function durationPlaces(node: SchemaNode): Array<{ path: Array<string | number>; value: unknown }> {
  const def = node._zod.def;
  if (WRAPPERS.has(def.type)) return durationPlaces(def.innerType!);
  if (readsDuration(node)) return [{ path: [], value: "1m1m" }];
  switch (def.type) {
    case "object":
      return Object.entries(def.shape!).flatMap(([key, field]) =>
        durationPlaces(field).map(({ path, value }) => ({
          path: [key, ...path],
          value: { ...requiredFields(node), [key]: value },
        }))
      );
    case "union":
      return def.options!.flatMap((option) => durationPlaces(option));
    case "record":
      return durationPlaces(def.valueType!).map(({ path, value }) => ({
        path: ["x", ...path],
        value: { x: value },
      }));
    case "array":
      return durationPlaces(def.element!).map(({ path, value }) => ({
        path: [0, ...path],
        value: [value],
      }));
    case "pipe":
      return durationPlaces(def.in!);
    case "lazy":
      return durationPlaces(def.getter!());
    default:
      return [];
  }
}

Deno.test("compileConfig() refuses a malformed duration in every duration field of the stream schema, found by walking the schema", () => {
  const places = durationPlaces(streamDefinitionSchema as unknown as SchemaNode);
  const paths = places.map(({ path }) =>
    path.map((part) => typeof part === "number" ? `[${part}]` : `.${part}`).join("").slice(1)
  );
  // The walk finds the fields it should (so an empty walk cannot pass).
  for (
    const known of [
      "time.lateness",
      "time.idle",
      "dedupe.ttl",
      "idempotencyTtl",
      "counters.x.window.tumbling",
      "counters.x.window.every",
      "counters.x.window.session",
      "counters.x.retention",
    ]
  ) {
    assert.ok(paths.includes(known), `${known} not found in ${paths.join(", ")}`);
  }
  // A duration field the lenient read takes but the compile's own list of durations misses would
  // be taken as '2m' here instead of refused.
  for (const [index, { value }] of places.entries()) {
    assert.throws(
      () => compileConfig(orders(value as Record<string, unknown>)),
      {
        name: "ConfigError",
        message: `Invalid config: streams.orders.${
          paths[index]
        }: Cannot read duration '1m1m' at position 2: unit 'm' is given twice; give each unit once`,
      },
      `streams.orders.${paths[index]}: '1m1m' was taken, not refused as a malformed duration`,
    );
  }
  assert.equal(places.length, 12, paths.join(", "));
});

/** Each window length a definition gives, as a window with `D` there, and its key. */
const WINDOW_LENGTH_PLACES: Array<[Record<string, string>, string]> = [
  [{ tumbling: "D" }, "tumbling"],
  [{ hopping: "D", every: "D" }, "hopping"],
  [{ hopping: "1s", every: "D" }, "every"],
  [{ sliding: "D", precision: "D" }, "sliding"],
  [{ sliding: "1s", precision: "D" }, "precision"],
  [{ session: "D" }, "session"],
];

/** `window` with each `D` replaced by `text`. */
function windowOf(window: Record<string, string>, text: string): Record<string, string> {
  return Object.fromEntries(
    Object.entries(window).map(([key, value]) => [key, value === "D" ? text : value]),
  );
}

Deno.test("compileConfig() refuses every window length below 1s, naming its path and length; shortWindows takes it as before, and shortWindows() finds it", () => {
  assert.equal(MIN_WINDOW_MS, 1_000);
  const names = {
    tumbling: "Window size",
    hopping: "Window size",
    every: "Hop ('every')",
    sliding: "Window size",
    precision: "Precision",
    session: "Session gap",
  };
  for (const [window, key] of WINDOW_LENGTH_PLACES) {
    for (const [text, ms] of [["500ms", 500], ["1ms", 1], ["0.25s", 250]] as const) {
      const raw = counter({ window: windowOf(window, text) });
      const error = assertRefused(raw);
      assert.equal(
        error.message,
        `Invalid config: streams.orders.counters.x.window.${key}: ${
          names[key as keyof typeof names]
        } is ${ms} ms, shorter than the minimum of 1s: a sweep closes a bounded number of a counter's windows each run, so windows this short would close later and later behind a steady stream of events; use '1s' or more`,
        `${key} ${text}`,
      );
      // As releases before the check took it; found to warn.
      const stream = only(compileConfig(raw, { shortWindows: true }));
      const [short] = shortWindows(stream);
      assert.deepEqual(short, { counter: "x", key, ms }, `${key} ${text}`);
      assert.equal(
        `Invalid config: ${shortWindowProblem("orders", short)}`,
        error.message,
      );
    }
    // Just below the minimum: refused; at it: taken, with nothing to warn about.
    if (key !== "every" && key !== "precision") {
      assertRefused(counter({ window: windowOf(window, "999ms") }), /is 999 ms, shorter than/);
    }
    const taken = only(compileConfig(counter({ window: windowOf(window, "1s") })));
    assert.deepEqual(shortWindows(taken), [], key);
  }
  // Every short length of every counter is found, in definition order.
  const both = only(compileConfig(
    orders({
      counters: {
        a: { window: { hopping: "500ms", every: "100ms" }, aggregate: "count" },
        b: { window: { tumbling: "1m" }, aggregate: "count" },
        c: { window: { session: "250ms" }, aggregate: "count" },
      },
    }),
    { shortWindows: true },
  ));
  assert.deepEqual(shortWindows(both), [
    { counter: "a", key: "hopping", ms: 500 },
    { counter: "a", key: "every", ms: 100 },
    { counter: "c", key: "session", ms: 250 },
  ]);
  // Panes shorter than a second are not refused: windows close by their hop, here 1 s.
  const panes = only(compileConfig(counter({ window: { hopping: "1500ms", every: "1s" } })));
  assert.equal(panes.counters[0].paneMs, 500);
  assert.deepEqual(shortWindows(panes), []);
});

Deno.test("loadConfigFile() serves a file deployed with a window shorter than 1s as before, to be warned about", async () => {
  const path = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(path, JSON.stringify(counter({ window: { tumbling: "100ms" } })));
    const stream = only(await loadConfigFile(path));
    assert.deepEqual(stream.counters[0].window, { kind: "tumbling", sizeMs: 100 });
    assert.deepEqual(shortWindows(stream), [{ counter: "x", key: "tumbling", ms: 100 }]);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("loadConfigFile() serves a file deployed with a duration refused since as before, to be warned about", async () => {
  const path = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(path, JSON.stringify(orders({ time: { lateness: "30s30s" } })));
    const stream = only(await loadConfigFile(path));
    assert.equal(stream.latenessMs, 60_000);
    assert.match(
      malformedDuration(stream)!,
      /^streams\.orders\.time\.lateness: .*unit 's' is given twice/,
    );
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("the README states a stream's origins are read as allowed origins, and each example it refuses is refused", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const bullet = readme.slice(readme.indexOf("- `origins` — "), readme.indexOf("- `alerts` — "));
  const text = bullet.replace(/\s+/g, " ");
  assert.match(text, /read as `EDGESTREAM_ALLOWED_ORIGINS` and a key's `origins` are/);
  assert.match(
    text,
    /refuses such an entry `400` `invalid_definition` naming it \(`origins\[1\]: …`, credentials shown as `\[REDACTED\]`\)/,
  );
  assert.match(text, /served as before .* startup warning naming the path/);
  assert.match(text, /a stored one's with a warning when an instance loads it/);
  for (const origin of ["https://user:pw@shop.example", "https://*.shop.example"]) {
    assert.ok(text.includes(`\`${origin}\``), origin);
    assertRefused(orders({ origins: [origin] }), /streams\.orders\.origins\[0\]/);
  }
});

Deno.test("the README's close-only alert compiles with evaluate close, an alert without evaluate is live, another value is refused as the README quotes, and an unknown alert key is refused naming it", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const bullet = readme.slice(readme.indexOf("- `alerts` — "), readme.indexOf("Durations: "));
  const text = bullet.replace(/\s+/g, " ");
  const example = /`(\{"name": "quiet"[^`]*\})`/.exec(text)?.[1];
  assert.ok(example, "the README's close-only alert");
  const perMinute = { window: { tumbling: "1m" }, aggregate: "count" };
  const stream = only(compileConfig(orders({
    counters: { orders_per_minute: perMinute },
    alerts: [JSON.parse(example), {
      name: "busy",
      counter: "orders_per_minute",
      when: "value > 9.0",
    }],
  })));
  assert.deepEqual(stream.alerts.map((alert) => [alert.name, alert.evaluate]), [
    ["quiet", "close"],
    ["busy", "live"],
  ]);
  const quoted = /`(alerts\[0\]\.evaluate: [^`]*)`/.exec(text)?.[1];
  assert.ok(quoted);
  const refused = assertRefused(
    orders({
      counters: { n: perMinute },
      alerts: [{ name: "q", counter: "n", when: "value < 3.0", evaluate: "final" }],
    }),
  );
  assert.ok(refused.message.includes(`streams.orders.${quoted}`), refused.message);
  assertRefused(
    orders({
      counters: { n: perMinute },
      alerts: [{ name: "q", counter: "n", when: "value < 3.0", repeat: "hourly" }],
    }),
    /streams\.orders\.alerts\[0\]: Unrecognized key: "repeat"/,
  );
});

Deno.test("compileConfig() lists the live alerts by the counter they watch, once a counter, not a close-only alert nor a session counter's", () => {
  const count = (window: Record<string, string>) => ({ window, aggregate: "count" });
  const stream = only(compileConfig(orders({
    counters: {
      quiet: count({ tumbling: "1m" }),
      busy: count({ tumbling: "1m" }),
      visits: count({ session: "30m" }),
      plain: count({ tumbling: "1h" }),
      twice: count({ tumbling: "1h" }),
    },
    alerts: [
      { name: "q", counter: "quiet", when: "value < 3.0", evaluate: "close" },
      { name: "b", counter: "busy", when: "value > 9.0" },
      { name: "v", counter: "visits", when: "value > 9.0", evaluate: "live" },
      { name: "t1", counter: "twice", when: "value > 9.0" },
      { name: "t2", counter: "twice", when: "value > 99.0", evaluate: "live" },
    ],
  })));
  const names = [...stream.liveAlerts].map(([index, alerts]) => [
    index,
    alerts.map((alert) => alert.name),
  ]);
  assert.deepEqual(names, [[1, ["b"]], [4, ["t1", "t2"]]]);
  for (const [index, alerts] of stream.liveAlerts) {
    for (const alert of alerts) {
      assert.equal(
        alert,
        stream.alerts.find((a) => a.name === alert.name),
      );
    }
    assert.ok(alerts.every((alert) => alert.counter === stream.counters[index]));
  }
  assert.equal(only(compileConfig(counter({}))).liveAlerts.size, 0);
});

Deno.test("the README states the 1s minimum of every window length, and each example it gives reads as it says", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const bullet = readme.slice(readme.indexOf("  - `window`: "), readme.indexOf("  - `groupBy`: "));
  const text = bullet.replace(/\s+/g, " ");
  assert.match(
    text,
    /Every length a window gives \(a tumbling, hopping or sliding size, `every`, `precision`, a session's gap\) is at least `1s`/,
  );
  assert.equal(MIN_WINDOW_MS, 1_000);
  // Sweeps: how many a run closes, and how often the default timer and Deno Deploy's cron run.
  assert.match(text, /a sweep closes at most 100 windows \(of a session counter, 1,000 sessions\)/);
  assert.equal(WINDOWS_PER_SWEEP, 100);
  assert.equal(WINDOWS_PER_SWEEP * SESSIONS_PER_WINDOW, 1_000);
  assert.match(text, /every 5 s by default and every minute on Deno Deploy/);
  const env = await Deno.readTextFile(new URL("../../src/env.ts", import.meta.url));
  assert.match(env, /readDuration\(env, "EDGESTREAM_SWEEP_EVERY", "5s"\)/);
  const deploy = await Deno.readTextFile(new URL("../../deploy/main.ts", import.meta.url));
  assert.match(deploy, /Deno\.cron\([^)]*"\* \* \* \* \*"/);
  // The example of shorter panes is taken, with those panes; the refusal quoted is the one given.
  const hopping = JSON.parse(
    text.match(/`(\{"hopping": "1500ms", "every": "1s"\})` is kept in 500 ms panes/)![1],
  );
  assert.equal(only(compileConfig(counter({ window: hopping }))).counters[0].paneMs, 500);
  assert.match(
    text,
    /`PUT \/v1\/streams\/\{stream\}` refuses a shorter length `400` `invalid_definition` naming its path \(`counters\.fast\.window\.tumbling: Window size is 500 ms, shorter than the minimum of 1s: …`\)/,
  );
  const refused = assertRefused(
    orders({ counters: { fast: { window: { tumbling: "500ms" }, aggregate: "count" } } }),
  );
  assert.ok(
    refused.message.startsWith(
      "Invalid config: streams.orders.counters.fast.window.tumbling: Window size is 500 ms, shorter than the minimum of 1s: ",
    ),
    refused.message,
  );
  assert.match(
    text,
    /a config file deployed with it, is served as before, the config file's with a startup warning naming the path, a stored one's with a warning when an instance loads it/,
  );
});

Deno.test("compileConfig() compiles a session window with its gap and maxSessions", () => {
  const stream = compileConfig(counter({
    window: { session: "30m" },
    groupBy: ["user"],
    maxSessions: 500,
  })).get("orders")!;
  const compiled = stream.counters[0];
  assert.deepEqual(compiled.window, { kind: "session", gapMs: 1_800_000, sizeMs: 1_800_000 });
  assert.deepEqual(compiled.meta.session, { gapMs: 1_800_000, maxSessions: 500 });
  // gap + lateness (30 s) + retention (1 h), from the last write
  assert.equal(compiled.meta.ttlMs, 1_800_000 + 30_000 + 3_600_000);
  const byDefault = compileConfig(counter({ window: { session: "10s" } })).get("orders")!;
  assert.deepEqual(byDefault.counters[0].meta.session, { gapMs: 10_000, maxSessions: 100_000 });
  assert.equal(byDefault.counters[0].meta.session?.maxSessions, DEFAULT_MAX_SESSIONS);
});

Deno.test("compileConfig() refuses maxSessions on a fixed window and a gap of zero", () => {
  assertRefused(
    counter({ maxSessions: 10 }),
    /streams\.orders\.counters\.x\.maxSessions: only session windows have maxSessions; this window is tumbling/,
  );
  assertRefused(
    counter({ window: { session: "0s" } }),
    /streams\.orders\.counters\.x\.window\.session: Duration must be greater than zero/,
  );
  assertRefused(
    counter({ window: { session: "1m" }, maxSessions: 0 }),
    /streams\.orders\.counters\.x\.maxSessions/,
  );
});

Deno.test("compileConfig() refuses maxGroups on a session window, naming its path, as maxSessions on a fixed one; sessionMaxGroups (AS_STORED) takes it as before; loadConfigFile refuses it", async () => {
  const why =
    "only tumbling, hopping and sliding windows have maxGroups; this window is session, whose cap is maxSessions: remove maxGroups";
  const config = counter({ window: { session: "30m" }, maxGroups: 50 });
  const error = assertRefused(config);
  assert.equal(error.message, `Invalid config: streams.orders.counters.x.maxGroups: ${why}`);
  // The default (not written) is no refusal, nor maxGroups on the fixed windows.
  assert.equal(
    sessionMaxGroups(only(compileConfig(counter({ window: { session: "30m" } })))),
    undefined,
  );
  for (
    const window of [{ tumbling: "1m" }, { hopping: "1h", every: "1m" }, {
      sliding: "1h",
      precision: "1m",
    }]
  ) {
    assert.equal(
      only(compileConfig(counter({ window, maxGroups: 50 }))).counters[0].meta.maxGroups,
      50,
    );
  }
  // Stored before this check: served as it was (the sessions' cap is maxSessions), found to warn.
  for (const options of [{ sessionMaxGroups: true }, AS_STORED]) {
    const stored = only(compileConfig(config, options));
    assert.deepEqual(stored.counters[0].meta.session, { gapMs: 1_800_000, maxSessions: 100_000 });
    assert.equal(sessionMaxGroups(stored), `streams.orders.counters.x.maxGroups: ${why}`);
  }
  // A config file: refused at startup, naming the path.
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/config.json`;
    await Deno.writeTextFile(path, JSON.stringify(config));
    await assert.rejects(loadConfigFile(path), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `Invalid config: streams.orders.counters.x.maxGroups: ${why}`);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compileConfig() refuses time.maxFuture without time.field, naming its path, as it does nothing there; lateness and idle are taken; receiveTimeMaxFuture (AS_STORED) takes it as before; loadConfigFile refuses it", async () => {
  const why =
    "only a stream with time.field has maxFuture; this one has none, so each event is timed when it is received, never ahead of the clock: remove maxFuture or set time.field";
  const config = counter({});
  (config as { streams: { orders: Record<string, unknown> } }).streams.orders.time = {
    maxFuture: "1h",
  };
  const error = assertRefused(config);
  assert.equal(error.message, `Invalid config: streams.orders.time.maxFuture: ${why}`);
  // Its default (not written), or with time.field, is no refusal; lateness and idle still mean
  // something for receive time (the watermark is the latest receive time, any instance's).
  const receiveTime = only(compileConfig(orders({ time: { lateness: "2m", idle: "1m" } })));
  assert.deepEqual([receiveTime.latenessMs, receiveTime.idleMs], [120_000, 60_000]);
  assert.equal(receiveTimeMaxFuture(receiveTime), undefined);
  const eventTime = only(compileConfig(orders({ time: { field: "ts", maxFuture: "1h" } })));
  assert.equal(eventTime.maxFutureMs, 3_600_000);
  assert.equal(receiveTimeMaxFuture(eventTime), undefined);
  // Stored before this check: served as it was, found to warn.
  for (const options of [{ receiveTimeMaxFuture: true }, AS_STORED]) {
    const stored = only(compileConfig(config, options));
    assert.equal(stored.maxFutureMs, 3_600_000);
    assert.equal(receiveTimeMaxFuture(stored), `streams.orders.time.maxFuture: ${why}`);
  }
  // A config file: refused at startup, naming the path.
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/config.json`;
    await Deno.writeTextFile(path, JSON.stringify(config));
    await assert.rejects(loadConfigFile(path), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `Invalid config: streams.orders.time.maxFuture: ${why}`);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compileConfig() refuses quantiles on a session window, naming the counter", () => {
  assertRefused(
    counter({ window: { session: "30m" }, groupBy: ["user"], aggregate: { quantiles: "ms" } }),
    /streams\.orders\.counters\.x\.aggregate: quantiles are not available on session windows/,
  );
});

Deno.test("loadConfigFile() reads a file that starts with a byte order mark", async () => {
  const path = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(path, '\uFEFF{"streams": {"orders": {}}}');
    assert.deepEqual([...(await loadConfigFile(path)).keys()], ["orders"]);
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("compileConfig() bounds maxGroups and a stream's limits, whose burst is required", () => {
  const stream = (extra: object) => ({
    streams: {
      s: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } }, ...extra },
    },
  });
  compileConfig(stream({ limits: { eventsPerSecond: 1_000_000, burst: 1_000_000 } }));
  for (
    const extra of [
      { limits: { eventsPerSecond: 1_000_001, burst: 1 } },
      { limits: { eventsPerSecond: 1, burst: 1_000_001 } },
      { limits: { eventsPerSecond: 1 } },
      { limits: { eventsPerSecond: 1, burst: 1.5 } },
    ]
  ) assert.throws(() => compileConfig(stream(extra)), ConfigError, JSON.stringify(extra));
  const groups = (maxGroups: number) => ({
    streams: {
      s: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count", maxGroups } } },
    },
  });
  compileConfig(groups(1_000_000));
  assert.throws(() => compileConfig(groups(1_000_001)), ConfigError);
});

Deno.test("compileConfig() keeps idempotent replies 24h by default, and idles a receive-time stream at 0s and an event-time one never", () => {
  const receiveTime = only(compileConfig({ streams: { open: {} } }));
  assert.equal(receiveTime.idempotencyTtlMs, 86_400_000);
  assert.equal(receiveTime.idleMs, 0);
  const eventTime = only(compileConfig(orders({ time: { field: "ts" } })));
  assert.equal(eventTime.idleMs, null);
  const idle = only(compileConfig(orders({ time: { field: "ts", idle: "2m" } })));
  assert.equal(idle.idleMs, 120_000);
});

Deno.test("compileConfig() takes maxSessions up to 1,000,000, and a stream limit of at least 0.001 events/s with both fields", () => {
  const sessions = (maxSessions: number) => counter({ window: { session: "1m" }, maxSessions });
  compileConfig(sessions(1_000_000));
  assertRefused(sessions(1_000_001), /streams\.orders\.counters\.x\.maxSessions/);
  compileConfig(orders({ limits: { eventsPerSecond: 0.001, burst: 1 } }));
  assertRefused(
    orders({ limits: { eventsPerSecond: 0.0009, burst: 1 } }),
    /streams\.orders\.limits\.eventsPerSecond/,
  );
  assertRefused(orders({ limits: { burst: 1 } }), /streams\.orders\.limits\.eventsPerSecond/);
});

Deno.test("the README states a stream's limits' bounds, and compileConfig() takes each bound and refuses past it", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "both fields required, each at most 1,000,000, `eventsPerSecond` at least 0.001 and `burst` a whole number of at least 1.";
  assert.ok(readme.includes(claim), claim);
  for (const [eventsPerSecond, burst] of [[0.001, 1], [1_000_000, 1_000_000]]) {
    compileConfig(orders({ limits: { eventsPerSecond, burst } }));
  }
  for (
    const [limits, field] of [
      [{ eventsPerSecond: 0.0009, burst: 1 }, "eventsPerSecond"],
      [{ eventsPerSecond: 1_000_001, burst: 1 }, "eventsPerSecond"],
      [{ eventsPerSecond: 1, burst: 0 }, "burst"],
      [{ eventsPerSecond: 1, burst: 1.5 }, "burst"],
      [{ eventsPerSecond: 1, burst: 1_000_001 }, "burst"],
      [{ burst: 1 }, "eventsPerSecond"],
      [{ eventsPerSecond: 1 }, "burst"],
    ] as const
  ) assertRefused(orders({ limits }), new RegExp(`streams\\.orders\\.limits\\.${field}`));
});

/** The fenced blocks of `lang` in README.md between the headings `from` and `to`. */
async function readmeBlocks(lang: string, from: string, to: string): Promise<string[]> {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.slice(readme.indexOf(from), readme.indexOf(to));
  return [...section.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)```", "g"))]
    .map((match) => match[1]);
}

Deno.test("the README's configuration example compiles, and its transform does what each step says", async () => {
  const [example] = await readmeBlocks("json", "## Configuration", "### Quantiles");
  const stream = compileConfig(JSON.parse(example)).get("orders")!;
  assert.equal(stream.timeField, "ts");
  assert.deepEqual(
    [stream.latenessMs, stream.maxFutureMs, stream.idleMs],
    [30_000, 300_000, 120_000],
  );
  assert.deepEqual(stream.dedupe, { field: "id", ttlMs: 86_400_000 });
  const [revenue] = stream.counters;
  assert.equal(revenue.name, "revenue");
  assert.deepEqual(revenue.window, { kind: "hopping", sizeMs: 3_600_000, everyMs: 300_000 });
  assert.deepEqual(revenue.groupBy, ["country"]);
  assert.deepEqual([revenue.retentionMs, revenue.meta.maxGroups], [86_400_000, 1000]);
  assert.deepEqual(
    stream.transform({
      id: "o1",
      ts: "2026-01-01T10:00:00Z",
      cc: "DE",
      amount: 150,
      debug: 1,
      x: 2,
    }),
    { id: "o1", ts: "2026-01-01T10:00:00Z", country: "DE", amount: 150, big: true },
  );
  assert.equal(stream.transform({ id: "o2", amount: 5, test: true }), null);
});

Deno.test("the README's quantiles and session counter examples compile as counters of a stream", async () => {
  const fragments = [
    ...await readmeBlocks("json", "### Quantiles", "### How windows are stored"),
    ...await readmeBlocks("json", "### Session windows", "## API"),
  ].filter((text) => text.trimStart().startsWith('"'));
  assert.equal(fragments.length, 2);
  const counters = JSON.parse(`{${fragments.join(",")}}`);
  const [latency, visits] = compileConfig({
    streams: { s: { time: { field: "ts" }, counters } },
  }).get("s")!.counters;
  assert.deepEqual(latency.aggregate, { kind: "quantiles", field: "ms", accuracy: 0.01 });
  assert.deepEqual(visits.meta.session, { gapMs: 1_800_000, maxSessions: 100_000 });
});

Deno.test("compileConfig() bounds names, descriptions, field paths, groupBy, transform steps, alerts and origins as the README says", () => {
  const name64 = "a".repeat(64);
  const path256 = "f".repeat(256);
  const text1024 = "d".repeat(1024);
  const alerts = (n: number) =>
    Array.from({ length: n }, (_, i) => ({ name: `a${i}`, counter: "x", when: "true" }));
  const origins = (n: number) => Array.from({ length: n }, (_, i) => `https://o${i}.example`);
  const longOrigin = `https://${"o".repeat(256 - "https://.example".length)}.example`;
  assert.equal(longOrigin.length, 256);
  // At each bound: taken.
  compileConfig({ streams: { [name64]: { description: text1024 } } });
  compileConfig(orders({
    time: { field: path256 },
    dedupe: { field: path256 },
    // Another field than the counter's: a counter summing a field dropped is refused.
    transform: Array.from({ length: 64 }, () => ({ drop: ["g".repeat(256)] })),
    counters: {
      [name64]: {
        description: text1024,
        window: { tumbling: "1m" },
        groupBy: Array.from({ length: 8 }, (_, i) => `g${i}`),
        aggregate: { sum: path256 },
      },
      x: { window: { tumbling: "1m" }, aggregate: "count" },
    },
    alerts: [
      ...alerts(63),
      { name: name64, description: text1024, counter: "x", when: "true" },
    ],
    origins: [...origins(63), longOrigin],
  }));
  // One past: refused, naming the path.
  assertRefused({ streams: { [`${name64}a`]: {} } }, /1-64 characters of letters, digits/);
  assertRefused({ streams: { "a.b": {} } }, /1-64 characters of letters, digits/);
  assertRefused(orders({ description: `${text1024}d` }), /streams\.orders\.description/);
  assertRefused(
    counter({ description: `${text1024}d` }),
    /streams\.orders\.counters\.x\.description/,
  );
  // Counted in code points, as the README says: an emoji (two UTF-16 code units) counts one.
  const emoji = "\u{1F600}";
  compileConfig(orders({ description: emoji.repeat(1024) }));
  compileConfig(orders({ time: { field: emoji.repeat(256) } }));
  assertRefused(orders({ description: emoji.repeat(1025) }), /streams\.orders\.description/);
  assertRefused(orders({ time: { field: `${path256}f` } }), /streams\.orders\.time\.field/);
  assertRefused(orders({ dedupe: { field: `${path256}f` } }), /streams\.orders\.dedupe\.field/);
  assertRefused(counter({ aggregate: { sum: `${path256}f` } }), /streams\.orders\.counters\.x/);
  assertRefused(
    counter({ groupBy: [`${path256}f`] }),
    /streams\.orders\.counters\.x\.groupBy\[0\]/,
  );
  assertRefused(
    orders({ transform: [{ drop: [`${path256}f`] }] }),
    /streams\.orders\.transform\[0\]/,
  );
  assertRefused(
    orders({ transform: [{ set: { [`${path256}f`]: "1" } }] }),
    /streams\.orders\.transform\[0\]/,
  );
  assertRefused(
    orders({ transform: [{ rename: { a: `${path256}f` } }] }),
    /streams\.orders\.transform\[0\]/,
  );
  assertRefused(
    counter({ groupBy: Array.from({ length: 9 }, (_, i) => `g${i}`) }),
    /streams\.orders\.counters\.x\.groupBy/,
  );
  assertRefused(
    orders({ transform: Array.from({ length: 65 }, () => ({ drop: ["a"] })) }),
    /streams\.orders\.transform/,
  );
  assertRefused(
    orders({
      counters: { x: { window: { tumbling: "1m" }, aggregate: "count" } },
      alerts: alerts(65),
    }),
    /streams\.orders\.alerts/,
  );
  assertRefused(orders({ origins: origins(65) }), /streams\.orders\.origins/);
  assertRefused(orders({ origins: [`${longOrigin}x`] }), /streams\.orders\.origins\[0\]/);
  for (const part of ["__proto__", "constructor", "prototype"]) {
    assertRefused(
      counter({ groupBy: [`user.${part}`] }),
      /streams\.orders\.counters\.x\.groupBy\[0\]/,
    );
    assertRefused(orders({ transform: [{ pick: [part] }] }), /streams\.orders\.transform\[0\]/);
  }
});

Deno.test("compileConfig() quotes a long key shortened, as an unknown key and in a path", () => {
  const long = "k".repeat(60_000);
  const unknown = assertRefused(
    orders({ [long]: 1 }),
    /streams\.orders: Unrecognized key: "k{256}… \(60000 characters\)"/,
  );
  assert.ok(unknown.message.length < 1_000, `${unknown.message.length} characters`);
  const inPath = assertRefused(
    orders({ counters: { [long]: { window: { tumbling: "1m" }, aggregate: "count" } } }),
    /streams\.orders\.counters\.k{256}… \(60000 characters\)/,
  );
  assert.ok(inPath.message.length < 2_000, `${inPath.message.length} characters`);
});

Deno.test("compileConfig() reads the README's durations as it says: each example, 366 days and not a millisecond more, 1.5s but not 0.6ms", () => {
  const retention = (text: string) =>
    only(compileConfig(counter({ retention: text }))).counters[0].retentionMs;
  const examples: Array<[string, number]> = [
    ["500ms", 500],
    ["30s", 30_000],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["7d", 604_800_000],
    ["2w", 1_209_600_000],
    ["1h30m", 5_400_000],
    ["1.5s", 1_500],
    ["366d", 366 * 86_400_000],
  ];
  for (const [text, ms] of examples) assert.equal(retention(text), ms, text);
  assertRefused(
    counter({ retention: "366d1ms" }),
    /streams\.orders\.counters\.x\.retention: Duration '366d1ms' is longer than 366 days/,
  );
  assertRefused(
    counter({ retention: "0.6ms" }),
    /streams\.orders\.counters\.x\.retention: Cannot read duration '0\.6ms': '0\.6ms' is not a whole number of milliseconds/,
  );
  assertRefused(
    counter({ retention: "1m1m" }),
    /streams\.orders\.counters\.x\.retention: Cannot read duration '1m1m' at position 2: unit 'm' is given twice/,
  );
});

Deno.test("compileStreamDefinition() with oversizedPatterns compiles a pattern past 5,000 instructions as before, and its filter keeps matching once other patterns pushed it out of the literal cache; without, refuses it", () => {
  const big = "[a-z]{1000}".repeat(6);
  const definition = {
    schema: { type: "object", properties: { sku: { type: "string", pattern: `^x|${big}` } } },
    transform: [{ filter: `!has(event.a) || event.a.matches("^0|${big}")` }],
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  assert.throws(
    () => compileStreamDefinition("orders", definition),
    /streams\.orders\.schema\.properties\.sku\.pattern: Pattern .* is too large: it compiles to about 6005 instructions/,
  );
  const stream = compileStreamDefinition("orders", definition, { oversizedPatterns: true });
  assert.equal(stream.schema.safeParse({ sku: "x" }).success, true);
  assert.equal(stream.schema.safeParse({ sku: "y" }).success, false);
  // Outside the option, still refused.
  assert.throws(() => compileExpression(`"a".matches("^1|${big}")`), /is too large/);
  // 20 others of 4,005 instructions pass the 65,536 the literal cache holds.
  for (let index = 0; index < 20; index++) {
    compileExpression(`event.a.matches("^${index}|${"[a-z]{1000}".repeat(4)}")`);
  }
  assert.deepEqual(stream.transform({ a: "0" }), { a: "0" });
  assert.equal(stream.transform({ a: "1" }), null);
});

Deno.test("compileConfig() refuses a counter, time or dedupe field a schema closed by additionalProperties false can never hold, naming its path and the fields it holds; unknownCounterFields takes it as before", () => {
  const closed = {
    type: "object",
    additionalProperties: false,
    properties: { amount: { type: "number" }, country: { type: "string" }, user: {} },
  };
  const orders = (stream: Record<string, unknown>) => ({
    streams: { orders: { schema: closed, ...stream } },
  });
  const counter = (extra: Record<string, unknown>) =>
    orders({ counters: { n: { window: { tumbling: "1m" }, aggregate: "count", ...extra } } });
  const held = "the schema holds: amount, country, user";
  for (
    const [config, message] of [
      [
        counter({ aggregate: { sum: "amont" } }),
        `streams.orders.counters.n.aggregate.sum: Field 'amont' is not in the schema, which holds no other fields ("additionalProperties": false), and no transform sets it, so it is always missing; ${held}`,
      ],
      [
        counter({ aggregate: { quantiles: "ms" } }),
        `streams.orders.counters.n.aggregate.quantiles: Field 'ms' is not in the schema`,
      ],
      [
        counter({ groupBy: ["country", "contry"] }),
        `streams.orders.counters.n.groupBy[1]: Field 'contry' is not in the schema`,
      ],
      [
        counter({ groupBy: ["usr.country"] }),
        `streams.orders.counters.n.groupBy[0]: Field 'usr.country' is not in the schema`,
      ],
      [
        orders({ time: { field: "ts" } }),
        `streams.orders.time.field: Field 'ts' is not in the schema, which holds no other fields ("additionalProperties": false), read before transforms, so it is always missing; ${held}`,
      ],
      [
        orders({ dedupe: { field: "id" }, transform: [{ set: { id: "'x'" } }] }),
        `streams.orders.dedupe.field: Field 'id' is not in the schema`,
      ],
    ] as const
  ) {
    assert.throws(() => compileConfig(config), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.ok(error.message.startsWith(`Invalid config: ${message}`), error.message);
      return true;
    });
    // Stored or deployed before this check: compiled as it was, found to warn.
    const stored = only(compileConfig(config, { unknownCounterFields: true }));
    assert.ok(unknownCounterField(stored)!.startsWith(message), message);
  }
  // A field the schema holds, a dotted path below one, a field a transform writes, and any
  // schema that may hold other keys: taken.
  const taken = [
    counter({ aggregate: { sum: "amount" }, groupBy: ["country", "user.country"] }),
    orders({
      transform: [{ set: { total: "1" } }, { rename: { amount: "paid" } }],
      counters: {
        n: { window: { tumbling: "1m" }, aggregate: { sum: "total.x" }, groupBy: ["paid"] },
      },
    }),
    ...[
      { ...closed, additionalProperties: true },
      { type: "object", properties: closed.properties },
      { ...closed, patternProperties: { "^x": {} } },
      { ...closed, anyOf: [{ required: ["amount"] }] },
      { ...closed, $ref: "#/$defs/x", $defs: { x: {} } },
    ].map((schema) => ({
      streams: {
        orders: {
          schema,
          time: { field: "ts" },
          counters: { n: { window: { tumbling: "1m" }, aggregate: { sum: "amont" } } },
        },
      },
    })),
  ];
  for (const config of taken) {
    assert.equal(
      unknownCounterField(only(compileConfig(config))),
      undefined,
      JSON.stringify(config),
    );
  }
  assert.throws(
    () =>
      compileConfig(
        orders({ schema: { type: "object", additionalProperties: false }, time: { field: "ts" } }),
      ),
    /streams\.orders\.time\.field: Field 'ts' is not in the schema.*; the schema holds: none$/,
  );
});

Deno.test("compileConfig() refuses a field path with an empty part (a..b, .a, a.) in time.field, dedupe.field, an aggregate or groupBy, naming its path; emptyPathParts takes it as before; loadConfigFile refuses it as other bad paths", async () => {
  const why =
    "has an empty part (a dot at its start or end, or two dots together); a dotted path names the keys read in turn, as 'user.country'";
  const cases: Array<[unknown, string, string]> = [];
  for (const field of ["a..b", ".a", "a.", "."]) {
    cases.push(
      [orders({ time: { field } }), "streams.orders.time.field", field],
      [orders({ dedupe: { field } }), "streams.orders.dedupe.field", field],
      [counter({ aggregate: { sum: field } }), "streams.orders.counters.x.aggregate.sum", field],
      [
        counter({ aggregate: { quantiles: field } }),
        "streams.orders.counters.x.aggregate.quantiles",
        field,
      ],
      [counter({ groupBy: ["ok", field] }), "streams.orders.counters.x.groupBy[1]", field],
    );
  }
  for (const [config, path, field] of cases) {
    assert.throws(() => compileConfig(config), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `Invalid config: ${path}: Field path '${field}' ${why}`);
      return true;
    });
    // Stored before this check: compiled as it was, found to warn.
    const stored = only(compileConfig(config, { emptyPathParts: true }));
    assert.deepEqual(emptyPathParts(stored).map((empty) => empty.field), [field]);
  }
  // Paths without an empty part: taken.
  const taken = only(compileConfig(orders({
    time: { field: "meta.ts" },
    dedupe: { field: "id" },
    counters: {
      x: { window: { tumbling: "1m" }, aggregate: { sum: "a.b.c" }, groupBy: ["user.country"] },
    },
  })));
  assert.deepEqual(emptyPathParts(taken), []);
  // A config file: refused at startup, as a path with a `__proto__` part or past 256 characters.
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/config.json`;
    await Deno.writeTextFile(path, JSON.stringify(counter({ groupBy: ["user..country"] })));
    await assert.rejects(loadConfigFile(path), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(
        error.message,
        `Invalid config: streams.orders.counters.x.groupBy[0]: Field path 'user..country' ${why}`,
      );
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("compileConfig() refuses a counter field below a closed object schema it can never hold, or one a transform's drop removes, rename moves away or pick leaves out; what may be there (open, typeless, defaulted, combined, written, swapped) is taken", () => {
  const user = {
    type: "object",
    additionalProperties: false,
    properties: {
      country: { type: "string" },
      address: {
        type: "object",
        additionalProperties: false,
        properties: { city: { type: "string" } },
      },
    },
  };
  // Closed at the top too: else the event may hold the dotted path as a key (`"user.contry"`).
  const schema = {
    type: "object",
    additionalProperties: false,
    properties: { user, amount: { type: "number" }, debug: {}, other: {} },
  };
  const stream = (fields: Record<string, unknown>) =>
    orders({ schema, ...fields }) as { streams: { orders: Record<string, unknown> } };
  const counting = (aggregate: unknown, groupBy: string[] = [], transform: unknown[] = []) =>
    stream({ transform, counters: { x: { window: { tumbling: "1m" }, aggregate, groupBy } } });
  const refused: Array<[unknown, string, Record<string, unknown> | null]> = [
    [
      counting("count", ["user.contry"]),
      `streams.orders.counters.x.groupBy[0]: Field 'user.contry' is not in the schema, whose 'user' holds no other fields ("additionalProperties": false), and no transform sets 'user', so it is always missing; 'user' holds: country, address`,
      { user: { contry: "DE" } },
    ],
    [
      counting({ distinct: "user.address.town" }),
      `streams.orders.counters.x.aggregate.distinct: Field 'user.address.town' is not in the schema, whose 'user.address' holds no other fields ("additionalProperties": false), and no transform sets 'user', so it is always missing; 'user.address' holds: city`,
      { user: { address: { town: "x" } } },
    ],
    [
      stream({ time: { field: "user.ts" } }),
      `streams.orders.time.field: Field 'user.ts' is not in the schema, whose 'user' holds no other fields ("additionalProperties": false), read before transforms, so it is always missing; 'user' holds: country, address`,
      { user: { ts: 1 } },
    ],
    [
      counting({ sum: "amount" }, [], [{ filter: "true" }, { drop: ["debug", "amount"] }]),
      `streams.orders.counters.x.aggregate.sum: Field 'amount' is always missing: transform[1] drops 'amount', and no step after it sets 'amount'`,
      null,
    ],
    [
      counting("count", ["user.country"], [{ set: { user: "{}" } }, { drop: ["user"] }]),
      `streams.orders.counters.x.groupBy[0]: Field 'user.country' is always missing: transform[1] drops 'user', and no step after it sets 'user'`,
      null,
    ],
    [
      counting({ sum: "amount" }, [], [{ filter: "true" }, { rename: { amount: "total" } }]),
      `streams.orders.counters.x.aggregate.sum: Field 'amount' is always missing: transform[1] renames 'amount' to 'total', and no step after it sets 'amount'`,
      null,
    ],
    [
      // Renamed away, then kept so by a pick naming it; read below it.
      counting("count", ["user.country"], [{ rename: { user: "customer" } }, {
        pick: ["customer", "user"],
      }]),
      `streams.orders.counters.x.groupBy[0]: Field 'user.country' is always missing: transform[0] renames 'user' to 'customer', and no step after it sets 'user'`,
      null,
    ],
    [
      counting("count", ["country"], [{ pick: ["amount", "user"] }]),
      `streams.orders.counters.x.groupBy[0]: Field 'country' is always missing: transform[0] picks only amount, user, and no step after it sets 'country'`,
      null,
    ],
    [
      // Picked, then the literal dotted key is gone too: read below `user`, which is closed.
      counting({ max: "user.age" }, [], [{ pick: ["user"] }]),
      `streams.orders.counters.x.aggregate.max: Field 'user.age' is not in the schema, whose 'user' holds no other fields`,
      null,
    ],
  ];
  for (const [config, message, event] of refused) {
    assert.throws(() => compileConfig(config), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.ok(error.message.startsWith(`Invalid config: ${message}`), error.message);
      return true;
    });
    // Stored or deployed before this check: compiled as it was, found to warn; an event holding
    // the field is refused by its schema.
    const stored = only(compileConfig(config, { unknownCounterFields: true }));
    assert.ok(unknownCounterField(stored)!.startsWith(message), message);
    if (event) assert.equal(stored.schema.safeParse(event).success, false, JSON.stringify(event));
  }
  const { type: _, ...typeless } = user;
  const taken = [
    counting("count", ["user.country", "user.address.city"]),
    // Open below `user`, or closed but what decides it is not the subschema alone.
    ...[
      { ...user, additionalProperties: true },
      typeless, // an array passes it: `user.0`, `user.length`
      { ...user, default: { contry: "DE" } }, // filled in unchecked
      { ...user, patternProperties: { "^c": {} } },
      { ...user, anyOf: [{ required: ["country"] }] },
      { $ref: "#/$defs/user" },
    ].map((sub) =>
      orders({
        schema: {
          type: "object",
          additionalProperties: false,
          $defs: { user },
          properties: { user: sub },
        },
        time: { field: "user.ts" },
        counters: {
          x: { window: { tumbling: "1m" }, aggregate: "count", groupBy: ["user.contry"] },
        },
      })
    ),
    // Below a schema whose top level may hold more than its properties say.
    orders({
      schema: { type: "object", additionalProperties: false, allOf: [{ properties: { user } }] },
      counters: { x: { window: { tumbling: "1m" }, aggregate: "count", groupBy: ["user.contry"] } },
    }),
    // The dotted path may be there as a key, the top level being open.
    orders({
      schema: { type: "object", properties: { user } },
      counters: { x: { window: { tumbling: "1m" }, aggregate: "count", groupBy: ["user.contry"] } },
    }),
    counting("count", ["user.contry"], [{ set: { "user.contry": "1" } }, {
      pick: ["user.contry", "user"],
    }]),
    // Written by a transform after the schema: any value.
    counting("count", ["user.contry"], [{ set: { user: "{'contry': 'DE'}" } }]),
    counting("count", ["user.contry"], [{ rename: { other: "user" } }]),
    // Swapped, or renamed to itself: each key both a source and a target is written.
    counting({ sum: "amount" }, ["debug"], [{ rename: { amount: "debug", debug: "amount" } }]),
    counting({ sum: "amount" }, [], [{ rename: { amount: "amount" } }]),
    // Renamed away, then written again by a later set or rename.
    counting({ sum: "amount" }, [], [{ rename: { amount: "total" } }, {
      set: { amount: "event.total" },
    }]),
    counting({ sum: "amount" }, [], [{ rename: { amount: "total" } }, {
      rename: { total: "amount" },
    }]),
    // A dotted source names the top-level key written so: `user` itself stays.
    counting("count", ["user.country"], [{ rename: { "user.country": "country" } }]),
    // Dropped or left out, then set again; picked; dropped after it is read (no such thing).
    counting({ sum: "amount" }, ["debug"], [{ drop: ["amount"] }, { set: { amount: "1" } }, {
      pick: ["amount", "debug"],
    }]),
    counting({ sum: "amount" }, ["user.country"], [{ pick: ["amount", "user"] }, {
      drop: ["other"],
    }]),
  ];
  for (const config of taken) {
    assert.equal(
      unknownCounterField(only(compileConfig(config))),
      undefined,
      JSON.stringify(config),
    );
  }
  // What the taken schemas let through holds the field indeed.
  const events: Array<[unknown, unknown]> = [
    [typeless, { user: ["a"] }],
    [{ ...user, default: { contry: "DE" } }, {}],
  ];
  for (const [sub, event] of events) {
    const compiled = only(compileConfig(orders({ schema: { properties: { user: sub } } })));
    assert.equal(compiled.schema.safeParse(event).success, true, JSON.stringify(event));
  }
});

Deno.test("the README's examples of a counter field a transform's drop or rename removes are what compileConfig() says, and its swap is taken", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replaceAll(/\s+/g, " ");
  const claim = readme.match(
    /Whatever the schema, a counter's aggregate or `groupBy` field whose first part \(and whole dotted path\) a transform's `drop` removes, its `rename` moves away \(a key also renamed to, as in a swap `(\{.*?\})`, stays\) or its `pick` leaves out, .*? refused the same way \((.*?)\)\./,
  );
  assert.ok(claim, "README states what a transform's drop, rename and pick remove");
  const counting = (transform: unknown[], groupBy: string[]) =>
    orders({
      transform,
      counters: { x: { window: { tumbling: "1m" }, aggregate: "count", groupBy } },
    });
  const examples = claim[2].split("; ").map((quoted) => quoted.replace(/^`|`$/g, ""));
  const sources = [
    counting([{ set: { seen: "true" } }, { drop: ["debug"] }], ["debug"]),
    counting([{ rename: { debug: "note" } }], ["debug"]),
  ];
  assert.equal(examples.length, sources.length, claim[2]);
  examples.forEach((example, index) => {
    const compiled = only(compileConfig(sources[index], { unknownCounterFields: true }));
    assert.equal(
      unknownCounterField(compiled),
      `streams.orders.counters.x.groupBy[0]: ${example}`,
    );
  });
  const swap = counting([{ rename: JSON.parse(claim[1]) }], ["a", "b"]);
  assert.equal(unknownCounterField(only(compileConfig(swap))), undefined);
});

Deno.test("the README says which durations refuse zero and what zero means for the others, and compileConfig() does so", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replaceAll(/\s+/g, " ");
  const claim = readme.match(
    /A duration of zero \(`0s`\) is refused where it would mean nothing: (.*?)\. The others take it, each with a meaning: (.*?) and a counter's `retention`/,
  );
  assert.ok(claim, "README states the durations that refuse zero");
  for (const setting of ["a window length", "`dedupe.ttl`", "`idempotencyTtl`"]) {
    assert.ok(claim[1].includes(setting), setting);
  }
  for (const setting of ["`time.lateness`", "`time.maxFuture`", "`time.idle`"]) {
    assert.ok(claim[2].includes(setting), setting);
  }
  // Refused, naming the path, as it says.
  for (
    const [config, path] of [
      [counter({ window: { tumbling: "0s" } }), "streams.orders.counters.x.window.tumbling"],
      [
        counter({ window: { hopping: "1m", every: "0s" } }),
        "streams.orders.counters.x.window.every",
      ],
      [
        counter({ window: { sliding: "1m", precision: "0ms" } }),
        "streams.orders.counters.x.window.precision",
      ],
      [counter({ window: { session: "0m" } }), "streams.orders.counters.x.window.session"],
      [orders({ dedupe: { field: "id", ttl: "0s" } }), "streams.orders.dedupe.ttl"],
      [orders({ idempotencyTtl: "0h" }), "streams.orders.idempotencyTtl"],
    ] as const
  ) {
    assert.throws(() => compileConfig(config), (error: Error) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(error.message, `Invalid config: ${path}: Duration must be greater than zero`);
      return true;
    });
  }
  // Taken: the time settings, and retention, which adds nothing to window size + lateness.
  const taken = only(compileConfig(orders({
    time: { field: "ts", lateness: "0s", maxFuture: "0s", idle: "0s" },
    counters: { x: { window: { tumbling: "1m" }, aggregate: "count", retention: "0s" } },
  })));
  assert.deepEqual(
    [taken.latenessMs, taken.maxFutureMs, taken.idleMs, taken.counters[0].retentionMs],
    [0, 0, 0, 0],
  );
  const defaults = only(compileConfig(counter({ retention: "0s" })));
  assert.equal(defaults.counters[0].meta.ttlMs, 60_000 + 30_000);
});

Deno.test("compileConfig() lists the first 20 problems and counts the rest, so thousands of bad entries give no message of megabytes", () => {
  const streams = Object.fromEntries(
    Array.from({ length: 5_000 }, (_, index) => [`bad name ${index}`, {}]),
  );
  assert.throws(
    () => compileConfig({ streams }),
    (thrown) => {
      assert.ok(thrown instanceof ConfigError);
      const listed = thrown.message.match(/Names are 1-64 characters/g) ?? [];
      assert.equal(listed.length, MAX_LISTED_PROBLEMS);
      assert.equal(MAX_LISTED_PROBLEMS, 20);
      assert.ok(thrown.message.startsWith("Invalid config: streams.bad name 0: Names are"));
      assert.ok(thrown.message.endsWith("; and 4980 more problems not listed"), thrown.message);
      assert.ok(thrown.message.length < 2_000, `${thrown.message.length} characters`);
      return true;
    },
  );
  const readme = Deno.readTextFileSync(new URL("../../README.md", import.meta.url));
  assert.ok(
    readme.replaceAll("\n", " ").includes(
      "The line names the first 20 problems of the file and counts the rest (`…; and 4980 more problems not listed`)",
    ),
    "README says so",
  );
  // As many as 20: all listed, no count.
  assert.throws(
    () =>
      compileConfig({
        streams: Object.fromEntries(Array.from({ length: 20 }, (_, index) => [`x y${index}`, {}])),
      }),
    (thrown) =>
      thrown instanceof ConfigError && !thrown.message.includes("not listed") &&
      thrown.message.split("; ").length === 20,
  );
});

Deno.test("compileConfig() refuses a schema past 131,072 objects and arrays once its $refs are expanded", () => {
  // 40 definitions, each an anyOf of two $refs to the next: a wrong value was checked 2^40 times.
  const $defs: Record<string, unknown> = { d40: { type: "string" } };
  for (let i = 0; i < 40; i++) {
    $defs[`d${i}`] = { anyOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] };
  }
  assertRefused(
    {
      streams: {
        wide: { schema: { type: "object", properties: { a: { $ref: "#/$defs/d0" } }, $defs } },
      },
    },
    /^Invalid config: streams\.wide\.schema: .*holds more than 131072 objects and arrays once its \$refs are expanded/,
  );
});

Deno.test("compileConfig() with largeSchemaExpansion (AS_STORED) compiles a schema past the expanded size as before this check, and largeSchemaExpansion() names it; loadConfigFile takes it", async () => {
  // 15 levels: about 5 * 2^15 objects and arrays once expanded, past the bound.
  const $defs: Record<string, unknown> = { d15: { type: "string" } };
  for (let i = 0; i < 15; i++) {
    $defs[`d${i}`] = { anyOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] };
  }
  const config = {
    streams: {
      wide: { schema: { type: "object", properties: { a: { $ref: "#/$defs/d0" } }, $defs } },
    },
  };
  assertRefused(config, /holds more than 131072 objects and arrays once its \$refs are expanded/);
  for (const options of [{ largeSchemaExpansion: true }, AS_STORED]) {
    const stream = compileConfig(config, options).get("wide")!;
    assert.equal(stream.schema.safeParse({ a: "x" }).success, true);
    assert.equal(stream.schema.safeParse({ a: 5 }).success, false);
    assert.equal(
      largeSchemaExpansion(stream),
      "streams.wide.schema: it holds more than 131072 objects and arrays once its $refs are expanded (each event value is checked against every anyOf/oneOf member that applies to it)",
    );
  }
  const path = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(path, JSON.stringify(config));
    assert.ok((await loadConfigFile(path)).has("wide"));
  } finally {
    await Deno.remove(path);
  }
  // A schema within the bound is named by none.
  const small = compileConfig({
    streams: {
      ok: { schema: { type: "object", properties: { a: { $ref: "#/$defs/d14" } }, $defs } },
    },
  }).get("ok")!;
  assert.equal(largeSchemaExpansion(small), undefined);
});

Deno.test("compileConfig() says on one line that checking ran out of stack, rather than throwing the RangeError", () => {
  // A real stack overflow while zod checks the config: reading `description` recurses without
  // end. (Not enumerable, so only zod reads it: a config parsed from JSON overflows only with
  // some 100,000s of problems under one key, too slow a test.)
  const overflowing = (): unknown => {
    const stream = {};
    const deeper = (depth: number): number => deeper(depth + 1) + 1;
    Object.defineProperty(stream, "description", { enumerable: false, get: () => deeper(0) });
    return { streams: { orders: stream } };
  };
  assert.throws(
    () => compileConfig(overflowing()),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.equal(
        error.message,
        "Invalid config: (root): too many problems to check at once (checking them ran out of stack)",
      );
      assert.ok(error.cause instanceof RangeError);
      return true;
    },
  );
  // Another error thrown while checking is not taken for it.
  const stream = {};
  Object.defineProperty(stream, "description", {
    enumerable: false,
    get: () => {
      throw new TypeError("not a stack overflow");
    },
  });
  assert.throws(() => compileConfig({ streams: { orders: stream } }), TypeError);
});
