import assert from "node:assert/strict";
import fc from "fast-check";
import {
  compileTransform,
  ExpressionError,
  MAX_SET_BYTES,
  PATTERN_COMPILE_OVERHEAD,
  RequestPatternBudget,
  requestPatternBudgetMessage,
  TransformError,
} from "../../src/transform/mod.ts";
import { patternCompileSize } from "../../src/validate/mod.ts";

/** Runs `transform` on `event` and returns the TransformError it throws. */
function transformError(transform: (event: Record<string, unknown>) => unknown, event: object) {
  let caught: unknown;
  try {
    transform(event as Record<string, unknown>);
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof TransformError, `expected a TransformError, got ${caught}`);
  assert.equal(caught.name, "TransformError");
  return caught;
}

Deno.test("compileTransform() with no steps returns the event itself", () => {
  const event = { a: 1 };
  assert.equal(compileTransform([])(event), event);
});

Deno.test("compileTransform() keeps events a filter accepts and drops the others", () => {
  const transform = compileTransform([{ filter: "event.amount > 10.0" }]);
  const big = { amount: 11 };
  assert.equal(transform(big), big);
  assert.equal(transform({ amount: 10 }), null);
});

Deno.test("compileTransform() stops at the first filter that drops the event", () => {
  const transform = compileTransform([
    { filter: "event.keep" },
    { set: { boom: "event.missing" } },
  ]);
  assert.equal(transform({ keep: false }), null);
  assert.equal(transformError(transform, { keep: true }).path, "transform[1].set.boom");
});

Deno.test("compileTransform() refuses a filter that returns something other than a bool", () => {
  // What the event holds is known per event.
  const cases: Array<[string, string]> = [
    ["event.amount", "number"],
    ["event.label", "string"],
    ["event.tags", "object"],
    ["event.nothing", "null"],
  ];
  for (const [filter, type] of cases) {
    const error = transformError(
      compileTransform([{ set: { a: "1" } }, { filter }]),
      { amount: 1, label: "yes", tags: [true], nothing: null },
    );
    assert.equal(error.path, "transform[1].filter");
    assert.equal(error.message, `Filter must return a bool, got ${type}`);
  }
  // A type known without the event is refused when compiled.
  for (const [filter, type] of [["1", "int"], ["'yes'", "string"], ["[true]", "list<bool>"]]) {
    assert.throws(
      () => compileTransform([{ filter }]),
      (error) =>
        error instanceof ExpressionError &&
        error.message.endsWith(`must return a bool, returns ${type}`),
      filter,
    );
  }
});

Deno.test("compileTransform() set steps add JSON values computed from the event", () => {
  const transform = compileTransform([{
    set: {
      doubled: "event.amount * 2.0",
      count: "size(event.items)",
      label: "event.country + '-' + string(event.amount)",
      when: "timestamp('2026-01-01T00:00:00Z')",
    },
  }]);
  assert.deepEqual(transform({ amount: 2.5, items: [1, 2, 3], country: "DE" }), {
    amount: 2.5,
    items: [1, 2, 3],
    country: "DE",
    doubled: 5,
    count: 3,
    label: "DE-2.5",
    when: "2026-01-01T00:00:00.000Z",
  });
});

Deno.test("compileTransform() set expressions see the event as it was before the step", () => {
  const transform = compileTransform([
    { set: { a: "event.b", b: "event.a", c: "has(event.c) ? 'again' : 'first'" } },
    { set: { seen: "event.a + event.b + event.c" } },
  ]);
  assert.deepEqual(transform({ a: "1", b: "2" }), { a: "2", b: "1", c: "first", seen: "21first" });
});

Deno.test("compileTransform() does not change the event it is given", () => {
  const event = { a: 1, b: 2 };
  const transform = compileTransform([
    { set: { c: "3" } },
    { rename: { a: "x" } },
    { drop: ["b"] },
  ]);
  assert.deepEqual(transform(event), { x: 1, c: 3 });
  assert.deepEqual(event, { a: 1, b: 2 });
});

