/**
 * Patterns written by users (JSON Schema `pattern` and `patternProperties`, CEL `matches()`)
 * matched in time linear in the text: by RE2's algorithm (`re2js`), never by backtracking. A
 * backtracking engine (V8's) takes exponential time on some pattern and text pairs
 * (`^([a-z]+\.?)+@x$` against forty letters and a `!` holds the event loop for seconds, and
 * every request with it): any client who may send an event could stall the process.
 *
 * RE2 syntax is what CEL specifies for `matches()`. It has no lookaround and no backreferences:
 * a pattern with them is refused when it is compiled. `.` and classes match whole code points.
 *
 * @module
 */
import { RE2JS } from "re2js";
import { quoteInput } from "./quote.ts";

/** A pattern RE2 cannot compile (bad syntax, lookaround, backreferences). */
export class PatternError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "PatternError";
  }
}

/** What a compiled pattern offers: whether it matches somewhere in a text. */
export interface LinearPattern {
  /** Whether the pattern matches anywhere in `text` (unanchored, as `RegExp.test`). */
  test(text: string): boolean;
}

/** A pattern {@linkcode compileLinearPattern} compiled, with what testing it costs. */
export interface CompiledPattern extends LinearPattern {
  /** Its instructions, by {@linkcode patternSize}. */
  readonly size: number;
  /**
   * Most instructions a test may visit a character of text (see {@linkcode characterCost}): its
   * `size`, or fewer for a pattern RE2 matches in one pass; charged before the test runs.
   */
  readonly characterCost: number;
  /**
   * What each state its matcher (re2js's lazy DFA, for a pattern not matched in one pass) builds
   * costs, in instructions: the entries of the state's table of character classes (see
   * {@linkcode CLASSES_PER_INSTRUCTION}), charged as the state is built; 0 for a pattern matched
   * in one pass. Most tests build a few states, kept for the next; a pattern that tells large
   * classes apart may build one almost every character.
   */
  readonly stateCost: number;
}

/**
 * `pattern` with the JavaScript escapes RE2 writes otherwise: `\uXXXX` (a surrogate pair as one
 * code point) as `\x{XXXX}`, and `[^]` (any character) as `[\s\S]`. Escaped backslashes and
 * character classes are skipped over, so only real escapes change.
 */
export function toRe2Syntax(pattern: string): string {
  let out = "";
  let inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const char = pattern[i];
    if (char === "\\") {
      const unit = /^u([0-9a-fA-F]{4})/.exec(pattern.slice(i + 1, i + 6));
      if (!unit) {
        out += pattern.slice(i, i + 2);
        i += 1;
        continue;
      }
      let code = parseInt(unit[1], 16);
      const low = /^\\u([dD][c-fC-F][0-9a-fA-F]{2})/.exec(pattern.slice(i + 6, i + 12));
      if (code >= 0xd800 && code <= 0xdbff && low) {
        code = 0x10000 + ((code - 0xd800) << 10) + (parseInt(low[1], 16) - 0xdc00);
        i += 6;
      }
      out += `\\x{${code.toString(16)}}`;
      i += 5;
    } else if (!inClass && pattern.startsWith("[^]", i)) {
      out += "[\\s\\S]";
      i += 2;
    } else {
      if (char === "[") inClass = true;
      else if (char === "]") inClass = false;
      out += char;
    }
  }
  return out;
}

/**
 * Most instructions one pattern may compile to, by {@linkcode patternSize}: a schema's, a literal
 * one of CEL's `matches()`, and one `matches()` takes from an event (that event fails). Compiling
 * takes about 0.3–8 µs an instruction, and matching a text visits each at most once a character,
 * so this bounds both; RE2's own limit (1,398,101: a 15 KB pattern of `[a-z]{1000}` runs) took
 * 2.7 s to compile. The longest single repeat RE2 takes, `^.{0,1000}$`, is 2,004.
 */
export const MAX_PATTERN_SIZE = 5_000;

/** A frame of {@linkcode patternSize}: a group being read. */
interface SizeFrame {
  /** Sizes of the alternatives read so far (before the last `|`). */
  alternatives: number[];
  /** Size of the alternative being read. */
  concat: number;
  /** Size of its last atom, which a repeat operator applies to; -1 when there is none. */
  last: number;
  /** A capturing group, which compiles to 2 instructions more. */
  capture: boolean;
}

/** Size of a concatenation or alternation as RE2 counts it: never less than 1. */
function closeAlternation(frame: SizeFrame): number {
  const parts = [...frame.alternatives, Math.max(1, frame.concat)];
  const sum = parts.reduce((total, part) => total + part, 0) + parts.length - 1;
  return Math.max(1, sum) + (frame.capture ? 2 : 0);
}

/** Size of `atom` repeated as `{min,max}` (`max` -1: unbounded), as RE2's `calcSize`. */
function repeatedSize(atom: number, min: number, max: number): number {
  if (max === -1) return min === 0 ? 2 + atom : 1 + min * atom;
  return Math.max(1, max * atom + (max - min));
}

