import assert from "node:assert/strict";
import { compileLinearPattern, PatternError } from "../../src/validate/mod.ts";
import {
  toRe2Syntax,
  withLinearRegExp,
  withPatternCache,
} from "../../src/validate/linear_regexp.ts";

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

Deno.test("compileLinearPattern() reads JavaScript's \\uXXXX (pairs too) and [^] escapes", () => {
  assert.equal(toRe2Syntax("\\u0041+"), "\\x{41}+");
  assert.equal(toRe2Syntax("\\uD83D\\uDE00"), "\\x{1f600}");
  assert.equal(toRe2Syntax("[\\u00e9-\\u00ff]"), "[\\x{e9}-\\x{ff}]");
  assert.equal(toRe2Syntax("a[^]b"), "a[\\s\\S]b");
  // An escaped backslash and a class holding ^ and ] stay as they are.
  assert.equal(toRe2Syntax("\\\\u0041"), "\\\\u0041");
  assert.equal(toRe2Syntax("[a^]]"), "[a^]]");
  assert.equal(compileLinearPattern("^\\u0041+$").test("AAA"), true);
  assert.equal(compileLinearPattern("^\\uD83D\\uDE00$").test("😀"), true);
  assert.equal(compileLinearPattern("^a[^]b$").test("a\nb"), true);
});

Deno.test("withLinearRegExp() leaves a library's own RegExp with flags (zod's emoji) to V8", () => {
  const emoji = withLinearRegExp(() => new RegExp("^\\p{Extended_Pictographic}$", "u"));
  assert.equal(emoji.test("😀"), true);
  assert.equal(emoji.test("a"), false);
});

Deno.test("compileLinearPattern() differs from RegExp where the README says", () => {
  assert.equal(compileLinearPattern("^.$").test("\r"), true);
  assert.equal(new RegExp("^.$").test("\r"), false);
  for (const separator of ["\u2028", "\u2029"]) {
    assert.equal(compileLinearPattern("^.$").test(separator), true);
    assert.equal(new RegExp("^.$").test(separator), false);
  }
  assert.equal(compileLinearPattern("^\\s$").test("\u00a0"), false);
  assert.equal(new RegExp("^\\s$").test("\u00a0"), true);
  assert.equal(compileLinearPattern("^\\w$").test("é"), false);
  assert.throws(() => compileLinearPattern("a{1001}"), PatternError);
});

Deno.test("withPatternCache() compiles a pattern once while it runs, and forgets it after", () => {
  const [first, again] = withPatternCache(() => [
    compileLinearPattern("^[a-z]{3}$"),
    compileLinearPattern("^[a-z]{3}$"),
  ]);
  assert.equal(first, again);
  assert.notEqual(compileLinearPattern("^[a-z]{3}$"), compileLinearPattern("^[a-z]{3}$"));
  // A refused one is refused again.
  withPatternCache(() => {
    assert.throws(() => compileLinearPattern("(?=a)"), PatternError);
    assert.throws(() => compileLinearPattern("(?=a)"), PatternError);
  });
});
