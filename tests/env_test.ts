import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import FakeTimers from "@sinonjs/fake-timers";
import { compileConfig, ConfigError, MIN_WINDOW_MS } from "../src/config/mod.ts";
import { WINDOWS_PER_SWEEP } from "../src/fanout/mod.ts";
import { InvalidEndpointError } from "../src/fanout/webhooks/mod.ts";
import {
  configFromEnv,
  keyStoreFromEnv,
  productionReason,
  SETTING_NAMES,
  storeFromEnv,
  storesFromEnv,
  webhooksFromEnv,
} from "../src/env.ts";
import { createApp } from "../src/app.ts";
import { KeyRing } from "../src/http/auth.ts";
import {
  fromCellUpdates,
  type Store,
  type StoreBatch,
  StreamChangedError,
} from "../src/store/mod.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import { MemoryDeliveryStore } from "../src/store/memory/delivery_store.ts";
import type { ClaimOptions } from "../src/store/deliveries.ts";
import {
  DEFAULT_KEYS_MAX,
  DEFAULT_STREAMS_MAX,
  DEFAULT_WEBHOOKS_MAX,
  StoredLimitError,
} from "../src/store/limits.ts";
import { config as endpointConfig } from "./store/_delivery_fixtures.ts";
import { redisTest, withDirect } from "./_redis.ts";
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

Deno.test("EDGESTREAM_WEBHOOK_DISABLE_AFTER of zero (which would disable an endpoint at its first failure) is refused in one line naming it", async () => {
  const store = new MemoryStore();
  for (const value of ["0s", "0ms", "0m0s", "0.0d"]) {
    const refused = (error: unknown) =>
      error instanceof ConfigError &&
      error.message ===
        `EDGESTREAM_WEBHOOK_DISABLE_AFTER: expected a duration above 0, got '${value}'`;
    assert.throws(
      () => webhooksFromEnv(env({ EDGESTREAM_WEBHOOK_DISABLE_AFTER: value }), { store, streams }),
      refused,
      value,
    );
    await assert.rejects(
      () => configFromEnv(env({ EDGESTREAM_WEBHOOK_DISABLE_AFTER: value })),
      refused,
      value,
    );
  }
  // The shortest above 0 is taken.
  const taken = webhooksFromEnv(env({ EDGESTREAM_WEBHOOK_DISABLE_AFTER: "1ms" }), {
    store,
    streams,
  });
  await taken.close();
});

Deno.test("a duration setting past 366 days, the most a duration may be, is refused in one line naming it", async () => {
  for (const name of ["EDGESTREAM_WEBHOOK_DISABLE_AFTER", "EDGESTREAM_WEBHOOK_SLOW_FOR"]) {
    for (const value of ["367d", "53w", "99999999999999999999w"]) {
      await assert.rejects(
        () => configFromEnv(env({ [name]: value })),
        new ConfigError(`${name}: expected at most 366d, got '${value}'`),
        `${name}=${value}`,
      );
    }
    // 366 days is taken.
    const config = await configFromEnv(env({ [name]: "366d" }));
    await config.webhooks.close();
  }
});

Deno.test("EDGESTREAM_WEBHOOK_SLOW_AFTER (above 0, at most the 15 s request timeout) and EDGESTREAM_WEBHOOK_SLOW_FOR (above 0) are refused otherwise in one line naming them", async () => {
  const store = new MemoryStore();
  const refusals: Array<[string, string, string]> = [
    ...["0s", "0ms", "0m0s"].map((value): [string, string, string] => [
      "EDGESTREAM_WEBHOOK_SLOW_AFTER",
      value,
      `EDGESTREAM_WEBHOOK_SLOW_AFTER: expected a duration above 0 and at most 15s (the webhook request timeout), got '${value}'`,
    ]),
    ...["15001ms", "16s", "1m"].map((value): [string, string, string] => [
      "EDGESTREAM_WEBHOOK_SLOW_AFTER",
      value,
      `EDGESTREAM_WEBHOOK_SLOW_AFTER: expected a duration above 0 and at most 15s (the webhook request timeout), got '${value}'`,
    ]),
    ...["0s", "0ms", "0.0d"].map((value): [string, string, string] => [
      "EDGESTREAM_WEBHOOK_SLOW_FOR",
      value,
      `EDGESTREAM_WEBHOOK_SLOW_FOR: expected a duration above 0, got '${value}'`,
    ]),
    [
      "EDGESTREAM_WEBHOOK_SLOW_AFTER",
      "soon",
      "EDGESTREAM_WEBHOOK_SLOW_AFTER: Cannot read duration 'soon' at position 0: expected a number and a unit (ms, s, m, h, d, w)",
    ],
    [
      "EDGESTREAM_WEBHOOK_SLOW_FOR",
      "soon",
      "EDGESTREAM_WEBHOOK_SLOW_FOR: Cannot read duration 'soon' at position 0: expected a number and a unit (ms, s, m, h, d, w)",
    ],
  ];
  for (const [name, value, text] of refusals) {
    const refused = (error: unknown) => error instanceof ConfigError && error.message === text;
    assert.throws(
      () => webhooksFromEnv(env({ [name]: value }), { store, streams }),
      refused,
      `${name}=${value}`,
    );
    await assert.rejects(
      () => configFromEnv(env({ [name]: value })),
      refused,
      `${name}=${value}`,
    );
  }
  // The bounds themselves are taken.
  for (
    const values of [
      { EDGESTREAM_WEBHOOK_SLOW_AFTER: "1ms", EDGESTREAM_WEBHOOK_SLOW_FOR: "1ms" },
      { EDGESTREAM_WEBHOOK_SLOW_AFTER: "15s", EDGESTREAM_WEBHOOK_SLOW_FOR: "1d" },
    ]
  ) {
    const taken = webhooksFromEnv(env(values), { store, streams });
    await taken.close();
  }
});

/** A memory delivery store that keeps the slow endpoint ids each claim was made with. */
class ClaimRecordingStore extends MemoryDeliveryStore {
  /** Per claim, in order: the ids of the endpoints it held back as slow. */
  slowIds: string[][] = [];
  override claimDue(options: ClaimOptions) {
    this.slowIds.push([...options.slow?.endpointIds ?? []]);
    return super.claimDue(options);
  }
}

/**
 * Sends `webhooks` a test delivery to `endpointId`, waits for it, and returns the slow endpoints
 * its first claim held back: those slow before it was sent.
 */
async function slowBeforeTest(
  webhooks: ReturnType<typeof webhooksFromEnv>,
  deliveries: ClaimRecordingStore,
  endpointId: string,
): Promise<string[]> {
  deliveries.slowIds = [];
  await webhooks.sendTest(endpointId);
  await webhooks.idle();
  assert.ok(deliveries.slowIds.length > 0, "the test delivery was claimed");
  return deliveries.slowIds[0];
}

Deno.test("webhooksFromEnv() counts an endpoint slow after EDGESTREAM_WEBHOOK_SLOW_AFTER, for EDGESTREAM_WEBHOOK_SLOW_FOR", async () => {
  const receiver = await Receiver.start();
  let delayMs = 300;
  receiver.respond = async () => {
    await new Promise((resolve) => setTimeout(resolve, delayMs));
    return new Response(null, { status: 204 });
  };
  const deliveries = new ClaimRecordingStore();
  const webhooks = webhooksFromEnv(
    env({
      EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
      EDGESTREAM_WEBHOOK_SLOW_AFTER: "100ms",
      EDGESTREAM_WEBHOOK_SLOW_FOR: "1s",
    }),
    { store: new MemoryStore(), streams, deliveries },
  );
  try {
    const { endpoint } = await webhooks.createEndpoint({ url: receiver.url() });
    assert.deepEqual(await slowBeforeTest(webhooks, deliveries, endpoint.id), []);
    // That send took 300 ms, past the 100 ms: the endpoint is slow (the 5 s default would not).
    delayMs = 0;
    const answered = performance.now();
    assert.deepEqual(await slowBeforeTest(webhooks, deliveries, endpoint.id), [endpoint.id]);
    // 1 s after the last slow send ended (the one since answered at once), it is no longer slow
    // (the 60 s default would keep it).
    await new Promise((resolve) => setTimeout(resolve, 1_100 - (performance.now() - answered)));
    assert.deepEqual(await slowBeforeTest(webhooks, deliveries, endpoint.id), []);
    assert.equal(receiver.received.length, 3);
  } finally {
    await webhooks.close();
    await receiver.close();
  }
});

Deno.test("webhooksFromEnv() without the slow settings counts an endpoint slow once a send took 5 s, for 60 s", async () => {
  // Only performance.now() is faked: the sender measures sends and slowness with it.
  const clock = FakeTimers.install({ toFake: ["performance"] });
  const receiver = await Receiver.start();
  let tookMs = 4_999;
  receiver.respond = () => {
    clock.tick(tookMs);
    return new Response(null, { status: 204 });
  };
  const deliveries = new ClaimRecordingStore();
  const webhooks = webhooksFromEnv(env({ EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1" }), {
    store: new MemoryStore(),
    streams,
    deliveries,
  });
  try {
    const { endpoint } = await webhooks.createEndpoint({ url: receiver.url() });
    assert.deepEqual(await slowBeforeTest(webhooks, deliveries, endpoint.id), []);
    tookMs = 5_000;
    assert.deepEqual(await slowBeforeTest(webhooks, deliveries, endpoint.id), [], "4,999 ms");
    tookMs = 0;
    assert.deepEqual(await slowBeforeTest(webhooks, deliveries, endpoint.id), [endpoint.id]);
    clock.tick(59_999);
    assert.deepEqual(await slowBeforeTest(webhooks, deliveries, endpoint.id), [endpoint.id]);
    clock.tick(1);
    assert.deepEqual(await slowBeforeTest(webhooks, deliveries, endpoint.id), [], "60 s after");
  } finally {
    clock.uninstall();
    await webhooks.close();
    await receiver.close();
  }
});

Deno.test("a flag variable set empty (a compose file's unset value) reads as false", async () => {
  const store = new MemoryStore();
  for (const value of ["", "false"]) {
    const webhooks = webhooksFromEnv(env({ EDGESTREAM_WEBHOOK_ALLOW_HTTP: value }), {
      store,
      streams,
    });
    await webhooks.close();
  }
  assert.throws(
    () => webhooksFromEnv(env({ EDGESTREAM_WEBHOOK_ALLOW_HTTP: "TRUE" }), { store, streams }),
    (error) =>
      error instanceof ConfigError &&
      error.message === "EDGESTREAM_WEBHOOK_ALLOW_HTTP: expected true or false, got 'TRUE'",
  );
});

/** A one-event batch of stream `orders` whose caller says it recorded the stream. */
function recordedBatch(): StoreBatch {
  const t0 = Date.parse("2026-01-01T00:00:00Z");
  return {
    ...fromCellUpdates({
      stream: "orders",
      nowMs: t0,
      latenessMs: 0,
      dedupeTtlMs: 0,
      counters: [{
        name: "n",
        aggregate: "count",
        maxGroups: 10,
        ttlMs: 3_600_000,
        sizeMs: 60_000,
        hopMs: 60_000,
      }],
      events: [{ timeMs: t0, updates: [{ counter: 0, pane: t0, group: "[]" }] }],
    }),
    recorded: true,
  };
}

/**
 * storesFromEnv()'s store looks for the definitions beside it (definitionsHere): a batch its
 * caller recorded whose record is missing there (a Redis restored from before it was written)
 * is refused; storeFromEnv()'s store, alone, applies it.
 */
async function refusesRecordMissing(vars: ReturnType<typeof env>): Promise<void> {
  await assert.rejects(
    storesFromEnv(vars).store.applyBatch(recordedBatch()),
    (error: Error) => error instanceof StreamChangedError && error.stream === "orders",
  );
  assert.equal((await storeFromEnv(vars).applyBatch(recordedBatch())).definitionVersion, 0);
}

Deno.test("storesFromEnv() gives the memory store the definitions beside it: a recorded batch whose record is missing is refused", async () => {
  await refusesRecordMissing(env({}));
});

redisTest(
  "storesFromEnv() gives the Redis store the definitions beside it: a recorded batch whose record is missing is refused",
  async (fixture) => {
    await refusesRecordMissing(env({
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
    }));
  },
);

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

redisTest(
  "keyStoreFromEnv() keeps run-time keys in Redis when the Upstash variables are set, so instances share them",
  async (fixture) => {
    const vars = env({
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
    });
    const first = keyStoreFromEnv(vars);
    assert.equal(first.kind, "redis");
    await first.createKey({
      id: "key_0123456789abcdef",
      type: "secret",
      hash: "h",
      prefix: "sk_abcd",
      scopes: ["read"],
      createdAt: 1,
    });
    assert.equal((await keyStoreFromEnv(vars).getKey("key_0123456789abcdef"))?.hash, "h");
    assert.equal(keyStoreFromEnv(env({})).kind, "memory");
  },
);

/** How many of `ids` (sent one batch each, in one 1h dedupe bucket) the store forgot early. */
async function forgottenAfter(store: Store, ids: string[]): Promise<number> {
  for (const id of ids) {
    await store.applyBatch({
      stream: "s",
      nowMs: 1_000,
      latenessMs: 0,
      dedupeTtlMs: 3_600_000,
      counters: [],
      filtered: 0,
      events: [{ id, timeMs: 1_000 }],
    });
  }
  return (await store.stats("s", [])).dedupeForgotten;
}

Deno.test("storeFromEnv()'s memory store applies a stream its caller recorded elsewhere (in the app's registry), as its Redis store does", async () => {
  const counted = compileConfig({
    streams: { orders: { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } } },
  });
  const app = createApp({
    streams: counted,
    store: storeFromEnv(env({})),
    keys: await KeyRing.parse(""),
  });
  const res = await app.request("/v1/streams/orders/events", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify([{ n: 1 }]),
  });
  assert.equal(res.status, 202, await res.clone().text());
  assert.equal((await res.json()).accepted, 1);
});

