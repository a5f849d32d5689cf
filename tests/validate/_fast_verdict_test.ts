import assert from "node:assert/strict";
import { Ajv } from "ajv";
import fc from "fast-check";
import { z } from "zod";
import { compileFastVerdict } from "../../src/validate/_fast_verdict.ts";
import { withLinearRegExp } from "../../src/validate/linear_regexp.ts";
import {
  checkEventShape,
  compileEventSchema,
  eventIssueMessage,
  eventValidator,
  prepareEventSchema,
  SchemaCompileError,
  validateEvent,
} from "../../src/validate/mod.ts";
import { evalAtRoot } from "../_eval.ts";

const NAMES = ["a", "b", "c", "1", "id"];
const EXTRA_NAMES = ["x", "y", "2"];

/** Values an event field may hold, with the edges where zod and Ajv could disagree. */
const value = fc.oneof(
  fc.constantFrom(
    "",
    "a",
    "ab",
    "b",
    "1",
    "😀",
    "a😀",
    "\u00e9",
    0,
    -0,
    1,
    1.5,
    -3,
    2 ** 53,
    2 ** 53 - 1,
    -(2 ** 53),
    1e20,
    1e308,
    // What JSON.parse makes of 1e400: refused after the schema's errors.
    Infinity,
    -Infinity,
    true,
    false,
    null,
  ),
  fc.string({ maxLength: 4 }),
  fc.integer({ min: -5, max: 5 }),
  fc.double({ noNaN: true }),
  fc.array(fc.constantFrom(1, "a", null, true, 2 ** 53), { maxLength: 3 }),
  fc.constant({ a: 1 }),
  fc.constant([{ a: 1 }]),
);

/** Leaf schemas in the fast subset, and some outside it (which must get no fast verdict). */
const leaf: fc.Arbitrary<unknown> = fc.oneof(
  fc.constant({}),
  fc.boolean(),
  fc.record({
    type: fc.constantFrom("string", "number", "integer", "boolean", "null"),
  }),
  fc.record({
    type: fc.constantFrom(["string", "null"], ["integer", "string"], ["number", "boolean"]),
  }),
  fc.record({ type: fc.constant("string"), pattern: fc.constantFrom("^a", "b$", "^.$", "\\d") }),
  fc.record(
    {
      type: fc.constantFrom("number", "integer"),
      minimum: fc.constantFrom(-1, 0, 1.5),
      maximum: fc.constantFrom(1, 2 ** 53, 1e20),
      exclusiveMinimum: fc.constantFrom(-3, 0),
      exclusiveMaximum: fc.constantFrom(1, 1e300),
    },
    { requiredKeys: ["type"] },
  ),
  fc.record({
    enum: fc.uniqueArray(fc.constantFrom(1, "1", 0, "a", true, null, 1.5), {
      minLength: 1,
      maxLength: 3,
    }),
  }),
  fc.record({ const: fc.constantFrom(1, "a", null, false) }),
  fc.record(
    {
      type: fc.constant("array"),
      items: fc.constantFrom({}, { type: "integer" }, { type: "string" }, { enum: [1, "a"] }),
      minItems: fc.constantFrom(0, 1),
      maxItems: fc.constantFrom(1, 2),
    },
    { requiredKeys: ["type"] },
  ),
  fc.record({
    type: fc.constant("string"),
    description: fc.constant("A field"),
    title: fc.constant("Field"),
  }),
  // Outside the subset.
  fc.constantFrom(
    { type: "string", minLength: 2 },
    { type: "string", maxLength: 1 },
    { type: "string", format: "email" },
    { type: "number", multipleOf: 0.5 },
    { type: "number", default: 1 },
    { type: "object", properties: { a: { type: "number" } } },
    { anyOf: [{ type: "string" }, { type: "number" }] },
    { enum: [{ a: 1 }] },
  ),
);

const schema = fc.record(
  {
    properties: fc.dictionary(fc.constantFrom(...NAMES), leaf, { maxKeys: 4 }),
    required: fc.uniqueArray(fc.constantFrom(...NAMES), { maxLength: 3 }),
    additionalProperties: fc.oneof(fc.boolean(), leaf),
  },
  { requiredKeys: [] },
).map((parts) => ({ type: "object", ...parts }));

/** Events with their keys in any order (insertion order is what zod's copy may change). */
const event = fc.uniqueArray(fc.tuple(fc.constantFrom(...NAMES, ...EXTRA_NAMES), value), {
  selector: ([key]) => key,
  maxLength: 6,
}).map((entries) => Object.fromEntries(entries) as Record<string, unknown>);

/** The path and error of the first number out of range in a value, as validation names it. */
function outOfRange(value: unknown, path: string[] = []): { path: string; message: string } | null {
  if (typeof value === "number" && !Number.isFinite(value)) {
    return {
      path: path.join("."),
      message: "Number is out of range (JSON reads 1e400 as Infinity, which it passes on as null)",
    };
  }
  if (typeof value !== "object" || value === null) return null;
  for (const [key, item] of Object.entries(value)) {
    const found = outOfRange(item, [...path, key]);
    if (found) return found;
  }
  return null;
}

