/**
 * Alert latency: how long after its ingest reply an `alert.fired` reaches a webhook receiver,
 * on the memory store and on Redis (redis-server through the Upstash REST bridge), under a
 * steady ingest load of the `bench` stream.
 *
 * The background load is `--clients` clients (4) each sending a batch of 100 events, waiting
 * for the reply, then pausing `--pause` ms (50): steady ingest below saturation, so that what is
 * measured is the path of an alert, not a queue of requests (`--pause 0 --clients 16` saturates
 * the server as `deno task bench` does).
 *
 * The server is `src/main.ts`'s (`bench/server.ts main`) with keys on, the `bench` stream of
 * `bench/config.json` plus a `probe` counter (tumbling 1 min, grouped by the `probe` field) and an
 * alert `probe_seen` (`value >= 1.0`) on it. A probe client sends, every 50 ms, one event with a
 * new `probe` value (so each fires once), and notes the time of the reply; a webhook receiver in
 * this process notes when the `alert.fired` of that probe arrives. Reports p50/p99/max of the
 * difference per store. The first `--warmup` seconds (1) of load and probes are not counted: they
 * measure a cold start (scripts loaded into a fresh redis-server, code not yet compiled), and with
 * ~200 probes two slow ones are the p99; the cold probes' worst is reported on its own.
 *
 * `deno task bench:alerts [--seconds 10] [--warmup 1] [--stores memory,redis] [--clients 4]
 * [--pause 50]`
 */
import { parseArgs } from "node:util";
import { startRedisServer } from "../tools/redis_server.ts";
import {
  closedLoop,
  loadAverageText,
  machineInfo,
  percentile,
  type ServerProcess,
  startBridge,
  startServer,
  table,
  writeResults,
} from "./_shared.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    seconds: { type: "string", default: "10" },
    warmup: { type: "string", default: "1" },
    stores: { type: "string", default: "memory,redis" },
    clients: { type: "string", default: "4" },
    pause: { type: "string", default: "50" },
  },
});
const SECONDS = Number(flags.seconds);
const WARMUP_SECONDS = Number(flags.warmup);
const PROBE_EVERY_MS = 50;
const BACKGROUND_CLIENTS = Number(flags.clients);
const BACKGROUND_PAUSE_MS = Number(flags.pause);
const KEY = crypto.randomUUID().replaceAll("-", "");
const TOKEN = crypto.randomUUID().replaceAll("-", "");

const config = JSON.parse(
  await Deno.readTextFile(new URL("./config.json", import.meta.url)),
);
const bench = config.streams.bench;
bench.schema.properties.probe = { type: "string" };
bench.counters.probe = { window: { tumbling: "1m" }, groupBy: ["probe"], aggregate: "count" };
bench.alerts = [{ name: "probe_seen", counter: "probe", when: "value >= 1.0" }];
const configPath = await Deno.makeTempFile({ suffix: ".json" });
await Deno.writeTextFile(configPath, JSON.stringify({ streams: { bench } }));

/** When each probe's alert arrived (performance.now()). */
const arrivals = new Map<string, number>();
const receiver = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, async (request) => {
  const body = await request.json();
  for (const payload of Array.isArray(body) ? body : [body]) {
    const probe = payload?.data?.group?.probe;
    if (payload?.type === "alert.fired" && typeof probe === "string") {
      if (!arrivals.has(probe)) arrivals.set(probe, performance.now());
    }
  }
  return new Response(null, { status: 204 });
});

