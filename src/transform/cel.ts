/**
 * CEL (Common Expression Language) expressions, compiled once at load.
 * Expressions see the event as `event` (a map).
 *
 * JSON has one number type, which CEL reads as `double` (`150` and `12.5`
 * alike), while CEL reads `2` in an expression as `int` and has no
 * arithmetic between the two. So every environment here adds `+ - * / %`
 * between `int` and `double` (converting the int, answering a double) and
 * `%` between doubles: `event.amount * 2` and `event.count % 2` work as
 * written. Comparisons across the two are CEL's own.
 *
 * @module
 */
import { Environment, EvaluationError } from "@marcbachmann/cel-js";
import {
  chargeCompiling,
  chargeTest,
  checkPatternSize,
  type CompiledPattern,
  compileLinearPattern,
  endMatchingBudget,
  PatternBudgetError,
  patternCompileSize,
  PatternError,
  RANGES_PER_INSTRUCTION,
  startMatchingBudget,
  withOversizedPatterns,
} from "../validate/mod.ts";
import { compileFastPath, FALLBACK } from "./cel_fast.ts";
import { quoteInput } from "../telemetry/logging.ts";

/**
 * How deep an expression's syntax tree may nest: compiling and evaluating
 * it recurse once a level, so a deeper one could exhaust the stack, or not,
 * depending on what else is on it. cel-js's own parse limit is 250, but a
 * run of unary operators escapes it.
 */
export const MAX_EXPRESSION_DEPTH = 250;

/** Most UTF-16 code units an expression may have, wherever given (definitions, webhooks, URLs). */
export const MAX_EXPRESSION_LENGTH = 4096;

/**
 * Most instructions the literal patterns of one expression's `matches()` calls may compile to
 * together, each by `patternCompileSize` (its size once its repeats are expanded, a character
 * class 1 more for each `RANGES_PER_INSTRUCTION` ranges of characters it holds; at most
 * `MAX_PATTERN_SIZE` on its own by `patternSize`): a subscription's or webhook's filter is
 * compiled for the request that gives it, and 4,096 characters held 57 patterns of about 5,000
 * (0.5 s to compile). Counted by `patternSize` alone, 822 characters held 15 of
 * `^[\p{L}\p{N}\p{S}\p{P}]{1000}` (1,003 instructions, 40,003 with their classes' ranges):
 * 0.35–1.2 s to compile, where 16,000 instructions of plain patterns (`^.{0,1000}.{0,990}`, the
 * slowest measured a unit) took 60–320 ms, and classes' ranges 0.1–0.3 µs a unit, less than any
 * plain pattern's. A stream definition's are bounded together as well.
 */
export const MAX_EXPRESSION_PATTERN_SIZE = 16_000;

/**
 * What one evaluation may cost: CEL's own answer to an expression that is short but loops
 * (cel-go's `CostLimit`). Nested macros over lists (`[1..300].all(a, [1..300].all(b, …))`)
 * stay within the length and depth limits and would otherwise run for seconds, synchronously,
 * holding the whole process; one that spends the budget stops after a few milliseconds (2–5 ms
 * measured on a loaded 2-core machine, 10–26 ms on an expression's first, unoptimized runs).
 *
 * Each node of the expression evaluated costs 1 (a macro's body once per element it visits),
 * and a node that builds or scans a value (an operator, a function or method call, or an
 * operand of one) 1 more per element of a list, per key of a map, or per 16 characters or
 * bytes, it yields (an operand of `==`, `!=` or `in` also for what its lists and maps hold; a
 * map a macro ranges over, per key); a string search also its text's length times the
 * searched-for text's, over 1,024.
 * Past the budget the evaluation fails, as any evaluation error does where it runs. An
 * expression whose worst case over its literal lists already exceeds the budget
 * (`[1..300].all(a, [1..300].all(b, …))`) is refused when it is compiled.
 */
export const MAX_EVALUATION_COST = 100_000;

/**
 * What one evaluation's `matches()` calls may cost together: for each call, its text's characters
 * (UTF-16 units) times the instructions its pattern may visit a character (`characterCost`: the
 * pattern's size by `patternSize`, or fewer for one RE2 matches in one pass), charged before it
 * runs, and each state its matcher builds (the entries of its table of character classes,
 * `stateCost`), charged as it is built. RE2 matches in linear time, but linear in both: it may
 * visit each instruction once a character (re2js's lazy DFA builds a state of up to every
 * instruction for a new character), so a 4,003-instruction pattern took 0.5 s over 2,000
 * characters (and seconds over an event's 64 KiB) where an email or UUID pattern over 4 KB takes
 * 0.05 ms. At this bound the worst cases measured (first tests in a fresh process) took 1–22 ms,
 * and 17–38 ms of CPU time for `.*[\p{L}\p{N}\p{S}\p{P}]a.{10}[cd]` over 145–2,221 characters
 * of six letters mixed, 26–59 ms taken from the event and compiled (10–36 ms over 8 characters),
 * on a 2-core machine at a load of 7–11 (97–129 ms before its states were charged, at 118 a
 * character), while an email pattern (13 instructions) may still run four times over 4 KB, or a
 * UUID one (40 instructions, 3 a character: matched in one pass) over 80 KB. Past it the
 * evaluation fails, as past {@linkcode MAX_EVALUATION_COST}.
 */
export const MAX_MATCHING_COST = 262_144;

/** A compiled expression: call it with its variables. */
export type CompiledExpression = (variables: Record<string, unknown>) => unknown;

/** An expression failed to parse or type-check. */
export class ExpressionError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "ExpressionError";
  }
}

const environments = new Map<string, Environment>();

const ARITHMETIC: Record<string, (left: number, right: number) => number> = {
  "+": (left, right) => left + right,
  "-": (left, right) => left - right,
  "*": (left, right) => left * right,
  "/": (left, right) => left / right,
  "%": remainder,
};

/** `%` on doubles: the remainder of truncating division, as CEL's int `%`. */
function remainder(left: number, right: number): number {
  // Like int % 0 in CEL, rather than a NaN that would travel on silently.
  if (right === 0) throw new EvaluationError("modulo by zero");
  return left % right;
}

/** Adds the int/double arithmetic JSON numbers need (see the module doc). */
function registerMixedArithmetic(env: Environment): void {
  for (const [operator, apply] of Object.entries(ARITHMETIC)) {
    env.registerOperator(
      `double ${operator} int: double`,
      (left: number, right: bigint) => apply(left, Number(right)),
    );
    env.registerOperator(
      `int ${operator} double: double`,
      (left: bigint, right: number) => apply(Number(left), right),
    );
  }
  env.registerOperator("double % double: double", remainder);
}

/**
 * What `string.matches(pattern)` runs: cel-js's own builds a backtracking `RegExp`, which some
 * pattern and text pairs hold for seconds or hours (see `validate/linear_regexp.ts`). Each
 * parsed expression's `matches` calls are renamed to this function, which matches by RE2 (the
 * syntax CEL specifies for `matches`) in linear time.
 */
const LINEAR_MATCHES = "linearMatches";
/**
 * Compiled patterns by source, least recently used first, at most `limit` instructions between
 * them (by `patternSize`; a compiled one took 60–600 bytes an instruction), the least recently
 * used dropped. One not held is compiled, charged first (within an evaluation, to its budget; see
 * {@linkcode spendOnCompiling}).
 */
class PatternCache {
  readonly #limit: number;
  readonly #checked: boolean;
  readonly #compiling: { beforeCompiling: (size: number, compileSize: number) => void };
  readonly #patterns = new Map<string, CompiledPattern>();
  #instructions = 0;

  /**
   * `checked`: every pattern given was sized where its expression was compiled, so one past
   * `MAX_PATTERN_SIZE` there (a stream's stored before that bound) is compiled again as it was.
   * `beforeCompiling`: charges a pattern not held before it is compiled (throws past a budget).
   */
  constructor(
    limit: number,
    options: {
      checked?: boolean;
      beforeCompiling: (size: number, compileSize: number) => void;
    },
  ) {
    this.#limit = limit;
    this.#checked = options.checked ?? false;
    this.#compiling = { beforeCompiling: options.beforeCompiling };
  }