Deno.test("storeFromEnv() bounds the memory store's dedupe ids by EDGESTREAM_MEMORY_DEDUPE_MAX", async () => {
  const ids = ["a", "b", "c", "d", "e"];
  assert.equal(await forgottenAfter(storeFromEnv(env({})), ids), 0);
  assert.equal(
    await forgottenAfter(storeFromEnv(env({ EDGESTREAM_MEMORY_DEDUPE_MAX: "4" })), ids),
    2,
  );
});

Deno.test("storeFromEnv() holds the README's 10,000,000 dedupe ids a stream without EDGESTREAM_MEMORY_DEDUPE_MAX", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  assert.match(readme, /\| `EDGESTREAM_MEMORY_DEDUPE_MAX` .*\| `10000000` +\|/);
  const store = storeFromEnv(env({}));
  assert.ok(store instanceof MemoryStore);
  assert.equal(store.maxDedupeIds, 10_000_000);
  assert.equal(new MemoryStore().maxDedupeIds, 10_000_000);
});

Deno.test("storeFromEnv() refuses an EDGESTREAM_MEMORY_DEDUPE_MAX that is not a whole number of at least 2", () => {
  for (const value of ["1", "0", "-5", "2.5", "1e6", "lots", "99999999999999999999"]) {
    assert.throws(
      () => storeFromEnv(env({ EDGESTREAM_MEMORY_DEDUPE_MAX: value })),
      (error) =>
        error instanceof ConfigError &&
        error.message ===
          `EDGESTREAM_MEMORY_DEDUPE_MAX: expected a whole number of at least 2, got '${value}'`,
      value,
    );
  }
});
Deno.test("configFromEnv() reads EDGESTREAM_ALLOWED_HOSTS and EDGESTREAM_ALLOWED_ORIGINS", async () => {
  const config = await configFromEnv(env({
    EDGESTREAM_ALLOWED_HOSTS: "Dev.Example.com, .trycloudflare.com",
    EDGESTREAM_ALLOWED_ORIGINS: "https://app.example.com/,http://localhost:5173",
  }));
  try {
    assert.deepEqual(config.origins, {
      allowedHosts: ["dev.example.com", ".trycloudflare.com"],
      allowedOrigins: ["https://app.example.com", "http://localhost:5173"],
    });
    assert.equal(config.notices.at(-1)!.level, "warning");
    assert.match(
      config.notices.at(-1)!.text,
      /loopback Host names and dev\.example\.com, \.trycloudflare\.com \(EDGESTREAM_ALLOWED_HOSTS\)$/,
    );
    const unset = await configFromEnv(env({}));
    await unset.webhooks.close();
    assert.deepEqual(unset.origins, { allowedHosts: [], allowedOrigins: [] });
    const keyed = await configFromEnv(env({
      EDGESTREAM_KEYS: "admin:admin-key-0123456789",
      EDGESTREAM_ALLOWED_HOSTS: "dev.example.com",
    }));
    await keyed.webhooks.close();
    assert.deepEqual(keyed.notices.at(-1), {
      level: "warning",
      text:
        "EDGESTREAM_ALLOWED_HOSTS has no effect: with EDGESTREAM_KEYS set, any Host is answered",
    });
  } finally {
    await config.webhooks.close();
  }
});

Deno.test("configFromEnv() refuses a bad allowed host or origin, naming the variable", async () => {
  await assert.rejects(
    () => configFromEnv(env({ EDGESTREAM_ALLOWED_HOSTS: "dev.example.com:8080" })),
    (error) =>
      error instanceof ConfigError &&
      error.message.startsWith(
        "EDGESTREAM_ALLOWED_HOSTS: Cannot read allowed host 'dev.example.com:8080': expected a host name without port",
      ),
  );
  await assert.rejects(
    () => configFromEnv(env({ EDGESTREAM_ALLOWED_ORIGINS: "null" })),
    (error) =>
      error instanceof ConfigError &&
      error.message.startsWith("EDGESTREAM_ALLOWED_ORIGINS: Cannot read allowed origin 'null'"),
  );
  // Credentials in a refused host or origin are not repeated into the startup line.
  await assert.rejects(
    () => configFromEnv(env({ EDGESTREAM_ALLOWED_HOSTS: "https://ops:hunter2@dev.example.com" })),
    (error) =>
      error instanceof ConfigError && !error.message.includes("hunter2") &&
      error.message.startsWith(
        "EDGESTREAM_ALLOWED_HOSTS: Cannot read allowed host 'https://[REDACTED]@dev.example.com'",
      ),
  );
  await assert.rejects(
    () => configFromEnv(env({ EDGESTREAM_ALLOWED_ORIGINS: "https://ops:hunter2@app.example.com" })),
    (error) =>
      error instanceof ConfigError && !error.message.includes("hunter2") &&
      error.message.startsWith(
        "EDGESTREAM_ALLOWED_ORIGINS: Cannot read allowed origin 'https://[REDACTED]@app.example.com'",
      ),
  );
});

Deno.test("configFromEnv() reads EDGESTREAM_LOG_LEVEL in any case, warn as warning, info by default", async () => {
  const cases: Array<[string | undefined, string]> = [
    [undefined, "info"],
    ["", "info"],
    ["debug", "debug"],
    ["ERROR", "error"],
    [" Warning ", "warning"],
    ["warn", "warning"],
    ["trace", "trace"],
    ["fatal", "fatal"],
  ];
  for (const [text, level] of cases) {
    const config = await configFromEnv(
      env(text === undefined ? {} : { EDGESTREAM_LOG_LEVEL: text }),
    );
    await config.webhooks.close();
    assert.equal(config.logLevel, level, String(text));
  }
});

Deno.test("the README's settings table says EDGESTREAM_LOG_LEVEL takes warn and any case, and configFromEnv() reads each level so", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const row = readme.split("\n").find((line) => line.startsWith("| `EDGESTREAM_LOG_LEVEL`"));
  const claim =
    "lowest log level: `trace`, `debug`, `info`, `warning` (or `warn`), `error`, `fatal`; any case";
  assert.ok(row?.includes(claim), String(row));
  const named = [...claim.matchAll(/`(\w+)`/g)].map((match) => match[1]);
  for (const text of named.flatMap((name) => [name, name.toUpperCase()])) {
    const config = await configFromEnv(env({ EDGESTREAM_LOG_LEVEL: text }));
    await config.webhooks.close();
    const name = text.toLowerCase();
    assert.equal(config.logLevel, name === "warn" ? "warning" : name, text);
  }
});

Deno.test("configFromEnv() refuses a bad EDGESTREAM_LOG_LEVEL, naming the variable and the levels", async () => {
  for (const text of ["verbose", "3", "info,debug"]) {
    await assert.rejects(
      () => configFromEnv(env({ EDGESTREAM_LOG_LEVEL: text })),
      (error: Error) => {
        assert.ok(error instanceof ConfigError);
        assert.equal(
          error.message,
          `EDGESTREAM_LOG_LEVEL: expected one of trace, debug, info, warning, error, fatal, got '${text}'`,
        );
        return true;
      },
    );
  }
});

Deno.test("configFromEnv() gives the API keys and the Redis token as the secrets to keep out of logs", async () => {
  const config = await configFromEnv(env({
    EDGESTREAM_KEYS: "admin:admin-key-0123456789, ingest:ingest-key-0123456789",
    UPSTASH_REDIS_REST_URL: "http://127.0.0.1:1",
    UPSTASH_REDIS_REST_TOKEN: "redis-token-abc",
  }));
  await config.webhooks.close();
  assert.deepEqual(config.secrets, [
    "admin-key-0123456789",
    "ingest-key-0123456789",
    "redis-token-abc",
  ]);
  const open = await configFromEnv(env({}));
  await open.webhooks.close();
  assert.deepEqual(open.secrets, []);
});

Deno.test("configFromEnv() refuses a duration setting with a fraction of a millisecond or a unit given twice, in one line naming it", async () => {
  for (
    const name of [
      "EDGESTREAM_SWEEP_EVERY",
      "EDGESTREAM_SHUTDOWN",
      "EDGESTREAM_DRAIN",
      "EDGESTREAM_WEBHOOK_DISABLE_AFTER",
      "EDGESTREAM_WEBHOOK_SLOW_AFTER",
      "EDGESTREAM_WEBHOOK_SLOW_FOR",
    ]
  ) {
    for (
      const [value, problem] of [
        [
          "0.4ms",
          "'0.4ms' is not a whole number of milliseconds; a duration is counted in whole ms",
        ],
        [
          "1s0.5ms",
          "'0.5ms' is not a whole number of milliseconds; a duration is counted in whole ms",
        ],
      ]
    ) {
      await assert.rejects(
        () => configFromEnv(env({ [name]: value })),
        (error) =>
          error instanceof ConfigError &&
          error.message === `${name}: Cannot read duration '${value}': ${problem}`,
        `${name}=${value}`,
      );
    }
    await assert.rejects(
      () => configFromEnv(env({ [name]: "1s1s" })),
      (error) =>
        error instanceof ConfigError &&
        error.message ===
          `${name}: Cannot read duration '1s1s' at position 2: unit 's' is given twice; give each unit once`,
      `${name}=1s1s`,
    );
  }
});

Deno.test("configFromEnv() reads EDGESTREAM_DRAIN (default none) and refuses one not below EDGESTREAM_SHUTDOWN, naming it", async () => {
  for (
    const [vars, expected] of [
      [{}, 0],
      [{ EDGESTREAM_DRAIN: "0s" }, 0],
      [{ EDGESTREAM_DRAIN: "3s" }, 3_000],
      [{ EDGESTREAM_DRAIN: "9s", EDGESTREAM_SHUTDOWN: "10s" }, 9_000],
    ] as const
  ) {
    const config = await configFromEnv(env(vars));
    try {
      assert.equal(config.drainMs, expected, JSON.stringify(vars));
    } finally {
      await config.webhooks.close();
    }
  }
  for (
    const [vars, message] of [
      [
        { EDGESTREAM_DRAIN: "4s" },
        "EDGESTREAM_DRAIN: expected a duration below EDGESTREAM_SHUTDOWN (4000 ms), as the drain counts inside it, got '4s'",
      ],
      [
        { EDGESTREAM_DRAIN: "5s", EDGESTREAM_SHUTDOWN: "2s" },
        "EDGESTREAM_DRAIN: expected a duration below EDGESTREAM_SHUTDOWN (2000 ms), as the drain counts inside it, got '5s'",
      ],
    ] as const
  ) {
    await assert.rejects(
      () => configFromEnv(env(vars)),
      (error) => error instanceof ConfigError && error.message === message,
      JSON.stringify(vars),
    );
  }
  await assert.rejects(
    () => configFromEnv(env({ EDGESTREAM_DRAIN: "soon" })),
    (error) =>
      error instanceof ConfigError && error.message.startsWith("EDGESTREAM_DRAIN: Cannot read"),
  );
});

Deno.test("configFromEnv({ platform: 'deploy' }) reads neither EDGESTREAM_SWEEP_EVERY nor EDGESTREAM_DRAIN: any value is a warning notice, both 0; EDGESTREAM_SHUTDOWN still checked", async () => {
  for (
    const [vars, warned] of [
      [{}, []],
      [{ EDGESTREAM_DRAIN: "0s", EDGESTREAM_SWEEP_EVERY: "" }, []],
      [{ EDGESTREAM_SWEEP_EVERY: "5m", EDGESTREAM_DRAIN: "4s" }, ["SWEEP_EVERY", "DRAIN"]],
      [{ EDGESTREAM_SWEEP_EVERY: "1s", EDGESTREAM_DRAIN: "soon" }, ["SWEEP_EVERY", "DRAIN"]],
    ] as const
  ) {
    const config = await configFromEnv(env(vars), { platform: "deploy" });
    try {
      assert.deepEqual([config.sweepEveryMs, config.drainMs], [0, 0], JSON.stringify(vars));
      assert.deepEqual(
        config.notices.filter((notice) => /Deno Deploy/.test(notice.text)).map((notice) =>
          `${notice.level} ${/^EDGESTREAM_(\w+)/.exec(notice.text)?.[1]}`
        ),
        warned.map((name) => `warning ${name}`),
        JSON.stringify(vars),
      );
    } finally {
      await config.webhooks.close();
    }
  }
  // Self-hosted, the same values stop startup.
  await assert.rejects(() => configFromEnv(env({ EDGESTREAM_SWEEP_EVERY: "5m" })), ConfigError);
  await assert.rejects(() => configFromEnv(env({ EDGESTREAM_DRAIN: "4s" })), ConfigError);
  await assert.rejects(
    () => configFromEnv(env({ EDGESTREAM_SHUTDOWN: "0s" }), { platform: "deploy" }),
    (error) =>
      error instanceof ConfigError &&
      error.message === "EDGESTREAM_SHUTDOWN: expected a duration above 0, got '0s'",
  );
});

