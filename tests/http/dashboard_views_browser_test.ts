/**
 * The dashboard's views (static/dashboard/*.js) one at a time in real headless Chromium, on a
 * page of their own: the modules are served from the repository's files at a made-up origin and
 * the page's `fetch` is a stub that holds each request until the test answers it, so what a view
 * does with an answer that comes late (after `stop()`, say) is seen without a server or a timer.
 */
import assert from "node:assert/strict";
import type { Browser, Page } from "playwright-core";
import { browserTest } from "../_chromium.ts";

const ORIGIN = "http://dashboard.test";
const STATIC_DIR = new URL("../../static/", import.meta.url);

const CONTENT_TYPES: Record<string, string> = {
  js: "text/javascript; charset=utf-8",
  css: "text/css; charset=utf-8",
};

/**
 * A page at {@linkcode ORIGIN} with uPlot loaded, in open mode (no key), whose `fetch` holds every
 * request in `globalThis.held` (`{url, answer(status, body)}`); `globalThis.asked(n)` resolves once
 * `n` requests were made. Console errors and uncaught errors go to `errors`.
 */
async function viewsPage(browser: Browser): Promise<{ page: Page; errors: string[] }> {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors: string[] = [];
  page.on("console", (message) => {
    if (message.type() === "error") errors.push(message.text());
  });
  page.on("pageerror", (error) => errors.push(`page error: ${error.message}`));
  await page.route(`${ORIGIN}/**`, async (route) => {
    const path = new URL(route.request().url()).pathname;
    if (path === "/") {
      return await route.fulfill({
        contentType: "text/html; charset=utf-8",
        body: `<!doctype html><html><head>
<meta name="edgestream-auth" content="none">
<script src="/static/vendor/uplot/uPlot.iife.min.js"></script>
</head><body><div id="view"></div><p id="note"></p></body></html>`,
      });
    }
    const type = CONTENT_TYPES[path.split(".").pop()!];
    if (!path.startsWith("/static/") || !type) return await route.abort();
    const file = new URL(path.slice("/static/".length), STATIC_DIR);
    await route.fulfill({ contentType: type, body: await Deno.readTextFile(file) });
  });
  await page.goto(`${ORIGIN}/`);
  await page.evaluate(`(() => {
    globalThis.held = [];
    const waiters = [];
    globalThis.asked = (count) => new Promise((resolve) => {
      waiters.push({ count, resolve });
      wake();
    });
    function wake() {
      for (const waiter of waiters) if (globalThis.held.length >= waiter.count) waiter.resolve();
    }
    globalThis.fetch = (url) => new Promise((resolve) => {
      globalThis.held.push({
        url: String(url),
        answer(status, body) {
          resolve(new Response(JSON.stringify(body), {
            status,
            headers: { "Content-Type": "application/json" },
          }));
        },
      });
      wake();
    });
    // Two frames: whatever a view put off to the next frame has been done.
    globalThis.frames2 = () => new Promise((resolve) =>
      requestAnimationFrame(() => requestAnimationFrame(resolve)));
  })()`);
  return { page, errors };
}

const ORDERS = {
  name: "orders",
  counters: ["orders_per_minute"],
  definition: {
    counters: {
      orders_per_minute: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" },
    },
  },
};

const WINDOWS = {
  windows: [{
    start: "2026-01-01T00:00:00.000Z",
    end: "2026-01-01T00:01:00.000Z",
    group: { country: "DE" },
    value: 3,
  }],
  others: [],
};

const CURRENT = {
  start: "2026-01-01T00:01:00.000Z",
  end: "2026-01-01T00:02:00.000Z",
  windows: [{ group: { country: "DE" }, value: 1 }],
  others: null,
};

browserTest(
  "a counter's windows or current window read answered after stop() draws nothing: no chart made into the destroyed one, no current window shown",
  async (browser) => {
    const { page, errors } = await viewsPage(browser);
    // Stopped while its windows are read, then stopped while its current window is read.
    for (const stopAt of ["windows", "current"]) {
      const seen = await page.evaluate(`(async () => {
        const { CountersView } = await import("/static/dashboard/counters.js");
        globalThis.held.length = 0;
        const container = document.getElementById("view");
        const view = new CountersView(container, [${JSON.stringify(ORDERS)}]);
        const loading = view.load("orders");
        await globalThis.asked(1);
        if (${JSON.stringify(stopAt)} === "current") {
          globalThis.held[0].answer(200, ${JSON.stringify(WINDOWS)});
          await globalThis.asked(2);
          await globalThis.frames2();
          if (container.querySelectorAll(".uplot").length !== 1) throw new Error("not drawn");
        }
        view.stop();
        const plotsAtStop = container.querySelectorAll(".uplot").length;
        const last = globalThis.held.at(-1);
        last.answer(200, last.url.includes("/current") ? ${JSON.stringify(CURRENT)} : ${
        JSON.stringify(WINDOWS)
      });
        await loading;
        await globalThis.frames2();
        return {
          url: last.url.replace(/\\?.*/, ""),
          plotsAtStop,
          plots: container.querySelectorAll(".uplot").length,
          range: container.querySelector(".window-range").textContent,
          current: container.querySelector(".current-values").children.length,
          asked: globalThis.held.length,
        };
      })()`) as Record<string, unknown>;
      assert.deepEqual(seen, {
        url: stopAt === "windows"
          ? "/v1/streams/orders/counters/orders_per_minute"
          : "/v1/streams/orders/counters/orders_per_minute/current",
        // A chart drawn before stop() went with it.
        plotsAtStop: 0,
        plots: 0,
        range: "…",
        current: 0,
        asked: stopAt === "windows" ? 1 : 2,
      }, stopAt);
    }
    assert.deepEqual(errors, []);
  },
);
