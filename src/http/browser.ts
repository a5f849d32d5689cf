/**
 * Ingest from web pages: keys and origins for `POST /v1/streams/{stream}/events`,
 * CORS, beacons and rate limits.
 *
 * **Which pages may send.** The Origin policy (`origin.ts`) refuses
 * cross-origin state changes from origins not in `EDGESTREAM_ALLOWED_ORIGINS`.
 * For ingest that verdict waits until the key is known: a cross-origin POST is
 * admitted when its `Origin` is in the key's `origins` or the stream's
 * `origins`, and refused (403 `origin_not_allowed`) otherwise, before anything
 * is read or applied. A publishable key (`pk_…`) is stricter: a request that
 * names an `Origin` must name one of the key's. An `Origin` check stops other
 * web pages, not scripts, which send any `Origin` they like or none: the rate
 * limit is what protects a publishable key.
 *
 * **CORS.** A preflight (`OPTIONS`) of the ingest path answers 204 and grants
 * whatever origin asks (`Access-Control-Allow-Origin`, the methods and the
 * request headers ingest reads: `authorization`, `content-type`,
 * `idempotency-key`, `x-request-id`), looking up neither the stream nor a
 * key: it carries no key, so its answer must be the same for a stream that
 * exists and one that does not (a grant by the stream's `origins` told both
 * that it exists and which pages it admits). The request that follows is
 * where an origin is refused, as above (a simple request, such as a beacon,
 * is never preflighted anyway). Ingest answers to an allowed origin carry
 * `Access-Control-Allow-Origin` and expose `Retry-After`, `RateLimit`,
 * `RateLimit-Policy`, `Idempotent-Replayed` and `X-Request-Id`. So does a
 * refused origin's `403 origin_not_allowed`, so its page (and `/sdk.js`) reads
 * why instead of taking it for a network error and retrying: the events are
 * refused either way, and a script reads the same 403 by sending any `Origin`.
 * An error answered before the origin is judged — the request's URL (400), its
 * key (401, 403 of its scope or streams), a look-up the store could not answer
 * (503) — carries them for any `Origin`: the origins that admit a page are the
 * key's, unknown until it is verified, and a page its key admits must read why
 * it failed and when to retry (`Retry-After`); such an answer tells a page
 * nothing about the stream or another key, and nothing its own key would not
 * tell a script.
 * A `421` (open mode's Host check) carries none: the host is not answered.
 *
 * **Beacons.** `navigator.sendBeacon` can send neither a header nor JSON
 * without a preflight, so a publishable key may come as `?key=pk_…` and its
 * body as `text/plain` holding JSON. Secret keys are refused in the URL
 * (URLs reach logs and traces), and `text/plain` is refused for them. In open
 * mode, where no key is publishable, `text/plain` is read as JSON when the
 * request carries an `Origin` (every beacon does, and the Origin rules judge
 * it); without one it is refused (415), as a request without an `Origin`
 * passes those rules and a browser may leave it off a cross-site
 * `<form enctype="text/plain">`. Only charset UTF-8 is taken.
 *
 * **Rate limits.** A stream's `limits` and a key's `rateLimit` are token
 * buckets in the stream's hash slot, counted per stream, checked and charged
 * in the same atomic apply as the events.
 *
 * @module
 */
import type { Context, MiddlewareHandler } from "hono";
import { type CompiledStream, lookUpStream } from "../config/mod.ts";
import type { IngestRateLimit } from "../ingest/mod.ts";
import {
  authorize,
  bearerKey,
  HEADER_PLACE,
  type KeyGrant,
  type KeyRing,
  oneKey,
  rememberGrant,
} from "./auth.ts";
import { grantOfRequest, isOpenGrant } from "./auth.ts";
import { type BodyFormat, bodyFormat } from "./body.ts";
import { ApiError, invalidNameParameter, NAME } from "./errors.ts";
import { PREFLIGHT_MAX_AGE } from "./cors.ts";
import { deferredOriginRefusal } from "./origin.ts";
import { listNames, quoteInput } from "../telemetry/logging.ts";

/** True for a POST to the ingest path, whose Origin verdict waits for the key. */
export { admitsListedOrigins, isIngestRequest } from "./_ingest_path.ts";

/** What to tell an ingest client that sent no key. */
const INGEST_HOW_TO_SEND =
  "send 'Authorization: Bearer <key>', or a publishable key as '?key=<pk_…>'";

/**
 * Request headers a page's ingest request may send: a compressed body's `content-encoding` (a
 * page compresses with `CompressionStream`), and the headers of OpenTelemetry's default
 * propagators, which a page's instrumentation adds to requests it propagates to: the W3C trace
 * context and `baggage` (read by no step here: `withoutInboundBaggage` drops it). Without one of
 * them its preflight fails, and so the request.
 */
const ALLOWED_HEADERS =
  "authorization, content-type, content-encoding, idempotency-key, x-request-id, traceparent, tracestate, baggage";

