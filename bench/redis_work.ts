/**
 * Redis work per event: what the apply script costs redis-server, from the `INFO commandstats`
 * delta of `evalsha` (µs the server spent in it), with 1, 4 and 16 counters, at batches of 100
 * events and per single-event call, and what one distinct counter (PFADD) adds.
 *
 * One client sends its requests one after another (so group commit merges nothing: each request
 * is one EVALSHA) to `src/main.ts`'s server on redis-server through the Upstash REST bridge. The
 * streams are the `bench` stream of `bench/config.json` (CEL filter + set, dedupe) with:
 * - `1 count`: its tumbling count only;
 * - `1 distinct`: its hopping distinct only (the PFADD cost);
 * - `4`: its 4 counters (tumbling count, hopping sum, sliding count, hopping distinct);
 * - `4 no distinct`: the 3 others, so `4` minus this is the distinct counter's share;
 * - `16`: its 4 counters four times over.
 *
 * Also: the Redis commands the script ran (`redis.call`, counted in commandstats too), which do
 * not depend on the machine's load, and redis-server's main-thread CPU time (`INFO cpu`: all its
 * work, reading requests included), which depends on it less than the clock does.
 *
 * redis-server times a command by the clock, so on a busy machine the time it lost to other
 * processes counts too: each figure is the least of `--rounds` rounds. A call that is preempted
 * loses a whole time slice, which weighs on the mean of a few hundred calls: the median call
 * (from `SLOWLOG`, which logs every call's µs here) leaves those out.
 *
 * Where Redis runs for users (Upstash, a Redis host) it has a machine of its own. Here it shares
 * one with the server, the bridge and this bench, which between two calls fill the caches the
 * script's code and data were in: `--cores split` (the default on 2 or more CPUs) keeps
 * redis-server alone on the last CPU and the rest on the others (`taskset`), `--cores shared`
 * lets every process run anywhere, as before.
 *
 * `deno task bench:redis-work [--requests 40] [--singles 300] [--rounds 3] [--only 4,16]
 * [--cores split|shared]`
 */
import { parseArgs } from "node:util";
import { createClient } from "redis";
import { startRedisServer } from "../tools/redis_server.ts";
import {
  allowedCpus,
  commandStats,
  commandStatsDelta,
  loadAverageText,
  machineInfo,
  makeBatch,
  makeEvent,
  redisCpuSeconds,
  startBridge,
  startServer,
  table,
  writeResults,
} from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    requests: { type: "string", default: "40" },
    singles: { type: "string", default: "300" },
    rounds: { type: "string", default: "3" },
    only: { type: "string" },
    cores: { type: "string", default: "split" },
  },
});
if (flags.cores !== "split" && flags.cores !== "shared") {
  console.error(`--cores must be split or shared, got ${flags.cores}`);
  Deno.exit(2);
}
const BATCH_REQUESTS = Number(flags.requests);
const SINGLE_REQUESTS = Number(flags.singles);
const ROUNDS = Number(flags.rounds);
const TOKEN = crypto.randomUUID().replaceAll("-", "");

const base = JSON.parse(await Deno.readTextFile(new URL("./config.json", import.meta.url)))
  .streams.bench;
const all = base.counters as Record<string, unknown>;
const pick = (...names: string[]) => Object.fromEntries(names.map((name) => [name, all[name]]));
const variants = new Map<string, Record<string, unknown>>([
  ["1 count", pick("count_per_minute")],
  ["1 distinct", pick("users_hourly")],
  ["4", all],
  ["4 no distinct", pick("count_per_minute", "revenue_hourly", "big_last_10m")],
  [
    "16",
    Object.fromEntries(
      [0, 1, 2, 3].flatMap((copy) =>
        Object.entries(all).map(([name, counter]) => [`${name}_${copy}`, counter])
      ),
    ),
  ],
]);
// `--only 4,16`: just those rows (a quicker A/B of one figure).
if (flags.only !== undefined) {
  const wanted = new Set(flags.only.split(","));
  for (const name of [...variants.keys()]) if (!wanted.has(name)) variants.delete(name);
}

interface Row {
  counters: string;
  usecPerEventAtBatch100: number;
  usecPerBatch100Call: number;
  usecPerSingleEventCall: number;
  callsPerBatchRequest: number;
  callsPerSingleRequest: number;
  innerCallsPerEventAtBatch100: number;
  innerCallsPerSingleEventCall: number;
  cpuUsecPerEventAtBatch100: number;
  cpuUsecPerSingleEventCall: number;
  medianUsecPerBatch100Call: number;
  medianUsecPerSingleEventCall: number;
}

/** The part of a direct `redis` client the bench uses. */
type Direct = { sendCommand(args: string[]): Promise<unknown> };

