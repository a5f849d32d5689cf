/**
 * The browser SDK's sending logic (`static/sdk/sdk.js`), run in Deno with a
 * recording `fetch`: what each request carries and how 429, 503 and 409
 * in flight are retried and a 413 past a burst is split. The real browser path is in tests/http/browser_chromium_test.ts.
 * `subscribe()`'s waits and resumption, against recorded answers on a fake clock; its real
 * connections in Chromium are in tests/http/cors_chromium_test.ts.
 */
import assert from "node:assert/strict";
import FakeTimers from "@sinonjs/fake-timers";
import fc from "fast-check";
// @ts-types="./sdk_types.d.ts"
import { close, createTracker, init, SseParser, subscribe, track } from "../../static/sdk/sdk.js";
import { createApp } from "../../src/app.ts";
import { RejectedCounts } from "../../src/ingest/mod.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { MemoryStore } from "../../src/store/mod.ts";

interface Sent {
  url: string;
  init: RequestInit & { headers: Record<string, string> };
  /** When it was sent (`Date.now()`). */
  at: number;
}

/**
 * Kept `batches`, each checked to expire within a few ms of a day less a minute
 * (`idempotencyTtlMs`' default) after `firstTry` (its key's first try), its `expiresAt` left out.
 */
function keptWithoutExpiry(batches: Array<{ expiresAt?: number }>, firstTry: number) {
  const kept = structuredClone(batches);
  for (const batch of kept) {
    const expected = firstTry + 86_400_000 - 60_000;
    assert.ok(Math.abs(batch.expiresAt! - expected) <= 50, `${batch.expiresAt} vs ${expected}`);
    delete batch.expiresAt;
  }
  return kept;
}

/** Whether README.md says `sentence`, its whitespace collapsed as the sentence's is. */
async function readmeSays(sentence: string): Promise<boolean> {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  return readme.replace(/\s+/g, " ").includes(sentence);
}

/** How a tracker option in milliseconds that is out of range is told. */
const MS_RANGE = "a number of milliseconds from 0 to 2147483647";

/** Collects what `console.warn` prints (the SDK's warnings) until `stopCapture()`. */
function captureWarnings(): { warnings: string[]; stopCapture(): void } {
  const warn = console.warn;
  const warnings: string[] = [];
  console.warn = (text: string) => warnings.push(text);
  return {
    warnings,
    stopCapture() {
      console.warn = warn;
    },
  };
}

/**
 * The app on `config` with a memory store, served on a free port, for the SDK to send to; with
 * localStorage empty until `close()`.
 */
async function serveApp(config: unknown) {
  localStorage.clear();
  const streams = compileConfig(config);
  const store = new MemoryStore();
  let rejectedCounts!: RejectedCounts;
  const app = createApp({
    streams,
    store,
    keys: await KeyRing.parse(""),
    rejectedCounts: (target, now) => rejectedCounts = new RejectedCounts(target, { now }),
  });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    /** The stream's stats in the store, rejected events of requests that accepted none counted. */
    async stats(stream: string) {
      await rejectedCounts.flush();
      return store.stats(stream, streams.get(stream)!.counterMetas);
    },
    async close() {
      await server.shutdown();
      localStorage.clear();
    },
  };
}

/**
 * Records what the SDK sends, answering each request with the next of `answers` (a promise for an
 * answer that comes later; 202 once none is left). Every test starts and ends with localStorage
 * empty: Deno keeps it between runs, and a tracker sends what an earlier one kept there.
 */
function recordingFetch(answers: Array<Response | Error | Promise<Response>>) {
  localStorage.clear();
  const sent: Sent[] = [];
  const original = globalThis.fetch;
  globalThis.fetch = ((url: string, init: Sent["init"]) => {
    sent.push({ url, init, at: Date.now() });
    const answer = answers.shift() ?? new Response(null, { status: 202 });
    return answer instanceof Error ? Promise.reject(answer) : Promise.resolve(answer);
  }) as typeof fetch;
  return {
    sent,
    restore: () => {
      globalThis.fetch = original;
      localStorage.clear();
    },
  };
}

/** What the SDK uses of `navigator.locks` (Web Locks, which Deno has but the types here lack). */
interface FakeLocks {
  request(name: string, callback: () => unknown): Promise<unknown>;
}

/**
 * Resolves once the trackers made so far for `endpoint` and `key` took what was kept: they take it
 * under the Web Lock `edgestream-kept:<endpoint>|<key>` (Deno has Web Locks), granted in the order
 * asked.
 */
async function keptTaken(endpoint: string, key: string) {
  await (navigator as unknown as { locks: FakeLocks }).locks.request(
    `edgestream-kept:${endpoint}|${key}`,
    () => {},
  );
}

/**
 * Stands `locks` in for the runtime's `navigator.locks` (`undefined`: a browser without Web Locks)
 * until the returned function is called.
 */
function withLocks(locks: unknown): () => void {
  Object.defineProperty(navigator, "locks", { value: locks, configurable: true });
  return () => delete (navigator as { locks?: unknown }).locks;
}

/**
 * Web Locks granted at once, in the call: a tracker takes what was kept when made, as without
 * Web Locks, where the test is about what it does with it.
 */
const LOCKS_GRANTED_AT_ONCE: FakeLocks = {
  request: (_name, callback) => Promise.resolve(callback()),
};

/**
 * Where a release before this one kept the batches of the fixture's stream `s` with their keys (a
 * JSON array of them), which this one still takes.
 */
const KEYED = "edgestream-keyed:https://e.example|pk_test|s";

/** A batch the SDK keeps for the next page, in an entry of its own. */
type KeptBatch = {
  idempotencyKey: string;
  events: Array<Record<string, unknown>>;
  expiresAt?: number;
  beaconed?: boolean;
};

/**
 * The names of the entries the SDK keeps for `stream` of `endpoint` and `key` in localStorage
 * (`edgestream-page:<endpoint>|<key>|<stream>|<time>-<seq>-<random>`, the endpoint and key
 * URI-encoded), oldest first.
 */
function keptNames(
  stream = "s",
  { endpoint = "https://e.example", key = "pk_test" } = {},
): string[] {
  const prefix = `edgestream-page:${encodeURIComponent(endpoint)}|${
    encodeURIComponent(key)
  }|${stream}|`;
  const order = (name: string) => name.slice(prefix.length).split("-").map(Number);
  return Object.keys(localStorage).filter((name) => name.startsWith(prefix)).sort((a, b) => {
    const [[atA, seqA], [atB, seqB]] = [order(a), order(b)];
    return atA - atB || seqA - seqB;
  });
}

/** The batches the SDK keeps for `stream` (see {@linkcode keptNames}), oldest first. */
function keptBatches(stream = "s", where: { endpoint?: string; key?: string } = {}): KeptBatch[] {
  return keptNames(stream, where).map((name) => JSON.parse(localStorage.getItem(name)!));
}

/** The events of {@linkcode keptBatches}, oldest first. */
function keptEvents(
  stream = "s",
  where: { endpoint?: string; key?: string } = {},
): Array<Record<string, unknown>> {
  return keptBatches(stream, where).flatMap((batch) => batch.events);
}

/**
 * The page the tests of keeping and sending again stand up: `fetch` recording what is sent and
 * answering `answers` in turn (or `fetchFailures` sends failing unanswered, `TypeError`s), with
 * localStorage cleared; `navigator.sendBeacon` refusing (`beacon: "refused"`) or taking and
 * recording each URL in `beacons` (`"recorded"`); console warnings captured; and `navigator.locks`
 * set to `locks` when the key is given (`undefined` too: no Web Locks). `options` are a tracker's
 * on it that tries each batch once, with `idempotencyTtlMs` when given. `dispose()` undoes it all.
 */
function pageFixture(setup: {
  answers?: Array<Response | Error | Promise<Response>>;
  fetchFailures?: number;
  beacon?: "refused" | "recorded";
  locks?: unknown;
  idempotencyTtlMs?: number;
}) {
  const answers = setup.answers ??
    Array.from({ length: setup.fetchFailures ?? 0 }, () => new TypeError("Failed to fetch"));
  const { sent, restore } = recordingFetch(answers);
  const beacons: string[] = [];
  if (setup.beacon === "refused") Object.assign(navigator, { sendBeacon: () => false });
  if (setup.beacon === "recorded") {
    Object.assign(navigator, { sendBeacon: (url: string) => beacons.push(url) > 0 });
  }
  const { warnings, stopCapture } = captureWarnings();
  const restoreLocks = "locks" in setup ? withLocks(setup.locks) : () => {};
  const options = {
    key: "pk_test",
    endpoint: "https://e.example",
    maxRetries: 0,
    ...(setup.idempotencyTtlMs === undefined ? {} : { idempotencyTtlMs: setup.idempotencyTtlMs }),
  };
  return {
    sent,
    beacons,
    warnings,
    options,
    dispose() {
      restoreLocks();
      stopCapture();
      if (setup.beacon) delete (navigator as { sendBeacon?: unknown }).sendBeacon;
      restore();
    },
  };
}

/** The fake clock's time at each call of `fetch` (the recording one, which it wraps). */
function fetchTimes(clock: { now: number }): number[] {
  const times: number[] = [];
  const recording = globalThis.fetch;
  globalThis.fetch = ((...args: Parameters<typeof fetch>) => {
    times.push(clock.now);
    return recording(...args);
  }) as typeof fetch;
  return times;
}

Deno.test("the SDK sends a batch with fetch(keepalive), an Idempotency-Key and an id per event under the dedupe field", async () => {
  const { sent, restore } = recordingFetch([]);
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://events.example/",
      dedupeField: "id",
      maxBatch: 2,
    });
    const first = tracker.track("page_views", { path: "/a" });
    tracker.track("page_views", { path: "/b", id: "mine" });
    await tracker.settled();
    assert.equal(sent.length, 1);
    assert.equal(sent[0].url, "https://events.example/v1/streams/page_views/events?key=pk_test");
    assert.equal(sent[0].init.method, "POST");
    assert.equal(sent[0].init.keepalive, true);
    assert.equal(sent[0].init.headers["Content-Type"], "application/json");
    assert.match(sent[0].init.headers["Idempotency-Key"], /^[0-9a-f-]{32,36}$/);
    const body = JSON.parse(String(sent[0].init.body));
    assert.deepEqual(body, [{ path: "/a", id: first.id }, { path: "/b", id: "mine" }]);

    // A body of 60,000 bytes or more goes without keepalive, which browsers refuse for it: here
    // 40,000 characters, 80,000 bytes of UTF-8.
    tracker.track("page_views", { path: "/c", note: "\u00e9".repeat(40_000) });
    tracker.track("page_views", { path: "/d" });
    await tracker.settled();
    assert.equal(sent.length, 2);
    assert.ok(String(sent[1].init.body).length < 60_000);
    assert.equal(sent[1].init.keepalive, false);
  } finally {
    restore();
  }
});

Deno.test("init() again closes the tracker it replaces, which sends what it queued and takes no more events, and close() ends the module's tracker: track() needs init() again", async () => {
  const { sent, restore } = recordingFetch([]);
  try {
    const options = { key: "pk_test", endpoint: "https://events.example", flushMs: 60_000 };
    const first = init(options);
    track("s", { n: 1 });
    // Before, the first tracker went on, its flush timer (and its listeners) left behind: the
    // test's timer sanitizer failed.
    init(options);
    assert.throws(() => first.track("s", { n: 2 }), /on a closed tracker/);
    track("s", { n: 3 });
    assert.deepEqual(await close(), { kept: 0 });
    assert.deepEqual(sent.map((request) => JSON.parse(String(request.init.body))), [
      [{ n: 1 }],
      [{ n: 3 }],
    ]);
    assert.throws(() => track("s", { n: 4 }), /call init/);
    assert.deepEqual(await close(), { kept: 0 });
  } finally {
    restore();
  }
});

Deno.test("init() again hands the options object over as given, as the first init() does: a key or endpoint a class gives by getter reaches the new tracker", async () => {
  const { sent, restore } = recordingFetch([]);
  try {
    class Options {
      get key() {
        return "pk_test";
      }
      get endpoint() {
        return "https://events.example";
      }
      flushMs = 60_000;
    }
    const options = new Options();
    init(options);
    // Before, the second init() spread the options into a new object, which has no getter of a
    // class: it threw for a missing key.
    init(options);
    track("s", { n: 1 });
    assert.deepEqual(await close(), { kept: 0 });
    assert.deepEqual(sent.map((request) => request.url), [
      "https://events.example/v1/streams/s/events?key=pk_test",
    ]);
  } finally {
    restore();
  }
});

Deno.test("a dotted dedupeField keeps the page's own id at that path, as the server reads it, and adds one only when there is none", async () => {
  const { sent, restore } = recordingFetch([]);
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://events.example",
      dedupeField: "meta.id",
      maxBatch: 3,
    });
    // Before, an id was added under the key "meta.id" beside the page's own meta.id, and the
    // server, reading that key first, deduplicated by the random one: a page's event sent twice
    // counted twice.
    tracker.track("s", { meta: { id: "order-1" } });
    tracker.track("s", { "meta.id": "order-2" });
    const added = tracker.track("s", { meta: { source: "web" } });
    await tracker.settled();
    const body = JSON.parse(String(sent[0].init.body));
    assert.deepEqual(body.slice(0, 2), [{ meta: { id: "order-1" } }, { "meta.id": "order-2" }]);
    assert.match(added["meta.id"], /^[0-9a-f-]{32,36}$/);
    assert.deepEqual(body[2], { meta: { source: "web" }, "meta.id": added["meta.id"] });
  } finally {
    restore();
  }
});

/**
 * Has `trackAll` track events on a tracker to `https://events.example` with `dedupeField`, flushes
 * them (every answer a 202), and returns what `trackAll` returned and the events sent, in order.
 */
async function sendDeduped<T>(
  dedupeField: string,
  trackAll: (tracker: ReturnType<typeof createTracker>) => T,
): Promise<{ tracked: T; sentEvents: unknown[] }> {
  const { sent, restore } = recordingFetch([]);
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://events.example",
      dedupeField,
    });
    const tracked = trackAll(tracker);
    await tracker.flush();
    const sentEvents = sent.flatMap((request) => JSON.parse(String(request.init.body)));
    return { tracked, sentEvents };
  } finally {
    restore();
  }
}

Deno.test("a dotted dedupeField keeps the nested id when the event's key of that name is one JSON leaves out (a function, a symbol, toJSON giving undefined), as the server reads the nested one", async () => {
  // Before, the key "meta.id" was read as the id, its JSON form was nothing, so a random id was
  // written there: the server, reading that key first, deduplicated by it and not by "abc", and
  // the same event tracked twice counted twice.
  const { tracked, sentEvents } = await sendDeduped("meta.id", (tracker) => [
    tracker.track("s", { "meta.id": () => 1, meta: { id: "abc" } }),
    tracker.track("s", { "meta.id": Symbol("x"), meta: { id: "abd" } }),
    tracker.track("s", { "meta.id": { toJSON: () => undefined }, meta: { id: "abe" } }),
  ]);
  assert.deepEqual(sentEvents, [{ meta: { id: "abc" } }, { meta: { id: "abd" } }, {
    meta: { id: "abe" },
  }]);
  for (const event of tracked) assert.notEqual(typeof event["meta.id"], "string");
});

Deno.test("a dotted dedupeField reads the id in the object's JSON form (its toJSON), as the server reads it, not the object's own keys", async () => {
  // Before, the id was looked for in the object itself: { meta } whose toJSON sends {id: "a"} had
  // none there, so a random id was written under the key "meta.id", which the server reads ahead
  // of the nested "a" (the same event tracked twice counted twice); and meta's own id "b", which
  // its toJSON leaves out, was kept as the id, so the server deduplicated that event by none.
  const { tracked, sentEvents } = await sendDeduped("meta.id", (tracker) => [
    tracker.track("s", { meta: { toJSON: () => ({ id: "a" }) } }),
    tracker.track("s", { meta: { id: "b", toJSON: () => ({}) } }),
  ]);
  const [kept, added] = tracked;
  assert.equal(Object.hasOwn(kept, "meta.id"), false);
  assert.match(added["meta.id"], /^[0-9a-f-]{32,36}$/);
  assert.deepEqual(sentEvents, [{ meta: { id: "a" } }, { meta: {}, "meta.id": added["meta.id"] }]);
});

Deno.test("a dedupeField holding null (or NaN or Infinity, sent as null) gets an id, as the server reads null as no dedupe id", async () => {
  // Before, null was kept as the page's own id: the server deduplicates by none for it, so a
  // batch sent again as new events (a beacon's remainder, a page's kept events) counted twice.
  // NaN and Infinity are sent as null (JSON has no such number): no id to the server either.
  const { tracked, sentEvents } = await sendDeduped("meta.id", (tracker) => [
    tracker.track("s", { "meta.id": null }),
    tracker.track("s", { meta: { id: null } }),
    tracker.track("s", { "meta.id": Number.NaN }),
    tracker.track("s", { meta: { id: Number.POSITIVE_INFINITY } }),
  ]);
  for (const event of tracked) assert.match(event["meta.id"], /^[0-9a-f-]{32,36}$/);
  const [own, nested, notANumber, infinite] = tracked.map((event) => event["meta.id"]);
  assert.deepEqual(sentEvents, [
    { "meta.id": own },
    { meta: { id: null }, "meta.id": nested },
    { "meta.id": notANumber },
    { meta: { id: null }, "meta.id": infinite },
  ]);
});

