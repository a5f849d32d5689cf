/**
 * What edgestream's request path costs over parse-only, in CPU time per request, without the
 * scheduling noise of a load generator in another process: `src/main.ts`'s `serve` (configured
 * from the environment like `deno task start`: the `bench` stream of `bench/config.json`, API keys
 * on, the request log written to stdout, the sweep timer, the webhook service, the live hub; the
 * memory store) and the parse-only Deno + Hono handler both listen in one child process, whose
 * closed-loop clients drive them in turn over loopback. The clients cost the same for both, so
 * the difference of the process's CPU time (`process.cpuUsage()`, every thread: GC included) per
 * request is what edgestream adds, and so is the difference of the heap bytes allocated per request
 * (V8's `total_allocated_bytes`: what the garbage collector pays for later, a figure the machine's
 * load does not move). Least of `--rounds` alternated rounds; the child's stdout (the request log)
 * goes to /dev/null.
 *
 * `deno run --allow-all bench/http_overhead.ts [--batch 1] [--seconds 3] [--rounds 5]`
 */
import process from "node:process";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Hono } from "hono";
import { configFromEnv } from "../src/env.ts";
import { serve } from "../src/main.ts";
import { configureLogging } from "../src/telemetry/logging.ts";
import {
  allocatedBytes,
  benchServerEnv,
  closedLoop,
  loadAverageText,
  machineInfo,
  table,
  writeResults,
} from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    batch: { type: "string", default: "1" },
    seconds: { type: "string", default: "3" },
    rounds: { type: "string", default: "5" },
    child: { type: "string" },
  },
});
const BATCH = Number(flags.batch);
const SECONDS = Number(flags.seconds);
const ROUNDS = Number(flags.rounds);
const CLIENTS = 16;

interface Figures {
  /** CPU µs per request of the process (clients + server), least of the rounds. */
  cpuPerRequest: { parseOnly: number; edgestream: number };
  /** Heap bytes allocated per request in the process (clients + server), least of the rounds. */
  bytesPerRequest: { parseOnly: number; edgestream: number };
  /** Requests per second in the round of the least CPU. */
  requestsPerSecond: { parseOnly: number; edgestream: number };
}

/** In the child: both servers, the clients, the rounds; the figures go to `out` as JSON. */
async function measure(out: string): Promise<void> {
  const config = await configFromEnv(Deno.env);
  configureLogging({ level: config.logLevel, secrets: config.secrets });
  const server = await serve(config);
  const baseline = new Hono();
  baseline.post("/v1/streams/:stream/events", async (c) => {
    const body = await c.req.json();
    return c.json({ accepted: Array.isArray(body) ? body.length : 1 }, 202);
  });
  const parseOnly = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, baseline.fetch);
  const key = Deno.env.get("BENCH_KEY")!;
  const subjects = [
    ["parseOnly", `http://127.0.0.1:${parseOnly.addr.port}`],
    ["edgestream", `http://127.0.0.1:${server.addr.port}`],
  ] as const;
  const least = { parseOnly: Infinity, edgestream: Infinity };
  const bytes = { parseOnly: Infinity, edgestream: Infinity };
  const rates = { parseOnly: 0, edgestream: 0 };
  for (let round = 0; round < ROUNDS; round++) {
    for (const [name, url] of subjects) {
      const options = {
        clients: CLIENTS,
        batch: BATCH,
        headers: { Authorization: `Bearer ${key}` },
      };
      await closedLoop(`${url}/v1/streams/bench/events`, { ...options, seconds: 0.5 });
      const start = process.cpuUsage();
      const allocated = allocatedBytes();
      const result = await closedLoop(`${url}/v1/streams/bench/events`, {
        ...options,
        seconds: SECONDS,
      });
      const used = process.cpuUsage(start);
      bytes[name] = Math.min(bytes[name], (allocatedBytes() - allocated) / result.requests);
      const perRequest = (used.user + used.system) / result.requests;
      if (result.errors > 0) throw new Error(`${name}: ${result.errors} requests failed`);
      if (perRequest < least[name]) {
        least[name] = perRequest;
        rates[name] = result.requests / SECONDS;
      }
    }
  }
  const figures: Figures = {
    cpuPerRequest: least,
    bytesPerRequest: bytes,
    requestsPerSecond: rates,
  };
  await Deno.writeTextFile(out, JSON.stringify(figures));
  await parseOnly.shutdown();
  await server.stop();
}

if (flags.child) {
  await measure(flags.child);
  Deno.exit(0);
}

const machine = await machineInfo();
const out = await Deno.makeTempFile({ prefix: "edgestream-http-overhead-", suffix: ".json" });
const key = crypto.randomUUID().replaceAll("-", "");
const child = await new Deno.Command(Deno.execPath(), {
  args: ["run", "--allow-all", fileURLToPath(import.meta.url), ...Deno.args, "--child", out],
  env: { ...benchServerEnv(key), BENCH_KEY: key },
  stdin: "null",
  stdout: "null",
  stderr: "inherit",
}).output();
if (!child.success) throw new Error(`The measuring process failed (exit ${child.code})`);
const figures = JSON.parse(await Deno.readTextFile(out)) as Figures;
await Deno.remove(out);
const { parseOnly, edgestream } = figures.cpuPerRequest;
const heap = figures.bytesPerRequest;
console.log(
  `machine: ${machine.cpu}, ${machine.cores} cores, load average at start ${
    loadAverageText(machine)
  }`,
);
console.log(
  `Per request of one process (${CLIENTS} clients + the server), batches of ${BATCH}, least of ${ROUNDS} rounds of ${SECONDS} s:`,
);
console.log(table(
  ["server", "CPU µs/request", "heap bytes/request", "requests/s"],
  [
    [
      "parse-only",
      parseOnly.toFixed(1),
      heap.parseOnly.toFixed(0),
      figures.requestsPerSecond.parseOnly.toFixed(0),
    ],
    [
      "edgestream",
      edgestream.toFixed(1),
      heap.edgestream.toFixed(0),
      figures.requestsPerSecond.edgestream.toFixed(0),
    ],
    [
      "edgestream adds",
      (edgestream - parseOnly).toFixed(1),
      (heap.edgestream - heap.parseOnly).toFixed(0),
      "",
    ],
  ],
  [0],
));
const path = await writeResults("http_overhead", {
  bench: "http_overhead",
  machine,
  batch: BATCH,
  seconds: SECONDS,
  rounds: ROUNDS,
  ...figures,
  addedCpuPerRequest: edgestream - parseOnly,
  addedBytesPerRequest: heap.edgestream - heap.parseOnly,
});
console.log(`\nresults: ${path}`);
