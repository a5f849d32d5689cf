/**
 * The vendored uPlot (static/vendor/uplot/) is byte for byte the npm package
 * deno.lock pins, as `deno install` put it in Deno's npm cache; its licence
 * is kept next to it.
 */
import assert from "node:assert/strict";

const VENDOR_DIR = new URL("../../static/vendor/uplot/", import.meta.url);
const ROOT = new URL("../../", import.meta.url);

/** The version of `name` that deno.lock resolves deno.json's import of it to. */
async function lockedVersion(name: string): Promise<string> {
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  const specifier: string = config.imports?.[name] ?? "";
  assert.ok(specifier.startsWith("npm:"), `deno.json imports ${name} from npm: ${specifier}`);
  const lock = JSON.parse(await Deno.readTextFile(new URL("deno.lock", ROOT)));
  const version: string | undefined = lock.specifiers?.[specifier];
  assert.ok(version, `deno.lock resolves ${specifier}`);
  return version;
}

/** Deno's npm cache folder, as `deno info --json` reports it. */
async function npmCacheDir(): Promise<string> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  assert.ok(output.success, "deno info --json failed");
  return JSON.parse(new TextDecoder().decode(output.stdout)).npmCache;
}

Deno.test("the vendored uPlot files are the bytes of the npm package deno.lock pins", async () => {
  const version = await lockedVersion("uplot");
  const packageDir = `${await npmCacheDir()}/registry.npmjs.org/uplot/${version}`;
  const manifest = await Deno.readTextFile(`${packageDir}/package.json`).catch(() => {
    throw new Error(
      `uplot ${version} is not in Deno's npm cache at ${packageDir}: run deno install`,
    );
  });
  assert.equal(JSON.parse(manifest).version, version);
  for (
    const [vendored, packaged] of [
      ["uPlot.iife.min.js", "dist/uPlot.iife.min.js"],
      ["uPlot.min.css", "dist/uPlot.min.css"],
      ["LICENSE", "LICENSE"],
    ]
  ) {
    const ours = await Deno.readFile(new URL(vendored, VENDOR_DIR));
    const theirs = await Deno.readFile(`${packageDir}/${packaged}`);
    assert.ok(
      ours.length === theirs.length && ours.every((byte, i) => byte === theirs[i]),
      `static/vendor/uplot/${vendored} differs from uplot@${version}/${packaged}`,
    );
  }
  // The build names its version in its first line.
  const head = (await Deno.readTextFile(new URL("uPlot.iife.min.js", VENDOR_DIR))).slice(0, 80);
  assert.match(head, new RegExp(`\\(v${version.replaceAll(".", "\\.")}\\)`));
});