Deno.test("compileTransform() renames fields, swapping when asked and skipping absent ones", () => {
  assert.deepEqual(compileTransform([{ rename: { a: "b", b: "a" } }])({ a: 1, b: 2, c: 3 }), {
    a: 2,
    b: 1,
    c: 3,
  });
  assert.deepEqual(compileTransform([{ rename: { from: "to" } }])({ other: 1 }), { other: 1 });
  assert.deepEqual(compileTransform([{ rename: { from: "to" } }])({ from: null, to: 5 }), {
    to: null,
  });
});

Deno.test("compileTransform() drops and picks top-level fields", () => {
  const event = { a: 1, b: { c: 2 }, d: 3 };
  assert.deepEqual(compileTransform([{ drop: ["b", "missing"] }])(event), { a: 1, d: 3 });
  assert.deepEqual(compileTransform([{ pick: ["d", "a", "missing"] }])(event), { d: 3, a: 1 });
  assert.deepEqual(compileTransform([{ pick: [] }])(event), {});
});

Deno.test("compileTransform() turns evaluation errors into TransformError naming the step", () => {
  const filter = transformError(compileTransform([{ filter: "event.missing > 1.0" }]), {});
  assert.equal(filter.path, "transform[0].filter");
  assert.equal(filter.message, "Expression failed: No such key: missing");
  assert.ok(filter.cause instanceof Error);

  const set = transformError(
    compileTransform([{ drop: [] }, { set: { ok: "1", bad: "event.amount + 'x'" } }]),
    { amount: 1.5 },
  );
  assert.equal(set.path, "transform[1].set.bad");
  assert.match(set.message, /^Expression failed: .*no such overload/);

  // What it quotes of the event is bounded as other client input is.
  const key = "k".repeat(5_000);
  const long = transformError(compileTransform([{ set: { x: "event[event.k]" } }]), { k: key });
  assert.equal(
    long.message,
    `Expression failed: No such key: ${"k".repeat(243)}… (5013 characters)`,
  );
});

Deno.test("compileTransform() rejects an event whose expression goes past the evaluation budget, naming the step", () => {
  const transform = compileTransform([
    { set: { n: "size(event.items)" } },
    { filter: "event.items.all(a, event.items.all(b, event.items.all(c, a + b + c > 0.0)))" },
  ]);
  const items = Array.from({ length: 100 }, (_, i) => i + 1);
  const over = transformError(transform, { items });
  assert.equal(over.path, "transform[1].filter");
  assert.equal(
    over.message,
    "Expression failed: Expression exceeded its evaluation budget of 100000 steps",
  );
  // The same filter over a short list is within it.
  assert.deepEqual(transform({ items: [1, 2] }), { items: [1, 2], n: 2 });
  // One whose worst case over literal lists is past it is refused with its path at compile time.
  const L = `[${Array.from({ length: 300 }, (_, i) => i + 1).join(",")}]`;
  assert.throws(
    () => compileTransform([{ filter: `${L}.all(a, ${L}.all(b, ${L}.all(c, a + b + c > 0)))` }]),
    {
      name: "ExpressionError",
      message: /^transform\[0\]\.filter: .*may take more than 100000 steps/,
    },
  );
});

Deno.test("compileTransform() rejects an event whose matches() calls go past their budget, naming the step", () => {
  const transform = compileTransform([
    { set: { n: "size(event.s)" } },
    { filter: `event.s.matches("${"[a-z]{1000}".repeat(4)}[^a]")` },
  ]);
  const over = transformError(transform, { s: "a".repeat(5_000) });
  assert.equal(over.path, "transform[1].filter");
  assert.equal(
    over.message,
    "Expression failed: Expression exceeded its matches() budget of 262144 (text characters × instructions a pattern may visit a character, per evaluation): a pattern of 4003 instructions over 5000 characters costs 20015000",
  );
  // The same filter over a short text runs.
  assert.equal(transform({ s: "a".repeat(60) }), null);
});