Deno.test("a dedupeField whose JSON form is null or nothing (an invalid Date, toJSON giving null, a function, a symbol) gets an id, as the server reads none there", async () => {
  // Before, these were kept as the page's own id: the server read null or no field, so
  // deduplicated the event by none.
  const { tracked, sentEvents } = await sendDeduped("id", (tracker) => [
    tracker.track("s", { id: new Date(Number.NaN) }),
    tracker.track("s", { id: { toJSON: () => null } }),
    tracker.track("s", { id: () => "x" }),
    tracker.track("s", { id: Symbol("x") }),
    tracker.track("s", { id: new Date(0) }),
  ]);
  for (const [index, event] of tracked.slice(0, 4).entries()) {
    assert.match(event.id, /^[0-9a-f-]{32,36}$/);
    assert.deepEqual(sentEvents[index], { id: event.id });
  }
  // A value whose JSON form is an id is kept: the server reads that.
  assert.deepEqual(sentEvents[4], { id: "1970-01-01T00:00:00.000Z" });
});

Deno.test("createTracker() refuses a number option it cannot use, naming it, instead of looping or sending at once", () => {
  const base = { key: "pk_test", endpoint: "https://events.example" };
  const refused: Array<[string, unknown, string]> = [
    // maxBatch 0 looped for good in the first track(), a negative one too.
    ["maxBatch", 0, "a whole number of 1 or more, received 0"],
    ["maxBatch", -1, "a whole number of 1 or more, received -1"],
    ["maxBatch", 2.5, "a whole number of 1 or more, received 2.5"],
    ["maxBatch", "100", 'a whole number of 1 or more, received "100"'],
    ["maxBatch", Number.NaN, "a whole number of 1 or more, received NaN"],
    // A timer holds at most 2^31 - 1 ms: a longer one (Infinity too) fires at once.
    ["flushMs", Number.POSITIVE_INFINITY, `${MS_RANGE}, received Infinity`],
    ["flushMs", 2 ** 31, `${MS_RANGE}, received 2147483648`],
    ["flushMs", -1, `${MS_RANGE}, received -1`],
    ["maxRetries", 1.5, "a whole number of 0 or more, received 1.5"],
    ["retryBaseMs", "fast", `${MS_RANGE}, received "fast"`],
    ["maxHeld", -10, "a whole number of 0 or more, received -10"],
    ["heldRetryMs", 2 ** 31, `${MS_RANGE}, received 2147483648`],
    // A key the server keeps for no time: every batch kept after a beacon would be dropped.
    ["idempotencyTtlMs", 0, "a number of milliseconds from 1 to 31536000000, received 0"],
    // Never a timer: up to a year, not capped at what a timer holds.
    [
      "idempotencyTtlMs",
      365 * 86_400_000 + 1,
      "a number of milliseconds from 1 to 31536000000, received 31536000001",
    ],
  ];
  for (const [name, value, expected] of refused) {
    assert.throws(
      () => createTracker({ ...base, [name]: value } as Parameters<typeof createTracker>[0]),
      { message: `edgestream: createTracker() option '${name}' must be ${expected}` },
      `${name}: ${String(value)}`,
    );
  }
  // Absent (undefined or null) is the default; the smallest and largest values are taken.
  createTracker({ ...base, maxBatch: undefined, flushMs: null as unknown as number });
  createTracker({ ...base, maxBatch: 1, flushMs: 0, maxRetries: 0, retryBaseMs: 0, maxHeld: 0 });
  createTracker({ ...base, flushMs: 2 ** 31 - 1, retryBaseMs: 2 ** 31 - 1, heldRetryMs: 0 });
  createTracker({ ...base, idempotencyTtlMs: 1 });
  createTracker({ ...base, idempotencyTtlMs: 2 ** 31 });
  createTracker({ ...base, idempotencyTtlMs: 365 * 86_400_000 });
});

Deno.test("createTracker() and init() refuse a secret key (sk_…) with a console error before sending anything, what an earlier page kept included", async () => {
  const { sent, restore } = recordingFetch([]);
  const error = console.error;
  const errors: string[] = [];
  console.error = (text: string) => errors.push(text);
  try {
    const endpoint = "https://events.example";
    // What a page that ran with this key kept would be sent at once by a tracker that took it.
    localStorage.setItem(`edgestream:${endpoint}|sk_secret123|orders`, JSON.stringify([{ n: 1 }]));
    for (const make of [createTracker, init]) {
      assert.throws(
        () => make({ key: "sk_secret123", endpoint }),
        /refuses a secret key \(sk_…\): it must never be in a web page/,
      );
    }
    assert.equal(errors.length, 2);
    assert.match(errors[0], /^edgestream: createTracker\(\) refuses a secret key/);
    // The key itself is not repeated in the console.
    assert.ok(!errors[0].includes("secret123"));
    assert.equal(sent.length, 0);
    assert.throws(() => track("orders", { n: 2 }), /call init\(\{ key \}\) before track\(\)/);
    assert.equal(sent.length, 0);
    // A publishable key still goes.
    createTracker({ key: "pk_test", endpoint, flushMs: 60_000 });
    assert.equal(errors.length, 2);
    assert.ok(
      await readmeSays(
        "`init()` (and `createTracker()`) refuses a secret key (`sk_…`, which must never be in a page, and which the SDK would send in URLs) with a console error (`edgestream: createTracker() refuses a secret key (sk_…): …`) and throws, before anything is sent",
      ),
    );
  } finally {
    console.error = error;
    restore();
  }
});

Deno.test("track() refuses an event that is no object or that JSON cannot hold, or a stream that is no name, queuing nothing, and the batch's other events are sent", async () => {
  const { sent, restore } = recordingFetch([]);
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://events.example",
      maxBatch: 3,
    });
    tracker.track("orders", { n: 1 });
    assert.throws(() => tracker.track("orders", { n: 10n }), {
      name: "TypeError",
      message: /^edgestream: track\('orders', event\) takes an event JSON can hold: .*BigInt/,
    });
    const cycle: Record<string, unknown> = { n: 3 };
    cycle.self = cycle;
    assert.throws(() => tracker.track("orders", cycle), {
      message: /^edgestream: track\('orders', event\) takes an event JSON can hold: /,
    });
    for (const event of [null, "text", [1, 2]]) {
      assert.throws(() => tracker.track("orders", event as unknown as Record<string, unknown>), {
        message: "edgestream: track('orders', event) takes an object as the event",
      });
    }
    // A stream that is no stream name: its preflight was refused (400), each send failed as if
    // the network had, was retried 5 times over 15 s and given up, and its beacon refused.
    for (const stream of ["page views", "", "x".repeat(65), "a/b", 7]) {
      assert.throws(() => tracker.track(stream as string, { n: 5 }), {
        name: "TypeError",
        message:
          `edgestream: track('${stream}', event) takes a stream name: 1-64 letters, digits, '_' and '-'`,
      });
    }
    tracker.track("orders", { n: 2 });
    await tracker.flush();
    assert.equal(sent.length, 1);
    assert.deepEqual(JSON.parse(String(sent[0].init.body)), [{ n: 1 }, { n: 2 }]);
    // The beacon too: nothing in the queue can stop it.
    tracker.track("orders", { n: 4 });
    tracker.beacon();
    assert.deepEqual(JSON.parse(String(sent[1].init.body)), [{ n: 4 }]);
  } finally {
    restore();
  }
});

Deno.test("the parts of a batch past a burst not sent yet go with the page's beacon as one burst fits, the rest kept for the next page, none lost or sent twice", async () => {
  const { sent, restore } = recordingFetch([
    new Response(
      JSON.stringify({
        error: {
          code: "too_many_events",
          message: "More events than the burst",
          details: { maxEvents: 2 },
        },
      }),
      { status: 413, headers: { "Content-Type": "application/json" } },
    ),
    // The first part waits to be sent again when the page goes (the network failed: a 429 or a
    // 503 would keep it for the next page, as a beacon would be refused again).
    new TypeError("Failed to fetch"),
  ]);
  // Deno has no sendBeacon: a browser's, recorded.
  const beacons: Array<{ url: string; body: string }> = [];
  Object.assign(navigator, {
    sendBeacon: (url: string, body: string) => beacons.push({ url, body }) > 0,
  });
  const numbers = (body: string) => JSON.parse(body).map((event: { n: number }) => event.n);
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://events.example",
      maxBatch: 6,
    });
    for (let n = 0; n < 6; n++) tracker.track("orders", { n });
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The whole batch refused, then its first part's send failed.
    assert.deepEqual(sent.map((request) => numbers(String(request.init.body))), [
      [0, 1, 2, 3, 4, 5],
      [0, 1],
    ]);
    tracker.beacon();
    // The first part again with its key; the wait ends at once. The two parts never sent are
    // kept: a bucket holds a burst (2) at most, and beacons go at once, so they were refused.
    assert.deepEqual(beacons.map((beacon) => numbers(beacon.body)), [[0, 1]]);
    assert.equal(
      new URL(beacons[0].url).searchParams.get("idempotencyKey"),
      sent[1].init.headers["Idempotency-Key"],
    );
    await tracker.settled();
    assert.equal(sent.length, 2, "nothing sent again after the beacons");
    assert.equal(localStorage.length, 3);
    // The first part's last try failed unanswered: a beacon may be refused so too (a proxy's 502
    // without CORS headers), so it is kept with its key as well, resent by the next page under it;
    // the parts never sent, each with a key of its own (none was tried), after it.
    const [keyed, ...parts] = keptBatches("orders", { endpoint: "https://events.example" });
    assert.deepEqual(parts.map((part) => part.events.map((event) => event.n)), [[2, 3], [4, 5]]);
    for (const part of parts) {
      assert.equal(part.expiresAt, undefined);
      assert.notEqual(part.idempotencyKey, keyed.idempotencyKey);
    }
    assert.deepEqual(keyed.events.map((event) => event.n), [0, 1]);
    assert.equal(keyed.idempotencyKey, sent[1].init.headers["Idempotency-Key"]);
    assert.ok(keyed.expiresAt! > Date.now() + 86_400_000 - 120_000);
    localStorage.clear();
  } finally {
    delete (navigator as { sendBeacon?: unknown }).sendBeacon;
    restore();
  }
});

Deno.test("the SDK resends a batch answered 408, 429 or 503, or lost, with the same Idempotency-Key after Retry-After", async () => {
  const { sent, restore } = recordingFetch([
    new Response(null, { status: 429, headers: { "Retry-After": "1" } }),
    new Response(null, { status: 503 }),
    new TypeError("Failed to fetch"),
    // The body came too slowly (a slow link): nothing was applied, so it was dropped for naught.
    Response.json({ error: { code: "body_timeout", message: "…" } }, { status: 408 }),
    new Response(null, { status: 202 }),
  ]);
  // A refusal it sends again is no refusal: onRefused hears only of batches dropped.
  const refused: unknown[] = [];
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      retryBaseMs: 1,
      onRefused: (report) => refused.push(report),
    });
    tracker.track("s", { n: 1 });
    const started = Date.now();
    await tracker.flush();
    assert.equal(sent.length, 5);
    assert.deepEqual(refused, []);
    assert.equal(new Set(sent.map((item) => item.init.headers["Idempotency-Key"])).size, 1);
    assert.equal(new Set(sent.map((item) => item.init.body)).size, 1);
    // The 429's Retry-After: 1 was waited for (the other retries back off from 1 ms).
    assert.ok(Date.now() - started >= 1_000, `${Date.now() - started} ms`);
  } finally {
    restore();
  }
});

Deno.test("the SDK resends a batch answered 502 or 504 (a proxy in front of the server while it restarts) as a 503, with the same Idempotency-Key and dedupe ids; a 500 is still dropped", async () => {
  const { sent, restore } = recordingFetch([
    // A load balancer's HTML error pages: no edgestream answer, nothing said about the events.
    new Response("<html><body><h1>502 Bad Gateway</h1></body></html>", {
      status: 502,
      headers: { "Content-Type": "text/html" },
    }),
    new Response("<html><body><h1>504 Gateway Time-out</h1></body></html>", {
      status: 504,
      headers: { "Content-Type": "text/html", "Retry-After": "1" },
    }),
    new Response(null, { status: 202 }),
    // The server's own 500: it says it failed, so the batch is dropped, with its warning.
    Response.json({ error: { code: "internal", message: "boom" } }, { status: 500 }),
  ]);
  const { warnings, stopCapture } = captureWarnings();
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      dedupeField: "id",
      retryBaseMs: 1,
    });
    const event = tracker.track("s", { n: 1 });
    const started = Date.now();
    await tracker.flush();
    // Before, the 502 dropped the batch with a warning: one request, the event lost.
    assert.deepEqual(warnings, []);
    assert.equal(sent.length, 3);
    assert.equal(new Set(sent.map((item) => item.init.headers["Idempotency-Key"])).size, 1);
    assert.equal(new Set(sent.map((item) => item.init.body)).size, 1);
    assert.deepEqual(JSON.parse(String(sent[2].init.body)), [{ n: 1, id: event.id }]);
    // The 504's Retry-After: 1 was waited for, as a 503's is.
    assert.ok(Date.now() - started >= 1_000, `${Date.now() - started} ms`);
    assert.equal(tracker.held, 0);

    tracker.track("s", { n: 2 });
    await tracker.flush();
    assert.equal(sent.length, 4);
    assert.deepEqual(warnings, ["edgestream: s refused 1 events: 500 internal: boom"]);
    assert.equal(tracker.held, 0);
  } finally {
    stopCapture();
    restore();
  }
});

Deno.test("a batch whose retries an outage outlasts (408, 429, 503, the network) is held with its key, within maxHeld, and sent again at the next flush or by the page's beacon; a 400 is still dropped", async () => {
  const { sent, restore } = recordingFetch([
    // Batch a: its try and its one retry fail (the store is down): held, not dropped.
    new Response(null, { status: 503, headers: { "Retry-After": "0" } }),
    new TypeError("Failed to fetch"),
    // The next flush: a again, with its key, counted.
    new Response(null, { status: 202 }),
    // Batches b and c, sent together: a slow link, a rate limit: both wait to be sent again, past
    // maxHeld (1), so the first to wait is dropped; the other's retry, the network: held.
    Response.json({ error: { code: "body_timeout", message: "…" } }, { status: 408 }),
    new Response(null, { status: 429, headers: { "Retry-After": "0" } }),
    new TypeError("Failed to fetch"),
    // Batch d: refused for good.
    Response.json({ error: { code: "invalid_request", message: "bad" } }, { status: 400 }),
  ]);
  const beacons: Array<{ url: string; body: string }> = [];
  Object.assign(navigator, {
    sendBeacon: (url: string, body: string) => beacons.push({ url, body }) > 0,
  });
  const { warnings, stopCapture } = captureWarnings();
  const numbers = (body: unknown) =>
    JSON.parse(String(body)).map((event: { n: number }) => event.n);
  const keyOf = (request: Sent) => request.init.headers["Idempotency-Key"];
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      retryBaseMs: 1,
      maxRetries: 1,
      maxHeld: 1,
      maxBatch: 1,
    });
    tracker.track("s", { n: 1 });
    // Before, the batch was given up and its event lost.
    assert.deepEqual(await tracker.flush(), { held: 1 });
    assert.deepEqual(warnings, [
      "edgestream: could not send 1 events to s in 2 tries: held, sent again at the next flush or by itself later",
    ]);
    assert.equal(sent.length, 2);
    // The next flush sends it again, with its key: had a try been applied, this is its replay.
    assert.deepEqual(await tracker.flush(), { held: 0 });
    assert.equal(sent.length, 3);
    assert.deepEqual(numbers(sent[2].init.body), [1]);
    assert.equal(new Set(sent.map(keyOf)).size, 1);
    assert.equal(tracker.held, 0);

    tracker.track("s", { n: 2 });
    tracker.track("s", { n: 3 });
    assert.deepEqual(await tracker.flush(), { held: 1 });
    assert.equal(sent.length, 6);
    // maxHeld: the batch waiting first went for the other.
    assert.equal(tracker.dropped, 1);
    assert.ok(
      warnings.includes(
        "edgestream: dropped 1 events to s waiting to be sent again: more than maxHeld (1) waited",
      ),
      JSON.stringify(warnings),
    );
    // The page goes: the held batch leaves by beacon, with its key.
    tracker.beacon();
    assert.equal(beacons.length, 1);
    const [kept] = numbers(beacons[0].body);
    assert.ok(kept === 2 || kept === 3, `${kept}`);
    const lastTry = sent.findLast((request) => numbers(request.init.body)[0] === kept)!;
    assert.equal(new URL(beacons[0].url).searchParams.get("idempotencyKey"), keyOf(lastTry));
    assert.equal(tracker.held, 0);
    await tracker.settled();
    // Its last try failed unanswered or with a 5xx (a beacon may be refused so too): kept with
    // its key as well, for the next page.
    assert.equal(localStorage.length, 1);
    const [copy] = keptBatches();
    assert.equal(copy.idempotencyKey, keyOf(lastTry));
    assert.equal(copy.beaconed, true);
    localStorage.clear();

    // A refusal that another try cannot change is dropped, with its warning, as before.
    tracker.track("s", { n: 5 });
    await tracker.settled();
    assert.equal(sent.length, 7);
    assert.equal(warnings.at(-1), "edgestream: s refused 1 events: 400 invalid_request: bad");
    assert.equal(localStorage.length, 0);
  } finally {
    stopCapture();
    delete (navigator as { sendBeacon?: unknown }).sendBeacon;
    restore();
  }
});