const REPEAT_COUNT = /^\{(\d+)(,(\d*))?\}/;

/** How far {@linkcode patternSize} looks for what closes a name, a class name or flags. */
const CLOSING_WINDOW = 64;

/** Index of `closer` in `text` from `from`, within {@linkcode CLOSING_WINDOW}; -1 when not. */
function closingIndex(text: string, closer: string, from: number): number {
  const found = text.slice(from, from + CLOSING_WINDOW).indexOf(closer);
  return found === -1 ? -1 : from + found;
}

/**
 * How many instructions RE2 compiles `pattern` to once its repeats are expanded (`[a-z]{1000}`:
 * 1,002), read from its text without compiling it: RE2's parser's own estimate (`calcSize`) and
 * the program's 2 fixed instructions. Equal to the compiled program's size (`programSize()`) for
 * most patterns, more where RE2 simplifies (`(a|b)` becomes a class), never less. Counts a
 * literal character, a class, `.`, an anchor or an escape as 1, a capturing group 2 more, `*` 2
 * more, `+` and `?` 1 more, `|` 1 more, and `x{n,m}` as `m` copies of `x` and `m - n` more (a
 * count over RE2's 1,000, which RE2 refuses, as 1,000), and never less than one for each
 * {@linkcode SOURCE_CHARACTERS_PER_INSTRUCTION} characters of its text. Linear in its length: no scan
 * for a closing `}`, `>`, `:]` or `)` reads further than {@linkcode CLOSING_WINDOW} characters.
 */
export function patternSize(pattern: string): number {
  return measurePattern(pattern, () => 1);
}

/**
 * How many ranges of characters RE2 may copy per class of `pattern` before one costs an
 * instruction more to compile (see {@linkcode patternCompileSize}). A range took 0.06–0.2 µs to
 * compile and build a matcher for, an instruction of the slowest plain patterns up to 10 µs
 * (16,000 of `^.{0,1000}.{0,990}`: 60–320 ms), so 32 ranges cost no more than such an
 * instruction: seven name patterns `^[\p{L} .'-]{1,100}$` (16,142 by this count) took 8–43 ms
 * together. At 8 one of them was 8,803 and two were past a definition's 16,000; now six fit.
 */
export const RANGES_PER_INSTRUCTION = 32;

/**
 * {@linkcode patternSize} with each class and escape counted 1 and 1 more for each
 * {@linkcode RANGES_PER_INSTRUCTION} ranges of characters it may hold: what compiling `pattern`
 * (and building its matcher) costs, in instructions. RE2 copies a class's ranges into each
 * instruction it compiles to: `^[\p{L}\p{N}\p{S}\p{P}]{1000}`, 1,003 instructions of 801 ranges
 * each, took 50–160 ms to compile and 6–37 ms more to build its matcher (at most about 0.2 µs a
 * range), where `^[a-z]{1000}` took 5–10 ms: 40,003 instructions by this count, 1,003 by
 * {@linkcode patternSize}. A Unicode class's ranges (`\p{L}`, `\pN`, `\P{Greek}`) are RE2's own,
 * case-folded or not, whichever are more; any other character in a class counts 1 range.
 */
export function patternCompileSize(pattern: string): number {
  // A Unicode class RE2 does not know (`\p{Zz}`) makes it refuse the pattern, so the atoms after
  // one are counted 1 each, without asking RE2 about their classes: asking compiles, and 4,900
  // unknown classes in an event's pattern took 70-400 ms, each time, before RE2 refused it.
  let refused = false;
  return measurePattern(pattern, (atom) => {
    const ranges = refused ? 0 : atomRanges(atom);
    if (ranges === undefined) refused = true;
    return 1 + Math.floor((ranges ?? 0) / RANGES_PER_INSTRUCTION);
  });
}

/** A Unicode class escape: `\pL`, `\p{Greek}`, `\P{^L}`. */
const UNICODE_CLASS = /\\[pP](\{[^}]*\}|[^{])/g;

/**
 * Ranges of characters a class or escape (as written in `pattern`) may hold, at most; undefined
 * when it holds a Unicode class RE2 does not know.
 */
function atomRanges(atom: string): number | undefined {
  let ranges = 0;
  for (const escape of atom.matchAll(UNICODE_CLASS)) {
    const held = unicodeClassRanges(escape[0]);
    if (held === undefined) return undefined;
    ranges += held;
  }
  // Any other character: a range of its own at most (`a-z` is one), brackets and `^` none.
  return ranges + atom.replaceAll(UNICODE_CLASS, "").replace(/[[\]^\\-]/g, "").length;
}

/** Ranges of each Unicode class escape RE2 knows, by its text (a bounded set: RE2's names). */
const unicodeRanges = new Map<string, number>();

/** RE2 compiles {@linkcode unicodeClassRanges} has run in this process (for tests of its bound). */
let classCompiles = 0;

/** How many times RE2 compiled a Unicode class to count its ranges, in this process. */
export function unicodeClassCompiles(): number {
  return classCompiles;
}

/**
 * Ranges RE2 compiles the Unicode class `escape` to, case-folded or not, whichever are more;
 * undefined for one it does not know (it refuses the pattern then).
 */
