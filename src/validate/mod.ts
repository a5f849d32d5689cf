/**
 * Validate stage: structural limits, the stream's JSON Schema (compiled to
 * zod), users' patterns matched in linear time, and the one way instants are read.
 *
 * @module
 */
export * from "./event.ts";
export {
  type CheckVerdict,
  MAX_REQUEST_SCHEMA_CHECKS,
  RequestCheckBudget,
  type RequestCheckBudgetOptions,
} from "./_check_budget.ts";
export { jsonErrorIndex, type JsonSyntaxProblem, jsonSyntaxProblem } from "./json_error.ts";
export {
  chargeCompiling,
  chargeTest,
  checkPatternSize,
  COMPILE_COST,
  type CompiledPattern,
  compileLinearPattern,
  type CompileLinearPatternOptions,
  endMatchingBudget,
  type LinearPattern,
  MAX_EVENT_MATCHING_COST,
  MAX_PATTERN_SIZE,
  PatternBudgetError,
  patternCompileSize,
  PatternError,
  patternSize,
  RANGES_PER_INSTRUCTION,
  SOURCE_CHARACTERS_PER_INSTRUCTION,
  startMatchingBudget,
  withOversizedPatterns,
} from "./linear_regexp.ts";
export { HOST_NAME, ORIGIN_RULE, webOrigin, withoutCredentials } from "./origin.ts";
export { editDistance, nearestName } from "./nearest.ts";
export { meantKey, objectKeysAt } from "./object_keys.ts";
export * from "./quote.ts";
export * from "./time.ts";
