/**
 * Transform stage: filters and computed fields, declared as data and
 * compiled once (CEL expressions via `@marcbachmann/cel-js`).
 *
 * @module
 */
export * from "./cel.ts";
export * from "./transform.ts";
export * from "./schema.ts";
