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
 * request in `globalThis.held` (`{url, answer(status, body)}`), unless `globalThis.answerAll` is a
 * function (of the URL, giving `[status, body]`) that answers it at once; `globalThis.asked(n)`
 * resolves once `n` requests were held. Console errors and uncaught errors go to `errors`.
 *
 * The page's helpers for the tests' own scripts:
 * - `frames2()` resolves once whatever a view put off to the next frame has been done;
 * - `drawCounter(windows, current, options?)` stops the counters view it drew before, draws
 *   {@linkcode ORDERS}'s counter in `#view` with `options`, its windows read answered `windows`
 *   and its current window `current`, and resolves to `#view` once drawn;
 * - `answerWebhooks([status, body])` answers the webhooks list so, and each delivery list empty;
 * - `boxOf(root, text)` is the box (`{left, right}`) of the first place `text` is in the text
 *   under `root`, as drawn; `inOrder(root, ...texts)` whether each text is drawn wholly left of
 *   the next.
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
<link rel="stylesheet" href="/static/dashboard/dashboard.css">
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
    globalThis.answerAll = null;
    globalThis.fetch = (url) => new Promise((resolve) => {
      const request = {
        url: String(url),
        answer(status, body) {
          resolve(new Response(JSON.stringify(body), {
            status,
            headers: { "Content-Type": "application/json" },
          }));
        },
      };
      if (globalThis.answerAll) return request.answer(...globalThis.answerAll(request.url));
      globalThis.held.push(request);
      wake();
    });
    // Two frames: whatever a view put off to the next frame has been done.
    globalThis.frames2 = () => new Promise((resolve) =>
      requestAnimationFrame(() => requestAnimationFrame(resolve)));
    globalThis.drawCounter = async (windows, current, options) => {
      const { CountersView } = await import("/static/dashboard/counters.js");
      const container = document.getElementById("view");
      globalThis.countersView?.stop();
      globalThis.answerAll = (url) => [200, url.includes("/current") ? current : windows];
      globalThis.countersView = new CountersView(container, [${JSON.stringify(ORDERS)}], options);
      await globalThis.countersView.load("orders");
      await globalThis.frames2();
      return container;
    };
    globalThis.answerWebhooks = (list) => {
      globalThis.answerAll = (url) => new URL(url, location.href).pathname === "/v1/webhooks"
        ? list
        : [200, { deliveries: [], nextCursor: null }];
    };
    globalThis.boxOf = (root, text) => {
      const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
      for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        const at = node.textContent.indexOf(text);
        if (at < 0) continue;
        const range = document.createRange();
        range.setStart(node, at);
        range.setEnd(node, at + text.length);
        const { left, right } = range.getBoundingClientRect();
        return { left, right };
      }
      throw new Error("no " + text + " in " + root.textContent);
    };
    globalThis.inOrder = (root, ...texts) =>
      texts.every((text, i) => i === 0 || boxOf(root, texts[i - 1]).right <= boxOf(root, text).left);
  })()`);
  return { page, errors };
}

/**
 * A browser test of what `check` checks on a {@linkcode viewsPage}; then the page must have logged
 * no console error and thrown no uncaught error.
 */
function viewsTest(name: string, check: (page: Page) => Promise<void>): void {
  browserTest(name, async (browser) => {
    const { page, errors } = await viewsPage(browser);
    await check(page);
    assert.deepEqual(errors, []);
  });
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

viewsTest(
  "a counter's windows or current window read answered after stop() draws nothing: no chart made into the destroyed one, no current window shown",
  async (page) => {
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
  },
);

/** An error answer as the server gives it. */
function refusal(status: number, code: string, message: string) {
  return [status, { error: { code, message } }];
}

viewsTest(
  "the webhooks table read before stays, with a note of its time, when the list is refused 401 or 403 (as the stream cards stay); webhooks gone from the server (404) empty it",
  async (page) => {
    await page.evaluate(`(async () => {
      const { WebhooksView } = await import("/static/dashboard/webhooks.js");
      globalThis.webhooks = new WebhooksView(
        document.getElementById("view"),
        document.getElementById("note"),
      );
    })()`);
    const endpoint = { id: "ep_a", url: "https://hooks.example/a", description: "billing" };
    /** Reads the webhooks with the list answered `list`; what the panel then shows. */
    const refresh = async (list: unknown[]) =>
      await page.evaluate(`(async () => {
        globalThis.answerWebhooks(${JSON.stringify(list)});
        const again = await globalThis.webhooks.refresh();
        return {
          again,
          rows: [...document.querySelectorAll("#view [data-webhook]")]
            .map((row) => row.getAttribute("data-webhook")),
          note: document.getElementById("note").textContent,
        };
      })()`) as { again: boolean; rows: string[]; note: string };

    assert.deepEqual(await refresh([200, { webhooks: [endpoint] }]), {
      again: true,
      rows: ["ep_a"],
      note: "",
    });
    const shown = /^Webhook health needs an admin key; showing the read of \d\d:\d\d:\d\d$/;
    const revoked = await refresh(refusal(401, "unauthorized", "Unknown API key"));
    assert.deepEqual([revoked.again, revoked.rows], [true, ["ep_a"]]);
    assert.match(revoked.note, shown);
    // A 403 says why: an admin key limited to streams was told it needed an admin key.
    const limited = "API key 'key_0123456789abcdef' is limited to streams orders: not this route";
    const readOnly = await refresh(refusal(403, "forbidden", limited));
    assert.deepEqual([readOnly.again, readOnly.rows], [false, ["ep_a"]]);
    assert.equal(
      readOnly.note.replace(/\d\d:\d\d:\d\d$/, "T"),
      `Webhook health needs an admin key for all streams (${limited}); showing the read of T`,
    );
    assert.deepEqual(await refresh(refusal(404, "not_found", "No webhooks")), {
      again: false,
      rows: [],
      note: "Webhooks are not enabled on this server.",
    });
    // Nothing read is shown: the note says only what is needed.
    assert.deepEqual(await refresh(refusal(403, "forbidden", "API key lacks the 'admin' scope")), {
      again: false,
      rows: [],
      note: "Webhook health needs an admin key for all streams (API key lacks the 'admin' scope).",
    });
  },
);

viewsTest(
  "a count's line of the rest summed is drawn apart from every group's, also from a group named others and with 10 groups drawn: its own colour, dashed, its own label, and so is its swatch in the current window",
  async (page) => {
    const start = "2026-01-01T00:00:00.000Z";
    /** What a view of `groups` (name → value) drawn with `top` shows once read. */
    const drawn = async (groups: Record<string, number>, top: number) => {
      const ranked = Object.entries(groups).sort((a, b) => b[1] - a[1]);
      const row = ([country, value]: [string, number]) => ({
        start,
        end: "2026-01-01T00:01:00.000Z",
        group: { country },
        value,
      });
      const windows = {
        windows: ranked.slice(0, top).map(row),
        others: [{ start, end: "2026-01-01T00:01:00.000Z", groups: 1, value: 1 }],
      };
      const current = {
        start,
        end: "2099-01-01T00:01:00.000Z",
        windows: ranked.slice(0, top).map(row),
        others: { groups: top + 1, value: 1 },
      };
      return await page.evaluate(`(async () => {
        const container = await globalThis.drawCounter(${JSON.stringify(windows)}, ${
        JSON.stringify(current)
      }, { top: ${top} });
        const colour = (element) => getComputedStyle(element).borderTopColor;
        const legend = [...container.querySelectorAll(".u-legend .u-series")].slice(1).map((row) => ({
          label: row.querySelector(".u-label").textContent,
          colour: colour(row.querySelector(".u-marker")),
          dashed: getComputedStyle(row.querySelector(".u-marker")).borderTopStyle === "dashed",
        }));
        const current = [...container.querySelectorAll(".current-values li")].map((item) => ({
          label: item.querySelector(".group").textContent,
          colour: getComputedStyle(item.querySelector(".swatch")).backgroundColor,
        }));
        return { legend, current };
      })()`) as {
        legend: { label: string; colour: string; dashed: boolean }[];
        current: { label: string; colour: string }[];
      };
    };

    const named = await drawn({ others: 10, DE: 5 }, 2);
    assert.deepEqual(named.legend.map((line) => [line.label, line.dashed]), [
      ["others", false],
      ["DE", false],
      ["others (the rest summed)", true],
    ]);
    const [group, , rest] = named.legend;
    assert.notEqual(rest.colour, group.colour);
    assert.equal(new Set(named.legend.map((line) => line.colour)).size, 3);
    // Each item of the current window has its line's colour.
    assert.deepEqual(named.current, [
      { label: "others", colour: group.colour },
      { label: "DE", colour: named.legend[1].colour },
      { label: "others (1 more group)", colour: rest.colour },
    ]);

    // 10 groups take the palette's 10 colours: the rest is none of them.
    const many = Object.fromEntries(Array.from({ length: 11 }, (_, i) => [`g${i}`, 100 - i]));
    const ten = await drawn(many, 10);
    assert.equal(ten.legend.length, 11);
    assert.equal(new Set(ten.legend.map((line) => line.colour)).size, 11);
    assert.equal(ten.current.at(-1)!.colour, ten.legend.at(-1)!.colour);
  },
);

viewsTest(
  "the webhooks table of the first page of endpoints says more are registered when the list has a next page, and says nothing once it has none",
  async (page) => {
    const endpoints = [
      { id: "ep_a", url: "https://hooks.example/a", description: null },
      { id: "ep_b", url: "https://hooks.example/b", description: null },
    ];
    /** Reads the webhooks with the list answered `list`; the rows and the note shown. */
    const shown = async (list: unknown) =>
      await page.evaluate(`(async () => {
        const { WebhooksView } = await import("/static/dashboard/webhooks.js");
        globalThis.webhooks ??= new WebhooksView(
          document.getElementById("view"),
          document.getElementById("note"),
        );
        globalThis.answerWebhooks([200, ${JSON.stringify(list)}]);
        await globalThis.webhooks.refresh();
        return {
          rows: [...document.querySelectorAll("#view [data-webhook]")]
            .map((row) => row.getAttribute("data-webhook")),
          note: document.getElementById("note").textContent,
        };
      })()`);
    assert.deepEqual(await shown({ webhooks: endpoints, nextCursor: "bmV4dA" }), {
      rows: ["ep_a", "ep_b"],
      note: "Showing the 2 oldest endpoints; more are registered: GET /v1/webhooks lists them all.",
    });
    assert.deepEqual(await shown({ webhooks: endpoints, nextCursor: null }), {
      rows: ["ep_a", "ep_b"],
      note: "",
    });
  },
);

viewsTest(
  "each webhook row's replay button and period are named by its endpoint (its description, else its URL), beginning with the button's text",
  async (page) => {
    const endpoints = [
      { id: "ep_a", url: "https://hooks.example/a", description: "billing" },
      { id: "ep_b", url: "https://hooks.example/b", description: null },
    ];
    const list = [200, { webhooks: endpoints, nextCursor: null }];
    await page.evaluate(`(async () => {
      const { WebhooksView } = await import("/static/dashboard/webhooks.js");
      const view = new WebhooksView(document.getElementById("view"), document.getElementById("note"));
      globalThis.answerWebhooks(${JSON.stringify(list)});
      await view.refresh();
    })()`);
    const buttons = page.getByRole("button");
    assert.deepEqual(
      await buttons.evaluateAll((all) => all.map((button) => button.getAttribute("aria-label"))),
      [
        "Replay failed deliveries of billing",
        "Replay failed deliveries of https://hooks.example/b",
      ],
    );
    for (const [name, row] of [["billing", "ep_a"], ["https://hooks.example/b", "ep_b"]]) {
      const button = page.getByRole("button", { name: `Replay failed deliveries of ${name}` });
      assert.equal(await button.textContent(), "Replay failed");
      const period = page.getByRole("combobox", {
        name: `Replay deliveries of ${name} created within`,
      });
      assert.equal(
        await period.evaluate((select) => select.closest("tr")!.getAttribute("data-webhook")),
        row,
      );
    }
  },
);

viewsTest(
  "a chart's legend entries are toggle buttons the keyboard reaches with Tab: Enter or Space hides and shows the line as a click does",
  async (page) => {
    const start = "2026-01-01T00:00:00.000Z";
    const end = "2026-01-01T00:01:00.000Z";
    const windows = {
      windows: [
        { start, end, group: { country: "DE" }, value: 3 },
        { start, end, group: { country: "FR" }, value: 1 },
      ],
      others: [],
    };
    const current = { start, end: "2099-01-01T00:00:00.000Z", windows: [], others: null };
    await page.evaluate(
      `globalThis.drawCounter(${JSON.stringify(windows)}, ${JSON.stringify(current)})`,
    );
    const entry = (name: string) => page.getByRole("button", { name, exact: true });
    /** The entries' pressed states and which lines uPlot shows (its legend rows not `u-off`). */
    const state = () =>
      page.evaluate(`[...document.querySelectorAll(".u-legend .u-series")].slice(1).map((row) => [
        row.querySelector(".u-label").getAttribute("aria-pressed"),
        !row.classList.contains("u-off"),
      ])`);
    assert.deepEqual(await state(), [["true", true], ["true", true]]);
    // Tab from the page's start reaches the first entry.
    await page.keyboard.press("Tab");
    assert.equal(await page.evaluate("document.activeElement.textContent"), "DE");
    await page.keyboard.press("Enter");
    assert.deepEqual(await state(), [["false", false], ["true", true]]);
    await page.keyboard.press("Tab");
    await page.keyboard.press(" ");
    assert.deepEqual(await state(), [["false", false], ["false", false]]);
    await entry("DE").press("Enter");
    assert.deepEqual(await state(), [["true", true], ["false", false]]);
    // A click still toggles, and the pressed state follows it.
    await entry("FR").click();
    assert.deepEqual(await state(), [["true", true], ["true", true]]);
  },
);

viewsTest(
  "an alert whose group is right-to-left text reads in order: the value stays right of the group, and each name is isolated",
  async (page) => {
    const seen = await page.evaluate(`(async () => {
      const { AlertsView } = await import("/static/dashboard/alerts.js");
      document.getElementById("view").innerHTML = '<ol id="alerts"></ol><span id="count"></span>';
      const view = new AlertsView(document.getElementById("alerts"), document.getElementById("count"));
      view.handle({
        type: "alert.fired",
        timestamp: "2026-01-01T00:01:00.000Z",
        data: {
          alert: "busy", stream: "orders", counter: "per_minute",
          group: { country: "שלום" }, value: 6,
          start: "2026-01-01T00:00:00.000Z", end: "2026-01-01T00:01:00.000Z",
        },
      });
      /** The box of the first place \`text\` is in the alert's line. */
      const box = (text) => globalThis.boxOf(document.querySelector("#alerts li span"), text);
      return {
        text: document.querySelector("#alerts li span").textContent,
        groupRight: box("שלום").right,
        equalsLeft: box("=").left,
        valueLeft: box("6").left,
        isolated: [...document.querySelectorAll("#alerts li bdi")].map((bdi) => bdi.textContent),
      };
    })()`) as Record<string, unknown>;
    assert.equal(seen.text, "orders · per_minute · שלום = 6");
    assert.ok((seen.groupRight as number) <= (seen.equalsLeft as number), JSON.stringify(seen));
    assert.ok((seen.equalsLeft as number) < (seen.valueLeft as number), JSON.stringify(seen));
    assert.deepEqual(seen.isolated, ["busy", "orders", "per_minute", "שלום"]);
  },
);

viewsTest(
  "a current window of a day or longer is labelled with the date of each end, not a time that reads alike at both (00:00:00 – 00:00:00); a minute's keeps its times alone",
  async (page) => {
    const range = (start: string, end: string) =>
      page.evaluate(`(async () => {
        const container = await globalThis.drawCounter(${JSON.stringify(WINDOWS)}, ${
        JSON.stringify({ ...CURRENT, start, end })
      });
        return {
          text: container.querySelector(".current .window-range").textContent,
          startDate: new Date(${JSON.stringify(start)}).toLocaleDateString(),
          endDate: new Date(${JSON.stringify(end)}).toLocaleDateString(),
          startTime: new Date(${JSON.stringify(start)}).toLocaleTimeString([], { hour12: false }),
          endTime: new Date(${JSON.stringify(end)}).toLocaleTimeString([], { hour12: false }),
        };
      })()`) as Promise<
        { text: string; startDate: string; endDate: string; startTime: string; endTime: string }
      >;
    // A day's window (tumbling 1d, or a sliding 24h's) and a week's: before, only their times.
    for (
      const [start, end] of [
        ["2026-01-01T00:00:00.000Z", "2026-01-02T00:00:00.000Z"],
        ["2026-01-05T00:00:00.000Z", "2026-01-12T00:00:00.000Z"],
      ]
    ) {
      const day = await range(start, end);
      const detail = JSON.stringify(day);
      const [from, to] = day.text.split(" – ");
      assert.ok(from !== undefined && to !== undefined, detail);
      assert.ok(from.includes(day.startDate) && from.includes(day.startTime), detail);
      assert.ok(to.includes(day.endDate) && to.includes(day.endTime), detail);
      assert.notEqual(from, to, detail);
    }
    const minute = await range(CURRENT.start, CURRENT.end);
    assert.equal(minute.text, `${minute.startTime} – ${minute.endTime}`);
  },
);

viewsTest(
  "a group whose value is empty or only spaces reads as its quoted text in the chart's legend and the current window: not uPlot's default 'Value', not blank, and apart from each other",
  async (page) => {
    const start = "2026-01-01T00:00:00.000Z";
    const end = "2026-01-01T00:01:00.000Z";
    const rows = [["", 3], [" ", 2], ["DE", 1]].map(([country, value]) => ({
      start,
      end,
      group: { country },
      value,
    }));
    const windows = { windows: rows, others: [] };
    const current = { start, end: "2099-01-01T00:01:00.000Z", windows: rows, others: null };
    const shown = await page.evaluate(`(async () => {
      const container = await globalThis.drawCounter(${JSON.stringify(windows)}, ${
      JSON.stringify(current)
    }, { top: 5 });
      return {
        legend: [...container.querySelectorAll(".u-legend .u-series .u-label")].slice(1)
          .map((label) => label.textContent),
        current: [...container.querySelectorAll(".current-values li .group")]
          .map((group) => group.textContent),
      };
    })()`) as { legend: string[]; current: string[] };
    assert.deepEqual(shown.legend, ['""', '" "', "DE"]);
    assert.deepEqual(shown.current, ['""', '" "', "DE"]);
  },
);

viewsTest(
  "a chart's legend keeps a group of thousands of characters to one line, cut with an ellipsis and whole in its title, at 1280 px and on a 375 px phone",
  async (page) => {
    const start = "2026-01-01T00:00:00.000Z";
    const end = "2026-01-01T00:01:00.000Z";
    // Any client sending events chooses its groups: one unbroken, one of words, one short.
    const groups = ["W".repeat(3000), "word ".repeat(400).trim(), "DE"];
    const rows = groups.map((country, i) => ({ start, end, group: { country }, value: 3 - i }));
    const windows = { windows: rows, others: [] };
    const current = { start, end: "2099-01-01T00:01:00.000Z", windows: rows, others: null };
    const measure = async (width: number) => {
      await page.setViewportSize({ width, height: 900 });
      return await page.evaluate(`(async () => {
        const container = await globalThis.drawCounter(${JSON.stringify(windows)}, ${
        JSON.stringify(current)
      }, { top: 5 });
        const labels = [...container.querySelectorAll(".u-legend .u-series .u-label")].slice(1);
        return {
          legendHeight: container.querySelector(".u-legend").getBoundingClientRect().height,
          labels: labels.map((label) => ({
            title: label.title,
            text: label.textContent,
            height: label.getBoundingClientRect().height,
            cut: label.scrollWidth > label.clientWidth,
          })),
          sideways: document.documentElement.scrollWidth > innerWidth,
        };
      })()`) as {
        legendHeight: number;
        labels: { title: string; text: string; height: number; cut: boolean }[];
        sideways: boolean;
      };
    };
    for (const width of [1280, 375]) {
      const shown = await measure(width);
      assert.equal(shown.sideways, false, `${width} px: the page scrolls sideways`);
      assert.deepEqual(shown.labels.map((label) => label.title), groups, `${width} px: titles`);
      assert.deepEqual(shown.labels.map((label) => label.text), groups, `${width} px: texts`);
      assert.deepEqual(shown.labels.map((label) => label.cut), [true, true, false], `${width} px`);
      // One line each (a 14 px font): three entries take a few lines, not thousands of pixels.
      for (const label of shown.labels) {
        assert.ok(label.height < 30, `${width} px: ${label.height}`);
      }
      assert.ok(shown.legendHeight < 120, `${width} px: legend ${shown.legendHeight} px tall`);
    }
  },
);

viewsTest(
  "a stream's and a webhook endpoint's description of 1024 characters, the most either takes, show in at most two lines, whole in their titles, at 1280 px and on a 375 px phone",
  async (page) => {
    const unbroken = "d".repeat(1024);
    const words = "word ".repeat(205).slice(0, 1024);
    const streams = [
      { ...ORDERS, name: "a", description: unbroken, stats: {} },
      { ...ORDERS, name: "b", description: words, stats: {} },
    ];
    const endpoints = [
      { id: "ep_a", url: "https://hooks.example/a", description: unbroken },
      { id: "ep_b", url: "https://hooks.example/b", description: words },
    ];
    const list = [200, { webhooks: endpoints, nextCursor: null }];
    await page.evaluate(`(async () => {
      const { StreamsView } = await import("/static/dashboard/streams.js");
      const { WebhooksView } = await import("/static/dashboard/webhooks.js");
      const streams = document.createElement("div");
      const hooks = document.createElement("div");
      document.getElementById("view").append(streams, hooks);
      new StreamsView(streams, ${JSON.stringify(streams)});
      const view = new WebhooksView(hooks, document.getElementById("note"));
      globalThis.answerWebhooks(${JSON.stringify(list)});
      await view.refresh();
    })()`);
    for (const width of [1280, 375]) {
      await page.setViewportSize({ width, height: 900 });
      const shown = await page.evaluate(`(async () => {
        await globalThis.frames2();
        const lineHeight = (element) => parseFloat(getComputedStyle(element).lineHeight) ||
          1.5 * parseFloat(getComputedStyle(element).fontSize);
        return [...document.querySelectorAll("[data-stream] header .description, [data-webhook] .description")]
          .map((element) => ({
            title: element.title,
            text: element.textContent,
            lines: element.getBoundingClientRect().height / lineHeight(element),
          }));
      })()`) as { title: string; text: string; lines: number }[];
      assert.equal(shown.length, 4, `${width} px: descriptions shown`);
      for (const [i, description] of [unbroken, words, unbroken, words].entries()) {
        assert.equal(shown[i].title, description, `${width} px: title ${i}`);
        assert.equal(shown[i].text, description, `${width} px: text ${i}`);
        assert.ok(
          shown[i].lines <= 2.1,
          `${width} px: description ${i} takes ${shown[i].lines} lines`,
        );
      }
    }
  },
);

viewsTest(
  "a group value with a right-to-left override or an invisible character reads as its escapes in the chart's legend, the current window and an alert: DE and DE + zero-width space apart, no text reversed, each of several values isolated",
  async (page) => {
    const start = "2026-01-01T00:00:00.000Z";
    const end = "2026-01-01T00:01:00.000Z";
    const RLO = "\u202e";
    const groups = [
      { country: "DE" },
      { country: "DE\u200b" },
      { country: `${RLO}gnp.exe` },
      { country: "DE\u00a0FR" },
      { country: `${RLO}ab`, device: "cd" },
      { country: "שלום", device: 7 },
    ];
    const rows = groups.map((group, i) => ({ start, end, group, value: 10 - i }));
    const windows = { windows: rows, others: [] };
    const current = { start, end: "2099-01-01T00:01:00.000Z", windows: rows, others: null };
    const shown = await page.evaluate(`(async () => {
      const { AlertsView } = await import("/static/dashboard/alerts.js");
      const container = await globalThis.drawCounter(${JSON.stringify(windows)}, ${
      JSON.stringify(current)
    }, { top: 10 });
      const list = document.createElement("ol");
      document.body.append(list);
      new AlertsView(list, document.getElementById("note")).handle({
        type: "alert.fired",
        timestamp: "${end}",
        data: {
          alert: "busy", stream: "orders", counter: "orders_per_minute",
          group: ${JSON.stringify(groups[2])}, value: 6, start: "${start}", end: "${end}",
        },
      });
      const legend = [...container.querySelectorAll(".u-legend .u-series .u-label")].slice(1);
      const items = [...container.querySelectorAll(".current-values li .group")];
      return {
        legend: legend.map((label) => label.textContent),
        titles: legend.map((label) => label.title),
        current: items.map((item) => item.textContent),
        alert: list.querySelector("li span").textContent,
        drawnInOrder: [
          inOrder(legend[4], "ab", "·", "cd"),
          inOrder(items[4], "ab", "·", "cd"),
          inOrder(legend[5], "שלום", "·", "7"),
          // A <bdi> whose first letter is Hebrew reads right to left: its first value rightmost.
          inOrder(items[5], "7", "·", "שלום"),
        ],
      };
    })()`) as {
      legend: string[];
      titles: string[];
      current: string[];
      alert: string;
      drawnInOrder: boolean[];
    };
    const [FSI, PDI] = ["\u2068", "\u2069"];
    // Each invisible or reordering character written as its escape, in a quoted value: a
    // backslash, "u" and its code.
    const labels = [
      "DE",
      '"DE\\u200b"',
      '"\\u202egnp.exe"',
      '"DE\\u00a0FR"',
      `${FSI}"\\u202eab"${PDI} · ${FSI}cd${PDI}`,
      `${FSI}שלום${PDI} · ${FSI}7${PDI}`,
    ];
    const detail = JSON.stringify(shown);
    assert.deepEqual(shown.legend, labels, detail);
    assert.deepEqual(shown.titles, labels, detail);
    assert.deepEqual(shown.current, labels, detail);
    assert.equal(shown.alert, 'orders · orders_per_minute · "\\u202egnp.exe" = 6', detail);
    // Before, the override reversed the rest of the label ("dc · ba"), and in the legend (left
    // to right) the number after the Hebrew value took the Hebrew's direction: "7 · שלום".
    assert.deepEqual(shown.drawnInOrder, [true, true, true, true], detail);
  },
);

viewsTest(
  "a stream's or webhook endpoint's description, or a counter's field, with a right-to-left override shows it as its escape, in its text and title, and reads in order",
  async (page) => {
    const description = "ab \u202ecd ef";
    const shown = await page.evaluate(`(async () => {
      const { StreamsView } = await import("/static/dashboard/streams.js");
      const { WebhooksView } = await import("/static/dashboard/webhooks.js");
      const view = document.getElementById("view");
      view.innerHTML = '<div id="streams"></div><div id="hooks"></div>';
      new StreamsView(document.getElementById("streams"), [{
        name: "orders",
        description: ${JSON.stringify(description)},
        counters: [],
        stats: {},
      }]);
      globalThis.answerWebhooks([200, { webhooks: [{
        id: "ep_a", url: "https://hooks.example/a", description: ${JSON.stringify(description)},
      }] }]);
      await new WebhooksView(document.getElementById("hooks"), document.getElementById("note"))
        .refresh();
      const { CountersView } = await import("/static/dashboard/counters.js");
      const counters = document.createElement("div");
      view.append(counters);
      globalThis.answerAll = () => [200, { windows: [], others: [] }];
      // A field path is any text: its definition's line lists it.
      new CountersView(counters, [{
        name: "orders",
        counters: ["per_minute"],
        definition: { counters: { per_minute: {
          window: { tumbling: "1m" },
          groupBy: [${JSON.stringify(description)}, "gh"],
          aggregate: "count",
        } } },
      }]);
      const parts = [".stream .description", "[data-webhook] .description"].map((selector) => {
        const shown = document.querySelector(selector);
        const inOrder = globalThis.inOrder(shown, "ab", "cd", "ef");
        return { text: shown.textContent, title: shown.title, inOrder };
      });
      const line = counters.querySelector(".counter header .muted");
      parts.push({
        text: line.textContent,
        inOrder: inOrder(line, "ab", "cd", "ef", "gh", "tumbling"),
      });
      return parts;
    })()`);
    const escaped = "ab \\u202ecd ef";
    assert.deepEqual(shown, [
      { text: escaped, title: escaped, inOrder: true },
      { text: escaped, title: escaped, inOrder: true },
      // The field is quoted too: it then reads apart from a field holding the text `\u202e`.
      { text: `count by "${escaped}", gh · tumbling 1m`, inOrder: true },
    ]);
  },
);

viewsTest(
  "a stream card's rate labels and values stay whole, each on one line, from a 320 px phone to 1280 px: a narrow card wraps a whole rate to the next row, never breaking a word or a number",
  async (page) => {
    // Counts 2 s apart that make five-digit rates (24,690 in 2 s: 12,345/s), the widest a busy
    // stream shows.
    const before = { accepted: 0, duplicates: 0, late: 0, rejected: 0 };
    const after = { accepted: 24_690, duplicates: 24_690, late: 24_690, rejected: 24_690 };
    await page.evaluate(`(async () => {
      const { StreamsView } = await import("/static/dashboard/streams.js");
      // As the page holds the cards: in a panel of the main landmark.
      document.getElementById("view").innerHTML =
        '<main><section class="panel"><div id="streams" class="streams"></div></section></main>';
      const view = new StreamsView(document.getElementById("streams"), [{ ...${
      JSON.stringify(ORDERS)
    }, stats: ${JSON.stringify(before)} }]);
      view.update([{ name: "orders", stats: ${JSON.stringify(before)} }], 0);
      view.update([{ name: "orders", stats: ${JSON.stringify(after)} }], 2000);
    })()`);
    for (const width of [320, 360, 375, 1280]) {
      await page.setViewportSize({ width, height: 900 });
      const shown = await page.evaluate(`(async () => {
        await globalThis.frames2();
        // The lines a text takes: the distinct tops of its characters' boxes.
        const lines = (node) => {
          const tops = new Set();
          for (let at = 0; at < node.textContent.length; at++) {
            const range = document.createRange();
            range.setStart(node, at);
            range.setEnd(node, at + 1);
            const box = range.getBoundingClientRect();
            if (box.width > 0) tops.add(Math.round(box.top));
          }
          return tops.size;
        };
        return [...document.querySelectorAll(".stream .rates dt, .stream .rates dd")].map((item) => {
          const text = [...item.childNodes].filter((node) => node.nodeType === 3);
          return { text: item.textContent, lines: Math.max(...text.map(lines)) };
        });
      })()`) as { text: string; lines: number }[];
      assert.deepEqual(
        shown,
        ["accepted", "duplicate", "late", "rejected"].flatMap((label) => [
          { text: label, lines: 1 },
          { text: "12,345/s", lines: 1 },
        ]),
        `at ${width} px`,
      );
      const scroll = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]",
      ) as number[];
      assert.ok(scroll[0] <= scroll[1], `at ${width} px the page is ${scroll[0]} px wide`);
    }
  },
);