/** Response headers a page may read from an ingest answer. */
const EXPOSED_HEADERS =
  "Retry-After, RateLimit, RateLimit-Policy, Idempotent-Replayed, X-Request-Id";

const NO_RATE_LIMITS: readonly IngestRateLimit[] = Object.freeze([]);

/** The rate limits an ingest request into `stream` with `grant` must fit in. */
export function rateLimitsFor(
  stream: CompiledStream,
  grant?: KeyGrant,
): readonly IngestRateLimit[] {
  const own = stream.parsed.limits;
  // Most requests have none: no array of their own.
  if (!own && !(grant?.id && grant.rateLimit)) return NO_RATE_LIMITS;
  const limits: IngestRateLimit[] = [];
  if (own) {
    limits.push({
      key: "stream",
      limit: own.burst,
      windowMs: (own.burst * 1000) / own.eventsPerSecond,
      name: "stream",
      subject: `stream '${stream.name}'`,
    });
  }
  if (grant?.id && grant.rateLimit) {
    const { burst, eventsPerSecond } = grant.rateLimit;
    limits.push({
      key: `key:${grant.id}`,
      limit: burst,
      windowMs: (burst * 1000) / eventsPerSecond,
      name: "key",
      subject: `key '${grant.id}' on stream '${stream.name}'`,
    });
  }
  return limits;
}

/**
 * The body format of an ingest request: JSON or NDJSON by `Content-Type`,
 * and `text/plain` read as JSON for a publishable key (beacons), or in open mode, where no key
 * is publishable and a page's beacons would otherwise all be refused, when the request carries an
 * `Origin` (every beacon does). Without one it passes the Origin rules, so a cross-site
 * `<form enctype="text/plain">` whose browser left `Origin` off could post events there: 415.
 */
export function ingestBodyFormat(
  contentType: string | undefined,
  options: { grant?: KeyGrant; origin?: string } = {},
): BodyFormat {
  const { grant, origin } = options;
  const open = isOpenGrant(grant);
  const beacons = grant?.publishable === true || (open && origin !== undefined);
  return bodyFormat(contentType, {
    plainTextAsJson: beacons,
    alsoTaken: beacons
      ? "text/plain (JSON)"
      : open
      ? "text/plain (JSON) with an Origin"
      : undefined,
  });
}

function streamOrigins(stream: CompiledStream | undefined): readonly string[] {
  return stream?.parsed.origins ?? [];
}

/**
 * Throws 403 `origin_not_allowed` when a publishable key comes from a page
 * not among its `origins` (HTTP and WebSocket ingest alike).
 */
export function refuseForeignOrigin(grant: KeyGrant, origin: string | undefined): void {
  if (!grant.publishable || origin === undefined || grant.origins?.has(origin)) return;
  throw new ApiError(
    403,
    "origin_not_allowed",
    `Publishable key '${grant.id}' may be used only from ${
      listNames(grant.origins ?? [])
    }; this request comes from '${quoteInput(origin)}'`,
  );
}

/** What the ingest middlewares need. */
export interface BrowserIngestDeps {
  /** Compiled streams by name. */
  streams: ReadonlyMap<string, CompiledStream>;
  /** API keys. */
  keys: KeyRing;
}

/**
 * Middleware of `POST /v1/streams/{stream}/events`: the key (header, or a
 * publishable one as `?key=`) must have the `ingest` scope and the stream,
 * and the page's `Origin` must be allowed (see the module doc). The grant is
 * remembered for the handler.
 */
export function requireIngestKey(deps: BrowserIngestDeps): MiddlewareHandler {
  return async function (c, next) {
    rememberGrant(c, await ingestGrant(deps, c));
    await next();
  };
}

/**
 * What {@linkcode requireIngestKey} checks, for a route that runs its steps without the
 * middleware chain (ingest, see `stream_routes.ts`): the request's grant, or the refusal thrown.
 */
export async function ingestGrant(deps: BrowserIngestDeps, c: Context): Promise<KeyGrant> {
  const name = c.req.param("stream") ?? "";
  // Lower case: see the note in `_header_list.ts`.
  const authorization = c.req.header("authorization");
  const inQuery = c.req.query("key") || undefined;
  // Two different keys are a 400; the same one in both is in the URL all the same, so a secret
  // key there is refused below whether or not the header holds it too.
  const key = oneKey([[HEADER_PLACE, bearerKey(authorization)], ["'?key='", inQuery]]);
  const options = { stream: name, howToSend: INGEST_HOW_TO_SEND, authorization };
  const result = await authorize(deps.keys, key, "ingest", options);
  if (result.error) throw result.error;
  const grant = result.grant;
  if (inQuery && !deps.keys.open && !grant.publishable) {
    throw new ApiError(
      401,
      "unauthorized",
      "Only publishable keys (pk_…) may be sent as '?key=': URLs reach logs and traces; send 'Authorization: Bearer <key>'",
    );
  }
  await refuseUnlistedOrigin(deps, { request: c.req.raw, grant, stream: name });
  return grant;
}