async function measure(store: "memory" | "redis", redisUrl: string | null) {
  const env: Record<string, string> = {
    PORT: "0",
    HOST: "127.0.0.1",
    EDGESTREAM_CONFIG: configPath,
    EDGESTREAM_KEYS: `admin:${KEY}`,
    EDGESTREAM_WEBHOOK_ALLOW: "127.0.0.1",
  };
  if (redisUrl) {
    env.UPSTASH_REDIS_REST_URL = redisUrl;
    env.UPSTASH_REDIS_REST_TOKEN = TOKEN;
    env.EDGESTREAM_PREFIX = `alerts${crypto.randomUUID().slice(0, 6)}`;
  }
  const server: ServerProcess = await startServer("main", { env });
  const headers = { Authorization: `Bearer ${KEY}`, "Content-Type": "application/json" };
  try {
    const registered = await fetch(`${server.url}/v1/webhooks`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        url: `http://127.0.0.1:${receiver.addr.port}/hook`,
        eventTypes: ["alert.fired"],
        streams: ["bench"],
      }),
    });
    if (registered.status !== 201) {
      throw new Error(`Webhook registration: ${registered.status} ${await registered.text()}`);
    }
    const url = `${server.url}/v1/streams/bench/events`;
    const background = closedLoop(url, {
      clients: BACKGROUND_CLIENTS,
      batch: 100,
      seconds: WARMUP_SECONDS + SECONDS,
      headers,
      pauseMs: BACKGROUND_PAUSE_MS,
    });
    const replies = new Map<string, number>();
    const cold = new Map<string, number>();
    const warm = performance.now() + WARMUP_SECONDS * 1000;
    const deadline = warm + SECONDS * 1000;
    let n = 0;
    while (performance.now() < deadline) {
      const probe = `${store}-${++n}`;
      const res = await fetch(url, {
        method: "POST",
        headers,
        body: JSON.stringify({
          id: probe,
          ts: Date.now(),
          country: "PROBE",
          amount: 1,
          user: "probe",
          probe,
        }),
      });
      await res.arrayBuffer();
      if (res.status === 202) {
        (performance.now() < warm ? cold : replies).set(probe, performance.now());
      }
      await new Promise((resolve) => setTimeout(resolve, PROBE_EVERY_MS));
    }
    const load = await background;
    // Late alerts still count: wait for the stragglers (at most 5 s).
    const waitUntil = performance.now() + 5000;
    while ([...replies.keys(), ...cold.keys()].some((probe) => !arrivals.has(probe))) {
      if (performance.now() > waitUntil) break;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    const latencies = [...replies].filter(([probe]) => arrivals.has(probe))
      .map(([probe, at]) => arrivals.get(probe)! - at).sort((a, b) => a - b);
    // A cold probe whose alert never came counts as infinitely late.
    const coldMaxMs = cold.size === 0
      ? NaN
      : Math.max(...[...cold].map(([probe, at]) => (arrivals.get(probe) ?? Infinity) - at));
    return {
      store,
      warmupSeconds: WARMUP_SECONDS,
      coldProbes: cold.size,
      coldMaxMs,
      probes: replies.size,
      alerts: latencies.length,
      p50Ms: percentile(latencies, 0.5),
      p99Ms: percentile(latencies, 0.99),
      maxMs: latencies.at(-1) ?? NaN,
      backgroundEventsPerSecond: load.events / load.seconds,
      // Every probe's latency, so that runs can be pooled: one run's p99 is its second-worst probe.
      latenciesMs: latencies.map((ms) => Math.round(ms * 10) / 10),
    };
  } finally {
    await server.stop();
  }
}

const machine = await machineInfo();
console.log(
  `machine: ${machine.cpu}, ${machine.cores} cores, load average ${loadAverageText(machine)}`,
);
const stores = flags.stores.split(",") as Array<"memory" | "redis">;
const rows = [];
const redisServer = stores.includes("redis") ? await startRedisServer() : null;
const bridge = redisServer ? await startBridge(redisServer.url, TOKEN) : null;
try {
  for (const store of stores) {
    rows.push(await measure(store, store === "redis" ? bridge!.url : null));
  }
} finally {
  await bridge?.stop();
  await redisServer?.stop();
  await receiver.shutdown();
  await Deno.remove(configPath);
}
console.log();
console.log(
  `alert.fired at a webhook receiver after the ingest reply (probe every ${PROBE_EVERY_MS} ms, ` +
    `under ${BACKGROUND_CLIENTS} clients x batches of 100 every ${BACKGROUND_PAUSE_MS} ms after ` +
    `the reply, ${SECONDS}s after ${WARMUP_SECONDS}s of warm-up):`,
);
console.log(table(
  [
    "store",
    "probes",
    "alerts received",
    "p50 ms",
    "p99 ms",
    "max ms",
    "background events/s",
    "warm-up max ms",
  ],
  rows.map((row) => [
    row.store,
    String(row.probes),
    String(row.alerts),
    row.p50Ms.toFixed(1),
    row.p99Ms.toFixed(1),
    row.maxMs.toFixed(1),
    row.backgroundEventsPerSecond.toFixed(0),
    row.coldMaxMs.toFixed(1),
  ]),
  [0],
));
console.log(`\nresults: ${await writeResults("alerts", { bench: "alerts", machine, rows })}`);
