import assert from "node:assert/strict";
import fc from "fast-check";
import { compileConfig } from "../../src/config/mod.ts";
import { evalAtRoot } from "../_eval.ts";
import { type BatchUpdates, OTHER_GROUP } from "../../src/store/types.ts";
import {
  canonicalJson,
  type CompiledCounter,
  counterCell,
  decodeGroup,
  distinctKey,
  groupKey,
  MAX_VALUE,
  writeCounterCell,
} from "../../src/window/mod.ts";

/** Compiles one counter of a stream; pane width 1 minute. */
function compileCounter(definition: Record<string, unknown>): CompiledCounter {
  const streams = compileConfig({
    streams: {
      s: {
        counters: {
          other: { window: { tumbling: "1h" }, aggregate: "count" },
          x: { window: { tumbling: "1m" }, ...definition },
        },
      },
    },
  });
  return streams.get("s")!.counters[1];
}

const T = Date.parse("2026-01-01T00:10:30Z");
const PANE = Date.parse("2026-01-01T00:10:00Z");

Deno.test("counterCell() gives a count its counter index, pane and group", () => {
  const counter = compileCounter({ aggregate: "count", groupBy: ["country", "user.tier"] });
  assert.deepEqual(counterCell(counter, { country: "DE", user: { tier: 2 } }, T), {
    counter: 1,
    pane: PANE,
    group: '["DE",2]',
  });
});

Deno.test("counterCell() groups a missing group field as null", () => {
  const counter = compileCounter({ aggregate: "count", groupBy: ["country", "city"] });
  assert.deepEqual(counterCell(counter, { country: "DE" }, T), {
    counter: 1,
    pane: PANE,
    group: '["DE",null]',
  });
  assert.deepEqual(counterCell(counter, { country: "DE", city: null }, T), {
    counter: 1,
    pane: PANE,
    group: '["DE",null]',
  });
});

Deno.test("counterCell() without groupBy puts every event in the empty group", () => {
  const counter = compileCounter({ aggregate: "count" });
  assert.deepEqual(counterCell(counter, { anything: 1 }, T), {
    counter: 1,
    pane: PANE,
    group: "[]",
  });
});

Deno.test("counterCell() carries the numeric value of sum, min, max and avg", () => {
  for (const kind of ["sum", "min", "max", "avg"]) {
    const counter = compileCounter({ aggregate: { [kind]: "order.amount" } });
    assert.deepEqual(
      counterCell(counter, { order: { amount: -2.5 } }, T),
      { counter: 1, pane: PANE, group: "[]", value: -2.5 },
      kind,
    );
  }
});

Deno.test("counterCell() skips the counter when the value is missing or null", () => {
  for (const kind of ["sum", "min", "max", "avg", "distinct"]) {
    const counter = compileCounter({ aggregate: { [kind]: "amount" } });
    assert.equal(counterCell(counter, {}, T), null, kind);
    assert.equal(counterCell(counter, { amount: null }, T), null, kind);
  }
});

Deno.test("counterCell() refuses a value that is not a number, naming the field", () => {
  const counter = compileCounter({ aggregate: { sum: "amount" } });
  const cases: Array<[unknown, string]> = [
    ["12", "a string"],
    [true, "a boolean"],
    [[1], "an array"],
    [{ v: 1 }, "an object"],
  ];
  for (const [value, described] of cases) {
    assert.deepEqual(counterCell(counter, { amount: value }, T), {
      path: "amount",
      message: `Counter 'x' (sum) needs a number, got ${described}`,
    });
  }
});

Deno.test("counterCell() refuses values beyond the safe integer range", () => {
  const counter = compileCounter({ aggregate: { max: "amount" } });
  assert.deepEqual(counterCell(counter, { amount: MAX_VALUE }, T), {
    counter: 1,
    pane: PANE,
    group: "[]",
    value: Number.MAX_SAFE_INTEGER,
  });
  assert.deepEqual(counterCell(counter, { amount: -MAX_VALUE }, T), {
    counter: 1,
    pane: PANE,
    group: "[]",
    value: -Number.MAX_SAFE_INTEGER,
  });
  for (const amount of [MAX_VALUE + 2, -(MAX_VALUE + 2), 1e300]) {
    assert.deepEqual(counterCell(counter, { amount }, T), {
      path: "amount",
      message: `Counter 'x' (max) accepts values up to ±${MAX_VALUE}, got ${amount}`,
    });
  }
});

Deno.test("counterCell() refuses infinite values, as JSON.parse makes from 1e400", () => {
  const counter = compileCounter({ aggregate: { sum: "amount" } });
  for (const amount of [JSON.parse("1e400"), -Infinity, Number.NaN]) {
    const error = counterCell(counter, { amount }, T);
    assert.ok(error !== null && "message" in error, String(amount));
    assert.equal(error.path, "amount");
    assert.match(error.message, /^Counter 'x' \(sum\) /);
    assert.ok(!error.message.endsWith("got a number"), error.message);
  }
});

