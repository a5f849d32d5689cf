/**
 * Declarative transforms: ordered `filter`, `set`, `rename`, `drop` and
 * `pick` steps, compiled once into one function.
 *
 * @module
 */
import type { TransformStep } from "./schema.ts";
import type { Event } from "../validate/mod.ts";
import {
  compileExpression,
  type CompileExpressionOptions,
  evaluationMessage,
  ExpressionError,
  type JsonBudget,
  JsonBudgetError,
  notBoolReason,
  type RequestPatternBudget,
  toJson,
  withRequestPatterns,
} from "./cel.ts";

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

/** Options of one call of a {@linkcode Transform}. */
export interface TransformCallOptions {
  /**
   * The event is the caller's to change, nothing else holds it: `set` writes its fields into it
   * rather than into a copy (a failed `set` writes nothing). @default {false}
   */
  inPlace?: boolean;
  /**
   * The request's budget for compiling the patterns `matches()` takes from its events, shared by
   * its events in order (see {@linkcode RequestPatternBudget}). @default {none: each evaluation's
   * own budget alone}
   */
  patterns?: RequestPatternBudget;
}

/**
 * A compiled transform: the new event, or null when a filter dropped it. The event given is left
 * as it was unless `inPlace` says it may change.
 */
export type Transform = (event: Event, options?: TransformCallOptions) => Event | null;

type Step = (event: Event, inPlace: boolean, written: JsonBudget) => Event | null;

/**
 * Most bytes the values one event's `set` steps write may take together, as compact JSON in UTF-8
 * (as an event sent is measured; a field written twice counts twice). Without it an expression over
 * an event's lists built events far larger than any sent, within its evaluation budget:
 * `event.items.map(i, {'item': i, 'order': event.order})` made a 62 KB event of 1,000 items 58 MB.
 */
export const MAX_SET_BYTES = 64 * 1024;

