/**
 * The Redis store against real Redis behind the Upstash bridge: where its keys live, how many
 * round trips and billed commands an ingest costs, and what happens when Redis goes away, hangs,
 * or a reply is lost.
 */
import assert from "node:assert/strict";
import { Redis } from "@upstash/redis";
import FakeTimers from "@sinonjs/fake-timers";
import { createApp } from "../../../src/app.ts";
import { compileConfig, type CompiledStream } from "../../../src/config/mod.ts";
import { KeyRing } from "../../../src/http/auth.ts";
import { ingestItems } from "../../../src/ingest/mod.ts";
import { listWindows } from "../../../src/query/mod.ts";
import { storeFromEnv } from "../../../src/env.ts";
import { REDIS_CALL_TIMEOUT_MS } from "../../../src/store/mod.ts";
import {
  APPLY_FIELDS,
  APPLY_SCRIPT,
  applyFields,
  DEDUPE_EARLIER_TTLS,
} from "../../../src/store/redis/_scripts.ts";
import { MemoryStore } from "../../../src/store/memory/store.ts";
import { startRedisServer } from "../../../tools/redis_server.ts";
import { type RedisClient, RedisStore } from "../../../src/store/redis/store.ts";
import { type Store, type StoreBatch, StoreUnavailableError } from "../../../src/store/types.ts";
import { type RedisFixture, redisTest, withDirect } from "../../_redis.ts";
import { createdThroughApi, recordingApplies } from "./_apply_headers.ts";
import {
  billedCommands,
  commandNames,
  type DroppingProxy,
  startDroppingProxy,
  startUpstashProxy,
  type UpstashProxy,
} from "../../_upstash_proxy.ts";

const T0 = Date.parse("2026-01-01T00:00:00Z");
const NOW = T0 + 300_000;

/** Every aggregate, every window kind, an overflowing group cap and dedupe. */
const CONFIG = {
  streams: {
    s: {
      time: { field: "t", lateness: "10s" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
        sum: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { sum: "v" } },
        users: { window: { tumbling: "1m" }, aggregate: { distinct: "u" } },
        low: { window: { hopping: "2m", every: "1m" }, aggregate: { min: "v" } },
        high: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { max: "v" }, maxGroups: 1 },
        mean: { window: { sliding: "3m", precision: "1m" }, aggregate: { avg: "v" } },
      },
    },
    other: {
      time: { field: "t" },
      dedupe: { field: "id" },
      counters: {
        count: { window: { tumbling: "1m" }, aggregate: "count" },
      },
    },
    /** No dedupe ids: only an Idempotency-Key makes a retry safe. */
    plain: {
      time: { field: "t", lateness: "1h" },
      counters: { count: { window: { tumbling: "1m" }, aggregate: "count" } },
    },
    /** Three counters, as in the ingest benchmark. */
    three: {
      time: { field: "t", lateness: "1h" },
      dedupe: { field: "id", ttl: "1h" },
      counters: {
        count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
        sum: { window: { hopping: "1h", every: "5m" }, groupBy: ["g"], aggregate: { sum: "v" } },
        users: { window: { sliding: "10m", precision: "1m" }, aggregate: { distinct: "u" } },
      },
    },
  },
};

const STREAMS = compileConfig(CONFIG);

function stream(name: string): CompiledStream {
  return STREAMS.get(name)!;
}

function items(events: object[]) {
  return events.map((value) => ({ ok: true as const, value }));
}

/** `count` events with ids `<prefix>0…`, spread over the five minutes before NOW. */
function events(prefix: string, count: number): object[] {
  return Array.from({ length: count }, (_, i) => ({
    id: `${prefix}${i}`,
    t: T0 + ((i * 7_919) % 300_000),
    g: ["de", "fr", "{x}"][i % 3],
    v: (i % 40) / 4,
    u: `user${i % 50}`,
  }));
}

function upstash(
  url: string,
  token: string,
  options: { enableAutoPipelining?: boolean; signal?: () => AbortSignal } = {},
): Redis {
  // The client settings of storeFromEnv: retry once, quickly.
  return new Redis({
    url,
    token,
    enableTelemetry: false,
    retry: { retries: 1, backoff: () => 50 },
    ...options,
  });
}

function redisStore(fixture: RedisFixture, options: { prefix?: string } = {}): RedisStore {
  return new RedisStore(upstash(fixture.restUrl, fixture.restToken), {
    now: () => NOW,
    ...options,
  });
}

async function appOver(store: Store) {
  return createApp({ streams: STREAMS, store, keys: await KeyRing.parse(""), now: () => NOW });
}

type App = Awaited<ReturnType<typeof appOver>>;

