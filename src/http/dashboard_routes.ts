/**
 * The dashboard: `GET /` serves `static/dashboard/index.html`, and
 * `/static/dashboard/*` and `/static/vendor/uplot/*` the page's own modules
 * and the vendored uPlot chart library (with its `LICENSE`), and `GET /sdk.js` the browser SDK
 * (`static/sdk/sdk.js`, which any origin may load), and `GET /favicon.ico` the
 * dashboard's icon (`static/dashboard/favicon.ico`), all from files in
 * `static/` at the repository root. Files are read at run time (Deno Deploy includes them in
 * the deployment) rather than imported as text, which older Deno versions
 * allow only behind a flag; each is read once and then served from memory.
 *
 * The page is strict about where it talks to: its `Content-Security-Policy`
 * allows scripts, styles and connections from this origin only, with no
 * inline script or style attribute (uPlot styles through the CSSOM, which the
 * policy does not restrict). The page learns from one `<meta>` whether the
 * server wants a key, and from another whether it has webhooks (and from
 * `GET /v1/key` whether its key may list them); a key typed into it stays in
 * the tab's `sessionStorage` and travels only in the `Authorization` header, never in
 * a URL (live results are read from the SSE endpoint with `fetch`, not
 * `EventSource`, for that reason).
 *
 * @module
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import { noneMatchNames, strongETagOf } from "./_etag.ts";
import { unreadableFile } from "./_static_file.ts";
import { ApiError, methodNotAllowed } from "./errors.ts";
import { quoteInput } from "../telemetry/logging.ts";

/** The dashboard page's `Content-Security-Policy`. */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** Content types by file extension; files with other extensions are not served. */
const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
};

/**
 * Files without an extension served as text: the licence files vendored libraries come with
 * (`static/vendor/uplot/LICENSE`), which their terms ask to ship along with the code.
 */
const TEXT_FILE_NAMES = new Set(["LICENSE", "NOTICE"]);

/** The content type a file at `path` is served with, or undefined when it is not served. */
function contentTypeOf(path: string): string | undefined {
  const name = path.slice(path.lastIndexOf("/") + 1);
  if (TEXT_FILE_NAMES.has(name)) return "text/plain; charset=utf-8";
  return CONTENT_TYPES[extensionOf(name)];
}

/** A file name without directories or dot segments: what `:file` may name. */
const FILE_NAME = /^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$/;

/** Options for {@linkcode registerDashboardRoutes}. */
export interface DashboardRouteOptions {
  /** True in open mode (no API keys): the page then asks for no key. */
  open: boolean;
  /** Whether the app has webhooks: the page asks for their list only then. @default {false} */
  webhooks?: boolean;
  /** Folder holding `dashboard/` and `vendor/`. @default {the repository's `static/`} */
  staticDir?: URL;
}

interface StaticFile {
  body: Uint8Array<ArrayBuffer>;
  contentType: string;
  etag: string;
}

function extensionOf(name: string): string {
  const dot = name.lastIndexOf(".");
  return dot < 0 ? "" : name.slice(dot).toLowerCase();
}

/**
 * The bytes of static files, read once each. A missing file is not remembered: any client may
 * name any file, and a map of every name asked for would grow without bound.
 */
export class StaticFiles {
  #dir: URL;
  #files = new Map<string, Promise<StaticFile | null>>();

  /** Reads files under `dir`. */
  constructor(dir: URL) {
    this.#dir = dir;
  }