/** The µs of each EVALSHA redis-server logged since the last `SLOWLOG RESET`. */
async function evalshaDurations(direct: Direct): Promise<number[]> {
  const entries = await direct.sendCommand(["SLOWLOG", "GET", "-1"]) as unknown[][];
  return entries
    .filter((entry) => String((entry[3] as unknown[])[0]).toLowerCase() === "evalsha")
    .map((entry) => Number(entry[2]));
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

async function send(url: string, body: string): Promise<void> {
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body,
  });
  const text = await res.text();
  if (res.status !== 202) throw new Error(`Ingest answered ${res.status}: ${text}`);
}

/**
 * While `run` sends its requests: evalsha's µs and calls, the commands the scripts ran (counted
 * in commandstats too), and redis-server's main-thread CPU µs (all its work, network included).
 */
async function evalshaDuring(port: number, direct: Direct, run: () => Promise<void>) {
  await direct.sendCommand(["SLOWLOG", "RESET"]);
  const before = await commandStats(port);
  const cpuBefore = await redisCpuSeconds(port);
  await run();
  const medianUsec = median(await evalshaDurations(direct));
  const cpuUsec = (await redisCpuSeconds(port) - cpuBefore) * 1e6;
  const delta = commandStatsDelta(before, await commandStats(port));
  let inner = 0;
  for (const [name, stat] of delta) if (name !== "evalsha" && name !== "info") inner += stat.calls;
  return { ...(delta.get("evalsha") ?? { calls: 0, usec: 0 }), inner, cpuUsec, medianUsec };
}

async function measure(
  name: string,
  round: number,
  redisPort: number,
  direct: Direct,
  bridgeUrl: string,
): Promise<Row> {
  const configPath = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(
    configPath,
    JSON.stringify({ streams: { bench: { ...base, counters: variants.get(name) } } }),
  );
  const server = await startServer("main", {
    env: {
      PORT: "0",
      HOST: "127.0.0.1",
      EDGESTREAM_CONFIG: configPath,
      EDGESTREAM_SWEEP_EVERY: "0s",
      UPSTASH_REDIS_REST_URL: bridgeUrl,
      UPSTASH_REDIS_REST_TOKEN: TOKEN,
      EDGESTREAM_PREFIX: `work${round}${name.replaceAll(" ", "")}`,
    },
  });
  try {
    const url = `${server.url}/v1/streams/bench/events`;
    for (let i = 0; i < 20; i++) await send(url, makeBatch(100)); // warm-up, script cached
    const batch = await evalshaDuring(redisPort, direct, async () => {
      for (let i = 0; i < BATCH_REQUESTS; i++) await send(url, makeBatch(100));
    });
    const single = await evalshaDuring(redisPort, direct, async () => {
      for (let i = 0; i < SINGLE_REQUESTS; i++) await send(url, makeEvent());
    });
    return {
      counters: name,
      usecPerEventAtBatch100: batch.usec / (BATCH_REQUESTS * 100),
      usecPerBatch100Call: batch.usec / batch.calls,
      usecPerSingleEventCall: single.usec / single.calls,
      callsPerBatchRequest: batch.calls / BATCH_REQUESTS,
      callsPerSingleRequest: single.calls / SINGLE_REQUESTS,
      innerCallsPerEventAtBatch100: batch.inner / (BATCH_REQUESTS * 100),
      innerCallsPerSingleEventCall: single.inner / single.calls,
      cpuUsecPerEventAtBatch100: batch.cpuUsec / (BATCH_REQUESTS * 100),
      cpuUsecPerSingleEventCall: single.cpuUsec / single.calls,
      medianUsecPerBatch100Call: batch.medianUsec,
      medianUsecPerSingleEventCall: single.medianUsec,
    };
  } finally {
    await server.stop();
    await Deno.remove(configPath);
  }
}

/** Whether `taskset` (util-linux) can be run here. */
function hasTaskset(): boolean {
  try {
    return new Deno.Command("taskset", { args: ["-V"], stdout: "null", stderr: "null" })
      .outputSync().success;
  } catch {
    return false;
  }
}