Deno.test("while the server's last answer is a 503 (its store down), leaving the page keeps what waits in localStorage instead of beacons refused so and lost, and the next page sends it", async () => {
  const { sent, restore } = recordingFetch([
    new Response(null, { status: 503, headers: { "Retry-After": "1" } }),
  ]);
  const beacons: Array<{ url: string; body: string }> = [];
  Object.assign(navigator, {
    sendBeacon: (url: string, body: string) => beacons.push({ url, body }) > 0,
  });
  const numbers = (body: unknown) =>
    JSON.parse(String(body)).map((event: { n: number }) => event.n);
  try {
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    tracker.track("s", { n: 1 });
    tracker.flush();
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(sent.length, 1);
    // The batch waits out its 503 as the page goes, with an event queued since.
    tracker.track("s", { n: 2 });
    tracker.beacon();
    // Before, both went by beacon, answered 503 unheard: lost.
    assert.equal(beacons.length, 0);
    // The batch that waits is kept whole with its key (a 503 with outcome unknown may have
    // applied it), the event queued since in an entry of its own, with a new key and no expiry
    // (no try of it was sent).
    const key = sent[0].init.headers["Idempotency-Key"];
    const [waiting, queued] = keptBatches();
    // With when the server may forget its key, from the first try under it on.
    assert.deepEqual(keptWithoutExpiry([waiting], sent[0].at), [
      { idempotencyKey: key, events: [{ n: 1 }] },
    ]);
    assert.deepEqual(queued.events, [{ n: 2 }]);
    assert.equal(queued.expiresAt, undefined);
    assert.notEqual(queued.idempotencyKey, key);
    await tracker.settled();
    assert.equal(sent.length, 1);
    // The next page sends them, the store back: the batch under its key (before, as new events
    // with none: counted twice, unless the stream had a dedupe field).
    const next = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    await next.flush();
    assert.equal(sent.length, 3);
    assert.deepEqual(numbers(sent[1].init.body), [1]);
    assert.equal(sent[1].init.headers["Idempotency-Key"], key);
    assert.deepEqual(numbers(sent[2].init.body), [2]);
    assert.notEqual(sent[2].init.headers["Idempotency-Key"], key);
    assert.equal(localStorage.length, 0);
    // Answered (202), the store is up: the page's beacon goes again.
    next.track("s", { n: 3 });
    next.beacon();
    assert.deepEqual(beacons.map((beacon) => numbers(beacon.body)), [[3]]);
  } finally {
    delete (navigator as { sendBeacon?: unknown }).sendBeacon;
    restore();
  }
});

Deno.test("after a 502 or 504 (a proxy in front of the server while it restarts), pagehide keeps the waiting batch in localStorage with its key, as after a 503, instead of a beacon refused so and lost", async () => {
  for (const status of [502, 504]) {
    const { sent, restore } = recordingFetch([
      new Response(null, { status, headers: { "Retry-After": "1" } }),
    ]);
    const beacons: string[] = [];
    Object.assign(navigator, {
      sendBeacon: (_url: string, body: string) => beacons.push(body) > 0,
    });
    try {
      const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example" });
      tracker.track("s", { n: 1 });
      tracker.flush();
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(sent.length, 1);
      // The batch waits out its answer's Retry-After as the page goes.
      globalThis.dispatchEvent(new Event("pagehide"));
      // Before, it went by beacon into the same proxy error, unanswered: lost.
      assert.deepEqual(beacons, [], `after a ${status}`);
      assert.deepEqual(
        keptWithoutExpiry(keptBatches(), sent[0].at),
        [{ idempotencyKey: sent[0].init.headers["Idempotency-Key"], events: [{ n: 1 }] }],
      );
      await tracker.close();
    } finally {
      delete (navigator as { sendBeacon?: unknown }).sendBeacon;
      restore();
    }
  }
});
Deno.test("a page upgraded mid-outage sends what the last release kept (events without keys) and keeps the key of each batch it keeps, within 1,000 events a stream", async () => {
  const { sent, restore } = recordingFetch([]);
  const beacons: Array<{ url: string; body: string }> = [];
  Object.assign(navigator, {
    sendBeacon: (url: string, body: string) => beacons.push({ url, body }) > 0,
  });
  try {
    // What the release before kept: a plain array of events, read and sent as it was.
    localStorage.setItem("edgestream:https://e.example|pk_test|s", JSON.stringify([{ n: 1 }]));
    // And what the release before kept with keys (a batch with no usable key: sent as new events).
    localStorage.setItem(
      "edgestream-keyed:https://e.example|pk_test|s",
      JSON.stringify([{ idempotencyKey: "k-1", events: [{ n: 2 }] }, { events: [{ n: 3 }] }, {}]),
    );
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    await tracker.flush();
    assert.deepEqual(
      sent.map((request) => [
        JSON.parse(String(request.init.body)),
        request.init.headers["Idempotency-Key"] === "k-1",
      ]),
      [[[{ n: 2 }], true], [[{ n: 3 }], false], [[{ n: 1 }], false]],
    );
    assert.equal(localStorage.length, 0);

    // Kept batches with their keys count toward a stream's 1,000 events, the oldest dropped whole.
    const storeDown = createTracker({
      key: "pk_other",
      endpoint: "https://e.example",
      maxBatch: 400,
      maxRetries: 0,
    });
    const answers = () => new Response(null, { status: 503, headers: { "Retry-After": "60" } });
    globalThis.fetch = (() => Promise.resolve(answers())) as typeof fetch;
    for (let n = 0; n < 1_200; n++) storeDown.track("s", { n });
    await storeDown.flush();
    assert.equal(storeDown.held, 1_200);
    storeDown.track("s", { n: 1_200 });
    storeDown.beacon();
    assert.equal(beacons.length, 0);
    const kept = keptBatches("s", { key: "pk_other" });
    assert.deepEqual(kept.map((batch) => [batch.events[0].n, batch.events.length]), [
      [400, 400],
      [800, 400],
      [1_200, 1],
    ]);
    assert.equal(new Set(kept.map((batch) => batch.idempotencyKey)).size, 3);
    assert.equal(localStorage.length, 3);
    for (
      const claim of [
        "when no beacon takes any of it, it is kept whole with its `Idempotency-Key` and the next page sends it under that key",
        "What a page keeps is an entry of its own a batch, a JSON `{idempotencyKey, events}` (with `expiresAt` once a try was sent under the key) under `edgestream-page:<endpoint>|<key>|<stream>|<time>-<seq>-<random>`",
        "events kept without a key are given one in their entry.",
        "What releases before kept under `edgestream:<endpoint>|<key>|<stream>` (a JSON array of events) and `edgestream-keyed:<endpoint>|<key>|<stream>` is still taken and sent (so a page upgraded during an outage sends what the release before kept)",
        "of a stream's 1,000 whole entries go, the oldest first",
        "a batch waiting to be sent again among it with its `Idempotency-Key`",
      ]
    ) assert.ok(await readmeSays(claim), claim);
  } finally {
    delete (navigator as { sendBeacon?: unknown }).sendBeacon;
    restore();
  }
});

Deno.test("the SDK resends a batch answered 409 idempotency_key_in_flight with the same key, and drops one answered another 409", async () => {
  const inFlight = () =>
    Response.json(
      { error: { code: "idempotency_key_in_flight", message: "still being processed" } },
      { status: 409 },
    );
  const { sent, restore } = recordingFetch([
    new TypeError("Failed to fetch"),
    inFlight(),
    new Response(null, { status: 202 }),
    Response.json({ error: { code: "counter_changed", message: "…" } }, { status: 409 }),
  ]);
  const { warnings, stopCapture } = captureWarnings();
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      retryBaseMs: 1,
    });
    tracker.track("s", { n: 1 });
    await tracker.flush();
    assert.equal(sent.length, 3);
    assert.equal(new Set(sent.map((item) => item.init.headers["Idempotency-Key"])).size, 1);
    assert.deepEqual(warnings, []);
    tracker.track("s", { n: 2 });
    await tracker.flush();
    assert.equal(sent.length, 4);
    assert.deepEqual(warnings, ["edgestream: s refused 1 events: 409 counter_changed: …"]);
  } finally {
    stopCapture();
    restore();
  }
});

Deno.test("the SDK splits a batch answered 413 too_many_events by details.maxEvents, each part with its own key", async () => {
  const { sent, restore } = recordingFetch([
    Response.json(
      { error: { code: "too_many_events", message: "burst 2", details: { maxEvents: 2 } } },
      { status: 413 },
    ),
  ]);
  // A batch split is sent, not refused: onRefused hears nothing of it.
  const refused: unknown[] = [];
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      onRefused: (report) => refused.push(report),
    });
    for (let n = 1; n <= 5; n++) tracker.track("s", { n });
    await tracker.flush();
    assert.deepEqual(
      sent.map((item) => JSON.parse(String(item.init.body)).map((event: { n: number }) => event.n)),
      [[1, 2, 3, 4, 5], [1, 2], [3, 4], [5]],
    );
    assert.equal(new Set(sent.map((item) => item.init.headers["Idempotency-Key"])).size, 4);
    assert.deepEqual(refused, []);
  } finally {
    restore();
  }
});

Deno.test("the SDK sends a batch answered 413 payload_too_large again in halves", async () => {
  const tooLarge = () =>
    Response.json({ error: { code: "payload_too_large", message: "over 1 MiB" } }, { status: 413 });
  const { sent, restore } = recordingFetch([tooLarge(), tooLarge()]);
  // Halves sent are no refusal: onRefused hears nothing of them.
  const refused: unknown[] = [];
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      onRefused: (report) => refused.push(report),
    });
    for (let n = 1; n <= 5; n++) tracker.track("s", { n });
    await tracker.flush();
    // The halves go at once: in whatever order their sends are made.
    assert.deepEqual(
      sent.map((item) => JSON.parse(String(item.init.body)).map((event: { n: number }) => event.n))
        .map((ns: number[]) => ns.join()).sort(),
      ["1,2", "1,2,3", "1,2,3,4,5", "3", "4,5"],
    );
    assert.deepEqual(refused, []);
  } finally {
    restore();
  }
});

Deno.test("the SDK drops a batch refused for good (4xx other than 429) without retrying", async () => {
  const { sent, restore } = recordingFetch([new Response(null, { status: 403 })]);
  const { warnings, stopCapture } = captureWarnings();
  try {
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    tracker.track("s", {});
    await tracker.flush();
    assert.equal(sent.length, 1);
    assert.deepEqual(warnings, ["edgestream: s refused 1 events: 403"]);
  } finally {
    stopCapture();
    restore();
  }
});

Deno.test("a batch waiting for room among the keepalive requests in flight (64 KiB in all) is sent once one lands, or goes with the page's beacon", async () => {
  // The first request is answered only when the test says so.
  const first = Promise.withResolvers<Response>();
  const answers: Array<Response | Error | Promise<Response>> = [first.promise];
  const { sent, restore } = recordingFetch(answers);
  const beacons: Array<{ url: string; body: string }> = [];
  Object.assign(navigator, {
    sendBeacon: (url: string, body: string) => beacons.push({ url, body }) > 0,
  });
  const pad = "y".repeat(300);
  try {
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    // Three batches of about 38 KB: only one fits in flight at a time.
    for (let n = 0; n < 300; n++) tracker.track("s", { n, pad });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(sent.length, 1, "the others wait for room");
    assert.equal(sent[0].init.keepalive, true);
    first.resolve(new Response(null, { status: 202 }));
    await new Promise((resolve) => setTimeout(resolve, 20));
    // The second went once the first landed; the third waits for it (answered at once here,
    // so it went too).
    assert.equal(sent.length, 3);
    assert.ok(sent.every((request) => request.init.keepalive));
    // A page leaving while a batch waits for room takes it along, with its key.
    const fourth = Promise.withResolvers<Response>();
    answers.push(fourth.promise);
    for (let n = 300; n < 500; n++) tracker.track("s", { n, pad });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(sent.length, 4);
    tracker.beacon();
    assert.equal(beacons.length, 1);
    assert.equal(JSON.parse(beacons[0].body)[0].n, 400);
    assert.ok(new URL(beacons[0].url).searchParams.get("idempotencyKey"));
    fourth.resolve(new Response(null, { status: 202 }));
    await tracker.settled();
    assert.equal(sent.length, 4, "the batch the beacon took is not sent again");
  } finally {
    delete (navigator as { sendBeacon?: unknown }).sendBeacon;
    restore();
  }
});

Deno.test("the SDK's beacon splits what waits into bodies under 60,000 bytes and 60,000 in all, keeps the rest in localStorage, and the next tracker sends it", async () => {
  const { sent, restore } = recordingFetch([]);
  const bodies = () =>
    sent.map((request) => JSON.parse(String(request.init.body)) as Array<{ path: string }>);
  try {
    const tracker = createTracker({ key: "pk_test", endpoint: "https://events.example/" });
    // Three events of 30,000 bytes each: one body would be 90,000 bytes, all three too many.
    for (const path of ["/a", "/b", "/c"]) {
      tracker.track("page_views", { path, note: "x".repeat(30_000) });
    }
    // Deno has no sendBeacon: the beacon goes by fetch with keepalive, as a browser's fallback.
    tracker.beacon();
    await tracker.settled();
    assert.equal(sent.length, 1);
    assert.ok(new TextEncoder().encode(String(sent[0].init.body)).length < 60_000);
    assert.equal(sent[0].init.keepalive, true);
    assert.deepEqual(bodies().map((body) => body.map((event) => event.path)), [["/a"]]);
    const kept = keptEvents("page_views", { endpoint: "https://events.example" });
    assert.deepEqual(kept.map((event) => event.path), ["/b", "/c"]);
    // The next page's tracker (same endpoint) sends what was kept, and keeps nothing.
    const next = createTracker({ key: "pk_test", endpoint: "https://events.example" });
    await keptTaken("https://events.example", "pk_test");
    await next.settled();
    assert.deepEqual(bodies().slice(1).flat().map((event) => event.path), ["/b", "/c"]);
    assert.equal(localStorage.length, 0);
  } finally {
    restore();
  }
});

Deno.test("the SDK's parts of a batch past a burst all count on a real server, sent one after another", async () => {
  const server = await serveApp({
    streams: {
      limited: {
        // A part fits once a second: parts sent at once would each use up their one retry.
        limits: { eventsPerSecond: 4, burst: 4 },
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  });
  const { warnings, stopCapture } = captureWarnings();
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: server.endpoint,
      retryBaseMs: 1,
      maxRetries: 1,
    });
    for (let n = 0; n < 12; n++) tracker.track("limited", { n });
    await tracker.flush();
    assert.deepEqual(warnings, []);
    const stats = await server.stats("limited");
    assert.equal(stats.accepted, 12);
  } finally {
    stopCapture();
    await server.close();
  }
});

Deno.test("events a real server rejects are reported, with the first one's error, to the console and onRejected, and not sent again", async () => {
  const server = await serveApp({
    streams: {
      orders: {
        schema: {
          type: "object",
          properties: { amount: { type: "number" } },
          required: ["amount"],
        },
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  });
  const { warnings, stopCapture } = captureWarnings();
  const heard: Array<
    { stream: string; events: unknown[]; rejected: unknown[]; rejectedCount: number }
  > = [];
  // Events rejected are told to onRejected, not onRefused: the 400 no_events_accepted too.
  const refused: unknown[] = [];
  const sends: number[] = [];
  const original = globalThis.fetch;
  globalThis.fetch = ((...args: Parameters<typeof fetch>) => {
    sends.push(1);
    return original(...args);
  }) as typeof fetch;
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: server.endpoint,
      onRejected: (report) => heard.push(report),
      onRefused: (report) => refused.push(report),
    });
    tracker.track("orders", { amount: 7 });
    tracker.track("orders", { amount: "8" });
    tracker.track("orders", { amount: 9 });
    await tracker.flush();
    // A 202: two accepted, one rejected.
    assert.deepEqual(warnings, [
      "edgestream: orders rejected 1 of 3 events; event 1: amount: Invalid input: expected number, received string",
    ]);
    assert.equal(heard.length, 1);
    assert.equal(heard[0].stream, "orders");
    assert.deepEqual(heard[0].events, [{ amount: 7 }, { amount: "8" }, { amount: 9 }]);
    assert.deepEqual(heard[0].rejected, [{
      index: 1,
      errors: [{ path: "amount", message: "Invalid input: expected number, received string" }],
    }]);
    // A 400 no_events_accepted: every event's error is in its rejected, not sent again.
    tracker.track("orders", {});
    await tracker.flush();
    assert.deepEqual(warnings.slice(1), [
      "edgestream: orders rejected 1 of 1 events; event 0: amount: Required field is missing (expected number)",
    ]);
    assert.deepEqual(heard.map((report) => report.rejected.length), [1, 1]);
    assert.deepEqual(heard.map((report) => report.rejectedCount), [1, 1]);
    assert.deepEqual(refused, []);
    assert.equal(sends.length, 2);
    const stats = await server.stats("orders");
    // The 400's rejected event counts in the stats too.
    assert.deepEqual([stats.accepted, stats.rejected], [2, 2]);
  } finally {
    globalThis.fetch = original;
    stopCapture();
    await server.close();
  }
});

Deno.test("a replay whose rejected list was shortened is warned and told to onRejected with every rejected event counted, its 'rejectedOmitted' too", async () => {
  const rejected = { index: 1, errors: [{ path: "amount", message: "bad" }] };
  const { restore } = recordingFetch([
    Response.json(
      { accepted: 1, rejected: [rejected], rejectedOmitted: 2, replayed: true },
      { status: 202, headers: { "Idempotent-Replayed": "true" } },
    ),
  ]);
  const { warnings, stopCapture } = captureWarnings();
  const heard: Array<{ rejected: unknown[]; rejectedCount: number }> = [];
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      onRejected: (report) => heard.push(report),
    });
    for (let i = 0; i < 4; i++) tracker.track("s", {});
    await tracker.flush();
    assert.deepEqual(warnings, ["edgestream: s rejected 3 of 4 events; event 1: amount: bad"]);
    assert.deepEqual(heard.map((report) => [report.rejected, report.rejectedCount]), [
      [[rejected], 3],
    ]);
  } finally {
    stopCapture();
    restore();
  }
});

