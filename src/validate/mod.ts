/**
 * Validate stage: structural limits and the stream's JSON Schema (compiled to zod).
 *
 * @module
 */
export * from "./event.ts";