async function postEvents(app: App, name: string, body: object[]): Promise<Response> {
  return await app.request(`/v1/streams/${name}/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

async function getJson(app: App, path: string) {
  const res = await app.request(path);
  return { status: res.status, body: await res.json() };
}

/** Every key in Redis with its PTTL (ms; -1 = no expiry). */
async function keysWithTtl(url: string): Promise<Map<string, number>> {
  return await withDirect(url, async (send) => {
    const keys = (await send("KEYS", "*")) as string[];
    const out = new Map<string, number>();
    for (const key of keys) out.set(key, Number(await send("PTTL", key)));
    return out;
  });
}

/** The Redis Cluster hash tag of a key: what lies between the first `{` and the next `}`. */
function hashTag(key: string): string | null {
  const open = key.indexOf("{");
  if (open < 0) return null;
  const close = key.indexOf("}", open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : null;
}

/** The batch the pipeline hands the store for `list`. */
async function batchOf(name: string, list: object[]): Promise<StoreBatch> {
  let captured: StoreBatch | undefined;
  const capture = {
    applyBatch(batch: StoreBatch) {
      captured = batch;
      return Promise.resolve({
        outcomes: batch.events.map(() => "applied"),
        requests: [{ status: "applied", duplicates: 0, late: 0 }],
        watermark: null,
        demand: [],
      });
    },
  } as unknown as Store;
  await ingestItems(stream(name), items(list), { store: capture, nowMs: NOW });
  return captured!;
}

/** An alert firing of the `s` stream's count counter. */
const BUSY_FIRING = {
  alert: "busy",
  counter: "count",
  start: T0,
  end: T0 + 60_000,
  group: '["de"]',
  value: 3,
  ttlMs: 3_600_000,
};

/** Puts data in every kind of key the store writes: panes, HLLs, dedupe ids, open windows. */
async function fillStore(store: Store): Promise<void> {
  await ingestItems(stream("s"), items(events("a", 40)), { store: store, nowMs: NOW });
  await ingestItems(stream("s"), items([{ id: "{evil}", t: T0 + 1_000, g: "}{", v: 1 }]), {
    store: store,
    nowMs: NOW,
  });
  await ingestItems(stream("other"), items(events("o", 5)), { store: store, nowMs: NOW });
  // The result log (processed and late events, closed windows) and alert markers.
  const logged = await batchOf("s", [{ id: "logged", t: T0 + 2_000, g: "de", v: 2 }]);
  await store.applyBatch({
    ...logged,
    log: { processed: true, late: true },
    events: logged.events.map((event) => ({ ...event, payload: '{"note":"logged"}' })),
  });
  await store.fireAlerts("s", [BUSY_FIRING]);
  // Advance the watermark so some windows close (and the open set shrinks).
  await ingestItems(stream("s"), items([{ id: "late-mark", t: NOW, g: "de" }]), {
    store: store,
    nowMs: NOW,
  });
  await store.closeWindows("s", stream("s").counterMetas, { latenessMs: 10_000 });
}

redisTest(
  "RedisStore keeps every key under the stream's hash-tagged prefix, each with a TTL",
  async (fixture) => {
    await fillStore(redisStore(fixture));
    const keys = await keysWithTtl(fixture.redisUrl);
    const kinds = new Set<string>();
    for (const [key, ttl] of keys) {
      const tag = hashTag(key);
      assert.ok(tag === "s" || tag === "other", `${key}: hash tag is ${tag}`);
      assert.ok(key.startsWith(`es:{${tag}}:`), `${key}: outside the es:{stream}: prefix`);
      assert.ok(ttl > 0, `${key}: PTTL is ${ttl}, every key must expire`);
      kinds.add(key.slice(`es:{${tag}}:`.length).split(":")[0]);
    }
    for (const kind of ["stats", "ids", "p", "h", "panes", "open", "log", "alert"]) {
      assert.ok(kinds.has(kind), `no '${kind}' key among ${[...keys.keys()].join(", ")}`);
    }
  },
);

redisTest(
  "RedisStore honours a custom prefix, and storeFromEnv() takes it from EDGESTREAM_PREFIX",
  async (fixture) => {
    await fillStore(redisStore(fixture, { prefix: "tenant-a" }));
    const env = new Map([
      ["UPSTASH_REDIS_REST_URL", fixture.restUrl],
      ["UPSTASH_REDIS_REST_TOKEN", fixture.restToken],
      ["EDGESTREAM_PREFIX", "tenant-b"],
    ]);
    const fromEnv = storeFromEnv(env);
    assert.equal(fromEnv.kind, "redis");
    await ingestItems(stream("other"), items(events("b", 3)), { store: fromEnv, nowMs: NOW });

    const keys = [...(await keysWithTtl(fixture.redisUrl)).keys()];
    assert.ok(keys.length > 0);
    const outside = keys.filter((key) =>
      !key.startsWith("tenant-a:{s}:") && !key.startsWith("tenant-a:{other}:") &&
      !key.startsWith("tenant-b:{other}:")
    );
    assert.deepEqual(outside, []);
    assert.ok(keys.some((key) => key.startsWith("tenant-b:{other}:ids:")));
    assert.equal((await fromEnv.stats("other", [])).applied, 3);
    assert.equal((await fromEnv.stats("s", [])).applied, 0, "prefixes must not share state");
  },
);

redisTest(
  "storeFromEnv()'s Redis store serves an app whose stream definitions are kept elsewhere (it does not look for their records in Redis, as storesFromEnv's does)",
  async (fixture) => {
    const store = storeFromEnv(
      new Map([
        ["UPSTASH_REDIS_REST_URL", fixture.restUrl],
        ["UPSTASH_REDIS_REST_TOKEN", fixture.restToken],
      ]),
    );
    // createApp keeps the config's streams in memory, recorded there and not in Redis.
    const app = createApp({
      streams: STREAMS,
      store,
      keys: await KeyRing.parse(""),
      now: () => NOW,
    });
    const res = await postEvents(app, "three", events("e", 2));
    assert.equal(res.status, 202, await res.clone().text());
    assert.equal((await res.json()).accepted, 2);
  },
);

/** Posts `size` new events to stream `three` and returns the requests the store made. */
async function ingestCounted(app: App, proxy: UpstashProxy, prefix: string, size: number) {
  const res = await postEvents(app, "three", events(prefix, size));
  const reply = await res.json();
  assert.equal(res.status, 202, JSON.stringify(reply));
  assert.deepEqual([reply.accepted, reply.duplicates, reply.late], [size, 0, 0]);
  return proxy.take().map((request) => ({
    path: request.path,
    names: commandNames(request),
    billed: billedCommands(request),
  }));
}

for (const enableAutoPipelining of [true, false]) {
  const mode = enableAutoPipelining ? "auto-pipelining" : "no auto-pipelining";
  redisTest(
    `an ingest of 1, 100 or 1000 events with 3 counters is one request with one EVALSHA (${mode})`,
    async (fixture) => {
      const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
      try {
        const store = new RedisStore(
          upstash(proxy.url, fixture.restToken, { enableAutoPipelining }),
          { now: () => NOW },
        );
        const app = await appOver(store);
        const endpoint = enableAutoPipelining ? "/pipeline" : "/";
        // Redis does not know the script yet: EVALSHA fails with NOSCRIPT, EVAL loads it.
        assert.deepEqual(await ingestCounted(app, proxy, "cold", 1), [
          { path: endpoint, names: ["evalsha"], billed: 1 },
          { path: endpoint, names: ["eval"], billed: 1 },
        ]);
        for (const size of [1, 100, 1000]) {
          assert.deepEqual(
            await ingestCounted(app, proxy, `size${size}-`, size),
            [{ path: endpoint, names: ["evalsha"], billed: 1 }],
            `batch of ${size}`,
          );
        }
        assert.equal((await store.stats("three", [])).applied, 1102);
      } finally {
        await proxy.close();
      }
    },
  );
}

redisTest(
  "after SCRIPT FLUSH an ingest costs EVALSHA + EVAL once, then one EVALSHA again",
  async (fixture) => {
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    try {
      const store = new RedisStore(upstash(proxy.url, fixture.restToken), { now: () => NOW });
      const names = () => proxy.take().map(commandNames);
      await ingestItems(stream("three"), items(events("a", 10)), { store: store, nowMs: NOW });
      assert.deepEqual(names(), [["evalsha"], ["eval"]]);
      await ingestItems(stream("three"), items(events("b", 10)), { store: store, nowMs: NOW });
      assert.deepEqual(names(), [["evalsha"]]);

      await withDirect(fixture.redisUrl, (send) => send("SCRIPT", "FLUSH"));
      const reply = await ingestItems(stream("three"), items(events("c", 10)), {
        store: store,
        nowMs: NOW,
      });
      assert.deepEqual([reply.accepted, reply.duplicates, reply.late], [10, 0, 0]);
      assert.deepEqual(names(), [["evalsha"], ["eval"]]);
      await ingestItems(stream("three"), items(events("d", 10)), { store: store, nowMs: NOW });
      assert.deepEqual(names(), [["evalsha"]]);
      assert.equal((await store.stats("three", [])).applied, 40);
    } finally {
      await proxy.close();
    }
  },
);

/** Stops the fixture's redis-server with SHUTDOWN SAVE and returns the directory of its dump. */
async function shutdownRedis(fixture: RedisFixture): Promise<string> {
  const dir = await withDirect(fixture.redisUrl, async (send) => {
    const [, value] = (await send("CONFIG", "GET", "dir")) as string[];
    return value;
  });
  const connection = await Deno.connect({ hostname: "127.0.0.1", port: fixture.redisPort });
  try {
    await connection.write(new TextEncoder().encode("SHUTDOWN SAVE\r\n"));
    // Redis closes the connection once it has saved and is exiting.
    const buffer = new Uint8Array(256);
    while ((await connection.read(buffer)) !== null) { /* wait for EOF */ }
  } finally {
    connection.close();
  }
  // Wait until the port is free.
  for (let attempt = 0; attempt < 200; attempt++) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port: fixture.redisPort })).close();
    } catch {
      return dir;
    }
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  throw new Error(`redis-server on port ${fixture.redisPort} did not stop`);
}

/** Starts redis-server again on the fixture's port, loading the dump `shutdownRedis` saved. */
async function restartRedis(fixture: RedisFixture, dumpDir: string) {
  const dir = await Deno.makeTempDir({ prefix: "edgestream-redis-restart-" });
  await Deno.copyFile(`${dumpDir}/dump.rdb`, `${dir}/dump.rdb`);
  const server = await startRedisServer({ port: fixture.redisPort, extraArgs: ["--dir", dir] });
  return {
    async stop() {
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

redisTest(
  "a Redis outage behind the bridge answers 503 store_unavailable with Retry-After",
  async (fixture) => {
    const store = redisStore(fixture);
    const app = await appOver(store);
    assert.equal((await postEvents(app, "three", events("a", 3))).status, 202);
    await shutdownRedis(fixture);

    const res = await postEvents(app, "three", events("b", 3));
    const body = await res.json();
    assert.equal(res.status, 503, JSON.stringify(body));
    assert.equal(res.headers.get("Retry-After"), "1");
    assert.equal(body.error.code, "store_unavailable");
    assert.equal(typeof body.error.message, "string");

    const ready = await getJson(app, "/readyz");
    assert.equal(ready.status, 503);
    assert.equal(ready.body.status, "unavailable");

    const read = await getJson(app, "/v1/streams/three/counters/count");
    assert.equal(read.status, 503, JSON.stringify(read.body));
    assert.equal(read.body.error.code, "store_unavailable");
  },
);

redisTest(
  "a key of another type where a pane belongs answers 500 internal_error and keeps nothing of the request",
  async (fixture) => {
    const store = redisStore(fixture);
    const app = await appOver(store);
    assert.equal((await postEvents(app, "three", events("a", 3))).status, 202);
    const panes = await withDirect(
      fixture.redisUrl,
      (send) => send("KEYS", "*:p:sum:*"),
    ) as string[];
    await withDirect(fixture.redisUrl, async (send) => {
      for (const key of panes) await send("SET", key, "x");
    });
    const res = await postEvents(app, "three", events("b", 3));
    const body = await res.json();
    assert.equal(res.status, 500, JSON.stringify(body));
    assert.equal(body.error.code, "internal_error");
    assert.equal(body.error.message, "Internal server error", "the key is not shown to the client");
    await withDirect(fixture.redisUrl, (send) => send("DEL", ...panes));
    const again = await postEvents(app, "three", events("b", 3));
    assert.equal(again.status, 202);
    assert.equal((await again.json()).duplicates, 0, "no dedupe id was kept");
  },
);

redisTest(
  "GET /v1/streams reads each stream's stats with one billed Redis command",
  async (fixture) => {
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    try {
      const store = new RedisStore(upstash(proxy.url, fixture.restToken), { now: () => NOW });
      const app = await appOver(store);
      proxy.take();
      const listed = await getJson(app, "/v1/streams");
      assert.equal(listed.status, 200);
      const commands = proxy.take().flatMap(commandNames);
      assert.equal(listed.body.streams.length, STREAMS.size);
      assert.deepEqual(commands, Array(STREAMS.size).fill("hgetall"));
    } finally {
      await proxy.close();
    }
  },
);

/** A window counter and a session counter, for what a read of them costs. */
const READ_STREAMS = compileConfig({
  streams: {
    reads: {
      time: { field: "t", lateness: "10s" },
      counters: {
        count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
        visits: { window: { session: "1m" }, groupBy: ["g"], aggregate: "count" },
      },
    },
  },
});

redisTest(
  "a read of the current window (with top or not), of top windows or of sessions takes its stats in its one read script: one EVALSHA, the windows' listing one more for their panes",
  async (fixture) => {
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    try {
      // Half a minute into a window: the current one holds the events.
      const now = () => NOW + 30_000;
      const store = new RedisStore(upstash(proxy.url, fixture.restToken), { now });
      const app = createApp({ streams: READ_STREAMS, store, keys: await KeyRing.parse(""), now });
      const sent = await app.request("/v1/streams/reads/events", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(
          ["a", "b", "c", "a"].map((g, i) => ({ t: NOW + i * 1_000, g })),
        ),
      });
      assert.equal(sent.status, 202, await sent.text());
      const cost = async (path: string) => {
        // Once to load the scripts (EVAL after NOSCRIPT), then counted.
        assert.equal((await app.request(path)).status, 200, path);
        proxy.take();
        const res = await app.request(path);
        const body = await res.json();
        assert.equal(res.status, 200, JSON.stringify(body));
        assert.ok(body.windows.length > 0, path);
        return proxy.take().flatMap(commandNames);
      };
      const counters = "/v1/streams/reads/counters";
      assert.deepEqual(
        {
          current: await cost(`${counters}/count/current`),
          currentTop: await cost(`${counters}/count/current?top=2`),
          currentSessions: await cost(`${counters}/visits/current`),
          sessions: await cost(`${counters}/visits`),
          topWindows: await cost(`${counters}/count?top=2`),
          list: await cost(`${counters}/count`),
        },
        {
          current: ["evalsha"],
          currentTop: ["evalsha"],
          currentSessions: ["evalsha"],
          sessions: ["evalsha"],
          topWindows: ["evalsha", "evalsha"],
          list: ["evalsha", "evalsha"],
        },
      );
    } finally {
      await proxy.close();
    }
  },
);

/** The pid of the redis-server behind a fixture, from INFO. */
async function redisPid(fixture: RedisFixture): Promise<number> {
  const info = String(await withDirect(fixture.redisUrl, (send) => send("INFO", "server")));
  return Number(/process_id:(\d+)/.exec(info)![1]);
}

redisTest(
  "a batch that timed out while Redis was paused is applied once when resent with its Idempotency-Key",
  async (fixture) => {
    const store = new RedisStore(upstash(fixture.restUrl, fixture.restToken), {
      now: () => NOW,
      timeoutMs: 1_000,
    });
    const app = await appOver(store);
    const body = JSON.stringify([{ t: T0 + 1_000 }, { t: T0 + 2_000 }]);
    const send = () =>
      app.request("/v1/streams/plain/events", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Idempotency-Key": "batch-0001" },
        body,
      });
    const pid = await redisPid(fixture);
    Deno.kill(pid, "SIGSTOP");
    let timedOut: Response;
    try {
      timedOut = await send();
    } finally {
      // Resumed: Redis now runs the script the client gave up on.
      Deno.kill(pid, "SIGCONT");
    }
    const error = await timedOut.json();
    assert.equal(timedOut.status, 503, JSON.stringify(error));
    assert.equal(error.error.code, "store_unavailable");
    assert.deepEqual(error.error.details, { outcome: "unknown" });
    assert.match(
      error.error.message,
      /may have been applied: resend with the same Idempotency-Key/,
    );

    const resent = await send();
    assert.equal(resent.status, 202);
    assert.equal(resent.headers.get("Idempotent-Replayed"), "true");
    assert.deepEqual(await resent.json(), {
      accepted: 2,
      duplicates: 0,
      late: 0,
      filtered: 0,
      rejected: [],
      replayed: true,
    });
    const stats = await store.stats("plain", stream("plain").counterMetas);
    assert.deepEqual([stats.accepted, stats.applied], [2, 2]);
  },
);

/** Lua that keeps Redis busy for `ms` milliseconds. */
function busyScript(ms: number): string {
  return `local t = redis.call("TIME")
local started = t[1] * 1000000 + t[2]
while true do
  local n = redis.call("TIME")
  if n[1] * 1000000 + n[2] - started > ${ms * 1000} then return 1 end
end`;
}

redisTest(
  "a Redis busy running a long script answers 503 store_unavailable, and ingest works after it",
  async (fixture) => {
    const store = redisStore(fixture);
    const app = await appOver(store);
    assert.equal((await postEvents(app, "three", events("a", 3))).status, 202);
    await withDirect(fixture.redisUrl, async (send) => {
      await send("CONFIG", "SET", "busy-reply-threshold", "100");
      // Another client's long script: Redis answers everyone else BUSY until it ends.
      const busy = send("EVAL", busyScript(1_500), "0");
      await new Promise((resolve) => setTimeout(resolve, 400));
      try {
        const res = await postEvents(app, "three", events("b", 3));
        const body = await res.json();
        assert.equal(res.status, 503, JSON.stringify(body));
        assert.equal(res.headers.get("Retry-After"), "1");
        assert.equal(body.error.code, "store_unavailable");
      } finally {
        await busy;
      }
    });
    const res = await postEvents(app, "three", events("b", 3));
    const reply = await res.json();
    assert.equal(res.status, 202, JSON.stringify(reply));
    assert.deepEqual([reply.accepted, reply.duplicates], [3, 0]);
  },
);

redisTest(
  "after a Redis restart on the same port the same app ingests again, and the re-sent batch counts once",
  async (fixture) => {
    const store = redisStore(fixture);
    const app = await appOver(store);
    const first = events("a", 5);
    assert.equal((await postEvents(app, "three", first)).status, 202);

    const dumpDir = await shutdownRedis(fixture);
    // The batch overlaps the first one by one id.
    const retried = [...events("b", 5), first[0]];
    const failed = await postEvents(app, "three", retried);
    assert.equal(failed.status, 503);
    assert.equal((await failed.json()).error.code, "store_unavailable");
    assert.equal((await getJson(app, "/readyz")).status, 503);

    const restarted = await restartRedis(fixture, dumpDir);
    try {
      assert.equal((await getJson(app, "/readyz")).status, 200);
      // Nothing of the failed request was applied.
      const before = await store.stats("three", []);
      assert.deepEqual([before.accepted, before.applied], [5, 5]);

      const res = await postEvents(app, "three", retried);
      const reply = await res.json();
      assert.equal(res.status, 202, JSON.stringify(reply));
      assert.deepEqual([reply.accepted, reply.duplicates, reply.late], [6, 1, 0]);
      const after = await store.stats("three", []);
      assert.deepEqual([after.applied, after.duplicates], [10, 1]);
      const counts = await getJson(app, "/v1/streams/three/counters/count?limit=1000");
      const total = counts.body.windows.reduce(
        (sum: number, row: { value: number }) => sum + row.value,
        0,
      );
      assert.equal(total, 10);
    } finally {
      await restarted.stop();
    }
  },
);

/** Fails instead of hanging when `promise` takes longer than `ms`. */
async function beforeDeadline<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`No answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, deadline]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("a bridge that never answers makes ingest and /readyz answer 503 within timeoutMs", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const connections: Deno.Conn[] = [];
  const accepting = (async () => {
    for await (const connection of listener) connections.push(connection);
  })();
  const abort = new AbortController();
  const pending = new Set<Promise<unknown>>();
  const client = upstash(`http://127.0.0.1:${listener.addr.port}`, "token", {
    signal: () => abort.signal,
  });
  // Track the client's calls: they outlive the store's timeout and must end before the test.
  const tracked = new Proxy(client, {
    get(target, property) {
      const value = Reflect.get(target, property);
      if (typeof value !== "function") return value;
      return (...args: unknown[]) => {
        const result = value.apply(target, args);
        if (result instanceof Promise) {
          pending.add(result);
          result.catch(() => {}).finally(() => pending.delete(result));
        }
        return result;
      };
    },
  });
  const timeoutMs = 300;
  const store = new RedisStore(tracked, { timeoutMs, now: () => NOW });
  const app = await appOver(store);
  try {
    let started = performance.now();
    const res = await beforeDeadline(postEvents(app, "three", events("a", 3)), 5_000);
    let elapsed = performance.now() - started;
    const body = await res.json();
    assert.equal(res.status, 503);
    assert.equal(res.headers.get("Retry-After"), "1");
    assert.equal(body.error.code, "store_unavailable");
    assert.match(body.error.message, /within 300 ms/);
    assert.ok(elapsed >= timeoutMs - 20 && elapsed < timeoutMs + 1_000, `took ${elapsed} ms`);

    started = performance.now();
    const ready = await beforeDeadline(getJson(app, "/readyz"), 5_000);
    elapsed = performance.now() - started;
    assert.equal(ready.status, 503);
    assert.ok(elapsed < timeoutMs + 1_000, `took ${elapsed} ms`);
  } finally {
    abort.abort();
    await Promise.allSettled([...pending]);
    listener.close();
    await accepting;
    for (const connection of connections) connection.close();
  }
});