Deno.test("counterCell() refuses a group or distinct value holding a number JSON cannot write (1e400), naming the field", () => {
  const grouped = compileCounter({ groupBy: ["g"], aggregate: "count" });
  const two = compileCounter({ groupBy: ["h", "g"], aggregate: "count" });
  const distinct = compileCounter({ aggregate: { distinct: "u" } });
  for (const bad of [JSON.parse("1e400"), -Infinity, { a: [1, JSON.parse("-1e999")] }]) {
    for (
      const [counter, event, path] of [
        [grouped, { g: bad }, "g"],
        [two, { h: "x", g: bad }, "g"],
        [distinct, { u: bad }, "u"],
      ] as const
    ) {
      const error = counterCell(counter, event, T);
      assert.ok(error !== null && "message" in error, JSON.stringify(event));
      assert.equal(error.path, path);
      assert.match(error.message, /^Counter 'x' .*out of range \(JSON reads 1e400 as Infinity\)$/);
      const columns = { panes: [], groups: [], values: [] } as unknown as BatchUpdates;
      assert.deepEqual(writeCounterCell(counter, event, T, columns, 0), error);
    }
  }
  // A counter the event skips (its value missing) does not look at its group.
  const sum = compileCounter({ groupBy: ["g"], aggregate: { sum: "v" } });
  assert.equal(counterCell(sum, { g: Infinity }, T), null);
  // The largest double is a number like any other.
  const update = counterCell(grouped, { g: 1.7976931348623157e308 }, T);
  assert.ok(update !== null && "group" in update);
  assert.equal(update.group, "[1.7976931348623157e+308]");
});

Deno.test("counterCell() gives distinct the canonical text of any value", () => {
  const counter = compileCounter({ aggregate: { distinct: "user" }, groupBy: ["country"] });
  const update = (user: unknown) => {
    const update = counterCell(counter, { user, country: "FR" }, T);
    assert.ok(update !== null && "pane" in update);
    return update;
  };
  assert.deepEqual(update("ann"), { counter: 1, pane: PANE, group: '["FR"]', value: "ann" });
  assert.notEqual(update(1).value, update("1").value);
  assert.equal(update(1).value, distinctKey(1));
  assert.equal(update({ id: 1 }).value, '\u0000{"id":1}');
  assert.equal(update(false).value, "\u0000false");
});

Deno.test("counterCell() puts the event in the pane of its counter's window", () => {
  const hopping = compileCounter({
    window: { hopping: "10m", every: "4m" },
    aggregate: "count",
  });
  // Panes of gcd(10m, 4m) = 2m.
  const paneOf = (timeMs: number) => {
    const update = counterCell(hopping, {}, timeMs);
    assert.ok(update !== null && "pane" in update);
    return update.pane;
  };
  assert.equal(paneOf(Date.parse("2026-01-01T00:11:59.999Z")), Date.parse("2026-01-01T00:10:00Z"));
  assert.equal(paneOf(-1), -120_000);
});

Deno.test("groupKey() keeps no long group values: 2,000 distinct values of 60 KB leave the heap under 24 MB larger", async () => {
  // Its cache of built keys held each value and its key until 10,000 were held: 240 MB after
  // 2,000 events grouped by a 60 KB string (a transform's `set` can build longer ones).
  const { code, stdout, stderr } = await evalAtRoot(
    `
    import { groupKey } from "./src/window/mod.ts";
    const heap = () => { gc(); gc(); return Deno.memoryUsage().heapUsed; };
    const before = heap();
    let keys = 0;
    for (let i = 0; i < 2000; i++) {
      const value = String(i).padStart(6, "0") + "a".repeat(60000);
      if (groupKey([value]) === '["' + value + '"]') keys++;
    }
    console.log(JSON.stringify({ grown: heap() - before, keys }));
    `,
    { flags: ["--v8-flags=--expose-gc"] },
  );
  assert.equal(code, 0, stderr);
  const { grown, keys } = JSON.parse(stdout);
  assert.equal(keys, 2000);
  assert.ok(grown < 24_000_000, `the heap grew ${grown} bytes over 2,000 group values of 60 KB`);
});

