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

/**
 * The ingest path with any one segment for the stream, a name or not (`a.b`): a page's POST to one
 * whose segment is no name waits for its route like any other, whose name check answers it `400`
 * as it answers a request without `Origin`, and not the Origin policy's `403` telling to list the
 * page's origin (which would change nothing).
 */
const INGEST_ANY_NAME = /^\/v1\/streams\/[^/]+\/events$/;

/**
 * The WebSocket ingest route's path with any one segment for the stream, as
 * {@linkcode INGEST_ANY_NAME}: an upgrade to one whose segment is no name waits for its route,
 * which answers it the name's `400` once the key is verified (a foreign page without a valid key
 * its `403` there), as it does for a name.
 */
const INGEST_SOCKET_ANY_NAME = /^\/v1\/streams\/[^/]+\/ws$/;

/**
 * Whether `request` is an ingest request (for any stream segment) or a WebSocket ingest upgrade:
 * the requests whose `Origin` may be admitted by their key's or their stream's `origins`, which
 * only the route knows.
 */
export function admitsListedOrigins(request: Request): boolean {
  // One test, as for a stream name: asked only of a request the Origin policy refuses.
  const method = request.method;
  return (method === "POST" && INGEST_ANY_NAME.test(getPath(request))) ||
    (method === "GET" && INGEST_SOCKET_ANY_NAME.test(getPath(request)));
}
