import assert from "node:assert/strict";
import { compileConfig, ConfigError } from "../src/config/mod.ts";
import { InvalidEndpointError } from "../src/fanout/webhooks/mod.ts";
import { storeFromEnv, webhooksFromEnv } from "../src/env.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import { redisTest } from "./_redis.ts";
import { Receiver } from "./fanout/webhooks/_receiver.ts";

const streams = compileConfig({ streams: { s: {} } });

function env(values: Record<string, string>) {
  return { get: (name: string) => values[name] };
}

Deno.test("webhooksFromEnv() applies EDGESTREAM_WEBHOOK_ALLOW to registrations", async () => {
  const store = new MemoryStore();
  const open = webhooksFromEnv(env({ EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1, 10.0.0.0/8" }), {
    store,
    streams,
  });
  const closed = webhooksFromEnv(env({}), { store, streams });
  try {
    const { endpoint } = await open.createEndpoint({ url: "http://127.0.0.1:9/hook" });
    assert.equal(endpoint.url, "http://127.0.0.1:9/hook");
    await open.createEndpoint({ url: "http://10.1.2.3/hook" });
    await assert.rejects(
      () => closed.createEndpoint({ url: "https://127.0.0.1:9/hook" }),
      InvalidEndpointError,
    );
  } finally {
    await open.close();
    await closed.close();
  }
});

Deno.test("EDGESTREAM_WEBHOOK_ALLOW=127.0.0.1 lets a webhook at http://localhost reach 127.0.0.1", async () => {
  // The real resolver answers 127.0.0.1 and ::1 for localhost; only the
  // allowed one may be contacted, and the receiver listens on it.
  const receiver = await Receiver.start();
  const webhooks = webhooksFromEnv(env({ EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1" }), {
    store: new MemoryStore(),
    streams,
  });
  try {
    const url = receiver.url().replace("127.0.0.1", "localhost");
    const { endpoint } = await webhooks.createEndpoint({ url });
    await webhooks.sendTest(endpoint.id);
    await webhooks.idle();
    assert.equal(receiver.received.length, 1);
    assert.equal(receiver.received[0].payload.type, "webhook.test");
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

Deno.test("webhooksFromEnv() refuses a bad allow-list entry or disable period, naming the variable", () => {
  const store = new MemoryStore();
  assert.throws(
    () => webhooksFromEnv(env({ EDGESTREAM_WEBHOOK_ALLOW: "10.0.0.0/99" }), { store, streams }),
    (error) =>
      error instanceof ConfigError &&
      /^EDGESTREAM_WEBHOOK_ALLOW: Webhook allow-list entry '10\.0\.0\.0\/99'/.test(error.message),
  );
  assert.throws(
    () => webhooksFromEnv(env({ EDGESTREAM_WEBHOOK_DISABLE_AFTER: "soon" }), { store, streams }),
    (error) =>
      error instanceof ConfigError && /^EDGESTREAM_WEBHOOK_DISABLE_AFTER: /.test(error.message),
  );
});

redisTest(
  "webhooksFromEnv() keeps endpoints in Redis when the Upstash variables are set",
  async (fixture) => {
    const vars = env({
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
      EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
    });
    const store = storeFromEnv(vars);
    const first = webhooksFromEnv(vars, { store, streams });
    const second = webhooksFromEnv(vars, { store: storeFromEnv(vars), streams });
    try {
      const { endpoint } = await first.createEndpoint({ url: "http://127.0.0.1:9/hook" });
      assert.deepEqual((await second.listEndpoints()).map((item) => item.id), [endpoint.id]);
    } finally {
      await first.close();
      await second.close();
    }
  },
);
