/**
 * edgestream's browser SDK, served at `/sdk.js`: send events from a web page
 * with a publishable key.
 *
 *   import { init, track } from "https://events.example.com/sdk.js";
 *   init({ key: "pk_…", dedupeField: "id" });
 *   track("pageviews", { path: location.pathname });
 *
 * Events are batched per stream and sent with `fetch(…, {keepalive: true})`
 * once `flushMs` passed or `maxBatch` events wait (a batch that would take the
 * keepalive requests in flight past what browsers allow waits for one to be
 * answered: a browser fails it as if the network had); on `pagehide` (and when
 * the page is hidden) what waits, and batches waiting to be sent again, go
 * with `navigator.sendBeacon`, within the 64 KiB browsers allow a page's
 * beacons in all; what does not fit is kept in `localStorage` (at most
 * 1,000 events a stream) and sent by the next page of the origin that loads
 * the SDK with the same endpoint (or by this one when it is shown again: one tab
 * takes it, under a Web Lock, where the browser has them), and
 * so is all of it while the server's last answer was a 502, 503 or 504 (its
 * store down, or a proxy in front of it while it restarts: a beacon,
 * unanswered, would be refused so and lost) or the browser is offline;
 * a batch waiting to be sent again that no beacon took is kept whole with its
 * `Idempotency-Key`, and the next page sends it under that key, as is one in
 * flight without `keepalive` (a body too large for it), which the browser
 * cancels when the page goes.
 * Each event gets a random id under `dedupeField` (the stream's dedupe
 * field), and each batch an `Idempotency-Key`, so a retry counts nothing
 * twice. A batch answered 408, 429, 502, 503 or 504 (502 and 504 from a proxy in
 * front of the server, while it restarts), or `409 idempotency_key_in_flight`, or
 * lost to the network, is sent again with the same key after `Retry-After`
 * (or an exponential backoff), up to `maxRetries` times (a try while the browser
 * is offline spends none: the batch waits for the `online` event); one whose retries
 * all failed so (a store outage outlasts them) is held with its key, not dropped,
 * and sent again, with as many retries, at the next flush (a later event's, or
 * `flush()`), when the browser comes `online`, or by itself: after `heldRetryMs`
 * (30 s), doubling each time this timer fires up to 5 minutes (from 30 s again
 * once the server answers anything but 408, 429, 502, 503 or 504), plus up to 20% at
 * random, never before the server's last `Retry-After` has passed (a `429`'s
 * for its own stream's batches only: rate limits are a stream's) (a timer set
 * only while a batch is so held, that keeps no Deno or Node process alive), or
 * with the page's beacon (as above) when the page goes first; a batch is sent
 * once at a time, whatever wakes it; the
 * batches held (offline or so), waiting out a retry's back-off or waiting for
 * room among the keepalive requests in flight are at most `maxHeld` events, the
 * oldest dropped first; one answered `413
 * too_many_events` with `details.maxEvents` (more events than a rate limit's
 * burst) is sent again split into batches of that many, as later batches (and
 * a page's beacons) to that stream are, and one answered
 * `413 payload_too_large` (a body over the server's 1 MiB) in halves; other
 * refusals are dropped with a console warning saying why, and told to `onRefused` (a wrong key,
 * a stream the key may not send to or that does not exist, a `500`). Events the server
 * rejects (its `rejected`, in a `202` or a `400 no_events_accepted`) are not
 * sent again: a console warning names the first one's error, and
 * `onRejected` hears of all of them.
 *
 * `close()` (a tracker's, or the module's for `init()`'s) sends what waits, keeps what it could
 * not send in `localStorage` as a page that goes does (at once, after one round of answers: no
 * retry is waited out), and removes the tracker's listeners and timers: a page that makes a
 * tracker per view leaks none. `init()` called again closes the tracker it replaces, and the new
 * one sends what that one kept once it is closed.
 *
 * `subscribe(stream, {key, onMessage})` follows a stream's live results from a
 * page, with a read key whose `origins` list it, resuming after a dropped
 * connection where it was (see {@linkcode subscribe}).
 */

/** A random id: `crypto.randomUUID` exists only in secure contexts. */
function randomId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** The JSON body of an answer, or undefined when it has none. */
async function jsonOf(res) {
  try {
    return await res.json();
  } catch {
    return undefined;
  }
}

/**
 * What a refusal's `error` says, for a warning: ` code: message`, or nothing when the answer had
 * no error body.
 */
function errorText(error) {
  return error?.code ? ` ${error.code}: ${error.message}` : "";
}

/** The longest wait a timer holds: browsers fire a longer one at once. */
const MAX_TIMER_MS = 2 ** 31 - 1;
/** A day in milliseconds: a stream's `idempotencyTtl` by default. */
const DAY_MS = 86_400_000;
/** The longest `idempotencyTtlMs`: 365 days. */
const MAX_IDEMPOTENCY_TTL_MS = 365 * DAY_MS;

/**
 * Resolves after `ms` (at most {@linkcode MAX_TIMER_MS}: a `Retry-After` of a year, or of
 * `Infinity`, is no retry at once), or at once when `signal` (optional) aborts.
 */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, Math.min(ms, MAX_TIMER_MS));
    signal?.addEventListener("abort", done, { once: true });
  });
}

/**
 * The longest the resend timer of held batches backs off to (ms), unless `heldRetryMs` is longer.
 */
const MAX_HELD_RETRY_MS = 300_000;

/**
 * Lets a timer not keep Deno or Node alive by itself (a page's timers keep nothing alive): a
 * tracker with batches held must not hold a test or a script's process open.
 */
function unrefTimer(timer) {
  try {
    if (typeof timer === "object") timer?.unref?.();
    else globalThis.Deno?.unrefTimer?.(timer);
  } catch {
    // Not a timer of the runtime (a fake clock's): nothing to let go.
  }
}

/** Whether the browser says it is offline. */
function isOffline() {
  return globalThis.navigator?.onLine === false;
}

/**
 * Resolves when the browser is online again (at once when it already is), or when `signal`
 * aborts.
 */
function untilOnline(signal) {
  if (!isOffline() || signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      globalThis.removeEventListener("online", done);
      signal.removeEventListener("abort", done);
      resolve();
    };
    globalThis.addEventListener("online", done);
    signal.addEventListener("abort", done);
  });
}

/**
 * Answers that say the server cannot take events now: `502`, `503` and `504` (its store down, or a
 * reverse proxy or load balancer in front of it while an instance restarts or is deployed): after
 * one, a beacon would be refused so, unanswered.
 */
const SERVER_DOWN = new Set([502, 503, 504]);
/**
 * Answers to a batch that may not hold when it is sent again: `408 body_timeout` (its body came too
 * slowly: a slow link), `429` (a rate limit), and those of {@linkcode SERVER_DOWN} (`502`, `503`,
 * `504`): none says the server refused the events. A `504`'s batch may have been applied (the
 * proxy gave up waiting for its answer): sent again under the same `Idempotency-Key`, it is that
 * answer's replay, and its events keep their dedupe ids. A `500` is the server saying it failed.
 */
const SEND_AGAIN = new Set([408, 429, ...SERVER_DOWN]);

/**
 * The value of field `path` in `event` (an event's JSON form, as parsed) as the server reads it
 * (`dedupe.field`, src/window/fields.ts `readField`): the key itself, else a dotted path into nested
 * objects (`meta.id`); undefined when absent.
 */
function fieldOf(event, path) {
  const own = typeof event === "object" && event !== null && Object.hasOwn(event, path)
    ? event[path]
    : undefined;
  if (own !== undefined || !path.includes(".")) return own;
  let node = event;
  for (const key of path.split(".")) {
    if (typeof node !== "object" || node === null || !Object.hasOwn(node, key)) return undefined;
    node = node[key];
  }
  return node;
}

/** Browsers refuse keepalive bodies above 64 KiB in flight (bytes, not characters). */
const KEEPALIVE_BYTES = 60_000;

function byteLength(text) {
  return new TextEncoder().encode(text).length;
}

/** Whether a request body is small enough for `keepalive` and `sendBeacon`. */
function fitsKeepalive(body) {
  return byteLength(body) < KEEPALIVE_BYTES;
}

/**
 * Bytes of the bodies of this module's keepalive requests in flight: browsers refuse a keepalive
 * request past 64 KiB in flight in all, failing its `fetch` as if the network had.
 */
let keepaliveInFlight = 0;

/** Wakes the sends waiting for room among the keepalive requests in flight. */
const keepaliveWaiters = new Set();

/** Whether a keepalive request of `bytes` would pass what browsers allow in flight. */
function keepaliveFull(bytes) {
  return keepaliveInFlight > 0 && keepaliveInFlight + bytes >= KEEPALIVE_BYTES;
}

/** Frees `bytes` of keepalive requests in flight, and wakes the sends waiting for room. */
function freeKeepalive(bytes) {
  keepaliveInFlight -= bytes;
  for (const wake of keepaliveWaiters) wake();
  keepaliveWaiters.clear();
}

/** How a run-time secret key begins (`POST /v1/keys`, `"type": "secret"`): never in a page. */
const SECRET_KEY_PREFIX = "sk_";

/** A stream's name, as the server takes it. */
const STREAM_NAME = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Where events that did not fit a page's beacons wait for the next page (localStorage), as a JSON
 * array of events, under `edgestream:<endpoint>|<key>|<stream>`: the format every release reads.
 */
const STORAGE_PREFIX = "edgestream:";

/**
 * Where batches waiting to be sent again wait for the next page with their `Idempotency-Key`, as a
 * JSON array of `{idempotencyKey, events}`: sent again under it, one whose `503` said `outcome:
 * unknown` counts once. A name of its own: a release that reads only the events above leaves it.
 */
const KEYED_STORAGE_PREFIX = "edgestream-keyed:";

/**
 * Where this release keeps what a page leaves for the next one, an entry per batch that no other
 * page rewrites: `edgestream-page:<endpoint>|<key>|<stream>|<time>-<seq>-<random>` (the endpoint
 * and key URI-encoded: `|` in a key is `%7C`), a JSON
 * `{idempotencyKey, events, expiresAt?, beaconed?}`. The two names above are still read (and
 * taken), so what a page of an older release kept is sent.
 */
