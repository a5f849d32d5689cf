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

/** The WebSocket ingest route's path. */
const INGEST_SOCKET_PATH = /^\/v1\/streams\/[A-Za-z0-9_-]{1,64}\/ws$/;

/**
 * Whether `request` is an ingest request or a WebSocket ingest upgrade: the requests whose
 * `Origin` may be admitted by their key's or their stream's `origins`, which only the route
 * knows.
 */
export function admitsListedOrigins(request: Request): boolean {
  return isIngestRequest(request) ||
    (request.method === "GET" && INGEST_SOCKET_PATH.test(getPath(request)));
}
