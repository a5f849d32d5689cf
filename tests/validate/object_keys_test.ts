import assert from "node:assert/strict";
import { z } from "zod";
import { meantKey, objectKeysAt } from "../../src/validate/object_keys.ts";

Deno.test("objectKeysAt() finds an object's keys through optional, defaulted, record and array steps", () => {
  const schema = z.strictObject({
    name: z.string(),
    items: z.array(z.strictObject({ id: z.string(), size: z.number() })).default([]),
    byName: z.record(z.string(), z.strictObject({ on: z.boolean() }).optional()),
    either: z.union([z.strictObject({ a: z.string() }), z.strictObject({ b: z.string() })]),
  });
  assert.deepEqual(objectKeysAt(schema, []), ["name", "items", "byName", "either"]);
  assert.deepEqual(objectKeysAt(schema, ["items", 3]), ["id", "size"]);
  assert.deepEqual(objectKeysAt(schema, ["byName", "x"]), ["on"]);
  // A union's member, a value that is not an object, a key the object does not have: none.
  assert.equal(objectKeysAt(schema, ["either"]), undefined);
  assert.equal(objectKeysAt(schema, ["name"]), undefined);
  assert.equal(objectKeysAt(schema, ["nothing"]), undefined);
  assert.equal(objectKeysAt(schema, ["__proto__"]), undefined);
});

Deno.test("meantKey() names the key one alone is near, in another case or a few edits away", () => {
  const taken = ["window", "groupBy", "aggregate", "retention", "maxGroups", "maxSessions"];
  assert.equal(meantKey("groupby", taken), "groupBy");
  assert.equal(meantKey("windw", taken), "window");
  assert.equal(meantKey("aggregates", taken), "aggregate");
  assert.equal(meantKey("zzzzzz", taken), undefined);
  // Two as near: neither guessed.
  assert.equal(meantKey("ab", ["ax", "xb"]), undefined);
  // Far longer than any: not measured, none.
  assert.equal(meantKey("g".repeat(1_000_000), taken), undefined);
});
