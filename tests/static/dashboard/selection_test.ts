/**
 * Which streams the dashboard draws (static/dashboard/selection.js): the choice kept in the URL's
 * fragment, the shown streams (at most a fixed number) and the rows of the list to choose from.
 */
import assert from "node:assert/strict";
import fc from "fast-check";
import {
  choiceHash,
  listedStreams,
  MAX_SHOWN_STREAMS,
  parseChoice,
  shownStreams,
} from "../../../static/dashboard/selection.js";

const many = Array.from({ length: 300 }, (_, i) => `s${String(i).padStart(3, "0")}`).reverse();

Deno.test("a choice survives its URL fragment, and a fragment without one chooses nothing", () => {
  assert.equal(parseChoice(""), null);
  assert.equal(parseChoice("#other"), null);
  assert.deepEqual(parseChoice("#streams="), []);
  assert.deepEqual(parseChoice("#streams=a,b,a,,c"), ["a", "b", "c"]);
  assert.deepEqual(parseChoice("#streams=a,%E0%A4%A,b"), ["a", "b"]);
  fc.assert(fc.property(fc.uniqueArray(fc.string({ minLength: 1 })), (names) => {
    assert.deepEqual(parseChoice(choiceHash(names)), names);
  }));
});

Deno.test("every stream is shown when there are no more than the limit, whatever was chosen", () => {
  assert.equal(MAX_SHOWN_STREAMS, 6);
  assert.deepEqual(shownStreams(["b", "a", "c"], null), ["a", "b", "c"]);
  assert.deepEqual(shownStreams(["b", "a", "c"], []), ["a", "b", "c"]);
  assert.deepEqual(shownStreams(["b", "a", "c"], ["c"]), ["a", "b", "c"]);
});

Deno.test("with many streams the first ones by name are shown, or the chosen ones, never more than the limit", () => {
  assert.deepEqual(shownStreams(many, null), ["s000", "s001", "s002", "s003", "s004", "s005"]);
  assert.deepEqual(shownStreams(many, ["s200", "s100", "gone"]), ["s100", "s200"]);
  assert.equal(shownStreams(many, many).length, MAX_SHOWN_STREAMS);
  assert.deepEqual(shownStreams(many, []), []);
  // A link whose streams were all deleted since shows the default.
  assert.deepEqual(shownStreams(many, ["gone"]), shownStreams(many, null));
  fc.assert(fc.property(
    fc.uniqueArray(fc.stringMatching(/^[a-z]{1,3}$/)),
    fc.option(fc.array(fc.stringMatching(/^[a-z]{1,3}$/))),
    (names, chosen) => {
      const shown = shownStreams(names, chosen);
      assert.ok(shown.length <= MAX_SHOWN_STREAMS);
      assert.ok(shown.every((name) => names.includes(name)));
      assert.deepEqual(shown, [...shown].sort());
    },
  ));
});

Deno.test("the list to choose from holds the shown streams, then the matches, at most its rows", () => {
  const shown = ["s100", "s200"];
  const all = listedStreams(many, shown, "", 100);
  assert.equal(all.rows.length, 100);
  assert.deepEqual(all.rows.slice(0, 4), ["s100", "s200", "s000", "s001"]);
  assert.equal(all.more, 300 - 100);
  const some = listedStreams(many, shown, " S29 ", 100);
  assert.deepEqual(some, {
    rows: ["s100", "s200", ...Array.from({ length: 10 }, (_, i) => `s29${i}`)],
    matches: 10,
    more: 0,
  });
  assert.deepEqual(listedStreams(many, shown, "nothing", 100).rows, shown);
});
