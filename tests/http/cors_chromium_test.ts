/**
 * The API read from web pages on other origins in real headless Chromium (`src/http/cors.ts`):
 * a page on the origin a read key lists reads a counter with `fetch` (preflighted, for its
 * `Authorization`) and the live subscription as a stream of events; a page on another origin
 * with the same key reads neither. The pages come from a second local server:
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
  "a page on a read key's origin reads a counter with fetch and the subscription as it streams; a page on another origin reads neither",
  async (browser) => {
    const s = await setup();
    try {
      assert.equal((await s.ingest([{}, {}])).status, 202);
      const counter = `${s.api}/v1/streams/orders/counters/n/current`;
      const page = await open(browser, s.listed);
      const read = await readFrom(page, counter, s.key);
      assert.match(read, /^200 /);
      assert.equal(JSON.parse(read.slice(4)).windows[0].value, 2);

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

      // The same key from a page its origins do not list: the browser withholds both answers.
      const other = await open(browser, s.other);
      assert.equal(await readFrom(other, counter, s.key), "error TypeError");
      const sse = await readFrom(
        other,
        `${s.api}/v1/streams/orders/subscribe`,
        s.key,
        "text/event-stream",
      );
      assert.equal(sse, "error TypeError");
    } finally {
      await s.close();
    }
  },
);
