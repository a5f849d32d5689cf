import assert from "node:assert/strict";
import { Environment } from "@marcbachmann/cel-js";
import fc from "fast-check";
import { RE2JS } from "re2js";
import { evalAtRoot } from "../_eval.ts";
import { patternCompileSize } from "../../src/validate/mod.ts";
import {
  compileExpression,
  EvaluationBudgetError,
  evaluationMessage,
  ExpressionError,
  literalMatchesPatterns,
  MAX_EVALUATION_COST,
  MAX_EXPRESSION_LENGTH,
  MAX_EXPRESSION_PATTERN_SIZE,
  MAX_MATCHING_COST,
  MAX_REQUEST_PATTERN_COMPILE,
  PATTERN_COMPILE_OVERHEAD,
  toJson,
  variableFields,
} from "../../src/transform/cel.ts";

Deno.test("compileExpression() evaluates against the event it is given", () => {
  const isBig = compileExpression("event.amount > 100.0");
  assert.equal(isBig({ event: { amount: 250 } }), true);
  assert.equal(isBig({ event: { amount: 5 } }), false);
  const country = compileExpression("event.user.country");
  assert.equal(country({ event: { user: { country: "DE" } } }), "DE");
  assert.equal(compileExpression("has(event.x)")({ event: {} }), false);
});

Deno.test("compileExpression() declares the variables it is asked for", () => {
  const sum = compileExpression("a + b", ["a", "b"]);
  assert.equal(sum({ a: 1.5, b: 2.0 }), 3.5);
  assert.throws(() => compileExpression("event.x", ["a"]), {
    name: "ExpressionError",
    message: /^Invalid expression 'event\.x': Unknown variable: event$/,
  });
});

Deno.test("compileExpression() refuses bad syntax, unknown variables and unknown functions", () => {
  const bad: Array<[string, RegExp]> = [
    ["event.", /^Invalid expression 'event\.': /],
    ["1 +", /^Invalid expression '1 \+': /],
    ["other.flag", /^Invalid expression 'other\.flag': Unknown variable: other$/],
    ["nope(event.a)", /^Invalid expression 'nope\(event\.a\)': .*nope/],
    // cel-js's checker takes `optional` (its types are not enabled); its evaluator does not.
    [
      "optional.of(1).hasValue()",
      /^Invalid expression 'optional\.of\(1\)\.hasValue\(\)': Unknown variable: optional$/,
    ],
    ["optional", /^Invalid expression 'optional': Unknown variable: optional$/],
    ["optional.none()", /^Invalid expression 'optional\.none\(\)': Unknown variable: optional$/],
    [
      "[1].all(x, optional.of(x).hasValue())",
      /^Invalid expression '.*': Unknown variable: optional$/,
    ],
    // cel-js's `cel` namespace is a value only as `cel.bind`'s receiver: read otherwise, it was
    // accepted and failed every event (a filter's `got object`, `has(cel.x)` always false).
    ["cel", /^Invalid expression 'cel': Unknown variable: cel$/],
    ["cel == cel", /^Invalid expression 'cel == cel': Unknown variable: cel$/],
    ["has(cel.x)", /^Invalid expression 'has\(cel\.x\)': Unknown variable: cel$/],
    ["[cel].size() > 0", /^Invalid expression '.*': Unknown variable: cel$/],
    ["cel.bind(x, cel, x)", /^Invalid expression '.*': Unknown variable: cel$/],
    // The value `cel.bind` binds is read outside it, though it is an identifier.
    ["cel.bind(x, optional, x)", /^Invalid expression '.*': Unknown variable: optional$/],
  ];
  for (const [source, message] of bad) {
    assert.throws(() => compileExpression(source), (error: unknown) => {
      assert.ok(error instanceof ExpressionError, source);
      assert.equal(error.name, "ExpressionError");
      assert.match(error.message, message);
      assert.ok(!error.message.includes("\n"), "only the first line of CEL's message");
      return true;
    });
  }
});

Deno.test("compileExpression() refuses a map literal's key that cel-js would leave out of the map", () => {
  // cel-js builds `{'constructor': 1}` as `{}`: a `set` of it wrote nothing, silently.
  const refused: Array<[string, string]> = [
    ["{'__proto__': 1}", "__proto__"],
    ["{'a': 1, 'constructor': 2}", "constructor"],
    ["{'a': {'prototype': event.a}}", "prototype"],
    ["event.items.map(i, {'__proto__': i})", "__proto__"],
    ["cel.bind(m, {'constructor': 1}, m.size() == 0)", "constructor"],
  ];
  for (const [source, key] of refused) {
    assert.throws(() => compileExpression(source), (error: unknown) => {
      assert.ok(error instanceof ExpressionError, source);
      assert.equal(
        error.message,
        `Invalid expression '${source}': map key '${key}' is not allowed: it would be left out of the map (no event may hold that key either)`,
      );
      return true;
    });
  }
  // Other keys are kept, those of Object.prototype's methods too.
  const kept = compileExpression("{'toString': 1, 'constructors': 2, 'hasOwnProperty': 3}");
  assert.deepEqual(toJson(kept({ event: {} })), {
    toString: 1,
    constructors: 2,
    hasOwnProperty: 3,
  });
  assert.deepEqual(toJson(compileExpression("event.m")({ event: { m: { a: 1 } } })), { a: 1 });
});

Deno.test("a map literal's computed key that cel-js would leave out fails the evaluation", () => {
  // `{event.tag: 1}` of a tag `constructor` was `{}`: the field dropped, silently.
  const message = (key: string) =>
    `map key '${key}' is not allowed: it would be left out of the map (no event may hold that key either)`;
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ["{event.tag: 1}", { tag: "constructor" }, "constructor"],
    ["{'a': 1, event.tag: 2}", { tag: "__proto__" }, "__proto__"],
    ["event.tags.map(t, {t: 1})", { tags: ["a", "prototype"] }, "prototype"],
    ["{(has(event.tag) ? event.tag : 'none'): 1}", { tag: "constructor" }, "constructor"],
    ["{cel.bind(t, event.tag, t): 1}", { tag: "prototype" }, "prototype"],
  ];
  for (const [source, event, key] of cases) {
    const expression = compileExpression(source);
    // Twice: the check stays in place after a node's first run.
    for (let run = 0; run < 2; run++) {
      assert.throws(() => expression({ event }), (error: unknown) => {
        assert.equal(evaluationMessage(error), message(key), source);
        return true;
      });
    }
  }
  // Other keys, computed, are kept.
  const map = compileExpression("{event.tag: 1, event.n: 2}");
  assert.deepEqual(toJson(map({ event: { tag: "toString", n: 3 } })), { toString: 1, 3: 2 });
  assert.deepEqual(toJson(map({ event: { tag: "constructors", n: 3 } })), {
    constructors: 1,
    3: 2,
  });
});

Deno.test("compileExpression() refuses a map literal whose literal keys repeat, or would be one key", () => {
  // cel-js let the last one win: `{'a': 1, 'a': 2}` was `{a: 2}`, where CEL specifies an error
  // (cel-spec's `map_value_repeat_key`), and holds its keys as text: `{1: 'x', '1': 'y'}` was `{1: 'y'}`.
  const refused: Array<[string, string]> = [
    ["{'a': 1, 'a': 2}", "map key 'a' is repeated: a map may hold each key once"],
    ["{'a': 1, 'b': 2, 'a': 3}", "map key 'a' is repeated: a map may hold each key once"],
    ["{true: 1, false: 2, true: 3}", "map key true is repeated: a map may hold each key once"],
    ["{1: 'x', 1: 'y'}", "map key 1 is repeated: a map may hold each key once"],
    ["{-1: 'x', -1: 'y'}", "map key -1 is repeated: a map may hold each key once"],
    // CEL's numbers are equal keys across int, uint and double (`map_value_repeat_key_heterogeneous`).
    ["{0: 1, 0u: 2}", "map keys 0 and 0u are the same key, repeated: a map may hold each key once"],
    ["{0: 1, -0.0: 2}", "map key 0 is repeated: a map may hold each key once"],
    [
      "{1: 'x', '1': 'y'}",
      "map keys 1 and '1' would be one key: a map here holds its keys as text, so it cannot hold both",
    ],
    [
      "{true: 'x', 'true': 'y'}",
      "map keys true and 'true' would be one key: a map here holds its keys as text, so it cannot hold both",
    ],
    [
      "{b'x': 1, 120: 2}",
      "map keys bytes and 120 would be one key: a map here holds its keys as text, so it cannot hold both",
    ],
    // Wherever the map is, and with computed keys beside.
    ["{'a': {'c': 1, 'c': 2}}", "map key 'c' is repeated: a map may hold each key once"],
    [
      "event.items.map(i, {'k': i, event.x: 1, 'k': 2})",
      "map key 'k' is repeated: a map may hold each key once",
    ],
  ];
  for (const [source, reason] of refused) {
    assert.throws(() => compileExpression(source), (error: unknown) => {
      assert.ok(error instanceof ExpressionError, source);
      assert.equal(error.message, `Invalid expression '${source}': ${reason}`);
      return true;
    });
  }
  // Keys that differ are kept, as are equal keys of different maps.
  const kept = compileExpression("{'a': {'a': 1, 'b': 2}, 'b': 1, 1: 2, false: 3, 2u: 4, -1: 5}");
  assert.deepEqual(toJson(kept({ event: {} })), {
    a: { a: 1, b: 2 },
    b: 1,
    1: 2,
    false: 3,
    2: 4,
    "-1": 5,
  });
});

