import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";

Deno.test("offset-less times in events, counter queries and webhook replay are UTC under TZ=America/New_York", async () => {
  const cases = fileURLToPath(new URL("./_new_york_cases.ts", import.meta.url));
  // The child keeps this environment (it reads the module cache from it) and
  // only changes the time zone.
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["test", "--cached-only", "--no-check", "-A", cases],
    env: { ...Deno.env.toObject(), TZ: "America/New_York", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, text);
  assert.match(text, /ok \| 3 passed \| 0 failed/);
});
