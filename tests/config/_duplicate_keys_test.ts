import assert from "node:assert/strict";
import fc from "fast-check";
import { duplicateKeyPath } from "../../src/config/_duplicate_keys.ts";

Deno.test("duplicateKeyPath() finds a key an object holds twice, with its path, at any depth", () => {
  const cases: Array<[string, PropertyKey[] | undefined]> = [
    ['{"streams": {"s": {}, "s": {}}}', ["streams", "s"]],
    ['{"a": 1, "b": [{"x": 1}, {"y": 2, "y": 3}]}', ["b", 1, "y"]],
    // Keys compared as JSON reads them: an escape spells the same key.
    ['{"streams": {"s": 1, "\\u0073": 2}}', ["streams", "s"]],
    // A key's text inside a string value, a quote escaped in a key, the same key in two objects.
    ['{"a": "\\"a\\": 1, \\"a\\"", "b\\"": {"a": 1}, "c": {"a": 2}}', undefined],
    ['[{"a": 1}, {"a": 2}]', undefined],
    ['"{\\"a\\": 1, \\"a\\": 2}"', undefined],
    ["{}", undefined],
  ];
  for (const [text, expected] of cases) {
    JSON.parse(text);
    assert.deepEqual(duplicateKeyPath(text), expected, text);
  }
});

Deno.test("duplicateKeyPath() finds none in JSON.stringify's text, and the one added to it", () => {
  fc.assert(
    fc.property(fc.jsonValue(), fc.string(), (value, key) => {
      assert.equal(duplicateKeyPath(JSON.stringify(value)), undefined);
      assert.equal(duplicateKeyPath(JSON.stringify(value, null, 2)), undefined);
      // The same key twice in an object holding the value.
      const text = `{${JSON.stringify(key)}: ${JSON.stringify(value)}, ${JSON.stringify(key)}: 1}`;
      assert.deepEqual(duplicateKeyPath(text), [key]);
    }),
  );
});
