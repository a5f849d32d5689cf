import assert from "node:assert/strict";
import fc from "fast-check";
import { Environment } from "@marcbachmann/cel-js";
import { compileExpression } from "../../src/transform/cel.ts";
import { compileFastPath, FALLBACK } from "../../src/transform/cel_fast.ts";

/** The interpreter alone, set up as `cel.ts` sets it up for these expressions (no arithmetic). */
const reference = new Environment({ homogeneousAggregateLiterals: false });
reference.registerVariable("event", "dyn");

function parse(source: string) {
  const parsed = reference.parse(source);
  return parsed.check().valid ? parsed : null;
}

function outcome(run: () => unknown): { value: unknown } | { error: string } {
  try {
    return { value: run() };
  } catch (error) {
    return { error: (error as Error).message };
  }
}

const field = fc.constantFrom("a", "b", "c");
const leaf = fc.oneof(
  field.map((name) => `event.${name}`),
  field.map((name) => `event["${name}"]`),
  fc.constantFrom("x", "y").map((name) => `event.o.${name}`),
  fc.constantFrom("1", "0", "2.5", "-0.0", "100.0", '"a"', '"b"', '""', "true", "false", "null"),
  field.map((name) => `has(event.${name})`),
  fc.constantFrom("x", "y").map((name) => `has(event.o.${name})`),
  fc.constantFrom("-3", "[1]", "size(event.a)", "event.a + 1.0"),
  // Ints past what a double holds exactly, which CEL compares with doubles by value.
  fc.constantFrom("9007199254740993", "9007199254740992", "-9007199254740993", "1u"),
);
const expression = fc.letrec((tie) => ({
  node: fc.oneof(
    { depthSize: "small", withCrossShrink: true },
    leaf,
    tie("node").map((inner) => `!(${inner})`),
    fc.tuple(
      tie("node"),
      fc.constantFrom("&&", "||", "==", "!=", "<", "<=", ">", ">="),
      tie("node"),
    ).map(([left, op, right]) => `(${left}) ${op} (${right})`),
  ),
})).node as fc.Arbitrary<string>;
const value = fc.oneof(
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.integer({ min: -3, max: 3 }),
  fc.constantFrom(0, -0, 1, 2.5, 100),
  fc.constantFrom(2 ** 53, 2 ** 53 + 2, -(2 ** 53), 2 ** 63),
  fc.constantFrom("a", "b", ""),
  fc.boolean(),
  fc.constant(null),
  fc.constant([1]),
);
const event = fc.record(
  {
    a: value,
    b: value,
    c: value,
    o: fc.oneof(fc.record({ x: value, y: value }, { requiredKeys: [] }), value),
  },
  { requiredKeys: [] },
);

Deno.test("the CEL fast path answers only what the interpreter answers, and the same", () => {
  let answered = 0;
  fc.assert(
    fc.property(expression, fc.array(event, { minLength: 1, maxLength: 5 }), (source, events) => {
      const parsed = parse(source);
      if (!parsed) return;
      const fast = compileFastPath(parsed.ast, ["event"]);
      const compiled = compileExpression(source, ["event"]);
      for (const item of events) {
        const expected = outcome(() => parsed({ event: item }));
        if (fast) {
          const got = fast({ event: item });
          if (got !== FALLBACK) {
            answered += 1;
            assert.deepEqual({ value: got }, expected, `${source} on ${JSON.stringify(item)}`);
          }
        }
        // What transforms call: the fast path, else the interpreter, as one.
        assert.deepEqual(outcome(() => compiled({ event: item })), expected, source);
      }
    }),
    { numRuns: 10_000 },
  );
  // The property must not hold only because the fast path never answers.
  assert.ok(answered > 1000, `fast path answered ${answered} times`);
});

Deno.test("the CEL fast path covers the common transform expressions", () => {
  for (
    const source of [
      "!has(event.test) || !event.test",
      "event.amount >= 100.0",
      'event.country == "US" && event.amount > 0',
      'has(event.user) && event.user.plan != "free"',
    ]
  ) {
    const parsed = parse(source)!;
    const fast = compileFastPath(parsed.ast, ["event"]);
    assert.ok(fast, source);
    const sample = { test: false, amount: 150, country: "US", user: { plan: "pro" } };
    assert.equal(fast({ event: sample }), parsed({ event: sample }), source);
  }
  // Constructs it does not know get no fast path at all.
  for (const source of ["event.amount * 2.0 > 1.0", "size(event.tags) > 0", "event.a in [1, 2]"]) {
    assert.equal(compileFastPath(parse(source)!.ast, ["event"]), null, source);
  }
});

Deno.test("the CEL fast path reads and tests only an event's own fields, whatever its prototype", () => {
  const inherited = Object.create({ a: 1, o: { x: 2 } });
  inherited.b = 3;
  const bare = Object.assign(Object.create(null), { a: 4, o: { x: 5 } });
  const events = [
    inherited,
    bare,
    { a: 6, toString: 7 },
    { a: 8, o: Object.create({ x: 9 }) },
    { o: Object.assign(Object.create(null), { x: 10 }) },
  ];
  const sources = [
    "event.a",
    "event.b",
    "event.o.x",
    "has(event.a)",
    "has(event.o.x)",
    "event.toString",
    "has(event.toString)",
    "event.constructor",
    "has(event.constructor)",
    "event.valueOf == 1",
    "has(event.hasOwnProperty)",
    "event.o.toString",
    "has(event.o.constructor)",
  ];
  let answered = 0;
  for (const source of sources) {
    const parsed = parse(source)!;
    const fast = compileFastPath(parsed.ast, ["event"])!;
    assert.ok(fast, source);
    for (const [index, item] of events.entries()) {
      const got = outcome(() => fast({ event: item }));
      if ("value" in got && got.value === FALLBACK) continue;
      answered += 1;
      assert.deepEqual(got, outcome(() => parsed({ event: item })), `${source} on event ${index}`);
    }
  }
  assert.ok(answered > 20, `fast path answered ${answered} times`);
});
