/**
 * The memory a close of many groups costs where the README's "Result log bounds" and "Batches"
 * quote it: one close of `--groups` groups (default 100,000) of a tumbling 1m count grouped by
 * `country` logs as many `window.closed` entries, and
 *
 * 1. on the memory store: the growth of V8's used heap (plus external memory) across the sweep
 *    that closes the window, between two full collections, per entry logged;
 * 2. on Redis (a redis-server behind the Upstash bridge, as `src/main.ts` reaches it):
 *    `MEMORY USAGE … SAMPLES 0` of the stream's result log, per entry;
 * 3. the webhook deliveries the first dispatch of that log makes (20 pages of 500, as a sweep's),
 *    in a `RedisDeliveryStore`: `MEMORY USAGE` of every key the delivery store holds then, per
 *    delivery, for an endpoint batching `window.closed` (`maxEvents` 1,000: one delivery a page of
 *    500) and for one taking them one by one.
 *
 * `deno task bench:log-memory [--groups 100000] [--port 7650]`
 */
import { parseArgs } from "node:util";
import { Redis } from "@upstash/redis";
import { compileConfig } from "../src/config/mod.ts";
import { sweepOnce } from "../src/fanout/mod.ts";
import { Dispatcher } from "../src/fanout/webhooks/mod.ts";
import { ingestItems } from "../src/ingest/mod.ts";
import { type Endpoint, RedisDeliveryStore } from "../src/store/mod.ts";
import { MemoryStore } from "../src/store/memory/store.ts";
import { RedisStore } from "../src/store/redis/store.ts";
import type { Store } from "../src/store/types.ts";
import { startRedisServer } from "../tools/redis_server.ts";
import { startUpstashBridge } from "../tools/upstash_bridge.ts";
import { machineInfo, writeResults } from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    groups: { type: "string", default: "100000" },
    port: { type: "string", default: "7650" },
  },
});
const GROUPS = Number(flags.groups);

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("Run with --v8-flags=--expose-gc (deno task bench:log-memory)");

function heapBytes(): number {
  for (let i = 0; i < 4; i++) gc!();
  const usage = Deno.memoryUsage();
  return usage.heapUsed + usage.external;
}

const machine = await machineInfo();
const T0 = Math.floor(Date.now() / 60_000) * 60_000 - 10 * 60_000;
const stream = compileConfig({
  streams: {
    s: {
      time: { field: "t", lateness: "0s" },
      counters: {
        per_minute: {
          window: { tumbling: "1m" },
          groupBy: ["country"],
          aggregate: "count",
          maxGroups: 1_000_000,
        },
      },
    },
  },
}).get("s")!;

/** GROUPS groups in the first minute, and an event that makes their window due. */
async function fill(store: Store): Promise<void> {
  for (let i = 0; i < GROUPS; i += 1_000) {
    const items = [];
    for (let j = i; j < Math.min(GROUPS, i + 1_000); j++) {
      items.push({
        ok: true as const,
        value: { t: T0 + 1_000, country: `c${String(j).padStart(6, "0")}` },
      });
    }
    await ingestItems(stream, items, { store, nowMs: T0 + 120_000 });
  }
  await ingestItems(stream, [{ ok: true, value: { t: T0 + 120_000, country: "tick" } }], {
    store,
    nowMs: T0 + 120_000,
  });
}

/** Sweeps until the window is closed (a sweep closes at most 100 windows, over many calls). */
async function closeAll(store: Store): Promise<number> {
  let closed = 0;
  for (let sweep = 0; sweep < 10; sweep++) {
    const report = await sweepOnce([stream], store);
    if (report.failed.length > 0) throw new Error(JSON.stringify(report.failed));
    const groups = report.closed.reduce((n, window) => n + window.groups.length, 0);
    if (groups === 0) break;
    closed += groups;
  }
  return closed;
}

// 1. The memory store.
const memory = new MemoryStore({ now: () => T0 + 180_000 });
await fill(memory);
const before = heapBytes();
const memoryClosed = await closeAll(memory);
const after = heapBytes();
const memoryEntries = (await memory.readLog("s", null, 2 * GROUPS)).length;
const memoryBytesPerEntry = (after - before) / memoryEntries;
console.log(
  `memory store: ${memoryClosed} groups closed, ${memoryEntries} log entries, ` +
    `${Math.round(memoryBytesPerEntry)} heap bytes an entry (${
      ((after - before) / 1e6).toFixed(1)
    } MB)`,
);

