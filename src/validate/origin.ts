/**
 * The one reading of a web origin a setting lists (`EDGESTREAM_ALLOWED_ORIGINS`, a key's and a
 * stream definition's `origins`): `http(s)://host[:port]` as a browser sends it in `Origin`.
 *
 * @module
 */

/** A normalized DNS name, IPv4 address or bracketed IPv6 address; the URL parser allows more. */
export const HOST_NAME = /^(?:(?:[a-z0-9_-]+\.)*[a-z0-9_-]+|\[[0-9a-f:.]+\])$/;

/** What {@linkcode webOrigin} takes, as refusals word it. */
export const ORIGIN_RULE =
  "http(s)://host[:port] without path, credentials or wildcard, e.g. 'https://app.example.com'";

/**
 * `text` serialized as browsers send it in `Origin`, or `undefined` when no browser sends it: not
 * http(s), a path, query or fragment, credentials (`https://user:pw@host`), or a host the URL
 * parser takes but no browser names (`https://*.example.com`, `https://a!b.example`), which would
 * never match.
 *
 * @example
 * ```ts
 * import { webOrigin } from "./origin.ts";
 *
 * webOrigin("https://App.Example.com/"); // "https://app.example.com"
 * webOrigin("https://*.example.com"); // undefined
 * ```
 */
export function webOrigin(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return undefined;
  }
  if (
    (url.protocol !== "http:" && url.protocol !== "https:") ||
    url.href !== `${url.origin}/` || !/^https?:\/\/[^/]+\/?$/i.test(text) ||
    !HOST_NAME.test(url.hostname.replace(/\.$/, ""))
  ) {
    return undefined;
  }
  return url.origin;
}

/**
 * `url` with the credentials it may hold (`https://user:password@host`) replaced by `mark`, for a
 * message or a log line, which hold no secret: everything between the scheme and the last `@`.
 *
 * @example
 * ```ts
 * import { withoutCredentials } from "./origin.ts";
 *
 * withoutCredentials("https://user:pw@shop.example"); // "https://[REDACTED]@shop.example"
 * ```
 */
export function withoutCredentials(url: string, mark = "[REDACTED]"): string {
  // Up to the last '@', not the first '/', '?' or '#': a password holding one unencoded (the very
  // reason such a URL is refused) is hidden too, as is one after a scheme without '//'
  // (`https:user:pw@host`, which URL parsers read as `https://user:pw@host`).
  return url.replace(/^([a-z][a-z\d+.-]*:(?:\/\/)?)[^]*@/i, `$1${mark}@`);
}