/**
 * What validation answered before the fast verdict: the shape check, then zod alone, then a
 * number out of range refused in an event zod took.
 */
function zodOnly(input: Record<string, unknown>, jsonSchema: Record<string, unknown>) {
  const shape = checkEventShape(input);
  if (shape.length > 0) return { ok: false, errors: shape };
  // Patterns as compileEventSchema gives them to zod: tested by RE2.
  const result = withLinearRegExp(() =>
    // deno-lint-ignore no-explicit-any
    z.fromJSONSchema(prepareEventSchema(jsonSchema) as any)
  ).safeParse(input);
  if (!result.success) {
    return {
      ok: false,
      errors: result.error.issues.map((issue) => ({
        path: issue.path.map(String).join("."),
        message: eventIssueMessage(issue, input),
      })),
    };
  }
  const nonFinite = outOfRange(input);
  if (nonFinite) return { ok: false, errors: [nonFinite] };
  return { ok: true, event: result.data };
}

Deno.test("validateEvent() with the fast verdict answers exactly as zod alone, byte for byte", () => {
  let fastSchemas = 0;
  let fastEvents = 0;
  let total = 0;
  fc.assert(
    fc.property(schema, fc.array(event, { minLength: 1, maxLength: 8 }), (jsonSchema, events) => {
      let compiled: ReturnType<typeof compileEventSchema>;
      try {
        compiled = compileEventSchema(jsonSchema);
      } catch (error) {
        // Refused (an enum of objects, say): no verdict to compare.
        if (error instanceof SchemaCompileError) return;
        throw error;
      }
      const fast = compileFastVerdict(prepareEventSchema(jsonSchema));
      if (fast) fastSchemas += 1;
      const validate = eventValidator(compiled);
      for (const input of events) {
        total += 1;
        if (fast?.(input)) fastEvents += 1;
        const expected = JSON.stringify(zodOnly(input, jsonSchema));
        assert.equal(JSON.stringify(validateEvent(input, compiled)), expected);
        const batch = validate(input);
        assert.equal(
          JSON.stringify(
            Array.isArray(batch) ? { ok: false, errors: batch } : { ok: true, event: batch },
          ),
          expected,
        );
      }
    }),
    { numRuns: 1500 },
  );
  // The comparison is worth something only if the fast verdict often answered.
  assert.ok(fastSchemas > 300, `${fastSchemas} schemas had a fast verdict`);
  assert.ok(fastEvents > total / 20, `${fastEvents} of ${total} events took the fast verdict`);
});

Deno.test("validateEvent() hands back the event itself when the fast verdict accepts it, zod's copy otherwise", () => {
  const schema = compileEventSchema({
    type: "object",
    properties: { id: { type: "string" }, amount: { type: "number" } },
    required: ["id"],
  });
  const inOrder = { id: "e1", amount: 5, extra: true };
  const validation = validateEvent(inOrder, schema);
  assert.ok(validation.ok);
  assert.equal(validation.event, inOrder);
  // zod writes schema keys first: this event's copy differs in key order, so zod makes it.
  const outOfOrder = { extra: true, amount: 5, id: "e1" };
  const copied = validateEvent(outOfOrder, schema);
  assert.ok(copied.ok);
  assert.notEqual(copied.event, outOfOrder);
  assert.deepEqual(Object.keys(copied.event), ["id", "amount", "extra"]);
});

Deno.test("compileFastVerdict() gives no verdict for schemas outside its subset", () => {
  for (
    const jsonSchema of [
      { type: "object", properties: { a: { type: "string", maxLength: 3 } } },
      { type: "object", properties: { a: { type: "string", format: "email" } } },
      { type: "object", properties: { a: { type: "number", default: 1 } } },
      { type: "object", properties: { a: { type: "object" } } },
      { type: "object", patternProperties: { "^a": {} } },
      { properties: { a: { type: "string" } } },
      { type: "object", $schema: "http://json-schema.org/draft-04/schema#" },
    ]
  ) {
    assert.equal(compileFastVerdict(jsonSchema), null, JSON.stringify(jsonSchema));
  }
});

Deno.test("a schema with string lengths gets no fast verdict, and validation counts code points (an emoji one, a lone surrogate one) as zod and Ajv both do", () => {
  const jsonSchema = {
    type: "object",
    properties: { a: { type: "string", minLength: 2, maxLength: 2 } },
  };
  assert.equal(compileFastVerdict(prepareEventSchema(jsonSchema)), null);
  const compiled = compileEventSchema(jsonSchema);
  const strings = ["😀😀", "a😀", "\uD800\uD800", "\uDC00\uD800", "😀", "😀😀😀", "aaa"];
  const verdicts = strings.map((a) => validateEvent({ a }, compiled).ok);
  assert.deepEqual(verdicts, [true, true, true, true, false, false, false]);
  const ajv = new Ajv().compile(jsonSchema.properties.a);
  assert.deepEqual(strings.map((a) => ajv(a)), verdicts);
});

