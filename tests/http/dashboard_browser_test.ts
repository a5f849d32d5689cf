/**
 * The dashboard at `/` in real headless Chromium, against a real server on
 * a free port: it loads with no console error and no request to another
 * origin; events sent over HTTP change the chart and the current window's
 * value; an alert appears as it fires; webhook health shows and the replay
 * button works; in keyed mode the key is asked once, kept in
 * `sessionStorage` and never put in a URL, and a read key limited to streams
 * shows those; with 300 streams it draws and reads
 * only the 6 shown (the first by name, or those chosen in its list, a choice a
 * reload and a copied link keep).
 *
 * Set `DASHBOARD_SCREENSHOT=docs/dashboard.png` to also write the first
 * test's screenshot there (how the README's picture is made).
 */
import assert from "node:assert/strict";
import type { Browser, ConsoleMessage, Page, Request, Route } from "playwright-core";
import { createApp } from "../../src/app.ts";
import { compileConfig, StreamRegistry } from "../../src/config/mod.ts";
import { LiveHub } from "../../src/fanout/live.ts";
import { UrlPolicy, WebhookService } from "../../src/fanout/webhooks/mod.ts";
import { KeyRing } from "../../src/http/auth.ts";
import {
  MemoryDefinitionStore,
  MemoryDeliveryStore,
  MemoryKeyStore,
  MemoryStore,
  type Store,
  StoreUnavailableError,
} from "../../src/store/mod.ts";
import { RedisStore } from "../../src/store/redis/store.ts";
import { axeViolations, describeViolations } from "../_axe.ts";
import { browserTest } from "../_chromium.ts";
import { restClient, withRedis } from "../_redis.ts";
import { KEYS } from "../_fixtures.ts";

const CONFIG = {
  streams: {
    orders: {
      description: "Shop orders",
      schema: {
        type: "object",
        properties: { country: { type: "string" }, amount: { type: "number" } },
        required: ["country", "amount"],
      },
      time: { field: "ts", lateness: "1h" },
      counters: {
        orders_per_minute: {
          window: { tumbling: "1m" },
          groupBy: ["country"],
          aggregate: "count",
        },
        revenue_per_minute: { window: { tumbling: "1m" }, aggregate: { sum: "amount" } },
      },
      alerts: [{ name: "busy", counter: "orders_per_minute", when: "value >= 6.0" }],
    },
  },
};

const CURRENT = '[data-current="orders/orders_per_minute"]';
const CHART_CANVAS = '[data-chart="orders/orders_per_minute"] canvas';
const SPARK_CANVAS = '[data-stream="orders"] .spark canvas';

/**
 * A clock behind the real one so that it reads 5 s past a minute now: the
 * whole test then runs inside one window and the current window never
 * rolls over under it.
 */
function clockInsideOneWindow(lagMs = 0): { now: () => number; advance(ms: number): void } {
  let shift = (((Date.now() - 5_000) % 60_000) + 60_000) % 60_000 + lagMs;
  return {
    now: () => Date.now() - shift,
    /** Moves the clock `ms` forward, as {@linkcode runClock} does a page's. */
    advance(ms: number) {
      shift -= ms;
    },
  };
}

interface Receiver {
  url: string;
  close(): Promise<void>;
}

/** A webhook receiver that answers every delivery with `status`. */
function receiver(status: number): Receiver {
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (req) => {
    await req.arrayBuffer();
    return new Response(status === 204 ? null : "receiver is down", { status });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/hook`,
    close: () => server.shutdown(),
  };
}

/**
 * A webhook receiver that holds every delivery unanswered until closed; `received` resolves at
 * the first one.
 */
function holdingReceiver(): Receiver & { received: Promise<void> } {
  const received = Promise.withResolvers<void>();
  const released = Promise.withResolvers<void>();
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async () => {
    received.resolve();
    await released.promise;
    return new Response(null, { status: 204 });
  });
  return {
    url: `http://127.0.0.1:${server.addr.port}/held`,
    received: received.promise,
    close() {
      released.resolve();
      return server.shutdown();
    },
  };
}

interface DashboardServer {
  base: string;
  now: () => number;
  /** Moves the server's clock `ms` forward (with a page's, by {@linkcode runClock}). */
  advanceClock(ms: number): void;
  /** Where a registry's streams are stored (with `registry`). */
  definitions: MemoryDefinitionStore;
  /** The streams served: a registry with `registry`. */
  streams: ReadonlyMap<string, unknown>;
  /** With `holding`: resolves once its receiver holds a delivery. */
  held?: Promise<void>;
  /** Stops sending webhooks as a stopping instance does, cutting off what is in flight. */
  stopWebhooks(): Promise<void>;
  /** Sends events to a stream (`orders` by default); returns the reply. */
  send(events: unknown[], stream?: string): Promise<Record<string, unknown>>;
  /** Stops everything (after the browser closed its connections). */
  close(): Promise<void>;
}

/** Serves the whole app (with webhooks to two local receivers, one failing) on a free port. */
async function startServer(
  options: {
    auth?: boolean;
    config?: unknown;
    registry?: boolean;
    /** How far (ms) the server's clock is behind the browser's, besides its shift into a minute. */
    lagMs?: number;
    /** Register a third endpoint, "archive", whose receiver holds deliveries unanswered. */
    holding?: boolean;
    /** While it returns true, every store call fails as an unreachable store's does. */
    storeDown?: () => boolean;
    /**
     * With a registry, streams stored through the API before it started (by an earlier release,
     * which could store what this one cannot compile), by name: their definitions.
     */
    stored?: Record<string, unknown>;
    /** Without webhooks: an app built with none (`/v1/webhooks` is 404). @default {true} */
    webhooks?: boolean;
    /** The stream store, made with the server's clock. @default {a MemoryStore} */
    store?: (now: () => number) => Store;
  } = {},
): Promise<DashboardServer> {
  const clock = clockInsideOneWindow(options.lagMs);
  const now = clock.now;
  const compiled = compileConfig(options.config ?? CONFIG);
  // With a registry, streams may be created and deleted at run time (`PUT`/`DELETE`).
  const memory = options.store?.(now) ?? new MemoryStore({ now });
  const storeDown = options.storeDown;
  const store = storeDown
    ? new Proxy(memory, {
      get(target, property) {
        const value = Reflect.get(target, property, target);
        if (typeof value !== "function") return value;
        return (...args: unknown[]) => {
          // Rejected, not thrown: the store's methods are async.
          if (storeDown()) {
            return Promise.reject(
              new StoreUnavailableError("Redis is unavailable: connection refused"),
            );
          }
          return value.apply(target, args);
        };
      },
    })
    : memory;
  const definitions = new MemoryDefinitionStore();
  for (const [name, definition] of Object.entries(options.stored ?? {})) {
    const written = await definitions.write(name, {
      source: "api",
      generation: 1,
      definition,
      counters: {},
      deleted: false,
    }, 0);
    assert.equal(written.status, "written");
  }
  const streams = options.registry ? new StreamRegistry(compiled, { now, definitions }) : compiled;
  // What the first poll of a server just started finds.
  if (streams instanceof StreamRegistry) await streams.poll();
  const live = new LiveHub(streams, store, { pollMs: 50, updateIntervalMs: 100, now });
  const webhooks = new WebhookService({
    store,
    deliveries: new MemoryDeliveryStore({ now }),
    streams,
    now,
    policy: new UrlPolicy({
      allow: ["127.0.0.1"],
      resolve: () => Promise.reject(new Error("No DNS in tests")),
    }),
  });
  const keys = await KeyRing.parse(
    options.auth ? `admin:${KEYS.admin},ingest:${KEYS.ingest},read:${KEYS.read}` : "",
    // Run-time keys too (POST /v1/keys), such as keys limited to streams.
    { store: new MemoryKeyStore() },
  );
  const app = createApp({
    streams,
    store,
    keys,
    now,
    live,
    webhooks: options.webhooks === false ? undefined : webhooks,
  });
  const listening = Promise.withResolvers<number>();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen: ({ port }) => listening.resolve(port) },
    app.fetch,
  );
  const base = `http://127.0.0.1:${await listening.promise}`;
  const auth: Record<string, string> = options.auth
    ? { Authorization: `Bearer ${KEYS.admin}` }
    : {};
  const healthy = receiver(204);
  const failing = receiver(500);
  const holding = options.holding ? holdingReceiver() : undefined;
  const endpoints = [[healthy.url, "billing"], [failing.url, "pager"]];
  if (holding) endpoints.push([holding.url, "archive"]);
  for (const [url, description] of options.webhooks === false ? [] : endpoints) {
    const res = await fetch(`${base}/v1/webhooks`, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...auth },
      body: JSON.stringify({ url, description, eventTypes: ["alert.fired"] }),
    });
    assert.equal(res.status, 201, await res.text());
  }
  let webhooksStopped: Promise<void> | undefined;
  return {
    base,
    now,
    advanceClock: clock.advance,
    definitions,
    streams,
    held: holding?.received,
    stopWebhooks() {
      webhooksStopped ??= webhooks.close({ signal: AbortSignal.abort() });
      return webhooksStopped;
    },
    async send(events, stream = "orders") {
      const res = await fetch(`${base}/v1/streams/${stream}/events`, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...auth },
        body: JSON.stringify(events),
      });
      const body = await res.json();
      assert.equal(res.status, 202, JSON.stringify(body));
      return body;
    },
    async close() {
      await live.close();
      await (webhooksStopped ?? webhooks.close());
      await server.shutdown();
      await healthy.close();
      await failing.close();
      await holding?.close();
    },
  };
}

/** The last 30 minutes of orders, before the page opens: something to draw. */
async function backfill(server: DashboardServer): Promise<void> {
  const minute = Math.floor(server.now() / 60_000) * 60_000;
  const events: Array<{ ts: number; country: string; amount: number }> = [];
  for (let ago = 30; ago >= 1; ago--) {
    const counts = {
      DE: 3 + ((ago * 7) % 5),
      FR: 2 + ((ago * 3) % 4),
      IT: 1 + ((ago * 5) % 3),
      ES: (ago * 2) % 3,
    };
    for (const [country, count] of Object.entries(counts)) {
      for (let i = 0; i < count; i++) {
        const ts = minute - ago * 60_000 + 1_000 + events.length * 10;
        events.push({ ts, country, amount: 10 + ((ago + i) % 7) * 15 });
      }
    }
  }
  await server.send(events);
}

/** What a page did that the tests check: console errors and every request. */
interface PageLog {
  errors: string[];
  requests: Request[];
}

function watch(page: Page): PageLog {
  const log: PageLog = { errors: [], requests: [] };
  page.on("console", (message: ConsoleMessage) => {
    if (message.type() === "error") {
      log.errors.push(`${message.text()} (${message.location().url})`);
    }
  });
  page.on("pageerror", (error) => log.errors.push(`page error: ${error.message}`));
  page.on("request", (request) => log.requests.push(request));
  return log;
}

function assertSameOrigin(log: PageLog, base: string): void {
  const origins = new Set(log.requests.map((request) => new URL(request.url()).origin));
  assert.deepEqual([...origins], [new URL(base).origin], "every request goes to the server");
}

/** A canvas as a data URL: what it shows, pixel for pixel. */
async function canvasPixels(page: Page, selector: string): Promise<string> {
  return await page.evaluate(`document.querySelector('${selector}').toDataURL()`) as string;
}

function chartPixels(page: Page): Promise<string> {
  return canvasPixels(page, CHART_CANVAS);
}

/** Reads `read()` until `ok` holds for its value (checked every 50 ms); returns that value. */
async function until<T>(
  what: string,
  read: () => Promise<T>,
  ok: (value: T) => boolean,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (ok(value)) return value;
    if (Date.now() > deadline) {
      throw new Error(`Waited ${timeoutMs} ms for ${what}; last seen: ${JSON.stringify(value)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Waits until the text of `selector` matches `pattern`; returns the text. */
function textMatching(page: Page, selector: string, pattern: RegExp): Promise<string> {
  return until(
    `${selector} to match ${pattern}`,
    async () => await page.locator(selector).first().textContent() ?? "",
    (text) => pattern.test(text),
  );
}

/** Reads `read` until it gives the same twice in a row (layout settled); returns that. */
function atRest<T>(what: string, read: () => Promise<T>): Promise<T> {
  let last = "";
  return until(what, read, (seen) => {
    const same = JSON.stringify(seen) === last;
    last = JSON.stringify(seen);
    return same;
  });
}

/** Answers a routed request as the server does when its store cannot be reached. */
function storeUnavailable(route: Route, message: string): Promise<void> {
  return route.fulfill({
    status: 503,
    contentType: "application/json",
    body: JSON.stringify({ error: { code: "store_unavailable", message } }),
  });
}

async function newPage(browser: Browser): Promise<Page> {
  return await browser.newPage({ viewport: { width: 1280, height: 900 } });
}

/**
 * The requests each page given {@linkcode installClock} has on their way, its live subscriptions
 * (open for good) aside.
 */
const inFlight = new WeakMap<Page, Set<Request>>();

/**
 * Installs Playwright's clock in `page` before it loads, so that every timer of the page is the
 * clock's: time flows as ever, and {@linkcode runClock} runs it forward where a test would
 * otherwise wait in real time for the page's own polls.
 */
async function installClock(
  page: Page,
  options: {
    /** Requests {@linkcode runClock} does not wait for (those a test holds unanswered). */
    unwaited?: (url: URL) => boolean;
  } = {},
): Promise<void> {
  const open = new Set<Request>();
  inFlight.set(page, open);
  page.on("request", (request) => {
    const url = new URL(request.url());
    if (!url.pathname.endsWith("/subscribe") && !options.unwaited?.(url)) open.add(request);
  });
  page.on("requestfinished", (request) => open.delete(request));
  page.on("requestfailed", (request) => open.delete(request));
  await page.clock.install();
}

/** Waits until `page` has had no request on its way for two checks in a row, 20 ms apart. */
async function requestsEnded(page: Page): Promise<void> {
  const open = inFlight.get(page);
  assert.ok(open, "installClock(page) first");
  const deadline = Date.now() + 15_000;
  for (let quiet = 0; quiet < 2;) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    quiet = open.size === 0 ? quiet + 1 : 0;
    if (Date.now() > deadline) {
      throw new Error(`Requests still on their way: ${[...open].map((r) => r.url()).join(", ")}`);
    }
  }
}

/** The page's clock (ms), as its `Date.now()` reads it. */
function pageNow(page: Page): Promise<number> {
  return page.evaluate(() => Date.now());
}

/**
 * Runs the clocks of `page` (see {@linkcode installClock}) and `server` `ms` forward, in steps of
 * at most `stepMs`: each fires the page's timers due in it, then lets the requests they sent end
 * (a poll sets its next timer once its read is answered). The page lives `ms` and the little real
 * time that takes. The server's clock goes as far, so the windows the page works out from its own
 * clock stay as far from the server's as in real time.
 */
async function runClock(
  page: Page,
  server: DashboardServer,
  ms: number,
  stepMs = 250,
): Promise<void> {
  for (let left = ms; left > 0; left -= stepMs) {
    const step = Math.min(stepMs, left);
    server.advanceClock(step);
    await page.clock.runFor(step);
    await requestsEnded(page);
  }
}

/**
 * Runs the clocks forward as {@linkcode runClock} does, a step at a time, until `ok` holds for
 * what `read()` gives (read before each step), for at most `limitMs` of the page's time; returns
 * that value.
 */
async function untilClocked<T>(
  page: Page,
  server: DashboardServer,
  what: string,
  read: () => Promise<T>,
  ok: (value: T) => boolean,
  limitMs = 20_000,
  stepMs = 250,
): Promise<T> {
  for (let ran = 0;; ran += stepMs) {
    const value = await read();
    if (ok(value)) return value;
    if (ran >= limitMs) {
      throw new Error(
        `Ran the page's clock ${limitMs} ms for ${what}; last seen: ${JSON.stringify(value)}`,
      );
    }
    await runClock(page, server, stepMs, stepMs);
  }
}