redisTest("applyBatch() sent again after a lost reply never double counts", async (fixture) => {
  const store = redisStore(fixture);
  const batch = await batchOf("three", events("a", 60));
  const first = await store.applyBatch(batch);
  assert.ok(first.outcomes.every((outcome) => outcome === "applied"));
  const meta = stream("three").counters.find((counter) => counter.name === "count")!.meta;
  const read = async () => {
    const panes = await store.panes("three", meta, { fromMs: -8.64e15, toMs: 8.64e15 });
    return await store.readWindows(
      "three",
      meta,
      panes.map((start) => ({ start, panes: [start] })),
    );
  };
  const before = await read();

  // The reply of the first call was lost: the caller sends the same batch again.
  const second = await store.applyBatch(batch);
  assert.deepEqual(second.outcomes, batch.events.map(() => "duplicate"));
  assert.equal(second.watermark, first.watermark);
  assert.deepEqual(await read(), before);
  const total = before.reduce((sum, row) => sum + row.state.count, 0);
  assert.equal(total, 60);
  const stats = await store.stats("three", []);
  assert.deepEqual([stats.applied, stats.duplicates], [60, 60]);
});

redisTest(
  "an ingest whose reply is lost answers 503, and the client's retry counts once",
  async (fixture) => {
    const proxy = await startUpstashProxy({ targetUrl: fixture.restUrl });
    try {
      const store = new RedisStore(upstash(proxy.url, fixture.restToken), { now: () => NOW });
      const app = await appOver(store);
      assert.equal((await postEvents(app, "three", events("warm", 1))).status, 202);

      proxy.loseNextReply((commands) => commands.some(([name]) => name === "evalsha"));
      const batch = events("a", 20);
      const lost = await postEvents(app, "three", batch);
      const body = await lost.json();
      assert.equal(lost.status, 503, JSON.stringify(body));
      assert.equal(body.error.code, "store_unavailable");
      assert.ok(proxy.take().some((request) => request.replyLost && request.status === 200));

      const retry = await postEvents(app, "three", batch);
      const reply = await retry.json();
      assert.equal(retry.status, 202);
      assert.deepEqual([reply.accepted, reply.duplicates], [20, 20]);
      const stats = await store.stats("three", []);
      assert.deepEqual([stats.applied, stats.duplicates], [21, 20]);
    } finally {
      await proxy.close();
    }
  },
);