/** Keeps every thread of process `pid` on the CPUs `list` (`taskset -c` syntax: "0", "0-2"). */
async function pin(pid: number, list: string): Promise<void> {
  const { success, stderr } = await new Deno.Command("taskset", {
    args: ["-a", "-p", "-c", list, String(pid)],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`taskset ${list} ${pid}: ${new TextDecoder().decode(stderr)}`);
}

/** The CPUs this process may run on (`Cpus_allowed_list`, e.g. "4-5,7"), in order; [] if unknown. */

const machine = await machineInfo();
const cpus = allowedCpus();
const split = flags.cores === "split" && cpus.length >= 2 && hasTaskset();
const redisCpu = String(cpus.at(-1));
const appCpus = cpus.slice(0, -1).join(",");
const coresNote = split
  ? `redis-server alone on CPU ${redisCpu}; the server, the bridge and this bench on CPU ${appCpus}`
  : `every process on any CPU${
    flags.cores === "split" ? " (no taskset, or fewer than 2 CPUs allowed: not split)" : ""
  }`;
// The server and the bridge started below inherit this process's CPUs.
if (split) await pin(Deno.pid, appCpus);
const redis = await startRedisServer();
const bridge = await startBridge(redis.url, TOKEN);
const measured: Row[][] = [];
// Every EVALSHA is logged with its µs (the scripts' own commands are not), so its median is known.
const direct = createClient({ url: redis.url });
await direct.connect();
try {
  if (split) {
    const info = String(await direct.sendCommand(["INFO", "server"]));
    await pin(Number(/process_id:(\d+)/.exec(info)![1]), redisCpu);
  }
  await direct.sendCommand(["CONFIG", "SET", "slowlog-log-slower-than", "0"]);
  await direct.sendCommand(["CONFIG", "SET", "slowlog-max-len", "10000"]);
  for (let round = 1; round <= ROUNDS; round++) {
    measured.push([]);
    for (const name of variants.keys()) {
      measured.at(-1)!.push(await measure(name, round, redis.port, direct, bridge.url));
    }
  }
} finally {
  await direct.quit();
  await bridge.stop();
  await redis.stop();
}
// redis-server times a command by the clock, so time it lost to other processes counts too:
// the least of the rounds is the closest to its own work.
const rows: Row[] = [...variants.keys()].map((name, i) => {
  const of = measured.map((round) => round[i]);
  const least = (get: (row: Row) => number) => Math.min(...of.map(get));
  return {
    counters: name,
    usecPerEventAtBatch100: least((row) => row.usecPerEventAtBatch100),
    usecPerBatch100Call: least((row) => row.usecPerBatch100Call),
    usecPerSingleEventCall: least((row) => row.usecPerSingleEventCall),
    callsPerBatchRequest: of[0].callsPerBatchRequest,
    callsPerSingleRequest: of[0].callsPerSingleRequest,
    innerCallsPerEventAtBatch100: of[0].innerCallsPerEventAtBatch100,
    innerCallsPerSingleEventCall: of[0].innerCallsPerSingleEventCall,
    cpuUsecPerEventAtBatch100: least((row) => row.cpuUsecPerEventAtBatch100),
    cpuUsecPerSingleEventCall: least((row) => row.cpuUsecPerSingleEventCall),
    medianUsecPerBatch100Call: least((row) => row.medianUsecPerBatch100Call),
    medianUsecPerSingleEventCall: least((row) => row.medianUsecPerSingleEventCall),
  };
});
console.log(
  `machine: ${machine.cpu}, ${machine.cores} cores, load average at start ${
    loadAverageText(machine)
  }`,
);
console.log(`cores: ${coresNote}`);
console.log(
  `redis-server µs in the apply script (INFO commandstats of evalsha; ${BATCH_REQUESTS} batches of 100, ${SINGLE_REQUESTS} single-event requests, one at a time; least of ${ROUNDS} rounds):`,
);
console.log(table(
  [
    "counters",
    "µs/event at batch 100",
    "µs per 100-event call",
    "µs per single-event call",
    "median µs per 100-event call",
    "median µs per single-event call",
    "redis.call/event at 100",
    "redis.call per single call",
    "CPU µs/event at 100",
    "CPU µs per single call",
    "evalsha/request (100, 1)",
  ],
  rows.map((row) => [
    row.counters,
    row.usecPerEventAtBatch100.toFixed(2),
    row.usecPerBatch100Call.toFixed(0),
    row.usecPerSingleEventCall.toFixed(1),
    row.medianUsecPerBatch100Call.toFixed(0),
    row.medianUsecPerSingleEventCall.toFixed(1),
    row.innerCallsPerEventAtBatch100.toFixed(2),
    row.innerCallsPerSingleEventCall.toFixed(1),
    row.cpuUsecPerEventAtBatch100.toFixed(2),
    row.cpuUsecPerSingleEventCall.toFixed(1),
    `${row.callsPerBatchRequest.toFixed(2)}, ${row.callsPerSingleRequest.toFixed(2)}`,
  ]),
  [0],
));
const four = rows.find((row) => row.counters === "4");
const noDistinct = rows.find((row) => row.counters === "4 no distinct");
if (four && noDistinct) {
  console.log(
    `distinct counter (PFADD) share at 4 counters: ${
      (four.usecPerBatch100Call - noDistinct.usecPerBatch100Call).toFixed(0)
    } µs per 100-event call, ${
      (four.usecPerSingleEventCall - noDistinct.usecPerSingleEventCall).toFixed(1)
    } µs per single-event call`,
  );
}
console.log(`targets: <= 5 µs/event at 4 counters, <= 60 µs per single-event call`);
console.log(
  `\nresults: ${await writeResults("redis_work", {
    bench: "redis_work",
    machine,
    cores: { mode: split ? "split" : "shared", note: coresNote },
    rows,
    rounds: measured,
  })}`,
);