function unicodeClassRanges(escape: string): number | undefined {
  const known = unicodeRanges.get(escape);
  if (known !== undefined) return known;
  let most = 0;
  for (const source of [escape, `(?i:${escape})`]) {
    try {
      classCompiles++;
      const program = (RE2JS.compile(source).re2() as unknown as {
        prog?: { inst?: { runes?: ArrayLike<number> }[] };
      }).prog;
      for (const instruction of program?.inst ?? []) {
        most = Math.max(most, Math.ceil((instruction.runes?.length ?? 0) / 2));
      }
    } catch {
      return undefined;
    }
  }
  unicodeRanges.set(escape, most);
  return most;
}

/** {@linkcode patternSize} with each class and escape counted `weigh(its text)`. */
function measurePattern(pattern: string, weigh: (atom: string) => number): number {
  return Math.max(measureStructure(pattern, weigh), lengthFloor(pattern));
}

/** The fewest instructions `pattern` counts for its length (see {@linkcode SOURCE_CHARACTERS_PER_INSTRUCTION}). */
function lengthFloor(pattern: string): number {
  return Math.ceil(pattern.length / SOURCE_CHARACTERS_PER_INSTRUCTION);
}

/** {@linkcode measurePattern} by what `pattern` compiles to alone, without its length's floor. */
function measureStructure(pattern: string, weigh: (atom: string) => number): number {
  const text = toRe2Syntax(pattern);
  const stack: SizeFrame[] = [{ alternatives: [], concat: 0, last: -1, capture: false }];
  const atom = (size: number) => {
    const frame = stack[stack.length - 1];
    frame.concat += size;
    frame.last = size;
  };
  const repeat = (min: number, max: number) => {
    const frame = stack[stack.length - 1];
    if (frame.last < 0) return atom(1);
    const size = repeatedSize(
      frame.last,
      Math.min(min, 1000),
      max === -1 ? -1 : Math.min(max, 1000),
    );
    frame.concat += size - frame.last;
    frame.last = size;
  };
  let i = 0;
  while (i < text.length) {
    const char = text[i];
    if (char === "\\") {
      if (text[i + 1] === "Q") {
        const end = text.indexOf("\\E", i + 2);
        const quoted = text.slice(i + 2, end === -1 ? text.length : end);
        for (const _ of quoted) atom(1);
        i = end === -1 ? text.length : end + 2;
        continue;
      }
      // \x{…}, \p{…}, \P{…}: to the brace; any other escape is its character and what follows
      // it (a hex or octal digit, a class name) read as literals, counted 1 each: more, not less.
      const braced = "xpP".includes(text[i + 1]) && text[i + 2] === "{";
      const close = braced ? closingIndex(text, "}", i + 3) : -1;
      const start = i;
      i = close === -1 ? i + 2 : close + 1;
      // `\pL` weighed as the class it is (its letter still counted as an atom of its own).
      atom(weigh(text.slice(start, braced || !"pP".includes(text[start + 1]) ? i : i + 1)));
      continue;
    }
    if (char === "[") {
      const start = i;
      i = classEnd(text, i);
      atom(weigh(text.slice(start, i)));
      continue;
    }
    if (char === "(") {
      if (text[i + 1] === "?") {
        // (?flags) sets flags; (?flags:…), (?P<name>…) and (?<name>…) open a group.
        let j = i + 2;
        while (j < text.length && j < i + CLOSING_WINDOW && !":)<".includes(text[j])) j++;
        if (text[j] === ")") {
          i = j + 1;
          continue;
        }
        const capture = text[j] === "<";
        if (capture) j = closingIndex(text, ">", j);
        stack.push({ alternatives: [], concat: 0, last: -1, capture });
        // Unclosed (RE2 refuses it): read on after the `(?`.
        i = j === -1 || j >= text.length ? i + 2 : j + 1;
        continue;
      }
      stack.push({ alternatives: [], concat: 0, last: -1, capture: true });
      i += 1;
      continue;
    }
    if (char === ")" && stack.length > 1) {
      atom(closeAlternation(stack.pop()!));
      i += 1;
      continue;
    }
    if (char === "|") {
      const frame = stack[stack.length - 1];
      frame.alternatives.push(Math.max(1, frame.concat));
      frame.concat = 0;
      frame.last = -1;
      i += 1;
      continue;
    }
    if (char === "*" || char === "+" || char === "?") {
      repeat(char === "+" ? 1 : 0, char === "?" ? 1 : -1);
      i += text[i + 1] === "?" ? 2 : 1;
      continue;
    }
    if (char === "{") {
      const count = REPEAT_COUNT.exec(text.slice(i, i + 24));
      if (count) {
        const min = Number(count[1]);
        const max = count[2] === undefined ? min : count[3] === "" ? -1 : Number(count[3]);
        repeat(min, max);
        i += count[0].length + (text[i + count[0].length] === "?" ? 1 : 0);
        continue;
      }
    }
    atom(1);
    i += text.codePointAt(i)! > 0xffff ? 2 : 1;
  }
  while (stack.length > 1) atom(closeAlternation(stack.pop()!));
  // And the program's own: the whole match's capture (2) and its end (1), less the 1 an empty
  // pattern counts.
  return closeAlternation(stack[0]) + 2;
}