/** A store as `storeFromEnv()` makes it, on the fixture's Redis through `url`, under `prefix`. */
function storeThrough(url: string, options: { fixture: RedisFixture; prefix: string }): Store {
  return storeFromEnv(
    new Map([
      ["UPSTASH_REDIS_REST_URL", url],
      ["UPSTASH_REDIS_REST_TOKEN", options.fixture.restToken],
      ["EDGESTREAM_PREFIX", options.prefix],
    ]),
  );
}

const isEvalsha = (commands: unknown[][]) =>
  commands.some(([name]) => String(name).toLowerCase() === "evalsha");

redisTest(
  "an apply that Deno's fetch sends again after its kept-alive connection closed before any reply counts once and answers as the first",
  async (fixture) => {
    const proxy = startDroppingProxy({ targetUrl: fixture.restUrl });
    try {
      // A client that never retries: a second request can only be fetch's own.
      const client = new Redis({
        url: proxy.url,
        token: fixture.restToken,
        enableTelemetry: false,
        retry: false,
      });
      const store = new RedisStore(client, { prefix: "dropped" });
      // No dedupe ids: a batch Redis ran twice would count twice.
      const noIds = events("a", 6).map((event) => ({ ...event, id: undefined }));
      // Its connection is then kept alive, and reused below.
      await ingestItems(stream("three"), items(noIds.slice(0, 1)), { store, nowMs: NOW });

      proxy.dropNextConnection(isEvalsha);
      const before = proxy.received;
      const reply = await ingestItems(stream("three"), items(noIds.slice(1)), {
        store,
        nowMs: NOW,
      });
      // Redis ran the script, the proxy closed the connection with no reply, and fetch sent the
      // same request again on a new one: that call answered the first one's reply.
      assert.equal(proxy.dropped, 1);
      assert.equal(proxy.received - before, 2);
      assert.deepEqual([reply.accepted, reply.duplicates, reply.late], [5, 0, 0]);
      assert.equal((await store.stats("three", [])).applied, 6);
      // One reply per apply, kept for 60 s under its token.
      const lives = await withDirect(fixture.redisUrl, async (send) => {
        const keys = await send("KEYS", "dropped:{three}:call:*") as string[];
        return await Promise.all(keys.map((key) => send("PTTL", key) as Promise<number>));
      });
      assert.equal(lives.length, 2);
      for (const ms of lives) assert.ok(ms > 55_000 && ms <= 60_000, `PTTL ${ms}`);
    } finally {
      await proxy.close();
    }
  },
);

/**
 * Runs `fn` with a store as `storeFromEnv()` makes it, through a dropping proxy, whose first
 * request is its EVALSHA on a new connection (fetch itself sends a request again only on a
 * kept-alive one): the script is put in Redis's cache first.
 */
async function viaDroppingProxy(
  fixture: RedisFixture,
  prefix: string,
  fn: (store: Store, proxy: DroppingProxy) => Promise<void>,
): Promise<void> {
  await ingestItems(stream("three"), items(events("warm", 1)), {
    store: redisStore(fixture),
    nowMs: NOW,
  });
  const proxy = startDroppingProxy({ targetUrl: fixture.restUrl });
  try {
    await fn(storeThrough(proxy.url, { fixture, prefix }), proxy);
  } finally {
    await proxy.close();
  }
}

redisTest(
  "an apply the client sends again after its connection was lost counts once and answers as the first",
  (fixture) =>
    viaDroppingProxy(fixture, "resent", async (store, proxy) => {
      proxy.dropNextConnection(isEvalsha);
      const noIds = events("a", 3).map((event) => ({ ...event, id: undefined }));
      const reply = await ingestItems(stream("three"), items(noIds), { store, nowMs: NOW });
      assert.equal(proxy.dropped, 1);
      assert.deepEqual([reply.accepted, reply.duplicates, reply.late], [3, 0, 0]);
      assert.equal((await store.stats("three", [])).applied, 3);
    }),
);

redisTest(
  "an apply whose connection was lost after sending answers unknown, even when the client's retry is refused",
  (fixture) =>
    viaDroppingProxy(fixture, "refused", async (store, proxy) => {
      proxy.dropNextConnection(isEvalsha, { thenRefuse: true });
      // The refused retry says nothing of the first try, which ran.
      await assert.rejects(
        ingestItems(stream("three"), items(events("a", 3)), { store, nowMs: NOW }),
        (error) => error instanceof StoreUnavailableError && error.outcome === "unknown",
      );
      assert.equal(proxy.dropped, 1);
      const direct = storeThrough(fixture.restUrl, { fixture, prefix: "refused" });
      assert.equal((await direct.stats("three", [])).applied, 3);
    }),
);

redisTest(
  "a send the store gave up on is aborted at its deadline, not sent again when its connection closes later",
  (fixture) =>
    viaDroppingProxy(fixture, "held", async (store, proxy) => {
      // A kept-alive connection, which fetch would send a pending request again on.
      await ingestItems(stream("three"), items(events("b", 1)), { store, nowMs: NOW });
      proxy.dropNextConnection(isEvalsha, { holdMs: REDIS_CALL_TIMEOUT_MS + 500 });
      const before = proxy.received;
      await assert.rejects(
        ingestItems(stream("three"), items(events("a", 3)), { store, nowMs: NOW }),
        (error) => error instanceof StoreUnavailableError && error.outcome === "unknown",
      );
      // The proxy closes the held connection half a second after the deadline.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      assert.equal(proxy.dropped, 1);
      assert.equal(proxy.received - before, 1);
    }),
);

redisTest(
  "a window close the client sends again after its connection was lost answers the windows the first closed",
  (fixture) =>
    viaDroppingProxy(fixture, "close", async (store, proxy) => {
      const counters = stream("s").counterMetas;
      await ingestItems(stream("s"), items(events("a", 20)), { store, nowMs: NOW });
      // The close script in Redis's cache (a peek closes nothing), and the watermark at NOW.
      await store.closeWindows("s", counters, { latenessMs: 10_000, peek: true });
      await ingestItems(stream("s"), items([{ id: "mark", t: NOW, g: "de" }]), {
        store,
        nowMs: NOW,
      });
      proxy.dropNextConnection(isEvalsha);
      const closed = await store.closeWindows("s", counters, { latenessMs: 10_000 });
      assert.equal(proxy.dropped, 1);
      // The windows the first send closed (its caller fires their alerts), each logged once.
      assert.ok(closed.length > 0);
      const logged = (await store.readLog("s", null, 10_000)).filter((entry) =>
        entry.record.type === "window.closed"
      );
      assert.equal(logged.length, closed.reduce((sum, window) => sum + window.groups.length, 0));
    }),
);