Deno.test("compileTransform() reports values JSON cannot hold as a TransformError", () => {
  const infinite = transformError(compileTransform([{ set: { r: "event.a / 0.0" } }]), { a: 1 });
  assert.equal(infinite.path, "transform[0].set.r");
  assert.equal(infinite.message, "Expression failed: Number Infinity is not finite");
  const huge = transformError(compileTransform([{ set: { n: "9007199254740993" } }]), {});
  assert.equal(
    huge.message,
    "Expression failed: Integer 9007199254740993 is outside the safe JSON range",
  );
  // An int() past the int64 range fails as CEL specifies, not as an int of 301 digits quoted whole.
  const past = transformError(compileTransform([{ set: { n: "int(event.big)" } }]), { big: 1e300 });
  assert.equal(past.path, "transform[0].set.n");
  assert.equal(past.message, "Expression failed: int() of 1e+300 is out of the int64 range");
  // A map's key cel-js would leave out rejects the event, rather than writing {} silently.
  const tags = compileTransform([{ set: { tags: "{event.tag: 1}" } }]);
  const dropped = transformError(tags, { tag: "constructor" });
  assert.equal(dropped.path, "transform[0].set.tags");
  assert.equal(
    dropped.message,
    "Expression failed: map key 'constructor' is not allowed: it would be left out of the map (no event may hold that key either)",
  );
  assert.deepEqual(tags({ tag: "sale" }), { tag: "sale", tags: { sale: 1 } });
});

Deno.test("compileTransform() rejects an event whose set values are over MAX_SET_BYTES together: a 62 KB event no longer becomes 58 MB", () => {
  // Within its evaluation budget, this made an event of 1,000 items and a 58 KB order 58 MB.
  const lines = compileTransform([{
    set: { lines: "event.items.map(i, {'item': i, 'order': event.order})" },
  }]);
  const order = { note: "a".repeat(58_000) };
  const error = transformError(lines, { items: Array.from({ length: 1000 }, (_, i) => i), order });
  assert.equal(error.path, "transform[0].set.lines");
  assert.equal(
    error.message,
    `Values set in one event are over ${MAX_SET_BYTES} bytes (compact JSON in UTF-8) together`,
  );
  // One order, set once, is within it.
  assert.deepEqual(lines({ items: [1], order }), {
    items: [1],
    order,
    lines: [{ item: 1, order }],
  });
});

Deno.test("compileTransform() refuses a set value over MAX_SET_BYTES before copying what it references: each reference is read until the bound, not once per reference", () => {
  // An event of about 59 KB: 1,000 items and an order of 4,400 keys, which each item's map
  // references (the evaluation budget does not charge for a reference). Converted whole before it
  // was measured, the order was copied once per item: 4.4 million reads, over a second per event.
  const lines = compileTransform([{
    set: { lines: "event.items.map(i, {'item': i, 'order': event.order})" },
  }]);
  const fields = Object.fromEntries(Array.from({ length: 4400 }, (_, i) => [`k${i}`, i]));
  let reads = 0;
  const order = new Proxy(fields, {
    get(target, key, receiver) {
      reads++;
      return Reflect.get(target, key, receiver);
    },
  });
  const event = { items: Array.from({ length: 1000 }, (_, i) => i), order };
  assert.ok(JSON.stringify(event).length < 60_000);
  reads = 0;
  const error = transformError(lines, event);
  assert.equal(error.path, "transform[0].set.lines");
  assert.equal(
    error.message,
    `Values set in one event are over ${MAX_SET_BYTES} bytes (compact JSON in UTF-8) together`,
  );
  // The order is about 58 KB of JSON: its second copy is past the bound, so at most two are read.
  assert.ok(reads <= 2 * 4400, `${reads} reads of the order's fields`);
});

