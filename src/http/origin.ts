/**
 * Which `Host` names and `Origin`s the server answers: the defence against
 * web pages that drive it through their visitors' browsers. One policy for
 * every route; browser-facing features (CORS, publishable keys) extend it.
 *
 * **Host, in open mode only.** Without API keys anyone who can reach the
 * server may use it, and it listens on loopback for that reason. A page on
 * `attacker.example` can still reach it through DNS rebinding: the page's
 * name is made to resolve to 127.0.0.1, and its requests, same-origin as far
 * as the browser knows, arrive with `Host: attacker.example`. So open mode
 * answers only loopback names — `localhost`, `*.localhost`, `127.0.0.0/8`,
 * `[::1]` — and those in `allowedHosts` (forwarded dev hosts, tunnels): others
 * get 421. A request without `Host` (HTTP/1.0) is judged by its URL:
 * browsers always send one. With keys the Host is not checked: a rebinding page
 * cannot present a key it does not know, and deployments answer under names
 * the server cannot know in advance.
 *
 * **Origin, in every mode.** A browser names the page behind a request in
 * `Origin`. A request that may change state — any method but GET, HEAD and
 * OPTIONS, and every WebSocket upgrade — from an origin other than the
 * server's own (`scheme://host:port` as the request arrived: scheme, Host
 * and port must all match) and not in `allowedOrigins` gets 403; `Origin:
 * null` (sandboxed frames, files) is never the server's own. Reads are not
 * refused here: an API read with a key from such an origin is refused once the
 * key is known, unless the key's `origins` list it (`auth.ts`,
 * `refuseForeignRead`, with a `403` the page can read: `cors.ts`). Requests
 * without `Origin` (curl, servers, Deno's WebSocket) pass.
 *
 * Why keyed mode checks Origin too: a page can open a WebSocket to any
 * server, never preflighted, carrying the key as `?token=` or a `bearer.`
 * subprotocol, and can send simple POSTs (forms, `text/plain` fetches)
 * without preflight. Today only the key protects those, so a key that
 * reached a page (its source, a shared link with `?token=`, a publishable key
 * later) would work from every site; checking Origin confines browser use to
 * the origins listed, and keeps doing so should credentials a browser sends
 * by itself (cookies) ever be added. One rule in both modes also means
 * setting or removing keys never changes which pages may talk to the server.
 * The cost: a page on another origin that opens the WebSocket endpoints (the
 * one cross-origin use that works without CORS) must be listed in
 * `allowedOrigins`. Behind a proxy that terminates TLS or
 * rewrites `Host`, the server's own origin as it sees it differs from the
 * public one, so list the public origin too.
 *
 * @module
 */
import type { MiddlewareHandler } from "hono";
import { ApiError } from "./errors.ts";
import { upgradeAsksForWebSocket } from "./_header_list.ts";
import { quoteInput } from "../telemetry/logging.ts";
import { HOST_NAME, webOrigin, withoutCredentials } from "../validate/mod.ts";

/** Settings of {@linkcode OriginPolicy} besides the mode: what the environment provides. */
export interface OriginSettings {
  /**
   * More `Host` names open mode answers: `dev.example.com` (that name) or
   * `.example.com` (the domain and every subdomain); names without a port.
   * @default {[]}
   */
  allowedHosts?: readonly string[];
  /**
   * Origins besides the server's own that may send state-changing requests,
   * open WebSockets and read the API's answers (CORS, `cors.ts`):
   * `scheme://host[:port]`, e.g. `https://app.example.com`.
   * @default {[]}
   */
  allowedOrigins?: readonly string[];
}

/** Options for {@linkcode OriginPolicy}. */
export interface OriginPolicyOptions extends OriginSettings {
  /** True in open mode (no API keys): then only loopback and allowed Host names are answered. */
  open: boolean;
}

/** A host name or origin setting that cannot be read. */
export class OriginSettingError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "OriginSettingError";
  }
}

/** An `Origin` a web page sends, the only kind `EDGESTREAM_ALLOWED_ORIGINS` or a key can list. */
const WEB_ORIGIN = /^https?:\/\//i;

