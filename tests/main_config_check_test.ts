/**
 * `src/main.ts` checks the config file's streams against the counters the
 * store holds: a redeploy that changes a counter's window, aggregate or
 * groupBy exits 1 with one line naming the stream and counter, no stack.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { compileConfig, StreamRegistry } from "../src/config/mod.ts";
import { registerStreams } from "../src/main.ts";
import { RedisDefinitionStore } from "../src/store/mod.ts";
import { DownDefinitions } from "./_fixtures.ts";
import { type RedisFixture, redisTest, restClient } from "./_redis.ts";
import { startServerProcess } from "./_server_process.ts";

const root = fileURLToPath(new URL("../", import.meta.url));

function config(window: string) {
  return {
    streams: {
      orders: { counters: { perMinute: { window: { tumbling: window }, aggregate: "count" } } },
    },
  };
}

/** Runs `src/main.ts` on the fixture's Redis with `vars` until it exits. */
async function runUntilExit(
  fixture: RedisFixture,
  vars: Record<string, string>,
): Promise<{ code: number; stderr: string }> {
  const env: Record<string, string> = {
    ...Deno.env.toObject(),
    NO_COLOR: "1",
    UPSTASH_REDIS_REST_URL: fixture.restUrl,
    UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
    EDGESTREAM_SWEEP_EVERY: "0s",
    PORT: "0",
  };
  for (const name of ["EDGESTREAM_KEYS", "EDGESTREAM_ENV", "DENO_TIMELINE", "EDGESTREAM_PREFIX"]) {
    delete env[name];
  }
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--cached-only", "--allow-all", "src/main.ts"],
    cwd: root,
    env: { ...env, ...vars },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  return { code: output.code, stderr: new TextDecoder().decode(output.stderr) };
}

redisTest(
  "main.ts refuses a config whose counter changed against the store in one line",
  async (fixture) => {
    const redis = restClient(fixture);
    await new StreamRegistry(compileConfig(config("1m")), {
      definitions: new RedisDefinitionStore(redis),
    }).registerConfig();
    const path = await Deno.makeTempFile({ suffix: ".json" });
    try {
      await Deno.writeTextFile(path, JSON.stringify(config("5m")));
      const { code, stderr } = await runUntilExit(fixture, { EDGESTREAM_CONFIG: path });
      assert.equal(code, 1, stderr);
      const lines = stderr.trim().split("\n");
      assert.equal(lines.length, 1, stderr);
      assert.match(
        lines[0],
        /^edgestream: EDGESTREAM_CONFIG: Stream 'orders' cannot change the window, aggregate or groupBy of counter 'perMinute' .*add a new counter instead$/,
      );
    } finally {
      await Deno.remove(path);
    }
  },
);

/**
 * README: what the store did not do at startup (webhook endpoints, config streams) is logged at
 * error, one line each naming the setting (`ending`), with no stack.
 */
function assertStartupLines(output: string, ending: RegExp): void {
  const startup = output.split("\n").filter((line) =>
    /Cannot (record the config streams in the store|load webhook endpoints) yet/.test(line)
  );
  assert.equal(startup.length, 2, output);
  for (const line of startup) {
    const record = JSON.parse(line);
    assert.equal(record.level, "error", line);
    assert.match(record.message, ending, line);
    assert.equal(record.error, undefined, line);
    assert.doesNotMatch(line, /stack|\bat .*\.ts:\d+/, line);
  }
}

/**
 * `GET /readyz` once the server has started: while it loads the webhook endpoints (listening
 * already), `/readyz` answers 503 `starting` without asking the store.
 */
async function readyOnceStarted(url: string): Promise<{ status: number; body: { error: string } }> {
  for (let attempt = 0;; attempt++) {
    const res = await fetch(`${url}/readyz`);
    const body = await res.json();
    if (body.status !== "starting" || attempt >= 200) return { status: res.status, body };
    assert.equal(res.status, 503);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

Deno.test("main.ts starts although the store cannot be reached to check the config streams, and logs why", async () => {
  const server = await startServerProcess("unreachable", {
    UPSTASH_REDIS_REST_URL: "http://127.0.0.1:1",
    UPSTASH_REDIS_REST_TOKEN: "token-of-nothing",
    EDGESTREAM_SWEEP_EVERY: "0s",
  });
  try {
    const ready = await readyOnceStarted(server.url);
    assert.equal(ready.status, 503);
    assert.match(ready.body.error, /\(check UPSTASH_REDIS_REST_URL\)$/);
    // Ingest answers 503 with the same error (README: "If it does not start").
    const ingest = await fetch(`${server.url}/v1/streams/orders/events`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ id: "a", amount: 1, country: "DE" }),
    });
    assert.equal(ingest.status, 503);
    assert.ok(ingest.headers.has("retry-after"));
    const { error } = await ingest.json();
    assert.equal(error.code, "store_unavailable");
    assert.match(error.message, /\(check UPSTASH_REDIS_REST_URL\); nothing was applied$/);
    assert.match(server.output(), /Cannot record the config streams in the store yet/);
    assert.match(server.output(), /\(check UPSTASH_REDIS_REST_URL\)/);
    assertStartupLines(server.output(), /\(check UPSTASH_REDIS_REST_URL\)$/);
  } finally {
    await server.stop();
  }
});