Deno.test("an onRejected that throws is logged and the tracker goes on sending", async () => {
  const rejected = { index: 0, errors: [{ path: "", message: "bad" }] };
  const { sent, restore } = recordingFetch([
    Response.json({ accepted: 0, rejected: [rejected] }, { status: 400 }),
  ]);
  const { warnings, stopCapture } = captureWarnings();
  const logged: unknown[] = [];
  const error = console.error;
  console.error = (value: unknown) => logged.push(value);
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      onRejected: () => {
        throw new Error("in the page's code");
      },
    });
    tracker.track("s", {});
    await tracker.flush();
    assert.deepEqual(warnings, ["edgestream: s rejected 1 of 1 events; event 0: bad"]);
    assert.deepEqual(logged.map((value) => (value as Error).message), ["in the page's code"]);
    tracker.track("s", {});
    await tracker.flush();
    assert.equal(sent.length, 2);
  } finally {
    console.error = error;
    stopCapture();
    restore();
  }
});

Deno.test("createTracker() without a key throws, telling a first try against open mode that any text will do there", () => {
  for (const options of [undefined, {}, { key: "" }]) {
    assert.throws(
      () => createTracker(options as unknown as { key: string }),
      (error: Error) =>
        error.message.startsWith("edgestream: createTracker() needs a publishable 'key' (pk_…") &&
        /open mode \(no EDGESTREAM_KEYS\) checks none, so any text will do there, such as 'dev'/
          .test(error.message),
    );
  }
});

Deno.test("a refusal without an error body (a 500 from a proxy) is told to onRefused with code and message null, and one that throws is logged while the tracker goes on sending", async () => {
  const { sent, restore } = recordingFetch([
    new Response("Internal Server Error", { status: 500 }),
    new Response("Internal Server Error", { status: 500 }),
  ]);
  const { warnings, stopCapture } = captureWarnings();
  const logged: unknown[] = [];
  const error = console.error;
  console.error = (value: unknown) => logged.push(value);
  const heard: unknown[] = [];
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      onRefused: (report) => {
        heard.push({ ...report, events: report.events.length });
        throw new Error("in the page's code");
      },
    });
    tracker.track("s", {});
    await tracker.flush();
    assert.deepEqual(warnings, ["edgestream: s refused 1 events: 500"]);
    assert.deepEqual(heard, [{ stream: "s", events: 1, status: 500, code: null, message: null }]);
    assert.deepEqual(logged.map((value) => (value as Error).message), ["in the page's code"]);
    tracker.track("s", {});
    await tracker.flush();
    assert.equal(sent.length, 2);
    assert.equal(heard.length, 2);
  } finally {
    console.error = error;
    stopCapture();
    restore();
  }
});

Deno.test("the SDK splits a batch over the server's 1,000 events a request and every event counts", async () => {
  const server = await serveApp({
    streams: { big: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
  });
  const { warnings, stopCapture } = captureWarnings();
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: server.endpoint,
      maxBatch: 2_500,
      flushMs: 60_000,
    });
    for (let n = 0; n < 2_300; n++) tracker.track("big", { n });
    await tracker.flush();
    assert.deepEqual(warnings, []);
    const stats = await server.stats("big");
    assert.equal(stats.accepted, 2_300);
  } finally {
    stopCapture();
    await server.close();
  }
});

Deno.test("the SDK's defaults: a batch goes at 100 events or after 1000 ms", async () => {
  const { sent, restore } = recordingFetch([]);
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  try {
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    for (let n = 1; n < 100; n++) tracker.track("s", { n });
    await clock.tickAsync(999);
    assert.equal(sent.length, 0);
    tracker.track("s", { n: 100 });
    assert.equal(sent.length, 1, "the 100th event sends the batch at once");
    assert.equal(JSON.parse(String(sent[0].init.body)).length, 100);
    tracker.track("s", { n: 101 });
    await clock.tickAsync(999);
    assert.equal(sent.length, 1);
    await clock.tickAsync(1);
    assert.equal(sent.length, 2, "a lone event goes after 1000 ms");
    assert.deepEqual(JSON.parse(String(sent[1].init.body)), [{ n: 101 }]);
    await tracker.settled();
  } finally {
    clock.uninstall();
    restore();
  }
});

Deno.test("the SDK's defaults: a batch answered 503 is sent again 5 times, backing off from 500 ms, then held for the next flush or the resend timer", async () => {
  const { sent, restore } = recordingFetch(
    Array.from({ length: 10 }, () => new Response(null, { status: 503 })),
  );
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const times = fetchTimes(clock);
  const { warnings, stopCapture } = captureWarnings();
  try {
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    tracker.track("s", { n: 1 });
    const flushed = tracker.flush();
    // The retries' waits: 500 + 1000 + 2000 + 4000 + 8000 ms, up to 20% more (the resend timer of
    // held batches fires 30 s later).
    await clock.tickAsync(20_000);
    await flushed;
    assert.equal(sent.length, 6, "one send and 5 more");
    assert.deepEqual(warnings, [
      "edgestream: could not send 1 events to s in 6 tries: held, sent again at the next flush or by itself later",
    ]);
    assert.equal(tracker.held, 1);
    // Each wait is 500 ms × 2^attempt, plus up to 20% jitter.
    times.slice(1).forEach((time, i) => {
      const wait = time - times[i];
      const base = 500 * 2 ** i;
      assert.ok(wait >= base && wait <= base * 1.2, `wait ${i}: ${wait} ms, base ${base} ms`);
    });
    // Handed over (kept: the last answer a 503), it is no longer held: another test's online event
    // does not send it.
    tracker.beacon();
    assert.equal(tracker.held, 0);
  } finally {
    stopCapture();
    clock.uninstall();
    restore();
  }
});

Deno.test("a batch held after its retries is sent again by itself with its key: after 30 s, doubling up to 5 min, jittered, never before the last Retry-After, at once when the browser comes online; one send at a time; the timer stops when nothing is held", async () => {
  const answers: Array<Response | Error | Promise<Response>> = [];
  const { sent, restore } = recordingFetch(answers);
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout", "Date"] });
  const times = fetchTimes(clock);
  const { warnings, stopCapture } = captureWarnings();
  const keyOf = (request: Sent) => request.init.headers["Idempotency-Key"];
  try {
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example", maxRetries: 0 });
    // The store is down for 7 sends (a network failure among them), then back.
    for (let i = 0; i < 6; i++) answers.push(new Response(null, { status: 503 }));
    answers.push(new TypeError("Failed to fetch"));
    tracker.track("s", { n: 1 });
    assert.deepEqual(await tracker.flush(), { held: 1 });
    assert.deepEqual(warnings, [
      "edgestream: could not send 1 events to s in 1 tries: held, sent again at the next flush or by itself later",
    ]);
    // Before, nothing more was sent, however long the page stayed open without a flush.
    await clock.tickAsync(29_999);
    assert.equal(sent.length, 1);
    // 30 s, 60 s, 120 s, 240 s, then 5 minutes at most, each up to 20% more.
    for (const base of [30_000, 60_000, 120_000, 240_000, 300_000, 300_000]) {
      const before: number = sent.length;
      await clock.tickAsync(base * 1.2 + 1);
      assert.equal(sent.length, before + 1, `one send after ${base} ms`);
      const wait = times.at(-1)! - times.at(-2)!;
      assert.ok(wait >= base && wait <= base * 1.2, `wait ${wait} ms, base ${base} ms`);
      assert.equal(tracker.held, 1);
    }
    // The store is back (the next answer a 202): sent once more, with the key of every try.
    await clock.tickAsync(360_001);
    assert.equal(sent.length, 8);
    assert.equal(new Set(sent.map(keyOf)).size, 1);
    assert.equal(tracker.held, 0);
    // Nothing held: no timer left running.
    assert.equal(clock.countTimers(), 0);
    await clock.tickAsync(3_600_000);
    assert.equal(sent.length, 8);

    // A 503 asking for 2 minutes: the timer (back to 30 s, the server having answered) waits that.
    answers.push(new Response(null, { status: 503, headers: { "Retry-After": "120" } }));
    tracker.track("s", { n: 2 });
    assert.deepEqual(await tracker.flush(), { held: 1 });
    await clock.tickAsync(119_999);
    assert.equal(sent.length, 9);
    await clock.tickAsync(1);
    assert.equal(sent.length, 10);
    assert.equal(keyOf(sent[9]), keyOf(sent[8]));
    assert.equal(tracker.held, 0);

    // One send at a time: a batch sent again by the timer, not answered yet, is not sent again by
    // flush() or the online event; back online, a batch held is sent at once.
    answers.push(new TypeError("Failed to fetch"));
    tracker.track("s", { n: 3 });
    assert.deepEqual(await tracker.flush(), { held: 1 });
    const resent = Promise.withResolvers<Response>();
    answers.push(resent.promise);
    await clock.tickAsync(36_001);
    assert.equal(sent.length, 12);
    const flushed = tracker.flush();
    globalThis.dispatchEvent(new Event("online"));
    await clock.tickAsync(60_000);
    assert.equal(sent.length, 12);
    resent.resolve(new Response(null, { status: 503 }));
    assert.deepEqual(await flushed, { held: 1 });
    await clock.tickAsync(0);
    assert.equal(sent.length, 12);
    globalThis.dispatchEvent(new Event("online"));
    await clock.tickAsync(0);
    assert.equal(sent.length, 13);
    assert.equal(new Set(sent.slice(10).map(keyOf)).size, 1);
    assert.equal(tracker.held, 0);
    assert.equal(clock.countTimers(), 0);
  } finally {
    stopCapture();
    clock.uninstall();
    restore();
  }
});

Deno.test("close() during a 503 with Retry-After keeps the batch sleeping between its retries and the one answered so during the close at once, with their keys, and a 413's parts, without waiting out the retries or sending the parts", async () => {
  const { sent, restore } = recordingFetch([
    new Response(null, { status: 503, headers: { "Retry-After": "30" } }),
    new Response(null, { status: 503, headers: { "Retry-After": "30" } }),
    Response.json(
      { error: { code: "too_many_events", message: "burst 2", details: { maxEvents: 2 } } },
      { status: 413 },
    ),
  ]);
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout", "Date"] });
  const { stopCapture } = captureWarnings();
  const keyOf = (request: Sent) => request.init.headers["Idempotency-Key"];
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      flushMs: 60_000,
    });
    tracker.track("s", { n: 1 });
    tracker.flush();
    // Answered 503 with Retry-After 30: it sleeps 30 s before its next try (of 5).
    await clock.tickAsync(0);
    assert.equal(sent.length, 1);
    tracker.track("s", { n: 2 });
    for (let n = 1; n <= 3; n++) tracker.track("u", { n });
    let resolved = false;
    const closing = tracker.close().then((result) => {
      resolved = true;
      return result;
    });
    // One round of answers: the queued batches are sent once, one answered 503 again and kept with
    // its key, the other 413 and its parts kept as new events. Before, close() waited for the
    // 503s' retries: 5 × 30 s.
    await clock.tickAsync(0);
    assert.equal(resolved, true);
    assert.deepEqual(await closing, { kept: 5 });
    assert.equal(sent.length, 3);
    assert.deepEqual(keptEvents("u"), [{ n: 1 }, { n: 2 }, { n: 3 }]);
    const kept = keptBatches("s");
    assert.deepEqual(kept.map((batch) => [batch.idempotencyKey, batch.events]), [
      [keyOf(sent[0]), [{ n: 1 }]],
      [keyOf(sent[1]), [{ n: 2 }]],
    ]);
    // Each keeps its first try's expiry, the sleeping one too (before, it was kept with none, and
    // the next page gave it a fresh one: its key's margin started again).
    assert.deepEqual(
      kept.map((batch) => batch.expiresAt),
      [sent[0].at + 86_400_000 - 60_000, sent[1].at + 86_400_000 - 60_000],
    );
    assert.equal(clock.countTimers(), 0);
    await clock.tickAsync(3_600_000);
    assert.equal(sent.length, 3);
  } finally {
    stopCapture();
    clock.uninstall();
    restore();
  }
});

Deno.test("a batch the browser's online event sends again during close(), answered 413 after it, is kept as new events, not split and sent by the closed tracker; {kept} has resolved without it", async () => {
  const answers: Array<Response | Error | Promise<Response>> = [];
  const { sent, restore } = recordingFetch(answers);
  let onLine = false;
  Object.defineProperty(navigator, "onLine", { get: () => onLine, configurable: true });
  const { stopCapture } = captureWarnings();
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      maxRetries: 0,
      flushMs: 60_000,
    });
    // Offline: the batch is held until the browser is online.
    answers.push(new TypeError("Failed to fetch"));
    for (let n = 1; n <= 4; n++) tracker.track("s", { n });
    assert.deepEqual(await tracker.flush(), { held: 4 });
    // close() sends another stream's batch, answered slowly; meanwhile the browser comes online
    // and the held batch goes again, answered after the close.
    const slow = Promise.withResolvers<Response>();
    const resent = Promise.withResolvers<Response>();
    answers.push(slow.promise, resent.promise);
    tracker.track("t", { n: 9 });
    const closing = tracker.close();
    onLine = true;
    globalThis.dispatchEvent(new Event("online"));
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(sent.length, 3);
    slow.resolve(new Response(null, { status: 202 }));
    assert.deepEqual(await closing, { kept: 0 });
    // A tracker made now, before the batch is kept, finds nothing kept to send.
    const before = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    resent.resolve(
      Response.json(
        { error: { code: "too_many_events", message: "burst 2", details: { maxEvents: 2 } } },
        { status: 413 },
      ),
    );
    await new Promise((resolve) => setTimeout(resolve, 0));
    // Before, the closed tracker split it and sent the parts: two more requests.
    assert.equal(sent.length, 3);
    assert.deepEqual(keptEvents(), [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }]);
    assert.deepEqual(await before.flush(), { held: 0 });
    assert.equal(sent.length, 3);
    // A tracker made later (or the next page) sends it.
    const after = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    assert.deepEqual(await after.flush(), { held: 0 });
    assert.deepEqual(
      sent.slice(3).flatMap((request) => JSON.parse(String(request.init.body))),
      [{ n: 1 }, { n: 2 }, { n: 3 }, { n: 4 }],
    );
    await before.close();
    await after.close();
  } finally {
    stopCapture();
    delete (navigator as { onLine?: boolean }).onLine;
    restore();
  }
});

Deno.test("init() while the store is down, again or right after the module's close() not awaited (with options it refused in between too): the new tracker sends what the closed one kept, under its Idempotency-Key", async () => {
  const keyOf = (request: Sent) => request.init.headers["Idempotency-Key"];
  const options = { key: "pk_test", endpoint: "https://e.example", flushMs: 60_000 };
  /** Ways the first tracker closes while the next is made: each answers that close and the next. */
  const ways = {
    "init() again": () => {
      const first = init(options);
      track("s", { n: 1 });
      const next = init(options);
      return { closing: first.close(), next };
    },
    "close(), then init()": () => {
      init(options);
      track("s", { n: 1 });
      const closing = close();
      return { closing, next: init(options) };
    },
    "close(), then init() with options it refuses, then init()": () => {
      init(options);
      track("s", { n: 1 });
      const closing = close();
      assert.throws(() => init({ ...options, flushMs: -1 }), /option 'flushMs'/);
      return { closing, next: init(options) };
    },
  };
  for (const [way, closeAndInit] of Object.entries(ways)) {
    const { sent, restore } = recordingFetch([new Response(null, { status: 503 })]);
    const { stopCapture } = captureWarnings();
    try {
      const { closing, next } = closeAndInit();
      assert.deepEqual(await closing, { kept: 1 }, way);
      // Before, the new tracker read localStorage when made, before the close kept its batch: it
      // stayed there until the page was shown again or the next page. With options refused in
      // between, the refused init() had forgotten the close.
      await new Promise((resolve) => setTimeout(resolve, 0));
      assert.deepEqual(await next.flush(), { held: 0 }, way);
      assert.equal(sent.length, 2, way);
      assert.equal(keyOf(sent[1]), keyOf(sent[0]), way);
      assert.deepEqual(JSON.parse(String(sent[1].init.body)), [{ n: 1 }], way);
      assert.equal(localStorage.length, 0, way);
      assert.deepEqual(await close(), { kept: 0 }, way);
    } finally {
      stopCapture();
      restore();
    }
  }
});

Deno.test("a stream's 429 Retry-After holds back the resend of that stream's held batches only: another stream's goes after heldRetryMs", async () => {
  const { sent, restore } = recordingFetch([
    new Response(null, { status: 429, headers: { "Retry-After": "60" } }),
    new TypeError("Failed to fetch"),
  ]);
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout", "Date"] });
  const times = fetchTimes(clock);
  const { stopCapture } = captureWarnings();
  const streamOf = (request: Sent) => new URL(request.url).pathname.split("/")[3];
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      maxRetries: 0,
      heldRetryMs: 1_000,
    });
    tracker.track("limited", { n: 1 });
    tracker.track("other", { n: 2 });
    assert.deepEqual(await tracker.flush(), { held: 2 });
    assert.deepEqual(sent.map(streamOf), ["limited", "other"]);
    // Rate limits are a stream's (or a key's in a stream): before, the 429 of "limited" held
    // "other" back for its 60 s too.
    await clock.tickAsync(1_201);
    assert.deepEqual(sent.map(streamOf), ["limited", "other", "other"]);
    assert.equal(tracker.held, 1);
    await clock.tickAsync(60_000 - 1_201 - 1);
    assert.equal(sent.length, 3);
    await clock.tickAsync(1);
    assert.deepEqual(sent.map(streamOf), ["limited", "other", "other", "limited"]);
    assert.ok(times[3] - times[0] >= 60_000, `${times[3] - times[0]} ms`);
    assert.equal(sent[3].init.headers["Idempotency-Key"], sent[0].init.headers["Idempotency-Key"]);
    assert.equal(tracker.held, 0);
    assert.equal(clock.countTimers(), 0);
    assert.ok(
      await readmeSays(
        "never before the server's last `Retry-After` has passed (a `429`'s for its own stream's batches only: rate limits are a stream's, a key's counted per stream)",
      ),
    );
  } finally {
    stopCapture();
    clock.uninstall();
    restore();
  }
});

