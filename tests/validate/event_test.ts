import assert from "node:assert/strict";
import {
  checkEventShape,
  compileEventSchema,
  describe,
  eventValidator,
  largeExpansion,
  listedErrors,
  malformedKeyword,
  MAX_EVENT_MATCHING_COST,
  SchemaCompileError,
  schemaPatterns,
  UNMERGABLE_MESSAGE,
  URI_SPACE_MESSAGE,
  validateEvent,
} from "../../src/validate/mod.ts";

/** `{a: {a: … {}}}` with `levels` objects in all (the outer event counts as 1). */
function nestedObjects(levels: number): Record<string, unknown> {
  let node: Record<string, unknown> = {};
  for (let i = 1; i < levels; i++) node = { a: node };
  return node;
}

/** `[[…[]…]]` nested `levels` deep, built without recursion. */
function nestedArrays(levels: number): unknown[] {
  let node: unknown[] = [];
  for (let i = 1; i < levels; i++) node = [node];
  return node;
}

Deno.test("checkEventShape() accepts a plain object with scalars, arrays and objects", () => {
  assert.deepEqual(
    checkEventShape({ a: 1, b: "x", c: null, d: [1, { e: true }], f: { g: [] } }),
    [],
  );
  assert.deepEqual(checkEventShape({}), []);
});

Deno.test("checkEventShape() refuses anything that is not an object", () => {
  const cases: Array<[unknown, string]> = [
    [null, "null"],
    [[], "an array"],
    [[{ a: 1 }], "an array"],
    ["text", "a string"],
    [5, "a number"],
    [true, "a boolean"],
  ];
  for (const [value, described] of cases) {
    assert.deepEqual(checkEventShape(value), [
      { path: "", message: `Event must be a JSON object, got ${described}` },
    ]);
  }
});

Deno.test("checkEventShape() allows exactly maxDepth levels of nesting", () => {
  assert.deepEqual(checkEventShape(nestedObjects(32)), []);
  const errors = checkEventShape(nestedObjects(33));
  assert.equal(errors.length, 1);
  assert.equal(errors[0].message, "Event is nested deeper than 32 levels");
  assert.equal(errors[0].path, Array(32).fill("a").join("."));
  assert.deepEqual(checkEventShape(nestedObjects(3), { maxDepth: 3 }), []);
  assert.deepEqual(checkEventShape(nestedObjects(4), { maxDepth: 3 }), [
    { path: "a.a.a", message: "Event is nested deeper than 3 levels" },
  ]);
});

Deno.test("checkEventShape() counts arrays as levels and names array indexes in the path", () => {
  assert.deepEqual(checkEventShape({ list: [[1]] }, { maxDepth: 3 }), []);
  assert.deepEqual(checkEventShape({ list: [0, [[1]]] }, { maxDepth: 3 }), [
    { path: "list.1.0", message: "Event is nested deeper than 3 levels" },
  ]);
  // Scalars do not add a level.
  assert.deepEqual(checkEventShape({ a: { b: 1 } }, { maxDepth: 2 }), []);
});

Deno.test("checkEventShape() refuses a 100000-deep array without overflowing the stack", () => {
  const event = { deep: nestedArrays(100_000) };
  const errors = checkEventShape(event);
  assert.equal(errors.length, 1);
  assert.equal(errors[0].message, "Event is nested deeper than 32 levels");
  assert.ok(errors[0].path.startsWith("deep.0.0"));
  const parsed = JSON.parse(`{"deep":${"[".repeat(100_000)}${"]".repeat(100_000)}}`);
  assert.equal(checkEventShape(parsed)[0].message, "Event is nested deeper than 32 levels");
  const top = checkEventShape(nestedArrays(100_000));
  assert.equal(top[0].message, "Event must be a JSON object, got an array");
});

Deno.test("checkEventShape() refuses __proto__ as JSON.parse makes it, at any depth", () => {
  const top = JSON.parse('{"ok": 1, "__proto__": {"admin": true}}');
  assert.deepEqual(checkEventShape(top), [
    { path: "__proto__", message: "Key '__proto__' is not allowed in events" },
  ]);
  const nested = JSON.parse('{"user": {"tags": [{"__proto__": {}}]}}');
  assert.deepEqual(checkEventShape(nested), [
    { path: "user.tags.0.__proto__", message: "Key '__proto__' is not allowed in events" },
  ]);
});

Deno.test("checkEventShape() refuses constructor and prototype keys", () => {
  assert.deepEqual(checkEventShape({ constructor: { prototype: {} } }), [
    { path: "constructor", message: "Key 'constructor' is not allowed in events" },
  ]);
  assert.deepEqual(checkEventShape({ a: { prototype: 1 } }), [
    { path: "a.prototype", message: "Key 'prototype' is not allowed in events" },
  ]);
  // Only keys are checked, not values.
  assert.deepEqual(checkEventShape({ name: "constructor", list: ["__proto__"] }), []);
});

Deno.test("describe() names JSON value types for messages", () => {
  assert.equal(describe(null), "null");
  assert.equal(describe([]), "an array");
  assert.equal(describe({}), "an object");
  assert.equal(describe("x"), "a string");
  assert.equal(describe(1), "a number");
  assert.equal(describe(false), "a boolean");
});

const orderSchema = compileEventSchema({
  type: "object",
  properties: {
    id: { type: "string", minLength: 1 },
    amount: { type: "number", minimum: 0 },
    user: {
      type: "object",
      properties: { country: { type: "string", maxLength: 2 } },
    },
    tags: { type: "array", items: { type: "string" } },
  },
  required: ["id", "amount"],
});

Deno.test("validateEvent() returns the event when it matches the schema", () => {
  const event = { id: "a", amount: 5, user: { country: "DE" }, tags: ["x"] };
  assert.deepEqual(validateEvent(event, orderSchema), { ok: true, event });
});

Deno.test("validateEvent() reports every schema error with the dotted path of the field", () => {
  const result = validateEvent(
    { amount: -1, user: { country: "DEU" }, tags: ["ok", 7] },
    orderSchema,
  );
  assert.equal(result.ok, false);
  if (result.ok) return;
  const paths = result.errors.map((error) => error.path).sort();
  assert.deepEqual(paths, ["amount", "id", "tags.1", "user.country"]);
  for (const error of result.errors) assert.ok(error.message.length > 0);
  const amount = result.errors.find((error) => error.path === "amount")!;
  assert.match(amount.message, />=\s*0/);
});

Deno.test("validateEvent() checks the shape before the schema", () => {
  assert.deepEqual(validateEvent([1], orderSchema), {
    ok: false,
    errors: [{ path: "", message: "Event must be a JSON object, got an array" }],
  });
  const polluted = JSON.parse('{"id": "a", "amount": 1, "__proto__": {"x": 1}}');
  assert.deepEqual(validateEvent(polluted, orderSchema), {
    ok: false,
    errors: [{ path: "__proto__", message: "Key '__proto__' is not allowed in events" }],
  });
  assert.deepEqual(validateEvent({ id: "a", amount: 1, x: [[1]] }, orderSchema, { maxDepth: 2 }), {
    ok: false,
    errors: [{ path: "x.0", message: "Event is nested deeper than 2 levels" }],
  });
});

Deno.test("validateEvent() keeps fields the schema does not declare", () => {
  const event = { id: "a", amount: 1, extra: { deep: [1, 2] }, note: "kept" };
  const result = validateEvent(event, orderSchema);
  assert.deepEqual(result, { ok: true, event });
});

Deno.test("validateEvent() refuses undeclared fields when additionalProperties is false", () => {
  const strict = compileEventSchema({
    type: "object",
    properties: { id: { type: "string" } },
    additionalProperties: false,
  });
  assert.deepEqual(validateEvent({ id: "a" }, strict), { ok: true, event: { id: "a" } });
  const result = validateEvent({ id: "a", extra: 1 }, strict);
  assert.equal(result.ok, false);
  if (result.ok) return;
  assert.equal(result.errors.length, 1);
  assert.match(result.errors[0].message, /extra/);
});

Deno.test("compileEventSchema() accepts a schema without a type as any object", () => {
  const anything = compileEventSchema({});
  const event = { a: 1, b: [true] };
  assert.deepEqual(validateEvent(event, anything), { ok: true, event });
  assert.equal(validateEvent("text", anything).ok, false);
});

Deno.test("a schema's keywords apply without a type: to values of their type, others pass", () => {
  // [schema, events it accepts, events it refuses with the path of the first error]
  const cases: [Record<string, unknown>, unknown[], [unknown, string][]][] = [
    [{ required: ["id"] }, [{ id: null }], [[{}, "id"]]],
    [{ properties: { n: { type: "number" } } }, [{ n: 1 }, {}], [[{ n: "1" }, "n"]]],
    [{ additionalProperties: false, properties: { a: {} } }, [{ a: 1 }], [[{ b: 1 }, ""]]],
    [{ properties: { s: { pattern: "^a" } } }, [{ s: "ab" }, { s: 3 }], [[{ s: "b" }, "s"]]],
    [{ properties: { n: { minimum: 0 } } }, [{ n: 0 }, { n: "x" }], [[{ n: -1 }, "n"]]],
    [{ properties: { s: { maxLength: 2 } } }, [{ s: "ab" }, { s: 123 }], [[{ s: "abc" }, "s"]]],
    [{ properties: { a: { items: { type: "number" } } } }, [{ a: [1] }, { a: "x" }], [[
      { a: ["x"] },
      "a.0",
    ]]],
    [
      { properties: { o: { required: ["x"], properties: { x: { type: "number" } } } } },
      [{ o: { x: 1 } }, { o: 5 }],
      [[{ o: {} }, "o.x"], [{ o: { x: "s" } }, "o.x"]],
    ],
    [
      {
        $defs: { positive: { exclusiveMinimum: 0 } },
        properties: { n: { $ref: "#/$defs/positive" } },
      },
      [{ n: 1 }],
      [[{ n: 0 }, "n"]],
    ],
    [{ anyOf: [{ required: ["a"] }, { required: ["b"] }] }, [{ a: 1 }, { b: 1 }], [[{}, ""]]],
    [{ properties: { n: { allOf: [{ minimum: 1 }, { maximum: 3 }] } } }, [{ n: 2 }, { n: "s" }], [
      [{ n: 4 }, "n"],
    ]],
  ];
  for (const [json, valid, invalid] of cases) {
    const schema = compileEventSchema(json);
    for (const event of valid) {
      assert.deepEqual(validateEvent(event, schema), { ok: true, event }, JSON.stringify(event));
    }
    for (const [event, path] of invalid) {
      const result = validateEvent(event, schema);
      assert.equal(result.ok, false, `${JSON.stringify(json)} accepted ${JSON.stringify(event)}`);
      if (!result.ok) assert.equal(result.errors[0].path, path, JSON.stringify(result.errors));
    }
  }
});