Deno.test("compileTransform() measures set values as JSON.stringify writes them, in UTF-8, over all set steps of an event", () => {
  const copy = compileTransform([{ set: { a: "event.a" } }]);
  // Each value, its JSON text (quotes and escapes included) in UTF-8 bytes, at the bound and past it.
  const samples: unknown[] = [
    "x",
    "ascii only, no escapes: 0123456789 ~!@#$%^&*()_+-=[]{}|;:',.<>/?`",
    { ascii: ["plain", "text"] },
    "\u00e9",
    "\u4e00",
    "\u{1f600}",
    "\n",
    "\u0001",
    '"',
    "\ud800",
    -0,
    1.5e-300,
    true,
    null,
    { "k\u00e9": [1, "\u0002"] },
  ];
  for (const sample of samples) {
    const bytes = new TextEncoder().encode(JSON.stringify(sample)).length;
    const count = Math.floor((MAX_SET_BYTES - 1) / (bytes + 1));
    const list = Array.from({ length: count }, () => sample);
    const listBytes = new TextEncoder().encode(JSON.stringify(list)).length;
    assert.ok(listBytes <= MAX_SET_BYTES && listBytes + bytes + 1 > MAX_SET_BYTES);
    assert.deepEqual(copy({ a: list })!.a, list, JSON.stringify(sample));
    transformError(copy, { a: [...list, sample] });
  }
  // Values CEL builds (maps, bytes as base64, timestamps, uint, int), measured before conversion.
  const built = compileTransform([{
    set: {
      a: "[event.pad, {'m': 1, 2u: b'abcd', 'ts': timestamp('2024-01-01T00:00:00Z'), 'n': -5, 'f': 2.5, 'b': true, 'z': null, 'e': '\u00e9'}]",
    },
  }]);
  const unpadded = new TextEncoder().encode(JSON.stringify(built({ pad: "" })!.a)).length;
  const pad = "a".repeat(MAX_SET_BYTES - unpadded);
  const exact = built({ pad })!.a;
  assert.equal(new TextEncoder().encode(JSON.stringify(exact)).length, MAX_SET_BYTES);
  transformError(built, { pad: pad + "a" });
  // The string of exactly MAX_SET_BYTES bytes, then one more.
  assert.equal(
    (copy({ a: "a".repeat(MAX_SET_BYTES - 2) }) as { a: string }).a.length,
    MAX_SET_BYTES - 2,
  );
  transformError(copy, { a: "a".repeat(MAX_SET_BYTES - 1) });
  // Steps and fields of one event count together; the next event starts again.
  const half = "a".repeat(MAX_SET_BYTES / 2);
  const twice = compileTransform([{ set: { a: "event.s" } }, { set: { b: "event.s" } }]);
  assert.equal(transformError(twice, { s: half }).path, "transform[1].set.b");
  assert.equal(
    transformError(compileTransform([{ set: { a: "event.s", b: "event.s" } }]), { s: half }).path,
    "transform[0].set.b",
  );
  const short = "a".repeat(MAX_SET_BYTES / 2 - 2);
  assert.deepEqual(twice({ s: short }), { s: short, a: short, b: short });
  assert.deepEqual(twice({ s: short }), { s: short, a: short, b: short });
});

Deno.test("compileTransform() rejects large bytes set by the size of their base64, not a stack overflow", () => {
  const set = compileTransform([{ set: { b: "bytes(event.s + event.s + event.s)" } }]);
  const error = transformError(set, { s: "a".repeat(60_000) });
  assert.equal(error.path, "transform[0].set.b");
  assert.equal(
    error.message,
    `Values set in one event are over ${MAX_SET_BYTES} bytes (compact JSON in UTF-8) together`,
  );
  assert.equal(set({ s: "abc" })!.b, btoa("abcabcabc"));
});

Deno.test("compileTransform() refuses a bad expression at compile time, naming the step", () => {
  assert.throws(() => compileTransform([{ filter: "true" }, { filter: "event.a >" }]), {
    name: "ExpressionError",
    message: /^transform\[1\]\.filter: Invalid expression 'event\.a >'/,
  });
  assert.throws(
    () => compileTransform([{ set: { good: "1", bad: "nope()" } }]),
    (error: unknown) => {
      assert.ok(error instanceof ExpressionError);
      assert.match(error.message, /^transform\[0\]\.set\.bad: Invalid expression 'nope\(\)'/);
      assert.ok(error.cause instanceof ExpressionError);
      return true;
    },
  );
});

