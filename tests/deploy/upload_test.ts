/**
 * deploy/README.md, step 4: `static/` is part of the app, read at run time, and nothing in the
 * repository excludes it from what is deployed. A deploy tool may honour `deno.json`'s top-level
 * `exclude` as well as `deploy.exclude`, so neither may name it or a file under it.
 */
import assert from "node:assert/strict";

const root = new URL("../../", import.meta.url);

/** Whether an exclude pattern (a path prefix or a glob, relative to the root) covers `path`. */
function covers(pattern: string, path: string): boolean {
  const trimmed = pattern.replace(/^\.\//, "").replace(/\/$/, "");
  if (path === trimmed || path.startsWith(`${trimmed}/`)) return true;
  // Globs: `*` within a name, `**` across folders.
  const source = trimmed.split("**").map((part) =>
    part.split("*").map((text) => text.replace(/[.+?^${}()|[\]\\]/g, "\\$&")).join("[^/]*")
  ).join(".*");
  return new RegExp(`^${source}(/.*)?$`).test(path);
}

async function filesUnder(folder: string): Promise<string[]> {
  const found: string[] = [];
  for await (const entry of Deno.readDir(new URL(folder, root))) {
    const path = `${folder}/${entry.name}`;
    if (entry.isDirectory) found.push(...await filesUnder(path));
    else found.push(path);
  }
  return found;
}

Deno.test("deno.json excludes nothing under static/ from a deployment: the dashboard, /docs and /sdk.js read it at run time", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", root)));
  const patterns: string[] = [...config.exclude ?? [], ...config.deploy?.exclude ?? []];
  const files = await filesUnder("static");
  // The vendored libraries are the files a formatter exclusion most easily spreads to.
  assert.ok(files.includes("static/vendor/uplot/uPlot.iife.min.js"));
  assert.ok(files.includes("static/vendor/swagger-ui-dist/swagger-ui-bundle.js"));
  for (const file of files) {
    const pattern = patterns.find((each) => covers(each, file));
    assert.equal(pattern, undefined, `${file} is excluded by ${pattern}`);
  }
  const include: string[] | undefined = config.deploy?.include ?? config.include;
  if (include !== undefined) {
    for (const file of files) assert.ok(include.some((each) => covers(each, file)), file);
  }
  // The pattern reader itself: what the old top-level exclude held is seen.
  assert.ok(covers("static/vendor/", "static/vendor/uplot/uPlot.iife.min.js"));
  assert.ok(covers("static/**/*.js", "static/dashboard/main.js"));
  assert.ok(!covers("coverage/", "static/dashboard/main.js"));
});
