import assert from "node:assert/strict";
import fc from "fast-check";
import {
  addValue,
  type AggregateState,
  aggregateValue,
  canonicalJson,
  distinctKey,
  emptyState,
  mergeState,
  quantileName,
} from "../../src/window/mod.ts";

function stateOf(values: Array<number | undefined>): AggregateState {
  const state = emptyState();
  for (const value of values) addValue(state, value);
  return state;
}

Deno.test("emptyState() has nothing counted", () => {
  assert.deepEqual(emptyState(), {
    count: 0,
    sum: 0,
    min: null,
    max: null,
    distinct: 0,
    approximate: false,
  });
  const a = emptyState();
  a.count = 5;
  assert.equal(emptyState().count, 0, "each call returns a fresh state");
});

Deno.test("addValue() counts, sums and tracks the extremes", () => {
  assert.deepEqual(stateOf([3, -2, 10]), {
    count: 3,
    sum: 11,
    min: -2,
    max: 10,
    distinct: 0,
    approximate: false,
  });
  assert.deepEqual(stateOf([0]), { ...emptyState(), count: 1, sum: 0, min: 0, max: 0 });
});

Deno.test("addValue() without a value only counts", () => {
  assert.deepEqual(stateOf([undefined, undefined]), { ...emptyState(), count: 2 });
  assert.deepEqual(stateOf([undefined, 4]), { ...emptyState(), count: 2, sum: 4, min: 4, max: 4 });
});

Deno.test("mergeState() adds counts and sums and keeps the extremes", () => {
  const into = stateOf([5, 7]);
  mergeState(into, stateOf([1, 9]));
  assert.deepEqual(into, { ...emptyState(), count: 4, sum: 22, min: 1, max: 9 });
});

Deno.test("mergeState() with an empty side keeps the other side's extremes", () => {
  const into = emptyState();
  mergeState(into, stateOf([3]));
  assert.deepEqual(into, stateOf([3]));
  const full = stateOf([3, 4]);
  mergeState(full, emptyState());
  assert.deepEqual(full, stateOf([3, 4]));
});

Deno.test("mergeState() marks the result approximate if either side is, and leaves distinct alone", () => {
  const into = { ...emptyState(), distinct: 2 };
  mergeState(into, { ...emptyState(), distinct: 5, approximate: true });
  assert.equal(into.approximate, true);
  assert.equal(into.distinct, 2);
  const exact = emptyState();
  mergeState(exact, emptyState());
  assert.equal(exact.approximate, false);
});

Deno.test("mergeState() of two parts equals adding every value to one state", () => {
  const values = fc.array(fc.option(fc.integer({ min: -1e6, max: 1e6 }), { nil: undefined }));
  fc.assert(
    fc.property(values, values, (left, right) => {
      const merged = stateOf(left);
      mergeState(merged, stateOf(right));
      assert.deepEqual(merged, stateOf([...left, ...right]));
    }),
  );
});

Deno.test("aggregateValue() reports the value of each aggregate kind", () => {
  const state = { ...stateOf([2, 4, 9]), distinct: 2 };
  assert.equal(aggregateValue({ kind: "count" }, state), 3);
  assert.equal(aggregateValue({ kind: "sum", field: "v" }, state), 15);
  assert.equal(aggregateValue({ kind: "min", field: "v" }, state), 2);
  assert.equal(aggregateValue({ kind: "max", field: "v" }, state), 9);
  assert.equal(aggregateValue({ kind: "avg", field: "v" }, state), 5);
  assert.equal(aggregateValue({ kind: "distinct", field: "v" }, state), 2);
});

Deno.test("aggregateValue() is null where no value exists", () => {
  const empty = emptyState();
  assert.equal(aggregateValue({ kind: "count" }, empty), 0);
  assert.equal(aggregateValue({ kind: "sum", field: "v" }, empty), 0);
  assert.equal(aggregateValue({ kind: "min", field: "v" }, empty), null);
  assert.equal(aggregateValue({ kind: "max", field: "v" }, empty), null);
  assert.equal(aggregateValue({ kind: "avg", field: "v" }, empty), null);
  assert.equal(aggregateValue({ kind: "distinct", field: "v" }, empty), 0);
});

