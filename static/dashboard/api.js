/**
 * Talking to edgestream from the page: the API key (kept in this tab's
 * `sessionStorage`, sent only as `Authorization: Bearer`, never in a URL),
 * JSON requests, and live results read from the SSE endpoint with `fetch`
 * (an `EventSource` cannot send the header, so it would need the key in the
 * URL).
 *
 * @module
 */
import { subscribe } from "../sdk/sdk.js";

const KEY_ITEM = "edgestream.key";

/** The key typed into the page, or "" when none. */
export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM) ?? "";
}

/**
 * Why `key` cannot be an API key, or null when it may be one. Keys are visible ASCII characters,
 * as a header carries them: one pasted with another (a zero-width or non-breaking space, a curly
 * quote) fails every request in the browser before it is sent, so the server never refuses it.
 */
export function keyProblem(key) {
  const match = /[^\x21-\x7e]/u.exec(key);
  if (!match) return null;
  const code = match[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0");
  return `Not an API key: keys are visible ASCII characters, and this one has U+${code} at character ${
    [...key.slice(0, match.index)].length + 1
  }`;
}

/** Keeps `key` for this tab. */
export function rememberKey(key) {
  sessionStorage.setItem(KEY_ITEM, key);
}

/** Forgets the key. */
export function forgetKey() {
  sessionStorage.removeItem(KEY_ITEM);
}

/** Whether the server asks for a key: `<meta name="edgestream-auth" content="none|key">`. */
export function serverWantsKey() {
  return globalThis.document.querySelector('meta[name="edgestream-auth"]')?.content !== "none";
}

/**
 * Whether the server has webhooks: `<meta name="edgestream-webhooks" content="on|off">` (a page
 * without it is taken to have them, and `GET /v1/webhooks` answers 404 if not).
 */
export function serverHasWebhooks() {
  return globalThis.document.querySelector('meta[name="edgestream-webhooks"]')?.content !== "off";
}

/** The read of `GET /v1/key` for the key it was made with: the page's views share one. */
let grantRead = null;

/**
 * What this tab's key may do, from `GET /v1/key` (`{scopes, streams}`): everything in open mode,
 * which asks for no key. Read once for a key (the webhooks panel and the streams panel both ask);
 * a failed read is asked again next time.
 */
export function keyGrant() {
  if (!serverWantsKey()) {
    return Promise.resolve({ scopes: ["admin", "ingest", "read"], streams: null });
  }
  const key = storedKey();
  if (grantRead?.key !== key) {
    const read = {
      key,
      answer: api("/v1/key").catch((error) => {
        if (grantRead === read) grantRead = null;
        throw error;
      }),
    };
    grantRead = read;
  }
  return grantRead.answer;
}

/** A failed API call: the status and the error envelope's code and message. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/**
 * The request headers with the key. Without a key on a server that wants one
 * nothing is sent: a timer firing between "forget key" and the reload it
 * starts would otherwise call the API with no `Authorization`.
 */
function headers(extra = {}) {
  const key = storedKey();
  if (!key && serverWantsKey()) throw new ApiError(401, "no_key", "No API key in this tab");
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

/** Calls the API and reads its JSON answer; throws {@linkcode ApiError} for an error status. */
export async function api(path, options = {}) {
  const init = {
    method: options.method ?? "GET",
    headers: headers({ Accept: "application/json" }),
    cache: "no-store",
    signal: options.signal,
  };
  if (options.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!res.ok) {
    throw new ApiError(
      res.status,
      body?.error?.code ?? "http_error",
      body?.error?.message ?? `${init.method} ${path} answered ${res.status}`,
    );
  }
  return body;
}

/**
 * Every stream of `GET /v1/streams`, following its pages: `{streams}` as one reply of all of
 * them.
 */
export async function allStreams() {
  const streams = [];
  let cursor = null;
  do {
    const query = new URLSearchParams({ limit: "1000" });
    if (cursor !== null) query.set("cursor", cursor);
    const page = await api(`/v1/streams?${query}`);
    streams.push(...page.streams);
    cursor = page.nextCursor ?? null;
  } while (cursor !== null);
  return { streams };
}

/**
 * One stream of `GET /v1/streams/{stream}`, with its stats, as the list holds it; null when it is
 * gone (404) or no longer served (`409 stream_not_servable`): the list then says which.
 */
export async function readStream(name) {
  try {
    return await api(`/v1/streams/${encodeURIComponent(name)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    if (error instanceof ApiError && error.code === "stream_not_servable") return null;
    throw error;
  }
}

/**
 * `GET /readyz`: `{status, store}`; it answers 503 with `error` and `requestId` added when not
 * ready. An answer that is not that JSON (a proxy's HTML error page) throws an
 * {@linkcode ApiError} naming its status, not the JSON parser's message.
 */
export async function readiness() {
  const res = await fetch("/readyz", { cache: "no-store" });
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    body = null;
  }
  if (typeof body?.status !== "string") {
    const status = `${res.status}${res.statusText ? ` ${res.statusText}` : ""}`;
    throw new ApiError(
      res.status,
      "not_readiness",
      `/readyz answered ${status}, not the server's readiness JSON`,
    );
  }
  return body;
}

/**
 * Whether asking again may mend a failed request: the network (`status` 0), `408`, `429`, `5xx`.
 * Other answers stand until something changes (a key, the server's config).
 */
export function mayMend(status) {
  return status === 0 || status === 408 || status === 429 || status >= 500;
}

/** The HTTP status of a failed {@linkcode api} call: 0 when no answer came (the network). */
export function statusOf(error) {
  return error instanceof ApiError ? error.status : 0;
}

/**
 * How long (ms) after a `404` a followed stream is asked for again: an instance remembers a name
 * it found unknown for 5 s, so a stream created through another one may be unknown here that long.
 */
const NOT_FOUND_RETRY_MS = 6_000;

/**
 * Follows a stream's results (`GET /v1/streams/{stream}/subscribe` as SSE) with the SDK's
 * `subscribe()`, the key in `Authorization`: reconnecting with back-off (1 s doubling to 15 s, or
 * by `Retry-After`) and resuming after the last result; after a `404` again in 6 s; stopping at
 * an answer a retry cannot change (a revoked key's 401). Calls `onMessage(payload)` for each
 * result and a `subscribed` message (every (re)connection, so a view can reload what it may have
 * missed), and `onState(text, connected)` when the connection changes. Returns a function that
 * stops.
 */
export function follow(stream, { types, onMessage, onState }) {
  /** Why the server closed the last connection, when it said. */
  let closedBecause = "";
  const live = subscribe(stream, {
    key: storedKey() || undefined,
    endpoint: "",
    types,
    retryBaseMs: 1000,
    maxRetryMs: 15_000,
    notFoundRetryMs: NOT_FOUND_RETRY_MS,
    onMessage(payload) {
      if (payload.type === "closed") {
        closedBecause = `: closed by the server: ${payload.reason}`;
        return;
      }
      if (payload.type === "subscribed") {
        closedBecause = "";
        onState("live", true);
      }
      onMessage(payload);
    },
    onError(error) {
      if (error.status === undefined) {
        // The server's reason goes with the end of its connection, not with later failures.
        onState(
          closedBecause
            ? `reconnecting${closedBecause}`
            : `reconnecting (${error.message.replace(/^edgestream: /, "")})`,
          false,
        );
        closedBecause = "";
      } else if (mayMend(error.status)) {
        onState(`reconnecting (subscription answered ${error.status})`, false);
      } else if (error.status === 404) {
        // Asked again after NOT_FOUND_RETRY_MS: a stream just created through another instance
        // may be unknown to this one that long (a deleted stream leaves the page at the list's
        // next read).
        onState(
          `reconnecting (subscription answered 404 ${error.code ?? ""})`.replace(" )", ")"),
          false,
        );
      } else {
        onState(
          `stopped (subscription answered ${error.status} ${error.code ?? ""})`.replace(" )", ")"),
          false,
        );
      }
    },
  });
  return () => live.close();
}
