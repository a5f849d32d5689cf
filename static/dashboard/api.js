/**
 * Talking to edgestream from the page: the API key (kept in this tab's
 * `sessionStorage`, sent only as `Authorization: Bearer`, never in a URL),
 * JSON requests, and live results read from the SSE endpoint with `fetch`
 * (an `EventSource` cannot send the header, so it would need the key in the
 * URL).
 *
 * @module
 */
import { SseParser } from "./model.js";

const KEY_ITEM = "edgestream.key";

/** The key typed into the page, or "" when none. */
export function storedKey() {
  return sessionStorage.getItem(KEY_ITEM) ?? "";
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
 * gone (404).
 */
export async function readStream(name) {
  try {
    return await api(`/v1/streams/${encodeURIComponent(name)}`);
  } catch (error) {
    if (error instanceof ApiError && error.status === 404) return null;
    throw error;
  }
}

/** `GET /readyz`: `{status, store}`; it answers 503 with `error` and `requestId` added when not ready. */
export async function readiness() {
  const res = await fetch("/readyz", { cache: "no-store" });
  return await res.json();
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

/**
 * Follows a stream's results (`GET /v1/streams/{stream}/subscribe` as SSE),
 * reconnecting with back-off. Calls `onMessage(payload)` for each result and
 * `onState(text, connected)` when the connection changes; a `subscribed`
 * message (every (re)connection) is passed on too, so a view can reload
 * what it may have missed. Returns a function that stops.
 */
export function follow(stream, { types, onMessage, onState }) {
  const stop = new AbortController();
  const query = new URLSearchParams({ types: types.join(",") });
  const url = `/v1/streams/${encodeURIComponent(stream)}/subscribe?${query}`;
  (async () => {
    let delay = 1000;
    while (!stop.signal.aborted) {
      try {
        const res = await fetch(url, {
          headers: headers({ Accept: "text/event-stream" }),
          cache: "no-store",
          signal: stop.signal,
        });
        if (!res.ok) throw new Error(`subscription answered ${res.status}`);
        onState("live", true);
        delay = 1000;
        const parser = new SseParser();
        let closedBecause = "";
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const event of parser.push(value)) {
            if (event.event === "closed") {
              closedBecause = `: closed by the server: ${JSON.parse(event.data).reason}`;
            } else {
              onMessage(JSON.parse(event.data));
            }
          }
        }
        if (!stop.signal.aborted) onState(`reconnecting${closedBecause}`, false);
      } catch (error) {
        if (stop.signal.aborted) return;
        onState(`reconnecting (${error.message})`, false);
      }
      await sleep(delay, stop.signal);
      delay = Math.min(delay * 2, 15_000);
    }
  })();
  return () => stop.abort();
}
