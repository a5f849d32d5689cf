/**
 * Errors built from a list of names (every stream, a key's streams) name at most the first 10
 * and how many more, however long the list is.
 */
import assert from "node:assert/strict";
import { compileConfig } from "../../src/config/mod.ts";
import { listNames } from "../../src/telemetry/logging.ts";
import { KEYS, testApp } from "../_fixtures.ts";
import { call, setup } from "../fanout/webhooks/_setup.ts";

function manyStreams(count: number) {
  const streams: Record<string, unknown> = {};
  for (let i = 0; i < count; i++) streams[`s${String(i).padStart(4, "0")}`] = {};
  return { streams };
}

Deno.test("listNames writes the first names and how many more", () => {
  assert.equal(listNames([]), "");
  assert.equal(listNames(["a", "b"]), "a, b");
  assert.equal(listNames(["a", "b", "c"], 2), "a, b … and 1 more");
  assert.equal(listNames(new Set(["x".repeat(100)]), 1), `${"x".repeat(64)}… (100 characters)`);
});

Deno.test("a webhook for an unknown stream names 10 of 1,000 streams, not all", async () => {
  const ctx = await setup({ streams: compileConfig(manyStreams(1000)) });
  try {
    const res = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/x",
      streams: ["nope"],
    });
    assert.equal(res.status, 400, res.text);
    const message: string = res.body.error.message;
    assert.match(
      message,
      /unknown stream: nope; streams are: s0000, s0001, .*, s0009 … and 990 more$/,
    );
    assert.ok(res.text.length < 600, `${res.text.length} bytes`);
  } finally {
    await ctx.close();
  }
});

Deno.test("a key limited to 50 streams is refused another with 10 of them named", async () => {
  const { app } = await testApp({ auth: true, config: manyStreams(60) });
  const names = Array.from({ length: 50 }, (_, i) => `s${String(i).padStart(4, "0")}`);
  const created = await (await app.request("/v1/keys", {
    method: "POST",
    headers: { Authorization: `Bearer ${KEYS.admin}`, "Content-Type": "application/json" },
    body: JSON.stringify({ scopes: ["read"], streams: names }),
  })).json();
  const res = await app.request("/v1/streams/s0055", {
    headers: { Authorization: `Bearer ${created.key}` },
  });
  assert.equal(res.status, 403);
  const message: string = (await res.json()).error.message;
  assert.match(message, /limited to streams s0000, .*, s0009 … and 40 more: not 's0055'$/);
});