Deno.test("distinctKey() keeps values of different types apart", () => {
  assert.notEqual(distinctKey(1), distinctKey("1"));
  assert.notEqual(distinctKey(true), distinctKey("true"));
  assert.notEqual(distinctKey(null), distinctKey("null"));
  assert.equal(distinctKey("a"), distinctKey("a"));
  assert.equal(distinctKey({ a: [1, 2] }), distinctKey({ a: [1, 2] }));
  assert.notEqual(distinctKey([1, 2]), distinctKey([2, 1]));
});

Deno.test("distinctKey() gives two values the same key exactly when their JSON is the same", () => {
  const value = fc.oneof(
    fc.string({ unit: "binary" }),
    fc.string({ unit: "grapheme-ascii", maxLength: 3 }),
    fc.constantFrom("\u0000", "\u00001", '\u0000"a"', "1", "true", "null", "\ud800"),
    fc.integer({ min: -3, max: 3 }),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
  );
  fc.assert(
    fc.property(value, value, (a, b) => {
      assert.equal(distinctKey(a) === distinctKey(b), JSON.stringify(a) === JSON.stringify(b));
      assert.ok(distinctKey(a).isWellFormed(), "keys must survive JSON on the way to Redis");
    }),
    { numRuns: 5000 },
  );
});

/** The same JSON value with every object's keys in reverse order. */
function reversedKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reversedKeys);
  if (typeof value !== "object" || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).reverse()) {
    Object.defineProperty(out, key, {
      value: reversedKeys((value as Record<string, unknown>)[key]),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return out;
}

Deno.test("canonicalJson() is JSON text of the same value, one text whatever order keys come in", () => {
  fc.assert(
    fc.property(fc.jsonValue(), (value) => {
      const text = canonicalJson(value);
      assert.deepEqual(JSON.parse(text), JSON.parse(JSON.stringify(value)));
      assert.equal(canonicalJson(reversedKeys(value)), text);
    }),
    { numRuns: 2000 },
  );
  assert.equal(
    canonicalJson({ b: 1, a: [{ d: null, c: "x" }] }),
    '{"a":[{"c":"x","d":null}],"b":1}',
  );
  assert.equal(canonicalJson(JSON.parse('{"__proto__": 1, "a": 2}')), '{"__proto__":1,"a":2}');
  assert.notEqual(canonicalJson([1, 2]), canonicalJson([2, 1]));
  assert.equal(distinctKey({ a: 1, b: 2 }), distinctKey({ b: 2, a: 1 }));
});

Deno.test("quantileName() moves the point of q's decimal two places, no digit rounded away or changed", () => {
  const cases: Array<[number, string]> = [
    [0, "p0"],
    [1, "p100"],
    [0.5, "p50"],
    [0.29, "p29"],
    [0.001, "p0.1"],
    [0.9999999999999, "p99.99999999999"],
    [1e-7, "p0.00001"],
    // Plain decimal, as README says and `by=` takes: JavaScript prints 1e-7 for the percentage.
    [1e-9, "p0.0000001"],
    [5e-324, `p0.${"0".repeat(321)}5`],
    // The nearest double to 80.29312186167659 prints as 80.2931218616766 (the name of the next q).
    [0.8029312186167659, "p80.29312186167659"],
    [0.802931218616766, "p80.2931218616766"],
    [0.12345678901234568, "p12.345678901234568"],
  ];
  for (const [q, name] of cases) assert.equal(quantileName(q), name, String(q));
  // Two quantiles are two names: a read may ask for both.
  fc.assert(fc.property(fc.double({ min: 0, max: 1, noNaN: true }), (q) => {
    const name = quantileName(q);
    assert.equal(
      Number(name.slice(1)),
      Number(`${String(q).split("e")[0]}e${Number(String(q).split("e")[1] ?? 0) + 2}`),
    );
    assert.match(name, /^p\d+(\.\d+)?$/);
  }));
});