redisTest(
  "alert firings and a log append the client sends again after a lost connection count once",
  (fixture) =>
    viaDroppingProxy(fixture, "fire", async (store, proxy) => {
      const firing = BUSY_FIRING;
      // Both scripts in Redis's cache first.
      await store.fireAlerts("s", [{ ...firing, alert: "warm" }]);
      await store.appendLog("s", []);
      proxy.dropNextConnection(isEvalsha);
      // The first send fired it: its caller is told so (and counts and reports it).
      assert.deepEqual(await store.fireAlerts("s", [firing]), [firing]);
      proxy.dropNextConnection(isEvalsha);
      await store.appendLog("s", [{
        type: "window.closed",
        counter: "count",
        start: T0,
        end: T0 + 60_000,
        group: "[]",
        state: { count: 1, sum: 0, min: null, max: null, distinct: 0, approximate: false },
      }]);
      assert.equal(proxy.dropped, 2);
      const types = (await store.readLog("s", null, 100)).map((entry) => entry.record.type);
      assert.deepEqual(types, ["alert.fired", "alert.fired", "window.closed"]);
    }),
);

redisTest(
  "a dispatch mark the client sends again after a lost connection still reports the entries the log lost",
  async (fixture) => {
    const proxy = startDroppingProxy({ targetUrl: fixture.restUrl });
    try {
      // A client that never retries: a second request can only be fetch's own.
      const client = new Redis({
        url: proxy.url,
        token: fixture.restToken,
        enableTelemetry: false,
        retry: false,
      });
      // A log held for dispatch keeps at most 3 entries: past it the oldest go undispatched.
      const store = new RedisStore(client, { log: { retain: 1, max: 3 } });
      const record = (start: number) => ({
        type: "window.closed" as const,
        counter: "count",
        start,
        end: start + 60_000,
        group: "[]",
        state: { count: 1, sum: 0, min: null, max: null, distinct: 0, approximate: false },
      });
      await store.appendLog("s", [record(T0)]);
      const [first] = await store.readLog("s", null, 1);
      // The hold set (and the mark script in Redis's cache, its connection kept alive).
      assert.equal(await store.markDispatched("s", first.id), 0);
      // Five more: the oldest three are trimmed, two of them after the mark (lost to dispatch).
      await store.appendLog("s", [1, 2, 3, 4, 5].map((i) => record(T0 + i * 60_000)));
      // Redis runs the mark, which clears the count it reports; its reply is lost and fetch sends
      // the same request again: the count must still reach the caller (who warns and counts it).
      proxy.dropNextConnection(isEvalsha);
      const lost = await store.markDispatched("s", first.id);
      assert.equal(proxy.dropped, 1);
      assert.equal(lost, 2);
    } finally {
      await proxy.close();
    }
  },
);

redisTest(
  "a Redis out of memory answers ingest 503 not_applied with Retry-After, and applies nothing; /readyz says it is not ready",
  async (fixture) => {
    const store = redisStore(fixture);
    const app = await appOver(store);
    assert.equal((await postEvents(app, "three", events("warm", 1))).status, 202);
    await withDirect(fixture.redisUrl, async (send) => {
      await send("CONFIG", "SET", "maxmemory-policy", "noeviction");
      await send("CONFIG", "SET", "maxmemory", "1");
    });
    const full = await postEvents(app, "three", events("a", 3));
    const body = await full.json();
    assert.equal(full.status, 503, JSON.stringify(body));
    assert.equal(body.error.code, "store_unavailable");
    assert.equal(body.error.details.outcome, "not_applied");
    assert.ok(full.headers.get("Retry-After"));
    // Reachable, but taking no write: not ready.
    const ready = await getJson(app, "/readyz");
    assert.equal(ready.status, 503, JSON.stringify(ready.body));
    assert.equal(ready.body.status, "unavailable");
    assert.match(ready.body.error, /OOM command not allowed/);
    await withDirect(fixture.redisUrl, (send) => send("CONFIG", "SET", "maxmemory", "0"));
    assert.equal((await getJson(app, "/readyz")).status, 200);
    assert.equal((await store.stats("three", [])).applied, 1);
  },
);

redisTest(
  "a dedupe id with a lone UTF-16 surrogate does not fail its batch on Redis, as on the memory store",
  async (fixture) => {
    // `\ud800` alone is valid JSON and a valid JS string, but not well-formed Unicode.
    const body = `[{"id":"ok","t":${T0},"g":"de"},{"id":"\\ud800","t":${T0 + 1_000},"g":"de"}]`;
    const answers = [];
    for (const store of [new MemoryStore({ now: () => NOW }), redisStore(fixture)]) {
      const app = await appOver(store);
      const replies = [];
      for (let attempt = 0; attempt < 2; attempt++) {
        const res = await app.request("/v1/streams/three/events", {
          method: "POST",
          headers: { "Content-Type": "application/json" },
          body,
        });
        replies.push({ status: res.status, body: await res.json() });
      }
      answers.push(replies);
      assert.equal(replies[0].status, 202, `${store.kind}: ${JSON.stringify(replies[0].body)}`);
      assert.equal((await store.stats("three", [])).applied >= 1, true, store.kind);
    }
    assert.deepEqual(answers[1], answers[0], "the Redis store answers like the memory store");
  },
);

redisTest(
  "RedisStore remembers a dedupe id for at least its TTL and forgets it within twice the TTL",
  async (fixture) => {
    const store = redisStore(fixture);
    const batch = (nowMs: number): StoreBatch => ({
      stream: "s",
      nowMs,
      latenessMs: 1e12,
      dedupeTtlMs: 60_000,
      counters: [],
      filtered: 0,
      events: [{ id: "x", timeMs: nowMs }],
    });
    const t = 60_000 * 1000 + 59_000; // late in a TTL-wide bucket
    assert.deepEqual((await store.applyBatch(batch(t))).outcomes, ["applied"]);
    assert.deepEqual((await store.applyBatch(batch(t + 59_000))).outcomes, ["duplicate"]);
    assert.deepEqual((await store.applyBatch(batch(t + 121_000))).outcomes, ["applied"]);
  },
);

redisTest(
  "single-event and batch applies find each other's dedupe ids, and a bucket either makes expires",
  async (fixture) => {
    const store = redisStore(fixture);
    const ttl = 60_000;
    const batch = (nowMs: number, ids: string[]): StoreBatch => ({
      stream: "s",
      nowMs,
      latenessMs: 1e12,
      dedupeTtlMs: ttl,
      counters: [],
      filtered: 0,
      events: ids.map((id) => ({ id, timeMs: nowMs })),
    });
    const outcomes = async (nowMs: number, ids: string[]) =>
      (await store.applyBatch(batch(nowMs, ids))).outcomes;
    const bucketOf = (nowMs: number) => `es:{s}:ids:${Math.floor(nowMs / ttl)}`;
    const life = (nowMs: number) =>
      withDirect(fixture.redisUrl, async (send) => Number(await send("PTTL", bucketOf(nowMs))));
    const t = ttl * 1000;
    // A single event makes the bucket: it expires 2 × TTL + TTL/8 after.
    assert.deepEqual(await outcomes(t, ["a"]), ["applied"]);
    const made = await life(t);
    assert.ok(made > 2 * ttl && made <= 2 * ttl + ttl / 8, `PTTL ${made}`);
    // In the same bucket: found by a single event and by a batch, and the other way round.
    assert.deepEqual(await outcomes(t + 1_000, ["a"]), ["duplicate"]);
    assert.deepEqual(await outcomes(t + 2_000, ["b", "a", "c"]), [
      "applied",
      "duplicate",
      "applied",
    ]);
    assert.deepEqual(await outcomes(t + 3_000, ["c"]), ["duplicate"]);
    assert.deepEqual(await outcomes(t + 4_000, ["d"]), ["applied"]);
    // The bucket's expiry was set once, when it was made.
    assert.ok(await life(t) <= made, "a later write must not extend the bucket");
    // The next bucket: the older one's ids are found, a duplicate is not copied over, and a batch
    // makes the bucket with its expiry as a single event does.
    const next = t + ttl;
    assert.deepEqual(await outcomes(next, ["b", "e", "f"]), ["duplicate", "applied", "applied"]);
    const batchMade = await life(next);
    assert.ok(batchMade > 2 * ttl && batchMade <= 2 * ttl + ttl / 8, `PTTL ${batchMade}`);
    assert.deepEqual(await outcomes(next + 1_000, ["d"]), ["duplicate"]);
    assert.deepEqual(await outcomes(next + 2_000, ["e"]), ["duplicate"]);
    const fields = await withDirect(
      fixture.redisUrl,
      (send) => send("HKEYS", bucketOf(next)),
    ) as string[];
    // Besides the mark (one byte 0xFF, which the client reads as U+FFFD): only the new ids.
    assert.deepEqual(fields.filter((field) => /^[a-z]$/.test(field)).sort(), ["e", "f"]);
    assert.equal(fields.length, 3);
  },
);