Deno.test("compileEventSchema() refuses keywords zod's converter cannot enforce, dependencies too", () => {
  for (
    const schema of [
      { dependencies: { a: ["b"] } },
      { properties: { o: { type: "object", dependencies: { a: { required: ["b"] } } } } },
    ]
  ) {
    assert.throws(
      () => compileEventSchema(schema),
      (error: unknown) =>
        error instanceof SchemaCompileError &&
        error.message ===
          "Cannot compile event schema: dependencies is not supported (nor are dependentRequired and dependentSchemas)",
    );
  }
  const unsupported = [
    { dependentRequired: { a: ["b"] } },
    { dependentSchemas: { a: { required: ["b"] } } },
    { if: { required: ["a"] }, then: { required: ["b"] } },
    { properties: { a: { not: { type: "string" } } } },
    { unevaluatedProperties: false },
    { properties: { a: { type: "array", unevaluatedItems: false } } },
  ];
  for (const schema of unsupported) {
    assert.throws(() => compileEventSchema(schema), SchemaCompileError, JSON.stringify(schema));
  }
  // A property may be called so.
  const named = compileEventSchema({ properties: { dependencies: { type: "array" } } });
  assert.equal(validateEvent({ dependencies: "x" }, named).ok, false);
});

Deno.test("an untyped subschema's error names the field and the problem, not 'Invalid input'", () => {
  const schema = compileEventSchema({
    properties: { o: { properties: { x: { type: "number" } } }, s: { pattern: "^a" } },
  });
  const result = validateEvent({ o: { x: "s" }, s: "b" }, schema);
  assert.deepEqual(result, {
    ok: false,
    errors: [
      { path: "o.x", message: "Invalid input: expected number, received string" },
      { path: "s", message: "Invalid string: must match pattern /^a/" },
    ],
  });
});

Deno.test("a schema's default fills a missing field, at any depth, and leaves a present one", () => {
  const schema = compileEventSchema({
    properties: {
      plan: { type: "string", default: "free" },
      o: { type: "object", properties: { x: { type: "number", default: 0 } } },
    },
  });
  assert.deepEqual(validateEvent({ o: {} }, schema), {
    ok: true,
    event: { plan: "free", o: { x: 0 } },
  });
  assert.deepEqual(validateEvent({ plan: "pro" }, schema), { ok: true, event: { plan: "pro" } });
});

const CLOSED_E = {
  type: "object",
  properties: { a: { type: "string" } },
  additionalProperties: false,
};

Deno.test("schemas zod's converter would misread are validated as JSON Schema says", () => {
  const strict = (extra: object) => ({ additionalProperties: false, required: ["kind"], ...extra });
  // [schema, events it accepts, events it refuses]
  const cases: [Record<string, unknown>, unknown[], unknown[]][] = [
    // minItems/maxItems without items
    [{ properties: { tags: { type: "array", maxItems: 2 } } }, [{ tags: [1, 2] }], [{
      tags: [1, 2, 3],
    }]],
    [{ properties: { tags: { minItems: 2 } } }, [{ tags: [1, 2] }, { tags: "x" }], [{ tags: [1] }]],
    // additionalProperties: false in combinator members
    [
      {
        allOf: [{
          type: "object",
          properties: { a: { type: "number" } },
          additionalProperties: false,
        }],
      },
      [{ a: 1 }],
      [{ a: 1, evil: 2 }],
    ],
    [
      {
        anyOf: [
          strict({ properties: { kind: { const: "a" }, x: { type: "number" } } }),
          strict({ properties: { kind: { const: "b" }, y: { type: "string" } } }),
        ],
      },
      [{ kind: "a", x: 1 }, { kind: "b", y: "s" }],
      [{ kind: "a", y: "s" }],
    ],
    // $ref with siblings; composition keywords together
    [
      { $defs: { n: { type: "number" } }, properties: { a: { $ref: "#/$defs/n", minimum: 5 } } },
      [{ a: 6 }],
      [{ a: 1 }, { a: "x" }],
    ],
    [
      {
        properties: {
          a: { anyOf: [{ type: "string" }, { type: "number" }], allOf: [{ minimum: 0 }] },
        },
      },
      [{ a: "x" }, { a: 1 }],
      [{ a: true }, { a: -1 }],
    ],
    [
      { properties: { a: { anyOf: [{ type: "string" }], oneOf: [{ type: "number" }] } } },
      [],
      [{ a: 5 }, { a: "s" }],
    ],
    // enum and const beside other keywords
    [{ properties: { a: { type: "string", enum: ["x", 1] } } }, [{ a: "x" }], [{ a: 1 }]],
    [
      { properties: { a: { type: "string", enum: ["ab", "cd"], pattern: "^a" } } },
      [{ a: "ab" }],
      [{ a: "cd" }],
    ],
    [{ properties: { a: { const: 5, maximum: 3 } } }, [], [{ a: 5 }]],
    [{ properties: { a: { enum: [1, 5, "a"], maximum: 3 } } }, [{ a: 1 }, { a: "a" }], [{ a: 5 }]],
    // a required name is not exempt from additionalProperties
    [{ required: ["a"], additionalProperties: { type: "number" } }, [{ a: 1 }], [{ a: "s" }]],
    [{ properties: { id: {} }, required: ["id", "ts"], additionalProperties: false }, [], [{
      id: "x",
      ts: 1,
    }]],
    // a closed object's combinator members are no back door for other keys
    [
      {
        properties: { a: { type: "string" } },
        additionalProperties: false,
        anyOf: [{ required: ["a"] }, { required: ["b"] }],
      },
      [{ a: "x" }],
      [{ a: "x", c: 1 }, { b: 1 }, {}, { a: 1 }],
    ],
    [
      {
        properties: { a: { type: "string" }, b: { type: "number" } },
        additionalProperties: false,
        oneOf: [{ required: ["a"] }, { required: ["b"], properties: { c: {} } }],
      },
      [{ a: "x" }, { b: 1 }],
      [{ a: "x", b: 1 }, { b: 1, c: 1 }, { a: "x", z: 1 }],
    ],
    // a $ref to a closed definition closes, the top level's too
    [
      { $ref: "#/$defs/E", $defs: { E: CLOSED_E } },
      [{ a: "x" }],
      [{ a: "x", b: 1 }],
    ],
    [
      { properties: { o: { type: "object", $ref: "#/$defs/E" } }, $defs: { E: CLOSED_E } },
      [{ o: { a: "x" } }],
      [{ o: { a: "x", b: 1 } }],
    ],
    // nested members and members' own bounds under a closed object
    [
      {
        properties: { a: {} },
        additionalProperties: false,
        allOf: [{ anyOf: [{ required: ["b"] }, { required: ["a"] }] }],
      },
      [{ a: 1 }],
      [{ b: 1 }, { a: 1, b: 1 }],
    ],
    [
      {
        properties: { a: {} },
        additionalProperties: false,
        anyOf: [{ additionalProperties: true }],
      },
      [{ a: 1 }],
      [{ a: 1, b: 1 }],
    ],
    // annotations and formats zod would enforce wrongly
    [{ properties: { u: { type: "string", format: "uri-reference" } } }, [{ u: "/path/x" }], []],
    // multipleOf in floating point, as README says
    [{ properties: { a: { multipleOf: 0.1 } } }, [{ a: 0.3 }, { a: 0.2 }], [{ a: 0.25 }]],
    // integers are safe integers
    [{ properties: { n: { type: "integer" } } }, [{ n: 2 ** 53 - 1 }, { n: -(2 ** 53 - 1) }], [
      { n: 2 ** 53 },
      { n: 1.5 },
    ]],
    [{ readOnly: true, properties: { a: { type: "number", readOnly: true } } }, [{ a: 1 }], [{
      a: "x",
    }]],
  ];
  for (const [json, valid, invalid] of cases) {
    const schema = compileEventSchema(json);
    for (const event of valid) {
      const result = validateEvent(event, schema);
      assert.ok(result.ok, `${JSON.stringify(json)} refused ${JSON.stringify(event)}`);
      if (result.ok) assert.ok(!Object.isFrozen(result.event), "the event stays writable");
    }
    for (const event of invalid) {
      assert.equal(
        validateEvent(event, schema).ok,
        false,
        `${JSON.stringify(json)} accepted ${JSON.stringify(event)}`,
      );
    }
  }
});

Deno.test("compileEventSchema() refuses what zod's converter would misread and cannot be rewritten", () => {
  const refused: [Record<string, unknown>, RegExp][] = [
    [
      {
        $defs: { a: { properties: { b: { type: "string" } } } },
        properties: { a: { $ref: "#/$defs/a/properties/b" } },
      },
      /\$ref '#\/\$defs\/a\/properties\/b' is not supported/,
    ],
    [{ properties: { a: { $ref: "https://example.com/s.json" } } }, /\$ref .* is not supported/],
    [{ properties: { a: { $dynamicRef: "#x" } } }, /\$dynamicRef and \$recursiveRef/],
    [{ properties: { a: { const: { a: 1 } } } }, /const takes strings, numbers/],
    [{ properties: { a: { enum: [[1, 2]] } } }, /enum takes strings, numbers/],
    [
      {
        patternProperties: { "^n_": { type: "number" } },
        additionalProperties: { type: "string" },
      },
      /additionalProperties as a schema beside patternProperties/,
    ],
    [
      {
        properties: { a: { type: "number" } },
        anyOf: [{ additionalProperties: false, properties: { a: {} } }],
      },
      /additionalProperties: false in an allOf, anyOf or oneOf member beside other checks/,
    ],
  ];
  refused.push(
    [{ $ref: "#/$defs/D", $defs: { D: { $ref: "#/$defs/D" } } }, /\$ref cycle without a property/],
    [
      {
        properties: { a: {} },
        additionalProperties: false,
        anyOf: [{ patternProperties: { "^x": {} } }],
      },
      /patternProperties in an allOf, anyOf or oneOf member of an object with additionalProperties/,
    ],
    [
      {
        properties: { a: {} },
        additionalProperties: false,
        allOf: [{ $ref: "#/$defs/X" }],
        $defs: { X: { properties: { b: {} } } },
      },
      /a \$ref in an allOf, anyOf or oneOf member of an object with additionalProperties/,
    ],
  );
  for (const [schema, message] of refused) {
    assert.throws(
      () => compileEventSchema(schema),
      (error: unknown) =>
        error instanceof SchemaCompileError &&
        /^Cannot compile event schema: /.test(error.message) && message.test(error.message),
      JSON.stringify(schema),
    );
  }
});

Deno.test("compileEventSchema() refuses schemas that do not describe an object", () => {
  for (const type of ["string", "array", "number", ["object", "null"]]) {
    assert.throws(() => compileEventSchema({ type }), (error: unknown) => {
      assert.ok(error instanceof SchemaCompileError);
      assert.equal(error.name, "SchemaCompileError");
      assert.equal(
        error.message,
        `Event schema must have type 'object', got ${JSON.stringify(type)}`,
      );
      return true;
    });
  }
});

