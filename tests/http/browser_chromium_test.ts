/**
 * Ingest from web pages in real headless Chromium: a page on another origin
 * sends with `fetch`, with `navigator.sendBeacon` and with `/sdk.js`, using a
 * publishable key; a page on an origin the key does not list is refused.
 * The pages come from a second local server: `http://localhost:<port>` is
 * the allowed origin, `http://127.0.0.1:<port>` (same server, another host
 * name, so another origin) the refused one.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import type { Browser, Page } from "playwright-core";
import { createApp } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { MemoryStore } from "../../src/store/memory/store.ts";
import { type StoreBatch, StoreUnavailableError } from "../../src/store/mod.ts";
import { RedisKeyStore } from "../../src/store/redis/key_store.ts";
import { browserTest } from "../_chromium.ts";
import { KEYS } from "../_fixtures.ts";
import { withRedis } from "../_redis.ts";

const CONFIG = {
  streams: {
    pageviews: {
      dedupe: { field: "id" },
      counters: { views: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
    limited: {
      dedupe: { field: "id" },
      limits: { eventsPerSecond: 1, burst: 2 },
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
  },
};

interface Setup {
  /** The edgestream server: `http://127.0.0.1:<port>`. */
  api: string;
  /** The allowed page origin. */
  allowed: string;
  /** A page origin the key does not list. */
  refused: string;
  /** The publishable key. */
  key: string;
  /** A secret key (scope `ingest`, stream `pageviews`) whose `origins` list the allowed origin. */
  secretKey: string;
  /** Answers the API gave to ingest requests (WebSocket upgrades too): origin and status. */
  answers: Array<
    {
      origin: string | null;
      status: number;
      method: string;
      idempotencyKey: string | null;
      /** `?idempotencyKey=`, as a beacon sends it. */
      queryKey: string | null;
      /** The request's body, as sent. */
      body: string;
    }
  >;
  accepted(stream: string): Promise<number>;
  /** Takes the store down (every batch answered `503 store_unavailable`) or back up. */
  setStoreDown(down: boolean): void;
  close(): Promise<void>;
}

/** A memory store whose batches fail as a Redis that does not answer does, while `down`. */
class OutageStore extends MemoryStore {
  down = false;

  override applyBatch(batch: StoreBatch) {
    if (this.down) {
      return Promise.reject(
        new StoreUnavailableError("Redis did not answer", { outcome: "not_applied" }),
      );
    }
    return super.applyBatch(batch);
  }
}

async function setup(): Promise<Setup> {
  const streams = compileConfig(CONFIG);
  const store = new OutageStore();
  const keys = await KeyRing.parse(`admin:${KEYS.admin}`);
  const app = createApp({ streams, store, keys });
  const answers: Setup["answers"] = [];
  const api = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
    const sent = request.clone().text();
    const response = await app.fetch(request);
    if (/\/(?:events|ws)$/.test(new URL(request.url).pathname)) {
      answers.push({
        body: await sent,
        origin: request.headers.get("Origin"),
        status: response.status,
        method: request.method,
        idempotencyKey: request.headers.get("Idempotency-Key"),
        queryKey: new URL(request.url).searchParams.get("idempotencyKey"),
      });
    }
    return response;
  });
  const pages = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    (request) =>
      new URL(request.url).pathname === "/"
        ? new Response("<!doctype html><title>shop</title><p>shop</p>", {
          headers: { "Content-Type": "text/html" },
        })
        : new Response("<!doctype html><title>next</title>", {
          headers: { "Content-Type": "text/html" },
        }),
  );
  const allowed = `http://localhost:${pages.addr.port}`;
  const apiBase = `http://127.0.0.1:${api.addr.port}`;
  const res = await app.request("/v1/keys", {
    method: "POST",
    headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      type: "publishable",
      // "gone" names no stream (a key may name one deleted, or not created yet).
      streams: ["pageviews", "limited", "gone"],
      origins: [allowed],
    }),
  });
  const { key } = await res.json();
  const secret = await app.request("/v1/keys", {
    method: "POST",
    headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
    body: JSON.stringify({ scopes: ["ingest"], streams: ["pageviews"], origins: [allowed] }),
  });
  const { key: secretKey } = await secret.json();
  return {
    api: apiBase,
    allowed,
    refused: `http://127.0.0.1:${pages.addr.port}`,
    key,
    secretKey,
    answers,
    async accepted(stream) {
      return (await store.stats(stream, streams.get(stream)!.counterMetas)).accepted;
    },
    setStoreDown(down) {
      store.down = down;
    },
    async close() {
      await pages.shutdown();
      await api.shutdown();
    },
  };
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 5_000) {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function open(browser: Browser, origin: string): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(`${origin}/`);
  return page;
}

