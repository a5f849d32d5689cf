/**
 * Redis store benchmark, in two parts:
 *
 * 1. Cost per request: store round trips (HTTP requests to the Upstash endpoint) and billed
 *    Redis commands (one per `POST /`, one per command of a `/pipeline` or `/multi-exec` body)
 *    for ingest batches of 1, 100 and 1,000 events of the `bench` stream (4 counters), counted
 *    by a proxy in front of the bridge.
 * 2. Throughput: events/s over real HTTP on loopback, batches of 100 events, the app on the
 *    Redis store against the app on the memory store, alternating in the same run.
 *
 * redis-server, the Upstash REST bridge and each app run in their own process; this process is
 * the load generator.
 *
 * `deno task bench:redis [seconds-per-round] [rounds]`
 */
import { startRedisServer } from "../tools/redis_server.ts";
import {
  closedLoop,
  machineInfo,
  makeBatch,
  median,
  percentile,
  type ServerProcess,
  startBridge,
  startServer,
  table,
  writeResults,
} from "./_shared.ts";
import {
  billedCommands,
  commandNames,
  type ProxiedRequest,
  startUpstashProxy,
} from "../tests/_upstash_proxy.ts";

const SECONDS = Number(Deno.args[0] ?? 5);
const ROUNDS = Number(Deno.args[1] ?? 3);
const CONCURRENCY = 16;
const BATCH = 100;
const STREAM = "bench";

async function request(url: string, init?: RequestInit): Promise<number> {
  const res = await fetch(url, init);
  await res.arrayBuffer();
  return res.status;
}

function postBatch(server: ServerProcess, size: number): Promise<number> {
  return request(`${server.url}/v1/streams/${STREAM}/events`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: makeBatch(size),
  });
}

interface CostRow {
  what: string;
  requests: number;
  roundTrips: number;
  billed: number;
  kilobytes: number;
  commands: string;
}

function costRow(what: string, requests: ProxiedRequest[][]): CostRow {
  const roundTrips = requests.map((list) => list.length);
  const billed = requests.map((list) => list.reduce((sum, item) => sum + billedCommands(item), 0));
  const bytes = requests.map((list) => list.reduce((sum, item) => sum + item.bytes, 0));
  const shapes = new Set(
    requests.map((list) =>
      list.map((item) => `${item.path} [${commandNames(item).join(", ")}]`).join(" + ")
    ),
  );
  const average = (values: number[]) => values.reduce((a, b) => a + b, 0) / values.length;
  return {
    what,
    requests: requests.length,
    roundTrips: average(roundTrips),
    billed: average(billed),
    kilobytes: average(bytes) / 1024,
    commands: [...shapes].join(" | "),
  };
}

/** Part 1: what each kind of request costs in round trips and billed commands. */
async function measureCosts(bridgeUrl: string, token: string): Promise<CostRow[]> {
  const proxy = await startUpstashProxy({ targetUrl: bridgeUrl });
  const server = await startServer("pipeline-redis", {
    env: {
      UPSTASH_REDIS_REST_URL: proxy.url,
      UPSTASH_REDIS_REST_TOKEN: token,
      EDGESTREAM_PREFIX: "costs",
    },
  });
  const rows: CostRow[] = [];
  const record = async (what: string, times: number, send: () => Promise<number>) => {
    const seen: ProxiedRequest[][] = [];
    for (let i = 0; i < times; i++) {
      proxy.take();
      const status = await send();
      if (status >= 300) throw new Error(`${what}: status ${status}`);
      seen.push(proxy.take());
    }
    rows.push(costRow(what, seen));
  };
  try {
    await record("ingest 1 event, script not cached yet", 1, () => postBatch(server, 1));
    for (const size of [1, 100, 1000]) {
      await record(
        `ingest ${size} event${size === 1 ? "" : "s"}`,
        5,
        () => postBatch(server, size),
      );
    }
    const read = () => request(`${server.url}/v1/streams/${STREAM}/counters/count_per_minute`);
    await record("read one counter, script not cached yet", 1, read);
    await record("read one counter (GET …/counters/count_per_minute)", 3, read);
    const sweep = () => request(`${server.url}/v1/admin/sweep`, { method: "POST" });
    await record("sweep, script not cached yet", 1, sweep);
    await record("sweep (POST /v1/admin/sweep)", 3, sweep);
  } finally {
    await server.stop();
    await proxy.close();
  }
  return rows;
}