Deno.test("compileEventSchema() refuses a keyword whose value is not of its kind, naming its path in the schema", () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    // zod's converter dropped these bounds without a word: {"n": 5} passed.
    [{ properties: { n: { minimum: "x" } } }, `properties.n.minimum: expected a number, got "x"`],
    [
      { properties: { n: { exclusiveMaximum: true } } },
      "properties.n.exclusiveMaximum: expected a number, got true",
    ],
    // ... and this one: an object without `n` passed.
    [{ required: "n" }, `required: expected an array of property names, got "n"`],
    // Every string was refused.
    [
      { properties: { s: { maxLength: -1 } } },
      "properties.s.maxLength: expected a whole number, 0 or more, got -1",
    ],
    [
      { properties: { s: { minLength: 1.5 } } },
      "properties.s.minLength: expected a whole number, 0 or more, got 1.5",
    ],
    // Refused with zod's internals: "enumValues.every is not a function", "Pattern undefined …".
    [
      { properties: { e: { enum: "abc" } } },
      `properties.e.enum: expected an array of values, got "abc"`,
    ],
    [{ properties: { p: { pattern: 5 } } }, "properties.p.pattern: expected a string, got 5"],
    [
      { properties: { m: { multipleOf: 0 } } },
      "properties.m.multipleOf: expected a number above 0, got 0",
    ],
    // A 1e400 in the body is Infinity: shown so, not as JSON's null.
    [
      { properties: { n: { maximum: Infinity } } },
      "properties.n.maximum: expected a number, got Infinity",
    ],
    [
      { properties: { a: { type: "nonsense" } } },
      `properties.a.type: expected one of object, array, string, number, boolean, null, integer, or an array of them, got "nonsense"`,
    ],
    [{ properties: { a: 5 } }, "properties.a: expected a schema (an object or a boolean), got 5"],
    [{ properties: [] }, "properties: expected an object, got []"],
    [{ anyOf: [] }, "anyOf: expected a non-empty array of schemas, got []"],
    [
      { properties: { list: { items: { properties: { x: { maximum: null } } } } } },
      "properties.list.items.properties.x.maximum: expected a number, got null",
    ],
    [
      { $defs: { d: { minItems: "2" } } },
      `$defs.d.minItems: expected a whole number, 0 or more, got "2"`,
    ],
    [
      { allOf: [{}, { uniqueItems: "yes" }] },
      `allOf[1].uniqueItems: expected true or false, got "yes"`,
    ],
  ];
  for (const [schema, message] of cases) {
    assert.throws(() => compileEventSchema({ type: "object", ...schema }), {
      name: "SchemaCompileError",
      message: `Cannot compile event schema: ${message}`,
    });
  }
  // Their well-formed values still compile and check.
  const ok = compileEventSchema({
    type: "object",
    required: ["n"],
    properties: {
      n: { type: "number", minimum: 0, exclusiveMaximum: 10, multipleOf: 0.5 },
      s: { maxLength: 0 },
    },
    anyOf: [true],
  });
  assert.equal(validateEvent({ n: 5 }, ok).ok, true);
  assert.equal(validateEvent({ n: 10 }, ok).ok, false);
  assert.equal(validateEvent({}, ok).ok, false);
});

Deno.test("compileEventSchema() turns schemas it cannot compile into SchemaCompileError", () => {
  const bad = [
    { type: "object", properties: { a: { $ref: "#/$defs/missing" } } },
  ];
  for (const schema of bad) {
    assert.throws(() => compileEventSchema(schema), (error: unknown) => {
      assert.ok(error instanceof SchemaCompileError);
      assert.match(error.message, /^Cannot compile event schema: /);
      assert.ok(error.cause instanceof Error);
      return true;
    });
  }
});

Deno.test("compileEventSchema() enforces required fields that are not listed under properties", () => {
  const schema = compileEventSchema({
    type: "object",
    required: ["id"],
    properties: { nested: { type: "object", required: ["x"] } },
  });
  const missing = validateEvent({}, schema);
  assert.equal(missing.ok, false);
  if (!missing.ok) assert.equal(missing.errors[0].path, "id");
  assert.equal(validateEvent({ id: 1, nested: {} }, schema).ok, false);
  assert.equal(validateEvent({ id: 1, nested: { x: null } }, schema).ok, true);
  assert.equal(validateEvent({ id: "a", extra: true }, schema).ok, true);
});

Deno.test("a property named as an Object.prototype member (toString, valueOf) is the event's own or missing", () => {
  // zod read `event.valueOf` (the inherited function) for an event without it: an optional typed
  // property refused every event lacking it, and a required one passed without it.
  const optional = compileEventSchema({
    properties: {
      valueOf: { type: "string" },
      user: { type: "object", properties: { hasOwnProperty: { type: "number" } } },
    },
  });
  const required = compileEventSchema({ required: ["toString"], properties: { a: {} } });
  const answers = (schema: ReturnType<typeof compileEventSchema>, event: object) => {
    const one = validateEvent(event, schema);
    const batch = eventValidator(schema)(structuredClone(event));
    assert.deepEqual(
      Array.isArray(batch) ? { ok: false, errors: batch } : { ok: true, event: batch },
      one,
    );
    return one;
  };
  assert.deepEqual(answers(optional, { user: {} }), { ok: true, event: { user: {} } });
  assert.deepEqual(answers(optional, { valueOf: "x", user: { hasOwnProperty: 1 } }), {
    ok: true,
    event: { valueOf: "x", user: { hasOwnProperty: 1 } },
  });
  assert.equal(answers(optional, { valueOf: 1 }).ok, false);
  assert.deepEqual(answers(required, { a: 1 }), {
    ok: false,
    errors: [{ path: "toString", message: "Required field is missing" }],
  });
  assert.deepEqual(answers(required, { toString: 1 }), { ok: true, event: { toString: 1 } });
  // What the event holds keeps its own prototype: nothing downstream meets a null-prototype object.
  const kept = validateEvent({ user: { extra: { deep: 1 } } }, optional);
  assert.ok(kept.ok);
  assert.equal(
    Object.getPrototypeOf((kept.event.user as { extra: object }).extra),
    Object.prototype,
  );
});

Deno.test("a closed allOf member beside another member is refused: zod let the other member's keys through", () => {
  // JSON Schema refuses {a: 1, z: 1} here; zod intersects the members so that a key one of them
  // allows is allowed, and accepted it.
  const closed = { properties: { a: {} }, additionalProperties: false };
  for (
    const schema of [
      { allOf: [closed, { required: ["a"] }] },
      { type: "object", allOf: [closed, { properties: { a: { type: "number" } } }] },
      { allOf: [closed, true] },
      { allOf: [{ $ref: "#/$defs/base" }, { required: ["a"] }], $defs: { base: closed } },
      { properties: { nested: { allOf: [closed, { type: "object" }] } } },
    ]
  ) {
    assert.throws(
      () => compileEventSchema(schema),
      (error) =>
        error instanceof SchemaCompileError &&
        /additionalProperties: false in an allOf, anyOf or oneOf member beside other checks/
          .test(error.message),
      JSON.stringify(schema),
    );
  }
  // A union takes any one member: a closed one beside an open one is as JSON Schema says.
  const union = compileEventSchema({ anyOf: [closed, { required: ["b"] }] });
  assert.equal(validateEvent({ a: 1, z: 1 }, union).ok, false);
  assert.equal(validateEvent({ b: 1, z: 1 }, union).ok, true);
});

Deno.test("an allOf holding false matches no value, as false does", () => {
  // `{"allOf": [false]}` was compiled as `{}` (the lone member spread into the schema).
  for (
    const schema of [
      { properties: { b: { allOf: [false] } } },
      { properties: { b: { title: "B", allOf: [false] } } },
      { properties: { b: { type: "array", prefixItems: [{ allOf: [false] }] } } },
    ]
  ) {
    const compiled = compileEventSchema(schema);
    assert.equal(validateEvent({}, compiled).ok, true, JSON.stringify(schema));
    assert.equal(validateEvent({ b: [1] }, compiled).ok, false, JSON.stringify(schema));
  }
  assert.equal(validateEvent({ b: [] }, compileEventSchema({ allOf: [false] })).ok, false);
});

Deno.test("a required field whose anyOf or oneOf has a member taking any value is still required", () => {
  // zod took the union of an object guard (minProperties, maxProperties, propertyNames) and the
  // `{}` member for an optional key, and accepted events without the field.
  for (
    const property of [
      { anyOf: [{ type: "object", minProperties: 1 }, {}] },
      { anyOf: [true, { type: "object", propertyNames: { pattern: "^a" } }] },
      { oneOf: [{ type: "object", maxProperties: 1 }, { title: "anything" }] },
    ]
  ) {
    const compiled = compileEventSchema({ required: ["b"], properties: { b: property } });
    assert.equal(validateEvent({}, compiled).ok, false, JSON.stringify(property));
    assert.equal(validateEvent({ b: "x" }, compiled).ok, true, JSON.stringify(property));
  }
});

Deno.test("patternProperties of a closed member in a closed object are refused, as of an open one", () => {
  // The member's own pattern let `x1` through, which the object forbids.
  const schema = {
    additionalProperties: false,
    anyOf: [{ maximum: 5 }, {
      type: "object",
      patternProperties: { "^x": { type: "number" } },
      additionalProperties: false,
    }],
  };
  assert.throws(
    () => compileEventSchema(schema),
    (error) =>
      error instanceof SchemaCompileError &&
      error.message.includes("patternProperties in an allOf, anyOf or oneOf member"),
  );
});

Deno.test("a combinator member of an object with an additionalProperties schema checks that schema whole", () => {
  // The member was given the schema as written, without its required names under properties,
  // which zod alone does not enforce: `{b: …}` matched the first oneOf member there and `{a: …}`
  // too, so both were refused (two members matched).
  const compiled = compileEventSchema({
    additionalProperties: { oneOf: [{ type: "object", required: ["b"] }, { minimum: 1 }] },
    anyOf: [{ minimum: 0 }],
  });
  assert.equal(validateEvent({ x1: { a: 1 } }, compiled).ok, true);
  assert.equal(validateEvent({ x1: { b: 1 } }, compiled).ok, false);
  assert.equal(validateEvent({ x1: 2 }, compiled).ok, true);
});

Deno.test("an anyOf of $refs to closed definitions refuses the keys they do not list", () => {
  // A union of event kinds: each member was intersected with an open `{type: "object"}` (the
  // event's type pushed into the members), and zod let through every key that one allowed.
  const click = {
    type: "object",
    properties: { kind: { const: "click" }, x: { type: "number" } },
    required: ["kind"],
    additionalProperties: false,
  };
  const view = {
    properties: { kind: { const: "view" }, page: { type: "string" } },
    required: ["kind"],
    additionalProperties: false,
  };
  const events = compileEventSchema({
    anyOf: [{ $ref: "#/$defs/click" }, { $ref: "#/$defs/view" }],
    $defs: { click, view },
  });
  assert.equal(validateEvent({ kind: "click", x: 1 }, events).ok, true);
  assert.equal(validateEvent({ kind: "view", page: "p" }, events).ok, true);
  assert.equal(validateEvent({ kind: "click", x: 1, extra: true }, events).ok, false);
  assert.equal(validateEvent({ kind: "view", page: "p", x: 1 }, events).ok, false);
  const nested = compileEventSchema({
    properties: { p: { type: "object", anyOf: [{ $ref: "#/$defs/click" }] } },
    $defs: { click },
  });
  assert.equal(validateEvent({ p: { kind: "click" } }, nested).ok, true);
  assert.equal(validateEvent({ p: { kind: "click", extra: 1 } }, nested).ok, false);
});