Deno.test("compileExpression() names the first problem of a map literal whose literal keys repeat and one would be left out", () => {
  const dropped =
    "map key 'constructor' is not allowed: it would be left out of the map (no event may hold that key either)";
  const repeated = "map key 'a' is repeated: a map may hold each key once";
  const cases: Array<[string, string]> = [
    // The repeat is written before the left-out key: it is named.
    ["{'a': 1, 'a': 2, 'constructor': 3}", repeated],
    // The left-out key is written before the repeat is complete (its second 'a'): it is named.
    ["{'constructor': 1, 'a': 2, 'a': 3}", dropped],
    ["{'a': 1, 'constructor': 2, 'a': 3}", dropped],
    ["{'constructor': 1, 'constructor': 2}", dropped],
  ];
  for (const [source, reason] of cases) {
    assert.throws(() => compileExpression(source), (error: unknown) => {
      assert.ok(error instanceof ExpressionError, source);
      assert.equal(error.message, `Invalid expression '${source}': ${reason}`);
      return true;
    });
  }
});

Deno.test("a map literal's computed key that repeats another, or would be one key with it, fails the evaluation", () => {
  // `{event.a: 1, event.b: 2}` of equal fields was one entry, the last, silently.
  const cases: Array<[string, Record<string, unknown>, string]> = [
    [
      "{event.a: 1, event.b: 2}",
      { a: "x", b: "x" },
      "map key 'x' is repeated: a map may hold each key once",
    ],
    ["{'x': 1, event.a: 2}", { a: "x" }, "map key 'x' is repeated: a map may hold each key once"],
    ["{event.a: 1, 'x': 2}", { a: "x" }, "map key 'x' is repeated: a map may hold each key once"],
    // A JSON number is a double, and equal to the int 1 as a key.
    ["{event.n: 1, 1: 2}", { n: 1 }, "map key 1 is repeated: a map may hold each key once"],
    [
      "{event.n: 1, '1': 2}",
      { n: 1 },
      "map keys 1 and '1' would be one key: a map here holds its keys as text, so it cannot hold both",
    ],
    [
      "{event.a: 1, event.b: 2}",
      { a: true, b: "true" },
      "map keys true and 'true' would be one key: a map here holds its keys as text, so it cannot hold both",
    ],
    // In a macro, whose nodes pay into the budget, and in a map inside another.
    [
      "event.items.map(i, {i: 1, 'k': 2})",
      { items: ["a", "k"] },
      "map key 'k' is repeated: a map may hold each key once",
    ],
    [
      "{event.a: {event.a: 1, 'x': 2}, 'y': 3}",
      { a: "x" },
      "map key 'x' is repeated: a map may hold each key once",
    ],
    [
      "cel.bind(k, event.a, {k: 1, event.b: 2})",
      { a: "x", b: "x" },
      "map key 'x' is repeated: a map may hold each key once",
    ],
  ];
  for (const [source, event, message] of cases) {
    const expression = compileExpression(source);
    // Twice: the check stays in place after a node's first run.
    for (let run = 0; run < 2; run++) {
      assert.throws(() => expression({ event }), (error: unknown) => {
        assert.equal(evaluationMessage(error), message, source);
        return true;
      });
    }
  }
  // Keys that differ are kept; each evaluation, and each map a macro builds, starts with none held
  // (after a failed one too).
  const map = compileExpression("{event.a: 1, event.b: 2, 'z': 3}");
  assert.throws(() => map({ event: { a: "x", b: "x" } }));
  assert.deepEqual(toJson(map({ event: { a: "x", b: "y" } })), { x: 1, y: 2, z: 3 });
  assert.deepEqual(toJson(map({ event: { a: "y", b: "x" } })), { y: 1, x: 2, z: 3 });
  const built = compileExpression("event.items.map(i, {i: 1, 'k': 2})");
  assert.deepEqual(toJson(built({ event: { items: ["a", "a"] } })), [{ a: 1, k: 2 }, {
    a: 1,
    k: 2,
  }]);
});

Deno.test("compileExpression() takes `optional` and `cel` as a macro's own variable or a field's name", () => {
  const macro = compileExpression("event.items.all(optional, optional > 0)");
  assert.equal(macro({ event: { items: [1, 2] } }), true);
  const bound = compileExpression("cel.bind(optional, event.a, optional + 1)");
  assert.equal(bound({ event: { a: 1 } }), 2);
  // As `cel` is, as a method call's receiver or a macro's own variable.
  assert.equal(compileExpression("cel.bind(x, event.a, x + 1)")({ event: { a: 1 } }), 2);
  assert.equal(compileExpression("cel.bind(cel, event.a, cel + 1)")({ event: { a: 1 } }), 2);
  assert.equal(compileExpression("event.items.all(cel, cel > 0)")({ event: { items: [1] } }), true);
  assert.equal(compileExpression("event.cel")({ event: { cel: 3 } }), 3);
  assert.equal(compileExpression("event.optional")({ event: { optional: 2 } }), 2);
});

Deno.test("substring, indexOf and lastIndexOf count code points, as size() does, and upperAscii/lowerAscii change ASCII only", () => {
  const run = (source: string, event: Record<string, unknown> = {}) =>
    compileExpression(source)({ event });
  // cel-js counted UTF-16 units: 2, 2 and a lone surrogate.
  assert.equal(run("'😀a'.indexOf('a')"), 1n);
  assert.equal(run("'😀a'.lastIndexOf('a')"), 1n);
  assert.equal(run("event.s.substring(0, 1)", { s: "😀x" }), "😀");
  assert.equal(run("event.s.substring(1)", { s: "😀x" }), "x");
  assert.equal(run("event.s.substring(1, 3)", { s: "a😀b" }), "😀b");
  assert.equal(run("event.s.indexOf('a', 1)", { s: "😀a😀a" }), 1n);
  assert.equal(run("event.s.indexOf('a', 2)", { s: "😀a😀a" }), 3n);
  assert.equal(run("event.s.lastIndexOf('a', 2)", { s: "😀a😀a" }), 1n);
  assert.equal(run("event.s.lastIndexOf('')", { s: "😀a" }), 2n);
  assert.equal(run("event.s.indexOf('z')", { s: "😀a" }), -1n);
  assert.deepEqual(run("event.l.map(x, x.substring(0, 1))", { l: ["😀x", "ab"] }), ["😀", "a"]);
  // Indices past the code points are out of range, with cel-js's own messages.
  const failures: Array<[string, string]> = [
    ["'😀'.substring(2)", "string.substring(start, end): start index out of range"],
    ["'😀a'.substring(0, 3)", "string.substring(start, end): end index out of range"],
    ["'😀a'.indexOf('a', 2)", "string.indexOf(search, fromIndex): fromIndex out of range"],
    ["'😀a'.lastIndexOf('a', 2)", "string.lastIndexOf(search, fromIndex): fromIndex out of range"],
  ];
  for (const [source, message] of failures) {
    assert.throws(() => run(source), (error: unknown) => {
      assert.equal(evaluationMessage(error), message, source);
      return true;
    });
  }
  // Strings of the Basic Multilingual Plane as before.
  assert.equal(run("'abc'.substring(1, 2)"), "b");
  assert.equal(run("'abcb'.lastIndexOf('b', 2)"), 1n);
  assert.equal(run("'é-a'.indexOf('a')"), 2n);
  // CEL changes ASCII letters only: cel-js gave `É`, `SS` and `à`.
  assert.equal(run("'éa'.upperAscii()"), "éA");
  assert.equal(run("event.s.upperAscii()", { s: "ßx" }), "ßX");
  assert.equal(run("'ÀB'.lowerAscii()"), "Àb");
  // Another receiver's method is cel-js's: no overload.
  assert.throws(() => run("event.s.substring(0)", { s: 1 }), /no matching overload/);
});

Deno.test("indexOf and lastIndexOf find no hit between the halves of a surrogate pair", () => {
  const run = (source: string, event: Record<string, unknown>) =>
    compileExpression(source)({ event });
  // An event may hold a lone surrogate: it matched the low half of 😀 (1, the position of b).
  assert.equal(run("event.s.indexOf(event.n)", { s: "😀b", n: "\uDE00" }), -1n);
  assert.equal(run("event.s.lastIndexOf(event.n)", { s: "😀b", n: "\uDE00" }), -1n);
  assert.equal(run("event.s.indexOf(event.n, 0)", { s: "😀b", n: "\uDE00" }), -1n);
  assert.equal(run("event.s.lastIndexOf(event.n, 1)", { s: "😀b", n: "\uDE00" }), -1n);
  // Nor one that ends there, on the high half.
  assert.equal(run("event.s.indexOf(event.n)", { s: "a😀", n: "a\uD83D" }), -1n);
  // A lone low surrogate of its own is still found, past the pair or before it.
  assert.equal(run("event.s.indexOf(event.n)", { s: "😀\uDE00", n: "\uDE00" }), 1n);
  assert.equal(run("event.s.lastIndexOf(event.n)", { s: "\uDE00😀", n: "\uDE00" }), 0n);
  assert.equal(run("event.s.indexOf(event.n)", { s: "😀x😀\uDE00", n: "\uDE00" }), 3n);
});