Deno.test("compileTransform() answers each event for itself, also after one failed, through the interpreter and the fast path", () => {
  // size() and string concatenation run in the interpreter; the comparison on the fast path.
  const transform = compileTransform([
    { filter: "size(event.tags) > 0" },
    { set: { label: "event.name + '!'", many: "size(event.tags) > 1", big: "event.n > 5.0" } },
  ]);
  const events = [
    { name: "a", tags: ["x"], n: 1 },
    { name: "b", tags: ["x", "y"], n: 9 },
    { name: "c", tags: [], n: 3 },
  ];
  for (let round = 0; round < 3; round++) {
    assert.deepEqual(transform(events[0]), { ...events[0], label: "a!", many: false, big: false });
    assert.equal(
      transformError(transform, { name: 1, tags: ["x"], n: 1 }).path,
      "transform[1].set.label",
    );
    assert.deepEqual(transform(events[1]), { ...events[1], label: "b!", many: true, big: true });
    assert.equal(transform(events[2]), null);
  }
  // The events themselves are left as they were.
  assert.deepEqual(events[0], { name: "a", tags: ["x"], n: 1 });
});

Deno.test("compileTransform() with inPlace writes set fields into the event it is given, and a failed set writes nothing", () => {
  const transform = compileTransform([
    { filter: "event.n > 0.0" },
    { set: { double: "event.n * 2.0", n: "event.n + 1.0" } },
  ]);
  const event: Record<string, unknown> = { n: 2, keep: "k" };
  assert.equal(transform(event, { inPlace: true }), event);
  // Both expressions saw the event as it was before the step.
  assert.deepEqual(event, { n: 3, keep: "k", double: 4 });
  const failing: Record<string, unknown> = { n: 1, keep: "k" };
  const boom = compileTransform([{ set: { a: "1.0", b: "event.missing" } }]);
  assert.throws(() => boom(failing, { inPlace: true }), TransformError);
  assert.deepEqual(failing, { n: 1, keep: "k" });
  // A step of one field (its own path through compileStep) likewise: a failed evaluation, and a
  // value with no JSON form, write nothing and name the field.
  for (
    const [source, message] of [["event.missing", /^Expression failed: /], [
      "duration('1s')",
      /cannot be stored as JSON/,
    ]] as const
  ) {
    const one = compileTransform([{ set: { only: source } }]);
    const error = transformError(() => one(failing, { inPlace: true }), {});
    assert.equal(error.path, "transform[0].set.only");
    assert.match(error.message, message);
    assert.deepEqual(failing, { n: 1, keep: "k" });
  }
  const one = compileTransform([{ set: { only: "event.n + 1.0" } }]);
  assert.equal(one(failing, { inPlace: true }), failing);
  assert.deepEqual(failing, { n: 1, keep: "k", only: 2 });
});

Deno.test("compileTransform() gives the same events in place as on copies, and leaves what it copies unchanged", () => {
  const steps = [
    { filter: "!has(event.skip) || !event.skip" },
    { set: { a: "has(event.b) ? event.b : 0.0", b: "has(event.a) ? event.a : 1.0" } },
    { rename: { a: "c" } },
    { set: { d: "has(event.c) ? event.c + 1.0 : 5.0" } },
    { drop: ["b"] },
    { set: { e: "has(event.d) && event.d > 2.0" } },
    { pick: ["c", "d", "e", "skip"] },
    { set: { f: "has(event.e) && event.e" } },
  ];
  fc.assert(
    fc.property(
      fc.subarray(steps, { minLength: 1 }),
      fc.record(
        {
          a: fc.double({ noNaN: true, noDefaultInfinity: true }),
          b: fc.integer(),
          skip: fc.boolean(),
        },
        { requiredKeys: [], noNullPrototype: true },
      ),
      (chosen, event) => {
        const transform = compileTransform(chosen as Parameters<typeof compileTransform>[0]);
        const original = structuredClone(event);
        const copied = transform(event);
        assert.deepEqual(event, original);
        const own = structuredClone(event) as Record<string, unknown>;
        const inPlace = transform(own, { inPlace: true });
        assert.deepEqual(inPlace, copied);
        // Without a step that copies, the result is the event itself.
        const copies = chosen.some((step) => "rename" in step || "drop" in step || "pick" in step);
        if (inPlace !== null && !copies) assert.equal(inPlace, own);
      },
    ),
  );
});

