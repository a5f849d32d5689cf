import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { requestLog } from "../../src/http/request_log.ts";
import { jsonLines, writtenLogs } from "../_logs.ts";
import { OpenAPIHono } from "@hono/zod-openapi";
import {
  DOCS_CONTENT_SECURITY_POLICY,
  registerDocsRoutes,
  SWAGGER_UI_PATH,
} from "../../src/http/docs_routes.ts";
import { errorResponse } from "../../src/http/errors.ts";
import { testApp } from "../_fixtures.ts";

const ROOT = new URL("../../", import.meta.url);
const VENDOR_DIR = new URL("static/vendor/swagger-ui-dist/", ROOT);

/** The `src`/`href` URLs a page loads (scripts, stylesheets, icons). */
function assetsOf(html: string): string[] {
  return [...html.matchAll(/<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)"/g)].map((m) => m[1]);
}

Deno.test("GET /docs serves the reference page under a strict CSP, without an API key", async () => {
  const { app } = await testApp({ auth: true });
  const res = await app.request("/docs");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("Content-Type"), "text/html; charset=utf-8");
  assert.equal(res.headers.get("Cache-Control"), "no-cache");
  assert.equal(res.headers.get("X-Content-Type-Options"), "nosniff");
  const csp = res.headers.get("Content-Security-Policy") ?? "";
  assert.equal(csp, DOCS_CONTENT_SECURITY_POLICY);
  // As the README's API reference section writes it.
  assert.equal(
    csp,
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  );
  const directives = new Map(
    csp.split(";").map((d) => {
      const [name, ...sources] = d.trim().split(/\s+/);
      return [name, sources];
    }),
  );
  assert.deepEqual(directives.get("default-src"), ["'self'"]);
  assert.deepEqual(directives.get("img-src"), ["'self'", "data:"]);
  assert.deepEqual(directives.get("frame-ancestors"), ["'none'"]);
  assert.deepEqual(directives.get("object-src"), ["'none'"]);
  // Scripts and styles fall back to default-src: 'self' only, nothing inline or eval'd.
  assert.equal(directives.has("script-src"), false);
  assert.equal(directives.has("style-src"), false);
  assert.doesNotMatch(csp, /unsafe|https?:|\*/);
  const html = await res.text();
  assert.match(html, /<main>\s*<div id="swagger-ui"><\/div>\s*<\/main>/);
  assert.doesNotMatch(html, /<script>|<style|style=/, "no inline script or style");
});

/** A hash-of-the-files version in a path (`/docs/{version}/init.js`). */
const VERSION = "[0-9a-f]{16}";