Deno.test("a timestamp + or - gives outside CEL's range (years 1 to 9999) fails with a timestamp overflow", () => {
  const cases: Array<[string, string]> = [
    // cel-js gave a Date of year 10000, stored as `+010000-01-01T00:00:00.000Z`.
    [
      "timestamp('9999-12-31T23:59:59Z') + duration('1s')",
      "timestamp overflow: +010000-01-01T00:00:00.000Z is outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
    ],
    [
      "duration('1h') + timestamp(event.t)",
      "timestamp overflow: +010000-01-01T00:30:00.000Z is outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
    ],
    [
      "timestamp('0001-01-01T00:00:00Z') - duration('1s') < timestamp(event.t)",
      "timestamp overflow: 0000-12-31T23:59:59.000Z is outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
    ],
    // cel-js checks this as a duration, and gives a timestamp.
    [
      "dyn(duration('1h')) + timestamp(event.t)",
      "timestamp overflow: +010000-01-01T00:30:00.000Z is outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z",
    ],
    // Past what a Date holds at all: its duration() fails first, as cel-go's.
    [
      "timestamp(event.t) + duration('9999999999999h')",
      "duration overflow: 35999999999996400s is outside what int64 nanoseconds hold (about 292 years either way)",
    ],
  ];
  const event = { t: "9999-12-31T23:30:00Z" };
  for (const [source, message] of cases) {
    assert.throws(() => compileExpression(source)({ event }), (error: unknown) => {
      assert.equal(evaluationMessage(error), message, source);
      return true;
    });
  }
  // Within it, to its last millisecond, as before.
  const last = compileExpression("timestamp(event.t) + duration('29m59.999s')")({ event });
  assert.equal((last as Date).toISOString(), "9999-12-31T23:59:59.999Z");
  assert.equal(
    compileExpression("timestamp(event.t) - duration('1h') < timestamp(event.t)")({ event }),
    true,
  );
});

Deno.test("a duration() or a duration + or - past int64 nanoseconds fails with a duration overflow, as cel-go", () => {
  const tail = "is outside what int64 nanoseconds hold (about 292 years either way)";
  const cases: Array<[string, string]> = [
    // cel-js gave 315506361600s.
    [
      "timestamp('9999-01-01T00:00:00Z') - timestamp('0001-01-01T00:00:00Z')",
      `duration overflow: 315506361600s ${tail}`,
    ],
    ["timestamp(event.a) - timestamp(event.b)", `duration overflow: -9467020800s ${tail}`],
    [
      "duration('2562047h') + duration('2562047h')",
      `duration overflow: 18446738400s ${tail}`,
    ],
    [
      "dyn(duration('-2562047h')) - duration('2562047h')",
      `duration overflow: -18446738400s ${tail}`,
    ],
    // cel-js parsed it as 35999999999996400s, which the comparison took.
    ["duration(event.d) > duration('1h')", `duration overflow: 35999999999996400s ${tail}`],
    ["duration('-9999999999999h')", `duration overflow: -35999999999996400s ${tail}`],
  ];
  const event = { a: "1700-01-01T00:00:00Z", b: "2000-01-01T00:00:00Z", d: "9999999999999h" };
  for (const [source, message] of cases) {
    assert.throws(() => compileExpression(source)({ event }), (error: unknown) => {
      assert.equal(evaluationMessage(error), message, source);
      return true;
    });
  }
  // Within it, to its last nanosecond (2^63 - 1), as before.
  const run = (source: string) => String(compileExpression(source)({ event }));
  assert.equal(
    run("duration('9223372036s') + duration('0.854775807s')"),
    "9223372036.854775807s",
  );
  const least = compileExpression("duration('-9223372036s') - duration('0.854775808s')")({
    event,
  }) as { seconds: bigint; nanos: number };
  assert.equal(least.seconds * 1_000_000_000n + BigInt(least.nanos), -(2n ** 63n));
  assert.equal(
    run("timestamp('2000-01-01T00:00:00Z') - timestamp('1800-01-01T00:00:00Z')"),
    "6311347200s",
  );
  assert.equal(run("duration('9223372036.854775807s')"), "9223372036.854775807s");
  assert.equal(run("duration('2562047h') > duration('1h')"), "true");
});

Deno.test("a list index that is not a whole number fails saying so, not that it is past the end", () => {
  const read = compileExpression("event.l[event.i]");
  // cel-js said `No such key: index out of bounds, index 1.5 >= size 2`.
  for (const index of [1.5, 0.5, NaN]) {
    assert.throws(() => read({ event: { l: [1, 2], i: index } }), (error: unknown) => {
      assert.equal(evaluationMessage(error), `Invalid list index ${index}: not a whole number`);
      return true;
    });
  }
  // A whole double is an index, as CEL's heterogeneous numbers have it; past the end as before.
  assert.equal(read({ event: { l: [1, 2], i: 1 } }), 2);
  assert.throws(
    () => read({ event: { l: [1, 2], i: 2 } }),
    /index out of bounds, index 2 >= size 2/,
  );
  // A map's key is the map's: as before.
  assert.throws(() => read({ event: { l: { a: 1 }, i: 1.5 } }), /No such key/);
  // A list the checker knows as a list, and a list inside one.
  for (const source of ["[1, 2][event.i]", "[[1, 2]][0][event.i]"]) {
    assert.throws(() => compileExpression(source)({ event: { i: 1.5 } }), (error: unknown) => {
      assert.equal(evaluationMessage(error), "Invalid list index 1.5: not a whole number", source);
      return true;
    });
  }
});

Deno.test("-x, x / -1 and x % -1 of the least int64 fail with an integer overflow, as cel-go", () => {
  // cel-js checked `+ - *` of ints but not these: each gave an int outside int64 (2^63) or 0.
  const cases: Array<[string, Record<string, unknown>, string]> = [
    // cel-js's own check of `+ - *`, as the README says.
    ["int(event.s) * 2", { s: "9223372036854775807" }, "integer overflow: 18446744073709551614"],
    ["-(-9223372036854775807 - 1)", {}, "integer overflow: -(-9223372036854775808)"],
    ["-9223372036854775808 / -1", {}, "integer overflow: -9223372036854775808 / -1"],
    ["-9223372036854775808 % -1", {}, "integer overflow: -9223372036854775808 % -1"],
    // Dynamic operands (checked per evaluation) and inside a macro, whose nodes pay the budget.
    [
      "-(dyn(int(event.s)))",
      { s: "-9223372036854775808" },
      "integer overflow: -(-9223372036854775808)",
    ],
    [
      "int(event.s) / dyn(-1) > 0",
      { s: "-9223372036854775808" },
      "integer overflow: -9223372036854775808 / -1",
    ],
    [
      "event.items.map(i, (-9223372036854775807 - int(i)) % -1).size() > 0",
      { items: [0, 1] },
      "integer overflow: -9223372036854775808 % -1",
    ],
  ];
  for (const [source, event, message] of cases) {
    assert.throws(() => compileExpression(source)({ event }), (error: unknown) => {
      assert.equal(evaluationMessage(error), message, source);
      return true;
    });
  }
  // Everything else as before: the literal -2^63, its quotient and remainder by others, doubles.
  assert.equal(compileExpression("-9223372036854775808")({ event: {} }), -(2n ** 63n));
  assert.equal(compileExpression("-(-9223372036854775807)")({ event: {} }), 2n ** 63n - 1n);
  assert.equal(compileExpression("-9223372036854775808 / 1")({ event: {} }), -(2n ** 63n));
  assert.equal(compileExpression("-9223372036854775808 / 2")({ event: {} }), -(2n ** 62n));
  assert.equal(compileExpression("-9223372036854775808 % 2")({ event: {} }), 0n);
  assert.equal(compileExpression("-7 / -1")({ event: {} }), 7n);
  assert.equal(compileExpression("-7 % -2")({ event: {} }), -1n);
  assert.equal(compileExpression("-event.a")({ event: { a: 3 } }), -3);
  assert.equal(compileExpression("event.a / -1")({ event: { a: -(2 ** 63) } }), 2 ** 63);
});

Deno.test("int() of a double outside (-2^63, 2^63) fails the evaluation, as CEL specifies", () => {
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ["int(event.big)", { big: 1e20 }, "int() of 100000000000000000000 is out of the int64 range"],
    ["int(event.big)", { big: -1e300 }, "int() of -1e+300 is out of the int64 range"],
    // 2^63 - 1 is no double: the literal is 2^63, one past the range.
    ["int(9223372036854775807.0)", {}, "int() of 9223372036854776000 is out of the int64 range"],
    // -2^63 is a double and an int64, but CEL's conformance tests (`double_int_min_range`) and
    // cel-go refuse it: a double's range is (-2^63, 2^63). -2^63 - 1 is the same double.
    ["int(-9223372036854775808.0)", {}, "int() of -9223372036854776000 is out of the int64 range"],
    ["int(-9223372036854775809.0)", {}, "int() of -9223372036854776000 is out of the int64 range"],
    [
      "int(event.big)",
      { big: -(2 ** 63) },
      "int() of -9223372036854776000 is out of the int64 range",
    ],
    ["int(event.big)", { big: 2 ** 63 }, "int() of 9223372036854776000 is out of the int64 range"],
    // Inside a macro, whose nodes pay into the budget, and under a comparison.
    [
      "event.items.all(i, int(i) > 0)",
      { items: [1, 1e19] },
      "int() of 10000000000000000000 is out of the int64 range",
    ],
    [
      "event.items.map(i, int(i)).size() > 0",
      { items: [1, 1e19] },
      "int() of 10000000000000000000 is out of the int64 range",
    ],
    [
      "cel.bind(x, int(event.big), x > 0)",
      { big: 1e20 },
      "int() of 100000000000000000000 is out of the int64 range",
    ],
    [
      "int(event.big) == 1",
      { big: 1e20 },
      "int() of 100000000000000000000 is out of the int64 range",
    ],
  ];
  for (const [source, event, message] of cases) {
    assert.throws(() => compileExpression(source)({ event }), (error: unknown) => {
      assert.equal(evaluationMessage(error), message, source);
      return true;
    });
  }
  // Within it, and for the ints and strings cel-js checks itself, as before.
  assert.equal(compileExpression("int(event.a)")({ event: { a: -2.7 } }), -2n);
  // The doubles nearest either bound, 1,024 within it, convert exactly.
  assert.equal(compileExpression("int(9223372036854774784.0)")({ event: {} }), 2n ** 63n - 1024n);
  assert.equal(
    compileExpression("int(-9223372036854774784.0)")({ event: {} }),
    -(2n ** 63n) + 1024n,
  );
  assert.equal(
    compileExpression("int(event.big)")({ event: { big: -(2 ** 63) + 1024 } }),
    -(2n ** 63n) + 1024n,
  );
  // -2^63 as a string or an int is in range; an infinite double is cel-js's own error.
  assert.equal(compileExpression("int('-9223372036854775808')")({ event: {} }), -(2n ** 63n));
  assert.equal(compileExpression("int(-9223372036854775808)")({ event: {} }), -(2n ** 63n));
  assert.throws(() => compileExpression("int(1.0 / 0.0)")({ event: {} }), (error) => {
    assert.equal(evaluationMessage(error), "int() type error: integer overflow");
    return true;
  });
  assert.equal(compileExpression("int(event.s)")({ event: { s: "42" } }), 42n);
});

