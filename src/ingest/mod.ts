/**
 * Ingest stage: body reading and the pipeline every transport shares.
 *
 * @module
 */
export * from "./body.ts";
export * from "./pipeline.ts";
export * from "./ws.ts";
