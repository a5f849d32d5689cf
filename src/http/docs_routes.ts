/**
 * The API reference at `GET /docs`: Swagger UI rendering `/openapi.json`.
 * Every file the page loads comes from `static/` in this repository
 * (Swagger UI vendored under `static/vendor/swagger-ui-dist/` with its
 * licence), so it works offline and under a strict Content-Security-Policy.
 * Like `/openapi.json`, these routes need no API key: they describe the API
 * and hold no data.
 *
 * @module
 */
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { noneMatchNames, strongETagOf } from "./_etag.ts";
import { headerListElements } from "./_header_list.ts";
import { unreadableFile } from "./_static_file.ts";
import { toHex } from "./auth.ts";

/** Where the files under `static/` are read from: the repository root's `static/`. */
const STATIC_ROOT = new URL("../../static/", import.meta.url);

const HTML = "text/html; charset=utf-8";
const JAVASCRIPT = "text/javascript; charset=utf-8";
const CSS = "text/css; charset=utf-8";
const PNG = "image/png";
const TEXT = "text/plain; charset=utf-8";

/** The page, and every file at an unversioned path: revalidated each time (cheap, by ETag). */
const REVALIDATE = "no-cache";
/**
 * A file at a versioned path (the version a hash of its folder's files): its bytes never change,
 * so a browser keeps it a year without asking again. An upgrade changes the path the page names.
 */
const IMMUTABLE = "public, max-age=31536000, immutable";

/**
 * The page's policy: everything from this origin only, plus `img-src data:`
 * because Swagger UI's stylesheet draws its icons as `data:` SVG images
 * (refused otherwise, as the browser test shows). Scripts and styles stay
 * `'self'` only, without `'unsafe-inline'` or `'unsafe-eval'`.
 */
export const DOCS_CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "img-src 'self' data:",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'self'",
  "frame-ancestors 'none'",
].join("; ");

/** URL path of the vendored Swagger UI files (`static/vendor/swagger-ui-dist/`). */
export const SWAGGER_UI_PATH = "/static/vendor/swagger-ui-dist";

/** Options for {@linkcode answerWith}. */
export interface AnswerOptions {
  /** `Cache-Control` of the response. @default {"no-cache"} */
  cacheControl?: string;
  /** More response headers (e.g. `Content-Security-Policy`). @default {{}} */
  headers?: Record<string, string>;
}

/** A representation as served: its bytes, gzipped once when it is text, and its strong ETag. */
export interface ServedBytes {
  /** The bytes sent without `Content-Encoding`. */
  bytes: Uint8Array<ArrayBuffer>;
  /** The same, gzipped; sent to clients that accept gzip. */
  gzipped?: Uint8Array<ArrayBuffer>;
  /** The strong ETag of `bytes` (the gzipped one ends in `-gzip"`). */
  etag: string;
}

/**
 * The answer to `c` with `served`: gzipped when the client accepts it, 304 on a matching
 * `If-None-Match`, with its ETag, `Vary: Accept-Encoding`, `Cache-Control` (default
 * `no-cache`) and `X-Content-Type-Options: nosniff`.
 */
export function answerWith(
  c: Context,
  served: ServedBytes,
  contentType: string,
  options: AnswerOptions = {},
): Response {
  const { bytes, gzipped, etag } = served;
  const gzip = gzipped !== undefined && acceptsGzip(c.req.header("Accept-Encoding"));
  // Each encoding is its own representation, so its strong ETag differs.
  const tag = gzip ? `${etag.slice(0, -1)}-gzip"` : etag;
  const headers: Record<string, string> = {
    "Cache-Control": options.cacheControl ?? REVALIDATE,
    "ETag": tag,
    "Vary": "Accept-Encoding",
    "X-Content-Type-Options": "nosniff",
    ...options.headers,
  };
  if (noneMatchNames(c.req.header("If-None-Match"), tag)) return c.body(null, 304, headers);
  const body = gzip ? gzipped : bytes;
  headers["Content-Type"] = contentType;
  headers["Content-Length"] = String(body.length);
  if (gzip) headers["Content-Encoding"] = "gzip";
  return c.body(body, 200, headers);
}

async function loadFile(url: URL, root: URL, compress: boolean): Promise<ServedBytes> {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = await Deno.readFile(url);
  } catch (error) {
    throw unreadableFile(url, root, error);
  }
  return await servedBytes(bytes, compress);
}