Deno.test("propertyNames holds beside other checks of the object, also from a member or a $ref", () => {
  // zod reports a key refused by one side of an intersection only when the other refuses it too:
  // propertyNames beside an anyOf, or in an allOf member, let every key through.
  const names = { pattern: "^[ab]" };
  for (
    const schema of [
      { propertyNames: names, anyOf: [{ minimum: 1 }] },
      { allOf: [{ propertyNames: names }, { required: ["a"] }] },
      { allOf: [{ oneOf: [{ type: "object", propertyNames: names }] }, { maxProperties: 3 }] },
      {
        allOf: [{ $ref: "#/$defs/names" }, { required: ["a"] }],
        $defs: { names: { propertyNames: names } },
      },
    ]
  ) {
    const compiled = compileEventSchema(schema);
    assert.equal(validateEvent({ a: 1, b: 2 }, compiled).ok, true, JSON.stringify(schema));
    assert.deepEqual(validateEvent({ a: 1, x1: 2 }, compiled), {
      ok: false,
      errors: [{
        path: "x1",
        message:
          "Key breaks the schema's propertyNames: Invalid string: must match pattern /^[ab]/",
      }],
    }, JSON.stringify(schema));
  }
});

Deno.test("additionalProperties {not: {}} closes an object as false does, in combinators too", () => {
  const closed = { properties: { a: {} }, additionalProperties: { not: {} } };
  assert.throws(
    () => compileEventSchema({ allOf: [closed, { required: ["a"] }] }),
    (error) =>
      error instanceof SchemaCompileError &&
      error.message.includes("additionalProperties: false in an allOf, anyOf or oneOf member"),
  );
  const compiled = compileEventSchema({ ...closed, anyOf: [{ required: ["a"] }] });
  assert.equal(validateEvent({ a: 1 }, compiled).ok, true);
  assert.equal(validateEvent({ a: 1, z: 1 }, compiled).ok, false);
});

Deno.test("a true member of a combinator in a closed object refuses the keys the object does", () => {
  // `true` is `{}`: the object's other keys stay refused (zod's intersection with its `any` let
  // them through).
  for (
    const schema of [
      { properties: { a: {} }, additionalProperties: false, allOf: [true] },
      { properties: { a: {} }, additionalProperties: false, anyOf: [true, { required: ["a"] }] },
    ]
  ) {
    const compiled = compileEventSchema(schema);
    assert.equal(validateEvent({ a: 1 }, compiled).ok, true, JSON.stringify(schema));
    assert.equal(validateEvent({ a: 1, z: 1 }, compiled).ok, false, JSON.stringify(schema));
  }
});

Deno.test("a schema's pattern and patternProperties are tested by RE2, in linear time", () => {
  // By code point: V8's RegExp (without u) sees two units in the emoji.
  const one = compileEventSchema({
    type: "object",
    properties: { c: { type: "string", pattern: "^.$" } },
    patternProperties: { "^(a+)+$": { type: "number" } },
  });
  assert.equal(validateEvent({ c: "😀" }, one).ok, true);
  assert.equal(validateEvent({ aaa: "text" }, one).ok, false);
  const email = "^([a-zA-Z0-9]+\\.?)+@example\\.com$";
  // Flat (Ajv's fast verdict, then zod) and nested (zod alone).
  for (
    const schema of [
      { type: "object", properties: { email: { type: "string", pattern: email } } },
      {
        type: "object",
        properties: {
          user: { type: "object", properties: { email: { type: "string", pattern: email } } },
        },
      },
    ]
  ) {
    const compiled = compileEventSchema(schema);
    const wrap = (text: string) =>
      "user" in schema.properties ? { user: { email: text } } : { email: text };
    // Forty-odd letters and a "!" hold a backtracking engine for minutes.
    assert.equal(validateEvent(wrap(`${"a".repeat(5_000)}!`), compiled).ok, false);
    assert.equal(validateEvent(wrap("first.last@example.com"), compiled).ok, true);
  }
  assert.equal(validateEvent({ [`${"a".repeat(5_000)}!`]: "text" }, one).ok, true);
});

