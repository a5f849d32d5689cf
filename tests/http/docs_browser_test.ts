/**
 * `/docs` in real headless Chromium (Debian's `chromium` driven by
 * `playwright-core`; no browser is downloaded). Ignored with a message when
 * the Chromium (`EDGESTREAM_CHROMIUM`, default `/usr/bin/chromium`) is missing, except under
 * `CI=true`, where it fails.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { KEYS, testApp } from "../_fixtures.ts";
import { axeViolations, describeViolations } from "../_axe.ts";
import { browserTest } from "../_chromium.ts";
import { setup } from "../fanout/webhooks/_setup.ts";

browserTest(
  "/docs renders the API reference in Chromium from this origin only, and Try it out ingests",
  async (browser) => {
    const { app } = await testApp({ auth: true });
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
    // A name that is not loopback, as in a deployment: Swagger UI skips some
    // requests (the validator badge) for localhost and 127.0.0.1 only.
    const origin = `http://edgestream.test:${server.addr.port}`;
    try {
      const page = await browser.newPage();
      const requests: string[] = [];
      const problems: string[] = [];
      page.on("request", (request) => requests.push(request.url()));
      // CSP violations arrive here as console errors too.
      page.on("console", (message) => {
        if (message.type() === "error") problems.push(`console: ${message.text()}`);
      });
      page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));

      await page.goto(`${origin}/docs`);
      // The ingest operation's summary appears once Swagger UI rendered /openapi.json.
      const ingest = page.locator(".opblock-summary", { hasText: "/v1/streams/{stream}/events" });
      await ingest.getByText("Send events").waitFor({ timeout: 30_000 });

      // Interactive: authorize with the ingest key and send one event through "Try it out".
      await page.getByRole("button", { name: "Authorize" }).first().click();
      await page.locator(".auth-container input").first().fill(KEYS.ingest);
      await page.locator(".auth-btn-wrapper button.authorize").click();
      await page.locator(".btn-done").click();
      await ingest.click();
      await page.getByRole("button", { name: "Try it out" }).click();
      await page.locator("input[placeholder='stream']").fill("orders");
      await page.locator("textarea.body-param__text").fill(
        JSON.stringify([{ id: "docs-1", country: "DE", amount: 3 }]),
      );
      await page.getByRole("button", { name: "Execute" }).click();
      const reply = page.locator(".live-responses-table .response-col_status", { hasText: "202" });
      await reply.waitFor({ timeout: 15_000 });

      const dir = await Deno.makeTempDir({ prefix: "edgestream_docs_" });
      const screenshot = join(dir, "docs.png");
      await page.screenshot({ path: screenshot, fullPage: true });
      console.log(`/docs screenshot: ${screenshot}`);

      assert.deepEqual(problems, []);
      const foreign = requests.filter((url) => new URL(url).origin !== origin);
      assert.deepEqual(foreign, [], "requests to another origin");
      for (const path of ["/docs", "/openapi.json", "/v1/streams/orders/events"]) {
        assert.ok(requests.includes(`${origin}${path}`), `the page requested ${path}`);
      }
      // Its script and Swagger UI's bundle at their versioned paths.
      for (
        const path of [/^\/docs\/[0-9a-f]{16}\/init\.js$/, /\/[0-9a-f]{16}\/swagger-ui-bundle\.js$/]
      ) {
        assert.ok(
          requests.some((url) => path.test(new URL(url).pathname)),
          `the page requested ${path}`,
        );
      }
      const stream = await app.request("/v1/streams/orders", {
        headers: { Authorization: `Bearer ${KEYS.read}` },
      });
      assert.equal((await stream.json()).stats.accepted, 1, "the event sent from /docs counted");
    } finally {
      await server.shutdown();
    }
  },
  { args: ["--host-resolver-rules=MAP edgestream.test 127.0.0.1"] },
);

browserTest(
  "/docs has no serious or critical axe-core violation of its own in Chromium (contrast, names)",
  async (browser) => {
    const { app } = await testApp({ auth: true });
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
    try {
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${server.addr.port}/docs`);
      await page.locator(".opblock-summary").first().waitFor({ timeout: 30_000 });
      // Open one operation, so its body's schema and buttons are checked too.
      await page.locator(".opblock-summary-control").first().click();
      await page.getByRole("button", { name: "Try it out" }).waitFor({ timeout: 15_000 });
      // nested-interactive too: Swagger UI's deep links (an <a href> in each operation's button)
      // are off.
      const violations = await axeViolations(page);
      assert.deepEqual(violations.map((v) => v.id), [], describeViolations(violations));
      // Every part of the page sits in a landmark (axe 'region', moderate).
      const regions = await axeViolations(page, { impacts: ["moderate"] });
      assert.ok(!regions.some((v) => v.id === "region"), describeViolations(regions));
    } finally {
      await server.shutdown();
    }
  },
);

browserTest(
  "/docs on a 375 px phone does not scroll sideways with an operation open and tried: its responses' table and its Cancel and Reset buttons fit",
  async (browser) => {
    const { app } = await testApp({ auth: true });
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, app.fetch);
    try {
      const page = await browser.newPage({ viewport: { width: 375, height: 667 } });
      await page.goto(`http://127.0.0.1:${server.addr.port}/docs`);
      const ingest = page.locator(".opblock-summary", { hasText: "/v1/streams/{stream}/events" });
      await ingest.getByText("Send events").waitFor({ timeout: 30_000 });
      await ingest.click();
      await page.locator(".responses-table").first().waitFor({ timeout: 15_000 });
      // And once tried: the request's curl, URL and the live response shown.
      await page.getByRole("button", { name: "Try it out" }).click();
      await page.locator("input[placeholder='stream']").fill("orders");
      await page.locator("textarea.body-param__text").fill(
        JSON.stringify([{ id: "docs-phone-1", country: "DE", amount: 3 }]),
      );
      await page.getByRole("button", { name: "Execute" }).click();
      await page.locator(".live-responses-table .response-col_status").first()
        .waitFor({ timeout: 15_000 });
      const widths = await page.evaluate(`({
        scrollWidth: document.documentElement.scrollWidth,
        clientWidth: document.documentElement.clientWidth,
        wider: [...document.querySelectorAll("#swagger-ui *")]
          .filter((e) => e.getBoundingClientRect().right > document.documentElement.clientWidth)
          .map((e) => e.tagName + "." + e.className).slice(0, 5),
      })`) as { scrollWidth: number; clientWidth: number; wider: string[] };
      assert.ok(widths.scrollWidth <= widths.clientWidth, JSON.stringify(widths));
    } finally {
      await server.shutdown();
    }
  },
);

browserTest(
  "/docs's Try it out on POST /v1/webhooks fills in the document's example registration (it built one of a random stream name, headers additionalProp1 and disabled: true: a 400)",
  async (browser) => {
    // An app with webhooks (testApp has none).
    const ctx = await setup({ auth: true });
    const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, ctx.app.fetch);
    try {
      const doc = await (await ctx.app.request("/openapi.json")).json();
      const page = await browser.newPage();
      await page.goto(`http://127.0.0.1:${server.addr.port}/docs`);
      const register = page.locator(
        '.opblock-post:has(.opblock-summary-path[data-path="/v1/webhooks"]) .opblock-summary',
      );
      await register.waitFor({ timeout: 30_000 });
      await register.click();
      await page.getByRole("button", { name: "Try it out" }).click();
      const body = await page.locator("textarea.body-param__text").inputValue();
      assert.deepEqual(JSON.parse(body), doc.components.schemas.WebhookInput.example);
    } finally {
      await server.shutdown();
      await ctx.close();
    }
  },
);
