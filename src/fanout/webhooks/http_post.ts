/**
 * The webhook HTTP client: one POST per attempt, no redirects followed, a
 * timeout for the whole exchange, and at most {@linkcode MAX_EXCERPT_BYTES}
 * of the response kept. Given the address the SSRF check approved, it
 * connects exactly there instead of resolving the host again. The status
 * and its `Retry-After` header become a {@linkcode PostResult}; it never
 * throws.
 *
 * @module
 */
import http from "node:http";
import https from "node:https";
import type { LookupAddress } from "node:dns";
import type { LookupFunction } from "node:net";
import { describeDuration } from "../../config/mod.ts";

const SECOND = 1_000;
const DAY = 24 * 60 * 60 * SECOND;

/** Most bytes of a response body kept in the attempt log. */
export const MAX_EXCERPT_BYTES = 2_048;

/** Default request timeout (ms). */
export const DEFAULT_TIMEOUT_MS = 15_000;

/** Longest `Retry-After` honoured (ms). */
export const MAX_RETRY_AFTER_MS = DAY;

/**
 * Reads a `Retry-After` header (seconds or an HTTP date) as a delay in ms,
 * clamped to 1 s – 24 h; null when absent or unreadable.
 */
export function parseRetryAfter(value: string | null, nowMs: number): number | null {
  if (value === null) return null;
  const text = value.trim();
  let delayMs: number;
  if (/^\d+$/.test(text)) delayMs = Number(text) * SECOND;
  else {
    const date = Date.parse(text);
    if (Number.isNaN(date)) return null;
    delayMs = date - nowMs;
  }
  return Math.min(MAX_RETRY_AFTER_MS, Math.max(SECOND, delayMs));
}

/** What one POST got. */
export interface PostResult {
  /** HTTP status; null without a response. */
  status: number | null;
  /** Why it failed; null for a 2xx. */
  error: string | null;
  /** Start of the body, at most {@linkcode MAX_EXCERPT_BYTES}. */
  excerpt: string;
  /** The `Retry-After` header's delay (ms), on 429, 502, 503 and 504. */
  retryAfterMs: number | null;
}

async function readExcerpt(response: Response): Promise<string> {
  if (!response.body) return "";
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (size < MAX_EXCERPT_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      size += value.length;
    }
  } catch {
    // A body cut short still has an excerpt.
  } finally {
    reader.cancel().catch(() => {});
  }
  return excerptOf(chunks, size);
}

/** The first {@linkcode MAX_EXCERPT_BYTES} of a body read in chunks, as text. */
function excerptOf(chunks: readonly Uint8Array[], size: number): string {
  const bytes = new Uint8Array(Math.min(size, MAX_EXCERPT_BYTES));
  let offset = 0;
  for (const chunk of chunks) {
    const part = chunk.subarray(0, bytes.length - offset);
    bytes.set(part, offset);
    offset += part.length;
    if (offset >= bytes.length) break;
  }
  // stream: true leaves a character cut at the limit out instead of writing U+FFFD.
  return new TextDecoder().decode(bytes, { stream: true });
}

function firstLine(error: unknown): string {
  return (error instanceof Error ? error.message : String(error)).split("\n")[0].slice(0, 300);
}

/**
 * Where Deno's fetch error says it sent a request: `for url (<url>)`, or, for a connection the
 * receiver closed once made, `from <local address> for <url> (<address>)`. The attempt log (the
 * deliveries API) shows neither this server's address nor the URL again. A local copy of
 * `FETCH_ENDS` in `src/store/redis/call.ts` (fanout imports only the store's contracts), also
 * taking the prefix before it; `\S*` in the parentheses, as a URL has no spaces but may have `)`.
 */
const FETCH_ENDS = /^error sending request (?:from \S+ )?for (?:url \(\S*\)|\S+ \(\S*\)): /;

/** A fetch failure with its cause ("fetch failed: … Connection refused"), without the URL echo. */
function fetchError(error: unknown): string {
  const cause = error instanceof Error && error.cause !== undefined
    ? `: ${firstLine(error.cause).replace(FETCH_ENDS, "")}`
    : "";
  return `${firstLine(error)}${cause}`.slice(0, 300);
}

