/**
 * The ingest benchmark, on what users run: `src/main.ts`'s server (logs, sweep timer, webhooks
 * service, live hub; group commit on Redis) with the `bench` stream of `bench/config.json` (dedupe
 * by id, a CEL filter and a CEL set, 4 counters: tumbling count, hopping sum, sliding count,
 * hopping distinct), API keys on (`EDGESTREAM_KEYS`, every request with `Authorization`), no
 * idempotency keys. Over real HTTP on loopback, 16 closed-loop clients, batches of 100 events
 * and single-event requests, against, in the same run:
 *
 * - parse-only: a Deno + Hono handler that parses the JSON and replies 202 (the physical limit);
 * - the naive peer (`_naive_peer.ts`): zod + one `@upstash/redis` command per event and counter,
 *   auto-pipelined, on the same Redis.
 *
 * Redis runs as redis-server behind the Upstash REST bridge, with a counting proxy in front of
 * the bridge (billed commands: one per `POST /`, one per command of a `/pipeline` body); Redis
 * work is the `INFO commandstats` delta of the redis-server (µs of `evalsha` for edgestream, of
 * every command for the peer). Every server, the bridge and the proxy run in their own process;
 * this one is the load generator.
 *
 * Each run also reports the CPU the server process (all its threads) and this load generator
 * used per request (Linux `/proc`, 10 ms ticks): a ratio is the servers' only where the load
 * generator is not the one at its limit (with two cores, parse-only's is: the CPU ratio says
 * what the server alone costs).
 *
 * Results go to `bench/results/run-<timestamp>.json` with the machine they ran on.
 *
 * `deno task bench [--seconds 5] [--rounds 3] [--batches 100,1] [--only memory,redis,naive]
 * [--idempotency] [--limits]`: `--idempotency` adds edgestream runs whose requests each carry a
 * fresh `Idempotency-Key`, `--limits` runs on the same stream with a rate limit it never reaches
 * (1M events/s), to show what each costs.
 */
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { startRedisServer } from "../tools/redis_server.ts";
import {
  closedLoop,
  type CommandStats,
  commandStats,
  commandStatsDelta,
  loadAverageText,
  machineInfo,
  median,
  percentile,
  processCpuSeconds,
  type ServerProcess,
  startBridge,
  startProxy,
  startServer,
  table,
  writeResults,
} from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "5" },
    rounds: { type: "string", default: "3" },
    batches: { type: "string", default: "100,1" },
    only: { type: "string", default: "memory,redis,naive" },
    idempotency: { type: "boolean", default: false },
    limits: { type: "boolean", default: false },
    config: { type: "string" },
  },
});
const SECONDS = Number(flags.seconds);
const ROUNDS = Number(flags.rounds);
const BATCHES = flags.batches.split(",").map(Number);
const ONLY = new Set(flags.only.split(","));
const CLIENTS = 16;
const STREAM = "bench";
/** The same stream with a rate limit it never reaches: what checking the bucket costs. */
const LIMITED_STREAM = "bench_limited";
const CONFIG = flags.limits ? await withLimitedStream() : (flags.config ??
  fileURLToPath(new URL("./config.json", import.meta.url)));

/** A copy of the config with {@linkcode LIMITED_STREAM} added, in a temporary file. */
async function withLimitedStream(): Promise<string> {
  const path = flags.config ?? fileURLToPath(new URL("./config.json", import.meta.url));
  const config = JSON.parse(await Deno.readTextFile(path));
  config.streams[LIMITED_STREAM] = {
    ...config.streams[STREAM],
    limits: { eventsPerSecond: 1_000_000, burst: 1_000_000 },
  };
  const file = await Deno.makeTempFile({ prefix: "edgestream-bench-", suffix: ".json" });
  await Deno.writeTextFile(file, JSON.stringify(config));
  return file;
}
const KEY = crypto.randomUUID().replaceAll("-", "");
const TOKEN = crypto.randomUUID().replaceAll("-", "");

