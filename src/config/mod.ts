/**
 * Configuration: streams declared as data, checked by a zod schema and
 * compiled once at startup.
 *
 * @module
 */
export * from "./duration.ts";
export * from "./schema.ts";
export * from "./compile.ts";
export * from "./registry.ts";
export * from "./lookup_budget.ts";
export * from "./final.ts";
