/**
 * Ingest stage: the transport-free pipeline every transport (HTTP, WebSocket)
 * shares, from a parsed body to one atomic store apply.
 *
 * @module
 */
export * from "./pipeline.ts";
export * from "./group_commit.ts";
export * from "./rejected_counts.ts";
