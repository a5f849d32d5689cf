import assert from "node:assert/strict";
import {
  checkCost,
  checksPast,
  checksUpTo,
  MAX_EVENT_SCHEMA_CHECKS,
  MAX_REQUEST_SCHEMA_CHECKS,
  mayPassCheckBudget,
  RequestCheckBudget,
} from "../../src/validate/_check_budget.ts";
import {
  CHECK_BUDGET_MESSAGE,
  checkBudgetCutMessage,
  compileEventSchema,
  eventValidator,
  prepareEventSchema,
  REQUEST_CHECK_BUDGET_MESSAGE,
  requestCheckBudgetMessage,
  validateEvent,
} from "../../src/validate/event.ts";
import { emptyItems, HUNDRED_PROPERTIES } from "./_hundred_properties.ts";

/** `members` objects, each of 5 `const` properties. */
function unionSchemaMembers(members: number): Record<string, unknown>[] {
  return Array.from({ length: members }, (_, member) => ({
    type: "object",
    properties: Object.fromEntries(
      Array.from({ length: 5 }, (_, field) => [`f${field}`, { const: `v${member}_${field}` }]),
    ),
    required: ["f0", "f1", "f2", "f3", "f4"],
  }));
}

/** An `anyOf` of {@linkcode unionSchemaMembers} under an array's `items`. */
function unionSchema(members: number): Record<string, unknown> {
  const anyOf = unionSchemaMembers(members);
  return { type: "object", properties: { items: { type: "array", items: { anyOf } } } };
}

/** An item `member` of {@linkcode unionSchema} takes. */
function itemOf(member: number): Record<string, string> {
  return Object.fromEntries(
    Array.from({ length: 5 }, (_, field) => [`f${field}`, `v${member}_${field}`]),
  );
}

Deno.test("an event of 5,000 items against an anyOf of 200 objects is refused by the check budget, its checks counted only up to the bound", () => {
  // 54 KB of schema and 55 KB of event: zod took 5.3 s to refuse it, 3.5 s to take it valid.
  const schema = unionSchema(200);
  const cost = checkCost(prepareEventSchema(schema));
  const wrong = { items: Array.from({ length: 5_000 }, () => ({ f0: "x" })) };
  const valid = { items: Array.from({ length: 5_000 }, () => itemOf(199)) };
  // About 1,200 checks an item: 6 million, counted no further than the bound.
  assert.equal(checksPast(cost, wrong, 6_000_000), true);
  assert.equal(checksPast(cost, wrong, 6_100_000), false);
  const compiled = compileEventSchema(schema);
  for (const event of [wrong, valid]) {
    assert.deepEqual(validateEvent(event, compiled), {
      ok: false,
      errors: [{ path: "", message: CHECK_BUDGET_MESSAGE }],
    });
  }
  assert.match(CHECK_BUDGET_MESSAGE, /more than 262144 checks/);
});

Deno.test("events of the 200-member anyOf within the budget validate as zod judges them", () => {
  const compiled = compileEventSchema(unionSchema(200));
  const items = [itemOf(0), itemOf(57), itemOf(199)];
  assert.deepEqual(validateEvent({ items }, compiled), { ok: true, event: { items } });
  const wrong = validateEvent({ items: [itemOf(3), { f0: "x" }] }, compiled);
  assert.deepEqual(wrong, { ok: false, errors: [{ path: "items.1", message: "Invalid input" }] });
});

Deno.test("an object schema of 3,000 properties under items is bounded too: 5,000 empty items are refused", () => {
  // No combinator: each item checked against every property it lacks (zod took 14.5 s).
  const properties = Object.fromEntries(
    Array.from({ length: 3_000 }, (_, index) => [`p${index}`, { type: "string" }]),
  );
  const schema = {
    type: "object",
    properties: { items: { type: "array", items: { type: "object", properties } } },
  };
  const compiled = compileEventSchema(schema);
  const many = { items: Array.from({ length: 5_000 }, () => ({})) };
  assert.deepEqual(validateEvent(many, compiled), {
    ok: false,
    errors: [{ path: "", message: CHECK_BUDGET_MESSAGE }],
  });
  // 50 items: 150,000 checks, within it.
  const few = { items: Array.from({ length: 50 }, () => ({ p7: "a" })) };
  assert.deepEqual(validateEvent(few, compiled), { ok: true, event: few });
});

Deno.test("checksPast() counts each value against every node that applies: anyOf members, allOf parts, $ref targets, missing properties", () => {
  const cost = checkCost({
    type: "object",
    properties: {
      a: { anyOf: [{ type: "string" }, { type: "number" }, { type: "object" }] },
      b: { allOf: [{ $ref: "#/$defs/D" }, { minimum: 0 }] },
      c: { type: "string" },
    },
    $defs: { D: { type: "number" } },
  });
  // root 1; a: 1 + 3 members (two refused on their type, one check each); b: 1 + allOf parts 2
  // + D 1; c missing 1. In all 10.
  const event = { a: "x", b: 3 };
  assert.equal(checksPast(cost, event, 10), false);
  assert.equal(checksPast(cost, event, 9), true);
});