/** Characters a `Host` value never holds; `@` would let the URL parser read userinfo. */
const HOST_TEXT = /^[^\s/?#@\\]+$/;

/**
 * The name (lowercase, punycode, no trailing dot) and the origin of a `Host`
 * value reached over `protocol`, normalized as browsers do; undefined when
 * the value is not a host.
 */
function parseHost(text: string, protocol = "http:"): { name: string; origin: string } | undefined {
  if (!HOST_TEXT.test(text)) return undefined;
  try {
    const url = new URL(`${protocol === "https:" ? "https:" : "http:"}//${text}`);
    return { name: url.hostname.replace(/\.$/, ""), origin: url.origin };
  } catch {
    return undefined;
  }
}

/** True for `localhost`, `*.localhost`, `127.0.0.0/8` and `[::1]` (names already normalized). */
export function isLoopbackName(name: string): boolean {
  return name === "localhost" || name.endsWith(".localhost") || name === "[::1]" ||
    /^127\.\d+\.\d+\.\d+$/.test(name);
}

/**
 * Reads one allowed host entry: a name without port, or `.` + a domain.
 * Returns it normalized (lowercase, punycode); throws {@linkcode OriginSettingError}.
 */
export function normalizeAllowedHost(entry: string): string {
  const text = entry.trim();
  const domain = text.startsWith(".");
  const parsed = /:\d*$/.test(text) ? undefined : parseHost(domain ? text.slice(1) : text);
  if (!parsed || !HOST_NAME.test(parsed.name)) {
    throw new OriginSettingError(
      `Cannot read allowed host '${
        hostEntryWithoutCredentials(entry)
      }': expected a host name without port, e.g. 'dev.example.com', or '.example.com' for a domain and its subdomains`,
    );
  }
  return domain ? `.${parsed.name}` : parsed.name;
}

/**
 * An allowed host entry for a message, without the credentials a pasted URL holds
 * (`https://user:pw@host`), so they are not repeated into the startup line. A host is written
 * without a scheme, so is a pasted `token@host`: all before its last `@` is hidden too.
 */
function hostEntryWithoutCredentials(entry: string): string {
  const shown = withoutCredentials(entry);
  return shown === entry ? entry.replace(/^[^]*@/, "[REDACTED]@") : shown;
}

/**
 * Reads one allowed origin: `scheme://host[:port]` with scheme http or https, the host a DNS
 * name or an IP address (no wildcard: `https://*.example.com` is refused). Returns it serialized
 * as browsers send it; throws {@linkcode OriginSettingError}.
 */
export function normalizeAllowedOrigin(entry: string): string {
  // The URL parser takes hosts no browser sends in `Origin` (`*.example.com`, `a!b.example`):
  // such an entry would never match, so it is refused as allowed hosts are (`webOrigin`).
  const origin = webOrigin(entry.trim());
  if (origin === undefined) {
    throw new OriginSettingError(
      // Credentials in it (`https://user:pw@host`) are not repeated into a log line or a reply.
      `Cannot read allowed origin '${
        withoutCredentials(entry)
      }': expected http(s)://host[:port] without path, e.g. 'https://app.example.com'`,
    );
  }
  return origin;
}

function splitList(text: string | undefined): string[] {
  return (text ?? "").split(",").map((item) => item.trim()).filter((item) => item !== "");
}

/** Parses comma-separated allowed hosts (`EDGESTREAM_ALLOWED_HOSTS`); see {@linkcode normalizeAllowedHost}. */
export function parseAllowedHosts(text: string | undefined): string[] {
  return splitList(text).map(normalizeAllowedHost);
}

/** Parses comma-separated allowed origins (`EDGESTREAM_ALLOWED_ORIGINS`); see {@linkcode normalizeAllowedOrigin}. */
export function parseAllowedOrigins(text: string | undefined): string[] {
  return splitList(text).map(normalizeAllowedOrigin);
}

/**
 * The server's own host as the request arrived: its `Host` header (else the URL's host) and that
 * header read with the URL's scheme (`host` undefined when it names no host); null when the
 * request has no URL (Deno makes it from the Host header: `Host: a, b` makes none).
 */
function ownHost(
  request: Request,
): { hostHeader: string; host: { name: string; origin: string } | undefined } | null {
  let url: URL;
  try {
    url = new URL(request.url);
  } catch {
    return null;
  }
  const hostHeader = request.headers.get("Host") || url.host;
  return { hostHeader, host: parseHost(hostHeader, url.protocol) };
}

/** Methods that change nothing, so a cross-origin one may pass: a page cannot read the answer. */
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** Decides which requests the server answers, by `Host` and `Origin` (see the module doc). */
export class OriginPolicy {
  #open: boolean;
  #hosts: Set<string>;
  #domains: string[];
  #origins: Set<string>;

  /** Throws {@linkcode OriginSettingError} for an entry that cannot be read. */
  constructor(options: OriginPolicyOptions) {
    this.#open = options.open;
    const hosts = (options.allowedHosts ?? []).map(normalizeAllowedHost);
    this.#hosts = new Set(hosts.filter((host) => !host.startsWith(".")));
    this.#domains = hosts.filter((host) => host.startsWith("."));
    this.#origins = new Set((options.allowedOrigins ?? []).map(normalizeAllowedOrigin));
  }

  /** Whether `origin` is one the settings list (`allowedOrigins`), as a browser sends it. */
  lists(origin: string): boolean {
    return this.#origins.has(origin);
  }

  /**
   * The request's `Origin` when it is a web page's (`http:` or `https:`) and neither the server's
   * own (as in {@linkcode refusal}) nor listed; undefined for a request without one, from those,
   * or from what no setting can list (`null`, a browser extension's, an app's `file:` page): those
   * are answered as before, read only by a client that skips CORS. A read from a foreign origin is
   * answered only when the key presented lists it (`auth.ts`, `refuseForeignRead`).
   */
  foreignOrigin(request: Request): string | undefined {
    const origin = request.headers.get("Origin");
    if (origin === null || !WEB_ORIGIN.test(origin) || this.#origins.has(origin)) return undefined;
    const own = ownHost(request);
    if (own === null) return origin;
    return origin === own.host?.origin ? undefined : origin;
  }

  /** True when open mode answers the host name `name` (normalized, without port). */
  #hostAllowed(name: string): boolean {
    return isLoopbackName(name) || this.#hosts.has(name) ||
      this.#domains.some((domain) => name === domain.slice(1) || name.endsWith(domain));
  }

  /** Why the request is refused, or null when it may go on. */
  refusal(request: Request): ApiError | null {
    const origin = request.headers.get("Origin");
    // With keys, only an Origin can be refused: most requests need no URL parsed.
    if (!this.#open && origin === null) return null;
    const server = ownHost(request);
    if (server === null) {
      return new ApiError(
        400,
        "invalid_request",
        `Host '${
          quoteInput(request.headers.get("Host") ?? "")
        }' is not a host name (a name or address, and a port)`,
      );
    }
    const { hostHeader, host } = server;
    if (this.#open && !(host && this.#hostAllowed(host.name))) {
      const name = host ? `'${quoteInput(host.name)}'` : "its name";
      return new ApiError(
        421,
        "host_not_allowed",
        `Host '${
          quoteInput(hostHeader)
        }' refused: open mode (no EDGESTREAM_KEYS) answers only loopback names (localhost, 127.0.0.1, [::1]) and EDGESTREAM_ALLOWED_HOSTS; add ${name} there to allow it`,
      );
    }
    if (origin === null) return null;
    const upgrade = upgradeAsksForWebSocket(request.headers.get("Upgrade"));
    if (!upgrade && SAFE_METHODS.has(request.method)) return null;
    const own = host?.origin;
    if (origin === own || this.#origins.has(origin)) return null;
    return new ApiError(
      403,
      "origin_not_allowed",
      `Cross-origin ${upgrade ? "WebSocket upgrade" : quoteInput(request.method)} from '${
        quoteInput(origin)
      }' refused, as this server is '${
        quoteInput(own ?? hostHeader)
      }': add the origin to EDGESTREAM_ALLOWED_ORIGINS to allow it`,
    );
  }
}

/**
 * Middleware that refuses what `policy` refuses, before any route runs, so a
 * refused request changes nothing.
 *
 * @example
 * ```ts
 * import { Hono } from "hono";
 * import { OriginPolicy, originGuard } from "./origin.ts";
 *
 * const app = new Hono();
 * app.use(originGuard(new OriginPolicy({ open: true, allowedHosts: ["dev.example.com"] })));
 * app.post("/x", (c) => c.text("ok"));
 * const res = await app.request("/x", { method: "POST", headers: { Host: "attacker.example" } });
 * console.log(res.status); // 421
 * ```
 */
export function originGuard(
  policy: OriginPolicy,
  options: OriginGuardOptions = {},
): MiddlewareHandler {
  // Not async: one promise frame fewer on every request; a throw still reaches the error handler.
  return (c, next) => {
    guardOrigin(policy, c.req.raw, options);
    return next();
  };
}

/**
 * What {@linkcode originGuard} does before the route: throws the refusal of `policy`, or leaves
 * it to the route when `options.defer` says so. For a route that runs its steps without the
 * middleware chain (ingest, see `stream_routes.ts`).
 */
export function guardOrigin(
  policy: OriginPolicy,
  request: Request,
  options: OriginGuardOptions = {},
): void {
  const refusal = policy.refusal(request);
  if (refusal?.code === "origin_not_allowed" && options.defer?.(request)) {
    deferred.set(request, refusal);
  } else if (refusal) {
    throw refusal;
  }
}

/** Options for {@linkcode originGuard}. */
export interface OriginGuardOptions {
  /**
   * Requests whose `Origin` refusal waits for their route, which knows more
   * (ingest: the key's and the stream's origins) and must refuse with
   * {@linkcode deferredOriginRefusal} before changing anything.
   * @default {none}
   */
  defer?: (request: Request) => boolean;
}

const deferred = new WeakMap<Request, ApiError>();

/** The Origin refusal {@linkcode originGuard} left to the route, if any. */
export function deferredOriginRefusal(request: Request): ApiError | undefined {
  return deferred.get(request);
}
