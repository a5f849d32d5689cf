/**
 * The schema of a transform step as written in a stream definition. It
 * belongs to the transform stage (which compiles the steps); the config
 * schema embeds it.
 *
 * @module
 */
import { z } from "zod";
import { MAX_EXPRESSION_LENGTH } from "./cel.ts";

/** A CEL expression's text as a definition holds one (compiled by `compileExpression`). */
export const expressionText = z.string().min(1).max(MAX_EXPRESSION_LENGTH);

const FORBIDDEN_KEYS = ["__proto__", "constructor", "prototype"];
/** A top-level event field written by a transform. */
const fieldName = z.string().min(1).max(256).refine(
  (key) => !FORBIDDEN_KEYS.includes(key),
  { error: (issue) => `Field name '${String(issue.input)}' is not allowed` },
);

/** One transform step: filter, set, rename, drop or pick. */
export const transformStep = z.union([
  z.strictObject({ filter: expressionText }),
  z.strictObject({ set: z.record(fieldName, expressionText) }),
  z.strictObject({ rename: z.record(fieldName, fieldName) }),
  z.strictObject({ drop: z.array(fieldName) }),
  z.strictObject({ pick: z.array(fieldName) }),
], { error: "Transform step must be one of {filter}, {set}, {rename}, {drop}, {pick}" });

/** A transform step as written. */
export type TransformStep = z.output<typeof transformStep>;
