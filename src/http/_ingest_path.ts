/**
 * Which requests are ingest requests (`POST /v1/streams/{stream}/events`), for the middleware
 * and the error answers that treat them apart.
 *
 * @module
 */
import { getPath } from "hono/utils/url";

/** The ingest route's path, for the stream names a route accepts. */
const INGEST_PATH = /^\/v1\/streams\/[A-Za-z0-9_-]{1,64}\/events$/;

/** Whether `request` is an ingest request. */
export function isIngestRequest(request: Request): boolean {
  // Hono's own path reading: a full URL parse costs more than the test.
  return request.method === "POST" && INGEST_PATH.test(getPath(request));
}