Deno.test("uint() of a double outside [0, 2^64) fails the evaluation, as CEL specifies", () => {
  // cel-js truncated first: `uint(-0.5)` was 0, where cel-go refuses any negative double.
  const cases: Array<[string, Record<string, unknown>, string]> = [
    ["uint(-0.5)", {}, "uint() of -0.5 is out of the uint64 range"],
    ["uint(event.d)", { d: -0.5 }, "uint() of -0.5 is out of the uint64 range"],
    ["uint(event.d)", { d: -Number.MIN_VALUE }, "uint() of -5e-324 is out of the uint64 range"],
    ["uint(event.d)", { d: -1 }, "uint() of -1 is out of the uint64 range"],
    ["uint(event.d)", { d: 1e20 }, "uint() of 100000000000000000000 is out of the uint64 range"],
    // 2^64 - 1 is no double: the literal is 2^64, one past the range.
    [
      "uint(18446744073709551615.0)",
      {},
      "uint() of 18446744073709552000 is out of the uint64 range",
    ],
    // Inside a macro, whose nodes pay into the budget, and bound.
    [
      "event.items.all(i, uint(i) >= 0u)",
      { items: [1, -0.25] },
      "uint() of -0.25 is out of the uint64 range",
    ],
    [
      "cel.bind(x, uint(event.d), x > 0u)",
      { d: -0.5 },
      "uint() of -0.5 is out of the uint64 range",
    ],
  ];
  for (const [source, event, message] of cases) {
    assert.throws(() => compileExpression(source)({ event }), (error: unknown) => {
      assert.equal(evaluationMessage(error), message, source);
      return true;
    });
  }
  // Within it, as before: truncated; -0.0 is not below 0 (nor is it for cel-go).
  const uint = (source: string, event: Record<string, unknown> = {}) =>
    toJson(compileExpression(source)({ event }));
  assert.equal(uint("uint(event.d)", { d: 2.7 }), 2);
  assert.equal(uint("uint(-0.0)"), 0);
  assert.equal(uint("uint(event.d)", { d: -0 }), 0);
  assert.equal(
    (compileExpression("uint(18446744073709549568.0)")({ event: {} }) as object).valueOf(),
    2n ** 64n - 2048n,
  );
  // Ints and strings are cel-js's own to check; an infinite double its own error.
  assert.equal(uint("uint(event.s)", { s: "42" }), 42);
  for (
    const [source, message] of [
      ["uint(-1)", "uint() type error: cannot convert to uint"],
      ["uint('-1')", "uint() type error: cannot convert to uint"],
      ["uint(1.0 / 0.0)", "uint() type error: unsigned integer overflow"],
    ]
  ) {
    assert.throws(() => compileExpression(source)({ event: {} }), (error) => {
      assert.equal(evaluationMessage(error), message, source);
      return true;
    });
  }
});

Deno.test("a compiled expression throws when evaluation fails", () => {
  const missing = compileExpression("event.missing == 1.0");
  assert.throws(() => missing({ event: {} }), (error: unknown) => {
    assert.equal(evaluationMessage(error), "No such key: missing");
    return true;
  });
  const mistyped = compileExpression("event.amount + 1");
  assert.throws(() => mistyped({ event: { amount: "1" } }), (error: unknown) => {
    assert.equal(evaluationMessage(error), "no such overload: dyn<string> + int");
    return true;
  });
});

Deno.test("compileExpression() mixes int literals and JSON numbers in arithmetic and comparisons", () => {
  // JSON has one number type and CEL reads it as double, whether 150 or 12.5.
  const cases: Array<[string, unknown, unknown]> = [
    ["event.amount * 2", 300, 25],
    ["2 * event.amount", 300, 25],
    ["event.count + 1", 4, 3.5],
    ["1 + event.count", 4, 3.5],
    ["event.amount - 100", 50, -87.5],
    ["200 - event.amount", 50, 187.5],
    ["event.amount / 2", 75, 6.25],
    ["300 / event.amount", 2, 24],
    ["event.count % 2", 1, 0.5],
    ["7 % event.count", 1, 2],
    ["event.amount % event.count", 0, 0],
    ["event.amount > 100", true, false],
    ["event.amount <= 100", false, true],
    ["event.amount == 150", true, false],
    ["event.amount != 150", false, true],
    ["event.amount in [150, 1]", true, false],
    ["event.amount * 2 > 20 && event.count + 1 >= 3", true, true],
  ];
  for (const [source, whole, fractional] of cases) {
    const expression = compileExpression(source);
    assert.equal(expression({ event: { amount: 150, count: 3 } }), whole, `${source} on 150, 3`);
    assert.equal(
      expression({ event: { amount: 12.5, count: 2.5 } }),
      fractional,
      `${source} on 12.5, 2.5`,
    );
  }
});

Deno.test("compileExpression() keeps int arithmetic int and mixed arithmetic double", () => {
  assert.equal(compileExpression("1 + 2")({}), 3n);
  assert.equal(compileExpression("int(event.count) + 1")({ event: { count: 3 } }), 4n);
  assert.equal(
    compileExpression("size(event.tags) * event.amount")({
      event: { tags: [1, 2], amount: 1.5 },
    }),
    3,
  );
  assert.equal(compileExpression("1 + 2.5")({}), 3.5);
  assert.equal(compileExpression("type(1 + 2.5) == double")({}), true);
});

Deno.test("compileExpression() divides doubles by zero as IEEE does and refuses a remainder by zero", () => {
  assert.equal(compileExpression("event.amount / 0")({ event: { amount: 5 } }), Infinity);
  for (const source of ["event.count % 0", "event.count % 0.0", "7 % event.count"]) {
    const expression = compileExpression(source);
    assert.throws(() => expression({ event: { count: 0 } }), (error: unknown) => {
      assert.equal(evaluationMessage(error), "modulo by zero", source);
      return true;
    });
  }
});

Deno.test("compileExpression() refuses at load what is mistyped without an event, and not what depends on one", () => {
  for (const source of ['"a" + 1', "size(1)", "1 + true"]) {
    assert.throws(() => compileExpression(source), ExpressionError, source);
  }
  // Fields of `event` have the type of the value each event carries.
  for (const source of ["event.amount + 'x'", "event.amount * 2 + 'x'"]) {
    const expression = compileExpression(source);
    assert.throws(() => expression({ event: { amount: 1 } }), /no such overload/, source);
  }
});

Deno.test("evaluationMessage() keeps a budget's message whole: its figures are the reason, and it quotes no event", () => {
  const long =
    `Expression exceeded its matches() budget of 640000 (text characters × instructions a pattern may visit a character, per evaluation): ${
      "x".repeat(300)
    } costs 640048`;
  assert.equal(evaluationMessage(new EvaluationBudgetError(long)), long);
  // Anything else is quoted within 256 characters, as client input is.
  assert.ok(evaluationMessage(new Error(long)).length < long.length);
});

Deno.test("evaluationMessage() keeps only the first line", () => {
  assert.equal(evaluationMessage(new Error("first\n> 1 | source\n    ^")), "first");
  assert.equal(evaluationMessage("plain text"), "plain text");
});

Deno.test("toJson() turns CEL integers into numbers within the safe range", () => {
  assert.equal(toJson(5n), 5);
  assert.equal(toJson(BigInt(Number.MAX_SAFE_INTEGER)), Number.MAX_SAFE_INTEGER);
  assert.equal(toJson(BigInt(Number.MIN_SAFE_INTEGER)), Number.MIN_SAFE_INTEGER);
  assert.throws(() => toJson(BigInt(Number.MAX_SAFE_INTEGER) + 1n), {
    name: "RangeError",
    message: "Integer 9007199254740992 is outside the safe JSON range",
  });
  assert.throws(() => toJson(BigInt(Number.MIN_SAFE_INTEGER) - 1n), RangeError);
});

Deno.test("toJson() writes bytes of any length in base64: 1,000,000 bytes no longer overflow the stack", () => {
  // Spread whole as arguments to String.fromCharCode, about 125,000 bytes or more overflowed it.
  const bytes = Uint8Array.from({ length: 1_000_000 }, (_, i) => (i * 7919) % 256);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  assert.equal(toJson(bytes), btoa(binary));
  assert.equal(toJson(new Uint8Array([0, 255, 1])), "AP8B");
  assert.equal(toJson(new Uint8Array(0)), "");
});

Deno.test("toJson() refuses numbers JSON cannot hold", () => {
  assert.equal(toJson(1.5), 1.5);
  assert.throws(() => toJson(Infinity), {
    name: "RangeError",
    message: "Number Infinity is not finite",
  });
  assert.throws(() => toJson(-Infinity), RangeError);
  assert.throws(() => toJson(Number.NaN), {
    name: "RangeError",
    message: "Number NaN is not finite",
  });
  assert.throws(() => toJson({ nested: [1, Number.NaN] }), RangeError);
});

Deno.test("toJson() writes timestamps as ISO text and bytes as base64", () => {
  assert.equal(toJson(new Date(Date.UTC(2026, 0, 2, 3, 4, 5, 6))), "2026-01-02T03:04:05.006Z");
  assert.equal(toJson(new Uint8Array([97, 98, 99])), "YWJj");
});