interface Subject {
  name: string;
  mode: "baseline" | "main" | "naive";
  redis: boolean;
  idempotency: boolean;
  /** The stream sent to. @default {STREAM} */
  stream?: string;
}

const subjects: Subject[] = [
  { name: "parse-only", mode: "baseline", redis: false, idempotency: false },
];
if (ONLY.has("memory")) {
  subjects.push({ name: "edgestream memory", mode: "main", redis: false, idempotency: false });
  if (flags.idempotency) {
    subjects.push({
      name: "edgestream memory + idempotency keys",
      mode: "main",
      redis: false,
      idempotency: true,
    });
  }
}
if (ONLY.has("redis")) {
  subjects.push({ name: "edgestream redis", mode: "main", redis: true, idempotency: false });
  if (flags.idempotency) {
    subjects.push({
      name: "edgestream redis + idempotency keys",
      mode: "main",
      redis: true,
      idempotency: true,
    });
  }
}
if (flags.limits) {
  for (const redis of [false, true]) {
    if (!ONLY.has(redis ? "redis" : "memory")) continue;
    subjects.push({
      name: `edgestream ${redis ? "redis" : "memory"} + rate limit`,
      mode: "main",
      redis,
      idempotency: false,
      stream: LIMITED_STREAM,
    });
  }
}
if (ONLY.has("naive")) {
  subjects.push({ name: "naive peer redis", mode: "naive", redis: true, idempotency: false });
}

/** One subject's measurement in one round at one batch size. */
interface Measurement {
  eventsPerSecond: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU µs the server process used per request (all threads; undefined without `/proc`). */
  serverCpuUsecPerRequest?: number;
  /** CPU µs this load generator used per request. */
  loadCpuUsecPerRequest?: number;
  /** Cores the server process kept busy on average (1 = one core all the time). */
  serverCores?: number;
  billedPerRequest?: number;
  redisUsecPerEvent?: number;
  redisUsecPerRequest?: number;
  commands?: Record<string, number>;
  redisCommands?: Record<string, { calls: number; usec: number }>;
}

interface Redis {
  port: number;
  proxyUrl: string;
  control: string;
}

async function take(
  control: string,
): Promise<{ billed: number; commands: Record<string, number> }> {
  return await (await fetch(`${control}/take`)).json();
}

function redisWork(subject: Subject, delta: CommandStats): number {
  let usec = 0;
  for (const [name, stat] of delta) {
    // edgestream's work per event is its apply script; the peer's is every command it sends.
    if (subject.mode === "naive" ? name !== "info" : name === "evalsha") usec += stat.usec;
  }
  return usec;
}

let prefix = 0;

/** CPU seconds of the server and of this process, or undefined where `/proc` is not there. */
function cpuNow(server: ServerProcess): { server: number; load: number } | undefined {
  try {
    return { server: processCpuSeconds(server.pid), load: processCpuSeconds(Deno.pid) };
  } catch {
    return undefined;
  }
}

