/**
 * The API read from web pages on other origins in real headless Chromium (`src/http/cors.ts`):
 * a page on the origin a read key lists reads a counter with `fetch` (preflighted, for its
 * `Authorization`) and the live subscription as a stream of events; a page on another origin
 * with the same key is refused both with a `403 origin_not_allowed` it reads, and `/sdk.js`
 * `subscribe()` there stops on it with one warning. The pages come from a second local server:
 * `http://localhost:<port>` is the listed origin, `http://127.0.0.1:<port>` the other one.
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { createApp } from "../../src/app.ts";
import { compileConfig } from "../../src/config/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import { MemoryStore } from "../../src/store/mod.ts";
import { browserTest } from "../_chromium.ts";
import { KEYS } from "../_fixtures.ts";

const CONFIG = {
  streams: {
    orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } },
  },
};

async function setup() {
  const app = createApp({
    streams: compileConfig(CONFIG),
    store: new MemoryStore(),
    keys: await KeyRing.parse(`admin:${KEYS.admin}`),
  });
  const api = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, app.fetch);
  const pages = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () =>
      new Response("<!doctype html><title>status</title><p>status</p>", {
        headers: { "Content-Type": "text/html" },
      }),
  );
  const listed = `http://localhost:${pages.addr.port}`;
  const res = await app.request("/v1/keys", {
    method: "POST",
    headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
    body: JSON.stringify({ scopes: ["read"], streams: ["orders"], origins: [listed] }),
  });
  assert.equal(res.status, 201);
  const { key } = await res.json();
  return {
    api: `http://127.0.0.1:${api.addr.port}`,
    listed,
    other: `http://127.0.0.1:${pages.addr.port}`,
    key: key as string,
    ingest(events: unknown[]) {
      return app.request("/v1/streams/orders/events", {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
        body: JSON.stringify(events),
      });
    },
    async close() {
      await pages.shutdown();
      await api.shutdown();
    },
  };
}

async function open(browser: Browser, origin: string): Promise<Page> {
  const page = await browser.newPage();
  await page.goto(`${origin}/`);
  return page;
}

/** What the page's `fetch` of `url` with `key` gives: the status and body, or the error. */
function readFrom(
  page: Page,
  url: string,
  key: string,
  accept = "application/json",
): Promise<string> {
  return page.evaluate(`fetch(${JSON.stringify(url)}, {
    headers: { Authorization: "Bearer ${key}", Accept: "${accept}" },
  }).then(async (res) => res.status + " " + await res.text(), (error) => "error " + error.name)`);
}