Deno.test("toJson() turns maps into objects, converting keys and values", () => {
  const map = new Map<unknown, unknown>([["a", 1n], [2n, [3n, new Date(0)]]]);
  assert.deepEqual(toJson(map), { a: 1, 2: [3, "1970-01-01T00:00:00.000Z"] });
  assert.deepEqual(toJson({ x: { y: [1n, "s", true, null] } }), { x: { y: [1, "s", true, null] } });
  assert.equal(toJson("text"), "text");
  assert.equal(toJson(false), false);
  assert.equal(toJson(null), null);
});

Deno.test("toJson() writes a `__proto__` key as an own field, not the object's prototype", () => {
  // Deno has no `Object.prototype.__proto__` setter, so an assigned `__proto__` is an own field
  // (cel-js leaves the key out of maps it builds, and no event holds it): pinned here.
  const inner = { x: 1 };
  const fromMap = toJson(new Map<string, unknown>([["__proto__", inner], ["a", 1n]])) as object;
  const fromObject = toJson(JSON.parse('{"__proto__": {"x": 1}, "a": 1}')) as object;
  for (const out of [fromMap, fromObject]) {
    assert.equal(Object.getPrototypeOf(out), Object.prototype);
    assert.ok(Object.hasOwn(out, "__proto__"));
    assert.deepEqual(Object.keys(out), ["__proto__", "a"]);
    assert.equal(JSON.stringify(out), '{"__proto__":{"x":1},"a":1}');
    assert.equal((out as Record<string, unknown>).x, undefined);
  }
  // A value that is no object as well.
  assert.equal(JSON.stringify(toJson(new Map([["__proto__", 1n]]))), '{"__proto__":1}');
});

Deno.test("toJson() converts what real CEL expressions return", () => {
  const run = (source: string, event: Record<string, unknown> = {}) =>
    toJson(compileExpression(source)({ event }));
  assert.equal(run("1 + 2"), 3);
  assert.equal(run("event.name.size()", { name: "héllo" }), 5);
  assert.deepEqual(run('{"n": 1, "list": [1, 2.5, "x"]}'), { n: 1, list: [1, 2.5, "x"] });
  assert.equal(run("timestamp('2024-01-01T00:00:00Z')"), "2024-01-01T00:00:00.000Z");
  assert.equal(run("2u"), 2);
  assert.deepEqual(run("[uint(event.n)]", { n: 7 }), [7]);
  assert.throws(() => run("1.0 / 0.0"), RangeError);
  assert.throws(() => run("9223372036854775807"), RangeError);
});

Deno.test("toJson() refuses CEL values that have no JSON form instead of writing {}", () => {
  assert.throws(
    () => toJson(compileExpression("duration('90s')")({ event: {} })),
    { name: "TypeError", message: /Duration/ },
  );
  assert.throws(() => toJson(compileExpression("type(1)")({ event: {} })), TypeError);
});

Deno.test("matches() written as a function, matches(text, pattern), runs by RE2 too", () => {
  const global = compileExpression('matches(event.c, "^a.$")');
  assert.equal(global({ event: { c: "a😀" } }), true);
  assert.equal(global({ event: { c: "b" } }), false);
  assert.throws(() => compileExpression('matches(event.c, "(?=a)")'), /RE2/);
  const email = compileExpression(
    'matches(event.email, "^([a-zA-Z0-9]+\\\\.?)+@example\\\\.com$")',
  );
  assert.equal(email({ event: { email: "a".repeat(44) + "!" } }), false);
});

Deno.test("matches() runs by RE2 in linear time; a literal pattern it cannot run is refused", () => {
  // By code point, as RE2 (V8's RegExp without u sees two units).
  assert.equal(compileExpression('event.c.matches("^.$")')({ event: { c: "😀" } }), true);
  const email = compileExpression('event.email.matches("^([a-zA-Z0-9]+\\\\.?)+@example\\\\.com$")');
  // Forty-odd letters and a "!" hold cel-js's own (backtracking) matches for minutes.
  assert.equal(email({ event: { email: `${"a".repeat(5_000)}!` } }), false);
  assert.equal(email({ event: { email: "first.last@example.com" } }), true);
  // A pattern from the event is compiled when evaluated.
  const dynamic = compileExpression("event.text.matches(event.pattern)");
  assert.equal(dynamic({ event: { text: "abc", pattern: "b+" } }), true);
  assert.throws(() => dynamic({ event: { text: "abc", pattern: "(?=a)" } }), /RE2/);
  assert.throws(
    () => compileExpression('event.c.matches("(?<=a)b")'),
    (error) => error instanceof ExpressionError && error.message.includes("RE2"),
  );
  // Errors name matches() as written, not the function it runs as.
  const byNumber = compileExpression("event.c.matches(1)");
  try {
    byNumber({ event: { c: "a" } });
    assert.fail("matches() takes a string");
  } catch (error) {
    assert.match(evaluationMessage(error), /'string\.matches\(int\)'/);
  }
});

Deno.test("compileExpression() refuses an expression nesting deeper than 250 levels, whatever nests", () => {
  for (
    const source of [
      `${"!".repeat(4_000)}true`, // the parser's own recursion, which its limit does not count
      `${"-".repeat(3_000)}1`,
      `${"!".repeat(250)}true`,
      Array.from({ length: 260 }, () => "event.a").join(" || "),
      `${"(".repeat(300)}1${")".repeat(300)}`,
    ]
  ) {
    assert.throws(
      () => compileExpression(source),
      (error: unknown) =>
        error instanceof ExpressionError &&
        /nests deeper than 250 levels|Exceeded maxDepth \(250\)/.test(error.message),
      source.slice(0, 20),
    );
  }
  // 250 levels: 249 `!` and the value; 248 `||` and the last `event.a`'s field read and variable.
  assert.equal(compileExpression(`${"!".repeat(249)}true`)({ event: {} }), false);
  assert.equal(
    compileExpression(Array.from({ length: 249 }, () => "event.a").join(" || "))({
      event: { a: true },
    }),
    true,
  );
});

Deno.test("compileExpression() refuses a source over 4,096 characters, whoever gives it, without echoing it", () => {
  const long = `true || '${"y".repeat(4_083)}' == ''`;
  assert.equal(long.length, 4_099);
  assert.throws(
    () => compileExpression(long),
    (error: unknown) =>
      error instanceof ExpressionError &&
      error.message === "Expression is 4099 UTF-16 code units; the limit is 4096",
  );
  const limit = `true || '${"y".repeat(4_080)}' == ''`;
  assert.equal(limit.length, 4_096);
  assert.equal(compileExpression(limit)({ event: {} }), true);
});

Deno.test("compileExpression() counts its length in UTF-16 code units, as the README says: an emoji counts two", () => {
  const emoji = "\u{1F600}";
  // 2,053 characters, 4,098 code units: past the limit.
  const long = `'${emoji.repeat(2_045)}' == ''`;
  assert.equal(long.length, 4_098);
  assert.throws(
    () => compileExpression(long),
    (error: unknown) =>
      error instanceof ExpressionError &&
      error.message === "Expression is 4098 UTF-16 code units; the limit is 4096",
  );
  const limit = `'${emoji.repeat(2_044)}' == ''`;
  assert.equal(limit.length, 4_096);
  assert.equal(compileExpression(limit)({ event: {} }), false);
});

/** `[1,2,…,n]` as CEL text. */
function range(n: number): string {
  return `[${Array.from({ length: n }, (_, i) => i + 1).join(",")}]`;
}

Deno.test("compileExpression() refuses macros over literal lists whose worst case exceeds the evaluation budget", () => {
  // The probe's expressions: short (≤ 4,096 characters) and shallow, but 300³ steps.
  const L = range(300);
  const explosive = [
    `${L}.all(a, ${L}.all(b, ${L}.all(c, a + b + c > 0)))`,
    `size(${L}.map(a, ${L}.map(b, ${L}))) > 0`,
    `${L}.all(a, ${L}.all(b, ${L}.all(c, (string(a) + string(b) + string(c)).size() > 0)))`,
    `${range(40)}.exists(a, ${range(40)}.exists(b, ${
      range(40)
    }.exists(c, a == b && b == c && c == 0)))`,
  ];
  for (const source of explosive) {
    assert.ok(source.length <= MAX_EXPRESSION_LENGTH, `${source.length} characters`);
    assert.throws(() => compileExpression(source, ["payload"]), {
      name: "ExpressionError",
      message: new RegExp(`may take more than ${MAX_EVALUATION_COST} steps, the budget of one`),
    });
  }
  // Within the budget, macros over literal lists compile and answer.
  const small = compileExpression(`${range(30)}.all(a, ${range(30)}.all(b, a + b > 0))`);
  assert.equal(small({ event: {} }), true);
});

