/**
 * The dashboard's pure logic (static/dashboard/model.js): rates from stats, a counter's windows per group and the groups drawn.
 */
import assert from "node:assert/strict";
import {
  chartValue,
  CounterSeries,
  describeCounter,
  durationMs,
  formatRate,
  formatValue,
  groupKey,
  groupLabel,
  ratesBetween,
  shownText,
  windowStepMs,
} from "../../../static/dashboard/model.js";

Deno.test("ratesBetween() gives events per second of each field, from zero after a restart", () => {
  const before = { atMs: 0, stats: { accepted: 10, duplicates: 2, late: 0, rejected: 1 } };
  const after = { atMs: 2_000, stats: { accepted: 30, duplicates: 2, late: 4, rejected: 0 } };
  assert.equal(ratesBetween(null, after), null);
  assert.deepEqual(ratesBetween(before, after), {
    accepted: 10,
    duplicates: 0,
    late: 2,
    rejected: 0,
  });
  // Stats written without `rejected` (an older server) read as none.
  const older = { atMs: 4_000, stats: { accepted: 30, duplicates: 2, late: 4 } };
  assert.equal(ratesBetween(after, older)!.rejected, 0);
});

Deno.test("CounterSeries draws the top groups by their peak, with gaps where a group has no window", () => {
  const series = new CounterSeries(3);
  const at = (minute: number) => new Date(Date.UTC(2026, 0, 1, 10, minute)).toISOString();
  for (
    const [minute, country, value] of [
      [0, "DE", 9], // dropped: only the newest 3 window starts are kept
      [1, "DE", 1],
      [2, "DE", 2],
      [3, "DE", 3],
      [2, "FR", 7],
      [1, "IT", 2],
      [3, "IT", 2],
    ] as const
  ) {
    series.set({ start: at(minute), group: { country }, value });
  }
  series.set({ start: at(3), group: { country: "DE" }, value: 4 }); // a later update wins
  const { labels, data } = series.chartData(2);
  assert.deepEqual(labels, ["FR", "DE"]);
  assert.deepEqual(data, [
    [1, 2, 3].map((minute) => Date.parse(at(minute)) / 1000),
    [null, 7, null],
    [1, 2, 4],
  ]);
  assert.deepEqual(series.chartData(5).labels, ["FR", "DE", "IT"]);
  series.clear();
  assert.deepEqual(series.chartData(5), { labels: [], keys: [], data: [[]], rest: false });
});

Deno.test("groupLabel() writes an object or array value as JSON and tells a string from the value it reads as", () => {
  // An object value groups by its keys and values (README): each its own group, its own label.
  assert.equal(groupLabel({ device: { os: "ios", v: 1 } }), '{"os":"ios","v":1}');
  assert.equal(groupLabel({ device: { os: "android" } }), '{"os":"android"}');
  assert.equal(groupLabel({ tags: [1, "a"] }), '[1,"a"]');
  // The string "null", "1" or "true" is another group than null, 1 or true: quoted, as a read's
  // filter takes it (group.g="1").
  assert.deepEqual(
    [null, "null", 1, "1", true, "true", 1e21, "1e+21", "[1]", " 2"].map((g) => groupLabel({ g })),
    ["null", '"null"', "1", '"1"', "true", '"true"', "1e+21", '"1e+21"', '"[1]"', '" 2"'],
  );
  // Other text as it is; text that is JSON itself (a quoted string too) in quotes, so no two
  // groups read alike (the text "1" with its quotes is not the string 1).
  assert.equal(
    groupLabel({ country: "DE", city: "São Paulo" }),
    "\u2068DE\u2069 · \u2068São Paulo\u2069",
  );
  assert.equal(groupLabel({ note: '"1"' }), JSON.stringify('"1"'));
  // Text that is empty, has white space at either end or holds a control character is quoted too
  // (JSON escapes the control character): bare it read blank, as the text without the spaces, or
  // as "a b" (a line break shown on one line).
  assert.deepEqual(
    ["", " ", "\t", "DE ", " DE", "D E", "a\nb", "a\u0000b"].map((country) =>
      groupLabel({ country })
    ),
    ['""', '" "', '"\\t"', '"DE "', '" DE"', "D E", '"a\\nb"', '"a\\u0000b"'],
  );
});