/**
 * Characters of a pattern's text counted as one instruction at least, however few it compiles to:
 * RE2 parses every character (about 0.2 µs each), and a kept pattern holds its text. Flags compile
 * to nothing, so `(?i)` 15,000 times (60,000 characters, as an event may send to `matches()`)
 * counted 4: each took 10-90 ms to compile, charged as 4 instructions, and 2,000 of them kept
 * 245 MB where the 16,384 instructions of patterns CEL keeps from events were some 10 MB at most.
 * Patterns as written are far denser (`[[:alpha:]]`, 11 characters, is 3 with the program's own),
 * and an event's text (64 KiB) stays under {@linkcode MAX_PATTERN_SIZE} by this count.
 */
export const SOURCE_CHARACTERS_PER_INSTRUCTION = 16;

/** Index after the class opening at `start` (`[…]`, `[^…]`, a leading `]` and `[:alpha:]` inside). */
function classEnd(text: string, start: number): number {
  let i = start + 1;
  if (text[i] === "^") i++;
  if (text[i] === "]") i++;
  while (i < text.length && text[i] !== "]") {
    if (text[i] === "\\") {
      const braced = "xpP".includes(text[i + 1]) && text[i + 2] === "{";
      const close = braced ? closingIndex(text, "}", i + 3) : -1;
      i = close === -1 ? i + 2 : close + 1;
    } else if (text.startsWith("[:", i)) {
      const close = closingIndex(text, ":]", i + 2);
      i = close === -1 ? i + 1 : close + 2;
    } else {
      i++;
    }
  }
  return i + 1;
}

/** Patterns compiled while {@linkcode withPatternCache} runs, by source. */
let patternCache: Map<string, CompiledPattern> | undefined;

/**
 * Runs `build` (synchronous) with each pattern {@linkcode compileLinearPattern} compiles kept and
 * given again for the same source, then forgets them: a schema's pattern is compiled by the
 * check of the schema, by zod and by Ajv, once between them. What is kept is bounded by what
 * `build` compiles.
 */
export function withPatternCache<T>(build: () => T): T {
  if (patternCache !== undefined) return build();
  patternCache = new Map();
  try {
    return build();
  } finally {
    patternCache = undefined;
  }
}

/** Set while {@linkcode withOversizedPatterns} runs: patterns past the bound are compiled. */
let oversizedTaken = false;

/**
 * Runs `build` (synchronous) with patterns past {@linkcode MAX_PATTERN_SIZE} compiled, as releases
 * before that bound did (re2js's own limits still apply, and their tests are charged by their
 * size): a stream stored or deployed then is served as it was. What `build` compiles only.
 */
export function withOversizedPatterns<T>(build: () => T): T {
  if (oversizedTaken) return build();
  oversizedTaken = true;
  try {
    return build();
  } finally {
    oversizedTaken = false;
  }
}

/**
 * {@linkcode patternSize} of `pattern`; throws {@linkcode PatternError} past
 * {@linkcode MAX_PATTERN_SIZE} (not while {@linkcode withOversizedPatterns} runs), without
 * compiling it.
 */
export function checkPatternSize(pattern: string): number {
  const size = patternSize(pattern);
  if (size > MAX_PATTERN_SIZE && !oversizedTaken) {
    // Too long only when its length alone puts it past: one that compiles to as many instructions
    // is too large as well, and told so.
    if (measureStructure(pattern, () => 1) < lengthFloor(pattern)) {
      throw new PatternError(
        `Pattern '${quoteInput(pattern)}' is too long: a pattern may have ${
          MAX_PATTERN_SIZE * SOURCE_CHARACTERS_PER_INSTRUCTION
        } characters`,
      );
    }
    throw new PatternError(
      `Pattern '${
        quoteInput(pattern)
      }' is too large: it compiles to about ${size} instructions once its repeats are expanded, past the ${MAX_PATTERN_SIZE} a pattern may have ([a-z]{1000} is 1002)`,
    );
  }
  return size;
}

/** An instruction of a compiled RE2 program, as {@linkcode characterCost} reads it. */
interface ProgramInstruction {
  op: number;
  out: number;
  arg: number;
  /** A one-pass `ALT`'s targets, by the character read next. */
  next?: ArrayLike<number> | null;
}

/** re2js's instruction codes (`Inst`): those that go on to others without reading a character. */
const ALT = 1, ALT_MATCH = 2, CAPTURE = 3, EMPTY_WIDTH = 4, FAIL = 5, MATCH = 6, NOP = 7;
/** re2js's instruction codes that read one character (`RUNE` to `RUNE_ANY_NOT_NL`). */
const FIRST_RUNE = 8, LAST_RUNE = 11;