  /**
   * `pattern` compiled, held or now (then held, charged first). Throws {@linkcode PatternError}, or
   * what charging it throws.
   */
  get(pattern: string): CompiledPattern {
    const held = this.#patterns.get(pattern);
    if (held) {
      // Most recently used: last.
      this.#patterns.delete(pattern);
      this.#patterns.set(pattern, held);
      return held;
    }
    const compiled = this.#checked
      ? withOversizedPatterns(() => compileLinearPattern(pattern, this.#compiling))
      : compileLinearPattern(pattern, this.#compiling);
    for (const [source, oldest] of this.#patterns) {
      if (this.#instructions + compiled.size <= this.#limit) break;
      this.#patterns.delete(source);
      this.#instructions -= oldest.size;
    }
    this.#patterns.set(pattern, compiled);
    this.#instructions += compiled.size;
    return compiled;
  }
}

/** The instructions' worth of patterns taken from events kept compiled (see `variablePatterns`). */
const VARIABLE_PATTERN_INSTRUCTIONS = 16_384;

/**
 * Patterns `matches` took from the variables (an event's), compiled, at most 16,384 instructions
 * of them (at most some 10 MB; the DFA states they build as they match count within
 * `MAX_RETAINED_MATCHER_BYTES` with every other pattern's). Bounded by count (256) and length (256
 * characters) instead, 255 patterns of about 5,000 instructions each, sent in 85 events, held 78 MB.
 */
const variablePatterns = new PatternCache(VARIABLE_PATTERN_INSTRUCTIONS, {
  beforeCompiling: spendOnVariableCompiling,
});

function linearMatches(text: string, pattern: string): boolean {
  return matchedThrough(variablePatterns, text, pattern);
}

/**
 * Whether `pattern`, compiled through `cache`, matches `text`. Compiling is charged too, before it
 * runs: an event's list of distinct patterns would otherwise compile each (100 of 4,000
 * instructions: 0.9 s) while matching nothing; past the budget, fails the evaluation.
 */
function matchedThrough(cache: PatternCache, text: string, pattern: string): boolean {
  let held: CompiledPattern;
  try {
    held = cache.get(pattern);
  } catch (error) {
    throw evaluationError(error);
  }
  return testCharged(held, text);
}

/** What a `matches` call throws for `error`: the spent budget's, or an {@linkcode EvaluationError}. */
function evaluationError(error: unknown): unknown {
  return error === SPENT ? error : new EvaluationError((error as Error).message);
}

/**
 * Charges compiling a pattern of `size` instructions (`compileSize` with its classes' ranges); past
 * the budget, fails the evaluation.
 */
function spendOnCompiling(size: number, compileSize: number): void {
  if (!chargeCompiling(size, compileSize)) throw SPENT;
}

/**
 * {@linkcode spendOnCompiling} for a pattern taken from the variables (an event's), charged to the
 * running {@linkcode RequestPatternBudget} as well (its `compileSize` and
 * {@linkcode PATTERN_COMPILE_OVERHEAD}); past that, fails the evaluation, which
 * {@linkcode withBudget} then reports as the request's.
 */
function spendOnVariableCompiling(size: number, compileSize: number): void {
  spendOnCompiling(size, compileSize);
  if (requestPatterns === undefined) return;
  if (requestPatterns.spend(compileSize + PATTERN_COMPILE_OVERHEAD)) return;
  requestPatternsPast = true;
  throw SPENT;
}

/**
 * What compiling the patterns `matches()` takes from one request's events (an HTTP batch, a
 * WebSocket frame) may cost in all, where a {@linkcode RequestPatternBudget} is given (ingest's
 * transforms): each pattern compiled its instructions (by `patternCompileSize`: a character class 1
 * more for each `RANGES_PER_INSTRUCTION` ranges of characters it holds) and
 * {@linkcode PATTERN_COMPILE_OVERHEAD}; a pattern still kept compiled (`variablePatterns`: the
 * most recently used 16,384 instructions' worth of patterns taken from events, this request's or
 * an earlier one's) costs nothing, but one dropped from there and used again is compiled, and
 * charged, again: 5 distinct patterns of 3,996 instructions alternating event by event are cut after
 * 32 events, where the same grouped (each one's events together) all pass: compiling again spends
 * CPU again. Each evaluation may compile 16,384
 * instructions ({@linkcode MAX_MATCHING_COST} over 16 an instruction), but without this a request
 * could have each of its events do so: 1,000 events (208 KB) each listing six patterns of about
 * 4,000 instructions (`^.{0,1000}.{0,990}`, each event's own) took 12–15 s of CPU
 * (`deno task bench:cel-patterns`, `unbounded`), most of it compiling. This is eight evaluations' worth: 32 such patterns, or some 2,900 of 13 instructions
 * (`^<id>x[a-z]+$`), per request (`deno task bench:cel-patterns`).
 */
export const MAX_REQUEST_PATTERN_COMPILE = 131_072;

/**
 * What each pattern taken from an event costs to compile beyond its instructions, in
 * {@linkcode MAX_REQUEST_PATTERN_COMPILE}: compiling and first testing one took 50–170 µs for
 * patterns of 8–13 instructions, where one of 4,000 took 2.7–4.8 µs an instruction, so a request
 * of many small patterns would otherwise cost several times one of a few large ones.
 */
export const PATTERN_COMPILE_OVERHEAD = 32;

/** Options for {@linkcode RequestPatternBudget}. */
export interface RequestPatternBudgetOptions {
  /** The request's cost, in all. @default {MAX_REQUEST_PATTERN_COMPILE} */
  maxCost?: number;
}

/**
 * What compiling the patterns `matches()` takes from one request's events may cost (see
 * {@linkcode MAX_REQUEST_PATTERN_COMPILE}), spent in the order they are compiled:
 * one for each request, handed to the transform of each of its events
 * (`TransformCallOptions.patterns`). Literal patterns are not charged here (they are compiled
 * with their expression), nor is matching (each evaluation's own {@linkcode MAX_MATCHING_COST}
 * bounds it). The pattern that passes what is left is not compiled and cuts the request: its
 * evaluation fails, and the caller refuses every later event.
 */
export class RequestPatternBudget {
  /** The request's cost in all (instructions, and {@linkcode PATTERN_COMPILE_OVERHEAD} a pattern). */
  readonly maxCost: number;
  #left: number;
  #cut = false;

  constructor(options: RequestPatternBudgetOptions = {}) {
    this.maxCost = options.maxCost ?? MAX_REQUEST_PATTERN_COMPILE;
    this.#left = this.maxCost;
  }

  /** What is not yet spent. */
  get left(): number {
    return this.#left;
  }

  /** Whether a pattern passed what was left: the request's later events are refused. */
  get cut(): boolean {
    return this.#cut;
  }

  /** Spends `cost`: false past what is left (then cut, and false from then on). */
  spend(cost: number): boolean {
    if (this.#cut) return false;
    if (cost > this.#left) {
      this.#cut = true;
      return false;
    }
    this.#left -= cost;
    return true;
  }
}

/**
 * Why an event is refused when the patterns its request's events give `matches()` would cost more
 * than `maxCost` to compile (see {@linkcode RequestPatternBudget}): it and every later
 * event of the request.
 */
export function requestPatternBudgetMessage(maxCost: number): string {
  return `Request's matches() patterns taken from its events would cost more than ${maxCost} to compile (each its instructions and ${PATTERN_COMPILE_OVERHEAD} more), counted in order (a pattern still kept compiled, among the most recently used ${VARIABLE_PATTERN_INSTRUCTIONS} instructions' worth of patterns taken from events, costs nothing; one dropped and used again is compiled and charged again): this event and every later one in the request were refused, the earlier ones processed as usual; keep a request's distinct event patterns within ${VARIABLE_PATTERN_INSTRUCTIONS} instructions, or send each pattern's events together (the refused ones again in another request)`;
}

/**
 * Why an event after the one refused with {@linkcode requestPatternBudgetMessage} is refused, where
 * a reply lists that one's message whole once: `index`, that event's place in the request.
 */
export function patternBudgetCutMessage(index: number): string {
  return `Refused unprocessed: past the request's budget for compiling matches() patterns taken from its events (see index ${index})`;
}

/** The budget charged while a transform given one runs (see {@linkcode withRequestPatterns}). */
let requestPatterns: RequestPatternBudget | undefined;
/** Whether the running evaluation passed {@linkcode requestPatterns} (see `withBudget`). */
let requestPatternsPast = false;

/**
 * `run(event, options)`, with the patterns `matches()` takes from the variables in its evaluations
 * charged to `budget` (evaluations are synchronous: one at a time). Positional rather than an
 * options object, and `run` with its arguments rather than a closure: it wraps every transform
 * call on the ingest path, where a closure or an object an event would be garbage.
 */
export function withRequestPatterns<E, O, R>(
  budget: RequestPatternBudget,
  run: (event: E, options: O) => R,
  event: E,
  options: O,
): R {
  const outer = requestPatterns;
  requestPatterns = budget;
  try {
    return run(event, options);
  } finally {
    requestPatterns = outer;
  }
}

/**
 * Whether `pattern` matches `text`, charged before it runs, and the states its matcher builds as
 * they are (see `CompiledPattern.stateCost`); past the budget, fails the evaluation.
 */
function testCharged(pattern: CompiledPattern, text: string): boolean {
  if (!chargeTest(pattern, text.length)) throw SPENT;
  try {
    return pattern.test(text);
  } catch (error) {
    if (error instanceof PatternBudgetError) throw SPENT;
    throw error;
  }
}

/**
 * What a `matches` call with a literal pattern is renamed to: the pattern is compiled with the
 * expression and kept (see {@linkcode literalPatterns}), not compiled again per event. Through
 * the event cache, a definition with more literal patterns than it holds had each compiled
 * again for every event (300 of them: 26 ms an event rather than 0.2).
 */
const LINEAR_MATCHES_LITERAL = "linearMatchesLiteral";
/**
 * Literal patterns compiled with their expressions, at most 65,536 instructions of them (a
 * definition's may have 16,000). One dropped and used again is compiled again, charged as a
 * pattern taken from the event is (16 an instruction): expressions whose literal patterns together
 * exceed the cache (five filters of 16,000 instructions) had each evaluation compile its own
 * again, 24–46 ms each, uncharged, on top of what its budget bounds.
 */
const literalPatterns = new PatternCache(65_536, {
  checked: true,
  beforeCompiling: spendOnCompiling,
});

function linearMatchesLiteral(text: string, pattern: string): boolean {
  return matchedThrough(literalPatterns, text, pattern);
}

/** A message with the renamed `matches` (see {@linkcode LINEAR_MATCHES}) named as written. */
function asWritten(message: string): string {
  return message.replaceAll(LINEAR_MATCHES_LITERAL, "matches").replaceAll(
    LINEAR_MATCHES,
    "matches",
  );
}

/**
 * Renames every `<string>.matches(<pattern>)` (and `matches(<string>, <pattern>)`) call in a
 * parsed expression to {@linkcode LINEAR_MATCHES}, or {@linkcode LINEAR_MATCHES_LITERAL} with a
 * literal pattern, which it compiles now (kept for its evaluations), so a bad one is refused with
 * the expression. Throws {@linkcode PatternError}.
 */
function useLinearMatches(node: unknown): void {
  if (Array.isArray(node)) {
    for (const item of node) useLinearMatches(item);
    return;
  }
  if (typeof node !== "object" || node === null) return;
  const { op, args } = node as { op?: unknown; args?: unknown };
  const method = op === "rcall";
  if ((method || op === "call") && Array.isArray(args) && args[0] === "matches") {
    const literal = literalMatchesPattern(node, "matches");
    if (literal !== undefined) literalPatterns.get(literal);
    args[0] = literal === undefined ? LINEAR_MATCHES : LINEAR_MATCHES_LITERAL;
  }
  if (typeof args === "object" && args !== null) useLinearMatches(args);
}

/** Whether a parsed tree (after {@linkcode useLinearMatches}) calls `matches`. Without recursion. */
function callsMatches(root: unknown): boolean {
  let found = false;
  visitNodes(root, (node) => {
    const name = Array.isArray(node.args) ? node.args[0] : undefined;
    if (name === LINEAR_MATCHES || name === LINEAR_MATCHES_LITERAL) found = true;
  });
  return found;
}

/** The literal pattern of a `matches` call node (cel-js's), or `undefined` for another node. */
function literalMatchesPattern(node: unknown, name: string): string | undefined {
  if (typeof node !== "object" || node === null) return undefined;
  const { op, args } = node as { op?: unknown; args?: unknown };
  const method = op === "rcall";
  if (!(method || op === "call") || !Array.isArray(args) || args[0] !== name) return undefined;
  const list = method ? args[2] : args[1];
  const pattern = Array.isArray(list) ? list[method ? 0 : 1] : undefined;
  const literal = pattern as { op?: unknown; args?: unknown } | undefined;
  return literal?.op === "value" && typeof literal.args === "string" ? literal.args : undefined;
}

/** `source`'s syntax tree, read without compiling it; undefined for one too long or that does not parse. */
function parsedAst(source: string, variables: readonly string[]): unknown {
  if (source.length > MAX_EXPRESSION_LENGTH) return undefined;
  try {
    return (environmentFor(variables).parse(source) as { ast?: unknown }).ast;
  } catch {
    return undefined;
  }
}

/**
 * The literal patterns of `source`'s `matches()` calls (`event.sku.matches("^[A-Z]{3}$")`), in
 * the order written, read without compiling them (nor the expression): for a bound on what they
 * cost before they are compiled. None for an expression that does not parse. Without recursion.
 */
export function literalMatchesPatterns(
  source: string,
  variables: readonly string[] = ["event"],
): string[] {
  const ast = parsedAst(source, variables);
  return ast === undefined ? [] : literalsIn(ast);
}

/**
 * The first literal `matches()` pattern of `source` past `MAX_PATTERN_SIZE` on its own, or past
 * {@linkcode MAX_EXPRESSION_PATTERN_SIZE} with those before it (each by `patternCompileSize`), as
 * {@linkcode compileExpression} refuses it (without the expression), or `undefined` for none or an
 * expression that does not parse: what an expression stored before those checks holds, compiled as
 * it was (see {@linkcode CompileExpressionOptions.uncountedPatternClasses}), to warn of. Read
 * without compiling any.
 */
export function oversizedExpressionPatterns(
  source: string,
  variables: readonly string[] = ["event"],
): string | undefined {
  let total = 0;
  for (const pattern of literalMatchesPatterns(source, variables)) {
    try {
      checkPatternSize(pattern);
    } catch (error) {
      if (error instanceof PatternError) return error.message;
      throw error;
    }
    total += patternCompileSize(pattern);
    if (total > MAX_EXPRESSION_PATTERN_SIZE) return patternsPastBudget(total);
  }
  return undefined;
}

/** Why a map's key `key` is refused: left out of the map, silently, otherwise. */
function droppedKeyReason(key: string): string {
  return `map key '${key}' is not allowed: it would be left out of the map (no event may hold that key either)`;
}

/** Why literal patterns of `total` instructions together are refused in one expression. */
function patternsPastBudget(total: number): string {
  return `its matches() patterns would compile to ${total} instructions together, past the ${MAX_EXPRESSION_PATTERN_SIZE} an expression may have (a character class counts 1 more for each ${RANGES_PER_INSTRUCTION} ranges of characters it holds: [\\p{L}] is about 24)`;
}

/** A field of a variable an expression names: `group.country`, `group["a.b"]`, `"x" in group`. */
export interface FieldReference {
  /** The variable (`group`). */
  variable: string;
  /** The field named (`country`). */
  field: string;
}

/** Macros whose leading identifiers name a variable of their own within the rest. */
const BINDING_MACROS = new Set(["all", "exists", "exists_one", "map", "filter", "bind"]);

/**
 * The fields of `variables` that `source` names by a literal name, in the order written: selected
 * (`group.country`, also inside `has()`), indexed by a string (`group["user.country"]`) or tested
 * by `in` (`"country" in group`). Where a macro names its own variable alike (`l.all(group, …)`,
 * `cel.bind(window, …)`), what is inside is its own. A computed key (`group[k]`) names none. None
 * for an expression that does not parse. Without recursion.
 *
 * @example
 * ```ts
 * variableFields("group.contry == 'DE'", ["value", "group", "window"]);
 * // [{ variable: "group", field: "contry" }]
 * ```
 */
export function variableFields(
  source: string,
  variables: readonly string[],
): FieldReference[] {
  const ast = parsedAst(source, variables);
  if (ast === undefined) return [];
  const found: FieldReference[] = [];
  // The variable an `id` node names, unless a macro around it names its own alike.
  const variableOf = (item: unknown, own: ReadonlySet<string>) => {
    const id = astNode(item);
    return id?.op === "id" && typeof id.args === "string" && variables.includes(id.args) &&
        !own.has(id.args)
      ? id.args
      : undefined;
  };
  const literalText = (item: unknown) => {
    const value = astNode(item);
    return value?.op === "value" && typeof value.args === "string" ? value.args : undefined;
  };
  visitScoped(ast, ({ op, args }, own) => {
    if ((op === "." || op === "[]" || op === "in") && Array.isArray(args) && args.length === 2) {
      const [target, key] = op === "in" ? [args[1], args[0]] : args;
      const variable = variableOf(target, own);
      const field = op === "." ? (typeof key === "string" ? key : undefined) : literalText(key);
      if (variable !== undefined && field !== undefined) found.push({ variable, field });
    }
  });
  return found;
}

/** `item` as a node of cel-js's syntax tree, or `undefined` for a list, a name or a value. */
function astNode(item: unknown): { op?: unknown; args?: unknown } | undefined {
  return typeof item === "object" && item !== null && !Array.isArray(item)
    ? item as { op?: unknown; args?: unknown }
    : undefined;
}

/**
 * Calls `visit` with each node of cel-js's syntax tree `ast` (the node itself, before those
 * inside it), in the order written, and the names
 * that macros around it (`l.all(x, …)`, `cel.bind(x, …)`, see {@linkcode BINDING_MACROS}) give
 * variables of their own there. Without recursion.
 */
function visitScoped(
  ast: unknown,
  visit: (node: { op: string; args?: unknown }, own: ReadonlySet<string>) => void,
): void {
  const none = new Set<string>();
  const pending: [unknown, ReadonlySet<string>][] = [[ast, none]];
  while (pending.length > 0) {
    const [item, own] = pending.pop()!;
    if (Array.isArray(item)) {
      for (let index = item.length - 1; index >= 0; index--) pending.push([item[index], own]);
      continue;
    }
    const current = astNode(item);
    if (current === undefined || typeof current.op !== "string") continue;
    const { op, args } = current;
    visit(current as { op: string; args?: unknown }, own);
    if (
      op === "rcall" && Array.isArray(args) && BINDING_MACROS.has(args[0] as string) &&
      Array.isArray(args[2])
    ) {
      const [, receiver, list] = args as [string, unknown, unknown[]];
      // The leading identifiers (all but the last argument) are the macro's own variables, but
      // `cel.bind` names one: the value it binds, read outside it, may be an identifier too
      // (`cel.bind(x, optional, x)` was taken as binding `optional`, and accepted).
      const bind = args[0] === "bind";
      let bound = 0;
      while (
        bound < (bind ? 1 : list.length - 1) && astNode(list[bound])?.op === "id"
      ) bound++;
      if (bound > 0) {
        const inner = new Set(own);
        for (const id of list.slice(0, bound)) inner.add(astNode(id)!.args as string);
        const outside = bind ? list.slice(bound, bound + 1) : [];
        const inside = bind ? list.slice(bound + 1) : list.slice(bound);
        pending.push([inside, inner], [outside, own], [receiver, own]);
        continue;
      }
    }
    if (typeof args === "object" && args !== null) pending.push([args, own]);
  }
}

/**
 * Names cel-js's checker takes as declared though its evaluator does not know them: `optional`
 * (`optional.of(1)`, whose types are not enabled), which failed every event with `Unknown
 * variable: optional` after the expression had been accepted.
 */
const UNEVALUATED_NAMES = new Set(["optional"]);

/**
 * Namespaces cel-js declares as constants, whose value (`CelNamespace {}`) is no CEL value: it
 * means something only as a method call's receiver (`cel.bind(x, …)`). Read otherwise (a filter of
 * `cel`, `has(cel.x)`, `[cel]`), the expression was accepted and then failed every event (`must
 * return a bool, got object`, `No such key: x`, or `set` refusing to store a `CelNamespace`).
 */
const NAMESPACES = new Set(["cel"]);

/**
 * The first name of {@linkcode UNEVALUATED_NAMES}, or of {@linkcode NAMESPACES} other than as a
 * method call's receiver, that cel-js's syntax tree `ast` reads as a variable, not a macro's own
 * there; `undefined` for none. (cel-js refuses to declare one.)
 */
function unevaluatedName(ast: unknown): string | undefined {
  let found: string | undefined;
  // Receivers of method calls: each visited after its call.
  const receivers = new Set<unknown>();
  visitScoped(ast, (node, own) => {
    const { op, args } = node;
    if (op === "rcall" && Array.isArray(args)) receivers.add(args[1]);
    if (found !== undefined || op !== "id" || typeof args !== "string" || own.has(args)) return;
    if (UNEVALUATED_NAMES.has(args) || (NAMESPACES.has(args) && !receivers.has(node))) {
      found = args;
    }
  });
  return found;
}

/**
 * Keys cel-js leaves out of a map it builds (`{'constructor': 1}` is `{}`), as no event may hold
 * them either (see `validate/event.ts`).
 */
const DROPPED_MAP_KEYS = new Set(["__proto__", "constructor", "prototype"]);

/**
 * The value of a literal map key in cel-js's syntax tree (`'a'`, `1`, `-1`, `1u`, `true`), or
 * `NOT_LITERAL` for a computed one.
 */
function literalKey(item: unknown): unknown {
  const key = astNode(item);
  if (key?.op === "value") return key.args;
  const operand = key?.op === "-_" ? astNode(key.args) : undefined;
  if (operand?.op === "value") {
    const value = operand.args;
    if (typeof value === "number" || typeof value === "bigint") return -value;
  }
  return NOT_LITERAL;
}
const NOT_LITERAL = Symbol("not a literal");

/**
 * Why the first map literal in cel-js's syntax tree `ast` that cel-js would not build as written
 * is refused: a literal key it leaves out ({@linkcode DROPPED_MAP_KEYS}), or literal keys that
 * repeat (or that it would hold as one property, see {@linkcode repeatedKeyReason}); `undefined`
 * for none. Without recursion.
 */
function mapLiteralProblem(ast: unknown): string | undefined {
  let found: string | undefined;
  visitScoped(ast, ({ op, args }) => {
    if (found !== undefined || op !== "map" || !Array.isArray(args)) return;
    // The literal keys before the first dropped one: a repeat among them is the first problem.
    const keys: unknown[] = [];
    let dropped: string | undefined;
    for (const entry of args) {
      const key = Array.isArray(entry) ? literalKey(entry[0]) : NOT_LITERAL;
      if (key === NOT_LITERAL) continue;
      if (typeof key === "string" && DROPPED_MAP_KEYS.has(key)) {
        dropped = key;
        break;
      }
      keys.push(key);
    }
    const repeat = firstRepeat(keys);
    if (repeat !== undefined) found = repeatedKeyReason(repeat[0], repeat[1]);
    else if (dropped !== undefined) found = droppedKeyReason(dropped);
  });
  return found;
}

/**
 * The first key of `keys` that cel-js would hold as the same property as an earlier one (see
 * {@linkcode repeatedKeyReason}), after that earlier one; `undefined` for none.
 */
function firstRepeat(keys: readonly unknown[]): [first: unknown, later: unknown] | undefined {
  const held = new Map<string, unknown>();
  for (const key of keys) {
    const property = String(key);
    if (held.has(property)) return [held.get(property), key];
    held.set(property, key);
  }
  return undefined;
}

/** A map key as CEL writes it (`'a'`, `1`, `1u`, `true`), or what it is (`a list`, `bytes`). */
function keyAsWritten(key: unknown): string {
  if (typeof key === "string") return `'${key}'`;
  if (typeof key !== "object" || key === null) return String(key);
  if (typeof key.valueOf() === "bigint") return `${key}u`;
  if (key instanceof Uint8Array) return "bytes";
  return Array.isArray(key) ? "a list" : isPlainObject(key) ? "a map" : String(key);
}

/**
 * What CEL compares a map key as: a string, a bool or a number (int, uint or double, equal
 * across them); `undefined` for another value (a list, a map), which no other key equals.
 */
function keyKind(key: unknown): string | undefined {
  if (typeof key === "string" || typeof key === "boolean") return typeof key;
  if (typeof key === "number" || typeof key === "bigint") return "number";
  if (typeof key === "object" && key !== null && typeof key.valueOf() === "bigint") return "number";
  return undefined;
}

/**
 * Why a map with keys `first` and `later` is refused, cel-js making one property of both
 * (`String(key)`): CEL specifies an error for a repeated key (cel-spec's `map_value_repeat_key`,
 * numbers equal across int, uint and double: `{0: 1, 0u: 2}` as well), where cel-js let the later
 * win; keys CEL holds apart but cel-js would not (`1` and `'1'`, `true` and `'true'`) likewise.
 */
function repeatedKeyReason(first: unknown, later: unknown): string {
  const kind = keyKind(first);
  if (kind === undefined || kind !== keyKind(later)) {
    return `map keys ${keyAsWritten(first)} and ${
      keyAsWritten(later)
    } would be one key: a map here holds its keys as text, so it cannot hold both`;
  }
  const written = keyAsWritten(first);
  const again = keyAsWritten(later);
  return written === again
    ? `map key ${written} is repeated: a map may hold each key once`
    : `map keys ${written} and ${again} are the same key, repeated: a map may hold each key once`;
}

/** The literal patterns of the `matches` calls in cel-js's syntax tree `ast`, in order. */
function literalsIn(ast: unknown): string[] {
  const found: string[] = [];
  const pending: unknown[] = [ast];
  while (pending.length > 0) {
    const node = pending.pop();
    if (Array.isArray(node)) {
      for (let index = node.length - 1; index >= 0; index--) pending.push(node[index]);
      continue;
    }
    if (typeof node !== "object" || node === null) continue;
    const pattern = literalMatchesPattern(node, "matches");
    if (pattern !== undefined) found.push(pattern);
    const { args } = node as { args?: unknown };
    if (typeof args === "object" && args !== null) pending.push(args);
  }
  return found;
}

function environmentFor(variables: readonly string[]): Environment {
  const key = variables.join(",");
  let env = environments.get(key);
  if (!env) {
    env = new Environment({ homogeneousAggregateLiterals: false });
    registerMixedArithmetic(env);
    env.registerFunction(`string.${LINEAR_MATCHES}(string): bool`, linearMatches);
    env.registerFunction(`${LINEAR_MATCHES}(string, string): bool`, linearMatches);
    env.registerFunction(`string.${LINEAR_MATCHES_LITERAL}(string): bool`, linearMatchesLiteral);
    env.registerFunction(`${LINEAR_MATCHES_LITERAL}(string, string): bool`, linearMatchesLiteral);
    for (const name of variables) env.registerVariable(name, "dyn");
    environments.set(key, env);
  }
  return env;
}

function tooDeep(source: string): string {
  return invalid(source, `nests deeper than ${MAX_EXPRESSION_DEPTH} levels`);
}

/**
 * Why `source` is refused, with the source (and what the parser quotes of it) within the bounds
 * of other client input: an expression of up to {@linkcode MAX_EXPRESSION_LENGTH} characters is
 * not echoed whole.
 */
function invalid(source: string, why: string): string {
  return `Invalid expression '${quoteInput(source)}': ${quoteInput(why)}`;
}

/**
 * Whether cel-js's syntax tree `ast` nests more than `limit` nodes deep (a node: an object with
 * `op`; its `args` a node, a list of them or of lists, or a name). Without recursion.
 */
function nestsDeeperThan(ast: unknown, limit: number): boolean {
  const pending: [unknown, number][] = [[ast, 0]];
  while (pending.length > 0) {
    const [item, depth] = pending.pop()!;
    if (Array.isArray(item)) {
      for (const member of item) pending.push([member, depth]);
    } else if (typeof item === "object" && item !== null && "op" in item) {
      if (depth + 1 > limit) return true;
      pending.push([(item as { args?: unknown }).args, depth + 1]);
    }
  }
  return false;
}

/** A node of cel-js's parsed tree, as far as the budget reads and rewrites it. */
interface BudgetNode {
  op: string;
  args: unknown;
  evaluate: NodeEvaluate;
  /** Its type as checked (`bool`, `string`, `list<dyn>`, `dyn`, …). */
  checkedType?: { name?: unknown };
  readonly meta: {
    alternate?: BudgetNode;
    macro?: { evaluate: NodeEvaluate };
    evaluate: NodeEvaluate;
  };
}
/** How cel-js evaluates a node: with its evaluator, the node itself and the variables' context. */
type NodeEvaluate = (evaluator: unknown, node: unknown, context: unknown) => unknown;

function isBudgetNode(value: unknown): value is BudgetNode {
  return typeof value === "object" && value !== null &&
    typeof (value as BudgetNode).op === "string" &&
    typeof (value as BudgetNode).evaluate === "function";
}

/** What is left of the running evaluation's budget (evaluations are synchronous: one at a time). */
let remaining = 0;

/** An evaluation went past {@linkcode MAX_EVALUATION_COST}. */
export class EvaluationBudgetError extends Error {
  constructor(
    message = `Expression exceeded its evaluation budget of ${MAX_EVALUATION_COST} steps`,
  ) {
    super(message);
    this.name = "EvaluationBudgetError";
  }
}

/** The error of an evaluation whose patterns passed the request's {@linkcode RequestPatternBudget}. */
export class RequestPatternBudgetError extends EvaluationBudgetError {
  constructor(maxCost: number) {
    super(requestPatternBudgetMessage(maxCost));
    this.name = "RequestPatternBudgetError";
  }
}

/** The error of an evaluation whose `matches()` calls went past {@linkcode MAX_MATCHING_COST}. */
function matchingBudgetError(past: string): EvaluationBudgetError {
  return new EvaluationBudgetError(
    `Expression exceeded its matches() budget of ${MAX_MATCHING_COST} (text characters × instructions a pattern may visit a character, per evaluation): ${past}`,
  );
}

/**
 * One error, thrown at every node once the budget is spent: CEL's `all`, `exists`, `&&` and
 * `||` absorb an operand's error and go on, so each further step must fail at once, and cheaply
 * (no stack captured). The evaluation's caller throws a fresh one (see `withBudget`).
 */
const SPENT = new EvaluationBudgetError();

/** Ops whose operands' sizes are their work (strings and lists are scanned, copied, compared). */
const SCANNING = new Set([
  "call",
  "rcall",
  "+",
  "==",
  "!=",
  "<",
  "<=",
  ">",
  ">=",
  "in",
]);

/**
 * String methods that search one string for another. V8 runs them in up to (length × length of
 * the searched-for) steps (`"a…a".lastIndexOf("a…ab")` over a 64 KiB event: 0.15 s), not in the
 * length of their operands, so they pay for that product too (see {@linkcode searchCost}).
 */
const SEARCHES = new Set(["contains", "indexOf", "lastIndexOf", "split"]);

/**
 * A search's cost beyond its operands: 1 per 1,024 of `text.length × search.length` (V8 took
 * 0.16–0.4 ns each in the worst cases measured, so a whole budget of them is 20–40 ms).
 */
function searchCost(text: unknown, search: unknown): number {
  if (typeof text !== "string" || typeof search !== "string") return 0;
  return Math.floor(text.length * search.length / 1024);
}

/** What a method call node holds once checked: its receiver and arguments, and its handler. */
interface MethodCall {
  receiverWithArgs: unknown[];
  handle: (values: unknown[], evaluator: unknown, node: unknown) => unknown;
}

/** Types whose values are of one size: what yields them builds nothing that grows. */
const FIXED_SIZE = new Set([
  "bool",
  "int",
  "uint",
  "double",
  "null",
  "google.protobuf.Timestamp",
  "google.protobuf.Duration",
]);

/**
 * Cost of a value beyond its node: a list's length, a map's number of keys (cel-js's `size`, `in`
 * and `==` read every key of a map), a string's or bytes' length / 16. `deep` (the operands of
 * `==`, `!=` and `in`, which compare what lists and maps hold): the values inside it too. Counts
 * no further than past what is left of the budget, so the count costs no more than it charges.
 */
function sizeCost(value: unknown, deep = false): number {
  if (typeof value === "string") return value.length >>> 4;
  if (typeof value !== "object" || value === null) return 0;
  let cost = 0;
  const pending: unknown[] = [value];
  while (pending.length > 0 && cost <= remaining) {
    const item = pending.pop();
    if (typeof item === "string") {
      cost += item.length >>> 4;
    } else if (typeof item !== "object" || item === null) {
      continue;
    } else if (item instanceof Uint8Array) {
      cost += item.length >>> 4;
    } else if (Array.isArray(item)) {
      cost += item.length;
      if (deep) { for (const member of item) if (isComposite(member)) pending.push(member); }
    } else if (item instanceof Map) {
      cost += item.size;
      if (deep) {
        for (const member of item.values()) if (isComposite(member)) pending.push(member);
      }
    } else if (isPlainObject(item)) {
      for (const key in item) {
        cost += 1;
        const member = (item as Record<string, unknown>)[key];
        if (deep && isComposite(member)) pending.push(member);
      }
    }
    if (!deep) break;
  }
  return cost;
}

/** A value that `==` compares by what it holds: a string, a list or a map. */
function isComposite(value: unknown): boolean {
  return typeof value === "string" || (typeof value === "object" && value !== null);
}

/** A CEL map as the variables give it (a parsed JSON object), not a timestamp or another class. */
function isPlainObject(value: object): boolean {
  const prototype = Object.getPrototypeOf(value);
  return prototype === Object.prototype || prototype === null;
}

/** Ops that compare their operands by what they hold (a list's or map's members, deeply). */
const COMPARING = new Set(["==", "!=", "in"]);

/** An operand's part: of an op that compares, of another that scans, or a macro's range. */
type Operand = "compared" | "scanned" | "range" | null;

/**
 * Whether an expression can evaluate a node more than once: a macro's body runs once per
 * element, and `cel.bind` reads its value wherever its name is used (so `x + x` nested doubles).
 * Without either, each node runs at most once and only what `+` and calls build can grow.
 */
function loops(root: unknown): boolean {
  let found = false;
  visitNodes(root, (node) => {
    if (node.op === "comprehension") found = true;
    if (node.meta.macro && !(node.op === "call" && (node.args as unknown[])[0] === "has")) {
      found = true;
    }
  });
  return found;
}

/** Calls `visit` once for every node of a checked tree (macro expansions included), no recursion. */
function visitNodes(root: unknown, visit: (node: BudgetNode, operand: Operand) => void): void {
  const seen = new Set<unknown>();
  const pending: [unknown, Operand][] = [[root, null]];
  while (pending.length > 0) {
    const [item, operand] = pending.pop()!;
    if (Array.isArray(item)) {
      for (const member of item) pending.push([member, operand]);
      continue;
    }
    if (typeof item !== "object" || item === null || seen.has(item)) continue;
    seen.add(item);
    if (!isBudgetNode(item)) continue;
    const alternate = item.meta.alternate;
    if (alternate) {
      // A macro written as a call forwards to its expansion.
      pending.push([alternate, operand]);
      continue;
    }
    if (item.op === "comprehension") {
      const { iterable, init, step } = item.args as Record<string, unknown>;
      // The range is read whole (a map's keys are listed) before the first step.
      pending.push([iterable, "range"], [[init, step], null]);
    } else {
      pending.push([
        item.args,
        COMPARING.has(item.op) ? "compared" : SCANNING.has(item.op) ? "scanned" : null,
      ]);
    }
    visit(item, operand);
  }
}

/**
 * Makes the nodes of a checked tree pay into the running budget (see
 * {@linkcode MAX_EVALUATION_COST}). In an expression that loops, every node pays 1 before it
 * runs, and one that scans or builds a value (`SCANNING`, or an operand of one) pays for what it
 * yields. In one that does not, each node runs at most once and pays nothing, but `+` and calls
 * still pay for what they build (`l + l + l …` over a long list copies it again each time),
 * unless their type is of one size. Returns how many nodes pay.
 */
function chargeNodes(root: unknown): number {
  const everyNode = loops(root);
  let charged = 0;
  visitNodes(root, (node, operand) => {
    const meta = node.meta;
    const scans = SCANNING.has(node.op);
    if (node.op === "rcall" && SEARCHES.has((node.args as unknown[])[0] as string)) {
      // As cel-js's own `rcall` evaluates (operands last to first), paying for the search first.
      node.evaluate = (evaluator, self, context) => {
        if (everyNode && --remaining < 0) throw SPENT;
        const call = self as MethodCall;
        const run = evaluator as { run: (node: unknown, context: unknown) => unknown };
        const operands = call.receiverWithArgs;
        const values = new Array(operands.length);
        for (let i = operands.length - 1; i >= 0; i--) values[i] = run.run(operands[i], context);
        if ((remaining -= searchCost(values[0], values[1])) < 0) throw SPENT;
        const value = call.handle(values, evaluator, self);
        if ((remaining -= sizeCost(value)) < 0) throw SPENT;
        return value;
      };
    } else if (meta.macro) {
      if (!everyNode) return;
      const macro = meta.macro;
      node.evaluate = (evaluator, _self, context) => {
        if (--remaining < 0) throw SPENT;
        return macro.evaluate(evaluator, macro, context);
      };
    } else if (!everyNode) {
      if (node.op !== "+" && node.op !== "call" && node.op !== "rcall") return;
      if (FIXED_SIZE.has(String(node.checkedType?.name))) return;
      node.evaluate = (evaluator, self, context) => {
        const value = meta.evaluate(evaluator, self, context);
        if ((remaining -= sizeCost(value)) < 0) throw SPENT;
        return value;
      };
    } else if (operand === "range") {
      node.evaluate = (evaluator, self, context) => {
        if (--remaining < 0) throw SPENT;
        const value = meta.evaluate(evaluator, self, context);
        // A list is iterated in place, each step paying; a map's keys are listed first.
        if (!Array.isArray(value) && (remaining -= sizeCost(value)) < 0) throw SPENT;
        return value;
      };
    } else if (operand !== null || scans) {
      const deep = operand === "compared";
      node.evaluate = (evaluator, self, context) => {
        if (--remaining < 0) throw SPENT;
        const value = meta.evaluate(evaluator, self, context);
        if ((remaining -= sizeCost(value, deep)) < 0) throw SPENT;
        return value;
      };
    } else {
      node.evaluate = (evaluator, self, context) => {
        if (--remaining < 0) throw SPENT;
        return meta.evaluate(evaluator, self, context);
      };
    }
    charged += 1;
  });
  return charged;
}

/**
 * The bound of the doubles `int()` takes, either way: 2^63, the double nearest `2^63 - 1` (which
 * no double is). Its negation, though an int64 exactly, is refused as well, as CEL's conformance
 * tests (`int(-9223372036854775808.0)`: a range error) and cel-go (`doubleToInt64Checked`) refuse it.
 */
const INT64_DOUBLE_BOUND = 2 ** 63;

/** What a function call node holds once checked: the handler of its arguments' values. */
interface FunctionCall {
  handle: (values: unknown[], node: unknown, evaluator: unknown) => unknown;
}

/** The bound of the doubles `uint()` takes: 2^64, one past the largest uint64. */
const UINT64_DOUBLE_BOUND = 2 ** 64;

/**
 * Makes each `int()` and `uint()` of a checked tree fail for a double outside its range, as CEL
 * specifies. `int()`: (-2^63, 2^63); cel-js's `int(double)` checks only that the double is finite,
 * so `int(1e20)` gave an int of 21 digits (`int(1e300)` one of 301), and
 * `int(-9223372036854775808.0)` gave -2^63. `uint()`: [0, 2^64), as cel-go's
 * `doubleToUint64Checked` (`-0.0` is not below 0); cel-js truncates first, so `uint(-0.5)` gave 0.
 * Only a double can be past the range (for an int or a string cel-js checks it itself), and one
 * past 2^53 is whole. And each `duration()` fails for a duration past int64 nanoseconds (see
 * {@linkcode outsideDurationRange}), cel-go's `duration overflow`: cel-js parsed
 * `duration('9999999999999h')` as 35999999999996400s, which a comparison then took.
 */
function checkIntConversions(root: unknown): void {
  visitNodes(root, (node) => {
    if (node.op !== "call") return;
    const name = (node.args as unknown[])[0];
    if (name !== "int" && name !== "uint" && name !== "duration") return;
    // cel-js's handler of the argument's value, set when the node was checked (an infinity or
    // NaN is left to it: its own error).
    const call = node as unknown as FunctionCall;
    if (name === "duration") {
      const handle = call.handle;
      call.handle = (values, self, evaluator) => {
        const value = handle(values, self, evaluator);
        if (outsideDurationRange(value)) throw durationOverflow(value);
        return value;
      };
      return;
    }
    call.handle = name === "int"
      ? rangeChecked(
        call.handle,
        name,
        (value) => value <= -INT64_DOUBLE_BOUND || value >= INT64_DOUBLE_BOUND,
      )
      : rangeChecked(call.handle, name, (value) => value < 0 || value >= UINT64_DOUBLE_BOUND);
  });
}

/** A lone or paired surrogate: where a string's code points and its UTF-16 units differ. */
const SURROGATE = /[\uD800-\uDFFF]/;

/** How many UTF-16 units the code point at `unit` of `text` takes: 2 for a surrogate pair, else 1. */
function pairStep(text: string, unit: number): 1 | 2 {
  const code = text.charCodeAt(unit);
  if (code < 0xd800 || code > 0xdbff) return 1;
  const next = text.charCodeAt(unit + 1);
  return next >= 0xdc00 && next <= 0xdfff ? 2 : 1;
}

/** How many code points the first `units` UTF-16 units of `text` hold (a lone surrogate is one). */
function codePointsIn(text: string, units: number): number {
  let points = 0;
  for (let unit = 0; unit < units; points++) unit += pairStep(text, unit);
  return points;
}

/** The UTF-16 index of `text`'s code point `points` (its length past the last). */
function unitOf(text: string, points: number): number {
  let unit = 0;
  for (let point = 0; point < points && unit < text.length; point++) unit += pairStep(text, unit);
  return unit;
}

/** Whether UTF-16 index `unit` of `text` falls between the two halves of a surrogate pair. */
function splitsPair(text: string, unit: number): boolean {
  return unit > 0 && unit < text.length && pairStep(text, unit - 1) === 2;
}

/** All of a string ASCII: its upper and lower case are JavaScript's. */
const ASCII = /^[\0-\x7f]*$/;

/**
 * The string methods CEL counts in code points (as `size()` does, cel-js too), each taking and
 * giving code point indices, or null to leave a call to cel-js (any other receiver or argument
 * types: its own error). cel-js's `substring`, `indexOf` and `lastIndexOf` counted UTF-16 units,
 * so past an emoji they were off by one a character (`'😀a'.indexOf('a')` gave 2, where `size()`
 * gave 1) and `'😀x'.substring(0, 1)` cut the emoji in half, a lone surrogate a `set` then stored.
 * Its `upperAscii` and `lowerAscii` changed every letter (`'é'.upperAscii()` gave `É`, `'ß'` gave
 * `SS`), where CEL changes ASCII letters only. Each is given the call's `values`, the receiver
 * (`text`) then the arguments, as cel-js passes them: no array is built per call.
 */
const CODE_POINT_METHODS = new Map<string, (text: string, values: unknown[]) => unknown>([
  [
    "upperAscii",
    (text, values) =>
      values.length !== 1
        ? null
        : ASCII.test(text)
        ? text.toUpperCase()
        : text.replace(/[a-z]+/g, (run) => run.toUpperCase()),
  ],
  [
    "lowerAscii",
    (text, values) =>
      values.length !== 1
        ? null
        : ASCII.test(text)
        ? text.toLowerCase()
        : text.replace(/[A-Z]+/g, (run) => run.toLowerCase()),
  ],
  ["indexOf", searchMethod("indexOf")],
  ["lastIndexOf", searchMethod("lastIndexOf")],
  ["substring", (text, values) => {
    // Without a surrogate, code points are UTF-16 units: cel-js's own answer (or error) stands.
    if (!SURROGATE.test(text)) return null;
    const start = values[1];
    const end = values[2];
    if (typeof start !== "bigint" || (end !== undefined && typeof end !== "bigint")) return null;
    const size = BigInt(codePointsIn(text, text.length));
    if (start < 0n || start > size) {
      throw new EvaluationError("string.substring(start, end): start index out of range");
    }
    if (end === undefined) return text.slice(unitOf(text, Number(start)));
    if (end < start || end > size) {
      throw new EvaluationError("string.substring(start, end): end index out of range");
    }
    return text.slice(unitOf(text, Number(start)), unitOf(text, Number(end)));
  }],
]);

/**
 * CEL's `indexOf` or `lastIndexOf` (`method`), in code points. A hit that starts or ends between
 * the halves of a surrogate pair (`'😀b'.indexOf('\uDE00')`, a lone surrogate an event may hold)
 * is no hit: the search goes on one unit past it (for `lastIndexOf`, one unit before).
 */
function searchMethod(
  method: "indexOf" | "lastIndexOf",
): (text: string, values: unknown[]) => unknown {
  const step = method === "indexOf" ? 1 : -1;
  const message = `string.${method}(search, fromIndex): fromIndex out of range`;
  return (text, values) => {
    // Without a surrogate, code points are UTF-16 units: cel-js's own answer (or error) stands.
    if (!SURROGATE.test(text)) return null;
    const search = values[1];
    const from = values[2];
    if (typeof search !== "string" || (from !== undefined && typeof from !== "bigint")) return null;
    if (from !== undefined) {
      if (search === "") return from;
      if (from < 0n || from >= BigInt(codePointsIn(text, text.length))) {
        throw new EvaluationError(message);
      }
    }
    let found = from === undefined
      ? text[method](search)
      : text[method](search, unitOf(text, Number(from)));
    while (found >= 0 && (splitsPair(text, found) || splitsPair(text, found + search.length))) {
      if (found + step < 0) return -1n;
      found = text[method](search, found + step);
    }
    return BigInt(found < 0 ? -1 : codePointsIn(text, found));
  };
}

/** Makes each call of a checked tree to one of {@linkcode CODE_POINT_METHODS} on a string its own. */
function checkStringMethods(root: unknown): void {
  visitNodes(root, (node) => {
    if (node.op !== "rcall") return;
    const method = CODE_POINT_METHODS.get((node.args as unknown[])[0] as string);
    if (method === undefined) return;
    const call = node as unknown as MethodCall;
    const handle = call.handle;
    call.handle = (values, evaluator, self) => {
      const receiver = values[0];
      const value = typeof receiver === "string" ? method(receiver, values) : null;
      return value === null ? handle(values, evaluator, self) : value;
    };
  });
}

/** CEL's timestamps, in milliseconds since 1970: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z. */
const TIMESTAMP_RANGE_MS = [-62_135_596_800_000, 253_402_300_799_999] as const;

function withinTimestampRange(date: Date): boolean {
  const time = date.getTime();
  return time >= TIMESTAMP_RANGE_MS[0] && time <= TIMESTAMP_RANGE_MS[1];
}

/** The checked types of a timestamp and a duration. */
const TIMESTAMP_TYPE = "google.protobuf.Timestamp";
const DURATION_TYPE = "google.protobuf.Duration";

/** The greatest int64, 2^63 - 1. */
const MAX_INT64 = 2n ** 63n - 1n;

/** The least int64, -2^63: the one int whose negation, or quotient or remainder by -1, has no int64. */
const MIN_INT64 = -(2n ** 63n);

/**
 * Whether `value` is a duration (cel-js's: whole `seconds` and `nanos` of the same sum) of more
 * nanoseconds than an int64 holds, as cel-go's durations are: cel-js's are not bounded, so
 * `timestamp('9999-01-01T00:00:00Z') - timestamp('0001-01-01T00:00:00Z')` gave 315506361600s.
 */
function outsideDurationRange(value: unknown): boolean {
  if (typeof value !== "object" || value === null) return false;
  const { seconds, nanos } = value as { seconds?: unknown; nanos?: unknown };
  if (typeof seconds !== "bigint" || typeof nanos !== "number") return false;
  const total = seconds * 1_000_000_000n + BigInt(Math.trunc(nanos));
  return total < MIN_INT64 || total > MAX_INT64;
}

/**
 * Makes each timestamp a `+` or `-` of a checked tree gives outside CEL's range (years 1 to 9999)
 * fail (cel-go's `timestamp overflow`), and each duration past int64 nanoseconds (see
 * {@linkcode outsideDurationRange}), each list index that is not a whole number fail saying
 * so, and each unary `-`, `/` and `%` fail on the int64 they cannot answer, as CEL specifies (cel-go's `negateInt64Checked`, `divideInt64Checked`, `moduloInt64Checked`): cel-js
 * checks `+ - *` of ints for overflow but not these, so `-(-9223372036854775807 - 1)` and
 * `-9223372036854775808 / -1` gave 2^63, an int outside int64, and `% -1` of it gave 0.
 */
function checkIntegerEdges(root: unknown): void {
  visitNodes(root, (node) => {
    const checked = node as unknown as { handle?: (...values: unknown[]) => unknown };
    const handle = checked.handle;
    if (typeof handle !== "function") return;
    // Only the nodes a check can affect, by their checked type: `double(x) + 1.0` is not wrapped.
    const type = String(node.checkedType?.name);
    if (node.op === "-_") {
      if (type !== "int" && type !== "dyn") return;
      checked.handle = (value, self, evaluator) => {
        if (value === MIN_INT64) throw intOverflow("-", value);
        return handle(value, self, evaluator);
      };
    } else if (node.op === "+" || node.op === "-") {
      // cel-js checks a dyn beside a duration as a duration (`dyn(d) + t` is a `duration`), which
      // can still give a timestamp.
      if (type !== TIMESTAMP_TYPE && type !== DURATION_TYPE && type !== "dyn") return;
      // cel-js's timestamps are Dates, which go on past CEL's range (`+010000-01-01T…`).
      checked.handle = (left, right, self, evaluator) => {
        const value = handle(left, right, self, evaluator);
        // An int, a double or a string (what most dyn sums are): neither a timestamp nor a duration.
        if (typeof value !== "object" || value === null) return value;
        if (outsideDurationRange(value)) throw durationOverflow(value);
        if (value instanceof Date && !withinTimestampRange(value)) {
          throw new EvaluationError(
            `timestamp overflow: ${
              Number.isNaN(value.getTime()) ? "a time" : value.toISOString()
            } is outside 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z`,
          );
        }
        return value;
      };
    } else if (node.op === "[]") {
      const listed = String((node.args as BudgetNode[])[0]?.checkedType?.name);
      if (!listed.startsWith("list") && listed !== "dyn") return;
      // cel-js looked a fraction up as an index and said it was past the end
      // (`index 1.5 >= size 2`), a NaN too.
      checked.handle = (left, right, self, evaluator) => {
        if (Array.isArray(left) && typeof right === "number" && !Number.isInteger(right)) {
          throw new EvaluationError(`Invalid list index ${right}: not a whole number`);
        }
        return handle(left, right, self, evaluator);
      };
    } else if (node.op === "/" || node.op === "%") {
      if (type !== "int" && type !== "dyn") return;
      const op = node.op;
      checked.handle = (left, right, self, evaluator) => {
        if (left === MIN_INT64 && right === -1n) throw intOverflow(op, left, right);
        return handle(left, right, self, evaluator);
      };
    }
  });
}

/** cel-go's `duration overflow`, for a `value` {@linkcode outsideDurationRange} says is past it. */
function durationOverflow(value: unknown): EvaluationError {
  return new EvaluationError(
    `duration overflow: ${value} is outside what int64 nanoseconds hold (about 292 years either way)`,
  );
}

function intOverflow(op: string, left: bigint, right?: bigint): EvaluationError {
  const what = right === undefined ? `-(${left})` : `${left} ${op} ${right}`;
  return new EvaluationError(`integer overflow: ${what}`);
}

/**
 * `handle` (cel-js's of `name()`, `int` or `uint`) failing first for a finite double that
 * `outside` says is out of `name`'s 64-bit range.
 */
function rangeChecked(
  handle: FunctionCall["handle"],
  name: "int" | "uint",
  outside: (value: number) => boolean,
): FunctionCall["handle"] {
  return (values, self, evaluator) => {
    const value = values[0];
    if (typeof value === "number" && Number.isFinite(value) && outside(value)) {
      throw new EvaluationError(`${name}() of ${value} is out of the ${name}64 range`);
    }
    return handle(values, self, evaluator);
  };
}

/**
 * Makes each computed key of a checked tree's map literals (`{event.tag: 1}`) fail the evaluation
 * when it is one of {@linkcode DROPPED_MAP_KEYS}: cel-js leaves it out of the map, so an event whose
 * tag was `constructor` had its field dropped silently. And in a map literal of two keys or more,
 * one of them computed, a key that repeats another (`{event.a: 1, event.b: 2}` of equal fields), or
 * that cel-js would hold as the same property (`1` and `'1'`), fails it: cel-js let the last one
 * win, silently, where CEL specifies an error (see {@linkcode repeatedKeyReason}). (Literal keys
 * alone are refused when compiled.) Maps of literal keys only, the common case, get no wrapper.
 */
function checkMapKeys(root: unknown): void {
  visitNodes(root, (node) => {
    if (node.op !== "map" || !Array.isArray(node.args)) return;
    const entries = node.args as unknown[];
    const keys = entries.map((entry) => Array.isArray(entry) ? entry[0] : undefined);
    const computed = keys.some((key) => isBudgetNode(key) && key.op !== "value");
    if (!computed) return;
    const repeats = entries.length > 1;
    // The keys of this map's latest evaluation: each literal's value, each computed one's as it is
    // evaluated (a map node is never inside itself, so its evaluations never overlap).
    const values = keys.map((key) =>
      isBudgetNode(key) && key.op === "value" ? key.args : undefined
    );
    keys.forEach((key, index) => {
      if (!isBudgetNode(key) || key.op === "value") return;
      const evaluate = ownEvaluate(key);
      key.evaluate = (evaluator, self, context) => {
        const value = evaluate(evaluator, self, context);
        if (typeof value === "string" && DROPPED_MAP_KEYS.has(value)) {
          throw new EvaluationError(droppedKeyReason(value));
        }
        if (repeats) values[index] = value;
        return value;
      };
    });
    if (!repeats) return;
    const evaluateMap = ownEvaluate(node);
    node.evaluate = (evaluator, self, context) => {
      const map = evaluateMap(evaluator, self, context);
      // cel-js builds a plain object of the entries (no key left out: those fail above), so one
      // property short means two keys were one; which is read only then.
      if (Object.keys(map as object).length < entries.length) {
        throw new EvaluationError(repeatedKeysReason(values));
      }
      return map;
    };
  });
}

/** Why a map of the keys `values` is refused (see {@linkcode repeatedKeyReason}); two must be one. */
function repeatedKeysReason(values: readonly unknown[]): string {
  const repeat = firstRepeat(values);
  return repeat === undefined ? "map keys repeat" : repeatedKeyReason(repeat[0], repeat[1]);
}

/**
 * How `node` evaluates, as a wrapper may call it: the budget's wrapper (see `chargeNodes`), or what
 * cel-js's `evaluate` method would run (its expansion's, its macro's or its meta's), read as that
 * method does: called, it would put that one in its own place, over the wrapper.
 */
function ownEvaluate(node: BudgetNode): NodeEvaluate {
  if (Object.hasOwn(node, "evaluate")) return node.evaluate;
  const { alternate, macro } = node.meta;
  if (alternate) {
    return (evaluator, _self, context) => alternate.evaluate(evaluator, alternate, context);
  }
  if (macro) return (evaluator, _self, context) => macro.evaluate(evaluator, macro, context);
  const meta = node.meta;
  return (evaluator, self, context) => meta.evaluate(evaluator, self, context);
}

/**
 * The worst case, in budget units, of a checked tree over its literal lists and maps: a
 * macro's body counted once per element of a literal range, once for any other. A lower bound
 * where ranges come from the variables; enough to refuse `[1..300].all(a, [1..300].all(…))`.
 */
function worstCase(item: unknown): number {
  if (Array.isArray(item)) {
    let sum = 0;
    for (const member of item) sum += worstCase(member);
    return sum;
  }
  if (!isBudgetNode(item)) return 0;
  if (item.meta.alternate) return worstCase(item.meta.alternate);
  if (item.op === "comprehension") {
    const { iterable, init, step } = item.args as Record<string, unknown>;
    const range = isBudgetNode(iterable) && (iterable.op === "list" || iterable.op === "map")
      ? (iterable.args as unknown[]).length
      : 1;
    return 1 + worstCase(iterable) + worstCase(init) + range * worstCase(step);
  }
  return 1 + worstCase(item.args);
}

function firstLine(error: unknown): string {
  return asWritten((error instanceof Error ? error.message : String(error)).split("\n")[0]);
}

/**
 * `evaluate` run within a fresh budget (and a fresh {@linkcode MAX_MATCHING_COST}); past either,
 * a fresh {@linkcode EvaluationBudgetError}, or past the running {@linkcode RequestPatternBudget},
 * a {@linkcode RequestPatternBudgetError}.
 */
function withBudget(
  evaluate: (context: Record<string, unknown>) => unknown,
): (context: Record<string, unknown>) => unknown {
  return (context) => {
    remaining = MAX_EVALUATION_COST;
    requestPatternsPast = false;
    startMatchingBudget(MAX_MATCHING_COST);
    let value: unknown;
    let failure: { error: unknown } | undefined;
    try {
      value = evaluate(context);
    } catch (error) {
      failure = { error };
    }
    // Spent, whatever error came out (cel-js may pass on another once its step failed), or
    // though an error was absorbed on the way and an answer came: still over budget.
    const matchingPast = endMatchingBudget();
    if (requestPatternsPast) {
      requestPatternsPast = false;
      throw new RequestPatternBudgetError(requestPatterns!.maxCost);
    }
    if (matchingPast !== undefined) throw matchingBudgetError(matchingPast);
    if (remaining < 0) throw new EvaluationBudgetError();
    if (failure) throw failure.error;
    return value;
  };
}

/** Options for {@linkcode compileExpression}. */
export interface CompileExpressionOptions {
  /** A filter or condition: refused when its type is known and another (`1 + 1`). */
  returns?: "bool";
  /**
   * Count literal patterns against {@linkcode MAX_EXPRESSION_PATTERN_SIZE} by `patternSize`, their
   * classes' ranges not counted, as releases before that check did: a stream or webhook stored
   * then is served as it was. @default {false: counted by `patternCompileSize`}
   */
  uncountedPatternClasses?: boolean;
}

/**
 * Parses and type-checks `source` with the given variables declared (as
 * `dyn`). Throws {@linkcode ExpressionError} for bad syntax, unknown
 * variables or functions, and type errors that need no variable's value
 * (`"a" + 1`, or `1 + 1` where `options.returns` asks a bool); what a
 * variable holds is known only when it is evaluated.
 *
 * @example
 * ```ts
 * const isBig = compileExpression("event.amount * 2 > 100", ["event"]);
 * isBig({ event: { amount: 250 } }); // true
 * ```
 */
export function compileExpression(
  source: string,
  variables: readonly string[] = ["event"],
  options: CompileExpressionOptions = {},
): CompiledExpression {
  // Its source is not echoed: a URL's `?filter=` may be of any length.
  if (source.length > MAX_EXPRESSION_LENGTH) {
    throw new ExpressionError(
      `Expression is ${source.length} UTF-16 code units; the limit is ${MAX_EXPRESSION_LENGTH}`,
    );
  }
  const env = environmentFor(variables);
  let evaluate: (context: Record<string, unknown>) => unknown;
  let ast: unknown;
  try {
    const parsed = env.parse(source);
    if (nestsDeeperThan((parsed as { ast?: unknown }).ast, MAX_EXPRESSION_DEPTH)) {
      throw new ExpressionError(tooDeep(source));
    }
    const unevaluated = unevaluatedName((parsed as { ast?: unknown }).ast);
    if (unevaluated !== undefined) {
      throw new ExpressionError(invalid(source, `Unknown variable: ${unevaluated}`));
    }
    const mapProblem = mapLiteralProblem((parsed as { ast?: unknown }).ast);
    if (mapProblem !== undefined) throw new ExpressionError(invalid(source, mapProblem));
    // What its patterns cost, before compiling any.
    let patterns = 0;
    for (const pattern of literalsIn((parsed as { ast?: unknown }).ast)) {
      const size = checkPatternSize(pattern);
      patterns += options.uncountedPatternClasses ? size : patternCompileSize(pattern);
      if (patterns > MAX_EXPRESSION_PATTERN_SIZE) {
        throw new ExpressionError(
          invalid(source, patternsPastBudget(patterns)),
        );
      }
    }
    useLinearMatches((parsed as { ast?: unknown }).ast);
    const check = parsed.check();
    if (!check.valid) {
      throw new ExpressionError(invalid(source, firstLine(check.error)));
    }
    // Known without the variables' values (a dyn one is found per evaluation).
    const type = String((check as { type?: unknown }).type ?? "dyn");
    if (options.returns === "bool" && type !== "bool" && type !== "dyn") {
      throw new ExpressionError(invalid(source, `must return a bool, returns ${type}`));
    }
    ast = (parsed as { ast?: unknown }).ast;
    if (worstCase(ast) > MAX_EVALUATION_COST) {
      throw new ExpressionError(
        invalid(
          source,
          `its macros over literal lists may take more than ${MAX_EVALUATION_COST} steps, the budget of one evaluation`,
        ),
      );
    }
    const run = parsed as unknown as (context: Record<string, unknown>) => unknown;
    // Nothing charged: no loop, nothing that builds a value of any size (`a * 2 > 1.0`) and no
    // `matches()`, which charges its own budget.
    const charged = chargeNodes(ast) > 0;
    checkIntConversions(ast);
    checkIntegerEdges(ast);
    checkStringMethods(ast);
    checkMapKeys(ast);
    evaluate = charged || callsMatches(ast) ? withBudget(run) : run;
  } catch (error) {
    if (error instanceof ExpressionError) throw error;
    // The parser's own recursion (a long run of `!` or `-`, which it does not count as depth).
    if (error instanceof RangeError) throw new ExpressionError(tooDeep(source), { cause: error });
    if (error instanceof PatternError) {
      throw new ExpressionError(invalid(source, error.message), {
        cause: error,
      });
    }
    throw new ExpressionError(invalid(source, firstLine(error)), {
      cause: error,
    });
  }
  // The common expressions skip the interpreter (see cel_fast.ts); the rest, and every case
  // without a plain answer, are the interpreter's.
  const fast = compileFastPath(ast, variables);
  if (!fast) return (context) => evaluate(context);
  return (context) => {
    const value = fast(context);
    return value === FALLBACK ? evaluate(context) : value;
  };
}

/**
 * Error text of a failed evaluation, first line only (CEL adds a source excerpt), within the
 * bounds of other client input: what it quotes of an event (`No such key: …` of a key read from
 * it) is not echoed whole. A budget's message ({@linkcode EvaluationBudgetError}) is edgestream's
 * own, its figures the reason: whole.
 */
export function evaluationMessage(error: unknown): string {
  // The budget's own messages quote nothing of the event and say their figures: whole.
  return error instanceof EvaluationBudgetError ? firstLine(error) : quoteInput(firstLine(error));
}

/**
 * Why a result that must say yes or no (a filter's, a condition's) cannot, or
 * null for a bool: `${what} must return a bool, got number` (null as `null`).
 * A type known without the variables is refused when compiled (`returns: "bool"`);
 * this one is known per evaluation (`event.amount`, `data.value`).
 *
 * @example
 * ```ts
 * import { notBoolReason } from "./cel.ts";
 *
 * notBoolReason("The filter", 1); // "The filter must return a bool, got number"
 * notBoolReason("The filter", true); // null
 * ```
 */
export function notBoolReason(what: string, result: unknown): string | null {
  if (typeof result === "boolean") return null;
  return `${what} must return a bool, got ${result === null ? "null" : typeof result}`;
}

/**
 * `bytes` in base64, read a slice at a time: spread whole as arguments, bytes of about 125,000 or
 * more (`bytes(event.s + event.s)` of a 64 KiB event) overflowed the stack, so the event was
 * rejected with `Maximum call stack size exceeded`, at a length that depends on the stack.
 */
function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 8192) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 8192));
  }
  return btoa(binary);
}