const PAGE_STORAGE_PREFIX = "edgestream-page:";

/**
 * When an entry under {@linkcode PAGE_STORAGE_PREFIX} was kept, from its name's last part
 * `<time>-<seq>-<random>`: `{at, seq}` (`seq` orders the entries a page keeps in one millisecond).
 */
function entryOrder(suffix) {
  const [at, seq] = suffix.split("-").map((part) => parseInt(part, 10) || 0);
  return { at: at ?? 0, seq: seq ?? 0 };
}

/** Orders two `{at, seq}` ({@linkcode entryOrder}) oldest first. */
function olderFirst(a, b) {
  return a.at - b.at || a.seq - b.seq;
}

/** Counts the entries this module keeps, so that those of one millisecond keep their order. */
let keptSeq = 0;

/** Most events kept a stream: the oldest go first. */
const MAX_STORED_EVENTS = 1000;

/** Most events held in memory, by default, while the browser is offline: the oldest go first. */
const MAX_HELD_EVENTS = 10_000;

/**
 * Runs `take` holding the Web Lock `name` (`navigator.locks`: one tab of the origin at a time,
 * released when `take` returns, or when a tab holding it closes), or at once where the browser
 * has no Web Locks or refuses them (an opaque origin).
 */
function underLock(name, take) {
  const locks = globalThis.navigator?.locks;
  if (typeof locks?.request !== "function") return take();
  let ran = false;
  const taken = () => {
    ran = true;
    take();
  };
  try {
    locks.request(name, taken).catch((error) => {
      if (!ran) take();
      else globalThis.reportError?.(error);
    });
  } catch {
    if (!ran) take();
  }
}

function storage() {
  try {
    return globalThis.localStorage ?? null;
  } catch {
    return null; // Storage disabled (some privacy settings throw on access).
  }
}

/**
 * A tracker's number option `name`: `fallback` when absent (`undefined` or `null`), else a number
 * of at least `min`: whole when `whole`, else milliseconds a timer can wait (at most
 * {@linkcode MAX_TIMER_MS}), or at most `max` when given; anything else throws an error naming
 * the option.
 *
 * @example
 * trackerOption({ maxBatch: 50 }, "maxBatch", { fallback: 100, min: 1, whole: true }); // 50
 */
function trackerOption(options, name, { fallback, min, whole, max = undefined }) {
  const value = options[name];
  if (value === undefined || value === null) return fallback;
  // A wait in milliseconds is one a timer can hold: a longer one fires at once.
  max ??= whole ? Number.MAX_SAFE_INTEGER : MAX_TIMER_MS;
  if (
    typeof value !== "number" || !(value >= min && value <= max) ||
    (whole && !Number.isInteger(value))
  ) {
    const received = typeof value === "string" ? JSON.stringify(value) : String(value);
    throw new Error(
      `edgestream: createTracker() option '${name}' must be ${
        whole
          ? `a whole number of ${min} or more`
          : `a number of milliseconds from ${min} to ${max}`
      }, received ${received}`,
    );
  }
  return value;
}

/**
 * A tracker: `track(stream, event)` queues, `flush()` sends what waits, `close()` sends it and
 * ends the tracker (its page listeners and timers; a page that makes a tracker per view closes
 * the one it leaves).
 * Options: `key` (a publishable key, required; a secret `sk_…` key is refused with a console
 * error, and this throws, before anything is sent), `endpoint` (the server; the
 * origin this module came from by default), `dedupeField` (where each event
 * gets its id; none by default), `maxBatch` (100), `flushMs` (1000),
 * `maxRetries` (5), `retryBaseMs` (500), `maxHeld` (10,000: events held while
 * offline or after their retries failed, or waiting out a retry's back-off or for
 * room among the keepalive requests in flight; past it the oldest batches are
 * dropped, counted in `dropped`), `heldRetryMs` (30,000: the first wait before a batch
 * held after its retries is sent again by itself, doubling up to 5 minutes),
 * `idempotencyTtlMs` (86,400,000: the shortest `idempotencyTtl` of the streams it sends to; a
 * batch is sent under its key, by this page or a later one, only within it, less a minute, from
 * its first try: past it, it is dropped with a warning, counted in `dropped`), `onRejected` (called with `{stream, events, rejected, rejectedCount}` when the server
 * rejects events of a batch it was sent, as the reply's `rejected` lists them
 * (a replay's may list only the first ones: `rejectedCount` counts them all),
 * after a console warning naming the first one's error), `onRefused` (called with
 * `{stream, events, status, code, message}` when the server refuses a batch, which is dropped,
 * after the console warning: `401 unauthorized` for a wrong key, `403` for a stream the key may
 * not send to or an origin it does not list, `404 stream_not_found`, a `500`; `code` and `message`
 * are the answer's error's, null when it had none). A number option that
 * is given must be at least 1 (`maxBatch`, `idempotencyTtlMs`) or 0 (the others), whole but for
 * `flushMs`, `retryBaseMs`, `heldRetryMs` and `idempotencyTtlMs`, which are at most 2,147,483,647 ms (what a
 * timer holds; `idempotencyTtlMs`, never a timer's wait, 365 days): else this throws, naming it. `track()` throws for an event
 * that is not an object JSON can hold (a BigInt, a cycle), queuing nothing.
 */