/** `bytes` as served: with its strong ETag (a SHA-256 prefix), and gzipped once if `compress`. */
export async function servedBytes(
  bytes: Uint8Array<ArrayBuffer>,
  compress: boolean,
): Promise<ServedBytes> {
  const gzipped = compress
    ? await new Response(new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip")))
      .bytes()
    : undefined;
  return { bytes, gzipped, etag: await strongETagOf(bytes) };
}

/**
 * Whether an `Accept-Encoding` accepts gzip (RFC 9110 §12.5.3): by its own entry when it names
 * gzip, whose `q=0` refuses it though `*` accepts the rest, else by `*`.
 */
function acceptsGzip(header: string | undefined): boolean {
  let gzip: boolean | undefined;
  let any: boolean | undefined;
  for (const part of headerListElements(header)) {
    const [coding, ...params] = part.split(";").map((item) => item.trim().toLowerCase());
    const accepted = !params.some((p) => /^q=0(\.0*)?$/.test(p));
    if (coding === "gzip") gzip = gzip === undefined ? accepted : gzip && accepted;
    else if (coding === "*") any = any === undefined ? accepted : any && accepted;
  }
  return gzip ?? any ?? false;
}

/** A folder's files as served, and the version naming them: a hash of all their bytes. */
interface AssetSet {
  version: string;
  files: Map<string, ServedBytes>;
}

/** Reads the files `names` under `dir` (in the static folder `root`) once, gzipping text ones. */
async function loadAssetSet(
  dir: URL,
  root: URL,
  names: [string, string][],
): Promise<AssetSet> {
  const files = new Map<string, ServedBytes>();
  for (const [name, contentType] of names) {
    files.set(
      name,
      await loadFile(new URL(name, dir), root, contentType.startsWith("text/")),
    );
  }
  const tags = [...files].map(([name, served]) => `${name} ${served.etag}`).join("\n");
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(tags)),
  );
  const version = toHex(digest.subarray(0, 8));
  return { version, files };
}

/** The page's own files besides it (`static/docs/`), served under `/docs/`. */
const DOCS_FILES: [string, string][] = [["init.js", JAVASCRIPT], ["docs.css", CSS]];

/** The vendored Swagger UI files (`static/vendor/swagger-ui-dist/`). */
const VENDORED_FILES: [string, string][] = [
  ["swagger-ui-bundle.js", JAVASCRIPT],
  ["swagger-ui.css", CSS],
  ["favicon-32x32.png", PNG],
  // The bundle's first line points at its licence file, next to it (so under the same version).
  ["swagger-ui-bundle.js.LICENSE.txt", TEXT],
  ["LICENSE", TEXT],
  ["NOTICE", TEXT],
];

/** Options for {@linkcode registerDocsRoutes}. */
export interface DocsRouteOptions {
  /** Folder holding `docs/` and `vendor/swagger-ui-dist/`. @default {the repository's `static/`} */
  staticDir?: URL;
}

/**
 * Registers `GET /docs`, its script `init.js`, its stylesheet `docs.css` (contrast fixes over
 * Swagger UI's) and the vendored Swagger UI files.
 *
 * The page names its files at versioned paths, `/docs/{version}/init.js` and
 * `/static/vendor/swagger-ui-dist/{version}/swagger-ui-bundle.js`, where each folder's version is
 * a hash of its files' bytes: those are cached for a year (`immutable`), and the page, revalidated
 * on each load, names new paths once any of them changes, so a browser never pairs a new
 * `init.js` with an old bundle. A version that is not this server's is 404 (never other bytes
 * under its name). The unversioned paths stay, revalidated on each load.
 */
export function registerDocsRoutes(app: OpenAPIHono, options: DocsRouteOptions = {}): void {
  const root = options.staticDir ?? STATIC_ROOT;
  const docsDir = new URL("docs/", root);
  const vendorDir = new URL("vendor/swagger-ui-dist/", root);
  let loaded: Promise<{ page: ServedBytes; docs: AssetSet; vendored: AssetSet }> | undefined;
  function load() {
    loaded ??= (async () => {
      const [docs, vendored, html] = await Promise.all([
        loadAssetSet(docsDir, root, DOCS_FILES),
        loadAssetSet(vendorDir, root, VENDORED_FILES),
        loadFile(new URL("index.html", docsDir), root, false),
      ]);
      const text = new TextDecoder().decode(html.bytes)
        .replaceAll(`"${SWAGGER_UI_PATH}/`, `"${SWAGGER_UI_PATH}/${vendored.version}/`)
        .replaceAll('"/docs/', `"/docs/${docs.version}/`);
      const page = await servedBytes(new TextEncoder().encode(text), true);
      return { page, docs, vendored };
    })().catch((error) => {
      loaded = undefined; // a file restored later is served without a restart
      throw error;
    });
    return loaded;
  }

  app.get("/docs", async (c) =>
    answerWith(c, (await load()).page, HTML, {
      headers: {
        "Content-Security-Policy": DOCS_CONTENT_SECURITY_POLICY,
        // As the dashboard page: its links name no page of this server to another site.
        "Referrer-Policy": "no-referrer",
      },
    }));
  const folders: [
    string,
    (assets: Awaited<ReturnType<typeof load>>) => AssetSet,
    [string, string][],
  ][] = [
    ["/docs", (assets) => assets.docs, DOCS_FILES],
    [SWAGGER_UI_PATH, (assets) => assets.vendored, VENDORED_FILES],
  ];
  for (const [path, setOf, names] of folders) {
    for (const [name, contentType] of names) {
      app.get(`${path}/${name}`, async (c) => {
        const served = setOf(await load()).files.get(name)!;
        return answerWith(c, served, contentType);
      });
      app.get(`${path}/:version/${name}`, async (c) => {
        const set = setOf(await load());
        if (c.req.param("version") !== set.version) return c.notFound();
        return answerWith(c, set.files.get(name)!, contentType, { cacheControl: IMMUTABLE });
      });
    }
  }
}