async function measure(subject: Subject, batch: number, redis: Redis): Promise<Measurement> {
  prefix += 1;
  const env: Record<string, string> = {
    PORT: "0",
    HOST: "127.0.0.1",
    EDGESTREAM_CONFIG: CONFIG,
    EDGESTREAM_KEYS: `ingest:${KEY}`,
    BENCH_KEY: KEY,
  };
  if (subject.redis) {
    env.UPSTASH_REDIS_REST_URL = redis.proxyUrl;
    env.UPSTASH_REDIS_REST_TOKEN = TOKEN;
    env.EDGESTREAM_PREFIX = `b${prefix}`;
  }
  const server: ServerProcess = await startServer(subject.mode, { env });
  try {
    let sequence = 0;
    const options = {
      clients: CLIENTS,
      batch,
      headers: { Authorization: `Bearer ${KEY}` },
      headersOf: subject.idempotency
        ? () => ({ "Idempotency-Key": `${KEY}-${prefix}-${++sequence}` })
        : undefined,
    };
    const url = `${server.url}/v1/streams/${subject.stream ?? STREAM}/events`;
    const warm = await closedLoop(url, { ...options, seconds: 1 });
    if (warm.errors > 0) throw new Error(`${subject.name}: ${warm.firstError}`);
    const statsBefore = subject.redis ? await commandStats(redis.port) : null;
    if (subject.redis) await take(redis.control);
    const cpuBefore = cpuNow(server);
    const result = await closedLoop(url, { ...options, seconds: SECONDS });
    const cpuAfter = cpuNow(server);
    if (result.errors > 0) {
      throw new Error(`${subject.name}: ${result.errors} requests failed, ${result.firstError}`);
    }
    const measurement: Measurement = {
      eventsPerSecond: result.events / result.seconds,
      requestsPerSecond: result.requests / result.seconds,
      p50Ms: percentile(result.latencies, 0.5),
      p99Ms: percentile(result.latencies, 0.99),
    };
    if (cpuBefore && cpuAfter) {
      const serverSeconds = cpuAfter.server - cpuBefore.server;
      measurement.serverCpuUsecPerRequest = serverSeconds * 1e6 / result.requests;
      measurement.loadCpuUsecPerRequest = (cpuAfter.load - cpuBefore.load) * 1e6 / result.requests;
      measurement.serverCores = serverSeconds / result.seconds;
    }
    if (subject.redis) {
      // Background work (sweep, live tail) is counted too: it is what the run cost.
      const counts = await take(redis.control);
      const delta = commandStatsDelta(statsBefore!, await commandStats(redis.port));
      const usec = redisWork(subject, delta);
      measurement.billedPerRequest = counts.billed / result.requests;
      measurement.redisUsecPerEvent = usec / result.events;
      measurement.redisUsecPerRequest = usec / result.requests;
      measurement.commands = counts.commands;
      measurement.redisCommands = Object.fromEntries(delta);
    }
    return measurement;
  } finally {
    await server.stop();
  }
}

const machine = await machineInfo();
console.log(
  `machine: ${machine.cpu}, ${machine.cores} cores, deno ${machine.deno.deno}, load average ${
    loadAverageText(machine)
  }`,
);
const needsRedis = subjects.some((subject) => subject.redis);
const redisServer = needsRedis ? await startRedisServer() : null;
const bridge = redisServer ? await startBridge(redisServer.url, TOKEN) : null;
const proxy = bridge ? await startProxy(bridge.url) : null;
const results: Record<string, Record<string, Measurement[]>> = {};
try {
  const redis: Redis = {
    port: redisServer?.port ?? 0,
    proxyUrl: proxy ? await (await fetch(`${proxy.url}/url`)).text() : "",
    control: proxy?.url ?? "",
  };
  for (let round = 1; round <= ROUNDS; round++) {
    for (const batch of BATCHES) {
      const line: string[] = [];
      for (const subject of subjects) {
        const measurement = await measure(subject, batch, redis);
        ((results[`batch ${batch}`] ??= {})[subject.name] ??= []).push(measurement);
        line.push(`${subject.name} ${measurement.eventsPerSecond.toFixed(0)}`);
      }
      console.log(`round ${round}, batch ${batch}: ${line.join(", ")} events/s`);
    }
  }
} finally {
  await proxy?.stop();
  await bridge?.stop();
  await redisServer?.stop();
}