Deno.test("compileTransform() of one and of two steps copies an event it may not change", () => {
  const event = () => ({ a: 1, b: 2 });
  const given = event();
  // One step, a set: a copy, unless in place.
  const one = compileTransform([{ set: { c: "event.a + 1.0" } }]);
  assert.deepEqual(one(given), { a: 1, b: 2, c: 2 });
  assert.deepEqual(given, event());
  assert.equal(one(given, { inPlace: true }), given);
  assert.deepEqual(given, { a: 1, b: 2, c: 2 });
  // A filter passes the event itself on: the set after it copies it, unless in place.
  const kept = event();
  const filtered = compileTransform([{ filter: "event.a > 0.0" }, { set: { c: "event.b" } }]);
  assert.deepEqual(filtered(kept), { a: 1, b: 2, c: 2 });
  assert.deepEqual(kept, event());
  assert.equal(filtered({ a: 0 }), null);
  assert.equal(filtered(kept, { inPlace: true }), kept);
  assert.deepEqual(kept, { a: 1, b: 2, c: 2 });
  // A rename copies: the set after it writes into that copy, the event given is left as it was.
  const renamed = compileTransform([{ rename: { a: "x" } }, { set: { c: "event.x" } }]);
  const source = event();
  assert.deepEqual(renamed(source), { b: 2, x: 1, c: 1 });
  assert.deepEqual(source, event());
});

Deno.test("compileTransform() given a request's pattern budget charges it each pattern taken from an event it compiles (its instructions and PATTERN_COMPILE_OVERHEAD), a pattern still kept compiled nothing, and past it fails the event however `||` would absorb it", () => {
  // Patterns no other test compiles (the compiled ones are kept between evaluations).
  const pattern = (name: string) => `^(?:hello|budget-${name}.{0,100})`;
  // Each pattern compiled costs its instructions and PATTERN_COMPILE_OVERHEAD.
  const size = patternCompileSize(pattern("a")) + PATTERN_COMPILE_OVERHEAD;
  const transform = compileTransform([
    { filter: "event.text.matches(event.p) || event.text.matches('^never$') || true" },
  ]);
  const patterns = new RequestPatternBudget({ maxCost: 2 * size + 1 });
  const run = (name: string) => transform({ text: "hello", p: pattern(name) }, { patterns });
  assert.deepEqual(run("a"), { text: "hello", p: pattern("a") });
  assert.equal(patterns.left, size + 1);
  // Compiled once: again it costs nothing, and a literal pattern never does.
  run("a");
  assert.equal(patterns.left, size + 1);
  run("b");
  assert.equal(patterns.left, 1);
  const error = transformError((event) => transform(event, { patterns }), {
    text: "hello",
    p: pattern("c"),
  });
  assert.equal(error.path, "transform[0].filter");
  assert.equal(error.message, `Expression failed: ${requestPatternBudgetMessage(2 * size + 1)}`);
  assert.equal(patterns.cut, true);
  assert.equal(patterns.left, 1);
  // Cut: a pattern still kept compiled costs nothing; another fails.
  run("a");
  assert.throws(() => run("d"), { name: "TransformError" });
  // Without a budget (a transform outside ingest), each evaluation's own bound alone.
  assert.deepEqual(transform({ text: "hello", p: pattern("e") }), {
    text: "hello",
    p: pattern("e"),
  });
});
