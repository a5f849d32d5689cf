/**
 * edgestream's browser SDK, served at `/sdk.js`: send events from a web page
 * with a publishable key.
 *
 *   import { init, track } from "https://events.example.com/sdk.js";
 *   init({ key: "pk_…", dedupeField: "id" });
 *   track("pageviews", { path: location.pathname });
 *
 * Events are batched per stream and sent with `fetch(…, {keepalive: true})`
 * once `flushMs` passed or `maxBatch` events wait; on `pagehide` (and when
 * the page is hidden) what waits goes with `navigator.sendBeacon`. Each
 * event gets a random id under `dedupeField` (the stream's dedupe field),
 * and each batch an `Idempotency-Key`, so a retry counts nothing twice. A
 * batch answered 429 or 503, or lost to the network, is sent again with the
 * same key after `Retry-After` (or an exponential backoff), up to
 * `maxRetries` times; other refusals are dropped with a console warning.
 */

/** A random id: `crypto.randomUUID` exists only in secure contexts. */
function randomId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Browsers refuse keepalive bodies above 64 KiB in flight (bytes, not characters). */
const KEEPALIVE_BYTES = 60_000;

/** Whether a request body is small enough for `keepalive` and `sendBeacon`. */
function fitsKeepalive(body) {
  return new TextEncoder().encode(body).length < KEEPALIVE_BYTES;
}

/**
 * A tracker: `track(stream, event)` queues, `flush()` sends what waits.
 * Options: `key` (a publishable key, required), `endpoint` (the server; the
 * origin this module came from by default), `dedupeField` (where each event
 * gets its id; none by default), `maxBatch` (100), `flushMs` (1000),
 * `maxRetries` (5), `retryBaseMs` (500).
 */
export function createTracker(options) {
  if (!options?.key) throw new Error("edgestream: createTracker() needs a publishable 'key'");
  const endpoint = (options.endpoint ?? new URL(import.meta.url).origin).replace(/\/$/, "");
  const maxBatch = options.maxBatch ?? 100;
  const flushMs = options.flushMs ?? 1000;
  const maxRetries = options.maxRetries ?? 5;
  const retryBaseMs = options.retryBaseMs ?? 500;
  const queues = new Map();
  const sending = new Set();
  let timer;

  function url(stream) {
    return `${endpoint}/v1/streams/${encodeURIComponent(stream)}/events?key=${
      encodeURIComponent(options.key)
    }`;
  }

  async function send(stream, events) {
    const body = JSON.stringify(events);
    const keepalive = fitsKeepalive(body);
    const idempotencyKey = randomId();
    for (let attempt = 0;; attempt++) {
      let wait;
      try {
        const res = await fetch(url(stream), {
          method: "POST",
          headers: { "Content-Type": "application/json", "Idempotency-Key": idempotencyKey },
          body,
          keepalive,
        });
        if (res.ok) return;
        if (res.status !== 429 && res.status !== 503) {
          console.warn(`edgestream: ${stream} refused ${events.length} events: ${res.status}`);
          return;
        }
        const seconds = Number(res.headers.get("Retry-After"));
        if (Number.isFinite(seconds) && seconds > 0) wait = seconds * 1000;
      } catch {
        // The network failed: the same Idempotency-Key makes a resend safe.
      }
      if (attempt >= maxRetries) {
        console.warn(`edgestream: gave up sending ${events.length} events to ${stream}`);
        return;
      }
      await sleep((wait ?? retryBaseMs * 2 ** attempt) * (1 + Math.random() * 0.2));
    }
  }

  function flush() {
    clearTimeout(timer);
    timer = undefined;
    const sent = [];
    for (const [stream, events] of queues) {
      queues.delete(stream);
      for (let i = 0; i < events.length; i += maxBatch) {
        const promise = send(stream, events.slice(i, i + maxBatch));
        sending.add(promise);
        promise.finally(() => sending.delete(promise));
        sent.push(promise);
      }
    }
    return Promise.all(sent).then(() => undefined);
  }

  /**
   * `events` as JSON bodies under {@linkcode KEEPALIVE_BYTES} each, halving a batch that is not
   * (a beacon or keepalive body over the browsers' cap is refused); one event goes as it is.
   */
  function beaconBodies(events) {
    const body = JSON.stringify(events);
    if (events.length < 2 || fitsKeepalive(body)) return [body];
    const half = Math.ceil(events.length / 2);
    return [...beaconBodies(events.slice(0, half)), ...beaconBodies(events.slice(half))];
  }

  /** Sends what waits with beacons: they outlive the page. */
  function beacon() {
    clearTimeout(timer);
    timer = undefined;
    for (const [stream, events] of queues) {
      queues.delete(stream);
      for (let i = 0; i < events.length; i += maxBatch) {
        for (const body of beaconBodies(events.slice(i, i + maxBatch))) {
          // A string body goes as text/plain, which needs no preflight.
          if (!navigator.sendBeacon?.(url(stream), body)) {
            fetch(url(stream), { method: "POST", body, keepalive: true }).catch(() => {});
          }
        }
      }
    }
  }

  function track(stream, event) {
    const item = { ...event };
    if (options.dedupeField && item[options.dedupeField] === undefined) {
      item[options.dedupeField] = randomId();
    }
    const queue = queues.get(stream) ?? [];
    queue.push(item);
    queues.set(stream, queue);
    if (queue.length >= maxBatch) flush();
    else timer ??= setTimeout(flush, flushMs);
    return item;
  }

  if (typeof addEventListener === "function") {
    addEventListener("pagehide", beacon);
    addEventListener("visibilitychange", () => {
      if (document.visibilityState === "hidden") beacon();
    });
  }

  return {
    track,
    flush,
    beacon,
    /** Resolves once every batch sent so far is answered (or given up). */
    settled: () => Promise.all([...sending]).then(() => undefined),
  };
}

let tracker;

/** Sets up the module's tracker; see {@linkcode createTracker} for the options. */
export function init(options) {
  tracker = createTracker(options);
  return tracker;
}

/** Queues an event for a stream on the tracker {@linkcode init} set up. */
export function track(stream, event) {
  if (!tracker) throw new Error("edgestream: call init({ key }) before track()");
  return tracker.track(stream, event);
}

/** Sends what waits now. */
export function flush() {
  return tracker ? tracker.flush() : Promise.resolve();
}
