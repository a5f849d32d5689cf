import assert from "node:assert/strict";
import { editDistance, nearestName } from "../../src/validate/nearest.ts";

Deno.test("editDistance counts inserts, deletes and replacements", () => {
  assert.equal(editDistance("", ""), 0);
  assert.equal(editDistance("limit", "limit"), 0);
  assert.equal(editDistance("limt", "limit"), 1);
  assert.equal(editDistance("limit", "limt"), 1);
  assert.equal(editDistance("curser", "cursor"), 1);
  assert.equal(editDistance("kitten", "sitting"), 3);
  assert.equal(editDistance("", "abc"), 3);
});

Deno.test("nearestName is the name fewest edits away, the first listed on a tie, none of none", () => {
  assert.deepEqual(nearestName("limt", ["cursor", "limit"]), { name: "limit", edits: 1 });
  assert.deepEqual(nearestName("ab", ["ax", "xb"]), { name: "ax", edits: 1 });
  assert.equal(nearestName("x", []), undefined);
});