Deno.test("an evaluation past the budget fails, however its macros or operators would absorb the error", () => {
  const l = Array.from({ length: 100 }, (_, i) => i + 1);
  const s = "x".repeat(60_000);
  const overBudget = [
    // 100³ steps over lists from the variables, which no compile-time check can see.
    "payload.l.all(a, payload.l.all(b, payload.l.all(c, a + b + c > 0.0)))",
    "size(payload.l.map(a, payload.l.map(b, payload.l.map(c, [a, b, c])))) > 0",
    "payload.l.all(a, payload.l.all(b, payload.l.all(c, (string(a) + string(b)).size() > 0)))",
    // `exists`, `&&` and `||` absorb an error when another element or operand answers.
    "payload.l.exists(a, payload.l.all(b, payload.l.all(c, a + b + c > 0.0)) && a == 100.0)",
    "payload.l.all(a, payload.l.all(b, payload.l.all(c, a + b + c > 0.0))) || true",
    // Scanning a long string at every step, and doubling one by binding it.
    "payload.l.all(a, payload.l.all(b, !payload.s.contains('y')))",
    "cel.bind(x, payload.s + payload.s, cel.bind(y, x + x, cel.bind(z, y + y, size(z + z) > 0)))",
    // No macro: each `+` copies the list built so far.
    `size(${Array.from({ length: 200 }, () => "payload.l").join(" + ")}) > 0`,
  ];
  for (const source of overBudget) {
    const evaluate = compileExpression(source, ["payload"]);
    assert.throws(() => evaluate({ payload: { l, s } }), {
      name: "EvaluationBudgetError",
      message: `Expression exceeded its evaluation budget of ${MAX_EVALUATION_COST} steps`,
    }, source);
    assert.equal(
      evaluationMessage(new EvaluationBudgetError()),
      "Expression exceeded its evaluation budget of 100000 steps",
    );
  }
  // Each evaluation has its own budget: the same expression on a short list answers.
  const nested = compileExpression("payload.l.all(a, payload.l.all(b, a + b > 0.0))", ["payload"]);
  for (let i = 0; i < 3; i++) assert.equal(nested({ payload: { l: l.slice(0, 20) } }), true);
  const within = [
    "payload.l.exists(a, a == 100.0)",
    "payload.l.map(a, a * 2).filter(a, a > 100.0).size() == 50",
    "size(payload.s + payload.s) == 120000",
  ];
  for (const source of within) {
    assert.equal(compileExpression(source, ["payload"])({ payload: { l, s } }), true, source);
  }
});

Deno.test("matches() is charged its pattern's instructions times its text's characters: past MAX_MATCHING_COST in one evaluation it fails before running", () => {
  // 4,003 instructions: over 5,000 characters RE2 takes about 0.5 s.
  const big = "[a-z]{1000}".repeat(4) + "[^a]";
  const uuid = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
  const long = "a".repeat(5_000);
  const over = [
    `event.s.matches("${big}")`,
    // From the event, and absorbed by `||`: still past it.
    "event.s.matches(event.p) || true",
    `matches(event.s, "${big}") && false`,
    // Each call within it, together past it (unanchored, so not matched in one pass).
    `[1, 2, 3, 4, 5].exists(i, event.s.matches("${uuid.slice(1, -1)}"))`,
  ];
  for (const source of over) {
    const evaluate = compileExpression(source);
    assert.throws(() => evaluate({ event: { s: long, p: big } }), {
      name: "EvaluationBudgetError",
      message: new RegExp(
        `^Expression exceeded its matches\\(\\) budget of ${MAX_MATCHING_COST} \\(text characters × instructions a pattern may visit a character, per evaluation\\): a pattern of \\d+ instructions over 5000 characters costs \\d+$`,
      ),
    }, source);
  }
  assert.throws(() => compileExpression(`event.s.matches("${big}")`)({ event: { s: long } }), {
    message: /a pattern of 4003 instructions over 5000 characters costs 20015000$/,
  });
  // Each evaluation has its own: short texts, a UUID pattern three times over 2 KB and an email
  // one four times over 4 KB answer.
  const evaluate = compileExpression(`event.s.matches("${big}")`);
  for (let i = 0; i < 3; i++) assert.equal(evaluate({ event: { s: "a".repeat(60) } }), false);
  const text = "0123456789abcdef-".repeat(120);
  assert.equal(
    compileExpression(
      `event.a.matches("${uuid}") || event.b.matches("${uuid}") || event.c.matches(event.p)`,
    )({ event: { a: text, b: text, c: text, p: uuid } }),
    false,
  );
  const email = String.raw`^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\\.[a-zA-Z]{2,}$`;
  const emails = compileExpression(
    ["a", "b", "c", "d"].map((field) => `event.${field}.matches("${email}")`).join(" && "),
  );
  const address = `${"a".repeat(4000)}@b.co`;
  assert.equal(emails({ event: { a: address, b: address, c: address, d: address } }), true);
});

Deno.test("matches() charges a pattern matched in one pass the instructions it visits a character: a UUID pattern over 1,600 ids is within MAX_MATCHING_COST", () => {
  const uuid = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
  // 40 instructions, 3 a character: charged 40 a character, 182 ids were past it.
  const ids = Array.from({ length: 1_600 }, () => crypto.randomUUID());
  for (
    const source of [
      `event.ids.all(id, id.matches("${uuid}"))`,
      "event.ids.all(id, id.matches(event.p))",
    ]
  ) {
    assert.equal(compileExpression(source)({ event: { ids, p: uuid } }), true, source);
  }
  // Still charged, by the character.
  assert.throws(
    () => compileExpression(`event.s.matches("${uuid}")`)({ event: { s: "a".repeat(100_000) } }),
    {
      name: "EvaluationBudgetError",
      message:
        `Expression exceeded its matches() budget of ${MAX_MATCHING_COST} (text characters × instructions a pattern may visit a character, per evaluation): a pattern of 40 instructions (3 a character: matched in one pass) over 100000 characters costs 300000`,
    },
  );
});

Deno.test("matches() with a pattern from the event is charged for compiling it: a list of distinct large patterns fails once they would cost past MAX_MATCHING_COST", () => {
  const evaluate = compileExpression(`event.ps.exists(p, "".matches(p))`);
  // 100 patterns of about 4,000 instructions: compiling them all took 0.3–0.9 s.
  const patterns = Array.from(
    { length: 100 },
    (_, i) => `${"[a-z]{1000}".repeat(4)}[0-9]{${i + 1}}`,
  );
  assert.throws(() => evaluate({ event: { ps: patterns } }), {
    name: "EvaluationBudgetError",
    message:
      `Expression exceeded its matches() budget of ${MAX_MATCHING_COST} (text characters × instructions a pattern may visit a character, per evaluation): compiling a pattern of 4007 instructions costs 64112 (16 an instruction)`,
  });
  // A few small ones, and the same large one again (compiled once, kept), are within it.
  assert.equal(evaluate({ event: { ps: ["^a$", "^b$", "[0-9]+"] } }), false);
  assert.equal(evaluate({ event: { ps: Array(20).fill(patterns[0]) } }), false);
});

Deno.test("a map pays for its keys and a compared value for what it holds: size, in, == and macros over a big map or nested list stop within the budget", () => {
  // A 2,000-key map (some 20 KB of event): cel-js's size(), `in` and `==` read every key, and a
  // macro lists them all before its first step; `==` compares nested lists member by member.
  const m = Object.fromEntries(Array.from({ length: 2_000 }, (_, i) => [`k${i}`, 0]));
  const x = [Array(4_000).fill(0)];
  const y = [Array(4_000).fill(0)];
  const range = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]";
  const thousand = (body: string) => `${range}.all(a, ${range}.all(b, ${range}.all(c, ${body})))`;
  const overBudget = [
    thousand("size(payload.m) > 0"),
    thousand("payload.m == payload.m"),
    thousand("!('zz' in payload.m)"),
    thousand("payload.m.exists(k, true)"),
    thousand("payload.x == payload.y"),
    thousand("payload.x in [payload.y, 1]"),
  ];
  for (const source of overBudget) {
    const evaluate = compileExpression(source, ["payload"]);
    assert.throws(() => evaluate({ payload: { m, x, y } }), {
      name: "EvaluationBudgetError",
    }, source);
  }
  // The same over small values answers, and as before.
  const small = { m: { k0: 0, k1: 0 }, x: [[0, 0]], y: [[0, 0]] };
  assert.deepEqual(
    overBudget.map((source) => compileExpression(source, ["payload"])({ payload: small })),
    [true, true, true, true, true, true],
  );
  // A map is read by key at the cost of a step, whatever its size.
  const lookup = compileExpression(thousand("payload.m.k1 == 0 && payload.m['k2'] == 0"), [
    "payload",
  ]);
  assert.equal(lookup({ payload: { m } }), true);
});

Deno.test("a search (contains, indexOf, lastIndexOf, split) pays for its text's length times its needle's, and answers as cel-js's", () => {
  // V8 searches in up to length × needle steps: this lastIndexOf alone took 0.15 s.
  const text = "a".repeat(43_000);
  const needle = `${"a".repeat(21_000)}b`;
  for (const method of ["contains", "indexOf", "lastIndexOf", "split"]) {
    const evaluate = compileExpression(`payload.t.${method}(payload.n)`, ["payload"]);
    assert.throws(() => evaluate({ payload: { t: text, n: needle } }), {
      name: "EvaluationBudgetError",
    }, method);
  }
  const looped = compileExpression("payload.l.all(i, payload.t.indexOf(payload.n) == -1)", [
    "payload",
  ]);
  const l = Array.from({ length: 100 }, (_, i) => i);
  assert.throws(() => looped({ payload: { t: text, n: `${"a".repeat(200)}b`, l } }), {
    name: "EvaluationBudgetError",
  });
  assert.equal(looped({ payload: { t: "abc", n: "x", l } }), true);

  // Otherwise they answer as cel-js's own, errors included.
  const plain = new Environment();
  plain.registerVariable("x", "string");
  plain.registerVariable("y", "string");
  const sources = [
    "x.contains(y)",
    "x.indexOf(y)",
    "x.lastIndexOf(y)",
    "x.split(y)",
    "x.indexOf(y, 2)",
    "x.lastIndexOf(y, 2)",
    "x.split(y, 2)",
    "x.split(y, -1)",
  ];
  const compiled = sources.map((source) => compileExpression(source, ["x", "y"]));
  const outcome = (run: () => unknown) => {
    try {
      return { value: run() };
    } catch (error) {
      return { error: evaluationMessage(error) };
    }
  };
  fc.assert(
    fc.property(
      fc.string({ unit: fc.constantFrom("a", "b", "é") }),
      fc.string({
        unit: fc.constantFrom("a", "b"),
        maxLength: 3,
      }),
      (x, y) => {
        sources.forEach((source, i) => {
          assert.deepEqual(
            outcome(() => compiled[i]({ x, y })),
            outcome(() => plain.evaluate(source, { x, y })),
            `${source} with x=${JSON.stringify(x)}, y=${JSON.stringify(y)}`,
          );
        });
      },
    ),
    { numRuns: 300 },
  );
});