Deno.test("configFromEnv() reads EDGESTREAM_SHUTDOWN (default 4 s) and refuses a bad or zero one, naming it", async () => {
  for (const [value, ms] of [[undefined, 4_000], ["1500ms", 1_500], ["10s", 10_000]] as const) {
    const config = await configFromEnv(
      env(value === undefined ? {} : { EDGESTREAM_SHUTDOWN: value }),
    );
    try {
      assert.equal(config.shutdownMs, ms, String(value));
    } finally {
      await config.webhooks.close();
    }
  }
  await assert.rejects(
    () => configFromEnv(env({ EDGESTREAM_SHUTDOWN: "soon" })),
    (error) =>
      error instanceof ConfigError && error.message.startsWith("EDGESTREAM_SHUTDOWN: Cannot read"),
  );
  await assert.rejects(
    () => configFromEnv(env({ EDGESTREAM_SHUTDOWN: "0s" })),
    (error) =>
      error instanceof ConfigError &&
      error.message === "EDGESTREAM_SHUTDOWN: expected a duration above 0, got '0s'",
  );
});

Deno.test("configFromEnv() refuses, naming it, a Deno OpenTelemetry setting Deno would drop without a word (an endpoint without http://, an export interval in no whole ms), only with OTEL_DENO=true", async () => {
  const endpoints = [
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
  ];
  const taken = async (values: Record<string, string>) => {
    const config = await configFromEnv(env(values));
    await config.webhooks.close();
  };
  for (const name of endpoints) {
    for (const good of ["http://localhost:4318", "https://otel.example.com:4318/v1/traces"]) {
      await taken({ OTEL_DENO: "true", [name]: good });
    }
    for (
      const bad of ["localhost:4318", "127.0.0.1:4318", " http://localhost:4318", "grpc://x:4317"]
    ) {
      await assert.rejects(
        configFromEnv(env({ OTEL_DENO: "true", [name]: bad })),
        new ConfigError(
          `${name}: expected an http:// or https:// URL (http://localhost:4318), got '${bad}'`,
        ),
        `${name}=${bad}`,
      );
      // Without OTEL_DENO=true Deno reads none of them: another program's settings stop nothing.
      await taken({ [name]: bad });
      await taken({ OTEL_DENO: "false", [name]: bad });
    }
  }
  // Credentials in it are not printed, with a scheme or without one.
  for (const url of ["collector:tok-0123456789@otel:4318", "ftp://u:tok-0123456789@otel:4318"]) {
    await assert.rejects(
      configFromEnv(env({ OTEL_DENO: "TRUE", OTEL_EXPORTER_OTLP_ENDPOINT: url })),
      (error) =>
        error instanceof ConfigError &&
        error.message.startsWith("OTEL_EXPORTER_OTLP_ENDPOINT: expected an http") &&
        error.message.includes("[REDACTED]@otel:4318") && !error.message.includes("tok-"),
      url,
    );
  }
  for (const good of ["Authorization=Bearer%20tok-0123456789", " a = 1 ,b=2,", "x=a=b"]) {
    await taken({ OTEL_DENO: "true", OTEL_EXPORTER_OTLP_HEADERS: good });
  }
  for (
    const [bad, at] of [
      ["Authorization: Bearer tok-0123456789", "1 of 1"],
      ["x-team=a,tok-0123456789", "2 of 2"],
      ["=tok-0123456789", "1 of 1"],
      [" ", "1 of 1"],
    ] as const
  ) {
    if (bad === " ") {
      // Only blank pairs: none is dropped, as there is none.
      await taken({ OTEL_DENO: "true", OTEL_EXPORTER_OTLP_HEADERS: bad });
      continue;
    }
    await assert.rejects(
      configFromEnv(env({ OTEL_DENO: "true", OTEL_EXPORTER_OTLP_HEADERS: bad })),
      (error) =>
        error instanceof ConfigError &&
        error.message.startsWith("OTEL_EXPORTER_OTLP_HEADERS: expected name=value pairs") &&
        error.message.includes(`pair ${at} has no name before an '='`) &&
        !error.message.includes("tok-"),
      bad,
    );
    await taken({ OTEL_EXPORTER_OTLP_HEADERS: bad });
  }
  for (const good of ["15000", "0300", "+300"]) {
    await taken({ OTEL_DENO: "true", OTEL_METRIC_EXPORT_INTERVAL: good });
  }
  for (const bad of ["abc", "0", "000", "1500.5", "15s", " 15000", "-300"]) {
    await assert.rejects(
      configFromEnv(env({ OTEL_DENO: "true", OTEL_METRIC_EXPORT_INTERVAL: bad })),
      new ConfigError(
        `OTEL_METRIC_EXPORT_INTERVAL: expected a whole number of milliseconds above 0 (60000), got '${bad}'`,
      ),
      bad,
    );
    await taken({ OTEL_METRIC_EXPORT_INTERVAL: bad });
  }
  // On Deno Deploy the platform sets up the export: its values are not checked.
  await taken({
    DENO_DEPLOYMENT_ID: "abc123",
    OTEL_DENO: "1",
    OTEL_EXPORTER_OTLP_ENDPOINT: "localhost:4318",
  });
  // Deno takes true and false in any case and turns export off for anything else.
  await taken({ OTEL_DENO: "TRUE" });
  for (const bad of ["1", "yes", " true"]) {
    await assert.rejects(
      configFromEnv(env({ OTEL_DENO: bad })),
      new ConfigError(`OTEL_DENO: expected true or false, got '${bad}'`),
    );
  }
});

Deno.test("configFromEnv() reads EDGESTREAM_SWEEP_EVERY: 0 written as zero turns it off, else from 100 ms to 100 s", async () => {
  for (
    const [value, ms] of [
      ["0s", 0],
      ["0ms", 0],
      ["0.0s", 0],
      ["0m0s", 0],
      ["100ms", 100],
      ["2s", 2_000],
      ["100s", 100_000],
      ["1m40s", 100_000],
    ] as const
  ) {
    const config = await configFromEnv(env({ EDGESTREAM_SWEEP_EVERY: value }));
    try {
      assert.equal(config.sweepEveryMs, ms, value);
    } finally {
      await config.webhooks.close();
    }
  }
  // `1ms` swept without pause. (`0.4ms`, which rounded to 0 and turned the sweep off without a
  // word, is no duration at all now: see the next test.)
  for (const value of ["1ms", "99ms"]) {
    await assert.rejects(
      () => configFromEnv(env({ EDGESTREAM_SWEEP_EVERY: value })),
      (error) =>
        error instanceof ConfigError &&
        error.message ===
          `EDGESTREAM_SWEEP_EVERY: expected 0s (no sweep timer) or from 100ms to 100s, got '${value}'`,
      value,
    );
  }
  // A sweep closes at most 100 windows of a counter: swept rarer than every 100 s, a counter of
  // 1 s windows that keeps getting events falls further behind at every sweep, never catching up.
  for (const value of ["100001ms", "101s", "5m", "1h", "24d", "25d"]) {
    await assert.rejects(
      () => configFromEnv(env({ EDGESTREAM_SWEEP_EVERY: value })),
      (error) =>
        error instanceof ConfigError &&
        error.message ===
          `EDGESTREAM_SWEEP_EVERY: expected 0s (no sweep timer) or from 100ms to 100s, got '${value}': ` +
            "a sweep closes at most 100 windows of a counter, so a rarer one lets 1s windows fall " +
            "further behind at every sweep",
      value,
    );
  }
  assert.equal(WINDOWS_PER_SWEEP * MIN_WINDOW_MS, 100_000);
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const row = readme.split("\n").find((line) => line.startsWith("| `EDGESTREAM_SWEEP_EVERY`"));
  assert.match(
    row ?? "",
    /`0s` = never; else from `100ms` to `100s`: a sweep closes at most 100 windows/,
  );
});

Deno.test("configFromEnv() reads EDGESTREAM_KEYS with spaces around ':' and refuses a key no header can carry", async () => {
  const config = await configFromEnv(
    env({ EDGESTREAM_KEYS: "admin : aaaaaaaaaaaaaaaaaaaa , read: bbbbbbbbbbbbbbbbbbbb" }),
  );
  try {
    assert.deepEqual([...await config.keys.scopesOf("bbbbbbbbbbbbbbbbbbbb")], ["read"]);
    assert.ok((await config.keys.scopesOf("aaaaaaaaaaaaaaaaaaaa")).has("admin"));
  } finally {
    await config.webhooks.close();
  }
  await assert.rejects(
    () => configFromEnv(env({ EDGESTREAM_KEYS: "ingest:cccccccccccccccc cccc" })),
    (error) =>
      error instanceof ConfigError &&
      error.message ===
        "EDGESTREAM_KEYS: Cannot read EDGESTREAM_KEYS entry 1: a key is visible ASCII characters without spaces",
  );
});

Deno.test("configFromEnv() refuses EDGESTREAM_KEYS that holds text but no key, instead of starting open", async () => {
  for (const value of [",", " , ", ",,"]) {
    await assert.rejects(
      () => configFromEnv(env({ EDGESTREAM_KEYS: value })),
      (error) =>
        error instanceof ConfigError &&
        error.message ===
          "EDGESTREAM_KEYS: Cannot read EDGESTREAM_KEYS: it holds no '<ingest|read|admin>:<key>' entry; leave it unset or empty for open development mode",
    );
  }
  for (const value of ["", "  "]) {
    const config = await configFromEnv(env({ EDGESTREAM_KEYS: value }));
    try {
      assert.equal(config.keys.open, true, `'${value}' is open mode`);
    } finally {
      await config.webhooks.close();
    }
  }
});

Deno.test("storeFromEnv() refuses an EDGESTREAM_PREFIX that would put every stream in one Redis slot", () => {
  const upstash = { UPSTASH_REDIS_REST_URL: "https://x.upstash.io", UPSTASH_REDIS_REST_TOKEN: "t" };
  assert.equal(storeFromEnv(env({ ...upstash, EDGESTREAM_PREFIX: "shop-1" })).kind, "redis");
  for (const value of ["{p}", "a b", "x}"]) {
    assert.throws(
      () => storeFromEnv(env({ ...upstash, EDGESTREAM_PREFIX: value })),
      (error) =>
        error instanceof ConfigError &&
        error.message ===
          `EDGESTREAM_PREFIX: expected 1-64 characters without whitespace, '{' or '}', got '${value}'`,
      JSON.stringify(value),
    );
  }
});

Deno.test("configFromEnv() in open mode listens on 127.0.0.1, or on the loopback HOST names, never elsewhere", async () => {
  for (
    const [host, expected] of [
      [undefined, "127.0.0.1"],
      ["0.0.0.0", "127.0.0.1"],
      ["::1", "::1"],
      ["localhost", "localhost"],
    ] as const
  ) {
    const config = await configFromEnv(env(host === undefined ? {} : { HOST: host }));
    try {
      assert.equal(config.hostname, expected, String(host));
      // A HOST not taken is named in the open mode warning, so a client elsewhere knows why.
      const warning = config.notices.find((notice) => notice.text.startsWith("no EDGESTREAM_KEYS"));
      assert.equal(
        warning?.text,
        `no EDGESTREAM_KEYS set: open development mode, no key needed; listening on localhost only${
          host === "0.0.0.0"
            ? " (HOST=0.0.0.0 is not taken in open mode: set EDGESTREAM_KEYS to listen on it)"
            : ""
        }, answering only loopback Host names`,
        String(host),
      );
    } finally {
      await config.webhooks.close();
    }
  }
});

