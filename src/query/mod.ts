/**
 * Query side: counters read back from the store.
 *
 * @module
 */
export * from "./counters.ts";
export * from "./top.ts";
export * from "./sessions.ts";