  /** The error for a file at `path` the server serves at a fixed path, not found here. */
  missing(path: string): Error {
    return unreadableFile(new URL(path, this.#dir), this.#dir);
  }

  /** How many files are held or being read. */
  get size(): number {
    return this.#files.size;
  }

  /** The file at `path` under the static folder, or null when it does not exist. */
  get(path: string, transform?: (text: string) => string): Promise<StaticFile | null> {
    let file = this.#files.get(path);
    if (!file) {
      file = this.#read(path, transform);
      this.#files.set(path, file);
      // A file not there, or a read that failed, is read again next time: only files kept.
      const forget = () => {
        if (this.#files.get(path) === file) this.#files.delete(path);
      };
      file.then((found) => found ?? forget(), forget);
    }
    return file;
  }

  async #read(path: string, transform?: (text: string) => string): Promise<StaticFile | null> {
    const contentType = contentTypeOf(path);
    if (!contentType) return null;
    let body: Uint8Array<ArrayBuffer>;
    try {
      body = await Deno.readFile(new URL(path, this.#dir));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound || error instanceof Deno.errors.IsADirectory) {
        return null;
      }
      throw error;
    }
    if (transform) body = new TextEncoder().encode(transform(new TextDecoder().decode(body)));
    return { body, contentType, etag: await strongETagOf(body) };
  }
}

/** The methods a static file takes. */
const FILE_METHODS = ["GET", "HEAD"];

function notFound(path: string): ApiError {
  return new ApiError(404, "not_found", `No dashboard file at ${quoteInput(path)}`);
}

function respond(
  request: Request,
  file: StaticFile,
  headers: Record<string, string> = {},
): Response {
  const common = {
    "Content-Type": file.contentType,
    // Revalidated on every load, so an upgraded server's files are used at once.
    "Cache-Control": "no-cache",
    "ETag": file.etag,
    "X-Content-Type-Options": "nosniff",
    ...headers,
  };
  if (noneMatchNames(request.headers.get("If-None-Match"), file.etag)) {
    return new Response(null, { status: 304, headers: common });
  }
  return new Response(file.body, { status: 200, headers: common });
}

/**
 * Registers `GET /` (the dashboard page) and the page's static files under
 * `/static/dashboard/` and `/static/vendor/uplot/`.
 *
 * @example
 * ```ts
 * import { OpenAPIHono } from "@hono/zod-openapi";
 * import { registerDashboardRoutes } from "./dashboard_routes.ts";
 *
 * const app = new OpenAPIHono();
 * registerDashboardRoutes(app, { open: true });
 * const res = await app.request("/");
 * console.log(res.headers.get("Content-Security-Policy")); // default-src 'self'; …
 * ```
 */
export function registerDashboardRoutes(app: OpenAPIHono, options: DashboardRouteOptions): void {
  const files = new StaticFiles(options.staticDir ?? new URL("../../static/", import.meta.url));
  const auth = options.open ? "none" : "key";

  app.get("/", async (c) => {
    const page = await files.get(
      "dashboard/index.html",
      (text) =>
        text.replace('content="{{auth}}"', `content="${auth}"`)
          .replace('content="{{webhooks}}"', `content="${options.webhooks ? "on" : "off"}"`),
    );
    if (!page) throw files.missing("dashboard/index.html");
    return respond(c.req.raw, page, {
      "Content-Security-Policy": DASHBOARD_CSP,
      "Referrer-Policy": "no-referrer",
    });
  });

  // The browser SDK is loaded by pages on other origins, as a module script,
  // which browsers fetch with CORS: it is public, so any origin may load it.
  app.get("/sdk.js", async (c) => {
    const file = await files.get("sdk/sdk.js");
    if (!file) throw files.missing("sdk/sdk.js");
    return respond(c.req.raw, file, {
      "Access-Control-Allow-Origin": "*",
      "Cross-Origin-Resource-Policy": "cross-origin",
    });
  });

  // Browsers and crawlers ask for /favicon.ico whatever a page links: the dashboard's icon, as an
  // ICO, rather than a 404 in every visitor's log.
  app.get("/favicon.ico", async (c) => {
    const file = await files.get("dashboard/favicon.ico");
    if (!file) throw files.missing("dashboard/favicon.ico");
    return respond(c.req.raw, file);
  });

  // Every method, so that a file not there is 404 whatever the method (a 405 would say it is).
  // The SDK's module too: the dashboard reads its subscriptions with the SDK's SSE reader.
  for (const folder of ["dashboard", "vendor/uplot", "sdk"]) {
    app.all(`/static/${folder}/:file`, async (c) => {
      const name = c.req.param("file");
      // The page itself is served only at `/`, with its policy.
      const servable = FILE_NAME.test(name) && extensionOf(name) !== ".html";
      const file = servable ? await files.get(`${folder}/${name}`) : null;
      if (!file) throw notFound(c.req.path);
      const method = c.req.method;
      if (method === "GET" || method === "HEAD") return respond(c.req.raw, file);
      if (method === "OPTIONS") return c.body(null, 204, { Allow: FILE_METHODS.join(", ") });
      throw methodNotAllowed(c.req.path, method, FILE_METHODS);
    });
  }
}