Deno.test("validateEvent() with the fast verdict reads patterns, integers and numbers as zod does", () => {
  const schema = {
    type: "object",
    properties: {
      one: { type: "string", pattern: "^.$" },
      count: { type: "integer" },
      amount: { type: "number" },
    },
  };
  const compiled = compileEventSchema(schema);
  for (
    const input of [
      // RE2 reads code points: `.` is the whole emoji, for zod and the verdict alike.
      { one: "😀" },
      { one: "a" },
      // zod's integers are safe integers.
      { count: 2 ** 53 },
      { count: 2 ** 53 - 1 },
      { count: 1e20 },
      // JSON.parse reads 1e400 as Infinity, which zod refuses.
      { amount: Infinity },
      { amount: 1e308 },
    ]
  ) {
    assert.equal(
      JSON.stringify(validateEvent(input, compiled)),
      JSON.stringify(zodOnly(input, schema)),
      JSON.stringify(input),
    );
  }
});

Deno.test("Where code generation from strings is disallowed, no fast verdict is compiled and zod alone validates, with the same answers", async () => {
  const code = [
    'import { compileFastVerdict } from "./src/validate/_fast_verdict.ts";',
    'import { compileEventSchema, eventValidator, withRequiredProperties } from "./src/validate/mod.ts";',
    "let generates = true;",
    'try { new Function("return 1"); } catch { generates = false; }',
    'const json = { type: "object", properties: { id: { type: "string" }, n: { type: "number", minimum: 0 } }, required: ["id"] };',
    "const validate = eventValidator(compileEventSchema(json));",
    "console.log(JSON.stringify({",
    "  generates,",
    "  fast: compileFastVerdict(withRequiredProperties(json)) !== null,",
    '  answers: [{ id: "a", n: 1 }, { id: 1 }, { id: "b", n: -1 }, { n: 2 }].map((event) => validate(event)),',
    "}));",
  ].join("\n");
  const run = async (flags: string[]) => {
    const output = await evalAtRoot(code, { flags });
    assert.equal(output.code, 0, output.stderr);
    return JSON.parse(output.stdout);
  };
  const [usual, disallowed] = await Promise.all([
    run([]),
    run(["--v8-flags=--disallow-code-generation-from-strings"]),
  ]);
  assert.deepEqual([usual.generates, usual.fast], [true, true]);
  assert.deepEqual([disallowed.generates, disallowed.fast], [false, false]);
  assert.deepEqual(disallowed.answers, usual.answers);
  assert.deepEqual(usual.answers[0], { id: "a", n: 1 });
  assert.deepEqual(usual.answers.slice(1).map((answer: { path: string }[]) => answer[0].path), [
    "id",
    "n",
    "id",
  ]);
});

Deno.test("compileFastVerdict holds no memory for verdicts no longer used: 2,000 compilations of a redefined stream's schema keep under 2 MB", async () => {
  // One Ajv for the process kept ~4 KB of each compilation in its code scope, removeSchema or
  // not: 8 MB here, and without bound as streams are redefined at run time.
  const { code, stdout, stderr } = await evalAtRoot(
    `
    import { compileFastVerdict } from "./src/validate/_fast_verdict.ts";
    const schema = () => ({ type: "object", properties: { a: { type: "number" }, b: { type: "string" } } });
    const heap = () => { gc(); gc(); return Deno.memoryUsage().heapUsed; };
    for (let i = 0; i < 200; i++) compileFastVerdict(schema());
    const before = heap();
    for (let i = 0; i < 2000; i++) compileFastVerdict(schema());
    console.log(heap() - before);
    `,
    { flags: ["--v8-flags=--expose-gc"] },
  );
  assert.equal(code, 0, stderr);
  const grown = Number(stdout.trim());
  assert.ok(grown < 2_000_000, `the heap grew ${grown} bytes over 2,000 compilations`);
});

Deno.test("a format date-time or time keeps its fast verdict, which refuses a leap second, so zod judges it (taken at 23:59:60 UTC only)", () => {
  const jsonSchema = {
    type: "object",
    properties: {
      at: { type: "string", format: "date-time" },
      clock: { type: "string", format: "time" },
    },
  };
  const fast = compileFastVerdict(prepareEventSchema(jsonSchema));
  assert.notEqual(fast, null);
  assert.equal(fast!({ at: "2016-12-31T23:59:59Z", clock: "10:00:00Z" }), true);
  assert.equal(fast!({ at: "2016-12-31T23:59:60Z" }), false);
  const compiled = compileEventSchema(jsonSchema);
  assert.equal(
    validateEvent({ at: "2016-12-31T23:59:60Z", clock: "18:59:60-05:00" }, compiled).ok,
    true,
  );
  assert.equal(validateEvent({ at: "2016-12-31T23:58:60Z" }, compiled).ok, false);
  assert.equal(validateEvent({ clock: "10:00:60Z" }, compiled).ok, false);
});