export function createTracker(options) {
  // A first try against a server in open mode has no key to give: it checks none, so any will do.
  if (!options?.key) {
    throw new Error(
      "edgestream: createTracker() needs a publishable 'key' (pk_…, made with POST /v1/keys); a server in open mode (no EDGESTREAM_KEYS) checks none, so any text will do there, such as 'dev'",
    );
  }
  // A secret key (`sk_…`, made by POST /v1/keys) must never reach a browser, and the tracker sends
  // its key in URLs (`?key=`, as beacons need), which reach logs and traces (the server refuses
  // one there): refused before anything, what an earlier page kept included, is sent.
  if (typeof options.key === "string" && options.key.startsWith(SECRET_KEY_PREFIX)) {
    const message =
      "edgestream: createTracker() refuses a secret key (sk_…): it must never be in a web page, and would be sent in URLs; create a publishable key (pk_…) for the page, and delete this one";
    console.error(message);
    throw new Error(message);
  }
  const endpoint = (options.endpoint ?? new URL(import.meta.url).origin).replace(/\/$/, "");
  // Checked here, once: a maxBatch of 0 would loop for good in track(), a flushMs of Infinity
  // would send at once, and text would be added to, not counted.
  const countOption = (fallback, min) => ({ fallback, min, whole: true });
  const waitOption = (fallback) => ({ fallback, min: 0, whole: false });
  const maxBatch = trackerOption(options, "maxBatch", countOption(100, 1));
  const flushMs = trackerOption(options, "flushMs", waitOption(1000));
  const maxRetries = trackerOption(options, "maxRetries", countOption(5, 0));
  const retryBaseMs = trackerOption(options, "retryBaseMs", waitOption(500));
  const maxHeld = trackerOption(options, "maxHeld", countOption(MAX_HELD_EVENTS, 0));
  const heldRetryMs = trackerOption(options, "heldRetryMs", waitOption(30_000));
  // Never a timer's wait: only compared with the time, so up to a year.
  const idempotencyTtlMs = trackerOption(options, "idempotencyTtlMs", {
    fallback: DAY_MS,
    min: 1,
    whole: false,
    max: MAX_IDEMPOTENCY_TTL_MS,
  });
  const queues = new Map();
  const sending = new Set();
  /** Of the batches sent, those neither answered, refused nor held yet. */
  const answering = new Set();
  /**
   * Batches waiting to be sent again: `{stream, events, body, idempotencyKey, handedOver, offline,
   * held, parked, sleeping, hooks, stop, wake}` (`sleeping` between retries, which `close()` keeps
   * at once; `hooks` the send's, see `send()`; `wake` ends its wait); `held` while the browser is
   * offline (`offline`) or once their retries were spent on retryable failures (`parked`: sent
   * again by `wake()`, at the next flush, by the resend timer or on `online`).
   */
  const retrying = new Set();
  /**
   * Parts of a batch past a limit not sent yet, `{stream, parts, handedOver}`, sent one after
   * another: where `beacon()` finds them when the page goes.
   */
  const splitting = new Set();
  /**
   * Batches an earlier page kept, taken and not sent yet, `{stream, items, handedOver}` (`items`:
   * `{events, key, expiresAt, entries?}`, `entries` the kept batches `{events, key}` a merged one
   * is made of), sent one after another: where `beacon()` finds them when the page goes.
   */
  const takenWaiting = new Set();
  /** The keys of the batches this tracker took from `localStorage` ({@linkcode keep} reads). */
  const takenKeys = new Set();
  /**
   * While {@linkcode handOver} keeps batches, the streams whose 1,000 it keeps once it is done
   * ({@linkcode keep} does not then); else null.
   */
  let trimAfter = null;
  /**
   * While {@linkcode handOver} keeps batches, the entries of each stream it looked for copies in,
   * read once, by key (`Map<stream, Map<idempotencyKey, entries>>`), kept up to date as it keeps
   * and removes them; else null.
   */
  let copiesRead = null;
  /**
   * Batches in flight without `keepalive` (bodies of {@linkcode KEEPALIVE_BYTES} or more, which
   * browsers refuse it), `{stream, events, idempotencyKey, kept}`: the browser cancels them when
   * the page goes, so `beacon()` keeps each with its key for the next page (`kept`: the name of
   * its entry), and its answer, if the page stays, takes that entry out of `localStorage` again.
   */
  const unanswered = new Set();
  /** Events given up on (see the `dropped` getter). */
  let dropped = 0;
  /**
   * The most events a request to a stream may carry, by stream, as its last `413
   * too_many_events` said (`details.maxEvents`: a rate limit's burst, or the server's 1,000).
   */
  const maxEventsOf = new Map();
  /**
   * When (ms) each stream's rate limit may take events again, as its last `429`'s `Retry-After`
   * said: until then a beacon to it would be refused again, unanswered.
   */
  const limitedUntil = new Map();
  /**
   * Whether the server's last answer was a `502`, `503` or `504` (its store down, or a proxy in
   * front of it while it restarts): until another answer, a beacon would be refused so too,
   * unanswered, and its events lost.
   */
  let serverDown = false;
  let timer;
  /**
   * The promise of `close()`, once it was called: `track()` refuses events from then on, and a
   * batch that would wait to be sent again (or be split into parts) is kept at once instead.
   */
  let closing;
  /** Whether `close()` has kept what its flush left and resolved: a batch kept now is not counted. */
  let closed = false;
  /** Events kept in localStorage since `close()` was called, before it resolved: in its `{kept}`. */
  let keptClosing = 0;
  /**
   * The timer that sends the batches held after their retries failed again by itself (a page that
   * tracks nothing more flushes no more): set while one is held, cleared when none is.
   */
  let resendTimer;
  /** When (ms) the resend timer fires, while it is set. */
  let resendAt = 0;
  /**
   * Times the resend timer fired since the server last answered a request with anything but a
   * `408`, `429`, `502`, `503` or `504` (or the browser came online): its wait doubles with each.
   */
  let resendRounds = 0;
  /**
   * When (ms) the server's last `Retry-After` but a `429`'s has passed (a `503`'s: the store is
   * every stream's): the resend timer fires no sooner. A `429`'s is its stream's rate limit's
   * (`limitedUntil`): it holds back that stream's batches only.
   */
  let retryAfterUntil = 0;

  /** How many events of `stream` one batch carries: `maxBatch`, or fewer once a 413 said so. */
  function batchSize(stream) {
    return Math.min(maxBatch, maxEventsOf.get(stream) ?? maxBatch);
  }

  /**
   * Events of the batches in `retrying` that wait for the browser to be online, or for the next
   * flush once their retries were spent: counted from them, so that no path that takes a batch out
   * can leave it counted.
   */
  function heldEvents() {
    let count = 0;
    for (const waiting of retrying) if (waiting.held) count += waiting.events.length;
    return count;
  }

  /**
   * Takes a batch waiting to be sent again out of `retrying` and ends its wait: its send returns
   * without sending it, for the caller to keep, send by beacon or drop.
   */
  function takeOver(waiting) {
    waiting.handedOver = true;
    retrying.delete(waiting);
    waiting.stop.abort();
  }

  /**
   * Drops the oldest batches waiting to be sent again until at most `maxHeld` events wait: those
   * held, and those sleeping between retries or waiting for room among the keepalive requests in
   * flight (a server that takes requests and never answers them would else leave every batch
   * tracked after waiting in memory, without end).
   */
  function dropPastMaxHeld() {
    let waitingEvents = 0;
    for (const waiting of retrying) waitingEvents += waiting.events.length;
    for (const waiting of retrying) {
      if (waitingEvents <= maxHeld) break;
      takeOver(waiting);
      waitingEvents -= waiting.events.length;
      dropped += waiting.events.length;
      const how = waiting.held
        ? `held ${waiting.offline ? "while offline" : "to be sent again"}`
        : waiting.sleeping
        ? "waiting to be sent again"
        : "waiting for room among the keepalive requests in flight";
      console.warn(
        `edgestream: dropped ${waiting.events.length} events to ${waiting.stream} ${how}: more than maxHeld (${maxHeld}) waited`,
      );
    }
    scheduleResend();
  }

  /**
   * Sets the resend timer while a batch is held after its retries failed, and clears it when none
   * is: it fires after `heldRetryMs` (30 s), doubling each time it fires up to 5 minutes (or
   * `heldRetryMs` when longer), plus up to 20% at random (pages held by one outage do not all come
   * back at once), and never before the server's last `Retry-After` has passed (a `429`'s: its
   * stream's batches only); then it sends
   * them again as `flush()` does, each with its key and as many retries.
   */
  function scheduleResend() {
    let parked = false;
    /** When (ms) the first stream with a batch so held may take events again (its last 429). */
    let readyAt = Infinity;
    for (const waiting of retrying) {
      if (!waiting.parked) continue;
      parked = true;
      readyAt = Math.min(readyAt, limitedUntil.get(waiting.stream) ?? 0);
    }
    if (!parked) {
      clearTimeout(resendTimer);
      resendTimer = undefined;
      return;
    }
    const backoff = Math.min(
      heldRetryMs * 2 ** resendRounds,
      Math.max(heldRetryMs, MAX_HELD_RETRY_MS),
    ) * (1 + Math.random() * 0.2);
    const now = Date.now();
    const wait = Math.min(Math.max(backoff, retryAfterUntil - now, readyAt - now), MAX_TIMER_MS);
    // Set already, it stays unless this batch may go sooner (set while only a stream waiting out
    // its 429 held one, another stream's batch would wait for it).
    if (resendTimer !== undefined && resendAt <= now + wait) return;
    clearTimeout(resendTimer);
    resendAt = now + wait;
    resendTimer = setTimeout(() => {
      resendTimer = undefined;
      resendRounds++;
      resendHeld(true);
    }, wait);
    unrefTimer(resendTimer);
  }

  /**
   * Sends the batches held after their retries failed again (the oldest first), each with its key
   * and as many retries; `flush()` waits for each until it is answered, refused or held again. A
   * batch is woken once: one being sent is no longer held so, and is not sent twice at a time. The
   * resend timer (`byTimer`) wakes only the batches of streams whose last `429`'s `Retry-After`
   * has passed (rate limits are a stream's, or a key's in a stream), and is set again for the rest.
   */
  function resendHeld(byTimer = false) {
    clearTimeout(resendTimer);
    resendTimer = undefined;
    const now = Date.now();
    for (const waiting of retrying) {
      if (!waiting.parked) continue;
      if (byTimer && (limitedUntil.get(waiting.stream) ?? 0) > now) continue;
      waiting.parked = false;
      const heldNow = new Promise((resolve) => waiting.hooks.onHeld = resolve);
      const answeredOrHeld = Promise.race([waiting.hooks.promise, heldNow]);
      answering.add(answeredOrHeld);
      answeredOrHeld.finally(() => answering.delete(answeredOrHeld));
      waiting.wake();
    }
    scheduleResend();
  }

  /**
   * Reports the events of a sent batch that the server rejected (`answer.rejected`: the reply's
   * list, each `{index, errors}` with `index` into `events`; a replay lists the first ones and its
   * `rejectedOmitted` says how many more): a console warning counting them all and naming the
   * first one's first error, and `onRejected({stream, events, rejected, rejectedCount})`
   * (`rejectedCount`: all of them, the omitted ones too). They are not sent
   * again: sent again, they would be rejected again. Answers whether there were any.
   */
  function rejectedIn(stream, events, answer) {
    const rejected = answer?.rejected;
    if (!Array.isArray(rejected) || rejected.length === 0) return false;
    const first = rejected[0];
    const error = first?.errors?.[0];
    const omitted = Number.isInteger(answer.rejectedOmitted) ? answer.rejectedOmitted : 0;
    const rejectedCount = rejected.length + omitted;
    console.warn(
      `edgestream: ${stream} rejected ${rejectedCount} of ${events.length} events; ` +
        `event ${first?.index}: ${
          error ? `${error.path ? `${error.path}: ` : ""}${error.message}` : "invalid"
        }`,
    );
    callHandler(options.onRejected, { stream, events, rejected, rejectedCount });
    return true;
  }

  function url(stream) {
    return `${endpoint}/v1/streams/${encodeURIComponent(stream)}/events?key=${
      encodeURIComponent(options.key)
    }`;
  }

  /**
   * Sends `events` until answered or refused; `hooks.onHeld` is called when it starts waiting for
   * the browser to be online, or to be sent again once its retries are spent (`flush()` resolves
   * then). `hooks.promise` is the promise of the send `flush()` started (a later flush waits for
   * it once it wakes the batch).
   */
  async function send(stream, events, hooks, idempotencyKey = randomId(), expiresAt = undefined) {
    const body = JSON.stringify(events);
    const bytes = byteLength(body);
    const keepalive = bytes < KEEPALIVE_BYTES;
    // Any try under the key may have been applied: from the first one on, the server keeps its
    // reply for its idempotencyTtl only, and this or a later page sends it again only within it.
    expiresAt ??= Date.now() + keptTtl();
    for (let attempt = 0;; attempt++) {
      if (pastExpiry(stream, events, expiresAt)) return;
      let wait;
      let offline = false;
      /** Whether this attempt failed as the server or the network did: a 5xx, or no answer read. */
      let failed = false;
      if (keepalive) {
        // Counted as soon as it fits, with no await between: sends woken together each see the
        // others' bytes.
        if (!keepaliveFull(bytes)) keepaliveInFlight += bytes;
        else if (
          !(await keepaliveRoom({ stream, events, body, idempotencyKey, expiresAt }, bytes))
        ) return;
      }
      let inFlight = keepalive;
      const landed = () => {
        if (inFlight) freeKeepalive(bytes);
        inFlight = false;
      };
      const flight = { stream, events, idempotencyKey, expiresAt, kept: null };
      if (!keepalive) unanswered.add(flight);
      try {
        const res = await fetch(url(stream), {
          method: "POST",
          headers: { "Content-Type": "application/json", "Idempotency-Key": idempotencyKey },
          body,
          keepalive,
        });
        // Answered while the page stayed (hidden, then shown): what beacon() kept of it is not
        // the next page's to send; this send goes on with it.
        unanswered.delete(flight);
        if (flight.kept) unkeep(flight.kept);
        // A reply to read: accepted ones may name events the server rejected (their schema,
        // say), and a refusal says why. SEND_AGAIN's are sent again whatever they say.
        serverDown = SERVER_DOWN.has(res.status);
        failed = res.status >= 500;
        const again = SEND_AGAIN.has(res.status);
        // The server answers: the resend timer of held batches starts again from heldRetryMs.
        if (!again) resendRounds = 0;
        if (again) res.body?.cancel().catch(() => {});
        const answer = again ? undefined : await jsonOf(res);
        // Answered: its room among the keepalive requests is free, for the parts of a split too.
        landed();
        if (res.ok) {
          rejectedIn(stream, events, answer);
          return;
        }
        const code = answer?.error;
        // A body over the server's limit (1 MiB): none was applied; each half is sent on its own.
        const maxEvents = code?.code === "payload_too_large"
          ? Math.ceil(events.length / 2)
          : code?.details?.maxEvents;
        const split = code?.code === "too_many_events" || code?.code === "payload_too_large";
        // Later batches to the stream carry no more, here and in a page's beacons.
        if (code?.code === "too_many_events" && maxEvents >= 1) {
          maxEventsOf.set(stream, maxEvents);
        }
        if (split && maxEvents >= 1 && maxEvents < events.length) {
          // More events than a rate limit's burst: none was applied, and parts that fit it can
          // be, each under its own key.
          // One after another: parts sent at once would each wait for the same refill.
          const parts = [];
          for (let i = 0; i < events.length; i += maxEvents) {
            parts.push(events.slice(i, i + maxEvents));
          }
          const rest = { stream, parts, handedOver: false };
          splitting.add(rest);
          try {
            while (parts.length > 0 && !rest.handedOver) {
              // Closing or closed (a send the browser's `online` woke during close(), answered
              // after it): the parts are kept as new events, not sent by a tracker that ends.
              if (closing) {
                for (const part of parts.splice(0)) keepClosing(stream, part);
                break;
              }
              await send(stream, parts.shift(), hooks);
            }
          } finally {
            splitting.delete(rest);
          }
          return;
        }
        // The same key still being applied (a resend after a lost answer): its answer, or its
        // failure, comes with a later resend.
        const inFlight = code?.code === "idempotency_key_in_flight";
        if (!again && !inFlight) {
          // No event accepted (400 no_events_accepted): the events' own errors say why.
          if (rejectedIn(stream, events, answer)) return;
          console.warn(
            `edgestream: ${stream} refused ${events.length} events: ${res.status}${
              errorText(code)
            }`,
          );
          // The page's code hears of it too: a wrong key or stream name otherwise looks, to
          // it, like a batch sent (flush() resolves the same), and `dropped` does not count it.
          callHandler(options.onRefused, {
            stream,
            events,
            status: res.status,
            code: typeof code?.code === "string" ? code.code : null,
            message: typeof code?.message === "string" ? code.message : null,
          });
          return;
        }
        const seconds = Number(res.headers.get("Retry-After"));
        if (Number.isFinite(seconds) && seconds > 0) wait = seconds * 1000;
        // A 429's wait is its stream's: another stream's batches are not held back by it.
        if (wait !== undefined && res.status === 429) limitedUntil.set(stream, Date.now() + wait);
        else if (wait !== undefined) retryAfterUntil = Date.now() + wait;
      } catch {
        unanswered.delete(flight);
        // Kept with its key as the page went (the browser cancels it then): the copy kept is
        // sent, by the next page or this one shown again, not this one in part by a beacon. Unless
        // it is kept no more (a full store dropped it since): then it is sent again as any other.
        if (flight.kept && keptUnder(flight.kept)) return;
        // No answer the page may read: the network, or a proxy's 502 or 504 without CORS headers
        // (its own error page while edgestream restarts), which a browser fails so.
        failed = true;
        // The network failed: the same Idempotency-Key makes a resend safe. While the browser
        // says it is offline, a try spends no retry: the batch waits for it to be online again.
        offline = isOffline();
      } finally {
        landed();
      }
      // Closing (or closed: a send woken during close(), answered after it), it is kept at once
      // with its key, as close() keeps the rest, not slept on between retries or held: close()
      // resolves after one round of answers, and a closed tracker sends nothing more.
      if (closing) {
        keepClosing(stream, events, idempotencyKey, expiresAt);
        return;
      }
      // Its retries spent on answers that may change (a store outage outlasts them), it is held
      // with its key, not dropped: sent again, with as many retries, at the next flush, on
      // `online` or by the resend timer (scheduleResend()).
      const parked = !offline && attempt >= maxRetries;
      if (offline) attempt--;
      else if (parked) {
        console.warn(
          `edgestream: could not send ${events.length} events to ${stream} in ${
            maxRetries + 1
          } tries: held, sent again at the next flush or by itself later`,
        );
        attempt = -1;
      }
      // While it waits, a page leaving takes it along (beacon()), with its key.
      const held = offline || parked;
      const stop = new AbortController();
      const waiting = {
        stream,
        events,
        body,
        idempotencyKey,
        expiresAt,
        handedOver: false,
        failed,
        offline,
        held,
        parked,
        sleeping: !held,
        hooks,
        stop,
        wake: undefined,
      };
      retrying.add(waiting);
      // Past maxHeld the oldest batches waiting go, this one too when it alone is past it.
      dropPastMaxHeld();
      if (waiting.handedOver) return;
      if (waiting.held) {
        hooks?.onHeld?.();
        if (parked) {
          await new Promise((resolve) => {
            waiting.wake = resolve;
            stop.signal.addEventListener("abort", resolve, { once: true });
          });
        } else await untilOnline(stop.signal);
      } else {
        // Ended at once when beacon() takes the batch over.
        await sleep((wait ?? retryBaseMs * 2 ** attempt) * (1 + Math.random() * 0.2), stop.signal);
      }
      retrying.delete(waiting);
      if (waiting.handedOver) return;
    }
  }

  /**
   * Waits until `bytes` more fit among this module's keepalive requests in flight, and counts
   * them: past 64 KiB in all the browser refuses the request, which a send took for the network
   * and spent a retry on (or gave the batch up with none left). While it waits, a page leaving
   * takes the batch (`{stream, events, body, idempotencyKey}`) along (beacon()): false then.
   */
  async function keepaliveRoom(batch, bytes) {
    while (keepaliveFull(bytes)) {
      const stop = new AbortController();
      const waiting = { ...batch, handedOver: false, offline: false, stop };
      retrying.add(waiting);
      dropPastMaxHeld();
      if (waiting.handedOver) return false;
      await new Promise((resolve) => {
        keepaliveWaiters.add(resolve);
        stop.signal.addEventListener("abort", resolve, { once: true });
      });
      retrying.delete(waiting);
      if (waiting.handedOver) return false;
    }
    keepaliveInFlight += bytes;
    return true;
  }

  /**
   * Sends what waits, and the batches held after their retries failed; resolves once every batch
   * sent so far is answered, refused or held (while the browser is offline, or after its retries
   * failed), with `{held}`: the events held then.
   */
  function flush() {
    clearTimeout(timer);
    timer = undefined;
    // Batches held once their retries were spent go again first (the oldest first), each with
    // its key and as many retries: this flush waits for them too.
    resendHeld();
    for (const [stream, events] of queues) {
      queues.delete(stream);
      const size = batchSize(stream);
      for (let i = 0; i < events.length; i += size) sendBatch(stream, events.slice(i, i + size));
    }
    return Promise.all([...answering]).then(() => ({ held: heldEvents() }));
  }

  /**
   * Starts sending a batch, under `idempotencyKey` when given (one an earlier page kept with it),
   * else a new one; `flush()` waits for it until it is answered, refused or held.
   */
  function sendBatch(stream, events, idempotencyKey, expiresAt) {
    startSend((hooks) => send(stream, events, hooks, idempotencyKey, expiresAt));
  }

  /**
   * Starts `run(hooks)`, sends under `hooks` (see `send()`) that `flush()` waits for until they
   * are answered, refused or held.
   */
  function startSend(run) {
    const hooks = { onHeld: undefined, promise: undefined };
    const heldNow = new Promise((resolve) => hooks.onHeld = resolve);
    const promise = run(hooks);
    hooks.promise = promise;
    const answeredOrHeld = Promise.race([promise, heldNow]);
    sending.add(promise);
    answering.add(answeredOrHeld);
    promise.finally(() => sending.delete(promise));
    answeredOrHeld.finally(() => answering.delete(answeredOrHeld));
  }

  /**
   * `events` as `{events, body}` parts whose JSON bodies are under {@linkcode KEEPALIVE_BYTES}
   * each, halving a batch that is not (a beacon or keepalive body over the browsers' cap is
   * refused); one event goes as it is.
   */
  function beaconParts(events) {
    const body = JSON.stringify(events);
    if (events.length < 2 || fitsKeepalive(body)) return [{ events, body }];
    const half = Math.ceil(events.length / 2);
    return [...beaconParts(events.slice(0, half)), ...beaconParts(events.slice(half))];
  }

  /**
   * The margin a resend under a key keeps from the server's forgetting it: a minute, or half of
   * `idempotencyTtlMs` if shorter, for the time between a try's arrival and the resend's.
   */
  function keyMarginMs() {
    return Math.min(60_000, idempotencyTtlMs / 2);
  }

  /**
   * How long a batch may be sent again under its key: the stream's `idempotencyTtl` (option
   * `idempotencyTtlMs`) less {@linkcode keyMarginMs}.
   */
  function keptTtl() {
    return idempotencyTtlMs - keyMarginMs();
  }

  /**
   * Whether a batch sent under a key since `expiresAt` (its first try, plus {@linkcode keptTtl})
   * is past it, and so dropped (counted in `dropped`) with a console warning: within the margin of the server's forgetting
   * the key, a resend under it could count the events twice.
   */
  function pastExpiry(stream, events, expiresAt) {
    if (typeof expiresAt !== "number" || Date.now() < expiresAt) return false;
    dropped += events.length;
    console.warn(
      `edgestream: dropped ${events.length} events to ${stream} first sent too long ago to send again under their key: within ${keyMarginMs()} ms of the stream's idempotencyTtl (idempotencyTtlMs ${idempotencyTtlMs}) or past it, a resend could count them twice`,
    );
    return true;
  }

  /**
   * The name of what is kept for `stream` under `prefix`: the endpoint and key URI-encoded under
   * {@linkcode PAGE_STORAGE_PREFIX} (a key that is another plus `|…` takes none of its entries), as
   * they are under the names older releases kept.
   */
  function storageKey(stream, prefix = STORAGE_PREFIX) {
    const name = prefix === PAGE_STORAGE_PREFIX ? encodeURIComponent : String;
    return `${prefix}${name(endpoint)}|${name(options.key)}|${stream}`;
  }

  /**
   * The entries this release keeps for `stream` (`prefix` of {@linkcode storageKey} with
   * {@linkcode PAGE_STORAGE_PREFIX}, then `|<time>-<seq>-<random>`), oldest first:
   * `{name, at, seq, batch}`, the batch `null` when it is not JSON the SDK can read.
   */
  function pageEntries(store, stream) {
    const prefix = `${storageKey(stream, PAGE_STORAGE_PREFIX)}|`;
    const entries = [];
    for (const name of Object.keys(store)) {
      if (!name.startsWith(prefix)) continue;
      let batch = null;
      try {
        batch = JSON.parse(store.getItem(name) ?? "null");
      } catch {
        // Not ours to read.
      }
      entries.push({ name, ...entryOrder(name.slice(prefix.length)), batch });
    }
    return entries.sort(olderFirst);
  }

  /**
   * Keeps events for the next page, in an entry of their own that no other page rewrites (two
   * tabs that go at once each write theirs; a page reading, appending and writing back one entry
   * a stream would lose the other's): `{idempotencyKey, events, expiresAt?, beaconed?}` under
   * {@linkcode PAGE_STORAGE_PREFIX}. A batch waiting to be sent again is kept whole with its
   * `Idempotency-Key` (and expiry); events kept without one are given a new key, so that two tabs
   * that both take the entry count them once. Without storage they are lost, with a warning. A
   * stream keeps at most {@linkcode MAX_STORED_EVENTS}: whole entries go, oldest first, those of
   * batches a beacon took too (most likely delivered) before the others; of more events than that
   * only the newest are kept, under a new key, its key or not: the server takes at most 1,000 a
   * request, so no try of a batch of more was applied, and none of it counts twice. Answers the
   * entry's name, or `null`.
   */
  function keep(stream, events, idempotencyKey, expiresAt, beaconed = false) {
    const store = storage();
    try {
      if (!store) throw new Error("no storage");
      const whole = Boolean(idempotencyKey) && events.length <= MAX_STORED_EVENTS;
      const batch = { idempotencyKey: whole ? idempotencyKey : randomId(), events };
      let at = Date.now();
      let seq = ++keptSeq;
      /** Copies kept already under its key (two tabs that loaded at once both sent it). */
      const copies = [];
      if (whole) {
        // Only a batch this tab took from storage may have copies there (another tab took it
        // too): a batch of this page's own is kept without reading the stream's entries for them.
        // One copy, with the earlier expiry, a beacon's if either was, in the first copy's place
        // (the oldest is dropped first: the batch is no newer for the copy).
        const found = takenKeys.has(idempotencyKey) ? copiesOf(store, stream, idempotencyKey) : [];
        for (const entry of found) {
          const other = entry.batch;
          copies.push(entry.name);
          if (olderFirst(entry, { at, seq }) < 0) ({ at, seq } = entry);
          if (typeof other.expiresAt === "number" && !(other.expiresAt >= expiresAt)) {
            expiresAt = other.expiresAt;
          }
          if (other.beaconed) beaconed = true;
        }
        if (expiresAt !== undefined) batch.expiresAt = expiresAt;
        if (beaconed) batch.beaconed = true;
      } else batch.events = events.slice(-MAX_STORED_EVENTS);
      const name = `${storageKey(stream, PAGE_STORAGE_PREFIX)}|${at}-${seq}-${randomId()}`;
      store.setItem(name, JSON.stringify(batch));
      // The copies go (below): this entry is the key's one now.
      copiesRead?.get(stream)?.set(batch.idempotencyKey, [{ name, at, seq, batch }]);
      // Counted once kept: kept not at all, all of them are (below).
      dropped += events.length - batch.events.length;
      for (const copy of copies) store.removeItem(copy);
      if (trimAfter) {
        trimAfter.add(stream);
        return name;
      }
      return trimKept(store, stream).has(name) ? null : name;
    } catch {
      // A batch in flight is not lost yet: its send, failing, sends it again if the page stays.
      const inFlight = inFlightUnder(idempotencyKey);
      if (!beaconed && !inFlight) dropped += events.length;
      console.warn(
        beaconed
          ? `edgestream: kept no copy of ${events.length} events to ${stream} sent by beacon: no room to keep them`
          : inFlight
          ? `edgestream: kept no copy of ${events.length} events to ${stream} in flight: no room to keep them; lost if the page goes before it is answered`
          : `edgestream: lost ${events.length} events to ${stream}: no room to keep them`,
      );
      return null;
    }
  }

  /**
   * The entries of `stream` in `store` kept under `idempotencyKey`, oldest first: while
   * {@linkcode handOver} keeps batches, from the stream's entries read once ({@linkcode copiesRead}:
   * a page that took a merged batch of 1,000 entries keeps each again, and read for each keep, some
   * 500,000 entries were read and parsed), else read now.
   */
  function copiesOf(store, stream, idempotencyKey) {
    const under = (entry) => entry.batch?.idempotencyKey === idempotencyKey;
    if (!copiesRead) return pageEntries(store, stream).filter(under);
    let byKey = copiesRead.get(stream);
    if (!byKey) {
      byKey = new Map();
      for (const entry of pageEntries(store, stream)) {
        const key = entry.batch?.idempotencyKey;
        if (typeof key !== "string") continue;
        if (!byKey.has(key)) byKey.set(key, []);
        byKey.get(key).push(entry);
      }
      copiesRead.set(stream, byKey);
    }
    return byKey.get(idempotencyKey) ?? [];
  }

  /**
   * Takes whole entries of `stream` out of `store`, oldest first, those of batches a beacon took
   * too before the others, until it keeps at most {@linkcode MAX_STORED_EVENTS}; counts the others'
   * events (not those of a batch in flight) in `dropped`. Answers the names taken out.
   */
  function trimKept(store, stream) {
    const entries = pageEntries(store, stream);
    let count = 0;
    for (const entry of entries) count += entry.batch?.events?.length ?? 0;
    const taken = new Set();
    /** Events given up on to make room: not those a beacon took too (most likely delivered). */
    let evicted = 0;
    for (const onlyBeaconed of [true, false]) {
      for (const entry of entries) {
        if (count <= MAX_STORED_EVENTS) break;
        if (Boolean(entry.batch?.beaconed) !== onlyBeaconed) continue;
        store.removeItem(entry.name);
        const size = entry.batch?.events?.length ?? 0;
        count -= size;
        taken.add(entry.name);
        if (!onlyBeaconed && !inFlightUnder(entry.batch?.idempotencyKey)) evicted += size;
        entry.batch = { events: [] };
      }
    }
    dropped += evicted;
    return taken;
  }

  /**
   * Whether a request of this tracker under `idempotencyKey` is in flight without keepalive: a copy
   * of its batch kept in `localStorage` (handOver()) that goes, or that finds no room, is no event
   * given up on, as its send, failing, sends it again if the page stays.
   */
  function inFlightUnder(idempotencyKey) {
    if (!idempotencyKey) return false;
    for (const flight of unanswered) if (flight.idempotencyKey === idempotencyKey) return true;
    return false;
  }

  /** Whether the entry `name` ({@linkcode keep}'s answer) is still in `localStorage`. */
  function keptUnder(name) {
    try {
      return storage()?.getItem(name) != null;
    } catch {
      return false;
    }
  }

  /**
   * Takes the entry `name` ({@linkcode keep}'s answer: a batch kept while in flight, answered
   * since) out of `localStorage`.
   */
  function unkeep(name) {
    try {
      storage()?.removeItem(name);
    } catch {
      // Storage gone: the next page sends it under its key, counted once.
    }
  }

  /**
   * Keeps events (see {@linkcode keep}) once `close()` was called, counted in its `{kept}` until it
   * resolved (one kept later, from a send answered after it, cannot be).
   */
  function keepClosing(stream, events, idempotencyKey, expiresAt) {
    if (keep(stream, events, idempotencyKey, expiresAt) && !closed) keptClosing += events.length;
  }

  /**
   * Queues what an earlier page (or this one, hidden) kept, and sends it: the batches kept with
   * their `Idempotency-Key` under it, the events kept without (as every release keeps them) as new
   * ones. Taken under the Web Lock {@linkcode keptLockName} where the browser has Web Locks, so that
   * of two tabs of the origin that load at once (a browser restoring its session) one takes what
   * was kept and the other finds it gone: read and removed by each at once, it was sent by both,
   * and events kept without a key counted twice. A tracker closed before the lock is granted takes
   * nothing (the next one does), and nor does a page hidden when it is granted (hidden again after
   * it asked, or loaded hidden: a background tab, a prerender): its hide already went by, so what
   * it took would wait in the memory of a page that may be frozen or discarded unannounced, lost;
   * left kept, the page's next show takes it, or the next page.
   */
  function restore() {
    if (!storage()) return;
    underLock(keptLockName(), () => {
      if (!closing && globalThis.document?.visibilityState !== "hidden") takeKept();
    });
  }

  /** The Web Lock under which trackers of this endpoint and key take what was kept. */
  function keptLockName() {
    return `edgestream-kept:${endpoint}|${options.key}`;
  }

  /**
   * Takes what was kept for this endpoint and key out of `localStorage` and sends it: each entry
   * read and removed whole (one kept meanwhile by another tab is another entry, left for the next
   * take), a batch kept under one key in two entries sent once, with the earlier expiry.
   */
  function takeKept() {
    const store = storage();
    if (!store) return;
    const plainPrefix = storageKey("");
    const keyedPrefix = storageKey("", KEYED_STORAGE_PREFIX);
    const pagePrefix = storageKey("", PAGE_STORAGE_PREFIX);
    /** The batches taken: `[stream, batch, {at, seq}]` (an older release's at 0, first). */
    const taken = [];
    let found = false;
    for (const name of Object.keys(store)) {
      const page = name.startsWith(pagePrefix);
      const keyed = !page && name.startsWith(keyedPrefix);
      if (!page && !keyed && !name.startsWith(plainPrefix)) continue;
      let kept = [];
      try {
        kept = JSON.parse(store.getItem(name) ?? "[]");
      } catch {
        // Not ours to read: dropped below.
      }
      store.removeItem(name);
      if (page) {
        const rest = name.slice(pagePrefix.length);
        const bar = rest.lastIndexOf("|");
        if (bar === -1) continue;
        taken.push([rest.slice(0, bar), kept, entryOrder(rest.slice(bar + 1)), true]);
        continue;
      }
      if (!Array.isArray(kept) || kept.length === 0) continue;
      const stream = name.slice((keyed ? keyedPrefix : plainPrefix).length);
      if (!keyed) {
        queues.set(stream, [...kept, ...(queues.get(stream) ?? [])]);
        found = true;
        continue;
      }
      for (const batch of kept) taken.push([stream, batch, { at: 0, seq: 0 }]);
    }
    /** The batches to send by key, by stream: `{events, key, expiresAt, page}`, oldest first. */
    const byKey = new Map();
    const byStream = new Map();
    for (const [stream, batch, , page] of taken.sort((a, b) => olderFirst(a[2], b[2]))) {
      const events = batch?.events;
      if (!Array.isArray(events) || events.length === 0) continue;
      const key = typeof batch.idempotencyKey === "string" && batch.idempotencyKey !== ""
        ? batch.idempotencyKey
        : undefined;
      // Past when the server may have forgotten its key (from its first try on), a resend could
      // count it twice, so it is dropped (lost only if no try of it landed). One an older release
      // kept with no expiry gets that of its try now (send()), kept from then on: when its first
      // try was is unknown, and dropping it would lose what a page left just before an upgrade.
      const expiresAt = key && typeof batch.expiresAt === "number" ? batch.expiresAt : undefined;
      const copy = key && byKey.get(`${stream}|${key}`);
      if (copy) {
        if (expiresAt !== undefined && !(copy.expiresAt <= expiresAt)) copy.expiresAt = expiresAt;
        continue;
      }
      const entry = { events, key, expiresAt, page: Boolean(page && key) };
      if (key) {
        byKey.set(`${stream}|${key}`, entry);
        takenKeys.add(key);
      }
      if (!byStream.has(stream)) byStream.set(stream, []);
      byStream.get(stream).push(entry);
    }
    // Hashing needs crypto.subtle (a secure context): without it each entry goes on its own.
    const canMerge = typeof globalThis.crypto?.subtle?.digest === "function";
    for (const [stream, entries] of byStream) {
      /** Entries never tried (no expiry: no body was sent under their key), and the others. */
      const fresh = [];
      const tried = [];
      const plain = [];
      for (const entry of entries) {
        if (pastExpiry(stream, entry.events, entry.expiresAt)) continue;
        // Without a key a batch is sent as new events, as those kept without one are.
        if (!entry.key) plain.push(entry.events);
        else (entry.page && entry.expiresAt === undefined ? fresh : tried).push(entry);
      }
      // Never-tried entries go merged, in their kept order, into batches of at most the batch
      // size (one larger goes alone), each under a key hashed from its entries' keys: a tab that
      // took the same entries sends the same batches under the same keys, counted once.
      const size = batchSize(stream);
      let group = [];
      let count = 0;
      const groups = [];
      for (const entry of fresh) {
        if (group.length > 0 && (!canMerge || count + entry.events.length > size)) {
          groups.push(group);
          group = [];
          count = 0;
        }
        group.push(entry);
        count += entry.events.length;
      }
      if (group.length > 0) groups.push(group);
      const merged = groups.map((entries) =>
        entries.length === 1
          ? entries[0]
          : { events: entries.flatMap((entry) => entry.events), entries }
      );
      // Tried ones go whole under their own key, then the merged ones, all one after another (as
      // a split's parts do): at once, more than a rate limit's burst would be refused.
      if (tried.length + merged.length > 0) sendTaken(stream, [...tried, ...merged]);
      for (const events of plain) sendBatch(stream, events);
      found = true;
    }
    if (found) flush();
  }

  /**
   * Sends `items` ({@linkcode takenWaiting}) to `stream` one after another, a merged one under the
   * hash of its entries' keys ({@linkcode mergedKey}); closing, what is left is kept as it was.
   */
  function sendTaken(stream, items) {
    const rest = { stream, items, handedOver: false };
    takenWaiting.add(rest);
    startSend(async (hooks) => {
      try {
        while (items.length > 0 && !rest.handedOver) {
          if (closing) {
            for (const item of items.splice(0)) keepTaken(stream, item, keepClosing);
            break;
          }
          const item = items[0];
          let key = item.key;
          if (item.entries) {
            try {
              key = await mergedKey(item.entries);
              // A tab that took the same entries sends, and may keep, it under the same key.
              takenKeys.add(key);
            } catch {
              // No hash: each entry goes under its own key, in its place.
              items.splice(0, 1, ...item.entries);
              continue;
            }
          }
          // The page went while the key was hashed: beacon() kept it.
          if (rest.handedOver) break;
          items.shift();
          await send(stream, item.events, hooks, key, item.expiresAt);
        }
      } finally {
        takenWaiting.delete(rest);
      }
    });
  }

  /** Keeps a taken `item` with `keeper` ({@linkcode keep}'s signature) as its entries were kept. */
  function keepTaken(stream, item, keeper) {
    let kept = 0;
    for (const entry of item.entries ?? [item]) {
      if (keeper(stream, entry.events, entry.key, entry.expiresAt)) kept += entry.events.length;
    }
    return kept;
  }

  /**
   * The `Idempotency-Key` of kept entries sent merged: the hex SHA-256 of their keys, sorted, one a
   * line (64 characters).
   */
  async function mergedKey(entries) {
    const keys = entries.map((entry) => entry.key).sort().join("\n");
    const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(keys));
    return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  }

  /**
   * Sends what waits, and the batches waiting to be sent again, with beacons: they outlive the
   * page. Browsers allow a page's beacons (and keepalive requests) 64 KiB in all: what does not
   * fit in {@linkcode KEEPALIVE_BYTES} together is kept for the next page. So is what a stream
   * cannot take at once: past the most events a 413 said a request to it may carry (a rate
   * limit's burst: a bucket holds no more, and beacons all go at once, unanswered), or any while
   * its last 429's `Retry-After` has not passed, a beacon's events would be refused and lost; and
   * all of it while the server's last answer was a 502, 503 or 504 (its store down, or a proxy in
   * front of it while it restarts), or the browser offline.
   */
  function beacon() {
    // Offline, a beacon is lost, and while the server is down (the last answer a 502, 503 or 504)
    // it is refused, unanswered: all of it is kept for the next page.
    handOver(isOffline() || serverDown ? 0 : KEEPALIVE_BYTES);
  }

  /**
   * What {@linkcode beacon} does with `budget` bytes of beacons (0: none, all of it kept in
   * localStorage, as `close()` keeps what its flush left); answers how many events it kept.
   */
  function handOver(budget) {
    /** The entries kept whose events it answers, by name: their sizes. */
    const counted = new Map();
    const keepCounted = (stream, events, idempotencyKey, expiresAt) => {
      const name = keep(stream, events, idempotencyKey, expiresAt);
      if (name) counted.set(name, events.length);
      return name;
    };
    trimAfter = new Set();
    copiesRead = new Map();
    try {
      handOverAll(budget, keepCounted);
    } finally {
      // A stream's 1,000 kept, once a stream when all is kept, not after each batch.
      const streams = trimAfter;
      trimAfter = null;
      copiesRead = null;
      for (const stream of streams) {
        try {
          for (const name of trimKept(storage(), stream)) counted.delete(name);
        } catch {
          // Storage gone: what was kept stays as it is.
        }
      }
    }
    let kept = 0;
    for (const size of counted.values()) kept += size;
    return kept;
  }

  /** What {@linkcode handOver} does, keeping with `keepCounted` what it answers. */
  function handOverAll(budget, keepCounted) {
    clearTimeout(timer);
    timer = undefined;
    const batches = [];
    /**
     * Events each stream may still take by beacon now, once a 413 said how many: none while a
     * 429's `Retry-After` has not passed.
     */
    const room = new Map(maxEventsOf);
    const now = Date.now();
    for (const [stream, until] of limitedUntil) {
      if (until > now) room.set(stream, 0);
      else limitedUntil.delete(stream);
    }
    function roomOf(stream) {
      return room.get(stream) ?? Infinity;
    }
    // The oldest first: those waiting to be sent again, whole with their key when they fit (so
    // one the server applied already counts once), else as new ones.
    for (const waiting of retrying) {
      takeOver(waiting);
      if (pastExpiry(waiting.stream, waiting.events, waiting.expiresAt)) continue;
      const bytes = byteLength(waiting.body);
      const keyed = `${url(waiting.stream)}&idempotencyKey=${
        encodeURIComponent(waiting.idempotencyKey)
      }`;
      const count = waiting.events.length;
      if (
        bytes < budget && count <= roomOf(waiting.stream) &&
        navigator.sendBeacon?.(keyed, waiting.body)
      ) {
        budget -= bytes;
        room.set(waiting.stream, roomOf(waiting.stream) - count);
        // Its last try failed unanswered or with a 5xx: the beacon, unanswered, may be refused so
        // too (a proxy's 502 while edgestream restarts) and lost. It is kept with its key as well,
        // until the server may forget the key: the next page sends it under it, counted if the
        // beacon was lost, replayed if it was not.
        if (waiting.failed && count <= MAX_STORED_EVENTS) {
          keep(waiting.stream, waiting.events, waiting.idempotencyKey, waiting.expiresAt, true);
        }
      } else {
        batches.push([waiting.stream, waiting.events, waiting.idempotencyKey, waiting.expiresAt]);
      }
    }
    // Nothing is held any more: the resend timer stops.
    scheduleResend();
    // Then the parts of batches past a limit not sent yet: none of their events was applied.
    for (const rest of splitting) {
      rest.handedOver = true;
      splitting.delete(rest);
      for (const part of rest.parts.splice(0)) batches.push([rest.stream, part]);
    }
    // Then what was taken from an earlier page and not sent yet: kept again as it was.
    for (const rest of takenWaiting) {
      rest.handedOver = true;
      takenWaiting.delete(rest);
      for (const item of rest.items.splice(0)) keepTaken(rest.stream, item, keepCounted);
    }
    for (const [stream, events] of queues) {
      queues.delete(stream);
      const size = batchSize(stream);
      for (let i = 0; i < events.length; i += size) {
        batches.push([stream, events.slice(i, i + size)]);
      }
    }
    for (const [stream, events, idempotencyKey, expiresAt] of batches) {
      const parts = beaconParts(events);
      /** The parts of `events` no beacon took. */
      const unsent = [];
      for (const part of parts) {
        const bytes = byteLength(part.body);
        let sent = false;
        if (bytes < budget && part.events.length <= roomOf(stream)) {
          // A string body goes as text/plain, which needs no preflight.
          if (navigator.sendBeacon) {
            sent = navigator.sendBeacon(url(stream), part.body);
          } else {
            fetch(url(stream), { method: "POST", body: part.body, keepalive: true })
              .catch(() => {});
            sent = true;
          }
        }
        if (sent) {
          budget -= bytes;
          room.set(stream, roomOf(stream) - part.events.length);
        } else unsent.push(part.events);
      }
      // A batch waiting to be sent again that no beacon took (the store down, offline, no room)
      // is kept whole with its key: the next page sends it under it, so that counts once what its
      // 503 with `outcome: unknown` applied. What is left of one that went in part goes as new.
      if (idempotencyKey && unsent.length === parts.length) {
        keepCounted(stream, events, idempotencyKey, expiresAt);
      } else for (const part of unsent) keepCounted(stream, part);
    }
    // Last, the batches in flight without keepalive: the browser cancels them when the page goes,
    // perhaps after the server had their body. Too large for a beacon, each is kept whole with its
    // key (the newest kept, so the last a full store drops), which the next page, or this one
    // shown again, sends it under: one the server applied is that answer's replay. One of more
    // events than a stream keeps is not kept (its part would go as new events, counted twice if
    // it was applied): its send's failure retries it, as before.
    for (const flight of unanswered) {
      if (flight.kept || flight.events.length > MAX_STORED_EVENTS) continue;
      flight.kept = keep(flight.stream, flight.events, flight.idempotencyKey, flight.expiresAt);
    }
  }

  function track(stream, event) {
    // A closed tracker's listeners and timers are gone: an event queued now would never be sent.
    if (closing) {
      throw new Error(
        `edgestream: track('${
          String(stream).slice(0, 100)
        }', event) on a closed tracker: create another with createTracker()`,
      );
    }
    // Else its preflight was refused, each send failed as if the network had and was retried
    // and held, and its beacon was refused.
    if (typeof stream !== "string" || !STREAM_NAME.test(stream)) {
      throw new TypeError(
        `edgestream: track('${
          String(stream).slice(0, 100)
        }', event) takes a stream name: 1-64 letters, digits, '_' and '-'`,
      );
    }
    if (typeof event !== "object" || event === null || Array.isArray(event)) {
      throw new TypeError(`edgestream: track('${stream}', event) takes an object as the event`);
    }
    const item = { ...event };
    // An event JSON cannot hold (a BigInt, a cycle) would fail its whole batch when sent, and a
    // page's beacon with it: it is refused here, queuing nothing.
    let json;
    try {
      json = JSON.stringify(item);
    } catch (error) {
      throw new TypeError(
        `edgestream: track('${stream}', event) takes an event JSON can hold: ${error.message}`,
      );
    }
    // The server reads the field in the event as sent, so it is read here from that JSON, not from
    // `item`: a value sent as null (null, NaN, an invalid Date, toJSON giving null) or left out (a
    // function, a symbol, a key an object's toJSON drops) is no id to the server, which then
    // deduplicates the event by none: it gets one of its own.
    if (options.dedupeField) {
      const id = json === undefined ? undefined : fieldOf(JSON.parse(json), options.dedupeField);
      if (id === undefined || id === null) item[options.dedupeField] = randomId();
    }
    const queue = queues.get(stream) ?? [];
    queue.push(item);
    queues.set(stream, queue);
    if (queue.length >= maxBatch) flush();
    else timer ??= setTimeout(flush, flushMs);
    return item;
  }

  /**
   * Back online, the batches held after their retries failed (on the network, say) go at once, as
   * those held while offline do.
   */
  function online() {
    resendRounds = 0;
    resendHeld();
  }

  /** Hidden, the page may never come back: what waits goes (`beacon()`); shown, what was kept. */
  function visibilityChanged() {
    if (document.visibilityState === "hidden") beacon();
    else if (!closing) restore();
  }

  const listening = typeof addEventListener === "function";
  if (listening) {
    addEventListener("pagehide", beacon);
    addEventListener("online", online);
    addEventListener("visibilitychange", visibilityChanged);
  }
  // init() called again: what the tracker it replaces keeps on closing is read once it closed.
  const restoreAfter = restoreAfterNext;
  restoreAfterNext = undefined;
  if (restoreAfter) {
    Promise.resolve(restoreAfter).catch(() => {}).then(() => {
      if (!closing) restore();
    });
  } else restore();

  /**
   * Ends the tracker: `track()` throws from now on; what waits is sent as `flush()` sends it (the
   * batches held after their retries too), and once that is answered, refused or kept, its page
   * listeners and timers are removed. What was not sent is kept in localStorage as the page's
   * beacon keeps it (a batch with its `Idempotency-Key`), for the next tracker or page with the
   * same endpoint and key: a batch held offline, and at once (no retry waited out, no part of a
   * `413`'s split sent) one sleeping between retries or answered so during the close. Until then
   * a page that goes takes it by beacon. Resolves with `{kept}`: the events so kept (not a batch
   * the browser's `online` woke during the close and answered after it, kept too, but later).
   * Called again, returns the same promise.
   */
  function close() {
    if (closing) return closing;
    // Set first: a batch answered from now on is kept at once rather than sent again later.
    closing = true;
    // Batches sleeping between retries (a 503's Retry-After, a back-off) are kept at once with
    // their key: close() does not wait out their retries.
    for (const waiting of retrying) {
      if (!waiting.sleeping) continue;
      takeOver(waiting);
      keepClosing(waiting.stream, waiting.events, waiting.idempotencyKey, waiting.expiresAt);
    }
    closing = flush().then(() => {
      if (listening) {
        removeEventListener("pagehide", beacon);
        removeEventListener("online", online);
        removeEventListener("visibilitychange", visibilityChanged);
      }
      // Nothing stays in memory: the flush timer and the resend timer (nothing is held) stop,
      // and each batch still waiting ends its own wait.
      const kept = keptClosing + handOver(0);
      closed = true;
      return { kept };
    });
    return closing;
  }

  return {
    track,
    flush,
    beacon,
    close,
    /**
     * Resolves once every batch sent so far is answered, refused or taken by the page's beacon (a
     * batch held is not, until it is sent again).
     */
    settled: () => Promise.all([...sending]).then(() => undefined),
    /**
     * Events held: while the browser is offline (sent once it is online again), or after their
     * retries failed (sent again at the next flush, on `online`, or by the resend timer).
     */
    get held() {
      return heldEvents();
    },
    /**
     * Events this tracker gave up on: past `maxHeld` waiting to be sent again (held or not); past
     * their key's expiry (`idempotencyTtlMs`), not sent again; not kept for want of storage; and
     * the oldest kept ones it took out of `localStorage` to keep a stream's 1,000, with no warning
     * (the others warn). Not copies kept of a batch a beacon took too, or of one in flight (its send
     * retries it if the page stays), nor events the server refused or rejected (a warning and
     * `onRefused` or `onRejected` tell those).
     */
    get dropped() {
      return dropped;
    },
  };
}