Deno.test("a schema pattern RE2 cannot run (lookaround, backreferences) is refused at compile", () => {
  assert.throws(
    () =>
      compileEventSchema({
        type: "object",
        properties: { x: { type: "string", pattern: "^(?!admin).*$" } },
      }),
    (error) => error instanceof SchemaCompileError && /\(\?!.*RE2/.test(error.message),
  );
  assert.throws(
    () => compileEventSchema({ type: "object", patternProperties: { "(a)\\1": {} } }),
    SchemaCompileError,
  );
  // Also where it could never apply (a pattern checks strings; the event is an object), or only
  // in a branch, or in a definition no property uses.
  for (
    const schema of [
      { pattern: "(?=a)" },
      { type: "object", pattern: "(?=a)" },
      { anyOf: [{ pattern: "(?=a)" }, { type: "object" }] },
      { $defs: { unused: { type: "string", pattern: "(a)\\1" } } },
    ]
  ) {
    assert.throws(() => compileEventSchema(schema), SchemaCompileError, JSON.stringify(schema));
  }
});

Deno.test("compileEventSchema() follows $refs into draft-07 definitions as into $defs", () => {
  for (const [keyword, base] of [["$defs", "#/$defs"], ["definitions", "#/definitions"]]) {
    const schema = compileEventSchema({
      type: "object",
      [keyword]: { country: { type: "string", enum: ["DE", "FR"] } },
      properties: { country: { $ref: `${base}/country` } },
      required: ["country"],
    });
    assert.equal(validateEvent({ country: "DE" }, schema).ok, true, keyword);
    assert.equal(validateEvent({ country: "XX" }, schema).ok, false, keyword);
    assert.equal(validateEvent({}, schema).ok, false, keyword);
  }
});

Deno.test("a schema keeps JavaScript's \\u escapes in patterns and zod's own formats (emoji)", () => {
  const schema = compileEventSchema({
    type: "object",
    properties: {
      code: { type: "string", pattern: "^\\u0041[^]$" },
      icon: { type: "string", format: "emoji" },
    },
  });
  assert.equal(validateEvent({ code: "A\n", icon: "😀" }, schema).ok, true);
  assert.equal(validateEvent({ code: "B\n" }, schema).ok, false);
  assert.equal(validateEvent({ icon: "a" }, schema).ok, false);
});

Deno.test("format uri refuses a value with whitespace in it (around it or inside) or a control character in it, and stores a valid one exactly as sent", () => {
  const schema = compileEventSchema({
    $defs: { link: { type: "string", format: "uri" } },
    properties: {
      u: { type: "string", format: "uri" },
      // On a field of several types, beside a default, through a $ref, in an allOf beside checks.
      many: { type: ["string", "null"], format: "uri", default: "http://d.example" },
      ref: { $ref: "#/$defs/link" },
      both: { allOf: [{ type: "string", format: "uri" }, { type: "string", minLength: 3 }] },
      twice: { allOf: [{ type: "string", format: "uri" }, { type: "string", format: "uri" }] },
      // zod's schema of a described node is a copy.
      described: { type: "string", format: "uri", description: "A link" },
    },
  });
  const taken = [
    { u: "http://a.example" },
    { u: "http://a.example/a%20b?q=1#f" },
    { u: "mailto:someone@a.example" },
    { many: null },
    { ref: "https://a.example/x" },
    { both: "http://a.example" },
    { twice: "http://a.example" },
  ];
  for (const event of taken) {
    const result = validateEvent(event, schema);
    assert.equal(result.ok, true, JSON.stringify(event));
    const stored = (result as { event: Record<string, unknown> }).event;
    for (const [key, value] of Object.entries(event)) assert.equal(stored[key], value, key);
  }
  const spaced = [
    "http://a.example ",
    " http://a.example",
    "http://a.example\n",
    "\thttp://a.example",
    "http://a.example\u00a0",
    "\ufeffhttp://a.example",
    "http://exa\nmple.example",
    "http://a.example/\tx",
    "http://a.example/\u0000",
    "http://a.example/a b",
    "http://a.example/?q=a b",
    "http://a.example/a\u2003b",
    "http://a.example/\u0085",
    "http://a.example/\u009f",
  ];
  for (const value of spaced) {
    for (const field of ["u", "many", "ref", "both", "twice", "described"]) {
      const result = validateEvent({ [field]: value }, schema);
      assert.equal(result.ok, false, `${field}: ${JSON.stringify(value)}`);
      const errors = (result as { errors: { path: string; message: string }[] }).errors;
      assert.ok(errors.length > 0);
      for (const error of errors) {
        assert.deepEqual(error, { path: field, message: URI_SPACE_MESSAGE }, JSON.stringify(value));
      }
    }
  }
  assert.deepEqual(validateEvent({ u: "not-a-uri" }, schema), {
    ok: false,
    errors: [{ path: "u", message: "Invalid URL" }],
  });
  assert.deepEqual(validateEvent({}, schema), { ok: true, event: { many: "http://d.example" } });
});

Deno.test("an allOf of a format uri beside another check validates an event with whitespace around its URI without throwing (zod's trimmed part was unmergable)", () => {
  const schemas = [
    { properties: { u: { allOf: [{ type: "string", format: "uri" }, { minLength: 3 }] } } },
    {
      allOf: [
        { properties: { u: { type: "string", format: "uri" } } },
        { properties: { u: { type: "string" } } },
      ],
    },
  ];
  for (const json of schemas) {
    const validate = eventValidator(compileEventSchema(json));
    assert.deepEqual(validate({ u: "http://a.example " }), [
      { path: "u", message: URI_SPACE_MESSAGE },
    ]);
    assert.deepEqual(validate({ u: "http://a.example" }), { u: "http://a.example" });
  }
});

Deno.test("eventValidator() with maxErrors lists the first errors as validateEvent() does, then how many more, and words none past them", () => {
  const schema = compileEventSchema({
    properties: {
      tags: { type: "array", items: { type: "string" } },
      // A type list's union whose one typed member has two errors of its own in each item.
      pairs: {
        type: "array",
        items: {
          type: ["object", "null"],
          properties: { a: { type: "string" }, b: { type: "string" } },
        },
      },
    },
  });
  const capped = eventValidator(schema, { maxErrors: 10 });
  const cases: Array<[Record<string, unknown>, number]> = [
    [{ tags: Array(4000).fill(1) }, 4000],
    [{ pairs: Array(30).fill({ a: 1, b: 2 }) }, 60],
    [{ tags: Array(11).fill(1) }, 11],
    [{ tags: Array(10).fill(1) }, 10],
  ];
  for (const [event, total] of cases) {
    const all = (validateEvent(event, schema) as { errors: unknown[] }).errors;
    assert.equal(all.length, total);
    assert.deepEqual(
      capped(event),
      total <= 10 ? all : [
        ...all.slice(0, 10),
        {
          path: "",
          message: `and ${total - 10} more ${total === 11 ? "error" : "errors"} not listed`,
        },
      ],
    );
  }
  // Wording an error reads its field (to tell a missing one, and what it holds): each item is
  // read as often as any other (by the shape check, zod) but for that, only the listed ones.
  const reads = new Map<string, number>();
  const tags = new Proxy(Array(4000).fill(1), {
    get(target, key, receiver) {
      if (typeof key === "string") reads.set(key, (reads.get(key) ?? 0) + 1);
      return Reflect.get(target, key, receiver);
    },
  });
  const errors = capped({ tags }) as { path: string }[];
  assert.equal(errors.length, 11);
  assert.equal(errors[9].path, "tags.9");
  assert.equal(reads.get("9"), reads.get("10")! + 1);
  assert.equal(reads.get("10"), reads.get("3999"));
});

Deno.test("format date-time and time take a lower-case t and z, as RFC 3339 allows, and refuse what zod refuses with its message", () => {
  const schema = compileEventSchema({
    type: "object",
    properties: {
      at: { type: "string", format: "date-time" },
      // Beside a pattern of its own, and on a field of several types.
      since: { type: ["string", "number"], format: "date-time", pattern: "^2026" },
      clock: { type: "string", format: "time" },
    },
  });
  const taken = [
    { at: "2026-01-01T10:00:00Z" },
    { at: "2026-01-01t10:00:00z" },
    { at: "2026-01-01T10:00:00z" },
    { at: "2026-01-01t10:00:00.123+01:00" },
    { at: "2024-02-29T00:00:00Z" },
    { since: "2026-03-01t00:00:00z" },
    { since: 5 },
    { clock: "10:00:00z" },
    { clock: "23:59:59.5-05:30" },
  ];
  for (const event of taken) {
    assert.deepEqual(validateEvent(event, schema), { ok: true, event }, JSON.stringify(event));
  }
  const refused: Array<[Record<string, unknown>, string]> = [
    [{ at: "2026-01-01 10:00:00Z" }, "Invalid ISO datetime"],
    [{ at: "2026-01-01T10:00:00" }, "Invalid ISO datetime"],
    [{ at: "2026-01-01T10:00Z" }, "Invalid ISO datetime"],
    [{ at: "2026-02-30T10:00:00Z" }, "Invalid ISO datetime"],
    [{ at: "2023-02-29T00:00:00Z" }, "Invalid ISO datetime"],
    [{ at: "2026-01-01x10:00:00z" }, "Invalid ISO datetime"],
    [{ at: "2026-01-01T24:00:00Z" }, "Invalid ISO datetime"],
    [{ since: "2025-03-01t00:00:00z" }, "Invalid string: must match pattern /^2026/"],
    [{ since: "2026-03-01" }, "Invalid ISO datetime"],
    [{ clock: "10:00:00" }, "Invalid ISO time"],
    [{ clock: "10:00:00y" }, "Invalid ISO time"],
  ];
  for (const [event, message] of refused) {
    assert.deepEqual(
      validateEvent(event, schema),
      { ok: false, errors: [{ path: Object.keys(event)[0], message }] },
      JSON.stringify(event),
    );
  }
});

Deno.test("format date-time and time take a leap second (:60) at the end of a UTC day in any offset, as RFC 3339 and JSON Schema's test suite do, and no other :60", () => {
  const schema = compileEventSchema({
    type: "object",
    properties: {
      at: { type: "string", format: "date-time" },
      // Beside a pattern of its own, and on a field of several types.
      since: { type: ["string", "number"], format: "date-time", pattern: "^1998" },
      clock: { type: "string", format: "time" },
    },
  });
  const taken = [
    { at: "1998-12-31T23:59:60Z" },
    { since: "1998-12-31T23:59:60.5Z" },
    { at: "1998-12-31t23:59:60.123z" },
    { at: "1998-12-31T15:59:60.123-08:00" },
    { at: "1999-01-01T00:59:60+01:00" },
    { at: "1999-01-01T05:29:60+05:30" },
    { at: "1998-12-31T23:29:60-00:30" },
    { at: "1999-01-01T23:58:60+23:59" },
    { at: "1998-12-31T00:00:60-23:59" },
    { at: "1999-01-01T00:00:60+00:01" },
    { clock: "23:59:60Z" },
    { clock: "01:29:60+01:30" },
    { clock: "15:59:60-08:00" },
  ];
  for (const event of taken) {
    assert.deepEqual(validateEvent(event, schema), { ok: true, event }, JSON.stringify(event));
  }
  const refused: Array<[Record<string, unknown>, string]> = [
    [{ at: "1998-12-31T23:59:61Z" }, "Invalid ISO datetime"],
    [{ at: "1998-02-30T23:59:60Z" }, "Invalid ISO datetime"],
    [{ since: "1998-12-31T22:59:60Z" }, "Invalid ISO datetime"],
    [{ since: "1999-01-01T00:00:60+00:01" }, "Invalid string: must match pattern /^1998/"],
    [{ at: "1998-12-31T23:58:60Z" }, "Invalid ISO datetime"],
    [{ at: "1998-12-31T22:59:60Z" }, "Invalid ISO datetime"],
    [{ at: "1998-12-31T23:59:60+01:00" }, "Invalid ISO datetime"],
    [{ at: "1998-12-31T23:59:60-00:01" }, "Invalid ISO datetime"],
    [{ at: "1999-01-01T00:01:60+00:01" }, "Invalid ISO datetime"],
    [{ clock: "22:59:60Z" }, "Invalid ISO time"],
    [{ clock: "23:59:60+01:00" }, "Invalid ISO time"],
    [{ clock: "23:59:60" }, "Invalid ISO time"],
  ];
  for (const [event, message] of refused) {
    assert.deepEqual(
      validateEvent(event, schema),
      { ok: false, errors: [{ path: Object.keys(event)[0], message }] },
      JSON.stringify(event),
    );
  }
});

Deno.test("a number out of range (1e400, read as Infinity) refused by a list of types is named as such, as zod names it for one type", () => {
  const schema = compileEventSchema({
    type: "object",
    properties: { ts: { type: ["string", "number"] }, n: { type: "number" } },
  });
  for (const [text, received] of [["1e400", "Infinity"], ["-1e400", "-Infinity"]]) {
    for (const [field, expected] of [["ts", "string or number"], ["n", "number"]]) {
      assert.deepEqual(validateEvent(JSON.parse(`{"${field}": ${text}}`), schema), {
        ok: false,
        errors: [{
          path: field,
          message: `Invalid input: expected ${expected}, received ${received}`,
        }],
      });
    }
  }
});

Deno.test("validateEvent() refuses a number out of range (1e400) anywhere in an event its schema takes, naming it, after the schema's own errors", () => {
  const error = (path: string) => ({
    ok: false,
    errors: [{
      path,
      message: "Number is out of range (JSON reads 1e400 as Infinity, which it passes on as null)",
    }],
  });
  const open = compileEventSchema({});
  assert.deepEqual(validateEvent(JSON.parse('{"a": 1e400}'), open), error("a"));
  assert.deepEqual(validateEvent(JSON.parse('{"a": {"b": [1, -1e999]}}'), open), error("a.b.1"));
  assert.deepEqual(validateEvent({ a: 1e308, b: [-1e308] }, open), {
    ok: true,
    event: { a: 1e308, b: [-1e308] },
  });
  // The shape's errors and the schema's come first; a typed field is named as zod names it.
  assert.deepEqual(validateEvent(JSON.parse('{"a": 1e400, "__proto__": 1}'), open), {
    ok: false,
    errors: [{ path: "__proto__", message: "Key '__proto__' is not allowed in events" }],
  });
  const typed = compileEventSchema({
    type: "object",
    properties: { id: { type: "string" }, n: { type: "number" } },
    required: ["id"],
  });
  assert.deepEqual(validateEvent(JSON.parse('{"n": 1e400}'), typed), {
    ok: false,
    errors: [
      { path: "id", message: "Required field is missing (expected string)" },
      { path: "n", message: "Invalid input: expected number, received Infinity" },
    ],
  });
  assert.deepEqual(validateEvent(JSON.parse('{"id": "a", "x": 1e400}'), typed), error("x"));
});

Deno.test("compileEventSchema() takes {not: {}}, which no value matches, and refuses any other not", () => {
  const schema = compileEventSchema({ properties: { internal: { not: {} } } });
  assert.equal(validateEvent({ id: 1 }, schema).ok, true);
  assert.equal(validateEvent({ internal: null }, schema).ok, false);
  assert.throws(() => compileEventSchema({ not: { type: "string" } }), SchemaCompileError);
});

Deno.test("a required field that is missing is said as such, with the type it wants when it has one", () => {
  const schema = compileEventSchema({
    type: "object",
    properties: { id: { type: "string" }, n: { type: ["number", "null"] } },
    required: ["id", "n", "any"],
  });
  assert.deepEqual(validateEvent({}, schema), {
    ok: false,
    errors: [
      { path: "id", message: "Required field is missing (expected string)" },
      { path: "n", message: "Required field is missing (expected number or null)" },
      { path: "any", message: "Required field is missing" },
    ],
  });
  // A present value of the wrong type keeps zod's words.
  assert.deepEqual(validateEvent({ id: 1, n: 1, any: 1 }, schema), {
    ok: false,
    errors: [{ path: "id", message: "Invalid input: expected string, received number" }],
  });
});

Deno.test("a missing enum, const or nested field is said missing, with the values it wants", () => {
  const schema = compileEventSchema({
    type: "object",
    properties: {
      kind: { enum: ["a", "b"] },
      version: { const: 2 },
      user: { type: "object", properties: { id: { type: "string" } }, required: ["id"] },
    },
    required: ["kind", "version", "user"],
  });
  assert.deepEqual(validateEvent({ user: {} }, schema), {
    ok: false,
    errors: [
      { path: "kind", message: 'Required field is missing (expected one of "a"|"b")' },
      { path: "version", message: "Required field is missing (expected 2)" },
      { path: "user.id", message: "Required field is missing (expected string)" },
    ],
  });
  // Present with a wrong value, or null, they keep zod's words.
  assert.deepEqual(validateEvent({ kind: "c", version: null, user: { id: null } }, schema), {
    ok: false,
    errors: [
      { path: "kind", message: 'Invalid option: expected one of "a"|"b"' },
      { path: "version", message: "Invalid input: expected 2" },
      { path: "user.id", message: "Invalid input: expected string, received null" },
    ],
  });
});

Deno.test("a wrong type says integer, not zod's int, and names a type list's members", () => {
  const schema = compileEventSchema({
    type: "object",
    properties: {
      n: { type: "integer" },
      m: { type: ["integer", "string"] },
      b: { type: ["boolean", "null"] },
    },
  });
  assert.deepEqual(validateEvent({ n: 1.5, m: 2.5, b: [] }, schema), {
    ok: false,
    errors: [
      { path: "n", message: "Invalid input: expected integer, received number" },
      { path: "m", message: "Invalid input: expected integer or string, received number" },
      { path: "b", message: "Invalid input: expected boolean or null, received array" },
    ],
  });
});

Deno.test("compileEventSchema() refuses a schema nesting deeper than 128 levels, without overflowing", () => {
  const nested = (levels: number) => {
    let schema: Record<string, unknown> = { type: "object", required: ["x"] };
    for (let level = 0; level < levels; level++) schema = { properties: { a: schema } };
    return schema;
  };
  for (const levels of [64, 2_500, 100_000]) {
    assert.throws(
      () => compileEventSchema(nested(levels)),
      (error: unknown) =>
        error instanceof SchemaCompileError &&
        error.message === "Event schema nests deeper than 128 levels (objects and arrays)",
    );
  }
  // 128 levels: 63 nested properties and the innermost schema; it validates as written.
  const schema = compileEventSchema(nested(63));
  let event: Record<string, unknown> = {};
  for (let level = 0; level < 30; level++) event = { a: event };
  assert.deepEqual(validateEvent(event, schema), { ok: true, event });
});

Deno.test("compileEventSchema follows each $defs definition once when looking for $ref cycles", () => {
  // d0 names d1 twice, d1 names d2 twice, …: followed again for every $ref, the last definition
  // was read 2^19 times (a 1.5 KB schema of 23 such definitions held the event loop 6 s).
  const levels = 20;
  let reads = 0;
  const $defs: Record<string, unknown> = {};
  for (let i = 0; i < levels; i++) {
    const definition = i + 1 < levels
      ? { anyOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] }
      : { type: "object", properties: { n: { type: "number" } } };
    $defs[`d${i}`] = new Proxy(definition, {
      get(target, key, receiver) {
        reads += 1;
        return Reflect.get(target, key, receiver);
      },
    });
  }
  // Its 2^19 leaves once expanded are past the bound on a schema's expanded size (a wrong value
  // was checked against each of them): refused, still reading each definition a few times.
  assert.throws(
    () => compileEventSchema({ type: "object", properties: { a: { $ref: "#/$defs/d0" } }, $defs }),
    /holds more than 131072 objects and arrays once its \$refs are expanded/,
  );
  assert.ok(reads < 10_000, `definitions read ${reads} times`);
  // A cycle among them is still refused.
  $defs.d19 = { anyOf: [{ $ref: "#/$defs/d3" }] };
  assert.throws(
    () => compileEventSchema({ type: "object", properties: { a: { $ref: "#/$defs/d0" } }, $defs }),
    /\$ref cycle without a property between: d0 → d1 → d2 → d3 → .* → d19 → d3/,
  );
});

