import assert from "node:assert/strict";
import fc from "fast-check";
import { RE2JS } from "re2js";
import { evalAtRoot } from "../_eval.ts";
import {
  chargeTest,
  compileLinearPattern,
  endMatchingBudget,
  MAX_EVENT_MATCHING_COST,
  MAX_PATTERN_SIZE,
  PatternBudgetError,
  PatternError,
  patternSize,
  SOURCE_CHARACTERS_PER_INSTRUCTION,
  startMatchingBudget,
} from "../../src/validate/mod.ts";
import {
  CLASSES_PER_INSTRUCTION,
  patternCompileSize,
  RANGES_PER_INSTRUCTION,
  toRe2Syntax,
  unicodeClassCompiles,
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

Deno.test("compileLinearPattern() charges a pattern matched in one pass no less than the instructions RE2 visits a character, any other its size", () => {
  const uuid = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$";
  assert.deepEqual(
    [compileLinearPattern(uuid).size, compileLinearPattern(uuid).characterCost],
    [40, 3],
  );
  // Not matched in one pass: unanchored, or two ways to go on.
  for (const pattern of [uuid.slice(1, -1), "^(a|ab)c", String.raw`^[a-z.]+@[a-z.]+\.[a-z]+$`]) {
    const compiled = compileLinearPattern(pattern);
    assert.equal(compiled.characterCost, compiled.size, pattern);
  }
  // RE2's one-pass matcher, its instructions counted as it reads them.
  const onePass = [
    uuid,
    `^(?:${"(".repeat(20)}a${")".repeat(20)})*$`,
    "^(?:a(b)|c(d(e)))*$",
    String.raw`^[\p{L}\p{N}]*\b$`,
    "^x?y+(?:z|w){2,5}$",
    "^(?:)a",
  ];
  fc.assert(
    fc.property(
      fc.constantFrom(...onePass),
      fc.string({ unit: fc.constantFrom(..."abcdexyzw0-f中1") }),
      (pattern, text) => {
        const program = RE2JS.compile(toRe2Syntax(pattern));
        const instructions = program.re2().onepass!.inst;
        let visits = 0;
        program.re2().onepass!.inst = new Proxy(instructions, {
          get(target, key, receiver) {
            if (typeof key === "string" && /^\d+$/.test(key)) visits += 1;
            return Reflect.get(target, key, receiver);
          },
        });
        const compiled = compileLinearPattern(pattern);
        assert.ok(compiled.characterCost < compiled.size, pattern);
        assert.equal(program.test(text), compiled.test(text));
        assert.ok(
          visits <= compiled.characterCost * (text.length + 1),
          `${pattern} over ${JSON.stringify(text)}: ${visits} visits`,
        );
      },
    ),
  );
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

/** Patterns whose program size {@linkcode patternSize} must not understate. */
const SIZED_PATTERNS = [
  "",
  "a",
  "^[A-Z]{2}$",
  "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
  "^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$",
  "^([a-z]+\\.?)+@x\\.com$",
  "x{2,5}",
  "x{2,}",
  "x{0}",
  "(?i)abc",
  "(?P<n>ab)|cd|",
  "[]a]{3}",
  "[^]a]{3}",
  "[[:alpha:]]{5}",
  "\\Qa.b\\E{4}",
  "\\x{41}{10}",
  "\\x41{3}",
  "\\pL{10}",
  "\\p{Greek}{10}",
  "(?i:ab){3}",
  "((((a{2}){2}){2}){2}){60}",
  "a*?b+?c??",
  "a{,5}",
  "^.{0,1000}$",
  "(a|b|c){300}",
  "[a-z]{1000}[^x]{999}",
  "\\u0041{7}",
  "a[^]{4}b",
  "😀{5}",
  "^(?:[01]?\\d|2[0-3]):[0-5]\\d$",
];

Deno.test("patternSize() is the size of the program RE2 compiles, read without compiling: never less", () => {
  for (const pattern of SIZED_PATTERNS) {
    const compiled = RE2JS.compile(toRe2Syntax(pattern)).programSize();
    assert.ok(
      patternSize(pattern) >= compiled,
      `${pattern}: ${patternSize(pattern)} < ${compiled}`,
    );
  }
  // The README's examples: as RE2 counts them.
  assert.equal(patternSize("[a-z]{1000}"), 1002);
  assert.equal(patternSize(SIZED_PATTERNS[3]), 40);
  assert.equal(patternSize("^[A-Z]{2}$"), 6);
  assert.equal(patternSize("^[A-Z]{2}$"), RE2JS.compile("^[A-Z]{2}$").programSize());
  assert.equal(patternSize("^.{0,1000}$"), 2004);
  // RE2 refuses a count over 1,000: counted as 1,000 (its own message tells why).
  assert.equal(patternSize("a{5000}"), 1002);
});

Deno.test("patternSize() is never less than RE2's program for patterns of repeats, groups and alternatives", () => {
  const token = fc.constantFrom(
    "a",
    "b",
    "[a-z]",
    "\\d",
    "\\pL",
    ".",
    "^",
    "$",
    "|",
    "(",
    "(?:",
    "(?P<g>",
    ")",
    "*",
    "+",
    "?",
    "*?",
    "{3}",
    "{2,}",
    "{0,4}",
    "{12,30}",
    "\\Qx.\\E",
    "(?i)",
  );
  fc.assert(
    fc.property(fc.array(token, { maxLength: 24 }), (tokens) => {
      const pattern = tokens.join("");
      let compiled: number;
      try {
        compiled = RE2JS.compile(pattern).programSize();
      } catch {
        return; // RE2 refuses it: nothing is compiled.
      }
      assert.ok(
        patternSize(pattern) >= compiled,
        `${pattern}: ${patternSize(pattern)} < ${compiled}`,
      );
    }),
    { numRuns: 2_000 },
  );
});

Deno.test("patternSize() reads a long pattern of unclosed names, classes and escapes in one pass", () => {
  // Each looked for its closer to the end of the text: quadratic, a second for 64 KB. The bound
  // is a guard against that (22 s), far above what it takes, not a speed target.
  const started = performance.now();
  for (const unit of ["(?", "(?P<", "\\x{", "[[:", "\\p{"]) {
    assert.ok(patternSize(unit.repeat(262_144 / unit.length)) > 0);
  }
  assert.ok(performance.now() - started < 5_000, `took ${performance.now() - started} ms`);
});

Deno.test("patternSize() and patternCompileSize() count at least one instruction for each SOURCE_CHARACTERS_PER_INSTRUCTION characters of text: flags and a long class compile to few, but each character is parsed and kept", () => {
  // `(?i)` compiles to no instruction: 15,000 of them (60,000 characters) counted 4, so an event
  // could have each compiled (10-90 ms) for 4 instructions' charge, and 2,000 kept 245 MB.
  const flags = "(?i)".repeat(15_000);
  const longClass = `[${"a".repeat(60_000)}]`;
  for (const pattern of [flags, `${flags}x`, longClass]) {
    const floor = Math.ceil(pattern.length / SOURCE_CHARACTERS_PER_INSTRUCTION);
    assert.ok(patternSize(pattern) >= floor, `${patternSize(pattern)} < ${floor}`);
    assert.ok(patternCompileSize(pattern) >= floor, `${patternCompileSize(pattern)} < ${floor}`);
  }
  assert.equal(patternSize(flags), 3_750);
  // Past MAX_PATTERN_SIZE by its length alone: refused, saying so.
  assert.throws(() => compileLinearPattern("(?i)".repeat(20_001)), {
    name: "PatternError",
    message: /\(80004 characters\)' is too long: a pattern may have 80000 characters$/,
  });
  // Compiling to as many instructions as its length counts (5,002: 5,000 characters and the
  // program's 2, then 18,758 flags of none), it is too large, not only too long.
  const asLargeAsLong = "a".repeat(5_000) + "(?i)".repeat(18_758);
  assert.equal(Math.ceil(asLargeAsLong.length / SOURCE_CHARACTERS_PER_INSTRUCTION), 5_002);
  assert.throws(() => compileLinearPattern(asLargeAsLong), {
    name: "PatternError",
    message: /' is too large: it compiles to about 5002 instructions/,
  });
  // A short pattern is counted as before.
  assert.equal(patternSize("(?i)^[a-z]{2}$"), 6);
  assert.equal(patternSize("[[:alpha:]]"), 3);
});

Deno.test("patternCompileSize() asks RE2 about no Unicode class after one it does not know: 4,900 unknown classes in a pattern compile one", () => {
  // Each was compiled to count its ranges, and failed, uncached: an event's pattern of 4,900 of
  // them (under MAX_PATTERN_SIZE) took 70-400 ms, each time, before RE2 refused it.
  const unknown = Array.from({ length: 4_900 }, (_, index) => `\\p{Zz${index}}`).join("");
  for (const pattern of [unknown, `[${unknown}]`, "\\p{Zz}".repeat(4_900)]) {
    const before = unicodeClassCompiles();
    assert.ok(patternCompileSize(pattern) > 0);
    assert.equal(unicodeClassCompiles() - before, 1);
    assert.throws(() => compileLinearPattern(pattern), PatternError);
  }
  // A known class before the unknown one still counts its ranges.
  assert.ok(patternCompileSize("\\pL\\p{Zz}") > 20);
});

Deno.test("compileLinearPattern() refuses a pattern past MAX_PATTERN_SIZE before compiling it", () => {
  // RE2 takes this one (1,390,002 instructions) in seconds.
  const huge = "[a-z]{1000}".repeat(1390);
  assert.throws(
    () => compileLinearPattern(huge),
    (error) =>
      error instanceof PatternError &&
      error.message.includes("is too large: it compiles to about 1390002 instructions") &&
      error.message.includes(`past the ${MAX_PATTERN_SIZE} a pattern may have`) &&
      error.message.includes("(15290 characters)"),
  );
  // 4,992: taken; 5,003: refused.
  const atLimit = "[a-z]{1000}".repeat(4) + "[a-z]{990}";
  assert.equal(patternSize(atLimit), 4992);
  assert.equal(compileLinearPattern(atLimit).test("abc"), false);
  assert.throws(() => compileLinearPattern("[a-z]{1000}".repeat(5) + "x"), /too large/);
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

Deno.test("compiled patterns keep at most MAX_RETAINED_MATCHER_BYTES of matcher states together: 12 patterns whose DFAs held 100 MB keep under 24 MB, and still match", async () => {
  // re2js lets each compiled pattern's lazy DFA keep up to 8 MiB of states, built from whatever
  // texts it tests: 12 of these held 100 MB after three 12,000-character texts each.
  const { code, stdout, stderr } = await evalAtRoot(
    `
    import { compileLinearPattern, MAX_RETAINED_MATCHER_BYTES, retainedMatcherSize } from "./src/validate/linear_regexp.ts";
    const heap = () => { gc(); gc(); return Deno.memoryUsage().heapUsed; };
    let seed = 7;
    const letters = ["a", "b", "\\u00e9", "1", "\\u0436", "$"];
    const text = () => { let s = ""; for (let i = 0; i < 12000; i++) { seed = (seed * 1103515245 + 12345) % 2147483648; s += letters[seed % 6]; } return s; };
    const texts = [text(), text(), text()];
    const patterns = [];
    const before = heap();
    for (let i = 0; i < 12; i++) {
      const pattern = compileLinearPattern(".*[\\\\p{L}\\\\p{N}\\\\p{S}\\\\p{P}]a.{10}[cd" + String.fromCodePoint(0x4e00 + i) + "]");
      patterns.push(pattern);
      for (const t of texts) pattern.test(t);
    }
    const grown = heap() - before;
    // The first pattern's states were dropped: it builds them again, with the same answers.
    const probes = [texts[0] + "c", texts[1], "xa0123456789c", "xa012345678c", "\\u0436$a0123456789d"];
    const answers = probes.map((probe) => patterns[0].test(probe));
    const fresh = compileLinearPattern(".*[\\\\p{L}\\\\p{N}\\\\p{S}\\\\p{P}]a.{10}[cd\\u4e00]");
    const expected = probes.map((probe) => fresh.test(probe));
    console.log(JSON.stringify({ grown, retained: retainedMatcherSize(), limit: MAX_RETAINED_MATCHER_BYTES, answers, expected }));
    `,
    { flags: ["--v8-flags=--expose-gc"] },
  );
  assert.equal(code, 0, stderr);
  const { grown, retained, limit, answers, expected } = JSON.parse(stdout);
  assert.equal(limit, 16 * 1024 * 1024);
  assert.ok(retained <= limit, `the matchers keep ${retained} bytes`);
  assert.ok(grown < 24_000_000, `the heap grew ${grown} bytes over 12 patterns`);
  assert.deepEqual(answers, expected);
  assert.deepEqual(answers.slice(2), [true, false, true]);
});

Deno.test("patternCompileSize() counts each class's ranges of characters, RANGES_PER_INSTRUCTION an instruction, and equals patternSize() for small classes", () => {
  // 1,003 instructions of 801 ranges each took 50–160 ms to compile, ^[a-z]{1000} 5–10 ms.
  assert.equal(RANGES_PER_INSTRUCTION, 32);
  assert.equal(patternSize("^[\\p{L}\\p{N}\\p{S}\\p{P}]{1000}"), 1003);
  assert.equal(patternCompileSize("^[\\p{L}\\p{N}\\p{S}\\p{P}]{1000}"), 40_003);
  assert.ok(patternCompileSize("\\pL") > 20);
  // A name pattern with a bounded Unicode class: six fit a definition's 16,000 (2,303 each; at 8
  // ranges an instruction 8,803, one at most; seven took 8–43 ms to compile).
  assert.equal(patternCompileSize("^[\\p{L} .'-]{1,100}$"), 2_303);
  assert.equal(patternCompileSize("^[\\p{L} .'-]+$"), 27);
  assert.ok(patternCompileSize("\\P{Greek}") > patternSize("\\P{Greek}"));
  for (
    const pattern of [
      "^[a-z]{1000}",
      "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$",
      "(a|b)*c",
      "\\p{Bogus}", // RE2 refuses it: nothing to count
    ]
  ) {
    assert.equal(patternCompileSize(pattern), patternSize(pattern), pattern);
  }
});

Deno.test("compileLinearPattern() charges each state its DFA builds its table of character classes, CLASSES_PER_INSTRUCTION an instruction, as it builds it: exactly the states re2js builds", () => {
  // A table of 1,610 entries a state, and six letters mixed build one almost every character:
  // charged 1 a character for each 16 classes (118), 2,221 characters of them took 100–240 ms.
  assert.equal(CLASSES_PER_INSTRUCTION, 1);
  const pattern = ".*[\\p{L}\\p{N}\\p{S}\\p{P}]a.{10}[cd]";
  const manyClasses = compileLinearPattern(pattern);
  assert.deepEqual(
    [manyClasses.size, manyClasses.characterCost, manyClasses.stateCost],
    [18, 18, 1610],
  );
  assert.ok(compileLinearPattern(".*[a-z]a.{10}[cd]").stateCost < 20);
  // Matched in one pass: no DFA, no states.
  assert.equal(compileLinearPattern("^[\\p{L} .'-]{1,100}$").stateCost, 0);
  // The states re2js's own DFA builds over the text, counted on a copy of the pattern.
  const text = sixLetters(2_221);
  const copy = RE2JS.compile(pattern);
  const dfa = (copy.re2() as unknown as { dfa: { allocTable: (...args: unknown[]) => unknown } })
    .dfa;
  const allocTable = dfa.allocTable;
  let states = 0;
  dfa.allocTable = function (...args) {
    states += 1;
    return allocTable.apply(this, args);
  };
  const matched = copy.test(text);
  // 1,276 tables, and 2 that re2js's own memory budget refused (it reset, then gave up): each
  // asked for is charged.
  assert.equal(states, 1_278);
  const cost = 18 * text.length + states * 1610;
  // A fresh pattern each time: a DFA keeps the states it built for the next test.
  const charged = (budget: number) => {
    startMatchingBudget(budget);
    const compiled = compileLinearPattern(pattern);
    try {
      assert.ok(chargeTest(compiled, text.length));
      return compiled.test(text);
    } finally {
      endMatchingBudget();
    }
  };
  assert.equal(charged(cost), matched);
  assert.throws(
    () => charged(cost - 1),
    (error) =>
      error instanceof PatternBudgetError &&
      error.message.endsWith(
        `: a pattern of 18 instructions over 2221 characters costs 39978, and each state its matcher builds 1610 (a table of its 1609 classes of characters and the text's end): its state ${states} in this test is past it`,
      ),
  );
  // Ordinary patterns build few states: within an event's budget over texts as long as before.
  startMatchingBudget(MAX_EVENT_MATCHING_COST);
  try {
    const email = compileLinearPattern(
      String.raw`^[a-zA-Z0-9._%+-]+@[a-zA-Z0-9.-]+\.[a-zA-Z]{2,}$`,
    );
    assert.equal(email.stateCost, 18);
    const emailText = `${"a".repeat(16_000)}@b.co`;
    assert.ok(chargeTest(email, emailText.length) && email.test(emailText));
    const name = compileLinearPattern(String.raw`(?i)^[\p{L} ]+ [\p{L}]+$`);
    for (let i = 0; i < 20; i++) {
      const full = `Zoë Ångström-${"Éléonore ".repeat(10)}Ñuñez${i}`.replace(/[-\d]/g, "");
      assert.ok(chargeTest(name, full.length) && name.test(full));
    }
  } finally {
    assert.equal(endMatchingBudget(), undefined);
  }
});

/** `length` characters of six letters mixed, by a fixed seed: a new DFA state almost each. */
function sixLetters(length: number): string {
  const letters = ["a", "b", "\u00e9", "1", "\u0436", "$"];
  let seed = 11;
  let text = "";
  for (let i = 0; i < length; i++) {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    text += letters[seed % 6];
  }
  return text;
}

Deno.test("a text near the budget passes on a matcher that kept its states and is refused by one that built none, as README says", async () => {
  const pattern = ".*[\\p{L}\\p{N}\\p{S}\\p{P}]a.{10}[cd]";
  const text = sixLetters(500);
  const test = (compiled: ReturnType<typeof compileLinearPattern>, budget: number) => {
    startMatchingBudget(budget);
    try {
      assert.ok(chargeTest(compiled, text.length));
      return compiled.test(text);
    } finally {
      endMatchingBudget();
    }
  };
  // What the characters alone cost, and a few states more: far fewer than this text builds cold.
  const budget = 18 * text.length + 10 * 1610;
  const warm = compileLinearPattern(pattern);
  // Outside any budget (a first test with room): the DFA keeps the states it built.
  startMatchingBudget(Number.MAX_SAFE_INTEGER);
  try {
    warm.test(text);
  } finally {
    endMatchingBudget();
  }
  assert.equal(typeof test(warm, budget), "boolean");
  assert.throws(() => test(compileLinearPattern(pattern), budget), PatternBudgetError);
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  assert.match(
    readme.replace(/\s+/g, " "),
    /one refused by a matcher that had built few states \(the first test in a process, or after the bound below dropped them\) may pass on an instance that kept them/,
  );
});
