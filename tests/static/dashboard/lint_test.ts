/**
 * The dashboard's modules run in the browser only, so no type check covers
 * them: at least every name they use must be defined (imported, declared or
 * a global both Deno and browsers know; browser-only globals are read from
 * `globalThis`).
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

Deno.test("the dashboard's modules use no undefined name", async () => {
  const dir = new URL("../../../static/dashboard/", import.meta.url);
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["lint", "--rules-include=no-undef", fileURLToPath(dir)],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  assert.ok(output.success, text);
});
