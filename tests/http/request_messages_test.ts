/**
 * A request part's 400 in words: a field the body lacks is said to be missing (with what it takes),
 * as an event's is, not zod's "Invalid input" or "expected string, received undefined"; a field
 * that is there but wrong still says what it got. Keys, webhooks and stream definitions (whose
 * checks the config file shares).
 */
import assert from "node:assert/strict";
import { compileConfig, ConfigError } from "../../src/config/mod.ts";
import { ADMIN_KEY, call, setup } from "../fanout/webhooks/_setup.ts";

Deno.test("a request body missing a required field says so; a wrong one says what it got", async () => {
  const ctx = await setup({ auth: true });
  try {
    const hook = await call(ctx.app, "POST", "/v1/webhooks", {
      url: "http://127.0.0.1:9/hook",
    }, ADMIN_KEY);
    assert.equal(hook.status, 201, hook.text);
    const id = hook.body.id;
    const cases: Array<[string, string, unknown, string, string]> = [
      [
        "POST",
        `/v1/webhooks/${id}/replay`,
        {},
        "invalid_request",
        "Invalid request body since: Required field is missing (expected string or number)",
      ],
      [
        "POST",
        `/v1/webhooks/${id}/replay`,
        { since: null },
        "invalid_request",
        "Invalid request body since: Invalid input: expected string or number, received null",
      ],
      [
        "POST",
        "/v1/webhooks",
        { description: "no url" },
        "invalid_request",
        "Invalid request body url: Required field is missing (expected string)",
      ],
      [
        "POST",
        "/v1/webhooks",
        { url: "http://127.0.0.1:9/h", batch: { maxWait: "1s" } },
        "invalid_request",
        "Invalid request body batch.maxEvents: Required field is missing (expected number)",
      ],
      [
        "PATCH",
        `/v1/webhooks/${id}`,
        { batch: {} },
        "invalid_request",
        "Invalid request body batch.maxEvents: Required field is missing (expected number)",
      ],
      [
        "PATCH",
        `/v1/webhooks/${id}`,
        { url: 3 },
        "invalid_request",
        "Invalid request body url: Invalid input: expected string, received number",
      ],
      [
        "POST",
        "/v1/keys",
        { scopes: ["read"], rateLimit: { burst: 3 } },
        "invalid_request",
        "Invalid request body rateLimit.eventsPerSecond: Required field is missing (expected number)",
      ],
      [
        "POST",
        "/v1/keys",
        { scopes: "read" },
        "invalid_request",
        "Invalid request body scopes: Invalid input: expected array, received string",
      ],
      [
        "PUT",
        "/v1/streams/fresh",
        { counters: { n: { window: { hopping: "1m" }, aggregate: "count" } } },
        "invalid_definition",
        "Invalid stream definition: counters.n.window.every: Required field is missing (expected string)",
      ],
      [
        "PUT",
        "/v1/streams/fresh",
        {
          counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
          alerts: [{ name: "a", when: "value > 1" }],
        },
        "invalid_definition",
        "Invalid stream definition: alerts[0].counter: Required field is missing (expected string)",
      ],
      [
        "PUT",
        "/v1/streams/fresh",
        { dedupe: { ttl: "1h" } },
        "invalid_definition",
        "Invalid stream definition: dedupe.field: Required field is missing (expected string)",
      ],
      // A union that words what it takes keeps its words when the field is missing.
      [
        "PUT",
        "/v1/streams/fresh",
        { counters: { n: { window: { tumbling: "1m" } } } },
        "invalid_definition",
        'Invalid stream definition: counters.n.aggregate: Aggregate must be "count", one of {sum|min|max|avg|distinct: "<field>"} or {quantiles: "<field>", accuracy?}',
      ],
    ];
    for (const [method, path, body, code, message] of cases) {
      const res = await call(ctx.app, method, path, body, ADMIN_KEY);
      const name = `${method} ${path} ${JSON.stringify(body)}`;
      assert.equal(res.status, 400, `${name}: ${res.text}`);
      assert.equal(res.body.error.code, code, name);
      assert.equal(res.body.error.message, message, name);
    }
    // Nothing was created or changed by them.
    assert.equal(
      (await call(ctx.app, "GET", "/v1/keys", undefined, ADMIN_KEY)).body.keys.length,
      0,
    );
    assert.equal(
      (await call(ctx.app, "GET", "/v1/streams/fresh", undefined, ADMIN_KEY)).status,
      404,
    );
  } finally {
    await ctx.close();
  }
});

Deno.test("a config file missing a required field says so, with its path", () => {
  assert.throws(
    () =>
      compileConfig({
        streams: {
          s: {
            dedupe: { ttl: "1h" },
            counters: { n: { window: { sliding: "1m" }, aggregate: "count" } },
          },
        },
      }),
    (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(
        error.message,
        /streams\.s\.dedupe\.field: Required field is missing \(expected string\)/,
      );
      assert.match(
        error.message,
        /streams\.s\.counters\.n\.window\.precision: Required field is missing \(expected string\)/,
      );
      return true;
    },
  );
});