Deno.test("checksPast() counts each value against every node of the array and object keywords, and a $ref to a boolean definition", () => {
  // [what is counted, schema, event, checks in all (the root's own 1 included)]
  const cases: [string, Record<string, unknown>, unknown, number][] = [
    // Items past prefixItems, with no `items`, are checked against nothing.
    ["prefixItems", { prefixItems: [{}, {}] }, [1, 2, 3], 1 + 2],
    // Array-form items are a prefix; additionalItems (each item 1 + 2 parts) the rest.
    [
      "items as a list, then additionalItems",
      { items: [{}, {}], additionalItems: { allOf: [{}, {}] } },
      [1, 2, 3, 4],
      1 + 2 + 2 * 3,
    ],
    ["contains, each item", { contains: {} }, [1, 2], 1 + 2],
    ["propertyNames, each key", { propertyNames: {} }, { a: 1, b: 2 }, 1 + 2],
    // Every pattern counted for every key not under `properties` (its match not tested).
    [
      "patternProperties",
      { properties: { a: {} }, patternProperties: { "^a": {}, "^b": {} } },
      { a: 1, b: 2, c: 3 },
      1 + 1 + 2 * 2,
    ],
    [
      "additionalProperties as a schema, each key not under properties",
      { properties: { a: {} }, additionalProperties: { type: "string" } },
      { a: 1, b: "x", c: "y" },
      1 + 1 + 2,
    ],
    ["additionalProperties false", { additionalProperties: false }, { a: 1, b: 2 }, 1 + 2],
    [
      "a $ref to a boolean definition",
      { properties: { a: { $ref: "#/$defs/F" } }, $defs: { F: false } },
      { a: 1 },
      1 + 1 + 1,
    ],
  ];
  for (const [counted, schema, event, checks] of cases) {
    const cost = checkCost(schema);
    assert.equal(checksPast(cost, event, checks), false, `${counted}: at most ${checks}`);
    assert.equal(checksPast(cost, event, checks - 1), true, `${counted}: more than ${checks - 1}`);
  }
});

Deno.test("the bench stream's schema and usual events are never counted; a recursive schema's always are", () => {
  const bench =
    JSON.parse(Deno.readTextFileSync(new URL("../../bench/config.json", import.meta.url)))
      .streams.bench.schema;
  const cost = checkCost(prepareEventSchema(bench));
  assert.ok(cost.size < 20);
  // Thousands of values (a 1 MiB event holds at most about 500,000) before it is counted.
  assert.equal(mayPassCheckBudget(cost, 1_000), false);
  const tree = checkCost(prepareEventSchema({
    $ref: "#/$defs/Node",
    $defs: {
      Node: { type: "object", properties: { children: { items: { $ref: "#/$defs/Node" } } } },
    },
  }));
  assert.equal(tree.size, Infinity);
  assert.equal(mayPassCheckBudget(tree, 1), true);
});

Deno.test("a recursive schema's events are counted, each definition once an object: a deep tree under an anyOf is judged by zod, a wide one refused", () => {
  const schema = {
    $ref: "#/$defs/N",
    $defs: {
      N: {
        anyOf: [
          { type: "object", properties: { x: { $ref: "#/$defs/N" }, k: { const: "a" } } },
          { type: "object", properties: { x: { $ref: "#/$defs/N" }, k: { const: "b" } } },
        ],
      },
    },
  };
  const compiled = compileEventSchema(schema);
  // 30 levels: every path counted would be 2^30 checks; zod's are about 30 × 2.
  let deep: Record<string, unknown> = { k: "a" };
  for (let level = 0; level < 30; level++) deep = { x: deep, k: "b" };
  assert.deepEqual(validateEvent(deep, compiled), { ok: true, event: deep });
  const wrong = { x: { k: "c" }, k: "a" };
  assert.deepEqual(validateEvent(wrong, compiled), {
    ok: false,
    errors: [{ path: "", message: "Invalid input" }],
  });
  // A tree whose children are each judged against 200 members.
  const tree = {
    $ref: "#/$defs/T",
    $defs: {
      T: {
        type: "object",
        properties: { children: { type: "array", items: { anyOf: unionSchemaMembers(200) } } },
      },
    },
  };
  const many = { children: Array.from({ length: 5_000 }, () => ({ f0: "x" })) };
  assert.deepEqual(validateEvent(many, compileEventSchema(tree)), {
    ok: false,
    errors: [{ path: "", message: CHECK_BUDGET_MESSAGE }],
  });
});

