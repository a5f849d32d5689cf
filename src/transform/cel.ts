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
import { compileLinearPattern, type LinearPattern, PatternError } from "../validate/mod.ts";
import { compileFastPath, FALLBACK } from "./cel_fast.ts";

/**
 * How deep an expression's syntax tree may nest: compiling and evaluating
 * it recurse once a level, so a deeper one could exhaust the stack, or not,
 * depending on what else is on it. cel-js's own parse limit is 250, but a
 * run of unary operators escapes it.
 */
export const MAX_EXPRESSION_DEPTH = 250;

/** How many characters an expression may have, wherever it is given (definitions, webhooks, URLs). */
export const MAX_EXPRESSION_LENGTH = 4096;

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
 * Patterns compiled for `matches`, by source: at most 256, each at most 256 characters (a
 * compiled pattern takes about 60 bytes a character; one from an event may be long), cleared
 * when full. A longer one is compiled for its call alone.
 */
const linearPatterns = new Map<string, LinearPattern>();
const MAX_CACHED_PATTERNS = 256;
const MAX_CACHED_PATTERN_LENGTH = 256;

function linearMatches(text: string, pattern: string): boolean {
  let compiled = linearPatterns.get(pattern);
  if (!compiled) {
    try {
      compiled = compileLinearPattern(pattern);
    } catch (error) {
      throw new EvaluationError((error as Error).message);
    }
    if (pattern.length <= MAX_CACHED_PATTERN_LENGTH) {
      if (linearPatterns.size >= MAX_CACHED_PATTERNS) linearPatterns.clear();
      linearPatterns.set(pattern, compiled);
    }
  }
  return compiled.test(text);
}

/** A message with the renamed `matches` (see {@linkcode LINEAR_MATCHES}) named as written. */
function asWritten(message: string): string {
  return message.replaceAll(LINEAR_MATCHES, "matches");
}

/**
 * Renames every `<string>.matches(<pattern>)` (and `matches(<string>, <pattern>)`) call in a
 * parsed expression to
 * {@linkcode LINEAR_MATCHES}, and compiles a literal pattern now, so a bad one is refused with
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
    args[0] = LINEAR_MATCHES;
    // `text.matches(pattern)` has its arguments third, `matches(text, pattern)` second.
    const list = method ? args[2] : args[1];
    const pattern = Array.isArray(list) ? list[method ? 0 : 1] : undefined;
    const literal = pattern as { op?: unknown; args?: unknown } | undefined;
    if (literal?.op === "value" && typeof literal.args === "string") {
      compileLinearPattern(literal.args);
    }
  }
  if (typeof args === "object" && args !== null) useLinearMatches(args);
}

function environmentFor(variables: readonly string[]): Environment {
  const key = variables.join(",");
  let env = environments.get(key);
  if (!env) {
    env = new Environment({ homogeneousAggregateLiterals: false });
    registerMixedArithmetic(env);
    env.registerFunction(`string.${LINEAR_MATCHES}(string): bool`, linearMatches);
    env.registerFunction(`${LINEAR_MATCHES}(string, string): bool`, linearMatches);
    for (const name of variables) env.registerVariable(name, "dyn");
    environments.set(key, env);
  }
  return env;
}

function tooDeep(source: string): string {
  return `Invalid expression '${source}': nests deeper than ${MAX_EXPRESSION_DEPTH} levels`;
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

function firstLine(error: unknown): string {
  return asWritten((error instanceof Error ? error.message : String(error)).split("\n")[0]);
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
  options: {
    /** A filter or condition: refused when its type is known and another (`1 + 1`). */
    returns?: "bool";
  } = {},
): CompiledExpression {
  // Its source is not echoed: a URL's `?filter=` may be of any length.
  if (source.length > MAX_EXPRESSION_LENGTH) {
    throw new ExpressionError(
      `Expression is ${source.length} characters; the limit is ${MAX_EXPRESSION_LENGTH}`,
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
    useLinearMatches((parsed as { ast?: unknown }).ast);
    const check = parsed.check();
    if (!check.valid) {
      throw new ExpressionError(`Invalid expression '${source}': ${firstLine(check.error)}`);
    }
    // Known without the variables' values (a dyn one is found per evaluation).
    const type = String((check as { type?: unknown }).type ?? "dyn");
    if (options.returns === "bool" && type !== "bool" && type !== "dyn") {
      throw new ExpressionError(
        `Invalid expression '${source}': must return a bool, returns ${type}`,
      );
    }
    evaluate = parsed as unknown as (context: Record<string, unknown>) => unknown;
    ast = (parsed as { ast?: unknown }).ast;
  } catch (error) {
    if (error instanceof ExpressionError) throw error;
    // The parser's own recursion (a long run of `!` or `-`, which it does not count as depth).
    if (error instanceof RangeError) throw new ExpressionError(tooDeep(source), { cause: error });
    if (error instanceof PatternError) {
      throw new ExpressionError(`Invalid expression '${source}': ${error.message}`, {
        cause: error,
      });
    }
    throw new ExpressionError(`Invalid expression '${source}': ${firstLine(error)}`, {
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

/** Error text of a failed evaluation, first line only (CEL adds a source excerpt). */
export function evaluationMessage(error: unknown): string {
  return firstLine(error);
}

/**
 * Converts a CEL result to plain JSON: `bigint` and `uint` to number, `Date`
 * to ISO text, `Map` to object. Throws when an integer does not fit a JSON
 * number, and for values with no JSON form (durations, types).
 */
export function toJson(value: unknown): unknown {
  // What most expressions give (a comparison, a field read), answered before the other checks.
  if (typeof value === "boolean" || typeof value === "string" || value === null) return value;
  if (typeof value === "bigint") {
    if (value > BigInt(Number.MAX_SAFE_INTEGER) || value < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw new RangeError(`Integer ${value} is outside the safe JSON range`);
    }
    return Number(value);
  }
  if (typeof value === "number") {
    if (!Number.isFinite(value)) throw new RangeError(`Number ${value} is not finite`);
    return value;
  }
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Uint8Array) return btoa(String.fromCharCode(...value));
  if (Array.isArray(value)) return value.map(toJson);
  if (value instanceof Map) {
    const out: Record<string, unknown> = {};
    for (const [key, item] of value) out[String(key)] = toJson(item);
    return out;
  }
  if (value !== null && typeof value === "object") {
    const prototype = Object.getPrototypeOf(value);
    if (prototype !== Object.prototype && prototype !== null) {
      // CEL's uint, duration and type values are class instances with no own
      // fields: copying their entries would store `{}`.
      const primitive = value.valueOf();
      if (typeof primitive === "bigint") return toJson(primitive);
      throw new TypeError(`A CEL ${value.constructor.name} value cannot be stored as JSON`);
    }
    const out: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) out[key] = toJson(item);
    return out;
  }
  return value;
}