/** Medians over rounds, per batch size and subject. */
const summary: Record<string, Record<string, Record<string, number>>> = {};
for (const [batchName, bySubject] of Object.entries(results)) {
  const rows: string[][] = [];
  const baseline = median(bySubject["parse-only"].map((m) => m.eventsPerSecond));
  const baselineCpu = median(
    bySubject["parse-only"].map((m) => m.serverCpuUsecPerRequest ?? NaN),
  );
  for (const [name, list] of Object.entries(bySubject)) {
    const pick = (get: (m: Measurement) => number | undefined) => {
      const values = list.map(get).filter((value): value is number => value !== undefined);
      return values.length > 0 ? median(values) : undefined;
    };
    const eventsPerSecond = pick((m) => m.eventsPerSecond)!;
    const row: Record<string, number> = {
      eventsPerSecond,
      ratioToParseOnly: eventsPerSecond / baseline,
      p50Ms: pick((m) => m.p50Ms)!,
      p99Ms: pick((m) => m.p99Ms)!,
    };
    const serverCpu = pick((m) => m.serverCpuUsecPerRequest);
    if (serverCpu !== undefined && !Number.isNaN(serverCpu)) {
      row.serverCpuUsecPerRequest = serverCpu;
      row.loadCpuUsecPerRequest = pick((m) => m.loadCpuUsecPerRequest)!;
      row.serverCores = pick((m) => m.serverCores)!;
      row.cpuRatioToParseOnly = baselineCpu / serverCpu;
    }
    const billed = pick((m) => m.billedPerRequest);
    const batch = Number(batchName.split(" ")[1]);
    if (billed !== undefined) {
      row.billedPerRequest = billed;
      row.billedPer1MEvents = billed / batch * 1_000_000;
      row.redisUsecPerEvent = pick((m) => m.redisUsecPerEvent)!;
      row.redisUsecPerRequest = pick((m) => m.redisUsecPerRequest)!;
    }
    (summary[batchName] ??= {})[name] = row;
    rows.push([
      name,
      row.eventsPerSecond.toFixed(0),
      row.ratioToParseOnly.toFixed(2),
      row.p50Ms.toFixed(1),
      row.p99Ms.toFixed(1),
      row.serverCpuUsecPerRequest?.toFixed(0) ?? "–",
      row.serverCores?.toFixed(2) ?? "–",
      row.loadCpuUsecPerRequest?.toFixed(0) ?? "–",
      row.cpuRatioToParseOnly?.toFixed(2) ?? "–",
      row.billedPerRequest?.toFixed(3) ?? "–",
      row.billedPer1MEvents?.toFixed(0) ?? "–",
      row.redisUsecPerEvent?.toFixed(1) ?? "–",
      row.redisUsecPerRequest?.toFixed(1) ?? "–",
    ]);
  }
  console.log();
  console.log(
    `${batchName} (${batchName === "batch 1" ? "single-event requests" : "events per request"}; ` +
      `keys on, CEL filter + set, 4 counters incl. hopping distinct, dedupe; ${CLIENTS} clients, ` +
      `${SECONDS}s x ${ROUNDS} rounds, medians):`,
  );
  console.log(table(
    [
      "server",
      "events/s",
      "ratio to parse-only",
      "p50 ms",
      "p99 ms",
      "server CPU µs/request",
      "server cores busy",
      "load generator CPU µs/request",
      "CPU ratio to parse-only",
      "billed cmds/request",
      "billed cmds/1M events",
      "redis µs/event",
      "redis µs/request",
    ],
    rows,
    [0],
  ));
  for (const [name, row] of Object.entries(summary[batchName])) {
    if (name === "parse-only") continue;
    const cpu = row.cpuRatioToParseOnly === undefined
      ? ""
      : ` (server CPU per request: ${row.cpuRatioToParseOnly.toFixed(2)})`;
    console.log(
      `ratio ${name} / parse-only (${batchName}): ${row.ratioToParseOnly.toFixed(2)}${cpu}`,
    );
  }
}
const path = await writeResults("run", {
  bench: "run",
  startedAt: new Date(performance.timeOrigin).toISOString(),
  machine,
  loadAverageAtEnd: Deno.loadavg(),
  settings: {
    seconds: SECONDS,
    rounds: ROUNDS,
    clients: CLIENTS,
    batches: BATCHES,
    config: CONFIG,
    stream: STREAM,
  },
  summary,
  rounds: results,
});
console.log(`\nresults: ${path}`);
