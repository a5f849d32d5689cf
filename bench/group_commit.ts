/**
 * Group commit benchmark: 16 concurrent clients, each sending one event per request in a closed
 * loop, against the real app on Redis (its own process, through the Upstash REST bridge), with
 * group commit off and on, alternating in the same run. A counting proxy in its own process in
 * front of the bridge counts billed Redis commands (one per `POST /`, one per command of a
 * `/pipeline` body).
 *
 * Reports per mode: requests/s, billed commands per request, and p50/p99 request latency; then
 * the ratios on/off. Targets (issue 14): ≤ 0.2 billed commands per request with group commit, and
 * its p99 at most 1.5× the p99 without.
 *
 * `deno task bench:group [seconds-per-round] [rounds]`
 */
import { startRedisServer } from "../tools/redis_server.ts";
import {
  closedLoop,
  machineInfo,
  median,
  percentile,
  startBridge,
  startProxy,
  startServer,
  table,
  writeResults,
} from "./_shared.ts";

const SECONDS = Number(Deno.args[0] ?? 5);
const ROUNDS = Number(Deno.args[1] ?? 3);
const CLIENTS = 16;
const STREAM = "bench";

interface Counts {
  requests: number;
  billed: number;
  commands: Record<string, number>;
}

interface RoundResult {
  requests: number;
  requestsPerSecond: number;
  billedPerRequest: number;
  p50Ms: number;
  p99Ms: number;
  commands: Record<string, number>;
}

async function take(control: string): Promise<Counts> {
  const res = await fetch(`${control}/take`);
  return await res.json();
}

/** Runs the closed-loop clients for `seconds`; returns latencies (ms) of the 202 replies, sorted. */
async function load(url: string, seconds: number): Promise<number[]> {
  const result = await closedLoop(`${url}/v1/streams/${STREAM}/events`, {
    clients: CLIENTS,
    batch: 1,
    seconds,
  });
  if (result.errors > 0) throw new Error(`${result.errors} requests failed: ${result.firstError}`);
  return result.latencies;
}

async function round(
  mode: "off" | "on",
  env: Record<string, string>,
  control: string,
): Promise<RoundResult> {
  const server = await startServer("pipeline-redis", { env: { ...env, BENCH_GROUP_COMMIT: mode } });
  try {
    await load(server.url, 1); // warm-up: JIT, connections, script cache
    await take(control);
    const started = performance.now();
    const latencies = await load(server.url, SECONDS);
    const elapsed = (performance.now() - started) / 1000;
    const counts = await take(control);
    return {
      requests: latencies.length,
      requestsPerSecond: latencies.length / elapsed,
      billedPerRequest: counts.billed / latencies.length,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      commands: counts.commands,
    };
  } finally {
    await server.stop();
  }
}

const machine = await machineInfo();
const redis = await startRedisServer();
const token = crypto.randomUUID().replaceAll("-", "");
const bridge = await startBridge(redis.url, token);
const proxy = await startProxy(bridge.url);
try {
  const proxyUrl = await (await fetch(`${proxy.url}/url`)).text();
  const results: Record<"off" | "on", RoundResult[]> = { off: [], on: [] };
  for (let number = 1; number <= ROUNDS; number++) {
    for (const mode of ["off", "on"] as const) {
      const result = await round(mode, {
        UPSTASH_REDIS_REST_URL: proxyUrl,
        UPSTASH_REDIS_REST_TOKEN: token,
        EDGESTREAM_PREFIX: `group${number}${mode}`,
      }, proxy.url);
      results[mode].push(result);
      console.log(
        `round ${number}, group commit ${mode}: ${
          result.requestsPerSecond.toFixed(0)
        } requests/s, ${result.billedPerRequest.toFixed(3)} billed commands/request, p50 ${
          result.p50Ms.toFixed(2)
        } ms, p99 ${result.p99Ms.toFixed(2)} ms, commands ${JSON.stringify(result.commands)}`,
      );
    }
  }
  const summary = (mode: "off" | "on") => {
    const list = results[mode];
    return {
      requestsPerSecond: median(list.map((r) => r.requestsPerSecond)),
      billedPerRequest: median(list.map((r) => r.billedPerRequest)),
      p50Ms: median(list.map((r) => r.p50Ms)),
      p99Ms: median(list.map((r) => r.p99Ms)),
    };
  };
  const off = summary("off");
  const on = summary("on");
  console.log();
  console.log(
    `Single-event ingest on Redis (stream '${STREAM}', 4 counters, dedupe; ${CLIENTS} closed-loop clients, ${SECONDS}s x ${ROUNDS} rounds, loopback, medians of rounds):`,
  );
  console.log(table(
    ["group commit", "requests/s", "billed commands/request", "p50 ms", "p99 ms"],
    [["off", off], ["on", on]].map(([name, row]) => {
      const r = row as typeof off;
      return [
        name as string,
        r.requestsPerSecond.toFixed(0),
        r.billedPerRequest.toFixed(3),
        r.p50Ms.toFixed(2),
        r.p99Ms.toFixed(2),
      ];
    }),
    [0],
  ));
  console.log(
    `on/off: billed commands per request ${on.billedPerRequest.toFixed(3)} (target <= 0.2), p50 ${
      (on.p50Ms / off.p50Ms).toFixed(2)
    }x, p99 ${(on.p99Ms / off.p99Ms).toFixed(2)}x (target <= 1.5x), requests/s ${
      (on.requestsPerSecond / off.requestsPerSecond).toFixed(2)
    }x`,
  );
  const path = await writeResults("group_commit", {
    bench: "group_commit",
    machine,
    clients: CLIENTS,
    seconds: SECONDS,
    rounds: results,
    medians: { off, on },
    ratios: { p50: on.p50Ms / off.p50Ms, p99: on.p99Ms / off.p99Ms },
  });
  console.log(`\nresults: ${path}`);
} finally {
  await proxy.stop();
  await bridge.stop();
  await redis.stop();
}