/**
 * A bound on what {@linkcode toJson} writes: bytes of compact JSON in UTF-8, as `JSON.stringify`
 * writes the result, that are left; one budget may be passed to several calls, which spend it
 * together.
 */
export interface JsonBudget {
  left: number;
}

/** {@linkcode toJson} was past its {@linkcode JsonBudget}: it stopped there, returning nothing. */
export class JsonBudgetError extends Error {
  constructor() {
    super("The value is over its JSON budget");
    this.name = "JsonBudgetError";
  }
}

/** Takes `bytes` from `budget`, throwing once past it. */
function spend(budget: JsonBudget | undefined, bytes: number): void {
  if (budget === undefined) return;
  budget.left -= bytes;
  if (budget.left < 0) throw new JsonBudgetError();
}

/** Characters a JSON string writes as more than one byte each: escaped, or past ASCII. */
// deno-lint-ignore no-control-regex -- control characters are escaped: more than one byte each
const NOT_ONE_BYTE = /["\\\u0000-\u001f\u0080-\uffff]/;

/**
 * Bytes of `text` as a JSON string in UTF-8, quotes and escapes included; once past `limit`, some
 * number past it (the rest is not read).
 */
function stringBytes(text: string, limit: number): number {
  // Each character is one byte or more: a text longer than the limit is past it, and one of ASCII
  // needing no escape is its length (one native scan, not a loop in JavaScript).
  if (text.length + 2 > limit || !NOT_ONE_BYTE.test(text)) return text.length + 2;
  let bytes = 2;
  for (let i = 0; i < text.length && bytes <= limit; i++) {
    const code = text.charCodeAt(i);
    if (code < 0x20) {
      bytes += code === 8 || code === 9 || code === 10 || code === 12 || code === 13 ? 2 : 6;
    } else if (code === 0x22 || code === 0x5c) bytes += 2;
    else if (code < 0x80) bytes += 1;
    else if (code < 0x800) bytes += 2;
    else if (code >= 0xd800 && code <= 0xdbff && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 4;
      i++;
    } else if (code >= 0xd800 && code <= 0xdfff) bytes += 6; // A lone surrogate: `\udXXX`.
    else bytes += 3;
  }
  return bytes;
}

/** Spends a JSON string's bytes (see {@linkcode stringBytes}) and returns it. */
function spentString(text: string, budget: JsonBudget | undefined): string {
  if (budget !== undefined) spend(budget, stringBytes(text, budget.left));
  return text;
}

/**
 * Converts a CEL result to plain JSON: `bigint` and `uint` to number, `Date`
 * to ISO text, `Map` to object. Throws when an integer does not fit a JSON
 * number, and for values with no JSON form (durations, types). With a `budget`,
 * spends the bytes of the JSON it writes as it writes them and throws
 * {@linkcode JsonBudgetError} once past it: a value referencing one list or map
 * many times is copied only up to the budget, not once per reference.
 */
export function toJson(value: unknown, budget?: JsonBudget): unknown {
  // What most expressions give (a comparison, a field read), answered before the other checks.
  if (typeof value === "boolean") {
    spend(budget, value ? 4 : 5);
    return value;
  }
  if (typeof value === "string") return spentString(value, budget);
  if (value === null) {
    spend(budget, 4);
    return value;
  }
  if (typeof value === "bigint") {
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new RangeError(`Integer ${value} is outside the safe JSON range`);
    }
    return toJson(Number(value), budget);
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new RangeError(`Number ${value} is not finite`);
    if (budget !== undefined) spend(budget, String(value).length);
    return value;
  }
  if (value instanceof Date) return spentString(value.toISOString(), budget);
  if (value instanceof Uint8Array) {
    spend(budget, 4 * Math.ceil(value.length / 3) + 2); // Its base64, before it is written.
    return base64(value);
  }
  if (Array.isArray(value)) {
    spend(budget, value.length === 0 ? 2 : 1 + value.length); // Brackets and commas.
    return value.map((item) => toJson(item, budget));
  }
  if (value instanceof Map) {
    spend(budget, value.size === 0 ? 2 : 1 + value.size); // Braces and commas.
    const out: Record<string, unknown> = {};
    for (const [key, item] of value) {
      const name = spentString(String(key), budget);
      spend(budget, 1); // The colon.
      out[name] = toJson(item, budget);
    }
    return out;
  }
  if (value !== null && typeof value === "object") {
    const prototype = Object.getPrototypeOf(value);
    if (prototype !== Object.prototype && prototype !== null) {
      // CEL's uint, duration and type values are class instances with no own
      // fields: copying their entries would store `{}`.
      const primitive = value.valueOf();
      if (typeof primitive === "bigint") return toJson(primitive, budget);
      throw new TypeError(`A CEL ${value.constructor.name} value cannot be stored as JSON`);
    }
    // Each field read as it is written: with a budget, only up to it.
    const keys = Object.keys(value);
    spend(budget, keys.length === 0 ? 2 : 1 + keys.length); // Braces and commas.
    const out: Record<string, unknown> = {};
    for (const key of keys) {
      spentString(key, budget);
      spend(budget, 1); // The colon.
      out[key] = toJson((value as Record<string, unknown>)[key], budget);
    }
    return out;
  }
  return value;
}
