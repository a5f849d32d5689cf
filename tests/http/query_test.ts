import assert from "node:assert/strict";
import { ApiError } from "../../src/http/errors.ts";
import { refuseUntakenQuery } from "../../src/http/query.ts";

/** The message of the 400 refuseUntakenQuery throws for `url`. */
function refusal(url: string, taken: readonly string[], groupFilters = false): string {
  try {
    refuseUntakenQuery(url, taken, { groupFilters });
  } catch (error) {
    assert.ok(error instanceof ApiError);
    assert.equal(error.status, 400);
    assert.equal(error.code, "invalid_query");
    return error.message;
  }
  assert.fail(`${url} was taken`);
}

Deno.test("an untaken query parameter a few edits from one taken names it (did you mean)", () => {
  const taken = ["from", "to", "limit", "cursor"];
  for (
    const [name, meant] of [
      ["limt", "limit"],
      ["lmit", "limit"],
      ["limits", "limit"],
      ["Curser", "cursor"],
      ["Frm", "from"],
      ["fromm", "from"],
    ]
  ) {
    assert.equal(
      refusal(`/v1/x?${name}=1`, taken),
      `Query parameter '${name}' is not taken here (did you mean '${meant}'?); this route takes: from, to, limit, cursor`,
    );
  }
});

Deno.test("no did-you-mean hint for a name far from each taken one, or as near two", () => {
  for (
    const [name, taken] of [
      ["x", ["q", "to"]],
      ["t", ["to", "top"]],
      ["window", ["from", "to", "limit", "cursor"]],
      // One edit from each: which was meant cannot be told.
      ["limitx", ["limit", "limits"]],
    ] as const
  ) {
    assert.equal(
      refusal(`/v1/x?${name}=1`, taken),
      `Query parameter '${name}' is not taken here; this route takes: ${taken.join(", ")}`,
    );
  }
});

Deno.test("a route taking no query parameter says it takes none", () => {
  assert.equal(
    refusal("/v1/key?x=1", []),
    "Query parameter 'x' is not taken here; this route takes none",
  );
});

Deno.test("a misspelled group filter names the group filter meant, keeping the field as written", () => {
  const taken = ["from", "to"];
  assert.equal(
    refusal("/v1/x?grp.Country=DE", taken, true),
    "Query parameter 'grp.Country' is not taken here (did you mean 'group.Country'?); this route takes: from, to, group.<field>",
  );
  // The case hint stays the one given for a name differing only by case.
  assert.equal(
    refusal("/v1/x?Group.country=DE", taken, true),
    "Query parameter 'Group.country' is not taken here (names are case-sensitive: 'group.country'?); this route takes: from, to, group.<field>",
  );
  // Without group filters a dotted name is one more name not taken.
  assert.equal(
    refusal("/v1/x?grp.country=DE", taken),
    "Query parameter 'grp.country' is not taken here; this route takes: from, to",
  );
});
