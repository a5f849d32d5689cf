/**
 * Window stage: window math, aggregate state and what each event adds to
 * each counter.
 *
 * @module
 */
export * from "./spec.ts";
export * from "./assign.ts";
export * from "./aggregate.ts";
export * from "./fields.ts";
export * from "./counter.ts";