Deno.test("checksUpTo() gives the count, each property an object lacks one check, and stops past the limit", () => {
  const cost = checkCost(prepareEventSchema(HUNDRED_PROPERTIES));
  // The root, `items`, and each item: its node and the 100 properties it lacks.
  assert.equal(checksUpTo(cost, emptyItems(10), Infinity), 2 + 10 * 101);
  // One property held: 99 lacking, and the one held judged.
  assert.equal(checksUpTo(cost, { items: [{ p3: "x" }] }, Infinity), 2 + 1 + 99 + 1);
  assert.ok(checksUpTo(cost, emptyItems(10), 500) > 500);
});

Deno.test("RequestCheckBudget judges on estimates while they fit in half the budget, a pool apart from the counted checks; the event past what is left cuts the request", () => {
  const cost = checkCost(prepareEventSchema(HUNDRED_PROPERTIES));
  const validate = eventValidator(compileEventSchema(HUNDRED_PROPERTIES));
  const budget = new RequestCheckBudget({ maxChecks: 10_000 });
  const event = emptyItems(10);
  // Its estimate: (3 × 103 nodes - 1) × 12 values; its count 1,000.
  assert.equal(cost.size, 103);
  assert.deepEqual(validate(event, budget), event);
  assert.equal(budget.estimated, 308 * 12);
  // The estimate spends none of the counted checks' budget.
  assert.equal(budget.left, 10_000);
  // A second estimate would pass half the budget (7,392 > 5,000): counted, 1,000 each, while
  // they fit in the whole budget, not in what the estimate left of it.
  for (let index = 1; index <= 10; index++) {
    assert.deepEqual(validate(emptyItems(10), budget), event, `event ${index}`);
    assert.equal(budget.left, 10_000 - 1_000 * index);
  }
  assert.equal(budget.estimated, 308 * 12);
  assert.equal(budget.cut, false);
  // None left: this one, of 1,000, cuts the request, and every later event is refused unjudged,
  // one with no checks at all too.
  const refused = [{ path: "", message: requestCheckBudgetMessage(10_000) }];
  assert.deepEqual(validate(emptyItems(10), budget), refused);
  assert.equal(budget.cut, true);
  assert.deepEqual(validate({ items: [] }, budget), refused);
  assert.deepEqual(validate({}, budget), refused);
  // Another request's budget judges them.
  assert.deepEqual(validate({}, new RequestCheckBudget({ maxChecks: 10_000 })), {});
  // Without a budget only the event's own bound holds.
  assert.deepEqual(validate(emptyItems(100), undefined), emptyItems(100));
});

Deno.test("RequestCheckBudget: an event past its own bound is refused as before and spends that bound; once less is left, the next such event cuts the request", () => {
  const validate = eventValidator(compileEventSchema(HUNDRED_PROPERTIES));
  const budget = new RequestCheckBudget({ maxChecks: 600_000 });
  // 270,000 checks beyond its values: past the event's bound.
  const big = emptyItems(2_700);
  const eventRefusal = [{ path: "", message: CHECK_BUDGET_MESSAGE }];
  assert.deepEqual(validate(big, budget), eventRefusal);
  assert.deepEqual(validate(big, budget), eventRefusal);
  assert.equal(budget.left, 600_000 - 2 * MAX_EVENT_SCHEMA_CHECKS);
  // A small one still fits in what is left.
  assert.deepEqual(validate(emptyItems(10), budget), emptyItems(10));
  assert.deepEqual(validate(big, budget), [
    { path: "", message: requestCheckBudgetMessage(600_000) },
  ]);
  assert.equal(budget.cut, true);
});

Deno.test("checkBudgetCutMessage() is short and names the index of the event that cut the request, as the README quotes it", async () => {
  const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const message = "Refused unjudged: past the request's budget of schema checks (see index 8)";
  assert.equal(checkBudgetCutMessage(8), message);
  assert.ok(readme.includes(`(\`${message}\`)`));
  assert.ok(message.length < REQUEST_CHECK_BUDGET_MESSAGE.length / 4);
});

Deno.test("the default request budget is 8 events at the event's bound, and its message says what to do", () => {
  assert.equal(MAX_REQUEST_SCHEMA_CHECKS, 8 * MAX_EVENT_SCHEMA_CHECKS);
  assert.equal(new RequestCheckBudget().left, 2_097_152);
  assert.equal(REQUEST_CHECK_BUDGET_MESSAGE, requestCheckBudgetMessage(2_097_152));
  assert.match(
    REQUEST_CHECK_BUDGET_MESSAGE,
    /^Request would take more than 2097152 checks against its schema .*this event and every later one in the request were refused unjudged.*send fewer events per request .*or give the schema fewer anyOf\/oneOf members/,
  );
});