Deno.test("groupLabel() quotes a value holding a character that shows nothing or reorders the text, written as its escape; shownText() escapes a description's bidirectional controls only", () => {
  // Each read alike bare, or reversed what followed: a zero-width space, joiner, no-break space,
  // soft hyphen, byte order mark, right-to-left mark and override, isolate, DEL, a C1 control, a
  // variation selector, a Hangul filler, a line separator, a tag character.
  assert.deepEqual(
    [
      "DE\u200b",
      "D\u200dE",
      "DE\u00a0FR",
      "D\u00adE",
      "\ufeffDE",
      "\u200fDE",
      "\u202egnp.exe",
      "a\u2066b",
      "a\u007fb",
      "a\u0085b",
      "DE\ufe0f",
      "\u3164",
      "a\u2028b",
      "DE\u{e0001}",
    ].map((country) => groupLabel({ country })),
    [
      '"DE\\u200b"',
      '"D\\u200dE"',
      '"DE\\u00a0FR"',
      '"D\\u00adE"',
      '"\\ufeffDE"',
      '"\\u200fDE"',
      '"\\u202egnp.exe"',
      '"a\\u2066b"',
      '"a\\u007fb"',
      '"a\\u0085b"',
      '"DE\\ufe0f"',
      '"\\u3164"',
      '"a\\u2028b"',
      '"DE\\u{e0001}"',
    ],
  );
  // Visible text stays as it is: letters of any script, marks, punctuation, emoji.
  assert.deepEqual(
    ["DE", "São Paulo", "שלום", "東京", "e\u0301", "🙂"].map((country) => groupLabel({ country })),
    ["DE", "São Paulo", "שלום", "東京", "e\u0301", "🙂"],
  );
  // Joiners, selectors, tags and spaces of ordinary text stay: an emoji's variation selector, a
  // family, a profession with a skin tone, a keycap, a rainbow flag, England's flag (tags after
  // U+1F3F4 up to the cancel tag), Persian with its zero-width non-joiner, Devanagari with a
  // joiner after the virama, an ideographic space between words.
  const ordinary = [
    "\u2764\ufe0f",
    "\u{1f468}\u200d\u{1f469}\u200d\u{1f467}",
    "\u{1f469}\u{1f3fd}\u200d\u{1f4bb}",
    "1\ufe0f\u20e3",
    "\u{1f3f3}\ufe0f\u200d\u{1f308}",
    "\u{1f3f4}\u{e0067}\u{e0062}\u{e0065}\u{e006e}\u{e0067}\u{e007f}",
    "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645",
    "\u0915\u094d\u200d\u0937",
    "\u6771\u4eac\u3000\u99c5",
  ];
  assert.deepEqual(ordinary.map((country) => groupLabel({ country })), ordinary);
  // Their look-alikes are still told apart: a joiner or selector alone, first, last, doubled or
  // between Latin letters, tags with no flag or no cancel tag, a non-joiner before a Latin letter,
  // an ideographic space at either end.
  assert.deepEqual(
    [
      "\u200dDE",
      "DE\u200d",
      "D\u200cE",
      "\ufe0f",
      "\u2764\ufe0f\ufe0f",
      "\u{1f468}\u200d",
      "\u{e0067}\u{e007f}",
      "\u{1f3f4}\u{e0067}\u{e0062}",
      "\u0645\u06cc\u200cA",
      "\u0645\u06cc\u200c",
      "\u3000\u6771\u4eac",
      "\u6771\u4eac\u3000",
    ].map((country) => groupLabel({ country })),
    [
      '"\\u200dDE"',
      '"DE\\u200d"',
      '"D\\u200cE"',
      '"\\ufe0f"',
      '"\u2764\ufe0f\\ufe0f"',
      '"\u{1f468}\\u200d"',
      '"\\u{e0067}\\u{e007f}"',
      '"\u{1f3f4}\\u{e0067}\\u{e0062}"',
      '"\u0645\u06cc\\u200cA"',
      '"\u0645\u06cc\\u200c"',
      '"\\u3000\u6771\u4eac"',
      '"\u6771\u4eac\\u3000"',
    ],
  );
  assert.equal(
    shownText("ab \u202ecd\u202c \u2067ef\u2069 \u200fgh\u200b"),
    "ab \\u202ecd\\u202c \\u2067ef\\u2069 \u200fgh\u200b",
  );
});

