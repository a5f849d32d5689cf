import assert from "node:assert/strict";
import fc from "fast-check";
import {
  editDistance,
  editDistanceWithin,
  nearestName,
  type NearestOptions,
} from "../../src/validate/nearest.ts";

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

// Short strings over few letters, so that many pairs are a few edits apart.
const word = fc.string({ unit: fc.constantFrom("a", "b", "c", "A"), maxLength: 12 });

Deno.test("editDistanceWithin is editDistance when that is within the bound, none when it is past it", () => {
  fc.assert(
    fc.property(word, word, fc.integer({ min: -1, max: 14 }), fc.boolean(), (a, b, bound, half) => {
      const most = half ? bound + 0.5 : bound;
      const full = editDistance(a, b);
      assert.equal(editDistanceWithin(a, b, most), full <= most ? full : undefined);
    }),
    { numRuns: 2_000 },
  );
});

/** nearestName as first written: every name measured in full. */
function nearestMeasuringAll(name: string, names: readonly string[], options: NearestOptions) {
  const { ignoreCase = false, within, unique = false } = options;
  let best: { name: string; edits: number } | undefined;
  let tied = false;
  for (const one of names) {
    const edits = ignoreCase
      ? editDistance(name.toLowerCase(), one.toLowerCase())
      : editDistance(name, one);
    if (within !== undefined && edits > within(one)) continue;
    if (best === undefined || edits < best.edits) {
      best = { name: one, edits };
      tied = false;
    } else if (edits === best.edits) tied = true;
  }
  return unique && tied ? undefined : best;
}

Deno.test("nearestName finds what measuring every name in full finds, on ties, unique and ignoreCase too", () => {
  const withins = [undefined, (one: string) => Math.ceil(one.length / 2) - 1, () => 2, () => 0];
  fc.assert(
    fc.property(
      word,
      fc.array(word, { maxLength: 8 }),
      fc.boolean(),
      fc.boolean(),
      fc.integer({ min: 0, max: withins.length - 1 }),
      (name, names, ignoreCase, unique, pick) => {
        const options = { ignoreCase, unique, within: withins[pick] };
        assert.deepEqual(
          nearestName(name, names, options),
          nearestMeasuringAll(name, names, options),
        );
      },
    ),
    { numRuns: 3_000 },
  );
});

Deno.test("nearestName finds none of 1,000 names of 64 characters far from the one given", () => {
  let seed = 7;
  const letter = () => {
    seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff;
    return "abcdefghijklmnopqrstuvwxyz0123456789"[(seed >> 16) % 36];
  };
  const name = () => Array.from({ length: 64 }, letter).join("");
  const names = Array.from({ length: 1_000 }, name);
  const within = (one: string) => Math.ceil(one.length / 2) - 1;
  assert.equal(nearestName(name(), names, { ignoreCase: true, within, unique: true }), undefined);
  // One a few edits from a listed name is still found among them.
  const meant = names[500].slice(0, 60) + "zzzz";
  assert.deepEqual(nearestName(meant, names, { ignoreCase: true, within, unique: true }), {
    name: names[500],
    edits: editDistance(meant, names[500]),
  });
});
