/**
 * Validate stage: structural limits, the stream's JSON Schema (compiled to
 * zod), and the one way instants are read.
 *
 * @module
 */
export * from "./event.ts";
export * from "./time.ts";