/**
 * Statuses that ask the sender to slow down, whose `Retry-After` is honoured (Standard Webhooks:
 * 429, 502, 503 and 504; a 502 or 504 often comes from a proxy in front of a receiver that is
 * deploying).
 */
const SLOW_DOWN: ReadonlySet<number> = new Set([429, 502, 503, 504]);

/** Turns a status, its body excerpt and its Retry-After header into a {@linkcode PostResult}. */
function resultOf(
  status: number,
  excerpt: string,
  retryAfter: string | null,
  nowMs: number,
): PostResult {
  let error: string | null = null;
  if (status >= 300 && status < 400) error = `Redirects are not followed (HTTP ${status})`;
  else if (status < 200 || status >= 300) error = `HTTP ${status}`;
  const retryAfterMs = SLOW_DOWN.has(status) ? parseRetryAfter(retryAfter, nowMs) : null;
  return { status, error, excerpt, retryAfterMs };
}

/** What {@linkcode postPinned} sends, and how long it waits. */
interface PinnedPostOptions {
  /** Request headers; `content-length` is added. */
  headers: Record<string, string>;
  /** Request body. */
  body: string;
  /** Whole-exchange timeout (ms). @default {DEFAULT_TIMEOUT_MS} */
  timeoutMs?: number;
  /** The timeout a timed-out exchange's error names (ms). @default {timeoutMs} */
  namedTimeoutMs?: number;
  /** Clock (ms) for `Retry-After` dates. @default {Date.now()} */
  nowMs?: number;
  /** Ends the exchange when aborted, like the timeout. */
  signal?: AbortSignal;
}

/**
 * A timed-out attempt's error, naming the timeout as configured (`Timed out after 15 s`), not
 * what was left of it after the URL's lookup.
 */
function timedOutText(timeoutMs: number): string {
  return `Timed out after ${describeDuration(timeoutMs)}`;
}

/** The result of an exchange ended by its caller's signal. */
function abortedResult(): PostResult {
  return {
    status: null,
    error: "Aborted: the sender is stopping",
    excerpt: "",
    retryAfterMs: null,
  };
}

/**
 * `headers` with each value's leading and trailing tabs and spaces removed, as fetch sends them
 * (node:http sends them as given): a value reaches an endpoint alike by either path.
 */
function trimmedValues(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(
    Object.entries(headers).map(([name, value]) => [name, value.replace(/^[\t ]+|[\t ]+$/g, "")]),
  );
}

/**
 * POSTs to `url` over a connection to exactly `address`, the address the
 * SSRF check approved: a second DNS lookup by the HTTP client could answer
 * differently (DNS rebinding). TLS still verifies the certificate for the
 * URL's host name. Never throws.
 */