/** Calls of each Redis command since the last CONFIG RESETSTAT (the scripts' own included). */
async function commandCalls(fixture: RedisFixture): Promise<Map<string, number>> {
  const info = String(await withDirect(fixture.redisUrl, (send) => send("INFO", "commandstats")));
  const calls = new Map<string, number>();
  for (const match of info.matchAll(/^cmdstat_(\w+):calls=(\d+)/gm)) {
    calls.set(match[1], Number(match[2]));
  }
  return calls;
}

redisTest(
  "a batch writes the groups of one count or sum pane with one HMGET and one HSET, not one HINCRBY each",
  async (fixture) => {
    const store = redisStore(fixture);
    const batch = (prefix: string) =>
      Array.from({ length: 30 }, (_, i) => ({
        id: `${prefix}${i}`,
        t: T0 + 5_000,
        g: `g${i % 10}`,
        v: i,
        u: "u",
      }));
    // The first batch makes the pane and its groups; the second finds them all.
    await ingestItems(stream("three"), items(batch("a")), { store, nowMs: NOW });
    await withDirect(fixture.redisUrl, (send) => send("CONFIG", "RESETSTAT"));
    await ingestItems(stream("three"), items(batch("b")), { store, nowMs: NOW });
    const calls = await commandCalls(fixture);
    // count and sum (by g, 10 groups each): one HMGET and one HSET per pane; one HINCRBY, for
    // the distinct counter's one group (beside its PFADD).
    assert.equal(calls.get("hincrby"), 1, JSON.stringify([...calls]));
    assert.equal(calls.get("hincrbyfloat") ?? 0, 0);
    assert.equal(calls.get("hset"), 4, "the two panes, the dedupe ids and the stats");
    assert.equal(
      calls.get("hmget"),
      7,
      "the three panes (checked before any write), both dedupe buckets, the stats and the definition record",
    );
    const windows = await listWindows(
      stream("three"),
      stream("three").counters.find((c) => c.name === "count")!,
      { store, nowMs: NOW },
      { limit: 10 },
    );
    assert.deepEqual(windows.map((row) => row.value), Array(10).fill(6));
  },
);

Deno.test("a Redis call is abandoned at the 5 s deadline by default", async () => {
  const clock = FakeTimers.install({ toFake: ["setTimeout", "clearTimeout"] });
  try {
    // A client whose every call never answers.
    const silent = new Proxy({}, { get: () => () => new Promise(() => {}) });
    const store = new RedisStore(silent as ConstructorParameters<typeof RedisStore>[0]);
    const outcome: { error?: unknown } = {};
    const ping = store.ping().then(() => outcome.error = null, (error) => outcome.error = error);
    await clock.tickAsync(4_999);
    assert.equal("error" in outcome, false, "no answer before 5 s");
    await clock.tickAsync(1);
    await ping;
    assert.ok(outcome.error instanceof StoreUnavailableError, String(outcome.error));
    assert.match(outcome.error.message, /within 5000 ms/);
  } finally {
    clock.uninstall();
  }
});

/** Outcomes of one batch of stream `s`, one event per id at `nowMs`, under `dedupeTtlMs`. */
async function dedupeOutcomes(
  store: Store,
  nowMs: number,
  dedupeTtlMs: number,
  ids: string[],
): Promise<string[]> {
  return (await store.applyBatch({
    stream: "s",
    nowMs,
    latenessMs: 1e12,
    dedupeTtlMs,
    counters: [],
    filtered: 0,
    events: ids.map((id) => ({ id, timeMs: nowMs })),
  })).outcomes;
}

const DAY = 86_400_000;

redisTest(
  "RedisStore: a new store on the same Redis with another dedupe TTL (a config redeploy) holds the ids sent before, each TTL's buckets named ids:<floor(now / ttl)>",
  async (fixture) => {
    assert.deepEqual(await dedupeOutcomes(redisStore(fixture), NOW, DAY, ["a", "b"]), [
      "applied",
      "applied",
    ]);
    // Redeployed with 12h: a store that never saw the 24h.
    const redeployed = redisStore(fixture);
    assert.deepEqual(await dedupeOutcomes(redeployed, NOW + 1_000, DAY / 2, ["a"]), [
      "duplicate",
    ]);
    assert.deepEqual(await dedupeOutcomes(redeployed, NOW + 2_000, DAY / 2, ["a", "b", "c"]), [
      "duplicate",
      "duplicate",
      "applied",
    ]);
    // And back to 24h, again by a new store: the ids of both are held.
    assert.deepEqual(await dedupeOutcomes(redisStore(fixture), NOW + 3_000, DAY, ["a", "c", "d"]), [
      "duplicate",
      "duplicate",
      "applied",
    ]);
    const keys = [...(await keysWithTtl(fixture.redisUrl)).keys()].filter((key) =>
      key.startsWith("es:{s}:ids:")
    ).sort();
    // Named as in the releases before, bucket = floor(now / ttl): 12h's and 24h's numbers differ.
    assert.deepEqual(keys, [
      `es:{s}:ids:${Math.floor(NOW / DAY)}`,
      `es:{s}:ids:${Math.floor(NOW / (DAY / 2))}`,
    ]);
    // The stats say which TTLs' buckets are asked: 24h now, 12h until its newer bucket ends.
    const twelveUntil = (Math.floor(NOW / (DAY / 2)) + 2) * (DAY / 2) + DAY / 16;
    const dk = await withDirect(fixture.redisUrl, (send) => send("HGET", "es:{s}:stats", "dk"));
    assert.equal(dk, `${DAY} ${DAY / 2}:${twelveUntil}`);
    // Once that bucket's time is up, only the TTL is left.
    const later = twelveUntil + 1;
    await dedupeOutcomes(redisStore(fixture), later, DAY, ["e"]);
    const after = await withDirect(fixture.redisUrl, (send) => send("HGET", "es:{s}:stats", "dk"));
    assert.equal(after, `${DAY}`);
  },
);

redisTest(
  "RedisStore holds a single event's id found in a dedupe bucket without the mark (written by a release before 1d1c4b3), where HSET's answer alone took it as new",
  async (fixture) => {
    const bucket = `es:{s}:ids:${Math.floor(NOW / DAY)}`;
    await dedupeOutcomes(redisStore(fixture), NOW, DAY, ["first"]);
    // As the old release left it: the id, no mark field, its own PX.
    await withDirect(fixture.redisUrl, async (send) => {
      await send("DEL", bucket);
      await send("HSET", bucket, "x", "1");
      await send("PEXPIRE", bucket, String(2 * DAY));
      await send("HDEL", "es:{s}:stats", "db");
    });
    assert.deepEqual(await dedupeOutcomes(redisStore(fixture), NOW + 1, DAY, ["x"]), ["duplicate"]);
    assert.deepEqual(await dedupeOutcomes(redisStore(fixture), NOW + 2, DAY, ["y"]), ["applied"]);
    // Marked now, and noted in the stats: HSET's answer is trusted again.
    await withDirect(fixture.redisUrl, async (send) => {
      // x, y and the mark (the byte 0xFF, which no text here can name).
      assert.equal(await send("HLEN", bucket), 3);
      assert.equal(await send("HGET", "es:{s}:stats", "db"), `${DAY}:${Math.floor(NOW / DAY)}`);
    });
    assert.deepEqual(await dedupeOutcomes(redisStore(fixture), NOW + 3, DAY, ["y"]), ["duplicate"]);
    assert.deepEqual(await dedupeOutcomes(redisStore(fixture), NOW + 4, DAY, ["x", "z"]), [
      "duplicate",
      "applied",
    ]);
  },
);

redisTest(
  "RedisStore asks the buckets of at most DEDUPE_EARLIER_TTLS earlier dedupe TTLs, the latest first, each once",
  async (fixture) => {
    assert.equal(DEDUPE_EARLIER_TTLS, 8);
    await dedupeOutcomes(redisStore(fixture), NOW, DAY, ["a"]);
    // A field listing 20,000 earlier TTLs (a TTL changed again and again, or written by another
    // hand), one of them twice: the next apply keeps the first 8 distinct ones.
    const until = NOW + DAY;
    const listed = [`${DAY}`, `60000:${until}`];
    for (let i = 1; i <= 20_000; i++) listed.push(`${60_000 + i}:${until}`);
    listed.splice(3, 0, `60000:${until}`);
    await withDirect(
      fixture.redisUrl,
      (send) => send("HSET", "es:{s}:stats", "dk", listed.join(" ")),
    );
    assert.deepEqual(await dedupeOutcomes(redisStore(fixture), NOW + 1_000, DAY, ["a", "b"]), [
      "duplicate",
      "applied",
    ]);
    const dk = await withDirect(fixture.redisUrl, (send) => send("HGET", "es:{s}:stats", "dk"));
    assert.equal(
      dk,
      [`${DAY}`, `60000:${until}`, ...[1, 2, 3, 4, 5, 6, 7].map((i) => `${60_000 + i}:${until}`)]
        .join(" "),
    );
  },
);

