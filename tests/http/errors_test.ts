import assert from "node:assert/strict";
import { Hono } from "hono";
import { ERROR_CODES, errorResponse } from "../../src/http/errors.ts";
import { StoreUnavailableError, StreamChangedError } from "../../src/store/mod.ts";

Deno.test("a 503 whose outcome is unknown advises a resend with the Idempotency-Key on ingest only, and a retry on reads, which applied nothing", async () => {
  const app = new Hono();
  app.onError((error, c) => errorResponse(error, c));
  app.all("*", () => {
    throw new StoreUnavailableError("Redis did not answer within 5000 ms");
  });
  const messageOf = async (method: string, path: string) => {
    const res = await app.request(path, { method });
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("Retry-After"), "1");
    const { error } = await res.json();
    // A read applies nothing, whatever became of its call.
    assert.deepEqual(error.details, {
      outcome: method === "GET" ? "not_applied" : "unknown",
    });
    return error.message;
  };
  assert.equal(
    await messageOf("POST", "/v1/streams/orders/events"),
    "Redis did not answer within 5000 ms; it may have been applied: resend with the same Idempotency-Key, or with dedupe ids, to be safe",
  );
  assert.equal(
    await messageOf("GET", "/v1/streams/orders/counters/n"),
    "Redis did not answer within 5000 ms; try again",
  );
  for (const [method, path] of [["POST", "/v1/webhooks"], ["DELETE", "/v1/keys/key_1"]]) {
    assert.equal(
      await messageOf(method, path),
      "Redis did not answer within 5000 ms; it may have been applied: read the state back before sending it again",
    );
  }
});

Deno.test("a batch of a stream deleted or created again meanwhile is a 503 stream_changed: nothing applied, retry", async () => {
  const app = new Hono();
  app.onError((error, c) => errorResponse(error, c));
  app.all("*", () => {
    throw new StreamChangedError("orders", 4);
  });
  const res = await app.request("/v1/streams/orders/events", { method: "POST" });
  assert.equal(res.status, 503);
  assert.equal(res.headers.get("Retry-After"), "1");
  const { error } = await res.json();
  assert.equal(error.code, "stream_changed");
  assert.deepEqual(error.details, { outcome: "not_applied" });
  assert.match(
    error.message,
    /^Stream 'orders' was deleted, created again or given new counters .*nothing was applied$/,
  );
});

Deno.test("README's Error codes table lists every code of ERROR_CODES with its statuses and its when, in order, and no other", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const section = readme.split("\n### Error codes\n")[1]?.split("\n### ")[0] ?? "";
  const rows = section.split("\n").filter((line) => /^\| `/.test(line)).map((line) => {
    // No cell holds a `|`: the row splits into code, status and when.
    const [code, status, when] = line.split("|").slice(1, -1).map((cell) => cell.trim());
    return [code.replaceAll("`", ""), status, when];
  });
  const expected = Object.entries(ERROR_CODES).map(([code, { status, when }]) => [
    code,
    status.map((value) => value === 0 ? "WebSocket frame" : String(value)).join(", "),
    when,
  ]);
  assert.ok(rows.length >= 50, `${rows.length} rows`);
  assert.deepEqual(rows, expected);
});

Deno.test("every code an ApiError is made with in src/ is a code of ERROR_CODES", async () => {
  // The type checker holds ApiError's code to ERROR_CODES; this catches a code written where the
  // type does not reach (a reply built by hand, a cast).
  const root = new URL("../../src/", import.meta.url);
  const codes = new Set(Object.keys(ERROR_CODES));
  const unknown: string[] = [];
  const walk = async (dir: URL): Promise<void> => {
    for await (const entry of Deno.readDir(dir)) {
      const url = new URL(entry.name + (entry.isDirectory ? "/" : ""), dir);
      if (entry.isDirectory) await walk(url);
      else if (entry.name.endsWith(".ts")) {
        const text = await Deno.readTextFile(url);
        const made = /ApiError\(\s*\d{3},\s*"([a-z_]+)"|\bcode: "([a-z]+(?:_[a-z]+)+)"/g;
        for (const match of text.matchAll(made)) {
          const code = match[1] ?? match[2];
          if (!codes.has(code)) unknown.push(`${entry.name}: ${code}`);
        }
      }
    }
  };
  await walk(root);
  assert.deepEqual(unknown, []);
});