function compileStep(step: TransformStep, index: number, options: CompileTransformOptions): Step {
  const at = `transform[${index}]`;
  const { uncountedPatternClasses } = options;
  if ("filter" in step) {
    const filter = compile(step.filter, `${at}.filter`, {
      returns: "bool",
      uncountedPatternClasses,
    });
    // One activation reused for every event (evaluation is synchronous): no object per event.
    const context: { event: Event | null } = { event: null };
    const path = `${at}.filter`;
    return (event) => {
      const result = evaluated(filter, context, event, path);
      const notBool = notBoolReason("Filter", result);
      if (notBool !== null) throw new TransformError(path, notBool);
      return result ? event : null;
    };
  }
  if ("set" in step) {
    const fields = Object.entries(step.set).map(([field, source]) =>
      [field, compile(source, `${at}.set.${field}`, { uncountedPatternClasses })] as const
    );
    const context: { event: Event | null } = { event: null };
    if (fields.length === 1) {
      // One field, the common case: no list of values to fill and empty, no loops.
      const [[field, expression]] = fields;
      const path = `${at}.set.${field}`;
      return (event, inPlace, written) => {
        let value = evaluated(expression, context, event, path);
        try {
          value = toJson(value, written);
        } catch (error) {
          throw setFailed(error, path);
        }
        const out: Event = inPlace ? event : { ...event };
        out[field] = value;
        return out;
      };
    }
    // The values of one event, written once all are computed (evaluation is synchronous): every
    // expression sees the event as it was before this step, and a failed one changes nothing.
    const values: unknown[] = fields.map(() => undefined);
    return (event, inPlace, written) => {
      context.event = event;
      try {
        for (let i = 0; i < fields.length; i++) {
          try {
            values[i] = fields[i][1](context);
          } catch (error) {
            values.fill(undefined);
            throw failed(error, `${at}.set.${fields[i][0]}`);
          }
        }
      } finally {
        context.event = null;
      }
      // Each value converted within what is left of the event's budget: a value referenced many
      // times (one order in each of 1,000 items) is copied until the bound, not once per reference.
      for (let i = 0; i < fields.length; i++) {
        try {
          values[i] = toJson(values[i], written);
        } catch (error) {
          values.fill(undefined);
          throw setFailed(error, `${at}.set.${fields[i][0]}`);
        }
      }
      // In place: one object fewer per event on the ingest path.
      const out: Event = inPlace ? event : { ...event };
      for (let i = 0; i < fields.length; i++) {
        out[fields[i][0]] = values[i];
        values[i] = undefined;
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

function compile(source: string, path: string, options: CompileExpressionOptions) {
  try {
    return compileExpression(source, ["event"], options);
  } catch (error) {
    if (error instanceof ExpressionError) {
      throw new ExpressionError(`${path}: ${error.message}`, { cause: error });
    }
    throw error;
  }
}

/**
 * `expression`'s value for `event`, evaluated with `context`, the step's one activation reused for
 * every event (evaluation is synchronous: no object per event), emptied again after; a failure is
 * the {@linkcode TransformError} of `path`.
 */
function evaluated(
  expression: (context: { event: Event | null }) => unknown,
  context: { event: Event | null },
  event: Event,
  path: string,
): unknown {
  context.event = event;
  try {
    return expression(context);
  } catch (error) {
    throw failed(error, path);
  } finally {
    context.event = null;
  }
}

/** The error of an expression that failed at `path` (try/catch inline: no closure per event). */
function failed(error: unknown, path: string): TransformError {
  return new TransformError(path, `Expression failed: ${evaluationMessage(error)}`, {
    cause: error,
  });
}

/** The error of a value a `set` step could not write at `path`: past the budget, or no JSON. */
function setFailed(error: unknown, path: string): TransformError {
  if (error instanceof JsonBudgetError) {
    return new TransformError(
      path,
      `Values set in one event are over ${MAX_SET_BYTES} bytes (compact JSON in UTF-8) together`,
    );
  }
  return failed(error, path);
}

/** Options for {@linkcode compileTransform}. */
export interface CompileTransformOptions {
  /**
   * Count each expression's literal patterns without their classes' ranges, as
   * {@linkcode CompileExpressionOptions.uncountedPatternClasses} says. @default {false}
   */
  uncountedPatternClasses?: boolean;
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
export function compileTransform(
  steps: readonly TransformStep[],
  options: CompileTransformOptions = {},
): Transform {
  const run = transformOf(steps, options);
  if (steps.length === 0) return run;
  return (event, options) =>
    options?.patterns === undefined
      ? run(event, options)
      : withRequestPatterns(options.patterns, run, event, options);
}

/** {@linkcode compileTransform}'s steps, without a request's pattern budget. */
function transformOf(
  steps: readonly TransformStep[],
  options: CompileTransformOptions,
): Transform {
  const compiled = steps.map((step, index) => compileStep(step, index, options));
  if (compiled.length === 0) return (event) => event;
  // One count reused for every event (a transform runs synchronously): no object per event.
  const written: JsonBudget = { left: MAX_SET_BYTES };
  // One or two steps (a filter and a set), the common cases, each called from a call site of its
  // own rather than from one loop that calls every kind of step. The loop below is the reference:
  // these two bodies are it unrolled for one and two steps, and say nothing it does not.
  if (compiled.length === 1) {
    const [only] = compiled;
    return (event, options) => {
      written.left = MAX_SET_BYTES;
      return only(event, options?.inPlace ?? false, written);
    };
  }
  if (compiled.length === 2) {
    const [first, second] = compiled;
    return (event, options) => {
      written.left = MAX_SET_BYTES;
      const inPlace = options?.inPlace ?? false;
      const next = first(event, inPlace, written);
      if (next === null) return null;
      return second(next, inPlace || next !== event, written);
    };
  }
  return (event, options) => {
    written.left = MAX_SET_BYTES;
    let current: Event | null = event;
    // After a copying step the copy is this transform's own: later steps may write into it.
    let inPlace = options?.inPlace ?? false;
    for (const step of compiled) {
      const next: Event | null = step(current, inPlace, written);
      if (next === null) return null;
      if (next !== current) inPlace = true;
      current = next;
    }
    return current;
  };
}