Deno.test("groupLabel(), formatRate(), durationMs() and the counter description read as shown", () => {
  assert.equal(groupLabel({}), "(all)");
  // Several values each isolated (U+2068 … U+2069): right-to-left text in one moves no other.
  assert.equal(groupLabel({ country: "DE", device: null }), "\u2068DE\u2069 · \u2068null\u2069");
  assert.deepEqual([0, 0.44, 2, 12.6, 1250].map(formatRate), ["0", "0.4", "2", "13", "1,250"]);
  assert.equal(durationMs("1h30m"), 5_400_000);
  assert.equal(durationMs("nonsense"), null);
  const hopping = {
    window: { hopping: "1h", every: "5m" },
    groupBy: ["country"],
    aggregate: { sum: "amount" },
  };
  assert.equal(describeCounter(hopping), "sum(amount) by country · hopping 1h every 5m");
  assert.equal(windowStepMs(hopping), 300_000);
  // A field path with an invisible or reordering character is quoted, with it as its escape; so
  // it reads apart from a field named with the escape's text (a backslash, `u200b`), which reads
  // bare, and from one named with the quoted text, which is quoted itself.
  assert.equal(
    describeCounter({ ...hopping, groupBy: ["country\u200b", "\u202eab"] }),
    'sum(amount) by "country\\u200b", "\\u202eab" · hopping 1h every 5m',
  );
  assert.deepEqual(
    ["country\u200b", "country\\u200b", '"country\\u200b"', "country ", "", "می\u200cخواهم"].map(
      (path) =>
        describeCounter({ ...hopping, groupBy: [path] }).slice(
          "sum(amount) by ".length,
          -" · hopping 1h every 5m".length,
        ),
    ),
    [
      '"country\\u200b"',
      "country\\u200b",
      '"\\"country\\\\u200b\\""',
      '"country "',
      '""',
      "می\u200cخواهم",
    ],
  );
  assert.equal(
    describeCounter({ ...hopping, aggregate: { sum: "amount\u200b" } }),
    'sum("amount\\u200b") by country · hopping 1h every 5m',
  );
  assert.equal(windowStepMs({ window: { sliding: "10m", precision: "1m" } }), 60_000);
  assert.equal(
    describeCounter({ window: { session: "30m" }, groupBy: ["user"], aggregate: "count" }),
    "count by user · sessions, gap 30m",
  );
});

Deno.test("CounterSeries of a count draws the rest summed: the server's others plus the groups not drawn", () => {
  const series = new CounterSeries(10, { additive: true });
  const t0 = "2026-01-01T00:00:00.000Z";
  const t1 = "2026-01-01T00:01:00.000Z";
  series.set({ start: t0, group: { country: "DE" }, value: 9 });
  series.set({ start: t0, group: { country: "FR" }, value: 4 });
  series.set({ start: t1, group: { country: "FR" }, value: 2 });
  series.setOthers({ start: t0, value: 3 });
  series.setOthers({ start: t1, value: null });
  const { labels, keys, data, rest } = series.chartData(1);
  assert.deepEqual(labels, ["DE", "others (the rest summed)"]);
  assert.deepEqual([keys, rest], [['{"country":"DE"}'], true]);
  assert.deepEqual(data.slice(1), [[9, null], [7, 2]]);
  // Everything drawn and no rest from the server: no others line.
  const all = new CounterSeries(10, { additive: true });
  all.set({ start: t0, group: { country: "DE" }, value: 9 });
  all.setOthers({ start: t0, value: null });
  assert.deepEqual(all.chartData(5).labels, ["DE"]);
  assert.equal(all.chartData(5).rest, false);
  // Values that do not add up (min, max, avg, distinct, quantiles) get no summed line.
  const max = new CounterSeries(10);
  max.set({ start: t0, group: { country: "DE" }, value: 9 });
  max.set({ start: t0, group: { country: "FR" }, value: 4 });
  max.setOthers({ start: t0, value: 3 });
  assert.deepEqual(max.chartData(1).labels, ["DE"]);
});

Deno.test("a quantiles counter's value is drawn and shown as its p99", () => {
  const series = new CounterSeries(10);
  const value = { count: 3, min: 1, max: 90, p50: 2, p99: 88.5, approximate: true };
  series.set({ start: "2026-01-01T00:00:00.000Z", group: {}, value });
  assert.deepEqual(series.chartData(1).data[1], [88.5]);
  assert.equal(chartValue(value), 88.5);
  assert.equal(formatValue(value), "88.5");
});

Deno.test("CounterSeries lists the partial windows drawn (a group's row or the others' marks one), until cleared", () => {
  const series = new CounterSeries(2);
  const at = (minute: number) => new Date(Date.UTC(2026, 0, 1, 10, minute)).toISOString();
  series.set({ start: at(0), group: { country: "DE" }, value: 1, partial: true });
  series.set({ start: at(1), group: { country: "DE" }, value: 2, partial: true });
  series.set({ start: at(1), group: { country: "FR" }, value: 2 });
  series.set({ start: at(2), group: { country: "FR" }, value: 3 });
  series.setOthers({ start: at(2), value: 4, partial: true });
  // Minute 0 is no longer drawn (2 windows kept).
  assert.deepEqual(series.partialStarts(), [at(1), at(2)].map((start) => Date.parse(start) / 1000));
  series.clear();
  series.set({ start: at(2), group: { country: "FR" }, value: 3 });
  assert.deepEqual(series.partialStarts(), []);
});

Deno.test("CounterSeries tells a group named others from the rest summed: its key, and a label of its own for the rest", () => {
  const series = new CounterSeries(10, { additive: true });
  const start = "2026-01-01T00:00:00.000Z";
  series.set({ start, group: { country: "others" }, value: 9 });
  series.set({ start, group: { country: "DE" }, value: 4 });
  const { labels, keys, rest } = series.chartData(1);
  assert.deepEqual(labels, ["others", "others (the rest summed)"]);
  assert.deepEqual(keys, [groupKey({ country: "others" })]);
  assert.equal(rest, true);
});