redisTest(
  "RedisStore and the release before share the dedupe buckets ids:<bucket> in a rolling deploy: each finds the ids the other wrote",
  async (fixture) => {
    const ttl = 3_600_000;
    const bucket = Math.floor(NOW / ttl);
    const store = redisStore(fixture);
    // This release applies first (the stream's stats and dk are written) ...
    assert.deepEqual(await dedupeOutcomes(store, NOW, ttl, ["mine1"]), ["applied"]);
    assert.deepEqual(await dedupeOutcomes(store, NOW, ttl, ["mine2", "mine3"]), [
      "applied",
      "applied",
    ]);
    // ... and the ids it wrote are where an instance of the release before looks for them:
    // ids:<floor(now / ttl)> (HEXISTS in the older bucket, HSET in the newer one).
    const held = (key: string, id: string) =>
      withDirect(fixture.redisUrl, (send) => send("HEXISTS", key, id));
    for (const id of ["mine1", "mine2", "mine3"]) {
      assert.equal(await held(`es:{s}:ids:${bucket}`, id), 1, id);
    }
    // Then an instance of the release before writes ids, by hand here, as it does.
    await withDirect(fixture.redisUrl, async (send) => {
      await send("HSET", `es:{s}:ids:${bucket}`, "old1", "1", "old2", "1");
      await send("HSET", `es:{s}:ids:${bucket - 1}`, "older", "1");
    });
    assert.deepEqual(await dedupeOutcomes(store, NOW + 1_000, ttl, ["old1"]), ["duplicate"]);
    assert.deepEqual(
      await dedupeOutcomes(store, NOW + 2_000, ttl, ["older", "old2", "fresh"]),
      ["duplicate", "duplicate", "applied"],
    );
    // An hour on, bucket is the older one, for both releases: still held.
    assert.deepEqual(await dedupeOutcomes(store, NOW + ttl, ttl, ["old1", "mine1"]), [
      "duplicate",
      "duplicate",
    ]);
    // The TTL stayed: dk names it alone, and no other key was made.
    assert.equal(
      await withDirect(fixture.redisUrl, (send) => send("HGET", "es:{s}:stats", "dk")),
      `${ttl}`,
    );
    const keys = [...(await keysWithTtl(fixture.redisUrl)).keys()].filter((key) =>
      key.startsWith("es:{s}:ids:")
    ).sort();
    assert.deepEqual(keys, [`es:{s}:ids:${bucket - 1}`, `es:{s}:ids:${bucket}`]);
  },
);

redisTest(
  "RedisStore: a deploy that brings this release and another dedupe TTL at once forgets the ids the release before held (no dk says which TTL came before)",
  async (fixture) => {
    const hour = 3_600_000;
    const store = redisStore(fixture);
    for (const stream of ["before", "this"]) {
      const outcomes = (ttl: number, nowMs: number) =>
        store.applyBatch({
          stream,
          nowMs,
          latenessMs: 1e12,
          dedupeTtlMs: ttl,
          counters: [],
          filtered: 0,
          events: [{ id: "kept", timeMs: nowMs }],
        }).then((result) => result.outcomes);
      assert.deepEqual(await outcomes(DAY, NOW), ["applied"]);
      // "before": its history written by the release before, which writes no dk.
      if (stream === "before") {
        await withDirect(fixture.redisUrl, (send) => send("HDEL", `es:{${stream}}:stats`, "dk"));
      }
      assert.deepEqual(
        await outcomes(hour, NOW + 1_000),
        [stream === "before" ? "applied" : "duplicate"],
        stream === "before"
          ? "README: a deploy that brings this release and another ttl at once forgets the ids held"
          : "a TTL change this release saw keeps the ids",
      );
    }
  },
);

redisTest(
  "RedisStore: TTLs whose bucket numbers coincide share the key, and its ids (asked once)",
  async (fixture) => {
    // floor(NOW / a) = floor(NOW / b) for these two: one key, ids:<that number>.
    const a = 3_600_000;
    const b = a - 1;
    assert.equal(Math.floor(NOW / a), Math.floor(NOW / b));
    const store = redisStore(fixture);
    assert.deepEqual(await dedupeOutcomes(store, NOW, a, ["x"]), ["applied"]);
    assert.deepEqual(await dedupeOutcomes(store, NOW + 1_000, b, ["x", "y"]), [
      "duplicate",
      "applied",
    ]);
    assert.deepEqual(await dedupeOutcomes(store, NOW + 2_000, a, ["y"]), ["duplicate"]);
    const keys = [...(await keysWithTtl(fixture.redisUrl)).keys()].filter((key) =>
      key.startsWith("es:{s}:ids:")
    );
    assert.deepEqual(keys, [`es:{s}:ids:${Math.floor(NOW / a)}`]);
  },
);

redisTest(
  "single-event applies (a distinct value sent bare, an empty one, an event without an id) count as the memory store counts",
  async (fixture) => {
    const redis = redisStore(fixture);
    const memory = new MemoryStore({ now: () => NOW });
    const users = stream("three").counters.find((c) => c.name === "users")!;
    // One event a call: "" and "x" distinct, "x" again under another id, then one without an id
    // (a new value), and a duplicate id (not counted).
    const sent = [
      { id: "e1", t: NOW - 5_000, g: "de", v: 1, u: "" },
      { id: "e2", t: NOW - 4_000, g: "de", v: 1, u: "x" },
      { id: "e3", t: NOW - 3_000, g: "de", v: 1, u: "x" },
      { t: NOW - 2_000, g: "de", v: 1, u: "y" },
      { id: "e2", t: NOW - 1_000, g: "de", v: 1, u: "z" },
    ];
    const read = async (store: Store) => {
      for (const event of sent) {
        await ingestItems(stream("three"), items([event]), { store, nowMs: NOW });
      }
      const rows = await listWindows(stream("three"), users, { store, nowMs: NOW }, { limit: 10 });
      return {
        values: rows.map((row) => row.value),
        applied: (await store.stats("three", [])).applied,
      };
    };
    const fromMemory = await read(memory);
    assert.equal(fromMemory.applied, 4);
    assert.equal(Math.max(...fromMemory.values.map(Number)), 3, JSON.stringify(fromMemory.values));
    assert.deepEqual(await read(redis), fromMemory);
  },
);

redisTest(
  "panes() sends back only the live panes in its range, not the counter's whole index of them",
  async (fixture) => {
    const client = upstash(fixture.restUrl, fixture.restToken);
    // What each of the store's calls got back, as JSON text.
    const replies: string[] = [];
    const methods = [
      "evalsha",
      "eval",
      "hgetall",
      "hmget",
      "xrange",
      "xrevrange",
      "ping",
    ];
    const redis = Object.fromEntries(
      methods.map((method) => [method, async (...args: unknown[]) => {
        const reply = await (client[method as keyof Redis] as (...args: unknown[]) => unknown)
          .apply(client, args);
        replies.push(JSON.stringify(reply) ?? "");
        return reply;
      }]),
    ) as unknown as RedisClient;
    const seconds = compileConfig({
      streams: {
        fine: {
          time: { field: "t", lateness: "1h" },
          counters: { n: { window: { tumbling: "1s" }, aggregate: "count", retention: "1h" } },
        },
      },
    }).get("fine")!;
    // The clock past the last event, so none is ahead of it.
    const now = T0 + 2_100_000;
    const store = new RedisStore(redis, { now: () => now });
    // 2,000 panes, one a second.
    for (let batch = 0; batch < 2; batch++) {
      const list = Array.from(
        { length: 1_000 },
        (_, i) => ({ t: T0 + (batch * 1_000 + i) * 1_000 }),
      );
      const reply = await ingestItems(seconds, items(list), { store, nowMs: now });
      assert.equal(reply.accepted, 1_000);
    }
    const meta = seconds.counterMetas[0];
    replies.length = 0;
    assert.deepEqual(
      await store.panes("fine", meta, { fromMs: T0 + 1_500_000, toMs: T0 + 1_502_000 }),
      [T0 + 1_500_000, T0 + 1_501_000],
    );
    const received = replies.reduce((sum, reply) => sum + reply.length, 0);
    assert.ok(received < 200, `panes() of two panes received ${received} characters`);
    // Every live pane when the range holds them all, oldest first.
    const all = await store.panes("fine", meta, { fromMs: -8.64e15, toMs: 8.64e15 });
    assert.equal(all.length, 2_000);
    assert.deepEqual(all.slice(0, 2), [T0, T0 + 1_000]);
    assert.equal(all.at(-1), T0 + 1_999_000);
    // None past their life.
    const later = new RedisStore(redis, { now: () => now + 3 * 3_600_000 });
    assert.deepEqual(await later.panes("fine", meta, { fromMs: -8.64e15, toMs: 8.64e15 }), []);
  },
);