redisTest(
  "main.ts on a Redis that refuses its token starts, and readyz and ingest answer 503 saying to check UPSTASH_REDIS_REST_TOKEN",
  async (fixture) => {
    const server = await startServerProcess("wrong-token", {
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: `${fixture.restToken}-not`,
      EDGESTREAM_SWEEP_EVERY: "0s",
    });
    try {
      const ready = await readyOnceStarted(server.url);
      assert.equal(ready.status, 503);
      assert.match(ready.body.error, /\(check UPSTASH_REDIS_REST_TOKEN\)$/);
      const ingest = await fetch(`${server.url}/v1/streams/orders/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ id: "a", amount: 1, country: "DE" }),
      });
      assert.equal(ingest.status, 503);
      const { error } = await ingest.json();
      assert.match(error.message, /\(check UPSTASH_REDIS_REST_TOKEN\); nothing was applied$/);
      assert.match(server.output(), /"level":"error".*\(check UPSTASH_REDIS_REST_TOKEN\)/);
      assertStartupLines(server.output(), /\(check UPSTASH_REDIS_REST_TOKEN\)$/);
    } finally {
      await server.stop();
    }
  },
);

redisTest(
  "main.ts whose port is taken stops before it records its config streams in the store",
  async (fixture) => {
    const redis = restClient(fixture);
    const definitions = new RedisDefinitionStore(redis);
    // A stream created through the API; the process's config file holds the same name.
    await new StreamRegistry(compileConfig({ streams: {} }), { definitions }).put(
      "orders",
      config("1m").streams.orders,
    );
    const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const path = await Deno.makeTempFile({ suffix: ".json" });
    try {
      await Deno.writeTextFile(path, JSON.stringify(config("1m")));
      const { code, stderr } = await runUntilExit(fixture, {
        EDGESTREAM_CONFIG: path,
        EDGESTREAM_KEYS: "admin:0123456789abcdef0123",
        HOST: "127.0.0.1",
        PORT: String(taken.addr.port),
      });
      assert.equal(code, 1, stderr);
      assert.match(stderr, /^edgestream: PORT: 127\.0\.0\.1:\d+ is already in use\n$/);
      const record = await definitions.get("orders");
      assert.equal(record?.source, "api", "the API stream is still the API's");
    } finally {
      taken.close();
      await Deno.remove(path);
    }
  },
);

Deno.test("registerStreams() starts though the store is down; a poll records the config streams once it answers", async () => {
  const definitions = new DownDefinitions();
  const streams = new StreamRegistry(compileConfig(config("1m")), { definitions, pollMs: 20 });
  try {
    await registerStreams({ streams });
    assert.equal(definitions.versionOf("orders"), 0, "not recorded while the store is down");
    assert.equal(streams.isRecorded("orders"), false);
    definitions.down = false;
    const deadline = Date.now() + 5_000;
    while (definitions.versionOf("orders") === 0) {
      assert.ok(Date.now() < deadline, "recorded within 5 s of the store's return");
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal((await definitions.get("orders"))?.source, "config");
    assert.equal(streams.isRecorded("orders"), true);
  } finally {
    streams.stop();
  }
});

redisTest(
  "main.ts refusing a changed counter after it listened prints its one line last, after the 'listening on' line",
  async (fixture) => {
    // A user's terminal shows stdout and stderr as written: the line that waited in the log
    // buffer must not come after the error, as if the server were up.
    const redis = restClient(fixture);
    await new StreamRegistry(compileConfig(config("1m")), {
      definitions: new RedisDefinitionStore(redis),
    }).registerConfig();
    const path = await Deno.makeTempFile({ suffix: ".json" });
    try {
      await Deno.writeTextFile(path, JSON.stringify(config("5m")));
      const env: Record<string, string> = {
        ...Deno.env.toObject(),
        NO_COLOR: "1",
        UPSTASH_REDIS_REST_URL: fixture.restUrl,
        UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
        EDGESTREAM_SWEEP_EVERY: "0s",
        EDGESTREAM_CONFIG: path,
        PORT: "0",
      };
      for (
        const name of ["EDGESTREAM_KEYS", "EDGESTREAM_ENV", "DENO_TIMELINE", "EDGESTREAM_PREFIX"]
      ) {
        delete env[name];
      }
      const output = await new Deno.Command("sh", {
        args: ["-c", 'exec "$0" run --cached-only --allow-all src/main.ts 2>&1', Deno.execPath()],
        cwd: root,
        env,
        clearEnv: true,
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(30_000),
      }).output();
      const printed = new TextDecoder().decode(output.stdout);
      assert.equal(output.code, 1, printed);
      const lines = printed.trim().split("\n");
      assert.match(lines.at(-1)!, /^edgestream: EDGESTREAM_CONFIG: Stream 'orders' cannot change/);
      assert.ok(lines.some((line) => line.includes('"listening on ')), printed);
    } finally {
      await Deno.remove(path);
    }
  },
);
