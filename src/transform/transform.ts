/**
 * Declarative transforms: ordered `filter`, `set`, `rename`, `drop` and
 * `pick` steps, compiled once into one function.
 *
 * @module
 */
import type { TransformStep } from "./schema.ts";
import type { Event } from "../validate/mod.ts";
import { compileExpression, evaluationMessage, ExpressionError, toJson } from "./cel.ts";

/** A transform failed on one event; `path` names the step. */
export class TransformError extends Error {
  /** Which step failed, e.g. `transform[0].filter`. */
  readonly path: string;
  constructor(path: string, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TransformError";
    this.path = path;
  }
}

/** A compiled transform: the new event, or null when a filter dropped it. */
export type Transform = (event: Event) => Event | null;

type Step = (event: Event) => Event | null;

function compileStep(step: TransformStep, index: number): Step {
  const at = `transform[${index}]`;
  if ("filter" in step) {
    const filter = compile(step.filter, `${at}.filter`);
    // One activation reused for every event (evaluation is synchronous): no object per event.
    const context: { event: Event | null } = { event: null };
    return (event) => {
      let result;
      context.event = event;
      try {
        result = filter(context);
      } catch (error) {
        throw failed(error, `${at}.filter`);
      } finally {
        context.event = null;
      }
      if (typeof result !== "boolean") {
        throw new TransformError(
          `${at}.filter`,
          `Filter must return a bool, got ${typeof result}`,
        );
      }
      return result ? event : null;
    };
  }
  if ("set" in step) {
    const fields = Object.entries(step.set).map(([field, source]) =>
      [field, compile(source, `${at}.set.${field}`)] as const
    );
    const context: { event: Event | null } = { event: null };
    return (event) => {
      const out: Event = { ...event };
      context.event = event;
      try {
        for (let i = 0; i < fields.length; i++) {
          const [field, expression] = fields[i];
          // Every expression sees the event as it was before this step.
          try {
            out[field] = toJson(expression(context));
          } catch (error) {
            throw failed(error, `${at}.set.${field}`);
          }
        }
      } finally {
        context.event = null;
      }
      return out;
    };
  }
  if ("rename" in step) {
    const pairs = Object.entries(step.rename);
    return (event) => {
      const out: Event = { ...event };
      for (const [from] of pairs) delete out[from];
      for (const [from, to] of pairs) if (Object.hasOwn(event, from)) out[to] = event[from];
      return out;
    };
  }
  if ("drop" in step) {
    const fields = step.drop;
    return (event) => {
      const out: Event = { ...event };
      for (const field of fields) delete out[field];
      return out;
    };
  }
  const fields = step.pick;
  return (event) => {
    const out: Event = {};
    for (const field of fields) if (Object.hasOwn(event, field)) out[field] = event[field];
    return out;
  };
}

function compile(source: string, path: string) {
  try {
    return compileExpression(source, ["event"]);
  } catch (error) {
    if (error instanceof ExpressionError) {
      throw new ExpressionError(`${path}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/** The error of an expression that failed at `path` (try/catch inline: no closure per event). */
function failed(error: unknown, path: string): TransformError {
  return new TransformError(path, `Expression failed: ${evaluationMessage(error)}`, {
    cause: error,
  });
}

/**
 * Compiles transform steps into one function. Throws {@linkcode ExpressionError}
 * at load time for a bad expression.
 *
 * @example
 * ```ts
 * const transform = compileTransform([{ filter: "event.amount > 0.0" }, { drop: ["debug"] }]);
 * transform({ amount: 5, debug: true }); // { amount: 5 }
 * ```
 */
export function compileTransform(steps: readonly TransformStep[]): Transform {
  const compiled = steps.map(compileStep);
  if (compiled.length === 0) return (event) => event;
  return (event) => {
    let current: Event | null = event;
    for (const step of compiled) {
      current = step(current);
      if (current === null) return null;
    }
    return current;
  };
}