browserTest(
  "a page on the key's origin sends with fetch (preflighted) and reads the answer; another origin's fetch reads its 403 origin_not_allowed and counts nothing",
  async (browser) => {
    const s = await setup();
    try {
      const url = `${s.api}/v1/streams/pageviews/events?key=${s.key}`;
      const script = `fetch(${JSON.stringify(url)}, {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": "page-1" },
      body: JSON.stringify([{ id: "f1" }, { id: "f2" }]),
    }).then(async (res) => ({ status: res.status, body: await res.json(), limit: res.headers.get("X-Request-Id") !== null }),
      (error) => ({ error: String(error) }))`;
      const allowed = await open(browser, s.allowed);
      const ok = await allowed.evaluate(script) as { status: number; body: { accepted: number } };
      assert.equal(ok.status, 202);
      assert.equal(ok.body.accepted, 2);
      const refused = await open(browser, s.refused);
      const read = await refused.evaluate(script) as {
        error?: string;
        status?: number;
        body?: { error: { code: string } };
        limit?: boolean;
      };
      // Before, the 403 carried no CORS header: "TypeError: Failed to fetch", as a network error.
      assert.equal(read.error, undefined);
      assert.equal(read.status, 403);
      assert.equal(read.body?.error.code, "origin_not_allowed");
      assert.equal(read.limit, true, "X-Request-Id is exposed");
      assert.equal(await s.accepted("pageviews"), 2);
      // The refused page's preflight was granted as any is (it carries no key); its POST was
      // refused 403, with CORS headers so that the page reads why.
      const fromRefused = s.answers.filter((answer) => answer.origin === s.refused);
      assert.deepEqual(fromRefused.map((answer) => [answer.method, answer.status]), [
        ["OPTIONS", 204],
        ["POST", 403],
      ]);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "a page sends a body compressed with CompressionStream (Content-Encoding: gzip) and its OpenTelemetry trace context: the preflight grants both",
  async (browser) => {
    const s = await setup();
    try {
      const url = `${s.api}/v1/streams/pageviews/events?key=${s.key}`;
      const script = `(async () => {
        const text = JSON.stringify([{ id: "z1" }, { id: "z2" }, { id: "z3" }]);
        const gzip = new Blob([text]).stream().pipeThrough(new CompressionStream("gzip"));
        const body = await new Response(gzip).arrayBuffer();
        try {
          const res = await fetch(${JSON.stringify(url)}, {
            method: "POST",
            headers: {
              "Content-Type": "application/json",
              "Content-Encoding": "gzip",
              traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
              tracestate: "shop=1",
              // OpenTelemetry's default propagators are trace context and baggage.
              baggage: "session.id=s1",
            },
            body,
          });
          return { status: res.status, body: await res.json() };
        } catch (error) {
          return { error: String(error) };
        }
      })()`;
      const page = await open(browser, s.allowed);
      const sent = await page.evaluate(script) as {
        status?: number;
        body?: { accepted: number };
        error?: string;
      };
      // Before, the preflight granted neither header: the fetch failed as a network error.
      assert.equal(sent.error, undefined);
      assert.equal(sent.status, 202);
      assert.equal(sent.body?.accepted, 3);
      assert.equal(await s.accepted("pageviews"), 3);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "a page's preflighted fetch to a stream that does not exist reads its 404, as the keyless preflight answered as for one that exists",
  async (browser) => {
    const s = await setup();
    try {
      const send = (stream: string) =>
        `fetch(${JSON.stringify(`${s.api}/v1/streams/${stream}/events?key=${s.key}`)}, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify([{ id: "g1" }]),
      }).then(async (res) => ({ status: res.status, body: await res.json() }),
        (error) => ({ error: String(error) }))`;
      const page = await open(browser, s.allowed);
      const gone = await page.evaluate(send("gone")) as {
        status?: number;
        body?: { error: { code: string } };
        error?: string;
      };
      assert.equal(gone.error, undefined);
      assert.equal(gone.status, 404);
      assert.equal(gone.body?.error.code, "stream_not_found");
      const sent = await page.evaluate(send("pageviews")) as { status?: number };
      assert.equal(sent.status, 202);
      assert.equal(await s.accepted("pageviews"), 1);
      assert.deepEqual(s.answers.map((answer) => [answer.method, answer.status]), [
        ["OPTIONS", 204],
        ["POST", 404],
        ["OPTIONS", 204],
        ["POST", 202],
      ]);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "a page's preflighted fetch to a stream name that is no name reads its 400 from any origin, its preflight granted as any is",
  async (browser) => {
    const s = await setup();
    try {
      const script = `fetch(${JSON.stringify(`${s.api}/v1/streams/a.b/events?key=${s.key}`)}, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify([{ id: "n1" }]),
      }).then(async (res) => ({ status: res.status, body: await res.json() }),
        (error) => ({ error: String(error) }))`;
      for (const origin of [s.allowed, s.refused]) {
        const page = await open(browser, origin);
        const answer = await page.evaluate(script) as {
          status?: number;
          body?: { error: { code: string } };
          error?: string;
        };
        assert.equal(answer.error, undefined, origin);
        assert.equal(answer.status, 400, origin);
        assert.equal(answer.body?.error.code, "invalid_request", origin);
        await page.close();
      }
      assert.deepEqual(s.answers.map((answer) => [answer.method, answer.status]), [
        ["OPTIONS", 204],
        ["POST", 400],
        ["OPTIONS", 204],
        ["POST", 400],
      ]);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "a page on the key's origin sends with sendBeacon (text/plain, key in the URL); another origin's beacon is refused 403 and counts nothing",
  async (browser) => {
    const s = await setup();
    try {
      const url = `${s.api}/v1/streams/pageviews/events?key=${s.key}`;
      const beacon = (id: string) =>
        `navigator.sendBeacon(${JSON.stringify(url)}, JSON.stringify([{ id: ${
          JSON.stringify(id)
        } }]))`;
      const refused = await open(browser, s.refused);
      assert.equal(await refused.evaluate(beacon("r1")), true);
      await until("the refused beacon", () => s.answers.some((a) => a.origin === s.refused));
      assert.deepEqual(
        s.answers.filter((a) => a.origin === s.refused).map((a) => [a.method, a.status]),
        [["POST", 403]],
      );
      const allowed = await open(browser, s.allowed);
      assert.equal(await allowed.evaluate(beacon("b1")), true);
      await until("the beacon counted", async () => (await s.accepted("pageviews")) === 1);
      assert.deepEqual(
        s.answers.filter((a) => a.origin === s.allowed).map((a) => [a.method, a.status]),
        [["POST", 202]],
      );
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "a page on the key's origin sends over WebSocket ingest with subprotocol bearer.<key> (a publishable and a secret key) and reads the ack; another origin's upgrade is refused 403 and counts nothing",
  async (browser) => {
    const s = await setup();
    try {
      const ws = `${s.api.replace("http:", "ws:")}/v1/streams/pageviews/ws`;
      /** What a page's WebSocket with `key` saw: the subprotocol and first message, or the close. */
      const frame = (key: string, id: string) =>
        `new Promise((resolve) => {
          const socket = new WebSocket(${JSON.stringify(ws)}, ["bearer." + ${JSON.stringify(key)}]);
          socket.onopen = () => socket.send(JSON.stringify({ seq: 7, events: [{ id: ${
          JSON.stringify(id)
        } }] }));
          socket.onmessage = (message) => {
            resolve({ protocol: socket.protocol, reply: JSON.parse(message.data) });
            socket.close();
          };
          socket.onclose = (event) => resolve({ closed: event.code });
        })`;
      const refused = await open(browser, s.refused);
      for (const key of [s.key, s.secretKey]) {
        // The browser reads no status of a refused upgrade: the socket closes with 1006.
        assert.deepEqual(await refused.evaluate(frame(key, "r1")), { closed: 1006 });
      }
      assert.deepEqual(
        s.answers.filter((a) => a.origin === s.refused).map((a) => [a.method, a.status]),
        [["GET", 403], ["GET", 403]],
      );
      assert.equal(await s.accepted("pageviews"), 0);
      const allowed = await open(browser, s.allowed);
      for (const [key, id] of [[s.key, "w1"], [s.secretKey, "w2"]]) {
        assert.deepEqual(await allowed.evaluate(frame(key, id)), {
          protocol: `bearer.${key}`,
          reply: {
            type: "ack",
            seq: 7,
            accepted: 1,
            duplicates: 0,
            late: 0,
            filtered: 0,
            rejected: [],
          },
        });
      }
      assert.deepEqual(
        s.answers.filter((a) => a.origin === s.allowed).map((a) => [a.method, a.status]),
        [["GET", 101], ["GET", 101]],
      );
      assert.equal(await s.accepted("pageviews"), 2);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js batches events with ids, retries a 429 after Retry-After, and sends what waits with a beacon on pagehide",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      await page.evaluate(`(async () => {
      const sdk = await import(${JSON.stringify(`${s.api}/sdk.js`)});
      globalThis.tracker = sdk.createTracker({
        key: ${JSON.stringify(s.key)},
        dedupeField: "id",
        maxBatch: 2,
        flushMs: 60000,
      });
    })()`);
      // Four events in batches of two against a burst of two: one batch gets
      // 429 and is sent again after Retry-After.
      const tracked = await page.evaluate(`(async () => {
      const items = [1, 2, 3, 4].map((n) => tracker.track("limited", { n }));
      // A full batch goes at once; settled() waits for its answers and retries.
      await tracker.settled();
      return items;
    })()`) as Array<{ id: string; n: number }>;
      assert.equal(new Set(tracked.map((item) => item.id)).size, 4);
      assert.equal(await s.accepted("limited"), 4);
      const posts = s.answers.filter((a) => a.method === "POST").map((a) => a.status);
      assert.deepEqual(posts.toSorted(), [202, 202, 429]);
      // Waiting events leave with the page.
      await page.evaluate(`tracker.track("pageviews", { path: "/" })`);
      await page.goto(`${s.allowed}/next`);
      await until("the pagehide beacon", async () => (await s.accepted("pageviews")) === 1);
    } finally {
      await s.close();
    }
  },
);

/**
 * What the SDK kept in `page`'s localStorage for the next page, an entry a batch
 * (`edgestream-page:…`), oldest first: events no try was sent of (`n` of each, a list an entry:
 * kept with a key of their own and no expiry), and batches waiting to be sent again with the
 * `Idempotency-Key` of their tries (and its expiry).
 */
async function keptIn(
  page: Page,
): Promise<{ events: number[][]; batches: Array<{ idempotencyKey: string; n: number[] }> }> {
  return await page.evaluate(`(() => {
    const order = (name) => name.slice(name.lastIndexOf("|") + 1).split("-").map(Number);
    const kept = Object.keys(localStorage)
      .filter((name) => name.startsWith("edgestream-page:"))
      .sort((a, b) => order(a)[0] - order(b)[0] || order(a)[1] - order(b)[1])
      .map((name) => JSON.parse(localStorage.getItem(name)));
    return {
      events: kept.filter((batch) => batch.expiresAt === undefined)
        .map((batch) => batch.events.map((event) => event.n)),
      batches: kept.filter((batch) => batch.expiresAt !== undefined).map((batch) => ({
        idempotencyKey: batch.idempotencyKey,
        n: batch.events.map((event) => event.n),
      })),
    };
  })()`);
}

/**
 * Waits until the tracker created in `page` has taken what earlier pages kept: its first
 * `restore()` runs under a Web Lock, granted later (later still on a loaded machine). Until then it
 * may take out of `localStorage`, and send again, what this page's `beacon()` keeps while the page
 * is visible, as a tab shown again does; a test that beacons from a visible page waits for it.
 */
async function untilRestored(page: Page) {
  await until(
    "the tracker's first restore()",
    async () =>
      await page.evaluate(`navigator.locks.query().then(({ held, pending }) =>
      held.length === 0 && pending.length === 0)`) as boolean,
    30_000,
  );
}

/**
 * Loads `/sdk.js` into `page` as `globalThis.tracker`, with `options` over the test's defaults.
 * What its `onRefused` hears goes to the page's `globalThis.refused`, its events counted.
 */
async function loadSdk(page: Page, s: Setup, options: Record<string, unknown> = {}) {
  await page.evaluate(`(async () => {
    const sdk = await import(${JSON.stringify(`${s.api}/sdk.js`)});
    globalThis.refused = [];
    globalThis.tracker = sdk.createTracker({
      ...${JSON.stringify({ key: s.key, dedupeField: "id", flushMs: 60_000, ...options })},
      onRefused: (report) => refused.push({ ...report, events: report.events.length }),
    });
  })()`);
  await untilRestored(page);
}

browserTest(
  "/sdk.js on a page whose origin its publishable key does not list warns once naming origin_not_allowed and drops the batch: no retry, nothing held, nothing kept in localStorage, nothing counted",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.refused);
      await loadSdk(page, s, { retryBaseMs: 50 });
      const flushed = await page.evaluate(`(async () => {
        globalThis.warnings = [];
        const warn = console.warn;
        console.warn = (...args) => { warnings.push(args.join(" ")); warn(...args); };
        tracker.track("pageviews", { n: 1 });
        tracker.track("pageviews", { n: 2 });
        return await Promise.race([
          tracker.flush().then(() => "flushed"),
          new Promise((resolve) => setTimeout(() => resolve("flush() did not resolve"), 3000)),
        ]);
      })()`);
      // Before, the 403 read as a network failure: retried (5 more POSTs) and then held.
      assert.equal(flushed, "flushed");
      await new Promise((resolve) => setTimeout(resolve, 500));
      const warnings = await page.evaluate(`warnings`) as string[];
      assert.equal(warnings.length, 1, warnings.join("\n"));
      assert.match(
        warnings[0],
        /^edgestream: pageviews refused 2 events: 403 origin_not_allowed: /,
      );
      // The page's code hears of it too, as README says: once, with the 403's code.
      const refused = await page.evaluate(`refused`) as Array<
        { stream: string; events: number; status: number; code: string | null }
      >;
      assert.deepEqual(
        refused.map(({ stream, events, status, code }) => ({ stream, events, status, code })),
        [{ stream: "pageviews", events: 2, status: 403, code: "origin_not_allowed" }],
      );
      assert.equal(await page.evaluate(`tracker.held`), 0);
      assert.equal(await page.evaluate(`tracker.dropped`), 0);
      const posts = s.answers.filter((a) => a.origin === s.refused && a.method === "POST");
      assert.deepEqual(posts.map((a) => a.status), [403]);
      // Leaving the page neither beacons nor keeps the batch for the next page of the origin.
      await page.goto(`${s.refused}/next`);
      assert.deepEqual(await keptIn(page), { events: [], batches: [] });
      assert.equal(s.answers.filter((a) => a.origin === s.refused).length, 2);
      assert.equal(await s.accepted("pageviews"), 0);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js tells the page's onRefused of a batch refused for a wrong key, a stream the key may not send to and one that does not exist, with status, code and message, after its warning",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      const heard = await page.evaluate(`(async () => {
        const sdk = await import(${JSON.stringify(`${s.api}/sdk.js`)});
        const heard = [];
        const warnings = [];
        const warn = console.warn;
        console.warn = (...args) => { warnings.push(args.join(" ")); warn(...args); };
        const onRefused = (report) =>
          heard.push({ ...report, events: report.events.length, warnedBefore: warnings.length });
        const options = { dedupeField: "id", flushMs: 60000, retryBaseMs: 50, onRefused };
        const wrong = sdk.createTracker({ ...options, key: "pk_madeUpMadeUpMadeUpMadeUp" });
        wrong.track("pageviews", { n: 1 });
        const flushed = await wrong.flush();
        const right = sdk.createTracker({ ...options, key: ${JSON.stringify(s.key)} });
        // "gone" is among the key's streams but does not exist; "other" is not among them.
        right.track("gone", { n: 1 });
        right.track("gone", { n: 2 });
        right.track("other", { n: 1 });
        await right.flush();
        await wrong.close();
        await right.close();
        return { heard, flushed, warnings: warnings.length };
      })()`) as {
        heard: Array<
          {
            stream: string;
            events: number;
            status: number;
            code: string | null;
            message: string | null;
            warnedBefore: number;
          }
        >;
        flushed: { held: number };
        warnings: number;
      };
      const detail = JSON.stringify(heard);
      // Before, only the console heard of it: flush() resolved as for a batch sent.
      assert.deepEqual(heard.flushed, { held: 0 });
      const byStream = (stream: string) => heard.heard.find((report) => report.stream === stream);
      assert.equal(heard.heard.length, 3, detail);
      const [wrongKey, gone, other] = [
        heard.heard[0],
        byStream("gone"),
        byStream("other"),
      ];
      assert.deepEqual(
        { stream: wrongKey.stream, events: wrongKey.events, status: wrongKey.status },
        { stream: "pageviews", events: 1, status: 401 },
        detail,
      );
      assert.equal(wrongKey.code, "unauthorized", detail);
      assert.ok(gone && other, detail);
      assert.deepEqual([gone.events, gone.status, gone.code], [2, 404, "stream_not_found"], detail);
      assert.deepEqual([other.events, other.status], [1, 403], detail);
      for (const report of heard.heard) {
        assert.equal(typeof report.message, "string", detail);
        assert.ok(report.message!.length > 0, detail);
      }
      // Each after its own console warning: the first with one warning before it, the next two,
      // then three (a report before its warning would count one fewer).
      assert.deepEqual(heard.heard.map((report) => report.warnedBefore), [1, 2, 3], detail);
      assert.equal(heard.warnings, 3, detail);
      assert.equal(await s.accepted("pageviews"), 0);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js keeps what does not fit a page's 64 KiB of beacons in localStorage, and the next page sends it",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      await loadSdk(page, s);
      // 99 events of about 1 KB: about 100 KB, more than one page's beacons may carry.
      await page.evaluate(`for (let n = 0; n < 99; n++) {
        tracker.track("pageviews", { n, pad: "x".repeat(900) });
      }`);
      await page.goto(`${s.allowed}/next`);
      await until("the beacons", () => s.answers.length >= 1);
      await new Promise((resolve) => setTimeout(resolve, 300));
      const sentByBeacons = await s.accepted("pageviews");
      assert.ok(sentByBeacons > 0 && sentByBeacons < 99, `${sentByBeacons} by beacons`);
      // The next page of the origin that loads the SDK sends the rest.
      await page.goto(`${s.allowed}/`);
      await loadSdk(page, s);
      await until("every event", async () => (await s.accepted("pageviews")) === 99);
      assert.equal(await page.evaluate(`Object.keys(localStorage).length`), 0);
    } finally {
      await s.close();
    }
  },
);

/**
 * Counts, in `page`, the timers set and not yet fired or cleared and the window listeners added
 * and not removed (`live()` in the page): installed before the SDK is loaded, so that its own are
 * counted.
 */
async function countTimersAndListeners(page: Page) {
  await page.evaluate(`(() => {
    const timers = new Set();
    const listeners = new Map();
    const set = globalThis.setTimeout;
    const clear = globalThis.clearTimeout;
    const add = globalThis.addEventListener;
    const remove = globalThis.removeEventListener;
    globalThis.setTimeout = (fn, ms, ...args) => {
      const id = set(() => {
        timers.delete(id);
        fn(...args);
      }, ms);
      timers.add(id);
      return id;
    };
    globalThis.clearTimeout = (id) => {
      timers.delete(id);
      clear(id);
    };
    globalThis.addEventListener = (type, listener, options) => {
      listeners.set(listener, type);
      add.call(globalThis, type, listener, options);
    };
    globalThis.removeEventListener = (type, listener, options) => {
      listeners.delete(listener);
      remove.call(globalThis, type, listener, options);
    };
    globalThis.live = () => ({ timers: timers.size, listeners: [...listeners.values()].sort() });
  })()`);
}

browserTest(
  "/sdk.js close() sends what waits, keeps what the store refused in localStorage with its key, and leaves no listener or timer: online, a visibility change and time send nothing more; the next tracker sends what it kept",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      await countTimersAndListeners(page);
      await loadSdk(page, s, { maxRetries: 0, heldRetryMs: 400 });
      const posts = () => s.answers.filter((a) => a.method === "POST");
      s.setStoreDown(true);
      // A batch held after its (one) try, with the resend timer set, and an event queued, with
      // the flush timer set.
      assert.deepEqual(
        await page.evaluate(`[1, 2].forEach((n) => tracker.track("pageviews", { n }));
          tracker.flush()`),
        { held: 2 },
      );
      await page.evaluate(`tracker.track("pageviews", { n: 3 }); undefined`);
      assert.deepEqual(await page.evaluate(`live()`), {
        timers: 2,
        listeners: ["online", "pagehide", "visibilitychange"],
      });
      const heldKey = posts()[0].idempotencyKey;
      // close() sends both, answered 503 again, and keeps them with their keys.
      assert.deepEqual(await page.evaluate(`tracker.close()`), { kept: 3 });
      assert.equal(posts().length, 3);
      // Sent together, answered in either order.
      const closeKeys = posts().slice(1).map((a) => a.idempotencyKey);
      assert.ok(closeKeys.includes(heldKey), `${closeKeys}`);
      const queuedKey = closeKeys.find((key) => key !== heldKey);
      const kept = await keptIn(page);
      assert.deepEqual(kept.events, []);
      assert.deepEqual(kept.batches.toSorted((a, b) => a.n[0] - b.n[0]), [
        { idempotencyKey: heldKey, n: [1, 2] },
        { idempotencyKey: queuedKey, n: [3] },
      ]);
      assert.deepEqual(await page.evaluate(`live()`), { timers: 0, listeners: [] });
      assert.match(
        await page.evaluate(`(() => {
          try {
            tracker.track("pageviews", { n: 4 });
            return "queued";
          } catch (error) {
            return error.message;
          }
        })()`),
        /on a closed tracker/,
      );
      // A live tracker sends what is held on "online", what was kept when the page is shown, and
      // what is held once heldRetryMs passed: the closed one sends nothing.
      s.setStoreDown(false);
      await page.evaluate(`dispatchEvent(new Event("online"));
        document.dispatchEvent(new Event("visibilitychange", { bubbles: true }))`);
      await new Promise((resolve) => setTimeout(resolve, 1_500));
      assert.equal(posts().length, 3);
      assert.equal(await s.accepted("pageviews"), 0);
      // The next tracker sends what the closed one kept, under its keys; closed with an event
      // queued, it sends it and keeps nothing.
      await loadSdk(page, s);
      await until("the kept batches", async () => (await s.accepted("pageviews")) === 3);
      assert.deepEqual(
        posts().slice(3).map((a) => a.idempotencyKey).toSorted(),
        [heldKey, queuedKey].toSorted(),
      );
      assert.deepEqual(
        await page.evaluate(`tracker.track("pageviews", { n: 5 }); tracker.close()`),
        { kept: 0 },
      );
      assert.equal(await s.accepted("pageviews"), 4);
      assert.deepEqual(await keptIn(page), { events: [], batches: [] });
      assert.deepEqual(await page.evaluate(`live()`), { timers: 0, listeners: [] });
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js remembers a stream's burst from a 413 too_many_events: later batches carry at most that many, and the page's beacon one burst a stream, keeping the rest for the next page",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      await loadSdk(page, s);
      const posts = () => s.answers.filter((a) => a.method === "POST").map((a) => a.status);
      // Three events against a burst of 2: 413 too_many_events teaches the tracker the burst.
      await page.evaluate(`[1, 2, 3].forEach((n) => tracker.track("limited", { n }));
        tracker.flush()`);
      assert.equal(await s.accepted("limited"), 3);
      assert.equal(posts()[0], 413);
      // Later batches go in parts of 2 at once: no 413 again.
      const before = posts().length;
      await page.evaluate(`[4, 5, 6].forEach((n) => tracker.track("limited", { n }));
        tracker.flush()`);
      assert.equal(await s.accepted("limited"), 6);
      assert.ok(!posts().slice(before).includes(413), `${posts()}`);
      // A bucket holds 2 events at most, and beacons go all at once: of three events waiting as
      // the page goes, one beacon carries 2 (before, all 3 went in one beacon, refused 413 and
      // lost), and the third is kept for the next page.
      await new Promise((resolve) => setTimeout(resolve, 2_100));
      await page.evaluate(`[7, 8, 9].forEach((n) => tracker.track("limited", { n }))`);
      await page.goto(`${s.allowed}/next`);
      await until("the pagehide beacon", async () => (await s.accepted("limited")) === 8);
      assert.deepEqual(await keptIn(page), { events: [[9]], batches: [] });
      await new Promise((resolve) => setTimeout(resolve, 1_100));
      await loadSdk(page, s);
      await until("the kept event", async () => (await s.accepted("limited")) === 9);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js sends batches whose keepalive bodies together pass 64 KiB one after another as room frees, none refused by the browser and none lost without retries",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      // No retry: a batch the browser refused (its keepalive requests in flight past 64 KiB, a
      // TypeError as for the network) was given up at once.
      await loadSdk(page, s, { maxRetries: 0 });
      // Six batches of 100 events of about 380 bytes: about 38 KB each, 230 KB in all.
      const failures = await page.evaluate(`(async () => {
        let failures = 0;
        const realFetch = globalThis.fetch;
        globalThis.fetch = (...args) => realFetch(...args).catch((error) => {
          failures += 1;
          throw error;
        });
        for (let n = 0; n < 600; n++) tracker.track("pageviews", { n, pad: "y".repeat(300) });
        await tracker.flush();
        return failures;
      })()`);
      assert.equal(await s.accepted("pageviews"), 600);
      assert.equal(failures, 0);
      assert.equal(s.answers.filter((a) => a.method === "POST").length, 6);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js keeps for the next page what a stream's rate limit refused until its Retry-After, rather than a beacon the bucket refuses again",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      await loadSdk(page, s, { maxBatch: 2 });
      // Two batches of two against a burst of two: the one that arrives second (the two are sent
      // together, and may arrive in either order) is answered 429, Retry-After 1.
      await page.evaluate(
        `[1, 2, 3, 4].forEach((n) => tracker.track("limited", { n })); undefined`,
      );
      await until("the 429", () => s.answers.some((a) => a.status === 429));
      // The page goes while the batch waits: before, its beacon was refused 429 and lost.
      await page.goto(`${s.allowed}/next`);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await s.accepted("limited"), 2);
      // Kept with the key it was sent under, and sent again under it: the batch kept is the one
      // refused (its events are that request's body), not the one accepted.
      const limited = s.answers.find((a) => a.status === 429)!;
      const limitedKey = limited.idempotencyKey!;
      const limitedEvents = (JSON.parse(limited.body) as Array<{ n: number }>).map((e) => e.n);
      assert.ok(
        JSON.stringify(limitedEvents) === "[1,2]" || JSON.stringify(limitedEvents) === "[3,4]",
        limited.body,
      );
      const kept = await keptIn(page);
      assert.deepEqual(kept, {
        events: [],
        batches: [{ idempotencyKey: limitedKey, n: limitedEvents }],
      });
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      await loadSdk(page, s);
      await until("the kept events", async () => (await s.accepted("limited")) === 4);
      assert.ok(
        s.answers.some((a) => a.status === 202 && a.idempotencyKey === limitedKey),
        JSON.stringify(s.answers),
      );
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js sends a batch waiting to be sent again (the network failed) with the page's beacon",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      await loadSdk(page, s, { retryBaseMs: 60_000 });
      // The network fails for the first send; the batch then waits a minute to be sent again.
      let aborted = 0;
      let firstKey: string | undefined;
      await page.route(`${s.api}/v1/streams/**`, (route) => {
        aborted += 1;
        firstKey = route.request().headers()["idempotency-key"];
        return route.abort();
      });
      await page.evaluate(`[1, 2, 3, 4].forEach((n) => tracker.track("pageviews", { n }));
        tracker.flush();
        undefined;`);
      await until("the failed send", () => aborted === 1);
      await page.unroute(`${s.api}/v1/streams/**`);
      await page.goto(`${s.allowed}/next`);
      await until("the batch by beacon", async () => (await s.accepted("pageviews")) === 4);
      // With its key in the URL (a beacon cannot set headers): had the failed send been
      // applied, the beacon would have been its replay.
      assert.ok(firstKey);
      assert.deepEqual(s.answers.filter((a) => a.method === "POST").map((a) => a.queryKey), [
        firstKey,
      ]);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js holds a batch whose retries a store outage outlasts (503, Retry-After: 1), and sends it with its key at the next flush once the store is back: nothing lost",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      // Three tries: about 2 s of Retry-After, as the default's 6 tries take 6 s of a Redis
      // restart that takes longer.
      await loadSdk(page, s, { maxRetries: 2 });
      s.setStoreDown(true);
      const flushed = await page.evaluate(
        `[1, 2, 3].forEach((n) => tracker.track("pageviews", { n }));
        tracker.flush()`,
      );
      const posts = () => s.answers.filter((a) => a.method === "POST");
      assert.deepEqual(posts().map((a) => a.status), [503, 503, 503]);
      // Before, the batch was given up here, and its events lost.
      assert.deepEqual(flushed, { held: 3 });
      assert.equal(await page.evaluate(`tracker.held`), 3);
      s.setStoreDown(false);
      // The next flush (a later event's) sends it again, with the key of its tries.
      assert.deepEqual(
        await page.evaluate(`tracker.track("pageviews", { n: 4 }); tracker.flush()`),
        { held: 0 },
      );
      assert.equal(await s.accepted("pageviews"), 4);
      const firstKey = posts()[0].idempotencyKey;
      assert.ok(firstKey);
      assert.equal(posts().filter((a) => a.idempotencyKey === firstKey).length, 4);
      assert.deepEqual(posts().slice(3).map((a) => a.status), [202, 202]);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js sends a batch held after a store outage outlasted its retries by itself, with its key, once heldRetryMs passed, with no later event or flush: nothing lost",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      await loadSdk(page, s, { maxRetries: 1, heldRetryMs: 1_000 });
      s.setStoreDown(true);
      const flushed = await page.evaluate(
        `[1, 2, 3].forEach((n) => tracker.track("pageviews", { n }));
        tracker.flush()`,
      );
      assert.deepEqual(flushed, { held: 3 });
      const posts = () => s.answers.filter((a) => a.method === "POST");
      // Still down: the timer sends it again (with as many retries), and holds it again.
      await until("a resend by the timer", () => posts().length >= 3);
      assert.equal(await s.accepted("pageviews"), 0);
      s.setStoreDown(false);
      // Before, it waited for a later event's flush, or the page's beacon, however long.
      await until("the held batch", async () => (await s.accepted("pageviews")) === 3);
      assert.equal(await page.evaluate(`tracker.held`), 0);
      assert.equal(new Set(posts().map((a) => a.idempotencyKey)).size, 1);
      assert.equal(posts().filter((a) => a.status === 202).length, 1);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js leaving a page while the store is down (503) keeps what waits in localStorage instead of beacons refused 503 and lost, and the next page sends it once the store is back",
  async (browser) => {
    const s = await setup();
    try {
      const page = await open(browser, s.allowed);
      await loadSdk(page, s, { maxRetries: 1 });
      s.setStoreDown(true);
      // One batch held after its tries; the next flush sends it again with another, and both wait
      // out their 503 when the page goes.
      await page.evaluate(`[1, 2].forEach((n) => tracker.track("pageviews", { n }));
        tracker.flush()`);
      await page.evaluate(`tracker.track("pageviews", { n: 3 }); tracker.flush(); undefined`);
      // Counted by POST: a preflight (when Chromium sends one) is an answer too. A busy machine
      // may let a try after Retry-After go out before the page does: at least those 4, all 503.
      const posts = () => s.answers.filter((a) => a.method === "POST");
      await until("the next flush's 503s", () => posts().length >= 4);
      await page.goto(`${s.allowed}/next`);
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Before, both went by beacon, were refused 503 unheard, and were lost.
      assert.ok(posts().length >= 4, `${posts().length} POSTs`);
      assert.deepEqual(posts().filter((a) => a.status !== 503), []);
      // No beacon: a waiting batch's names its key in the URL.
      assert.deepEqual(posts().filter((a) => a.queryKey !== null), []);
      // Each batch is kept with the key its 503s were answered to (a 503 with outcome unknown
      // may have applied it): before, as new events without it.
      const kept = await keptIn(page);
      assert.deepEqual(kept.events, []);
      assert.deepEqual(kept.batches.map((batch) => batch.n).sort(), [[1, 2], [3]]);
      const outageKeys = new Set(posts().map((a) => a.idempotencyKey));
      assert.equal(outageKeys.size, 2);
      assert.deepEqual(
        new Set(kept.batches.map((batch) => batch.idempotencyKey)),
        outageKeys,
      );
      s.setStoreDown(false);
      await loadSdk(page, s);
      await until("the kept events", async () => (await s.accepted("pageviews")) === 3);
      assert.equal(await page.evaluate(`Object.keys(localStorage).length`), 0);
      // Sent again under their keys.
      assert.deepEqual(
        new Set(posts().filter((a) => a.status === 202).map((a) => a.idempotencyKey)),
        outageKeys,
      );
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js holds a batch while the browser is offline, however long, without spending its retries, and sends it once back online",
  async (browser) => {
    const s = await setup();
    try {
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${s.allowed}/`);
      // Two retries 10 ms apart: spent within a second of being offline, were offline tries counted.
      await loadSdk(page, s, { retryBaseMs: 10, maxRetries: 2 });
      await context.setOffline(true);
      await page.evaluate(`[1, 2, 3].forEach((n) => tracker.track("pageviews", { n }));
        tracker.flush();
        undefined;`);
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assert.equal(await s.accepted("pageviews"), 0);
      await context.setOffline(false);
      await until("the batch once online", async () => (await s.accepted("pageviews")) === 3);
      await context.close();
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js while offline: flush() resolves with what it holds, at most maxHeld events are held (the oldest batches dropped and counted), and the rest count once back online",
  async (browser) => {
    const s = await setup();
    try {
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${s.allowed}/`);
      await loadSdk(page, s, { maxBatch: 50, maxHeld: 100 });
      await context.setOffline(true);
      // Before, flush() waited for the browser to be online again: this evaluate never ended.
      const flushed = await page.evaluate(`(async () => {
        globalThis.warnings = [];
        const warn = console.warn;
        console.warn = (text) => { warnings.push(text); warn(text); };
        for (let n = 0; n < 250; n++) tracker.track("pageviews", { n });
        return await Promise.race([
          tracker.flush(),
          new Promise((resolve) => setTimeout(() => resolve("flush() did not resolve"), 3000)),
        ]);
      })()`);
      assert.deepEqual(flushed, { held: 100 });
      const counts = await page.evaluate(
        `({ held: tracker.held, dropped: tracker.dropped, warnings: warnings.length })`,
      );
      assert.deepEqual(counts, { held: 100, dropped: 150, warnings: 3 });
      assert.equal(await s.accepted("pageviews"), 0);
      await context.setOffline(false);
      await until(
        "the held batches once online",
        async () => (await s.accepted("pageviews")) === 100,
      );
      // The newest 100 (n 150…249) went, each once.
      await page.evaluate(`tracker.settled()`);
      assert.equal(await page.evaluate(`tracker.held`), 0);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await s.accepted("pageviews"), 100);
      await context.close();
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js leaving a page while offline keeps what it holds in localStorage instead of beacons that cannot go, and the next page sends it once online",
  async (browser) => {
    const s = await setup();
    try {
      const context = await browser.newContext();
      const page = await context.newPage();
      await page.goto(`${s.allowed}/`);
      await loadSdk(page, s);
      await context.setOffline(true);
      await page.evaluate(`(async () => {
        [1, 2, 3].forEach((n) => tracker.track("pageviews", { n }));
        await tracker.flush();
        tracker.track("pageviews", { n: 4 });
        tracker.beacon(); // what pagehide runs
      })()`);
      // The batch whose send failed offline (it may have reached the server) is kept with its
      // key, the event queued since without one.
      const kept = await keptIn(page);
      assert.deepEqual(kept.events, [[4]]);
      assert.deepEqual(kept.batches.map((batch) => batch.n), [[1, 2, 3]]);
      assert.equal(await page.evaluate(`tracker.held`), 0);
      await context.setOffline(false);
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Nothing went by beacon: all four were kept.
      assert.equal(s.answers.filter((answer) => answer.method === "POST").length, 0);
      // The next page of the origin (here the same one, loaded again) sends them.
      await page.goto(`${s.allowed}/next`);
      await loadSdk(page, s);
      await until("the kept events", async () => (await s.accepted("pageviews")) === 4);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await s.accepted("pageviews"), 4);
      assert.ok(
        s.answers.some((a) => a.idempotencyKey === kept.batches[0].idempotencyKey),
        JSON.stringify(s.answers),
      );
      await context.close();
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "a refused origin's preflighted fetches (granted since any origin's preflight is) spend no rate limit and no idempotency key, and read only their 403 origin_not_allowed",
  async (browser) => {
    const s = await setup();
    try {
      const url = `${s.api}/v1/streams/limited/events?key=${s.key}`;
      const send = (id: string) =>
        `fetch(${JSON.stringify(url)}, {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": "k1", "X-Request-Id": "r1" },
        body: JSON.stringify([{ id: ${JSON.stringify(id)} }]),
      }).then(async (res) => ({ status: res.status, body: await res.text() }),
        (error) => ({ error: String(error) }))`;
      const refused = await open(browser, s.refused);
      for (let i = 0; i < 5; i++) {
        const read = await refused.evaluate(send(`evil${i}`)) as { status?: number; body?: string };
        assert.equal(read.status, 403);
        assert.equal(JSON.parse(read.body ?? "{}").error?.code, "origin_not_allowed");
      }
      const posts = s.answers.filter((a) => a.origin === s.refused && a.method === "POST");
      assert.deepEqual(posts.map((a) => a.status), [403, 403, 403, 403, 403]);
      const allowed = await open(browser, s.allowed);
      const first = await allowed.evaluate(send("good1")) as { status: number; body: string };
      assert.equal(first.status, 202, first.body);
      assert.equal(await s.accepted("limited"), 1);
    } finally {
      await s.close();
    }
  },
);

/** A server of the shop's page, every path the same: `page` its origin. */
function shopPages() {
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () =>
      new Response("<!doctype html><title>shop</title>", {
        headers: { "Content-Type": "text/html" },
      }),
  );
  return {
    page: `http://localhost:${server.addr.port}`,
    shutdown: () => server.shutdown(),
  };
}

/**
 * An app on a memory store with the admin key: `accepted()` counts its `pageviews`, and
 * `publishableKey(origin)` makes a publishable key for them on that origin.
 */
async function adminApp() {
  const streams = compileConfig(CONFIG);
  const store = new MemoryStore();
  const app = createApp({ streams, store, keys: await KeyRing.parse(`admin:${KEYS.admin}`) });
  return {
    app,
    async accepted() {
      return (await store.stats("pageviews", streams.get("pageviews")!.counterMetas)).accepted;
    },
    async publishableKey(origin: string): Promise<string> {
      const created = await app.request("/v1/keys", {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
        body: JSON.stringify({ type: "publishable", streams: ["pageviews"], origins: [origin] }),
      });
      assert.equal(created.status, 201);
      return (await created.json()).key;
    },
  };
}

browserTest(
  "a page on a publishable key's origin reads the 503 and its Retry-After when Redis is down and the key is not cached, and a made-up key's 401",
  async (browser) => {
    const fixture = await withRedis();
    if (fixture === null) return;
    const keyRing = async () =>
      await KeyRing.parse(`admin:${KEYS.admin}`, {
        store: new RedisKeyStore(
          new Redis({
            url: fixture.restUrl,
            token: fixture.restToken,
            enableTelemetry: false,
            retry: { retries: 1, backoff: () => 50 },
          }),
        ),
      });
    const streams = compileConfig(CONFIG);
    const pages = shopPages();
    // The key is created through one instance and used through another, which never saw it.
    const creator = createApp({ streams, store: new MemoryStore(), keys: await keyRing() });
    const app = createApp({ streams, store: new MemoryStore(), keys: await keyRing() });
    const api = Deno.serve(
      { port: 0, hostname: "127.0.0.1", onListen() {} },
      (request) => app.fetch(request),
    );
    try {
      const page = pages.page;
      const created = await creator.request("/v1/keys", {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
        body: JSON.stringify({ type: "publishable", streams: ["pageviews"], origins: [page] }),
      });
      assert.equal(created.status, 201);
      const { key } = await created.json();
      const send = (withKey: string) =>
        `fetch(${JSON.stringify(`http://127.0.0.1:${api.addr.port}/v1/streams/pageviews/events`)}, {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer ${withKey}" },
        body: JSON.stringify([{ id: "r1" }]),
      }).then(async (res) => ({ status: res.status, retryAfter: res.headers.get("Retry-After"),
        body: await res.json() }), (error) => ({ error: String(error) }))`;
      const tab = await open(browser, page);
      // Its origin is only the key's: the 401 of a key that is none is answered before any origin
      // is judged, and a page must read it.
      const unknown = await tab.evaluate(send("pk_0000000000000000madeup")) as {
        status?: number;
        body?: { error: { code: string } };
        error?: string;
      };
      assert.equal(unknown.error, undefined);
      assert.equal(unknown.status, 401);
      assert.equal(unknown.body?.error.code, "unauthorized");
      await fixture.stop();
      const down = await tab.evaluate(send(key)) as {
        status?: number;
        retryAfter?: string | null;
        body?: { error: { code: string; details?: { outcome?: string } } };
        error?: string;
      };
      assert.equal(down.error, undefined, "the page saw a network error, not the 503");
      assert.equal(down.status, 503);
      assert.equal(down.retryAfter, "1");
      assert.equal(down.body?.error.code, "store_unavailable");
      assert.equal(down.body?.error.details?.outcome, "not_applied");
    } finally {
      await api.shutdown();
      await pages.shutdown();
      await fixture.stop();
    }
  },
);

browserTest(
  "/sdk.js in open mode: what waits leaves with the page's beacon, read as JSON though no key is publishable there",
  async (browser) => {
    const streams = compileConfig(CONFIG);
    const store = new MemoryStore();
    const pages = shopPages();
    const page = pages.page;
    const app = createApp({
      streams,
      store,
      keys: await KeyRing.parse(""),
      origins: { allowedOrigins: [page] },
    });
    const statuses: number[] = [];
    const api = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
      const response = await app.fetch(request);
      if (request.method === "POST") statuses.push(response.status);
      return response;
    });
    try {
      const tab = await open(browser, page);
      await tab.evaluate(`(async () => {
        const sdk = await import(${JSON.stringify(`http://127.0.0.1:${api.addr.port}/sdk.js`)});
        sdk.createTracker({ key: "dev", dedupeField: "id", flushMs: 60000 })
          .track("pageviews", { path: "/" });
      })()`);
      await tab.goto(`${page}/next`);
      // Before, the beacon's text/plain body was 415 in open mode, and the event lost.
      await until(
        "the pagehide beacon",
        async () =>
          (await store.stats("pageviews", streams.get("pageviews")!.counterMetas)).accepted === 1,
      );
      assert.deepEqual(statuses, [202]);
    } finally {
      await api.shutdown();
      await pages.shutdown();
    }
  },
);

browserTest(
  "/sdk.js keeps a batch too large for keepalive that is in flight when the page goes with its key: the next page sends it under it, counted once though the server applied it",
  async (browser) => {
    const { app, accepted, publishableKey } = await adminApp();
    const pages = shopPages();
    const page = pages.page;
    /** Idempotency-Keys of the ingest POSTs (a beacon's: its `?idempotencyKey=`, or null). */
    const sent: Array<string | null> = [];
    /** The first ingest POST: applied only once its page went, which never reads the answer. */
    let first = true;
    let lost: string | null = null;
    /** Lets the first POST be applied: called once its page went. */
    let release = () => {};
    const released = new Promise<void>((resolve) => release = resolve);
    const api = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
      if (request.method !== "POST") return await app.fetch(request);
      const url = new URL(request.url);
      const key = request.headers.get("Idempotency-Key") ?? url.searchParams.get("idempotencyKey");
      sent.push(key);
      if (!first) return await app.fetch(request);
      first = false;
      lost = key;
      // The body came, but the answer did not before the page went (a slow store, say): the
      // browser cancels the request, and the server applies the batch all the same.
      const body = await request.text();
      await released;
      const late = await app.fetch(
        new Request(request.url, { method: "POST", headers: request.headers, body }),
      );
      return late;
    });
    try {
      const key = await publishableKey(page);
      // No dedupeField: only the batch's Idempotency-Key keeps it from counting twice.
      const load = `(async () => {
        const sdk = await import(${JSON.stringify(`http://127.0.0.1:${api.addr.port}/sdk.js`)});
        globalThis.tracker = sdk.createTracker(${JSON.stringify({ key, flushMs: 60_000 })});
      })()`;
      const tab = await open(browser, page);
      await tab.evaluate(load);
      // 100 events of about 1 KB: a batch of about 100 KB, sent without keepalive (browsers
      // refuse a keepalive body of 64 KiB), so the browser cancels it when the page goes.
      await tab.evaluate(`for (let n = 0; n < 100; n++) {
        tracker.track("pageviews", { n, pad: "x".repeat(900) });
      }`);
      await until("the batch in flight", () => lost !== null);
      await tab.goto(`${page}/next`);
      release();
      await until("the batch applied", async () => (await accepted()) >= 100);
      await tab.goto(`${page}/`);
      await tab.evaluate(load);
      await until("the batch sent again", () => sent.length >= 2);
      await tab.evaluate(`tracker.settled()`);
      // Before, the cancelled batch went by the page's beacons in part and was kept in part, as
      // new events: 150 counted, or more.
      assert.equal(await accepted(), 100);
      assert.deepEqual(sent, [lost, lost]);
      assert.equal(await tab.evaluate(`Object.keys(localStorage).length`), 0);
    } finally {
      release();
      await api.shutdown();
      await pages.shutdown();
    }
  },
);

browserTest(
  "/sdk.js takes a batch kept while in flight without keepalive out of localStorage once it is answered while the page stays",
  async (browser) => {
    const { app, accepted, publishableKey } = await adminApp();
    const pages = shopPages();
    const page = pages.page;
    let posts = 0;
    /** Lets the POST be answered: called once the page was hidden. */
    let release = () => {};
    const released = new Promise<void>((resolve) => release = resolve);
    const api = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
      if (request.method !== "POST") return await app.fetch(request);
      posts++;
      const body = await request.text();
      await released;
      return await app.fetch(
        new Request(request.url, { method: "POST", headers: request.headers, body }),
      );
    });
    try {
      const key = await publishableKey(page);
      const tab = await open(browser, page);
      await tab.evaluate(`(async () => {
        const sdk = await import(${JSON.stringify(`http://127.0.0.1:${api.addr.port}/sdk.js`)});
        globalThis.tracker = sdk.createTracker(${JSON.stringify({ key, flushMs: 60_000 })});
        for (let n = 0; n < 100; n++) tracker.track("pageviews", { n, pad: "x".repeat(900) });
      })()`);
      await until("the batch in flight", () => posts === 1);
      await untilRestored(tab);
      // Hidden (what the page's visibilitychange does): the batch in flight is kept with its key.
      await tab.evaluate(`tracker.beacon()`);
      assert.equal(
        await tab.evaluate(
          `Object.keys(localStorage).filter((name) => name.startsWith("edgestream-page:")).length`,
        ),
        1,
      );
      release();
      await tab.evaluate(`tracker.settled()`);
      // Answered: the next page has nothing of it to send again.
      assert.equal(await tab.evaluate(`Object.keys(localStorage).length`), 0);
      assert.equal(posts, 1);
      assert.equal(await accepted(), 100);
    } finally {
      release();
      await api.shutdown();
      await pages.shutdown();
    }
  },
);

/**
 * A proxy in front of edgestream while it restarts, as nginx is: its own `502` error page, without
 * CORS headers, which a page's `fetch` fails as if the network had. `mode` says what it refuses:
 * everything (`"all"`), or only the SDK's fetches (their preflight: `"fetches"`), letting its
 * beacons through; `"up"` passes everything on.
 */
async function behindRestartingProxy(idempotencyTtlMs?: number) {
  const { app, accepted, publishableKey } = await adminApp();
  const pages = shopPages();
  const page = pages.page;
  const state = { mode: "up" as "all" | "fetches" | "up", preflights: 0 };
  /** The ingest requests that reached the proxy: `fetch` (its key in the header) or `beacon`. */
  const posts: Array<{ via: "fetch" | "beacon"; key: string | null; status: number }> = [];
  const proxy = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
    const ingest = request.url.includes("/events");
    const preflight = request.method === "OPTIONS";
    if (ingest && (state.mode === "all" || (state.mode === "fetches" && preflight))) {
      if (preflight) state.preflights++;
      if (request.method === "POST") {
        const url = new URL(request.url);
        const header = request.headers.get("Idempotency-Key");
        posts.push({
          via: header ? "fetch" : "beacon",
          key: header ?? url.searchParams.get("idempotencyKey"),
          status: 502,
        });
      }
      await request.body?.cancel();
      return new Response("<html><body><h1>502 Bad Gateway</h1></body></html>", {
        status: 502,
        headers: { "Content-Type": "text/html" },
      });
    }
    const response = await app.fetch(request);
    if (ingest && request.method === "POST") {
      const header = request.headers.get("Idempotency-Key");
      posts.push({
        via: header ? "fetch" : "beacon",
        key: header ?? new URL(request.url).searchParams.get("idempotencyKey"),
        status: response.status,
      });
    }
    return response;
  });
  const key = await publishableKey(page);
  // No dedupeField: only the batch's Idempotency-Key keeps it from counting twice. A first retry
  // a minute away: the batch waits, after its failed try, when the page goes.
  // The page's fetches that failed (`failedFetches`), for a test to wait on the SDK's failed try.
  const load = `(async () => {
    if (globalThis.failedFetches === undefined) {
      globalThis.failedFetches = 0;
      const pageFetch = globalThis.fetch;
      globalThis.fetch = (...args) =>
        pageFetch(...args).catch((error) => {
          globalThis.failedFetches++;
          throw error;
        });
    }
    const sdk = await import(${JSON.stringify(`http://127.0.0.1:${proxy.addr.port}/sdk.js`)});
    globalThis.tracker = sdk.createTracker(${
    JSON.stringify({ key, flushMs: 60_000, retryBaseMs: 60_000, idempotencyTtlMs })
  });
  })()`;
  return {
    page,
    state,
    posts,
    load,
    accepted,
    async close() {
      await proxy.shutdown();
      await pages.shutdown();
    },
  };
}

browserTest(
  "/sdk.js keeps a batch whose fetch a proxy's 502 without CORS headers failed as well as sending it by beacon when the page goes: the next page sends it under its key once the server is back",
  async (browser) => {
    const s = await behindRestartingProxy();
    try {
      const tab = await open(browser, s.page);
      await tab.evaluate(s.load);
      s.state.mode = "all";
      await tab.evaluate(`tracker.track("pageviews", { path: "/" }); void tracker.flush();`);
      await until("the preflight refused", () => s.state.preflights === 1);
      // Its fetch fails as the network's would: the batch waits a minute for its retry.
      await until("the fetch failed", async () => await tab.evaluate(`failedFetches`) === 1);
      await tab.goto(`${s.page}/next`);
      await until("the pagehide beacon refused", () => s.posts.some((p) => p.via === "beacon"));
      assert.equal(await s.accepted(), 0);
      s.state.mode = "up";
      await tab.goto(`${s.page}/`);
      await tab.evaluate(s.load);
      // Before, the beacon was all that carried it: refused 502, and the event lost.
      await until("the batch sent again", async () => (await s.accepted()) === 1);
      await tab.evaluate(`tracker.settled()`);
      const [beacon, resend] = s.posts;
      assert.deepEqual(s.posts.map((p) => [p.via, p.status]), [["beacon", 502], ["fetch", 202]]);
      assert.equal(resend.key, beacon.key);
      assert.equal(await tab.evaluate(`Object.keys(localStorage).length`), 0);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js counts once a batch kept and sent by beacon after a proxy's 502 failed its fetch, when the beacon got through: the next page's resend is its replay, and past idempotencyTtlMs it is dropped",
  async (browser) => {
    // 4,000 ms: kept 2 s from the first try, long enough for the beacon, not for the next page.
    for (const ttl of [undefined, 4_000]) {
      const s = await behindRestartingProxy(ttl);
      try {
        const tab = await open(browser, s.page);
        await tab.evaluate(s.load);
        // The proxy refuses the SDK's preflighted fetches, but lets its beacons through.
        s.state.mode = "fetches";
        await tab.evaluate(`tracker.track("pageviews", { path: "/" }); void tracker.flush();`);
        await until("the preflight refused", () => s.state.preflights === 1);
        // Its fetch fails as the network's would: the batch waits a minute for its retry.
        await until("the fetch failed", async () => await tab.evaluate(`failedFetches`) === 1);
        await tab.goto(`${s.page}/next`);
        await until("the pagehide beacon applied", async () => (await s.accepted()) === 1);
        if (ttl !== undefined) await new Promise((resolve) => setTimeout(resolve, 2_100));
        s.state.mode = "up";
        await tab.goto(`${s.page}/`);
        const warnings: string[] = [];
        tab.on("console", (message) => {
          if (message.type() === "warning") warnings.push(message.text());
        });
        await tab.evaluate(s.load);
        await tab.evaluate(`tracker.settled()`);
        const beacon = s.posts[0];
        if (ttl === undefined) {
          await until("the batch sent again", () => s.posts.length === 2);
          assert.equal(s.posts[1].via, "fetch");
          assert.equal(s.posts[1].key, beacon.key);
          assert.equal(s.posts[1].status, 202);
          assert.deepEqual(warnings, []);
        } else {
          // Kept past the key's time on the server: not sent again, with a warning (once the
          // tracker took what was kept, under its Web Lock).
          await until("the warning", () => warnings.length > 0);
          assert.equal(s.posts.length, 1);
          assert.match(
            warnings.join("\n"),
            /dropped 1 events to pageviews first sent too long ago to send again under their key: within \d+ ms of the stream's idempotencyTtl/,
          );
          const readme = (await Deno.readTextFile(new URL("../../README.md", import.meta.url)))
            .replace(/\s+/g, " ");
          assert.ok(
            readme.includes(
              "goes by beacon with its key and is kept with it too: the next page sends it under that key, counted if the beacon was lost, the beacon's reply replayed if it was not, so counted once while the server keeps the key",
            ),
          );
          assert.ok(
            readme.includes(
              "(`edgestream: dropped 1 events to pageviews first sent too long ago to send again under their key: within 60000 ms of the stream's idempotencyTtl …`)",
            ),
          );
        }
        assert.deepEqual([beacon.via, beacon.status], ["beacon", 202]);
        assert.equal(await s.accepted(), 1);
        assert.equal(await tab.evaluate(`Object.keys(localStorage).length`), 0);
      } finally {
        await s.close();
      }
    }
  },
);

browserTest(
  "/sdk.js sends a batch kept after a proxy's 502 failed its fetch only until idempotencyTtlMs from its first try: pages that fail to send it again keep that time, not a fresh one, and a later page drops it",
  async (browser) => {
    // 10 s: sent under its key for 5 s from the first try.
    const s = await behindRestartingProxy(10_000);
    try {
      const tab = await open(browser, s.page);
      await tab.evaluate(s.load);
      s.state.mode = "fetches";
      const firstTry = Date.now();
      await tab.evaluate(`tracker.track("pageviews", { path: "/" }); void tracker.flush();`);
      await until("the preflight refused", () => s.state.preflights === 1);
      // Its fetch fails as the network's would: the batch waits a minute for its retry.
      await until("the fetch failed", async () => await tab.evaluate(`failedFetches`) === 1);
      await tab.goto(`${s.page}/next`);
      await until("the pagehide beacon applied", async () => (await s.accepted()) === 1);
      // The next page's resend fails so too, and it goes 2 s later: beaconed (a replay) and kept
      // again, with the first try's time (before, a fresh one each page: kept without end).
      await tab.goto(`${s.page}/`);
      await tab.evaluate(s.load);
      await until("the resend's preflight refused", () => s.state.preflights === 2);
      await new Promise((resolve) => setTimeout(resolve, 2_000));
      await tab.goto(`${s.page}/next`);
      await until("the second beacon", () => s.posts.length === 2);
      await new Promise((resolve) => setTimeout(resolve, firstTry + 5_300 - Date.now()));
      s.state.mode = "up";
      await tab.goto(`${s.page}/`);
      const warnings: string[] = [];
      tab.on("console", (message) => {
        if (message.type() === "warning") warnings.push(message.text());
      });
      await tab.evaluate(s.load);
      await tab.evaluate(`tracker.settled()`);
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.deepEqual(s.posts.map((p) => [p.via, p.status]), [["beacon", 202], ["beacon", 202]]);
      assert.equal(s.posts[1].key, s.posts[0].key);
      assert.match(warnings.join("\n"), /dropped 1 events to pageviews first sent too long ago/);
      assert.equal(await s.accepted(), 1);
      assert.equal(await tab.evaluate(`Object.keys(localStorage).length`), 0);
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js in two tabs of one origin that load at once (a browser restoring its session) sends the events a page kept without a key once: one tab takes them under a Web Lock, the other finds them gone",
  async (browser) => {
    const s = await setup();
    try {
      const context = await browser.newContext();
      const [first, second] = [await context.newPage(), await context.newPage()];
      await Promise.all([first.goto(`${s.allowed}/`), second.goto(`${s.allowed}/`)]);
      // Events a page left without a key (what no beacon took), and no ids: only the one tab that
      // takes them keeps them from counting twice.
      const name = `edgestream:${s.api}|${s.key}|pageviews`;
      await first.evaluate(
        `localStorage.setItem(${JSON.stringify(name)}, '[{"n":1},{"n":2},{"n":3}]')`,
      );
      const sdk = JSON.stringify(`${s.api}/sdk.js`);
      const options = JSON.stringify({ key: s.key, flushMs: 60_000 });
      for (const tab of [first, second]) {
        await until(
          "each tab to see what was kept",
          async () => await tab.evaluate(`localStorage.getItem(${JSON.stringify(name)}) !== null`),
        );
        await tab.evaluate(`import(${sdk}).then((sdk) => { globalThis.sdk = sdk; })`);
      }
      // The second tab's script runs while the first takes what was kept: busy, it has read
      // localStorage before the first took it out and has not yet heard that it did.
      await second.evaluate(`setTimeout(() => {
        const end = performance.now() + 1_500;
        while (performance.now() < end);
        globalThis.tracker = sdk.createTracker(${options});
      }, 0); undefined`);
      await first.evaluate(`globalThis.tracker = sdk.createTracker(${options}); undefined`);
      await until("the kept events", async () => (await s.accepted("pageviews")) >= 3);
      await until("both trackers", async () => await second.evaluate(`"tracker" in globalThis`));
      await first.evaluate(`tracker.settled()`);
      await second.evaluate(`tracker.flush()`);
      await new Promise((resolve) => setTimeout(resolve, 300));
      // Before, both tabs read them and sent them: 6 counted.
      assert.equal(await s.accepted("pageviews"), 3);
      const posts = s.answers.filter((answer) => answer.method === "POST");
      assert.equal(posts.length, 1);
      assert.equal(await first.evaluate(`localStorage.length`), 0);
      await context.close();
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js keeps what two tabs leave as they close at once while offline, each tab's in an entry of its own: the next page sends both tabs' events",
  async (browser) => {
    const s = await setup();
    try {
      const sdk = JSON.stringify(`${s.api}/sdk.js`);
      const options = JSON.stringify({ key: s.key, flushMs: 60_000 });
      // Each tab has its own copy of localStorage and hears of the other's writes late. Before,
      // each read the stream's one entry, added its event and wrote the entry back: the last write
      // won, and one tab's event was lost in 16 or 17 of 20 trials (none when they closed one
      // after the other).
      for (let trial = 1; trial <= 5; trial++) {
        const context = await browser.newContext();
        const tabs = [await context.newPage(), await context.newPage()];
        await Promise.all(tabs.map((tab) => tab.goto(`${s.allowed}/`)));
        for (const [n, tab] of tabs.entries()) {
          await tab.evaluate(`import(${sdk}).then((sdk) => {
            globalThis.tracker = sdk.createTracker(${options});
            Object.defineProperty(navigator, "onLine", { get: () => false });
            tracker.track("pageviews", { n: ${n} });
          })`);
          await untilRestored(tab);
        }
        // Both go at once, as a window closed with its tabs: offline, pagehide keeps each event.
        await Promise.all(tabs.map((tab) => tab.close({ runBeforeUnload: true })));
        await until("both tabs closed", () => tabs.every((tab) => tab.isClosed()));
        assert.equal(await s.accepted("pageviews"), 2 * (trial - 1), `trial ${trial}`);
        const next = await context.newPage();
        await next.goto(`${s.allowed}/`);
        await next.evaluate(`import(${sdk}).then((sdk) => {
          globalThis.tracker = sdk.createTracker(${options});
        })`);
        await untilRestored(next);
        await next.evaluate(`tracker.settled()`);
        await until(
          `trial ${trial}: both tabs' events`,
          async () => (await s.accepted("pageviews")) >= 2 * trial,
        );
        await new Promise((resolve) => setTimeout(resolve, 200));
        // Each sent once, and nothing left kept.
        assert.equal(await s.accepted("pageviews"), 2 * trial, `trial ${trial}`);
        assert.equal(await next.evaluate(`localStorage.length`), 0, `trial ${trial}`);
        await context.close();
      }
    } finally {
      await s.close();
    }
  },
);

browserTest(
  "/sdk.js keeps what a busy tab leaves while another tab takes what an earlier page kept in an entry of its own: each event counted once, none lost",
  async (browser) => {
    const s = await setup();
    try {
      const context = await browser.newContext();
      const [busy, taking] = [await context.newPage(), await context.newPage()];
      await Promise.all([busy.goto(`${s.allowed}/`), taking.goto(`${s.allowed}/`)]);
      const sdk = JSON.stringify(`${s.api}/sdk.js`);
      const options = JSON.stringify({ key: s.key, flushMs: 60_000 });
      for (const tab of [busy, taking]) {
        await tab.evaluate(`import(${sdk}).then((sdk) => { globalThis.sdk = sdk; })`);
      }
      await busy.evaluate(`globalThis.tracker = sdk.createTracker(${options}); undefined`);
      await untilRestored(busy);
      // What an earlier page (of the release before) kept, which the taking tab takes.
      const name = JSON.stringify(`edgestream:${s.api}|${s.key}|pageviews`);
      await busy.evaluate(`localStorage.setItem(${name}, '[{"n":1},{"n":2},{"n":3}]')`);
      await until(
        "the other tab to see it",
        async () => await taking.evaluate(`localStorage.getItem(${name}) !== null`),
      );
      // The busy tab's main thread is held 3 s (it hears nothing of the other tab's take), then
      // it goes offline: its event is kept.
      await busy.evaluate(`setTimeout(() => {
        const end = performance.now() + 3_000;
        while (performance.now() < end);
        Object.defineProperty(navigator, "onLine", { get: () => false });
        tracker.track("pageviews", { n: 10 });
        tracker.beacon();
        globalThis.went = true;
      }, 0); undefined`);
      await new Promise((resolve) => setTimeout(resolve, 300));
      await taking.evaluate(`globalThis.tracker = sdk.createTracker(${options}); undefined`);
      await until("the earlier page's events", async () => (await s.accepted("pageviews")) >= 3);
      await until(
        "the busy tab's keep",
        async () => await busy.evaluate(`globalThis.went === true`),
      );
      await new Promise((resolve) => setTimeout(resolve, 500));
      const next = await context.newPage();
      await next.goto(`${s.allowed}/`);
      await next.evaluate(`import(${sdk}).then((sdk) => {
        globalThis.tracker = sdk.createTracker(${options});
      })`);
      await untilRestored(next);
      await next.evaluate(`tracker.settled()`);
      await until("the busy tab's event", async () => (await s.accepted("pageviews")) >= 4);
      await new Promise((resolve) => setTimeout(resolve, 500));
      // Before, the busy tab wrote back the stream's one entry as it had read it, its event added
      // after the taken three: the next page sent all four again, 7 counted.
      assert.equal(await s.accepted("pageviews"), 4);
      assert.equal(await next.evaluate(`localStorage.length`), 0);
      await context.close();
    } finally {
      await s.close();
    }
  },
);
