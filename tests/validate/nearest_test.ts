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

Deno.test("nearestName with ignoreCase compares in lower case and returns the name as listed", () => {
  assert.deepEqual(nearestName("LIMT", ["cursor", "limit"], { ignoreCase: true }), {
    name: "limit",
    edits: 1,
  });
  assert.deepEqual(nearestName("LIMT", ["cursor", "limit"]), { name: "limit", edits: 5 });
});

Deno.test("nearestName with within leaves out names farther than it allows, none when none is within", () => {
  const half = (name: string) => Math.ceil(name.length / 2) - 1;
  assert.deepEqual(nearestName("limt", ["limit", "q"], { within: half }), {
    name: "limit",
    edits: 1,
  });
  // "x" is 1 edit from "q", but a 1-character name allows none.
  assert.equal(nearestName("x", ["q", "limit"], { within: half }), undefined);
});

Deno.test("nearestName with unique finds none when two names are as near, the nearest when one alone is", () => {
  assert.equal(nearestName("ab", ["ax", "xb"], { unique: true }), undefined);
  assert.deepEqual(nearestName("ab", ["ax", "xyz"], { unique: true }), { name: "ax", edits: 1 });
  // A tie farther than the nearest does not count.
  assert.deepEqual(nearestName("ab", ["ab", "ax", "xb"], { unique: true }), {
    name: "ab",
    edits: 0,
  });
});
