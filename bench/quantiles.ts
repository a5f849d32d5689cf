/**
 * Quantiles counter benchmark (`bench/quantiles_config.json`: a count and
 * two quantiles counters, one grouped by 20 endpoints, one hopping):
 *
 * 1. Events/s of `ingestItems` in this process, batches of 100 lognormal
 *    latencies, on the memory store and on the Redis store (a real
 *    redis-server behind the Upstash REST bridge), and Redis µs per event.
 * 2. Bytes per pane of a quantiles counter on Redis: `MEMORY USAGE` of a
 *    group's pane fields' share and of its bucket hash (`q:…`), after
 *    1,000 and 100,000 values in one pane and group.
 *
 * The 4-counter config of the other benchmarks stays as it is. Results go to
 * `bench/results/quantiles-<timestamp>.json` with the machine they ran on.
 *
 * `deno run -A bench/quantiles.ts [seconds-per-run]`
 */
import { Redis } from "@upstash/redis";
import { compileConfig } from "../src/config/mod.ts";
import { ingestItems } from "../src/ingest/mod.ts";
import { MemoryStore, RedisStore, type Store } from "../src/store/mod.ts";
import { startRedisServer } from "../tools/redis_server.ts";
import { startUpstashBridge } from "../tools/upstash_bridge.ts";
import { withDirect } from "../tests/_redis.ts";
import { machineInfo, writeResults } from "./_shared.ts";

const SECONDS = Number(Deno.args[0] ?? 5);
const BATCH = 100;
const config = JSON.parse(
  await Deno.readTextFile(new URL("./quantiles_config.json", import.meta.url)),
);
const stream = compileConfig(config).get("latency")!;

let seq = 0;
function batch(nowMs: number) {
  return Array.from({ length: BATCH }, () => {
    seq += 1;
    const normal = Math.sqrt(-2 * Math.log(1 - Math.random())) *
      Math.cos(2 * Math.PI * Math.random());
    return {
      ok: true as const,
      value: {
        id: `e${seq}`,
        ts: nowMs - Math.floor(Math.random() * 20_000),
        endpoint: `/api/${seq % 20}`,
        ms: Math.round(Math.exp(3 + normal) * 1000) / 1000,
      },
    };
  });
}

async function throughput(store: Store): Promise<number> {
  const until = performance.now() + SECONDS * 1000;
  const started = performance.now();
  let events = 0;
  while (performance.now() < until) {
    const nowMs = Date.now();
    await ingestItems(stream, batch(nowMs), { store, nowMs });
    events += BATCH;
  }
  return events / ((performance.now() - started) / 1000);
}

const machine = await machineInfo();
const server = await startRedisServer();
const bridge = await startUpstashBridge({ redisUrl: server.url, token: "bench" });
const panes: Record<string, number>[] = [];
let rates: Record<string, number> = {};
try {
  const redis = new Redis({ url: bridge.url, token: bridge.token, enableTelemetry: false });
  const memoryRate = await throughput(new MemoryStore());
  const redisRate = await throughput(new RedisStore(redis, { prefix: "tp" }));
  console.log(`| store | events/s (batches of ${BATCH}) | µs per event |`);
  console.log("|---|---:|---:|");
  console.log(`| memory | ${Math.round(memoryRate)} | ${(1e6 / memoryRate).toFixed(1)} |`);
  console.log(`| redis | ${Math.round(redisRate)} | ${(1e6 / redisRate).toFixed(1)} |`);
  rates = { memoryEventsPerSecond: memoryRate, redisEventsPerSecond: redisRate };

  // Bytes per pane: one group, one pane, n values.
  const one = compileConfig({
    streams: {
      q: {
        time: { field: "ts", lateness: "1h" },
        counters: {
          p: { window: { tumbling: "1h" }, groupBy: ["g"], aggregate: { quantiles: "ms" } },
        },
      },
    },
  }).get("q")!;
  console.log(
    "\n| values in the pane | buckets | q: hash bytes | pane hash bytes | memory store JSON bytes |",
  );
  console.log("|---:|---:|---:|---:|---:|");
  for (const n of [1_000, 100_000]) {
    const prefix = `b${n}`;
    const store = new RedisStore(redis, { prefix });
    const nowMs = Date.parse("2026-01-01T00:30:00Z");
    const memory = new MemoryStore({ now: () => nowMs });
    for (let i = 0; i < n; i += 1000) {
      const items = Array.from({ length: Math.min(1000, n - i) }, () => {
        const normal = Math.sqrt(-2 * Math.log(1 - Math.random())) *
          Math.cos(2 * Math.PI * Math.random());
        return { ok: true as const, value: { ts: nowMs, g: "x", ms: Math.exp(3 + normal) } };
      });
      await ingestItems(one, items, { store, nowMs });
      await ingestItems(one, items, { store: memory, nowMs });
    }
    const pane = Date.parse("2026-01-01T00:00:00Z");
    const [bins, sketchBytes, paneBytes] = await withDirect(server.url, async (send) => [
      Number(await send("HLEN", `${prefix}:{q}:q:p:${pane}:["x"]`)),
      Number(await send("MEMORY", "USAGE", `${prefix}:{q}:q:p:${pane}:["x"]`, "SAMPLES", "0")),
      Number(await send("MEMORY", "USAGE", `${prefix}:{q}:p:p:${pane}`, "SAMPLES", "0")),
    ]);
    const [window] = await memory.readWindows("q", one.counters[0].meta, [{
      start: pane,
      panes: [pane],
    }]);
    const memoryBytes = JSON.stringify(window.state).length;
    console.log(`| ${n} | ${bins} | ${sketchBytes} | ${paneBytes} | ${memoryBytes} |`);
    panes.push({ values: n, buckets: bins, sketchBytes, paneBytes, memoryBytes });
  }
} finally {
  await bridge.close();
  await server.stop();
}
console.log(`\nresults: ${await writeResults("quantiles", {
  bench: "quantiles",
  machine,
  settings: { seconds: SECONDS, batch: BATCH },
  ...rates,
  panes,
})}`);