/** Where `instruction` goes on to without reading a character; `undefined` for an unknown one. */
function goesOnTo(instruction: ProgramInstruction): number[] | undefined {
  const { op } = instruction;
  if (op >= FIRST_RUNE && op <= LAST_RUNE) return [];
  if (op === MATCH || op === FAIL) return [];
  if (op === CAPTURE || op === EMPTY_WIDTH || op === NOP) return [instruction.out];
  if (op === ALT || op === ALT_MATCH) {
    return [instruction.out, instruction.arg, ...Array.from(instruction.next ?? [])];
  }
  return undefined;
}

/**
 * Most instructions a test of `compiled` (of `size` instructions) visits a character of text, and
 * 1 for reading the character. re2js runs a program it can match in one pass (anchored with `^`,
 * never two ways to go on: UUIDs, dates, `^[a-z0-9_-]+$`) on one thread, which visits after each
 * character only the instructions that lead to the next one that reads a character: at most the
 * longest such chain (a UUID pattern, 40 instructions: 2, so 3). Any other program may visit each
 * of its instructions once a character (see {@linkcode MAX_EVENT_MATCHING_COST}): `size`.
 */
function characterCost(compiled: RE2JS, size: number): number {
  const onePass = compiled.re2().onepass as { inst?: ProgramInstruction[] } | null;
  const instructions = onePass?.inst;
  if (!Array.isArray(instructions)) return size;
  // Longest chain from each instruction to one that reads a character or ends, itself included:
  // 0 not seen, -1 on the walk's path (reached again: a cycle, which RE2 never makes in a
  // one-pass program, but no bound is taken from one). Depth first, without recursion.
  const chain = new Int32Array(instructions.length);
  let longest = 1;
  for (let start = 0; start < instructions.length; start++) {
    const pending = [start];
    while (pending.length > 0) {
      const pc = pending[pending.length - 1];
      const instruction = instructions[pc];
      const next = instruction === undefined ? undefined : goesOnTo(instruction);
      if (next === undefined || next.some((target) => instructions[target] === undefined)) {
        return size;
      }
      if (chain[pc] > 0) {
        pending.pop();
      } else if (chain[pc] === 0) {
        chain[pc] = -1;
        for (const target of next) {
          if (chain[target] === -1) return size;
          if (chain[target] === 0) pending.push(target);
        }
      } else {
        chain[pc] = 1 + next.reduce((most, target) => Math.max(most, chain[target]), 0);
        longest = Math.max(longest, chain[pc]);
        pending.pop();
      }
    }
  }
  return Math.min(size, longest + 1);
}

/**
 * Most bytes the matchers of all compiled patterns may keep between tests together, by re2js's
 * own count of its lazy DFA's states (within 2% of the heap they held, measured). re2js lets each
 * compiled pattern's DFA keep up to 8 MiB of states as it matches texts, whoever sends them:
 * 20-instruction patterns taken from events (`.*[\p{L}\p{N}\p{S}\p{P}]a.{10}[cd]` and variants,
 * tables of 1,600 character classes a state), three events of 12,000 characters each, held
 * 6.2 MB a pattern, 618 MB for 100 of them (the 16,384 instructions CEL keeps of patterns from
 * events hold 910 such), as would a schema's or a literal one. Past this bound the states of the
 * least recently grown patterns are dropped (built again as they match, within what the test is
 * charged).
 */
export const MAX_RETAINED_MATCHER_BYTES = 16 * 1024 * 1024;

/** re2js's lazy DFA of a compiled pattern (`RE2.lazyDFA`), as {@linkcode keepMatchersBounded} reads it. */
interface LazyDfa {
  /** Bytes (by re2js's count) its states may take, then `memBudget` of them left. */
  stateBudget: number;
  memBudget: number;
  /** Drops its states and start states (re2js's own reset when its budget runs out). */
  clearCache(): void;
}

/** Lazy DFAs that kept states, least recently grown first, with the bytes each kept then. */
const retainedMatchers = new Map<WeakRef<LazyDfa>, number>();
/** What {@linkcode retainedMatchers} kept together. */
let retainedMatcherBytes = 0;
/** A collected DFA no longer counts (its pattern was dropped: a definition replaced, a cache's). */
const collectedMatchers = new FinalizationRegistry<WeakRef<LazyDfa>>(forgetMatcher);

function forgetMatcher(matcher: WeakRef<LazyDfa>): void {
  const bytes = retainedMatchers.get(matcher);
  if (bytes === undefined) return;
  retainedMatchers.delete(matcher);
  retainedMatcherBytes -= bytes;
}

/**
 * Counts what `matcher` keeps after a test that grew it (or first kept it), most recently grown
 * now, then drops the states of the least recently grown ones while all keep more than
 * {@linkcode MAX_RETAINED_MATCHER_BYTES}. A test that kept nothing new leaves its place: most
 * tests of a warm pattern, for which moving it in the map cost as much as a third of the test.
 * Held weakly: counting a pattern's DFA never keeps its pattern.
 */