Deno.test("every file /docs loads is served by edgestream, without an API key, typed, at a versioned path cached for a year", async () => {
  const { app } = await testApp({ auth: true });
  const assets = assetsOf(await (await app.request("/docs")).text());
  const patterns = [
    `${SWAGGER_UI_PATH}/(${VERSION})/swagger-ui.css`,
    `/docs/(${VERSION})/docs.css`,
    `${SWAGGER_UI_PATH}/(${VERSION})/favicon-32x32.png`,
    `${SWAGGER_UI_PATH}/(${VERSION})/swagger-ui-bundle.js`,
    `/docs/(${VERSION})/init.js`,
  ];
  assert.equal(assets.length, patterns.length, assets.join(", "));
  patterns.forEach((pattern, i) => assert.match(assets[i], new RegExp(`^${pattern}$`)));
  // One version per folder: the bundle's licence comment names a file next to it.
  const versions = assets.map((path) => path.split("/").at(-2));
  assert.equal(new Set(versions.filter((_, i) => assets[i].startsWith(SWAGGER_UI_PATH))).size, 1);
  assert.equal(new Set(versions.filter((_, i) => assets[i].startsWith("/docs/"))).size, 1);
  const expected: Record<string, string> = {
    css: "text/css; charset=utf-8",
    png: "image/png",
    js: "text/javascript; charset=utf-8",
  };
  for (const path of assets) {
    const res = await app.request(path);
    assert.equal(res.status, 200, path);
    assert.equal(res.headers.get("Content-Type"), expected[path.split(".").pop()!], path);
    assert.equal(res.headers.get("X-Content-Type-Options"), "nosniff", path);
    assert.equal(res.headers.get("Cache-Control"), "public, max-age=31536000, immutable", path);
    const bytes = await res.bytes();
    const name = path.split("/").at(-1)!;
    const dir = path.startsWith(SWAGGER_UI_PATH) ? VENDOR_DIR : new URL("static/docs/", ROOT);
    assert.deepEqual(bytes, await Deno.readFile(new URL(name, dir)), path);
    // The unversioned path serves the same bytes, revalidated on each load (an older page's).
    const unversioned = await app.request(path.replace(/\/[0-9a-f]{16}\//, "/"));
    assert.equal(unversioned.status, 200, path);
    assert.equal(unversioned.headers.get("Cache-Control"), "no-cache", path);
    assert.deepEqual(await unversioned.bytes(), bytes, path);
    // Another version is not this server's: 404, never these bytes under its name.
    const other = await app.request(path.replace(/\/[0-9a-f]{16}\//, "/0123456789abcdef/"));
    assert.equal(other.status, 404, path);
    assert.equal((await other.json()).error.code, "not_found", path);
  }
  // The script the page runs renders the public OpenAPI document of this server.
  const init = await (await app.request(assets[4])).text();
  assert.match(init, /url: "\/openapi\.json"/);
  assert.match(init, /validatorUrl: null/);
  assert.equal((await app.request("/openapi.json")).status, 200);
  for (const name of ["LICENSE", "NOTICE", "swagger-ui-bundle.js.LICENSE.txt"]) {
    for (
      const path of [`${SWAGGER_UI_PATH}/${name}`, `${SWAGGER_UI_PATH}/${versions[0]}/${name}`]
    ) {
      const res = await app.request(path);
      assert.equal(res.status, 200, path);
      assert.equal(res.headers.get("Content-Type"), "text/plain; charset=utf-8", path);
      await res.body?.cancel();
    }
  }
});

/** Copies `static/docs/` and `static/vendor/swagger-ui-dist/` into a new temporary folder. */
async function copyDocsFiles(): Promise<URL> {
  const dir = await Deno.makeTempDir({ prefix: "edgestream_docs_static_" });
  const root = new URL(`file://${dir}/`);
  for (const folder of ["docs/", "vendor/swagger-ui-dist/"]) {
    const from = new URL(`static/${folder}`, ROOT);
    await Deno.mkdir(new URL(folder, root), { recursive: true });
    for await (const entry of Deno.readDir(from)) {
      await Deno.copyFile(new URL(entry.name, from), new URL(`${folder}${entry.name}`, root));
    }
  }
  return root;
}

async function docsAssets(staticDir: URL): Promise<string[]> {
  const app = new OpenAPIHono();
  registerDocsRoutes(app, { staticDir });
  const res = await app.request("/docs");
  assert.equal(res.headers.get("Cache-Control"), "no-cache");
  return assetsOf(await res.text());
}

Deno.test("an upgraded init.js or Swagger UI changes the paths /docs names: no browser pairs a new script with an old bundle", async () => {
  const root = await copyDocsFiles();
  try {
    const before = await docsAssets(root);
    const bundleOf = (assets: string[]) =>
      assets.find((path) => path.endsWith("/swagger-ui-bundle.js"));
    const initOf = (assets: string[]) => assets.find((path) => path.endsWith("/init.js"));

    await Deno.writeTextFile(new URL("docs/init.js", root), "// a new init.js\n", { append: true });
    const newInit = await docsAssets(root);
    assert.notEqual(initOf(newInit), initOf(before));
    assert.equal(bundleOf(newInit), bundleOf(before), "the bundle's path stays: cached still");

    await Deno.writeTextFile(
      new URL("vendor/swagger-ui-dist/swagger-ui-bundle.js", root),
      "// a new Swagger UI\n",
      { append: true },
    );
    const newBundle = await docsAssets(root);
    assert.notEqual(bundleOf(newBundle), bundleOf(newInit));
    assert.notEqual(
      newBundle.find((path) => path.endsWith("/swagger-ui.css")),
      before.find((path) => path.endsWith("/swagger-ui.css")),
      "every vendored file moves with the version: the bundle's licence file is named next to it",
    );
    assert.equal(initOf(newBundle), initOf(newInit));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("static files answer 304 to their ETag and send gzip to clients that accept it", async () => {
  const { app } = await testApp();
  const path = `${SWAGGER_UI_PATH}/swagger-ui-bundle.js`;
  const plain = await app.request(path);
  const etag = plain.headers.get("ETag")!;
  assert.match(etag, /^"[0-9a-f]{32}"$/);
  assert.equal(plain.headers.get("Content-Encoding"), null);
  const bytes = await plain.bytes();
  assert.equal(plain.headers.get("Content-Length"), String(bytes.length));

  const gzip = await app.request(path, { headers: { "Accept-Encoding": "br, gzip" } });
  assert.equal(gzip.headers.get("Content-Encoding"), "gzip");
  assert.equal(gzip.headers.get("Vary"), "Accept-Encoding");
  const gzipEtag = gzip.headers.get("ETag")!;
  assert.notEqual(gzipEtag, etag);
  const compressed = await gzip.bytes();
  assert.ok(compressed.length < bytes.length / 2, `gzip: ${compressed.length} of ${bytes.length}`);
  const unzipped = await new Response(
    new Blob([compressed]).stream().pipeThrough(new DecompressionStream("gzip")),
  ).bytes();
  assert.deepEqual(unzipped, bytes);

  // gzip refused by name stays refused when `*` accepts the rest (RFC 9110 §12.5.3), and a
  // q of 0 written "Q=0" is still 0; gzip named with a q above 0 is accepted.
  for (const encoding of ["gzip;q=0", "gzip;q=0, *", "*, gzip;q=0.000", "gzip; Q=0, *;q=1"]) {
    const refused = await app.request(path, { headers: { "Accept-Encoding": encoding } });
    assert.equal(refused.headers.get("Content-Encoding"), null, encoding);
    await refused.body?.cancel();
  }
  for (const encoding of ["*;q=0, gzip", "gzip;q=0.001", "*", "GZIP"]) {
    const accepted = await app.request(path, { headers: { "Accept-Encoding": encoding } });
    assert.equal(accepted.headers.get("Content-Encoding"), "gzip", encoding);
    await accepted.body?.cancel();
  }

  for (const tag of [etag, `W/${etag}`, `"other", ${etag}`]) {
    const res = await app.request(path, { headers: { "If-None-Match": tag } });
    assert.equal(res.status, 304, tag);
    assert.equal(res.headers.get("ETag"), etag);
    assert.equal(await res.text(), "");
  }
  const stale = await app.request(path, { headers: { "If-None-Match": '"other"' } });
  assert.equal(stale.status, 200);
  await stale.body?.cancel();
  const png = await app.request(`${SWAGGER_UI_PATH}/favicon-32x32.png`, {
    headers: { "Accept-Encoding": "gzip" },
  });
  assert.equal(png.headers.get("Content-Encoding"), null, "images are not gzipped again");
  await png.body?.cancel();
});

Deno.test("/docs answers 421 in open mode to a Host that is not loopback, like /openapi.json", async () => {
  const { app } = await testApp();
  for (const path of ["/docs", "/openapi.json", `${SWAGGER_UI_PATH}/swagger-ui.css`]) {
    const res = await app.request(`http://rebound.example${path}`);
    assert.equal(res.status, 421, path);
    await res.body?.cancel();
  }
});

Deno.test("a vendored file missing from static/ makes /docs a 500 that names it, logged; the next request reads the files again", async () => {
  const root = await copyDocsFiles();
  try {
    const missing = new URL("vendor/swagger-ui-dist/swagger-ui.css", root);
    const kept = await Deno.readFile(missing);
    await Deno.remove(missing);
    const app = new OpenAPIHono();
    app.use(requestLog());
    app.onError(errorResponse);
    registerDocsRoutes(app, { staticDir: root });
    for (const path of ["/docs", `${SWAGGER_UI_PATH}/swagger-ui-bundle.js`]) {
      const { res, lines } = await writtenLogs(async (lines) => ({
        res: await app.request(path),
        lines,
      }));
      assert.equal(res.status, 500, path);
      assert.equal((await res.json()).error.code, "internal_error");
      const [line] = jsonLines(lines, "edgestream.http");
      assert.equal(line.status, 500);
      assert.equal(line.level, "error");
      // The file's path under the staticDir given, not where the repository's static/ keeps it.
      const cause = line.cause as { message: string };
      assert.ok(
        cause.message.startsWith(`Cannot read ${fileURLToPath(missing)}: `),
        `${path}: ${cause.message}`,
      );
      assert.match(cause.message, /No such file/, path);
      assert.ok(
        cause.message.endsWith(` (is ${fileURLToPath(root)} part of the deployment?)`),
        `${path}: ${cause.message}`,
      );
    }
    // Restored: served without a restart (a failed load is not kept).
    await Deno.writeFile(missing, kept);
    const res = await app.request("/docs");
    assert.equal(res.status, 200);
    assert.ok(assetsOf(await res.text()).some((path) => path.endsWith("/swagger-ui.css")));
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

/** Where Deno keeps the npm package `name@version` it installed from the lockfile. */
async function cachedPackageDir(name: string, version: string): Promise<URL> {
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.ok(info.success, "deno info --json failed");
  const { npmCache } = JSON.parse(new TextDecoder().decode(info.stdout)) as { npmCache: string };
  const registry = new URL(Deno.env.get("NPM_CONFIG_REGISTRY") ?? "https://registry.npmjs.org/");
  return new URL(`file://${npmCache}/${registry.hostname}/${name}/${version}/`);
}

Deno.test("the vendored Swagger UI files are the locked npm package's bytes", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const lock = JSON.parse(await Deno.readTextFile(new URL("deno.lock", ROOT)));
  const specifier: string = config.imports["swagger-ui-dist"];
  assert.match(specifier, /^npm:swagger-ui-dist@\d+\.\d+\.\d+$/, "pinned to one version");
  const version: string = lock.specifiers[specifier];
  assert.ok(version, `deno.lock has no entry for ${specifier}`);
  const cached = await cachedPackageDir("swagger-ui-dist", version);

  const vendored: string[] = [];
  for await (const entry of Deno.readDir(VENDOR_DIR)) vendored.push(entry.name);
  vendored.sort();
  assert.deepEqual(vendored, [
    "LICENSE",
    "NOTICE",
    "favicon-32x32.png",
    "swagger-ui-bundle.js",
    "swagger-ui-bundle.js.LICENSE.txt",
    "swagger-ui.css",
  ]);
  for (const name of vendored) {
    let expected: Uint8Array;
    try {
      expected = await Deno.readFile(new URL(name, cached));
    } catch (error) {
      throw new Error(
        `Cannot read ${name} of npm:swagger-ui-dist@${version} in Deno's cache (run deno install): ${
          (error as Error).message
        }`,
      );
    }
    const actual = await Deno.readFile(new URL(name, VENDOR_DIR));
    assert.ok(
      actual.length === expected.length && actual.every((byte, i) => byte === expected[i]),
      `static/vendor/swagger-ui-dist/${name} differs from npm:swagger-ui-dist@${version}: ` +
        `copy it again from ${new URL(name, cached).pathname}`,
    );
  }
});

Deno.test("the vendored Swagger UI bundle is the README's 1.7 MB, 0.46 MB gzipped", async () => {
  const bundle = await Deno.readFile(new URL("swagger-ui-bundle.js", VENDOR_DIR));
  const gzipped = await new Response(
    new Blob([bundle]).stream().pipeThrough(new CompressionStream("gzip")),
  ).arrayBuffer();
  assert.equal((bundle.length / 1e6).toFixed(1), "1.7");
  assert.equal((gzipped.byteLength / 1e6).toFixed(2), "0.46");
});