let tracker;

/**
 * Set by {@linkcode init} called again, for the {@linkcode createTracker} call it makes alone: a
 * promise that resolves once the tracker replaced is closed; what it kept is read then, not when
 * made. (Not an option: the caller's options object is handed over as given, as the first
 * `init()` hands it.)
 */
let restoreAfterNext;

/**
 * Sets up the module's tracker; see {@linkcode createTracker} for the options. One set up before
 * is closed (see the tracker's `close()`): what it queued is sent, it leaves no listener, and what
 * it kept is sent by the new tracker once it is closed.
 */
export function init(options) {
  const previous = tracker;
  let previousClosed;
  const restoreAfter = new Promise((resolve) => previousClosed = resolve);
  // Made first: options it refuses leave the tracker set up before as it was. After the module's
  // close(), the new tracker reads what that close keeps once it is done, as here; options
  // refused leave that close for the next init().
  restoreAfterNext = previous ? restoreAfter : moduleClosing;
  try {
    tracker = createTracker(options);
    moduleClosing = undefined;
  } finally {
    restoreAfterNext = undefined;
  }
  previousClosed(previous?.close());
  return tracker;
}

/** Queues an event for a stream on the tracker {@linkcode init} set up. */
export function track(stream, event) {
  if (!tracker) throw new Error("edgestream: call init({ key }) before track()");
  return tracker.track(stream, event);
}