browserTest(
  "a page on a read key's origin reads a counter with fetch and the subscription as it streams; a page on another origin is refused both with a 403 origin_not_allowed it reads",
  async (browser) => {
    const s = await setup();
    try {
      assert.equal((await s.ingest([{}, {}])).status, 202);
      // Its windows, not the current one: a minute may end between the ingest and the read.
      const counter = `${s.api}/v1/streams/orders/counters/n`;
      const page = await open(browser, s.listed);
      const read = await readFrom(page, counter, s.key);
      assert.match(read, /^200 /);
      const windows: { value: number }[] = JSON.parse(read.slice(4)).windows;
      assert.equal(windows.reduce((sum, window) => sum + window.value, 0), 2);

      // The subscription read as it streams, until an event processed after it started.
      const subscribed = page.evaluate(`(async () => {
        const res = await fetch(${
        JSON.stringify(`${s.api}/v1/streams/orders/subscribe?types=event.processed`)
      }, {
          headers: { Authorization: "Bearer ${s.key}", Accept: "text/event-stream" },
        });
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let text = "";
        while (!text.includes("event.processed")) {
          const { value, done } = await reader.read();
          if (done) break;
          text += value;
          if (text.includes("subscribed")) globalThis.subscribed = true;
        }
        reader.cancel();
        return res.status + " " + text;
      })()`) as Promise<string>;
      const deadline = Date.now() + 10_000;
      while (!(await page.evaluate("globalThis.subscribed === true"))) {
        if (Date.now() > deadline) throw new Error("Timed out waiting for the subscription");
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      assert.equal((await s.ingest([{ id: "seen" }])).status, 202);
      const streamed = await subscribed;
      assert.match(streamed, /^200 /);
      assert.match(streamed, /event\.processed/);

      // The same key from a page its origins do not list: refused, with a 403 the page reads
      // (before, a 200 the browser withheld: a TypeError the page could not tell from the network).
      const other = await open(browser, s.other);
      const refused = await readFrom(other, counter, s.key);
      assert.match(refused, /^403 /);
      assert.equal(JSON.parse(refused.slice(4)).error.code, "origin_not_allowed");
      assert.doesNotMatch(refused, /"windows"/);
      const sse = await readFrom(
        other,
        `${s.api}/v1/streams/orders/subscribe`,
        s.key,
        "text/event-stream",
      );
      assert.match(sse, /^403 /);
      assert.equal(JSON.parse(sse.slice(4)).error.code, "origin_not_allowed");
    } finally {
      await s.close();
    }
  },
);

/**
 * A server whose stream closes windows by event time, and whose subscriptions (SSE) can be cut
 * and, while `down`, refused with 503 as a restarting server's are; `subscribes` lists the URLs of
 * the subscription requests it got.
 */
async function resumableSetup() {
  const app = createApp({
    streams: compileConfig({
      streams: {
        orders: {
          time: { field: "ts", lateness: "0s" },
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        },
      },
    }),
    store: new MemoryStore(),
    keys: await KeyRing.parse(`admin:${KEYS.admin}`),
  });
  const cuts = new Set<AbortController>();
  const subscribes: string[] = [];
  let down = false;
  /** Subscriptions answered and not ended yet (the client closed them, or a cut). */
  let open = 0;
  const api = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
    if (new URL(request.url).pathname.endsWith("/subscribe") && request.method === "GET") {
      subscribes.push(request.url);
      if (down) {
        return new Response(JSON.stringify({ error: { code: "shutting_down", message: "down" } }), {
          status: 503,
          headers: {
            "Content-Type": "application/json",
            "Retry-After": "1",
            "Access-Control-Allow-Origin": request.headers.get("Origin") ?? "*",
          },
        });
      }
    }
    const res = await app.fetch(request);
    if (!res.headers.get("Content-Type")?.startsWith("text/event-stream") || !res.body) return res;
    const cut = new AbortController();
    cuts.add(cut);
    const { readable, writable } = new TransformStream();
    open += 1;
    // Cut: the answer ends there (the server's side is cancelled), as a dropped proxy's would.
    res.body.pipeTo(writable, { signal: cut.signal, preventAbort: true })
      .catch(() => writable.close().catch(() => {}))
      .finally(() => open -= 1);
    return new Response(readable, res);
  });
  const pages = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () =>
      new Response("<!doctype html><title>status</title>", {
        headers: { "Content-Type": "text/html" },
      }),
  );
  const listed = `http://localhost:${pages.addr.port}`;
  const res = await app.request("/v1/keys", {
    method: "POST",
    headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
    body: JSON.stringify({ scopes: ["read"], streams: ["orders"], origins: [listed] }),
  });
  const { key } = await res.json();
  const admin = { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" };
  return {
    api: `http://127.0.0.1:${api.addr.port}`,
    listed,
    other: `http://127.0.0.1:${pages.addr.port}`,
    key: key as string,
    subscribes,
    get open() {
      return open;
    },
    /** Cuts every open subscription, refusing new ones while `refuse` holds. */
    cut(refuse: boolean) {
      down = refuse;
      for (const cut of cuts) cut.abort();
      cuts.clear();
    },
    up() {
      down = false;
    },
    /** Closes a window by event time: two events two minutes apart, then a sweep. */
    async closeWindow(startMs: number) {
      const sent = await app.request("/v1/streams/orders/events", {
        method: "POST",
        headers: admin,
        body: JSON.stringify([{ ts: startMs + 1_000 }, { ts: startMs + 120_000 }]),
      });
      assert.equal(sent.status, 202);
      const swept = await app.request("/v1/admin/sweep", { method: "POST", headers: admin });
      assert.equal(swept.status, 200);
    },
    async close() {
      await pages.shutdown();
      await api.shutdown();
    },
  };
}