/**
 * Refuses an ingest request (or WebSocket ingest upgrade) from a page whose `Origin` a
 * publishable key does not list, or that `originGuard` left to the route and neither the key's
 * nor the stream's `origins` admit.
 */
export function refuseUnlistedOrigin(
  deps: BrowserIngestDeps,
  target: { request: Request; grant: KeyGrant; stream: string },
): Promise<void> {
  const { request, grant, stream } = target;
  return refuseOrigin(deps, { origin: originOf(request), grant, stream });
}

/**
 * What {@linkcode refuseOrigin} needs of a request, read while its headers can be (a WebSocket
 * upgrade's are gone once it is upgraded): its `Origin`, and the refusal `originGuard` left to
 * the route, if any.
 */
export interface RequestOrigin {
  origin: string;
  refusal: ApiError | undefined;
}

/** The {@linkcode RequestOrigin} of `request`; undefined without an `Origin` (not a page). */
export function originOf(request: Request): RequestOrigin | undefined {
  const origin = request.headers.get("Origin") ?? undefined;
  if (origin === undefined) return undefined;
  return { origin, refusal: deferredOriginRefusal(request) };
}

/**
 * {@linkcode refuseUnlistedOrigin} of a request's {@linkcode RequestOrigin}: also asked of each
 * frame of a WebSocket ingest connection, against the key and the stream as they are then.
 */
export async function refuseOrigin(
  deps: BrowserIngestDeps,
  target: { origin: RequestOrigin | undefined; grant: KeyGrant; stream: string },
): Promise<void> {
  const { grant } = target;
  if (target.origin === undefined) return;
  const { origin, refusal } = target.origin;
  refuseForeignOrigin(grant, origin);
  if (!refusal) return;
  // A path whose stream is no name is the route's 400 from any origin, which the page reads: a
  // 403 telling it to list its origin would change nothing. (Asked only of a refused origin.)
  if (!NAME.test(target.stream)) throw invalidNameParameter("stream", target.stream);
  const allowed = grant.origins?.has(origin) ||
    streamOrigins(await lookUpStream(deps.streams, target.stream)).includes(origin);
  if (!allowed) {
    throw new ApiError(
      refusal.status,
      refusal.code,
      `${refusal.message}, or to the key's or the stream's 'origins'`,
    );
  }
}

/**
 * Middleware of the ingest path: answers a preflight (`OPTIONS`) and adds
 * the CORS headers to answers for an allowed origin (see the module doc).
 */
export function ingestCors(deps: BrowserIngestDeps): MiddlewareHandler {
  return async function (c, next) {
    const origin = c.req.header("Origin");
    if (c.req.method === "OPTIONS") {
      // Neither the stream nor a key is looked up: the answer must not tell whether a stream
      // exists, nor which origins it lists, to whoever asks without a key. The POST decides, a
      // path whose stream is no name too (its 400, which a page reads only once its preflight
      // was granted: a refused preflight is a network error), as the API's preflights (cors.ts).
      c.header("Allow", "POST");
      c.header("Vary", "Origin");
      if (origin !== undefined) {
        c.header("Access-Control-Allow-Origin", origin);
        c.header("Access-Control-Allow-Methods", "POST");
        c.header("Access-Control-Allow-Headers", ALLOWED_HEADERS);
        c.header("Access-Control-Max-Age", String(PREFLIGHT_MAX_AGE));
      }
      return c.body(null, 204);
    }
    await next();
    // The stream as held now, not looked up: before the key (the route after it looks a name up),
    // a made-up name would cost a store call, and the unknown-name look-ups a keyed request needs.
    const stream = deps.streams.get(c.req.param("stream") ?? "");
    if (origin !== undefined) addIngestCorsHeaders(c, { origin, stream });
  };
}

/**
 * What {@linkcode ingestCors} adds to the answer to a request from `origin` into `stream`, for a
 * route that runs its steps without the middleware chain (ingest, see `stream_routes.ts`).
 */
export function addIngestCorsHeaders(
  c: Context,
  request: { origin: string; stream: CompiledStream | undefined },
): void {
  const { origin, stream } = request;
  c.res.headers.append("Vary", "Origin");
  const grant = grantOfRequest(c);
  const error = c.error instanceof ApiError ? c.error : undefined;
  if (error?.code === "host_not_allowed") return;
  const deferred = deferredOriginRefusal(c.req.raw);
  // Admitted by the key's or the stream's `origins`, or by the origin guard itself (the server's
  // own origin, or one EDGESTREAM_ALLOWED_ORIGINS lists: then it deferred no refusal); or an error,
  // answered before the origin was judged (its key unknown) or the origin's own refusal (403
  // `origin_not_allowed`, readable so its page learns why: see the module doc).
  if (
    grant?.origins?.has(origin) || streamOrigins(stream).includes(origin) ||
    deferred === undefined || c.error !== undefined
  ) {
    c.res.headers.set("Access-Control-Allow-Origin", origin);
    c.res.headers.set("Access-Control-Expose-Headers", EXPOSED_HEADERS);
  }
}