function keepMatchersBounded(matcher: WeakRef<LazyDfa>, dfa: LazyDfa): void {
  const bytes = dfa.stateBudget - dfa.memBudget;
  if (retainedMatchers.get(matcher) === bytes) return;
  forgetMatcher(matcher);
  if (bytes > 0) {
    retainedMatchers.set(matcher, bytes);
    retainedMatcherBytes += bytes;
  }
  for (const [oldest] of retainedMatchers) {
    if (retainedMatcherBytes <= MAX_RETAINED_MATCHER_BYTES) break;
    oldest.deref()?.clearCache();
    forgetMatcher(oldest);
  }
}

/** What the matchers of compiled patterns keep now, in bytes (re2js's count); for tests. */
export function retainedMatcherSize(): number {
  return retainedMatcherBytes;
}

/** What a test of a compiled pattern is doing, for the charge of its DFA's states. */
interface TestRun {
  /** Characters of the text being tested. */
  length: number;
  /** States (tables) its DFA built in this test. */
  states: number;
}

/**
 * `re2.test`, then what its lazy DFA keeps counted (see {@linkcode MAX_RETAINED_MATCHER_BYTES}),
 * even when the charge of its states stopped it (see {@linkcode chargeDfaStates}). A DFA whose
 * fields are not re2js's as read here is left to re2js's own bound.
 */
function boundedTest(re2: RE2JS, run: TestRun): (text: string) => boolean {
  const engine = re2.re2() as unknown as { lazyDFA?: unknown };
  let matcher: WeakRef<LazyDfa> | undefined;
  return (text) => {
    run.length = text.length;
    run.states = 0;
    try {
      return re2.test(text);
    } finally {
      const dfa = engine.lazyDFA as Partial<LazyDfa> | null | undefined;
      if (
        typeof dfa?.stateBudget === "number" && typeof dfa.memBudget === "number" &&
        typeof dfa.clearCache === "function"
      ) {
        if (matcher === undefined) {
          matcher = new WeakRef(dfa as LazyDfa);
          collectedMatchers.register(dfa, matcher);
        }
        keepMatchersBounded(matcher, dfa as LazyDfa);
      }
    }
  };
}

/**
 * How many entries of the table re2js's lazy DFA gives each state it builds cost an instruction
 * (see {@linkcode CompiledPattern.stateCost}): 1, each entry as much as an instruction visited a
 * character. The tables are where the time goes for a pattern with large classes whose DFA builds
 * a new state almost every character: `.*[\p{L}\p{N}\p{S}\p{P}]a.{10}[cd]` (1,610 entries a
 * table) over 2,221 characters of six letters mixed built 1,276 of them, 2 million entries, which
 * took 60–300 ms with collecting them (most of the test's time), 30–150 ns an entry, in the first
 * tests of a fresh process; charged 1 a character for each 16 classes (118 a character), it ran
 * within the budget. An instruction visited a character takes up to about 0.15 µs.
 */
export const CLASSES_PER_INSTRUCTION = 1;

/** re2js's lazy DFA (`RE2.dfa`), as {@linkcode chargeDfaStates} reads it. */
interface DfaTables {
  /** Classes of characters the pattern tells apart: each state's table has one more entry. */
  numClasses: number;
  /** Gives a state its table of next states (`null` when re2js's own memory budget is spent). */
  allocTable(state: unknown, anchor: unknown): unknown;
}

/**
 * What each state the DFA of `compiled` (a pattern not matched in one pass) builds costs, in
 * instructions (its table's entries, {@linkcode CLASSES_PER_INSTRUCTION} an instruction), charged
 * to the running budget as the DFA builds it: past it, the test stops with
 * {@linkcode PatternBudgetError} before the table is made (re2js's DFA is left whole: the state
 * just has no table yet).
 * `observed` is false for a DFA whose fields are not re2js's as read here: its states are then
 * charged one a character, before the test runs. Builds the DFA now, while the pattern is
 * compiled (and charged as compiling, by {@linkcode patternCompileSize}): building it is linear in
 * the ranges of its classes (6–37 ms for `^[\p{L}\p{N}\p{S}\p{P}]{1000}`), which its first test
 * would otherwise take, charged only by the text's length.
 */
function chargeDfaStates(
  compiled: RE2JS,
  size: number,
  run: TestRun,
): { stateCost: number; observed: boolean } {
  const dfa = (compiled.re2() as unknown as { dfa?: Partial<DfaTables> }).dfa;
  const classes = dfa?.numClasses;
  if (typeof classes !== "number") return { stateCost: 0, observed: false };
  const stateCost = Math.ceil((classes + 1) / CLASSES_PER_INSTRUCTION);
  const allocTable = dfa!.allocTable;
  if (typeof allocTable !== "function") return { stateCost, observed: false };
  dfa!.allocTable = function (state, anchor) {
    run.states += 1;
    const charged = charge(
      stateCost,
      () =>
        `a pattern of ${size} instructions over ${run.length} characters costs ${
          size * run.length
        }, and each state its matcher builds ${stateCost} (a table of its ${classes} classes of characters and the text's end): its state ${run.states} in this test is past it`,
    );
    if (!charged) throw new PatternBudgetError(matchingPast!);
    return allocTable.call(this, state, anchor);
  };
  return { stateCost, observed: true };
}