/**
 * Runs `body` with a {@linkcode resumableSetup} server and a page on the origin its key lists
 * (`"listed"`, the default) or on one it does not (`"other"`), closing both afterwards.
 */
async function onPage(
  browser: Browser,
  body: (s: Awaited<ReturnType<typeof resumableSetup>>, page: Page) => Promise<void>,
  origin: "listed" | "other" = "listed",
): Promise<void> {
  const s = await resumableSetup();
  const page = await open(browser, s[origin]);
  try {
    await body(s, page);
  } finally {
    await page.close();
    await s.close();
  }
}

async function pageValue<T>(page: Page, expression: string, ok: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = await page.evaluate(expression) as T;
    if (ok(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`Timed out: ${expression} is ${JSON.stringify(value)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

browserTest(
  "/sdk.js subscribe() on a page of the key's origin follows results, and after a cut connection and a 503 resumes where it was, missing none and repeating none",
  (browser) =>
    onPage(browser, async (s, page) => {
      await page.evaluate(`(async () => {
      const { subscribe } = await import(${JSON.stringify(`${s.api}/sdk.js`)});
      globalThis.got = [];
      globalThis.errors = [];
      globalThis.live = subscribe("orders", {
        key: ${JSON.stringify(s.key)},
        endpoint: ${JSON.stringify(s.api)},
        types: ["window.closed"],
        retryBaseMs: 200,
        onMessage: (message) => got.push(message),
        onError: (error) => errors.push(error.status ?? error.name),
      });
    })()`);
      const minute = Math.floor(Date.now() / 60_000) * 60_000 - 30 * 60_000;
      const at = (minutes: number) => new Date(minute + minutes * 60_000).toISOString();
      await pageValue<number>(page, "got.length", (n) => n === 1);
      // Closes the window at `minute` (its second event opens the one 2 minutes on).
      await s.closeWindow(minute);
      await pageValue<number>(page, "got.length", (n) => n === 2);
      // Cut, refused meanwhile (503, Retry-After: 1), and windows close before it is back.
      s.cut(true);
      await pageValue<unknown[]>(page, "errors", (errors) => errors.includes(503));
      await s.closeWindow(minute + 10 * 60_000);
      s.up();
      const got = await pageValue<Array<Record<string, unknown>>>(
        page,
        "got",
        (messages) => messages.length >= 5,
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(await page.evaluate("got.length"), 5, "nothing twice");
      assert.deepEqual(
        got.map((message) =>
          message.type === "window.closed"
            ? (message.data as { start: string }).start
            : `${message.type}${message.resumed ? " resumed" : ""}`
        ),
        ["subscribed", at(0), "subscribed resumed", at(2), at(10)],
      );
      // The reconnection asked for what followed the last result received.
      assert.match(s.subscribes.at(-1) ?? "", /[?&]after=\d+-\d+/);
      await page.evaluate("live.close()");
    }),
);

browserTest(
  "/sdk.js subscribe() with a key the server refuses tells onError once and stops",
  (browser) =>
    onPage(browser, async (s, page) => {
      await page.evaluate(`(async () => {
      const { subscribe } = await import(${JSON.stringify(`${s.api}/sdk.js`)});
      globalThis.errors = [];
      subscribe("orders", {
        key: "sk_notAKeyNotAKeyNotAKey0123",
        endpoint: ${JSON.stringify(s.api)},
        retryBaseMs: 100,
        onError: (error) => errors.push([error.status, error.code]),
      });
    })()`);
      await pageValue<unknown[]>(page, "errors", (errors) => errors.length > 0);
      await new Promise((resolve) => setTimeout(resolve, 500));
      assert.deepEqual(await page.evaluate("errors"), [[401, "unauthorized"]]);
      assert.equal(s.subscribes.length, 1);
    }),
);

browserTest(
  "/sdk.js subscribe() on a page of an origin its key does not list stops at the 403 origin_not_allowed with one warning, instead of reconnecting for good on a TypeError",
  (browser) =>
    onPage(browser, async (s, page) => {
      const warnings: string[] = [];
      page.on("console", (message) => {
        if (message.type() === "warning") warnings.push(message.text());
      });
      await page.evaluate(`(async () => {
      const { subscribe } = await import(${JSON.stringify(`${s.api}/sdk.js`)});
      globalThis.errors = [];
      subscribe("orders", {
        key: ${JSON.stringify(s.key)},
        endpoint: ${JSON.stringify(s.api)},
        retryBaseMs: 100,
        onError: (error) => errors.push([error.status, error.code]),
      });
      // Without onError: the warning is all the page is told.
      subscribe("orders", { key: ${JSON.stringify(s.key)}, endpoint: ${
        JSON.stringify(s.api)
      }, retryBaseMs: 100 });
    })()`);
      await pageValue<unknown[]>(page, "errors", (errors) => errors.length > 0);
      // Long enough for several reconnections at 100 ms, doubling, had it gone on.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assert.deepEqual(await page.evaluate("errors"), [[403, "origin_not_allowed"]]);
      assert.equal(s.subscribes.length, 2, "one request for each, none again");
      assert.equal(warnings.length, 2, warnings.join("\n"));
      for (const warning of warnings) {
        assert.match(
          warning,
          /^edgestream: subscribing to 'orders' answered 403: Cross-origin read from 'http:\/\/127\.0\.0\.1:\d+' refused: API key 'key_\w+' does not list it in its origins.*\(origin_not_allowed\): the subscription stops$/,
        );
      }
    }, "other"),
);

browserTest(
  "/sdk.js subscribe() whose onMessage throws closes each connection before it opens the next, backing off",
  (browser) =>
    onPage(browser, async (s, page) => {
      await page.evaluate(`(async () => {
      const { subscribe } = await import(${JSON.stringify(`${s.api}/sdk.js`)});
      globalThis.live = subscribe("orders", {
        key: ${JSON.stringify(s.key)},
        endpoint: ${JSON.stringify(s.api)},
        retryBaseMs: 100,
        onMessage: () => { throw new Error("the page's bug"); },
      });
    })()`);
      const deadline = Date.now() + 10_000;
      while (s.subscribes.length < 4) {
        if (Date.now() > deadline) throw new Error(`${s.subscribes.length} subscriptions`);
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      // The server saw the earlier ones end (each answer's body closed by the page).
      const settle = Date.now() + 5_000;
      while (s.open > 1 && Date.now() < settle) {
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      assert.ok(s.open <= 1, `${s.open} subscriptions open after ${s.subscribes.length}`);
      // Backing off: 50, 100, 200, 400 ms… not a request every 50 ms.
      const before = s.subscribes.length;
      await new Promise((resolve) => setTimeout(resolve, 600));
      assert.ok(s.subscribes.length - before <= 2, `${s.subscribes.length - before} in 600 ms`);
      await page.evaluate("live.close()");
    }),
);

/**
 * A server in open mode (no keys) on `http://127.0.0.1:<port>`, whose `EDGESTREAM_ALLOWED_ORIGINS`
 * lists `listed` only, with pages on `http://localhost:<port>` (not listed) and the listed one;
 * `subscribes` counts the subscription requests it got, `open` those answered and not ended.
 */
async function openModeSetup() {
  const pages = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    () =>
      new Response("<!doctype html><title>page</title>", {
        headers: { "Content-Type": "text/html" },
      }),
  );
  const listed = `http://127.0.0.1:${pages.addr.port}`;
  const app = createApp({
    streams: compileConfig(CONFIG),
    store: new MemoryStore(),
    keys: await KeyRing.parse(""),
    origins: { allowedOrigins: [listed] },
  });
  let subscribes = 0;
  let open = 0;
  const api = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
    const subscribe = new URL(request.url).pathname.endsWith("/subscribe");
    if (subscribe && request.method === "GET") subscribes += 1;
    const res = await app.fetch(request);
    if (!subscribe || !res.ok || !res.body) return res;
    open += 1;
    const { readable, writable } = new TransformStream();
    res.body.pipeTo(writable).catch(() => {}).finally(() => open -= 1);
    return new Response(readable, res);
  });
  return {
    api: `http://127.0.0.1:${api.addr.port}`,
    other: `http://localhost:${pages.addr.port}`,
    listed,
    get subscribes() {
      return subscribes;
    },
    get open() {
      return open;
    },
    async close() {
      await pages.shutdown();
      await api.shutdown();
    },
  };
}