Deno.test("compileEventSchema: a chain of 20000 $defs is a SchemaCompileError, not a RangeError out of the $ref cycle check", () => {
  // A config file has no body limit: thrown raw, the RangeError crashed startup with a stack.
  const $defs: Record<string, unknown> = {};
  for (let i = 0; i < 20_000; i++) {
    $defs[`d${i}`] = i + 1 < 20_000 ? { $ref: `#/$defs/d${i + 1}` } : { type: "object" };
  }
  assert.throws(
    () => compileEventSchema({ type: "object", properties: { a: { $ref: "#/$defs/d0" } }, $defs }),
    SchemaCompileError,
  );
});

Deno.test("compileEventSchema() counts the levels its $refs expand to, so a chain of shallow definitions cannot overflow either", () => {
  const chain = (definitions: number) => {
    const $defs: Record<string, unknown> = {};
    for (let i = 0; i < definitions; i++) {
      $defs[`d${i}`] = { type: "object", properties: { a: { $ref: `#/$defs/d${i + 1}` } } };
    }
    $defs[`d${definitions}`] = { type: "string" };
    return { type: "object", properties: { a: { $ref: "#/$defs/d0" } }, $defs };
  };
  for (const definitions of [63, 900, 20_000]) {
    assert.throws(
      () => compileEventSchema(chain(definitions)),
      (error: unknown) =>
        error instanceof SchemaCompileError &&
        error.message ===
          "Cannot compile event schema: it nests deeper than 128 levels (objects and arrays) once its $refs are expanded",
      `${definitions} definitions`,
    );
  }
  // 60 definitions, 2 levels each, and the root's: taken.
  assert.doesNotThrow(() => compileEventSchema(chain(60)));
  assert.equal(validateEvent({ a: { a: { a: "x" } } }, compileEventSchema(chain(2))).ok, true);
  // A definition naming itself below a property is a tree of any depth: a leaf, not a chain.
  const tree = compileEventSchema({
    type: "object",
    properties: { root: { $ref: "#/$defs/node" } },
    $defs: {
      node: {
        type: "object",
        properties: {
          v: { type: "number" },
          kids: { type: "array", items: { $ref: "#/$defs/node" } },
        },
      },
    },
  });
  assert.deepEqual(validateEvent({ root: { v: 1, kids: [{ v: 2, kids: [{ v: "x" }] }] } }, tree), {
    ok: false,
    errors: [{
      path: "root.kids.0.kids.0.v",
      message: "Invalid input: expected number, received string",
    }],
  });
});

Deno.test("compileEventSchema() counts a definition that is only a $ref to another as a level, so a chain of them is refused by the depth check, not by the end of the stack", () => {
  // Each hop added no level: a chain of about a thousand compiled or ended zod's stack depending
  // on what else was on it (a PUT taken on one instance could fail on another), and the refusal
  // said "Maximum call stack size exceeded".
  const chain = (hops: number) => {
    const $defs: Record<string, unknown> = { d0: { type: "string" } };
    for (let i = 1; i <= hops; i++) $defs[`d${i}`] = { $ref: `#/$defs/d${i - 1}` };
    return { type: "object", properties: { x: { $ref: `#/$defs/d${hops}` } }, $defs };
  };
  for (const hops of [130, 996, 20_000]) {
    assert.throws(
      () => compileEventSchema(chain(hops)),
      (error: unknown) =>
        error instanceof SchemaCompileError &&
        error.message ===
          "Cannot compile event schema: it nests deeper than 128 levels (objects and arrays) once its $refs are expanded",
      `${hops} hops`,
    );
  }
  const taken = compileEventSchema(chain(120));
  assert.equal(validateEvent({ x: "a" }, taken).ok, true);
  assert.equal(validateEvent({ x: 1 }, taken).ok, false);
});

Deno.test("validateEvent() quotes a long key shortened, as an unknown key and in a path", () => {
  const schema = compileEventSchema({
    type: "object",
    additionalProperties: false,
    properties: { a: { type: "string" } },
  });
  const long = "k".repeat(100_000);
  const unknown = validateEvent({ a: "x", [long]: 1 }, schema);
  assert.ok(!unknown.ok);
  assert.equal(unknown.errors.length, 1);
  assert.match(unknown.errors[0].message, /^Unrecognized key: "k{256}… \(100000 characters\)"$/);
  const many = Object.fromEntries(Array.from({ length: 12 }, (_, i) => [`x${i}`, i]));
  const listed = validateEvent({ a: "x", ...many }, schema);
  assert.ok(!listed.ok);
  assert.match(listed.errors[0].message, /^Unrecognized keys: "x0", .*"x9" … and 2 more$/);

  const nested = compileEventSchema({
    type: "object",
    additionalProperties: { type: "object", properties: { n: { type: "number" } } },
  });
  const inPath = validateEvent({ [long]: { n: "one" } }, nested);
  assert.ok(!inPath.ok);
  assert.equal(inPath.errors[0].path, `${"k".repeat(256)}… (100000 characters).n`);
});

Deno.test("compileEventSchema refuses a $ref to a name only inherited from Object.prototype, as one to a missing definition", () => {
  // zod looked such a name up as `defs[name]` and found the inherited function: the property
  // then took any value.
  const refused: Record<string, unknown>[] = [
    { properties: { a: { $ref: "#/$defs/missing" } } },
    { properties: { a: { $ref: "#/$defs/constructor" } } },
    { properties: { a: { $ref: "#/$defs/toString" } }, $defs: {} },
    { properties: { a: { $ref: "#/definitions/hasOwnProperty" } }, definitions: {} },
    { properties: { a: { $ref: "#/$defs/valueOf" } }, $defs: { X: { type: "string" } } },
  ];
  for (const schema of refused) {
    assert.throws(
      () => compileEventSchema(schema),
      (error: unknown) =>
        error instanceof SchemaCompileError &&
        /^Cannot compile event schema: (properties\.a\.\$ref: )?Reference not found: #\//.test(
          error.message,
        ),
      JSON.stringify(schema),
    );
  }
  // A definition that has such a name is its own, and is taken.
  const own = compileEventSchema({
    properties: { a: { $ref: "#/$defs/constructor" } },
    $defs: { constructor: { type: "string" } },
  });
  assert.equal(own.safeParse({ a: "x" }).success, true);
  assert.equal(own.safeParse({ a: 1 }).success, false);
});

Deno.test("compileEventSchema reads a $ref's name as a JSON Pointer (~1 is '/', ~0 is '~'), as zod does, in its cycle and depth checks", () => {
  // Read as written, `x~1y` named no definition: the cycle went unchecked, and every event then
  // ran zod's schema into the end of the stack.
  for (const name of ["x/y", "x~y", "a~/b"]) {
    const ref = `#/$defs/${name.replaceAll("~", "~0").replaceAll("/", "~1")}`;
    assert.throws(
      () =>
        compileEventSchema({ properties: { a: { $ref: ref } }, $defs: { [name]: { $ref: ref } } }),
      (error: unknown) =>
        error instanceof SchemaCompileError &&
        error.message.includes(`$ref cycle without a property between: ${name} → ${name}`),
      ref,
    );
    // Found, and applied.
    const taken = compileEventSchema({
      properties: { a: { $ref: ref } },
      $defs: { [name]: { type: "string" } },
    });
    assert.equal(taken.safeParse({ a: "x" }).success, true, ref);
    assert.equal(taken.safeParse({ a: 1 }).success, false, ref);
  }
  // The depth check follows them too: a chain of definitions each one level deeper than the last.
  const defs: Record<string, unknown> = {};
  for (let i = 0; i < 100; i++) {
    defs[`d/${i}`] = { type: "object", properties: { n: { $ref: `#/$defs/d~1${i + 1}` } } };
  }
  defs["d/100"] = { type: "string" };
  assert.throws(
    () => compileEventSchema({ properties: { a: { $ref: "#/$defs/d~10" } }, $defs: defs }),
    (error: unknown) =>
      error instanceof SchemaCompileError && /once its \$refs are expanded/.test(error.message),
  );
});

Deno.test("compileEventSchema takes a $defs definition that is the boolean schema false (nothing passes) as it takes true", () => {
  // zod's $ref lookup read `false` as no definition: "Reference not found", of a definition that
  // is there.
  for (const defsKey of ["$defs", "definitions"]) {
    const none = compileEventSchema({
      properties: { a: { $ref: `#/${defsKey}/nothing` } },
      [defsKey]: { nothing: false },
    });
    assert.equal(none.safeParse({}).success, true, defsKey);
    assert.equal(none.safeParse({ a: "x" }).success, false, defsKey);
    assert.equal(none.safeParse({ a: null }).success, false, defsKey);
    const any = compileEventSchema({
      properties: { a: { $ref: `#/${defsKey}/anything` } },
      [defsKey]: { anything: true },
    });
    assert.equal(any.safeParse({ a: "x" }).success, true, defsKey);
    assert.equal(any.safeParse({ a: { b: [1] } }).success, true, defsKey);
  }
});