interface LoadResult {
  eventsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

async function load(server: ServerProcess, seconds: number): Promise<LoadResult> {
  const result = await closedLoop(`${server.url}/v1/streams/${STREAM}/events`, {
    clients: CONCURRENCY,
    batch: BATCH,
    seconds,
  });
  if (result.errors > 0) throw new Error(`${result.errors} requests failed: ${result.firstError}`);
  return {
    eventsPerSecond: result.events / result.seconds,
    p50Ms: percentile(result.latencies, 0.5),
    p99Ms: percentile(result.latencies, 0.99),
  };
}

async function measureThroughput(mode: string, env: Record<string, string>): Promise<LoadResult> {
  const server = await startServer(mode, { env });
  try {
    await load(server, 1); // warm-up: JIT, connections, script cache
    return await load(server, SECONDS);
  } finally {
    await server.stop();
  }
}

const machine = await machineInfo();
const redis = await startRedisServer();
const token = crypto.randomUUID().replaceAll("-", "");
const bridge = await startBridge(redis.url, token);
try {
  const costs = await measureCosts(bridge.url, token);
  console.log(
    `Store cost per request (stream '${STREAM}', 4 counters; @upstash/redis as storeFromEnv builds it):`,
  );
  console.log(table(
    ["request", "samples", "round trips", "billed commands", "KiB sent", "what was sent"],
    costs.map((row) => [
      row.what,
      String(row.requests),
      row.roundTrips.toFixed(2),
      row.billed.toFixed(2),
      row.kilobytes.toFixed(1),
      row.commands,
    ]),
    [0, 5],
  ));
  console.log();

  const memory: LoadResult[] = [];
  const shared: LoadResult[] = [];
  for (let round = 1; round <= ROUNDS; round++) {
    memory.push(await measureThroughput("pipeline", {}));
    shared.push(
      await measureThroughput("pipeline-redis", {
        UPSTASH_REDIS_REST_URL: bridge.url,
        UPSTASH_REDIS_REST_TOKEN: token,
        EDGESTREAM_PREFIX: `round${round}`,
      }),
    );
    console.log(
      `round ${round}: memory ${memory.at(-1)!.eventsPerSecond.toFixed(0)} events/s, redis ${
        shared.at(-1)!.eventsPerSecond.toFixed(0)
      } events/s`,
    );
  }
  const summary = (name: string, results: LoadResult[]) => [
    name,
    median(results.map((r) => r.eventsPerSecond)).toFixed(0),
    results.map((r) => r.eventsPerSecond.toFixed(0)).join(" / "),
    median(results.map((r) => r.p50Ms)).toFixed(1),
    median(results.map((r) => r.p99Ms)).toFixed(1),
  ];
  console.log();
  console.log(
    `Ingest throughput (batches of ${BATCH}, 4 counters, ${CONCURRENCY} connections, ${SECONDS}s x ${ROUNDS} rounds, loopback):`,
  );
  console.log(table(
    ["store", "events/s (median)", "per round", "p50 ms/request", "p99 ms/request"],
    [summary("memory", memory), summary("redis (bridge)", shared)],
    [0, 2],
  ));
  const ratio = median(shared.map((r) => r.eventsPerSecond)) /
    median(memory.map((r) => r.eventsPerSecond));
  console.log(`ratio redis/memory: ${ratio.toFixed(2)}`);
  const path = await writeResults("redis", {
    bench: "redis",
    machine,
    batch: BATCH,
    connections: CONCURRENCY,
    seconds: SECONDS,
    rounds: { memory, redis: shared },
    ratio,
  });
  console.log(`\nresults: ${path}`);
} finally {
  await bridge.stop();
  await redis.stop();
}