function postPinned(url: URL, address: string, options: PinnedPostOptions): Promise<PostResult> {
  const { headers, body } = options;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const nowMs = options.nowMs ?? Date.now();
  const family = address.includes(":") ? 6 : 4;
  const client = url.protocol === "https:" ? https : http;
  const payload = new TextEncoder().encode(body);
  const lookup: LookupFunction = (_host, options, callback) => {
    if (options.all) {
      (callback as unknown as (error: null, all: LookupAddress[]) => void)(null, [{
        address,
        family,
      }]);
    } else callback(null, address, family);
  };
  return new Promise((resolve) => {
    let settled = false;
    const finish = (result: PostResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      resolve(result);
    };
    // Once the status arrived it is the answer, as for fetch: a body still coming when the
    // timeout or the signal ends the exchange (or past the excerpt) only shortens the excerpt.
    const chunks: Uint8Array[] = [];
    let size = 0;
    let answered: { status: number; retryAfter: string | null } | undefined;
    const finishAnswered = () => {
      if (!answered) return false;
      finish(resultOf(answered.status, excerptOf(chunks, size), answered.retryAfter, nowMs));
      return true;
    };
    const onAbort = () => {
      if (!finishAnswered()) finish(abortedResult());
      request.destroy();
    };
    const failed = (error: unknown) => {
      if (!finishAnswered()) {
        finish({ status: null, error: fetchError(error), excerpt: "", retryAfterMs: null });
      }
    };
    let request: ReturnType<typeof client.request>;
    try {
      request = client.request({
        protocol: url.protocol,
        hostname: url.hostname,
        port: url.port === "" ? undefined : Number(url.port),
        path: `${url.pathname}${url.search}`,
        method: "POST",
        headers: { ...trimmedValues(headers), "content-length": String(payload.byteLength) },
        lookup,
      }, (response) => {
        const retryAfter = response.headers["retry-after"];
        answered = {
          status: response.statusCode ?? 0,
          retryAfter: typeof retryAfter === "string" ? retryAfter : null,
        };
        response.on("data", (chunk: Uint8Array) => {
          chunks.push(chunk);
          size += chunk.length;
          if (size < MAX_EXCERPT_BYTES) return;
          finishAnswered();
          request.destroy();
        });
        response.on("end", finishAnswered);
        response.on("error", failed);
      });
    } catch (error) {
      // Thrown before any connection (a permission the process lacks, say): nothing was sent,
      // and no timer or abort listener is set yet.
      settled = true;
      resolve({ status: null, error: fetchError(error), excerpt: "", retryAfterMs: null });
      return;
    }
    const timer = setTimeout(() => {
      if (!finishAnswered()) {
        finish({
          status: null,
          error: timedOutText(options.namedTimeoutMs ?? timeoutMs),
          excerpt: "",
          retryAfterMs: null,
        });
      }
      request.destroy();
    }, timeoutMs);
    if (options.signal?.aborted) onAbort();
    else options.signal?.addEventListener("abort", onAbort, { once: true });
    request.on("error", failed);
    request.end(payload);
  });
}

/** Options for {@linkcode postWebhook}. */
export interface PostOptions {
  /** Whole-exchange timeout (ms). @default {15000} */
  timeoutMs?: number;
  /**
   * The timeout a timed-out exchange's error names (ms): the attempt's whole one, as configured,
   * when `timeoutMs` is what a URL lookup before it left. @default {timeoutMs}
   */
  namedTimeoutMs?: number;
  /** Clock (ms) for `Retry-After` dates. @default {Date.now()} */
  nowMs?: number;
  /**
   * Connect to this address (one the SSRF check approved) instead of
   * resolving the URL's host again. Ignored for IP-literal hosts.
   */
  address?: string;
  /**
   * Ends the exchange when aborted (a stopping process): the result then has
   * no status and says so.
   */
  signal?: AbortSignal;
}

/**
 * POSTs `body` to `url` once: no redirects followed, `timeoutMs` for the
 * whole exchange. Never throws.
 */
export async function postWebhook(
  url: string,
  headers: Record<string, string>,
  body: string,
  options: PostOptions = {},
): Promise<PostResult> {
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const parsed = new URL(url);
  const literal = /^\[.*\]$|^[\d.]+$/.test(parsed.hostname);
  if (options.address !== undefined && !literal) {
    return await postPinned(parsed, options.address, {
      headers,
      body,
      timeoutMs,
      namedTimeoutMs: options.namedTimeoutMs,
      nowMs: options.nowMs ?? Date.now(),
      signal: options.signal,
    });
  }
  if (options.signal?.aborted) return abortedResult();
  try {
    const response = await fetch(url, {
      method: "POST",
      headers,
      body,
      redirect: "manual",
      signal: options.signal
        ? AbortSignal.any([AbortSignal.timeout(timeoutMs), options.signal])
        : AbortSignal.timeout(timeoutMs),
    });
    return resultOf(
      response.status,
      await readExcerpt(response),
      response.headers.get("retry-after"),
      options.nowMs ?? Date.now(),
    );
  } catch (error) {
    if (options.signal?.aborted) return abortedResult();
    const timedOut = error instanceof DOMException && error.name === "TimeoutError";
    return {
      status: null,
      error: timedOut ? timedOutText(options.namedTimeoutMs ?? timeoutMs) : fetchError(error),
      excerpt: "",
      retryAfterMs: null,
    };
  }
}