Deno.test("matches() refuses a pattern past MAX_PATTERN_SIZE: a literal one with the expression, one from an event fails that event", () => {
  // 6,002 instructions once its repeats are expanded; RE2 alone compiles it (and one 230 times
  // the size, in seconds) for each event.
  const huge = "[a-z]{1000}".repeat(6);
  assert.throws(
    () => compileExpression(`event.c.matches("${huge}")`),
    (error) =>
      error instanceof ExpressionError && error.message.includes("is too large") &&
      error.message.includes("6002 instructions"),
  );
  const dynamic = compileExpression("event.text.matches(event.pattern)");
  assert.throws(
    () => dynamic({ event: { text: "abc", pattern: huge } }),
    (error) => error instanceof Error && error.message.includes("is too large"),
  );
  assert.equal(dynamic({ event: { text: "abc", pattern: "[a-z]{3}" } }), true);
});

Deno.test("literalMatchesPatterns() lists an expression's literal matches() patterns in order, compiling none", () => {
  assert.deepEqual(
    literalMatchesPatterns(
      'event.a.matches("^x$") && matches(event.b, "(?=y)") && event.c.matches(event.d) && [1].all(v, event.e.matches("z{3}"))',
    ),
    ["^x$", "(?=y)", "z{3}"],
  );
  assert.deepEqual(
    literalMatchesPatterns('value > 1 && group.matches("^eu-")', ["value", "group", "window"]),
    [
      "^eu-",
    ],
  );
  assert.deepEqual(literalMatchesPatterns("event.a.matches("), []);
  assert.deepEqual(literalMatchesPatterns("event.a == 1"), []);
});

Deno.test("a literal matches() pattern is compiled with its expression and not again per evaluation, past 256 of them too", () => {
  // More than the 256 patterns the cache of patterns from events holds: each was compiled again
  // for every event.
  const expressions = Array.from(
    { length: 300 },
    (_, index) => compileExpression(`event.a.matches("^[0-9a-f]{8}-|^${index}$")`),
  );
  const compile = RE2JS.compile;
  let compiled = 0;
  RE2JS.compile = (...args: Parameters<typeof compile>) => {
    compiled++;
    return compile(...args);
  };
  try {
    for (let round = 0; round < 2; round++) {
      for (const [index, expression] of expressions.entries()) {
        assert.equal(expression({ event: { a: String(index) } }), true);
      }
    }
  } finally {
    RE2JS.compile = compile;
  }
  assert.equal(compiled, 0);
});

Deno.test("compileExpression() refuses literal matches() patterns past MAX_EXPRESSION_PATTERN_SIZE together, compiling none", () => {
  // Four of 4,002: 16,008. A subscription's filter of 4,096 characters held 57 (0.5 s).
  const pattern = (letter: string) => `[${letter}-z]{1000}`.repeat(4);
  const source = ["a", "b", "c", "d"].map((letter) => `event.t.matches("${pattern(letter)}")`)
    .join(" || ");
  const compile = RE2JS.compile;
  let compiled = 0;
  RE2JS.compile = (...args: Parameters<typeof compile>) => {
    compiled++;
    return compile(...args);
  };
  try {
    assert.throws(
      () => compileExpression(source),
      (error) =>
        error instanceof ExpressionError &&
        error.message.includes(
          `its matches() patterns would compile to 16008 instructions together, past the ${MAX_EXPRESSION_PATTERN_SIZE} an expression may have (a character class counts 1 more for each 32 ranges of characters it holds: [\\p{L}] is about 24)`,
        ),
    );
  } finally {
    RE2JS.compile = compile;
  }
  assert.equal(compiled, 0);
  // Three: taken.
  assert.equal(
    compileExpression(source.split(" || ").slice(0, 3).join(" || "))({ event: { t: "x" } }),
    false,
  );
});

Deno.test("compileExpression() counts literal patterns' character classes by their ranges: a filter of 15 patterns of four Unicode classes repeated 1,000 times is refused before any is compiled, a few Unicode classes are taken", () => {
  // 1,003 instructions each by patternSize (15,045 together: taken before), 40,003 with their
  // classes' ranges: 0.35–1.2 s to compile, for every request that gave the filter.
  const heavy = (index: number) => `^[\\\\p{L}\\\\p{N}\\\\p{S}\\\\p{P}]{1000}|${index}`;
  const source = Array.from({ length: 15 }, (_, index) => `payload.a.matches("${heavy(index)}")`)
    .join("||");
  assert.ok(source.length < 900);
  const compile = RE2JS.compile;
  let compiled = 0;
  RE2JS.compile = (...args: Parameters<typeof compile>) => {
    // Not the lookup of one class's ranges (`\p{L}`, once), only whole patterns.
    if (String(args[0]).includes("{1000}")) compiled++;
    return compile(...args);
  };
  const started = performance.now();
  try {
    assert.throws(
      () => compileExpression(source, ["payload"], { returns: "bool" }),
      (error) =>
        error instanceof ExpressionError &&
        error.message.endsWith(
          `its matches() patterns would compile to 40005 instructions together, past the ${MAX_EXPRESSION_PATTERN_SIZE} an expression may have (a character class counts 1 more for each 32 ranges of characters it holds: [\\p{L}] is about 24)`,
        ),
    );
  } finally {
    RE2JS.compile = compile;
  }
  assert.equal(compiled, 0);
  assert.ok(performance.now() - started < 250, `refused in ${performance.now() - started} ms`);
  // What an expression stored before this check holds is compiled as it was (counted without).
  const stored = `payload.a.matches("${heavy(15)}") || payload.a.matches("${heavy(16)}")`;
  assert.throws(() => compileExpression(stored, ["payload"]), ExpressionError);
  assert.equal(
    compileExpression(stored, ["payload"], { uncountedPatternClasses: true })({
      payload: { a: "16" },
    }),
    true,
  );
  // Ordinary patterns, Unicode classes among them, are taken.
  const realistic = [
    `event.email.matches("^[^@]+@[^@]+$")`,
    `event.name.matches("^\\\\p{L}+$")`,
    `event.city.matches("^[\\\\p{L} .'-]+$")`,
    `event.country.matches("^\\\\p{Lu}{2}$")`,
    `event.tag.matches("^[\\\\p{L}\\\\p{N}_-]{1,32}$")`,
  ].join(" && ");
  assert.equal(
    compileExpression(realistic, ["event"], { returns: "bool" })({
      event: { email: "a@b.example", name: "Zoë", city: "São Paulo", country: "BR", tag: "été_1" },
    }),
    true,
  );
});

Deno.test("matches() charges a literal pattern compiled again once dropped from the cache: expressions with more literal patterns than it holds do not compile theirs again for free", () => {
  // 4 patterns of about 4,000 instructions an expression (16,000, the most it may have), and 5 of
  // them: 80,000, past the 65,536 kept. Evaluated in turn, each compiled its own again (24–46 ms).
  const pattern = (expression: number, index: number) =>
    `${"[a-z]{1000}".repeat(3)}[a-z]{990}x{${expression + 1}}y{${index + 1}}`;
  const source = (expression: number) =>
    Array.from({ length: 4 }, (_, index) => `event.s.matches("${pattern(expression, index)}")`)
      .join(" || ");
  const expressions = Array.from({ length: 5 }, (_, index) => compileExpression(source(index)));
  // Kept since it was compiled: answered within the budget (4 × 4,000 instructions × 2 characters).
  assert.equal(expressions[4]({ event: { s: "ab" } }), false);
  // The first's were dropped by the others': compiling them again costs 16 an instruction.
  assert.throws(() => expressions[0]({ event: { s: "ab" } }), {
    name: "EvaluationBudgetError",
    message: new RegExp(
      `^Expression exceeded its matches\\(\\) budget of ${MAX_MATCHING_COST} \\(.*\\): compiling a pattern of \\d+ instructions costs \\d+ \\(16 an instruction\\)$`,
    ),
  });
  // Kept again once compiled: the next evaluation is within it.
  assert.equal(expressions[0]({ event: { s: "ab" } }), false);
});

Deno.test("matches() keeps patterns taken from the event up to 16,384 instructions, the least recently used dropped: one dropped is charged again for compiling", () => {
  const evaluate = compileExpression("event.ps.all(p, event.s.matches(p))");
  // About 4,000 instructions each, not matched in one pass: over 60 characters, 240,000.
  const pattern = (index: number) => `${"[a-z]{1000}".repeat(3)}[a-z]{990}x{${index + 1}}`;
  const s = "a".repeat(60);
  // Compiled (63,888) and held, then matched over 60 characters within the budget, as its
  // compiling is not charged again.
  assert.equal(evaluate({ event: { ps: [pattern(0)], s: "" } }), false);
  assert.equal(evaluate({ event: { ps: [pattern(0)], s } }), false);
  // 16,000 instructions of others (256 were held, whatever their size: 78 MB of them).
  for (let index = 1; index <= 4; index++) {
    assert.equal(evaluate({ event: { ps: [pattern(index)], s: "" } }), false);
  }
  assert.equal(evaluate({ event: { ps: [pattern(4)], s } }), false);
  // Dropped: compiled again, which its budget no longer holds with the matching.
  assert.throws(() => evaluate({ event: { ps: [pattern(0)], s } }), {
    name: "EvaluationBudgetError",
    message: /: a pattern of 399\d instructions over 60 characters costs \d+$/,
  });
});