Deno.test("a $ref to an inherited name in a schema stored or deployed before that check is compiled as it was, and malformedKeyword names it", () => {
  const schema = { properties: { a: { $ref: "#/$defs/toString" } } };
  assert.equal(
    malformedKeyword(schema),
    "properties.a.$ref: Reference not found: #/$defs/toString",
  );
  // As before: the property takes any value (the stream is served, with a startup warning).
  const compiled = compileEventSchema(schema, { malformedKeywords: true });
  assert.equal(compiled.safeParse({ a: 1 }).success, true);
});

Deno.test("compileEventSchema refuses a schema that requires '__proto__', which no event may hold (zod dropped the requirement)", () => {
  for (
    const schema of [{ required: ["__proto__"] }, {
      properties: { a: { type: "object", required: ["id", "__proto__"] } },
    }]
  ) {
    assert.throws(
      () => compileEventSchema(schema),
      (error: unknown) =>
        error instanceof SchemaCompileError &&
        /required: '__proto__' cannot be required: no event may hold that key$/.test(error.message),
      JSON.stringify(schema),
    );
  }
});

Deno.test("schemaPatterns() lists every pattern and patternProperties key with its path, in order, not a property so named nor data", () => {
  const schema = {
    type: "object",
    properties: {
      pattern: { type: "string", pattern: "^a" },
      patternProperties: { type: "object", properties: { x: { const: { pattern: "data" } } } },
      list: { type: "array", items: [{ pattern: "^b" }], default: [{ pattern: "data" }] },
    },
    patternProperties: { "^c": { anyOf: [{ pattern: "^d" }] } },
    $defs: { e: { pattern: "^e" } },
    examples: [{ pattern: "data" }],
    enum: [{ pattern: "data" }],
  };
  assert.deepEqual(schemaPatterns(schema), [
    { path: ["patternProperties", "^c"], pattern: "^c" },
    { path: ["properties", "pattern", "pattern"], pattern: "^a" },
    { path: ["properties", "list", "items", 0, "pattern"], pattern: "^b" },
    { path: ["patternProperties", "^c", "anyOf", 0, "pattern"], pattern: "^d" },
    { path: ["$defs", "e", "pattern"], pattern: "^e" },
  ]);
});

Deno.test("validateEvent() refuses an event whose strings would cost more than MAX_EVENT_MATCHING_COST to test against its schema's patterns, before testing them", () => {
  // 4,003 instructions: over 60,000 characters RE2 took 5 s.
  const big = "[a-z]{1000}".repeat(4) + "[^a]";
  const uuid = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
  const schemas = [
    // Flat (a fast verdict by Ajv), and through zod alone: in an anyOf, and as patternProperties.
    { type: "object", properties: { s: { type: "string", pattern: big } } },
    { type: "object", properties: { s: { anyOf: [{ type: "number" }, { pattern: big }] } } },
    { type: "object", patternProperties: { "^s": { pattern: big } } },
    {
      type: "object",
      properties: { s: { type: "string", allOf: [{ pattern: "^a" }, { pattern: big }] } },
    },
  ];
  const long = `${"a".repeat(4_999)}b`;
  for (const jsonSchema of schemas) {
    const schema = compileEventSchema(jsonSchema);
    const started = performance.now();
    assert.deepEqual(validateEvent({ s: long }, schema), {
      ok: false,
      errors: [{
        path: "",
        message:
          `Event would cost more than ${MAX_EVENT_MATCHING_COST} to test against its schema's patterns (text characters × instructions a pattern may visit a character, per event): a pattern of 4003 instructions over 5000 characters costs 20015000`,
      }],
    }, JSON.stringify(jsonSchema).slice(0, 80));
    assert.ok(performance.now() - started < 1_000, `${performance.now() - started} ms`);
    // Each event has its own budget: a short string is tested (and does not match).
    const short = validateEvent({ s: `${"a".repeat(59)}b` }, schema);
    assert.ok(
      !short.ok && !short.errors[0].message.startsWith("Event would cost"),
      JSON.stringify(short),
    );
  }
  // Within it: an email pattern over 16 KB, and 1,600 UUIDs (64 KiB of them), as the UUID pattern
  // is matched in one pass (3 instructions a character, not its 40: 182 were past it).
  const email = String.raw`^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$`;
  const emails = compileEventSchema({ properties: { e: { type: "string", pattern: email } } });
  assert.equal(validateEvent({ e: `${"a".repeat(16_000)}@b.co` }, emails).ok, true);
  const ids = compileEventSchema({ properties: { ids: { items: { pattern: uuid } } } });
  const many = Array.from({ length: 1_600 }, () => crypto.randomUUID());
  assert.equal(validateEvent({ ids: many }, ids).ok, true);
  // One matched in one pass is charged the instructions it visits a character: 200 nested groups
  // in a loop visit some 400 a character, and are charged them.
  const nested = compileEventSchema({
    properties: { s: { type: "string", pattern: `^(?:${"(".repeat(200)}a${")".repeat(200)})*$` } },
  });
  const started = performance.now();
  assert.deepEqual(validateEvent({ s: "a".repeat(60_000) }, nested), {
    ok: false,
    errors: [{
      path: "",
      message:
        `Event would cost more than ${MAX_EVENT_MATCHING_COST} to test against its schema's patterns (text characters × instructions a pattern may visit a character, per event): a pattern of 407 instructions (403 a character: matched in one pass) over 60000 characters costs 24180000`,
    }],
  });
  assert.ok(performance.now() - started < 1_000, `${performance.now() - started} ms`);
  // A pattern a schema tests is its own, also through Ajv's cache of compiled patterns.
  assert.equal(validateEvent({ e: many[0] }, emails).ok, false);
  assert.equal(validateEvent({ ids: ["a@b.co"] }, ids).ok, false);
});

Deno.test("validateEvent() charges each state a pattern's matcher builds its table of character classes: .*[\\p{L}\\p{N}\\p{S}\\p{P}]a.{10}[cd] over 2,221 characters of six letters mixed is refused", () => {
  // Charged 118 a character (1 for each 16 classes), the DFA built a table of 1,610 entries
  // almost every character, twice (Ajv's verdict, then zod): 157–238 ms of CPU time an event.
  const schema = compileEventSchema({
    type: "object",
    properties: { s: { type: "string", pattern: ".*[\\p{L}\\p{N}\\p{S}\\p{P}]a.{10}[cd]" } },
  });
  let seed = 11;
  const letters = ["a", "b", "\u00e9", "1", "\u0436", "$"];
  let text = "";
  for (let i = 0; i < 2_221; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    text += letters[seed % 6];
  }
  const refused = validateEvent({ s: text }, schema);
  assert.equal(refused.ok, false);
  assert.equal(refused.ok || refused.errors.length, 1);
  assert.match(
    refused.ok ? "" : refused.errors[0].message,
    new RegExp(
      `^Event would cost more than ${MAX_EVENT_MATCHING_COST} to test against its schema's patterns \\(.*\\): a pattern of 18 instructions over 2221 characters costs 39978, and each state its matcher builds 1610 \\(a table of its 1609 classes of characters and the text's end\\): its state \\d+ in this test is past it$`,
    ),
  );
  // A short text is tested: its states are few.
  assert.equal(validateEvent({ s: `${text.slice(0, 100)}xa0123456789c` }, schema).ok, true);
});

Deno.test("compileEventSchema() refuses a number out of the double range (1e400, read as Infinity) in default, const, enum or examples, naming its path", () => {
  const cases: Array<[Record<string, unknown>, string]> = [
    // The default was filled in as Infinity, which JSON writes back as null.
    [
      { properties: { n: { type: "number", default: JSON.parse("1e400") } } },
      "properties.n.default",
    ],
    [{ properties: { n: { const: -Infinity } } }, "properties.n.const"],
    [{ properties: { n: { enum: [1, Infinity] } } }, "properties.n.enum[1]"],
    [{ $defs: { d: { examples: [{ a: [Infinity] }] } } }, "$defs.d.examples[0].a[0]"],
    [{ default: { a: { b: Infinity } } }, "default.a.b"],
  ];
  for (const [schema, path] of cases) {
    const value = path.includes("const") ? "-Infinity" : "Infinity";
    const message =
      `${path}: expected a number within the double range, got ${value} (JSON reads 1e400 as Infinity, which it writes back as null)`;
    assert.equal(malformedKeyword(schema), message);
    assert.throws(
      () => compileEventSchema(schema),
      (error: unknown) =>
        error instanceof SchemaCompileError &&
        error.message === `Cannot compile event schema: ${message}`,
      path,
    );
  }
  // A property that is itself named "default" is a schema, not data.
  assert.equal(malformedKeyword({ properties: { default: { maximum: 5 } } }), undefined);
  assert.equal(
    malformedKeyword({ properties: { n: { default: 1e308, enum: [1e308] } } }),
    undefined,
  );
  // Stored or deployed before this check: compiled as it was (served with a warning).
  const stored = compileEventSchema(
    { properties: { n: { type: "number", default: Infinity } } },
    { malformedKeywords: true },
  );
  assert.equal(stored.safeParse({}).success, true);
});

Deno.test("compileEventSchema() refuses a format it does not know (zod's converter ignored it: a misspelt one checked nothing), naming its path and the known formats", () => {
  const schema = { properties: { contact: { type: "string", format: "emial" } } };
  const message =
    `properties.contact.format: expected a known format (date-time, date, time, duration, email, hostname, ipv4, ipv6, uri, uuid, guid, mac, cidr, cidr-v6, base64, base64url, e164, credit_card, iban, jwt, emoji, nanoid, cuid, cuid2, ulid, xid, ksuid, uri-reference, iri-reference, uri-template, idn-email, idn-hostname, iri, json-pointer, relative-json-pointer, regex), got "emial"`;
  assert.equal(malformedKeyword(schema), message);
  assert.throws(
    () => compileEventSchema(schema),
    (error: unknown) =>
      error instanceof SchemaCompileError &&
      error.message === `Cannot compile event schema: ${message}`,
  );
  // Every known one compiles, and a property named "format" is no keyword.
  for (
    const format of ["email", "uuid", "date-time", "time", "ipv4", "uri", "uri-reference", "ksuid"]
  ) {
    compileEventSchema({ properties: { format: { type: "string", format } } });
  }
  // JSON Schema's standard formats zod does not check: accepted, checking nothing.
  for (const format of ["idn-email", "iri", "json-pointer", "relative-json-pointer", "regex"]) {
    const compiled = compileEventSchema({ properties: { a: { type: "string", format } } });
    assert.equal(compiled.safeParse({ a: "anything" }).success, true, format);
  }
  // Stored or deployed before this check: compiled as it was, checking nothing (served with a warning).
  const stored = compileEventSchema(schema, { malformedKeywords: true });
  assert.equal(stored.safeParse({ contact: "not an address" }).success, true);
});