Deno.test("a tracker holding a batch after its retries does not keep a Deno process alive", async () => {
  const sdk = new URL("../../static/sdk/sdk.js", import.meta.url).href;
  const script = `
    import { createTracker } from ${JSON.stringify(sdk)};
    globalThis.fetch = () => Promise.resolve(new Response(null, { status: 503 }));
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example", maxRetries: 0 });
    tracker.track("s", { n: 1 });
    console.log(JSON.stringify(await tracker.flush()));
  `;
  const started = Date.now();
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["eval", "--cached-only", "--no-config", script],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  assert.equal(new TextDecoder().decode(output.stdout).trim(), '{"held":1}');
  assert.ok(output.success, new TextDecoder().decode(output.stderr));
  // Its resend timer (30 s) does not hold the process open.
  assert.ok(Date.now() - started < 15_000, `${Date.now() - started} ms`);
});

Deno.test("the SDK keeps at most 1,000 events a stream for the next page, and warns when it cannot keep them", async () => {
  const { sent, restore } = recordingFetch([]);
  const { warnings, stopCapture } = captureWarnings();
  try {
    const tracker = createTracker({
      key: "pk_test",
      endpoint: "https://e.example",
      maxBatch: 10_000,
      flushMs: 60_000,
    });
    // 4,000 events of about 40 bytes: the beacon carries one part of 1,000, the other 3,000 wait.
    for (let n = 1; n <= 4_000; n++) tracker.track("s", { n, pad: "xxxxxxxxxxxxxxxxxxxxx" });
    tracker.beacon();
    await tracker.settled();
    assert.equal(sent.length, 1);
    assert.equal(JSON.parse(String(sent[0].init.body)).length, 1_000);
    const kept = keptEvents();
    assert.equal(kept.length, 1_000);
    assert.deepEqual([kept[0].n, kept.at(-1)!.n], [3_001, 4_000]);
    assert.deepEqual(warnings, []);
    // The 2,000 oldest of the 3,000 left, taken out to keep 1,000, are counted as given up on.
    assert.equal(tracker.dropped, 2_000);

    // Without storage, what the beacon cannot carry is lost, with a warning.
    localStorage.clear();
    const storage = Object.getOwnPropertyDescriptor(globalThis, "localStorage")!;
    Object.defineProperty(globalThis, "localStorage", { value: null, configurable: true });
    try {
      const bare = createTracker({
        key: "pk_test",
        endpoint: "https://e.example",
        maxBatch: 10_000,
        flushMs: 60_000,
      });
      for (let n = 1; n <= 2_000; n++) bare.track("s", { n, pad: "xxxxxxxxxxxxxxxxxxxxx" });
      bare.beacon();
      await bare.settled();
      assert.equal(bare.dropped, 1_000);
    } finally {
      Object.defineProperty(globalThis, "localStorage", storage);
    }
    assert.deepEqual(warnings, ["edgestream: lost 1000 events to s: no room to keep them"]);
    assert.ok(
      await readmeSays(
        "The tracker's `dropped` counts every event it gave up on: past `maxHeld`, past its key's expiry (below), not kept for want of storage, and the oldest kept ones it took out of `localStorage` to keep a stream's 1,000 (with no warning; not the copies of batches a beacon took too, or of one in flight, which its send retries if the page stays); not the events the server refused or rejected.",
      ),
    );
  } finally {
    stopCapture();
    restore();
  }
});

/** An SSE answer carrying `events` (`[event, data, id?]`), then ended. */
function sse(events: Array<[string, unknown, string?]>): Response {
  const text = events.map(([event, data, id]) =>
    `${id ? `id: ${id}\n` : ""}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`
  ).join("");
  return new Response(text, { headers: { "Content-Type": "text/event-stream" } });
}

/** An error answer as the server gives it, with `headers`. */
function refusal(status: number, code: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ error: { code, message: code } }), {
    status,
    headers: { "Content-Type": "application/json", ...headers },
  });
}

Deno.test("subscribe() retries 408, 429 and 5xx and ended connections, backing off to maxRetryMs or by Retry-After, starts again from retryBaseMs after a result, resumes after it, and stops at another 4xx", async () => {
  const subscribed = { type: "subscribed", stream: "orders" };
  const result = { type: "window.closed", stream: "orders", data: { count: 3 } };
  const { sent, restore } = recordingFetch([
    sse([["subscribed", subscribed]]), // ends: retryBaseMs
    refusal(429, "rate_limited", { "Retry-After": "3" }), // Retry-After, not the back-off
    refusal(408, "request_timeout"), // back-off 400 (200 doubled)
    refusal(503, "store_unavailable"), // 800, cut to maxRetryMs
    sse([["subscribed", subscribed], ["window.closed", result, "1700000000000-4"]]), // a result
    refusal(500, "internal"), // the back-off starts again: 200 after the 100 that followed the result
    refusal(404, "stream_not_found"), // no retry can change it
  ]);
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const times = fetchTimes(clock);
  const messages: unknown[] = [];
  const errors: Array<number | string> = [];
  try {
    subscribe("orders", {
      key: "sk_read",
      endpoint: "https://e.example/",
      types: ["window.closed"],
      retryBaseMs: 100,
      maxRetryMs: 400,
      onMessage: (message) => messages.push(message),
      onError: (error) => errors.push(error.status ?? error.message),
    });
    for (let i = 0; i < 200; i++) await clock.tickAsync(50);
    assert.equal(sent.length, 7, "stopped at the 404");
    assert.deepEqual(times.slice(1).map((time, i) => time - times[i]), [
      100,
      3_000,
      400,
      400,
      100,
      200,
    ]);
    assert.deepEqual(errors, [
      "edgestream: the subscription to 'orders' ended",
      429,
      408,
      503,
      "edgestream: the subscription to 'orders' ended",
      500,
      404,
    ]);
    assert.deepEqual(messages, [subscribed, subscribed, result]);
    // Every request: the key in Authorization, never in the URL; after the result, ?after= its id.
    for (const { url, init } of sent) {
      assert.equal(init.headers.Authorization, "Bearer sk_read");
      assert.equal(init.headers.Accept, "text/event-stream");
      assert.doesNotMatch(url, /sk_read/);
    }
    const queries = sent.map(({ url }) => new URL(url).searchParams);
    assert.equal(new URL(sent[0].url).pathname, "/v1/streams/orders/subscribe");
    assert.deepEqual(queries.map((query) => query.get("types")), Array(7).fill("window.closed"));
    assert.deepEqual(
      queries.map((query) => query.get("after")),
      [null, null, null, null, null, "1700000000000-4", "1700000000000-4"],
    );
  } finally {
    clock.uninstall();
    restore();
  }
});

Deno.test("subscribe() stops at a 403 origin_not_allowed (a page the key does not list) with one console warning saying so, and tells onError", async () => {
  const { sent, restore } = recordingFetch([
    new Response(
      JSON.stringify({
        error: {
          code: "origin_not_allowed",
          message:
            "Cross-origin read from 'https://shop.example' refused: API key 'key_1' does not list it in its origins, nor does EDGESTREAM_ALLOWED_ORIGINS; add it to either to let its pages read",
        },
      }),
      { status: 403, headers: { "Content-Type": "application/json" } },
    ),
    sse([["subscribed", { type: "subscribed", stream: "orders" }]]),
  ]);
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const { warnings, stopCapture } = captureWarnings();
  const errors: Array<[number | undefined, string | undefined]> = [];
  try {
    subscribe("orders", {
      key: "sk_read",
      endpoint: "https://e.example",
      retryBaseMs: 100,
      onError: (error) => errors.push([error.status, error.code]),
    });
    for (let i = 0; i < 100; i++) await clock.tickAsync(100);
    assert.equal(sent.length, 1, "no reconnection");
    assert.deepEqual(errors, [[403, "origin_not_allowed"]]);
    assert.deepEqual(warnings, [
      "edgestream: subscribing to 'orders' answered 403: Cross-origin read from 'https://shop.example' refused: API key 'key_1' does not list it in its origins, nor does EDGESTREAM_ALLOWED_ORIGINS; add it to either to let its pages read (origin_not_allowed): the subscription stops",
    ]);
  } finally {
    stopCapture();
    clock.uninstall();
    restore();
  }
});

Deno.test("subscribe() with notFoundRetryMs asks again that long after each 404, the back-off then starting again, resumes after its last result, still stops at another 4xx, and close() ends the wait; a notFoundRetryMs that is no positive number is as none", async () => {
  const subscribed = { type: "subscribed", stream: "orders" };
  const result = { type: "window.closed", stream: "orders", data: { count: 1 } };
  const { sent, restore } = recordingFetch([
    refusal(404, "stream_not_found"), // created through another instance, unknown here as yet
    refusal(404, "stream_not_found"),
    refusal(503, "store_unavailable"), // the back-off starts again after a 404: 100, then 200
    refusal(503, "store_unavailable"),
    sse([["subscribed", subscribed], ["window.closed", result, "1700000000000-9"]]), // ends
    refusal(503, "store_unavailable"), // 100 after the result, then 200
    refusal(404, "stream_not_found"), // deleted and made again: 6000 once more
    refusal(401, "unauthorized"), // no retry can change it
  ]);
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const times = fetchTimes(clock);
  const errors: Array<number | string> = [];
  const messages: unknown[] = [];
  try {
    subscribe("orders", {
      endpoint: "https://e.example",
      retryBaseMs: 100,
      maxRetryMs: 400,
      notFoundRetryMs: 6_000,
      onMessage: (message) => messages.push(message),
      onError: (error) => errors.push(error.status ?? error.message),
    });
    await clock.tickAsync(60_000);
    assert.deepEqual(
      times.slice(1).map((time, i) => time - times[i]),
      [6_000, 6_000, 100, 200, 100, 200, 6_000],
    );
    assert.deepEqual(errors, [
      404,
      404,
      503,
      503,
      "edgestream: the subscription to 'orders' ended",
      503,
      404,
      401,
    ]);
    assert.deepEqual(messages, [subscribed, result]);
    const resumed = "1700000000000-9";
    assert.deepEqual(
      sent.map(({ url }) => new URL(url).searchParams.get("after")),
      [null, null, null, null, null, resumed, resumed, resumed],
    );
  } finally {
    clock.uninstall();
    restore();
  }
  // Closed while waiting after a 404: not asked again.
  const waiting = recordingFetch([refusal(404, "stream_not_found")]);
  const clock2 = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  try {
    const live = subscribe("orders", { endpoint: "https://e.example", notFoundRetryMs: 6_000 });
    await clock2.tickAsync(3_000);
    live.close();
    await clock2.tickAsync(60_000);
    assert.equal(waiting.sent.length, 1);
  } finally {
    clock2.uninstall();
    waiting.restore();
  }
  // A notFoundRetryMs that is no wait (0, negative, null, not a number) is as none: a 404 stops.
  for (const notFoundRetryMs of [0, -1, null, Number.NaN, "6000"]) {
    const refused = recordingFetch([refusal(404, "stream_not_found")]);
    const clock3 = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
    try {
      subscribe("orders", {
        endpoint: "https://e.example",
        notFoundRetryMs: notFoundRetryMs as number,
      });
      await clock3.tickAsync(60_000);
      assert.equal(refused.sent.length, 1, `notFoundRetryMs ${notFoundRetryMs}`);
    } finally {
      clock3.uninstall();
      refused.restore();
    }
  }
});

Deno.test("subscribe() takes a retryBaseMs or maxRetryMs that is no positive number as its default, not as a retry loop", async () => {
  const cases: Array<[Record<string, unknown>, number[]]> = [
    [{ retryBaseMs: 0 }, [1_000, 2_000, 4_000]],
    [{ retryBaseMs: -5, maxRetryMs: 0 }, [1_000, 2_000, 4_000]],
    [{ retryBaseMs: 100, maxRetryMs: Number.NaN }, [100, 200, 400]],
    [{ retryBaseMs: null, maxRetryMs: 1_500 }, [1_000, 1_500, 1_500]],
  ];
  for (const [options, gaps] of cases) {
    const { restore } = recordingFetch([]);
    globalThis.fetch = (() => Promise.resolve(refusal(503, "store_unavailable"))) as typeof fetch;
    const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
    const times = fetchTimes(clock);
    try {
      const live = subscribe("orders", { endpoint: "https://e.example", ...options });
      await clock.tickAsync(7_100);
      live.close();
      assert.deepEqual(
        times.slice(1, 4).map((time, i) => time - times[i]),
        gaps,
        JSON.stringify(options),
      );
    } finally {
      clock.uninstall();
      restore();
    }
  }
});

Deno.test("subscribe() refuses a wait under 100 ms or past a timer, naming it, instead of asking a failing server again every millisecond; a retryBaseMs over maxRetryMs is cut to it", async () => {
  const range = "a number of milliseconds from 100 to 2147483647 (or none, for its default)";
  const refused: Array<[string, number]> = [
    // maxRetryMs 1 asked a server answering 503 again 1,000 times a second, after the first 1 s.
    ["maxRetryMs", 1],
    ["maxRetryMs", 99],
    ["retryBaseMs", 1],
    // A 404 asked again every millisecond, for good.
    ["notFoundRetryMs", 1],
    ["notFoundRetryMs", 2 ** 31],
    ["retryBaseMs", 2 ** 31],
    // Infinity is a positive number, so past a timer too: it was taken as the default.
    ["maxRetryMs", Number.POSITIVE_INFINITY],
    ["notFoundRetryMs", Number.POSITIVE_INFINITY],
  ];
  const { sent, restore } = recordingFetch([]);
  try {
    for (const [name, value] of refused) {
      assert.throws(
        () => subscribe("orders", { endpoint: "https://e.example", [name]: value }),
        { message: `edgestream: subscribe() option '${name}' must be ${range}, received ${value}` },
        `${name}: ${value}`,
      );
    }
    // Nothing was asked by the subscriptions refused.
    await Promise.resolve();
    assert.equal(sent.length, 0);
  } finally {
    restore();
  }
  // The bounds are taken; a retryBaseMs above maxRetryMs waits maxRetryMs from the first retry.
  const cases: Array<[Record<string, unknown>, number[]]> = [
    [{ retryBaseMs: 100, maxRetryMs: 100 }, [100, 100, 100]],
    [{ maxRetryMs: 500 }, [500, 500, 500]],
    [{ retryBaseMs: 2_000, maxRetryMs: 1_500 }, [1_500, 1_500, 1_500]],
  ];
  for (const [options, gaps] of cases) {
    const { restore } = recordingFetch([]);
    globalThis.fetch = (() => Promise.resolve(refusal(503, "store_unavailable"))) as typeof fetch;
    const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
    const times = fetchTimes(clock);
    try {
      const live = subscribe("orders", { endpoint: "https://e.example", ...options });
      await clock.tickAsync(5_000);
      live.close();
      assert.deepEqual(
        times.slice(1, 4).map((time, i) => time - times[i]),
        gaps,
        JSON.stringify(options),
      );
    } finally {
      clock.uninstall();
      restore();
    }
  }
});

Deno.test("subscribe() refuses a key no header can carry, naming the character but not the key, instead of failing every connection for good", async () => {
  const { sent, restore } = recordingFetch([]);
  try {
    // A zero-width space pasted with it: every fetch threw before it was sent, retried as a
    // network failure for as long as the page stayed open (a refused key stops at its 401).
    for (
      const [key, received] of [
        ["sk_read\u200b", "one with U+200B at character 8"],
        ["sk read", "one with U+0020 at character 3"],
        [42, "a number"],
      ] as const
    ) {
      assert.throws(
        () => subscribe("orders", { endpoint: "https://e.example", key: key as string }),
        {
          message:
            `edgestream: subscribe() option 'key' must be visible ASCII characters, as a header carries them, received ${received}`,
        },
      );
    }
    await Promise.resolve();
    assert.equal(sent.length, 0);
  } finally {
    restore();
  }
});

Deno.test("subscribe() refuses types that are no array of strings, naming the option, instead of failing every connection for good", async () => {
  const { sent, restore } = recordingFetch([]);
  try {
    for (
      const [types, received] of [
        ["window.closed", '"window.closed"'],
        [["window.closed", 3], '["window.closed",3]'],
        [{ 0: "window.closed" }, '{"0":"window.closed"}'],
      ] as const
    ) {
      assert.throws(
        () =>
          subscribe("orders", {
            endpoint: "https://e.example",
            types: types as unknown as string[],
          }),
        {
          message:
            `edgestream: subscribe() option 'types' must be an array of event types, received ${received}`,
        },
      );
    }
    await Promise.resolve();
    assert.equal(sent.length, 0);
    // None (undefined or null) is every type.
    const live = subscribe("orders", {
      endpoint: "https://e.example",
      types: null as unknown as string[],
    });
    live.close();
  } finally {
    restore();
  }
});