// 2. and 3. Redis.
const server = await startRedisServer({ port: Number(flags.port) });
const bridge = await startUpstashBridge({ redisUrl: server.url, token: "bench-token" });
const results: Record<string, unknown> = {
  machine,
  groups: GROUPS,
  memory: {
    closed: memoryClosed,
    entries: memoryEntries,
    heapBytes: after - before,
    bytesPerEntry: memoryBytesPerEntry,
  },
};
try {
  const redis = new Redis({ url: bridge.url, token: bridge.token, enableTelemetry: false });
  const raw = async (...command: (string | number)[]) => {
    const res = await fetch(bridge.url, {
      method: "POST",
      headers: { Authorization: `Bearer ${bridge.token}` },
      body: JSON.stringify(command),
    });
    const body = await res.json();
    if (body.error) throw new Error(`${command.join(" ")}: ${body.error}`);
    return body.result;
  };
  const store = new RedisStore(redis, { now: () => T0 + 180_000 });
  await fill(store);
  const redisClosed = await closeAll(store);
  const length = Number(await raw("XLEN", "es:{s}:log"));
  const logBytes = Number(await raw("MEMORY", "USAGE", "es:{s}:log", "SAMPLES", "0"));
  console.log(
    `redis: ${redisClosed} groups closed, ${length} log entries, MEMORY USAGE ${
      (logBytes / 1e6).toFixed(1)
    } MB, ${Math.round(logBytes / length)} bytes an entry`,
  );
  results.redis = {
    closed: redisClosed,
    entries: length,
    logBytes,
    bytesPerEntry: logBytes / length,
  };

  const endpoint = (id: string, batch: Endpoint["batch"]): Endpoint => ({
    id,
    url: `https://example.com/${id}`,
    description: null,
    eventTypes: ["window.closed"],
    streams: null,
    filter: null,
    headers: {},
    rateLimit: null,
    batch,
    secrets: [],
    startAfter: {},
    createdMs: T0,
    updatedMs: T0,
    version: 1,
    disabled: false,
    disabledReason: null,
    failingSinceMs: null,
  });
  const deliveryRuns: Record<string, unknown> = {};
  for (
    const [name, batch] of [
      ["batched", { maxEvents: 1_000, maxWaitMs: 1_000, eventTypes: ["window.closed"] }],
      ["one by one", null],
    ] as const
  ) {
    const prefix = name === "batched" ? "b" : "o";
    const deliveries = new RedisDeliveryStore(redis, { now: () => T0 + 180_000, prefix });
    const made = await new Dispatcher(store, deliveries, { now: () => T0 + 180_000 }).dispatch(
      stream,
      [endpoint(`ep_${prefix}`, batch as Endpoint["batch"])],
    );
    let cursor = "0";
    let bytes = 0;
    let keys = 0;
    do {
      const [next, found] = await raw("SCAN", cursor, "MATCH", `${prefix}:{wh}:*`, "COUNT", 1000);
      cursor = next;
      for (const key of found as string[]) {
        bytes += Number(await raw("MEMORY", "USAGE", key, "SAMPLES", "0"));
        keys++;
      }
    } while (cursor !== "0");
    let count = 0;
    let results = 0;
    let page: string | undefined = undefined;
    do {
      const listed: Awaited<ReturnType<RedisDeliveryStore["listDeliveries"]>> = await deliveries
        .listDeliveries(`ep_${prefix}`, { limit: 1000, cursor: page });
      count += listed.items.length;
      for (const item of listed.items) {
        const data = JSON.parse(item.payload).data;
        results += Array.isArray(data) ? data.length : 1;
      }
      page = listed.nextCursor ?? undefined;
    } while (page !== undefined);
    console.log(
      `deliveries ${name}: dispatch returned ${made}; ${count} deliveries of ${results} results, ` +
        `${keys} keys, ${(bytes / 1e6).toFixed(2)} MB: ${
          Math.round(bytes / count)
        } bytes a delivery, ${Math.round(bytes / results)} a result`,
    );
    deliveryRuns[name] = { deliveries: count, results, keys, bytes };
  }
  results.deliveries = deliveryRuns;
} finally {
  await bridge.close();
  await server.stop();
}
console.log(await writeResults("result_log_memory", results));
