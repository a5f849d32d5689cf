import assert from "node:assert/strict";
import { compileLinearPattern, PatternError } from "../../src/validate/mod.ts";
import { withLinearRegExp } from "../../src/validate/linear_regexp.ts";

Deno.test("compileLinearPattern() tests anywhere in the text, by code point, as RE2", () => {
  assert.equal(compileLinearPattern("b").test("abc"), true);
  assert.equal(compileLinearPattern("^b").test("abc"), false);
  assert.equal(compileLinearPattern("c$").test("abc"), true);
  // V8's RegExp without the u flag sees two code units here.
  assert.equal(compileLinearPattern("^.$").test("😀"), true);
  assert.equal(new RegExp("^.$").test("😀"), false);
});

Deno.test("compileLinearPattern() refuses lookaround and backreferences, naming the pattern", () => {
  for (const pattern of ["(?=a)b", "a(?!b)", "(a)\\1", "(?<=a)b"]) {
    assert.throws(
      () => compileLinearPattern(pattern),
      (error) =>
        error instanceof PatternError && error.message.includes(JSON.stringify(pattern)) &&
        error.message.includes("RE2"),
    );
  }
});

Deno.test("compileLinearPattern() answers a pattern that backtracks for hours at once", () => {
  // V8 takes exponential time in the a's here (44 of them: minutes); RE2 is linear.
  const pattern = compileLinearPattern("^([a-zA-Z0-9]+\\.?)+@example\\.com$");
  assert.equal(pattern.test(`${"a".repeat(10_000)}!`), false);
  assert.equal(pattern.test("first.last@example.com"), true);
});

Deno.test("withLinearRegExp() makes new RegExps test by RE2 only while it runs", () => {
  const made = withLinearRegExp(() => new RegExp("^.$"));
  assert.equal(made.test("😀"), true);
  assert.ok(made instanceof RegExp);
  assert.ok(withLinearRegExp(() => /x/ instanceof RegExp));
  assert.equal(new RegExp("^.$").test("😀"), false);
  assert.throws(() => withLinearRegExp(() => new RegExp("(?=a)")), PatternError);
  // Restored after a throw too.
  assert.equal(new RegExp("^.$").test("😀"), false);
});