Deno.test("subscribe() goes on when onError throws, and waits out a Retry-After too long for a timer instead of asking again at once", async () => {
  const { sent, restore } = recordingFetch([
    refusal(503, "store_unavailable"),
    refusal(503, "store_unavailable", { "Retry-After": "Infinity" }),
    refusal(503, "store_unavailable", { "Retry-After": "99999999" }),
  ]);
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const logged: unknown[] = [];
  const error = console.error;
  console.error = (thrown: unknown) => logged.push(thrown);
  try {
    const live = subscribe("orders", {
      endpoint: "https://e.example",
      onError: () => {
        throw new Error("a page's bug");
      },
    });
    await clock.tickAsync(1_100);
    assert.equal(sent.length, 2, "asked again after retryBaseMs, the throw logged");
    assert.deepEqual(logged.map((thrown) => (thrown as Error).message), [
      "a page's bug",
      "a page's bug",
    ]);
    // Retry-After: Infinity is the longest wait a timer holds (2^31 - 1 ms), not none.
    await clock.tickAsync(60_000);
    assert.equal(sent.length, 2);
    await clock.tickAsync(2 ** 31 - 1);
    assert.equal(sent.length, 3);
    live.close();
  } finally {
    console.error = error;
    clock.uninstall();
    restore();
  }
});

Deno.test("subscribe()'s close() during a back-off or a connection ends it: no more requests", async () => {
  const { sent, restore } = recordingFetch([
    refusal(503, "store_unavailable", { "Retry-After": "2" }),
    refusal(503, "store_unavailable"),
  ]);
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  const errors: unknown[] = [];
  try {
    const live = subscribe("orders", {
      endpoint: "https://e.example",
      onError: (error) => errors.push(error.status),
    });
    await clock.tickAsync(1_000);
    assert.equal(sent.length, 1);
    live.close();
    await clock.tickAsync(120_000);
    assert.equal(sent.length, 1);
    assert.deepEqual(errors, [503]);
    assert.equal(sent[0].init.headers.Authorization, undefined, "open mode: no key");
  } finally {
    clock.uninstall();
    restore();
  }
  // During a connection: its request is aborted (its body then fails, as fetch's does), and
  // nothing more is asked or told.
  const open = recordingFetch([]);
  const opened = new Promise<AbortSignal>((resolve) => {
    const recording = globalThis.fetch;
    globalThis.fetch = ((url: string, init: Sent["init"]) => {
      const signal = init.signal!;
      resolve(signal);
      recording(url, init);
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          controller.enqueue(
            new TextEncoder().encode('event: subscribed\ndata: {"type":"subscribed"}\n\n'),
          );
          signal.addEventListener("abort", () => controller.error(signal.reason), { once: true });
        },
      });
      return Promise.resolve(
        new Response(body, { headers: { "Content-Type": "text/event-stream" } }),
      );
    }) as typeof fetch;
  });
  const told: unknown[] = [];
  const messages: unknown[] = [];
  try {
    const live = subscribe("orders", {
      endpoint: "https://e.example",
      retryBaseMs: 100,
      onMessage: (message) => messages.push(message.type),
      onError: (error) => told.push(error.message),
    });
    const signal = await opened;
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(messages, ["subscribed"]);
    assert.equal(signal.aborted, false);
    live.close();
    // Longer than the retryBaseMs a reconnection would wait.
    await new Promise((resolve) => setTimeout(resolve, 250));
    assert.equal(signal.aborted, true, "the connection's request aborted");
    assert.equal(open.sent.length, 1);
    assert.deepEqual(told, []);
  } finally {
    open.restore();
  }
});

const SSE_TEXT = [
  "event: subscribed",
  'data: {"type":"subscribed"}',
  "",
  ": keep-alive",
  "",
  "event: window.updated",
  'data: {"type":"window.updated",',
  'data: "value":3}',
  "id: 1700000000000-0",
  "",
  'data: {"no":"event name"}',
  "",
  "",
].join("\r\n");

Deno.test("SseParser (which subscribe() and the dashboard use) reads events and their ids however the stream is cut into chunks", () => {
  const expected = [
    { event: "subscribed", data: '{"type":"subscribed"}', id: null },
    {
      event: "window.updated",
      data: '{"type":"window.updated",\n"value":3}',
      id: "1700000000000-0",
    },
    { event: "message", data: '{"no":"event name"}', id: null },
  ];
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: SSE_TEXT.length }), { maxLength: 12 }),
      (cuts) => {
        const points = [0, ...[...new Set(cuts)].sort((a, b) => a - b), SSE_TEXT.length];
        const parser = new SseParser();
        const events = [];
        for (let i = 1; i < points.length; i++) {
          events.push(...parser.push(SSE_TEXT.slice(points[i - 1], points[i])));
        }
        assert.deepEqual(events, expected);
      },
    ),
  );
});

Deno.test("SseParser keeps an event whose blank line has not arrived yet", () => {
  const parser = new SseParser();
  assert.deepEqual(parser.push("event: a\ndata: 1\n"), []);
  assert.deepEqual(parser.push("\n"), [{ event: "a", data: "1", id: null }]);
});

Deno.test("maxHeld bounds the batches waiting for room among the keepalive requests in flight and those waiting between retries too: a server that never answers, or always says later, grows no page's memory", async () => {
  // The first request is never answered until the end (a server that takes requests and hangs).
  const hang = Promise.withResolvers<Response>();
  const answers: Array<Response | Error | Promise<Response>> = [hang.promise];
  const { sent, restore } = recordingFetch(answers);
  const { warnings, stopCapture } = captureWarnings();
  const pad = "y".repeat(300);
  try {
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example", maxHeld: 300 });
    // 20 batches of about 32 KB: one goes, the others wait for room among the keepalive requests.
    for (let n = 0; n < 2000; n++) tracker.track("s", { n, pad });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(sent.length, 1);
    // Before, all 19 waited (1,900 events): now 3 do, the oldest 16 dropped, with a warning each.
    assert.equal(tracker.dropped, 1600);
    assert.equal(warnings.length, 16);
    assert.equal(
      warnings[0],
      "edgestream: dropped 100 events to s waiting for room among the keepalive requests in flight: more than maxHeld (300) waited",
    );
    assert.equal(tracker.held, 0, "none is held: they wait");
    // The first is answered: the three left go, one after another, and nothing more is dropped.
    hang.resolve(new Response(null, { status: 202 }));
    await tracker.settled();
    assert.equal(sent.length, 4);
    assert.deepEqual(
      sent.slice(1).map((request) => JSON.parse(String(request.init.body))[0].n),
      [1700, 1800, 1900],
    );

    // A server that answers every try 503 with an hour's Retry-After: each batch sleeps on it.
    const later = () => new Response(null, { status: 503, headers: { "Retry-After": "3600" } });
    for (let i = 0; i < 10; i++) answers.push(later());
    for (let n = 0; n < 1000; n++) tracker.track("t", { n });
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(sent.length, 14);
    // Before, all 10 batches slept in memory (1,000 events): now the 3 newest do.
    assert.equal(tracker.dropped, 1600 + 700);
    assert.equal(
      warnings.at(-1),
      "edgestream: dropped 100 events to t waiting to be sent again: more than maxHeld (300) waited",
    );
    // Closing keeps the 3 sleeping batches, whole with their keys.
    assert.deepEqual(await tracker.close(), { kept: 300 });
    assert.ok(
      await readmeSays(
        "at most `maxHeld` (10,000) events wait to be sent again: held, offline or so, or waiting out a retry's back-off or for room among the keepalive requests in flight (a server that takes requests and never answers them grows no page's memory); past it the oldest batches are dropped, counted in the tracker's `dropped`, with a console warning",
      ),
    );
  } finally {
    hang.resolve(new Response(null, { status: 202 }));
    stopCapture();
    restore();
  }
});

Deno.test("a batch in flight without keepalive when the page goes is retried by this page when it was not kept with its key: past the 1,000 events a stream keeps, or gone from localStorage since (with no room for it, or taken out to keep a stream's 1,000, not counted in dropped)", async () => {
  const scenarios = ["too many to keep", "dropped since", "no room", "evicted since"] as const;
  for (const scenario of scenarios) {
    let fail!: (error: Error) => void;
    const answer = new Promise<Response>((_, reject) => fail = reject);
    // Beacons refused (the browser's budget spent, say): what the page leaves is kept.
    const page = pageFixture({ answers: [answer], beacon: "refused" });
    const { sent, warnings } = page;
    try {
      const count = scenario === "too many to keep" ? 1_500 : 100;
      const pad = "x".repeat(scenario === "too many to keep" ? 40 : 700);
      const tracker = createTracker({
        key: "pk_test",
        endpoint: "https://e.example",
        // Room for the 950 events more of "evicted since" to wait.
        maxBatch: scenario === "evicted since" ? 1_000 : count,
        flushMs: 60_000,
      });
      for (let n = 0; n < count; n++) tracker.track("s", { n, pad });
      tracker.flush();
      await new Promise((resolve) => setTimeout(resolve, 20));
      assert.equal(sent.length, 1, scenario);
      assert.equal(sent[0].init.keepalive, false, scenario);
      const key = sent[0].init.headers["Idempotency-Key"];
      const setItem = Storage.prototype.setItem;
      if (scenario === "no room") {
        Storage.prototype.setItem = () => {
          throw new DOMException("full", "QuotaExceededError");
        };
      }
      try {
        tracker.beacon();
      } finally {
        Storage.prototype.setItem = setItem;
      }
      if (scenario === "no room") {
        assert.deepEqual(keptNames(), []);
        // Not "lost": its send, failing, sends it again while the page stays.
        assert.deepEqual(warnings, [
          "edgestream: kept no copy of 100 events to s in flight: no room to keep them; lost if the page goes before it is answered",
        ]);
      } else if (scenario === "evicted since") {
        // 950 events more kept as the page is hidden again: past a stream's 1,000, the copy goes.
        for (let n = 0; n < 950; n++) tracker.track("s", { n });
        tracker.beacon();
        const kept = keptBatches();
        assert.deepEqual(kept.map((batch) => batch.events.length), [950]);
        assert.notEqual(kept[0].idempotencyKey, key);
      } else if (scenario === "too many to keep") {
        // Not kept at all (its last 1,000 as new events would count twice had it been applied).
        assert.deepEqual(keptNames(), []);
      } else {
        assert.deepEqual(keptBatches().map((batch) => batch.idempotencyKey), [key]);
        // Gone from localStorage since (a full store drops the oldest entries first; another tab
        // may have taken it): sent under its key either way, so counted once.
        localStorage.removeItem(keptNames()[0]);
      }
      // The send fails (the browser cancelled it, or the network): this page sends it again,
      // whole, under its key, as it would any other.
      fail(new TypeError("Failed to fetch"));
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      const again = sent.slice(1).filter((item) => item.init.headers["Idempotency-Key"] === key);
      assert.equal(again.length, 1, `${scenario}: ${sent.length} sends`);
      assert.equal(JSON.parse(String(again[0].init.body)).length, count, scenario);
      // Not given up on, so not counted (before, a copy with no room or evicted was).
      assert.equal(tracker.dropped, 0, scenario);
      await tracker.close();
    } finally {
      page.dispose();
    }
  }
});

Deno.test("a batch kept after its beacon keeps the expiry of its key's first try on every page that sends it again, and goes no more past it: not counted twice once the server forgot the key", async () => {
  // Each page takes what was kept when made, as it flushes. Kept for 300 ms from the first try:
  // the key's 600 ms less half of it.
  const page = pageFixture({
    fetchFailures: 20,
    beacon: "recorded",
    locks: LOCKS_GRANTED_AT_ONCE,
    idempotencyTtlMs: 600,
  });
  const { sent, beacons, warnings, options } = page;
  try {
    const first = createTracker(options);
    first.track("s", { n: 1 });
    await first.flush();
    globalThis.dispatchEvent(new Event("pagehide"));
    const key = sent[0].init.headers["Idempotency-Key"];
    const [kept] = keptBatches();
    assert.equal(kept.idempotencyKey, key);
    assert.equal(beacons.length, 1);
    assert.ok(Math.abs(kept.expiresAt! - (sent[0].at + 300)) <= 50, `${kept.expiresAt}`);
    await first.close();
    await new Promise((resolve) => setTimeout(resolve, 150));
    // The next page sends it under its key, fails unanswered again, and beacons and keeps it again:
    // with the first try's expiry (before, a fresh one: re-kept on every page, never expiring).
    const second = createTracker(options);
    await second.flush();
    assert.equal(sent.length, 2);
    assert.equal(sent[1].init.headers["Idempotency-Key"], key);
    globalThis.dispatchEvent(new Event("pagehide"));
    assert.equal(beacons.length, 2);
    const [again] = keptBatches();
    assert.equal(again.idempotencyKey, key);
    assert.equal(again.expiresAt, kept.expiresAt);
    await second.close();
    await new Promise((resolve) => setTimeout(resolve, kept.expiresAt! - Date.now() + 20));
    // Past it, the page after drops it with a warning: neither sent nor kept again.
    const third = createTracker(options);
    await third.flush();
    globalThis.dispatchEvent(new Event("pagehide"));
    assert.equal(sent.length, 2);
    assert.equal(beacons.length, 2);
    assert.equal(localStorage.length, 0);
    // Given up on, so counted in `dropped` (before, only maxHeld's drops were: 0).
    assert.equal(third.dropped, 1);
    assert.ok(
      warnings.some((text) =>
        text.startsWith(
          "edgestream: dropped 1 events to s first sent too long ago to send again under their key",
        )
      ),
      warnings.join("\n"),
    );
    await third.close();
  } finally {
    page.dispose();
  }
});

Deno.test("a batch held past its key's expiry is neither sent again by a flush nor beaconed or kept as the page goes", async () => {
  const page = pageFixture({ fetchFailures: 20, beacon: "recorded", idempotencyTtlMs: 400 });
  const { sent, beacons, warnings, options } = page;
  try {
    const tracker = createTracker(options);
    tracker.track("s", { n: 1 });
    await tracker.flush();
    tracker.track("s", { n: 2 });
    assert.equal(tracker.held, 1);
    await new Promise((resolve) => setTimeout(resolve, 250));
    // Past the first try's 200 ms: the held batch is dropped, not tried again; the new one goes.
    await tracker.flush();
    assert.deepEqual(sent.map((request) => JSON.parse(String(request.init.body))[0].n), [1, 2]);
    assert.ok(
      warnings.some((text) => text.startsWith("edgestream: dropped 1 events to s first sent")),
    );
    assert.equal(tracker.dropped, 1);
    await new Promise((resolve) => setTimeout(resolve, 250));
    globalThis.dispatchEvent(new Event("pagehide"));
    assert.deepEqual(beacons, []);
    assert.equal(localStorage.length, 0);
    assert.equal(tracker.dropped, 2);
    assert.equal(warnings.filter((text) => text.includes("first sent too long ago")).length, 2);
    // The margin said is what the drop keeps: half of 400 ms, shorter than a minute.
    assert.ok(
      warnings.filter((text) => text.includes("first sent too long ago")).every((text) =>
        text.includes("within 200 ms of the stream's idempotencyTtl (idempotencyTtlMs 400)")
      ),
      warnings.join("\n"),
    );
    await tracker.close();
  } finally {
    page.dispose();
  }
});

Deno.test("a full localStorage drops the copies of batches a beacon took too before the batches kept only there, and a copy not kept warns that its events went by beacon", async () => {
  const page = pageFixture({
    answers: [
      new Response(null, { status: 503 }),
      new Response(null, { status: 202 }),
      new TypeError("Failed to fetch"),
      new Response(null, { status: 503 }),
      new Response(null, { status: 202 }),
      new TypeError("Failed to fetch"),
    ],
    beacon: "recorded",
  });
  const { sent, beacons, warnings } = page;
  const events = (from: number, count: number) =>
    Array.from({ length: count }, (_, i) => ({ n: from + i }));
  try {
    const tracker = createTracker({ ...page.options, maxBatch: 1000 });
    // 600 events answered 503: kept only in localStorage as the page is hidden.
    for (const event of events(0, 600)) tracker.track("s", event);
    await tracker.flush();
    globalThis.dispatchEvent(new Event("pagehide"));
    assert.equal(beacons.length, 0);
    // The server answers again; 300 events fail unanswered: beaconed and kept too.
    tracker.track("s", { n: 600 });
    await tracker.flush();
    for (const event of events(1000, 300)) tracker.track("s", event);
    await tracker.flush();
    globalThis.dispatchEvent(new Event("pagehide"));
    assert.equal(beacons.length, 1);
    // 200 more answered 503: 1,100 kept in all, past the 1,000 a stream keeps.
    for (const event of events(2000, 200)) tracker.track("s", event);
    await tracker.flush();
    globalThis.dispatchEvent(new Event("pagehide"));
    assert.equal(sent.length, 4);
    const kept = keptBatches();
    // The beaconed copy went (before, the oldest: the 600 no beacon took, lost).
    assert.deepEqual(kept.map((batch) => batch.events.length), [600, 200]);
    assert.equal(kept[0].events[0].n, 0);
    // A copy of what a beacon took is no event given up on.
    assert.equal(tracker.dropped, 0);
    localStorage.clear();

    // No room at all: the beaconed batch's copy is not kept, and the warning says it went.
    const setItem = Storage.prototype.setItem;
    Storage.prototype.setItem = () => {
      throw new DOMException("full", "QuotaExceededError");
    };
    tracker.track("s", { n: 2999 });
    await tracker.flush();
    try {
      tracker.track("s", { n: 3000 });
      await tracker.flush();
      globalThis.dispatchEvent(new Event("pagehide"));
    } finally {
      Storage.prototype.setItem = setItem;
    }
    assert.equal(beacons.length, 2);
    assert.ok(
      warnings.includes(
        "edgestream: kept no copy of 1 events to s sent by beacon: no room to keep them",
      ),
      warnings.join("\n"),
    );
    assert.ok(!warnings.some((text) => text.startsWith("edgestream: lost")), warnings.join("\n"));
    assert.equal(tracker.dropped, 0);
    await tracker.close();
  } finally {
    page.dispose();
  }
});

/**
 * Web Locks granted when the test says: each request waits in `asked` until its `grant()`, which
 * runs its callback.
 */