browserTest(
  "in open mode a page on an origin EDGESTREAM_ALLOWED_ORIGINS does not list is refused the live subscription with a 403 origin_not_allowed it reads, none opened, and /sdk.js subscribe() stops on it; a listed page reads the stream",
  async (browser) => {
    const s = await openModeSetup();
    try {
      const url = `${s.api}/v1/streams/orders/subscribe`;
      const other = await open(browser, s.other);
      // Without a key (no preflight) and with one (any text in open mode, preflighted).
      for (const headers of [{}, { Authorization: "Bearer dev" }]) {
        const read = await other.evaluate(`fetch(${JSON.stringify(url)}, {
          headers: { ...${JSON.stringify(headers)}, Accept: "text/event-stream" },
        }).then(async (res) => res.status + " " + await res.text(), (error) => "error " + error.name)`) as string;
        // Before, a 200 streaming to a page the browser let read nothing of it: "error TypeError".
        assert.match(read, /^403 /, read);
        const { error } = JSON.parse(read.slice(4));
        assert.equal(error.code, "origin_not_allowed");
        assert.equal(
          error.message,
          `Cross-origin read from '${s.other}' refused: in open mode (no EDGESTREAM_KEYS) only the server's own origin and those EDGESTREAM_ALLOWED_ORIGINS lists read a subscription; add it there to let its pages read`,
        );
      }
      assert.equal(s.subscribes, 2);
      assert.equal(s.open, 0, "no subscription answered");

      const warnings: string[] = [];
      other.on("console", (message) => {
        if (message.type() === "warning") warnings.push(message.text());
      });
      await other.evaluate(`(async () => {
        const { subscribe } = await import(${JSON.stringify(`${s.api}/sdk.js`)});
        globalThis.errors = [];
        subscribe("orders", {
          endpoint: ${JSON.stringify(s.api)},
          retryBaseMs: 100,
          onError: (error) => errors.push([error.status ?? error.name, error.code]),
        });
      })()`);
      await pageValue<unknown[]>(other, "errors", (errors) => errors.length > 0);
      // Long enough for several reconnections at 100 ms, doubling, had it gone on.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assert.deepEqual(await other.evaluate("errors"), [[403, "origin_not_allowed"]]);
      assert.equal(s.subscribes, 3, "one request, none again");
      assert.equal(warnings.length, 1, warnings.join("\n"));
      assert.match(warnings[0], /in open mode .*\(origin_not_allowed\): the subscription stops$/);

      // The page the refusal's advice lists reads the stream.
      const listed = await open(browser, s.listed);
      await listed.evaluate(`(async () => {
        const { subscribe } = await import(${JSON.stringify(`${s.api}/sdk.js`)});
        globalThis.got = [];
        globalThis.live = subscribe("orders", {
          endpoint: ${JSON.stringify(s.api)},
          onMessage: (message) => got.push(message.type),
        });
      })()`);
      assert.deepEqual(await pageValue<string[]>(listed, "got", (got) => got.length > 0), [
        "subscribed",
      ]);
      await listed.evaluate("live.close()");
    } finally {
      await s.close();
    }
  },
);