Deno.test("matches() charges compiling a pattern taken from the event for its length: five of 60,000 characters of flags, which compile to no instruction, fail the evaluation", () => {
  // Each was charged as the 4 instructions it compiles to (64) while RE2 parsed 60,000
  // characters (10-90 ms): an evaluation could compile any number of them.
  const evaluate = compileExpression("event.ps.all(p, !event.s.matches(p))");
  const pattern = (index: number) => `${"(?i)".repeat(15_000)}x${index}`;
  assert.equal(evaluate({ event: { ps: [pattern(0)], s: "a" } }), true);
  assert.throws(() => evaluate({ event: { ps: [1, 2, 3, 4, 5].map(pattern), s: "a" } }), {
    name: "EvaluationBudgetError",
    message: /: compiling a pattern of 3751 instructions costs 60016 \(16 an instruction\)$/,
  });
});

Deno.test("matches() keeps patterns taken from events within their 16,384 instructions however long their text: 200 of 60,000 characters of flags keep under 5 MB", async () => {
  // Counted as the 4 instructions they compile to, 4,000 of them could be kept: 2,000 kept 245 MB.
  const { code, stdout, stderr } = await evalAtRoot(
    `
    import { compileExpression } from "./src/transform/cel.ts";
    const heap = () => { gc(); gc(); return Deno.memoryUsage().heapUsed; };
    const filter = compileExpression("event.s.matches(event.p)", ["event"], { returns: "bool" });
    const flags = "(?i)".repeat(15000);
    filter({ event: { s: "x", p: flags + "y" } });
    const before = heap();
    let matched = 0;
    for (let i = 0; i < 200; i++) if (filter({ event: { s: "x" + i, p: flags + "x" + i } })) matched++;
    console.log(JSON.stringify({ grown: heap() - before, matched }));
    `,
    { flags: ["--v8-flags=--expose-gc"] },
  );
  assert.equal(code, 0, stderr);
  const { grown, matched } = JSON.parse(stdout);
  assert.equal(matched, 200);
  assert.ok(grown < 5_000_000, `the heap grew ${grown} bytes over 200 patterns from events`);
});

Deno.test("matches() with patterns taken from events keeps matcher states within MAX_RETAINED_MATCHER_BYTES: 24 patterns, three events of 140 characters each, keep under 24 MB", async () => {
  // Each pattern an event sends is kept compiled (up to 16,384 instructions of them: 910 of
  // these), and re2js let each keep up to 8 MiB of DFA states built from the events' texts.
  const { code, stdout, stderr } = await evalAtRoot(
    `
    import { compileExpression } from "./src/transform/cel.ts";
    const heap = () => { gc(); gc(); return Deno.memoryUsage().heapUsed; };
    let seed = 11;
    const letters = ["a", "b", "\\u00e9", "1", "\\u0436", "$"];
    const text = () => { let s = ""; for (let i = 0; i < 140; i++) { seed = (seed * 1103515245 + 12345) % 2147483648; s += letters[seed % 6]; } return s; };
    const texts = [text(), text(), text()];
    const filter = compileExpression("event.text.matches(event.re)", ["event"], { returns: "bool" });
    const before = heap();
    for (let i = 0; i < 24; i++) {
      const re = ".*[\\\\p{L}\\\\p{N}\\\\p{S}\\\\p{P}]a.{10}[cd" + String.fromCodePoint(0x4e00 + i) + "]";
      for (const t of texts) filter({ event: { text: t, re } });
    }
    const grown = heap() - before;
    // Each event's text was within its budget: every evaluation matched.
    console.log(JSON.stringify({ grown, answers: texts.map((t) => filter({ event: { text: t, re: "[cd]" } })) }));
    `,
    { flags: ["--v8-flags=--expose-gc"] },
  );
  assert.equal(code, 0, stderr);
  const { grown, answers } = JSON.parse(stdout);
  assert.deepEqual(answers, [false, false, false]);
  assert.ok(grown < 24_000_000, `the heap grew ${grown} bytes over 24 patterns from events`);
});

Deno.test("matches() charges compiling a pattern taken from the event for its classes' ranges: ^[\\p{L}\\p{N}\\p{S}\\p{P}]{1000} fails the evaluation before it is compiled", () => {
  // 16 an instruction charged it 16,048, and compiling it took 50–160 ms: a list of them took
  // 0.4–1.2 s within one evaluation's budget.
  const dynamic = compileExpression("event.res.all(r, !event.text.matches(r))");
  const re = "^[\\p{L}\\p{N}\\p{S}\\p{P}]{1000}";
  assert.throws(
    () => dynamic({ event: { text: "a", res: [re] } }),
    (error) =>
      error instanceof EvaluationBudgetError &&
      error.message ===
        `Expression exceeded its matches() budget of ${MAX_MATCHING_COST} (text characters × instructions a pattern may visit a character, per evaluation): compiling a pattern of 1003 instructions (40003 with its classes' ranges, 32 an instruction) costs 640048 (16 an instruction)`,
  );
});

Deno.test("matches() charges each state a pattern's matcher builds its table of character classes: .*[\\p{L}\\p{N}\\p{S}\\p{P}]a.{10}[cd] over 2,213 characters of six letters mixed fails the evaluation, literal or from the event", () => {
  // Charged 118 a character (1 for each 16 classes), the DFA built a table of 1,610 entries
  // almost every character: 97–129 ms of CPU time for one evaluation within the budget.
  const re = ".*[\\p{L}\\p{N}\\p{S}\\p{P}]a.{10}[cd]";
  let seed = 11;
  const letters = ["a", "b", "\u00e9", "1", "\u0436", "$"];
  let text = "";
  for (let i = 0; i < 2_213; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    text += letters[seed % 6];
  }
  const literal = compileExpression(`event.text.matches("${re.replaceAll("\\", "\\\\")}")`);
  const dynamic = compileExpression("event.text.matches(event.re)");
  for (const evaluate of [literal, dynamic]) {
    assert.throws(
      () => evaluate({ event: { text, re } }),
      (error) =>
        error instanceof EvaluationBudgetError &&
        new RegExp(
          "\\): a pattern of 18 instructions over 2213 characters costs 39834, and each state its matcher builds 1610 \\(a table of its 1609 classes of characters and the text's end\\): its state \\d+ in this test is past it$",
        ).test(error.message),
    );
  }
  // Short texts build few states; ordinary patterns few at any length.
  assert.equal(dynamic({ event: { text: text.slice(0, 100), re } }), false);
  assert.equal(dynamic({ event: { text: `${text.slice(0, 100)}xa0123456789c`, re } }), true);
  const email = String.raw`^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$`;
  const emails = compileExpression(
    `event.texts.all(t, t.matches("${email.replaceAll("\\", "\\\\")}"))`,
  );
  const address = `${"a".repeat(4_000)}@b.co`;
  assert.equal(emails({ event: { texts: [address, address, address, address] } }), true);
  const names = compileExpression(`event.texts.all(t, t.matches("^[\\\\p{L} .'-]{1,100}$"))`);
  assert.equal(names({ event: { texts: Array(40).fill("Zoë Ñuñez-O'Brien Ångström") } }), true);
});

Deno.test("variableFields() lists the fields of the variables an expression names literally, in order, skipping a macro's own variables", () => {
  const variables = ["value", "group", "window"];
  const fields = (source: string) =>
    variableFields(source, variables).map(({ variable, field }) => `${variable}.${field}`);
  assert.deepEqual(
    fields(`group.contry == "DE" && window.strat > "a" && group["user.country"] == "x"`),
    ["group.contry", "window.strat", "group.user.country"],
  );
  // has(), in, a field of a field (only the variable's own counts), a variable's own method.
  assert.deepEqual(fields(`has(group.a) && "b" in group && group.c.d.e == 1`), [
    "group.a",
    "group.b",
    "group.c",
  ]);
  // Not a field named literally: a computed key (whose own fields count), the variable whole.
  assert.deepEqual(
    fields(
      `group[window.counter] == "x" || size(group) == 0 || group == {"a": 1} || value.p99 > 1.0`,
    ),
    ["window.counter", "value.p99"],
  );
  assert.deepEqual(fields(`{"a": 1}.a == 1 && [1].exists(x, x > 0)`), []);
  // A macro's own variable named like one: what is inside is its own, what it ranges over is not.
  assert.deepEqual(fields(`[group.a].exists(group, group.x > 0) && group.b == 1`), [
    "group.a",
    "group.b",
  ]);
  assert.deepEqual(fields(`[1].map(window, window.y).size() > 0 && window.start > ""`), [
    "window.start",
  ]);
  assert.deepEqual(fields(`[1].map(x, group.f > x, group.g).size() > 0`), ["group.f", "group.g"]);
  assert.deepEqual(fields(`cel.bind(group, group.outer, group.inner) == 1`), ["group.outer"]);
  // An expression that does not parse names none.
  assert.deepEqual(fields(`group.contry ==`), []);
});

Deno.test("compileExpression() outside a stream's transform (webhook filters, alert conditions, live-subscription filters) compiles patterns taken from events with no request budget: 40 distinct patterns of 3,996 instructions, past MAX_REQUEST_PATTERN_COMPILE together, all match", () => {
  // A prefix no other test compiles (compiled patterns are kept between evaluations).
  const pattern = (index: number) =>
    `^(?:hello|nobud${String(index).padStart(2, "0")}.{0,1000}.{0,990})`;
  assert.equal(patternCompileSize(pattern(0)), 3_996);
  assert.ok(40 * (3_996 + PATTERN_COMPILE_OVERHEAD) > MAX_REQUEST_PATTERN_COMPILE);
  const filter = compileExpression("event.text.matches(event.p)");
  for (let index = 0; index < 40; index++) {
    assert.equal(filter({ event: { text: "hello", p: pattern(index) } }), true);
  }
});
