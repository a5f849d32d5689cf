/**
 * The dashboard's routes: `GET /` with its Content-Security-Policy, and the
 * page's files with their content types; nothing else from `static/`.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { OpenAPIHono } from "@hono/zod-openapi";
import {
  DASHBOARD_CSP,
  registerDashboardRoutes,
  StaticFiles,
} from "../../src/http/dashboard_routes.ts";
import { errorResponse } from "../../src/http/errors.ts";
import { requestLog } from "../../src/http/request_log.ts";
import { jsonLines, writtenLogs } from "../_logs.ts";
import { testApp } from "../_fixtures.ts";

type App = Awaited<ReturnType<typeof testApp>>["app"];

const DASHBOARD_DIR = new URL("../../static/dashboard/", import.meta.url);

/** Paths of the scripts and styles `html` loads from this server. */
function linkedPaths(html: string): string[] {
  return [...html.matchAll(/<(?:script|link)\b[^>]*\b(?:src|href)="(\/[^"]*)"/g)]
    .map((match) => match[1])
    .filter((path) => path.startsWith("/static/"));
}

Deno.test("GET / serves the dashboard with a strict Content-Security-Policy and no inline code", async () => {
  const { app } = await testApp();
  const res = await app.request("/");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Content-Type"), "text/html; charset=utf-8");
  const csp = res.headers.get("Content-Security-Policy") ?? "";
  assert.equal(csp, DASHBOARD_CSP);
  for (const directive of ["default-src 'self'", "script-src 'self'", "style-src 'self'"]) {
    assert.ok(csp.split("; ").includes(directive), `${directive} in ${csp}`);
  }
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
  assert.equal(res.headers.get("X-Content-Type-Options"), "nosniff");
  const html = await res.text();
  // Every script has a src; no style element or attribute (the policy would refuse them).
  for (const tag of html.match(/<script\b[^>]*>/g) ?? []) assert.match(tag, /\bsrc="\//);
  assert.doesNotMatch(html, /<style\b|\sstyle=/);
  assert.match(html, /<meta name="edgestream-auth" content="none">/);
  assert.ok(linkedPaths(html).includes("/static/vendor/uplot/uPlot.iife.min.js"));
});

Deno.test("GET / tells the page to ask for a key when the server has keys", async () => {
  const { app } = await testApp({ auth: true });
  const res = await app.request("/");
  assert.equal(res.status, 200);
  assert.match(await res.text(), /<meta name="edgestream-auth" content="key">/);
});

Deno.test("GET / tells the page whether the server has webhooks, so that it asks for their list only then", async () => {
  for (const webhooks of [true, false]) {
    const app = new OpenAPIHono();
    registerDashboardRoutes(app, { open: true, webhooks });
    const html = await (await app.request("/")).text();
    const content = webhooks ? "on" : "off";
    assert.match(html, new RegExp(`<meta name="edgestream-webhooks" content="${content}">`));
  }
  // An app built without webhooks (testApp's): "off".
  const { app } = await testApp();
  assert.match(await (await app.request("/")).text(), /name="edgestream-webhooks" content="off"/);
});

async function contentTypeOf(app: App, path: string): Promise<string | null> {
  const res = await app.request(path);
  await res.body?.cancel();
  assert.equal(res.status, 200, path);
  return res.headers.get("Content-Type");
}

Deno.test("the page's scripts, styles and icon are served with their content types", async () => {
  const { app } = await testApp();
  const html = await (await app.request("/")).text();
  const paths = new Set([...linkedPaths(html), "/static/dashboard/icon.svg"]);
  // The modules main.js imports, directly or not.
  for await (const entry of Deno.readDir(DASHBOARD_DIR)) {
    if (entry.name.endsWith(".js")) paths.add(`/static/dashboard/${entry.name}`);
  }
  const expected: Record<string, string> = {
    js: "text/javascript; charset=utf-8",
    css: "text/css; charset=utf-8",
    svg: "image/svg+xml",
  };
  assert.ok(paths.size >= 10, [...paths].join(", "));
  for (const path of paths) {
    assert.equal(await contentTypeOf(app, path), expected[path.split(".").pop()!], path);
  }
  const main = await (await app.request("/static/dashboard/main.js")).text();
  assert.equal(main, await Deno.readTextFile(new URL("main.js", DASHBOARD_DIR)));
});

Deno.test("only the dashboard's, uPlot's and the SDK's files are served: other paths are 404 with the error envelope", async () => {
  const { app } = await testApp();
  for (
    const path of [
      "/static/dashboard/index.html", // the page only at `/`, with its policy
      "/static/dashboard/missing.js",
      "/static/dashboard/..%2F..%2Fdeno.json",
      "/static/dashboard/%2E%2E%2Fvendor%2Fuplot%2FuPlot.min.css",
      "/static/dashboard/.hidden.js",
      "/static/vendor/uplot/README", // no extension and no licence: no content type
      "/static/vendor/other/x.js",
      "/static/sdk/missing.js",
      "/static/deno.json",
    ]
  ) {
    const res = await app.request(path);
    assert.equal(res.status, 404, path);
    assert.equal((await res.json()).error.code, "not_found", path);
  }
});

Deno.test("every vendored library's files are served as they are, its licence files as text", async () => {
  const { app } = await testApp();
  const vendorDir = new URL("../../static/vendor/", import.meta.url);
  const licences: string[] = [];
  for await (const library of Deno.readDir(vendorDir)) {
    if (!library.isDirectory) continue;
    const dir = new URL(`${library.name}/`, vendorDir);
    for await (const entry of Deno.readDir(dir)) {
      const path = `/static/vendor/${library.name}/${entry.name}`;
      const res = await app.request(path);
      assert.equal(res.status, 200, path);
      assert.deepEqual(await res.bytes(), await Deno.readFile(new URL(entry.name, dir)), path);
      if (/LICENSE|NOTICE/.test(entry.name)) {
        assert.equal(res.headers.get("Content-Type"), "text/plain; charset=utf-8", path);
        licences.push(path);
      }
    }
  }
  assert.ok(licences.includes("/static/vendor/uplot/LICENSE"), licences.join(", "));
  assert.ok(licences.includes("/static/vendor/swagger-ui-dist/LICENSE"), licences.join(", "));
});

Deno.test("a file whose ETag the browser holds is answered 304 without a body", async () => {
  const { app } = await testApp();
  const first = await app.request("/static/dashboard/model.js");
  await first.body?.cancel();
  const etag = first.headers.get("ETag");
  assert.match(etag ?? "", /^"[0-9a-f]{32}"$/);
  assert.equal(first.headers.get("Cache-Control"), "no-cache");
  const again = await app.request("/static/dashboard/model.js", {
    headers: { "If-None-Match": etag! },
  });
  assert.equal(again.status, 304);
  assert.equal(await again.text(), "");
});

Deno.test("GET /sdk.js serves the browser SDK as a module any origin may load, without a key", async () => {
  const { app } = await testApp({ auth: true });
  const res = await app.request("/sdk.js", { headers: { Origin: "https://shop.example" } });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Content-Type"), "text/javascript; charset=utf-8");
  assert.equal(res.headers.get("Access-Control-Allow-Origin"), "*");
  const text = await res.text();
  assert.match(text, /export function createTracker\(/);
  assert.match(text, /export function track\(/);
});

Deno.test("without static/, the dashboard and /sdk.js are a 500 naming the file (its path under staticDir), and a file the page loads a 404", async () => {
  const empty = await Deno.makeTempDir();
  try {
    const app = new OpenAPIHono();
    app.onError(errorResponse);
    app.use(requestLog());
    registerDashboardRoutes(app, { open: true, staticDir: new URL(`file://${empty}/`) });
    for (const [path, file] of [["/", "dashboard/index.html"], ["/sdk.js", "sdk/sdk.js"]]) {
      await writtenLogs(async (lines) => {
        const res = await app.request(path);
        assert.equal(res.status, 500, path);
        assert.equal((await res.json()).error.code, "internal_error");
        const [line] = jsonLines(lines, "edgestream.http");
        assert.equal(line.level, "error");
        assert.ok(
          JSON.stringify(line).includes(
            JSON.stringify(
              `Cannot read ${join(empty, file)} (is ${empty}/ part of the deployment?)`,
            )
              .slice(1, -1),
          ),
          JSON.stringify(line),
        );
      });
    }
    const res = await app.request("/static/dashboard/main.js");
    assert.equal(res.status, 404);
    assert.equal((await res.json()).error.code, "not_found");
  } finally {
    await Deno.remove(empty);
  }
});

Deno.test("files a client names that are not there are not remembered: 10,000 leave the cache small", async () => {
  const files = new StaticFiles(new URL("../../static/", import.meta.url));
  assert.ok(await files.get("dashboard/index.html"));
  for (let i = 0; i < 10_000; i++) {
    assert.equal(await files.get(`dashboard/missing-${i}.js`), null);
  }
  assert.equal(files.size, 1);
  // A file that appears later is served, not its earlier absence.
  const dir = await Deno.makeTempDir();
  try {
    const late = new StaticFiles(new URL(`file://${dir}/`));
    assert.equal(await late.get("late.js"), null);
    await Deno.writeTextFile(`${dir}/late.js`, "export {};");
    assert.equal((await late.get("late.js"))?.contentType, "text/javascript; charset=utf-8");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("GET /favicon.ico serves the dashboard's icon as an ICO, cached and revalidated as the page's files", async () => {
  const { app } = await testApp();
  const res = await app.request("/favicon.ico");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Content-Type"), "image/x-icon");
  assert.equal(res.headers.get("Cache-Control"), "no-cache");
  assert.equal(res.headers.get("X-Content-Type-Options"), "nosniff");
  const body = new Uint8Array(await res.arrayBuffer());
  assert.deepEqual(body, await Deno.readFile(new URL("favicon.ico", DASHBOARD_DIR)));
  // An ICO header (reserved 0, type 1) holding at least one image.
  const view = new DataView(body.buffer);
  assert.deepEqual([view.getUint16(0, true), view.getUint16(2, true)], [0, 1]);
  assert.ok(view.getUint16(4, true) >= 1);
  const etag = res.headers.get("ETag");
  assert.match(etag ?? "", /^"[0-9a-f]+"$/);
  const again = await app.request("/favicon.ico", { headers: { "If-None-Match": etag! } });
  assert.equal(again.status, 304);
  assert.equal(again.headers.get("ETag"), etag);
  const head = await app.request("/favicon.ico", { method: "HEAD" });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get("Content-Type"), "image/x-icon");
});