/** Sends what waits now (see the tracker's `flush()`). */
export function flush() {
  return tracker ? tracker.flush() : Promise.resolve({ held: 0 });
}

/**
 * Closes the tracker {@linkcode init} set up (see the tracker's `close()`): `track()` then needs
 * `init()` again.
 */
export function close() {
  const closing = tracker ? tracker.close() : Promise.resolve({ kept: 0 });
  if (tracker) moduleClosing = closing;
  tracker = undefined;
  return closing;
}

/** The module's last {@linkcode close}, until {@linkcode init} makes the next tracker. */
let moduleClosing;

/**
 * Reads Server-Sent Events from text chunks as they arrive. `push` returns the events the chunk
 * completed: `{event, data, id}` (event "message" when the server named none, `id` null when the
 * event had none; comments and blank events are skipped). The dashboard reads its subscriptions
 * with it too.
 */
export class SseParser {
  #buffer = "";
  #event = "";
  #data = [];
  #id = null;

  /** Adds a chunk of the stream; returns the events it completed. */
  push(chunk) {
    this.#buffer += chunk;
    const events = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.#buffer);
      // A lone "\r" at the end may be the first half of "\r\n": wait for more.
      if (!match || (match[0] === "\r" && match.index === this.#buffer.length - 1)) break;
      const line = this.#buffer.slice(0, match.index);
      this.#buffer = this.#buffer.slice(match.index + match[0].length);
      if (line === "") {
        if (this.#data.length > 0) {
          events.push({
            event: this.#event || "message",
            data: this.#data.join("\n"),
            id: this.#id,
          });
        }
        this.#event = "";
        this.#data = [];
        this.#id = null;
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.#event = value;
      else if (field === "data") this.#data.push(value);
      else if (field === "id") this.#id = value;
    }
    return events;
  }
}

/**
 * `value` when it is a positive number of milliseconds, else `fallback`. `Infinity` is one, so
 * that a wait past what a timer holds is refused, not taken as the default.
 */
function positiveOr(value, fallback) {
  return typeof value === "number" && value > 0 ? value : fallback;
}

/**
 * The shortest wait `subscribe()` may be given (ms): with 1 ms it asked a failing server again a
 * thousand times a second, for as long as the page stayed open.
 */
const MIN_SUBSCRIBE_WAIT_MS = 100;

/**
 * A wait option of `subscribe()`: `fallback` when it is no positive number (none given), else a
 * number of milliseconds from {@linkcode MIN_SUBSCRIBE_WAIT_MS} to {@linkcode MAX_TIMER_MS}; any
 * other throws an error naming it.
 */
function subscribeWait(options, name, fallback) {
  const value = positiveOr(options[name], undefined);
  if (value === undefined) return fallback;
  if (value < MIN_SUBSCRIBE_WAIT_MS || value > MAX_TIMER_MS) {
    throw new Error(
      `edgestream: subscribe() option '${name}' must be a number of milliseconds from ${MIN_SUBSCRIBE_WAIT_MS} to ${MAX_TIMER_MS} (or none, for its default), received ${value}`,
    );
  }
  return value;
}

/**
 * Calls a page's `handler` (when given) with `value`; one that throws is logged, not passed on:
 * the tracker or subscription goes on.
 */
function callHandler(handler, value) {
  try {
    handler?.(value);
  } catch (thrown) {
    console.error(thrown);
  }
}

/**
 * The message an SSE event carries: its data as a JSON object. Data that is no JSON object is
 * logged and null is returned: the message is skipped, where closing the connection for it would
 * only reconnect and be sent it again.
 */
function messageOf(event) {
  try {
    const message = JSON.parse(event.data);
    if (typeof message === "object" && message !== null && !Array.isArray(message)) return message;
  } catch {
    // Logged below, as data that is JSON but no object is.
  }
  console.error(
    `edgestream: skipped a subscription message that is no JSON object (${event.event}${
      event.id ? ` ${event.id}` : ""
    }): ${event.data.slice(0, 200)}`,
  );
  return null;
}

/** Whether an error answer to a subscription may change when asked again. */
function retryable(status) {
  return status >= 500 || status === 408 || status === 429;
}

/**
 * Follows a stream's live results from a page (`GET /v1/streams/{stream}/subscribe` as Server-Sent
 * Events, read with `fetch` so the key goes in `Authorization`, not in the URL):
 * `onMessage(message)` gets each message in order, `subscribed` first (again at every
 * reconnection), then the results. A connection that ends or fails (the network, a server that
 * stops: its `closed` message is passed on too) is opened again after `retryBaseMs` (1000),
 * doubling up to `maxRetryMs` (30,000; either, when no positive number, is its default; a
 * `retryBaseMs` above `maxRetryMs` is cut to it), or after `Retry-After`, resuming after the last result received (`?after=`), so while the server's result
 * log still holds them none is missed or seen twice (`subscribed` says `"resumed": false` when it
 * could not: read the counters again). The back-off starts again once a result arrives. A 404 is
 * asked again after `notFoundRetryMs` when that is a positive number (an instance may take a stream
 * created through another for unknown for 5 s: 6000 covers that), the back-off then starting again;
 * it stops it otherwise. Any other error answer than 408, 429 and 5xx stops it (a retry cannot
 * change it); a `403 origin_not_allowed` (the key does not list the page's origin, or in open mode
 * `EDGESTREAM_ALLOWED_ORIGINS` does not) with a console warning too. `onError(error)` hears of
 * every failure and end (`error.status` and `error.code` for an error answer); one that throws is
 * logged and the subscription goes on. A message whose data is
 * no JSON object is logged (`console.error`) and skipped, the connection kept. Options: `key` (a
 * read key whose `origins` list the page; none in open mode; visible ASCII, else it throws), `endpoint` (the origin this module
 * came from by default), `types` (an array of strings, else it throws), `counter`, `filter`, `onMessage`, `onError`,
 * `retryBaseMs`, `maxRetryMs`, `notFoundRetryMs`; a positive number given to one of the last three
 * must be from 100 to 2,147,483,647 ms (what a timer holds), else it throws an error naming it, as a
 * shorter wait would ask a failing server again and again. Returns `{close()}`.
 */
export function subscribe(stream, options = {}) {
  const endpoint = (options.endpoint ?? new URL(import.meta.url).origin).replace(/\/$/, "");
  // A wait of none would ask again at once, for good: only a positive number is one, and one too
  // short to let a failing server be is refused.
  const maxRetryMs = subscribeWait(options, "maxRetryMs", 30_000);
  // The back-off never waits longer than its cap, its first wait included.
  const retryBaseMs = Math.min(subscribeWait(options, "retryBaseMs", 1000), maxRetryMs);
  const notFoundRetryMs = subscribeWait(options, "notFoundRetryMs", undefined);
  // A key no header carries failed every connection's fetch before it was sent, retried as a
  // network failure for good: refused at once. The key itself is not quoted.
  const key = options.key;
  if (key !== undefined && key !== null && key !== "") {
    const problem = typeof key !== "string" ? `a ${typeof key}` : /[^\x21-\x7e]/u.exec(key);
    if (problem) {
      throw new Error(
        `edgestream: subscribe() option 'key' must be visible ASCII characters, as a header carries them, received ${
          typeof problem === "string"
            ? problem
            : `one with U+${
              problem[0].codePointAt(0).toString(16).toUpperCase().padStart(4, "0")
            } at character ${[...key.slice(0, problem.index)].length + 1}`
        }`,
      );
    }
  }
  const types = options.types ?? null;
  // Not an array, it failed in every connection's request, retried for good without a word but
  // onError's: refused at once instead, as the waits are.
  if (
    types !== null && (!Array.isArray(types) || !types.every((type) => typeof type === "string"))
  ) {
    throw new Error(
      `edgestream: subscribe() option 'types' must be an array of event types, received ${
        JSON.stringify(types) ?? String(types)
      }`,
    );
  }
  const stop = new AbortController();
  const signal = stop.signal;
  /** The id of the last message with one: where a new connection resumes. */
  let after = null;
  (async () => {
    let delay = retryBaseMs;
    while (!signal.aborted) {
      let wait = delay;
      // A 404's wait is its own: the back-off after it starts again from retryBaseMs.
      let notFound = false;
      // This connection's own: whatever ends it (a throwing onMessage too) closes it.
      const attempt = new AbortController();
      const abort = () => attempt.abort();
      signal.addEventListener("abort", abort, { once: true });
      try {
        const query = new URLSearchParams();
        if (types) query.set("types", types.join(","));
        if (options.counter) query.set("counter", options.counter);
        if (options.filter) query.set("filter", options.filter);
        if (after) query.set("after", after);
        const headers = { Accept: "text/event-stream" };
        if (options.key) headers.Authorization = `Bearer ${options.key}`;
        const url = `${endpoint}/v1/streams/${encodeURIComponent(stream)}/subscribe?${query}`;
        const res = await fetch(url, { headers, cache: "no-store", signal: attempt.signal });
        if (!res.ok) {
          const body = (await jsonOf(res))?.error;
          const error = new Error(
            `edgestream: subscribing to '${stream}' answered ${res.status}: ${
              body?.message ?? res.statusText
            }`,
          );
          error.status = res.status;
          error.code = body?.code;
          // The page's origin is one the key does not list: no retry can change that, and without
          // an onError nothing would say why the page shows nothing.
          if (error.code === "origin_not_allowed") {
            console.warn(`${error.message} (origin_not_allowed): the subscription stops`);
          }
          callHandler(options.onError, error);
          if (res.status === 404 && notFoundRetryMs !== undefined) {
            wait = notFoundRetryMs;
            notFound = true;
          } else {
            if (!retryable(res.status)) return;
            const retryAfter = Number(res.headers.get("Retry-After"));
            if (retryAfter > 0) wait = retryAfter * 1000;
          }
        } else {
          const parser = new SseParser();
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            for (const event of parser.push(value)) {
              // Past it, even when it cannot be read: resumed before it, it would come again.
              if (event.id) after = event.id;
              const message = messageOf(event);
              if (message === null) continue;
              // A result came: the connection works, and the next one may come at once.
              if (message.type !== "subscribed" && message.type !== "closed") {
                delay = retryBaseMs;
                wait = delay;
              }
              options.onMessage?.(message);
            }
          }
          if (!signal.aborted) {
            callHandler(
              options.onError,
              new Error(`edgestream: the subscription to '${stream}' ended`),
            );
          }
        }
      } catch (error) {
        if (signal.aborted) return;
        callHandler(options.onError, error);
      } finally {
        signal.removeEventListener("abort", abort);
        attempt.abort();
      }
      await sleep(wait, signal);
      delay = notFound ? retryBaseMs : Math.min(delay * 2, maxRetryMs);
    }
  })();
  return {
    /** Ends the subscription: no more messages, no reconnection. */
    close() {
      stop.abort();
    },
  };
}