function locksGrantedByHand() {
  const asked: Array<{ name: string; grant(): void }> = [];
  const locks: FakeLocks = {
    request: (name, callback) =>
      new Promise((resolve, reject) =>
        asked.push({
          name,
          grant() {
            try {
              resolve(callback());
            } catch (error) {
              reject(error);
            }
          },
        })
      ),
  };
  return { asked, locks };
}

Deno.test("the SDK takes what an earlier page kept under the Web Lock edgestream-kept:<endpoint>|<key>: nothing until it is granted, events tracked meanwhile go after it in one batch, and a tracker closed before the grant takes nothing, leaving it to the next", async () => {
  const { sent, restore } = recordingFetch([]);
  const { asked, locks } = locksGrantedByHand();
  const restoreLocks = withLocks(locks);
  const name = "edgestream:https://e.example|pk_test|s";
  const options = { key: "pk_test", endpoint: "https://e.example/", flushMs: 60_000 };
  const numbers = () =>
    sent.map((request) =>
      JSON.parse(String(request.init.body)).map((event: { n: number }) => event.n)
    );
  try {
    localStorage.setItem(name, JSON.stringify([{ n: 1 }, { n: 2 }]));
    const tracker = createTracker(options);
    assert.deepEqual(asked.map((request) => request.name), [
      "edgestream-kept:https://e.example|pk_test",
    ]);
    tracker.track("s", { n: 3 });
    // Another tab holds the lock: what was kept stays for whichever takes it first.
    assert.notEqual(localStorage.getItem(name), null);
    asked[0].grant();
    assert.equal(localStorage.getItem(name), null);
    await tracker.flush();
    assert.deepEqual(numbers(), [[1, 2, 3]]);
    await tracker.close();
    // Closed before the lock was granted (a page that made a tracker and closed it at once).
    localStorage.setItem(name, JSON.stringify([{ n: 4 }]));
    const closed = createTracker(options);
    assert.deepEqual(await closed.close(), { kept: 0 });
    asked[1].grant();
    assert.deepEqual(JSON.parse(localStorage.getItem(name)!), [{ n: 4 }]);
    assert.equal(sent.length, 1);
    const next = createTracker(options);
    asked[2].grant();
    await next.flush();
    assert.deepEqual(numbers(), [[1, 2, 3], [4]]);
    assert.equal(localStorage.length, 0);
    await next.close();
    assert.ok(
      await readmeSays(
        "A tracker takes what was kept under a Web Lock (`navigator.locks`, named `edgestream-kept:<endpoint>|<key>`), so that two tabs of the origin loading at once (a browser restoring its session) take it one after the other; Chromium tabs hear of each other's writes late, so both may still read an entry: it goes under the same key from both, counted once, when both read the same entries (two that read different ones may merge them differently, under different keys, and count the events they share twice; what an older release kept under `edgestream:` goes as new events from both); events tracked while the lock is awaited and not sent yet go after it, and a tracker closed before the lock is granted takes nothing, leaving it to the next tracker or page.",
      ),
    );
  } finally {
    restoreLocks();
    restore();
  }
});

/**
 * Stands a `document` whose `visibilityState` the test sets in for the browser's (Deno has none);
 * `show(hidden)` sets it and fires `visibilitychange` as a browser does.
 */
function withVisibility(state: "visible" | "hidden") {
  const document = { visibilityState: state };
  Object.defineProperty(globalThis, "document", { value: document, configurable: true });
  return {
    setVisibility(next: "visible" | "hidden") {
      document.visibilityState = next;
      globalThis.dispatchEvent(new Event("visibilitychange"));
    },
    restoreDocument: () => delete (globalThis as { document?: unknown }).document,
  };
}

