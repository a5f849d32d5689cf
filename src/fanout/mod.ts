/**
 * Fan-out stage: what leaves edgestream after the store applied a batch.
 *
 * @module
 */
export * from "./sweep.ts";
export * from "./live.ts";
export * from "./payload.ts";
export * from "./types.ts";