Deno.test("an event whose schema's allOf members fill in different defaults at one place is refused with the reason, not thrown (zod cannot merge them)", () => {
  const schemas = [
    {
      properties: {
        o: {
          allOf: [{ properties: { a: { default: 1 } } }, { properties: { a: { default: 2 } } }],
        },
      },
    },
    {
      properties: {
        t: { allOf: [{ prefixItems: [{ type: "number" }, { default: 3 }] }, { type: "array" }] },
      },
    },
    // A `$ref` and the keywords beside it (README: "or a `$ref` and the keywords beside it").
    {
      $defs: { base: { properties: { a: { default: 1 } } } },
      properties: { r: { $ref: "#/$defs/base", properties: { a: { default: 2 } } } },
    },
  ];
  const events = [{ o: {} }, { t: [1] }, { r: {} }];
  for (const [index, json] of schemas.entries()) {
    const schema = compileEventSchema(json);
    const result = validateEvent(events[index], schema);
    assert.equal(result.ok, false, JSON.stringify(json));
    const errors = (result as { errors: { path: string; message: string }[] }).errors;
    assert.equal(errors.length, 1);
    assert.equal(errors[0].path, "");
    assert.ok(errors[0].message.startsWith(UNMERGABLE_MESSAGE), errors[0].message);
    assert.deepEqual(eventValidator(schema)(events[index]), errors);
  }
  // The same schema takes events whose members agree (the field given, or not filled in).
  const schema = compileEventSchema(schemas[0]);
  assert.deepEqual(validateEvent({ o: { a: 5 } }, schema), { ok: true, event: { o: { a: 5 } } });
});

Deno.test("listedErrors() lists at most `max` errors and then how many more, as a validator with maxErrors does", () => {
  const errors = Array.from({ length: 12 }, (_, i) => ({ path: `f${i}`, message: `bad ${i}` }));
  const ten = errors.slice(0, 10);
  assert.equal(listedErrors(ten, 10), ten, "as many as max: the same list");
  assert.deepEqual(listedErrors(errors.slice(0, 11), 10), [
    ...ten,
    { path: "", message: "and 1 more error not listed" },
  ]);
  assert.deepEqual(listedErrors(errors, 10), [
    ...ten,
    { path: "", message: "and 2 more errors not listed" },
  ]);
  // The validator's own list ends alike.
  const validate = eventValidator(
    compileEventSchema({
      type: "object",
      properties: Object.fromEntries(errors.map(({ path }) => [path, { type: "string" }])),
    }),
    { maxErrors: 10 },
  );
  const listed = validate(Object.fromEntries(errors.map(({ path }) => [path, 1])));
  assert.ok(Array.isArray(listed));
  assert.equal(listed.length, 11);
  assert.deepEqual(listed[10], listedErrors(errors, 10)[10]);
});

Deno.test("validateEvent() says which propertyNames rule a key breaks, and that a false subschema takes no value", () => {
  const cases: Array<[Record<string, unknown>, unknown, string, string]> = [
    // zod said only "Invalid key in record".
    [
      { properties: { o: { type: "object", propertyNames: { maxLength: 1 } } } },
      { o: { ab: 1 } },
      "o.ab",
      "Key breaks the schema's propertyNames: Too big: expected string to have <=1 characters",
    ],
    [
      { properties: { o: { type: "object", propertyNames: { pattern: "^a" } } } },
      { o: { b: 1 } },
      "o.b",
      "Key breaks the schema's propertyNames: Invalid string: must match pattern /^a/",
    ],
    // The inner issue is worded as a top-level one would be: zod gave the format's 400-character
    // pattern, and "expected never, received string" for a false propertyNames.
    [
      { properties: { o: { type: "object", propertyNames: { format: "date-time" } } } },
      { o: { b: 1 } },
      "o.b",
      "Key breaks the schema's propertyNames: " +
      "Invalid ISO datetime",
    ],
    [
      { properties: { o: { type: "object", propertyNames: false } } },
      { o: { b: 1 } },
      "o.b",
      "Key breaks the schema's propertyNames: Not allowed: the schema takes no value here, received string",
    ],
    // zod said "Invalid input: expected never, received number".
    [
      { properties: { x: false } },
      { x: 1 },
      "x",
      "Not allowed: the schema takes no value here, received number",
    ],
    [
      { properties: { x: { not: {} } } },
      { x: [1] },
      "x",
      "Not allowed: the schema takes no value here, received array",
    ],
  ];
  for (const [schema, event, path, message] of cases) {
    const result = validateEvent(event, compileEventSchema(schema));
    assert.deepEqual(result, { ok: false, errors: [{ path, message }] }, JSON.stringify(schema));
  }
});

Deno.test("compileEventSchema() refuses a schema past 131,072 objects and arrays once its $refs are expanded, so one event cannot take 2^40 anyOf checks", () => {
  // Each definition an anyOf of two $refs to the next: 3 KB, but a wrong value at `a` was checked
  // against every one of the 2^levels leaves (18 levels took 1 s; 40 stalled the process): about 5 * 2^levels objects and arrays.
  const chain = (levels: number) => {
    const $defs: Record<string, unknown> = { [`d${levels}`]: { type: "string" } };
    for (let i = 0; i < levels; i++) {
      $defs[`d${i}`] = { anyOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] };
    }
    return { type: "object", properties: { a: { $ref: "#/$defs/d0" } }, $defs };
  };
  for (const levels of [15, 40]) {
    assert.throws(
      () => compileEventSchema(chain(levels)),
      (error: unknown) =>
        error instanceof SchemaCompileError &&
        error.message ===
          "Cannot compile event schema: it holds more than 131072 objects and arrays once its $refs are expanded (each event value is checked against every anyOf/oneOf member that applies to it)",
      `${levels} levels`,
    );
  }
  // 14 levels: 5 * 2^14 - 1 objects and arrays, within the bound, and validating as before.
  const taken = compileEventSchema(chain(14));
  assert.equal(validateEvent({ a: "x" }, taken).ok, true);
  assert.equal(validateEvent({ a: 5 }, taken).ok, false);
  // A definition used below many properties counts each time, a recursive one once.
  const tree = {
    type: "object",
    properties: Object.fromEntries(
      Array.from({ length: 100 }, (_, i) => [`p${i}`, { $ref: "#/$defs/node" }]),
    ),
    $defs: {
      node: {
        type: "object",
        properties: {
          v: { type: "number" },
          kids: { type: "array", items: { $ref: "#/$defs/node" } },
        },
      },
    },
  };
  assert.doesNotThrow(() => compileEventSchema(tree));
});

Deno.test("compileEventSchema() counts a schema's depth once its $refs are expanded the same whichever property names a definition first", () => {
  /** `levels` objects nested under `p`, a string at the bottom. */
  const nested = (levels: number): unknown => {
    let node: unknown = { type: "string" };
    for (let level = 0; level < levels; level++) {
      node = { type: "object", properties: { p: node } };
    }
    return node;
  };
  // A and B name each other under a property: from the root, b → B → y → A → pad is the deepest
  // path (A's `$ref` back to B a leaf there). Kept from a → A → x → B → y → A (a leaf), B's depth
  // left A's padding out: the 129 levels passed when `b` was listed first.
  for (const [levels, refused] of [[60, false], [61, true]] as const) {
    const $defs = {
      A: { type: "object", properties: { x: { $ref: "#/$defs/B" }, pad: nested(levels) } },
      B: { type: "object", properties: { y: { $ref: "#/$defs/A" } } },
    };
    for (const order of [["a", "b"], ["b", "a"]]) {
      const properties = Object.fromEntries(
        order.map((key) => [key, { $ref: key === "a" ? "#/$defs/A" : "#/$defs/B" }]),
      );
      const compile = () => compileEventSchema({ type: "object", properties, $defs });
      if (refused) {
        assert.throws(compile, /nests deeper than 128 levels .* once its \$refs are expanded/);
      } else compile();
    }
  }
});

Deno.test("compileEventSchema() counts a definition's expanded size the same whichever property names it first", () => {
  // A two-way anyOf chain of `levels` definitions `<prefix>0`…, its last naming `end`.
  const chain = (prefix: string, levels: number, end: unknown) => {
    const $defs: Record<string, unknown> = { [`${prefix}${levels}`]: end };
    for (let i = 0; i < levels; i++) {
      const next = { $ref: `#/$defs/${prefix}${i + 1}` };
      $defs[`${prefix}${i}`] = { anyOf: [next, { ...next }] };
    }
    return $defs;
  };
  // A's size, counted first while B is being expanded (from C8's end), counted B's $ref as 1,
  // and was kept: reached from `a` first it is about 16,000, and the chain C doubles it 2^8 times.
  const $defs = {
    ...chain("D", 12, { type: "string" }),
    ...chain("C", 8, { $ref: "#/$defs/B" }),
    A: { type: "object", properties: { d: { $ref: "#/$defs/D0" }, q: { $ref: "#/$defs/B" } } },
    B: { type: "object", properties: { p: { $ref: "#/$defs/A" } } },
  };
  for (const order of [["x", "a"], ["a", "x"]]) {
    const refs: Record<string, unknown> = { x: { $ref: "#/$defs/C0" }, a: { $ref: "#/$defs/A" } };
    const properties = Object.fromEntries(order.map((key) => [key, refs[key]]));
    assert.throws(
      () => compileEventSchema({ type: "object", properties, $defs }),
      /holds more than 131072 objects and arrays once its \$refs are expanded/,
      order.join(", "),
    );
  }
});

Deno.test("compileEventSchema() does not reuse a definition's size inside the expansion of a definition it went through", () => {
  // B holds C under a property, C holds B: from the root, b → B (C's $ref back to B a leaf) and
  // c → C (B's $ref back to C a leaf) hold about 60,000 each, 120,000 in all. C's size, kept from
  // c → C → B, counted B's padding; reused inside b → B, where C's $ref back to B is a leaf, it
  // counted the padding twice: the 131,072 passed when `b` was listed first.
  const $defs = {
    B: {
      type: "object",
      properties: {
        c: { $ref: "#/$defs/C" },
        pad: { prefixItems: Array.from({ length: 60_000 }, () => ({})) },
      },
    },
    C: { type: "object", properties: { b: { $ref: "#/$defs/B" } } },
  };
  for (const order of [["b", "c"], ["c", "b"]]) {
    const properties = Object.fromEntries(
      order.map((key) => [key, { $ref: key === "b" ? "#/$defs/B" : "#/$defs/C" }]),
    );
    const schema = { type: "object", properties, $defs };
    compileEventSchema(schema);
    assert.equal(largeExpansion(schema), undefined, order.join(", "));
  }
});

Deno.test("compileEventSchema() takes a 700-object definition used under 100 properties (70,000 once expanded)", () => {
  // Each value is checked against one copy; the bound is set above such a total.
  const properties: Record<string, unknown> = {};
  for (let i = 0; i < 349; i++) properties[`f${i}`] = { type: "string", enum: ["a"] };
  const item = { type: "object", properties };
  const $defs = { item };
  const schema = {
    type: "object",
    properties: Object.fromEntries(
      Array.from({ length: 100 }, (_, i) => [`p${i}`, { $ref: "#/$defs/item" }]),
    ),
    $defs,
  };
  // 1 + 1 + 349 * 2 objects and arrays in the definition.
  assert.equal(JSON.stringify(item).match(/[{[]/g)!.length, 700);
  const compiled = compileEventSchema(schema);
  assert.equal(validateEvent({ p0: { f0: "a" } }, compiled).ok, true);
  assert.equal(validateEvent({ p99: { f348: "b" } }, compiled).ok, false);
});