Deno.test("a page hidden when the Web Lock is granted (hidden again after it asked, or loaded hidden) takes nothing of what was kept: it stays in localStorage, with what its hide kept, for the page's next show", async () => {
  const { asked, locks } = locksGrantedByHand();
  // No beacon gets through: the hide keeps what waits in localStorage.
  const page = pageFixture({ answers: [], beacon: "refused", locks });
  const { sent } = page;
  const { setVisibility, restoreDocument } = withVisibility("visible");
  // An endpoint of this test's own: trackers earlier tests left open hear the same
  // visibilitychange events, and keep and ask under their own endpoints.
  const name = "edgestream:https://hidden.example|pk_test|s";
  const options = { key: "pk_test", endpoint: "https://hidden.example/", flushMs: 60_000 };
  const ours = () =>
    Object.keys(localStorage).filter((key) => key.includes("hidden.example")).sort()
      .map((key) => [key, localStorage.getItem(key)]);
  const lockName = "edgestream-kept:https://hidden.example|pk_test";
  let granted = 0;
  /** Grants this test's lock requests not granted yet; answers how many. */
  const grantOurs = () => {
    const waiting = asked.filter((request) => request.name === lockName).slice(granted);
    granted += waiting.length;
    for (const request of waiting) request.grant();
    return waiting.length;
  };
  const numbers = () =>
    sent.filter((request) => String(request.url).includes("hidden.example")).flatMap((request) =>
      JSON.parse(String(request.init.body)).map((event: { n: number }) => event.n)
    ).sort();
  try {
    localStorage.setItem(name, JSON.stringify([{ n: 1 }, { n: 2 }]));
    const tracker = createTracker(options);
    tracker.track("s", { n: 3 });
    setVisibility("hidden");
    const keptOnHide = JSON.stringify(ours());
    assert.match(keptOnHide, /n\\+":3/);
    // Granted while hidden: taken, it would be sent from a page that may be frozen or discarded.
    assert.equal(grantOurs(), 1);
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(JSON.stringify(ours()), keptOnHide);
    assert.deepEqual(numbers(), []);
    setVisibility("visible");
    assert.equal(grantOurs(), 1);
    await tracker.flush();
    assert.deepEqual(numbers(), [1, 2, 3]);
    assert.deepEqual(ours(), []);
    await tracker.close();
    // Loaded hidden (a background tab, a prerender): taken on its first show.
    setVisibility("hidden");
    localStorage.setItem(name, JSON.stringify([{ n: 4 }]));
    const background = createTracker(options);
    assert.equal(grantOurs(), 1);
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.deepEqual(JSON.parse(localStorage.getItem(name)!), [{ n: 4 }]);
    setVisibility("visible");
    assert.equal(grantOurs(), 1);
    await background.flush();
    assert.deepEqual(numbers(), [1, 2, 3, 4]);
    assert.deepEqual(ours(), []);
    await background.close();
    assert.ok(
      await readmeSays(
        "A page hidden when the lock is granted (hidden again after it asked, or loaded hidden: a background tab, a prerender) takes nothing either: what it took would wait in the memory of a page that may be frozen or discarded unannounced; it is left kept for the page's next show, or the next page.",
      ),
    );
  } finally {
    restoreDocument();
    page.dispose();
  }
});

Deno.test("where the browser refuses Web Locks (an opaque origin's SecurityError), the SDK takes what was kept without the lock", async () => {
  const { sent, restore } = recordingFetch([]);
  const restoreLocks = withLocks({
    request: () => Promise.reject(new DOMException("Access denied", "SecurityError")),
  });
  try {
    localStorage.setItem("edgestream:https://e.example|pk_test|s", JSON.stringify([{ n: 1 }]));
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    await new Promise((resolve) => setTimeout(resolve, 0));
    assert.equal(localStorage.length, 0);
    await tracker.flush();
    assert.equal(sent.length, 1);
    await tracker.close();
  } finally {
    restoreLocks();
    restore();
  }
});

Deno.test("a kept entry that is not JSON the SDK can read is dropped, not counted in dropped", async () => {
  const page = pageFixture({ answers: [], locks: LOCKS_GRANTED_AT_ONCE });
  const { sent, warnings } = page;
  try {
    localStorage.setItem("edgestream:https://e.example|pk_test|s", "[{");
    localStorage.setItem("edgestream-keyed:https://e.example|pk_test|s", "{}");
    const tracker = createTracker({ key: "pk_test", endpoint: "https://e.example" });
    await tracker.flush();
    assert.equal(localStorage.length, 0);
    assert.equal(sent.length, 0);
    assert.equal(tracker.dropped, 0);
    assert.deepEqual(warnings, []);
    await tracker.close();
    assert.ok(
      await readmeSays(
        "a kept entry that is not JSON the SDK can read is dropped, uncounted.",
      ),
    );
  } finally {
    page.dispose();
  }
});

Deno.test("in a browser without Web Locks, two tabs loading at once that both send a kept batch and both keep it again as they go keep one copy under its key, with the earlier expiry: the next page sends it once", async () => {
  // Without Web Locks, each tab takes what was kept when made: both may read it before either
  // took it out. No beacon gets through: both tabs keep the batch whole with its key.
  const page = pageFixture({ fetchFailures: 10, beacon: "refused", locks: undefined });
  const { sent, options } = page;
  const name = KEYED;
  const expiresAt = Date.now() + 3_600_000;
  const batch = { idempotencyKey: "k-1", events: [{ n: 1 }], expiresAt };
  try {
    localStorage.setItem(name, JSON.stringify([batch]));
    const first = createTracker(options);
    // The other tab read it before the first took it out.
    localStorage.setItem(name, JSON.stringify([{ ...batch, expiresAt: expiresAt + 1_000 }]));
    const second = createTracker(options);
    await Promise.all([first.flush(), second.flush()]);
    assert.deepEqual(sent.map((request) => request.init.headers["Idempotency-Key"]), [
      "k-1",
      "k-1",
    ]);
    assert.equal(first.held + second.held, 2);
    globalThis.dispatchEvent(new Event("pagehide"));
    // Before, two copies: twice the room of the 1,000 a stream keeps, and two requests next time.
    assert.deepEqual(keptBatches(), [batch]);
    await Promise.all([first.close(), second.close()]);
    assert.deepEqual(keptBatches(), [batch]);
    assert.equal(first.dropped + second.dropped, 0);
    const next = createTracker(options);
    await next.flush();
    assert.equal(sent.length, 3);
    await next.close();
    assert.ok(
      await readmeSays(
        "In a browser without Web Locks (they are given to secure contexts only: a page served over plain HTTP from any host but `localhost` or a loopback address (`127.0.0.1`, `[::1]`) has none) both may send it: a batch kept with its key goes under it from both, counted once while the server keeps the key, and is kept once again (with the earlier expiry) if both keep it.",
      ),
    );
  } finally {
    page.dispose();
  }
});

Deno.test("in a browser without Web Locks, events a page kept without a key that two tabs loading at once both take go under the key given them when kept, and count once on a real server", async () => {
  const server = await serveApp({
    streams: { s: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
  });
  const restoreLocks = withLocks(undefined);
  const keys: string[] = [];
  const original = globalThis.fetch;
  globalThis.fetch = ((url: string, init: RequestInit & { headers: Record<string, string> }) => {
    keys.push(init.headers["Idempotency-Key"]);
    return original(url, init);
  }) as typeof fetch;
  const options = { key: "pk_test", endpoint: server.endpoint, flushMs: 60_000 };
  try {
    // Offline as the page goes: what waits, never tried, is kept in an entry with a key of its own.
    Object.defineProperty(navigator, "onLine", { get: () => false, configurable: true });
    const leaving = createTracker(options);
    for (let n = 1; n <= 3; n++) leaving.track("s", { n });
    leaving.beacon();
    await leaving.close();
    delete (navigator as { onLine?: boolean }).onLine;
    const [name] = keptNames("s", { endpoint: server.endpoint });
    const entry = localStorage.getItem(name)!;
    const kept = JSON.parse(entry);
    assert.deepEqual(kept.events, [{ n: 1 }, { n: 2 }, { n: 3 }]);
    assert.equal(kept.expiresAt, undefined);
    assert.equal(keys.length, 0);
    // Without Web Locks each tab takes what was kept when made: the second read it before the
    // first took it out.
    const first = createTracker(options);
    assert.equal(localStorage.length, 0);
    localStorage.setItem(name, entry);
    const second = createTracker(options);
    await Promise.all([first.flush(), second.flush()]);
    // Both sent it, under the key it was kept with: before, as new events from both, 6 counted.
    assert.deepEqual(keys, [kept.idempotencyKey, kept.idempotencyKey]);
    assert.equal((await server.stats("s")).accepted, 3);
    await Promise.all([first.close(), second.close()]);
    for (
      const claim of [
        "Events kept without a key (what no beacon took of what waited, the parts of a `413`'s split not sent yet, what is left of a batch that went by beacons in part) were given one when kept: they too go under it from both, counted once;",
        "events an older release kept (a JSON array under `edgestream:<endpoint>|<key>|<stream>`) go as new events from both: only `dedupeField`'s ids count them once.",
      ]
    ) assert.ok(await readmeSays(claim), claim);
  } finally {
    delete (navigator as { onLine?: boolean }).onLine;
    globalThis.fetch = original;
    restoreLocks();
    await server.close();
  }
});

Deno.test("a batch kept again under a key already kept stays in the first copy's place: the oldest is still dropped first to make room", async () => {
  // Without Web Locks both tabs take the kept batch k-1 and keep it again as they go; between
  // the two, another page kept k-2 (1,000 events, the most a stream keeps), after k-1.
  const page = pageFixture({ fetchFailures: 10, beacon: "refused", locks: undefined });
  const { options } = page;
  const name = KEYED;
  const expiresAt = Date.now() + 3_600_000;
  const older = { idempotencyKey: "k-1", events: [{ n: 1 }], expiresAt };
  const newer = {
    idempotencyKey: "k-2",
    events: Array.from({ length: 1000 }, (_, n) => ({ n })),
    expiresAt,
  };
  try {
    localStorage.setItem(name, JSON.stringify([older]));
    const first = createTracker(options);
    localStorage.setItem(name, JSON.stringify([older]));
    const second = createTracker(options);
    await Promise.all([first.flush(), second.flush()]);
    await first.close();
    assert.deepEqual(keptBatches(), [older]);
    // Kept by another page after k-1, in an entry of its own.
    localStorage.setItem(
      `edgestream-page:https%3A%2F%2Fe.example|pk_test|s|${Date.now() + 1}-0-other`,
      JSON.stringify(newer),
    );
    await second.close();
    // 1,001 events: k-1, kept first, goes. Before, k-1 kept again moved after k-2, which went.
    assert.deepEqual(keptBatches(), [newer]);
  } finally {
    page.dispose();
  }
});

Deno.test("a batch an older release kept with its key but no expiry is sent under its key with the expiry of its first try on this page, which every later page keeps: its margin starts again once, not on every page", async () => {
  // Each page takes what was kept when made, as it flushes. Kept for 300 ms from a first try:
  // the key's 600 ms less half of it.
  const page = pageFixture({
    fetchFailures: 10,
    beacon: "refused",
    locks: LOCKS_GRANTED_AT_ONCE,
    idempotencyTtlMs: 600,
  });
  const { sent, warnings, options } = page;
  const name = KEYED;
  try {
    localStorage.setItem(name, JSON.stringify([{ idempotencyKey: "k-old", events: [{ n: 1 }] }]));
    const first = createTracker(options);
    await first.flush();
    assert.equal(sent[0].init.headers["Idempotency-Key"], "k-old");
    globalThis.dispatchEvent(new Event("pagehide"));
    await first.close();
    const [kept] = keptBatches();
    assert.equal(kept.idempotencyKey, "k-old");
    assert.ok(Math.abs(kept.expiresAt! - (sent[0].at + 300)) <= 50, `${kept.expiresAt}`);
    await new Promise((resolve) => setTimeout(resolve, 150));
    const second = createTracker(options);
    await second.flush();
    assert.equal(sent[1].init.headers["Idempotency-Key"], "k-old");
    globalThis.dispatchEvent(new Event("pagehide"));
    await second.close();
    assert.equal(keptBatches()[0].expiresAt, kept.expiresAt);
    await new Promise((resolve) => setTimeout(resolve, kept.expiresAt! - Date.now() + 20));
    const third = createTracker(options);
    await third.flush();
    assert.equal(sent.length, 2);
    assert.equal(third.dropped, 1);
    assert.equal(localStorage.length, 0);
    assert.ok(warnings.some((text) => text.includes("first sent too long ago")));
    await third.close();
    assert.ok(
      await readmeSays(
        "A batch kept with its key by a release that kept no expiry is sent under its key as if first tried by the page that sends it now, and keeps that expiry from then on",
      ),
    );
  } finally {
    page.dispose();
  }
});

Deno.test("kept entries never tried go merged into batches of at most the batch size, under a key hashed from theirs: 300 one-event entries are 3 batches of 100 (a handful of requests) on a real server limited to a burst of 100, and a second tab taking the same entries counts none again", async () => {
  const server = await serveApp({
    streams: {
      s: {
        limits: { eventsPerSecond: 100, burst: 100 },
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      },
    },
  });
  const restoreLocks = withLocks(undefined);
  const requests: Array<{ key: string; events: number; status: number }> = [];
  /** Requests in flight now, and the most there were at once. */
  let inFlight = 0;
  let mostInFlight = 0;
  const original = globalThis.fetch;
  globalThis.fetch =
    (async (url: string, init: RequestInit & { headers: Record<string, string> }) => {
      mostInFlight = Math.max(mostInFlight, ++inFlight);
      const res = await original(url, init).finally(() => inFlight--);
      requests.push({
        key: init.headers["Idempotency-Key"],
        events: JSON.parse(String(init.body)).length,
        status: res.status,
      });
      return res;
    }) as typeof fetch;
  const { warnings, stopCapture } = captureWarnings();
  const options = { key: "pk_test", endpoint: server.endpoint, maxRetries: 3 };
  // 300 pages that each kept one event offline, each in an entry with a key of its own.
  const at = Date.now() - 1_000;
  const entries = Array.from({ length: 300 }, (_, n) => [
    `edgestream-page:${encodeURIComponent(server.endpoint)}|pk_test|s|${at}-${n + 1}-r${n}`,
    JSON.stringify({ idempotencyKey: `k-${n}`, events: [{ n }] }),
  ]);
  try {
    for (const [name, entry] of entries) localStorage.setItem(name, entry);
    const first = createTracker(options);
    await first.flush();
    // Before, one request an entry at once: 300, the 200 past the burst refused 429 (and sent
    // again, 251 requests more). Now 3 of 100 events (the batch size), one after another, each
    // once the one before was answered: the bucket refills 100 a second, so the 2 past the burst
    // are refused 429 once each and sent again after their Retry-After (202, 429, 202, 429, 202).
    // Before, the 3 went at once, and the 2 refused together again, one of them refused twice: 6.
    assert.equal(mostInFlight, 1);
    assert.ok(requests.length <= 5, `${requests.length} requests`);
    const accepted = requests.filter((request) => request.status === 202);
    assert.deepEqual(accepted.map((request) => request.events), [100, 100, 100]);
    for (const request of requests) assert.match(request.key, /^[0-9a-f]{64}$/);
    assert.equal(new Set(accepted.map((request) => request.key)).size, 3);
    assert.equal((await server.stats("s")).accepted, 300);
    // A second tab read the same entries before the first took them out: the same batches under
    // the same keys, replayed, none counted again.
    for (const [name, entry] of entries) localStorage.setItem(name, entry);
    const second = createTracker(options);
    await second.flush();
    const again = requests.slice(requests.length - 3);
    assert.deepEqual(
      again.map((request) => [request.key, request.status]).sort(),
      accepted.map((request) => [request.key, 202]).sort(),
    );
    assert.equal((await server.stats("s")).accepted, 300);
    assert.equal(localStorage.length, 0);
    // A tab that read all but the oldest merges them differently, under other keys: the events
    // it shares with the others are counted again.
    for (const [name, entry] of entries.slice(1)) localStorage.setItem(name, entry);
    const third = createTracker(options);
    await third.flush();
    assert.equal((await server.stats("s")).accepted, 599);
    assert.deepEqual(warnings, []);
    await Promise.all([first.close(), second.close(), third.close()]);
    for (
      const claim of [
        "The next page sends a stream's entries never tried (no `expiresAt`) merged, in their kept order, into batches of at most `maxBatch` events, each under the hex SHA-256 of its entries' keys, sorted (an entry alone keeps its own key; without `crypto.subtle`, outside secure contexts, each goes alone): 300 one-event entries go as 3 batches, and a tab that took the same entries sends the same batches under the same keys, counted once.",
        "Chromium tabs hear of each other's writes late, so both may still read an entry: it goes under the same key from both, counted once, when both read the same entries (two that read different ones may merge them differently, under different keys, and count the events they share twice;",
        "A stream's batches taken, tried or merged, go one after another (at once, more than a rate limit's burst would be refused).",
      ]
    ) assert.ok(await readmeSays(claim), claim);
  } finally {
    stopCapture();
    globalThis.fetch = original;
    restoreLocks();
    await server.close();
  }
});

Deno.test("on a page without crypto.subtle (plain HTTP: no Web Locks either), kept entries never tried go each alone under its own key, so two tabs that read different ones count none twice on a real server", async () => {
  const server = await serveApp({
    streams: { s: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
  });
  const restoreLocks = withLocks(undefined);
  Object.defineProperty(crypto, "subtle", { value: undefined, configurable: true });
  const requests: Array<{ key: string; events: unknown[] }> = [];
  const original = globalThis.fetch;
  globalThis.fetch = ((url: string, init: RequestInit & { headers: Record<string, string> }) => {
    requests.push({
      key: init.headers["Idempotency-Key"],
      events: JSON.parse(String(init.body)),
    });
    return original(url, init);
  }) as typeof fetch;
  const { warnings, stopCapture } = captureWarnings();
  const options = { key: "pk_test", endpoint: server.endpoint, maxRetries: 3 };
  const at = Date.now() - 1_000;
  const entries = Array.from({ length: 3 }, (_, n) => [
    `edgestream-page:${encodeURIComponent(server.endpoint)}|pk_test|s|${at}-${n + 1}-r${n}`,
    JSON.stringify({ idempotencyKey: `k-${n}`, events: [{ n }] }),
  ]);
  try {
    for (const [name, entry] of entries) localStorage.setItem(name, entry);
    const first = createTracker(options);
    // The second tab read all but the oldest before the first took them out.
    for (const [name, entry] of entries.slice(1)) localStorage.setItem(name, entry);
    const second = createTracker(options);
    await Promise.all([first.flush(), second.flush()]);
    // Merged (with crypto.subtle), the first sent 3 events under one key and the second 2 under
    // another: 5 counted.
    for (const request of requests) {
      assert.deepEqual(request.events, [{ n: Number(request.key.slice(2)) }]);
    }
    assert.deepEqual(
      [...new Set(requests.map((request) => request.key))].sort(),
      ["k-0", "k-1", "k-2"],
    );
    assert.equal((await server.stats("s")).accepted, 3);
    assert.deepEqual(warnings, []);
    await Promise.all([first.close(), second.close()]);
    assert.ok(
      await readmeSays(
        "such a plain-HTTP page has no `crypto.subtle` either, which merging needs, so each entry goes alone under its own key, and two tabs that read different ones count none twice;",
      ),
    );
  } finally {
    stopCapture();
    globalThis.fetch = original;
    delete (crypto as { subtle?: unknown }).subtle;
    restoreLocks();
    await server.close();
  }
});

Deno.test("a page that goes while hashing the key of kept entries it merged keeps each entry again as it was, under its own key with no expiry, and sends none of them", async () => {
  const fixture = pageFixture({ beacon: "refused", locks: LOCKS_GRANTED_AT_ONCE });
  try {
    const at = Date.now() - 1_000;
    for (let n = 0; n < 150; n++) {
      localStorage.setItem(
        `edgestream-page:https%3A%2F%2Fe.example|pk_test|s|${at}-${n + 1}-r${n}`,
        JSON.stringify({ idempotencyKey: `k-${n}`, events: [{ n }] }),
      );
    }
    // Takes the 150 at once (the lock granted in the call): merged batches of 100 and 50, the
    // first one's key being hashed when the page goes.
    const tracker = createTracker({ ...fixture.options, flushMs: 60_000 });
    assert.equal(localStorage.length, 0);
    tracker.beacon();
    // Kept as the merged batches (100 and 50 events, each under a new key), the entries another
    // tab took too would count twice; and the one being hashed must not go once hashed either.
    assert.deepEqual(
      keptBatches(),
      Array.from({ length: 150 }, (_, n) => ({ idempotencyKey: `k-${n}`, events: [{ n }] })),
    );
    await tracker.flush();
    assert.deepEqual(fixture.sent, []);
    assert.equal(keptBatches().length, 150);
    assert.equal(tracker.dropped, 0);
    await tracker.close();
  } finally {
    fixture.dispose();
  }
});

Deno.test("the key of kept entries sent merged is the hex SHA-256 of their keys sorted, one a line: not in their kept order", async () => {
  const fixture = pageFixture({ beacon: "refused", locks: LOCKS_GRANTED_AT_ONCE });
  try {
    const at = Date.now() - 1_000;
    // Kept in this order: their keys are not sorted so.
    const keys = ["k-b", "k-c", "k-a"];
    for (const [n, key] of keys.entries()) {
      localStorage.setItem(
        `edgestream-page:https%3A%2F%2Fe.example|pk_test|s|${at}-${n + 1}-r${n}`,
        JSON.stringify({ idempotencyKey: key, events: [{ n }] }),
      );
    }
    const tracker = createTracker(fixture.options);
    await tracker.flush();
    const digest = await crypto.subtle.digest(
      "SHA-256",
      new TextEncoder().encode("k-a\nk-b\nk-c"),
    );
    const hex = [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0"))
      .join("");
    assert.deepEqual(
      fixture.sent.map((request) => [request.init.headers["Idempotency-Key"], request.init.body]),
      [[hex, JSON.stringify([{ n: 0 }, { n: 1 }, { n: 2 }])]],
    );
    await tracker.close();
    assert.ok(
      await readmeSays(
        "each under the hex SHA-256 of its entries' keys, sorted (an entry alone keeps its own key;",
      ),
    );
  } finally {
    fixture.dispose();
  }
});

Deno.test("kept entries tried before (with an expiry) go whole under their own key, one after another, and what is not sent yet is kept again as it was when the page goes", async () => {
  let answerFirst: (res: Response) => void = () => {};
  const fixture = pageFixture({
    answers: [new Promise<Response>((resolve) => answerFirst = resolve)],
    beacon: "refused",
    locks: LOCKS_GRANTED_AT_ONCE,
  });
  try {
    const expiresAt = Date.now() + 3_600_000;
    for (let n = 0; n < 3; n++) {
      localStorage.setItem(
        `edgestream-page:https%3A%2F%2Fe.example|pk_test|s|${Date.now() - 1_000}-${n + 1}-r${n}`,
        JSON.stringify({ idempotencyKey: `k-${n}`, events: [{ n }], expiresAt }),
      );
    }
    const tracker = createTracker(fixture.options);
    await new Promise((resolve) => setTimeout(resolve, 20));
    // Before, all three at once.
    assert.deepEqual(fixture.sent.map((request) => request.init.headers["Idempotency-Key"]), [
      "k-0",
    ]);
    // The page goes while the first is in flight: the two not sent yet are kept as they were.
    tracker.beacon();
    assert.deepEqual(keptBatches(), [
      { idempotencyKey: "k-1", events: [{ n: 1 }], expiresAt },
      { idempotencyKey: "k-2", events: [{ n: 2 }], expiresAt },
    ]);
    answerFirst(new Response(null, { status: 202 }));
    await tracker.flush();
    assert.equal(fixture.sent.length, 1);
    localStorage.clear();
    // Shown to the next page: sent one after another, each under its key.
    for (let n = 0; n < 3; n++) {
      localStorage.setItem(
        `edgestream-page:https%3A%2F%2Fe.example|pk_test|s|${Date.now() - 1_000}-${n + 1}-r${n}`,
        JSON.stringify({ idempotencyKey: `k-${n}`, events: [{ n }], expiresAt }),
      );
    }
    const next = createTracker(fixture.options);
    await next.flush();
    assert.deepEqual(
      fixture.sent.slice(1).map((request) => request.init.headers["Idempotency-Key"]),
      ["k-0", "k-1", "k-2"],
    );
    await Promise.all([tracker.close(), next.close()]);
    assert.ok(
      await readmeSays(
        "Entries tried before go whole under their own key. A stream's batches taken, tried or merged, go one after another",
      ),
    );
  } finally {
    fixture.dispose();
  }
});

Deno.test("events a full localStorage cannot keep count once in dropped, those past a stream's 1,000 too", async () => {
  const fixture = pageFixture({ beacon: "refused" });
  const setItem = Storage.prototype.setItem;
  try {
    const tracker = createTracker({ ...fixture.options, maxBatch: 2_000, flushMs: 60_000 });
    for (let n = 0; n < 1_500; n++) tracker.track("s", { n });
    Storage.prototype.setItem = () => {
      throw new DOMException("full", "QuotaExceededError");
    };
    tracker.beacon();
    // Before, the 500 past the 1,000 a stream keeps were counted, then all 1,500 again: 2,000.
    assert.equal(tracker.dropped, 1_500);
    assert.deepEqual(fixture.warnings, ["edgestream: lost 1500 events to s: no room to keep them"]);
    Storage.prototype.setItem = setItem;
    // With room, the 500 oldest past the 1,000 are counted, once.
    for (let n = 0; n < 1_500; n++) tracker.track("s", { n });
    tracker.beacon();
    assert.equal(tracker.dropped, 2_000);
    assert.equal(keptEvents().length, 1_000);
    await tracker.close();
  } finally {
    Storage.prototype.setItem = setItem;
    fixture.dispose();
  }
});

Deno.test("a batch of more than 1,000 events waiting to be sent again is kept as its newest 1,000 under a new key, no expiry (no try of it was applied: the server takes at most 1,000 a request)", async () => {
  const fixture = pageFixture({
    answers: [new Response(null, { status: 503, headers: { "Retry-After": "60" } })],
    beacon: "refused",
  });
  try {
    const tracker = createTracker({ ...fixture.options, maxBatch: 2_000, flushMs: 60_000 });
    for (let n = 0; n < 1_500; n++) tracker.track("s", { n });
    await tracker.flush();
    assert.equal(tracker.held, 1_500);
    tracker.beacon();
    const [kept, ...more] = keptBatches();
    assert.deepEqual(more, []);
    assert.notEqual(kept.idempotencyKey, fixture.sent[0].init.headers["Idempotency-Key"]);
    assert.equal(kept.expiresAt, undefined);
    assert.deepEqual(kept.events, Array.from({ length: 1_000 }, (_, n) => ({ n: n + 500 })));
    assert.equal(tracker.dropped, 500);
    await tracker.close();
  } finally {
    fixture.dispose();
  }
});

Deno.test("a tracker whose key is another's plus '|…' takes none of that key's kept entries: the endpoint and key are URI-encoded in the entry's name", async () => {
  const fixture = pageFixture({ beacon: "refused", locks: LOCKS_GRANTED_AT_ONCE });
  const options = (key: string) => ({ ...fixture.options, key, flushMs: 60_000 });
  try {
    const leaving = createTracker(options("pk_a|s"));
    leaving.track("s", { n: 1 });
    leaving.beacon();
    await leaving.close();
    assert.equal(localStorage.length, 1);
    // Before, pk_a's tracker took it (and sent it to a stream `s|s`).
    const other = createTracker(options("pk_a"));
    await other.flush();
    assert.deepEqual(fixture.sent.map((request) => request.url), []);
    assert.deepEqual(keptEvents("s", { key: "pk_a|s" }), [{ n: 1 }]);
    assert.deepEqual(
      Object.keys(localStorage).map((name) => name.slice(0, name.lastIndexOf("|"))),
      ["edgestream-page:https%3A%2F%2Fe.example|pk_a%7Cs|s"],
    );
    const own = createTracker(options("pk_a|s"));
    await own.flush();
    assert.deepEqual(fixture.sent.map((request) => [request.url, request.init.body]), [[
      "https://e.example/v1/streams/s/events?key=pk_a%7Cs",
      JSON.stringify([{ n: 1 }]),
    ]]);
    assert.equal(localStorage.length, 0);
    await Promise.all([other.close(), own.close()]);
    assert.ok(
      await readmeSays(
        "`edgestream-page:<endpoint>|<key>|<stream>|<time>-<seq>-<random>` (the endpoint and key URI-encoded, so a key that is another plus `|…` takes none of its entries)",
      ),
    );
  } finally {
    fixture.dispose();
  }
});

Deno.test("a page keeping its own batches as it goes reads the stream's kept entries once, to keep 1,000 when all is kept, not after each batch, nor for copies under their keys (only a batch it took from storage can have one)", async () => {
  const fixture = pageFixture({
    answers: Array.from(
      { length: 20 },
      () => new Response(null, { status: 503, headers: { "Retry-After": "60" } }),
    ),
    beacon: "refused",
  });
  const getItem = Storage.prototype.getItem;
  let reads = 0;
  try {
    const tracker = createTracker({ ...fixture.options, maxBatch: 1, flushMs: 60_000 });
    for (let n = 0; n < 20; n++) tracker.track("s", { n });
    await tracker.flush();
    assert.equal(tracker.held, 20);
    Storage.prototype.getItem = function (this: Storage, name: string) {
      reads++;
      return getItem.call(this, name);
    };
    tracker.beacon();
    Storage.prototype.getItem = getItem;
    assert.equal(keptBatches().length, 20);
    // The 20 entries read once, at the end (Deno's Storage reads an item to list it too: twice
    // each). Before, each keep read the stream's entries for copies, then again to keep 1,000: 800.
    assert.equal(reads, 40);
    await tracker.close();
  } finally {
    Storage.prototype.getItem = getItem;
    fixture.dispose();
  }
});

Deno.test("a page that took 100 kept entries and goes before sending them keeps each again reading the stream's entries once for copies, not once an entry", async () => {
  const fixture = pageFixture({ beacon: "refused", locks: LOCKS_GRANTED_AT_ONCE });
  const getItem = Storage.prototype.getItem;
  let reads = 0;
  try {
    const at = Date.now() - 1_000;
    for (let n = 0; n < 100; n++) {
      localStorage.setItem(
        `edgestream-page:https%3A%2F%2Fe.example|pk_test|s|${at}-${n + 1}-r${n}`,
        JSON.stringify({ idempotencyKey: `k-${n}`, events: [{ n }] }),
      );
    }
    // Takes the 100 entries at once (the lock granted in the call): one merged batch, its key
    // being hashed when the page goes.
    const tracker = createTracker({ ...fixture.options, flushMs: 60_000 });
    assert.equal(localStorage.length, 0);
    Storage.prototype.getItem = function (this: Storage, name: string) {
      reads++;
      return getItem.call(this, name);
    };
    tracker.beacon();
    Storage.prototype.getItem = getItem;
    assert.deepEqual(
      keptBatches().map((batch) => batch.idempotencyKey),
      Array.from({ length: 100 }, (_, n) => `k-${n}`),
    );
    // The stream's entries read once for copies (none yet), then the 100 once to keep 1,000
    // (Deno's Storage reads an item to list it too: twice each). Before, each keep read those
    // kept before it for copies under its key (each a key the page took): 9,900 reads more.
    assert.equal(reads, 200);
    await tracker.close();
    assert.deepEqual(fixture.sent, []);
  } finally {
    Storage.prototype.getItem = getItem;
    fixture.dispose();
  }
});