/** Options for {@linkcode compileLinearPattern}. */
export interface CompileLinearPatternOptions {
  /**
   * Called with the pattern's size and what compiling it costs in instructions (by
   * {@linkcode patternCompileSize}: its classes' ranges counted) before it is compiled (not for
   * one given again by {@linkcode withPatternCache}): to charge the compilation, or refuse it by
   * throwing.
   */
  beforeCompiling?: (size: number, compileSize: number) => void;
}

/**
 * Compiles `pattern` for linear-time matching; throws {@linkcode PatternError}, for one RE2
 * cannot compile and for one past {@linkcode MAX_PATTERN_SIZE} (told before compiling it).
 */
export function compileLinearPattern(
  pattern: string,
  options: CompileLinearPatternOptions = {},
): CompiledPattern {
  const cached = patternCache?.get(pattern);
  if (cached !== undefined) return cached;
  const size = checkPatternSize(pattern);
  if (options.beforeCompiling) options.beforeCompiling(size, patternCompileSize(pattern));
  try {
    const re2 = RE2JS.compile(toRe2Syntax(pattern));
    const run: TestRun = { length: 0, states: 0 };
    // re2js runs its DFA for any pattern it cannot match in one pass.
    const states = re2.re2().onepass === null
      ? chargeDfaStates(re2, size, run)
      : { stateCost: 0, observed: true };
    const compiled: CompiledPattern & { toString(): string } = {
      size,
      characterCost: characterCost(re2, size) + (states.observed ? 0 : states.stateCost),
      stateCost: states.stateCost,
      test: boundedTest(re2, run),
      // Ajv keeps one compiled pattern per `toString()`: the pattern's own, never one for all.
      toString: () => re2.toString(),
    };
    patternCache?.set(pattern, compiled);
    return compiled;
  } catch (error) {
    throw new PatternError(
      `Pattern ${JSON.stringify(pattern)} is not supported: ${
        (error as Error).message
      } (patterns use RE2 syntax, matched in linear time: no lookaround or backreferences)`,
      { cause: error },
    );
  }
}

/**
 * What testing one event against its schema's patterns (`pattern`, `patternProperties`, and the
 * date-time and time formats) may cost together: for each test, its text's characters times the
 * instructions its pattern may visit a character ({@linkcode CompiledPattern.characterCost}: the
 * pattern's size by {@linkcode patternSize}, or fewer for one RE2 matches in one pass), charged
 * before it runs, and each state its matcher builds, as it builds it
 * ({@linkcode CompiledPattern.stateCost}). RE2's time is linear in the text and in the pattern's
 * size (it may visit each instruction once a character): one 4,003-instruction pattern over a
 * 60,000-character string (an event may have 64 KiB) took 5 s, three of them 9 s. At this bound
 * the worst cases measured, each the first event in a fresh process, took 10–19 ms of CPU time for
 * an email pattern over 20,000 characters and 14–27 ms for `.*[\p{L}\p{N}\p{S}\p{P}]a.{10}[cd]`
 * over 120–2,221 characters of six letters mixed, tested twice (by Ajv's verdict, then by zod to
 * say why), on a 2-core machine at a load of 7–11 (157–238 ms before its states were charged, at
 * 118 a character), while an email pattern (13 instructions) may still test strings of 20,000
 * characters, and a UUID one (40 instructions, 3 a character: matched in one pass) over 2,400
 * UUIDs, more than an event holds. Past it the event is refused (see
 * {@linkcode PatternBudgetError}).
 */
export const MAX_EVENT_MATCHING_COST = 262_144;

/** An event's strings would cost more than {@linkcode MAX_EVENT_MATCHING_COST} to match. */
export class PatternBudgetError extends Error {
  /** `past`: what the test past the budget would cost, as {@linkcode endMatchingBudget} says. */
  constructor(past: string) {
    super(
      `Event would cost more than ${MAX_EVENT_MATCHING_COST} to test against its schema's patterns (text characters × instructions a pattern may visit a character, per event): ${past}`,
    );
    this.name = "PatternBudgetError";
  }
}

/**
 * What testing `pattern` over `length` characters costs, in words: `a pattern of 4003 instructions
 * over 5000 characters costs 20015000`, and for one matched in one pass, how many a character.
 */
function testCost(pattern: CompiledPattern, length: number): string {
  const { size, characterCost } = pattern;
  const instructions = characterCost === size
    ? `${size} instructions`
    : characterCost > size
    ? `${size} instructions (${characterCost} a character with its character classes)`
    : `${size} instructions (${characterCost} a character: matched in one pass)`;
  return `a pattern of ${instructions} over ${length} characters costs ${characterCost * length}`;
}

/**
 * What compiling a pattern costs an instruction, in the units of a matching budget: it took about
 * 2 µs an instruction, matching up to about 0.15 µs an instruction and character.
 */
export const COMPILE_COST = 16;

/** What is left of the running {@linkcode startMatchingBudget}'s budget (outside one: no bound). */
let matchingLeft = Infinity;
/** What the charge that went past it would cost, in words, once one did. */
let matchingPast: string | undefined;

