/**
 * A fast path for the CEL expressions transforms use most: field reads,
 * `has()`, `!`, `&&`, `||`, and comparisons of numbers, strings, booleans
 * and null. It is compiled from the parsed expression into plain closures,
 * which run an order of magnitude faster than walking the tree.
 *
 * It is exact by construction rather than by imitation: it answers only
 * where the answer is plain (a field that is there, operands of one of the
 * simple types) and otherwise returns {@linkcode FALLBACK}, on which the
 * caller runs the CEL interpreter, which then produces the result or the
 * error CEL specifies. An expression with any other construct gets no fast
 * path at all. `tests/transform/cel_fast_test.ts` checks it against the
 * interpreter on generated expressions and events.
 *
 * @module
 */

/** Returned when the fast path has no plain answer: evaluate with the interpreter. */
export const FALLBACK: unique symbol = Symbol("cel fallback");

/** A fast evaluation: the value, or {@linkcode FALLBACK}. */
export type FastExpression = (variables: Record<string, unknown>) => unknown;

/** A node of `@marcbachmann/cel-js`'s parsed tree, as far as the fast path reads it. */
interface Node {
  op: string;
  args: unknown;
}

type Step = (variables: Record<string, unknown>) => unknown;

function isNode(value: unknown): value is Node {
  return typeof value === "object" && value !== null && typeof (value as Node).op === "string";
}

function isMap(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Whether `a op b` has a plain answer: two numbers, two strings (equality), two booleans, two nulls. */
function plainEquality(a: unknown, b: unknown): boolean {
  if (a === null || b === null) return a === b;
  const kind = typeof a;
  return (kind === "number" || kind === "string" || kind === "boolean") && typeof b === kind;
}

const COMPARE: Record<string, (a: number, b: number) => boolean> = {
  "<": (a, b) => a < b,
  "<=": (a, b) => a <= b,
  ">": (a, b) => a > b,
  ">=": (a, b) => a >= b,
};

/**
 * An operand of a comparison: an int literal CEL compares with doubles by value, so within the
 * integers a double holds exactly it is that number here.
 */
function compileOperand(node: unknown, variables: ReadonlySet<string>): Step | null {
  if (isNode(node) && node.op === "value" && typeof node.args === "bigint") {
    const value = Number(node.args);
    return Number.isSafeInteger(value) ? () => value : () => FALLBACK;
  }
  return compileNode(node, variables);
}

/** The two operands of a binary node, each compiled with `compile`, or null. */
function compilePair(
  args: unknown,
  variables: ReadonlySet<string>,
  compile: (node: unknown, variables: ReadonlySet<string>) => Step | null,
): [Step, Step] | null {
  if (!Array.isArray(args) || args.length !== 2) return null;
  const left = compile(args[0], variables);
  const right = compile(args[1], variables);
  return left && right ? [left, right] : null;
}

function compileNode(node: unknown, variables: ReadonlySet<string>): Step | null {
  if (!isNode(node)) return null;
  const { op, args } = node;
  switch (op) {
    case "value": {
      // Doubles, strings, booleans and null; an int literal (a bigint) only through FALLBACK.
      const value = args;
      if (typeof value === "bigint") return () => FALLBACK;
      if (
        value === null || typeof value === "number" || typeof value === "string" ||
        typeof value === "boolean"
      ) return () => value;
      return null;
    }
    case "id": {
      if (typeof args !== "string" || !variables.has(args)) return null;
      const name = args;
      return (context) => context[name];
    }
    case ".":
    case "[]": {
      if (!Array.isArray(args) || args.length !== 2) return null;
      const [target, key] = args;
      const name = op === "." ? key : isNode(key) && key.op === "value" ? key.args : undefined;
      if (typeof name !== "string") return null;
      const read = compileNode(target, variables);
      if (!read) return null;
      // Whether Object.prototype has `name` (`toString`, `constructor`): known from `name` alone.
      const inherited = name in Object.prototype;
      // A missing field is CEL's error: the interpreter raises it.
      return (context) => {
        const object = read(context);
        if (!isMap(object)) return FALLBACK;
        const value = object[name];
        // Found on an object whose only prototype is Object.prototype, which lacks it: its own
        // (one load, where `Object.hasOwn` is a lookup of its own). Anything else is asked.
        if (
          value !== undefined && !inherited && Object.getPrototypeOf(object) === Object.prototype
        ) return value;
        return Object.hasOwn(object, name) ? value : FALLBACK;
      };
    }
    case "call": {
      if (!Array.isArray(args) || args[0] !== "has" || !Array.isArray(args[1])) return null;
      const [field] = args[1] as unknown[];
      if (args[1].length !== 1 || !isNode(field) || field.op !== ".") return null;
      const [target, name] = field.args as [unknown, unknown];
      if (typeof name !== "string") return null;
      const read = compileNode(target, variables);
      if (!read) return null;
      return (context) => {
        const object = read(context);
        // Not in the object nor its prototypes (one load), or else asked whether it is its own.
        return isMap(object) ? name in object && Object.hasOwn(object, name) : FALLBACK;
      };
    }
    case "!_": {
      const operand = compileNode(args, variables);
      if (!operand) return null;
      return (context) => {
        const value = operand(context);
        return typeof value === "boolean" ? !value : FALLBACK;
      };
    }
    case "&&":
    case "||": {
      const pair = compilePair(args, variables, compileNode);
      if (!pair) return null;
      const [left, right] = pair;
      // The left operand decides alone only when it is the absorbing value.
      const decisive = op === "||";
      return (context) => {
        const a = left(context);
        if (typeof a !== "boolean") return FALLBACK;
        if (a === decisive) return a;
        const b = right(context);
        return typeof b === "boolean" ? b : FALLBACK;
      };
    }
    case "==":
    case "!=": {
      const pair = compilePair(args, variables, compileOperand);
      if (!pair) return null;
      const [left, right] = pair;
      const equal = op === "==";
      return (context) => {
        const a = left(context);
        if (a === FALLBACK) return FALLBACK;
        const b = right(context);
        if (b === FALLBACK || !plainEquality(a, b)) return FALLBACK;
        return (a === b) === equal;
      };
    }
    case "<":
    case "<=":
    case ">":
    case ">=": {
      const pair = compilePair(args, variables, compileOperand);
      if (!pair) return null;
      const [left, right] = pair;
      const compare = COMPARE[op];
      return (context) => {
        const a = left(context);
        if (typeof a !== "number") return FALLBACK;
        const b = right(context);
        return typeof b === "number" ? compare(a, b) : FALLBACK;
      };
    }
  }
  return null;
}

/**
 * The fast path of a parsed expression (its `ast`), or null when it uses
 * anything the fast path does not know. Its results are plain values
 * (numbers, strings, booleans, null) or {@linkcode FALLBACK}.
 */
export function compileFastPath(ast: unknown, variables: readonly string[]): FastExpression | null {
  const step = compileNode(ast, new Set(variables));
  if (!step) return null;
  return (context) => {
    const value = step(context);
    // An object or list result is the interpreter's to convert.
    return typeof value === "object" && value !== null ? FALLBACK : value;
  };
}