Deno.test("configFromEnv() with keys refuses a HOST that names no host, naming HOST, and takes one in brackets", async () => {
  const readme = (await Deno.readTextFile(new URL("../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "a `HOST` that names no host (`0.0.0.0:8080`, `http://myhost`) stops startup with one line naming it, before the store is asked";
  assert.ok(readme.includes(claim), claim);
  const keys = { EDGESTREAM_KEYS: "admin:0123456789abcdef0123" };
  for (const host of ["0.0.0.0:8080", "http://myhost", "local host", "999.1.1.1", "[1.2.3.4]"]) {
    await assert.rejects(
      () => configFromEnv(env({ ...keys, HOST: host })),
      (error) =>
        error instanceof ConfigError &&
        error.message === `HOST: expected an IP address or a host name, got '${host}'`,
      host,
    );
  }
  // As the listener takes them: a host name, an address, an IPv6 one in brackets or not.
  for (const host of ["0.0.0.0", "::", "[::1]", "fe80::1%eth0", "dev.example.com", "my_host"]) {
    const config = await configFromEnv(env({ ...keys, HOST: host }));
    try {
      assert.equal(config.hostname, host);
    } finally {
      await config.webhooks.close();
    }
  }
  // Open mode listens on loopback: a bracketed address names a host, so it is not refused there.
  const open = await configFromEnv(env({ HOST: "[::1]" }));
  try {
    assert.equal(open.hostname, "127.0.0.1");
  } finally {
    await open.webhooks.close();
  }
});

Deno.test("configFromEnv() in open mode refuses a HOST that names no host, naming HOST, as listening on it does with keys", async () => {
  const readme = (await Deno.readTextFile(new URL("../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "another `HOST` is not taken, but one that names no host, such as `999.1.1.1`, stops startup with one line naming `HOST`";
  assert.ok(readme.includes(claim), claim);
  for (
    const host of [
      "999.1.1.1",
      "1.2.3",
      "1.2.3.4.5",
      "256.0.0.1",
      "local host",
      "localhost:8000",
      "::g",
      "http://localhost",
      "a..b",
      "-dev.example.com",
    ]
  ) {
    await assert.rejects(
      () => configFromEnv(env({ HOST: host })),
      (error) =>
        error instanceof ConfigError &&
        error.message === `HOST: expected an IP address or a host name, got '${host}'`,
      host,
    );
  }
  // A host, though not loopback, is not taken: open mode listens on 127.0.0.1.
  for (
    const host of [
      "192.168.1.10",
      "dev.example.com",
      "my_host",
      "fe80::1%eth0",
      "2001:db8::1",
    ]
  ) {
    const config = await configFromEnv(env({ HOST: host }));
    try {
      assert.equal(config.hostname, "127.0.0.1", host);
    } finally {
      await config.webhooks.close();
    }
  }
});

Deno.test("configFromEnv() trims HOST: only whitespace is not set (every interface with keys), and a name with spaces around is that name", async () => {
  const keys = { EDGESTREAM_KEYS: "admin:0123456789abcdef0123" };
  for (
    const [vars, expected] of [
      [{ ...keys, HOST: " " }, "0.0.0.0"],
      [{ ...keys, HOST: "\t" }, "0.0.0.0"],
      [{ ...keys, HOST: " 127.0.0.1 " }, "127.0.0.1"],
      [{ HOST: " ::1\t" }, "::1"],
    ] as const
  ) {
    const config = await configFromEnv(env(vars));
    try {
      assert.equal(config.hostname, expected, JSON.stringify(vars));
    } finally {
      await config.webhooks.close();
    }
  }
});

Deno.test("configFromEnv() on the memory store answers every unknown stream name 404, however many come at once", async () => {
  const config = await configFromEnv(env({}));
  try {
    const app = createApp({ streams: config.streams, store: config.store, keys: config.keys });
    const statuses = await Promise.all(
      Array.from({ length: 60 }, async (_, i) =>
        (await app.request(`/v1/streams/nope${i}/events`, {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body: "{}",
        })).status),
    );
    assert.deepEqual(new Set(statuses), new Set([404]));
  } finally {
    await config.webhooks.close();
  }
});

Deno.test("configFromEnv() with nothing set: port 8000, examples/config.json, open mode on loopback with a warning", async () => {
  const config = await configFromEnv(env({}));
  try {
    assert.equal(config.port, 8000);
    assert.equal(
      config.configPath,
      fileURLToPath(new URL("../examples/config.json", import.meta.url)),
    );
    assert.deepEqual([config.streams.size, config.streams.has("orders")], [1, true]);
    assert.equal(config.store.kind, "memory");
    assert.equal(config.keys.open, true);
    assert.equal(config.hostname, "127.0.0.1");
    // At warning level, so EDGESTREAM_LOG_LEVEL=warning shows it too.
    assert.deepEqual(config.notices.filter((notice) => notice.level !== "info"), [{
      level: "warning",
      text:
        "no EDGESTREAM_KEYS set: open development mode, no key needed; listening on localhost only, answering only loopback Host names",
    }]);
  } finally {
    await config.webhooks.close();
  }
});

Deno.test("configFromEnv() on the memory store says in its startup line that its state is lost on restart", async () => {
  const config = await configFromEnv(env({}));
  try {
    assert.equal(config.store.kind, "memory");
    // README, Quick start: "its startup line says `store: memory (embedded; state is lost on restart)`".
    assert.equal(
      config.notices.filter((notice) => notice.text.startsWith("store: ")).map((notice) =>
        `${notice.level} ${notice.text}`
      ).join("\n"),
      "info store: memory (embedded; state is lost on restart)",
    );
  } finally {
    await config.webhooks.close();
  }
});

Deno.test("the README's quick start: the example config counts the three orders and reads them back", async () => {
  // The POST as the README shows it: its body and the reply its comment gives.
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const example = readme.match(
    /curl -s -X POST localhost:8000\/v1\/streams\/orders\/events \\\n\s+-H 'Content-Type: application\/json' \\\n\s+-d '([^']+)'\n# (.*)\n/,
  );
  assert.ok(example, "the README's quick start POSTs events to orders, its reply in a comment");
  const [, events, reply] = example;
  assert.equal(reply, '{"accepted":3,"duplicates":1,"late":0,"filtered":0,"rejected":[]}');
  const config = await configFromEnv(env({}));
  try {
    const app = createApp({ streams: config.streams, store: config.store, keys: config.keys });
    const posted = await app.request("http://localhost:8000/v1/streams/orders/events", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: events,
    });
    assert.equal(await posted.text(), reply);
    const read = await app.request(
      "http://localhost:8000/v1/streams/orders/counters/orders_per_minute",
    );
    const body = await read.json();
    assert.deepEqual(Object.keys(body), [
      "stream",
      "counter",
      "aggregate",
      "windows",
      "nextCursor",
    ]);
    assert.deepEqual(
      [body.stream, body.counter, body.aggregate, body.nextCursor],
      ["orders", "orders_per_minute", "count", null],
    );
    assert.deepEqual(
      body.windows.map((row: Record<string, unknown>) => [row.group, row.value, row.final]),
      [[{ country: "DE" }, 1, false], [{ country: "FR" }, 1, false]],
    );
    for (const row of body.windows) {
      assert.equal(Date.parse(row.end) - Date.parse(row.start), 60_000);
      assert.match(row.start, /T\d\d:\d\d:00\.000Z$/);
    }
    const current = await app.request(
      "http://localhost:8000/v1/streams/orders/counters/customers_last_10m/current",
    );
    assert.equal(current.status, 200);
    assert.deepEqual(
      (await current.json()).windows.map((row: { value: number }) => row.value),
      [2],
    );
  } finally {
    await config.webhooks.close();
  }
});
Deno.test("configFromEnv() with nothing set takes the README's defaults: examples/config.json, port 8000, a 5 s sweep, memory, development", async () => {
  const config = await configFromEnv(env({}));
  try {
    assert.equal(
      config.configPath,
      fileURLToPath(new URL("../examples/config.json", import.meta.url)),
      "EDGESTREAM_CONFIG",
    );
    assert.equal(config.port, 8000, "PORT");
    assert.equal(config.sweepEveryMs, 5_000, "EDGESTREAM_SWEEP_EVERY");
    assert.equal(config.store.kind, "memory", "no Upstash variables");
    assert.equal(productionReason(env({})), null, "EDGESTREAM_ENV");
  } finally {
    await config.webhooks.close();
  }
  // With keys, HOST defaults to every interface.
  const keyed = await configFromEnv(env({ EDGESTREAM_KEYS: "admin:0123456789abcdef0123" }));
  try {
    assert.equal(keyed.hostname, "0.0.0.0", "HOST");
  } finally {
    await keyed.webhooks.close();
  }
});

Deno.test("storeFromEnv() takes an EDGESTREAM_PREFIX of 64 characters and refuses 65", () => {
  const upstash = { UPSTASH_REDIS_REST_URL: "https://x.upstash.io", UPSTASH_REDIS_REST_TOKEN: "t" };
  assert.equal(storeFromEnv(env({ ...upstash, EDGESTREAM_PREFIX: "p".repeat(64) })).kind, "redis");
  assert.throws(
    () => storeFromEnv(env({ ...upstash, EDGESTREAM_PREFIX: "p".repeat(65) })),
    (error) =>
      error instanceof ConfigError && error.message.startsWith("EDGESTREAM_PREFIX: expected 1-64"),
  );
});

redisTest(
  "configFromEnv() sends every Redis call under the path of an UPSTASH_REDIS_REST_URL behind a reverse proxy, /pipeline too",
  async (fixture) => {
    const paths: string[] = [];
    // The reverse proxy serves the REST endpoint under /redis only.
    const proxy = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
      const path = new URL(request.url).pathname;
      paths.push(path);
      if (path !== "/redis" && !path.startsWith("/redis/")) {
        return new Response("Not found", { status: 404 });
      }
      const headers = new Headers(request.headers);
      headers.delete("host");
      const upstream = await fetch(`${fixture.restUrl}${path.slice("/redis".length) || "/"}`, {
        method: request.method,
        headers,
        body: await request.text(),
      });
      return new Response(await upstream.arrayBuffer(), upstream);
    });
    const dir = await Deno.makeTempDir();
    try {
      const path = `${dir}/config.json`;
      await Deno.writeTextFile(
        path,
        JSON.stringify({
          streams: { s: { counters: { n: { window: { tumbling: "1h" }, aggregate: "count" } } } },
        }),
      );
      const config = await configFromEnv(env({
        UPSTASH_REDIS_REST_URL: `http://127.0.0.1:${proxy.addr.port}/redis`,
        UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
        EDGESTREAM_CONFIG: path,
      }));
      try {
        assert.equal(config.store.kind, "redis");
        const app = createApp(config);
        const ingest = await app.request("/v1/streams/s/events", {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ id: "a" }),
        });
        assert.equal(ingest.status, 202, await ingest.text());
        const read = await app.request("/v1/streams/s/counters/n");
        assert.equal(read.status, 200);
        assert.deepEqual(
          (await read.json()).windows.map((window: { value: number }) => window.value),
          [1],
        );
        // A stream's stats (HGETALL, which the client's auto-pipelining sends on its own to `/`).
        const details = await app.request("/v1/streams/s");
        assert.equal(details.status, 200);
        assert.equal((await details.json()).stats.accepted, 1);
      } finally {
        config.streams.stop();
        await config.webhooks.close();
      }
      assert.ok(paths.includes("/redis") && paths.includes("/redis/pipeline"), paths.join(", "));
      assert.deepEqual(paths.filter((path) => !/^\/redis(\/pipeline)?$/.test(path)), []);
    } finally {
      await proxy.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
);

redisTest(
  "storeFromEnv() without EDGESTREAM_PREFIX writes every Redis key under the default prefix es",
  async (fixture) => {
    const store = storeFromEnv(env({
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
    }));
    await forgottenAfter(store, ["a", "b"]);
    const keys = await withDirect(fixture.redisUrl, (send) => send("KEYS", "*")) as string[];
    assert.ok(keys.length > 0, "the batch wrote keys");
    assert.deepEqual(keys.filter((key) => !key.startsWith("es:")), []);
  },
);

Deno.test("configFromEnv() in production needs keys even with EDGESTREAM_ALLOW_MEMORY=true, which lets only the memory store through", async () => {
  const production = { EDGESTREAM_ENV: "production", EDGESTREAM_ALLOW_MEMORY: "true" };
  await assert.rejects(
    () => configFromEnv(env(production)),
    (error) =>
      error instanceof ConfigError &&
      error.message.startsWith("EDGESTREAM_KEYS: EDGESTREAM_ENV=production needs API keys"),
  );
  const keyed = await configFromEnv(
    env({ ...production, EDGESTREAM_KEYS: "admin:0123456789abcdef0123" }),
  );
  try {
    assert.equal(keyed.store.kind, "memory");
  } finally {
    await keyed.webhooks.close();
  }
});

Deno.test("webhooksFromEnv() without EDGESTREAM_WEBHOOK_DISABLE_AFTER disables an endpoint after 5 days of failures", async () => {
  const clock = FakeTimers.install({ now: Date.now(), toFake: ["Date"] });
  const webhooks = webhooksFromEnv(env({ EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1" }), {
    store: new MemoryStore(),
    streams,
  });
  try {
    // Nothing listens on port 9: every attempt fails.
    const { endpoint } = await webhooks.createEndpoint({ url: "http://127.0.0.1:9/hook" });
    const failOnce = async () => {
      await webhooks.sendTest(endpoint.id);
      await webhooks.idle();
      return await webhooks.getEndpoint(endpoint.id);
    };
    assert.equal((await failOnce()).disabled, false);
    clock.tick(5 * 24 * 3_600_000 - 1);
    assert.equal((await failOnce()).disabled, false, "failing for 5 days less 1 ms");
    clock.tick(1);
    const disabled = await failOnce();
    assert.equal(disabled.disabled, true);
    assert.equal(disabled.disabledReason, "Every attempt failed for 5 days");
  } finally {
    clock.uninstall();
    await webhooks.close();
  }
});

Deno.test("configFromEnv() reads the connection bounds, 100 a key and 10000 a process by default, each apart from the other", async () => {
  const unset = await configFromEnv(env({}));
  await unset.webhooks.close();
  assert.deepEqual(unset.subscriptions, { perKey: 100, perProcess: 10_000 });
  assert.deepEqual(unset.ingestSockets, { perKey: 100, perProcess: 10_000 });
  const subscriptions = await configFromEnv(env({
    EDGESTREAM_SUBSCRIPTIONS_PER_KEY: "5",
    EDGESTREAM_SUBSCRIPTIONS_MAX: " 50 ",
  }));
  await subscriptions.webhooks.close();
  assert.deepEqual(subscriptions.subscriptions, { perKey: 5, perProcess: 50 });
  assert.deepEqual(subscriptions.ingestSockets, { perKey: 100, perProcess: 10_000 });
  const sockets = await configFromEnv(env({
    EDGESTREAM_INGEST_SOCKETS_PER_KEY: "3",
    EDGESTREAM_INGEST_SOCKETS_MAX: " 30 ",
  }));
  await sockets.webhooks.close();
  assert.deepEqual(sockets.ingestSockets, { perKey: 3, perProcess: 30 });
  assert.deepEqual(sockets.subscriptions, { perKey: 100, perProcess: 10_000 });
  for (
    const name of [
      "EDGESTREAM_SUBSCRIPTIONS_PER_KEY",
      "EDGESTREAM_SUBSCRIPTIONS_MAX",
      "EDGESTREAM_INGEST_SOCKETS_PER_KEY",
      "EDGESTREAM_INGEST_SOCKETS_MAX",
    ]
  ) {
    for (const value of ["0", "-1", "2.5", "lots"]) {
      await assert.rejects(
        configFromEnv(env({ [name]: value })),
        (error) =>
          error instanceof ConfigError &&
          error.message === `${name}: expected a whole number of at least 1, got '${value}'`,
        `${name}=${value}`,
      );
    }
  }
});

Deno.test("configFromEnv() warns once, naming both settings, of a per-key connection bound above its process bound, as the README's table says", async () => {
  const readme = (await Deno.readTextFile(new URL("../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  const claim =
    "above `EDGESTREAM_SUBSCRIPTIONS_MAX` it is never reached, and startup logs a warning naming both";
  assert.ok(readme.includes(claim), claim);
  const socketsClaim =
    "above `EDGESTREAM_INGEST_SOCKETS_MAX` it is never reached, and startup logs a warning naming both";
  assert.ok(readme.includes(socketsClaim), socketsClaim);
  const warningsOf = async (vars: Record<string, string>) => {
    const config = await configFromEnv(
      env({ EDGESTREAM_KEYS: "admin:0123456789abcdef0123", ...vars }),
    );
    await config.webhooks.close();
    return config.notices.filter((notice) => /_PER_KEY/.test(notice.text));
  };
  assert.deepEqual(
    await warningsOf({
      EDGESTREAM_SUBSCRIPTIONS_PER_KEY: "500",
      EDGESTREAM_SUBSCRIPTIONS_MAX: "100",
    }),
    [{
      level: "warning",
      text:
        "EDGESTREAM_SUBSCRIPTIONS_PER_KEY (500) is above EDGESTREAM_SUBSCRIPTIONS_MAX (100): it is never reached, and one key (in open mode, one client address) can hold all of a process's live subscriptions; set it at most EDGESTREAM_SUBSCRIPTIONS_MAX",
    }],
  );
  // The per-key default counts too: a process bound set below it.
  assert.deepEqual(await warningsOf({ EDGESTREAM_SUBSCRIPTIONS_MAX: "50" }), [{
    level: "warning",
    text:
      "EDGESTREAM_SUBSCRIPTIONS_PER_KEY (100, its default) is above EDGESTREAM_SUBSCRIPTIONS_MAX (50): it is never reached, and one key (in open mode, one client address) can hold all of a process's live subscriptions; set it at most EDGESTREAM_SUBSCRIPTIONS_MAX",
  }]);
  assert.deepEqual(
    await warningsOf({
      EDGESTREAM_INGEST_SOCKETS_PER_KEY: "31",
      EDGESTREAM_INGEST_SOCKETS_MAX: "30",
    }),
    [{
      level: "warning",
      text:
        "EDGESTREAM_INGEST_SOCKETS_PER_KEY (31) is above EDGESTREAM_INGEST_SOCKETS_MAX (30): it is never reached, and one key (in open mode, one client address) can hold all of a process's WebSocket ingest connections; set it at most EDGESTREAM_INGEST_SOCKETS_MAX",
    }],
  );
  // Equal, below, or unset: no word.
  assert.deepEqual(await warningsOf({}), []);
  assert.deepEqual(
    await warningsOf({
      EDGESTREAM_SUBSCRIPTIONS_PER_KEY: "50",
      EDGESTREAM_SUBSCRIPTIONS_MAX: "50",
      EDGESTREAM_INGEST_SOCKETS_PER_KEY: "3",
      EDGESTREAM_INGEST_SOCKETS_MAX: "30",
    }),
    [],
  );
});

Deno.test("configFromEnv() gives the stores EDGESTREAM_KEYS_MAX, EDGESTREAM_WEBHOOKS_MAX and EDGESTREAM_STREAMS_MAX, and refuses bad values naming the setting", async () => {
  const config = await configFromEnv(env({
    EDGESTREAM_KEYS_MAX: "1",
    EDGESTREAM_WEBHOOKS_MAX: " 1 ",
    EDGESTREAM_STREAMS_MAX: "1",
  }));
  try {
    const key = (id: string) => ({
      id,
      type: "secret" as const,
      hash: `hash-of-${id}`,
      prefix: "sk_abcd",
      scopes: ["read"],
      createdAt: 1,
    });
    await config.keys.store.createKey(key("key_a"));
    await assert.rejects(config.keys.store.createKey(key("key_b")), StoredLimitError);
    await config.deliveries.putEndpoint(endpointConfig("ep_a"), { expectVersion: null });
    await assert.rejects(
      config.deliveries.putEndpoint(endpointConfig("ep_b"), { expectVersion: null }),
      StoredLimitError,
    );
    const definition = { counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } } };
    await config.streams.put("made_a", definition);
    await assert.rejects(config.streams.put("made_b", definition), StoredLimitError);
  } finally {
    await config.webhooks.close();
  }
  for (const name of ["EDGESTREAM_KEYS_MAX", "EDGESTREAM_WEBHOOKS_MAX", "EDGESTREAM_STREAMS_MAX"]) {
    for (const value of ["0", "-1", "2.5", "lots"]) {
      await assert.rejects(
        configFromEnv(env({ [name]: value })),
        (error) =>
          error instanceof ConfigError &&
          error.message === `${name}: expected a whole number of at least 1, got '${value}'`,
        `${name}=${value}`,
      );
    }
  }
});

Deno.test("configFromEnv() bounds run-time keys, webhooks and streams by default: 10000, 1000 and 1000", async () => {
  const config = await configFromEnv(env({}));
  try {
    for (let n = 0; n < 1_000; n++) {
      await config.deliveries.putEndpoint(endpointConfig(`ep_${n}`), { expectVersion: null });
    }
    const refused = await config.deliveries.putEndpoint(endpointConfig("ep_x"), {
      expectVersion: null,
    }).then(() => null, (error) => error);
    assert.ok(refused instanceof StoredLimitError);
    assert.equal(refused.max, 1_000);
  } finally {
    await config.webhooks.close();
  }
  assert.deepEqual([DEFAULT_KEYS_MAX, DEFAULT_WEBHOOKS_MAX, DEFAULT_STREAMS_MAX], [
    10_000,
    1_000,
    1_000,
  ]);
});

/**
 * Runs `check` with the config `configFromEnv()` makes of a config file holding `file` (with an
 * admin key), closing it and removing the file after.
 */
async function withConfigFile(
  file: unknown,
  check: (config: Awaited<ReturnType<typeof configFromEnv>>) => void,
): Promise<void> {
  const path = await Deno.makeTempFile({ suffix: ".json" });
  try {
    await Deno.writeTextFile(path, typeof file === "string" ? file : JSON.stringify(file));
    const config = await configFromEnv(
      env({ EDGESTREAM_CONFIG: path, EDGESTREAM_KEYS: "admin:0123456789abcdef0123" }),
    );
    try {
      check(config);
    } finally {
      await config.webhooks.close();
    }
  } finally {
    await Deno.remove(path);
  }
}

Deno.test("configFromEnv() serves a config file whose groupBy names a field twice, as earlier releases counted it, with one warning naming the path", async () => {
  const byPlan = {
    window: { tumbling: "1m" },
    groupBy: ["plan", "region", "plan"],
    aggregate: "count",
  };
  await withConfigFile({ streams: { orders: { counters: { byPlan } } } }, (config) => {
    assert.deepEqual(config.streams.get("orders")!.counters[0].groupBy, ["plan", "region", "plan"]);
    assert.deepEqual(config.notices.filter((notice) => notice.level === "warning"), [{
      level: "warning",
      text:
        "EDGESTREAM_CONFIG: streams.orders.counters.byPlan.groupBy[2]: Field 'plan' is already at groupBy[0]; counted as before (each group keyed by the field twice); to group by it once, define the counter under a new name (a changed groupBy is refused)",
    }]);
  });
});

Deno.test("configFromEnv() serves a config file's schema keyword refused since (not of its kind) as before, with a warning naming its path", async () => {
  const orders = {
    schema: { type: "object", required: "id", properties: { n: { minimum: "x" } } },
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  await withConfigFile({ streams: { orders } }, (config) => {
    // As zod's converter read it before the check: neither keyword applies.
    assert.equal(config.streams.get("orders")!.schema.safeParse({ n: -5 }).success, true);
    assert.deepEqual(config.notices.filter((notice) => notice.level === "warning"), [{
      level: "warning",
      text:
        `EDGESTREAM_CONFIG: streams.orders.schema: required: expected an array of property names, got "id"; compiled as before this check (zod may ignore the keyword or read it wrongly); fix it: a definition sent through the API with it is refused`,
    }]);
  });
});

Deno.test("configFromEnv() serves a config file's schema past the expanded size (refused since) as before, with a warning naming it", async () => {
  // 15 definitions, each an anyOf of two $refs to the next: about 5 * 2^15 once expanded.
  const $defs: Record<string, unknown> = { d15: { type: "string" } };
  for (let i = 0; i < 15; i++) {
    $defs[`d${i}`] = { anyOf: [{ $ref: `#/$defs/d${i + 1}` }, { $ref: `#/$defs/d${i + 1}` }] };
  }
  const orders = {
    schema: { type: "object", properties: { a: { $ref: "#/$defs/d0" } }, $defs },
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  await withConfigFile({ streams: { orders } }, (config) => {
    assert.equal(config.streams.get("orders")!.schema.safeParse({ a: 5 }).success, false);
    assert.deepEqual(config.notices.filter((notice) => notice.level === "warning"), [{
      level: "warning",
      text:
        "EDGESTREAM_CONFIG: streams.orders.schema: it holds more than 131072 objects and arrays once its $refs are expanded (each event value is checked against every anyOf/oneOf member that applies to it); compiled as before this check (one wrong value may take many anyOf checks); fix it: a definition sent through the API with it is refused",
    }]);
  });
});

Deno.test("configFromEnv() serves a config file's schema default of 1e400 (Infinity) as before, with a warning naming its path", async () => {
  const file =
    `{"streams": {"orders": {"schema": {"type": "object", "properties": {"n": {"type": "number", "default": 1e400}}}, "counters": {"n": {"window": {"tumbling": "1m"}, "aggregate": "count"}}}}}`;
  await withConfigFile(file, (config) => {
    assert.equal(config.streams.get("orders")!.schema.safeParse({}).success, true);
    assert.deepEqual(config.notices.filter((notice) => notice.level === "warning"), [{
      level: "warning",
      text:
        "EDGESTREAM_CONFIG: streams.orders.schema: properties.n.default: expected a number within the double range, got Infinity (JSON reads 1e400 as Infinity, which it writes back as null); compiled as before this check (zod may ignore the keyword or read it wrongly); fix it: a definition sent through the API with it is refused",
    }]);
  });
});

Deno.test("configFromEnv() serves a config file's schema format zod does not know as before (checking nothing), with a warning naming its path", async () => {
  const orders = {
    schema: { type: "object", properties: { contact: { type: "string", format: "emial" } } },
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  await withConfigFile({ streams: { orders } }, (config) => {
    assert.equal(config.streams.get("orders")!.schema.safeParse({ contact: "x" }).success, true);
    const warnings = config.notices.filter((notice) => notice.level === "warning");
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0].text,
      /^EDGESTREAM_CONFIG: streams\.orders\.schema: properties\.contact\.format: expected a known format \(.*\), got "emial"; compiled as before this check/,
    );
  });
});

Deno.test("configFromEnv() serves a config file's alert naming a group field no groupBy field is as before, with a warning naming its path and the fields", async () => {
  const orders = {
    counters: { n: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: "count" } },
    alerts: [{ name: "de", counter: "n", when: `group.contry == "DE"` }],
  };
  await withConfigFile({ streams: { orders } }, (config) => {
    assert.equal(config.streams.get("orders")!.alerts.length, 1);
    const warnings = config.notices.filter((notice) => notice.level === "warning");
    assert.deepEqual(warnings.map((warning) => warning.text), [
      "EDGESTREAM_CONFIG: streams.orders.alerts[0].when: group has no field 'contry'; it has the groupBy fields of counter 'n': country; compiled as before this check (its condition fails where it reads the field, and the alert does not fire there); fix it: a definition sent through the API with it is refused",
    ]);
  });
});

Deno.test("configFromEnv() serves a config file's counter summing a field its closed schema can never hold as before, with a warning naming its path and the fields it holds", async () => {
  const orders = {
    schema: {
      type: "object",
      additionalProperties: false,
      properties: { amount: { type: "number" }, country: { type: "string" } },
    },
    counters: {
      revenue: { window: { tumbling: "1m" }, groupBy: ["country"], aggregate: { sum: "amont" } },
    },
  };
  await withConfigFile({ streams: { orders } }, (config) => {
    assert.equal(config.streams.get("orders")!.counters.length, 1);
    const warnings = config.notices.filter((notice) => notice.level === "warning");
    assert.deepEqual(warnings.map((warning) => warning.text), [
      `EDGESTREAM_CONFIG: streams.orders.counters.revenue.aggregate.sum: Field 'amont' is not in the schema, which holds no other fields ("additionalProperties": false), and no transform sets it, so it is always missing; the schema holds: amount, country; compiled as before this check (the field is always missing: a counter reading it counts nothing or groups as null); fix the field or the schema: a definition sent through the API with it is refused`,
    ]);
  });
});

Deno.test("configFromEnv() warns of a time.field or dedupe.field a closed schema can never hold with what that does: events timed when received, none deduplicated", async () => {
  const schema = {
    type: "object",
    additionalProperties: false,
    properties: { id: { type: "string" }, ts: { type: "string" } },
  };
  const counters = { n: { window: { tumbling: "1m" }, aggregate: "count" } };
  const timed = { schema, time: { field: "tss" }, counters };
  const deduped = { schema, dedupe: { field: "eventId" }, counters };
  await withConfigFile({ streams: { timed, deduped } }, (config) => {
    const warnings = config.notices.filter((notice) => notice.level === "warning");
    assert.equal(warnings.length, 2);
    assert.match(
      warnings[0].text,
      /^EDGESTREAM_CONFIG: streams\.timed\.time\.field: Field 'tss' .*\(the field is always missing: every event is timed when it is received\); fix the field or the schema:/,
    );
    assert.match(
      warnings[1].text,
      /^EDGESTREAM_CONFIG: streams\.deduped\.dedupe\.field: Field 'eventId' .*\(the field is always missing: no event is deduplicated\); fix the field or the schema:/,
    );
  });
});

Deno.test("configFromEnv() serves a config file's counter reading a field a transform's drop removes, rename moves away or pick leaves out as before, with a warning naming that step as the fix, not the schema", async () => {
  const counters = {
    n: { window: { tumbling: "1m" }, groupBy: ["debug"], aggregate: "count" },
  };
  const dropped = { transform: [{ set: { seen: "true" } }, { drop: ["debug"] }], counters };
  const renamed = { transform: [{ rename: { debug: "note" } }], counters };
  const picked = { transform: [{ pick: ["amount", "country"] }], counters };
  await withConfigFile({ streams: { dropped, renamed, picked } }, (config) => {
    assert.equal(config.streams.get("dropped")!.counters.length, 1);
    assert.equal(config.streams.get("renamed")!.counters.length, 1);
    assert.equal(config.streams.get("picked")!.counters.length, 1);
    const warnings = config.notices.filter((notice) => notice.level === "warning");
    assert.deepEqual(warnings.map((warning) => warning.text), [
      "EDGESTREAM_CONFIG: streams.dropped.counters.n.groupBy[0]: Field 'debug' is always missing: transform[1] drops 'debug', and no step after it sets 'debug'; compiled as before this check (the field is always missing: a counter reading it counts nothing or groups as null); fix the field or transform[1]'s drop: a definition sent through the API with it is refused",
      "EDGESTREAM_CONFIG: streams.renamed.counters.n.groupBy[0]: Field 'debug' is always missing: transform[0] renames 'debug' to 'note', and no step after it sets 'debug'; compiled as before this check (the field is always missing: a counter reading it counts nothing or groups as null); fix the field or transform[0]'s rename: a definition sent through the API with it is refused",
      "EDGESTREAM_CONFIG: streams.picked.counters.n.groupBy[0]: Field 'debug' is always missing: transform[0] picks only amount, country, and no step after it sets 'debug'; compiled as before this check (the field is always missing: a counter reading it counts nothing or groups as null); fix the field or transform[0]'s pick: a definition sent through the API with it is refused",
    ]);
  });
});

Deno.test("configFromEnv() serves a config file's patterns past the definition's budget as before, with one warning naming the stream and the first pattern past it", async () => {
  const properties = Object.fromEntries(
    Array.from({ length: 9 }, (_, index) => [
      `f${index}`,
      { type: "string", pattern: `[a-z]{1000}[^x]{999}|${index}` },
    ]),
  );
  const orders = {
    schema: { type: "object", properties },
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  await withConfigFile({ streams: { orders } }, (config) => {
    assert.equal(config.streams.get("orders")!.schema.safeParse({ f0: "0" }).success, true);
    assert.deepEqual(config.notices.filter((notice) => notice.level === "warning"), [{
      level: "warning",
      text:
        "EDGESTREAM_CONFIG: streams.orders.schema.properties.f7.pattern: the stream's patterns would compile to 16024 instructions with this one (2003), past the 16000 a definition may have together (a pattern counts its size once its repeats are expanded: [a-z]{1000} is 1002; a character class 1 more for each 32 ranges of characters it holds: [\\p{L}] is about 24; each at most 5000 without its classes' ranges); shorten or drop patterns; compiled as before this check (each instance compiles them at startup); fix it: a definition sent through the API with it is refused",
    }]);
  });
});

Deno.test("configFromEnv() serves a config file's pattern past the 5,000 instructions a pattern may have as before, with one warning naming the stream and its path", async () => {
  const big = "[a-z]{1000}".repeat(6);
  const orders = {
    schema: { type: "object", properties: { sku: { type: "string", pattern: `^x|${big}` } } },
    transform: [{ filter: `!has(event.a) || event.a.matches("^0|${big}")` }],
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  await withConfigFile({ streams: { orders } }, (config) => {
    const stream = config.streams.get("orders")!;
    assert.equal(stream.schema.safeParse({ sku: "x" }).success, true);
    assert.equal(stream.schema.safeParse({ sku: "y" }).success, false);
    assert.deepEqual(stream.transform({ a: "0" }), { a: "0" });
    assert.equal(stream.transform({ a: "1" }), null);
    assert.deepEqual(config.notices.filter((notice) => notice.level === "warning"), [{
      level: "warning",
      text:
        `EDGESTREAM_CONFIG: streams.orders.schema.properties.sku.pattern: Pattern '^x|${big}' is too large: it compiles to about 6005 instructions once its repeats are expanded, past the 5000 a pattern may have ([a-z]{1000} is 1002); compiled as before this check (each instance compiles them at startup); fix it: a definition sent through the API with it is refused`,
    }]);
  });
});

Deno.test("configFromEnv() serves a config file's filter whose patterns' character classes take it past the budget as before, with one warning naming it", async () => {
  // 1,003 instructions by patternSize (taken before), 40,005 with its classes' ranges.
  const orders = {
    transform: [{
      filter: `!has(event.a) || event.a.matches("^[\\\\p{L}\\\\p{N}\\\\p{S}\\\\p{P}]{1000}|0")`,
    }],
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  await withConfigFile({ streams: { orders } }, (config) => {
    const transform = config.streams.get("orders")!.transform;
    assert.deepEqual(transform({ a: "0" }), { a: "0" });
    assert.equal(transform({ a: "1" }), null);
    const warnings = config.notices.filter((notice) => notice.level === "warning");
    assert.equal(warnings.length, 1);
    assert.match(
      warnings[0].text,
      /^EDGESTREAM_CONFIG: streams\.orders\.transform\[0\]\.filter: the stream's patterns would compile to 40005 instructions with this one \(40005\), past the 16000 a definition may have together .*; compiled as before this check/,
    );
  });
});

Deno.test("configFromEnv() serves a config file's origin refused since (a wildcard host, credentials) as before, with a warning naming its path", async () => {
  const orders = { origins: ["https://shop.example", "https://user:pw@shop.example"] };
  await withConfigFile({ streams: { orders } }, (config) => {
    const origins = config.streams.get("orders")!.parsed.origins;
    assert.deepEqual(origins, ["https://shop.example", "https://shop.example"]);
    assert.deepEqual(config.notices.filter((notice) => notice.level === "warning"), [{
      level: "warning",
      text:
        `EDGESTREAM_CONFIG: streams.orders.origins[1]: Origin 'https://[REDACTED]@shop.example' holds credentials, which no browser sends in Origin; expected http(s)://host[:port] without path, credentials or wildcard, e.g. 'https://app.example.com'; served as before this check (a wildcard host matches no page; credentials are dropped, leaving the origin); fix it: a definition sent through the API with it is refused`,
    }]);
  });
});

Deno.test("configFromEnv() serves a config file's duration refused since (a fraction of a millisecond, a unit given twice) as read before, with a warning naming its path", async () => {
  const orders = {
    time: { lateness: "30s30s" },
    counters: { n: { window: { tumbling: "1m" }, aggregate: "count" } },
  };
  await withConfigFile({ streams: { orders } }, (config) => {
    assert.equal(config.streams.get("orders")!.latenessMs, 60_000);
    assert.deepEqual(config.notices.filter((notice) => notice.level === "warning"), [{
      level: "warning",
      text:
        "EDGESTREAM_CONFIG: streams.orders.time.lateness: Cannot read duration '30s30s' at position 3: unit 's' is given twice; give each unit once; read as before this check (a fraction of a millisecond rounded, a unit given twice added up); fix it: a definition sent through the API with it is refused",
    }]);
  });
});

Deno.test("configFromEnv() serves a config file's window shorter than 1s as before, with a warning naming its path", async () => {
  const orders = { counters: { fast: { window: { tumbling: "250ms" }, aggregate: "count" } } };
  await withConfigFile({ streams: { orders } }, (config) => {
    assert.equal(config.streams.get("orders")!.counters[0].window.sizeMs, 250);
    assert.deepEqual(config.notices.filter((notice) => notice.level === "warning"), [{
      level: "warning",
      text:
        "EDGESTREAM_CONFIG: streams.orders.counters.fast.window.tumbling: Window size is 250 ms, shorter than the minimum of 1s: a sweep closes a bounded number of a counter's windows each run, so windows this short would close later and later behind a steady stream of events; use '1s' or more; served as before this check (its windows may close later and later behind its events); a definition sent through the API with it is refused: to count in windows of 1s or more, define a counter under a new name (a changed window is refused)",
    }]);
  });
});

Deno.test("configFromEnv() asks Upstash (an upstash.io REST URL) nothing for its setup warnings, neither CONFIG GET (it refuses CONFIG) nor the scripts", async () => {
  const sent: string[] = [];
  const realFetch = globalThis.fetch;
  // No network: every request is noted and fails.
  globalThis.fetch = (input: RequestInfo | URL, init?: RequestInit) => {
    sent.push(`${input instanceof Request ? input.url : String(input)} ${init?.body ?? ""}`);
    return Promise.reject(new TypeError("no network in tests"));
  };
  try {
    const config = await configFromEnv(env({
      UPSTASH_REDIS_REST_URL: "https://eu1-quiet-owl-12345.upstash.io",
      UPSTASH_REDIS_REST_TOKEN: "t",
    }));
    try {
      const before = sent.length;
      assert.deepEqual(await config.storeWarnings(), []);
      assert.deepEqual(sent.slice(before), []);
    } finally {
      config.streams.stop();
      await config.webhooks.close();
    }
  } finally {
    globalThis.fetch = realFetch;
  }
});

Deno.test("configFromEnv() warns, naming it, that EDGESTREAM_MEMORY_DEDUPE_MAX has no effect with the Redis store", async () => {
  const redis = {
    UPSTASH_REDIS_REST_URL: "https://eu1-quiet-owl-12345.upstash.io",
    UPSTASH_REDIS_REST_TOKEN: "t",
  };
  const warning =
    "EDGESTREAM_MEMORY_DEDUPE_MAX has no effect with the Redis store: it bounds the memory store's dedupe ids; Redis keeps a stream's ids for its dedupe ttl";
  const cases: Array<[Record<string, string>, boolean]> = [
    [{ ...redis, EDGESTREAM_MEMORY_DEDUPE_MAX: "1000" }, true],
    [{ ...redis, EDGESTREAM_MEMORY_DEDUPE_MAX: "" }, false],
    [redis, false],
    [{ EDGESTREAM_MEMORY_DEDUPE_MAX: "1000" }, false],
  ];
  for (const [vars, warned] of cases) {
    const config = await configFromEnv(env(vars));
    try {
      const found = config.notices.some((notice) =>
        notice.level === "warning" && notice.text === warning
      );
      assert.equal(found, warned, JSON.stringify(vars));
    } finally {
      config.streams.stop();
      await config.webhooks.close();
    }
  }
});

Deno.test("configFromEnv() warns, naming it, that EDGESTREAM_ALLOW_MEMORY=true has no effect with the Redis store or outside production", async () => {
  const redis = {
    UPSTASH_REDIS_REST_URL: "https://eu1-quiet-owl-12345.upstash.io",
    UPSTASH_REDIS_REST_TOKEN: "t",
  };
  const keys = { EDGESTREAM_KEYS: "admin:0123456789abcdef0123" };
  const production = { ...keys, EDGESTREAM_ENV: "production" };
  const allow = { EDGESTREAM_ALLOW_MEMORY: "true" };
  const withRedis =
    "EDGESTREAM_ALLOW_MEMORY has no effect with the Redis store: it lets the memory store serve production";
  const outside =
    "EDGESTREAM_ALLOW_MEMORY has no effect outside production (EDGESTREAM_ENV=production or Deno Deploy's production timeline): it lets the memory store serve production, and outside it the memory store needs no leave";
  const cases: Array<[Record<string, string>, string | undefined]> = [
    [{ ...redis, ...allow }, withRedis],
    [{ ...redis, ...production, ...allow }, withRedis],
    [allow, outside],
    [{ ...keys, ...allow }, outside],
    [{ ...keys, ...allow, EDGESTREAM_ENV: "development" }, outside],
    // Where it does what it says: no warning.
    [{ ...production, ...allow }, undefined],
    [{ ...keys, ...allow, DENO_TIMELINE: "production" }, undefined],
    [{ ...redis, EDGESTREAM_ALLOW_MEMORY: "false" }, undefined],
    [{ EDGESTREAM_ALLOW_MEMORY: "" }, undefined],
  ];
  for (const [vars, expected] of cases) {
    const config = await configFromEnv(env(vars));
    try {
      const found = config.notices.filter((notice) =>
        notice.text.startsWith("EDGESTREAM_ALLOW_MEMORY")
      );
      assert.deepEqual(
        found,
        expected === undefined ? [] : [{ level: "warning", text: expected }],
        JSON.stringify(vars),
      );
    } finally {
      config.streams.stop();
      await config.webhooks.close();
    }
  }
});

/**
 * What 30 look-ups of names no stream has, started at once, come to under `config`: how many
 * found nothing and how many were refused `stream_lookup_busy`.
 */
async function unknownLookups(
  config: Awaited<ReturnType<typeof configFromEnv>>,
): Promise<{ unknown: number; busy: number }> {
  try {
    const settled = await Promise.allSettled(
      Array.from({ length: 30 }, (_, i) => config.streams.find(`made-up-${i}`)),
    );
    let unknown = 0;
    let busy = 0;
    for (const result of settled) {
      if (result.status === "fulfilled") {
        assert.equal(result.value, undefined);
        unknown += 1;
      } else {
        assert.equal((result.reason as { code?: string }).code, "stream_lookup_busy");
        busy += 1;
      }
    }
    return { unknown, busy };
  } finally {
    config.streams.stop();
    await config.webhooks.close();
  }
}

Deno.test("README: on the memory store there is no bound on looking up unknown stream names: each is unknown (404), none stream_lookup_busy", async () => {
  assert.deepEqual(await unknownLookups(await configFromEnv(env({}))), { unknown: 30, busy: 0 });
});

redisTest(
  "configFromEnv() on Redis looks up at most 20 unknown stream names a second: the rest are stream_lookup_busy, as README says",
  async (fixture) => {
    const config = await configFromEnv(env({
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
    }));
    assert.deepEqual(await unknownLookups(config), { unknown: 20, busy: 10 });
  },
);

redisTest(
  "configFromEnv() still warns of a redis-server behind a REST bridge without appendonly yes",
  async (fixture) => {
    const config = await configFromEnv(env({
      UPSTASH_REDIS_REST_URL: fixture.restUrl,
      UPSTASH_REDIS_REST_TOKEN: fixture.restToken,
    }));
    try {
      const warnings = await config.storeWarnings();
      assert.equal(warnings.length, 1);
      assert.match(warnings[0].text, /^Redis has appendonly no/);
    } finally {
      config.streams.stop();
      await config.webhooks.close();
    }
  },
);

Deno.test("configFromEnv() on Deno Deploy's production timeline refuses open mode and the memory store with EDGESTREAM_ENV=development (its default) set too", async () => {
  const timeline = { DENO_TIMELINE: "production", EDGESTREAM_ENV: "development" };
  assert.equal(
    productionReason(env(timeline)),
    "Deno Deploy production timeline (DENO_TIMELINE=production)",
  );
  await assert.rejects(
    configFromEnv(env(timeline)),
    (error) => error instanceof ConfigError && error.message.startsWith("EDGESTREAM_KEYS: Deno"),
  );
  await assert.rejects(
    configFromEnv(env({ ...timeline, EDGESTREAM_KEYS: "admin:0123456789abcdef0123" })),
    (error) =>
      error instanceof ConfigError &&
      error.message.startsWith("UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN: Deno"),
  );
});

Deno.test("configFromEnv() does not print the Redis token when it is given as UPSTASH_REDIS_REST_URL (the two swapped)", async () => {
  const token = "AXzZASQgYjA4YzU2ZmEtZTg4ZS00ZGE2LWI5MjAtNmJm";
  await assert.rejects(
    configFromEnv(env({
      UPSTASH_REDIS_REST_URL: token,
      UPSTASH_REDIS_REST_TOKEN: "https://eu1-busy-cat-12345.upstash.io",
    })),
    (error) =>
      error instanceof ConfigError &&
      error.message.startsWith("UPSTASH_REDIS_REST_URL: expected an http(s) URL, got ") &&
      !error.message.includes(token.slice(0, 8)),
  );
});

Deno.test("configFromEnv() refuses an UPSTASH_REDIS_REST_URL the client cannot take without printing the credentials written into it", async () => {
  for (
    const url of [
      "https://default:pw-0123456789@eu1-busy-cat-12345.upstash.io\n", // a line break copied along
      "HTTPS://default:pw-0123456789@eu1-busy-cat-12345.upstash.io", // a scheme in upper case
    ]
  ) {
    await assert.rejects(
      configFromEnv(env({ UPSTASH_REDIS_REST_URL: url, UPSTASH_REDIS_REST_TOKEN: "token" })),
      (error) =>
        error instanceof ConfigError &&
        error.message.startsWith("UPSTASH_REDIS_REST_URL: expected an http(s) URL, got '") &&
        error.message.includes("://[REDACTED]@eu1-busy-cat-12345.upstash.io") &&
        !error.message.includes("pw-0123456789"),
      JSON.stringify(url),
    );
  }
});

Deno.test("configFromEnv() refuses an UPSTASH_REDIS_REST_URL whose password holds '/', '?' or '#', or that lacks '//', without printing the password", async () => {
  for (
    const url of [
      "https://default:pw-0123/456789@eu1-busy-cat-12345.upstash.io", // '/' not percent-encoded
      "https://default:pw-0123#456789@eu1-busy-cat-12345.upstash.io",
      "https://default:pw-0123?456789@eu1-busy-cat-12345.upstash.io",
      "https:default:pw-0123456789@eu1-busy-cat-12345.upstash.io", // URL parsers take it so
    ]
  ) {
    await assert.rejects(
      configFromEnv(env({ UPSTASH_REDIS_REST_URL: url, UPSTASH_REDIS_REST_TOKEN: "token" })),
      (error) =>
        error instanceof ConfigError &&
        error.message.startsWith("UPSTASH_REDIS_REST_URL: expected an http(s) URL, got '") &&
        error.message.includes("[REDACTED]@eu1-busy-cat-12345.upstash.io") &&
        !error.message.includes("pw-0123") && !error.message.includes("456789"),
      JSON.stringify(url),
    );
  }
});

Deno.test("configFromEnv() refuses a URL setting it cannot use without printing its query or fragment, which may hold a token", async () => {
  const cases: Array<[Record<string, string>, string]> = [
    [
      {
        OTEL_DENO: "true",
        OTEL_EXPORTER_OTLP_ENDPOINT: "otel.example.com:4318/?api_key=qs-0123456789",
      },
      "OTEL_EXPORTER_OTLP_ENDPOINT: expected an http:// or https:// URL (http://localhost:4318), got 'otel.example.com:4318/' and a query or fragment (not shown)",
    ],
    [
      {
        OTEL_DENO: "true",
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: "localhost:4318#_token=qs-0123456789",
      },
      "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: expected an http:// or https:// URL (http://localhost:4318), got 'localhost:4318' and a query or fragment (not shown)",
    ],
    [
      {
        OTEL_DENO: "true",
        OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: "http://u:pw-0123@otel:4318/?sig=qs-0123456789 x",
      },
      "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: expected an http:// or https:// URL (http://localhost:4318), got 'http://[REDACTED]@otel:4318/' and a query or fragment (not shown)",
    ],
    [
      {
        UPSTASH_REDIS_REST_URL: "https://eu1-busy-cat-12345.upstash.io /?_token=qs-0123456789",
        UPSTASH_REDIS_REST_TOKEN: "token",
      },
      "UPSTASH_REDIS_REST_URL: expected an http(s) URL, got 'https://eu1-busy-cat-12345.upstash.io /' and a query or fragment (not shown)",
    ],
    [
      {
        UPSTASH_REDIS_REST_URL: "HTTPS://eu1-busy-cat-12345.upstash.io?token=qs-0123456789",
        UPSTASH_REDIS_REST_TOKEN: "token",
      },
      "UPSTASH_REDIS_REST_URL: expected an http(s) URL, got 'HTTPS://eu1-busy-cat-12345.upstash.io' and a query or fragment (not shown)",
    ],
  ];
  for (const [values, message] of cases) {
    await assert.rejects(
      configFromEnv(env(values)),
      new ConfigError(message),
      JSON.stringify(values),
    );
  }
});

Deno.test("configFromEnv() refuses a bad EDGESTREAM_PREFIX on the memory store too, so a typo shows before a switch to Redis", async () => {
  await assert.rejects(
    configFromEnv(env({ EDGESTREAM_PREFIX: "es{1}" })),
    (error) =>
      error instanceof ConfigError && error.message.startsWith("EDGESTREAM_PREFIX: expected 1-64"),
  );
});

/** Every variable src/env.ts reads. */
const VARIABLES = [
  "DENO_DEPLOYMENT_ID",
  "DENO_TIMELINE",
  "EDGESTREAM_ALLOW_MEMORY",
  "EDGESTREAM_ALLOWED_HOSTS",
  "EDGESTREAM_ALLOWED_ORIGINS",
  "EDGESTREAM_CONFIG",
  "EDGESTREAM_DRAIN",
  "EDGESTREAM_ENV",
  "EDGESTREAM_INGEST_SOCKETS_MAX",
  "EDGESTREAM_INGEST_SOCKETS_PER_KEY",
  "EDGESTREAM_KEYS",
  "EDGESTREAM_KEYS_MAX",
  "EDGESTREAM_LOG_LEVEL",
  "EDGESTREAM_MEMORY_DEDUPE_MAX",
  "EDGESTREAM_PREFIX",
  "EDGESTREAM_SHUTDOWN",
  "EDGESTREAM_STREAMS_MAX",
  "EDGESTREAM_SUBSCRIPTIONS_MAX",
  "EDGESTREAM_SUBSCRIPTIONS_PER_KEY",
  "EDGESTREAM_SWEEP_EVERY",
  "EDGESTREAM_WEBHOOK_ALLOW",
  "EDGESTREAM_WEBHOOK_ALLOW_HTTP",
  "EDGESTREAM_WEBHOOK_DISABLE_AFTER",
  "EDGESTREAM_WEBHOOK_SLOW_AFTER",
  "EDGESTREAM_WEBHOOK_SLOW_FOR",
  "EDGESTREAM_WEBHOOKS_MAX",
  "HOST",
  "OTEL_DENO",
  "OTEL_EXPORTER_OTLP_ENDPOINT",
  "OTEL_EXPORTER_OTLP_HEADERS",
  "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
  "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
  "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
  "OTEL_METRIC_EXPORT_INTERVAL",
  "PORT",
  "UPSTASH_REDIS_REST_TOKEN",
  "UPSTASH_REDIS_REST_URL",
];

Deno.test("configFromEnv() reads every variable set empty as not set (PORT= in an env file, an unset ${VAR} of a compose file)", async () => {
  const source = Deno.readTextFileSync(new URL("../src/env.ts", import.meta.url));
  const read = new Set(
    [...source.matchAll(
      /(?:get|readCount|readDuration|readPositiveDuration|readFlag|readList)\((?:env, )?"([A-Z_]+)"/g,
    )]
      .map((match) => match[1]),
  );
  assert.deepEqual([...read].sort(), [...VARIABLES].sort(), "the list names every variable read");
  const summary = (config: Awaited<ReturnType<typeof configFromEnv>>) => ({
    port: config.port,
    hostname: config.hostname,
    logLevel: config.logLevel,
    sweepEveryMs: config.sweepEveryMs,
    shutdownMs: config.shutdownMs,
    configPath: config.configPath,
    store: config.store.kind,
    open: config.keys.open,
    streams: [...config.streams.values()].map((stream) => stream.name),
  });
  const empty = Object.fromEntries(VARIABLES.map((name) => [name, ""]));
  const unset = summary(await configFromEnv(env({})));
  assert.deepEqual(summary(await configFromEnv(env(empty))), unset);
  assert.equal(unset.port, 8000);
});

/**
 * Variables that read a value of only whitespace as not set: lists that skip blank items, HOST and
 * the log level, which trim it, DENO_TIMELINE, only compared with `production`, and
 * DENO_DEPLOYMENT_ID, read only beside OTEL_DENO (whose checks it skips when set at all).
 */
const BLANK_AS_UNSET = [
  "DENO_DEPLOYMENT_ID",
  "DENO_TIMELINE",
  "EDGESTREAM_ALLOWED_HOSTS",
  "EDGESTREAM_ALLOWED_ORIGINS",
  "EDGESTREAM_KEYS",
  "EDGESTREAM_LOG_LEVEL",
  "EDGESTREAM_WEBHOOK_ALLOW",
  "HOST",
  "OTEL_EXPORTER_OTLP_HEADERS",
];

Deno.test("configFromEnv() refuses a value of only whitespace naming the variable (PORT=' '): only the empty text is not set, but for a few variables that trim it", async () => {
  const unset = await configFromEnv(env({}));
  const summary = (config: Awaited<ReturnType<typeof configFromEnv>>) =>
    JSON.stringify([
      config.port,
      config.hostname,
      config.logLevel,
      config.keys.open,
      config.origins,
    ]);
  for (const name of VARIABLES) {
    for (const blank of [" ", "\t", "  "]) {
      const label = `${name}=${JSON.stringify(blank)}`;
      // Deno's OpenTelemetry settings are read only with OTEL_DENO=true.
      const withOtel: Record<string, string> = name.startsWith("OTEL_") && name !== "OTEL_DENO"
        ? { OTEL_DENO: "true" }
        : {};
      if (BLANK_AS_UNSET.includes(name)) {
        assert.equal(
          summary(await configFromEnv(env({ ...withOtel, [name]: blank }))),
          summary(unset),
          label,
        );
        continue;
      }
      const error = await configFromEnv(env({ ...withOtel, [name]: blank })).then(
        () => assert.fail(`${label} was taken`),
        (error) => error,
      );
      assert.ok(error instanceof ConfigError, label);
      // The Redis pair is named together: one of them alone is "set both or neither".
      const named = name.startsWith("UPSTASH_") ? "UPSTASH_REDIS_REST_URL, " : `${name}: `;
      assert.ok(error.message.startsWith(named), `${label}: ${error.message}`);
    }
  }
  await assert.rejects(
    configFromEnv(env({ PORT: " " })),
    new ConfigError("PORT: expected a port number from 0 to 65535, got ' '"),
  );
});

Deno.test("configFromEnv() refuses one Redis variable without the other rather than run on the memory store, as the README says", async () => {
  const expected = new ConfigError(
    "UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN: set both to use Redis, or neither",
  );
  for (
    const values of [
      { UPSTASH_REDIS_REST_URL: "http://127.0.0.1:8079" } as Record<string, string>,
      { UPSTASH_REDIS_REST_TOKEN: "dev-token" },
      { UPSTASH_REDIS_REST_URL: "http://127.0.0.1:8079", UPSTASH_REDIS_REST_TOKEN: "" },
    ]
  ) {
    await assert.rejects(configFromEnv(env(values)), expected, JSON.stringify(values));
  }
  const readme = (await Deno.readTextFile(new URL("../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  assert.ok(
    readme.includes(
      `One without the other (or set empty) stops it at startup with one line, \`edgestream: ${expected.message}\``,
    ),
    "README's Running with Redis says one variable alone stops the server",
  );
  assert.ok(
    !readme.includes("Set both variables and edgestream uses Redis; otherwise the embedded"),
  );
});

Deno.test("configFromEnv() refuses an UPSTASH_REDIS_REST_URL with credentials, which fetch sends beside the token, without printing them", async () => {
  for (
    const url of [
      "http://proxy-user:pw-0123456789@127.0.0.1:8079",
      "https://default:pw-0123456789@eu1-busy-cat-12345.upstash.io/",
      "https://pw-0123456789@eu1-busy-cat-12345.upstash.io",
      // A query may hold the token too (`_token=`): not shown either.
      "https://default:pw-0123456789@eu1-busy-cat-12345.upstash.io/?_token=tok-0123456789",
    ]
  ) {
    const host = new URL(url).host;
    await assert.rejects(
      configFromEnv(env({ UPSTASH_REDIS_REST_URL: url, UPSTASH_REDIS_REST_TOKEN: "token" })),
      (error) =>
        error instanceof ConfigError &&
        error.message.startsWith(
          `UPSTASH_REDIS_REST_URL: holds credentials ('${
            url.slice(0, url.indexOf("//") + 2)
          }[REDACTED]@${host}`,
        ) &&
        error.message.endsWith(
          "give the URL without them and the token in UPSTASH_REDIS_REST_TOKEN",
        ) &&
        !error.message.includes("pw-0123456789") && !error.message.includes("tok-0123456789"),
      url,
    );
  }
});

Deno.test("configFromEnv() warns of an EDGESTREAM_ variable that is no setting (a typo), naming the nearest", async () => {
  const values: Record<string, string> = {
    EDGESTREAM_SWEEP_EVRY: "1s",
    edgestream_keys: "admin:aaaaaaaaaaaaaaaaaaaa",
    EDGESTREAM_SOMETHING_ELSE_ENTIRELY: "x",
    // Read by the tests (README, Tests): no warning.
    EDGESTREAM_CHROMIUM: "/usr/bin/chromium",
    EDGESTREAM_SHUTDOWN: "2s",
    OTHER_VARIABLE: "y",
  };
  const config = await configFromEnv({ get: (name) => values[name], toObject: () => values });
  try {
    assert.equal(config.sweepEveryMs, 5_000, "the typo leaves the default");
    assert.deepEqual(
      config.notices.filter((notice) => notice.text.includes("is not a setting")),
      [
        {
          level: "warning",
          text: "EDGESTREAM_SOMETHING_ELSE_ENTIRELY is not a setting edgestream reads: ignored",
        },
        {
          level: "warning",
          text:
            "EDGESTREAM_SWEEP_EVRY is not a setting edgestream reads (did you mean EDGESTREAM_SWEEP_EVERY?): ignored",
        },
        {
          level: "warning",
          text:
            "edgestream_keys is not a setting edgestream reads (did you mean EDGESTREAM_KEYS?): ignored",
        },
      ],
    );
  } finally {
    await config.webhooks.close();
  }
});

Deno.test("configFromEnv() warns of an UPSTASH_REDIS_ variable that is no setting unless both Redis settings are set, as the README quotes it", async () => {
  const typo = (name: string, memory: boolean) =>
    `${name} is not a setting edgestream reads (did you mean ${
      name.endsWith("URL") ? "UPSTASH_REDIS_REST_URL" : "UPSTASH_REDIS_REST_TOKEN"
    }?): ignored${
      memory
        ? ", and without UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN the store is memory"
        : ""
    }`;
  const readme = (await Deno.readTextFile(new URL("../README.md", import.meta.url)))
    .replace(/\s+/g, " ");
  assert.ok(readme.includes(`\`${typo("UPSTASH_REDIS_URL", true)}\``), "README quotes the warning");
  const read = (values: Record<string, string>) =>
    configFromEnv({ get: (name) => values[name], toObject: () => values });
  // Written otherwise: the memory store, said so (it was only the store's info line).
  const written = { UPSTASH_REDIS_URL: "https://eu1-x.upstash.io", UPSTASH_REDIS_TOKEN: "tok" };
  const memory = await read(written);
  try {
    assert.equal(memory.store.kind, "memory");
    assert.deepEqual(
      memory.notices.filter((notice) => notice.text.startsWith("UPSTASH_REDIS_")),
      [
        { level: "warning", text: typo("UPSTASH_REDIS_TOKEN", true) },
        { level: "warning", text: typo("UPSTASH_REDIS_URL", true) },
      ],
    );
  } finally {
    await memory.webhooks.close();
  }
  // One of the settings set: startup stops ("set both"), naming the one written otherwise.
  const half = await read({
    UPSTASH_REDIS_REST_URL: "https://eu1-x.upstash.io",
    UPSTASH_REDIS_TOKEN: "tok",
  }).then(() => assert.fail("started"), (error) => error);
  assert.ok(half instanceof ConfigError, String(half));
  assert.equal(
    half.message,
    `UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN: set both to use Redis, or neither (${
      typo("UPSTASH_REDIS_TOKEN", false)
    })`,
  );
  // Beside both settings, another Upstash variable (its read-only token) is no warning.
  const redis = await read({
    UPSTASH_REDIS_REST_URL: "http://127.0.0.1:1",
    UPSTASH_REDIS_REST_TOKEN: "tok",
    UPSTASH_REDIS_REST_READONLY_TOKEN: "ro",
  });
  try {
    assert.equal(redis.store.kind, "redis");
    assert.deepEqual(redis.notices.filter((notice) => notice.text.includes("not a setting")), []);
  } finally {
    await redis.webhooks.close();
  }
});

Deno.test("a setting that stops startup names the EDGESTREAM_ typos too (README quotes the line)", async () => {
  const values: Record<string, string> = {
    EDGESTREAM_ENV: "production",
    EDGESTREAM_KEYS: "admin:aaaaaaaaaaaaaaaaaaaa",
    EDGESTREAM_ALOW_MEMORY: "true",
  };
  const error = await configFromEnv({ get: (name) => values[name], toObject: () => values })
    .then(() => assert.fail("started"), (error) => error);
  assert.ok(error instanceof ConfigError, String(error));
  assert.match(
    error.message,
    /^UPSTASH_REDIS_REST_URL, UPSTASH_REDIS_REST_TOKEN: .* needs the Redis store; set both \(or EDGESTREAM_ALLOW_MEMORY=true for a one-instance demo\) \(EDGESTREAM_ALOW_MEMORY is not a setting edgestream reads \(did you mean EDGESTREAM_ALLOW_MEMORY\?\): ignored\)$/,
  );
  const readme = (await Deno.readTextFile(new URL("../README.md", import.meta.url)))
    .replaceAll("\n", " ");
  const quoted = error.message.replace(/: .* needs the Redis store/, ": … needs the Redis store");
  assert.ok(readme.includes(`\`${quoted}\``), quoted);
  // Without a typo, the line is as before.
  delete values.EDGESTREAM_ALOW_MEMORY;
  await assert.rejects(
    configFromEnv({ get: (name) => values[name], toObject: () => values }),
    (error) => error instanceof ConfigError && !error.message.includes("not a setting"),
  );
});

Deno.test("configFromEnv() starts when the environment cannot be listed (--allow-env naming some variables), saying typos are not looked for", async () => {
  // What Deno.env.toObject() throws under `--allow-env=NAME,…`, checked in a process so run.
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  try {
    await Deno.writeTextFile(
      script,
      "try { Deno.env.toObject(); console.log('listed'); } catch (error) { console.log(error instanceof Deno.errors.NotCapable ? 'NotCapable' : String(error)); }",
    );
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--cached-only", "--allow-env=PORT,EDGESTREAM_KEYS", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(new TextDecoder().decode(output.stdout).trim(), "NotCapable");
  } finally {
    await Deno.remove(script);
  }
  const values: Record<string, string> = { EDGESTREAM_SWEEP_EVRY: "1s" };
  const config = await configFromEnv({
    get: (name) => values[name],
    toObject: () => {
      throw new Deno.errors.NotCapable("Requires env access, run again with the --allow-env flag");
    },
  });
  try {
    assert.equal(config.sweepEveryMs, 5_000);
    assert.deepEqual(
      config.notices.filter((notice) => /not a setting|cannot be listed/.test(notice.text)),
      [{
        level: "info",
        text:
          "The environment cannot be listed (--allow-env names some variables only): unknown EDGESTREAM_ variables (typos) are not checked",
      }],
    );
  } finally {
    await config.webhooks.close();
  }
});

Deno.test("SETTING_NAMES holds every EDGESTREAM_ variable src/env.ts reads, so none read is warned of as no setting", () => {
  // VARIABLES is what src/env.ts reads (the test above checks it against the source).
  assert.deepEqual(
    VARIABLES.filter((name) => name.startsWith("EDGESTREAM_")).sort(),
    SETTING_NAMES.filter((name) => name !== "EDGESTREAM_CHROMIUM").sort(),
  );
});

Deno.test("the README's settings table states every numeric bound configFromEnv() refuses past", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf("## Configuration");
  const table = readme.slice(start, readme.indexOf("\n\n", readme.indexOf("| variable", start)));
  const rows = [...table.matchAll(/^\| ((?:`[A-Z_]+`(?:, )?)+) +\| (.*?) +\|/gm)]
    .flatMap((match) => [...match[1].matchAll(/`([A-Z_]+)`/g)].map((name) => [name[1], match[2]]));
  assert.ok(rows.length > 20, "the table was read");
  /** The refusal of `value` for `name` alone, or undefined when it is taken. */
  async function refusal(name: string, value: string): Promise<string | undefined> {
    try {
      const config = await configFromEnv(env({ [name]: value }));
      config.streams.stop();
      await config.webhooks.close();
      return undefined;
    } catch (error) {
      assert.ok(error instanceof ConfigError, String(error));
      return error.message;
    }
  }
  const bounded: string[] = [];
  for (const [name, meaning] of rows) {
    // A whole-number setting refuses a number past its bound, the message naming the bound.
    for (const probe of ["-1", "0", "65536"]) {
      const message = await refusal(name, probe);
      const bound = message?.match(
        /expected a (?:whole|port) number (of at least \d+|from \d+ to \d+)/,
      )
        ?.[1];
      if (bound === undefined) continue;
      bounded.push(name);
      assert.ok(
        meaning.includes(`a whole number ${bound}`),
        `README's row of ${name} says "a whole number ${bound}": ${meaning}`,
      );
      // The bound itself is taken.
      const least = bound.match(/^of at least (\d+)$/)?.[1];
      if (least !== undefined) {
        assert.equal(await refusal(name, least), undefined, `${name}=${least}`);
        assert.match((await refusal(name, String(Number(least) - 1)))!, new RegExp(`^${name}: `));
      } else {
        const [low, high] = bound.match(/\d+/g)!;
        assert.equal(await refusal(name, low), undefined, `${name}=${low}`);
        assert.equal(await refusal(name, high), undefined, `${name}=${high}`);
      }
      break;
    }
  }
  assert.deepEqual([...new Set(bounded)].sort(), [
    "EDGESTREAM_INGEST_SOCKETS_MAX",
    "EDGESTREAM_INGEST_SOCKETS_PER_KEY",
    "EDGESTREAM_KEYS_MAX",
    "EDGESTREAM_MEMORY_DEDUPE_MAX",
    "EDGESTREAM_STREAMS_MAX",
    "EDGESTREAM_SUBSCRIPTIONS_MAX",
    "EDGESTREAM_SUBSCRIPTIONS_PER_KEY",
    "EDGESTREAM_WEBHOOKS_MAX",
    "PORT",
  ]);
});

Deno.test("every EDGESTREAM_ setting of the README's table is one configFromEnv() knows, and no other", async () => {
  const readme = await Deno.readTextFile(new URL("../README.md", import.meta.url));
  const start = readme.indexOf("## Configuration");
  const table = readme.slice(start, readme.indexOf("\n\n", readme.indexOf("| variable", start)));
  const documented = [...table.matchAll(/^\| `(EDGESTREAM_[A-Z_]+)`/gm)].map((match) => match[1]);
  assert.deepEqual(
    [...documented].sort(),
    SETTING_NAMES.filter((name) => name !== "EDGESTREAM_CHROMIUM").sort(),
  );
  assert.ok(
    readme.replaceAll("\n", " ").includes(
      "`EDGESTREAM_SWEEP_EVRY is not a setting edgestream reads (did you mean EDGESTREAM_SWEEP_EVERY?): ignored`",
    ),
    "README quotes the warning as the test above gets it",
  );
  // Each read by a set value without a warning of its own.
  const values = Object.fromEntries(SETTING_NAMES.map((name) => [name, ""]));
  const config = await configFromEnv({ get: (name) => values[name], toObject: () => values });
  try {
    assert.deepEqual(
      config.notices.filter((notice) => notice.text.includes("is not a setting")),
      [],
    );
  } finally {
    await config.webhooks.close();
  }
});