browserTest(
  "the dashboard shows events arriving, the window growing, an alert and webhook health, with no console error and no other origin",
  async (browser) => {
    const server = await startServer();
    try {
      await backfill(server);
      const page = await newPage(browser);
      const log = watch(page);
      await installClock(page);
      const res = await page.goto(`${server.base}/`);
      assert.equal(res?.status(), 200);
      assert.match(res?.headers()["content-security-policy"] ?? "", /default-src 'self'/);
      // Open mode: no key is asked.
      assert.equal(await page.locator('input[name="key"]').isVisible(), false);
      await page.locator('[data-live="orders"].ok').waitFor();
      await page.locator("[data-webhook] .replay").nth(1).waitFor();
      await page.locator(`${CHART_CANVAS}`).waitFor();
      await textMatching(page, CURRENT, /^—$/);
      await page.locator("#store-status.ok").waitFor();
      assert.match(await page.locator("#store-status").textContent() ?? "", /memory · ready/);
      const before = await page.locator(CURRENT).textContent();
      const pixelsBefore = await chartPixels(page);
      const sparkBefore = await canvasPixels(page, SPARK_CANVAS);

      const reply = await server.send([
        ...Array.from({ length: 6 }, () => ({ country: "DE", amount: 20 })),
        { country: "FR", amount: 120 },
        { country: "FR", amount: "not a number" },
      ]);
      assert.deepEqual([reply.accepted, (reply.rejected as unknown[]).length], [7, 1]);

      const after = await textMatching(page, CURRENT, /DE\s*6/);
      assert.notEqual(after, before);
      assert.match(after ?? "", /FR\s*1/);
      await until(
        "the chart to change",
        () => chartPixels(page),
        (pixels) => pixels !== pixelsBefore,
      );
      const alert = page.locator('[data-alert="busy"]');
      await alert.waitFor();
      assert.match(await alert.textContent() ?? "", /busy.*orders · orders_per_minute · DE = 6/);
      await textMatching(page, '[data-rate="orders/accepted"]', /^[1-9][\d.,]*\/s$|^0\.\d\/s$/);
      await until(
        "the sparkline to change",
        () => canvasPixels(page, SPARK_CANVAS),
        (pixels) => pixels !== sparkBefore,
      );

      // The page chooses how many groups a chart draws (the legend adds the time axis);
      // a count's chart adds the rest summed (read with ?top=) once some group is left out.
      const legend = '[data-counter="orders/orders_per_minute"] .u-legend .u-series';
      assert.equal(await page.locator(legend).count(), 1 + 4);
      await page.locator("#top-groups").selectOption("3");
      // 3 groups and others are as many legend entries as the 4 groups before: wait for the text.
      await until(
        "3 lines and others",
        async () => [
          await page.locator(legend).count(),
          await page.locator(legend).last().textContent(),
        ],
        ([count, last]) => count === 1 + 4 && /others/.test(String(last)),
      );
      assert.ok(
        log.requests.some((request) =>
          /\/counters\/orders_per_minute\?.*top=3/.test(request.url())
        ),
      );
      await page.locator("#top-groups").selectOption("5");
      await until(
        "4 group lines and no others",
        async () => [
          await page.locator(legend).count(),
          await page.locator(legend).last().textContent(),
        ],
        ([count, last]) => count === 1 + 4 && !/others/.test(String(last)),
      );

      // Webhook health: the receiver that answers 500 shows its error and pending deliveries.
      const pager = page.locator("[data-webhook]", { hasText: "/hook" }).nth(1);
      // It shows at the webhooks' next read (every 10 s).
      await untilClocked(
        page,
        server,
        "the failing endpoint's HTTP 500",
        () => page.locator("[data-webhook]", { hasText: "HTTP 500" }).count(),
        (count) => count > 0,
        20_000,
        1_000,
      );
      assert.equal(await page.locator("[data-webhook]").count(), 2);
      await page.locator("[data-webhook]", { hasText: "HTTP 500" }).locator(".replay").click();
      await page.locator("[data-webhook] .replay-result", { hasText: /requeued \d+/ }).waitFor();
      assert.ok(await pager.isVisible());
      const replay = log.requests.find((request) => request.url().endsWith("/replay"));
      assert.equal(replay?.method(), "POST");

      // More traffic, some of it refused, so the sparkline has a shape in the picture.
      for (let i = 0; i < 10; i++) {
        const batch: Record<string, unknown>[] = Array.from(
          { length: 1 + (i % 4) * 2 },
          (_, j) => ({ country: ["IT", "ES", "FR"][(i + j) % 3], amount: 20 + 15 * j }),
        );
        if (i % 3 === 1) batch.push({ country: "IT", amount: "n/a" });
        await server.send(batch);
        await runClock(page, server, 900);
      }
      const dir = await Deno.makeTempDir({ prefix: "edgestream-dashboard-" });
      const path = `${dir}/dashboard.png`;
      await page.screenshot({ path, fullPage: true });
      console.log(`dashboard screenshot: ${path}`);
      const copyTo = Deno.env.get("DASHBOARD_SCREENSHOT");
      if (copyTo) await Deno.copyFile(path, copyTo);

      assert.deepEqual(log.errors, []);
      assertSameOrigin(log, server.base);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "the dashboard shows the rejected rate and total of a producer sending only bad events (400 no_events_accepted), on the memory store and on Redis",
  async (browser) => {
    const fixture = await withRedis();
    const stores: [string, ((now: () => number) => Store) | undefined][] = [["memory", undefined]];
    if (fixture) {
      stores.push(["redis", (now) => new RedisStore(restClient(fixture), { now })]);
    }
    try {
      for (const [kind, store] of stores) {
        const server = await startServer({ store, webhooks: false });
        try {
          const page = await newPage(browser);
          const log = watch(page);
          await installClock(page);
          await page.goto(`${server.base}/`);
          const rejected = page.locator('[data-rate="orders/rejected"]');
          const totals = '[data-stream="orders"] .totals';
          await textMatching(page, totals, /\b0 rejected/);
          for (let i = 0; i < 3; i++) {
            const res = await fetch(`${server.base}/v1/streams/orders/events`, {
              method: "POST",
              headers: { "Content-Type": "application/json" },
              body: JSON.stringify([
                { country: "DE", amount: "n/a" },
                { country: "FR" },
              ]),
            });
            assert.equal(res.status, 400, kind);
            assert.equal((await res.json()).error.code, "no_events_accepted", kind);
          }
          const shown = await untilClocked(
            page,
            server,
            `${kind}: the rejected rate`,
            async () => [await rejected.textContent(), await page.locator(totals).textContent()],
            ([rate, total]) =>
              /^[1-9][\d.,]*\/s$/.test(rate ?? "") && /\b6 rejected/.test(total ?? ""),
            10_000,
          );
          assert.match(shown[1] ?? "", /\b0 accepted/, kind);
          assert.equal(await page.locator('[data-rate="orders/accepted"]').textContent(), "0/s");
          assert.deepEqual(log.errors, [], kind);
          await page.close();
        } finally {
          await server.close();
        }
      }
    } finally {
      await fixture?.stop();
      await browser.close();
    }
  },
);

browserTest(
  "the dashboard shows a stored stream the server cannot compile as not servable, with why, reads nothing of it, and draws it once replaced",
  async (browser) => {
    // A schema pattern with lookahead, which an earlier release stored and this one refuses.
    const legacy = { schema: { properties: { plan: { type: "string", pattern: "^(?!x)" } } } };
    const server = await startServer({ registry: true, stored: { legacy } });
    try {
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      const card = page.locator('[data-stream="legacy"]');
      await card.waitFor();
      assert.equal(await card.locator(".live-state").textContent(), "not servable");
      assert.match(
        await card.locator(".problem").textContent() ?? "",
        /^Stream 'legacy' \(version 1\) is stored, but this release cannot compile its definition: schema: Cannot compile event schema: .*Replace it with PUT \/v1\/streams\/legacy$/,
      );
      assert.equal(await card.locator(".spark").count(), 0, "no rates to draw");
      // The served stream beside it is followed and drawn as ever, through more than one read.
      await page.locator('[data-live="orders"].ok').waitFor();
      await server.send([{ country: "DE", amount: 20 }]);
      await textMatching(page, '[data-stream="orders"] .totals', /^totals: 1 accepted/);
      assert.deepEqual(
        log.requests.map((request) => new URL(request.url()).pathname)
          .filter((path) => path.startsWith("/v1/streams/legacy")),
        [],
        "no read or subscription of a stream that answers 409",
      );
      assert.deepEqual(log.errors, []);

      // Replaced with a definition that compiles: drawn as a served stream at the next read.
      const replaced = await fetch(`${server.base}/v1/streams/legacy`, {
        method: "PUT",
        headers: { "Content-Type": "application/json", "If-Match": '"1"' },
        body: JSON.stringify({
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        }),
      });
      assert.equal(replaced.status, 200, await replaced.text());
      await card.locator(".spark").waitFor();
      assert.equal(await card.locator(".problem").count(), 0);
      await page.locator('[data-chart="legacy/n"]').waitFor();
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "the webhooks panel shows when a waiting delivery was first tried and that its attempt was interrupted, from the deliveries' firstAttemptAt and interruptions",
  async (browser) => {
    const server = await startServer({ holding: true });
    try {
      // The alert fires; its delivery to "archive" is held unanswered, then cut off by a stop.
      await server.send(Array.from({ length: 6 }, () => ({ country: "DE", amount: 20 })));
      await server.held;
      await server.stopWebhooks();
      const endpoints = await (await fetch(`${server.base}/v1/webhooks`)).json();
      const archive = endpoints.webhooks.find((endpoint: { description: string }) =>
        endpoint.description === "archive"
      );
      const listed = await (await fetch(`${server.base}/v1/webhooks/${archive.id}/deliveries`))
        .json();
      assert.equal(listed.deliveries.length, 1);
      const [delivery] = listed.deliveries;
      assert.deepEqual([delivery.status, delivery.interruptions], ["pending", 1]);
      assert.equal(delivery.attemptLog[0].outcome, "interrupted");
      assert.ok(delivery.firstAttemptAt);

      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      const row = page.locator(`[data-webhook="${archive.id}"]`);
      await row.waitFor();
      const firstTried = await page.evaluate(
        `new Date(${
          JSON.stringify(delivery.firstAttemptAt)
        }).toLocaleTimeString([], { hour12: false })`,
      ) as string;
      const pending = row.locator("td").nth(3);
      await until(
        "the pending cell's notes",
        async () => await pending.locator(".note").allTextContents(),
        (notes) => notes.length === 2,
      );
      assert.deepEqual(await pending.locator(".note").allTextContents(), [
        `first tried ${firstTried}`,
        "1 interrupted",
      ]);
      assert.match(await pending.textContent() ?? "", /^1first tried/);
      // Its last error is the receiver's (none): an interruption is not one.
      assert.equal(await row.locator("td").nth(2).textContent(), "—");
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "a stream card shows a watermark older than a day with its date, not a time that reads as today's",
  async (browser) => {
    // The server's clock two days behind the browser's: the stream last moved two days ago.
    const server = await startServer({ lagMs: 2 * 86_400_000 });
    try {
      await server.send([{ country: "DE", amount: 1 }]);
      const { streams } = await (await fetch(`${server.base}/v1/streams`)).json();
      const watermark: string = streams[0].stats.watermark;
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      const totals = await textMatching(page, '[data-stream="orders"] .totals', /watermark/);
      const [withDate, timeAlone] = await page.evaluate(
        `[new Date(${JSON.stringify(watermark)}).toLocaleString([], { hour12: false }),
          new Date(${JSON.stringify(watermark)}).toLocaleTimeString([], { hour12: false })]`,
      ) as string[];
      // Before: "watermark 17:52:22", two days old and read as today's.
      assert.ok(totals.endsWith(`watermark ${withDate}`), `${totals} (${timeAlone})`);
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "the webhooks panel shows a last error older than a day with its date",
  async (browser) => {
    // The server's clock two days behind the browser's: its deliveries were tried two days ago.
    const server = await startServer({ lagMs: 2 * 86_400_000 });
    try {
      await server.send(Array.from({ length: 6 }, () => ({ country: "DE", amount: 20 })));
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      const row = page.locator("[data-webhook]", { hasText: "HTTP 500" });
      await row.waitFor({ timeout: 20_000 });
      const shown = await row.locator("td").nth(2).textContent() ?? "";
      // The failing endpoint's attempts, read after the page did (retries only add to them).
      const endpoints = await (await fetch(`${server.base}/v1/webhooks`)).json();
      const pager = endpoints.webhooks.find((endpoint: { description: string }) =>
        endpoint.description === "pager"
      );
      const listed = await (await fetch(`${server.base}/v1/webhooks/${pager.id}/deliveries`))
        .json();
      const failedAt: string[] = listed.deliveries.flatMap((delivery: {
        attemptLog: Array<{ at: string; status: number }>;
      }) => delivery.attemptLog.filter((attempt) => attempt.status === 500))
        .map((attempt: { at: string }) => attempt.at);
      assert.ok(failedAt.length > 0, JSON.stringify(listed));
      const withDates = await page.evaluate(
        `${
          JSON.stringify(failedAt)
        }.map((at) => new Date(at).toLocaleString([], { hour12: false }))`,
      ) as string[];
      assert.ok(
        withDates.some((at) => shown === `${at} HTTP 500`),
        `${JSON.stringify(shown)} is one of ${JSON.stringify(withDates)}, with its date`,
      );
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "the key form fits a 320 px phone (WCAG's reflow width), before and after a key is refused: its field within the form, the page not scrolling sideways, and axe finds nothing serious",
  async (browser) => {
    const server = await startServer({ auth: true });
    try {
      const page = await browser.newPage({ viewport: { width: 320, height: 640 } });
      const log = watch(page);
      await page.goto(`${server.base}/`);
      const input = page.locator('input[name="key"]');
      await input.waitFor();
      const fits = () =>
        page.evaluate(`(() => {
          const form = document.getElementById("key-form").getBoundingClientRect();
          const field = document.querySelector('#key-form input[name="key"]').getBoundingClientRect();
          return {
            scrollWidth: document.documentElement.scrollWidth,
            clientWidth: document.documentElement.clientWidth,
            form: [form.left, form.right],
            field: [field.left, field.right],
          };
        })()`) as Promise<
          { scrollWidth: number; clientWidth: number; form: number[]; field: number[] }
        >;
      for (const when of ["asked", "refused"]) {
        if (when === "refused") {
          await input.fill("not-a-key-of-this-server");
          await input.press("Enter");
          await textMatching(page, "#key-message", /Key refused/);
        }
        const shown = await fits();
        const detail = `${when}: ${JSON.stringify(shown)}`;
        // Before, the field kept its 320 px (328 with its border) and pushed the page 25 px wide.
        assert.ok(shown.scrollWidth <= shown.clientWidth, detail);
        assert.ok(shown.field[0] >= shown.form[0] && shown.field[1] <= shown.form[1], detail);
        const violations = await axeViolations(page);
        assert.deepEqual(violations, [], describeViolations(violations));
      }
      // The refused key's 401 is the only thing the console logged.
      assert.deepEqual(log.errors.filter((error) => !/401/.test(error)), []);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "a key given again while the stream list cannot be read starts the dashboard once: no poll or subscription doubled",
  async (browser) => {
    const server = await startServer({ auth: true });
    try {
      const page = await newPage(browser);
      const log = watch(page);
      let listDown = true;
      await page.route(/\/v1\/streams(\?[^/]*)?$/, async (route) => {
        if (listDown) await storeUnavailable(route, "Redis is unavailable: connection refused");
        else await route.continue();
      });
      const listReads = () =>
        log.requests.filter((request) => new URL(request.url()).pathname === "/v1/streams").length;
      await installClock(page);
      await page.goto(`${server.base}/`);
      const input = page.locator('input[name="key"]');
      await input.fill(KEYS.admin);
      await input.press("Enter");
      await until(
        "the first list read",
        () => Promise.resolve(listReads()),
        (reads) => reads === 1,
      );
      await textMatching(page, "#page-status", /Cannot read streams: .*retrying/);
      // The form is still there, and is used again before the first start tries again.
      await input.fill(KEYS.admin);
      await input.press("Enter");
      await until(
        "the second list read",
        () => Promise.resolve(listReads()),
        (reads) => reads === 2,
      );
      listDown = false;
      // The second start reads the list again 5 s after it failed.
      await untilClocked(
        page,
        server,
        "the third list read",
        () => Promise.resolve(listReads()),
        (reads) => reads >= 3,
        15_000,
        500,
      );
      await page.locator('[data-live="orders"].ok').waitFor();
      await page.locator("[data-webhook] .replay").first().waitFor();
      // Past the time when the first start would have tried again (5 s after it failed), and
      // before the webhooks' next read (10 s after the first).
      await runClock(page, server, 6_000);
      const paths = log.requests.map((request) => new URL(request.url()).pathname);
      assert.equal(paths.filter((path) => path === "/v1/webhooks").length, 1, "one webhooks read");
      assert.equal(
        paths.filter((path) => path === "/v1/streams/orders/subscribe").length,
        1,
        "one subscription",
      );
      assert.deepEqual(log.errors.filter((error) => !/503/.test(error)), []);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "on a server without webhooks the dashboard says so and never asks for their list: no 404, no console error",
  async (browser) => {
    const server = await startServer({ webhooks: false });
    try {
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      await page.locator("#webhooks-note", { hasText: "Webhooks are not enabled on this server." })
        .waitFor();
      await page.locator('[data-live="orders"].ok').waitFor();
      assert.deepEqual(
        log.requests.map((request) => new URL(request.url()).pathname)
          .filter((path) => path.startsWith("/v1/webhooks") || path === "/v1/key"),
        [],
        "open mode needs no GET /v1/key either",
      );
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "with keys the dashboard asks for one once, keeps it in sessionStorage and never puts it in a URL; a read key limited to streams shows those",
  async (browser) => {
    const signups = { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } };
    const server = await startServer({
      auth: true,
      config: { streams: { ...CONFIG.streams, signups } },
    });
    const created = await fetch(`${server.base}/v1/keys`, {
      method: "POST",
      headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
      body: JSON.stringify({ scopes: ["read"], streams: ["orders"] }),
    });
    assert.equal(created.status, 201);
    const limitedKey: string = (await created.json()).key;
    try {
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      const input = page.locator('input[name="key"]');
      await input.waitFor();
      // The key form is the page's one shown main landmark (screen readers jump to it).
      assert.deepEqual(
        await page.evaluate(
          `[...document.querySelectorAll("main")].filter((main) => !main.hidden)
            .map((main) => main.querySelector('input[name="key"]') !== null)`,
        ),
        [true],
      );
      // Nothing but the page, its files and readiness before a key is given.
      assert.deepEqual(
        log.requests.filter((request) => new URL(request.url()).pathname.startsWith("/v1/")),
        [],
      );

      await input.fill(KEYS.admin);
      await input.press("Enter");
      await page.locator('[data-live="orders"].ok').waitFor();
      await page.locator("[data-webhook] .replay").first().waitFor();
      assert.equal(
        await page.evaluate(() => sessionStorage.getItem("edgestream.key")),
        KEYS.admin,
      );

      // A reload keeps the key: no form this time.
      await page.reload();
      await page.locator('[data-live="orders"].ok').waitFor();
      assert.equal(await input.isVisible(), false);
      await server.send([{ country: "DE", amount: 5 }]);
      await textMatching(page, CURRENT, /DE\s*1/);
      await page.locator('[data-stream="signups"]').waitFor();

      // A read key limited to `orders`: the page shows that stream, live, and not the other
      // (GET /v1/streams answers it only its streams; it was 403 "this route names no stream").
      await page.locator("#forget-key").click();
      await input.waitFor();
      await input.fill(limitedKey);
      await input.press("Enter");
      await page.locator('[data-live="orders"].ok').waitFor();
      await page.locator("#webhooks-note", { hasText: "needs an admin key" }).waitFor();
      assert.equal(await page.locator('[data-stream="signups"]').count(), 0);
      assert.equal(await page.locator('[data-stream="orders"]').count(), 1);
      await server.send([{ country: "FR", amount: 5 }]);
      await textMatching(page, CURRENT, /FR\s*1/);

      // A read key sees everything but the webhooks, and no replay button.
      // The page's clock is a fake from here: the webhook list is not asked
      // for again, as its 403 cannot change while the page has this key.
      await page.clock.install();
      await page.locator("#forget-key").click();
      await input.waitFor();
      assert.equal(await page.evaluate(() => sessionStorage.getItem("edgestream.key")), null);
      await input.fill(KEYS.read);
      await input.press("Enter");
      await page.locator("#webhooks-note", { hasText: "needs an admin key" }).waitFor();
      assert.equal(await page.locator(".replay").count(), 0);
      const webhookReads = () =>
        log.requests.filter((request) => new URL(request.url()).pathname === "/v1/webhooks")
          .length;
      const readsBefore = webhookReads();
      // Every poll's timer comes due once (webhooks every 10 s, stats every 2 s).
      const statsRead = page.waitForRequest((request) =>
        new URL(request.url()).pathname === "/v1/streams"
      );
      await page.clock.fastForward(30_000);
      await statsRead;
      await page.waitForTimeout(500);
      assert.equal(webhookReads(), readsBefore);

      const apiRequests = log.requests.filter((request) =>
        new URL(request.url()).pathname.startsWith("/v1/")
      );
      assert.ok(apiRequests.length > 5);
      for (const request of log.requests) {
        for (const key of [KEYS.admin, KEYS.read, limitedKey]) {
          assert.ok(!request.url().includes(key), request.url());
        }
      }
      for (const request of apiRequests) {
        assert.match(request.headers()["authorization"] ?? "", /^Bearer /, request.url());
      }
      // Only the admin key asked for the webhook list: the read keys' pages learned from
      // GET /v1/key that they may not, so no 403 and no console error (Chromium logs every one).
      assert.deepEqual(
        [
          ...new Set(
            log.requests.filter((request) => new URL(request.url()).pathname === "/v1/webhooks")
              .map((request) => request.headers()["authorization"]),
          ),
        ],
        [`Bearer ${KEYS.admin}`],
      );
      assert.deepEqual(log.errors, []);
      assertSameOrigin(log, server.base);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "the dashboard follows the first 3 streams live and polls the others, lists the alerts of those followed only, and draws a lone window among the 12 up to it",
  async (browser) => {
    const names = ["a", "b", "c", "d"];
    const config = {
      streams: Object.fromEntries(names.map((name) => [name, {
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        alerts: [{ name: `${name}_any`, counter: "n", when: "value >= 1.0" }],
      }])),
    };
    const server = await startServer({ config });
    try {
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      for (const name of names.slice(0, 3)) {
        await page.locator(`[data-live="${name}"].ok`).waitFor();
      }
      await textMatching(page, '[data-live="d"]', /^polled/);
      // Polled by choice is shown muted, not in the red of a lost connection.
      const colours = await page.evaluate(
        `["d", "a"].map((name) =>
          getComputedStyle(document.querySelector('[data-live="' + name + '"]')).color)`,
      );
      assert.deepEqual(colours, ["rgb(100, 116, 139)", "rgb(21, 128, 61)"]);
      // No more streams than can be shown: no list to choose from.
      assert.equal(await page.locator("#stream-picker").isHidden(), true);
      const followed = new Set(
        log.requests.map((request) => new URL(request.url()).pathname)
          .filter((path) => path.endsWith("/subscribe")),
      );
      assert.deepEqual(
        [...followed].sort(),
        ["a", "b", "c"].map((name) => `/v1/streams/${name}/subscribe`),
      );
      // A counter with one window draws it among the 12 windows up to it, not across years.
      await server.send([{}], "a");
      await textMatching(page, '[data-current="a/n"]', /\b1$/);
      const span = await until(
        "stream a's chart to draw its window",
        async () =>
          JSON.parse(await page.locator('[data-chart="a/n"]').getAttribute("data-x-range") ?? "[]"),
        (range: number[]) => range.length === 2 && range[0] !== null,
      );
      assert.ok(span[1] - span[0] <= 13 * 60, `x axis spans ${span[1] - span[0]} s`);
      await textMatching(page, '[data-current="d/n"]', /^—$/);
      await server.send([{}, {}], "d");
      // Polled every 10 s.
      await until(
        "stream d's current window to show 2",
        async () => await page.locator('[data-current="d/n"]').textContent() ?? "",
        (text) => /\b2$/.test(text),
        15_000,
      );
      // Alerts come on the live subscriptions (README): a's is listed, and d's, fired as its
      // events were applied, is not, its stream being polled.
      await page.locator('[data-alert="a_any"]').waitFor();
      assert.equal(await page.locator('[data-alert="d_any"]').count(), 0);
      assert.equal(await page.locator("#alert-count").textContent(), "1");
      assert.deepEqual(log.errors, []);
      assertSameOrigin(log, server.base);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "the dashboard lists a session counter's newest sessions, and shows streams created and deleted after it loaded",
  async (browser) => {
    const config = {
      streams: {
        visits: {
          time: { field: "ts", lateness: "1h" },
          counters: {
            v: { window: { session: "30s" }, groupBy: ["user"], aggregate: "count" },
          },
        },
      },
    };
    const server = await startServer({ config, registry: true });
    try {
      const at = server.now() - 120_000;
      await server.send([
        { user: "ann", ts: at },
        { user: "ann", ts: at + 10_000 },
        { user: "bob", ts: at + 5_000 },
      ], "visits");
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      // The server ranks no groups of sessions (`?top` is refused): they are listed by start.
      await textMatching(page, '[data-counter="visits/v"] .window-range', /^newest 2 session/);
      const sessions = await page.locator('[data-current="visits/v"] li').allTextContents();
      assert.equal(sessions.length, 2, JSON.stringify(sessions));
      assert.match(sessions[0], /bob.*\b1$/);
      assert.match(sessions[1], /ann.*\b2$/);
      assert.equal(
        await page.locator('[data-counter="visits/v"] .counter-status').textContent(),
        "",
      );

      const put = await fetch(`${server.base}/v1/streams/latecomer`, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        }),
      });
      assert.equal(put.status, 201, await put.text());
      await server.send([{}, {}, {}], "latecomer");
      await page.locator('[data-stream="latecomer"]').waitFor();
      await textMatching(page, '[data-current="latecomer/n"]', /\b3$/);
      const deleted = await fetch(`${server.base}/v1/streams/latecomer`, { method: "DELETE" });
      assert.equal(deleted.status, 204);
      await page.locator('[data-stream="latecomer"]').waitFor({ state: "detached" });
      await page.locator('[data-stream="visits"]').waitFor();
      // Until the next read of the list (2 s) a panel of the deleted stream may read it: 404.
      assert.deepEqual(
        log.errors.filter((error) => !/status of 404 .*\/v1\/streams\/latecomer\//.test(error)),
        [],
      );
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "the dashboard tags the current window of a counter added after the stream had events as partial, and shades that window in its chart with a note",
  async (browser) => {
    const server = await startServer({ config: { streams: {} }, registry: true });
    const put = (counters: Record<string, unknown>) =>
      fetch(`${server.base}/v1/streams/grown`, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ counters }),
      }).then(async (res) => assert.ok(res.ok, await res.text()));
    try {
      const count = { window: { tumbling: "1m" }, aggregate: "count" };
      await put({ n: count });
      await server.send([{}, {}], "grown");
      await put({ n: count, added: count });
      await server.send([{}], "grown");
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      await textMatching(page, '[data-current="grown/added"]', /partial\s*1$/);
      await textMatching(page, '[data-current="grown/n"]', /\b3$/);
      assert.doesNotMatch(
        await page.locator('[data-current="grown/n"]').textContent() ?? "",
        /partial/,
      );
      // The chart of `added` shades its one window, partial; `n`'s shades none.
      const bandsOf = (key: string) =>
        page.evaluate(
          `document.querySelector('[data-chart="${key}"]').dataset.partialBands ?? null`,
        ) as Promise<string | null>;
      const bands = JSON.parse(
        await until(
          "the shaded window",
          () => bandsOf("grown/added"),
          (text) => text !== null && text !== "[]",
        ) ?? "",
      ) as Array<[number, number]>;
      assert.equal(bands.length, 1);
      assert.equal(await bandsOf("grown/n"), "[]");
      // The shading is drawn: a pixel inside the band, left of the window's point, is its colour.
      const [left, right] = bands[0];
      assert.ok(right - left > 6, JSON.stringify(bands));
      const pixel = await page.evaluate(`(() => {
        const canvas = document.querySelector('[data-chart="grown/added"] canvas');
        const data = canvas.getContext("2d").getImageData(${
        left + 3
      }, canvas.height / 2, 1, 1).data;
        return [...data];
      })()`) as number[];
      // (217, 119, 6) at alpha 0.16, to the rounding of a premultiplied canvas.
      assert.ok(
        [217, 119, 6].every((value, i) => Math.abs(pixel[i] - value) <= 4) &&
          Math.abs(pixel[3] - 41) <= 2,
        `pixel ${pixel}`,
      );
      assert.match(
        await page.locator('[data-counter="grown/added"] .partial-note').textContent() ?? "",
        /^Shaded: a partial window/,
      );
      assert.equal(
        await page.locator('[data-counter="grown/n"] .partial-note').isVisible(),
        false,
      );
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "the dashboard keeps its panels and subscriptions when instances list the same streams in another order",
  async (browser) => {
    const config = {
      streams: Object.fromEntries(["a", "b"].map((name) => [name, {
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      }])),
    };
    const server = await startServer({ config });
    try {
      const page = await newPage(browser);
      const log = watch(page);
      let reads = 0;
      // As behind a load balancer: every other read of the list comes in the other order.
      await page.route(/\/v1\/streams(\?[^/]*)?$/, async (route) => {
        const response = await route.fetch();
        const body = await response.json();
        reads += 1;
        if (reads % 2 === 0) body.streams.reverse();
        await route.fulfill({ response, json: body });
      });
      await page.goto(`${server.base}/`);
      await page.locator('[data-live="a"].ok').waitFor();
      await until("four reads of the stream list", () => Promise.resolve(reads), (n) => n >= 4);
      const subscribes = log.requests.filter((request) =>
        new URL(request.url()).pathname.endsWith("/subscribe")
      );
      assert.equal(subscribes.length, 2, subscribes.map((request) => request.url()).join("\n"));
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "the dashboard follows the pages of the stream list to draw every stream",
  async (browser) => {
    const config = {
      streams: Object.fromEntries(["a", "b", "c"].map((name) => [name, {
        counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
      }])),
    };
    const server = await startServer({ config });
    try {
      const page = await newPage(browser);
      const log = watch(page);
      let pages = 0;
      const asked = new Set<string | null>();
      // One stream a page: the list is whole only when its cursors are followed.
      await page.route(/\/v1\/streams(\?[^/]*)?$/, async (route) => {
        const url = new URL(route.request().url());
        asked.add(url.searchParams.get("limit"));
        url.searchParams.set("limit", "1");
        pages += 1;
        await route.continue({ url: url.toString() });
      });
      await page.goto(`${server.base}/`);
      await page.locator('[data-stream="c"]').waitFor();
      assert.deepEqual(await cardNames(page), ["a", "b", "c"]);
      assert.ok(pages >= 3, `${pages} pages`);
      // The page asks for 1,000 streams a page (README), the most the list gives.
      assert.deepEqual([...asked], ["1000"]);
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

/** `s000` … `s299`, listed by the server in reverse name order, each with one counter. */
const MANY = Array.from({ length: 300 }, (_, i) => `s${String(i).padStart(3, "0")}`);
const MANY_CONFIG = {
  streams: Object.fromEntries(
    [...MANY].reverse().map((name) => [name, {
      counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
    }]),
  ),
};

/** The stream a request reads the counters of, or null for any other request. */
function counterStream(request: Request): string | null {
  return new URL(request.url()).pathname.match(/^\/v1\/streams\/([^/]+)\/counters\//)?.[1] ??
    null;
}

/** The names of the stream cards on the page, in page order. */
async function cardNames(page: Page): Promise<string[]> {
  return await page.locator("article.stream").evaluateAll((cards) =>
    cards.map((card) => card.getAttribute("data-stream") ?? "")
  );
}

browserTest(
  "with 300 streams the dashboard draws the cards and counters of the first 6 by name, lists the rest to choose from, and reads the counters of those 6 only",
  async (browser) => {
    // The server's clock a minute behind the browser's: every current window looks over to the
    // page, which must not then read it every second.
    const server = await startServer({ config: MANY_CONFIG, lagMs: 60_000 });
    try {
      const page = await newPage(browser);
      const log = watch(page);
      await installClock(page);
      const started = Date.now();
      await page.goto(`${server.base}/`);
      await page.locator('[data-stream="s000"] .spark canvas').waitFor({ timeout: 60_000 });
      console.log(`300 streams: s000's card drawn ${Date.now() - started} ms after goto`);
      const first = MANY.slice(0, 6);

      // Counter reads in 10 s: those of the 6 shown streams only (the old page read all 300 every
      // 10 s: 641 reads), and a current window that looks over read after 1, 2, 4, 8 s, not every
      // second (60 reads and more): at most 6 reads a counter (its windows, read every 10 s, once
      // or twice; its current window after 0, 1, 3 and 7 s).
      const from = log.requests.length;
      await runClock(page, server, 10_000);
      const reads = log.requests.slice(from).map(counterStream).filter((name) => name !== null);
      console.log(`300 streams: ${reads.length} counter reads in 10 s`);
      assert.ok(reads.length <= 6 * 6, `${reads.length} counter reads in 10 s`);
      assert.deepEqual([...new Set(reads)].filter((name) => !first.includes(name)), []);

      assert.equal(await page.locator("article.stream").count(), 6);
      assert.deepEqual(await cardNames(page), first);
      assert.deepEqual(
        await page.locator("article.counter").evaluateAll((panels) =>
          panels.map((panel) => panel.getAttribute("data-counter"))
        ),
        first.map((name) => `${name}/n`),
      );
      // A sparkline per card and a chart per counter: no canvas for the other 294 streams.
      assert.ok(await page.locator("canvas").count() <= 12);
      await page.getByRole("group", { name: "Streams shown (at most 6)" }).waitFor();

      // The list: the 6 shown ticked, then the next ones by name, 100 rows, with their totals.
      const rows = page.locator("#stream-choices li");
      assert.equal(await rows.count(), 100);
      assert.equal(await rows.nth(6).getAttribute("data-choice"), "s006");
      await textMatching(page, "#stream-picker-note", /^6 of 300 streams shown\. .*200 more match/);
      const s000 = page.getByRole("checkbox", { name: /^s000 0 accepted$/ });
      assert.equal(await s000.isChecked(), true);
      // 6 are shown: the others cannot be ticked until one is unticked.
      assert.equal(await page.getByRole("checkbox", { name: /^s006 / }).isDisabled(), true);
      await server.send([{}, {}], "s150");
      await page.getByLabel("Filter by name").fill("s15");
      await page.locator('[data-choice="s159"]').waitFor();
      assert.equal(await rows.count(), 6 + 10);
      await textMatching(page, '[data-choice="s150"] .total', /^2 accepted$/);

      const everRead = new Set(log.requests.map(counterStream).filter((name) => name !== null));
      assert.deepEqual([...everRead].sort(), first);
      const subscribed = log.requests.map((request) => new URL(request.url()).pathname)
        .filter((path) => path.endsWith("/subscribe"));
      assert.deepEqual(
        [...new Set(subscribed)].sort(),
        first.slice(0, 3).map((name) => `/v1/streams/${name}/subscribe`),
      );
      assert.deepEqual(log.errors, []);
      assertSameOrigin(log, server.base);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "choosing another stream among 300 shows its panels and drops the old one's, and a reload keeps the choice",
  async (browser) => {
    const server = await startServer({ config: MANY_CONFIG });
    try {
      await server.send([{}, {}, {}], "s297");
      const page = await newPage(browser);
      const log = watch(page);
      await installClock(page);
      await page.goto(`${server.base}/`);
      const s000 = page.getByRole("checkbox", { name: /^s000 / });
      await s000.waitFor({ timeout: 15_000 });
      await page.locator('[data-live="s000"].ok').waitFor();
      await s000.uncheck();
      await page.locator('[data-stream="s000"]').waitFor({ state: "detached" });
      await page.locator('[data-counter="s000/n"]').waitFor({ state: "detached" });
      assert.deepEqual(await cardNames(page), MANY.slice(1, 6));
      await page.getByLabel("Filter by name").fill("s297");
      await page.getByRole("checkbox", { name: /^s297 3 accepted$/ }).check();
      await page.locator('[data-stream="s297"]').waitFor();
      // Its card shows the totals of the last read of the list at once, not 2 s later.
      assert.match(
        await page.locator('[data-stream="s297"] .totals').textContent() ?? "",
        /^totals: 3 accepted/,
      );
      // The list is built again around the ticked box: the keyboard stays on it.
      assert.equal(await page.evaluate("document.activeElement.value"), "s297");
      const chosen = [...MANY.slice(1, 6), "s297"];
      assert.deepEqual(await cardNames(page), chosen);
      await textMatching(page, '[data-current="s297/n"]', /\b3$/);
      assert.equal(
        await page.evaluate(() => location.hash),
        "#streams=s001,s002,s003,s004,s005,s297",
      );
      // s000 was followed live: now s001 to s003 are, and nothing reads s000 any more.
      await page.locator('[data-live="s003"].ok').waitFor();
      const from = log.requests.length;
      await runClock(page, server, 12_000, 500);
      const later = log.requests.slice(from).map((request) => new URL(request.url()).pathname);
      assert.deepEqual(later.filter((path) => path.startsWith("/v1/streams/s000/")), []);
      assert.ok(later.some((path) => path.startsWith("/v1/streams/s297/counters/n")));

      // A reload keeps the choice, and no card of s000 is built.
      const reloaded = log.requests.length;
      await page.reload();
      await page.locator('[data-live="s001"].ok').waitFor({ timeout: 15_000 });
      assert.deepEqual(await cardNames(page), chosen);
      assert.equal(await page.getByRole("checkbox", { name: /^s297 / }).isChecked(), true);
      assert.equal(await page.getByRole("checkbox", { name: /^s000 / }).isChecked(), false);
      await textMatching(page, '[data-current="s297/n"]', /\b3$/);
      // So does a copied link, in another tab.
      const other = await newPage(browser);
      await other.goto(`${server.base}/#streams=s297,s010`);
      await other.locator('[data-stream="s297"]').waitFor({ timeout: 15_000 });
      assert.deepEqual(await cardNames(other), ["s010", "s297"]);
      // A link pasted into an open page changes only the fragment: the page follows it.
      await other.evaluate(() => location.hash = "#streams=s011");
      await other.locator('[data-stream="s297"]').waitFor({ state: "detached" });
      assert.deepEqual(await cardNames(other), ["s011"]);
      await other.evaluate(() => location.hash = "#streams=");
      await textMatching(other, "#streams", /^No stream chosen/);
      assert.equal(await other.locator("article.counter").count(), 0);
      await other.close();
      const afterReload = log.requests.slice(reloaded).map((request) => new URL(request.url()));
      assert.deepEqual(
        afterReload.filter((url) => url.pathname.startsWith("/v1/streams/s000/")),
        [],
      );
      assert.deepEqual(log.errors, []);
      assertSameOrigin(log, server.base);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "with 300 streams an open page reads the shown streams every 2 s by their own requests and the whole list every 30 s, and when typing in the filter pauses",
  async (browser) => {
    const server = await startServer({ config: MANY_CONFIG });
    try {
      const page = await newPage(browser);
      const log = watch(page);
      await installClock(page);
      await page.goto(`${server.base}/`);
      await page.locator('[data-live="s000"].ok').waitFor({ timeout: 60_000 });
      const path = (request: Request) => new URL(request.url()).pathname;
      const from = log.requests.length;
      const from33 = await pageNow(page) + 33_000;
      await server.send([{}, {}], "s004");
      // The card of a polled stream takes its new totals from its own read, with a rate.
      await untilClocked(
        page,
        server,
        "s004's totals",
        async () => await page.locator('[data-stream="s004"] .totals').textContent() ?? "",
        (text) => /^totals: 2 accepted/.test(text),
      );
      // 10 s and more of the page's time since `from`, its polls' timers run by its clock.
      await runClock(page, server, 10_000, 500);
      const paths = log.requests.slice(from).map(path);
      // Each read of the list reads the stats of all 300 streams: at most one in these 10 s and
      // more (the old page read it every 2 s after a read ended: 5 and more).
      const listReads = paths.filter((p) => p === "/v1/streams").length;
      console.log(`300 streams: ${listReads} reads of the list in 10 s and more`);
      assert.ok(listReads <= 1, `${listReads} reads of the list`);
      // The 6 shown streams, each read by its own request (every 2 s: at least 3 in 10 s).
      const own = paths.filter((p) => /^\/v1\/streams\/s\d{3}$/.test(p));
      for (const name of MANY.slice(0, 6)) {
        const n = own.filter((p) => p === `/v1/streams/${name}`).length;
        assert.ok(n >= 3, `${name} read ${n} times`);
      }
      assert.deepEqual(own.filter((p) => !MANY.slice(0, 6).includes(p.slice(12))), []);
      assert.notEqual(await page.locator('[data-rate="s004/accepted"]').textContent(), "–");
      // The whole list is read again every 30 s (README): once in the 33 s after the page drew.
      await runClock(page, server, Math.max(0, from33 - await pageNow(page)), 500);
      const in33 = log.requests.slice(from).map(path).filter((p) => p === "/v1/streams").length;
      assert.equal(in33, 1, `${in33} reads of the list in 33 s`);

      // The filter reads the list once typing pauses: the totals it lists are fresh.
      await server.send([{}, {}, {}], "s150");
      const beforeFilter = log.requests.length;
      await page.getByLabel("Filter by name").fill("s15");
      await textMatching(page, '[data-choice="s150"] .total', /^3 accepted$/);
      assert.ok(log.requests.slice(beforeFilter).map(path).includes("/v1/streams"));
      // Typed a key at a time, the filter reads the list once typing pauses, not per keystroke.
      await page.waitForTimeout(1_000);
      const beforeTyping = log.requests.length;
      await page.getByLabel("Filter by name").pressSequentially("7", { delay: 100 });
      await page.getByLabel("Filter by name").pressSequentially("9", { delay: 100 });
      await page.getByLabel("Filter by name").press("Backspace", { delay: 100 });
      await page.waitForTimeout(1_200);
      const typedReads = log.requests.slice(beforeTyping).map(path).filter((p) =>
        p === "/v1/streams"
      );
      // One when the pause is kept; two when a slow machine stretches a keystroke past it.
      assert.ok(typedReads.length <= 2, `${typedReads.length} reads of the list for 3 keystrokes`);
      assert.deepEqual(log.errors, []);
      assertSameOrigin(log, server.base);
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "with more than 6 streams a shown stream deleted, found gone by its own read, goes from the page at once",
  async (browser) => {
    const config = {
      streams: Object.fromEntries(
        MANY.slice(0, 8).map((name) => [name, {
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        }]),
      ),
    };
    const server = await startServer({ config: { streams: {} }, registry: true });
    try {
      for (const [name, definition] of Object.entries(config.streams)) {
        const res = await fetch(`${server.base}/v1/streams/${name}`, {
          method: "PUT",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(definition),
        });
        assert.equal(res.status, 201, await res.text());
      }
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      await page.locator('[data-live="s000"].ok').waitFor({ timeout: 30_000 });
      assert.deepEqual(await cardNames(page), MANY.slice(0, 6));
      // s005 is read by its own request, not with the list.
      await until(
        "a read of s005 alone",
        () => Promise.resolve(log.requests.some((r) => r.url().endsWith("/v1/streams/s005"))),
        (read) => read,
      );
      const deleted = await fetch(`${server.base}/v1/streams/s005`, { method: "DELETE" });
      assert.equal(deleted.status, 204);
      // Its own read answers 404: the page reads the list again and shows the next stream.
      await until("s006's card", () => cardNames(page), (names) => names.includes("s006"));
      assert.deepEqual(await cardNames(page), [...MANY.slice(0, 5), "s006"]);
      assert.deepEqual(
        log.errors.filter((error) => !/status of 404 .*\/v1\/streams\/s005/.test(error)),
        [],
      );
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "with more than 6 streams one not servable is listed so, never read, and a shown stream that stops being servable, found so by its own read, is shown so at once",
  async (browser) => {
    const unservable = { schema: { properties: { plan: { type: "string", pattern: "^(?!x)" } } } };
    const server = await startServer({
      config: { streams: {} },
      registry: true,
      stored: { legacy: unservable },
    });
    try {
      for (const name of MANY.slice(0, 8)) {
        const res = await fetch(`${server.base}/v1/streams/${name}`, {
          method: "PUT",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify({
            counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
          }),
        });
        assert.equal(res.status, 201, await res.text());
      }
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      await page.locator('[data-live="s000"].ok').waitFor({ timeout: 30_000 });
      assert.deepEqual(await cardNames(page), ["legacy", ...MANY.slice(0, 5)]);
      assert.equal(
        await page.locator('[data-stream="legacy"] .live-state').textContent(),
        "not servable",
      );
      assert.match(
        await page.locator('[data-choice="legacy"] .total').textContent() ?? "",
        /^not servable$/,
      );
      // s004 is read by its own request, not with the list; legacy, which would answer 409, never.
      await until(
        "two reads of s004 alone",
        () =>
          Promise.resolve(log.requests.filter((r) => r.url().endsWith("/v1/streams/s004")).length),
        (reads) => reads >= 2,
      );
      // Stored again by a release this one cannot follow: no longer servable here.
      const record = (await server.definitions.get("s004"))!;
      const written = await server.definitions.write(
        "s004",
        { ...record, definition: unservable },
        record.version,
      );
      assert.equal(written.status, "written");
      await (server.streams as StreamRegistry).reload("s004");
      // Its own read answers 409 stream_not_servable: the page reads the list again at once (not
      // at its read every 30 s), which says so.
      await page.locator('[data-stream="s004"] .problem').waitFor({ timeout: 10_000 });
      assert.deepEqual(await cardNames(page), ["legacy", ...MANY.slice(0, 5)]);
      assert.deepEqual(
        log.requests.map((request) => new URL(request.url()).pathname)
          .filter((path) => path.startsWith("/v1/streams/legacy")),
        [],
      );
      assert.equal(await page.locator("#page-status").textContent(), "");
      assert.deepEqual(
        log.errors.filter((error) => !/status of 409 .*\/v1\/streams\/s004/.test(error)),
        [],
      );
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "on a 375 px wide phone, and with a 300-character group name at 1280 px, the page does not scroll sideways and the current window sits beside or below its chart, never over it",
  async (browser) => {
    const server = await startServer();
    try {
      await backfill(server);
      const long = "x".repeat(300);
      await server.send([{ country: long, amount: 1 }, { country: long, amount: 2 }]);
      for (const width of [375, 1280]) {
        const page = await browser.newPage({ viewport: { width, height: 667 } });
        await page.goto(`${server.base}/`);
        await page.locator(`${CHART_CANVAS}`).waitFor();
        await textMatching(page, CURRENT, /x{300}\s*2/);
        const layout = await page.evaluate(`(() => {
          const box = (selector) => document.querySelector(selector).getBoundingClientRect();
          const chart = box('[data-chart="orders/orders_per_minute"]');
          const current = box('[data-current="orders/orders_per_minute"]');
          const overlap = chart.left < current.right && current.left < chart.right &&
            chart.top < current.bottom && current.top < chart.bottom;
          return {
            scrollWidth: document.documentElement.scrollWidth,
            clientWidth: document.documentElement.clientWidth,
            chartWidth: Math.round(chart.width),
            overlap,
          };
        })()`) as {
          scrollWidth: number;
          clientWidth: number;
          chartWidth: number;
          overlap: boolean;
        };
        assert.ok(
          layout.scrollWidth <= layout.clientWidth,
          `at ${width} px the page is ${layout.scrollWidth} px wide: ${JSON.stringify(layout)}`,
        );
        assert.equal(layout.overlap, false, `at ${width} px: ${JSON.stringify(layout)}`);
        // The chart takes the card's width (less its padding), not a sliver beside the list.
        assert.ok(layout.chartWidth >= width / 2, `at ${width} px: ${JSON.stringify(layout)}`);
        await page.close();
      }
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "a session's value and partial tag in the current list stay whole beside its group and span, which wrap instead",
  async (browser) => {
    const server = await startServer({ registry: true });
    try {
      const visits = {
        time: { field: "ts", lateness: "1h" },
        counters: {
          spent: { window: { session: "30s" }, groupBy: ["user"], aggregate: { sum: "x" } },
        },
      };
      const define = async (definition: unknown, status: number) => {
        const put = await fetch(`${server.base}/v1/streams/visits`, {
          method: "PUT",
          headers: { "Content-Type": "application/json" },
          body: JSON.stringify(definition),
        });
        assert.equal(put.status, status, await put.text());
      };
      await define(visits, 201);
      const at = server.now() - 120_000;
      // Added after the stream's first event: its sessions up to the gap after that are partial.
      await server.send([{ user: "bob", ts: at + 40_000, x: 0 }], "visits");
      await define({
        ...visits,
        counters: {
          ...visits.counters,
          partly: { window: { session: "30s" }, groupBy: ["user"], aggregate: { sum: "x" } },
        },
      }, 200);
      await server.send([
        { user: "customer-0042", ts: at, x: 1_000_000 },
        { user: "customer-0042", ts: at + 20_000, x: 234_567 },
        { user: "bob", ts: at + 40_000, x: 144 },
      ], "visits");
      const page = await newPage(browser);
      await page.goto(`${server.base}/`);
      await textMatching(page, '[data-current="visits/spent"]', /1,234,567/);
      await textMatching(page, '[data-current="visits/partly"]', /1,234,567/);
      const tags = await page.evaluate(`[...document.querySelectorAll(
        '[data-current="visits/partly"] .partial')].map((tag) => ({
          text: tag.textContent,
          height: Math.round(tag.getBoundingClientRect().height),
        }))`) as { text: string; height: number }[];
      assert.equal(tags.length, 2, JSON.stringify(tags));
      for (const tag of tags) {
        assert.ok(tag.height > 0 && tag.height < 20, `a tag on one line: ${JSON.stringify(tags)}`);
      }
      const rows = await page.evaluate(`[...document.querySelectorAll(
        '[data-current="visits/spent"] li, [data-current="visits/partly"] li')].map((li) => {
        const value = li.querySelector(".value");
        return {
          text: li.textContent,
          value: value.textContent,
          // One line: a single box as tall as one line of its 18 px text.
          valueHeight: Math.round(value.getBoundingClientRect().height),
          valueWidth: Math.round(value.getBoundingClientRect().width),
          valueNeeds: Math.round(value.scrollWidth),
        };
      })`) as {
        text: string;
        value: string;
        valueHeight: number;
        valueWidth: number;
        valueNeeds: number;
      }[];
      const detail = JSON.stringify(rows);
      assert.deepEqual(
        rows.map((row) => row.value),
        ["144", "1,234,567", "144", "1,234,567"],
        detail,
      );
      for (const row of rows) {
        assert.ok(row.valueHeight > 0 && row.valueHeight < 30, `a value on one line: ${detail}`);
        assert.ok(row.valueWidth >= row.valueNeeds, `a value not cut: ${detail}`);
      }
      await page.close();
    } finally {
      await browser.close();
      await server.close();
    }
  },
);

browserTest(
  "a 300-character group and a right-to-left one show in a <bdi> on one line, cut with an ellipsis and whole in the title, beside a whole colour swatch, the page no wider than a 375 px viewport",
  async (browser) => {
    const server = await startServer();
    try {
      await backfill(server);
      const long = "x".repeat(300);
      const rtl = "שלום עולם";
      await server.send([
        { country: long, amount: 1 },
        { country: long, amount: 2 },
        { country: rtl, amount: 3 },
      ]);
      const page = await browser.newPage({ viewport: { width: 375, height: 667 } });
      await page.goto(`${server.base}/`);
      await textMatching(page, CURRENT, /x{300}\s*2/);
      const shown = await page.evaluate(`(() => {
        const rows = [...document.querySelectorAll('${CURRENT} li')].map((li) => {
          const name = li.querySelector(".group bdi");
          const value = li.querySelector(".value").getBoundingClientRect();
          const box = name?.getBoundingClientRect();
          return {
            text: li.querySelector(".group").textContent,
            bdi: name !== null,
            title: name?.title,
            height: Math.round(box?.height ?? 0),
            cut: name ? name.scrollWidth > name.clientWidth : false,
            ellipsis: name ? getComputedStyle(name).textOverflow : null,
            valueAfterName: box ? value.left >= box.right : false,
            swatchWidth: li.querySelector(".swatch").getBoundingClientRect().width,
          };
        });
        return {
          rows,
          scrollWidth: document.documentElement.scrollWidth,
          clientWidth: document.documentElement.clientWidth,
        };
      })()`) as {
        rows: {
          text: string;
          bdi: boolean;
          title: string;
          height: number;
          cut: boolean;
          ellipsis: string;
          valueAfterName: boolean;
          swatchWidth: number;
        }[];
        scrollWidth: number;
        clientWidth: number;
      };
      const detail = JSON.stringify(shown);
      assert.ok(shown.scrollWidth <= shown.clientWidth, detail);
      // Each row's colour stays a whole 10 px swatch beside a name cut short, never squeezed to a
      // sliver by it (a 300-character name left 1 px of it), so it can be matched to its line.
      for (const row of shown.rows) assert.equal(row.swatchWidth, 10, `whole swatch: ${detail}`);
      const longRow = shown.rows.find((row) => row.text === long);
      const rtlRow = shown.rows.find((row) => row.text === rtl);
      assert.ok(longRow && rtlRow, detail);
      for (const row of [longRow, rtlRow]) {
        assert.ok(row.bdi, detail);
        assert.equal(row.title, row.text, detail);
        assert.ok(row.valueAfterName, detail);
        assert.ok(row.height > 0 && row.height < 30, `one line: ${detail}`);
      }
      assert.ok(longRow.cut, detail);
      assert.equal(longRow.ellipsis, "ellipsis", detail);
      assert.equal(rtlRow.cut, false, detail);
      // Stream and counter names (ASCII by the config's rule) are isolated and clamped too.
      const headings = await page.locator('[data-counter="orders/orders_per_minute"] h3 bdi')
        .allTextContents();
      assert.deepEqual(headings, ["orders", "orders_per_minute"]);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "a stream and a counter named with the longest names the config takes (64 characters) keep a 375 px phone's page from scrolling sideways: the names are cut with an ellipsis, whole in their titles",
  async (browser) => {
    // Names of the most characters NAME takes, as a deployment may well use (an environment, a
    // region and a version in one): each wider than a phone.
    const stream = "checkout_events_production_eu_west_1_web_clients_version_0000002";
    const counter = "orders_per_minute_by_country_and_payment_method_and_device_types";
    assert.equal(stream.length, 64);
    assert.equal(counter.length, 64);
    const server = await startServer({
      config: {
        streams: {
          [stream]: {
            counters: {
              [counter]: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
            },
          },
        },
      },
    });
    try {
      await server.send([{ country: "DE" }], stream);
      const page = await browser.newPage({ viewport: { width: 375, height: 667 } });
      const log = watch(page);
      await page.goto(`${server.base}/`);
      await textMatching(page, `[data-current="${stream}/${counter}"]`, /DE\s*1/);
      const shown = await page.evaluate(`(() => ({
        scrollWidth: document.documentElement.scrollWidth,
        clientWidth: document.documentElement.clientWidth,
        names: [...document.querySelectorAll(".stream h3 bdi, .counter h3 bdi")].map((name) => ({
          text: name.textContent,
          title: name.title,
          cut: name.scrollWidth > name.clientWidth,
          right: Math.round(name.getBoundingClientRect().right),
        })),
        charts: [...document.querySelectorAll(".spark canvas, .chart canvas")]
          .map((canvas) => Math.round(canvas.getBoundingClientRect().right)),
      }))()`) as {
        scrollWidth: number;
        clientWidth: number;
        names: { text: string; title: string; cut: boolean; right: number }[];
        charts: number[];
      };
      const detail = JSON.stringify(shown);
      assert.ok(shown.scrollWidth <= shown.clientWidth, `no sideways scroll: ${detail}`);
      assert.deepEqual(shown.names.map((name) => name.text), [stream, stream, counter], detail);
      for (const name of shown.names) {
        assert.equal(name.title, name.text, detail);
        assert.ok(name.cut, `cut with an ellipsis: ${detail}`);
        assert.ok(name.right <= shown.clientWidth, detail);
      }
      assert.equal(shown.charts.length, 2, detail);
      for (const right of shown.charts) assert.ok(right <= shown.clientWidth, detail);
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "an alert of 64-character names on a 300-character group is listed on a 375 px phone with each name cut with an ellipsis, whole in its title, the list not scrolling sideways",
  async (browser) => {
    const stream = "checkout_events_production_eu_west_1_web_clients_version_0000002";
    const counter = "orders_per_minute_by_country_and_payment_method_and_device_types";
    const alert = "orders_per_minute_by_country_and_payment_method_above_the_normal";
    assert.equal(alert.length, 64);
    const group = "x".repeat(300);
    const server = await startServer({
      config: {
        streams: {
          [stream]: {
            counters: {
              [counter]: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
            },
            alerts: [{ name: alert, counter, when: "value >= 1.0" }],
          },
        },
      },
    });
    try {
      const page = await browser.newPage({ viewport: { width: 375, height: 667 } });
      const log = watch(page);
      await page.goto(`${server.base}/`);
      await page.locator(`[data-live="${stream}"].ok`).waitFor();
      await server.send([{ country: group }], stream);
      await page.locator(`[data-alert="${alert}"]`).waitFor();
      const shown = await page.evaluate(`(() => {
        const list = document.getElementById("alerts");
        // The value, the text after the group: within the list, seen without scrolling it.
        const value = document.createRange();
        value.selectNodeContents(list.querySelector("li.alert > span").lastChild);
        return {
          value: value.toString(),
          valueInside: value.getBoundingClientRect().right <= list.getBoundingClientRect().right,
          scrollWidth: list.scrollWidth,
          clientWidth: list.clientWidth,
          pageScrollWidth: document.documentElement.scrollWidth,
          pageClientWidth: document.documentElement.clientWidth,
          names: [...list.querySelectorAll("bdi")].map((name) => ({
            text: name.textContent,
            title: name.title,
            cut: name.scrollWidth > name.clientWidth,
          })),
        };
      })()`) as {
        value: string;
        valueInside: boolean;
        scrollWidth: number;
        clientWidth: number;
        pageScrollWidth: number;
        pageClientWidth: number;
        names: { text: string; title: string; cut: boolean }[];
      };
      const detail = JSON.stringify(shown);
      assert.ok(shown.pageScrollWidth <= shown.pageClientWidth, `the page: ${detail}`);
      assert.ok(shown.scrollWidth <= shown.clientWidth, `the list: ${detail}`);
      assert.equal(shown.value, " = 1", detail);
      assert.ok(shown.valueInside, `the value in sight: ${detail}`);
      assert.deepEqual(shown.names.map((name) => name.text), [alert, stream, counter, group]);
      for (const name of shown.names) {
        assert.equal(name.title, name.text, detail);
        assert.ok(name.cut, `cut with an ellipsis: ${detail}`);
      }
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "a counter whose windows cannot be read holds no blank chart's height, its status saying why, while the others draw theirs",
  async (browser) => {
    const server = await startServer();
    try {
      await backfill(server);
      const page = await newPage(browser);
      await page.route(
        (url) => url.pathname === "/v1/streams/orders/counters/orders_per_minute",
        (route) => storeUnavailable(route, "Redis down"),
      );
      await page.goto(`${server.base}/`);
      await textMatching(
        page,
        '[data-counter="orders/orders_per_minute"] .counter-status',
        /Cannot read windows/,
      );
      await page.locator('[data-chart="orders/revenue_per_minute"] canvas').waitFor();
      const heights = await page.evaluate(`["orders_per_minute", "revenue_per_minute"].map((name) =>
        document.querySelector('[data-chart="orders/' + name + '"]').getBoundingClientRect().height)`);
      const [unread, drawn] = heights as number[];
      assert.ok(unread < 10, JSON.stringify(heights));
      assert.ok(drawn >= 220, JSON.stringify(heights));
      await page.close();
    } finally {
      await server.close();
    }
  },
);

/**
 * Runs the clocks (see {@linkcode runClock}) until the stale note matches `pattern`, or is hidden
 * when `pattern` is null: readiness, which sets it, is read every 5 s. Returns its text.
 */
function staleNoteClocked(
  page: Page,
  server: DashboardServer,
  pattern: RegExp | null,
): Promise<string> {
  const note = page.locator("#stale-note");
  return untilClocked(
    page,
    server,
    pattern ? `the stale note to match ${pattern}` : "the stale note to go",
    async () => await note.isVisible() ? await note.textContent() ?? "" : null,
    (text) => pattern ? text !== null && pattern.test(text) : text === null,
    15_000,
    500,
  ).then((text) => text ?? "");
}

browserTest(
  "while the store is down the values shown are dimmed and said to be stale, and fresh again once it answers",
  async (browser) => {
    let down = false;
    const server = await startServer({ storeDown: () => down });
    try {
      await backfill(server);
      await server.send([{ country: "DE", amount: 1 }, { country: "DE", amount: 2 }]);
      const page = await newPage(browser);
      await installClock(page);
      await page.goto(`${server.base}/`);
      await textMatching(page, CURRENT, /DE\s*2/);
      const opacity = () =>
        page.evaluate(`Number(getComputedStyle(document.querySelector('${CURRENT}')).opacity)`);
      assert.equal(await opacity(), 1);
      assert.equal(await page.locator("#stale-note").isVisible(), false);
      down = true;
      // Readiness is read every 5 s.
      await staleNoteClocked(page, server, /store is unavailable.*may be stale/);
      assert.ok((await opacity() as number) < 1);
      // The values stay readable, as the last ones read.
      await textMatching(page, CURRENT, /DE\s*2/);
      down = false;
      await staleNoteClocked(page, server, null);
      assert.equal(await opacity(), 1);
    } finally {
      down = false;
      await server.close();
    }
  },
);

/** WCAG 2 contrast ratio of two `rgb(r, g, b)` colours as computed styles give them. */
function contrast(a: string, b: string): number {
  const luminance = (rgb: string) => {
    const [r, g, bl] = (rgb.match(/\d+(\.\d+)?/g) ?? []).slice(0, 3).map((c) => {
      const s = Number(c) / 255;
      return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * bl;
  };
  const [hi, lo] = [luminance(a), luminance(b)].sort((x, y) => y - x);
  return (hi + 0.05) / (lo + 0.05);
}

browserTest(
  "the store badge's text (12 px) keeps WCAG AA contrast, 4.5:1, on its green 'ready' background",
  async (browser) => {
    const server = await startServer();
    try {
      const page = await newPage(browser);
      await page.goto(`${server.base}/`);
      await page.locator("#store-status.ok").waitFor();
      const [color, background] = await page.evaluate(`(() => {
        const style = getComputedStyle(document.getElementById("store-status"));
        return [style.color, style.backgroundColor];
      })()`) as [string, string];
      const ratio = contrast(color, background);
      assert.ok(ratio >= 4.5, `${color} on ${background} is ${ratio.toFixed(2)}:1`);
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "with no stream at all the Streams panel says how to make one rather than staying blank",
  async (browser) => {
    const server = await startServer({ config: { streams: {} }, registry: true });
    try {
      const page = await newPage(browser);
      await page.goto(`${server.base}/`);
      await page.locator("#store-status.ok").waitFor();
      await textMatching(page, "#streams", /No streams yet.*PUT \/v1\/streams\/\{stream\}/);
    } finally {
      await server.close();
    }
  },
);

for (
  const [scopes, told] of [
    [["read"], /^None of the streams this key may read exists yet: checkout, refunds\.$/],
    // An admin key limited to streams may create those (`PUT /v1/streams/{stream}`).
    [
      ["admin"],
      /^None of the streams this key may read exists yet: checkout, refunds\. Create one with PUT \/v1\/streams\/\{stream\}\.$/,
    ],
  ] as const
) {
  browserTest(
    `a ${
      scopes[0]
    } key limited to streams none of which exists yet is told so, naming them, not that the server has no stream, and to create one only if it may`,
    async (browser) => {
      const server = await startServer({ auth: true });
      const created = await fetch(`${server.base}/v1/keys`, {
        method: "POST",
        headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
        body: JSON.stringify({ scopes, streams: ["checkout", "refunds"] }),
      });
      assert.equal(created.status, 201);
      const key: string = (await created.json()).key;
      try {
        const page = await newPage(browser);
        await page.goto(`${server.base}/`);
        const input = page.locator('input[name="key"]');
        await input.fill(key);
        await input.press("Enter");
        // The server has a stream (orders), which this key may not read: before, the panel said
        // "No streams yet: add one to the config file, or create one with PUT …", which is not so,
        // and a read key cannot create one.
        await textMatching(page, "#streams", told);
      } finally {
        await server.close();
      }
    },
  );
}

/**
 * The dashboard with data, an alert fired and webhook health shown, in `scheme`: what axe-core
 * finds serious or critical, and the computed colours of its text against what lies behind it.
 */
async function dashboardIn(
  browser: Browser,
  server: DashboardServer,
  scheme: "light" | "dark",
  options: { clock?: boolean; unwaited?: (url: URL) => boolean } = {},
): Promise<Page> {
  const page = await browser.newPage({
    viewport: { width: 1280, height: 900 },
    colorScheme: scheme,
  });
  if (options.clock) await installClock(page, { unwaited: options.unwaited });
  await page.goto(`${server.base}/`);
  await page.locator('[data-live="orders"].ok').waitFor();
  await page.locator("[data-webhook] .replay").nth(1).waitFor();
  await page.locator(CHART_CANVAS).waitFor();
  await page.locator("#store-status.ok").waitFor();
  await server.send(Array.from({ length: 6 }, () => ({ country: "DE", amount: 20 })));
  await page.locator('[data-alert="busy"]').waitFor();
  await textMatching(page, CURRENT, /DE\s*6/);
  return page;
}

for (const scheme of ["light", "dark"] as const) {
  browserTest(
    `the dashboard in a ${scheme} colour scheme has no serious or critical axe-core violation (contrast, names)`,
    async (browser) => {
      const server = await startServer();
      try {
        await backfill(server);
        const page = await dashboardIn(browser, server, scheme);
        const violations = await axeViolations(page);
        assert.deepEqual(violations.map((v) => v.id), [], describeViolations(violations));
      } finally {
        await server.close();
      }
    },
  );
}

/**
 * The webhooks table as laid out: each column name and whether it takes one line (a name broken
 * over two has two boxes), the same for the time each last error starts with, the page's scroll
 * and client widths, and the table's parent (the region it scrolls in).
 */
function webhooksLayout(page: Page): Promise<{
  heads: [string, boolean][];
  times: [string, boolean][];
  page: [number, number];
  region: {
    width: number;
    scrollWidth: number;
    overflowX: string;
    role: string | null;
    name: string | null;
    tabIndex: number;
  };
}> {
  return page.evaluate(`(() => {
    const heads = [...document.querySelectorAll(".webhooks th")].map((th) => {
      const range = document.createRange();
      range.selectNodeContents(th);
      return [th.textContent, range.getClientRects().length === 1];
    });
    // The time each last error starts with: one box when on one line ("09:00:0" over "5" has two).
    const times = [...document.querySelectorAll(".webhooks .error-text")]
      .filter((cell) => cell.textContent !== "—")
      .map((cell) => {
        const text = cell.firstChild;
        const range = document.createRange();
        range.setStart(text, 0);
        range.setEnd(text, text.textContent.indexOf(" "));
        return [range.toString(), range.getClientRects().length === 1];
      });
    const region = document.querySelector(".webhooks table").parentElement;
    return {
      heads,
      times,
      page: [document.documentElement.scrollWidth, document.documentElement.clientWidth],
      region: {
        width: region.clientWidth,
        scrollWidth: region.scrollWidth,
        overflowX: getComputedStyle(region).overflowX,
        role: region.getAttribute("role"),
        name: region.getAttribute("aria-label"),
        tabIndex: region.tabIndex,
      },
    };
  })()`);
}

browserTest(
  "the webhooks table's column names and last errors' times stay whole from a 320 px phone to 1280 px, with a failing endpoint's notes beside them; on a phone the table scrolls in a named, focusable region, never the page, and axe finds nothing serious there",
  async (browser) => {
    const server = await startServer();
    try {
      await backfill(server);
      const page = await dashboardIn(browser, server, "light");
      await page.locator("[data-webhook]", { hasText: "HTTP 500" }).waitFor({ timeout: 20_000 });
      await page.locator(".webhooks .note", { hasText: "first tried" }).waitFor();
      for (const width of [1280, 1024, 700, 375, 320]) {
        await page.setViewportSize({ width, height: 900 });
        // The charts follow the new width a frame or so later: until then the page may be wider.
        const shown = await until(
          `the page no wider than ${width} px`,
          () => webhooksLayout(page),
          (seen) => seen.page[0] <= seen.page[1],
        );
        const detail = `at ${width} px: ${JSON.stringify(shown)}`;
        assert.ok(shown.heads.length >= 5, detail);
        const broken = shown.heads.filter(([, whole]) => !whole).map(([name]) => name);
        assert.deepEqual(broken, [], detail);
        assert.ok(shown.times.length >= 1, detail);
        assert.ok(shown.times.every(([, whole]) => whole), `a time broken ${detail}`);
        if (shown.region.scrollWidth > shown.region.width) {
          // Wider than its panel: it scrolls there, and a keyboard can scroll it.
          assert.equal(shown.region.overflowX, "auto", detail);
          assert.equal(shown.region.role, "region", detail);
          assert.equal(shown.region.name, "Webhook endpoints", detail);
          assert.equal(shown.region.tabIndex, 0, detail);
        }
        if (width === 320) {
          // A phone this narrow cannot fit every whole column: the table does scroll in its region.
          assert.ok(shown.region.scrollWidth > shown.region.width, detail);
          const violations = await axeViolations(page);
          assert.deepEqual(violations.map((v) => v.id), [], describeViolations(violations));
        }
      }
    } finally {
      await server.close();
    }
  },
);

/** What holds the focus after a redraw of the webhooks table, and its region. */
interface Redrawn {
  sameRegion: boolean;
  scrollLeft: number;
  /** "region", the focused element's class, or its tag when it has none. */
  focus: string;
  /** The `data-webhook` of the focused element's row. */
  row: string | null;
  /** Whether the focused element was drawn after {@linkcode markDrawn}. */
  newControl: boolean;
  /** The focused element's `aria-disabled`. */
  busy: string | null;
}

/** Marks the webhooks table, its region and the focused element as drawn now. */
function markDrawn(page: Page): Promise<unknown> {
  return page.evaluate(`(() => {
    const region = document.querySelector(".webhooks [role=region]");
    region.drawnBefore = true;
    region.querySelector("table").drawnBefore = true;
    document.activeElement.drawnBefore = true;
  })()`);
}

/**
 * Waits for the webhooks table's next redraw after {@linkcode markDrawn}; answers what it kept.
 * With `server`, runs the clocks of the page (see {@linkcode installClock}) and the server
 * forward until then instead of waiting in real time.
 */
function nextRedraw(page: Page, server?: DashboardServer): Promise<Redrawn> {
  const what = "the webhooks table drawn again";
  const read = () =>
    page.evaluate(`(() => {
        const region = document.querySelector(".webhooks [role=region]");
        const active = document.activeElement;
        return {
          redrawn: region !== null && !region.querySelector("table").drawnBefore,
          sameRegion: region?.drawnBefore === true,
          scrollLeft: region?.scrollLeft ?? 0,
          focus: active === region ? "region" : active.className || active.tagName,
          row: active.closest("[data-webhook]")?.getAttribute("data-webhook") ?? null,
          newControl: !active.drawnBefore,
          busy: active.getAttribute("aria-disabled"),
        };
      })()`) as Promise<Redrawn & { redrawn: boolean }>;
  const redrawn = (seen: { redrawn: boolean }) => seen.redrawn;
  return server
    ? untilClocked(page, server, what, read, redrawn, 15_000, 1_000)
    : until(what, read, redrawn, 15_000);
}

browserTest(
  "the webhooks table's redraws every 10 s keep its region's sideways scroll and focus on a phone, and the keyboard's place on a row's replay button or period",
  async (browser) => {
    const server = await startServer();
    try {
      await backfill(server);
      const page = await dashboardIn(browser, server, "light", { clock: true });
      // The failing endpoint's error shows at the webhooks' next read (every 10 s).
      await untilClocked(
        page,
        server,
        "the failing endpoint's HTTP 500",
        () => page.locator("[data-webhook]", { hasText: "HTTP 500" }).count(),
        (count) => count > 0,
        20_000,
        1_000,
      );
      await page.setViewportSize({ width: 320, height: 900 });
      const region = page.locator(".webhooks [role=region]");
      await region.focus();
      await region.evaluate((element) => element.scrollLeft = 100);
      await markDrawn(page);
      const first = await nextRedraw(page, server);
      assert.deepEqual(
        [first.sameRegion, first.scrollLeft, first.focus],
        [true, 100, "region"],
        JSON.stringify(first),
      );
      // On a row's replay button: the same endpoint's new button has the focus after a redraw.
      const pager = page.locator("[data-webhook]", { hasText: "HTTP 500" });
      const id = await pager.getAttribute("data-webhook");
      await pager.locator(".replay").focus();
      await markDrawn(page);
      const second = await nextRedraw(page, server);
      assert.deepEqual(
        [second.focus, second.row, second.newControl],
        ["replay", id, true],
        JSON.stringify(second),
      );
      // And on its period.
      await pager.locator("select").focus();
      await markDrawn(page);
      const third = await nextRedraw(page, server);
      assert.deepEqual(
        [third.focus, third.row, third.newControl],
        ["SELECT", id, true],
        JSON.stringify(third),
      );
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "through the webhooks table's redraws a replay in flight stays busy (one POST, the focus on its button, its answer in the row drawn last), a period chosen while health is read stays chosen, a focused row that goes leaves the focus on the region, a failed list read keeps the last table, and a failed health read that may mend keeps the endpoint's last row",
  async (browser) => {
    const server = await startServer();
    try {
      await backfill(server);
      // The replays and the pager's health reads this test holds unanswered are not waited for
      // as the page's clock runs.
      const page = await dashboardIn(browser, server, "light", {
        clock: true,
        unwaited: (url) => /^\/v1\/webhooks\/[^/]+\/(replay|deliveries)$/.test(url.pathname),
      });
      const pager = page.locator("[data-webhook]", { hasText: "HTTP 500" });
      const billing = page.locator("[data-webhook]", { hasText: "billing" });
      /** Runs the clocks until `locator` is on the page (the webhooks are read every 10 s). */
      const shown = (locator: typeof pager) =>
        untilClocked(
          page,
          server,
          `${locator}`,
          () => locator.count(),
          (n) => n > 0,
          25_000,
          1_000,
        );
      await shown(pager);
      const pagerId = (await pager.getAttribute("data-webhook"))!;
      const billingId = (await billing.getAttribute("data-webhook"))!;

      // A replay held unanswered across a redraw.
      let replays = 0;
      const replayAsked = Promise.withResolvers<void>();
      const replayAnswer = Promise.withResolvers<void>();
      await page.route("**/v1/webhooks/*/replay", async (route) => {
        replays += 1;
        replayAsked.resolve();
        await replayAnswer.promise;
        await route.continue();
      });
      await pager.locator(".replay").focus();
      await page.keyboard.press("Enter");
      await replayAsked.promise;
      await markDrawn(page);
      const asked = await nextRedraw(page, server);
      assert.deepEqual(
        [asked.focus, asked.row, asked.newControl, asked.busy],
        ["replay", pagerId, true, "true"],
        JSON.stringify(asked),
      );
      assert.equal(await pager.locator(".replay-result").textContent(), "replaying…");
      await page.keyboard.press("Enter");
      await page.waitForTimeout(300);
      assert.equal(replays, 1, "a busy button asks nothing");
      replayAnswer.resolve();
      await pager.locator(".replay-result", { hasText: /^requeued \d+$/ }).waitFor();
      assert.equal(await pager.locator(".replay").getAttribute("aria-disabled"), "false");
      assert.equal(replays, 1);

      // A period chosen while a redraw waits for the pager's health.
      let holdDeliveries = true;
      let deliveriesHeld = false;
      const deliveriesAsked = Promise.withResolvers<void>();
      const deliveriesAnswer = Promise.withResolvers<void>();
      await page.route(
        (url) => url.pathname === `/v1/webhooks/${pagerId}/deliveries`,
        async (route) => {
          if (holdDeliveries) {
            holdDeliveries = false;
            deliveriesHeld = true;
            deliveriesAsked.resolve();
            await deliveriesAnswer.promise;
          }
          await route.continue();
        },
      );
      // Billing's health (its four reads) is in before the period is chosen.
      let billingReads = 0;
      const billingRead = Promise.withResolvers<void>();
      page.on("response", (response) => {
        if (new URL(response.url()).pathname !== `/v1/webhooks/${billingId}/deliveries`) return;
        if (!holdDeliveries && ++billingReads === 4) billingRead.resolve();
      });
      // At the webhooks' next read.
      await untilClocked(
        page,
        server,
        "the pager's health read",
        () => Promise.resolve(deliveriesHeld),
        (held) => held,
        15_000,
        1_000,
      );
      await deliveriesAsked.promise;
      await billingRead.promise;
      await markDrawn(page);
      await billing.locator("select").selectOption(String(7 * 86_400_000));
      deliveriesAnswer.resolve();
      await nextRedraw(page, server);
      assert.equal(await billing.locator("select").inputValue(), String(7 * 86_400_000));

      // The focused row's endpoint deleted: the focus stays in the region.
      await billing.locator("select").focus();
      const deleted = await fetch(`${server.base}/v1/webhooks/${billingId}`, { method: "DELETE" });
      assert.equal(deleted.status, 204, await deleted.text());
      await markDrawn(page);
      const gone = await nextRedraw(page, server);
      assert.deepEqual([gone.focus, gone.row], ["region", null], JSON.stringify(gone));
      assert.equal(await billing.count(), 0);

      // The list read fails (a 503, then the network): the table stays, focus and all, with a
      // note; then it is read.
      const failures: Array<[RegExp, (route: Route) => Promise<void>]> = [
        [
          /Redis is unavailable; showing the read of \d\d:\d\d:\d\d$/,
          (route) => storeUnavailable(route, "Redis is unavailable"),
        ],
        [
          /^Cannot read webhooks: .*; showing the read of \d\d:\d\d:\d\d$/,
          (route) => route.abort("connectionrefused"),
        ],
      ];
      for (const [note, fail] of failures) {
        await page.route("**/v1/webhooks", fail);
        await markDrawn(page);
        await shown(page.locator("#webhooks-note", { hasText: note }));
        const kept = await page.evaluate(`(() => {
          const region = document.querySelector(".webhooks [role=region]");
          return [region?.drawnBefore === true, region?.querySelector("table").drawnBefore === true,
            document.activeElement === region];
        })()`);
        assert.deepEqual(kept, [true, true, true], String(note));
        await page.unroute("**/v1/webhooks");
        await page.locator("#webhooks-note").evaluate((element) => element.textContent = "x");
      }
      await markDrawn(page);
      await nextRedraw(page, server);
      assert.equal(await page.locator("#webhooks-note").textContent(), "", "read again: no note");
      assert.equal(await pager.count(), 1);

      // One endpoint's health read fails: a 503 keeps its last health in its row, controls and
      // focus too, with a note; a failure that reading again cannot mend (a 404) does not; then
      // it is read again.
      const pagerDeliveries = (url: URL) => url.pathname === `/v1/webhooks/${pagerId}/deliveries`;
      const pagerRow = page.locator(`[data-webhook="${pagerId}"]`);
      await pagerRow.locator(".replay").focus();
      // The row as last read (its endpoint cell aside), to be drawn again as it was: read just
      // after a redraw, so the next read is the routed one.
      const cellsOf = async () => (await pagerRow.locator("td").allTextContents()).slice(1, 5);
      await markDrawn(page);
      await nextRedraw(page, server);
      const before = await cellsOf();
      await page.route(pagerDeliveries, (route) => storeUnavailable(route, "Redis is unavailable"));
      await shown(pagerRow.locator(".health-kept"));
      assert.match(
        (await pagerRow.locator(".health-kept").textContent())!,
        /^Cannot read deliveries: Redis is unavailable; showing the read of \d\d:\d\d:\d\d$/,
      );
      assert.equal(await pagerRow.locator("td").count(), 6);
      assert.deepEqual(await cellsOf(), before);
      assert.equal(
        await page.evaluate(
          `document.activeElement === document.querySelector('[data-webhook="${pagerId}"] .replay')`,
        ),
        true,
        "the replay button keeps the focus",
      );
      await page.unroute(pagerDeliveries);
      await page.route(pagerDeliveries, (route) =>
        route.fulfill({
          status: 404,
          contentType: "application/json",
          body: JSON.stringify({
            error: { code: "webhook_not_found", message: "No such webhook" },
          }),
        }));
      await shown(pagerRow.getByText("Cannot read deliveries: No such webhook", { exact: true }));
      assert.equal(await pagerRow.locator(".replay").count(), 0);
      // After a 404 no read is kept: a 503 then shows no older read either.
      await page.unroute(pagerDeliveries);
      await page.route(pagerDeliveries, (route) => storeUnavailable(route, "Redis is unavailable"));
      await shown(
        pagerRow.getByText("Cannot read deliveries: Redis is unavailable", { exact: true }),
      );
      assert.equal(await pagerRow.locator(".health-kept").count(), 0);
      await page.unroute(pagerDeliveries);
      await shown(pagerRow.locator(".replay"));
      assert.equal(await pagerRow.locator(".health-kept").count(), 0, "read again: no note");
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "a stream created while the page is scrolled to its end moves the webhooks no further than the panels above them grew: rebuilt, they hold their charts' height before their data",
  async (browser) => {
    const server = await startServer({ registry: true });
    try {
      await backfill(server);
      const page = await browser.newPage({ viewport: { width: 1280, height: 500 } });
      await page.goto(`${server.base}/`);
      await page.locator(CHART_CANVAS).waitFor();
      await page.locator("[data-webhook] .replay").nth(1).waitFor();
      /** Where the webhooks are in the viewport, and the height of the panels above them. */
      const layout = () =>
        page.evaluate(`(() => {
          const height = (id) => document.getElementById(id).closest(".panel").offsetHeight;
          return {
            webhooks: Math.round(document.getElementById("webhooks").getBoundingClientRect().top),
            above: height("streams") + height("counters"),
          };
        })()`) as Promise<{ webhooks: number; above: number }>;
      await page.evaluate(`window.scrollTo(0, document.documentElement.scrollHeight)`);
      const before = await atRest("the page at rest", layout);
      const put = await fetch(`${server.base}/v1/streams/latecomer`, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        }),
      });
      assert.equal(put.status, 201, await put.text());
      await server.send([{}, {}, {}], "latecomer");
      await page.locator('[data-chart="latecomer/n"] canvas').waitFor();
      await page.locator(CHART_CANVAS).waitFor();
      const after = await atRest("the page at rest again", layout);
      const grew = after.above - before.above;
      assert.ok(grew > 0, JSON.stringify({ before, after }));
      // Before, the panels lost their charts' height while rebuilt, the page got shorter than
      // where it was scrolled, and the webhooks went down by that too, out of sight.
      assert.ok(
        after.webhooks - before.webhooks <= grew + 2,
        JSON.stringify({ before, after, grew }),
      );
      await page.close();
    } finally {
      await server.close();
    }
  },
);

/** The page's background, the first chart line's legend marker and its swatch, as computed. */
function schemeColours(page: Page): Promise<{ page: string; marker: string; swatch: string }> {
  return page.evaluate(`(() => {
    const chart = document.querySelector('[data-counter="orders/orders_per_minute"]');
    const marker = chart.querySelectorAll(".u-legend .u-series .u-marker")[1];
    return {
      page: getComputedStyle(document.documentElement).backgroundColor,
      marker: getComputedStyle(marker).borderTopColor,
      swatch: getComputedStyle(document.querySelector('${CURRENT} .swatch.c0')).backgroundColor,
    };
  })()`);
}

browserTest(
  "the dashboard follows the system's dark colour scheme, charts included, and redraws when it changes",
  async (browser) => {
    const server = await startServer();
    try {
      await backfill(server);
      const page = await dashboardIn(browser, server, "dark");
      // dashboard.css's dark --bg and --c0 (a line and its swatch in the current window's list).
      assert.deepEqual(await schemeColours(page), {
        page: "rgb(2, 6, 23)",
        marker: "rgb(96, 165, 250)",
        swatch: "rgb(96, 165, 250)",
      });
      const pixels = await chartPixels(page);
      await page.emulateMedia({ colorScheme: "light" });
      await until(
        "the chart's lines to take the light colours",
        () => schemeColours(page),
        (colours) => colours.marker === "rgb(37, 99, 235)",
      );
      assert.deepEqual(await schemeColours(page), {
        page: "rgb(241, 245, 249)",
        marker: "rgb(37, 99, 235)",
        swatch: "rgb(37, 99, 235)",
      });
      assert.notEqual(await chartPixels(page), pixels);
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "a stream redefined with only a new description shows that description at the next read",
  async (browser) => {
    const server = await startServer({ config: { streams: {} }, registry: true });
    const put = async (description: string) => {
      const res = await fetch(`${server.base}/v1/streams/notes`, {
        method: "PUT",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({
          description,
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
        }),
      });
      assert.ok(res.ok, await res.text());
    };
    try {
      await put("Notes, first draft");
      const page = await newPage(browser);
      const log = watch(page);
      await page.goto(`${server.base}/`);
      await textMatching(page, '[data-stream="notes"] header', /Notes, first draft/);
      await put("Notes as published");
      // Before, the cards were rebuilt only when a stream's counters changed: the old description
      // stayed on the page until it was loaded again.
      await textMatching(page, '[data-stream="notes"] header', /Notes as published/);
      assert.deepEqual(log.errors, []);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "while the server cannot be reached the values are dimmed and the page says so, not that the store is down",
  async (browser) => {
    const server = await startServer();
    try {
      await backfill(server);
      await server.send([{ country: "DE", amount: 1 }, { country: "DE", amount: 2 }]);
      const page = await newPage(browser);
      await installClock(page);
      await page.goto(`${server.base}/`);
      await textMatching(page, CURRENT, /DE\s*2/);
      // The server stopped (a restart, a network cut): no request reaches it.
      await page.route(`${server.base}/**`, (route) => route.abort("connectionrefused"));
      const note = await staleNoteClocked(page, server, /may be stale/);
      // Before, the note blamed the store: "The store is unavailable: …", though the store may be
      // well and only the server out of reach.
      assert.match(note, /^The server cannot be reached: values shown are the last read before/);
      await textMatching(page, CURRENT, /DE\s*2/);
      await page.unroute(`${server.base}/**`);
      await staleNoteClocked(page, server, null);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

// Before, the note said "The store is unavailable" for either, though only this instance was
// stopping, or the store was never asked.
for (
  const { status, doing, error, note } of [
    {
      status: "shutting_down",
      doing: "shuts down",
      error: "The server is shutting down; another instance takes its traffic",
      note: /^This server is shutting down: values shown are the last read before/,
    },
    {
      status: "starting",
      doing: "starts",
      error: "The server is starting: its webhook endpoints are loading",
      note: /^This server is starting: values shown are the last read before/,
    },
  ]
) {
  browserTest(
    `while the server ${doing} (/readyz 503 ${status}) the page says so, not that the store is down`,
    async (browser) => {
      const server = await startServer();
      try {
        await backfill(server);
        await server.send([{ country: "DE", amount: 1 }]);
        const page = await newPage(browser);
        await installClock(page);
        await page.goto(`${server.base}/`);
        await textMatching(page, CURRENT, /DE\s*1/);
        await page.route(`${server.base}/readyz`, (route) =>
          route.fulfill({
            status: 503,
            contentType: "application/json",
            headers: { "Retry-After": "1" },
            body: JSON.stringify({ status, store: "memory", error, requestId: "r" }),
          }));
        assert.match(await staleNoteClocked(page, server, /may be stale/), note);
        await page.unroute(`${server.base}/readyz`);
        await staleNoteClocked(page, server, null);
        await page.close();
      } finally {
        await server.close();
      }
    },
  );
}

browserTest(
  "a /readyz answer that is not JSON (a proxy's HTML error page) shows its status in the store badge, not the JSON parser's message",
  async (browser) => {
    const server = await startServer();
    try {
      const page = await newPage(browser);
      await page.route(`${server.base}/readyz`, (route) =>
        route.fulfill({
          status: 502,
          contentType: "text/html",
          body: "<!doctype html><html><body><h1>502 Bad Gateway</h1></body></html>",
        }));
      await page.goto(`${server.base}/`);
      // Before: "store: unknown (Unexpected token '<', "<!doctype "... is not valid JSON)".
      const badge = await textMatching(page, "#store-status", /unknown/);
      assert.equal(
        badge,
        "store: unknown (/readyz answered 502 Bad Gateway, not the server's readiness JSON)",
      );
      assert.ok(await page.locator("#store-status.bad").count() === 1);
      // JSON that is no readiness answer (a proxy's own) reads the same, not "undefined".
      await page.unroute(`${server.base}/readyz`);
      await page.route(
        `${server.base}/readyz`,
        (route) => route.fulfill({ status: 200, contentType: "application/json", body: "[]" }),
      );
      assert.equal(
        await page.evaluate(`(async () => {
          const { readiness } = await import("/static/dashboard/api.js");
          return await readiness().then(() => "read", (error) => error.message);
        })()`),
        "/readyz answered 200 OK, not the server's readiness JSON",
      );
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "a key pasted with a character no header carries is refused in the form, kept nowhere, and the next key shows the dashboard",
  async (browser) => {
    const server = await startServer({ auth: true });
    try {
      const page = await newPage(browser);
      const asked: string[] = [];
      page.on("request", (request: Request) => asked.push(new URL(request.url()).pathname));
      await page.goto(`${server.base}/`);
      const input = page.locator('input[name="key"]');
      // A zero-width space after the key, as a copy from a chat may carry. Before, every read
      // failed in the browser ("Cannot read streams: Failed to execute 'fetch'…; retrying"),
      // again every 5 s with the key kept, as if the server could not be reached.
      await input.fill(`${KEYS.read}\u200b`);
      await input.press("Enter");
      await textMatching(
        page,
        "#key-message",
        new RegExp(
          `^Not an API key: keys are visible ASCII characters, and this one has U\\+200B at character ${
            KEYS.read.length + 1
          }$`,
        ),
      );
      assert.equal(await input.isVisible(), true);
      assert.equal(await page.evaluate(`sessionStorage.length`), 0);
      assert.equal(await page.locator("#page-status").textContent(), "");
      assert.deepEqual(asked.filter((path) => path.startsWith("/v1/")), []);
      await input.fill(KEYS.read);
      await input.press("Enter");
      await page.locator('[data-live="orders"].ok').waitFor();
      assert.equal(await input.isVisible(), false);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "a key revoked while the page is open is asked for again, and a new key shows the dashboard",
  async (browser) => {
    const server = await startServer({ auth: true });
    const admin = { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" };
    try {
      const created = await fetch(`${server.base}/v1/keys`, {
        method: "POST",
        headers: admin,
        body: JSON.stringify({ scopes: ["read"] }),
      });
      assert.equal(created.status, 201);
      const { id, key } = await created.json();
      const page = await newPage(browser);
      await page.goto(`${server.base}/`);
      const input = page.locator('input[name="key"]');
      await input.fill(key);
      await input.press("Enter");
      await page.locator('[data-live="orders"].ok').waitFor();
      const revoked = await fetch(`${server.base}/v1/keys/${id}`, {
        method: "DELETE",
        headers: admin,
      });
      assert.equal(revoked.status, 204);
      // Before, the page kept its last values, undimmed, and read with the refused key every 2 s
      // for good, the form gone: only a reload could take another key.
      await input.waitFor({ state: "visible" });
      assert.match(await page.locator("#key-message").textContent() ?? "", /^Key refused: /);
      assert.equal(await page.evaluate(`sessionStorage.length`), 0);
      await input.fill(KEYS.read);
      await input.press("Enter");
      await page.locator('[data-live="orders"].ok').waitFor();
      assert.equal(await input.isVisible(), false);
      await page.close();
    } finally {
      await server.close();
    }
  },
);

browserTest(
  "the Counters heading is named by its text alone: the groups-per-chart choice sits beside it, named, not inside it",
  async (browser) => {
    const server = await startServer();
    try {
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      await page.goto(`${server.base}/`);
      const choice = page.getByRole("combobox", { name: "groups per chart", exact: true });
      await choice.waitFor();
      assert.equal(
        await page.getByRole("heading", { level: 2, name: "Counters", exact: true }).count(),
        1,
      );
      assert.equal(await choice.evaluate((select) => select.closest("h1, h2, h3, h4")), null);
      // Still on the heading's line.
      const [heading, control] = await Promise.all([
        page.getByRole("heading", { name: "Counters", exact: true }).boundingBox(),
        choice.boundingBox(),
      ]);
      assert.ok(heading && control && control.x > heading.x + heading.width, "beside it");
      assert.ok(control.y < heading.y + heading.height && control.y + control.height > heading.y);
    } finally {
      await server.close();
    }
  },
);