Deno.test("groupKey() is the JSON text of the group values; values all reading __other__ are the overflow group", () => {
  assert.equal(groupKey([]), "[]");
  assert.equal(groupKey(["DE", null, 1]), '["DE",null,1]');
  assert.notEqual(groupKey([1]), groupKey(["1"]));
  // The overflow group reads __other__ in every field: a group of such values is that group.
  assert.equal(groupKey([OTHER_GROUP]), OTHER_GROUP);
  assert.equal(groupKey([OTHER_GROUP, OTHER_GROUP]), OTHER_GROUP);
  assert.equal(groupKey([OTHER_GROUP, "x"]), `["${OTHER_GROUP}","x"]`);
  const two = compileCounter({
    window: { tumbling: "1m" },
    groupBy: ["g", "h"],
    aggregate: "count",
  });
  const cell = (event: Record<string, unknown>) =>
    (counterCell(two, event, 0) as { group: string }).group;
  assert.equal(cell({ g: OTHER_GROUP, h: OTHER_GROUP }), OTHER_GROUP);
  assert.equal(cell({ g: OTHER_GROUP, h: null }), `["${OTHER_GROUP}",null]`);
  assert.deepEqual(decodeGroup(["g", "h"], cell({ g: OTHER_GROUP, h: OTHER_GROUP })), {
    g: OTHER_GROUP,
    h: OTHER_GROUP,
  });
});

Deno.test("counterCell() groups by the JSON text of the fields' values (objects' keys in one order), missing ones as null", () => {
  const one = compileCounter({ window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" });
  const two = compileCounter({
    window: { tumbling: "1m" },
    groupBy: ["g", "h"],
    aggregate: "count",
  });
  const none = compileCounter({ window: { tumbling: "1m" }, aggregate: "count" });
  const groupOf = (counter: CompiledCounter, event: Record<string, unknown>) => {
    const update = counterCell(counter, event, 0);
    assert.ok(update !== null && "group" in update);
    return update.group;
  };
  fc.assert(fc.property(fc.jsonValue(), fc.jsonValue(), (g, h) => {
    // Twice each: the first reading of a string may fill the cache of single-string groups.
    for (let i = 0; i < 2; i++) {
      assert.equal(groupOf(one, { g }), canonicalJson([g]));
      // The same JSON value (JSON writes -0 as 0).
      assert.deepEqual(JSON.parse(groupOf(one, { g })), JSON.parse(JSON.stringify([g])));
      assert.equal(groupOf(two, { g, h }), canonicalJson([g, h]));
      assert.equal(groupOf(two, { h }), canonicalJson([null, h]));
      assert.equal(groupOf(none, { g }), "[]");
    }
    assert.equal(groupOf(one, {}), "[null]");
  }));
});

Deno.test("decodeGroup() maps group values back to their fields", () => {
  assert.deepEqual(decodeGroup(["country", "city"], '["DE",null]'), { country: "DE", city: null });
  assert.deepEqual(decodeGroup(["n"], "[1]"), { n: 1 });
  assert.deepEqual(decodeGroup(["a", "b"], '["x"]'), { a: "x", b: null });
  assert.deepEqual(decodeGroup([], "[]"), {});
  const values = ["DE", 2, true, null, { nested: [1] }];
  const fields = ["a", "b", "c", "d", "e"];
  assert.deepEqual(decodeGroup(fields, groupKey(values)), {
    a: "DE",
    b: 2,
    c: true,
    d: null,
    e: { nested: [1] },
  });
});

Deno.test("decodeGroup() shows the overflow group as __other__ in every field", () => {
  assert.deepEqual(decodeGroup(["country", "city"], OTHER_GROUP), {
    country: OTHER_GROUP,
    city: OTHER_GROUP,
  });
  assert.deepEqual(decodeGroup(["country"], '["__other__"]'), { country: "__other__" });
});

Deno.test("groupKey() equals JSON.stringify for any list of values, including its fast path", () => {
  fc.assert(
    fc.property(
      fc.array(
        fc.oneof(
          fc.string({ unit: "binary" }),
          fc.string(),
          fc.integer(),
          fc.boolean(),
          fc.constant(null),
        ),
        {
          maxLength: 3,
        },
      ),
      (values) => {
        // (A list all of __other__ is the overflow group, above; fast-check makes none here.)
        fc.pre(values.length === 0 || values.some((value) => value !== OTHER_GROUP));
        assert.equal(groupKey(values), JSON.stringify(values));
      },
    ),
    { numRuns: 2000 },
  );
  assert.equal(groupKey(['a"b']), '["a\\"b"]');
  assert.equal(groupKey(["\u0001"]), '["\\u0001"]');
  assert.equal(groupKey(["\ud800"]), '["\\ud800"]');
});

Deno.test("groupKey() of one string asked for again, or after another string of the same length, is its own JSON text", () => {
  for (const value of ["DE", "DE", "FR", "FR", "DE", 'a"', "ab", "DE"]) {
    assert.equal(groupKey([value]), JSON.stringify([value]));
  }
});