/** Takes `cost` from the running budget: false past it (or once it was passed), noting `why`. */
function charge(cost: number, why: () => string): boolean {
  if ((matchingLeft -= cost) >= 0) return true;
  matchingPast ??= why();
  return false;
}

/**
 * Charges a test of `pattern` over `length` characters to the running
 * {@linkcode startMatchingBudget}, before it runs: `characterCost × length` (see
 * {@linkcode testCost}). False past the budget, or once it was passed: the test must not run.
 * The test itself charges each state its matcher builds ({@linkcode CompiledPattern.stateCost}),
 * throwing {@linkcode PatternBudgetError} past the budget.
 */
export function chargeTest(pattern: CompiledPattern, length: number): boolean {
  return charge(pattern.characterCost * length, () => testCost(pattern, length));
}

/**
 * Charges compiling a pattern of `size` instructions, `compileSize` of them with its classes'
 * ranges counted ({@linkcode patternCompileSize}; {@linkcode COMPILE_COST} each), to the running
 * {@linkcode startMatchingBudget}, before it is compiled. False past the budget, or once it was
 * passed: the pattern must not be compiled.
 */
export function chargeCompiling(size: number, compileSize: number = size): boolean {
  const instructions = compileSize === size
    ? `${size} instructions`
    : `${size} instructions (${compileSize} with its classes' ranges, ${RANGES_PER_INSTRUCTION} an instruction)`;
  return charge(
    compileSize * COMPILE_COST,
    () =>
      `compiling a pattern of ${instructions} costs ${
        compileSize * COMPILE_COST
      } (${COMPILE_COST} an instruction)`,
  );
}

/**
 * `compiled` with each test charged to the running {@linkcode startMatchingBudget}: past it (or
 * once it was passed), throws {@linkcode PatternBudgetError} instead of matching.
 */
function charged(compiled: CompiledPattern): LinearPattern {
  const pattern: LinearPattern & { toString(): string } = {
    test(text: string): boolean {
      if (!chargeTest(compiled, text.length)) throw new PatternBudgetError(matchingPast!);
      return compiled.test(text);
    },
    toString: () => compiled.toString(),
  };
  return pattern;
}

/**
 * Starts a fresh budget of `limit` for the patterns tested (and compiled) until
 * {@linkcode endMatchingBudget}: an event's validation or one CEL evaluation, synchronous, one at
 * a time (a budget started ends the one running).
 */
export function startMatchingBudget(limit: number = MAX_EVENT_MATCHING_COST): void {
  matchingLeft = limit;
  matchingPast = undefined;
}

/**
 * Ends the budget {@linkcode startMatchingBudget} started (tests are unbounded again): what the
 * charge that went past it would cost, in words (`a pattern of 4003 instructions over 5000
 * characters costs 20015000`), even when the validation caught its error and answered, or
 * `undefined`.
 */
export function endMatchingBudget(): string | undefined {
  const past = matchingPast;
  matchingLeft = Infinity;
  matchingPast = undefined;
  return past;
}

const OriginalRegExp = RegExp;

/**
 * A `RegExp` whose `test` runs the same pattern by RE2 (see the module doc). Made only by
 * {@linkcode withLinearRegExp} for libraries that build their own `RegExp` from a user's
 * pattern and call `test` on it.
 */
class LinearRegExp extends OriginalRegExp {
  #linear: LinearPattern;

  constructor(pattern: string | RegExp, flags?: string) {
    const source = typeof pattern === "string" ? pattern : pattern.source;
    super(source, flags);
    // With flags it is the library's own (zod's emoji format, with `u`): users' come without.
    this.#linear = flags
      ? { test: (text) => super.test(text) }
      : charged(compileLinearPattern(source));
  }

  // A literal made while the swap lasts is still a RegExp.
  static override [Symbol.hasInstance](value: unknown): boolean {
    return value instanceof OriginalRegExp;
  }

  // Only `test`: what zod calls on a pattern (its `exec`, `match` and the rest stay V8's).
  override test(text: string): boolean {
    return this.#linear.test(String(text));
  }
}

/** Ajv's `code.regExp`: its `pattern` and `patternProperties` compiled for linear time. */
export const linearRegExpEngine: ((pattern: string, flags: string) => LinearPattern) & {
  code: string;
} = Object.assign(
  (pattern: string) => charged(compileLinearPattern(pattern)),
  {
    code: "compileLinearPattern",
  },
);

/**
 * Runs `build` (synchronous) with `new RegExp(…)` making patterns that {@linkcode LinearRegExp}
 * tests, then restores `RegExp`: for a library that compiles user patterns itself (zod's
 * `z.fromJSONSchema`). Regular expression literals are not affected. A pattern RE2 cannot
 * compile throws {@linkcode PatternError} from `build`.
 */
export function withLinearRegExp<T>(build: () => T): T {
  globalThis.RegExp = LinearRegExp as unknown as RegExpConstructor;
  try {
    return build();
  } finally {
    globalThis.RegExp = OriginalRegExp;
  }
}