redisTest(
  "a single-event apply sends the script one argument, and applies, dedupes and refuses late events as a batch does",
  async (fixture) => {
    const client = upstash(fixture.restUrl, fixture.restToken);
    // How many arguments each EVALSHA carried.
    const argumentCounts: number[] = [];
    const redis = new Proxy(client, {
      get(target, name) {
        const value = Reflect.get(target, name, target);
        if (name !== "evalsha" || typeof value !== "function") return value;
        return (sha: string, keys: string[], args: string[]) => {
          argumentCounts.push(args.length);
          return value.call(target, sha, keys, args);
        };
      },
    }) as unknown as RedisClient;
    const memory = new MemoryStore();
    const redisStore = new RedisStore(redis, { now: () => NOW });
    const steps: [string, object[], number][] = [
      ["first", [{ id: "a", t: T0, g: "de", v: 2, u: "ann" }], 1],
      ["again", [{ id: "a", t: T0, g: "de", v: 2, u: "ann" }], 1],
      ["batch", [
        { id: "b", t: T0 + 200_000, g: "fr", v: 3, u: "bob" },
        { id: "c", t: T0 + 200_000, g: "de", v: 4, u: "cy" },
      ], 3],
      ["late", [{ id: "d", t: T0, g: "de", v: 5, u: "dee" }], 1],
    ];
    for (const [label, body, argumentCount] of steps) {
      const replies = [];
      for (const store of [memory, redisStore]) {
        const reply = await ingestItems(stream("s"), items(body), { store, nowMs: NOW });
        replies.push([reply.accepted, reply.duplicates, reply.late]);
      }
      assert.deepEqual(replies[1], replies[0], label);
      assert.equal(argumentCounts.at(-1), argumentCount, label);
    }
    const counts = async (store: Store) => {
      const { accepted, applied, duplicates, late } = await store.stats("s", []);
      return [accepted, applied, duplicates, late];
    };
    assert.deepEqual(await counts(redisStore), [5, 3, 1, 1]);
    assert.deepEqual(await counts(redisStore), await counts(memory));
  },
);

/** Four counters of four kinds, one pane each: the definition of {@linkcode FOUR}. */
const FOUR_DEFINITION = {
  time: { field: "t", lateness: "1h" },
  counters: {
    count: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: "count" },
    sum: { window: { tumbling: "1m" }, aggregate: { sum: "v" } },
    low: { window: { tumbling: "1m" }, groupBy: ["g"], aggregate: { min: "v" } },
    users: { window: { tumbling: "1m" }, aggregate: { distinct: "u" } },
  },
};
const FOUR: CompiledStream = compileConfig({ streams: { four: FOUR_DEFINITION } }).get("four")!;

Deno.test("applyFields() puts the apply script's fields at their places: false for an absent one (never null), none after the last present", () => {
  const sent = applyFields({
    tk: "t",
    now: 5,
    late: 0,
    dttl: 0,
    counters: [],
    id: false,
    one: [1],
  });
  assert.deepEqual(sent, ["t", 5, 0, 0, [], false, false, [1]]);
  assert.equal(sent.length, APPLY_FIELDS.indexOf("one") + 1);
  // A field after an absent one: the absent one is false, which the script takes as absent.
  const later = applyFields({ tk: "t", sess: [[0, 10, 5]] });
  assert.equal(later.length, APPLY_FIELDS.length);
  assert.equal(later.indexOf(null), -1);
  assert.deepEqual(later[APPLY_FIELDS.indexOf("sess")], [[0, 10, 5]]);
  // 0 is a value, not an absence (Lua takes 0 as true).
  assert.equal(applyFields({ dv: 0 })[APPLY_FIELDS.indexOf("dv")], 0);
});

redisTest(
  "applyBatch() through the registry's path (a stream created through the API: generation 1, dv, recorded) sends a plain single event's 11 values, no padding",
  async (fixture) => {
    const redis = upstash(fixture.restUrl, fixture.restToken);
    const sent: unknown[][] = [];
    const client = new Proxy(redis, {
      get(target, property, receiver) {
        const value = Reflect.get(target, property, receiver);
        if (property !== "evalsha" && property !== "eval") return value;
        return (script: string, keys: string[], args: string[]) => {
          const header = JSON.parse(args[0]);
          // Once per call: not again for the EVAL after a NOSCRIPT (the same token, `tk`).
          if (Array.isArray(header) && !sent.some((seen) => seen[0] === header[0])) {
            sent.push(header);
          }
          return (value as (...a: unknown[]) => unknown).call(target, script, keys, args);
        };
      },
    }) as unknown as RedisClient;
    // The registry's own path: created with put(), ingested through its wrap() of the store.
    const { store, stream, version, generation } = await createdThroughApi(
      redis,
      new RedisStore(client, { prefix: "reg", now: () => NOW, definitionsHere: true }),
      { prefix: "reg", name: "four", definition: FOUR_DEFINITION },
    );
    assert.equal(generation, 1);
    const result = await ingestItems(
      stream,
      items([{ t: T0 + 61_000, g: "de", v: 2.5, u: "ann" }]),
      {
        store,
        nowMs: NOW,
      },
    );
    assert.equal(result.accepted, 1);
    assert.equal(sent.length, 1);
    // tk, now, late, dttl, counters, tmax, id, one, dv, rec, gen: of these only `id` (no dedupe)
    // is absent (false), none padding between the others.
    assert.equal(sent[0].length, 11);
    const absent = sent[0].flatMap((value, i) => value === false ? [APPLY_FIELDS[i]] : []);
    assert.deepEqual(absent, ["id"]);
    // The single event's form: its pane updates in `one` (the event's user among them).
    const one = sent[0][APPLY_FIELDS.indexOf("one")];
    assert.ok(Array.isArray(one) && one.includes("ann"), `one: ${JSON.stringify(one)}`);
    assert.equal(sent[0][APPLY_FIELDS.indexOf("gen")], 1);
    assert.equal(sent[0][APPLY_FIELDS.indexOf("rec")], true);
    assert.equal(sent[0][APPLY_FIELDS.indexOf("dv")], version);
  },
);

Deno.test("the apply script reads ARGV[1]'s fields by place only: no args.<name> but args.sess (a name would read nil from the array)", () => {
  // Lua comments out: long ones (--[[ ]]), then the rest of a line after -- (the script's
  // strings hold no --).
  const code = APPLY_SCRIPT.replace(/--\[(=*)\[[\s\S]*?\]\1\]/g, "").replace(/--[^\n]*/g, "");
  const names = new Set([...code.matchAll(/\bargs\.([A-Za-z_]\w*)/g)].map((m) => m[1]));
  assert.deepEqual([...names], ["sess"]);
});

redisTest(
  "applyBatch() sends a plain single event's cells in short (`one`, no `cells`), and a batch of two its cells",
  async (fixture) => {
    const { client, headers } = recordingApplies(upstash(fixture.restUrl, fixture.restToken));
    const store = new RedisStore(client, { prefix: "short", now: () => NOW });
    const pane = String(T0 + 60_000);
    await ingestItems(FOUR, items([{ t: T0 + 61_000, g: "de", v: 2.5, u: "ann" }]), {
      store,
      nowMs: NOW,
    });
    assert.equal(headers.length, 1);
    assert.equal("cells" in headers[0], false);
    // Per counter its pane, group and (but for a count) the event's value.
    assert.deepEqual(headers[0].one, [
      ...[pane, '["de"]'],
      ...[pane, "[]", 2.5],
      ...[pane, '["de"]', 2.5],
      ...[pane, "[]", "ann"],
    ]);
    await ingestItems(
      FOUR,
      items([{ t: T0 + 62_000, g: "de", v: 1, u: "bob" }, {
        t: T0 + 63_000,
        g: "fr",
        v: 3,
        u: "bob",
      }]),
      { store, nowMs: NOW },
    );
    assert.equal(headers.length, 2);
    assert.equal("one" in headers[1], false);
    assert.ok(Array.isArray(headers[1].cells));
    // Both forms count what the events add.
    const values: Record<string, unknown> = {};
    for (const counter of FOUR.counters) {
      const rows = await listWindows(FOUR, counter, { store, nowMs: NOW }, { limit: 10 });
      values[counter.name] = rows.map((row) => [row.group, row.value]);
    }
    assert.deepEqual(values, {
      count: [[{ g: "de" }, 2], [{ g: "fr" }, 1]],
      sum: [[{}, 6.5]],
      low: [[{ g: "de" }, 1], [{ g: "fr" }, 3]],
      users: [[{}, 2]],
    });
  },
);
